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
use crate::etcd::tls::TlsSettings;
use crate::secret::{Secret, SecretError};
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
    /// The token read from `api_token_file` by `load` (re-read at every reload, so a rotated token takes effect).
    pub api_token: Option<Secret>,
    /// Certificate and key to serve the API over TLS.
    pub server_tls: Option<(PathBuf, PathBuf)>,
    /// Connections the HTTP server holds at once, and how long a request's head may take.
    pub server_limits: ServerLimits,
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
    /// The etcd user and the file holding its password, read by `load`.
    pub password_file: Option<(String, PathBuf)>,
    /// Scheduled snapshots, when `[cluster.snapshot]` is configured.
    pub snapshot: Option<SnapshotConfig>,
    /// Rolling defragmentation, when `[cluster.defrag]` is configured.
    pub defrag: Option<DefragConfig>,
    /// Where the maintenance lock lives in the cluster (shared by snapshots and defragmentation, and with every
    /// other runner: other daemons, a CronJob).
    pub lock_prefix: String,
    /// The KV hash consistency check (`[cluster.consistency]`; on by default).
    pub consistency: ConsistencyConfig,
}

/// `[cluster.consistency]`: how often the voting members' KV hashes are compared, and the bounds of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyConfig {
    /// How often a check runs; `None` when `enabled = false`.
    pub interval: Option<Duration>,
    /// A member whose database is larger is not hashed (HashKV reads the whole database).
    pub max_db_size: u64,
    /// How long one member's HashKV may take.
    pub hash_timeout: Duration,
}

impl ConsistencyConfig {
    pub const DEFAULT_INTERVAL: Duration = crate::settings::DEFAULT_CONSISTENCY_INTERVAL;
    pub const DEFAULT_MAX_DB_SIZE: u64 = crate::settings::DEFAULT_CONSISTENCY_MAX_DB_SIZE;
    pub const DEFAULT_HASH_TIMEOUT: Duration = crate::settings::DEFAULT_HASH_TIMEOUT;
    /// Each check reads every member's whole database: a typo like `5ms` for `5m` must not hammer a cluster.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            interval: Some(Self::DEFAULT_INTERVAL),
            max_db_size: Self::DEFAULT_MAX_DB_SIZE,
            hash_timeout: Self::DEFAULT_HASH_TIMEOUT,
        }
    }
}

/// `[cluster.defrag]`: when the daemon defragments (a cron schedule, a rule on every poll, or only when asked
/// through the API) and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragConfig {
    pub schedule: Option<String>,
    /// Evaluated on every complete poll, per member: a run starts when it holds for any member.
    pub trigger: Option<crate::rule::Rule>,
    /// The trigger starts a run only this long after the last run of any kind started (a refused run counts: it
    /// is retried after this). The schedule and the API are not held back by it.
    pub min_interval: Duration,
    /// Which members a run defragments (empty: all).
    pub rule: crate::rule::Rule,
    pub move_leader: bool,
    /// A verified snapshot into `[cluster.snapshot]`'s `dir` first.
    pub snapshot_before: bool,
    pub compaction_keep_revisions: Option<u64>,
    /// Or compact to the revision the cluster was at this long ago, as the daemon's polls saw it.
    pub compaction_keep_window: Option<Duration>,
    pub wait_between: Duration,
    pub continue_on_error: bool,
    pub disalarm_threshold: Option<f64>,
    pub storage_quota_bytes: u64,
    pub min_reclaim: u64,
    pub member_timeout: Duration,
    pub member_timeout_per_gib: Duration,
    pub catch_up_timeout: Duration,
    pub allow_single_member: bool,
    pub lock_wait: Duration,
    /// Under NOSPACE (no lock can be written), defragment without it: only for a daemon that is the cluster's
    /// only maintenance runner.
    pub nospace_without_lock: bool,
}

