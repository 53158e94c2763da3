//! What kind of failure an error from etcd or from connecting is: the member is gone, the cluster is choosing a
//! leader, or our credentials were refused. The rules are pure and tested on the messages etcd really sends.

use crate::etcd::connect::{ConnectError, describe_etcd_error};
use crate::view::{FailureKind, ProbeError};

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
fn is_tls_refusal(message: &str) -> bool {
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

/// A failure to connect as a probe failure.
pub fn from_connect(err: &ConnectError) -> ProbeError {
    let kind = match err {
        // Authenticate itself needs a leader: during an election it fails with "leader changed", which is no
        // verdict on the password.
        ConnectError::Auth { cause, .. } => match classify(None, cause) {
            FailureKind::Other => FailureKind::Auth,
            kind => kind,
        },
        ConnectError::Tls(_) => FailureKind::Auth,
        ConnectError::DialTimeout(_) => FailureKind::Timeout,
        ConnectError::PlaintextRefused | ConnectError::HttpClient(_) => FailureKind::Other,
        ConnectError::Connect(message) if is_tls_refusal(message) => FailureKind::Auth,
        ConnectError::Connect(_) => FailureKind::Unreachable,
    };
    ProbeError::new(kind, err.to_string())
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
        assert!(!ProbeError::new(FailureKind::Auth, "x").is_transient());
        assert!(!ProbeError::new(FailureKind::Other, "x").is_transient());
    }
}
