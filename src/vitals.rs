//! Vital signs of a member, derived from two readings of its /metrics (pure).
//!
//! etcd's own counters and histograms are cumulative since the member started. What an operator needs is what
//! happened lately: the WAL fsync p99 of the last interval, the rate of failed proposals now. Quantiles come from
//! the difference of the bucket counts between the two readings (see `histogram`); rates from the difference of
//! counters over the time between readings. With one reading only (`status`) quantiles are cumulative and rates
//! unknown. When a counter went down between the readings, the member restarted: the interval values are left
//! out rather than computed wrongly.

use serde::Serialize;

use crate::etcd::member_metrics::{Latency, MemberMetrics};

/// A latency over the last interval (or since start, with a single reading). The quantiles are `None` when the
/// window holds no observation (an idle member does not fsync).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Observations in the window the quantiles describe.
    pub window_count: u64,
    /// Cumulative count and sum, as etcd reports them (the `_count`/`_sum` of a Prometheus summary).
    #[serde(skip)]
    pub count: u64,
    #[serde(skip)]
    pub sum: f64,
}

/// gRPC requests handled by the member, by class of status code.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct GrpcCounts {
    pub ok: f64,
    /// Codes the client caused: InvalidArgument, NotFound, AlreadyExists, PermissionDenied, FailedPrecondition,
    /// OutOfRange, Unauthenticated, Canceled.
    pub client_error: f64,
    /// Codes the server caused: Unknown, DeadlineExceeded, ResourceExhausted, Aborted, Unimplemented, Internal,
    /// Unavailable, DataLoss.
    pub server_error: f64,
}

impl GrpcCounts {
    fn total(&self) -> f64 {
        self.ok + self.client_error + self.server_error
    }
}

/// Failed share of the gRPC requests of the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GrpcFailedRatio {
    pub client_error: f64,
    pub server_error: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Vitals {
    pub wal_fsync_seconds: Option<LatencySummary>,
    pub backend_commit_seconds: Option<LatencySummary>,
    pub proposals_committed: Option<f64>,
    pub proposals_applied: Option<f64>,
    pub proposals_pending: Option<f64>,
    pub proposals_failed: Option<f64>,
    /// committed − applied: entries agreed on but not yet applied (etcd refuses requests beyond 5000).
    pub proposals_apply_gap: Option<f64>,
    pub proposals_committed_per_second: Option<f64>,
    pub proposals_applied_per_second: Option<f64>,
    pub proposals_failed_per_second: Option<f64>,
    /// Pending proposals at the previous reading, to tell a growing backlog from a steady one.
    pub proposals_pending_before: Option<f64>,
    pub leader_changes_seen: Option<f64>,
    /// Whether the member itself believes there is a leader.
    pub has_leader: Option<bool>,
    pub slow_applies: Option<f64>,
    pub slow_read_indexes: Option<f64>,
    pub heartbeat_send_failures: Option<f64>,
    pub slow_applies_per_second: Option<f64>,
    pub slow_read_indexes_per_second: Option<f64>,
    pub heartbeat_send_failures_per_second: Option<f64>,
    /// Messages to peers that could not be sent, per second, summed over peers.
    pub peer_send_failures_per_second: Option<f64>,
    #[serde(skip)]
    pub peer_sent_failures: Vec<(crate::id::Id, f64)>,
    /// Cumulative gRPC requests by class (counters for Prometheus).
    pub grpc_requests: Option<GrpcCounts>,
    pub grpc_failed_ratio: Option<GrpcFailedRatio>,
    pub resident_memory_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub db_open_read_transactions: Option<f64>,
}

fn class_of(code: &str) -> fn(&mut GrpcCounts) -> &mut f64 {
    match code {
        "OK" => |g| &mut g.ok,
        "InvalidArgument" | "NotFound" | "AlreadyExists" | "PermissionDenied"
        | "FailedPrecondition" | "OutOfRange" | "Unauthenticated" | "Canceled" => {
            |g| &mut g.client_error
        }
        _ => |g| &mut g.server_error,
    }
}

fn grpc_counts(m: &MemberMetrics) -> Option<GrpcCounts> {
    if m.grpc_handled.is_empty() {
        return None;
    }
    let mut counts = GrpcCounts::default();
    for (code, n) in &m.grpc_handled {
        *class_of(code)(&mut counts) += n;
    }
    Some(counts)
}

