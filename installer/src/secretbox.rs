//! Encryption at rest as kube-apiserver's `secretbox` provider does it, and the
//! `EncryptionConfiguration` that hands the same key to the API server.
//!
//! A stored value is `k8s:enc:secretbox:v1:<key name>:` + 24-byte random nonce + NaCl
//! secretbox (XSalsa20-Poly1305, tag first) of the plaintext: byte for byte what the API
//! server's transformer writes and reads.

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::Deserialize;

use base64::Engine;
use zeroize::Zeroizing;

use crate::secret::{SecretKey, SecretString};

const PREFIX: &str = "k8s:enc:secretbox:v1:";
const NONCE_SIZE: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretboxError {
    #[error("the value is not encrypted with secretbox key `{0}`")]
    NotOurs(String),
    #[error("the value does not decrypt with key `{0}` (tampered with, or another key)")]
    Open(String),
    #[error("the operating system's random generator failed")]
    Random,
    #[error("encryption configuration: {0}")]
    Config(&'static str),
    #[error("encryption configuration is not YAML")]
    ConfigYaml(#[source] serde_yaml_ng::Error),
}

/// A named 32-byte secretbox key. Debug output never shows the key; it is zeroed on drop.
pub struct SecretboxKey {
    name: String,
    key: SecretKey<32>,
}

impl std::fmt::Debug for SecretboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretboxKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SecretboxKey {
    pub fn generate(name: &str) -> Result<Self, SecretboxError> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|_| SecretboxError::Random)?;
        Ok(SecretboxKey {
            name: name.to_string(),
            key: SecretKey::new(key),
        })
    }

    pub fn from_bytes(name: &str, key: [u8; 32]) -> Self {
        SecretboxKey {
            name: name.to_string(),
            key: SecretKey::new(key),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> String {
        format!("{PREFIX}{}:", self.name)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretboxError> {
        let mut nonce = [0u8; NONCE_SIZE];
        getrandom::getrandom(&mut nonce).map_err(|_| SecretboxError::Random)?;
        let cipher = XSalsa20Poly1305::new(self.key.expose().into());
        let sealed = cipher
            .encrypt(&nonce.into(), plaintext)
            .map_err(|_| SecretboxError::Random)?;
        let prefix = self.prefix();
        let mut out = Vec::with_capacity(prefix.len() + NONCE_SIZE + sealed.len());
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, stored: &[u8]) -> Result<Vec<u8>, SecretboxError> {
        let rest = stored
            .strip_prefix(self.prefix().as_bytes())
            .ok_or_else(|| SecretboxError::NotOurs(self.name.clone()))?;
        if rest.len() < NONCE_SIZE {
            return Err(SecretboxError::Open(self.name.clone()));
        }
        let (nonce, sealed) = rest.split_at(NONCE_SIZE);
        let nonce: [u8; NONCE_SIZE] = nonce
            .try_into()
            .map_err(|_| SecretboxError::Open(self.name.clone()))?;
        XSalsa20Poly1305::new(self.key.expose().into())
            .decrypt(&nonce.into(), sealed)
            .map_err(|_| SecretboxError::Open(self.name.clone()))
    }

    /// The `EncryptionConfiguration` kube-apiserver takes with `--encryption-provider-config`:
    /// secrets are written with this key; `identity` last so objects stored before encryption
    /// was turned on still read.
    pub fn encryption_configuration(&self) -> SecretString {
        let secret =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.key.expose()));
        SecretString::new(format!(
            "apiVersion: apiserver.config.k8s.io/v1\n\
             kind: EncryptionConfiguration\n\
             resources:\n\
             \x20 - resources:\n\
             \x20     - secrets\n\
             \x20   providers:\n\
             \x20     - secretbox:\n\
             \x20         keys:\n\
             \x20           - name: {}\n\
             \x20             secret: {secret}\n\
             \x20     - identity: {{}}\n",
            self.name,
            secret = secret.as_str()
        ))
    }

    /// Reads the first secretbox key for `secrets` back from an `EncryptionConfiguration`.
    pub fn from_encryption_configuration(text: &str) -> Result<Self, SecretboxError> {
        #[derive(Deserialize)]
        struct Config {
            kind: String,
            resources: Vec<Resources>,
        }
        #[derive(Deserialize)]
        struct Resources {
            resources: Vec<String>,
            providers: Vec<Provider>,
        }
        #[derive(Deserialize)]
        struct Provider {
            secretbox: Option<Keys>,
        }
        #[derive(Deserialize)]
        struct Keys {
            keys: Vec<Key>,
        }
        #[derive(Deserialize)]
        struct Key {
            name: String,
            secret: String,
        }
        let bad = SecretboxError::Config;
        let config: Config = serde_yaml_ng::from_str(text).map_err(SecretboxError::ConfigYaml)?;
        if config.kind != "EncryptionConfiguration" {
            return Err(bad("kind is not EncryptionConfiguration"));
        }
        let key = config
            .resources
            .iter()
            .filter(|r| r.resources.iter().any(|r| r == "secrets"))
            .flat_map(|r| r.providers.iter())
            .find_map(|p| p.secretbox.as_ref().and_then(|s| s.keys.first()))
            .ok_or_else(|| bad("no secretbox key for secrets"))?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&key.secret)
                .map_err(|_| bad("the secretbox key is not base64"))?,
        );
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("the secretbox key is not 32 bytes"))?;
        Ok(SecretboxKey::from_bytes(&key.name, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NaCl's own test vector (tests/secretbox.c): the box must be byte-identical to what
    /// Go's `x/crypto/nacl/secretbox` (the API server's implementation) produces.
    #[test]
    fn matches_nacl_secretbox() {
        let key: [u8; 32] =
            hex::decode("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce = hex::decode("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37").unwrap();
        let plaintext = hex::decode(concat!(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a",
            "1ac728d45e6c61296cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057",
            "e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc76897040",
            "e082f937763848645e0705"
        ))
        .unwrap();
        let boxed = hex::decode(concat!(
            "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4",
            "476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738",
            "b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de",
            "56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5"
        ))
        .unwrap();
        let k = SecretboxKey::from_bytes("key1", key);
        let mut stored = b"k8s:enc:secretbox:v1:key1:".to_vec();
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&boxed);
        assert_eq!(k.open(&stored).unwrap(), plaintext);

        let sealed = k.seal(b"hello").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:secretbox:v1:key1:"));
        assert_eq!(sealed.len(), 26 + 24 + 16 + 5);
        assert_eq!(k.open(&sealed).unwrap(), b"hello");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(k.open(&tampered), Err(SecretboxError::Open(n)) if n == "key1"));
        let other = SecretboxKey::from_bytes("key2", key);
        assert!(matches!(
            other.open(&sealed),
            Err(SecretboxError::NotOurs(_))
        ));
    }

    #[test]
    fn encryption_configuration_round_trips() {
        let k = SecretboxKey::generate("key1").unwrap();
        let text = k.encryption_configuration();
        let back = SecretboxKey::from_encryption_configuration(text.expose()).unwrap();
        assert_eq!(back.key, k.key);
        assert_eq!(back.name(), "key1");
        assert!(!format!("{k:?}").contains(&hex::encode(k.key.expose())));
        assert!(!format!("{text:?}").contains("secret:"));
    }
}
