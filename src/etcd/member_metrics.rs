//! The families etcd-sentinel needs from a member's own /metrics (about 150 KB of text on etcd 3.4), as one raw
//! reading. Turning two readings into vital signs is `vitals`' job.
//!
//! Only lines of the wanted families reach the parser: that keeps a poll cheap and makes the rest of the page
//! irrelevant (a malformed line elsewhere cannot break a probe). `grpc_server_handled_total` has a line per
//! method and code, ~700 on 3.4, nearly all 0: zero lines add nothing to a sum and are skipped before parsing.

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};
use thiserror::Error;

use crate::histogram::Histogram;
use crate::id::Id;

/// The most peers kept from one page: etcd clusters have a handful of members, and each peer becomes metric label
/// values, so a page that claims more (broken or hostile) must not grow the series without bound.
pub const MAX_PEERS: usize = 64;
/// The most distinct gRPC codes kept (gRPC has 17).
const MAX_CODES: usize = 32;

const QUOTA: &str = "etcd_server_quota_backend_bytes";
const PEER_RTT: &str = "etcd_network_peer_round_trip_time_seconds";
const PEER_SENT_FAILURES: &str = "etcd_network_peer_sent_failures_total";
const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
const BACKEND_COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";
const GRPC_HANDLED: &str = "grpc_server_handled_total";

/// Where a single-number family is stored in a reading.
type Slot = fn(&mut MemberMetrics) -> &mut Option<f64>;

/// Families read as a single number, and where each goes.
const SCALARS: [(&str, Slot); 15] = [
    ("process_start_time_seconds", |m| &mut m.process_start_time),
    ("etcd_server_proposals_committed_total", |m| {
        &mut m.proposals_committed
    }),
    ("etcd_server_proposals_applied_total", |m| {
        &mut m.proposals_applied
    }),
    ("etcd_server_proposals_pending", |m| {
        &mut m.proposals_pending
    }),
    ("etcd_server_proposals_failed_total", |m| {
        &mut m.proposals_failed
    }),
    ("etcd_server_leader_changes_seen_total", |m| {
        &mut m.leader_changes_seen
    }),
    ("etcd_server_has_leader", |m| &mut m.has_leader),
    ("etcd_server_slow_apply_total", |m| &mut m.slow_applies),
    ("etcd_server_slow_read_indexes_total", |m| {
        &mut m.slow_read_indexes
    }),
    ("etcd_server_heartbeat_send_failures_total", |m| {
        &mut m.heartbeat_send_failures
    }),
    ("process_resident_memory_bytes", |m| {
        &mut m.resident_memory_bytes
    }),
    ("process_open_fds", |m| &mut m.open_fds),
    ("process_max_fds", |m| &mut m.max_fds),
    ("etcd_mvcc_db_open_read_transactions", |m| {
        &mut m.db_open_read_transactions
    }),
    (QUOTA, |m| &mut m.quota),
];

/// A histogram with its `_sum`: what a Prometheus summary needs besides quantiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub histogram: Histogram,
    pub sum: f64,
}

/// One reading of a member's /metrics. Every value is as etcd reports it: cumulative since the member started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberMetrics {
    /// `--quota-backend-bytes` as the member reports it; see [`MemberMetrics::quota_backend_bytes`].
    quota: Option<f64>,
    /// Heartbeat round-trip time to each peer.
    pub peer_rtt: BTreeMap<Id, Histogram>,
    /// Sum of those round-trip times (the histogram's `_sum`).
    pub peer_rtt_sum: BTreeMap<Id, f64>,
    /// Messages to each peer that could not be sent.
    pub peer_sent_failures: BTreeMap<Id, f64>,
    pub wal_fsync: Option<Latency>,
    pub backend_commit: Option<Latency>,
    pub proposals_committed: Option<f64>,
    pub proposals_applied: Option<f64>,
    pub proposals_pending: Option<f64>,
    pub proposals_failed: Option<f64>,
    pub leader_changes_seen: Option<f64>,
    pub has_leader: Option<f64>,
    pub slow_applies: Option<f64>,
    pub slow_read_indexes: Option<f64>,
    pub heartbeat_send_failures: Option<f64>,
    /// gRPC requests handled, summed over methods, by status code name ("OK", "Unavailable", …).
    pub grpc_handled: BTreeMap<String, f64>,
    pub resident_memory_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub db_open_read_transactions: Option<f64>,
    /// When the etcd process started: a different value between two readings means a restart.
    pub process_start_time: Option<f64>,
}

