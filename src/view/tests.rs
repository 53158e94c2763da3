use super::*;
use crate::testing::*;
use std::time::UNIX_EPOCH;

fn kinds(view: &ClusterView) -> Vec<WarningKind> {
    view.warnings.iter().map(|w| w.kind).collect()
}

/// The view's warnings of one kind.
fn warnings_of(view: &ClusterView, kind: WarningKind) -> Vec<&Warning> {
    view.warnings.iter().filter(|w| w.kind == kind).collect()
}

#[test]
fn healthy_three_member_cluster() {
    let (_, probes) = three();
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(v.healthy, "{:?}", v.warnings);
    assert_eq!(v.cluster_id, Some(CLUSTER));
    assert_eq!(v.leader_id, Some(Id(1)));
    assert_eq!(
        v.quorum,
        Quorum {
            state: QuorumState::Ok,
            voting_members: 3,
            healthy_voting_members: 3,
            quorum_size: 2,
            failure_tolerance: Some(1),
            has_quorum: Some(true)
        }
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let e2 = &v.endpoints[2];
    assert_eq!(e2.raft_index_lag, Some(2));
    assert_eq!(e2.db_fragmented_bytes, Some(400));
    assert_eq!(e2.db_quota_bytes, Some(4000));
    assert_eq!(e2.db_quota_usage, Some(0.25));
    assert_eq!(e2.member_name.as_deref(), Some("m2"));
    assert!(v.endpoints[0].is_leader && !e2.is_leader);
}

#[test]
fn one_member_down_leaves_no_failure_tolerance() {
    let (_, mut probes) = three();
    probes[2] = down(2);
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(!v.healthy);
    assert_eq!(v.quorum.healthy_voting_members, 2);
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    assert_eq!(v.quorum.state, QuorumState::AtRisk);
    let e = &v.endpoints[2];
    assert_eq!(e.state, EndpointHealth::Unreachable);
    assert!(!e.healthy);
    assert_eq!(e.error.as_deref(), Some("connection refused"));
    // Even unreachable, the endpoint is known to be member m2 from the member list.
    assert_eq!(e.member_name.as_deref(), Some("m2"));
    let k = kinds(&v);
    assert!(k.contains(&WarningKind::QuorumAtRisk) && k.contains(&WarningKind::MemberUnhealthy));
    assert!(
        !k.contains(&WarningKind::MetricsUnreadable),
        "no second warning for a dead member"
    );
}

#[test]
fn two_of_three_down_loses_quorum() {
    let (_, mut probes) = three();
    probes[1] = down(1);
    probes[2] = down(2);
    // The survivor still believes in its leader but its linearizable read times out.
    probes[0].health = Err(err(FailureKind::Timeout, "timed out after 5s"));
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(!v.healthy);
    // The survivor answers and still names itself leader, but one voter of three is no quorum.
    assert_eq!(v.quorum.healthy_voting_members, 1);
    assert_eq!(v.quorum.failure_tolerance, Some(-1));
    assert_eq!(v.quorum.state, QuorumState::Lost);
    assert!(v.has_warning(WarningKind::QuorumLost));
    assert!(
        !v.has_warning(WarningKind::LeaderElection),
        "no election without quorum"
    );
}

#[test]
fn survivors_of_a_dead_leader_still_count_towards_quorum() {
    let (_, mut probes) = three();
    // The leader (m0) died; the followers still name it and their reads fail while they elect a new one.
    probes[0] = down(0);
    probes[1].health = Err(err(FailureKind::NoLeader, "etcdserver: leader changed"));
    probes[2].health = Err(err(FailureKind::NoLeader, "etcdserver: leader changed"));
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(!v.healthy, "no leader right now");
    assert_eq!(v.leader_id, None, "the leader they name does not answer");
    assert!(!v.endpoints[0].is_leader);
    assert_eq!(v.quorum.healthy_voting_members, 2);
    assert_eq!(v.quorum.has_quorum, Some(true));
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    // The survivors are not sick: the cluster is electing.
    for e in &v.endpoints[1..] {
        assert!(e.healthy, "{e:?}");
        assert_eq!(e.state, EndpointHealth::NoLeader);
    }
    let k = kinds(&v);
    assert!(k.contains(&WarningKind::NoLeader) && k.contains(&WarningKind::LeaderElection));
    assert_eq!(
        warnings_of(&v, WarningKind::MemberUnhealthy).len(),
        1,
        "only the dead leader: {:?}",
        v.warnings
    );
    assert!(!k.contains(&WarningKind::QuorumLost));
}

#[test]
fn nothing_reachable_is_unhealthy_without_panicking() {
    let v = build("prod", &[down(0), down(1)], UNIX_EPOCH);
    assert!(!v.healthy);
    assert!(v.members.is_empty());
    // Nothing ever answered: a typo'd endpoint list looks the same. Unknown, not lost.
    assert_eq!(v.quorum.has_quorum, None);
    assert_eq!(v.quorum.state, QuorumState::Unknown);
    assert!(!v.has_warning(WarningKind::QuorumLost));
    assert!(v.has_warning(WarningKind::NoLeader));
}

#[test]
fn partial_probe_trusts_the_linearizable_read_for_quorum() {
    let (_, probes) = three();
    let v = build("prod", &probes[..1], UNIX_EPOCH);
    assert_eq!(
        v.quorum.has_quorum,
        Some(true),
        "a linearizable read succeeded"
    );
    assert_eq!(
        v.quorum.failure_tolerance, None,
        "two voters not probed: tolerance unknown, not negative"
    );
    assert!(v.healthy);
    assert_eq!(warnings_of(&v, WarningKind::MemberNotProbed).len(), 2);
}

#[test]
fn endpoint_of_another_cluster_is_flagged_not_merged() {
    let (members, mut probes) = three();
    let mut stranger = healthy_probe(3, &members, 3);
    if let Ok(s) = &mut stranger.status {
        s.cluster_id = Id(0xdead);
        s.member_id = Id(99);
        s.leader = Id(99);
    }
    probes.push(stranger);
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.cluster_id, Some(CLUSTER));
    assert_eq!(v.leader_id, Some(Id(1)));
    assert_eq!(v.quorum.voting_members, 3);
    assert_eq!(v.quorum.healthy_voting_members, 3);
    let foreign = &v.endpoints[3];
    assert!(!foreign.healthy && !foreign.is_leader);
    assert!(
        foreign
            .error
            .as_deref()
            .unwrap()
            .contains("000000000000dead")
    );
    assert!(v.has_warning(WarningKind::ForeignCluster));
    assert!(
        !v.has_warning(WarningKind::LeaderDisagreement),
        "the stranger's leader is not ours"
    );
    assert!(!v.healthy);
}

