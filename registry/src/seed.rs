//! Pushing a verified release into a registry, from a bundle or from another registry: the
//! one copy path behind `registry seed`, the install's registry phase, `registry sync` and
//! `upgrade --from-registry`.
//!
//! [`SeedPlan`] is derived from the signed index and the release's own manifests (each read and
//! digest-checked): which blobs each repository needs and in what order manifests go. Running
//! it uploads every blob once (streamed straight from the archive or the source registry,
//! hashed on the way, and committed only when the hash matches the signed index), mounts it
//! into the other repositories that share it, skips whatever the target already has, and pushes
//! manifests last, byte for byte, children before parents; the signed index itself is
//! published after everything it names. A re-run after an interruption only sends what did
//! not arrive.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use airgap::archive::EntryReader;
use airgap::oci::MAX_MANIFEST_SIZE;
use airgap::{BundleArchive, Digest, VerifiedIndex, VerifyError};
use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use crate::client::{MountOutcome, RegistryClient, RegistryError, UploadSession};
use crate::download::{DigestMismatch, DownloadError};
use crate::manifest::References;
use crate::mirror::{mirrored_names, MirrorTarget};
use crate::release_artifact::{PublishedRelease, ReleaseParts};

/// Where the release being seeded is read from.
#[derive(Debug, Clone)]
pub enum ReleaseSource {
    /// A bundle whose signature verified.
    Archive(Arc<BundleArchive>),
    /// A registry the release was seeded into, its signed index verified.
    Registry(Arc<PublishedRelease>),
}

impl ReleaseSource {
    pub fn verified(&self) -> &VerifiedIndex {
        match self {
            ReleaseSource::Archive(a) => a.verified(),
            ReleaseSource::Registry(r) => r.verified(),
        }
    }

    /// The bundle, when the release comes from one.
    pub fn archive(&self) -> Option<&Arc<BundleArchive>> {
        match self {
            ReleaseSource::Archive(a) => Some(a),
            ReleaseSource::Registry(_) => None,
        }
    }

    /// The signed index and its signature, as published next to the content.
    pub fn parts(&self) -> ReleaseParts {
        match self {
            ReleaseSource::Archive(a) => {
                let (index, signatures) = a.signed_index();
                ReleaseParts {
                    index: index.to_vec(),
                    signature: signatures.to_bytes(),
                }
            }
            ReleaseSource::Registry(r) => r.parts.clone(),
        }
    }

    /// A manifest of the release, digest-checked, with what it references. `repository` is
    /// where a registry source holds it.
    async fn read_manifest(
        &self,
        repository: &str,
        digest: Digest,
        media_type: &str,
    ) -> Result<(Bytes, References), SeedError> {
        let bytes = match self {
            ReleaseSource::Archive(a) => {
                Bytes::from(a.read_small(&digest.blob_path(), MAX_MANIFEST_SIZE)?)
            }
            ReleaseSource::Registry(r) => {
                // Fetched by digest: the client refuses content that does not hash to it.
                let fetched = r
                    .client
                    .get_manifest(repository, &digest.to_string(), &[media_type])
                    .await?
                    .ok_or_else(|| SeedError::ManifestMissing {
                        at: format!("{}/{repository}", r.client.host()),
                        digest,
                    })?;
                Bytes::from(fetched.bytes)
            }
        };
        let refs =
            References::parse(media_type, &bytes).map_err(|cause| SeedError::BadManifest {
                digest,
                media_type: media_type.to_string(),
                cause,
            })?;
        Ok((bytes, refs))
    }
}

