//! Events: what changed between two views of one cluster (pure), and a bounded log of them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::SystemTime;

use serde::Serialize;

use crate::id::Id;
use crate::view::{Alarm, ClusterView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LeaderChanged,
    LeaderElected,
    LeaderLost,
    MemberUnhealthy,
    MemberHealthy,
    MemberAdded,
    MemberRemoved,
    MemberPromoted,
    AlarmRaised,
    AlarmCleared,
    QuorumAtRisk,
    QuorumLost,
    QuorumRestored,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeaderChanged => "leader_changed",
            EventKind::LeaderElected => "leader_elected",
            EventKind::LeaderLost => "leader_lost",
            EventKind::MemberUnhealthy => "member_unhealthy",
            EventKind::MemberHealthy => "member_healthy",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::MemberPromoted => "member_promoted",
            EventKind::AlarmRaised => "alarm_raised",
            EventKind::AlarmCleared => "alarm_cleared",
            EventKind::QuorumAtRisk => "quorum_at_risk",
            EventKind::QuorumLost => "quorum_lost",
            EventKind::QuorumRestored => "quorum_restored",
        }
    }

    /// Whether an operator should look: drives the log level.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            EventKind::LeaderLost
                | EventKind::MemberUnhealthy
                | EventKind::AlarmRaised
                | EventKind::QuorumAtRisk
                | EventKind::QuorumLost
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "crate::view::unix_seconds")]
    pub time: SystemTime,
    pub kind: EventKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn member_name(view: &ClusterView, id: Id) -> String {
    view.member(id)
        .map_or_else(|| id.to_string(), |m| m.display_name())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuorumState {
    Ok,
    AtRisk,
    Lost,
    /// Nobody answered: we cannot say, so no quorum event is raised on it.
    Unknown,
}

fn quorum_state(view: &ClusterView) -> QuorumState {
    if view.members.is_empty() {
        QuorumState::Unknown
    } else if !view.quorum.has_quorum {
        QuorumState::Lost
    } else if view.quorum.failure_tolerance <= 0 && view.quorum.voting_members > 1 {
        QuorumState::AtRisk
    } else {
        QuorumState::Ok
    }
}

/// The events between two consecutive views of the same cluster, stamped with the time of `current`.
pub fn diff(previous: &ClusterView, current: &ClusterView) -> Vec<Event> {
    let time = current.polled_at;
    let mut out = Vec::new();
    let mut push = |kind, message: String, member_id: Option<Id>, endpoint: Option<String>| {
        out.push(Event {
            time,
            kind,
            message,
            member_id,
            endpoint,
        })
    };

    // Leadership.
    match (previous.leader_id, current.leader_id) {
        (Some(old), Some(new)) if old != new => {
            let term = current
                .endpoints
                .iter()
                .find(|e| e.is_leader)
                .and_then(|e| e.raft_term)
                .map_or_else(String::new, |t| format!(" (term {t})"));
            push(
                EventKind::LeaderChanged,
                format!(
                    "leader changed from {} to {}{term}",
                    member_name(previous, old),
                    member_name(current, new)
                ),
                Some(new),
                None,
            );
        }
        (None, Some(new)) => push(
            EventKind::LeaderElected,
            format!("leader elected: {}", member_name(current, new)),
            Some(new),
            None,
        ),
        (Some(old), None) => push(
            EventKind::LeaderLost,
            format!("no leader any more (was {})", member_name(previous, old)),
            Some(old),
            None,
        ),
        _ => {}
    }

    // Endpoint health, by endpoint URL (stable across polls).
    let before: BTreeMap<&str, bool> = previous
        .endpoints
        .iter()
        .map(|e| (e.endpoint.as_str(), e.healthy))
        .collect();
    for e in &current.endpoints {
        let name = e
            .member_name
            .clone()
            .unwrap_or_else(|| "unknown member".into());
        match (before.get(e.endpoint.as_str()), e.healthy) {
            (Some(true), false) => push(
                EventKind::MemberUnhealthy,
                format!(
                    "{name} ({}) became unhealthy: {}",
                    e.endpoint,
                    e.error.as_deref().unwrap_or("unknown error")
                ),
                e.member_id,
                Some(e.endpoint.clone()),
            ),
            (Some(false), true) => push(
                EventKind::MemberHealthy,
                format!("{name} ({}) is healthy again", e.endpoint),
                e.member_id,
                Some(e.endpoint.clone()),
            ),
            _ => {}
        }
    }

    // Membership: only when both views know the member list, so an unreachable cluster does not look emptied.
    if !previous.members.is_empty() && !current.members.is_empty() {
        for m in &current.members {
            match previous.member(m.id) {
                None => push(
                    EventKind::MemberAdded,
                    format!(
                        "member {} added{}",
                        m.display_name(),
                        if m.is_learner { " as a learner" } else { "" }
                    ),
                    Some(m.id),
                    None,
                ),
                Some(old) if old.is_learner && !m.is_learner => push(
                    EventKind::MemberPromoted,
                    format!("learner {} promoted to voting member", m.display_name()),
                    Some(m.id),
                    None,
                ),
                _ => {}
            }
        }
        for m in &previous.members {
            if current.member(m.id).is_none() {
                push(
                    EventKind::MemberRemoved,
                    format!("member {} removed", m.display_name()),
                    Some(m.id),
                    None,
                );
            }
        }
    }

    // Alarms.
    let old_alarms: BTreeSet<&Alarm> = previous.alarms.iter().collect();
    let new_alarms: BTreeSet<&Alarm> = current.alarms.iter().collect();
    for a in new_alarms.difference(&old_alarms) {
        push(
            EventKind::AlarmRaised,
            format!(
                "alarm {} raised on {}",
                a.kind,
                member_name(current, a.member_id)
            ),
            Some(a.member_id),
            None,
        );
    }
    // An unreachable cluster reports no alarms; that is not a clearance.
    if !current.members.is_empty() {
        for a in old_alarms.difference(&new_alarms) {
            push(
                EventKind::AlarmCleared,
                format!(
                    "alarm {} cleared on {}",
                    a.kind,
                    member_name(current, a.member_id)
                ),
                Some(a.member_id),
                None,
            );
        }
    }

    // Quorum.
    let q = &current.quorum;
    let counts = format!(
        "{} of {} voting members healthy, {} needed",
        q.healthy_voting_members, q.voting_members, q.quorum_size
    );
    match (quorum_state(previous), quorum_state(current)) {
        (a, b) if a == b => {}
        (_, QuorumState::Unknown) => {}
        (_, QuorumState::Lost) => push(
            EventKind::QuorumLost,
            format!("quorum lost: {counts}"),
            None,
            None,
        ),
        (QuorumState::Lost, QuorumState::AtRisk) => {
            push(
                EventKind::QuorumRestored,
                format!("quorum restored: {counts}"),
                None,
                None,
            );
            push(
                EventKind::QuorumAtRisk,
                format!("quorum at risk, no failure tolerance: {counts}"),
                None,
                None,
            );
        }
        (_, QuorumState::AtRisk) => push(
            EventKind::QuorumAtRisk,
            format!("quorum at risk, no failure tolerance: {counts}"),
            None,
            None,
        ),
        (QuorumState::Lost | QuorumState::AtRisk, QuorumState::Ok) => push(
            EventKind::QuorumRestored,
            format!("quorum restored: {counts}"),
            None,
            None,
        ),
        _ => {}
    }
    out
}

/// The most recent events of one cluster, oldest first; the oldest are dropped beyond `capacity`.
#[derive(Debug, Clone)]
pub struct EventLog {
    capacity: usize,
    events: VecDeque<Event>,
}

impl EventLog {
    pub const DEFAULT_CAPACITY: usize = 1000;

    pub fn new(capacity: usize) -> Self {
        EventLog {
            capacity: capacity.max(1),
            events: VecDeque::new(),
        }
    }

    pub fn extend(&mut self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            if self.events.len() == self.capacity {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests;
