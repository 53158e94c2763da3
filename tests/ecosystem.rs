//! The alert rules and the dashboard against the real programs: Debian's Prometheus scrapes a daemon that watches
//! a real etcd cluster, with alerts/etcd-sentinel.rules.yml loaded; every query of dashboards/etcd-sentinel.json
//! must parse and return data; a member is killed, and Debian's Alertmanager delivers the page to a webhook here,
//! with its runbook link. (The rules' own unit tests are `promtool test rules`, run by scripts/check-ecosystem.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::daemon::{Daemon, config_for, sample};
use support::server::Server;
use support::{EtcdCluster, wait_for};

const TOKEN: &str = "e2e-api-token";
const CLUSTER: &str = "e2e";

/// A webhook receiver on loopback: every notification Alertmanager posts, as JSON.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    // Bound here and kept: no port is handed to another process, so the ephemeral range is fine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// The daemon watching `cluster`, after one snapshot (with its restore drill) and one defragmentation asked
/// through the API, so that every maintenance series has a value.
async fn daemon_after_maintenance(cluster: &EtcdCluster) -> (Daemon, tempfile::TempDir) {
    let snapshots = tempfile::tempdir().unwrap();
    let extra = format!(
        "interval = \"1s\"\n[cluster.snapshot]\nschedule = \"0 0 1 1 *\"\ndir = {:?}\ncompress = \"zstd\"\n\
         restore_drill = true\netcd_bin = {:?}\n[cluster.defrag]\n",
        snapshots.path().display().to_string(),
        support::etcd_bin()
    );
    let token_file = snapshots.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let daemon = Daemon::start_with(
        &config_for(&[(CLUSTER, cluster, &extra)]),
        &["--api-token-file".as_ref(), token_file.as_os_str()],
    );
    daemon.wait_ready().await;
    let (code, body) = daemon
        .post(
            &format!("/api/v1/clusters/{CLUSTER}/snapshots"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    wait_for(
        "the snapshot and its drill",
        Duration::from_secs(60),
        || async {
            let m = daemon.metrics().await;
            (sample(&m, "etcd_sentinel_restore_drill_success", "cluster=\"e2e\"") == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let (code, body) = daemon
        .post(&format!("/api/v1/clusters/{CLUSTER}/defrag"), Some(TOKEN))
        .await;
    assert_eq!(code, 202, "{body}");
    let path = format!("/api/v1/clusters/{CLUSTER}/defrag");
    let status = wait_for("the defragmentation", Duration::from_secs(60), || async {
        let v = daemon.json(&path).await;
        (v["status"]["running_since"].is_null() && !v["status"]["last_run"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(
        status["status"]["last_run"]["result"], "success",
        "{status:#}"
    );
    (daemon, snapshots)
}

fn prometheus_config(daemon: &Daemon, alertmanager: &Server) -> String {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/alerts/etcd-sentinel.rules.yml"
    );
    let am = alertmanager.url.trim_start_matches("http://");
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules:?}]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{am:?}]\n\
         scrape_configs:\n  - job_name: etcd-sentinel\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
        daemon.port
    )
}

fn alertmanager_config(webhook: &str) -> String {
    format!(
        "route:\n  receiver: test\n  group_by: [alertname, cluster, member]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: test\n    webhook_configs:\n      - url: {webhook:?}\n        send_resolved: false\n"
    )
}

/// Every query of the dashboard, with its variables as Grafana would fill them in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/etcd-sentinel.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let filled = expr
                .replace("$cluster", CLUSTER)
                .replace("$__rate_interval", "30s");
            assert!(!filled.contains('$'), "a variable left in {expr}");
            queries.push((panel["title"].as_str().unwrap().to_string(), filled));
        }
    }
    queries
}

/// Every `etcd_sentinel_*` name a text mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("etcd_sentinel_"))
        .map(str::to_string)
        .collect()
}

/// Series the rules or the dashboard read that this test's daemon cannot export: the S3 upload's (no bucket
/// here).
const NOT_EXPORTED_HERE: &[&str] = &[
    "etcd_sentinel_snapshot_upload_failures_total",
    "etcd_sentinel_snapshot_last_upload_timestamp_seconds",
];

/// Alerts Prometheus holds, pending or firing, by name.
async fn active_alerts(prometheus: &Server) -> Vec<String> {
    let v = prometheus.json("/api/v1/alerts").await;
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} ({})", a["labels"]["alertname"], a["state"]))
        .collect()
}

