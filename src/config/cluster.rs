//! One `[[cluster]]` table → a [`ClusterConfig`], one small function per group of keys.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    RawBytes, RawCluster, RawConsistency, RawDefrag, RawMetricsUrls, RawS3, RawSnapshot,
    RawThresholds, RawTls, Source,
};
use super::{
    ClusterConfig, Compression, ConfigError, ConsistencyConfig, DEFAULT_INTERVAL,
    DEFAULT_UNRESPONSIVE_AFTER, DefragConfig, KeepPeriods, MIN_INTERVAL, MIN_UNRESPONSIVE_AFTER,
    S3Config, S3CredentialFiles, SnapshotConfig, valid_name,
};
use crate::etcd::connect::ConnectSettings;
use crate::etcd::endpoint::Endpoint;
use crate::etcd::tls::TlsSettings;
use crate::settings::{Discovery, MetricsSource, Thresholds, check_metrics_url};

/// Names a key of this cluster in messages: `cluster[2].tls.cacert`.
pub(super) struct Keys {
    index: usize,
}

impl Keys {
    pub(super) fn new(index: usize) -> Self {
        Keys { index }
    }

    fn key(&self, name: &str) -> String {
        format!("cluster[{}].{name}", self.index)
    }
}

pub(super) fn parse(
    src: &Source,
    keys: &Keys,
    c: &RawCluster,
) -> Result<ClusterConfig, ConfigError> {
    let name = c.name.get_ref().trim().to_string();
    if !valid_name(&name) {
        return Err(src.invalid(
            &c.name,
            keys.key("name"),
            format!("{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
        ));
    }
    let connect = connect_settings(src, keys, c)?;
    let snapshot = c
        .snapshot
        .as_ref()
        .map(|s| snapshot(src, keys, s))
        .transpose()?;
    let defrag = c
        .defrag
        .as_ref()
        .map(|d| defrag(src, keys, d, snapshot.is_some()))
        .transpose()?;
    let lock_prefix = match &c.lock_prefix {
        None => crate::settings::DEFAULT_LOCK_PREFIX.to_string(),
        Some(p) => crate::settings::check_lock_prefix(p.get_ref())
            .map_err(|e| src.invalid(p, keys.key("lock_prefix"), e))?,
    };
    Ok(ClusterConfig {
        name,
        // As etcdctl: with TLS settings, an endpoint written without a scheme is spoken to over TLS. The same rule
        // as for `--endpoints`, from the same settings.
        endpoints: endpoints(src, keys, &c.endpoints, &connect)?,
        discovery: discovery(src, keys, c.discovery.as_ref())?,
        interval: interval(src, keys, c.interval.as_ref())?,
        metrics: metrics_urls(src, keys, c.metrics_urls.as_ref())?,
        vitals_interval: c
            .vitals_interval
            .as_ref()
            .map(|v| src.duration(v, keys.key("vitals_interval")))
            .transpose()?,
        unresponsive_after: unresponsive_after(
            src,
            keys,
            c.unresponsive_after.as_ref(),
            connect.command_timeout,
        )?,
        thresholds: match &c.thresholds {
            None => Thresholds::default(),
            Some(t) => thresholds(src, keys, t)?,
        },
        password_file: password_file(src, keys, c)?,
        snapshot,
        defrag,
        lock_prefix,
        consistency: match &c.consistency {
            None => ConsistencyConfig::default(),
            Some(raw) => consistency(src, keys, raw)?,
        },
        connect,
    })
}

/// A size written as bytes or with a unit.
fn bytes(src: &Source, v: &Spanned<RawBytes>, field: String) -> Result<u64, ConfigError> {
    match v.get_ref() {
        RawBytes::Bytes(n) => u64::try_from(*n)
            .map_err(|_| src.invalid(v, field, format!("{n}: a size is not negative"))),
        RawBytes::Text(t) => crate::units::parse_bytes(t).map_err(|e| src.invalid(v, field, e)),
    }
}

fn consistency(
    src: &Source,
    keys: &Keys,
    raw: &RawConsistency,
) -> Result<ConsistencyConfig, ConfigError> {
    let key = |name: &str| keys.key(&format!("consistency.{name}"));
    // Durations are longer than zero (`enabled = false` turns the check off).
    let positive = |raw: &Option<Spanned<String>>, name: &str, default: Duration| match raw {
        None => Ok(default),
        Some(v) => src.duration(v, key(name)),
    };
    let interval = positive(
        &raw.interval,
        "interval",
        ConsistencyConfig::DEFAULT_INTERVAL,
    )?;
    if let Some(v) = &raw.interval
        && interval < ConsistencyConfig::MIN_INTERVAL
    {
        return Err(src.invalid(
            v,
            key("interval"),
            "must be at least 1s (each check reads every member's whole database)",
        ));
    }
    let max_db_size = match &raw.max_db_size {
        None => ConsistencyConfig::DEFAULT_MAX_DB_SIZE,
        Some(v) => match bytes(src, v, key("max_db_size"))? {
            0 => {
                return Err(src.invalid(
                    v,
                    key("max_db_size"),
                    "0 would hash no member (enabled = false turns the check off)",
                ));
            }
            n => n,
        },
    };
    Ok(ConsistencyConfig {
        interval: raw.enabled.unwrap_or(true).then_some(interval),
        max_db_size,
        hash_timeout: positive(
            &raw.hash_timeout,
            "hash_timeout",
            ConsistencyConfig::DEFAULT_HASH_TIMEOUT,
        )?,
    })
}

fn defrag(
    src: &Source,
    keys: &Keys,
    raw: &Spanned<RawDefrag>,
    has_snapshot: bool,
) -> Result<DefragConfig, ConfigError> {
    let key = |name: &str| keys.key(&format!("defrag.{name}"));
    let d = raw.get_ref();
    if let Some(s) = &d.schedule {
        crate::schedule::check(s.get_ref()).map_err(|e| src.invalid(s, key("schedule"), e))?;
    }
    let rule = |raw: &Option<Spanned<String>>, name: &str| match raw {
        None => Ok(None),
        Some(r) => crate::rule::Rule::parse(r.get_ref())
            .map(Some)
            .map_err(|e| src.invalid(r, key(name), e.to_string())),
    };
    let trigger = rule(&d.trigger, "trigger")?;
    if let (Some(t), Some(written)) = (&trigger, &d.trigger)
        && t.is_always()
    {
        return Err(src.invalid(
            written,
            key("trigger"),
            "an empty trigger would start a run on every poll; give a rule, e.g. \"dbQuotaUsage > 0.8\"",
        ));
    }
    let duration = |raw: &Option<Spanned<String>>, name: &str, default: Duration| match raw {
        None => Ok(default),
        Some(v) => src.duration(v, key(name)),
    };
    // A wait may be zero; the other durations may not.
    let wait = |raw: &Option<Spanned<String>>, name: &str| match raw {
        None => Ok(Duration::ZERO),
        Some(v) => crate::units::parse_wait(v.get_ref()).map_err(|e| src.invalid(v, key(name), e)),
    };
    let bytes = |raw: &Option<Spanned<RawBytes>>, name: &str, default: u64| match raw {
        None => Ok(default),
        Some(v) => bytes(src, v, key(name)),
    };
    let threshold = match &d.disalarm_threshold {
        None => 0.9,
        Some(t) if *t.get_ref() > 0.0 && *t.get_ref() <= 1.0 => *t.get_ref(),
        Some(t) => {
            return Err(src.invalid(
                t,
                key("disalarm_threshold"),
                format!(
                    "{}: a fraction of the quota, above 0 and at most 1",
                    t.get_ref()
                ),
            ));
        }
    };
    let compaction_keep_revisions = match &d.compaction_keep_revisions {
        None => None,
        Some(n) => Some(
            u64::try_from(*n.get_ref())
                .ok()
                .filter(|&k| k >= 1)
                .ok_or_else(|| {
                    src.invalid(
                        n,
                        key("compaction_keep_revisions"),
                        format!(
                            "{}: at least 1 (compacting to the newest revision drops all history and makes \
                             Kubernetes watchers re-list)",
                            n.get_ref()
                        ),
                    )
                })?,
        ),
    };
    let compaction_keep_window = d
        .compaction_keep_window
        .as_ref()
        .map(|w| src.duration(w, key("compaction_keep_window")))
        .transpose()?;
    if let (Some(w), Some(_)) = (&d.compaction_keep_window, &d.compaction_keep_revisions) {
        return Err(src.invalid(
            w,
            key("compaction_keep_window"),
            "give compaction_keep_revisions or compaction_keep_window, not both",
        ));
    }
    if d.snapshot_before && !has_snapshot {
        return Err(src.invalid(
            raw,
            key("snapshot_before"),
            "needs [cluster.snapshot] (its dir is where the snapshot goes)",
        ));
    }
    Ok(DefragConfig {
        schedule: d.schedule.as_ref().map(|s| s.get_ref().trim().to_string()),
        trigger,
        min_interval: duration(&d.min_interval, "min_interval", Duration::from_secs(3600))?,
        rule: rule(&d.rule, "rule")?.unwrap_or_else(crate::rule::Rule::always),
        move_leader: d.move_leader,
        snapshot_before: d.snapshot_before,
        compaction_keep_revisions,
        compaction_keep_window,
        wait_between: wait(&d.wait_between, "wait_between")?,
        continue_on_error: d.continue_on_error,
        disalarm_threshold: d.auto_disalarm.unwrap_or(true).then_some(threshold),
        storage_quota_bytes: match bytes(&d.storage_quota_bytes, "storage_quota_bytes", 2 << 30)? {
            0 => {
                let raw = d
                    .storage_quota_bytes
                    .as_ref()
                    .map_or(raw.span(), |q| q.span());
                return Err(ConfigError::Invalid {
                    file: src.file.to_string(),
                    line: src.line_col(raw.start).0,
                    field: key("storage_quota_bytes"),
                    message: "a quota above 0 (etcd's default is 2GiB)".into(),
                });
            }
            q => q,
        },
        min_reclaim: bytes(&d.min_reclaim, "min_reclaim", 0)?,
        member_timeout: duration(&d.member_timeout, "member_timeout", Duration::from_secs(60))?,
        member_timeout_per_gib: duration(
            &d.member_timeout_per_gib,
            "member_timeout_per_gib",
            Duration::from_secs(60),
        )?,
        catch_up_timeout: duration(
            &d.catch_up_timeout,
            "catch_up_timeout",
            Duration::from_secs(120),
        )?,
        allow_single_member: d.allow_single_member,
        lock_wait: wait(&d.lock_wait, "lock_wait")?,
        nospace_without_lock: d.nospace_without_lock,
    })
}

fn snapshot(
    src: &Source,
    keys: &Keys,
    raw: &Spanned<RawSnapshot>,
) -> Result<SnapshotConfig, ConfigError> {
    let key = |name: &str| keys.key(&format!("snapshot.{name}"));
    let s = raw.get_ref();
    crate::schedule::check(s.schedule.get_ref())
        .map_err(|e| src.invalid(&s.schedule, key("schedule"), e))?;
    if s.dir.get_ref().trim().is_empty() {
        return Err(src.invalid(&s.dir, key("dir"), "empty path"));
    }
    let count = |raw: &Option<Spanned<i64>>, name: &str| match raw {
        None => Ok(None),
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v) if v >= 1 => Ok(Some(v)),
            _ => Err(src.invalid(
                n,
                key(name),
                format!("{}: at least 1 (the newest is always kept)", n.get_ref()),
            )),
        },
    };
    let keep_last = count(&s.keep_last, "keep_last")?;
    let keep_periods = KeepPeriods {
        hourly: count(&s.keep_hourly, "keep_hourly")?,
        daily: count(&s.keep_daily, "keep_daily")?,
        weekly: count(&s.keep_weekly, "keep_weekly")?,
        monthly: count(&s.keep_monthly, "keep_monthly")?,
    };
    let compression = match &s.compress {
        None => Compression::None,
        Some(c) => c.get_ref().parse().map_err(|_| {
            src.invalid(
                c,
                key("compress"),
                format!("{:?}: \"none\" or \"zstd\"", c.get_ref()),
            )
        })?,
    };
    let max_age = match &s.max_age {
        None => None,
        Some(v) => Some(
            humantime::parse_duration(v.get_ref().trim())
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(10 * 365 * 86_400))
                .ok_or_else(|| {
                    src.invalid(
                        v,
                        key("max_age"),
                        format!(
                            "{:?}: a duration between a second and ten years, e.g. 14d",
                            v.get_ref()
                        ),
                    )
                })?,
        ),
    };
    let periods_given = [
        &s.keep_hourly,
        &s.keep_daily,
        &s.keep_weekly,
        &s.keep_monthly,
    ]
    .into_iter()
    .any(Option::is_some);
    if let (Some(age), true) = (&s.max_age, periods_given) {
        // Grandfather-father-son keeps old snapshots on purpose; an age limit would delete them again.
        return Err(src.invalid(
            age,
            key("max_age"),
            "max_age cannot be combined with keep_hourly/keep_daily/keep_weekly/keep_monthly: \
             those keep older snapshots on purpose; use one or the other",
        ));
    }
    let s3 =
        s.s3.as_ref()
            .map(|raw| s3_config(src, &key, raw))
            .transpose()?;
    Ok(SnapshotConfig {
        schedule: s.schedule.get_ref().trim().to_string(),
        dir: PathBuf::from(s.dir.get_ref()),
        keep_last,
        max_age,
        keep_periods,
        compression,
        s3,
        restore_drill: s.restore_drill,
        etcd_bin: PathBuf::from(s.etcd_bin.as_ref().map_or("etcd", |b| b.get_ref().as_str())),
    })
}

