//! Which revision the cluster was at a while ago (pure): etcd keeps no time per revision, so a compaction that
//! keeps "the last hour" needs the revisions the daemon saw, with the time it saw them. One sample per poll at
//! most, none older than the window needs.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Default)]
pub struct RevisionHistory {
    /// Oldest first: when a poll saw it, the newest revision any member answered with.
    samples: VecDeque<(SystemTime, i64)>,
}

/// Samples kept closer together than this are merged: a fast poll does not grow the history.
const SPACING: Duration = Duration::from_secs(1);

impl RevisionHistory {
    /// Records what a poll at `at` saw, forgetting samples that a window of `keep` no longer needs (one older
    /// than the window is kept: it is the answer for the window's start).
    pub fn record(&mut self, at: SystemTime, revision: i64, keep: Duration) {
        if let Some(&(last, _)) = self.samples.back()
            && at.duration_since(last).unwrap_or_default() < SPACING
        {
            return;
        }
        self.samples.push_back((at, revision));
        let horizon = at.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
        while self.samples.len() > 1 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
    }

    /// The revision the cluster was at `ago` before `now`: the newest seen no later than that; `None` when the
    /// history does not reach back so far (the daemon has watched for less).
    pub fn revision_at(&self, now: SystemTime, ago: Duration) -> Option<i64> {
        let then = now.checked_sub(ago)?;
        self.samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= then)
            .map(|&(_, rev)| rev)
    }

    /// How far back the history reaches from `now`.
    pub fn reach(&self, now: SystemTime) -> Duration {
        self.samples
            .front()
            .and_then(|(at, _)| now.duration_since(*at).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn the_revision_of_a_while_ago_is_the_newest_seen_by_then() {
        let mut h = RevisionHistory::default();
        let hour = Duration::from_secs(3600);
        for (secs, rev) in [(0, 100), (600, 200), (1200, 300), (3600, 900)] {
            h.record(t(secs), rev, hour);
        }
        // An hour before t(4000) is t(400): revision 100 was the newest then.
        assert_eq!(h.revision_at(t(4000), hour), Some(100));
        assert_eq!(h.revision_at(t(4700), hour), Some(200));
        assert_eq!(h.revision_at(t(4800), hour), Some(300));
        // Not watched for an hour yet.
        assert_eq!(h.revision_at(t(3000), hour), None);
        assert_eq!(h.reach(t(3000)), Duration::from_secs(3000));
    }

    #[test]
    fn old_samples_go_and_close_ones_merge() {
        let mut h = RevisionHistory::default();
        let window = Duration::from_secs(60);
        for s in 0..1000 {
            h.record(t(s), s as i64, window);
        }
        // One a second for the window, and the one before it.
        assert!(h.samples.len() <= 62, "{}", h.samples.len());
        assert_eq!(h.revision_at(t(999), window), Some(939));
        let mut fast = RevisionHistory::default();
        for ms in 0..100 {
            fast.record(t(0) + Duration::from_millis(ms * 10), ms as i64, window);
        }
        assert_eq!(fast.samples.len(), 1);
    }
}
