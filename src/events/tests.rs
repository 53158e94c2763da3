use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::testing::*;
use crate::view::{self, FailureKind, ProbeResult};

fn view_of(probes: &[ProbeResult], at_secs: u64) -> ClusterView {
    view::build("prod", probes, UNIX_EPOCH + Duration::from_secs(at_secs))
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

#[test]
fn nothing_changed_no_events() {
    let (_, probes) = three();
    assert!(diff(&view_of(&probes, 1), &view_of(&probes, 2)).is_empty());
}

#[test]
fn member_down_then_back_up() {
    let (_, healthy) = three();
    let mut one_down = healthy.clone();
    one_down[2] = down(2);
    let a = view_of(&healthy, 1);
    let b = view_of(&one_down, 2);
    let c = view_of(&healthy, 3);
    let down_events = diff(&a, &b);
    assert_eq!(
        kinds(&down_events),
        vec![EventKind::MemberUnhealthy, EventKind::QuorumAtRisk]
    );
    assert_eq!(down_events[0].member_id, Some(crate::id::Id(3)));
    assert!(
        down_events[0].message.contains("m2")
            && down_events[0].message.contains("connection refused")
    );
    assert_eq!(down_events[0].time, UNIX_EPOCH + Duration::from_secs(2));
    // Back to a tolerance of one; "restored" is kept for a quorum that was lost.
    assert_eq!(
        kinds(&diff(&b, &c)),
        vec![EventKind::MemberHealthy, EventKind::QuorumHealthy]
    );
}

#[test]
fn leader_change_names_old_new_and_term() {
    let (members, before) = three();
    let after: Vec<ProbeResult> = (0..3)
        .map(|i| {
            let mut p = healthy_probe(i, &members, 1);
            if let Ok(s) = &mut p.status {
                s.raft_term = 3;
            }
            p
        })
        .collect();
    let events = diff(&view_of(&before, 1), &view_of(&after, 2));
    assert_eq!(kinds(&events), vec![EventKind::LeaderChanged]);
    assert_eq!(events[0].message, "leader changed from m0 to m1 (term 3)");
}

#[test]
fn quorum_lost_and_restored() {
    let (_, healthy) = three();
    let mut lost = healthy.clone();
    lost[1] = down(1);
    lost[2] = down(2);
    lost[0].health = Err(err(FailureKind::Timeout, "timed out after 5s"));
    if let Ok(s) = &mut lost[0].status {
        s.leader = crate::id::Id(0);
    }
    let events = diff(&view_of(&healthy, 1), &view_of(&lost, 2));
    assert!(
        kinds(&events).contains(&EventKind::QuorumLost),
        "{events:?}"
    );
    assert!(
        kinds(&events).contains(&EventKind::LeaderLost),
        "{events:?}"
    );
    let back = diff(&view_of(&lost, 2), &view_of(&healthy, 3));
    assert!(
        kinds(&back).contains(&EventKind::QuorumRestored),
        "{back:?}"
    );
}

#[test]
fn membership_and_alarm_changes() {
    let (mut members, before) = three();
    let mut learner = member(3);
    learner.is_learner = true;
    members.push(learner.clone());
    let mut with_learner: Vec<ProbeResult> =
        (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
    let added = diff(&view_of(&before, 1), &view_of(&with_learner, 2));
    assert_eq!(kinds(&added), vec![EventKind::MemberAdded]);
    assert!(added[0].message.contains("learner"));

    members[3].is_learner = false;
    let promoted: Vec<ProbeResult> = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
    let events = diff(&view_of(&with_learner, 2), &view_of(&promoted, 3));
    assert!(
        kinds(&events).contains(&EventKind::MemberPromoted),
        "{events:?}"
    );

    for p in &mut with_learner {
        p.alarms = Ok(vec![Alarm {
            member_id: crate::id::Id(1),
            kind: "NOSPACE".into(),
        }]);
    }
    let (_, plain) = three();
    let raised = diff(&view_of(&before, 1), &view_of(&with_learner, 2));
    assert!(kinds(&raised).contains(&EventKind::AlarmRaised));
    let cleared = diff(&view_of(&with_learner, 2), &view_of(&plain, 3));
    assert!(kinds(&cleared).contains(&EventKind::AlarmCleared));
    assert!(kinds(&cleared).contains(&EventKind::MemberRemoved));
}

#[test]
fn an_unreachable_cluster_does_not_look_emptied() {
    let (_, healthy) = three();
    let mut alarmed = healthy.clone();
    for p in &mut alarmed {
        p.alarms = Ok(vec![Alarm {
            member_id: crate::id::Id(1),
            kind: "NOSPACE".into(),
        }]);
    }
    let nothing = vec![down(0), down(1), down(2)];
    let events = diff(&view_of(&alarmed, 1), &view_of(&nothing, 2));
    let k = kinds(&events);
    assert!(
        !k.contains(&EventKind::MemberRemoved) && !k.contains(&EventKind::AlarmCleared),
        "{k:?}"
    );
    assert_eq!(
        k.iter()
            .filter(|k| **k == EventKind::MemberUnhealthy)
            .count(),
        3
    );
}

#[test]
fn the_log_keeps_the_newest_events() {
    let (_, healthy) = three();
    let mut one_down = healthy.clone();
    one_down[2] = down(2);
    let mut log = EventLog::new(3);
    for i in 0..4 {
        let (a, b) = if i % 2 == 0 {
            (&healthy, &one_down)
        } else {
            (&one_down, &healthy)
        };
        log.extend(diff(&view_of(a, i), &view_of(b, i + 1)));
    }
    assert_eq!(log.len(), 3);
    let kept = log.snapshot();
    assert_eq!(kept.last().unwrap().kind, EventKind::QuorumHealthy);
    assert!(kept.windows(2).all(|w| w[0].time <= w[1].time));
}

fn arc(v: ClusterView) -> Arc<ClusterView> {
    Arc::new(v)
}

#[test]
fn the_first_view_records_the_state_found() {
    let (_, mut probes) = three();
    probes[2] = down(2);
    let mut tracker = Tracker::default();
    let first = tracker.observe(arc(view_of(&probes, 1))).events;
    assert_eq!(
        kinds(&first),
        vec![
            EventKind::WatchStarted,
            EventKind::MemberUnhealthy,
            EventKind::QuorumAtRisk
        ]
    );
    assert!(
        first[0].message.contains("leader m0 (term 2)")
            && first[0].message.contains("2 of 3 voting members healthy"),
        "{}",
        first[0].message
    );
    assert!(tracker.observe(arc(view_of(&probes, 2))).events.is_empty());
}

#[test]
fn an_election_is_lost_leader_then_elected_leader_with_its_duration() {
    let (members, healthy) = three();
    let mut tracker = Tracker::default();
    tracker.observe(arc(view_of(&healthy, 10)));

    // The leader is killed: its probe fails; the followers are electing.
    let electing: Vec<ProbeResult> = (0..3)
        .map(|i| {
            if i == 0 {
                down(0)
            } else {
                read_failed(
                    i,
                    &members,
                    0,
                    err(FailureKind::NoLeader, "etcdserver: leader changed"),
                )
            }
        })
        .collect();
    let lost = tracker.observe(arc(view_of(&electing, 11)));
    assert_eq!(
        kinds(&lost.events),
        vec![
            EventKind::LeaderLost,
            EventKind::MemberUnhealthy,
            EventKind::QuorumAtRisk
        ],
        "no survivor reported unhealthy: {:?}",
        lost.events
    );
    assert!(
        lost.events[0].message.contains("m0 (term 2)"),
        "{:?}",
        lost.events[0]
    );
    assert_eq!(lost.events[1].member_id, Some(crate::id::Id(1)));

    let elected: Vec<ProbeResult> = (0..3)
        .map(|i| {
            let mut p = if i == 0 {
                down(0)
            } else {
                healthy_probe(i, &members, 1)
            };
            if let Ok(s) = &mut p.status {
                s.raft_term = 3;
            }
            p
        })
        .collect();
    let won = tracker.observe(arc(view_of(&elected, 13)));
    assert_eq!(kinds(&won.events), vec![EventKind::LeaderElected]);
    assert_eq!(won.leaderless_seconds, Some(2.0));
    assert_eq!(won.events[0].duration_seconds, Some(2.0));
    assert!(won.leader_changed, "m0 → none → m1 is one change");
    assert_eq!(
        won.events[0].message,
        "leader elected: m1 (term 3) after 2.00s without a leader"
    );
}

#[test]
fn quorum_restored_only_after_lost_and_auth_is_its_own_story() {
    let (_, healthy) = three();
    let mut refused = healthy.clone();
    for p in &mut refused {
        p.auth_error = Some(err(FailureKind::Auth, "authentication failed"));
    }
    let events = diff(&view_of(&healthy, 1), &view_of(&refused, 2));
    assert_eq!(kinds(&events), vec![EventKind::AuthFailed]);
    let events = diff(&view_of(&refused, 2), &view_of(&healthy, 3));
    assert_eq!(kinds(&events), vec![EventKind::AuthRestored]);
}

#[test]
fn refused_certificates_and_unreadable_alarms_invent_no_events() {
    let (_, healthy) = three();
    let cert = err(
        FailureKind::Auth,
        "TLS: received fatal alert: BadCertificate",
    );
    let nothing: Vec<ProbeResult> = (0..3)
        .map(|i| ProbeResult::unreachable(crate::testing::ep(i), cert.clone(), 0.01))
        .collect();
    let mut tracker = Tracker::default();
    tracker.observe(arc(view_of(&healthy, 1)));
    let refused = tracker.observe(arc(view_of(&nothing, 2)));
    let k = kinds(&refused.events);
    assert!(!k.contains(&EventKind::LeaderLost), "{k:?}");
    assert!(k.contains(&EventKind::AuthFailed), "{k:?}");
    let back = tracker.observe(arc(view_of(&healthy, 3)));
    assert_eq!(back.leaderless_seconds, None, "no election was timed");
    assert!(!kinds(&back.events).contains(&EventKind::LeaderElected));
}

/// The warning and the event read the same definition of "at risk": for every view, the warning is present
/// exactly when a transition into that view from a healthy one emits the event, a single voter included (it has
/// no failure tolerance by design, so neither says it is at risk).
#[test]
fn quorum_at_risk_has_one_definition_for_warnings_and_events() {
    let (members, healthy) = three();
    let mut one_down = healthy.clone();
    one_down[1] = down(1);
    let mut two_down = one_down.clone();
    two_down[2] = down(2);
    let one = vec![member(0)];
    let single = vec![healthy_probe(0, &one, 0)];
    let single_down = vec![down(0)];
    let two_members: Vec<_> = members[..2].to_vec();
    let pair = vec![
        healthy_probe(0, &two_members, 0),
        healthy_probe(1, &two_members, 0),
    ];
    let mut pair_down = pair.clone();
    pair_down[1] = down(1);
    let cases: [(&str, &[ProbeResult], &[ProbeResult], bool); 5] = [
        ("3 members, 1 down", &healthy, &one_down, true),
        (
            "3 members, 2 down (lost, not at risk)",
            &healthy,
            &two_down,
            false,
        ),
        ("a single voter", &single, &single, false),
        ("a single voter, down (lost)", &single, &single_down, false),
        ("2 members, 1 down (lost)", &pair, &pair_down, false),
    ];
    for (what, before, after, at_risk) in cases {
        let (a, b) = (view_of(before, 1), view_of(after, 2));
        let warned = b
            .warnings
            .iter()
            .any(|w| w.kind == crate::view::WarningKind::QuorumAtRisk);
        let evented = kinds(&diff(&a, &b)).contains(&EventKind::QuorumAtRisk);
        assert_eq!(warned, at_risk, "{what}: warning");
        assert_eq!(evented, at_risk, "{what}: event");
        assert_eq!(
            b.quorum.state == crate::view::QuorumState::AtRisk,
            at_risk,
            "{what}: state"
        );
    }
    // A single voter's tolerance is 0 by design: shown as such, and fine.
    let v = view_of(&single, 1);
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    assert_eq!(v.quorum.state, crate::view::QuorumState::Ok);
    assert!(v.healthy);
}

#[test]
fn a_consistency_check_is_an_event_when_its_state_changes() {
    use crate::settings::Thresholds;
    let (_, probes) = three();
    let with = |check: crate::view::Consistency, at: u64| {
        let mut v = view_of(&probes, at);
        v.attach_consistency(check, &Thresholds::default());
        v
    };
    let none = view_of(&probes, 1);
    let agree = with(hashed(&[7, 7, 7]), 2);
    assert_eq!(kinds(&diff(&none, &agree)), vec![EventKind::DataConsistent]);
    assert!(
        diff(&agree, &with(hashed(&[7, 7, 7]), 3)).is_empty(),
        "no news, no event"
    );
    let odd = diff(&agree, &with(hashed(&[7, 7, 8]), 4));
    assert_eq!(kinds(&odd), vec![EventKind::DataInconsistent]);
    assert_eq!(odd[0].member_id, Some(crate::id::Id(3)));
    assert!(EventKind::DataInconsistent.is_bad());
    assert!(
        odd[0].message.contains("KV hashes differ at revision 40"),
        "{}",
        odd[0].message
    );
    assert_eq!(
        odd[0].time,
        UNIX_EPOCH + Duration::from_secs_f64(0.2),
        "stamped when the check ended"
    );
    // A member down at the next check: unknown, an event of its own.
    let unknown = with(checked(&[Some(7), None]), 5);
    let events = diff(&with(hashed(&[7, 7, 8]), 4), &unknown);
    assert_eq!(kinds(&events), vec![EventKind::ConsistencyUnknown]);
    assert!(!EventKind::ConsistencyUnknown.is_bad());
}
