//! Reading the small files a configuration names (secrets, certificates, the configuration itself), safely.

use std::path::{Path, PathBuf};

/// Reads a small file the configuration names (a secret, a certificate): only a regular file, and at most
/// `limit` bytes. A FIFO would block the reload (and the signals behind it) until someone writes to it, and
/// `/dev/zero` would be read until memory runs out.
pub fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// A program named without a directory, looked up on the PATH (as a shell would); a path is taken as it is.
pub fn find_program(name: &Path) -> std::path::PathBuf {
    if name.components().count() > 1 {
        return name.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| name.to_path_buf())
}

/// A file that is removed when dropped, unless kept: a write that fails or is cancelled leaves nothing behind.
#[derive(Debug)]
pub struct RemoveOnDrop {
    pub path: PathBuf,
    pub keep: bool,
}

impl RemoveOnDrop {
    pub fn new(path: PathBuf) -> Self {
        RemoveOnDrop { path, keep: false }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