#[test]
fn members_disagreeing_about_the_leader_are_flagged() {
    let (members, mut probes) = three();
    probes[2] = healthy_probe(2, &members, 2);
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.leader_id, Some(Id(1)), "the majority's leader");
    assert!(v.has_warning(WarningKind::LeaderDisagreement));
}

#[test]
fn nospace_alarm_is_shown_but_corrupt_makes_the_member_unhealthy() {
    let (_, mut probes) = three();
    for p in &mut probes {
        p.alarms = Ok(vec![
            Alarm {
                member_id: Id(2),
                kind: "NOSPACE".into(),
            },
            Alarm {
                member_id: Id(3),
                kind: "CORRUPT".into(),
            },
        ]);
    }
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.endpoints[1].alarms, vec!["NOSPACE".to_string()]);
    assert!(
        v.endpoints[1].healthy,
        "NOSPACE alone does not make a member unhealthy"
    );
    assert!(
        !v.healthy,
        "but the cluster refuses writes: the verdict fails"
    );
    assert!(!v.endpoints[2].healthy);
    assert!(v.endpoints[2].error.as_deref().unwrap().contains("CORRUPT"));
    assert_eq!(warnings_of(&v, WarningKind::Alarm).len(), 2);
}

#[test]
fn learner_and_unstarted_member() {
    let (mut members, _) = three();
    members.push(Member::new(
        Id(4),
        String::new(),
        vec!["http://127.0.0.1:2410".into()],
        vec![],
        false,
    ));
    let mut learner = member(4);
    learner.id = Id(5);
    learner.is_learner = true;
    members.push(learner);
    let probes: Vec<ProbeResult> = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
    let v = build("prod", &probes, UNIX_EPOCH);
    // The unstarted voter already counts: 4 voting members, quorum 3.
    assert_eq!(v.quorum.voting_members, 4);
    assert_eq!(v.quorum.quorum_size, 3);
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    assert!(!v.members.iter().find(|m| m.id == Id(4)).unwrap().started);
    assert!(
        !v.members.last().unwrap().started,
        "unstarted members are listed last"
    );
    let k = kinds(&v);
    for kind in [
        WarningKind::MemberNotStarted,
        WarningKind::LearnerPresent,
        WarningKind::EvenVotingMembers,
        WarningKind::MemberNotProbed,
        // The same definition as the event: one more failure and 2 of 4 are left.
        WarningKind::QuorumAtRisk,
    ] {
        assert!(k.contains(&kind), "missing {kind:?} in {k:?}");
    }
}

