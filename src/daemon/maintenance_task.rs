//! The maintenance task of one cluster, beside its poller. It keeps the last complete view (a poll's final view,
//! not the interim ones published while probes still run, whose rows are partly the previous poll's), which is
//! what maintenance judges by: the API assesses it against the clock on every request, so a poller that stopped
//! makes it refuse by age. Scheduled snapshots and defragmentation run here, one step at a time, each stopping
//! only at a safe point when the task is cancelled; until they are configured there is no step, and the task
//! logs when the cluster becomes fit or unfit for maintenance.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::maintenance::{self, GateOptions};
use crate::schedule;

use super::defrag_job::DefragJob;
use super::snapshot_job::SnapshotJob;
use crate::state::LatestView;
use crate::view::ClusterView;

/// A view some of whose rows are still the previous poll's.
fn is_interim(view: &ClusterView) -> bool {
    view.endpoints.iter().any(|e| e.stale)
}

/// The time left until the next scheduled snapshot, and that time; a year (never) without a schedule.
fn until_next(job: Option<&SnapshotJob>) -> (Duration, Option<SystemTime>) {
    let never = Duration::from_secs(365 * 86_400);
    let Some(job) = job else {
        return (never, None);
    };
    let now = SystemTime::now();
    match schedule::next_run(&job.config.schedule, now) {
        Ok(at) => {
            let interval = schedule::gap_before(&job.config.schedule, at).ok();
            job.metrics
                .observe_next_snapshot(&job.cluster, at, interval);
            job.set_next_run(Some(at));
            (at.duration_since(now).unwrap_or_default(), Some(at))
        }
        Err(e) => {
            tracing::error!(cluster = job.cluster, "snapshot schedule: {e}");
            job.set_next_run(None);
            (never, None)
        }
    }
}

/// The time left until the next scheduled defragmentation, and that time; a year (never) without a schedule.
fn until_next_defrag(job: Option<&DefragJob>) -> (Duration, Option<SystemTime>) {
    let never = Duration::from_secs(365 * 86_400);
    let Some((job, schedule)) = job.and_then(|j| Some((j, j.config.schedule.as_ref()?))) else {
        return (never, None);
    };
    let now = SystemTime::now();
    match schedule::next_run(schedule, now) {
        Ok(at) => {
            job.set_next_run(Some(at));
            (at.duration_since(now).unwrap_or_default(), Some(at))
        }
        Err(e) => {
            tracing::error!(cluster = job.cluster, "defrag schedule: {e}");
            job.set_next_run(None);
            (never, None)
        }
    }
}

/// The jobs of one cluster's maintenance task, each with the requests the API sends it.
pub struct Jobs {
    pub snapshots: Option<(SnapshotJob, mpsc::Receiver<()>)>,
    pub defrag: Option<(DefragJob, mpsc::Receiver<()>)>,
}

/// Drops requests that slipped in while a run of the same job was under way: they asked for the run that just
/// happened (the API refuses every other with 409).
fn drain(requests: &mut Option<mpsc::Receiver<()>>) {
    if let Some(r) = requests.as_mut() {
        while r.try_recv().is_ok() {}
    }
}

/// Runs a step while keeping the last complete view current: the API judges maintenance by it, and a run of
/// minutes must not make it look as if the poller had stopped.
async fn keeping_views<F: std::future::Future>(
    step: F,
    views: &mut LatestView,
    complete: &watch::Sender<Option<Arc<ClusterView>>>,
) -> F::Output {
    tokio::pin!(step);
    loop {
        tokio::select! {
            out = &mut step => return out,
            changed = views.changed() => {
                if changed.is_err() {
                    return step.await;
                }
                let view = views.borrow_and_update().clone();
                if let Some(view) = view.filter(|v| !is_interim(v)) {
                    complete.send_replace(Some(view));
                }
            }
        }
    }
}

