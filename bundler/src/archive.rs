//! Writing a planned bundle to disk. The archive is assembled in a private work directory beside
//! the output ([`BundleAssembly`]: sized up front, entries filled at their offsets by up to `-j`
//! workers at once) and renamed into place only when every entry was accepted, so a failed
//! build never leaves a partial bundle at `-o`.
//!
//! A registry blob is copied from the cache when the cache holds it, or from a bundle the
//! cache recorded ([`PreviousBundles`]); hashed on the way either way: a corrupt source is
//! dropped and the blob fetched again. Otherwise it is downloaded once, straight into the
//! bundle: one write of each byte. A build that fails keeps what it downloaded by copying the
//! accepted blobs into the cache, so the next run resumes instead of starting over.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use airgap::assembly::BundleAssembly;
use airgap::digest::COPY_BUFFER;
use airgap::writer::WriteError;
use airgap::{Digest, SigningKey};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::BlobCache;
use crate::plan::{BuildPlan, EntrySource};
use crate::previous_bundles::PreviousBundles;
use crate::registry_source::{fetch_blob, BlobTarget, FetchError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Source(#[from] crate::layout_source::SourceError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{path}: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("a build worker stopped unexpectedly")]
    Worker(#[source] tokio::task::JoinError),
    #[error("the build's transfer pool closed")]
    Pool(#[source] tokio::sync::AcquireError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |cause| ArchiveError::Io {
        path: path.display().to_string(),
        cause,
    }
}

/// Where a blob's bytes came from, for progress and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOrigin {
    Registry,
    Cache,
    Local,
}

/// Told what the build does as it does it (progress bars, logs). Called from many threads.
pub trait BuildObserver: Send + Sync {
    /// The plan is made; `size` bytes of content are about to be written.
    fn planned(&self, _index: &airgap::BundleIndex) {}
    fn blob_started(&self, _digest: &Digest, _size: u64, _origin: BlobOrigin) {}
    /// `bytes` more of the blob arrived (repeats after a restarted download).
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _digest: &Digest) {}
}

/// Counts of where the content came from.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub downloaded_blobs: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub cached_blobs: AtomicU64,
    pub cached_bytes: AtomicU64,
}

pub struct WriteOptions<'a> {
    pub key: &'a SigningKey,
    pub mtime: u64,
    pub workdir: &'a Path,
    pub output: &'a Path,
    pub split: Option<u64>,
    pub jobs: usize,
    pub cache: &'a BlobCache,
    /// Whether this build uses a kept cache (`--no-cache`: not): the finished bundle is then
    /// recorded for later builds to read blobs from, and a failed build leaves its downloads.
    pub keep_in_cache: bool,
}

/// Writes the plan and moves the result to `output` (or `output.000`, ... when split).
/// Returns the files written.
pub async fn write_bundle(
    plan: Arc<BuildPlan>,
    options: &WriteOptions<'_>,
    observer: Arc<dyn BuildObserver>,
    stats: Arc<WriteStats>,
) -> Result<Vec<PathBuf>, ArchiveError> {
    let parts_dir = options.workdir.join("out");
    fs::create_dir(&parts_dir).map_err(io_err(&parts_dir))?;
    let assembly = BundleAssembly::create(
        &parts_dir,
        &plan.index,
        options.key,
        options.mtime,
        options.split,
    )?;
    let previous = Arc::new(match options.keep_in_cache {
        true => PreviousBundles::load(options.cache),
        false => PreviousBundles::default(),
    });
    let result = fill(&plan, &assembly, &previous, options, observer, stats).await;
    if let Err(e) = &result {
        if options.keep_in_cache && !matches!(e, ArchiveError::Worker(_) | ArchiveError::Pool(_)) {
            salvage(&plan, &assembly, options.cache).await;
        }
    }
    result?;
    let parts = assembly.finish()?;
    let files = place(&parts, options.output, options.split.is_some())?;
    if options.keep_in_cache {
        if let Some(first) = files.first() {
            if let Err(e) = PreviousBundles::record(options.cache, first) {
                tracing::warn!(error = %e, "the bundle is built but not recorded in the cache");
            }
        }
    }
    Ok(files)
}

