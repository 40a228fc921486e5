//! `airgap registry seed|serve`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use airgap::{BundleArchive, PublicKey};
use anyhow::{bail, Context};
use indicatif::ProgressBar;
use registry::auth::{AuthFile, Credentials};
use registry::mirror::{
    containerd_hosts, registries_conf, HostAccess, MirrorTarget, RewriteMap, HOST_CA_FILE,
};
use registry::seed::{ReleaseSource, SeedObserver, SeedPlan, Seeder};
use registry::{ClientConfig, RegistryClient};
use registry_server::replication::Replication;
use registry_server::{
    tls_acceptor, ArchiveStore, EtcdMetadata, Htpasswd, LayoutStore, MetadataBackend, MetadataLog,
    Registry, RegistryOptions, Store, UploadLimits,
};

use super::progress::{bytes_bar, HumanBytes};

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Push a bundle's images and packs into a registry.
    #[command(long_about = include_str!("reference/registry-seed.txt"))]
    Seed(SeedArgs),
    /// Run the built-in registry over a bundle or an OCI layout directory.
    #[command(long_about = include_str!("reference/registry-serve.txt"))]
    Serve(Box<ServeArgs>),
    /// Remove blobs no manifest references from a store directory (or a running registry).
    #[command(long_about = include_str!("reference/registry-gc.txt"))]
    Gc(GcArgs),
    /// Copy releases (their signed index, images and packs) from one registry to another,
    /// e.g. from the public repository into the private one behind the firewall.
    #[command(long_about = include_str!("reference/registry-sync.txt"))]
    Sync(SyncArgs),
    /// Check a registry against the signed releases seeded into it (a scrub): tags that point
    /// elsewhere, blobs missing or corrupt (every one re-read and re-hashed), tags no signed
    /// release put there. Exits 1 on drift.
    #[command(long_about = include_str!("reference/registry-verify.txt"))]
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The registry and prefix the releases were seeded into.
    #[arg(long, value_name = "https://HOST[:PORT][/PREFIX]")]
    pub to: String,
    /// The public key the releases are signed with; a release that fails is reported.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// The release to check; without it, every release in the registry.
    #[arg(long, value_name = "V")]
    pub release: Option<String>,
    #[command(flatten)]
    pub login: LoginArgs,
    /// Blobs read at once.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print the reports as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The registry and prefix the releases were seeded into.
    #[arg(long, value_name = "https://HOST[:PORT][/PREFIX]")]
    pub from: String,
    /// The registry and prefix to copy them to.
    #[arg(long, value_name = "https://HOST[:PORT][/PREFIX]")]
    pub to: String,
    /// The public key every release must be signed with; one that fails is not copied.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// The release to copy (repeatable). Without it (and without --all): the newest one.
    #[arg(long = "version", value_name = "V", conflicts_with = "all")]
    pub versions: Vec<String>,
    /// Copy every release the source holds, oldest first.
    #[arg(long)]
    pub all: bool,
    /// CA certificate(s) to trust for --from, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub from_ca: Option<PathBuf>,
    /// CA certificate(s) to trust for --to, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub to_ca: Option<PathBuf>,
    /// Blobs copied at once.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print what was copied as JSON (docs/json/registry-sync.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// How to reach and log in to a registry.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// CA certificate(s) to trust for the registry, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// User to log in as; the password is read from standard input.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for --username from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Allow an http:// registry (content and credentials cross the network unencrypted).
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// A store directory no registry is serving (`airgap registry serve DIR`); for a running
    /// one, give --url instead.
    #[arg(required_unless_present = "url", conflicts_with = "url")]
    pub dir: Option<PathBuf>,
    /// A running built-in registry started with --enable-delete, e.g. https://HOST:5000.
    #[arg(long, value_name = "https://HOST[:PORT]")]
    pub url: Option<String>,
    #[command(flatten)]
    pub login: LoginArgs,
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced blobs younger than this (written by another process, say).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The bundle (or the first part of a split bundle).
    pub bundle: PathBuf,
    /// The public key the bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// The target registry and optional repository prefix.
    #[arg(long, value_name = "https://HOST[:PORT][/PREFIX]")]
    pub to: String,
    #[command(flatten)]
    pub login: LoginArgs,
    /// Blobs uploaded at once.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Where to write rewrite-map.json and containerd's certs.d/<host>/hosts.toml files
    /// (with --ca, a copy of the CA beside each).
    #[arg(long, value_name = "DIR", default_value = "mirror-config")]
    pub config_dir: PathBuf,
    /// Put the login in the hosts.toml files as an Authorization header (files then 0600).
    /// Without it containerd pulls anonymously and the files say nothing secret.
    #[arg(long)]
    pub with_credentials: bool,
    /// Print the summary as JSON (docs/json/registry-seed.schema.json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A bundle (verified in full before serving) or an OCI layout directory (created when
    /// missing; pushes write into it).
    pub source: PathBuf,
    /// The public key a served bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:5000.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// bcrypt htpasswd file: every request must authenticate. Without it pulls are anonymous
    /// and pushes are refused.
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// bcrypt htpasswd file of users who may only pull (GET/HEAD); their pushes and deletes
    /// are refused with 403 DENIED. A node runtime's login belongs here.
    #[arg(long, value_name = "FILE", requires = "htpasswd")]
    pub pull_htpasswd: Option<PathBuf>,
    /// Accept DELETE of manifests, tags and blobs, and garbage collection through
    /// POST /airgap/v1/gc (a store directory only).
    #[arg(long)]
    pub enable_delete: bool,
    /// Requests per second one client address may make (bursts of twice that).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: Option<u32>,
    /// Upload sessions one client address may hold open at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_uploads_per_client: usize,
    /// Drop an upload session not written to for this long.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub upload_idle_timeout: std::time::Duration,
    /// Keep the store's metadata in etcd (installed nodes) instead of a log in the directory.
    #[arg(long, value_name = "https://HOST:2379", requires_all = ["etcd_ca", "etcd_cert", "etcd_key"])]
    pub etcd: Option<String>,
    /// The etcd CA certificate.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    pub etcd_ca: Option<PathBuf>,
    /// The etcd client certificate.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    pub etcd_cert: Option<PathBuf>,
    /// The etcd client key.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user to log in as, when etcd has authentication on (the client certificate
    /// must then carry no common name).
    #[arg(long, value_name = "USER", requires_all = ["etcd", "etcd_password_file"])]
    pub etcd_user: Option<String>,
    /// A file holding that user's password (0600).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// How long a client has to finish the TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: std::time::Duration,
    /// How long a client has to send each request's headers; also how long a keep-alive
    /// connection may sit idle.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Open connections one client address may hold (more are answered 429 and closed).
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: u32,
    /// Open connections in all (more are answered 503 and closed).
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Another node's registry (HOST:PORT, repeatable): blobs the shared catalog (--etcd)
    /// links but this directory lacks are fetched from it, on demand and in the background.
    #[arg(long = "peer", value_name = "HOST:PORT", requires = "etcd")]
    pub peers: Vec<String>,
    /// CA certificate the peers' TLS certificates chain to.
    #[arg(long, value_name = "FILE", requires = "peers")]
    pub peer_ca: Option<PathBuf>,
    /// USER:PASSWORD for the peers (a 0600 file).
    #[arg(long, value_name = "FILE", requires = "peers")]
    pub peer_credentials: Option<PathBuf>,
    /// etcd key where each replication pass reports how many blobs are still missing.
    #[arg(long, value_name = "KEY", requires = "peers")]
    pub replica_report: Option<String>,
    /// Print the startup line as one line of JSON (docs/json/registry-serve.schema.json):
    /// where it listens, once it does.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cmd {
        RegistryCommand::Seed(args) => runtime.block_on(seed(args)),
        RegistryCommand::Serve(args) => runtime.block_on(serve(*args)),
        RegistryCommand::Gc(args) => runtime.block_on(gc(args)),
        RegistryCommand::Sync(args) => runtime.block_on(sync(args)),
        RegistryCommand::Verify(args) => runtime.block_on(verify(args)),
    }
}

