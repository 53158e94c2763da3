//! zstd for stored snapshots. While a snapshot streams, the [`Compressor`] is handed the very bytes that are
//! hashed and written to the raw `.part`, and compresses them on a thread of its own into a `.zst.part`; that file
//! becomes the snapshot only after etcd's hash of the stream was checked (and is removed if it was not), so what is
//! stored compressed is exactly what the trailer vouches for, at the cost of the stream rather than after it. The
//! zstd frame carries its own checksum, so a flipped byte in a stored `.zst` is caught when it is read back.
//! Reading one back (to verify it, to drill it) decompresses into a scratch directory in TMPDIR, removed when
//! done. Memory is flat either way: the encoder's window, one job per worker, a few chunks in the queue.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ring::digest::{Context, SHA256};

use super::bolt::{SnapshotFileError, hex};
use crate::files::RemoveOnDrop;

/// What a compressed snapshot's name ends with (after `.db`).
pub const ZSTD_SUFFIX: &str = ".zst";
/// Without a sidecar to say how large it is, a compressed snapshot may decompress to at most this: well past
/// etcd's largest quota (8 GiB suggested, 100 GiB its hard limit is not), short of filling a disk for ever.
const MAX_DATABASE_BYTES: u64 = 128 * 1024 * 1024 * 1024;

/// The size of a compression job when compressing on several threads.
const JOB_BYTES: u32 = 2 * 1024 * 1024;
/// zstd's default: about etcd's write speed on one core, and most of the gain of the higher levels on etcd's pages.
const LEVEL: i32 = 3;

/// Whether a stored snapshot is compressed, by its name.
pub fn is_compressed(path: &Path) -> bool {
    path.to_string_lossy().ends_with(ZSTD_SUFFIX)
}

/// Sets its flag when dropped: tells blocking work that the future waiting for it is gone (a save or verify
/// cancelled by SIGTERM), so that it stops within a megabyte and cleans up instead of running to the end.
pub struct StopOnDrop(pub std::sync::Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn cancelled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled")
}

/// Where compressed bytes go: to the file, through SHA-256 (the stored file's hash without reading it again) and
/// through a decoder, so that the file is read back as it is written: the frame must decode, to as many bytes as
/// went in, with zstd's checksum of them (taken by the encoder from its input) matching.
struct Stored {
    file: BufWriter<File>,
    hash: Context,
    decoder: zstd::stream::write::Decoder<'static, Counter>,
}

/// Counts what the read-back decodes.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for Stored {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.decoder.write_all(&buf[..n]).map_err(|e| {
            std::io::Error::other(format!("the compressed output does not decode: {e}"))
        })?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hash: Context,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What the stream hands the compressing thread.
enum Piece {
    Bytes(Vec<u8>),
    /// The stream ended: finish the frame, fsync, and hand back the file. Without it (the save was dropped or
    /// failed), the thread gives up and its file is removed.
    End,
}

/// Chunks handed to it go through here, a megabyte at a time, to a thread that compresses them into a file.
pub struct Compressor {
    path: PathBuf,
    queue: tokio::sync::mpsc::Sender<Piece>,
    batch: Vec<u8>,
    worker: tokio::task::JoinHandle<std::io::Result<(RemoveOnDrop, String)>>,
}

/// Megabytes that may wait for the compressing thread: the stream slows to its pace beyond.
const QUEUED_BATCHES: usize = 4;
const BATCH_BYTES: usize = 1 << 20;

impl Compressor {
    /// Creates `out` (never overwriting) and starts compressing into it.
    pub fn start(out: PathBuf) -> std::io::Result<Compressor> {
        let file = OpenOptions::new().write(true).create_new(true).open(&out)?;
        let guard = RemoveOnDrop::new(out.clone());
        let (queue, mut pieces) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
        let worker = tokio::task::spawn_blocking(move || {
            let mut encoder = encoder(file)?;
            let mut fed = 0u64;
            while let Some(piece) = pieces.blocking_recv() {
                match piece {
                    Piece::Bytes(bytes) => {
                        encoder.write_all(&bytes)?;
                        fed += bytes.len() as u64;
                    }
                    Piece::End => {
                        let digest = finish(encoder, fed)?;
                        return Ok((guard, digest));
                    }
                }
            }
            Err(cancelled())
        });
        Ok(Compressor {
            path: out,
            queue,
            batch: Vec::with_capacity(BATCH_BYTES),
            worker,
        })
    }

