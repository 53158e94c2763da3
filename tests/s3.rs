//! Snapshots in S3-compatible storage, against a real server (moto's, on loopback) and real etcd: saved locally,
//! verified, uploaded with the sidecar; listed, pruned by the same policy and verified remotely; wrong credentials
//! or a missing bucket are clear errors that keep the local verified copy; the daemon uploads what it saves.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::moto::Moto;
use support::{EtcdCluster, files_in, sentinel, wait_for};

const BUCKET: &str = "etcd-backups";
/// Any key does for moto without authentication.
const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test-key-id"),
    ("AWS_SECRET_ACCESS_KEY", "test-secret"),
];

fn s3_flags(moto: &Moto) -> Vec<String> {
    vec![
        "--s3".into(),
        format!("s3://{BUCKET}/prod"),
        "--s3-endpoint".into(),
        moto.endpoint.clone(),
        "--s3-path-style".into(),
    ]
}

/// Runs `etcd-sentinel ARGS… FLAGS…` with the test keys: (exit code, stdout, stderr).
fn run(args: &[&str], flags: &[String], keys: &[(&str, &str)]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    let out = sentinel(&all, keys);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Names carry the second a snapshot was taken: wait for the next one so that two saves never share a name.
async fn next_second() {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = now();
    wait_for("the next second", Duration::from_secs(3), || async {
        (now() > start).then_some(())
    })
    .await;
}

fn save_args<'a>(cluster_endpoints: &'a str, dir: &'a Path) -> Vec<&'a str> {
    vec![
        "snapshot",
        "save",
        "--endpoints",
        cluster_endpoints,
        "--dir",
        dir.to_str().unwrap(),
        "--name",
        "prod",
        "-w",
        "json",
    ]
}

#[tokio::test]
async fn snapshots_go_to_s3_and_are_listed_pruned_and_verified_there() {
    let (cluster, moto) = tokio::join!(EtcdCluster::start(1), Moto::start());
    moto.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();
    let flags = s3_flags(&moto);
    let mut saved = Vec::new();
    for (i, compress) in ["none", "zstd", "zstd"].into_iter().enumerate() {
        let mut client = cluster.client(0).await;
        client.put(format!("k{i}"), "v", None).await.unwrap();
        next_second().await;
        let mut args = save_args(&endpoints, dir.path());
        args.extend(["--compress", compress]);
        let (code, out, err) = run(&args, &flags, &KEYS);
        assert_eq!(code, 0, "{out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let name = v["snapshot"]["file"].as_str().unwrap().to_string();
        assert_eq!(v["uploaded"], format!("s3://{BUCKET}/prod/{name}"), "{v:#}");
        // The object is the verified local file, byte for byte, and its sidecar is beside it.
        let object = moto
            .get_object(BUCKET, &format!("prod/{name}"))
            .await
            .unwrap();
        assert_eq!(object, std::fs::read(dir.path().join(&name)).unwrap());
        assert!(
            moto.get_object(BUCKET, &format!("prod/{name}.json"))
                .await
                .is_some()
        );
        saved.push(name);
    }
    // Not ours: a snapshot-like name without a sidecar, a foreign object, one outside the prefix.
    let orphan = "prod-20200101T000000Z-rev1.db";
    moto.put_object(BUCKET, &format!("prod/{orphan}"), vec![0; 544])
        .await;
    moto.put_object(BUCKET, "prod/notes.txt", b"hello".to_vec())
        .await;
    moto.put_object(BUCKET, "other/prod-20200101T000000Z-rev1.db", vec![0; 544])
        .await;

    let list = |flags: Vec<String>| {
        let (code, out, err) = run(&["snapshot", "list", "-w", "json"], &flags, &KEYS);
        assert_eq!(code, 0, "{out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(flags.clone()), saved, "ours only, oldest first");

    let (code, out, err) = run(
        &["snapshot", "prune", "--keep-last", "2", "--dry-run"],
        &flags,
        &KEYS,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("would delete s3://{BUCKET}/prod/{}", saved[0])),
        "{out}"
    );
    assert_eq!(list(flags.clone()).len(), 3, "a dry run deletes nothing");
    let (code, out, err) = run(&["snapshot", "prune", "--keep-last", "2"], &flags, &KEYS);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(list(flags.clone()), saved[1..].to_vec(), "{out}");
    let keys = moto.keys(BUCKET).await;
    assert!(
        !keys.contains(&format!("prod/{}.json", saved[0])),
        "{keys:?}"
    );
    for kept in [
        format!("prod/{orphan}"),
        "prod/notes.txt".into(),
        "other/prod-20200101T000000Z-rev1.db".into(),
    ] {
        assert!(keys.contains(&kept), "not ours, kept: {kept} in {keys:?}");
    }
    assert_eq!(
        files_in(dir.path()).len(),
        6,
        "a remote prune leaves the local copies alone"
    );

    // Verified remotely: downloaded with its sidecar, checked, removed.
    let newest = format!("s3://{BUCKET}/prod/{}", saved[2]);
    let verify_flags: Vec<String> = flags[2..].to_vec();
    let (code, out, err) = run(&["snapshot", "verify", &newest], &verify_flags, &KEYS);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agrees with its sidecar"), "{out}");
    // A damaged object is caught, named.
    let mut bytes = moto
        .get_object(BUCKET, &format!("prod/{}", saved[2]))
        .await
        .unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    moto.put_object(BUCKET, &format!("prod/{}", saved[2]), bytes)
        .await;
    let (code, out, err) = run(&["snapshot", "verify", &newest], &verify_flags, &KEYS);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&saved[2]) && err.contains("not a valid zstd-compressed snapshot"),
        "{err}"
    );
    let scratch: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("etcd-sentinel-verify-"))
        .collect();
    assert!(scratch.is_empty(), "verify left {scratch:?} behind");
}

