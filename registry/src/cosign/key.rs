//! The public keys a signature policy trusts: PEM SubjectPublicKeyInfo, ECDSA P-256, Ed25519 or
//! RSA, verified with ring.

use airgap::Digest;

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

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

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
}
