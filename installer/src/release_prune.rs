//! `airgap release prune`: removes old releases from a registry the releases were seeded into
//! (the node's own, or a mirror), keeping the newest N and the one the node runs.
//!
//! What a release holds is read from its signed index, verified with the release key: a
//! release artifact that does not verify is never pruned and never makes anything prunable.
//! An image or pack of a pruned release is deleted (by manifest digest, so its tags go with
//! it) only when no kept release names the same manifest in the same repository; then the
//! release artifact itself, then the registry collects the blobs nothing references any more.

use std::collections::BTreeSet;

use airgap::Digest;
use registry::mirror::{mirrored_names, MirrorTarget, MirroredName};
use registry::RegistryClient;

use crate::release::ReleaseId;
use crate::upgrade::ListedRelease;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("--keep must be at least 1: a registry always keeps its newest release")]
    KeepNothing,
    #[error("no release in the registry verifies with this key, so nothing is known to be safe to delete")]
    NothingVerified,
    #[error("deleting {what}")]
    Delete {
        what: String,
        #[source]
        cause: registry::RegistryError,
    },
}

/// What a prune removes, decided before anything is deleted.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    pub kept: Vec<ReleaseId>,
    /// Each pruned release and its artifact's tag.
    pub pruned: Vec<(String, ReleaseId)>,
    /// Image and pack manifests only pruned releases name.
    pub manifests: Vec<MirroredName>,
}

impl PrunePlan {
    /// Keeps the `keep` newest verified releases and `running`; prunes the other verified ones.
    pub fn new(
        listed: &[ListedRelease],
        keep: usize,
        running: Option<&ReleaseId>,
        target: &MirrorTarget,
    ) -> Result<Self, PruneError> {
        if keep == 0 {
            return Err(PruneError::KeepNothing);
        }
        let mut verified: Vec<(&String, &ReleaseId, &airgap::BundleIndex)> = listed
            .iter()
            .filter_map(|l| match l {
                ListedRelease::Verified {
                    tag, id, verified, ..
                } => Some((tag, id, verified.index())),
                ListedRelease::Rejected { .. } => None,
            })
            .collect();
        if verified.is_empty() {
            return Err(PruneError::NothingVerified);
        }
        verified.sort_by(|a, b| b.1.version.cmp(&a.1.version));
        let (mut kept, mut pruned) = (Vec::new(), Vec::new());
        for (i, release) in verified.into_iter().enumerate() {
            let runs = running.is_some_and(|r| r.index_sha256 == release.1.index_sha256);
            if i < keep || runs {
                kept.push(release);
            } else {
                pruned.push(release);
            }
        }
        let still_named: BTreeSet<(String, Digest)> = kept
            .iter()
            .flat_map(|(_, _, index)| mirrored_names(index, target))
            .map(|n| (n.repository, n.digest))
            .collect();
        let mut seen = BTreeSet::new();
        let manifests = pruned
            .iter()
            .flat_map(|(_, _, index)| mirrored_names(index, target))
            .filter(|n| !still_named.contains(&(n.repository.clone(), n.digest)))
            .filter(|n| seen.insert((n.repository.clone(), n.digest)))
            .collect();
        Ok(PrunePlan {
            kept: kept.iter().map(|(_, id, _)| (*id).clone()).collect(),
            pruned: pruned
                .iter()
                .map(|(tag, id, _)| ((*tag).clone(), (*id).clone()))
                .collect(),
            manifests,
        })
    }

    /// Deletes what the plan names: the manifests first, the release artifacts last, so an
    /// interrupted prune leaves every release that is still listed whole, and re-running it
    /// finishes the job. Returns how many manifests were deleted (already gone: not counted).
    pub async fn apply(
        &self,
        client: &RegistryClient,
        releases_repo: &str,
    ) -> Result<usize, PruneError> {
        let mut deleted = 0;
        for name in &self.manifests {
            let gone = client
                .delete_manifest(&name.repository, &name.digest.to_string())
                .await
                .map_err(|cause| PruneError::Delete {
                    what: format!("{}@{}", name.repository, name.digest),
                    cause,
                })?;
            deleted += usize::from(gone);
        }
        for (tag, _) in &self.pruned {
            let what = || format!("release artifact {releases_repo}:{tag}");
            let digest = client
                .manifest_digest(releases_repo, tag, &[airgap::oci::OCI_MANIFEST])
                .await
                .map_err(|cause| PruneError::Delete {
                    what: what(),
                    cause,
                })?;
            if let Some(digest) = digest {
                client
                    .delete_manifest(releases_repo, &digest.to_string())
                    .await
                    .map_err(|cause| PruneError::Delete {
                        what: what(),
                        cause,
                    })?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
