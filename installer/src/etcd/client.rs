//! The installer's view of the [`etcd`] client: the endpoint and credentials of this node.

pub use ::etcd::{Create, EtcdClient, EtcdError, KeyValue};

/// The client a node's installer and status use: this node's etcd endpoint, the etcd CA, and
/// the `apiserver-etcd-client` certificate.
pub fn for_node(
    layout: &crate::layout::NodeLayout,
    endpoint: &str,
) -> Result<EtcdClient, EtcdError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| EtcdError::Credentials { path, source })
    };
    let pair = layout.etcd_client_pair();
    let key = zeroize::Zeroizing::new(read(pair.key)?);
    EtcdClient::new(
        endpoint,
        &read(layout.etcd_pki_dir().join("ca.crt"))?,
        &read(pair.cert)?,
        &key,
    )
}
