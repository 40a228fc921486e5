//! The phase bodies of the install workflows, one file per phase. Each is idempotent: run on
//! a node where its work is done it changes nothing and says so, which is how the
//! [`Runner`](crate::workflow::Runner) resumes a workflow by running it again.
//!
//! [`InstallContext`] is what the phases share: the request, the resolved node, the verified
//! release, and what earlier phases produced (an etcd client, the registry's credentials,
//! where the release was mirrored). Each of those is derived again when the phase that makes
//! it was skipped (`--skip-phases`), so no phase depends on another having run in this
//! process.

mod agent;
mod etcd;
mod keys;
pub use keys::stored_registry_access;
mod kubernetes;
mod pki;
mod platform;
mod registry;
pub(crate) use registry::prefetch;
mod runtime;
mod spec;
pub mod time;
mod verify;

pub use spec::{Check, InUpgrade, OwnedPath, Ownership, PhaseFuture, PhaseSpec};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::registry::auth::Credentials;
use ::registry::mirror::{MirrorTarget, RewriteMap};

use crate::agent::Launch;
use crate::audit::{AuditLog, Outcome};
use crate::config::{InstallConfig, Node};
use crate::error::PhaseError;
use crate::etcd::client::EtcdClient;
use crate::etcd::EtcdMember;
use crate::files::write_if_changed;
use crate::host::Host;
use crate::journal::{Journal, Phase, WorkflowKind};
use crate::kubernetes::kubeadm::ClusterInit;
use crate::kubernetes::RenderedFile;
use crate::layout::NodeLayout;
use crate::phase::Scope;
use crate::release::Release;
use crate::secret::SecretString;
use crate::workflow::{Failpoint, Observer, PhaseBodies, Step, Workflow};

/// What the phases of one run share.
pub struct InstallContext {
    pub config: InstallConfig,
    /// The node this run installs, resolved by name or address.
    pub node: Node,
    pub layout: NodeLayout,
    pub release: Release,
    /// Where the release was read from, and the `install.yaml` given.
    pub origin: crate::release::ReleaseOrigin,
    pub config_path: PathBuf,
    /// The binary that runs this command; services run [`InstallContext::airgap_program`].
    pub exe: PathBuf,
    installed_exe: Option<PathBuf>,
    /// Blobs uploaded at once while seeding.
    pub jobs: usize,
    pub audit: AuditLog,
    pub observer: Arc<dyn Observer>,
    pub host: Arc<dyn Host>,
    pub failpoint: Failpoint,
    pub started: Instant,
    etcd: Option<EtcdClient>,
    access: Option<RegistryAccess>,
    mirror: Option<Mirror>,
    cluster: Option<ClusterInit>,
    pub outcome: RunOutcome,
    registry_store: PathBuf,
    /// Set when this run joins an HA cluster: cluster-scoped material is read, never made.
    pub joining: Option<crate::cluster::join::JoinState>,
    /// Set during an upgrade: each completed step is recorded in the plan in etcd.
    pub recording_plan: bool,
}

/// What a run reports at its end.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub launch: Option<Launch>,
    pub seed: Option<SeedStats>,
    /// Time from the start of the run until etcd and the registry were serving, seeding
    /// excluded.
    pub healthy_after: Duration,
    /// Whether kubeadm ran; `None` when the kubernetes phase was skipped.
    pub cluster: Option<ClusterInit>,
    pub registry_endpoint: Option<String>,
    pub registry_username: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SeedStats {
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub elapsed: Duration,
}

/// The registry the release is seeded into, with the credentials stored in etcd.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub endpoint: String,
    pub username: String,
    pub password: SecretString,
    pub ca_pem: Vec<u8>,
    /// The built-in registry's pull-only login (user, password).
    pub pull: Option<(String, SecretString)>,
}

impl RegistryAccess {
    /// The login, when the registry wants one. This is where the password leaves its type:
    /// the registry client sends it as basic auth.
    pub fn credentials(&self) -> Option<Credentials> {
        (!self.username.is_empty()).then(|| Credentials {
            username: self.username.clone(),
            password: self.password.expose().to_string(),
        })
    }

    /// The login containerd pulls with: the built-in registry's pull-only user, or an external
    /// registry's login (the operator's to restrict).
    pub fn pull_credentials(&self) -> Option<Credentials> {
        match &self.pull {
            Some((username, password)) => Some(Credentials {
                username: username.clone(),
                password: password.expose().to_string(),
            }),
            None => self.credentials(),
        }
    }
}

