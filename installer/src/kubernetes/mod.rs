//! Phase kubernetes: the node's Kubernetes configuration, rendered from `install.yaml`, the
//! bundle's `k8s` pack and the private registry, then handed to kubeadm when the node has it.
//!
//! What is rendered (all under the root; paths inside the files are the node's own):
//! * `etc/airgap/kubernetes/kubeadm.yaml`: kubeadm `InitConfiguration` + `ClusterConfiguration`
//!   (external etcd, control-plane endpoint on the FQDN, images from the private registry, CIS
//!   hardening) + `KubeletConfiguration`;
//! * `etc/kubernetes/audit-policy.yaml`, `etc/kubernetes/admission-config.yaml`;
//! * `etc/sysctl.d/90-airgap-kubelet.conf` (what `protectKernelDefaults` requires);
//!
//! The containerd mirror configuration is not rendered here: the runtime phase writes it before
//! containerd starts ([`crate::pull_config`]).
//!
//! Every document is parsed back into its [`schema`] type before anything is written, so a
//! template that drifted from the schema fails the phase instead of reaching kubeadm.

pub mod kubeadm;
pub mod schema;

use std::path::{Path, PathBuf};

use airgap::{BundleIndex, ImageReference, PackRecord, VerifiedIndex};
use registry::mirror::{MirrorTarget, RewriteMap};
use serde_json::json;

use crate::config::{InstallConfig, Node};
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
                    parent(r) == upstream_repository
                        && last(r) == name
                        && r.tag.as_deref() == Some(&version)
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
            // By name and tag, as kubeadm composes them (a pinned digest is the registry's).
            images: pulled
                .into_iter()
                .map(|r| ImageReference { digest: None, ..r }.to_string())
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
    /// The node being configured.
    pub node: &'a Node,
    pub layout: &'a NodeLayout,
    pub release: &'a VerifiedIndex,
    pub target: &'a MirrorTarget,
    pub rewrite: &'a RewriteMap,
    /// The kubelet the node runs (the bundle's, else PATH's), as the node sees it: its systemd
    /// unit is rendered only when there is one.
    pub kubelet: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error("rendered {file} does not match its schema")]
    Schema {
        file: &'static str,
        #[source]
        cause: schema::SchemaError,
    },
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub release: KubernetesRelease,
    pub files: Vec<RenderedFile>,
}

