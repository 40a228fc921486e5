//! Cluster membership as an operator sees it (`airgap status` on an HA node) and changes it
//! (`airgap node remove`): etcd members with their health, the VIP holder, and how many
//! blobs each node's registry still lacks.

use std::time::Duration;

use serde::Serialize;

use super::vip::VIP_HOLDER_KEY;
use super::ClusterError;
use crate::config::InstallConfig;
use crate::etcd::client::EtcdClient;
use crate::etcd::{url, CLIENT_PORT, PEER_PORT};
use crate::layout::NodeLayout;

/// Where each node's registry reports its replication (`registry serve --replica-report`).
pub const REPLICA_PREFIX: &str = "/airgap/cluster/registry-replicas/";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub name: String,
    pub address: String,
    /// An etcd member (started or not); false for a node of install.yaml not (yet) in etcd.
    pub member: bool,
    pub learner: bool,
    pub healthy: bool,
    /// Blobs the catalog names that this node's registry does not hold yet, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_missing: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub vip: String,
    pub vip_holder: Option<String>,
    /// Whether this node's interface carries the VIP now.
    pub vip_here: bool,
    /// This node carries the VIP without holding the claim: two nodes may answer for it (the
    /// cluster service removes it on its next tick; while it runs this is never for long).
    pub vip_without_claim: bool,
    pub members: Vec<MemberView>,
}

#[derive(serde::Deserialize)]
struct ReplicaReport {
    missing: u64,
}

/// The cluster as this node's etcd (through quorum) sees it; each member's health is asked of
/// the member itself, a second at most each.
pub async fn view(
    layout: &NodeLayout,
    config: &InstallConfig,
    this: &crate::config::Node,
    etcd: &EtcdClient,
) -> Result<ClusterView, ClusterError> {
    let members = etcd.member_list().await?;
    let holder = etcd
        .get(VIP_HOLDER_KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    let (replicas, _) = etcd.range_prefix(REPLICA_PREFIX).await?;
    let mut out = Vec::new();
    for node in &config.spec.nodes {
        let peer = url(node.address, PEER_PORT);
        let member = members.iter().find(|m| m.peer_urls.contains(&peer));
        let healthy = match member {
            Some(m) if !m.name.is_empty() => {
                match crate::etcd::client::for_node(layout, &url(node.address, CLIENT_PORT)) {
                    Ok(client) => tokio::time::timeout(Duration::from_secs(2), client.health())
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        let registry_missing = replicas
            .iter()
            .find(|(k, _)| k.strip_prefix(REPLICA_PREFIX) == Some(node.name.as_str()))
            .and_then(|(_, v)| serde_json::from_slice::<ReplicaReport>(v).ok())
            .map(|r| r.missing);
        out.push(MemberView {
            name: node.name.to_string(),
            address: node.address.to_string(),
            member: member.is_some(),
            learner: member.is_some_and(|m| m.is_learner),
            healthy,
            registry_missing,
        });
    }
    let vip_here = config.spec.vip.is_some_and(|vip| {
        super::vip::interface_of(this.address)
            .is_some_and(|interface| super::vip::carries(&interface, vip))
    });
    Ok(ClusterView {
        vip: config.spec.vip.map(|v| v.to_string()).unwrap_or_default(),
        vip_without_claim: vip_here && holder.as_deref() != Some(this.name.as_str()),
        vip_here,
        vip_holder: holder,
        members: out,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{0} is not a node of this cluster (install.yaml names {1})")]
    UnknownNode(String, String),
    #[error("{0} is this node; run `airgap node remove` on another member")]
    SelfRemoval(String),
    #[error("{0} is not an etcd member (already removed)")]
    NotMember(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::client::EtcdError),
}

/// Removes node `name` from the cluster: its etcd membership, its claim on the VIP and its
/// registry replica report. A replacement then joins with a new token.
pub async fn remove(
    config: &InstallConfig,
    this_node: &str,
    etcd: &EtcdClient,
    name: &str,
) -> Result<(), RemoveError> {
    let names = config
        .spec
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let node = config
        .node(name)
        .ok_or_else(|| RemoveError::UnknownNode(name.to_string(), names))?;
    if name == this_node {
        return Err(RemoveError::SelfRemoval(name.to_string()));
    }
    let peer = url(node.address, PEER_PORT);
    let member = etcd
        .member_list()
        .await?
        .into_iter()
        .find(|m| m.peer_urls.contains(&peer))
        .ok_or_else(|| RemoveError::NotMember(name.to_string()))?;
    etcd.member_remove(member.id).await?;
    if let Some(kv) = etcd.get(VIP_HOLDER_KEY).await? {
        if kv.value == name.as_bytes() {
            etcd.txn(
                &[etcd::Compare::ModRevision(
                    VIP_HOLDER_KEY.into(),
                    kv.mod_revision,
                )],
                &[etcd::Op::Delete(VIP_HOLDER_KEY.into())],
            )
            .await?;
        }
    }
    etcd.delete(&format!("{REPLICA_PREFIX}{name}")).await?;
    etcd.delete(&format!("{}{name}", super::join_api::LEARNERS_PREFIX))
        .await?;
    Ok(())
}
