//! htpasswd files with bcrypt entries, as the distribution registry reads them. Verified
//! passwords are remembered (as a sha256 of user and password) so that clients sending basic
//! auth on every request do not pay a bcrypt round each time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} line {line}: only bcrypt entries (`user:$2y$...`) are accepted; create them with `htpasswd -B`")]
    NotBcrypt { path: PathBuf, line: usize },
    #[error("{path} holds no users")]
    Empty { path: PathBuf },
    #[error("hashing a password with bcrypt")]
    Hash(#[source] bcrypt::BcryptError),
}

#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|cause| HtpasswdError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').unwrap_or((line, ""));
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(HtpasswdError::NotBcrypt {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Checks a password (bcrypt, blocking: call from a blocking thread on a miss).
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                v.insert(key);
            }
        }
        ok
    }
}

/// One `user:bcrypt` line, for tests and the installer's generated credentials.
pub fn entry(user: &str, password: &str) -> Result<String, HtpasswdError> {
    let hash = bcrypt::hash(password, 10).map_err(HtpasswdError::Hash)?;
    Ok(format!("{user}:{hash}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bcrypt_and_refuses_other_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, entry("admin", "s3cret").unwrap()).unwrap();
        let h = Htpasswd::load(&path).unwrap();
        assert!(h.check("admin", "s3cret"));
        assert!(h.check("admin", "s3cret"), "cached path");
        assert!(!h.check("admin", "wrong"));
        assert!(!h.check("nobody", "s3cret"));
        std::fs::write(&path, "admin:{SHA}abc\n").unwrap();
        assert!(matches!(
            Htpasswd::load(&path),
            Err(HtpasswdError::NotBcrypt { line: 1, .. })
        ));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Htpasswd::load(&path),
            Err(HtpasswdError::Empty { .. })
        ));
    }
}
