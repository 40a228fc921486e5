//! The virtual IP that follows the healthy nodes. Every HA node's agent runs one
//! [`VipElection`]: the holder is whoever put `/airgap/cluster/vip-holder` under its etcd
//! lease; the holder adds the VIP to its interface and announces it with gratuitous ARP so
//! the network's caches move at once.
//!
//! No split brain: a node acts only on what etcd confirmed through quorum (lease grants,
//! renewals and reads are linearizable), and a holder drops the VIP on its own clock when it
//! has not renewed within the lease's TTL minus a margin. Etcd frees the key only a full TTL
//! after the last renewal it received, which is later than the last one the holder sent, so
//! the old holder has dropped the VIP before anyone else can take it. A node cut off from
//! quorum can neither renew nor acquire: it never holds the VIP.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd::{Compare, LeaseId, Op};

use crate::etcd::client::EtcdClient;

pub const VIP_HOLDER_KEY: &str = "/airgap/cluster/vip-holder";
/// Lease TTL: the longest the VIP stays on a dead holder.
const TTL: Duration = Duration::from_secs(3);
/// How long before the lease could expire the holder lets go.
const MARGIN: Duration = Duration::from_millis(700);
const TICK: Duration = Duration::from_millis(400);

pub struct VipElection {
    pub etcd: EtcdClient,
    pub node: String,
    pub vip: IpAddr,
    /// The interface holding this node's address, which the VIP joins.
    pub interface: String,
}

enum Held {
    No,
    Yes {
        lease: LeaseId,
        renewed_sent: Instant,
    },
}

impl VipElection {
    /// Runs until the task is dropped; a holder being stopped removes the VIP first
    /// ([`VipElection::release`]).
    pub async fn run(&self) {
        let mut held = Held::No;
        let mut lease: Option<(LeaseId, Instant)> = None;
        loop {
            held = match held {
                Held::No => self.try_acquire(&mut lease).await,
                Held::Yes {
                    lease: id,
                    renewed_sent,
                } => self.keep(id, renewed_sent).await,
            };
            tokio::time::sleep(TICK).await;
        }
    }

    /// One attempt to become the holder; keeps its lease alive between attempts.
    async fn try_acquire(&self, lease: &mut Option<(LeaseId, Instant)>) -> Held {
        let sent = Instant::now();
        let id = match lease {
            Some((id, _)) => match self.etcd.lease_keep_alive(*id).await {
                Ok(Some(_)) => *id,
                _ => {
                    *lease = None;
                    return Held::No;
                }
            },
            None => match self.etcd.lease_grant(TTL.as_secs()).await {
                Ok(id) => {
                    *lease = Some((id, sent));
                    id
                }
                Err(_) => return Held::No,
            },
        };
        let won = self
            .etcd
            .txn(
                &[Compare::Absent(VIP_HOLDER_KEY.into())],
                &[Op::PutWithLease(
                    VIP_HOLDER_KEY.into(),
                    self.node.as_bytes().to_vec(),
                    id,
                )],
            )
            .await
            .unwrap_or(false);
        if !won {
            return Held::No;
        }
        *lease = None;
        match self.add() {
            Ok(()) => {
                tracing::info!(vip = %self.vip, interface = %self.interface, "holding the VIP");
                self.announce();
                Held::Yes {
                    lease: id,
                    renewed_sent: sent,
                }
            }
            Err(e) => {
                tracing::warn!(vip = %self.vip, error = %e, "cannot add the VIP; giving it up");
                let _ = self.etcd.lease_revoke(id).await;
                Held::No
            }
        }
    }

    async fn keep(&self, lease: LeaseId, renewed_sent: Instant) -> Held {
        let sent = Instant::now();
        let renewed = matches!(self.etcd.lease_keep_alive(lease).await, Ok(Some(_)))
            && matches!(self.etcd.get(VIP_HOLDER_KEY).await,
                        Ok(Some(kv)) if kv.value == self.node.as_bytes());
        if renewed {
            return Held::Yes {
                lease,
                renewed_sent: sent,
            };
        }
        if renewed_sent.elapsed() + MARGIN < TTL {
            // Not confirmed this time; the lease is still certainly ours for a while.
            return Held::Yes {
                lease,
                renewed_sent,
            };
        }
        tracing::warn!(vip = %self.vip, "lost the VIP lease (no quorum or another holder); removing the VIP");
        self.remove();
        Held::No
    }

    fn ip(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("ip").args(args).output()
    }

    fn cidr(&self) -> String {
        match self.vip {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        }
    }

    fn add(&self) -> std::io::Result<()> {
        let out = self.ip(&["addr", "replace", &self.cidr(), "dev", &self.interface])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn remove(&self) {
        let _ = self.ip(&["addr", "del", &self.cidr(), "dev", &self.interface]);
    }

    /// Removes the VIP from this node (on shutdown). The key goes with the lease, which
    /// expires within its TTL; no other node acts before that.
    pub fn release(&self) {
        self.remove();
    }

    fn announce(&self) {
        if let IpAddr::V4(vip) = self.vip {
            if let Err(e) = super::garp::announce(&self.interface, vip) {
                tracing::warn!(vip = %self.vip, error = %e, "gratuitous ARP failed");
            }
        }
    }
}

/// The interface that carries `address` on this machine.
pub fn interface_of(address: IpAddr) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _index = fields.next()?;
        let name = fields.next()?;
        let _family = fields.next()?;
        let cidr = fields.next()?;
        let ip: IpAddr = cidr.split('/').next()?.parse().ok()?;
        (ip == address).then(|| {
            name.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or(name)
                .to_string()
        })
    })
}