/// `[cluster.snapshot]`: when and where the daemon saves verified snapshots, how many it keeps, and whether it
/// proves each one with a restore drill.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotConfig {
    /// Cron (5 fields, UTC; 6 with seconds first), checked.
    pub schedule: String,
    pub dir: PathBuf,
    pub keep_last: Option<usize>,
    pub max_age: Option<Duration>,
    /// Grandfather-father-son counts (`keep_hourly`, …), with `keep_last`; never with `max_age`.
    pub keep_periods: KeepPeriods,
    pub compression: Compression,
    /// A copy of every verified snapshot in S3-compatible storage, pruned by the same policy.
    pub s3: Option<S3Config>,
    pub restore_drill: bool,
    /// The etcd a drill starts (its restore tool is looked for beside it).
    pub etcd_bin: PathBuf,
}

/// `[cluster.snapshot.s3]` (and `snapshot save --s3`): where in S3-compatible storage snapshots are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// Prepended to every object name, without leading or trailing slashes.
    pub prefix: String,
    /// An S3-compatible server's URL (MinIO, Ceph, …); AWS when absent.
    pub endpoint: Option<String>,
    /// The AWS environment's (`AWS_REGION`, `AWS_DEFAULT_REGION`) when absent, else us-east-1.
    pub region: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO and most others need it).
    pub path_style: bool,
    /// Files holding the credentials (read by `load`); the AWS environment variables when absent.
    pub credential_files: Option<S3CredentialFiles>,
    pub credentials: Option<S3Credentials>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3CredentialFiles {
    pub access_key_id: PathBuf,
    pub secret_access_key: PathBuf,
    pub session_token: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Config {
    /// `s3://bucket/prefix`, as messages show it.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepPeriods {
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
}

impl KeepPeriods {
    /// Whether any count is set (grandfather-father-son is in use).
    pub fn any(&self) -> bool {
        self.hourly.is_some()
            || self.daily.is_some()
            || self.weekly.is_some()
            || self.monthly.is_some()
    }
}

/// How a snapshot is stored: as etcd sent it, or zstd-compressed after its hash was checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

/// How the HTTP server holds up under many or slow clients (see `export::server`, which applies them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// For the head of each request, and for an idle keep-alive connection to send its next one.
    pub header_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Prometheus, a few dashboards and an operator's curl need a handful; 256 leaves room, and stays well under a
/// default `ulimit -n` of 1024 with the clusters' own connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterConfig {
    /// What differs between two configurations of one cluster, in words for the log (never a secret's value).
    pub fn changes_from(&self, old: &ClusterConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut note = |changed: bool, what: &'static str| {
            if changed {
                out.push(what);
            }
        };
        note(self.endpoints != old.endpoints, "endpoints");
        note(self.discovery != old.discovery, "discovery");
        note(self.interval != old.interval, "interval");
        note(
            self.connect.dial_timeout != old.connect.dial_timeout
                || self.connect.command_timeout != old.connect.command_timeout
                || self.unresponsive_after != old.unresponsive_after,
            "timeouts",
        );
        let (tls, old_tls) = (&self.connect.tls, &old.connect.tls);
        note(
            tls.files_digest != old_tls.files_digest,
            "TLS files (rotated)",
        );
        note(
            TlsSettings {
                files_digest: 0,
                ..tls.clone()
            } != TlsSettings {
                files_digest: 0,
                ..old_tls.clone()
            },
            "TLS settings",
        );
        note(
            self.connect.insecure_transport != old.connect.insecure_transport,
            "insecure_transport",
        );
        let user = |c: &ClusterConfig| c.connect.credentials.as_ref().map(|c| c.user.clone());
        let password =
            |c: &ClusterConfig| c.connect.credentials.as_ref().map(|c| c.password.clone());
        note(user(self) != user(old), "user");
        note(
            user(self) == user(old) && password(self) != password(old),
            "password (rotated)",
        );
        note(
            self.metrics != old.metrics || self.vitals_interval != old.vitals_interval,
            "metrics URLs",
        );
        note(self.thresholds != old.thresholds, "thresholds");
        note(self.snapshot != old.snapshot, "snapshot");
        note(self.defrag != old.defrag, "defrag");
        note(self.lock_prefix != old.lock_prefix, "lock_prefix");
        note(self.consistency != old.consistency, "consistency");
        out
    }

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
    #[error("cannot read {file}: {cause}")]
    Read { file: String, cause: std::io::Error },
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
    /// A file a top-level key names cannot be used.
    #[error("{file}: {key}: {message}")]
    Setting {
        file: String,
        key: &'static str,
        message: String,
    },
    #[error("{file}: cluster {cluster}: {key}: {cause}")]
    Secret {
        file: String,
        cluster: String,
        key: &'static str,
        cause: SecretError,
    },
    #[error("{file}: cluster {cluster}: {cause}")]
    Connect {
        file: String,
        cluster: String,
        cause: ConnectError,
    },
}

