//! The restore drill: a backup nobody restored is a hope. Restore the snapshot into a temporary directory with
//! `etcdutl snapshot restore` (or `etcdctl snapshot restore` where etcdutl is absent, as in etcd 3.4), start a
//! throwaway single-member etcd on a free loopback port, and check that it serves the revision, the key count and
//! the KV hash the sidecar recorded; then remove everything. How long it took is a recovery-time figure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::compress;
use super::snapshot::{self, KvCheck};

/// How to run etcd and its restore tool.
#[derive(Debug, Clone)]
pub struct DrillTools {
    pub etcd: PathBuf,
    /// `etcdutl` (3.5+) or `etcdctl` (3.4, with `ETCDCTL_API=3`).
    pub restore: PathBuf,
}

impl DrillTools {
    /// etcd as given; the restore tool beside it, else on the PATH: `etcdutl` first (etcd 3.6 removed
    /// `etcdctl snapshot restore`), then `etcdctl`.
    pub fn find(etcd: &Path) -> Result<DrillTools, DrillError> {
        let beside = |name: &str| {
            etcd.parent()
                .map(|dir| dir.join(name))
                .filter(|p| p.is_file())
        };
        let on_path = |name: &str| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        };
        let restore = ["etcdutl", "etcdctl"]
            .iter()
            .find_map(|n| beside(n).or_else(|| on_path(n)))
            .ok_or_else(|| {
                DrillError::Tools(
                    "neither etcdutl nor etcdctl found (beside etcd or on the PATH)".into(),
                )
            })?;
        Ok(DrillTools {
            etcd: etcd.to_path_buf(),
            restore,
        })
    }
}

#[derive(Debug, Error)]
pub enum DrillError {
    #[error("restore drill: {0}")]
    Tools(String),
    #[error("restore drill: {0}")]
    Io(String),
    #[error("restore drill: the restore failed: {0}")]
    Restore(String),
    #[error("restore drill: the restored member did not start: {0}")]
    Start(String),
    /// The restored data is not what the snapshot recorded: the backup is not good.
    #[error("restore drill: the restored member disagrees with the snapshot's sidecar: {0}")]
    Mismatch(String),
    #[error("restore drill: {0}")]
    Snapshot(#[from] super::bolt::SnapshotFileError),
}

/// What a drill found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillReport {
    pub revision: i64,
    pub key_count: Option<i64>,
    /// The KV hash was compared (false when the sidecar has none, or the compaction differs).
    pub hash_compared: bool,
    /// From the start of the restore to the checks passing.
    pub seconds: f64,
    pub restore_tool: String,
}

/// A directory removed, with everything in it, when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the scratch directories of drills whose process is gone (killed mid-drill, it could not clean up).
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("etcd-sentinel-drill-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A loopback port below Linux's ephemeral range (32768–60999), free when asked: a port from the ephemeral range
/// could be taken by any client's outgoing connection before etcd binds it. 28000–32767 is the top of that space;
/// the test harness keeps to 20000–27999, so a drill never takes the port of a test member that is about to
/// restart.
fn free_port(seed: u32) -> Option<u16> {
    const LOW: u32 = 28_000;
    const SPAN: u32 = 32_768 - LOW;
    (0..500u32).find_map(|i| {
        let port = (LOW + (seed.wrapping_mul(7919).wrapping_add(i * 104_729)) % SPAN) as u16;
        std::net::TcpListener::bind(("127.0.0.1", port))
            .ok()
            .map(|_| port)
    })
}

/// What the restored member must serve: the snapshot's revision and, when recorded, the source member's key count
/// and KV hash at it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub revision: i64,
    pub kv: Option<KvCheck>,
    /// The database's size, when a sidecar records it: a compressed snapshot may not decompress to more.
    pub size: Option<u64>,
}

