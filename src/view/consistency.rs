//! Whether the members hold the same data: the KV hashes (HashKV) of the voting members at one pinned revision,
//! judged (pure). The check that asks the members is `probe::consistency`; its result travels with every view
//! built after it, until the next check.
//!
//! A hash covers the key-value history from the member's compact revision up to the pinned revision, so two
//! hashes are comparable only at the same revision *and* the same compact revision: a compaction applied between
//! two members' calls changes the second one's hash legitimately. Different compact revisions are therefore
//! `unknown`, never `inconsistent`; and a member that could not answer makes the result `unknown`, never a pass.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ConsistencyState {
    /// Every voting member answered with the same hash at the same revision and compact revision.
    Consistent,
    /// Two members that are comparable (same revision, same compact revision) answered different hashes.
    Inconsistent,
    /// Not every voting member could be compared: down, refused, compacted past the revision, skipped.
    Unknown,
}

impl ConsistencyState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

crate::names::serialize_as_name!(ConsistencyState);

/// Why a member gave no hash, when the check can do something about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFailure {
    /// The pinned revision was compacted on the member meanwhile: a check at a fresh revision may succeed.
    Compacted,
    /// Anything else (down, refused, in its future, too large, timed out).
    Other,
}

/// What one member answered to HashKV at the pinned revision, or why it did not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberHash {
    pub hash: Option<u32>,
    /// The member's compact revision when the hash began (etcd 3.5 says -1 when it never compacted).
    pub compact_revision: Option<i64>,
    pub error: Option<String>,
    /// How long the member took to answer.
    pub seconds: Option<f64>,
    #[serde(skip)]
    pub failure: Option<HashFailure>,
}

impl MemberHash {
    pub fn answered(hash: u32, compact_revision: i64, seconds: f64) -> Self {
        MemberHash {
            hash: Some(hash),
            compact_revision: Some(compact_revision),
            error: None,
            seconds: Some(seconds),
            failure: None,
        }
    }

    pub fn failed(error: String, seconds: Option<f64>) -> Self {
        MemberHash {
            hash: None,
            compact_revision: None,
            error: Some(error),
            seconds,
            failure: Some(HashFailure::Other),
        }
    }

    /// The pinned revision was compacted on this member.
    pub fn compacted(error: String, seconds: Option<f64>) -> Self {
        MemberHash {
            failure: Some(HashFailure::Compacted),
            ..MemberHash::failed(error, seconds)
        }
    }
}

/// The result of one consistency check: the `consistency` key of the JSON view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consistency {
    pub state: ConsistencyState,
    /// The pinned revision every member was asked to hash; `None` when none could be chosen.
    pub revision: Option<i64>,
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub checked_at: SystemTime,
    /// Each voting member's answer, by member id.
    pub members: BTreeMap<Id, MemberHash>,
    /// The members whose hash differs from the majority's (every compared member when no majority agrees).
    pub differing_members: Vec<Id>,
    /// In words: what agreed, what differs, or why the result is unknown.
    pub message: String,
    /// How long the whole check took.
    pub seconds: f64,
    /// The members whose hashes were compared with each other (the metric per member is theirs only).
    #[serde(skip)]
    pub compared_members: Vec<Id>,
}

impl Consistency {
    /// A check that could not ask any member (no voter known, no pinned revision): unknown, with the reason.
    pub fn unknown(
        checked_at: SystemTime,
        members: BTreeMap<Id, MemberHash>,
        message: String,
    ) -> Self {
        Consistency {
            state: ConsistencyState::Unknown,
            revision: None,
            checked_at,
            members,
            differing_members: Vec::new(),
            message,
            seconds: 0.0,
            compared_members: Vec::new(),
        }
    }

    /// A compaction got in the way (a member compacted the revision, or the members' compact revisions differ):
    /// a check at a fresh revision may conclude.
    pub fn compaction_interfered(&self) -> bool {
        let compacts: std::collections::BTreeSet<i64> = self
            .members
            .values()
            .filter_map(|m| m.compact_revision)
            .collect();
        compacts.len() > 1
            || self
                .members
                .values()
                .any(|m| m.failure == Some(HashFailure::Compacted))
    }

    /// Whether this member's hash was found to differ.
    pub fn differs(&self, member: Id) -> bool {
        self.differing_members.contains(&member)
    }
}

/// `0x`-prefixed, as etcd's logs print a hash.
pub fn hash_text(hash: u32) -> String {
    format!("{hash:#010x}")
}

