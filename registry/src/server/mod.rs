//! The built-in registry: the OCI distribution API (pull and push) over TLS, served from a
//! verified bundle archive or an OCI layout directory.
//!
//! Without an htpasswd file pulls are anonymous and pushes are refused; with one, every
//! request needs basic auth. A served archive is read-only whatever the auth.

pub mod access;
mod catalog;
pub mod htpasswd;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airgap::oci::MAX_MANIFEST_SIZE;
use airgap::Digest;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use htpasswd::Htpasswd;
pub use store::{ArchiveStore, LayoutStore, Store};

use crate::name::{is_valid_repository, is_valid_tag};
use store::{CommitOutcome, PutManifest};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Bytes per read when serving a blob.
const SERVE_CHUNK: usize = 512 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

pub struct Registry {
    store: Store,
    htpasswd: Option<Htpasswd>,
}

/// Loads a PEM certificate chain and private key into a rustls server configuration with the
/// library's safe defaults (TLS 1.2 and 1.3, no legacy suites).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("{} holds no PEM private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not go together: {e}")))?;
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
        Registry { store, htpasswd }
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
            let _ = stream.set_nodelay(true);
            let registry = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(registry.handle(req, peer).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                let result = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let write = !matches!(method, Method::GET | Method::HEAD);
        let (user, response) = match self.authorize(&req, write).await {
            Ok(user) => (user, self.route(req).await),
            Err(refusal) => (None, refusal),
        };
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

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let Some(rest) = path.strip_prefix("/v2/") else {
            if path == "/v2" {
                return ok_json(b"{}".to_vec());
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
                self.get_manifest(name, reference, req.method() == Method::HEAD)
                    .await
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                let (name, reference) = (name.to_string(), reference.to_string());
                self.put_manifest(&name, &reference, req).await
            }
            (Route::Blob(name, digest), Method::GET | Method::HEAD) => {
                let head = req.method() == Method::HEAD;
                self.get_blob(name, digest, head, req.headers().get(hyper::header::RANGE))
                    .await
            }
            (Route::Upload(name, id), method) => {
                let (name, id) = (name.to_string(), id.to_string());
                self.upload(&name, &id, &query, method, req).await
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    /// Who may do this: `Ok(Some(user))` for a login, `Ok(None)` for an anonymous pull.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        write: bool,
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
            if htpasswd.authenticate(user, password).await {
                return Ok(Some(user.to_string()));
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

    async fn get_manifest(&self, name: &str, reference: &str, head: bool) -> Response<Body> {
        let resolved = self.store.catalog().await.resolve(name, reference);
        let Some((digest, media_type)) = resolved else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let Some(data) = self.store.blob(name, &digest).await else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let mut r = self.blob_response(data, head, None, &digest).await;
        if let Ok(v) = HeaderValue::from_str(&media_type) {
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
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<Digest>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest is not a sha256 digest",
            );
        };
        let Some(data) = self.store.blob(name, &digest).await else {
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
        digest: &Digest,
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
            Err(e) => return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", &e),
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
        let tag = match reference.parse::<Digest>() {
            Ok(d) if d != Digest::of(&bytes) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "manifest content does not match the digest in the URL",
                );
            }
            Ok(_) => None,
            Err(_) if is_valid_tag(reference) => Some(reference),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "TAG_INVALID",
                    "manifest tag did not match URI",
                )
            }
        };
        match layout.put_manifest(name, tag, &media_type, &bytes).await {
            Ok(PutManifest::Stored(digest)) => {
                created(&format!("/v2/{name}/manifests/{digest}"), &digest)
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
    ) -> Response<Body> {
        let Store::Layout(layout) = &self.store else {
            return read_only();
        };
        let params = query_params(query);
        let location = |id: &str| format!("/v2/{name}/blobs/uploads/{id}");
        match (method, id) {
            (Method::POST, "") => {
                if let (Some(mount), Some(from)) = (params.get("mount"), params.get("from")) {
                    if let (Ok(digest), true) = (mount.parse::<Digest>(), is_valid_repository(from))
                    {
                        if layout.mount(name, &digest, from).await {
                            return created(&format!("/v2/{name}/blobs/{digest}"), &digest);
                        }
                    }
                }
                let id = match layout.start_upload(name).await {
                    Ok(id) => id,
                    Err(e) => {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string())
                    }
                };
                if let Some(digest) = params.get("digest") {
                    // Monolithic upload: POST with the whole blob.
                    return self.finish_upload(layout, name, &id, digest, req).await;
                }
                accepted(&location(&id), 0, &id)
            }
            (Method::PATCH, id) if !id.is_empty() => {
                match stream_into(layout, name, id, req.into_body()).await {
                    Ok(Some(size)) => accepted(&location(id), size, id),
                    Ok(None) => error(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        "blob upload unknown to registry",
                    ),
                    Err(e) => {
                        layout.cancel(name, id).await;
                        error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e)
                    }
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

    async fn finish_upload(
        &self,
        layout: &LayoutStore,
        name: &str,
        id: &str,
        digest: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<Digest>() else {
            layout.cancel(name, id).await;
            return error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest is not a sha256 digest",
            );
        };
        match stream_into(layout, name, id, req.into_body()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                )
            }
            Err(e) => {
                layout.cancel(name, id).await;
                return error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e);
            }
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

enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, &'a str),
    Tags(&'a str),
}

impl<'a> Route<'a> {
    fn name(&self) -> &'a str {
        match self {
            Route::Manifest(n, _) | Route::Blob(n, _) | Route::Upload(n, _) | Route::Tags(n) => n,
        }
    }
}

/// Streams a request body into an upload. `Ok(None)`: no such upload.
async fn stream_into(
    layout: &LayoutStore,
    name: &str,
    id: &str,
    mut body: Incoming,
) -> Result<Option<u64>, String> {
    let Some(mut size) = layout.upload_size(name, id).await else {
        return Ok(None);
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("upload body ended early: {e}"))?;
        if let Ok(data) = frame.into_data() {
            match layout.append(name, id, &data).await {
                Ok(Some(n)) => size = n,
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(Some(size))
}

async fn read_limited(mut body: Incoming, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body ended early: {e}"))?;
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
    let opened = Arc::new(
        tokio::task::spawn_blocking(move || data.open())
            .await
            .map_err(std::io::Error::other)??,
    );
    let stream = futures_util::stream::unfold(start, move |pos| {
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
                    Some((Ok(Frame::data(bytes)), next))
                }
                Err(e) => Some((Err(e), end)),
            }
        }
    });
    Ok(BodyExt::boxed_unsync(StreamBody::new(stream)))
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
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
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

fn created(location: &str, digest: &Digest) -> Response<Body> {
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

fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
