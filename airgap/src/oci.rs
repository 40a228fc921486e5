//! The parts of the OCI image and distribution data model that bundles need: descriptors,
//! manifests, indexes, media types, and platform filtering. Only the fields we act on are
//! typed; manifests are always kept and shipped as the exact bytes they were read as.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_LAYOUT_FILE: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// What names a pack in a bundle's `index.json`, instead of [`REF_NAME_ANNOTATION`]: image
/// tools (`ctr image import`, k3s and RKE2 importing a tarball) take every ref-named entry for
/// a container image and fail to unpack a pack, so packs are named where only airgap looks
/// (`bundle.json` is the record of what a bundle holds either way).
pub const PACK_NAME_ANNOTATION: &str = "io.airgap.pack.ref";
/// Manifests are small; anything past this is refused rather than read into memory.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether this platform is what `wanted` (`os/arch[/variant]`) asks for. A wanted platform
    /// without a variant matches every variant.
    pub fn matches(&self, wanted: &str) -> bool {
        let mut parts = wanted.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// Whether an index child is kept when a bundle is filtered to `wanted` platforms (`None`
/// keeps everything). A child that names no platform (an attestation, say) is always kept.
pub fn keeps_platform(wanted: Option<&[String]>, child: &Descriptor) -> bool {
    match (wanted, &child.platform) {
        (Some(wanted), Some(p)) => wanted.iter().any(|w| p.matches(w)),
        _ => true,
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker schema 2): what it points at.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The media type a manifest declares, falling back to the shape of its JSON (OCI allows the
/// field to be absent).
pub fn detect_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match probe {
        Probe {
            media_type: Some(m),
            ..
        } => Some(m),
        Probe {
            manifests: Some(_), ..
        } => Some(OCI_INDEX.to_string()),
        Probe {
            config: Some(_), ..
        } => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

/// The manifest or index media type of `bytes`: the one its content declares (or its JSON
/// shape implies), else `declared` (a descriptor's or a Content-Type header's). `None` when
/// neither is a manifest or an index this crate handles.
pub fn manifest_media_type(bytes: &[u8], declared: &str) -> Option<String> {
    let handled = |m: &String| is_index(m) || is_manifest(m);
    detect_media_type(bytes)
        .filter(handled)
        .or_else(|| Some(declared.to_string()).filter(handled))
}

/// The OCI layout `index.json` listing `manifests`, deterministic for the same input.
pub fn layout_index(manifests: &[Descriptor]) -> Vec<u8> {
    let value = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let mut out = serde_json::to_vec(&value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_matching() {
        let p = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert!(p.matches("linux/arm64"));
        assert!(p.matches("linux/arm64/v8"));
        assert!(!p.matches("linux/arm64/v7"));
        assert!(!p.matches("linux/amd64"));
    }
}
