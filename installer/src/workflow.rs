//! Workflows of phases, and the one runner that executes them.
//!
//! A [`Workflow`] (`init`, `join`, `upgrade`) is a list of [`Step`]s; each step is a phase
//! with a [`Scope`]: cluster-scoped phases create shared state in `init` and only read or
//! receive it in `join`; node-scoped phases act on this node alone. The [`Runner`] does
//! what every step needs, once: the journal (running, done, failed, skipped), the audit
//! line, progress, `--skip-phases`; the phase bodies ([`PhaseBodies`]) only do their work.
//! Every phase is idempotent, so a re-run runs them all again and each converges: that is
//! how a run resumes after a failure at any step, even a SIGKILL.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::audit::{AuditLog, Outcome};
use crate::error::{InstallError, PhaseError};
use crate::host::Host;
use crate::journal::{rfc3339, Journal, Phase, PhaseRecord, PhaseState, WorkflowKind};
use airgap::error_chain::chain;

pub use crate::failpoint::Failpoint;
pub use crate::phase::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub scope: Scope,
    /// A preflight step writes nothing until it succeeds (verification: nothing is trusted,
    /// so nothing is written, before it passed): the runner journals it only at its end.
    pub preflight: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub kind: WorkflowKind,
    pub steps: Vec<Step>,
}

/// The constructors (`init`, `join`, `upgrade`, `upgrade_end`) read the phase catalogue: see
/// [`crate::phases::CATALOGUE`].
impl Workflow {
    pub fn phases(&self) -> Vec<Phase> {
        self.steps.iter().map(|s| s.phase).collect()
    }
}

pub use crate::phase::{SkipError, SkipProblem, SkipSet};

/// Progress callbacks for the CLI.
pub trait Observer: Send + Sync {
    fn phase_started(&self, _phase: Phase) {}
    fn phase_finished(&self, _phase: Phase, _summary: &str, _elapsed: Duration) {}
    fn phase_skipped(&self, _phase: Phase) {}
    fn bytes_total(&self, _what: &'static str, _total: u64) {}
    fn bytes_done(&self, _n: u64) {}
    fn bytes_finished(&self) {}
}

pub struct Silent;
impl Observer for Silent {}

/// The work of each phase, run by the [`Runner`] in a workflow's order.
pub trait PhaseBodies {
    /// Runs one phase; returns its one-line summary for the journal, the audit log and the
    /// operator.
    fn run(
        &mut self,
        workflow: WorkflowKind,
        step: Step,
        journal: &mut Journal,
    ) -> impl Future<Output = Result<String, PhaseError>>;
}

/// Runs a workflow's steps in order, journaling each.
pub struct Runner<'a> {
    pub journal: &'a mut Journal,
    pub journal_path: &'a Path,
    pub audit: &'a AuditLog,
    pub observer: &'a dyn Observer,
    pub host: &'a dyn Host,
    pub skip: &'a SkipSet,
    pub failpoint: Failpoint,
}

