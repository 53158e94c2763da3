//! `etcd-sentinel snapshot save|verify|list|prune` against real etcd: a saved snapshot is one etcd's own tools
//! accept, with the revision it really holds; a failure of any kind leaves nothing behind; retention keeps exactly
//! what it says and never the last one.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{EtcdCluster, files_in, sentinel, wait_for};

fn save(cluster: &EtcdCluster, dir: &Path) -> (i32, Value, String) {
    save_with(cluster, dir, &[])
}

fn save_with(cluster: &EtcdCluster, dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let endpoints = cluster.endpoints();
    let mut args = vec![
        "snapshot",
        "save",
        "--endpoints",
        &endpoints,
        "--dir",
        dir.to_str().unwrap(),
        "--name",
        "prod",
        "-w",
        "json",
    ];
    args.extend_from_slice(extra);
    support::sentinel_json(&args)
}

/// Writes `n` keys `<prefix><i>` = `v<i>`.
async fn put_keys(cluster: &EtcdCluster, prefix: &str, n: usize) {
    let mut client = cluster.client(0).await;
    for i in 0..n {
        client
            .put(format!("{prefix}{i}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
}

/// etcdctl's own reading of a snapshot file: (revision, total keys).
fn etcdctl_status(file: &str) -> Value {
    let etcdctl = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into());
    let out = Command::new(etcdctl)
        .args(["snapshot", "status", file, "-w", "json"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl snapshot status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcdctl JSON")
}

#[tokio::test]
async fn a_saved_snapshot_is_verified_named_by_its_revision_and_accepted_by_etcdctl() {
    let cluster = EtcdCluster::start(3).await;
    put_keys(&cluster, "k", 200).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, v, out) = save(&cluster, dir.path());
    assert_eq!(code, 0, "{out}");
    let path = v["path"].as_str().unwrap().to_string();
    let s = &v["snapshot"];
    // The revision is the one in the file, and etcd's own tool reads the same.
    let etcd = etcdctl_status(&path);
    assert_eq!(s["revision"], etcd["revision"], "{out}");
    assert!(s["revision"].as_i64().unwrap() >= 201);
    assert!(
        path.ends_with(&format!("-rev{}.db", s["revision"])),
        "{path}"
    );
    assert!(path.contains("/prod-"), "{path}");
    // Spared the leader: read from a follower that had caught up.
    let leader = cluster.leader_index().await;
    assert_ne!(s["source"]["endpoint"], cluster.client_url(leader), "{out}");
    // The sidecar knows the cluster a restore needs.
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    assert_eq!(s["compression"], "none");
    assert_eq!(s["sha256_etcd"].as_str().unwrap().len(), 64);
    assert_eq!(
        files_in(dir.path()).len(),
        2,
        "the snapshot and its sidecar, nothing else"
    );

    let out = sentinel(&["snapshot", "verify", &path], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok") && text.contains("agrees with its sidecar"),
        "{text}"
    );

    let out = sentinel(
        &[
            "snapshot",
            "list",
            "--dir",
            dir.path().to_str().unwrap(),
            "-w",
            "json",
        ],
        &[],
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1);

    // A sidecar that describes another snapshot: verify says so.
    let sidecar_path = format!("{path}.json");
    let original = std::fs::read_to_string(&sidecar_path).unwrap();
    let mut other: Value = serde_json::from_str(&original).unwrap();
    other["revision"] = Value::from(other["revision"].as_i64().unwrap() + 1);
    std::fs::write(&sidecar_path, other.to_string()).unwrap();
    let out = sentinel(&["snapshot", "verify", &path], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not the one its sidecar"), "{err}");
    std::fs::write(&sidecar_path, original).unwrap();

    // One flipped byte: verify fails, naming the file and what is wrong with it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = sentinel(&["snapshot", "verify", &path], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path) && err.contains("corrupt"), "{err}");
}

/// `--compress zstd`: only the `.db.zst` and its sidecar remain; it holds exactly the snapshot etcd sent (etcdctl
/// reads the decompressed bytes and finds the same revision), verify and the drill read it, and a flipped byte in
/// it is caught and named.
#[tokio::test]
async fn a_compressed_snapshot_holds_the_verified_one_and_is_checked_as_such() {
    let cluster = EtcdCluster::start(1).await;
    put_keys(&cluster, "z", 300).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, v, out) = save_with(&cluster, dir.path(), &["--compress", "zstd"]);
    assert_eq!(code, 0, "{out}");
    let path = v["path"].as_str().unwrap().to_string();
    let s = &v["snapshot"];
    assert!(
        path.ends_with(&format!("-rev{}.db.zst", s["revision"])),
        "{path}"
    );
    assert_eq!(s["compression"], "zstd");
    let name = path.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        files_in(dir.path()),
        vec![name.clone(), format!("{name}.json")]
    );
    let stored = std::fs::read(&path).unwrap();
    assert!(
        (stored.len() as u64) < s["size"].as_u64().unwrap() / 2,
        "compressed: {} bytes",
        stored.len()
    );
    let sha = ring_sha256(&stored);
    assert_eq!(
        s["sha256_file"],
        sha.as_str(),
        "the sidecar records the stored file's hash"
    );
    let plain = dir.path().join("plain.db");
    std::fs::write(&plain, zstd::stream::decode_all(stored.as_slice()).unwrap()).unwrap();
    assert_eq!(
        etcdctl_status(plain.to_str().unwrap())["revision"],
        s["revision"]
    );
    std::fs::remove_file(&plain).unwrap();

    let etcd = support::etcd_bin();
    let out = sentinel(
        &[
            "snapshot",
            "verify",
            "--restore",
            "--etcd-bin",
            &etcd,
            &path,
            "-w",
            "json",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["revision"], s["revision"]);
    assert_eq!(report["restore_drill"]["key_count"], 300);
    assert_eq!(report["restore_drill"]["hash_compared"], true);

    let mut bytes = stored.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let out = sentinel(&["snapshot", "verify", &path], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&path), "{err}");
    assert_eq!(
        files_in(dir.path()),
        vec![name.clone(), format!("{name}.json")],
        "no scratch copy left behind"
    );
}

fn ring_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes about `mib` MiB into the cluster, in 1 MiB values.
async fn fill(cluster: &EtcdCluster, mib: usize) {
    let mut client = cluster.client(0).await;
    let value = vec![b'x'; 1 << 20];
    for i in 0..mib {
        client
            .put(format!("big{i}"), value.clone(), None)
            .await
            .unwrap();
    }
}

/// Starts `snapshot save` in the background, with `setup` run in the child before exec.
fn save_child(cluster: &EtcdCluster, dir: &Path, setup: fn()) -> std::process::Child {
    save_child_with(cluster, dir, &[], setup)
}

fn save_child_with(
    cluster: &EtcdCluster,
    dir: &Path,
    extra: &[&str],
    setup: fn(),
) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"));
    cmd.args([
        "snapshot",
        "save",
        "--endpoints",
        &cluster.endpoints(),
        "--dir",
        dir.to_str().unwrap(),
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: the closure only calls async-signal-safe functions (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setup();
            Ok(())
        });
    }
    cmd.spawn().expect("start snapshot save")
}

async fn until_part_appears(dir: &Path) {
    wait_for("the .part file", Duration::from_secs(20), || async {
        files_in(dir)
            .iter()
            .any(|n| n.ends_with(".part"))
            .then_some(())
    })
    .await;
}

/// SIGTERM once the `.part` is there: exit 143, and only `keep-me.db` is left in `dir`.
async fn sigterm_mid_save(cluster: &EtcdCluster, dir: &Path, extra: &[&str]) {
    let child = save_child_with(cluster, dir, extra, || {});
    until_part_appears(dir).await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files_in(dir), vec!["keep-me.db"], "{extra:?}");
}

