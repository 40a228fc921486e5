//! Blob replication between the registries of an HA cluster. The catalog is one (in etcd);
//! the bytes live on each node's disk. A node that is asked for a blob the catalog links but
//! its disk lacks fetches it from a peer on the spot (digest-checked, then served), and a
//! background pass keeps fetching whatever is missing, so every node ends up holding every
//! blob and losing a node loses no image. Each pass reports how many blobs are still missing
//! (to etcd, for `airgap status`).
//!
//! Requests from a peer's address are never answered by fetching from another peer: a blob
//! no node holds is a 404 after one hop, not a loop.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::store::{ImportOutcome, LayoutStore, StoreError};
use registry::client::{ClientConfig, RegistryClient, RetryPolicy};
use registry::content_digest::ContentDigest;
use registry::RegistryError;

/// How long a peer that failed is tried last.
const PEER_BACKOFF: Duration = Duration::from_secs(10);
const PASS_INTERVAL: Duration = Duration::from_secs(2);

struct Peer {
    client: RegistryClient,
    ip: Option<IpAddr>,
    failed_at: Mutex<Option<Instant>>,
}

pub struct Replication {
    peers: Vec<Peer>,
    /// Where each pass reports `{"missing": N}`.
    report: Option<(etcd::EtcdClient, String)>,
}

impl Replication {
    /// `peers` are `HOST:PORT` of the other nodes' registries, reached over TLS with `config`.
    pub fn new(
        peers: &[String],
        config: ClientConfig,
        report: Option<(etcd::EtcdClient, String)>,
    ) -> Result<Self, RegistryError> {
        let config = ClientConfig {
            // A dead peer must cost a second, not a retry ladder: the next peer has it too.
            retry: RetryPolicy {
                attempts: 1,
                first_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(100),
            },
            ..config
        };
        let peers = peers
            .iter()
            .map(|host| {
                Ok(Peer {
                    client: RegistryClient::new(host, config.clone())?,
                    ip: host
                        .rsplit_once(':')
                        .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok()),
                    failed_at: Mutex::new(None),
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        Ok(Replication { peers, report })
    }

    pub fn is_peer(&self, ip: IpAddr) -> bool {
        self.peers.iter().any(|p| p.ip == Some(ip))
    }

    /// Peers, the ones that failed recently last.
    fn ordered(&self) -> Vec<&Peer> {
        let mut peers: Vec<&Peer> = self.peers.iter().collect();
        peers.sort_by_key(|p| {
            p.failed_at
                .lock()
                .ok()
                .and_then(|f| *f)
                .is_some_and(|t| t.elapsed() < PEER_BACKOFF)
        });
        peers
    }

    /// Fetches `digest` (linked in `repo`) from the first peer that has it into `store`.
    pub async fn fetch(&self, store: &LayoutStore, repo: &str, digest: &ContentDigest) -> bool {
        let Some(sha) = digest.as_sha256() else {
            return false;
        };
        for peer in self.ordered() {
            let result = async {
                let mut download = peer
                    .client
                    .get_blob(repo, &sha, 0)
                    .await
                    .map_err(FetchFailure::Peer)?;
                store
                    .import_blob(digest, &mut download)
                    .await
                    .map_err(FetchFailure::Store)
            }
            .await;
            match result {
                Ok(ImportOutcome::Stored(bytes)) => {
                    tracing::debug!(%digest, bytes, peer = peer.client.host(), "replicated");
                    return true;
                }
                Ok(outcome) => {
                    tracing::warn!(%digest, ?outcome, peer = peer.client.host(), "peer sent a blob that does not match its digest");
                }
                Err(FetchFailure::Peer(RegistryError::BlobUnknown { .. })) => {}
                Err(e) => {
                    let error = match &e {
                        FetchFailure::Peer(e) => registry::describe_error(e),
                        FetchFailure::Store(e) => registry::describe_error(e),
                    };
                    tracing::debug!(%digest, %error, peer = peer.client.host(), "peer unreachable");
                    if let Ok(mut f) = peer.failed_at.lock() {
                        *f = Some(Instant::now());
                    }
                }
            }
        }
        false
    }

    /// Fetches whatever the catalog links and this node lacks, forever, a pass every two
    /// seconds; reports what is still missing after each pass.
    pub async fn catch_up(&self, store: &LayoutStore) {
        let mut last_report = None;
        loop {
            let missing = store.missing_blobs().await;
            let mut left = 0u64;
            for (repo, digest) in &missing {
                if !self.fetch(store, repo, digest).await {
                    left += 1;
                }
            }
            if let Some((etcd, key)) = &self.report {
                if last_report != Some(left) {
                    let body = serde_json::json!({ "missing": left }).to_string();
                    let put = etcd
                        .txn(&[], &[etcd::Op::Put(key.clone(), body.into_bytes())])
                        .await;
                    if put.is_ok() {
                        last_report = Some(left);
                    }
                }
            }
            tokio::time::sleep(PASS_INTERVAL).await;
        }
    }
}

/// Why one peer could not supply a blob: the peer, or this node's store.
enum FetchFailure {
    Peer(RegistryError),
    Store(StoreError),
}
