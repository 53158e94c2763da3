//! `etcd-sentinel snapshot save|verify|list|prune`: verified snapshot backups, one shot.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table};

use etcd_sentinel::config::{Compression, S3Config};
use etcd_sentinel::etcd::connect::Connector;
use etcd_sentinel::etcd::endpoint::Endpoint;
use etcd_sentinel::maintenance::plan::snapshot_source;
use etcd_sentinel::maintenance::restore_plan;
use etcd_sentinel::maintenance::retention::{self, Policy};
use etcd_sentinel::maintenance::snapshot::{self, SaveRequest, SnapshotError};
use etcd_sentinel::maintenance::store::s3::S3Store;
use etcd_sentinel::maintenance::store::{self, Stored};
use etcd_sentinel::maintenance::{bolt, compress, drill};
use etcd_sentinel::probe::poller::ClusterPoller;
use etcd_sentinel::units::{human_bytes, unix_seconds};

use super::snapshot_s3::{S3Args, split_object_url};
use super::{CliError, ConnectionArgs, WriteOut, write_out};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a snapshot from a healthy member (a caught-up follower, else the leader), verify it, and write it
    /// atomically with a JSON sidecar (exit 0 saved, 1 failed, 2 bad usage)
    Save(Box<SaveArgs>),
    /// Check a snapshot file: its size, the SHA-256 trailer, its sidecar; print its revision (exit 0 sound, 1 not)
    Verify(VerifyArgs),
    /// List the snapshots in a directory (those this tool made: a name of its pattern with a sidecar)
    List(ListArgs),
    /// Delete snapshots beyond a retention policy; never the newest one, never a file this tool did not make
    Prune(PruneArgs),
    /// Print the commands that restore the cluster from a snapshot, per member: the restore (new data dir, new
    /// cluster token) and the etcd flags that start it, with the recorded or new peer URLs
    RestorePlan(RestorePlanArgs),
}

#[derive(Debug, Args)]
pub struct RestorePlanArgs {
    /// The snapshot file (its sidecar, FILE.json, gives the members)
    pub file: PathBuf,

    /// A member's new peer URL, for a restore on other addresses (repeatable): NAME=URL
    #[arg(long = "member", value_name = "NAME=URL", value_parser = parse_member)]
    pub members: Vec<(String, String)>,

    /// Where the members' new data directories go (one per member under it) [default: /var/lib/etcd-restored-<time>]
    #[arg(long, value_name = "DIR")]
    pub data_dir_root: Option<String>,

    /// The new cluster's token [default: <cluster>-restored-<time>]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// The restore tool: etcdutl or etcdctl [default: etcdutl on the PATH, else etcdctl]
    #[arg(long, value_name = "FILE")]
    pub restore_tool: Option<PathBuf>,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table, a shell script]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

