//! Kubernetes objects as kube-apiserver stores them in etcd: JSON `v1` objects (the API
//! server's storage codec recognises JSON as well as protobuf) at `/registry/<resource>/...`.
//! The installer writes them before any API server exists, so they carry what the API server
//! would have set on create: a uid and a creation timestamp, and no resourceVersion (etcd's
//! revision is the resource version).

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::secret::SecretBytes;

pub const NAMESPACE: &str = "airgap-system";

pub fn secret_key(namespace: &str, name: &str) -> String {
    format!("/registry/secrets/{namespace}/{name}")
}

pub fn namespace_key(name: &str) -> String {
    format!("/registry/namespaces/{name}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub uid: String,
    pub creation_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A `v1 Secret`. `data` values are base64 in JSON, bytes here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub kind: String,
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(with = "base64_map")]
    pub data: BTreeMap<String, SecretBytes>,
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub kind: String,
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: NamespaceSpec,
    pub status: NamespaceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSpec {
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStatus {
    pub phase: String,
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "airgap".to_string(),
    );
    ObjectMeta {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        uid: random_uid(),
        creation_timestamp: crate::audit::now_rfc3339(),
        labels,
    }
}

impl Secret {
    pub fn opaque(namespace: &str, name: &str, data: BTreeMap<String, SecretBytes>) -> Self {
        Secret {
            kind: "Secret".into(),
            api_version: "v1".into(),
            metadata: meta(name, Some(namespace)),
            data,
            type_: "Opaque".into(),
        }
    }
}

impl Namespace {
    pub fn new(name: &str) -> Self {
        let mut metadata = meta(name, None);
        metadata
            .labels
            .insert("kubernetes.io/metadata.name".into(), name.into());
        Namespace {
            kind: "Namespace".into(),
            api_version: "v1".into(),
            metadata,
            spec: NamespaceSpec {
                finalizers: vec!["kubernetes".into()],
            },
            status: NamespaceStatus {
                phase: "Active".into(),
            },
        }
    }
}

/// A random (version 4) UUID, as the API server assigns.
fn random_uid() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

mod base64_map {
    use super::*;
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use zeroize::{Zeroize, Zeroizing};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, SecretBytes>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let e = base64::engine::general_purpose::STANDARD;
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            let encoded = Zeroizing::new(e.encode(v.expose()));
            map.serialize_entry(k, encoded.as_str())?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, SecretBytes>, D::Error> {
        let encoded = BTreeMap::<String, String>::deserialize(d)?;
        encoded
            .into_iter()
            .map(|(k, mut v)| {
                let decoded = base64::engine::general_purpose::STANDARD.decode(&v);
                v.zeroize();
                decoded
                    .map(|b| (k, SecretBytes::new(b)))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