#[test]
fn quota_from_status_wins_over_metrics_and_version_skew_is_flagged() {
    let (_, mut probes) = three();
    if let Ok(s) = &mut probes[0].status {
        s.db_quota = Some(8000);
        s.version = "3.5.9".into();
    }
    probes[1].metrics = Err(err(FailureKind::Unreachable, "connection reset"));
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.endpoints[0].db_quota_bytes, Some(8000));
    assert_eq!(v.endpoints[1].db_quota_bytes, None);
    assert!(
        v.endpoints[1].healthy,
        "unreadable metrics do not fail the health probe"
    );
    assert!(v.has_warning(WarningKind::VersionSkew));
    assert!(v.has_warning(WarningKind::MetricsUnreadable));
}

#[test]
fn json_uses_the_documented_keys() {
    let (_, probes) = three();
    let json = serde_json::to_value(build("prod", &probes, UNIX_EPOCH)).unwrap();
    for key in [
        "cluster_id",
        "leader_id",
        "members",
        "endpoints",
        "quorum",
        "warnings",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["leader_id"], "0000000000000001");
    let e = &json["endpoints"][0];
    for key in [
        "endpoint",
        "member_id",
        "healthy",
        "error",
        "is_leader",
        "raft_term",
        "raft_index",
        "raft_applied_index",
        "raft_index_lag",
        "db_size_bytes",
        "db_size_in_use_bytes",
        "db_quota_bytes",
        "version",
        "is_learner",
        "alarms",
        "probe_seconds",
        "peer_rtt_seconds",
    ] {
        assert!(e.get(key).is_some(), "missing endpoints[].{key}");
    }
    for key in [
        "id",
        "name",
        "peer_urls",
        "client_urls",
        "is_learner",
        "started",
    ] {
        assert!(
            json["members"][0].get(key).is_some(),
            "missing members[].{key}"
        );
    }
    for key in [
        "voting_members",
        "healthy_voting_members",
        "quorum_size",
        "failure_tolerance",
    ] {
        assert!(json["quorum"].get(key).is_some(), "missing quorum.{key}");
    }
}

fn recorded_vitals() -> crate::vitals::Vitals {
    use crate::etcd::member_metrics::parse;
    let before = parse(include_str!(
        "../../tests/fixtures/etcd-3.4-metrics-before.txt"
    ))
    .unwrap();
    let after = parse(include_str!(
        "../../tests/fixtures/etcd-3.4-metrics-after.txt"
    ))
    .unwrap();
    crate::vitals::derive(&after, Some((&before, 10.0)))
}

fn with_vitals(vitals: crate::vitals::Vitals) -> Vec<ProbeResult> {
    let (_, mut probes) = three();
    if let Ok(m) = &mut probes[1].metrics {
        m.vitals = vitals;
    }
    probes
}