impl MemberMetrics {
    /// `--quota-backend-bytes` as the member applies it (Status only reports it from etcd 3.6 on).
    pub fn quota_backend_bytes(&self) -> Option<u64> {
        self.quota.filter(|q| *q >= 0.0).map(|q| q as u64)
    }
}

#[derive(Debug, Error)]
pub enum MetricsParseError {
    #[error("not Prometheus text: {0}")]
    Malformed(String),
    #[error("no etcd metrics found (is this an etcd member's /metrics?)")]
    NotEtcd,
}

fn family_of(line: &str) -> &str {
    let rest = line
        .strip_prefix("# TYPE ")
        .or_else(|| line.strip_prefix("# HELP "))
        .unwrap_or(line);
    let end = rest.find(['{', ' ']).unwrap_or(rest.len());
    let name = &rest[..end];
    // Histogram lines carry a suffix; the family is the name without it.
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|base| matches!(*base, PEER_RTT | WAL_FSYNC | BACKEND_COMMIT))
        .unwrap_or(name)
}

/// Whether a line of a member's page is one of the families read here (the rest of the page is ignored).
pub fn is_wanted(line: &str) -> bool {
    let family = family_of(line);
    match family {
        PEER_RTT | PEER_SENT_FAILURES | WAL_FSYNC | BACKEND_COMMIT => true,
        GRPC_HANDLED => line.starts_with('#') || !line.ends_with(" 0"),
        _ => SCALARS.iter().any(|(name, _)| *name == family),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) if v.is_finite() => Some(*v),
        _ => None,
    }
}

fn latency(buckets: &[prometheus_parse::HistogramCount]) -> Latency {
    Latency {
        histogram: Histogram::new(buckets.iter().map(|b| (b.less_than, b.count)).collect()),
        sum: 0.0,
    }
}

