//! Where the built-in registry's bytes come from: a verified bundle archive (read in place,
//! read-only) or a store directory that pushes write into.
//!
//! A store directory is a standard OCI image layout (blobs under `blobs/<algorithm>/`), so
//! other tools can read it; its metadata lives in a [`MetadataBackend`] (a log in the
//! directory, or etcd) and `index.json` is regenerated from it in the background, a moment
//! after the last change, instead of on every push. Each (repository, manifest) pair is a
//! descriptor annotated with `io.airgap.repository`, plus `org.opencontainers.image.ref.name`
//! (`<repository>:<tag>`) when tagged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use airgap::oci::{Descriptor, MAX_MANIFEST_SIZE, OCI_LAYOUT_FILE, REF_NAME_ANNOTATION};
use airgap::{BundleArchive, PublicKey, VerifyError};
use tokio::sync::{Mutex, Notify, RwLock};

pub use super::blob_store::{BlobData, BlobReader, OpenBlob, PartsStamp};
use super::blob_store::{BlobStore, BlobWriter, Committed, FsBlobStore};
use super::catalog::{Catalog, Change};
use super::manifest_record::ManifestRecord;
use super::metadata::{MetadataBackend, MetadataError, MetadataLog, Requirement};
use registry::content_digest::ContentDigest;
use registry::mirror::{mirrored_names, MirrorTarget};

pub const REPOSITORY_ANNOTATION: &str = "io.airgap.repository";

/// How long after the last change `index.json` is rewritten.
const INDEX_DEBOUNCE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Bundle(#[from] VerifyError),
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path} is not an OCI layout directory: index.json is not valid")]
    BadLayoutIndex {
        path: PathBuf,
        #[source]
        cause: serde_json::Error,
    },
    #[error("{path} is not an OCI layout directory: manifest {digest} is not valid")]
    BadLayoutManifest {
        path: PathBuf,
        digest: String,
        #[source]
        cause: crate::manifest_record::ManifestError,
    },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("fetching into {path}")]
    Fetch {
        path: PathBuf,
        #[source]
        cause: registry::RegistryError,
    },
    #[error("manifest {digest} in the bundle is not valid")]
    BadManifest {
        digest: String,
        #[source]
        reason: crate::manifest_record::ManifestError,
    },
    #[error("{path} is in use by another registry process (its lock is held); stop it first, or run the command through it")]
    InUse { path: PathBuf },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

// One per server: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Archive(ArchiveStore),
    Layout(LayoutStore),
}

pub struct ArchiveStore {
    archive: BundleArchive,
    catalog: Catalog,
    stamp: Arc<PartsStamp>,
}

impl ArchiveStore {
    /// Verifies the whole bundle (signature, then every entry), then serves it in place.
    pub fn open(path: &Path, key: &PublicKey) -> Result<Self, StoreError> {
        // Taken first: a change while verifying counts as a change.
        let stamp = Arc::new(PartsStamp::take(path).map_err(io_err(path))?);
        airgap::verify_file(path, key, airgap::verify_file::all_cores(), |_| {})?;
        let archive = BundleArchive::open(path, key)?;
        let mut catalog = Catalog::default();
        let target = MirrorTarget {
            host: String::new(),
            prefix: String::new(),
            plain_http: false,
        };
        let add = |repo: &str,
                   tag: Option<&str>,
                   digest: airgap::Digest,
                   media_type: &str,
                   catalog: &mut Catalog|
         -> Result<ManifestRecord, StoreError> {
            let bytes = archive.read_small(&digest.blob_path(), MAX_MANIFEST_SIZE)?;
            let record = ManifestRecord::parse(media_type, &bytes).map_err(|reason| {
                StoreError::BadManifest {
                    digest: digest.to_string(),
                    reason,
                }
            })?;
            let digest = ContentDigest::from(digest);
            catalog.apply(&Change::PutManifest {
                repo: repo.to_string(),
                digest,
                record: record.clone(),
            });
            if let Some(tag) = tag {
                catalog.apply(&Change::Tag {
                    repo: repo.to_string(),
                    tag: tag.to_string(),
                    digest,
                });
            }
            Ok(record)
        };
        for name in mirrored_names(archive.verified().index(), &target) {
            let record = add(
                &name.repository,
                name.tag.as_deref(),
                name.digest,
                &name.media_type,
                &mut catalog,
            )?;
            let index: Option<airgap::oci::ImageIndex> = if record.children.is_empty() {
                None
            } else {
                let bytes = archive.read_small(&name.digest.blob_path(), MAX_MANIFEST_SIZE)?;
                serde_json::from_slice(&bytes).ok()
            };
            for child in index.map(|i| i.manifests).unwrap_or_default() {
                add(
                    &name.repository,
                    None,
                    child.digest,
                    &child.media_type,
                    &mut catalog,
                )?;
            }
        }
        Ok(ArchiveStore {
            archive,
            catalog,
            stamp,
        })
    }
}

