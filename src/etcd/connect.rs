//! The one place where connections to etcd are made: gRPC clients (one per endpoint, never balanced, so that a
//! probe talks to the member it names) and the HTTP client that reads members' /metrics.
//!
//! Every failure comes back as a message that names the cause; nothing here waits longer than the dial or
//! command timeout.

use std::error::Error as StdError;
use std::time::Duration;

use etcd_client::Client;
use thiserror::Error;

use super::endpoint::{Endpoint, Scheme};

/// Timeouts as etcdctl names them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSettings {
    /// How long to wait for a connection to be established.
    pub dial_timeout: Duration,
    /// How long one request may take once connected.
    pub command_timeout: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(
        "https endpoints need TLS settings, which this version of etcd-sentinel does not support yet; use an http endpoint"
    )]
    TlsUnsupported,
    #[error("dial timed out after {}", humantime::format_duration(*.0))]
    DialTimeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("cannot build the HTTP client for members' /metrics: {0}")]
    HttpClient(String),
}

/// Renders an error with its chain of causes, without the repetitions tonic and hyper like to add.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// A short, operator-facing message for an etcd-client error: the gRPC message when there is one.
pub fn describe_etcd_error(err: &etcd_client::Error) -> String {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                status.message().to_string()
            };
            // A transport failure on an established channel ("tcp connect error") keeps its cause in the source.
            match status.source() {
                Some(cause) => {
                    let cause = describe(cause);
                    if cause.contains(&message) {
                        cause
                    } else {
                        format!("{message}: {cause}")
                    }
                }
                None => message,
            }
        }
        other => describe(other),
    }
}

/// Makes the connections of one cluster; cheap to share (`Arc`) between the probes of a poll.
#[derive(Debug, Clone)]
pub struct Connector {
    settings: ConnectSettings,
    http: reqwest::Client,
}

/// Upper bound on a member's /metrics page; etcd 3.4 serves about 150 KB.
const MAX_METRICS_BYTES: usize = 16 * 1024 * 1024;

impl Connector {
    pub fn new(settings: ConnectSettings) -> Result<Self, ConnectError> {
        // One HTTP client for every member and every poll: building one is the expensive part.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.dial_timeout)
            .timeout(settings.command_timeout)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| ConnectError::HttpClient(describe(&e)))?;
        Ok(Connector { settings, http })
    }

    pub fn settings(&self) -> &ConnectSettings {
        &self.settings
    }

    /// Connects to exactly this endpoint, within the dial timeout.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Client, ConnectError> {
        if endpoint.scheme() == Scheme::Https {
            return Err(ConnectError::TlsUnsupported);
        }
        let dial = self.settings.dial_timeout;
        let channel = tonic::transport::Endpoint::from_shared(endpoint.url())
            .map_err(|e| ConnectError::Connect(describe(&e)))?
            .connect_timeout(dial)
            // No per-request timeout on the channel: callers bound each call themselves (a probe by the command
            // timeout), and a snapshot stream may rightly take minutes.
            .tcp_nodelay(true)
            // Notices a member that stops answering on an idle, cached connection.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.settings.command_timeout)
            .keep_alive_while_idle(true);
        let connected = tokio::time::timeout(dial, channel.connect())
            .await
            .map_err(|_| ConnectError::DialTimeout(dial))?
            .map_err(|e| ConnectError::Connect(describe(&e)))?;
        let client = tokio::time::timeout(
            dial,
            Client::from_channel(etcd_client::Channel::Tonic(connected), None),
        )
        .await
        .map_err(|_| ConnectError::DialTimeout(dial))?
        .map_err(|e| ConnectError::Connect(describe_etcd_error(&e)))?;
        Ok(client)
    }

    /// Reads a member's /metrics page as text, bounded in time and size.
    pub async fn fetch_metrics(&self, url: &str) -> Result<String, String> {
        let response = self.http.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                format!("GET {url}: timed out")
            } else {
                format!("GET {url}: {}", describe(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_METRICS_BYTES)
        {
            return Err(format!(
                "GET {url}: page larger than {MAX_METRICS_BYTES} bytes"
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {}", describe(&e)))?;
        if body.len() > MAX_METRICS_BYTES {
            return Err(format!(
                "GET {url}: page larger than {MAX_METRICS_BYTES} bytes"
            ));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("GET {url}: not UTF-8 text"))
    }
}
