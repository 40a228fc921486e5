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

use airgap::oci::{Descriptor, ImageManifest, OCI_MANIFEST};
use airgap::{Digest, ImageReference};
use base64::Engine;
use serde::Deserialize;

use crate::client::{FetchedManifest, RegistryClient, RegistryError};

/// Media type of a signature layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a layer's signature, base64.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `artifactType` of a signature published as an OCI 1.1 referrer (cosign's
/// `--registry-referrers-mode oci-1-1`).
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// `critical.type` of a container image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// A payload is a few hundred bytes; anything near this is not one.
const MAX_PAYLOAD: u64 = 64 << 10;
/// Layers read from one signature manifest.
const MAX_LAYERS: usize = 64;

/// The tag cosign and containers/image keep `image`'s signatures under.
pub fn signature_tag(image: &Digest) -> String {
    format!("sha256-{}.sig", image.hex())
}

/// A public key a policy trusts, parsed from PEM (SubjectPublicKeyInfo).
#[derive(Clone)]
pub struct VerificationKey {
    id: Digest,
    algorithm: KeyAlgorithm,
    /// The key as ring takes it: the SubjectPublicKeyInfo's bit string.
    key: Vec<u8>,
    pem: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAlgorithm {
    EcdsaP256,
    Ed25519,
    Rsa,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (-----BEGIN PUBLIC KEY-----)")]
    Pem(#[source] spki::Error),
    #[error("the key is {0}; signatures are checked with ECDSA P-256, Ed25519 or RSA keys")]
    Unsupported(String),
    #[error("the key's bit string is not byte aligned")]
    BitString,
}

impl VerificationKey {
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        use spki::der::{DecodePem, Encode};
        let info = spki::SubjectPublicKeyInfoOwned::from_pem(text.trim())
            .map_err(|e| KeyError::Pem(e.into()))?;
        let der = info.to_der().map_err(|e| KeyError::Pem(e.into()))?;
        const EC: &str = "1.2.840.10045.2.1";
        const P256: &str = "1.2.840.10045.3.1.7";
        const ED25519: &str = "1.3.101.112";
        const RSA: &str = "1.2.840.113549.1.1.1";
        let oid = info.algorithm.oid.to_string();
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<spki::ObjectIdentifier>().ok())
            .map(|o| o.to_string());
        let algorithm = match (oid.as_str(), curve.as_deref()) {
            (EC, Some(P256)) => KeyAlgorithm::EcdsaP256,
            (EC, Some(other)) => {
                return Err(KeyError::Unsupported(format!("ECDSA on curve {other}")))
            }
            (ED25519, _) => KeyAlgorithm::Ed25519,
            (RSA, _) => KeyAlgorithm::Rsa,
            (other, _) => return Err(KeyError::Unsupported(format!("of algorithm {other}"))),
        };
        let key = info
            .subject_public_key
            .as_bytes()
            .ok_or(KeyError::BitString)?
            .to_vec();
        use spki::der::pem::LineEnding;
        let pem = spki::der::EncodePem::to_pem(&info, LineEnding::LF)
            .map_err(|e| KeyError::Pem(e.into()))?;
        Ok(VerificationKey {
            id: Digest::of(&der),
            algorithm,
            key,
            pem,
        })
    }

    /// sha256 of the DER SubjectPublicKeyInfo: the same key has the same id however its PEM
    /// was wrapped.
    pub fn id(&self) -> Digest {
        self.id
    }

    /// The key in canonical PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{
            UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256,
        };
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::Ed25519 => &ED25519,
            KeyAlgorithm::Rsa => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.key)
            .verify(message, signature)
            .is_ok()
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerificationKey({:?}, {})", self.algorithm, self.id)
    }
}

/// Why an image's signatures were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature: {host} has no {repository}:{tag} and no signature referrer")]
    Missing {
        host: String,
        repository: String,
        tag: String,
    },
    #[error("reading its signatures")]
    Registry(#[source] RegistryError),
    #[error("the signature manifest {digest} is not an OCI image manifest")]
    Manifest {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("the signature manifest {digest} has {layers} layers, more than {MAX_LAYERS}")]
    TooManyLayers { digest: Digest, layers: usize },
    #[error("no signature verifies with the policy's keys ({checked} checked: {reasons})")]
    NoneVerifies { checked: usize, reasons: String },
}