/// Bytes per chunk read from the archive; a few chunks per upload are in flight at once.
const CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("bundle: {0}")]
    Bundle(#[from] VerifyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("manifest {digest} in the bundle is not valid JSON of type {media_type}")]
    BadManifest {
        digest: Digest,
        media_type: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error(
        "blob {digest} is neither in the bundle nor among the blobs it expects the target to have"
    )]
    BlobNotInBundle { digest: Digest },
    #[error("the target lacks {} blob(s) this delta bundle expects from its base {base}; seed the base bundle first: {}", .missing.len(), digest_list(.missing))]
    DeltaBaseMissing { base: String, missing: Vec<Digest> },
    #[error("an internal task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("{at} lacks manifest {digest}, which the release's signed index names; seed the release there again")]
    ManifestMissing { at: String, digest: Digest },
    #[error(transparent)]
    Corrupt(Box<DigestMismatch>),
    #[error("{first}{}; something else writes to these repositories: find what, then seed again", if *.more > 0 { format!(" (and {} more tags)", .more) } else { String::new() })]
    TagDrift {
        first: Box<crate::tag_check::TagDrift>,
        more: usize,
    },
}

fn digest_list(d: &[Digest]) -> String {
    let mut shown: Vec<String> = d.iter().take(5).map(|d| d.to_string()).collect();
    if d.len() > 5 {
        shown.push(format!("and {} more", d.len() - 5));
    }
    shown.join(", ")
}

/// One manifest push: children before parents within a repository.
#[derive(Debug, Clone)]
pub struct ManifestPush {
    pub repository: String,
    /// Tag, or the digest for untagged manifests.
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// A platform-filtered image's upstream index, pushed by digest: a sparse index (children
    /// of the filtered-out platforms absent). A registry that refuses it is reported, not an
    /// error: the image still pulls by tag and by its bundle digest.
    pub sparse: bool,
}

/// A blob and the repositories that need it, in the order they are served.
#[derive(Debug, Clone)]
pub struct BlobPush {
    pub digest: Digest,
    pub size: u64,
    pub repositories: Vec<String>,
    /// Where a registry source holds it (a repository under the source's prefix).
    pub source_repository: String,
    /// Not in this bundle: a delta bundle expects the target to have it.
    pub expected: bool,
}

#[derive(Debug, Clone)]
pub struct SeedPlan {
    pub blobs: Vec<BlobPush>,
    pub manifests: Vec<ManifestPush>,
    /// Where the release's signed index is published (`<prefix>/airgap/releases`).
    pub releases_repository: String,
}

