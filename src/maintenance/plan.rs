//! In which order a rolling operation touches the members (pure): learners, then followers, then the leader
//! last, so that the cluster changes leader at most once and only at the end (or not at all, when leadership is
//! handed to a member already done).

use serde::Serialize;

use crate::id::Id;
use crate::names::serialize_as_name;
use crate::view::ClusterView;

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
