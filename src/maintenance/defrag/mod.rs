//! Rolling defragmentation: followers first, the leader last, one member at a time, each step gated on a fresh
//! poll, under a lock in the cluster itself, after a verified snapshot when asked.
//!
//! [`plan`] is pure: what a run would do from one view (the dry run, and the answer to the API's POST). [`run`]
//! does it, asking the gate and the rule again before every member.

pub mod decide;
pub mod revisions;
pub mod run;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Compression, DefragConfig};
use crate::id::Id;
use crate::maintenance::gate::{self, GateOptions, Refusal};
use crate::maintenance::lock::LockSettings;
use crate::maintenance::plan::{Role, rolling_order};
use crate::names::serialize_as_name;
use crate::rule::RuleInputs;
use crate::view::ClusterView;
pub use decide::{Decision, MemberTimeout, Worth};
pub use revisions::RevisionHistory;
pub use run::run;

/// How a run ended: the `result` label of `defrag_runs_total` and the report's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum RunResult {
    /// Every member was defragmented or skipped by the rule.
    Success,
    /// A member's defragmentation, the snapshot before, or a wait for catch-up failed.
    Failed,
    /// Not started: the cluster was not fit, or another runner holds the lock.
    Refused,
    /// Stopped before a member: asked to (the kill switch, SIGTERM), the leader changed on its own, the gate
    /// refused, or the lock was lost.
    Stopped,
    /// Nothing was changed, as asked.
    DryRun,
}

serialize_as_name!(RunResult);

