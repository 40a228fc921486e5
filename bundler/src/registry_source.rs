//! OCI registries as image and pack sources: one client per registry host, configured from
//! `spec.registries` (CA, plain HTTP) and the standard auth files; manifests fetched and
//! checked up front (an index only down to the platforms the bundle keeps), blobs streamed
//! later by [`fetch_blob`] straight into the cache and the bundle.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use airgap::assembly::EntrySlot;
use airgap::oci::{
    self, Descriptor, ImageIndex, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use airgap::{Digest, ImageReference};
use registry::auth::AuthFile;
use registry::client::{ClientConfig, RegistryClient, RegistryError};

use crate::cache::{CacheError, PendingBlob};
use crate::spec::RegistrySettings;

/// Everything a pull may be served as, best first.
pub const MANIFEST_ACCEPT: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{reference}: {cause}")]
    Registry {
        reference: String,
        cause: RegistryError,
    },
    #[error(
        "{reference}: not found: {host} has no manifest `{wanted}` in repository {repository}"
    )]
    NotFound {
        reference: String,
        host: String,
        repository: String,
        wanted: String,
    },
    #[error("{reference}: {message}")]
    Content { reference: String, message: String },
    #[error("{reference}: blob {digest} from {host} does not match its digest (the content hashes to {actual}); refusing it")]
    Corrupt {
        reference: String,
        host: String,
        digest: Digest,
        actual: Digest,
    },
    #[error("spec.registries: {host}: {cause}")]
    Settings { host: String, cause: RegistryError },
    #[error(transparent)]
    AuthFile(#[from] registry::auth::AuthFileError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{reference}: writing blob {digest}")]
    Write {
        reference: String,
        digest: Digest,
        #[source]
        cause: std::io::Error,
    },
}

/// The host a registry's API answers on: Docker Hub's name is not its API host.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// One client per registry host, shared by every image and blob from it.
pub struct Registries {
    clients: HashMap<String, Arc<RegistryClient>>,
    settings: Vec<RegistrySettings>,
    auth: AuthFile,
    base: std::path::PathBuf,
}

impl Registries {
    /// `base` resolves relative CA paths (the spec's directory).
    pub fn new(settings: &[RegistrySettings], base: &Path) -> Result<Self, FetchError> {
        Ok(Registries {
            clients: HashMap::new(),
            settings: settings.to_vec(),
            auth: AuthFile::discover()?,
            base: base.to_path_buf(),
        })
    }

    pub fn client(&mut self, registry: &str) -> Result<Arc<RegistryClient>, FetchError> {
        if let Some(c) = self.clients.get(registry) {
            return Ok(c.clone());
        }
        let settings = self
            .settings
            .iter()
            .find(|s| s.host == registry || api_host(&s.host) == api_host(registry));
        let mut config = ClientConfig {
            plain_http: settings.is_some_and(|s| s.plain_http),
            credentials: self.auth.get(registry).cloned(),
            pull_only: true,
            ..ClientConfig::default()
        };
        if let Some(ca) = settings.and_then(|s| s.ca.as_ref()) {
            config =
                config
                    .with_ca_file(&self.base.join(ca))
                    .map_err(|cause| FetchError::Settings {
                        host: registry.to_string(),
                        cause,
                    })?;
        }
        let client = Arc::new(RegistryClient::new(api_host(registry), config).map_err(
            |cause| FetchError::Settings {
                host: registry.to_string(),
                cause,
            },
        )?);
        self.clients.insert(registry.to_string(), client.clone());
        Ok(client)
    }
}

/// An image (or pack artifact) whose manifests were fetched and checked.
#[derive(Clone)]
pub struct RemoteImage {
    pub client: Arc<RegistryClient>,
    pub repository: String,
    /// The reference as errors show it.
    pub shown: String,
    /// The manifest the reference resolves to, as served (media type from its content).
    pub top: Descriptor,
    /// Every fetched manifest by digest: the top one, and an index's kept children.
    pub manifests: HashMap<Digest, Vec<u8>>,
}