#[test]
fn recorded_etcd_latencies_against_thresholds() {
    let probes = with_vitals(recorded_vitals());
    let fine = build("prod", &probes, UNIX_EPOCH);
    for kind in [
        WarningKind::SlowWalFsync,
        WarningKind::SlowBackendCommit,
        WarningKind::FdsNearLimit,
    ] {
        assert!(
            !fine.has_warning(kind),
            "{kind:?} with etcd's thresholds on a fast disk"
        );
    }
    // The same real readings against thresholds below what that disk did.
    let strict = Thresholds {
        wal_fsync_p99_seconds: 0.000_01,
        backend_commit_p99_seconds: 0.000_01,
        open_fds_ratio: 0.001,
        ..Thresholds::default()
    };
    let context = BuildContext {
        thresholds: strict,
        ..BuildContext::default()
    };
    let slow = build_with("prod", &probes, UNIX_EPOCH, &context);
    for kind in [
        WarningKind::SlowWalFsync,
        WarningKind::SlowBackendCommit,
        WarningKind::FdsNearLimit,
    ] {
        let w = slow
            .warnings
            .iter()
            .find(|w| w.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?}"));
        assert_eq!(w.member_id, Some(Id(2)), "about m1");
    }
    let fsync = slow
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::SlowWalFsync)
        .unwrap();
    assert!(
        fsync.message.contains("m1") && fsync.message.contains("300 fsyncs"),
        "{}",
        fsync.message
    );
    assert!(
        slow.healthy,
        "slow disks warn; they do not fail the health verdict"
    );
}

#[test]
fn pending_backlog_and_apply_lag() {
    let mut v = recorded_vitals();
    v.proposals_pending = Some(150.0);
    v.proposals_pending_before = Some(120.0);
    v.proposals_apply_gap = Some(1200.0);
    let view = build("prod", &with_vitals(v.clone()), UNIX_EPOCH);
    assert!(view.has_warning(WarningKind::ProposalsPendingGrowing));
    assert!(view.has_warning(WarningKind::ApplyLag));
    // A large but shrinking backlog is recovering, not growing.
    v.proposals_pending_before = Some(400.0);
    v.proposals_apply_gap = Some(10.0);
    let view = build("prod", &with_vitals(v), UNIX_EPOCH);
    assert!(!view.has_warning(WarningKind::ProposalsPendingGrowing));
    assert!(!view.has_warning(WarningKind::ApplyLag));
}

#[test]
fn refused_credentials_are_not_health_and_never_quorum_lost() {
    let (members, probes) = three();
    // The password was refused; the probe fell back to what etcd tells anyone, and it is all fine.
    let refused: Vec<ProbeResult> = probes
        .iter()
        .map(|p| ProbeResult {
            auth_error: Some(err(
                FailureKind::Auth,
                "authentication as \"root\" failed: etcdserver: authentication failed, invalid user ID or password",
            )),
            ..p.clone()
        })
        .collect();
    let v = build("prod", &refused, UNIX_EPOCH);
    assert!(!v.healthy, "the sentinel cannot do its work");
    assert_eq!(v.quorum.state, QuorumState::Ok);
    assert_eq!(v.quorum.failure_tolerance, Some(1));
    assert_eq!(v.leader_id, Some(Id(1)));
    let k = kinds(&v);
    assert!(k.contains(&WarningKind::AuthFailed), "{k:?}");
    for bad in [
        WarningKind::QuorumLost,
        WarningKind::NoLeader,
        WarningKind::MemberUnhealthy,
    ] {
        assert!(!k.contains(&bad), "{bad:?} in {k:?}");
    }

    // A refused client certificate: nothing answers at all. Unknown, not lost.
    let cert = err(
        FailureKind::Auth,
        "TLS: received fatal alert: BadCertificate (the server refused our client certificate)",
    );
    let nothing: Vec<ProbeResult> = (0..3)
        .map(|i| ProbeResult::unreachable(ep(i), cert.clone(), 0.01))
        .collect();
    let v = build("prod", &nothing, UNIX_EPOCH);
    assert_eq!(v.quorum.state, QuorumState::Unknown);
    assert_eq!(v.quorum.has_quorum, None);
    assert_eq!(v.quorum.failure_tolerance, None);
    let k = kinds(&v);
    assert!(k.contains(&WarningKind::AuthFailed), "{k:?}");
    assert!(!k.contains(&WarningKind::QuorumLost), "{k:?}");
    assert!(
        v.endpoints
            .iter()
            .all(|e| e.state == EndpointHealth::AuthFailed)
    );
    // With the membership known from before, the refused voters are unknown, not down.
    let context = BuildContext {
        known_members: members,
        ..BuildContext::default()
    };
    let v = build_with("prod", &nothing, UNIX_EPOCH, &context);
    assert_eq!(v.quorum.state, QuorumState::Unknown);
    assert_eq!(v.quorum.voting_members, 3);
}

