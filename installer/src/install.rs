//! `airgap install`: the phases in order, each journaled and idempotent.
//!
//! Everything that can be refused is refused before the first byte is written: the
//! configuration, an imported certificate, the external registry's files, the bundle's
//! signature and every digest in it, and a root that belongs to another installation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airgap::{BundleArchive, BundleStream, PublicKey};
use registry::auth::Credentials;
use registry::mirror::{MirrorTarget, RewriteMap};
use registry::seed::{SeedObserver, SeedPlan, SeedReport, Seeder};
use registry::{ClientConfig, RegistryClient};

use crate::agent::{self, Launch};
use crate::audit::{now_rfc3339, AuditLog, Outcome};
use crate::config::InstallConfig;
use crate::etcd::binary::{self, EtcdBinary};
use crate::etcd::client::EtcdClient;
use crate::etcd::EtcdMember;
use crate::files::{write_atomic, write_if_changed, PRIVATE, PUBLIC};
use crate::journal::{Journal, Phase, PhaseRecord, PhaseState, VerifiedBundle};
use crate::keys::{self, Stored, INSTALLATION_KEYS, REGISTRY_CREDENTIALS};
use crate::kubernetes::kubeadm::{self, ClusterInit};
use crate::kubernetes::RenderedFile;
use crate::layout::NodeLayout;
use crate::pki::{self, CertificateAuthority, Ensured, LeafSpec, PairPaths, Usage};
use crate::secretbox::SecretboxKey;
use crate::service::ServiceSpec;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {cause}")]
    Input { path: String, cause: String },
    #[error("imported certificate {path}: {cause}")]
    Import {
        path: String,
        cause: pki::imported::ImportError,
    },
    #[error("{bundle} failed verification: {cause}")]
    Verify { bundle: String, cause: String },
    #[error(
        "{root} holds installation `{found}`; remove it first with `airgap reset --root {root}`"
    )]
    OtherInstallation { root: String, found: String },
    #[error("phase {phase}: {cause}")]
    Phase { phase: Phase, cause: String },
}

/// What `airgap install` was asked.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub config: PathBuf,
    pub bundle: PathBuf,
    pub public_key: PathBuf,
    pub root: PathBuf,
    /// The `airgap` binary the agent and the built-in registry run as.
    pub exe: PathBuf,
    /// Blobs uploaded at once while seeding.
    pub jobs: usize,
}

/// Progress callbacks for the CLI.
pub trait InstallObserver: Send + Sync {
    fn phase_started(&self, _phase: Phase) {}
    fn phase_finished(&self, _phase: Phase, _summary: &str, _elapsed: Duration) {}
    fn bytes_total(&self, _what: &'static str, _total: u64) {}
    fn bytes_done(&self, _n: u64) {}
    fn bytes_finished(&self) {}
}

pub struct Silent;
impl InstallObserver for Silent {}

#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    pub root: PathBuf,
    pub fqdn: String,
    pub etcd_endpoint: String,
    pub registry_endpoint: String,
    pub registry_username: String,
    pub launch: Option<Launch>,
    pub seed: Option<SeedStats>,
    /// Time from the start of the run until etcd and the registry were serving, seeding
    /// excluded.
    pub healthy_after: Duration,
    /// Whether kubeadm ran; `None` only for a report not produced by a full install.
    pub cluster: Option<ClusterInit>,
}

#[derive(Debug, Clone, Default)]
pub struct SeedStats {
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub elapsed: Duration,
}

