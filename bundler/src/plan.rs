//! The build plan: every entry the bundle will hold, in archive order, with where its bytes come
//! from, and the index that describes them. Planning reads only manifests; blob content is read
//! once, when the archive is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use airgap::index::{BundleIndex, EntryRecord, ImageRecord, PackRecord, FORMAT_VERSION};
use airgap::oci::{self, Descriptor, ImageIndex, ImageManifest, REF_NAME_ANNOTATION};
use airgap::{Digest, EntryPath, ImageReference};

use crate::layout_source::{LayoutSource, SourceError};
use crate::pack::{Pack, PackError, PACK_ARTIFACT_TYPE};
use crate::spec::{BundleSpec, ImageEntry, LayoutKind, PackSource, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("spec.images[{index}]: {message}")]
    Image { index: usize, message: String },
    #[error("{what} `{reference}`: pulling from a registry is not supported by this build yet; provide it from a local layout with `from: oci:DIR:REF`")]
    RegistryNotSupported {
        what: &'static str,
        reference: String,
    },
    #[error("pack {pack} needs image {image}, which no entry in spec.images provides")]
    UnprovidedImage { pack: String, image: String },
    #[error("pack {0} is listed twice")]
    DuplicatePack(String),
    #[error("image {reference}: {message}")]
    Content { reference: String, message: String },
}

/// Where an entry's bytes come from.
pub enum EntrySource {
    Memory(Vec<u8>),
    Layout { source: usize, digest: Digest },
    File(PathBuf),
}

pub struct PlannedEntry {
    pub record: EntryRecord,
    pub source: EntrySource,
}

pub struct BuildPlan {
    pub index: BundleIndex,
    pub entries: Vec<PlannedEntry>,
    pub sources: Vec<LayoutSource>,
}

struct Planner {
    platforms: Option<Vec<String>>,
    sources: Vec<LayoutSource>,
    source_ids: HashMap<(LayoutKind, PathBuf), usize>,
    blobs: Vec<PlannedEntry>,
    seen: HashSet<Digest>,
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

    /// Adds an image's blobs, children before parents, and returns what to record for it.
    fn add_image(
        &mut self,
        source: usize,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<StoredImage, PlanError> {
        let content = |message: String| PlanError::Content {
            reference: reference.to_string(),
            message,
        };
        let bytes = self.sources[source].read_manifest(desc)?;
        let media_type = oci::detect_media_type(&bytes)
            .filter(|m| oci::is_index(m) || oci::is_manifest(m))
            .or_else(|| {
                Some(desc.media_type.clone()).filter(|m| oci::is_index(m) || oci::is_manifest(m))
            })
            .ok_or_else(|| {
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
                    EntrySource::Layout {
                        source,
                        digest: blob.digest,
                    },
                );
            }
            self.add(desc.digest, bytes.len() as u64, EntrySource::Memory(bytes));
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
            .filter(|child| match (&self.platforms, &child.platform) {
                (Some(wanted), Some(p)) => wanted.iter().any(|w| p.matches(w)),
                _ => true,
            })
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
            size += self.add_image(source, child, reference)?.size;
        }
        let stored = if keep.len() == index.manifests.len() {
            bytes
        } else {
            filtered_index(&bytes, &keep)
                .map_err(|e| content(format!("index {} is malformed: {e}", desc.digest)))?
        };
        let digest = Digest::of(&stored);
        let stored_len = stored.len() as u64;
        size += stored_len;
        self.add(digest, stored_len, EntrySource::Memory(stored));
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

/// Plans a bundle from `spec_path`. Pack layers are written into `workdir`.
pub fn plan(spec_path: &Path, created: u64, workdir: &Path) -> Result<BuildPlan, PlanError> {
    let spec = BundleSpec::load(spec_path)?;
    let base = spec_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut planner = Planner {
        platforms: (!spec.keeps_all_platforms()).then(|| spec.spec.platforms.clone()),
        sources: Vec::new(),
        source_ids: HashMap::new(),
        blobs: Vec::new(),
        seen: HashSet::new(),
    };

    // Images the spec provides, by normalized reference.
    let mut provided: Vec<(ImageReference, String, usize, Descriptor)> = Vec::new();
    for (index, entry) in spec.spec.images.iter().enumerate() {
        let reference = ImageReference::parse(entry.reference()).map_err(|e| PlanError::Image {
            index,
            message: e.to_string(),
        })?;
        let ImageEntry::Local { from, .. } = entry else {
            return Err(PlanError::RegistryNotSupported {
                what: "image",
                reference: entry.reference().into(),
            });
        };
        let from = from.resolved(&base);
        let source = planner.source(from.kind, &from.path)?;
        let desc = planner.sources[source].resolve(from.name.as_deref())?;
        if let Some(previous) = provided.iter().find(|p| p.0 == reference) {
            if previous.3.digest != desc.digest {
                return Err(PlanError::Image {
                    index,
                    message: format!("{reference} is listed twice with different content"),
                });
            }
            continue;
        }
        provided.push((reference, entry.reference().to_string(), source, desc));
    }

    let mut layout_manifests = Vec::new();
    let mut pack_records = Vec::new();
    let mut pack_names = HashSet::new();
    for (i, pack_source) in spec.spec.packs.iter().enumerate() {
        let dir = match pack_source {
            PackSource::Path(p) => base.join(p),
            PackSource::Oci(r) => {
                return Err(PlanError::RegistryNotSupported {
                    what: "pack",
                    reference: r.clone(),
                })
            }
        };
        let pack = Pack::load(&dir)?;
        if !pack_names.insert(pack.reference()) {
            return Err(PlanError::DuplicatePack(pack.reference()));
        }
        for image in &pack.images {
            if !provided.iter().any(|p| &p.0 == image) {
                return Err(PlanError::UnprovidedImage {
                    pack: pack.reference(),
                    image: image.to_string(),
                });
            }
        }
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
        let digest = Digest::of(&manifest);
        let size = manifest.len() as u64;
        planner.add(digest, size, EntrySource::Memory(manifest));
        layout_manifests.push(Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest,
            size,
            platform: None,
            artifact_type: Some(PACK_ARTIFACT_TYPE.into()),
            annotations: [(REF_NAME_ANNOTATION.to_string(), pack.reference())]
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
    for (reference, source_text, source, desc) in &provided {
        let normalized = reference.to_string();
        let stored = planner.add_image(*source, desc, &normalized)?;
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
        });
    }

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
    };
    Ok(BuildPlan {
        index,
        entries,
        sources: planner.sources,
    })
}