fn parse_member(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PEER-URL"))?;
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.port().is_none() {
        return Err(format!("{url:?}: a peer URL is http(s)://host:port"));
    }
    Ok((name.to_string(), url.to_string()))
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Directory to write the snapshot and its sidecar to (it must exist)
    #[arg(long, env = "ETCD_SENTINEL_SNAPSHOT_DIR", value_name = "DIR")]
    pub dir: PathBuf,

    /// The cluster's name in the file name and the sidecar
    #[arg(long, env = "ETCD_SENTINEL_NAME", default_value = "default")]
    pub name: String,

    /// Compress the verified snapshot: none or zstd (`.db.zst`)
    #[arg(long, env = "ETCD_SENTINEL_COMPRESS", value_name = "HOW", default_value = "none", value_parser = parse_compression)]
    pub compress: Compression,

    /// Upload the verified snapshot and its sidecar there too (the local copy stays)
    #[command(flatten)]
    pub s3: S3Args,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot file, or s3://BUCKET/[PREFIX/]NAME (downloaded with its sidecar into a temporary directory)
    pub file: PathBuf,

    #[command(flatten)]
    pub s3: S3Args,

    /// Also restore it into a temporary directory, start a throwaway etcd on a free loopback port, and check the
    /// revision, key count and KV hash its sidecar recorded (the restore drill); everything is removed afterwards
    #[arg(long)]
    pub restore: bool,

    /// The etcd binary the drill starts (etcdutl or etcdctl is looked for beside it, then on the PATH)
    #[arg(
        long,
        env = "ETCD_SENTINEL_ETCD_BIN",
        value_name = "FILE",
        default_value = "etcd"
    )]
    pub etcd_bin: PathBuf,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Directory of snapshots
    #[arg(
        long,
        env = "ETCD_SENTINEL_SNAPSHOT_DIR",
        value_name = "DIR",
        required_unless_present = "s3",
        conflicts_with = "s3"
    )]
    pub dir: Option<PathBuf>,

    /// Or the snapshots in S3-compatible storage
    #[command(flatten)]
    pub s3: S3Args,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Directory of snapshots
    #[arg(
        long,
        env = "ETCD_SENTINEL_SNAPSHOT_DIR",
        value_name = "DIR",
        required_unless_present = "s3"
    )]
    pub dir: Option<PathBuf>,

    /// S3-compatible storage to prune by the same policy (with --dir, both)
    #[command(flatten)]
    pub s3: S3Args,

    /// Keep the newest N of each cluster
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_last: Option<u64>,

    /// Delete snapshots older than this (e.g. 14d)
    #[arg(long, value_parser = parse_age, value_name = "DURATION", conflicts_with_all = ["keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"])]
    pub max_age: Option<Duration>,

    /// Keep the newest snapshot of each of the last N hours (grandfather-father-son, with the three below)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_hourly: Option<u32>,

    /// Keep the newest snapshot of each of the last N days (UTC)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,

    /// Keep the newest snapshot of each of the last N ISO weeks
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,

    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,

    /// Say what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse().map_err(|_| format!("{text:?}: none or zstd"))
}

/// An age for retention: up to ten years (a duration of the poll kind is capped at a day).
fn parse_age(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 36h, 14d)"))?;
    if d.is_zero() || d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err(format!("{text:?}: between a second and ten years"));
    }
    Ok(d)
}

pub async fn run(args: SnapshotArgs) -> Result<ExitCode, CliError> {
    match args.command {
        SnapshotCommand::Save(a) => save(*a).await,
        SnapshotCommand::Verify(a) => verify(a).await,
        SnapshotCommand::List(a) => list(a).await,
        SnapshotCommand::Prune(a) => prune(a).await,
        SnapshotCommand::RestorePlan(a) => restore_plan(a).await,
    }
}

