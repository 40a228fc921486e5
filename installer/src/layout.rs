//! Where everything lives on a node, under `--root` (DESIGN.md "Node layout"). kubeadm reads
//! `etc/kubernetes/...`, so those paths are kubeadm's own.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct NodeLayout {
    root: PathBuf,
}

impl NodeLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.at("etc/kubernetes/pki")
    }

    /// The etcd client certificate the installer, status and the node's registry use.
    pub fn etcd_client_pair(&self) -> crate::pki::PairPaths {
        crate::pki::PairPaths::new(&self.pki_dir(), "apiserver-etcd-client")
    }
    /// The certificate airgap's own etcd clients present: no common name, because etcd's JSON
    /// gateway refuses one once authentication is on (they authenticate as a user instead).
    pub fn etcd_gateway_pair(&self) -> crate::pki::PairPaths {
        crate::pki::PairPaths::new(&self.etcd_pki_dir(), "airgap-gateway-client")
    }
    /// The password of etcd user `user` (0600, in a 0700 directory).
    pub fn etcd_password(&self, user: &str) -> PathBuf {
        self.etcd_pki_dir()
            .join("users")
            .join(format!("{user}.password"))
    }
    pub fn etcd_pki_dir(&self) -> PathBuf {
        self.at("etc/kubernetes/pki/etcd")
    }
    pub fn encryption_config(&self) -> PathBuf {
        self.at("etc/kubernetes/encryption-config.yaml")
    }
    /// The installer's configuration directory.
    /// The agent's certificate (join API, agent-to-agent).
    pub fn agent_pair(&self) -> crate::pki::PairPaths {
        crate::pki::PairPaths::new(&self.etc().join("pki"), "agent")
    }
    /// What this node received when it joined an HA cluster (no secret in it).
    pub fn join_state(&self) -> PathBuf {
        self.state_dir().join("join.json")
    }
    /// The registry login the built-in registry uses with its peers (0600).
    pub fn registry_peer_login(&self) -> PathBuf {
        self.etc().join("registry-peer-login")
    }
    pub fn etc(&self) -> PathBuf {
        self.at("etc/airgap")
    }
    pub fn install_yaml(&self) -> PathBuf {
        self.at("etc/airgap/install.yaml")
    }
    /// The FQDN certificate (issued or imported), its key and the CA clients trust for it.
    pub fn fqdn_cert(&self) -> PathBuf {
        self.at("etc/airgap/pki/fqdn.crt")
    }
    pub fn fqdn_key(&self) -> PathBuf {
        self.at("etc/airgap/pki/fqdn.key")
    }
    pub fn fqdn_ca(&self) -> PathBuf {
        self.at("etc/airgap/pki/fqdn-ca.crt")
    }
    pub fn htpasswd(&self) -> PathBuf {
        self.at("etc/airgap/registry/htpasswd")
    }
    /// The registry's pull-only users (containerd's login).
    pub fn pull_htpasswd(&self) -> PathBuf {
        self.at("etc/airgap/registry/htpasswd-pull")
    }
    /// Service definitions the agent supervises, one JSON file each.
    pub fn services_dir(&self) -> PathBuf {
        self.at("etc/airgap/services")
    }
    /// `rewrite-map.json` and the CA clients trust for the registry.
    pub fn mirror_dir(&self) -> PathBuf {
        self.at("etc/airgap/mirror")
    }
    pub fn rewrite_map(&self) -> PathBuf {
        self.at("etc/airgap/mirror/rewrite-map.json")
    }
    pub fn registry_ca(&self) -> PathBuf {
        self.at("etc/airgap/mirror/registry-ca.crt")
    }
    /// The rendered kubeadm configuration (InitConfiguration, ClusterConfiguration,
    /// KubeletConfiguration).
    /// kubeadm `JoinConfiguration` of an HA node joining the cluster.
    pub fn kubeadm_join_config(&self) -> PathBuf {
        self.at("etc/airgap/kubernetes/kubeadm-join.yaml")
    }
    /// The kubeconfig kubeadm join discovers the cluster with (this node's credentials, 0600).
    pub fn discovery_kubeconfig(&self) -> PathBuf {
        self.at("etc/airgap/kubernetes/discovery.conf")
    }
    pub fn kubeadm_config(&self) -> PathBuf {
        self.at("etc/airgap/kubernetes/kubeadm.yaml")
    }
    pub fn audit_policy(&self) -> PathBuf {
        self.at("etc/kubernetes/audit-policy.yaml")
    }
    pub fn admission_config(&self) -> PathBuf {
        self.at("etc/kubernetes/admission-config.yaml")
    }
    /// Where the API server writes its audit log (mounted into its static pod).
    pub fn kubernetes_audit_dir(&self) -> PathBuf {
        self.at("var/log/kubernetes/audit")
    }
    /// kubeadm's own output once `kubeadm init` succeeded: the sign that a cluster exists.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.at("etc/kubernetes/admin.conf")
    }
    /// containerd's registry host directory (`config_path`): one `<host>/hosts.toml` each.
    pub fn containerd_certs_dir(&self) -> PathBuf {
        self.at("etc/containerd/certs.d")
    }
    /// The pull-only login as a containers-auth.json(5) file, for CRI-O (`global_auth_file`),
    /// podman and skopeo (`--authfile`): they send a rewritten location's credentials from an
    /// auth file, never from hosts.toml.
    pub fn pull_auth_file(&self) -> PathBuf {
        self.at("etc/airgap/mirror/auth.json")
    }
    /// containers-registries.conf(5) drop-in for CRI-O, podman and skopeo on the node.
    pub fn registries_conf(&self) -> PathBuf {
        self.at("etc/containers/registries.conf.d/50-airgap.conf")
    }
    /// The containerd airgap runs: its configuration, its data, its state and CRI socket
    /// (the standard places when the root is `/`, so the kubelet's defaults find it).
    pub fn containerd_config(&self) -> PathBuf {
        self.at("etc/airgap/containerd/config.toml")
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.at("var/lib/containerd")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.at("run/containerd")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.at("run/containerd/containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.at("etc/cni/net.d")
    }
    /// The kubelet's systemd unit and airgap's drop-in for it.
    pub fn kubelet_unit(&self) -> PathBuf {
        self.at("etc/systemd/system/kubelet.service")
    }
    pub fn kubelet_dropin(&self) -> PathBuf {
        self.at("etc/systemd/system/kubelet.service.d/10-airgap.conf")
    }
    /// Kernel settings the kubelet's `protectKernelDefaults` insists on.
    pub fn kubelet_sysctl(&self) -> PathBuf {
        self.at("etc/sysctl.d/90-airgap-kubelet.conf")
    }
    /// Platform manifests, applied in path order: namespaces, then each addon pack.
    pub fn manifests_dir(&self) -> PathBuf {
        self.at("etc/airgap/manifests")
    }
    pub fn systemd_unit(&self) -> PathBuf {
        self.at("etc/systemd/system/airgap-agent.service")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.at("var/lib/airgap")
    }
    pub fn journal(&self) -> PathBuf {
        self.at("var/lib/airgap/journal.json")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.at("var/lib/airgap/etcd")
    }
    pub fn registry_storage(&self) -> PathBuf {
        self.at("var/lib/airgap/registry")
    }
    /// Binaries taken from the bundle's packs (`etcd`).
    pub fn bin_dir(&self) -> PathBuf {
        self.at("var/lib/airgap/bin")
    }
    pub fn agent_lock(&self) -> PathBuf {
        self.at("var/lib/airgap/agent.lock")
    }
    pub fn agent_state(&self) -> PathBuf {
        self.at("var/lib/airgap/agent.json")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.at("var/log/airgap")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.at("var/log/airgap/audit.log")
    }

    /// `path` (under the root) as the node sees it once the root is its `/`: what rendered
    /// configuration refers to, so a render does not depend on where the root is mounted.
    pub fn node_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_path_buf(),
        }
    }
}