/// Fills every entry of the assembly, up to `jobs` at once.
async fn fill(
    plan: &Arc<BuildPlan>,
    assembly: &Arc<BundleAssembly>,
    previous: &Arc<PreviousBundles>,
    options: &WriteOptions<'_>,
    observer: Arc<dyn BuildObserver>,
    stats: Arc<WriteStats>,
) -> Result<(), ArchiveError> {
    let pool = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut workers = JoinSet::new();
    for (position, entry) in plan.entries.iter().enumerate() {
        if let EntrySource::Memory(bytes) = &entry.source {
            let mut slot = assembly.slot(position);
            slot.write(bytes)?;
            slot.finish()?;
            observer.blob_progress(&entry.record.sha256, bytes.len() as u64);
            continue;
        }
        let job = Job {
            plan: plan.clone(),
            position,
            assembly: assembly.clone(),
            cache: options.cache.clone(),
            previous: previous.clone(),
            keep_in_cache: options.keep_in_cache,
            observer: observer.clone(),
            stats: stats.clone(),
        };
        // Permits are taken here, in entry order, so transfers start in plan order and a
        // failure stops the build before more are started.
        let permit = pool
            .clone()
            .acquire_owned()
            .await
            .map_err(ArchiveError::Pool)?;
        while let Some(done) = workers.try_join_next() {
            settle(done, &mut workers)?;
        }
        workers.spawn(async move {
            let _permit = permit;
            job.run().await
        });
    }
    while let Some(done) = workers.join_next().await {
        settle(done, &mut workers)?;
    }
    Ok(())
}

/// After a failure: copies every downloaded blob the assembly accepted into the cache (from
/// the page cache, where it was just written), so that running the same build again fetches
/// only the rest. Best effort: a full disk, say, just leaves less to reuse.
async fn salvage(plan: &Arc<BuildPlan>, assembly: &Arc<BundleAssembly>, cache: &BlobCache) {
    let (plan, assembly, cache) = (plan.clone(), assembly.clone(), cache.clone());
    let kept = tokio::task::spawn_blocking(move || {
        let mut kept = 0;
        for (position, entry) in plan.entries.iter().enumerate() {
            let EntrySource::Remote { digest, .. } = &entry.source else {
                continue;
            };
            if cache.contains(digest) {
                continue;
            }
            let Some(mut bytes) = assembly.accepted_entry(position) else {
                continue;
            };
            let Ok(pending) = cache.begin(digest) else {
                return kept;
            };
            if io::copy(&mut bytes, &mut pending.file()).is_err() || pending.commit().is_err() {
                return kept;
            }
            kept += 1;
        }
        kept
    })
    .await
    .unwrap_or(0);
    if kept > 0 {
        tracing::info!(
            blobs = kept,
            "kept the blobs downloaded so far in the cache for the next run"
        );
    }
}

type Finished = Result<Result<(), ArchiveError>, tokio::task::JoinError>;

/// The first failure stops every other transfer.
fn settle(
    done: Finished,
    workers: &mut JoinSet<Result<(), ArchiveError>>,
) -> Result<(), ArchiveError> {
    let result = done.map_err(ArchiveError::Worker).and_then(|r| r);
    if result.is_err() {
        workers.abort_all();
    }
    result
}

/// Filling one entry.
struct Job {
    plan: Arc<BuildPlan>,
    position: usize,
    assembly: Arc<BundleAssembly>,
    cache: BlobCache,
    previous: Arc<PreviousBundles>,
    keep_in_cache: bool,
    observer: Arc<dyn BuildObserver>,
    stats: Arc<WriteStats>,
}

