//! The upgrade plan, in etcd (`/airgap/cluster/upgrade-plan`): which release the cluster moves
//! from and to, and for each node, in install.yaml's order, its state and the steps it has
//! completed. Every change is a compare-and-swap on the plan's revision, so two nodes racing
//! see one winner, and any node can show it (`airgap upgrade status`).
//!
//! Nodes roll one at a time: a node may start only when every node before it is done and no
//! other is upgrading; a node that fails is rolled back and stays `failed` in the plan (the
//! upgrade stops there until it is re-run, or replaced by an upgrade to another release while
//! no node has moved). A step is recorded when it completes, once: a re-run
//! after SIGKILL repeats the interrupted phase (phases are idempotent) but never lists a step
//! twice.

use serde::{Deserialize, Serialize};

use crate::etcd::client::{EtcdClient, EtcdError};
use crate::journal::Phase;
use crate::release::ReleaseId;
use etcd::{Compare, Op};

pub const PLAN_KEY: &str = "/airgap/cluster/upgrade-plan";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradePlan {
    pub from: ReleaseId,
    pub to: ReleaseId,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePlan {
    pub name: String,
    pub state: NodeState,
    /// Completed steps, in the order they completed; each at most once.
    pub steps: Vec<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    Pending,
    Upgrading,
    Done,
    Failed,
}

impl NodeState {
    /// The name in the plan's JSON, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Upgrading => "upgrading",
            NodeState::Done => "done",
            NodeState::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("an upgrade from {from} to {to} is under way in this cluster; finish it (`airgap upgrade status` shows where it stands) before starting another")]
    OtherUnderWay { from: String, to: String },
    #[error("{node} is upgraded only after {before} ({state}): nodes roll one at a time, in install.yaml's order; run the upgrade on {before} first")]
    NotYourTurn {
        node: String,
        before: String,
        state: String,
    },
    #[error("{other} is upgrading now; nodes roll one at a time")]
    Busy { other: String },
    #[error("the upgrade plan no longer moves the cluster to {to}: another upgrade replaced it")]
    Replaced { to: String },
    #[error("{node} is not in the upgrade plan")]
    UnknownNode { node: String },
    #[error("the upgrade plan in etcd is not valid")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

impl UpgradePlan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodePlan, PlanError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| PlanError::UnknownNode {
                node: name.to_string(),
            })
    }

    pub fn complete(&self) -> bool {
        self.nodes.iter().all(|n| n.state == NodeState::Done)
    }
}

/// The plan and the revision it was read at.
pub async fn read(etcd: &EtcdClient) -> Result<Option<(UpgradePlan, i64)>, PlanError> {
    match etcd.get(PLAN_KEY).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((
            serde_json::from_slice(&kv.value).map_err(PlanError::Json)?,
            kv.mod_revision,
        ))),
    }
}

/// Changes the plan with `change` under compare-and-swap, retrying on a concurrent write.
/// `change` sees `None` when there is no plan; it returns the new plan (or an error, leaving
/// etcd unchanged).
async fn update<F>(etcd: &EtcdClient, mut change: F) -> Result<UpgradePlan, PlanError>
where
    F: FnMut(Option<UpgradePlan>) -> Result<UpgradePlan, PlanError>,
{
    loop {
        let current = read(etcd).await?;
        let revision = current.as_ref().map(|(_, r)| *r);
        let next = change(current.map(|(p, _)| p))?;
        let bytes = serde_json::to_vec(&next).map_err(PlanError::Json)?;
        let compare = match revision {
            Some(r) => Compare::ModRevision(PLAN_KEY.into(), r),
            None => Compare::Absent(PLAN_KEY.into()),
        };
        if etcd
            .txn(&[compare], &[Op::Put(PLAN_KEY.into(), bytes)])
            .await?
        {
            return Ok(next);
        }
    }
}

/// Starts (or rejoins) the plan from `from` to `to` over `nodes`, and claims `node`'s turn:
/// refused while another upgrade is unfinished, while an earlier node is not done, or while
/// another node is upgrading.
pub async fn claim(
    etcd: &EtcdClient,
    from: &ReleaseId,
    to: &ReleaseId,
    nodes: &[String],
    node: &str,
) -> Result<UpgradePlan, PlanError> {
    update(etcd, |current| {
        let mut plan = match current {
            Some(p) if p.to == *to => p,
            // Unfinished, and some node moved (or is moving) to its release: it must be
            // finished first. A plan whose nodes were all rolled back or never started moved
            // nothing, and gives way to a new one.
            Some(p)
                if !p.complete()
                    && p.nodes
                        .iter()
                        .any(|n| matches!(n.state, NodeState::Done | NodeState::Upgrading)) =>
            {
                return Err(PlanError::OtherUnderWay {
                    from: p.from.to_string(),
                    to: p.to.to_string(),
                })
            }
            _ => UpgradePlan {
                from: from.clone(),
                to: to.clone(),
                nodes: nodes
                    .iter()
                    .map(|n| NodePlan {
                        name: n.clone(),
                        state: NodeState::Pending,
                        steps: Vec::new(),
                        error: None,
                    })
                    .collect(),
            },
        };
        for other in &plan.nodes {
            if other.name == node {
                break;
            }
            if other.state != NodeState::Done {
                return Err(PlanError::NotYourTurn {
                    node: node.to_string(),
                    before: other.name.clone(),
                    state: other.state.as_str().to_string(),
                });
            }
        }
        if let Some(busy) = plan
            .nodes
            .iter()
            .find(|n| n.name != node && n.state == NodeState::Upgrading)
        {
            return Err(PlanError::Busy {
                other: busy.name.clone(),
            });
        }
        let entry = plan.node_mut(node)?;
        if entry.state != NodeState::Done {
            entry.state = NodeState::Upgrading;
            entry.error = None;
        }
        Ok(plan)
    })
    .await
}

/// Records that `node` completed `step` (once).
pub async fn step_done(etcd: &EtcdClient, node: &str, step: Phase) -> Result<(), PlanError> {
    update(etcd, |current| {
        let mut plan = current.ok_or_else(|| PlanError::UnknownNode {
            node: node.to_string(),
        })?;
        let entry = plan.node_mut(node)?;
        if !entry.steps.contains(&step) {
            entry.steps.push(step);
        }
        Ok(plan)
    })
    .await
    .map(drop)
}

/// How a node's upgrade ended, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    Done,
    /// Failed; the note (what failed, and whether the node was rolled back) is what
    /// `upgrade status` shows every node.
    Failed {
        note: String,
    },
}

/// Marks `node` done, or failed with its note, in the plan to `to` (idempotent: a node already
/// marked so is written again unchanged).
pub async fn finish(
    etcd: &EtcdClient,
    node: &str,
    to: &ReleaseId,
    outcome: NodeOutcome,
) -> Result<UpgradePlan, PlanError> {
    update(etcd, |current| {
        let mut plan = current.ok_or_else(|| PlanError::UnknownNode {
            node: node.to_string(),
        })?;
        if plan.to != *to {
            return Err(PlanError::Replaced { to: to.to_string() });
        }
        let entry = plan.node_mut(node)?;
        match &outcome {
            NodeOutcome::Done => {
                entry.state = NodeState::Done;
                entry.error = None;
            }
            NodeOutcome::Failed { note } => {
                entry.state = NodeState::Failed;
                entry.error = Some(note.clone());
            }
        }
        Ok(plan)
    })
    .await
}
