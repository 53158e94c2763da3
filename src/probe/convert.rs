//! etcd's answers as the view's types.

use etcd_client::AlarmType;

use crate::id::Id;
use crate::view::{Alarm, FailureKind, Member, Outcome, ProbeError, StatusInfo};

pub(super) fn status_info(s: &etcd_client::StatusResponse) -> Outcome<StatusInfo> {
    let header = s
        .header()
        .ok_or_else(|| ProbeError::new(FailureKind::Other, "Status response without header"))?;
    Ok(StatusInfo {
        member_id: Id(header.member_id()),
        cluster_id: Id(header.cluster_id()),
        leader: Id(s.leader()),
        raft_term: s.raft_term(),
        raft_index: s.raft_index(),
        raft_applied_index: s.raft_applied_index(),
        revision: header.revision(),
        db_size: s.db_size().max(0) as u64,
        db_size_in_use: s.raft_used_db_size().max(0) as u64,
        db_quota: Some(s.db_size_quota()).filter(|q| *q > 0).map(|q| q as u64),
        version: s.version().to_string(),
        is_learner: s.is_learner(),
        errors: s.errors().to_vec(),
    })
}

/// AlarmList's answer: the active alarms (etcd lists "NONE" for a member that once had one).
pub(super) fn alarms(a: &etcd_client::AlarmResponse) -> Vec<Alarm> {
    a.alarms()
        .iter()
        .filter(|m| m.alarm() != AlarmType::None)
        .map(|m| Alarm {
            member_id: Id(m.member_id()),
            kind: m.alarm().as_str_name().to_string(),
        })
        .collect()
}

/// MemberList's answer.
pub(super) fn members(list: &etcd_client::MemberListResponse) -> Vec<Member> {
    list.members()
        .iter()
        .map(|m| {
            Member::new(
                Id(m.id()),
                m.name().to_string(),
                m.peer_urls().to_vec(),
                m.client_urls().to_vec(),
                m.is_learner(),
            )
        })
        .collect()
}
