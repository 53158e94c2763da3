//! ClusterView: one immutable verdict about a cluster, built from the probes of one poll. Pure: no I/O, no clock.
//!
//! Everything else reads this value: the CLI renders it, the daemon exports it as metrics and JSON, events are
//! the difference between two of them, and maintenance decides from it whether a member may be touched.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::etcd::endpoint::Endpoint;
use crate::id::Id;

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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    pub member_id: Id,
    /// `NOSPACE` or `CORRUPT`.
    pub kind: String,
}

/// Heartbeat round-trip time to one peer, estimated from the member's histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeerRtt {
    pub p50: f64,
    pub p99: f64,
}

/// What the probe learned from the member's own /metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeMetrics {
    pub quota_backend_bytes: Option<u64>,
    pub peer_rtt: BTreeMap<Id, PeerRtt>,
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
}

impl WarningKind {
    pub const ALL: [WarningKind; 14] = [
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
    pub warnings: Vec<Warning>,
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
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

fn same_endpoint(url: &str, endpoint: &Endpoint) -> bool {
    Endpoint::parse(url).is_ok_and(|e| &e == endpoint)
}

fn warn(kind: WarningKind, message: String) -> Warning {
    Warning {
        kind,
        message,
        member_id: None,
        endpoint: None,
    }
}

/// Merges the probes of one poll into the cluster's verdict.
pub fn build(cluster: &str, probes: &[ProbeResult], polled_at: SystemTime) -> ClusterView {
    let mut warnings = Vec::new();

    // Which cluster are we looking at? The id most endpoints answer for; the others are flagged, not merged.
    let cluster_id = most_common(
        probes
            .iter()
            .filter_map(|p| p.status.as_ref().ok().map(|s| s.cluster_id)),
    );
    let belongs = |p: &ProbeResult| match (&p.status, cluster_id) {
        (Ok(s), Some(id)) => s.cluster_id == id,
        _ => true,
    };

    // Who leads: what most members say; members that say otherwise are flagged.
    let leader_claims: Vec<(Id, Id)> = probes
        .iter()
        .filter(|p| belongs(p))
        .filter_map(|p| p.status.as_ref().ok())
        .map(|s| (s.member_id, s.leader))
        .collect();
    let leader_id = most_common(leader_claims.iter().map(|(_, l)| *l).filter(|l| l.0 != 0));
    let distinct_leaders: BTreeSet<Id> = leader_claims
        .iter()
        .map(|(_, l)| *l)
        .filter(|l| l.0 != 0)
        .collect();
    if distinct_leaders.len() > 1 {
        let claims: Vec<String> = leader_claims
            .iter()
            .map(|(m, l)| format!("{m} says {l}"))
            .collect();
        warnings.push(warn(
            WarningKind::LeaderDisagreement,
            format!("members disagree about the leader: {}", claims.join(", ")),
        ));
    }

    // The member list: the leader's if we have it (it is the authority), else the first one read.
    let member_lists = || {
        probes
            .iter()
            .filter(|p| belongs(p))
            .filter_map(|p| Some((p, p.members.as_ref().ok()?)))
    };
    let mut members: Vec<Member> = member_lists()
        .find(|(p, _)| matches!((&p.status, leader_id), (Ok(s), Some(l)) if s.member_id == l))
        .or_else(|| member_lists().next())
        .map(|(_, list)| list.clone())
        .unwrap_or_default();
    members.sort_by(|a, b| (!a.started, &a.name, a.id).cmp(&(!b.started, &b.name, b.id)));

    let leader_index = probes
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .find(|s| Some(s.member_id) == leader_id)
        .map(|s| s.raft_index);

    // Alarms are cluster-wide: every member reports the same list; take the union to be safe.
    let mut alarms: BTreeSet<Alarm> = BTreeSet::new();
    for p in probes.iter().filter(|p| belongs(p)) {
        if let Ok(list) = &p.alarms {
            alarms.extend(list.iter().cloned());
        }
    }

    let mut endpoints = Vec::with_capacity(probes.len());
    for p in probes {
        let status = p.status.as_ref().ok();
        let member_id = status.map(|s| s.member_id).or_else(|| {
            members
                .iter()
                .find(|m| m.client_urls.iter().any(|u| same_endpoint(u, &p.endpoint)))
                .map(|m| m.id)
        });
        let member = member_id.and_then(|id| members.iter().find(|m| m.id == id));
        let metrics = p.metrics.as_ref().ok();
        let own_alarms: Vec<String> = alarms
            .iter()
            .filter(|a| Some(a.member_id) == member_id)
            .map(|a| a.kind.clone())
            .collect();
        let blocking_alarms: Vec<&String> = own_alarms.iter().filter(|a| *a != "NOSPACE").collect();

        let mut error = None;
        if let Err(e) = &p.status {
            error = Some(e.clone());
        }
        if let Err(e) = &p.health {
            error.get_or_insert_with(|| format!("health check failed: {e}"));
        }
        let foreign = !belongs(p);
        if foreign {
            let other = status.map(|s| s.cluster_id).unwrap_or_default();
            let msg = format!(
                "endpoint belongs to cluster {other}, not to cluster {}",
                cluster_id.unwrap_or_default()
            );
            warnings.push(Warning {
                kind: WarningKind::ForeignCluster,
                message: format!("{}: {msg}", p.endpoint),
                member_id,
                endpoint: Some(p.endpoint.url()),
            });
            error = Some(msg);
        }
        if !blocking_alarms.is_empty() {
            let list: Vec<&str> = blocking_alarms.iter().map(|s| s.as_str()).collect();
            error.get_or_insert_with(|| format!("active alarm: {}", list.join(", ")));
        }
        let healthy =
            p.health.is_ok() && p.status.is_ok() && blocking_alarms.is_empty() && !foreign;

        let quota = status
            .and_then(|s| s.db_quota)
            .filter(|q| *q > 0)
            .or_else(|| metrics.and_then(|m| m.quota_backend_bytes));
        let db_size = status.map(|s| s.db_size);
        let db_in_use = status.map(|s| s.db_size_in_use);
        let metrics_error = p.metrics.as_ref().err().cloned();
        // An unreachable member has no metrics either; that is already its error, not a second warning.
        if let (Some(e), true) = (&metrics_error, status.is_some()) {
            warnings.push(Warning {
                kind: WarningKind::MetricsUnreadable,
                message: format!("{}: cannot read the member's /metrics: {e}", p.endpoint),
                member_id,
                endpoint: Some(p.endpoint.url()),
            });
        }
        endpoints.push(EndpointState {
            endpoint: p.endpoint.url(),
            member_id,
            member_name: member.map(|m| m.display_name()),
            cluster_id: status.map(|s| s.cluster_id),
            healthy,
            error,
            is_leader: status.is_some_and(|s| Some(s.member_id) == leader_id && !foreign),
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
            is_learner: status
                .map_or_else(|| member.is_some_and(|m| m.is_learner), |s| s.is_learner),
            alarms: own_alarms,
            probe_seconds: p.probe_seconds,
            peer_rtt_seconds: metrics.map(|m| m.peer_rtt.clone()).unwrap_or_default(),
            metrics_error,
        });
    }

    // Quorum, counted over voting members. A voter counts when it served a linearizable read, or when it
    // answers and follows the cluster's leader: during an election the reads fail for a moment, yet the
    // surviving voters are still a quorum. An isolated member drops its leader and stops counting.
    let voting: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_ids: BTreeSet<Id> = endpoints
        .iter()
        .zip(probes)
        .filter(|(e, p)| {
            let follows_leader = matches!(
                (&p.status, leader_id),
                (Ok(s), Some(l)) if s.leader == l && belongs(p)
            );
            let no_blocking_alarm = e.alarms.iter().all(|a| a == "NOSPACE");
            e.healthy || (follows_leader && no_blocking_alarm)
        })
        .filter_map(|(e, _)| e.member_id)
        .collect();
    let probed_ids: BTreeSet<Id> = endpoints
        .iter()
        .filter(|e| e.cluster_id.is_none() || e.cluster_id == cluster_id)
        .filter_map(|e| e.member_id)
        .collect();
    let healthy_voting = voting
        .iter()
        .filter(|m| healthy_ids.contains(&m.id))
        .count();
    let quorum_size = voting.len() / 2 + 1;
    let failure_tolerance = healthy_voting as i64 - quorum_size as i64;
    let all_voters_probed = voting.iter().all(|m| probed_ids.contains(&m.id));
    let any_linearizable_read = endpoints.iter().any(|e| e.healthy);
    let has_quorum = !voting.is_empty()
        && (failure_tolerance >= 0 || (!all_voters_probed && any_linearizable_read));
    let quorum = Quorum {
        voting_members: voting.len(),
        healthy_voting_members: healthy_voting,
        quorum_size,
        failure_tolerance,
        has_quorum,
    };

    if leader_id.is_none() {
        warnings.push(warn(
            WarningKind::NoLeader,
            "no member reports a leader".into(),
        ));
    }
    if members.is_empty() {
        warnings.push(warn(
            WarningKind::QuorumLost,
            "no member answered: membership and quorum unknown".into(),
        ));
    } else if !has_quorum {
        warnings.push(warn(
            WarningKind::QuorumLost,
            format!(
                "quorum lost: {healthy_voting} of {} voting members healthy, {quorum_size} needed",
                voting.len()
            ),
        ));
    } else if failure_tolerance == 0 && all_voters_probed {
        warnings.push(warn(
            WarningKind::QuorumAtRisk,
            format!(
                "no failure tolerance: {healthy_voting} of {} voting members healthy, {quorum_size} needed; one more failure loses quorum",
                voting.len()
            ),
        ));
    }
    for e in endpoints.iter().filter(|e| !e.healthy) {
        if e.cluster_id.is_some() && e.cluster_id != cluster_id {
            continue; // already a foreign_cluster warning
        }
        warnings.push(Warning {
            kind: WarningKind::MemberUnhealthy,
            message: format!(
                "{} ({}) is unhealthy: {}",
                e.endpoint,
                e.member_name.as_deref().unwrap_or("unknown member"),
                e.error.as_deref().unwrap_or("unknown error")
            ),
            member_id: e.member_id,
            endpoint: Some(e.endpoint.clone()),
        });
    }
    for a in &alarms {
        let name = members
            .iter()
            .find(|m| m.id == a.member_id)
            .map_or_else(|| a.member_id.to_string(), |m| m.display_name());
        warnings.push(Warning {
            kind: WarningKind::Alarm,
            message: format!("alarm {} active on member {name}", a.kind),
            member_id: Some(a.member_id),
            endpoint: None,
        });
    }
    if !voting.is_empty() && voting.len().is_multiple_of(2) {
        warnings.push(warn(
            WarningKind::EvenVotingMembers,
            format!(
                "{} voting members: an even count tolerates no more failures than one member fewer",
                voting.len()
            ),
        ));
    }
    for m in members.iter().filter(|m| m.is_learner) {
        warnings.push(Warning {
            kind: WarningKind::LearnerPresent,
            message: format!(
                "member {} is a learner (does not vote; promote it when it has caught up)",
                m.display_name()
            ),
            member_id: Some(m.id),
            endpoint: None,
        });
    }
    for m in members.iter().filter(|m| !m.started) {
        warnings.push(Warning {
            kind: WarningKind::MemberNotStarted,
            message: format!(
                "member {} was added but has not started{}",
                m.id,
                if m.is_learner {
                    ""
                } else {
                    " (it already counts towards the quorum)"
                }
            ),
            member_id: Some(m.id),
            endpoint: None,
        });
    }
    if !members.is_empty() {
        for p in probes.iter().filter(|p| belongs(p)) {
            let listed = members
                .iter()
                .any(|m| m.client_urls.iter().any(|u| same_endpoint(u, &p.endpoint)));
            if !listed {
                warnings.push(Warning {
                    kind: WarningKind::EndpointNotMember,
                    message: format!("{} is not a client URL of any member", p.endpoint),
                    member_id: None,
                    endpoint: Some(p.endpoint.url()),
                });
            }
        }
        for m in members
            .iter()
            .filter(|m| m.started && !probed_ids.contains(&m.id))
        {
            warnings.push(Warning {
                kind: WarningKind::MemberNotProbed,
                message: format!(
                    "member {} ({}) is not probed: none of the given endpoints reaches it (use --cluster)",
                    m.display_name(),
                    m.client_urls.join(",")
                ),
                member_id: Some(m.id),
                endpoint: None,
            });
        }
    }
    let versions: BTreeSet<&str> = endpoints
        .iter()
        .filter(|e| e.cluster_id == cluster_id)
        .filter_map(|e| e.version.as_deref())
        .collect();
    if versions.len() > 1 {
        warnings.push(warn(
            WarningKind::VersionSkew,
            format!(
                "members run different versions: {}",
                versions.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }

    // Any alarm fails the verdict, NOSPACE included: the member still answers reads (so it stays healthy, as
    // etcdctl says) but the cluster refuses writes until the alarm is disarmed.
    let healthy = !endpoints.is_empty()
        && endpoints.iter().all(|e| e.healthy)
        && has_quorum
        && leader_id.is_some()
        && alarms.is_empty();
    ClusterView {
        cluster: cluster.to_string(),
        polled_at,
        healthy,
        cluster_id,
        leader_id,
        members,
        endpoints,
        quorum,
        warnings,
    }
}

#[cfg(test)]
mod tests;