/// A test hook: `AIRGAP_FAILPOINT=<phase>` parks the installer in the middle of that phase
/// (after it has written part of its work) and says so on stderr, so a test can SIGKILL it at
/// a known point and prove the re-run repairs and completes. Unset, it costs one env lookup.
fn failpoint(phase: Phase) {
    if std::env::var("AIRGAP_FAILPOINT").is_ok_and(|v| v == phase.as_str()) {
        eprintln!("failpoint: paused in phase {phase}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

struct Run<'a> {
    request: &'a InstallRequest,
    config: InstallConfig,
    layout: NodeLayout,
    audit: AuditLog,
    journal: Journal,
    observer: Arc<dyn InstallObserver>,
    started: Instant,
}

pub async fn install(
    request: &InstallRequest,
    observer: Arc<dyn InstallObserver>,
) -> Result<InstallReport, InstallError> {
    let started = Instant::now();
    let config = InstallConfig::load(&request.config)?;
    let layout = NodeLayout::new(&request.root);
    let journal = Journal::load(&layout.journal()).map_err(|e| InstallError::Input {
        path: layout.journal().display().to_string(),
        cause: e.cause,
    })?;
    if let Some(found) = &journal.installation {
        if found != config.metadata.name.as_str() {
            return Err(InstallError::OtherInstallation {
                root: request.root.display().to_string(),
                found: found.clone(),
            });
        }
    }
    preflight(&config)?;
    let mut run = Run {
        request,
        config,
        audit: AuditLog::new(&layout),
        layout,
        journal,
        observer,
        started,
    };
    let archive = Arc::new(run.verify()?);
    let t = run.begin(Phase::Pki)?;
    let r = run.pki();
    run.end(Phase::Pki, t, r)?;
    let t = run.begin(Phase::Etcd)?;
    let r = run.etcd(&archive).await;
    let etcd = run.end(Phase::Etcd, t, r)?;
    let t = run.begin(Phase::Keys)?;
    let r = run.keys(&etcd).await;
    let registry = run.end(Phase::Keys, t, r)?;
    let t = run.begin(Phase::Registry)?;
    let r = run.registry(&registry, archive.clone()).await;
    let (seed, healthy_after, mirror) = run.end(Phase::Registry, t, r)?;
    let t = run.begin(Phase::Agent)?;
    let r = run.agent().await;
    let launch = run.end(Phase::Agent, t, r)?;
    let t = run.begin(Phase::Kubernetes)?;
    let r = run.kubernetes(&registry, &mirror, &archive).await;
    let cluster = run.end(Phase::Kubernetes, t, r)?;
    let t = run.begin(Phase::Platform)?;
    let r = run.platform(&mirror, &archive, &cluster).await;
    run.end(Phase::Platform, t, r)?;
    Ok(InstallReport {
        root: request.root.clone(),
        fqdn: run.config.spec.fqdn.to_string(),
        etcd_endpoint: run.member().client_url(),
        registry_endpoint: registry.endpoint,
        registry_username: registry.username,
        launch: Some(launch),
        seed,
        healthy_after,
        cluster: Some(cluster),
    })
}

/// Checks on inputs other than the bundle, before anything is written.
fn preflight(config: &InstallConfig) -> Result<(), InstallError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| InstallError::Input {
            path: path.display().to_string(),
            cause: e.to_string(),
        })
    };
    if let Some(certs) = &config.spec.certificates {
        let import = &certs.import;
        let (cert, key, ca) = (read(&import.cert)?, read(&import.key)?, read(&import.ca)?);
        pki::imported::check_server_certificate(&cert, &key, &ca, config.spec.fqdn.as_str())
            .map_err(|cause| InstallError::Import {
                path: import.cert.display().to_string(),
                cause,
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

/// The credentials the registry phase seeds with, as stored in etcd.
#[derive(Debug, Clone)]
struct RegistryAccess {
    endpoint: String,
    username: String,
    password: String,
    ca_pem: Vec<u8>,
}

/// Where the registry phase seeded the bundle, and what each image is called there: what the
/// kubernetes and platform phases point nodes and manifests at.
struct Mirror {
    target: MirrorTarget,
    rewrite: RewriteMap,
}

impl RegistryAccess {
    /// The login, when the registry wants one.
    fn credentials(&self) -> Option<Credentials> {
        (!self.username.is_empty()).then(|| Credentials {
            username: self.username.clone(),
            password: self.password.clone(),
        })
    }
}

impl Run<'_> {
    fn member(&self) -> EtcdMember {
        let node = self.config.this_node();
        EtcdMember {
            name: node.name.to_string(),
            address: node.address,
            initial_cluster: self
                .config
                .spec
                .nodes
                .iter()
                .map(|n| (n.name.to_string(), n.address))
                .collect(),
            cluster_token: format!("airgap-{}", self.config.metadata.name),
        }
    }

    fn mark(
        &mut self,
        phase: Phase,
        state: PhaseState,
        detail: Option<String>,
    ) -> Result<(), InstallError> {
        self.journal.phases.insert(
            phase,
            PhaseRecord {
                state,
                at: now_rfc3339(),
                detail,
            },
        );
        self.journal
            .save(&self.layout.journal())
            .map_err(|e| InstallError::Phase {
                phase,
                cause: e.to_string(),
            })
    }

    fn begin(&mut self, phase: Phase) -> Result<Instant, InstallError> {
        self.observer.phase_started(phase);
        self.mark(phase, PhaseState::Running, None)?;
        Ok(Instant::now())
    }

    /// Closes a phase: its summary (or error) goes to the journal, the audit log and the
    /// observer.
    fn end<T>(
        &mut self,
        phase: Phase,
        started: Instant,
        result: Result<(T, String), String>,
    ) -> Result<T, InstallError> {
        match result {
            Ok((value, summary)) => {
                self.mark(phase, PhaseState::Done, Some(summary.clone()))?;
                self.audit.record_with(
                    &format!("phase.{phase}"),
                    "install",
                    Outcome::Done,
                    Some(&summary),
                );
                self.observer
                    .phase_finished(phase, &summary, started.elapsed());
                Ok(value)
            }
            Err(cause) => {
                let _ = self.mark(phase, PhaseState::Failed, Some(cause.clone()));
                self.audit.record_with(
                    &format!("phase.{phase}"),
                    "install",
                    Outcome::Failed,
                    Some(&cause),
                );
                Err(InstallError::Phase { phase, cause })
            }
        }
    }

    /// Phase verify: the signature, then every entry's digest (skipped when the journal shows
    /// this very file, unchanged, already passed; the seeder re-checks every blob it reads).
    fn verify(&mut self) -> Result<BundleArchive, InstallError> {
        let phase = Phase::Verify;
        let started = Instant::now();
        self.observer.phase_started(phase);
        let bundle = &self.request.bundle;
        let fail = |cause: String| InstallError::Verify {
            bundle: bundle.display().to_string(),
            cause,
        };
        let key = PublicKey::load(&self.request.public_key).map_err(|e| InstallError::Input {
            path: self.request.public_key.display().to_string(),
            cause: e.to_string(),
        })?;
        let archive = BundleArchive::open(bundle, &key).map_err(|e| fail(e.to_string()))?;
        let index = archive.verified().index();
        let index_sha256 = archive.verified().index_digest().to_string();
        let meta = std::fs::metadata(bundle).map_err(|e| fail(e.to_string()))?;
        let fingerprint = VerifiedBundle {
            name: index.name.clone(),
            version: index.version.clone(),
            index_sha256,
            path: std::path::absolute(bundle).unwrap_or_else(|_| bundle.clone()),
            size: meta.len(),
            modified_unix_nanos: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos()),
        };
        let already = self.journal.bundle.as_ref() == Some(&fingerprint)
            && self.journal.state(phase) == Some(PhaseState::Done);
        let summary = if already {
            format!(
                "{} {}: signature OK; digests checked by an earlier run",
                index.name, index.version
            )
        } else {
            let reader =
                airgap::parts::PartsReader::open(bundle).map_err(|e| fail(e.to_string()))?;
            let total = reader.total_size().map_err(|e| fail(e.to_string()))?;
            self.observer.bytes_total("verifying", total);
            let mut stream =
                BundleStream::open(std::io::BufReader::with_capacity(256 << 10, reader), &key)
                    .map_err(|e| fail(e.to_string()))?;
            let mut buf = vec![0u8; airgap::digest::COPY_BUFFER];
            let mut seen = 0u64;
            let mut halfway = false;
            while stream
                .next_entry()
                .map_err(|e| fail(e.to_string()))?
                .is_some()
            {
                while stream
                    .read_entry(&mut buf)
                    .map_err(|e| fail(e.to_string()))?
                    > 0
                {
                    let position = stream.position();
                    self.observer.bytes_done(position - seen);
                    seen = position;
                }
                if !halfway && seen * 2 >= total {
                    halfway = true;
                    failpoint(phase);
                }
            }
            stream.finish().map_err(|e| fail(e.to_string()))?;
            self.observer.bytes_finished();
            format!(
                "{} {}: signature and {} entries OK",
                index.name,
                index.version,
                index.entries.len()
            )
        };
        // Only now, with the bundle trusted, does anything get written.
        self.journal.installation = Some(self.config.metadata.name.to_string());
        self.journal.node = Some(self.config.this_node().name.to_string());
        self.journal.bundle = Some(fingerprint);
        let install_yaml =
            std::fs::read(&self.request.config).map_err(|e| InstallError::Input {
                path: self.request.config.display().to_string(),
                cause: e.to_string(),
            })?;
        write_if_changed(&self.layout.install_yaml(), &install_yaml, PRIVATE).map_err(|e| {
            fail(format!(
                "writing {}: {e}",
                self.layout.install_yaml().display()
            ))
        })?;
        self.mark(phase, PhaseState::Done, Some(summary.clone()))?;
        self.audit.record_with(
            "phase.verify",
            &bundle.display().to_string(),
            Outcome::Done,
            Some(&summary),
        );
        self.observer
            .phase_finished(phase, &summary, started.elapsed());
        Ok(archive)
    }

    /// Phase pki: CAs, etcd and agent certificates, the FQDN certificate.
    fn pki(&mut self) -> Result<((), String), String> {
        let layout = &self.layout;
        let node = self.config.this_node();
        let name = self.config.metadata.name.as_str();
        let mut created = Vec::new();
        let mut note = |what: &str, e: Ensured| {
            let outcome = match e {
                Ensured::Created => {
                    created.push(what.to_string());
                    Outcome::Done
                }
                Ensured::Kept => Outcome::Unchanged,
            };
            self.audit.record("pki.issue", what, outcome);
        };
        let s = |e: pki::PkiError| e.to_string();
        let (ca, e) = CertificateAuthority::ensure(
            &PairPaths::new(&layout.pki_dir(), "ca"),
            &format!("{name}-ca"),
        )
        .map_err(s)?;
        note("ca", e);
        let (etcd_ca, e) = CertificateAuthority::ensure(
            &PairPaths::new(&layout.etcd_pki_dir(), "ca"),
            &format!("{name}-etcd-ca"),
        )
        .map_err(s)?;
        note("etcd/ca", e);
        failpoint(Phase::Pki);
        let member = LeafSpec {
            common_name: node.name.to_string(),
            organization: None,
            dns_names: vec![node.name.to_string(), "localhost".into()],
            ip_addresses: vec![
                node.address,
                "127.0.0.1".parse().map_err(|_| "loopback".to_string())?,
            ],
            usage: Usage::ServerAndClient,
        };
        for stem in ["server", "peer"] {
            let e = etcd_ca
                .ensure_leaf(&PairPaths::new(&layout.etcd_pki_dir(), stem), &member)
                .map_err(s)?;
            note(&format!("etcd/{stem}"), e);
        }
        let client = LeafSpec {
            common_name: "kube-apiserver-etcd-client".into(),
            organization: None,
            dns_names: vec![],
            ip_addresses: vec![],
            usage: Usage::Client,
        };
        let e = etcd_ca
            .ensure_leaf(
                &PairPaths::new(&layout.pki_dir(), "apiserver-etcd-client"),
                &client,
            )
            .map_err(s)?;
        note("apiserver-etcd-client", e);
        let agent = LeafSpec {
            common_name: format!("airgap-agent:{}", node.name),
            organization: Some("airgap:agents".into()),
            dns_names: vec![node.name.to_string()],
            ip_addresses: vec![node.address],
            usage: Usage::ServerAndClient,
        };
        let e = ca
            .ensure_leaf(&PairPaths::new(&layout.etc().join("pki"), "agent"), &agent)
            .map_err(s)?;
        note("agent", e);

        let fqdn_paths = PairPaths {
            cert: layout.fqdn_cert(),
            key: layout.fqdn_key(),
        };
        let fqdn_summary = match &self.config.spec.certificates {
            Some(certs) => {
                // Checked in preflight; copied as given.
                let import = &certs.import;
                let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
                let mut changed = false;
                changed |= write_if_changed(&fqdn_paths.key, &read(&import.key)?, PRIVATE)
                    .map_err(|e| e.to_string())?;
                changed |= write_if_changed(&fqdn_paths.cert, &read(&import.cert)?, PUBLIC)
                    .map_err(|e| e.to_string())?;
                changed |= write_if_changed(&layout.fqdn_ca(), &read(&import.ca)?, PUBLIC)
                    .map_err(|e| e.to_string())?;
                note(
                    "fqdn (imported)",
                    if changed {
                        Ensured::Created
                    } else {
                        Ensured::Kept
                    },
                );
                "FQDN certificate imported"
            }
            None => {
                let mut ips: Vec<_> = self.config.spec.nodes.iter().map(|n| n.address).collect();
                ips.extend(self.config.spec.vip);
                let fqdn = LeafSpec {
                    common_name: self.config.spec.fqdn.to_string(),
                    organization: None,
                    dns_names: vec![self.config.spec.fqdn.to_string()],
                    ip_addresses: ips,
                    usage: Usage::Server,
                };
                let e = ca.ensure_leaf(&fqdn_paths, &fqdn).map_err(s)?;
                note("fqdn", e);
                write_if_changed(&layout.fqdn_ca(), ca.cert_pem().as_bytes(), PUBLIC)
                    .map_err(|e| e.to_string())?;
                "FQDN certificate issued by the cluster CA"
            }
        };
        Ok((
            (),
            if created.is_empty() {
                format!("all certificates in place; {fqdn_summary}")
            } else {
                format!("issued {}; {fqdn_summary}", created.join(", "))
            },
        ))
    }

    fn etcd_client(&self) -> Result<EtcdClient, String> {
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
        EtcdClient::new(
            &self.member().client_url(),
            &read(self.layout.etcd_pki_dir().join("ca.crt"))?,
            &read(self.layout.pki_dir().join("apiserver-etcd-client.crt"))?,
            &read(self.layout.pki_dir().join("apiserver-etcd-client.key"))?,
        )
        .map_err(|e| e.to_string())
    }

    /// Phase etcd: the binary, its service definition, the agent, and a health check.
    async fn etcd(&mut self, archive: &BundleArchive) -> Result<(EtcdClient, String), String> {
        let binary = binary::locate(archive, &self.layout.bin_dir()).map_err(|e| e.to_string())?;
        let from = match &binary {
            EtcdBinary::Bundle { pack, .. } => format!("from pack {pack}"),
            EtcdBinary::Path(p) => format!("{} from PATH", p.display()),
        };
        let member = self.member();
        let changed = member
            .service(&self.layout, binary.path())
            .write(&self.layout.services_dir())
            .map_err(|e| e.to_string())?;
        self.audit.record(
            "service.define",
            "etcd",
            if changed {
                Outcome::Done
            } else {
                Outcome::Unchanged
            },
        );
        let (_, started) =
            agent::ensure_running(&self.layout, &self.request.exe).map_err(|e| e.to_string())?;
        if started {
            self.audit.record(
                "agent.launch",
                &self.layout.root().display().to_string(),
                Outcome::Done,
            );
        }
        failpoint(Phase::Etcd);
        let client = self.etcd_client()?;
        wait_for("etcd", Duration::from_secs(60), || client.health()).await?;
        Ok((
            client,
            format!(
                "etcd {} healthy at {} ({from})",
                member.name,
                member.client_url()
            ),
        ))
    }

    /// Phase keys: the encryption-at-rest key and the Secrets, create-only.
    async fn keys(&mut self, etcd: &EtcdClient) -> Result<(RegistryAccess, String), String> {
        let path = self.layout.encryption_config();
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => SecretboxKey::from_encryption_configuration(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretboxKey::generate("key1").map_err(|e| e.to_string())?;
                write_atomic(&path, key.encryption_configuration().as_bytes(), PRIVATE)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                self.audit.record(
                    "keys.encryption-config",
                    &path.display().to_string(),
                    Outcome::Done,
                );
                key
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let ns = keys::ensure_namespace(etcd)
            .await
            .map_err(|e| e.to_string())?;
        self.audit
            .record("etcd.create", "namespaces/airgap-system", outcome(ns));
        failpoint(Phase::Keys);
        let (_, stored) = keys::ensure_secret(
            etcd,
            &key,
            INSTALLATION_KEYS,
            keys::generate_installation_keys,
        )
        .await
        .map_err(|e| e.to_string())?;
        self.audit.record(
            "etcd.create",
            "secrets/airgap-system/installation-keys",
            outcome(stored),
        );
        let credentials = || self.registry_credentials();
        let (data, reg_stored) = keys::ensure_secret(etcd, &key, REGISTRY_CREDENTIALS, credentials)
            .await
            .map_err(|e| e.to_string())?;
        self.audit.record(
            "etcd.create",
            "secrets/airgap-system/registry-credentials",
            outcome(reg_stored),
        );
        let field = |k: &str| {
            data.get(k)
                .ok_or_else(|| format!("secret {REGISTRY_CREDENTIALS} has no `{k}`"))
        };
        let text = |k: &str| -> Result<String, String> {
            String::from_utf8(field(k)?.clone()).map_err(|_| format!("`{k}` is not text"))
        };
        let access = RegistryAccess {
            endpoint: text("endpoint")?,
            username: text("username")?,
            password: text("password")?,
            ca_pem: field("caCert")?.clone(),
        };
        let summary = match (stored, reg_stored) {
            (Stored::Existing, Stored::Existing) => {
                "installation keys already in etcd; kept".to_string()
            }
            _ => "installation keys and registry credentials created in etcd (secretbox-encrypted)"
                .to_string(),
        };
        Ok((access, summary))
    }

    fn registry_credentials(&self) -> Result<BTreeMap<String, Vec<u8>>, keys::KeysError> {
        let mut data = BTreeMap::new();
        let bad = |cause: String| keys::KeysError::Secret {
            name: REGISTRY_CREDENTIALS.into(),
            cause,
        };
        match self.config.external_registry() {
            Some(external) => {
                data.insert("endpoint".into(), external.url.clone().into_bytes());
                data.insert(
                    "username".into(),
                    external.username.clone().unwrap_or_default().into_bytes(),
                );
                let password = match &external.password_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| bad(format!("{}: {e}", p.display())))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    None => String::new(),
                };
                data.insert("password".into(), password.into_bytes());
                let ca = match &external.ca {
                    Some(p) => {
                        std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())))?
                    }
                    None => Vec::new(),
                };
                data.insert("caCert".into(), ca);
            }
            None => {
                let endpoint = format!(
                    "https://{}:{}",
                    self.config.spec.fqdn,
                    self.config.registry_port()
                );
                data.insert("endpoint".into(), endpoint.into_bytes());
                data.insert("username".into(), b"admin".to_vec());
                data.insert("password".into(), keys::generate_password()?.into_bytes());
                let ca = std::fs::read(self.layout.fqdn_ca())
                    .map_err(|e| bad(format!("{}: {e}", self.layout.fqdn_ca().display())))?;
                data.insert("caCert".into(), ca);
            }
        }
        Ok(data)
    }

    /// Phase registry: the built-in registry (htpasswd, service, readiness) unless an external
    /// one is configured; then seed it and write the mirror configuration.
    async fn registry(
        &mut self,
        access: &RegistryAccess,
        archive: Arc<BundleArchive>,
    ) -> Result<((Option<SeedStats>, Duration, Mirror), String), String> {
        let target = MirrorTarget::parse(&access.endpoint, false).map_err(|e| e.to_string())?;
        let mut resolve = Vec::new();
        if self.config.external_registry().is_none() {
            let node = self.config.this_node();
            let listen = SocketAddr::new(node.address, self.config.registry_port());
            self.builtin_registry(access, listen)?;
            resolve.push((self.config.spec.fqdn.to_string(), listen));
            let addr = listen;
            wait_for(
                "the built-in registry",
                Duration::from_secs(30),
                || async move {
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
            )
            .await?;
        }
        let healthy_after = self.started.elapsed();
        let client = RegistryClient::new(
            &target.host,
            ClientConfig {
                ca_pem: (!access.ca_pem.is_empty()).then(|| access.ca_pem.clone()),
                credentials: access.credentials(),
                resolve,
                ..ClientConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        client.ping().await.map_err(|e| format!("{target}: {e}"))?;

        let plan = SeedPlan::new(&archive, &target).map_err(|e| e.to_string())?;
        self.observer.bytes_total("seeding", plan.blob_bytes());
        let seeding = Instant::now();
        let seeder = Seeder {
            archive,
            client: Arc::new(client),
            jobs: self.request.jobs,
            observer: Arc::new(SeedProgress {
                observer: self.observer.clone(),
            }),
        };
        let report: SeedReport = seeder
            .run(&plan)
            .await
            .map_err(|e| format!("seeding {target}: {e}"))?;
        self.observer.bytes_finished();
        let stats = SeedStats {
            bytes_uploaded: report.bytes_uploaded,
            blobs_uploaded: report.blobs_uploaded,
            blobs_present: report.blobs_present,
            elapsed: seeding.elapsed(),
        };
        self.audit.record_with(
            "registry.seed",
            &target.to_string(),
            if report.blobs_uploaded + report.manifests_pushed > 0 {
                Outcome::Done
            } else {
                Outcome::Unchanged
            },
            Some(&format!(
                "{} blobs uploaded, {} present, {} manifests pushed",
                report.blobs_uploaded, report.blobs_present, report.manifests_pushed
            )),
        );

        let index = seeder.archive.verified().index();
        let w = |path: PathBuf, bytes: &[u8]| {
            write_if_changed(&path, bytes, PUBLIC).map_err(|e| format!("{}: {e}", path.display()))
        };
        let rewrite = RewriteMap::new(index, &target);
        w(self.layout.rewrite_map(), &rewrite.to_json())?;
        if !access.ca_pem.is_empty() {
            w(self.layout.registry_ca(), &access.ca_pem)?;
        }
        let summary = format!(
            "{} images and {} packs in {target}: {} blobs uploaded, {} already there",
            index.images.len(),
            index.packs.len(),
            report.blobs_uploaded,
            report.blobs_present
        );
        Ok((
            (Some(stats), healthy_after, Mirror { target, rewrite }),
            summary,
        ))
    }

    fn builtin_registry(
        &mut self,
        access: &RegistryAccess,
        listen: SocketAddr,
    ) -> Result<(), String> {
        let htpasswd = self.layout.htpasswd();
        let current = registry::server::Htpasswd::load(&htpasswd)
            .map(|h| h.check(&access.username, &access.password))
            .unwrap_or(false);
        if !current {
            let line = registry::server::htpasswd::entry(&access.username, &access.password)
                .map_err(|e| e.to_string())?;
            write_atomic(&htpasswd, format!("{line}\n").as_bytes(), PRIVATE)
                .map_err(|e| format!("{}: {e}", htpasswd.display()))?;
            self.audit.record(
                "registry.htpasswd",
                &htpasswd.display().to_string(),
                Outcome::Done,
            );
        }
        let spec = ServiceSpec {
            name: "registry".into(),
            program: self.request.exe.clone(),
            args: vec![
                "registry".into(),
                "serve".into(),
                self.layout.registry_storage().display().to_string(),
                "--listen".into(),
                listen.to_string(),
                "--tls-cert".into(),
                self.layout.fqdn_cert().display().to_string(),
                "--tls-key".into(),
                self.layout.fqdn_key().display().to_string(),
                "--htpasswd".into(),
                htpasswd.display().to_string(),
            ],
            env: Default::default(),
        };
        let changed = spec
            .write(&self.layout.services_dir())
            .map_err(|e| e.to_string())?;
        self.audit.record(
            "service.define",
            "registry",
            if changed {
                Outcome::Done
            } else {
                Outcome::Unchanged
            },
        );
        agent::ensure_running(&self.layout, &self.request.exe).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Phase agent: the systemd unit, and the agent confirmed running with healthy services.
    async fn agent(&mut self) -> Result<(Launch, String), String> {
        let unit = agent::systemd_unit(&self.request.exe, &self.layout);
        let changed = write_if_changed(&self.layout.systemd_unit(), unit.as_bytes(), PUBLIC)
            .map_err(|e| format!("{}: {e}", self.layout.systemd_unit().display()))?;
        self.audit.record(
            "agent.unit",
            &self.layout.systemd_unit().display().to_string(),
            if changed {
                Outcome::Done
            } else {
                Outcome::Unchanged
            },
        );
        failpoint(Phase::Agent);
        let (launch, _) =
            agent::ensure_running(&self.layout, &self.request.exe).map_err(|e| e.to_string())?;
        let client = self.etcd_client()?;
        wait_for("etcd", Duration::from_secs(60), || client.health()).await?;
        let pid = agent::running_pid(&self.layout)
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let how = match launch {
            Launch::Systemd => "airgap-agent.service (systemd)".to_string(),
            Launch::Detached => format!("detached, pid {pid}"),
        };
        Ok((
            launch,
            format!(
                "agent running ({how}); logs in {}",
                self.layout.log_dir().display()
            ),
        ))
    }
}

impl Run<'_> {
    /// Writes what changed; returns how many files did.
    fn write_rendered(&self, action: &str, files: &[RenderedFile]) -> Result<usize, String> {
        let mut written = 0;
        for file in files {
            let changed = write_if_changed(&file.path, &file.bytes, file.mode)
                .map_err(|e| format!("{}: {e}", file.path.display()))?;
            if changed {
                written += 1;
                self.audit
                    .record(action, &file.path.display().to_string(), Outcome::Done);
            }
        }
        Ok(written)
    }

    /// Phase kubernetes: render and self-check the configuration, then `kubeadm init` when
    /// the node has kubeadm and no cluster yet.
    async fn kubernetes(
        &mut self,
        access: &RegistryAccess,
        mirror: &Mirror,
        archive: &BundleArchive,
    ) -> Result<(ClusterInit, String), String> {
        let credentials = access.credentials();
        let registry_ca = self.layout.registry_ca();
        let rendered = crate::kubernetes::render(&crate::kubernetes::Inputs {
            config: &self.config,
            layout: &self.layout,
            index: archive.verified().index(),
            target: &mirror.target,
            rewrite: &mirror.rewrite,
            credentials: credentials.as_ref(),
            registry_ca: (!access.ca_pem.is_empty()).then_some(registry_ca.as_path()),
        })
        .map_err(|e| e.to_string())?;
        let (first, rest) = rendered.files.split_at(1.min(rendered.files.len()));
        let mut written = self.write_rendered("kubernetes.render", first)?;
        failpoint(Phase::Kubernetes);
        written += self.write_rendered("kubernetes.render", rest)?;
        let audit_dir = self.layout.kubernetes_audit_dir();
        std::fs::create_dir_all(&audit_dir).map_err(|e| format!("{}: {e}", audit_dir.display()))?;
        let release = &rendered.release;
        let init = kubeadm::init(&self.layout).await?;
        let ran = match &init {
            ClusterInit::Initialized { kubeadm } => {
                self.audit.record_with(
                    "kubeadm.init",
                    &self.layout.kubeadm_config().display().to_string(),
                    Outcome::Done,
                    Some(&kubeadm.display().to_string()),
                );
                "kubeadm init ran".to_string()
            }
            ClusterInit::AlreadyInitialized => "cluster already initialized".to_string(),
            ClusterInit::KubeadmMissing => {
                "kubeadm not on PATH: configuration rendered only, no cluster started".to_string()
            }
        };
        Ok((
            init,
            format!(
                "Kubernetes {} from {} ({} images from {}); {} of {} files changed; {ran}",
                release.version,
                release.pack,
                release.images.len(),
                release.image_repository,
                written,
                rendered.files.len()
            ),
        ))
    }

    /// Phase platform: namespaces and addon manifests rendered; applied when a cluster exists.
    async fn platform(
        &mut self,
        mirror: &Mirror,
        archive: &BundleArchive,
        cluster: &ClusterInit,
    ) -> Result<((), String), String> {
        let files = crate::platform::render(archive, &self.layout, &mirror.rewrite)
            .map_err(|e| e.to_string())?;
        let written = self.write_rendered("platform.render", &files)?;
        let keep: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        for stale in crate::platform::stale_files(&self.layout.manifests_dir(), &keep) {
            std::fs::remove_file(&stale).map_err(|e| format!("{}: {e}", stale.display()))?;
            self.audit.record(
                "platform.remove",
                &stale.display().to_string(),
                Outcome::Done,
            );
        }
        failpoint(Phase::Platform);
        let applied = match cluster {
            ClusterInit::KubeadmMissing => "not applied: no cluster".to_string(),
            _ => {
                let kubectl = kubeadm::apply_manifests(&self.layout).await?;
                self.audit.record_with(
                    "platform.apply",
                    &self.layout.manifests_dir().display().to_string(),
                    Outcome::Done,
                    Some(&kubectl.display().to_string()),
                );
                "applied with kubectl".to_string()
            }
        };
        Ok((
            (),
            format!(
                "{} manifests in {} ({written} changed); {applied}",
                files.len(),
                self.layout.manifests_dir().display()
            ),
        ))
    }
}

fn outcome(s: Stored) -> Outcome {
    match s {
        Stored::Created => Outcome::Done,
        Stored::Existing => Outcome::Unchanged,
    }
}

/// Polls `check` until it succeeds or `limit` passes; the error carries the last failure.
async fn wait_for<F, Fut, E>(what: &str, limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{what} not healthy after {}s: {e}",
                    limit.as_secs()
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct SeedProgress {
    observer: Arc<dyn InstallObserver>,
}

impl SeedObserver for SeedProgress {
    fn bytes_sent(&self, n: u64) {
        self.observer.bytes_done(n);
        failpoint(Phase::Registry);
    }
    fn blob_skipped(&self, size: u64) {
        self.observer.bytes_done(size);
    }
}
