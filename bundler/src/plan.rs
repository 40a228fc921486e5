//! The build plan: every entry the bundle will hold, in archive order, with where its bytes come
//! from, and the index that describes them. Planning reads only manifests (a registry's were
//! fetched beforehand, see [`crate::registry_source`]); blob content is read once, when the
//! archive is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use airgap::index::{
    BaseRecord, BundleIndex, EntryRecord, ImageRecord, PackRecord, FORMAT_VERSION,
};
use airgap::oci::{self, Descriptor, ImageIndex, ImageManifest, REF_NAME_ANNOTATION};
use airgap::{Digest, EntryPath, ImageReference, VerifiedIndex};

use crate::layout_source::{LayoutSource, SourceError};
use crate::pack::{Pack, PackError, PACK_ARTIFACT_TYPE};
use crate::registry_source::RemoteImage;
use crate::signatures::SignedImage;
use crate::spec::{BundleSpec, ImageEntry, LayoutKind, PackSource, SignaturePolicy, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("spec.images[{index}]: {reference} is listed twice with different content")]
    ListedTwice {
        index: usize,
        reference: ImageReference,
    },
    #[error("spec.images[{index}]")]
    Image {
        index: usize,
        #[source]
        cause: airgap::reference::ReferenceError,
    },
    #[error("pack {0} is listed twice")]
    DuplicatePack(String),
    #[error("image {reference}: {message}")]
    Content { reference: String, message: String },
}

/// Where an entry's bytes come from.
pub enum EntrySource {
    Memory(Vec<u8>),
    Layout {
        source: usize,
        digest: Digest,
    },
    File(PathBuf),
    /// A blob of `BuildPlan::remotes[remote]`: from the cache, else from its registry.
    Remote {
        remote: usize,
        digest: Digest,
    },
}

pub struct PlannedEntry {
    pub record: EntryRecord,
    pub source: EntrySource,
}

pub struct BuildPlan {
    pub index: BundleIndex,
    pub entries: Vec<PlannedEntry>,
    pub sources: Vec<LayoutSource>,
    pub remotes: Vec<RemoteImage>,
    /// Digests of every manifest and index planned: a delta bundle always carries these.
    pub manifests: HashSet<Digest>,
}

/// A pack published as an OCI artifact: its manifests fetched, its layer unpacked.
pub struct FetchedPack {
    pub image: RemoteImage,
    pub pack: Pack,
}

/// Where an image's manifests are read from.
#[derive(Clone, Copy)]
enum Origin {
    Layout(usize),
    Remote(usize),
}

struct Planner {
    platforms: Option<Vec<String>>,
    sources: Vec<LayoutSource>,
    source_ids: HashMap<(LayoutKind, PathBuf), usize>,
    remotes: Vec<RemoteImage>,
    blobs: Vec<PlannedEntry>,
    seen: HashSet<Digest>,
    manifests: HashSet<Digest>,
}

/// What one image contributes to the plan.
struct StoredImage {
    descriptor: Descriptor,
    upstream: Digest,
    size: u64,
}

impl Planner {
    fn source(&mut self, kind: LayoutKind, path: &Path) -> Result<usize, PlanError> {
        if let Some(&id) = self.source_ids.get(&(kind, path.to_path_buf())) {
            return Ok(id);
        }
        self.sources.push(LayoutSource::open(kind, path)?);
        let id = self.sources.len() - 1;
        self.source_ids.insert((kind, path.to_path_buf()), id);
        Ok(id)
    }

    fn add(&mut self, digest: Digest, size: u64, source: EntrySource) {
        if self.seen.insert(digest) {
            let record = EntryRecord {
                path: blob_path(&digest),
                size,
                sha256: digest,
            };
            self.blobs.push(PlannedEntry { record, source });
        }
    }

    fn read_manifest(&self, origin: Origin, desc: &Descriptor) -> Result<Vec<u8>, PlanError> {
        match origin {
            Origin::Layout(source) => Ok(self.sources[source].read_manifest(desc)?),
            Origin::Remote(remote) => self.remotes[remote]
                .manifests
                .get(&desc.digest)
                .cloned()
                .ok_or_else(|| PlanError::Content {
                    reference: self.remotes[remote].repository.clone(),
                    message: format!("manifest {} was not fetched", desc.digest),
                }),
        }
    }

