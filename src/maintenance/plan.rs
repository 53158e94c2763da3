//! In which order a rolling operation touches the members (pure): learners, then followers, then the leader
//! last, so that the cluster changes leader at most once and only at the end (or not at all, when leadership is
//! handed to a member already done).

use serde::Serialize;

use crate::id::Id;
use crate::view::ClusterView;

/// One member in the order, with the role that put it there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub member_id: Id,
    pub member: String,
    pub role: &'static str,
}

/// Learners first (they serve no one's quorum), then followers, then the leader; by name within each group, so
/// the order is the same from one view to the next. Members not started are left out: there is nothing to touch.
pub fn rolling_order(view: &ClusterView) -> Vec<Step> {
    let mut members: Vec<_> = view.members.iter().filter(|m| m.started).collect();
    let rank = |is_learner: bool, id: Id| match (is_learner, Some(id) == view.leader_id) {
        (true, _) => 0,
        (false, false) => 1,
        (false, true) => 2,
    };
    members.sort_by(|a, b| {
        (rank(a.is_learner, a.id), &a.name, a.id).cmp(&(rank(b.is_learner, b.id), &b.name, b.id))
    });
    members
        .into_iter()
        .map(|m| Step {
            member_id: m.id,
            member: m.display_name(),
            role: match rank(m.is_learner, m.id) {
                0 => "learner",
                1 => "follower",
                _ => "leader",
            },
        })
        .collect()
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
        let order: Vec<(String, &str)> = rolling_order(&v)
            .into_iter()
            .map(|s| (s.member, s.role))
            .collect();
        assert_eq!(
            order,
            vec![
                ("m0".to_string(), "follower"),
                ("m2".to_string(), "follower"),
                ("m1".to_string(), "leader")
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
