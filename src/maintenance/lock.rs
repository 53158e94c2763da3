//! One maintenance runner per cluster: a lock in the monitored etcd itself, held through a lease that is kept
//! alive while the runner works. Two daemons, or a daemon and a CronJob, that watch the same cluster never
//! defragment it (or take a scheduled snapshot of it) at the same time, whatever names they give it.
//!
//! etcd's lock API: the lock's key is `<prefix>/lock/<lease in hex>`, the oldest such key holds it, and it goes
//! when the lease does (revoked, or expired because its holder died). Beside it each runner puts who it is under
//! `<prefix>/owners/<lease in hex>`, on the same lease, so a runner that finds the lock taken can say who has it.
//! If the lease is lost while held (the keep-alives stopped reaching etcd for a whole TTL), the holder must stop
//! before its next step: another runner may have the lock by now.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use etcd_client::{Client, GetOptions, LockOptions, PutOptions, SortOrder, SortTarget};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the lock lives and how long it is waited for.
#[derive(Debug, Clone, PartialEq)]
pub struct LockSettings {
    /// The key prefix, e.g. `/etcd-sentinel/maintenance`.
    pub prefix: String,
    /// The lease's TTL: how long a dead holder keeps the lock.
    pub ttl: Duration,
    /// How long to wait for a lock held by another runner; zero gives up at once.
    pub wait: Duration,
}

pub const DEFAULT_PREFIX: &str = crate::settings::DEFAULT_LOCK_PREFIX;
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            prefix: DEFAULT_PREFIX.into(),
            ttl: DEFAULT_TTL,
            wait: Duration::ZERO,
        }
    }
}

/// Who holds a lock: what the holder wrote beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// What runs: `defrag` or `snapshot`, and of which cluster name.
    pub task: String,
    pub host: String,
    pub pid: u32,
    #[serde(with = "crate::units::unix_seconds_serde")]
    pub since: SystemTime,
}

impl Owner {
    pub fn me(task: &str) -> Self {
        Owner {
            task: task.to_string(),
            host: hostname(),
            pid: std::process::id(),
            since: SystemTime::now(),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = chrono::DateTime::<chrono::Utc>::from(self.since).format("%Y-%m-%dT%H:%M:%SZ");
        write!(
            f,
            "{} on {} (pid {}) since {since}",
            self.task, self.host, self.pid
        )
    }
}

fn hostname() -> String {
    // The kernel's node name (a pod's name in Kubernetes): what an operator looks for.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the maintenance lock {key} is held by {holder}{}", waited_text(*.waited))]
    Held {
        key: String,
        holder: String,
        waited: Duration,
    },
    #[error("the maintenance lock {key} could not be taken: {cause}")]
    Etcd { key: String, cause: String },
    /// The cluster refuses every write (a NOSPACE alarm): no lock can be written, by anyone.
    #[error(
        "the maintenance lock {key} cannot be written: the cluster refuses writes (NOSPACE) until space is freed"
    )]
    NoSpace { key: String },
}

fn waited_text(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(
            " (waited {})",
            humantime::format_duration(Duration::from_secs(waited.as_secs()))
        )
    }
}

/// A held lock. Dropping it without [`release`](MaintenanceLock::release) leaves the lease to expire (the TTL).
pub struct MaintenanceLock {
    /// Every member's connection, the one the lock was taken through first: the release goes through whichever
    /// answers.
    clients: Vec<Client>,
    lease: i64,
    key: Vec<u8>,
    lost: watch::Receiver<Option<String>>,
    /// When the last renewal etcd confirmed was sent (the lease runs from there).
    renewed: Arc<Mutex<Instant>>,
    ttl: Duration,
    stop_keeping: CancellationToken,
}

impl Drop for MaintenanceLock {
    fn drop(&mut self) {
        self.stop_keeping.cancel();
    }
}

fn lock_name(prefix: &str) -> String {
    format!("{}/lock", prefix.trim_end_matches('/'))
}

fn owner_key(prefix: &str, lease: i64) -> String {
    format!("{}/owners/{lease:x}", prefix.trim_end_matches('/'))
}

fn describe(e: &etcd_client::Error) -> String {
    crate::etcd::error::describe_etcd_error(e)
}

