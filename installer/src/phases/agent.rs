//! Phase agent: the systemd unit, and the agent confirmed running with healthy services.

use std::time::Duration;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::{etcd_healthy, outcome, wait_for, InstallContext};
use crate::agent::{self, Launch};
use crate::error::PhaseError;
use crate::files::{write_if_changed, PUBLIC};
use crate::journal::Phase;
use crate::layout::NodeLayout;
use crate::phase::Scope;

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let airgap = ctx.airgap_program()?;
    let unit = agent::systemd_unit(&airgap, &ctx.layout);
    let path = ctx.layout.systemd_unit();
    let changed = write_if_changed(&path, unit.as_bytes(), PUBLIC)
        .map_err(PhaseError::io("writing", &path))?;
    ctx.audit
        .record("agent.unit", &path.display().to_string(), outcome(changed));
    if ctx.config.spec.mode == crate::config::Mode::Ha {
        // The join API and the VIP election, supervised like etcd and the registry.
        let spec = crate::service::ServiceSpec {
            name: "cluster".into(),
            program: airgap.clone(),
            args: vec![
                // Info level: every VIP move is in cluster.log, with its time.
                "-v".into(),
                "cluster-service".into(),
                "--root".into(),
                ctx.layout.root().display().to_string(),
            ],
            env: Default::default(),
        };
        let changed = spec.write(&ctx.layout.services_dir())?;
        ctx.audit
            .record("service.define", "cluster", outcome(changed));
    }
    ctx.failpoint.reached(Phase::Agent);
    let (launch, _) = agent::ensure_running(&ctx.layout, &airgap, ctx.host.as_ref())?;
    let etcd = etcd_healthy(ctx, Duration::from_secs(60)).await?;
    if ctx.config.spec.mode == crate::config::Mode::Ha {
        // The join command is printed next: the join API must answer, and the VIP have a
        // holder, before anyone is told to use them.
        let join_api =
            std::net::SocketAddr::new(ctx.node.address, crate::cluster::protocol::JOIN_PORT);
        let limit = Duration::from_secs(30);
        wait_for(limit, || {
            let etcd = etcd.clone();
            async move {
                tokio::net::TcpStream::connect(join_api).await?;
                match etcd.get(crate::cluster::vip::VIP_HOLDER_KEY).await {
                    Ok(Some(_)) => Ok(()),
                    _ => Err(std::io::Error::other("no VIP holder yet")),
                }
            }
        })
        .await
        .map_err(|source| PhaseError::ClusterServiceDown {
            secs: limit.as_secs(),
            log: ctx.layout.log_dir().join("cluster.log"),
            source,
        })?;
    }
    let pid = agent::running_pid(&ctx.layout)?.unwrap_or(0);
    let how = match launch {
        Launch::Systemd => "airgap-agent.service (systemd)".to_string(),
        Launch::Detached => format!("detached, pid {pid}"),
    };
    ctx.outcome.launch = Some(launch);
    Ok(format!(
        "agent running ({how}); logs in {}",
        ctx.layout.log_dir().display()
    ))
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Agent,
    about: "the agent that supervises the node's services",
    install: Some(Scope::Node),
    upgrade: InUpgrade::Then(Scope::Node),
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(run(ctx)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![
        OwnedPath::config(layout.services_dir()),
        OwnedPath::state(layout.systemd_unit()),
    ]
}
