//! Phase registry: the built-in registry on this node (htpasswd, service, readiness) unless
//! an external one is configured; then the release seeded into it and the mirror
//! configuration (rewrite map, the registry's CA) written for the phases after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::mirror::{MirrorTarget, RewriteMap};
use registry::seed::{SeedObserver, SeedPlan, Seeder};
use registry::{ClientConfig, RegistryClient};

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::{outcome, wait_for, InstallContext, Mirror, RegistryAccess, SeedStats};
use crate::agent;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::files::{write_atomic, write_if_changed, PRIVATE, PUBLIC};
use crate::journal::{Phase, WorkflowKind};
use crate::layout::NodeLayout;
use crate::phase::Scope;
use crate::service::ServiceSpec;
use crate::workflow::{Failpoint, Observer};

/// How long the built-in registry has to accept connections once started.
const READY_WITHIN: Duration = Duration::from_secs(30);

pub(super) async fn run(
    ctx: &mut InstallContext,
    workflow: WorkflowKind,
) -> Result<String, PhaseError> {
    let access = ctx.registry_access().await?;
    let target = MirrorTarget::parse(&access.endpoint, false)?;
    let mut resolve = Vec::new();
    let mut local = None;
    if ctx.config.external_registry().is_none() {
        if seeded_by_another_node(ctx, workflow) {
            local = Some(place_from_bundle(ctx).await?);
        }
        let listen = ctx.registry_listen();
        builtin_registry(ctx, &access)?;
        resolve.push(builtin_address(ctx));
        wait_for(READY_WITHIN, || async move {
            tokio::net::TcpStream::connect(listen).await.map(|_| ())
        })
        .await
        .map_err(|source| PhaseError::RegistryUnreachable {
            addr: listen,
            secs: READY_WITHIN.as_secs(),
            log: ctx.layout.log_dir().join("registry.log"),
            source,
        })?;
    }
    ctx.outcome.healthy_after = ctx.started.elapsed();
    let report = seed(ctx, &access, &target, resolve).await?;
    let index = ctx.release.verified().index();
    let w = |path: PathBuf, bytes: &[u8]| {
        write_if_changed(&path, bytes, PUBLIC).map_err(PhaseError::io("writing", &path))
    };
    let rewrite = RewriteMap::new(index, &target);
    w(ctx.layout.rewrite_map(), &rewrite.to_json())?;
    if !access.ca_pem.is_empty() {
        w(ctx.layout.registry_ca(), &access.ca_pem)?;
    }
    let mut summary = format!(
        "{} images and {} packs in {target}: {} blobs uploaded, {} already there",
        index.images.len(),
        index.packs.len(),
        report.blobs_uploaded,
        report.blobs_present
    );
    if let Some(placed) = local {
        summary.push_str(&format!(
            "; {} blobs ({} bytes) placed in this node's store from its bundle",
            placed.blobs, placed.bytes
        ));
    }
    if !report.sparse_refused.is_empty() {
        summary.push_str(&format!(
            "; the registry refused the upstream (sparse) index of {} platform-filtered images, which pull by tag or bundle digest but not by their upstream digest: {}",
            report.sparse_refused.len(),
            report.sparse_refused.join(", ")
        ));
    }
    ctx.outcome.registry_endpoint = Some(access.endpoint.clone());
    ctx.outcome.registry_username = Some(access.username.clone());
    ctx.mirror = Some(Mirror { target, rewrite });
    Ok(summary)
}

/// Whether the cluster's registry already holds this release, seeded by another node: a
/// joining node's (the cluster trusts the release it joins with), or an upgrade on any node
/// after the first of install.yaml (nodes upgrade in that order, the first seeds). Its blobs
/// are then in the shared catalog and would be fetched from the peers on the first request.
fn seeded_by_another_node(ctx: &InstallContext, workflow: WorkflowKind) -> bool {
    let first = ctx.config.spec.nodes.first().map(|n| &n.name);
    match workflow {
        WorkflowKind::Join => true,
        WorkflowKind::Upgrade => first.is_some_and(|f| *f != ctx.node.name),
        WorkflowKind::Init => false,
    }
}

