//! htpasswd files with bcrypt entries, as the distribution registry reads them.
//!
//! bcrypt is slow on purpose (~50 ms at cost 10), so the server never runs it on its async
//! workers: a flood of wrong passwords would stall every request. [`Htpasswd::authenticate`]
//! answers from two caches first, verified passwords (clients send basic auth on every
//! request) and, for a few seconds, refused ones (a client retrying a wrong password); only a
//! miss runs bcrypt, on the blocking pool, at most [`MAX_CONCURRENT_CHECKS`] at a time. Cache
//! keys are a sha256 of user, password and hash, never the password itself.
//!
//! Bounds, so a flood costs its sender: at most [`MAX_WAITING`] checks wait for a turn (more
//! are answered "busy", 429), an address that failed [`FAILURE_BUDGET`] times within
//! [`FAILURE_WINDOW`] is answered "busy" without any bcrypt until the window passes, and an
//! unknown user costs the same bcrypt as a known one (against a hash made at load), so the
//! time to an answer does not tell which users exist.

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
/// Checks that may wait for a turn; past this the answer is "busy".
pub const MAX_WAITING: usize = 32;
/// Checks one address may have waiting or running at once: a flood from one address never
/// fills the queue others need.
pub const MAX_WAITING_PER_ADDRESS: usize = 4;
/// Failed checks one address may cause within [`FAILURE_WINDOW`].
pub const FAILURE_BUDGET: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
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

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
    /// Too many checks waiting, or this address spent its failure budget: retry later.
    Busy,
}