/// `[cluster.snapshot.s3]`: a bucket name S3 accepts, an endpoint URL, the credentials as files (both or none).
fn s3_config(
    src: &Source,
    key: &dyn Fn(&str) -> String,
    raw: &Spanned<RawS3>,
) -> Result<S3Config, ConfigError> {
    let s = raw.get_ref();
    for (given, name) in [
        (&s.access_key_id, "access_key_id"),
        (&s.secret_access_key, "secret_access_key"),
    ] {
        if let Some(v) = given {
            return Err(src.invalid(
                v,
                key(&format!("s3.{name}")),
                format!(
                    "credentials are never written in the configuration: put it in a file and name it with \
                     {name}_file, or leave both out and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ),
            ));
        }
    }
    let bucket = s.bucket.get_ref().trim();
    crate::settings::check_bucket_name(bucket)
        .map_err(|e| src.invalid(&s.bucket, key("s3.bucket"), e))?;
    let endpoint = s
        .endpoint
        .as_ref()
        .map(|e| {
            let checked = crate::settings::check_s3_endpoint(e.get_ref())
                .map_err(|m| src.invalid(e, key("s3.endpoint"), m))?;
            if !s.path_style {
                crate::settings::check_virtual_hosted(&checked)
                    .map_err(|m| src.invalid(e, key("s3.endpoint"), m))?;
            }
            Ok(checked)
        })
        .transpose()?;
    if let Some(r) = &s.region
        && r.trim().is_empty()
    {
        return Err(src.invalid(
            raw,
            key("s3.region"),
            "empty (leave it out for the AWS environment's)",
        ));
    }
    let file = |f: &Option<Spanned<String>>| f.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let credential_files = match (file(&s.access_key_id_file), file(&s.secret_access_key_file)) {
        (Some(access_key_id), Some(secret_access_key)) => Some(S3CredentialFiles {
            access_key_id,
            secret_access_key,
            session_token: file(&s.session_token_file),
        }),
        (None, None) => {
            if let Some(t) = &s.session_token_file {
                return Err(src.invalid(
                    t,
                    key("s3.session_token_file"),
                    "only with access_key_id_file and secret_access_key_file",
                ));
            }
            None
        }
        _ => {
            return Err(src.invalid(
                raw,
                key("s3"),
                "access_key_id_file and secret_access_key_file go together (or neither, for the AWS \
                 environment variables)",
            ));
        }
    };
    let prefix = s.prefix.trim_matches('/');
    crate::settings::check_s3_prefix(prefix).map_err(|e| src.invalid(raw, key("s3.prefix"), e))?;
    Ok(S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint,
        region: s.region.clone(),
        path_style: s.path_style,
        credential_files,
        credentials: None,
    })
}

