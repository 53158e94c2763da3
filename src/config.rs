//! Configuration: a TOML file (or flags for a single cluster) → a validated [`Config`]. Pure: the caller reads
//! the file. Every error names the file, the line and the field, because the person reading it is fixing a
//! config at 3 a.m.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::etcd::connect::ConnectSettings;
use crate::etcd::endpoint::{Endpoint, Scheme};
use crate::etcd::tls::TlsSettings;
use crate::probe::endpoint::MetricsSource;
use crate::probe::poller::{Discovery, Target};
use crate::secret::{Credentials, Secret};
use crate::view::Thresholds;

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

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
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
}

// The file as written. Unknown keys are errors: a typo ("intervall") must not silently fall back to a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    #[serde(default, rename = "cluster")]
    clusters: Vec<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    endpoints: Spanned<Vec<Spanned<String>>>,
    discovery: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    dial_timeout: Option<Spanned<String>>,
    command_timeout: Option<Spanned<String>>,
    metrics_urls: Option<Spanned<RawMetricsUrls>>,
    vitals_interval: Option<Spanned<String>>,
    unresponsive_after: Option<Spanned<String>>,
    thresholds: Option<RawThresholds>,
    tls: Option<RawTls>,
    insecure_transport: Option<bool>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cacert: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    server_name: Option<Spanned<String>>,
}

fn tls_settings(
    src: &Source,
    raw: Option<&RawTls>,
    field: &dyn Fn(&str) -> String,
) -> Result<TlsSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TlsSettings::default());
    };
    let path = |v: &Option<Spanned<String>>, name: &str| -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) if p.get_ref().trim().is_empty() => {
                Err(src.invalid(p, field(name), "empty path"))
            }
            Some(p) => Ok(Some(PathBuf::from(p.get_ref()))),
            None => Ok(None),
        }
    };
    let settings = TlsSettings {
        cacert: path(&raw.cacert, "cacert")?,
        cert: path(&raw.cert, "cert")?,
        key: path(&raw.key, "key")?,
        insecure_skip_verify: raw.insecure_skip_tls_verify,
        server_name: raw.server_name.as_ref().map(|s| s.get_ref().clone()),
    };
    match (&raw.cert, &raw.key) {
        (Some(c), None) => Err(src.invalid(c, field("key"), "a client certificate needs its key")),
        (None, Some(k)) => Err(src.invalid(k, field("cert"), "a client key needs its certificate")),
        _ => Ok(settings),
    }
}

/// Reads what the configuration only names: password files. Kept out of `parse`, which is pure.
pub fn resolve_secrets(config: &mut Config) -> Result<(), String> {
    for c in &mut config.clusters {
        if let Some((user, path)) = &c.password_file {
            let password = Secret::from_file(path)
                .map_err(|e| format!("cluster {}: password_file: {e}", c.name))?;
            c.connect.credentials = Some(Credentials {
                user: user.clone(),
                password,
            });
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMetricsUrls {
    Template(String),
    PerMember(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    wal_fsync_p99: Option<Spanned<String>>,
    backend_commit_p99: Option<Spanned<String>>,
    proposals_pending: Option<Spanned<u64>>,
    apply_gap: Option<Spanned<u64>>,
    open_fds_ratio: Option<Spanned<f64>>,
}

const TEMPLATE_PLACEHOLDERS: [&str; 4] = ["{scheme}", "{host}", "{port}", "{name}"];

/// A metrics URL must be an http(s) URL; in a template, only the known placeholders may appear.
pub fn check_metrics_url(url: &str, template: bool) -> Result<(), String> {
    let mut sample = url.to_string();
    if template {
        for (p, v) in TEMPLATE_PLACEHOLDERS
            .iter()
            .zip(["http", "127.0.0.1", "2379", "m0"])
        {
            sample = sample.replace(p, v);
        }
        if let Some(start) = sample.find('{') {
            let rest = &sample[start..];
            let end = rest.find('}').map_or(rest.len(), |i| i + 1);
            return Err(format!(
                "unknown placeholder {} (known: {})",
                &rest[..end],
                TEMPLATE_PLACEHOLDERS.join(", ")
            ));
        }
    }
    let parsed = url::Url::parse(&sample).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: only http and https URLs can be read"));
    }
    Ok(())
}

/// Turns byte offsets into line numbers for the messages.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    fn invalid<T>(
        &self,
        spanned: &Spanned<T>,
        field: String,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            line: self.line_col(spanned.span().start).0,
            field,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Spanned<String>, field: String) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            self.invalid(
                value,
                field.clone(),
                format!("{:?}: {e} (expected e.g. 500ms, 10s, 1m)", value.get_ref()),
            )
        })?;
        if d.is_zero() {
            return Err(self.invalid(value, field, "must be longer than zero"));
        }
        Ok(d)
    }
}

