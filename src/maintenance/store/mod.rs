//! Where snapshots are kept. Here, a local directory: which files are ours (a name of our pattern with its
//! sidecar, which names the file), and deleting one (the snapshot, then its sidecar). Nothing else in the
//! directory is ever touched. [`s3`]: the same in S3-compatible storage, where the name alone (with a sidecar
//! object beside it) says whose and when, so that listing needs no request per snapshot.

pub mod s3;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::compress::ZSTD_SUFFIX;
use super::snapshot::{SUFFIX, Sidecar};

/// A snapshot this tool made, with what its sidecar says.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub sidecar_path: PathBuf,
    pub sidecar: Sidecar,
    /// Bytes on disk now (the sidecar's `size` is what was written).
    pub size: u64,
}

impl Stored {
    /// The snapshot as retention sees it.
    pub fn retention_entry(&self) -> super::retention::Entry {
        super::retention::Entry {
            name: self.sidecar.file.clone(),
            cluster: self.sidecar.cluster.clone(),
            taken_at: self.sidecar.started_at,
        }
    }
}

/// The snapshots in `dir`, oldest first; other files, and snapshots whose sidecar is missing or does not name
/// them, are left out (they are not ours to prune).
pub fn list(dir: &Path) -> std::io::Result<Vec<Stored>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_name(&name).is_none() {
            continue;
        }
        let sidecar_path = dir.join(format!("{name}.json"));
        // Not a small regular file that parses (missing, a FIFO, huge, damaged): not ours to list or prune.
        let Ok(Some(sidecar)) = super::snapshot::read_sidecar(&sidecar_path) else {
            continue;
        };
        if sidecar.file != name {
            continue;
        }
        // Deleted meanwhile (a prune running beside a listing): not there, not an error.
        let size = match entry.metadata() {
            Ok(m) if !m.is_file() => continue,
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(Stored {
            path: entry.path(),
            sidecar_path,
            sidecar,
            size,
        });
    }
    out.sort_by(|a, b| {
        (a.sidecar.started_at, &a.sidecar.file).cmp(&(b.sidecar.started_at, &b.sidecar.file))
    });
    Ok(out)
}

/// What a snapshot's name says: `<cluster>-<YYYYMMDDTHHMMSSZ>-rev<revision>.db[.zst]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFacts {
    pub cluster: String,
    pub taken_at: SystemTime,
    pub revision: i64,
    pub compressed: bool,
}

/// Reads a snapshot's name; `None` for any name this tool does not write.
pub fn parse_name(name: &str) -> Option<NameFacts> {
    let (rest, compressed) = match name.strip_suffix(ZSTD_SUFFIX) {
        Some(r) => (r, true),
        None => (name, false),
    };
    let rest = rest.strip_suffix(SUFFIX)?;
    let (stem, revision) = rest.rsplit_once("-rev")?;
    // As this tool writes them: digits without a leading zero.
    if revision.is_empty()
        || !revision.bytes().all(|b| b.is_ascii_digit())
        || (revision.len() > 1 && revision.starts_with('0'))
    {
        return None;
    }
    let revision: i64 = revision.parse().ok()?;
    // `compact_utc`: 16 characters, after a hyphen.
    let split = stem.len().checked_sub(17)?;
    // A listed object's name can be anything: never split inside a character.
    if !stem.is_char_boundary(split) {
        return None;
    }
    let (cluster, time) = stem.split_at(split);
    let time = time.strip_prefix('-')?;
    let taken = chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ").ok()?;
    if !crate::config::valid_name(cluster) {
        return None;
    }
    Some(NameFacts {
        cluster: cluster.to_string(),
        taken_at: SystemTime::from(taken.and_utc()),
        revision,
        compressed,
    })
}

/// Deletes a snapshot and its sidecar; the snapshot first, so a failure in between leaves a sidecar that names a
/// missing file (ignored by `list`), never a snapshot that looks like nobody's.
pub fn delete(stored: &Stored) -> std::io::Result<()> {
    std::fs::remove_file(&stored.path)?;
    match std::fs::remove_file(&stored.sidecar_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_whose_when_and_which_revision() {
        let t = |s: &str| {
            SystemTime::from(
                chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
                    .unwrap()
                    .and_utc(),
            )
        };
        assert_eq!(
            parse_name("prod-eu-20261201T200746Z-rev1234.db"),
            Some(NameFacts {
                cluster: "prod-eu".into(),
                taken_at: t("20261201T200746Z"),
                revision: 1234,
                compressed: false,
            })
        );
        assert!(
            parse_name("a-20261201T200746Z-rev7.db.zst")
                .unwrap()
                .compressed
        );
        for not_ours in [
            "prod-20261201T200746Z-rev12.db.json",
            "prod-20261201T200746Z-rev12.db.part",
            "prod-20261201T200746Z-rev.db",
            "prod-20261201T200746Z-rev-1.db",
            "-20261201T200746Z-rev1.db",
            "prod-2026120T200746Z-rev1.db",
            "prod-20261301T200746Z-rev1.db",
            "backup.db",
            "rev1.db",
            "ü20261201T200746Z-rev1.db",
            "c d-20261201T200746Z-rev1.db",
            "c-20261201T200746Z-rev01.db",
        ] {
            assert_eq!(parse_name(not_ours), None, "{not_ours}");
        }
    }
}
