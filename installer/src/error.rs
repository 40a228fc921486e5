//! The installer's errors, typed end to end: a phase failure keeps its cause as a `source`
//! (an etcd error stays an [`EtcdError`], a refused upload a [`registry::RegistryError`]), so
//! callers can decide by type, and the next step for the operator is data ([`Hint`]), not
//! text glued onto a message. The CLI prints the cause chain and the hint on one line:
//! `error: install failed: phase etcd: no etcd binary: …; hint: install etcd …`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::agent::AgentError;
use crate::config::ConfigError;
use crate::etcd::client::EtcdError;
use crate::journal::{JournalError, Phase};
use crate::keys::KeysError;
use crate::kubernetes::kubeadm::ProgramError;
use crate::kubernetes::RenderError;
use crate::node_binaries::BinaryError;
use crate::pki::imported::ImportError;
use crate::pki::PkiError;
use crate::platform::PlatformError;
use crate::release::{ReleaseId, TrustError};
use crate::service::ServiceError;

/// What the operator can do next, printed after the error as `; hint: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint(pub String);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use airgap::error_chain::chain;

/// Why `airgap install` (or `join`, `upgrade`) refused to start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    #[error(transparent)]
    Join(#[from] crate::cluster::join::JoinError),
    #[error(transparent)]
    Plan(#[from] crate::upgrade_plan::PlanError),
    #[error("the upgrade of {node} to {offered} failed and was rolled back: {node} runs {previous} again and the cluster still trusts it")]
    RolledBack {
        node: String,
        offered: Box<ReleaseId>,
        previous: Box<ReleaseId>,
        #[source]
        source: Box<InstallError>,
    },
    /// The node runs the new release; what ends the upgrade (the plan, the trusted release,
    /// the snapshot) did not complete. Never rolled back: the next run finishes it.
    #[error("the upgrade to {offered} is not finished")]
    UpgradeUnfinished {
        offered: Box<ReleaseId>,
        #[source]
        source: Box<InstallError>,
    },
    #[error("{}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("imported certificate {}", path.display())]
    Import {
        path: PathBuf,
        #[source]
        source: ImportError,
    },
    #[error("{} holds installation `{found}`", root.display())]
    OtherInstallation { root: PathBuf, found: String },
    /// The root runs another release: moving it is an upgrade's job, which keeps quorum,
    /// rolls back on failure and never touches the installation keys.
    #[error("{} runs release {installed}; bundle {offered} is a different release", root.display())]
    ReleaseChange {
        root: PathBuf,
        installed: Box<ReleaseId>,
        offered: Box<ReleaseId>,
    },
    #[error("{} holds no completed installation", root.display())]
    NotInstalled { root: PathBuf },
    #[error("reading the release from {url}")]
    PublishedRelease {
        url: String,
        #[source]
        source: Box<registry::release_artifact::ReleaseError>,
    },
    #[error("{url} holds no release newer than {installed} signed with the given key")]
    NoNewerRelease {
        url: String,
        installed: Box<ReleaseId>,
    },
    #[error("copying {offered} from {url} into the cluster's registry; nothing else was changed")]
    Prefetch {
        url: String,
        offered: Box<ReleaseId>,
        #[source]
        source: Box<PhaseError>,
    },
    #[error("`upgrade --from-registry` reads the release's packs from the built-in registry's store, and this installation uses the external registry {registry}")]
    FromRegistryNeedsBuiltin { registry: String },
    #[error("{} already runs release {release}", root.display())]
    AlreadyCurrent {
        root: PathBuf,
        release: Box<ReleaseId>,
    },
    #[error("bundle {offered} is another product than the installed {installed}")]
    OtherProduct {
        installed: Box<ReleaseId>,
        offered: Box<ReleaseId>,
    },
    #[error(
        "bundle {offered} has the version of the installed release {installed} but other content"
    )]
    Resigned {
        installed: Box<ReleaseId>,
        offered: Box<ReleaseId>,
    },
    #[error("delta bundle {offered} is built on {base_name} {base_version}, but the node runs {installed}")]
    DeltaBase {
        installed: Box<ReleaseId>,
        offered: Box<ReleaseId>,
        base_name: String,
        base_version: String,
    },
    #[error("moving the cluster's trusted release")]
    Trust(#[from] crate::release::TrustError),
    #[error(transparent)]
    TrustRoot(#[from] crate::trust_root::TrustRootError),
    /// TUF's rule: trusted metadata is never replaced with a lower version.
    #[error("bundle {offered} is older than the trusted release {trusted}: a release is never replaced by a lower version")]
    Downgrade {
        trusted: Box<ReleaseId>,
        offered: Box<ReleaseId>,
    },
    #[error("--skip-phases: {0}")]
    Skip(#[from] Box<crate::phase::SkipError>),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("phase {phase}")]
    Phase {
        phase: Phase,
        #[source]
        source: Box<PhaseError>,
    },
}

impl InstallError {
    pub fn hint(&self) -> Option<Hint> {
        let h = |s: String| Some(Hint(s));
        match self {
            InstallError::Join(e) => {
                use crate::cluster::join::JoinError as J;
                use crate::cluster::token::TokenError as T;
                match e {
                    J::Token(T::Malformed) => h("pass the whole line `airgap token create` printed".into()),
                    J::Pin { .. } => h("check --server: it must be a node of the cluster the token was created on".into()),
                    J::Unreachable { .. } => h("the join API listens on every HA node at port 9443; check the address and the route".into()),
                    J::CertificateKey(crate::cluster::certificate_key::CertificateKeyError::Malformed | crate::cluster::certificate_key::CertificateKeyError::Open) => h("make a new token and key on a cluster node with `airgap token create --certificate-key`".into()),
                    _ => None,
                }
            }
            InstallError::Plan(crate::upgrade_plan::PlanError::NotYourTurn { before, .. }) => h(
                format!("`airgap upgrade status` shows the plan; upgrade {before} first")
            ),
            InstallError::Plan(_) => h("`airgap upgrade status` shows the plan".into()),
            InstallError::NoNewerRelease { url, .. } => h(format!(
                "`airgap upgrade --check --from-registry {url}` lists what it holds"
            )),
            InstallError::Prefetch { source, .. } => source.hint(),
            InstallError::Release(crate::release::ReleaseError::Expired { .. }) => h(
                "get a freshly signed release: a bundle built again, or the newest one in the release repository"
                    .into(),
            ),
            InstallError::FromRegistryNeedsBuiltin { .. } => {
                h("upgrade with --bundle NEW.tar".into())
            }
            InstallError::UpgradeUnfinished { offered, .. } => h(format!(
                "the node runs {offered}; run `airgap upgrade` again to finish (with any release: the unfinished end is completed first)"
            )),
            InstallError::RolledBack { source, .. } => source.hint().or_else(|| {
                h("fix the cause, then run the same upgrade again; `airgap upgrade status` shows the plan".into())
            }),
            InstallError::OtherInstallation { root, .. } => h(format!(
                "remove it first with `airgap reset --root {}`",
                root.display()
            )),
            InstallError::ReleaseChange { root, offered, .. } => h(format!(
                "use `airgap upgrade --bundle BUNDLE --pub KEY --root {}` to move to {}",
                root.display(),
                offered.version
            )),
            InstallError::NotInstalled { root } => h(format!(
                "install first: `airgap install -c install.yaml --bundle BUNDLE --pub KEY --root {}`",
                root.display()
            )),
            InstallError::AlreadyCurrent { .. } => {
                h("nothing to do; `airgap status` shows the node".into())
            }
            InstallError::DeltaBase { installed, .. } => h(format!(
                "build the delta with `--since` the bundle of {installed}, or use the full bundle"
            )),
            InstallError::Downgrade { .. } => h(
                "install a release at least as new as the trusted one; downgrades are refused"
                    .into(),
            ),
            InstallError::Release(crate::release::ReleaseError::Verify { .. }) => h(
                "check that the bundle was copied completely and that --pub is the key it was signed with"
                    .into(),
            ),
            InstallError::Skip(skip) => {
                h(format!(
                    "phases are {}; verify cannot be skipped",
                    skip.known
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ))
            }
            InstallError::Phase { source, .. } => source.hint(),
            _ => None,
        }
    }

    /// The phase that failed, if one did.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            InstallError::Phase { phase, .. } => Some(*phase),
            _ => None,
        }
    }
}

