//! Digests as the distribution API sees them: sha256 (everything airgap itself writes) or
//! sha512 (what some clients push). The bundle format stays sha256-only ([`airgap::Digest`]);
//! the registry accepts both, verifies both, and stores both side by side in an OCI layout
//! (`blobs/sha256/…`, `blobs/sha512/…`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

/// A well-formed sha256 or sha512 digest, by construction. One spelling per digest:
/// `<algorithm>:<lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentDigest {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a sha256 or sha512 digest")]
pub struct ContentDigestError(pub String);

impl ContentDigest {
    pub fn algorithm(&self) -> &'static str {
        match self {
            ContentDigest::Sha256(_) => "sha256",
            ContentDigest::Sha512(_) => "sha512",
        }
    }

    pub fn hex(&self) -> String {
        match self {
            ContentDigest::Sha256(b) => hex::encode(b),
            ContentDigest::Sha512(b) => hex::encode(b),
        }
    }

    /// The layout path of the blob with this digest.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm(), self.hex())
    }

    /// The digest of `bytes` with the same algorithm as `self`.
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> ContentDigest {
        let mut h = ContentHasher::for_digest(self);
        h.update(bytes);
        h.finish()
    }

    /// The sha256 form, when this is one: what the bundle format and the seeder speak.
    pub fn as_sha256(&self) -> Option<airgap::Digest> {
        match self {
            ContentDigest::Sha256(b) => Some(airgap::Digest::from_bytes(*b)),
            ContentDigest::Sha512(_) => None,
        }
    }
}

impl From<airgap::Digest> for ContentDigest {
    fn from(d: airgap::Digest) -> Self {
        ContentDigest::Sha256(*d.as_bytes())
    }
}

fn decode_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Upper case is refused so a digest has one spelling, as in the bundle format.
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl FromStr for ContentDigest {
    type Err = ContentDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ContentDigestError(s.chars().take(140).collect());
        let (algorithm, hex) = s.split_once(':').ok_or_else(err)?;
        match algorithm {
            "sha256" => decode_lower_hex(hex)
                .map(ContentDigest::Sha256)
                .ok_or_else(err),
            "sha512" => decode_lower_hex(hex)
                .map(ContentDigest::Sha512)
                .ok_or_else(err),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ContentDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hashing in the algorithm a client named, with a byte count.
#[derive(Clone)]
pub enum ContentHasher {
    Sha256(Sha256, u64),
    Sha512(Box<Sha512>, u64),
}

impl ContentHasher {
    pub fn for_digest(d: &ContentDigest) -> Self {
        match d {
            ContentDigest::Sha256(_) => ContentHasher::Sha256(Sha256::new(), 0),
            ContentDigest::Sha512(_) => ContentHasher::Sha512(Box::new(Sha512::new()), 0),
        }
    }

    pub fn sha256() -> Self {
        ContentHasher::Sha256(Sha256::new(), 0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(h, n) => {
                h.update(bytes);
                *n += bytes.len() as u64;
            }
            ContentHasher::Sha512(h, n) => {
                h.update(bytes);
                *n += bytes.len() as u64;
            }
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            ContentHasher::Sha256(_, n) | ContentHasher::Sha512(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(self) -> ContentDigest {
        match self {
            ContentHasher::Sha256(h, _) => ContentDigest::Sha256(h.finalize().into()),
            ContentHasher::Sha512(h, _) => ContentDigest::Sha512(h.finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_algorithms_in_one_spelling() {
        let d256 = ContentDigest::Sha256([0xab; 32]);
        assert_eq!(d256.to_string().parse::<ContentDigest>().unwrap(), d256);
        let d512 = ContentDigest::Sha512([0x01; 64]);
        assert_eq!(d512.to_string().parse::<ContentDigest>().unwrap(), d512);
        assert_eq!(
            d512.blob_path(),
            format!("blobs/sha512/{}", "01".repeat(64))
        );
        for bad in [
            "sha256:AB".to_string() + &"ab".repeat(31),
            "sha512:".to_string() + &"ab".repeat(32),
            "md5:".to_string() + &"ab".repeat(16),
            "sha256".to_string(),
        ] {
            assert!(bad.parse::<ContentDigest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_in_the_named_algorithm() {
        let want512 = ContentDigest::Sha512(Sha512::digest(b"abc").into());
        assert_eq!(want512.same_algorithm_of(b"abc"), want512);
        let want256: ContentDigest = airgap::Digest::of(b"abc").into();
        assert_eq!(want256.same_algorithm_of(b"abc"), want256);
    }
}
