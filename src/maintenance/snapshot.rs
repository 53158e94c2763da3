//! Saving a snapshot the way a careful operator would: stream Maintenance.Snapshot to the end (etcd sends the
//! SHA-256 of the database as the last 32 bytes), write it to `NAME.part` in the destination while hashing it,
//! fsync, check the size and the hash, read the revision and raft index from the file itself, and only then rename
//! it to its final name, write its sidecar the same way and fsync the directory. Any failure — a stream error, the
//! member dying mid-stream, a full disk, a hash mismatch, the save being cancelled — leaves neither a `.part` nor a
//! final file behind, and never touches another snapshot. Memory is flat whatever the database size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::bolt::{self, SnapshotFileError, TRAILER, hex};
use super::compress::{Compressor, ZSTD_SUFFIX};
use crate::config::Compression;
use crate::etcd::error::ProbeError;
use crate::files::RemoveOnDrop;
use crate::id::Id;

/// Names end so: `<cluster>-<UTC time>-rev<revision>.db`, and the sidecar beside it with `.json`.
pub const SUFFIX: &str = ".db";
const PART: &str = ".part";

/// Why a save failed, by reason (the `reason` label of `snapshot_failures_total`).
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("destination {dir}: {cause}")]
    Destination { dir: String, cause: String },
    #[error("snapshot stream from {member}: {error}")]
    Stream { member: String, error: ProbeError },
    #[error("writing {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error(transparent)]
    Verify(#[from] SnapshotFileError),
}

impl SnapshotError {
    /// A short, bounded word for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            SnapshotError::Destination { .. } => "destination",
            SnapshotError::Stream { .. } => "stream",
            SnapshotError::Write { cause, .. } if cause.raw_os_error() == Some(28) => "disk_full",
            SnapshotError::Write { .. } => "write",
            SnapshotError::Verify(_) => "verify",
        }
    }
}

/// The member a snapshot is read from, as the sidecar records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceMember {
    pub member_id: Id,
    pub name: String,
    pub endpoint: String,
    pub version: String,
}

/// One member of the cluster when the snapshot was taken: what a restore plan needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: Id,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The sidecar written beside each snapshot: `<snapshot>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The file it describes (its name, in the same directory).
    pub file: String,
    pub cluster: String,
    pub cluster_id: Id,
    pub source: SourceMember,
    pub members: Vec<MemberRecord>,
    /// Read from the snapshot itself.
    pub revision: i64,
    pub raft_index: u64,
    /// Bytes of the snapshot as etcd sent it (database and trailer).
    pub size: u64,
    /// SHA-256 of the database: the trailer etcd sent, checked.
    pub sha256_etcd: String,
    /// SHA-256 of the stored file (with compression, of the compressed file).
    pub sha256_file: String,
    /// `none` (or `zstd` when compressed).
    pub compression: String,
    /// What the source member said of its key space at `revision`, right after the stream, for a restore drill to
    /// compare with; `None` when it could not say (it compacted past the revision meanwhile, or did not answer).
    #[serde(default)]
    pub kv: Option<KvCheck>,
    #[serde(with = "crate::units::unix_seconds_serde")]
    pub started_at: SystemTime,
    pub duration_seconds: f64,
}

/// A sidecar is a few KiB; one larger is not ours.
const MAX_SIDECAR_BYTES: u64 = 1024 * 1024;

/// Reads the sidecar at `path`: `Ok(None)` when there is none; an error for one that is not a small regular file
/// (a FIFO would block, a huge file be read whole) or not a sidecar.
pub fn read_sidecar(path: &Path) -> Result<Option<Sidecar>, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(_) => {}
    }
    let bytes = crate::files::read_small_file(path, MAX_SIDECAR_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: not a sidecar of this tool: {e}", path.display()))
}

/// The source member's HashKV and key count at the snapshot's revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCheck {
    /// etcd's HashKV at `revision`: a CRC-32C of the keys and values between `compact_revision` and it.
    pub hash: u32,
    /// The compaction the hash starts from: a drill compares hashes only when the restored member has the same.
    pub compact_revision: i64,
    /// Keys at `revision`.
    pub key_count: i64,
}

