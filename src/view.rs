//! ClusterView: one immutable verdict about a cluster, built from the probes of one poll. Pure: no I/O, no clock.
//!
//! Everything else reads this value: the CLI renders it, the daemon exports it as metrics and JSON, events are
//! the difference between two of them, and maintenance decides from it whether a member may be touched.

mod quorum;
mod warnings;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::vitals::Vitals;

/// The outcome of one call of a probe; the error is already a message fit for an operator.
pub type Outcome<T> = Result<T, String>;

/// Maintenance.Status of one member, as the probe read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    pub member_id: Id,
    pub cluster_id: Id,
    pub leader: Id,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub db_size: u64,
    pub db_size_in_use: u64,
    /// Reported by Status from etcd 3.6 on; `None` before (then /metrics tells).
    pub db_quota: Option<u64>,
    pub version: String,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

/// One entry of MemberList.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub id: Id,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// False for a member that was added but has not yet joined (empty name or no client URLs).
    pub started: bool,
}

impl Member {
    pub fn new(
        id: Id,
        name: String,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
        is_learner: bool,
    ) -> Self {
        let started = !name.is_empty() && !client_urls.is_empty();
        Member {
            id,
            name,
            peer_urls,
            client_urls,
            is_learner,
            started,
        }
    }

    /// Name for people: the member name, or its id while it has none (not started yet).
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            format!("(unstarted {})", self.id)
        } else {
            self.name.clone()
        }
    }
}

/// An active alarm, as AlarmList reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Alarm {
    pub member_id: Id,
    /// `NOSPACE` or `CORRUPT`.
    #[serde(rename = "alarm")]
    pub kind: String,
}

impl Alarm {
    /// NOSPACE leaves a member serving reads; any other alarm (CORRUPT) makes it unhealthy.
    pub fn blocks_member(kind: &str) -> bool {
        kind != "NOSPACE"
    }
}

/// Heartbeat round-trip time to one peer, estimated from the member's histogram: quantiles over the last
/// interval (or since start for a one-shot probe), count and sum cumulative, as a Prometheus summary has them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeerRtt {
    pub p50: f64,
    pub p99: f64,
    #[serde(skip)]
    pub count: u64,
    #[serde(skip)]
    pub sum: f64,
}

/// What the probe learned from the member's own /metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeMetrics {
    pub quota_backend_bytes: Option<u64>,
    pub peer_rtt: BTreeMap<Id, PeerRtt>,
    pub vitals: Vitals,
}

/// Where vital signs turn into warnings; each cluster may set its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// etcd's guidance: p99 WAL fsync under 10 ms.
    pub wal_fsync_p99_seconds: f64,
    /// etcd's guidance: p99 backend commit under 25 ms.
    pub backend_commit_p99_seconds: f64,
    /// Pending proposals at or above this, and more than at the previous poll, is a growing backlog.
    pub proposals_pending: f64,
    /// committed − applied at or above this is apply lag (etcd refuses requests beyond 5000).
    pub apply_gap: f64,
    /// Open file descriptors over this share of the limit.
    pub open_fds_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wal_fsync_p99_seconds: 0.010,
            backend_commit_p99_seconds: 0.025,
            proposals_pending: 100.0,
            apply_gap: 1000.0,
            open_fds_ratio: 0.8,
        }
    }
}

/// Everything one probe of one endpoint found out; every call may have failed on its own.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub endpoint: Endpoint,
    pub status: Outcome<StatusInfo>,
    /// The `etcdctl endpoint health` read: a linearizable range read of key "health".
    pub health: Outcome<()>,
    pub alarms: Outcome<Vec<Alarm>>,
    pub members: Outcome<Vec<Member>>,
    pub metrics: Outcome<ProbeMetrics>,
    pub probe_seconds: f64,
}

