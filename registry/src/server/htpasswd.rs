//! htpasswd files with bcrypt entries, as the distribution registry reads them.
//!
//! bcrypt is slow on purpose (~50 ms at cost 10), so the server never runs it on its async
//! workers: a flood of wrong passwords would stall every request. [`Htpasswd::authenticate`]
//! answers from two caches first, verified passwords (clients send basic auth on every
//! request) and, for a few seconds, refused ones (a client retrying a wrong password); only a
//! miss runs bcrypt, on the blocking pool, at most [`MAX_CONCURRENT_CHECKS`] at a time. Cache
//! keys are a sha256 of user, password and hash, never the password itself.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// bcrypt checks running at once; more wait (asynchronously) for a turn. Two keeps a flood of
/// wrong passwords to two cores' worth of work and leaves the rest to serving.
pub const MAX_CONCURRENT_CHECKS: usize = 2;
/// How long a refused password is answered from memory.
const REFUSED_FOR: Duration = Duration::from_secs(5);
/// Bound on remembered refusals, so a flood of distinct passwords cannot grow memory.
const MAX_REFUSED: usize = 4096;

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

type CacheKey = [u8; 32];

#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, Arc<str>>,
    verified: Mutex<HashSet<CacheKey>>,
    refused: Mutex<HashMap<CacheKey, Instant>>,
    checks: Semaphore,
    bcrypt_runs: AtomicU64,
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
            users.insert(user.to_string(), Arc::from(hash));
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashMap::new()),
            checks: Semaphore::new(MAX_CONCURRENT_CHECKS),
            bcrypt_runs: AtomicU64::new(0),
        })
    }

    /// Whether `password` is `user`'s, without caches: blocking, for callers that are not
    /// serving (the installer checking the credentials it generated).
    pub fn matches(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|hash| self.run_bcrypt(password, hash))
    }

    /// The server's check: cached answers first, bcrypt on the blocking pool on a miss.
    pub async fn authenticate(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user).cloned() else {
            return false;
        };
        let key = cache_key(user, password, &hash);
        if let Some(known) = self.cached(&key) {
            return known;
        }
        let Ok(_turn) = self.checks.acquire().await else {
            return false;
        };
        // Another request may have settled the same password while this one waited.
        if let Some(known) = self.cached(&key) {
            return known;
        }
        let password = zeroize::Zeroizing::new(password.to_string());
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || bcrypt_verify(&password, &hash));
        // A panicked check is a refusal, and is not remembered.
        let Ok(ok) = check.await else {
            return false;
        };
        self.remember(key, ok);
        ok
    }

    /// How many times bcrypt has run: what the caches saved is visible to tests and operators.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    fn run_bcrypt(&self, password: &str, hash: &str) -> bool {
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        bcrypt_verify(password, hash)
    }

    fn cached(&self, key: &CacheKey) -> Option<bool> {
        if self.verified.lock().is_ok_and(|v| v.contains(key)) {
            return Some(true);
        }
        let mut refused = self.refused.lock().ok()?;
        match refused.get(key) {
            Some(at) if at.elapsed() < REFUSED_FOR => Some(false),
            Some(_) => {
                refused.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: CacheKey, ok: bool) {
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                v.insert(key);
            }
            return;
        }
        if let Ok(mut refused) = self.refused.lock() {
            if refused.len() >= MAX_REFUSED {
                refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
                if refused.len() >= MAX_REFUSED {
                    refused.clear();
                }
            }
            refused.insert(key, Instant::now());
        }
    }
}

fn bcrypt_verify(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

fn cache_key(user: &str, password: &str, hash: &str) -> CacheKey {
    Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .chain_update([0])
        .chain_update(hash.as_bytes())
        .finalize()
        .into()
}

/// One `user:bcrypt` line, for tests and the installer's generated credentials.
pub fn entry(user: &str, password: &str) -> Result<String, HtpasswdError> {
    let hash = bcrypt::hash(password, 10).map_err(HtpasswdError::Hash)?;
    Ok(format!("{user}:{hash}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, entries: &str) -> Result<Htpasswd, HtpasswdError> {
        let path = dir.join("htpasswd");
        std::fs::write(&path, entries).unwrap();
        Htpasswd::load(&path)
    }

    #[tokio::test]
    async fn checks_bcrypt_remembers_answers_and_refuses_other_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let h = load(dir.path(), &entry("admin", "s3cret").unwrap()).unwrap();
        assert!(h.authenticate("admin", "s3cret").await);
        assert!(h.authenticate("admin", "s3cret").await);
        assert_eq!(h.bcrypt_runs(), 1, "a verified password is remembered");
        assert!(!h.authenticate("admin", "wrong").await);
        assert!(!h.authenticate("admin", "wrong").await);
        assert_eq!(h.bcrypt_runs(), 2, "a refused password is remembered");
        assert!(!h.authenticate("nobody", "s3cret").await);
        assert!(!h.authenticate("admin", "").await);
        assert!(h.matches("admin", "s3cret") && !h.matches("admin", "wrong"));
        assert!(matches!(
            load(dir.path(), "admin:{SHA}abc\n"),
            Err(HtpasswdError::NotBcrypt { line: 1, .. })
        ));
        assert!(matches!(
            load(dir.path(), "\n"),
            Err(HtpasswdError::Empty { .. })
        ));
    }

    /// On one async thread, as a flood would leave a busy server: bcrypt must not run there,
    /// or the known login below would wait behind every wrong password.
    #[tokio::test(flavor = "current_thread")]
    async fn a_flood_of_wrong_passwords_does_not_stall_a_known_login() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(load(dir.path(), &entry("admin", "s3cret").unwrap()).unwrap());
        assert!(h.authenticate("admin", "s3cret").await);
        const FLOOD: usize = 16;
        let done = Arc::new(AtomicU64::new(0));
        let flood: Vec<_> = (0..FLOOD)
            .map(|i| {
                let (h, done) = (h.clone(), done.clone());
                tokio::spawn(async move {
                    assert!(!h.authenticate("admin", &format!("guess-{i}")).await);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Let every flood task start and queue its check.
        while h.bcrypt_runs() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(h.authenticate("admin", "s3cret").await);
        let finished = done.load(Ordering::SeqCst) as usize;
        assert!(
            finished < FLOOD / 2,
            "the known login waited for {finished} of {FLOOD} wrong-password checks"
        );
        for task in flood {
            task.await.unwrap();
        }
        assert_eq!(h.bcrypt_runs(), 1 + FLOOD as u64);
    }
}
