//! The KV hash consistency check as maintenance allows it: never while a defragmentation runs. HashKV walks the
//! member's whole database, and a defragmentation rewrites it while holding it locked: a hash asked meanwhile
//! waits for the defragmentation to end and holds up the cluster's view of that member. A defragmentation in
//! this process is kept apart by the cluster's member-work mutex (see the daemon); one by another runner (a
//! CronJob, another daemon) is seen through the maintenance lock it holds.

use std::collections::BTreeSet;

use etcd_client::Client;

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::probe::consistency::{Busy, ConsistencyOptions, check};
use crate::view::{ClusterView, Consistency};

use super::lock;

/// Who holds the maintenance lock to defragment the cluster now, if anyone, asked through `client`. `Err` when
/// the lock could not be read there.
async fn holder_defragmenting(
    client: &mut Client,
    prefix: &str,
    timeout: std::time::Duration,
) -> Result<Option<String>, String> {
    match tokio::time::timeout(timeout, lock::holder(client, prefix)).await {
        Ok(Ok(Some(holder))) if holder.starts_with("defrag") => Ok(Some(holder)),
        Ok(Ok(_)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// A member is busy while a defragmentation holds the maintenance lock (the lock does not say which member it is
/// on, so every member is). The lock is read through one member that answers, the leader first, kept for the
/// whole check; a member that did not answer is not asked again (a frozen one would cost a command timeout at
/// every member of the check). When no member can read the lock the answer is "not busy": the check goes on, and
/// a hash that meets a defragmentation only waits, bounded by its timeout.
struct DefragLock<'a> {
    connector: &'a Connector,
    view: &'a ClusterView,
    prefix: &'a str,
    reader: tokio::sync::Mutex<LockReader>,
}

/// The member the lock is read through (its URL and connection), and the URLs that did not answer.
type LockReader = (Option<(String, Client)>, BTreeSet<String>);

impl DefragLock<'_> {
    /// Healthy endpoints of the cluster, the leader's first.
    fn candidates(&self) -> Vec<String> {
        let mut rows: Vec<_> = self
            .view
            .endpoints
            .iter()
            .filter(|e| e.healthy && !self.view.is_foreign(e))
            .collect();
        rows.sort_by_key(|e| !e.is_leader);
        rows.into_iter().map(|e| e.endpoint.clone()).collect()
    }
}

impl Busy for DefragLock<'_> {
    async fn busy(&self, _member: Id) -> Option<String> {
        let timeout = self.connector.settings().command_timeout;
        let mut reader = self.reader.lock().await;
        let (client, failed) = &mut *reader;
        if let Some((url, c)) = client.as_mut() {
            match holder_defragmenting(c, self.prefix, timeout).await {
                Ok(found) => return found.map(|h| format!("a defragmentation is running: {h}")),
                Err(e) => {
                    tracing::debug!(
                        cluster = self.view.cluster,
                        endpoint = url.as_str(),
                        "cannot read the maintenance lock: {e}"
                    );
                    failed.insert(url.clone());
                    *client = None;
                }
            }
        }
        for url in self.candidates() {
            if failed.contains(&url) {
                continue;
            }
            let Ok(endpoint) = Endpoint::parse(&url) else {
                continue;
            };
            let connected = tokio::time::timeout(timeout, self.connector.connect(&endpoint)).await;
            let Ok(Ok(mut c)) = connected else {
                failed.insert(url);
                continue;
            };
            match holder_defragmenting(&mut c, self.prefix, timeout).await {
                Ok(found) => {
                    *client = Some((url, c));
                    return found.map(|h| format!("a defragmentation is running: {h}"));
                }
                Err(e) => {
                    tracing::debug!(
                        cluster = self.view.cluster,
                        endpoint = url,
                        "cannot read the maintenance lock: {e}"
                    );
                    failed.insert(url);
                }
            }
        }
        None
    }
}

/// The check, unless another runner defragments the cluster: then `Err` with who does. A defragmentation that
/// starts during the check leaves the members not hashed yet out (the result is then unknown).
pub async fn check_unless_defragmenting(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    lock_prefix: &str,
) -> Result<Consistency, String> {
    let started = std::time::Instant::now();
    let lock = DefragLock {
        connector,
        view,
        prefix: lock_prefix,
        reader: tokio::sync::Mutex::new((None, BTreeSet::new())),
    };
    if let Some(why) = lock.busy(Id(0)).await {
        return Err(why);
    }
    let mut result = check(view, connector, options, &lock).await;
    // The lock's first read is part of what the check cost.
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
