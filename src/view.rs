//! ClusterView: one immutable verdict about a cluster, built from the probes of one poll. Pure: no I/O, no clock.
//!
//! Everything else reads this value: the CLI renders it, the daemon exports it as metrics and JSON, events are
//! the difference between two of them, and maintenance decides from it whether a member may be touched.

pub mod consistency;
mod drift;
mod quorum;
pub mod versions;
mod warnings;

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;

use crate::names::serialize_as_name;

use crate::etcd::endpoint::Endpoint;
pub use crate::etcd::error::{FailureKind, Outcome, ProbeError};
use crate::id::Id;
use crate::settings::Thresholds;
use crate::vitals::Vitals;
pub use consistency::{Consistency, ConsistencyState, MemberHash};
pub use drift::Drift;

/// Maintenance.Status of one member, as the probe read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    pub member_id: Id,
    pub cluster_id: Id,
    pub leader: Id,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    /// The key-value store's revision in the response's header.
    pub revision: i64,
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
    /// The configured credentials were refused; the calls above were then made without them (etcd answers
    /// Status, alarms and the member list to anyone, and a read refused for lack of a user still proves the
    /// member served it).
    pub auth_error: Option<ProbeError>,
    /// This result is the previous poll's, shown while this poll's probe of the endpoint is still running.
    pub stale: bool,
    /// The member this endpoint answered as at an earlier poll: names a member that does not answer now even when
    /// the member list lacks its client URL (etcd lists a member without them until it has published them).
    pub known_member_id: Option<Id>,
}

impl ProbeResult {
    /// A probe that failed before any call (connection refused, dial timeout, bad TLS, …).
    pub fn unreachable(endpoint: Endpoint, error: ProbeError, probe_seconds: f64) -> Self {
        ProbeResult {
            endpoint,
            status: Err(error.clone()),
            health: Err(error.clone()),
            alarms: Err(error.clone()),
            members: Err(error.clone()),
            metrics: Err(error),
            probe_seconds,
            auth_error: None,
            stale: false,
            known_member_id: None,
        }
    }
}

/// What a probe says about one endpoint, in one word: the `state` key of an endpoint in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EndpointHealth {
    /// Served a linearizable read; no alarm that stops it.
    Healthy,
    /// Answers, but the read failed only because the cluster has no leader (an election, or no quorum): not
    /// the member's fault, so it counts as healthy; the cluster-level warning tells the story.
    NoLeader,
    /// Answers Status, but cannot serve a read although the cluster has a leader, or a CORRUPT alarm is active.
    Unhealthy,
    /// Did not answer: refused, reset, timed out.
    Unreachable,
    /// Our credentials were refused and nothing could be asked without them: health unknown.
    AuthFailed,
    /// Answered for another cluster.
    Foreign,
}

