//! Command-line parsing shared by the subcommands. Precedence for every setting: flag, then `ETCD_SENTINEL_*`,
//! then etcdctl's `ETCDCTL_*` where the meaning is the same, then the default.

pub mod check_config;
pub mod defrag;
pub mod run;
pub mod snapshot;
pub mod snapshot_s3;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use etcd_sentinel::etcd::connect::ConnectSettings;
use etcd_sentinel::etcd::endpoint::Endpoint;
use etcd_sentinel::etcd::tls::TlsSettings;
use etcd_sentinel::secret::{Credentials, Secret};
use etcd_sentinel::settings::{self, Discovery, MetricsSource, Target};

/// Exit codes: 0 fine, 1 the cluster or the operation is not fine, 2 bad usage or configuration.
pub const EXIT_UNHEALTHY: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// A failure at the CLI edge, with the exit code it deserves.
#[derive(Debug)]
pub enum CliError {
    /// Bad flags, environment or configuration: exit 2.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(EXIT_USAGE),
            CliError::Failed(_) => ExitCode::from(EXIT_UNHEALTHY),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m}"),
            CliError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteOut {
    /// The columns an operator reads first, fitted to the terminal
    Table,
    /// Every column at its natural width, never narrowed (kubectl's `-o wide`)
    Wide,
    /// The complete view, the stable contract for scripts
    Json,
}

/// Flags that may carry a password are held as secrets from the moment they are parsed.
fn secret_arg(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    etcd_sentinel::units::parse_duration(text)
}

/// How to reach one cluster from the command line.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Comma-separated endpoints: host:port, http://host:port [env: ETCDCTL_ENDPOINTS] [default: 127.0.0.1:2379]
    #[arg(long, env = "ETCD_SENTINEL_ENDPOINTS", value_name = "URLS")]
    pub endpoints: Option<String>,

    /// Probe every member's client URLs, found through the member list of the given endpoints [env: ETCDCTL_CLUSTER]
    #[arg(long, env = "ETCD_SENTINEL_CLUSTER")]
    pub cluster: bool,

    /// How long to wait for a connection [env: ETCDCTL_DIAL_TIMEOUT] [default: 2s]
    #[arg(long, env = "ETCD_SENTINEL_DIAL_TIMEOUT", value_parser = parse_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub dial_timeout: Option<Duration>,

    /// How long one request may take [env: ETCDCTL_COMMAND_TIMEOUT] [default: 5s]
    #[arg(long, env = "ETCD_SENTINEL_COMMAND_TIMEOUT", value_parser = parse_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub command_timeout: Option<Duration>,

    /// CA bundle to verify the members' certificates [env: ETCDCTL_CACERT]
    #[arg(long, env = "ETCD_SENTINEL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate, for members that require one (--client-cert-auth) [env: ETCDCTL_CERT]
    #[arg(long, env = "ETCD_SENTINEL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Key of the client certificate [env: ETCDCTL_KEY]
    #[arg(long, env = "ETCD_SENTINEL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Accept any server certificate (allows a man in the middle: emergencies only) [env: ETCDCTL_INSECURE_SKIP_TLS_VERIFY]
    #[arg(long, env = "ETCD_SENTINEL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// Allow plain-text endpoints (http://); false refuses them [env: ETCDCTL_INSECURE_TRANSPORT] [default: true]
    #[arg(long, env = "ETCD_SENTINEL_INSECURE_TRANSPORT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_transport: Option<bool>,

    /// Name to verify the members' certificates against, instead of the endpoint's host
    #[arg(long, env = "ETCD_SENTINEL_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// etcd user, as name or name:password [env: ETCDCTL_USER]
    #[arg(long, env = "ETCD_SENTINEL_USER", value_name = "NAME[:PASSWORD]", hide_env_values = true, value_parser = secret_arg)]
    pub user: Option<Secret>,

    /// Password of --user [env: ETCDCTL_PASSWORD]
    #[arg(long, env = "ETCD_SENTINEL_PASSWORD", hide_env_values = true, value_parser = secret_arg)]
    pub password: Option<Secret>,

    /// Where members serve /metrics, as a template: {scheme} {host} {port} of the client endpoint, {name} of
    /// the member (e.g. http://{host}:2381/metrics) [default: the client URL]
    #[arg(long, env = "ETCD_SENTINEL_METRICS_URL", value_name = "TEMPLATE")]
    pub metrics_url: Option<String>,
}

/// Reads an etcdctl boolean variable ("true"/"false"), naming it when it is neither.
fn etcdctl_bool(name: &str) -> Result<Option<bool>, CliError> {
    match etcdctl_var(name) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(CliError::Usage(format!(
                "{name}={v:?}: expected true or false"
            ))),
        },
    }
}

