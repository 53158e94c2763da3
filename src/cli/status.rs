//! `etcd-sentinel status`: one probe of every endpoint, one verdict, exit 0 only when all is well; with
//! `--consistency`, the members' KV hashes compared as well.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;

use etcd_sentinel::etcd::connect::Connector;
use etcd_sentinel::export::render::{self, TableOptions};
use etcd_sentinel::maintenance::{consistency, lock};
use etcd_sentinel::probe::consistency::ConsistencyOptions;
use etcd_sentinel::probe::poller::ClusterPoller;
use etcd_sentinel::units::parse_bytes;
use etcd_sentinel::view::{Consistency, ConsistencyState};

use super::{CliError, ConnectionArgs, EXIT_UNHEALTHY, WriteOut, parse_duration, write_out};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,

    /// Also compare the voting members' KV hashes (HashKV) at one pinned revision, one member after another;
    /// exit 1 unless they agree. HashKV reads each member's whole database; it needs the root role when
    /// authentication is on
    #[arg(long)]
    pub consistency: bool,

    /// With --consistency: members whose database is larger are not hashed (the result is then unknown)
    #[arg(long, value_name = "BYTES", value_parser = parse_db_size, default_value = "2GiB", requires = "consistency", allow_hyphen_values = true)]
    pub max_db_size: u64,

    /// With --consistency: how long one member's HashKV may take
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60s", requires = "consistency", allow_hyphen_values = true)]
    pub hash_timeout: Duration,

    /// With --consistency: the maintenance lock's key prefix; no hash is asked while a defragmentation holds it
    #[arg(long, env = "ETCD_SENTINEL_LOCK_PREFIX", value_name = "PREFIX", default_value = lock::DEFAULT_PREFIX)]
    pub lock_prefix: String,
}

/// A size above zero: 0 would hash no member.
fn parse_db_size(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("0 would hash no member".into()),
        n => Ok(n),
    }
}

pub async fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let settings = args.connection.settings()?;
    let target = args.connection.target("default", &settings)?;
    let format = write_out(args.write_out)?;
    // A TLS file that cannot be read is a usage error (exit 2); nothing was tried yet.
    let connector = Connector::new(settings).map_err(|e| CliError::Usage(e.to_string()))?;

    let thresholds = target.thresholds;
    let connector = Arc::new(connector);
    let mut poller = ClusterPoller::new(target, connector.clone()).one_shot();
    let mut view = poller.poll().await;
    if args.consistency {
        let lock_prefix = etcd_sentinel::settings::check_lock_prefix(&args.lock_prefix)
            .map_err(|e| CliError::Usage(format!("--lock-prefix: {e}")))?;
        let options = ConsistencyOptions {
            max_db_size: args.max_db_size,
            hash_timeout: args.hash_timeout,
        };
        let result = match consistency::check_unless_defragmenting(
            &view,
            &connector,
            &options,
            &lock_prefix,
        )
        .await
        {
            Ok(result) => result,
            Err(why) => Consistency::unknown(
                SystemTime::now(),
                Default::default(),
                format!("not checked: {why}"),
            ),
        };
        view.attach_consistency(result, &thresholds);
    }

    let terminal = std::io::stdout().is_terminal();
    let text = match format {
        WriteOut::Json => render::json(&view),
        WriteOut::Table | WriteOut::Wide => render::table(
            &view,
            &TableOptions {
                width: table_width(terminal),
                color: terminal,
                wide: format == WriteOut::Wide,
            },
        ),
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", text.trim_end()).and_then(|_| stdout.flush()) {
        // `status | head` is not a failure of the cluster: stay quiet, keep the verdict.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other
            .context("writing to stdout")
            .map_err(CliError::Failed)?,
    }
    // Asked for, consistency must be proven: unknown is no pass.
    let consistent = !args.consistency
        || view
            .consistency
            .as_ref()
            .is_some_and(|c| c.state == ConsistencyState::Consistent);
    Ok(if view.healthy && consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNHEALTHY)
    })
}

/// The width to fit the table into: the terminal's when stdout is one; otherwise `$COLUMNS` when it is a number
/// (a script or `watch` that knows its width); otherwise none, and the table keeps its natural width, errors
/// inline, which suits a log or a pipe into grep.
fn table_width(terminal: bool) -> Option<usize> {
    // comfy-table asks the terminal through crossterm (both dependencies already). A width of 0 (a pseudo-terminal
    // nobody sized) is no width.
    let from_terminal = terminal
        .then(|| comfy_table::Table::new().width())
        .flatten()
        .map(usize::from)
        .filter(|w| *w > 0);
    from_terminal.or_else(|| {
        let columns: usize = std::env::var("COLUMNS").ok()?.trim().parse().ok()?;
        (columns > 0).then_some(columns)
    })
}