/// Judges the answers of the voting members at `revision`. `name` gives a member's name for the message.
pub fn judge(
    revision: i64,
    members: BTreeMap<Id, MemberHash>,
    name: impl Fn(Id) -> String,
    checked_at: SystemTime,
    seconds: f64,
) -> Consistency {
    let mut result = Consistency {
        state: ConsistencyState::Unknown,
        revision: Some(revision),
        checked_at,
        members,
        differing_members: Vec::new(),
        message: String::new(),
        seconds,
        compared_members: Vec::new(),
    };
    // Comparable answers: grouped by compact revision.
    let mut groups: BTreeMap<i64, Vec<(Id, u32)>> = BTreeMap::new();
    for (id, m) in &result.members {
        if let (Some(hash), Some(compact)) = (m.hash, m.compact_revision) {
            groups.entry(compact).or_default().push((*id, hash));
        }
    }
    // A disagreement between comparable members is a finding whatever the others said: the largest group in
    // which hashes differ is the one reported.
    let disagreeing = groups
        .iter()
        .filter(|(_, answers)| answers.iter().any(|(_, h)| *h != answers[0].1))
        .max_by_key(|(_, answers)| answers.len());
    if let Some((compact, answers)) = disagreeing {
        let (differing, message) = describe_disagreement(revision, *compact, answers, &name);
        result.state = ConsistencyState::Inconsistent;
        result.differing_members = differing;
        result.compared_members = answers.iter().map(|(id, _)| *id).collect();
        result.message = message;
        return result;
    }

    let failed: Vec<String> = result
        .members
        .iter()
        .filter_map(|(id, m)| Some(format!("{}: {}", name(*id), m.error.as_deref()?)))
        .collect();
    result.message = if result.members.len() < 2 {
        "fewer than two voting members: nothing to compare".to_string()
    } else if !failed.is_empty() {
        format!(
            "not every voting member could be compared at revision {revision}: {}",
            failed.join("; ")
        )
    } else if groups.len() > 1 {
        let compacts: Vec<String> = groups
            .iter()
            .map(|(c, answers)| {
                let names: Vec<String> = answers.iter().map(|(id, _)| name(*id)).collect();
                format!("{} at compact revision {c}", names.join(", "))
            })
            .collect();
        format!(
            "a compaction ran during the check, the hashes cannot be compared: {}",
            compacts.join("; ")
        )
    } else {
        let (compact, answers) = groups
            .iter()
            .next()
            .map(|(c, a)| (*c, a.as_slice()))
            .unwrap_or((0, &[]));
        result.state = ConsistencyState::Consistent;
        result.compared_members = answers.iter().map(|(id, _)| *id).collect();
        let hash = answers.first().map_or(0, |(_, h)| *h);
        format!(
            "{} voting members agree: hash {} at revision {revision} (compact revision {compact})",
            answers.len(),
            hash_text(hash)
        )
    };
    result
}