/// Reads an etcdctl variable, or nothing when unset or empty.
fn etcdctl_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn duration_setting(
    flag: Option<Duration>,
    etcdctl: &str,
    default: Duration,
) -> Result<Duration, CliError> {
    if let Some(d) = flag {
        return Ok(d);
    }
    match etcdctl_var(etcdctl) {
        Some(text) => {
            parse_duration(&text).map_err(|e| CliError::Usage(format!("{etcdctl}={text:?}: {e}")))
        }
        None => Ok(default),
    }
}

impl ConnectionArgs {
    pub fn settings(&self) -> Result<ConnectSettings, CliError> {
        let defaults = ConnectSettings::default();
        let path = |flag: &Option<PathBuf>, var: &str| {
            flag.clone().or_else(|| etcdctl_var(var).map(PathBuf::from))
        };
        let tls = TlsSettings {
            cacert: path(&self.cacert, "ETCDCTL_CACERT"),
            cert: path(&self.cert, "ETCDCTL_CERT"),
            key: path(&self.key, "ETCDCTL_KEY"),
            insecure_skip_verify: self.insecure_skip_tls_verify
                || etcdctl_bool("ETCDCTL_INSECURE_SKIP_TLS_VERIFY")?.unwrap_or(false),
            server_name: self.tls_server_name.clone(),
            requested: false,
            files_digest: 0,
        };
        let insecure_transport = match self.insecure_transport {
            Some(b) => b,
            None => {
                etcdctl_bool("ETCDCTL_INSECURE_TRANSPORT")?.unwrap_or(defaults.insecure_transport)
            }
        };
        let user = self
            .user
            .clone()
            .or_else(|| etcdctl_var("ETCDCTL_USER").map(Secret::new));
        let password = self
            .password
            .clone()
            .or_else(|| etcdctl_var("ETCDCTL_PASSWORD").map(Secret::new));
        let credentials = match (user, password) {
            (Some(u), p) => Some(Credentials::parse(u.expose(), p).map_err(CliError::Usage)?),
            (None, Some(_)) => return Err(CliError::Usage("--password needs --user".into())),
            (None, None) => None,
        };
        let settings = ConnectSettings {
            dial_timeout: duration_setting(
                self.dial_timeout,
                "ETCDCTL_DIAL_TIMEOUT",
                defaults.dial_timeout,
            )?,
            command_timeout: duration_setting(
                self.command_timeout,
                "ETCDCTL_COMMAND_TIMEOUT",
                defaults.command_timeout,
            )?,
            tls,
            insecure_transport,
            credentials,
        };
        Ok(settings)
    }

    /// The cluster to probe; `settings` decides the scheme of endpoints written without one.
    pub fn target(&self, name: &str, settings: &ConnectSettings) -> Result<Target, CliError> {
        let (source, text) = match (&self.endpoints, etcdctl_var("ETCDCTL_ENDPOINTS")) {
            (Some(e), _) => ("--endpoints", e.clone()),
            (None, Some(e)) => ("ETCDCTL_ENDPOINTS", e),
            (None, None) => ("default endpoint", "127.0.0.1:2379".to_string()),
        };
        let default_scheme = settings.default_scheme();
        let endpoints = Endpoint::parse_list_with_default(&text, default_scheme)
            .map_err(|e| CliError::Usage(format!("{source}: {e}")))?;
        let cluster = self.cluster
            || etcdctl_var("ETCDCTL_CLUSTER")
                .is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "1"));
        let mut target = Target::new(name, endpoints);
        target.discovery = if cluster {
            Discovery::Members
        } else {
            Discovery::Static
        };
        if let Some(template) = &self.metrics_url {
            // The same validation as the file's `metrics_urls`.
            settings::check_metrics_url(template, true)
                .map_err(|e| CliError::Usage(format!("--metrics-url: {e}")))?;
            target.metrics = MetricsSource::Template(template.clone());
        }
        Ok(target)
    }
}

/// `-w table|wide|json`, with etcdctl's variable as a fallback.
pub fn write_out(flag: Option<WriteOut>) -> Result<WriteOut, CliError> {
    if let Some(w) = flag {
        return Ok(w);
    }
    match etcdctl_var("ETCDCTL_WRITE_OUT") {
        None => Ok(WriteOut::Table),
        // etcdctl's own formats for people, set for etcdctl: the table is ours.
        Some(v) if matches!(v.to_ascii_lowercase().as_str(), "simple" | "fields") => {
            Ok(WriteOut::Table)
        }
        Some(v) => WriteOut::from_str(&v, true).map_err(|_| {
            CliError::Usage(format!(
                "ETCDCTL_WRITE_OUT={v:?}: expected table, wide or json"
            ))
        }),
    }
}
