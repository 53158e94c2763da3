//! `etcd-sentinel defrag`: one rolling defragmentation, for a Kubernetes CronJob. The flags are etcd-defrag's
//! where they overlap (a CronJob switches by changing its image and command); the safety is this project's: the
//! gate before every member, the leader last, the lock in etcd, a snapshot first when asked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use comfy_table::{ContentArrangement, Table};
use tokio_util::sync::CancellationToken;

use etcd_sentinel::config::{Compression, DefragConfig};
use etcd_sentinel::etcd::connect::Connector;
use etcd_sentinel::maintenance::GateOptions;
use etcd_sentinel::maintenance::defrag::run::{Cluster, Progress};
use etcd_sentinel::maintenance::defrag::{
    self, DefragOptions, DefragReport, MemberAction, SnapshotBefore,
};
use etcd_sentinel::maintenance::lock;
use etcd_sentinel::maintenance::snapshot::check_destination;
use etcd_sentinel::probe::poller::ClusterPoller;
use etcd_sentinel::rule::Rule;
use etcd_sentinel::units::{human_bytes, parse_bytes, parse_wait};

use super::{CliError, ConnectionArgs, WriteOut, parse_duration, write_out};

#[derive(Debug, Args)]
pub struct DefragArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Defragment only members for which this holds, e.g. "dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024"
    /// (variables dbSize, dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage) [default: every member]
    #[arg(
        long,
        env = "ETCD_SENTINEL_DEFRAG_RULE",
        value_name = "RULE",
        default_value = ""
    )]
    pub defrag_rule: String,

    /// Say what would be done (the order, the rule's verdict per member); change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Compact once before the first member, keeping --compaction-keep-revisions behind the newest (off by
    /// default: compacting to the newest revision forces Kubernetes watchers to re-list)
    #[arg(long, env = "ETCD_SENTINEL_COMPACTION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub compaction: bool,

    /// How many revisions a compaction keeps behind the newest (at least 1)
    #[arg(long, value_name = "N", default_value = "10000", value_parser = clap::value_parser!(u64).range(1..))]
    pub compaction_keep_revisions: u64,

    /// Hand leadership to a defragmented follower before the leader's turn
    #[arg(long, env = "ETCD_SENTINEL_MOVE_LEADER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub move_leader: bool,

    /// Pause between two members, once the first is healthy and caught up
    #[arg(long, value_parser = parse_wait, value_name = "DURATION", default_value = "0s")]
    pub wait_between_defrags: Duration,

    /// Go on with the next member after one failed (the gate still refuses while a member is unhealthy)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub continue_on_error: bool,

    /// Leave members reached on a loopback address alone
    #[arg(long)]
    pub exclude_localhost: bool,

    /// After the run, disarm NOSPACE alarms when every member's database is under --disalarm-threshold of
    /// its quota
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub auto_disalarm: bool,

    /// The fraction of the quota every member must be under for NOSPACE alarms to be disarmed
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio, default_value = "0.9")]
    pub disalarm_threshold: f64,

    /// The quota of a member whose /metrics cannot be read (each member's own quota is used otherwise)
    #[arg(long, value_name = "BYTES", value_parser = parse_quota, default_value = "2147483648")]
    pub etcd_storage_quota_bytes: u64,

    /// Leave a member alone when less than this would be reclaimed (e.g. 64MiB)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value = "0")]
    pub min_reclaim: u64,

    /// How long one member's defragmentation may take, plus --member-timeout-per-gib for each GiB of it
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1m")]
    pub member_timeout: Duration,

    /// What each GiB of a member's database adds to --member-timeout
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1m")]
    pub member_timeout_per_gib: Duration,

    /// How long a member may take to be healthy and caught up after its defragmentation
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "2m")]
    pub catch_up_timeout: Duration,

    /// Allow defragmenting a single-member cluster (its clients wait while it runs)
    #[arg(long)]
    pub allow_single_member: bool,

    /// Take a verified snapshot into --snapshot-dir before the first member: no snapshot, no defragmentation
    #[arg(long, requires = "snapshot_dir")]
    pub snapshot_before: bool,

    /// Where --snapshot-before writes its snapshot
    #[arg(long, env = "ETCD_SENTINEL_SNAPSHOT_DIR", value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,

    /// The key prefix of the maintenance lock in the cluster (shared with daemons watching it)
    #[arg(long, env = "ETCD_SENTINEL_LOCK_PREFIX", value_name = "PREFIX", default_value = lock::DEFAULT_PREFIX)]
    pub lock_prefix: String,

    /// How long to wait for the lock when another runner holds it [default: 0s, give up at once]
    #[arg(long, value_parser = parse_wait, value_name = "DURATION", default_value = "0s")]
    pub lock_wait: Duration,

    /// Under NOSPACE etcd refuses every write, a lock's included: defragment without the lock. Only when no
    /// other runner (a daemon, another CronJob) can act on this cluster now
    #[arg(long)]
    pub nospace_without_lock: bool,

    /// The cluster's name in the report and the snapshot's file name
    #[arg(long, env = "ETCD_SENTINEL_NAME", default_value = "default")]
    pub name: String,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