/// Limits a store directory applies to uploads.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Open upload sessions one client address may hold.
    pub per_client: usize,
    /// An upload not written to for this long is dropped.
    pub idle: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            per_client: 64,
            idle: Duration::from_secs(15 * 60),
        }
    }
}

/// An upload in progress in a store directory; `None` once committed or cancelled.
type UploadSlot = Arc<Mutex<Option<Upload>>>;

struct Upload {
    writer: Box<dyn BlobWriter>,
}

struct UploadEntry {
    repository: String,
    client: IpAddr,
    last_active: Instant,
    slot: UploadSlot,
}

pub struct LayoutStore {
    /// The layout directory (`oci-layout`, `index.json`, the lock); `None` for a store held
    /// in memory.
    root: Option<PathBuf>,
    blobs: Arc<dyn BlobStore>,
    catalog: Arc<RwLock<Catalog>>,
    backend: Arc<dyn MetadataBackend>,
    /// Upload id -> the upload. Each upload has its own lock, so parallel uploads never wait
    /// on one another; the map's lock is held only to look one up.
    uploads: Mutex<HashMap<String, UploadEntry>>,
    limits: UploadLimits,
    /// Shared by every write, exclusive for a garbage collection: a collection never runs
    /// between a blob's rename into place and its link, or a manifest's check and its write.
    collection: RwLock<()>,
    /// Serializes manifest and tag writes and deletes, so they reach the backend and the
    /// catalog in the same order and a manifest's references are checked with no delete in
    /// between. Blob links do not take it: they are independent of one another, and on etcd
    /// a round trip each, so they run in parallel.
    ordered: Mutex<()>,
    index_dirty: Arc<Notify>,
    /// Bytes under `blobs/`.
    stored_bytes: AtomicU64,
    /// Held for the store's lifetime: one process per directory.
    _lock: Option<fs::File>,
}

#[derive(serde::Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

pub enum StartUpload {
    Started(String),
    TooMany,
}

pub enum Append {
    Appended(u64),
    /// The chunk does not start where the upload ends: the current size.
    OutOfOrder(u64),
    UnknownUpload,
}

pub enum CommitOutcome {
    Committed,
    DigestMismatch(ContentDigest),
    UnknownUpload,
}

pub enum PutManifest {
    Stored {
        digest: ContentDigest,
        subject: Option<ContentDigest>,
    },
    Missing(Vec<ContentDigest>),
    Invalid(crate::manifest_record::ManifestError),
}

/// What [`LayoutStore::import_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// In place now (bytes written; 0 when it already was).
    Stored(u64),
    /// The peer's bytes did not hash to the digest: nothing kept.
    DigestMismatch,
    /// Not a sha256 blob.
    Unsupported,
}

pub enum Deleted {
    Deleted,
    NotFound,
}

/// What a garbage collection removed, or would remove in a dry run.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// Blobs removed (or to remove), with their sizes.
    pub removed: Vec<(ContentDigest, u64)>,
    pub removed_bytes: u64,
    /// Blobs kept: referenced by a manifest, linked into a repository, or newer than the
    /// grace period.
    pub kept: usize,
    /// Abandoned upload files removed.
    pub stale_uploads: usize,
}

impl LayoutStore {
    /// Opens (or creates, when empty or absent) a store directory with the local metadata
    /// log.
    pub async fn open(root: &Path, limits: UploadLimits) -> Result<Self, StoreError> {
        let log = MetadataLog::open(root)?;
        LayoutStore::open_with(root, Arc::new(log), limits).await
    }

