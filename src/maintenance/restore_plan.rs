//! The restore plan (pure): from a snapshot's sidecar, the exact commands that bring the cluster back — per member,
//! the restore into a new data directory with a new cluster token, and the etcd flags that start it — with the
//! members' peer URLs as recorded, or new ones (the IP-change case: `--member name=peer-url`). Voting members only:
//! a learner is added again once the cluster runs (`member add --learner`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::snapshot::{MemberRecord, Sidecar};

/// The restore tool and what it can do.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// `etcdutl` (3.5+; etcd 3.6 removed `etcdctl snapshot restore`) or `etcdctl` (3.4, `ETCDCTL_API=3`).
    pub program: String,
    /// This etcdutl has `--bump-revision` and `--mark-compacted`: for Kubernetes, the restored revision is moved
    /// past any a watcher has seen and old revisions marked compacted, so informers re-list instead of missing
    /// events.
    pub bump_revision: bool,
}

/// One member's part of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberPlan {
    pub name: String,
    pub peer_url: String,
    pub client_urls: Vec<String>,
    pub data_dir: String,
    /// The restore command, as arguments.
    pub restore: Vec<String>,
    /// Environment the restore needs (`ETCDCTL_API=3` for etcdctl).
    pub restore_env: Vec<(String, String)>,
    /// etcd's start flags for the restored member (after the program).
    pub start: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub snapshot: String,
    /// For a `.zst`: the command that decompresses it first (the restore tools read only plain snapshots).
    pub decompress: Option<Vec<String>>,
    pub revision: i64,
    pub cluster_token: String,
    pub initial_cluster: String,
    pub members: Vec<MemberPlan>,
    /// Learners of the old cluster, left out: add them again once it runs.
    pub learners_left_out: Vec<String>,
}

/// The revision bump a restore for Kubernetes makes: past anything a watcher saw since the snapshot (etcd's
/// recommendation is at least as many revisions as were written in between; a billion is far past that).
pub const BUMP_REVISION: u64 = 1_000_000_000;

/// A member's client URLs when its peer URL changes host: the same host replaced in them.
fn moved_client_urls(m: &MemberRecord, new_peer: &str) -> Vec<String> {
    let host = |u: &str| {
        url::Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    };
    match (m.peer_urls.first().and_then(|p| host(p)), host(new_peer)) {
        (Some(old), Some(new)) if old != new => m
            .client_urls
            .iter()
            .map(|c| c.replacen(&old, &new, 1))
            .collect(),
        _ => m.client_urls.clone(),
    }
}

/// Plans the restore of `snapshot` (its path as the commands should name it) described by `sidecar`, with new
/// peer URLs for the members named in `moved`, data directories under `data_root`, and a new cluster token.
pub fn plan(
    snapshot: &str,
    sidecar: &Sidecar,
    moved: &BTreeMap<String, String>,
    data_root: &str,
    token: &str,
    tool: &Tool,
) -> Result<Plan, String> {
    let voting: Vec<&MemberRecord> = sidecar.members.iter().filter(|m| !m.is_learner).collect();
    if voting.is_empty() {
        return Err("the sidecar lists no voting member to restore".into());
    }
    for name in moved.keys() {
        if !voting.iter().any(|m| &m.name == name) {
            let known: Vec<&str> = voting.iter().map(|m| m.name.as_str()).collect();
            return Err(format!(
                "--member {name}: no voting member of that name (the snapshot's: {})",
                known.join(", ")
            ));
        }
    }
    let peer_of = |m: &MemberRecord| -> Result<String, String> {
        moved
            .get(&m.name)
            .cloned()
            .or_else(|| m.peer_urls.first().cloned())
            .ok_or_else(|| {
                format!(
                    "member {} has no peer URL (give one: --member {}=URL)",
                    m.name, m.name
                )
            })
    };
    let mut initial = Vec::new();
    for m in &voting {
        initial.push(format!("{}={}", m.name, peer_of(m)?));
    }
    let initial_cluster = initial.join(",");
    let (decompress, snapshot) = match snapshot.strip_suffix(super::compress::ZSTD_SUFFIX) {
        Some(plain) => (
            Some(vec![
                "zstd".to_string(),
                "-d".into(),
                "--keep".into(),
                snapshot.to_string(),
                "-o".into(),
                plain.to_string(),
            ]),
            plain,
        ),
        None => (None, snapshot),
    };
    let mut members = Vec::new();
    for m in &voting {
        let peer = peer_of(m)?;
        let client_urls = if moved.contains_key(&m.name) {
            moved_client_urls(m, &peer)
        } else {
            m.client_urls.clone()
        };
        let data_dir = format!("{}/{}", data_root.trim_end_matches('/'), m.name);
        let mut restore = vec![
            tool.program.clone(),
            "snapshot".into(),
            "restore".into(),
            snapshot.to_string(),
            "--name".into(),
            m.name.clone(),
            "--initial-cluster".into(),
            initial_cluster.clone(),
            "--initial-cluster-token".into(),
            token.to_string(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--data-dir".into(),
            data_dir.clone(),
        ];
        if tool.bump_revision {
            restore.extend([
                "--bump-revision".into(),
                BUMP_REVISION.to_string(),
                "--mark-compacted".into(),
            ]);
        }
        let restore_env = if tool.program.ends_with("etcdctl") {
            vec![("ETCDCTL_API".to_string(), "3".to_string())]
        } else {
            Vec::new()
        };
        let clients = client_urls.join(",");
        let listen_peer = peer.clone();
        let start = vec![
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            data_dir.clone(),
            "--listen-peer-urls".into(),
            listen_peer,
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--listen-client-urls".into(),
            clients.clone(),
            "--advertise-client-urls".into(),
            clients,
            "--initial-cluster".into(),
            initial_cluster.clone(),
            "--initial-cluster-token".into(),
            token.to_string(),
            "--initial-cluster-state".into(),
            "new".into(),
        ];
        members.push(MemberPlan {
            name: m.name.clone(),
            peer_url: peer,
            client_urls,
            data_dir,
            restore,
            restore_env,
            start,
        });
    }
    Ok(Plan {
        snapshot: snapshot.to_string(),
        decompress,
        revision: sidecar.revision,
        cluster_token: token.to_string(),
        initial_cluster,
        members,
        learners_left_out: sidecar
            .members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.name.clone())
            .collect(),
    })
}