struct BarObserver {
    bar: ProgressBar,
}

impl SeedObserver for BarObserver {
    fn bytes_sent(&self, n: u64) {
        self.bar.inc(n);
    }
    fn blob_skipped(&self, size: u64) {
        self.bar.inc(size);
    }
    fn bytes_resent(&self, n: u64) {
        self.bar.set_position(self.bar.position().saturating_sub(n));
    }
}

pub(crate) fn credentials(args: &LoginArgs, host: &str) -> anyhow::Result<Option<Credentials>> {
    if let Some(username) = &args.username {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the password from standard input")?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("--password-stdin: standard input held no password");
        }
        return Ok(Some(Credentials {
            username: username.clone(),
            password,
        }));
    }
    let file = AuthFile::discover()?;
    Ok(file.get(host).cloned())
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = MirrorTarget::parse(&args.to, args.login.plain_http)?;
    let key = PublicKey::load(&args.public_key).context("loading the public key")?;
    let archive = BundleArchive::open(&args.bundle, &key)
        .with_context(|| format!("verifying {}", args.bundle.display()))?;
    let archive = Arc::new(archive);
    let source = ReleaseSource::Archive(archive.clone());
    let plan = SeedPlan::new(&source, &target)
        .await
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let login = credentials(&args.login, &target.host)?;
    if args.with_credentials && login.is_none() {
        bail!("--with-credentials: no login for {} (give --username with --password-stdin, or log in with `skopeo login`)", target.host);
    }
    let client = Arc::new(client_for(&args.login, &target, login.clone())?);
    let report = run_seeder(&source, client.clone(), &plan, args.jobs, "seeding")
        .await
        .with_context(|| format!("seeding {target}"))?;
    let index = source.verified().index();
    // A delta leaves out the blobs its base delivered (configs, pack layers) that an SBOM
    // reads: its SBOM is the full bundle's (`airgap bundle sbom`).
    let sbom = if index.base.is_none() {
        let digest = attach_sbom(
            &archive,
            &client,
            &plan.releases_repository,
            &source.parts(),
        )
        .await
        .with_context(|| format!("attaching the release's SBOM in {target}"))?;
        Some(format!(
            "{}/{}@{digest}",
            target.host, plan.releases_repository
        ))
    } else {
        None
    };
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let login = login.filter(|_| args.with_credentials);
        let mirror = write_mirror_config(&args, index, &target, login.as_ref())?;
        return super::output::print_json(&serde_json::json!({
            "name": index.name,
            "version": index.version.to_string(),
            "registry": target.to_string(),
            "images": index.images.len(),
            "packs": index.packs.len(),
            "blobs": {
                "uploaded": report.blobs_uploaded,
                "bytesUploaded": report.bytes_uploaded,
                "mounted": report.blobs_mounted,
                "present": report.blobs_present,
            },
            "manifests": {"pushed": report.manifests_pushed, "present": report.manifests_present},
            "sparseRefused": report.sparse_refused,
            "releaseIndex": {
                "published": report.release_published,
                "reference": format!("{}/{}:{}", target.host, plan.releases_repository, index.version),
            },
            "sbom": sbom,
            "mirrorConfig": mirror,
            "seconds": seconds,
        }));
    }
    println!(
        "seeded {} {} into {target}: {} images, {} packs; blobs: {} uploaded ({}), {} mounted, {} already there; manifests: {} pushed, {} already there; {:.1}s",
        index.name,
        index.version,
        index.images.len(),
        index.packs.len(),
        report.blobs_uploaded,
        HumanBytes(report.bytes_uploaded),
        report.blobs_mounted,
        report.blobs_present,
        report.manifests_pushed,
        report.manifests_present,
        seconds,
    );
    if !report.sparse_refused.is_empty() {
        println!(
            "{target} refused the upstream index of {} platform-filtered images (a sparse index: the filtered-out platforms' manifests are absent); they pull by tag and by their bundle digest, not by the upstream digest: {}",
            report.sparse_refused.len(),
            report.sparse_refused.join(", ")
        );
    }
    println!(
        "release index {} at {}/{}:{} (what `airgap upgrade --check --from-registry` lists)",
        if report.release_published {
            "published"
        } else {
            "already published"
        },
        target.host,
        plan.releases_repository,
        index.version
    );
    match &sbom {
        Some(reference) => println!(
            "SBOM (CycloneDX 1.5) attached to the release as {reference} (GET /v2/{}/referrers/<release digest> finds it)",
            plan.releases_repository
        ),
        None => println!(
            "no SBOM attached: a delta bundle lacks its base's blobs; `airgap bundle sbom` of the full bundle writes it"
        ),
    }
    let login = login.filter(|_| args.with_credentials);
    let mirror = write_mirror_config(&args, index, &target, login.as_ref())?;
    println!(
        "wrote {}, {} (CRI-O, podman) and {} containerd host directories under {} (every one names only {target}; `_default` catches registries the bundle has no image from){}",
        mirror["rewriteMap"].as_str().unwrap_or_default(),
        mirror["registriesConf"].as_str().unwrap_or_default(),
        mirror["containerdHosts"],
        mirror["certsDir"].as_str().unwrap_or_default(),
        if login.is_some() {
            " with the login as an Authorization header (files 0600)"
        } else {
            "; credentials are not included (--with-credentials adds them): containerd pulls anonymously"
        }
    );
    Ok(())
}

