//! The few families etcd-sentinel needs from a member's own /metrics (about 150 KB of text on etcd 3.4).
//!
//! Only lines of the wanted families are handed to the parser: that keeps a poll cheap and makes the rest of the
//! page irrelevant to us (a malformed line elsewhere cannot break a probe).

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};
use thiserror::Error;

use crate::histogram::Histogram;
use crate::id::Id;

const QUOTA: &str = "etcd_server_quota_backend_bytes";
const PEER_RTT: &str = "etcd_network_peer_round_trip_time_seconds";
const PEER_RTT_SUM: &str = "etcd_network_peer_round_trip_time_seconds_sum";
const WANTED: [&str; 2] = [QUOTA, PEER_RTT];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberMetrics {
    /// `--quota-backend-bytes` as the member applies it (Status only reports it from etcd 3.6 on).
    pub quota_backend_bytes: Option<u64>,
    /// Heartbeat round-trip time to each peer, cumulative since the member started.
    pub peer_rtt: BTreeMap<Id, Histogram>,
    /// Sum of those round-trip times (the histogram's `_sum`), cumulative.
    pub peer_rtt_sum: BTreeMap<Id, f64>,
}

#[derive(Debug, Error)]
pub enum MetricsParseError {
    #[error("not Prometheus text: {0}")]
    Malformed(String),
    #[error("no etcd metrics found (is this an etcd member's /metrics?)")]
    NotEtcd,
}

fn is_wanted(line: &str) -> bool {
    let name = line
        .strip_prefix("# TYPE ")
        .or_else(|| line.strip_prefix("# HELP "))
        .unwrap_or(line);
    WANTED.iter().any(|family| name.starts_with(family))
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
    for sample in scrape.samples {
        match (sample.metric.as_str(), &sample.value) {
            (QUOTA, Value::Gauge(v) | Value::Untyped(v)) if v.is_finite() && *v >= 0.0 => {
                out.quota_backend_bytes = Some(*v as u64);
            }
            (PEER_RTT_SUM, Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v)) => {
                if let Some(peer) = sample.labels.get("To").and_then(Id::from_hex) {
                    out.peer_rtt_sum.insert(peer, *v);
                }
            }
            (PEER_RTT, Value::Histogram(buckets)) => {
                let Some(peer) = sample.labels.get("To").and_then(Id::from_hex) else {
                    continue;
                };
                let pairs = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                out.peer_rtt.insert(peer, Histogram::new(pairs));
            }
            _ => {}
        }
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
        assert_eq!(m.quota_backend_bytes, Some(2_147_483_648));
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
        assert_eq!(m.quota_backend_bytes, None);
        assert!(m.peer_rtt.is_empty());
    }
}
