//! etcd on the node: its member configuration (client and peer TLS, client certificates
//! required, TLS 1.2 cipher suites only) and the client the installer talks to it with. Its
//! binary comes from [`crate::node_binaries`].

pub mod auth;
pub mod client;

use std::net::IpAddr;
use std::path::Path;

use crate::layout::NodeLayout;
use crate::service::ServiceSpec;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// One etcd member of the cluster. A standalone install and the first HA node found the
/// cluster alone; the other HA nodes join it with the membership the cluster gave them.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    pub name: String,
    pub address: IpAddr,
    /// `name=https://addr:2380` for every member, this one included.
    pub initial_cluster: Vec<(String, IpAddr)>,
    pub cluster_token: String,
    /// Joining a running cluster (`--initial-cluster-state existing`) rather than founding it.
    pub existing: bool,
    /// One of an HA cluster's members on one LAN: raft timed for it (see [`HA_TIMING`]).
    pub ha: bool,
}

/// Raft timing of HA members (heartbeat, election timeout, milliseconds). etcd's defaults
/// (100, 1000) are sized for members across data centres; three nodes of one cluster share a
/// LAN, where 500 ms still covers fifty round trips. A dead leader is then replaced within
/// about a second (two at worst, when the first ballot fails), which is what lets the VIP,
/// whose takeover needs a leader, move within 3 s (`cluster::vip`). etcd's rule of an
/// election timeout of at least five heartbeats holds.
pub const HA_TIMING: (u32, u32) = (100, 500);

pub fn url(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        url(self.address, CLIENT_PORT)
    }

    pub fn service(&self, layout: &NodeLayout, program: &Path) -> ServiceSpec {
        let pki = layout.etcd_pki_dir();
        let p = |f: &str| pki.join(f).display().to_string();
        let client = self.client_url();
        let peer = url(self.address, PEER_PORT);
        let cluster = self
            .initial_cluster
            .iter()
            .map(|(name, addr)| format!("{name}={}", url(*addr, PEER_PORT)))
            .collect::<Vec<_>>()
            .join(",");
        let args = [
            ("--name", self.name.clone()),
            ("--data-dir", layout.etcd_data().display().to_string()),
            ("--listen-client-urls", client.clone()),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", peer.clone()),
            ("--initial-advertise-peer-urls", peer),
            ("--initial-cluster", cluster),
            ("--initial-cluster-token", self.cluster_token.clone()),
            (
                "--initial-cluster-state",
                if self.existing { "existing" } else { "new" }.into(),
            ),
            ("--client-cert-auth", "true".into()),
            ("--trusted-ca-file", p("ca.crt")),
            ("--cert-file", p("server.crt")),
            ("--key-file", p("server.key")),
            ("--peer-client-cert-auth", "true".into()),
            ("--peer-trusted-ca-file", p("ca.crt")),
            ("--peer-cert-file", p("peer.crt")),
            ("--peer-key-file", p("peer.key")),
            ("--cipher-suites", crate::tls::CIPHER_SUITES.into()),
            ("--snapshot-count", "10000".into()),
        ];
        let mut args: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if self.ha {
            args.push(format!("--heartbeat-interval={}", HA_TIMING.0));
            args.push(format!("--election-timeout={}", HA_TIMING.1));
        }
        ServiceSpec {
            name: "etcd".into(),
            program: program.to_path_buf(),
            args,
            env: Default::default(),
        }
    }
}
