//! zstd for stored snapshots. A snapshot is compressed only after its etcd hash was checked (the raw file is what
//! etcd's trailer vouches for), into a `.zst.part` that is fsynced before it replaces the raw file; the zstd frame
//! carries its own checksum, so a flipped byte in a stored `.zst` is caught when it is read back. Reading one back
//! (to verify it, to drill it) decompresses into a hidden scratch file beside it, removed when done. Memory is
//! flat either way: the encoder's window and one job per worker.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ring::digest::{Context, SHA256};

use super::bolt::{SnapshotFileError, hex};
use crate::files::RemoveOnDrop;

/// What a compressed snapshot's name ends with (after `.db`).
pub const ZSTD_SUFFIX: &str = ".zst";
/// zstd's default: about etcd's write speed on one core, and most of the gain of the higher levels on etcd's pages.
const LEVEL: i32 = 3;

/// Whether a stored snapshot is compressed, by its name.
pub fn is_compressed(path: &Path) -> bool {
    path.to_string_lossy().ends_with(ZSTD_SUFFIX)
}

/// Passes everything written on, hashing it: the stored file's SHA-256 without reading it again.
struct Hashing<W> {
    inner: W,
    hash: Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

/// Compresses `raw` into `out` (created, never overwritten), fsynced; returns the SHA-256 of `out`, hex. Blocking:
/// run it off the async threads. Gives up within a megabyte once `stop` is set (the save was cancelled).
pub fn compress(raw: &Path, out: &Path, stop: &AtomicBool) -> std::io::Result<String> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(raw)?);
    let file = OpenOptions::new().write(true).create_new(true).open(out)?;
    let sink = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Context::new(&SHA256),
    };
    let mut encoder = zstd::stream::write::Encoder::new(sink, LEVEL)?;
    encoder.include_checksum(true)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32);
    if workers > 1 {
        encoder.multithread(workers)?;
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
        }
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf[..n])?;
    }
    let sink = encoder.finish()?;
    let digest = hex(sink.hash.finish().as_ref());
    let file = sink.inner.into_inner().map_err(|e| e.into_error())?;
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
    _scratch: Option<RemoveOnDrop>,
}

/// `stored` as a database file. A `.zst` is decompressed into `.<name>.<pid>.part` beside it, at most `limit`
/// bytes (its sidecar's size, when there is one: a hostile frame cannot fill the disk). Blocking.
pub fn readable(stored: &Path, limit: Option<u64>) -> Result<Readable, SnapshotFileError> {
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
    let name = stored
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scratch_path = stored.with_file_name(format!(".{name}.{}.part", std::process::id()));
    let scratch = RemoveOnDrop::new(scratch_path.clone());
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
        // Read errors are the frame's (corrupt, truncated); write errors the scratch file's (a full disk).
        let n = decoder.read(&mut buf).map_err(zstd_error)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if let Some(limit) = limit
            && copied > limit
        {
            return Err(SnapshotFileError::Compressed {
                path: shown,
                cause: format!("decompresses to more than the {limit} bytes its sidecar records"),
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
    if !is_compressed(stored) {
        return readable(stored, limit);
    }
    let owned = stored.to_path_buf();
    tokio::task::spawn_blocking(move || readable(&owned, limit))
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

    #[test]
    fn a_round_trip_gives_back_every_byte_and_the_stored_hash() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.db");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let zst = dir.path().join("a.db.zst");
        let sha = compress(&raw, &zst, &AtomicBool::new(false)).unwrap();
        let stored = std::fs::read(&zst).unwrap();
        assert!(
            stored.len() < data.len() / 10,
            "compressed: {}",
            stored.len()
        );
        assert_eq!(sha, hex(ring::digest::digest(&SHA256, &stored).as_ref()));
        let back = readable(&zst, Some(data.len() as u64)).unwrap();
        assert_eq!(std::fs::read(&back.path).unwrap(), data);
        assert_eq!(back.stored_sha256.as_deref(), Some(sha.as_str()));
        let scratch = back.path.clone();
        drop(back);
        assert!(!scratch.exists(), "the scratch copy is removed");
    }

    #[test]
    fn a_flipped_byte_or_a_bomb_is_refused_and_leaves_no_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("b.db");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let zst = dir.path().join("b.db.zst");
        compress(&raw, &zst, &AtomicBool::new(false)).unwrap();
        let mut bytes = std::fs::read(&zst).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let flipped = dir.path().join("c.db.zst");
        std::fs::write(&flipped, &bytes).unwrap();
        let e = readable(&flipped, None).unwrap_err();
        assert!(matches!(e, SnapshotFileError::Compressed { .. }), "{e}");
        assert!(e.to_string().contains("c.db.zst"), "{e}");
        let e = readable(&zst, Some(1000)).unwrap_err();
        assert!(e.to_string().contains("more than the 1000 bytes"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
