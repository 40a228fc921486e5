//! Installation keys: generated once, stored as encrypted Kubernetes Secrets in etcd with
//! create-only transactions, never regenerated. A re-run reads them back (and proves they
//! still decrypt) instead of writing.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::etcd::client::{Create, EtcdClient, EtcdError};
use crate::kube_object::{namespace_key, secret_key, Namespace, Secret, NAMESPACE};
use crate::secret::{SecretBytes, SecretString};
use crate::secretbox::{SecretboxError, SecretboxKey};

pub const INSTALLATION_KEYS: &str = "installation-keys";
pub const REGISTRY_CREDENTIALS: &str = "registry-credentials";
/// The built-in registry's pull-only login, the one containerd presents: it cannot push,
/// delete or collect garbage, so a node's `hosts.toml` is not the registry's keys.
pub const REGISTRY_PULL_CREDENTIALS: &str = "registry-pull-credentials";
/// Its user name in the registry's pull-only htpasswd.
pub const PULL_USER: &str = "puller";

/// A Secret's data: names to secret values.
pub type SecretData = BTreeMap<String, SecretBytes>;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("secret {name} does not decrypt: the encryption configuration no longer matches what etcd holds")]
    Secret {
        name: String,
        #[source]
        source: SecretboxError,
    },
    #[error("secret {name} is not a v1 Secret")]
    NotASecret {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("secret {name} vanished while being created")]
    Vanished { name: String },
    #[error("the operating system's random generator failed")]
    Random(#[source] getrandom::Error),
    #[error("generating the JWT signing key")]
    Jwt(#[source] rcgen::Error),
    #[error("reading {}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secretbox(#[from] SecretboxError),
}

/// What each Secret was: written now, or found in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Created,
    Existing,
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeysError> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::getrandom(b.as_mut()).map_err(KeysError::Random)?;
    Ok(b)
}

/// The data of `airgap-system/installation-keys`.
pub fn generate_installation_keys() -> Result<SecretData, KeysError> {
    let jwt =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(KeysError::Jwt)?;
    let mut data = SecretData::new();
    data.insert("rootKey".into(), random::<32>()?.to_vec().into());
    data.insert(
        "jwtSigningKey".into(),
        jwt.serialize_pem().into_bytes().into(),
    );
    data.insert("hashSalt".into(), random::<32>()?.to_vec().into());
    data.insert(
        "installationId".into(),
        hex::encode(random::<6>()?.as_ref()).into_bytes().into(),
    );
    Ok(data)
}

/// A password for the built-in registry's admin (192 random bits, URL-safe text).
pub fn generate_password() -> Result<SecretString, KeysError> {
    SecretString::random_password().map_err(KeysError::Random)
}

/// Writes the `airgap-system` namespace object (unencrypted, as the API server stores
/// namespaces) unless it exists.
pub async fn ensure_namespace(etcd: &EtcdClient) -> Result<Stored, KeysError> {
    let object =
        serde_json::to_vec(&Namespace::new(NAMESPACE)).map_err(|source| KeysError::NotASecret {
            name: NAMESPACE.into(),
            source,
        })?;
    Ok(
        match etcd.create(&namespace_key(NAMESPACE), &object).await? {
            Create::Created => Stored::Created,
            Create::Exists => Stored::Existing,
        },
    )
}

/// Creates the Secret `airgap-system/<name>` with the data `generate` makes, unless it exists;
/// either way returns the data now stored (decrypted), so every later phase reads the truth
/// from etcd rather than from a value only this run generated.
pub async fn ensure_secret(
    etcd: &EtcdClient,
    key: &SecretboxKey,
    name: &str,
    generate: impl FnOnce() -> Result<SecretData, KeysError>,
) -> Result<(SecretData, Stored), KeysError> {
    let path = secret_key(NAMESPACE, name);
    if let Some(existing) = read_secret(etcd, key, name).await? {
        return Ok((existing.data, Stored::Existing));
    }
    let secret = Secret::opaque(NAMESPACE, name, generate()?);
    match etcd.create(&path, &seal_secret(key, &secret)?).await? {
        Create::Created => Ok((secret.data, Stored::Created)),
        // Another writer won the race: theirs stands.
        Create::Exists => match read_secret(etcd, key, name).await? {
            Some(existing) => Ok((existing.data, Stored::Existing)),
            None => Err(KeysError::Vanished { name: name.into() }),
        },
    }
}

/// Reads and decrypts `airgap-system/<name>`.
pub async fn read_secret(
    etcd: &EtcdClient,
    key: &SecretboxKey,
    name: &str,
) -> Result<Option<Secret>, KeysError> {
    Ok(read_secret_at(etcd, key, name).await?.map(|(s, _)| s))
}

/// Reads and decrypts `airgap-system/<name>`, with the mod revision a compare-and-swap of it
/// compares against.
pub async fn read_secret_at(
    etcd: &EtcdClient,
    key: &SecretboxKey,
    name: &str,
) -> Result<Option<(Secret, i64)>, KeysError> {
    let Some(kv) = etcd.get(&secret_key(NAMESPACE, name)).await? else {
        return Ok(None);
    };
    Ok(Some((open_secret(key, name, &kv.value)?, kv.mod_revision)))
}

/// Decrypts and parses a stored Secret.
pub fn open_secret(key: &SecretboxKey, name: &str, stored: &[u8]) -> Result<Secret, KeysError> {
    let plain = Zeroizing::new(key.open(stored).map_err(|source| KeysError::Secret {
        name: name.into(),
        source,
    })?);
    serde_json::from_slice(&plain).map_err(|source| KeysError::NotASecret {
        name: name.into(),
        source,
    })
}

/// A Secret as etcd stores it: JSON, sealed with the encryption-at-rest key.
pub fn seal_secret(key: &SecretboxKey, secret: &Secret) -> Result<Vec<u8>, KeysError> {
    let json =
        Zeroizing::new(
            serde_json::to_vec(secret).map_err(|source| KeysError::NotASecret {
                name: secret.metadata.name.clone(),
                source,
            })?,
        );
    Ok(key.seal(&json)?)
}