/// The bundle's blobs into this node's registry store, read locally and digest-checked, so
/// nothing the node already carries crosses the network.
async fn place_from_bundle(ctx: &InstallContext) -> Result<crate::source::Placed, PhaseError> {
    let Some(archive) = ctx.release.archive().cloned() else {
        // A release read from a registry: `prefetch` copied it into the cluster's registry.
        return Ok(crate::source::Placed::default());
    };
    let store = ctx.layout.registry_storage();
    let observer = ctx.observer.clone();
    let index = archive.verified().index();
    observer.bytes_total("placing", index.content_size());
    let derived = registry::release_artifact::blobs(
        &ctx.release.source().parts(),
        &index.name,
        &index.version.to_string(),
    );
    let jobs = ctx.jobs;
    let placed = tokio::task::spawn_blocking(move || {
        crate::source::place_bundle_blobs(&archive, &derived, &store, jobs, &|n| {
            observer.bytes_done(n)
        })
    })
    .await
    .map_err(|e| {
        PhaseError::io("placing blobs in", &ctx.layout.registry_storage())(std::io::Error::other(e))
    })??;
    ctx.observer.bytes_finished();
    ctx.audit.record_with(
        "registry.place",
        &ctx.layout.registry_storage().display().to_string(),
        outcome(placed.blobs > 0),
        Some(&format!(
            "{} blobs ({} bytes) from the bundle, {} present",
            placed.blobs, placed.bytes, placed.present
        )),
    );
    Ok(placed)
}

/// The built-in registry is reached by the FQDN its certificate names, at this node's address.
fn builtin_address(ctx: &InstallContext) -> (String, std::net::SocketAddr) {
    (ctx.config.spec.fqdn.to_string(), ctx.registry_listen())
}

/// `upgrade --from-registry`, before the node changes anything: the release copied from the
/// registry it was published in into the cluster's (running) registry, every blob checked
/// against the signed index. The upgrade's registry phase then finds it all there.
pub(crate) async fn prefetch(ctx: &mut InstallContext) -> Result<registry::SeedReport, PhaseError> {
    let access = ctx.registry_access().await?;
    let target = MirrorTarget::parse(&access.endpoint, false)?;
    let resolve = if ctx.config.external_registry().is_none() {
        vec![builtin_address(ctx)]
    } else {
        Vec::new()
    };
    seed(ctx, &access, &target, resolve).await
}

/// Seeds the release into `target` (from the bundle, or from the registry it was published
/// in), with progress; records what it did.
async fn seed(
    ctx: &mut InstallContext,
    access: &RegistryAccess,
    target: &MirrorTarget,
    resolve: Vec<(String, std::net::SocketAddr)>,
) -> Result<registry::SeedReport, PhaseError> {
    let registry_error = |source| PhaseError::Registry {
        target: target.to_string(),
        source: Box::new(source),
    };
    let client = RegistryClient::new(
        &target.host,
        ClientConfig {
            ca_pem: (!access.ca_pem.is_empty()).then(|| access.ca_pem.clone()),
            credentials: access.credentials(),
            resolve,
            ..ClientConfig::default()
        },
    )
    .map_err(registry_error)?;
    client.ping().await.map_err(registry_error)?;

    let source = ctx.release.source().clone();
    let seed_error = |source| PhaseError::Seed {
        target: target.to_string(),
        source: Box::new(source),
    };
    let plan = SeedPlan::new(&source, target).await.map_err(seed_error)?;
    ctx.observer.bytes_total("seeding", plan.blob_bytes());
    let seeding = Instant::now();
    let seeder = Seeder {
        source,
        client: Arc::new(client),
        jobs: ctx.jobs,
        observer: Arc::new(SeedProgress {
            observer: ctx.observer.clone(),
            failpoint: ctx.failpoint,
        }),
    };
    let report = seeder.run(&plan).await.map_err(seed_error)?;
    ctx.observer.bytes_finished();
    ctx.outcome.seed = Some(SeedStats {
        bytes_uploaded: report.bytes_uploaded,
        blobs_uploaded: report.blobs_uploaded,
        blobs_present: report.blobs_present,
        elapsed: seeding.elapsed(),
    });
    ctx.audit.record_with(
        "registry.seed",
        &target.to_string(),
        outcome(report.blobs_uploaded + report.manifests_pushed > 0),
        Some(&format!(
            "{} blobs uploaded, {} present, {} manifests pushed",
            report.blobs_uploaded, report.blobs_present, report.manifests_pushed
        )),
    );

    Ok(report)
}