fn endpoints(
    src: &Source,
    keys: &Keys,
    list: &Spanned<Vec<Spanned<String>>>,
    connect: &ConnectSettings,
) -> Result<Vec<Endpoint>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(src.invalid(
            list,
            keys.key("endpoints"),
            "at least one endpoint is needed",
        ));
    }
    let mut endpoints = Vec::new();
    for (j, e) in list.get_ref().iter().enumerate() {
        let ep = Endpoint::parse_with_default(e.get_ref(), connect.default_scheme())
            .map_err(|err| src.invalid(e, keys.key(&format!("endpoints[{j}]")), err.to_string()))?;
        if ep.scheme() == crate::etcd::endpoint::Scheme::Http && !connect.insecure_transport {
            return Err(src.invalid(
                e,
                keys.key(&format!("endpoints[{j}]")),
                format!(
                    "{} is plain text, and insecure_transport = false refuses plain text: use https://",
                    ep.url()
                ),
            ));
        }
        if !endpoints.contains(&ep) {
            endpoints.push(ep);
        }
    }
    Ok(endpoints)
}

fn discovery(
    src: &Source,
    keys: &Keys,
    raw: Option<&Spanned<String>>,
) -> Result<Discovery, ConfigError> {
    let Some(d) = raw else {
        return Ok(Discovery::Static);
    };
    d.get_ref().trim().parse().map_err(|_| {
        src.invalid(
            d,
            keys.key("discovery"),
            format!(
                "{:?}: expected \"static\" or \"members\"",
                d.get_ref().trim()
            ),
        )
    })
}

