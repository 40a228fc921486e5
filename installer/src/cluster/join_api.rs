//! The join API every HA node serves (the agent's `cluster` service): `POST /join/v1`, over
//! TLS with the FQDN certificate and its CA in the chain, so a joining node can check the CA
//! against its token's pin. A join is decided in this order, and refused with one line and
//! nothing changed at the first failing check: the token (known, secret, not expired, a use
//! left), the release (the cluster's trusted one), the node (the install.yaml node the request
//! comes from, not already a started member), the certificate key (the shared keys are
//! uploaded under the key the node holds), the signing requests. Only then is the node added to etcd as
//! a learner, its certificates issued and the token spent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::certificate_key::{self, Unavailable};
use super::protocol::{
    EtcdJoin, JoinRefused, JoinRequest, JoinResponse, NodeCertificates, JOIN_PATH, JOIN_PORT,
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
    refusals: registry_server::failure_budget::FailureBudget,
}

/// How long a learner may stay unstarted before a later join removes it. The joining node
/// verifies its bundle before it asks, so between the answer and its etcd starting there are
/// only its PKI files to write: minutes of silence mean the join was abandoned.
pub const LEARNER_START_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Where the join API records when it added a node's learner.
pub const LEARNERS_PREFIX: &str = "/airgap/cluster/learners/";

fn learner_key(node: &str) -> String {
    format!("{LEARNERS_PREFIX}{node}")
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearnerRecord {
    pub member_id: u64,
    /// Seconds since the epoch.
    pub added: u64,
}

/// Times its budget an address may be refused before its connections are closed unanswered.
pub const FLOOD_FACTOR: u32 = 4;

/// Refused joins one address may cause in [`REFUSAL_WINDOW`] before it is told to wait.
pub const REFUSAL_BUDGET: u32 = 5;
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a join was refused: said to the joining node in one line.
#[derive(Debug)]
pub enum Refusal {
    /// A rule the request broke, in the words the joining node is told.
    Said(String),
    /// A failure on this node; its cause chain becomes the line only at the response.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal::Failed(Box::new(e))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Said(why) => f.write_str(why),
            Refusal::Failed(e) => f.write_str(&airgap::error_chain::chain(e.as_ref())),
        }
    }
}

