//! The TUI's own local fleet: real `chord-node` processes on 127.0.0.1,
//! behind the [`Capacity`] seam plus the two things only a local fleet can
//! do (kill a node, stop them all).
//!
//! Port layout: node `i` listens for gRPC on `base + i` and serves its
//! HTTP gateway on `http_base + i`, two ranges that never interleave.
//! Removal is drain-then-stop: the node hands every key to its next
//! holders ([`PeerPool::drain`]), and only a complete hand-off lets the
//! process be stopped; an incomplete one leaves the node running and
//! returns the error. The fleet's processes die with it (kill on drop).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chord_node::peer::{PeerOptions, PeerPool};
use rand::seq::IndexedRandom;

use crate::capacity::{Capacity, CapacityState, Member, MemberState, Removal};
use crate::fleet::{Fleet, FleetOptions};

/// Most nodes `+` may start on one machine: beyond this the 2-core test
/// machines spend their time switching processes.
pub const MAX_LOCAL_NODES: usize = 64;
/// How long a draining node may take to hand off its keys.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM, on removal or quit.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the fleet's ports start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub grpc_base: u16,
    /// `None`: the nodes run without gateways.
    pub http_base: Option<u16>,
}

impl PortPlan {
    /// gRPC and gateway port of node `i`.
    pub fn ports(&self, i: usize) -> Result<(u16, Option<u16>)> {
        let add = |base: u16| u16::try_from(usize::from(base) + i).context("ports run past 65535");
        Ok((add(self.grpc_base)?, self.http_base.map(add).transpose()?))
    }
}

/// A fleet of local nodes that grows and shrinks through [`Capacity`].
#[derive(Debug)]
pub struct LocalFleet {
    fleet: Fleet,
    plan: PortPlan,
    /// Addresses in start order: `remove(None)` takes the newest.
    order: Vec<String>,
    pool: PeerPool,
}

impl LocalFleet {
    pub fn new(opts: FleetOptions, plan: PortPlan) -> Result<LocalFleet> {
        Ok(LocalFleet {
            fleet: Fleet::new(opts)?,
            plan,
            order: Vec::new(),
            pool: PeerPool::new(PeerOptions::default()),
        })
    }

    pub fn addrs(&self) -> Vec<String> {
        self.order.clone()
    }

    /// The gateway address of a node, if it runs one.
    pub fn http_of(&self, addr: &str) -> Option<String> {
        self.fleet.node(addr).and_then(|n| n.http.clone())
    }

    pub fn pid_of(&self, addr: &str) -> Option<u32> {
        self.fleet.node(addr).and_then(|n| n.pid())
    }

    /// `kill -9` one node of this fleet.
    pub async fn kill(&mut self, addr: &str) -> Result<()> {
        self.fleet.kill(addr).await?;
        self.order.retain(|a| a != addr);
        Ok(())
    }

    /// Drains `addr` and, if every key is confirmed elsewhere, stops it.
    pub async fn drain_and_stop(&mut self, addr: &str) -> Result<Removal> {
        if self.fleet.node(addr).is_none() {
            bail!("{addr} is not a node of this fleet");
        }
        let handoff = self
            .pool
            .drain(addr, DRAIN_DEADLINE)
            .await
            .with_context(|| format!("draining {addr}"))?;
        if !handoff.is_complete() {
            bail!(
                "{addr} could not hand off {} keys within {DRAIN_DEADLINE:?}; it keeps running",
                handoff.unconfirmed
            );
        }
        self.fleet.stop(addr, STOP_GRACE).await?;
        self.order.retain(|a| a != addr);
        Ok(Removal {
            member: Member {
                id: addr.to_string(),
                addr: Some(addr.to_string()),
                state: MemberState::Terminating,
            },
            handoff,
        })
    }

    /// Stops every node (SIGTERM, bounded wait, then SIGKILL).
    pub async fn stop_all(&mut self) {
        self.fleet.stop_all(STOP_GRACE).await;
        self.order.clear();
    }
}

impl Capacity for LocalFleet {
    async fn describe(&mut self) -> Result<CapacityState> {
        Ok(CapacityState {
            desired: self.order.len(),
            min: 1,
            max: MAX_LOCAL_NODES,
            members: self
                .order
                .iter()
                .map(|a| Member {
                    id: a.clone(),
                    addr: Some(a.clone()),
                    state: MemberState::InService,
                })
                .collect(),
        })
    }

    async fn add(&mut self) -> Result<Member> {
        if self.order.len() >= MAX_LOCAL_NODES {
            bail!("the local fleet is at its maximum of {MAX_LOCAL_NODES} nodes");
        }
        // The lowest free slot, so ports stay compact after removals.
        let mut slot = 0;
        let (port, http) = loop {
            let (port, http) = self.plan.ports(slot)?;
            if self.fleet.node(&format!("127.0.0.1:{port}")).is_none() {
                break (port, http);
            }
            slot += 1;
        };
        let join = self.order.choose(&mut rand::rng()).cloned();
        let addr = self
            .fleet
            .start_with_http(port, join.as_deref(), http)
            .await?;
        self.order.push(addr.clone());
        Ok(Member {
            id: addr.clone(),
            addr: Some(addr),
            state: MemberState::InService,
        })
    }

    async fn remove(&mut self, which: Option<&str>) -> Result<Removal> {
        if self.order.len() <= 1 {
            bail!("the last node of the fleet stays (q stops the fleet)");
        }
        let addr = match which {
            Some(a) => a.to_string(),
            None => self.order.last().cloned().context("the fleet is empty")?,
        };
        self.drain_and_stop(&addr).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_gateway_ports_are_separate_ranges() {
        let plan = PortPlan {
            grpc_base: 5057,
            http_base: Some(8057),
        };
        assert_eq!(plan.ports(0).unwrap(), (5057, Some(8057)));
        assert_eq!(plan.ports(7).unwrap(), (5064, Some(8064)));
        let plain = PortPlan {
            grpc_base: 65535,
            http_base: None,
        };
        assert_eq!(plain.ports(0).unwrap(), (65535, None));
        assert!(plain.ports(1).is_err());
    }
}
