//! `etcd-sentinel check-config FILE`: validates a configuration without connecting to anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use etcd_sentinel::config;

use super::CliError;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check
    pub file: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> Result<ExitCode, CliError> {
    let config = config::load(&args.file).map_err(|e| CliError::Usage(e.to_string()))?;
    println!("{}: ok, listen {}", args.file.display(), config.listen);
    for c in &config.clusters {
        let discovery = c.discovery.as_str();
        let endpoints: Vec<String> = c.endpoints.iter().map(|e| e.url()).collect();
        println!(
            "  cluster {}: {} (discovery {discovery}), every {}, dial timeout {}, command timeout {}",
            c.name,
            endpoints.join(","),
            humantime::format_duration(c.interval),
            humantime::format_duration(c.connect.dial_timeout),
            humantime::format_duration(c.connect.command_timeout),
        );
    }
    Ok(ExitCode::SUCCESS)
}