/// Where the registry phase seeded the release, and what each image is called there: what
/// the kubernetes and platform phases point nodes and manifests at.
pub struct Mirror {
    pub target: MirrorTarget,
    pub rewrite: RewriteMap,
}

/// The inputs of a context besides what the phases produce.
pub struct ContextInputs {
    pub config: InstallConfig,
    pub node: Node,
    pub layout: NodeLayout,
    pub release: Release,
    pub origin: crate::release::ReleaseOrigin,
    pub config_path: PathBuf,
    pub exe: PathBuf,
    pub jobs: usize,
    pub observer: Arc<dyn Observer>,
    pub host: Arc<dyn Host>,
    pub started: Instant,
}

impl InstallContext {
    pub fn new(inputs: ContextInputs) -> Self {
        InstallContext {
            audit: AuditLog::new(&inputs.layout),
            registry_store: inputs.layout.registry_storage(),
            config: inputs.config,
            node: inputs.node,
            layout: inputs.layout,
            release: inputs.release,
            origin: inputs.origin,
            config_path: inputs.config_path,
            exe: inputs.exe,
            installed_exe: None,
            jobs: inputs.jobs,
            observer: inputs.observer,
            host: inputs.host,
            failpoint: Failpoint::from_env(),
            started: inputs.started,
            etcd: None,
            access: None,
            mirror: None,
            cluster: None,
            outcome: RunOutcome::default(),
            joining: None,
            recording_plan: false,
        }
    }

    pub fn member(&self) -> EtcdMember {
        let (initial_cluster, existing) = match &self.joining {
            Some(join) => (join.etcd.initial_cluster.clone(), true),
            // The first HA node founds the cluster alone; the others are added as they join.
            None if self.config.spec.mode == crate::config::Mode::Ha => {
                (vec![(self.node.name.to_string(), self.node.address)], false)
            }
            None => (
                self.config
                    .spec
                    .nodes
                    .iter()
                    .map(|n| (n.name.to_string(), n.address))
                    .collect(),
                false,
            ),
        };
        EtcdMember {
            name: self.node.name.to_string(),
            address: self.node.address,
            initial_cluster,
            cluster_token: format!("airgap-{}", self.config.metadata.name),
            existing,
            ha: self.config.spec.mode == crate::config::Mode::Ha,
        }
    }

    /// The etcd client with this node's client certificate.
    /// Drops the kept etcd client: the next one logs in with what the node has now.
    pub fn forget_etcd_client(&mut self) {
        self.etcd = None;
    }

    pub fn etcd_client(&mut self) -> Result<EtcdClient, PhaseError> {
        if let Some(client) = &self.etcd {
            return Ok(client.clone());
        }
        // The other members when this one cannot be reached (it restarts during an upgrade);
        // health checks still ask this member.
        let client = crate::cluster::etcd_of(&self.layout, &self.config, &self.node)?;
        self.etcd = Some(client.clone());
        Ok(client)
    }

    /// The registry's endpoint and credentials, from the keys phase or, when it was
    /// skipped, from the Secret in etcd.
    async fn registry_access(&mut self) -> Result<RegistryAccess, PhaseError> {
        if let Some(access) = &self.access {
            return Ok(access.clone());
        }
        let etcd = self.etcd_client()?;
        let access = keys::read_registry_access(self, &etcd).await?;
        self.access = Some(access.clone());
        Ok(access)
    }

    /// Where the release is mirrored, from the registry phase or derived the same way. Taken
    /// out of the context while a phase uses it beside the context's other fields; the phase
    /// puts it back.
    async fn take_mirror(&mut self) -> Result<Mirror, PhaseError> {
        match self.mirror.take() {
            Some(m) => Ok(m),
            None => {
                let access = self.registry_access().await?;
                let target = MirrorTarget::parse(&access.endpoint, false)?;
                let rewrite = RewriteMap::new(self.release.verified().index(), &target);
                Ok(Mirror { target, rewrite })
            }
        }
    }

    /// The airgap every service and unit runs: this binary copied to a root-owned, versioned
    /// path under the node ([`crate::node_binaries::install_self`]), once per run.
    fn airgap_program(&mut self) -> Result<PathBuf, PhaseError> {
        if let Some(p) = &self.installed_exe {
            return Ok(p.clone());
        }
        let path = crate::node_binaries::install_self(&self.exe, &self.layout.bin_dir())?;
        self.installed_exe = Some(path.clone());
        Ok(path)
    }

