//! The daemon's scheduled snapshot of one cluster, run by its maintenance task: read from the member the last
//! complete view names, verified and stored as `snapshot save` does, then pruned by the cluster's policy and,
//! when asked, proven by a restore drill. Every outcome is a metric and an event. The save is one step: a shutdown
//! waits for it (bounded by the task group's grace period) instead of cutting it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::SnapshotConfig;
use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::events::{EventKind, EventLog};
use crate::export::metrics::{Metrics, SnapshotOutcome};
use crate::maintenance::defrag::run::healthy_clients;
use crate::maintenance::lock::{LockError, LockSettings, MaintenanceLock, Owner};
use crate::maintenance::plan::snapshot_source;
use crate::maintenance::retention::{self, Policy};
use crate::maintenance::snapshot::{self, SaveRequest};
use crate::maintenance::store::s3::{RemoteError, S3Store};
use crate::maintenance::{drill, store};
use crate::state::{RunRecord, SnapshotStatus};
use crate::view::ClusterView;
use tokio::sync::watch;

use super::poll_task::record_maintenance;

pub struct SnapshotJob {
    pub cluster: String,
    pub config: SnapshotConfig,
    pub connector: Arc<Connector>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<Mutex<EventLog>>,
    /// What the API shows: running, next run, the last success, failure and drill.
    pub status: watch::Sender<SnapshotStatus>,
    /// The cluster's maintenance lock: two replicas of the daemon never snapshot it at once, nor while a
    /// defragmentation (of any runner) is under way.
    pub lock: LockSettings,
}

fn run_record(
    file: Option<String>,
    reason: Option<&str>,
    message: String,
    seconds: Option<f64>,
) -> RunRecord {
    RunRecord {
        at: SystemTime::now(),
        file,
        reason: reason.map(str::to_string),
        message,
        seconds,
    }
}

fn file_name(path: &std::path::Path) -> Option<String> {
    Some(crate::files::file_name(path)).filter(|n| !n.is_empty())
}

impl SnapshotJob {
    /// At start (and after a reload), the newest of this cluster's snapshots already in the directory is the
    /// last success /metrics shows, so that a schedule no longer kept after a restart still ages it. Every file
    /// with a sidecar there was verified before it got its name. A directory that cannot be read is the first
    /// run's business.
    pub fn remember_newest(&self) {
        let Ok(stored) = store::list(&self.config.dir) else {
            return;
        };
        // Oldest first: the last of this cluster's is the newest.
        if let Some(newest) = stored.iter().rfind(|s| s.sidecar.cluster == self.cluster) {
            let s = &newest.sidecar;
            self.metrics.observe_snapshot(
                &self.cluster,
                SnapshotOutcome::Found {
                    at: s.started_at,
                    size: s.size,
                    revision: s.revision,
                },
            );
        }
    }

    fn record(&self, kind: EventKind, message: String) {
        record_maintenance(&self.cluster, &self.log, kind, message);
    }

    fn failed(&self, reason: &'static str, message: String) {
        self.metrics
            .observe_snapshot(&self.cluster, SnapshotOutcome::Failed { reason });
        let message = format!("snapshot not saved ({reason}): {message}");
        self.status.send_modify(|s| {
            s.last_failure = Some(run_record(None, Some(reason), message.clone(), None));
        });
        self.record(EventKind::SnapshotFailed, message);
    }

    /// When the next scheduled run is due, for the API.
    pub fn set_next_run(&self, at: Option<SystemTime>) {
        self.status.send_if_modified(|s| {
            let changed = s.next_run != at;
            s.next_run = at;
            changed
        });
    }

