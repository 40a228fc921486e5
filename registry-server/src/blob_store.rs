//! Where a layout store keeps the bytes of its blobs: the [`BlobStore`] trait, the filesystem
//! implementation every node runs ([`FsBlobStore`], an OCI layout's `blobs/<alg>/<hex>`), and an
//! in-memory one ([`MemoryBlobStore`], distribution's `inmemory` driver) that the server's
//! handler tests run on.
//!
//! A blob only ever appears whole and as what its digest says: bytes go through a
//! [`BlobWriter`], which hashes them as they arrive, and become a blob only at
//! [`BlobWriter::commit`], when they hash to the digest named. Everything about *which*
//! repository links a blob lives in the metadata, not here.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use registry::content_digest::{ContentDigest, ContentHasher};

use airgap::parts::BundleFile;

/// Where one blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobData {
    Archive {
        file: Arc<BundleFile>,
        offset: u64,
        len: u64,
        /// The signed digest: a whole read is hashed and its last bytes held back until
        /// they match.
        digest: airgap::Digest,
        /// The bundle's files as they were verified: a ranged read is served only while they
        /// still are.
        stamp: Arc<PartsStamp>,
    },
    File {
        path: PathBuf,
        len: u64,
    },
    /// Held in memory ([`MemoryBlobStore`](crate::blob_store::MemoryBlobStore)).
    Memory(bytes::Bytes),
}

/// What a bundle's files looked like when it was verified (path, length, modification time
/// of each part). A served bundle is trusted only while they still look so: a file changed
/// under a running server is not served as what was verified.
#[derive(Debug)]
pub struct PartsStamp(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl PartsStamp {
    pub fn take(bundle: &Path) -> io::Result<Self> {
        let mut parts = Vec::new();
        for part in airgap::parts::bundle_parts(bundle)? {
            let meta = fs::metadata(&part)?;
            parts.push((part, meta.len(), meta.modified().ok()));
        }
        Ok(PartsStamp(parts))
    }

    pub fn unchanged(&self) -> bool {
        self.0.iter().all(|(path, len, modified)| {
            fs::metadata(path).is_ok_and(|m| m.len() == *len && m.modified().ok() == *modified)
        })
    }
}

impl BlobData {
    pub fn size(&self) -> u64 {
        match self {
            BlobData::Archive { len, .. } | BlobData::File { len, .. } => *len,
            BlobData::Memory(bytes) => bytes.len() as u64,
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
    Memory(bytes::Bytes),
}

impl BlobData {
    pub fn open(&self) -> io::Result<OpenBlob> {
        Ok(match self {
            BlobData::Archive {
                file, offset, len, ..
            } => OpenBlob::Archive {
                file: file.clone(),
                start: *offset,
                len: *len,
            },
            BlobData::File { path, len } => OpenBlob::File {
                file: fs::File::open(path)?,
                len: *len,
            },
            BlobData::Memory(bytes) => OpenBlob::Memory(bytes.clone()),
        })
    }
}

/// An opened blob read front to back.
pub struct BlobReader {
    blob: OpenBlob,
    offset: u64,
}

impl io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl OpenBlob {
    /// The blob as a [`Read`](io::Read) from its first byte.
    pub fn reader(self) -> BlobReader {
        BlobReader {
            blob: self,
            offset: 0,
        }
    }

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
            OpenBlob::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
        }
    }
}

/// One blob held: what `list` returns, what a garbage collection weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub digest: ContentDigest,
    pub len: u64,
    /// When it was written: a collection spares blobs younger than its grace period.
    pub written: SystemTime,
}

/// What a [`BlobWriter::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// In place; `new` is false when the blob was already held (the bytes were dropped).
    Stored { len: u64, new: bool },
    /// The bytes hash to `actual`, not to the digest named: nothing kept.
    Mismatch { actual: ContentDigest },
}

/// Bytes on their way to becoming a blob. Dropped without a [`commit`](BlobWriter::commit),
/// it discards them.
pub trait BlobWriter: Send {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Bytes written so far.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes the bytes the blob `digest` when they hash to it, durably; drops them otherwise.
    fn commit(self: Box<Self>, digest: &ContentDigest) -> io::Result<Committed>;
}

pub trait BlobStore: Send + Sync {
    /// The size of `digest`'s bytes, when held.
    fn stat(&self, digest: &ContentDigest) -> Option<u64>;
    /// `digest`'s bytes, for reads at any offset.
    fn read(&self, digest: &ContentDigest) -> Option<BlobData>;
    /// A writer named `id` (an upload's id: what [`BlobStore::sweep`] keeps).
    fn writer(&self, id: &str) -> io::Result<Box<dyn BlobWriter>>;
    /// Removes `digest`'s bytes; false when they were not held.
    fn delete(&self, digest: &ContentDigest) -> io::Result<bool>;
    /// Every blob held.
    fn list(&self) -> io::Result<Vec<BlobEntry>>;
    /// Removes what writers left behind (a crash, an expired upload) unless its id is in
    /// `live`; returns how many (counted only, in a dry run).
    fn sweep(&self, live: &HashSet<String>, dry_run: bool) -> usize;

