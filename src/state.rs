//! What the daemon's tasks share with its HTTP server: per cluster, the latest view (a watch channel, so readers
//! never wait for a poll), the event log, and what maintenance makes of the view. Written by the daemon's tasks,
//! read by the exporters; it imports neither.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

use crate::config::ClusterConfig;
use crate::events::{Event, EventLog, Tracker};
use crate::maintenance::{self, GateOptions, Readiness};
use crate::secret::Secret;
use crate::view::ClusterView;

pub type LatestView = watch::Receiver<Option<Arc<ClusterView>>>;
/// The last complete view (a poll's final one), which maintenance judges by; `None` until the first poll ends.
pub type CompleteView = watch::Receiver<Option<Arc<ClusterView>>>;

/// What a cluster's poller leaves behind when it restarts (a reload that changed the cluster): the event log,
/// and the tracker that knows the last view, so the first view after the restart is compared with it.
#[derive(Clone)]
pub struct History {
    pub log: Arc<Mutex<EventLog>>,
    pub tracker: Arc<Mutex<Tracker>>,
    /// What the defragmentation remembers across reloads.
    pub defrag: Arc<DefragMemory>,
}

/// Kept across reloads (a reload that restarts a cluster's tasks stops a run before its next member).
#[derive(Default)]
pub struct DefragMemory {
    /// When the last run was started (or refused): the trigger's `min_interval` runs from there.
    pub started: Mutex<Option<std::time::Instant>>,
    /// The last run's report, for the API.
    pub last_run: Mutex<Option<crate::maintenance::defrag::DefragReport>>,
    /// The revisions the polls saw, for a compaction that keeps a time window.
    pub revisions: Arc<Mutex<crate::maintenance::defrag::RevisionHistory>>,
    /// Held by a defragmentation run for the whole run and by a consistency check for the whole check: HashKV
    /// is never asked of a member this process defragments (it would wait for the rewrite to end).
    pub member_work: Arc<tokio::sync::Mutex<()>>,
    /// Stops the consistency check in progress: a defragmentation about to start pulls it rather than wait for a
    /// check that only reads.
    pub consistency_stop: Mutex<Option<tokio_util::sync::CancellationToken>>,
}

impl History {
    pub fn new() -> Self {
        History {
            log: Arc::new(Mutex::new(EventLog::new(EventLog::DEFAULT_CAPACITY))),
            tracker: Arc::new(Mutex::new(Tracker::default())),
            defrag: Arc::new(DefragMemory::default()),
        }
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

pub struct ClusterEntry {
    pub config: ClusterConfig,
    pub view: LatestView,
    pub history: History,
    pub complete: CompleteView,
    /// The scheduled snapshots' state and the way to ask for one now, when `[cluster.snapshot]` is configured.
    pub snapshots: Option<SnapshotControl>,
    /// The defragmentation's state, the way to ask for a run and to stop one, when `[cluster.defrag]` is.
    pub defrag: Option<DefragControl>,
}

/// What the API sees of a cluster's defragmentation, and how it starts or stops a run.
pub struct DefragControl {
    pub status: watch::Receiver<DefragStatus>,
    /// A request for a run now; holds one at most.
    pub requests: mpsc::Sender<()>,
    /// The kill switch of the run in progress (`None` between runs): cancelled, the run stops before its next
    /// member.
    pub stop: Arc<Mutex<Option<tokio_util::sync::CancellationToken>>>,
    /// What a run is told, for the plan the API answers with.
    pub options: crate::maintenance::defrag::DefragOptions,
}

/// The `status` of `GET /api/v1/clusters/{name}/defrag`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DefragStatus {
    #[serde(serialize_with = "crate::units::serialize_opt_unix_seconds")]
    pub running_since: Option<SystemTime>,
    /// The member being defragmented right now.
    pub member: Option<String>,
    /// Why the run in progress started: the schedule, the trigger (with the member's values), or the API.
    pub started_by: Option<String>,
    /// The kill switch was pulled: the run ends before its next member.
    pub stop_requested: bool,
    #[serde(serialize_with = "crate::units::serialize_opt_unix_seconds")]
    pub next_run: Option<SystemTime>,
    /// The report of the last run that ended (or was refused).
    pub last_run: Option<crate::maintenance::defrag::DefragReport>,
}

/// What the API sees of a cluster's snapshots, and how it asks the maintenance task for one now.
pub struct SnapshotControl {
    pub status: watch::Receiver<SnapshotStatus>,
    /// A request for a snapshot now; holds one at most (a second while one waits is refused).
    pub trigger: mpsc::Sender<()>,
}

/// The state of a cluster's snapshots (the `GET …/snapshots` answer, with the stored list beside it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotStatus {
    /// When the save in progress began; `null` when none is.
    #[serde(serialize_with = "crate::units::serialize_opt_unix_seconds")]
    pub running_since: Option<SystemTime>,
    #[serde(serialize_with = "crate::units::serialize_opt_unix_seconds")]
    pub next_run: Option<SystemTime>,
    pub last_success: Option<RunRecord>,
    pub last_failure: Option<RunRecord>,
    pub last_drill: Option<RunRecord>,
}

