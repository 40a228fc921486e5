//! The etcd metadata backend: every [`Change`] is a key under `/airgap/registry/repos/`,
//! laid out as distribution lays out its files:
//!
//! ```text
//! /airgap/registry/repos/<repository>/_blobs/<digest>      ""            (a link)
//! /airgap/registry/repos/<repository>/_manifests/<digest>  ManifestRecord (JSON)
//! /airgap/registry/repos/<repository>/_tags/<tag>          <digest>
//! ```
//!
//! (A repository path component starts with a letter or digit, so `_blobs` and friends can
//! never be part of a name.) A manifest is written in one transaction that compares every
//! blob and child it references as still present, so two nodes can never store a manifest
//! whose blob another node has just unlinked. Each node follows the prefix with a watch
//! (re-reading everything when the watch is lost) so its in-memory catalog converges.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::etcd::{Compare, EtcdClient, Op, WatchEvent};
use tokio::sync::RwLock;

use super::{BoxFuture, MetadataBackend, MetadataError, Requirement};
use crate::catalog::{Catalog, Change};
use registry::content_digest::ContentDigest;

pub const PREFIX: &str = "/airgap/registry/repos/";

pub struct EtcdMetadata {
    client: EtcdClient,
    /// The revision the last full read saw: a watch starts after it.
    revision: AtomicI64,
    /// The newest revision a commit of this node wrote. A full read older than it lacks that
    /// write, which this node's catalog already shows: swapping it in would hide the write
    /// until the watch replays it (a manifest pushed meanwhile would find its blob unknown).
    committed: AtomicI64,
}

fn blob_key(repo: &str, d: &ContentDigest) -> String {
    format!("{PREFIX}{repo}/_blobs/{d}")
}
fn manifest_key(repo: &str, d: &ContentDigest) -> String {
    format!("{PREFIX}{repo}/_manifests/{d}")
}
fn tag_key(repo: &str, tag: &str) -> String {
    format!("{PREFIX}{repo}/_tags/{tag}")
}

/// The key write of a change.
fn op(change: &Change) -> Result<Op, MetadataError> {
    Ok(match change {
        Change::LinkBlob { repo, digest } => Op::Put(blob_key(repo, digest), Vec::new()),
        Change::UnlinkBlob { repo, digest } => Op::Delete(blob_key(repo, digest)),
        Change::PutManifest {
            repo,
            digest,
            record,
        } => Op::Put(
            manifest_key(repo, digest),
            serde_json::to_vec(record).map_err(|cause| MetadataError::BadRecord {
                key: manifest_key(repo, digest),
                cause,
            })?,
        ),
        Change::DeleteManifest { repo, digest } => Op::Delete(manifest_key(repo, digest)),
        Change::Tag { repo, tag, digest } => {
            Op::Put(tag_key(repo, tag), digest.to_string().into_bytes())
        }
        Change::Untag { repo, tag } => Op::Delete(tag_key(repo, tag)),
    })
}

/// The change a key write stands for; `None` (with `value` None) for a deletion.
fn change(key: &str, value: Option<&[u8]>) -> Result<Change, MetadataError> {
    let bad = |reason: &'static str| MetadataError::BadKey {
        key: key.to_string(),
        reason,
    };
    let rest = key
        .strip_prefix(PREFIX)
        .ok_or_else(|| bad("outside the prefix"))?;
    let digest = |s: &str| {
        s.parse::<ContentDigest>()
            .map_err(|cause| MetadataError::BadKeyDigest {
                key: key.to_string(),
                cause,
            })
    };
    if let Some((repo, d)) = rest.rsplit_once("/_blobs/") {
        let (repo, digest) = (repo.to_string(), digest(d)?);
        return Ok(match value {
            Some(_) => Change::LinkBlob { repo, digest },
            None => Change::UnlinkBlob { repo, digest },
        });
    }
    if let Some((repo, d)) = rest.rsplit_once("/_manifests/") {
        let (repo, digest) = (repo.to_string(), digest(d)?);
        return Ok(match value {
            Some(v) => Change::PutManifest {
                repo,
                digest,
                record: serde_json::from_slice(v).map_err(|cause| MetadataError::BadRecord {
                    key: key.to_string(),
                    cause,
                })?,
            },
            None => Change::DeleteManifest { repo, digest },
        });
    }
    if let Some((repo, tag)) = rest.rsplit_once("/_tags/") {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        return Ok(match value {
            Some(v) => Change::Tag {
                repo,
                tag,
                digest: digest(std::str::from_utf8(v).map_err(|_| bad("not UTF-8"))?)?,
            },
            None => Change::Untag { repo, tag },
        });
    }
    Err(bad("not a blob, manifest or tag key"))
}

impl EtcdMetadata {
    pub fn new(client: EtcdClient) -> Self {
        EtcdMetadata {
            client,
            revision: AtomicI64::new(0),
            committed: AtomicI64::new(0),
        }
    }