fn summary(now: &Latency, before: Option<&Latency>) -> Option<LatencySummary> {
    let window = now.histogram.window(before.map(|b| &b.histogram))?;
    Some(LatencySummary {
        p50: window.quantile(0.5),
        p99: window.quantile(0.99),
        window_count: window.count() as u64,
        count: now.histogram.count() as u64,
        sum: now.sum,
    })
}

/// Per-second rate of a counter between two readings; `None` without a previous reading or after a reset.
fn rate(now: Option<f64>, before: Option<f64>, seconds: f64) -> Option<f64> {
    let (n, b) = (now?, before?);
    (n >= b && seconds > 0.0).then(|| (n - b) / seconds)
}

/// Vital signs from the latest reading and, when there is one, the previous reading and the seconds between.
pub fn derive(now: &MemberMetrics, previous: Option<(&MemberMetrics, f64)>) -> Vitals {
    let before = previous.map(|(m, _)| m);
    let seconds = previous.map_or(0.0, |(_, s)| s);
    // A member restarted between the readings: its counters started again from zero, and every interval value
    // would be a lie. The process start time says so directly; each rate also refuses a counter that went down.
    let restarted = matches!(
        (now.process_start_time, before.and_then(|b| b.process_start_time)),
        (Some(n), Some(b)) if n != b
    );
    let before = if restarted { None } else { before };
    let interval = |f: fn(&MemberMetrics) -> Option<f64>| {
        if restarted {
            None
        } else {
            rate(f(now), before.and_then(f), seconds)
        }
    };

    let latency = |f: fn(&MemberMetrics) -> Option<&Latency>| {
        let now_l = f(now)?;
        match (previous, before) {
            // One reading only: cumulative since start.
            (None, _) => summary(now_l, None),
            // A reset: nothing for this interval.
            (Some(_), None) => None,
            (Some(_), Some(b)) => match f(b) {
                Some(b_l) => summary(now_l, Some(b_l)),
                None => summary(now_l, None),
            },
        }
    };

    let grpc_now = grpc_counts(now);
    let grpc_failed_ratio = match (grpc_now, previous.map(|_| before.and_then(grpc_counts))) {
        (Some(n), None) => ratio(n),
        (Some(n), Some(Some(b))) => {
            let d = GrpcCounts {
                ok: n.ok - b.ok,
                client_error: n.client_error - b.client_error,
                server_error: n.server_error - b.server_error,
            };
            if d.ok < 0.0 || d.client_error < 0.0 || d.server_error < 0.0 {
                None
            } else {
                ratio(d)
            }
        }
        _ => None,
    };

    let peer_send_failures_per_second = if restarted || previous.is_none() {
        None
    } else {
        let total = |m: &MemberMetrics| m.peer_sent_failures.values().sum::<f64>();
        before.and_then(|b| rate(Some(total(now)), Some(total(b)), seconds))
    };

    Vitals {
        wal_fsync_seconds: latency(|m| m.wal_fsync.as_ref()),
        backend_commit_seconds: latency(|m| m.backend_commit.as_ref()),
        proposals_committed: now.proposals_committed,
        proposals_applied: now.proposals_applied,
        proposals_pending: now.proposals_pending,
        proposals_failed: now.proposals_failed,
        proposals_apply_gap: now
            .proposals_committed
            .zip(now.proposals_applied)
            .map(|(c, a)| (c - a).max(0.0)),
        proposals_committed_per_second: interval(|m| m.proposals_committed),
        proposals_applied_per_second: interval(|m| m.proposals_applied),
        proposals_failed_per_second: interval(|m| m.proposals_failed),
        proposals_pending_before: before.and_then(|b| b.proposals_pending),
        leader_changes_seen: now.leader_changes_seen,
        has_leader: now.has_leader.map(|v| v > 0.0),
        slow_applies: now.slow_applies,
        slow_read_indexes: now.slow_read_indexes,
        heartbeat_send_failures: now.heartbeat_send_failures,
        slow_applies_per_second: interval(|m| m.slow_applies),
        slow_read_indexes_per_second: interval(|m| m.slow_read_indexes),
        heartbeat_send_failures_per_second: interval(|m| m.heartbeat_send_failures),
        peer_send_failures_per_second,
        peer_sent_failures: now
            .peer_sent_failures
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        grpc_requests: grpc_now,
        grpc_failed_ratio,
        resident_memory_bytes: now.resident_memory_bytes,
        open_fds: now.open_fds,
        max_fds: now.max_fds,
        db_open_read_transactions: now.db_open_read_transactions,
    }
}