impl Runner<'_> {
    fn mark(
        &mut self,
        workflow: WorkflowKind,
        phase: Phase,
        state: PhaseState,
        detail: Option<String>,
    ) -> Result<(), InstallError> {
        self.journal.record(
            workflow,
            phase,
            PhaseRecord {
                state,
                at: rfc3339(self.host.now()),
                detail,
            },
        );
        Ok(self.journal.save(self.journal_path)?)
    }

    pub async fn run<B: PhaseBodies>(
        &mut self,
        workflow: &Workflow,
        bodies: &mut B,
    ) -> Result<(), InstallError> {
        let kind = workflow.kind;
        for &step in &workflow.steps {
            let phase = step.phase;
            let action = format!("phase.{phase}");
            if self.skip.contains(phase) {
                self.mark(
                    kind,
                    phase,
                    PhaseState::Skipped,
                    Some("skipped on request".into()),
                )?;
                self.audit
                    .record_with(&action, kind.as_str(), Outcome::Skipped, None);
                self.observer.phase_skipped(phase);
                continue;
            }
            self.observer.phase_started(phase);
            if !step.preflight {
                self.mark(kind, phase, PhaseState::Running, None)?;
            }
            let started = Instant::now();
            match bodies.run(kind, step, self.journal).await {
                Ok(summary) => {
                    self.mark(kind, phase, PhaseState::Done, Some(summary.clone()))?;
                    self.audit
                        .record_with(&action, kind.as_str(), Outcome::Done, Some(&summary));
                    self.observer
                        .phase_finished(phase, &summary, started.elapsed());
                    self.failpoint.passed(phase);
                }
                Err(source) => {
                    if !step.preflight {
                        let cause = chain(&source);
                        // The failure itself is what the operator needs; a journal that
                        // cannot be written must not hide it.
                        let _ = self.mark(kind, phase, PhaseState::Failed, Some(cause.clone()));
                        self.audit.record_with(
                            &action,
                            kind.as_str(),
                            Outcome::Failed,
                            Some(&cause),
                        );
                    }
                    return Err(InstallError::Phase {
                        phase,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RecordingHost;
    use crate::layout::NodeLayout;

    /// Stand-in phase bodies: each "runs" a program named after its phase through the host,
    /// so the recording host sees the order and a failing program fails the phase.
    struct Recorded<'a> {
        host: &'a RecordingHost,
    }

    impl PhaseBodies for Recorded<'_> {
        async fn run(
            &mut self,
            workflow: WorkflowKind,
            step: Step,
            _journal: &mut Journal,
        ) -> Result<String, PhaseError> {
            let program = Path::new("/fake/bin").join(step.phase.as_str());
            let out = self
                .host
                .run(&program, &[workflow.as_str().to_string()])
                .map_err(PhaseError::io("running", &program))?;
            if out.status.success() {
                Ok(format!("{} done", step.phase))
            } else {
                Err(PhaseError::Injected("the host refused"))
            }
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        layout: NodeLayout,
        journal: Journal,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let layout = NodeLayout::new(dir.path());
            Fixture {
                _dir: dir,
                layout,
                journal: Journal::default(),
            }
        }

        fn run(
            &mut self,
            host: &RecordingHost,
            workflow: &Workflow,
            skip: &SkipSet,
        ) -> Result<(), InstallError> {
            let audit = AuditLog::new(&self.layout);
            let path = self.layout.journal();
            let mut runner = Runner {
                journal: &mut self.journal,
                journal_path: &path,
                audit: &audit,
                observer: &Silent,
                host,
                skip,
                failpoint: Failpoint::default(),
            };
            let mut bodies = Recorded { host };
            block_on(runner.run(workflow, &mut bodies))
        }
    }

    /// The runner's futures never wait on I/O in these tests: one poll loop is enough.
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn ran(host: &RecordingHost) -> Vec<String> {
        host.calls()
            .iter()
            .map(|c| {
                format!(
                    "{}:{}",
                    c.args[0],
                    c.program.file_name().unwrap().to_string_lossy()
                )
            })
            .collect()
    }

    #[test]
    fn each_workflow_runs_its_phases_in_order() {
        let expect = [
            (
                Workflow::init(),
                "verify pki time etcd keys registry runtime agent kubernetes platform",
            ),
            (
                Workflow::join(),
                "verify pki time etcd keys registry runtime agent kubernetes platform",
            ),
            (
                Workflow::upgrade(),
                "verify registry time etcd runtime agent kubernetes platform finish trust cleanup",
            ),
        ];
        for (workflow, order) in expect {
            let host = RecordingHost::new(&[]);
            let mut f = Fixture::new();
            f.run(&host, &workflow, &SkipSet::default()).unwrap();
            let want: Vec<String> = order
                .split(' ')
                .map(|p| format!("{}:{p}", workflow.kind))
                .collect();
            assert_eq!(ran(&host), want);
            assert!(f.journal.is_complete(workflow.kind, &workflow.phases()));
            // What the runner wrote is what a later run (or `status`) reads back.
            let saved = Journal::load(&f.layout.journal()).unwrap().journal;
            assert_eq!(saved, f.journal);
            let record = &saved.workflow(workflow.kind).unwrap().phases[&Phase::Verify];
            assert_eq!(record.at, "2027-01-15T08:00:00Z", "the host's clock");
        }
        // Scopes: what init creates for the cluster, join only reads.
        let cluster: Vec<Phase> = Workflow::join()
            .steps
            .iter()
            .filter(|s| s.scope == Scope::Cluster)
            .map(|s| s.phase)
            .collect();
        assert_eq!(cluster, [Phase::Pki, Phase::Keys, Phase::Platform]);
        assert!(!Workflow::upgrade().phases().contains(&Phase::Keys));
        assert!(!Workflow::upgrade().phases().contains(&Phase::Pki));
    }

    #[test]
    fn a_failure_at_each_step_stops_there_and_a_rerun_completes() {
        let workflow = Workflow::init();
        for (i, failing) in workflow.steps.iter().enumerate() {
            let host = RecordingHost::new(&[]);
            host.fail(failing.phase.as_str());
            let mut f = Fixture::new();
            let err = f.run(&host, &workflow, &SkipSet::default()).unwrap_err();
            assert_eq!(err.phase(), Some(failing.phase));
            assert_eq!(
                chain(&err),
                format!("phase {}: the host refused", failing.phase)
            );
            // Steps before it done, nothing after it started.
            assert_eq!(ran(&host).len(), i + 1);
            for (j, s) in workflow.steps.iter().enumerate() {
                let state = f.journal.state(workflow.kind, s.phase);
                let want = match j.cmp(&i) {
                    std::cmp::Ordering::Less => Some(PhaseState::Done),
                    std::cmp::Ordering::Equal if s.preflight => None,
                    std::cmp::Ordering::Equal => Some(PhaseState::Failed),
                    std::cmp::Ordering::Greater => None,
                };
                assert_eq!(
                    state, want,
                    "{} after a failure in {}",
                    s.phase, failing.phase
                );
            }
            if !failing.preflight {
                let detail = &f.journal.workflow(workflow.kind).unwrap().phases[&failing.phase];
                assert_eq!(detail.detail.as_deref(), Some("the host refused"));
            } else {
                // A failed verification leaves nothing behind: not even a journal.
                assert!(!f.layout.journal().exists());
            }

            // The re-run, with the host healed, runs every phase again (each converges) and
            // completes.
            host.heal();
            f.run(&host, &workflow, &SkipSet::default()).unwrap();
            assert!(f.journal.is_complete(workflow.kind, &workflow.phases()));
            assert_eq!(ran(&host).len(), i + 1 + workflow.steps.len());
        }
    }

    #[test]
    fn skipped_phases_are_not_run_and_are_journaled_as_skipped() {
        let host = RecordingHost::new(&[]);
        let mut f = Fixture::new();
        let workflow = Workflow::init();
        let skip = SkipSet::parse("registry, kubernetes", &workflow.phases()).unwrap();
        f.run(&host, &workflow, &skip).unwrap();
        assert_eq!(
            ran(&host),
            ["verify", "pki", "time", "etcd", "keys", "runtime", "agent", "platform"]
                .map(|p| format!("init:{p}"))
        );
        assert_eq!(
            f.journal.state(WorkflowKind::Init, Phase::Registry),
            Some(PhaseState::Skipped)
        );
        assert!(f.journal.is_complete(workflow.kind, &workflow.phases()));
        let audit = std::fs::read_to_string(f.layout.log_dir().join("audit.log")).unwrap();
        assert!(audit.contains("\"action\":\"phase.registry\"") && audit.contains("skipped"));

        for (bad, says) in [
            ("verify", "verify cannot be skipped"),
            ("etcd,regsitry", "`regsitry` is not a phase"),
        ] {
            let err = InstallError::from(SkipSet::parse(bad, &workflow.phases()).unwrap_err());
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.hint().is_some_and(|h| h.0.contains("pki,time,etcd")));
        }
        assert_eq!(
            SkipSet::parse("", &workflow.phases()).unwrap(),
            SkipSet::default()
        );
    }
}
