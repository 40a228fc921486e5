//! Join tokens, kubeadm's bootstrap tokens made stricter: `<id>.<secret>`, where etcd keeps
//! only the sha256 of the secret (a copy of etcd does not let anyone join), an expiry and a
//! use count that each join spends with a compare-and-swap (two joins racing for the last use
//! cannot both have it). What an operator copies also carries the cluster CA's pin, so the
//! joining node can refuse an impostor before it sends anything: `ID.SECRET@sha256:PIN`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::pin::CaPin;
use crate::etcd::client::{EtcdClient, EtcdError};
use crate::secret::SecretString;
use etcd::{Compare, Op};

pub const TOKENS_PREFIX: &str = "/airgap/cluster/tokens/";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not ID.SECRET@sha256:PIN (as `airgap token create` prints it)")]
    Malformed,
    #[error("no join token {id} in the cluster (deleted, or never created)")]
    Unknown { id: String },
    #[error("join token {id} expired at {expired}")]
    Expired { id: String, expired: String },
    #[error("join token {id} has been used as many times as it allows ({uses})")]
    UsedUp { id: String, uses: u32 },
    #[error("join token {id}: the secret does not match")]
    WrongSecret { id: String },
    #[error("join token record {key} in etcd is not valid")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// A token as the joining node holds it: the id names the record, the secret proves it.
#[derive(Debug, Clone)]
pub struct JoinToken {
    pub id: String,
    pub secret: SecretString,
}

/// What etcd stores about a token: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRecord {
    pub secret_sha256: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub expires: u64,
    pub uses: u32,
    pub uses_left: u32,
}

/// A token as `token list` shows it.
#[derive(Debug, Clone)]
pub struct ListedToken {
    pub id: String,
    pub record: TokenRecord,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // An OS without a random source cannot make tokens at all; a fixed value would be worse.
    getrandom::getrandom(&mut buf).expect("the operating system's random source");
    hex::encode(buf)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl JoinToken {
    fn generate() -> Self {
        JoinToken {
            id: random_hex(3),
            secret: SecretString::new(random_hex(16)),
        }
    }

    /// `ID.SECRET@sha256:PIN`, as printed by `token create`.
    pub fn parse(text: &str) -> Result<(JoinToken, CaPin), TokenError> {
        let (token, pin) = text.trim().split_once('@').ok_or(TokenError::Malformed)?;
        let (id, secret) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let hexish =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hexish(id, 6) || !hexish(secret, 32) {
            return Err(TokenError::Malformed);
        }
        let pin = CaPin::parse(pin).ok_or(TokenError::Malformed)?;
        Ok((
            JoinToken {
                id: id.to_ascii_lowercase(),
                secret: SecretString::new(secret.to_ascii_lowercase()),
            },
            pin,
        ))
    }

    /// The whole string an operator passes to `airgap join --token`.
    pub fn with_pin(&self, pin: &CaPin) -> SecretString {
        SecretString::new(format!("{}.{}@{pin}", self.id, self.secret.expose()))
    }
}

impl fmt::Display for ListedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  expires {}  uses left {}/{}",
            self.id,
            rfc3339(self.record.expires),
            self.record.uses_left,
            self.record.uses
        )
    }
}

fn key(id: &str) -> String {
    format!("{TOKENS_PREFIX}{id}")
}

fn parse_record(key: &str, bytes: &[u8]) -> Result<TokenRecord, TokenError> {
    serde_json::from_slice(bytes).map_err(|source| TokenError::Record {
        key: key.to_string(),
        source,
    })
}

/// Creates a token valid for `ttl` and `uses` joins (create-only: an id is never reused).
pub async fn create(etcd: &EtcdClient, ttl: Duration, uses: u32) -> Result<JoinToken, TokenError> {
    loop {
        let token = JoinToken::generate();
        let now = unix_now();
        let record = TokenRecord {
            secret_sha256: secret_hash(token.secret.expose()),
            created: now,
            expires: now + ttl.as_secs().max(1),
            uses,
            uses_left: uses,
        };
        let bytes = serde_json::to_vec(&record).map_err(|source| TokenError::Record {
            key: key(&token.id),
            source,
        })?;
        if etcd.create(&key(&token.id), &bytes).await? == etcd::Create::Created {
            return Ok(token);
        }
    }
}