impl Job {
    async fn run(self) -> Result<(), ArchiveError> {
        let entry = &self.plan.entries[self.position];
        let (digest, size) = (entry.record.sha256, entry.record.size);
        match &entry.source {
            EntrySource::Memory(_) => Ok(()),
            EntrySource::Layout { .. } | EntrySource::File(_) => {
                self.observer.blob_started(&digest, size, BlobOrigin::Local);
                self.copy_local().await
            }
            EntrySource::Remote { remote, .. } => {
                if self.cache.contains(&digest) {
                    self.observer.blob_started(&digest, size, BlobOrigin::Cache);
                    match self.copy_local().await {
                        Ok(()) => {
                            self.count_reused(size);
                            return Ok(());
                        }
                        Err(e) if is_corrupt_source(&e) => self.cache.evict(&digest),
                        Err(e) => return Err(e),
                    }
                }
                for (bundle, bytes) in self.previous.candidates(&digest) {
                    self.observer.blob_started(&digest, size, BlobOrigin::Cache);
                    match self.copy_from(Box::new(bytes)).await {
                        Ok(()) => {
                            self.count_reused(size);
                            return Ok(());
                        }
                        // Unreadable (truncated since) counts as changed, too.
                        Err(e) if is_corrupt_source(&e) || matches!(e, ArchiveError::Io { .. }) => {
                            self.previous.corrupt(bundle)
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.download(*remote, digest, size).await
            }
        }
    }

    /// A blob that came from the cache or a recorded bundle.
    fn count_reused(&self, size: u64) {
        // Without a kept cache, the only cached blobs are pack layers this build downloaded
        // while planning.
        let (blobs, bytes) = match self.keep_in_cache {
            true => (&self.stats.cached_blobs, &self.stats.cached_bytes),
            false => (&self.stats.downloaded_blobs, &self.stats.downloaded_bytes),
        };
        blobs.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(size, Ordering::Relaxed);
    }

    async fn download(&self, remote: usize, digest: Digest, size: u64) -> Result<(), ArchiveError> {
        let image = &self.plan.remotes[remote];
        self.observer
            .blob_started(&digest, size, BlobOrigin::Registry);
        let mut slot = self.assembly.slot(self.position);
        let observer = &self.observer;
        fetch_blob(
            &image.client,
            &image.repository,
            &digest,
            size,
            &image.shown,
            BlobTarget {
                pending: None,
                slot: Some(&mut slot),
            },
            &|n| observer.blob_progress(&digest, n),
        )
        .await?;
        slot.finish()?;
        self.stats.downloaded_blobs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .downloaded_bytes
            .fetch_add(size, Ordering::Relaxed);
        self.observer.blob_finished(&digest);
        Ok(())
    }

    /// Copies a local file (layout blob, pack layer, cached blob) into the entry on a blocking
    /// thread, hashing it on the way.
    async fn copy_local(&self) -> Result<(), ArchiveError> {
        let entry = &self.plan.entries[self.position];
        let reader: Box<dyn Read + Send> = match &entry.source {
            EntrySource::Layout { source, digest } => {
                self.plan.sources[*source].open_blob(digest)?
            }
            EntrySource::File(path) => Box::new(File::open(path).map_err(io_err(path))?),
            EntrySource::Remote { digest, .. } => {
                let path = self.cache.path(digest);
                Box::new(File::open(&path).map_err(io_err(&path))?)
            }
            EntrySource::Memory(bytes) => Box::new(io::Cursor::new(bytes.clone())),
        };
        self.copy_from(reader).await
    }

    /// Copies `reader` into the entry on a blocking thread; the slot hashes it on the way.
    async fn copy_from(&self, mut reader: Box<dyn Read + Send>) -> Result<(), ArchiveError> {
        let plan = self.plan.clone();
        let position = self.position;
        let mut slot = self.assembly.slot(position);
        let observer = self.observer.clone();
        tokio::task::spawn_blocking(move || {
            let entry = &plan.entries[position];
            let digest = entry.record.sha256;
            let mut buf = vec![0u8; COPY_BUFFER];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(cause) => {
                        return Err(ArchiveError::Io {
                            path: entry.record.path.to_string(),
                            cause,
                        })
                    }
                };
                slot.write(&buf[..n])?;
                observer.blob_progress(&digest, n as u64);
            }
            slot.finish()?;
            observer.blob_finished(&digest);
            Ok(())
        })
        .await
        .map_err(ArchiveError::Worker)?
    }
}

/// The source's bytes were not the entry's: a cached or recorded copy to drop.
fn is_corrupt_source(e: &ArchiveError) -> bool {
    matches!(
        e,
        ArchiveError::Write(WriteError::SourceMismatch { .. } | WriteError::Oversized { .. })
    )
}

fn place(parts: &[PathBuf], output: &Path, split: bool) -> Result<Vec<PathBuf>, ArchiveError> {
    if !split {
        let [only] = parts else {
            return Err(ArchiveError::Io {
                path: output.display().to_string(),
                cause: io::Error::other("expected one part"),
            });
        };
        fs::rename(only, output).map_err(io_err(output))?;
        return Ok(vec![output.to_path_buf()]);
    }
    let mut placed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let target = PathBuf::from(format!("{}.{i:03}", output.display()));
        fs::rename(part, &target).map_err(io_err(&target))?;
        placed.push(target);
    }
    // Parts left over from an earlier, longer build would be read as part of this one.
    for i in parts.len().. {
        let stale = PathBuf::from(format!("{}.{i:03}", output.display()));
        if fs::remove_file(&stale).is_err() {
            break;
        }
    }
    Ok(placed)
}
