//! `etcd-sentinel run`: wires each cluster's tasks (poller, maintenance), the HTTP server and signals. SIGHUP
//! reloads the configuration file (a bad file keeps the running configuration); SIGTERM and SIGINT stop
//! everything: at once when nothing is in flight, after the step in flight (bounded by `tasks::STOP_GRACE`)
//! when maintenance is running.

pub mod consistency_job;
pub mod defrag_job;
pub mod maintenance_task;
pub mod poll_task;
pub mod snapshot_job;
pub mod tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ClusterConfig, Config};
use crate::etcd::connect::{ConnectError, Connector};
use crate::export::metrics::{Metrics, MetricsError};
use crate::export::{http, server as http_server};
use crate::maintenance::GateOptions;
use crate::maintenance::defrag::{DefragOptions, SnapshotBefore};
use crate::probe::consistency::ConsistencyOptions;
use crate::secret::Secret;
use crate::state::{
    ApiToken, ClusterEntry, DefragControl, DefragStatus, History, Shared, SnapshotControl,
    SnapshotStatus, TokenChange,
};
use tasks::{STOP_GRACE, TaskGroup};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cluster {cluster}: {cause}")]
    Connector {
        cluster: String,
        cause: ConnectError,
    },
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error("{0}")]
    Token(String),
}

/// Where the configuration came from: a file can be reloaded on SIGHUP, flags cannot.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Flags,
}

struct RunningCluster {
    config: ClusterConfig,
    tasks: TaskGroup,
}

struct Daemon {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown; every cluster's tasks hang off it.
    shutdown: CancellationToken,
    running: BTreeMap<String, RunningCluster>,
    /// The address the configuration asked for at start (a --listen override is not a change).
    configured_listen: SocketAddr,
    /// The server settings at start: a reload cannot change them, and says so.
    server_limits: config::ServerLimits,
    server_tls: Option<(PathBuf, PathBuf)>,
}

