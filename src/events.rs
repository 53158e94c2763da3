//! Events: what changed between two views of one cluster (pure), and a bounded log of them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::SystemTime;

use serde::Serialize;

use std::sync::Arc;

use crate::id::Id;
use crate::names::serialize_as_name;
use crate::view::{
    Alarm, ClusterView, ConsistencyState, EndpointHealth, EndpointState, Quorum, QuorumState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
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
    /// Back from at risk: one more voter may fail again.
    QuorumHealthy,
    AuthFailed,
    AuthRestored,
    /// The first view of a cluster: the state the sentinel found it in.
    WatchStarted,
    /// A scheduled snapshot was saved and verified.
    SnapshotSaved,
    SnapshotFailed,
    /// A verified snapshot and its sidecar were uploaded to S3.
    SnapshotUploaded,
    /// Snapshots beyond the retention policy were deleted.
    SnapshotPruned,
    RestoreDrillPassed,
    RestoreDrillFailed,
    /// A rolling defragmentation took the lock and starts with its first member.
    DefragStarted,
    /// One member was defragmented (or failed to be).
    DefragMember,
    /// A run ended with every member defragmented or spared by the rule.
    DefragFinished,
    /// A run failed or stopped before its end; the members not reached are untouched.
    DefragFailed,
    /// A run was not started: the cluster could not afford it, or another runner holds the lock.
    DefragRefused,
    /// A consistency check found members whose KV hashes differ.
    DataInconsistent,
    /// A consistency check found the voting members' KV hashes equal (the first check, or after another result).
    DataConsistent,
    /// A consistency check could not compare every voting member.
    ConsistencyUnknown,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        self.into()
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
                | EventKind::AuthFailed
                | EventKind::SnapshotFailed
                | EventKind::RestoreDrillFailed
                | EventKind::DefragFailed
                | EventKind::DataInconsistent
        )
    }
}

serialize_as_name!(EventKind);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub time: SystemTime,
    pub kind: EventKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// For `leader_elected`: how long the cluster had no leader, as the sentinel saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl Event {
    /// An event of maintenance (not of a view), at `time`.
    pub fn maintenance(time: SystemTime, kind: EventKind, message: String) -> Event {
        Event {
            time,
            kind,
            message,
            member_id: None,
            endpoint: None,
            duration_seconds: None,
        }
    }
}

fn member_name(view: &ClusterView, id: Id) -> String {
    view.member(id)
        .map_or_else(|| id.to_string(), |m| m.display_name())
}

/// The events of one comparison, all stamped with the time of the newer view.
struct Events {
    time: SystemTime,
    list: Vec<Event>,
}

impl Events {
    fn push(
        &mut self,
        kind: EventKind,
        message: String,
        member_id: Option<Id>,
        endpoint: Option<String>,
    ) {
        self.list.push(Event {
            time: self.time,
            kind,
            message,
            member_id,
            endpoint,
            duration_seconds: None,
        })
    }
}

/// The events between two consecutive views of the same cluster, stamped with the time of `current`.
pub fn diff(previous: &ClusterView, current: &ClusterView) -> Vec<Event> {
    let mut out = Events {
        time: current.polled_at,
        list: Vec::new(),
    };
    leadership(previous, current, &mut out);
    endpoint_health(previous, current, &mut out);
    membership(previous, current, &mut out);
    alarms(previous, current, &mut out);
    credentials(previous, current, &mut out);
    quorum(previous, current, &mut out);
    consistency(previous, current, &mut out);
    out.list
}

/// The result of a consistency check, when its state differs from the one before (or it is the first).
fn consistency(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    let Some(now) = &current.consistency else {
        return;
    };
    if previous.consistency.as_ref().map(|c| c.state) == Some(now.state) {
        return;
    }
    let kind = match now.state {
        ConsistencyState::Consistent => EventKind::DataConsistent,
        ConsistencyState::Inconsistent => EventKind::DataInconsistent,
        ConsistencyState::Unknown => EventKind::ConsistencyUnknown,
    };
    let member = match now.differing_members.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    out.push(kind, now.message.clone(), member, None);
    // When the check ended, not when the view it was shown on was polled.
    if let Some(event) = out.list.last_mut() {
        event.time = now.checked_at + std::time::Duration::from_secs_f64(now.seconds.max(0.0));
    }
}

/// Only the member list as read this poll tells who joined or left: an unreachable cluster does not look emptied.
fn members_read(view: &ClusterView) -> bool {
    !view.members.is_empty() && !view.members_stale
}

