//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/...`, `/v3/watch`: on the client
//! port, or on etcd 3.5's `--listen-client-http-urls`), with mutual TLS. The installer needs health, range, create-only and compare-and-swap
//! transactions; the registry's metadata backend adds prefix ranges, multi-key transactions
//! and a watch. The gateway gives all of them without a protobuf toolchain or a gRPC stack in
//! the build.

mod auth;

pub use auth::{Credentials, Permission};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

/// ring as the process's rustls provider, which reqwest 0.13 without aws-lc takes (it panics
/// when there is none); the same one `registry::crypto` installs.
fn install_crypto_provider() {
    #[allow(deprecated)] // ring on purpose: see registry::crypto
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd client TLS material")]
    Tls(#[source] reqwest::Error),
    #[error("etcd client credentials {}", path.display())]
    Credentials {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoint}")]
    Request {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("etcd at {endpoint}: unexpected answer")]
    Answer {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("etcd at {endpoint}: a value is not base64")]
    Encoding {
        endpoint: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("etcd at {endpoint} answered {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("etcd at {endpoint} is not healthy: {body}")]
    Unhealthy { endpoint: String, body: String },
}

/// One stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Created,
    /// The key was there already; nothing was written.
    Exists,
}

#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    /// The same TLS identity without a whole-request timeout, for watches that stream.
    streaming: reqwest::Client,
    endpoint: String,
    /// The same member at another URL, tried when `endpoint` refuses connections (see
    /// [`EtcdClient::with_alternate`]).
    alternate: Option<String>,
    /// Other members' endpoints, tried in turn when `endpoint` cannot be reached.
    fallbacks: Vec<String>,
    /// The user this client authenticates as, and its tokens ([`auth`]).
    session: Option<auth::Session>,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Option<Header>,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: String,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    create_revision: String,
    #[serde(default)]
    mod_revision: String,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Option<Header>,
    #[serde(default)]
    succeeded: bool,
}

impl EtcdClient {
    /// `endpoint` is `https://HOST:2379`; the CA, certificate and key are PEM.
    pub fn new(
        endpoint: &str,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, EtcdError> {
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(EtcdError::Tls)?;
        // The identity holds the private key: zeroed when dropped.
        let mut identity = zeroize::Zeroizing::new(cert_pem.to_vec());
        identity.extend_from_slice(b"\n");
        identity.extend_from_slice(key_pem);
        let identity = reqwest::Identity::from_pem(&identity).map_err(EtcdError::Tls)?;
        install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .tls_backend_rustls()
                .tls_certs_only([ca.clone()])
                .identity(identity.clone())
                .tls_version_min(reqwest::tls::Version::TLS_1_2)
                .no_proxy()
                .connect_timeout(std::time::Duration::from_secs(3))
        };
        let http = builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(EtcdError::Tls)?;
        let streaming = builder().build().map_err(EtcdError::Tls)?;
        Ok(EtcdClient {
            http,
            streaming,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            alternate: None,
            fallbacks: Vec::new(),
            session: None,
        })
    }

    /// The same client that, when its endpoint cannot be reached (the member is restarting
    /// or down), sends each request to `others` in turn: what a node's VIP holder needs to
    /// keep its claim while its own member restarts. Health checks stay on the endpoint.
    pub fn with_fallbacks(mut self, others: Vec<String>) -> Self {
        self.fallbacks = others
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .filter(|e| *e != self.endpoint && Some(e) != self.alternate.as_ref())
            .collect();
        self
    }

    /// The same client that, when its endpoint refuses the connection, asks the same member
    /// at `url`: a member can serve its JSON gateway on more than one port, and one configured
    /// by an older release only on the other. Health checks try it too: it is the same member.
    pub fn with_alternate(mut self, url: &str) -> Self {
        let url = url.trim_end_matches('/');
        self.alternate = (url != self.endpoint).then(|| url.to_string());
        self
    }

    /// The endpoint, then the alternate: the URLs of this client's own member.
    fn own_urls(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.endpoint).chain(&self.alternate)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request_error(&self, source: reqwest::Error) -> EtcdError {
        EtcdError::Request {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<Vec<u8>, EtcdError> {
        let body = body.to_string();
        let mut retried_token = false;
        loop {
            let (endpoint, status, bytes) = self.send(path, &body).await?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                // A token the member no longer knows (expired, or the member restarted), or a
                // member that turned auth on since: authenticate again, once.
                if let Some(session) = &self.session {
                    if !retried_token && auth::is_token_refusal(&text) {
                        session.forget(&endpoint);
                        retried_token = true;
                        continue;
                    }
                }
                return Err(EtcdError::Status {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                    body: text.chars().take(300).collect(),
                });
            }
            return Ok(bytes);
        }
    }

    /// One POST: to the endpoint, then each fallback when the one before could not be
    /// reached. Returns which endpoint answered and what.
    async fn send(
        &self,
        path: &str,
        body: &str,
    ) -> Result<(String, reqwest::StatusCode, Vec<u8>), EtcdError> {
        let candidates: Vec<&String> = self.own_urls().chain(&self.fallbacks).collect();
        let mut tried = 0;
        loop {
            let endpoint = candidates[tried];
            let more = tried + 1 < candidates.len();
            let token = match self.token_for(endpoint).await {
                Ok(t) => t,
                Err(EtcdError::Request { source, .. }) if source.is_connect() && more => {
                    tried += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut request = self
                .http
                .post(format!("{endpoint}{path}"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(r) => {
                    let status = r.status();
                    let bytes = r.bytes().await.map_err(|e| self.request_error(e))?;
                    return Ok((endpoint.clone(), status, bytes.to_vec()));
                }
                Err(e) if e.is_connect() && more => tried += 1,
                Err(e) => return Err(self.request_error(e)),
            }
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, bytes: &[u8]) -> Result<T, EtcdError> {
        serde_json::from_slice(bytes).map_err(|source| EtcdError::Answer {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    /// `GET /health`: etcd's own view (a member with a leader, serving).
    pub async fn health(&self) -> Result<(), EtcdError> {
        let urls: Vec<&String> = self.own_urls().collect();
        let mut tried = 0;
        let response = loop {
            match self
                .http
                .get(format!("{}/health", urls[tried]))
                .send()
                .await
            {
                Err(e) if e.is_connect() && tried + 1 < urls.len() => tried += 1,
                answer => break answer.map_err(|e| self.request_error(e))?,
            }
        };
        let body = response.text().await.map_err(|e| self.request_error(e))?;
        let healthy = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("health").cloned())
            .is_some_and(|h| h == "true" || h == true);
        if healthy {
            Ok(())
        } else {
            Err(EtcdError::Unhealthy {
                endpoint: self.endpoint.clone(),
                body: body.chars().take(200).collect(),
            })
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        self.range_one(key, false).await
    }

    /// `key` as the member's own applied state holds it (a serializable read): no round trip
    /// to the leader, so it answers while the cluster elects one, and never from a write that
    /// did not commit; it may lag the newest. What a watcher that only acts through a
    /// compare-and-swap afterwards needs.
    pub async fn get_local(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        self.range_one(key, true).await
    }

    async fn range_one(
        &self,
        key: &str,
        serializable: bool,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let bytes = self
            .post(
                "/v3/kv/range",
                json!({ "key": B64.encode(key), "serializable": serializable }),
            )
            .await?;
        let response: RangeResponse = self.parse(&bytes)?;
        let Some(kv) = response.kvs.into_iter().next() else {
            return Ok(None);
        };
        let revision = |s: &str| s.parse::<i64>().unwrap_or(0);
        Ok(Some(KeyValue {
            value: B64.decode(kv.value).map_err(|source| EtcdError::Encoding {
                endpoint: self.endpoint.clone(),
                source,
            })?,
            create_revision: revision(&kv.create_revision),
            mod_revision: revision(&kv.mod_revision),
        }))
    }

    /// Writes `value` only if `key` does not exist (a transaction comparing its create
    /// revision with 0), so two installers, or a re-run, can never overwrite a key.
    pub async fn create(&self, key: &str, value: &[u8]) -> Result<Create, EtcdError> {
        let key = B64.encode(key);
        let body = json!({
            "compare": [{
                "key": key,
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }],
            "success": [{ "request_put": { "key": key, "value": B64.encode(value) } }],
        });
        let bytes = self.post("/v3/kv/txn", body).await?;
        let response: TxnResponse = self.parse(&bytes)?;
        Ok(if response.succeeded {
            Create::Created
        } else {
            Create::Exists
        })
    }

    /// Writes `value` only if `key` was last modified at `mod_revision` (0: does not exist):
    /// the compare-and-swap cluster-scoped state (upgrade plans, trusted release) moves by.
    /// `false` when another writer got there first; nothing was written then.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        mod_revision: i64,
        value: &[u8],
    ) -> Result<bool, EtcdError> {
        let key = B64.encode(key);
        let body = json!({
            "compare": [{
                "key": key,
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": mod_revision.to_string(),
            }],
            "success": [{ "request_put": { "key": key, "value": B64.encode(value) } }],
        });
        let bytes = self.post("/v3/kv/txn", body).await?;
        let response: TxnResponse = self.parse(&bytes)?;
        Ok(response.succeeded)
    }
}

/// A condition of a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key exists.
    Exists(String),
    /// The key does not exist.
    Absent(String),
    /// The key was last modified at this revision.
    ModRevision(String, i64),
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// A batch of watch events, all at `revision`.
#[derive(Debug, Clone)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Deserialize)]
struct WatchLine {
    #[serde(default)]
    result: Option<WatchResult>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Option<Header>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    compact_revision: String,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default, rename = "type")]
    kind: String,
    kv: RawKv,
}

impl EtcdClient {
    fn decode(&self, s: &str) -> Result<Vec<u8>, EtcdError> {
        B64.decode(s).map_err(|source| EtcdError::Encoding {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    fn decode_key(&self, s: &str) -> Result<String, EtcdError> {
        String::from_utf8(self.decode(s)?).map_err(|_| EtcdError::Status {
            endpoint: self.endpoint.clone(),
            status: 200,
            body: "a key is not UTF-8".into(),
        })
    }

    /// Every key under `prefix` with its value, read at one revision (pages of 1,000 keys),
    /// and that revision: a watch from the next one misses nothing.
    pub async fn range_prefix(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Vec<u8>)>, i64), EtcdError> {
        let end = B64.encode(prefix_end(prefix));
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut revision = 0i64;
        loop {
            let mut body = json!({
                "key": B64.encode(&from),
                "range_end": end,
                "limit": "1000",
            });
            if revision > 0 {
                body["revision"] = json!(revision.to_string());
            }
            let bytes = self.post("/v3/kv/range", body).await?;
            let response: RangeResponse = self.parse(&bytes)?;
            if revision == 0 {
                revision = response
                    .header
                    .as_ref()
                    .and_then(|h| h.revision.parse().ok())
                    .unwrap_or(0);
            }
            for kv in &response.kvs {
                out.push((self.decode_key(&kv.key)?, self.decode(&kv.value)?));
            }
            match (response.more, out.last()) {
                (true, Some((last, _))) => {
                    from = last.as_bytes().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// Applies `ops` atomically if every comparison holds; `false` (nothing written) if not.
    pub async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, EtcdError> {
        Ok(self.txn_at(compares, ops).await?.is_some())
    }

    /// [`EtcdClient::txn`], answering the store's revision after the transaction when it
    /// applied: the mod revision of every key it put, which a later compare-and-swap names.
    pub async fn txn_at(&self, compares: &[Compare], ops: &[Op]) -> Result<Option<i64>, EtcdError> {
        let compare: Vec<_> = compares
            .iter()
            .map(|c| match c {
                Compare::Exists(k) => json!({
                    "key": B64.encode(k), "target": "CREATE", "result": "GREATER",
                    "create_revision": "0",
                }),
                Compare::Absent(k) => json!({
                    "key": B64.encode(k), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0",
                }),
                Compare::ModRevision(k, rev) => json!({
                    "key": B64.encode(k), "target": "MOD", "result": "EQUAL",
                    "mod_revision": rev.to_string(),
                }),
            })
            .collect();
        let success: Vec<_> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => {
                    json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } })
                }
                Op::Delete(k) => json!({ "request_delete_range": { "key": B64.encode(k) } }),
            })
            .collect();
        let bytes = self
            .post(
                "/v3/kv/txn",
                json!({ "compare": compare, "success": success }),
            )
            .await?;
        let response: TxnResponse = self.parse(&bytes)?;
        if !response.succeeded {
            return Ok(None);
        }
        Ok(Some(
            response
                .header
                .and_then(|h| h.revision.parse().ok())
                .unwrap_or(0),
        ))
    }

    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.post("/v3/kv/deleterange", json!({ "key": B64.encode(key) }))
            .await
            .map(drop)
    }

    /// Watches every key under `prefix` from `start_revision`, sending each batch of events
    /// to `sink` until the watch ends (the server closes it, the revision was compacted, or
    /// the sink is dropped). The caller re-reads and watches again after an error.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
        sink: tokio::sync::mpsc::Sender<WatchBatch>,
    ) -> Result<(), EtcdError> {
        use futures_util::StreamExt;
        let body = json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let mut request = self
            .streaming
            .post(format!("{}/v3/watch", self.endpoint))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = self.token_for(&self.endpoint).await? {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let response = request.send().await.map_err(|e| self.request_error(e))?;
        if !response.status().is_success() {
            return Err(EtcdError::Status {
                endpoint: self.endpoint.clone(),
                status: response.status().as_u16(),
                body: String::new(),
            });
        }
        let mut stream = response.bytes_stream();
        let mut pending = Vec::new();
        while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk.map_err(|e| self.request_error(e))?);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed: WatchLine = self.parse(&line)?;
                let result = match (parsed.result, parsed.error) {
                    (Some(r), None) => r,
                    (_, error) => {
                        // The caller watches again; with a fresh token if that was it.
                        if let Some(session) = &self.session {
                            session.forget(&self.endpoint);
                        }
                        return Err(EtcdError::Status {
                            endpoint: self.endpoint.clone(),
                            status: 200,
                            body: format!("watch failed: {}", error.unwrap_or_default()),
                        });
                    }
                };
                if result.canceled {
                    return Err(EtcdError::Status {
                        endpoint: self.endpoint.clone(),
                        status: 200,
                        body: format!(
                            "watch canceled: {} (compacted at {})",
                            result.cancel_reason, result.compact_revision
                        ),
                    });
                }
                if result.events.is_empty() {
                    continue;
                }
                let mut events = Vec::with_capacity(result.events.len());
                for e in &result.events {
                    let key = self.decode_key(&e.kv.key)?;
                    events.push(if e.kind == "DELETE" {
                        WatchEvent::Delete { key }
                    } else {
                        WatchEvent::Put {
                            key,
                            value: self.decode(&e.kv.value)?,
                        }
                    });
                }
                let revision = result
                    .header
                    .and_then(|h| h.revision.parse().ok())
                    .unwrap_or(0);
                if sink.send(WatchBatch { revision, events }).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// One member of the etcd cluster as `member list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and announced itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Deserialize)]
struct MemberListResponse {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct MemberAddResponse {
    member: Option<RawMember>,
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMember {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(default)]
    is_learner: bool,
}

impl RawMember {
    fn into_member(self) -> Option<Member> {
        Some(Member {
            id: self.id.parse().ok()?,
            name: self.name,
            peer_urls: self.peer_urls,
            client_urls: self.client_urls,
            is_learner: self.is_learner,
        })
    }
}

/// Cluster membership (`/v3/cluster/member/...`): how an HA node joins (added as a learner,
/// promoted once it caught up) and how a dead one is removed.
impl EtcdClient {
    pub async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        let bytes = self
            .post("/v3/cluster/member/list", json!({ "linearizable": true }))
            .await?;
        let response: MemberListResponse = self.parse(&bytes)?;
        Ok(response
            .members
            .into_iter()
            .filter_map(RawMember::into_member)
            .collect())
    }

    /// Adds a member with `peer_url`; a learner does not vote until promoted, so a member that
    /// never starts cannot cost the cluster its quorum. Returns the new member and the whole
    /// list (what the new member's `--initial-cluster` must name).
    pub async fn member_add(
        &self,
        peer_url: &str,
        learner: bool,
    ) -> Result<(Member, Vec<Member>), EtcdError> {
        let bytes = self
            .post(
                "/v3/cluster/member/add",
                json!({ "peerURLs": [peer_url], "isLearner": learner }),
            )
            .await?;
        let response: MemberAddResponse = self.parse(&bytes)?;
        let member = response
            .member
            .and_then(RawMember::into_member)
            .ok_or_else(|| EtcdError::Status {
                endpoint: self.endpoint.clone(),
                status: 200,
                body: "member add answered without the member".into(),
            })?;
        let members = response
            .members
            .into_iter()
            .filter_map(RawMember::into_member)
            .collect();
        Ok((member, members))
    }

    /// Promotes a learner to a voting member; etcd refuses until the learner's log caught up
    /// with the leader's, so callers retry.
    pub async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
        self.post(
            "/v3/cluster/member/promote",
            json!({ "ID": id.to_string() }),
        )
        .await
        .map(drop)
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
        self.post("/v3/cluster/member/remove", json!({ "ID": id.to_string() }))
            .await
            .map(drop)
    }
}

/// A member's own view of the cluster (`/v3/maintenance/status`), asked of that member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The member it follows (itself when it leads); 0 while there is no leader.
    pub leader: u64,
    /// The last entry in its raft log, and the last it applied.
    pub raft_index: u64,
    pub raft_applied_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    header: Option<RawStatusHeader>,
    #[serde(default)]
    leader: String,
    #[serde(default)]
    raft_index: String,
    #[serde(default)]
    raft_applied_index: String,
}

#[derive(Deserialize)]
struct RawStatusHeader {
    #[serde(default)]
    member_id: String,
}

/// Leadership and progress (`/v3/maintenance/...`): how a rolling upgrade moves leadership off
/// a member before restarting it, and waits until the restarted one caught up.
impl EtcdClient {
    /// The status of the member at this client's endpoint.
    pub async fn member_status(&self) -> Result<MemberStatus, EtcdError> {
        let bytes = self.post("/v3/maintenance/status", json!({})).await?;
        let raw: RawStatus = self.parse(&bytes)?;
        let number = |s: &str| s.parse::<u64>().unwrap_or(0);
        Ok(MemberStatus {
            member_id: raw.header.map(|h| number(&h.member_id)).unwrap_or(0),
            leader: number(&raw.leader),
            raft_index: number(&raw.raft_index),
            raft_applied_index: number(&raw.raft_applied_index),
        })
    }

    /// Hands leadership to member `target`; only the leader accepts it, so this client's
    /// endpoint must be the leader.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        self.post(
            "/v3/maintenance/transfer-leadership",
            json!({ "targetID": target.to_string() }),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
