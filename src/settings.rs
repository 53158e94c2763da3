//! What a cluster is watched with, as plain values: which endpoints and how they are found, where members'
//! /metrics are read, and where vital signs turn into warnings. Read by the configuration (which builds them),
//! the prober (which follows them) and the view (which judges by them); imports none of the three.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::etcd::endpoint::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Discovery {
    /// Probe the configured endpoints, exactly.
    #[default]
    Static,
    /// Use the configured endpoints to find the members, then probe every member's client URLs
    /// (as `etcdctl --cluster` does).
    Members,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub discovery: Discovery,
    pub metrics: MetricsSource,
    /// Read members' /metrics (quota, peer round trips, vitals) at most this often; every poll when `None`.
    pub vitals_interval: Option<Duration>,
    pub thresholds: Thresholds,
}

impl Target {
    /// A target with the defaults: static discovery, metrics on the client URL at every poll.
    pub fn new(name: &str, endpoints: Vec<Endpoint>) -> Self {
        Target {
            name: name.to_string(),
            endpoints,
            discovery: Discovery::Static,
            metrics: MetricsSource::ClientUrl,
            vitals_interval: None,
            thresholds: Thresholds::default(),
        }
    }
}

/// Where a member's /metrics are read.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MetricsSource {
    /// `<client URL>/metrics`, which every etcd member serves.
    #[default]
    ClientUrl,
    /// A URL template with `{scheme}`, `{host}`, `{port}` (of the client endpoint) and `{name}` (the member's),
    /// e.g. `http://{host}:2381/metrics` for kubeadm's `--listen-metrics-urls`.
    Template(String),
    /// A URL per member name; members not listed use their client URL.
    PerMember(BTreeMap<String, String>),
}

impl MetricsSource {
    /// Whether the URL depends on the member's name, which is only known once gRPC answered.
    pub fn needs_member_name(&self) -> bool {
        match self {
            MetricsSource::ClientUrl => false,
            MetricsSource::Template(t) => t.contains("{name}"),
            MetricsSource::PerMember(_) => true,
        }
    }

    pub fn url_for(&self, endpoint: &Endpoint, member_name: Option<&str>) -> String {
        let default = format!("{}/metrics", endpoint.url());
        match self {
            MetricsSource::ClientUrl => default,
            MetricsSource::Template(t) => t
                .replace("{scheme}", endpoint.scheme().as_str())
                .replace("{host}", endpoint.host())
                .replace("{port}", &endpoint.port().to_string())
                .replace("{name}", member_name.unwrap_or("")),
            MetricsSource::PerMember(map) => member_name
                .and_then(|n| map.get(n))
                .cloned()
                .unwrap_or(default),
        }
    }
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

/// Where vital signs turn into warnings; each cluster may set its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// etcd's guidance: p99 WAL fsync under 10 ms.
    pub wal_fsync_p99_seconds: f64,
    /// etcd's guidance: p99 backend commit under 25 ms.
    pub backend_commit_p99_seconds: f64,
    /// Pending proposals at or above this, and more than at the previous poll, is a growing backlog.
    pub proposals_pending: f64,
    /// committed − applied at or above this is apply lag (etcd refuses requests beyond 5000).
    pub apply_gap: f64,
    /// Open file descriptors over this share of the limit.
    pub open_fds_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wal_fsync_p99_seconds: 0.010,
            backend_commit_p99_seconds: 0.025,
            proposals_pending: 100.0,
            apply_gap: 1000.0,
            open_fds_ratio: 0.8,
        }
    }
}

impl Discovery {
    /// The configuration's word for it: `static` or `members`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An S3 bucket name as S3 accepts it: 3–63 characters of lowercase letters, digits, dots and hyphens, beginning
/// and ending with a letter or digit.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !name.chars().all(allowed)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err(format!(
            "{name:?}: a bucket name is 3-63 lowercase letters, digits, dots and hyphens, beginning and ending \
             with a letter or digit"
        ));
    }
    Ok(())
}

/// A key prefix (without its outer slashes): segments of printable characters, none empty, `.` or `..`.
pub fn check_s3_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = prefix.split('/').find(|seg| {
        seg.is_empty() || *seg == "." || *seg == ".." || seg.chars().any(char::is_control)
    });
    match bad {
        Some(seg) => Err(format!(
            "{prefix:?}: every part between slashes must be a name ({seg:?} is not)"
        )),
        None => Ok(()),
    }
}