/// How long the key-space check after the stream may take: HashKV walks the whole key space.
const KV_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// HashKV and a key count at `revision`, on the member the snapshot came from.
pub async fn kv_check(client: &etcd_client::Client, revision: i64) -> Option<KvCheck> {
    let ask = async {
        let hash = client.maintenance_client().hash_kv(revision).await.ok()?;
        let count = client
            .kv_client()
            .get(
                "",
                Some(
                    etcd_client::GetOptions::new()
                        .with_all_keys()
                        .with_count_only()
                        .with_revision(revision),
                ),
            )
            .await
            .ok()?;
        Some(KvCheck {
            hash: hash.hash(),
            compact_revision: hash.compact_version(),
            key_count: count.count(),
        })
    };
    tokio::time::timeout(KV_CHECK_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// What a save asks for.
pub struct SaveRequest<'a> {
    pub cluster: &'a str,
    pub cluster_id: Id,
    pub dir: &'a Path,
    pub source: SourceMember,
    pub members: Vec<MemberRecord>,
    pub compression: Compression,
}

impl<'a> SaveRequest<'a> {
    /// A request to save from `source`, one of `view`'s endpoints, with the members as the view lists them.
    pub fn from_view(
        cluster: &'a str,
        dir: &'a Path,
        view: &crate::view::ClusterView,
        source: &crate::view::EndpointState,
    ) -> Self {
        SaveRequest {
            cluster,
            cluster_id: view.cluster_id.unwrap_or_default(),
            dir,
            source: SourceMember {
                member_id: source.member_id.unwrap_or_default(),
                name: source.member_name.clone().unwrap_or_default(),
                endpoint: source.endpoint.clone(),
                version: source.version.clone().unwrap_or_default(),
            },
            members: view
                .members
                .iter()
                .map(|m| MemberRecord {
                    member_id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.is_learner,
                })
                .collect(),
            compression: Compression::None,
        }
    }
}

/// A saved, verified snapshot.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: PathBuf,
    pub sidecar_path: PathBuf,
    pub sidecar: Sidecar,
}

/// `20261201T200746Z`: sortable, and without the colons some tools and object stores dislike.
pub fn compact_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Hashes everything but the last 32 bytes seen so far: the stream's end, and so its trailer, is known only when
/// the stream ends.
struct LaggingHash {
    hasher: Context,
    /// Of every byte, trailer included: the stored file's hash when it is not compressed (a compressed file's is
    /// taken as it is written).
    whole: Option<Context>,
    tail: Vec<u8>,
    total: u64,
}

