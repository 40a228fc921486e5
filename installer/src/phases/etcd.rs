//! Phase etcd: the binary (from the bundle, else PATH), this member's service definition,
//! the agent that supervises it, and a health check over mutual TLS.

use std::time::Duration;

use super::{etcd_healthy, outcome, InstallContext};
use crate::agent;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::journal::Phase;
use crate::node_binaries::NodeBinaries;

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let binaries = NodeBinaries::install(
        &ctx.content(),
        |_| true,
        &["etcd"],
        false,
        &ctx.layout.bin_dir(),
    )?;
    let binary = binaries.require("etcd", ctx.host.as_ref())?;
    let from = binary.describe();
    let member = ctx.member();
    let changed = member
        .service(&ctx.layout, &binary.path)
        .write(&ctx.layout.services_dir())?;
    ctx.audit.record("service.define", "etcd", outcome(changed));
    let (_, started) = agent::ensure_running(&ctx.layout, &ctx.exe, ctx.host.as_ref())?;
    if started {
        ctx.audit.record(
            "agent.launch",
            &ctx.layout.root().display().to_string(),
            Outcome::Done,
        );
    }
    ctx.failpoint.reached(Phase::Etcd);
    etcd_healthy(ctx, Duration::from_secs(60)).await?;
    Ok(format!(
        "etcd {} healthy at {} ({from})",
        member.name,
        member.client_url()
    ))
}
