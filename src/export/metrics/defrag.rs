//! The defragmentation families: runs by result, the last run's duration and end, bytes given back, and which
//! member is being defragmented right now (so that alerts can stay quiet about a member the sentinel itself is
//! blocking on purpose).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use strum::IntoEnumIterator;

use super::{MetricsError, name};
use crate::maintenance::defrag::{DefragReport, RunResult};

/// The results a daemon's run can end with (a dry run is only ever a plan the API answers with).
fn counted() -> impl Iterator<Item = RunResult> {
    RunResult::iter().filter(|r| *r != RunResult::DryRun)
}

pub(super) struct DefragFamilies {
    runs: IntCounterVec,
    duration: GaugeVec,
    reclaimed: IntCounterVec,
    last_run: GaugeVec,
    in_progress: IntGaugeVec,
    /// Members with an `in_progress` series, per cluster, to drop them with the cluster.
    members_seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl DefragFamilies {
    pub(super) fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let results: Vec<&str> = counted().map(RunResult::as_str).collect();
        let runs = IntCounterVec::new(
            Opts::new(
                name("defrag_runs_total"),
                format!(
                    "Rolling defragmentations by how they ended ({}).",
                    results.join(", ")
                ),
            ),
            &["cluster", "result"],
        )?;
        let duration = GaugeVec::new(
            Opts::new(
                name("defrag_duration_seconds"),
                "Duration of the last rolling defragmentation that was not refused, waits included.",
            ),
            &["cluster"],
        )?;
        let reclaimed = IntCounterVec::new(
            Opts::new(
                name("defrag_reclaimed_bytes_total"),
                "Bytes of database files given back by defragmentation, over every member.",
            ),
            &["cluster"],
        )?;
        let last_run = GaugeVec::new(
            Opts::new(
                name("defrag_last_run_timestamp_seconds"),
                "Unix time the last rolling defragmentation ended (any result but refused).",
            ),
            &["cluster"],
        )?;
        let in_progress = IntGaugeVec::new(
            Opts::new(
                name("defrag_in_progress"),
                "1 while the sentinel defragments this member (its reads and writes are blocked), else 0.",
            ),
            &["cluster", "member"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(reclaimed.clone()))?;
        registry.register(Box::new(last_run.clone()))?;
        registry.register(Box::new(in_progress.clone()))?;
        Ok(DefragFamilies {
            runs,
            duration,
            reclaimed,
            last_run,
            in_progress,
            members_seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// Every result's series at 0 and the byte counter, so rate() and increase() work from the first run.
    pub(super) fn init(&self, cluster: &str) {
        for result in counted() {
            self.runs.with_label_values(&[cluster, result.as_str()]);
        }
        self.reclaimed.with_label_values(&[cluster]);
    }

    pub(super) fn member(&self, cluster: &str, member: &str, active: bool) {
        // A poisoned lock only means another task panicked mid-update; the set is still usable.
        self.members_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cluster.to_string())
            .or_default()
            .insert(member.to_string());
        self.in_progress
            .with_label_values(&[cluster, member])
            .set(i64::from(active));
    }

    pub(super) fn finished(&self, report: &DefragReport, ended: std::time::SystemTime) {
        let cluster = report.cluster.as_str();
        if report.result == RunResult::DryRun {
            // A plan, not a run.
            return;
        }
        self.runs
            .with_label_values(&[cluster, report.result.as_str()])
            .inc();
        if matches!(report.result, RunResult::Refused | RunResult::DryRun) {
            return;
        }
        self.duration
            .with_label_values(&[cluster])
            .set(report.seconds);
        self.last_run
            .with_label_values(&[cluster])
            .set(crate::units::unix_seconds(ended));
        self.reclaimed
            .with_label_values(&[cluster])
            .inc_by(report.reclaimed_bytes);
        // No member is being defragmented once a run is over, whatever happened to it.
        for m in &report.members {
            self.member(cluster, &m.member, false);
        }
    }

    pub(super) fn aborted(&self, cluster: &str) {
        self.runs
            .with_label_values(&[cluster, RunResult::Failed.as_str()])
            .inc();
        let seen = self
            .members_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        for member in seen {
            self.member(cluster, &member, false);
        }
    }

    pub(super) fn forget(&self, cluster: &str) {
        for result in counted() {
            let _ = self.runs.remove_label_values(&[cluster, result.as_str()]);
        }
        let _ = self.duration.remove_label_values(&[cluster]);
        let _ = self.reclaimed.remove_label_values(&[cluster]);
        let _ = self.last_run.remove_label_values(&[cluster]);
        let seen = self
            .members_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster)
            .unwrap_or_default();
        for member in seen {
            let _ = self
                .in_progress
                .remove_label_values(&[cluster, member.as_str()]);
        }
    }
}