    fn blob_source(origin: Origin, digest: Digest) -> EntrySource {
        match origin {
            Origin::Layout(source) => EntrySource::Layout { source, digest },
            Origin::Remote(remote) => EntrySource::Remote { remote, digest },
        }
    }

    fn add_manifest(&mut self, bytes: Vec<u8>) -> Digest {
        let digest = Digest::of(&bytes);
        self.manifests.insert(digest);
        self.add(digest, bytes.len() as u64, EntrySource::Memory(bytes));
        digest
    }

    /// Adds an image's blobs, children before parents, and returns what to record for it.
    fn add_image(
        &mut self,
        origin: Origin,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<StoredImage, PlanError> {
        let content = |message: String| PlanError::Content {
            reference: reference.to_string(),
            message,
        };
        let bytes = self.read_manifest(origin, desc)?;
        let media_type = oci::manifest_media_type(&bytes, &desc.media_type).ok_or_else(|| {
            content(format!(
                "manifest {} has an unsupported media type `{}`",
                desc.digest, desc.media_type
            ))
        })?;
        let mut size = bytes.len() as u64;
        if oci::is_manifest(&media_type) {
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| content(format!("manifest {} is malformed: {e}", desc.digest)))?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                size += blob.size;
                self.add(
                    blob.digest,
                    blob.size,
                    Self::blob_source(origin, blob.digest),
                );
            }
            self.add_manifest(bytes);
            return Ok(StoredImage {
                descriptor: Descriptor {
                    media_type,
                    ..desc.clone()
                },
                upstream: desc.digest,
                size,
            });
        }
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| content(format!("index {} is malformed: {e}", desc.digest)))?;
        let keep: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|child| oci::keeps_platform(self.platforms.as_deref(), child))
            .collect();
        if keep.is_empty() {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(ToString::to_string))
                .collect();
            return Err(content(format!(
                "has no manifest for {} (it has: {})",
                self.platforms.as_deref().unwrap_or_default().join(", "),
                offered.join(", ")
            )));
        }
        // The index's size counts as stored, which differs from the source's when filtered.
        size = 0;
        for child in &keep {
            size += self.add_image(origin, child, reference)?.size;
        }
        let stored = if keep.len() == index.manifests.len() {
            bytes
        } else {
            let filtered = filtered_index(&bytes, &keep)
                .map_err(|e| content(format!("index {} is malformed: {e}", desc.digest)))?;
            // The upstream index rides along, named by no layout entry: seeded by its digest
            // it is a sparse index (its absent children are the platforms filtered out), so
            // workloads pinned to `image@<upstream digest>` still pull offline.
            self.add_manifest(bytes);
            filtered
        };
        let stored_len = stored.len() as u64;
        size += stored_len;
        let digest = self.add_manifest(stored);
        Ok(StoredImage {
            descriptor: Descriptor {
                media_type,
                digest,
                size: stored_len,
                ..desc.clone()
            },
            upstream: desc.digest,
            size,
        })
    }
}

/// The index with only the kept children, every other field as it was.
fn filtered_index(bytes: &[u8], keep: &[&Descriptor]) -> Result<Vec<u8>, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
    let kept: HashSet<Digest> = keep.iter().map(|d| d.digest).collect();
    if let Some(manifests) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        manifests.retain(|m| {
            m.get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| d.parse::<Digest>().ok())
                .is_some_and(|d| kept.contains(&d))
        });
    }
    serde_json::to_vec(&value)
}

fn blob_path(digest: &Digest) -> EntryPath {
    // A digest's hex is always a valid entry path component.
    EntryPath::new(digest.blob_path())
        .unwrap_or_else(|_| unreachable!("blob paths are valid entry paths"))
}

fn layout_entry(path: &str, bytes: Vec<u8>) -> PlannedEntry {
    PlannedEntry {
        record: EntryRecord {
            path: EntryPath::new(path)
                .unwrap_or_else(|_| unreachable!("fixed layout names are valid")),
            size: bytes.len() as u64,
            sha256: Digest::of(&bytes),
        },
        source: EntrySource::Memory(bytes),
    }
}