/// One save or drill: when, of which file, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub at: SystemTime,
    /// The snapshot's file name, when there is one.
    pub file: Option<String>,
    /// A failure's reason (the `reason` label of the failure counters); `null` for a success.
    pub reason: Option<String>,
    pub message: String,
    pub seconds: Option<f64>,
}

impl ClusterEntry {
    pub fn latest(&self) -> Option<Arc<ClusterView>> {
        self.view.borrow().clone()
    }

    /// Whether the cluster may be touched now: the maintenance gate on the last complete view, judged at `now`
    /// (so a view that is no longer refreshed is refused for its age).
    pub fn readiness(&self, now: std::time::SystemTime) -> Option<Readiness> {
        let view = self.complete.borrow().clone()?;
        let options = GateOptions::for_interval(self.config.interval);
        Some(maintenance::assess(&view, now, &options))
    }

    pub fn events(&self) -> Vec<Event> {
        // A poisoned lock means a poller panicked while appending; the log itself is still consistent.
        self.history
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
    }
}

/// The API token that unlocks mutating endpoints, replaced when a reload reads a new one: the old one stops
/// working at once.
#[derive(Default)]
pub struct ApiToken(RwLock<Option<Secret>>);

/// What a reload did to the API token, for the log (which never shows the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenChange {
    Unchanged,
    Set,
    Replaced,
    Removed,
}

impl ApiToken {
    pub fn new(token: Option<Secret>) -> Self {
        ApiToken(RwLock::new(token))
    }

    pub fn get(&self) -> Option<Secret> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, token: Option<Secret>) -> TokenChange {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        let change = match (&*current, &token) {
            (None, None) => TokenChange::Unchanged,
            (Some(a), Some(b)) if a == b => TokenChange::Unchanged,
            (None, Some(_)) => TokenChange::Set,
            (Some(_), Some(_)) => TokenChange::Replaced,
            (Some(_), None) => TokenChange::Removed,
        };
        *current = token;
        change
    }
}

/// The daemon's shared state. Lock order: only `clusters`, held briefly, never across an await.
#[derive(Default)]
pub struct Shared {
    clusters: RwLock<BTreeMap<String, ClusterEntry>>,
}

impl Shared {
    pub fn new() -> Self {
        Shared::default()
    }

    pub fn insert(&self, entry: ClusterEntry) {
        self.write().insert(entry.config.name.clone(), entry);
    }

    pub fn remove(&self, name: &str) -> Option<ClusterEntry> {
        self.write().remove(name)
    }

    /// Runs `f` on one cluster's entry, if it exists.
    pub fn with_cluster<T>(&self, name: &str, f: impl FnOnce(&ClusterEntry) -> T) -> Option<T> {
        self.read().get(name).map(f)
    }

    /// Latest views of every cluster, `None` where the first poll has not completed.
    pub fn latest_views(&self) -> Vec<(String, Option<Arc<ClusterView>>)> {
        self.read()
            .iter()
            .map(|(name, e)| (name.clone(), e.latest()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ClusterEntry>> {
        self.clusters.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ClusterEntry>> {
        self.clusters.write().unwrap_or_else(|p| p.into_inner())
    }
}
