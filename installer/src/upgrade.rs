//! `airgap upgrade --bundle | --from-registry`: the `upgrade` workflow on an installed node.
//!
//! From a registry, the release is its signed artifact there (`registry seed` and `registry
//! sync` publish it); before anything on the node moves, all of its content is copied into the
//! cluster's registry, every blob digest-checked on the way, so a forged signature or a
//! replaced blob is refused with nothing changed but unreferenced blobs. The phases then read
//! the release's packs from the built-in registry's store: no bundle file on the node.
//!
//! Refused before anything is written: a root with no completed installation, a bundle whose
//! signature fails, another product, the release already running, a lower version (TUF's
//! rule), a delta built on another release than the one installed. Then the phases run (the new
//! content seeded, the node's binaries, services and configuration moved to it) and the steps
//! that end the upgrade ([`crate::upgrade_end`]: the plan, the cluster's trusted release, the
//! rollback snapshot). PKI and installation keys are not in the workflow at all. A failed or
//! killed upgrade is resumed by running it again with the same bundle; one killed while it was
//! ending is finished by the next upgrade, whatever its release.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use airgap::PublicKey;

use crate::config::{local_addresses, InstallConfig};
use crate::error::InstallError;
use crate::host::Host;
use crate::journal::{Journal, Phase, WorkflowKind};
use crate::layout::NodeLayout;
use crate::phases::{ContextInputs, InstallContext};
use crate::release::{decide, Advanced, Decision, Release, ReleaseId, ReleaseOrigin};
use crate::upgrade_end::UpgradeEnd;
use crate::workflow::{Failpoint, Observer, Runner, SkipSet, Workflow};

