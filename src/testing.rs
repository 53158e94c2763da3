//! Fixtures for unit tests of the pure logic: probes of a made-up 3-member cluster.
#![cfg(test)]

use std::collections::BTreeMap;

use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::view::{FailureKind, Member, ProbeError, ProbeMetrics, ProbeResult, StatusInfo};

pub const CLUSTER: Id = Id(0xc1);

pub fn ep(i: usize) -> Endpoint {
    Endpoint::parse(&format!("127.0.0.1:{}", 2379 + 10 * i)).unwrap()
}

pub fn member(i: usize) -> Member {
    Member::new(
        Id(i as u64 + 1),
        format!("m{i}"),
        vec![format!("http://127.0.0.1:{}", 2380 + 10 * i)],
        vec![ep(i).url()],
        false,
    )
}

pub fn healthy_probe(i: usize, members: &[Member], leader: usize) -> ProbeResult {
    ProbeResult {
        endpoint: ep(i),
        status: Ok(StatusInfo {
            member_id: Id(i as u64 + 1),
            cluster_id: CLUSTER,
            leader: Id(leader as u64 + 1),
            raft_term: 2,
            raft_index: 100 - i as u64,
            raft_applied_index: 100 - i as u64,
            db_size: 1000,
            db_size_in_use: 600,
            db_quota: None,
            version: "3.4.23".into(),
            is_learner: false,
            errors: vec![],
        }),
        health: Ok(()),
        alarms: Ok(vec![]),
        members: Ok(members.to_vec()),
        metrics: Ok(ProbeMetrics {
            quota_backend_bytes: Some(4000),
            peer_rtt: BTreeMap::new(),
            vitals: Default::default(),
        }),
        probe_seconds: 0.002,
        auth_error: None,
        stale: false,
        known_member_id: None,
    }
}

pub fn three() -> (Vec<Member>, Vec<ProbeResult>) {
    let members: Vec<Member> = (0..3).map(member).collect();
    let probes = (0..3).map(|i| healthy_probe(i, &members, 0)).collect();
    (members, probes)
}

pub fn down(i: usize) -> ProbeResult {
    ProbeResult::unreachable(
        ep(i),
        err(FailureKind::Unreachable, "connection refused"),
        0.001,
    )
}

pub fn err(kind: FailureKind, message: &str) -> ProbeError {
    ProbeError::new(kind, message)
}

/// A member that answers Status but whose read failed in the given way, naming the given leader (0: none).
pub fn read_failed(i: usize, members: &[Member], leader: u64, error: ProbeError) -> ProbeResult {
    let mut p = healthy_probe(i, members, 0);
    p.health = Err(error);
    if let Ok(s) = &mut p.status {
        s.leader = Id(leader);
    }
    p
}
