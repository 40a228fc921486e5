//! The connected side of airgap: turns a bundle spec (`bundle.yaml`) into a signed bundle.
//!
//! [`spec`] parses the spec; [`pack`] validates packs and makes them OCI artifacts;
//! [`layout_source`] reads images from local OCI layouts and [`registry_source`] from OCI
//! registries, through the shared blob [`cache`]; [`signatures`] holds registry images to the
//! spec's upstream-signature policies; [`plan`] decides every entry and its order
//! (and, for `--since`, what a delta leaves out); [`archive`] fills the archive with up to `-j`
//! transfers at once and moves it into place only when complete. The format itself lives in
//! the `airgap` core crate, the registry protocol in the `registry` crate; this crate only
//! decides what goes in.

pub mod archive;
pub mod cache;
pub mod layout_source;
pub mod pack;
pub mod plan;
pub mod previous_bundles;
pub mod registry_source;
pub mod signatures;
pub mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use airgap::oci::{self, ImageManifest};
use airgap::{BundleArchive, BundleIndex, ImageReference, SigningKey};
use futures_util::{StreamExt, TryStreamExt};

use archive::{BuildObserver, WriteOptions, WriteStats};
use cache::BlobCache;
use plan::FetchedPack;
use registry_source::{fetch_blob, BlobTarget, FetchError, Registries, RemoteImage};
use spec::{BundleSpec, PackSource};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Index(#[from] airgap::index::IndexError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Pack(#[from] pack::PackError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("cannot create a work directory beside {path}: {cause}")]
    Workdir { path: String, cause: std::io::Error },
    #[error("--since {path}: {cause}")]
    Base {
        path: String,
        cause: airgap::VerifyError,
    },
    #[error("pack {pack} needs {cause}")]
    PackImage {
        pack: String,
        cause: Box<FetchError>,
    },
    #[error("pack {reference}: {message}")]
    PackArtifact { reference: String, message: String },
    #[error("pack {reference}")]
    PackReference {
        reference: String,
        #[source]
        cause: airgap::reference::ReferenceError,
    },
    #[error(transparent)]
    Signature(#[from] signatures::PolicyError),
    #[error("pack {reference}: manifest is malformed")]
    PackManifest {
        reference: String,
        #[source]
        cause: serde_json::Error,
    },
}

pub struct BuildRequest<'a> {
    pub spec: &'a Path,
    pub output: &'a Path,
    pub key: &'a SigningKey,
    /// Seconds since the epoch: the bundle's creation time and every header's mtime.
    pub created: u64,
    /// Seconds since the epoch when the release expires (signed into its index), if it does.
    pub expires: Option<u64>,
    /// Cut the archive into parts of at most this many bytes.
    pub split: Option<u64>,
    /// Transfers (manifest fetches, blob downloads, copies) in flight at once.
    pub jobs: usize,
    /// The blob cache directory; `None` keeps no cache: blobs go straight into the bundle.
    pub cache: Option<&'a Path>,
    /// Build a delta against this bundle: blobs it holds are left out and listed as expected.
    pub since: Option<&'a Path>,
}

pub struct BuildReport {
    pub index: BundleIndex,
    pub files: Vec<PathBuf>,
    pub downloaded_blobs: u64,
    pub downloaded_bytes: u64,
    pub cached_blobs: u64,
    pub cached_bytes: u64,
}

