//! `airgap install`: the `init` workflow on this node.
//!
//! Everything that can be refused is refused before the first byte is written: the
//! configuration and which node this is, an imported certificate, the external registry's
//! files, the bundle's signature, a root that belongs to another installation, and a bundle
//! of another release than the one the root runs (that is an upgrade's job; a lower version
//! is refused everywhere). Then the [`Runner`] runs the phases.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::Launch;
use crate::config::{local_addresses, InstallConfig};
use crate::error::InstallError;
use crate::host::Host;
use crate::journal::Journal;
use crate::kubernetes::kubeadm::ClusterInit;
use crate::layout::NodeLayout;
use crate::phases::{ContextInputs, InstallContext, SeedStats};
use crate::pki;
use crate::release::{decide, Decision, Release};
use crate::workflow::{Observer, SkipSet, Workflow};

/// What `airgap install` was asked.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub config: PathBuf,
    pub bundle: PathBuf,
    pub public_key: PathBuf,
    pub root: PathBuf,
    /// This node's name in `install.yaml`; found by address when `None`.
    pub node: Option<String>,
    /// The `airgap` binary the agent and the built-in registry run as.
    pub exe: PathBuf,
    /// Blobs uploaded at once while seeding.
    pub jobs: usize,
    pub skip: SkipSet,
}

#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    pub root: PathBuf,
    pub fqdn: String,
    pub node: String,
    pub release: String,
    pub etcd_endpoint: String,
    pub registry_endpoint: Option<String>,
    pub registry_username: Option<String>,
    pub launch: Option<Launch>,
    pub seed: Option<SeedStats>,
    /// Time from the start of the run until etcd and the registry were serving, seeding
    /// excluded.
    pub healthy_after: Duration,
    /// Whether kubeadm ran; `None` when the kubernetes phase was skipped.
    pub cluster: Option<ClusterInit>,
    /// On the first HA node: the `airgap join` command for the others, with a fresh token.
    pub join_command: Option<crate::secret::SecretString>,
}

pub async fn install(
    request: &InstallRequest,
    observer: Arc<dyn Observer>,
    host: Arc<dyn Host>,
) -> Result<InstallReport, InstallError> {
    let started = Instant::now();
    let config = InstallConfig::load(&request.config)?;
    let node = config
        .resolve_node(request.node.as_deref(), &local_addresses())?
        .clone();
    let layout = NodeLayout::new(&request.root);
    let loaded = Journal::load(&layout.journal())?;
    let mut journal = loaded.journal;
    if let Some(found) = &journal.installation {
        if found != config.metadata.name.as_str() {
            return Err(InstallError::OtherInstallation {
                root: request.root.clone(),
                found: found.clone(),
            });
        }
    }
    preflight(&config)?;
    let release = Release::open(&request.bundle, &request.public_key)?;
    if journal.release().is_none() {
        // A fresh installation only: one under way finishes with the release it started.
        crate::release::check_fresh(&release, host.now())?;
    }
    if let Some(installed) = journal.release() {
        let offered = release.id().clone();
        match decide(&installed, &offered) {
            Decision::Same => {}
            Decision::Older => {
                return Err(InstallError::Downgrade {
                    trusted: Box::new(installed),
                    offered: Box::new(offered),
                })
            }
            Decision::Newer | Decision::Conflicting => {
                return Err(InstallError::ReleaseChange {
                    root: request.root.clone(),
                    installed: Box::new(installed),
                    offered: Box::new(offered),
                })
            }
        }
    }
    // Only now, with nothing refused, is an older journal written back in the current schema.
    if loaded.migrated_from.is_some() {
        journal.save(&layout.journal())?;
    }

    let mut ctx = InstallContext::new(ContextInputs {
        config,
        node,
        layout: layout.clone(),
        release,
        origin: crate::release::ReleaseOrigin::Bundle(request.bundle.clone()),
        config_path: request.config.clone(),
        exe: request.exe.clone(),
        jobs: request.jobs,
        observer: observer.clone(),
        host: host.clone(),
        started,
    });
    ctx.run_workflow(&Workflow::init(), &mut journal, &request.skip, None)
        .await?;
    let mut report = report(&ctx, &request.root);
    if let crate::config::Topology::Ha { vip, .. } = ctx.config.topology()? {
        report.join_command = Some(join_command(&mut ctx, vip, &request.public_key).await?);
    }
    Ok(report)
}

/// What `airgap join` was asked.
#[derive(Debug, Clone)]
pub struct JoinNodeRequest {
    /// `ID.SECRET@sha256:PIN` as `airgap token create` printed it.
    pub token: String,
    /// A cluster node's (or the VIP's) join API: `HOST[:PORT]`.
    pub server: String,
    /// The key the cluster's shared keys are sealed under (hex, as `install` printed it).
    pub certificate_key: String,
    pub bundle: PathBuf,
    pub public_key: PathBuf,
    pub root: PathBuf,
    pub node: Option<String>,
    pub exe: PathBuf,
    pub jobs: usize,
    pub skip: SkipSet,
}

