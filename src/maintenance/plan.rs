//! In which order a rolling operation touches the members (pure): learners, then followers, then the leader
//! last, so that the cluster changes leader at most once and only at the end (or not at all, when leadership is
//! handed to a member already done).

use serde::Serialize;

use crate::id::Id;
use crate::names::serialize_as_name;
use crate::view::{ClusterView, EndpointHealth, EndpointState};

/// Why a member stands where it does in the order; declared in the order they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// Serves no one's quorum: first.
    Learner,
    Follower,
    /// Last, so that leadership moves at most once, at the end.
    Leader,
}

serialize_as_name!(Role);

/// One member in the order, with the role that put it there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub member_id: Id,
    pub member: String,
    pub role: Role,
}

/// Learners first (they serve no one's quorum), then followers, then the leader; by name within each group, so
/// the order is the same from one view to the next. Members not started are left out: there is nothing to touch.
pub fn rolling_order(view: &ClusterView) -> Vec<Step> {
    let mut steps: Vec<Step> = view
        .members
        .iter()
        .filter(|m| m.started)
        .map(|m| Step {
            member_id: m.id,
            member: m.display_name(),
            role: match (m.is_learner, Some(m.id) == view.leader_id) {
                (true, _) => Role::Learner,
                (false, false) => Role::Follower,
                (false, true) => Role::Leader,
            },
        })
        .collect();
    steps.sort_by(|a, b| (a.role, &a.member, a.member_id).cmp(&(b.role, &b.member, b.member_id)));
    steps
}

/// How far behind the leader's commit index a follower's applied index may be and still count as caught up: a
/// busy cluster moves while it is read, so "equal" would rarely hold.
pub const CAUGHT_UP: u64 = 1000;

/// The member a snapshot is read from: a healthy voting follower whose applied index has caught up with the
/// leader's commit index (sparing the leader), else the leader; a learner only when it is the only member. The
/// error says why none qualifies.
pub fn snapshot_source(view: &ClusterView) -> Result<&EndpointState, String> {
    // A member the last consistency check found holding other data than the majority is never the source: a
    // backup of it would preserve the divergence and retention would drop the good ones.
    let differs = |e: &EndpointState| {
        view.data_inconsistent()
            && e.member_id
                .is_some_and(|id| view.consistency.as_ref().is_some_and(|c| c.differs(id)))
    };
    let ours = |e: &&EndpointState| {
        e.state == EndpointHealth::Healthy
            && !view.is_foreign(e)
            && e.member_id.is_some()
            && !e.stale
            && !differs(e)
    };
    let leader_index = view
        .endpoints
        .iter()
        .find(|e| e.is_leader)
        .and_then(|e| e.raft_index);
    let caught_up = |e: &&EndpointState| match (e.raft_applied_index, leader_index) {
        (Some(applied), Some(commit)) => applied + CAUGHT_UP >= commit,
        _ => false,
    };
    let healthy: Vec<&EndpointState> = view.endpoints.iter().filter(ours).collect();
    healthy
        .iter()
        .find(|e| !e.is_leader && !e.is_learner && caught_up(e))
        .or_else(|| healthy.iter().find(|e| e.is_leader))
        .or_else(|| {
            // A learner holds the data too, but only the only member is read from one.
            healthy
                .iter()
                .find(|e| e.is_learner && view.members.len() == 1)
        })
        .copied()
        .ok_or_else(|| {
            let states: Vec<String> = view
                .endpoints
                .iter()
                .map(|e| {
                    let state = if differs(e) {
                        "holding data that differs (consistency check)"
                    } else {
                        <&'static str>::from(e.state)
                    };
                    format!("{} {state}", e.endpoint)
                })
                .collect();
            format!(
                "no member to read a snapshot from: none is a healthy voting member (with the leader or caught up \
                 with it): {}",
                states.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::testing::*;
    use crate::view;

    #[test]
    fn followers_first_the_leader_last() {
        let members: Vec<_> = (0..3).map(member).collect();
        // m1 leads.
        let probes: Vec<_> = (0..3).map(|i| healthy_probe(i, &members, 1)).collect();
        let v = view::build("prod", &probes, UNIX_EPOCH);
        let order: Vec<(String, Role)> = rolling_order(&v)
            .into_iter()
            .map(|s| (s.member, s.role))
            .collect();
        assert_eq!(
            order,
            vec![
                ("m0".to_string(), Role::Follower),
                ("m2".to_string(), Role::Follower),
                ("m1".to_string(), Role::Leader)
            ]
        );
    }

    #[test]
    fn snapshots_are_read_from_a_caught_up_follower_else_the_leader_never_a_learner() {
        let members: Vec<_> = (0..3).map(member).collect();
        let probes: Vec<_> = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
        let v = view::build("prod", &probes, UNIX_EPOCH);
        let source = snapshot_source(&v).unwrap();
        assert!(
            !source.is_leader,
            "a follower spares the leader: {}",
            source.endpoint
        );
        // Followers far behind: the leader.
        let mut lagging = probes.clone();
        for p in &mut lagging[1..] {
            if let Ok(s) = &mut p.status {
                s.raft_applied_index = 1;
                s.raft_index = 1;
            }
            p.status.as_mut().unwrap().raft_index = 1;
        }
        lagging[0].status.as_mut().unwrap().raft_index = 100_000;
        let v = view::build("prod", &lagging, UNIX_EPOCH);
        assert!(snapshot_source(&v).unwrap().is_leader);
        // Nobody healthy: refused, saying why.
        let v = view::build("prod", &[down(0), down(1), down(2)], UNIX_EPOCH);
        let e = snapshot_source(&v).unwrap_err();
        assert!(
            e.contains("no member to read a snapshot from") && e.contains("unreachable"),
            "{e}"
        );
    }

    #[test]
    fn a_member_found_holding_other_data_is_never_the_snapshot_source() {
        use crate::settings::Thresholds;
        let members: Vec<_> = (0..3).map(member).collect();
        let probes: Vec<_> = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
        let mut v = view::build("prod", &probes, UNIX_EPOCH);
        // m1 would be chosen (the first caught-up follower); it is the odd one.
        v.attach_consistency(hashed(&[7, 8, 7]), &Thresholds::default());
        assert_eq!(
            snapshot_source(&v).unwrap().member_name.as_deref(),
            Some("m2")
        );
        // No majority: nobody to trust.
        v.attach_consistency(hashed(&[7, 8, 9]), &Thresholds::default());
        let e = snapshot_source(&v).unwrap_err();
        assert!(e.contains("holding data that differs"), "{e}");
    }

    #[test]
    fn learners_go_first_and_unstarted_members_are_left_out() {
        let mut members: Vec<_> = (0..3).map(member).collect();
        members[2].is_learner = true;
        let mut unstarted = member(3);
        unstarted.name.clear();
        unstarted.client_urls.clear();
        unstarted.started = false;
        members.push(unstarted);
        let probes: Vec<_> = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
        let v = view::build("prod", &probes, UNIX_EPOCH);
        let names: Vec<String> = rolling_order(&v).into_iter().map(|s| s.member).collect();
        assert_eq!(names, vec!["m2", "m1", "m0"]);
    }
}
