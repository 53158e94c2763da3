//! Configuration: a TOML file (or flags for a single cluster) → a validated [`Config`]. `parse` is pure; `load`
//! reads the file and the files it names. Every error names the file, the line and the key, because the person
//! reading it is fixing a config at 3 a.m.

mod cluster;
mod load;
mod raw;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::etcd::connect::{ConnectError, ConnectSettings};
use crate::etcd::endpoint::Endpoint;
use crate::secret::SecretError;
use crate::settings::{Discovery, MetricsSource, Target, Thresholds};
pub use load::load;
use raw::{RawConfig, Source};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9379";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Polling faster than this only loads etcd; nothing useful changes within 100 ms.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// A member on the same network answers Status in milliseconds; one silent for a second is shown as down while
/// the poll waits out the command timeout for it.
pub const DEFAULT_UNRESPONSIVE_AFTER: Duration = Duration::from_secs(1);
/// Above the 200 ms at which Status is read while slower calls wait, with room for one slow answer.
pub const MIN_UNRESPONSIVE_AFTER: Duration = Duration::from_millis(500);

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub clusters: Vec<ClusterConfig>,
    /// File holding the token that unlocks mutating API endpoints; without one they are disabled.
    pub api_token_file: Option<PathBuf>,
    /// Certificate and key to serve the API over TLS.
    pub server_tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Unique; used as the `cluster` metric label and in API paths.
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub discovery: Discovery,
    pub interval: Duration,
    pub connect: ConnectSettings,
    pub metrics: MetricsSource,
    pub vitals_interval: Option<Duration>,
    /// A member that says nothing at all for this long (Status is read every 200 ms while slower calls wait) is
    /// given up for the poll and shown down, so that a frozen member is visible within interval + this and does
    /// not hold up the next poll of the others.
    pub unresponsive_after: Duration,
    pub thresholds: Thresholds,
    /// The etcd user and the file holding its password, read by `resolve_secrets`.
    pub password_file: Option<(String, PathBuf)>,
}

impl ClusterConfig {
    pub fn target(&self) -> Target {
        Target {
            name: self.name.clone(),
            endpoints: self.endpoints.clone(),
            discovery: self.discovery,
            metrics: self.metrics.clone(),
            vitals_interval: self.vitals_interval,
            thresholds: self.thresholds,
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Whole { file: String, message: String },
    #[error("{file}: cluster {cluster}: {key}: {source}")]
    Secret {
        file: String,
        cluster: String,
        key: &'static str,
        source: SecretError,
    },
    #[error("{file}: cluster {cluster}: {source}")]
    Connect {
        file: String,
        cluster: String,
        source: ConnectError,
    },
}

/// A cluster name is a metric label value and a URL path segment: keep it to a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses and validates a configuration file's text; `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let src = Source { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| src.line_col(s.start));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let listen = match &raw.listen {
        None => default_listen(),
        Some(l) => l.get_ref().trim().parse::<SocketAddr>().map_err(|e| {
            src.invalid(
                l,
                "listen".into(),
                format!(
                    "{:?}: {e} (expected host:port, e.g. 0.0.0.0:9379)",
                    l.get_ref()
                ),
            )
        })?,
    };
    if raw.clusters.is_empty() {
        return Err(ConfigError::Whole {
            file: file.to_string(),
            message: "no [[cluster]] configured: nothing to watch".into(),
        });
    }
    let mut names = BTreeSet::new();
    let mut clusters = Vec::with_capacity(raw.clusters.len());
    for (i, c) in raw.clusters.iter().enumerate() {
        let name = c.name.get_ref().trim();
        if !names.insert(name) {
            return Err(src.invalid(
                &c.name,
                format!("cluster[{i}].name"),
                format!("{name:?} is used by another cluster"),
            ));
        }
        clusters.push(cluster::parse(&src, &cluster::Keys::new(i), c)?);
    }
    let server_tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => Some((PathBuf::from(c.get_ref()), PathBuf::from(k.get_ref()))),
        (Some(c), None) => return Err(src.invalid(c, "tls_key".into(), "tls_cert needs tls_key")),
        (None, Some(k)) => return Err(src.invalid(k, "tls_cert".into(), "tls_key needs tls_cert")),
        (None, None) => None,
    };
    Ok(Config {
        listen,
        clusters,
        api_token_file: raw
            .api_token_file
            .as_ref()
            .map(|p| PathBuf::from(p.get_ref())),
        server_tls,
    })
}

/// The address the daemon listens on when neither the file nor `--listen` says: [`DEFAULT_LISTEN`].
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9379))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9400"

[[cluster]]
name = "prod"
endpoints = ["https://10.0.0.1:2379", "10.0.0.2:2379"]
discovery = "members"
interval = "15s"
command_timeout = "3s"

[[cluster]]
name = "staging"
endpoints = ["127.0.0.1:2379"]
metrics_urls = "http://{host}:2381/metrics"
vitals_interval = "1m"

[cluster.thresholds]
wal_fsync_p99 = "20ms"
apply_gap = 500
open_fds_ratio = 0.9

