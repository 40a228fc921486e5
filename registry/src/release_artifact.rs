//! A release's signed index published in a registry, so the registry itself says which
//! releases it holds and each can be verified there: an OCI artifact (image manifest with an
//! `artifactType` of ours) in `<prefix>/airgap/releases:<version>`, whose config is the
//! release's `bundle.json` (which names every blob of the release by digest) and whose one
//! layer is its signature file. Nothing here is trusted: readers verify the signature with
//! their key before using the index.

use std::sync::Arc;

use airgap::oci::OCI_MANIFEST;
use airgap::{Digest, PublicKey, SignatureFile, VerifiedIndex, VerifyError};

use crate::client::{RegistryClient, RegistryError};
use crate::mirror::MirrorTarget;

pub const ARTIFACT_TYPE: &str = "application/vnd.airgap.release.v1";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.airgap.bundle-index.v1+json";
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.airgap.bundle-signature.v1+json";
/// Under the mirror prefix.
pub const REPOSITORY: &str = "airgap/releases";
/// Bigger than this is not a release manifest's part (the index limit of the format).
const MAX_PART: u64 = 32 << 20;

/// The two signed parts of a release, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseParts {
    pub index: Vec<u8>,
    pub signature: Vec<u8>,
}

impl ReleaseParts {
    /// The index, once its signature verified with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<VerifiedIndex, VerifyError> {
        let signatures = SignatureFile::parse(&self.signature).map_err(VerifyError::from)?;
        VerifiedIndex::verify(&self.index, &signatures, key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Url(#[from] crate::mirror::TargetError),
    #[error("{at} holds no release {version} ({repository}:{version} does not exist); `airgap upgrade --check --from-registry {at}` lists the ones it holds")]
    NotFound {
        at: String,
        repository: String,
        version: String,
    },
    #[error(
        "release {version} in {at}: its signature does not verify with the given key; refusing it"
    )]
    Signature {
        at: String,
        version: String,
        #[source]
        source: VerifyError,
    },
    #[error("release {version} in {at}: its signed index names version {named}")]
    TagMismatch {
        at: String,
        version: String,
        named: String,
    },
}

/// A release in a registry whose signed index verified: what the seeder copies from when the
/// source is a registry, and what an upgrade reads a release from without a bundle.
#[derive(Debug)]
pub struct PublishedRelease {
    pub client: Arc<RegistryClient>,
    /// The registry and prefix the release was seeded under.
    pub at: MirrorTarget,
    pub parts: ReleaseParts,
    verified: VerifiedIndex,
}

impl PublishedRelease {
    /// Fetches release `version` from `at` and verifies it with `key`; nothing of it is
    /// trusted before that.
    pub async fn open(
        client: Arc<RegistryClient>,
        at: MirrorTarget,
        version: &str,
        key: &PublicKey,
    ) -> Result<Self, ReleaseError> {
        let repository = at.repository(REPOSITORY);
        let Some(parts) = fetch(&client, &repository, version).await? else {
            return Err(ReleaseError::NotFound {
                at: at.to_string(),
                repository,
                version: version.to_string(),
            });
        };
        let verified = parts
            .verify(key)
            .map_err(|source| ReleaseError::Signature {
                at: at.to_string(),
                version: version.to_string(),
                source,
            })?;
        let named = verified.index().version.to_string();
        if named != version {
            return Err(ReleaseError::TagMismatch {
                at: at.to_string(),
                version: version.to_string(),
                named,
            });
        }
        Ok(PublishedRelease {
            client,
            at,
            parts,
            verified,
        })
    }

    pub fn verified(&self) -> &VerifiedIndex {
        &self.verified
    }
}

