//! `airgap join`: this node becomes the next member of an HA cluster.
//!
//! Before anything is written: the token parses, the bundle verifies, and the server proves
//! it holds the CA the token pins (the TLS handshake fails otherwise, so the secret is never
//! sent to an impostor). The node's keys are generated in memory and only signing requests
//! leave it; the answer (shared CA material, the FQDN certificate, the encryption
//! configuration, sealed under the operator's certificate key and opened here; install.yaml,
//! the issued certificates, the etcd membership) is written
//! only once the cluster accepted the join, then recorded in `var/lib/airgap/join.json`, so a
//! re-run after any failure (even SIGKILL) goes straight on with the phases and never
//! spends another token use. The phases are `install`'s; what is cluster-scoped is read.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::certificate_key::{CertificateKey, CertificateKeyError, SharedMaterial};
use super::pin::{CaPin, PinnedCaVerifier};
use super::protocol::{
    EtcdJoin, JoinRefused, JoinRequest, JoinResponse, NodeCsrs, JOIN_PATH, JOIN_PORT,
};
use super::token::{JoinToken, TokenError};
use crate::files::{write_atomic, PRIVATE, PUBLIC};
use crate::layout::NodeLayout;
use crate::pki::{key_and_csr_in_memory, PairPaths};
use crate::release::Release;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    CertificateKey(#[from] CertificateKeyError),
    #[error("--server {0}: expected HOST or HOST:PORT")]
    Server(String),
    #[error("refusing {server}: {detail}")]
    Pin { server: String, detail: String },
    #[error("cannot reach the join API at {server}")]
    Unreachable {
        server: String,
        #[source]
        cause: reqwest::Error,
    },
    #[error("the cluster at {server} refused the join: {why}")]
    Refused { server: String, why: String },
    #[error("the join API at {server} answered something that is not a join answer")]
    Answer {
        server: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a join record", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What a joined node keeps about its join (no secret): enough to run the phases again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinState {
    pub node: String,
    pub server: String,
    pub etcd: EtcdJoin,
}

impl JoinState {
    pub fn load(layout: &NodeLayout) -> Result<Option<JoinState>, JoinError> {
        let path = layout.join_state();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| JoinError::State { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JoinError::Write { path, source }),
        }
    }
}

/// `HOST[:PORT]` to `https://HOST:PORT` (the join port when none is given).
fn server_url(server: &str) -> Result<String, JoinError> {
    let bad = || JoinError::Server(server.to_string());
    if server.is_empty() || server.contains('/') {
        return Err(bad());
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => format!("https://{a}:{JOIN_PORT}"),
            IpAddr::V6(a) => format!("https://[{a}]:{JOIN_PORT}"),
        });
    }
    let has_port = server
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    let url = if has_port {
        format!("https://{server}")
    } else {
        format!("https://{server}:{JOIN_PORT}")
    };
    reqwest::Url::parse(&url).map_err(|_| bad())?;
    Ok(url)
}