impl Daemon {
    fn start_cluster(
        &mut self,
        config: ClusterConfig,
        history: Option<History>,
    ) -> Result<(), DaemonError> {
        let connector =
            Connector::new(config.connect.clone()).map_err(|cause| DaemonError::Connector {
                cluster: config.name.clone(),
                cause,
            })?;
        let history = history.unwrap_or_default();
        // Restarted by a reload: the last view stays published (API, /metrics) until the first poll replaces it.
        let last = history
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_view();
        let (publish, view) = watch::channel(last);
        let (complete_tx, complete) = watch::channel(None);
        let connector = Arc::new(connector);
        let (status_tx, status) = watch::channel(SnapshotStatus::default());
        // One request may wait; a second while it does is refused (409), never queued without bound.
        let (trigger, requests) = tokio::sync::mpsc::channel(1);
        let snapshots = config.snapshot.clone().map(|s| snapshot_job::SnapshotJob {
            cluster: config.name.clone(),
            config: s,
            connector: connector.clone(),
            metrics: self.metrics.clone(),
            log: history.log.clone(),
            status: status_tx,
            lock: crate::maintenance::lock::LockSettings {
                prefix: config.lock_prefix.clone(),
                ..Default::default()
            },
        });
        self.metrics.init_poll(&config.name, config.interval);
        match &snapshots {
            Some(job) => job.remember_newest(),
            None => self.metrics.forget_snapshots(&config.name),
        }
        let control = snapshots
            .is_some()
            .then_some(SnapshotControl { status, trigger });
        let snapshots = snapshots.map(|job| (job, requests));
        let gate = GateOptions::for_interval(config.interval);
        let (defrag, defrag_control) = match &config.defrag {
            None => (None, None),
            Some(d) => {
                // The last report survives a reload that restarted this cluster's tasks.
                let last_run = history
                    .defrag
                    .last_run
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let (status_tx, status) = watch::channel(DefragStatus {
                    last_run,
                    ..DefragStatus::default()
                });
                let (requests_tx, requests) = tokio::sync::mpsc::channel(1);
                let stop = Arc::new(std::sync::Mutex::new(None));
                let snapshot_before = config.snapshot.as_ref().map(|s| SnapshotBefore {
                    dir: s.dir.clone(),
                    compression: s.compression,
                });
                let mut options =
                    DefragOptions::from_config(d, snapshot_before, &config.lock_prefix, gate);
                // The revisions seen so far count after a reload too.
                if let Some((_, revisions)) = options.compaction_window.as_mut() {
                    *revisions = history.defrag.revisions.clone();
                }
                let job = defrag_job::DefragJob::new(
                    config.name.clone(),
                    d.clone(),
                    options.clone(),
                    config.target(),
                    connector.clone(),
                    self.metrics.clone(),
                    history.log.clone(),
                    status_tx,
                    stop.clone(),
                    history.defrag.clone(),
                );
                let control = DefragControl {
                    status,
                    requests: requests_tx,
                    stop,
                    options,
                };
                (Some((job, requests)), Some(control))
            }
        };
        self.shared.insert(ClusterEntry {
            config: config.clone(),
            view: view.clone(),
            history: history.clone(),
            complete: complete.clone(),
            snapshots: control,
            defrag: defrag_control,
        });
        let mut tasks = TaskGroup::child_of(&self.shutdown);
        let (consistency_tx, consistency) = watch::channel(None);
        if let Some(every) = config.consistency.interval {
            let job = consistency_job::ConsistencyJob {
                cluster: config.name.clone(),
                every,
                options: ConsistencyOptions {
                    max_db_size: config.consistency.max_db_size,
                    hash_timeout: config.consistency.hash_timeout,
                },
                lock_prefix: config.lock_prefix.clone(),
                connector: connector.clone(),
                memory: history.defrag.clone(),
                publish: consistency_tx,
            };
            let complete = complete.clone();
            tasks.spawn("consistency", move |cancel| {
                consistency_job::run(job, complete, cancel)
            });
        }
        let (poll_config, metrics) = (config.clone(), self.metrics.clone());
        tasks.spawn("poll", move |cancel| {
            poll_task::run(
                poll_config,
                connector,
                publish,
                history,
                metrics,
                consistency,
                cancel,
            )
        });
        let (name, every) = (config.name.clone(), config.interval);
        let jobs = maintenance_task::Jobs { snapshots, defrag };
        tasks.spawn("maintenance", move |cancel| {
            maintenance_task::run(name, gate, every, view, complete_tx, jobs, cancel)
        });
        tracing::info!(
            cluster = config.name,
            endpoints = config.endpoints.len(),
            interval = %humantime::format_duration(config.interval),
            "watching cluster"
        );
        self.running
            .insert(config.name.clone(), RunningCluster { config, tasks });
        Ok(())
    }

    /// Stops these clusters' tasks at their safe points, all at once (one grace period in all, however many),
    /// and hands back their histories.
    async fn stop_clusters(&mut self, names: &[String]) -> BTreeMap<String, History> {
        let stopping: Vec<(String, TaskGroup)> = names
            .iter()
            .filter_map(|n| Some((n.clone(), self.running.remove(n)?.tasks)))
            .collect();
        let stopped = futures_util::future::join_all(
            stopping
                .into_iter()
                .map(|(name, tasks)| async move { (name, tasks.stop(STOP_GRACE).await) }),
        )
        .await;
        let mut histories = BTreeMap::new();
        for (name, unfinished) in stopped {
            report_unfinished(&name, unfinished);
            if let Some(entry) = self.shared.remove(&name) {
                histories.insert(name, entry.history);
            }
        }
        histories
    }

