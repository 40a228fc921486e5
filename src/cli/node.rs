//! `airgap install|agent|status|stop|reset`: the air-gapped node.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::ProgressBar;
use installer::agent::Launch;
use installer::error::InstallError;
use installer::host::SystemHost;
use installer::install::{install, InstallRequest};
use installer::journal::{Phase, PhaseState};
use installer::kubernetes::kubeadm::ClusterInit;
use installer::layout::NodeLayout;
use installer::status::ClusterState;
use installer::workflow::{Observer, SkipSet, Workflow};

use super::progress::{bytes_bar, HumanBytes};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The installation to lay down (install.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// The verified bundle to install from (or the first part of a split bundle).
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The public key the bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// Relocate every path the installer touches (default: /).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// This node's name in install.yaml (default: the node whose address this machine has).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Phases to leave out, comma-separated (pki,etcd,keys,registry,runtime,agent,kubernetes,platform);
    /// verify always runs.
    #[arg(long = "skip-phases", value_name = "P,...", default_value = "")]
    pub skip_phases: String,
    /// Blobs uploaded at once while seeding the registry.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print the summary as JSON (docs/json/install.schema.json); phase lines go to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The join token, as `airgap token create` (or the first node's install) printed it:
    /// ID.SECRET@sha256:PIN, the pin being the cluster CA's.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AIRGAP_JOIN_TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// The key the cluster's shared keys are sealed under (64 hex characters), printed with
    /// the token by the first node's install or `airgap token create --certificate-key`.
    #[arg(
        long,
        value_name = "KEY",
        env = "AIRGAP_CERTIFICATE_KEY",
        hide_env_values = true
    )]
    pub certificate_key: String,
    /// A cluster node's (or the VIP's) address: HOST[:PORT], port 9443 by default.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: String,
    /// The cluster's bundle (the same release it runs), for this node's binaries.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The public key the bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// Relocate every path the installer touches (default: /).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// This node's name in install.yaml (default: the node whose address this machine has).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Phases to leave out, comma-separated; verify always runs.
    #[arg(long = "skip-phases", value_name = "P,...", default_value = "")]
    pub skip_phases: String,
    /// Blobs uploaded at once while seeding.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print the summary as JSON (docs/json/join.schema.json); phase lines go to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    pub action: Option<UpgradeAction>,
    /// The newer bundle (full, or a delta built `--since` the installed release's bundle).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["check", "from_registry"],
        conflicts_with_all = ["check", "from_registry"]
    )]
    pub bundle: Option<PathBuf>,
    /// List the releases a registry holds (their signed indexes verified with --pub) and which
    /// are newer than the node's; changes nothing.
    #[arg(long, requires = "from_registry")]
    pub check: bool,
    /// Upgrade from (or with --check, list) the releases seeded or synced into this registry
    /// and prefix (https://HOST[:PORT][/PREFIX]); no bundle file is needed on the node.
    #[arg(long, value_name = "URL")]
    pub from_registry: Option<String>,
    /// With --from-registry: the release to move to (default: the newest one newer than the
    /// node's).
    #[arg(
        long,
        value_name = "V",
        requires = "from_registry",
        conflicts_with = "check"
    )]
    pub version: Option<String>,
    /// CA certificate to trust for --from-registry.
    #[arg(long, value_name = "FILE", requires = "from_registry")]
    pub ca: Option<PathBuf>,
    /// With --check: warn when the newest signed release in the registry was built longer ago
    /// than this (a frozen repository keeps serving old releases).
    #[arg(long, value_name = "DURATION", default_value = "90d",
          value_parser = humantime::parse_duration, requires = "check")]
    pub max_age: std::time::Duration,
    /// The public key the bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE", required = true)]
    pub public_key: Option<PathBuf>,
    /// The root the node was installed into.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Phases to leave out, comma-separated (registry,etcd,runtime,agent,kubernetes,platform);
    /// verify always runs.
    #[arg(long = "skip-phases", value_name = "P,...", default_value = "")]
    pub skip_phases: String,
    /// Blobs uploaded at once while seeding the registry.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print the summary, or with --check the releases listed, as JSON (docs/json/upgrade.schema.json); phase lines go to stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RootArgs {
    /// The root the node was installed into.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Phase lines on stdout; a byte bar on a terminal while verifying and seeding.
struct PhaseLines {
    bar: Mutex<Option<ProgressBar>>,
    /// `--json`: standard output carries only the summary document.
    to_stderr: bool,
}

