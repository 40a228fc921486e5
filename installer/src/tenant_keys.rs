//! Tenant keys: the envelope the security architecture draws. The installation's root key
//! (`rootKey` in `airgap-system/installation-keys`) encrypts nothing but tenant keys; each
//! tenant key (256 random bits) encrypts that tenant's data in the management cluster.
//!
//! A tenant key is stored only wrapped: the Secret `airgap-system/tenant-key-<tenant>` holds
//! `wrappedKey` = 12-byte nonce || AES-256-GCM(root key, tenant key) with the associated data
//! [`aad`] (the format, the tenant's name and the root key's id, so a wrapped key cannot be
//! moved to another tenant or passed off under another root key), `rootKeyId` and
//! `algorithm`. The Secret itself is sealed at rest like every other. AES-256-GCM because any
//! standard library opens it (the tests unwrap with Python's `cryptography`), and ring, which
//! TLS already builds, implements it in constant time.
//!
//! Rotating the root key re-wraps every tenant key and replaces the root key in one etcd
//! transaction that compares every Secret's revision: a crash before it changes nothing and
//! the same command starts over; a concurrent change makes it read again.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

use crate::etcd::client::{Create, EtcdClient, EtcdError};
use crate::keys::{open_secret, read_secret_at, seal_secret, KeysError, INSTALLATION_KEYS};
use crate::kube_object::{secret_key, Secret, NAMESPACE};
use crate::secret::{SecretBytes, SecretKey};
use crate::secretbox::SecretboxKey;

/// Secret names: `tenant-key-<tenant>`.
pub const SECRET_PREFIX: &str = "tenant-key-";
pub const ALGORITHM: &str = "AES-256-GCM";
/// etcd's default `--max-txn-ops` is 128: every tenant key and the installation keys must
/// fit in the one rotation transaction.
pub const MAX_TENANTS: usize = 127;
/// A rotation that keeps losing compare-and-swaps to concurrent writers gives up after this.
const ROTATION_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TenantKeyError {
    #[error("tenant name `{0}`: use 1 to 52 lower-case letters, digits and '-', starting and ending with a letter or digit")]
    Name(String),
    #[error("tenant key {0} exists; a tenant key is never replaced (`airgap tenant-key rotate-root` re-wraps it under a new root key)")]
    Exists(String),
    #[error("the installation has no root key (airgap-system/installation-keys has no rootKey); run `airgap install` first")]
    NoRootKey,
    #[error(
        "tenant key {tenant} is wrapped under root key {found}, not the installation's {current}"
    )]
    OtherRoot {
        tenant: String,
        found: String,
        current: String,
    },
    #[error(
        "tenant key {0} does not unwrap under the root key (tampered with, or another root key)"
    )]
    Unwrap(String),
    #[error("tenant key Secret {0} is missing {1}")]
    Field(String, &'static str),
    #[error("{0} tenant keys do not fit in one rotation transaction (at most {MAX_TENANTS})")]
    TooMany(usize),
    #[error("the root key rotation lost {ROTATION_ATTEMPTS} times to concurrent changes of the tenant keys; run it again")]
    Contended,
    #[error("the operating system's random generator failed")]
    Random,
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// A tenant's name: a DNS label short enough to stay one inside the Secret's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(name: &str) -> Result<Self, TenantKeyError> {
        let bad = || TenantKeyError::Name(name.to_string());
        let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        let bytes = name.as_bytes();
        if bytes.is_empty()
            || bytes.len() > 63 - SECRET_PREFIX.len()
            || !bytes.iter().all(|&b| ok_char(b))
            || bytes[0] == b'-'
            || bytes[bytes.len() - 1] == b'-'
        {
            return Err(bad());
        }
        Ok(TenantName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.0)
    }
}

/// The installation's root key.
pub struct RootKey(SecretKey<32>);

impl RootKey {
    fn from_secret(secret: &Secret) -> Result<Self, TenantKeyError> {
        let bytes = secret
            .data
            .get("rootKey")
            .ok_or(TenantKeyError::NoRootKey)?;
        let key: [u8; 32] = bytes
            .expose()
            .try_into()
            .map_err(|_| TenantKeyError::NoRootKey)?;
        Ok(RootKey(SecretKey::new(key)))
    }

    fn generate() -> Result<Self, TenantKeyError> {
        Ok(RootKey(SecretKey::new(random32()?)))
    }

