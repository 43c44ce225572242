//! The layer root-hash cache.
//!
//! `sha256/<hex>` maps the digest of a layer's stored bytes to its
//! dm-verity root hash. Entries are only written after the bytes were
//! checked against the digest, and they are content-addressed, so two
//! runs that race write the same bytes: each writes a temporary file and
//! renames it into place, and the loser's rename is harmless.
//!
//! `verified/<hex>` remembers that a local file (by device, inode, size,
//! mtime and ctime, plus the byte range inside it) held bytes with a given
//! digest, so that a rerun on an unchanged archive reads nothing. This is
//! the trust `make` and git's index place in file metadata; `ctime` cannot
//! be set from user space, so rewriting the file in place is noticed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Location, digest_hex};

/// Where layer root hashes are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCache {
    dir: Option<PathBuf>,
}

impl LayerCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> LayerCache {
        LayerCache {
            dir: Some(dir.into()),
        }
    }

    /// No cache: every layer is read and hashed.
    pub fn disabled() -> LayerCache {
        LayerCache { dir: None }
    }

    /// `$XDG_CACHE_HOME/confsum/layers`, else `$HOME/.cache/confsum/layers`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("confsum").join("layers"))
    }

    /// The cache directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cached root hash of the layer whose stored bytes have `digest`.
    pub(crate) fn root(&self, digest: &str) -> Option<String> {
        let dir = self.dir.as_ref()?;
        let hex = digest_hex(digest)?;
        let text = std::fs::read_to_string(dir.join("sha256").join(hex)).ok()?;
        let root = text.trim();
        (root.len() == 64 && root.bytes().all(|b| b.is_ascii_hexdigit())).then(|| root.to_owned())
    }

    /// Records a root hash. Failures only cost a rehash next time.
    pub(crate) fn put_root(&self, digest: &str, root: &str) {
        if let (Some(dir), Some(hex)) = (&self.dir, digest_hex(digest)) {
            let _ = write_atomic(&dir.join("sha256"), hex, root.as_bytes());
        }
    }

    /// Whether this unchanged local location was verified to hold `digest`.
    pub(crate) fn verified(&self, location: &Location, digest: &str) -> bool {
        let (Some(dir), Some(key)) = (&self.dir, stat_key(location)) else {
            return false;
        };
        std::fs::read_to_string(dir.join("verified").join(key)).is_ok_and(|d| d.trim() == digest)
    }

    /// Remembers that the location holds `digest`.
    pub(crate) fn put_verified(&self, location: &Location, digest: &str) {
        if let (Some(dir), Some(key)) = (&self.dir, stat_key(location)) {
            let _ = write_atomic(&dir.join("verified"), &key, digest.as_bytes());
        }
    }
}

fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(content)?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// A digest of what identifies an unchanged file range.
fn stat_key(location: &Location) -> Option<String> {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    let (path, range) = match location {
        Location::Range { path, offset, len } => (path.as_path(), format!("{offset}+{len}")),
        Location::File(path) => (path.as_path(), String::new()),
        #[cfg(feature = "registry")]
        Location::Registry(_) => return None,
    };
    let real = path.canonicalize().ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    let mut h = Sha256::new();
    h.update(real.to_string_lossy().as_bytes());
    h.update([0]);
    h.update(range.as_bytes());
    #[cfg(unix)]
    h.update(
        format!(
            "|{}|{}|{}|{}.{}|{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
        .as_bytes(),
    );
    #[cfg(not(unix))]
    {
        // Without ctime a rewrite in place could go unnoticed: never trust.
        let _ = meta;
        return None;
    }
    #[cfg_attr(not(unix), allow(unreachable_code))]
    Some(hex::encode(h.finalize()))
}