impl PhaseLines {
    fn new(json: bool) -> Arc<Self> {
        Arc::new(PhaseLines {
            bar: Mutex::new(None),
            to_stderr: json,
        })
    }

    fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

impl Observer for PhaseLines {
    fn phase_started(&self, phase: Phase) {
        tracing::info!("phase {phase} started");
    }
    fn phase_finished(&self, phase: Phase, summary: &str, elapsed: Duration) {
        self.line(&format!(
            "[{phase}] {summary} ({:.1}s)",
            elapsed.as_secs_f64()
        ));
    }
    fn phase_skipped(&self, phase: Phase) {
        self.line(&format!("[{phase}] skipped (--skip-phases)"));
    }
    fn bytes_total(&self, what: &'static str, total: u64) {
        if let Ok(mut bar) = self.bar.lock() {
            *bar = Some(bytes_bar(total, what));
        }
    }
    fn bytes_done(&self, n: u64) {
        if let Ok(bar) = self.bar.lock() {
            if let Some(bar) = bar.as_ref() {
                bar.inc(n);
            }
        }
    }
    fn bytes_finished(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        }
    }
}

pub fn install_cmd(args: InstallArgs) -> anyhow::Result<()> {
    let request = InstallRequest {
        config: args.config,
        bundle: args.bundle,
        public_key: args.public_key,
        root: std::path::absolute(&args.root).context("resolving --root")?,
        node: args.node,
        exe: std::env::current_exe().context("locating the airgap binary")?,
        jobs: args.jobs as usize,
        skip: SkipSet::parse(&args.skip_phases, &Workflow::init().phases())
            .map_err(InstallError::from)?,
    };
    let observer = PhaseLines::new(args.json);
    let report = runtime()?
        .block_on(install(&request, observer, Arc::new(SystemHost)))
        .context("install failed")?;
    if args.json {
        return super::output::print_json(&installed_json(&report));
    }
    print_installed(&report, "installed");
    if let Some(join) = &report.join_command {
        println!();
        println!("to add the other nodes, run on each of them (the token allows 2 joins for 1h, the certificate key opens the cluster's keys for 2h and is shown only here; `airgap token create --certificate-key` makes more):");
        // The one place the token is shown: for the operator to run on the other nodes.
        println!("  {}", join.expose());
    }
    Ok(())
}

pub fn join_cmd(args: JoinArgs) -> anyhow::Result<()> {
    let request = installer::install::JoinNodeRequest {
        token: args.token,
        certificate_key: args.certificate_key,
        server: args.server,
        bundle: args.bundle,
        public_key: args.public_key,
        root: std::path::absolute(&args.root).context("resolving --root")?,
        node: args.node,
        exe: std::env::current_exe().context("locating the airgap binary")?,
        jobs: args.jobs as usize,
        skip: SkipSet::parse(&args.skip_phases, &Workflow::join().phases())
            .map_err(InstallError::from)?,
    };
    let observer = PhaseLines::new(args.json);
    let report = runtime()?
        .block_on(installer::install::join(
            &request,
            observer,
            Arc::new(SystemHost),
        ))
        .context("join failed")?;
    if args.json {
        return super::output::print_json(&installed_json(&report));
    }
    print_installed(&report, &format!("joined {} as", report.node));
    Ok(())
}

/// `install --json` and `join --json`: what the node is now and where its pieces are.
fn installed_json(report: &installer::install::InstallReport) -> serde_json::Value {
    let layout = NodeLayout::new(&report.root);
    serde_json::json!({
        "root": report.root,
        "fqdn": report.fqdn,
        "node": report.node,
        "release": report.release,
        "healthySeconds": report.healthy_after.as_secs_f64(),
        "etcd": report.etcd_endpoint,
        "registry": report.registry_endpoint.as_ref().map(|endpoint| serde_json::json!({
            "endpoint": endpoint,
            "username": report.registry_username,
        })),
        "seed": report.seed.as_ref().map(|s| serde_json::json!({
            "blobsUploaded": s.blobs_uploaded,
            "bytesUploaded": s.bytes_uploaded,
            "blobsPresent": s.blobs_present,
            "seconds": s.elapsed.as_secs_f64(),
        })),
        "kubernetes": match report.cluster {
            None => "skipped",
            Some(ClusterInit::KubeadmMissing) => "kubeadmMissing",
            Some(_) => "initialized",
        },
        "agent": match report.launch {
            Some(Launch::Systemd) => "systemd",
            Some(Launch::Detached) => "detached",
            None => "skipped",
        },
        // The one place a first HA node's join command is given: for the operator to run.
        "joinCommand": report.join_command.as_ref().map(|c| c.expose().to_string()),
        "paths": {
            "ca": layout.fqdn_ca(),
            "pki": layout.pki_dir(),
            "encryption": layout.encryption_config(),
            "mirrors": layout.mirror_dir(),
            "kubeadm": layout.kubeadm_config(),
            "manifests": layout.manifests_dir(),
            "state": layout.state_dir(),
            "logs": layout.log_dir(),
        },
    })
}