/// Why a phase failed, with its typed cause.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} failed verification", bundle.display())]
    Verify {
        bundle: PathBuf,
        #[source]
        source: airgap::VerifyError,
    },
    #[error("{} changed while it was being verified", bundle.display())]
    Changed { bundle: PathBuf },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("etcd not healthy after {secs}s (log: {})", log.display())]
    EtcdUnhealthy {
        secs: u64,
        log: PathBuf,
        #[source]
        source: EtcdError,
    },
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("secret airgap-system/{secret}: field `{field}` {problem}")]
    SecretField {
        secret: &'static str,
        field: &'static str,
        problem: &'static str,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    TrustRoot(#[from] crate::trust_root::TrustRootError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("registry {target}")]
    Registry {
        target: String,
        #[source]
        source: Box<registry::RegistryError>,
    },
    #[error(transparent)]
    Target(#[from] registry::mirror::TargetError),
    #[error("the built-in registry at {addr} did not accept connections within {secs}s (log: {})", log.display())]
    RegistryUnreachable {
        addr: std::net::SocketAddr,
        secs: u64,
        log: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the registry's htpasswd")]
    Htpasswd(#[source] registry_server::htpasswd::HtpasswdError),
    #[error("seeding {target}")]
    Seed {
        target: String,
        #[source]
        source: Box<registry::seed::SeedError>,
    },
    #[error(transparent)]
    Render(Box<RenderError>),
    #[error(transparent)]
    Platform(Box<PlatformError>),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error("the cluster exists but kubectl is not on PATH to apply the platform manifests")]
    KubectlMissing,
    #[error(
        "the k8s pack names no pause image (registry.k8s.io/pause:…): every pod sandbox needs one"
    )]
    NoPauseImage,
    #[error("a containerd airgap did not start is serving {}", socket.display())]
    ForeignRuntime { socket: PathBuf },
    #[error("containerd not ready over CRI at {} within {secs}s (log: {})", socket.display(), log.display())]
    RuntimeUnready {
        socket: PathBuf,
        secs: u64,
        log: PathBuf,
        #[source]
        source: crate::cri::CriError,
    },
    #[error("containerd's pull configuration {} is not as rendered", path.display())]
    PullConfigMissing { path: PathBuf },
    #[error("etcd exits as soon as it starts ({restarts} restarts; last: {last_exit}; log: {})", log.display())]
    EtcdCrashing {
        restarts: u32,
        last_exit: String,
        log: PathBuf,
    },
    #[error("etcd member {member} was not promoted to a voter within {secs}s (log: {})", log.display())]
    Promote {
        member: String,
        secs: u64,
        log: PathBuf,
        #[source]
        source: EtcdError,
    },
    #[error("placing the bundle's blobs in this node's registry store")]
    Place(#[from] crate::source::SourceError),
    #[error("etcd leadership did not move to {to} within {secs}s; this member was not restarted")]
    LeaderHandover { to: String, secs: u64 },
    #[error(
        "etcd member {member} did not catch up with the leader's log within {secs}s of its restart"
    )]
    NotCaughtUp { member: String, secs: u64 },
    #[error("the cluster service (join API on port 9443, VIP election) is not up after {secs}s (log: {})", log.display())]
    ClusterServiceDown {
        secs: u64,
        log: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a joining node must receive {} from the cluster; it never makes its own", path.display())]
    JoinMaterialMissing { path: PathBuf },
    #[error("recording the step in the upgrade plan")]
    Plan(#[source] crate::upgrade_plan::PlanError),
    #[error("{0} is not a step these bodies run (a workflow wired to the wrong bodies)")]
    NotAPhaseOf(Phase),
    /// A test's stand-in phase failing on purpose (the runner's unit tests).
    #[error("{0}")]
    Injected(&'static str),
}

// Boxed: rendering and platform errors carry documents' names and causes, and every phase's
// `Result` would otherwise pay for them.
impl From<RenderError> for PhaseError {
    fn from(e: RenderError) -> Self {
        PhaseError::Render(Box::new(e))
    }
}

impl From<PlatformError> for PhaseError {
    fn from(e: PlatformError) -> Self {
        PhaseError::Platform(Box::new(e))
    }
}

impl PhaseError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| PhaseError::Io { what, path, source }
    }

    pub fn hint(&self) -> Option<Hint> {
        let h = |s: String| Some(Hint(s));
        match self {
            PhaseError::Binary(BinaryError::NotFound { name }) => h(format!(
                "add a pack with bin/{name} to the bundle, or install {name}{}",
                BinaryError::debian_package(name)
                    .map(|p| format!(" (Debian: {p})"))
                    .unwrap_or_default()
            )),
            PhaseError::EtcdCrashing { log, .. } => h(format!(
                "see {} for why the bundle's etcd does not start",
                log.display()
            )),
            PhaseError::Promote { log, .. } => h(format!(
                "see {} (the member must reach the others on the peer port 2380); re-run `airgap join` to go on",
                log.display()
            )),
            PhaseError::ClusterServiceDown { log, .. } => {
                h(format!("see {} for why it is not serving", log.display()))
            }
            PhaseError::JoinMaterialMissing { .. } => h(
                "this root holds a partial join; `airgap reset` it and join again with a token".into(),
            ),
            PhaseError::EtcdUnhealthy { log, .. } => {
                h(format!("see {} for why etcd is not up", log.display()))
            }
            PhaseError::RegistryUnreachable { log, .. } => h(format!(
                "see {} for why the registry is not up",
                log.display()
            )),
            PhaseError::Agent(AgentError::StartTimeout { log, .. }) => {
                h(format!("see {log} for why the agent did not start"))
            }
            PhaseError::Registry { source, .. } if source.is_transient() => {
                h("the registry failed transiently; re-run the same command to resume".into())
            }
            PhaseError::Seed { source, .. } if matches!(source.as_ref(), registry::seed::SeedError::Registry(e) if e.is_transient()) => {
                h("the registry failed transiently; re-run the same command to resume".into())
            }
            PhaseError::Program(ProgramError::Failed { log, .. }) => {
                h(format!("full output in {}", log.display()))
            }
            PhaseError::ForeignRuntime { .. } => h(
                "stop and disable it (systemctl disable --now containerd), then re-run: airgap runs the node's containerd with the air-gap configuration"
                    .into(),
            ),
            PhaseError::RuntimeUnready { log, .. } => {
                h(format!("see {} for why containerd is not up", log.display()))
            }
            PhaseError::PullConfigMissing { .. } => h(
                "something removed or changed it while the phase ran; re-run to write it again".into(),
            ),
            PhaseError::NoPauseImage => h(
                "add registry.k8s.io/pause:<version> to the k8s pack's images and rebuild the bundle"
                    .into(),
            ),
            PhaseError::KubectlMissing => h(
                "install kubectl (it ships with kubeadm) and re-run; the install resumes".into(),
            ),
            PhaseError::Trust(TrustError::Mismatch { .. }) => {
                h("use `airgap upgrade` to move the cluster to another release".into())
            }
            PhaseError::Keys(KeysError::Secret { .. }) => h(
                "the encryption configuration must be the one the cluster was installed with"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl From<crate::phase::SkipError> for InstallError {
    fn from(e: crate::phase::SkipError) -> Self {
        InstallError::Skip(Box::new(e))
    }
}
