//! The configuration file as written (serde), and where in the text each value stands, for the messages.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

// The file as written. Unknown keys are errors: a typo ("intervall") must not silently fall back to a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) api_token_file: Option<Spanned<String>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    #[serde(default, rename = "cluster")]
    pub(super) clusters: Vec<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: Spanned<String>,
    pub(super) endpoints: Spanned<Vec<Spanned<String>>>,
    pub(super) discovery: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) dial_timeout: Option<Spanned<String>>,
    pub(super) command_timeout: Option<Spanned<String>>,
    pub(super) metrics_urls: Option<Spanned<RawMetricsUrls>>,
    pub(super) vitals_interval: Option<Spanned<String>>,
    pub(super) unresponsive_after: Option<Spanned<String>>,
    pub(super) thresholds: Option<RawThresholds>,
    pub(super) tls: Option<RawTls>,
    pub(super) insecure_transport: Option<bool>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) snapshot: Option<Spanned<RawSnapshot>>,
    pub(super) defrag: Option<Spanned<RawDefrag>>,
    pub(super) lock_prefix: Option<Spanned<String>>,
    pub(super) consistency: Option<RawConsistency>,
}

/// `[cluster.consistency]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsistency {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) max_db_size: Option<Spanned<RawBytes>>,
    pub(super) hash_timeout: Option<Spanned<String>>,
}

/// A size: bytes as an integer, or a string with a unit (`"64MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBytes {
    Bytes(i64),
    Text(String),
}

/// `[cluster.defrag]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefrag {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) trigger: Option<Spanned<String>>,
    pub(super) min_interval: Option<Spanned<String>>,
    pub(super) rule: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) move_leader: bool,
    #[serde(default)]
    pub(super) snapshot_before: bool,
    pub(super) compaction_keep_revisions: Option<Spanned<i64>>,
    pub(super) compaction_keep_window: Option<Spanned<String>>,
    pub(super) wait_between: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) continue_on_error: bool,
    pub(super) auto_disalarm: Option<bool>,
    pub(super) disalarm_threshold: Option<Spanned<f64>>,
    pub(super) storage_quota_bytes: Option<Spanned<RawBytes>>,
    pub(super) min_reclaim: Option<Spanned<RawBytes>>,
    pub(super) member_timeout: Option<Spanned<String>>,
    pub(super) member_timeout_per_gib: Option<Spanned<String>>,
    pub(super) catch_up_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_single_member: bool,
    pub(super) lock_wait: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) nospace_without_lock: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot {
    pub(super) schedule: Spanned<String>,
    pub(super) dir: Spanned<String>,
    pub(super) keep_last: Option<Spanned<i64>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) keep_hourly: Option<Spanned<i64>>,
    pub(super) keep_daily: Option<Spanned<i64>>,
    pub(super) keep_weekly: Option<Spanned<i64>>,
    pub(super) keep_monthly: Option<Spanned<i64>>,
    pub(super) compress: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) restore_drill: bool,
    pub(super) etcd_bin: Option<Spanned<String>>,
    pub(super) s3: Option<Spanned<RawS3>>,
}

/// `[cluster.snapshot.s3]`. Credentials only as files (or the environment), never in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    pub(super) bucket: Spanned<String>,
    #[serde(default)]
    pub(super) prefix: String,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) region: Option<String>,
    #[serde(default)]
    pub(super) path_style: bool,
    pub(super) access_key_id_file: Option<Spanned<String>>,
    pub(super) secret_access_key_file: Option<Spanned<String>>,
    pub(super) session_token_file: Option<Spanned<String>>,
    /// Refused with a message that says where credentials go instead.
    pub(super) access_key_id: Option<Spanned<toml::Value>>,
    pub(super) secret_access_key: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cacert: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) insecure_skip_tls_verify: bool,
    pub(super) server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawMetricsUrls {
    Template(String),
    PerMember(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThresholds {
    pub(super) wal_fsync_p99: Option<Spanned<String>>,
    pub(super) backend_commit_p99: Option<Spanned<String>>,
    pub(super) proposals_pending: Option<Spanned<u64>>,
    pub(super) apply_gap: Option<Spanned<u64>>,
    pub(super) open_fds_ratio: Option<Spanned<f64>>,
}

/// Turns byte offsets into line numbers for the messages.
pub(super) struct Source<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    pub(super) fn invalid<T>(
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

    pub(super) fn duration(
        &self,
        value: &Spanned<String>,
        field: String,
    ) -> Result<Duration, ConfigError> {
        crate::units::parse_duration(value.get_ref()).map_err(|e| self.invalid(value, field, e))
    }
}