/// The notification for `alertname` and `member`, once Alertmanager has delivered it.
fn delivered(received: &Mutex<Vec<Value>>, alertname: &str, member: &str) -> Option<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| {
            a["labels"]["alertname"] == alertname
                && a["status"] == "firing"
                && (member.is_empty() || a["labels"]["member"] == member)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_and_the_dashboard_on_a_real_cluster() {
    let mut cluster = EtcdCluster::start(3).await;
    let (daemon, _snapshots) = daemon_after_maintenance(&cluster).await;
    let (hook, received) = webhook().await;
    let alertmanager = Server::alertmanager(&alertmanager_config(&hook)).await;
    let prometheus = Server::prometheus(&prometheus_config(&daemon, &alertmanager)).await;

    // The rules load and evaluate without error (a many-to-many match, say, fails only at evaluation).
    let rules = wait_for("every rule evaluated", Duration::from_secs(30), || async {
        let v = prometheus.json("/api/v1/rules").await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
    })
    .await;
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {}", r["name"], r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "rules failing: {unhealthy:#?}");
    assert_eq!(rules.len(), 39, "every rule of the file loaded");

    // Every panel's query parses and has data, once a few scrapes are in (rates need two samples).
    let queries = dashboard_queries();
    assert!(queries.len() >= 40, "{} queries", queries.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            match prometheus.query(expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{title}: {expr}")),
                Err(e) => panic!("{title}: {expr} does not run: {e}"),
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard queries without data after 30s: {empty:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every metric name the rules and the dashboard read is one the daemon exports (a misspelt name would
    // evaluate to nothing, without an error, for ever).
    let exported: std::collections::BTreeSet<String> = daemon
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let read = metric_names(
        &[
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/alerts/etcd-sentinel.rules.yml"
            ))
            .unwrap(),
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/dashboards/etcd-sentinel.json"
            ))
            .unwrap(),
        ]
        .concat(),
    );
    let unknown: Vec<&String> = read
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| exported.contains(*f))
                .unwrap_or(name);
            !exported.contains(family) && !NOT_EXPORTED_HERE.contains(&family)
        })
        .collect();
    assert!(unknown.is_empty(), "read but not exported: {unknown:?}");

    // A healthy cluster pages nobody: no alert pending or firing after the snapshot and the defragmentation.
    assert_eq!(active_alerts(&prometheus).await, Vec::<String>::new());
    // What one 3-member cluster costs Prometheus (docs/benchmarks.md).
    for figure in ["scrape_samples_scraped", "scrape_duration_seconds"] {
        let v = prometheus
            .query(&format!("{figure}{{job=\"etcd-sentinel\"}}"))
            .await
            .unwrap();
        eprintln!("figure: {figure} = {}", v[0]["value"][1]);
    }

    // A follower dies: after EtcdMemberDown's minute, Alertmanager delivers it, with the runbook.
    let leader = cluster.leader_index().await;
    let victim = (leader + 1) % 3;
    let name = cluster.members[victim].name.clone();
    cluster.kill(victim);
    let killed = std::time::Instant::now();
    let alert = wait_for(
        "EtcdMemberDown at the webhook",
        Duration::from_secs(120),
        || async { delivered(&received, "EtcdMemberDown", &name) },
    )
    .await;
    eprintln!(
        "figure: member killed -> EtcdMemberDown at the webhook: {:.1}s (its for: 1m included)",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    assert_eq!(alert["labels"]["cluster"], CLUSTER, "{alert:#}");
    assert_eq!(
        alert["labels"]["endpoint"],
        cluster.members[victim].client_url(),
        "{alert:#}"
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://github.com/etcd-sentinel/etcd-sentinel/blob/main/docs/runbooks.md#etcdmemberdown"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains(&name), "{summary}");
    // One of three down leaves no tolerance: that pages too.
    let at_risk = wait_for(
        "EtcdQuorumAtRisk at the webhook",
        Duration::from_secs(30),
        || async { delivered(&received, "EtcdQuorumAtRisk", "") },
    )
    .await;
    assert_eq!(at_risk["labels"]["severity"], "critical", "{at_risk:#}");
    // Nothing else is wrong, so nothing else fires.
    let mut firing: Vec<String> = active_alerts(&prometheus)
        .await
        .into_iter()
        .filter(|a| a.ends_with("(\"firing\")"))
        .collect();
    firing.sort();
    firing.dedup();
    assert_eq!(
        firing,
        [
            "\"EtcdMemberDown\" (\"firing\")",
            "\"EtcdQuorumAtRisk\" (\"firing\")"
        ]
    );
}
