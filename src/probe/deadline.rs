//! One bound for all of a probe's calls, computed once.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::etcd::error as failure;
use crate::view::{FailureKind, Outcome, ProbeError};

/// The time one probe's calls may take, computed once when the connection is ready: every call of the probe,
/// retries, token renewal and a late /metrics read included, ends by it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) budget: Duration,
}

impl Deadline {
    /// `budget` from now, but never past `limit` (the whole probe's bound: dial + command timeout).
    pub(super) fn from_now_within(budget: Duration, limit: Instant) -> Self {
        Deadline {
            at: (Instant::now() + budget).min(limit),
            budget,
        }
    }

    pub(super) fn timed_out(&self) -> ProbeError {
        ProbeError::new(
            FailureKind::Timeout,
            format!(
                "timed out after {}",
                humantime::format_duration(self.budget)
            ),
        )
    }

    pub(super) async fn bound<T, F>(&self, call: F) -> Outcome<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout_at(self.at.into(), call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failure::from_etcd(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }
}
