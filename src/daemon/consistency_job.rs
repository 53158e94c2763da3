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
use crate::state::CompleteView;
use crate::view::{Consistency, ConsistencyState};

pub struct ConsistencyJob {
    pub cluster: String,
    pub every: Duration,
    pub options: ConsistencyOptions,
    pub lock_prefix: String,
    pub connector: Arc<Connector>,
    /// Shared with the cluster's defragmentation (see `DefragMemory::member_work`).
    pub member_work: Arc<tokio::sync::Mutex<()>>,
    /// Where each result goes (the poll task shows it).
    pub publish: watch::Sender<Option<Consistency>>,
}

pub async fn run(job: ConsistencyJob, mut complete: CompleteView, cancel: CancellationToken) {
    let cluster = job.cluster.as_str();
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
        match job.member_work.try_lock() {
            Err(_) => tracing::info!(
                cluster,
                "consistency check skipped: this daemon defragments the cluster; next in {}",
                humantime::format_duration(job.every)
            ),
            Ok(_exclusive) => {
                let checked = tokio::select! {
                    () = cancel.cancelled() => return,
                    checked = check_unless_defragmenting(
                        &view,
                        &job.connector,
                        &job.options,
                        &job.lock_prefix,
                    ) => checked,
                };
                match checked {
                    Ok(result) => {
                        log(cluster, &result);
                        job.publish.send_replace(Some(result));
                    }
                    Err(why) => tracing::info!(
                        cluster,
                        "consistency check skipped: {why}; next in {}",
                        humantime::format_duration(job.every)
                    ),
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
