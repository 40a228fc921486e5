//! Image signatures: a "simple signing" payload naming the image's digest and repository, its
//! signature in the layer's annotation; found under `sha256-<digest>.sig` or as an OCI 1.1
//! referrer of the image.

use airgap::oci::{Descriptor, ImageManifest, OCI_MANIFEST};
use airgap::{Digest, ImageReference};
use base64::Engine;
use serde::Deserialize;

use super::key::VerificationKey;
use super::MAX_LAYERS;
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

/// The tag cosign and containers/image keep `image`'s signatures under.
pub fn signature_tag(image: &Digest) -> String {
    format!("sha256-{}.sig", image.hex())
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
            manifest: super::manifest_descriptor(
                &fetched,
                (published == Published::Referrer).then_some(SIGNATURE_ARTIFACT_TYPE),
            ),
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
    use super::super::vectors::*;
    use super::*;

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
    fn the_tag_is_cosigns() {
        let d = Digest::of(b"x");
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
    }
}
