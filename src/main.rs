//! CLI parsing and dispatch only; each subcommand lives in src/cli/.

mod cli;

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
}

fn init_logging(filter: &str, format: LogFormat) -> Result<(), CliError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| CliError::Usage(format!("--log-level {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("etcd-sentinel: {e}");
            e.exit_code()
        }
    }
}
