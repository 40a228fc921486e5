//! Who may do what in the cluster's etcd. With authentication on, every client is a user:
//!
//! * `root` (role `root`): the installer, the `cluster` service (membership, the join API),
//!   `status` and the operator's commands. A node keeps its password in a 0600 file.
//! * `airgap-registry`: the network-facing registry, read-write on its own prefixes and
//!   nothing else; a compromised registry cannot read a Secret, a token or the trust root.
//! * `kube-apiserver-etcd-client` (role `root`, no password): kube-apiserver, which connects
//!   over gRPC and is named by its client certificate's common name.
//!
//! airgap's clients use etcd's JSON gateway, which does not map certificates to users (see
//! [`::etcd::Credentials`]), so they present a certificate without a common name and log in
//! with a password. The passwords are made by the first node and reach joining nodes inside
//! the sealed join material. Clusters installed before authentication existed keep it off
//! (their nodes lack the passwords); `status` says so.

use std::path::Path;

use ::etcd::{Credentials, EtcdClient, EtcdError, Permission};

use crate::files::{write_atomic, PRIVATE};
use crate::layout::NodeLayout;
use crate::secret::SecretString;

pub const ROOT: &str = "root";
pub const REGISTRY: &str = "airgap-registry";
/// kube-apiserver's certificate's common name, and so its user.
pub const APISERVER: &str = "kube-apiserver-etcd-client";
/// Everything the registry reads or writes: its metadata and the replica reports.
pub const REGISTRY_PREFIXES: [&str; 2] =
    ["/airgap/registry/", "/airgap/cluster/registry-replicas/"];

/// The passwords of the users that have one.
pub struct EtcdPasswords {
    pub root: SecretString,
    pub registry: SecretString,
}

impl EtcdPasswords {
    pub fn generate() -> Result<Self, getrandom::Error> {
        Ok(EtcdPasswords {
            root: SecretString::random_password()?,
            registry: SecretString::random_password()?,
        })
    }

    /// The node's passwords, when it has them.
    pub fn load(layout: &NodeLayout) -> std::io::Result<Option<Self>> {
        let (Some(root), Some(registry)) = (
            read_password(&layout.etcd_password(ROOT))?,
            read_password(&layout.etcd_password(REGISTRY))?,
        ) else {
            return Ok(None);
        };
        Ok(Some(EtcdPasswords { root, registry }))
    }

    /// Written before etcd learns them, so a run killed in between finds the same ones.
    pub fn write(&self, layout: &NodeLayout) -> std::io::Result<()> {
        let dir = layout.etcd_password(ROOT);
        if let Some(dir) = dir.parent() {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        for (user, password) in [(ROOT, &self.root), (REGISTRY, &self.registry)] {
            write_atomic(
                &layout.etcd_password(user),
                password.expose().as_bytes(),
                PRIVATE,
            )?;
        }
        Ok(())
    }
}

fn read_password(path: &Path) -> std::io::Result<Option<SecretString>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(SecretString::new(text.trim().to_string()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The login of `user` on this node, when it has the password.
pub fn credentials(layout: &NodeLayout, user: &str) -> Option<Credentials> {
    read_password(&layout.etcd_password(user))
        .ok()
        .flatten()
        .map(|p| Credentials::new(user, p.expose()))
}

/// Creates the roles and users (each step idempotent), then turns authentication on. Run by
/// the node that founds the cluster; `etcd` authenticates as root once auth is on, and goes
/// without a token before.
pub async fn enable(etcd: &EtcdClient, passwords: &EtcdPasswords) -> Result<(), EtcdError> {
    etcd.role_add(REGISTRY).await?;
    for prefix in REGISTRY_PREFIXES {
        etcd.role_grant_prefix(REGISTRY, prefix, Permission::ReadWrite)
            .await?;
    }
    etcd.user_add(ROOT, Some(passwords.root.expose())).await?;
    etcd.user_grant_role(ROOT, "root").await?;
    etcd.user_add(REGISTRY, Some(passwords.registry.expose()))
        .await?;
    etcd.user_grant_role(REGISTRY, REGISTRY).await?;
    etcd.user_add(APISERVER, None).await?;
    etcd.user_grant_role(APISERVER, "root").await?;
    etcd.auth_enable().await
}
