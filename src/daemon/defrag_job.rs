//! The daemon's rolling defragmentation of one cluster, run by its maintenance task: started by the schedule, by
//! the trigger rule on a complete poll (at most once per `min_interval`), or through the API; stopped before its
//! next member by the API's kill switch or the daemon's shutdown. Every run is a metric, events, and the report
//! the API shows.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::DefragConfig;
use crate::etcd::connect::Connector;
use crate::events::{EventKind, EventLog};
use crate::export::metrics::Metrics;
use crate::maintenance::defrag::run::{Cluster, Progress};
use crate::maintenance::defrag::{self, DefragOptions, DefragReport, MemberAction, RunResult};
use crate::probe::poller::ClusterPoller;
use crate::settings::Target;
use crate::state::{DefragMemory, DefragStatus};
use crate::units::human_bytes;
use crate::view::ClusterView;

use super::poll_task::record_maintenance;

pub struct DefragJob {
    pub cluster: String,
    pub config: DefragConfig,
    pub options: DefragOptions,
    /// The cluster as the poller sees it: each run polls it afresh before every member.
    pub target: Target,
    pub connector: Arc<Connector>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<Mutex<EventLog>>,
    pub status: watch::Sender<DefragStatus>,
    pub stop: Arc<Mutex<Option<CancellationToken>>>,
    /// When the last run started (the trigger waits `min_interval` after it) and its report: the cluster's
    /// history keeps them, so a reload does not reset them.
    memory: Arc<DefragMemory>,
}