/// A cluster name is a metric label value and a URL path segment: keep it to a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn thresholds(
    src: &Source,
    raw: &RawThresholds,
    field: &dyn Fn(&str) -> String,
) -> Result<Thresholds, ConfigError> {
    let mut t = Thresholds::default();
    if let Some(v) = &raw.wal_fsync_p99 {
        t.wal_fsync_p99_seconds = src.duration(v, field("wal_fsync_p99"))?.as_secs_f64();
    }
    if let Some(v) = &raw.backend_commit_p99 {
        t.backend_commit_p99_seconds = src.duration(v, field("backend_commit_p99"))?.as_secs_f64();
    }
    if let Some(v) = &raw.proposals_pending {
        t.proposals_pending = *v.get_ref() as f64;
    }
    if let Some(v) = &raw.apply_gap {
        t.apply_gap = *v.get_ref() as f64;
    }
    if let Some(v) = &raw.open_fds_ratio {
        let ratio = *v.get_ref();
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(src.invalid(
                v,
                field("open_fds_ratio"),
                format!("{ratio}: a share between 0 and 1"),
            ));
        }
        t.open_fds_ratio = ratio;
    }
    Ok(t)
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
        None => DEFAULT_LISTEN.parse().map_err(|_| ConfigError::Whole {
            file: file.to_string(),
            message: "bad built-in listen address".into(),
        })?,
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
        let field = |f: &str| format!("cluster[{i}].{f}");
        let name = c.name.get_ref().trim().to_string();
        if !valid_name(&name) {
            return Err(src.invalid(
                &c.name,
                field("name"),
                format!("{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(src.invalid(
                &c.name,
                field("name"),
                format!("{name:?} is used by another cluster"),
            ));
        }
        if c.endpoints.get_ref().is_empty() {
            return Err(src.invalid(
                &c.endpoints,
                field("endpoints"),
                "at least one endpoint is needed",
            ));
        }
        // As etcdctl: with TLS settings, an endpoint written without a scheme is spoken to over TLS.
        let default_scheme = if c.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let mut endpoints = Vec::new();
        for (j, e) in c.endpoints.get_ref().iter().enumerate() {
            let ep = Endpoint::parse_with_default(e.get_ref(), default_scheme).map_err(|err| {
                src.invalid(e, field(&format!("endpoints[{j}]")), err.to_string())
            })?;
            if !endpoints.contains(&ep) {
                endpoints.push(ep);
            }
        }
        let discovery = match &c.discovery {
            None => Discovery::Static,
            Some(d) => match d.get_ref().trim() {
                "static" => Discovery::Static,
                "members" => Discovery::Members,
                other => {
                    return Err(src.invalid(
                        d,
                        field("discovery"),
                        format!("{other:?}: expected \"static\" or \"members\""),
                    ));
                }
            },
        };
        let defaults = ConnectSettings::default();
        let interval = match &c.interval {
            Some(v) => src.duration(v, field("interval"))?,
            None => DEFAULT_INTERVAL,
        };
        if let (Some(v), true) = (&c.interval, interval < MIN_INTERVAL) {
            return Err(src.invalid(v, field("interval"), "must be at least 100ms"));
        }
        let connect = ConnectSettings {
            dial_timeout: match &c.dial_timeout {
                Some(v) => src.duration(v, field("dial_timeout"))?,
                None => defaults.dial_timeout,
            },
            command_timeout: match &c.command_timeout {
                Some(v) => src.duration(v, field("command_timeout"))?,
                None => defaults.command_timeout,
            },
            tls: tls_settings(&src, c.tls.as_ref(), &|f| field(&format!("tls.{f}")))?,
            insecure_transport: c.insecure_transport.unwrap_or(true),
            // Filled in by `resolve_secrets`, which reads the password file.
            credentials: None,
        };
        let password_file = match (&c.user, &c.password_file) {
            (Some(u), Some(p)) if !u.get_ref().is_empty() => {
                Some((u.get_ref().clone(), PathBuf::from(p.get_ref())))
            }
            (Some(u), _) if u.get_ref().is_empty() => {
                return Err(src.invalid(u, field("user"), "empty user name"));
            }
            (Some(u), None) => {
                return Err(src.invalid(
                    u,
                    field("password_file"),
                    "a user needs a password_file (passwords are not written in the configuration)",
                ));
            }
            (None, Some(p)) => {
                return Err(src.invalid(p, field("user"), "password_file without a user"));
            }
            _ => None,
        };
        let metrics = match &c.metrics_urls {
            None => MetricsSource::ClientUrl,
            Some(spanned) => match spanned.get_ref() {
                RawMetricsUrls::Template(t) => {
                    check_metrics_url(t, true)
                        .map_err(|m| src.invalid(spanned, field("metrics_urls"), m))?;
                    MetricsSource::Template(t.clone())
                }
                RawMetricsUrls::PerMember(map) => {
                    for (member, url) in map {
                        check_metrics_url(url, false).map_err(|m| {
                            src.invalid(spanned, field(&format!("metrics_urls.{member}")), m)
                        })?;
                    }
                    MetricsSource::PerMember(map.clone())
                }
            },
        };
        let vitals_interval = match &c.vitals_interval {
            Some(v) => Some(src.duration(v, field("vitals_interval"))?),
            None => None,
        };
        let unresponsive_after = match &c.unresponsive_after {
            Some(v) => {
                let d = src.duration(v, field("unresponsive_after"))?;
                if d >= connect.command_timeout {
                    return Err(src.invalid(
                        v,
                        field("unresponsive_after"),
                        format!(
                            "must be shorter than command_timeout ({}), or it never applies",
                            humantime::format_duration(connect.command_timeout)
                        ),
                    ));
                }
                if d < MIN_UNRESPONSIVE_AFTER {
                    return Err(src.invalid(
                        v,
                        field("unresponsive_after"),
                        "must be at least 500ms (Status is read every 200ms while calls wait)",
                    ));
                }
                d
            }
            None => DEFAULT_UNRESPONSIVE_AFTER,
        };
        let thresholds = match &c.thresholds {
            None => Thresholds::default(),
            Some(t) => thresholds(&src, t, &|f| field(&format!("thresholds.{f}")))?,
        };
        clusters.push(ClusterConfig {
            name,
            endpoints,
            discovery,
            interval,
            connect,
            metrics,
            vitals_interval,
            unresponsive_after,
            thresholds,
            password_file,
        });
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