/// Leadership, when both views can tell (refused credentials everywhere tell nothing).
fn leadership(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    let leaders = if previous.leader_known() && current.leader_known() {
        (previous.leader_id, current.leader_id)
    } else {
        (None, None)
    };
    match leaders {
        (Some(old), Some(new)) if old != new => out.push(
            EventKind::LeaderChanged,
            format!(
                "leader changed from {} to {}{}",
                member_name(previous, old),
                member_name(current, new),
                term_of(current)
            ),
            Some(new),
            None,
        ),
        (None, Some(new)) => out.push(
            EventKind::LeaderElected,
            format!(
                "leader elected: {}{}",
                member_name(current, new),
                term_of(current)
            ),
            Some(new),
            None,
        ),
        (Some(old), None) => {
            let gone = current
                .endpoints
                .iter()
                .any(|e| e.member_id == Some(old) && !e.healthy);
            let why = if gone { ": it does not answer" } else { "" };
            out.push(
                EventKind::LeaderLost,
                format!(
                    "leader lost: {}{}{why}",
                    member_name(previous, old),
                    term_of(previous)
                ),
                Some(old),
                None,
            )
        }
        _ => {}
    }
}

/// Endpoint health, by endpoint URL (stable across polls). An endpoint whose health is unknown (credentials
/// refused) is neither.
fn endpoint_health(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    let known = |e: &EndpointState| (e.state != EndpointHealth::AuthFailed).then_some(e.healthy);
    let before: BTreeMap<&str, Option<bool>> = previous
        .endpoints
        .iter()
        .map(|e| (e.endpoint.as_str(), known(e)))
        .collect();
    for e in &current.endpoints {
        let name = e
            .member_name
            .clone()
            .unwrap_or_else(|| "unknown member".into());
        match (before.get(e.endpoint.as_str()).copied().flatten(), known(e)) {
            (Some(true), Some(false)) => out.push(
                EventKind::MemberUnhealthy,
                format!(
                    "{name} ({}) became unhealthy: {}",
                    e.endpoint,
                    e.error.as_deref().unwrap_or("unknown error")
                ),
                e.member_id,
                Some(e.endpoint.clone()),
            ),
            (Some(false), Some(true)) => out.push(
                EventKind::MemberHealthy,
                format!("{name} ({}) is healthy again ({})", e.endpoint, role(e)),
                e.member_id,
                Some(e.endpoint.clone()),
            ),
            _ => {}
        }
    }
}

