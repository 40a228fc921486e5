//! The virtual IP that follows the healthy nodes. Every HA node's `cluster` service runs one
//! [`VipElection`]: the holder is the node `/airgap/cluster/vip-holder` names; it renews the
//! claim by rewriting the key (a compare-and-swap on the revision it last wrote) every tick.
//! Every node reconciles its interface with the claim on every tick: the holder carries the
//! VIP (and announces it with gratuitous ARP, a few times, so caches move at once), every
//! other node removes it, so an address left behind by a killed process, or a holder that came
//! back after another took over, never answers next to the real one.
//!
//! No split brain, by two clocks that never need to agree on the time, only on its rate:
//!
//! * the holder drops the VIP once [`HOLD`] has passed since it *sent* the last renewal etcd
//!   confirmed (every etcd call is bounded so it cannot overstay waiting for one);
//! * another node takes the claim over only after the key's revision stayed the same for
//!   [`TAKEOVER`] on its own clock, counted from when it first saw that revision, which is
//!   after the holder sent it. `TAKEOVER` exceeds `HOLD` by a margin, so the old holder has
//!   let go before the new one adds the VIP. The takeover is itself a compare-and-swap on that
//!   revision: a renewal that lands first makes it fail.
//!
//! The address itself expires: the holder adds it with a lifetime of [`LIFETIME`] and
//! refreshes it with each confirmed renewal, so a holder whose process was killed (the
//! `cluster` service alone, or every process on the node) loses the address within about a
//! second, well before anyone may take over, and never leaves it behind to answer ARP next to
//! the new holder. A restarted service finds the claim still naming its node and takes it back
//! at once; one that comes back after another node took over removes whatever is left.
//!
//! Everything goes through etcd's quorum: a node cut off from it can neither renew nor take
//! over, so it never holds the VIP. Failover does not wait for etcd's lease expiry, which a
//! new etcd leader extends by an election timeout when the old leader died with the holder:
//! a dead holder is replaced about `TAKEOVER` + one tick after its last renewal (measured
//! by `bench/ha.sh`).

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd::{Compare, Op};

use crate::etcd::client::EtcdClient;

pub const VIP_HOLDER_KEY: &str = "/airgap/cluster/vip-holder";
/// How often the holder renews and every node reconciles its interface with the claim.
const TICK: Duration = Duration::from_millis(200);
/// How long after sending its last confirmed renewal a holder still carries the VIP.
const HOLD: Duration = Duration::from_millis(1200);
/// What the holder keeps in hand to remove the address before `HOLD` runs out.
const GUARD: Duration = Duration::from_millis(150);
/// How long a claim must stay unrenewed, as another node sees it, before that node takes
/// over: `HOLD` plus a margin for scheduling delays on a loaded node.
const TAKEOVER: Duration = Duration::from_millis(1800);
/// The longest any one etcd call of the loop may take (etcd on the nodes' network answers in
/// milliseconds; a slower answer counts as none).
const CALL: Duration = Duration::from_millis(300);
/// The lifetime the kernel gives the address (`valid_lft`, whole seconds): refreshed with
/// every confirmed renewal, it lapses on its own when the holder stops.
const LIFETIME: Duration = Duration::from_secs(1);
/// Gratuitous ARP announcements after taking the VIP, one per tick.
const ANNOUNCEMENTS: u32 = 3;

pub struct VipElection {
    pub etcd: EtcdClient,
    pub node: String,
    pub vip: IpAddr,
    /// The interface holding this node's address, which the VIP joins.
    pub interface: String,
}

/// This node's part in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Watches the claim: the revision it last saw and when it first saw it.
    Follower { seen: Option<(i64, Instant)> },
    /// Holds the claim at `revision`; `sent` is when the renewal that wrote it was sent.
    Holder {
        revision: i64,
        sent: Instant,
        announce: u32,
    },
}

/// What a follower does about the claim it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Nobody holds it: claim it if it is still absent.
    Claim,
    /// Take it over (or back, when it names this node) if it is still at this revision.
    TakeOver(i64),
    Wait,
}

/// The decision a follower takes on reading the claim, `now`.
fn follow(
    claim: Option<(&[u8], i64)>,
    me: &str,
    seen: &mut Option<(i64, Instant)>,
    now: Instant,
) -> Move {
    let Some((holder, revision)) = claim else {
        *seen = None;
        return Move::Claim;
    };
    // A claim naming this node is a holder of this node that stopped (a restarted service,
    // one that lost touch with quorum for a while): nobody else moved it since, or its
    // revision would differ, so taking it back at that revision is safe at once.
    if holder == me.as_bytes() {
        return Move::TakeOver(revision);
    }
    match *seen {
        Some((r, first)) if r == revision => {
            if now.duration_since(first) >= TAKEOVER {
                Move::TakeOver(revision)
            } else {
                Move::Wait
            }
        }
        _ => {
            *seen = Some((revision, now));
            Move::Wait
        }
    }
}

