//! `etcd-sentinel run`: wires each cluster's tasks (poller, maintenance), the HTTP server and signals. SIGHUP
//! reloads the configuration file (a bad file keeps the running configuration); SIGTERM and SIGINT stop
//! everything: at once when nothing is in flight, after the step in flight (bounded by `tasks::STOP_GRACE`)
//! when maintenance is running.

pub mod maintenance_task;
pub mod poll_task;
pub mod tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ClusterConfig, Config};
use crate::etcd::connect::{ConnectError, Connector};
use crate::export::metrics::{Metrics, MetricsError};
use crate::export::{http, tls_listener};
use crate::maintenance::GateOptions;
use crate::secret::Secret;
use crate::state::{ClusterEntry, History, Shared};
use tasks::{STOP_GRACE, TaskGroup};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cluster {cluster}: {source}")]
    Connector {
        cluster: String,
        source: ConnectError,
    },
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
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
}

impl Daemon {
    fn start_cluster(
        &mut self,
        config: ClusterConfig,
        history: Option<History>,
    ) -> Result<(), DaemonError> {
        let connector =
            Connector::new(config.connect.clone()).map_err(|source| DaemonError::Connector {
                cluster: config.name.clone(),
                source,
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
        self.shared.insert(ClusterEntry {
            config: config.clone(),
            view: view.clone(),
            history: history.clone(),
            complete,
        });
        let mut tasks = TaskGroup::child_of(&self.shutdown);
        let (poll_config, metrics) = (config.clone(), self.metrics.clone());
        tasks.spawn("poll", move |cancel| {
            poll_task::run(
                poll_config,
                Arc::new(connector),
                publish,
                history,
                metrics,
                cancel,
            )
        });
        let (name, gate, every) = (
            config.name.clone(),
            GateOptions::for_interval(config.interval),
            config.interval,
        );
        tasks.spawn("maintenance", move |cancel| {
            maintenance_task::run(name, gate, every, view, complete_tx, cancel)
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
            .filter(|(name, r)| wanted.get(name.as_str()).is_some_and(|c| **c != r.config))
            .map(|(name, _)| name.clone())
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

    /// Re-reads the configuration file (SIGHUP, or POST /api/v1/reload) and says what happened.
    async fn reload(&mut self, source: &ConfigSource) -> Result<String, String> {
        let ConfigSource::File(path) = source else {
            let message =
                "reload ignored: the configuration came from flags, not from a file".to_string();
            tracing::warn!("{message}");
            return Err(message);
        };
        match config::load(path) {
            Ok(config) => match self.apply(config).await {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "configuration reloaded");
                    Ok(format!("{} reloaded", path.display()))
                }
                Err(e) => {
                    tracing::error!("configuration reload failed: {e}");
                    Err(format!("configuration reload failed: {e}"))
                }
            },
            Err(e) => {
                tracing::error!("configuration not reloaded, keeping the running one: {e}");
                Err(format!(
                    "configuration not reloaded, keeping the running one: {e}"
                ))
            }
        }
    }

    /// Stops every cluster's tasks at their safe points, all at once, within one grace period.
    async fn stop_all(&mut self) {
        self.shutdown.cancel();
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop_clusters(&names).await;
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

/// How the HTTP server is offered.
#[derive(Default)]
pub struct ServerOptions {
    /// Overrides the configuration's `listen`.
    pub listen: Option<SocketAddr>,
    /// Unlocks mutating endpoints; without it they answer 403.
    pub token: Option<Secret>,
    /// Serve over TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

async fn serve<L>(
    listener: L,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
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
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let shared = Arc::new(Shared::new());
    let metrics = Arc::new(Metrics::new()?);
    let mut daemon = Daemon {
        shared: shared.clone(),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        running: BTreeMap::new(),
        configured_listen: config.listen,
    };
    daemon.apply(config).await?;

    let (stop_server, server_stopped) = watch::channel(false);
    let (reload_tx, mut reload_rx) = mpsc::channel::<http::ReloadRequest>(4);
    let guarded = server.token.is_some();
    let app = http::router(http::ApiState {
        shared,
        metrics,
        token: server.token,
        reload: reload_tx,
    });
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut server = match server.tls {
        Some(tls) => {
            let listener =
                tls_listener::TlsListener::new(listener, tls).map_err(DaemonError::Server)?;
            tokio::spawn(serve(listener, app, server_stopped))
        }
        None => tokio::spawn(serve(listener, app, server_stopped)),
    };
    tracing::info!(
        listen = %bound,
        scheme,
        mutating_endpoints = if guarded { "enabled (API token)" } else { "disabled (no API token)" },
        "serving /metrics, /api/v1/clusters, /healthz, /readyz"
    );

    let outcome = loop {
        tokio::select! {
            // The outcome is logged by reload itself.
            _ = hangup.recv() => { let _ = daemon.reload(&source).await; }
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(daemon.reload(&source).await);
            }
            _ = terminate.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
            result = &mut server => {
                break match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(DaemonError::Server(e)),
                    Err(e) => Err(DaemonError::Server(std::io::Error::other(e))),
                };
            }
        }
    };
    tracing::info!("stopping");
    daemon.stop_all().await;
    let _ = stop_server.send(true);
    // Open keep-alive connections must not hold the process: give them a moment, then go.
    if tokio::time::timeout(Duration::from_millis(500), &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    outcome
}
