//! `etcd-sentinel defrag` against real etcd: a fragmented database shrinks on every member, the leader last (by
//! etcd's own logs); the rule, the gate, the lock, the kill of a member mid-run, NOSPACE, the leader move and the
//! dry run each do what an operator would expect.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions};
use serde_json::Value;
use support::{EtcdCluster, sentinel, sentinel_json, wait_for};

fn defrag(cluster: &EtcdCluster, extra: &[&str]) -> (i32, Value, String) {
    let endpoints = cluster.endpoints();
    let mut args = vec![
        "defrag",
        "--endpoints",
        &endpoints,
        "--name",
        "prod",
        "-w",
        "json",
    ];
    args.extend_from_slice(extra);
    sentinel_json(&args)
}

/// Deletes every key under `prefix` and compacts, physically, to the revision of the delete.
async fn delete_and_compact(client: &mut Client, prefix: &str) {
    let deleted = client
        .delete(prefix, Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let revision = deleted.header().unwrap().revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
}

/// Nothing of any maintenance lock is left in the cluster.
async fn assert_no_lock_left(client: &mut Client) {
    let left = client
        .get("/etcd-sentinel/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(left.kvs().is_empty(), "left in etcd: {:?}", left.kvs());
}

/// Writes `count` values of 64 KiB, deletes them and compacts (physically): the file keeps its size, most of it
/// free pages, until a defragmentation gives them back.
async fn fragment(client: &mut Client, count: usize) {
    let value = vec![b'f'; 64 * 1024];
    for i in 0..count {
        client
            .put(format!("frag/{i:05}"), value.clone(), None)
            .await
            .unwrap();
    }
    delete_and_compact(client, "frag/").await;
    // bbolt frees the compacted pages for good only when a later write commits: write until the member says
    // most of its file is free.
    wait_for(
        "the compacted pages to show as free",
        Duration::from_secs(10),
        || {
            let mut c = client.clone();
            async move {
                c.put("frag-commit", "x", None).await.ok()?;
                let s = c.status().await.ok()?;
                (s.raft_used_db_size() < s.db_size() / 2).then_some(())
            }
        },
    )
    .await;
}

/// Each member's database size, from its own Status.
async fn sizes(cluster: &EtcdCluster) -> Vec<i64> {
    let mut out = Vec::new();
    for i in 0..cluster.members.len() {
        out.push(cluster.client(i).await.status().await.unwrap().db_size());
    }
    out
}

/// When a member's log says it finished a defragmentation: etcd 3.4 writes "finished defragmenting the storage
/// backend" after a capnslog timestamp, 3.5 the same message in JSON after its "ts". Timestamps of one run
/// compare as text.
fn defrag_finished_at(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("finished defragmenting"))?;
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["ts"].as_str().map(str::to_string);
    }
    Some(line.chars().take(26).collect())
}

fn members_by_action<'a>(report: &'a Value, action: &str) -> Vec<&'a str> {
    report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["action"] == action)
        .map(|m| m["member"].as_str().unwrap())
        .collect()
}

fn index_of(cluster: &EtcdCluster, name: &str) -> usize {
    cluster.members.iter().position(|m| m.name == name).unwrap()
}

#[tokio::test]
async fn a_fragmented_database_shrinks_on_every_member_the_leader_last() {
    let cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 160).await;
    let before = sizes(&cluster).await;
    assert!(before.iter().all(|&s| s > 8 << 20), "{before:?}");
    let snapshots = tempfile::tempdir().unwrap();
    let (code, report, out) = defrag(
        &cluster,
        &[
            "--snapshot-before",
            "--snapshot-dir",
            snapshots.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["result"], "success", "{out}");
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["action"], "defragmented", "{out}");
        assert!(
            m["size_after"].as_u64().unwrap() < m["size_before"].as_u64().unwrap() / 2,
            "{m}"
        );
    }
    assert_eq!(members[2]["role"], "leader");
    assert!(report["reclaimed_bytes"].as_u64().unwrap() > 3 * (6 << 20));
    let after = sizes(&cluster).await;
    for (b, a) in before.iter().zip(&after) {
        assert!(a < &(b / 2), "before {before:?} after {after:?}");
    }
    // The leader last, by etcd's own logs.
    let leader = members[2]["member"].as_str().unwrap();
    let leader_done = defrag_finished_at(&cluster.members[index_of(&cluster, leader)].log_text())
        .expect("the leader's log shows its defragmentation");
    for m in &members[..2] {
        let name = m["member"].as_str().unwrap();
        let done = defrag_finished_at(&cluster.members[index_of(&cluster, name)].log_text())
            .expect("a follower's log shows its defragmentation");
        assert!(
            done < leader_done,
            "{name} finished at {done}, the leader at {leader_done}"
        );
    }
    // The snapshot first: a verified file with its sidecar.
    let snapshot = report["snapshot"].as_str().expect("a snapshot path");
    assert!(std::path::Path::new(snapshot).is_file());
    assert!(std::path::Path::new(&format!("{snapshot}.json")).is_file());
    // The cluster is whole and writable.
    client.put("after", "defrag", None).await.unwrap();
}