/// Which members differ within one group of comparable answers, and the sentence that says so.
fn describe_disagreement(
    revision: i64,
    compact: i64,
    answers: &[(Id, u32)],
    name: &impl Fn(Id) -> String,
) -> (Vec<Id>, String) {
    let mut counts: BTreeMap<u32, Vec<Id>> = BTreeMap::new();
    for (id, hash) in answers {
        counts.entry(*hash).or_default().push(*id);
    }
    let names = |ids: &[Id]| ids.iter().map(|i| name(*i)).collect::<Vec<_>>().join(", ");
    let majority = counts
        .iter()
        .find(|(_, ids)| 2 * ids.len() > answers.len())
        .map(|(h, ids)| (*h, ids.clone()));
    let at = format!("at revision {revision} (compact revision {compact})");
    match majority {
        Some((hash, agreeing)) => {
            let differing: Vec<Id> = answers
                .iter()
                .filter(|(_, h)| *h != hash)
                .map(|(id, _)| *id)
                .collect();
            let odd: Vec<String> = differing
                .iter()
                .map(|id| {
                    let h = answers.iter().find(|(i, _)| i == id).map_or(0, |(_, h)| *h);
                    format!("{} has {}", name(*id), hash_text(h))
                })
                .collect();
            let message = format!(
                "KV hashes differ {at}: {} where {} {} {}",
                odd.join(", "),
                names(&agreeing),
                if agreeing.len() == 1 { "has" } else { "have" },
                hash_text(hash)
            );
            (differing, message)
        }
        None => {
            let all: Vec<String> = counts
                .iter()
                .map(|(h, ids)| format!("{} {}", names(ids), hash_text(*h)))
                .collect();
            let message = format!(
                "KV hashes differ {at} and no majority agrees: {}",
                all.join(", ")
            );
            (answers.iter().map(|(id, _)| *id).collect(), message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: Id) -> String {
        format!("m{}", id.0)
    }

    fn judged(answers: &[(u64, MemberHash)]) -> Consistency {
        let members = answers.iter().map(|(i, m)| (Id(*i), m.clone())).collect();
        judge(100, members, name, SystemTime::UNIX_EPOCH, 0.5)
    }

    fn ok(hash: u32, compact: i64) -> MemberHash {
        MemberHash::answered(hash, compact, 0.1)
    }

    #[test]
    fn equal_hashes_at_one_compact_revision_are_consistent() {
        let c = judged(&[(1, ok(7, 40)), (2, ok(7, 40)), (3, ok(7, 40))]);
        assert_eq!(c.state, ConsistencyState::Consistent, "{}", c.message);
        assert!(c.differing_members.is_empty());
        assert!(
            c.message.contains("3 voting members agree"),
            "{}",
            c.message
        );
        assert!(c.message.contains("revision 100"), "{}", c.message);
    }

    #[test]
    fn the_odd_member_out_is_named() {
        let c = judged(&[(1, ok(7, 40)), (2, ok(9, 40)), (3, ok(7, 40))]);
        assert_eq!(c.state, ConsistencyState::Inconsistent);
        assert_eq!(c.differing_members, vec![Id(2)]);
        assert!(
            c.message
                .contains("m2 has 0x00000009 where m1, m3 have 0x00000007"),
            "{}",
            c.message
        );
    }

    #[test]
    fn without_a_majority_every_compared_member_differs() {
        let c = judged(&[(1, ok(7, 40)), (2, ok(9, 40))]);
        assert_eq!(c.state, ConsistencyState::Inconsistent);
        assert_eq!(c.differing_members, vec![Id(1), Id(2)]);
        assert!(c.message.contains("no majority"), "{}", c.message);
    }

    #[test]
    fn a_member_that_failed_makes_it_unknown_never_a_pass() {
        let c = judged(&[
            (1, ok(7, 40)),
            (2, ok(7, 40)),
            (3, MemberHash::failed("connection refused".into(), None)),
        ]);
        assert_eq!(c.state, ConsistencyState::Unknown);
        assert!(
            c.message.contains("m3: connection refused"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_disagreement_is_reported_even_when_another_member_failed() {
        let c = judged(&[
            (1, ok(7, 40)),
            (2, ok(8, 40)),
            (3, MemberHash::failed("timed out".into(), None)),
        ]);
        assert_eq!(c.state, ConsistencyState::Inconsistent);
    }

    #[test]
    fn different_compact_revisions_are_not_compared() {
        // A compaction applied between the calls changes the later hashes legitimately.
        let c = judged(&[(1, ok(7, 40)), (2, ok(8, 60)), (3, ok(8, 60))]);
        assert_eq!(c.state, ConsistencyState::Unknown, "{}", c.message);
        assert!(c.message.contains("compaction ran"), "{}", c.message);
        // But within one compact revision, a difference is still found.
        let c = judged(&[(1, ok(7, 40)), (2, ok(8, 60)), (3, ok(9, 60))]);
        assert_eq!(c.state, ConsistencyState::Inconsistent);
        assert_eq!(c.differing_members, vec![Id(2), Id(3)]);
    }

    #[test]
    fn one_voting_member_has_nothing_to_compare() {
        let c = judged(&[(1, ok(7, 40))]);
        assert_eq!(c.state, ConsistencyState::Unknown);
        assert!(c.message.contains("nothing to compare"), "{}", c.message);
    }

    #[test]
    fn json_has_the_contract_keys() {
        let c = judged(&[(1, ok(7, -1)), (2, ok(7, -1))]);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["state"], "consistent");
        assert_eq!(v["revision"], 100);
        assert_eq!(v["checked_at"], 0.0);
        let m = &v["members"]["0000000000000001"];
        assert_eq!(m["hash"], 7);
        assert_eq!(m["compact_revision"], -1);
        assert!(m["error"].is_null());
    }
}