/// Runs `plan` from `source` into `client`'s registry behind a progress bar.
async fn run_seeder(
    source: &ReleaseSource,
    client: Arc<RegistryClient>,
    plan: &SeedPlan,
    jobs: u16,
    label: &str,
) -> Result<registry::SeedReport, registry::seed::SeedError> {
    let bar = bytes_bar(plan.blob_bytes(), label);
    let seeder = Seeder {
        source: source.clone(),
        client,
        jobs: jobs as usize,
        observer: Arc::new(BarObserver { bar: bar.clone() }),
    };
    let report = seeder.run(plan).await;
    bar.finish_and_clear();
    report
}

/// The release's SBOM (CycloneDX 1.5, from the verified bundle), attached to its release
/// artifact as an OCI 1.1 referrer, so the registry holds what the release brought in beside
/// the release itself. Returns the referrer's digest.
async fn attach_sbom(
    archive: &BundleArchive,
    client: &RegistryClient,
    releases: &str,
    parts: &registry::release_artifact::ReleaseParts,
) -> anyhow::Result<airgap::Digest> {
    use registry::release_artifact::{attach, Attachment};
    let index = archive.verified().index();
    let inventory = installer::sbom::Inventory::read(archive)?;
    let document = serde_json::to_vec_pretty(&inventory.cyclonedx())?;
    let attachment = Attachment {
        artifact_type: SBOM_MEDIA_TYPE,
        media_type: SBOM_MEDIA_TYPE,
        content: &document,
    };
    let version = index.version.to_string();
    Ok(attach(client, releases, parts, &index.name, &version, &attachment).await?)
}

