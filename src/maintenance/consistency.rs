//! The KV hash consistency check as maintenance allows it: never while a defragmentation runs. HashKV walks the
//! member's whole database, and a defragmentation rewrites it while holding it locked: a hash asked meanwhile
//! waits for the defragmentation to end and holds up the cluster's view of that member. A defragmentation in
//! this process is kept apart by the cluster's member-work mutex (see the daemon); one by another runner (a
//! CronJob, another daemon) is seen through the maintenance lock it holds.

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::probe::consistency::{Busy, ConsistencyOptions, check};
use crate::view::{ClusterView, Consistency};

use super::lock;

/// Who holds the maintenance lock to defragment the cluster now, if anyone. Asked of the first healthy member;
/// when the lock cannot be read the answer is `None` (the check goes on: a hash that meets a defragmentation
/// only waits, bounded by its timeout).
pub async fn defragmenting(
    connector: &Connector,
    view: &ClusterView,
    prefix: &str,
) -> Option<String> {
    let endpoint = view
        .endpoints
        .iter()
        .filter(|e| e.healthy && !view.is_foreign(e))
        .find_map(|e| Endpoint::parse(&e.endpoint).ok())?;
    let mut client = connector.connect(&endpoint).await.ok()?;
    let timeout = connector.settings().command_timeout;
    match tokio::time::timeout(timeout, lock::holder(&mut client, prefix)).await {
        Ok(Ok(Some(holder))) if holder.starts_with("defrag") => Some(holder),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            tracing::debug!(
                cluster = view.cluster,
                "cannot read the maintenance lock: {e}"
            );
            None
        }
        Err(_) => None,
    }
}

/// A member is busy while a defragmentation holds the maintenance lock (the lock does not say which member it is
/// on, so every member is).
struct DefragLock<'a> {
    connector: &'a Connector,
    view: &'a ClusterView,
    prefix: &'a str,
}

impl Busy for DefragLock<'_> {
    async fn busy(&self, _member: Id) -> Option<String> {
        defragmenting(self.connector, self.view, self.prefix)
            .await
            .map(|holder| format!("a defragmentation is running: {holder}"))
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
    let lock = DefragLock {
        connector,
        view,
        prefix: lock_prefix,
    };
    if let Some(why) = lock.busy(Id(0)).await {
        return Err(why);
    }
    Ok(check(view, connector, options, &lock).await)
}