pub fn parse(text: &str) -> Result<MemberMetrics, MetricsParseError> {
    if !text.contains("etcd_") {
        return Err(MetricsParseError::NotEtcd);
    }
    let lines = text
        .lines()
        .filter(|line| is_wanted(line))
        .map(|line| Ok(line.to_string()));
    let scrape = Scrape::parse(lines).map_err(|e| MetricsParseError::Malformed(e.to_string()))?;
    let mut out = MemberMetrics::default();
    let mut wal_sum = None;
    let mut commit_sum = None;
    for sample in scrape.samples {
        let peer = || sample.labels.get("To").and_then(Id::from_hex);
        // A peer already seen, or room for one more.
        let room = |known: bool, len: usize| known || len < MAX_PEERS;
        let name = sample.metric.as_str();
        match (name, &sample.value) {
            (PEER_RTT, Value::Histogram(buckets)) => {
                if let Some(p) =
                    peer().filter(|p| room(out.peer_rtt.contains_key(p), out.peer_rtt.len()))
                {
                    let pairs = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                    out.peer_rtt.insert(p, Histogram::new(pairs));
                }
            }
            (WAL_FSYNC, Value::Histogram(buckets)) => out.wal_fsync = Some(latency(buckets)),
            (BACKEND_COMMIT, Value::Histogram(buckets)) => {
                out.backend_commit = Some(latency(buckets))
            }
            _ => {
                let Some(v) = number(&sample.value) else {
                    continue;
                };
                match name.strip_suffix("_sum") {
                    Some(PEER_RTT) => {
                        if let Some(p) = peer().filter(|p| {
                            room(out.peer_rtt_sum.contains_key(p), out.peer_rtt_sum.len())
                        }) {
                            out.peer_rtt_sum.insert(p, v);
                        }
                    }
                    Some(WAL_FSYNC) => wal_sum = Some(v),
                    Some(BACKEND_COMMIT) => commit_sum = Some(v),
                    _ if name == PEER_SENT_FAILURES => {
                        if let Some(p) = peer().filter(|p| {
                            room(
                                out.peer_sent_failures.contains_key(p),
                                out.peer_sent_failures.len(),
                            )
                        }) {
                            *out.peer_sent_failures.entry(p).or_default() += v;
                        }
                    }
                    _ if name == GRPC_HANDLED => {
                        let code = sample
                            .labels
                            .get("grpc_code")
                            .unwrap_or("Unknown")
                            .to_string();
                        if out.grpc_handled.contains_key(&code)
                            || out.grpc_handled.len() < MAX_CODES
                        {
                            *out.grpc_handled.entry(code).or_default() += v;
                        }
                    }
                    _ => {
                        if let Some((_, slot)) = SCALARS.iter().find(|(n, _)| *n == name) {
                            *slot(&mut out) = Some(v);
                        }
                    }
                }
            }
        }
    }
    if let (Some(l), Some(s)) = (&mut out.wal_fsync, wal_sum) {
        l.sum = s;
    }
    if let (Some(l), Some(s)) = (&mut out.backend_commit, commit_sum) {
        l.sum = s;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP etcd_debugging_mvcc_keys_total Total number of keys.
# TYPE etcd_debugging_mvcc_keys_total gauge
etcd_debugging_mvcc_keys_total 3
# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers
# TYPE etcd_network_peer_round_trip_time_seconds histogram
etcd_network_peer_round_trip_time_seconds_bucket{To="8211f1d0f64f3269",le="0.0001"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="8211f1d0f64f3269",le="0.0002"} 4
etcd_network_peer_round_trip_time_seconds_bucket{To="8211f1d0f64f3269",le="0.0004"} 8
etcd_network_peer_round_trip_time_seconds_bucket{To="8211f1d0f64f3269",le="+Inf"} 8
etcd_network_peer_round_trip_time_seconds_sum{To="8211f1d0f64f3269"} 0.0015
etcd_network_peer_round_trip_time_seconds_count{To="8211f1d0f64f3269"} 8
# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.
# TYPE etcd_server_quota_backend_bytes gauge
etcd_server_quota_backend_bytes 2.147483648e+09
"#;

    #[test]
    fn reads_quota_and_peer_round_trip_histograms() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.quota_backend_bytes(), Some(2_147_483_648));
        let rtt = &m.peer_rtt[&Id(0x8211f1d0f64f3269)];
        assert_eq!(rtt.count(), 8.0);
        assert_eq!(m.peer_rtt_sum[&Id(0x8211f1d0f64f3269)], 0.0015);
        let p50 = rtt.quantile(0.5).unwrap();
        assert!(p50 > 0.0001 && p50 <= 0.0002, "p50 {p50}");
    }

    #[test]
    fn a_page_that_is_not_etcd_metrics_is_an_error() {
        assert!(matches!(
            parse("<html>hello</html>"),
            Err(MetricsParseError::NotEtcd)
        ));
    }

    #[test]
    fn missing_families_are_absent_not_zero() {
        let m = parse("etcd_debugging_mvcc_keys_total 3\n").unwrap();
        assert_eq!(m.quota_backend_bytes(), None);
        assert!(m.peer_rtt.is_empty());
        assert_eq!(m.wal_fsync, None);
        assert_eq!(m.proposals_pending, None);
    }

    #[test]
    fn reads_every_vital_family_of_a_real_etcd_3_4_page() {
        let text = include_str!("../../tests/fixtures/etcd-3.4-metrics-after.txt");
        let m = parse(text).unwrap();
        let wal = m.wal_fsync.as_ref().expect("wal fsync histogram");
        assert_eq!(wal.histogram.count(), 307.0);
        assert!(wal.sum > 0.0);
        assert_eq!(
            m.backend_commit.as_ref().map(|l| l.histogram.count()),
            Some(60.0)
        );
        assert_eq!(m.proposals_committed, Some(308.0));
        assert_eq!(m.proposals_applied, Some(308.0));
        assert_eq!(m.proposals_pending, Some(0.0));
        assert_eq!(m.proposals_failed, Some(0.0));
        assert_eq!(m.has_leader, Some(1.0));
        assert!(m.leader_changes_seen.is_some_and(|v| v >= 1.0));
        assert_eq!(m.max_fds, Some(20000.0));
        assert!(m.open_fds.is_some_and(|v| v > 0.0));
        assert!(m.resident_memory_bytes.is_some_and(|v| v > 1e6));
        assert!(m.db_open_read_transactions.is_some());
        assert_eq!(m.quota_backend_bytes(), Some(2_147_483_648));
        assert_eq!(m.peer_rtt.len(), 2, "two peers");
        // Zero lines were skipped, yet the sum over methods is right.
        assert!(
            m.grpc_handled.get("OK").is_some_and(|v| *v >= 300.0),
            "{:?}",
            m.grpc_handled
        );
    }
}