/// A word for a POSIX shell: quoted when it holds anything but safe characters.
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::id::Id;
    use crate::maintenance::snapshot::SourceMember;

    fn sidecar() -> Sidecar {
        let member = |i: u64, learner: bool| MemberRecord {
            member_id: Id(i),
            name: format!("m{i}"),
            peer_urls: vec![format!("https://10.0.0.{i}:2380")],
            client_urls: vec![format!("https://10.0.0.{i}:2379")],
            is_learner: learner,
        };
        Sidecar {
            file: "prod-x-rev7.db".into(),
            cluster: "prod".into(),
            cluster_id: Id(1),
            source: SourceMember {
                member_id: Id(1),
                name: "m1".into(),
                endpoint: "https://10.0.0.1:2379".into(),
                version: "3.5.1".into(),
            },
            members: vec![
                member(1, false),
                member(2, false),
                member(3, false),
                member(4, true),
            ],
            revision: 7,
            raft_index: 9,
            size: 1024,
            sha256_etcd: String::new(),
            sha256_file: String::new(),
            compression: "none".into(),
            kv: None,
            started_at: UNIX_EPOCH,
            duration_seconds: 0.1,
        }
    }

    #[test]
    fn every_voting_member_gets_its_restore_and_start_with_one_token() {
        let tool = Tool {
            program: "etcdutl".into(),
            bump_revision: true,
        };
        let p = plan(
            "/b/s.db",
            &sidecar(),
            &BTreeMap::new(),
            "/var/lib/etcd-restored",
            "tok",
            &tool,
        )
        .unwrap();
        assert_eq!(p.members.len(), 3);
        assert_eq!(p.learners_left_out, vec!["m4"]);
        assert_eq!(
            p.initial_cluster,
            "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"
        );
        let m2 = &p.members[1];
        assert_eq!(m2.data_dir, "/var/lib/etcd-restored/m2");
        let restore = m2.restore.join(" ");
        assert!(
            restore.starts_with("etcdutl snapshot restore /b/s.db --name m2"),
            "{restore}"
        );
        assert!(
            restore.contains("--initial-cluster-token tok") && restore.contains("--bump-revision")
        );
        assert!(m2.restore_env.is_empty());
        assert!(
            m2.start
                .join(" ")
                .contains("--advertise-client-urls https://10.0.0.2:2379")
        );
    }

    #[test]
    fn new_peer_urls_move_the_client_urls_and_unknown_members_are_refused() {
        let tool = Tool {
            program: "etcdctl".into(),
            bump_revision: false,
        };
        let moved = BTreeMap::from([("m2".to_string(), "https://192.168.1.2:2380".to_string())]);
        let p = plan("s.db", &sidecar(), &moved, "/r", "t", &tool).unwrap();
        assert!(p.initial_cluster.contains("m2=https://192.168.1.2:2380"));
        assert_eq!(p.members[1].client_urls, vec!["https://192.168.1.2:2379"]);
        assert_eq!(
            p.members[0].restore_env,
            vec![("ETCDCTL_API".into(), "3".into())]
        );
        assert!(!p.members[0].restore.join(" ").contains("--bump-revision"));
        let unknown = BTreeMap::from([("m9".to_string(), "https://x:2380".to_string())]);
        let e = plan("s.db", &sidecar(), &unknown, "/r", "t", &tool).unwrap_err();
        assert!(e.contains("--member m9") && e.contains("m1, m2, m3"), "{e}");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("/var/lib/etcd"), "/var/lib/etcd");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
