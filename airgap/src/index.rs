//! `bundle.json`: the signed index of a bundle. Everything a reader trusts about the archive is
//! derived from it after its signature verified.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::entry_path::EntryPath;
use crate::reference::ImageReference;

pub const FORMAT_VERSION: u32 = 1;
pub const INDEX_PATH: &str = "bundle.json";
pub const SIGNATURE_PATH: &str = "bundle.json.sig";
/// Bounds on the two entries read into memory before anything is verified.
pub const MAX_INDEX_SIZE: u64 = 32 << 20;
pub const MAX_SIGNATURE_SIZE: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleIndex {
    pub format_version: u32,
    pub name: String,
    /// Semantic version: what decides whether one release may replace another.
    pub version: semver::Version,
    /// RFC 3339, UTC; from `SOURCE_DATE_EPOCH` when set.
    pub created: String,
    /// RFC 3339, UTC: after this the release is no longer offered or installed (TUF's
    /// expiring metadata: a frozen repository cannot keep serving it forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub platforms: Vec<String>,
    pub packs: Vec<PackRecord>,
    pub images: Vec<ImageRecord>,
    /// Every entry after the signature, in archive order.
    pub entries: Vec<EntryRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRecord>,
    /// Blobs a delta bundle leaves out because the target already has them from its base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_blobs: Vec<Digest>,
    /// Public keys upstream signatures were verified with at build, so the air-gapped side
    /// can verify them again (`registry verify`) with nothing but this signed index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature_keys: Vec<SignatureKeyRecord>,
}

/// A public key (PEM, SubjectPublicKeyInfo) a signature policy named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignatureKeyRecord {
    /// sha256 of the key's DER SubjectPublicKeyInfo.
    pub id: Digest,
    pub pem: String,
}

