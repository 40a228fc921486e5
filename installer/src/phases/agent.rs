//! Phase agent: the systemd unit, and the agent confirmed running with healthy services.

use std::time::Duration;

use super::{etcd_healthy, outcome, InstallContext};
use crate::agent::{self, Launch};
use crate::error::PhaseError;
use crate::files::{write_if_changed, PUBLIC};
use crate::journal::Phase;

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let unit = agent::systemd_unit(&ctx.exe, &ctx.layout);
    let path = ctx.layout.systemd_unit();
    let changed = write_if_changed(&path, unit.as_bytes(), PUBLIC)
        .map_err(PhaseError::io("writing", &path))?;
    ctx.audit
        .record("agent.unit", &path.display().to_string(), outcome(changed));
    ctx.failpoint.reached(Phase::Agent);
    let (launch, _) = agent::ensure_running(&ctx.layout, &ctx.exe, ctx.host.as_ref())?;
    etcd_healthy(ctx, Duration::from_secs(60)).await?;
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
