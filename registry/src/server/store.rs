//! Where the built-in registry's bytes come from: a verified bundle archive (read in place,
//! read-only) or an OCI layout directory that pushes write into.
//!
//! A layout directory is a standard OCI image layout; each (repository, manifest) pair is a
//! descriptor in `index.json` annotated with `io.airgap.repository`, plus the usual
//! `org.opencontainers.image.ref.name` (`<repository>:<tag>`) when tagged, so other tools can
//! read the directory too.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airgap::digest::DigestHasher;
use airgap::oci::{Descriptor, MAX_MANIFEST_SIZE, OCI_LAYOUT_FILE, REF_NAME_ANNOTATION};
use airgap::parts::BundleFile;
use airgap::{BundleArchive, Digest, PublicKey, VerifyError};
use tokio::sync::{Mutex, RwLock};

use super::catalog::Catalog;
use crate::manifest::References;
use crate::mirror::{mirrored_names, MirrorTarget};

pub const REPOSITORY_ANNOTATION: &str = "io.airgap.repository";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Bundle(#[from] VerifyError),
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path} is not an OCI layout directory: {reason}")]
    NotALayout { path: PathBuf, reason: String },
    #[error("manifest {digest} in the bundle is not valid: {reason}")]
    BadManifest { digest: Digest, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Where one blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobData {
    Archive {
        file: Arc<BundleFile>,
        offset: u64,
        len: u64,
    },
    File {
        path: PathBuf,
        len: u64,
    },
}

impl BlobData {
    pub fn size(&self) -> u64 {
        match self {
            BlobData::Archive { len, .. } | BlobData::File { len, .. } => *len,
        }
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
}

impl ArchiveStore {
    /// Verifies the whole bundle (signature, then every entry), then serves it in place.
    pub fn open(path: &Path, key: &PublicKey) -> Result<Self, StoreError> {
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
                   digest: Digest,
                   media_type: &str,
                   catalog: &mut Catalog|
         -> Result<References, StoreError> {
            let bytes = archive.read_small(&digest.blob_path(), MAX_MANIFEST_SIZE)?;
            let refs =
                References::parse(media_type, &bytes).map_err(|e| StoreError::BadManifest {
                    digest,
                    reason: e.to_string(),
                })?;
            catalog.add_manifest(repo, tag, digest, media_type, &refs);
            Ok(refs)
        };
        for name in mirrored_names(archive.verified().index(), &target) {
            let refs = add(
                &name.repository,
                name.tag.as_deref(),
                name.digest,
                &name.media_type,
                &mut catalog,
            )?;
            if let References::Manifests(children) = refs {
                for child in &children {
                    add(
                        &name.repository,
                        None,
                        child.digest,
                        &child.media_type,
                        &mut catalog,
                    )?;
                }
            }
        }
        Ok(ArchiveStore { archive, catalog })
    }
}

/// An upload in progress in a layout directory; `None` once committed or cancelled.
type UploadSlot = Arc<Mutex<Option<Upload>>>;

struct Upload {
    path: PathBuf,
    file: fs::File,
    hasher: DigestHasher,
}

pub struct LayoutStore {
    root: PathBuf,
    catalog: RwLock<Catalog>,
    /// Upload id -> (repository, the upload). Each upload has its own lock, so parallel
    /// uploads never wait on one another; the map's lock is held only to look one up.
    uploads: Mutex<HashMap<String, (String, UploadSlot)>>,
    /// Serializes `index.json` rewrites.
    index_lock: Mutex<()>,
}

#[derive(serde::Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl LayoutStore {
    /// Opens (or creates, when empty or absent) an OCI layout directory.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("blobs/sha256")).map_err(io_err(root))?;
        fs::create_dir_all(root.join(".uploads")).map_err(io_err(root))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT_FILE)?;
        }
        let index_path = root.join("index.json");
        let mut catalog = Catalog::default();
        if index_path.exists() {
            let bytes = fs::read(&index_path).map_err(io_err(&index_path))?;
            let index: LayoutIndex =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::NotALayout {
                    path: root.to_path_buf(),
                    reason: format!("index.json: {e}"),
                })?;
            for d in index.manifests {
                let Some(repo) = d.annotations.get(REPOSITORY_ANNOTATION) else {
                    continue;
                };
                let tag = d
                    .annotations
                    .get(REF_NAME_ANNOTATION)
                    .and_then(|r| r.strip_prefix(repo.as_str()))
                    .and_then(|r| r.strip_prefix(':'));
                let path = root.join(d.digest.blob_path());
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                let refs = References::parse(&d.media_type, &bytes).map_err(|e| {
                    StoreError::NotALayout {
                        path: root.to_path_buf(),
                        reason: format!("manifest {}: {e}", d.digest),
                    }
                })?;
                catalog.add_manifest(repo, tag, d.digest, &d.media_type, &refs);
            }
        }
        // Uploads do not survive a restart; clients start them over.
        if let Ok(entries) = fs::read_dir(root.join(".uploads")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(LayoutStore {
            root: root.to_path_buf(),
            catalog: RwLock::new(catalog),
            uploads: Mutex::new(HashMap::new()),
            index_lock: Mutex::new(()),
        })
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.blob_path())
    }

    pub async fn start_upload(&self, repository: &str) -> Result<String, StoreError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| StoreError::Io {
            path: self.root.clone(),
            cause: io::Error::other(e.to_string()),
        })?;
        let id = hex::encode(id);
        let path = self.root.join(".uploads").join(&id);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let upload = Upload {
            path,
            file,
            hasher: DigestHasher::new(),
        };
        self.uploads.lock().await.insert(
            id.clone(),
            (repository.to_string(), Arc::new(Mutex::new(Some(upload)))),
        );
        Ok(id)
    }

    /// Appends bytes to an upload. `None` when there is no such upload for the repository.
    pub async fn append(
        &self,
        repository: &str,
        id: &str,
        chunk: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let Some(slot) = self.slot(repository, id).await else {
            return Ok(None);
        };
        let mut guard = slot.lock().await;
        let Some(upload) = guard.as_mut() else {
            return Ok(None);
        };
        upload.file.write_all(chunk).map_err(io_err(&upload.path))?;
        upload.hasher.update(chunk);
        Ok(Some(upload.hasher.len()))
    }

    pub async fn upload_size(&self, repository: &str, id: &str) -> Option<u64> {
        let slot = self.slot(repository, id).await?;
        let guard = slot.lock().await;
        guard.as_ref().map(|u| u.hasher.len())
    }

    async fn slot(&self, repository: &str, id: &str) -> Option<UploadSlot> {
        let uploads = self.uploads.lock().await;
        uploads
            .get(id)
            .filter(|(repo, _)| repo == repository)
            .map(|(_, slot)| slot.clone())
    }

    /// Ends an upload: commits it as `digest` when the bytes match, discards it otherwise.
    pub async fn commit(
        &self,
        repository: &str,
        id: &str,
        digest: &Digest,
    ) -> Result<CommitOutcome, StoreError> {
        let Some(upload) = self.take_upload(repository, id).await else {
            return Ok(CommitOutcome::UnknownUpload);
        };
        let actual = upload.hasher.finish();
        if actual != *digest {
            let _ = fs::remove_file(&upload.path);
            return Ok(CommitOutcome::DigestMismatch(actual));
        }
        upload.file.sync_all().map_err(io_err(&upload.path))?;
        drop(upload.file);
        let dest = self.blob_file(digest);
        fs::rename(&upload.path, &dest).map_err(io_err(&dest))?;
        self.catalog.write().await.link_blob(repository, *digest);
        Ok(CommitOutcome::Committed)
    }

    pub async fn cancel(&self, repository: &str, id: &str) -> bool {
        match self.take_upload(repository, id).await {
            Some(upload) => {
                let _ = fs::remove_file(&upload.path);
                true
            }
            None => false,
        }
    }

    /// Removes an upload, waiting for a write in progress on it to end.
    async fn take_upload(&self, repository: &str, id: &str) -> Option<Upload> {
        let slot = {
            let mut uploads = self.uploads.lock().await;
            if uploads.get(id).is_none_or(|(repo, _)| repo != repository) {
                return None;
            }
            uploads.remove(id)?.1
        };
        let mut guard = slot.lock().await;
        guard.take()
    }

    /// Links a blob the store holds in `from` into `repository`.
    pub async fn mount(&self, repository: &str, digest: &Digest, from: &str) -> bool {
        let mut catalog = self.catalog.write().await;
        if catalog.has_blob(from, digest) && self.blob_file(digest).exists() {
            catalog.link_blob(repository, *digest);
            true
        } else {
            false
        }
    }

    /// Stores a manifest after checking everything it references is in the repository.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PutManifest, StoreError> {
        let refs = match References::parse(media_type, bytes) {
            Ok(r) => r,
            Err(e) => return Ok(PutManifest::Invalid(e.to_string())),
        };
        let digest = Digest::of(bytes);
        let _guard = self.index_lock.lock().await;
        {
            let catalog = self.catalog.read().await;
            let missing = catalog.missing(repository, &refs);
            if !missing.is_empty() {
                return Ok(PutManifest::Missing(missing));
            }
        }
        let path = self.blob_file(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        let mut catalog = self.catalog.write().await;
        catalog.add_manifest(repository, tag, digest, media_type, &refs);
        self.write_index(&catalog)?;
        Ok(PutManifest::Stored(digest))
    }

    fn write_index(&self, catalog: &Catalog) -> Result<(), StoreError> {
        let mut descriptors = Vec::new();
        for (name, repo) in &catalog.repositories {
            let mut tags_by_digest: BTreeMap<Digest, Vec<&str>> = BTreeMap::new();
            for (tag, d) in &repo.tags {
                tags_by_digest.entry(*d).or_default().push(tag);
            }
            let mut manifests: Vec<_> = repo.manifests.iter().collect();
            manifests.sort();
            for (digest, media_type) in manifests {
                let size = fs::metadata(self.blob_file(digest))
                    .map(|m| m.len())
                    .unwrap_or(0);
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
                        annotations
                            .insert(REF_NAME_ANNOTATION.to_string(), format!("{name}:{tag}"));
                    }
                    descriptors.push(Descriptor {
                        media_type: media_type.clone(),
                        digest: *digest,
                        size,
                        platform: None,
                        artifact_type: None,
                        annotations,
                    });
                }
            }
        }
        write_atomic(
            &self.root.join("index.json"),
            &airgap::oci::layout_index(&descriptors),
        )
    }
}

