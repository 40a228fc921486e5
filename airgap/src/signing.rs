//! Ed25519 keys and the detached signature file `bundle.json.sig`.
//!
//! The signature file has exactly one encoding: it is parsed, re-encoded and compared with the
//! bytes read, so that no byte of it can change without the bundle failing verification.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot write key file {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: String },
    #[error("{path} is not an ed25519 private key in PKCS#8 PEM form")]
    NotPrivateKey { path: String },
    #[error("{path} is not an ed25519 public key in SPKI PEM form")]
    NotPublicKey { path: String },
    #[error("private key {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`")]
    LoosePermissions { path: String, mode: u32 },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("encoding the private key")]
    Encode(#[source] ed25519_dalek::pkcs8::Error),
}

/// Identifies a public key: the sha256 of its 32 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(Digest);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A private signing key. Its `Debug` never shows key material, and the PEM form it produces
/// is zeroized on drop.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(KeyError::Random)?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a PKCS#8 PEM private key, refusing one that others can read (as ssh does).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let meta = fs::metadata(path).map_err(|cause| KeyError::Read {
            path: shown.clone(),
            cause,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::LoosePermissions { path: shown, mode });
            }
        }
        let pem = Zeroizing::new(fs::read_to_string(path).map_err(|cause| KeyError::Read {
            path: shown.clone(),
            cause,
        })?);
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .map(SigningKey)
            .map_err(|_| KeyError::NotPrivateKey { path: shown })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Writes the private key (mode 0600, created with that mode so it is never briefly
    /// readable) and the public key beside it.
    pub fn save(&self, private: &Path, public: &Path, overwrite: bool) -> Result<(), KeyError> {
        let pem = self
            .0
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(KeyError::Encode)?;
        write_new_file(private, pem.as_bytes(), 0o600, overwrite)?;
        write_new_file(
            public,
            self.public_key().to_pem().as_bytes(),
            0o644,
            overwrite,
        )
    }

    pub fn sign(&self, message: &[u8]) -> SignatureFile {
        let sig: Signature = self.0.sign(message);
        SignatureFile {
            signatures: vec![SignatureEntry {
                keyid: self.public_key().key_id(),
                sig: hex::encode(sig.to_bytes()),
            }],
        }
    }
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists { path: shown });
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).truncate(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let result = options.open(path).and_then(|mut f| {
        // An existing file keeps its old mode through open(); force the one we mean.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()
    });
    result.map_err(|cause| KeyError::Write { path: shown, cause })
}

#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = fs::read_to_string(path).map_err(|cause| KeyError::Read {
            path: shown.clone(),
            cause,
        })?;
        Self::from_pem(&pem).ok_or(KeyError::NotPublicKey { path: shown })
    }

    pub fn from_pem(pem: &str) -> Option<Self> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .ok()
            .map(PublicKey)
    }

    pub fn to_pem(&self) -> String {
        // Encoding a valid 32-byte key into SPKI cannot fail; an empty string would then fail
        // loudly on load rather than here.
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    pub fn key_id(&self) -> KeyId {
        KeyId(Digest::of(self.0.as_bytes()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("bundle.json.sig is not a valid signature file")]
    Malformed,
    #[error("bundle is not signed by key {wanted} (signed by: {present})")]
    NoSignatureForKey { wanted: KeyId, present: String },
    #[error("the signature of key {0} over bundle.json does not verify: bundle.json was altered or the signature is corrupt")]
    Invalid(KeyId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub keyid: KeyId,
    /// The 64-byte ed25519 signature in lowercase hex.
    pub sig: String,
}

impl SignatureFile {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses the canonical encoding only.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let file: SignatureFile =
            serde_json::from_slice(bytes).map_err(|_| SignatureError::Malformed)?;
        if file.to_bytes() != bytes || file.signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        Ok(file)
    }

    pub fn key_ids(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|s| s.keyid).collect()
    }

    /// Succeeds when a signature by `key` verifies over `message`.
    pub fn verify(&self, key: &PublicKey, message: &[u8]) -> Result<KeyId, SignatureError> {
        let wanted = key.key_id();
        let mine: Vec<_> = self
            .signatures
            .iter()
            .filter(|s| s.keyid == wanted)
            .collect();
        if mine.is_empty() {
            let present = self
                .key_ids()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SignatureError::NoSignatureForKey { wanted, present });
        }
        for entry in mine {
            let mut raw = [0u8; 64];
            if entry.sig.len() != 128
                || entry.sig.bytes().any(|b| b.is_ascii_uppercase())
                || hex::decode_to_slice(&entry.sig, &mut raw).is_err()
            {
                return Err(SignatureError::Malformed);
            }
            if key
                .0
                .verify_strict(message, &Signature::from_bytes(&raw))
                .is_ok()
            {
                return Ok(wanted);
            }
        }
        Err(SignatureError::Invalid(wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = key.sign(b"index");
        let parsed = SignatureFile::parse(&sig.to_bytes()).unwrap();
        assert_eq!(
            parsed.verify(&key.public_key(), b"index").unwrap(),
            key.public_key().key_id()
        );
        assert!(matches!(
            parsed.verify(&key.public_key(), b"indeX"),
            Err(SignatureError::Invalid(_))
        ));
        assert!(matches!(
            parsed.verify(&other.public_key(), b"index"),
            Err(SignatureError::NoSignatureForKey { .. })
        ));
    }

    #[test]
    fn non_canonical_signature_file_is_refused() {
        let key = SigningKey::generate().unwrap();
        let bytes = key.sign(b"m").to_bytes();
        let spaced = String::from_utf8(bytes.clone()).unwrap().replace(':', ": ");
        assert_eq!(
            SignatureFile::parse(spaced.as_bytes()),
            Err(SignatureError::Malformed)
        );
        let upper = String::from_utf8(bytes).unwrap().to_uppercase();
        assert_eq!(
            SignatureFile::parse(upper.as_bytes()),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn keys_round_trip_through_files_with_tight_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let key = SigningKey::generate().unwrap();
        key.save(&private, &public, false).unwrap();
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            SigningKey::load(&private).unwrap().public_key(),
            key.public_key()
        );
        assert_eq!(PublicKey::load(&public).unwrap(), key.public_key());
        assert!(matches!(
            key.save(&private, &public, false),
            Err(KeyError::Exists { .. })
        ));
        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SigningKey::load(&private),
            Err(KeyError::LoosePermissions { .. })
        ));
        assert!(!format!("{key:?}").contains(&hex::encode(key.0.to_bytes())));
    }
}
