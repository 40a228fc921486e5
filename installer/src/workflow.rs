//! Workflows of phases, and the one runner that executes them.
//!
//! A [`Workflow`] (`init`, `join`, `upgrade`) is a list of [`Step`]s; each step is a phase
//! with a [`Scope`]: cluster-scoped phases create shared state in `init` and only read or
//! receive it in `join`; node-scoped phases act on this node alone. The [`Runner`] does
//! what every step needs, once: the journal (running, done, failed, skipped), the audit
//! line, progress, `--skip-phases`; the phase bodies ([`PhaseBodies`]) only do their work.
//! Every phase is idempotent, so a re-run runs them all again and each converges: that is
//! how a run resumes after a failure at any step, even a SIGKILL.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::audit::{AuditLog, Outcome};
use crate::error::{chain, InstallError, PhaseError};
use crate::host::Host;
use crate::journal::{rfc3339, Journal, Phase, PhaseRecord, PhaseState, WorkflowKind};

/// Whether a phase acts on state the whole cluster shares or on this node only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub scope: Scope,
    /// A preflight step writes nothing until it succeeds (verification: nothing is trusted,
    /// so nothing is written, before it passed): the runner journals it only at its end.
    pub preflight: bool,
}

const fn step(phase: Phase, scope: Scope) -> Step {
    Step {
        phase,
        scope,
        preflight: false,
    }
}

const VERIFY: Step = Step {
    phase: Phase::Verify,
    scope: Scope::Node,
    preflight: true,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub kind: WorkflowKind,
    pub steps: Vec<Step>,
}

impl Workflow {
    /// The first node: creates the cluster.
    pub fn init() -> Self {
        Workflow {
            kind: WorkflowKind::Init,
            steps: vec![
                VERIFY,
                step(Phase::Pki, Scope::Cluster),
                step(Phase::Etcd, Scope::Node),
                step(Phase::Keys, Scope::Cluster),
                step(Phase::Registry, Scope::Node),
                step(Phase::Runtime, Scope::Node),
                step(Phase::Agent, Scope::Node),
                step(Phase::Kubernetes, Scope::Node),
                step(Phase::Platform, Scope::Cluster),
            ],
        }
    }

    /// Another node of an HA cluster: the same phases; cluster-scoped ones read or receive
    /// what `init` created, never create it.
    pub fn join() -> Self {
        Workflow {
            kind: WorkflowKind::Join,
            ..Workflow::init()
        }
    }

    /// A newer release: verified, published and seeded, then this node's binaries,
    /// services and configuration. PKI and installation keys are never touched.
    pub fn upgrade() -> Self {
        Workflow {
            kind: WorkflowKind::Upgrade,
            steps: vec![
                VERIFY,
                step(Phase::Registry, Scope::Cluster),
                step(Phase::Etcd, Scope::Node),
                step(Phase::Runtime, Scope::Node),
                step(Phase::Agent, Scope::Node),
                step(Phase::Kubernetes, Scope::Node),
                step(Phase::Platform, Scope::Cluster),
                step(Phase::Finish, Scope::Cluster),
                step(Phase::Trust, Scope::Cluster),
                step(Phase::Cleanup, Scope::Node),
            ],
        }
    }

    /// The steps that end an upgrade once the node runs the new release: its turn in the
    /// plan marked done, the trusted release moved when it was the last node, the rollback
    /// snapshot removed. Steps like the others, so a kill anywhere among them is finished by
    /// the next run; run alone to finish an upgrade interrupted there.
    pub fn upgrade_end() -> Self {
        let upgrade = Workflow::upgrade();
        Workflow {
            kind: WorkflowKind::Upgrade,
            steps: upgrade
                .steps
                .into_iter()
                .filter(|s| Phase::UPGRADE_END.contains(&s.phase))
                .collect(),
        }
    }

    /// The steps before [`Workflow::upgrade_end`]: what moves the node itself.
    pub fn upgrade_node_phases() -> Vec<Phase> {
        Workflow::upgrade()
            .phases()
            .into_iter()
            .filter(|p| !Phase::UPGRADE_END.contains(p))
            .collect()
    }

