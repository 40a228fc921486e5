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
pub mod htpasswd;
mod manifest_record;
pub mod metadata;
mod metrics;
mod rate_limit;
pub mod replication;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airgap::oci::MAX_MANIFEST_SIZE;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use htpasswd::{Htpasswd, Verdict};
pub use metadata::{EtcdMetadata, MetadataBackend, MetadataLog};
pub use store::{ArchiveStore, GcReport, LayoutStore, Store, UploadLimits};

use metrics::{Gauge, Metrics};
use rate_limit::RateLimit;
use registry::content_digest::ContentDigest;
use registry::name::{is_valid_repository, is_valid_tag};
use store::{Append, CommitOutcome, Deleted, PutManifest, StartUpload};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Referrers listed per response at most; more are reached through the `Link` header.
const REFERRERS_PAGE: usize = 256;

/// Bytes per read when serving a blob.
const SERVE_CHUNK: usize = 512 << 10;

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

/// Loads a PEM certificate chain and private key into a rustls server configuration with the
/// library's safe defaults (TLS 1.2 and 1.3, no legacy suites).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServeError::TlsRead {
            path: p.to_path_buf(),
            source,
        })
    };
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    tls_acceptor_from_pem(&read(cert)?, &key_pem, &cert.display().to_string())
}

