//! The one place where connections to etcd are made: gRPC clients (one per endpoint, never balanced, so that a
//! probe talks to the member it names) and the HTTP client that reads members' /metrics. TLS, client
//! certificates and etcd users apply to both; snapshots and defragmentation will connect through here too.
//!
//! Every failure comes back as a message that names the cause; nothing here waits longer than the dial or
//! command timeout.

use std::sync::OnceLock;
use std::time::Duration;

use etcd_client::Client;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::endpoint::{Endpoint, Scheme};
use super::error::{self, FailureKind, ProbeError, describe, describe_etcd_error};
use super::tls::{self, TlsConfigs, TlsError, TlsSettings};
use crate::secret::Credentials;

/// How to reach the members of one cluster: etcdctl's timeouts, TLS and user.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSettings {
    /// How long to wait for a connection to be established.
    pub dial_timeout: Duration,
    /// How long one request may take once connected.
    pub command_timeout: Duration,
    pub tls: TlsSettings,
    /// etcdctl's `--insecure-transport` (default true): when false, plain-text endpoints are refused.
    pub insecure_transport: bool,
    pub credentials: Option<Credentials>,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            tls: TlsSettings::default(),
            insecure_transport: true,
            credentials: None,
        }
    }
}

impl ConnectSettings {
    /// The scheme for an endpoint written without one: TLS when TLS files were given, as etcdctl does.
    pub fn default_scheme(&self) -> Scheme {
        if self.tls.is_configured() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("plain-text endpoint refused (--insecure-transport=false): use https://")]
    PlaintextRefused,
    #[error("dial timed out after {}", humantime::format_duration(*.0))]
    DialTimeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("authentication as {user:?} failed: {cause}")]
    Auth { user: String, cause: String },
    #[error("cannot build the HTTP client for members' /metrics: {0}")]
    HttpClient(String),
}

impl ConnectError {
    /// What kind of failure this is, for the verdict and for deciding whether to try again.
    pub fn kind(&self) -> FailureKind {
        match self {
            // Authenticate itself needs a leader: during an election it fails with "leader changed", which is no
            // verdict on the password.
            ConnectError::Auth { cause, .. } => match error::classify(None, cause) {
                FailureKind::Other => FailureKind::Auth,
                kind => kind,
            },
            ConnectError::Tls(_) => FailureKind::Auth,
            ConnectError::DialTimeout(_) => FailureKind::Timeout,
            ConnectError::PlaintextRefused | ConnectError::HttpClient(_) => FailureKind::Other,
            ConnectError::Connect(message) if error::is_tls_refusal(message) => FailureKind::Auth,
            ConnectError::Connect(_) => FailureKind::Unreachable,
        }
    }

    /// Whether connecting again later may work without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    /// The failure as a probe or a maintenance step reports it.
    pub fn to_failure(&self) -> ProbeError {
        ProbeError::new(self.kind(), self.to_string())
    }
}

/// Makes the connections of one cluster; cheap to share (`Arc`) between the probes of a poll.
#[derive(Debug)]
pub struct Connector {
    settings: ConnectSettings,
    /// Built at once when TLS settings were given (so a bad file fails early), else on the first https endpoint.
    tls: OnceLock<Result<TlsConfigs, TlsError>>,
    http_plain: reqwest::Client,
    http_tls: OnceLock<Result<reqwest::Client, String>>,
}

/// Upper bound on a member's /metrics page: etcd 3.4 serves about 150 KB, a large 3.5 cluster under a megabyte.
/// Every probe of a poll may hold one page at once, so this bounds a poll's memory whatever a member sends.
pub const MAX_METRICS_BYTES: usize = 4 * 1024 * 1024;
/// Enough of a line to know its family (names of etcd's families are under 100 bytes).
const LINE_PREFIX: usize = 1024;

fn http_builder(settings: &ConnectSettings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(settings.dial_timeout)
        .timeout(settings.command_timeout)
        .no_proxy()
        // No idle connections kept: each holds a read buffer grown to ~115 KB by the page it read, per member,
        // while a new connection per poll costs a handshake every interval (measured: 166 KB per endpoint with
        // them, see docs/benchmarks.md "Memory per endpoint").
        .pool_max_idle_per_host(0)
}