impl SeedPlan {
    /// The plan for seeding `source` into `target`. A bundle's manifests are read from the
    /// archive; a registry source's from the source registry, by digest.
    pub async fn new(source: &ReleaseSource, target: &MirrorTarget) -> Result<Self, SeedError> {
        let index = source.verified().index();
        // A bundle carries some blobs; a delta leaves out the ones its base delivered. A
        // registry source holds them all (the base was seeded there before the delta).
        let in_source: Option<BTreeMap<Digest, u64>> = source.archive().map(|_| {
            index
                .entries
                .iter()
                .filter(|e| e.path.as_str().starts_with("blobs/sha256/"))
                .map(|e| (e.sha256, e.size))
                .collect()
        });
        let expected: HashSet<Digest> = index.expected_blobs.iter().copied().collect();
        let source_names = match source {
            ReleaseSource::Archive(_) => mirrored_names(index, target),
            ReleaseSource::Registry(r) => mirrored_names(index, &r.at),
        };
        let mut blobs: BTreeMap<Digest, BlobPush> = BTreeMap::new();
        let mut order: Vec<Digest> = Vec::new();
        let mut manifests = Vec::new();
        let mut pushed: HashSet<(String, Digest)> = HashSet::new();
        // A platform-filtered image's upstream index, where the source carries it.
        let upstream = index
            .images
            .iter()
            .map(|i| (i.upstream_digest != i.digest).then_some(i.upstream_digest))
            .chain(index.packs.iter().map(|_| None));
        for ((name, from), upstream) in mirrored_names(index, target)
            .into_iter()
            .zip(source_names)
            .zip(upstream)
        {
            let from = from.repository;
            let mut need_blob = |digest: Digest, size: u64| -> Result<(), SeedError> {
                let expected_blob = in_source
                    .as_ref()
                    .is_some_and(|carried| !carried.contains_key(&digest));
                if expected_blob && !expected.contains(&digest) {
                    return Err(SeedError::BlobNotInBundle { digest });
                }
                let entry = blobs.entry(digest).or_insert_with(|| {
                    order.push(digest);
                    BlobPush {
                        digest,
                        size,
                        repositories: Vec::new(),
                        source_repository: from.clone(),
                        expected: expected_blob,
                    }
                });
                if !entry.repositories.contains(&name.repository) {
                    entry.repositories.push(name.repository.clone());
                }
                Ok(())
            };
            let (root_bytes, root_refs) = source
                .read_manifest(&from, name.digest, &name.media_type)
                .await?;
            let mut tree = Vec::new();
            match &root_refs {
                References::Manifests(children) => {
                    for child in children {
                        let (bytes, refs) = source
                            .read_manifest(&from, child.digest, &child.media_type)
                            .await?;
                        if let References::Blobs(blobs) = refs {
                            for d in &blobs {
                                need_blob(d.digest, d.size)?;
                            }
                            tree.push((child.digest, child.media_type.clone(), bytes));
                        }
                    }
                }
                References::Blobs(blobs) => {
                    for d in blobs {
                        need_blob(d.digest, d.size)?;
                    }
                }
            }
            for (digest, media_type, bytes) in tree {
                if pushed.insert((name.repository.clone(), digest)) {
                    manifests.push(ManifestPush {
                        repository: name.repository.clone(),
                        reference: digest.to_string(),
                        digest,
                        media_type,
                        bytes,
                        sparse: false,
                    });
                }
            }
            let reference = name.tag.clone().unwrap_or_else(|| name.digest.to_string());
            manifests.push(ManifestPush {
                repository: name.repository.clone(),
                reference,
                digest: name.digest,
                media_type: name.media_type.clone(),
                bytes: root_bytes,
                sparse: false,
            });
            let carried = match (&in_source, upstream) {
                (_, None) => None,
                (Some(carried), Some(d)) => carried.contains_key(&d).then_some(d),
                (None, Some(d)) => Some(d),
            };
            if let Some(digest) = carried {
                match source.read_manifest(&from, digest, &name.media_type).await {
                    Ok((bytes, _)) if pushed.insert((name.repository.clone(), digest)) => {
                        manifests.push(ManifestPush {
                            repository: name.repository.clone(),
                            reference: digest.to_string(),
                            digest,
                            media_type: name.media_type.clone(),
                            bytes,
                            sparse: true,
                        });
                    }
                    // A registry seeded before upstream indexes were carried lacks it.
                    Ok(_) | Err(SeedError::ManifestMissing { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let blobs = order.into_iter().filter_map(|d| blobs.remove(&d)).collect();
        Ok(SeedPlan {
            blobs,
            manifests,
            releases_repository: target.repository(crate::release_artifact::REPOSITORY),
        })
    }

    /// Bytes of blobs this bundle carries: what a cold seed sends.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|b| !b.expected)
            .map(|b| b.size)
            .sum()
    }
}

/// What happened to each blob and manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    /// (repository, blob) pairs the target already had.
    pub blobs_present: usize,
    pub manifests_pushed: usize,
    pub manifests_present: usize,
    /// Upstream indexes of platform-filtered images the target refused to hold sparse
    /// (`repository@digest`): pulls by those digests fail there; by tag they work.
    pub sparse_refused: Vec<String>,
    /// Whether the release artifact was pushed now (false: it was there).
    pub release_published: bool,
}

/// Progress callbacks; all have no-op defaults.
pub trait SeedObserver: Send + Sync {
    /// `n` more bytes of a blob left the archive for the target.
    fn bytes_sent(&self, _n: u64) {}
    /// A blob needs no upload (present or mounted everywhere): its bytes count as done.
    fn blob_skipped(&self, _size: u64) {}
    /// An upload started over after a transient failure: `n` bytes are sent again.
    fn bytes_resent(&self, _n: u64) {}
    fn manifest_done(&self) {}
}

pub struct NoProgress;
impl SeedObserver for NoProgress {}

pub struct Seeder {
    pub source: ReleaseSource,
    pub client: Arc<RegistryClient>,
    pub jobs: usize,
    pub observer: Arc<dyn SeedObserver>,
}

#[derive(Default)]
struct Counts {
    uploaded: usize,
    bytes: u64,
    mounted: usize,
    present: usize,
}

impl Seeder {
    pub async fn run(&self, plan: &SeedPlan) -> Result<SeedReport, SeedError> {
        self.client.ping().await?;
        self.check_delta_base(plan).await?;
        let permits = Arc::new(Semaphore::new(self.jobs.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for blob in plan.blobs.iter().filter(|b| !b.expected) {
            let blob = blob.clone();
            let permits = permits.clone();
            let source = self.source.clone();
            let client = self.client.clone();
            let observer = self.observer.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                seed_blob(&source, &client, &blob, &observer).await
            });
        }
        let mut counts = Counts::default();
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(SeedError::Task).and_then(|r| r) {
                Ok(c) => {
                    counts.uploaded += c.uploaded;
                    counts.bytes += c.bytes;
                    counts.mounted += c.mounted;
                    counts.present += c.present;
                }
                Err(e) => {
                    // Stop scheduling more work; let running uploads end on their own.
                    if first_error.is_none() {
                        permits.close();
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let (pushed, present, sparse_refused) = self.push_manifests(plan).await?;
        // Read back: a registry that kept another manifest under a signed tag (or a writer
        // racing this one) must not pass for seeded.
        let tags = plan
            .manifests
            .iter()
            .filter(|m| m.reference.parse::<Digest>().is_err())
            .map(|m| crate::tag_check::SignedTag {
                repository: m.repository.clone(),
                tag: m.reference.clone(),
                digest: m.digest,
                media_type: m.media_type.clone(),
            })
            .collect();
        let drift = crate::tag_check::check_signed_tags(&self.client, tags, self.jobs).await?;
        if let Some(first) = drift.first() {
            return Err(SeedError::TagDrift {
                first: Box::new(first.clone()),
                more: drift.len() - 1,
            });
        }
        // Last: a release is listed in the registry only once all of its content is there.
        let index = self.source.verified().index();
        let parts = self.source.parts();
        let release_present = crate::release_artifact::publish(
            &self.client,
            &plan.releases_repository,
            &parts,
            &index.name,
            &index.version.to_string(),
        )
        .await?;
        Ok(SeedReport {
            blobs_uploaded: counts.uploaded,
            bytes_uploaded: counts.bytes,
            blobs_mounted: counts.mounted,
            blobs_present: counts.present,
            manifests_pushed: pushed,
            manifests_present: present,
            sparse_refused,
            release_published: !release_present,
        })
    }

    /// A delta bundle leaves out blobs its base delivered: make sure they are there before
    /// anything is pushed, mounting across repositories where the target has them elsewhere.
    async fn check_delta_base(&self, plan: &SeedPlan) -> Result<(), SeedError> {
        let mut missing = Vec::new();
        for blob in plan.blobs.iter().filter(|b| b.expected) {
            let mut holder = None;
            let mut lacking = Vec::new();
            for repo in &blob.repositories {
                if self.client.blob_exists(repo, &blob.digest).await? {
                    holder.get_or_insert_with(|| repo.clone());
                } else {
                    lacking.push(repo.clone());
                }
            }
            let Some(holder) = holder else {
                missing.push(blob.digest);
                continue;
            };
            for repo in lacking {
                if let MountOutcome::Declined(session) =
                    self.client.mount_blob(&repo, &blob.digest, &holder).await?
                {
                    self.client.cancel_upload(&repo, session).await;
                    missing.push(blob.digest);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let index = self.source.verified().index();
        let base = index
            .base
            .as_ref()
            .map(|b| format!("{} {}", b.name, b.version))
            .unwrap_or_else(|| "bundle".into());
        Err(SeedError::DeltaBaseMissing { base, missing })
    }

    /// Returns how many were pushed, how many were there, and which upstream (sparse)
    /// indexes the target refused.
    async fn push_manifests(
        &self,
        plan: &SeedPlan,
    ) -> Result<(usize, usize, Vec<String>), SeedError> {
        // Repositories in parallel; within one, manifests in plan order (children first).
        let mut by_repo: BTreeMap<&str, Vec<ManifestPush>> = BTreeMap::new();
        for m in &plan.manifests {
            by_repo.entry(&m.repository).or_default().push(m.clone());
        }
        let permits = Arc::new(Semaphore::new(self.jobs.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (_, pushes) in by_repo {
            let client = self.client.clone();
            let permits = permits.clone();
            let observer = self.observer.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let (mut pushed, mut present, mut refused) = (0, 0, Vec::new());
                for m in pushes {
                    let have = client
                        .manifest_digest(&m.repository, &m.reference, &[&m.media_type])
                        .await?;
                    if have == Some(m.digest) {
                        present += 1;
                    } else {
                        match client
                            .put_manifest(&m.repository, &m.reference, &m.media_type, &m.bytes)
                            .await
                        {
                            Ok(()) => pushed += 1,
                            // Most registries refuse an index whose children are absent.
                            Err(RegistryError::Status { status, .. })
                                if m.sparse && status.is_client_error() =>
                            {
                                refused.push(format!("{}@{}", m.repository, m.digest));
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    observer.manifest_done();
                }
                Ok::<_, SeedError>((pushed, present, refused))
            });
        }
        let (mut pushed, mut present, mut refused) = (0, 0, Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let (p, q, r) = joined.map_err(SeedError::Task)??;
            pushed += p;
            present += q;
            refused.extend(r);
        }
        refused.sort();
        Ok((pushed, present, refused))
    }
}

/// Gets one blob into every repository that needs it: upload to the first that lacks it,
/// mount into the rest.
async fn seed_blob(
    source: &ReleaseSource,
    client: &RegistryClient,
    blob: &BlobPush,
    observer: &Arc<dyn SeedObserver>,
) -> Result<Counts, SeedError> {
    let mut counts = Counts::default();
    let mut holder: Option<&str> = None;
    let mut lacking = Vec::new();
    for repo in &blob.repositories {
        if client.blob_exists(repo, &blob.digest).await? {
            counts.present += 1;
            holder.get_or_insert(repo);
        } else {
            lacking.push(repo.as_str());
        }
    }
    let mut sent = false;
    for repo in lacking {
        let session = match holder {
            Some(from) => match client.mount_blob(repo, &blob.digest, from).await? {
                MountOutcome::Mounted => {
                    counts.mounted += 1;
                    continue;
                }
                MountOutcome::Declined(session) => Some(session),
            },
            None => None,
        };
        upload_blob(source, client, repo, blob, session, observer).await?;
        sent = true;
        counts.uploaded += 1;
        counts.bytes += blob.size;
        holder.get_or_insert(repo);
    }
    if !sent {
        observer.blob_skipped(blob.size);
    }
    Ok(counts)
}

/// Streams a blob from the source into one upload, retrying transient failures from the
/// start. The upload is committed only after the bytes sent hashed to the signed digest.
async fn upload_blob(
    source: &ReleaseSource,
    client: &RegistryClient,
    repo: &str,
    blob: &BlobPush,
    mut session: Option<UploadSession>,
    observer: &Arc<dyn SeedObserver>,
) -> Result<(), SeedError> {
    let policy = client.retry_policy();
    let path = blob.digest.blob_path();
    let mut attempt = 0;
    loop {
        let s = match session.take() {
            Some(s) => s,
            None => client.start_upload(repo).await?,
        };
        let (body, verdict, sent) = match source {
            ReleaseSource::Archive(archive) => {
                stream_entry(archive.open_entry(&path)?, observer.clone())
            }
            ReleaseSource::Registry(release) => {
                stream_download(release.clone(), blob.clone(), observer.clone())
            }
        };
        let result = client.upload_chunk(repo, s.clone(), body).await;
        // The reader's verdict comes first: a bundle that fails its digest is never
        // committed, whatever the registry said, and never retried into success.
        let verdict = verdict.await.map_err(SeedError::Task)?;
        let bytes_sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = verdict {
            client.cancel_upload(repo, s).await;
            return Err(e);
        }
        let result = match result {
            Ok(next) => client.commit_upload(repo, next, &blob.digest).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt + 1 < policy.attempts => {
                tracing::info!(blob = %blob.digest, %repo, error = %e, "upload failed, starting over");
                observer.bytes_resent(bytes_sent);
                client.cancel_upload(repo, s).await;
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the bytes a body carried were the blob: known only once the body ended.
type Verdict = tokio::task::JoinHandle<Result<(), SeedError>>;

/// A request body that reads the entry on a blocking thread, a few chunks ahead. If the entry
/// fails its digest the body ends in an error, so the request is aborted rather than
/// completed.
fn stream_entry(
    mut reader: EntryReader,
    observer: Arc<dyn SeedObserver>,
) -> (reqwest::Body, Verdict, Arc<std::sync::atomic::AtomicU64>) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // Ends the upload; the typed error is what this task returns.
                    let _ = tx.blocking_send(Err(std::io::Error::from(e.kind())));
                    return Err(VerifyError::Io(e).into());
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            observer.bytes_sent(n as u64);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                // The request ended early (the registry failed it); its result says why.
                return Ok(());
            }
        }
        let result = reader.finish();
        if result.is_err() {
            let _ = tx.blocking_send(Err(std::io::Error::other("the bundle failed verification")));
        }
        Ok(result?)
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (reqwest::Body::wrap_stream(stream), verdict, sent)
}

/// A request body fed by a download from the source registry, a few chunks ahead, checked
/// against the blob's digest as it streams; like [`stream_entry`], a body whose content fails
/// the digest ends in an error so the upload is never committed.
fn stream_download(
    release: Arc<PublishedRelease>,
    blob: BlobPush,
    observer: Arc<dyn SeedObserver>,
) -> (reqwest::Body, Verdict, Arc<std::sync::atomic::AtomicU64>) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sink = BodySink {
        tx: tx.clone(),
        sent: sent.clone(),
        observer,
    };
    let verdict = tokio::spawn(async move {
        let result = crate::download::download(
            &release.client,
            &blob.source_repository,
            &blob.digest,
            blob.size,
            &mut sink,
        )
        .await;
        let error = match result {
            Ok(()) => return Ok(()),
            // The request ended early (the target failed it); its result says why.
            Err(DownloadError::Sink(BodyClosed::Closed)) => return Ok(()),
            Err(DownloadError::Sink(BodyClosed::CannotRestart)) => {
                SeedError::Registry(RegistryError::RangeIgnored {
                    host: release.client.host().to_string(),
                    digest: blob.digest,
                })
            }
            Err(DownloadError::Registry(e)) => SeedError::Registry(e),
            Err(DownloadError::Mismatch(mismatch)) => SeedError::Corrupt(mismatch),
        };
        // Ends the upload; the typed error is what this task returns.
        let _ = tx.send(Err(std::io::Error::other("the copy failed"))).await;
        Err(error)
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (reqwest::Body::wrap_stream(stream), verdict, sent)
}

enum BodyClosed {
    /// The upload request is gone.
    Closed,
    /// Bytes already went into the upload; they cannot be taken back.
    CannotRestart,
}

struct BodySink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    observer: Arc<dyn SeedObserver>,
}

impl crate::download::Sink for BodySink {
    type Error = BodyClosed;
    async fn restart(&mut self) -> Result<(), BodyClosed> {
        Err(BodyClosed::CannotRestart)
    }
    async fn write(&mut self, chunk: &Bytes) -> Result<(), BodyClosed> {
        let n = chunk.len() as u64;
        self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.observer.bytes_sent(n);
        self.tx
            .send(Ok(chunk.clone()))
            .await
            .map_err(|_| BodyClosed::Closed)
    }
}