/// Plans and writes a bundle: fetches manifests and pack artifacts, plans, then fills the
/// archive. Nothing appears at `request.output` unless the whole build succeeded.
pub async fn build(
    request: &BuildRequest<'_>,
    observer: Arc<dyn BuildObserver>,
) -> Result<BuildReport, BuildError> {
    let spec = BundleSpec::load(request.spec)?;
    let base_dir = request
        .spec
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // The base is checked before anything is fetched: a wrong --since fails fast.
    let base = match request.since {
        Some(path) => Some(
            BundleArchive::open(path, &request.key.public_key()).map_err(|cause| {
                BuildError::Base {
                    path: path.display().to_string(),
                    cause,
                }
            })?,
        ),
        None => None,
    };
    let parent = match request.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside the output so the final rename stays on one filesystem; removed on every exit.
    let workdir = tempfile::Builder::new()
        .prefix(".airgap-build-")
        .tempdir_in(&parent)
        .map_err(|cause| BuildError::Workdir {
            path: request.output.display().to_string(),
            cause,
        })?;
    // Without a cache, pack layers (read while planning) still need a file: a private one
    // in the work directory, gone with it.
    let cache = BlobCache::open(
        &request
            .cache
            .map_or_else(|| workdir.path().join("cache"), Path::to_path_buf),
    )?;
    let mut registries = Registries::new(&spec.spec.registries, &base_dir)?;
    let jobs = request.jobs.max(1);
    // Policy keys are read before anything is fetched: a missing key fails fast.
    let keys = signatures::PolicyKeys::load(spec.policies(), &base_dir)?;

    let fetched_packs = fetch_packs(&spec, &mut registries, &cache, workdir.path(), jobs).await?;
    let packs = plan::load_packs(&spec, &base_dir, fetched_packs)?;
    let platforms = (!spec.keeps_all_platforms()).then(|| spec.spec.platforms.clone());
    let mut pulls = Vec::new();
    for pull in plan::images_to_pull(&spec, &packs)? {
        let client = registries.client(&pull.reference.registry)?;
        pulls.push((pull, client));
    }
    type Pulled = (ImageReference, RemoteImage, Option<signatures::SignedImage>);
    let fetched: Vec<Pulled> = futures_util::stream::iter(pulls)
        .map(|(pull, client)| {
            let (platforms, keys) = (platforms.as_deref(), &keys);
            async move {
                let image = match RemoteImage::fetch(client, &pull.reference, platforms).await {
                    Ok(image) => image,
                    Err(cause) => {
                        return Err(match pull.needed_by {
                            Some(pack) => BuildError::PackImage {
                                pack,
                                cause: Box::new(cause),
                            },
                            None => cause.into(),
                        })
                    }
                };
                let signed = match &pull.policy {
                    Some(policy) => {
                        Some(signatures::verify(&pull.reference, &image, policy, keys).await?)
                    }
                    None => None,
                };
                Ok((pull.reference, image, signed))
            }
        })
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
    let mut pulled = Vec::new();
    let mut signed = plan::Signatures {
        images: Vec::new(),
        keys: keys.records(),
    };
    for (reference, image, signature) in fetched {
        pulled.push((reference, image));
        signed.images.extend(signature);
    }

    let mut plan = plan::plan(
        &spec,
        &base_dir,
        request.created,
        workdir.path(),
        packs,
        pulled,
        signed,
    )?;
    if let Some(expires) = request.expires {
        plan.index.expires = Some(
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires),
            )
            .to_string(),
        );
        plan.index.check()?;
    }
    if let Some(base) = &base {
        plan::make_delta(&mut plan, base.verified());
    }
    observer.planned(&plan.index);
    let index = plan.index.clone();
    let stats = Arc::new(WriteStats::default());
    let files = archive::write_bundle(
        Arc::new(plan),
        &WriteOptions {
            key: request.key,
            mtime: request.created,
            workdir: workdir.path(),
            output: request.output,
            split: request.split,
            jobs,
            cache: &cache,
            keep_in_cache: request.cache.is_some(),
        },
        observer,
        stats.clone(),
    )
    .await?;
    Ok(BuildReport {
        index,
        files,
        downloaded_blobs: stats.downloaded_blobs.load(Ordering::Relaxed),
        downloaded_bytes: stats.downloaded_bytes.load(Ordering::Relaxed),
        cached_blobs: stats.cached_blobs.load(Ordering::Relaxed),
        cached_bytes: stats.cached_bytes.load(Ordering::Relaxed),
    })
}

/// Fetches every `packs: - oci:` artifact: its manifest, then its layer into the cache, then
/// unpacks the layer into `workdir` to read `pack.json` and the images it needs.
async fn fetch_packs(
    spec: &BundleSpec,
    registries: &mut Registries,
    cache: &BlobCache,
    workdir: &Path,
    jobs: usize,
) -> Result<HashMap<usize, FetchedPack>, BuildError> {
    let mut wanted = Vec::new();
    for (i, source) in spec.spec.packs.iter().enumerate() {
        if let PackSource::Oci(text) = source {
            let reference =
                ImageReference::parse(text).map_err(|cause| BuildError::PackReference {
                    reference: text.clone(),
                    cause,
                })?;
            let client = registries.client(&reference.registry)?;
            wanted.push((i, reference, client));
        }
    }
    futures_util::stream::iter(wanted)
        .map(|(i, reference, client)| async move {
            let image = RemoteImage::fetch(client, &reference, None).await?;
            let layer = pack_layer(&image)?;
            let path = ensure_cached(cache, &image, &layer).await?;
            let dir = pack::unpack_layer(&path, &workdir.join(format!("oci-pack-{i}")))?;
            let pack = pack::Pack::load(&dir)?;
            check_published_name(&reference, &pack)?;
            Ok::<_, BuildError>((i, FetchedPack { image, pack }))
        })
        .buffer_unordered(jobs)
        .try_collect()
        .await
}