impl RunResult {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What was done with one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum MemberAction {
    Defragmented,
    /// A dry run's answer: it would be.
    WouldDefragment,
    Skipped,
    Failed,
    /// The run stopped before it.
    NotReached,
}

serialize_as_name!(MemberAction);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberReport {
    pub member: String,
    pub member_id: Id,
    pub endpoint: Option<String>,
    pub role: Role,
    pub action: MemberAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule's variables for this member, as last evaluated.
    pub values: Option<RuleInputs>,
    pub size_before: Option<u64>,
    pub in_use_before: Option<u64>,
    pub size_after: Option<u64>,
    pub reclaimed_bytes: Option<u64>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderMove {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactionReport {
    /// The revision compacted to, or none when there was nothing old enough.
    pub revision: Option<i64>,
    pub newest_revision: i64,
    /// What was asked to be kept: a number of revisions, or the revisions of a time window.
    pub kept_revisions: Option<u64>,
    pub kept_seconds: Option<f64>,
    pub message: String,
}

/// A run, as it went (or, for a dry run and the API's plan, as it would go).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefragReport {
    pub cluster: String,
    pub result: RunResult,
    /// Why it was refused, stopped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub refusals: Vec<Refusal>,
    pub rule: String,
    /// The maintenance lock: held (its key), or why the run went on without it.
    pub lock: Option<String>,
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub started_at: SystemTime,
    pub seconds: f64,
    /// The verified snapshot taken before the first member.
    pub snapshot: Option<PathBuf>,
    pub compaction: Option<CompactionReport>,
    pub leader_moved: Option<LeaderMove>,
    /// In order: as they were (or would be) taken.
    pub members: Vec<MemberReport>,
    pub reclaimed_bytes: u64,
    /// What was done about NOSPACE alarms after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nospace: Option<String>,
}

impl DefragReport {
    pub fn succeeded(&self) -> bool {
        matches!(self.result, RunResult::Success | RunResult::DryRun)
    }

    pub fn defragmented(&self) -> impl Iterator<Item = &MemberReport> {
        self.members
            .iter()
            .filter(|m| m.action == MemberAction::Defragmented)
    }
}

/// The snapshot that must exist before the first member is touched.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotBefore {
    pub dir: PathBuf,
    pub compression: Compression,
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct DefragOptions {
    pub worth: Worth,
    pub dry_run: bool,
    /// Hand leadership to a defragmented follower before the leader's turn.
    pub move_leader: bool,
    pub continue_on_error: bool,
    pub wait_between: Duration,
    pub member_timeout: MemberTimeout,
    /// How long a member may take to be healthy and caught up after its defragmentation (and a new leader to be
    /// seen after a move).
    pub catch_up_timeout: Duration,
    pub gate: GateOptions,
    /// Compact once before the first member, keeping this many revisions behind the newest.
    pub compaction_keep: Option<u64>,
    /// Or keeping the revisions of this long: compacted to the revision the cluster was at then, as `revisions`
    /// (the daemon's polls) saw it.
    pub compaction_window: Option<(Duration, Arc<Mutex<RevisionHistory>>)>,
    /// Disarm NOSPACE alarms after the run when every member is under this fraction of its quota.
    pub disalarm_threshold: Option<f64>,
    pub lock: LockSettings,
    /// Under NOSPACE no lock can be written: go on without it. Only for a runner known to be the only one.
    pub nospace_without_lock: bool,
    pub snapshot_before: Option<SnapshotBefore>,
}

impl DefragOptions {
    /// The defaults of the command and the configuration file, with a rule.
    pub fn new(worth: Worth, gate: GateOptions) -> Self {
        DefragOptions {
            worth,
            dry_run: false,
            move_leader: false,
            continue_on_error: false,
            wait_between: Duration::ZERO,
            member_timeout: MemberTimeout::default(),
            catch_up_timeout: Duration::from_secs(120),
            gate,
            compaction_keep: None,
            compaction_window: None,
            disalarm_threshold: Some(0.9),
            lock: LockSettings::default(),
            nospace_without_lock: false,
            snapshot_before: None,
        }
    }
}

impl DefragOptions {
    /// What a run of this configuration is told: the daemon's `[cluster.defrag]`, and the `defrag` command's
    /// flags made into the same table. `snapshot` is where `snapshot_before` writes.
    pub fn from_config(
        config: &DefragConfig,
        snapshot: Option<SnapshotBefore>,
        lock_prefix: &str,
        gate: GateOptions,
    ) -> Self {
        let mut options = DefragOptions::new(
            Worth {
                rule: config.rule.clone(),
                fallback_quota: config.storage_quota_bytes,
                min_reclaim: config.min_reclaim,
                exclude_localhost: false,
            },
            GateOptions {
                allow_single_member: config.allow_single_member,
                ..gate
            },
        );
        options.move_leader = config.move_leader;
        options.continue_on_error = config.continue_on_error;
        options.wait_between = config.wait_between;
        options.member_timeout = MemberTimeout {
            base: config.member_timeout,
            per_gib: config.member_timeout_per_gib,
        };
        options.catch_up_timeout = config.catch_up_timeout;
        options.compaction_keep = config.compaction_keep_revisions;
        options.compaction_window = config
            .compaction_keep_window
            .map(|w| (w, Arc::new(Mutex::new(RevisionHistory::default()))));
        options.disalarm_threshold = config.disalarm_threshold;
        options.lock = LockSettings {
            prefix: lock_prefix.to_string(),
            ttl: crate::maintenance::lock::DEFAULT_TTL,
            wait: config.lock_wait,
        };
        options.nospace_without_lock = config.nospace_without_lock;
        options.snapshot_before = snapshot.filter(|_| config.snapshot_before);
        options
    }
}

fn member_report(
    view: &ClusterView,
    member: Id,
    name: String,
    role: Role,
    decision: &Decision,
    dry_run: bool,
) -> MemberReport {
    let row = decide::member_row(view, member);
    let (action, reason, values) = match decision {
        Decision::Defragment { inputs } if dry_run => {
            (MemberAction::WouldDefragment, None, Some(*inputs))
        }
        Decision::Defragment { inputs } => (MemberAction::NotReached, None, Some(*inputs)),
        Decision::Skip { reason, inputs } => (MemberAction::Skipped, Some(reason.clone()), *inputs),
    };
    MemberReport {
        member: name,
        member_id: member,
        endpoint: row.map(|r| r.endpoint.clone()),
        role,
        action,
        reason,
        values,
        size_before: row.and_then(|r| r.db_size_bytes),
        in_use_before: row.and_then(|r| r.db_size_in_use_bytes),
        size_after: None,
        reclaimed_bytes: None,
        seconds: None,
    }
}

/// The target a run polls: the cluster's, with members' /metrics read at the run's first poll only. The rule's
/// `dbQuota` comes from there, and a quota changes only with a restart of its member, which the gate before the
/// next member sees; sizes and indexes come from Status at every poll. A poll of three members without /metrics
/// is a few milliseconds, and a run polls once per member.
pub fn run_target(mut target: crate::settings::Target) -> crate::settings::Target {
    target.vitals_interval = Some(Duration::from_secs(24 * 3600));
    target
}

/// What a run would do from `view` at `now`: refused with the gate's reasons, or every member in the order it
/// would be taken with the rule's verdict. Members to be defragmented stand as `would_defragment` in a dry run,
/// `not_reached` otherwise (until the run reaches them).
pub fn plan(view: &ClusterView, now: SystemTime, options: &DefragOptions) -> DefragReport {
    let refusals = gate::refusals(view, now, &options.gate);
    let members = rolling_order(view)
        .into_iter()
        .map(|step| {
            let decision = decide::decide(view, step.member_id, &options.worth);
            member_report(
                view,
                step.member_id,
                step.member,
                step.role,
                &decision,
                options.dry_run,
            )
        })
        .collect();
    let refused = !refusals.is_empty();
    DefragReport {
        cluster: view.cluster.clone(),
        result: if refused {
            RunResult::Refused
        } else {
            RunResult::DryRun
        },
        message: refused.then(|| {
            let reasons: Vec<&str> = refusals.iter().map(|r| r.message.as_str()).collect();
            format!("not started: {}", reasons.join("; "))
        }),
        refusals,
        rule: options.worth.rule.text().to_string(),
        lock: None,
        started_at: now,
        seconds: 0.0,
        snapshot: None,
        compaction: None,
        leader_moved: None,
        members,
        reclaimed_bytes: 0,
        nospace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Rule;
    use crate::testing::*;
    use crate::view;

    fn options(rule: &str) -> DefragOptions {
        let mut o = DefragOptions::new(
            Worth {
                rule: Rule::parse(rule).unwrap(),
                fallback_quota: 2 << 30,
                min_reclaim: 0,
                exclude_localhost: false,
            },
            GateOptions::for_interval(Duration::from_secs(10)),
        );
        o.dry_run = true;
        o
    }

    #[test]
    fn a_plan_takes_followers_first_and_shows_the_rule_values_of_skipped_members() {
        let (_, probes) = three();
        let v = view::build("prod", &probes, polled_at());
        let plan = plan(&v, polled_at(), &options("dbSizeFree > 100"));
        assert_eq!(plan.result, RunResult::DryRun);
        let roles: Vec<Role> = plan.members.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::Follower, Role::Follower, Role::Leader]);
        // 1000 bytes, 600 in use: 400 free.
        assert!(
            plan.members
                .iter()
                .all(|m| m.action == MemberAction::WouldDefragment)
        );
        let skipped = super::plan(&v, polled_at(), &options("dbSizeFree > 1000"));
        let m = &skipped.members[0];
        assert_eq!(m.action, MemberAction::Skipped);
        assert_eq!(m.values.unwrap().db_size_free, 400.0);
        let json = serde_json::to_value(&skipped).unwrap();
        assert_eq!(json["members"][0]["action"], "skipped");
        assert_eq!(json["members"][0]["values"]["dbSizeFree"], 400.0);
        assert_eq!(json["result"], "dry_run");
    }

    #[test]
    fn a_member_down_refuses_the_plan() {
        let (_, mut probes) = three();
        probes[2] = down(2);
        let v = view::build("prod", &probes, polled_at());
        let plan = plan(&v, polled_at(), &options(""));
        assert_eq!(plan.result, RunResult::Refused);
        assert!(plan.message.unwrap().contains("m2"));
    }
}
