//! The certificate key: what opens the cluster's shared control-plane keys for a joining node
//! (kubeadm's `--certificate-key`).
//!
//! A join token proves a node may join; it must not be what hands out the cluster CA key, the
//! etcd CA key, the FQDN key and the EncryptionConfiguration, or anyone who reads a token off
//! a screen or a shell history could mint an etcd client certificate. So the shared keys leave
//! a node only sealed (XSalsa20-Poly1305) under a random 256-bit key that the cluster never
//! stores: `install` and `airgap token create --certificate-key` print it once, and etcd keeps
//! only the sealed material, when it expires, and the key's id (a hash, so a wrong key is
//! refused before the join changes anything). The join API hands the sealed bytes out; only
//! the node holding the key opens them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::protocol::{SecretPem, SharedPair};
use crate::etcd::client::{EtcdClient, EtcdError};
use crate::layout::NodeLayout;
use crate::pki::PairPaths;
use crate::secret::{SecretKey, SecretString};
use crate::secretbox::SecretboxKey;

/// Where the sealed material waits for joining nodes.
pub const MATERIAL_KEY: &str = "/airgap/cluster/join-material";
/// How long uploaded material stays (kubeadm keeps its uploaded certificates two hours).
pub const MATERIAL_TTL: Duration = Duration::from_secs(2 * 3600);
/// The secretbox key name the material is sealed under (also a domain separator).
const SEAL_NAME: &str = "airgap-join-material";

#[derive(Debug, thiserror::Error)]
pub enum CertificateKeyError {
    #[error("the certificate key is not 64 hexadecimal characters (as `airgap install` or `airgap token create --certificate-key` printed it)")]
    Malformed,
    #[error("the operating system's random generator failed")]
    Random,
    #[error("the certificate key does not open the cluster's shared keys (a key printed before the last `airgap token create --certificate-key`?)")]
    Open,
    #[error("reading {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the join material in etcd ({MATERIAL_KEY}) is not valid")]
    Record(#[source] serde_json::Error),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// The operator-held key. Shown only by [`CertificateKey::to_hex`], at the one place that
/// prints it; zeroed on drop.
pub struct CertificateKey(SecretKey<32>);

impl std::fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificateKey({})", self.id())
    }
}

impl CertificateKey {
    pub fn generate() -> Result<Self, CertificateKeyError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|_| CertificateKeyError::Random)?;
        Ok(CertificateKey(SecretKey::new(bytes)))
    }

    pub fn parse(text: &str) -> Result<Self, CertificateKeyError> {
        let text = zeroize::Zeroizing::new(text.trim().to_ascii_lowercase());
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| CertificateKeyError::Malformed)?;
        Ok(CertificateKey(SecretKey::new(bytes)))
    }

    pub fn to_hex(&self) -> SecretString {
        SecretString::new(hex::encode(self.0.expose()))
    }

    /// What the cluster keeps to recognise the key: a hash of it, under its own domain, so it
    /// cannot stand in for the key anywhere.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"airgap certificate key id v1\0");
        h.update(self.0.expose());
        hex::encode(&h.finalize()[..16])
    }

    fn secretbox(&self) -> SecretboxKey {
        SecretboxKey::from_bytes(SEAL_NAME, *self.0.expose())
    }
}

/// The control-plane material every node of the cluster shares.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedMaterial {
    pub cluster_ca: SharedPair,
    pub etcd_ca: SharedPair,
    pub fqdn: SharedPair,
    /// The CA the FQDN certificate chains to (the cluster CA, or the imported one).
    pub fqdn_ca: String,
    /// The EncryptionConfiguration every API server decrypts Secrets with.
    pub encryption_config: SecretPem,
    /// The passwords of etcd's `root` and `airgap-registry` users, when etcd has
    /// authentication on ([`crate::etcd::auth`]).
    #[serde(default)]
    pub etcd_passwords: Option<(SecretPem, SecretPem)>,
}

impl SharedMaterial {
    /// This node's copy, read from its files.
    pub fn read(layout: &NodeLayout) -> Result<Self, CertificateKeyError> {
        let read = |path: std::path::PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|source| CertificateKeyError::Read { path, source })
        };
        let secret = |p| read(p).map(|s| SecretPem(SecretString::new(s)));
        let pair = |paths: PairPaths| -> Result<SharedPair, CertificateKeyError> {
            Ok(SharedPair {
                cert: read(paths.cert)?,
                key: secret(paths.key)?,
            })
        };
        Ok(SharedMaterial {
            cluster_ca: pair(PairPaths::new(&layout.pki_dir(), "ca"))?,
            etcd_ca: pair(PairPaths::new(&layout.etcd_pki_dir(), "ca"))?,
            fqdn: pair(PairPaths {
                cert: layout.fqdn_cert(),
                key: layout.fqdn_key(),
            })?,
            fqdn_ca: read(layout.fqdn_ca())?,
            encryption_config: secret(layout.encryption_config())?,
            etcd_passwords: crate::etcd::auth::EtcdPasswords::load(layout)
                .map_err(|source| CertificateKeyError::Read {
                    path: layout.etcd_password(crate::etcd::auth::ROOT),
                    source,
                })?
                .map(|p| (SecretPem(p.root), SecretPem(p.registry))),
        })
    }

    fn seal(&self, key: &CertificateKey) -> Result<Vec<u8>, CertificateKeyError> {
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(self).map_err(CertificateKeyError::Record)?);
        key.secretbox()
            .seal(&plain)
            .map_err(|_| CertificateKeyError::Random)
    }

    /// Opens what the join API handed out.
    pub fn open(
        sealed: &SealedMaterial,
        key: &CertificateKey,
    ) -> Result<Self, CertificateKeyError> {
        let sealed = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sealed.0)
            .map_err(|_| CertificateKeyError::Open)?;
        let plain = zeroize::Zeroizing::new(
            key.secretbox()
                .open(&sealed)
                .map_err(|_| CertificateKeyError::Open)?,
        );
        serde_json::from_slice(&plain).map_err(|_| CertificateKeyError::Open)
    }
}