/// A pack as planning sees it: a local directory, or an artifact pulled from a registry.
// One per pack in the spec, built once: size differences do not matter.
#[allow(clippy::large_enum_variant)]
pub enum PackInput {
    Local(Pack),
    Remote(FetchedPack),
}

impl PackInput {
    pub fn pack(&self) -> &Pack {
        match self {
            PackInput::Local(p) => p,
            PackInput::Remote(f) => &f.pack,
        }
    }
}

/// Loads the spec's local packs; `fetched` holds the ones pulled from registries, by position.
pub fn load_packs(
    spec: &BundleSpec,
    base: &Path,
    mut fetched: HashMap<usize, FetchedPack>,
) -> Result<Vec<PackInput>, PlanError> {
    let mut packs = Vec::new();
    let mut names = HashSet::new();
    for (i, source) in spec.spec.packs.iter().enumerate() {
        let input = match source {
            PackSource::Path(p) => PackInput::Local(Pack::load(&base.join(p))?),
            PackSource::Oci(r) => {
                PackInput::Remote(fetched.remove(&i).ok_or_else(|| PlanError::Content {
                    reference: r.clone(),
                    message: "pack was not fetched".into(),
                })?)
            }
        };
        if !names.insert(input.pack().reference()) {
            return Err(PlanError::DuplicatePack(input.pack().reference()));
        }
        packs.push(input);
    }
    Ok(packs)
}

/// An image a registry must provide, the pack that needs it when no spec entry names it, and
/// the signature policy it is held to.
pub struct Pull {
    pub reference: ImageReference,
    pub needed_by: Option<String>,
    pub policy: Option<SignaturePolicy>,
}

/// The images a registry must provide: every `spec.images` entry without `from:`, and every
/// image a pack needs that no entry provides.
pub fn images_to_pull(spec: &BundleSpec, packs: &[PackInput]) -> Result<Vec<Pull>, PlanError> {
    let mut named = HashSet::new();
    let mut pulls = Vec::new();
    for (index, entry) in spec.spec.images.iter().enumerate() {
        let reference = ImageReference::parse(entry.reference())
            .map_err(|e| PlanError::Image { index, cause: e })?;
        if matches!(entry, ImageEntry::Pull { .. }) && !named.contains(&reference) {
            pulls.push(Pull {
                reference: reference.clone(),
                needed_by: None,
                policy: spec.policy_for(Some(entry)).cloned(),
            });
        }
        named.insert(reference);
    }
    for pack in packs {
        for image in &pack.pack().images {
            if named.insert(image.clone()) {
                pulls.push(Pull {
                    reference: image.clone(),
                    needed_by: Some(pack.pack().reference()),
                    policy: spec.policy_for(None).cloned(),
                });
            }
        }
    }
    Ok(pulls)
}

/// Upstream signatures that verified, and the keys that policies named.
#[derive(Default)]
pub struct Signatures {
    pub images: Vec<SignedImage>,
    pub keys: Vec<airgap::index::SignatureKeyRecord>,
}