    /// Writes what changed; returns how many files did.
    fn write_rendered(&self, action: &str, files: &[RenderedFile]) -> Result<usize, PhaseError> {
        let mut written = 0;
        for file in files {
            let changed = write_if_changed(&file.path, &file.bytes, file.mode)
                .map_err(PhaseError::io("writing", &file.path))?;
            if changed {
                written += 1;
                self.audit
                    .record(action, &file.path.display().to_string(), Outcome::Done);
            }
        }
        Ok(written)
    }

    /// Where phases read the release's packs from: the bundle, and for what a delta bundle
    /// left out (or all of a release read from a registry), the node's registry store.
    pub fn content(&self) -> crate::source::WithNodeStore<'_> {
        crate::source::WithNodeStore {
            verified: self.release.verified(),
            archive: self.release.archive().map(|a| a.as_ref()),
            store: &self.registry_store,
        }
    }

    /// Runs `workflow`'s phases on this context, journaled in `journal`; an upgrade's end steps
    /// by `end`.
    pub async fn run_workflow(
        &mut self,
        workflow: &crate::workflow::Workflow,
        journal: &mut Journal,
        skip: &crate::workflow::SkipSet,
        end: Option<&mut crate::upgrade_end::UpgradeEnd>,
    ) -> Result<(), crate::error::InstallError> {
        let journal_path = self.layout.journal();
        let audit = self.audit.clone();
        let observer = self.observer.clone();
        let host = self.host.clone();
        let mut runner = crate::workflow::Runner {
            journal,
            journal_path: &journal_path,
            audit: &audit,
            observer: observer.as_ref(),
            host: host.as_ref(),
            skip,
            failpoint: self.failpoint,
        };
        match end {
            Some(end) => {
                let mut bodies = crate::upgrade_end::UpgradeBodies { phases: self, end };
                runner.run(workflow, &mut bodies).await
            }
            None => runner.run(workflow, self).await,
        }
    }

    /// A program the runtime phase installed from the bundle, else the node's own on PATH.
    pub fn program(&self, name: &str) -> Option<crate::node_binaries::Binary> {
        crate::node_binaries::locate(
            &self.layout.bin_dir(),
            self.release.verified().index(),
            name,
            self.host.as_ref(),
        )
    }

    /// The registry's address on this node (the built-in registry).
    fn registry_listen(&self) -> SocketAddr {
        SocketAddr::new(self.node.address, self.config.registry_port())
    }

    /// Where the built-in registry binds: the node's address, and in HA every address, so it
    /// also answers on the VIP while this node holds it.
    fn registry_bind(&self) -> SocketAddr {
        match (self.config.spec.mode, self.node.address) {
            (crate::config::Mode::Ha, std::net::IpAddr::V4(_)) => SocketAddr::new(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                self.config.registry_port(),
            ),
            (crate::config::Mode::Ha, std::net::IpAddr::V6(_)) => SocketAddr::new(
                std::net::Ipv6Addr::UNSPECIFIED.into(),
                self.config.registry_port(),
            ),
            _ => self.registry_listen(),
        }
    }
}

impl PhaseBodies for InstallContext {
    async fn run(
        &mut self,
        workflow: WorkflowKind,
        step: Step,
        journal: &mut Journal,
    ) -> Result<String, PhaseError> {
        // Every workflow runs the same bodies; what differs (join reads cluster material
        // instead of creating it) is decided inside the cluster-scoped phases.
        let spec = spec(step.phase).ok_or(PhaseError::NotAPhaseOf(step.phase))?;
        let summary = (spec.run)(self, journal, workflow).await?;
        if workflow == WorkflowKind::Upgrade && self.recording_plan {
            let etcd = self.etcd_client()?;
            crate::upgrade_plan::step_done(&etcd, self.node.name.as_str(), step.phase)
                .await
                .map_err(PhaseError::Plan)?;
        }
        Ok(summary)
    }
}

/// Every phase, in install order: what the workflows, an upgrade's rollback, reset and status
/// read. A new phase is its file (with its [`PhaseSpec`]) and one entry here.
pub static CATALOGUE: &[&PhaseSpec] = &[
    &verify::SPEC,
    &pki::SPEC,
    &time::SPEC,
    &etcd::SPEC,
    &keys::SPEC,
    &registry::SPEC,
    &runtime::SPEC,
    &agent::SPEC,
    &kubernetes::SPEC,
    &platform::SPEC,
];

