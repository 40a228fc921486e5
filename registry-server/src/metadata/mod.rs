//! Where the built-in registry's metadata (repositories, tags, manifest and blob links) is
//! made durable. Blobs are always files in the store directory; their metadata goes to one of
//! two backends behind [`MetadataBackend`]:
//!
//! * [`MetadataLog`], for `airgap registry serve DIR`: an append-only log of [`Change`]
//!   batches in the directory, so a push costs one append whatever the store's size;
//! * [`EtcdMetadata`], for installed nodes (which always run etcd): the same changes as keys in
//!   etcd, written in transactions that re-check what a manifest references, and followed by
//!   every node through a watch, so every node's registry shows one catalog.
//!
//! Either way the registry serves reads from an in-memory [`Catalog`] that changes only by
//! applying the same [`Change`]s the backend stores.

mod etcd;
mod log;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::RwLock;

pub use self::etcd::EtcdMetadata;
pub use self::log::MetadataLog;
use super::catalog::{Catalog, Change};
use registry::content_digest::ContentDigest;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} line {line} is not a metadata record")]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        cause: serde_json::Error,
    },
    #[error("registry metadata in etcd: {0}")]
    Etcd(#[from] ::etcd::EtcdError),
    #[error("registry metadata key {key} in etcd: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("registry metadata key {key} in etcd names no valid digest")]
    BadKeyDigest {
        key: String,
        #[source]
        cause: registry::content_digest::ContentDigestError,
    },
    #[error("registry metadata record {key} in etcd")]
    BadRecord {
        key: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("the registry metadata watch stopped")]
    WatchStopped(#[source] tokio::task::JoinError),
}

/// Something a write depends on: the write happens only if it still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A blob linked into a repository (a manifest's config or layer).
    Blob(String, ContentDigest),
    /// A manifest stored in a repository (an index's child).
    Manifest(String, ContentDigest),
}

/// Metadata that lives only as long as the process: the in-memory store's, for tests. The
/// layout store checks requirements under its own lock, so every batch is accepted.
#[derive(Debug, Default)]
pub struct MemoryMetadata;

impl MetadataBackend for MemoryMetadata {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<Catalog, MetadataError>> {
        Box::pin(async { Ok(Catalog::default()) })
    }

    fn commit<'a>(
        &'a self,
        _batch: &'a [Change],
        _requires: &'a [Requirement],
    ) -> BoxFuture<'a, Result<bool, MetadataError>> {
        Box::pin(async { Ok(true) })
    }
}

pub trait MetadataBackend: Send + Sync {
    /// Where the metadata lives, for logs and errors.
    fn describe(&self) -> String;

    /// Everything stored, as a catalog.
    fn load(&self) -> BoxFuture<'_, Result<Catalog, MetadataError>>;

    /// Makes `batch` durable, all or nothing, provided everything in `requires` still exists
    /// (`Ok(false)` and nothing written otherwise). Batches of blob links alone may be made
    /// durable later than they return: losing one costs a client a re-upload, never a
    /// manifest whose blob is gone, because a manifest's batch is durable before it returns
    /// and carries its blobs' links with it.
    fn commit<'a>(
        &'a self,
        batch: &'a [Change],
        requires: &'a [Requirement],
    ) -> BoxFuture<'a, Result<bool, MetadataError>>;

    /// Keeps `catalog` up to date with changes other writers (other nodes) make. The local
    /// log has no other writers.
    fn follow(self: Arc<Self>, _catalog: Arc<RwLock<Catalog>>) {}
}