impl RemoteImage {
    /// Resolves `reference` and fetches its manifests: for an index, only the children kept
    /// by `platforms` (`None` keeps all).
    pub async fn fetch(
        client: Arc<RegistryClient>,
        reference: &ImageReference,
        platforms: Option<&[String]>,
    ) -> Result<Self, FetchError> {
        let shown = reference.to_string();
        let wanted = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let top = fetch_manifest(&client, &reference.repository, &wanted, &shown).await?;
        let mut manifests = HashMap::new();
        let descriptor = Descriptor {
            media_type: top.0.clone(),
            digest: Digest::of(&top.1),
            size: top.1.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        if oci::is_index(&top.0) {
            let index: ImageIndex =
                serde_json::from_slice(&top.1).map_err(|e| FetchError::Content {
                    reference: shown.clone(),
                    message: format!("index {} is malformed: {e}", descriptor.digest),
                })?;
            let children = index
                .manifests
                .iter()
                .filter(|c| oci::keeps_platform(platforms, c))
                .map(|c| {
                    let digest = c.digest.to_string();
                    let (client, repo, shown) = (&client, &reference.repository, &shown);
                    async move { fetch_manifest(client, repo, &digest, shown).await }
                });
            for (_, bytes) in futures_util::future::try_join_all(children).await? {
                manifests.insert(Digest::of(&bytes), bytes);
            }
        }
        manifests.insert(descriptor.digest, top.1);
        Ok(RemoteImage {
            client,
            repository: reference.repository.clone(),
            shown,
            top: descriptor,
            manifests,
        })
    }
}

/// (media type, bytes) of one manifest.
async fn fetch_manifest(
    client: &RegistryClient,
    repository: &str,
    wanted: &str,
    shown: &str,
) -> Result<(String, Vec<u8>), FetchError> {
    let fetched = client
        .get_manifest(repository, wanted, MANIFEST_ACCEPT)
        .await
        .map_err(|cause| FetchError::Registry {
            reference: shown.to_string(),
            cause,
        })?
        .ok_or_else(|| FetchError::NotFound {
            reference: shown.to_string(),
            host: client.host().to_string(),
            repository: repository.to_string(),
            wanted: wanted.to_string(),
        })?;
    // The content's own mediaType outranks a header a proxy may have rewritten.
    let media_type = oci::manifest_media_type(&fetched.bytes, &fetched.media_type).ok_or_else(|| FetchError::Content {
            reference: shown.to_string(),
            message: format!(
                "manifest {} has an unsupported media type `{}` (schema 1 images are not supported; re-push them as schema 2 or OCI)",
                fetched.digest, fetched.media_type
            ),
        })?;
    Ok((media_type, fetched.bytes))
}

/// Where a blob being fetched goes: a pending cache file (unless the build keeps no cache)
/// and, when the bundle is being written, the bundle entry itself — one download, both
/// written, one hash.
pub struct BlobTarget<'a> {
    pub pending: Option<&'a PendingBlob>,
    pub slot: Option<&'a mut EntrySlot>,
}

impl BlobTarget<'_> {
    fn restart(&mut self) -> std::io::Result<()> {
        if let Some(pending) = self.pending {
            pending.truncate()?;
        }
        if let Some(slot) = self.slot.as_deref_mut() {
            slot.restart();
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(pending) = self.pending {
            pending.file().write_all(bytes)?;
        }
        if let Some(slot) = self.slot.as_deref_mut() {
            slot.write(bytes).map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// A download going into the cache (and the bundle), progress counted as it is written.
struct CacheSink<'a, 'p> {
    target: BlobTarget<'a>,
    progress: &'p (dyn Fn(u64) + Sync),
}

impl registry::download::Sink for CacheSink<'_, '_> {
    type Error = std::io::Error;
    async fn restart(&mut self) -> Result<(), std::io::Error> {
        self.target.restart()
    }
    async fn write(&mut self, chunk: &registry::download::Bytes) -> Result<(), std::io::Error> {
        self.target.write(chunk)?;
        (self.progress)(chunk.len() as u64);
        Ok(())
    }
}

/// Downloads blob `digest` (`size` bytes) into `target`, hashing as it streams
/// ([`registry::download`]: resumed after a broken connection, refused when it does not hash
/// to `digest`).
pub async fn fetch_blob(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    size: u64,
    reference: &str,
    target: BlobTarget<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    use registry::download::{download, DownloadError};
    let mut sink = CacheSink { target, progress };
    let result = download(client, repository, digest, size, &mut sink).await;
    match result {
        Ok(()) => Ok(()),
        Err(DownloadError::Registry(cause)) => Err(FetchError::Registry {
            reference: reference.to_string(),
            cause,
        }),
        Err(DownloadError::Sink(cause)) => Err(FetchError::Write {
            reference: reference.to_string(),
            digest: *digest,
            cause,
        }),
        Err(DownloadError::Mismatch(m)) => Err(FetchError::Corrupt {
            reference: reference.to_string(),
            host: m.host,
            digest: *digest,
            actual: m.actual,
        }),
    }
}