impl JoinApi {
    pub fn new(layout: NodeLayout, config: InstallConfig, etcd: EtcdClient) -> Self {
        JoinApi {
            layout,
            config,
            etcd,
            joining: tokio::sync::Mutex::new(()),
            refusals: registry_server::failure_budget::FailureBudget::new(
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
            registry_server::tls_acceptor_from_pem(&chain, &key, "the FQDN certificate")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: listen,
                source,
            })?;
        tracing::info!(%listen, "join API listening");
        // A join is a handful of requests from three known machines: small caps.
        let gate = registry_server::connection::ConnectionGate::new(
            registry_server::connection::ConnectionPolicy {
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
            // An address told to wait FLOOD_FACTOR times over is flooding: its connections
            // close before the TLS handshake until the minute passes, so the flood costs the
            // node next to nothing (an operator who mistyped still reads the 429's words).
            if self.refusals.far_over(peer.ip(), FLOOD_FACTOR) {
                drop(stream);
                continue;
            }
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
        // Checked first: a client told to wait is not read, parsed or looked up.
        if self.refusals.spent(peer.ip()) {
            // Counted too, so a flood passes FLOOD_FACTOR and is cut before TLS.
            self.refusals.failed(peer.ip());
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many refused joins from {}; wait a minute and check the token and the node",
                    peer.ip()
                ),
            );
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                self.refusals.failed(peer.ip());
                return refuse(StatusCode::BAD_REQUEST, "the request is too large".into());
            }
        };
        let request: JoinRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                self.refusals.failed(peer.ip());
                return refuse(StatusCode::BAD_REQUEST, format!("not a join request: {e}"));
            }
        };
        let _one_at_a_time = self.joining.lock().await;
        match self.join(request, peer.ip()).await {
            Ok(answer) => {
                tracing::info!(%peer, node = %answer.node, "node joined");
                self.refusals.forgive(peer.ip());
                match serde_json::to_vec(&answer) {
                    Ok(bytes) => respond(StatusCode::OK, bytes),
                    Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            Err(refusal) => {
                let why = refusal.to_string();
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
            .ok_or_else(|| Refusal::Said("the cluster has no trusted release yet".into()))?;
        if trusted != request.release {
            return Err(Refusal::Said(format!(
                "the cluster runs {trusted} (bundle.json sha256 {}), the joining node's bundle is {} (sha256 {}); join with the cluster's bundle, then upgrade",
                trusted.index_sha256, request.release, request.release.index_sha256
            )));
        }
        let peer_url = url(node.address, PEER_PORT);
        let members = self.etcd.member_list().await?;
        if let Some(m) = members.iter().find(|m| m.peer_urls.contains(&peer_url)) {
            if !m.name.is_empty() {
                return Err(Refusal::Said(format!(
                    "{} is already an etcd member of this cluster; a node that lost its state is removed first with `airgap node remove {}`",
                    node.name, node.name
                )));
            }
        }
        // The shared keys go out only sealed under the certificate key the node holds; a
        // node that could not open them is refused here, before anything changes.
        let shared = match certificate_key::sealed_for(&self.etcd, &request.certificate_key_id)
            .await?
        {
            Ok(sealed) => sealed,
            Err(Unavailable::Absent) => return Err(Refusal::Said(format!(
                "the cluster's shared keys are not uploaded for joining (they expire {} h after `airgap install` or `airgap token create --certificate-key`); run `airgap token create --certificate-key` on a cluster node and join with the key it prints",
                certificate_key::MATERIAL_TTL.as_secs() / 3600
            ))),
            Err(Unavailable::OtherKey) => return Err(Refusal::Said(
                "the certificate key is not the one the cluster's shared keys were last uploaded under; use the key the latest `airgap install` or `airgap token create --certificate-key` printed".into(),
            )),
        };
        let (ca, _) = self.load_ca(&self.layout.pki_dir(), "cluster")?;
        let (etcd_ca, _) = self.load_ca(&self.layout.etcd_pki_dir(), "etcd")?;
        let member = LeafSpec::etcd_member(&node);
        let certificates = NodeCertificates {
            etcd_server: etcd_ca.issue_for_csr(&request.csrs.etcd_server, &member)?,
            etcd_peer: etcd_ca.issue_for_csr(&request.csrs.etcd_peer, &member)?,
            agent: ca.issue_for_csr(&request.csrs.agent, &LeafSpec::agent(&node))?,
        };
        let install_yaml = std::fs::read_to_string(self.layout.install_yaml()).map_err(|e| {
            Refusal::Said(format!(
                "this node cannot read {}: {e}",
                self.layout.install_yaml().display()
            ))
        })?;
        // Every check passed: add the member (a learner: it cannot vote, so a node that never
        // starts costs no quorum), then spend the token.
        let member_id = match members.iter().find(|m| m.peer_urls.contains(&peer_url)) {
            // Added by an earlier attempt that did not finish: the same member, unstarted, and
            // its node is alive again (so its grace starts over).
            Some(m) => {
                self.record_learner(&node, m.id).await?;
                m.id
            }
            None => self.add_learner(&node, &peer_url).await?,
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
        Ok(JoinResponse {
            node: node.name.to_string(),
            install_yaml,
            shared,
            certificates,
            etcd: EtcdJoin {
                member_id,
                initial_cluster,
                voters,
            },
        })
    }

    /// Adds `node` as a learner and records when, so a learner whose node never started can
    /// be told from one that is starting. etcd refuses a new member while a recent one is not
    /// yet known active to everyone ("unhealthy cluster", its strict reconfiguration check),
    /// and admits one learner at a time: a join right after another waits for those, and an
    /// unstarted learner older than [`LEARNER_START_GRACE`] (a join that died after its
    /// answer and was never run again) is removed instead of blocking every later join.
    async fn add_learner(&self, node: &Node, peer_url: &str) -> Result<u64, Refusal> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let why = match self.etcd.member_add(peer_url, true).await {
                Ok((member, _)) => {
                    self.record_learner(node, member.id).await?;
                    return Ok(member.id);
                }
                Err(crate::etcd::client::EtcdError::Status { body, .. })
                    if body.contains("unhealthy cluster") =>
                {
                    "etcd is still admitting the last member".to_string()
                }
                Err(crate::etcd::client::EtcdError::Status { body, .. })
                    if body.contains("too many learner members") =>
                {
                    match self.remove_abandoned_learner().await? {
                        Some(removed) => {
                            tracing::warn!(node = %removed, "removed an etcd learner that never started (its join was abandoned)");
                            continue;
                        }
                        None => self.pending_learner().await?,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if std::time::Instant::now() >= deadline {
                return Err(Refusal::Said(why));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    async fn record_learner(&self, node: &Node, member_id: u64) -> Result<(), Refusal> {
        let record = LearnerRecord {
            member_id,
            added: token::unix_now(),
        };
        let bytes = serde_json::to_vec(&record)?;
        self.etcd
            .txn(
                &[],
                &[etcd::Op::Put(learner_key(node.name.as_str()), bytes)],
            )
            .await?;
        Ok(())
    }

    /// Removes the learner that never started, if it is older than the grace; its node.
    async fn remove_abandoned_learner(&self) -> Result<Option<String>, Refusal> {
        let members = self.etcd.member_list().await?;
        for m in members.iter().filter(|m| m.is_learner && m.name.is_empty()) {
            let Some(node) = self.node_of(m) else {
                continue;
            };
            let added = match self.etcd.get(&learner_key(node.name.as_str())).await? {
                Some(kv) => serde_json::from_slice::<LearnerRecord>(&kv.value)
                    .ok()
                    .filter(|r| r.member_id == m.id)
                    .map(|r| r.added),
                None => None,
            };
            // A learner without a record was added by an older airgap, or its record was
            // lost: nothing says it is young, so it counts as abandoned.
            let abandoned = added.is_none_or(|added| {
                token::unix_now().saturating_sub(added) >= LEARNER_START_GRACE.as_secs()
            });
            if abandoned {
                self.etcd.member_remove(m.id).await?;
                self.etcd.delete(&learner_key(node.name.as_str())).await?;
                return Ok(Some(node.name.to_string()));
            }
        }
        Ok(None)
    }

    /// What the learner that is in the way is doing, in words for the refusal.
    async fn pending_learner(&self) -> Result<String, Refusal> {
        let members = self.etcd.member_list().await?;
        let Some(m) = members.iter().find(|m| m.is_learner) else {
            return Ok("etcd admits one learner at a time and another join is under way".into());
        };
        let name = self
            .node_of(m)
            .map_or_else(|| format!("member {:x}", m.id), |n| n.name.to_string());
        Ok(if m.name.is_empty() {
            format!(
                "{name} was added as an etcd learner and has not started yet; wait for its join to finish (a join abandoned for {} min is removed by the next join), or run `airgap node remove {name}`",
                LEARNER_START_GRACE.as_secs() / 60
            )
        } else {
            format!("{name} is still catching up as an etcd learner; join again in a minute")
        })
    }

    fn node_of(&self, member: &etcd::Member) -> Option<&Node> {
        self.config
            .spec
            .nodes
            .iter()
            .find(|n| member.peer_urls.contains(&url(n.address, PEER_PORT)))
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
                Refusal::Said(format!(
                    "{source} is not one of this cluster's nodes ({}); a node joins from its install.yaml address",
                    names()
                ))
            })?;
        if let Some(claimed) = &request.node {
            if claimed.as_str() != node.name.as_str() {
                return Err(Refusal::Said(format!(
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
            return Err(Refusal::Said(format!("this node holds no {what} CA key")));
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
        token::TokenError::Etcd(e) => Refusal::from(e),
        other => {
            tracing::info!(reason = %other, "join token refused");
            Refusal::Said(TOKEN_REFUSED.into())
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