fn interval(
    src: &Source,
    keys: &Keys,
    raw: Option<&Spanned<String>>,
) -> Result<Duration, ConfigError> {
    let Some(v) = raw else {
        return Ok(DEFAULT_INTERVAL);
    };
    let interval = src.duration(v, keys.key("interval"))?;
    if interval < MIN_INTERVAL {
        return Err(src.invalid(v, keys.key("interval"), "must be at least 100ms"));
    }
    Ok(interval)
}

fn connect_settings(
    src: &Source,
    keys: &Keys,
    c: &RawCluster,
) -> Result<ConnectSettings, ConfigError> {
    let defaults = ConnectSettings::default();
    let timeout = |raw: &Option<Spanned<String>>, key: &str, default: Duration| match raw {
        Some(v) => src.duration(v, keys.key(key)),
        None => Ok(default),
    };
    Ok(ConnectSettings {
        dial_timeout: timeout(&c.dial_timeout, "dial_timeout", defaults.dial_timeout)?,
        command_timeout: timeout(
            &c.command_timeout,
            "command_timeout",
            defaults.command_timeout,
        )?,
        tls: tls_settings(src, keys, c.tls.as_ref())?,
        insecure_transport: c.insecure_transport.unwrap_or(defaults.insecure_transport),
        // Filled in by `load`, which reads the password file.
        credentials: None,
    })
}