/// Where the maintenance lock lives when nothing else is said: the same for the daemon and the `defrag` command,
/// so that they exclude each other out of the box.
pub const DEFAULT_LOCK_PREFIX: &str = "/etcd-sentinel/maintenance";

/// The KV hash consistency check's defaults (`[cluster.consistency]`, `status --consistency`): every 5 minutes,
/// members up to 2 GiB (etcd's default quota), a minute per member's HashKV. The size bounds what a check costs:
/// a member answers none of its own requests that need an apply while it hashes, about a second per GiB here
/// (docs/benchmarks.md), so a larger database is hashed only when the operator says so.
pub const DEFAULT_CONSISTENCY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
pub const DEFAULT_CONSISTENCY_MAX_DB_SIZE: u64 = 2 << 30;
pub const DEFAULT_HASH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The key prefix of the maintenance lock in etcd: absolute, printable, at most 256 bytes; returned without a
/// trailing slash (the lock's keys go under it).
pub fn check_lock_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/')
        || trimmed.is_empty()
        || prefix.len() > 256
        || prefix.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{prefix:?}: a key prefix such as /etcd-sentinel/maintenance (starting with '/', no spaces, at \
             most 256 bytes)"
        ));
    }
    Ok(trimmed.to_string())
}

/// An S3-compatible server's URL: http or https with a host; returned without a trailing slash.
pub fn check_s3_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && matches!(u.path(), "" | "/")
                && u.query().is_none() =>
        {
            Ok(text.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "{text:?}: an http:// or https:// URL of the S3-compatible server, without a path, query or user \
             (the bucket is configured apart)"
        )),
    }
}

/// Virtual-hosted requests put the bucket in front of the endpoint's host: that needs a DNS name.
pub fn check_virtual_hosted(endpoint: &str) -> Result<(), String> {
    let host = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host().map(|h| matches!(h, url::Host::Domain(_))));
    if host == Some(false) {
        return Err(format!(
            "{endpoint:?}: virtual-hosted requests (bucket.host) need a DNS name, not an IP address; set path-style \
             requests (path_style = true, --s3-path-style)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_urls_from_templates_and_maps() {
        let ep = Endpoint::parse("https://10.0.0.1:2379").unwrap();
        assert_eq!(
            MetricsSource::ClientUrl.url_for(&ep, None),
            "https://10.0.0.1:2379/metrics"
        );
        let t = MetricsSource::Template(
            "http://{host}:2381/metrics?m={name}&p={port}&s={scheme}".into(),
        );
        assert!(t.needs_member_name());
        assert_eq!(
            t.url_for(&ep, Some("cp-1")),
            "http://10.0.0.1:2381/metrics?m=cp-1&p=2379&s=https"
        );
        let v6 = Endpoint::parse("[::1]:2379").unwrap();
        let kubeadm = MetricsSource::Template("http://{host}:2381/metrics".into());
        assert!(!kubeadm.needs_member_name());
        assert_eq!(kubeadm.url_for(&v6, None), "http://[::1]:2381/metrics");
        let map = MetricsSource::PerMember(
            [("cp-1".to_string(), "http://x:1/metrics".to_string())].into(),
        );
        assert_eq!(map.url_for(&ep, Some("cp-1")), "http://x:1/metrics");
        assert_eq!(
            map.url_for(&ep, Some("cp-2")),
            "https://10.0.0.1:2379/metrics",
            "unlisted: client URL"
        );
    }

    #[test]
    fn discovery_is_spelled_as_in_the_configuration() {
        assert_eq!(Discovery::Members.as_str(), "members");
        assert_eq!("static".parse::<Discovery>(), Ok(Discovery::Static));
        assert!("dns".parse::<Discovery>().is_err());
    }

    #[test]
    fn bucket_names_and_endpoints_are_what_s3_accepts() {
        for good in ["etcd-backups", "a.b-c", "b12"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Etcd", "a_b", "-ab", "ab-", &"a".repeat(64)] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_s3_endpoint("http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(check_s3_endpoint("ftp://x").is_err());
        assert!(check_s3_endpoint("minio:9000").is_err());
        assert!(check_s3_prefix("prod/eu-1").is_ok());
        for bad in ["a//b", "a/../b", ".", "a/\u{7}"] {
            assert!(check_s3_prefix(bad).is_err(), "{bad}");
        }
    }
}