/// Plans a bundle. Pack layers of local packs are written into `workdir`; `pulled` holds
/// every image [`images_to_pull`] named, fetched; `signatures` the signature images to carry.
pub fn plan(
    spec: &BundleSpec,
    base: &Path,
    created: u64,
    workdir: &Path,
    packs: Vec<PackInput>,
    mut pulled: Vec<(ImageReference, RemoteImage)>,
    signatures: Signatures,
) -> Result<BuildPlan, PlanError> {
    let mut signature_records = HashMap::new();
    let mut signature_images = Vec::new();
    let mut attestation_records = HashMap::new();
    for signed in signatures.images {
        signature_images.push(signed.signature.0.clone());
        signature_images.push(signed.referrer.0.clone());
        pulled.push(signed.signature);
        pulled.push(signed.referrer);
        if let Some((reference, image, record)) = signed.attestations {
            signature_images.push(reference.clone());
            pulled.push((reference, image));
            attestation_records.insert(signed.image.clone(), record);
        }
        signature_records.insert(signed.image, signed.record);
    }
    let mut planner = Planner {
        platforms: (!spec.keeps_all_platforms()).then(|| spec.spec.platforms.clone()),
        sources: Vec::new(),
        source_ids: HashMap::new(),
        remotes: Vec::new(),
        blobs: Vec::new(),
        seen: HashSet::new(),
        manifests: HashSet::new(),
    };
    let mut pulled_ids = HashMap::new();
    for (reference, image) in pulled {
        planner.remotes.push(image);
        pulled_ids.insert(reference, planner.remotes.len() - 1);
    }
    let remote = |planner: &Planner, reference: &ImageReference| {
        pulled_ids
            .get(reference)
            .map(|&id| (Origin::Remote(id), planner.remotes[id].top.clone()))
            .ok_or_else(|| PlanError::Content {
                reference: reference.to_string(),
                message: "image was not fetched".into(),
            })
    };

    // Images the spec names, by normalized reference.
    let mut provided: Vec<(ImageReference, String, Origin, Descriptor)> = Vec::new();
    for (index, entry) in spec.spec.images.iter().enumerate() {
        let reference = ImageReference::parse(entry.reference())
            .map_err(|e| PlanError::Image { index, cause: e })?;
        let (origin, desc) = match entry {
            ImageEntry::Local { from, .. } => {
                let from = from.resolved(base);
                let source = planner.source(from.kind, &from.path)?;
                let desc = planner.sources[source].resolve(from.name.as_deref())?;
                (Origin::Layout(source), desc)
            }
            ImageEntry::Pull { .. } => remote(&planner, &reference)?,
        };
        if let Some(previous) = provided.iter().find(|p| p.0 == reference) {
            if previous.3.digest != desc.digest {
                return Err(PlanError::ListedTwice { index, reference });
            }
            continue;
        }
        provided.push((reference, entry.reference().to_string(), origin, desc));
    }
    // Images packs need that no entry named: pulled from their own registries.
    for pack in &packs {
        for image in &pack.pack().images {
            if !provided.iter().any(|p| &p.0 == image) {
                let (origin, desc) = remote(&planner, image)?;
                provided.push((image.clone(), image.to_string(), origin, desc));
            }
        }
    }
    // Then the signatures of those images (each under its tag, and as a referrer by digest)
    // and their attestations.
    for image in signature_images {
        if !provided.iter().any(|p| p.0 == image) {
            let (origin, desc) = remote(&planner, &image)?;
            provided.push((image.clone(), image.to_string(), origin, desc));
        }
    }

    let mut layout_manifests = Vec::new();
    let mut pack_records = Vec::new();
    for (i, input) in packs.iter().enumerate() {
        let pack = input.pack();
        let (digest, size) = match input {
            PackInput::Local(pack) => {
                let layer_path = workdir.join(format!("pack-{i}.tar.gz"));
                let layer = pack.write_layer(&layer_path)?;
                let config = pack.meta_bytes.clone();
                planner.add(
                    Digest::of(&config),
                    config.len() as u64,
                    EntrySource::Memory(config),
                );
                planner.add(layer.digest, layer.size, EntrySource::File(layer_path));
                let manifest = pack.manifest(&layer);
                let size = manifest.len() as u64;
                (planner.add_manifest(manifest), size)
            }
            PackInput::Remote(fetched) => {
                // Stored exactly as published, so its digest is the registry's.
                let id = planner.remotes.len();
                planner.remotes.push(fetched.image.clone());
                let top = fetched.image.top.clone();
                let stored = planner.add_image(Origin::Remote(id), &top, &pack.reference())?;
                (stored.descriptor.digest, stored.descriptor.size)
            }
        };
        layout_manifests.push(Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest,
            size,
            platform: None,
            artifact_type: Some(PACK_ARTIFACT_TYPE.into()),
            annotations: [(oci::PACK_NAME_ANNOTATION.to_string(), pack.reference())]
                .into_iter()
                .collect(),
        });
        pack_records.push(PackRecord {
            name: pack.meta.name.clone(),
            version: pack.meta.version.clone(),
            layer: pack.meta.layer.as_str().into(),
            reference: pack.reference(),
            digest,
            images: pack.images.iter().map(ToString::to_string).collect(),
        });
    }

    let mut image_records = Vec::new();
    for (reference, source_text, origin, desc) in &provided {
        let normalized = reference.to_string();
        let stored = planner.add_image(*origin, desc, &normalized)?;
        let signature = signature_records.remove(reference);
        if signature.is_some() && stored.descriptor.digest != stored.upstream {
            return Err(PlanError::Content {
                reference: normalized,
                message: format!(
                    "its signature covers the whole index {}, which spec.platforms filters to {}; a client checking the signature would refuse the filtered index: keep every platform (`platforms: [all]`) or take this image with `verify: none`",
                    stored.upstream, stored.descriptor.digest
                ),
            });
        }
        layout_manifests.push(Descriptor {
            annotations: [(REF_NAME_ANNOTATION.to_string(), normalized.clone())]
                .into_iter()
                .collect(),
            platform: None,
            ..stored.descriptor.clone()
        });
        image_records.push(ImageRecord {
            source: source_text.clone(),
            reference: normalized,
            mirror_repository: reference.mirror_repository(),
            digest: stored.descriptor.digest,
            upstream_digest: stored.upstream,
            media_type: stored.descriptor.media_type.clone(),
            size: stored.size,
            signature,
            attestations: attestation_records.remove(reference),
        });
    }

    // Only the keys a carried signature names.
    let signature_keys = signatures
        .keys
        .into_iter()
        .filter(|k| {
            image_records
                .iter()
                .filter_map(|i: &ImageRecord| i.signature.as_ref())
                .any(|s| s.keys.contains(&k.id))
        })
        .collect();
    let mut entries = vec![
        layout_entry("oci-layout", oci::OCI_LAYOUT_FILE.to_vec()),
        layout_entry("index.json", oci::layout_index(&layout_manifests)),
    ];
    entries.append(&mut planner.blobs);
    let index = BundleIndex {
        format_version: FORMAT_VERSION,
        name: spec.metadata.name.clone(),
        version: spec.metadata.version.clone(),
        created: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(created))
            .to_string(),
        expires: None,
        platforms: if spec.keeps_all_platforms() {
            vec!["all".into()]
        } else {
            spec.spec.platforms.clone()
        },
        packs: pack_records,
        images: image_records,
        entries: entries.iter().map(|e| e.record.clone()).collect(),
        base: None,
        expected_blobs: Vec::new(),
        signature_keys,
    };
    Ok(BuildPlan {
        index,
        entries,
        sources: planner.sources,
        remotes: planner.remotes,
        manifests: planner.manifests,
    })
}