impl LaggingHash {
    fn new(whole: bool) -> Self {
        LaggingHash {
            hasher: Context::new(&SHA256),
            whole: whole.then(|| Context::new(&SHA256)),
            tail: Vec::with_capacity(2 * TRAILER as usize),
            total: 0,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if let Some(whole) = &mut self.whole {
            whole.update(chunk);
        }
        let keep = TRAILER as usize;
        if chunk.len() >= keep {
            // What was held back, and all of this chunk but its last 32 bytes, is database: hashed in place,
            // without copying the chunk.
            let cut = chunk.len() - keep;
            self.hasher.update(&self.tail);
            self.hasher.update(&chunk[..cut]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[cut..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > keep {
                let cut = self.tail.len() - keep;
                self.hasher.update(&self.tail[..cut]);
                self.tail.drain(..cut);
            }
        }
    }
}

/// Streams a snapshot from `client` (connected to the source member) into `request.dir`, verified. `progress` is
/// told the bytes written so far (and the total when etcd says it).
/// Whether snapshots can be written into `dir` now: a directory this process can create files in. For a caller
/// that must know before it starts anything else (a defragmentation takes its lock first).
pub fn check_destination(dir: &Path) -> Result<(), SnapshotError> {
    let destination = |cause: String| SnapshotError::Destination {
        dir: dir.display().to_string(),
        cause,
    };
    if !dir.is_dir() {
        return Err(destination("not a directory (create it first)".into()));
    }
    tempfile::Builder::new()
        .prefix(".etcd-sentinel-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| destination(format!("cannot create a file there: {e}")))
}

pub async fn save(
    client: &etcd_client::Client,
    request: SaveRequest<'_>,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Saved, SnapshotError> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    let dir = request.dir;
    let shown_dir = dir.display().to_string();
    let destination = |cause: String| SnapshotError::Destination {
        dir: shown_dir.clone(),
        cause,
    };
    if !dir.is_dir() {
        return Err(destination("not a directory (create it first)".into()));
    }
    let stem = format!("{}-{}", request.cluster, compact_utc(started_at));
    let part_path = dir.join(format!("{stem}{SUFFIX}{PART}"));
    // Created before the stream starts: a destination that cannot be written is refused before etcd sends a byte.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part_path)
        .map_err(|e| destination(format!("cannot create {}: {e}", part_path.display())))?;
    let mut part = RemoveOnDrop::new(part_path.clone());
    // Compressed as it streams, from the same bytes that are hashed; kept only once the hash checks out.
    let mut compressor = match request.compression {
        Compression::None => None,
        Compression::Zstd => {
            let path = dir.join(format!("{stem}{SUFFIX}{ZSTD_SUFFIX}{PART}"));
            Some(
                Compressor::start(path.clone())
                    .map_err(|e| destination(format!("cannot create {}: {e}", path.display())))?,
            )
        }
    };
    let streamed = stream_into(
        client,
        &request.source,
        file,
        &part_path,
        compressor.as_mut(),
        &mut progress,
    )
    .await;
    let verified = streamed.and_then(|(hash, written)| {
        let sha256_file = hash
            .whole
            .as_ref()
            .map(|w| hex(w.clone().finish().as_ref()))
            .unwrap_or_default();
        verify_streamed(&part_path, hash, written).map(|facts| (facts, sha256_file))
    });
    let (facts, sha256_file) = match verified {
        Ok(v) => v,
        Err(e) => {
            // Its file is gone before the error is reported.
            if let Some(c) = compressor {
                c.abort().await;
            }
            return Err(e);
        }
    };
    let streamed = clock.elapsed();
    // Asked at once: the longer after the stream, the likelier a compaction past the revision makes it unanswerable.
    let kv = kv_check(client, facts.revision).await;
    let raw_name = format!("{stem}-rev{}{SUFFIX}", facts.revision);
    let (name, sha256_file) = match compressor {
        None => (raw_name, sha256_file),
        Some(compressor) => {
            let shown = compressor.path().display().to_string();
            let (zst_guard, compressed) = compressor
                .finish()
                .await
                .map_err(|cause| SnapshotError::Write { path: shown, cause })?;
            // From here the compressed file is the one to keep or clean up; the raw one goes now.
            part = zst_guard;
            (format!("{raw_name}{ZSTD_SUFFIX}"), compressed)
        }
    };
    tracing::debug!(
        streamed_and_verified = streamed.as_secs_f64(),
        then_compressed_and_checked = (clock.elapsed() - streamed).as_secs_f64(),
        "snapshot phases (seconds)"
    );
    let stored_part = part.path.clone();
    let final_path = dir.join(&name);
    let sidecar = Sidecar {
        file: name.clone(),
        cluster: request.cluster.to_string(),
        cluster_id: request.cluster_id,
        source: request.source,
        members: request.members,
        revision: facts.revision,
        raft_index: facts.raft_index,
        size: facts.size,
        sha256_etcd: facts.sha256.clone(),
        sha256_file,
        compression: <&str>::from(request.compression).to_string(),
        kv,
        started_at,
        duration_seconds: clock.elapsed().as_secs_f64(),
    };
    let write_error = |path: &Path| {
        let path = path.display().to_string();
        move |cause| SnapshotError::Write { path, cause }
    };
    crate::files::rename_no_replace(&stored_part, &final_path).map_err(write_error(&final_path))?;
    part.path = final_path.clone();
    let sidecar_path = dir.join(format!("{name}.json"));
    // Without its sidecar the file would not be recognised as ours: if it cannot be written, `part` removes
    // the snapshot too.
    write_sidecar(&sidecar, &sidecar_path)?;
    sync_dir(dir).map_err(write_error(dir))?;
    part.keep = true;
    Ok(Saved {
        path: final_path,
        sidecar_path,
        sidecar,
    })
}

/// Streams into `file` while hashing, and hands every byte to the compressor when there is one.
async fn stream_into(
    client: &etcd_client::Client,
    source: &SourceMember,
    mut file: File,
    path: &Path,
    mut compressor: Option<&mut Compressor>,
    progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<(LaggingHash, u64), SnapshotError> {
    let stream_error = |e: &etcd_client::Error| SnapshotError::Stream {
        member: format!("{} ({})", source.name, source.endpoint),
        error: crate::etcd::error::from_etcd(e),
    };
    let write_error = |cause| SnapshotError::Write {
        path: path.display().to_string(),
        cause,
    };
    let mut stream = client
        .maintenance_client()
        .snapshot()
        .await
        .map_err(|e| stream_error(&e))?;
    // The stored file's hash is the raw file's without compression; the compressor takes its own.
    let mut hash = LaggingHash::new(compressor.is_none());
    // Read to the end: the trailer arrives after a message that already says `remaining_bytes == 0`.
    while let Some(message) = stream.message().await.map_err(|e| stream_error(&e))? {
        let blob = message.blob();
        file.write_all(blob).map_err(write_error)?;
        hash.update(blob);
        if let Some(c) = compressor.as_mut() {
            c.write(blob).await.map_err(|cause| SnapshotError::Write {
                path: c.path().display().to_string(),
                cause,
            })?;
        }
        let remaining = message.remaining_bytes();
        progress(hash.total, Some(hash.total + remaining));
    }
    // The raw file is kept only when not compressing; otherwise it is read once more (its revision) and deleted.
    if compressor.is_none() {
        file.sync_all().map_err(write_error)?;
    }
    let written = hash.total;
    Ok((hash, written))
}

/// Checks what was streamed (size, the hash computed while writing against the trailer), then reads the revision
/// from the file.
fn verify_streamed(
    path: &Path,
    hash: LaggingHash,
    written: u64,
) -> Result<bolt::SnapshotFacts, SnapshotError> {
    let shown = path.display().to_string();
    if written < 512 + TRAILER || written % 512 != TRAILER {
        return Err(SnapshotFileError::Size {
            path: shown,
            size: written,
        }
        .into());
    }
    let actual = hash.hasher.finish();
    if actual.as_ref() != hash.tail.as_slice() {
        return Err(SnapshotFileError::Hash {
            path: shown,
            expected: hex(&hash.tail),
            actual: hex(actual.as_ref()),
        }
        .into());
    }
    Ok(bolt::read_facts(path, written, hex(&hash.tail))?)
}

/// Writes the sidecar atomically: `.part`, fsync, rename.
fn write_sidecar(sidecar: &Sidecar, path: &Path) -> Result<(), SnapshotError> {
    let part_path = PathBuf::from(format!("{}{PART}", path.display()));
    let io = |cause| SnapshotError::Write {
        path: part_path.display().to_string(),
        cause,
    };
    let part = RemoveOnDrop::new(part_path.clone());
    // Plain data with string keys: serialising cannot fail.
    let text = serde_json::to_vec_pretty(sidecar).unwrap_or_default();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part_path)
        .map_err(io)?;
    file.write_all(&text).map_err(io)?;
    file.sync_all().map_err(io)?;
    crate::files::rename_no_replace(&part_path, path).map_err(io)?;
    drop(part);
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lagging_hash_leaves_out_exactly_the_trailer() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 31, 32, 33, 512, 4096] {
            let mut h = LaggingHash::new(true);
            for piece in data.chunks(chunk) {
                h.update(piece);
            }
            assert_eq!(h.tail, data[data.len() - 32..], "chunks of {chunk}");
            assert_eq!(
                h.hasher.finish().as_ref(),
                ring::digest::digest(&SHA256, &data[..data.len() - 32]).as_ref()
            );
        }
    }

    #[test]
    fn names_sort_by_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_619_666);
        assert_eq!(compact_utc(t), "20251201T200746Z");
    }
}