#[test]
fn a_total_outage_keeps_the_last_membership() {
    let (members, _) = three();
    let context = BuildContext {
        known_members: members,
        ..BuildContext::default()
    };
    let v = build_with("prod", &[down(0), down(1), down(2)], UNIX_EPOCH, &context);
    assert!(v.members_stale);
    assert_eq!(v.members.len(), 3);
    assert_eq!(v.quorum.voting_members, 3);
    assert_eq!(v.quorum.quorum_size, 2);
    assert_eq!(
        v.quorum.failure_tolerance,
        Some(-2),
        "as negative as the facts say"
    );
    assert_eq!(v.quorum.state, QuorumState::Lost);
    assert_eq!(v.endpoints[1].member_name.as_deref(), Some("m1"));
    assert!(v.has_warning(WarningKind::QuorumLost));
}

#[test]
fn an_interim_view_shows_a_dead_leader_at_once_and_a_partition_is_no_election() {
    let (members, probes) = three();
    // The leader's own probe failed this poll; the followers' probes still run, so their rows are the last ones.
    let mut interim = probes.clone();
    interim[0] = down(0);
    for p in &mut interim[1..] {
        p.stale = true;
    }
    let v = build("prod", &interim, UNIX_EPOCH);
    assert_eq!(v.leader_id, None);
    assert!(v.endpoints[1].stale && !v.endpoints[0].stale);
    assert!(v.has_warning(WarningKind::LeaderElection));

    // Only the sentinel cannot reach the leader: followers that served a read this poll still name it.
    let mut partition = probes.clone();
    partition[0] = down(0);
    let v = build("prod", &partition, UNIX_EPOCH);
    assert_eq!(v.leader_id, Some(Id(1)));
    assert!(!v.has_warning(WarningKind::NoLeader));

    // The followers elected m1 and say so.
    let elected: Vec<ProbeResult> = (0..3)
        .map(|i| {
            if i == 0 {
                down(0)
            } else {
                healthy_probe(i, &members, 1)
            }
        })
        .collect();
    let v = build("prod", &elected, UNIX_EPOCH);
    assert_eq!(v.leader_id, Some(Id(2)));
    assert!(v.endpoints[1].is_leader);
}

#[test]
fn a_single_voter_has_no_tolerance_by_design_and_is_not_at_risk() {
    let members = vec![member(0)];
    let v = build("dev", &[healthy_probe(0, &members, 0)], UNIX_EPOCH);
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    assert_eq!(v.quorum.state, QuorumState::Ok);
    assert!(!v.has_warning(WarningKind::QuorumAtRisk));
    assert!(v.healthy);
}

#[test]
fn a_member_cut_off_from_a_cluster_that_has_a_leader_is_isolated_not_electing() {
    let (members, mut probes) = three();
    // m2 lost its peers: it knows no leader and its read ran out of time, while m0 leads m1.
    probes[2] = read_failed(
        2,
        &members,
        0,
        err(FailureKind::Timeout, "timed out after 5s"),
    );
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.leader_id, Some(Id(1)));
    let e = &v.endpoints[2];
    assert!(!e.healthy, "{e:?}");
    assert_eq!(e.state, EndpointHealth::Unhealthy);
    assert!(e.error.as_deref().unwrap().contains("isolated"), "{e:?}");
    assert_eq!(v.quorum.failure_tolerance, Some(0));
    assert_eq!(v.quorum.state, QuorumState::AtRisk);
    assert!(!v.healthy);
    assert!(v.has_warning(WarningKind::MemberUnhealthy));
}