    /// Stores `bytes` as `digest` at once (a manifest), checked like any write.
    fn put(&self, digest: &ContentDigest, bytes: &[u8]) -> io::Result<Committed> {
        let mut writer = self.writer(&format!("put-{}", &digest.hex()[..16]))?;
        writer.write(bytes)?;
        writer.commit(digest)
    }
}

/// An OCI layout's `blobs/` directory, with writers' files under `.uploads/` on the same
/// filesystem so a commit is a rename.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// The blobs of the layout at `root` (created when absent).
    pub fn open(root: &Path) -> io::Result<Self> {
        for dir in ["blobs/sha256", "blobs/sha512", ".uploads"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(FsBlobStore {
            root: root.to_path_buf(),
        })
    }

    /// The blobs of the layout at `root`, for reading only: nothing is created.
    pub fn reader(root: &Path) -> Self {
        FsBlobStore {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, digest: &ContentDigest) -> PathBuf {
        self.root.join(digest.blob_path())
    }
}

struct FsWriter {
    /// The file being written; `None` once it became a blob (or was removed).
    tmp: Option<PathBuf>,
    file: fs::File,
    hasher: ContentHasher,
    blobs: FsBlobStore,
}

/// A writer dropped without a commit (a cancelled request, say) leaves nothing behind.
impl Drop for FsWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl BlobWriter for FsWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.hasher.len()
    }

    fn commit(mut self: Box<Self>, digest: &ContentDigest) -> io::Result<Committed> {
        let Some(tmp) = self.tmp.clone() else {
            return Err(io::Error::other("the writer's file is gone"));
        };
        let len = self.hasher.len();
        let hasher = std::mem::replace(&mut self.hasher, ContentHasher::sha256());
        let actual = match digest {
            ContentDigest::Sha256(_) => hasher.finish(),
            // Bytes hash as sha256 while they stream (an upload names its digest only at the
            // end); a sha512 blob is read back once to check it.
            ContentDigest::Sha512(_) => rehash(&tmp, digest)?,
        };
        if actual != *digest {
            // Dropping the writer removes the file.
            return Ok(Committed::Mismatch { actual });
        }
        self.file.sync_all()?;
        let dest = self.blobs.path(digest);
        let new = !dest.exists();
        fs::rename(&tmp, &dest)?;
        self.tmp = None;
        Ok(Committed::Stored { len, new })
    }
}

fn rehash(path: &Path, want: &ContentDigest) -> io::Result<ContentDigest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = ContentHasher::for_digest(want);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// A writer's id as a file name: an upload's id is hex, anything else is reduced to what a
/// file name can safely hold (never a path).
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

impl BlobStore for FsBlobStore {
    fn stat(&self, digest: &ContentDigest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    fn read(&self, digest: &ContentDigest) -> Option<BlobData> {
        let path = self.path(digest);
        let len = fs::metadata(&path).ok()?.len();
        Some(BlobData::File { path, len })
    }

    fn writer(&self, id: &str) -> io::Result<Box<dyn BlobWriter>> {
        // Unique among this process's writers; a restart sweeps every earlier one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join(".uploads").join(format!(
            "{}.{}-{n}",
            file_name(id),
            std::process::id()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(Box::new(FsWriter {
            tmp: Some(tmp),
            file,
            hasher: ContentHasher::sha256(),
            blobs: self.clone(),
        }))
    }

    fn delete(&self, digest: &ContentDigest) -> io::Result<bool> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<BlobEntry>> {
        let mut out = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(algorithm);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temporary files of an atomic write in progress are not blobs.
                let Ok(digest) = format!("{algorithm}:{name}").parse::<ContentDigest>() else {
                    continue;
                };
                let meta = entry.metadata()?;
                out.push(BlobEntry {
                    digest,
                    len: meta.len(),
                    written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }

    fn sweep(&self, live: &HashSet<String>, dry_run: bool) -> usize {
        let live: HashSet<String> = live.iter().map(|id| file_name(id)).collect();
        let mut swept = 0;
        if let Ok(entries) = fs::read_dir(self.root.join(".uploads")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.split('.').next().unwrap_or_default();
                if !live.contains(id) {
                    swept += 1;
                    if !dry_run {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        swept
    }
}

/// Blobs in memory, as distribution's `inmemory` driver: for tests, and to prove the server
/// needs nothing of the filesystem but what [`BlobStore`] says.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobStore {
    blobs: Arc<Mutex<HashMap<ContentDigest, (Bytes, SystemTime)>>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, HashMap<ContentDigest, (Bytes, SystemTime)>> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct MemoryWriter {
    bytes: Vec<u8>,
    store: MemoryBlobStore,
}

impl BlobWriter for MemoryWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn commit(self: Box<Self>, digest: &ContentDigest) -> io::Result<Committed> {
        let actual = digest.same_algorithm_of(&self.bytes);
        if actual != *digest {
            return Ok(Committed::Mismatch { actual });
        }
        let MemoryWriter { bytes, store } = *self;
        let len = bytes.len() as u64;
        let mut blobs = store.blobs();
        let new = !blobs.contains_key(digest);
        if new {
            blobs.insert(*digest, (Bytes::from(bytes), SystemTime::now()));
        }
        Ok(Committed::Stored { len, new })
    }
}

impl BlobStore for MemoryBlobStore {
    fn stat(&self, digest: &ContentDigest) -> Option<u64> {
        self.blobs().get(digest).map(|(b, _)| b.len() as u64)
    }

    fn read(&self, digest: &ContentDigest) -> Option<BlobData> {
        self.blobs()
            .get(digest)
            .map(|(b, _)| BlobData::Memory(b.clone()))
    }

    fn writer(&self, _id: &str) -> io::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            bytes: Vec::new(),
            store: self.clone(),
        }))
    }

    fn delete(&self, digest: &ContentDigest) -> io::Result<bool> {
        Ok(self.blobs().remove(digest).is_some())
    }

    fn list(&self) -> io::Result<Vec<BlobEntry>> {
        Ok(self
            .blobs()
            .iter()
            .map(|(digest, (bytes, written))| BlobEntry {
                digest: *digest,
                len: bytes.len() as u64,
                written: *written,
            })
            .collect())
    }

    /// Nothing outlives a writer here: a dropped writer's bytes went with it.
    fn sweep(&self, _live: &HashSet<String>, _dry_run: bool) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> ContentDigest {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
        )
        .parse()
        .unwrap()
    }

