//! [`LocalCapacity`]: the [`Capacity`] seam over a local [`Fleet`].
//!
//! `add` starts a node on a free slot of the [`PortLayout`] (one never used,
//! else the one freed longest ago), joining through a node that answers,
//! and returns once the new node answers. `remove` is drain-then-stop: the
//! chosen node (named; else one whose earlier drain did not complete; else
//! the newest) hands its keys to their next holders through `Drain`; only a
//! complete hand-off (every key confirmed elsewhere) is followed by SIGTERM.
//! An incomplete one returns an error and leaves the node running, so no
//! failure path destroys the last copy of a key. min, max and desired live
//! here, as an Auto Scaling group keeps them on AWS; `add` and `remove`
//! refuse to leave `[min, max]`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_node::peer::{NodeState, PeerOptions, PeerPool};
use chord_node::repair::HandoffReport;
use rand::seq::SliceRandom;
use tracing::{info, warn};

use super::{Fleet, PortLayout, STOP_TIMEOUT};
use crate::capacity::{Capacity, CapacityState, Member, MemberState, Removal};

/// How long a drained node may take to hand its keys over before the
/// removal gives up (and keeps the node). The node's own hand-off default
/// is 120 s; a local node on loopback with a few GiB needs far less.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// The bounds a local fleet scales within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalLimits {
    pub min: usize,
    pub max: usize,
}

impl LocalLimits {
    pub fn new(min: usize, max: usize) -> Result<LocalLimits> {
        if min == 0 {
            bail!("--min must be at least 1: a ring needs a node");
        }
        if min > max {
            bail!("--min {min} is above --max {max}");
        }
        Ok(LocalLimits { min, max })
    }
}

/// A local fleet behind the [`Capacity`] seam.
#[derive(Debug)]
pub struct LocalCapacity {
    fleet: Fleet,
    layout: PortLayout,
    limits: LocalLimits,
    desired: usize,
    /// Addresses in the order they were started: the newest is last.
    started: Vec<String>,
    /// Nodes drained whose hand-off did not complete: they stay up (they
    /// may hold the last copy of a key) but no longer count as capacity.
    draining: HashMap<String, HandoffReport>,
    /// When each address last stopped. `add` prefers slots never used, then
    /// the one freed longest ago: peers remember a node that left for a
    /// while, and a new node at the same address should not meet that.
    freed: HashMap<String, Instant>,
    drain_deadline: Duration,
    peers: PeerPool,
}

impl LocalCapacity {
    /// Wraps a fleet whose nodes sit on `layout`'s slots. The fleet may
    /// already run nodes (they count as started in slot order).
    pub fn new(fleet: Fleet, layout: PortLayout, limits: LocalLimits) -> Result<LocalCapacity> {
        if limits.max > layout.slots() {
            bail!(
                "--max {} needs {} port slots but the layout has {}",
                limits.max,
                limits.max,
                layout.slots()
            );
        }
        let mut started = fleet.addrs();
        started.sort_by_key(|a| layout.slot_of(a));
        Ok(LocalCapacity {
            desired: fleet.len(),
            fleet,
            layout,
            limits,
            started,
            draining: HashMap::new(),
            freed: HashMap::new(),
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            peers: PeerPool::new(PeerOptions {
                rpc_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
                ..PeerOptions::default()
            }),
        })
    }

