//! The decisions of a rolling defragmentation (pure): whether a member is worth it, how long it may take, who
//! gets leadership, whether a member has caught up, whether NOSPACE may be disarmed. The run asks them again on
//! a fresh view before every step.

use std::time::Duration;

use crate::id::Id;
use crate::maintenance::plan::CAUGHT_UP;
use crate::rule::{Rule, RuleInputs};
use crate::view::{ClusterView, EndpointHealth, EndpointState};

/// What is done with one member, decided from a view.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Defragment {
        inputs: RuleInputs,
    },
    Skip {
        reason: String,
        inputs: Option<RuleInputs>,
    },
}

/// How long one member's defragmentation may take: etcd rewrites the whole file, so the bound grows with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberTimeout {
    pub base: Duration,
    pub per_gib: Duration,
}

impl Default for MemberTimeout {
    fn default() -> Self {
        // etcd rewrites ~100 MB/s on a good disk (docs: about 1 s per 100 MB); a minute per GiB leaves room for
        // a slow disk, and the base for a small database on a busy member.
        MemberTimeout {
            base: Duration::from_secs(60),
            per_gib: Duration::from_secs(60),
        }
    }
}

impl MemberTimeout {
    pub fn for_size(&self, db_size: u64) -> Duration {
        let gib = db_size as f64 / (1u64 << 30) as f64;
        self.base + self.per_gib.mul_f64(gib)
    }
}

/// What decides whether a member is worth defragmenting.
#[derive(Debug, Clone)]
pub struct Worth {
    pub rule: Rule,
    /// The quota to assume for a member whose own (from its /metrics) is unknown.
    pub fallback_quota: u64,
    /// Below this much reclaimable space a member is not worth blocking.
    pub min_reclaim: u64,
    /// Skip members reached on a loopback address (a CronJob on a control-plane node leaving its own member).
    pub exclude_localhost: bool,
}

/// A member's figures from its probe; the quota is its own (read from its /metrics), `fallback_quota` only
/// when that could not be read. `None` when the member did not report its sizes.
pub fn inputs_of(endpoint: &EndpointState, fallback_quota: u64) -> Option<RuleInputs> {
    Some(RuleInputs::new(
        endpoint.db_size_bytes?,
        endpoint.db_size_in_use_bytes?,
        endpoint.db_quota_bytes.unwrap_or(fallback_quota),
    ))
}

/// The endpoint row of a member: healthy ones first.
pub fn member_row(view: &ClusterView, member: Id) -> Option<&EndpointState> {
    let rows = || {
        view.endpoints
            .iter()
            .filter(move |e| e.member_id == Some(member) && !view.is_foreign(e))
    };
    rows()
        .find(|e| e.state == EndpointHealth::Healthy)
        .or_else(|| rows().next())
}

