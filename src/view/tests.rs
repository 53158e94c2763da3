use super::*;
use crate::testing::*;

fn kinds(view: &ClusterView) -> Vec<WarningKind> {
    view.warnings.iter().map(|w| w.kind).collect()
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
            voting_members: 3,
            healthy_voting_members: 3,
            quorum_size: 2,
            failure_tolerance: 1,
            has_quorum: true
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
    assert_eq!(v.quorum.failure_tolerance, 0);
    assert!(v.quorum.has_quorum);
    let e = &v.endpoints[2];
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
    probes[0].health = Err("context deadline exceeded".into());
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(!v.healthy);
    // The survivor answers and still names itself leader, but one voter of three is no quorum.
    assert_eq!(v.quorum.healthy_voting_members, 1);
    assert_eq!(v.quorum.failure_tolerance, -1);
    assert!(!v.quorum.has_quorum);
    assert!(v.has_warning(WarningKind::QuorumLost));
}

#[test]
fn survivors_of_a_dead_leader_still_count_towards_quorum() {
    let (_, mut probes) = three();
    // The leader (m0) died; the followers still name it and their reads fail while they elect a new one.
    probes[0] = down(0);
    probes[1].health = Err("etcdserver: leader changed".into());
    probes[2].health = Err("etcdserver: leader changed".into());
    let v = build("prod", &probes, UNIX_EPOCH);
    assert!(!v.healthy, "reads fail right now");
    assert_eq!(v.quorum.healthy_voting_members, 2);
    assert!(v.quorum.has_quorum);
    assert_eq!(v.quorum.failure_tolerance, 0);
    assert!(!v.has_warning(WarningKind::QuorumLost));
}

#[test]
fn nothing_reachable_is_unhealthy_without_panicking() {
    let v = build("prod", &[down(0), down(1)], UNIX_EPOCH);
    assert!(!v.healthy);
    assert!(v.members.is_empty());
    assert!(!v.quorum.has_quorum);
    assert!(v.has_warning(WarningKind::NoLeader));
}

#[test]
fn partial_probe_trusts_the_linearizable_read_for_quorum() {
    let (_, probes) = three();
    let v = build("prod", &probes[..1], UNIX_EPOCH);
    assert!(v.quorum.has_quorum, "a linearizable read succeeded");
    assert!(v.healthy);
    assert_eq!(
        v.warnings
            .iter()
            .filter(|w| w.kind == WarningKind::MemberNotProbed)
            .count(),
        2
    );
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
    assert_eq!(
        v.warnings
            .iter()
            .filter(|w| w.kind == WarningKind::Alarm)
            .count(),
        2
    );
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
    assert_eq!(v.quorum.failure_tolerance, 0);
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
    probes[1].metrics = Err("connection reset".into());
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
    let slow = build_with("prod", &probes, UNIX_EPOCH, &strict);
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