    /// Sets how long one drain may take before the removal gives up.
    pub fn with_drain_deadline(mut self, deadline: Duration) -> LocalCapacity {
        self.drain_deadline = deadline;
        self
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn layout(&self) -> &PortLayout {
        &self.layout
    }

    pub fn limits(&self) -> LocalLimits {
        self.limits
    }

    /// The fleet itself, for what only a local fleet can do (the TUI's `x`
    /// kills a node to show a failure). A node killed this way drops off
    /// the books at the next call, as one that exited on its own.
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    /// Gives the fleet back (to stop it, say).
    pub fn into_fleet(self) -> Fleet {
        self.fleet
    }

    /// Nodes that count as capacity: running and not drained.
    fn serving(&self) -> Vec<&String> {
        self.started
            .iter()
            .filter(|a| self.fleet.node(a).is_some() && !self.draining.contains_key(*a))
            .collect()
    }

    /// Drops nodes whose process exited from the books, logging why.
    /// Also forgets nodes stopped or killed through [`Self::fleet_mut`].
    fn reap(&mut self) {
        for (addr, why) in self.fleet.reap() {
            warn!(node = %addr, reason = %why, "local node exited on its own");
        }
        let (fleet, freed, draining) = (&self.fleet, &mut self.freed, &mut self.draining);
        self.started.retain(|a| {
            let alive = fleet.node(a).is_some();
            if !alive {
                freed.insert(a.clone(), Instant::now());
                draining.remove(a);
            }
            alive
        });
    }

    /// A node that answers, to join through; `None` when no node is up.
    async fn live_node(&self) -> Option<String> {
        let mut candidates: Vec<String> = self.serving().into_iter().cloned().collect();
        candidates.shuffle(&mut rand::rng());
        for addr in candidates {
            if self.peers.ping(&addr).await.is_ok() {
                return Some(addr);
            }
        }
        None
    }

    /// Asks `addr` to hand off its keys and waits for its report.
    async fn drain(&self, addr: &str) -> Result<HandoffReport> {
        self.peers
            .drain(addr, self.drain_deadline)
            .await
            .with_context(|| format!("draining {addr}"))
    }
}

impl Capacity for LocalCapacity {
    async fn describe(&mut self) -> Result<CapacityState> {
        self.reap();
        let (peers, draining) = (&self.peers, &self.draining);
        let states = futures::future::join_all(self.started.iter().map(|addr| async move {
            if draining.contains_key(addr) {
                return MemberState::Draining;
            }
            match peers.get_info(addr).await {
                Ok(info) => match info.state {
                    NodeState::Joining => MemberState::Pending,
                    NodeState::Serving => MemberState::InService,
                    NodeState::Leaving => MemberState::Draining,
                },
                // A running process that does not answer this once still
                // counts; one that exited is reaped above.
                Err(_) => MemberState::InService,
            }
        }))
        .await;
        let members = self
            .started
            .iter()
            .zip(states)
            .map(|(addr, state)| Member {
                id: addr.clone(),
                addr: Some(addr.clone()),
                state,
            })
            .collect();
        Ok(CapacityState {
            desired: self.desired,
            min: self.limits.min,
            max: self.limits.max,
            members,
        })
    }

    async fn add(&mut self) -> Result<Member> {
        self.reap();
        let serving = self.serving().len();
        if serving >= self.limits.max {
            bail!("the fleet is at its maximum of {} nodes", self.limits.max);
        }
        let fleet = &self.fleet;
        let slot = self
            .layout
            .free_slot(|addr| fleet.node(addr).is_some(), &self.freed)?;
        let join = self.live_node().await;
        if join.is_none() && !self.fleet.is_empty() {
            bail!("no node of the fleet answers, so a new node has nothing to join");
        }
        let addr = self
            .fleet
            .start_slot(&slot, join.as_deref())
            .await
            .with_context(|| format!("starting a node on {}", slot.grpc_addr()))?;
        info!(node = %addr, via = ?join, "local node added");
        self.started.push(addr.clone());
        self.desired = self.serving().len();
        Ok(Member {
            id: addr.clone(),
            addr: Some(addr),
            state: MemberState::InService,
        })
    }

    async fn remove(&mut self, which: Option<&str>) -> Result<Removal> {
        self.reap();
        let serving = self.serving().len();
        let addr = match which {
            Some(id) => {
                if self.fleet.node(id).is_none() {
                    bail!("no node {id} in this fleet");
                }
                id.to_string()
            }
            // A node whose earlier drain did not complete goes first: it
            // is half gone already, and retrying is how it finishes.
            None => self
                .started
                .iter()
                .find(|a| self.draining.contains_key(*a))
                .or_else(|| self.serving().last().copied())
                .cloned()
                .context("the fleet has no node to remove")?,
        };
        // A node drained earlier that did not finish may be retried even
        // at the minimum: it no longer counts as capacity.
        if !self.draining.contains_key(&addr) && serving <= self.limits.min {
            bail!("the fleet is at its minimum of {} nodes", self.limits.min);
        }
        info!(node = %addr, deadline = ?self.drain_deadline, "draining local node");
        let report = self.drain(&addr).await?;
        if !report.is_complete() {
            self.draining.insert(addr.clone(), report.clone());
            self.desired = self.serving().len();
            bail!(
                "drain of {addr} incomplete: {} keys not confirmed elsewhere after {} ms; \
                 the node keeps running",
                report.unconfirmed,
                report.elapsed_ms
            );
        }
        let clean = self.fleet.stop(&addr, STOP_TIMEOUT).await?;
        if !clean {
            warn!(node = %addr, "drained node did not exit cleanly after SIGTERM");
        }
        self.draining.remove(&addr);
        self.started.retain(|a| *a != addr);
        self.freed.insert(addr.clone(), Instant::now());
        self.desired = self.serving().len();
        info!(
            node = %addr, keys = report.keys, bytes = report.bytes,
            elapsed_ms = report.elapsed_ms, "local node drained and stopped"
        );
        Ok(Removal {
            member: Member {
                id: addr.clone(),
                addr: Some(addr),
                state: MemberState::Terminating,
            },
            handoff: report,
        })
    }
}
