//! Which snapshots to keep (pure): the newest N and/or those younger than a maximum age, counted per cluster.
//! The newest snapshot is never deleted, whatever the policy says: a prune must never leave a cluster without
//! its last good backup. Only snapshots this tool made are ever candidates (the caller lists those: a name of our
//! pattern with its sidecar).

use std::time::{Duration, SystemTime};

/// How many and how old.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    /// Keep the newest this many (of each cluster).
    pub keep_last: Option<usize>,
    /// Delete those older than this.
    pub max_age: Option<Duration>,
}

impl Policy {
    /// A policy that keeps everything: nothing to prune.
    pub fn keeps_all(&self) -> bool {
        self.keep_last.is_none() && self.max_age.is_none()
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
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::BeyondKeepLast => "beyond keep_last",
            Why::OlderThanMaxAge => "older than max_age",
        }
    }
}

/// What a prune would delete, newest first within each cluster; everything else is kept.
pub fn to_delete(entries: &[Entry], policy: &Policy, now: SystemTime) -> Vec<(Entry, Why)> {
    let mut clusters: Vec<&str> = entries.iter().map(|e| e.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let mut out = Vec::new();
    for cluster in clusters {
        let mut mine: Vec<&Entry> = entries.iter().filter(|e| e.cluster == cluster).collect();
        // Newest first; the name (which carries the time and revision) breaks ties.
        mine.sort_by(|a, b| {
            b.taken_at
                .cmp(&a.taken_at)
                .then_with(|| b.name.cmp(&a.name))
        });
        // The newest is kept whatever the policy: never the last good snapshot.
        for (i, e) in mine.iter().enumerate().skip(1) {
            let why = if policy.keep_last.is_some_and(|n| i >= n.max(1)) {
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
        };
        assert_eq!(names(&to_delete(&entries, &strict, now())), vec!["p-900h"]);
        assert!(to_delete(&entries[..1], &strict, now()).is_empty());
        assert!(to_delete(&entries, &Policy::default(), now()).is_empty());
    }
}