    /// Applies a new configuration: unchanged clusters keep polling undisturbed, changed ones restart (keeping
    /// their event log), removed ones stop and their series disappear.
    async fn apply(&mut self, new: Config) -> Result<(), DaemonError> {
        let wanted: BTreeMap<&str, &ClusterConfig> =
            new.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        let changed: Vec<String> = self
            .running
            .iter()
            .filter_map(|(name, r)| {
                let new = wanted.get(name.as_str()).filter(|c| ***c != r.config)?;
                // What changed, in words (never a secret's value): "password (rotated)", "TLS files (rotated)".
                tracing::info!(
                    cluster = name,
                    changed = new.changes_from(&r.config).join(", "),
                    "configuration of the cluster changed: reconnecting"
                );
                Some(name.clone())
            })
            .collect();
        let stopping: Vec<String> = removed.iter().chain(&changed).cloned().collect();
        let mut histories = self.stop_clusters(&stopping).await;
        for name in &removed {
            self.metrics.forget_cluster(name);
            tracing::info!(
                cluster = name,
                "stopped watching cluster (removed from the configuration)"
            );
        }
        for config in &new.clusters {
            if self.running.contains_key(&config.name) {
                continue;
            }
            // Changed: restarted with its history and its counters (a reload is not a restart of the cluster;
            // series of endpoints no longer probed go at the next poll). New: a fresh history.
            let history = histories.remove(&config.name);
            self.start_cluster(config.clone(), history)?;
        }
        if new.listen != self.configured_listen {
            tracing::warn!(
                running = %self.configured_listen,
                configured = %new.listen,
                "the listen address changed; it takes effect at the next restart"
            );
        }
        Ok(())
    }

    /// Re-reads the configuration file (SIGHUP, or POST /api/v1/reload) and says what happened. The API token is
    /// swapped first, as soon as the new one is read, so the old one stops working at once, before clusters are
    /// restarted (which may wait for a step in flight).
    async fn reload(
        &mut self,
        source: &ConfigSource,
        server: &ServerOptions,
        token: &ApiToken,
    ) -> Result<String, String> {
        let ConfigSource::File(path) = source else {
            // Flags have nothing to re-read but the token file.
            if server.token_file.is_some() {
                return match api_token(server, &self.flags_config()) {
                    Ok(t) => {
                        log_token_change(token.replace(t));
                        Ok(
                            "the configuration came from flags: --api-token-file was re-read"
                                .into(),
                        )
                    }
                    Err(e) => Err(format!("reload failed: {e}")),
                };
            }
            let message =
                "reload ignored: the configuration came from flags, not from a file".to_string();
            tracing::warn!("{message}");
            return Err(message);
        };
        let loaded = config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| api_token(server, &c).map(|t| (c, t)));
        let (config, new_token) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("configuration not reloaded, keeping the running one: {e}");
                return Err(format!(
                    "configuration not reloaded, keeping the running one: {e}"
                ));
            }
        };
        log_token_change(token.replace(new_token));
        if config.server_limits != self.server_limits || config.server_tls != self.server_tls {
            tracing::warn!(
                "max_connections, header_timeout, tls_cert and tls_key changed; they take effect at the next restart"
            );
        }
        match self.apply(config).await {
            Ok(()) => {
                tracing::info!(file = %path.display(), "configuration reloaded");
                Ok(format!("{} reloaded", path.display()))
            }
            Err(e) => {
                tracing::error!("configuration reload failed: {e}");
                Err(format!("configuration reload failed: {e}"))
            }
        }
    }

    /// A configuration with no file behind it, for the token's precedence (flag, then environment).
    fn flags_config(&self) -> Config {
        Config {
            listen: self.configured_listen,
            clusters: Vec::new(),
            api_token_file: None,
            api_token: None,
            server_tls: None,
            server_limits: self.server_limits,
        }
    }

    /// Stops every cluster's tasks at their safe points, all at once, within one grace period.
    async fn stop_all(&mut self) {
        self.shutdown.cancel();
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop_clusters(&names).await;
    }
}

fn log_token_change(change: TokenChange) {
    match change {
        TokenChange::Unchanged => {}
        TokenChange::Set => tracing::info!("API token set: mutating endpoints enabled"),
        TokenChange::Replaced => {
            tracing::info!("API token replaced: the previous one no longer works")
        }
        TokenChange::Removed => tracing::warn!("API token removed: mutating endpoints disabled"),
    }
}

fn report_unfinished(cluster: &str, unfinished: Vec<&'static str>) {
    if !unfinished.is_empty() {
        tracing::warn!(
            cluster,
            tasks = unfinished.join(","),
            grace = %humantime::format_duration(STOP_GRACE),
            "stopped waiting for a step in flight; it finishes on its own if the process lives long enough"
        );
    }
}