/// The artifact manifest for `parts`, tagged `version` by the caller.
pub fn manifest(parts: &ReleaseParts, name: &str, version: &str) -> Vec<u8> {
    let descriptor = |media: &str, bytes: &[u8]| {
        serde_json::json!({
            "mediaType": media,
            "digest": Digest::of(bytes).to_string(),
            "size": bytes.len(),
        })
    };
    let value = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(INDEX_MEDIA_TYPE, &parts.index),
        "layers": [descriptor(SIGNATURE_MEDIA_TYPE, &parts.signature)],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Every blob of the artifact [`publish`] makes of `parts`: the index, the signature and the
/// manifest. What a node that already holds the release's parts (its bundle) can place in its
/// registry store itself.
pub fn blobs(parts: &ReleaseParts, name: &str, version: &str) -> [Vec<u8>; 3] {
    [
        parts.index.clone(),
        parts.signature.clone(),
        manifest(parts, name, version),
    ]
}

async fn put_blob(client: &RegistryClient, repo: &str, bytes: &[u8]) -> Result<(), RegistryError> {
    let digest = Digest::of(bytes);
    if client.blob_exists(repo, &digest).await? {
        return Ok(());
    }
    let session = client.start_upload(repo).await?;
    let session = client
        .upload_chunk(repo, session, reqwest::Body::from(bytes.to_vec()))
        .await?;
    client.commit_upload(repo, session, &digest).await
}

/// Publishes `parts` as `repo:version`; returns whether it was already there.
pub async fn publish(
    client: &RegistryClient,
    repo: &str,
    parts: &ReleaseParts,
    name: &str,
    version: &str,
) -> Result<bool, RegistryError> {
    let manifest = manifest(parts, name, version);
    if client
        .manifest_digest(repo, version, &[OCI_MANIFEST])
        .await?
        == Some(Digest::of(&manifest))
    {
        return Ok(true);
    }
    put_blob(client, repo, &parts.index).await?;
    put_blob(client, repo, &parts.signature).await?;
    client
        .put_manifest(repo, version, OCI_MANIFEST, &manifest)
        .await?;
    Ok(false)
}

/// Media type of the empty config an attached artifact carries (OCI 1.1).
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Something attached to a release: its `artifactType` and one layer.
pub struct Attachment<'a> {
    pub artifact_type: &'a str,
    pub media_type: &'a str,
    pub content: &'a [u8],
}

/// Attaches `attachment` to release `version` as an OCI 1.1 referrer of its artifact
/// manifest: how an SBOM of the release travels with it, found by
/// `GET /v2/<repo>/referrers/<release digest>`. Pushed by digest; returns it.
pub async fn attach(
    client: &RegistryClient,
    repo: &str,
    parts: &ReleaseParts,
    name: &str,
    version: &str,
    attachment: &Attachment<'_>,
) -> Result<Digest, RegistryError> {
    let Attachment {
        artifact_type,
        media_type,
        content,
    } = *attachment;
    let release = manifest(parts, name, version);
    let config = b"{}";
    put_blob(client, repo, config).await?;
    put_blob(client, repo, content).await?;
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": Digest::of(config), "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": Digest::of(content), "size": content.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": Digest::of(&release), "size": release.len()},
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    }))
    .unwrap_or_default();
    let digest = Digest::of(&referrer);
    client
        .put_manifest(repo, &digest.to_string(), OCI_MANIFEST, &referrer)
        .await?;
    Ok(digest)
}

/// The tags of the releases repository (empty when it does not exist).
pub async fn list(client: &RegistryClient, repo: &str) -> Result<Vec<String>, RegistryError> {
    Ok(client.list_tags(repo).await?.unwrap_or_default())
}

pub use crate::client::ArtifactProblem;

async fn get_part(
    client: &RegistryClient,
    repo: &str,
    descriptor: &serde_json::Value,
    media: &str,
) -> Result<Vec<u8>, RegistryError> {
    let bad = |problem| RegistryError::ReleaseArtifact {
        repo: repo.to_string(),
        problem,
    };
    if descriptor["mediaType"] != media {
        return Err(bad(ArtifactProblem::PartType {
            media: media.to_string(),
        }));
    }
    let digest: Digest = descriptor["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad(ArtifactProblem::NoDigest))?;
    match client.get_small_blob(repo, &digest, MAX_PART).await {
        Err(RegistryError::BlobTooLarge { .. }) => Err(bad(ArtifactProblem::PartTooLarge)),
        Err(RegistryError::BlobDigest(_)) => Err(bad(ArtifactProblem::PartDigest { digest })),
        other => other,
    }
}

/// Reads release `tag`: its manifest, index and signature, each checked against its digest
/// (not yet against a key: that is the caller's, with [`airgap::VerifiedIndex::verify`]).
pub async fn fetch(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
) -> Result<Option<ReleaseParts>, RegistryError> {
    let Some(fetched) = client.get_manifest(repo, tag, &[OCI_MANIFEST]).await? else {
        return Ok(None);
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&fetched.bytes).map_err(|source| RegistryError::Json {
            url: format!("{repo}:{tag}"),
            what: "release manifest",
            source,
        })?;
    if manifest["artifactType"] != ARTIFACT_TYPE {
        return Err(RegistryError::ReleaseArtifact {
            repo: repo.to_string(),
            problem: ArtifactProblem::NotAnArtifact {
                tag: tag.to_string(),
            },
        });
    }
    let index = get_part(client, repo, &manifest["config"], INDEX_MEDIA_TYPE).await?;
    let signature = get_part(client, repo, &manifest["layers"][0], SIGNATURE_MEDIA_TYPE).await?;
    Ok(Some(ReleaseParts { index, signature }))
}
