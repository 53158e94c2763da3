//! What an operator should look at, derived from a built view (pure). Kinds are a closed set: they are a metric
//! label (`cluster_warnings{kind}`) and a JSON value.

use std::collections::BTreeSet;

use super::versions::{Impact, KnownIssue, known_issues};
use super::{
    ClusterView, EndpointHealth, QuorumState, Thresholds, Warning, WarningKind, same_endpoint,
};
use crate::id::Id;
use crate::units::human_seconds;

fn cluster_wide(kind: WarningKind, message: String) -> Warning {
    Warning {
        kind,
        message,
        member_id: None,
        endpoint: None,
    }
}

fn about_member(kind: WarningKind, member_id: Id, message: String) -> Warning {
    Warning {
        kind,
        message,
        member_id: Some(member_id),
        endpoint: None,
    }
}

pub(super) fn collect(view: &ClusterView, thresholds: &Thresholds) -> Vec<Warning> {
    let mut out = Vec::new();
    leadership(view, &mut out);
    quorum(view, &mut out);
    endpoints(view, &mut out);
    membership(view, &mut out);
    vitals(view, thresholds, &mut out);
    consistency(view, &mut out);
    drift(view, &mut out);
    versions(view, &mut out);
    out
}

/// The last KV hash consistency check, when it found members that disagree: one warning per differing member.
fn consistency(view: &ClusterView, out: &mut Vec<Warning>) {
    let Some(c) = view
        .consistency
        .as_ref()
        .filter(|_| view.data_inconsistent())
    else {
        return;
    };
    for id in &c.differing_members {
        let name = view
            .member(*id)
            .map_or_else(|| id.to_string(), |m| m.display_name());
        let corrupt = view
            .alarms
            .iter()
            .any(|a| a.member_id == *id && a.kind == "CORRUPT");
        let alarm = if corrupt {
            " (CORRUPT alarm active)"
        } else {
            ""
        };
        out.push(about_member(
            WarningKind::DataInconsistent,
            *id,
            format!("member {name} holds different data{alarm}: {}", c.message),
        ));
    }
}

/// Members whose member list differs from the majority's.
fn drift(view: &ClusterView, out: &mut Vec<Warning>) {
    for d in &view.membership_drift {
        let message = match d.member_id {
            Some(id) => {
                let name = view
                    .member(id)
                    .map_or_else(|| id.to_string(), |m| m.display_name());
                format!(
                    "member {name}'s member list differs from the one {} of {} members give: {}",
                    d.agreeing,
                    d.compared,
                    d.differences.join("; ")
                )
            }
            None => format!(
                "the {} members answering give different member lists, none held by a majority: {}",
                d.compared,
                d.differences.join("; ")
            ),
        };
        out.push(Warning {
            kind: WarningKind::MembershipDrift,
            message,
            member_id: d.member_id,
            endpoint: d.endpoint.clone(),
        });
    }
}