pub enum CommitOutcome {
    Committed,
    DigestMismatch(Digest),
    UnknownUpload,
}

pub enum PutManifest {
    Stored(Digest),
    Missing(Vec<Digest>),
    Invalid(String),
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
    pub async fn blob(&self, repository: &str, digest: &Digest) -> Option<BlobData> {
        if !self.catalog().await.has_blob(repository, digest) {
            return None;
        }
        self.content(digest)
    }

    fn content(&self, digest: &Digest) -> Option<BlobData> {
        match self {
            Store::Archive(a) => {
                let located = a.archive.locate(&digest.blob_path()).ok()?;
                Some(BlobData::Archive {
                    file: a.archive.file().clone(),
                    offset: located.data_offset,
                    len: located.record.size,
                })
            }
            Store::Layout(l) => {
                let path = l.blob_file(digest);
                let len = fs::metadata(&path).ok()?.len();
                Some(BlobData::File { path, len })
            }
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

/// A blob opened for reading at any offset (from a blocking thread).
pub enum OpenBlob {
    Archive {
        file: Arc<BundleFile>,
        start: u64,
        len: u64,
    },
    File {
        file: fs::File,
        len: u64,
    },
}

impl BlobData {
    pub fn open(&self) -> io::Result<OpenBlob> {
        Ok(match self {
            BlobData::Archive { file, offset, len } => OpenBlob::Archive {
                file: file.clone(),
                start: *offset,
                len: *len,
            },
            BlobData::File { path, len } => OpenBlob::File {
                file: fs::File::open(path)?,
                len: *len,
            },
        })
    }
}

impl OpenBlob {
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        match self {
            OpenBlob::Archive { file, start, len } => {
                let want = buf.len().min(len.saturating_sub(offset) as usize);
                file.read_at(&mut buf[..want], start + offset)
            }
            OpenBlob::File { file, len } => {
                let want = buf.len().min(len.saturating_sub(offset) as usize);
                file.read_at(&mut buf[..want], offset)
            }
        }
    }
}
