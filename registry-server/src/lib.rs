//! The built-in registry: the OCI distribution API v1.1 (pull, push, referrers, and deletes
//! when enabled) over TLS, served from a verified bundle archive or a store directory whose
//! metadata lives in a local log or in etcd.
//!
//! Without an htpasswd file pulls are anonymous and pushes are refused; with one, every
//! request needs basic auth. A served archive is read-only whatever the auth.

pub mod access;
pub mod blob_store;
mod catalog;
pub mod connection;
pub mod failure_budget;
mod handlers;
pub mod htpasswd;
mod http;
mod manifest_record;
pub mod metadata;
mod metrics;
mod rate_limit;
pub mod replication;
mod router;
mod serve;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use handlers::operations::DEFAULT_GC_GRACE;
pub use htpasswd::{Htpasswd, Verdict};
pub use metadata::{EtcdMetadata, MetadataBackend, MetadataLog};
pub use serve::{bind, tls_acceptor, tls_acceptor_from_pem};
pub use store::{ArchiveStore, GcReport, LayoutStore, Store, UploadLimits};

use metrics::Metrics;
use rate_limit::RateLimit;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("TLS setup: cannot read {}", path.display())]
    TlsRead {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {what} is not PEM")]
    TlsPem {
        what: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS setup: {what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("TLS setup: {what}: no PEM private key")]
    NoKey { what: String },
    #[error("TLS setup: {what}: certificate and key do not go together")]
    TlsConfig {
        what: String,
        #[source]
        source: rustls::Error,
    },
}

pub struct Registry {
    store: Store,
    htpasswd: Option<Htpasswd>,
    /// Users who may only pull (GET and HEAD): a node runtime's login.
    pull_htpasswd: Option<Htpasswd>,
    options: RegistryOptions,
    rate_limit: Option<RateLimit>,
    gate: Arc<connection::ConnectionGate>,
    metrics: Metrics,
    replication: Option<replication::Replication>,
}

/// What a registry allows beyond pulls and pushes.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Accept `DELETE` of manifests, tags and blob links (a store directory only).
    pub deletes: bool,
    /// Requests per second one client address may make (bursts of twice that); `None`: no
    /// limit.
    pub rate_limit: Option<u32>,
    /// Handshake and header deadlines, connection caps.
    pub connections: connection::ConnectionPolicy,
}

impl Registry {
    pub fn new(store: Store, htpasswd: Option<Htpasswd>) -> Self {
        Registry::with_options(store, htpasswd, RegistryOptions::default())
    }

    pub fn with_options(
        store: Store,
        htpasswd: Option<Htpasswd>,
        options: RegistryOptions,
    ) -> Self {
        Registry {
            store,
            htpasswd,
            pull_htpasswd: None,
            rate_limit: options.rate_limit.map(RateLimit::new),
            gate: connection::ConnectionGate::new(options.connections),
            options,
            metrics: Metrics::default(),
            replication: None,
        }
    }

    /// Replicates blobs from the other nodes' registries (a store directory only).
    pub fn with_replication(mut self, replication: replication::Replication) -> Self {
        self.replication = Some(replication);
        self
    }

    /// The background catch-up of a replicating registry; returns at once otherwise.
    pub async fn replicate(self: Arc<Self>) {
        if let (Some(r), Store::Layout(layout)) = (&self.replication, &self.store) {
            r.catch_up(layout).await;
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds users who may pull but never push, delete or collect garbage (`403 DENIED`). They
    /// authenticate only where the main htpasswd applies: without one pulls are anonymous.
    pub fn with_pull_users(mut self, htpasswd: Htpasswd) -> Self {
        self.pull_htpasswd = Some(htpasswd);
        self
    }
}
