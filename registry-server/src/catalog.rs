//! What the built-in registry holds: repositories, their tags, manifests and linked blobs, as
//! one in-memory view every request reads. It changes only by [`Change`]s, the same values a
//! metadata backend makes durable (a local log, or keys in etcd) and replays, so a catalog
//! rebuilt from storage, or followed from another node, is the catalog that was written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::manifest_record::ManifestRecord;
use registry::content_digest::ContentDigest;

#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub tags: BTreeMap<String, ContentDigest>,
    pub manifests: HashMap<ContentDigest, Arc<ManifestRecord>>,
    /// Blobs linked into the repository (uploaded, mounted, or referenced by a manifest).
    pub blobs: HashSet<ContentDigest>,
}

/// One durable change to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Change {
    LinkBlob {
        repo: String,
        digest: ContentDigest,
    },
    UnlinkBlob {
        repo: String,
        digest: ContentDigest,
    },
    PutManifest {
        repo: String,
        digest: ContentDigest,
        record: ManifestRecord,
    },
    DeleteManifest {
        repo: String,
        digest: ContentDigest,
    },
    Tag {
        repo: String,
        tag: String,
        digest: ContentDigest,
    },
    Untag {
        repo: String,
        tag: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub repositories: BTreeMap<String, Repository>,
    /// Subject digest -> (repository, referrer manifest digest), for the referrers API.
    referrers: HashMap<ContentDigest, BTreeSet<(String, ContentDigest)>>,
}