/// Asks the cluster at `server` to admit this node; writes what it answered under `layout`.
pub async fn request_join(
    layout: &NodeLayout,
    token_text: &str,
    server: &str,
    node: Option<&str>,
    certificate_key: &CertificateKey,
    release: &Release,
) -> Result<JoinState, JoinError> {
    let (token, pin) = JoinToken::parse(token_text)?;
    let url = server_url(server)?;
    // Keys in memory until the cluster said yes: a refused join writes nothing.
    let (etcd_server_key, etcd_server_csr) = key_and_csr_in_memory("etcd-server")?;
    let (etcd_peer_key, etcd_peer_csr) = key_and_csr_in_memory("etcd-peer")?;
    let (agent_key, agent_csr) = key_and_csr_in_memory("airgap-agent")?;
    let request = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.expose().to_string(),
        node: node.map(str::to_string),
        addresses: crate::config::local_addresses(),
        release: release.id().clone(),
        certificate_key_id: certificate_key.id(),
        csrs: NodeCsrs {
            etcd_server: etcd_server_csr,
            etcd_peer: etcd_peer_csr,
            agent: agent_csr,
        },
    };
    let answer = post(&url, server, pin, &request).await?;
    drop(request);
    crate::failpoint::Failpoint::reached_named("join-answered");
    let shared = SharedMaterial::open(&answer.shared, certificate_key)?;

    let w = |path: PathBuf, bytes: &[u8], mode: u32| {
        write_atomic(&path, bytes, mode).map_err(|source| JoinError::Write { path, source })
    };
    let pair = |paths: PairPaths, pair: &super::protocol::SharedPair| {
        w(paths.key, pair.key.0.expose().as_bytes(), PRIVATE)?;
        w(paths.cert, pair.cert.as_bytes(), PUBLIC)
    };
    pair(PairPaths::new(&layout.pki_dir(), "ca"), &shared.cluster_ca)?;
    pair(
        PairPaths::new(&layout.etcd_pki_dir(), "ca"),
        &shared.etcd_ca,
    )?;
    pair(
        PairPaths {
            cert: layout.fqdn_cert(),
            key: layout.fqdn_key(),
        },
        &shared.fqdn,
    )?;
    w(layout.fqdn_ca(), shared.fqdn_ca.as_bytes(), PUBLIC)?;
    w(
        layout.encryption_config(),
        shared.encryption_config.0.expose().as_bytes(),
        PRIVATE,
    )?;
    if let Some((root, registry)) = &shared.etcd_passwords {
        crate::etcd::auth::EtcdPasswords {
            root: root.0.clone(),
            registry: registry.0.clone(),
        }
        .write(layout)
        .map_err(|source| JoinError::Write {
            path: layout.etcd_password(crate::etcd::auth::ROOT),
            source,
        })?;
    }
    w(
        layout.install_yaml(),
        answer.install_yaml.as_bytes(),
        PUBLIC,
    )?;
    let etcd_dir = layout.etcd_pki_dir();
    for (stem, key, cert) in [
        ("server", &etcd_server_key, &answer.certificates.etcd_server),
        ("peer", &etcd_peer_key, &answer.certificates.etcd_peer),
    ] {
        pair(
            PairPaths::new(&etcd_dir, stem),
            &super::protocol::SharedPair {
                cert: cert.clone(),
                key: super::protocol::SecretPem(key.clone()),
            },
        )?;
    }
    pair(
        layout.agent_pair(),
        &super::protocol::SharedPair {
            cert: answer.certificates.agent.clone(),
            key: super::protocol::SecretPem(agent_key),
        },
    )?;
    let state = JoinState {
        node: answer.node.clone(),
        server: server.to_string(),
        etcd: answer.etcd.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&state).map_err(|source| JoinError::State {
        path: layout.join_state(),
        source,
    })?;
    bytes.push(b'\n');
    // Last: its presence means everything above is in place.
    w(layout.join_state(), &bytes, PUBLIC)?;
    Ok(state)
}

async fn post(
    url: &str,
    server: &str,
    pin: CaPin,
    request: &JoinRequest,
) -> Result<JoinResponse, JoinError> {
    let mismatch = Arc::new(Mutex::new(None));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(PinnedCaVerifier::client_config(pin, mismatch.clone()))
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|cause| JoinError::Unreachable {
            server: server.to_string(),
            cause,
        })?;
    let body = serde_json::to_vec(request).map_err(|source| JoinError::Answer {
        server: server.to_string(),
        source,
    })?;
    let response = client
        .post(format!("{url}{JOIN_PATH}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if let Some(detail) = mismatch.lock().ok().and_then(|m| m.clone()) {
                return JoinError::Pin {
                    server: server.to_string(),
                    detail,
                };
            }
            JoinError::Unreachable {
                server: server.to_string(),
                cause: e,
            }
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|cause| JoinError::Unreachable {
            server: server.to_string(),
            cause,
        })?;
    if !status.is_success() {
        let why = serde_json::from_slice::<JoinRefused>(&bytes)
            .map(|r| r.error)
            .unwrap_or_else(|_| format!("HTTP {status}"));
        return Err(JoinError::Refused {
            server: server.to_string(),
            why,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| JoinError::Answer {
        server: server.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_get_the_join_port() {
        assert_eq!(server_url("10.0.0.1").unwrap(), "https://10.0.0.1:9443");
        assert_eq!(
            server_url("10.0.0.1:1234").unwrap(),
            "https://10.0.0.1:1234"
        );
        assert_eq!(
            server_url("mgmt.example").unwrap(),
            "https://mgmt.example:9443"
        );
        assert_eq!(server_url("fd00::1").unwrap(), "https://[fd00::1]:9443");
        assert!(server_url("https://x/y").is_err());
        assert!(server_url("").is_err());
    }
}
