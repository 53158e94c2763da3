//! The polling loop of one cluster: poll every `interval`, never two polls at once, publish the view, record
//! events and metrics. One task per cluster, so a slow or dead cluster never delays another. A poll only reads,
//! so the task stops wherever it is when cancelled.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::etcd::connect::Connector;
use crate::events::Event;
use crate::export::metrics::Metrics;
use crate::probe::poller::{ClusterPoller, Progress};
use crate::view::{ClusterView, Consistency};

use crate::state::History;

/// A maintenance job's event (a snapshot, a defragmentation): logged, and added to the cluster's event log.
pub(super) fn record_maintenance(
    cluster: &str,
    log: &std::sync::Mutex<crate::events::EventLog>,
    kind: crate::events::EventKind,
    message: String,
) {
    let event = Event::maintenance(std::time::SystemTime::now(), kind, message);
    log_event(cluster, &event);
    // A poisoned lock means a task panicked while appending; the log itself is still consistent.
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend([event]);
}

pub(super) fn log_event(cluster: &str, e: &Event) {
    let member = e.member_id.map(|m| m.to_string()).unwrap_or_default();
    let endpoint = e.endpoint.as_deref().unwrap_or("");
    let kind = e.kind.as_str();
    if e.kind.is_bad() {
        tracing::warn!(
            cluster,
            event = kind,
            member_id = member,
            endpoint,
            "{}",
            e.message
        );
    } else {
        tracing::info!(
            cluster,
            event = kind,
            member_id = member,
            endpoint,
            "{}",
            e.message
        );
    }
}

/// Records one view, final or interim: its events (logged and kept), the election it ended, and publishes it.
fn record(
    cluster: &str,
    view: ClusterView,
    history: &History,
    publish: &watch::Sender<Option<Arc<ClusterView>>>,
    metrics: &Metrics,
) {
    let view = Arc::new(view);
    // A poisoned lock means a poller panicked mid-update; the tracker and the log are still consistent.
    let observation = history
        .tracker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .observe(view.clone());
    for e in &observation.events {
        log_event(cluster, e);
    }
    metrics.observe_leadership(
        cluster,
        observation.leader_changed,
        observation.leaderless_seconds,
    );
    history
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(observation.events);
    publish.send_replace(Some(view));
}

pub async fn run(
    config: ClusterConfig,
    connector: Arc<Connector>,
    publish: watch::Sender<Option<Arc<ClusterView>>>,
    history: History,
    metrics: Arc<Metrics>,
    mut consistency: watch::Receiver<Option<Consistency>>,
    cancel: CancellationToken,
) {
    let mut poller = ClusterPoller::new(config.target(), connector);
    // Restarted by a reload: carry on from the last view (membership, alarms), not from nothing.
    let last = history
        .tracker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last_view();
    if let Some(view) = last {
        poller.resume_from(&view);
        // A reload that turned the check off: no check will replace the last result, so it is not shown.
        if config.consistency.interval.is_none() {
            poller.set_consistency(None);
        }
    }
    let mut ticker = tokio::time::interval(config.interval);
    // A poll that overruns its interval delays the next one instead of causing a burst of catch-up polls.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let cluster = config.name.as_str();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
            // A consistency check ended: shown at once, on the last view, not only from the next poll on.
            Ok(()) = consistency.changed() => {
                let result = consistency.borrow_and_update().clone();
                poller.set_consistency(result.clone());
                // The tracker's lock is released before `record` takes it again.
                let last = history
                    .tracker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_view();
                if let (Some(result), Some(last)) = (result, last) {
                    let mut view = ClusterView::clone(&last);
                    view.attach_consistency(result, &config.thresholds);
                    record(cluster, view, &history, &publish, &metrics);
                }
                continue;
            }
        }
        let started = Instant::now();
        // While the poll runs, each finished endpoint (and each member overdue) is published at once: a dead
        // member is shown as soon as its own probe fails, not when the slowest probe of the poll ends.
        let mut interim = |view: ClusterView| record(cluster, view, &history, &publish, &metrics);
        let mut progress = Progress {
            unresponsive_after: config.unresponsive_after,
            publish: &mut interim,
        };
        let view = tokio::select! {
            // Mid-poll is a safe point: nothing was written, the next poller starts afresh.
            () = cancel.cancelled() => return,
            view = poller.poll_with(Some(&mut progress)) => view,
        };
        let took = started.elapsed();
        metrics.observe_poll(&view, took);
        tracing::debug!(
            cluster,
            ms = took.as_secs_f64() * 1e3,
            healthy = view.healthy,
            "poll"
        );
        record(cluster, view, &history, &publish, &metrics);
    }
}
