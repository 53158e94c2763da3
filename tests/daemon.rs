//! `etcd-sentinel run` against real etcd clusters: metrics, the JSON API, events, reloads, signals.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{Daemon, config_for, sample};
use support::{EtcdCluster, wait_for};

#[tokio::test]
async fn metrics_follow_a_killed_leader_within_two_intervals() {
    let mut cluster = EtcdCluster::start(3).await;
    let daemon = Daemon::start(&config_for(&[(
        "prod",
        &cluster,
        "interval = \"1s\"\ncommand_timeout = \"2s\"",
    )]));
    daemon.wait_ready().await;
    let m = daemon.metrics().await;
    assert_eq!(
        sample(&m, "etcd_sentinel_cluster_failure_tolerance", "prod"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "etcd_sentinel_cluster_leader_changes_total", "prod"),
        Some(0.0)
    );

    let leader = cluster.leader_index().await;
    let leader_url = cluster.client_url(leader);
    cluster.kill(leader);
    let killed_at = Instant::now();
    let label = format!("endpoint=\"{leader_url}\"");
    wait_for(
        "the killed leader to show as down",
        Duration::from_secs(10),
        || async {
            let m = daemon.metrics().await;
            (sample(&m, "etcd_sentinel_endpoint_up", &label) == Some(0.0)).then_some(())
        },
    )
    .await;
    let seen_after = killed_at.elapsed();
    // Two intervals, plus the time the poll itself takes.
    assert!(
        seen_after < Duration::from_millis(2500),
        "down only after {seen_after:?}"
    );

    let m = wait_for(
        "a new leader and a counted leader change",
        Duration::from_secs(15),
        || async {
            let m = daemon.metrics().await;
            let changed =
                sample(&m, "etcd_sentinel_cluster_leader_changes_total", "prod") == Some(1.0);
            let has_leader = sample(&m, "etcd_sentinel_cluster_has_leader", "prod") == Some(1.0);
            let leads = m.lines().any(|l| {
                l.starts_with("etcd_sentinel_member_is_leader{")
                    && !l.contains(&label)
                    && l.ends_with(" 1")
            });
            (changed && has_leader && leads).then_some(m)
        },
    )
    .await;
    assert_eq!(
        sample(&m, "etcd_sentinel_cluster_failure_tolerance", "prod"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "etcd_sentinel_cluster_healthy_voting_members", "prod"),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "etcd_sentinel_member_is_leader", &label),
        Some(0.0)
    );
}