#[tokio::test]
async fn a_false_rule_skips_every_member_and_shows_the_values() {
    let cluster = EtcdCluster::start(3).await;
    let before = sizes(&cluster).await;
    let snapshots = tempfile::tempdir().unwrap();
    let (code, report, out) = defrag(
        &cluster,
        &[
            "--defrag-rule",
            "dbSizeFree > 1024*1024*1024",
            "--snapshot-before",
            "--snapshot-dir",
            snapshots.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["result"], "success");
    assert_eq!(members_by_action(&report, "skipped").len(), 3, "{out}");
    let m = &report["members"][0];
    assert!(m["reason"].as_str().unwrap().contains("is false"), "{m}");
    assert!(m["values"]["dbSize"].as_f64().unwrap() > 0.0);
    assert!(m["values"]["dbQuota"].as_f64().unwrap() > 0.0);
    assert_eq!(sizes(&cluster).await, before);
    for m in &cluster.members {
        assert!(defrag_finished_at(&m.log_text()).is_none());
    }
    // Nothing to defragment, so no snapshot was needed.
    assert!(report["snapshot"].is_null(), "{out}");
    assert!(support::files_in(snapshots.path()).is_empty());
    // The table shows the values too.
    let endpoints = cluster.endpoints();
    let out = sentinel(
        &[
            "defrag",
            "--endpoints",
            &endpoints,
            "--defrag-rule",
            "dbSize < 0",
        ],
        &[],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("dbQuotaUsage="), "{table}");
}

#[test]
fn a_bad_rule_or_snapshot_dir_is_refused_before_etcd_is_asked() {
    let out = sentinel(
        &[
            "defrag",
            "--endpoints",
            "127.0.0.1:1",
            "--defrag-rule",
            "dbQuotaUsage > 0.8 || dbSizeFre > 1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("column 23") && err.contains("dbSizeFre"),
        "{err}"
    );
    // A snapshot directory that is missing, or cannot be written, is refused before anything is asked of etcd.
    for (dir, cause) in [
        ("/nonexistent/snapshots", "not a directory"),
        ("/proc", "cannot create a file there"),
    ] {
        let out = sentinel(
            &[
                "defrag",
                "--endpoints",
                "127.0.0.1:1",
                "--snapshot-before",
                "--snapshot-dir",
                dir,
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(dir) && err.contains(cause), "{err}");
    }
}

#[tokio::test]
async fn a_member_down_before_the_run_refuses_it() {
    let mut cluster = EtcdCluster::start(3).await;
    cluster.kill(2);
    let (code, report, out) = defrag(&cluster, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report["result"], "refused");
    let message = report["message"].as_str().unwrap();
    assert!(message.contains(&cluster.members[2].name), "{message}");
    assert!(members_by_action(&report, "defragmented").is_empty());
    for m in &cluster.members[..2] {
        assert!(defrag_finished_at(&m.log_text()).is_none());
    }
}

#[tokio::test]
async fn a_single_member_cluster_needs_to_be_asked_for() {
    let cluster = EtcdCluster::start(1).await;
    let (code, report, out) = defrag(&cluster, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("single-member"),
        "{out}"
    );
    let (code, report, out) = defrag(&cluster, &["--allow-single-member"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(members_by_action(&report, "defragmented").len(), 1);
}

/// Starts `defrag` in the background and returns it once its stderr says `line`; the rest of stderr is read
/// on a thread into the returned handle.
fn spawn_until(
    cluster: &EtcdCluster,
    extra: &[&str],
    line: &str,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let endpoints = cluster.endpoints();
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
        .args([
            "defrag",
            "--endpoints",
            &endpoints,
            "--name",
            "prod",
            "-w",
            "json",
        ])
        .args(extra)
        .env_remove("ETCDCTL_ENDPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        if stderr.read_line(&mut l).unwrap() == 0 {
            panic!("defrag ended before saying {line:?}:\n{seen}");
        }
        seen.push_str(&l);
        if l.contains(line) {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut rest = seen;
        for l in stderr.lines().map_while(Result::ok) {
            rest.push_str(&l);
            rest.push('\n');
        }
        rest
    });
    (child, rest)
}

fn report_of(child: std::process::Child) -> (i32, Value) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_member_killed_mid_run_stops_it_and_later_members_are_untouched() {
    let mut cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 40).await;
    let leader = cluster.leader_index().await;
    // Followers go by name: the first is the lowest-named one that does not lead. It is also the member the lock
    // was taken through (the first healthy follower of --endpoints), so its release must go through another.
    let first = (0..3)
        .filter(|&i| i != leader)
        .min_by_key(|&i| cluster.members[i].name.clone())
        .unwrap();
    let (child, stderr) = spawn_until(
        &cluster,
        &["--wait-between-defrags", "3s", "--catch-up-timeout", "10s"],
        "defragmented ",
    );
    // The first follower is done, and dies before the second follower's turn.
    cluster.kill(first);
    let (code, report) = report_of(child);
    let stderr = stderr.join().unwrap();
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    // Killed before its catch-up was seen, the run fails waiting for it; killed after, the gate stops the run
    // before the next member. Either way nothing after it is touched.
    assert!(
        report["result"] == "failed" || report["result"] == "stopped",
        "{report:#}"
    );
    assert_eq!(
        members_by_action(&report, "defragmented").len(),
        1,
        "{report:#}"
    );
    let untouched = members_by_action(&report, "not_reached");
    assert_eq!(untouched.len(), 2, "{report:#}");
    for name in untouched {
        let i = index_of(&cluster, name);
        assert!(
            defrag_finished_at(&cluster.members[i].log_text()).is_none(),
            "{name} was defragmented"
        );
    }
    // The lock went with the run, through a member that answers.
    assert_no_lock_left(&mut cluster.client(leader).await).await;
}

#[tokio::test]
async fn a_learner_is_skipped_and_the_voters_are_defragmented() {
    let mut cluster = EtcdCluster::start(3).await;
    let learner = cluster.add_learner().await;
    let learner_name = cluster.members[learner].name.clone();
    let mut client = cluster.client(0).await;
    fragment(&mut client, 20).await;
    let endpoints = cluster.endpoints();
    // Found through the member list, the learner's client URL comes first or last: either way it is never
    // the lock's member and never defragmented.
    let out = sentinel(
        &[
            "defrag",
            "--endpoints",
            &endpoints,
            "--cluster",
            "-w",
            "json",
        ],
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let text = format!("{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        members_by_action(&report, "defragmented").len(),
        3,
        "{text}"
    );
    let skipped = members_by_action(&report, "skipped");
    assert_eq!(skipped, [learner_name.as_str()], "{text}");
}

#[tokio::test]
async fn two_runs_at_once_one_refuses_naming_the_holder_or_waits() {
    let cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 20).await;
    let (first, _) = spawn_until(
        &cluster,
        &["--wait-between-defrags", "2s"],
        "defragmenting ",
    );
    let (code, report, out) = defrag(&cluster, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report["result"], "refused");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("held by defrag of prod on")
            && message.contains(&format!("pid {}", first.id())),
        "{message}"
    );
    // Waiting for it: the second runs once the first is done.
    let (code, report, out) = defrag(&cluster, &["--lock-wait", "60s"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["result"], "success");
    let (code, first_report) = report_of(first);
    assert_eq!(code, 0, "{first_report:#}");
    // Nothing is left of either lock.
    assert_no_lock_left(&mut client).await;
}

#[tokio::test]
async fn a_nospace_alarm_is_cleared_once_defragmentation_frees_the_quota() {
    let cluster = EtcdCluster::builder()
        .members(3)
        .quota_backend_bytes(4 << 20)
        .start()
        .await;
    let mut client = cluster.client(0).await;
    support::fill_to_nospace(&mut client).await;
    wait_for("the NOSPACE alarm", Duration::from_secs(10), || {
        let mut c = client.clone();
        async move {
            let alarms = c
                .alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                )
                .await
                .ok()?;
            (!alarms.alarms().is_empty()).then_some(())
        }
    })
    .await;
    // What an operator does first: delete what filled it, and compact.
    delete_and_compact(&mut client, "fill-").await;
    // No lock can be written under NOSPACE: refused, saying how to go on, unless this runner is the only one.
    let (code, report, out) = defrag(&cluster, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report["result"], "refused", "{out}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("--nospace-without-lock"),
        "{out}"
    );
    let (code, report, out) = defrag(&cluster, &["--nospace-without-lock"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        report["lock"].as_str().unwrap().starts_with("not held"),
        "{out}"
    );
    let said = report["nospace"].as_str().unwrap_or_default();
    assert!(said.contains("NOSPACE alarm disarmed"), "{out}");
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    client.put("writable", "again", None).await.unwrap();
}

#[tokio::test]
async fn move_leader_hands_leadership_to_a_defragmented_follower_first() {
    let cluster = EtcdCluster::start(3).await;
    let old_leader = cluster.leader_index().await;
    let old_name = cluster.members[old_leader].name.clone();
    let (code, report, out) = defrag(&cluster, &["--move-leader"]);
    assert_eq!(code, 0, "{out}");
    let moved = &report["leader_moved"];
    assert_eq!(moved["from"], old_name.as_str(), "{out}");
    let to = moved["to"].as_str().unwrap();
    let members = report["members"].as_array().unwrap();
    // The old leader came last, defragmented as a follower; the new one was done before it.
    assert_eq!(members[2]["member"], old_name.as_str());
    assert_eq!(members[2]["role"], "follower");
    assert!(
        members[..2]
            .iter()
            .any(|m| m["member"] == to && m["action"] == "defragmented")
    );
    assert_eq!(
        cluster.members[cluster.leader_index().await].name,
        to,
        "leadership stays where it was moved"
    );
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_compaction_keeps_revisions() {
    let cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 20).await;
    for i in 0..50 {
        client.put("counter", format!("{i}"), None).await.unwrap();
    }
    let before = sizes(&cluster).await;
    let (code, report, out) = defrag(&cluster, &["--dry-run", "--compaction"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["result"], "dry_run");
    assert_eq!(
        members_by_action(&report, "would_defragment").len(),
        3,
        "{out}"
    );
    assert_eq!(sizes(&cluster).await, before);
    for m in &cluster.members {
        assert!(defrag_finished_at(&m.log_text()).is_none());
    }
    let newest = client
        .get("counter", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    // An old revision is still readable: the dry run compacted nothing.
    client
        .get(
            "counter",
            Some(GetOptions::new().with_revision(newest - 40)),
        )
        .await
        .unwrap();
    // Compaction keeping 10 revisions: older ones are gone, the 10 newest stay.
    let (code, report, out) = defrag(
        &cluster,
        &["--compaction", "--compaction-keep-revisions", "10"],
    );
    assert_eq!(code, 0, "{out}");
    // The newest revision is read by the run, after its own lock's writes.
    let read = report["compaction"]["newest_revision"].as_i64().unwrap();
    assert!(read >= newest, "{out}");
    assert_eq!(report["compaction"]["revision"], read - 10, "{out}");
    assert_compacted_at(&mut client, "counter", newest - 40, newest - 5).await;
}

#[tokio::test]
async fn sigterm_stops_the_run_before_the_next_member_never_during_one() {
    let cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 20).await;
    // Sent while the first member is being defragmented: it finishes, and nothing after it starts.
    let (child, stderr) = spawn_until(
        &cluster,
        &["--wait-between-defrags", "3s"],
        "defragmenting m",
    );
    // SAFETY: kill(2) on our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let (code, report) = report_of(child);
    let stderr = stderr.join().unwrap();
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "stopped", "{report:#}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("asked to stop")
    );
    assert_eq!(
        members_by_action(&report, "defragmented").len(),
        1,
        "{report:#}"
    );
    assert_eq!(
        members_by_action(&report, "not_reached").len(),
        2,
        "{report:#}"
    );
}

const TOKEN: &str = "defrag-api-token";

fn daemon_with(
    cluster: &EtcdCluster,
    defrag: &str,
) -> (support::daemon::Daemon, tempfile::TempDir) {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = support::daemon::config_for(&[(
        "prod",
        cluster,
        &format!("interval = \"1s\"\n[cluster.defrag]\n{defrag}"),
    )]);
    let daemon = support::daemon::Daemon::start_with(
        &config,
        &["--api-token-file".as_ref(), token_file.as_os_str()],
    );
    (daemon, token_dir)
}

fn runs(metrics: &str, result: &str) -> f64 {
    support::daemon::sample(
        metrics,
        "etcd_sentinel_defrag_runs_total",
        &format!("result=\"{result}\""),
    )
    .unwrap_or(-1.0)
}

#[tokio::test]
async fn the_trigger_fires_once_when_crossed_and_not_again_within_min_interval() {
    let cluster = EtcdCluster::start(3).await;
    let (daemon, _token) = daemon_with(
        &cluster,
        "trigger = \"dbSizeFree > 4*1024*1024\"\nmin_interval = \"1h\"\n",
    );
    daemon.wait_ready().await;
    // Under the threshold: polls go by and nothing runs.
    let polls = |m: &str| {
        support::daemon::sample(m, "etcd_sentinel_poll_duration_seconds_count", "prod")
            .unwrap_or(0.0)
    };
    let start = polls(&daemon.metrics().await);
    wait_for("three polls", Duration::from_secs(20), || async {
        (polls(&daemon.metrics().await) >= start + 3.0).then_some(())
    })
    .await;
    let metrics = daemon.metrics().await;
    assert_eq!(runs(&metrics, "success"), 0.0, "{metrics}");
    let mut client = cluster.client(0).await;
    fragment(&mut client, 100).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = daemon.metrics().await;
        if runs(&m, "success") == 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline && runs(&m, "refused") + runs(&m, "failed") == 0.0,
            "no successful triggered run:\n{m}\n{}\n{:#}",
            daemon.log_text(),
            daemon.json("/api/v1/clusters/prod").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reclaimed = support::daemon::sample(
        &metrics,
        "etcd_sentinel_defrag_reclaimed_bytes_total",
        "prod",
    )
    .unwrap();
    assert!(reclaimed > 3.0 * 4.0 * 1024.0 * 1024.0, "{metrics}");
    assert!(
        metrics.contains("etcd_sentinel_defrag_in_progress{cluster=\"prod\""),
        "{metrics}"
    );
    let status = daemon.json("/api/v1/clusters/prod/defrag").await;
    assert_eq!(
        status["status"]["last_run"]["result"], "success",
        "{status:#}"
    );
    let started_by = status["status"]["started_by"].as_str().unwrap();
    assert!(
        started_by.contains("dbSizeFree > 4*1024*1024"),
        "{status:#}"
    );
    // Crossed again at once: within min_interval, no second run.
    fragment(&mut client, 100).await;
    wait_for(
        "a poll that sees the new free space",
        Duration::from_secs(20),
        || async {
            let v = daemon.json("/api/v1/clusters/prod").await;
            let free = v["endpoints"][0]["db_fragmented_bytes"].as_u64()?;
            (free > 4 << 20).then_some(())
        },
    )
    .await;
    let seen = polls(&daemon.metrics().await);
    wait_for("three more polls", Duration::from_secs(20), || async {
        (polls(&daemon.metrics().await) >= seen + 3.0).then_some(())
    })
    .await;
    let metrics = daemon.metrics().await;
    let all: f64 = ["success", "failed", "refused", "stopped"]
        .iter()
        .map(|r| runs(&metrics, r))
        .sum();
    assert_eq!(all, 1.0, "{metrics}");
    let events = daemon.json("/api/v1/clusters/prod/events").await;
    let started = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "defrag_started")
        .count();
    assert_eq!(started, 1, "{events:#}");
}

#[tokio::test]
async fn the_api_plans_starts_and_stops_a_run() {
    let cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client(0).await;
    fragment(&mut client, 20).await;
    // A long wait between members: the kill switch is pulled during it, and it ends the wait at once.
    let (daemon, _token) = daemon_with(&cluster, "wait_between = \"20s\"\n");
    daemon.wait_ready().await;
    let path = "/api/v1/clusters/prod/defrag";
    assert_eq!(daemon.post(path, None).await.0, 401);
    let (code, body) = daemon.delete(path, TOKEN).await;
    assert_eq!(code, 409, "nothing to stop: {body}");
    let (code, body) = daemon
        .post(&format!("{path}?dry_run=true"), Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["plan"]["result"], "dry_run");
    assert_eq!(
        members_by_action(&plan["plan"], "would_defragment").len(),
        3,
        "{body}"
    );
    assert_eq!(plan["plan"]["members"][2]["role"], "leader");
    let (code, body) = daemon.post(path, Some(TOKEN)).await;
    assert_eq!(code, 202, "{body}");
    let accepted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(accepted["plan"]["result"], "planned", "{body}");
    wait_for("the first member done", Duration::from_secs(30), || async {
        let events = daemon.json("/api/v1/clusters/prod/events").await;
        events["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "defrag_member")
            .then_some(())
    })
    .await;
    let (code, body) = daemon.post(path, Some(TOKEN)).await;
    assert_eq!(code, 409, "a second run while one is under way: {body}");
    let (code, body) = daemon.delete(path, TOKEN).await;
    assert_eq!(code, 202, "{body}");
    let started = std::time::Instant::now();
    let status = wait_for("the stopped run", Duration::from_secs(30), || async {
        let v = daemon.json(path).await;
        v["status"]["running_since"].is_null().then_some(v)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the wait was cut short"
    );
    let report = &status["status"]["last_run"];
    assert_eq!(report["result"], "stopped", "{status:#}");
    assert_eq!(
        members_by_action(report, "defragmented").len(),
        1,
        "{status:#}"
    );
    assert_eq!(
        members_by_action(report, "not_reached").len(),
        2,
        "{status:#}"
    );
    let metrics = daemon.metrics().await;
    assert_eq!(runs(&metrics, "stopped"), 1.0, "{metrics}");
    for m in &cluster.members {
        let line = format!(
            "etcd_sentinel_defrag_in_progress{{cluster=\"prod\",member=\"{}\"}} 1",
            m.name
        );
        assert!(!metrics.contains(&line), "{metrics}");
    }
}

#[tokio::test]
async fn compaction_by_time_window_keeps_the_revisions_of_the_window() {
    let cluster = EtcdCluster::start(3).await;
    let (daemon, _token) = daemon_with(&cluster, "compaction_keep_window = \"3s\"\n");
    daemon.wait_ready().await;
    let mut client = cluster.client(0).await;
    // Six seconds of writes, five a second, each revision noted with its time.
    let mut written = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let put = client.put("clock", "tick", None).await.unwrap();
        written.push((std::time::Instant::now(), put.header().unwrap().revision()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let asked = std::time::Instant::now();
    let (code, body) = daemon
        .post("/api/v1/clusters/prod/defrag", Some(TOKEN))
        .await;
    assert_eq!(code, 202, "{body}");
    let status = wait_for("the run's report", Duration::from_secs(30), || async {
        let v = daemon.json("/api/v1/clusters/prod/defrag").await;
        (v["status"]["running_since"].is_null() && !v["status"]["last_run"].is_null()).then_some(v)
    })
    .await;
    let report = &status["status"]["last_run"];
    assert_eq!(report["result"], "success", "{status:#}");
    let compacted = report["compaction"]["revision"]
        .as_i64()
        .expect("a compaction");
    assert_eq!(report["compaction"]["kept_seconds"], 3.0);
    // Compacted to a revision the cluster had at least three seconds before the run: no newer.
    let three_before = written
        .iter()
        .filter(|(at, _)| *at + Duration::from_secs(3) <= asked)
        .map(|&(_, rev)| rev)
        .max()
        .unwrap();
    assert!(compacted <= three_before, "{compacted} > {three_before}");
    assert!(
        compacted > written[0].1,
        "nothing old was compacted: {compacted}"
    );
    // The window's revisions are still there.
    let last = written.last().unwrap().1;
    assert_compacted_at(&mut client, "clock", compacted - 1, last - 5).await;
}

/// `key` can no longer be read at revision `gone` (compacted away) and still can at `kept`.
async fn assert_compacted_at(client: &mut etcd_client::Client, key: &str, gone: i64, kept: i64) {
    let old = client
        .get(key, Some(GetOptions::new().with_revision(gone)))
        .await;
    assert!(
        old.unwrap_err().to_string().contains("compacted"),
        "{key} at revision {gone} should be compacted"
    );
    client
        .get(key, Some(GetOptions::new().with_revision(kept)))
        .await
        .unwrap_or_else(|e| panic!("{key} at revision {kept} should be kept: {e}"));
}
