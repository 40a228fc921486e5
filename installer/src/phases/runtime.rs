//! Phase runtime: the node's container runtime from the bundle. The `k8s` pack's binaries
//! (containerd, shim, runc, ctr, crictl, kubeadm, kubelet, kubectl, CNI plugins) are installed
//! at versioned paths; containerd is configured for the air gap (certs.d and registries.conf naming only the mirror, the bundle's pause
//! image, the bundle's runc, cgroups as the kubelet drives them), handed to the agent, and
//! ready when it answers over CRI with that sandbox image. A node with no containerd in the
//! bundle or on PATH is left without one, and the phase says so.

use std::path::PathBuf;
use std::time::Duration;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::{outcome, wait_for, InstallContext};
use crate::audit::Outcome;
use crate::containerd::{self, HostLimits, RuntimePrograms};
use crate::cri::{CriClient, CriError};
use crate::error::PhaseError;
use crate::files::{write_if_changed, PUBLIC};
use crate::journal::Phase;
use crate::kubernetes::RenderedFile;
use crate::layout::NodeLayout;
use crate::node_binaries::{self, NodeBinaries, Origin, CNI};
use crate::phase::Scope;
use crate::pull_config::{self, PullAccess};
use crate::service::ServiceSpec;

/// How long containerd has to answer over CRI once the agent started it.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let names: Vec<&str> = node_binaries::RUNTIME
        .iter()
        .chain(&node_binaries::KUBERNETES)
        .copied()
        .collect();
    let binaries = NodeBinaries::install(
        &ctx.content(),
        |p| p.layer == "k8s",
        &names,
        true,
        &ctx.layout.bin_dir(),
    )?;
    for file in &binaries.files {
        if file.change != node_binaries::Change::Unchanged {
            ctx.audit.record(
                "binary.install",
                &file.path.display().to_string(),
                Outcome::Done,
            );
        }
    }
    // Before containerd can start: without it a pull would go wherever the image's name says.
    let pull_files = render_pull_config(ctx).await?;
    ctx.write_rendered("runtime.pull-config", &pull_files)?;
    ctx.failpoint.reached(Phase::Runtime);
    let from_bundle = binaries.files.len();
    let replaced = binaries.replaced();
    let host = ctx.host.as_ref();
    let Some(containerd) = binaries.resolve("containerd", host) else {
        return Ok(format!(
            "{from_bundle} node binaries from the bundle; no containerd in the bundle or on PATH: no container runtime configured (add containerd, containerd-shim-runc-v2 and runc to the k8s pack's bin/)"
        ));
    };
    let runc = binaries.require("runc", host)?;
    let shim = binaries.require("containerd-shim-runc-v2", host)?;
    let index = ctx.release.verified().index();
    let sandbox = containerd::sandbox_image(index).ok_or(PhaseError::NoPauseImage)?;
    let programs = RuntimePrograms {
        containerd: containerd.path.clone(),
        runc: runc.path.clone(),
        shim: shim.path.clone(),
        cni_bin: binaries.resolve(CNI, host).and_then(|b| match b.origin {
            Origin::Bundle { .. } => Some(b.path),
            Origin::Path => None,
        }),
    };

    // A containerd airgap did not start owns the socket: configuring ours over it would
    // leave two runtimes fighting over the same containers.
    let socket = ctx.layout.containerd_socket();
    let service_file = ServiceSpec::path_in(&ctx.layout.services_dir(), "containerd");
    let cri = CriClient::new(&socket);
    if !service_file.exists() && cri.version().await.is_ok() {
        return Err(PhaseError::ForeignRuntime { socket });
    }

    let config_path = ctx.layout.containerd_config();
    let config =
        containerd::render_config(&ctx.layout, &programs, &sandbox, HostLimits::of_this_host());
    let config_changed = write_if_changed(&config_path, config.as_bytes(), PUBLIC)
        .map_err(PhaseError::io("writing", &config_path))?;
    ctx.audit.record(
        "containerd.config",
        &config_path.display().to_string(),
        outcome(config_changed),
    );
    let spec = containerd::service(&ctx.layout, &programs, &config);
    let changed = spec.write(&ctx.layout.services_dir())?;
    ctx.audit
        .record("service.define", "containerd", outcome(changed));
    let airgap = ctx.airgap_program()?;
    crate::agent::ensure_running(&ctx.layout, &airgap, ctx.host.as_ref())?;

    let unready = |source| PhaseError::RuntimeUnready {
        socket: socket.clone(),
        secs: READY_WITHIN.as_secs(),
        log: ctx.layout.log_dir().join("containerd.log"),
        source,
    };
    wait_for(READY_WITHIN, || async {
        let status = cri.status(true).await?;
        if status.runtime_ready() && status.sandbox_image().as_deref() == Some(sandbox.as_str()) {
            Ok(())
        } else {
            Err(CriError::NotReady {
                conditions: status.conditions.clone(),
                sandbox_image: status.sandbox_image(),
            })
        }
    })
    .await
    .map_err(unready)?;
    let version = cri.version().await.map_err(unready)?;
    // Ready means pulls stay inside: a configuration removed meanwhile is not ready.
    if let Some(path) = pull_config::drifted(&pull_files).into_iter().next() {
        return Err(PhaseError::PullConfigMissing { path });
    }
    let mut summary = format!(
        "{} {} ready on {} (sandbox image {sandbox}); {}; {}",
        version.runtime_name,
        version.runtime_version,
        socket.display(),
        containerd.describe(),
        runc.describe(),
    );
    summary.push_str(&format!("; {from_bundle} files from the bundle"));
    if replaced > 0 {
        summary.push_str(&format!(
            " ({replaced} on disk differed from the bundle and were replaced)"
        ));
    }
    Ok(summary)
}

/// The pull configuration for the release being installed, pointing at the registry the
/// registry phase seeded (the node's, or the cluster's external one) with containerd's login.
async fn render_pull_config(ctx: &mut InstallContext) -> Result<Vec<RenderedFile>, PhaseError> {
    let access = ctx.registry_access().await?;
    let mirror = ctx.take_mirror().await?;
    let credentials = access.pull_credentials();
    let files = pull_config::render(
        &ctx.layout,
        ctx.release.verified().index(),
        &PullAccess {
            target: &mirror.target,
            ca: (!access.ca_pem.is_empty()).then_some(access.ca_pem.as_slice()),
            credentials: credentials.as_ref(),
        },
    );
    ctx.mirror = Some(mirror);
    Ok(files)
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Runtime,
    about: "containerd, runc and the node binaries from the bundle, pulling through the registry",
    install: Some(Scope::Node),
    upgrade: InUpgrade::Then(Scope::Node),
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(run(ctx)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    let mut paths = vec![
        OwnedPath::config(layout.etc().join("containerd")),
        OwnedPath::shared_config(layout.containerd_certs_dir()),
        OwnedPath::config(layout.registries_conf()),
        OwnedPath::shared_config(layout.cni_conf_dir()),
        OwnedPath::state(layout.containerd_root()),
        OwnedPath::state(layout.containerd_state()),
    ];
    // containerd's host directories are shared with the node's own: only ours go on reset.
    if let Ok(dirs) = std::fs::read_dir(layout.containerd_certs_dir()) {
        let mut ours: Vec<PathBuf> = dirs
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|d| {
                std::fs::read_to_string(d.join("hosts.toml"))
                    .is_ok_and(|t| t.starts_with(registry::mirror::HOSTS_TOML_MARK))
            })
            .collect();
        ours.sort();
        paths.extend(ours.into_iter().map(OwnedPath::state));
    }
    paths
}