#[tokio::test]
async fn api_returns_the_view_of_status_json() {
    let cluster = EtcdCluster::start(3).await;
    let daemon = Daemon::start(&config_for(&[("prod", &cluster, "interval = \"500ms\"")]));
    daemon.wait_ready().await;

    let out = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
        .args(["status", "-w", "json", "--endpoints", &cluster.endpoints()])
        .output()
        .expect("status");
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let api = daemon.json("/api/v1/clusters/prod").await;
    for key in ["cluster_id", "leader_id", "members", "quorum", "alarms"] {
        assert_eq!(api[key], status[key], "{key} differs");
    }
    assert_eq!(api["cluster"], "prod");
    let stable = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["endpoint"].clone(),
                    e["member_id"].clone(),
                    e["healthy"].clone(),
                    e["is_leader"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(stable(&api), stable(&status));
    // Every key of the status JSON is in the API's view, and the other way round.
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&api), keys(&status));
    assert_eq!(keys(&api["endpoints"][0]), keys(&status["endpoints"][0]));

    let list = daemon.json("/api/v1/clusters").await;
    assert_eq!(list["clusters"][0]["name"], "prod");
    assert_eq!(list["clusters"][0]["healthy"], true);
    assert_eq!(list["clusters"][0]["failure_tolerance"], 1);

    let (code, body) = daemon.get("/api/v1/clusters/nope").await;
    assert_eq!(code, 404);
    assert!(body.contains("nope") && body.contains("error"), "{body}");
    let (code, _) = daemon.get("/api/v1/clusters/nope/events").await;
    assert_eq!(code, 404);
    let (code, _) = daemon.get("/no/such/path").await;
    assert_eq!(code, 404);
    let post = reqwest::Client::new()
        .post(daemon.url("/api/v1/clusters/prod"))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(daemon.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn events_record_unhealthy_then_healthy_in_order() {
    let mut cluster = EtcdCluster::start(3).await;
    let daemon = Daemon::start(&config_for(&[("prod", &cluster, "interval = \"500ms\"")]));
    daemon.wait_ready().await;
    let leader = cluster.leader_index().await;
    let victim = (leader + 1) % 3;
    let url = cluster.client_url(victim);
    cluster.kill(victim);
    wait_for(
        "a member_unhealthy event",
        Duration::from_secs(10),
        || async {
            let events = daemon.json("/api/v1/clusters/prod/events").await;
            events["events"]
                .as_array()?
                .iter()
                .any(|e| e["kind"] == "member_unhealthy" && e["endpoint"] == url.as_str())
                .then_some(())
        },
    )
    .await;
    cluster.restart(victim);
    let events = wait_for(
        "a member_healthy event",
        Duration::from_secs(20),
        || async {
            let events = daemon.json("/api/v1/clusters/prod/events").await;
            let list = events["events"].as_array()?.clone();
            list.iter()
                .any(|e| e["kind"] == "member_healthy" && e["endpoint"] == url.as_str())
                .then_some(list)
        },
    )
    .await;
    let mine: Vec<&str> = events
        .iter()
        .filter(|e| e["endpoint"] == url.as_str())
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        mine,
        vec!["member_unhealthy", "member_healthy"],
        "{events:#?}"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.first(),
        Some(&"watch_started"),
        "the first poll records the state found"
    );
    assert!(kinds.contains(&"quorum_at_risk"), "{kinds:?}");
    assert!(
        !kinds.contains(&"quorum_restored"),
        "quorum was at risk, never lost: {kinds:?}"
    );
    let times: Vec<f64> = events.iter().filter_map(|e| e["time"].as_f64()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "events in time order"
    );
    // The same events reach the log, machine-readable.
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"member_unhealthy\"") && l.contains(&url)),
        "{log}"
    );
}