    pub fn phases(&self) -> Vec<Phase> {
        self.steps.iter().map(|s| s.phase).collect()
    }
}

/// Phases the operator asked to leave out (`--skip-phases etcd,registry`), as kubeadm has.
/// Verification can never be skipped: nothing may act on an unverified bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipSet(BTreeSet<Phase>);

impl SkipSet {
    pub fn parse(list: &str) -> Result<Self, InstallError> {
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let phase = Phase::parse(name)
                .ok_or_else(|| InstallError::Skip(format!("`{name}` is not a phase")))?;
            if Phase::UPGRADE_END.contains(&phase) {
                return Err(InstallError::Skip(format!(
                    "{phase} cannot be skipped: it ends an upgrade"
                )));
            }
            if phase == Phase::Verify {
                return Err(InstallError::Skip(
                    "verify cannot be skipped: nothing is installed from an unverified bundle"
                        .into(),
                ));
            }
            set.insert(phase);
        }
        Ok(SkipSet(set))
    }

    pub fn contains(&self, phase: Phase) -> bool {
        self.0.contains(&phase)
    }
}

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

/// A test hook: `AIRGAP_FAILPOINT=<phase>` parks the installer in the middle of that phase
/// (after it has written part of its work), `AIRGAP_FAILPOINT=after-<phase>` right after the
/// runner journaled the phase done and before the next one starts; either says so on stderr,
/// so a test can SIGKILL it at a known point and prove the re-run repairs and completes.
/// Read once per run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failpoint(Option<(Phase, FailpointAt)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailpointAt {
    Inside,
    After,
}

impl Failpoint {
    pub fn from_env() -> Self {
        Failpoint(
            std::env::var("AIRGAP_FAILPOINT")
                .ok()
                .and_then(|v| Failpoint::parse(&v)),
        )
    }

    fn parse(spec: &str) -> Option<(Phase, FailpointAt)> {
        match spec.strip_prefix("after-") {
            Some(phase) => Some((Phase::parse(phase)?, FailpointAt::After)),
            None => Some((Phase::parse(spec)?, FailpointAt::Inside)),
        }
    }

    /// Called by a phase where it has done part of its work.
    pub fn reached(&self, phase: Phase) {
        if self.0 == Some((phase, FailpointAt::Inside)) {
            Self::park(&format!("in phase {phase}"));
        }
    }

    /// A failpoint outside the phases, named `name` in `AIRGAP_FAILPOINT` (e.g. the join's
    /// `join-answered`: the cluster said yes and nothing is written yet).
    pub fn reached_named(name: &str) {
        if std::env::var("AIRGAP_FAILPOINT").is_ok_and(|v| v == name) {
            Self::park(&format!("at {name}"));
        }
    }

    /// Called by the runner once `phase` is journaled done.
    fn passed(&self, phase: Phase) {
        if self.0 == Some((phase, FailpointAt::After)) {
            Self::park(&format!("after phase {phase}"));
        }
    }

    fn park(at: &str) {
        eprintln!("failpoint: paused {at}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
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
                    return Err(InstallError::Phase { phase, source });
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
                "verify pki etcd keys registry runtime agent kubernetes platform",
            ),
            (
                Workflow::join(),
                "verify pki etcd keys registry runtime agent kubernetes platform",
            ),
            (
                Workflow::upgrade(),
                "verify registry etcd runtime agent kubernetes platform finish trust cleanup",
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
        let skip = SkipSet::parse("registry, kubernetes").unwrap();
        let workflow = Workflow::init();
        f.run(&host, &workflow, &skip).unwrap();
        assert_eq!(
            ran(&host),
            ["verify", "pki", "etcd", "keys", "runtime", "agent", "platform"]
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
            let err = SkipSet::parse(bad).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.hint().is_some_and(|h| h.0.contains("pki,etcd")));
        }
        assert_eq!(SkipSet::parse("").unwrap(), SkipSet::default());
    }
}