    /// Hands over a chunk; an error is the compressing thread's (a full disk), and ends it.
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= BATCH_BYTES {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_BYTES));
            if self.queue.send(Piece::Bytes(full)).await.is_err() {
                return Err(self.failure().await);
            }
        }
        Ok(())
    }

    /// Ends the frame and waits for the file, fsynced: its guard (the caller keeps or drops it) and SHA-256.
    pub async fn finish(mut self) -> std::io::Result<(RemoveOnDrop, String)> {
        let rest = std::mem::take(&mut self.batch);
        if (!rest.is_empty() && self.queue.send(Piece::Bytes(rest)).await.is_err())
            || self.queue.send(Piece::End).await.is_err()
        {
            return Err(self.failure().await);
        }
        match (&mut self.worker).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Gives up: the thread stops and removes its file before this returns (a failed save leaves no trace at
    /// once, not a moment later).
    pub async fn abort(self) {
        let Compressor { queue, worker, .. } = self;
        drop(queue);
        let _ = worker.await;
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the thread stopped taking pieces.
    async fn failure(&mut self) -> std::io::Error {
        match (&mut self.worker).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => std::io::Error::other("the compressor ended early"),
            Err(e) => std::io::Error::other(e.to_string()),
        }
    }
}

type Encoder = zstd::stream::write::Encoder<'static, Stored>;

fn encoder(file: File) -> std::io::Result<Encoder> {
    let sink = Stored {
        file: BufWriter::with_capacity(1 << 20, file),
        hash: Context::new(&SHA256),
        decoder: zstd::stream::write::Decoder::new(Counter(0))?,
    };
    let mut encoder = zstd::stream::write::Encoder::new(sink, LEVEL)?;
    encoder.include_checksum(true)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32);
    if workers > 1 {
        encoder.multithread(workers)?;
        // zstd's default job is 4 windows (8 MiB at this level), buffered in and out for each job in flight:
        // ~50 MiB on two workers. Jobs of 2 MiB keep it near 15 MiB, for a ratio that differs in the third digit.
        encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(JOB_BYTES))?;
    }
    Ok(encoder)
}

/// Ends the frame, checks the read-back (`fed` bytes went in), fsyncs, and gives the file's SHA-256.
fn finish(encoder: Encoder, fed: u64) -> std::io::Result<String> {
    let mut sink = encoder.finish()?;
    sink.decoder.flush()?;
    let decoded = sink.decoder.get_ref().0;
    if decoded != fed {
        return Err(std::io::Error::other(format!(
            "the compressed output decodes to {decoded} bytes, not the {fed} that went in"
        )));
    }
    let digest = hex(sink.hash.finish().as_ref());
    let file = sink.file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(digest)
}

/// A snapshot as a plain etcd database file: the file itself, or a decompressed scratch copy that is removed
/// when this is dropped.
#[derive(Debug)]
pub struct Readable {
    pub path: PathBuf,
    /// SHA-256 of the stored file, hex, when it was read through (compressed files only).
    pub stored_sha256: Option<String>,
    _scratch: Option<tempfile::TempDir>,
}

/// `stored` as a database file. A `.zst` is decompressed into a scratch directory in TMPDIR, at most `limit`
/// bytes (its sidecar's size, when there is one: a hostile frame cannot fill the disk). Blocking; gives up within
/// a megabyte once `stop` is set.
pub fn readable(
    stored: &Path,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<Readable, SnapshotFileError> {
    if !is_compressed(stored) {
        return Ok(Readable {
            path: stored.to_path_buf(),
            stored_sha256: None,
            _scratch: None,
        });
    }
    let shown = stored.display().to_string();
    let io = |cause| SnapshotFileError::Io {
        path: shown.clone(),
        cause,
    };
    let name = crate::files::file_name(stored);
    // In the temporary directory (TMPDIR), where the drill restores too, not beside the snapshot: the backup
    // volume need not hold a second, decompressed copy, and may be read-only. Named like the drill's scratch
    // directories, so that one left by a killed process is removed by the next drill.
    let scratch = tempfile::Builder::new()
        .prefix(&format!(
            "etcd-sentinel-drill-{}-unpack-",
            std::process::id()
        ))
        .tempdir()
        .map_err(|cause| SnapshotFileError::Io {
            path: std::env::temp_dir().display().to_string(),
            cause,
        })?;
    let plain_name = name.strip_suffix(ZSTD_SUFFIX).unwrap_or(&name).to_string();
    let scratch_path = scratch.path().join(plain_name);
    let input = HashingReader {
        inner: File::open(stored).map_err(io)?,
        hash: Context::new(&SHA256),
    };
    let zstd_error = |cause: std::io::Error| SnapshotFileError::Compressed {
        path: shown.clone(),
        cause: cause.to_string(),
    };
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(zstd_error)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&scratch_path)
        .map_err(|cause| SnapshotFileError::Io {
            path: scratch_path.display().to_string(),
            cause,
        })?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let scratch_error = |cause| SnapshotFileError::Io {
        path: scratch_path.display().to_string(),
        cause,
    };
    let mut copied: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(scratch_error(cancelled()));
        }
        // Read errors are the frame's (corrupt, truncated); write errors the scratch file's (a full disk).
        let n = decoder.read(&mut buf).map_err(zstd_error)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        let bound = limit.unwrap_or(MAX_DATABASE_BYTES);
        if copied > bound {
            return Err(SnapshotFileError::Compressed {
                path: shown,
                cause: match limit {
                    Some(l) => {
                        format!("decompresses to more than the {l} bytes its sidecar records")
                    }
                    None => format!(
                        "decompresses to more than {bound} bytes, more than any etcd database"
                    ),
                },
            });
        }
        out.write_all(&buf[..n]).map_err(scratch_error)?;
    }
    out.into_inner()
        .map_err(|e| scratch_error(e.into_error()))?;
    // Read what follows the frame too, so that the hash is of the whole stored file.
    let mut input = decoder.finish();
    std::io::copy(&mut input, &mut std::io::sink()).map_err(io)?;
    let input = input.into_inner();
    Ok(Readable {
        path: scratch_path,
        stored_sha256: Some(hex(input.hash.finish().as_ref())),
        _scratch: Some(scratch),
    })
}