/// CycloneDX JSON, as its media type says it.
const SBOM_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    use registry::release_artifact::{self, PublishedRelease};
    use registry::scrub::scrub;
    let key = PublicKey::load(&args.public_key).context("loading the public key")?;
    let target = MirrorTarget::parse(&args.to, args.login.plain_http)?;
    let login = credentials(&args.login, &target.host)?;
    let client = Arc::new(client_for(&args.login, &target, login)?);
    client
        .ping()
        .await
        .with_context(|| format!("reaching {target}"))?;
    let repo = target.repository(release_artifact::REPOSITORY);
    let tags = release_artifact::list(&client, &repo)
        .await
        .with_context(|| format!("listing the releases in {target}"))?;
    if let Some(wanted) = &args.release {
        if !tags.contains(wanted) {
            bail!("{target} holds no release {wanted} (it holds: {}); `airgap registry seed` publishes releases", if tags.is_empty() { "none".to_string() } else { tags.join(", ") });
        }
    }
    if tags.is_empty() {
        bail!("{target} holds no airgap releases (`airgap registry seed` publishes them)");
    }
    // Every signed release counts for extra tags; one that fails verification is a finding.
    let mut releases = Vec::new();
    let mut refused = Vec::new();
    for tag in &tags {
        match PublishedRelease::open(client.clone(), target.clone(), tag, &key).await {
            Ok(release) => releases.push(Arc::new(release)),
            Err(e) => refused.push(format!(
                "release {tag} does not verify: {}",
                installer::error::chain(&e)
            )),
        }
    }
    let signed: Vec<airgap::BundleIndex> = releases
        .iter()
        .map(|r| r.verified().index().clone())
        .collect();
    let signed_refs: Vec<&airgap::BundleIndex> = signed.iter().collect();
    let mut reports = Vec::new();
    for release in releases.iter().filter(|r| {
        args.release
            .as_ref()
            .is_none_or(|v| r.verified().index().version.to_string() == *v)
    }) {
        let report = scrub(release.clone(), &signed_refs, args.jobs as usize)
            .await
            .with_context(|| {
                format!(
                    "checking release {} in {target}",
                    release.verified().index().version
                )
            })?;
        reports.push(report);
    }
    let findings: usize = reports.iter().map(|r| r.findings().len()).sum::<usize>() + refused.len();
    if args.json {
        let out = serde_json::json!({
            "registry": target.to_string(),
            "clean": findings == 0,
            "releases": reports,
            "unverifiedReleases": refused,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for report in &reports {
            println!(
                "{}: {} tags, {} blobs ({}) checked; {}",
                report.release,
                report.tags_checked,
                report.blobs_checked,
                HumanBytes(report.bytes_checked),
                if report.clean() {
                    "no drift".to_string()
                } else {
                    format!("{} findings", report.findings().len())
                }
            );
            for finding in report.findings() {
                println!("  {finding}");
            }
        }
        for line in &refused {
            println!("  {line}");
        }
    }
    if findings > 0 {
        bail!(
            "{target} drifted from its signed releases ({findings} findings); `airgap install` or `airgap upgrade` re-seeds a node's registry, `airgap registry seed` any other"
        );
    }
    Ok(())
}

/// A client for one side of `sync`.
fn sync_client(url: &str, ca: Option<&Path>) -> anyhow::Result<(MirrorTarget, RegistryClient)> {
    let target = MirrorTarget::parse(url, false)?;
    let client = RegistryClient::for_target(&target, ca)?;
    Ok((target, client))
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    use registry::release_artifact::{self, PublishedRelease};
    let started = Instant::now();
    let key = PublicKey::load(&args.public_key).context("loading the public key")?;
    let (from, from_client) = sync_client(&args.from, args.from_ca.as_deref())?;
    let (to, to_client) = sync_client(&args.to, args.to_ca.as_deref())?;
    if from == to {
        bail!("--from and --to are the same repository ({from}); nothing to copy");
    }
    let from_client = Arc::new(from_client);
    let to_client = Arc::new(to_client);
    to_client
        .ping()
        .await
        .with_context(|| format!("reaching {to}"))?;
    let tags = if args.versions.is_empty() {
        let repo = from.repository(release_artifact::REPOSITORY);
        release_artifact::list(&from_client, &repo)
            .await
            .with_context(|| format!("listing the releases in {from}"))?
    } else {
        args.versions.clone()
    };
    // Every candidate is verified before anything is copied; one that fails is refused.
    let mut releases = Vec::new();
    let mut refused = Vec::new();
    for tag in &tags {
        match PublishedRelease::open(from_client.clone(), from.clone(), tag, &key).await {
            Ok(release) => releases.push(release),
            Err(e) if args.versions.is_empty() => {
                refused.push(format!("{tag} ({})", installer::error::chain(&e)));
            }
            Err(e) => return Err(e).with_context(|| format!("reading release {tag} in {from}")),
        }
    }
    releases.sort_by(|a, b| {
        a.verified()
            .index()
            .version
            .cmp(&b.verified().index().version)
    });
    if !args.all && args.versions.is_empty() {
        // The newest signed one.
        releases = releases.pop().into_iter().collect();
    }
    if releases.is_empty() && refused.is_empty() {
        bail!("{from} holds no airgap releases (`airgap registry seed` publishes them)");
    }
    let mut synced = Vec::new();
    for release in releases {
        let release = Arc::new(release);
        let index = release.verified().index();
        let (name, version) = (index.name.clone(), index.version.clone());
        let source = ReleaseSource::Registry(release.clone());
        let plan = SeedPlan::new(&source, &to)
            .await
            .with_context(|| format!("reading {name} {version} in {from}"))?;
        let label = format!("{name} {version}");
        let report = run_seeder(&source, to_client.clone(), &plan, args.jobs, &label)
            .await
            .with_context(|| format!("copying {name} {version} from {from} to {to}"))?;
        synced.push(serde_json::json!({
            "name": name,
            "version": version.to_string(),
            "blobs": {
                "copied": report.blobs_uploaded,
                "bytesCopied": report.bytes_uploaded,
                "mounted": report.blobs_mounted,
                "present": report.blobs_present,
            },
            "manifests": {"pushed": report.manifests_pushed, "present": report.manifests_present},
            "releaseIndexPublished": report.release_published,
        }));
        if args.json {
            continue;
        }
        println!(
            "synced {name} {version} to {to}: blobs: {} copied ({}), {} mounted, {} already there; manifests: {} pushed, {} already there; release index {}",
            report.blobs_uploaded,
            HumanBytes(report.bytes_uploaded),
            report.blobs_mounted,
            report.blobs_present,
            report.manifests_pushed,
            report.manifests_present,
            if report.release_published { "published" } else { "already there" },
        );
    }
    if args.json {
        super::output::print_json(&serde_json::json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "releases": synced,
            "refused": refused,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    } else {
        println!("done in {:.1}s", started.elapsed().as_secs_f64());
    }
    if !refused.is_empty() {
        bail!(
            "{} release(s) in {from} failed verification and were not copied: {}",
            refused.len(),
            refused.join("; ")
        );
    }
    Ok(())
}

/// The files a node's containerd needs to pull through the mirror: self-contained host
/// directories (the CA copied in, referenced relatively) that can be copied to any node.
fn write_mirror_config(
    args: &SeedArgs,
    index: &airgap::BundleIndex,
    target: &MirrorTarget,
    login: Option<&Credentials>,
) -> anyhow::Result<serde_json::Value> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = &args.config_dir;
    let write = |path: &Path, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut file, bytes)
            .with_context(|| format!("writing {}", path.display()))
    };
    write(
        &dir.join("rewrite-map.json"),
        &RewriteMap::new(index, target).to_json(),
        0o644,
    )?;
    let ca = match &args.login.ca {
        Some(ca) => Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?),
        None => None,
    };
    let hosts = containerd_hosts(
        index,
        target,
        HostAccess {
            ca: ca.is_some(),
            credentials: login,
        },
    );
    for (host, text) in &hosts {
        let host_dir = dir.join("certs.d").join(host);
        let mode = if login.is_some() { 0o600 } else { 0o644 };
        write(&host_dir.join("hosts.toml"), text.as_bytes(), mode)?;
        if let Some(ca) = &ca {
            write(&host_dir.join(HOST_CA_FILE), ca, 0o644)?;
        }
    }
    write(
        &dir.join("registries.conf"),
        registries_conf(index, target).as_bytes(),
        0o644,
    )?;
    Ok(serde_json::json!({
        "rewriteMap": dir.join("rewrite-map.json"),
        "registriesConf": dir.join("registries.conf"),
        "certsDir": dir.join("certs.d"),
        "containerdHosts": hosts.len(),
        "withCredentials": login.is_some(),
    }))
}

