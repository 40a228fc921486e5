//! A client for the OCI distribution API: just the calls pulling and pushing need, with
//! basic and bearer-token auth, a custom CA or plain HTTP per registry, and retries with
//! backoff on what is worth retrying (5xx, 429, resets, timeouts) — never on a digest or
//! auth failure.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use airgap::oci::MAX_MANIFEST_SIZE;
use airgap::Digest;
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::{Challenge, Credentials};

pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{name}` is not a valid {what}; refused before any request (names are never normalized into another repository)")]
    InvalidName { what: &'static str, name: String },
    #[error("cannot reach registry {host}")]
    Unreachable {
        host: String,
        #[source]
        cause: reqwest::Error,
    },
    #[error("{host} refused the credentials{user}: check the username and password")]
    Unauthorized { host: String, user: String },
    #[error("{host} requires authentication and no credentials for it were found: log in (`skopeo login {host}`) so an auth file holds them, or, when seeding, pass --username with --password-stdin")]
    CredentialsRequired { host: String },
    #[error("{host} denied {action} on {repository}: the account lacks permission")]
    Denied {
        host: String,
        action: &'static str,
        repository: String,
    },
    #[error("{method} {url} failed: HTTP {status}{detail}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: response lacks the {header} header")]
    MissingHeader { url: String, header: &'static str },
    #[error("cannot read CA file {path}")]
    CaFile {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{host}/{repository}: blob {digest} is not in the registry")]
    BlobUnknown {
        host: String,
        repository: String,
        digest: Digest,
    },
    #[error("{repository}: blob {digest} is larger than the {limit} bytes it may be")]
    BlobTooLarge {
        repository: String,
        digest: Digest,
        limit: u64,
    },
    #[error(transparent)]
    BlobDigest(Box<DigestMismatch>),
    #[error("{url}: manifest is larger than {limit} bytes")]
    ManifestTooLarge { url: String, limit: u64 },
    #[error("{url}: manifest content has digest {got}, not the {wanted} it was asked for")]
    ManifestDigest {
        url: String,
        got: Digest,
        wanted: Digest,
    },
    #[error("{url}: the {what} is not valid JSON")]
    Json {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("release artifact in {repo}: {problem}")]
    ReleaseArtifact {
        repo: String,
        problem: ArtifactProblem,
    },
    #[error("{host}: the source registry ignored the range of a resumed download of {digest}")]
    RangeIgnored { host: String, digest: Digest },
    #[error("reading the registry auth file")]
    AuthFile(#[source] crate::auth::AuthFileError),
    #[error("`{host}` is not a registry host")]
    Host {
        host: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the CA file is not PEM certificates")]
    CaPem(#[source] reqwest::Error),
    #[error("the CA file holds no PEM certificate")]
    NoCaCertificate,
    #[error("cannot set up the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("bad request path {path}")]
    RequestPath {
        path: String,
        #[source]
        source: url::ParseError,
    },
    #[error("bad token realm {realm}")]
    TokenRealm {
        realm: String,
        #[source]
        source: url::ParseError,
    },
    #[error("token server {realm} answered with something that is not a token")]
    TokenAnswer {
        realm: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("token server {realm} returned no token")]
    NoToken { realm: String },
}

impl RegistryError {
    /// Whether trying the same thing again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// How often and how patiently to retry a request that failed for a transient reason.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        self.first_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay)
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// PEM certificates trusted in addition to the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    pub retry: RetryPolicy,
    /// Ask token servers for pull access only (a build never pushes; a read-only robot
    /// account would be refused `push`).
    pub pull_only: bool,
    /// Host names to connect to at a fixed address instead of resolving them (a node's
    /// registry reached by its FQDN before DNS knows it). The URL's port still applies.
    pub resolve: Vec<(String, std::net::SocketAddr)>,
}

impl ClientConfig {
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, RegistryError> {
        let pem = std::fs::read(path).map_err(|cause| RegistryError::CaFile {
            path: path.display().to_string(),
            cause,
        })?;
        self.ca_pem = Some(pem);
        Ok(self)
    }
}

impl RegistryClient {
    /// A client for `target` as command-line tools reach it: the login the standard auth files
    /// hold for its host (`skopeo login`, `$REGISTRY_AUTH_FILE`), `ca` trusted beside the
    /// system's roots.
    pub fn for_target(
        target: &crate::mirror::MirrorTarget,
        ca: Option<&Path>,
    ) -> Result<Self, RegistryError> {
        let credentials = crate::auth::AuthFile::discover()
            .map_err(RegistryError::AuthFile)?
            .get(&target.host)
            .cloned();
        let mut config = ClientConfig {
            plain_http: target.plain_http,
            credentials,
            ..ClientConfig::default()
        };
        if let Some(ca) = ca {
            config = config.with_ca_file(ca)?;
        }
        RegistryClient::new(&target.host, config)
    }
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by repository.
    tokens: HashMap<String, String>,
}

/// A session with one registry. Cheap to share: requests run concurrently over one pool.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    host: String,
    credentials: Option<Credentials>,
    retry: RetryPolicy,
    pull_only: bool,
    auth: Mutex<AuthState>,
}

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// The Content-Type the registry sent (parameters dropped); may be empty.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// A blob body being received.
pub struct BlobDownload {
    response: Response,
    offset: u64,
}

impl BlobDownload {
    /// The blob offset of the first byte this body carries.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next piece of the body, `None` at its end. An error here is transient: the
    /// connection broke or timed out.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        self.response
            .chunk()
            .await
            .map_err(|e| RegistryError::Unreachable {
                host: self
                    .response
                    .url()
                    .host_str()
                    .unwrap_or_default()
                    .to_string(),
                cause: e,
            })
    }
}

/// An upload in progress: where the next request for it goes.
#[derive(Debug, Clone)]
pub struct UploadSession {
    pub location: Url,
}

#[derive(Debug)]
pub enum MountOutcome {
    Mounted,
    /// The registry declined the mount and opened an upload instead.
    Declined(UploadSession),
}

impl RegistryClient {
    /// A client for `host[:port]`. Nothing is sent until the first request.
    pub fn new(host: &str, config: ClientConfig) -> Result<Self, RegistryError> {
        let scheme = if config.plain_http { "http" } else { "https" };
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|source| RegistryError::Host {
                host: host.to_string(),
                source,
            })?;
        crate::crypto::install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("airgap/", env!("CARGO_PKG_VERSION")))
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            // Below the built-in registry's idle deadline (60 s): the client lets an idle
            // connection go first, so a request never crosses the server's close.
            .pool_idle_timeout(Duration::from_secs(25))
            // One TCP connection per transfer in flight: multiplexed over one HTTP/2
            // connection, `-j` transfers share one congestion window, which on a WAN link
            // caps the whole copy at one flow's bandwidth (bench/wan.sh: 0.9x skopeo).
            .http1_only()
            // Redirects to blob storage must not carry our Authorization header; reqwest
            // strips it on cross-host redirects.
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(RegistryError::CaPem)?;
            if certs.is_empty() {
                return Err(RegistryError::NoCaCertificate);
            }
            // Beside the system's roots: a registry may use either.
            builder = builder.tls_certs_merge(certs);
        }
        for (name, addr) in &config.resolve {
            builder = builder.resolve(name, *addr);
        }
        let http = builder.build().map_err(RegistryError::HttpClient)?;
        Ok(RegistryClient {
            http,
            base,
            host: host.to_string(),
            credentials: config.credentials,
            retry: config.retry,
            pull_only: config.pull_only,
            auth: Mutex::new(AuthState::default()),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// `GET /v2/`: checks the registry answers and learns how it wants to be authenticated.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/")?;
        let response = self
            .execute(None, Method::GET, || self.http.get(url.clone()), true)
            .await?;
        self.expect(response, &[StatusCode::OK], Method::GET, None)
            .await
            .map(drop)
    }

    pub async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let response = self
            .execute(
                Some(repo),
                Method::HEAD,
                || self.http.head(url.clone()),
                true,
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(response, Method::HEAD, Some(repo)).await),
        }
    }

    /// The digest a manifest reference resolves to, or `None` when the registry lacks it.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Option<Digest>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let accept = accept.join(", ");
        let response = self
            .execute(
                Some(repo),
                Method::HEAD,
                || self.http.head(url.clone()).header(ACCEPT, &accept),
                true,
            )
            .await?;
        match response.status() {
            StatusCode::OK => {
                let digest = response
                    .headers()
                    .get(DOCKER_CONTENT_DIGEST)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| RegistryError::MissingHeader {
                        url: url.to_string(),
                        header: "Docker-Content-Digest",
                    })?;
                Ok(Some(digest))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(response, Method::HEAD, Some(repo)).await),
        }
    }

    /// Fetches a manifest as served, refusing more than [`MAX_MANIFEST_SIZE`] bytes. When
    /// `reference` is a digest the bytes must hash to it; a tag's digest is computed here,
    /// never taken from a header.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let accept = accept.join(", ");
        let response = self
            .execute(
                Some(repo),
                Method::GET,
                || self.http.get(url.clone()).header(ACCEPT, &accept),
                true,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self
            .expect(response, &[StatusCode::OK], Method::GET, Some(repo))
            .await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let bytes = self.read_manifest_body(response, &url).await?;
        let digest = Digest::of(&bytes);
        if let Ok(wanted) = reference.parse::<Digest>() {
            if wanted != digest {
                return Err(RegistryError::ManifestDigest {
                    url: url.to_string(),
                    got: digest,
                    wanted,
                });
            }
        }
        Ok(Some(FetchedManifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// A manifest-sized body, refused past [`MAX_MANIFEST_SIZE`].
    async fn read_manifest_body(
        &self,
        mut body: Response,
        url: &Url,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.chunk().await.map_err(|e| self.unreachable(e))? {
            if (bytes.len() + chunk.len()) as u64 > MAX_MANIFEST_SIZE {
                return Err(RegistryError::ManifestTooLarge {
                    url: url.to_string(),
                    limit: MAX_MANIFEST_SIZE,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// The manifests the registry lists as referrers of `digest` with `artifact_type` (the
    /// OCI 1.1 referrers API, first page). A registry without the API answers 404: none.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<airgap::oci::Descriptor>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Listing {
            #[serde(default)]
            manifests: Vec<airgap::oci::Descriptor>,
        }
        let mut url = self.url(&format!("v2/{repo}/referrers/{digest}"))?;
        url.query_pairs_mut()
            .append_pair("artifactType", artifact_type);
        let response = self
            .execute(Some(repo), Method::GET, || self.http.get(url.clone()), true)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let response = self
            .expect(response, &[StatusCode::OK], Method::GET, Some(repo))
            .await?;
        let bytes = self.read_manifest_body(response, &url).await?;
        let listing: Listing =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
                url: url.to_string(),
                what: "referrers list",
                source,
            })?;
        // The filter is a registry's option (OCI-Filters-Applied); applied here either way.
        Ok(listing
            .manifests
            .into_iter()
            .filter(|m| m.artifact_type.as_deref() == Some(artifact_type))
            .collect())
    }

    /// The repository's tags (`None` when the repository does not exist). Follows the
    /// registry's `Link` pagination.
    pub async fn list_tags(&self, repo: &str) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut next = Some(format!("v2/{repo}/tags/list?n=1000"));
        while let Some(path) = next.take() {
            let url = self.url(&path)?;
            let response = self
                .execute(Some(repo), Method::GET, || self.http.get(url.clone()), true)
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = self
                .expect(response, &[StatusCode::OK], Method::GET, Some(repo))
                .await?;
            // `Link: </v2/<repo>/tags/list?n=..&last=..>; rel="next"`
            next = response
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(target, _)| target.trim_start_matches('/').to_string());
            let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
            let list: TagList =
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
                    url: url.to_string(),
                    what: "tag list",
                    source,
                })?;
            tags.extend(list.tags.unwrap_or_default());
        }
        Ok(Some(tags))
    }

    /// Starts a blob download at byte `from` (a resumed download asks for the rest). The
    /// caller streams and hashes the body; [`BlobDownload::offset`] says where it really
    /// starts, since a registry may ignore the range and send everything.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: u64,
    ) -> Result<BlobDownload, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let response = self
            .execute(
                Some(repo),
                Method::GET,
                || {
                    let req = self.http.get(url.clone());
                    if from > 0 {
                        req.header(RANGE, format!("bytes={from}-"))
                    } else {
                        req
                    }
                },
                true,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::BlobUnknown {
                host: self.host.clone(),
                repository: repo.to_string(),
                digest: *digest,
            });
        }
        let response = self
            .expect(
                response,
                &[StatusCode::OK, StatusCode::PARTIAL_CONTENT],
                Method::GET,
                Some(repo),
            )
            .await?;
        let offset = if response.status() == StatusCode::PARTIAL_CONTENT {
            from
        } else {
            0
        };
        Ok(BlobDownload { response, offset })
    }

    /// Reads a small blob whole (a signature payload, a release index): refused past `limit`
    /// bytes or when it does not hash to `digest`.
    pub async fn get_small_blob(
        &self,
        repo: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut download = self.get_blob(repo, digest, 0).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = download.chunk().await? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(RegistryError::BlobTooLarge {
                    repository: repo.to_string(),
                    digest: *digest,
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::BlobDigest(Box::new(DigestMismatch {
                host: self.host.clone(),
                repository: repo.to_string(),
                digest: *digest,
                actual,
                len: bytes.len() as u64,
            })));
        }
        Ok(bytes)
    }

    fn unreachable(&self, cause: reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            host: self.host.clone(),
            cause,
        }
    }

    /// Asks the registry to link a blob it holds in `from` into `repo`.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome, RegistryError> {
        let url = self.url(&format!(
            "v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
        ))?;
        let response = self
            .execute(
                Some(repo),
                Method::POST,
                || self.http.post(url.clone()),
                true,
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::Declined(self.session(&response)?)),
            _ => Err(self.status_error(response, Method::POST, Some(repo)).await),
        }
    }

    pub async fn start_upload(&self, repo: &str) -> Result<UploadSession, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let response = self
            .execute(
                Some(repo),
                Method::POST,
                || self.http.post(url.clone()),
                true,
            )
            .await?;
        let response = self
            .expect(response, &[StatusCode::ACCEPTED], Method::POST, Some(repo))
            .await?;
        self.session(&response)
    }

    /// Streams `body` into the upload (one PATCH). Not retried here: a body stream cannot be
    /// replayed, so the caller starts the upload over.
    pub async fn upload_chunk(
        &self,
        repo: &str,
        session: UploadSession,
        body: reqwest::Body,
    ) -> Result<UploadSession, RegistryError> {
        let mut body = Some(body);
        let response = self
            .execute(
                Some(repo),
                Method::PATCH,
                || {
                    let mut req = self
                        .http
                        .patch(session.location.clone())
                        .header(CONTENT_TYPE, "application/octet-stream");
                    if let Some(body) = body.take() {
                        req = req.body(body);
                    }
                    req
                },
                false,
            )
            .await?;
        let response = self
            .expect(response, &[StatusCode::ACCEPTED], Method::PATCH, Some(repo))
            .await?;
        self.session(&response)
    }

    /// Commits an upload under `digest`; the registry checks the digest too.
    pub async fn commit_upload(
        &self,
        repo: &str,
        session: UploadSession,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let mut url = session.location;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .execute(
                Some(repo),
                Method::PUT,
                || self.http.put(url.clone()).header("content-length", "0"),
                true,
            )
            .await?;
        self.expect(response, &[StatusCode::CREATED], Method::PUT, Some(repo))
            .await
            .map(drop)
    }

    /// Abandons an upload; failures are ignored (the registry expires it anyway).
    pub async fn cancel_upload(&self, repo: &str, session: UploadSession) {
        let header = self.auth_header(repo).await.ok().flatten();
        let mut req = self.http.delete(session.location);
        if let Some(h) = header {
            req = req.header(AUTHORIZATION, h);
        }
        let _ = req.send().await;
    }

    /// Pushes a manifest byte for byte; returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        let response = self
            .execute(
                Some(repo),
                Method::PUT,
                || {
                    self.http
                        .put(url.clone())
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone())
                },
                true,
            )
            .await?;
        self.expect(response, &[StatusCode::CREATED], Method::PUT, Some(repo))
            .await
            .map(drop)
    }

    /// `DELETE /v2/<repo>/manifests/<reference>`: a manifest by digest (its tags with it) or
    /// a tag alone. `false` when the registry does not have it.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let response = self
            .execute(
                Some(repo),
                Method::DELETE,
                || self.http.delete(url.clone()),
                true,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect(
            response,
            &[StatusCode::ACCEPTED],
            Method::DELETE,
            Some(repo),
        )
        .await
        .map(|_| true)
    }

    /// Asks airgap's built-in registry to collect garbage (`POST /airgap/v1/gc`); answers its
    /// JSON report.
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        grace: Duration,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = self.url(&format!(
            "airgap/v1/gc?dryRun={dry_run}&graceSeconds={}",
            grace.as_secs()
        ))?;
        let response = self
            .execute(None, Method::POST, || self.http.post(url.clone()), true)
            .await?;
        let response = self
            .expect(response, &[StatusCode::OK], Method::POST, None)
            .await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
            url: url.to_string(),
            what: "garbage collection report",
            source,
        })
    }

    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        if let Some(api) = path.trim_start_matches('/').strip_prefix("v2/") {
            check_api_path(api)?;
        }
        self.base
            .join(path)
            .map_err(|source| RegistryError::RequestPath {
                path: path.to_string(),
                source,
            })
    }

    fn session(&self, response: &Response) -> Result<UploadSession, RegistryError> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response.url().join(v).ok())
            .ok_or_else(|| RegistryError::MissingHeader {
                url: response.url().to_string(),
                header: "Location",
            })?;
        Ok(UploadSession { location })
    }

    async fn expect(
        &self,
        response: Response,
        ok: &[StatusCode],
        method: Method,
        repo: Option<&str>,
    ) -> Result<Response, RegistryError> {
        if ok.contains(&response.status()) {
            Ok(response)
        } else {
            Err(self.status_error(response, method, repo).await)
        }
    }

    async fn status_error(
        &self,
        response: Response,
        method: Method,
        repo: Option<&str>,
    ) -> RegistryError {
        let status = response.status();
        let url = response.url().to_string();
        if status == StatusCode::FORBIDDEN {
            return RegistryError::Denied {
                host: self.host.clone(),
                action: if method == Method::GET || method == Method::HEAD {
                    "pull"
                } else {
                    "push"
                },
                repository: repo.unwrap_or_default().to_string(),
            };
        }
        let body = response.bytes().await.unwrap_or_default();
        RegistryError::Status {
            method,
            url,
            status,
            detail: error_detail(&body),
        }
    }

    /// Sends a request with authentication, answering one auth challenge and retrying
    /// transient failures when the request can be replayed.
    async fn execute(
        &self,
        repo: Option<&str>,
        method: Method,
        mut make: impl FnMut() -> RequestBuilder,
        replayable: bool,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut answered_challenge = false;
        loop {
            let mut req = make();
            if let Some(h) = self.auth_header(repo.unwrap_or("")).await? {
                req = req.header(AUTHORIZATION, h);
            }
            tracing::info!(%method, host = %self.host, repo, "request");
            let result = req.send().await;
            let retry_after = match result {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if answered_challenge || !replayable {
                        return Err(self.unauthorized());
                    }
                    answered_challenge = true;
                    self.learn_challenge(response.headers(), repo.unwrap_or(""))
                        .await?;
                    continue;
                }
                Ok(response) if is_retryable_status(response.status()) => {
                    tracing::info!(%method, url = %response.url(), status = %response.status(), "registry error, retrying");
                    if !replayable || attempt + 1 >= self.retry.attempts {
                        return Ok(response);
                    }
                    self.retry.delay(attempt)
                }
                Ok(response) => return Ok(response),
                Err(e) => {
                    let error = RegistryError::Unreachable {
                        host: self.host.clone(),
                        cause: e,
                    };
                    tracing::info!(%method, host = %self.host, error = %describe_error(&error), "request failed");
                    if !replayable || attempt + 1 >= self.retry.attempts {
                        return Err(error);
                    }
                    self.retry.delay(attempt)
                }
            };
            attempt += 1;
            tokio::time::sleep(retry_after).await;
        }
    }

    fn unauthorized(&self) -> RegistryError {
        match &self.credentials {
            None => RegistryError::CredentialsRequired {
                host: self.host.clone(),
            },
            Some(c) => RegistryError::Unauthorized {
                host: self.host.clone(),
                user: format!(" for user {}", c.username),
            },
        }
    }

    async fn learn_challenge(&self, headers: &HeaderMap, repo: &str) -> Result<(), RegistryError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| self.unauthorized())?;
        if challenge == Challenge::Basic && self.credentials.is_none() {
            return Err(self.unauthorized());
        }
        let mut state = self.auth.lock().await;
        state.tokens.remove(repo);
        state.challenge = Some(challenge);
        Ok(())
    }

    async fn auth_header(&self, repo: &str) -> Result<Option<String>, RegistryError> {
        let mut state = self.auth.lock().await;
        match state.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(token) = state.tokens.get(repo) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token = self.fetch_token(&realm, service.as_deref(), repo).await?;
                state.tokens.insert(repo.to_string(), token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        repo: &str,
    ) -> Result<String, RegistryError> {
        let mut url = Url::parse(realm).map_err(|source| RegistryError::TokenRealm {
            realm: realm.to_string(),
            source,
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            if !repo.is_empty() {
                let actions = if self.pull_only { "pull" } else { "pull,push" };
                q.append_pair("scope", &format!("repository:{repo}:{actions}"));
            }
        }
        let mut req = self.http.get(url.clone());
        if let Some(c) = &self.credentials {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let response = req.send().await.map_err(|e| RegistryError::Unreachable {
            host: url.host_str().unwrap_or_default().to_string(),
            cause: e,
        })?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized());
        }
        let response = self
            .expect(response, &[StatusCode::OK], Method::GET, Some(repo))
            .await?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Unreachable {
                host: url.host_str().unwrap_or_default().to_string(),
                cause: e,
            })?;
        let token: Token =
            serde_json::from_slice(&body).map_err(|source| RegistryError::TokenAnswer {
                realm: realm.to_string(),
                source,
            })?;
        token
            .token
            .or(token.access_token)
            .ok_or_else(|| RegistryError::NoToken {
                realm: realm.to_string(),
            })
    }
}

/// The first error a registry reports in its JSON body, or a trimmed text body.
fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body) {
        if let Some(e) = parsed.errors.first() {
            return format!(" ({}: {})", e.code, e.message);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({})", text.chars().take(200).collect::<String>())
    }
}

/// Bytes a registry served for a blob that do not hash to its digest.
#[derive(Debug, thiserror::Error)]
#[error("blob {digest} from {host}/{repository} does not match its digest (the content hashes to {actual}, {len} bytes): the registry's copy was altered or damaged; refusing it")]
pub struct DigestMismatch {
    pub host: String,
    pub repository: String,
    pub digest: Digest,
    pub actual: Digest,
    pub len: u64,
}

/// What is wrong with a release artifact a registry holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactProblem {
    #[error("expected a {media} part")]
    PartType { media: String },
    #[error("a part has no sha256 digest")]
    NoDigest,
    #[error("a part is larger than a release index may be")]
    PartTooLarge,
    #[error("blob {digest} does not hash to its digest")]
    PartDigest { digest: Digest },
    #[error("{tag} is not an airgap release artifact")]
    NotAnArtifact { tag: String },
}

/// reqwest's Display stops at "error sending request"; the cause (refused, TLS, timeout) is
/// what the user needs.
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    describe_error(e)
}

pub use airgap::error_chain::chain as describe_error;

/// Checks a `/v2/` API path before it becomes a URL: the repository is a valid name and what
/// follows it a tag or digest. `Url::join` would resolve `..` and `%2e%2e` into another
/// repository (or out of `/v2/`), so an invalid name is refused, never normalized.
fn check_api_path(api: &str) -> Result<(), RegistryError> {
    use crate::name::{is_valid_repository, is_valid_tag};
    let invalid = |what, name: &str| RegistryError::InvalidName {
        what,
        name: name.to_string(),
    };
    let (path, query) = api.split_once('?').unwrap_or((api, ""));
    if path.is_empty() || path == "_catalog" {
        return Ok(());
    }
    const MARKERS: [&str; 5] = [
        "/blobs/uploads/",
        "/manifests/",
        "/blobs/",
        "/tags/list",
        "/referrers/",
    ];
    let Some((at, marker)) = MARKERS
        .iter()
        .filter_map(|m| path.rfind(m).map(|i| (i, *m)))
        .max_by_key(|(i, m)| (*i, m.len()))
    else {
        return Err(invalid("registry API path", path));
    };
    let repository = &path[..at];
    if !is_valid_repository(repository) {
        return Err(invalid("repository name", repository));
    }
    let rest = &path[at + marker.len()..];
    let is_digest = |r: &str| r.parse::<Digest>().is_ok();
    let ok = match marker {
        "/manifests/" => is_valid_tag(rest) || is_digest(rest),
        "/blobs/" | "/referrers/" => is_digest(rest),
        _ => rest.is_empty(),
    };
    if !ok {
        return Err(invalid("tag or digest", rest));
    }
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        let ok = match key {
            "from" => is_valid_repository(value),
            "mount" | "digest" => is_digest(value),
            _ => true,
        };
        if !ok {
            return Err(invalid("query parameter", value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack named to climb out of its repository is refused by the client itself: the
    /// error is the name's, not the network's (nothing listens on the address), so no request
    /// was attempted.
    #[tokio::test]
    async fn names_that_would_leave_their_repository_are_refused_before_any_request() {
        let client = RegistryClient::new(
            "127.0.0.1:1",
            ClientConfig {
                plain_http: true,
                ..ClientConfig::default()
            },
        )
        .unwrap();
        let long = "a".repeat(300);
        for repo in [
            "x/../../registry.k8s.io/pause",
            "airgap/packs/x/../../../registry.k8s.io/pause",
            "packs/%2e%2e/pause",
            "packs/X",
            "/absolute",
            "packs/a//b",
            long.as_str(),
        ] {
            let err = client
                .put_manifest(repo, "3.10.1", airgap::oci::OCI_MANIFEST, b"{}")
                .await
                .expect_err(repo);
            assert!(
                matches!(err, RegistryError::InvalidName { .. }),
                "{repo}: {err}"
            );
            let err = client.list_tags(repo).await.expect_err(repo);
            assert!(matches!(err, RegistryError::InvalidName { .. }), "{err}");
        }
        for tag in ["../x", "a/b", ".hidden", "%2e"] {
            let err = client
                .manifest_digest("packs/x", tag, &[])
                .await
                .expect_err(tag);
            assert!(
                matches!(err, RegistryError::InvalidName { .. }),
                "{tag}: {err}"
            );
        }
        // A valid name gets as far as the network.
        let err = client
            .list_tags("packs/x")
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    }
}
