//! Where phases read a release's content from. Today a bundle on disk ([`BundleArchive`]);
//! the same trait can be a registry holding the release (`upgrade --from-registry`) or a peer
//! node (join), so the phases do not change with the source. Every read is checked against
//! the signed index: a blob's bytes count only once [`BlobRead::finish`] said they hash to
//! the digest the verified index names.

use std::io::Read;
use std::path::{Path, PathBuf};

use airgap::digest::DigestHasher;
use airgap::{BundleArchive, Digest, VerifiedIndex, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Archive(#[from] VerifyError),
    #[error("{digest} is neither in the bundle nor in the node's registry store {}", store.display())]
    Missing { digest: Digest, store: PathBuf },
    #[error("reading {}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} does not hash to {expected} (got {actual}): the node's store is damaged", path.display())]
    Mismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
}

/// A blob being read; its bytes are trustworthy only once `finish` succeeded.
pub trait BlobRead: Read {
    fn finish(self: Box<Self>) -> Result<(), SourceError>;
}

pub trait ContentSource: Send + Sync {
    /// The signed index the content is checked against.
    fn verified(&self) -> &VerifiedIndex;

    /// A small blob (a manifest) read whole and checked; larger than `limit` is refused.
    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// A blob to stream.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn BlobRead + '_>, SourceError>;
}

impl BlobRead for airgap::archive::EntryReader {
    fn finish(self: Box<Self>) -> Result<(), SourceError> {
        Ok(airgap::archive::EntryReader::finish(*self)?)
    }
}

impl ContentSource for BundleArchive {
    fn verified(&self) -> &VerifiedIndex {
        BundleArchive::verified(self)
    }

    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        Ok(self.read_small(&digest.blob_path(), limit)?)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn BlobRead + '_>, SourceError> {
        Ok(Box::new(self.open_entry(&digest.blob_path())?))
    }
}

/// A release over what the node already holds: a delta bundle leaves out the blobs its base
/// release had, and those are in the node's registry store (an OCI layout) since the base was
/// installed; a release read from a registry (`upgrade --from-registry`) has no bundle at all,
/// and the registry phase copied all of it into the store. Blobs come from the bundle when it
/// has them, else from the store, checked against the digest the signed index names either way.
pub struct WithNodeStore<'a> {
    pub verified: &'a VerifiedIndex,
    /// The bundle, when the release comes from one.
    pub archive: Option<&'a BundleArchive>,
    /// The store's root: `blobs/sha256/<hex>` under it.
    pub store: &'a Path,
}

/// A blob read from the node's store, hashed as it streams.
struct StoreBlob {
    file: std::io::BufReader<std::fs::File>,
    hasher: DigestHasher,
    path: PathBuf,
    expected: Digest,
}

impl Read for StoreBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl BlobRead for StoreBlob {
    fn finish(mut self: Box<Self>) -> Result<(), SourceError> {
        // Whatever the caller left unread still counts towards the digest.
        std::io::copy(&mut *self, &mut std::io::sink()).map_err(|source| SourceError::Store {
            path: self.path.clone(),
            source,
        })?;
        let StoreBlob {
            hasher,
            path,
            expected,
            ..
        } = *self;
        let actual = hasher.finish();
        if actual != expected {
            return Err(SourceError::Mismatch {
                path,
                expected,
                actual,
            });
        }
        Ok(())
    }
}

impl WithNodeStore<'_> {
    /// The bundle, if it carries `digest`.
    fn in_bundle(&self, digest: &Digest) -> Option<&BundleArchive> {
        self.archive
            .filter(|a| a.locate(&digest.blob_path()).is_ok())
    }

    fn open_stored(&self, digest: &Digest) -> Result<StoreBlob, SourceError> {
        let path = self.store.join(digest.blob_path());
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SourceError::Missing {
                    digest: *digest,
                    store: self.store.to_path_buf(),
                })
            }
            Err(source) => return Err(SourceError::Store { path, source }),
        };
        Ok(StoreBlob {
            file: std::io::BufReader::with_capacity(256 << 10, file),
            hasher: DigestHasher::new(),
            path,
            expected: *digest,
        })
    }
}

impl ContentSource for WithNodeStore<'_> {
    fn verified(&self) -> &VerifiedIndex {
        self.verified
    }

    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        if let Some(archive) = self.in_bundle(digest) {
            return archive.read_blob(digest, limit);
        }
        let mut blob = Box::new(self.open_stored(digest)?);
        let mut bytes = Vec::new();
        (&mut blob)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| SourceError::Store {
                path: blob.path.clone(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(SourceError::Store {
                path: blob.path.clone(),
                source: std::io::Error::other(format!("larger than {limit} bytes")),
            });
        }
        blob.finish()?;
        Ok(bytes)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn BlobRead + '_>, SourceError> {
        if let Some(archive) = self.in_bundle(digest) {
            return archive.open_blob(digest);
        }
        Ok(Box::new(self.open_stored(digest)?))
    }
}
