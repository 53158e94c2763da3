//! `etcd-sentinel run`: wires pollers, the HTTP server and signals. SIGHUP reloads the configuration file (a bad
//! file keeps the running configuration); SIGTERM and SIGINT stop everything within a second.

pub mod poll_task;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, ClusterConfig, Config};
use crate::etcd::connect::{ConnectError, Connector};
use crate::export::metrics::{Metrics, MetricsError};
use crate::export::{http, tls_listener};
use crate::secret::Secret;
use state::{ClusterEntry, History, Shared};

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

/// Reads and validates a configuration file; the error names the file, line and field.
pub fn load_config(path: &std::path::Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config =
        config::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    config::resolve_secrets(&mut config).map_err(|e| format!("{}: {e}", path.display()))?;
    // TLS files are read now, so that a missing or malformed certificate is a configuration error.
    for c in &config.clusters {
        Connector::new(c.connect.clone())
            .map_err(|e| format!("{}: cluster {}: {e}", path.display(), c.name))?;
    }
    Ok(config)
}

struct RunningCluster {
    config: ClusterConfig,
    task: JoinHandle<()>,
}

struct Daemon {
    shared: Arc<Shared>,
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
        self.shared.insert(ClusterEntry {
            config: config.clone(),
            view,
            history: history.clone(),
        });
        let task = tokio::spawn(poll_task::run(
            config.clone(),
            Arc::new(connector),
            publish,
            history,
            self.shared.clone(),
        ));
        tracing::info!(
            cluster = config.name,
            endpoints = config.endpoints.len(),
            interval = %humantime::format_duration(config.interval),
            "watching cluster"
        );
        self.running
            .insert(config.name.clone(), RunningCluster { config, task });
        Ok(())
    }

    fn stop_cluster(&mut self, name: &str) -> Option<History> {
        let running = self.running.remove(name)?;
        // A poller only reads and publishes; it holds no lock across an await, so stopping it anywhere is safe.
        running.task.abort();
        self.shared.remove(name).map(|entry| entry.history)
    }

    /// Applies a new configuration: unchanged clusters keep polling undisturbed, changed ones restart (keeping
    /// their event log), removed ones stop and their series disappear.
    fn apply(&mut self, new: Config) -> Result<(), DaemonError> {
        let wanted: BTreeMap<&str, &ClusterConfig> =
            new.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        let current: Vec<String> = self.running.keys().cloned().collect();
        for name in current {
            if !wanted.contains_key(name.as_str()) {
                self.stop_cluster(&name);
                self.shared.metrics.forget_cluster(&name);
                tracing::info!(
                    cluster = name,
                    "stopped watching cluster (removed from the configuration)"
                );
            }
        }
        for config in &new.clusters {
            match self.running.get(&config.name) {
                Some(r) if r.config == *config => {}
                // Changed: restart its poller, keeping its history and its counters (a reload is not a restart
                // of the cluster; series of endpoints no longer probed go at the next poll).
                Some(_) => {
                    let history = self.stop_cluster(&config.name);
                    self.start_cluster(config.clone(), history)?;
                }
                None => self.start_cluster(config.clone(), None)?,
            }
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
    fn reload(&mut self, source: &ConfigSource) -> Result<String, String> {
        let ConfigSource::File(path) = source else {
            let message =
                "reload ignored: the configuration came from flags, not from a file".to_string();
            tracing::warn!("{message}");
            return Err(message);
        };
        match load_config(path) {
            Ok(config) => match self.apply(config) {
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

    fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.task.abort();
        }
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

    let shared = Arc::new(Shared::new(Metrics::new()?));
    let mut daemon = Daemon {
        shared: shared.clone(),
        running: BTreeMap::new(),
        configured_listen: config.listen,
    };
    daemon.apply(config)?;

    let (stop_server, server_stopped) = watch::channel(false);
    let (reload_tx, mut reload_rx) = mpsc::channel::<http::ReloadRequest>(4);
    let guarded = server.token.is_some();
    let app = http::router(http::ApiState {
        shared,
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
            _ = hangup.recv() => { let _ = daemon.reload(&source); }
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(daemon.reload(&source));
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
    daemon.stop_all();
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
