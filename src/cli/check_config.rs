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
        if let Some(s) = &c.snapshot {
            println!("    snapshots: {:?} into {}", s.schedule, s.dir.display());
        }
        if let Some(d) = &c.defrag {
            let when: Vec<String> = [
                d.schedule.as_ref().map(|s| format!("schedule {s:?}")),
                d.trigger.as_ref().map(|t| {
                    format!(
                        "trigger {:?} (at most every {})",
                        t.text(),
                        humantime::format_duration(d.min_interval)
                    )
                }),
            ]
            .into_iter()
            .flatten()
            .collect();
            println!(
                "    defrag: {}; rule {:?}; lock {}",
                if when.is_empty() {
                    "only when asked through the API".to_string()
                } else {
                    when.join(", ")
                },
                d.rule.text(),
                c.lock_prefix
            );
        }
        match c.consistency.interval {
            None => println!("    consistency: off"),
            Some(every) => println!(
                "    consistency: every {}, members up to {}, {} per HashKV",
                humantime::format_duration(every),
                etcd_sentinel::units::human_bytes(c.consistency.max_db_size),
                humantime::format_duration(c.consistency.hash_timeout)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