/// The next run asked for through the API; never, without a way to ask.
async fn next_request(requests: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match requests {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

pub async fn run(
    cluster: String,
    options: GateOptions,
    check_every: Duration,
    mut views: LatestView,
    complete: watch::Sender<Option<Arc<ClusterView>>>,
    jobs: Jobs,
    cancel: CancellationToken,
) {
    // Each job, and the runs of it asked for through the API.
    let (snapshots, mut requests) = jobs.snapshots.unzip();
    let (defrag, mut defrag_requests) = jobs.defrag.unzip();
    let mut was_ready: Option<bool> = None;
    let mut ticker = tokio::time::interval(check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut wait, mut next) = until_next(snapshots.as_ref());
    let mut due = Box::pin(tokio::time::sleep(wait));
    let (defrag_wait, mut defrag_next) = until_next_defrag(defrag.as_ref());
    let mut defrag_due = Box::pin(tokio::time::sleep(defrag_wait));
    loop {
        tokio::select! {
            // A shutdown wins over a run that is due at the same moment.
            biased;
            // Idle: nothing in flight, so any moment is a safe point.
            () = cancel.cancelled() => return,
            () = &mut due, if next.is_some() => {
                // A step: not raced against the cancellation token, so a shutdown waits for it to end.
                if let Some(job) = &snapshots {
                    let view = complete.borrow().clone();
                    keeping_views(job.run_once(view), &mut views, &complete).await;
                }
                (wait, next) = until_next(snapshots.as_ref());
                due.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            Some(()) = next_request(&mut requests) => {
                // Asked for through the API: a step like a scheduled run; the schedule stays as it is.
                if let Some(job) = &snapshots {
                    let view = complete.borrow().clone();
                    keeping_views(job.run_once(view), &mut views, &complete).await;
                }
                drain(&mut requests);
            }
            () = &mut defrag_due, if defrag_next.is_some() => {
                if let Some(job) = &defrag {
                    keeping_views(job.run_once("the schedule".into(), &cancel), &mut views, &complete).await;
                }
                drain(&mut defrag_requests);
                let (wait, next) = until_next_defrag(defrag.as_ref());
                defrag_next = next;
                defrag_due.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            Some(()) = next_request(&mut defrag_requests) => {
                if let Some(job) = &defrag {
                    keeping_views(job.run_once("a request through the API".into(), &cancel), &mut views, &complete).await;
                }
                drain(&mut defrag_requests);
            }
            changed = views.changed() => {
                if changed.is_err() {
                    // The poller is gone (its cluster was removed, or it stopped): the last view stays and ages.
                    return;
                }
                let view = views.borrow_and_update().clone();
                if let Some(view) = view.filter(|v| !is_interim(v)) {
                    complete.send_replace(Some(view.clone()));
                    if let Some(job) = &defrag {
                        job.observe(&view);
                    }
                    // The trigger is judged on complete polls only: an interim view is partly the last poll's.
                    if let Some(job) = &defrag
                        && let Some(why) = job.triggered(&view)
                    {
                        keeping_views(job.run_once(why, &cancel), &mut views, &complete).await;
                        drain(&mut defrag_requests);
                    }
                }
            }
            _ = ticker.tick() => {}
        }
        let Some(view) = complete.borrow().clone() else {
            continue;
        };
        let readiness = maintenance::assess(&view, SystemTime::now(), &options);
        if was_ready != Some(readiness.ready) {
            if readiness.ready {
                tracing::info!(
                    cluster,
                    "maintenance possible: every member may be touched, one at a time"
                );
            } else {
                let reasons: Vec<&str> = readiness
                    .refusals
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect();
                tracing::info!(
                    cluster,
                    "maintenance not possible now: {}",
                    reasons.join("; ")
                );
            }
            was_ready = Some(readiness.ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::view;

    #[tokio::test]
    async fn only_complete_views_are_kept_for_maintenance() {
        let (publish, views) = watch::channel(None);
        let (complete, kept) = watch::channel(None);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            "prod".into(),
            GateOptions::for_interval(Duration::from_secs(10)),
            Duration::from_secs(3600),
            views,
            complete,
            Jobs {
                snapshots: None,
                defrag: None,
            },
            cancel.clone(),
        ));
        let (_, mut probes) = three();
        let final_view = Arc::new(view::build("prod", &probes, polled_at()));
        probes[1].stale = true;
        let interim = Arc::new(view::build("prod", &probes, polled_at()));
        let mut watching = kept.clone();
        publish.send_replace(Some(final_view.clone()));
        watching.changed().await.unwrap();
        publish.send_replace(Some(interim));
        // The interim view is skipped: the next change seen is the next final view.
        let next = Arc::new(view::build("prod", &three().1, polled_at()));
        publish.send_replace(Some(next.clone()));
        watching.changed().await.unwrap();
        assert!(Arc::ptr_eq(kept.borrow().as_ref().unwrap(), &next));
        cancel.cancel();
        task.await.unwrap();
    }
}