impl ProbeResult {
    /// A probe that failed before any call (connection refused, dial timeout, bad TLS, …).
    pub fn unreachable(endpoint: Endpoint, error: String, probe_seconds: f64) -> Self {
        ProbeResult {
            endpoint,
            status: Err(error.clone()),
            health: Err(error.clone()),
            alarms: Err(error.clone()),
            members: Err(error.clone()),
            metrics: Err(error),
            probe_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointState {
    pub endpoint: String,
    pub member_id: Option<Id>,
    pub member_name: Option<String>,
    /// The cluster this endpoint answered for; differs from the view's only for a foreign endpoint.
    pub cluster_id: Option<Id>,
    pub healthy: bool,
    pub error: Option<String>,
    pub is_leader: bool,
    /// The leader this member names (etcdctl's view of one member); `None` when unreachable or leaderless.
    pub leader_id: Option<Id>,
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_applied_index: Option<u64>,
    /// How many raft entries this member is behind the leader's index.
    pub raft_index_lag: Option<u64>,
    pub db_size_bytes: Option<u64>,
    pub db_size_in_use_bytes: Option<u64>,
    pub db_quota_bytes: Option<u64>,
    /// Space a defragmentation would give back: size − in use.
    pub db_fragmented_bytes: Option<u64>,
    /// db size / quota: etcd raises NOSPACE when the physical size reaches the quota.
    pub db_quota_usage: Option<f64>,
    pub version: Option<String>,
    pub is_learner: bool,
    pub alarms: Vec<String>,
    pub probe_seconds: f64,
    /// Heartbeat round-trip time to each peer, keyed by peer member id.
    pub peer_rtt_seconds: BTreeMap<Id, PeerRtt>,
    /// Why the member's /metrics could not be read (health does not depend on it).
    pub metrics_error: Option<String>,
    /// Disk, proposals, gRPC and process signs from the member's /metrics; `null` when unreadable.
    pub vitals: Option<Vitals>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quorum {
    /// Voting members in the member list, started or not (learners do not vote).
    pub voting_members: usize,
    /// Voting members that answer and take part: a linearizable read succeeded, or the member answers Status and
    /// follows the cluster's leader.
    pub healthy_voting_members: usize,
    /// ⌊voting/2⌋+1.
    pub quorum_size: usize,
    /// healthy voting − quorum size: how many more voting members may fail; negative when quorum is lost.
    pub failure_tolerance: i64,
    /// Whether the cluster can commit: enough healthy voters, or (when not every member was probed) a
    /// linearizable read succeeded somewhere, which etcd only serves with a quorum behind the leader.
    pub has_quorum: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    NoLeader,
    LeaderDisagreement,
    QuorumLost,
    QuorumAtRisk,
    MemberUnhealthy,
    Alarm,
    ForeignCluster,
    EvenVotingMembers,
    LearnerPresent,
    MemberNotStarted,
    EndpointNotMember,
    MemberNotProbed,
    VersionSkew,
    MetricsUnreadable,
    SlowWalFsync,
    SlowBackendCommit,
    ProposalsPendingGrowing,
    ApplyLag,
    FdsNearLimit,
}

impl WarningKind {
    pub const ALL: [WarningKind; 19] = [
        WarningKind::NoLeader,
        WarningKind::LeaderDisagreement,
        WarningKind::QuorumLost,
        WarningKind::QuorumAtRisk,
        WarningKind::MemberUnhealthy,
        WarningKind::Alarm,
        WarningKind::ForeignCluster,
        WarningKind::EvenVotingMembers,
        WarningKind::LearnerPresent,
        WarningKind::MemberNotStarted,
        WarningKind::EndpointNotMember,
        WarningKind::MemberNotProbed,
        WarningKind::VersionSkew,
        WarningKind::MetricsUnreadable,
        WarningKind::SlowWalFsync,
        WarningKind::SlowBackendCommit,
        WarningKind::ProposalsPendingGrowing,
        WarningKind::ApplyLag,
        WarningKind::FdsNearLimit,
    ];

    /// The snake_case name used in JSON and as the `kind` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::NoLeader => "no_leader",
            WarningKind::LeaderDisagreement => "leader_disagreement",
            WarningKind::QuorumLost => "quorum_lost",
            WarningKind::QuorumAtRisk => "quorum_at_risk",
            WarningKind::MemberUnhealthy => "member_unhealthy",
            WarningKind::Alarm => "alarm",
            WarningKind::ForeignCluster => "foreign_cluster",
            WarningKind::EvenVotingMembers => "even_voting_members",
            WarningKind::LearnerPresent => "learner_present",
            WarningKind::MemberNotStarted => "member_not_started",
            WarningKind::EndpointNotMember => "endpoint_not_member",
            WarningKind::MemberNotProbed => "member_not_probed",
            WarningKind::VersionSkew => "version_skew",
            WarningKind::MetricsUnreadable => "metrics_unreadable",
            WarningKind::SlowWalFsync => "slow_wal_fsync",
            WarningKind::SlowBackendCommit => "slow_backend_commit",
            WarningKind::ProposalsPendingGrowing => "proposals_pending_growing",
            WarningKind::ApplyLag => "apply_lag",
            WarningKind::FdsNearLimit => "fds_near_limit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    /// The configured name of the cluster (`default` on the command line).
    pub cluster: String,
    #[serde(serialize_with = "unix_seconds")]
    pub polled_at: SystemTime,
    /// The verdict: every endpoint healthy, a leader, quorum, and no alarm.
    pub healthy: bool,
    pub cluster_id: Option<Id>,
    pub leader_id: Option<Id>,
    pub members: Vec<Member>,
    pub endpoints: Vec<EndpointState>,
    pub quorum: Quorum,
    /// Active alarms of the cluster.
    pub alarms: Vec<Alarm>,
    pub warnings: Vec<Warning>,
}

/// Serialises a time as Unix seconds (a float), as every time in the JSON contract is.
pub(crate) fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    s.serialize_f64(secs)
}

impl ClusterView {
    pub fn member(&self, id: Id) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn leader(&self) -> Option<&Member> {
        self.leader_id.and_then(|id| self.member(id))
    }

    pub fn has_warning(&self, kind: WarningKind) -> bool {
        self.warnings.iter().any(|w| w.kind == kind)
    }

    /// An endpoint that answered for another cluster id: shown, never merged.
    pub fn is_foreign(&self, endpoint: &EndpointState) -> bool {
        endpoint.cluster_id.is_some() && endpoint.cluster_id != self.cluster_id
    }
}

/// The value most often seen, ties going to the one seen first (the order endpoints were given in).
fn most_common<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(seen, _)| *seen == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(v, _)| v)
}

/// Whether a member's advertised URL is this endpoint (compared normalised: `127.0.0.1:2379` = `http://…`).
pub(crate) fn same_endpoint(url: &str, endpoint: &str) -> bool {
    match (Endpoint::parse(url), Endpoint::parse(endpoint)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Which cluster the probes answered for, who leads it, and its members.
pub struct Membership {
    /// The id most endpoints answer for; endpoints of other clusters are flagged, not merged.
    pub cluster_id: Option<Id>,
    /// The leader most members name.
    pub leader_id: Option<Id>,
    /// The leader's member list if we have it (it is the authority), else the first one read; sorted by name,
    /// unstarted members last.
    pub members: Vec<Member>,
}

/// The membership part of a verdict alone: what discovery needs, without building the whole view.
pub fn membership(probes: &[ProbeResult]) -> Membership {
    let cluster_id = most_common(
        probes
            .iter()
            .filter_map(|p| p.status.as_ref().ok().map(|s| s.cluster_id)),
    );
    let ours = || {
        probes
            .iter()
            .filter(move |p| match (&p.status, cluster_id) {
                (Ok(s), Some(id)) => s.cluster_id == id,
                _ => true,
            })
    };
    let leader_id = most_common(
        ours()
            .filter_map(|p| p.status.as_ref().ok())
            .map(|s| s.leader)
            .filter(|l| l.0 != 0),
    );
    let member_lists = || ours().filter_map(|p| Some((p, p.members.as_ref().ok()?)));
    let mut members: Vec<Member> = member_lists()
        .find(|(p, _)| matches!((&p.status, leader_id), (Ok(s), Some(l)) if s.member_id == l))
        .or_else(|| member_lists().next())
        .map(|(_, list)| list.clone())
        .unwrap_or_default();
    members.sort_by(|a, b| (!a.started, &a.name, a.id).cmp(&(!b.started, &b.name, b.id)));
    Membership {
        cluster_id,
        leader_id,
        members,
    }
}

/// Merges the probes of one poll into the cluster's verdict, with the default thresholds.
pub fn build(cluster: &str, probes: &[ProbeResult], polled_at: SystemTime) -> ClusterView {
    build_with(cluster, probes, polled_at, &Thresholds::default())
}

/// Merges the probes of one poll into the cluster's verdict.
pub fn build_with(
    cluster: &str,
    probes: &[ProbeResult],
    polled_at: SystemTime,
    thresholds: &Thresholds,
) -> ClusterView {
    let Membership {
        cluster_id,
        leader_id,
        members,
    } = membership(probes);
    let belongs = |p: &ProbeResult| match (&p.status, cluster_id) {
        (Ok(s), Some(id)) => s.cluster_id == id,
        _ => true,
    };
    let ours = || probes.iter().filter(|p| belongs(p));

    let leader_index = ours()
        .filter_map(|p| p.status.as_ref().ok())
        .find(|s| Some(s.member_id) == leader_id)
        .map(|s| s.raft_index);

    // Alarms are cluster-wide: every member reports the same list; take the union to be safe.
    let alarms: BTreeSet<Alarm> = ours()
        .filter_map(|p| p.alarms.as_ref().ok())
        .flatten()
        .cloned()
        .collect();

    let endpoints: Vec<EndpointState> = probes
        .iter()
        .map(|p| endpoint_state(p, &members, &alarms, cluster_id, leader_id, leader_index))
        .collect();
    let quorum = quorum::count(&members, &endpoints, cluster_id, leader_id);

    // Any alarm fails the verdict, NOSPACE included: the member still answers reads (so it stays healthy, as
    // etcdctl says) but the cluster refuses writes until the alarm is disarmed.
    let healthy = !endpoints.is_empty()
        && endpoints.iter().all(|e| e.healthy)
        && quorum.has_quorum
        && leader_id.is_some()
        && alarms.is_empty();
    let mut view = ClusterView {
        cluster: cluster.to_string(),
        polled_at,
        healthy,
        cluster_id,
        leader_id,
        members,
        endpoints,
        quorum,
        alarms: alarms.into_iter().collect(),
        warnings: Vec::new(),
    };
    view.warnings = warnings::collect(&view, thresholds);
    view
}

/// One endpoint's row of the view, from its probe and what the whole poll established.
fn endpoint_state(
    p: &ProbeResult,
    members: &[Member],
    alarms: &BTreeSet<Alarm>,
    cluster_id: Option<Id>,
    leader_id: Option<Id>,
    leader_index: Option<u64>,
) -> EndpointState {
    let status = p.status.as_ref().ok();
    let url = p.endpoint.url();
    // Unreachable, the endpoint is still known by the member that advertises it.
    let member_id = status.map(|s| s.member_id).or_else(|| {
        members
            .iter()
            .find(|m| m.client_urls.iter().any(|u| same_endpoint(u, &url)))
            .map(|m| m.id)
    });
    let member = member_id.and_then(|id| members.iter().find(|m| m.id == id));
    let metrics = p.metrics.as_ref().ok();
    let own_alarms: Vec<String> = alarms
        .iter()
        .filter(|a| Some(a.member_id) == member_id)
        .map(|a| a.kind.clone())
        .collect();
    let blocking: Vec<&str> = own_alarms
        .iter()
        .map(String::as_str)
        .filter(|a| Alarm::blocks_member(a))
        .collect();
    let foreign = matches!((status, cluster_id), (Some(s), Some(id)) if s.cluster_id != id);

    let mut error = p.status.as_ref().err().cloned();
    if let Err(e) = &p.health {
        error.get_or_insert_with(|| format!("health check failed: {e}"));
    }
    if let (true, Some(s)) = (foreign, status) {
        error = Some(format!(
            "endpoint belongs to cluster {}, not to cluster {}",
            s.cluster_id,
            cluster_id.unwrap_or_default()
        ));
    }
    if !blocking.is_empty() {
        error.get_or_insert_with(|| format!("active alarm: {}", blocking.join(", ")));
    }
    let healthy = p.health.is_ok() && p.status.is_ok() && blocking.is_empty() && !foreign;

    let quota = status
        .and_then(|s| s.db_quota)
        .filter(|q| *q > 0)
        .or_else(|| metrics.and_then(|m| m.quota_backend_bytes));
    let db_size = status.map(|s| s.db_size);
    let db_in_use = status.map(|s| s.db_size_in_use);
    EndpointState {
        endpoint: url,
        member_id,
        member_name: member.map(|m| m.display_name()),
        cluster_id: status.map(|s| s.cluster_id),
        healthy,
        error,
        is_leader: status.is_some_and(|s| Some(s.member_id) == leader_id && !foreign),
        leader_id: status.map(|s| s.leader).filter(|l| l.0 != 0),
        raft_term: status.map(|s| s.raft_term),
        raft_index: status.map(|s| s.raft_index),
        raft_applied_index: status.map(|s| s.raft_applied_index),
        raft_index_lag: match (status, leader_index, foreign) {
            (Some(s), Some(l), false) => Some(l.saturating_sub(s.raft_index)),
            _ => None,
        },
        db_size_bytes: db_size,
        db_size_in_use_bytes: db_in_use,
        db_quota_bytes: quota,
        db_fragmented_bytes: db_size.zip(db_in_use).map(|(s, u)| s.saturating_sub(u)),
        db_quota_usage: db_size.zip(quota).map(|(s, q)| s as f64 / q as f64),
        version: status.map(|s| s.version.clone()),
        is_learner: status.map_or_else(|| member.is_some_and(|m| m.is_learner), |s| s.is_learner),
        alarms: own_alarms,
        probe_seconds: p.probe_seconds,
        peer_rtt_seconds: metrics.map(|m| m.peer_rtt.clone()).unwrap_or_default(),
        metrics_error: p.metrics.as_ref().err().cloned(),
        vitals: metrics.map(|m| m.vitals.clone()),
    }
}

#[cfg(test)]
mod tests;