impl VipElection {
    /// Runs until the task is dropped. The interface is reconciled before the first election
    /// step, so a VIP left on it by a killed predecessor goes at once.
    pub async fn run(&self) {
        let mut role = Role::Follower { seen: None };
        loop {
            let started = Instant::now();
            role = match role {
                Role::Follower { seen } => self.follow_once(seen).await,
                Role::Holder {
                    revision,
                    sent,
                    announce,
                } => self.renew_once(revision, sent, announce).await,
            };
            let next = started + TICK;
            let wake = match role {
                // Never sleep past the moment the VIP must be gone.
                Role::Holder { sent, .. } => next.min(sent + HOLD - GUARD),
                Role::Follower { .. } => next,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    async fn follow_once(&self, mut seen: Option<(i64, Instant)>) -> Role {
        if self.carried() {
            tracing::warn!(vip = %self.vip, interface = %self.interface,
                "removing the VIP from this node: it does not hold the claim");
            self.remove();
        }
        // A local read: etcd 3.4 stalls linearizable reads for seconds after a leader change
        // (a read index the new leader drops until it committed in its term), and the
        // takeover below is a compare-and-swap through quorum anyway. A stale read only makes
        // this node count from later, or lose the swap.
        let claim = match self.call(self.etcd.get_local(VIP_HOLDER_KEY)).await {
            Some(Ok(kv)) => kv,
            // Unknown: this node does not act on what quorum did not confirm.
            _ => return Role::Follower { seen },
        };
        let sent = Instant::now();
        let decision = follow(
            claim
                .as_ref()
                .map(|kv| (kv.value.as_slice(), kv.mod_revision)),
            &self.node,
            &mut seen,
            sent,
        );
        let compare = match decision {
            Move::Wait => return Role::Follower { seen },
            Move::Claim => Compare::Absent(VIP_HOLDER_KEY.into()),
            Move::TakeOver(revision) => Compare::ModRevision(VIP_HOLDER_KEY.into(), revision),
        };
        let put = Op::Put(VIP_HOLDER_KEY.into(), self.node.as_bytes().to_vec());
        match self.call(self.etcd.txn_at(&[compare], &[put])).await {
            Some(Ok(Some(revision))) => {
                tracing::info!(vip = %self.vip, interface = %self.interface, revision, "took the VIP claim");
                self.hold(revision, sent, ANNOUNCEMENTS)
            }
            other => {
                tracing::info!(outcome = ?other.map(|r| r.map(|_| "lost the race")), "could not take the VIP claim");
                Role::Follower { seen: None }
            }
        }
    }

    async fn renew_once(&self, revision: i64, sent: Instant, announce: u32) -> Role {
        let must_drop = sent + HOLD - GUARD;
        let now = Instant::now();
        if now >= must_drop {
            return self.drop_vip("no renewal confirmed in time (no quorum?)");
        }
        let compare = [Compare::ModRevision(VIP_HOLDER_KEY.into(), revision)];
        let put = [Op::Put(
            VIP_HOLDER_KEY.into(),
            self.node.as_bytes().to_vec(),
        )];
        let renewal = self.etcd.txn_at(&compare, &put);
        match tokio::time::timeout(CALL.min(must_drop - now), renewal).await {
            Ok(Ok(Some(next))) => self.hold(next, now, announce),
            Ok(Ok(None)) => match self.call(self.etcd.get_local(VIP_HOLDER_KEY)).await {
                // A renewal of ours that committed after its call timed out: only this node
                // writes its name. Not a confirmation (when it was sent is unknown), but the
                // revision to renew next.
                Some(Ok(Some(kv))) if kv.value == self.node.as_bytes() => Role::Holder {
                    revision: kv.mod_revision,
                    sent,
                    announce,
                },
                // Another node took it over, or `node remove` deleted it.
                Some(Ok(_)) => self.drop_vip("the claim moved to another node"),
                _ => Role::Holder {
                    revision,
                    sent,
                    announce,
                },
            },
            // Not confirmed this time: still ours until `must_drop`, and retried next tick.
            unconfirmed => {
                tracing::info!(outcome = ?unconfirmed.map(|r| r.map(|_| ())), "VIP renewal not confirmed");
                Role::Holder {
                    revision,
                    sent,
                    announce,
                }
            }
        }
    }

    /// Carries the VIP for a claim confirmed at `revision` (sent at `sent`): adds it, or
    /// refreshes its lifetime, and announces it while announcements are left. A confirmation
    /// that took longer than [`CALL`] does not refresh it: the address must lapse before
    /// anyone may take over, counted from `sent`.
    fn hold(&self, revision: i64, sent: Instant, announce: u32) -> Role {
        if sent.elapsed() <= CALL {
            if let Err(e) = self.add() {
                tracing::warn!(vip = %self.vip, error = %e, "cannot add the VIP");
            }
        }
        if announce > 0 {
            self.announce();
        }
        Role::Holder {
            revision,
            sent,
            announce: announce.saturating_sub(1),
        }
    }

    fn drop_vip(&self, why: &str) -> Role {
        tracing::warn!(vip = %self.vip, "{why}; removing the VIP");
        self.remove();
        Role::Follower { seen: None }
    }

    /// `call` bounded by [`CALL`]; `None` when it took longer.
    async fn call<T>(&self, call: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(CALL, call).await.ok()
    }

    fn cidr(&self) -> String {
        match self.vip {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        }
    }

    /// Whether this node's interface carries the VIP now.
    fn carried(&self) -> bool {
        carries(&self.interface, self.vip)
    }

    fn add(&self) -> std::io::Result<()> {
        let lifetime = LIFETIME.as_secs().to_string();
        let out = Command::new("ip")
            .args(["addr", "replace", &self.cidr(), "dev", &self.interface])
            .args(["valid_lft", &lifetime, "preferred_lft", &lifetime])
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &self.cidr(), "dev", &self.interface])
            .output();
    }

    /// Lets go on shutdown: the VIP off the interface, then the claim deleted if it is still
    /// this node's, so another node takes over at once instead of after [`TAKEOVER`].
    pub async fn release(&self) {
        self.remove();
        if let Some(Ok(Some(kv))) = self.call(self.etcd.get(VIP_HOLDER_KEY)).await {
            if kv.value == self.node.as_bytes() {
                let _ = self
                    .call(self.etcd.txn(
                        &[Compare::ModRevision(VIP_HOLDER_KEY.into(), kv.mod_revision)],
                        &[Op::Delete(VIP_HOLDER_KEY.into())],
                    ))
                    .await;
            }
        }
    }

    fn announce(&self) {
        if let IpAddr::V4(vip) = self.vip {
            if let Err(e) = super::garp::announce(&self.interface, vip) {
                tracing::warn!(vip = %self.vip, error = %e, "gratuitous ARP failed");
            }
        }
    }
}

/// The addresses on this machine, as `(interface, address)`.
fn addresses() -> Vec<(String, IpAddr)> {
    let Ok(out) = Command::new("ip").args(["-o", "addr", "show"]).output() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _index = fields.next()?;
            let name = fields.next()?;
            let _family = fields.next()?;
            let cidr = fields.next()?;
            let ip: IpAddr = cidr.split('/').next()?.parse().ok()?;
            let name = name.trim_end_matches(':');
            Some((name.split('@').next().unwrap_or(name).to_string(), ip))
        })
        .collect()
}