impl Connector {
    pub fn new(settings: ConnectSettings) -> Result<Self, ConnectError> {
        // One HTTP client for every member and every poll: building one is the expensive part.
        let http_plain = http_builder(&settings)
            .build()
            .map_err(|e| ConnectError::HttpClient(describe(&e)))?;
        let connector = Connector {
            settings,
            tls: OnceLock::new(),
            http_plain,
            http_tls: OnceLock::new(),
        };
        if connector.settings.tls.is_configured() {
            connector.tls_configs()?;
        }
        Ok(connector)
    }

    pub fn settings(&self) -> &ConnectSettings {
        &self.settings
    }

    /// A hint for a TLS failure, knowing whether we presented a client certificate.
    pub fn tls_hint(&self, message: &str) -> Option<&'static str> {
        tls::explain_with(message, self.settings.tls.cert.is_some())
    }

    fn tls_configs(&self) -> Result<&TlsConfigs, TlsError> {
        self.tls
            .get_or_init(|| tls::build(&self.settings.tls))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn http_client(&self, url: &str) -> Result<&reqwest::Client, String> {
        if !url.starts_with("https:") {
            return Ok(&self.http_plain);
        }
        self.http_tls
            .get_or_init(|| {
                let configs = self.tls_configs().map_err(|e| e.to_string())?;
                http_builder(&self.settings)
                    .use_preconfigured_tls(configs.http.clone())
                    .build()
                    .map_err(|e| describe(&e))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Connects to exactly this endpoint, within the dial timeout, and authenticates when a user is set.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Client, ConnectError> {
        self.connect_as(endpoint, self.settings.credentials.as_ref())
            .await
    }

    /// Connects without a user, for what etcd answers to anyone (Status, alarms, the member list), when the
    /// configured credentials were refused. TLS client certificates still apply.
    pub async fn connect_anonymously(&self, endpoint: &Endpoint) -> Result<Client, ConnectError> {
        self.connect_as(endpoint, None).await
    }

    async fn connect_as(
        &self,
        endpoint: &Endpoint,
        credentials: Option<&Credentials>,
    ) -> Result<Client, ConnectError> {
        let dial = self.settings.dial_timeout;
        let channel = match endpoint.scheme() {
            Scheme::Http if !self.settings.insecure_transport => {
                return Err(ConnectError::PlaintextRefused);
            }
            Scheme::Http => {
                let ep = channel_endpoint(endpoint, dial)?;
                tokio::time::timeout(dial, ep.connect())
                    .await
                    .map_err(|_| ConnectError::DialTimeout(dial))?
                    .map_err(|e| ConnectError::Connect(describe(&e)))?
            }
            Scheme::Https => {
                let configs = self.tls_configs()?;
                // A configured --tls-server-name is enforced by the verifier; SNI names the host dialled.
                let name = endpoint.server_name().to_string();
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| ConnectError::Connect(format!("TLS server name {name:?}: {e}")))?;
                let tls = TlsConnector::from(configs.grpc.clone());
                let address = (endpoint.server_name().to_string(), endpoint.port());
                // tonic's own TLS cannot skip verification or share its configuration with the /metrics client;
                // this connector does the TLS handshake itself and hands tonic the encrypted stream.
                let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
                    let tls = tls.clone();
                    let server_name = server_name.clone();
                    let address = address.clone();
                    async move {
                        let tcp = TcpStream::connect((address.0.as_str(), address.1)).await?;
                        tcp.set_nodelay(true)?;
                        let stream = tls.connect(server_name, tcp).await.map_err(|e| {
                            // A plain-text server closes on our ClientHello: with it still unread, the close is
                            // a reset (not an EOF), which says no more than that the handshake was cut.
                            if e.kind() == std::io::ErrorKind::ConnectionReset {
                                std::io::Error::new(
                                    e.kind(),
                                    format!(
                                        "{e} during the TLS handshake: if the server does not speak TLS there, \
                                         use http://"
                                    ),
                                )
                            } else {
                                e
                            }
                        })?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                });
                let ep = channel_endpoint(endpoint, dial)?;
                tokio::time::timeout(dial, ep.connect_with_connector(connector))
                    .await
                    .map_err(|_| ConnectError::DialTimeout(dial))?
                    .map_err(|e| ConnectError::Connect(describe(&e)))?
            }
        };
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(c) = credentials {
            options = options
                .with_user(c.user.clone(), c.password.expose().to_string())
                // A token that expired or was revoked is renewed, and the call retried, without a restart.
                .with_auto_token_refresh(true);
        }
        // from_channel authenticates when a user is set: one round trip, bounded like the dial.
        let client = tokio::time::timeout(
            dial + self.settings.command_timeout,
            Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options)),
        )
        .await
        .map_err(|_| ConnectError::DialTimeout(dial))?;
        if let (Ok(_), Some(c)) = (&client, credentials) {
            tracing::debug!(%endpoint, user = c.user, "authenticated");
        }
        client.map_err(|e| match credentials {
            Some(c) => ConnectError::Auth {
                user: c.user.clone(),
                cause: describe_etcd_error(&e),
            },
            None => ConnectError::Connect(describe_etcd_error(&e)),
        })
    }

    /// Why a TLS connection was cut, when the cause did not reach the caller. With TLS 1.3 a server that refuses
    /// the client certificate sends its alert after the handshake, so gRPC only sees "connection closed". One
    /// fresh handshake and a read get the alert. `None` when TLS is not the problem.
    pub async fn diagnose_tls(&self, endpoint: &Endpoint) -> Option<String> {
        use tokio::io::AsyncReadExt;
        if endpoint.scheme() != Scheme::Https {
            return None;
        }
        let configs = self.tls_configs().ok()?;
        let name = ServerName::try_from(endpoint.server_name().to_string()).ok()?;
        let dial = self.settings.dial_timeout;
        let tcp = tokio::time::timeout(
            dial,
            TcpStream::connect((endpoint.server_name(), endpoint.port())),
        )
        .await
        .ok()?
        .ok()?;
        let connecting = TlsConnector::from(configs.grpc.clone()).connect(name, tcp);
        let failure = match tokio::time::timeout(dial, connecting).await.ok()? {
            Err(e) => e,
            Ok(mut stream) => {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
                    Ok(Err(e)) => e,
                    _ => return None,
                }
            }
        };
        let message = failure.to_string();
        Some(match self.tls_hint(&message) {
            Some(hint) => format!("TLS: {message} ({hint})"),
            None => format!("TLS: {message}"),
        })
    }

    /// Reads a member's /metrics page, bounded in size (the caller bounds the time), and keeps only the lines
    /// `keep` wants: a page is ~150 KB, the lines read from it a few KB, and every probe of a poll reads one at
    /// once, so the page is filtered as it arrives instead of being held whole.
    pub async fn fetch_metrics(
        &self,
        url: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<String, FetchError> {
        let failed = |cause: String| FetchError::Failed {
            url: url.to_string(),
            cause,
        };
        let client = self.http_client(url).map_err(failed)?;
        let mut response = client.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_string(),
                }
            } else {
                failed(describe(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: MAX_METRICS_BYTES,
        };
        let declared = response.content_length();
        if declared.is_some_and(|n| n > MAX_METRICS_BYTES as u64) {
            return Err(too_large());
        }
        // Counted as the bytes arrive: a chunked or close-delimited page declares no size, and one that never
        // ends (a broken proxy, a hostile endpoint) must cost at most the limit, not the machine's memory.
        let mut received = 0usize;
        let mut lines = LineFilter::default();
        let not_text = || failed("not UTF-8 text".into());
        let read_error = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_string(),
                }
            } else {
                failed(describe(&e))
            }
        };
        while let Some(chunk) = response.chunk().await.map_err(read_error)? {
            received += chunk.len();
            if received > MAX_METRICS_BYTES {
                return Err(too_large());
            }
            lines.push(&chunk, &keep).map_err(|_| not_text())?;
        }
        lines.finish(&keep).map_err(|_| not_text())
    }
}

