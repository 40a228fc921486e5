//! Typed schemas of the configuration documents the kubernetes phase renders, for the fields
//! airgap sets: kubeadm `v1beta4` (`InitConfiguration`, `ClusterConfiguration`), kubelet
//! `v1beta1` (`KubeletConfiguration`), audit `v1` (`Policy`) and apiserver `v1`
//! (`AdmissionConfiguration` with the Pod Security plugin's configuration). No crate carries
//! these component-config types (k8s-openapi has only served API objects), so they are
//! written here from the upstream Go types, field names and nesting unchanged.
//!
//! Every struct rejects unknown fields: a rendered document that parses here has no typo'd or
//! misplaced key that kubeadm or the kubelet would silently ignore (kubeadm warns; the kubelet
//! does not even warn), which is how a hardening setting gets lost.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `apiVersion` and `kind` of a document type.
pub trait Document: DeserializeOwned {
    const API_VERSION: &'static str;
    const KIND: &'static str;
}

macro_rules! document {
    ($ty:ty, $api:literal, $kind:literal) => {
        impl Document for $ty {
            const API_VERSION: &'static str = $api;
            const KIND: &'static str = $kind;
        }
    };
}

/// `{name, value}`: v1beta4's form of component flags (a list, so flags may repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arg {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    pub node_registration: NodeRegistrationOptions,
    #[serde(default)]
    pub skip_phases: Vec<String>,
}
document!(
    InitConfiguration,
    "kubeadm.k8s.io/v1beta4",
    "InitConfiguration"
);