pub async fn list(etcd: &EtcdClient) -> Result<Vec<ListedToken>, TokenError> {
    let (kvs, _) = etcd.range_prefix(TOKENS_PREFIX).await?;
    kvs.into_iter()
        .map(|(k, value)| {
            Ok(ListedToken {
                id: k.trim_start_matches(TOKENS_PREFIX).to_string(),
                record: parse_record(&k, &value)?,
            })
        })
        .collect()
}

/// Deletes token `id`; whether it existed.
pub async fn delete(etcd: &EtcdClient, id: &str) -> Result<bool, TokenError> {
    let existed = etcd.get(&key(id)).await?.is_some();
    etcd.delete(&key(id)).await?;
    Ok(existed)
}

/// Checks `token` without spending it: it exists, has not expired, has a use left, and the
/// secret hashes to what was stored. Compared in constant time.
pub async fn check(etcd: &EtcdClient, token: &JoinToken) -> Result<(TokenRecord, i64), TokenError> {
    let k = key(&token.id);
    let unknown = || TokenError::Unknown {
        id: token.id.clone(),
    };
    let kv = etcd.get(&k).await?.ok_or_else(unknown)?;
    let record = parse_record(&k, &kv.value)?;
    let offered = secret_hash(token.secret.expose());
    let same = offered.len() == record.secret_sha256.len()
        && offered
            .bytes()
            .zip(record.secret_sha256.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::WrongSecret {
            id: token.id.clone(),
        });
    }
    if unix_now() >= record.expires {
        return Err(TokenError::Expired {
            id: token.id.clone(),
            expired: rfc3339(record.expires),
        });
    }
    if record.uses_left == 0 {
        return Err(TokenError::UsedUp {
            id: token.id.clone(),
            uses: record.uses,
        });
    }
    Ok((record, kv.mod_revision))
}

/// Spends one use of `token` (checked again, then a compare-and-swap on the record's
/// revision: a concurrent join that spent it first makes this one check again).
pub async fn redeem(etcd: &EtcdClient, token: &JoinToken) -> Result<(), TokenError> {
    loop {
        let (mut record, revision) = check(etcd, token).await?;
        record.uses_left -= 1;
        let k = key(&token.id);
        let bytes = serde_json::to_vec(&record).map_err(|source| TokenError::Record {
            key: k.clone(),
            source,
        })?;
        if etcd
            .txn(
                &[Compare::ModRevision(k.clone(), revision)],
                &[Op::Put(k, bytes)],
            )
            .await?
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_token_parses_back() {
        let token = JoinToken::generate();
        let pin = CaPin::of_der(b"a CA certificate");
        let text = token.with_pin(&pin);
        let (parsed, parsed_pin) = JoinToken::parse(text.expose()).unwrap();
        assert_eq!(parsed.id, token.id);
        assert_eq!(parsed.secret.expose(), token.secret.expose());
        assert_eq!(parsed_pin, pin);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let pin = CaPin::of_der(b"x").to_string();
        for bad in [
            "".to_string(),
            "abcdef.0123456789abcdef0123456789abcdef".to_string(),
            format!("abcdef@{pin}"),
            format!("abcde.0123456789abcdef0123456789abcdef@{pin}"),
            format!("abcdef.0123456789abcdef0123456789abcdeg@{pin}"),
            "abcdef.0123456789abcdef0123456789abcdef@sha256:00".to_string(),
        ] {
            assert!(
                matches!(JoinToken::parse(&bad), Err(TokenError::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_stored_record_holds_no_secret() {
        let token = JoinToken::generate();
        let record = TokenRecord {
            secret_sha256: secret_hash(token.secret.expose()),
            created: 1,
            expires: 2,
            uses: 1,
            uses_left: 1,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(token.secret.expose()));
    }
}
