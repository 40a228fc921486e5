//! Phase platform: namespaces and addon manifests rendered with images pointed at the
//! private registry; applied with kubectl when a cluster exists.

use std::path::PathBuf;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::InstallContext;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::journal::Phase;
use crate::kubernetes::kubeadm::{self, ClusterInit};
use crate::layout::NodeLayout;
use crate::phase::Scope;

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let mirror = ctx.take_mirror().await?;
    let files = crate::platform::render(&ctx.content(), &ctx.layout, &mirror.rewrite);
    ctx.mirror = Some(mirror);
    let files = files?;
    let written = ctx.write_rendered("platform.render", &files)?;
    let keep: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    for stale in crate::platform::stale_files(&ctx.layout.manifests_dir(), &keep) {
        std::fs::remove_file(&stale).map_err(PhaseError::io("removing", &stale))?;
        ctx.audit.record(
            "platform.remove",
            &stale.display().to_string(),
            Outcome::Done,
        );
    }
    ctx.failpoint.reached(Phase::Platform);
    // The kubernetes phase's finding, or (when it was skipped) what the node shows.
    let cluster = ctx
        .cluster
        .clone()
        .unwrap_or_else(|| ClusterInit::observed(&ctx.layout));
    let applied = match cluster {
        ClusterInit::KubeadmMissing => "not applied: no cluster".to_string(),
        _ => {
            let found = ctx.program("kubectl").map(|b| b.path);
            let kubectl = kubeadm::apply_manifests(&ctx.layout, ctx.host.as_ref(), found)?
                .ok_or(PhaseError::KubectlMissing)?;
            ctx.audit.record_with(
                "platform.apply",
                &ctx.layout.manifests_dir().display().to_string(),
                Outcome::Done,
                Some(&kubectl.display().to_string()),
            );
            "applied with kubectl".to_string()
        }
    };
    Ok(format!(
        "{} manifests in {} ({written} changed); {applied}",
        files.len(),
        ctx.layout.manifests_dir().display()
    ))
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Platform,
    about: "the platform's manifests, applied once the cluster runs",
    install: Some(Scope::Cluster),
    upgrade: InUpgrade::Then(Scope::Cluster),
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(run(ctx)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![OwnedPath::config(layout.manifests_dir())]
}
