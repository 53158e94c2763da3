//! The polling loop of one cluster: poll every `interval`, never two polls at once, publish the view, record
//! events and metrics. One task per cluster, so a slow or dead cluster never delays another.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::ClusterConfig;
use crate::etcd::connect::Connector;
use crate::events::{self, Event, EventLog};
use crate::probe::poller::ClusterPoller;
use crate::view::ClusterView;

use super::state::Shared;

fn log_event(cluster: &str, e: &Event) {
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

fn log_first_poll(view: &ClusterView) {
    let cluster = view.cluster.as_str();
    let q = &view.quorum;
    if view.healthy {
        tracing::info!(
            cluster,
            members = view.members.len(),
            failure_tolerance = q.failure_tolerance,
            "first poll: healthy"
        );
    } else {
        for w in &view.warnings {
            tracing::warn!(
                cluster,
                warning = w.kind.as_str(),
                "first poll: {}",
                w.message
            );
        }
    }
}

pub async fn run(
    config: ClusterConfig,
    connector: Arc<Connector>,
    publish: watch::Sender<Option<Arc<ClusterView>>>,
    event_log: Arc<Mutex<EventLog>>,
    shared: Arc<Shared>,
) {
    let mut poller = ClusterPoller::new(config.target(), connector);
    let mut ticker = tokio::time::interval(config.interval);
    // A poll that overruns its interval delays the next one instead of causing a burst of catch-up polls.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous: Option<Arc<ClusterView>> = None;
    // Leader changes are counted against the last leader seen, so that old → none → new counts once.
    let mut last_leader = None;
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let view = Arc::new(poller.poll().await);
        let took = started.elapsed();
        let new_events = match &previous {
            Some(prev) => events::diff(prev, &view),
            None => {
                log_first_poll(&view);
                Vec::new()
            }
        };
        let leader_changes = match (last_leader, view.leader_id) {
            (Some(old), Some(new)) if old != new => 1,
            _ => 0,
        };
        last_leader = view.leader_id.or(last_leader);
        for e in &new_events {
            log_event(&config.name, e);
        }
        shared.metrics.observe_poll(&view, took, leader_changes);
        event_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(new_events);
        publish.send_replace(Some(view.clone()));
        tracing::debug!(
            cluster = config.name,
            ms = took.as_secs_f64() * 1e3,
            healthy = view.healthy,
            "poll"
        );
        previous = Some(view);
    }
}
