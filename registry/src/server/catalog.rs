//! What the built-in registry holds: repositories, their tags, manifests and linked blobs.
//! Both stores (a bundle archive, an OCI layout directory) describe their content with it.

use std::collections::{BTreeMap, HashMap, HashSet};

use airgap::oci::{self, ImageIndex, ImageManifest};
use airgap::Digest;

#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub tags: BTreeMap<String, Digest>,
    /// Manifest digest -> media type.
    pub manifests: HashMap<Digest, String>,
    pub blobs: HashSet<Digest>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub repositories: BTreeMap<String, Repository>,
}

/// What a manifest points at, by kind.
pub enum References {
    Blobs(Vec<Digest>),
    Manifests(Vec<Digest>),
}

/// Parses a manifest of `media_type` and lists what must exist before it may be stored.
pub fn references(media_type: &str, bytes: &[u8]) -> Result<References, String> {
    if oci::is_index(media_type) {
        let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(References::Manifests(
            index.manifests.iter().map(|d| d.digest).collect(),
        ))
    } else {
        let manifest: ImageManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(References::Blobs(
            std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .map(|d| d.digest)
                .collect(),
        ))
    }
}

impl Catalog {
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.get(name)
    }

    /// Resolves a tag or digest to a manifest of the repository.
    pub fn resolve(&self, name: &str, reference: &str) -> Option<(Digest, String)> {
        let repo = self.repositories.get(name)?;
        let digest = match reference.parse::<Digest>() {
            Ok(d) => d,
            Err(_) => *repo.tags.get(reference)?,
        };
        repo.manifests.get(&digest).map(|m| (digest, m.clone()))
    }

    pub fn has_blob(&self, name: &str, digest: &Digest) -> bool {
        self.repositories
            .get(name)
            .is_some_and(|r| r.blobs.contains(digest) || r.manifests.contains_key(digest))
    }

    /// Records a manifest (and, for image manifests, the blobs it links) in a repository.
    pub fn add_manifest(
        &mut self,
        name: &str,
        tag: Option<&str>,
        digest: Digest,
        media_type: &str,
        refs: &References,
    ) {
        let repo = self.repositories.entry(name.to_string()).or_default();
        repo.manifests.insert(digest, media_type.to_string());
        if let References::Blobs(blobs) = refs {
            repo.blobs.extend(blobs.iter().copied());
        }
        if let Some(tag) = tag {
            repo.tags.insert(tag.to_string(), digest);
        }
    }

    pub fn link_blob(&mut self, name: &str, digest: Digest) {
        self.repositories
            .entry(name.to_string())
            .or_default()
            .blobs
            .insert(digest);
    }

    /// Digests a manifest references that the repository lacks.
    pub fn missing(&self, name: &str, refs: &References) -> Vec<Digest> {
        let repo = self.repositories.get(name);
        let (list, is_manifest) = match refs {
            References::Blobs(b) => (b, false),
            References::Manifests(m) => (m, true),
        };
        list.iter()
            .filter(|d| {
                !repo.is_some_and(|r| {
                    if is_manifest {
                        r.manifests.contains_key(d)
                    } else {
                        r.blobs.contains(d)
                    }
                })
            })
            .copied()
            .collect()
    }
}