/// Members added, removed and promoted.
fn membership(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    if members_read(previous) && members_read(current) {
        for m in &current.members {
            match previous.member(m.id) {
                None => out.push(
                    EventKind::MemberAdded,
                    format!(
                        "member {} added{}",
                        m.display_name(),
                        if m.is_learner { " as a learner" } else { "" }
                    ),
                    Some(m.id),
                    None,
                ),
                Some(old) if old.is_learner && !m.is_learner => out.push(
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
                out.push(
                    EventKind::MemberRemoved,
                    format!("member {} removed", m.display_name()),
                    Some(m.id),
                    None,
                );
            }
        }
    }
}

/// Alarms raised and cleared.
fn alarms(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    let old_alarms: BTreeSet<&Alarm> = previous.alarms.iter().collect();
    let new_alarms: BTreeSet<&Alarm> = current.alarms.iter().collect();
    for a in new_alarms.difference(&old_alarms) {
        out.push(
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
    // An unreachable cluster, or one without a leader, reports no alarms; that is not a clearance.
    if members_read(current) && !current.alarms_stale {
        for a in old_alarms.difference(&new_alarms) {
            out.push(
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
}

/// Credentials refused and accepted again.
fn credentials(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    match (auth_failures(previous), auth_failures(current)) {
        (None, Some(cause)) => out.push(EventKind::AuthFailed, cause, None, None),
        (Some(_), None) => out.push(
            EventKind::AuthRestored,
            "credentials accepted again".into(),
            None,
            None,
        ),
        _ => {}
    }
}

/// Quorum, from the one definition in the view; "restored" only after "lost".
fn quorum(previous: &ClusterView, current: &ClusterView, out: &mut Events) {
    let q = &current.quorum;
    let counts = counts(q);
    match (previous.quorum.state, q.state) {
        (a, b) if a == b => {}
        (_, QuorumState::Lost) => out.push(
            EventKind::QuorumLost,
            format!("quorum lost: {counts}"),
            None,
            None,
        ),
        (QuorumState::Lost, QuorumState::Ok | QuorumState::AtRisk) => {
            out.push(
                EventKind::QuorumRestored,
                format!("quorum restored: {counts}"),
                None,
                None,
            );
            if q.state == QuorumState::AtRisk {
                out.push(
                    EventKind::QuorumAtRisk,
                    format!("quorum at risk, no failure tolerance: {counts}"),
                    None,
                    None,
                );
            }
        }
        (_, QuorumState::AtRisk) => out.push(
            EventKind::QuorumAtRisk,
            format!("quorum at risk, no failure tolerance: {counts}"),
            None,
            None,
        ),
        (QuorumState::AtRisk, QuorumState::Ok) => out.push(
            EventKind::QuorumHealthy,
            format!(
                "quorum no longer at risk: {counts}, failure tolerance {}",
                q.tolerance_text()
            ),
            None,
            None,
        ),
        _ => {}
    }
}

fn counts(q: &Quorum) -> String {
    format!(
        "{} of {} voting members healthy, {} needed",
        q.healthy_voting_members, q.voting_members, q.quorum_size
    )
}

fn term_of(view: &ClusterView) -> String {
    view.endpoints
        .iter()
        .filter(|e| e.member_id == view.leader_id && view.leader_id.is_some())
        .chain(&view.endpoints)
        .find_map(|e| e.raft_term)
        .map_or_else(String::new, |t| format!(" (term {t})"))
}

fn role(e: &EndpointState) -> &'static str {
    match (e.is_leader, e.is_learner) {
        (true, _) => "leader",
        (_, true) => "learner",
        _ => "follower",
    }
}

/// What the refused credentials say, if any endpoint refused them.
fn auth_failures(view: &ClusterView) -> Option<String> {
    view.endpoints.iter().find_map(|e| {
        Some(format!(
            "credentials refused by {}: {}",
            e.endpoint,
            e.auth_error.as_ref()?
        ))
    })
}

/// The events of a cluster's first view: what the sentinel found, and each thing wrong as its own event, so
/// that a log read from the start knows the state it began in.
pub fn first(current: &ClusterView) -> Vec<Event> {
    let time = current.polled_at;
    let q = &current.quorum;
    let leader = match current.leader_id {
        Some(l) => format!("leader {}{}", member_name(current, l), term_of(current)),
        None => "no leader".into(),
    };
    let tolerance = q.tolerance_text();
    let verdict = if current.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    let mut out = vec![Event {
        time,
        kind: EventKind::WatchStarted,
        message: format!(
            "watching: {verdict}; {leader}; {}; failure tolerance {tolerance}",
            counts(q)
        ),
        member_id: current.leader_id,
        endpoint: None,
        duration_seconds: None,
    }];
    // Everything wrong, as the difference from a view in which nothing was known to be wrong.
    let mut fine = current.clone();
    fine.alarms.clear();
    fine.quorum.state = QuorumState::Ok;
    for e in &mut fine.endpoints {
        e.healthy = true;
        e.state = EndpointHealth::Healthy;
        e.auth_error = None;
    }
    out.extend(diff(&fine, current));
    out
}

/// Turns successive views of one cluster into events, remembering what a single view cannot tell: the previous
/// view, and since when the cluster has had no leader. Kept across configuration reloads, so that no change
/// goes unrecorded when a cluster's poller restarts.
#[derive(Debug, Default)]
pub struct Tracker {
    previous: Option<Arc<ClusterView>>,
    leaderless_since: Option<SystemTime>,
    /// The last leader seen, so that old → none → new counts as one change.
    last_leader: Option<Id>,
}

impl Tracker {
    /// The last view observed: what a restarted poller starts from (its membership, alarms and leader).
    pub fn last_view(&self) -> Option<Arc<ClusterView>> {
        self.previous.clone()
    }
}

/// What one view changed.
#[derive(Debug, Default)]
pub struct Observation {
    pub events: Vec<Event>,
    /// An election ended with this view: how long there was no leader.
    pub leaderless_seconds: Option<f64>,
    /// The leader is another member than the last one seen (old → none → new counts once).
    pub leader_changed: bool,
}

impl Tracker {
    pub fn observe(&mut self, current: Arc<ClusterView>) -> Observation {
        let mut events = match &self.previous {
            Some(previous) => diff(previous, &current),
            None => first(&current),
        };
        let mut observation = Observation::default();
        match current.leader_id {
            // Timed from the first view without a leader after one with a leader: a first view without one
            // cannot say since when, and refused credentials cannot say at all.
            None if current.leader_known() => {
                let had_leader = self
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.leader_id.is_some());
                if had_leader && self.leaderless_since.is_none() {
                    self.leaderless_since = Some(current.polled_at);
                }
            }
            None => {}
            Some(_) => {
                if let Some(since) = self.leaderless_since.take() {
                    let seconds = current
                        .polled_at
                        .duration_since(since)
                        .map_or(0.0, |d| d.as_secs_f64());
                    observation.leaderless_seconds = Some(seconds);
                    if let Some(e) = events
                        .iter_mut()
                        .find(|e| e.kind == EventKind::LeaderElected)
                    {
                        e.message = format!("{} after {seconds:.2}s without a leader", e.message);
                        e.duration_seconds = Some(seconds);
                    }
                }
            }
        }
        observation.leader_changed = matches!(
            (self.last_leader, current.leader_id),
            (Some(old), Some(new)) if old != new
        );
        if current.leader_id.is_some() {
            self.last_leader = current.leader_id;
        }
        observation.events = events;
        self.previous = Some(current);
        observation
    }
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