/// Splits a page into lines as its chunks arrive and keeps those `keep` wants (pure). The start of a line whose
/// end has not arrived yet is held; once a line is known to be unwanted from its start, the rest of it is
/// dropped as it comes, so a long line of a family not read is never held whole.
#[derive(Default)]
struct LineFilter {
    kept: String,
    partial: Vec<u8>,
    skipping: bool,
}

/// A line that is not UTF-8.
struct NotText;

impl LineFilter {
    fn push(&mut self, chunk: &[u8], keep: &impl Fn(&str) -> bool) -> Result<(), NotText> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if !self.skipping {
                self.partial.extend_from_slice(&rest[..end]);
                self.take_line(keep)?;
            }
            self.partial.clear();
            self.skipping = false;
            rest = &rest[end + 1..];
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > LINE_PREFIX {
                let start = String::from_utf8_lossy(&self.partial[..LINE_PREFIX]).into_owned();
                if !keep(&start) {
                    self.skipping = true;
                    self.partial.clear();
                }
            }
        }
        Ok(())
    }

    fn take_line(&mut self, keep: &impl Fn(&str) -> bool) -> Result<(), NotText> {
        let line = std::str::from_utf8(&self.partial).map_err(|_| NotText)?;
        if keep(line) {
            self.kept.push_str(line);
            self.kept.push('\n');
        }
        Ok(())
    }

    /// The kept lines, the last one included when the page ends without a newline.
    fn finish(mut self, keep: &impl Fn(&str) -> bool) -> Result<String, NotText> {
        if !self.skipping && !self.partial.is_empty() {
            self.take_line(keep)?;
        }
        Ok(self.kept)
    }
}