fn parse_quota(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err(format!(
            "{text:?}: a quota above 0 (etcd's default is 2GiB)"
        )),
        q => Ok(q),
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "{text:?}: a fraction of the quota, above 0 and at most 1"
        )),
    }
}

impl DefragArgs {
    /// The flags as the daemon's `[cluster.defrag]` table, so that both runs are told the same way.
    fn options(&self) -> Result<DefragOptions, CliError> {
        let rule = Rule::parse(&self.defrag_rule)
            .map_err(|e| CliError::Usage(format!("--defrag-rule {e}")))?;
        let lock_prefix = etcd_sentinel::settings::check_lock_prefix(&self.lock_prefix)
            .map_err(|e| CliError::Usage(format!("--lock-prefix: {e}")))?;
        let snapshot = match (&self.snapshot_dir, self.snapshot_before) {
            (Some(dir), true) => {
                // Refused before the lock is taken, with the cause (a missing directory, a read-only one, …).
                check_destination(dir)
                    .map_err(|e| CliError::Usage(format!("--snapshot-dir: {e}")))?;
                Some(SnapshotBefore {
                    dir: dir.clone(),
                    compression: Compression::None,
                })
            }
            _ => None,
        };
        let config = DefragConfig {
            schedule: None,
            trigger: None,
            min_interval: Duration::ZERO,
            rule,
            move_leader: self.move_leader,
            snapshot_before: self.snapshot_before,
            compaction_keep_revisions: self.compaction.then_some(self.compaction_keep_revisions),
            // A window needs the revisions seen over time: the daemon's.
            compaction_keep_window: None,
            wait_between: self.wait_between_defrags,
            continue_on_error: self.continue_on_error,
            disalarm_threshold: self.auto_disalarm.then_some(self.disalarm_threshold),
            storage_quota_bytes: self.etcd_storage_quota_bytes,
            min_reclaim: self.min_reclaim,
            member_timeout: self.member_timeout,
            member_timeout_per_gib: self.member_timeout_per_gib,
            catch_up_timeout: self.catch_up_timeout,
            allow_single_member: self.allow_single_member,
            lock_wait: self.lock_wait,
            nospace_without_lock: self.nospace_without_lock,
        };
        // Each step polls afresh: a view older than this was not taken by this run.
        let gate = GateOptions {
            allow_single_member: false,
            max_view_age: Duration::from_secs(60),
        };
        let mut options = DefragOptions::from_config(&config, snapshot, &lock_prefix, gate);
        options.dry_run = self.dry_run;
        options.worth.exclude_localhost = self.exclude_localhost;
        Ok(options)
    }
}