/// The material sealed under a certificate key, base64: what etcd stores and the join API
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedMaterial(pub String);

/// What etcd stores at [`MATERIAL_KEY`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaterialRecord {
    pub key_id: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub expires: u64,
    pub sealed: SealedMaterial,
}

/// Seals this node's shared material under `key` and stores it for `ttl`, replacing what an
/// earlier upload left (its key then opens nothing the cluster hands out). Returns the expiry.
pub async fn upload(
    etcd: &EtcdClient,
    layout: &NodeLayout,
    key: &CertificateKey,
    ttl: Duration,
) -> Result<u64, CertificateKeyError> {
    let sealed = SharedMaterial::read(layout)?.seal(key)?;
    let now = super::token::unix_now();
    let record = MaterialRecord {
        key_id: key.id(),
        created: now,
        expires: now + ttl.as_secs().max(1),
        sealed: SealedMaterial(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            sealed,
        )),
    };
    let bytes = serde_json::to_vec(&record).map_err(CertificateKeyError::Record)?;
    etcd.txn(&[], &[etcd::Op::Put(MATERIAL_KEY.into(), bytes)])
        .await?;
    Ok(record.expires)
}

/// Why the cluster cannot hand its material to a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Never uploaded, expired (and then deleted) or deleted.
    Absent,
    /// Uploaded under another key.
    OtherKey,
}

/// The sealed material for the key whose id is `key_id`, when it is uploaded and has not
/// expired. Expired material is deleted on sight.
pub async fn sealed_for(
    etcd: &EtcdClient,
    key_id: &str,
) -> Result<Result<SealedMaterial, Unavailable>, CertificateKeyError> {
    let Some(kv) = etcd.get(MATERIAL_KEY).await? else {
        return Ok(Err(Unavailable::Absent));
    };
    let record: MaterialRecord =
        serde_json::from_slice(&kv.value).map_err(CertificateKeyError::Record)?;
    if record.expires <= super::token::unix_now() {
        etcd.delete(MATERIAL_KEY).await?;
        return Ok(Err(Unavailable::Absent));
    }
    // Not secret (a hash of the key), so a plain comparison tells nothing an attacker lacks.
    if record.key_id != key_id {
        return Ok(Err(Unavailable::OtherKey));
    }
    Ok(Ok(record.sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> SharedMaterial {
        let pair = |c: &str| SharedPair {
            cert: format!("CERT {c}"),
            key: SecretPem(SecretString::new(format!(
                "-----BEGIN PRIVATE KEY----- {c}"
            ))),
        };
        SharedMaterial {
            cluster_ca: pair("cluster"),
            etcd_ca: pair("etcd"),
            fqdn: pair("fqdn"),
            fqdn_ca: "CA".into(),
            encryption_config: SecretPem(SecretString::new("secret: c2VjcmV0".into())),
            etcd_passwords: None,
        }
    }

    #[test]
    fn only_the_key_it_was_sealed_under_opens_the_material_and_nothing_shows_in_clear() {
        let key = CertificateKey::generate().unwrap();
        let sealed = material().seal(&key).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        let sealed = SealedMaterial(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            sealed,
        ));
        let opened = SharedMaterial::open(&sealed, &key).unwrap();
        assert_eq!(
            opened.etcd_ca.key.0.expose(),
            "-----BEGIN PRIVATE KEY----- etcd"
        );
        let other = CertificateKey::generate().unwrap();
        assert!(matches!(
            SharedMaterial::open(&sealed, &other),
            Err(CertificateKeyError::Open)
        ));
        // The same key again, as the operator types it (upper case, a trailing newline).
        let again =
            CertificateKey::parse(&format!("{}\n", key.to_hex().expose().to_uppercase())).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(SharedMaterial::open(&sealed, &again).is_ok());
    }

    #[test]
    fn the_id_is_not_the_key_and_debug_shows_only_the_id() {
        let key = CertificateKey::generate().unwrap();
        let hex = key.to_hex();
        assert_eq!(hex.expose().len(), 64);
        assert!(!hex.expose().contains(&key.id()));
        let shown = format!("{key:?}");
        assert!(
            shown.contains(&key.id()) && !shown.contains(hex.expose()),
            "{shown}"
        );
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            assert!(matches!(
                CertificateKey::parse(bad),
                Err(CertificateKeyError::Malformed)
            ));
        }
    }
}