impl EndpointHealth {
    /// Healthy as far as the member itself is concerned.
    pub fn is_healthy(self) -> bool {
        matches!(self, EndpointHealth::Healthy | EndpointHealth::NoLeader)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointState {
    pub endpoint: String,
    pub member_id: Option<Id>,
    pub member_name: Option<String>,
    /// The cluster this endpoint answered for; differs from the view's only for a foreign endpoint.
    pub cluster_id: Option<Id>,
    /// The member works: it served a read, or could not only because the cluster has no leader.
    pub healthy: bool,
    pub state: EndpointHealth,
    /// True while this row is the previous poll's: the endpoint's probe of this poll has not finished yet.
    pub stale: bool,
    pub error: Option<String>,
    /// Why our credentials were refused here (then the row shows what etcd tells anyone).
    pub auth_error: Option<String>,
    pub is_leader: bool,
    /// The leader this member names (etcdctl's view of one member); `None` when unreachable or leaderless.
    pub leader_id: Option<Id>,
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_applied_index: Option<u64>,
    /// How many raft entries this member is behind the leader's index.
    pub raft_index_lag: Option<u64>,
    /// The key-value store's revision this member answered with.
    pub revision: Option<i64>,
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

/// The one definition of a cluster's quorum condition; warnings, events and metrics all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum QuorumState {
    /// Quorum, and at least one more voter may fail (or a one-voter cluster, which has no tolerance by design).
    Ok,
    /// Quorum, but one more voter failing loses it.
    AtRisk,
    /// Not enough voters take part to commit anything.
    Lost,
    /// Nothing reliable to count from (credentials refused everywhere, or nothing known of the membership).
    Unknown,
}

impl QuorumState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quorum {
    pub state: QuorumState,
    /// Voting members in the member list, started or not (learners do not vote).
    pub voting_members: usize,
    /// Voting members that answer and take part: a linearizable read succeeded, failed only for want of a
    /// leader, or the member answers Status and follows the cluster's leader.
    pub healthy_voting_members: usize,
    /// ⌊voting/2⌋+1.
    pub quorum_size: usize,
    /// healthy voting − quorum size: how many more voting members may fail; negative when quorum is lost.
    /// `None` when some started voter's state is unknown (not probed, or our credentials were refused).
    pub failure_tolerance: Option<i64>,
    /// Whether the cluster can commit: enough healthy voters, or (when not every voter could be counted) a
    /// linearizable read succeeded somewhere, which etcd only serves with a quorum behind the leader. `None`
    /// when that cannot be told.
    pub has_quorum: Option<bool>,
}

impl Quorum {
    /// The failure tolerance for people: the number, or "unknown".
    pub fn tolerance_text(&self) -> String {
        self.failure_tolerance
            .map_or_else(|| "unknown".to_string(), |t| t.to_string())
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum WarningKind {
    NoLeader,
    LeaderElection,
    AuthFailed,
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
    /// The voting members' KV hashes differ at one revision (the last consistency check).
    DataInconsistent,
    /// A member's member list differs from the one most members give.
    MembershipDrift,
    /// Members run an etcd version with a known defect that endangers the running cluster.
    KnownBadVersion,
    /// Members run an etcd version that must be upgraded (patch) before the next minor version.
    UpgradeNotReady,
}

impl WarningKind {
    /// Every kind, in declaration order: each is a `cluster_warnings{kind}` series, present at 0.
    pub const ALL: &'static [WarningKind] = <WarningKind as strum::VariantArray>::VARIANTS;

    /// The snake_case name used in JSON and as the `kind` metric label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

serialize_as_name!(QuorumState, EndpointHealth, WarningKind);

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
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub polled_at: SystemTime,
    /// The verdict: every endpoint healthy, a leader, quorum, no alarm, and no data inconsistency found.
    pub healthy: bool,
    pub cluster_id: Option<Id>,
    pub leader_id: Option<Id>,
    pub members: Vec<Member>,
    /// True when no member answered MemberList this poll and `members` is the last list read.
    pub members_stale: bool,
    pub endpoints: Vec<EndpointState>,
    pub quorum: Quorum,
    /// Active alarms of the cluster.
    pub alarms: Vec<Alarm>,
    /// True when no member answered AlarmList this poll (it needs a leader) and `alarms` is the last list read.
    pub alarms_stale: bool,
    /// The last KV hash consistency check; `null` until one ran.
    pub consistency: Option<Consistency>,
    /// The verdict of the poll alone, before the consistency check's result is counted in.
    #[serde(skip)]
    pub poll_healthy: bool,
    /// Members whose member list differs from the majority's (shown as `membership_drift` warnings).
    #[serde(skip)]
    pub membership_drift: Vec<Drift>,
    pub warnings: Vec<Warning>,
}

impl ClusterView {
    pub fn member(&self, id: Id) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn leader(&self) -> Option<&Member> {
        self.leader_id.and_then(|id| self.member(id))
    }

    /// Whether anything tells who leads: the quorum could be judged, or some endpoint answered or is known to be
    /// down. Not when every endpoint refused our credentials.
    pub fn leader_known(&self) -> bool {
        self.quorum.state != QuorumState::Unknown
            || self
                .endpoints
                .iter()
                .any(|e| e.state != EndpointHealth::AuthFailed)
    }

    pub fn has_warning(&self, kind: WarningKind) -> bool {
        self.warnings.iter().any(|w| w.kind == kind)
    }

    /// Sets the result of a consistency check, and what follows from it: the warnings and the verdict.
    pub fn attach_consistency(&mut self, consistency: Consistency, thresholds: &Thresholds) {
        self.consistency = Some(consistency);
        self.healthy = self.poll_healthy && !self.data_inconsistent();
        self.warnings = warnings::collect(self, thresholds);
    }

    /// The last consistency check found members that hold different data.
    pub fn data_inconsistent(&self) -> bool {
        self.consistency
            .as_ref()
            .is_some_and(|c| c.state == ConsistencyState::Inconsistent)
    }

    /// An endpoint that answered for another cluster id: shown, never merged.
    pub fn is_foreign(&self, endpoint: &EndpointState) -> bool {
        !endpoint.answers_for(self.cluster_id)
    }
}

/// Whether an endpoint that answered for `answered` belongs to the cluster the view is about: yes unless both
/// are known and differ (an endpoint that did not answer is counted as ours: it is listed as ours).
fn of_cluster(answered: Option<Id>, cluster: Option<Id>) -> bool {
    match (answered, cluster) {
        (Some(a), Some(c)) => a == c,
        _ => true,
    }
}

impl ProbeResult {
    /// Whether this probe belongs to the cluster with this id (see [`of_cluster`]).
    pub fn answers_for(&self, cluster: Option<Id>) -> bool {
        of_cluster(self.status.as_ref().ok().map(|s| s.cluster_id), cluster)
    }
}

impl EndpointState {
    /// Whether this row belongs to the cluster with this id (see [`of_cluster`]).
    pub fn answers_for(&self, cluster: Option<Id>) -> bool {
        of_cluster(self.cluster_id, cluster)
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
    let ours = || probes.iter().filter(move |p| p.answers_for(cluster_id));
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

/// What a verdict is built with besides the probes.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    pub thresholds: Thresholds,
    /// The last member list read; stands in (marked stale) when no member answers MemberList, so that quorum
    /// size, failure tolerance and member names survive a total outage.
    pub known_members: Vec<Member>,
    /// The last alarm list read; stands in (marked stale) when no member answers AlarmList (it needs a leader:
    /// etcd proposes it through raft), so that an alarm is not taken for cleared while quorum is lost.
    pub known_alarms: Option<Vec<Alarm>>,
    /// A leader the sentinel could not reach at the last poll while members that served reads named it: a
    /// partition between the sentinel and the leader. It is not declared lost again from an interim view.
    pub unreachable_leader: Option<Id>,
    /// The last consistency check's result, carried by every view until the next check.
    pub consistency: Option<Consistency>,
}

/// Merges the probes of one poll into the cluster's verdict, with the default thresholds.
pub fn build(cluster: &str, probes: &[ProbeResult], polled_at: SystemTime) -> ClusterView {
    build_with(cluster, probes, polled_at, &BuildContext::default())
}

/// Merges the probes of one poll into the cluster's verdict.
pub fn build_with(
    cluster: &str,
    probes: &[ProbeResult],
    polled_at: SystemTime,
    context: &BuildContext,
) -> ClusterView {
    let Membership {
        cluster_id,
        leader_id: claimed_leader,
        mut members,
    } = membership(probes);
    let members_stale = members.is_empty() && !context.known_members.is_empty();
    if members_stale {
        members = context.known_members.clone();
    }
    let ours = || probes.iter().filter(|p| p.answers_for(cluster_id));

    let leader_index = ours()
        .filter_map(|p| p.status.as_ref().ok())
        .find(|s| Some(s.member_id) == claimed_leader)
        .map(|s| s.raft_index);

    // Alarms are cluster-wide: every member reports the same list; take the union to be safe.
    let alarm_lists: Vec<&Vec<Alarm>> = ours().filter_map(|p| p.alarms.as_ref().ok()).collect();
    let alarms_stale = alarm_lists.is_empty();
    let alarms: BTreeSet<Alarm> = if alarms_stale {
        context.known_alarms.iter().flatten().cloned().collect()
    } else {
        alarm_lists.into_iter().flatten().cloned().collect()
    };

    let mut endpoints: Vec<EndpointState> = probes
        .iter()
        .map(|p| {
            endpoint_state(
                p,
                &members,
                &alarms,
                cluster_id,
                claimed_leader,
                leader_index,
            )
        })
        .collect();
    // While some rows are stale (an interim view), a leader found partitioned from the sentinel at the last poll
    // keeps its benefit of the doubt until this poll's reads say otherwise.
    let interim = probes.iter().any(|p| p.stale);
    let leader_id = claimed_leader.filter(|l| {
        (interim && context.unreachable_leader == Some(*l))
            || leader_answers(*l, probes, &endpoints)
    });
    if leader_id.is_none() {
        for e in &mut endpoints {
            e.is_leader = false;
        }
        waiting_for_a_leader(probes, &mut endpoints);
    } else {
        mark_isolated(probes, &mut endpoints, leader_id);
    }
    let quorum = quorum::count(&members, &endpoints, cluster_id, leader_id);
    let auth_failed = endpoints
        .iter()
        .any(|e| e.auth_error.is_some() || e.state == EndpointHealth::AuthFailed);

    let membership_drift = drift::compare(probes, cluster_id);
    // Any alarm fails the verdict, NOSPACE included: the member still answers reads (so it stays healthy, as
    // etcdctl says) but the cluster refuses writes until the alarm is disarmed. Refused credentials fail it too:
    // what could be checked without them may be fine, but the sentinel cannot do its work.
    let healthy = !endpoints.is_empty()
        && endpoints.iter().all(|e| e.healthy)
        && matches!(quorum.state, QuorumState::Ok | QuorumState::AtRisk)
        && leader_id.is_some()
        && alarms.is_empty()
        && !auth_failed;
    let consistency = context.consistency.clone();
    let mut view = ClusterView {
        cluster: cluster.to_string(),
        polled_at,
        healthy,
        cluster_id,
        leader_id,
        members,
        members_stale,
        endpoints,
        quorum,
        alarms: alarms.into_iter().collect(),
        alarms_stale,
        consistency,
        poll_healthy: healthy,
        membership_drift,
        warnings: Vec::new(),
    };
    // Members that hold different data fail the verdict as a CORRUPT alarm does.
    view.healthy = view.poll_healthy && !view.data_inconsistent();
    view.warnings = warnings::collect(&view, &context.thresholds);
    view
}

/// Whether the leader the members name is really there. A leader whose own endpoint, probed this poll, does
/// not answer is gone (killed or frozen) unless a member that served a read this poll still names it: then
/// only the sentinel cannot reach it (a partition), and the cluster does have a leader. Stale rows prove
/// nothing either way.
fn leader_answers(leader: Id, probes: &[ProbeResult], endpoints: &[EndpointState]) -> bool {
    let rows = || {
        probes
            .iter()
            .zip(endpoints)
            .filter(move |(_, e)| e.member_id == Some(leader))
    };
    let silent = rows().any(|(p, e)| !p.stale && e.state == EndpointHealth::Unreachable);
    if !silent {
        return true;
    }
    probes
        .iter()
        .zip(endpoints)
        .any(|(p, e)| !p.stale && e.state == EndpointHealth::Healthy && e.leader_id == Some(leader))
}

/// With no leader in the cluster, a read that ran out of time waited for one (the leader the member named is
/// gone, and the election had not ended within the command timeout): the member is not at fault.
fn waiting_for_a_leader(probes: &[ProbeResult], endpoints: &mut [EndpointState]) {
    for (p, e) in probes.iter().zip(endpoints.iter_mut()) {
        let blocked = e.alarms.iter().any(|a| Alarm::blocks_member(a));
        if let (EndpointHealth::Unhealthy, false, Ok(_), Err(err)) =
            (e.state, blocked, &p.status, &p.health)
            && err.kind == FailureKind::Timeout
        {
            e.state = EndpointHealth::NoLeader;
            e.healthy = true;
            e.error = Some(format!(
                "no leader: {err} (the leader it names does not answer)"
            ));
        }
    }
}

/// A member that could not serve a read for want of a leader, while the cluster has one, is cut off from it
/// (a partition on the peer network): not an election, so not healthy. Only rows of this poll: a stale row may
/// predate the election that gave the cluster its leader.
fn mark_isolated(probes: &[ProbeResult], endpoints: &mut [EndpointState], leader: Option<Id>) {
    for (p, e) in probes.iter().zip(endpoints.iter_mut()) {
        // A member that follows the cluster's leader (or is it) and still serves no read is waiting on a quorum,
        // not cut off: e.g. an etcd 3.4 leader that lost its followers keeps calling itself leader.
        if p.stale
            || e.state != EndpointHealth::NoLeader
            || leader.is_none()
            || e.leader_id == leader
        {
            continue;
        }
        let names = e
            .leader_id
            .map_or_else(|| "no leader".to_string(), |l| format!("leader {l}"));
        e.state = EndpointHealth::Unhealthy;
        e.healthy = false;
        e.error = Some(format!(
            "isolated: it knows {names} and serves no read while the cluster's leader is {}",
            leader.unwrap_or_default()
        ));
    }
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
    let member_id = status
        .map(|s| s.member_id)
        .or_else(|| {
            members
                .iter()
                .find(|m| m.client_urls.iter().any(|u| same_endpoint(u, &url)))
                .map(|m| m.id)
        })
        .or(p.known_member_id);
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
    let foreign = !p.answers_for(cluster_id);

    let mut error = p.status.as_ref().err().map(|e| e.message.clone());
    if let Err(e) = &p.health {
        error.get_or_insert_with(|| match e.kind {
            FailureKind::NoLeader => format!("no leader: {e}"),
            _ => format!("health check failed: {e}"),
        });
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
    let state = health_state(p, foreign, !blocking.is_empty());
    let error_text = error.clone();

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
        healthy: state.is_healthy(),
        state,
        stale: p.stale,
        error,
        auth_error: p
            .auth_error
            .as_ref()
            .map(|e| e.message.clone())
            .or_else(|| error_text.filter(|_| state == EndpointHealth::AuthFailed)),
        is_leader: status.is_some_and(|s| Some(s.member_id) == leader_id && !foreign),
        leader_id: status.map(|s| s.leader).filter(|l| l.0 != 0),
        raft_term: status.map(|s| s.raft_term),
        raft_index: status.map(|s| s.raft_index),
        raft_applied_index: status.map(|s| s.raft_applied_index),
        raft_index_lag: match (status, leader_index, foreign) {
            (Some(s), Some(l), false) => Some(l.saturating_sub(s.raft_index)),
            _ => None,
        },
        revision: status.map(|s| s.revision),
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
        metrics_error: p.metrics.as_ref().err().map(|e| e.message.clone()),
        vitals: metrics.map(|m| m.vitals.clone()),
    }
}

/// The endpoint's state in one word, from what its probe got.
fn health_state(p: &ProbeResult, foreign: bool, blocking_alarm: bool) -> EndpointHealth {
    let status = match &p.status {
        _ if foreign => return EndpointHealth::Foreign,
        Err(e) if e.kind == FailureKind::Auth => return EndpointHealth::AuthFailed,
        Err(_) => return EndpointHealth::Unreachable,
        Ok(s) => s,
    };
    if blocking_alarm {
        return EndpointHealth::Unhealthy;
    }
    match &p.health {
        Ok(()) => EndpointHealth::Healthy,
        Err(e) if e.kind == FailureKind::NoLeader => EndpointHealth::NoLeader,
        // The read ran out of time while the member itself knows of no leader: an election, not a sick member.
        Err(e) if e.kind == FailureKind::Timeout && status.leader.0 == 0 => {
            EndpointHealth::NoLeader
        }
        Err(e) if e.kind == FailureKind::Auth => EndpointHealth::AuthFailed,
        Err(_) => EndpointHealth::Unhealthy,
    }
}

#[cfg(test)]
mod tests;