/// A layer's payload that did not pass, and why.
#[derive(Debug, thiserror::Error)]
enum PayloadProblem {
    #[error("payload of {0} bytes is larger than a signature payload")]
    TooLarge(u64),
    #[error("no `{SIGNATURE_ANNOTATION}` annotation")]
    NoSignature,
    #[error("the signature is not base64")]
    Base64,
    #[error("the payload is not a simple signing payload")]
    Json(#[source] serde_json::Error),
    #[error("the payload's type is `{0}`")]
    Type(String),
    #[error("it signs {signed}, not {wanted}")]
    Digest { signed: String, wanted: Digest },
    #[error("it names {signed}, not repository {wanted}")]
    Identity { signed: String, wanted: String },
    #[error("signed by a key the policy does not name")]
    Key,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: SignedImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct SignedImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// An image's signature manifest, with the key that verified it.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    pub manifest: Descriptor,
    /// The manifest's bytes, as verified.
    pub bytes: Vec<u8>,
    pub key: Digest,
    pub published: Published,
}

/// Checks `payload` (a signature layer's bytes) against the image and the keys.
fn check_payload(
    payload: &[u8],
    signature_b64: Option<&String>,
    identity: &ImageReference,
    image: &Digest,
    keys: &[VerificationKey],
) -> Result<Digest, PayloadProblem> {
    let signature = signature_b64.ok_or(PayloadProblem::NoSignature)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| PayloadProblem::Base64)?;
    let key = keys
        .iter()
        .find(|k| k.verifies(payload, &signature))
        .ok_or(PayloadProblem::Key)?;
    // Only what verified is read.
    let parsed: Payload = serde_json::from_slice(payload).map_err(PayloadProblem::Json)?;
    if parsed.critical.kind != PAYLOAD_TYPE {
        return Err(PayloadProblem::Type(parsed.critical.kind));
    }
    if parsed.critical.image.digest != image.to_string() {
        return Err(PayloadProblem::Digest {
            signed: parsed.critical.image.digest,
            wanted: *image,
        });
    }
    let signed = &parsed.critical.identity.docker_reference;
    let same_repository = ImageReference::parse(signed)
        .is_ok_and(|r| r.registry == identity.registry && r.repository == identity.repository);
    if !same_repository {
        return Err(PayloadProblem::Identity {
            signed: signed.clone(),
            wanted: format!("{}/{}", identity.registry, identity.repository),
        });
    }
    Ok(key.id())
}

/// Where the publisher put the signature that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// `sha256-<digest>.sig`, the tag cosign and containers/image use.
    Tag,
    /// An OCI 1.1 referrer of the image (cosign's `--registry-referrers-mode oci-1-1`).
    Referrer,
}

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
        manifest: Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: fetched.digest,
            size: fetched.bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        },
        bytes: fetched.bytes,
        predicate_types,
    }))
}

/// Referrer manifests read for one image, at most.
const MAX_REFERRERS: usize = 16;

/// Finds `image`'s signature in `repository` of `client` and accepts it when one of its
/// layers is a payload for `image` in `identity`'s repository signed by one of `keys`: the
/// `sha256-<image hex>.sig` tag first, then the image's signature referrers. `repository` is
/// where the signature is read (a mirror's path differs from `identity`'s).
pub async fn verify(
    client: &RegistryClient,
    repository: &str,
    identity: &ImageReference,
    image: &Digest,
    keys: &[VerificationKey],
) -> Result<VerifiedSignature, SignatureError> {
    let check = Check {
        client,
        repository,
        identity,
        image,
        keys,
    };
    let mut reasons = Vec::new();
    let tag = signature_tag(image);
    let tagged = client
        .get_manifest(repository, &tag, &[OCI_MANIFEST])
        .await
        .map_err(SignatureError::Registry)?;
    let found_tag = tagged.is_some();
    if let Some(fetched) = tagged {
        if let Some(key) = check.manifest(&fetched, &mut reasons).await? {
            return Ok(VerifiedSignature::new(fetched, key, Published::Tag));
        }
    }
    let referrers = client
        .referrers(repository, image, SIGNATURE_ARTIFACT_TYPE)
        .await
        .map_err(SignatureError::Registry)?;
    for referrer in referrers.iter().take(MAX_REFERRERS) {
        let fetched = client
            .get_manifest(repository, &referrer.digest.to_string(), &[OCI_MANIFEST])
            .await
            .map_err(SignatureError::Registry)?;
        if let Some(fetched) = fetched {
            if let Some(key) = check.manifest(&fetched, &mut reasons).await? {
                return Ok(VerifiedSignature::new(fetched, key, Published::Referrer));
            }
        }
    }
    if !found_tag && referrers.is_empty() {
        return Err(SignatureError::Missing {
            host: client.host().to_string(),
            repository: repository.to_string(),
            tag,
        });
    }
    if reasons.is_empty() {
        reasons.push(format!("no {SIMPLE_SIGNING} layer"));
    }
    Err(SignatureError::NoneVerifies {
        checked: reasons.len(),
        reasons: reasons.join("; "),
    })
}

