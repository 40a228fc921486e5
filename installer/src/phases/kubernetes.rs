//! Phase kubernetes: render and self-check the configuration (kubeadm, kubelet, audit
//! policy, admission), then `kubeadm init` when the node has kubeadm and
//! no cluster yet; in an upgrade, `kubeadm upgrade apply` on the first node and `kubeadm
//! upgrade node` on the others, when a cluster runs.

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::InstallContext;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::journal::{Phase, WorkflowKind};
use crate::kubernetes::kubeadm::{self, ClusterInit, ClusterUpgrade, UpgradeRole};
use crate::layout::NodeLayout;
use crate::phase::Scope;

pub(super) async fn run(
    ctx: &mut InstallContext,
    workflow: WorkflowKind,
) -> Result<String, PhaseError> {
    let mirror = ctx.take_mirror().await?;
    let kubelet = ctx
        .program("kubelet")
        .map(|b| ctx.layout.node_path(&b.path));
    let kubeadm = ctx.program("kubeadm").map(|b| b.path);
    let rendered = crate::kubernetes::render(&crate::kubernetes::Inputs {
        config: &ctx.config,
        node: &ctx.node,
        layout: &ctx.layout,
        release: ctx.release.verified(),
        target: &mirror.target,
        rewrite: &mirror.rewrite,
        kubelet: kubelet.as_deref(),
    });
    ctx.mirror = Some(mirror);
    let rendered = rendered?;
    let (first, rest) = rendered.files.split_at(1.min(rendered.files.len()));
    let mut written = ctx.write_rendered("kubernetes.render", first)?;
    ctx.failpoint.reached(Phase::Kubernetes);
    written += ctx.write_rendered("kubernetes.render", rest)?;
    let audit_dir = ctx.layout.kubernetes_audit_dir();
    std::fs::create_dir_all(&audit_dir).map_err(PhaseError::io("creating", &audit_dir))?;
    let release = &rendered.release;
    if workflow == WorkflowKind::Upgrade {
        // Nodes upgrade in install.yaml's order: the first one moves the cluster.
        let role = if ctx.config.spec.nodes.first().map(|n| &n.name) == Some(&ctx.node.name) {
            UpgradeRole::Apply
        } else {
            UpgradeRole::Node
        };
        let upgraded = kubeadm::upgrade(
            &ctx.layout,
            ctx.host.as_ref(),
            kubeadm,
            role,
            &release.version,
        )?;
        let ran = match &upgraded {
            ClusterUpgrade::Upgraded { role, version } => {
                let what = match role {
                    UpgradeRole::Apply => format!("kubeadm upgrade apply {version} ran"),
                    UpgradeRole::Node => "kubeadm upgrade node ran".to_string(),
                };
                ctx.audit.record_with(
                    "kubeadm.upgrade",
                    &ctx.layout.admin_kubeconfig().display().to_string(),
                    Outcome::Done,
                    Some(&what),
                );
                what
            }
            ClusterUpgrade::NoCluster => "no cluster on this node to upgrade".to_string(),
            ClusterUpgrade::KubeadmMissing => {
                "kubeadm not on PATH: configuration rendered only".to_string()
            }
        };
        let observed = ClusterInit::observed(&ctx.layout);
        ctx.cluster = Some(observed.clone());
        ctx.outcome.cluster = Some(observed);
        return Ok(format!(
            "Kubernetes {} from {}; {} of {} files changed; {ran}",
            release.version,
            release.pack,
            written,
            rendered.files.len()
        ));
    }
    // A joining node never inits a second cluster: it joins the control plane.
    let init = if ctx.joining.is_some() {
        written += render_join(ctx)?;
        kubeadm::join(&ctx.layout, ctx.host.as_ref(), kubeadm)?
    } else {
        kubeadm::init(&ctx.layout, ctx.host.as_ref(), kubeadm)?
    };
    let ran = match &init {
        ClusterInit::Initialized { kubeadm } => {
            ctx.audit.record_with(
                "kubeadm.init",
                &ctx.layout.kubeadm_config().display().to_string(),
                Outcome::Done,
                Some(&kubeadm.display().to_string()),
            );
            if ctx.joining.is_some() {
                "kubeadm join --control-plane ran".to_string()
            } else {
                "kubeadm init ran".to_string()
            }
        }
        ClusterInit::AlreadyInitialized => "cluster already initialized".to_string(),
        ClusterInit::KubeadmMissing => {
            "kubeadm not on PATH: configuration rendered only, no cluster started".to_string()
        }
    };
    ctx.cluster = Some(init.clone());
    ctx.outcome.cluster = Some(init);
    Ok(format!(
        "Kubernetes {} from {} ({} images from {}); {} of {} files changed; {ran}",
        release.version,
        release.pack,
        release.images.len(),
        release.image_repository,
        written,
        rendered.files.len()
    ))
}

