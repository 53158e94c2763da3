//! Vital signs read from real etcd members: two polls of the library's poller around what happens in between.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_sentinel::etcd::connect::{ConnectSettings, Connector};
use etcd_sentinel::etcd::endpoint::Endpoint;
use etcd_sentinel::probe::poller::ClusterPoller;
use etcd_sentinel::settings::{MetricsSource, Target};
use etcd_sentinel::view::{ClusterView, EndpointState, WarningKind};
use support::{EtcdCluster, wait_for};

fn poller(cluster: &EtcdCluster, configure: impl FnOnce(&mut Target)) -> ClusterPoller {
    let endpoints = Endpoint::parse_list(&cluster.endpoints()).unwrap();
    let mut target = Target::new("test", endpoints);
    configure(&mut target);
    let connector = Connector::new(ConnectSettings::default()).unwrap();
    ClusterPoller::new(target, Arc::new(connector))
}

fn endpoint<'a>(view: &'a ClusterView, url: &str) -> &'a EndpointState {
    view.endpoints.iter().find(|e| e.endpoint == url).unwrap()
}

/// The member's own count of backend commits, read straight from its /metrics.
async fn backend_commits(client_url: &str) -> f64 {
    let text = reqwest::get(format!("{client_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_disk_backend_commit_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Writes through the leader, so that its own gRPC counters move too (a follower forwards through raft).
async fn write(cluster: &EtcdCluster, n: usize) {
    let mut client = cluster.client(cluster.leader_index().await).await;
    for i in 0..n {
        client
            .put(format!("load-{i}"), vec![b'v'; 256], None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn write_load_shows_fsync_and_commit_latency_and_proposal_rates() {
    let cluster = EtcdCluster::start(3).await;
    let mut poller = poller(&cluster, |_| {});
    let first = poller.poll().await;
    assert!(first.healthy);
    let leader_url = first
        .endpoints
        .iter()
        .find(|e| e.is_leader)
        .unwrap()
        .endpoint
        .clone();
    let commits_before = backend_commits(&leader_url).await;
    write(&cluster, 200).await;
    // The backend commits in batches (every 100 ms): wait until the leader says it committed since.
    wait_for(
        "the leader's backend commit",
        Duration::from_secs(5),
        || {
            let url = leader_url.clone();
            async move { (backend_commits(&url).await > commits_before).then_some(()) }
        },
    )
    .await;
    let second = poller.poll().await;
    let leader = second.endpoints.iter().find(|e| e.is_leader).unwrap();
    let v = leader.vitals.as_ref().expect("vitals of the leader");
    let wal = v
        .wal_fsync_seconds
        .expect("WAL fsync quantiles over the interval");
    assert!(wal.window_count >= 200, "{wal:?}");
    assert!(wal.p50.unwrap() > 0.0 && wal.p99 >= wal.p50, "{wal:?}");
    let commit = v.backend_commit_seconds.expect("backend commit quantiles");
    assert!(
        commit.window_count > 0 && commit.p99.unwrap() > 0.0,
        "{commit:?}"
    );
    let committed = v.proposals_committed_per_second.expect("a committed rate");
    assert!(committed > 0.0, "{committed}");
    assert!(v.proposals_applied_per_second.unwrap() > 0.0);
    assert_eq!(v.proposals_failed_per_second, Some(0.0));
    assert_eq!(v.has_leader, Some(true));
    assert!(v.open_fds.unwrap() > 0.0 && v.max_fds.unwrap() > v.open_fds.unwrap());
    let grpc = v.grpc_failed_ratio.expect("gRPC ratio");
    assert!(grpc.server_error < 0.5);
    // Whatever this machine's disk does under the test load, the verdict agrees with the measurement: the leader
    // carries a slow_wal_fsync warning exactly when its fsync p99 is over etcd's 10 ms.
    let warned = second.warnings.iter().any(|w| {
        w.kind == WarningKind::SlowWalFsync
            && w.endpoint.as_deref() == Some(leader.endpoint.as_str())
    });
    assert_eq!(warned, wal.p99.unwrap() > 0.010, "{:?}", second.warnings);
}

#[tokio::test]
async fn a_restart_between_polls_gives_no_bogus_values() {
    let mut cluster = EtcdCluster::start(3).await;
    let mut poller = poller(&cluster, |_| {});
    write(&cluster, 50).await;
    let before = poller.poll().await;
    let victim = (cluster.leader_index().await + 1) % 3;
    let url = cluster.client_url(victim);
    assert!(endpoint(&before, &url).vitals.is_some());
    cluster.restart(victim);
    let seed = cluster.client_url(victim);
    wait_for(
        "the restarted member to answer",
        Duration::from_secs(20),
        || {
            let seed = seed.clone();
            async move {
                let mut c = etcd_client::Client::connect([seed], None).await.ok()?;
                c.status().await.ok().map(|_| ())
            }
        },
    )
    .await;
    // The poller's cached connection to the victim broke; the first poll may only reconnect.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let view = poller.poll().await;
        if endpoint(&view, &url).vitals.is_some() {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted member's metrics were never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v = endpoint(&after, &url).vitals.clone().unwrap();
    // Counters restarted from zero: nothing computed across the restart...
    assert_eq!(v.wal_fsync_seconds, None, "{v:?}");
    assert_eq!(v.backend_commit_seconds, None);
    assert_eq!(v.proposals_committed_per_second, None);
    assert_eq!(v.grpc_failed_ratio, None);
    // ...while the members that kept running still have their interval values.
    for e in after.endpoints.iter().filter(|e| e.endpoint != url) {
        let other = e.vitals.as_ref().unwrap();
        assert!(
            other.proposals_committed_per_second.is_some(),
            "{}",
            e.endpoint
        );
    }
}

#[tokio::test]
async fn metrics_urls_override_is_read_and_an_unreadable_one_only_warns() {
    let cluster = EtcdCluster::builder()
        .members(3)
        .separate_metrics_port()
        .start()
        .await;
    let m0 = &cluster.members[0];
    let dead = "http://127.0.0.1:9/metrics";
    let mut map = BTreeMap::new();
    map.insert(
        m0.name.clone(),
        format!("http://127.0.0.1:{}/metrics", m0.metrics_port.unwrap()),
    );
    map.insert(cluster.members[1].name.clone(), dead.to_string());
    let mut poller = poller(&cluster, |t| t.metrics = MetricsSource::PerMember(map));
    let view = poller.poll().await;

    let e0 = endpoint(&view, &cluster.client_url(0));
    assert!(e0.metrics_error.is_none(), "{:?}", e0.metrics_error);
    assert!(e0.vitals.is_some() && e0.db_quota_bytes.is_some());

    let e1 = endpoint(&view, &cluster.client_url(1));
    assert!(
        e1.healthy,
        "unreadable metrics do not make a member unhealthy"
    );
    assert!(
        e1.metrics_error.as_deref().unwrap().contains("127.0.0.1:9"),
        "{:?}",
        e1.metrics_error
    );
    assert!(e1.vitals.is_none());
    let warning = view
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::MetricsUnreadable)
        .expect("a metrics_unreadable warning");
    assert_eq!(warning.member_id, e1.member_id);
    assert!(view.healthy, "the verdict does not depend on metrics");

    // A member not in the map is read on its client URL.
    assert!(endpoint(&view, &cluster.client_url(2)).vitals.is_some());
}

#[tokio::test]
async fn vitals_interval_reads_metrics_less_often() {
    let cluster = EtcdCluster::start(1).await;
    let mut poller = poller(&cluster, |t| {
        t.vitals_interval = Some(Duration::from_secs(3600))
    });
    let first = poller.poll().await;
    write(&cluster, 20).await;
    let second = poller.poll().await;
    let url = cluster.client_url(0);
    let (a, b) = (endpoint(&first, &url), endpoint(&second, &url));
    // Raft moved on, the metrics reading did not: it is the same one, shown again.
    assert!(b.raft_index.unwrap() > a.raft_index.unwrap());
    assert_eq!(a.vitals, b.vitals);
    assert!(b.vitals.is_some() && b.db_quota_bytes.is_some());
}