#[tokio::test]
async fn a_failure_mid_stream_leaves_nothing_behind() {
    let mut cluster = EtcdCluster::start(1).await;
    fill(&cluster, 200).await;
    let dir = tempfile::tempdir().unwrap();
    // An older snapshot in the directory must survive every failure below.
    std::fs::write(dir.path().join("keep-me.db"), b"not ours").unwrap();

    // SIGTERM mid-save (a CronJob's end).
    sigterm_mid_save(&cluster, dir.path(), &[]).await;

    // The same while compressing: neither the raw nor the compressed `.part` stays.
    sigterm_mid_save(&cluster, dir.path(), &["--compress", "zstd"]).await;

    // A full disk, injected: the file size limit makes a write fail with EFBIG. SIGXFSZ is left at its default,
    // which kills: the sentinel itself ignores it, so a write past the limit is an error it cleans up after.
    let child = save_child(&cluster, dir.path(), || {
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        // SAFETY: a plain system call on this process, before exec.
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
    });
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("snapshot not saved (write)") && err.contains(".part"),
        "{err}"
    );
    assert_eq!(files_in(dir.path()), vec!["keep-me.db"]);

    // The member dies mid-stream, while compressing too: the compressed `.part` goes with the raw one.
    let child = save_child_with(&cluster, dir.path(), &["--compress", "zstd"], || {});
    until_part_appears(dir.path()).await;
    cluster.kill(0);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("snapshot not saved"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(files_in(dir.path()), vec!["keep-me.db"]);

    // Nobody to read from: refused before anything is written.
    let (code, _, out) = save(&cluster, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no member to read a snapshot from"), "{out}");
    assert_eq!(files_in(dir.path()), vec!["keep-me.db"]);
}

#[tokio::test]
async fn a_missing_destination_is_refused_before_streaming() {
    let cluster = EtcdCluster::start(1).await;
    let (code, _, out) = save(&cluster, Path::new("/nonexistent/backups"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("/nonexistent/backups") && out.contains("not a directory"),
        "{out}"
    );
}

#[tokio::test]
async fn prune_keeps_exactly_the_policy_and_never_the_newest_or_what_is_not_ours() {
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut saved = Vec::new();
    for _ in 0..4 {
        let (code, v, out) = save(&cluster, dir.path());
        assert_eq!(code, 0, "{out}");
        saved.push(
            v["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
        );
        // Names carry the second they were taken: one a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Files that are not ours: a stray file, and a name of our pattern without a sidecar.
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("prod-20000101T000000Z-rev1.db"), b"x").unwrap();
    let d = dir.path().to_str().unwrap();

    let out = sentinel(
        &[
            "snapshot",
            "prune",
            "--dir",
            d,
            "--keep-last",
            "2",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("would delete {d}/{}", saved[0])),
        "{text}"
    );
    assert_eq!(files_in(dir.path()).len(), 10, "a dry run deletes nothing");

    let out = sentinel(&["snapshot", "prune", "--dir", d, "--keep-last", "2"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = vec![
        "notes.txt".to_string(),
        "prod-20000101T000000Z-rev1.db".to_string(),
    ];
    for name in &saved[2..] {
        expected.push(name.clone());
        expected.push(format!("{name}.json"));
    }
    expected.sort();
    assert_eq!(files_in(dir.path()), expected);

    // A policy that would delete everything keeps the newest.
    let out = sentinel(&["snapshot", "prune", "--dir", d, "--max-age", "1s"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let left = files_in(dir.path());
    assert!(
        left.contains(&saved[3]) && !left.contains(&saved[2]),
        "{left:?}"
    );
    let out = sentinel(&["snapshot", "prune", "--dir", d], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a prune without a policy is a usage error"
    );
}

/// The restore drill: the snapshot restored and served by a throwaway etcd, its revision, key count and KV hash
/// those the source member had; a sidecar that disagrees fails it, naming what differs. Nothing is left running.
#[tokio::test]
async fn the_restore_drill_proves_the_backup_and_catches_a_wrong_one() {
    let cluster = EtcdCluster::start(1).await;
    put_keys(&cluster, "d", 50).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, v, out) = save(&cluster, dir.path());
    assert_eq!(code, 0, "{out}");
    let path = v["path"].as_str().unwrap().to_string();
    let kv = &v["snapshot"]["kv"];
    assert_eq!(kv["key_count"], 50, "{v:#}");
    let etcd = support::etcd_bin();
    let drill = |file: &str| {
        sentinel(
            &[
                "snapshot",
                "verify",
                "--restore",
                "--etcd-bin",
                &etcd,
                file,
                "-w",
                "json",
            ],
            &[],
        )
    };
    let out = drill(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let d = &report["restore_drill"];
    assert_eq!(d["revision"], v["snapshot"]["revision"]);
    assert_eq!(d["key_count"], 50);
    assert_eq!(d["hash_compared"], true, "{d:#}");

    // A sidecar whose hash is not the data's: the drill fails, saying so.
    let sidecar_path = format!("{path}.json");
    let mut sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar_path).unwrap()).unwrap();
    let hash = sidecar["kv"]["hash"].as_u64().unwrap();
    sidecar["kv"]["hash"] = Value::from(hash ^ 1);
    std::fs::write(&sidecar_path, serde_json::to_vec(&sidecar).unwrap()).unwrap();
    let out = drill(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("disagrees") && err.contains("KV hash"),
        "{err}"
    );
    // Both drills removed their scratch directories (named by the process and the revision).
    let revision = v["snapshot"]["revision"].as_i64().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("etcd-sentinel-drill-") && n.ends_with(&format!("-{revision}")))
        .collect();
    assert!(leftovers.is_empty(), "a drill left {leftovers:?} behind");
}

/// Children killed when the test ends, however it ends.
struct Running(Vec<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The restore plan, run as written (on new addresses, the IP-change case), brings the cluster back: every member
/// restored and started with its commands, and the restored cluster serves the keys.
#[tokio::test]
async fn the_restore_plan_brings_the_cluster_back_on_new_addresses() {
    let mut cluster = EtcdCluster::start(3).await;
    put_keys(&cluster, "r", 30).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, v, out) = save(&cluster, dir.path());
    assert_eq!(code, 0, "{out}");
    let path = v["path"].as_str().unwrap().to_string();
    for i in 0..3 {
        cluster.kill(i);
    }
    let names: Vec<String> = v["snapshot"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    let ports = support::free_ports(6);
    let restored = tempfile::tempdir().unwrap();
    let etcd = support::etcd_bin();
    let tools = std::path::Path::new(&etcd)
        .parent()
        .map(|p| p.to_path_buf());
    let tool = ["etcdutl", "etcdctl"]
        .iter()
        .filter_map(|t| tools.as_ref().map(|d| d.join(t)).filter(|p| p.is_file()))
        .next()
        .map_or_else(|| "etcdctl".to_string(), |p| p.display().to_string());
    let mut args = vec![
        "snapshot".to_string(),
        "restore-plan".into(),
        path.clone(),
        "--data-dir-root".into(),
        restored.path().display().to_string(),
        "--restore-tool".into(),
        tool,
        "-w".into(),
        "json".into(),
    ];
    for (i, name) in names.iter().enumerate() {
        args.push("--member".into());
        args.push(format!("{name}=http://127.0.0.1:{}", ports[2 * i]));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sentinel(&refs, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = plan["plan"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let mut running = Running(Vec::new());
    let mut clients = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let argv: Vec<String> = m["restore"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let mut restore = Command::new(&argv[0]);
        restore.args(&argv[1..]);
        for pair in m["restore_env"].as_array().unwrap() {
            restore.env(pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        }
        let done = restore.output().unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        // The plan moved the client URLs with the peer URL's host; on one host the port must move too.
        let client_url = format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let mut start: Vec<String> = m["start"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        for (j, a) in start.clone().iter().enumerate() {
            if a == "--listen-client-urls" || a == "--advertise-client-urls" {
                start[j + 1] = client_url.clone();
            }
        }
        let log = std::fs::File::create(restored.path().join(format!("{i}.log"))).unwrap();
        running.0.push(
            Command::new(&etcd)
                .args(&start)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        clients.push(client_url);
    }
    let endpoints = clients.join(",");
    let keys = wait_for(
        "the restored cluster serving the keys",
        Duration::from_secs(30),
        || {
            let endpoints = endpoints.clone();
            async move {
                let list: Vec<&str> = endpoints.split(',').collect();
                let mut c = etcd_client::Client::connect(list, None).await.ok()?;
                let r = c
                    .get("r", Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .ok()?;
                (r.kvs().len() == 30).then_some(r.kvs().len())
            }
        },
    )
    .await;
    assert_eq!(keys, 30);
    drop(running);
}

/// `POST /api/v1/clusters/{name}/snapshots` takes one now (with the API token), `GET` shows the schedule's next
/// run, the last outcome and the stored snapshots, newest first.
#[tokio::test]
async fn snapshots_are_asked_for_and_listed_through_the_api() {
    use support::daemon::{Daemon, config_for};
    let cluster = EtcdCluster::start(1).await;
    put_keys(&cluster, "api", 20).await;
    let dir = tempfile::tempdir().unwrap();
    // Once a year: only the API asks for snapshots here.
    let snapshot = format!(
        "[cluster.snapshot]\nschedule = \"0 0 1 1 *\"\ndir = {:?}\ncompress = \"zstd\"\n",
        dir.path().display().to_string()
    );
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "api-token-for-snapshots\n").unwrap();
    let config = config_for(&[("with", &cluster, &snapshot), ("without", &cluster, "")]);
    let daemon = Daemon::start_with(
        &config,
        &["--api-token-file".as_ref(), token_file.as_os_str()],
    );
    daemon.wait_ready().await;
    let path = "/api/v1/clusters/with/snapshots";
    let before = daemon.json(path).await;
    assert_eq!(
        before["snapshots"].as_array().unwrap().len(),
        0,
        "{before:#}"
    );
    assert_eq!(before["compression"], "zstd");
    let next = before["status"]["next_run"].as_f64().expect("the next run");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(next > now, "the next run is ahead: {before:#}");

    assert_eq!(daemon.post(path, None).await.0, 401);
    assert_eq!(daemon.post(path, Some("wrong")).await.0, 403);
    let (code, body) = daemon
        .post(
            "/api/v1/clusters/without/snapshots",
            Some("api-token-for-snapshots"),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no [cluster.snapshot]"), "{body}");
    assert_eq!(
        daemon.get("/api/v1/clusters/without/snapshots").await.0,
        404
    );
    let (code, body) = daemon.post(path, Some("api-token-for-snapshots")).await;
    assert_eq!(code, 202, "{body}");

    let after = wait_for(
        "the asked-for snapshot in the list",
        Duration::from_secs(20),
        || async {
            let v = daemon.json(path).await;
            (v["snapshots"].as_array()?.len() == 1 && v["status"]["running_since"].is_null())
                .then_some(v)
        },
    )
    .await;
    let listed = &after["snapshots"][0];
    let file = listed["file"].as_str().unwrap();
    assert!(
        file.starts_with("with-") && file.ends_with(".db.zst"),
        "{after:#}"
    );
    assert_eq!(after["status"]["last_success"]["file"], file);
    assert!(after["status"]["last_failure"].is_null(), "{after:#}");
    assert_eq!(listed["verified"], true);
    assert!(listed["snapshot"]["revision"].as_i64().unwrap() >= 21);
    assert_eq!(
        listed["size_bytes"],
        std::fs::metadata(dir.path().join(file)).unwrap().len()
    );
    assert_eq!(
        after["status"]["next_run"], before["status"]["next_run"],
        "the schedule stays as it was"
    );
}

/// The daemon's schedule: snapshots saved on time, pruned to `keep_last`, each proven by a drill, every outcome
/// in the events and /metrics.
#[tokio::test]
async fn the_daemon_saves_prunes_and_drills_on_schedule() {
    use support::daemon::{Daemon, config_for, sample};
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = format!(
        "interval = \"1s\"\n[cluster.snapshot]\nschedule = \"*/2 * * * * *\"\ndir = {:?}\nkeep_last = 2\nrestore_drill = true\netcd_bin = {:?}\n",
        dir.path().display().to_string(),
        support::etcd_bin()
    );
    let daemon = Daemon::start(&config_for(&[("sched", &cluster, &snapshot)]));
    daemon.wait_ready().await;
    let events = wait_for(
        "three scheduled snapshots, a prune and drills",
        Duration::from_secs(40),
        || async {
            let v = daemon.json("/api/v1/clusters/sched/events").await;
            let kinds: Vec<String> = v["events"]
                .as_array()?
                .iter()
                .map(|e| e["kind"].as_str().unwrap_or("").to_string())
                .collect();
            let saved = kinds.iter().filter(|k| *k == "snapshot_saved").count();
            let drilled = kinds
                .iter()
                .filter(|k| *k == "restore_drill_passed")
                .count();
            (saved >= 3 && drilled >= 2 && kinds.contains(&"snapshot_pruned".to_string()))
                .then_some(v)
        },
    )
    .await;
    let all = events["events"].as_array().unwrap();
    assert!(
        !all.iter()
            .any(|e| e["kind"] == "snapshot_failed" || e["kind"] == "restore_drill_failed"),
        "{events:#}"
    );
    let snapshots = files_in(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".db"))
        .count();
    assert!(
        snapshots <= 3,
        "keep_last = 2 (a third may be being written): {:?}",
        files_in(dir.path())
    );
    let m = daemon.metrics().await;
    assert!(
        sample(
            &m,
            "etcd_sentinel_snapshot_last_success_timestamp_seconds",
            "sched"
        )
        .unwrap()
            > 1e9
    );
    assert_eq!(
        sample(&m, "etcd_sentinel_restore_drill_success", "sched"),
        Some(1.0)
    );
    assert!(sample(&m, "etcd_sentinel_snapshot_latest_revision", "sched").unwrap() >= 1.0);
    assert_eq!(
        sample(
            &m,
            "etcd_sentinel_snapshot_failures_total",
            "reason=\"no_source\""
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &m,
            "etcd_sentinel_snapshot_next_run_timestamp_seconds",
            "sched"
        )
        .is_some()
    );
    // SIGTERM waits for a snapshot or drill in flight, which then cleans up after itself.
    let mut daemon = daemon;
    daemon.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        daemon.child.try_wait().ok().flatten().is_some(),
        "the daemon did not stop within 30s of SIGTERM"
    );
}

/// A restarted daemon still knows its newest snapshot: /metrics shows the newest of this cluster's in the
/// directory (not another cluster's beside it), so a schedule no longer kept after a restart still ages it
/// (EtcdSnapshotTooOld) although this process has saved nothing yet.
#[tokio::test]
async fn a_restarted_daemon_remembers_the_newest_snapshot_in_its_directory() {
    use support::daemon::{Daemon, config_for, sample};
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, out) = save(&cluster, dir.path());
    assert_eq!(code, 0, "{out}");
    put_keys(&cluster, "a", 5).await;
    let (code, newest, out) = save(&cluster, dir.path());
    assert_eq!(code, 0, "{out}");
    // Another cluster's snapshot, newer and of a later revision.
    put_keys(&cluster, "b", 5).await;
    let endpoints = cluster.endpoints();
    let dir_arg = dir.path().to_str().unwrap();
    let (code, _, out) = support::sentinel_json(&[
        "snapshot",
        "save",
        "--endpoints",
        &endpoints,
        "--dir",
        dir_arg,
        "--name",
        "other",
        "-w",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let snapshot = format!("[cluster.snapshot]\nschedule = \"0 0 1 1 *\"\ndir = {dir_arg:?}\n");
    let daemon = Daemon::start(&config_for(&[("prod", &cluster, &snapshot)]));
    daemon.wait_ready().await;
    let m = daemon.metrics().await;
    let s = &newest["snapshot"];
    let prod = "cluster=\"prod\"";
    assert_eq!(
        sample(&m, "etcd_sentinel_snapshot_latest_revision", prod),
        s["revision"].as_f64(),
        "{m}"
    );
    assert_eq!(
        sample(&m, "etcd_sentinel_snapshot_last_size_bytes", prod),
        s["size"].as_f64()
    );
    let at = sample(
        &m,
        "etcd_sentinel_snapshot_last_success_timestamp_seconds",
        prod,
    )
    .unwrap();
    assert!(
        (at - s["started_at"].as_f64().unwrap()).abs() < 0.001,
        "{at} vs {s}"
    );
    // Nothing was saved or timed by this process.
    assert!(
        matches!(
            sample(&m, "etcd_sentinel_snapshot_duration_seconds_count", prod),
            None | Some(0.0)
        ),
        "{m}"
    );
    // A reload that removes the schedule removes its series: no snapshot ages (and pages) for ever.
    daemon.reload_with(&config_for(&[("prod", &cluster, "interval = \"1s\"")]));
    wait_for(
        "the snapshot series gone",
        Duration::from_secs(10),
        || async {
            let m = daemon.metrics().await;
            (sample(
                &m,
                "etcd_sentinel_snapshot_last_success_timestamp_seconds",
                prod,
            )
            .is_none()
                && sample(&m, "etcd_sentinel_cluster_poll_interval_seconds", prod) == Some(1.0))
            .then_some(())
        },
    )
    .await;
}
