//! Reading an etcd snapshot file itself: the SHA-256 trailer etcd appends to the bbolt database, and, from the
//! database, the revision and raft index it holds. Read from the file after it is written, never from a request
//! made before or after the stream (the cluster moves on meanwhile: a known source of wrong revisions).
//!
//! Only what is needed of bbolt's format: the two meta pages (the one with the higher transaction id that checks
//! out wins), the root bucket, and a walk down the rightmost branch of a bucket's B+tree to its largest key. Every
//! offset is checked against the file: a damaged or hostile file is an error, never a panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ring::digest::{Context, SHA256};
use thiserror::Error;

/// etcd appends the SHA-256 of the database to the snapshot: a snapshot is `size % 512 == 32` bytes.
pub const TRAILER: u64 = 32;

const MAGIC: u32 = 0xED0C_DAED;
const PAGE_HEADER: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
/// A page larger than this is no bbolt page of etcd's (it uses the OS page size, 4 KiB).
const MAX_PAGE_SIZE: u32 = 1 << 20;
/// A B+tree deeper than this is a loop in a damaged file.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Error)]
pub enum SnapshotFileError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(
        "{path}: {size} bytes is not an etcd snapshot (its size is a multiple of 512 plus the 32-byte SHA-256 trailer)"
    )]
    Size { path: String, size: u64 },
    #[error(
        "{path}: the SHA-256 of the database ({actual}) is not the one in its trailer ({expected}): the file is corrupt"
    )]
    Hash {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a valid zstd-compressed snapshot: {cause}")]
    Compressed { path: String, cause: String },
    #[error("{path}: not a bbolt database: {reason}")]
    Format { path: String, reason: String },
}

/// What a verified snapshot file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// Bytes of the file, trailer included.
    pub size: u64,
    /// The trailer: the SHA-256 of the database, hex.
    pub sha256: String,
    /// The newest revision in the key space (1 for an empty one).
    pub revision: i64,
    /// The raft index the database had applied (`consistent_index`).
    pub raft_index: u64,
}

/// Bytes as lowercase hex, as sha256sum prints a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a snapshot file (size, then the trailer against the SHA-256 of the rest, read in 1 MiB pieces) and reads
/// its revision and raft index. Memory is flat whatever the size.
pub fn inspect(path: &Path) -> Result<SnapshotFacts, SnapshotFileError> {
    let shown = path.display().to_string();
    let io = |cause| SnapshotFileError::Io {
        path: shown.clone(),
        cause,
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size < 512 + TRAILER || size % 512 != TRAILER {
        return Err(SnapshotFileError::Size { path: shown, size });
    }
    let body = size - TRAILER;
    let mut hasher = Context::new(&SHA256);
    let mut left = body;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n]).map_err(io)?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact(&mut trailer).map_err(io)?;
    let actual = hasher.finish();
    if actual.as_ref() != trailer {
        return Err(SnapshotFileError::Hash {
            path: shown,
            expected: hex(&trailer),
            actual: hex(actual.as_ref()),
        });
    }
    read_facts(path, size, hex(&trailer))
}

/// The revision and raft index of a snapshot whose size and trailer were checked already (while it was
/// streamed): only a few pages of the database are read.
pub fn read_facts(
    path: &Path,
    size: u64,
    sha256: String,
) -> Result<SnapshotFacts, SnapshotFileError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|cause| SnapshotFileError::Io {
        path: shown.clone(),
        cause,
    })?;
    let mut db = Db {
        file,
        body: size.saturating_sub(TRAILER),
        page_size: 0,
        path: shown,
    };
    let root = db.root()?;
    let revision = match db.bucket(root, b"key")? {
        Some(bucket) => match db.last_key(bucket)? {
            Some(key) if key.len() >= 8 => {
                let mut main = [0u8; 8];
                main.copy_from_slice(&key[..8]);
                i64::from_be_bytes(main)
            }
            Some(_) => return Err(db.format("a key of the key bucket is shorter than a revision")),
            None => 1,
        },
        None => return Err(db.format("no \"key\" bucket: not an etcd database")),
    };
    let raft_index = match db.bucket(root, b"meta")? {
        Some(meta) => db
            .get(meta, b"consistent_index")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes),
        None => 0,
    };
    Ok(SnapshotFacts {
        size,
        sha256,
        revision,
        raft_index,
    })
}