/// Versions with a known problem (see `versions::KNOWN_ISSUES`): one warning per problem, naming the members.
fn versions(view: &ClusterView, out: &mut Vec<Warning>) {
    let mut affected: Vec<(&'static KnownIssue, Vec<String>)> = Vec::new();
    for e in view.endpoints.iter().filter(|e| !view.is_foreign(e)) {
        let Some(version) = e.version.as_deref() else {
            continue;
        };
        let name = e.member_name.as_deref().unwrap_or(&e.endpoint);
        for issue in known_issues(version) {
            let who = format!("{name} ({version})");
            match affected.iter_mut().find(|(i, _)| *i == issue) {
                Some((_, members)) if !members.contains(&who) => members.push(who),
                Some(_) => {}
                None => affected.push((issue, vec![who])),
            }
        }
    }
    for (issue, members) in affected {
        let kind = match issue.impact {
            Impact::Running => WarningKind::KnownBadVersion,
            Impact::Upgrade => WarningKind::UpgradeNotReady,
        };
        out.push(cluster_wide(
            kind,
            format!(
                "{}: {}; {} ({})",
                members.join(", "),
                issue.problem,
                issue.advice,
                issue.reference
            ),
        ));
    }
}

/// Disk, apply and process health from each member's vital signs.
fn vitals(view: &ClusterView, t: &Thresholds, out: &mut Vec<Warning>) {
    for e in view.endpoints.iter().filter(|e| !view.is_foreign(e)) {
        let Some(v) = &e.vitals else { continue };
        let name = e.member_name.as_deref().unwrap_or(&e.endpoint);
        let mut warn = |kind, message: String| {
            out.push(Warning {
                kind,
                message,
                member_id: e.member_id,
                endpoint: Some(e.endpoint.clone()),
            })
        };
        if let Some((wal, p99)) = v
            .wal_fsync_seconds
            .and_then(|w| Some((w, w.p99?)))
            .filter(|(_, p99)| *p99 > t.wal_fsync_p99_seconds)
        {
            warn(
                WarningKind::SlowWalFsync,
                format!(
                    "{name}: WAL fsync p99 {} over {} fsyncs (threshold {}): the disk is too slow for etcd",
                    human_seconds(p99),
                    wal.window_count,
                    human_seconds(t.wal_fsync_p99_seconds)
                ),
            );
        }
        if let Some((c, p99)) = v
            .backend_commit_seconds
            .and_then(|c| Some((c, c.p99?)))
            .filter(|(_, p99)| *p99 > t.backend_commit_p99_seconds)
        {
            warn(
                WarningKind::SlowBackendCommit,
                format!(
                    "{name}: backend commit p99 {} over {} commits (threshold {})",
                    human_seconds(p99),
                    c.window_count,
                    human_seconds(t.backend_commit_p99_seconds)
                ),
            );
        }
        if let (Some(now), Some(before)) = (v.proposals_pending, v.proposals_pending_before)
            && now >= t.proposals_pending
            && now > before
        {
            warn(
                WarningKind::ProposalsPendingGrowing,
                format!("{name}: pending proposals growing ({before} → {now})"),
            );
        }
        if let Some(gap) = v.proposals_apply_gap.filter(|g| *g >= t.apply_gap) {
            warn(
                WarningKind::ApplyLag,
                format!(
                    "{name}: {gap} committed proposals not yet applied (etcd refuses requests beyond 5000)"
                ),
            );
        }
        if let (Some(open), Some(max)) = (v.open_fds, v.max_fds)
            && max > 0.0
            && open / max > t.open_fds_ratio
        {
            warn(
                WarningKind::FdsNearLimit,
                format!(
                    "{name}: {open} of {max} file descriptors open ({:.0}%)",
                    100.0 * open / max
                ),
            );
        }
    }
}

fn leadership(view: &ClusterView, out: &mut Vec<Warning>) {
    let ours = || view.endpoints.iter().filter(|e| !view.is_foreign(e));
    if view.leader_id.is_none() && view.leader_known() {
        let named: BTreeSet<Id> = ours().filter_map(|e| e.leader_id).collect();
        let message = match named.iter().next() {
            Some(l) if named.len() == 1 => {
                let name = view
                    .member(*l)
                    .map_or_else(|| l.to_string(), |m| m.display_name());
                format!("no leader: the leader the members named, {name}, does not answer")
            }
            _ => "no member reports a leader".to_string(),
        };
        out.push(cluster_wide(WarningKind::NoLeader, message));
        // Enough voters take part, so they will elect one: an election, not an outage.
        if matches!(view.quorum.state, QuorumState::Ok | QuorumState::AtRisk) {
            let term = ours()
                .filter(|e| !e.stale)
                .filter_map(|e| e.raft_term)
                .max()
                .map_or_else(String::new, |t| format!(" (term {t})"));
            out.push(cluster_wide(
                WarningKind::LeaderElection,
                format!(
                    "leader election in progress{term}: the voting members are choosing a leader"
                ),
            ));
        }
    }
    let claims: Vec<(Id, Id)> = ours()
        .filter_map(|e| Some((e.member_id?, e.leader_id?)))
        .collect();
    let distinct: BTreeSet<Id> = claims.iter().map(|(_, l)| *l).collect();
    if distinct.len() > 1 {
        let said: Vec<String> = claims
            .iter()
            .map(|(m, l)| format!("{m} says {l}"))
            .collect();
        out.push(cluster_wide(
            WarningKind::LeaderDisagreement,
            format!("members disagree about the leader: {}", said.join(", ")),
        ));
    }
}

fn quorum(view: &ClusterView, out: &mut Vec<Warning>) {
    let q = &view.quorum;
    let stale = if view.members_stale {
        " (member list as last read: no member answers)"
    } else {
        ""
    };
    match q.state {
        QuorumState::Lost => out.push(cluster_wide(
            WarningKind::QuorumLost,
            format!(
                "quorum lost: {} of {} voting members healthy, {} needed{stale}",
                q.healthy_voting_members, q.voting_members, q.quorum_size
            ),
        )),
        QuorumState::AtRisk => out.push(cluster_wide(
            WarningKind::QuorumAtRisk,
            format!(
                "no failure tolerance: {} of {} voting members healthy, {} needed; one more failure loses quorum",
                q.healthy_voting_members, q.voting_members, q.quorum_size
            ),
        )),
        QuorumState::Ok | QuorumState::Unknown => {}
    }
    let voting = q.voting_members;
    if voting > 0 && voting.is_multiple_of(2) {
        out.push(cluster_wide(
            WarningKind::EvenVotingMembers,
            format!("{voting} voting members: an even count tolerates no more failures than one member fewer"),
        ));
    }
}

fn endpoints(view: &ClusterView, out: &mut Vec<Warning>) {
    for e in &view.endpoints {
        let name = e.member_name.as_deref().unwrap_or("unknown member");
        let warning = |kind, message| Warning {
            kind,
            message,
            member_id: e.member_id,
            endpoint: Some(e.endpoint.clone()),
        };
        if view.is_foreign(e) {
            let error = e.error.as_deref().unwrap_or("another cluster");
            out.push(warning(
                WarningKind::ForeignCluster,
                format!("{}: {error}", e.endpoint),
            ));
            continue;
        }
        if let Some(cause) = &e.auth_error {
            let fallback = if e.raft_term.is_some() {
                "; checked without credentials, as far as etcd allows"
            } else {
                "; nothing could be checked"
            };
            out.push(warning(
                WarningKind::AuthFailed,
                format!(
                    "{} ({name}): credentials refused: {cause}{fallback}",
                    e.endpoint
                ),
            ));
        }
        if !e.healthy && e.state != EndpointHealth::AuthFailed {
            let error = e.error.as_deref().unwrap_or("unknown error");
            out.push(warning(
                WarningKind::MemberUnhealthy,
                format!("{} ({name}) is unhealthy: {error}", e.endpoint),
            ));
        }
        // An unreachable member has no metrics either: that is already its error, not a second warning.
        if let (Some(error), Some(_)) = (&e.metrics_error, e.raft_term) {
            out.push(warning(
                WarningKind::MetricsUnreadable,
                format!("{}: cannot read the member's /metrics: {error}", e.endpoint),
            ));
        }
        if !view.members.is_empty()
            && !view
                .members
                .iter()
                .any(|m| m.client_urls.iter().any(|u| same_endpoint(u, &e.endpoint)))
        {
            out.push(warning(
                WarningKind::EndpointNotMember,
                format!("{} is not a client URL of any member", e.endpoint),
            ));
        }
    }
    let versions: BTreeSet<&str> = view
        .endpoints
        .iter()
        .filter(|e| !view.is_foreign(e))
        .filter_map(|e| e.version.as_deref())
        .collect();
    if versions.len() > 1 {
        let list: Vec<&str> = versions.into_iter().collect();
        out.push(cluster_wide(
            WarningKind::VersionSkew,
            format!("members run different versions: {}", list.join(", ")),
        ));
    }
}

fn membership(view: &ClusterView, out: &mut Vec<Warning>) {
    for a in &view.alarms {
        let name = view
            .member(a.member_id)
            .map_or_else(|| a.member_id.to_string(), |m| m.display_name());
        out.push(about_member(
            WarningKind::Alarm,
            a.member_id,
            format!("alarm {} active on member {name}", a.kind),
        ));
    }
    for m in &view.members {
        if m.is_learner {
            out.push(about_member(
                WarningKind::LearnerPresent,
                m.id,
                format!(
                    "member {} is a learner (does not vote; promote it when it has caught up)",
                    m.display_name()
                ),
            ));
        }
        if !m.started {
            let counts = if m.is_learner {
                ""
            } else {
                " (it already counts towards the quorum)"
            };
            out.push(about_member(
                WarningKind::MemberNotStarted,
                m.id,
                format!("member {} was added but has not started{counts}", m.id),
            ));
        } else if !view.endpoints.iter().any(|e| e.member_id == Some(m.id)) {
            out.push(about_member(
                WarningKind::MemberNotProbed,
                m.id,
                format!(
                    "member {} ({}) is not probed: none of the given endpoints reaches it (use --cluster)",
                    m.display_name(),
                    m.client_urls.join(",")
                ),
            ));
        }
    }
}
