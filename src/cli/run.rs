//! `etcd-sentinel run`: the daemon, from a configuration file or, for a single cluster, from flags alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use etcd_sentinel::config::{self, ClusterConfig, Config, DEFAULT_INTERVAL, ServerLimits};
use etcd_sentinel::daemon::{self, ConfigSource, DaemonError, ServerOptions};
use etcd_sentinel::secret::Secret;
use etcd_sentinel::units::parse_wait;

use super::{CliError, ConnectionArgs, parse_duration};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML); reloaded on SIGHUP
    #[arg(long, env = "ETCD_SENTINEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the HTTP server (/metrics, /api/v1/…); overrides the file's `listen` [default: 0.0.0.0:9379]
    #[arg(long, env = "ETCD_SENTINEL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Without --config: the name of the single cluster (metric label, API path)
    #[arg(long, env = "ETCD_SENTINEL_NAME", default_value = "default")]
    pub name: String,

    /// Without --config: how often to poll [default: 10s]
    #[arg(long, env = "ETCD_SENTINEL_INTERVAL", value_parser = parse_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub interval: Option<Duration>,

    /// Without --config: how often to compare the voting members' KV hashes (HashKV at one pinned revision);
    /// 0s turns the check off [default: 5m]
    #[arg(long, env = "ETCD_SENTINEL_CONSISTENCY_INTERVAL", value_parser = parse_wait, value_name = "DURATION", allow_hyphen_values = true)]
    pub consistency_interval: Option<Duration>,

    /// File holding the token that unlocks mutating API endpoints (POST /api/v1/reload); without a token
    /// (here, in ETCD_SENTINEL_API_TOKEN or as the file's api_token_file) they are disabled
    #[arg(long, env = "ETCD_SENTINEL_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,

    /// Serve the API over TLS with this certificate (and --tls-key)
    #[arg(
        long,
        env = "ETCD_SENTINEL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Key of --tls-cert
    #[arg(
        long,
        env = "ETCD_SENTINEL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The configuration from flags alone: one cluster.
fn from_flags(args: &RunArgs) -> Result<Config, CliError> {
    if !config::valid_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
            args.name
        )));
    }
    let connect = args.connection.settings()?;
    let target = args.connection.target(&args.name, &connect)?;
    let interval = args.interval.unwrap_or(DEFAULT_INTERVAL);
    if interval < config::MIN_INTERVAL {
        return Err(CliError::Usage("--interval: must be at least 100ms".into()));
    }
    if let Some(every) = args.consistency_interval
        && !every.is_zero()
        && every < config::ConsistencyConfig::MIN_INTERVAL
    {
        return Err(CliError::Usage(
            "--consistency-interval: must be at least 1s (each check reads every member's whole database), or 0s for off"
                .into(),
        ));
    }
    Ok(Config {
        listen: config::default_listen(),
        clusters: vec![ClusterConfig {
            name: target.name,
            endpoints: target.endpoints,
            discovery: target.discovery,
            interval,
            connect,
            metrics: target.metrics,
            vitals_interval: target.vitals_interval,
            unresponsive_after: config::DEFAULT_UNRESPONSIVE_AFTER,
            thresholds: target.thresholds,
            password_file: None,
            snapshot: None,
            defrag: None,
            lock_prefix: etcd_sentinel::maintenance::lock::DEFAULT_PREFIX.into(),
            consistency: config::ConsistencyConfig {
                interval: match args.consistency_interval {
                    None => Some(config::ConsistencyConfig::DEFAULT_INTERVAL),
                    Some(d) if d.is_zero() => None,
                    Some(d) => Some(d),
                },
                ..Default::default()
            },
        }],
        api_token_file: None,
        api_token: None,
        server_tls: None,
        server_limits: ServerLimits::default(),
    })
}

pub async fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let (config, source) = match &args.config {
        Some(path) => {
            if args.connection.endpoints.is_some()
                || args.interval.is_some()
                || args.consistency_interval.is_some()
            {
                return Err(CliError::Usage(
                    "use either --config or --endpoints/--interval/--consistency-interval, not both \
                     ([cluster.consistency] in the file)"
                        .into(),
                ));
            }
            let config = config::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
            (config, ConfigSource::File(path.clone()))
        }
        None => (from_flags(&args)?, ConfigSource::Flags),
    };
    // What the flags add to the file; each message names the flag (a file's own values were checked by `load`,
    // whose messages name the file and key).
    let server_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            etcd_sentinel::pem::server_config(cert, key)
                .map_err(|e| CliError::Usage(format!("--tls-cert/--tls-key: {e}")))?,
        ),
        _ => match &config.server_tls {
            // Checked by `load`, so this only fails if a file changed in between.
            Some((cert, key)) => Some(
                etcd_sentinel::pem::server_config(cert, key)
                    .map_err(|e| CliError::Usage(format!("tls_cert, tls_key: {e}")))?,
            ),
            None => None,
        },
    };
    let server = ServerOptions {
        listen: args.listen,
        token_file: args.api_token_file.clone(),
        token_env: match std::env::var("ETCD_SENTINEL_API_TOKEN") {
            Ok(t) if !t.is_empty() => Some(
                Secret::token(&t)
                    .map_err(|e| CliError::Usage(format!("ETCD_SENTINEL_API_TOKEN: {e}")))?,
            ),
            _ => None,
        },
        tls: server_tls,
    };
    daemon::api_token(&server, &config).map_err(CliError::Usage)?;
    match daemon::run(config, source, server).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ DaemonError::Bind { .. }) => Err(CliError::Failed(e.into())),
        Err(e) => Err(CliError::Failed(e.into())),
    }
}