fn ratio(d: GrpcCounts) -> Option<GrpcFailedRatio> {
    let total = d.total();
    (total > 0.0).then(|| GrpcFailedRatio {
        client_error: d.client_error / total,
        server_error: d.server_error / total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::member_metrics;

    fn before() -> MemberMetrics {
        member_metrics::parse(include_str!(
            "../tests/fixtures/etcd-3.4-metrics-before.txt"
        ))
        .unwrap()
    }

    fn after() -> MemberMetrics {
        member_metrics::parse(include_str!("../tests/fixtures/etcd-3.4-metrics-after.txt")).unwrap()
    }

    #[test]
    fn interval_values_from_two_real_readings() {
        // 300 writes happened between the two recorded pages, about 10 s apart.
        let v = derive(&after(), Some((&before(), 10.0)));
        let wal = v.wal_fsync_seconds.expect("fsync quantiles");
        assert_eq!(wal.window_count, 300);
        assert!(wal.p99.unwrap() > 0.0 && wal.p99 >= wal.p50);
        assert_eq!(wal.count, 307);
        let commit = v.backend_commit_seconds.expect("commit quantiles");
        assert_eq!(commit.window_count, 53);
        assert_eq!(v.proposals_committed_per_second, Some(30.0));
        assert_eq!(v.proposals_failed_per_second, Some(0.0));
        assert_eq!(v.proposals_apply_gap, Some(0.0));
        assert_eq!(v.has_leader, Some(true));
        let grpc = v.grpc_failed_ratio.expect("gRPC ratio");
        assert_eq!(grpc.server_error, 0.0);
    }

    #[test]
    fn a_single_reading_gives_cumulative_quantiles_and_no_rates() {
        let v = derive(&after(), None);
        assert_eq!(v.wal_fsync_seconds.unwrap().window_count, 307);
        assert_eq!(v.proposals_committed_per_second, None);
        assert_eq!(v.proposals_committed, Some(308.0));
    }

    #[test]
    fn a_restart_between_readings_gives_no_interval_values() {
        // Reversed: the counters went down, as after a restart.
        let v = derive(&before(), Some((&after(), 10.0)));
        assert_eq!(v.wal_fsync_seconds, None);
        assert_eq!(v.backend_commit_seconds, None);
        assert_eq!(v.proposals_committed_per_second, None);
        assert_eq!(v.grpc_failed_ratio, None);
        // A counter that did not go down (0 → 0) still has an honest rate; none is ever negative.
        assert_eq!(v.proposals_failed_per_second, Some(0.0));
        // Point-in-time values are still true.
        assert_eq!(v.proposals_pending, Some(0.0));
        assert_eq!(v.max_fds, Some(20000.0));
    }

    #[test]
    fn a_new_process_start_time_means_a_restart_even_when_counters_look_fine() {
        let old = before();
        let mut restarted = after();
        restarted.process_start_time = old.process_start_time.map(|t| t + 60.0);
        let v = derive(&restarted, Some((&old, 10.0)));
        assert_eq!(v.wal_fsync_seconds, None);
        assert_eq!(v.proposals_committed_per_second, None);
        assert_eq!(v.grpc_failed_ratio, None);
        assert!(
            old.process_start_time.is_some(),
            "etcd 3.4 exports process_start_time_seconds"
        );
    }

    #[test]
    fn grpc_codes_are_classed() {
        let mut m = MemberMetrics::default();
        for (code, n) in [
            ("OK", 90.0),
            ("Unavailable", 6.0),
            ("DeadlineExceeded", 2.0),
            ("NotFound", 2.0),
        ] {
            m.grpc_handled.insert(code.into(), n);
        }
        let r = derive(&m, None).grpc_failed_ratio.unwrap();
        assert!((r.server_error - 0.08).abs() < 1e-9);
        assert!((r.client_error - 0.02).abs() < 1e-9);
    }
}
