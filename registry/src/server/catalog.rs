//! What the built-in registry holds: repositories, their tags, manifests and linked blobs.
//! Both stores (a bundle archive, an OCI layout directory) describe their content with it.

use std::collections::{BTreeMap, HashMap, HashSet};

use airgap::Digest;

use crate::manifest::References;

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
            repo.blobs.extend(blobs.iter().map(|d| d.digest));
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
        let is_manifest = matches!(refs, References::Manifests(_));
        refs.descriptors()
            .iter()
            .map(|d| d.digest)
            .filter(|d| {
                !repo.is_some_and(|r| {
                    if is_manifest {
                        r.manifests.contains_key(d)
                    } else {
                        r.blobs.contains(d)
                    }
                })
            })
            .collect()
    }
}