fn is_loopback(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether the member is worth defragmenting now, by the rule and the floor, from its row in `view`.
pub fn decide(view: &ClusterView, member: Id, worth: &Worth) -> Decision {
    let Some(row) = member_row(view, member) else {
        return Decision::Skip {
            reason: "no endpoint reaches it".into(),
            inputs: None,
        };
    };
    if view.member(member).is_some_and(|m| m.is_learner) || row.is_learner {
        // etcd (3.4, 3.5) answers a learner's Defragment with "rpc not supported for learner": it is
        // defragmented once promoted.
        return Decision::Skip {
            reason: "a learner: etcd refuses to defragment one (\"rpc not supported for learner\") until it is promoted".into(),
            inputs: None,
        };
    }
    if worth.exclude_localhost && is_loopback(&row.endpoint) {
        return Decision::Skip {
            reason: format!(
                "{} is a loopback address (--exclude-localhost)",
                row.endpoint
            ),
            inputs: None,
        };
    }
    let Some(inputs) = inputs_of(row, worth.fallback_quota) else {
        return Decision::Skip {
            reason: "its database size is unknown".into(),
            inputs: None,
        };
    };
    match worth.rule.holds(&inputs) {
        Ok(true) => {}
        Ok(false) => {
            return Decision::Skip {
                reason: format!("the rule {:?} is false for it", worth.rule.text()),
                inputs: Some(inputs),
            };
        }
        Err(e) => {
            return Decision::Skip {
                reason: e,
                inputs: Some(inputs),
            };
        }
    }
    if (inputs.db_size_free as u64) < worth.min_reclaim {
        return Decision::Skip {
            reason: format!(
                "{} reclaimable, under the floor of {} (--min-reclaim)",
                crate::units::human_bytes(inputs.db_size_free as u64),
                crate::units::human_bytes(worth.min_reclaim)
            ),
            inputs: Some(inputs),
        };
    }
    Decision::Defragment { inputs }
}

/// The leader's commit index in `view`, when the leader answered.
fn leader_index(view: &ClusterView) -> Option<u64> {
    view.endpoints
        .iter()
        .find(|e| e.is_leader && e.state == EndpointHealth::Healthy)
        .and_then(|e| e.raft_index)
}

/// The member is healthy again and has applied what the leader has committed, give or take [`CAUGHT_UP`].
pub fn caught_up(view: &ClusterView, member: Id) -> bool {
    let Some(row) = member_row(view, member) else {
        return false;
    };
    if row.state != EndpointHealth::Healthy || row.stale {
        return false;
    }
    match (row.raft_applied_index, leader_index(view)) {
        (Some(applied), Some(commit)) => applied + CAUGHT_UP >= commit,
        _ => false,
    }
}

/// Who leadership goes to before the leader's turn: a healthy, caught-up voting follower, one already
/// defragmented if there is one (it will not be blocked again in this run), else any.
pub fn leadership_target(view: &ClusterView, done: &[Id]) -> Option<Id> {
    let candidates: Vec<Id> = view
        .members
        .iter()
        .filter(|m| m.started && !m.is_learner && Some(m.id) != view.leader_id)
        .filter(|m| caught_up(view, m.id))
        .map(|m| m.id)
        .collect();
    candidates
        .iter()
        .find(|id| done.contains(id))
        .or_else(|| candidates.first())
        .copied()
}

/// The NOSPACE alarms that may be disarmed after a run: all of them, when every member's database is under
/// `threshold` × its quota; else why not (the first member over it).
pub fn nospace_to_disarm(
    view: &ClusterView,
    threshold: f64,
    fallback_quota: u64,
) -> Result<Vec<Id>, String> {
    let alarmed: Vec<Id> = view
        .alarms
        .iter()
        .filter(|a| a.kind == "NOSPACE")
        .map(|a| a.member_id)
        .collect();
    if alarmed.is_empty() {
        return Ok(alarmed);
    }
    for m in view.members.iter().filter(|m| m.started) {
        let Some(row) = member_row(view, m.id) else {
            return Err(format!("member {} is not probed", m.display_name()));
        };
        let (Some(size), quota) = (
            row.db_size_bytes,
            row.db_quota_bytes.unwrap_or(fallback_quota),
        ) else {
            return Err(format!(
                "the database size of member {} is unknown",
                m.display_name()
            ));
        };
        if size as f64 >= threshold * quota as f64 {
            return Err(format!(
                "member {} is at {:.0}% of its quota ({} of {}), not under {:.0}%",
                m.display_name(),
                100.0 * size as f64 / quota.max(1) as f64,
                crate::units::human_bytes(size),
                crate::units::human_bytes(quota),
                100.0 * threshold
            ));
        }
    }
    Ok(alarmed)
}

/// The revision a compaction keeping `keep` revisions behind `newest` compacts to; none when there is nothing
/// older than that.
pub fn compaction_revision(newest: i64, keep: u64) -> Option<i64> {
    let target = newest.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
    (target > 1).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::view::{self, Alarm};

    fn worth(rule: &str) -> Worth {
        Worth {
            rule: Rule::parse(rule).unwrap(),
            fallback_quota: 2 << 30,
            min_reclaim: 0,
            exclude_localhost: false,
        }
    }

    fn sized(size: u64, in_use: u64, quota: Option<u64>) -> ClusterView {
        let (_, mut probes) = three();
        for p in &mut probes {
            if let Ok(s) = p.status.as_mut() {
                s.db_size = size;
                s.db_size_in_use = in_use;
            }
            if let Ok(m) = p.metrics.as_mut() {
                m.quota_backend_bytes = quota;
            }
        }
        view::build("prod", &probes, polled_at())
    }

    #[test]
    fn the_rule_decides_with_the_members_own_quota() {
        let v = sized(900, 100, Some(1000));
        let id = v.members[0].id;
        assert!(matches!(
            decide(&v, id, &worth("dbQuotaUsage > 0.8")),
            Decision::Defragment { .. }
        ));
        // No quota from /metrics: the fallback (2 GiB) makes 900 bytes nothing.
        let v = sized(900, 100, None);
        match decide(&v, id, &worth("dbQuotaUsage > 0.8")) {
            Decision::Skip { reason, inputs } => {
                assert!(reason.contains("is false"), "{reason}");
                assert_eq!(inputs.unwrap().db_quota, (2u64 << 30) as f64);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn under_the_floor_is_not_worth_blocking() {
        let v = sized(1000, 900, Some(10_000));
        let mut w = worth("");
        w.min_reclaim = 200;
        match decide(&v, v.members[0].id, &w) {
            Decision::Skip { reason, .. } => assert!(reason.contains("--min-reclaim"), "{reason}"),
            d => panic!("{d:?}"),
        }
        w.min_reclaim = 100;
        assert!(matches!(
            decide(&v, v.members[0].id, &w),
            Decision::Defragment { .. }
        ));
    }

    #[test]
    fn loopback_members_are_left_when_asked() {
        let v = sized(1000, 10, Some(10_000));
        let mut w = worth("");
        w.exclude_localhost = true;
        let row = member_row(&v, v.members[0].id).unwrap();
        let expect_skip = is_loopback(&row.endpoint);
        assert_eq!(
            matches!(decide(&v, v.members[0].id, &w), Decision::Skip { .. }),
            expect_skip
        );
        assert!(is_loopback("http://127.0.0.1:2379"));
        assert!(is_loopback("https://localhost:2379"));
        assert!(is_loopback("http://[::1]:2379"));
        assert!(!is_loopback("https://10.0.0.1:2379"));
    }

    #[test]
    fn timeouts_grow_with_the_database() {
        let t = MemberTimeout::default();
        assert_eq!(t.for_size(0), Duration::from_secs(60));
        assert_eq!(t.for_size(8 << 30), Duration::from_secs(60 + 8 * 60));
    }

    #[test]
    fn leadership_goes_to_a_member_already_done() {
        let v = sized(1000, 10, Some(10_000));
        let followers: Vec<Id> = v
            .members
            .iter()
            .filter(|m| Some(m.id) != v.leader_id)
            .map(|m| m.id)
            .collect();
        assert_eq!(followers.len(), 2);
        assert_eq!(leadership_target(&v, &[followers[1]]), Some(followers[1]));
        assert!(leadership_target(&v, &[]).is_some());
        assert_ne!(leadership_target(&v, &[]), v.leader_id);
    }

    #[test]
    fn nospace_is_disarmed_only_when_every_member_is_under_the_threshold() {
        let mut v = sized(850, 100, Some(1000));
        let alarmed = v.members[1].id;
        v.alarms.push(Alarm {
            member_id: alarmed,
            kind: "NOSPACE".into(),
        });
        let why = nospace_to_disarm(&v, 0.8, 2 << 30).unwrap_err();
        assert!(why.contains("85%"), "{why}");
        assert_eq!(nospace_to_disarm(&v, 0.9, 2 << 30).unwrap(), vec![alarmed]);
        v.alarms.clear();
        assert!(nospace_to_disarm(&v, 0.1, 2 << 30).unwrap().is_empty());
    }

    #[test]
    fn compaction_keeps_revisions_behind_the_newest() {
        assert_eq!(compaction_revision(10_000, 1000), Some(9000));
        assert_eq!(compaction_revision(500, 1000), None);
        assert_eq!(compaction_revision(10, 0), Some(10));
    }
}