    /// Everything under the prefix, and the revision it was read at.
    async fn read_all(&self) -> Result<(Catalog, i64), MetadataError> {
        let (kvs, revision) = self.client.range_prefix(PREFIX).await?;
        let mut catalog = Catalog::default();
        let mut changes = Vec::with_capacity(kvs.len());
        for (key, value) in &kvs {
            changes.push(change(key, Some(value))?);
        }
        // Children before indexes does not matter to the catalog; links and manifests in any
        // order converge to the same state.
        for c in &changes {
            catalog.apply(c);
        }
        Ok((catalog, revision))
    }

    /// Reads everything again and swaps it in, once the read is at least as new as every
    /// commit of this node; the watch then resumes after it.
    async fn reread(&self, catalog: &RwLock<Catalog>) -> Result<(), MetadataError> {
        loop {
            let (fresh, revision) = self.read_all().await?;
            // Under the lock: a commit applied to the catalog before this point has stored
            // its revision already; one applied after lands on the fresh catalog.
            let mut current = catalog.write().await;
            if revision >= self.committed.load(Ordering::SeqCst) {
                *current = fresh;
                self.revision.store(revision, Ordering::SeqCst);
                return Ok(());
            }
        }
    }

    async fn watch_once(&self, catalog: &RwLock<Catalog>) -> Result<(), MetadataError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let from = self.revision.load(Ordering::SeqCst) + 1;
        let client = self.client.clone();
        let watch = tokio::spawn(async move { client.watch_prefix(PREFIX, from, tx).await });
        while let Some(batch) = rx.recv().await {
            let mut changes = Vec::with_capacity(batch.events.len());
            for e in &batch.events {
                changes.push(match e {
                    WatchEvent::Put { key, value } => change(key, Some(value))?,
                    WatchEvent::Delete { key } => change(key, None)?,
                });
            }
            let mut c = catalog.write().await;
            for ch in &changes {
                c.apply(ch);
            }
            self.revision.store(batch.revision, Ordering::SeqCst);
        }
        watch
            .await
            .map_err(MetadataError::WatchStopped)?
            .map_err(MetadataError::from)
    }
}

impl MetadataBackend for EtcdMetadata {
    fn describe(&self) -> String {
        format!("etcd at {}", self.client.endpoint())
    }

    fn load(&self) -> BoxFuture<'_, Result<Catalog, MetadataError>> {
        Box::pin(async move {
            let (catalog, revision) = self.read_all().await?;
            self.revision.store(revision, Ordering::SeqCst);
            Ok(catalog)
        })
    }

    fn commit<'a>(
        &'a self,
        batch: &'a [Change],
        requires: &'a [Requirement],
    ) -> BoxFuture<'a, Result<bool, MetadataError>> {
        Box::pin(async move {
            let compares: Vec<Compare> = requires
                .iter()
                .map(|r| match r {
                    Requirement::Blob(repo, d) => Compare::Exists(blob_key(repo, d)),
                    Requirement::Manifest(repo, d) => Compare::Exists(manifest_key(repo, d)),
                })
                .collect();
            let ops = batch.iter().map(op).collect::<Result<Vec<_>, _>>()?;
            let Some(revision) = self.client.txn_at(&compares, &ops).await? else {
                return Ok(false);
            };
            self.committed.fetch_max(revision, Ordering::SeqCst);
            Ok(true)
        })
    }

    fn follow(self: Arc<Self>, catalog: Arc<RwLock<Catalog>>) {
        tokio::spawn(async move {
            loop {
                match self.watch_once(&catalog).await {
                    Ok(()) => tracing::debug!("registry metadata watch ended; watching again"),
                    Err(e) => {
                        tracing::warn!(error = %e, "registry metadata watch lost; re-reading");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Err(e) = self.reread(&catalog).await {
                            tracing::warn!(error = %e, "re-reading registry metadata");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest_record::ManifestRecord;

    #[test]
    fn every_change_round_trips_through_its_key() {
        let d = ContentDigest::Sha256([7; 32]);
        let record = ManifestRecord {
            media_type: airgap::oci::OCI_MANIFEST.into(),
            size: 3,
            blobs: vec![d],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        let repo = "mirror/registry.k8s.io/pause".to_string();
        for ch in [
            Change::LinkBlob {
                repo: repo.clone(),
                digest: d,
            },
            Change::UnlinkBlob {
                repo: repo.clone(),
                digest: d,
            },
            Change::PutManifest {
                repo: repo.clone(),
                digest: d,
                record,
            },
            Change::DeleteManifest {
                repo: repo.clone(),
                digest: d,
            },
            Change::Tag {
                repo: repo.clone(),
                tag: "3.9".into(),
                digest: d,
            },
            Change::Untag {
                repo: repo.clone(),
                tag: "3.9".into(),
            },
        ] {
            let back = match op(&ch).unwrap() {
                Op::Put(k, v) => change(&k, Some(&v)).unwrap(),
                Op::Delete(k) => change(&k, None).unwrap(),
            };
            assert_eq!(back, ch);
        }
        assert!(change("/airgap/registry/repos/a/_other/x", None).is_err());
    }
}
