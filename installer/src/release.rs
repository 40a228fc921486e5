//! Releases and the cluster's trust in one.
//!
//! A [`Release`] is a bundle whose signature verified: the only thing phases accept, so no
//! phase can act on an index that `bundle inspect` merely read. The cluster records its
//! **trusted release** (name, semver version, sha256 of the signed `bundle.json`) in etcd,
//! written create-only by the first install; the node's journal keeps a copy. What may move
//! it follows TUF's rule: trusted metadata is never replaced with a lower version, and only
//! an upgrade replaces it at all ([`decide`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use airgap::{BundleArchive, Digest, PublicKey, VerifiedIndex};
use registry::release_artifact::PublishedRelease;
use registry::seed::ReleaseSource;
use serde::{Deserialize, Serialize};

use crate::etcd::client::{Create, EtcdClient, EtcdError};

/// Where the trusted release lives in etcd: cluster-scoped, beside the Kubernetes keys.
pub const TRUSTED_RELEASE_KEY: &str = "/airgap/cluster/trusted-release";

/// What names a release: the product, its version, and the exact signed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseId {
    pub name: String,
    pub version: semver::Version,
    /// sha256 of the signed `bundle.json`.
    pub index_sha256: Digest,
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

impl ReleaseId {
    pub fn of(verified: &VerifiedIndex) -> Self {
        let index = verified.index();
        ReleaseId {
            name: index.name.clone(),
            version: index.version.clone(),
            index_sha256: verified.index_digest(),
        }
    }
}

/// A release whose signature verified: a bundle opened for random access, or the release
/// artifact in a registry (`upgrade --from-registry`). Every blob is checked against the
/// signed index as it is read. Made only from a [`BundleArchive`] or a
/// [`PublishedRelease`], which only a signature check makes.
#[derive(Debug, Clone)]
pub struct Release {
    source: ReleaseSource,
    key: PublicKey,
    id: ReleaseId,
}

impl Release {
    /// `key` is the one the archive's signature was checked against.
    pub fn new(archive: BundleArchive, key: PublicKey) -> Self {
        Release::from_source(ReleaseSource::Archive(Arc::new(archive)), key)
    }

    /// `key` is the one the release's signature was checked against.
    pub fn published(release: PublishedRelease, key: PublicKey) -> Self {
        Release::from_source(ReleaseSource::Registry(Arc::new(release)), key)
    }

    fn from_source(source: ReleaseSource, key: PublicKey) -> Self {
        let id = ReleaseId::of(source.verified());
        Release { source, key, id }
    }

    /// Loads `public_key` and opens `bundle` with it: the signature checked, nothing else
    /// read yet.
    pub fn open(bundle: &Path, public_key: &Path) -> Result<Self, ReleaseError> {
        let key = PublicKey::load(public_key).map_err(|source| ReleaseError::PublicKey {
            path: public_key.to_path_buf(),
            source,
        })?;
        let archive = BundleArchive::open(bundle, &key).map_err(|source| ReleaseError::Verify {
            bundle: bundle.to_path_buf(),
            source,
        })?;
        Ok(Release::new(archive, key))
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    pub fn id(&self) -> &ReleaseId {
        &self.id
    }

    pub fn verified(&self) -> &VerifiedIndex {
        self.source.verified()
    }

    /// Where the release's content is read from.
    pub fn source(&self) -> &ReleaseSource {
        &self.source
    }

    /// The bundle, when the release comes from one.
    pub fn archive(&self) -> Option<&Arc<BundleArchive>> {
        self.source.archive()
    }
}

/// Where a release was read from: what the journal records and what a join command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOrigin {
    /// A bundle file on this node.
    Bundle(std::path::PathBuf),
    /// A release artifact in a registry (`upgrade --from-registry`), by the URL given.
    Registry(String),
}

impl std::fmt::Display for ReleaseOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReleaseOrigin::Bundle(path) => path.display().fmt(f),
            ReleaseOrigin::Registry(url) => f.write_str(url),
        }
    }
}

/// Why a release could not be opened or is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{} failed verification", bundle.display())]
    Verify {
        bundle: std::path::PathBuf,
        #[source]
        source: airgap::VerifyError,
    },
    #[error("public key {}", path.display())]
    PublicKey {
        path: std::path::PathBuf,
        #[source]
        source: airgap::signing::KeyError,
    },
    #[error("release {release} expired at {expires} (its signer set that expiry); refusing it")]
    Expired {
        release: Box<ReleaseId>,
        expires: String,
    },
}

/// When `verified` expired, if its signed expiry is at or before `now`.
pub fn expired(verified: &VerifiedIndex, now: std::time::SystemTime) -> Option<String> {
    let index = verified.index();
    // An unparsable expiry never gets this far: the index check refuses it.
    match index.expires_at() {
        Ok(Some(at)) if at <= now => index.expires.clone(),
        _ => None,
    }
}

/// Refuses a release past its signed expiry at `now` (the [`Host`](crate::host::Host)'s clock).
pub fn check_fresh(release: &Release, now: std::time::SystemTime) -> Result<(), ReleaseError> {
    match expired(release.verified(), now) {
        Some(expires) => Err(ReleaseError::Expired {
            release: Box::new(release.id().clone()),
            expires,
        }),
        None => Ok(()),
    }
}

