//! CLI parsing and dispatch only; each subcommand lives in src/cli/.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cli::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "etcd-sentinel",
    version,
    about = "Keeps etcd clusters healthy: probes, metrics, safe maintenance"
)]
struct Cli {
    /// Log level or filter (error, warn, info, debug, or a tracing filter) [default: info for run, warn otherwise]
    #[arg(long, global = true, env = "ETCD_SENTINEL_LOG_LEVEL")]
    log_level: Option<String>,

    /// Log format: text for people, json for log pipelines
    #[arg(
        long,
        global = true,
        env = "ETCD_SENTINEL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe every endpoint once and print one verdict about the cluster (exit 0 healthy, 1 not)
    Status(cli::status::StatusArgs),
    /// Watch clusters continuously: Prometheus /metrics, a JSON API, events (SIGHUP reloads the config)
    Run(cli::run::RunArgs),
    /// Validate a configuration file without connecting (exit 0 valid, 2 invalid)
    CheckConfig(cli::check_config::CheckConfigArgs),
    /// Snapshot backups: save (verified, atomic), verify, list, prune
    Snapshot(cli::snapshot::SnapshotArgs),
    /// Defragment the members one at a time, followers first and the leader last, each only when the cluster can
    /// afford it and the rule says so (exit 0 done, 1 refused, stopped or failed, 2 bad usage)
    Defrag(Box<cli::defrag::DefragArgs>),
}

/// The levels a filter may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
/// The crates whose logs are worth a filter of their own; a target outside them is a typo (`infoo` is taken by
/// tracing as a target, which silences everything else, warnings included).
const TARGETS: [&str; 12] = [
    "etcd_sentinel",
    "etcd_client",
    "tonic",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tower",
    "tower_http",
    "axum",
    "tokio",
];

/// Checks a `--log-level`: a level, or a filter of `target=level` directives whose targets are known crates.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "expected a level ({}) or target=level with a target among {}",
            LEVELS.join(", "),
            TARGETS.join(", ")
        )
    };
    for directive in filter.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if LEVELS.contains(&lower.as_str()) {
            continue;
        }
        // A target alone would enable it at every level and silence the rest: ask for target=level.
        let Some((target, level)) = directive.split_once('=') else {
            return Err(format!(
                "{directive:?}: unknown level or target; {}",
                expected()
            ));
        };
        // A module path (`etcd_sentinel::probe`), optionally with a span filter in brackets.
        let path = target.split('[').next().unwrap_or_default().trim();
        let well_formed = path.split("::").all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        let crate_name = path.split("::").next().unwrap_or_default();
        if !well_formed || !TARGETS.contains(&crate_name) {
            return Err(format!(
                "{directive:?}: unknown level or target; {}",
                expected()
            ));
        }
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?}: unknown level {level:?}; {}",
                expected()
            ));
        }
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) -> Result<(), CliError> {
    check_log_filter(filter).map_err(|e| CliError::Usage(format!("--log-level {e}")))?;
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| CliError::Usage(format!("--log-level {filter:?}: {e}")))?;
    // Colour only for a person at a terminal: journald and log files show escape codes raw.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_format,
    )?;
    match cli.command {
        Command::CheckConfig(args) => cli::check_config::run(args),
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Failed(e.into()))?;
            runtime.block_on(cli::run::run(args))
        }
        Command::Snapshot(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Failed(e.into()))?;
            // SIGTERM (a CronJob's end) or Ctrl-C drops the save where it is: its `.part` is removed on the way
            // out, and no other file is touched.
            runtime.block_on(async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .map_err(|e| CliError::Failed(e.into()))?;
                tokio::select! {
                    result = cli::snapshot::run(args) => result,
                    _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
                    _ = terminate.recv() => Ok(ExitCode::from(143)),
                }
            })
        }
        Command::Defrag(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Failed(e.into()))?;
            // Signals are the run's own business: it stops before the next member, never during one.
            runtime.block_on(cli::defrag::run(*args))
        }
        Command::Status(args) => {
            // One thread: a probe round is mostly waiting, and on a small machine every extra thread competes
            // with the members rendering their /metrics (interleaved A/B: 3-4 ms faster, docs/benchmarks.md).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Failed(e.into()))?;
            runtime.block_on(async {
                tokio::select! {
                    result = cli::status::run(args) => result,
                    _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
                }
            })
        }
    }
}

fn main() -> ExitCode {
    // The S3 client (reqwest 0.13 under object_store) takes its TLS crypto from the process default: ring, as
    // everywhere else here. Only fails if one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // SAFETY: setting signal dispositions at start, before any thread exists.
    unsafe {
        // A write past a file size limit (`ulimit -f`) is an error to handle (the save cleans up), not a kill.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("etcd-sentinel: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_log_filter;

    #[test]
    fn log_levels_and_filters_are_checked() {
        for good in [
            "info",
            "WARN",
            "debug",
            "etcd_sentinel=debug,hyper=warn",
            "etcd_sentinel::probe=trace",
            "off",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("infoo", "\"infoo\": unknown level or target"),
            ("verbose", "unknown level or target"),
            ("etcd_sentinel=loud", "unknown level \"loud\""),
            ("info,", "unknown level or target"),
            ("etcd_sentinel:debug", "unknown level or target"),
            ("etcd_sentinel", "unknown level or target"),
        ] {
            let e = check_log_filter(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