fn tls_settings(
    src: &Source,
    keys: &Keys,
    raw: Option<&RawTls>,
) -> Result<TlsSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TlsSettings::default());
    };
    let key = |name: &str| keys.key(&format!("tls.{name}"));
    let path = |v: &Option<Spanned<String>>, name: &str| -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) if p.get_ref().trim().is_empty() => {
                Err(src.invalid(p, key(name), "empty path"))
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
        requested: true,
        files_digest: 0,
    };
    match (&raw.cert, &raw.key) {
        (Some(c), None) => Err(src.invalid(c, key("key"), "a client certificate needs its key")),
        (None, Some(k)) => Err(src.invalid(k, key("cert"), "a client key needs its certificate")),
        _ => Ok(settings),
    }
}

/// The etcd user and the file holding its password; passwords are never written in the configuration.
fn password_file(
    src: &Source,
    keys: &Keys,
    c: &RawCluster,
) -> Result<Option<(String, PathBuf)>, ConfigError> {
    match (&c.user, &c.password_file) {
        (Some(u), _) if u.get_ref().is_empty() => {
            Err(src.invalid(u, keys.key("user"), "empty user name"))
        }
        (Some(u), Some(p)) => Ok(Some((u.get_ref().clone(), PathBuf::from(p.get_ref())))),
        (Some(u), None) => Err(src.invalid(
            u,
            keys.key("password_file"),
            "a user needs a password_file (passwords are not written in the configuration)",
        )),
        (None, Some(p)) => Err(src.invalid(p, keys.key("user"), "password_file without a user")),
        (None, None) => Ok(None),
    }
}