/// The same from PEM bytes: a chain (leaf first) and its key; `what` names them in errors.
pub fn tls_acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    let pem = |source| ServeError::TlsPem {
        what: what.to_string(),
        source,
    };
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(ServeError::NoCertificate {
            what: what.to_string(),
        });
    }
    let key_der = match rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(ServeError::NoKey {
                what: what.to_string(),
            })
        }
        Err(e) => return Err(pem(e)),
    };
    let config_error = |source| ServeError::TlsConfig {
        what: what.to_string(),
        source,
    };
    let provider = registry::crypto::provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `addr` (port 0 picks one): the caller learns the address before serving starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| ServeError::Bind { addr, cause })
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

    /// The blob from this node's store, or fetched from a peer when the catalog links it but
    /// the disk lacks it (never for a request from a peer).
    async fn blob_or_replica(
        &self,
        name: &str,
        digest: &ContentDigest,
        peer: SocketAddr,
    ) -> Option<store::BlobData> {
        if let Some(data) = self.store.blob(name, digest).await {
            return Some(data);
        }
        let (Some(r), Store::Layout(layout)) = (&self.replication, &self.store) else {
            return None;
        };
        if r.is_peer(peer.ip()) || !self.store.catalog().await.has_blob(name, digest) {
            return None;
        }
        if r.fetch(layout, name, digest).await {
            self.store.blob(name, digest).await
        } else {
            None
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = self.clone();
            let gate = self.gate.clone();
            let tls = tls.clone();
            tokio::spawn(gate.serve(stream, peer, tls, move |req| {
                let registry = registry.clone();
                async move { registry.handle(req, peer).await }
            }));
        }
    }

    /// Serves HTTP/1.1 requests on one connection from `peer` until it closes, with no
    /// connection policy: the request fuzzer drives it with raw bytes (`serve` runs every
    /// accepted connection under the policy instead).
    pub async fn serve_connection<S>(self: Arc<Self>, io: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let registry = self.clone();
            async move { Ok::<_, Infallible>(registry.handle(req, peer).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%peer, error = %e, "connection ended");
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let write = !matches!(method, Method::GET | Method::HEAD);
        let has_body = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
            || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
        let (user, mut response) = if self
            .rate_limit
            .as_ref()
            .is_some_and(|l| !l.allow(peer.ip()))
        {
            self.metrics.rate_limited();
            (
                None,
                too_many("too many requests from this client; retry later", "1"),
            )
        } else {
            match self.authorize(&req, write, peer).await {
                Ok(user) => (user, self.route(req, peer).await),
                Err(refusal) => (None, refusal),
            }
        };
        // A refused request's body may be unread: say the connection ends here, so a client
        // does not send its retry down a connection the server is about to close.
        if has_body && !response.status().is_success() {
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let sent = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        self.metrics.request(
            method.as_str(),
            response.status().as_u16(),
            if method == Method::HEAD {
                0
            } else {
                sent.unwrap_or(0)
            },
        );
        access::AccessRecord {
            client: peer,
            user: user.as_deref(),
            method: method.as_str(),
            path: &path,
            status: response.status().as_u16(),
            bytes: response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            millis: started.elapsed().as_secs_f64() * 1000.0,
        }
        .emit();
        response
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let Some(rest) = path.strip_prefix("/v2/") else {
            if path == "/v2" {
                return ok_json(b"{}".to_vec());
            }
            if path == "/metrics" && req.method() == Method::GET {
                return self.metrics_response().await;
            }
            if path == "/airgap/v1/gc" && req.method() == Method::POST {
                return self.gc(&query).await;
            }
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a registry API path",
            );
        };
        if rest.is_empty() {
            return ok_json(b"{}".to_vec());
        }
        if rest == "_catalog" {
            return self.catalog(&query).await;
        }
        let route = if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            Route::Manifest(name, reference)
        } else if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
            Route::Upload(name, id)
        } else if let Some(name) = rest.strip_suffix("/blobs/uploads") {
            Route::Upload(name, "")
        } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            Route::Blob(name, digest)
        } else if let Some(name) = rest.strip_suffix("/tags/list") {
            Route::Tags(name)
        } else if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
            Route::Referrers(name, digest)
        } else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown API path");
        };
        let name = route.name();
        if !is_valid_repository(name) {
            return error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "invalid repository name",
            );
        }
        let method = req.method().clone();
        match (route, method) {
            (Route::Tags(name), Method::GET) => self.tags(name, &query).await,
            (Route::Manifest(name, reference), Method::GET | Method::HEAD) => {
                self.get_manifest(name, reference, req.method() == Method::HEAD, peer)
                    .await
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                let (name, reference) = (name.to_string(), reference.to_string());
                self.put_manifest(&name, &reference, req).await
            }
            (Route::Manifest(name, reference), Method::DELETE) => {
                self.delete_manifest(name, reference).await
            }
            (Route::Blob(name, digest), Method::GET | Method::HEAD) => {
                let head = req.method() == Method::HEAD;
                let range = req.headers().get(hyper::header::RANGE);
                self.get_blob(name, digest, head, range, peer).await
            }
            (Route::Blob(name, digest), Method::DELETE) => self.delete_blob(name, digest).await,
            (Route::Referrers(name, digest), Method::GET) => {
                self.referrers(name, digest, &query).await
            }
            (Route::Upload(name, id), method) => {
                let (name, id) = (name.to_string(), id.to_string());
                self.upload(&name, &id, &query, method, req, peer).await
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    /// Adds users who may pull but never push, delete or collect garbage (`403 DENIED`). They
    /// authenticate only where the main htpasswd applies: without one pulls are anonymous.
    pub fn with_pull_users(mut self, htpasswd: Htpasswd) -> Self {
        self.pull_htpasswd = Some(htpasswd);
        self
    }

    /// Who may do this: `Ok(Some(user))` for a login, `Ok(None)` for an anonymous pull.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        write: bool,
        peer: SocketAddr,
    ) -> Result<Option<String>, Response<Body>> {
        let Some(htpasswd) = &self.htpasswd else {
            if write {
                return Err(error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "this registry is read-only: pushes need the server started with --htpasswd",
                ));
            }
            return Ok(None);
        };
        let creds = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        if let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) {
            // The file that names the user checks it; neither does the same work (a decoy),
            // so an answer's timing does not say which users exist.
            let pull_only = self
                .pull_htpasswd
                .as_ref()
                .filter(|p| !htpasswd.has_user(user) && p.has_user(user));
            let file = pull_only.unwrap_or(htpasswd);
            match file.check(user, password, Some(peer.ip())).await {
                Verdict::Accepted if pull_only.is_some() && write => {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "DENIED",
                        "this login may only pull",
                    ));
                }
                Verdict::Accepted => return Ok(Some(user.to_string())),
                Verdict::Busy => {
                    return Err(too_many(
                        "too many failed or waiting logins from this address; retry later",
                        "5",
                    ))
                }
                Verdict::Refused => {}
            }
        }
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"airgap\""),
        );
        Err(r)
    }

    async fn catalog(&self, query: &str) -> Response<Body> {
        let catalog = self.store.catalog().await;
        let names: Vec<&String> = catalog.repositories.keys().collect();
        paginate("repositories", names, query, "/v2/_catalog", None)
    }

    async fn tags(&self, name: &str, query: &str) -> Response<Body> {
        let catalog = self.store.catalog().await;
        let Some(repo) = catalog.repository(name) else {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known to registry",
            );
        };
        let tags: Vec<&String> = repo.tags.keys().collect();
        paginate(
            "tags",
            tags,
            query,
            &format!("/v2/{name}/tags/list"),
            Some(name),
        )
    }

    async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        head: bool,
        peer: SocketAddr,
    ) -> Response<Body> {
        let resolved = self.store.catalog().await.resolve(name, reference);
        let Some((digest, record)) = resolved else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let Some(data) = self.blob_or_replica(name, &digest, peer).await else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let mut r = self.blob_response(data, head, None, &digest).await;
        if let Ok(v) = HeaderValue::from_str(&record.media_type) {
            r.headers_mut().insert(CONTENT_TYPE, v);
        }
        r
    }

    async fn get_blob(
        &self,
        name: &str,
        digest: &str,
        head: bool,
        range: Option<&HeaderValue>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        let Some(data) = self.blob_or_replica(name, &digest, peer).await else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            );
        };
        let range = range.and_then(|v| v.to_str().ok()).map(str::to_string);
        self.blob_response(data, head, range.as_deref(), &digest)
            .await
    }

    async fn blob_response(
        &self,
        data: store::BlobData,
        head: bool,
        range: Option<&str>,
        digest: &ContentDigest,
    ) -> Response<Body> {
        let len = data.size();
        let (status, start, end) = match range.map(|r| parse_range(r, len)) {
            None => (StatusCode::OK, 0, len),
            Some(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
            Some(None) => {
                let mut r = error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_INVALID",
                    "range not satisfiable",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
                }
                return r;
            }
        };
        let body = if head || start == end {
            empty()
        } else {
            match stream_blob(data, start, end).await {
                Ok(b) => b,
                Err(e) => {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string())
                }
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            hyper::header::ACCEPT_RANGES,
            HeaderValue::from_static("bytes"),
        );
        if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
            h.insert("docker-content-digest", v.clone());
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
                h.insert(hyper::header::ETAG, etag);
            }
        }
        if status == StatusCode::PARTIAL_CONTENT {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
                h.insert(hyper::header::CONTENT_RANGE, v);
            }
        }
        r
    }

    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Store::Layout(layout) = &self.store else {
            return read_only();
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_MANIFEST_SIZE) {
            return too_large();
        }
        let media_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = match read_limited(req.into_body(), MAX_MANIFEST_SIZE).await {
            Ok(Some(b)) => b,
            Ok(None) => return too_large(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    &format!("body ended early: {}", registry::describe_error(&e)),
                )
            }
        };
        let media_type = match media_type.or_else(|| airgap::oci::detect_media_type(&bytes)) {
            Some(m) => m,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    "manifest media type unknown",
                )
            }
        };
        let (tag, digest) = match reference.parse::<ContentDigest>() {
            Ok(d) if d != d.same_algorithm_of(&bytes) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "manifest content does not match the digest in the URL",
                );
            }
            Ok(d) => (None, d),
            Err(_) if is_valid_tag(reference) => {
                (Some(reference), airgap::Digest::of(&bytes).into())
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "TAG_INVALID",
                    "manifest tag did not match URI",
                )
            }
        };
        match layout
            .put_manifest(name, tag, digest, &media_type, &bytes)
            .await
        {
            Ok(PutManifest::Stored { digest, subject }) => {
                let mut r = created(&format!("/v2/{name}/manifests/{digest}"), &digest);
                if let Some(v) = subject.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                    r.headers_mut().insert("oci-subject", v);
                }
                r
            }
            Ok(PutManifest::Missing(missing)) => {
                let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
                error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    &format!("blob unknown to registry: {}", list.join(", ")),
                )
            }
            Ok(PutManifest::Invalid(reason)) => error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                &format!("manifest invalid: {reason}"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        }
    }

    async fn upload(
        &self,
        name: &str,
        id: &str,
        query: &str,
        method: Method,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Store::Layout(layout) = &self.store else {
            return read_only();
        };
        let params = query_params(query);
        let location = |id: &str| format!("/v2/{name}/blobs/uploads/{id}");
        match (method, id) {
            (Method::POST, "") => {
                if let (Some(mount), Some(from)) = (params.get("mount"), params.get("from")) {
                    if let (Ok(digest), true) =
                        (mount.parse::<ContentDigest>(), is_valid_repository(from))
                    {
                        match layout.mount(name, &digest, from).await {
                            Ok(true) => {
                                return created(&format!("/v2/{name}/blobs/{digest}"), &digest)
                            }
                            Ok(false) => {}
                            Err(e) => return internal(&e),
                        }
                    }
                }
                let id = match layout.start_upload(name, peer.ip()).await {
                    Ok(StartUpload::Started(id)) => id,
                    Ok(StartUpload::TooMany) => {
                        return error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "TOOMANYREQUESTS",
                            "this client has too many uploads open; finish or cancel some",
                        )
                    }
                    Err(e) => return internal(&e),
                };
                if let Some(digest) = params.get("digest") {
                    // Monolithic upload: POST with the whole blob.
                    return self.finish_upload(layout, name, &id, digest, req).await;
                }
                accepted(&location(&id), 0, &id)
            }
            (Method::PATCH, id) if !id.is_empty() => {
                match self.append_chunk(layout, name, id, req).await {
                    Ok(size) => accepted(&location(id), size, id),
                    Err(refused) => refused,
                }
            }
            (Method::PUT, id) if !id.is_empty() => {
                let Some(digest) = params.get("digest") else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "DIGEST_INVALID",
                        "a digest query parameter is required",
                    );
                };
                self.finish_upload(layout, name, id, digest, req).await
            }
            (Method::GET, id) if !id.is_empty() => match layout.upload_size(name, id).await {
                Some(size) => {
                    let mut r = accepted(&location(id), size, id);
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                ),
            },
            (Method::DELETE, id) if !id.is_empty() => {
                if layout.cancel(name, id).await {
                    no_content()
                } else {
                    error(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        "blob upload unknown to registry",
                    )
                }
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    /// Appends a request's body to upload `id`, checked against its `Content-Range` when it
    /// has one; returns the upload's size. A chunk that does not continue the upload is 416
    /// with the current range; one whose length is not what its range says cancels the upload
    /// (it can no longer be trusted to hold what the client thinks).
    async fn append_chunk(
        &self,
        layout: &LayoutStore,
        name: &str,
        id: &str,
        req: Request<Incoming>,
    ) -> Result<u64, Response<Body>> {
        let range = content_range(&req)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", e))?;
        match stream_into(
            layout,
            name,
            id,
            range.map(|r| r.0),
            req.into_body(),
            &self.metrics,
        )
        .await
        {
            Ok(Streamed::Done(size)) if range.is_some_and(|(_, end)| end + 1 != size) => {
                layout.cancel(name, id).await;
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    "the chunk's length does not match its Content-Range",
                ))
            }
            Ok(Streamed::Done(size)) => Ok(size),
            Ok(Streamed::OutOfOrder(size)) => {
                let mut r = accepted(&format!("/v2/{name}/blobs/uploads/{id}"), size, id);
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                Err(r)
            }
            Ok(Streamed::Unknown) => Err(upload_unknown()),
            Err(e) => {
                layout.cancel(name, id).await;
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    &registry::describe_error(&e),
                ))
            }
        }
    }

    async fn finish_upload(
        &self,
        layout: &LayoutStore,
        name: &str,
        id: &str,
        digest: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            layout.cancel(name, id).await;
            return bad_digest();
        };
        // The closing PUT (or a monolithic POST) may carry the last chunk: checked as a PATCH is.
        if let Err(refused) = self.append_chunk(layout, name, id, req).await {
            return refused;
        }
        match layout.commit(name, id, &digest).await {
            Ok(CommitOutcome::Committed) => created(&format!("/v2/{name}/blobs/{digest}"), &digest),
            Ok(CommitOutcome::DigestMismatch(actual)) => error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                &format!("provided digest did not match uploaded content (content is {actual})"),
            ),
            Ok(CommitOutcome::UnknownUpload) => error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        }
    }
}