[[cluster]]
name = "kubeadm"
endpoints = ["10.0.0.1:2379"]

[cluster.metrics_urls]
cp-1 = "http://10.0.0.1:2381/metrics"
"#;

    #[test]
    fn a_full_file_parses_with_defaults_filled_in() {
        let c = parse("sentinel.toml", GOOD).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9400".parse().unwrap());
        assert_eq!(c.clusters.len(), 3);
        let prod = &c.clusters[0];
        assert_eq!(prod.discovery, Discovery::Members);
        assert_eq!(prod.interval, Duration::from_secs(15));
        assert_eq!(prod.connect.command_timeout, Duration::from_secs(3));
        assert_eq!(prod.connect.dial_timeout, Duration::from_secs(2));
        assert_eq!(prod.endpoints[1].url(), "http://10.0.0.2:2379");
        assert_eq!(prod.metrics, MetricsSource::ClientUrl);
        assert_eq!(prod.thresholds, Thresholds::default());
        let staging = &c.clusters[1];
        assert_eq!(staging.interval, DEFAULT_INTERVAL);
        assert_eq!(staging.discovery, Discovery::Static);
        assert_eq!(
            staging.metrics,
            MetricsSource::Template("http://{host}:2381/metrics".into())
        );
        assert_eq!(staging.vitals_interval, Some(Duration::from_secs(60)));
        assert_eq!(staging.thresholds.wal_fsync_p99_seconds, 0.020);
        assert_eq!(staging.thresholds.apply_gap, 500.0);
        assert_eq!(staging.thresholds.open_fds_ratio, 0.9);
        assert_eq!(
            staging.thresholds.backend_commit_p99_seconds, 0.025,
            "unset keeps the default"
        );
        let MetricsSource::PerMember(map) = &c.clusters[2].metrics else {
            panic!("a table of metrics URLs per member");
        };
        assert_eq!(map["cp-1"], "http://10.0.0.1:2381/metrics");
    }

    #[test]
    fn the_default_listen_address_is_the_documented_one() {
        assert_eq!(default_listen().to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn endpoints_without_a_scheme_speak_tls_when_tls_is_configured() {
        let scheme = |tls: &str| {
            let text = format!("[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n{tls}");
            parse("s.toml", &text).unwrap().clusters[0].endpoints[0].url()
        };
        assert_eq!(scheme(""), "http://a:1");
        // An empty table asks for TLS with the system's roots; a server name alone only makes sense with TLS.
        assert_eq!(scheme("[cluster.tls]\n"), "https://a:1");
        assert_eq!(
            scheme("[cluster.tls]\nserver_name = \"etcd\"\n"),
            "https://a:1"
        );
        assert_eq!(
            scheme("[cluster.tls]\ncacert = \"/ca.crt\"\n"),
            "https://a:1"
        );
        // A scheme written out wins.
        let text = "[[cluster]]\nname = \"a\"\nendpoints = [\"http://a:1\"]\n[cluster.tls]\n";
        assert_eq!(
            parse("s.toml", text).unwrap().clusters[0].endpoints[0].url(),
            "http://a:1"
        );
    }

    fn error_of(text: &str) -> String {
        parse("s.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"127.0.0.1\"]\n",
                "s.toml:3: cluster[0].endpoints[0]: invalid endpoint \"127.0.0.1\": missing port",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\ninterval = \"often\"\n",
                "s.toml:4: cluster[0].interval: \"often\"",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\ninterval = \"10ms\"\n",
                "s.toml:4: cluster[0].interval: must be at least 100ms",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nunresponsive_after = \"200ms\"\n",
                "s.toml:4: cluster[0].unresponsive_after: must be at least 500ms",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nunresponsive_after = \"1h\"\n",
                "s.toml:4: cluster[0].unresponsive_after: must be shorter than command_timeout (5s)",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[[cluster]]\nname = \"a\"\nendpoints = [\"b:1\"]\n",
                "s.toml:5: cluster[1].name: \"a\" is used by another cluster",
            ),
            (
                "[[cluster]]\nname = \"a b\"\nendpoints = [\"a:1\"]\n",
                "s.toml:2: cluster[0].name",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = []\n",
                "s.toml:3: cluster[0].endpoints: at least one endpoint",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\ndiscovery = \"dns\"\n",
                "s.toml:4: cluster[0].discovery: \"dns\"",
            ),
            (
                "listen = \"nowhere\"\n[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n",
                "s.toml:1: listen",
            ),
            ("listen = \"0.0.0.0:9379\"\n", "no [[cluster]]"),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nintervall = \"5s\"\n",
                "s.toml:4:1: unknown field `intervall`",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"\n",
                "s.toml:3:",
            ),
            (
                "[[cluster]]\nendpoints = [\"a:1\"]\n",
                "missing field `name`",
            ),
        ];
        for (text, expected) in cases {
            let err = error_of(text);
            assert!(
                err.contains(expected),
                "for\n{text}\ngot:      {err}\nexpected: {expected}"
            );
        }
    }
}
