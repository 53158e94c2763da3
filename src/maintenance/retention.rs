//! Which snapshots to keep (pure), counted per cluster: the newest N and/or those younger than a maximum age, or
//! grandfather-father-son — the newest snapshot of each of the last N hours, days, ISO weeks and months (UTC),
//! together with the newest `keep_last`. The newest snapshot is never deleted, whatever the policy says: a prune
//! must never leave a cluster without its last good backup. Only snapshots this tool made are ever candidates (the
//! caller lists those: a name of our pattern with its sidecar).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, Utc};

/// How many and how old.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    /// Keep the newest this many (of each cluster).
    pub keep_last: Option<usize>,
    /// Delete those older than this. Not combined with `periods` (configuration refuses both).
    pub max_age: Option<Duration>,
    /// Grandfather-father-son counts; when any is set, a snapshot is kept if `keep_last` or one of them keeps
    /// it, and deleted otherwise.
    pub periods: Periods,
}

/// Grandfather-father-son: keep the newest snapshot of each of the last `hourly` hours that have one, and so on
/// (the configuration's `keep_*` counts, as they are).
pub use crate::config::KeepPeriods as Periods;

impl Policy {
    /// The policy `[cluster.snapshot]` configures.
    pub fn from_config(c: &crate::config::SnapshotConfig) -> Self {
        Policy {
            keep_last: c.keep_last,
            max_age: c.max_age,
            periods: c.keep_periods,
        }
    }

    /// A policy that keeps everything: nothing to prune.
    pub fn keeps_all(&self) -> bool {
        self.keep_last.is_none() && self.max_age.is_none() && !self.periods.any()
    }
}

/// One snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub cluster: String,
    pub taken_at: SystemTime,
}

/// Why a snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    BeyondKeepLast,
    OlderThanMaxAge,
    /// Neither `keep_last` nor a grandfather-father-son period keeps it.
    NotKeptByPeriods,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::BeyondKeepLast => "beyond keep_last",
            Why::OlderThanMaxAge => "older than max_age",
            Why::NotKeptByPeriods => "not kept by keep_last or keep_hourly/daily/weekly/monthly",
        }
    }
}

/// How far ahead of the clock a snapshot's time may be (clocks of two hosts differ a little).
const FUTURE_SLACK: Duration = Duration::from_secs(3600);

/// What a prune would delete, newest first within each cluster; everything else is kept.
pub fn to_delete(entries: &[Entry], policy: &Policy, now: SystemTime) -> Vec<(Entry, Why)> {
    let mut clusters: Vec<&str> = entries.iter().map(|e| e.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let mut out = Vec::new();
    // A snapshot dated in the future (a clock that was once ahead, a name someone made up) is neither a candidate
    // nor the newest: counted as newest, it would let the real newest be deleted.
    let plausible = |e: &&Entry| e.taken_at <= now + FUTURE_SLACK;
    for cluster in clusters {
        let mut mine: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.cluster == cluster)
            .filter(plausible)
            .collect();
        // Newest first; the name (which carries the time and revision) breaks ties.
        mine.sort_by(|a, b| {
            b.taken_at
                .cmp(&a.taken_at)
                .then_with(|| b.name.cmp(&a.name))
        });
        let kept_by_periods = policy.periods.any().then(|| kept_by_periods(&mine, policy));
        // The newest is kept whatever the policy: never the last good snapshot.
        for (i, e) in mine.iter().enumerate().skip(1) {
            let why = if let Some(kept) = &kept_by_periods {
                (!kept.contains(&i)).then_some(Why::NotKeptByPeriods)
            } else if policy.keep_last.is_some_and(|n| i >= n.max(1)) {
                Some(Why::BeyondKeepLast)
            } else if policy
                .max_age
                .is_some_and(|age| now.duration_since(e.taken_at).unwrap_or_default() > age)
            {
                Some(Why::OlderThanMaxAge)
            } else {
                None
            };
            if let Some(why) = why {
                out.push(((*e).clone(), why));
            }
        }
    }
    out
}

/// The period a time falls in, as a number that differs between periods.
type PeriodOf = fn(DateTime<Utc>) -> i64;

