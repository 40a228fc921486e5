//! Phase kubernetes: the node's Kubernetes configuration, rendered from `install.yaml`, the
//! bundle's `k8s` pack and the private registry, then handed to kubeadm when the node has it.
//!
//! What is rendered (all under the root; paths inside the files are the node's own):
//! * `etc/airgap/kubernetes/kubeadm.yaml`: kubeadm `InitConfiguration` + `ClusterConfiguration`
//!   (external etcd, control-plane endpoint on the FQDN, images from the private registry, CIS
//!   hardening) + `KubeletConfiguration`;
//! * `etc/kubernetes/audit-policy.yaml`, `etc/kubernetes/admission-config.yaml`;
//! * `etc/sysctl.d/90-airgap-kubelet.conf` (what `protectKernelDefaults` requires);
//! * containerd `etc/containerd/certs.d/<host>/hosts.toml` for every upstream registry of the
//!   bundle's images, and for the private registry itself.
//!
//! Every document is parsed back into its [`schema`] type before anything is written, so a
//! template that drifted from the schema fails the phase instead of reaching kubeadm.

pub mod kubeadm;
pub mod schema;

use std::path::{Path, PathBuf};

use airgap::{BundleIndex, ImageReference, PackRecord};
use registry::auth::Credentials;
use registry::mirror::{containerd_hosts, HostAccess, MirrorTarget, RewriteMap};
use serde_json::json;

use crate::config::InstallConfig;
use crate::etcd::{url, CLIENT_PORT};
use crate::files::{PRIVATE, PUBLIC};
use crate::layout::NodeLayout;
use crate::template::{self, Values};

/// The API server's port, on every node and behind the FQDN.
pub const API_SERVER_PORT: u16 = 6443;

/// Oldest Kubernetes the rendered configuration is valid for: kubeadm's `v1beta4` API arrived
/// in 1.31 (and the API server's insecure port was removed in 1.24, so it cannot be on).
pub const MIN_MINOR: u64 = 31;

/// The control-plane images kubeadm pulls from `imageRepository`, tagged with the version.
pub const CONTROL_PLANE_IMAGES: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("the bundle has no pack with layer `k8s`; the kubernetes phase takes the Kubernetes version and images from it: add one to the bundle spec")]
    NoPack,
    #[error("the bundle has {0} packs with layer `k8s`; it must have exactly one")]
    ManyPacks(usize),
    #[error(
        "k8s pack {pack} does not list {image}, which kubeadm pulls; add it to the pack's images"
    )]
    MissingImage { pack: String, image: String },
    #[error(
        "k8s pack {pack}: version {version} does not match its kube-apiserver image tag {tag}"
    )]
    VersionMismatch {
        pack: String,
        version: String,
        tag: String,
    },
    #[error("k8s pack {pack}: Kubernetes {version} is older than v1.{MIN_MINOR}, the oldest this airgap configures (kubeadm v1beta4)")]
    TooOld { pack: String, version: String },
    #[error("image {image} of k8s pack {pack} has no mirrored name in the rewrite map")]
    NotMirrored { pack: String, image: String },
}

/// What the `k8s` pack says about the cluster to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesRelease {
    /// `pack:version`, for messages.
    pub pack: String,
    /// `v1.34.2`, as kubeadm wants it.
    pub version: String,
    /// Where kubeadm pulls the control-plane images from: the private registry's mirror of
    /// their upstream repository (`<registry>/<prefix>/registry.k8s.io`).
    pub image_repository: String,
    pub dns_image_repository: String,
    pub dns_image_tag: String,
    /// Every image kubeadm will pull, by its mirrored name.
    pub images: Vec<String>,
}

