//! The maintenance task of one cluster, beside its poller: it reads each view the poller publishes and keeps
//! what maintenance makes of it (may the cluster be touched now, and in which order) for the API. Scheduled
//! snapshots and defragmentation run here, one step at a time, each stopping only at a safe point when the task
//! is cancelled; until they are configured there is no step, and the task only judges.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::maintenance::{self, GateOptions, Readiness};
use crate::state::LatestView;

pub async fn run(
    cluster: String,
    options: GateOptions,
    mut views: LatestView,
    publish: watch::Sender<Option<Arc<Readiness>>>,
    cancel: CancellationToken,
) {
    let mut was_ready: Option<bool> = None;
    loop {
        let view = views.borrow_and_update().clone();
        if let Some(view) = view {
            let readiness = maintenance::assess(&view, SystemTime::now(), &options);
            if was_ready != Some(readiness.ready) {
                let reasons: Vec<&str> = readiness
                    .refusals
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect();
                tracing::debug!(
                    cluster,
                    ready = readiness.ready,
                    "maintenance {}",
                    if readiness.ready {
                        "possible".to_string()
                    } else {
                        format!("not possible now: {}", reasons.join("; "))
                    }
                );
                was_ready = Some(readiness.ready);
            }
            publish.send_replace(Some(Arc::new(readiness)));
        }
        tokio::select! {
            // Idle: nothing in flight, so any moment is a safe point.
            () = cancel.cancelled() => return,
            changed = views.changed() => {
                if changed.is_err() {
                    // The poller is gone: so is the cluster.
                    return;
                }
            }
        }
    }
}