/// How the HTTP server is offered: what the command line says beside the configuration.
#[derive(Default)]
pub struct ServerOptions {
    /// Overrides the configuration's `listen`.
    pub listen: Option<SocketAddr>,
    /// `--api-token-file`: beats the file's `api_token_file`; re-read at every reload.
    pub token_file: Option<PathBuf>,
    /// `ETCD_SENTINEL_API_TOKEN`: used when no file names a token.
    pub token_env: Option<Secret>,
    /// Serve over TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The API token in force: `--api-token-file` (read now), else the configuration's `api_token_file` (read by
/// `config::load`), else the environment's. Unlocks mutating endpoints; without one they answer 403.
pub fn api_token(server: &ServerOptions, config: &Config) -> Result<Option<Secret>, String> {
    if let Some(path) = &server.token_file {
        return Secret::token_from_file(path)
            .map(Some)
            .map_err(|e| format!("--api-token-file: {e}"));
    }
    Ok(config
        .api_token
        .clone()
        .or_else(|| server.token_env.clone()))
}

/// Raises the soft limit on open files to the hard one (as Go's runtime does for etcd itself), and keeps the
/// HTTP server's connections to a quarter of it: the rest is for the connections to the members, which a flood of
/// HTTP clients must never starve (at `ulimit -n 256`, 256 HTTP connections left members' /metrics reads failing
/// with "Too many open files").
fn fit_to_descriptors(mut limits: config::ServerLimits) -> config::ServerLimits {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid pointer to a local.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return limits;
        }
        if rl.rlim_cur < rl.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
        rl.rlim_cur
    };
    let budget = usize::try_from(soft / 4).unwrap_or(usize::MAX).max(8);
    if limits.max_connections > budget {
        tracing::warn!(
            open_files = soft,
            "max_connections {} lowered to {budget}: a quarter of the files this process may open (ulimit -n)",
            limits.max_connections
        );
        limits.max_connections = budget;
    }
    limits
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    source: ConfigSource,
    server: ServerOptions,
) -> Result<(), DaemonError> {
    let addr = server.listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| DaemonError::Bind { addr, cause })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let token = Arc::new(ApiToken::new(
        api_token(&server, &config).map_err(DaemonError::Token)?,
    ));
    let limits = fit_to_descriptors(config.server_limits);
    let shared = Arc::new(Shared::new());
    let metrics = Arc::new(Metrics::new()?);
    let mut daemon = Daemon {
        shared: shared.clone(),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        running: BTreeMap::new(),
        configured_listen: config.listen,
        server_limits: config.server_limits,
        server_tls: config.server_tls.clone(),
    };
    daemon.apply(config).await?;

    let (reload_tx, mut reload_rx) = mpsc::channel::<http::ReloadRequest>(4);
    let guarded = token.get().is_some();
    let app = http::router(http::ApiState {
        shared,
        metrics,
        token: token.clone(),
        reload: reload_tx,
    });
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let stop_server = CancellationToken::new();
    let acceptor = server.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut serving = tokio::spawn(http_server::serve(
        listener,
        acceptor,
        app,
        limits,
        stop_server.clone(),
    ));
    tracing::info!(
        listen = %bound,
        scheme,
        max_connections = limits.max_connections,
        mutating_endpoints = if guarded { "enabled (API token)" } else { "disabled (no API token)" },
        "serving /metrics, /api/v1/clusters, /healthz, /readyz"
    );

    let mut served = false;
    let outcome = loop {
        tokio::select! {
            // The outcome is logged by reload itself.
            _ = hangup.recv() => { let _ = daemon.reload(&source, &server, &token).await; }
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(daemon.reload(&source, &server, &token).await);
            }
            _ = terminate.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
            result = &mut serving => {
                served = true;
                break match result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(DaemonError::Server(std::io::Error::other(e))),
                };
            }
        }
    };
    tracing::info!("stopping");
    daemon.stop_all().await;
    // The server closes its connections, letting the responses being written finish for a moment.
    stop_server.cancel();
    // A finished JoinHandle must not be polled again.
    if !served {
        let _ = serving.await;
    }
    outcome
}
