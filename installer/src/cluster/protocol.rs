//! The join API's messages. One request, one answer, JSON over TLS pinned to the cluster CA.
//! The answer carries exactly what a control-plane node must share with the others and
//! nothing it can make itself: its private keys stay on it (it sends signing requests), and
//! the keys all nodes share travel sealed under the operator's certificate key.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::certificate_key::SealedMaterial;
use crate::release::ReleaseId;
use crate::secret::SecretString;

/// The join API's port on every HA node (the agent's `cluster` service).
pub const JOIN_PORT: u16 = 9443;
pub const JOIN_PATH: &str = "/join/v1";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    pub token_id: String,
    /// Sent only inside TLS to a server that proved it holds the pinned CA's certificate;
    /// the cluster compares its sha256 with the stored hash.
    pub secret: String,
    /// The node's name, when the operator gave `--node`; else found by `addresses`.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The release of the bundle the node joins with: it must be the cluster's.
    pub release: ReleaseId,
    /// The id of the certificate key the node holds: a join the node could not open the
    /// answer of is refused before it changes anything.
    pub certificate_key_id: String,
    pub csrs: NodeCsrs,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token_id", &self.token_id)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Signing requests for the node's own certificates (keys generated on the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCsrs {
    pub etcd_server: String,
    pub etcd_peer: String,
    pub agent: String,
}

/// The certificates issued for those requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCertificates {
    pub etcd_server: String,
    pub etcd_peer: String,
    pub agent: String,
}

/// A certificate and its key, as the cluster shares its CAs and its FQDN certificate.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedPair {
    pub cert: String,
    pub key: SecretPem,
}

/// PEM key material in a message: redacted in Debug, zeroed on drop.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(#[serde(with = "secret_text")] pub SecretString);

mod secret_text {
    use crate::secret::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SecretString, D::Error> {
        String::deserialize(de).map(SecretString::new)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinResponse {
    /// The node's name in install.yaml.
    pub node: String,
    /// The installation's install.yaml (no secret in it).
    pub install_yaml: String,
    /// The shared CA keys, FQDN key and EncryptionConfiguration, sealed under the certificate
    /// key the operator holds: never in clear, not even inside this TLS session.
    pub shared: SealedMaterial,
    pub certificates: NodeCertificates,
    pub etcd: EtcdJoin,
}

/// What the node's etcd needs to start as the member the cluster added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdJoin {
    pub member_id: u64,
    /// `(name, address)` of every member, this one included.
    pub initial_cluster: Vec<(String, IpAddr)>,
    /// Client URLs of the voting members: where the node asks to be promoted.
    pub voters: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRefused {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_request_never_shows_its_secret() {
        let request = JoinRequest {
            token_id: "abcdef".into(),
            secret: "0123456789abcdef0123456789abcdef".into(),
            node: Some("node2".into()),
            addresses: vec![],
            release: ReleaseId {
                name: "p".into(),
                version: semver::Version::new(1, 0, 0),
                index_sha256: airgap::Digest::of(b"x"),
            },
            certificate_key_id: String::new(),
            csrs: NodeCsrs {
                etcd_server: String::new(),
                etcd_peer: String::new(),
                agent: String::new(),
            },
        };
        let shown = format!("{request:?}");
        assert!(shown.contains("abcdef") && !shown.contains("0123456789abcdef0123"));
        let pair = SharedPair {
            cert: "CERT".into(),
            key: SecretPem(SecretString::new("-----BEGIN PRIVATE KEY-----".into())),
        };
        // The key travels in JSON (inside TLS) but never in a log line.
        assert!(serde_json::to_string(&pair)
            .unwrap()
            .contains("PRIVATE KEY"));
        assert!(!format!("{:?}", pair.key.0).contains("PRIVATE"));
    }
}
