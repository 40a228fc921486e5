//! Where phases read a release's content from. Today a bundle on disk ([`BundleArchive`]);
//! the same trait can be a registry holding the release (`upgrade --from-registry`) or a peer
//! node (join), so the phases do not change with the source. Every read is checked against
//! the signed index: a blob's bytes count only once [`BlobRead::finish`] said they hash to
//! the digest the verified index names.

use std::io::Read;
use std::path::{Path, PathBuf};

use airgap::digest::DigestHasher;
use airgap::{BundleArchive, Digest, VerifiedIndex, VerifyError};
use registry::content_digest::ContentDigest;
use registry_server::blob_store::{BlobStore, Committed, FsBlobStore};

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
    file: std::io::BufReader<registry_server::store::BlobReader>,
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
        let blobs = FsBlobStore::reader(self.store);
        let missing = || SourceError::Missing {
            digest: *digest,
            store: self.store.to_path_buf(),
        };
        let data = blobs
            .read(&ContentDigest::from(*digest))
            .ok_or_else(missing)?;
        let file = match data.open() {
            Ok(opened) => opened.reader(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
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

/// What [`place_bundle_blobs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs the store held already.
    pub present: usize,
}

/// Puts every blob `archive` carries that the node's registry store (an OCI layout at
/// `store`) lacks into it: read from the bundle in place, written to `.uploads/`, checked
/// against the signed digest, fsynced and only then renamed into `blobs/sha256/<hex>`, so a
/// registry serving the store meanwhile sees each blob absent or whole, never partial. This is
/// how a node whose cluster registry already holds the release (a joining HA node, or one
/// upgrading after the first node seeded it) fills its store from its own verified bundle
/// instead of fetching every byte from its peers. `progress` is told each byte written.
///
/// `derived` are blobs made from what the bundle carries (the release artifact's parts): placed
/// the same way, by the digest of their bytes.
pub fn place_bundle_blobs(
    archive: &BundleArchive,
    derived: &[Vec<u8>],
    store: &Path,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Placed, SourceError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Store { path, source }
    };
    let store_blobs = FsBlobStore::open(store).map_err(io(store))?;
    let blobs: Vec<Digest> = archive
        .verified()
        .index()
        .entries
        .iter()
        .filter(|e| e.path.as_str() == e.sha256.blob_path())
        .map(|e| e.sha256)
        .collect();
    // `jobs` workers take the next blob in turn: hashing and copying use every core given.
    let next = AtomicUsize::new(0);
    let placed = Mutex::new(Placed::default());
    let failure: Mutex<Option<SourceError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(digest) = blobs.get(i) else { return };
                if failure.lock().map_or(true, |f| f.is_some()) {
                    return;
                }
                match place_one(archive, digest, &store_blobs, store, progress) {
                    Ok(outcome) => {
                        if let Ok(mut p) = placed.lock() {
                            match outcome {
                                Some(n) => {
                                    p.blobs += 1;
                                    p.bytes += n;
                                }
                                None => p.present += 1,
                            }
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut placed = placed.into_inner().unwrap_or_default();
    for bytes in derived {
        let digest = ContentDigest::from(Digest::of(bytes));
        match store_blobs.put(&digest, bytes).map_err(io(store))? {
            Committed::Stored { new: false, .. } => placed.present += 1,
            Committed::Stored { len, new: true } => {
                placed.blobs += 1;
                placed.bytes += len;
            }
            // The digest is of these very bytes: only storage that changes them gets here.
            Committed::Mismatch { actual } => {
                return Err(SourceError::Mismatch {
                    path: store.join(digest.blob_path()),
                    expected: Digest::of(bytes),
                    actual: actual.as_sha256().unwrap_or_else(|| Digest::of(bytes)),
                })
            }
        }
    }
    Ok(placed)
}

/// One blob into the store, through a writer that keeps it only once it hashed to the signed
/// digest: `None` when it was there already, else its length.
fn place_one(
    archive: &BundleArchive,
    digest: &Digest,
    blobs: &FsBlobStore,
    store: &Path,
    progress: &dyn Fn(u64),
) -> Result<Option<u64>, SourceError> {
    let content = ContentDigest::from(*digest);
    if blobs.stat(&content).is_some() {
        return Ok(None);
    }
    let dest = store.join(digest.blob_path());
    let io = |source| SourceError::Store {
        path: dest.clone(),
        source,
    };
    let mut writer = blobs
        .writer(&format!("bundle-{}", &digest.hex()[..16]))
        .map_err(io)?;
    let mut copy = || -> Result<(), SourceError> {
        let mut blob = archive.open_blob(digest)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = blob.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]).map_err(io)?;
            progress(n as u64);
        }
        // The bytes count only once they hashed to the signed digest.
        blob.finish()
    };
    if let Err(e) = copy() {
        drop(writer);
        return Err(e);
    }
    match writer.commit(&content).map_err(io)? {
        Committed::Stored { len, .. } => Ok(Some(len)),
        Committed::Mismatch { actual } => Err(SourceError::Mismatch {
            path: dest.clone(),
            expected: *digest,
            actual: actual.as_sha256().unwrap_or(*digest),
        }),
    }
}