impl Catalog {
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.get(name)
    }

    /// Resolves a tag or digest to a manifest of the repository.
    pub fn resolve(
        &self,
        name: &str,
        reference: &str,
    ) -> Option<(ContentDigest, Arc<ManifestRecord>)> {
        let repo = self.repositories.get(name)?;
        let digest = match reference.parse::<ContentDigest>() {
            Ok(d) => d,
            Err(_) => *repo.tags.get(reference)?,
        };
        repo.manifests.get(&digest).map(|m| (digest, m.clone()))
    }

    pub fn has_blob(&self, name: &str, digest: &ContentDigest) -> bool {
        self.repositories
            .get(name)
            .is_some_and(|r| r.blobs.contains(digest) || r.manifests.contains_key(digest))
    }

    /// Digests a manifest references that its repository lacks.
    pub fn missing(&self, name: &str, record: &ManifestRecord) -> Vec<ContentDigest> {
        let repo = self.repositories.get(name);
        let blobs = record
            .blobs
            .iter()
            .filter(|d| !repo.is_some_and(|r| r.blobs.contains(d)));
        let children = record
            .children
            .iter()
            .filter(|d| !repo.is_some_and(|r| r.manifests.contains_key(d)));
        blobs.chain(children).copied().collect()
    }

    /// Manifests in `name` whose subject is `subject`, with their records.
    pub fn referrers(
        &self,
        name: &str,
        subject: &ContentDigest,
    ) -> Vec<(ContentDigest, Arc<ManifestRecord>)> {
        let Some(set) = self.referrers.get(subject) else {
            return Vec::new();
        };
        set.iter()
            .filter(|(repo, _)| repo == name)
            .filter_map(|(repo, d)| {
                let record = self.repositories.get(repo)?.manifests.get(d)?;
                Some((*d, record.clone()))
            })
            .collect()
    }

    /// Every blob and manifest some manifest still needs: what garbage collection keeps.
    pub fn referenced(&self) -> HashSet<ContentDigest> {
        let mut keep = HashSet::new();
        for repo in self.repositories.values() {
            for (digest, record) in &repo.manifests {
                keep.insert(*digest);
                keep.extend(record.blobs.iter().copied());
            }
        }
        keep
    }

    pub fn manifest_count(&self) -> usize {
        self.repositories.values().map(|r| r.manifests.len()).sum()
    }

    /// The changes that, applied to an empty catalog, rebuild this one.
    pub fn snapshot(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for (name, repo) in &self.repositories {
            let mut blobs: Vec<_> = repo.blobs.iter().collect();
            blobs.sort();
            out.extend(blobs.into_iter().map(|d| Change::LinkBlob {
                repo: name.clone(),
                digest: *d,
            }));
            let mut manifests: Vec<_> = repo.manifests.iter().collect();
            // Children before the indexes that list them, as when they were pushed.
            manifests.sort_by_key(|(d, r)| (!r.children.is_empty(), **d));
            out.extend(manifests.into_iter().map(|(d, r)| Change::PutManifest {
                repo: name.clone(),
                digest: *d,
                record: (**r).clone(),
            }));
            out.extend(repo.tags.iter().map(|(tag, d)| Change::Tag {
                repo: name.clone(),
                tag: tag.clone(),
                digest: *d,
            }));
        }
        out
    }

    /// Applies one change. Idempotent: replaying a change already applied changes nothing,
    /// which is what lets a backend replay a log, or a watch deliver our own writes back.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::LinkBlob { repo, digest } => {
                self.repo_mut(repo).blobs.insert(*digest);
            }
            Change::UnlinkBlob { repo, digest } => {
                if let Some(r) = self.repositories.get_mut(repo) {
                    r.blobs.remove(digest);
                }
                self.drop_if_empty(repo);
            }
            Change::PutManifest {
                repo,
                digest,
                record,
            } => {
                if let Some(subject) = record.subject {
                    self.referrers
                        .entry(subject)
                        .or_default()
                        .insert((repo.clone(), *digest));
                }
                let r = self.repo_mut(repo);
                r.blobs.extend(record.blobs.iter().copied());
                r.manifests.insert(*digest, Arc::new(record.clone()));
            }
            Change::DeleteManifest { repo, digest } => {
                let removed = self
                    .repositories
                    .get_mut(repo)
                    .and_then(|r| r.manifests.remove(digest));
                if let Some(subject) = removed.and_then(|r| r.subject) {
                    if let Some(set) = self.referrers.get_mut(&subject) {
                        set.remove(&(repo.clone(), *digest));
                        if set.is_empty() {
                            self.referrers.remove(&subject);
                        }
                    }
                }
                self.drop_if_empty(repo);
            }
            Change::Tag { repo, tag, digest } => {
                self.repo_mut(repo).tags.insert(tag.clone(), *digest);
            }
            Change::Untag { repo, tag } => {
                if let Some(r) = self.repositories.get_mut(repo) {
                    r.tags.remove(tag);
                }
                self.drop_if_empty(repo);
            }
        }
    }

    fn repo_mut(&mut self, name: &str) -> &mut Repository {
        self.repositories.entry(name.to_string()).or_default()
    }

    fn drop_if_empty(&mut self, name: &str) {
        if self
            .repositories
            .get(name)
            .is_some_and(|r| r.tags.is_empty() && r.manifests.is_empty() && r.blobs.is_empty())
        {
            self.repositories.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> ContentDigest {
        ContentDigest::Sha256([n; 32])
    }

    fn image(blobs: &[u8], subject: Option<u8>) -> ManifestRecord {
        ManifestRecord {
            media_type: airgap::oci::OCI_MANIFEST.into(),
            size: 10,
            blobs: blobs.iter().map(|n| d(*n)).collect(),
            children: vec![],
            subject: subject.map(d),
            artifact_type: Some("application/vnd.example".into()),
            annotations: Default::default(),
        }
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_catalog_and_replays_are_idempotent() {
        let mut c = Catalog::default();
        let changes = [
            Change::LinkBlob {
                repo: "a/b".into(),
                digest: d(1),
            },
            Change::PutManifest {
                repo: "a/b".into(),
                digest: d(10),
                record: image(&[1], None),
            },
            Change::Tag {
                repo: "a/b".into(),
                tag: "v1".into(),
                digest: d(10),
            },
            Change::PutManifest {
                repo: "a/b".into(),
                digest: d(11),
                record: image(&[1], Some(10)),
            },
        ];
        for ch in changes.iter().chain(changes.iter()) {
            c.apply(ch);
        }
        assert_eq!(c.referrers("a/b", &d(10)).len(), 1);
        let mut rebuilt = Catalog::default();
        for ch in c.snapshot() {
            rebuilt.apply(&ch);
        }
        assert_eq!(rebuilt.snapshot(), c.snapshot());
        assert_eq!(rebuilt.referrers("a/b", &d(10)).len(), 1);
        assert_eq!(rebuilt.resolve("a/b", "v1").map(|r| r.0), Some(d(10)));

        c.apply(&Change::DeleteManifest {
            repo: "a/b".into(),
            digest: d(11),
        });
        assert!(c.referrers("a/b", &d(10)).is_empty());
        assert_eq!(c.referenced(), HashSet::from([d(1), d(10)]));
    }
}
