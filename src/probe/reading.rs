//! A member's /metrics: read within the probe's deadline, and turned into what the view shows against the
//! previous reading.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::etcd::connect::{Connector, FetchError};
use crate::etcd::member_metrics::{self, MemberMetrics};
use crate::id::Id;
use crate::view::{FailureKind, Outcome, PeerRtt, ProbeError, ProbeMetrics};
use crate::vitals;

use super::deadline::Deadline;

pub(super) async fn read_metrics(
    connector: &Connector,
    url: &str,
    deadline: Deadline,
) -> Outcome<MemberMetrics> {
    let fetched = tokio::time::timeout_at(
        deadline.at.into(),
        connector.fetch_metrics(url, member_metrics::is_wanted),
    )
    .await
    .unwrap_or_else(|_| {
        Err(FetchError::Timeout {
            url: url.to_string(),
        })
    });
    let text = fetched.map_err(|e| ProbeError::new(e.kind(), e.to_string()))?;
    member_metrics::parse(&text)
        .map_err(|e| ProbeError::new(FailureKind::Other, format!("{url}: {e}")))
}

/// A member's last /metrics reading, kept between polls.
#[derive(Default)]
pub struct LastReading {
    metrics: Option<MemberMetrics>,
    /// When `metrics` was read, for rates.
    metrics_at: Option<Instant>,
    /// The last round-trip estimates, kept while the member measures nothing new.
    peer_rtt: BTreeMap<Id, PeerRtt>,
}

/// Turns a new reading into what the view shows, against the previous reading, and keeps it for next time.
pub(super) fn remember_reading(memory: &mut LastReading, now: MemberMetrics) -> ProbeMetrics {
    let taken = Instant::now();
    let previous = memory
        .metrics
        .as_ref()
        .zip(memory.metrics_at)
        .map(|(m, at)| (m, taken.duration_since(at).as_secs_f64()));
    let rtt = peer_rtt(&now, previous.map(|(m, _)| m), &memory.peer_rtt);
    let vitals = vitals::derive(&now, previous);
    memory.peer_rtt = rtt.clone();
    let summary = ProbeMetrics {
        quota_backend_bytes: now.quota_backend_bytes(),
        peer_rtt: rtt,
        vitals,
    };
    memory.metrics = Some(now);
    memory.metrics_at = Some(taken);
    summary
}

/// Peer round-trip time: over the last interval when a previous reading exists, else since the member started.
///
/// etcd measures peer round trips only every few seconds, so an interval may hold no new observation: then the
/// last estimate stands. A counter reset (the member restarted) between two readings gives nothing for this poll
/// rather than a wrong figure.
fn peer_rtt(
    now: &MemberMetrics,
    previous: Option<&MemberMetrics>,
    last: &BTreeMap<Id, PeerRtt>,
) -> BTreeMap<Id, PeerRtt> {
    let mut out = BTreeMap::new();
    for (peer, hist) in &now.peer_rtt {
        let Some(window) = hist.window(previous.and_then(|p| p.peer_rtt.get(peer))) else {
            continue; // reset
        };
        let count = hist.count() as u64;
        let sum = now.peer_rtt_sum.get(peer).copied().unwrap_or(0.0);
        match (window.quantile(0.5), window.quantile(0.99)) {
            (Some(p50), Some(p99)) => {
                out.insert(
                    *peer,
                    PeerRtt {
                        p50,
                        p99,
                        count,
                        sum,
                    },
                );
            }
            _ => {
                if let Some(kept) = last.get(peer) {
                    out.insert(
                        *peer,
                        PeerRtt {
                            count,
                            sum,
                            ..*kept
                        },
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    fn metrics(peer: u64, buckets: &[(f64, f64)]) -> MemberMetrics {
        let mut m = MemberMetrics::default();
        m.peer_rtt
            .insert(Id(peer), Histogram::new(buckets.to_vec()));
        m
    }

    #[test]
    fn peer_rtt_per_interval_keeps_the_last_estimate_and_drops_on_reset() {
        let first = metrics(7, &[(0.001, 4.0), (0.01, 4.0), (f64::INFINITY, 4.0)]);
        let cumulative = peer_rtt(&first, None, &BTreeMap::new());
        assert!(cumulative[&Id(7)].p99 <= 0.001);

        // Two slow heartbeats in the interval: the interval's estimate, not the cumulative one.
        let slow = metrics(7, &[(0.001, 4.0), (0.01, 6.0), (f64::INFINITY, 6.0)]);
        let interval = peer_rtt(&slow, Some(&first), &cumulative);
        assert!(interval[&Id(7)].p50 > 0.001);

        // Nothing measured since: the last estimate stands.
        let quiet = peer_rtt(&slow, Some(&slow), &interval);
        assert_eq!(quiet[&Id(7)].p99, interval[&Id(7)].p99);
        assert_eq!(quiet[&Id(7)].count, 6);

        // Restarted member: counts went down, no figure this time.
        let restarted = metrics(7, &[(0.001, 1.0), (0.01, 1.0), (f64::INFINITY, 1.0)]);
        assert!(peer_rtt(&restarted, Some(&slow), &interval).is_empty());
    }
}
