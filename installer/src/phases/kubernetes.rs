//! Phase kubernetes: render and self-check the configuration (kubeadm, kubelet, audit
//! policy, admission, containerd mirrors), then `kubeadm init` when the node has kubeadm and
//! no cluster yet.

use super::InstallContext;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::journal::Phase;
use crate::kubernetes::kubeadm::{self, ClusterInit};

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let access = ctx.registry_access().await?;
    let credentials = access.credentials();
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
        credentials: credentials.as_ref(),
        registry_ca: (!access.ca_pem.is_empty()).then_some(access.ca_pem.as_slice()),
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
    // A joining node never inits a second cluster: a control-plane join goes through
    // `kubeadm join`, which this version does not drive yet (the configuration is rendered).
    let init = if ctx.joining.is_some() {
        ClusterInit::observed(&ctx.layout)
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
            "kubeadm init ran".to_string()
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
