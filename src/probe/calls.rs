//! The gRPC calls of one probe — Status, the health read, AlarmList, MemberList — all at once, each ending by
//! the probe's deadline, and riding out elections.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client};
use tokio::sync::watch;

use crate::view::{FailureKind, Outcome, ProbeError};

use super::deadline::Deadline;
use super::progress::ProbeProgress;

pub(super) struct Calls {
    pub(super) status: Outcome<etcd_client::StatusResponse>,
    pub(super) health: HealthRead,
    pub(super) alarms: Outcome<etcd_client::AlarmResponse>,
    pub(super) members: Outcome<etcd_client::MemberListResponse>,
}

pub(super) fn needs_new_token(calls: &Calls) -> bool {
    let stale = |e: &ProbeError| {
        e.message.contains("revision of auth store is old")
            || e.message.contains("invalid auth token")
    };
    [
        calls.status.as_ref().err(),
        calls.health.outcome.as_ref().err(),
        calls.alarms.as_ref().err(),
        calls.members.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .any(stale)
}

/// How long to wait before asking again while the cluster elects a leader (etcd's client waits about as long).
const ELECTION_RETRY: Duration = Duration::from_millis(100);

/// How a health read was served.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Served {
    Plainly,
    /// etcd served the read, then refused us the key because we gave no user: the cluster has authentication
    /// enabled and we have no credentials for it (or ours were refused).
    WithoutUser,
}

/// One `etcdctl endpoint health` read: a linearizable range read of key "health".
async fn read_health(kv: &mut etcd_client::KvClient) -> Result<Served, etcd_client::Error> {
    match kv.get("health", None).await {
        // Permission to a key is checked after the read was served, so a refusal still proves the member served
        // a linearizable read.
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => {
            Ok(Served::Plainly)
        }
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("user name is empty") => {
            Ok(Served::WithoutUser)
        }
        // A learner refuses linearizable reads ("rpc not supported for learner"); what can be asked of it is
        // that it serves a local read.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("learner") => kv
            .get(
                "health",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .map(|_| Served::Plainly),
        other => other.map(|_| Served::Plainly),
    }
}

/// What the health read found: its outcome, whether it waited out an election, and whether it was served to
/// a client without a user.
pub(super) struct HealthRead {
    pub(super) outcome: Outcome<()>,
    pub(super) election_seen: bool,
    pub(super) without_user: bool,
}

/// A call that needs a leader (the health read, and AlarmList, which etcd proposes through raft), asked again while
/// the cluster has none ("leader changed", "no leader"), as etcd's own client does, and asked afresh when the
/// member reports another leader: etcd holds a request that waited on a dead leader until its own request
/// timeout, seconds after the election, while the same request sent again is answered at once. Ends by the
/// deadline. Also says whether an election was seen.
async fn until_led<T, F, Fut>(
    deadline: Deadline,
    moved: &watch::Receiver<u64>,
    mut call: F,
) -> (Outcome<T>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut election: Option<ProbeError> = None;
    let mut seen = false;
    loop {
        let mut moved = moved.clone();
        moved.mark_unchanged();
        tokio::select! {
            r = deadline.bound(call()) => match r {
                Err(e) if e.kind == FailureKind::NoLeader => {
                    tracing::debug!(error = %e, "no leader: asking again");
                    seen = true;
                    election = Some(e);
                    let retry_at = (Instant::now() + ELECTION_RETRY).min(deadline.at);
                    tokio::time::sleep_until(retry_at.into()).await;
                }
                Err(e) if e.kind == FailureKind::Timeout && seen => break,
                other => return (other, seen),
            },
            Ok(()) = moved.changed() => {
                tracing::debug!("the member reports another leader: asking again");
                seen = true;
            }
        }
        if Instant::now() >= deadline.at {
            break;
        }
    }
    let last = election.map_or_else(
        || "waited on the leader that was replaced".to_string(),
        |e| e.message,
    );
    let error = ProbeError::new(
        FailureKind::NoLeader,
        format!(
            "{last} (not served within {}: leader election)",
            humantime::format_duration(deadline.budget)
        ),
    );
    (Err(error), true)
}

/// How often Status is read while other calls wait, to notice a change of leader.
const LEADER_WATCH: Duration = Duration::from_millis(200);

/// Reads Status every `LEADER_WATCH` while other calls wait, records it in `progress`, and bumps `moved` each time
/// the member reports another leader or term. Never returns: dropped when the calls are done.
async fn watch_leader(
    status: &mut etcd_client::MaintenanceClient,
    deadline: Deadline,
    progress: &ProbeProgress,
    moved: &watch::Sender<u64>,
) {
    loop {
        tokio::time::sleep(LEADER_WATCH).await;
        if Instant::now() >= deadline.at {
            return std::future::pending().await;
        }
        // Compared with the last Status of this probe, the first one included (read before the calls waited).
        let before = progress.latest_status().map(|s| (s.leader, s.raft_term));
        if let Ok(Some(s)) = deadline
            .bound(status.status())
            .await
            .map(|r| progress.record(&r))
            && before.is_some_and(|b| b != (s.leader, s.raft_term))
        {
            tracing::debug!(leader = %s.leader, term = s.raft_term, "leader moved");
            moved.send_modify(|n| *n += 1);
        }
    }
}

/// Status, the health read, AlarmList and MemberList, all at once, all ending by the deadline.
pub(super) async fn grpc_calls(
    client: &Client,
    deadline: Deadline,
    progress: &ProbeProgress,
) -> Calls {
    let mut maintenance = client.maintenance_client();
    let mut watcher = client.maintenance_client();
    let kv = client.kv_client();
    let alarm_client = client.maintenance_client();
    let mut cluster = client.cluster_client();
    let (moved_tx, moved) = watch::channel(0u64);
    let status = async {
        let status = deadline.bound(maintenance.status()).await;
        if let Ok(s) = &status {
            progress.record(s);
        }
        status
    };
    let health = async {
        let (outcome, election_seen) = until_led(deadline, &moved, || {
            let mut kv = kv.clone();
            async move { read_health(&mut kv).await }
        })
        .await;
        let without_user = matches!(outcome, Ok(Served::WithoutUser));
        HealthRead {
            outcome: outcome.map(|_| ()),
            election_seen,
            without_user,
        }
    };
    let alarms = async {
        until_led(deadline, &moved, || {
            let mut a = alarm_client.clone();
            async move { a.alarm(AlarmAction::Get, AlarmType::None, None).await }
        })
        .await
        .0
    };
    let calls = async {
        tokio::join!(
            status,
            health,
            alarms,
            deadline.bound(cluster.member_list())
        )
    };
    tokio::pin!(calls);
    // The watch ends only with the calls (it waits forever past the deadline, by which they have ended).
    let (status, health, alarms, members) = tokio::select! {
        done = &mut calls => done,
        () = watch_leader(&mut watcher, deadline, progress, &moved_tx) => calls.await,
    };
    // The read waited out an election: Status, read before it, names the old leader. Ask again.
    let status = match (status, health.election_seen) {
        (Ok(old), true) => Ok(deadline
            .bound(client.maintenance_client().status())
            .await
            .unwrap_or(old)),
        (status, _) => status,
    };
    Calls {
        status,
        health,
        alarms,
        members,
    }
}