#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, Arc<str>>,
    /// What an unknown user's password is checked against: the same work as a known one.
    decoy: Arc<str>,
    waiting: std::sync::atomic::AtomicUsize,
    failures: super::failure_budget::FailureBudget,
    pending: Mutex<HashMap<std::net::IpAddr, usize>>,
    inflight: Mutex<HashMap<CacheKey, Arc<tokio::sync::OnceCell<Option<bool>>>>>,
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
        // The decoy has the cost of a real entry, so an unknown user takes as long.
        let cost = users
            .values()
            .next()
            .and_then(|h: &Arc<str>| h.get(4..6))
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(10);
        let decoy: Arc<str> = Arc::from(
            bcrypt::hash(format!("{:?}", Instant::now()), cost)
                .map_err(HtpasswdError::Hash)?
                .as_str(),
        );
        Ok(Htpasswd {
            users,
            decoy,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            failures: super::failure_budget::FailureBudget::new(FAILURE_BUDGET, FAILURE_WINDOW),
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
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

    /// Whether the file names `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The check without a client address (no failure budget), as a yes or no.
    pub async fn authenticate(&self, user: &str, password: &str) -> bool {
        self.check(user, password, None).await == Verdict::Accepted
    }

    /// The server's check for a request from `client`: a remembered answer, else (unless the
    /// address spent its failure budget) bcrypt on the blocking pool, an unknown user against
    /// the decoy.
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Verdict {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let key = cache_key(user, password, &hash);
        // A remembered answer costs nothing: a client whose login verified keeps working even
        // from an address that also sent wrong passwords.
        let verdict = match self.cached(&key) {
            Some(known_answer) => known_answer && known,
            None if client.is_some_and(|ip| self.failures.spent(ip)) => return Verdict::Busy,
            None => {
                // Identical checks in flight share one bcrypt: fifty clients logging in with
                // the same password at once cost one check and one place in the queue.
                let cell = self.inflight_cell(key);
                let outcome = *cell
                    .get_or_init(|| async {
                        let _slot = self.pending_slot(client)?;
                        self.run_queued(key, password, hash).await
                    })
                    .await;
                self.inflight_done(key, &cell);
                match outcome {
                    Some(ok) => ok && known,
                    None => return Verdict::Busy,
                }
            }
        };
        if verdict {
            Verdict::Accepted
        } else {
            if let Some(ip) = client {
                self.failures.failed(ip);
            }
            Verdict::Refused
        }
    }

    /// bcrypt in its turn; `None` when too many are waiting already.
    async fn run_queued(&self, key: CacheKey, password: &str, hash: Arc<str>) -> Option<bool> {
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let waiting = Waiting(&self.waiting);
        let Ok(_turn) = self.checks.acquire().await else {
            return Some(false);
        };
        drop(waiting);
        // Another request may have settled the same password while this one waited.
        if let Some(known) = self.cached(&key) {
            return Some(known);
        }
        let password = zeroize::Zeroizing::new(password.to_string());
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || bcrypt_verify(&password, &hash));
        // A panicked check is a refusal, and is not remembered.
        let Ok(ok) = check.await else {
            return Some(false);
        };
        self.remember(key, ok);
        Some(ok)
    }

    fn inflight_cell(&self, key: CacheKey) -> Arc<tokio::sync::OnceCell<Option<bool>>> {
        match self.inflight.lock() {
            Ok(mut m) => m.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Forgets a settled check (its answer is in the caches now, or it was "busy" and the
    /// next attempt runs afresh).
    fn inflight_done(&self, key: CacheKey, cell: &Arc<tokio::sync::OnceCell<Option<bool>>>) {
        if let Ok(mut m) = self.inflight.lock() {
            if m.get(&key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                m.remove(&key);
            }
        }
    }

    /// A place among `client`'s checks in flight, freed on drop; `None` when it has its
    /// share already.
    fn pending_slot(&self, client: Option<std::net::IpAddr>) -> Option<PendingSlot<'_>> {
        let Some(ip) = client else {
            return Some(PendingSlot {
                owner: self,
                ip: None,
            });
        };
        let mut pending = self.pending.lock().ok()?;
        let n = pending.entry(ip).or_insert(0);
        if *n >= MAX_WAITING_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            owner: self,
            ip: Some(ip),
        })
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

struct PendingSlot<'a> {
    owner: &'a Htpasswd,
    ip: Option<std::net::IpAddr>,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        if let Ok(mut pending) = self.owner.pending.lock() {
            if let Some(n) = pending.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&ip);
                }
            }
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
        assert_eq!(h.bcrypt_runs(), 3, "an unknown user costs a bcrypt too");
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

    #[tokio::test]
    async fn an_address_that_spends_its_failure_budget_is_told_busy_without_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let h = load(dir.path(), &entry("admin", "s3cret").unwrap()).unwrap();
        let attacker: std::net::IpAddr = "10.0.0.9".parse().unwrap();
        let other: std::net::IpAddr = "10.0.0.10".parse().unwrap();
        for i in 0..FAILURE_BUDGET {
            let v = h
                .check("admin", &format!("guess-{i}"), Some(attacker))
                .await;
            assert_eq!(v, Verdict::Refused);
        }
        let runs = h.bcrypt_runs();
        assert_eq!(
            h.check("admin", "s3cret", Some(attacker)).await,
            Verdict::Busy
        );
        assert_eq!(
            h.check("admin", "guess-x", Some(attacker)).await,
            Verdict::Busy
        );
        assert_eq!(h.bcrypt_runs(), runs, "a spent budget runs no bcrypt");
        assert_eq!(
            h.check("admin", "s3cret", Some(other)).await,
            Verdict::Accepted
        );
        // Once verified (from elsewhere), the login is remembered and works from there too.
        assert_eq!(
            h.check("admin", "s3cret", Some(attacker)).await,
            Verdict::Accepted
        );
    }

    /// An unknown user is answered no sooner than a known one with a wrong password.
    #[tokio::test]
    async fn an_unknown_user_takes_as_long_as_a_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let h = load(dir.path(), &entry("admin", "s3cret").unwrap()).unwrap();
        let time = |user: &'static str, password: &'static str| {
            let h = &h;
            async move {
                let started = Instant::now();
                assert!(!h.authenticate(user, password).await);
                started.elapsed()
            }
        };
        let known = time("admin", "wrong-1").await;
        let unknown = time("nobody", "wrong-2").await;
        assert!(
            unknown * 3 > known,
            "unknown user {unknown:?} vs known user {known:?}"
        );
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
