//! Snapshots in a local directory: which files are ours (a name of our pattern with its sidecar, which names the
//! file), and deleting one (the snapshot, then its sidecar). Nothing else in the directory is ever touched.

use std::path::{Path, PathBuf};

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
        let ours = name.ends_with(SUFFIX) || name.ends_with(&format!("{SUFFIX}{ZSTD_SUFFIX}"));
        if !ours || !name.contains("-rev") {
            continue;
        }
        let sidecar_path = dir.join(format!("{name}.json"));
        let Ok(text) = std::fs::read(&sidecar_path) else {
            continue;
        };
        let Ok(sidecar) = serde_json::from_slice::<Sidecar>(&text) else {
            continue;
        };
        if sidecar.file != name {
            continue;
        }
        let size = entry.metadata()?.len();
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

/// Deletes a snapshot and its sidecar; the snapshot first, so a failure in between leaves a sidecar that names a
/// missing file (ignored by `list`), never a snapshot that looks like nobody's.
pub fn delete(stored: &Stored) -> std::io::Result<()> {
    std::fs::remove_file(&stored.path)?;
    match std::fs::remove_file(&stored.sidecar_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