    /// Opens a store directory whose metadata lives in `backend`.
    pub async fn open_with(
        root: &Path,
        backend: Arc<dyn MetadataBackend>,
        limits: UploadLimits,
    ) -> Result<Self, StoreError> {
        let blobs = FsBlobStore::open(root).map_err(io_err(root))?;
        let dir = root.join(".airgap");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = root.join(".airgap/lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::InUse {
                path: root.to_path_buf(),
            });
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT_FILE)?;
        }
        let mut catalog = backend.load().await?;
        if catalog.repositories.is_empty() {
            // A layout written before the metadata backend (or by another tool): import it.
            let imported = import_index(root)?;
            if !imported.is_empty() {
                backend.commit(&imported, &[]).await?;
                for change in &imported {
                    catalog.apply(change);
                }
                tracing::info!(path = %root.display(), changes = imported.len(), "imported index.json into the registry metadata");
            }
        }
        // Uploads do not survive a restart; clients start them over.
        blobs.sweep(&HashSet::new(), false);
        let stored_bytes = blobs
            .list()
            .map_err(io_err(root))?
            .iter()
            .map(|b| b.len)
            .sum();
        let catalog = Arc::new(RwLock::new(catalog));
        backend.clone().follow(catalog.clone());
        let index_dirty = Arc::new(Notify::new());
        spawn_index_writer(root.to_path_buf(), catalog.clone(), index_dirty.clone());
        // The last process may have stopped before writing it: write it once now.
        index_dirty.notify_one();
        Ok(LayoutStore {
            root: Some(root.to_path_buf()),
            blobs: Arc::new(blobs),
            catalog,
            backend,
            uploads: Mutex::new(HashMap::new()),
            limits,
            collection: RwLock::new(()),
            ordered: Mutex::new(()),
            index_dirty,
            stored_bytes: AtomicU64::new(stored_bytes),
            _lock: Some(lock),
        })
    }

    /// A store held in memory, blobs and metadata: what the server's handler tests run on.
    pub fn in_memory(limits: UploadLimits) -> Self {
        LayoutStore {
            root: None,
            blobs: Arc::new(crate::blob_store::MemoryBlobStore::new()),
            catalog: Arc::new(RwLock::new(Catalog::default())),
            backend: Arc::new(crate::metadata::MemoryMetadata),
            uploads: Mutex::new(HashMap::new()),
            limits,
            collection: RwLock::new(()),
            ordered: Mutex::new(()),
            index_dirty: Arc::new(Notify::new()),
            stored_bytes: AtomicU64::new(0),
            _lock: None,
        }
    }

    /// Where the store's blobs are (and how they are read).
    pub fn blob_store(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    /// A path for errors: the layout directory, or a name for a store in memory.
    fn shown(&self) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| PathBuf::from("(memory)"))
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    pub async fn open_uploads(&self) -> usize {
        self.uploads.lock().await.len()
    }

    /// Blob-store work that blocks (fsync, rename, hashing a sha512 upload, listing), run off
    /// the async threads; its errors name the store.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shown = self.shown();
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| StoreError::Io {
                path: shown.clone(),
                cause: io::Error::other(e),
            })?
            .map_err(io_err(&shown))
    }

    /// A writer's bytes committed as `digest`, counted in [`LayoutStore::stored_bytes`].
    async fn commit_writer(
        &self,
        writer: Box<dyn BlobWriter>,
        digest: ContentDigest,
    ) -> Result<Committed, StoreError> {
        let committed = self.blocking(move || writer.commit(&digest)).await?;
        Ok(self.counted(committed))
    }

    /// Counts a commit that added a blob.
    fn counted(&self, committed: Committed) -> Committed {
        if let Committed::Stored { len, new: true } = committed {
            self.stored_bytes.fetch_add(len, Ordering::Relaxed);
        }
        committed
    }

    fn has_bytes(&self, digest: &ContentDigest) -> bool {
        self.blobs.stat(digest).is_some()
    }

    /// Makes a batch durable, then shows it to readers. `Ok(false)`: a requirement vanished.
    async fn write(&self, batch: &[Change], requires: &[Requirement]) -> Result<bool, StoreError> {
        if !self.backend.commit(batch, requires).await? {
            return Ok(false);
        }
        let mut catalog = self.catalog.write().await;
        for change in batch {
            catalog.apply(change);
        }
        drop(catalog);
        if batch.iter().any(|c| !matches!(c, Change::LinkBlob { .. })) {
            self.index_dirty.notify_one();
        }
        Ok(true)
    }

    pub async fn start_upload(
        &self,
        repository: &str,
        client: IpAddr,
    ) -> Result<StartUpload, StoreError> {
        let expired = {
            let mut uploads = self.uploads.lock().await;
            let idle = self.limits.idle;
            let expired: Vec<String> = uploads
                .iter()
                .filter(|(_, u)| u.last_active.elapsed() > idle)
                .map(|(id, _)| id.clone())
                .collect();
            let expired: Vec<UploadEntry> =
                expired.iter().filter_map(|id| uploads.remove(id)).collect();
            if uploads.values().filter(|u| u.client == client).count() >= self.limits.per_client {
                drop(uploads);
                self.discard(expired).await;
                return Ok(StartUpload::TooMany);
            }
            expired
        };
        self.discard(expired).await;
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(StoreError::Random)?;
        let id = hex::encode(id);
        // A collection removes writers that have no session: none may run between the
        // writer's creation and its session's.
        let _w = self.collection.read().await;
        let writer = self.blobs.writer(&id).map_err(io_err(&self.shown()))?;
        let upload = Upload { writer };
        self.uploads.lock().await.insert(
            id.clone(),
            UploadEntry {
                repository: repository.to_string(),
                client,
                last_active: Instant::now(),
                slot: Arc::new(Mutex::new(Some(upload))),
            },
        );
        Ok(StartUpload::Started(id))
    }

    async fn discard(&self, expired: Vec<UploadEntry>) {
        for entry in expired {
            if let Some(upload) = entry.slot.lock().await.take() {
                tracing::info!(repository = %entry.repository, "dropping an idle upload");
                drop(upload.writer);
            }
        }
    }

    /// Appends bytes to an upload; `at`, when the client said where the chunk starts
    /// (`Content-Range`), must be where the upload ends.
    pub async fn append(
        &self,
        repository: &str,
        id: &str,
        at: Option<u64>,
        chunk: &[u8],
    ) -> Result<Append, StoreError> {
        let Some(slot) = self.slot(repository, id).await else {
            return Ok(Append::UnknownUpload);
        };
        let mut guard = slot.lock().await;
        let Some(upload) = guard.as_mut() else {
            return Ok(Append::UnknownUpload);
        };
        if at.is_some_and(|at| at != upload.writer.len()) {
            return Ok(Append::OutOfOrder(upload.writer.len()));
        }
        upload.writer.write(chunk).map_err(io_err(&self.shown()))?;
        Ok(Append::Appended(upload.writer.len()))
    }

    pub async fn upload_size(&self, repository: &str, id: &str) -> Option<u64> {
        let slot = self.slot(repository, id).await?;
        let guard = slot.lock().await;
        guard.as_ref().map(|u| u.writer.len())
    }

    async fn slot(&self, repository: &str, id: &str) -> Option<UploadSlot> {
        let mut uploads = self.uploads.lock().await;
        let entry = uploads.get_mut(id).filter(|e| e.repository == repository)?;
        entry.last_active = Instant::now();
        Some(entry.slot.clone())
    }

    /// Ends an upload: commits it as `digest` when the bytes match, discards it otherwise.
    pub async fn commit(
        &self,
        repository: &str,
        id: &str,
        digest: &ContentDigest,
    ) -> Result<CommitOutcome, StoreError> {
        // Held from before the session ends until the blob is linked: a collection never
        // sees the upload file without its session, nor the blob without its link.
        let _w = self.collection.read().await;
        let Some(upload) = self.take_upload(repository, id).await else {
            return Ok(CommitOutcome::UnknownUpload);
        };
        if let Committed::Mismatch { actual } = self.commit_writer(upload.writer, *digest).await? {
            return Ok(CommitOutcome::DigestMismatch(actual));
        }
        self.write(
            &[Change::LinkBlob {
                repo: repository.to_string(),
                digest: *digest,
            }],
            &[],
        )
        .await?;
        Ok(CommitOutcome::Committed)
    }

    pub async fn cancel(&self, repository: &str, id: &str) -> bool {
        match self.take_upload(repository, id).await {
            Some(upload) => {
                drop(upload.writer);
                true
            }
            None => false,
        }
    }

    /// Removes an upload, waiting for a write in progress on it to end.
    async fn take_upload(&self, repository: &str, id: &str) -> Option<Upload> {
        let slot = {
            let mut uploads = self.uploads.lock().await;
            if uploads.get(id).is_none_or(|e| e.repository != repository) {
                return None;
            }
            uploads.remove(id)?.slot
        };
        let mut guard = slot.lock().await;
        guard.take()
    }

    /// Blobs and manifests the catalog links that this directory does not hold (their
    /// metadata came from another node through etcd), each with a repository that links it.
    pub async fn missing_blobs(&self) -> Vec<(String, ContentDigest)> {
        let catalog = self.catalog.read().await;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (name, repo) in &catalog.repositories {
            for digest in repo.blobs.iter().chain(repo.manifests.keys()) {
                if seen.insert(*digest) && !self.has_bytes(digest) {
                    out.push((name.clone(), *digest));
                }
            }
        }
        out
    }

    /// Whether the bytes of `digest` are in this directory.
    pub fn holds(&self, digest: &ContentDigest) -> bool {
        self.has_bytes(digest)
    }

    /// Stores the bytes of a blob the catalog already links (a replica fetched from a peer):
    /// streamed to `.uploads/`, hashed, fsynced and renamed into place only when the digest
    /// matches; nothing is linked, the metadata is already there.
    pub async fn import_blob(
        &self,
        digest: &ContentDigest,
        download: &mut registry::client::BlobDownload,
    ) -> Result<ImportOutcome, StoreError> {
        let Some(want) = digest.as_sha256() else {
            return Ok(ImportOutcome::Unsupported);
        };
        let _w = self.collection.read().await;
        if self.has_bytes(digest) {
            return Ok(ImportOutcome::Stored(0));
        }
        let shown = self.shown();
        let mut writer = self
            .blobs
            .writer(&format!("replica-{}", &want.hex()[..16]))
            .map_err(io_err(&shown))?;
        loop {
            match download.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = writer.write(&chunk) {
                        drop(writer);
                        return Err(io_err(&shown)(e));
                    }
                }
                Ok(None) => break,
                Err(cause) => {
                    drop(writer);
                    return Err(StoreError::Fetch { path: shown, cause });
                }
            }
        }
        Ok(match self.commit_writer(writer, *digest).await? {
            Committed::Mismatch { .. } => ImportOutcome::DigestMismatch,
            Committed::Stored { len, .. } => ImportOutcome::Stored(len),
        })
    }

    /// Links a blob the store holds in `from` into `repository`.
    pub async fn mount(
        &self,
        repository: &str,
        digest: &ContentDigest,
        from: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.collection.read().await;
        let present = self.catalog.read().await.has_blob(from, digest);
        if !present || !self.has_bytes(digest) {
            return Ok(false);
        }
        self.write(
            &[Change::LinkBlob {
                repo: repository.to_string(),
                digest: *digest,
            }],
            &[],
        )
        .await
    }

    /// Stores a manifest after checking everything it references is in the repository, or,
    /// pushed by digest, a sparse index (see [`is_sparse_index`]).
    /// `digest` is the manifest's digest in the algorithm the client addressed it by.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: ContentDigest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PutManifest, StoreError> {
        let mut record = match ManifestRecord::parse(media_type, bytes) {
            Ok(r) => r,
            Err(e) => return Ok(PutManifest::Invalid(e)),
        };
        let _w = self.collection.read().await;
        let _o = self.ordered.lock().await;
        let missing = self.catalog.read().await.missing(repository, &record);
        if !missing.is_empty() {
            if tag.is_some() || !is_sparse_index(&record, &missing, bytes) {
                return Ok(PutManifest::Missing(missing));
            }
            // Stored sparse: only the children present are its children here.
            record.children.retain(|d| !missing.contains(d));
        }
        let gone: Vec<ContentDigest> = record
            .blobs
            .iter()
            .filter(|d| !self.has_bytes(d))
            .copied()
            .collect();
        if !gone.is_empty() {
            return Ok(PutManifest::Missing(gone));
        }
        if !self.has_bytes(&digest) {
            let put = self
                .blobs
                .put(&digest, bytes)
                .map_err(io_err(&self.shown()))?;
            // The digest was computed from these very bytes: only storage that changes what it
            // was given gets a mismatch.
            if let Committed::Mismatch { .. } = self.counted(put) {
                return Err(StoreError::Io {
                    path: self.shown(),
                    cause: io::Error::other("a stored manifest does not hash to its digest"),
                });
            }
        }
        let requires: Vec<Requirement> = record
            .blobs
            .iter()
            .map(|d| Requirement::Blob(repository.to_string(), *d))
            .chain(
                record
                    .children
                    .iter()
                    .map(|d| Requirement::Manifest(repository.to_string(), *d)),
            )
            .collect();
        let subject = record.subject;
        let mut batch = vec![Change::PutManifest {
            repo: repository.to_string(),
            digest,
            record,
        }];
        if let Some(tag) = tag {
            batch.push(Change::Tag {
                repo: repository.to_string(),
                tag: tag.to_string(),
                digest,
            });
        }
        if !self.write(&batch, &requires).await? {
            // Another node unlinked something between our check and the write.
            return Ok(PutManifest::Missing(Vec::new()));
        }
        Ok(PutManifest::Stored { digest, subject })
    }

    /// Deletes a manifest by digest (its tags with it, and its blobs' links where no other
    /// manifest of the repository needs them), or a tag alone.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Deleted, StoreError> {
        let _w = self.collection.read().await;
        let _o = self.ordered.lock().await;
        let batch = {
            let catalog = self.catalog.read().await;
            let Some(repo) = catalog.repository(repository) else {
                return Ok(Deleted::NotFound);
            };
            match reference.parse::<ContentDigest>() {
                Ok(digest) => {
                    let Some(record) = repo.manifests.get(&digest) else {
                        return Ok(Deleted::NotFound);
                    };
                    let mut batch: Vec<Change> = repo
                        .tags
                        .iter()
                        .filter(|(_, d)| **d == digest)
                        .map(|(tag, _)| Change::Untag {
                            repo: repository.to_string(),
                            tag: tag.clone(),
                        })
                        .collect();
                    batch.push(Change::DeleteManifest {
                        repo: repository.to_string(),
                        digest,
                    });
                    let still_needed: HashSet<&ContentDigest> = repo
                        .manifests
                        .iter()
                        .filter(|(d, _)| **d != digest)
                        .flat_map(|(_, r)| r.blobs.iter())
                        .collect();
                    batch.extend(
                        record
                            .blobs
                            .iter()
                            .filter(|b| !still_needed.contains(b))
                            .collect::<HashSet<_>>()
                            .into_iter()
                            .map(|b| Change::UnlinkBlob {
                                repo: repository.to_string(),
                                digest: *b,
                            }),
                    );
                    batch
                }
                Err(_) => {
                    if !repo.tags.contains_key(reference) {
                        return Ok(Deleted::NotFound);
                    }
                    vec![Change::Untag {
                        repo: repository.to_string(),
                        tag: reference.to_string(),
                    }]
                }
            }
        };
        self.write(&batch, &[]).await?;
        Ok(Deleted::Deleted)
    }

    /// Unlinks a blob from a repository; its bytes go at the next collection if nothing else
    /// needs them.
    pub async fn delete_blob(
        &self,
        repository: &str,
        digest: &ContentDigest,
    ) -> Result<Deleted, StoreError> {
        let _w = self.collection.read().await;
        let _o = self.ordered.lock().await;
        let linked = self
            .catalog
            .read()
            .await
            .repository(repository)
            .is_some_and(|r| r.blobs.contains(digest));
        if !linked {
            return Ok(Deleted::NotFound);
        }
        self.write(
            &[Change::UnlinkBlob {
                repo: repository.to_string(),
                digest: *digest,
            }],
            &[],
        )
        .await?;
        Ok(Deleted::Deleted)
    }

    /// Removes blobs that no manifest references and no repository links, and that are
    /// older than `grace` (blobs written by anything other than this process, say). Holds
    /// the collection guard exclusively throughout: a push waits for the collection instead
    /// of racing it, so no blob a manifest or an upload in flight needs is ever removed.
    pub async fn gc(&self, dry_run: bool, grace: Duration) -> Result<GcReport, StoreError> {
        let _w = self.collection.write().await;
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let keep = {
            let catalog = self.catalog.read().await;
            let mut keep = catalog.referenced();
            for repo in catalog.repositories.values() {
                keep.extend(repo.blobs.iter().copied());
            }
            keep
        };
        let blobs = self.blobs.clone();
        let held = self.blocking(move || blobs.list()).await?;
        let shown = self.shown();
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        for blob in held {
            if keep.contains(&blob.digest) || blob.written > cutoff {
                report.kept += 1;
                continue;
            }
            if !dry_run && self.blobs.delete(&blob.digest).map_err(io_err(&shown))? {
                self.stored_bytes.fetch_sub(blob.len, Ordering::Relaxed);
            }
            report.removed_bytes += blob.len;
            report.removed.push((blob.digest, blob.len));
        }
        report.removed.sort();
        // Writers with no upload session (a crash, or sessions that expired).
        let live: HashSet<String> = self.uploads.lock().await.keys().cloned().collect();
        report.stale_uploads = self.blobs.sweep(&live, dry_run);
        Ok(report)
    }

    /// Writes `index.json` now (it is otherwise written shortly after changes).
    pub async fn flush_index(&self) -> Result<(), StoreError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let descriptors = index_descriptors(&*self.catalog.read().await);
        write_atomic(
            &root.join("index.json"),
            &airgap::oci::layout_index(&descriptors),
        )
    }
}