/// The built-in registry's htpasswd and service definition, and the agent running it.
fn builtin_registry(ctx: &mut InstallContext, access: &RegistryAccess) -> Result<(), PhaseError> {
    let htpasswd = ctx.layout.htpasswd();
    let password = access.password.expose();
    ensure_htpasswd(ctx, &htpasswd, &access.username, password)?;
    let pull_htpasswd = ctx.layout.pull_htpasswd();
    let pull = access.pull_credentials();
    if let Some(pull) = &pull {
        ensure_htpasswd(ctx, &pull_htpasswd, &pull.username, &pull.password)?;
    }
    // The registry logs in to etcd as its own user, limited to its prefixes, when etcd has
    // authentication on; a node installed before that uses the certificate it had.
    let registry_password = ctx.layout.etcd_password(crate::etcd::auth::REGISTRY);
    let authenticated = registry_password.exists();
    let etcd_client = if authenticated {
        ctx.layout.etcd_gateway_pair()
    } else {
        ctx.layout.etcd_client_pair()
    };
    let spec = ServiceSpec {
        name: "registry".into(),
        program: ctx.airgap_program()?,
        args: vec![
            "registry".into(),
            "serve".into(),
            ctx.layout.registry_storage().display().to_string(),
            "--listen".into(),
            ctx.registry_bind().to_string(),
            "--tls-cert".into(),
            ctx.layout.fqdn_cert().display().to_string(),
            "--tls-key".into(),
            ctx.layout.fqdn_key().display().to_string(),
            "--htpasswd".into(),
            htpasswd.display().to_string(),
            "--pull-htpasswd".into(),
            pull_htpasswd.display().to_string(),
            // Metadata in etcd: every node's registry shows one catalog.
            "--etcd".into(),
            ctx.member().gateway_url(),
            "--etcd-ca".into(),
            ctx.layout
                .etcd_pki_dir()
                .join("ca.crt")
                .display()
                .to_string(),
            "--etcd-cert".into(),
            etcd_client.cert.display().to_string(),
            "--etcd-key".into(),
            etcd_client.key.display().to_string(),
            // Old releases are pruned and collected (`airgap release prune`).
            "--enable-delete".into(),
        ],
        env: Default::default(),
    };
    let mut spec = spec;
    if authenticated {
        spec.args.extend([
            "--etcd-user".into(),
            crate::etcd::auth::REGISTRY.into(),
            "--etcd-password-file".into(),
            registry_password.display().to_string(),
        ]);
    }
    if ctx.config.spec.mode == crate::config::Mode::Ha {
        // Every node holds every blob: fetched from the others on a miss and in the
        // background, authenticated with the installation's registry login.
        // Replication only pulls: the pull-only login is enough.
        let login = ctx.layout.registry_peer_login();
        let (user, password) = match &pull {
            Some(p) => (p.username.as_str(), p.password.as_str()),
            None => (access.username.as_str(), password),
        };
        let line = zeroize::Zeroizing::new(format!("{user}:{password}\n"));
        write_if_changed(&login, line.as_bytes(), PRIVATE)
            .map_err(PhaseError::io("writing", &login))?;
        let port = ctx.config.registry_port();
        for other in ctx
            .config
            .spec
            .nodes
            .iter()
            .filter(|n| n.name != ctx.node.name)
        {
            spec.args.push("--peer".into());
            spec.args
                .push(std::net::SocketAddr::new(other.address, port).to_string());
        }
        spec.args.extend([
            "--peer-ca".into(),
            ctx.layout.fqdn_ca().display().to_string(),
            "--peer-credentials".into(),
            login.display().to_string(),
            "--replica-report".into(),
            format!(
                "{}{}",
                crate::cluster::members::REPLICA_PREFIX,
                ctx.node.name
            ),
        ]);
    }
    let changed = spec.write(&ctx.layout.services_dir())?;
    ctx.audit
        .record("service.define", "registry", outcome(changed));
    let airgap = ctx.airgap_program()?;
    agent::ensure_running(&ctx.layout, &airgap, ctx.host.as_ref())?;
    Ok(())
}

/// Writes a one-user htpasswd unless it already holds `user` with `password`.
fn ensure_htpasswd(
    ctx: &InstallContext,
    path: &std::path::Path,
    user: &str,
    password: &str,
) -> Result<(), PhaseError> {
    let current = registry_server::Htpasswd::load(path)
        .map(|h| h.matches(user, password))
        .unwrap_or(false);
    if !current {
        let line =
            registry_server::htpasswd::entry(user, password).map_err(PhaseError::Htpasswd)?;
        write_atomic(path, line.as_bytes(), PRIVATE).map_err(PhaseError::io("writing", path))?;
        ctx.audit.record(
            "registry.htpasswd",
            &path.display().to_string(),
            Outcome::Done,
        );
    }
    Ok(())
}

struct SeedProgress {
    observer: Arc<dyn Observer>,
    failpoint: Failpoint,
}

impl SeedObserver for SeedProgress {
    fn bytes_sent(&self, n: u64) {
        self.observer.bytes_done(n);
        self.failpoint.reached(Phase::Registry);
    }
    fn blob_skipped(&self, size: u64) {
        self.observer.bytes_done(size);
    }
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Registry,
    about: "the registry started and the release seeded into it",
    install: Some(Scope::Node),
    upgrade: InUpgrade::First(Scope::Cluster),
    preflight: false,
    run: |ctx, _journal, workflow| Box::pin(run(ctx, workflow)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![OwnedPath::config(layout.mirror_dir())]
}
