//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/...` on the client port), with
//! mutual TLS. The installer needs four calls (health, range, create-only txn, status); the
//! gateway gives them without a protobuf toolchain or a gRPC stack in the build.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

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
    endpoint: String,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct RawKv {
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
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(EtcdError::Tls)?;
        Ok(EtcdClient {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
        })
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
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.request_error(e))?;
        if !status.is_success() {
            return Err(EtcdError::Status {
                endpoint: self.endpoint.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(bytes.to_vec())
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, bytes: &[u8]) -> Result<T, EtcdError> {
        serde_json::from_slice(bytes).map_err(|source| EtcdError::Answer {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    /// `GET /health`: etcd's own view (a member with a leader, serving).
    pub async fn health(&self) -> Result<(), EtcdError> {
        let response = self
            .http
            .get(format!("{}/health", self.endpoint))
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
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
        let bytes = self
            .post("/v3/kv/range", json!({ "key": B64.encode(key) }))
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

/// The client a node's installer and status use: this node's etcd endpoint, the etcd CA, and
/// the `apiserver-etcd-client` certificate.
pub fn for_node(
    layout: &crate::layout::NodeLayout,
    endpoint: &str,
) -> Result<EtcdClient, EtcdError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| EtcdError::Credentials { path, source })
    };
    let key = zeroize::Zeroizing::new(read(layout.pki_dir().join("apiserver-etcd-client.key"))?);
    EtcdClient::new(
        endpoint,
        &read(layout.etcd_pki_dir().join("ca.crt"))?,
        &read(layout.pki_dir().join("apiserver-etcd-client.crt"))?,
        &key,
    )
}
