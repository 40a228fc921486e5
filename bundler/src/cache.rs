//! The content-addressed blob cache a build reuses (`--cache DIR`): `blobs/sha256/<hex>`, the
//! same shape as an OCI layout, holding pack layers (read while planning) and the blobs a
//! failed build had completed, so that its re-run resumes. The image blobs of finished builds
//! are not copied here: they are read back out of the bundles themselves
//! ([`crate::previous_bundles`], records under `bundles/`).
//!
//! Safe to share between concurrent builds: a blob is written to a private temporary file and
//! renamed into place only after its digest checked, so a reader never sees a partial blob, and
//! two builds fetching the same blob both rename identical bytes. A cached blob is never
//! trusted as is: every reader hashes what it reads and evicts a blob that fails.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use airgap::Digest;
use tempfile::NamedTempFile;

#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {cause}")]
pub struct CacheError {
    pub path: String,
    pub cause: io::Error,
}

/// Temporary files older than this belong to a build that died; they are removed on open.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        let cache = BlobCache {
            root: root.to_path_buf(),
        };
        for dir in [cache.blobs_dir(), cache.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(|cause| CacheError {
                path: dir.display().to_string(),
                cause,
            })?;
        }
        cache.remove_stale();
        Ok(cache)
    }

    /// `$AIRGAP_CACHE_DIR`, else `$XDG_CACHE_HOME/airgap`, else `~/.cache/airgap`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("AIRGAP_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("airgap");
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache/airgap"),
            None => std::env::temp_dir().join("airgap-cache"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// The cached blob, unverified: the caller hashes what it reads and calls
    /// [`BlobCache::evict`] when it does not match.
    pub fn open_blob(&self, digest: &Digest) -> Option<File> {
        File::open(self.path(digest)).ok()
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Drops a blob that failed its digest check.
    pub fn evict(&self, digest: &Digest) {
        tracing::warn!(%digest, "cached blob is corrupt; fetching it again");
        let _ = fs::remove_file(self.path(digest));
    }

    /// A private file to download `digest` into; [`PendingBlob::commit`] publishes it.
    pub fn begin(&self, digest: &Digest) -> Result<PendingBlob, CacheError> {
        let file = tempfile::Builder::new()
            .prefix(&format!("{}.", digest.hex()))
            .tempfile_in(self.tmp_dir())
            .map_err(|cause| CacheError {
                path: self.tmp_dir().display().to_string(),
                cause,
            })?;
        Ok(PendingBlob {
            file,
            target: self.path(digest),
        })
    }

    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_AFTER);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// A blob being downloaded into the cache; removed unless committed.
pub struct PendingBlob {
    file: NamedTempFile,
    target: PathBuf,
}

impl PendingBlob {
    pub fn file(&self) -> &File {
        self.file.as_file()
    }

    /// Throws away what was written, for a download that restarts from the first byte.
    pub fn truncate(&self) -> io::Result<()> {
        use std::io::Seek;
        self.file.as_file().set_len(0)?;
        let mut f = self.file.as_file();
        f.seek(io::SeekFrom::Start(0)).map(drop)
    }

    /// Publishes the blob, whose digest the caller checked. Not synced: a blob damaged by a
    /// crash fails the check of the next build that reads it and is fetched again.
    pub fn commit(self) -> Result<(), CacheError> {
        let target = self.target;
        self.file.persist(&target).map_err(|e| CacheError {
            path: target.display().to_string(),
            cause: e.error,
        })?;
        Ok(())
    }
}