/// kubeadm's `JoinConfiguration` for a control-plane join with file discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinConfiguration {
    pub api_version: String,
    pub kind: String,
    pub discovery: Discovery,
    pub control_plane: JoinControlPlane,
    pub node_registration: NodeRegistrationOptions,
}
document!(
    JoinConfiguration,
    "kubeadm.k8s.io/v1beta4",
    "JoinConfiguration"
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Discovery {
    pub file: FileDiscovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileDiscovery {
    pub kube_config_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiEndpoint {
    pub advertise_address: String,
    pub bind_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeRegistrationOptions {
    pub name: String,
    pub cri_socket: String,
    pub image_pull_policy: String,
    #[serde(default)]
    pub kubelet_extra_args: Vec<Arg>,
    #[serde(default)]
    pub ignore_preflight_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub image_repository: String,
    pub certificates_dir: String,
    pub encryption_algorithm: String,
    pub networking: Networking,
    pub dns: Dns,
    pub etcd: Etcd,
    pub api_server: ApiServer,
    pub controller_manager: ControlPlaneComponent,
    pub scheduler: ControlPlaneComponent,
}
document!(
    ClusterConfiguration,
    "kubeadm.k8s.io/v1beta4",
    "ClusterConfiguration"
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    pub dns_domain: String,
    pub service_subnet: String,
    pub pod_subnet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dns {
    pub image_repository: String,
    pub image_tag: String,
}

/// airgap always runs etcd itself: only `external` is modelled, so a rendered `local` fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Etcd {
    pub external: ExternalEtcd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    pub extra_args: Vec<Arg>,
    #[serde(default)]
    pub extra_volumes: Vec<HostPathMount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneComponent {
    pub extra_args: Vec<Arg>,
    #[serde(default)]
    pub extra_volumes: Vec<HostPathMount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostPathMount {
    pub name: String,
    pub host_path: String,
    pub mount_path: String,
    pub read_only: bool,
    pub path_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub read_only_port: u16,
    pub authentication: KubeletAuthentication,
    pub authorization: KubeletAuthorization,
    pub protect_kernel_defaults: bool,
    #[serde(rename = "makeIPTablesUtilChains")]
    pub make_ip_tables_util_chains: bool,
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: u32,
    pub rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    pub feature_gates: BTreeMap<String, bool>,
    pub tls_min_version: String,
    pub tls_cipher_suites: Vec<String>,
    pub streaming_connection_idle_timeout: String,
    pub cgroup_driver: String,
}
document!(
    KubeletConfiguration,
    "kubelet.config.k8s.io/v1beta1",
    "KubeletConfiguration"
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletAuthentication {
    pub anonymous: Enabled,
    pub webhook: KubeletWebhookAuthentication,
    pub x509: KubeletX509Authentication,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletWebhookAuthentication {
    pub enabled: bool,
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletX509Authentication {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletAuthorization {
    pub mode: String,
    pub webhook: KubeletWebhookAuthorization,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: String,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: String,
}

/// audit.k8s.io/v1 `Policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub omit_stages: Vec<String>,
    pub rules: Vec<AuditRule>,
}
document!(AuditPolicy, "audit.k8s.io/v1", "Policy");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditRule {
    pub level: AuditLevel,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<AuditGroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditLevel {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditGroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
}

/// apiserver.config.k8s.io/v1 `AdmissionConfiguration`; the only plugin configured is
/// PodSecurity, so its configuration is typed rather than left as raw YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdmissionConfiguration {
    pub api_version: String,
    pub kind: String,
    pub plugins: Vec<AdmissionPlugin>,
}
document!(
    AdmissionConfiguration,
    "apiserver.config.k8s.io/v1",
    "AdmissionConfiguration"
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionPlugin {
    pub name: String,
    pub configuration: PodSecurityConfiguration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSecurityConfiguration {
    pub api_version: String,
    pub kind: String,
    pub defaults: PodSecurityDefaults,
    pub exemptions: PodSecurityExemptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PodSecurityDefaults {
    pub enforce: String,
    pub enforce_version: String,
    pub audit: String,
    pub audit_version: String,
    pub warn: String,
    pub warn_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSecurityExemptions {
    pub usernames: Vec<String>,
    pub runtime_classes: Vec<String>,
    pub namespaces: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("document {index}: not YAML")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error(
        "document {index}: expected {expected}, found apiVersion `{api_version}` kind `{kind}`"
    )]
    Kind {
        index: usize,
        expected: String,
        api_version: String,
        kind: String,
    },
    #[error("document {index} ({kind})")]
    Invalid {
        index: usize,
        kind: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{found} documents where {expected} were expected")]
    Count { found: usize, expected: usize },
}

/// The YAML documents of a multi-document stream, in order.
pub fn documents(text: &str) -> Result<Vec<serde_yaml_ng::Value>, SchemaError> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, doc)| {
            serde_yaml_ng::Value::deserialize(doc)
                .map_err(|source| SchemaError::Yaml { index, source })
        })
        .filter(|v| !matches!(v, Ok(serde_yaml_ng::Value::Null)))
        .collect()
}

/// Parses document `index` as `T`, checking its `apiVersion` and `kind` first.
pub fn parse_as<T: Document>(index: usize, value: &serde_yaml_ng::Value) -> Result<T, SchemaError> {
    let field = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != T::API_VERSION || kind != T::KIND {
        return Err(SchemaError::Kind {
            index,
            expected: format!("{} {}", T::API_VERSION, T::KIND),
            api_version,
            kind,
        });
    }
    serde_yaml_ng::from_value(value.clone()).map_err(|source| SchemaError::Invalid {
        index,
        kind: T::KIND,
        source,
    })
}

/// A single-document file as `T`.
pub fn parse_single<T: Document>(text: &str) -> Result<T, SchemaError> {
    match documents(text)?.as_slice() {
        [one] => parse_as(0, one),
        many => Err(SchemaError::Count {
            found: many.len(),
            expected: 1,
        }),
    }
}

/// The three documents of `kubeadm.yaml`, in the order kubeadm expects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeadmConfig {
    pub init: InitConfiguration,
    pub cluster: ClusterConfiguration,
    pub kubelet: KubeletConfiguration,
}

impl KubeadmConfig {
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        match documents(text)?.as_slice() {
            [init, cluster, kubelet] => Ok(KubeadmConfig {
                init: parse_as(0, init)?,
                cluster: parse_as(1, cluster)?,
                kubelet: parse_as(2, kubelet)?,
            }),
            many => Err(SchemaError::Count {
                found: many.len(),
                expected: 3,
            }),
        }
    }
}

impl ControlPlaneComponent {
    /// The value of flag `name`, if set (the last one wins, as for repeated flags).
    pub fn arg(&self, name: &str) -> Option<&str> {
        arg(&self.extra_args, name)
    }
}

impl ApiServer {
    pub fn arg(&self, name: &str) -> Option<&str> {
        arg(&self.extra_args, name)
    }
}

fn arg<'a>(args: &'a [Arg], name: &str) -> Option<&'a str> {
    args.iter()
        .rev()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_wrong_kinds_are_rejected() {
        let ok = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n";
        assert!(parse_single::<AuditPolicy>(ok).is_ok());
        let typo = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    verb: [get]\n";
        let e = crate::error::chain(&parse_single::<AuditPolicy>(typo).unwrap_err());
        assert!(e.contains("unknown field `verb`"), "{e}");
        let level = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Everything\n";
        assert!(parse_single::<AuditPolicy>(level).is_err());
        let kind = "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: []\n";
        assert!(matches!(
            parse_single::<AuditPolicy>(kind),
            Err(SchemaError::Kind { .. })
        ));
        assert!(matches!(
            parse_single::<AuditPolicy>(&format!("{ok}---\n{ok}")),
            Err(SchemaError::Count { found: 2, .. })
        ));
    }
}
