//! What a verified release brought in, as a software bill of materials: every image (with its
//! manifests, configs, layers and platforms), every pack (and the node binaries under its
//! `bin/` and `cni/bin/`), every entry of the signed index, the release and its signer. The
//! [`Inventory`] is read once from the bundle, every byte digest-checked as it streams, and
//! rendered as CycloneDX 1.5 ([`Inventory::cyclonedx`]) or SPDX 2.3 ([`Inventory::spdx`]) JSON.

use airgap::oci::{self, Descriptor};
use airgap::{BundleIndex, Digest};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::pack_files::{visit_files, PackFileCause, PackFilesError};
use crate::source::{ContentSource, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("manifest {digest} is not valid")]
    Manifest {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Pack(#[from] PackFilesError),
}

/// Everything a release holds, read from its verified bundle.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub name: String,
    pub version: String,
    pub created: String,
    /// sha256 of the signed `bundle.json`.
    pub index_sha256: Digest,
    pub signer: String,
    pub images: Vec<ImageItem>,
    pub packs: Vec<PackItem>,
    /// Every entry of the signed index: path, size, sha256.
    pub entries: Vec<(String, u64, Digest)>,
}

#[derive(Debug, Clone)]
pub struct ImageItem {
    pub reference: String,
    /// `<host>/<path>`: where it goes under a mirror.
    pub repository: String,
    pub digest: Digest,
    pub upstream_digest: String,
    pub media_type: String,
    /// One per platform manifest (one for a single-platform image).
    pub manifests: Vec<PlatformManifest>,
    /// The carried upstream signature's reference, when a policy required one.
    pub signature: Option<String>,
    /// The carried upstream attestations: (predicate type, the reference they travel as).
    pub attestations: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PlatformManifest {
    pub digest: Digest,
    /// `os/architecture[/variant]`, when the index or the config says.
    pub platform: Option<String>,
    /// The config, then each layer.
    pub blobs: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
pub struct PackItem {
    pub name: String,
    pub version: String,
    pub layer: String,
    pub digest: Digest,
    pub binaries: Vec<Binary>,
}

/// A file under a pack's `bin/` or `cni/bin/`: what the node runs.
#[derive(Debug, Clone)]
pub struct Binary {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

fn read_manifest<T: serde::de::DeserializeOwned>(
    source: &dyn ContentSource,
    digest: &Digest,
) -> Result<(T, Vec<u8>), SbomError> {
    let bytes = source.read_blob(digest, oci::MAX_MANIFEST_SIZE)?;
    let parsed = serde_json::from_slice(&bytes).map_err(|source| SbomError::Manifest {
        digest: *digest,
        source,
    })?;
    Ok((parsed, bytes))
}

/// `os/architecture[/variant]` from an image config, if it says (an artifact's config need
/// not). A config that cannot be read, or is not what the signed index says, is an error.
fn config_platform(
    source: &dyn ContentSource,
    config: &Descriptor,
) -> Result<Option<String>, SbomError> {
    let bytes = source.read_blob(&config.digest, 1 << 20)?;
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    let (Some(os), Some(arch)) = (value["os"].as_str(), value["architecture"].as_str()) else {
        return Ok(None);
    };
    Ok(Some(match value["variant"].as_str() {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    }))
}

fn platform_manifest(
    source: &dyn ContentSource,
    digest: &Digest,
    platform: Option<String>,
) -> Result<PlatformManifest, SbomError> {
    let (manifest, _) = read_manifest::<oci::ImageManifest>(source, digest)?;
    let platform = match platform {
        Some(p) => Some(p),
        None => config_platform(source, &manifest.config)?,
    };
    let mut blobs = vec![manifest.config];
    blobs.extend(manifest.layers);
    Ok(PlatformManifest {
        digest: *digest,
        platform,
        blobs,
    })
}

impl Inventory {
    /// Reads `source` (a verified bundle) in full: manifests, configs, and the packs' layers,
    /// each checked against the signed index as it is read.
    pub fn read(source: &dyn ContentSource) -> Result<Inventory, SbomError> {
        let verified = source.verified();
        let index: &BundleIndex = verified.index();
        let held: std::collections::HashSet<Digest> =
            index.entries.iter().map(|e| e.sha256).collect();
        let mut images = Vec::new();
        for image in &index.images {
            let mut manifests = Vec::new();
            if oci::is_index(&image.media_type) {
                let (list, _) = read_manifest::<oci::ImageIndex>(source, &image.digest)?;
                for child in &list.manifests {
                    let platform = child.platform.as_ref().map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    });
                    // A platform-filtered index names children the bundle left out.
                    if held.contains(&child.digest) {
                        manifests.push(platform_manifest(source, &child.digest, platform)?);
                    }
                }
            } else {
                manifests.push(platform_manifest(source, &image.digest, None)?);
            }
            images.push(ImageItem {
                reference: image.reference.clone(),
                repository: image.mirror_repository.clone(),
                digest: image.digest,
                upstream_digest: image.upstream_digest.to_string(),
                media_type: image.media_type.clone(),
                manifests,
                signature: image.signature.as_ref().map(|s| s.reference.clone()),
                attestations: image
                    .attestations
                    .iter()
                    .flat_map(|a| {
                        a.predicate_types
                            .iter()
                            .map(|t| (t.clone(), a.reference.clone()))
                    })
                    .collect(),
            });
        }
        let mut packs = Vec::new();
        for pack in &index.packs {
            let mut binaries = Vec::new();
            visit_files(
                source,
                pack,
                |path| path.starts_with("bin/") || path.starts_with("cni/bin/"),
                |path, size, contents| {
                    let mut hasher = sha2::Sha256::new();
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = contents.read(&mut buf).map_err(PackFileCause::Read)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                    binaries.push(Binary {
                        path: path.to_string(),
                        size,
                        sha256: hex::encode(hasher.finalize()),
                    });
                    Ok(())
                },
            )?;
            packs.push(PackItem {
                name: pack.name.clone(),
                version: pack.version.clone(),
                layer: pack.layer.clone(),
                digest: pack.digest,
                binaries,
            });
        }
        Ok(Inventory {
            name: index.name.clone(),
            version: index.version.to_string(),
            created: index.created.clone(),
            index_sha256: verified.index_digest(),
            signer: verified.signer().to_string(),
            images,
            packs,
            entries: index
                .entries
                .iter()
                .map(|e| (e.path.as_str().to_string(), e.size, e.sha256))
                .collect(),
        })
    }

    /// A package URL for an image (`pkg:oci/<name>@<digest>?repository_url=<repository>`).
    fn purl(image: &ImageItem) -> String {
        let name = image
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&image.repository);
        format!(
            "pkg:oci/{name}@{}?repository_url={}",
            image.digest.to_string().replace(':', "%3A"),
            image.repository
        )
    }

