//! A test hook that parks the installer at a named point, so a test can SIGKILL it exactly
//! there and prove the re-run repairs and completes.

use std::time::Duration;

use crate::phase::Phase;

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
            Some(phase) => Some((Phase::from_name(phase), FailpointAt::After)),
            None => Some((Phase::from_name(spec), FailpointAt::Inside)),
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
    pub(crate) fn passed(&self, phase: Phase) {
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