    /// The contract both implementations keep.
    fn contract(store: &dyn BlobStore) {
        let good = digest(b"hello");
        let mut w = store.writer("0123abcd").unwrap();
        w.write(b"hel").unwrap();
        w.write(b"lo").unwrap();
        assert_eq!(w.len(), 5);
        assert_eq!(store.stat(&good), None, "visible before its commit");
        assert_eq!(
            w.commit(&good).unwrap(),
            Committed::Stored { len: 5, new: true }
        );
        assert_eq!(store.stat(&good), Some(5));
        let mut buf = [0u8; 3];
        let opened = store.read(&good).unwrap().open().unwrap();
        assert_eq!(opened.read_at(&mut buf, 2).unwrap(), 3);
        assert_eq!(&buf, b"llo");

        // Bytes that are not what the digest says never become a blob.
        let other = digest(b"other");
        let mut w = store.writer("0123abce").unwrap();
        w.write(b"tampered").unwrap();
        assert_eq!(
            w.commit(&other).unwrap(),
            Committed::Mismatch {
                actual: digest(b"tampered")
            }
        );
        assert_eq!(store.stat(&other), None);

        // The same bytes again: held once.
        assert_eq!(
            store.put(&good, b"hello").unwrap(),
            Committed::Stored { len: 5, new: false }
        );
        let listed: Vec<ContentDigest> = store.list().unwrap().iter().map(|e| e.digest).collect();
        assert_eq!(listed, [good]);

        // An aborted writer leaves nothing; a writer still open survives a sweep only while
        // its id is live.
        let mut w = store.writer("dead").unwrap();
        w.write(b"x").unwrap();
        drop(w);
        let open = store.writer("cafe").unwrap();
        let live: HashSet<String> = ["cafe".to_string()].into();
        assert_eq!(store.sweep(&live, false), 0);
        // A writer dropped without a commit (a cancelled request) leaves nothing either.
        drop(open);
        assert_eq!(store.sweep(&HashSet::new(), true), 0);

        assert!(store.delete(&good).unwrap());
        assert!(!store.delete(&good).unwrap());
        assert!(store.read(&good).is_none());
    }

    #[test]
    fn the_filesystem_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        contract(&store);
        // What a crash left under .uploads/ goes at the next sweep; a live upload's file stays.
        let _live = store.writer("feed").unwrap();
        std::fs::write(dir.path().join(".uploads/abandoned.0000"), b"x").unwrap();
        let live: HashSet<String> = ["feed".to_string()].into();
        assert_eq!(store.sweep(&live, true), 1);
        assert_eq!(store.sweep(&live, false), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join(".uploads"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn the_memory_store_keeps_the_contract() {
        contract(&MemoryBlobStore::new());
    }

    #[test]
    fn a_writer_id_is_never_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let w = store.writer("../../etc/passwd").unwrap();
        drop(w);
        assert_eq!(file_name("../../x"), "______x");
        assert!(!dir.path().join("etc").exists());
    }
}