/// The spec of the phase named `phase`.
pub fn spec(phase: Phase) -> Option<&'static PhaseSpec> {
    CATALOGUE.iter().copied().find(|s| s.phase == phase)
}

/// The workflows, read from the catalogue.
impl Workflow {
    /// The first node: creates the cluster.
    pub fn init() -> Self {
        let steps = CATALOGUE
            .iter()
            .filter_map(|s| s.install.map(|scope| s.step(scope)))
            .collect();
        Workflow {
            kind: WorkflowKind::Init,
            steps,
        }
    }

    /// Another node of an HA cluster: the same phases; cluster-scoped ones read or receive
    /// what `init` created, never create it.
    pub fn join() -> Self {
        Workflow {
            kind: WorkflowKind::Join,
            ..Workflow::init()
        }
    }

    /// A newer release: verified, published and seeded, then this node's binaries,
    /// services and configuration, then the steps that end an upgrade. PKI and
    /// installation keys are never touched.
    pub fn upgrade() -> Self {
        let placed = |first: bool| {
            CATALOGUE.iter().filter_map(move |s| match s.upgrade {
                InUpgrade::First(scope) if first => Some(s.step(scope)),
                InUpgrade::Then(scope) if !first => Some(s.step(scope)),
                _ => None,
            })
        };
        let end = Phase::UPGRADE_END.into_iter().map(|phase| Step {
            phase,
            scope: Scope::Cluster,
            preflight: false,
        });
        Workflow {
            kind: WorkflowKind::Upgrade,
            steps: placed(true).chain(placed(false)).chain(end).collect(),
        }
    }

    /// The steps that end an upgrade once the node runs the new release: its turn in the
    /// plan marked done, the trusted release moved when it was the last node, the rollback
    /// snapshot removed. Steps like the others, so a kill anywhere among them is finished by
    /// the next run; run alone to finish an upgrade interrupted there.
    pub fn upgrade_end() -> Self {
        let upgrade = Workflow::upgrade();
        Workflow {
            kind: WorkflowKind::Upgrade,
            steps: upgrade
                .steps
                .into_iter()
                .filter(|s| Phase::UPGRADE_END.contains(&s.phase))
                .collect(),
        }
    }

    /// The steps before [`Workflow::upgrade_end`]: what moves the node itself.
    pub fn upgrade_node_phases() -> Vec<Phase> {
        Workflow::upgrade()
            .phases()
            .into_iter()
            .filter(|p| !Phase::UPGRADE_END.contains(p))
            .collect()
    }
}

/// What `airgap reset` removes: every path a phase owns that reset takes, each once (a path
/// under another listed one goes with it).
pub fn installed_paths(layout: &NodeLayout) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = CATALOGUE
        .iter()
        .flat_map(|s| (s.owns)(layout))
        .filter(OwnedPath::reset)
        .map(|o| o.path)
        .collect();
    paths.sort();
    paths.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !kept.iter().any(|k| path.starts_with(k)) {
            kept.push(path);
        }
    }
    kept
}

/// What an upgrade's rollback snapshot keeps: the configuration every phase of the upgrade
/// renders.
pub fn rendered_paths(layout: &NodeLayout) -> Vec<PathBuf> {
    CATALOGUE
        .iter()
        .filter(|s| s.upgrade != InUpgrade::No)
        .flat_map(|s| (s.owns)(layout))
        .filter(OwnedPath::rolled_back)
        .map(|o| o.path)
        .collect()
}

/// What status checks of the phases' work (beyond the services' own probes).
pub fn checks(layout: &NodeLayout, config: &InstallConfig) -> Vec<(Phase, Check)> {
    CATALOGUE
        .iter()
        .filter_map(|s| s.check.map(|check| (s.phase, check(layout, config))))
        .collect()
}

fn outcome(changed: bool) -> Outcome {
    if changed {
        Outcome::Done
    } else {
        Outcome::Unchanged
    }
}

/// Polls `check` until it succeeds or `limit` passes; the error is the last failure.
async fn wait_for<F, Fut, E>(limit: Duration, mut check: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// etcd answering its health check within `limit`.
async fn etcd_healthy(ctx: &mut InstallContext, limit: Duration) -> Result<EtcdClient, PhaseError> {
    let client = ctx.etcd_client()?;
    wait_for(limit, || client.health())
        .await
        .map_err(|source| PhaseError::EtcdUnhealthy {
            secs: limit.as_secs(),
            log: ctx.layout.log_dir().join("etcd.log"),
            source,
        })?;
    Ok(client)
}