impl KubernetesRelease {
    pub fn from_bundle(index: &BundleIndex, rewrite: &RewriteMap) -> Result<Self, ReleaseError> {
        let packs: Vec<&PackRecord> = index.packs.iter().filter(|p| p.layer == "k8s").collect();
        let pack = match packs.as_slice() {
            [] => return Err(ReleaseError::NoPack),
            [one] => *one,
            many => return Err(ReleaseError::ManyPacks(many.len())),
        };
        let label = format!("{}:{}", pack.name, pack.version);
        let images: Vec<ImageReference> = pack
            .images
            .iter()
            .filter_map(|i| ImageReference::parse(i).ok())
            .collect();
        let last = |r: &ImageReference| r.repository.rsplit('/').next().unwrap_or("").to_string();
        let missing = |image: String| ReleaseError::MissingImage {
            pack: label.clone(),
            image,
        };
        let apiserver = images
            .iter()
            .find(|r| last(r) == "kube-apiserver" && r.tag.is_some())
            .ok_or_else(|| {
                missing("a kube-apiserver image (registry.k8s.io/kube-apiserver:vX.Y.Z)".into())
            })?;
        let tag = apiserver.tag.clone().unwrap_or_default();
        let version = if pack.version.starts_with('v') {
            pack.version.clone()
        } else {
            format!("v{}", pack.version)
        };
        if tag != version {
            return Err(ReleaseError::VersionMismatch {
                pack: label,
                version: pack.version.clone(),
                tag,
            });
        }
        let minor = version
            .trim_start_matches('v')
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u64>().ok());
        if !version.starts_with("v1.") || minor.is_none_or(|m| m < MIN_MINOR) {
            return Err(ReleaseError::TooOld {
                pack: label,
                version,
            });
        }
        let parent = |r: &ImageReference| {
            r.repository
                .rsplit_once('/')
                .map(|(p, _)| format!("{}/{p}", r.registry))
                .unwrap_or_else(|| r.registry.clone())
        };
        let upstream_repository = parent(apiserver);
        let mirror = |r: &ImageReference| -> Result<ImageReference, ReleaseError> {
            rewrite
                .mirrored(&r.to_string())
                .and_then(|m| ImageReference::parse(m).ok())
                .ok_or_else(|| ReleaseError::NotMirrored {
                    pack: label.clone(),
                    image: r.to_string(),
                })
        };
        let mut pulled = Vec::new();
        for name in CONTROL_PLANE_IMAGES {
            let wanted = format!("{upstream_repository}/{name}:{version}");
            let found = images
                .iter()
                .find(|r| {
                    r.to_string() == wanted
                        || (parent(r) == upstream_repository
                            && last(r) == name
                            && r.tag.as_deref() == Some(&version))
                })
                .ok_or_else(|| missing(wanted.clone()))?;
            pulled.push(mirror(found)?);
        }
        let coredns = images
            .iter()
            .find(|r| last(r) == "coredns" && r.tag.is_some())
            .ok_or_else(|| {
                missing("a coredns image (registry.k8s.io/coredns/coredns:vX.Y.Z)".into())
            })?;
        let dns = mirror(coredns)?;
        pulled.push(dns.clone());
        let image_repository = parent(&pulled[0]);
        Ok(KubernetesRelease {
            pack: label,
            version,
            image_repository,
            dns_image_repository: parent(&dns),
            dns_image_tag: dns.tag.clone().unwrap_or_default(),
            images: pulled
                .iter()
                .map(|r| {
                    let tag = r
                        .tag
                        .as_deref()
                        .map(|t| format!(":{t}"))
                        .unwrap_or_default();
                    format!("{}/{}{tag}", r.registry, r.repository)
                })
                .collect(),
        })
    }
}

/// One file the phase writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Under the root.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// Everything the kubernetes phase needs to render.
pub struct Inputs<'a> {
    pub config: &'a InstallConfig,
    pub layout: &'a NodeLayout,
    pub index: &'a BundleIndex,
    pub target: &'a MirrorTarget,
    pub rewrite: &'a RewriteMap,
    /// Credentials containerd presents to the private registry.
    pub credentials: Option<&'a Credentials>,
    /// The registry's CA under the root, if it needs one.
    pub registry_ca: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error("rendered {file} does not match its schema: {cause}")]
    Schema {
        file: &'static str,
        cause: schema::SchemaError,
    },
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub release: KubernetesRelease,
    pub kubeadm: schema::KubeadmConfig,
    pub files: Vec<RenderedFile>,
}

