//! The install journal (`var/lib/airgap/journal.json`): which phases finished, for which
//! installation and bundle. Phases are idempotent on their own; the journal is what `status`
//! reports, what lets `verify` skip re-hashing an unchanged bundle, and what ties a root to
//! one installation so a second `install.yaml` cannot silently overwrite it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{write_atomic, PUBLIC};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Verify,
    Pki,
    Etcd,
    Keys,
    Registry,
    Agent,
    Kubernetes,
    Platform,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Verify,
        Phase::Pki,
        Phase::Etcd,
        Phase::Keys,
        Phase::Registry,
        Phase::Agent,
        Phase::Kubernetes,
        Phase::Platform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Pki => "pki",
            Phase::Etcd => "etcd",
            Phase::Keys => "keys",
            Phase::Registry => "registry",
            Phase::Agent => "agent",
            Phase::Kubernetes => "kubernetes",
            Phase::Platform => "platform",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecord {
    pub state: PhaseState,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the verify phase checked, so an unchanged bundle is not hashed again on a re-run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedBundle {
    pub name: String,
    pub version: String,
    /// sha256 of the signed `bundle.json`.
    pub index_sha256: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified_unix_nanos: u128,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<VerifiedBundle>,
    #[serde(default)]
    pub phases: BTreeMap<Phase, PhaseRecord>,
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {cause}")]
pub struct JournalError {
    pub path: String,
    pub cause: String,
}

impl Journal {
    /// Loads the journal; a root never installed into has an empty one.
    pub fn load(path: &Path) -> Result<Self, JournalError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError {
                path: path.display().to_string(),
                cause: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(e) => Err(JournalError {
                path: path.display().to_string(),
                cause: e.to_string(),
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| JournalError {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, PUBLIC).map_err(|e| JournalError {
            path: path.display().to_string(),
            cause: e.to_string(),
        })
    }

    pub fn state(&self, phase: Phase) -> Option<PhaseState> {
        self.phases.get(&phase).map(|r| r.state)
    }

    pub fn is_complete(&self) -> bool {
        Phase::ALL
            .iter()
            .all(|p| self.state(*p) == Some(PhaseState::Done))
    }
}