#[test]
fn a_refused_certificate_says_nothing_about_the_leader() {
    let cert = err(
        FailureKind::Auth,
        "TLS: received fatal alert: BadCertificate",
    );
    let nothing: Vec<ProbeResult> = (0..3)
        .map(|i| ProbeResult::unreachable(ep(i), cert.clone(), 0.01))
        .collect();
    let v = build("prod", &nothing, UNIX_EPOCH);
    assert!(!v.leader_known());
    let k = kinds(&v);
    assert!(
        !k.contains(&WarningKind::NoLeader) && !k.contains(&WarningKind::LeaderElection),
        "{k:?}"
    );
}

#[test]
fn alarms_that_cannot_be_read_are_kept_not_cleared() {
    let (members, mut probes) = three();
    let nospace = Alarm {
        member_id: Id(1),
        kind: "NOSPACE".into(),
    };
    // Quorum lost: only m0 answers, and AlarmList (a raft proposal) fails without a leader.
    probes[1] = down(1);
    probes[2] = down(2);
    probes[0] = read_failed(
        0,
        &members,
        0,
        err(FailureKind::NoLeader, "etcdserver: no leader"),
    );
    probes[0].alarms = Err(err(FailureKind::NoLeader, "etcdserver: no leader"));
    let context = BuildContext {
        known_alarms: Some(vec![nospace.clone()]),
        ..BuildContext::default()
    };
    let v = build_with("prod", &probes, UNIX_EPOCH, &context);
    assert!(v.alarms_stale);
    assert_eq!(v.alarms, vec![nospace]);
    assert_eq!(v.endpoints[0].alarms, vec!["NOSPACE".to_string()]);
}

#[test]
fn a_leader_partitioned_from_the_sentinel_keeps_its_place_in_interim_views() {
    let (_, probes) = three();
    let mut interim = probes.clone();
    interim[0] = down(0);
    for p in &mut interim[1..] {
        p.stale = true;
    }
    let context = BuildContext {
        unreachable_leader: Some(Id(1)),
        ..BuildContext::default()
    };
    let v = build_with("prod", &interim, UNIX_EPOCH, &context);
    assert_eq!(v.leader_id, Some(Id(1)), "no leader_lost at every poll");
    // The final view of the poll decides on this poll's reads: a dead leader is dead.
    let mut final_view = interim.clone();
    for p in &mut final_view[1..] {
        p.stale = false;
        p.health = Err(err(FailureKind::NoLeader, "etcdserver: leader changed"));
    }
    let v = build_with("prod", &final_view, UNIX_EPOCH, &context);
    assert_eq!(v.leader_id, None);
}

#[test]
fn a_read_that_timed_out_waiting_on_a_silent_leader_is_an_election() {
    let (members, mut probes) = three();
    // m0 (the leader) froze; the followers still name it and their reads ran out of a short command timeout
    // before they elected another.
    probes[0] =
        ProbeResult::unreachable(ep(0), err(FailureKind::Timeout, "timed out after 1s"), 1.0);
    for (i, p) in probes.iter_mut().enumerate().skip(1) {
        *p = read_failed(
            i,
            &members,
            1,
            err(FailureKind::Timeout, "timed out after 1s"),
        );
    }
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.leader_id, None);
    for e in &v.endpoints[1..] {
        assert_eq!(e.state, EndpointHealth::NoLeader, "{e:?}");
    }
    assert_eq!(v.quorum.state, QuorumState::AtRisk);
    assert!(v.has_warning(WarningKind::LeaderElection));
    assert!(!v.has_warning(WarningKind::QuorumLost));
}

#[test]
fn an_interim_view_names_a_dead_member_from_the_stale_rows() {
    let (_, probes) = three();
    let mut interim = probes.clone();
    interim[1] = down(1);
    for i in [0, 2] {
        interim[i].stale = true;
    }
    let v = build("prod", &interim, UNIX_EPOCH);
    assert_eq!(
        v.endpoints[1].member_name.as_deref(),
        Some("m1"),
        "{:?}",
        v.members
    );
}