impl DefragJob {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: String,
        config: DefragConfig,
        options: DefragOptions,
        target: Target,
        connector: Arc<Connector>,
        metrics: Arc<Metrics>,
        log: Arc<Mutex<EventLog>>,
        status: watch::Sender<DefragStatus>,
        stop: Arc<Mutex<Option<CancellationToken>>>,
        memory: Arc<DefragMemory>,
    ) -> Self {
        metrics.init_defrag(&cluster);
        DefragJob {
            cluster,
            config,
            options,
            target: defrag::run_target(target),
            connector,
            metrics,
            log,
            status,
            stop,
            memory,
        }
    }

    fn record(&self, kind: EventKind, message: String) {
        record_maintenance(&self.cluster, &self.log, kind, message);
    }

    pub fn set_next_run(&self, at: Option<SystemTime>) {
        self.status.send_if_modified(|s| {
            let changed = s.next_run != at;
            s.next_run = at;
            changed
        });
    }

    /// Remembers the revision a complete poll saw, for a compaction that keeps a time window.
    pub fn observe(&self, view: &ClusterView) {
        let Some((window, history)) = &self.options.compaction_window else {
            return;
        };
        let ours = view.endpoints.iter().filter(|e| !view.is_foreign(e));
        if let Some(revision) = ours.filter_map(|e| e.revision).max() {
            history.lock().unwrap_or_else(|p| p.into_inner()).record(
                view.polled_at,
                revision,
                *window,
            );
        }
    }

    /// Why the trigger starts a run now, from a complete view: the rule holds for a member, and the last run
    /// started at least `min_interval` ago. `None` otherwise.
    pub fn triggered(&self, view: &ClusterView) -> Option<String> {
        let trigger = self.config.trigger.as_ref()?;
        let last = *self
            .memory
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.config.min_interval) {
            return None;
        }
        view.endpoints
            .iter()
            .filter(|e| e.member_id.is_some() && !e.stale && !view.is_foreign(e))
            .find_map(|e| {
                let inputs = defrag::decide::inputs_of(e, self.config.storage_quota_bytes)?;
                trigger.holds(&inputs).ok()?.then(|| {
                    format!(
                        "the trigger {:?} holds for member {} (dbSize {}, dbSizeFree {}, dbQuotaUsage {:.3})",
                        trigger.text(),
                        e.member_name.as_deref().unwrap_or(&e.endpoint),
                        human_bytes(inputs.db_size as u64),
                        human_bytes(inputs.db_size_free as u64),
                        inputs.db_quota_usage
                    )
                })
            })
    }

    /// One run, start to end. `shutdown` is the task's token: a shutdown stops the run before its next member,
    /// like the API's kill switch.
    pub async fn run_once(&self, started_by: String, shutdown: &CancellationToken) {
        use futures_util::FutureExt;
        // A consistency check in progress is stopped (it only reads; its last result stands) and ends first.
        if let Some(check) = self
            .memory
            .consistency_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            check.cancel();
        }
        let _exclusive = tokio::select! {
            guard = self.memory.member_work.lock() => guard,
            () = shutdown.cancelled() => return,
        };
        *self
            .memory
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let kill = shutdown.child_token();
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(kill.clone());
        self.status.send_modify(|s| {
            s.running_since = Some(SystemTime::now());
            s.started_by = Some(started_by.clone());
            s.stop_requested = false;
            s.member = None;
        });
        let run = std::panic::AssertUnwindSafe(self.run(&kill)).catch_unwind();
        tokio::pin!(run);
        let mut flagged = false;
        // The run itself looks at the kill switch between members; the API shows at once that it was pulled.
        let run = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                () = kill.cancelled(), if !flagged => {
                    flagged = true;
                    self.status.send_modify(|s| s.stop_requested = true);
                }
            }
        };
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let report = match run {
            Ok(report) => Some(report),
            Err(_) => {
                self.metrics.observe_defrag_abort(&self.cluster);
                self.record(
                    EventKind::DefragFailed,
                    "the defragmentation stopped on an internal error".into(),
                );
                None
            }
        };
        if let Some(report) = &report {
            self.finished(report, &started_by);
            *self
                .memory
                .last_run
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        }
        self.status.send_modify(|s| {
            s.running_since = None;
            s.member = None;
            s.stop_requested = false;
            if report.is_some() {
                s.last_run = report.clone();
            }
        });
    }

    async fn run(&self, kill: &CancellationToken) -> DefragReport {
        let mut poller = ClusterPoller::new(self.target.clone(), self.connector.clone());
        let observe = |p: Progress<'_>| match p {
            Progress::Started(r) => {
                // Every member's series exists, at 0, from the first run on.
                for m in &r.members {
                    self.metrics
                        .observe_defrag_member(&self.cluster, &m.member, false);
                }
                self.record(
                    EventKind::DefragStarted,
                    format!(
                        "defragmentation started: {} of {} members, the leader last",
                        r.members
                            .iter()
                            .filter(|m| m.action == MemberAction::NotReached)
                            .count(),
                        r.members.len()
                    ),
                )
            }
            Progress::MemberStarted(m) => {
                self.metrics
                    .observe_defrag_member(&self.cluster, &m.member, true);
                self.status
                    .send_modify(|s| s.member = Some(m.member.clone()));
            }
            Progress::MemberFinished(m) => {
                self.metrics
                    .observe_defrag_member(&self.cluster, &m.member, false);
                self.status.send_modify(|s| s.member = None);
                let message = match m.action {
                    MemberAction::Defragmented => format!(
                        "member {} defragmented in {:.1}s: {} -> {}",
                        m.member,
                        m.seconds.unwrap_or_default(),
                        m.size_before.map_or("?".into(), human_bytes),
                        m.size_after.map_or("?".into(), human_bytes)
                    ),
                    _ => format!(
                        "member {} not defragmented: {}",
                        m.member,
                        m.reason.as_deref().unwrap_or("unknown")
                    ),
                };
                self.record(EventKind::DefragMember, message);
            }
        };
        defrag::run(
            Cluster {
                poller: &mut poller,
                connector: &self.connector,
            },
            &self.options,
            kill,
            &observe,
        )
        .await
    }

    fn finished(&self, report: &DefragReport, started_by: &str) {
        self.metrics.observe_defrag_run(report, SystemTime::now());
        let why = report.message.as_deref().unwrap_or("");
        let (kind, message) = match report.result {
            RunResult::Success => (
                EventKind::DefragFinished,
                format!(
                    "defragmentation finished in {:.1}s: {} defragmented, {} reclaimed{}{}",
                    report.seconds,
                    report.defragmented().count(),
                    human_bytes(report.reclaimed_bytes),
                    report
                        .snapshot
                        .as_ref()
                        .map(|p| format!("; snapshot before: {}", p.display()))
                        .unwrap_or_default(),
                    report
                        .nospace
                        .as_ref()
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                ),
            ),
            RunResult::Refused => (
                EventKind::DefragRefused,
                format!("defragmentation ({started_by}) {why}"),
            ),
            RunResult::Failed | RunResult::Stopped => (
                EventKind::DefragFailed,
                format!(
                    "defragmentation {}: {why}",
                    report.result.as_str().replace('_', " ")
                ),
            ),
            RunResult::DryRun => return,
        };
        self.record(kind, message);
    }
}
