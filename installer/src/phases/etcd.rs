//! Phase etcd: the binary (from the bundle, else PATH), this member's service definition,
//! the agent that supervises it, and a health check over mutual TLS.

use std::time::{Duration, Instant};

use super::spec::{InUpgrade, PhaseSpec};
use super::{outcome, InstallContext};
use crate::agent;
use crate::audit::Outcome;
use crate::cluster::protocol::EtcdJoin;
use crate::error::PhaseError;
use crate::etcd::client::EtcdClient;
use crate::journal::Phase;
use crate::node_binaries::NodeBinaries;
use crate::phase::Scope;
use crate::service::ServiceSpec;

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
    let spec = member.service(
        &ctx.layout,
        &binary.path,
        gateway_listener(ctx.host.as_ref(), &binary.path),
    );
    // A running member about to restart on a new definition (an upgrade) leaves gracefully:
    // leadership moves to another voter first, so the cluster never waits out an election.
    let restarting = running_before.is_some()
        && ServiceSpec::load_all(&ctx.layout.services_dir())
            .ok()
            .and_then(|mut all| all.remove("etcd"))
            .is_some_and(|current| current != spec);
    if restarting {
        hand_over_leadership(ctx).await?;
    }
    let changed = spec.write(&ctx.layout.services_dir())?;
    ctx.audit.record("service.define", "etcd", outcome(changed));
    let airgap = ctx.airgap_program()?;
    let (_, started) = agent::ensure_running(&ctx.layout, &airgap, ctx.host.as_ref())?;
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
    if restarting {
        caught_up(ctx).await?;
    }
    let auth = if ctx.joining.is_none() && !ctx.recording_plan {
        secure(ctx).await?
    } else {
        ""
    };
    Ok(format!(
        "etcd {} healthy at {} ({from}){auth}",
        member.name,
        member.client_url()
    ))
}

/// How the etcd at `program` can serve the JSON gateway, by the version it reports.
fn gateway_listener(
    host: &dyn crate::host::Host,
    program: &std::path::Path,
) -> crate::etcd::GatewayListener {
    let output = host
        .run(program, &["--version".to_string()])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    crate::etcd::GatewayListener::from_version_output(&output)
}

/// On the node that founds the cluster: the users and roles of [`crate::etcd::auth`], then
/// authentication on. The passwords are written before etcd learns them, so a re-run after
/// any kill logs in with the same ones. A cluster of several members that has no passwords
/// was installed before authentication existed: its other nodes could not log in, so it is
/// left as it is.
async fn secure(ctx: &mut InstallContext) -> Result<&'static str, PhaseError> {
    use crate::etcd::auth::{self, EtcdPasswords};
    let passwords = match EtcdPasswords::load(&ctx.layout).map_err(PhaseError::io(
        "reading",
        &ctx.layout.etcd_password(auth::ROOT),
    ))? {
        Some(p) => p,
        None => {
            if own_member(ctx)?.member_list().await?.len() > 1 {
                return Ok("; authentication stays off (cluster installed before it existed)");
            }
            let p = EtcdPasswords::generate().map_err(crate::keys::KeysError::Random)?;
            p.write(&ctx.layout).map_err(PhaseError::io(
                "writing",
                &ctx.layout.etcd_password(auth::ROOT),
            ))?;
            p
        }
    };
    auth::enable(&own_member(ctx)?, &passwords).await?;
    ctx.forget_etcd_client();
    ctx.audit.record("etcd.auth", "enable", Outcome::Done);
    Ok("; authentication on (users root, airgap-registry)")
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

/// How long leadership may take to move, and a restarted member to catch up.
const HANDOVER: Duration = Duration::from_secs(20);

/// This node's own member, asked directly (no fallback to the others).
fn own_member(ctx: &InstallContext) -> Result<EtcdClient, PhaseError> {
    Ok(crate::etcd::client::for_node(
        &ctx.layout,
        &ctx.member().client_url(),
    )?)
}

/// When this node's member leads, moves leadership to another healthy voter and waits until
/// this member follows it. Nothing to do on a single member or a follower.
async fn hand_over_leadership(ctx: &mut InstallContext) -> Result<(), PhaseError> {
    let own = own_member(ctx)?;
    let Ok(status) = own.member_status().await else {
        // Not answering: not leading anything, and restarting it costs no election.
        return Ok(());
    };
    if status.leader != status.member_id {
        return Ok(());
    }
    let mut target = None;
    for m in own.member_list().await? {
        if m.id == status.member_id || m.is_learner || m.name.is_empty() {
            continue;
        }
        let Some(url) = m.client_urls.first() else {
            continue;
        };
        let healthy = match crate::etcd::client::for_node(&ctx.layout, url) {
            Ok(client) => tokio::time::timeout(Duration::from_secs(2), client.health())
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        if healthy {
            target = Some(m);
            break;
        }
    }
    let Some(target) = target else {
        // The only voter (standalone), or no healthy peer to hand over to.
        return Ok(());
    };
    let deadline = Instant::now() + HANDOVER;
    loop {
        let moved = match own.member_status().await {
            Ok(now) => now.leader != 0 && now.leader != status.member_id,
            Err(_) => false,
        };
        if moved {
            ctx.audit
                .record("etcd.leader.move", &target.name, Outcome::Done);
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PhaseError::LeaderHandover {
                to: target.name.clone(),
                secs: HANDOVER.as_secs(),
            });
        }
        // Accepted only by the leader; asked again until leadership moved.
        let _ = own.move_leader(target.id).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the restarted member follows a leader and has applied the leader's log as
/// far as it went when the member came back: only then does the next node move.
async fn caught_up(ctx: &mut InstallContext) -> Result<(), PhaseError> {
    let own = own_member(ctx)?;
    let cluster = ctx.etcd_client()?;
    let deadline = Instant::now() + HANDOVER;
    let mut target: Option<u64> = None;
    loop {
        if let Ok(status) = own.member_status().await {
            if status.leader != 0 && target.is_none() {
                target = leader_index(&cluster, &ctx.layout, status.leader).await;
            }
            if let Some(index) = target {
                if status.raft_applied_index >= index {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(PhaseError::NotCaughtUp {
                member: ctx.node.name.to_string(),
                secs: HANDOVER.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The raft index of member `leader`, asked of it.
async fn leader_index(
    cluster: &EtcdClient,
    layout: &crate::layout::NodeLayout,
    leader: u64,
) -> Option<u64> {
    let members = cluster.member_list().await.ok()?;
    let url = members
        .iter()
        .find(|m| m.id == leader)?
        .client_urls
        .first()?;
    let client = crate::etcd::client::for_node(layout, url).ok()?;
    Some(client.member_status().await.ok()?.raft_index)
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

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Etcd,
    about: "etcd with TLS and authentication, started and healthy",
    install: Some(Scope::Node),
    upgrade: InUpgrade::Then(Scope::Node),
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(run(ctx)),
    owns: super::spec::owns_nothing,
    check: None,
};