/// One image's signature check, over any number of signature manifests.
struct Check<'a> {
    client: &'a RegistryClient,
    repository: &'a str,
    identity: &'a ImageReference,
    image: &'a Digest,
    keys: &'a [VerificationKey],
}

impl Check<'_> {
    /// The key that signed one of `fetched`'s payloads; why each other one failed goes to
    /// `reasons`.
    async fn manifest(
        &self,
        fetched: &FetchedManifest,
        reasons: &mut Vec<String>,
    ) -> Result<Option<Digest>, SignatureError> {
        let manifest: ImageManifest =
            serde_json::from_slice(&fetched.bytes).map_err(|source| SignatureError::Manifest {
                digest: fetched.digest,
                source,
            })?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(SignatureError::TooManyLayers {
                digest: fetched.digest,
                layers: manifest.layers.len(),
            });
        }
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING)
        {
            let outcome = if layer.size > MAX_PAYLOAD {
                Err(PayloadProblem::TooLarge(layer.size))
            } else {
                let payload = self
                    .client
                    .get_small_blob(self.repository, &layer.digest, MAX_PAYLOAD)
                    .await
                    .map_err(SignatureError::Registry)?;
                check_payload(
                    &payload,
                    layer.annotations.get(SIGNATURE_ANNOTATION),
                    self.identity,
                    self.image,
                    self.keys,
                )
            };
            match outcome {
                Ok(key) => return Ok(Some(key)),
                Err(problem) => reasons.push(airgap::error_chain::chain(&problem)),
            }
        }
        Ok(None)
    }
}

impl VerifiedSignature {
    fn new(fetched: FetchedManifest, key: Digest, published: Published) -> Self {
        VerifiedSignature {
            manifest: Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: fetched.digest,
                size: fetched.bytes.len() as u64,
                platform: None,
                artifact_type: (published == Published::Referrer)
                    .then(|| SIGNATURE_ARTIFACT_TYPE.to_string()),
                annotations: Default::default(),
            },
            bytes: fetched.bytes,
            key,
            published,
        }
    }
}

/// The signature manifest `signature` as an OCI 1.1 referrer of `image`: the same config and
/// layers (the signatures cover the payloads, not the manifest), with `artifactType` and
/// `subject`, so clients that look signatures up through the referrers API find it too.
pub fn as_referrer(signature: &[u8], image: &Descriptor) -> Result<Vec<u8>, serde_json::Error> {
    let mut manifest: serde_json::Value = serde_json::from_slice(signature)?;
    if let Some(fields) = manifest.as_object_mut() {
        fields.insert("artifactType".into(), SIGNATURE_ARTIFACT_TYPE.into());
        fields.insert(
            "subject".into(),
            serde_json::json!({
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": image.size,
            }),
        );
    }
    serde_json::to_vec(&manifest)
}

