//! The join API every HA node serves (the agent's `cluster` service): `POST /join/v1`, over
//! TLS with the FQDN certificate and its CA in the chain, so a joining node can check the CA
//! against its token's pin. A join is decided in this order, and refused with one line and
//! nothing changed at the first failing check: the token (known, secret, not expired, a use
//! left), the release (the cluster's trusted one), the node (one of install.yaml's three,
//! not already a started member), the signing requests. Only then is the node added to etcd as
//! a learner, its certificates issued and the token spent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::protocol::{
    EtcdJoin, JoinRefused, JoinRequest, JoinResponse, NodeCertificates, SecretPem, SharedPair,
    JOIN_PATH, JOIN_PORT,
};
use super::token::{self, JoinToken};
use super::ClusterError;
use crate::config::{InstallConfig, Node};
use crate::etcd::client::EtcdClient;
use crate::etcd::{url, PEER_PORT};
use crate::layout::NodeLayout;
use crate::pki::{CertificateAuthority, LeafSpec, PairPaths};
use crate::secret::SecretString;

const MAX_REQUEST: usize = 256 * 1024;

/// The join API of one node.
pub struct JoinApi {
    layout: NodeLayout,
    config: InstallConfig,
    etcd: EtcdClient,
    /// Serializes joins: etcd admits one learner at a time, and two joins of one node must
    /// not both add it.
    joining: tokio::sync::Mutex<()>,
    /// Refused joins per source address: a guesser is told to wait after a few.
    refusals: registry::server::failure_budget::FailureBudget,
}

/// Refused joins one address may cause in [`REFUSAL_WINDOW`] before it is told to wait.
pub const REFUSAL_BUDGET: u32 = 5;
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a join was refused: said to the joining node in one line.
#[derive(Debug)]
pub struct Refusal(pub String);

impl<E: std::fmt::Display> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal(e.to_string())
    }
}

impl JoinApi {
    pub fn new(layout: NodeLayout, config: InstallConfig, etcd: EtcdClient) -> Self {
        JoinApi {
            layout,
            config,
            etcd,
            joining: tokio::sync::Mutex::new(()),
            refusals: registry::server::failure_budget::FailureBudget::new(
                REFUSAL_BUDGET,
                REFUSAL_WINDOW,
            ),
        }
    }

