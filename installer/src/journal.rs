//! The node's journal (`var/lib/airgap/journal.json`): node-scoped state only. Which
//! installation and node this root belongs to, which release it runs, and, per workflow
//! (init, join, upgrade), which phase finished when. Phases are idempotent on their own; the
//! journal is what `status` reports, what lets `verify` skip re-hashing an unchanged bundle,
//! and what ties a root to one installation and one release. Cluster-scoped state (the
//! trusted release, join tokens, upgrade plans) lives in etcd instead.
//!
//! Schema 2 keys phase records by workflow. A schema-1 journal (one flat `phases` map, no
//! `schemaVersion`, as written before workflows existed) is read and migrated in place: its
//! phases become the `init` workflow's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::files::{write_atomic, PUBLIC};
use crate::release::ReleaseId;

pub const SCHEMA_VERSION: u32 = 2;

pub use crate::phase::Phase;

/// The workflows a node runs: `init` on the first node, `join` on the others, `upgrade` to
/// move to a newer release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowKind {
    Init,
    Join,
    Upgrade,
}

impl WorkflowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowKind::Init => "init",
            WorkflowKind::Join => "join",
            WorkflowKind::Upgrade => "upgrade",
        }
    }
}

impl fmt::Display for WorkflowKind {
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
    /// Left out on the operator's request (`--skip-phases`).
    Skipped,
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
    /// The bundle file verified; absent for a release read from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The registry a release was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    pub size: u64,
    pub modified_unix_nanos: u128,
}

impl VerifiedBundle {
    /// The release this bundle carries, when its version is semver (every bundle built since
    /// versions became semver; an older journal's free-form version yields `None`).
    pub fn release(&self) -> Option<ReleaseId> {
        Some(ReleaseId {
            name: self.name.clone(),
            version: self.version.parse().ok()?,
            index_sha256: self.index_sha256.parse().ok()?,
        })
    }
}

/// One workflow's progress on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRecord {
    #[serde(default)]
    pub phases: BTreeMap<Phase, PhaseRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<VerifiedBundle>,
    #[serde(default)]
    pub workflows: BTreeMap<WorkflowKind, WorkflowRecord>,
    /// While an upgrade is under way: the release the node ran before it (the journal's
    /// `bundle` names the new one once it verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_release: Option<ReleaseId>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            schema_version: SCHEMA_VERSION,
            installation: None,
            node: None,
            bundle: None,
            workflows: BTreeMap::new(),
            previous_release: None,
        }
    }
}

/// Schema 1, exactly as it was written: kept only to read and migrate.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JournalV1 {
    #[serde(default)]
    installation: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    bundle: Option<VerifiedBundle>,
    #[serde(default)]
    phases: BTreeMap<Phase, PhaseRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {} is not valid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal {} has schema version {found}; this airgap reads up to {SCHEMA_VERSION}: use a newer airgap", path.display())]
    Newer { path: PathBuf, found: u64 },
}

/// How a load went: the journal, and whether it was migrated from an older schema (and so
/// should be saved back).
#[derive(Debug)]
pub struct Loaded {
    pub journal: Journal,
    pub migrated_from: Option<u32>,
}

impl Journal {
    /// Loads the journal, migrating an older schema in memory; a root never installed into
    /// has an empty one.
    pub fn load(path: &Path) -> Result<Loaded, JournalError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    journal: Journal::default(),
                    migrated_from: None,
                })
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let parse = |source| JournalError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
        match value.get("schemaVersion").and_then(|v| v.as_u64()) {
            None => {
                let v1: JournalV1 = serde_json::from_value(value).map_err(parse)?;
                let mut workflows = BTreeMap::new();
                if !v1.phases.is_empty() {
                    workflows.insert(WorkflowKind::Init, WorkflowRecord { phases: v1.phases });
                }
                Ok(Loaded {
                    journal: Journal {
                        schema_version: SCHEMA_VERSION,
                        installation: v1.installation,
                        node: v1.node,
                        bundle: v1.bundle,
                        workflows,
                        previous_release: None,
                    },
                    migrated_from: Some(1),
                })
            }
            Some(v) if v == SCHEMA_VERSION as u64 => Ok(Loaded {
                journal: serde_json::from_value(value).map_err(parse)?,
                migrated_from: None,
            }),
            Some(found) => Err(JournalError::Newer {
                path: path.to_path_buf(),
                found,
            }),
        }
    }

    /// Loads, and writes a migrated journal back in the current schema.
    pub fn load_migrating(path: &Path) -> Result<Journal, JournalError> {
        let loaded = Journal::load(path)?;
        if loaded.migrated_from.is_some() {
            loaded.journal.save(path)?;
        }
        Ok(loaded.journal)
    }

    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| JournalError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, PUBLIC).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn workflow(&self, kind: WorkflowKind) -> Option<&WorkflowRecord> {
        self.workflows.get(&kind)
    }

    pub fn state(&self, kind: WorkflowKind, phase: Phase) -> Option<PhaseState> {
        self.workflow(kind)
            .and_then(|w| w.phases.get(&phase))
            .map(|r| r.state)
    }

    /// Starts workflow `kind` afresh (a new upgrade), remembering the release it moves from.
    pub fn start_workflow(&mut self, kind: WorkflowKind, previous: ReleaseId) {
        self.workflows.remove(&kind);
        self.previous_release = Some(previous);
    }

    pub fn record(&mut self, kind: WorkflowKind, phase: Phase, record: PhaseRecord) {
        self.workflows
            .entry(kind)
            .or_default()
            .phases
            .insert(phase, record);
    }

    /// Whether workflow `kind` ran to its end: its last phase of `phases` is done (or skipped
    /// on request) and no phase of it is left running or failed.
    ///
    /// A phase the record does not name at all, while the last one is done, did not exist when
    /// the workflow ran: the runner journals every phase in order, so a run that reached the
    /// end recorded each phase it had. A node installed by an earlier airgap (before the `time`
    /// phase, say) is still installed, and an upgrade it finished is still finished.
    pub fn is_complete(&self, kind: WorkflowKind, phases: &[Phase]) -> bool {
        let finished = |p: &Phase| {
            matches!(
                self.state(kind, *p),
                Some(PhaseState::Done | PhaseState::Skipped)
            )
        };
        phases.last().is_some_and(finished)
            && phases
                .iter()
                .all(|p| self.state(kind, *p).is_none() || finished(p))
    }

    /// The release this node was installed from, as the journal recorded it.
    pub fn release(&self) -> Option<ReleaseId> {
        self.bundle.as_ref().and_then(VerifiedBundle::release)
    }
}