/// `readable`, off the async threads.
pub async fn readable_async(
    stored: &Path,
    limit: Option<u64>,
) -> Result<Readable, SnapshotFileError> {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    if !is_compressed(stored) {
        return readable(stored, limit, &stop);
    }
    let owned = stored.to_path_buf();
    let _stop_on_drop = StopOnDrop(stop.clone());
    tokio::task::spawn_blocking(move || readable(&owned, limit, &stop))
        .await
        .unwrap_or_else(|e| {
            Err(SnapshotFileError::Io {
                path: stored.display().to_string(),
                cause: std::io::Error::other(e.to_string()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compresses `data` as a stream would hand it over, in uneven chunks.
    async fn compressed(data: &[u8], out: PathBuf) -> (RemoveOnDrop, String) {
        let mut c = Compressor::start(out).unwrap();
        for chunk in data.chunks(32 * 1024 + 7) {
            c.write(chunk).await.unwrap();
        }
        c.finish().await.unwrap()
    }

    #[tokio::test]
    async fn a_round_trip_gives_back_every_byte_and_the_stored_hash() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
        let zst = dir.path().join("a.db.zst");
        let (mut kept, sha) = compressed(&data, zst.clone()).await;
        kept.keep = true;
        let stored = std::fs::read(&zst).unwrap();
        assert!(
            stored.len() < data.len() / 10,
            "compressed: {}",
            stored.len()
        );
        assert_eq!(sha, hex(ring::digest::digest(&SHA256, &stored).as_ref()));
        let back = readable(&zst, Some(data.len() as u64), &AtomicBool::new(false)).unwrap();
        assert_eq!(std::fs::read(&back.path).unwrap(), data);
        assert_eq!(back.stored_sha256.as_deref(), Some(sha.as_str()));
        let scratch = back.path.clone();
        drop(back);
        assert!(!scratch.exists(), "the scratch copy is removed");
    }

    #[tokio::test]
    async fn a_compressor_dropped_before_the_end_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.db.zst.part");
        let mut c = Compressor::start(out.clone()).unwrap();
        c.write(&vec![7u8; 3 << 20]).await.unwrap();
        drop(c);
        // The thread drains what was queued, sees no end, and removes its file.
        for _ in 0..200 {
            if !out.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{} is still there", out.display());
    }

    #[tokio::test]
    async fn a_flipped_byte_or_a_bomb_is_refused_and_leaves_no_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let zst = dir.path().join("b.db.zst");
        let (mut kept, _) = compressed(&data, zst.clone()).await;
        kept.keep = true;
        let mut bytes = std::fs::read(&zst).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let flipped = dir.path().join("c.db.zst");
        std::fs::write(&flipped, &bytes).unwrap();
        let e = readable(&flipped, None, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(e, SnapshotFileError::Compressed { .. }), "{e}");
        assert!(e.to_string().contains("c.db.zst"), "{e}");
        let e = readable(&zst, Some(1000), &AtomicBool::new(false)).unwrap_err();
        assert!(e.to_string().contains("more than the 1000 bytes"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