/// The catalog as the changes that rebuild it, read from an `index.json` written before the
/// metadata backend existed (or by another tool).
fn import_index(root: &Path) -> Result<Vec<Change>, StoreError> {
    let index_path = root.join("index.json");
    let bytes = match fs::read(&index_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    let index: LayoutIndex =
        serde_json::from_slice(&bytes).map_err(|cause| StoreError::BadLayoutIndex {
            path: root.to_path_buf(),
            cause,
        })?;
    let mut catalog = Catalog::default();
    for d in index.manifests {
        let Some(repo) = d.annotations.get(REPOSITORY_ANNOTATION) else {
            continue;
        };
        let digest = ContentDigest::from(d.digest);
        let path = root.join(digest.blob_path());
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let record = ManifestRecord::parse(&d.media_type, &bytes).map_err(|cause| {
            StoreError::BadLayoutManifest {
                path: root.to_path_buf(),
                digest: digest.to_string(),
                cause,
            }
        })?;
        catalog.apply(&Change::PutManifest {
            repo: repo.clone(),
            digest,
            record,
        });
        let tag = d
            .annotations
            .get(REF_NAME_ANNOTATION)
            .and_then(|r| r.strip_prefix(repo.as_str()))
            .and_then(|r| r.strip_prefix(':'));
        if let Some(tag) = tag {
            catalog.apply(&Change::Tag {
                repo: repo.clone(),
                tag: tag.to_string(),
                digest,
            });
        }
    }
    Ok(catalog.snapshot())
}

/// `index.json`'s descriptors: one per (repository, manifest, tag), sha256 manifests only
/// (the layout's index has no room for another algorithm's descriptor in older readers).
fn index_descriptors(catalog: &Catalog) -> Vec<Descriptor> {
    let mut descriptors = Vec::new();
    for (name, repo) in &catalog.repositories {
        let mut tags_by_digest: BTreeMap<ContentDigest, Vec<&str>> = BTreeMap::new();
        for (tag, d) in &repo.tags {
            tags_by_digest.entry(*d).or_default().push(tag);
        }
        let mut manifests: Vec<_> = repo.manifests.iter().collect();
        manifests.sort_by_key(|(d, _)| **d);
        for (digest, record) in manifests {
            let Some(sha256) = digest.as_sha256() else {
                continue;
            };
            let tags = tags_by_digest.remove(digest).unwrap_or_default();
            let untagged = [None];
            let tagged: Vec<Option<&str>> = tags.into_iter().map(Some).collect();
            for tag in if tagged.is_empty() {
                &untagged[..]
            } else {
                &tagged[..]
            } {
                let mut annotations = BTreeMap::new();
                annotations.insert(REPOSITORY_ANNOTATION.to_string(), name.clone());
                if let Some(tag) = tag {
                    annotations.insert(REF_NAME_ANNOTATION.to_string(), format!("{name}:{tag}"));
                }
                descriptors.push(Descriptor {
                    media_type: record.media_type.clone(),
                    digest: sha256,
                    size: record.size,
                    platform: None,
                    artifact_type: None,
                    annotations,
                });
            }
        }
    }
    descriptors
}

/// Rewrites `index.json` a moment after changes arrive, so a burst of pushes costs one
/// rewrite, not one per push. A rewrite costs time in proportion to the store's size, so
/// rewrites are spaced at least ten times that apart: under a steady stream of pushes they
/// take a tenth of the time whatever the size, and a push never waits for one.
fn spawn_index_writer(root: PathBuf, catalog: Arc<RwLock<Catalog>>, dirty: Arc<Notify>) {
    tokio::spawn(async move {
        let mut last_cost = Duration::ZERO;
        loop {
            dirty.notified().await;
            tokio::time::sleep(INDEX_DEBOUNCE.max(last_cost * 10)).await;
            let started = Instant::now();
            let descriptors = index_descriptors(&*catalog.read().await);
            let path = root.join("index.json");
            let written = tokio::task::spawn_blocking(move || {
                write_atomic(&path, &airgap::oci::layout_index(&descriptors))
            })
            .await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "rewriting index.json");
            }
            last_cost = started.elapsed();
        }
    });
}

