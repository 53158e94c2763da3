//! The KV hash consistency check: HashKV on every voting member, one after another, at one pinned revision that
//! all of them have applied; judged by `view::consistency`.
//!
//! Why pinned: HashKV without a revision hashes each member's own latest revision, and members a few writes
//! apart then "differ" although nothing is wrong (what `etcdctl endpoint hashkv` shows under writes). The pinned
//! revision is the lowest current revision among the members, read just before: every member has applied it,
//! and a compaction is the least likely to have passed it. Why one after another: HashKV walks the whole
//! keyspace of the member's database, so the cluster pays for one walk at a time, followers first and the
//! leader last (as a defragmentation goes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::Client;

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::units::human_bytes;
use crate::view::consistency::judge;
use crate::view::{ClusterView, Consistency, ConsistencyState, FailureKind, MemberHash};

use super::deadline::Deadline;

/// The bounds of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyOptions {
    /// A member whose database is larger is not hashed (its result is then unknown): the walk's cost grows with
    /// the database.
    pub max_db_size: u64,
    /// How long one member's HashKV may take.
    pub hash_timeout: Duration,
}

impl Default for ConsistencyOptions {
    fn default() -> Self {
        ConsistencyOptions {
            max_db_size: crate::settings::DEFAULT_CONSISTENCY_MAX_DB_SIZE,
            hash_timeout: crate::settings::DEFAULT_HASH_TIMEOUT,
        }
    }
}

/// Asked before each member's HashKV: why it must not be hashed now (it is being defragmented), if so.
pub trait Busy {
    fn busy(&self, member: Id) -> impl std::future::Future<Output = Option<String>> + Send;
}

/// Nothing is ever busy (one-shot checks that looked once, tests).
pub struct NeverBusy;

impl Busy for NeverBusy {
    async fn busy(&self, _member: Id) -> Option<String> {
        None
    }
}

/// A voting member that answered Status: how to ask it for its hash.
struct Voter {
    id: Id,
    endpoint: Endpoint,
    client: Client,
}

/// How often the whole check is tried when a compaction got in the way (it moves the compact revision of the
/// members between two calls): once more, at a fresh revision.
const ATTEMPTS: usize = 2;

