//! `etcd-sentinel run`: the daemon, from a configuration file or, for a single cluster, from flags alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use etcd_sentinel::config::{self, ClusterConfig, Config, DEFAULT_INTERVAL};
use etcd_sentinel::daemon::{self, ConfigSource, DaemonError, ServerOptions};
use etcd_sentinel::export::tls_listener;
use etcd_sentinel::secret::Secret;

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
    #[arg(long, env = "ETCD_SENTINEL_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

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
        }],
        api_token_file: None,
        server_tls: None,
    })
}

pub async fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let (config, source) = match &args.config {
        Some(path) => {
            if args.connection.endpoints.is_some() || args.interval.is_some() {
                return Err(CliError::Usage(
                    "use either --config or --endpoints/--interval, not both".into(),
                ));
            }
            let config = config::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
            (config, ConfigSource::File(path.clone()))
        }
        None => (from_flags(&args)?, ConfigSource::Flags),
    };
    let token_file = args
        .api_token_file
        .clone()
        .or_else(|| config.api_token_file.clone());
    let token = match (
        token_file,
        std::env::var("ETCD_SENTINEL_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    ) {
        (Some(path), _) => {
            Some(Secret::from_file(&path).map_err(|e| CliError::Usage(format!("API token: {e}")))?)
        }
        (None, Some(value)) => Some(Secret::new(value)),
        (None, None) => None,
    };
    let tls_files = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => config.server_tls.clone(),
    };
    let server_tls = match &tls_files {
        Some((cert, key)) => Some(tls_listener::server_config(cert, key).map_err(CliError::Usage)?),
        None => None,
    };
    let server = ServerOptions {
        listen: args.listen,
        token,
        tls: server_tls,
    };
    match daemon::run(config, source, server).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ DaemonError::Bind { .. }) => Err(CliError::Failed(e.into())),
        Err(e) => Err(CliError::Failed(e.into())),
    }
}
