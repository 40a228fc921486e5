//! What names a phase: [`Phase`], a small copyable name that the journal, the upgrade plan in
//! etcd, failpoints and `--skip-phases` share. What a phase *is* (its scope, its body, the
//! paths it owns, its status check) is its [`PhaseSpec`](crate::phases::PhaseSpec) in the
//! phase's own file; this module only names phases, so the journal can record a phase it
//! has never heard of (one a newer airgap added) and carry it unharmed.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A phase's name, e.g. `etcd`. Compared and ordered by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phase(&'static str);

/// The names phases others refer to by name; a phase nothing else names declares its own
/// constant in its file (see [`crate::phases::time`]).
#[allow(non_upper_case_globals)]
impl Phase {
    pub const Verify: Phase = Phase::named("verify");
    pub const Pki: Phase = Phase::named("pki");
    pub const Etcd: Phase = Phase::named("etcd");
    pub const Keys: Phase = Phase::named("keys");
    pub const Registry: Phase = Phase::named("registry");
    /// The container runtime: containerd, runc and the node binaries from the bundle.
    pub const Runtime: Phase = Phase::named("runtime");
    pub const Agent: Phase = Phase::named("agent");
    pub const Kubernetes: Phase = Phase::named("kubernetes");
    pub const Platform: Phase = Phase::named("platform");
    /// The end of an upgrade on a node: marked done in the upgrade plan.
    pub const Finish: Phase = Phase::named("finish");
    /// The end of an upgrade on a node: the cluster's trusted release moved once every node
    /// runs the new one.
    pub const Trust: Phase = Phase::named("trust");
    /// The end of an upgrade on a node: the rollback snapshot removed.
    pub const Cleanup: Phase = Phase::named("cleanup");

    /// The steps that end an upgrade, after its phases: not phases an operator can skip.
    pub const UPGRADE_END: [Phase; 3] = [Phase::Finish, Phase::Trust, Phase::Cleanup];
}

impl Phase {
    pub const fn named(name: &'static str) -> Phase {
        Phase(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// A phase by name, known to this airgap or not: one read back from the journal or a
    /// plan in etcd, or named by a failpoint. Each distinct name is kept once for the life of
    /// the process; records name a dozen phases.
    pub fn from_name(name: &str) -> Phase {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut names = NAMES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = names.get(name) {
            return Phase(known);
        }
        let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(kept);
        Phase(kept)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so a width in a format (status output columns) applies.
        f.pad(self.0)
    }
}

impl Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Phase::from_name(&name))
    }
}

/// Whether a phase acts on state the whole cluster shares or on this node only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Node,
}

/// Why `--skip-phases` was refused, with the phases that could have been named.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct SkipError {
    pub problem: SkipProblem,
    /// The phases of the workflow, for the hint.
    pub known: Vec<Phase>,
}

#[derive(Debug, thiserror::Error)]
pub enum SkipProblem {
    #[error("`{0}` is not a phase")]
    NotAPhase(String),
    #[error("{0} cannot be skipped: it ends an upgrade")]
    EndsUpgrade(Phase),
    #[error("verify cannot be skipped: nothing is installed from an unverified bundle")]
    Verify,
}

/// Phases the operator asked to leave out (`--skip-phases etcd,registry`), as kubeadm has.
/// Verification can never be skipped: nothing may act on an unverified bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipSet(BTreeSet<Phase>);

impl SkipSet {
    /// `list` (comma-separated) against `known`, the phases of the workflow that will run.
    pub fn parse(list: &str, known: &[Phase]) -> Result<Self, SkipError> {
        let refuse = |problem| SkipError {
            problem,
            known: known.to_vec(),
        };
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let phase = known
                .iter()
                .copied()
                .find(|p| p.as_str() == name)
                .ok_or_else(|| refuse(SkipProblem::NotAPhase(name.to_string())))?;
            if Phase::UPGRADE_END.contains(&phase) {
                return Err(refuse(SkipProblem::EndsUpgrade(phase)));
            }
            if phase == Phase::Verify {
                return Err(refuse(SkipProblem::Verify));
            }
            set.insert(phase);
        }
        Ok(SkipSet(set))
    }

    pub fn contains(&self, phase: Phase) -> bool {
        self.0.contains(&phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_equal_the_constants_and_unknown_ones_survive() {
        let read: Vec<Phase> = serde_json::from_str(r#"["etcd","chrony-v9"]"#).unwrap();
        assert_eq!(read[0], Phase::Etcd);
        assert_eq!(read[1].as_str(), "chrony-v9");
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"["etcd","chrony-v9"]"#
        );
        // The same name read twice is one phase.
        let again: Phase = serde_json::from_str(r#""chrony-v9""#).unwrap();
        assert_eq!(again, read[1]);
    }
}