    /// One run (scheduled or asked for), from the last complete view.
    pub async fn run_once(&self, view: Option<Arc<ClusterView>>) {
        use futures_util::FutureExt;
        self.status
            .send_modify(|s| s.running_since = Some(SystemTime::now()));
        // A panic in a library (object_store panics on some inputs) must not take the maintenance task, and with
        // it every later snapshot, down: it is this run's failure.
        let lock = match self.take_lock(view.as_deref()).await {
            Ok(lock) => lock,
            Err(()) => {
                self.status.send_modify(|s| s.running_since = None);
                return;
            }
        };
        let run = std::panic::AssertUnwindSafe(self.save_prune_drill(view));
        let outcome = run.catch_unwind().await;
        if let Some(lock) = lock {
            lock.release().await;
        }
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            self.failed(
                "internal",
                format!("the run stopped on an internal error: {what}"),
            );
        }
        self.status.send_modify(|s| s.running_since = None);
    }

    /// The maintenance lock for this run. A cluster that refuses writes (NOSPACE) takes no lock, from anyone:
    /// the snapshot, a read, goes on without it. `Err` (recorded as a failure) when another runner holds it.
    async fn take_lock(&self, view: Option<&ClusterView>) -> Result<Option<MaintenanceLock>, ()> {
        let Some(view) = view else {
            return Ok(None);
        };
        let clients = healthy_clients(view, &self.connector).await;
        let owner = Owner::me(&format!("snapshot of {}", self.cluster));
        match MaintenanceLock::acquire(clients, &self.lock, owner).await {
            Ok(lock) => Ok(Some(lock)),
            Err(e @ LockError::NoSpace { .. }) => {
                tracing::warn!(cluster = self.cluster, "{e}: snapshot without the lock");
                Ok(None)
            }
            Err(e) => {
                self.failed("lock", e.to_string());
                Err(())
            }
        }
    }

    async fn save_prune_drill(&self, view: Option<Arc<ClusterView>>) {
        let Some(view) = view else {
            return self.failed("no_view", "no complete poll of the cluster yet".into());
        };
        let source = match snapshot_source(&view) {
            Ok(s) => s,
            Err(e) => return self.failed("no_source", e),
        };
        let client = match Endpoint::parse(&source.endpoint) {
            Ok(ep) => match self.connector.connect(&ep).await {
                Ok(c) => c,
                Err(e) => return self.failed("connect", format!("{}: {e}", source.endpoint)),
            },
            Err(e) => return self.failed("connect", e.to_string()),
        };
        let mut request = SaveRequest::from_view(&self.cluster, &self.config.dir, &view, source);
        request.compression = self.config.compression;
        let saved = match snapshot::save(&client, request, |_, _| {}).await {
            Ok(saved) => saved,
            Err(e) => return self.failed(e.reason(), e.to_string()),
        };
        let s = &saved.sidecar;
        self.metrics.observe_snapshot(
            &self.cluster,
            SnapshotOutcome::Saved {
                at: s.started_at,
                size: s.size,
                revision: s.revision,
                seconds: s.duration_seconds,
            },
        );
        let message = format!(
            "snapshot saved: {} ({} bytes, revision {}, from {}) in {:.1}s",
            saved.path.display(),
            s.size,
            s.revision,
            s.source.name,
            s.duration_seconds
        );
        self.status.send_modify(|st| {
            st.last_success = Some(run_record(
                file_name(&saved.path),
                None,
                message.clone(),
                Some(s.duration_seconds),
            ));
        });
        self.record(EventKind::SnapshotSaved, message);
        if let Some(s3) = &self.config.s3 {
            self.upload(s3, &saved).await;
        }
        self.prune();
        if self.config.restore_drill {
            self.drill(&saved.path, s).await;
        }
    }

    /// Uploads the verified snapshot and its sidecar, then prunes the bucket by the same policy. A failure is
    /// counted by reason and recorded; the local copy stays either way.
    async fn upload(&self, config: &crate::config::S3Config, saved: &snapshot::Saved) {
        let failed = |e: &RemoteError, what: &str| {
            self.metrics.observe_upload(&self.cluster, Err(e.reason()));
            let message = format!("snapshot {what} ({}): {e}", e.reason());
            self.status.send_modify(|s| {
                s.last_failure = Some(run_record(
                    file_name(&saved.path),
                    Some(e.reason()),
                    message.clone(),
                    None,
                ));
            });
            self.record(EventKind::SnapshotFailed, message);
        };
        let store = match S3Store::new(config) {
            Ok(s) => s,
            Err(e) => return failed(&e, "not uploaded"),
        };
        let started = std::time::Instant::now();
        if let Err(e) = store
            .upload_snapshot(&saved.path, &saved.sidecar_path)
            .await
        {
            return failed(&e, "saved and verified locally, but not uploaded");
        }
        self.metrics
            .observe_upload(&self.cluster, Ok(SystemTime::now()));
        self.record(
            EventKind::SnapshotUploaded,
            format!(
                "snapshot uploaded: {} in {:.1}s",
                store.url(&saved.sidecar.file),
                started.elapsed().as_secs_f64()
            ),
        );
        let policy = Policy::from_config(&self.config);
        if policy.keeps_all() {
            return;
        }
        let listed = match store.list().await {
            Ok(l) => l,
            // The upload is done: an event, not an upload failure.
            Err(e) => {
                return self.record(
                    EventKind::SnapshotFailed,
                    format!(
                        "snapshot uploaded, but the bucket could not be listed to prune it: {e}"
                    ),
                );
            }
        };
        let entries: Vec<retention::Entry> = listed
            .iter()
            .filter(|r| r.cluster == self.cluster)
            .map(|r| r.retention_entry())
            .collect();
        let mut deleted = Vec::new();
        for (entry, why) in retention::to_delete(&entries, &policy, SystemTime::now()) {
            match store.delete(&entry.name).await {
                Ok(()) => deleted.push(format!("{} ({})", store.url(&entry.name), why.as_str())),
                Err(e) => self.record(EventKind::SnapshotFailed, format!("cannot delete {e}")),
            }
        }
        if !deleted.is_empty() {
            self.record(
                EventKind::SnapshotPruned,
                format!("snapshots pruned: {}", deleted.join(", ")),
            );
        }
    }

    /// Deletes this cluster's snapshots beyond the policy (never the newest, only files with our sidecar).
    fn prune(&self) {
        let policy = Policy::from_config(&self.config);
        if policy.keeps_all() {
            return;
        }
        let stored = match store::list(&self.config.dir) {
            Ok(s) => s,
            Err(e) => {
                return self.record(
                    EventKind::SnapshotFailed,
                    format!("cannot list {} to prune: {e}", self.config.dir.display()),
                );
            }
        };
        let mine: Vec<&store::Stored> = stored
            .iter()
            .filter(|s| s.sidecar.cluster == self.cluster)
            .collect();
        let entries: Vec<retention::Entry> = mine.iter().map(|s| s.retention_entry()).collect();
        let mut deleted = Vec::new();
        for (entry, why) in retention::to_delete(&entries, &policy, SystemTime::now()) {
            let Some(s) = mine.iter().find(|s| s.sidecar.file == entry.name) else {
                continue;
            };
            match store::delete(s) {
                Ok(()) => deleted.push(format!("{} ({})", entry.name, why.as_str())),
                Err(e) => self.record(
                    EventKind::SnapshotFailed,
                    format!("cannot delete {}: {e}", s.path.display()),
                ),
            }
        }
        if !deleted.is_empty() {
            self.record(
                EventKind::SnapshotPruned,
                format!("snapshots pruned: {}", deleted.join(", ")),
            );
        }
    }

    async fn drill(&self, path: &std::path::Path, sidecar: &snapshot::Sidecar) {
        let (revision, kv, size) = (sidecar.revision, sidecar.kv, Some(sidecar.size));
        let at = SystemTime::now();
        let etcd = crate::files::find_program(&self.config.etcd_bin);
        let result = match drill::DrillTools::find(&etcd) {
            Ok(tools) => drill::drill(path, drill::Expected { revision, kv, size }, &tools).await,
            Err(e) => Err(e),
        };
        let (kind, reason, message, seconds) = match result {
            Ok(report) => {
                self.metrics.observe_drill(&self.cluster, true, at);
                let message = format!(
                    "restore drill passed: {} restored and served revision {}{} in {:.1}s",
                    path.display(),
                    report.revision,
                    if report.hash_compared {
                        " with the source member's KV hash"
                    } else {
                        ""
                    },
                    report.seconds
                );
                (
                    EventKind::RestoreDrillPassed,
                    None,
                    message,
                    Some(report.seconds),
                )
            }
            Err(e) => {
                self.metrics.observe_drill(&self.cluster, false, at);
                self.metrics
                    .observe_snapshot(&self.cluster, SnapshotOutcome::Failed { reason: "drill" });
                (
                    EventKind::RestoreDrillFailed,
                    Some("drill"),
                    format!("{}: {e}", path.display()),
                    None,
                )
            }
        };
        self.status.send_modify(|s| {
            s.last_drill = Some(run_record(
                file_name(path),
                reason,
                message.clone(),
                seconds,
            ));
        });
        self.record(kind, message);
    }
}