/// Writes through a temporary file in the same directory and renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        cause: e.error,
    })?;
    Ok(())
}

impl Store {
    pub fn is_writable(&self) -> bool {
        matches!(self, Store::Layout(_))
    }

    pub async fn catalog(&self) -> CatalogView<'_> {
        match self {
            Store::Archive(a) => CatalogView::Borrowed(&a.catalog),
            Store::Layout(l) => CatalogView::Locked(l.catalog.read().await),
        }
    }

    /// Bytes of a manifest or blob linked to `repository`.
    pub async fn blob(&self, repository: &str, digest: &ContentDigest) -> Option<BlobData> {
        if !self.catalog().await.has_blob(repository, digest) {
            return None;
        }
        self.content(digest)
    }

    fn content(&self, digest: &ContentDigest) -> Option<BlobData> {
        match self {
            Store::Archive(a) => {
                let located = a.archive.locate(&digest.as_sha256()?.blob_path()).ok()?;
                Some(BlobData::Archive {
                    file: a.archive.file().clone(),
                    offset: located.data_offset,
                    len: located.record.size,
                    digest: located.record.sha256,
                    stamp: a.stamp.clone(),
                })
            }
            Store::Layout(l) => l.blobs.read(digest),
        }
    }
}

pub enum CatalogView<'a> {
    Borrowed(&'a Catalog),
    Locked(tokio::sync::RwLockReadGuard<'a, Catalog>),
}

impl std::ops::Deref for CatalogView<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        match self {
            CatalogView::Borrowed(c) => c,
            CatalogView::Locked(g) => g,
        }
    }
}

/// A sparse index: an image index some of whose children are absent, each of them a
/// platform-specific manifest, with at least one child present. What a platform-filtered
/// mirror holds under the upstream index's digest, so `image@<upstream digest>` resolves to
/// the platforms it kept. Accepted only by digest (a tag never names a sparse index).
fn is_sparse_index(record: &ManifestRecord, missing: &[ContentDigest], bytes: &[u8]) -> bool {
    if record.children.is_empty()
        || missing.len() >= record.children.len()
        || missing.iter().any(|d| !record.children.contains(d))
    {
        return false;
    }
    let Ok(index) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let Some(children) = index["manifests"].as_array() else {
        return false;
    };
    missing.iter().all(|d| {
        let digest = d.to_string();
        children
            .iter()
            .filter(|c| c["digest"].as_str() == Some(digest.as_str()))
            .all(|c| c["platform"].is_object())
    })
}