/// Whether `interface` carries `address`.
pub fn carries(interface: &str, address: IpAddr) -> bool {
    addresses()
        .iter()
        .any(|(name, ip)| name == interface && *ip == address)
}

/// The interface that carries `address` on this machine.
pub fn interface_of(address: IpAddr) -> Option<String> {
    addresses()
        .into_iter()
        .find(|(_, ip)| *ip == address)
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel checks address lifetimes on its own timer, late by up to a quarter second.
    const LIFETIME_SLACK: Duration = Duration::from_millis(250);

    #[test]
    fn the_timings_leave_the_old_holder_gone_before_a_takeover() {
        // The holder lets go `GUARD` before `HOLD` runs out; a takeover waits `TAKEOVER`
        // from a revision the holder sent before the watcher saw it.
        assert!(TAKEOVER >= HOLD + Duration::from_millis(500));
        assert!(CALL < HOLD - GUARD);
        // A killed holder's address lapses, refreshed at most CALL after the renewal was
        // sent, before a takeover counted from that send.
        assert!(CALL + LIFETIME + LIFETIME_SLACK + Duration::from_millis(250) <= TAKEOVER);
        // ... and a live one refreshes it more often than it lapses.
        assert!(TICK + CALL < LIFETIME);
        // A dead holder is replaced within 3 s: TAKEOVER, a tick to notice, a call to claim.
        assert!(TAKEOVER + TICK + CALL <= Duration::from_secs(3));
    }

    #[test]
    fn a_follower_takes_over_only_a_claim_unchanged_for_the_takeover_time() {
        let t0 = Instant::now();
        let mut seen = None;
        // Nobody holds it: claim.
        assert_eq!(follow(None, "node2", &mut seen, t0), Move::Claim);
        // node1 renews: every new revision restarts the count.
        let claim = Some((b"node1".as_slice(), 10));
        assert_eq!(follow(claim, "node2", &mut seen, t0), Move::Wait);
        let later = t0 + TAKEOVER - Duration::from_millis(1);
        assert_eq!(follow(claim, "node2", &mut seen, later), Move::Wait);
        let renewed = Some((b"node1".as_slice(), 11));
        assert_eq!(follow(renewed, "node2", &mut seen, later), Move::Wait);
        assert_eq!(
            follow(renewed, "node2", &mut seen, later + TAKEOVER / 2),
            Move::Wait
        );
        // Unchanged for TAKEOVER since first seen: take it over at that revision.
        assert_eq!(
            follow(renewed, "node2", &mut seen, later + TAKEOVER),
            Move::TakeOver(11)
        );
        // Its own stale claim: taken back at once.
        let mut fresh = None;
        assert_eq!(
            follow(Some((b"node2".as_slice(), 12)), "node2", &mut fresh, t0),
            Move::TakeOver(12)
        );
    }
}