fn print_installed(report: &installer::install::InstallReport, what: &str) {
    let layout = NodeLayout::new(&report.root);
    println!();
    println!(
        "{what} {} (healthy {:.1}s after start){}",
        report.fqdn,
        report.healthy_after.as_secs_f64(),
        match &report.seed {
            Some(s) if s.elapsed.as_secs_f64() > 0.0 => format!(
                "; seeded {} in {:.1}s ({}/s)",
                HumanBytes(s.bytes_uploaded),
                s.elapsed.as_secs_f64(),
                HumanBytes((s.bytes_uploaded as f64 / s.elapsed.as_secs_f64()) as u64)
            ),
            _ => String::new(),
        }
    );
    println!(
        "  etcd        {} (client certificate required)",
        report.etcd_endpoint
    );
    println!(
        "  registry    {} (user {}; password in secret airgap-system/registry-credentials)",
        report
            .registry_endpoint
            .as_deref()
            .unwrap_or("(registry phase skipped)"),
        report.registry_username.as_deref().unwrap_or("?")
    );
    println!("  CA          {}", layout.fqdn_ca().display());
    println!("  PKI         {}", layout.pki_dir().display());
    println!("  encryption  {}", layout.encryption_config().display());
    println!("  mirrors     {}", layout.mirror_dir().display());
    println!("  kubeadm     {}", layout.kubeadm_config().display());
    println!("  manifests   {}", layout.manifests_dir().display());
    println!("  state       {}", layout.state_dir().display());
    println!("  logs        {}", layout.log_dir().display());
    if report.cluster == Some(ClusterInit::KubeadmMissing) {
        println!(
            "kubeadm is not on this node: Kubernetes is configured but NOT running; add kubeadm, kubelet and containerd to the k8s pack's bin/ (or install them), then re-run install"
        );
    }
    if report.launch == Some(Launch::Detached) {
        println!(
            "the agent runs detached; `airgap status --root {0}` reports on it, `airgap stop --root {0}` stops it",
            report.root.display()
        );
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UpgradeAction {
    /// Show the cluster's upgrade plan (from etcd): the releases, each node's state and the
    /// steps it completed.
    Status(StatusArgs),
}

pub fn upgrade_cmd(args: UpgradeArgs) -> anyhow::Result<()> {
    if let Some(UpgradeAction::Status(status)) = args.action {
        return upgrade_status_cmd(status);
    }
    if args.check {
        return check_cmd(args);
    }
    let source = match (&args.bundle, &args.from_registry) {
        (Some(bundle), _) => installer::upgrade::UpgradeSource::Bundle(bundle.clone()),
        (None, Some(url)) => installer::upgrade::UpgradeSource::Registry {
            url: url.clone(),
            version: args.version.clone(),
            ca: args.ca.clone(),
        },
        (None, None) => anyhow::bail!("give --bundle FILE or --from-registry URL"),
    };
    let request = installer::upgrade::UpgradeRequest {
        source,
        public_key: args.public_key.clone().context("--pub KEY is required")?,
        root: std::path::absolute(&args.root).context("resolving --root")?,
        exe: std::env::current_exe().context("locating the airgap binary")?,
        jobs: args.jobs as usize,
        skip: SkipSet::parse(&args.skip_phases, &Workflow::upgrade().phases())
            .map_err(InstallError::from)?,
    };
    let observer = PhaseLines::new(args.json);
    let report = runtime()?
        .block_on(installer::upgrade::upgrade(
            &request,
            observer,
            Arc::new(SystemHost),
        ))
        .context("upgrade failed")?;
    if args.json {
        let release = |id: &installer::release::ReleaseId| serde_json::json!({"name": id.name, "version": id.version.to_string(), "indexSha256": id.index_sha256.to_string()});
        return super::output::print_json(&serde_json::json!({
            "node": report.node,
            "from": release(&report.from),
            "to": release(&report.to),
            "resumed": report.resumed,
            "clusterTrusts": report.advanced.is_some(),
            "next": report.next,
            "copied": report.prefetched.as_ref().map(|c| serde_json::json!({
                "from": args.from_registry,
                "blobsUploaded": c.blobs_uploaded,
                "bytesUploaded": c.bytes_uploaded,
                "blobsPresent": c.blobs_present,
            })),
        }));
    }
    println!();
    if let (Some(copied), Some(url)) = (&report.prefetched, &args.from_registry) {
        println!(
            "copied {} from {url} into the cluster's registry: {} blobs ({}), {} already there",
            report.to,
            copied.blobs_uploaded,
            super::progress::HumanBytes(copied.bytes_uploaded),
            copied.blobs_present
        );
    }
    println!(
        "upgraded node {} from {} to {}{}",
        report.node,
        report.from,
        report.to,
        if report.resumed { " (resumed)" } else { "" }
    );
    match (&report.advanced, &report.next) {
        (Some(_), _) => println!("every node runs {}: the cluster trusts it now", report.to),
        (None, Some(next)) => println!(
            "next: run the same upgrade on {next} (nodes roll one at a time; `airgap upgrade status` shows the plan)"
        ),
        (None, None) => {}
    }
    Ok(())
}

/// `airgap upgrade --check --from-registry URL`: the releases there, verified, against the
/// node's. Credentials from the standard auth files (`skopeo login`).
fn upgrade_status_cmd(args: StatusArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.root.root).context("resolving --root")?;
    let layout = NodeLayout::new(&root);
    let (config, node) = installer::cluster::installed(&layout)
        .with_context(|| format!("{} holds no installation", root.display()))?;
    let etcd = installer::cluster::etcd_of(&layout, &config, &node)?;
    let plan = runtime()?
        .block_on(installer::upgrade_plan::read(&etcd))
        .context("reading the upgrade plan")?;
    let Some((plan, _)) = plan else {
        if args.json {
            println!("null");
        } else {
            println!("no upgrade has run in this cluster");
        }
        return Ok(());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    println!(
        "upgrade {} -> {}: {}",
        plan.from,
        plan.to,
        if plan.complete() {
            "complete"
        } else {
            "in progress"
        }
    );
    for n in &plan.nodes {
        let steps: Vec<&str> = n.steps.iter().map(|p| p.as_str()).collect();
        println!(
            "  {:<10} {:<10} steps done: {}{}",
            n.name,
            n.state.as_str(),
            if steps.is_empty() {
                "-".to_string()
            } else {
                steps.join(", ")
            },
            n.error
                .as_ref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn check_cmd(args: UpgradeArgs) -> anyhow::Result<()> {
    use installer::upgrade::{list_registry_releases, ListedRelease};
    let Some(url) = &args.from_registry else {
        anyhow::bail!("--check needs --from-registry URL");
    };
    let target = registry::mirror::MirrorTarget::parse(url, false)?;
    let public_key = args.public_key.as_ref().context("--pub KEY is required")?;
    let key = airgap::PublicKey::load(public_key).context("loading the public key")?;
    let root = std::path::absolute(&args.root).context("resolving --root")?;
    let installed = installer::upgrade::installed_release(&root)?;
    let client = registry::RegistryClient::for_target(&target, args.ca.as_deref())?;
    let repo = target.repository(registry::release_artifact::REPOSITORY);
    let listed = runtime()?
        .block_on(list_registry_releases(
            &client,
            &repo,
            &key,
            installed.as_ref(),
        ))
        .with_context(|| format!("listing releases in {url}"))?;
    let say = super::output::prose(args.json);
    match &installed {
        Some(id) => say(format!("this node runs {id}")),
        None => say(format!("no installation under {}", root.display())),
    }
    if listed.is_empty() {
        say(format!(
            "{url} holds no airgap releases (airgap registry seed publishes them)"
        ));
    }
    let now = std::time::SystemTime::now();
    let mut rejected = 0;
    let mut newest_built = None;
    let mut rows = Vec::new();
    for release in &listed {
        match release {
            ListedRelease::Verified {
                id,
                decision,
                verified,
                ..
            } => {
                use installer::release::Decision;
                newest_built = Some((id, verified.index().created_at().ok()));
                let expired = installer::release::expired(verified, now);
                rows.push(serde_json::json!({
                    "tag": release_tag(release),
                    "verified": true,
                    "version": id.version.to_string(),
                    "indexSha256": id.index_sha256.to_string(),
                    "relation": match decision {
                        Some(Decision::Newer) => "newer",
                        Some(Decision::Same) => "running",
                        Some(Decision::Older) => "older",
                        Some(Decision::Conflicting) => "conflicting",
                        None => "unknown",
                    },
                    "expires": verified.index().expires,
                    "expired": expired.is_some(),
                    "offered": expired.is_none() && *decision == Some(Decision::Newer),
                }));
                let note = match (&expired, decision) {
                    (Some(at), _) => format!("expired {at}: never offered"),
                    (None, Some(Decision::Newer)) => {
                        "newer: `airgap upgrade` can move to it".into()
                    }
                    (None, Some(Decision::Same)) => "running".into(),
                    (None, Some(Decision::Older)) => "older: never offered".into(),
                    (None, Some(Decision::Conflicting)) => {
                        "conflicts with the running release: never offered".into()
                    }
                    (None, None) => "signature OK".into(),
                };
                let expires = match (&expired, &verified.index().expires) {
                    (None, Some(at)) => format!(" (expires {at})"),
                    _ => String::new(),
                };
                say(format!("  {id}  {note}{expires}"));
            }
            ListedRelease::Rejected { tag, reason } => {
                rejected += 1;
                rows.push(serde_json::json!({
                    "tag": tag,
                    "verified": false,
                    "reason": installer::error::chain(reason),
                }));
                say(format!(
                    "  {tag}  REJECTED: {}",
                    installer::error::chain(reason)
                ));
            }
        }
    }
    // Freshness: a repository whose newest signed release is old may be frozen.
    let mut stale = None;
    if let Some((id, Some(built))) = newest_built {
        let age = now.duration_since(built).unwrap_or_default();
        if age > args.max_age {
            stale = Some(age.as_secs());
            eprintln!(
                "warning: the newest signed release in {url}, {id}, was built {} ago (more than --max-age {}): the repository may be frozen (a stale mirror, or someone replaying old releases); check with your release channel",
                humantime::format_duration(shown_age(age)),
                humantime::format_duration(args.max_age)
            );
        }
    }
    if args.json {
        super::output::print_json(&serde_json::json!({
            "registry": url,
            "running": installed.as_ref().map(|id| serde_json::json!({
                "name": id.name,
                "version": id.version.to_string(),
                "indexSha256": id.index_sha256.to_string(),
            })),
            "releases": rows,
            "staleAgeSeconds": stale,
        }))?;
    }
    if rejected > 0 {
        anyhow::bail!("{rejected} release(s) in {url} failed verification and are not offered");
    }
    Ok(())
}

/// The tag a listed release was read from.
fn release_tag(release: &installer::upgrade::ListedRelease) -> &str {
    match release {
        installer::upgrade::ListedRelease::Verified { tag, .. }
        | installer::upgrade::ListedRelease::Rejected { tag, .. } => tag,
    }
}

pub fn agent_cmd(args: RootArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.root).context("resolving --root")?;
    installer::agent::run(&NodeLayout::new(root)).context("agent")?;
    Ok(())
}

pub fn status_cmd(args: StatusArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.root.root).context("resolving --root")?;
    let layout = NodeLayout::new(&root);
    let status = runtime()?
        .block_on(installer::status::gather(&layout))
        .context("reading the node's status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        match &status.installation {
            None => println!("{}: no installation", root.display()),
            Some(name) => println!(
                "installation {name} on node {} from bundle {} under {}",
                status.node.as_deref().unwrap_or("?"),
                status.bundle.as_deref().unwrap_or("?"),
                root.display()
            ),
        }
        for (phase, record) in &status.phases {
            match record {
                Some(r) => println!(
                    "  phase {:<10} {:<8} {}",
                    phase.as_str(),
                    match r.state {
                        PhaseState::Done => "done",
                        PhaseState::Running => "running",
                        PhaseState::Failed => "FAILED",
                        PhaseState::Skipped => "skipped",
                    },
                    r.detail.as_deref().unwrap_or("")
                ),
                None => println!("  phase {:<10} pending", phase.as_str()),
            }
        }
        match status.agent.pid {
            Some(pid) if status.agent.running => println!("  agent      running (pid {pid})"),
            _ if status.agent.running => println!("  agent      running"),
            _ => println!("  agent      not running"),
        }
        for (name, s) in &status.services {
            println!(
                "  {:<10} {} {}{} (restarts: {})",
                name,
                if s.healthy { "healthy" } else { "DOWN   " },
                s.endpoint
                    .as_deref()
                    .map(|e| format!("{e}: "))
                    .unwrap_or_default(),
                s.detail,
                s.restarts
            );
        }
        println!(
            "  {:<10} {} {}",
            "kubernetes",
            match status.kubernetes.state {
                ClusterState::Initialized if status.kubernetes.running => "running",
                ClusterState::Initialized => "DOWN   ",
                _ => "not running",
            },
            status.kubernetes.detail
        );
        for (phase, check) in &status.checks {
            println!(
                "  {:<10} {} {}",
                phase,
                if check.healthy { "healthy" } else { "DOWN   " },
                check.detail
            );
        }
    }
    if !args.json {
        if let Some(c) = &status.cluster {
            println!(
                "  cluster    VIP {} held by {}",
                c.vip,
                c.vip_holder.as_deref().unwrap_or("nobody")
            );
            if c.vip_without_claim {
                println!(
                    "  cluster    WARNING: this node carries VIP {} without holding its claim: two nodes may answer for it",
                    c.vip
                );
            }
            for m in &c.members {
                println!(
                    "    {:<10} {:<16} {}{}",
                    m.name,
                    m.address,
                    match (m.member, m.learner, m.healthy) {
                        (false, _, _) => "not a member",
                        (true, true, _) => "learner",
                        (true, false, true) => "healthy",
                        (true, false, false) => "DOWN",
                    },
                    m.registry_missing
                        .map(|n| format!(", registry missing {n} blobs"))
                        .unwrap_or_default()
                );
            }
        }
        if let Some(e) = &status.cluster_error {
            println!("  cluster    UNAVAILABLE: {e}");
        }
        if let Some(t) = &status.release_tags {
            println!(
                "  {:<10} {} {}",
                "tags",
                if t.healthy { "as signed" } else { "DRIFT  " },
                t.detail
            );
            for line in &t.drift {
                println!("    {line}");
            }
        }
    }
    if status.installation.is_some() && !status.healthy() {
        // Scripts (and tests) can wait on `airgap status`.
        std::process::exit(3);
    }
    Ok(())
}

pub fn stop_cmd(args: RootArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.root).context("resolving --root")?;
    match installer::agent::stop(&NodeLayout::new(&root), &SystemHost)
        .context("stopping the agent")?
    {
        Some(pid) => println!(
            "stopped the agent (pid {pid}) and its services under {}",
            root.display()
        ),
        None => println!("no agent runs under {}", root.display()),
    }
    Ok(())
}

pub fn reset_cmd(args: ResetArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.root.root).context("resolving --root")?;
    let layout = NodeLayout::new(&root);
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("reset removes the installation under {}; pass --yes to confirm (standard input is not a terminal)", root.display());
        }
        eprint!(
            "This stops the node's services and deletes its certificates, keys, etcd data and registry under {}. Continue? [y/N] ",
            root.display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("reset cancelled; nothing was changed");
        }
    }
    let removed = installer::status::reset(&layout, &SystemHost).context("reset")?;
    installer::audit::AuditLog::new(&layout).record(
        "reset",
        &root.display().to_string(),
        installer::audit::Outcome::Done,
    );
    if removed.is_empty() {
        println!("nothing to remove under {}", root.display());
    } else {
        println!(
            "removed {} (logs kept in {})",
            removed.join(", "),
            layout.log_dir().display()
        );
    }
    Ok(())
}

/// An age rounded up to the second for reading: above `max_age` it never reads as equal to or
/// below it ("built 0s ago (more than --max-age 1s)").
fn shown_age(age: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(age.as_millis().div_ceil(1000) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_age_over_the_limit_never_reads_as_within_it() {
        use std::time::Duration;
        for (age, max) in [(1_001, 1_000), (400, 0), (7_200_500, 7_200_000)] {
            let shown = super::shown_age(Duration::from_millis(age));
            assert!(
                shown > Duration::from_millis(max),
                "{age}ms shown as {shown:?}"
            );
        }
    }
}
