//! Upstream image signatures as cosign and containers/image (`sigstoreSigned`) store them:
//! an OCI manifest tagged `sha256-<image digest hex>.sig` in the image's repository, each layer
//! a "simple signing" payload that names the image's manifest digest and reference, with the
//! base64 signature of the payload's exact bytes in an annotation.
//!
//! The build fetches and verifies these against a `bundle.yaml` policy before anything goes
//! into the bundle; `registry verify` does the same against the mirror, offline, with the keys
//! the signed index carries. The checks are those a containers/image client with a
//! `sigstoreSigned` policy makes (digest, repository identity, signature by one of the keys),
//! so what passes here passes there.
//!
//! Verification is ring's (ECDSA P-256 with SHA-256, Ed25519, RSA PKCS#1 v1.5 with SHA-256,
//! the algorithms cosign keys use), keys are parsed by RustCrypto's `spki`; both were already
//! in the dependency tree. The `sigstore` crate would bring an OCI client, an HTTP stack and
//! TUF of its own for a format this small.
//!
//! [`key`] parses the policy's public keys, [`signature`] finds and checks signatures (the tag
//! and OCI 1.1 referrers), [`attestation`] checks the DSSE attestations cosign stores beside
//! them.

pub mod attestation;
pub mod key;
pub mod signature;

pub use attestation::{
    attestation_tag, verify_attestations, AttestationProblem, VerifiedAttestations, DSSE_ENVELOPE,
    IN_TOTO,
};
pub use key::{KeyError, VerificationKey};
pub use signature::{
    as_referrer, as_tagged, signature_tag, verify, Published, SignatureError, VerifiedSignature,
    PAYLOAD_TYPE, SIGNATURE_ANNOTATION, SIGNATURE_ARTIFACT_TYPE, SIMPLE_SIGNING,
};

/// Layers read from one signature or attestation manifest.
const MAX_LAYERS: usize = 64;

/// The descriptor of a fetched OCI manifest (signature or attestations).
fn manifest_descriptor(
    fetched: &crate::client::FetchedManifest,
    artifact_type: Option<&str>,
) -> airgap::oci::Descriptor {
    airgap::oci::Descriptor {
        media_type: airgap::oci::OCI_MANIFEST.into(),
        digest: fetched.digest,
        size: fetched.bytes.len() as u64,
        platform: None,
        artifact_type: artifact_type.map(Into::into),
        annotations: Default::default(),
    }
}

/// Test vectors made apart from this code: keys by openssl, signatures by `openssl dgst -sha256
/// -sign` (ECDSA, RSA) and `openssl pkeyutl -sign -rawin` (Ed25519) over PAYLOAD, and an
/// attestation whose DSSE encoding openssl signed with the EC key.
#[cfg(test)]
pub(crate) mod vectors {
    use airgap::{Digest, ImageReference};

    use super::VerificationKey;

    pub const PAYLOAD: &[u8] = include_bytes!("../../testdata/cosign/payload.json");
    pub const ATTESTATION: &[u8] = include_bytes!("../../testdata/cosign/attestation.json");
    pub const EC: &str = include_str!("../../testdata/cosign/ec.pub");
    pub const ED: &str = include_str!("../../testdata/cosign/ed.pub");
    pub const RSA: &str = include_str!("../../testdata/cosign/rsa.pub");
    pub const P384: &str = include_str!("../../testdata/cosign/p384.pub");
    pub const EC_SIG: &str = include_str!("../../testdata/cosign/ec.sig");
    pub const ED_SIG: &str = include_str!("../../testdata/cosign/ed.sig");
    pub const RSA_SIG: &str = include_str!("../../testdata/cosign/rsa.sig");

    pub fn key(pem: &str) -> VerificationKey {
        VerificationKey::from_pem(pem).unwrap()
    }

    /// The repository PAYLOAD names (at another tag).
    pub fn identity() -> ImageReference {
        ImageReference::parse("registry.example/team/app:2.0").unwrap()
    }

    /// The digest PAYLOAD and ATTESTATION are about.
    pub fn image() -> Digest {
        Digest::of(b"x")
    }
}