#[test]
fn a_dead_member_without_client_urls_in_the_list_is_named_from_an_earlier_poll() {
    let (mut members, mut probes) = three();
    // Right after start, etcd lists a member without client URLs until it has published them.
    members[1].client_urls.clear();
    for p in &mut probes {
        p.members = Ok(members.clone());
    }
    probes[1] = down(1);
    probes[1].known_member_id = Some(Id(2));
    let v = build("prod", &probes, UNIX_EPOCH);
    assert_eq!(v.endpoints[1].member_name.as_deref(), Some("m1"));
}

/// What each member's list says: `lists[i]` is the list endpoint i answers with.
fn with_lists(lists: Vec<Vec<Member>>) -> ClusterView {
    let (_, mut probes) = three();
    for (p, list) in probes.iter_mut().zip(lists) {
        p.members = Ok(list);
    }
    build("prod", &probes, UNIX_EPOCH)
}

#[test]
fn member_lists_that_agree_are_no_drift() {
    let (members, _) = three();
    // The order of the list and of a member's URLs is not a difference.
    let mut reordered = members.clone();
    reordered.reverse();
    let v = with_lists(vec![members.clone(), reordered, members.clone()]);
    assert!(
        !v.has_warning(WarningKind::MembershipDrift),
        "{:?}",
        v.warnings
    );
    assert!(v.membership_drift.is_empty());
}

#[test]
fn a_member_that_still_lists_a_promoted_learner_is_drift() {
    // m2 lists m2 as a learner while the others list a voter: what a member reading another store says in the
    // middle of a 3.5 → 3.6 upgrade after etcd-io/etcd#19557 (3.6 reads the v3 store, where 3.5 before 3.5.20 did
    // not persist the promotion), or a member that has not applied the promotion yet.
    let (members, _) = three();
    let mut stale = members.clone();
    stale[2].is_learner = true;
    let v = with_lists(vec![members.clone(), members.clone(), stale]);
    let drift = warnings_of(&v, WarningKind::MembershipDrift);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].member_id, Some(Id(3)));
    assert!(
        drift[0]
            .message
            .contains("member m2: a learner here, a voter for the majority"),
        "{}",
        drift[0].message
    );
    assert!(
        drift[0].message.contains("2 of 3 members"),
        "{}",
        drift[0].message
    );
    // Membership drift is a warning, not a failed verdict: the cluster serves.
    assert!(v.healthy);
}

#[test]
fn missing_extra_and_changed_members_are_named() {
    let (members, _) = three();
    let mut odd = members.clone();
    odd.remove(1);
    odd[0].peer_urls = vec!["http://10.0.0.9:2380".into()];
    odd.push(Member::new(
        Id(9),
        "zombie".into(),
        vec!["http://127.0.0.1:2490".into()],
        vec!["http://127.0.0.1:2489".into()],
        false,
    ));
    let v = with_lists(vec![odd, members.clone(), members.clone()]);
    let d = &v.membership_drift;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].member_id, Some(Id(1)));
    let all = d[0].differences.join("; ");
    assert!(all.contains("lacks member m1 (0000000000000002)"), "{all}");
    assert!(
        all.contains("lists member zombie (0000000000000009) that the majority does not"),
        "{all}"
    );
    assert!(
        all.contains("member m0: peer URLs http://10.0.0.9:2380 here, http://127.0.0.1:2380"),
        "{all}"
    );
}

#[test]
fn stale_rows_are_not_compared() {
    // The last poll's list of a member still probing may predate a change the others applied.
    let (members, mut probes) = three();
    let mut old = members.clone();
    old.pop();
    probes[2].members = Ok(old);
    probes[2].stale = true;
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(
        !v.has_warning(WarningKind::MembershipDrift),
        "{:?}",
        v.warnings
    );
}

fn on_version(version: &str) -> ClusterView {
    let (_, mut probes) = three();
    for p in &mut probes {
        if let Ok(s) = &mut p.status {
            s.version = version.into();
        }
    }
    build("prod", &probes, UNIX_EPOCH)
}