/// Who holds the lock now, as its holder described itself; `None` when nobody does.
pub async fn holder(client: &mut Client, prefix: &str) -> Result<Option<String>, String> {
    let name = format!("{}/", lock_name(prefix));
    let oldest = client
        .get(
            name.as_bytes(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1),
            ),
        )
        .await
        .map_err(|e| describe(&e))?;
    let Some(kv) = oldest.kvs().first() else {
        return Ok(None);
    };
    let lease = kv.lease();
    let owner = client
        .get(owner_key(prefix, lease), None)
        .await
        .map_err(|e| describe(&e))?;
    let described = owner
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice::<Owner>(kv.value()).ok())
        .map(|o| o.to_string());
    Ok(Some(described.unwrap_or_else(|| {
        format!("an unknown runner (lease {lease:x})")
    })))
}

impl MaintenanceLock {
    /// Takes the lock, waiting up to `settings.wait` for another holder to finish. `clients` are connections to
    /// the cluster's members: the first is used, the others when it stops answering (it may be the member being
    /// defragmented, or a member that died).
    pub async fn acquire(
        clients: Vec<Client>,
        settings: &LockSettings,
        owner: Owner,
    ) -> Result<Self, LockError> {
        let key = lock_name(&settings.prefix);
        let fail = |cause: String| {
            if cause.contains("space exceeded") {
                LockError::NoSpace { key: key.clone() }
            } else {
                LockError::Etcd {
                    key: key.clone(),
                    cause,
                }
            }
        };
        let held = |holder: String, waited| LockError::Held {
            key: key.clone(),
            holder,
            waited,
        };
        // The first member that answers: one may be down, frozen or (for a learner) refuse.
        let mut chosen = None;
        let mut last_error = "no member to reach".to_string();
        for c in &clients {
            let mut c = c.clone();
            match tokio::time::timeout(Duration::from_secs(5), holder(&mut c, &settings.prefix))
                .await
            {
                Ok(Ok(h)) => {
                    chosen = Some((c, h));
                    break;
                }
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = "no answer within 5s".into(),
            }
        }
        let Some((mut client, holder_now)) = chosen else {
            return Err(fail(last_error));
        };
        // Not waiting: a lock already held is refused before we queue for it. A read, so it works under NOSPACE
        // too: a holder that took the lock before the cluster filled up is still named.
        if let Some(h) = holder_now.clone()
            && settings.wait.is_zero()
        {
            return Err(held(h, Duration::ZERO));
        }
        let ttl = settings.ttl.as_secs().max(5) as i64;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| match (fail(describe(&e)), holder_now) {
                (LockError::NoSpace { .. }, Some(h)) => held(h, Duration::ZERO),
                (e, _) => e,
            })?
            .id();
        let revoke = |mut client: Client| async move {
            // Best effort: if this fails too, the lease expires within its TTL.
            let _ = tokio::time::timeout(Duration::from_secs(5), client.lease_revoke(lease)).await;
        };
        let described = serde_json::to_vec(&owner).unwrap_or_default();
        if let Err(e) = client
            .put(
                owner_key(&settings.prefix, lease),
                described,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
        {
            revoke(client).await;
            return Err(fail(describe(&e)));
        }
        // A lock that is free answers at once; one waited for answers when its holder lets go. Queueing lasts at
        // least a round trip, so a wait of zero still takes a free lock.
        let patience = settings.wait.max(Duration::from_secs(5));
        let stop_keeping = CancellationToken::new();
        let (lost_tx, lost) = watch::channel(None);
        // Granted just now (a little before: the grant's round trip is not counted).
        let renewed = Arc::new(Mutex::new(Instant::now()));
        let ttl = Duration::from_secs(ttl as u64);
        // Until the lock is handed over, a drop of this future (a stop asked for while it waits) stops the
        // keep-alive too, so the lease, and anything queued on it, expires within its TTL.
        let keeping = stop_keeping.clone().drop_guard();
        // The lease must outlive a long wait: keep it alive from now on, through the member that answered first.
        let ordered: Vec<Client> = std::iter::once(client.clone())
            .chain(clients.iter().cloned())
            .collect();
        tokio::spawn(keep_alive(
            ordered,
            lease,
            ttl,
            renewed.clone(),
            lost_tx,
            stop_keeping.clone(),
        ));
        let taken = tokio::time::timeout(
            patience,
            client.lock(key.clone(), Some(LockOptions::new().with_lease(lease))),
        )
        .await;
        match taken {
            Ok(Ok(response)) => Ok(MaintenanceLock {
                stop_keeping: keeping.disarm(),
                clients: std::iter::once(client).chain(clients).collect(),
                lease,
                key: response.key().to_vec(),
                lost,
                renewed,
                ttl,
            }),
            Ok(Err(e)) => {
                stop_keeping.cancel();
                revoke(client).await;
                Err(fail(describe(&e)))
            }
            Err(_) => {
                stop_keeping.cancel();
                let who = holder(&mut client, &settings.prefix)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "another runner".into());
                revoke(client).await;
                Err(held(who, settings.wait))
            }
        }
    }

    /// The lock's key in etcd (`<prefix>/lock/<lease>`).
    pub fn key(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    /// Why the lock may be lost: etcd said the lease expired, or no renewal was confirmed for five sixths of the
    /// TTL (the lease may run out before the next step ends: another runner could have the lock by then).
    pub fn lost(&self) -> Option<String> {
        if let Some(why) = self.lost.borrow().clone() {
            return Some(why);
        }
        let since = self
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        (since > self.ttl - self.ttl / 6).then(|| {
            format!(
                "the lock's lease {:x} was not renewed for {}s (TTL {}s)",
                self.lease,
                since.as_secs(),
                self.ttl.as_secs()
            )
        })
    }

    /// Lets go: the lock's key and the owner record go with the lease.
    /// Lets go: revoking the lease deletes the lock's key and the owner record with it. Through the first member
    /// that answers (the one the lock was taken through may be the one that died); if none does, the lease
    /// expires within its TTL.
    pub async fn release(self) {
        self.stop_keeping.cancel();
        for client in &self.clients {
            let mut client = client.clone();
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(self.lease)).await
            {
                return;
            }
        }
        tracing::warn!(
            lease = format!("{:x}", self.lease),
            "the maintenance lock's lease could not be revoked (no member answered, or it had expired): the lock \
             goes when the lease does"
        );
    }
}

