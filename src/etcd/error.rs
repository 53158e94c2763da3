//! Failures of calls to etcd, typed: what kind of failure (the member is gone, the cluster is choosing a leader,
//! our credentials were refused), whether trying again may help, and a message fit for an operator. The rules are
//! pure and tested on the messages etcd really sends; probes and maintenance both read them.

use std::error::Error as StdError;

use crate::names::serialize_as_name;

use super::tls;

/// Why a call of a probe failed, as far as the verdict is concerned: a member that is down, a cluster that is
/// choosing a leader and credentials that were refused are three different stories for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum FailureKind {
    /// Nothing answered: connection refused, reset or closed, name not resolved.
    Unreachable,
    /// No answer within the deadline.
    Timeout,
    /// The member answered, but the cluster has no leader to serve the request (an election, or no quorum).
    NoLeader,
    /// Credentials refused: password, user, token, client certificate or the server's certificate.
    Auth,
    /// Anything else the member said.
    Other,
}

serialize_as_name!(FailureKind);

impl FailureKind {
    /// Whether trying again later may succeed without anyone changing anything: the member may come back, the
    /// election end, the network heal. Refused credentials and anything else etcd said fail the same way again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureKind::Unreachable | FailureKind::Timeout | FailureKind::NoLeader
        )
    }
}

/// A failed call: what kind of failure, and a message fit for an operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub kind: FailureKind,
    pub message: String,
}

impl ProbeError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ProbeError {
            kind,
            message: message.into(),
        }
    }

    /// Whether trying again later may succeed without anyone changing anything (leader changed, timeout);
    /// permission denied or a refused certificate will fail the same way until someone fixes them.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

/// The outcome of one call of a probe.
pub type Outcome<T> = Result<T, ProbeError>;

/// Renders an error with its chain of causes, without the repetitions tonic and hyper like to add, and with a
/// hint for TLS failures.
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
    let message = parts.join(": ");
    match tls::explain(&message) {
        Some(hint) => format!("{message} ({hint})"),
        None => message,
    }
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

/// etcd's errors for a request that needs a leader while there is none (etcd's Go client retries these).
const ELECTION: [&str; 5] = [
    "etcdserver: leader changed",
    "etcdserver: no leader",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: not leader",
    "raft: stopped",
];

/// etcd's errors for refused credentials.
const AUTH: [&str; 7] = [
    "authentication failed",
    "invalid user ID or password",
    "user name not found",
    "invalid auth token",
    "user name is empty",
    "auth: revision in header is old",
    "revision of auth store is old",
];

/// Classifies a gRPC failure by its code and message.
pub fn classify(code: Option<tonic::Code>, message: &str) -> FailureKind {
    use tonic::Code;
    if ELECTION.iter().any(|m| message.contains(m)) {
        return FailureKind::NoLeader;
    }
    if AUTH.iter().any(|m| message.contains(m))
        || matches!(code, Some(Code::Unauthenticated | Code::PermissionDenied))
        || is_tls_refusal(message)
    {
        return FailureKind::Auth;
    }
    match code {
        Some(Code::DeadlineExceeded) => FailureKind::Timeout,
        Some(Code::Unavailable | Code::Cancelled | Code::Aborted) => FailureKind::Unreachable,
        Some(Code::Unknown) if looks_like_transport(message) => FailureKind::Unreachable,
        None if looks_like_transport(message) => FailureKind::Unreachable,
        _ => FailureKind::Other,
    }
}

/// A certificate refused, ours or the server's. (A plain-text/TLS mix-up is a wrong URL, not credentials.)
pub(super) fn is_tls_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "certificate",
        "unknownissuer",
        "unknown issuer",
        "notvalidforname",
        "not valid for name",
        "expired",
    ]
    .iter()
    .any(|c| m.contains(c))
}

fn looks_like_transport(message: &str) -> bool {
    [
        "connection refused",
        "connection reset",
        "connection closed",
        "broken pipe",
        "transport error",
        "tcp connect error",
        "dns error",
        "failed to lookup address",
        "operation was canceled",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// An etcd-client error as a probe failure.
pub fn from_etcd(err: &etcd_client::Error) -> ProbeError {
    let message = describe_etcd_error(err);
    let code = match err {
        etcd_client::Error::GRpcStatus(s) => Some(s.code()),
        _ => None,
    };
    ProbeError::new(classify(code, &message), message)
}

/// A message we made ourselves, classified by its text (a diagnosis replaced a vaguer error).
pub fn from_message(message: String) -> ProbeError {
    let kind = match classify(None, &message) {
        FailureKind::Other => FailureKind::Unreachable,
        kind => kind,
    };
    ProbeError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn elections_credentials_and_dead_members_are_told_apart() {
        let cases = [
            (
                Some(Code::Unavailable),
                "etcdserver: leader changed",
                FailureKind::NoLeader,
            ),
            (
                Some(Code::Unavailable),
                "etcdserver: no leader",
                FailureKind::NoLeader,
            ),
            (
                Some(Code::Unavailable),
                "etcdserver: request timed out, possibly due to previous leader failure",
                FailureKind::NoLeader,
            ),
            (
                Some(Code::InvalidArgument),
                "etcdserver: authentication failed, invalid user ID or password",
                FailureKind::Auth,
            ),
            (
                Some(Code::InvalidArgument),
                "etcdserver: user name is empty",
                FailureKind::Auth,
            ),
            (
                Some(Code::PermissionDenied),
                "etcdserver: permission denied",
                FailureKind::Auth,
            ),
            (
                None,
                "TLS: received fatal alert: BadCertificate (the server refused our client certificate)",
                FailureKind::Auth,
            ),
            (
                Some(Code::Unavailable),
                "tcp connect error: Connection refused (os error 111)",
                FailureKind::Unreachable,
            ),
            (
                Some(Code::DeadlineExceeded),
                "deadline exceeded",
                FailureKind::Timeout,
            ),
            (
                None,
                "TLS: received corrupt message of type InvalidContentType",
                FailureKind::Other,
            ),
            (
                Some(Code::InvalidArgument),
                "etcdserver: mvcc: required revision has been compacted",
                FailureKind::Other,
            ),
        ];
        for (code, message, kind) in cases {
            assert_eq!(classify(code, message), kind, "{message}");
        }
    }

    #[test]
    fn transient_failures_are_the_ones_worth_retrying() {
        assert!(ProbeError::new(FailureKind::NoLeader, "x").is_transient());
        assert!(ProbeError::new(FailureKind::Timeout, "x").is_transient());
        assert!(ProbeError::new(FailureKind::Unreachable, "x").is_transient());
        assert!(!ProbeError::new(FailureKind::Auth, "x").is_transient());
        assert!(!ProbeError::new(FailureKind::Other, "x").is_transient());
    }
}
