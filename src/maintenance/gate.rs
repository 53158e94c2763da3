//! May a member be touched now? (pure)
//!
//! A defragmentation blocks a member's reads and writes for its duration, and a snapshot loads the member it is
//! read from: either is only safe while the rest of the cluster can carry on without that member. So a member
//! may be touched only when, in a fresh and complete view, there is a leader, every member is healthy, and the
//! cluster keeps quorum with one member fewer (failure tolerance ≥ 1). A NOSPACE alarm alone does not stop it:
//! defragmentation is how NOSPACE is cleared. A single-member cluster has no tolerance by design; touching it is an
//! outage for as long as the step lasts, and only allowed when asked for.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::id::Id;
use crate::names::serialize_as_name;
use crate::view::{Alarm, ClusterView, EndpointHealth, QuorumState};

/// How strict the gate is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateOptions {
    /// A single-member cluster may be touched (its clients wait while it is).
    pub allow_single_member: bool,
    /// A view older than this says nothing about now.
    pub max_view_age: Duration,
}

impl GateOptions {
    /// The default bound on a view's age for a cluster polled every `interval`: two polls and a little slack, so
    /// a poll that overran does not refuse maintenance, but a poller that stopped does.
    pub fn for_interval(interval: Duration) -> Self {
        GateOptions {
            allow_single_member: false,
            max_view_age: interval * 2 + Duration::from_secs(5),
        }
    }
}

/// Why the gate refuses, as a closed set (JSON value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RefusalKind {
    /// The view is too old, or still partly the previous poll's.
    ViewStale,
    NoLeader,
    /// Quorum lost, at risk (tolerance 0) or unknown: touching a member could cost it.
    Quorum,
    /// One voting member and `allow_single_member` not given.
    SingleMember,
    /// A member is down, unhealthy, not started, not probed, or refuses our credentials.
    MemberUnhealthy,
    /// An alarm other than NOSPACE (CORRUPT) is active, whichever member it names: etcd refuses writes.
    Alarm,
    /// The member asked for is not in the member list.
    UnknownMember,
}

serialize_as_name!(RefusalKind);

/// One reason not to touch the cluster (or a member of it) now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    pub kind: RefusalKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Id>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refusal(kind: RefusalKind, member_id: Option<Id>, message: String) -> Refusal {
    Refusal {
        kind,
        member_id,
        message,
    }
}

/// Every reason the cluster may not be touched now; empty when every member may be, one at a time.
pub fn refusals(view: &ClusterView, now: SystemTime, options: &GateOptions) -> Vec<Refusal> {
    let mut out = Vec::new();
    let age = now.duration_since(view.polled_at).unwrap_or_default();
    if age > options.max_view_age {
        out.push(refusal(
            RefusalKind::ViewStale,
            None,
            format!(
                "the latest view is {} old (more than {}): the poller is not keeping up",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(options.max_view_age)
            ),
        ));
    }
    if view.members_stale || view.endpoints.iter().any(|e| e.stale) {
        out.push(refusal(
            RefusalKind::ViewStale,
            None,
            "the latest view is partly the previous poll's (a poll is under way, or no member lists members)"
                .into(),
        ));
    }
    if view.leader_id.is_none() {
        out.push(refusal(
            RefusalKind::NoLeader,
            None,
            "no leader is known: no member that answers names one".into(),
        ));
    }
    let q = &view.quorum;
    match q.state {
        QuorumState::Ok if q.voting_members == 1 && !options.allow_single_member => {
            out.push(refusal(
                RefusalKind::SingleMember,
                None,
                "a single-member cluster has no failure tolerance: touching its member stops the cluster, \
                 so maintenance of it must be asked for explicitly"
                    .into(),
            ))
        }
        QuorumState::Ok => {}
        QuorumState::AtRisk => out.push(refusal(
            RefusalKind::Quorum,
            None,
            format!(
                "failure tolerance 0 ({} of {} voting members healthy, {} needed): touching a member could \
                 cost quorum",
                q.healthy_voting_members, q.voting_members, q.quorum_size
            ),
        )),
        QuorumState::Lost => out.push(refusal(
            RefusalKind::Quorum,
            None,
            format!(
                "quorum lost ({} of {} voting members healthy, {} needed)",
                q.healthy_voting_members, q.voting_members, q.quorum_size
            ),
        )),
        QuorumState::Unknown => out.push(refusal(
            RefusalKind::Quorum,
            None,
            "quorum cannot be counted (a member's state is unknown)".into(),
        )),
    }
    for alarm in view.alarms.iter().filter(|a| Alarm::blocks_member(&a.kind)) {
        let name = view.member(alarm.member_id).map_or_else(
            || format!("{} (not in the member list)", alarm.member_id),
            |m| m.display_name(),
        );
        out.push(refusal(
            RefusalKind::Alarm,
            Some(alarm.member_id),
            format!(
                "alarm {} active on member {name}: the cluster refuses writes until it is resolved",
                alarm.kind
            ),
        ));
    }
    out.extend(member_refusals(view));
    out
}