#[test]
fn known_bad_versions_are_warned_of_with_the_reference() {
    let v = on_version("3.5.1");
    let bad = warnings_of(&v, WarningKind::KnownBadVersion);
    assert_eq!(bad.len(), 1, "one warning naming every member: {bad:?}");
    assert!(
        bad[0]
            .message
            .starts_with("m0 (3.5.1), m1 (3.5.1), m2 (3.5.1)"),
        "{}",
        bad[0].message
    );
    assert!(
        bad[0].message.contains("etcd-io/etcd/issues/13766"),
        "{}",
        bad[0].message
    );
    let upgrade = warnings_of(&v, WarningKind::UpgradeNotReady).len();
    assert_eq!(
        upgrade, 2,
        "the learner and the zombie problems: {:?}",
        v.warnings
    );
    // A known-bad version is a warning: the cluster still serves.
    assert!(v.healthy);

    let fine = on_version("3.5.26");
    assert!(
        !fine.has_warning(WarningKind::KnownBadVersion)
            && !fine.has_warning(WarningKind::UpgradeNotReady),
        "{:?}",
        fine.warnings
    );
}

#[test]
fn an_inconsistency_fails_the_verdict_and_names_the_member() {
    let (_, probes) = three();
    let context = BuildContext {
        consistency: Some(hashed(&[7, 7, 8])),
        ..BuildContext::default()
    };
    let v = build_with("prod", &probes, UNIX_EPOCH, &context);
    assert!(
        !v.healthy,
        "members that hold different data are not a healthy cluster"
    );
    let w = warnings_of(&v, WarningKind::DataInconsistent);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].member_id, Some(Id(3)));
    assert!(
        w[0].message.starts_with("member m2 holds different data"),
        "{}",
        w[0].message
    );

    // Consistent, or unknown: the verdict is the poll's.
    let mut v = build("prod", &probes, UNIX_EPOCH);
    v.attach_consistency(hashed(&[7, 7, 7]), &Thresholds::default());
    assert!(v.healthy && !v.has_warning(WarningKind::DataInconsistent));
    v.attach_consistency(hashed(&[7, 9]), &Thresholds::default());
    assert!(!v.healthy, "attached later, it fails the verdict too");
    // And a later agreement gives the poll's verdict back (no reason left to fail it).
    v.attach_consistency(hashed(&[7, 7, 7]), &Thresholds::default());
    assert!(v.healthy, "{:?}", v.warnings);
    assert!(!v.has_warning(WarningKind::DataInconsistent));
}

#[test]
fn a_corrupt_alarm_is_shown_beside_the_inconsistency() {
    let (_, mut probes) = three();
    for p in &mut probes {
        p.alarms = Ok(vec![Alarm {
            member_id: Id(3),
            kind: "CORRUPT".into(),
        }]);
    }
    let context = BuildContext {
        consistency: Some(hashed(&[7, 7, 8])),
        ..BuildContext::default()
    };
    let v = build_with("prod", &probes, UNIX_EPOCH, &context);
    let w = warnings_of(&v, WarningKind::DataInconsistent)[0];
    assert!(
        w.message.contains("(CORRUPT alarm active)"),
        "{}",
        w.message
    );
}

#[test]
fn without_a_majority_no_member_is_blamed() {
    let (members, mut probes) = three();
    let mut other = members.clone();
    other[0].is_learner = true;
    probes[0].members = Ok(members.clone());
    probes[1].members = Ok(other);
    probes[2] = down(2);
    let v = build("prod", &probes, UNIX_EPOCH);
    let drift = warnings_of(&v, WarningKind::MembershipDrift);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        drift[0].member_id, None,
        "one against one: neither is the odd one"
    );
    assert!(
        drift[0].message.contains("none held by a majority"),
        "{}",
        drift[0].message
    );
    assert!(
        drift[0]
            .message
            .contains("m1 (0000000000000002) against m0 (0000000000000001)"),
        "{}",
        drift[0].message
    );
}
