//! Prometheus metrics (`etcd_sentinel_*`).
//!
//! Two kinds of families. Counters and histograms accumulate across polls, so they live in a registry updated by
//! the pollers. Everything else is the state of the latest view, rendered at scrape time from the views
//! themselves: a member or cluster that disappears leaves no stale series behind. Label values are bounded:
//! cluster names, endpoint URLs, member names and ids, etcd versions, alarm and warning kinds, never an error text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use thiserror::Error;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};

mod defrag;

use crate::maintenance::defrag::DefragReport;
use crate::units::unix_seconds;
use crate::view::{
    ClusterView, Consistency, ConsistencyState, EndpointHealth, EndpointState, QuorumState,
    WarningKind,
};
use crate::vitals::Vitals;

const PREFIX: &str = "etcd_sentinel";
const ENDPOINT_LABELS: [&str; 4] = ["cluster", "endpoint", "member", "member_id"];
/// The alarms etcd knows; each endpoint exports both, 0 or 1, so alerts need no `absent()`.
const ALARMS: [&str; 2] = ["NOSPACE", "CORRUPT"];

#[derive(Debug, Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

/// The accumulating families, shared by every poller of the daemon.
pub struct Metrics {
    registry: Registry,
    probe_duration: HistogramVec,
    poll_duration: HistogramVec,
    poll_errors: IntCounterVec,
    leader_changes: IntCounterVec,
    leaderless: HistogramVec,
    poll_interval: GaugeVec,
    snapshots: SnapshotFamilies,
    defrag: defrag::DefragFamilies,
    /// Endpoints with histogram series per cluster, so series of endpoints no longer probed can be removed.
    endpoints_seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                name("probe_duration_seconds"),
                "Time to probe one endpoint (connect, Status, health read, alarms, members, /metrics).",
            )
            .buckets(latency_buckets.clone()),
            &["cluster", "endpoint"],
        )?;
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                name("poll_duration_seconds"),
                "Time to poll every endpoint of a cluster.",
            )
            .buckets(latency_buckets),
            &["cluster"],
        )?;
        let poll_errors = IntCounterVec::new(
            Opts::new(
                name("poll_errors_total"),
                "Endpoint probes that failed: unreachable, timed out, or a failed health read.",
            ),
            &["cluster"],
        )?;
        let leader_changes = IntCounterVec::new(
            Opts::new(
                name("cluster_leader_changes_total"),
                "Leader changes seen (old leader, perhaps none for a while, then another).",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(probe_duration.clone()))?;
        registry.register(Box::new(poll_duration.clone()))?;
        registry.register(Box::new(poll_errors.clone()))?;
        let leaderless = HistogramVec::new(
            HistogramOpts::new(
                name("cluster_leaderless_seconds"),
                "How long the cluster had no leader, per election that ended, as the sentinel saw it.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["cluster"],
        )?;
        registry.register(Box::new(leader_changes.clone()))?;
        registry.register(Box::new(leaderless.clone()))?;
        let poll_interval = GaugeVec::new(
            Opts::new(
                name("cluster_poll_interval_seconds"),
                "The configured interval between two polls of the cluster: a poll older than a few of them is stale.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(poll_interval.clone()))?;
        let snapshots = SnapshotFamilies::new(&registry)?;
        let defrag = defrag::DefragFamilies::new(&registry)?;
        Ok(Metrics {
            registry,
            probe_duration,
            poll_duration,
            poll_errors,
            leader_changes,
            leaderless,
            poll_interval,
            snapshots,
            defrag,
            endpoints_seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// A cluster's poller starts (or restarts with a reload): how often it polls.
    pub fn init_poll(&self, cluster: &str, interval: Duration) {
        self.poll_interval
            .with_label_values(&[cluster])
            .set(interval.as_secs_f64());
    }

    /// Records a change of leader, and how long the cluster had no leader when an election ended.
    pub fn observe_leadership(
        &self,
        cluster: &str,
        changed: bool,
        leaderless_seconds: Option<f64>,
    ) {
        if changed {
            self.leader_changes.with_label_values(&[cluster]).inc();
        }
        if let Some(s) = leaderless_seconds {
            self.leaderless.with_label_values(&[cluster]).observe(s);
        }
    }

    /// Records one poll of a cluster.
    pub fn observe_poll(&self, view: &ClusterView, poll_time: Duration) {
        let cluster = view.cluster.as_str();
        self.poll_duration
            .with_label_values(&[cluster])
            .observe(poll_time.as_secs_f64());
        // Touch the counters so the series exist (at 0) from the first poll on.
        let errors = self.poll_errors.with_label_values(&[cluster]);
        errors.inc_by(view.endpoints.iter().filter(|e| !e.healthy).count() as u64);
        self.leader_changes.with_label_values(&[cluster]);
        self.leaderless.with_label_values(&[cluster]);
        let mut current = BTreeSet::new();
        for e in &view.endpoints {
            self.probe_duration
                .with_label_values(&[cluster, e.endpoint.as_str()])
                .observe(e.probe_seconds);
            current.insert(e.endpoint.clone());
        }
        // A poisoned lock only means another poller panicked mid-update; the set is still usable.
        let mut seen = self
            .endpoints_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let previous = seen
            .insert(cluster.to_string(), current.clone())
            .unwrap_or_default();
        for gone in previous.difference(&current) {
            let _ = self
                .probe_duration
                .remove_label_values(&[cluster, gone.as_str()]);
        }
    }

    /// Drops every accumulated series of a cluster removed from the configuration.
    pub fn forget_cluster(&self, cluster: &str) {
        let mut seen = self
            .endpoints_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for endpoint in seen.remove(cluster).unwrap_or_default() {
            let _ = self
                .probe_duration
                .remove_label_values(&[cluster, endpoint.as_str()]);
        }
        let _ = self.poll_duration.remove_label_values(&[cluster]);
        let _ = self.poll_errors.remove_label_values(&[cluster]);
        let _ = self.leader_changes.remove_label_values(&[cluster]);
        let _ = self.leaderless.remove_label_values(&[cluster]);
        let _ = self.poll_interval.remove_label_values(&[cluster]);
        self.snapshots.forget(cluster);
        self.defrag.forget(cluster);
    }

    /// A cluster (re)started without `[cluster.snapshot]`: the snapshot series of an earlier configuration go, or
    /// the newest snapshot would age for ever on /metrics (and page) after a reload removed the schedule.
    pub fn forget_snapshots(&self, cluster: &str) {
        self.snapshots.forget(cluster);
    }

    /// A cluster whose defragmentation is configured: its run counters exist at 0 from the start.
    pub fn init_defrag(&self, cluster: &str) {
        self.defrag.init(cluster);
    }

    /// Whether the sentinel is defragmenting this member right now.
    pub fn observe_defrag_member(&self, cluster: &str, member: &str, active: bool) {
        self.defrag.member(cluster, member, active);
    }

    /// A run that ended on a panic: counted as failed, and no member is shown in progress any more.
    pub fn observe_defrag_abort(&self, cluster: &str) {
        self.defrag.aborted(cluster);
    }

    /// A rolling defragmentation ended (or was refused).
    pub fn observe_defrag_run(&self, report: &DefragReport, ended: std::time::SystemTime) {
        self.defrag.finished(report, ended);
    }

    /// Records a scheduled snapshot: saved (size, revision, duration) or failed (by reason).
    pub fn observe_snapshot(&self, cluster: &str, outcome: SnapshotOutcome<'_>) {
        self.snapshots.observe(cluster, outcome);
    }

    /// Records a restore drill's result.
    pub fn observe_drill(&self, cluster: &str, passed: bool, at: std::time::SystemTime) {
        let s = &self.snapshots;
        s.drill_success
            .with_label_values(&[cluster])
            .set(flag(passed));
        s.drill_time
            .with_label_values(&[cluster])
            .set(unix_seconds(at));
    }

    /// The next scheduled snapshot and the gap between the run before it and it (so that a freshness alert
    /// follows the schedule, not a fixed day); also makes every failure series exist at 0.
    pub fn observe_next_snapshot(
        &self,
        cluster: &str,
        at: std::time::SystemTime,
        interval: Option<std::time::Duration>,
    ) {
        let s = &self.snapshots;
        for reason in SNAPSHOT_FAILURE_REASONS {
            s.failures.with_label_values(&[cluster, reason]);
        }
        for reason in UPLOAD_FAILURE_REASONS {
            s.upload_failures.with_label_values(&[cluster, reason]);
        }
        s.next_run
            .with_label_values(&[cluster])
            .set(unix_seconds(at));
        if let Some(interval) = interval {
            s.interval
                .with_label_values(&[cluster])
                .set(interval.as_secs_f64());
        }
    }

    /// Records the upload of a verified snapshot to S3: done (when) or failed (by reason).
    pub fn observe_upload(&self, cluster: &str, outcome: Result<std::time::SystemTime, &str>) {
        let s = &self.snapshots;
        match outcome {
            Ok(at) => s
                .last_upload
                .with_label_values(&[cluster])
                .set(unix_seconds(at)),
            Err(reason) => s
                .upload_failures
                .with_label_values(&[cluster, reason])
                .inc(),
        }
    }

    /// The whole /metrics page: accumulated families plus the state of the given views.
    pub fn render<'a>(
        &self,
        views: impl IntoIterator<Item = &'a ClusterView>,
    ) -> Result<String, MetricsError> {
        let mut families = self.registry.gather();
        families.extend(state_families(views)?);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&families, &mut out)?;
        // The text encoder writes UTF-8 from UTF-8 names and label values.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The `reason` label values of `snapshot_failures_total`: a closed set, each present at 0 once a cluster has a
/// schedule, so that an alert on its rate needs no `absent()`.
pub const SNAPSHOT_FAILURE_REASONS: [&str; 11] = [
    "no_view",
    "no_source",
    "connect",
    "destination",
    "stream",
    "write",
    "disk_full",
    "verify",
    "drill",
    "internal",
    "lock",
];

/// The `reason` label values of `snapshot_upload_failures_total` (the S3 failure kinds).
pub const UPLOAD_FAILURE_REASONS: [&str; 8] = [
    "auth",
    "no_bucket",
    "not_found",
    "network",
    "tls",
    "local",
    "mismatch",
    "other",
];

/// What a scheduled snapshot came to.
pub enum SnapshotOutcome<'a> {
    Saved {
        at: std::time::SystemTime,
        size: u64,
        revision: i64,
        seconds: f64,
    },
    Failed {
        reason: &'a str,
    },
    /// The newest snapshot already in the directory when the job starts (a restart, a reload): the last
    /// success is not forgotten, so a schedule that stops being kept after a restart is still noticed.
    Found {
        at: std::time::SystemTime,
        size: u64,
        revision: i64,
    },
}

/// The snapshot families: accumulated across runs, so they live in the registry.
struct SnapshotFamilies {
    last_success: GaugeVec,
    last_size: IntGaugeVec,
    latest_revision: IntGaugeVec,
    duration: HistogramVec,
    failures: IntCounterVec,
    drill_success: IntGaugeVec,
    drill_time: GaugeVec,
    next_run: GaugeVec,
    interval: GaugeVec,
    last_upload: GaugeVec,
    upload_failures: IntCounterVec,
}

impl SnapshotFamilies {
    fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let c = &["cluster"];
        let gauge = |short: &str, help: &str| -> Result<GaugeVec, MetricsError> {
            let g = GaugeVec::new(Opts::new(name(short), help), c)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let int_gauge = |short: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let g = IntGaugeVec::new(Opts::new(name(short), help), c)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let duration = HistogramVec::new(
            HistogramOpts::new(
                name("snapshot_duration_seconds"),
                "Time to stream, verify and store a scheduled snapshot.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            c,
        )?;
        registry.register(Box::new(duration.clone()))?;
        let failures = IntCounterVec::new(
            Opts::new(
                name("snapshot_failures_total"),
                "Scheduled snapshots that failed, by reason (no_view, no_source, connect, destination, stream, write, \
                 disk_full, verify, drill, internal, lock).",
            ),
            &["cluster", "reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        let upload_failures = IntCounterVec::new(
            Opts::new(
                name("snapshot_upload_failures_total"),
                "Uploads of verified snapshots to S3 that failed, by reason (auth, no_bucket, not_found, network, \
                 tls, local, mismatch, other); the local copy stays.",
            ),
            &["cluster", "reason"],
        )?;
        registry.register(Box::new(upload_failures.clone()))?;
        Ok(SnapshotFamilies {
            last_success: gauge(
                "snapshot_last_success_timestamp_seconds",
                "Unix time of the newest verified snapshot saved by the schedule.",
            )?,
            last_size: int_gauge(
                "snapshot_last_size_bytes",
                "Size of the newest verified snapshot.",
            )?,
            latest_revision: int_gauge(
                "snapshot_latest_revision",
                "Revision held by the newest verified snapshot (read from the file).",
            )?,
            duration,
            failures,
            drill_success: int_gauge(
                "restore_drill_success",
                "1 when the last restore drill passed, 0 when it failed.",
            )?,
            drill_time: gauge(
                "restore_drill_timestamp_seconds",
                "Unix time of the last restore drill.",
            )?,
            next_run: gauge(
                "snapshot_next_run_timestamp_seconds",
                "Unix time of the next scheduled snapshot: the newest one is stale once it is older than the \
                 interval between two runs.",
            )?,
            interval: gauge(
                "snapshot_schedule_interval_seconds",
                "Seconds between the scheduled snapshot before the next one and the next one: the age the newest \
                 snapshot may reach while the schedule is kept.",
            )?,
            last_upload: gauge(
                "snapshot_last_upload_timestamp_seconds",
                "Unix time of the newest verified snapshot uploaded to S3 (its sidecar last, then checked).",
            )?,
            upload_failures,
        })
    }

    fn observe(&self, cluster: &str, outcome: SnapshotOutcome<'_>) {
        match outcome {
            SnapshotOutcome::Saved {
                at,
                size,
                revision,
                seconds,
            } => {
                self.newest(cluster, at, size, revision);
                self.duration.with_label_values(&[cluster]).observe(seconds);
            }
            SnapshotOutcome::Found { at, size, revision } => {
                self.newest(cluster, at, size, revision)
            }
            SnapshotOutcome::Failed { reason } => {
                self.failures.with_label_values(&[cluster, reason]).inc();
            }
        }
    }

    /// The newest verified snapshot's time, size and revision.
    fn newest(&self, cluster: &str, at: std::time::SystemTime, size: u64, revision: i64) {
        self.last_success
            .with_label_values(&[cluster])
            .set(unix_seconds(at));
        self.last_size
            .with_label_values(&[cluster])
            .set(size.min(i64::MAX as u64) as i64);
        self.latest_revision
            .with_label_values(&[cluster])
            .set(revision);
    }

    fn forget(&self, cluster: &str) {
        let _ = self.last_success.remove_label_values(&[cluster]);
        let _ = self.last_size.remove_label_values(&[cluster]);
        let _ = self.latest_revision.remove_label_values(&[cluster]);
        let _ = self.duration.remove_label_values(&[cluster]);
        let _ = self.drill_success.remove_label_values(&[cluster]);
        let _ = self.drill_time.remove_label_values(&[cluster]);
        let _ = self.next_run.remove_label_values(&[cluster]);
        let _ = self.interval.remove_label_values(&[cluster]);
        let _ = self.last_upload.remove_label_values(&[cluster]);
        for reason in SNAPSHOT_FAILURE_REASONS {
            let _ = self.failures.remove_label_values(&[cluster, reason]);
        }
        for reason in UPLOAD_FAILURE_REASONS {
            let _ = self.upload_failures.remove_label_values(&[cluster, reason]);
        }
    }
}

/// Gauges of one scrape, built from the views.
struct StateGauges {
    registry: Registry,
}

impl StateGauges {
    fn gauge(&self, short: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        let g = GaugeVec::new(Opts::new(name(short), help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    fn counter(
        &self,
        short: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, MetricsError> {
        let c = CounterVec::new(Opts::new(name(short), help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn int_gauge(
        &self,
        short: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let g = IntGaugeVec::new(Opts::new(name(short), help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }
}

fn endpoint_labels<'a>(cluster: &'a str, e: &'a EndpointState, member_id: &'a str) -> [&'a str; 4] {
    [
        cluster,
        e.endpoint.as_str(),
        e.member_name.as_deref().unwrap_or(""),
        member_id,
    ]
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// The families of one endpoint row, each sample labelled with the endpoint's cluster, URL and member.
struct EndpointFamilies {
    up: IntGaugeVec,
    healthy: IntGaugeVec,
    is_leader: IntGaugeVec,
    is_learner: IntGaugeVec,
    term: IntGaugeVec,
    index: IntGaugeVec,
    applied: IntGaugeVec,
    lag: IntGaugeVec,
    db_size: IntGaugeVec,
    db_in_use: IntGaugeVec,
    db_quota: IntGaugeVec,
    alarm: IntGaugeVec,
    info: IntGaugeVec,
    peer_rtt: Vec<Metric>,
    vitals: VitalFamilies,
}

impl EndpointFamilies {
    fn new(s: &StateGauges) -> Result<Self, MetricsError> {
        let l = &ENDPOINT_LABELS;
        let with_alarm: Vec<&str> = l.iter().copied().chain(["alarm"]).collect();
        let with_version: Vec<&str> = l.iter().copied().chain(["version"]).collect();
        Ok(EndpointFamilies {
            up: s.int_gauge("endpoint_up", "1 when the endpoint answered Status.", l)?,
            healthy: s.int_gauge(
                "endpoint_healthy",
                "1 when the endpoint is healthy as etcdctl endpoint health says (linearizable read, no blocking alarm).",
                l,
            )?,
            is_leader: s.int_gauge(
                "member_is_leader",
                "1 when this member is the cluster's leader.",
                l,
            )?,
            is_learner: s.int_gauge("member_is_learner", "1 when this member is a learner.", l)?,
            term: s.int_gauge("raft_term", "Raft term of the member.", l)?,
            index: s.int_gauge("raft_index", "Raft index of the member.", l)?,
            applied: s.int_gauge("raft_applied_index", "Raft applied index of the member.", l)?,
            lag: s.int_gauge(
                "raft_index_lag",
                "Raft entries the member is behind the leader's index.",
                l,
            )?,
            db_size: s.int_gauge(
                "db_size_bytes",
                "Physical size of the member's backend database.",
                l,
            )?,
            db_in_use: s.int_gauge(
                "db_size_in_use_bytes",
                "Logically used size of the member's backend database.",
                l,
            )?,
            db_quota: s.int_gauge(
                "db_quota_bytes",
                "Backend quota of the member; etcd raises NOSPACE when the database reaches it.",
                l,
            )?,
            alarm: s.int_gauge(
                "alarm_active",
                "1 while the alarm is active on this member.",
                &with_alarm,
            )?,
            info: s.int_gauge(
                "member_info",
                "Always 1; the etcd version in a label.",
                &with_version,
            )?,
            peer_rtt: Vec::new(),
            vitals: VitalFamilies::new(s)?,
        })
    }

    fn observe(&mut self, cluster: &str, e: &EndpointState) {
        let id = e.member_id.map(|i| i.to_string()).unwrap_or_default();
        let labels = endpoint_labels(cluster, e, &id);
        self.up
            .with_label_values(&labels)
            .set(flag(e.raft_term.is_some()));
        // Credentials refused and nothing checked: health unknown, so no sample rather than a 0 that pages.
        if e.state != EndpointHealth::AuthFailed {
            self.healthy.with_label_values(&labels).set(flag(e.healthy));
        }
        self.is_leader
            .with_label_values(&labels)
            .set(flag(e.is_leader));
        self.is_learner
            .with_label_values(&labels)
            .set(flag(e.is_learner));
        let optional = [
            (&self.term, e.raft_term),
            (&self.index, e.raft_index),
            (&self.applied, e.raft_applied_index),
            (&self.lag, e.raft_index_lag),
            (&self.db_size, e.db_size_bytes),
            (&self.db_in_use, e.db_size_in_use_bytes),
            (&self.db_quota, e.db_quota_bytes),
        ];
        for (gauge, value) in optional {
            if let Some(v) = value {
                gauge
                    .with_label_values(&labels)
                    .set(v.min(i64::MAX as u64) as i64);
            }
        }
        if e.raft_term.is_some() {
            for kind in ALARMS {
                let active = e.alarms.iter().any(|a| a == kind);
                let mut with = labels.to_vec();
                with.push(kind);
                self.alarm.with_label_values(&with).set(flag(active));
            }
        }
        if let Some(version) = &e.version {
            let mut with = labels.to_vec();
            with.push(version);
            self.info.with_label_values(&with).set(1);
        }
        for (peer, rtt) in &e.peer_rtt_seconds {
            let peer = peer.to_string();
            let pairs: Vec<(&str, &str)> = ENDPOINT_LABELS
                .iter()
                .copied()
                .zip(labels.iter().copied())
                .chain([("peer", peer.as_str())])
                .collect();
            self.peer_rtt.push(summary_metric(
                &pairs,
                [(0.5, rtt.p50), (0.99, rtt.p99)],
                rtt.count,
                rtt.sum,
            ));
        }
        if let Some(v) = &e.vitals {
            self.vitals.observe(&labels, v);
        }
    }

    /// The families the registry cannot hold (summaries), built by hand.
    fn summaries(self) -> impl Iterator<Item = MetricFamily> {
        summary_family(
            "peer_round_trip_time_seconds",
            "Heartbeat round-trip time to a peer: quantiles over the last poll interval, estimated from the \
             member's histogram; count and sum since the member started.",
            self.peer_rtt,
        )
        .into_iter()
        .chain(self.vitals.summaries())
    }
}

/// The families of a cluster's verdict, labelled with the cluster only.
struct ClusterFamilies {
    has_leader: IntGaugeVec,
    healthy: IntGaugeVec,
    voting: IntGaugeVec,
    learners: IntGaugeVec,
    healthy_voting: IntGaugeVec,
    quorum_size: IntGaugeVec,
    tolerance: IntGaugeVec,
    warnings: IntGaugeVec,
    last_poll: GaugeVec,
    kv_consistent: IntGaugeVec,
    member_kv_consistent: IntGaugeVec,
    consistency_checked: GaugeVec,
    consistency_seconds: GaugeVec,
}

impl ClusterFamilies {
    fn new(s: &StateGauges) -> Result<Self, MetricsError> {
        let c = &["cluster"];
        Ok(ClusterFamilies {
            has_leader: s.int_gauge("cluster_has_leader", "1 when the cluster has a leader.", c)?,
            healthy: s.int_gauge(
                "cluster_healthy",
                "1 when every endpoint is healthy, there is a leader and quorum, and no alarm is active.",
                c,
            )?,
            voting: s.int_gauge(
                "cluster_voting_members",
                "Voting members in the member list (started or not).",
                c,
            )?,
            learners: s.int_gauge("cluster_learners", "Learners in the member list.", c)?,
            healthy_voting: s.int_gauge(
                "cluster_healthy_voting_members",
                "Voting members that answer and take part in the cluster.",
                c,
            )?,
            quorum_size: s.int_gauge(
                "cluster_quorum_size",
                "Voting members needed for quorum.",
                c,
            )?,
            tolerance: s.int_gauge(
                "cluster_failure_tolerance",
                "How many more voting members may fail; negative when quorum is lost.",
                c,
            )?,
            warnings: s.int_gauge(
                "cluster_warnings",
                "Warnings of the latest poll, by kind.",
                &["cluster", "kind"],
            )?,
            last_poll: s.gauge(
                "last_poll_timestamp_seconds",
                "Unix time of the latest completed poll.",
                c,
            )?,
            kv_consistent: s.int_gauge(
                "cluster_kv_consistent",
                "1 when the voting members' KV hashes agreed at one pinned revision at the last check, 0 when \
                 they differed; absent while unknown (a member could not be compared) or never checked.",
                c,
            )?,
            member_kv_consistent: s.int_gauge(
                "member_kv_consistent",
                "1 when the member's KV hash agreed with the majority's at the last check, 0 when it differed; \
                 absent for a member not compared.",
                &["cluster", "member", "member_id"],
            )?,
            consistency_checked: s.gauge(
                "cluster_kv_consistency_check_timestamp_seconds",
                "Unix time of the last KV hash consistency check, whatever its result.",
                c,
            )?,
            consistency_seconds: s.gauge(
                "cluster_kv_consistency_check_duration_seconds",
                "How long the last KV hash consistency check took (every voting member, one after another).",
                c,
            )?,
        })
    }

    fn observe(&self, view: &ClusterView) {
        let cluster = [view.cluster.as_str()];
        let q = &view.quorum;
        if q.state != QuorumState::Unknown {
            self.has_leader
                .with_label_values(&cluster)
                .set(flag(view.leader_id.is_some()));
        }
        self.healthy
            .with_label_values(&cluster)
            .set(flag(view.healthy));
        self.voting
            .with_label_values(&cluster)
            .set(q.voting_members as i64);
        self.learners
            .with_label_values(&cluster)
            .set(view.members.iter().filter(|m| m.is_learner).count() as i64);
        self.healthy_voting
            .with_label_values(&cluster)
            .set(q.healthy_voting_members as i64);
        self.quorum_size
            .with_label_values(&cluster)
            .set(q.quorum_size as i64);
        // Unknown (a voter not probed, credentials refused) is no number: the series is absent, not a guess.
        if let Some(t) = q.failure_tolerance {
            self.tolerance.with_label_values(&cluster).set(t);
        }
        for &kind in WarningKind::ALL {
            let n = view.warnings.iter().filter(|w| w.kind == kind).count();
            self.warnings
                .with_label_values(&[cluster[0], kind.as_str()])
                .set(n as i64);
        }
        self.last_poll
            .with_label_values(&cluster)
            .set(unix_seconds(view.polled_at));
        if let Some(c) = &view.consistency {
            self.observe_consistency(view, c);
        }
    }

    fn observe_consistency(&self, view: &ClusterView, c: &Consistency) {
        let cluster = view.cluster.as_str();
        self.consistency_checked
            .with_label_values(&[cluster])
            .set(unix_seconds(c.checked_at));
        self.consistency_seconds
            .with_label_values(&[cluster])
            .set(c.seconds);
        let verdict = match c.state {
            ConsistencyState::Consistent => Some(true),
            ConsistencyState::Inconsistent => Some(false),
            ConsistencyState::Unknown => None,
        };
        let Some(consistent) = verdict else { return };
        self.kv_consistent
            .with_label_values(&[cluster])
            .set(flag(consistent));
        for id in &c.compared_members {
            let name = view.member(*id).map(|m| m.name.clone()).unwrap_or_default();
            self.member_kv_consistent
                .with_label_values(&[cluster, name.as_str(), id.to_string().as_str()])
                .set(flag(!c.differs(*id)));
        }
    }
}

/// The state of the given views as families, built afresh for one scrape.
fn state_families<'a>(
    views: impl IntoIterator<Item = &'a ClusterView>,
) -> Result<Vec<MetricFamily>, MetricsError> {
    let s = StateGauges {
        registry: Registry::new(),
    };
    let mut endpoints = EndpointFamilies::new(&s)?;
    let clusters = ClusterFamilies::new(&s)?;
    let build = s.int_gauge(
        "build_info",
        "Always 1; the etcd-sentinel version in a label.",
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    for view in views {
        for e in &view.endpoints {
            endpoints.observe(&view.cluster, e);
        }
        clusters.observe(view);
    }
    let mut families = s.registry.gather();
    families.extend(endpoints.summaries());
    Ok(families)
}

/// One summary sample. The prometheus crate has no summary type; this is how the Go client exports one:
/// quantiles over a recent window, `_count` and `_sum` cumulative.
fn summary_metric(
    labels: &[(&str, &str)],
    quantiles: [(f64, f64); 2],
    count: u64,
    sum: f64,
) -> Metric {
    let labels = labels
        .iter()
        .map(|(n, v)| {
            let mut pair = LabelPair::default();
            pair.set_name(n.to_string());
            pair.set_value(v.to_string());
            pair
        })
        .collect();
    let quantiles = quantiles
        .into_iter()
        .map(|(q, v)| {
            let mut quantile = Quantile::default();
            quantile.set_quantile(q);
            quantile.set_value(v);
            quantile
        })
        .collect();
    let mut summary = Summary::default();
    summary.set_sample_count(count);
    summary.set_sample_sum(sum);
    summary.set_quantile(quantiles);
    let mut metric = Metric::default();
    metric.set_label(labels);
    metric.set_summary(summary);
    metric
}

fn summary_family(short: &str, help: &str, metrics: Vec<Metric>) -> Option<MetricFamily> {
    if metrics.is_empty() {
        return None;
    }
    let mut family = MetricFamily::default();
    family.set_name(name(short));
    family.set_help(help.to_string());
    family.set_field_type(MetricType::SUMMARY);
    family.set_metric(metrics);
    Some(family)
}

/// Reads one value out of a member's vitals.
type VitalValue = fn(&Vitals) -> Option<f64>;

/// Families of the members' vital signs. Counters are passed through as counters: Prometheus computes rates and
/// handles a member's restart itself. Latencies are summaries over the last interval.
struct VitalFamilies {
    counters: Vec<(CounterVec, VitalValue)>,
    gauges: Vec<(GaugeVec, VitalValue)>,
    peer_sent_failures: CounterVec,
    grpc_requests: CounterVec,
    grpc_failed_ratio: GaugeVec,
    wal_fsync: Vec<Metric>,
    backend_commit: Vec<Metric>,
}

impl VitalFamilies {
    fn new(s: &StateGauges) -> Result<Self, MetricsError> {
        let l = &ENDPOINT_LABELS;
        let counter = |short: &str, help: &str| s.counter(short, help, l);
        let gauge = |short: &str, help: &str| s.gauge(short, help, l);
        let with = |extra: &'static str| -> Vec<&'static str> {
            l.iter().copied().chain([extra]).collect()
        };
        Ok(VitalFamilies {
            counters: vec![
                (counter("proposals_committed_total", "Raft proposals committed, as the member reports.")?, |v| v.proposals_committed),
                (counter("proposals_applied_total", "Raft proposals applied, as the member reports.")?, |v| v.proposals_applied),
                (counter("proposals_failed_total", "Raft proposals that failed, as the member reports.")?, |v| v.proposals_failed),
                (counter("member_leader_changes_seen_total", "Leader changes the member has seen.")?, |v| v.leader_changes_seen),
                (counter("slow_applies_total", "Applies that took too long on the member.")?, |v| v.slow_applies),
                (counter("slow_read_indexes_total", "Read indexes that were not served in time by the member.")?, |v| v.slow_read_indexes),
                (counter("heartbeat_send_failures_total", "Leader heartbeats the member failed to send.")?, |v| v.heartbeat_send_failures),
            ],
            gauges: vec![
                (gauge("proposals_pending", "Raft proposals pending on the member.")?, |v| v.proposals_pending),
                (gauge("proposals_apply_gap", "Committed minus applied proposals (etcd refuses requests beyond 5000).")?, |v| v.proposals_apply_gap),
                (gauge("member_has_leader", "1 when the member itself believes there is a leader.")?, |v| v.has_leader.map(|b| f64::from(u8::from(b)))),
                (gauge("member_resident_memory_bytes", "Resident memory of the etcd process.")?, |v| v.resident_memory_bytes),
                (gauge("member_open_fds", "Open file descriptors of the etcd process.")?, |v| v.open_fds),
                (gauge("member_max_fds", "File descriptor limit of the etcd process.")?, |v| v.max_fds),
                (gauge("db_open_read_transactions", "Open read transactions on the member's backend.")?, |v| v.db_open_read_transactions),
            ],
            peer_sent_failures: s.counter("peer_sent_failures_total", "Messages to a peer that could not be sent.", &with("peer"))?,
            grpc_requests: s.counter(
                "grpc_requests_total",
                "gRPC requests handled by the member, by code class (ok, client_error, server_error).",
                &with("code_class"),
            )?,
            grpc_failed_ratio: s.gauge(
                "grpc_requests_failed_ratio",
                "Share of the member's gRPC requests of the last interval that failed, by code class.",
                &with("code_class"),
            )?,
            wal_fsync: Vec::new(),
            backend_commit: Vec::new(),
        })
    }

    fn observe(&mut self, labels: &[&str; 4], v: &Vitals) {
        for (family, value) in &self.counters {
            if let Some(x) = value(v).filter(|x| *x >= 0.0) {
                family.with_label_values(labels).inc_by(x);
            }
        }
        for (family, value) in &self.gauges {
            if let Some(x) = value(v) {
                family.with_label_values(labels).set(x);
            }
        }
        for (peer, n) in &v.peer_sent_failures {
            let peer = peer.to_string();
            let mut with = labels.to_vec();
            with.push(&peer);
            self.peer_sent_failures
                .with_label_values(&with)
                .inc_by(n.max(0.0));
        }
        if let Some(g) = v.grpc_requests {
            for (class, n) in [
                ("ok", g.ok),
                ("client_error", g.client_error),
                ("server_error", g.server_error),
            ] {
                let mut with = labels.to_vec();
                with.push(class);
                self.grpc_requests
                    .with_label_values(&with)
                    .inc_by(n.max(0.0));
            }
        }
        if let Some(r) = v.grpc_failed_ratio {
            for (class, x) in [
                ("client_error", r.client_error),
                ("server_error", r.server_error),
            ] {
                let mut with = labels.to_vec();
                with.push(class);
                self.grpc_failed_ratio.with_label_values(&with).set(x);
            }
        }
        let pairs: Vec<(&str, &str)> = ENDPOINT_LABELS
            .iter()
            .copied()
            .zip(labels.iter().copied())
            .collect();
        // An empty window exports NaN quantiles, as Go client summaries do, rather than a gap in the series.
        let q = |x: Option<f64>| x.unwrap_or(f64::NAN);
        if let Some(l) = v.wal_fsync_seconds {
            self.wal_fsync.push(summary_metric(
                &pairs,
                [(0.5, q(l.p50)), (0.99, q(l.p99))],
                l.count,
                l.sum,
            ));
        }
        if let Some(l) = v.backend_commit_seconds {
            self.backend_commit.push(summary_metric(
                &pairs,
                [(0.5, q(l.p50)), (0.99, q(l.p99))],
                l.count,
                l.sum,
            ));
        }
    }

    fn summaries(self) -> impl Iterator<Item = MetricFamily> {
        [
            summary_family(
                "wal_fsync_duration_seconds",
                "WAL fsync latency of the member: quantiles over the last poll interval, count and sum since start.",
                self.wal_fsync,
            ),
            summary_family(
                "backend_commit_duration_seconds",
                "Backend commit latency of the member: quantiles over the last poll interval, count and sum since start.",
                self.backend_commit,
            ),
        ]
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::view::{self, PeerRtt};
    use std::time::UNIX_EPOCH;

    #[test]
    fn every_upload_failure_kind_is_a_reason_that_exists_at_zero() {
        use strum::IntoEnumIterator;
        let kinds: Vec<&str> = crate::maintenance::store::s3::RemoteFailure::iter()
            .map(<&str>::from)
            .collect();
        assert_eq!(kinds, UPLOAD_FAILURE_REASONS.to_vec());
    }

    #[test]
    fn a_view_renders_to_the_documented_families() {
        let (_, mut probes) = three();
        probes[2] = down(2);
        if let Ok(m) = &mut probes[0].metrics {
            let rtt = PeerRtt {
                p50: 0.0002,
                p99: 0.0008,
                count: 12,
                sum: 0.003,
            };
            m.peer_rtt.insert(crate::id::Id(2), rtt);
        }
        let v = view::build(
            "prod",
            &probes,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let m = Metrics::new().unwrap();
        m.observe_poll(&v, Duration::from_millis(12));
        m.observe_leadership("prod", true, Some(0.8));
        let text = m.render([&v]).unwrap();
        for line in [
            r#"etcd_sentinel_endpoint_up{cluster="prod",endpoint="http://127.0.0.1:2399",member="m2",member_id="0000000000000003"} 0"#,
            r#"etcd_sentinel_endpoint_healthy{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001"} 1"#,
            r#"etcd_sentinel_member_is_leader{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001"} 1"#,
            r#"etcd_sentinel_db_quota_bytes{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001"} 4000"#,
            r#"etcd_sentinel_alarm_active{alarm="NOSPACE",cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001"} 0"#,
            r#"etcd_sentinel_member_info{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001",version="3.4.23"} 1"#,
            r#"etcd_sentinel_cluster_failure_tolerance{cluster="prod"} 0"#,
            r#"etcd_sentinel_cluster_quorum_size{cluster="prod"} 2"#,
            r#"etcd_sentinel_cluster_warnings{cluster="prod",kind="quorum_at_risk"} 1"#,
            r#"etcd_sentinel_cluster_warnings{cluster="prod",kind="alarm"} 0"#,
            r#"etcd_sentinel_cluster_leader_changes_total{cluster="prod"} 1"#,
            r#"etcd_sentinel_poll_errors_total{cluster="prod"} 1"#,
            r#"etcd_sentinel_last_poll_timestamp_seconds{cluster="prod"} 1700000000"#,
            r#"etcd_sentinel_poll_duration_seconds_count{cluster="prod"} 1"#,
            "# TYPE etcd_sentinel_peer_round_trip_time_seconds summary",
            r#"etcd_sentinel_peer_round_trip_time_seconds{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001",peer="0000000000000002",quantile="0.99"} 0.0008"#,
            r#"etcd_sentinel_peer_round_trip_time_seconds_count{cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001",peer="0000000000000002"} 12"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        // The dead member has no raft values rather than zeros.
        assert!(!text.contains(
            r#"etcd_sentinel_raft_term{cluster="prod",endpoint="http://127.0.0.1:2399""#
        ));
        assert!(text.contains("etcd_sentinel_build_info{version="));
    }

    #[test]
    fn vitals_render_as_counters_summaries_and_gauges() {
        use crate::etcd::member_metrics;
        let before = member_metrics::parse(include_str!(
            "../../tests/fixtures/etcd-3.4-metrics-before.txt"
        ))
        .unwrap();
        let after = member_metrics::parse(include_str!(
            "../../tests/fixtures/etcd-3.4-metrics-after.txt"
        ))
        .unwrap();
        let (_, mut probes) = three();
        if let Ok(m) = &mut probes[0].metrics {
            m.vitals = crate::vitals::derive(&after, Some((&before, 10.0)));
        }
        let v = view::build("prod", &probes, UNIX_EPOCH);
        let text = Metrics::new().unwrap().render([&v]).unwrap();
        let m0 = r#"cluster="prod",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001""#;
        for line in [
            "# TYPE etcd_sentinel_wal_fsync_duration_seconds summary".to_string(),
            format!("etcd_sentinel_wal_fsync_duration_seconds_count{{{m0}}} 307"),
            "# TYPE etcd_sentinel_proposals_committed_total counter".to_string(),
            format!("etcd_sentinel_proposals_committed_total{{{m0}}} 308"),
            format!("etcd_sentinel_proposals_apply_gap{{{m0}}} 0"),
            format!("etcd_sentinel_member_max_fds{{{m0}}} 20000"),
            format!("etcd_sentinel_member_has_leader{{{m0}}} 1"),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(text.contains(&format!(
            "etcd_sentinel_backend_commit_duration_seconds{{{m0},quantile=\"0.99\"}}"
        )));
        assert!(text.contains(
            r#"etcd_sentinel_grpc_requests_failed_ratio{cluster="prod",code_class="server_error",endpoint="http://127.0.0.1:2379",member="m0",member_id="0000000000000001"} 0"#
        ));
        // Members without vitals have no such series (not zeros).
        assert!(!text.contains(r#"etcd_sentinel_proposals_committed_total{cluster="prod",endpoint="http://127.0.0.1:2389""#));
    }

    #[test]
    fn forgotten_clusters_and_vanished_endpoints_leave_no_series() {
        let (_, probes) = three();
        let v = view::build("prod", &probes, UNIX_EPOCH);
        let m = Metrics::new().unwrap();
        m.observe_poll(&v, Duration::from_millis(5));
        let smaller = view::build("prod", &probes[..2], UNIX_EPOCH);
        m.observe_poll(&smaller, Duration::from_millis(5));
        let text = m.render([&smaller]).unwrap();
        assert!(!text.contains("127.0.0.1:2399"), "{text}");
        m.forget_cluster("prod");
        let text = m.render(std::iter::empty()).unwrap();
        assert!(!text.contains("prod"), "{text}");
    }
}