/// Turns a full plan into a delta against `base`: every blob the base holds or expects is left
/// out and listed in `expectedBlobs` instead. Layer-level: an image that changed one layer
/// ships that layer only. Manifests always stay, since the seeder pushes them from the bundle.
pub fn make_delta(plan: &mut BuildPlan, base: &VerifiedIndex) {
    let base_index = base.index();
    let in_base: HashSet<Digest> = base_index
        .entries
        .iter()
        .filter(|e| e.path.as_str().starts_with("blobs/sha256/"))
        .map(|e| e.sha256)
        .chain(base_index.expected_blobs.iter().copied())
        .collect();
    let mut expected = Vec::new();
    plan.entries.retain(|e| {
        let blob = e.record.path.as_str().starts_with("blobs/sha256/");
        let leave_out = blob
            && in_base.contains(&e.record.sha256)
            && !plan.manifests.contains(&e.record.sha256);
        if leave_out {
            expected.push(e.record.sha256);
        }
        !leave_out
    });
    expected.sort();
    plan.index.entries = plan.entries.iter().map(|e| e.record.clone()).collect();
    plan.index.expected_blobs = expected;
    plan.index.base = Some(BaseRecord {
        name: base_index.name.clone(),
        version: base_index.version.clone(),
        index_digest: base.index_digest(),
    });
}
