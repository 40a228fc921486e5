//! The installer's view of the [`etcd`] client: the endpoint and credentials of this node.

pub use ::etcd::{Create, EtcdClient, EtcdError, KeyValue};

/// The client a node's installer, services and status use: the member whose client URL is
/// `endpoint`, reached on its JSON gateway ([`super::GATEWAY_PORT`]) and, when that refuses,
/// on the client URL itself (a member configured before the gateway had a port of its own);
/// the etcd CA, and etcd's `root` user with the gateway certificate (see [`super::auth`]). A
/// node installed before etcd authentication existed has neither: it uses the
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
        &super::gateway_of(endpoint),
        &read(layout.etcd_pki_dir().join("ca.crt"))?,
        &read(pair.cert)?,
        &key,
    )?
    .with_alternate(endpoint);
    Ok(match super::auth::credentials(layout, user) {
        Some(credentials) => client.with_credentials(credentials),
        None => client,
    })
}

/// Other members to fall back to, from their client URLs: every gateway first, then each
/// client URL for members configured before the gateway had a port of its own.
pub fn fallbacks(client_urls: &[String]) -> Vec<String> {
    let gateways = client_urls.iter().map(|u| super::gateway_of(u));
    gateways.chain(client_urls.iter().cloned()).collect()
}