    /// A name for the key that is not the key: a hash under its own domain.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"airgap root key id v1\0");
        h.update(self.0.expose());
        hex::encode(&h.finalize()[..8])
    }

    fn aead(&self) -> Result<LessSafeKey, TenantKeyError> {
        let key =
            UnboundKey::new(&AES_256_GCM, self.0.expose()).map_err(|_| TenantKeyError::Random)?;
        Ok(LessSafeKey::new(key))
    }

    fn wrap(&self, tenant: &TenantName, key: &SecretKey<32>) -> Result<Vec<u8>, TenantKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| TenantKeyError::Random)?;
        let mut sealed = key.expose().to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, &self.id())),
                &mut sealed,
            )
            .map_err(|_| TenantKeyError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, tenant: &TenantName, wrapped: &[u8]) -> Result<SecretKey<32>, TenantKeyError> {
        let fail = || TenantKeyError::Unwrap(tenant.0.clone());
        if wrapped.len() != NONCE_LEN + 32 + AES_256_GCM.tag_len() {
            return Err(fail());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = zeroize::Zeroizing::new(sealed.to_vec());
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad(tenant, &self.id())), &mut buf)
            .map_err(|_| fail())?;
        let key: [u8; 32] = (&*plain).try_into().map_err(|_| fail())?;
        Ok(SecretKey::new(key))
    }
}

/// The associated data a wrapped key is bound to.
pub fn aad(tenant: &TenantName, root_key_id: &str) -> Vec<u8> {
    format!("airgap tenant key v1\0{}\0{root_key_id}", tenant.0).into_bytes()
}

fn random32() -> Result<[u8; 32], TenantKeyError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|_| TenantKeyError::Random)?;
    Ok(b)
}

/// A tenant key as `list` shows it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedTenantKey {
    pub tenant: String,
    pub root_key_id: String,
    pub algorithm: String,
    pub created: String,
}

fn tenant_secret(tenant: &TenantName, root: &RootKey, wrapped: Vec<u8>) -> Secret {
    let mut data = crate::keys::SecretData::new();
    data.insert("tenant".into(), tenant.0.clone().into_bytes().into());
    data.insert("algorithm".into(), ALGORITHM.as_bytes().to_vec().into());
    data.insert("rootKeyId".into(), root.id().into_bytes().into());
    data.insert("wrappedKey".into(), SecretBytes::new(wrapped));
    Secret::opaque(NAMESPACE, &tenant.secret_name(), data)
}

fn field<'a>(secret: &'a Secret, name: &'static str) -> Result<&'a [u8], TenantKeyError> {
    secret
        .data
        .get(name)
        .map(|v| v.expose())
        .ok_or_else(|| TenantKeyError::Field(secret.metadata.name.clone(), name))
}

async fn root_key(
    etcd: &EtcdClient,
    at_rest: &SecretboxKey,
) -> Result<(Secret, i64, RootKey), TenantKeyError> {
    let (secret, revision) = read_secret_at(etcd, at_rest, INSTALLATION_KEYS)
        .await?
        .ok_or(TenantKeyError::NoRootKey)?;
    let root = RootKey::from_secret(&secret)?;
    Ok((secret, revision, root))
}

/// Creates tenant `tenant`'s key, wrapped under the root key (create-only). Returns the root
/// key's id.
pub async fn create(
    etcd: &EtcdClient,
    at_rest: &SecretboxKey,
    tenant: &TenantName,
) -> Result<String, TenantKeyError> {
    let (_, _, root) = root_key(etcd, at_rest).await?;
    let key = SecretKey::new(random32()?);
    let secret = tenant_secret(tenant, &root, root.wrap(tenant, &key)?);
    let path = secret_key(NAMESPACE, &tenant.secret_name());
    match etcd.create(&path, &seal_secret(at_rest, &secret)?).await? {
        Create::Created => Ok(root.id()),
        Create::Exists => Err(TenantKeyError::Exists(tenant.0.clone())),
    }
}

/// Every tenant key Secret, decrypted, with its mod revision. Each value and its revision come
/// from one read, so a rotation compares against exactly the version it unwrapped.
async fn tenant_secrets(
    etcd: &EtcdClient,
    at_rest: &SecretboxKey,
) -> Result<Vec<(TenantName, Secret, i64)>, TenantKeyError> {
    let prefix = secret_key(NAMESPACE, SECRET_PREFIX);
    let (kvs, _) = etcd.range_prefix(&prefix).await?;
    let mut out = Vec::new();
    for (key, _) in kvs {
        // Deleted since the listing: not a tenant key any more.
        let Some(kv) = etcd.get(&key).await? else {
            continue;
        };
        let name = key.trim_start_matches(&secret_key(NAMESPACE, ""));
        let secret = open_secret(at_rest, name, &kv.value)?;
        let tenant = TenantName::parse(&String::from_utf8_lossy(field(&secret, "tenant")?))?;
        out.push((tenant, secret, kv.mod_revision));
    }
    Ok(out)
}