    /// Serves until the task is dropped, on every address of the node: its own and the VIP
    /// while it holds it.
    pub async fn serve(self: Arc<Self>, address: IpAddr) -> Result<(), ClusterError> {
        let any: IpAddr = match address {
            IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let listen = SocketAddr::new(any, JOIN_PORT);
        let read = |p: std::path::PathBuf| {
            std::fs::read(&p).map_err(|source| ClusterError::Io {
                what: "reading",
                path: p,
                source,
            })
        };
        // The chain ends with the CA, which is what the joining node pins.
        let mut chain = read(self.layout.fqdn_cert())?;
        chain.push(b'\n');
        chain.extend(read(self.layout.fqdn_ca())?);
        let key = zeroize::Zeroizing::new(read(self.layout.fqdn_key())?);
        let acceptor =
            registry::server::tls_acceptor_from_pem(&chain, &key, "the FQDN certificate")
                .map_err(|e| ClusterError::Tls(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: listen,
                source,
            })?;
        tracing::info!(%listen, "join API listening");
        // A join is a handful of requests from three known machines: small caps.
        let gate = registry::server::connection::ConnectionGate::new(
            registry::server::connection::ConnectionPolicy {
                per_client: 8,
                total: 64,
                ..Default::default()
            },
        );
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let api = self.clone();
            tokio::spawn(
                gate.clone()
                    .serve(stream, peer, Some(acceptor.clone()), move |req| {
                        let api = api.clone();
                        async move { api.route(req, peer).await }
                    }),
            );
        }
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if req.method() == Method::GET && req.uri().path() == "/healthz" {
            return respond(StatusCode::OK, b"ok".to_vec());
        }
        if req.method() != Method::POST || req.uri().path() != JOIN_PATH {
            return refuse(StatusCode::NOT_FOUND, "no such endpoint".into());
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "the request is too large".into()),
        };
        let request: JoinRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not a join request: {e}")),
        };
        if self.refusals.spent(peer.ip()) {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many refused joins from {}; wait a minute and check the token and the node",
                    peer.ip()
                ),
            );
        }
        let _one_at_a_time = self.joining.lock().await;
        match self.join(request, peer.ip()).await {
            Ok(answer) => {
                tracing::info!(%peer, node = %answer.node, "node joined");
                match serde_json::to_vec(&answer) {
                    Ok(bytes) => respond(StatusCode::OK, bytes),
                    Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            Err(Refusal(why)) => {
                self.refusals.failed(peer.ip());
                tracing::warn!(%peer, %why, "join refused");
                refuse(StatusCode::FORBIDDEN, why)
            }
        }
    }

    /// Decides and performs one join. `source` is the address the request came from: the
    /// node joining is the install.yaml node with that address, and no other, so a token
    /// alone (stolen, or left in a shell history) does not hand the cluster's keys to another
    /// machine.
    pub async fn join(
        &self,
        request: JoinRequest,
        source: IpAddr,
    ) -> Result<JoinResponse, Refusal> {
        let node = self.node_for(&request, source)?.clone();
        let token = JoinToken {
            id: request.token_id.clone(),
            secret: SecretString::new(request.secret.clone()),
        };
        token::check(&self.etcd, &token)
            .await
            .map_err(token_refusal)?;
        let trusted = crate::release::trusted(&self.etcd)
            .await?
            .ok_or_else(|| Refusal("the cluster has no trusted release yet".into()))?;
        if trusted != request.release {
            return Err(Refusal(format!(
                "the cluster runs {trusted} (bundle.json sha256 {}), the joining node's bundle is {} (sha256 {}); join with the cluster's bundle, then upgrade",
                trusted.index_sha256, request.release, request.release.index_sha256
            )));
        }
        let peer_url = url(node.address, PEER_PORT);
        let members = self.etcd.member_list().await?;
        if let Some(m) = members.iter().find(|m| m.peer_urls.contains(&peer_url)) {
            if !m.name.is_empty() {
                return Err(Refusal(format!(
                    "{} is already an etcd member of this cluster; a node that lost its state is removed first with `airgap node remove {}`",
                    node.name, node.name
                )));
            }
        }
        let (ca, _) = self.load_ca(&self.layout.pki_dir(), "cluster")?;
        let (etcd_ca, _) = self.load_ca(&self.layout.etcd_pki_dir(), "etcd")?;
        let member = LeafSpec::etcd_member(&node);
        let certificates = NodeCertificates {
            etcd_server: etcd_ca.issue_for_csr(&request.csrs.etcd_server, &member)?,
            etcd_peer: etcd_ca.issue_for_csr(&request.csrs.etcd_peer, &member)?,
            agent: ca.issue_for_csr(&request.csrs.agent, &LeafSpec::agent(&node))?,
        };
        let read = |p: std::path::PathBuf| -> Result<String, Refusal> {
            std::fs::read_to_string(&p)
                .map_err(|e| Refusal(format!("this node cannot read {}: {e}", p.display())))
        };
        let secret = |p: std::path::PathBuf| read(p).map(|s| SecretPem(SecretString::new(s)));
        let pair = |paths: PairPaths| -> Result<SharedPair, Refusal> {
            Ok(SharedPair {
                cert: read(paths.cert)?,
                key: secret(paths.key)?,
            })
        };
        let answer_material = (
            pair(PairPaths::new(&self.layout.pki_dir(), "ca"))?,
            pair(PairPaths::new(&self.layout.etcd_pki_dir(), "ca"))?,
            pair(PairPaths {
                cert: self.layout.fqdn_cert(),
                key: self.layout.fqdn_key(),
            })?,
            read(self.layout.fqdn_ca())?,
            secret(self.layout.encryption_config())?,
            read(self.layout.install_yaml())?,
        );
        // Every check passed: add the member (a learner: it cannot vote, so a node that never
        // starts costs no quorum), then spend the token.
        let member_id = match members.iter().find(|m| m.peer_urls.contains(&peer_url)) {
            // Added by an earlier attempt that did not finish: the same member, unstarted.
            Some(m) => m.id,
            None => self.add_learner(&peer_url).await?,
        };
        let members = self.etcd.member_list().await?;
        let initial_cluster = members
            .iter()
            .filter_map(|m| {
                let address = self
                    .config
                    .spec
                    .nodes
                    .iter()
                    .find(|n| m.peer_urls.contains(&url(n.address, PEER_PORT)))?;
                Some((address.name.to_string(), address.address))
            })
            .collect();
        let voters = members
            .iter()
            .filter(|m| !m.is_learner && !m.client_urls.is_empty())
            .flat_map(|m| m.client_urls.clone())
            .collect();
        token::redeem(&self.etcd, &token)
            .await
            .map_err(token_refusal)?;
        let (cluster_ca, etcd_ca, fqdn, fqdn_ca, encryption_config, install_yaml) = answer_material;
        Ok(JoinResponse {
            node: node.name.to_string(),
            install_yaml,
            cluster_ca,
            etcd_ca,
            fqdn,
            fqdn_ca,
            encryption_config,
            certificates,
            etcd: EtcdJoin {
                member_id,
                initial_cluster,
                voters,
            },
        })
    }

    /// etcd refuses a new member while a recent one is not yet known active to everyone
    /// ("unhealthy cluster", its strict reconfiguration check): a second join right after a
    /// first waits for that instead of failing.
    async fn add_learner(&self, peer_url: &str) -> Result<u64, Refusal> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self.etcd.member_add(peer_url, true).await {
                Ok((member, _)) => return Ok(member.id),
                Err(crate::etcd::client::EtcdError::Status { body, .. })
                    if body.contains("unhealthy cluster")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The install.yaml node whose address `source` is; a name the caller gave must be that
    /// node's.
    fn node_for(&self, request: &JoinRequest, source: IpAddr) -> Result<&Node, Refusal> {
        let names = || {
            self.config
                .spec
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.name, n.address))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let source = canonical(source);
        let node = self
            .config
            .spec
            .nodes
            .iter()
            .find(|n| canonical(n.address) == source)
            .ok_or_else(|| {
                Refusal(format!(
                    "{source} is not one of this cluster's nodes ({}); a node joins from its install.yaml address",
                    names()
                ))
            })?;
        if let Some(claimed) = &request.node {
            if claimed.as_str() != node.name.as_str() {
                return Err(Refusal(format!(
                    "the request comes from {source}, {}'s address, but names node {claimed}; run `airgap join` on {claimed} itself",
                    node.name
                )));
            }
        }
        Ok(node)
    }

    fn load_ca(
        &self,
        dir: &std::path::Path,
        what: &str,
    ) -> Result<(CertificateAuthority, crate::pki::Ensured), Refusal> {
        let paths = PairPaths::new(dir, "ca");
        if !paths.cert.exists() || !paths.key.exists() {
            return Err(Refusal(format!("this node holds no {what} CA key")));
        }
        Ok(CertificateAuthority::ensure(&paths, what)?)
    }
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn refuse(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&JoinRefused { error }).unwrap_or_default();
    respond(status, body)
}

/// One text for every token failure: whether a token id exists, expired or was spent is not
/// the caller's to learn. The node's log keeps the reason.
fn token_refusal(e: token::TokenError) -> Refusal {
    match e {
        token::TokenError::Etcd(e) => Refusal(e.to_string()),
        other => {
            tracing::info!(reason = %other, "join token refused");
            Refusal(TOKEN_REFUSED.into())
        }
    }
}

/// What every refused token is told.
pub const TOKEN_REFUSED: &str = "the join token is not valid (unknown, expired, used up, or the wrong secret); create one with `airgap token create` on a cluster node";

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack listener reports
/// IPv4 callers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
