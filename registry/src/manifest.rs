//! What a manifest points at: the one parse both the seeder (what to push before it) and the
//! built-in registry (what must exist before it is stored) rely on.

use airgap::oci::{self, Descriptor, ImageIndex, ImageManifest};

/// The descriptors a manifest references, by kind.
#[derive(Debug, Clone)]
pub enum References {
    /// An image manifest: its config, then its layers.
    Blobs(Vec<Descriptor>),
    /// An index: its child manifests.
    Manifests(Vec<Descriptor>),
}

impl References {
    /// Parses a manifest of `media_type` (an index type, or else an image manifest).
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, serde_json::Error> {
        if oci::is_index(media_type) {
            let index: ImageIndex = serde_json::from_slice(bytes)?;
            Ok(References::Manifests(index.manifests))
        } else {
            let manifest: ImageManifest = serde_json::from_slice(bytes)?;
            let mut blobs = Vec::with_capacity(manifest.layers.len() + 1);
            blobs.push(manifest.config);
            blobs.extend(manifest.layers);
            Ok(References::Blobs(blobs))
        }
    }

    pub fn descriptors(&self) -> &[Descriptor] {
        match self {
            References::Blobs(d) | References::Manifests(d) => d,
        }
    }
}