/// `time` as RFC 3339, UTC, seconds.
pub fn rfc3339(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal written by the schema-1 code (commit 07cdc58) after an install that
    /// stopped at the etcd phase: verify and pki done, etcd failed.
    const V1: &str = include_str!("testdata/journal-v1.json");

    #[test]
    fn a_v1_journal_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(&path, V1).unwrap();
        let loaded = Journal::load(&path).unwrap();
        assert_eq!(loaded.migrated_from, Some(1));
        let j = &loaded.journal;
        assert_eq!(j.schema_version, SCHEMA_VERSION);
        assert_eq!(j.installation.as_deref(), Some("mgmt"));
        assert_eq!(j.node.as_deref(), Some("node1"));
        assert_eq!(
            j.state(WorkflowKind::Init, Phase::Verify),
            Some(PhaseState::Done)
        );
        assert_eq!(
            j.state(WorkflowKind::Init, Phase::Etcd),
            Some(PhaseState::Failed)
        );
        assert_eq!(j.state(WorkflowKind::Join, Phase::Verify), None);
        let release = j.release().unwrap();
        assert_eq!(release.version, semver::Version::new(4, 5, 0));
        assert_eq!(release.name, "mgmt-plane");

        // Written back in schema 2, which then loads as is, with nothing lost.
        let migrated = Journal::load_migrating(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"schemaVersion\": 2"), "{text}");
        assert!(text.contains("\"workflows\""), "{text}");
        let again = Journal::load(&path).unwrap();
        assert_eq!(again.migrated_from, None);
        assert_eq!(again.journal, migrated);
        assert_eq!(
            again
                .journal
                .workflow(WorkflowKind::Init)
                .unwrap()
                .phases
                .len(),
            3
        );
    }

    #[test]
    fn a_newer_schema_or_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(&path, r#"{"schemaVersion": 9}"#).unwrap();
        let err = Journal::load(&path).unwrap_err();
        assert!(matches!(err, JournalError::Newer { found: 9, .. }), "{err}");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Journal::load(&path).unwrap_err(),
            JournalError::Parse { .. }
        ));
        let missing = Journal::load(&dir.path().join("none.json")).unwrap();
        assert_eq!(missing.journal, Journal::default());
    }

    #[test]
    fn a_workflow_recorded_before_a_phase_existed_is_still_complete() {
        let done = |j: &mut Journal, p: Phase| {
            j.record(
                WorkflowKind::Init,
                p,
                PhaseRecord {
                    state: PhaseState::Done,
                    at: "t".into(),
                    detail: None,
                },
            )
        };
        let new = Phase::from_name("added-later");
        let phases = [Phase::Verify, new, Phase::Etcd, Phase::Platform];
        let mut j = Journal::default();
        // Written by an airgap that had no `added-later`: every phase it knew is done.
        for p in [Phase::Verify, Phase::Etcd, Phase::Platform] {
            done(&mut j, p);
        }
        assert!(j.is_complete(WorkflowKind::Init, &phases));
        // A run that stopped before the end is not complete, whatever it skipped past.
        let mut stopped = Journal::default();
        done(&mut stopped, Phase::Verify);
        assert!(!stopped.is_complete(WorkflowKind::Init, &phases));
        // Nor is a re-run left in the middle of a phase.
        j.record(
            WorkflowKind::Init,
            Phase::Etcd,
            PhaseRecord {
                state: PhaseState::Running,
                at: "t".into(),
                detail: None,
            },
        );
        assert!(!j.is_complete(WorkflowKind::Init, &phases));
        assert!(!Journal::default().is_complete(WorkflowKind::Init, &[]));
    }
}