#[tokio::test]
async fn a_frozen_cluster_does_not_delay_another() {
    let mut slow = EtcdCluster::start(1).await;
    let fast = EtcdCluster::start(1).await;
    let daemon = Daemon::start(&config_for(&[
        (
            "slow",
            &slow,
            "interval = \"500ms\"\ncommand_timeout = \"4s\"",
        ),
        ("fast", &fast, "interval = \"500ms\""),
    ]));
    daemon.wait_ready().await;
    slow.freeze(0);
    let polls = |m: &str, c: &str| {
        sample(
            m,
            "etcd_sentinel_poll_duration_seconds_count",
            &format!("cluster=\"{c}\""),
        )
    };
    // Let the slow cluster's first frozen poll start, then count over 4 seconds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = daemon.metrics().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = daemon.metrics().await;
    let window = started.elapsed().as_secs_f64();
    let fast_polls = polls(&after, "fast").unwrap() - polls(&before, "fast").unwrap();
    let slow_polls = polls(&after, "slow").unwrap() - polls(&before, "slow").unwrap();
    // 500ms interval: about 8 polls in 4s; demand at least 6.
    assert!(
        fast_polls >= 6.0,
        "fast cluster polled {fast_polls} times in {window:.1}s"
    );
    // A member that says nothing is given up after unresponsive_after (1s), not the 4s command timeout: its
    // cluster is polled about once a second, neither every 500ms nor every 4s.
    assert!(
        (2.0..=5.0).contains(&slow_polls),
        "the frozen cluster's polls each end after unresponsive_after ({slow_polls})"
    );
    let view = daemon.json("/api/v1/clusters/slow").await;
    let error = view["endpoints"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no answer for 1s"), "{view:#}");
    let m = daemon.metrics().await;
    assert_eq!(
        sample(&m, "etcd_sentinel_cluster_healthy", "cluster=\"fast\""),
        Some(1.0)
    );
    slow.thaw(0);
}

#[tokio::test]
async fn promtool_finds_nothing_to_complain_about() {
    let mut cluster = EtcdCluster::start(3).await;
    let daemon = Daemon::start(&config_for(&[("prod", &cluster, "interval = \"500ms\"")]));
    daemon.wait_ready().await;
    // etcd measures peer round trips every few seconds: wait for the first measurement to be exported.
    wait_for("peer round-trip times", Duration::from_secs(20), || async {
        let m = daemon.metrics().await;
        m.contains("etcd_sentinel_peer_round_trip_time_seconds{")
            .then_some(())
    })
    .await;
    // A dead follower and a couple of polls: down series, warnings and histograms all present.
    let victim = (cluster.leader_index().await + 1) % 3;
    cluster.kill(victim);
    let text = wait_for(
        "metrics with the dead member",
        Duration::from_secs(10),
        || async {
            let m = daemon.metrics().await;
            let down =
                sample(&m, "etcd_sentinel_endpoint_up", &cluster.client_url(victim)) == Some(0.0);
            let led = sample(&m, "etcd_sentinel_cluster_has_leader", "prod") == Some(1.0);
            (down && led).then_some(m)
        },
    )
    .await;
    let path = daemon.dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
    assert_eq!(
        sample(&text, "etcd_sentinel_cluster_poll_interval_seconds", "prod"),
        Some(0.5),
        "the interval the staleness alert compares with"
    );
    for family in [
        "etcd_sentinel_endpoint_up",
        "etcd_sentinel_endpoint_healthy",
        "etcd_sentinel_member_is_leader",
        "etcd_sentinel_raft_index_lag",
        "etcd_sentinel_db_size_in_use_bytes",
        "etcd_sentinel_db_quota_bytes",
        "etcd_sentinel_probe_duration_seconds_bucket",
        "etcd_sentinel_peer_round_trip_time_seconds",
        "etcd_sentinel_cluster_quorum_size",
        "etcd_sentinel_poll_errors_total",
        "etcd_sentinel_alarm_active",
        "etcd_sentinel_build_info",
        "etcd_sentinel_wal_fsync_duration_seconds",
        "etcd_sentinel_backend_commit_duration_seconds",
        "etcd_sentinel_proposals_committed_total",
        "etcd_sentinel_proposals_pending",
        "etcd_sentinel_proposals_apply_gap",
        "etcd_sentinel_member_has_leader",
        "etcd_sentinel_grpc_requests_total",
        "etcd_sentinel_member_open_fds",
    ] {
        assert!(text.contains(&format!("{family}{{")), "missing {family}");
    }
}

fn check_config(path: &Path) -> (i32, String) {
    support::sentinel_output(&["check-config", path.to_str().unwrap()])
}

#[test]
fn invalid_configs_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, expected) in [
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1\"]\n",
            "bad.toml:3: cluster[0].endpoints[0]",
        ),
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\ninterval = \"soon\"\n",
            "bad.toml:4: cluster[0].interval",
        ),
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nbogus = 1\n",
            "unknown field `bogus`",
        ),
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"\n",
            "bad.toml:3",
        ),
        ("listen = \"0.0.0.0:9379\"\n", "no [[cluster]]"),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, output) = check_config(&path);
        assert_eq!(code, 2, "{text}\n{output}");
        assert!(
            output.contains(expected),
            "expected {expected:?} in {output}"
        );
        // `run` refuses the same file the same way, before listening on anything.
        let out = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected));
    }
    // Files the configuration names are read by check-config too: a missing one is named.
    for (text, expected) in [
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.tls]\ncacert = \"/nonexistent/ca.crt\"\n",
            "/nonexistent/ca.crt",
        ),
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nuser = \"monitor\"\npassword_file = \"/nonexistent/pw\"\n",
            "/nonexistent/pw",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, output) = check_config(&path);
        assert_eq!(code, 2, "{output}");
        assert!(
            output.contains(expected),
            "expected {expected:?} in {output}"
        );
    }
    let (code, output) = check_config(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert!(output.contains("missing.toml"), "{output}");
    std::fs::write(&path, "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n").unwrap();
    let (code, output) = check_config(&path);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("cluster a"));
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_keeps_the_running_config() {
    let a = EtcdCluster::start(1).await;
    let b = EtcdCluster::start(1).await;
    let daemon = Daemon::start(&config_for(&[("a", &a, "interval = \"300ms\"")]));
    daemon.wait_ready().await;
    let names = |v: Value| -> Vec<String> {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(daemon.json("/api/v1/clusters").await), vec!["a"]);

    daemon.reload_with(&config_for(&[
        ("a", &a, "interval = \"300ms\""),
        ("b", &b, ""),
    ]));
    wait_for(
        "cluster b after the reload",
        Duration::from_secs(10),
        || async { (names(daemon.json("/api/v1/clusters").await) == vec!["a", "b"]).then_some(()) },
    )
    .await;
    daemon.wait_ready().await;

    daemon.reload_with("[[cluster]]\nname = \"a\"\nendpoints = [\"nope\"]\n");
    wait_for(
        "the rejected reload in the log",
        Duration::from_secs(10),
        || async {
            daemon
                .log_text()
                .contains("configuration not reloaded")
                .then_some(())
        },
    )
    .await;
    assert!(daemon.log_text().contains("cluster[0].endpoints[0]"));
    assert_eq!(names(daemon.json("/api/v1/clusters").await), vec!["a", "b"]);
    // The old configuration keeps polling.
    let before = daemon.json("/api/v1/clusters/a").await["polled_at"]
        .as_f64()
        .unwrap();
    wait_for("another poll of a", Duration::from_secs(5), || async {
        (daemon.json("/api/v1/clusters/a").await["polled_at"].as_f64()? > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_within_a_second_and_readyz_waits_for_the_first_poll() {
    // A black hole: the kernel accepts connections, nobody answers, so the first poll waits for the dial timeout.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let mut daemon = Daemon::start(&format!(
        "[[cluster]]\nname = \"hole\"\nendpoints = [\"{addr}\"]\ndial_timeout = \"3s\"\n"
    ));
    let (code, body) = wait_for("the HTTP server", Duration::from_secs(10), || async {
        let (code, body) = daemon.get("/readyz").await;
        (code != 0).then_some((code, body))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("hole"));
    daemon.wait_ready().await;
    let view = daemon.json("/api/v1/clusters/hole").await;
    assert_eq!(view["healthy"], false);

    daemon.signal(libc::SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still running 1s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    drop(hole);
}

#[tokio::test]
async fn maintenance_readiness_follows_the_verdict_and_names_what_stops_it() {
    let mut cluster = EtcdCluster::start(3).await;
    let daemon = Daemon::start(&config_for(&[(
        "prod",
        &cluster,
        "interval = \"1s\"\ncommand_timeout = \"2s\"",
    )]));
    daemon.wait_ready().await;
    let leader = cluster.leader_index().await;
    let ready = wait_for(
        "the maintenance task's first judgement",
        Duration::from_secs(10),
        || async {
            let (code, body) = daemon.get("/api/v1/clusters/prod/maintenance").await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["maintenance"]["ready"] == true).then_some(v)
        },
    )
    .await;
    let order: Vec<&str> = ready["maintenance"]["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["member"].as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 3, "{ready:#}");
    assert_eq!(
        order[2], cluster.members[leader].name,
        "the leader goes last: {ready:#}"
    );

    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let refused = wait_for(
        "maintenance refused once a member is down",
        Duration::from_secs(10),
        || async {
            let v = daemon.json("/api/v1/clusters/prod/maintenance").await;
            (v["maintenance"]["ready"] == false).then_some(v)
        },
    )
    .await;
    let refusals = refused["maintenance"]["refusals"].as_array().unwrap();
    let kinds: Vec<&str> = refusals
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"quorum") && kinds.contains(&"member_unhealthy"),
        "{refused:#}"
    );
    let down = refusals
        .iter()
        .find(|r| r["kind"] == "member_unhealthy")
        .unwrap();
    assert!(
        down["message"]
            .as_str()
            .unwrap()
            .contains(&cluster.members[follower].name),
        "{down:#}"
    );
    let (code, body) = daemon.get("/api/v1/clusters/nope/maintenance").await;
    assert_eq!(code, 404, "{body}");
}