/// A cluster name is a metric label value and a URL path segment: keep it to a safe alphabet, and not `.` or
/// `..`, which a URL path normalises away.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
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
    let server_limits = ServerLimits {
        max_connections: match &raw.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    return Err(src.invalid(
                        n,
                        "max_connections".into(),
                        format!("{}: between 1 and 100000", n.get_ref()),
                    ));
                }
            },
        },
        header_timeout: match &raw.header_timeout {
            None => DEFAULT_HEADER_TIMEOUT,
            Some(t) => {
                let d = src.duration(t, "header_timeout".into())?;
                if d < Duration::from_millis(100) {
                    return Err(src.invalid(
                        t,
                        "header_timeout".into(),
                        "must be at least 100ms (a client on a real network needs round trips to send a head)",
                    ));
                }
                d
            }
        },
    };
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
        // Read by `load`.
        api_token: None,
        server_tls,
        server_limits,
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
    fn a_reload_says_what_changed_and_sees_rotated_files_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "first").unwrap();
        let text = format!(
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.tls]\ncacert = {:?}\n",
            ca.display().to_string()
        );
        let read = || {
            let mut c = parse("s.toml", &text).unwrap().clusters.remove(0);
            c.connect.tls.files_digest = c.connect.tls.digest_files();
            c
        };
        let before = read();
        assert_eq!(read(), before, "nothing changed, nothing to restart");
        std::fs::write(&ca, "second").unwrap();
        let rotated = read();
        assert_ne!(rotated, before, "same path, new content: reconnect");
        assert_eq!(rotated.changes_from(&before), vec!["TLS files (rotated)"]);
        let mut with_password = rotated.clone();
        with_password.connect.credentials = Some(crate::secret::Credentials {
            user: "monitor".into(),
            password: Secret::new("one"),
        });
        let mut new_password = with_password.clone();
        new_password.connect.credentials = Some(crate::secret::Credentials {
            user: "monitor".into(),
            password: Secret::new("two"),
        });
        let said = new_password.changes_from(&with_password);
        assert_eq!(said, vec!["password (rotated)"]);
        assert!(!format!("{said:?}").contains("two"), "never the secret");
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

    #[test]
    fn a_defrag_table_with_its_defaults() {
        let config = parse(
            "s.toml",
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.snapshot]\nschedule = \"@daily\"\ndir = \"/b\"\n\
             [cluster.defrag]\nschedule = \"14 9 * * 1-5\"\nrule = \"dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024\"\n\
             move_leader = true\nsnapshot_before = true\nmin_reclaim = \"64MiB\"\n",
        )
        .unwrap();
        let c = &config.clusters[0];
        let d = c.defrag.as_ref().unwrap();
        assert_eq!(d.schedule.as_deref(), Some("14 9 * * 1-5"));
        assert!(d.trigger.is_none());
        assert_eq!(d.min_interval, Duration::from_secs(3600));
        assert!(d.move_leader && d.snapshot_before && !d.continue_on_error);
        assert_eq!(d.min_reclaim, 64 << 20);
        assert_eq!(d.disalarm_threshold, Some(0.9));
        assert_eq!(d.storage_quota_bytes, 2 << 30);
        assert_eq!(d.lock_wait, Duration::ZERO);
        assert_eq!(c.lock_prefix, "/etcd-sentinel/maintenance");
    }

    fn error_of(text: &str) -> String {
        parse("s.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn the_consistency_check_is_on_by_default_and_configurable() {
        let one = "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n";
        let c = &parse("s.toml", one).unwrap().clusters[0];
        assert_eq!(c.consistency, ConsistencyConfig::default());
        assert_eq!(c.consistency.interval, Some(Duration::from_secs(300)));
        let c = &parse(
            "s.toml",
            &format!("{one}[cluster.consistency]\ninterval = \"1h\"\nmax_db_size = \"4GiB\"\nhash_timeout = \"2m\"\n"),
        )
        .unwrap()
        .clusters[0];
        assert_eq!(c.consistency.interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.consistency.max_db_size, 4 << 30);
        assert_eq!(c.consistency.hash_timeout, Duration::from_secs(120));
        let off = &parse(
            "s.toml",
            &format!("{one}[cluster.consistency]\nenabled = false\n"),
        )
        .unwrap()
        .clusters[0];
        assert_eq!(off.consistency.interval, None);
        for (table, expected) in [
            (
                "interval = \"0s\"",
                "s.toml:5: cluster[0].consistency.interval: \"0s\": must be longer than zero",
            ),
            (
                "max_db_size = 0",
                "s.toml:5: cluster[0].consistency.max_db_size: 0 would hash no member",
            ),
            (
                "max_db_size = \"lots\"",
                "s.toml:5: cluster[0].consistency.max_db_size",
            ),
            (
                "hash_timeout = \"soon\"",
                "s.toml:5: cluster[0].consistency.hash_timeout",
            ),
            ("intervall = \"5m\"", "unknown field `intervall`"),
        ] {
            let e = error_of(&format!("{one}[cluster.consistency]\n{table}\n"));
            assert!(e.contains(expected), "{table}: {e}");
        }
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
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"http://a:1\"]\ninsecure_transport = false\n",
                "s.toml:3: cluster[0].endpoints[0]: http://a:1 is plain text",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.snapshot]\nschedule = \"@daily\"\ndir = \"/b\"\ncompress = \"gzip\"\n",
                "s.toml:7: cluster[0].snapshot.compress: \"gzip\": \"none\" or \"zstd\"",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.snapshot]\nschedule = \"@daily\"\ndir = \"/b\"\nkeep_daily = 0\n",
                "s.toml:7: cluster[0].snapshot.keep_daily: 0: at least 1",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.snapshot]\nschedule = \"@daily\"\ndir = \"/b\"\nkeep_weekly = 4\nmax_age = \"30d\"\n",
                "s.toml:8: cluster[0].snapshot.max_age: max_age cannot be combined with keep_hourly",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\nrule = \"dbQuotaUsage > 0.8 || dbSizeFre > 1\"\n",
                "s.toml:5: cluster[0].defrag.rule: \"dbQuotaUsage > 0.8 || dbSizeFre > 1\": at column 23: unknown name \"dbSizeFre\"",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\ntrigger = \" \"\n",
                "s.toml:5: cluster[0].defrag.trigger: an empty trigger would start a run on every poll",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\nsnapshot_before = true\n",
                "cluster[0].defrag.snapshot_before: needs [cluster.snapshot]",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\nschedule = \"every day\"\n",
                "s.toml:5: cluster[0].defrag.schedule",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\nmin_reclaim = \"lots\"\n",
                "s.toml:5: cluster[0].defrag.min_reclaim",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\ndisalarm_threshold = 1.5\n",
                "s.toml:5: cluster[0].defrag.disalarm_threshold: 1.5",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\ncompaction_keep_revisions = 5\ncompaction_keep_window = \"1h\"\n",
                "s.toml:6: cluster[0].defrag.compaction_keep_window: give compaction_keep_revisions or compaction_keep_window, not both",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\n[cluster.defrag]\ncompaction_keep_revisions = 0\n",
                "s.toml:5: cluster[0].defrag.compaction_keep_revisions: 0: at least 1",
            ),
            (
                "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\nlock_prefix = \"locks\"\n",
                "s.toml:4: cluster[0].lock_prefix",
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