    /// CycloneDX 1.5 JSON.
    pub fn cyclonedx(&self) -> Value {
        let hash = |d: &Digest| json!([{"alg": "SHA-256", "content": d.hex()}]);
        let images = self.images.iter().map(|image| {
            let manifests: Vec<Value> = image
                .manifests
                .iter()
                .map(|m| {
                    let blobs: Vec<Value> = m
                        .blobs
                        .iter()
                        .map(|b| {
                            json!({
                                "type": "data",
                                "bom-ref": format!("{}#{}#{}", image.reference, m.digest, b.digest),
                                "name": b.digest.to_string(),
                                "hashes": hash(&b.digest),
                                "properties": [
                                    {"name": "airgap:mediaType", "value": b.media_type},
                                    {"name": "airgap:size", "value": b.size.to_string()},
                                ],
                            })
                        })
                        .collect();
                    let mut properties = vec![json!({"name": "airgap:manifest", "value": m.digest.to_string()})];
                    if let Some(p) = &m.platform {
                        properties.push(json!({"name": "airgap:platform", "value": p}));
                    }
                    json!({
                        "type": "container",
                        "bom-ref": format!("{}#{}", image.reference, m.digest),
                        "name": format!("{} ({})", image.reference, m.platform.as_deref().unwrap_or("any platform")),
                        "hashes": hash(&m.digest),
                        "properties": properties,
                        "components": blobs,
                    })
                })
                .collect();
            let mut properties = vec![
                json!({"name": "airgap:upstreamDigest", "value": image.upstream_digest}),
                json!({"name": "airgap:mediaType", "value": image.media_type}),
            ];
            if let Some(signature) = &image.signature {
                properties.push(json!({"name": "airgap:upstreamSignature", "value": signature}));
            }
            for (predicate, reference) in &image.attestations {
                properties.push(json!({"name": "airgap:attestation", "value": format!("{predicate} {reference}")}));
            }
            json!({
                "type": "container",
                "bom-ref": image.reference,
                "name": image.reference,
                "hashes": hash(&image.digest),
                "purl": Self::purl(image),
                "properties": properties,
                "components": manifests,
            })
        });
        let packs = self.packs.iter().map(|pack| {
            let binaries: Vec<Value> = pack
                .binaries
                .iter()
                .map(|b| {
                    json!({
                        "type": "application",
                        "bom-ref": format!("pack:{}:{}/{}", pack.name, pack.version, b.path),
                        "name": b.path.rsplit('/').next().unwrap_or(&b.path),
                        "version": pack.version,
                        "hashes": [{"alg": "SHA-256", "content": b.sha256}],
                        "properties": [
                            {"name": "airgap:path", "value": b.path},
                            {"name": "airgap:size", "value": b.size.to_string()},
                        ],
                    })
                })
                .collect();
            json!({
                "type": "library",
                "bom-ref": format!("pack:{}:{}", pack.name, pack.version),
                "name": pack.name,
                "version": pack.version,
                "hashes": hash(&pack.digest),
                "properties": [{"name": "airgap:layer", "value": pack.layer}],
                "components": binaries,
            })
        });
        let entries = self.entries.iter().map(|(path, size, sha256)| {
            json!({
                "type": "file",
                "bom-ref": format!("entry:{path}"),
                "name": path,
                "hashes": hash(sha256),
                "properties": [{"name": "airgap:size", "value": size.to_string()}],
            })
        });
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": format!("urn:uuid:{}", uuid_from(&self.index_sha256)),
            "version": 1,
            "metadata": {
                "timestamp": self.created,
                "tools": {"components": [{"type": "application", "name": "airgap", "version": env!("CARGO_PKG_VERSION")}]},
                "component": {
                    "type": "application",
                    "bom-ref": "release",
                    "name": self.name,
                    "version": self.version,
                    "hashes": hash(&self.index_sha256),
                    "properties": [{"name": "airgap:signer", "value": self.signer}],
                },
            },
            "components": images.chain(packs).chain(entries).collect::<Vec<_>>(),
        })
    }

    /// SPDX 2.3 JSON.
    pub fn spdx(&self) -> Value {
        let mut packages = vec![json!({
            "SPDXID": "SPDXRef-Release",
            "name": self.name,
            "versionInfo": self.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": self.index_sha256.hex()}],
            "primaryPackagePurpose": "APPLICATION",
            "supplier": "NOASSERTION",
            "comment": format!("signed by {}", self.signer),
        })];
        let mut relationships = vec![json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Release",
        })];
        let contains = |parent: &str, child: &str, rel: &mut Vec<Value>| {
            rel.push(json!({
                "spdxElementId": parent,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": child,
            }));
        };
        for (i, image) in self.images.iter().enumerate() {
            let id = format!("SPDXRef-Image-{i}");
            let mut refs = vec![
                json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": Self::purl(image)}),
            ];
            if let Some(signature) = &image.signature {
                refs.push(json!({"referenceCategory": "OTHER", "referenceType": "airgap-upstream-signature", "referenceLocator": signature}));
            }
            for (predicate, reference) in &image.attestations {
                refs.push(json!({"referenceCategory": "OTHER", "referenceType": "airgap-attestation", "referenceLocator": reference, "comment": predicate}));
            }
            packages.push(json!({
                "SPDXID": id,
                "name": image.reference,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": image.digest.hex()}],
                "primaryPackagePurpose": "CONTAINER",
                "externalRefs": refs,
                "comment": format!("upstream digest {}", image.upstream_digest),
            }));
            contains("SPDXRef-Release", &id, &mut relationships);
            for (j, m) in image.manifests.iter().enumerate() {
                let mid = format!("{id}-{j}");
                packages.push(json!({
                    "SPDXID": mid,
                    "name": format!("{} ({})", image.reference, m.platform.as_deref().unwrap_or("any platform")),
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": m.digest.hex()}],
                    "primaryPackagePurpose": "CONTAINER",
                }));
                contains(&id, &mid, &mut relationships);
                for (k, b) in m.blobs.iter().enumerate() {
                    let bid = format!("{mid}-{k}");
                    packages.push(json!({
                        "SPDXID": bid,
                        "name": b.digest.to_string(),
                        "downloadLocation": "NOASSERTION",
                        "filesAnalyzed": false,
                        "checksums": [{"algorithm": "SHA256", "checksumValue": b.digest.hex()}],
                        "primaryPackagePurpose": "FILE",
                        "comment": b.media_type,
                    }));
                    contains(&mid, &bid, &mut relationships);
                }
            }
        }
        for (i, pack) in self.packs.iter().enumerate() {
            let id = format!("SPDXRef-Pack-{i}");
            packages.push(json!({
                "SPDXID": id,
                "name": pack.name,
                "versionInfo": pack.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": pack.digest.hex()}],
                "primaryPackagePurpose": "LIBRARY",
            }));
            contains("SPDXRef-Release", &id, &mut relationships);
            for (j, b) in pack.binaries.iter().enumerate() {
                let bid = format!("{id}-{j}");
                packages.push(json!({
                    "SPDXID": bid,
                    "name": b.path.rsplit('/').next().unwrap_or(&b.path),
                    "versionInfo": pack.version,
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": b.sha256}],
                    "primaryPackagePurpose": "APPLICATION",
                    "comment": b.path,
                }));
                contains(&id, &bid, &mut relationships);
            }
        }
        for (i, (path, _, sha256)) in self.entries.iter().enumerate() {
            let id = format!("SPDXRef-Entry-{i}");
            packages.push(json!({
                "SPDXID": id,
                "name": path,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": sha256.hex()}],
                "primaryPackagePurpose": "FILE",
            }));
            contains("SPDXRef-Release", &id, &mut relationships);
        }
        json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{} {}", self.name, self.version),
            "documentNamespace": format!("https://airgap.invalid/spdx/{}/{}/{}", self.name, self.version, self.index_sha256.hex()),
            "creationInfo": {
                "created": self.created,
                "creators": [format!("Tool: airgap-{}", env!("CARGO_PKG_VERSION"))],
            },
            "packages": packages,
            "relationships": relationships,
        })
    }
}

/// A version-4-shaped UUID derived from the release's index digest: the same release always
/// gets the same serial number.
fn uuid_from(digest: &Digest) -> String {
    let b = digest.as_bytes();
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
