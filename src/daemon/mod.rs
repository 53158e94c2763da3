//! `etcd-sentinel run`: wires pollers, the HTTP server and signals. SIGHUP reloads the configuration file (a bad
//! file keeps the running configuration); SIGTERM and SIGINT stop everything within a second.

pub mod poll_task;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, ClusterConfig, Config};
use crate::etcd::connect::{ConnectError, Connector};
use crate::events::EventLog;
use crate::export::http;
use crate::export::metrics::{Metrics, MetricsError};
use state::{ClusterEntry, Shared};

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
    config::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
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
        events: Option<Arc<Mutex<EventLog>>>,
    ) -> Result<(), DaemonError> {
        let connector =
            Connector::new(config.connect.clone()).map_err(|source| DaemonError::Connector {
                cluster: config.name.clone(),
                source,
            })?;
        let events = events
            .unwrap_or_else(|| Arc::new(Mutex::new(EventLog::new(EventLog::DEFAULT_CAPACITY))));
        let (publish, view) = watch::channel(None);
        self.shared.insert(ClusterEntry {
            config: config.clone(),
            view,
            events: events.clone(),
        });
        let task = tokio::spawn(poll_task::run(
            config.clone(),
            Arc::new(connector),
            publish,
            events,
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

    fn stop_cluster(&mut self, name: &str) -> Option<Arc<Mutex<EventLog>>> {
        let running = self.running.remove(name)?;
        running.task.abort();
        self.shared.remove(name).map(|entry| entry.events)
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
                Some(_) => {
                    let events = self.stop_cluster(&config.name);
                    self.shared.metrics.forget_cluster(&config.name);
                    self.start_cluster(config.clone(), events)?;
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

    fn reload(&mut self, source: &ConfigSource) {
        let ConfigSource::File(path) = source else {
            tracing::warn!("SIGHUP ignored: the configuration came from flags, not from a file");
            return;
        };
        match load_config(path) {
            Ok(config) => match self.apply(config) {
                Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
                Err(e) => tracing::error!("configuration reload failed: {e}"),
            },
            Err(e) => tracing::error!("configuration not reloaded, keeping the running one: {e}"),
        }
    }

    fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.task.abort();
        }
    }
}

/// Runs until SIGTERM or SIGINT. `listen` overrides the configuration's address.
pub async fn run(
    config: Config,
    source: ConfigSource,
    listen: Option<SocketAddr>,
) -> Result<(), DaemonError> {
    let addr = listen.unwrap_or(config.listen);
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
    let app = http::router(shared);
    let mut server = tokio::spawn(async move {
        let mut stopped = server_stopped;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(listen = %bound, "serving /metrics, /api/v1/clusters, /healthz, /readyz");

    let outcome = loop {
        tokio::select! {
            _ = hangup.recv() => daemon.reload(&source),
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