/// One element of a leaf page: its flags (a bucket or a value), key and value.
type LeafElement = (u32, Vec<u8>, Vec<u8>);

/// A bucket: its root page, or its pages inline in the parent's value.
enum Bucket {
    Page(u64),
    Inline(Vec<u8>),
}

struct Db {
    file: File,
    /// Bytes of the database (the file without its trailer).
    body: u64,
    page_size: u32,
    path: String,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Db {
    fn format(&self, reason: &str) -> SnapshotFileError {
        SnapshotFileError::Format {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SnapshotFileError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.body)
        {
            return Err(self.format("a page lies beyond the end of the database"));
        }
        let mut buf = vec![0u8; len];
        let io = |cause| SnapshotFileError::Io {
            path: self.path.clone(),
            cause,
        };
        self.file.seek(SeekFrom::Start(offset)).map_err(&io)?;
        self.file.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }

    /// The root bucket's page, from the newer of the two meta pages whose magic and checksum hold.
    fn root(&mut self) -> Result<u64, SnapshotFileError> {
        let first = self.read_at(0, 4096.min(self.body as usize))?;
        let page_size = u32_at(&first, PAGE_HEADER + 8).unwrap_or(0);
        if !(512..=MAX_PAGE_SIZE).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(self.format("no valid page size in the first meta page"));
        }
        self.page_size = page_size;
        let mut best: Option<(u64, u64)> = None;
        for n in 0..2u64 {
            let page = self.read_at(n * u64::from(page_size), PAGE_HEADER + 64)?;
            let meta = &page[PAGE_HEADER..];
            let valid = u16_at(&page, 8) == Some(META)
                && u32_at(meta, 0) == Some(MAGIC)
                && u64_at(meta, 56) == Some(fnv1a(&meta[..56]));
            if let (true, Some(root), Some(txid)) = (valid, u64_at(meta, 16), u64_at(meta, 48))
                && best.is_none_or(|(_, t)| txid > t)
            {
                best = Some((root, txid));
            }
        }
        best.map(|(root, _)| root)
            .ok_or_else(|| self.format("neither meta page is valid"))
    }

    /// A page with its overflow pages.
    fn page(&mut self, id: u64) -> Result<Vec<u8>, SnapshotFileError> {
        let size = u64::from(self.page_size);
        let offset = id
            .checked_mul(size)
            .ok_or_else(|| self.format("a page id out of range"))?;
        let head = self.read_at(offset, PAGE_HEADER)?;
        let overflow = u64::from(u32_at(&head, 12).unwrap_or(0));
        let len = (overflow + 1)
            .checked_mul(size)
            .filter(|l| *l <= self.body)
            .ok_or_else(|| self.format("a page's overflow runs past the database"))?;
        self.read_at(offset, len as usize)
    }

    fn pages_of(&mut self, bucket: &Bucket) -> Result<Vec<u8>, SnapshotFileError> {
        match bucket {
            Bucket::Page(id) => self.page(*id),
            Bucket::Inline(page) => Ok(page.clone()),
        }
    }