pub(crate) fn client_for(
    login: &LoginArgs,
    target: &MirrorTarget,
    credentials: Option<Credentials>,
) -> anyhow::Result<RegistryClient> {
    let mut config = ClientConfig {
        plain_http: target.plain_http,
        credentials,
        ..ClientConfig::default()
    };
    if let Some(ca) = &login.ca {
        config = config.with_ca_file(ca)?;
    }
    Ok(RegistryClient::new(&target.host, config)?)
}

/// The metadata backend `serve` was asked for: etcd, or the log in the directory.
fn metadata_backend(args: &ServeArgs) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    match etcd_client(args)? {
        Some(client) => Ok(Arc::new(EtcdMetadata::new(client))),
        None => Ok(Arc::new(MetadataLog::open(&args.source)?)),
    }
}

fn etcd_client(args: &ServeArgs) -> anyhow::Result<Option<etcd::EtcdClient>> {
    let (Some(endpoint), Some(ca), Some(cert), Some(key)) =
        (&args.etcd, &args.etcd_ca, &args.etcd_cert, &args.etcd_key)
    else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let key = zeroize::Zeroizing::new(read(key)?);
    let client = etcd::EtcdClient::new(endpoint, &read(ca)?, &read(cert)?, &key)?;
    Ok(Some(match (&args.etcd_user, &args.etcd_password_file) {
        (Some(user), Some(file)) => {
            let password = zeroize::Zeroizing::new(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?,
            );
            client.with_credentials(etcd::Credentials::new(user, password.trim()))
        }
        _ => client,
    }))
}