/// Where the new release comes from.
#[derive(Debug, Clone)]
pub enum UpgradeSource {
    Bundle(PathBuf),
    /// A registry the release was seeded or synced into.
    Registry {
        /// `https://HOST[:PORT][/PREFIX]`.
        url: String,
        /// The release to move to; `None`: the newest one newer than the node's.
        version: Option<String>,
        /// CA to trust for it, beside the system's.
        ca: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub source: UpgradeSource,
    pub public_key: PathBuf,
    pub root: PathBuf,
    pub exe: PathBuf,
    pub jobs: usize,
    pub skip: SkipSet,
}

#[derive(Debug, Clone)]
pub struct UpgradeReport {
    pub from: ReleaseId,
    pub to: ReleaseId,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
    /// When this node was the last to move: whether this run moved the cluster's trusted
    /// release (or found it moved); `None` while other nodes are still to upgrade.
    pub advanced: Option<Advanced>,
    /// The node whose turn is next, if any.
    pub next: Option<String>,
    /// From a registry: what copying the release into the cluster's registry did.
    pub prefetched: Option<registry::SeedReport>,
    pub node: String,
}

pub async fn upgrade(
    request: &UpgradeRequest,
    observer: Arc<dyn Observer>,
    host: Arc<dyn Host>,
) -> Result<UpgradeReport, InstallError> {
    let started = Instant::now();
    let layout = NodeLayout::new(&request.root);
    let mut journal = Journal::load_migrating(&layout.journal())?;
    // Installed as the first node (init) or as a joined HA node (join).
    let installed_done = [WorkflowKind::Init, WorkflowKind::Join]
        .iter()
        .any(|kind| journal.is_complete(*kind, &Workflow::init().phases()));
    let Some(installed) = journal.release().filter(|_| installed_done) else {
        return Err(InstallError::NotInstalled {
            root: request.root.clone(),
        });
    };
    let config_path = layout.install_yaml();
    let config = InstallConfig::load(&config_path)?;
    let node = config
        .installed_node(journal.node.as_deref(), &local_addresses())?
        .clone();
    // An upgrade whose end a run left unfinished is finished first, whatever this run was
    // given: its plan would refuse every later upgrade otherwise.
    let finished = finish_interrupted(
        &layout,
        &config,
        &node,
        &mut journal,
        observer.as_ref(),
        host.as_ref(),
    )
    .await?;
    let (release, origin) = match &request.source {
        UpgradeSource::Bundle(bundle) => (
            Release::open(bundle, &request.public_key)?,
            ReleaseOrigin::Bundle(bundle.clone()),
        ),
        UpgradeSource::Registry { url, version, ca } => {
            if let Some(external) = config.external_registry() {
                return Err(InstallError::FromRegistryNeedsBuiltin {
                    registry: external.url.clone(),
                });
            }
            // Without --version: the newest release newer than what the node ran before this
            // upgrade (an interrupted one resumes to the release it started).
            let in_progress = journal.workflow(WorkflowKind::Upgrade).is_some()
                && !journal.is_complete(WorkflowKind::Upgrade, &Workflow::upgrade().phases());
            let baseline = match &journal.previous_release {
                Some(previous) if in_progress => previous.clone(),
                _ => installed.clone(),
            };
            let release = open_published(
                url,
                version.as_deref(),
                ca.as_deref(),
                &request.public_key,
                &baseline,
            )
            .await?;
            (release, ReleaseOrigin::Registry(url.clone()))
        }
    };
    let offered = release.id().clone();
    if let Some(end) = finished.filter(|end| end.to == offered) {
        return Ok(UpgradeReport {
            from: end.from,
            to: end.to,
            resumed: true,
            advanced: end.advanced,
            next: end.next,
            prefetched: None,
            node: node.name.to_string(),
        });
    }

    // A run that was interrupted after it started moving to `offered` resumes; anything else
    // must be a newer release of the same product.
    let upgrade_steps = Workflow::upgrade().phases();
    let resuming = journal.workflow(WorkflowKind::Upgrade).is_some()
        && !journal.is_complete(WorkflowKind::Upgrade, &upgrade_steps);
    let boxed = |r: &ReleaseId| Box::new(r.clone());
    match decide(&installed, &offered) {
        Decision::Same if resuming => {}
        Decision::Same => {
            return Err(InstallError::AlreadyCurrent {
                root: request.root.clone(),
                release: boxed(&offered),
            })
        }
        Decision::Older => {
            return Err(InstallError::Downgrade {
                trusted: boxed(&installed),
                offered: boxed(&offered),
            })
        }
        Decision::Conflicting if installed.name != offered.name => {
            return Err(InstallError::OtherProduct {
                installed: boxed(&installed),
                offered: boxed(&offered),
            })
        }
        Decision::Conflicting => {
            return Err(InstallError::Resigned {
                installed: boxed(&installed),
                offered: boxed(&offered),
            })
        }
        Decision::Newer => {}
    }
    if !resuming {
        crate::release::check_fresh(&release, host.now())?;
    }
    // The release this node runs until the upgrade completes: the journal names the offered
    // one once the verify phase passed, so a resumed run compares with what the cluster trusted
    // before.
    let previous = if resuming {
        journal
            .previous_release
            .clone()
            .unwrap_or_else(|| installed.clone())
    } else {
        installed.clone()
    };
    if let Some(base) = &release.verified().index().base {
        let matches = base.name == previous.name
            && base.version == previous.version
            && base.index_digest == previous.index_sha256;
        if !matches {
            return Err(InstallError::DeltaBase {
                installed: boxed(&previous),
                offered: boxed(&offered),
                base_name: base.name.clone(),
                base_version: base.version.to_string(),
            });
        }
    }
    if !resuming {
        journal.start_workflow(WorkflowKind::Upgrade, previous.clone());
    }

    let mut ctx = InstallContext::new(ContextInputs {
        config,
        node,
        layout: layout.clone(),
        release,
        origin,
        config_path,
        exe: request.exe.clone(),
        jobs: request.jobs,
        observer: observer.clone(),
        host: host.clone(),
        started,
    });
    let etcd = ctx.etcd_client().map_err(|source| InstallError::Phase {
        phase: Phase::Etcd,
        source: Box::new(source),
    })?;
    // This node's turn in the plan: nodes roll one at a time, in install.yaml's order.
    let names: Vec<String> = ctx
        .config
        .spec
        .nodes
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    let this = ctx.node.name.to_string();
    // A release under another key than the cluster trusts is refused before anything moves.
    crate::trust_root::check_or_record(&etcd, ctx.release.key()).await?;
    let mut prefetched = None;
    if let UpgradeSource::Registry { url, .. } = &request.source {
        // All of the release into the cluster's registry, checked, before anything moves.
        let report =
            crate::phases::prefetch(&mut ctx)
                .await
                .map_err(|source| InstallError::Prefetch {
                    url: url.clone(),
                    offered: Box::new(offered.clone()),
                    source: Box::new(source),
                })?;
        prefetched = Some(report);
    }
    // Before anything moves: a node whose turn it is not is refused with nothing changed.
    crate::upgrade_plan::claim(&etcd, &previous, &offered, &names, &this).await?;
    // What this node ran before: restored if the upgrade fails (the journal as
    // it was before this upgrade started). Taken once, by the run that
    // starts the upgrade; a resumed run keeps the first one.
    let rollback = Rollback::new(&layout);
    if !resuming {
        rollback.take()?;
    }
    journal.save(&layout.journal())?;
    ctx.recording_plan = true;
    let mut end = UpgradeEnd {
        etcd: etcd.clone(),
        node: this.clone(),
        from: previous.clone(),
        to: offered.clone(),
        snapshot: rollback.dir.clone(),
        audit: ctx.audit.clone(),
        failpoint: ctx.failpoint,
        advanced: None,
        next: None,
    };
    let result = ctx
        .run_workflow(
            &Workflow::upgrade(),
            &mut journal,
            &request.skip,
            Some(&mut end),
        )
        .await;
    match result {
        Ok(()) => {}
        // The node runs the new release already: finishing is retried, never rolled back.
        Err(e) if e.phase().is_some_and(|p| Phase::UPGRADE_END.contains(&p)) => {
            return Err(InstallError::UpgradeUnfinished {
                offered: Box::new(offered),
                source: Box::new(e),
            })
        }
        Err(e) => {
            let cause = airgap::error_chain::chain(&e);
            let restored = if rollback.exists() {
                rollback.restore(&mut ctx).await
            } else {
                Err(RollbackError::Nothing {
                    dir: rollback.dir.clone(),
                })
            };
            let note = match &restored {
                Ok(()) => format!("{cause}; rolled back to {previous}"),
                Err(why) => format!(
                    "{cause}; NOT rolled back: {}",
                    airgap::error_chain::chain(why)
                ),
            };
            crate::upgrade_plan::finish(
                &etcd,
                &this,
                &offered,
                crate::upgrade_plan::NodeOutcome::Failed { note },
            )
            .await?;
            return Err(match restored {
                Ok(()) => InstallError::RolledBack {
                    node: this,
                    offered: Box::new(offered),
                    previous: Box::new(previous),
                    source: Box::new(e),
                },
                Err(_) => e,
            });
        }
    }
    Ok(UpgradeReport {
        from: previous,
        to: offered,
        resumed: resuming,
        advanced: end.advanced,
        next: end.next,
        prefetched,
        node: ctx.node.name.to_string(),
    })
}

/// Completes the end of an upgrade that a run left unfinished (see [`UpgradeEnd::pending`]):
/// the plan, the trusted release and the snapshot, whatever release this run was given.
/// `None` when there was nothing to finish.
async fn finish_interrupted(
    layout: &NodeLayout,
    config: &InstallConfig,
    node: &crate::config::Node,
    journal: &mut Journal,
    observer: &dyn Observer,
    host: &dyn Host,
) -> Result<Option<UpgradeEnd>, InstallError> {
    let Some((from, to)) = UpgradeEnd::pending(journal) else {
        return Ok(None);
    };
    let etcd = crate::cluster::etcd_of(layout, config, node).map_err(|e| InstallError::Phase {
        phase: Phase::Finish,
        source: Box::new(e.into()),
    })?;
    let audit = crate::audit::AuditLog::new(layout);
    let failpoint = Failpoint::from_env();
    let mut end = UpgradeEnd {
        etcd,
        node: node.name.to_string(),
        from,
        to: to.clone(),
        snapshot: Rollback::new(layout).dir,
        audit: audit.clone(),
        failpoint,
        advanced: None,
        next: None,
    };
    let journal_path = layout.journal();
    Runner {
        journal,
        journal_path: &journal_path,
        audit: &audit,
        observer,
        host,
        skip: &SkipSet::default(),
        failpoint,
    }
    .run(&Workflow::upgrade_end(), &mut end)
    .await
    .map_err(|e| InstallError::UpgradeUnfinished {
        offered: Box::new(to),
        source: Box::new(e),
    })?;
    Ok(Some(end))
}

/// Why the configuration could not be put back as it was before an upgrade.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("nothing to roll back to under {}", dir.display())]
    Nothing { dir: std::path::PathBuf },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd is not healthy on the previous definition after {secs}s")]
    EtcdUnhealthy { secs: u64 },
    #[error("reaching etcd")]
    Etcd(#[from] Box<crate::error::PhaseError>),
}

/// What a node ran before an upgrade: its journal, its service definitions (which binary each
/// service runs, with which configuration) and every configuration file an upgrade re-renders,
/// under `var/lib/airgap/upgrade-rollback/`. Restoring them makes the agent run the previous
/// binaries again (they stay on disk at their versioned paths) with the previous configuration.
/// Keys and certificates are not in it: no upgrade step writes them.
struct Rollback {
    dir: PathBuf,
    layout: NodeLayout,
}

/// Every regular file under `path` (or `path` itself when it is one).
fn files_under(path: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(&p) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            }
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

impl Rollback {
    fn new(layout: &NodeLayout) -> Self {
        Rollback {
            dir: layout.state_dir().join("upgrade-rollback"),
            layout: layout.clone(),
        }
    }