/// Members whose state forbids maintenance: each must be started, probed, and healthy (a NOSPACE alarm is not
/// a fault here; a CORRUPT one is).
fn member_refusals(view: &ClusterView) -> Vec<Refusal> {
    let mut out = Vec::new();
    for m in &view.members {
        let name = m.display_name();
        let rows: Vec<_> = view
            .endpoints
            .iter()
            .filter(|e| e.member_id == Some(m.id))
            .collect();
        let problem = if !m.started {
            Some("was added but has not started".to_string())
        } else if rows.is_empty() {
            Some("is not probed (none of the endpoints reaches it)".to_string())
        } else {
            rows.iter()
                .find(|e| e.state != EndpointHealth::Healthy)
                .map(|e| {
                    let why = e.error.as_deref().unwrap_or("not healthy");
                    format!("is {} at {}: {why}", state_word(e.state), e.endpoint)
                })
        };
        if let Some(problem) = problem {
            out.push(refusal(
                RefusalKind::MemberUnhealthy,
                Some(m.id),
                format!("member {name} {problem}"),
            ));
        }
    }
    out
}

fn state_word(state: EndpointHealth) -> &'static str {
    match state {
        EndpointHealth::Healthy => "healthy",
        EndpointHealth::NoLeader => "without a leader",
        EndpointHealth::Unhealthy => "unhealthy",
        EndpointHealth::Unreachable => "down",
        EndpointHealth::AuthFailed => "refusing our credentials",
        EndpointHealth::Foreign => "answering for another cluster",
    }
}