fn print_json(value: &serde_json::Value) {
    // Plain data with string keys: serialising cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn save(args: SaveArgs) -> Result<ExitCode, CliError> {
    if !etcd_sentinel::config::valid_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
            args.name
        )));
    }
    let format = write_out(args.write_out)?;
    if !args.dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--dir {}: not a directory (create it first)",
            args.dir.display()
        )));
    }
    // Bad S3 flags are refused before anything is streamed.
    let remote = args.s3.store()?;
    let settings = args.connection.settings()?;
    let target = args.connection.target(&args.name, &settings)?;
    let connector = Arc::new(Connector::new(settings).map_err(|e| CliError::Usage(e.to_string()))?);
    let view = ClusterPoller::new(target, connector.clone())
        .one_shot()
        .poll()
        .await;
    let source = snapshot_source(&view).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    let endpoint =
        Endpoint::parse(&source.endpoint).map_err(|e| CliError::Failed(anyhow::anyhow!("{e}")))?;
    let client = connector
        .connect(&endpoint)
        .await
        .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", source.endpoint)))?;
    let mut request = SaveRequest::from_view(&args.name, &args.dir, &view, source);
    request.compression = args.compress;
    let bar = progress_bar();
    let saved = snapshot::save(&client, request, |done, total| {
        if let Some(bar) = &bar {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
        }
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let saved = saved.map_err(|e| match e {
        SnapshotError::Destination { .. } => CliError::Usage(e.to_string()),
        e => CliError::Failed(anyhow::anyhow!("snapshot not saved ({}): {e}", e.reason())),
    })?;
    let s = &saved.sidecar;
    let uploaded = match &remote {
        None => None,
        Some((store, _)) => {
            store
                .upload_snapshot(&saved.path, &saved.sidecar_path)
                .await
                .map_err(|e| {
                    CliError::Failed(anyhow::anyhow!(
                        "snapshot {} saved and verified, but not uploaded ({}): {e}",
                        saved.path.display(),
                        e.reason()
                    ))
                })?;
            Some(store.url(&s.file))
        }
    };
    match format {
        WriteOut::Json => print_json(&serde_json::json!({
            "path": saved.path,
            "sidecar": saved.sidecar_path,
            "uploaded": uploaded,
            "snapshot": s,
        })),
        _ => println!(
            "saved {} ({}, revision {}, raft index {}) from {} ({}) in {:.1}s; sha256 {}{}",
            saved.path.display(),
            human_bytes(s.size),
            s.revision,
            s.raft_index,
            s.source.name,
            s.source.endpoint,
            s.duration_seconds,
            s.sha256_etcd,
            uploaded
                .map(|u| format!("; uploaded to {u}"))
                .unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal; plain output (nothing until the end) otherwise.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} snapshot {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

async fn verify(mut args: VerifyArgs) -> Result<ExitCode, CliError> {
    let format = write_out(args.write_out)?;
    // An object in S3: downloaded with its sidecar into a scratch directory (removed when done), then checked
    // like a local file.
    let _scratch;
    let shown = args.file.display().to_string();
    if let Some(url) = shown.strip_prefix("s3://").map(|_| shown.clone()) {
        let (at, name) = split_object_url(&url).map_err(CliError::Usage)?;
        let (store, _) = args.s3.store_at(&at)?;
        let dir = tempfile::Builder::new()
            .prefix("etcd-sentinel-verify-")
            .tempdir()
            .map_err(|e| CliError::Failed(anyhow::anyhow!("a scratch directory: {e}")))?;
        args.file = store
            .download(&name, dir.path())
            .await
            .map_err(|e| CliError::Failed(anyhow::anyhow!("{e} ({})", e.reason())))?;
        _scratch = dir;
    }
    // Only a regular file: a FIFO would block the check (and the signals behind it), a directory is no snapshot.
    match std::fs::metadata(&args.file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "{}: not a regular file",
                args.file.display()
            )));
        }
        Err(e) => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "{}: {e}",
                args.file.display()
            )));
        }
    }
    // The sidecar, when there is one, must agree with the file; one that cannot be read is an error, not "none".
    let sidecar_path = PathBuf::from(format!("{}.json", args.file.display()));
    let sidecar =
        snapshot::read_sidecar(&sidecar_path).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    // A `.zst` is checked as what it holds: decompressed into a scratch directory, then like any snapshot.
    let raw = compress::readable_async(&args.file, sidecar.as_ref().map(|s| s.size))
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    let facts = bolt::inspect(&raw.path).map_err(|e| {
        // Name the file the user gave, not the scratch copy.
        CliError::Failed(anyhow::anyhow!(
            "{}",
            e.to_string().replace(
                &raw.path.display().to_string(),
                &args.file.display().to_string()
            )
        ))
    })?;
    if let Some(s) = &sidecar
        && (s.sha256_etcd != facts.sha256 || s.revision != facts.revision || s.size != facts.size)
    {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{}: the file (sha256 {}, revision {}, {} bytes) is not the one its sidecar {} describes (sha256 {}, \
             revision {}, {} bytes)",
            args.file.display(),
            facts.sha256,
            facts.revision,
            facts.size,
            sidecar_path.display(),
            s.sha256_etcd,
            s.revision,
            s.size
        )));
    }
    if let (Some(s), Some(stored)) = (&sidecar, &raw.stored_sha256)
        && s.sha256_file != *stored
    {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{}: the stored file's sha256 {stored} is not the {} its sidecar {} records",
            args.file.display(),
            s.sha256_file,
            sidecar_path.display()
        )));
    }
    let drilled = if args.restore {
        let etcd = etcd_sentinel::files::find_program(&args.etcd_bin);
        let tools = drill::DrillTools::find(&etcd).map_err(|e| CliError::Usage(e.to_string()))?;
        let expected = drill::Expected {
            revision: facts.revision,
            kv: sidecar.as_ref().and_then(|s| s.kv),
            size: Some(facts.size),
        };
        Some(
            drill::drill(&raw.path, expected, &tools)
                .await
                .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", args.file.display())))?,
        )
    } else {
        None
    };
    match format {
        WriteOut::Json => print_json(&serde_json::json!({
            "file": args.file,
            "ok": true,
            "restore_drill": drilled,
            "size": facts.size,
            "sha256": facts.sha256,
            "revision": facts.revision,
            "raft_index": facts.raft_index,
            "sidecar": sidecar.is_some(),
        })),
        _ => println!(
            "{}: ok, {} bytes, revision {}, raft index {}, sha256 {}{}",
            args.file.display(),
            facts.size,
            facts.revision,
            facts.raft_index,
            facts.sha256,
            if sidecar.is_some() {
                ", agrees with its sidecar"
            } else {
                " (no sidecar)"
            }
        ),
    }
    if let (Some(d), WriteOut::Table | WriteOut::Wide) = (&drilled, format) {
        println!(
            "restore drill: restored with {} and served revision {}{}{} in {:.1}s",
            d.restore_tool,
            d.revision,
            d.key_count
                .map_or_else(String::new, |n| format!(", {n} keys")),
            if d.hash_compared {
                ", the KV hash of the source member"
            } else {
                " (no KV hash to compare)"
            },
            d.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn listed(dir: &Path) -> Result<Vec<Stored>, CliError> {
    store::list(dir).map_err(|e| CliError::Usage(format!("--dir {}: {e}", dir.display())))
}

async fn list(args: ListArgs) -> Result<ExitCode, CliError> {
    let format = write_out(args.write_out)?;
    if let Some((store, config)) = args.s3.store()? {
        return list_remote(&store, &config, format).await;
    }
    // clap requires --dir without --s3.
    let dir = args.dir.unwrap_or_default();
    let stored = listed(&dir)?;
    if format == WriteOut::Json {
        let items: Vec<serde_json::Value> = stored
            .iter()
            .map(|s| serde_json::json!({ "path": s.path, "size_on_disk": s.size, "snapshot": s.sidecar }))
            .collect();
        print_json(&serde_json::json!({ "snapshots": items }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["NAME", "CLUSTER", "REVISION", "SIZE", "TAKEN (UTC)", "FROM"]);
    for s in &stored {
        let c = &s.sidecar;
        table.add_row([
            c.file.clone(),
            c.cluster.clone(),
            c.revision.to_string(),
            human_bytes(s.size),
            humantime::format_rfc3339_seconds(c.started_at).to_string(),
            c.source.name.clone(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn list_remote(
    store: &S3Store,
    config: &S3Config,
    format: WriteOut,
) -> Result<ExitCode, CliError> {
    let listed = store
        .list()
        .await
        .map_err(|e| CliError::Failed(anyhow::anyhow!("{e} ({})", e.reason())))?;
    if format == WriteOut::Json {
        let items: Vec<serde_json::Value> = listed
            .iter()
            .map(|r| {
                serde_json::json!({
                    "url": store.url(&r.name),
                    "name": r.name,
                    "cluster": r.cluster,
                    "revision": r.revision,
                    "size": r.size,
                    "taken_at": unix_seconds(r.taken_at),
                })
            })
            .collect();
        print_json(&serde_json::json!({ "location": config.url(), "snapshots": items }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["NAME", "CLUSTER", "REVISION", "SIZE", "TAKEN (UTC)"]);
    for r in &listed {
        table.add_row([
            r.name.clone(),
            r.cluster.clone(),
            r.revision.to_string(),
            human_bytes(r.size),
            humantime::format_rfc3339_seconds(r.taken_at).to_string(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn prune(args: PruneArgs) -> Result<ExitCode, CliError> {
    let count = |n: Option<u32>| n.map(|n| n as usize);
    let policy = Policy {
        keep_last: args.keep_last.map(|n| n as usize),
        max_age: args.max_age,
        periods: retention::Periods {
            hourly: count(args.keep_hourly),
            daily: count(args.keep_daily),
            weekly: count(args.keep_weekly),
            monthly: count(args.keep_monthly),
        },
    };
    if policy.keeps_all() {
        return Err(CliError::Usage(
            "prune needs --keep-last and/or --max-age, or --keep-hourly/--keep-daily/--keep-weekly/--keep-monthly"
                .into(),
        ));
    }
    let remote = args.s3.store()?;
    let now = SystemTime::now();
    let mut failed = 0;
    if let Some(dir) = &args.dir {
        let stored = listed(dir)?;
        let entries: Vec<retention::Entry> = stored.iter().map(Stored::retention_entry).collect();
        let doomed = retention::to_delete(&entries, &policy, now);
        for (entry, why) in &doomed {
            let Some(s) = stored.iter().find(|s| s.sidecar.file == entry.name) else {
                continue;
            };
            let shown = s.path.display().to_string();
            if !report_prune(&shown, entry, *why, now, args.dry_run, || store::delete(s)) {
                failed += 1;
            }
        }
        summarise_prune(doomed.len(), stored.len(), dir.display(), args.dry_run);
    }
    if let Some((store, config)) = &remote {
        let listed = store
            .list()
            .await
            .map_err(|e| CliError::Failed(anyhow::anyhow!("{e} ({})", e.reason())))?;
        let entries: Vec<retention::Entry> = listed.iter().map(|r| r.retention_entry()).collect();
        let doomed = retention::to_delete(&entries, &policy, now);
        for (entry, why) in &doomed {
            let deleted = if args.dry_run {
                Ok(())
            } else {
                store.delete(&entry.name).await
            };
            if !report_prune(
                &store.url(&entry.name),
                entry,
                *why,
                now,
                args.dry_run,
                || deleted,
            ) {
                failed += 1;
            }
        }
        summarise_prune(doomed.len(), listed.len(), config.url(), args.dry_run);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_UNHEALTHY)
    })
}

/// Prints what a prune did (or would do) to one snapshot; false when deleting it failed.
fn report_prune<E: std::fmt::Display>(
    shown: &str,
    entry: &retention::Entry,
    why: retention::Why,
    now: SystemTime,
    dry_run: bool,
    delete: impl FnOnce() -> Result<(), E>,
) -> bool {
    let age = Duration::from_secs_f64((unix_seconds(now) - unix_seconds(entry.taken_at)).max(0.0));
    let age = humantime::format_duration(Duration::from_secs(age.as_secs()));
    if dry_run {
        println!("would delete {shown} ({}, {age} old)", why.as_str());
        return true;
    }
    match delete() {
        Ok(()) => {
            println!("deleted {shown} ({}, {age} old)", why.as_str());
            true
        }
        Err(e) => {
            eprintln!("etcd-sentinel: cannot delete {shown}: {e}");
            false
        }
    }
}

fn summarise_prune(doomed: usize, all: usize, location: impl std::fmt::Display, dry_run: bool) {
    println!(
        "{location}: {doomed} of {all} snapshots {}; the newest of each cluster is always kept",
        if dry_run {
            "would be deleted"
        } else {
            "deleted"
        }
    );
}

/// The restore tool to name in the plan, and whether it can bump the revision.
async fn restore_tool(chosen: Option<&Path>) -> restore_plan::Tool {
    let program = match chosen {
        Some(p) => p.to_path_buf(),
        None => {
            let etcdutl = etcd_sentinel::files::find_program(Path::new("etcdutl"));
            if etcdutl.is_file() {
                etcdutl
            } else {
                PathBuf::from("etcdctl")
            }
        }
    };
    let name = program.display().to_string();
    // The revision bump and mark-compacted options exist in newer etcdutl only: ask it.
    let bump_revision = name.ends_with("etcdutl")
        && tokio::process::Command::new(&program)
            .args(["snapshot", "restore", "--help"])
            .output()
            .await
            .is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.contains("--bump-revision") && text.contains("--mark-compacted")
            });
    restore_plan::Tool {
        program: name,
        bump_revision,
    }
}

async fn restore_plan(args: RestorePlanArgs) -> Result<ExitCode, CliError> {
    let format = write_out(args.write_out)?;
    // A `.zst` is checked as what it holds (the plan then decompresses it first).
    let raw = compress::readable_async(&args.file, None)
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    let facts = bolt::inspect(&raw.path).map_err(|e| CliError::Failed(e.into()))?;
    drop(raw);
    let sidecar_path = PathBuf::from(format!("{}.json", args.file.display()));
    let text = std::fs::read(&sidecar_path).map_err(|e| {
        CliError::Usage(format!(
            "{}: {e} (the restore plan needs the snapshot's sidecar for its members)",
            sidecar_path.display()
        ))
    })?;
    let sidecar: snapshot::Sidecar = serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", sidecar_path.display())))?;
    if sidecar.revision != facts.revision {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{}: the sidecar's revision {} is not the file's {}",
            sidecar_path.display(),
            sidecar.revision,
            facts.revision
        )));
    }
    let stamp = snapshot::compact_utc(SystemTime::now());
    let token = args
        .token
        .unwrap_or_else(|| format!("{}-restored-{stamp}", sidecar.cluster));
    let root = args
        .data_dir_root
        .unwrap_or_else(|| format!("/var/lib/etcd-restored-{stamp}"));
    let moved: std::collections::BTreeMap<String, String> = args.members.into_iter().collect();
    let tool = restore_tool(args.restore_tool.as_deref()).await;
    let file = std::fs::canonicalize(&args.file).unwrap_or(args.file.clone());
    let plan = restore_plan::plan(
        &file.display().to_string(),
        &sidecar,
        &moved,
        &root,
        &token,
        &tool,
    )
    .map_err(CliError::Usage)?;
    if format == WriteOut::Json {
        print_json(&serde_json::json!({ "plan": plan }));
        return Ok(ExitCode::SUCCESS);
    }
    let words = |argv: &[String]| {
        argv.iter()
            .map(|w| restore_plan::shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "# Restore cluster {} to revision {} (snapshot {} from {}, taken {}).",
        sidecar.cluster,
        sidecar.revision,
        sidecar.file,
        sidecar.source.name,
        humantime::format_rfc3339_seconds(sidecar.started_at)
    );
    println!(
        "# 1. Stop etcd on every member (for Kubernetes: move the etcd static pod manifests away, and the API servers)."
    );
    if let Some(decompress) = &plan.decompress {
        println!(
            "# 2. On each member's host, copy the snapshot there, decompress it (Debian's zstd package) and restore \
             it into a new data directory:\n{}",
            words(decompress)
        );
    } else {
        println!(
            "# 2. On each member's host, copy the snapshot there and restore into a new data directory:"
        );
    }
    for m in &plan.members {
        let env: String = m
            .restore_env
            .iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect();
        println!(
            "#   {} ({})
{env}{}",
            m.name,
            m.peer_url,
            words(&m.restore)
        );
    }
    println!(
        "# 3. Start each member on its new data directory (a systemd unit, a manifest or by hand) with:"
    );
    for m in &plan.members {
        println!(
            "#   {}
etcd {}",
            m.name,
            words(&m.start)
        );
    }
    if !plan.learners_left_out.is_empty() {
        println!(
            "# 4. Learners are not restored: add them again once the cluster runs (etcdctl member add --learner): {}",
            plan.learners_left_out.join(", ")
        );
    }
    if !tool.bump_revision {
        println!(
            "# Note: {} has no --bump-revision/--mark-compacted: for Kubernetes, restart every API server after the restore so that watchers re-list.",
            tool.program
        );
    }
    Ok(ExitCode::SUCCESS)
}