/// The upstream signature an image carries: the signature manifest travels in the bundle
/// as an image of its own (`reference`, cosign's `sha256-<digest>.sig` tag), checked at
/// build against one of `keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignatureRecord {
    /// The signature image's normalized reference; an image of this index.
    pub reference: String,
    /// Digest of the signature manifest.
    pub digest: Digest,
    /// The policy: any of these keys (ids in `signatureKeys`) may sign.
    pub keys: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackRecord {
    pub name: String,
    pub version: String,
    pub layer: String,
    /// Name inside the bundle's OCI layout and under the mirror prefix: `packs/<name>:<version>`.
    pub reference: String,
    /// Digest of the pack's OCI manifest.
    pub digest: Digest,
    /// Images the pack needs, as normalized references.
    pub images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageRecord {
    /// The reference as the spec or pack wrote it.
    pub source: String,
    /// The normalized reference (`host/path:tag` or `host/path@digest`); also its name in the
    /// bundle's OCI layout.
    pub reference: String,
    /// Where it goes under a mirror prefix: `<host>/<path>`.
    pub mirror_repository: String,
    /// Digest of the manifest stored in the bundle.
    pub digest: Digest,
    /// Digest of the manifest as the source served it; differs from `digest` only when a
    /// multi-platform index was filtered.
    pub upstream_digest: Digest,
    pub media_type: String,
    /// Bytes of every blob this image uses, its manifests included.
    pub size: u64,
    /// Set when a signature policy covered the image at build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureRecord>,
    /// The upstream attestations (SBOMs, provenance) of an image a policy covered, each signed
    /// by a policy key; they travel as the image named by `reference` (`sha256-<digest>.att`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestations: Option<AttestationRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AttestationRecord {
    pub reference: String,
    pub digest: Digest,
    /// Each attestation's in-toto `predicateType`.
    pub predicate_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryRecord {
    pub path: EntryPath,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaseRecord {
    pub name: String,
    pub version: semver::Version,
    /// sha256 of the base bundle's `bundle.json` bytes.
    pub index_digest: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("bundle.json is not valid")]
    Malformed(#[source] serde_json::Error),
    #[error("bundle format version {0} is not supported (this airgap reads version {FORMAT_VERSION}); use a newer airgap")]
    UnsupportedVersion(u32),
    #[error("bundle.json lists entry {0} twice")]
    DuplicateEntry(EntryPath),
    #[error("bundle.json lists the reserved entry {0}")]
    ReservedEntry(EntryPath),
    #[error(
        "bundle.json lists blob {path} with sha256 {sha256}, which is not the digest its name says"
    )]
    BlobNameMismatch { path: EntryPath, sha256: Digest },
    #[error("bundle.json does not list the OCI layout entry {0}")]
    MissingLayoutEntry(&'static str),
    #[error("bundle.json: `{field}` is `{value}`, not an RFC 3339 time")]
    BadTime { field: &'static str, value: String },
    #[error("bundle.json: {what} `{value}` is not valid: {rule}")]
    BadName {
        what: &'static str,
        value: String,
        rule: String,
    },
    #[error("bundle.json: it expires ({expires}) before it was created ({created})")]
    ExpiresBeforeCreated { created: String, expires: String },
    #[error("bundle.json: image {image}'s signature {problem}")]
    Signature { image: String, problem: String },
}

fn rfc3339(field: &'static str, value: &str) -> Result<std::time::SystemTime, IndexError> {
    humantime::parse_rfc3339(value).map_err(|_| IndexError::BadTime {
        field,
        value: value.to_string(),
    })
}

impl BundleIndex {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses and checks the invariants the rest of the code relies on.
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        let index: BundleIndex = serde_json::from_slice(bytes).map_err(IndexError::Malformed)?;
        index.check()?;
        Ok(index)
    }

    /// When the release was built (its `created`).
    pub fn created_at(&self) -> Result<std::time::SystemTime, IndexError> {
        rfc3339("created", &self.created)
    }

    /// When the release stops being offered, if its signer set an expiry.
    pub fn expires_at(&self) -> Result<Option<std::time::SystemTime>, IndexError> {
        self.expires
            .as_deref()
            .map(|e| rfc3339("expires", e))
            .transpose()
    }

    pub fn check(&self) -> Result<(), IndexError> {
        if self.format_version != FORMAT_VERSION {
            return Err(IndexError::UnsupportedVersion(self.format_version));
        }
        if let Some(expires) = self.expires_at()? {
            if expires <= self.created_at()? {
                return Err(IndexError::ExpiresBeforeCreated {
                    created: self.created.clone(),
                    expires: self.expires.clone().unwrap_or_default(),
                });
            }
        }
        if !self.version.build.is_empty() {
            return Err(IndexError::BadName {
                what: "release version",
                value: self.version.to_string(),
                rule: "build metadata (`+…`) does not order releases and is not allowed".into(),
            });
        }
        self.check_names()?;
        self.check_signatures()?;
        let mut seen = HashSet::new();
        for entry in &self.entries {
            if entry.path.as_str() == INDEX_PATH || entry.path.as_str() == SIGNATURE_PATH {
                return Err(IndexError::ReservedEntry(entry.path.clone()));
            }
            if !seen.insert(entry.path.as_str()) {
                return Err(IndexError::DuplicateEntry(entry.path.clone()));
            }
            if let Some(hex) = entry.path.as_str().strip_prefix("blobs/sha256/") {
                if entry.sha256.hex() != hex {
                    return Err(IndexError::BlobNameMismatch {
                        path: entry.path.clone(),
                        sha256: entry.sha256,
                    });
                }
            }
        }
        for required in ["oci-layout", "index.json"] {
            if !seen.contains(required) {
                return Err(IndexError::MissingLayoutEntry(required));
            }
        }
        Ok(())
    }

    /// Every name a reader turns into a repository, a URL or a path: pack names and versions,
    /// image references and their mirror repositories. A signed index is still input: the
    /// signer's tooling may have been fooled by a pack's `pack.json`.
    fn check_names(&self) -> Result<(), IndexError> {
        use crate::name::{is_valid_pack_name, is_valid_repository, is_valid_tag};
        let bad = |what, value: &str, rule: &str| IndexError::BadName {
            what,
            value: value.to_string(),
            rule: rule.to_string(),
        };
        for pack in &self.packs {
            if !is_valid_pack_name(&pack.name) {
                return Err(bad("pack name", &pack.name, crate::name::PACK_NAME_RULE));
            }
            if !is_valid_tag(&pack.version) {
                return Err(bad("pack version", &pack.version, crate::name::TAG_RULE));
            }
            let expected = format!("packs/{}:{}", pack.name, pack.version);
            if pack.reference != expected {
                return Err(bad(
                    "pack reference",
                    &pack.reference,
                    &format!("must be `{expected}`"),
                ));
            }
            for image in &pack.images {
                ImageReference::parse(image).map_err(|e| bad("pack image", image, e.reason))?;
            }
        }
        for image in &self.images {
            let parsed = ImageReference::parse(&image.reference)
                .map_err(|e| bad("image reference", &image.reference, e.reason))?;
            let expected = parsed.mirror_repository();
            if image.mirror_repository != expected || !is_valid_repository(&expected) {
                return Err(bad(
                    "mirror repository",
                    &image.mirror_repository,
                    &format!(
                        "must be `{expected}` (the reference's host and path), a valid repository name"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every signature names an image of the index and keys the index carries.
    fn check_signatures(&self) -> Result<(), IndexError> {
        let keys: HashSet<Digest> = self.signature_keys.iter().map(|k| k.id).collect();
        for image in &self.images {
            if let Some(att) = &image.attestations {
                let carried = self
                    .images
                    .iter()
                    .any(|i| i.reference == att.reference && i.digest == att.digest);
                if !carried {
                    return Err(IndexError::Signature {
                        image: image.reference.clone(),
                        problem: format!(
                            "attestations {}@{} are not an image of the bundle",
                            att.reference, att.digest
                        ),
                    });
                }
            }
            let Some(signature) = &image.signature else {
                continue;
            };
            let bad = |problem: String| IndexError::Signature {
                image: image.reference.clone(),
                problem,
            };
            let carried = self
                .images
                .iter()
                .any(|i| i.reference == signature.reference && i.digest == signature.digest);
            if !carried {
                return Err(bad(format!(
                    "{}@{} is not an image of the bundle",
                    signature.reference, signature.digest
                )));
            }
            if signature.keys.is_empty() {
                return Err(bad("names no key".into()));
            }
            if let Some(missing) = signature.keys.iter().find(|k| !keys.contains(k)) {
                return Err(bad(format!(
                    "names key {missing}, which signatureKeys lacks"
                )));
            }
        }
        Ok(())
    }

    pub fn entry(&self, path: &str) -> Option<&EntryRecord> {
        self.entries.iter().find(|e| e.path.as_str() == path)
    }

    /// Sum of the entry sizes: the content the bundle carries.
    pub fn content_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}
