//! Secret material as types: what a password, a key or a Secret's data is made of can be used
//! but never shown. `Debug` prints `[redacted]`, there is no `Display`, and the bytes are
//! zeroed when the value is dropped (`zeroize`, which the compiler may not optimise away as it
//! may a hand-written `Drop`).
//!
//! A secret leaves its type only where it must: written to a 0600 file, sealed into etcd, or
//! handed to a protocol (basic auth) through [`SecretString::expose`], so a grep for `expose`
//! lists every place a secret crosses a boundary.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A secret text: a password, a PEM private key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// A random password: 192 bits as URL-safe text (the registry's logins, etcd's users).
    pub fn random_password() -> Result<Self, getrandom::Error> {
        use base64::Engine;
        let mut bytes = Zeroizing::new([0u8; 24]);
        getrandom::getrandom(bytes.as_mut())?;
        Ok(SecretString::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
        ))
    }

    /// The text itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Secret bytes: key material, a Secret's data value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as text, when they are UTF-8 (a password stored in a Secret).
    pub fn to_secret_string(&self) -> Option<SecretString> {
        std::str::from_utf8(&self.0)
            .ok()
            .map(|s| SecretString::new(s.to_string()))
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes::new(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted; {} bytes]", self.0.len())
    }
}

/// A fixed-size key, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey<const N: usize>(Zeroizing<[u8; N]>);

impl<const N: usize> SecretKey<N> {
    pub fn new(mut bytes: [u8; N]) -> Self {
        let key = SecretKey(Zeroizing::new(bytes));
        bytes.zeroize();
        key
    }

    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for SecretKey<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted; {N}-byte key]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::new("hunter2-password".into());
        let b = SecretBytes::new(b"root-key-bytes".to_vec());
        let k = SecretKey::new([7u8; 32]);
        let shown = format!("{s:?} {b:?} {k:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("root-key"), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
        assert!(shown.contains("[redacted"), "{shown}");
        assert_eq!(s.expose(), "hunter2-password");
        assert_eq!(b.to_secret_string().unwrap().expose(), "root-key-bytes");
    }
}
