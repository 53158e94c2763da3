//! Fixtures for unit tests of the pure logic: probes of a made-up 3-member cluster.
#![cfg(test)]

use std::collections::BTreeMap;

use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::view::{
    Consistency, FailureKind, Member, MemberHash, ProbeError, ProbeMetrics, ProbeResult, StatusInfo,
};

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
            revision: 50,
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

/// A fixed poll time, so that a view built in a test renders and serialises the same every time.
pub fn polled_at() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
}

/// The probe with this DB size, part of it in use, and quota (read from /metrics, as on etcd 3.4).
pub fn with_db(mut p: ProbeResult, size: u64, in_use: u64, quota: u64) -> ProbeResult {
    if let Ok(s) = &mut p.status {
        s.db_size = size;
        s.db_size_in_use = in_use;
    }
    if let Ok(m) = &mut p.metrics {
        m.quota_backend_bytes = Some(quota);
    }
    p
}

/// The probe with the disk latencies (p99 WAL fsync and backend commit, over 1000 observations each) and the
/// heartbeat round-trip times (p99 to each peer, by member index) that its /metrics would report.
pub fn with_latencies(
    mut p: ProbeResult,
    wal_fsync_p99: f64,
    backend_commit_p99: f64,
    peer_rtt_p99: &[(usize, f64)],
) -> ProbeResult {
    let summary = |p99: f64| crate::vitals::LatencySummary {
        p50: Some(p99 / 4.0),
        p99: Some(p99),
        window_count: 1000,
        count: 1000,
        sum: p99 * 250.0,
    };
    if let Ok(m) = &mut p.metrics {
        m.vitals.wal_fsync_seconds = Some(summary(wal_fsync_p99));
        m.vitals.backend_commit_seconds = Some(summary(backend_commit_p99));
        m.peer_rtt = peer_rtt_p99
            .iter()
            .map(|&(peer, p99)| {
                let rtt = crate::view::PeerRtt {
                    p50: p99 / 2.0,
                    p99,
                    count: 100,
                    sum: p99 * 50.0,
                };
                (Id(peer as u64 + 1), rtt)
            })
            .collect();
    }
    p
}

/// A consistency check's result: member `i + 1` answered `hashes[i]` (`None`: "not reachable"), at revision 40 and
/// compact revision 5, checked at the epoch in 0.2 s.
pub fn checked(hashes: &[Option<u32>]) -> Consistency {
    let members = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let answer = match h {
                Some(h) => MemberHash::answered(*h, 5, 0.1),
                None => MemberHash::failed("not reachable".into(), None),
            };
            (Id(i as u64 + 1), answer)
        })
        .collect();
    crate::view::consistency::judge(
        40,
        members,
        |id| id.to_string(),
        std::time::SystemTime::UNIX_EPOCH,
        0.2,
    )
}

/// `checked` where every member answered.
pub fn hashed(hashes: &[u32]) -> Consistency {
    checked(&hashes.iter().copied().map(Some).collect::<Vec<_>>())
}