fn metrics_urls(
    src: &Source,
    keys: &Keys,
    raw: Option<&Spanned<RawMetricsUrls>>,
) -> Result<MetricsSource, ConfigError> {
    let Some(spanned) = raw else {
        return Ok(MetricsSource::ClientUrl);
    };
    match spanned.get_ref() {
        RawMetricsUrls::Template(t) => {
            check_metrics_url(t, true)
                .map_err(|m| src.invalid(spanned, keys.key("metrics_urls"), m))?;
            Ok(MetricsSource::Template(t.clone()))
        }
        RawMetricsUrls::PerMember(map) => {
            for (member, url) in map {
                check_metrics_url(url, false).map_err(|m| {
                    src.invalid(spanned, keys.key(&format!("metrics_urls.{member}")), m)
                })?;
            }
            Ok(MetricsSource::PerMember(map.clone()))
        }
    }
}

fn unresponsive_after(
    src: &Source,
    keys: &Keys,
    raw: Option<&Spanned<String>>,
    command_timeout: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = raw else {
        return Ok(DEFAULT_UNRESPONSIVE_AFTER);
    };
    let key = keys.key("unresponsive_after");
    let d = src.duration(v, key.clone())?;
    if d >= command_timeout {
        return Err(src.invalid(
            v,
            key,
            format!(
                "must be shorter than command_timeout ({}), or it never applies",
                humantime::format_duration(command_timeout)
            ),
        ));
    }
    if d < MIN_UNRESPONSIVE_AFTER {
        return Err(src.invalid(
            v,
            key,
            "must be at least 500ms (Status is read every 200ms while calls wait)",
        ));
    }
    Ok(d)
}

fn thresholds(src: &Source, keys: &Keys, raw: &RawThresholds) -> Result<Thresholds, ConfigError> {
    let key = |name: &str| keys.key(&format!("thresholds.{name}"));
    let mut t = Thresholds::default();
    if let Some(v) = &raw.wal_fsync_p99 {
        t.wal_fsync_p99_seconds = src.duration(v, key("wal_fsync_p99"))?.as_secs_f64();
    }
    if let Some(v) = &raw.backend_commit_p99 {
        t.backend_commit_p99_seconds = src.duration(v, key("backend_commit_p99"))?.as_secs_f64();
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
                key("open_fds_ratio"),
                format!("{ratio}: a share between 0 and 1"),
            ));
        }
        t.open_fds_ratio = ratio;
    }
    Ok(t)
}
