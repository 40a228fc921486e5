//! The key a cluster trusts releases from. The first install records it in etcd
//! (`/airgap/cluster/trust-root`: key id and public key, create-only); an install or upgrade
//! with a release verified under any other key is refused, so `upgrade --pub other.pub` cannot
//! silently switch what the cluster trusts. The key changes only by a rotation statement the
//! current key signed ([`KeyRotation`], `airgap trust sign-rotation` on the connected side,
//! `airgap trust rotate` on a node), moved by compare-and-swap and audited.
//!
//! A cluster installed before the trust root existed records the key of its next install or
//! upgrade (trust on first use, as before).

use airgap::{KeyId, PublicKey, SignatureFile, SigningKey};
use serde::{Deserialize, Serialize};

use crate::etcd::client::{Create, EtcdClient, EtcdError};

pub const TRUST_ROOT_KEY: &str = "/airgap/cluster/trust-root";

/// What etcd holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustRoot {
    pub key_id: KeyId,
    /// The public key, PEM: what a rotation statement is verified against.
    pub public_key: String,
}

impl TrustRoot {
    pub fn of(key: &PublicKey) -> Self {
        TrustRoot {
            key_id: key.key_id(),
            public_key: key.to_pem(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustRootError {
    #[error("this release is signed by key {offered}, but the cluster trusts key {trusted}; a new signing key is accepted only through a rotation statement the current key signed (`airgap trust sign-rotation`, then `airgap trust rotate` on a node)")]
    OtherSigner { trusted: KeyId, offered: KeyId },
    #[error("the trust root in etcd ({TRUST_ROOT_KEY}) is not valid")]
    Corrupt(#[source] serde_json::Error),
    #[error("the rotation statement is not valid: {0}")]
    BadStatement(&'static str),
    #[error("the key rotation statement is not valid JSON")]
    StatementJson(#[source] serde_json::Error),
    #[error("the rotation statement is not signed by the key the cluster trusts ({trusted})")]
    NotSignedByRoot { trusted: KeyId },
    #[error(
        "the rotation statement moves trust from key {from}, but the cluster trusts key {trusted}"
    )]
    StaleStatement { from: KeyId, trusted: KeyId },
    #[error("the cluster has no trust root yet: install first")]
    Missing,
    #[error("another writer changed the trust root meanwhile; run the command again")]
    Raced,
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// The trust root, if the cluster has one.
pub async fn read(etcd: &EtcdClient) -> Result<Option<(TrustRoot, i64)>, TrustRootError> {
    match etcd.get(TRUST_ROOT_KEY).await? {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(|r| Some((r, kv.mod_revision)))
            .map_err(TrustRootError::Corrupt),
    }
}

/// Refuses a release verified under another key than the cluster's; records `key` when the
/// cluster has no trust root yet (create-only: a concurrent writer's stands).
pub async fn check_or_record(etcd: &EtcdClient, key: &PublicKey) -> Result<(), TrustRootError> {
    let root = match read(etcd).await? {
        Some((root, _)) => root,
        None => {
            let record =
                serde_json::to_vec(&TrustRoot::of(key)).map_err(TrustRootError::Corrupt)?;
            match etcd.create(TRUST_ROOT_KEY, &record).await? {
                Create::Created => return Ok(()),
                Create::Exists => read(etcd).await?.ok_or(TrustRootError::Missing)?.0,
            }
        }
    };
    if root.key_id != key.key_id() {
        return Err(TrustRootError::OtherSigner {
            trusted: root.key_id,
            offered: key.key_id(),
        });
    }
    Ok(())
}

/// "Trust `to` instead of `from` from now on", signed by `from`'s private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotationStatement {
    pub kind: String,
    pub from: KeyId,
    pub to: KeyId,
    /// The new public key, PEM.
    pub public_key: String,
    /// RFC 3339, when it was signed.
    pub created: String,
}

const KIND: &str = "airgap.key-rotation.v1";

/// A rotation statement and its signature, as one JSON file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// The statement's exact bytes (JSON), which the signature covers.
    pub statement: String,
    pub signature: SignatureFile,
}

impl KeyRotation {
    /// Signs the move from `old`'s key to `new`.
    pub fn sign(old: &SigningKey, new: &PublicKey, created: String) -> Self {
        let statement = RotationStatement {
            kind: KIND.into(),
            from: old.public_key().key_id(),
            to: new.key_id(),
            public_key: new.to_pem(),
            created,
        };
        let statement = serde_json::to_string(&statement).unwrap_or_default();
        let signature = old.sign(statement.as_bytes());
        KeyRotation {
            statement,
            signature,
        }
    }

    /// The statement, once its signature verified under `root` and it names `root` as the
    /// key it moves from.
    pub fn verify(
        &self,
        root: &TrustRoot,
    ) -> Result<(RotationStatement, PublicKey), TrustRootError> {
        let bad = TrustRootError::BadStatement;
        let current = PublicKey::from_pem(&root.public_key)
            .ok_or_else(|| bad("the trust root's public key does not parse"))?;
        self.signature
            .verify(&current, self.statement.as_bytes())
            .map_err(|_| TrustRootError::NotSignedByRoot {
                trusted: root.key_id,
            })?;
        let statement: RotationStatement =
            serde_json::from_str(&self.statement).map_err(TrustRootError::StatementJson)?;
        if statement.kind != KIND {
            return Err(bad("not a key rotation statement"));
        }
        if statement.from != root.key_id {
            return Err(TrustRootError::StaleStatement {
                from: statement.from,
                trusted: root.key_id,
            });
        }
        let new = PublicKey::from_pem(&statement.public_key)
            .ok_or_else(|| bad("its new public key does not parse"))?;
        if new.key_id() != statement.to {
            return Err(bad("its new key does not have the key id it names"));
        }
        Ok((statement, new))
    }
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    Moved,
    /// The cluster trusts the statement's new key already (a re-run).
    Already,
}

/// Applies a verified rotation: the trust root moves to the new key by compare-and-swap.
pub async fn rotate(
    etcd: &EtcdClient,
    rotation: &KeyRotation,
) -> Result<(Rotated, RotationStatement), TrustRootError> {
    let (root, revision) = read(etcd).await?.ok_or(TrustRootError::Missing)?;
    if let Ok(statement) = serde_json::from_str::<RotationStatement>(&rotation.statement) {
        if statement.to == root.key_id {
            return Ok((Rotated::Already, statement));
        }
    }
    let (statement, new) = rotation.verify(&root)?;
    let record = serde_json::to_vec(&TrustRoot::of(&new)).map_err(TrustRootError::Corrupt)?;
    if etcd
        .compare_and_swap(TRUST_ROOT_KEY, revision, &record)
        .await?
    {
        Ok((Rotated::Moved, statement))
    } else {
        Err(TrustRootError::Raced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_verifies_only_under_the_key_it_moves_from() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let root = TrustRoot::of(&old.public_key());
        let rotation = KeyRotation::sign(&old, &new.public_key(), "2026-12-06T00:00:00Z".into());
        let (statement, key) = rotation.verify(&root).unwrap();
        assert_eq!(statement.to, new.public_key().key_id());
        assert_eq!(key, new.public_key());
        // Signed by someone else.
        let forged = KeyRotation::sign(&other, &new.public_key(), "x".into());
        assert!(matches!(
            forged.verify(&root),
            Err(TrustRootError::NotSignedByRoot { .. })
        ));
        // The statement edited after signing.
        let mut edited = rotation.clone();
        edited.statement = edited.statement.replace(
            &new.public_key().key_id().to_string(),
            &other.public_key().key_id().to_string(),
        );
        assert!(edited.verify(&root).is_err());
        // Under a root that has moved on already.
        let moved = TrustRoot::of(&new.public_key());
        assert!(rotation.verify(&moved).is_err());
    }
}
