//! `airgap status`: the journal's phases, the agent, and each service probed live (etcd's
//! health over mutual TLS; the registry's `/v2/` over TLS).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::agent;
use crate::config::{local_addresses, InstallConfig, Node};
use crate::etcd::{url, CLIENT_PORT};
use crate::journal::{Journal, JournalError, Phase, PhaseRecord, WorkflowKind};
use crate::layout::NodeLayout;
use airgap::error_chain::chain;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub root: String,
    pub installation: Option<String>,
    pub node: Option<String>,
    pub bundle: Option<String>,
    /// Every phase in order; `None` for one that never ran.
    pub phases: Vec<(Phase, Option<PhaseRecord>)>,
    pub complete: bool,
    pub agent: AgentStatus,
    pub services: BTreeMap<String, ServiceStatus>,
    pub kubernetes: KubernetesStatus,
    /// An HA node's view of the cluster: members and their health, the VIP holder, registry
    /// replicas. `None` standalone, or when this node's etcd cannot reach quorum (then
    /// `clusterError` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::members::ClusterView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
    /// What each phase with a check says of its work (`time`: chrony's sources).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<Phase, crate::phases::Check>,
    /// The installed release's signed tags read back from the registry it was seeded into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_tags: Option<ReleaseTags>,
}

/// Whether the registry still holds the installed release's tags as signed (the cheap part
/// of `airgap registry verify`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseTags {
    pub healthy: bool,
    pub detail: String,
    /// One line per tag that points elsewhere or is gone.
    pub drift: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub healthy: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl NodeStatus {
    /// True when every phase is done and every service answers.
    pub fn healthy(&self) -> bool {
        self.complete
            && self.agent.running
            && self.services.values().all(|s| s.healthy)
            && self.kubernetes.healthy()
            && !self.cluster.as_ref().is_some_and(|c| c.vip_without_claim)
            && self.release_tags.as_ref().is_none_or(|t| t.healthy)
            && self.checks.values().all(|c| c.healthy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error("removing {}", path.display())]
    Remove {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub async fn gather(layout: &NodeLayout) -> Result<NodeStatus, StatusError> {
    let journal = Journal::load(&layout.journal())?.journal;
    let pid = agent::running_pid(layout)?;
    let agent_state = agent::read_state(layout);
    let config = std::fs::read_to_string(layout.install_yaml())
        .ok()
        .and_then(|t| InstallConfig::parse(&t).ok());
    let node = config
        .as_ref()
        .and_then(|c| {
            c.installed_node(journal.node.as_deref(), &local_addresses())
                .ok()
        })
        .cloned();
    let mut services = BTreeMap::new();
    let defined = crate::service::ServiceSpec::load_all(&layout.services_dir()).unwrap_or_default();
    for name in defined.keys() {
        let supervised = agent_state.as_ref().and_then(|s| s.services.get(name));
        let (healthy, detail, endpoint) = match (name.as_str(), &config, &node) {
            ("etcd", Some(_), Some(n)) => probe_etcd(layout, n).await,
            ("registry", Some(c), Some(n)) => probe_registry(layout, c, n).await,
            ("containerd", _, _) => probe_containerd(layout, &defined[name]).await,
            ("cluster", Some(_), Some(n)) => probe_join_api(n).await,
            _ => (false, "no probe".into(), None),
        };
        let detail = if pid.is_none() {
            format!("not supervised (agent not running); {detail}")
        } else {
            detail
        };
        services.insert(
            name.clone(),
            ServiceStatus {
                healthy,
                detail,
                pid: supervised.and_then(|s| s.pid),
                restarts: supervised.map_or(0, |s| s.restarts),
                endpoint,
            },
        );
    }
    // A joined node's phases are its join workflow's.
    let workflow = if layout.join_state().exists() {
        WorkflowKind::Join
    } else {
        WorkflowKind::Init
    };
    let install_phases = crate::workflow::Workflow::init().phases();
    let (cluster, cluster_error) = match (&config, &node) {
        (Some(c), Some(n)) if c.spec.mode == crate::config::Mode::Ha => {
            match cluster_view(layout, c, n).await {
                Ok(view) => (Some(view), None),
                Err(e) => (None, Some(chain(&e))),
            }
        }
        _ => (None, None),
    };
    let release_tags = match (
        &config,
        &node,
        journal.bundle.as_ref().and_then(|b| b.release()),
    ) {
        (Some(c), Some(n), Some(release))
            if defined.contains_key("registry") || c.external_registry().is_some() =>
        {
            let checked = tokio::time::timeout(
                Duration::from_secs(15),
                release_tags(layout, c, n, &release),
            )
            .await
            .unwrap_or(Err(ProbeError::Timeout {
                what: "the registry",
                secs: 15,
            }));
            Some(match checked {
                Ok(drift) if drift.is_empty() => ReleaseTags {
                    healthy: true,
                    detail: format!("every tag of {release} is as signed"),
                    drift,
                },
                Ok(drift) => ReleaseTags {
                    healthy: false,
                    detail: format!(
                        "{} tags of {release} are not as signed; `airgap install` (or `airgap upgrade`) re-seeds them",
                        drift.len()
                    ),
                    drift,
                },
                Err(e) => ReleaseTags {
                    healthy: false,
                    detail: format!("cannot read {release}'s tags: {}", chain(&e)),
                    drift: Vec::new(),
                },
            })
        }
        _ => None,
    };
    // Only once the install finished: before that, the phases' own records say where it is.
    let complete = journal.is_complete(workflow, &install_phases);
    let checks = match &config {
        Some(c) if complete => crate::phases::checks(layout, c).into_iter().collect(),
        _ => BTreeMap::new(),
    };
    Ok(NodeStatus {
        checks,
        release_tags,
        cluster,
        cluster_error,
        root: layout.root().display().to_string(),
        installation: journal.installation.clone(),
        node: journal.node.clone(),
        bundle: journal
            .bundle
            .as_ref()
            .map(|b| format!("{} {}", b.name, b.version)),
        phases: install_phases
            .iter()
            .map(|p| {
                let record = journal
                    .workflow(workflow)
                    .and_then(|w| w.phases.get(p))
                    .cloned();
                (*p, record)
            })
            .collect(),
        complete,
        agent: AgentStatus {
            running: pid.is_some(),
            pid: pid.filter(|p| *p != 0),
        },
        services,
        kubernetes: probe_kubernetes(layout, config.as_ref(), node.as_ref()).await,
    })
}

/// Reads the installed release's signed index back from the registry (checked against the
/// sha256 the journal recorded when its signature verified) and every tag it names.
/// Why a live check of `status` could not say what it checks.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Etcd(#[from] crate::etcd::client::EtcdError),
    #[error(transparent)]
    Phase(#[from] crate::error::PhaseError),
    #[error(transparent)]
    Target(#[from] registry::mirror::TargetError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("{target} does not hold release {release}")]
    NoRelease { target: String, release: String },
    #[error("the index of {release} in {target} is not the one this node installed")]
    OtherIndex { target: String, release: String },
    #[error("the release index in the registry does not parse")]
    Index(#[from] airgap::index::IndexError),
    #[error("this node's etcd has no quorum view")]
    NoQuorum(#[source] crate::cluster::ClusterError),
    #[error("{what} did not answer within {secs}s")]
    Timeout { what: &'static str, secs: u64 },
}

/// The release's signed tags as the registry holds them: the release artifact (its index's
/// sha256 the journal recorded when its signature verified) and every tag it names.
async fn release_tags(
    layout: &NodeLayout,
    config: &InstallConfig,
    node: &Node,
    release: &crate::release::ReleaseId,
) -> Result<Vec<String>, ProbeError> {
    use registry::client::{ClientConfig, RegistryClient};
    use registry::mirror::MirrorTarget;
    use registry::release_artifact;
    let etcd = crate::etcd::client::for_node(layout, &url(node.address, CLIENT_PORT))?;
    let access = crate::phases::stored_registry_access(layout, &etcd).await?;
    let target = MirrorTarget::parse(&access.endpoint, false)?;
    let resolve = if config.external_registry().is_none() {
        vec![(
            config.spec.fqdn.to_string(),
            SocketAddr::new(node.address, config.registry_port()),
        )]
    } else {
        Vec::new()
    };
    let client = RegistryClient::new(
        &target.host,
        ClientConfig {
            ca_pem: (!access.ca_pem.is_empty()).then(|| access.ca_pem.clone()),
            credentials: access.pull_credentials(),
            resolve,
            ..ClientConfig::default()
        },
    )?;
    let repository = target.repository(release_artifact::REPOSITORY);
    let parts = release_artifact::fetch(&client, &repository, &release.version.to_string())
        .await?
        .ok_or_else(|| ProbeError::NoRelease {
            target: target.to_string(),
            release: release.to_string(),
        })?;
    if airgap::Digest::of(&parts.index) != release.index_sha256 {
        return Err(ProbeError::OtherIndex {
            target: target.to_string(),
            release: release.to_string(),
        });
    }
    let index = airgap::BundleIndex::parse(&parts.index)?;
    let drift = registry::scrub::check_tags(&client, &index, &target, 8).await?;
    Ok(drift.iter().map(ToString::to_string).collect())
}

async fn cluster_view(
    layout: &NodeLayout,
    config: &InstallConfig,
    node: &Node,
) -> Result<crate::cluster::members::ClusterView, ProbeError> {
    let etcd = crate::etcd::client::for_node(layout, &url(node.address, CLIENT_PORT))?;
    match tokio::time::timeout(
        Duration::from_secs(8),
        crate::cluster::members::view(layout, config, node, &etcd),
    )
    .await
    {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(e)) => Err(ProbeError::NoQuorum(e)),
        Err(_) => Err(ProbeError::Timeout {
            what: "this node's etcd (no quorum?)",
            secs: 8,
        }),
    }
}

async fn probe_join_api(node: &Node) -> (bool, String, Option<String>) {
    let addr = SocketAddr::new(node.address, crate::cluster::protocol::JOIN_PORT);
    let endpoint = Some(format!("https://{addr}"));
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (
            true,
            "join API listening; VIP election running".into(),
            endpoint,
        ),
        Ok(Err(e)) => (false, format!("join API not listening: {e}"), endpoint),
        Err(_) => (false, "join API did not answer within 3s".into(), endpoint),
    }
}

async fn probe_etcd(layout: &NodeLayout, node: &Node) -> (bool, String, Option<String>) {
    let endpoint = url(node.address, CLIENT_PORT);
    let result = match crate::etcd::client::for_node(layout, &endpoint) {
        Ok(c) => match tokio::time::timeout(Duration::from_secs(5), c.health()).await {
            // Whether clients must log in is part of etcd's health as an operator reads it.
            Ok(Ok(())) => {
                match tokio::time::timeout(Duration::from_secs(5), c.auth_enabled()).await {
                    Ok(Ok(true)) => (true, "healthy; authentication on".to_string()),
                    Ok(Ok(false)) => (
                        true,
                        "healthy; authentication off (installed before airgap turned it on)"
                            .to_string(),
                    ),
                    _ => (true, "healthy".to_string()),
                }
            }
            Ok(Err(e)) => (false, chain(&e)),
            Err(_) => (false, "no answer within 5s".to_string()),
        },
        Err(e) => (false, chain(&e)),
    };
    (result.0, result.1, Some(endpoint))
}

/// containerd answers over CRI (the kubelet's path) and says its runtime is ready; the
/// detail names the program it runs, so an operator sees whether it came from the bundle.
async fn probe_containerd(
    layout: &NodeLayout,
    spec: &crate::service::ServiceSpec,
) -> (bool, String, Option<String>) {
    let socket = layout.containerd_socket();
    let cri = crate::cri::CriClient::new(&socket);
    let program = spec.program.display();
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let version = cri.version().await?;
        let status = cri.status(true).await?;
        Ok::<_, crate::cri::CriError>((version, status))
    })
    .await;
    let endpoint = Some(format!("unix://{}", socket.display()));
    // Without the catch-all host file, a pull of a registry without its own would go upstream.
    let catch_all = layout
        .containerd_certs_dir()
        .join(registry::mirror::DEFAULT_HOST_DIR)
        .join("hosts.toml");
    let pull_config_ok = std::fs::read_to_string(&catch_all)
        .is_ok_and(|t| t.starts_with(registry::mirror::HOSTS_TOML_MARK));
    match result {
        Ok(Ok(_)) if !pull_config_ok => (
            false,
            format!(
                "no pull configuration at {}: pulls could leave the air gap; re-run `airgap install` ({program})",
                catch_all.display()
            ),
            endpoint,
        ),
        Ok(Ok((v, s))) if s.runtime_ready() => (
            true,
            format!(
                "{} {} ready over CRI, sandbox image {} ({program})",
                v.runtime_name,
                v.runtime_version,
                s.sandbox_image().unwrap_or_default()
            ),
            endpoint,
        ),
        Ok(Ok((_, s))) => (
            false,
            format!("runtime not ready: {:?} ({program})", s.conditions),
            endpoint,
        ),
        Ok(Err(e)) => (false, chain(&e), endpoint),
        Err(_) => (false, "no CRI answer within 5s".into(), endpoint),
    }
}

/// The registry answers `/v2/` over TLS, verified against the node's CA for the FQDN, with
/// 200 or 401 (it wants credentials): serving.
async fn probe_registry(
    layout: &NodeLayout,
    config: &InstallConfig,
    node: &Node,
) -> (bool, String, Option<String>) {
    let addr = SocketAddr::new(node.address, config.registry_port());
    let endpoint = format!("https://{}:{}", config.spec.fqdn, config.registry_port());
    let ca = std::fs::read(layout.fqdn_ca()).unwrap_or_default();
    let (ok, detail) = probe_tls(
        &ca,
        config.spec.fqdn.as_str(),
        addr,
        &format!("{endpoint}/v2/"),
    )
    .await;
    (ok, detail, Some(endpoint))
}

/// `url` (on host `name`) answers at `addr` over TLS verified against `ca`, with 200 or 401:
/// the server holds a certificate the CA issued for the name, so it is the one installed.
async fn probe_tls(ca: &[u8], name: &str, addr: SocketAddr, url: &str) -> (bool, String) {
    registry::crypto::install_default();
    let client = reqwest::Certificate::from_pem(ca).and_then(|ca| {
        reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_only([ca])
            .resolve(name, addr)
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
    });
    let client = match client {
        Ok(c) => c,
        Err(e) => return (false, format!("TLS setup: {}", chain(&e))),
    };
    match client.get(url).send().await {
        Ok(r) if r.status() == 200 || r.status() == 401 => {
            (true, format!("serving on {addr} (TLS verified)"))
        }
        Ok(r) => (false, format!("{addr} answered {}", r.status())),
        Err(e) => (false, format!("{addr}: {}", chain(&e))),
    }
}

/// Whether a Kubernetes cluster exists on the node, and whether its API server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterState {
    /// The kubernetes phase has not rendered the configuration yet.
    NotConfigured,
    /// Configuration rendered; kubeadm was not on the node, so no cluster was started.
    RenderedOnly,
    /// `kubeadm init` succeeded (its `admin.conf` exists).
    Initialized,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesStatus {
    pub state: ClusterState,
    /// True only when kubeadm initialized the cluster and its API server answers now.
    pub running: bool,
    pub detail: String,
}

impl KubernetesStatus {
    /// A missing kubeadm is a known, reported state, not a fault; a cluster that was
    /// initialized and does not answer is.
    pub fn healthy(&self) -> bool {
        self.state != ClusterState::Initialized || self.running
    }
}

async fn probe_kubernetes(
    layout: &NodeLayout,
    config: Option<&InstallConfig>,
    node: Option<&Node>,
) -> KubernetesStatus {
    if layout.admin_kubeconfig().exists() {
        let (Some(config), Some(node)) = (config, node) else {
            return KubernetesStatus {
                state: ClusterState::Initialized,
                running: false,
                detail: "install.yaml unreadable: cannot probe the API server".into(),
            };
        };
        let addr = SocketAddr::new(node.address, crate::kubernetes::API_SERVER_PORT);
        let fqdn = config.spec.fqdn.as_str();
        let ca = std::fs::read(layout.pki_dir().join("ca.crt")).unwrap_or_default();
        let url = format!(
            "https://{fqdn}:{}/livez",
            crate::kubernetes::API_SERVER_PORT
        );
        let (running, detail) = probe_tls(&ca, fqdn, addr, &url).await;
        return KubernetesStatus {
            state: ClusterState::Initialized,
            running,
            detail: if running {
                format!("cluster initialized by kubeadm; API server {detail}")
            } else {
                format!(
                    "cluster initialized by kubeadm but the API server is not answering: {detail}"
                )
            },
        };
    }
    if layout.kubeadm_config().exists() {
        KubernetesStatus {
            state: ClusterState::RenderedOnly,
            running: false,
            detail: format!(
                "configuration rendered ({}), but kubeadm is not on this node: the cluster is NOT running; add kubeadm, kubelet and containerd to the k8s pack's bin/ (or install them), then re-run `airgap install`",
                layout.kubeadm_config().display()
            ),
        }
    } else {
        KubernetesStatus {
            state: ClusterState::NotConfigured,
            running: false,
            detail: "not configured yet (phase kubernetes has not run)".into(),
        }
    }
}

/// Removes what an install created under the root (services stopped first). Logs stay.
pub fn reset(
    layout: &NodeLayout,
    host: &dyn crate::host::Host,
) -> Result<Vec<String>, StatusError> {
    agent::stop(layout, host)?;
    let mut removed = Vec::new();
    for path in crate::phases::installed_paths(layout) {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        result.map_err(|source| StatusError::Remove {
            path: path.clone(),
            source,
        })?;
        removed.push(path.display().to_string());
    }
    Ok(removed)
}
