//! Quorum arithmetic over the endpoints of one view (pure): the one place that decides whether quorum is fine, at
//! risk, lost or unknown.

use std::collections::BTreeSet;

use super::{Alarm, EndpointHealth, EndpointState, Member, Quorum, QuorumState};
use crate::id::Id;

/// Counts quorum over voting members (learners do not vote; a member added but not started already does).
///
/// A voter counts as healthy when it served a linearizable read, failed one only for want of a leader, or
/// answers and follows the cluster's leader: during an election the reads fail for a moment, yet the surviving
/// voters are still a quorum. An isolated member drops its leader and stops counting.
///
/// A voter's state is known when its endpoint was probed and answered or failed to (refused, timed out), or when
/// it was added but never started (it certainly does not vote yet). It is unknown when no endpoint reaches it,
/// or when our credentials were refused there.
pub(super) fn count(
    members: &[Member],
    endpoints: &[EndpointState],
    cluster_id: Option<Id>,
    leader_id: Option<Id>,
) -> Quorum {
    let ours = || endpoints.iter().filter(move |e| e.answers_for(cluster_id));
    let healthy_ids: BTreeSet<Id> = ours()
        .filter(|e| {
            let follows_leader = leader_id.is_some() && e.leader_id == leader_id;
            let blocked = e.alarms.iter().any(|a| Alarm::blocks_member(a));
            e.healthy || (follows_leader && !blocked)
        })
        .filter_map(|e| e.member_id)
        .collect();
    let known_ids: BTreeSet<Id> = ours()
        .filter(|e| {
            e.state != EndpointHealth::AuthFailed
                || e.member_id.is_some_and(|id| healthy_ids.contains(&id))
        })
        .filter_map(|e| e.member_id)
        .collect();

    let voting: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voting = voting
        .iter()
        .filter(|m| healthy_ids.contains(&m.id))
        .count();
    let unknown_voting = voting
        .iter()
        .filter(|m| m.started && !known_ids.contains(&m.id))
        .count();
    let quorum_size = voting.len() / 2 + 1;
    let margin = healthy_voting as i64 - quorum_size as i64;
    // etcd serves a linearizable read only with a quorum behind its leader.
    let any_linearizable_read = ours().any(|e| e.state == EndpointHealth::Healthy);

    let (failure_tolerance, has_quorum) = if voting.is_empty() {
        // Nothing known of the membership (nothing ever answered): a typo'd endpoint list, or members all down.
        // Unknown, not lost.
        (None, None)
    } else if unknown_voting == 0 {
        (Some(margin), Some(margin >= 0))
    } else if margin >= 0 || any_linearizable_read {
        (None, Some(true))
    } else if margin + (unknown_voting as i64) < 0 {
        // Even if every voter we cannot see were healthy, there would be too few.
        (None, Some(false))
    } else {
        (None, None)
    };
    let state = match (has_quorum, failure_tolerance) {
        (None, _) => QuorumState::Unknown,
        (Some(false), _) => QuorumState::Lost,
        // A single voter has no failure tolerance by design: that is how it was built, not a risk that arose.
        (Some(true), Some(0)) if voting.len() > 1 => QuorumState::AtRisk,
        (Some(true), _) => QuorumState::Ok,
    };
    Quorum {
        state,
        voting_members: voting.len(),
        healthy_voting_members: healthy_voting,
        quorum_size,
        failure_tolerance,
        has_quorum,
    }
}
