//! Paths of entries inside a bundle. An [`EntryPath`] can only hold a path that is safe to
//! create under any directory: relative, no `..`, no empty or `.` components, and a
//! conservative character set, so extraction by `tar xf` or by us can never escape.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest path a plain ustar header can carry (155-byte prefix + `/` + 100-byte name).
pub const MAX_PATH_LEN: usize = 256;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryPathError {
    #[error("entry path is empty")]
    Empty,
    #[error("entry path `{0}` is absolute; bundle entries must be relative")]
    Absolute(String),
    #[error("entry path `{0}` contains `..`; bundle entries may not leave the bundle")]
    ParentDir(String),
    #[error("entry path `{0}` has an empty or `.` component")]
    EmptyComponent(String),
    #[error("entry path `{0}` contains a character outside [A-Za-z0-9._+-/]")]
    BadCharacter(String),
    #[error("entry path `{0}` is longer than {MAX_PATH_LEN} bytes")]
    TooLong(String),
}

impl EntryPath {
    pub fn new(path: impl Into<String>) -> Result<Self, EntryPathError> {
        let path = path.into();
        if path.is_empty() {
            return Err(EntryPathError::Empty);
        }
        if path.starts_with('/') {
            return Err(EntryPathError::Absolute(path));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(EntryPathError::ParentDir(path));
        }
        if path.split('/').any(|c| c.is_empty() || c == ".") {
            return Err(EntryPathError::EmptyComponent(path));
        }
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'/'))
        {
            return Err(EntryPathError::BadCharacter(path));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(EntryPathError::TooLong(path));
        }
        Ok(EntryPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for EntryPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EntryPath::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_layout_paths() {
        for p in [
            "oci-layout",
            "index.json",
            "blobs/sha256/ab12",
            "bin/airgap-linux-amd64",
        ] {
            EntryPath::new(p).unwrap();
        }
    }

    #[test]
    fn refuses_escapes_and_oddities() {
        assert_eq!(EntryPath::new(""), Err(EntryPathError::Empty));
        assert!(matches!(
            EntryPath::new("/etc/passwd"),
            Err(EntryPathError::Absolute(_))
        ));
        assert!(matches!(
            EntryPath::new("a/../../b"),
            Err(EntryPathError::ParentDir(_))
        ));
        assert!(matches!(
            EntryPath::new(".."),
            Err(EntryPathError::ParentDir(_))
        ));
        assert!(matches!(
            EntryPath::new("a//b"),
            Err(EntryPathError::EmptyComponent(_))
        ));
        assert!(matches!(
            EntryPath::new("./a"),
            Err(EntryPathError::EmptyComponent(_))
        ));
        assert!(matches!(
            EntryPath::new("a/"),
            Err(EntryPathError::EmptyComponent(_))
        ));
        assert!(matches!(
            EntryPath::new("a\\b"),
            Err(EntryPathError::BadCharacter(_))
        ));
        assert!(matches!(
            EntryPath::new("a b"),
            Err(EntryPathError::BadCharacter(_))
        ));
        assert!(matches!(
            EntryPath::new("x".repeat(300)),
            Err(EntryPathError::TooLong(_))
        ));
    }
}
