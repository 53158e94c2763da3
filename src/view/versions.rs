//! etcd versions with a known problem: a defect that hurts the running cluster, or one that makes the upgrade to
//! the next minor version fail. A table, so that a new entry is one line of data; matched with semver ranges.

use semver::{Version, VersionReq};

/// What a known problem endangers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// The running cluster: upgrade the patch version.
    Running,
    /// The upgrade to the next minor version: upgrade the patch version first.
    Upgrade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownIssue {
    /// A semver range, e.g. `>=3.5.0, <3.5.3`.
    pub affected: &'static str,
    pub impact: Impact,
    pub problem: &'static str,
    pub advice: &'static str,
    pub reference: &'static str,
}

/// The table. Newest knowledge last; each entry cites etcd's own account of the problem.
pub const KNOWN_ISSUES: &[KnownIssue] = &[
    KnownIssue {
        affected: ">=3.5.0, <3.5.3",
        impact: Impact::Running,
        problem: "a member killed while applying writes can commit a partial transaction and drift apart \
                  from the others silently (the 3.5 data inconsistency)",
        advice: "upgrade to 3.5.3 or later, then check the KV hashes (status --consistency)",
        reference: "https://github.com/etcd-io/etcd/issues/13766",
    },
    KnownIssue {
        affected: ">=3.5.1, <3.5.20",
        impact: Impact::Upgrade,
        problem: "a learner promotion is persisted to the v2 store only: upgraded to 3.6, promoted members \
                  can turn back into learners and etcd fails with \"too many learner members in cluster\"",
        advice: "upgrade to 3.5.20 or later before upgrading to 3.6",
        reference: "https://github.com/etcd-io/etcd/issues/19557",
    },
    KnownIssue {
        affected: ">=3.5.0, <3.5.26",
        impact: Impact::Upgrade,
        problem: "the v2 and v3 stores' membership can differ: upgraded to 3.6, members removed long ago can \
                  come back as zombie members and make the cluster inoperable",
        advice: "upgrade to 3.5.26 or later (it repairs the v3 store) before upgrading to 3.6",
        reference: "https://etcd.io/blog/2025/zombie_members_upgrade/",
    },
];

/// The version etcd reports, as semver: `3.5.21` (a pre-release or build suffix is dropped: the table speaks of
/// releases). `None` when it is not a version at all.
fn parse(version: &str) -> Option<Version> {
    let mut v = Version::parse(version.trim().trim_start_matches('v')).ok()?;
    v.pre = semver::Prerelease::EMPTY;
    v.build = semver::BuildMetadata::EMPTY;
    Some(v)
}

/// The known problems of the version a member reports, in table order.
pub fn known_issues(version: &str) -> Vec<&'static KnownIssue> {
    let Some(v) = parse(version) else {
        return Vec::new();
    };
    KNOWN_ISSUES
        .iter()
        // A range that does not parse is a bug in the table, which a test catches; it matches nothing.
        .filter(|i| VersionReq::parse(i.affected).is_ok_and(|r| r.matches(&v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_in_the_table_parses() {
        for issue in KNOWN_ISSUES {
            VersionReq::parse(issue.affected).unwrap_or_else(|e| panic!("{}: {e}", issue.affected));
            assert!(issue.reference.starts_with("https://"), "{issue:?}");
        }
    }

    fn impacts(version: &str) -> Vec<(Impact, &'static str)> {
        known_issues(version)
            .into_iter()
            .map(|i| (i.impact, i.advice))
            .collect()
    }

    #[test]
    fn the_3_5_data_inconsistency_is_3_5_0_to_3_5_2() {
        for v in ["3.5.0", "3.5.1", "3.5.2"] {
            assert!(impacts(v).iter().any(|(i, _)| *i == Impact::Running), "{v}");
        }
        for v in ["3.4.23", "3.5.3", "3.5.21", "3.6.0"] {
            assert!(
                !impacts(v).iter().any(|(i, _)| *i == Impact::Running),
                "{v}"
            );
        }
    }

    #[test]
    fn a_3_6_upgrade_needs_3_5_26_first() {
        assert_eq!(impacts("3.5.1").len(), 3, "all three apply to 3.5.1");
        assert_eq!(
            impacts("3.5.20"),
            vec![(Impact::Upgrade, KNOWN_ISSUES[2].advice)],
            "the learner fix is in 3.5.20, the zombie fix is not"
        );
        assert!(impacts("3.5.26").is_empty());
        assert!(impacts("3.6.5").is_empty());
        assert!(impacts("3.4.23").is_empty(), "3.4 upgrades to 3.5 first");
    }

    #[test]
    fn suffixes_and_garbage() {
        assert_eq!(
            impacts("3.5.21-0").len(),
            1,
            "a build suffix is the release"
        );
        assert_eq!(impacts("v3.5.2").len(), 3);
        assert!(impacts("").is_empty());
        assert!(impacts("not a version").is_empty());
    }
}
