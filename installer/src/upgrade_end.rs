//! The steps that end an upgrade on a node, once its phases moved it to the new release:
//! `finish` marks the node done in the upgrade plan, `trust` moves the cluster's trusted
//! release when every node runs the new one, `cleanup` removes the rollback snapshot.
//!
//! They are steps of the `upgrade` workflow like the phases before them (journaled, idempotent,
//! failpoints inside and after each), not a tail after the workflow: a run killed anywhere
//! among them left a journal that says which did not complete, and the next `airgap upgrade`
//! on the node completes them first, whatever release it was given. A failure among them
//! never rolls the node back: it already runs the new release; the hint is to run the same
//! command again.

use std::path::PathBuf;

use crate::audit::{AuditLog, Outcome};
use crate::error::PhaseError;
use crate::etcd::client::EtcdClient;
use crate::journal::{Journal, Phase, WorkflowKind};
use crate::release::{advance_trusted, Advanced, ReleaseId, TRUSTED_RELEASE_KEY};
use crate::upgrade_plan::{self, NodeState};
use crate::workflow::{Failpoint, PhaseBodies, Step, Workflow};

/// The bodies of the upgrade's end steps, and what they found.
pub struct UpgradeEnd {
    pub etcd: EtcdClient,
    pub node: String,
    pub from: ReleaseId,
    pub to: ReleaseId,
    /// The rollback snapshot (`var/lib/airgap/upgrade-rollback/`).
    pub snapshot: PathBuf,
    pub audit: AuditLog,
    pub failpoint: Failpoint,
    /// What `trust` did: `None` while other nodes still run the old release.
    pub advanced: Option<Advanced>,
    /// The node whose turn is next, from the plan `finish` wrote.
    pub next: Option<String>,
}

impl UpgradeEnd {
    /// Whether `journal` holds an upgrade whose node phases all completed but whose end did
    /// not (a run killed among the end steps, or an upgrade an earlier version of airgap left
    /// with its plan unfinished): the releases it moved from and to.
    pub fn pending(journal: &Journal) -> Option<(ReleaseId, ReleaseId)> {
        journal.workflow(WorkflowKind::Upgrade)?;
        let moved = journal.is_complete(WorkflowKind::Upgrade, &Workflow::upgrade_node_phases());
        let ended = journal.is_complete(WorkflowKind::Upgrade, &Phase::UPGRADE_END);
        if !moved || ended {
            return None;
        }
        Some((journal.previous_release.clone()?, journal.release()?))
    }

    async fn finish(&mut self) -> Result<String, PhaseError> {
        let plan = upgrade_plan::finish(
            &self.etcd,
            &self.node,
            &self.to,
            upgrade_plan::NodeOutcome::Done,
        )
        .await
        .map_err(PhaseError::Plan)?;
        self.failpoint.reached(Phase::Finish);
        self.next = plan
            .nodes
            .iter()
            .find(|n| n.state != NodeState::Done)
            .map(|n| n.name.clone());
        Ok(match &self.next {
            Some(next) => format!("{} done in the upgrade plan; next: {next}", self.node),
            None => format!("{} done; every node runs {}", self.node, self.to),
        })
    }

    async fn trust(&mut self) -> Result<String, PhaseError> {
        let plan = upgrade_plan::read(&self.etcd)
            .await
            .map_err(PhaseError::Plan)?
            .map(|(plan, _)| plan)
            .filter(|plan| plan.to == self.to)
            .ok_or_else(|| {
                PhaseError::Plan(upgrade_plan::PlanError::Replaced {
                    to: self.to.to_string(),
                })
            })?;
        if !plan.complete() {
            self.advanced = None;
            return Ok(format!(
                "the cluster trusts {} until every node runs {}",
                self.from, self.to
            ));
        }
        // Idempotent: a record that already names the new release is left as it is.
        let advanced = advance_trusted(&self.etcd, &self.from, &self.to).await?;
        self.audit.record(
            "release.trust",
            TRUSTED_RELEASE_KEY,
            match advanced {
                Advanced::Moved => Outcome::Done,
                Advanced::Already => Outcome::Unchanged,
            },
        );
        self.failpoint.reached(Phase::Trust);
        self.advanced = Some(advanced);
        Ok(format!("the cluster trusts {}", self.to))
    }

    fn cleanup(&mut self) -> Result<String, PhaseError> {
        self.failpoint.reached(Phase::Cleanup);
        match std::fs::remove_dir_all(&self.snapshot) {
            Ok(()) => Ok("rollback snapshot removed".into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok("no rollback snapshot left".into())
            }
            Err(e) => Err(PhaseError::io("removing", &self.snapshot)(e)),
        }
    }
}

impl PhaseBodies for UpgradeEnd {
    async fn run(
        &mut self,
        _workflow: WorkflowKind,
        step: Step,
        _journal: &mut Journal,
    ) -> Result<String, PhaseError> {
        match step.phase {
            Phase::Finish => self.finish().await,
            Phase::Trust => self.trust().await,
            Phase::Cleanup => self.cleanup(),
            other => Err(PhaseError::NotAPhaseOf(other)),
        }
    }
}

/// The whole upgrade workflow's bodies: the install phases for the node's own steps, then
/// [`UpgradeEnd`] for the steps that end it.
pub struct UpgradeBodies<'a, B> {
    pub phases: &'a mut B,
    pub end: &'a mut UpgradeEnd,
}

impl<B: PhaseBodies> PhaseBodies for UpgradeBodies<'_, B> {
    async fn run(
        &mut self,
        workflow: WorkflowKind,
        step: Step,
        journal: &mut Journal,
    ) -> Result<String, PhaseError> {
        if Phase::UPGRADE_END.contains(&step.phase) {
            self.end.run(workflow, step, journal).await
        } else {
            self.phases.run(workflow, step, journal).await
        }
    }
}