pub async fn run(args: DefragArgs) -> Result<ExitCode, CliError> {
    if !etcd_sentinel::config::valid_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
            args.name
        )));
    }
    let format = write_out(args.write_out)?;
    let options = args.options()?;
    let settings = args.connection.settings()?;
    let target = defrag::run_target(args.connection.target(&args.name, &settings)?);
    let connector = Arc::new(Connector::new(settings).map_err(|e| CliError::Usage(e.to_string()))?);
    // Connections kept from one poll to the next: a run polls once per member.
    let mut poller = ClusterPoller::new(target, connector.clone());
    let cancel = CancellationToken::new();
    // SIGTERM (a CronJob's pod deleted) and ^C stop the run before the next member, never during one.
    // The first signal stops the run before its next member; a second drops it where it is, so that what it
    // holds is cleaned up on the way out (a snapshot's `.part` removed, the lock's keep-alive stopped).
    let quit = CancellationToken::new();
    let stopper = tokio::spawn({
        let (cancel, quit) = (cancel.clone(), quit.clone());
        async move {
            let Ok(mut terminate) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!(
                "asked to stop: the run ends before the next member (again to quit now; etcd finishes a \
                 defragmentation under way regardless, and the lock goes with its lease)"
            );
            cancel.cancel();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            quit.cancel();
        }
    });
    let run = defrag::run(
        Cluster {
            poller: &mut poller,
            connector: &connector,
        },
        &options,
        &cancel,
        &progress_line,
    );
    let report = tokio::select! {
        report = run => report,
        () = quit.cancelled() => {
            eprintln!("quit: the run was dropped where it was");
            return Ok(ExitCode::from(130));
        }
    };
    stopper.abort();
    match format {
        WriteOut::Json => println!(
            "{}",
            // Plain data with string keys: serialising cannot fail.
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        WriteOut::Table | WriteOut::Wide => print_table(&report, format == WriteOut::Wide),
    }
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_UNHEALTHY)
    })
}

/// One line per step on stderr, for the CronJob's log.
fn progress_line(p: Progress<'_>) {
    match p {
        Progress::Started(r) => eprintln!(
            "defragmenting {} of {} members of {}, one at a time, the leader last",
            r.members
                .iter()
                .filter(|m| m.action == MemberAction::NotReached)
                .count(),
            r.members.len(),
            r.cluster
        ),
        Progress::MemberStarted(m) => eprintln!(
            "defragmenting {} ({}, {})",
            m.member,
            m.endpoint.as_deref().unwrap_or("?"),
            m.size_before.map_or("?".into(), human_bytes)
        ),
        Progress::MemberFinished(m) => match m.action {
            MemberAction::Defragmented => eprintln!(
                "defragmented {} in {:.1}s: {} reclaimed",
                m.member,
                m.seconds.unwrap_or_default(),
                m.reclaimed_bytes.map_or("?".into(), human_bytes)
            ),
            _ => eprintln!(
                "{} failed: {}",
                m.member,
                m.reason.as_deref().unwrap_or("unknown")
            ),
        },
    }
}

fn print_table(report: &DefragReport, wide: bool) {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    if !wide {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table.set_header([
        "MEMBER",
        "ROLE",
        "ACTION",
        "BEFORE",
        "AFTER",
        "RECLAIMED",
        "TIME",
        "NOTE",
    ]);
    let size = |v: Option<u64>| v.map_or("-".into(), human_bytes);
    for m in &report.members {
        let action: &'static str = m.action.into();
        let role: &'static str = m.role.into();
        let note = match (&m.reason, &m.values) {
            (Some(reason), Some(v)) if m.action == MemberAction::Skipped => format!(
                "{reason} (dbSize={} dbSizeInUse={} dbSizeFree={} dbQuota={} dbQuotaUsage={:.3})",
                v.db_size, v.db_size_in_use, v.db_size_free, v.db_quota, v.db_quota_usage
            ),
            (Some(reason), _) => reason.clone(),
            (None, _) => String::new(),
        };
        table.add_row([
            m.member.clone(),
            role.to_string(),
            action.replace('_', " "),
            size(m.size_before),
            size(m.size_after),
            size(m.reclaimed_bytes),
            m.seconds.map_or("-".into(), |s| format!("{s:.1}s")),
            note,
        ]);
    }
    println!("{table}");
    if let Some(path) = &report.snapshot {
        println!("snapshot before: {}", path.display());
    }
    if let Some(c) = &report.compaction {
        println!("compaction: {}", c.message);
    }
    if let Some(moved) = &report.leader_moved {
        println!("leadership moved from {} to {}", moved.from, moved.to);
    }
    if let Some(n) = &report.nospace {
        println!("{n}");
    }
    let result: &'static str = report.result.into();
    println!(
        "{}: {}; {} reclaimed in {:.1}s{}",
        report.cluster,
        result.replace('_', " "),
        human_bytes(report.reclaimed_bytes),
        report.seconds,
        report
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
}
