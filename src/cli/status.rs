//! `etcd-sentinel status`: one probe of every endpoint, one verdict, exit 0 only when all is well.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use etcd_sentinel::etcd::connect::Connector;
use etcd_sentinel::export::render::{self, TableOptions};
use etcd_sentinel::probe::poller::ClusterPoller;

use super::{CliError, ConnectionArgs, EXIT_UNHEALTHY, WriteOut, write_out};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Output format [env: ETCDCTL_WRITE_OUT] [default: table]
    #[arg(short = 'w', long, env = "ETCD_SENTINEL_WRITE_OUT", value_enum)]
    pub write_out: Option<WriteOut>,
}

pub async fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let settings = args.connection.settings()?;
    let target = args.connection.target("default", &settings)?;
    let format = write_out(args.write_out)?;
    // A TLS file that cannot be read is a usage error (exit 2); nothing was tried yet.
    let connector = Connector::new(settings).map_err(|e| CliError::Usage(e.to_string()))?;

    let mut poller = ClusterPoller::new(target, Arc::new(connector)).one_shot();
    let view = poller.poll().await;

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
    Ok(if view.healthy {
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