/// `airgap join`: admitted by the cluster (once; a re-run goes on from what it received),
/// then the `join` workflow, whose cluster-scoped phases read what `init` created.
pub async fn join(
    request: &JoinNodeRequest,
    observer: Arc<dyn Observer>,
    host: Arc<dyn Host>,
) -> Result<InstallReport, InstallError> {
    use crate::cluster::join::{request_join, JoinState};
    let started = Instant::now();
    let layout = NodeLayout::new(&request.root);
    // A mistyped key is said before the bundle is hashed, not after.
    let certificate_key =
        crate::cluster::certificate_key::CertificateKey::parse(&request.certificate_key)
            .map_err(crate::cluster::join::JoinError::from)?;
    let release = Release::open(&request.bundle, &request.public_key)?;
    let mut journal = Journal::load(&layout.journal())?.journal;
    let state = match JoinState::load(&layout)? {
        Some(state) => state,
        None => {
            if let Some(found) = &journal.installation {
                return Err(InstallError::OtherInstallation {
                    root: request.root.clone(),
                    found: found.clone(),
                });
            }
            request_join(
                &layout,
                &request.token,
                &request.server,
                request.node.as_deref(),
                &certificate_key,
                &release,
            )
            .await?
        }
    };
    let config_path = layout.install_yaml();
    let config = InstallConfig::load(&config_path)?;
    let node = config.resolve_node(Some(&state.node), &[])?.clone();
    if let Some(installed) = journal.release() {
        if decide(&installed, release.id()) != Decision::Same {
            return Err(InstallError::ReleaseChange {
                root: request.root.clone(),
                installed: Box::new(installed),
                offered: Box::new(release.id().clone()),
            });
        }
    }
    let mut ctx = InstallContext::new(ContextInputs {
        config,
        node,
        layout,
        release,
        origin: crate::release::ReleaseOrigin::Bundle(request.bundle.clone()),
        config_path,
        exe: request.exe.clone(),
        jobs: request.jobs,
        observer,
        host,
        started,
    });
    ctx.joining = Some(state);
    ctx.run_workflow(&Workflow::join(), &mut journal, &request.skip, None)
        .await?;
    Ok(report(&ctx, &request.root))
}

/// A token for the two other nodes (one hour), the shared keys uploaded under a new
/// certificate key, and the command that uses both.
async fn join_command(
    ctx: &mut InstallContext,
    vip: std::net::IpAddr,
    public_key: &Path,
) -> Result<crate::secret::SecretString, InstallError> {
    use crate::cluster::{pin::CaPin, token};
    let etcd = ctx.etcd_client().map_err(|e| InstallError::Phase {
        phase: crate::journal::Phase::Etcd,
        source: Box::new(e),
    })?;
    let ca =
        std::fs::read_to_string(ctx.layout.fqdn_ca()).map_err(|source| InstallError::Input {
            path: ctx.layout.fqdn_ca(),
            source,
        })?;
    let pin = CaPin::of_pem(&ca).ok_or_else(|| InstallError::Input {
        path: ctx.layout.fqdn_ca(),
        source: std::io::Error::other("no PEM certificate"),
    })?;
    let token = token::create(&etcd, Duration::from_secs(3600), 2)
        .await
        .map_err(crate::cluster::join::JoinError::from)?;
    let key = crate::cluster::certificate_key::CertificateKey::generate()
        .map_err(crate::cluster::join::JoinError::from)?;
    crate::cluster::certificate_key::upload(
        &etcd,
        &ctx.layout,
        &key,
        crate::cluster::certificate_key::MATERIAL_TTL,
    )
    .await
    .map_err(crate::cluster::join::JoinError::from)?;
    Ok(crate::secret::SecretString::new(format!(
        "airgap join --token {} --certificate-key {} --server {vip} --bundle {} --pub {}",
        token.with_pin(&pin).expose(),
        key.to_hex().expose(),
        ctx.origin,
        public_key.display()
    )))
}

fn report(ctx: &InstallContext, root: &Path) -> InstallReport {
    let outcome = ctx.outcome.clone();
    InstallReport {
        root: root.to_path_buf(),
        fqdn: ctx.config.spec.fqdn.to_string(),
        node: ctx.node.name.to_string(),
        release: ctx.release.id().to_string(),
        etcd_endpoint: ctx.member().client_url(),
        registry_endpoint: outcome.registry_endpoint,
        registry_username: outcome.registry_username,
        launch: outcome.launch,
        seed: outcome.seed,
        healthy_after: outcome.healthy_after,
        cluster: outcome.cluster,
        join_command: None,
    }
}

/// Checks on inputs other than the bundle, before anything is written.
fn preflight(config: &InstallConfig) -> Result<(), InstallError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| InstallError::Input {
            path: path.to_path_buf(),
            source,
        })
    };
    if let Some(certs) = &config.spec.certificates {
        let import = &certs.import;
        let (cert, key, ca) = (
            read(&import.cert)?,
            zeroize::Zeroizing::new(read(&import.key)?),
            read(&import.ca)?,
        );
        pki::imported::check_server_certificate(&cert, &key, &ca, config.spec.fqdn.as_str())
            .map_err(|source| InstallError::Import {
                path: import.cert.clone(),
                source,
            })?;
    }
    if let Some(external) = config.external_registry() {
        if let Some(ca) = &external.ca {
            read(ca)?;
        }
        if let Some(pw) = &external.password_file {
            read(pw)?;
        }
    }
    Ok(())
}
