//! Attestations as cosign stores them (`sha256-<digest>.att`): DSSE envelopes of in-toto
//! statements (an SBOM, provenance), each signed over DSSE's pre-authentication encoding.

use airgap::oci::{Descriptor, ImageManifest, OCI_MANIFEST};
use airgap::Digest;
use base64::Engine;
use serde::Deserialize;

use super::key::VerificationKey;
use super::MAX_LAYERS;
use crate::client::{RegistryClient, RegistryError};

/// Media type of an attestation layer: a DSSE envelope holding an in-toto statement.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// An attestation's predicate (an SBOM, provenance) may be large, but it is read whole.
const MAX_ATTESTATION: u64 = 16 << 20;

/// The tag cosign keeps `image`'s attestations under.
pub fn attestation_tag(image: &Digest) -> String {
    format!("sha256-{}.att", image.hex())
}

/// An image's attestations (`sha256-<digest>.att`), every one signed by a policy key.
#[derive(Debug, Clone)]
pub struct VerifiedAttestations {
    pub manifest: Descriptor,
    pub bytes: Vec<u8>,
    /// Each attestation's `predicateType` (`https://cyclonedx.org/bom`, SLSA provenance, ...).
    pub predicate_types: Vec<String>,
}

/// Why an attestation was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AttestationProblem {
    #[error("reading it")]
    Registry(#[source] RegistryError),
    #[error("{0} is not an OCI image manifest")]
    Manifest(Digest, #[source] serde_json::Error),
    #[error("layer {0} is not a DSSE envelope of an in-toto statement")]
    Envelope(Digest, #[source] serde_json::Error),
    #[error("layer {digest} is {problem}")]
    Layer {
        digest: Digest,
        problem: &'static str,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "predicateType")]
    predicate_type: String,
    subject: Vec<StatementSubject>,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE's pre-authentication encoding: what an envelope's signatures sign.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Checks one attestation layer: a DSSE envelope of an in-toto statement about `image`,
/// signed by one of `keys`. Returns its predicate type.
fn check_attestation(
    digest: Digest,
    envelope: &[u8],
    image: &Digest,
    keys: &[VerificationKey],
) -> Result<String, AttestationProblem> {
    let layer = |problem| AttestationProblem::Layer { digest, problem };
    let envelope: Envelope =
        serde_json::from_slice(envelope).map_err(|e| AttestationProblem::Envelope(digest, e))?;
    if envelope.payload_type != IN_TOTO {
        return Err(layer("not an in-toto statement"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(envelope.payload.trim())
        .map_err(|_| layer("a payload that is not base64"))?;
    let signed = pae(&envelope.payload_type, &payload);
    let verified = envelope.signatures.iter().any(|s| {
        b64.decode(s.sig.trim())
            .is_ok_and(|sig| keys.iter().any(|k| k.verifies(&signed, &sig)))
    });
    if !verified {
        return Err(layer("signed by no key the policy names"));
    }
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| AttestationProblem::Envelope(digest, e))?;
    let about_image = statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256").is_some_and(|h| *h == image.hex()));
    if !about_image {
        return Err(layer("a statement about another image"));
    }
    Ok(statement.predicate_type)
}

/// Reads `repository:sha256-<image hex>.att` and accepts it when every attestation in it is
/// about `image` and signed by one of `keys` (an attestation from anyone else would travel
/// unverified). `None` when the image has no attestations.
pub async fn verify_attestations(
    client: &RegistryClient,
    repository: &str,
    image: &Digest,
    keys: &[VerificationKey],
) -> Result<Option<VerifiedAttestations>, AttestationProblem> {
    let Some(fetched) = client
        .get_manifest(repository, &attestation_tag(image), &[OCI_MANIFEST])
        .await
        .map_err(AttestationProblem::Registry)?
    else {
        return Ok(None);
    };
    let manifest: ImageManifest = serde_json::from_slice(&fetched.bytes)
        .map_err(|e| AttestationProblem::Manifest(fetched.digest, e))?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(AttestationProblem::Layer {
            digest: fetched.digest,
            problem: "a manifest with too many layers",
        });
    }
    let mut predicate_types = Vec::new();
    for layer in &manifest.layers {
        if layer.media_type != DSSE_ENVELOPE {
            return Err(AttestationProblem::Layer {
                digest: layer.digest,
                problem: "not a DSSE envelope",
            });
        }
        if layer.size > MAX_ATTESTATION {
            return Err(AttestationProblem::Layer {
                digest: layer.digest,
                problem: "larger than an attestation may be",
            });
        }
        let envelope = client
            .get_small_blob(repository, &layer.digest, MAX_ATTESTATION)
            .await
            .map_err(AttestationProblem::Registry)?;
        predicate_types.push(check_attestation(layer.digest, &envelope, image, keys)?);
    }
    Ok(Some(VerifiedAttestations {
        manifest: super::manifest_descriptor(&fetched, None),
        bytes: fetched.bytes,
        predicate_types,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

    #[test]
    fn an_attestation_is_accepted_only_signed_by_a_policy_key_and_about_the_image() {
        // DSSE over an in-toto statement, signed the way cosign signs attestations: openssl
        // signed the pre-authentication encoding with the EC key, apart from this code.
        let envelope = ATTESTATION;
        let keys = [key(EC)];
        assert_eq!(
            check_attestation(image(), envelope, &image(), &keys).unwrap(),
            "https://cyclonedx.org/bom"
        );
        let e = check_attestation(image(), envelope, &image(), &[key(ED)]).unwrap_err();
        assert!(e.to_string().contains("signed by no key"), "{e}");
        let e = check_attestation(image(), envelope, &Digest::of(b"y"), &keys).unwrap_err();
        assert!(e.to_string().contains("about another image"), "{e}");
        let mut altered: serde_json::Value = serde_json::from_slice(envelope).unwrap();
        altered["payloadType"] = "text/plain".into();
        let altered = serde_json::to_vec(&altered).unwrap();
        assert!(check_attestation(image(), &altered, &image(), &keys).is_err());
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
    }
}