/// Why a member's /metrics could not be read; every message names the URL.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("GET {url}: timed out")]
    Timeout { url: String },
    #[error("GET {url}: page larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: {cause}")]
    Failed { url: String, cause: String },
}

impl FetchError {
    /// What kind of failure it is: only a timeout may pass by itself; a page too large or refused stays so.
    pub fn kind(&self) -> FailureKind {
        match self {
            FetchError::Timeout { .. } => FailureKind::Timeout,
            FetchError::TooLarge { .. } | FetchError::Failed { .. } => FailureKind::Other,
        }
    }

    /// Whether reading again later may work without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }
}

/// The tonic endpoint for a member. Always `http://` towards tonic: TLS, when used, is done by our connector.
fn channel_endpoint(
    endpoint: &Endpoint,
    dial: Duration,
) -> Result<tonic::transport::Endpoint, ConnectError> {
    let uri = format!("http://{}:{}", endpoint.host(), endpoint.port());
    Ok(tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| ConnectError::Connect(describe(&e)))?
        .connect_timeout(dial)
        // No per-request timeout on the channel: callers bound each call themselves (a probe by the command
        // timeout), and a snapshot stream may rightly take minutes.
        .tcp_nodelay(true)
        // Requests queued on the channel: a probe has five in flight, a snapshot one; the default (1024) costs
        // ~9 KB a connection for nothing.
        .buffer_size(32)
        // Notices a member that stops answering on an idle, cached connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_whatever_the_chunks() {
        let long = format!("unwanted_family {}\n", "x".repeat(5000));
        let page = format!(
            "etcd_a 1\r\n{long}etcd_b{{l=\"v\"}} 2\n# TYPE etcd_c gauge\nother 3\netcd_last 4"
        );
        let keep = |l: &str| l.starts_with("etcd_") || l.starts_with("# TYPE etcd_");
        let expected: String = page
            .split('\n')
            .filter(|l| keep(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let bytes = page.as_bytes();
        for size in [1, 2, 7, 64, 1000, 1024, 1025, 4096, bytes.len()] {
            let mut f = LineFilter::default();
            for chunk in bytes.chunks(size) {
                assert!(f.push(chunk, &keep).is_ok());
            }
            let got = f.finish(&keep).ok().unwrap();
            assert_eq!(got, expected, "chunks of {size}");
            assert!(!got.contains("xxxx"), "the unwanted long line is dropped");
        }
    }

    #[test]
    fn connection_failures_say_whether_to_try_again() {
        let auth = |cause: &str| ConnectError::Auth {
            user: "monitor".into(),
            cause: cause.into(),
        };
        let cases = [
            // Authenticate needs a leader: during an election it is no verdict on the password.
            (
                auth("etcdserver: leader changed"),
                FailureKind::NoLeader,
                true,
            ),
            (
                auth("etcdserver: authentication failed, invalid user ID or password"),
                FailureKind::Auth,
                false,
            ),
            (
                ConnectError::DialTimeout(Duration::from_secs(2)),
                FailureKind::Timeout,
                true,
            ),
            (
                ConnectError::Connect(
                    "tcp connect error: Connection refused (os error 111)".into(),
                ),
                FailureKind::Unreachable,
                true,
            ),
            (
                ConnectError::Connect("invalid peer certificate: UnknownIssuer".into()),
                FailureKind::Auth,
                false,
            ),
            (ConnectError::PlaintextRefused, FailureKind::Other, false),
        ];
        for (error, kind, transient) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
            assert_eq!(error.to_failure().kind, kind);
        }
        let url = "http://m:2379/metrics".to_string();
        assert!(FetchError::Timeout { url: url.clone() }.is_transient());
        let large = FetchError::TooLarge {
            url,
            limit: MAX_METRICS_BYTES,
        };
        assert!(!large.is_transient());
        assert!(large.to_string().contains("http://m:2379/metrics"));
    }
}