/// Renews the lease every third of its TTL, through whichever member answers: an attempt that fails or stalls
/// (the member it went to is being defragmented, or died) is retried at once through the next member, each
/// bounded by a sixth of the TTL. Records when the last renewal that etcd confirmed was sent, and reports the
/// lease lost when etcd says it expired.
async fn keep_alive(
    clients: Vec<Client>,
    lease: i64,
    ttl: Duration,
    renewed: Arc<Mutex<Instant>>,
    lost: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let every = ttl / 3;
    let attempt_limit = ttl / 6;
    let mut next_client = 0usize;
    let mut wait = every;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let mut client = clients[next_client % clients.len()].clone();
        let sent = Instant::now();
        let answer = tokio::time::timeout(attempt_limit, async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
        })
        .await;
        match answer {
            Ok(Ok(Some(left))) if left > 0 => {
                *renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent;
                wait = every;
            }
            Ok(Ok(_)) => {
                lost.send_replace(Some(format!("the lock's lease {lease:x} expired")));
                return;
            }
            Ok(Err(_)) | Err(_) => {
                // Through the next member, at once (a short pause so that a cluster that is down is not
                // hammered).
                next_client += 1;
                wait = Duration::from_millis(200);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_the_prefix() {
        assert_eq!(
            lock_name("/etcd-sentinel/maintenance/"),
            "/etcd-sentinel/maintenance/lock"
        );
        assert_eq!(owner_key("/x", 0x1f), "/x/owners/1f");
    }

    #[test]
    fn an_owner_reads_as_who_and_since_when() {
        let owner = Owner {
            task: "defrag of prod".into(),
            host: "node-1".into(),
            pid: 42,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        assert_eq!(
            owner.to_string(),
            "defrag of prod on node-1 (pid 42) since 2023-11-14T22:13:20Z"
        );
        let back: Owner = serde_json::from_slice(&serde_json::to_vec(&owner).unwrap()).unwrap();
        assert_eq!(back, owner);
        let e = LockError::Held {
            key: "/p/lock".into(),
            holder: owner.to_string(),
            waited: Duration::from_secs(30),
        };
        assert!(e.to_string().ends_with("(waited 30s)"), "{e}");
    }
}