/// Renders the phase's files. Pure: the same inputs give byte-identical output.
pub fn render(inputs: &Inputs<'_>) -> Result<Rendered, RenderError> {
    let release = KubernetesRelease::from_bundle(inputs.release.index(), inputs.rewrite)?;
    let config = inputs.config;
    let layout = inputs.layout;
    let node = inputs.node;
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
    let kubelet_units = match inputs.kubelet {
        Some(kubelet) => {
            let values = Values::from([
                ("kubelet", json!(kubelet.display().to_string())),
                (
                    "runtime_endpoint",
                    json!(format!(
                        "unix://{}",
                        layout.node_path(&layout.containerd_socket()).display()
                    )),
                ),
            ]);
            let unit_values = Values::from([("kubelet", values["kubelet"].clone())]);
            vec![
                RenderedFile {
                    path: layout.kubelet_unit(),
                    bytes: template::KUBELET_UNIT.render(&unit_values)?.into_bytes(),
                    mode: PUBLIC,
                },
                RenderedFile {
                    path: layout.kubelet_dropin(),
                    bytes: template::KUBELET_DROPIN.render(&values)?.into_bytes(),
                    mode: PUBLIC,
                },
            ]
        }
        None => Vec::new(),
    };

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
    files.extend(kubelet_units);
    Ok(Rendered { release, files })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use airgap::{Digest, ImageRecord};

    const K8S: [&str; 5] = [
        "registry.k8s.io/kube-apiserver:v1.34.2",
        "registry.k8s.io/kube-controller-manager:v1.34.2",
        "registry.k8s.io/kube-scheduler:v1.34.2",
        "registry.k8s.io/kube-proxy:v1.34.2",
        "registry.k8s.io/coredns/coredns:v1.12.1",
    ];

    /// A bundle index holding `images` and a `k8s` pack of `version` naming them (shared
    /// with other modules' tests).
    pub(crate) fn index(version: &str, images: &[&str]) -> BundleIndex {
        let record = |r: &str| {
            let parsed = ImageReference::parse(r).unwrap();
            ImageRecord {
                source: r.into(),
                reference: parsed.to_string(),
                mirror_repository: parsed.mirror_repository(),
                digest: Digest::of(r.as_bytes()),
                upstream_digest: Digest::of(r.as_bytes()),
                media_type: airgap::oci::OCI_MANIFEST.into(),
                size: 1,
                signature: None,
                attestations: None,
            }
        };
        BundleIndex {
            format_version: 1,
            name: "b".into(),
            version: "1.0.0".parse().unwrap(),
            created: "2026-01-01T00:00:00Z".into(),
            expires: None,
            platforms: vec![],
            packs: vec![PackRecord {
                name: "kubernetes".into(),
                version: version.into(),
                layer: "k8s".into(),
                reference: format!("packs/kubernetes:{version}"),
                digest: Digest::of(b"pack"),
                images: images.iter().map(|i| i.to_string()).collect(),
            }],
            images: images.iter().map(|i| record(i)).collect(),
            entries: vec![],
            base: None,
            expected_blobs: vec![],
            signature_keys: vec![],
        }
    }

    /// `index` signed with a throwaway key and verified: the only way to a `VerifiedIndex`.
    fn signed(mut index: BundleIndex) -> VerifiedIndex {
        for path in ["oci-layout", "index.json"] {
            index.entries.push(airgap::EntryRecord {
                path: airgap::EntryPath::new(path).unwrap(),
                size: 1,
                sha256: Digest::of(path.as_bytes()),
            });
        }
        let key = airgap::SigningKey::generate().unwrap();
        let bytes = index.to_bytes();
        VerifiedIndex::verify(&bytes, &key.sign(&bytes), &key.public_key()).unwrap()
    }

    fn release(index: &BundleIndex) -> Result<KubernetesRelease, ReleaseError> {
        let target = MirrorTarget::parse("https://reg.internal:5000/airgap", false).unwrap();
        KubernetesRelease::from_bundle(index, &RewriteMap::new(index, &target))
    }

    #[test]
    fn the_k8s_pack_gives_version_and_mirrored_image_repositories() {
        let r = release(&index("1.34.2", &K8S)).unwrap();
        assert_eq!(r.version, "v1.34.2");
        assert_eq!(
            r.image_repository,
            "reg.internal:5000/airgap/registry.k8s.io"
        );
        assert_eq!(
            r.dns_image_repository,
            "reg.internal:5000/airgap/registry.k8s.io/coredns"
        );
        assert_eq!(r.dns_image_tag, "v1.12.1");
        assert_eq!(
            r.images[0],
            "reg.internal:5000/airgap/registry.k8s.io/kube-apiserver:v1.34.2"
        );
    }

    #[test]
    fn a_k8s_pack_kubeadm_cannot_work_with_is_refused() {
        let mut none = index("1.34.2", &K8S);
        none.packs[0].layer = "addon".into();
        assert_eq!(release(&none), Err(ReleaseError::NoPack));
        let e = release(&index("1.34.2", &K8S[..3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "k8s pack kubernetes:1.34.2 does not list registry.k8s.io/kube-proxy:v1.34.2, which kubeadm pulls; add it to the pack's images"
        );
        let no_dns = release(&index("1.34.2", &K8S[..4])).unwrap_err();
        assert!(no_dns.to_string().contains("coredns"), "{no_dns}");
        assert!(matches!(
            release(&index("1.34.3", &K8S)),
            Err(ReleaseError::VersionMismatch { .. })
        ));
        let old: Vec<String> = K8S
            .iter()
            .map(|i| i.replace("v1.34.2", "v1.29.0"))
            .collect();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        assert!(matches!(
            release(&index("1.29.0", &old)),
            Err(ReleaseError::TooOld { .. })
        ));
        let mut two = index("1.34.2", &K8S);
        two.packs.push(two.packs[0].clone());
        assert_eq!(release(&two), Err(ReleaseError::ManyPacks(2)));
    }

    #[test]
    fn rendering_is_deterministic_and_independent_of_the_root() {
        let config = InstallConfig::parse(
            "apiVersion: airgap/v1\nkind: Installation\nmetadata: {name: mgmt}\nspec:\n  mode: standalone\n  fqdn: mgmt.example.internal\n  nodes: [{name: node1, address: 10.0.0.5}]\n",
        )
        .unwrap();
        let index = index("1.34.2", &K8S);
        let target = MirrorTarget::parse("https://mgmt.example.internal:5000", false).unwrap();
        let rewrite = RewriteMap::new(&index, &target);
        let verified = signed(index);
        let node = config.resolve_node(None, &[]).unwrap();
        let render_at = |root: &str| {
            let layout = NodeLayout::new(root);
            let files = render(&Inputs {
                config: &config,
                node,
                layout: &layout,
                release: &verified,
                target: &target,
                rewrite: &rewrite,
                kubelet: Some(Path::new("/var/lib/airgap/bin/kubelet/1.34.2/kubelet")),
            })
            .unwrap()
            .files;
            files
                .into_iter()
                .map(|f| {
                    let rel = f.path.strip_prefix(root).unwrap().to_path_buf();
                    (rel, f.bytes, f.mode)
                })
                .collect::<Vec<_>>()
        };
        let a = render_at("/tmp/a");
        assert_eq!(a, render_at("/tmp/a"));
        assert_eq!(
            a,
            render_at("/srv/other/root"),
            "rendered files name node paths only"
        );
        // The kubelet's unit runs the given kubelet against airgap's containerd.
        let file = |name: &str| {
            a.iter()
                .find(|(p, _, _)| p.ends_with(name))
                .map(|(_, b, _)| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| panic!("{name} not rendered"))
        };
        assert!(file("kubelet.service")
            .contains("ExecStart=\"/var/lib/airgap/bin/kubelet/1.34.2/kubelet\""));
        assert!(file("10-airgap.conf")
            .contains("--container-runtime-endpoint=\"unix:///run/containerd/containerd.sock\""));
        assert!(
            !a.iter().any(|(p, _, _)| p.starts_with("etc/containerd")),
            "the runtime phase writes containerd's mirror configuration"
        );
    }
}