#[tokio::test]
async fn wrong_credentials_or_a_missing_bucket_fail_clearly_and_keep_the_local_copy() {
    let (cluster, moto, strict) = tokio::join!(
        EtcdCluster::start(1),
        Moto::start(),
        Moto::refusing_credentials()
    );
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints();

    // No such bucket.
    let (code, out, err) = run(&save_args(&endpoints, dir.path()), &s3_flags(&moto), &KEYS);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("not uploaded (no_bucket)") && err.contains("NoSuchBucket"),
        "{err}"
    );
    let local = files_in(dir.path());
    assert_eq!(
        local.len(),
        2,
        "the verified snapshot and its sidecar stay: {local:?}"
    );
    let file = dir.path().join(&local[0]);
    let (code, out, err) = run(&["snapshot", "verify", file.to_str().unwrap()], &[], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // Credentials the server does not know.
    next_second().await;
    let (code, out, err) = run(
        &save_args(&endpoints, dir.path()),
        &s3_flags(&strict),
        &KEYS,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not uploaded (auth)"), "{err}");
    assert_eq!(files_in(dir.path()).len(), 4, "{:?}", files_in(dir.path()));
    let (code, _, err) = run(&["snapshot", "list"], &s3_flags(&strict), &KEYS);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("auth"), "{err}");

    // Bad S3 flags are bad usage, refused before anything is streamed.
    let (code, _, err) = run(
        &save_args(&endpoints, dir.path()),
        &["--s3".into(), "s3://Not_A_Bucket".into()],
        &KEYS,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Not_A_Bucket"), "{err}");
    assert_eq!(files_in(dir.path()).len(), 4);
}

#[tokio::test]
async fn the_daemon_uploads_what_it_saves_and_prunes_the_bucket() {
    use support::daemon::{Daemon, config_for, sample};
    let (cluster, moto) = tokio::join!(EtcdCluster::start(1), Moto::start());
    moto.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let (id_file, secret_file) = (secrets.path().join("id"), secrets.path().join("secret"));
    std::fs::write(&id_file, "daemon-key\n").unwrap();
    std::fs::write(&secret_file, "daemon-secret\n").unwrap();
    let snapshot = format!(
        "interval = \"1s\"\n[cluster.snapshot]\nschedule = \"*/2 * * * * *\"\ndir = {:?}\nkeep_last = 2\n\
         [cluster.snapshot.s3]\nbucket = {BUCKET:?}\nprefix = \"daemon/\"\nendpoint = {:?}\npath_style = true\n\
         access_key_id_file = {:?}\nsecret_access_key_file = {:?}\n",
        dir.path().display().to_string(),
        moto.endpoint,
        id_file.display().to_string(),
        secret_file.display().to_string(),
    );
    let daemon = Daemon::start(&config_for(&[("up", &cluster, &snapshot)]));
    daemon.wait_ready().await;
    wait_for(
        "three uploads and a prune of the bucket",
        Duration::from_secs(40),
        || async {
            let v = daemon.json("/api/v1/clusters/up/events").await;
            let events = v["events"].as_array()?.clone();
            let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
            let pruned_remote = events.iter().any(|e| {
                e["kind"] == "snapshot_pruned"
                    && e["message"].as_str().unwrap_or("").contains("s3://")
            });
            (count("snapshot_uploaded") >= 3 && pruned_remote).then_some(())
        },
    )
    .await;
    let m = daemon.metrics().await;
    assert!(
        sample(
            &m,
            "etcd_sentinel_snapshot_last_upload_timestamp_seconds",
            "up"
        )
        .unwrap()
            > 1e9
    );
    assert_eq!(
        sample(
            &m,
            "etcd_sentinel_snapshot_upload_failures_total",
            "reason=\"auth\""
        ),
        Some(0.0)
    );
    let interval = sample(&m, "etcd_sentinel_snapshot_schedule_interval_seconds", "up").unwrap();
    assert!((interval - 2.0).abs() < 0.01, "every 2 s: {interval}");
    let (code, out, err) = run(
        &["snapshot", "list", "-w", "json"],
        &[
            "--s3".into(),
            format!("s3://{BUCKET}/daemon"),
            "--s3-endpoint".into(),
            moto.endpoint.clone(),
            "--s3-path-style".into(),
        ],
        &KEYS,
    );
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let remote = listed["snapshots"].as_array().unwrap().len();
    // keep_last = 2, and one more may be between its upload and the prune that follows it.
    assert!((2..=3).contains(&remote), "{listed:#}");
}