/// Indexes (into `newest_first`) that `keep_last` or a period keeps.
fn kept_by_periods(newest_first: &[&Entry], policy: &Policy) -> HashSet<usize> {
    let mut kept: HashSet<usize> =
        (0..policy.keep_last.unwrap_or(0).min(newest_first.len())).collect();
    let p = policy.periods;
    let rules: [(Option<usize>, PeriodOf); 4] = [
        (p.hourly, |t| t.timestamp().div_euclid(3600)),
        (p.daily, |t| i64::from(t.num_days_from_ce())),
        (p.weekly, |t| {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        (p.monthly, |t| {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }),
    ];
    for (count, period_of) in rules {
        let Some(count) = count else { continue };
        let mut periods_seen: Vec<i64> = Vec::new();
        for (i, e) in newest_first.iter().enumerate() {
            if periods_seen.len() >= count {
                break;
            }
            let period = period_of(DateTime::<Utc>::from(e.taken_at));
            // Newest first: the first snapshot met in a period is that period's newest.
            if periods_seen.last() != Some(&period) {
                periods_seen.push(period);
                kept.insert(i);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const HOUR: u64 = 3600;

    fn entry(cluster: &str, hours_ago: u64) -> Entry {
        let now = UNIX_EPOCH + Duration::from_secs(1_000 * HOUR);
        Entry {
            name: format!("{cluster}-{hours_ago}h"),
            cluster: cluster.into(),
            taken_at: now - Duration::from_secs(hours_ago * HOUR),
        }
    }

    fn names(d: &[(Entry, Why)]) -> Vec<String> {
        d.iter().map(|(e, _)| e.name.clone()).collect()
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000 * HOUR)
    }

    #[test]
    fn keep_last_counts_per_cluster_newest_first() {
        let entries: Vec<Entry> = [0, 6, 12, 18, 24]
            .into_iter()
            .map(|h| entry("prod", h))
            .chain([3, 9].into_iter().map(|h| entry("dev", h)))
            .collect();
        let policy = Policy {
            keep_last: Some(2),
            max_age: None,
            ..Policy::default()
        };
        assert_eq!(
            names(&to_delete(&entries, &policy, now())),
            vec!["prod-12h", "prod-18h", "prod-24h"],
            "dev has only two: both kept"
        );
    }

    #[test]
    fn max_age_and_both_together() {
        let entries: Vec<Entry> = [0, 10, 30, 50].into_iter().map(|h| entry("p", h)).collect();
        let by_age = Policy {
            keep_last: None,
            max_age: Some(Duration::from_secs(24 * HOUR)),
            ..Policy::default()
        };
        let d = to_delete(&entries, &by_age, now());
        assert_eq!(names(&d), vec!["p-30h", "p-50h"]);
        assert_eq!(d[0].1, Why::OlderThanMaxAge);
        let both = Policy {
            keep_last: Some(1),
            ..by_age
        };
        assert_eq!(
            names(&to_delete(&entries, &both, now())),
            vec!["p-10h", "p-30h", "p-50h"]
        );
    }

    #[test]
    fn the_newest_snapshot_is_never_deleted() {
        let entries = vec![entry("p", 500), entry("p", 900)];
        let strict = Policy {
            keep_last: Some(0),
            max_age: Some(Duration::from_secs(HOUR)),
            ..Policy::default()
        };
        assert_eq!(names(&to_delete(&entries, &strict, now())), vec!["p-900h"]);
        assert!(to_delete(&entries[..1], &strict, now()).is_empty());
        assert!(to_delete(&entries, &Policy::default(), now()).is_empty());
    }

    #[test]
    fn grandfather_father_son_keeps_the_newest_of_each_period() {
        // Every 6 hours for 40 days, newest first: 0h, 6h, 12h, …
        let entries: Vec<Entry> = (0..160).map(|k| entry("p", k * 6)).collect();
        let policy = Policy {
            keep_last: Some(2),
            periods: Periods {
                hourly: Some(3),
                daily: Some(7),
                weekly: Some(4),
                monthly: Some(2),
            },
            ..Policy::default()
        };
        let deleted = to_delete(&entries, &policy, now());
        let kept: Vec<u64> = entries
            .iter()
            .filter(|e| !deleted.iter().any(|(d, _)| d.name == e.name))
            .map(|e| now().duration_since(e.taken_at).unwrap().as_secs() / HOUR)
            .collect();
        // now is hour 1000: 16:00 UTC on Wednesday 1970-02-11. keep_last and hourly: 0, 6, 12 (hours with one).
        // daily, the newest of 7 days: 0, 18 (22:00 on the 10th), 42, 66, 90, 114, 138.
        // weekly (ISO weeks begin on Monday), the newest of 4: 0, 66 (Sunday the 8th), 234 (Sunday 1 Feb),
        // 402 (Sunday 25 Jan). monthly, the newest of 2: 0, 258 (22:00 on 31 Jan).
        assert_eq!(
            kept,
            vec![0, 6, 12, 18, 42, 66, 90, 114, 138, 234, 258, 402]
        );
        assert!(deleted.iter().all(|(_, why)| *why == Why::NotKeptByPeriods));
    }

    #[test]
    fn a_snapshot_dated_in_the_future_is_never_the_newest_nor_deleted() {
        let mut future = entry("p", 0);
        future.name = "p-future".into();
        future.taken_at = now() + Duration::from_secs(100 * 24 * HOUR);
        let entries = vec![future, entry("p", 1), entry("p", 30)];
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        assert_eq!(names(&to_delete(&entries, &policy, now())), vec!["p-30h"]);
    }

    #[test]
    fn periods_never_delete_the_newest() {
        let entries = vec![entry("p", 0), entry("p", 1)];
        let policy = Policy {
            periods: Periods {
                weekly: Some(0),
                ..Periods::default()
            },
            ..Policy::default()
        };
        assert_eq!(names(&to_delete(&entries, &policy, now())), vec!["p-1h"]);
    }
}
