//! The KV hash consistency check as maintenance allows it: never while a defragmentation runs. HashKV walks the
//! member's whole database, and a defragmentation rewrites it while holding it locked: a hash asked meanwhile
//! waits for the defragmentation to end and holds up the cluster's view of that member. A defragmentation in
//! this process is kept apart by the cluster's member-work mutex (see the daemon); one by another runner (a
//! CronJob, another daemon) is seen through the maintenance lock it holds.

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::probe::consistency::{ConsistencyOptions, check};
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

/// The check, unless another runner defragments the cluster: then `Err` with who does.
pub async fn check_unless_defragmenting(
    view: &ClusterView,
    connector: &Connector,
    options: &ConsistencyOptions,
    lock_prefix: &str,
) -> Result<Consistency, String> {
    if let Some(holder) = defragmenting(connector, view, lock_prefix).await {
        return Err(format!("a defragmentation is running: {holder}"));
    }
    Ok(check(view, connector, options).await)
}