    /// What an upgrade may rewrite: the configuration its phases render (each phase says
    /// what it owns in its [`PhaseSpec`](crate::phases::PhaseSpec)).
    fn rendered(&self) -> Vec<PathBuf> {
        crate::phases::rendered_paths(&self.layout)
    }

    /// Where the snapshot keeps `path`.
    fn saved(&self, path: &std::path::Path) -> PathBuf {
        let rel = path.strip_prefix(self.layout.root()).unwrap_or(path);
        self.dir
            .join("files")
            .join(rel.strip_prefix("/").unwrap_or(rel))
    }

    fn exists(&self) -> bool {
        self.dir.join("journal.json").exists()
    }

    fn take(&self) -> Result<(), InstallError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| InstallError::Input { path, source }
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        for file in self.rendered().iter().flat_map(|p| files_under(p)) {
            let to = self.saved(&file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            // Modes travel with the copy (a 0600 kubeconfig stays 0600).
            std::fs::copy(&file, &to).map_err(io(&to))?;
        }
        // Last: its presence means the snapshot is whole.
        let journal = self.dir.join("journal.json");
        std::fs::copy(self.layout.journal(), &journal).map_err(io(&journal))?;
        Ok(())
    }

    /// Every rendered file back as it was (files the upgrade added removed), changing only
    /// what differs so the agent restarts only services whose definition moved.
    fn restore_files(&self) -> Result<(), RollbackError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| RollbackError::Io { what, path, source }
        };
        for path in self.rendered() {
            for current in files_under(&path) {
                if !self.saved(&current).exists() {
                    std::fs::remove_file(&current).map_err(io("removing", &current))?;
                }
            }
            let files = self.dir.join("files");
            for saved in files_under(&self.saved(&path)) {
                // files_under(saved) lists only paths under `files`.
                let Ok(rel) = saved.strip_prefix(&files) else {
                    continue;
                };
                let target = self.layout.root().join(rel);
                let bytes = std::fs::read(&saved).map_err(io("reading", &saved))?;
                let mode = std::fs::metadata(&saved)
                    .map_err(io("reading", &saved))?
                    .permissions()
                    .mode()
                    & 0o777;
                crate::files::write_if_changed(&target, &bytes, mode)
                    .map_err(io("writing", &target))?;
            }
        }
        Ok(())
    }

    /// Puts the configuration and the journal back, then waits for etcd to be healthy on the
    /// previous definition.
    async fn restore(&self, ctx: &mut InstallContext) -> Result<(), RollbackError> {
        self.restore_files()?;
        let etcd = ctx.etcd_client().map_err(Box::new)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while etcd.health().await.is_err() {
            if Instant::now() >= deadline {
                return Err(RollbackError::EtcdUnhealthy { secs: 60 });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let saved = self.dir.join("journal.json");
        let journal = std::fs::read(&saved).map_err(|source| RollbackError::Io {
            what: "reading",
            path: saved.clone(),
            source,
        })?;
        crate::files::write_atomic(&self.layout.journal(), &journal, crate::files::PUBLIC)
            .map_err(|source| RollbackError::Io {
                what: "writing",
                path: self.layout.journal(),
                source,
            })?;
        ctx.audit.record(
            "upgrade.rollback",
            &self.layout.root().display().to_string(),
            crate::audit::Outcome::Done,
        );
        self.discard();
        Ok(())
    }

    fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One release found in a registry's releases repository.
#[derive(Debug)]
pub enum ListedRelease {
    /// Its signature verified with the given key.
    Verified {
        tag: String,
        id: ReleaseId,
        /// Against the node's release, when there is an installed one.
        decision: Option<Decision>,
        /// Its signed index: every image and pack it holds.
        verified: Box<airgap::VerifiedIndex>,
    },
    /// Not offered: unreadable, not a release artifact, or not signed by the key.
    Rejected { tag: String, reason: ListError },
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("reading it from the registry")]
    Registry(#[from] Box<registry::RegistryError>),
    #[error("the tag names no release artifact")]
    Missing,
    #[error("its signature does not verify")]
    Signature(#[source] airgap::VerifyError),
    #[error("its index names release {named}, not the tag's version")]
    TagMismatch { named: String },
}

/// The releases in `repo` of `client`'s registry, each verified with `key`, in version order,
/// compared with `installed`. Nothing is downloaded but the small signed indexes.
pub async fn list_registry_releases(
    client: &registry::RegistryClient,
    repo: &str,
    key: &PublicKey,
    installed: Option<&ReleaseId>,
) -> Result<Vec<ListedRelease>, registry::RegistryError> {
    use registry::release_artifact;
    let mut out = Vec::new();
    for tag in release_artifact::list(client, repo).await? {
        let listed = match release_artifact::fetch(client, repo, &tag).await {
            Err(e) => ListedRelease::Rejected {
                tag,
                reason: ListError::Registry(Box::new(e)),
            },
            Ok(None) => ListedRelease::Rejected {
                tag,
                reason: ListError::Missing,
            },
            Ok(Some(parts)) => match parts.verify(key) {
                Err(e) => ListedRelease::Rejected {
                    tag,
                    reason: ListError::Signature(e),
                },
                Ok(v) if v.index().version.to_string() != tag => ListedRelease::Rejected {
                    tag,
                    reason: ListError::TagMismatch {
                        named: v.index().version.to_string(),
                    },
                },
                Ok(v) => {
                    let id = ReleaseId::of(&v);
                    let decision = installed.map(|i| decide(i, &id));
                    ListedRelease::Verified {
                        tag,
                        id,
                        decision,
                        verified: Box::new(v),
                    }
                }
            },
        };
        out.push(listed);
    }
    out.sort_by(|a, b| match (a, b) {
        (ListedRelease::Verified { id: x, .. }, ListedRelease::Verified { id: y, .. }) => {
            x.version.cmp(&y.version)
        }
        (ListedRelease::Verified { .. }, _) => std::cmp::Ordering::Less,
        (_, ListedRelease::Verified { .. }) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    });
    Ok(out)
}

/// Release `version` in `url` (or, without one, the newest verified release newer than
/// `installed`), its signature verified with the key in `public_key`.
async fn open_published(
    url: &str,
    version: Option<&str>,
    ca: Option<&std::path::Path>,
    public_key: &std::path::Path,
    installed: &ReleaseId,
) -> Result<Release, InstallError> {
    let key =
        PublicKey::load(public_key).map_err(|source| crate::release::ReleaseError::PublicKey {
            path: public_key.to_path_buf(),
            source,
        })?;
    let fail = |source: registry::release_artifact::ReleaseError| InstallError::PublishedRelease {
        url: url.to_string(),
        source: Box::new(source),
    };
    let target = registry::MirrorTarget::parse(url, false).map_err(|e| fail(e.into()))?;
    let client = registry::RegistryClient::for_target(&target, ca).map_err(|e| fail(e.into()))?;
    let version = match version {
        Some(v) => v.to_string(),
        None => {
            let repo = target.repository(registry::release_artifact::REPOSITORY);
            let listed = list_registry_releases(&client, &repo, &key, Some(installed))
                .await
                .map_err(|e| fail(e.into()))?;
            let now = std::time::SystemTime::now();
            let newest = listed.iter().rev().find_map(|r| match r {
                ListedRelease::Verified {
                    tag,
                    decision: Some(Decision::Newer),
                    verified,
                    ..
                } if crate::release::expired(verified, now).is_none() => Some(tag.clone()),
                _ => None,
            });
            newest.ok_or_else(|| InstallError::NoNewerRelease {
                url: url.to_string(),
                installed: Box::new(installed.clone()),
            })?
        }
    };
    let published = registry::release_artifact::PublishedRelease::open(
        Arc::new(client),
        target,
        &version,
        &key,
    )
    .await
    .map_err(fail)?;
    Ok(Release::published(published, key))
}

/// The release an installed root runs, if any (for `--check` without a full upgrade).
pub fn installed_release(root: &std::path::Path) -> Result<Option<ReleaseId>, InstallError> {
    let layout = NodeLayout::new(root);
    if !layout.journal().exists() {
        return Ok(None);
    }
    Ok(Journal::load_migrating(&layout.journal())?.release())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &std::path::Path, bytes: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn tree(root: &std::path::Path) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)> {
        files_under(root)
            .into_iter()
            .map(|f| {
                let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
                (f.clone(), (std::fs::read(&f).unwrap(), mode))
            })
            .collect()
    }

    #[test]
    fn a_rollback_puts_back_every_rendered_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let layout = NodeLayout::new(dir.path());
        write(&layout.journal(), b"{}", 0o644);
        write(&layout.services_dir().join("etcd.json"), b"old etcd", 0o644);
        write(&layout.kubeadm_config(), b"old kubeadm", 0o644);
        write(&layout.discovery_kubeconfig(), b"credentials", 0o600);
        write(&layout.containerd_config(), b"old containerd", 0o644);
        write(&layout.rewrite_map(), b"old map", 0o644);
        // Not rendered by an upgrade: never snapshotted, never touched.
        let key = layout.pki_dir().join("ca.key");
        write(&key, b"secret", 0o600);
        let before = tree(&layout.etc());

        let rollback = Rollback::new(&layout);
        rollback.take().unwrap();
        assert!(rollback.exists());
        assert!(!rollback.saved(&key).exists(), "keys are not copied");

        // What an upgrade does: rewrites, adds, removes, loosens a mode.
        write(&layout.services_dir().join("etcd.json"), b"new etcd", 0o644);
        write(
            &layout.services_dir().join("new.json"),
            b"new service",
            0o644,
        );
        write(&layout.kubeadm_config(), b"new kubeadm", 0o644);
        std::fs::remove_file(layout.containerd_config()).unwrap();
        std::fs::set_permissions(
            layout.discovery_kubeconfig(),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write(&layout.manifests_dir().join("10-new.yaml"), b"x", 0o644);

        rollback.restore_files().unwrap();
        assert_eq!(tree(&layout.etc()), before);
    }
}
