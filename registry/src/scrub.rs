//! Drift between a registry and the signed releases seeded into it: tags that point at
//! something the signed index does not name, blobs that are missing or no longer hash to their
//! digest, and tags under a release's repositories that no signed release put there.
//!
//! [`check_tags`] is the cheap part (one `HEAD` per tag): the seeder runs it after every push
//! and `airgap status` on installed nodes. [`scrub`] is the whole walk, `airgap registry
//! verify` (zot's scrub): it re-reads and re-hashes every blob.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use airgap::{BundleIndex, Digest};
use futures_util::StreamExt;
use serde::Serialize;

use crate::client::{RegistryClient, RegistryError};
use crate::mirror::mirrored_names;
use crate::release_artifact::PublishedRelease;
use crate::seed::{ReleaseSource, SeedError, SeedPlan};

pub use crate::tag_check::{check_signed_tags, check_tags, signed_tags, SignedTag, TagDrift};

/// A blob a release needs that the registry does not serve as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobProblem {
    pub repository: String,
    pub digest: Digest,
    /// `missing`, or `corrupt` (what was served hashes to `found`), or `unreadable`.
    pub problem: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl fmt::Display for BlobProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blob {} in {} is {}",
            self.digest, self.repository, self.problem
        )?;
        if let Some(found) = &self.found {
            write!(f, " (its bytes hash to {found})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// A tag under a release's repositories that no signed release in the registry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraTag {
    pub repository: String,
    pub tag: String,
}

impl fmt::Display for ExtraTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tag {}:{} is not in any signed release of this registry",
            self.repository, self.tag
        )
    }
}

/// An image whose carried upstream signature no longer verifies in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureProblem {
    pub image: String,
    /// `signature` or `attestations`.
    pub what: &'static str,
    pub detail: String,
}

impl fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.what == "signature" {
            "does"
        } else {
            "do"
        };
        write!(
            f,
            "image {}: its upstream {} {verb} not verify: {}",
            self.image, self.what, self.detail
        )
    }
}

/// What a scrub of one release found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubReport {
    pub release: String,
    pub tags_checked: usize,
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub drifted_tags: Vec<TagDrift>,
    pub blob_problems: Vec<BlobProblem>,
    pub extra_tags: Vec<ExtraTag>,
    /// Images whose upstream signature was verified again, with the keys the index carries.
    pub signatures_checked: usize,
    pub unverified_signatures: Vec<SignatureProblem>,
}

impl ScrubReport {
    pub fn clean(&self) -> bool {
        self.drifted_tags.is_empty()
            && self.blob_problems.is_empty()
            && self.extra_tags.is_empty()
            && self.unverified_signatures.is_empty()
    }

