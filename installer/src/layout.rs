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
    pub fn etcd_pki_dir(&self) -> PathBuf {
        self.at("etc/kubernetes/pki/etcd")
    }
    pub fn encryption_config(&self) -> PathBuf {
        self.at("etc/kubernetes/encryption-config.yaml")
    }
    /// The installer's configuration directory.
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
    /// Service definitions the agent supervises, one JSON file each.
    pub fn services_dir(&self) -> PathBuf {
        self.at("etc/airgap/services")
    }
    /// `rewrite-map.json` and containerd's `certs.d/<host>/hosts.toml`.
    pub fn mirror_dir(&self) -> PathBuf {
        self.at("etc/airgap/mirror")
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

    /// Everything `reset` removes: what the install created, except the logs (kept for the
    /// record, as kubeadm keeps its own).
    pub fn installed_paths(&self) -> Vec<PathBuf> {
        vec![
            self.pki_dir(),
            self.encryption_config(),
            self.etc(),
            self.systemd_unit(),
            self.state_dir(),
        ]
    }
}