pub async fn list(
    etcd: &EtcdClient,
    at_rest: &SecretboxKey,
) -> Result<Vec<ListedTenantKey>, TenantKeyError> {
    tenant_secrets(etcd, at_rest)
        .await?
        .into_iter()
        .map(|(tenant, secret, _)| {
            Ok(ListedTenantKey {
                tenant: tenant.0,
                root_key_id: String::from_utf8_lossy(field(&secret, "rootKeyId")?).into_owned(),
                algorithm: String::from_utf8_lossy(field(&secret, "algorithm")?).into_owned(),
                created: secret.metadata.creation_timestamp.clone(),
            })
        })
        .collect()
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_root_key_id: String,
    pub new_root_key_id: String,
    pub tenant_keys: usize,
}

/// Replaces the root key with a new one and re-wraps every tenant key under it, in one
/// transaction. Every tenant key is unwrapped (and so checked) before anything is written.
pub async fn rotate_root(
    etcd: &EtcdClient,
    at_rest: &SecretboxKey,
) -> Result<Rotation, TenantKeyError> {
    for _ in 0..ROTATION_ATTEMPTS {
        let (mut installation, installation_rev, old) = root_key(etcd, at_rest).await?;
        let tenants = tenant_secrets(etcd, at_rest).await?;
        if tenants.len() > MAX_TENANTS {
            return Err(TenantKeyError::TooMany(tenants.len()));
        }
        let new = RootKey::generate()?;
        let mut compares = vec![etcd::Compare::ModRevision(
            secret_key(NAMESPACE, INSTALLATION_KEYS),
            installation_rev,
        )];
        let mut ops = Vec::new();
        for (tenant, secret, revision) in &tenants {
            let wrapped_under = String::from_utf8_lossy(field(secret, "rootKeyId")?).into_owned();
            if wrapped_under != old.id() {
                return Err(TenantKeyError::OtherRoot {
                    tenant: tenant.0.clone(),
                    found: wrapped_under,
                    current: old.id(),
                });
            }
            let key = old.unwrap(tenant, field(secret, "wrappedKey")?)?;
            let mut rewrapped = secret.clone();
            rewrapped.data = tenant_secret(tenant, &new, new.wrap(tenant, &key)?).data;
            compares.push(etcd::Compare::ModRevision(
                secret_key(NAMESPACE, &tenant.secret_name()),
                *revision,
            ));
            ops.push(etcd::Op::Put(
                secret_key(NAMESPACE, &tenant.secret_name()),
                seal_secret(at_rest, &rewrapped)?,
            ));
        }
        installation
            .data
            .insert("rootKey".into(), SecretBytes::new(new.0.expose().to_vec()));
        ops.push(etcd::Op::Put(
            secret_key(NAMESPACE, INSTALLATION_KEYS),
            seal_secret(at_rest, &installation)?,
        ));
        crate::failpoint::Failpoint::reached_named("rotate-root-prepared");
        if etcd.txn(&compares, &ops).await? {
            return Ok(Rotation {
                old_root_key_id: old.id(),
                new_root_key_id: new.id(),
                tenant_keys: tenants.len(),
            });
        }
    }
    Err(TenantKeyError::Contended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_tenant_under_its_root_key() {
        let root = RootKey(SecretKey::new([7u8; 32]));
        let acme = TenantName::parse("acme").unwrap();
        let globex = TenantName::parse("globex").unwrap();
        let key = SecretKey::new([9u8; 32]);
        let wrapped = root.wrap(&acme, &key).unwrap();
        assert_eq!(wrapped.len(), 12 + 32 + 16);
        assert!(!wrapped.windows(32).any(|w| w == [9u8; 32]));
        assert_eq!(root.unwrap(&acme, &wrapped).unwrap().expose(), &[9u8; 32]);
        // Moved to another tenant, or opened under another root key: refused.
        assert!(root.unwrap(&globex, &wrapped).is_err());
        let other = RootKey(SecretKey::new([8u8; 32]));
        assert!(other.unwrap(&acme, &wrapped).is_err());
        let mut flipped = wrapped.clone();
        flipped[20] ^= 1;
        assert!(root.unwrap(&acme, &flipped).is_err());
        assert_ne!(root.id(), other.id());
        assert_eq!(root.id().len(), 16);
    }

    #[test]
    fn tenant_names_are_dns_labels_that_fit_the_secret_name() {
        for good in ["acme", "a", "tenant-7", &"a".repeat(52)] {
            assert!(TenantName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Acme",
            "a/b",
            "../x",
            "a.b",
            &"a".repeat(53),
        ] {
            assert!(TenantName::parse(bad).is_err(), "{bad}");
        }
    }
}
