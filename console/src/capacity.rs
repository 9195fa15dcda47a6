//! The capacity seam: one interface over "how many nodes the ring runs on",
//! with a local side (the [`crate::fleet::Fleet`] of `chord-node` processes)
//! and an AWS side (an Auto Scaling group).
//!
//! The autoscaler, the TUI's `+`/`-` keys and the headless `scale` commands
//! all go through [`Capacity`], so they behave the same on both sides.
//! Invariant: [`Capacity::remove`] is drain-then-remove. The chosen node
//! leaves the ring and hands its keys to their next holders, which confirm
//! them, and only then is the process stopped or the instance terminated.
//! A removal whose hand-off did not complete returns an error and removes
//! nothing.

use std::future::Future;

use anyhow::Result;
use chord_node::repair::HandoffReport;

/// Where a member of the fleet or group is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Started, not yet serving (booting, or joining the ring).
    Pending,
    /// Serving its share of the ring.
    InService,
    /// Handing its keys off before removal.
    Draining,
    /// Being stopped or terminated.
    Terminating,
}

/// One node of the fleet or group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable name: the node address locally, the instance id on AWS.
    pub id: String,
    /// The node's gRPC `host:port`, once known.
    pub addr: Option<String>,
    pub state: MemberState,
}

/// The capacity as the side reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityState {
    pub desired: usize,
    pub min: usize,
    pub max: usize,
    pub members: Vec<Member>,
}

impl CapacityState {
    /// Members that count toward the ring's capacity right now.
    pub fn in_service(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::InService)
            .count()
    }
}

/// What a completed drain-then-remove did.
#[derive(Clone, Debug)]
pub struct Removal {
    pub member: Member,
    pub handoff: HandoffReport,
}

/// Grows and shrinks the set of nodes a ring runs on.
///
/// Implementations own their processes or cloud clients; callers that must
/// not block (the TUI) run them on a background task.
pub trait Capacity: Send {
    /// The current desired/min/max and members.
    fn describe(&mut self) -> impl Future<Output = Result<CapacityState>> + Send;

    /// Starts one more node that joins the ring; returns it once it serves
    /// (locally) or once the group has accepted the new desired size (AWS).
    fn add(&mut self) -> impl Future<Output = Result<Member>> + Send;

    /// Drains one node and then removes it. `which` names a member by id;
    /// `None` lets the side choose (the newest in-service node).
    fn remove(&mut self, which: Option<&str>) -> impl Future<Output = Result<Removal>> + Send;
}