/// May this one member be touched now? The cluster-wide reasons, plus the member being one of the cluster's.
pub fn may_touch(
    view: &ClusterView,
    member: Id,
    now: SystemTime,
    options: &GateOptions,
) -> Result<(), Vec<Refusal>> {
    let mut out = refusals(view, now, options);
    if view.member(member).is_none() {
        out.push(refusal(
            RefusalKind::UnknownMember,
            Some(member),
            format!("member {member} is not in the member list"),
        ));
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::testing::*;
    use crate::view::{self, Alarm};

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs_after: u64) -> SystemTime {
        UNIX_EPOCH + NOW + Duration::from_secs(secs_after)
    }

    fn options() -> GateOptions {
        GateOptions::for_interval(Duration::from_secs(10))
    }

    fn kinds(r: &[Refusal]) -> Vec<RefusalKind> {
        r.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn a_healthy_three_member_cluster_may_be_touched() {
        let (_, probes) = three();
        let v = view::build("prod", &probes, at(0));
        assert_eq!(refusals(&v, at(1), &options()), vec![]);
        assert_eq!(may_touch(&v, crate::id::Id(2), at(1), &options()), Ok(()));
        let unknown = may_touch(&v, crate::id::Id(99), at(1), &options()).unwrap_err();
        assert_eq!(kinds(&unknown), vec![RefusalKind::UnknownMember]);
    }

    #[test]
    fn a_member_down_refuses_naming_it_and_the_lost_tolerance() {
        let (_, mut probes) = three();
        probes[2] = down(2);
        let v = view::build("prod", &probes, at(0));
        let r = refusals(&v, at(1), &options());
        assert_eq!(
            kinds(&r),
            vec![RefusalKind::Quorum, RefusalKind::MemberUnhealthy]
        );
        assert_eq!(r[1].member_id, Some(crate::id::Id(3)));
        assert!(
            r[1].message.contains("m2") && r[1].message.contains("down"),
            "{}",
            r[1]
        );
        assert!(r[0].message.contains("failure tolerance 0"), "{}", r[0]);
    }

    #[test]
    fn nospace_alone_does_not_refuse_but_corrupt_does() {
        let (_, mut probes) = three();
        let alarm = |kind: &str| Alarm {
            member_id: crate::id::Id(1),
            kind: kind.into(),
        };
        for p in &mut probes {
            p.alarms = Ok(vec![alarm("NOSPACE")]);
        }
        let v = view::build("prod", &probes, at(0));
        assert!(!v.healthy, "NOSPACE fails the verdict");
        assert_eq!(
            refusals(&v, at(1), &options()),
            vec![],
            "but defrag is its cure"
        );
        for p in &mut probes {
            p.alarms = Ok(vec![alarm("CORRUPT")]);
        }
        let v = view::build("prod", &probes, at(0));
        let r = kinds(&refusals(&v, at(1), &options()));
        assert!(
            r.contains(&RefusalKind::MemberUnhealthy) && r.contains(&RefusalKind::Alarm),
            "{r:?}"
        );
        // A CORRUPT alarm on a member no longer in the list still stops writes: refused all the same.
        for p in &mut probes {
            p.alarms = Ok(vec![Alarm {
                member_id: crate::id::Id(99),
                kind: "CORRUPT".into(),
            }]);
        }
        let v = view::build("prod", &probes, at(0));
        let r = refusals(&v, at(1), &options());
        assert_eq!(kinds(&r), vec![RefusalKind::Alarm], "{r:?}");
        assert!(r[0].message.contains("not in the member list"), "{}", r[0]);
    }

    #[test]
    fn an_old_or_interim_view_is_no_ground_for_maintenance() {
        let (_, mut probes) = three();
        let v = view::build("prod", &probes, at(0));
        let r = refusals(&v, at(60), &options());
        assert_eq!(kinds(&r), vec![RefusalKind::ViewStale]);
        assert!(r[0].message.contains("1m"), "{}", r[0]);
        probes[1].stale = true;
        let v = view::build("prod", &probes, at(0));
        assert_eq!(
            kinds(&refusals(&v, at(1), &options())),
            vec![RefusalKind::ViewStale]
        );
    }

    #[test]
    fn no_leader_and_single_members_are_refused() {
        let (members, _) = three();
        let probes: Vec<_> = (0..3)
            .map(|i| {
                read_failed(
                    i,
                    &members,
                    0,
                    err(FailureKind::NoLeader, "etcdserver: no leader"),
                )
            })
            .collect();
        let v = view::build("prod", &probes, at(0));
        assert!(kinds(&refusals(&v, at(1), &options())).contains(&RefusalKind::NoLeader));

        let one = vec![member(0)];
        let v = view::build("dev", &[healthy_probe(0, &one, 0)], at(0));
        assert_eq!(
            kinds(&refusals(&v, at(1), &options())),
            vec![RefusalKind::SingleMember]
        );
        let allowed = GateOptions {
            allow_single_member: true,
            ..options()
        };
        assert_eq!(refusals(&v, at(1), &allowed), vec![]);
    }

    use crate::view::FailureKind;
}
