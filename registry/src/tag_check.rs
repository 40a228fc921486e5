//! The cheap drift check: each signed tag read back (one `HEAD`) and compared with the digest
//! its signed index names. The seeder runs it after every push, `airgap status` on installed
//! nodes, and [`scrub`](crate::scrub) as the first part of its walk.

use std::fmt;

use airgap::{BundleIndex, Digest};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::client::{RegistryClient, RegistryError};
use crate::mirror::{mirrored_names, MirrorTarget};

/// A signed tag the registry does not hold as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagDrift {
    pub repository: String,
    pub tag: String,
    /// What the signed index names.
    pub expected: Digest,
    /// What the registry answers; `None`: the tag is gone.
    pub found: Option<Digest>,
}

impl fmt::Display for TagDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            Some(found) => write!(
                f,
                "tag {}:{} points at {found}, not the signed {}",
                self.repository, self.tag, self.expected
            ),
            None => write!(
                f,
                "tag {}:{} is missing (signed {})",
                self.repository, self.tag, self.expected
            ),
        }
    }
}

/// A tag as a signed index names it.
#[derive(Debug, Clone)]
pub struct SignedTag {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
}

/// Every tag of `index` under `target`.
pub fn signed_tags(index: &BundleIndex, target: &MirrorTarget) -> Vec<SignedTag> {
    mirrored_names(index, target)
        .into_iter()
        .filter_map(|n| {
            Some(SignedTag {
                tag: n.tag?,
                repository: n.repository,
                digest: n.digest,
                media_type: n.media_type,
            })
        })
        .collect()
}

/// Reads every tag of `index` under `target` back and compares it with the signed digest.
pub async fn check_tags(
    client: &RegistryClient,
    index: &BundleIndex,
    target: &MirrorTarget,
    jobs: usize,
) -> Result<Vec<TagDrift>, RegistryError> {
    check_signed_tags(client, signed_tags(index, target), jobs).await
}

/// Reads each of `tags` back and compares it with its signed digest.
pub async fn check_signed_tags(
    client: &RegistryClient,
    tags: Vec<SignedTag>,
    jobs: usize,
) -> Result<Vec<TagDrift>, RegistryError> {
    let checks = tags.into_iter().map(|t| async move {
        let found = client
            .manifest_digest(&t.repository, &t.tag, &[&t.media_type])
            .await?;
        let drifted = found != Some(t.digest);
        Ok::<_, RegistryError>(drifted.then_some(TagDrift {
            repository: t.repository,
            tag: t.tag,
            expected: t.digest,
            found,
        }))
    });
    let mut drift: Vec<TagDrift> = futures_util::stream::iter(checks)
        .buffer_unordered(jobs.max(1))
        .try_filter_map(|d| async move { Ok(d) })
        .try_collect()
        .await?;
    drift.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    Ok(drift)
}
