//! What a phase declares about itself. Each phase file holds one [`PhaseSpec`]; the
//! [`CATALOGUE`](super::CATALOGUE) lists them in install order. The workflows, an upgrade's
//! rollback snapshot, `airgap reset` and `airgap status` all read the catalogue, so a new
//! phase is its file plus one catalogue entry, and none of those lists can miss it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::audit::Outcome;
use crate::config::InstallConfig;
use crate::error::PhaseError;
use crate::host::Host;
use crate::journal::{Journal, WorkflowKind};
use crate::layout::NodeLayout;
use crate::phase::{Phase, Scope};

use super::InstallContext;

/// What a phase body returns: its one-line summary.
pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = Result<String, PhaseError>> + 'a>>;

/// A phase body: the context of the run, the node's journal, and the workflow it runs in.
pub type PhaseBody =
    for<'a> fn(&'a mut InstallContext, &'a mut Journal, WorkflowKind) -> PhaseFuture<'a>;

pub struct PhaseSpec {
    pub phase: Phase,
    /// What `--help` and the docs say the phase does.
    pub about: &'static str,
    /// Its place in an installation (`init`, `join`); `None`: it does not run there.
    pub install: Option<Scope>,
    /// Its place in an upgrade.
    pub upgrade: InUpgrade,
    /// A preflight phase writes nothing until it succeeds: the runner journals it only at
    /// its end.
    pub preflight: bool,
    pub run: PhaseBody,
    /// The paths the phase writes, and what rollback and reset do with each.
    pub owns: fn(&NodeLayout) -> Vec<OwnedPath>,
    /// What `airgap status` checks of the phase's work on a node that finished it; `None`
    /// when a service's own probe says it.
    pub check: Option<fn(&NodeLayout, &InstallConfig) -> Check>,
}

impl PhaseSpec {
    /// The phase as a workflow step in `scope`.
    pub fn step(&self, scope: Scope) -> crate::workflow::Step {
        crate::workflow::Step {
            phase: self.phase,
            scope,
            preflight: self.preflight,
        }
    }
}

/// Where a phase runs in an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InUpgrade {
    /// Not at all: its work is made once per installation (PKI, installation keys).
    No,
    /// Before anything on the node moves: checking and publishing the release, so every
    /// service that restarts afterwards finds it.
    First(Scope),
    /// In install order, once every `First` phase has run.
    Then(Scope),
}

/// A path a phase writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPath {
    pub path: PathBuf,
    pub kind: Ownership,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Configuration the phase renders: an upgrade's rollback puts it back as it was, and
    /// reset removes it.
    Config,
    /// Configuration rendered into a directory the node shares with others (CNI's `net.d`,
    /// containerd's `certs.d`): rollback puts it back; reset leaves the directory, removing
    /// only what is marked ours.
    SharedConfig,
    /// What the phase made once and an upgrade never rewrites (keys, data, the journal):
    /// reset removes it; a rollback leaves it.
    State,
}

impl OwnedPath {
    pub fn config(path: PathBuf) -> Self {
        OwnedPath {
            path,
            kind: Ownership::Config,
        }
    }
    pub fn shared_config(path: PathBuf) -> Self {
        OwnedPath {
            path,
            kind: Ownership::SharedConfig,
        }
    }
    pub fn state(path: PathBuf) -> Self {
        OwnedPath {
            path,
            kind: Ownership::State,
        }
    }

    /// Whether an upgrade's rollback snapshot keeps it.
    pub fn rolled_back(&self) -> bool {
        matches!(self.kind, Ownership::Config | Ownership::SharedConfig)
    }

    /// Whether `airgap reset` removes it.
    pub fn reset(&self) -> bool {
        matches!(self.kind, Ownership::Config | Ownership::State)
    }
}

/// What `airgap status` says of one phase's work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub healthy: bool,
    pub detail: String,
}

/// A phase that owns nothing.
pub fn owns_nothing(_: &NodeLayout) -> Vec<OwnedPath> {
    Vec::new()
}

/// What a phase written against it may reach of its run: the inputs, the machine through
/// [`Host`], the audit log and the failpoint. Narrow on purpose: a phase on `PhaseEnv` is
/// unit-tested with [`FakeEnv`](tests::FakeEnv) instead of a whole install.
pub trait PhaseEnv {
    fn config(&self) -> &InstallConfig;
    fn layout(&self) -> &NodeLayout;
    fn host(&self) -> &dyn Host;
    /// One audit line for an action on `object`.
    fn audit(&self, action: &str, object: &str, outcome: Outcome);
    /// Where the phase has done part of its work (`AIRGAP_FAILPOINT=<phase>` parks there).
    fn reached(&self, phase: Phase);
}

impl PhaseEnv for InstallContext {
    fn config(&self) -> &InstallConfig {
        &self.config
    }
    fn layout(&self) -> &NodeLayout {
        &self.layout
    }
    fn host(&self) -> &dyn Host {
        self.host.as_ref()
    }
    fn audit(&self, action: &str, object: &str, outcome: Outcome) {
        self.audit.record(action, object, outcome);
    }
    fn reached(&self, phase: Phase) {
        self.failpoint.reached(phase);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::host::RecordingHost;

    /// A phase environment on a temporary root: a [`RecordingHost`] that runs nothing, and
    /// the audit lines kept in memory.
    pub(crate) struct FakeEnv {
        _dir: tempfile::TempDir,
        pub config: InstallConfig,
        pub layout: NodeLayout,
        pub host: RecordingHost,
        pub audited: Mutex<Vec<(String, String, Outcome)>>,
    }

    impl FakeEnv {
        /// `install_yaml` parsed as the run's configuration; `programs` are what the host
        /// finds on PATH.
        pub(crate) fn new(install_yaml: &str, programs: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            FakeEnv {
                layout: NodeLayout::new(dir.path()),
                _dir: dir,
                config: InstallConfig::parse(install_yaml).unwrap(),
                host: RecordingHost::new(programs),
                audited: Mutex::new(Vec::new()),
            }
        }
    }

    impl PhaseEnv for FakeEnv {
        fn config(&self) -> &InstallConfig {
            &self.config
        }
        fn layout(&self) -> &NodeLayout {
            &self.layout
        }
        fn host(&self) -> &dyn Host {
            &self.host
        }
        fn audit(&self, action: &str, object: &str, outcome: Outcome) {
            self.audited
                .lock()
                .unwrap()
                .push((action.into(), object.into(), outcome));
        }
        fn reached(&self, _phase: Phase) {}
    }
}
