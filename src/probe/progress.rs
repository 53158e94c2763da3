//! What a probe has heard from its member so far, for the poller to show before the probe ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::view::StatusInfo;

use super::convert::status_info;

/// How a probe tells its poller what the member said so far, while the rest of the probe (a read that waits
/// for an election, say) may still take a while: its latest Status, and when it last answered anything.
#[derive(Debug)]
pub struct ProbeProgress {
    latest: Mutex<Option<StatusInfo>>,
    /// `None` while connecting: that is bounded by the dial timeout, and a slow link is not silence.
    last_answer: Mutex<Option<Instant>>,
    /// The gRPC calls are over: whatever still runs (a /metrics read) is not a sign of life or death.
    pub(super) calls_done: AtomicBool,
}

impl Default for ProbeProgress {
    fn default() -> Self {
        ProbeProgress {
            latest: Mutex::new(None),
            last_answer: Mutex::new(None),
            calls_done: AtomicBool::new(false),
        }
    }
}

impl ProbeProgress {
    /// The member's most recent Status in this probe.
    pub fn latest_status(&self) -> Option<StatusInfo> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long the member has said nothing since the connection was made or its last Status; `None` while
    /// connecting and once the calls are over.
    pub fn silent_for(&self) -> Option<Duration> {
        if self.calls_done.load(Ordering::Relaxed) {
            return None;
        }
        self.last_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// A sign of life that is not a Status: the connection was made.
    pub(super) fn alive(&self) {
        *self.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub(super) fn record(&self, status: &etcd_client::StatusResponse) -> Option<StatusInfo> {
        let info = status_info(status).ok()?;
        self.alive();
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
        Some(info)
    }
}
