//! The KV hash consistency check of one cluster, on its own schedule (every few minutes, not every poll: HashKV
//! reads each member's whole database). Its result goes to the poll task, which shows it in every view from then
//! on. Never while this process defragments the cluster (the member-work mutex) or another runner does (the
//! maintenance lock). A check only reads, so the task stops wherever it is when cancelled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::etcd::connect::Connector;
use crate::maintenance::consistency::check_unless_defragmenting;
use crate::probe::consistency::ConsistencyOptions;
use crate::state::{CompleteView, DefragMemory};
use crate::view::{Consistency, ConsistencyState};

pub struct ConsistencyJob {
    pub cluster: String,
    pub every: Duration,
    pub options: ConsistencyOptions,
    pub lock_prefix: String,
    pub connector: Arc<Connector>,
    /// Shared with the cluster's defragmentation (`member_work`, `consistency_stop`).
    pub memory: Arc<DefragMemory>,
    /// Where each result goes (the poll task shows it).
    pub publish: watch::Sender<Option<Consistency>>,
}

/// How many intervals the last result stands while checks are skipped (a defragmentation runs): then it is
/// replaced by an unknown one, so that a verdict no longer checked does not look current for ever.
const STANDS_FOR_INTERVALS: u32 = 3;

pub async fn run(job: ConsistencyJob, mut complete: CompleteView, cancel: CancellationToken) {
    let cluster = job.cluster.as_str();
    let mut last_result: Option<tokio::time::Instant> = None;
    loop {
        // The check judges from the last complete poll: who the voters are, where they answer, their sizes.
        let view = loop {
            if let Some(view) = complete.borrow_and_update().clone() {
                break view;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = complete.changed() => if changed.is_err() { return },
            }
        };
        let next = tokio::time::Instant::now() + job.every;
        let outcome = match job.memory.member_work.try_lock() {
            Err(_) => Err("this daemon defragments the cluster".to_string()),
            Ok(_exclusive) => {
                let stop = cancel.child_token();
                *job.memory
                    .consistency_stop
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
                let checked = tokio::select! {
                    () = stop.cancelled() => {
                        if cancel.is_cancelled() {
                            return;
                        }
                        Err("stopped for a defragmentation".to_string())
                    }
                    checked = check_unless_defragmenting(
                        &view,
                        &job.connector,
                        &job.options,
                        &job.lock_prefix,
                    ) => checked,
                };
                job.memory
                    .consistency_stop
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                checked
            }
        };
        match outcome {
            Ok(result) => {
                log(cluster, &result);
                last_result = Some(tokio::time::Instant::now());
                job.publish.send_replace(Some(result));
            }
            Err(why) => {
                tracing::info!(
                    cluster,
                    "consistency check skipped: {why}; next in {}",
                    humantime::format_duration(job.every)
                );
                let stale =
                    last_result.is_none_or(|at| at.elapsed() >= job.every * STANDS_FOR_INTERVALS);
                if stale {
                    let message = match last_result {
                        None => format!("not checked yet: {why}"),
                        Some(at) => format!(
                            "not checked for {}: {why}",
                            humantime::format_duration(Duration::from_secs(at.elapsed().as_secs()))
                        ),
                    };
                    last_result = Some(tokio::time::Instant::now());
                    job.publish.send_replace(Some(Consistency::unknown(
                        std::time::SystemTime::now(),
                        Default::default(),
                        message,
                    )));
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

fn log(cluster: &str, c: &Consistency) {
    let state = c.state.as_str();
    let revision = c.revision.unwrap_or_default();
    let seconds = c.seconds;
    match c.state {
        ConsistencyState::Consistent => {
            tracing::info!(cluster, state, revision, seconds, "{}", c.message)
        }
        ConsistencyState::Unknown | ConsistencyState::Inconsistent => {
            tracing::warn!(cluster, state, revision, seconds, "{}", c.message)
        }
    }
}