/// What installing `offered` over `installed` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The same release: a re-run, which resumes or changes nothing.
    Same,
    /// A newer release: an upgrade's job.
    Newer,
    /// A lower version, or another product: never.
    Older,
    /// Same name and version, other content: a re-signed or forged release; never silently.
    Conflicting,
}

pub fn decide(installed: &ReleaseId, offered: &ReleaseId) -> Decision {
    if installed == offered {
        return Decision::Same;
    }
    match offered.version.cmp(&installed.version) {
        std::cmp::Ordering::Less => Decision::Older,
        std::cmp::Ordering::Greater if offered.name == installed.name => Decision::Newer,
        std::cmp::Ordering::Greater => Decision::Conflicting,
        std::cmp::Ordering::Equal => Decision::Conflicting,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the cluster trusts release {trusted}; this bundle is {offered}")]
    Mismatch {
        trusted: Box<ReleaseId>,
        offered: Box<ReleaseId>,
    },
    #[error("the trusted release record in etcd ({TRUSTED_RELEASE_KEY}) is not valid")]
    Corrupt(#[source] serde_json::Error),
    #[error("reading the trusted release")]
    Etcd(#[from] EtcdError),
    #[error("the cluster has no trusted release record ({TRUSTED_RELEASE_KEY}): it was never installed to the end")]
    Missing,
    #[error("another writer kept changing the trusted release; nothing was changed")]
    Raced,
}

/// Whether the record was written now or found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trusted {
    Recorded,
    Already,
}

/// The trusted release in etcd, if the cluster has one.
pub async fn trusted(etcd: &EtcdClient) -> Result<Option<ReleaseId>, TrustError> {
    match etcd.get(TRUSTED_RELEASE_KEY).await? {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(TrustError::Corrupt),
    }
}

/// Records `release` as the cluster's trusted release unless one is recorded (create-only);
/// a different one already there is refused: only an upgrade moves it.
pub async fn ensure_trusted(etcd: &EtcdClient, release: &ReleaseId) -> Result<Trusted, TrustError> {
    let record = serde_json::to_vec(release).map_err(TrustError::Corrupt)?;
    let existing = match etcd.create(TRUSTED_RELEASE_KEY, &record).await? {
        Create::Created => return Ok(Trusted::Recorded),
        Create::Exists => trusted(etcd).await?,
    };
    match existing {
        Some(t) if &t == release => Ok(Trusted::Already),
        Some(t) => Err(TrustError::Mismatch {
            trusted: Box::new(t),
            offered: Box::new(release.clone()),
        }),
        // Deleted between the two calls: nothing to compare with; a re-run records it.
        None => Ok(Trusted::Already),
    }
}

/// What [`advance_trusted`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// The record moved from the installed release to the offered one.
    Moved,
    /// It already named the offered release (a resumed upgrade).
    Already,
}

/// Moves the cluster's trusted release from `from` to `to` with a compare-and-swap, so two
/// upgrades racing cannot both win and nothing ever moves it backwards: `to` must be newer
/// than whatever the record holds.
pub async fn advance_trusted(
    etcd: &EtcdClient,
    from: &ReleaseId,
    to: &ReleaseId,
) -> Result<Advanced, TrustError> {
    let record = serde_json::to_vec(to).map_err(TrustError::Corrupt)?;
    // Two rounds: a concurrent writer between the read and the swap is seen on the second.
    for _ in 0..2 {
        let Some(kv) = etcd.get(TRUSTED_RELEASE_KEY).await? else {
            return Err(TrustError::Missing);
        };
        let current: ReleaseId = serde_json::from_slice(&kv.value).map_err(TrustError::Corrupt)?;
        if &current == to {
            return Ok(Advanced::Already);
        }
        if &current != from || to.version <= current.version {
            return Err(TrustError::Mismatch {
                trusted: Box::new(current),
                offered: Box::new(to.clone()),
            });
        }
        if etcd
            .compare_and_swap(TRUSTED_RELEASE_KEY, kv.mod_revision, &record)
            .await?
        {
            return Ok(Advanced::Moved);
        }
    }
    Err(TrustError::Raced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, version: &str, sha: u8) -> ReleaseId {
        ReleaseId {
            name: name.into(),
            version: version.parse().unwrap(),
            index_sha256: Digest::of(&[sha]),
        }
    }

    #[test]
    fn versions_are_compared_as_semver_never_as_text() {
        let installed = id("mgmt", "1.9.0", 1);
        assert_eq!(decide(&installed, &installed.clone()), Decision::Same);
        // As text "1.10.0" < "1.9.0"; as semver it is newer.
        assert_eq!(
            decide(&installed, &id("mgmt", "1.10.0", 2)),
            Decision::Newer
        );
        assert_eq!(
            decide(&installed, &id("mgmt", "1.9.0-rc.1", 2)),
            Decision::Older
        );
        assert_eq!(decide(&installed, &id("mgmt", "1.8.9", 2)), Decision::Older);
        assert_eq!(
            decide(&installed, &id("mgmt", "1.9.0", 2)),
            Decision::Conflicting
        );
        assert_eq!(
            decide(&installed, &id("other", "2.0.0", 2)),
            Decision::Conflicting
        );
    }
}
