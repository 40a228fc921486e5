//! Upstream signatures a `bundle.yaml` policy requires: each image pulled under a policy must
//! carry a cosign signature (the `sha256-<digest>.sig` tag, or a referrer) by one of the
//! policy's keys. The signature manifest is verified before planning and then travels as more
//! images of the bundle (under its tag, and as a referrer of the image), so seeding, syncing
//! and upgrading publish it beside the image unchanged; the keys go into the signed index for
//! `registry verify` on the air-gapped side. The image's attestations (`sha256-<digest>.att`)
//! come along the same way when each is signed by a policy key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airgap::index::{AttestationRecord, SignatureKeyRecord, SignatureRecord};
use airgap::oci::Descriptor;
use airgap::{Digest, ImageReference};
use registry::cosign::{self, KeyError, SignatureError, VerificationKey};

use crate::registry_source::RemoteImage;
use crate::spec::SignaturePolicy;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("signature key {path}")]
    Key {
        path: String,
        #[source]
        cause: KeyFileError,
    },
    #[error("image {image} (signature policy: {policy})")]
    Unverified {
        image: String,
        policy: String,
        #[source]
        cause: Box<SignatureError>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The keys every policy of a spec names, each file read once.
#[derive(Default)]
pub struct PolicyKeys {
    by_path: BTreeMap<PathBuf, VerificationKey>,
}

impl PolicyKeys {
    /// Reads the keys of `policies`, relative to the spec's directory `base`.
    pub fn load<'a>(
        policies: impl IntoIterator<Item = &'a SignaturePolicy>,
        base: &Path,
    ) -> Result<Self, PolicyError> {
        let mut keys = PolicyKeys::default();
        for path in policies.into_iter().flat_map(|p| &p.keys) {
            if keys.by_path.contains_key(path) {
                continue;
            }
            let fail = |cause| PolicyError::Key {
                path: path.display().to_string(),
                cause,
            };
            let text = std::fs::read_to_string(base.join(path))
                .map_err(|e| fail(KeyFileError::Read(e)))?;
            let key = VerificationKey::from_pem(&text).map_err(|e| fail(e.into()))?;
            keys.by_path.insert(path.clone(), key);
        }
        Ok(keys)
    }

    fn of(&self, policy: &SignaturePolicy) -> Vec<VerificationKey> {
        policy
            .keys
            .iter()
            .filter_map(|p| self.by_path.get(p).cloned())
            .collect()
    }

    /// What the index records: every key, once, by id.
    pub fn records(&self) -> Vec<SignatureKeyRecord> {
        let by_id: BTreeMap<Digest, &VerificationKey> =
            self.by_path.values().map(|k| (k.id(), k)).collect();
        by_id
            .into_values()
            .map(|k| SignatureKeyRecord {
                id: k.id(),
                pem: k.pem().to_string(),
            })
            .collect()
    }
}

/// An image whose signature verified: the images to add to the bundle (the signature under
/// its tag, and the same signature as an OCI 1.1 referrer of the image, by digest), and what
/// the image's record says of it.
pub struct SignedImage {
    pub image: ImageReference,
    pub signature: (ImageReference, RemoteImage),
    pub referrer: (ImageReference, RemoteImage),
    pub record: SignatureRecord,
    /// Its attestations (`sha256-<digest>.att`), when it has them and each is signed by a
    /// policy key.
    pub attestations: Option<(ImageReference, RemoteImage, AttestationRecord)>,
}

/// Verifies `pulled`'s signature against `policy` and returns it as an image of its own.
pub async fn verify(
    reference: &ImageReference,
    pulled: &RemoteImage,
    policy: &SignaturePolicy,
    keys: &PolicyKeys,
) -> Result<SignedImage, PolicyError> {
    let policy_keys = keys.of(policy);
    let verified = cosign::verify(
        &pulled.client,
        &pulled.repository,
        reference,
        &pulled.top.digest,
        &policy_keys,
    )
    .await
    .map_err(|cause| PolicyError::Unverified {
        image: reference.to_string(),
        policy: describe(policy),
        cause: Box::new(cause),
    })?;
    // The signature travels both ways, whichever way the publisher put it: under its tag
    // (as served, or a referrer's manifest without `subject`) and as a referrer of the image.
    let derive = |derived: Result<Vec<u8>, serde_json::Error>| {
        derived.map_err(|source| PolicyError::Unverified {
            image: reference.to_string(),
            policy: describe(policy),
            cause: Box::new(SignatureError::Manifest {
                digest: verified.manifest.digest,
                source,
            }),
        })
    };
    let (tagged_bytes, referrer_bytes) = match verified.published {
        cosign::Published::Tag => {
            let referrer = derive(cosign::as_referrer(&verified.bytes, &pulled.top))?;
            (verified.bytes, referrer)
        }
        cosign::Published::Referrer => {
            (derive(cosign::as_tagged(&verified.bytes))?, verified.bytes)
        }
    };
    let signature_reference = ImageReference {
        tag: Some(cosign::signature_tag(&pulled.top.digest)),
        digest: None,
        ..reference.clone()
    };
    let referrer_reference = ImageReference {
        tag: None,
        digest: Some(Digest::of(&referrer_bytes)),
        ..reference.clone()
    };
    let record = SignatureRecord {
        reference: signature_reference.to_string(),
        digest: Digest::of(&tagged_bytes),
        keys: policy_keys.iter().map(VerificationKey::id).collect(),
    };
    // Both are served from the upstream's repository: they share its config and payloads.
    let carried = |shown: &ImageReference, bytes: Vec<u8>, artifact_type: Option<&str>| {
        let top = Descriptor {
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
            artifact_type: artifact_type.map(Into::into),
            ..verified.manifest.clone()
        };
        RemoteImage {
            client: pulled.client.clone(),
            repository: pulled.repository.clone(),
            shown: shown.to_string(),
            manifests: [(top.digest, bytes)].into_iter().collect(),
            top,
        }
    };
    let referrer = carried(
        &referrer_reference,
        referrer_bytes,
        Some(cosign::SIGNATURE_ARTIFACT_TYPE),
    );
    let signature = carried(&signature_reference, tagged_bytes, None);
    let attestations = match cosign::verify_attestations(
        &pulled.client,
        &pulled.repository,
        &pulled.top.digest,
        &policy_keys,
    )
    .await
    {
        Ok(Some(found)) => {
            let at = ImageReference {
                tag: Some(cosign::attestation_tag(&pulled.top.digest)),
                digest: None,
                ..reference.clone()
            };
            let record = AttestationRecord {
                reference: at.to_string(),
                digest: found.manifest.digest,
                predicate_types: found.predicate_types,
            };
            let image = carried(&at, found.bytes, None);
            Some((at, image, record))
        }
        Ok(None) => None,
        // Signed by someone the policy does not name, or not about this image: it would
        // travel unverified, so it stays behind; the image itself verified.
        Err(problem) => {
            tracing::warn!(
                image = %reference,
                "attestations left out: {}",
                airgap::error_chain::chain(&problem)
            );
            None
        }
    };
    Ok(SignedImage {
        image: reference.clone(),
        signature: (signature_reference, signature),
        referrer: (referrer_reference, referrer),
        record,
        attestations,
    })
}

/// `keys a.pub, b.pub`: the policy as the spec wrote it.
fn describe(policy: &SignaturePolicy) -> String {
    let files: Vec<String> = policy
        .keys
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!("keys {}", files.join(", "))
}