    /// The elements of a leaf page: (flags, key, value).
    fn leaf(&self, page: &[u8]) -> Result<Vec<LeafElement>, SnapshotFileError> {
        let count = usize::from(u16_at(page, 10).unwrap_or(0));
        let bad = || self.format("a leaf element lies outside its page");
        (0..count)
            .map(|i| {
                let at = PAGE_HEADER + i * 16;
                let (flags, pos, ksize, vsize) = (
                    u32_at(page, at).ok_or_else(bad)?,
                    u32_at(page, at + 4).ok_or_else(bad)? as usize,
                    u32_at(page, at + 8).ok_or_else(bad)? as usize,
                    u32_at(page, at + 12).ok_or_else(bad)? as usize,
                );
                let key_at = at.checked_add(pos).ok_or_else(bad)?;
                let key = page.get(key_at..key_at + ksize).ok_or_else(bad)?;
                let value = page
                    .get(key_at + ksize..key_at + ksize + vsize)
                    .ok_or_else(bad)?;
                Ok((flags, key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// The leaf page holding `key` (or, with `None`, the largest key), found from the bucket's root.
    fn find_leaf(
        &mut self,
        bucket: &Bucket,
        key: Option<&[u8]>,
    ) -> Result<Vec<u8>, SnapshotFileError> {
        let mut page = self.pages_of(bucket)?;
        for _ in 0..MAX_DEPTH {
            match u16_at(&page, 8) {
                Some(LEAF) => return Ok(page),
                Some(BRANCH) => {
                    let count = usize::from(u16_at(&page, 10).unwrap_or(0));
                    if count == 0 {
                        return Err(self.format("an empty branch page"));
                    }
                    let bad = || self.format("a branch element lies outside its page");
                    let mut child = None;
                    for i in 0..count {
                        let at = PAGE_HEADER + i * 16;
                        let pos = u32_at(&page, at).ok_or_else(bad)? as usize;
                        let ksize = u32_at(&page, at + 4).ok_or_else(bad)? as usize;
                        let pgid = u64_at(&page, at + 8).ok_or_else(bad)?;
                        let element_key = page.get(at + pos..at + pos + ksize).ok_or_else(bad)?;
                        // Each element's key is the smallest under it: take the last one not above the key.
                        match key {
                            Some(k) if element_key > k && child.is_some() => break,
                            _ => child = Some(pgid),
                        }
                    }
                    let Some(next) = child else {
                        return Err(bad());
                    };
                    page = self.page(next)?;
                }
                _ => return Err(self.format("a bucket page that is neither branch nor leaf")),
            }
        }
        Err(self.format("a B+tree deeper than any real one (a loop?)"))
    }

    fn get(&mut self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, SnapshotFileError> {
        let leaf = self.find_leaf(&bucket, Some(key))?;
        Ok(self
            .leaf(&leaf)?
            .into_iter()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v))
    }

    /// A bucket of the root bucket, by name.
    fn bucket(&mut self, root: u64, name: &[u8]) -> Result<Option<Bucket>, SnapshotFileError> {
        let leaf = self.find_leaf(&Bucket::Page(root), Some(name))?;
        let Some((flags, _, value)) = self.leaf(&leaf)?.into_iter().find(|(_, k, _)| k == name)
        else {
            return Ok(None);
        };
        if flags & BUCKET_LEAF == 0 || value.len() < 16 {
            return Err(self.format("a root entry that is not a bucket"));
        }
        let root = u64_at(&value, 0).unwrap_or(0);
        Ok(Some(if root == 0 {
            Bucket::Inline(value[16..].to_vec())
        } else {
            Bucket::Page(root)
        }))
    }

    fn last_key(&mut self, bucket: Bucket) -> Result<Option<Vec<u8>>, SnapshotFileError> {
        let leaf = self.find_leaf(&bucket, None)?;
        Ok(self.leaf(&leaf)?.pop().map(|(_, k, _)| k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_are_no_snapshot_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let e = inspect(&path).unwrap_err().to_string();
        assert!(
            e.contains("x.db") && e.contains("1000 bytes is not an etcd snapshot"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_trailer_is_a_corrupt_file_and_garbage_is_no_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let body = vec![7u8; 4096];
        let mut file = body.clone();
        file.extend_from_slice(&[0u8; 32]);
        std::fs::write(&path, &file).unwrap();
        let e = inspect(&path).unwrap_err().to_string();
        assert!(e.contains("is not the one in its trailer"), "{e}");
        // The right trailer on garbage: the hash holds, the format does not.
        let mut file = body.clone();
        file.extend_from_slice(ring::digest::digest(&SHA256, &body).as_ref());
        std::fs::write(&path, &file).unwrap();
        let e = inspect(&path).unwrap_err().to_string();
        assert!(e.contains("not a bbolt database"), "{e}");
    }

    #[test]
    fn fnv_is_bbolts() {
        // FNV-1a of "a", the reference value.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