/// A referrer-published signature as the tag scheme stores it: the same manifest without
/// `artifactType` and `subject`, for clients that read `sha256-<digest>.sig`.
pub fn as_tagged(referrer: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let mut manifest: serde_json::Value = serde_json::from_slice(referrer)?;
    if let Some(fields) = manifest.as_object_mut() {
        fields.remove("artifactType");
        fields.remove("subject");
    }
    serde_json::to_vec(&manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with openssl, signatures made by `openssl dgst -sha256 -sign` (ECDSA, RSA)
    // and `openssl pkeyutl -sign -rawin` (Ed25519) over PAYLOAD: vectors from another
    // implementation than the one under test.
    const PAYLOAD: &[u8] = include_bytes!("../testdata/cosign/payload.json");
    const EC: &str = include_str!("../testdata/cosign/ec.pub");
    const ED: &str = include_str!("../testdata/cosign/ed.pub");
    const RSA: &str = include_str!("../testdata/cosign/rsa.pub");
    const P384: &str = include_str!("../testdata/cosign/p384.pub");
    const EC_SIG: &str = include_str!("../testdata/cosign/ec.sig");
    const ED_SIG: &str = include_str!("../testdata/cosign/ed.sig");
    const RSA_SIG: &str = include_str!("../testdata/cosign/rsa.sig");

    fn key(pem: &str) -> VerificationKey {
        VerificationKey::from_pem(pem).unwrap()
    }

    fn identity() -> ImageReference {
        ImageReference::parse("registry.example/team/app:2.0").unwrap()
    }

    /// The digest PAYLOAD signs.
    fn image() -> Digest {
        Digest::of(b"x")
    }

    fn check(payload: &[u8], sig: &str, keys: &[VerificationKey]) -> Result<Digest, String> {
        check_payload(payload, Some(&sig.to_string()), &identity(), &image(), keys)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_key_type_verifies_its_own_signature_and_no_other() {
        let (ec, ed, rsa) = (key(EC), key(ED), key(RSA));
        for (sig, signer) in [(EC_SIG, &ec), (ED_SIG, &ed), (RSA_SIG, &rsa)] {
            let all = [ec.clone(), ed.clone(), rsa.clone()];
            assert_eq!(check(PAYLOAD, sig, &all), Ok(signer.id()));
            let others: Vec<_> = all
                .iter()
                .filter(|k| k.id() != signer.id())
                .cloned()
                .collect();
            assert_eq!(
                check(PAYLOAD, sig, &others),
                Err("signed by a key the policy does not name".into())
            );
        }
    }

    #[test]
    fn a_changed_payload_or_signature_is_refused() {
        let keys = [key(EC)];
        let mut altered = PAYLOAD.to_vec();
        altered[10] ^= 1;
        assert!(check(&altered, EC_SIG, &keys).is_err());
        assert_eq!(
            check(PAYLOAD, "not base64!", &keys),
            Err("the signature is not base64".into())
        );
        let none = check_payload(PAYLOAD, None, &identity(), &image(), &keys);
        assert!(matches!(none, Err(PayloadProblem::NoSignature)));
    }

    #[test]
    fn a_valid_signature_for_another_image_or_repository_is_refused() {
        let keys = [key(EC)];
        let sig = Some(EC_SIG.to_string());
        let other = Digest::of(b"y");
        let wrong_digest = check_payload(PAYLOAD, sig.as_ref(), &identity(), &other, &keys);
        assert!(
            matches!(&wrong_digest, Err(PayloadProblem::Digest { wanted, .. }) if *wanted == other),
            "{wrong_digest:?}"
        );
        let elsewhere = ImageReference::parse("registry.example/team/other:1.0").unwrap();
        let wrong_repo = check_payload(PAYLOAD, sig.as_ref(), &elsewhere, &image(), &keys);
        assert!(
            matches!(wrong_repo, Err(PayloadProblem::Identity { .. })),
            "{wrong_repo:?}"
        );
        // The tag differs (2.0 wanted, 1.0 signed): signatures follow the digest, not the tag.
        assert!(check(PAYLOAD, EC_SIG, &keys).is_ok());
    }

    #[test]
    fn keys_parse_to_a_stable_id_and_unsupported_ones_are_named() {
        let a = key(EC);
        let rewrapped = EC.replace('\n', "\r\n");
        assert_eq!(key(&rewrapped).id(), a.id());
        assert_eq!(key(a.pem()).id(), a.id());
        assert_ne!(key(ED).id(), a.id());
        let p384 = VerificationKey::from_pem(P384).unwrap_err().to_string();
        assert!(p384.contains("ECDSA on curve 1.3.132.0.34"), "{p384}");
        assert!(VerificationKey::from_pem("hello").is_err());
    }

    #[test]
    fn a_referrer_keeps_the_signed_layers_and_names_its_subject() {
        let signature = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3,"annotations":{"dev.cosignproject.cosign/signature":"c2ln"}}]}"#;
        let subject = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: image(),
            size: 42,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        let referrer: serde_json::Value =
            serde_json::from_slice(&as_referrer(signature, &subject).unwrap()).unwrap();
        let original: serde_json::Value = serde_json::from_slice(signature).unwrap();
        assert_eq!(referrer["layers"], original["layers"]);
        assert_eq!(referrer["config"], original["config"]);
        assert_eq!(referrer["artifactType"], SIGNATURE_ARTIFACT_TYPE);
        assert_eq!(referrer["subject"]["digest"], image().to_string());
        assert_eq!(referrer["subject"]["size"], 42);
        let back = as_tagged(&serde_json::to_vec(&referrer).unwrap()).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
            original
        );
    }

    #[test]
    fn an_attestation_is_accepted_only_signed_by_a_policy_key_and_about_the_image() {
        // DSSE over an in-toto statement, signed the way cosign signs attestations: openssl
        // signed the pre-authentication encoding with the EC key, apart from this code.
        let envelope = include_bytes!("../testdata/cosign/attestation.json");
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

    #[test]
    fn the_tag_is_cosigns() {
        let d = Digest::of(b"x");
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
    }
}