/// Checks the voting members of the cluster `view` describes. Never fails: what went wrong is in the result.
pub async fn check(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    busy: &impl Busy,
) -> Consistency {
    let started = Instant::now();
    let mut result = attempt(view, connector, options, None, busy).await;
    for _ in 1..ATTEMPTS {
        let compaction_got_in_the_way =
            result.state == ConsistencyState::Unknown && result.compaction_interfered();
        if !compaction_got_in_the_way {
            break;
        }
        tracing::debug!(
            cluster = view.cluster,
            "a compaction got in the way: checking again"
        );
        result = attempt(view, connector, options, None, busy).await;
    }
    if result.state == ConsistencyState::Inconsistent {
        result = confirm(view, connector, options, busy, result).await;
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// How long to wait before each confirming hash of an inconsistent result.
const CONFIRM_AFTER: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];

/// Hashes the members again at the same revision before an inconsistency is believed. A member's hash at one
/// revision and compact revision is deterministic once its compaction has finished, but etcd hashes differently
/// while a compaction is still removing old revisions from the database (seen on 3.4 and 3.5 after compacting a
/// key space whose keys were all deleted: the members differed for about two seconds, then agreed). So only
/// hashes that did not change between two asks count; hashes that keep changing are `unknown`.
async fn confirm(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    busy: &impl Busy,
    first: Consistency,
) -> Consistency {
    let mut previous = first;
    for delay in CONFIRM_AFTER {
        tokio::time::sleep(delay).await;
        let again = attempt(view, connector, options, previous.revision, busy).await;
        let after = humantime::format_duration(delay);
        if again.state != ConsistencyState::Inconsistent {
            // Agreed once the compaction was over, or could not be asked again (unknown, never a pass).
            let why = match again.state {
                ConsistencyState::Consistent => ": a compaction was still in progress",
                _ => "",
            };
            let mut again = again;
            again.message = format!(
                "{} (asked again {after} after the hashes differed{why})",
                again.message
            );
            return again;
        }
        let stable = again
            .members
            .iter()
            .filter(|(_, m)| m.hash.is_some())
            .all(|(id, m)| {
                previous
                    .members
                    .get(id)
                    .is_some_and(|p| p.hash == m.hash && p.compact_revision == m.compact_revision)
            });
        if stable {
            let mut confirmed = again;
            confirmed.message = format!(
                "{} (the same hashes when asked again {after} later)",
                confirmed.message
            );
            return confirmed;
        }
        previous = again;
    }
    let mut unsettled = Consistency::unknown(
        previous.checked_at,
        previous.members.clone(),
        format!(
            "the members' hashes at revision {} changed between asks (a compaction still in progress): {}",
            previous.revision.unwrap_or_default(),
            previous.message
        ),
    );
    unsettled.revision = previous.revision;
    unsettled
}

/// The check at a revision chosen by the caller (once, without the retry): what a revision some member has
/// compacted, or has not reached, comes to.
pub async fn check_at(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    revision: i64,
) -> Consistency {
    attempt(view, connector, options, Some(revision), &NeverBusy).await
}

async fn attempt(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    pinned: Option<i64>,
    busy: &impl Busy,
) -> Consistency {
    let checked_at = SystemTime::now();
    let started = Instant::now();
    let name = |id: Id| {
        view.member(id)
            .map_or_else(|| id.to_string(), |m| m.display_name())
    };
    let mut answers: BTreeMap<Id, MemberHash> = BTreeMap::new();
    let mut reachable_voters: Vec<(Id, Endpoint)> = Vec::new();
    for m in view.members.iter().filter(|m| !m.is_learner) {
        match reachable(view, m.id, options) {
            Ok(endpoint) => reachable_voters.push((m.id, endpoint)),
            Err(why) => {
                answers.insert(m.id, MemberHash::failed(why, None));
            }
        }
    }
    if reachable_voters.is_empty() && answers.is_empty() {
        return Consistency::unknown(
            checked_at,
            answers,
            "no voting member is known (no member list read)".into(),
        );
    }
    // The pinned revision: the lowest current revision, read from every member now.
    let mut revisions: Vec<i64> = Vec::new();
    let mut voters: Vec<Voter> = Vec::new();
    for (id, endpoint) in reachable_voters {
        match current_revision(connector, id, &endpoint).await {
            Ok((rev, client)) => {
                revisions.push(rev);
                voters.push(Voter {
                    id,
                    endpoint,
                    client,
                });
            }
            Err(why) => {
                answers.insert(id, MemberHash::failed(why, None));
            }
        }
    }
    let Some(revision) = pinned.or_else(|| revisions.into_iter().min()) else {
        let reasons: Vec<String> = answers
            .iter()
            .filter_map(|(id, m)| Some(format!("{}: {}", name(*id), m.error.as_deref()?)))
            .collect();
        return Consistency::unknown(
            checked_at,
            answers,
            format!(
                "no voting member could be asked for a revision to pin: {}",
                reasons.join("; ")
            ),
        );
    };
    // Followers first, the leader last; members that did not answer Status are not asked.
    voters.sort_by_key(|v| Some(v.id) == view.leader_id);
    for v in &voters {
        // Asked again before each member: a defragmentation may have started since the check began.
        let answer = match busy.busy(v.id).await {
            Some(why) => MemberHash::failed(format!("not hashed: {why}"), None),
            None => hash_at(v, revision, options.hash_timeout).await,
        };
        answers.insert(v.id, answer);
    }
    judge(
        revision,
        answers,
        name,
        checked_at,
        started.elapsed().as_secs_f64(),
    )
}

/// The endpoint through which the view reached this member this poll, or why it is not hashed.
fn reachable(
    view: &ClusterView,
    member: Id,
    options: &ConsistencyOptions,
) -> Result<Endpoint, String> {
    let rows: Vec<_> = view
        .endpoints
        .iter()
        .filter(|e| e.member_id == Some(member) && !view.is_foreign(e))
        .collect();
    let Some(row) = rows.iter().find(|e| e.raft_term.is_some()) else {
        return Err(match rows.first() {
            Some(e) => format!(
                "not reachable: {}",
                e.error.as_deref().unwrap_or("it did not answer")
            ),
            None => "not probed: none of the endpoints reaches it".into(),
        });
    };
    if let Some(size) = row.db_size_bytes
        && size > options.max_db_size
    {
        return Err(format!(
            "not hashed: its database is {}, over max_db_size {}",
            human_bytes(size),
            human_bytes(options.max_db_size)
        ));
    }
    Endpoint::parse(&row.endpoint).map_err(|e| format!("{}: {e}", row.endpoint))
}

/// Connects (once per check) and reads the member's current revision from Status, checking that the endpoint
/// still answers as this member.
async fn current_revision(
    connector: &Connector,
    member: Id,
    endpoint: &Endpoint,
) -> Result<(i64, Client), String> {
    let client = connector
        .connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let status = within(connector.settings().command_timeout)
        .bound(client.maintenance_client().status())
        .await
        .map_err(|e| format!("Status: {e}"))?;
    let header = status.header().ok_or("Status answered without a header")?;
    if header.member_id() != member.0 {
        return Err(format!(
            "{} now answers as member {}",
            endpoint.url(),
            Id(header.member_id())
        ));
    }
    Ok((header.revision(), client))
}

/// A deadline `budget` from now.
fn within(budget: Duration) -> Deadline {
    Deadline::from_now_within(budget, Instant::now() + budget)
}

/// HashKV at `revision` on one member, bounded by `timeout` (`hash_timeout`).
async fn hash_at(voter: &Voter, revision: i64, timeout: Duration) -> MemberHash {
    let started = Instant::now();
    let outcome = within(timeout)
        .bound(voter.client.maintenance_client().hash_kv(revision))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        // Through a load balancer or after a reconnection another member could answer: its hash must not count
        // for this one.
        Ok(r) => match r.header().map(|h| h.member_id()) {
            Some(id) if id == voter.id.0 => {
                MemberHash::answered(r.hash(), r.compact_version(), seconds)
            }
            other => MemberHash::failed(
                format!(
                    "HashKV was answered by member {} through {}",
                    other.map_or_else(|| "(unnamed)".to_string(), |id| Id(id).to_string()),
                    voter.endpoint.url()
                ),
                Some(seconds),
            ),
        },
        Err(e) if e.message.contains("compacted") => MemberHash::compacted(
            format!("revision {revision} was compacted on this member meanwhile ({e})"),
            Some(seconds),
        ),
        Err(e) => {
            let why = match e.kind {
                FailureKind::Timeout => format!("HashKV {e} (hash_timeout)"),
                FailureKind::Auth => format!("HashKV refused (it needs the root role): {e}"),
                _ if e.message.contains("future revision") => {
                    format!("revision {revision} is in this member's future: it is behind ({e})")
                }
                _ => format!("HashKV failed: {e}"),
            };
            MemberHash::failed(why, Some(seconds))
        }
    }
}