/// Restores `snapshot` (decompressed first when it is a `.zst`, and that counts in the time it took) into a
/// scratch directory, starts it, checks it against `expected`, removes everything.
pub async fn drill(
    snapshot: &Path,
    expected: Expected,
    tools: &DrillTools,
) -> Result<DrillReport, DrillError> {
    let sidecar = &expected;
    let started = Instant::now();
    let raw = compress::readable_async(snapshot, expected.size).await?;
    let snapshot = raw.path.as_path();
    let seed = std::process::id() ^ (started.elapsed().as_nanos() as u32) ^ sidecar.revision as u32;
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "etcd-sentinel-drill-{}-{}",
        std::process::id(),
        sidecar.revision
    )));
    let _ = std::fs::remove_dir_all(&scratch.0);
    remove_orphans();
    std::fs::create_dir_all(&scratch.0)
        .map_err(|e| DrillError::Io(format!("{}: {e}", scratch.0.display())))?;
    // A bind race with another process is possible between finding the ports and etcd binding them: try anew.
    let mut last_error = String::new();
    for attempt in 0..3u32 {
        let (Some(client_port), Some(peer_port)) = (
            free_port(seed + attempt * 2),
            free_port(seed + attempt * 2 + 1),
        ) else {
            return Err(DrillError::Io("no free loopback port".into()));
        };
        if client_port == peer_port {
            continue;
        }
        let data = scratch.0.join(format!("data-{attempt}"));
        let peer = format!("http://127.0.0.1:{peer_port}");
        let client_url = format!("http://127.0.0.1:{client_port}");
        restore(tools, snapshot, &data, &peer).await?;
        match serve_and_check(tools, &data, &peer, &client_url, sidecar).await {
            Ok((key_count, hash_compared)) => {
                return Ok(DrillReport {
                    revision: sidecar.revision,
                    key_count,
                    hash_compared,
                    seconds: started.elapsed().as_secs_f64(),
                    restore_tool: tools
                        .restore
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
            Err(DrillError::Start(e)) if e.contains("address already in use") => last_error = e,
            Err(e) => return Err(e),
        }
    }
    Err(DrillError::Start(last_error))
}

async fn restore(
    tools: &DrillTools,
    snapshot: &Path,
    data: &Path,
    peer: &str,
) -> Result<(), DrillError> {
    let out = tokio::process::Command::new(&tools.restore)
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg("--data-dir")
        .arg(data)
        .args(["--name", "drill", "--initial-cluster"])
        .arg(format!("drill={peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(peer)
        .env("ETCDCTL_API", "3")
        .output()
        .await
        .map_err(|e| DrillError::Tools(format!("{}: {e}", tools.restore.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(DrillError::Restore(
            err.lines().last().unwrap_or("").to_string(),
        ))
    }
}

/// Starts the restored member and checks it: (key count, whether the hash was compared).
async fn serve_and_check(
    tools: &DrillTools,
    data: &Path,
    peer: &str,
    client_url: &str,
    sidecar: &Expected,
) -> Result<(Option<i64>, bool), DrillError> {
    let log_path = data.with_extension("log");
    let log = std::fs::File::create(&log_path).map_err(|e| DrillError::Io(e.to_string()))?;
    let mut command = tokio::process::Command::new(&tools.etcd);
    // The throwaway etcd dies with us, even if we are killed (SIGKILL skips `kill_on_drop`): a drill must never
    // leave an etcd running.
    // SAFETY: prctl is async-signal-safe and only affects the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command
        .args(["--name", "drill", "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .arg("--initial-cluster")
        .arg(format!("drill={peer}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DrillError::Tools(format!("{}: {e}", tools.etcd.display())))?;
    let checked = check(client_url, sidecar, &log_path).await;
    let _ = child.kill().await;
    checked
}

async fn check(
    client_url: &str,
    sidecar: &Expected,
    log: &Path,
) -> Result<(Option<i64>, bool), DrillError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    let client = loop {
        let attempt = async {
            let mut c = etcd_client::Client::connect([client_url], Some(options.clone()))
                .await
                .ok()?;
            c.status().await.ok()?;
            Some(c)
        };
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            break c;
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log)
                .unwrap_or_default()
                .to_lowercase();
            let last = text
                .lines()
                .rev()
                .find(|l| l.contains("error") || l.contains("fatal"));
            return Err(DrillError::Start(
                last.unwrap_or("no answer within 30s").to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rev = sidecar.revision;
    let status = client
        .maintenance_client()
        .status()
        .await
        .map_err(|e| DrillError::Start(e.to_string()))?;
    let now = status.header().map_or(0, |h| h.revision());
    if now != rev {
        return Err(DrillError::Mismatch(format!(
            "it serves revision {now}, the snapshot holds {rev}"
        )));
    }
    // The same questions the source member was asked right after the stream.
    let served = snapshot::kv_check(&client, rev)
        .await
        .ok_or_else(|| DrillError::Start(format!("no HashKV and key count at revision {rev}")))?;
    let Some(recorded) = sidecar.kv else {
        return Ok((Some(served.key_count), false));
    };
    if served.key_count != recorded.key_count {
        return Err(DrillError::Mismatch(format!(
            "{} keys at revision {rev}, the source member had {}",
            served.key_count, recorded.key_count
        )));
    }
    if served.compact_revision != recorded.compact_revision {
        // The hash covers the keys since the compaction: with another compaction it says nothing.
        return Ok((Some(served.key_count), false));
    }
    if served.hash != recorded.hash {
        return Err(DrillError::Mismatch(format!(
            "KV hash {} at revision {rev}, the source member had {}",
            served.hash, recorded.hash
        )));
    }
    Ok((Some(served.key_count), true))
}
