//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/...` on the client port), with
//! mutual TLS. The installer needs four calls (health, range, create-only txn, status); the
//! gateway gives them without a protobuf toolchain or a gRPC stack in the build.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd client TLS material: {0}")]
    Tls(String),
    #[error("etcd at {endpoint}: {cause}")]
    Request { endpoint: String, cause: String },
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
        let ca =
            reqwest::Certificate::from_pem(ca_pem).map_err(|e| EtcdError::Tls(e.to_string()))?;
        let mut identity = cert_pem.to_vec();
        identity.extend_from_slice(b"\n");
        identity.extend_from_slice(key_pem);
        let identity =
            reqwest::Identity::from_pem(&identity).map_err(|e| EtcdError::Tls(e.to_string()))?;
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
            .map_err(|e| EtcdError::Tls(e.to_string()))?;
        Ok(EtcdClient {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request_error(&self, e: reqwest::Error) -> EtcdError {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        EtcdError::Request {
            endpoint: self.endpoint.clone(),
            cause,
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
        serde_json::from_slice(bytes).map_err(|e| EtcdError::Request {
            endpoint: self.endpoint.clone(),
            cause: format!("unexpected answer: {e}"),
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
            value: B64.decode(kv.value).map_err(|e| EtcdError::Request {
                endpoint: self.endpoint.clone(),
                cause: format!("value is not base64: {e}"),
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
}
