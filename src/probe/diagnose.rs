//! Errors made clearer: a TLS alert's hint, and the cause behind a connection that was just cut.

use std::time::Instant;

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::etcd::error as failure;
use crate::view::ProbeError;

/// Adds the hint for a server's TLS alert, which depends on whether we presented a client certificate.
pub(super) fn annotate(connector: &Connector, error: ProbeError) -> ProbeError {
    if !error.message.contains("received fatal alert") {
        return error;
    }
    match connector.tls_hint(&error.message) {
        // The TLS diagnosis already added it.
        Some(hint) if error.message.contains(hint) => error,
        Some(hint) => failure::from_message(format!("{} ({hint})", error.message)),
        None => error,
    }
}

/// A transport failure that hides its cause: the connection was just cut.
pub(super) fn is_vague(error: &str) -> bool {
    [
        "connection closed",
        "broken pipe",
        "connection reset",
        "operation was canceled",
    ]
    .iter()
    .any(|v| error.contains(v))
}

/// The TLS diagnosis, if the probe's time allows it; else the error as it is.
pub(super) async fn diagnose_within(
    connector: &Connector,
    endpoint: &Endpoint,
    error: ProbeError,
    whole: Instant,
) -> ProbeError {
    let fallback = error.clone();
    tokio::time::timeout_at(whole.into(), with_tls_diagnosis(connector, endpoint, error))
        .await
        .unwrap_or(fallback)
}

/// Replaces a vague transport error on a TLS endpoint with what the server's TLS alert says, if it said one.
async fn with_tls_diagnosis(
    connector: &Connector,
    endpoint: &Endpoint,
    error: ProbeError,
) -> ProbeError {
    if !is_vague(&error.message) {
        return error;
    }
    if endpoint.scheme() == crate::etcd::endpoint::Scheme::Http {
        // A TLS member hangs up on a plain-text client without a word.
        return ProbeError::new(
            error.kind,
            format!(
                "{} (the member cut the connection: if it expects TLS, use https:// and --cacert)",
                error.message
            ),
        );
    }
    match connector.diagnose_tls(endpoint).await {
        Some(diagnosis) => failure::from_message(diagnosis),
        None => error,
    }
}
