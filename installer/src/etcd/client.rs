//! The installer's view of the [`etcd`] client: the endpoint and credentials of this node.

pub use ::etcd::{Create, EtcdClient, EtcdError, KeyValue};

/// The client a node's installer, services and status use: this node's etcd endpoint, the
/// etcd CA, and etcd's `root` user with the gateway certificate (see [`super::auth`]). A node
/// installed before etcd authentication existed has neither: it uses the
/// `apiserver-etcd-client` certificate, as then.
pub fn for_node(
    layout: &crate::layout::NodeLayout,
    endpoint: &str,
) -> Result<EtcdClient, EtcdError> {
    as_user(layout, endpoint, super::auth::ROOT)
}

/// As [`for_node`], logged in as `user`.
pub fn as_user(
    layout: &crate::layout::NodeLayout,
    endpoint: &str,
    user: &str,
) -> Result<EtcdClient, EtcdError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| EtcdError::Credentials { path, source })
    };
    let gateway = layout.etcd_gateway_pair();
    let pair = if gateway.cert.exists() {
        gateway
    } else {
        layout.etcd_client_pair()
    };
    let key = zeroize::Zeroizing::new(read(pair.key)?);
    let client = EtcdClient::new(
        endpoint,
        &read(layout.etcd_pki_dir().join("ca.crt"))?,
        &read(pair.cert)?,
        &key,
    )?;
    Ok(match super::auth::credentials(layout, user) {
        Some(credentials) => client.with_credentials(credentials),
        None => client,
    })
}