    /// One line per finding.
    pub fn findings(&self) -> Vec<String> {
        let tags = self.drifted_tags.iter().map(ToString::to_string);
        let blobs = self.blob_problems.iter().map(ToString::to_string);
        let extra = self.extra_tags.iter().map(ToString::to_string);
        let signatures = self.unverified_signatures.iter().map(ToString::to_string);
        tags.chain(blobs).chain(extra).chain(signatures).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("reading the release's manifests")]
    Plan(#[source] SeedError),
}

/// Walks `release` in its registry: its tags against the signed digests, every blob it needs
/// in every repository that needs it (re-read and re-hashed), and every tag of its
/// repositories against the tags of `signed` (every signed release in the registry, this one
/// included).
pub async fn scrub(
    release: Arc<PublishedRelease>,
    signed: &[&BundleIndex],
    jobs: usize,
) -> Result<ScrubReport, ScrubError> {
    let client = release.client.clone();
    let at = release.at.clone();
    let index = release.verified().index().clone();
    let drifted_tags = check_tags(&client, &index, &at, jobs).await?;
    let names = mirrored_names(&index, &at);
    let plan = SeedPlan::new(&ReleaseSource::Registry(release.clone()), &at)
        .await
        .map_err(ScrubError::Plan)?;
    let checks = plan.blobs.iter().flat_map(|blob| {
        blob.repositories
            .iter()
            .map(move |repo| (repo.clone(), blob.digest, blob.size))
    });
    let client_ref = &client;
    let mut blob_problems: Vec<BlobProblem> = futures_util::stream::iter(checks)
        .map(|(repo, digest, size)| async move { rehash(client_ref, &repo, &digest, size).await })
        .buffer_unordered(jobs.max(1))
        .filter_map(|p| async move { p })
        .collect()
        .await;
    blob_problems.sort_by(|a, b| (&a.repository, a.digest).cmp(&(&b.repository, b.digest)));
    let blobs_checked = plan.blobs.iter().map(|b| b.repositories.len()).sum();
    let bytes_checked = plan
        .blobs
        .iter()
        .map(|b| b.size * b.repositories.len() as u64)
        .sum();

    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for other in signed {
        for name in mirrored_names(other, &at) {
            if let Some(tag) = name.tag {
                allowed.entry(name.repository).or_default().insert(tag);
            }
        }
    }
    let repositories: BTreeSet<&String> = names.iter().map(|n| &n.repository).collect();
    let mut extra_tags = Vec::new();
    for repository in repositories {
        let tags = client.list_tags(repository).await?.unwrap_or_default();
        for tag in tags {
            if !allowed.get(repository).is_some_and(|a| a.contains(&tag)) {
                extra_tags.push(ExtraTag {
                    repository: repository.clone(),
                    tag,
                });
            }
        }
    }
    let (signatures_checked, unverified_signatures) = check_signatures(&client, &index, &at).await;
    Ok(ScrubReport {
        release: format!("{} {}", index.name, index.version),
        tags_checked: names.iter().filter(|n| n.tag.is_some()).count(),
        blobs_checked,
        bytes_checked,
        drifted_tags,
        blob_problems,
        extra_tags,
        signatures_checked,
        unverified_signatures,
    })
}

/// Why a carried signature did not verify again.
#[derive(Debug, thiserror::Error)]
enum RecheckError {
    #[error("key {id} in the index")]
    Key {
        id: Digest,
        #[source]
        cause: crate::cosign::KeyError,
    },
    #[error("key {recorded} in the index is another key (its id is {actual})")]
    KeyId { recorded: Digest, actual: Digest },
    #[error("key {0} is not in the index")]
    MissingKey(Digest),
    #[error(transparent)]
    Reference(#[from] airgap::reference::ReferenceError),
    #[error(transparent)]
    Signature(#[from] crate::cosign::SignatureError),
    #[error("the registry's manifest is {found}, the bundle carried {carried}")]
    Replaced { found: Digest, carried: Digest },
    #[error(transparent)]
    Attestation(#[from] crate::cosign::AttestationProblem),
    #[error("the registry has none at {0}")]
    AttestationsGone(String),
}

/// The registry serves the manifest the bundle carried.
fn same_manifest(found: Digest, carried: Digest) -> Result<(), RecheckError> {
    if found == carried {
        Ok(())
    } else {
        Err(RecheckError::Replaced { found, carried })
    }
}

/// A failed recheck of `image`'s `what` as a finding.
fn problem(
    image: &airgap::index::ImageRecord,
    what: &'static str,
    outcome: Result<(), RecheckError>,
) -> Option<SignatureProblem> {
    outcome.err().map(|e| SignatureProblem {
        image: image.reference.clone(),
        what,
        detail: airgap::error_chain::chain(&e),
    })
}

/// Verifies every carried upstream signature again where clients will read it: the
/// signature tag in the image's mirrored repository, against the image's upstream digest and
/// original name, with the keys the signed index carries (nothing from outside).
async fn check_signatures(
    client: &RegistryClient,
    index: &BundleIndex,
    at: &crate::mirror::MirrorTarget,
) -> (usize, Vec<SignatureProblem>) {
    use crate::cosign::{self, VerificationKey};
    let key = |id: &Digest| -> Result<VerificationKey, RecheckError> {
        let record = index
            .signature_keys
            .iter()
            .find(|k| k.id == *id)
            .ok_or(RecheckError::MissingKey(*id))?;
        let key = VerificationKey::from_pem(&record.pem)
            .map_err(|cause| RecheckError::Key { id: *id, cause })?;
        if key.id() != *id {
            return Err(RecheckError::KeyId {
                recorded: *id,
                actual: key.id(),
            });
        }
        Ok(key)
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for image in &index.images {
        let Some(signature) = &image.signature else {
            continue;
        };
        checked += 1;
        let repository = at.repository(&image.mirror_repository);
        // Parsed where each check runs: a key that does not parse is that check's finding.
        let policy = || {
            signature
                .keys
                .iter()
                .map(key)
                .collect::<Result<Vec<_>, _>>()
        };
        let outcome: Result<(), RecheckError> = async {
            let policy = &policy()?;
            let identity = airgap::ImageReference::parse(&image.reference)?;
            let verified = cosign::verify(
                client,
                &repository,
                &identity,
                &image.upstream_digest,
                policy,
            )
            .await?;
            same_manifest(verified.manifest.digest, signature.digest)
        }
        .await;
        problems.extend(problem(image, "signature", outcome));
        let Some(carried) = &image.attestations else {
            continue;
        };
        let outcome: Result<(), RecheckError> = async {
            let policy = &policy()?;
            let found =
                cosign::verify_attestations(client, &repository, &image.upstream_digest, policy)
                    .await?
                    .ok_or_else(|| RecheckError::AttestationsGone(carried.reference.clone()))?;
            same_manifest(found.manifest.digest, carried.digest)
        }
        .await;
        problems.extend(problem(image, "attestations", outcome));
    }
    (checked, problems)
}

/// Streams one blob through the one checked download loop (retries included) into nothing;
/// `None` when it is there and hashes to its digest.
async fn rehash(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Option<BlobProblem> {
    use crate::download::{download, DownloadError};
    let (problem, found, detail) = match download(client, repo, digest, size, &mut Discard).await {
        Ok(()) => return None,
        Err(DownloadError::Registry(RegistryError::BlobUnknown { .. })) => ("missing", None, None),
        Err(DownloadError::Mismatch(m)) => ("corrupt", Some(m.actual), None),
        Err(DownloadError::Registry(e)) => ("unreadable", None, Some(e.to_string())),
        Err(DownloadError::Sink(never)) => match never {},
    };
    Some(BlobProblem {
        repository: repo.to_string(),
        digest: *digest,
        problem,
        found,
        detail,
    })
}

/// A sink that keeps nothing: a scrub only hashes.
struct Discard;

impl crate::download::Sink for Discard {
    type Error = std::convert::Infallible;
    async fn restart(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    async fn write(&mut self, _chunk: &bytes::Bytes) -> Result<(), Self::Error> {
        Ok(())
    }
}