/// A joining node's `kubeadm-join.yaml` (a control-plane `JoinConfiguration`, schema-checked)
/// and the kubeconfig its discovery reads: the cluster's FQDN endpoint and CA, and a client
/// certificate for `system:node:<name>` issued here by the cluster CA the node received, so
/// kubeadm needs no bootstrap token. Returns how many files changed.
fn render_join(ctx: &InstallContext) -> Result<usize, PhaseError> {
    use crate::pki::{CertificateAuthority, LeafSpec, PairPaths, Usage};
    use base64::Engine;
    let layout = &ctx.layout;
    let name = ctx.config.metadata.name.as_str();
    let (ca, _) = CertificateAuthority::ensure(
        &PairPaths::new(&layout.pki_dir(), "ca"),
        &format!("{name}-ca"),
    )?;
    let pair = PairPaths::new(&layout.etc().join("pki"), "kubelet-discovery");
    ca.ensure_leaf(
        &pair,
        &LeafSpec {
            common_name: format!("system:node:{}", ctx.node.name),
            organization: Some("system:nodes".into()),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: Usage::Client,
        },
    )?;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(PhaseError::io("reading", p));
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let key = zeroize::Zeroizing::new(read(&pair.key)?);
    let user = format!("system:node:{}", ctx.node.name);
    let kubeconfig = zeroize::Zeroizing::new(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://{}:{}\n    certificate-authority-data: {}\ncontexts:\n- name: {user}@{name}\n  context: {{cluster: {name}, user: \"{user}\"}}\ncurrent-context: {user}@{name}\nusers:\n- name: \"{user}\"\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        ctx.config.spec.fqdn,
        crate::kubernetes::API_SERVER_PORT,
        b64(ca.cert_pem().as_bytes()),
        b64(&read(&pair.cert)?),
        b64(&key),
    ));
    let values = crate::template::Values::from([
        (
            "discovery_kubeconfig",
            serde_json::json!(layout
                .node_path(&layout.discovery_kubeconfig())
                .display()
                .to_string()),
        ),
        (
            "node_address",
            serde_json::json!(ctx.node.address.to_string()),
        ),
        ("node_name", serde_json::json!(ctx.node.name.as_str())),
    ]);
    let join = crate::template::KUBEADM_JOIN
        .render(&values)
        .map_err(crate::kubernetes::RenderError::from)?;
    crate::kubernetes::schema::parse_single::<crate::kubernetes::schema::JoinConfiguration>(&join)
        .map_err(|cause| crate::kubernetes::RenderError::Schema {
            file: "kubeadm-join.yaml",
            cause,
        })?;
    ctx.write_rendered(
        "kubernetes.render",
        &[
            crate::kubernetes::RenderedFile {
                path: layout.discovery_kubeconfig(),
                bytes: kubeconfig.as_bytes().to_vec(),
                mode: crate::files::PRIVATE,
            },
            crate::kubernetes::RenderedFile {
                path: layout.kubeadm_join_config(),
                bytes: join.into_bytes(),
                mode: crate::files::PRIVATE,
            },
        ],
    )
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Kubernetes,
    about:
        "hardened Kubernetes configuration; kubeadm init, join or upgrade where kubeadm is present",
    install: Some(Scope::Node),
    upgrade: InUpgrade::Then(Scope::Node),
    preflight: false,
    run: |ctx, _journal, workflow| Box::pin(run(ctx, workflow)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![
        OwnedPath::config(layout.etc().join("kubernetes")),
        OwnedPath::config(layout.audit_policy()),
        OwnedPath::config(layout.admission_config()),
        OwnedPath::config(layout.kubelet_unit()),
        OwnedPath::config(layout.kubelet_dropin()),
        OwnedPath::config(layout.kubelet_sysctl()),
    ]
}
