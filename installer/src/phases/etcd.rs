//! Phase etcd: the binary (from the bundle, else PATH), this member's service definition,
//! the agent that supervises it, and a health check over mutual TLS.

use std::time::Duration;

use super::{outcome, InstallContext};
use crate::agent;
use crate::audit::Outcome;
use crate::cluster::protocol::EtcdJoin;
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
    let running_before = supervised_pid(ctx);
    let changed = member
        .service(&ctx.layout, &binary.path)
        .write(&ctx.layout.services_dir())?;
    ctx.audit.record("service.define", "etcd", outcome(changed));
    let (_, started) = agent::ensure_running(&ctx.layout, &ctx.exe, ctx.host.as_ref())?;
    if changed && !started {
        if let Some(old) = running_before {
            // The agent restarts etcd on the new definition on its next tick: the health
            // check below must see the new process, not the old one about to stop.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while supervised_pid(ctx) == Some(old) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if started {
        ctx.audit.record(
            "agent.launch",
            &ctx.layout.root().display().to_string(),
            Outcome::Done,
        );
    }
    ctx.failpoint.reached(Phase::Etcd);
    if let Some(join) = ctx.joining.clone() {
        promote(ctx, &join.etcd).await?;
    }
    healthy_unless_crashing(ctx).await?;
    Ok(format!(
        "etcd {} healthy at {} ({from})",
        member.name,
        member.client_url()
    ))
}

/// Promotes this node's member from learner to voter, through a voting member: etcd agrees
/// only once the learner's log caught up, so this retries until then.
async fn promote(ctx: &mut InstallContext, join: &EtcdJoin) -> Result<(), PhaseError> {
    const LIMIT: Duration = Duration::from_secs(90);
    let deadline = std::time::Instant::now() + LIMIT;
    let mut voters: Vec<String> = join.voters.clone();
    voters.push(ctx.member().client_url());
    loop {
        let mut last = None;
        for voter in &voters {
            let client = crate::etcd::client::for_node(&ctx.layout, voter)?;
            let result = async {
                let members = client.member_list().await?;
                match members.iter().find(|m| m.id == join.member_id) {
                    Some(m) if !m.is_learner => Ok(()),
                    _ => client.member_promote(join.member_id).await,
                }
            }
            .await;
            match result {
                Ok(()) => {
                    ctx.audit
                        .record("etcd.promote", &ctx.node.name.to_string(), Outcome::Done);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(PhaseError::Promote {
                member: ctx.node.name.to_string(),
                secs: LIMIT.as_secs(),
                log: ctx.layout.log_dir().join("etcd.log"),
                source: last.unwrap_or_else(|| crate::etcd::client::EtcdError::Unhealthy {
                    endpoint: "-".into(),
                    body: "no voting member to ask".into(),
                }),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pid the agent runs etcd as, if it runs it.
fn supervised_pid(ctx: &InstallContext) -> Option<u32> {
    agent::read_state(&ctx.layout)?.services.get("etcd")?.pid
}

/// etcd healthy within a minute, failing at once when the agent sees it exit again and again
/// (a binary that cannot start: an upgrade rolls back instead of waiting the minute out).
async fn healthy_unless_crashing(ctx: &mut InstallContext) -> Result<(), PhaseError> {
    const LIMIT: Duration = Duration::from_secs(60);
    let restarts = |ctx: &InstallContext| {
        agent::read_state(&ctx.layout)
            .and_then(|s| s.services.get("etcd").cloned())
            .map(|s| (s.restarts, s.last_exit))
    };
    let before = restarts(ctx).map(|(n, _)| n).unwrap_or(0);
    let client = ctx.etcd_client()?;
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let health = client.health().await;
        if health.is_ok() {
            return Ok(());
        }
        if let Some((now, last_exit)) = restarts(ctx) {
            if now >= before + 2 {
                return Err(PhaseError::EtcdCrashing {
                    restarts: now - before,
                    last_exit: last_exit.unwrap_or_default(),
                    log: ctx.layout.log_dir().join("etcd.log"),
                });
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(PhaseError::EtcdUnhealthy {
                secs: LIMIT.as_secs(),
                log: ctx.layout.log_dir().join("etcd.log"),
                source: health
                    .err()
                    .unwrap_or_else(|| crate::etcd::client::EtcdError::Unhealthy {
                        endpoint: client.endpoint().to_string(),
                        body: "no answer".into(),
                    }),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