/// Replication from `--peer`s, when any are given.
fn replication(args: &ServeArgs) -> anyhow::Result<Option<Replication>> {
    if args.peers.is_empty() {
        return Ok(None);
    }
    let mut config = ClientConfig::default();
    if let Some(ca) = &args.peer_ca {
        config = config.with_ca_file(ca)?;
    }
    if let Some(path) = &args.peer_credentials {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let (username, password) = text
            .trim_end()
            .split_once(':')
            .with_context(|| format!("{} is not USER:PASSWORD", path.display()))?;
        config.credentials = Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    let report = match (&args.replica_report, etcd_client(args)?) {
        (Some(key), Some(client)) => Some((client, key.clone())),
        _ => None,
    };
    Ok(Some(Replication::new(&args.peers, config, report)?))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = if args.source.is_dir()
        || !args.source.exists() && args.source.extension().is_none()
    {
        std::fs::create_dir_all(&args.source)
            .with_context(|| format!("creating {}", args.source.display()))?;
        let limits = UploadLimits {
            per_client: args.max_uploads_per_client,
            idle: args.upload_idle_timeout,
        };
        let backend = metadata_backend(&args)?;
        tracing::info!(metadata = %backend.describe(), "opening the store");
        Store::Layout(
            LayoutStore::open_with(&args.source, backend, limits)
                .await
                .with_context(|| format!("opening {}", args.source.display()))?,
        )
    } else {
        let Some(pub_path) = &args.public_key else {
            bail!("serving a bundle needs --pub FILE: its signature is verified before anything is served");
        };
        let key = PublicKey::load(pub_path).context("loading the public key")?;
        tracing::info!(bundle = %args.source.display(), "verifying before serving");
        Store::Archive(
            ArchiveStore::open(&args.source, &key)
                .with_context(|| format!("verifying {}", args.source.display()))?,
        )
    };
    let htpasswd = match &args.htpasswd {
        Some(p) => Some(Htpasswd::load(p)?),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = registry_server::bind(args.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let repositories = store.catalog().await.repositories.len();
    if tls.is_none() {
        eprintln!("warning: no --tls-cert/--tls-key: serving plain HTTP");
    }
    if args.enable_delete && !store.is_writable() {
        bail!("--enable-delete: a served bundle is read-only; serve a store directory to delete from it");
    }
    if args.json {
        // One line: a supervisor reads it as soon as it is written, the server runs on.
        println!(
            "{}",
            serde_json::json!({
                "source": args.source,
                "url": format!("{scheme}://{addr}"),
                "repositories": repositories,
                "tls": tls.is_some(),
                "authentication": args.htpasswd.is_some(),
                "writable": store.is_writable(),
                "deletes": args.enable_delete,
            })
        );
    } else {
        println!(
            "serving {} ({repositories} repositories) at {scheme}://{addr}{}",
            args.source.display(),
            match (&args.htpasswd, store.is_writable()) {
                (None, _) => ", anonymous pulls, no pushes",
                (Some(_), true) => ", authenticated pulls and pushes",
                (Some(_), false) => ", authenticated pulls, read-only",
            }
        );
    }
    let options = RegistryOptions {
        deletes: args.enable_delete,
        rate_limit: args.rate_limit,
        connections: registry_server::connection::ConnectionPolicy {
            handshake: args.handshake_timeout,
            header: args.header_timeout,
            per_client: args.max_connections_per_client as usize,
            total: args.max_connections as usize,
        },
    };
    let mut registry = Registry::with_options(store, htpasswd, options);
    if let Some(path) = &args.pull_htpasswd {
        registry = registry.with_pull_users(Htpasswd::load(path)?);
    }
    if let Some(replication) = replication(&args)? {
        if !registry.store().is_writable() {
            bail!("--peer: a served bundle is read-only; replication needs a store directory");
        }
        registry = registry.with_replication(replication);
    }
    let registry = Arc::new(registry);
    tokio::spawn(registry.clone().replicate());
    let server = tokio::spawn(registry.clone().serve(listener, tls));
    shutdown_signal().await;
    server.abort();
    if let Store::Layout(layout) = registry.store() {
        layout.flush_index().await.context("writing index.json")?;
    }
    Ok(())
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let report = match (&args.dir, &args.url) {
        (Some(dir), _) => {
            if !dir.join("oci-layout").is_file() {
                bail!(
                    "{} is not a registry store directory (no oci-layout file)",
                    dir.display()
                );
            }
            let store = LayoutStore::open(dir, UploadLimits::default())
                .await
                .with_context(|| format!("opening {}", dir.display()))?;
            let report = store.gc(args.dry_run, args.grace).await?;
            if !args.dry_run {
                store.flush_index().await?;
            }
            serde_json::to_value(&report)?
        }
        (None, Some(url)) => {
            let target = MirrorTarget::parse(url, args.login.plain_http)?;
            let login = credentials(&args.login, &target.host)?;
            let client = client_for(&args.login, &target, login)?;
            client
                .collect_garbage(args.dry_run, args.grace)
                .await
                .with_context(|| format!("collecting garbage at {url}"))?
        }
        (None, None) => bail!("give a store directory or --url"),
    };
    let removed = report["removed"].as_array().map(Vec::len).unwrap_or(0);
    let bytes = report["removedBytes"].as_u64().unwrap_or(0);
    let kept = report["kept"].as_u64().unwrap_or(0);
    println!(
        "{} {removed} blobs ({}), kept {kept}{}",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        HumanBytes(bytes),
        if args.dry_run {
            " (dry run: nothing removed)"
        } else {
            ""
        }
    );
    if args.dry_run {
        for entry in report["removed"].as_array().into_iter().flatten() {
            println!("  {}", entry[0].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}
