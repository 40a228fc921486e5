//! What the registry remembers of a stored manifest: enough to check what it references
//! before accepting it, to find it as a referrer of its subject, to index it in the layout's
//! `index.json`, and to know which blobs garbage collection must keep.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use registry::content_digest::ContentDigest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// An image manifest's config and layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<ContentDigest>,
    /// An index's child manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ContentDigest>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<ContentDigest>,
    /// `artifactType`, or for an image manifest without one its config's media type, as the
    /// referrers API reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: ContentDigest,
    #[allow(dead_code)]
    size: u64,
    /// Where a non-distributable layer is fetched from instead of the registry.
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Bytes of annotations (keys and values) a record keeps: what the referrers API reports of a
/// referrer. A manifest may carry megabytes of them; kept whole, a few referrers grew the
/// server by hundreds of megabytes and one listing to 100 MiB. The manifest itself keeps
/// them all.
pub const MAX_KEPT_ANNOTATIONS: usize = 16 << 10;

/// The annotations, in key order, while they fit in [`MAX_KEPT_ANNOTATIONS`].
fn kept(annotations: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut used = 0;
    annotations
        .into_iter()
        .filter(|(k, v)| {
            let size = k.len() + v.len();
            if used + size > MAX_KEPT_ANNOTATIONS {
                return false;
            }
            used += size;
            true
        })
        .collect()
}

/// Why a manifest is not one the registry stores.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("mediaType {declared} does not match the Content-Type {content_type}")]
    MediaType {
        declared: String,
        content_type: String,
    },
    #[error("an index needs a manifests list")]
    IndexWithoutManifests,
    #[error("an image manifest needs a config")]
    ManifestWithoutConfig,
}

impl ManifestRecord {
    /// Parses a manifest pushed (or stored) as `media_type`: an index type, or else an image
    /// manifest, which must name a config.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(bytes)?;
        if let Some(declared) = &raw.media_type {
            if declared != media_type {
                return Err(ManifestError::MediaType {
                    declared: declared.clone(),
                    content_type: media_type.to_string(),
                });
            }
        }
        let mut record = ManifestRecord {
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
            blobs: Vec::new(),
            children: Vec::new(),
            subject: raw.subject.map(|s| s.digest),
            artifact_type: raw.artifact_type,
            annotations: kept(raw.annotations),
        };
        if airgap::oci::is_index(media_type) {
            let children = raw.manifests.ok_or(ManifestError::IndexWithoutManifests)?;
            record.children = children.into_iter().map(|d| d.digest).collect();
        } else {
            let config = raw.config.ok_or(ManifestError::ManifestWithoutConfig)?;
            if record.artifact_type.is_none() {
                record.artifact_type = Some(config.media_type.clone());
            }
            record.blobs.push(config.digest);
            // A layer with `urls` (non-distributable, a Windows base layer say) is fetched from
            // there: the registry need not hold it (the spec lets a manifest name it anyway).
            // If it was pushed, its link to the repository keeps it.
            record.blobs.extend(
                raw.layers
                    .into_iter()
                    .filter(|d| d.urls.is_empty())
                    .map(|d| d.digest),
            );
        }
        Ok(record)
    }

    /// Everything this manifest needs to exist in its repository before it is accepted.
    pub fn references(&self) -> impl Iterator<Item = &ContentDigest> {
        self.blobs.iter().chain(self.children.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn an_artifact_with_a_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.example.sbom","digest":"{}","size":2}},
            "layers":[{{"mediaType":"x","digest":"{}","size":3}}],
            "subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":9}},
            "annotations":{{"a":"b"}}}}"#,
            d(1),
            d(2),
            d(3)
        );
        let r = ManifestRecord::parse(airgap::oci::OCI_MANIFEST, body.as_bytes()).unwrap();
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(r.subject, Some(d(3).parse().unwrap()));
        assert_eq!(r.blobs.len(), 2);
        assert_eq!(r.annotations["a"], "b");
    }

    #[test]
    fn refuses_what_is_not_a_manifest_of_its_type() {
        assert!(ManifestRecord::parse(airgap::oci::OCI_MANIFEST, b"{}").is_err());
        assert!(ManifestRecord::parse(airgap::oci::OCI_INDEX, b"{}").is_err());
        let mismatched =
            br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(ManifestRecord::parse(airgap::oci::OCI_MANIFEST, mismatched).is_err());
        let bad_digest = br#"{"config":{"mediaType":"x","digest":"sha1:00","size":1}}"#;
        assert!(ManifestRecord::parse(airgap::oci::OCI_MANIFEST, bad_digest).is_err());
    }
}