/// A published pack is what its reference names: `…/<name>:<version>` (or any tag of a digest
/// reference) names pack `<name>` at `<version>`. Otherwise a publisher's `pack.json` could
/// put its content under another pack's name in every mirror.
fn check_published_name(reference: &ImageReference, pack: &pack::Pack) -> Result<(), BuildError> {
    let last = reference.repository.rsplit('/').next().unwrap_or_default();
    let fail = |message: String| BuildError::PackArtifact {
        reference: reference.to_string(),
        message,
    };
    if pack.meta.name != last {
        return Err(fail(format!(
            "its pack.json names pack `{}`, but the reference names `{last}`; publish it under its own name",
            pack.meta.name
        )));
    }
    match &reference.tag {
        Some(tag) if reference.digest.is_none() && *tag != pack.meta.version => Err(fail(format!(
            "its pack.json says version {}, but the reference's tag is {tag}",
            pack.meta.version
        ))),
        _ => Ok(()),
    }
}

/// The one tar.gz layer of a published pack.
fn pack_layer(image: &RemoteImage) -> Result<oci::Descriptor, BuildError> {
    let fail = |message: String| BuildError::PackArtifact {
        reference: image.shown.clone(),
        message,
    };
    if !oci::is_manifest(&image.top.media_type) {
        return Err(fail(format!(
            "is a {}, not a pack artifact (an image manifest with one tar.gz layer)",
            image.top.media_type
        )));
    }
    let bytes = image
        .manifests
        .get(&image.top.digest)
        .ok_or_else(|| fail("manifest was not fetched".into()))?;
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|cause| BuildError::PackManifest {
            reference: image.shown.clone(),
            cause,
        })?;
    match manifest.layers.as_slice() {
        [layer] if layer.media_type.contains("tar") && layer.media_type.contains("gzip") => {
            Ok(layer.clone())
        }
        [layer] => Err(fail(format!(
            "its layer is {}, not a tar.gz of the pack directory",
            layer.media_type
        ))),
        layers => Err(fail(format!(
            "has {} layers; a pack artifact has exactly one (a tar.gz of the pack directory)",
            layers.len()
        ))),
    }
}

/// The cached file of a blob, downloaded first when the cache lacks it or holds it corrupt.
async fn ensure_cached(
    cache: &BlobCache,
    image: &RemoteImage,
    blob: &oci::Descriptor,
) -> Result<PathBuf, BuildError> {
    let path = cache.path(&blob.digest);
    if let Some(file) = cache.open_blob(&blob.digest) {
        let digest = blob.digest;
        let ok = tokio::task::spawn_blocking(move || {
            airgap::digest::copy_hashed(&mut std::io::BufReader::new(file), &mut std::io::sink())
                .is_ok_and(|(d, _)| d == digest)
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(path);
        }
        cache.evict(&blob.digest);
    }
    let pending = cache.begin(&blob.digest)?;
    fetch_blob(
        &image.client,
        &image.repository,
        &blob.digest,
        blob.size,
        &image.shown,
        BlobTarget {
            pending: Some(&pending),
            slot: None,
        },
        &|_| {},
    )
    .await?;
    pending.commit()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(name: &str, version: &str) -> (tempfile::TempDir, pack::Pack) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pack.json"),
            format!(
                r#"{{"name":"{name}","displayName":"x","version":"{version}","layer":"addon"}}"#
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("values.yaml"), "pack: {}\n").unwrap();
        let loaded = pack::Pack::load(dir.path()).unwrap();
        (dir, loaded)
    }

    #[test]
    fn a_published_pack_must_be_named_by_its_reference() {
        let reference = |r: &str| ImageReference::parse(r).unwrap();
        let (_d, good) = pack("monitoring", "1.2.0");
        check_published_name(&reference("reg.example/packs/monitoring:1.2.0"), &good).unwrap();
        let digest = format!("reg.example/packs/monitoring@sha256:{}", "a".repeat(64));
        check_published_name(&reference(&digest), &good).unwrap();
        for (r, needle) in [
            ("reg.example/packs/other:1.2.0", "names pack `monitoring`"),
            (
                "reg.example/packs/monitoring:1.3.0",
                "the reference's tag is 1.3.0",
            ),
        ] {
            let err = check_published_name(&reference(r), &good)
                .expect_err(r)
                .to_string();
            assert!(err.contains(needle), "{r}: {err}");
        }
    }
}
