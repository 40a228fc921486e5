//! etcd on the node: its member configuration (client and peer TLS, client certificates
//! required, TLS 1.2 cipher suites only) and the client the installer talks to it with. Its
//! binary comes from [`crate::node_binaries`].

pub mod auth;
pub mod client;

use std::net::IpAddr;
use std::path::Path;

use crate::layout::NodeLayout;
use crate::service::ServiceSpec;

/// etcd's gRPC clients (kube-apiserver) and the URL members advertise.
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// The JSON gateway (`/v3/...`, `/health`) that airgap's own clients use, on a port of its
/// own: etcd 3.5+ then serves the client port as a plain gRPC server, which a stopping member
/// drains (HTTP/2 GOAWAY, in-flight calls finished) instead of cutting the calls under way,
/// so a member restarting in a roll costs its clients nothing. (2381 is kubeadm's metrics
/// port.) See [`GatewayListener`].
pub const GATEWAY_PORT: u16 = 2382;

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

/// How a member serves the JSON gateway on [`GATEWAY_PORT`], by the etcd it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayListener {
    /// etcd 3.4 and older, or a version that could not be read: one more client URL, which
    /// serves gRPC and HTTP as the client port does. etcd 3.4 serves gRPC over TLS through its
    /// HTTP server and stops the gRPC server first, so a call arriving while a member stops
    /// can be answered without gRPC framing; nothing on the client side avoids that.
    ClientUrl,
    /// etcd 3.5 and newer: `--listen-client-http-urls`, which leaves the client port to gRPC.
    HttpUrl,
}

impl GatewayListener {
    /// From what `etcd --version` prints (`etcd Version: 3.5.16`, first line).
    pub fn from_version_output(output: &str) -> Self {
        let version = output
            .lines()
            .find_map(|l| l.trim().strip_prefix("etcd Version:"))
            .map(str::trim);
        let mut numbers = version
            .unwrap_or("")
            .split('.')
            .map(|n| n.parse::<u32>().ok());
        match (numbers.next().flatten(), numbers.next().flatten()) {
            (Some(major), Some(minor)) if (major, minor) >= (3, 5) => GatewayListener::HttpUrl,
            _ => GatewayListener::ClientUrl,
        }
    }
}

/// The JSON gateway of the member whose client URL (as members advertise themselves, on
/// [`CLIENT_PORT`]) is `client_url`. A URL on another port is returned as it is.
pub fn gateway_of(client_url: &str) -> String {
    let url = client_url.trim_end_matches('/');
    match url.strip_suffix(&format!(":{CLIENT_PORT}")) {
        Some(host) => format!("{host}:{GATEWAY_PORT}"),
        None => url.to_string(),
    }
}

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

    /// Where airgap's own clients reach this member: its JSON gateway.
    pub fn gateway_url(&self) -> String {
        url(self.address, GATEWAY_PORT)
    }

    pub fn service(
        &self,
        layout: &NodeLayout,
        program: &Path,
        gateway: GatewayListener,
    ) -> ServiceSpec {
        let pki = layout.etcd_pki_dir();
        let p = |f: &str| pki.join(f).display().to_string();
        let client = self.client_url();
        let listen_client = match gateway {
            GatewayListener::ClientUrl => format!("{client},{}", self.gateway_url()),
            GatewayListener::HttpUrl => client.clone(),
        };
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
            ("--listen-client-urls", listen_client),
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
        if gateway == GatewayListener::HttpUrl {
            args.push(format!("--listen-client-http-urls={}", self.gateway_url()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_35_and_newer_get_a_gateway_listener_of_their_own() {
        let of = GatewayListener::from_version_output;
        assert_eq!(
            of("etcd Version: 3.5.16\nGit SHA: Not provided\n"),
            GatewayListener::HttpUrl
        );
        assert_eq!(of("etcd Version: 3.6.0\n"), GatewayListener::HttpUrl);
        assert_eq!(
            of("etcd Version: 4.0.0-alpha.0\n"),
            GatewayListener::HttpUrl
        );
        assert_eq!(of("etcd Version: 3.4.23\n"), GatewayListener::ClientUrl);
        // Unreadable: the rendering every version accepts.
        assert_eq!(of(""), GatewayListener::ClientUrl);
        assert_eq!(of("etcd Version: x.y\n"), GatewayListener::ClientUrl);
    }

    #[test]
    fn a_members_gateway_is_its_client_url_on_the_gateway_port() {
        assert_eq!(gateway_of("https://10.0.0.1:2379"), "https://10.0.0.1:2382");
        assert_eq!(
            gateway_of("https://[fd00::1]:2379/"),
            "https://[fd00::1]:2382"
        );
        assert_eq!(gateway_of("https://10.0.0.1:2382"), "https://10.0.0.1:2382");
        assert_eq!(
            gateway_of("https://10.0.0.1:23790"),
            "https://10.0.0.1:23790"
        );
    }

    #[test]
    fn the_gateway_port_is_served_either_way_and_the_client_port_is_grpc_alone_on_35() {
        let member = EtcdMember {
            name: "node1".into(),
            address: "10.0.0.1".parse().unwrap(),
            initial_cluster: vec![("node1".into(), "10.0.0.1".parse().unwrap())],
            cluster_token: "t".into(),
            existing: false,
            ha: true,
        };
        let layout = NodeLayout::new(Path::new("/r"));
        let args = |g| member.service(&layout, Path::new("/bin/etcd"), g).args;
        let old = args(GatewayListener::ClientUrl);
        assert!(old.contains(
            &"--listen-client-urls=https://10.0.0.1:2379,https://10.0.0.1:2382".to_string()
        ));
        assert!(!old
            .iter()
            .any(|a| a.starts_with("--listen-client-http-urls")));
        let new = args(GatewayListener::HttpUrl);
        assert!(new.contains(&"--listen-client-urls=https://10.0.0.1:2379".to_string()));
        assert!(new.contains(&"--listen-client-http-urls=https://10.0.0.1:2382".to_string()));
        for a in [&old, &new] {
            assert!(a.contains(&"--advertise-client-urls=https://10.0.0.1:2379".to_string()));
        }
    }
}
