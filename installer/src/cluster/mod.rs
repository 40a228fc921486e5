//! The HA cluster: three nodes, one etcd, a VIP that follows the healthy ones.
//!
//! * [`token`]: join tokens (hashed in etcd, expiring, counted).
//! * [`certificate_key`]: the operator-held key the shared control-plane keys are sealed
//!   under while they wait for joining nodes.
//! * [`pin`]: the CA pin a token carries and the TLS verifier that enforces it.
//! * [`protocol`], [`join_api`] (server, on every node) and [`join`] (the joining node):
//!   how a node becomes a member without anyone copying keys by hand.
//! * [`vip`] and [`garp`]: the VIP election through an etcd lease.
//! * [`members`]: membership as `status` shows it and `node remove` changes it.
//!
//! [`serve`] is the agent's `cluster` service on an HA node: the join API and the VIP
//! election in one process, restarted by the agent like etcd and the registry.

pub mod certificate_key;
pub mod garp;
pub mod join;
pub mod join_api;
pub mod members;
pub mod pin;
pub mod protocol;
pub mod token;
pub mod vip;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{local_addresses, InstallConfig, Topology};
use crate::journal::Journal;
use crate::layout::NodeLayout;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] registry_server::ServeError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("this node is not installed in HA mode (spec.mode: ha)")]
    NotHa,
    #[error("the node's interface for {0} was not found")]
    NoInterface(std::net::IpAddr),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::client::EtcdError),
    #[error(transparent)]
    Token(#[from] token::TokenError),
}

/// The installed node under `layout`: its configuration and which node it is.
pub fn installed(
    layout: &NodeLayout,
) -> Result<(InstallConfig, crate::config::Node), ClusterError> {
    let config = InstallConfig::load(&layout.install_yaml())?;
    let journal = Journal::load(&layout.journal())?.journal;
    let node = config
        .installed_node(journal.node.as_deref(), &local_addresses())?
        .clone();
    Ok((config, node))
}

/// The etcd client of the installed node under `layout`: its own member first, the other
/// members of `config` when it cannot be reached (restarting during an upgrade, down).
pub fn etcd_of(
    layout: &NodeLayout,
    config: &InstallConfig,
    node: &crate::config::Node,
) -> Result<crate::etcd::client::EtcdClient, crate::etcd::client::EtcdError> {
    let others: Vec<String> = config
        .spec
        .nodes
        .iter()
        .filter(|n| n.name != node.name)
        .map(|n| crate::etcd::url(n.address, crate::etcd::CLIENT_PORT))
        .collect();
    Ok(crate::etcd::client::for_node(
        layout,
        &crate::etcd::url(node.address, crate::etcd::CLIENT_PORT),
    )?
    .with_fallbacks(crate::etcd::client::fallbacks(&others)))
}

/// The `cluster` service: the join API and the VIP election, until killed. SIGTERM removes
/// the VIP before exiting, so a stopped node lets go at once instead of after the TTL.
pub async fn serve(layout: NodeLayout) -> Result<(), ClusterError> {
    let (config, node) = installed(&layout)?;
    let Topology::Ha { vip, .. } = config.topology()? else {
        return Err(ClusterError::NotHa);
    };
    // The other members too: the VIP holder keeps its lease while its own member restarts
    // (a rolling upgrade), and still only through quorum.
    let etcd = etcd_of(&layout, &config, &node)?;
    let interface =
        vip::interface_of(node.address).ok_or(ClusterError::NoInterface(node.address))?;
    let election = Arc::new(vip::VipElection {
        etcd: etcd.clone(),
        node: node.name.to_string(),
        vip,
        interface,
    });
    let api = Arc::new(join_api::JoinApi::new(layout, config, etcd));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ClusterError::Io {
            what: "installing a SIGTERM handler",
            path: PathBuf::from("-"),
            source,
        })?;
    let run_election = election.clone();
    tokio::select! {
        r = api.serve(node.address) => r,
        _ = run_election.run() => Ok(()),
        _ = term.recv() => {
            election.release().await;
            Ok(())
        }
    }
}