/// Renders the phase's files. Pure: the same inputs give byte-identical output.
pub fn render(inputs: &Inputs<'_>) -> Result<Rendered, RenderError> {
    let release = KubernetesRelease::from_bundle(inputs.index, inputs.rewrite)?;
    let config = inputs.config;
    let layout = inputs.layout;
    let node = config.this_node();
    let fqdn = config.spec.fqdn.as_str();
    let mut sans = vec![fqdn.to_string()];
    sans.extend(config.spec.vip.map(|v| v.to_string()));
    sans.extend(config.spec.nodes.iter().map(|n| n.address.to_string()));
    sans.dedup();
    let endpoints: Vec<String> = config
        .spec
        .nodes
        .iter()
        .map(|n| url(n.address, CLIENT_PORT))
        .collect();
    let values = Values::from([
        ("node_address", json!(node.address.to_string())),
        ("node_name", json!(node.name.as_str())),
        ("cluster_name", json!(config.metadata.name.as_str())),
        ("kubernetes_version", json!(release.version)),
        (
            "control_plane_endpoint",
            json!(format!("{fqdn}:{API_SERVER_PORT}")),
        ),
        ("image_repository", json!(release.image_repository)),
        ("dns_image_repository", json!(release.dns_image_repository)),
        ("dns_image_tag", json!(release.dns_image_tag)),
        ("etcd_endpoints", json!(endpoints)),
        ("api_server_cert_sans", json!(sans)),
        ("tls_min_version", json!(crate::tls::MIN_VERSION)),
        ("tls_cipher_suites", json!(crate::tls::CIPHER_SUITES)),
        ("tls_cipher_suite_list", json!(crate::tls::cipher_suites())),
    ]);
    let kubeadm_text = template::KUBEADM.render(&values)?;
    let kubeadm =
        schema::KubeadmConfig::parse(&kubeadm_text).map_err(|cause| RenderError::Schema {
            file: "kubeadm.yaml",
            cause,
        })?;
    let audit = template::AUDIT_POLICY.render(&Values::new())?;
    schema::parse_single::<schema::AuditPolicy>(&audit).map_err(|cause| RenderError::Schema {
        file: "audit-policy.yaml",
        cause,
    })?;
    let admission = template::ADMISSION.render(&Values::new())?;
    schema::parse_single::<schema::AdmissionConfiguration>(&admission).map_err(|cause| {
        RenderError::Schema {
            file: "admission-config.yaml",
            cause,
        }
    })?;
    let sysctl = template::KUBELET_SYSCTL.render(&Values::new())?;

    let mut files = vec![
        RenderedFile {
            path: layout.kubeadm_config(),
            bytes: kubeadm_text.into_bytes(),
            mode: PRIVATE,
        },
        RenderedFile {
            path: layout.audit_policy(),
            bytes: audit.into_bytes(),
            mode: PRIVATE,
        },
        RenderedFile {
            path: layout.admission_config(),
            bytes: admission.into_bytes(),
            mode: PRIVATE,
        },
        RenderedFile {
            path: layout.kubelet_sysctl(),
            bytes: sysctl.into_bytes(),
            mode: PUBLIC,
        },
    ];
    let ca = inputs.registry_ca.map(|p| layout.node_path(p));
    let hosts = containerd_hosts(
        inputs.index,
        inputs.target,
        HostAccess {
            ca: ca.as_deref(),
            credentials: inputs.credentials,
        },
    );
    for (host, text) in hosts {
        files.push(RenderedFile {
            path: layout.containerd_certs_dir().join(host).join("hosts.toml"),
            bytes: text.into_bytes(),
            // The registry's password rides in an Authorization header.
            mode: if inputs.credentials.is_some() {
                PRIVATE
            } else {
                PUBLIC
            },
        });
    }
    Ok(Rendered {
        release,
        kubeadm,
        files,
    })
}