impl Registry {
    fn deletable(&self) -> Result<&LayoutStore, Box<Response<Body>>> {
        match &self.store {
            Store::Layout(layout) if self.options.deletes => Ok(layout),
            Store::Layout(_) => Err(Box::new(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "deletes are disabled; start the registry with --enable-delete",
            ))),
            Store::Archive(_) => Err(Box::new(read_only())),
        }
    }

    async fn delete_manifest(&self, name: &str, reference: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        if reference.parse::<ContentDigest>().is_err() && !is_valid_tag(reference) {
            return error(StatusCode::BAD_REQUEST, "TAG_INVALID", "invalid tag");
        }
        match layout.delete_manifest(name, reference).await {
            Ok(Deleted::Deleted) => accepted_empty(),
            Ok(Deleted::NotFound) => error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            ),
            Err(e) => internal(&e),
        }
    }

    async fn delete_blob(&self, name: &str, digest: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        match layout.delete_blob(name, &digest).await {
            Ok(Deleted::Deleted) => accepted_empty(),
            Ok(Deleted::NotFound) => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            ),
            Err(e) => internal(&e),
        }
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=T]`: an image index of the manifests
    /// whose subject is `digest` (an empty one when there are none, as the spec asks).
    async fn referrers(&self, name: &str, digest: &str, query: &str) -> Response<Body> {
        let Ok(subject) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        let params = query_params(query);
        let filter = params.get("artifactType");
        let mut found = self.store.catalog().await.referrers(name, &subject);
        // Pages in digest order, `n` at a time (at most REFERRERS_PAGE), after `last`.
        found.sort_by_key(|(d, _)| d.to_string());
        let page = params
            .get("n")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(REFERRERS_PAGE)
            .clamp(1, REFERRERS_PAGE);
        if let Some(last) = params.get("last") {
            found.retain(|(d, _)| d.to_string().as_str() > last.as_str());
        }
        let found: Vec<_> = found
            .into_iter()
            .filter(|(_, r)| filter.is_none_or(|f| r.artifact_type.as_ref() == Some(f)))
            .collect();
        let next = (found.len() > page).then(|| found[page - 1].0.to_string());
        let manifests: Vec<serde_json::Value> = found
            .iter()
            .take(page)
            .map(|(d, r)| {
                let mut desc = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": d.to_string(),
                    "size": r.size,
                });
                if let Some(t) = &r.artifact_type {
                    desc["artifactType"] = serde_json::json!(t);
                }
                if !r.annotations.is_empty() {
                    desc["annotations"] = serde_json::json!(r.annotations);
                }
                desc
            })
            .collect();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": airgap::oci::OCI_INDEX,
            "manifests": manifests,
        });
        let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(airgap::oci::OCI_INDEX),
        );
        if filter.is_some() {
            r.headers_mut().insert(
                "oci-filters-applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        if let Some(last) = next {
            let mut link = format!("</v2/{name}/referrers/{subject}?n={page}&last={last}");
            if let Some(f) = filter {
                link.push_str(&format!("&artifactType={}", f.replace('+', "%2B")));
            }
            link.push_str(">; rel=\"next\"");
            if let Ok(v) = HeaderValue::from_str(&link) {
                r.headers_mut().insert(hyper::header::LINK, v);
            }
        }
        r
    }

    async fn metrics_response(&self) -> Response<Body> {
        let mut gauges = Vec::new();
        {
            let catalog = self.store.catalog().await;
            gauges.push(Gauge {
                name: "airgap_registry_repositories",
                help: "Repositories in the catalog.",
                value: catalog.repositories.len() as u64,
            });
            gauges.push(Gauge {
                name: "airgap_registry_manifests",
                help: "Manifests in the catalog.",
                value: catalog.manifest_count() as u64,
            });
        }
        if let Store::Layout(layout) = &self.store {
            gauges.push(Gauge {
                name: "airgap_registry_uploads",
                help: "Upload sessions open.",
                value: layout.open_uploads().await as u64,
            });
            gauges.push(Gauge {
                name: "airgap_registry_store_bytes",
                help: "Bytes of blobs and manifests in the store directory.",
                value: layout.stored_bytes(),
            });
        }
        let mut r = Response::new(full(self.metrics.render(&gauges).into_bytes()));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// `POST /airgap/v1/gc[?dryRun=true][&graceSeconds=N]`: garbage collection of a running
    /// store directory, safe against the pushes it serves at the same time.
    async fn gc(&self, query: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        let params = query_params(query);
        let dry_run = params
            .get("dryRun")
            .is_some_and(|v| v == "true" || v == "1");
        let grace = match params.get("graceSeconds").map(|v| v.parse::<u64>()) {
            None => DEFAULT_GC_GRACE,
            Some(Ok(s)) => std::time::Duration::from_secs(s),
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "graceSeconds must be a number",
                )
            }
        };
        match layout.gc(dry_run, grace).await {
            Ok(report) => {
                if !dry_run {
                    if let Err(e) = layout.flush_index().await {
                        return internal(&e);
                    }
                }
                ok_json(serde_json::to_vec(&report).unwrap_or_default())
            }
            Err(e) => internal(&e),
        }
    }
}

/// Blobs younger than this are never collected: a blob a client has just written by other
/// means than this server is not garbage yet.
pub const DEFAULT_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, &'a str),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn name(&self) -> &'a str {
        match self {
            Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Upload(n, _)
            | Route::Tags(n)
            | Route::Referrers(n, _) => n,
        }
    }
}

enum Streamed {
    /// The body is in; the upload's size.
    Done(u64),
    /// The body does not start where the upload ends (its size); nothing was written.
    OutOfOrder(u64),
    Unknown,
}

/// Why a request body did not make it into its upload.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("upload body ended early")]
    Body(#[source] hyper::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Streams a request body into an upload; with `at`, the body must start there.
async fn stream_into(
    layout: &LayoutStore,
    name: &str,
    id: &str,
    mut at: Option<u64>,
    mut body: Incoming,
    metrics: &Metrics,
) -> Result<Streamed, StreamError> {
    let Some(mut size) = layout.upload_size(name, id).await else {
        return Ok(Streamed::Unknown);
    };
    if at.is_some_and(|at| at != size) {
        return Ok(Streamed::OutOfOrder(size));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(StreamError::Body)?;
        if let Ok(data) = frame.into_data() {
            metrics.received(data.len() as u64);
            match layout.append(name, id, at.take(), &data).await {
                Ok(Append::Appended(n)) => size = n,
                Ok(Append::OutOfOrder(n)) => return Ok(Streamed::OutOfOrder(n)),
                Ok(Append::UnknownUpload) => return Ok(Streamed::Unknown),
                Err(e) => {
                    // Read the rest of the body (writing none of it) before answering: over
                    // HTTP/1.1 a client still sending sees only a broken pipe when the server
                    // answers early and closes, not why (a full disk, say).
                    while let Some(Ok(_)) = body.frame().await {}
                    return Err(StreamError::Store(e));
                }
            }
        }
    }
    Ok(Streamed::Done(size))
}

/// A chunk's `Content-Range: <start>-<end>` (inclusive), when the client sent one.
fn content_range(req: &Request<Incoming>) -> Result<Option<(u64, u64)>, &'static str> {
    let Some(v) = req.headers().get(hyper::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = "Content-Range must be <start>-<end>";
    let v = v.to_str().map_err(|_| bad)?.trim();
    // Some clients write the HTTP form, `bytes 0-99/*`.
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or(bad)?;
    let (start, end) = (
        a.trim().parse::<u64>().map_err(|_| bad)?,
        b.trim().parse::<u64>().map_err(|_| bad)?,
    );
    if end < start {
        return Err(bad);
    }
    Ok(Some((start, end)))
}

/// A request body of at most `limit` bytes; `None` when it is longer.
async fn read_limited(mut body: Incoming, limit: u64) -> Result<Option<Vec<u8>>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

/// A body that reads `[start, end)` of a blob on blocking threads, a chunk at a time.
async fn stream_blob(data: store::BlobData, start: u64, end: u64) -> std::io::Result<Body> {
    use sha2::Digest as _;
    // A served bundle was verified when the server started; what is read now must still be
    // that. A whole read is hashed as it goes and its last chunk sent only once the hash
    // matched (a client never receives all of a changed blob); a ranged read, which cannot be
    // hashed, is served only while the bundle's files are as they were verified.
    let check = match &data {
        store::BlobData::Archive {
            digest, stamp, len, ..
        } => {
            if !stamp.unchanged() {
                return Err(std::io::Error::other(
                    "the bundle changed on disk since it was verified; restart `airgap registry serve` to verify it again",
                ));
            }
            (start == 0 && end == *len).then_some(*digest)
        }
        store::BlobData::File { .. } | store::BlobData::Memory(_) => None,
    };
    let opened = Arc::new(
        tokio::task::spawn_blocking(move || data.open())
            .await
            .map_err(std::io::Error::other)??,
    );
    let hasher = check.map(|d| (d, sha2::Sha256::new()));
    let stream = futures_util::stream::unfold((start, hasher), move |(pos, mut hasher)| {
        let opened = opened.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = SERVE_CHUNK.min((end - pos) as usize);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    let n = opened.read_at(&mut buf[filled..], pos + filled as u64)?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                    filled += n;
                }
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match read {
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    if let Some((expected, h)) = hasher.as_mut() {
                        h.update(&bytes);
                        if next >= end {
                            let found = airgap::Digest::from_bytes(h.clone().finalize().into());
                            if found != *expected {
                                tracing::error!(%expected, %found, "a served blob no longer matches its signed digest; the bundle changed on disk");
                                return Some((
                                    Err(std::io::Error::other("blob changed on disk")),
                                    (end, None),
                                ));
                            }
                        }
                    }
                    Some((Ok(Frame::data(bytes)), (next, hasher)))
                }
                Err(e) => Some((Err(e), (end, None))),
            }
        }
    });
    Ok(BodyExt::boxed_unsync(StreamBody::new(stream)))
}

/// 429 `TOOMANYREQUESTS` with `Retry-After: retry_secs`.
fn too_many(message: &str, retry_secs: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        HeaderValue::from_static(retry_secs),
    );
    r
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`, as a half-open range; `None` when unsatisfiable.
fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len)
        }
        (a, "") => (a.parse().ok()?, len),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
    };
    (start < end && start < len).then_some((start, end))
}

fn query_params(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Hex digits read as bytes: slicing the string could split a multi-byte character.
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn paginate(
    key: &str,
    items: Vec<&String>,
    query: &str,
    path: &str,
    name: Option<&str>,
) -> Response<Body> {
    let params = query_params(query);
    let last = params.get("last");
    let mut items: Vec<&String> = items
        .into_iter()
        .filter(|i| last.is_none_or(|l| i.as_str() > l.as_str()))
        .collect();
    let n = params.get("n").and_then(|n| n.parse::<usize>().ok());
    let more = n.is_some_and(|n| items.len() > n);
    if let Some(n) = n {
        items.truncate(n);
    }
    let body = match name {
        Some(name) => serde_json::json!({ "name": name, key: items }),
        None => serde_json::json!({ key: items }),
    };
    let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
    if let (true, Some(n), Some(last)) = (more, n, items.last()) {
        if let Ok(v) = HeaderValue::from_str(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")) {
            r.headers_mut().insert(hyper::header::LINK, v);
        }
    }
    r
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    full(Vec::new())
}

fn ok_json(bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
    *r.status_mut() = status;
    r
}

fn read_only() -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "a served bundle is read-only; serve an OCI layout directory to accept pushes",
    )
}

fn too_large() -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "MANIFEST_INVALID",
        &format!("manifest is larger than {MAX_MANIFEST_SIZE} bytes"),
    )
}

fn created(location: &str, digest: &ContentDigest) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(hyper::header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn accepted(location: &str, size: u64, id: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(hyper::header::LOCATION, v);
    }
    let range = format!("0-{}", size.saturating_sub(1));
    if let Ok(v) = HeaderValue::from_str(&range) {
        h.insert(hyper::header::RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("docker-upload-uuid", v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn bad_digest() -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
        "provided digest is not a sha256 or sha512 digest",
    )
}

fn upload_unknown() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
    )
}

fn internal(e: &dyn std::fmt::Display) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string())
}

fn accepted_empty() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_splits_a_character() {
        for q in ["%a\u{e9}", "%\u{e9}a", "%", "%%", "%e9%", "\u{e9}%4"] {
            let _ = percent_decode(q);
        }
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn query_decoding() {
        let q = query_params("mount=sha256%3Aab&from=a%2Fb&n=3");
        assert_eq!(q["mount"], "sha256:ab");
        assert_eq!(q["from"], "a/b");
    }
}
