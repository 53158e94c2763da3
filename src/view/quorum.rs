//! Quorum arithmetic over the endpoints of one view (pure).

use std::collections::BTreeSet;

use super::{Alarm, EndpointState, Member, Quorum};
use crate::id::Id;

/// Counts quorum over voting members (learners do not vote; a member added but not started already does).
///
/// A voter counts as healthy when it served a linearizable read, or when it answers and follows the cluster's
/// leader: during an election the reads fail for a moment, yet the surviving voters are still a quorum. An
/// isolated member drops its leader and stops counting.
pub(super) fn count(
    members: &[Member],
    endpoints: &[EndpointState],
    cluster_id: Option<Id>,
    leader_id: Option<Id>,
) -> Quorum {
    let ours = || {
        endpoints
            .iter()
            .filter(move |e| e.cluster_id.is_none() || e.cluster_id == cluster_id)
    };
    let healthy_ids: BTreeSet<Id> = ours()
        .filter(|e| {
            let follows_leader = leader_id.is_some() && e.leader_id == leader_id;
            let blocked = e.alarms.iter().any(|a| Alarm::blocks_member(a));
            e.healthy || (follows_leader && !blocked)
        })
        .filter_map(|e| e.member_id)
        .collect();
    let probed_ids: BTreeSet<Id> = ours().filter_map(|e| e.member_id).collect();

    let voting: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voting = voting
        .iter()
        .filter(|m| healthy_ids.contains(&m.id))
        .count();
    let quorum_size = voting.len() / 2 + 1;
    let failure_tolerance = healthy_voting as i64 - quorum_size as i64;
    let all_voters_probed = voting.iter().all(|m| probed_ids.contains(&m.id));
    // Not every voter probed (--endpoints naming only some): a linearizable read succeeded somewhere, and etcd
    // serves one only with a quorum behind its leader.
    let any_linearizable_read = ours().any(|e| e.healthy);
    let has_quorum = !voting.is_empty()
        && (failure_tolerance >= 0 || (!all_voters_probed && any_linearizable_read));
    Quorum {
        voting_members: voting.len(),
        healthy_voting_members: healthy_voting,
        quorum_size,
        failure_tolerance,
        has_quorum,
    }
}
