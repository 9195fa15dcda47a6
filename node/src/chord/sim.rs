//! A deterministic in-memory simulator of a whole Chord ring.
//!
//! Many [`RingState`]s talk through one explicit message queue; nothing runs
//! unless the caller says so ([`Sim::tick`] starts a maintenance round on
//! every node, [`Sim::deliver_all`] delivers messages), and messages are
//! delivered in an order drawn from a seeded generator. The same seed gives
//! the same run, so a failing scenario replays exactly. No threads, clock or
//! I/O: simulated time is counted in ticks.
//!
//! The simulator drives the core the way the network node does: lookups go
//! through [`Lookup`], one request per hop; a request to a crashed or
//! departed node comes back to its sender as a timeout, which the sender
//! reports with [`RingState::peer_failed`]. Every loop is bounded by
//! [`MAX_DELIVERIES`], so a protocol bug shows up as a failed check, never a
//! hang.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::id::{Id, NodeRef};
use super::lookup::{Lookup, LookupStep};
use super::state::{Options, RingState, Route};
use crate::error::{Error, Result};

/// Most messages delivered by one call that drains the queue. A maintenance
/// round on N nodes sends about N·(log2 N + 6) messages, so this leaves room
/// for tens of thousands of nodes while still stopping a message storm.
pub const MAX_DELIVERIES: usize = 2_000_000;

/// A request from one simulated node to another.
#[derive(Clone, Debug)]
enum Request {
    /// One lookup step: the receiver's [`Route`] to the id.
    FindStep(Id),
    /// Stabilize: the receiver's predecessor and successor list.
    GetNeighbors,
    Notify(NodeRef),
    Ping,
    Leave {
        leaving: NodeRef,
        predecessor: Option<NodeRef>,
        successors: Vec<NodeRef>,
    },
}

#[derive(Clone, Debug)]
enum Reply {
    Route(Route),
    Neighbors {
        predecessor: Option<NodeRef>,
        successors: Vec<NodeRef>,
    },
    Ack,
}

#[derive(Clone, Debug)]
enum Body {
    Request(Request),
    Reply(Reply),
    /// The request to `from` went unanswered (it is down).
    Timeout,
}

#[derive(Clone, Debug)]
struct Envelope {
    /// The operation of the requester this message belongs to.
    op: u64,
    from: NodeRef,
    to: NodeRef,
    body: Body,
}

/// Why a node runs a lookup, i.e. what to do with the owner it finds.
#[derive(Clone, Debug)]
enum Purpose {
    /// Finding our successor through `via`; `retried` once we looked up the
    /// id after ours because the ring still named us as the owner.
    Join {
        via: NodeRef,
        retried: bool,
    },
    Finger(usize),
    /// A lookup asked for by the test through [`Sim::lookup`].
    Query,
}

/// An operation waiting for a reply at its requester.
#[derive(Clone, Debug)]
enum Op {
    Lookup {
        lookup: Lookup,
        purpose: Purpose,
    },
    Stabilize {
        asked: NodeRef,
    },
    /// Notify, ping, leave: only a failure matters.
    Probe,
}

#[derive(Clone, Debug)]
struct SimNode {
    me: NodeRef,
    /// `None` while the node is still looking for its successor.
    ring: Option<RingState>,
    alive: bool,
    ops: HashMap<u64, Op>,
}

/// The simulated network and every node in it. See the module documentation.
pub struct Sim {
    opts: Options,
    rng: StdRng,
    nodes: BTreeMap<String, SimNode>,
    queue: Vec<Envelope>,
    next_op: u64,
    /// Results of finished joins and queries, by operation.
    finished: HashMap<u64, Option<(NodeRef, u32)>>,
    ticks: u64,
    delivered: u64,
    timeouts: u64,
}

impl Sim {
    /// An empty network whose delivery order is drawn from `seed`.
    pub fn new(seed: u64, opts: Options) -> Self {
        Sim {
            opts,
            rng: StdRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            queue: Vec::new(),
            next_op: 0,
            finished: HashMap::new(),
            ticks: 0,
            delivered: 0,
            timeouts: 0,
        }
    }

    /// Starts a node at `addr`. Without `via` it creates a new ring; with
    /// `via` it looks up its successor through that node (as messages,
    /// delivered until the lookup ends) and joins. Fails if `addr` is
    /// already running or the lookup fails (e.g. `via` is down).
    pub fn add_node(&mut self, addr: &str, via: Option<&str>) -> Result<NodeRef> {
        if self.nodes.get(addr).is_some_and(|n| n.alive) {
            return Err(Error::invalid(format!("{addr} is already running")));
        }
        let me = NodeRef::from_addr(addr);
        let Some(via) = via else {
            self.insert(
                me.clone(),
                Some(RingState::create(me.clone(), self.opts.clone())),
            );
            return Ok(me);
        };
        let via = self
            .nodes
            .get(via)
            .map(|n| n.me.clone())
            .ok_or_else(|| Error::invalid(format!("unknown bootstrap node {via}")))?;
        self.insert(me.clone(), None);
        let lookup = Lookup::new(me.id, Route::Forward(vec![via.clone()]));
        let purpose = Purpose::Join {
            via,
            retried: false,
        };
        let op = self.start_lookup(&me, lookup, purpose);
        self.run_until_finished(op);
        let joined = self
            .nodes
            .get(addr)
            .is_some_and(|n| n.alive && n.ring.is_some());
        self.finished.remove(&op);
        if !joined {
            self.nodes.remove(addr);
            return Err(Error::Unavailable(format!("{addr} could not join")));
        }
        // Stabilize at once, as the network node does, so the newcomer holds
        // a full successor list before anything else can happen: with only
        // the one successor the join found, that node's crash would leave
        // it a ring of its own that nobody knows.
        if let Some(op) = self.stabilize(addr) {
            let mut count = 0;
            while self.is_pending(addr, op) && count < MAX_DELIVERIES && self.deliver_one() {
                count += 1;
            }
        }
        Ok(me)
    }

    /// Crashes `addr`: it stops answering, and requests to it time out.
    /// Returns whether it was running.
    pub fn kill(&mut self, addr: &str) -> bool {
        match self.nodes.get_mut(addr) {
            Some(node) if node.alive => {
                node.alive = false;
                node.ops.clear();
                true
            }
            _ => false,
        }
    }

    /// Graceful leave of `addr`: its leave notices are delivered to its
    /// neighbours at once, then it stops. Returns whether it was running.
    pub fn leave(&mut self, addr: &str) -> bool {
        let Some(node) = self.nodes.get(addr).filter(|n| n.alive) else {
            return false;
        };
        let me = node.me.clone();
        let notices = node
            .ring
            .as_ref()
            .map(|r| r.leave_notices())
            .unwrap_or_default();
        self.kill(addr);
        for notice in notices {
            let op = self.new_op();
            let body = Body::Request(Request::Leave {
                leaving: me.clone(),
                predecessor: notice.predecessor,
                successors: notice.successors,
            });
            // Delivered now rather than queued: a graceful leave waits for
            // its neighbours before it goes.
            self.deliver(Envelope {
                op,
                from: me.clone(),
                to: notice.to,
                body,
            });
        }
        true
    }

    /// One maintenance round: every running node starts one stabilize, one
    /// `fix_fingers` lookup and one `check_predecessor`. Messages are only
    /// queued; deliver them with [`Sim::deliver_all`].
    pub fn tick(&mut self) {
        self.ticks += 1;
        let addrs: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.alive && n.ring.is_some())
            .map(|n| n.me.addr.clone())
            .collect();
        for addr in addrs {
            self.stabilize(&addr);
            self.fix_finger(&addr);
            self.check_predecessor(&addr);
        }
    }

    /// Delivers queued messages, and those they cause, until the queue is
    /// empty (or [`MAX_DELIVERIES`]). Returns how many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        let mut count = 0;
        while count < MAX_DELIVERIES && self.deliver_one() {
            count += 1;
        }
        count
    }

    /// `ticks` rounds of [`Sim::tick`] then [`Sim::deliver_all`].
    pub fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick();
            self.deliver_all();
        }
    }

    /// Looks up the owner of `key` starting at `from`, through messages,
    /// until it ends. `None` if `from` is not running or the lookup failed.
    /// Other queued traffic is delivered along the way, as it would be.
    pub fn lookup(&mut self, from: &str, key: &Id) -> Option<(NodeRef, u32)> {
        let node = self.nodes.get(from).filter(|n| n.alive)?;
        let first = node.ring.as_ref()?.route(key);
        let me = node.me.clone();
        let op = self.start_lookup(&me, Lookup::new(*key, first), Purpose::Query);
        self.run_until_finished(op);
        self.finished.remove(&op).flatten()
    }

    /// The node that should own `key`: the first running node at or after it.
    /// `None` when no node runs.
    pub fn true_successor(&self, key: &Id) -> Option<NodeRef> {
        let live = self.live();
        live.iter()
            .find(|n| n.id >= *key)
            .or_else(|| live.first())
            .cloned()
    }

    /// Whether every running node's successor and predecessor are the true
    /// ones (a lone node: itself and none).
    pub fn is_consistent(&self) -> bool {
        let live = self.live();
        let len = live.len();
        live.iter().enumerate().all(|(k, me)| {
            let Some(state) = self.state(&me.addr) else {
                return false;
            };
            if len == 1 {
                return state.is_alone() && state.predecessor().is_none();
            }
            let succ = &live[(k + 1) % len];
            let pred = &live[(k + len - 1) % len];
            state.successor().addr == succ.addr
                && state.predecessor().is_some_and(|p| p.addr == pred.addr)
        })
    }

    /// Running nodes, in id order.
    pub fn live(&self) -> Vec<NodeRef> {
        let mut live: Vec<NodeRef> = self
            .nodes
            .values()
            .filter(|n| n.alive && n.ring.is_some())
            .map(|n| n.me.clone())
            .collect();
        live.sort_by_key(|n| n.id);
        live
    }

    /// The ring state of a running node.
    pub fn state(&self, addr: &str) -> Option<&RingState> {
        self.nodes
            .get(addr)
            .filter(|n| n.alive)
            .and_then(|n| n.ring.as_ref())
    }

    /// Maintenance rounds started so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Requests that timed out so far (each one a failure detection).
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

    /// Messages waiting in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// A random running node's address, drawn from the simulator's generator
    /// so scenarios stay reproducible.
    pub fn random_live(&mut self) -> Option<String> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        let k = self.rng.random_range(0..live.len());
        Some(live[k].addr.clone())
    }

    /// A random id, from the simulator's generator.
    pub fn random_id(&mut self) -> Id {
        Id::from_array(self.rng.random())
    }

    fn insert(&mut self, me: NodeRef, ring: Option<RingState>) {
        let node = SimNode {
            me: me.clone(),
            ring,
            alive: true,
            ops: HashMap::new(),
        };
        self.nodes.insert(me.addr, node);
    }

    fn new_op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op
    }

    fn send(&mut self, op: u64, from: &NodeRef, to: &NodeRef, request: Request) {
        self.queue.push(Envelope {
            op,
            from: from.clone(),
            to: to.clone(),
            body: Body::Request(request),
        });
    }

    /// Delivers until operation `op` has finished, the queue is empty, or
    /// [`MAX_DELIVERIES`] messages went by.
    fn run_until_finished(&mut self, op: u64) {
        let mut count = 0;
        while !self.finished.contains_key(&op) && count < MAX_DELIVERIES && self.deliver_one() {
            count += 1;
        }
    }

    /// Delivers one queued message, picked at random. False if none queued.
    fn deliver_one(&mut self) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let k = self.rng.random_range(0..self.queue.len());
        let envelope = self.queue.swap_remove(k);
        self.deliver(envelope);
        true
    }

    fn deliver(&mut self, envelope: Envelope) {
        self.delivered += 1;
        let Envelope { op, from, to, body } = envelope;
        match body {
            Body::Request(request) => self.on_request(op, from, to, request),
            Body::Reply(reply) => self.on_reply(op, &from, &to, reply),
            Body::Timeout => self.on_timeout(op, &from, &to),
        }
    }

    fn on_request(&mut self, op: u64, from: NodeRef, to: NodeRef, request: Request) {
        let ring = self
            .nodes
            .get_mut(&to.addr)
            .filter(|n| n.alive)
            .and_then(|n| n.ring.as_mut());
        let Some(ring) = ring else {
            // Down, or not in the ring yet: the requester's deadline expires.
            self.queue.push(Envelope {
                op,
                from: to,
                to: from,
                body: Body::Timeout,
            });
            return;
        };
        let reply = match request {
            Request::FindStep(target) => Reply::Route(ring.route(&target)),
            Request::GetNeighbors => Reply::Neighbors {
                predecessor: ring.predecessor().cloned(),
                successors: ring.successors().to_vec(),
            },
            Request::Notify(candidate) => {
                ring.notify(candidate);
                Reply::Ack
            }
            Request::Ping => Reply::Ack,
            Request::Leave {
                leaving,
                predecessor,
                successors,
            } => {
                ring.on_leave(&leaving, predecessor, successors);
                Reply::Ack
            }
        };
        self.queue.push(Envelope {
            op,
            from: to,
            to: from,
            body: Body::Reply(reply),
        });
    }

    fn on_reply(&mut self, op: u64, from: &NodeRef, to: &NodeRef, reply: Reply) {
        let Some(node) = self.nodes.get_mut(&to.addr).filter(|n| n.alive) else {
            return;
        };
        let Some(pending) = node.ops.remove(&op) else {
            return;
        };
        match (pending, reply) {
            (
                Op::Lookup {
                    mut lookup,
                    purpose,
                },
                Reply::Route(route),
            ) => {
                lookup.on_route(from, route);
                self.continue_lookup(to, op, lookup, purpose);
            }
            (
                Op::Stabilize { asked },
                Reply::Neighbors {
                    predecessor,
                    successors,
                },
            ) => {
                let notify = node
                    .ring
                    .as_mut()
                    .and_then(|r| r.on_stabilize(&asked, predecessor, successors));
                if let Some(successor) = notify {
                    let op = self.new_op();
                    self.track(to, op, Op::Probe);
                    self.send(op, to, &successor, Request::Notify(to.clone()));
                }
            }
            // Acks, and replies that do not fit their operation.
            _ => {}
        }
    }

    fn on_timeout(&mut self, op: u64, peer: &NodeRef, to: &NodeRef) {
        let Some(node) = self.nodes.get_mut(&to.addr).filter(|n| n.alive) else {
            return;
        };
        self.timeouts += 1;
        if let Some(ring) = node.ring.as_mut() {
            ring.peer_failed(&peer.addr);
        }
        if let Some(Op::Lookup {
            mut lookup,
            purpose,
        }) = node.ops.remove(&op)
        {
            lookup.on_failure(peer);
            self.continue_lookup(to, op, lookup, purpose);
        }
    }

    fn track(&mut self, at: &NodeRef, op: u64, pending: Op) {
        if let Some(node) = self.nodes.get_mut(&at.addr) {
            node.ops.insert(op, pending);
        }
    }

    fn start_lookup(&mut self, at: &NodeRef, lookup: Lookup, purpose: Purpose) -> u64 {
        let op = self.new_op();
        self.continue_lookup(at, op, lookup, purpose);
        op
    }

    /// Sends the lookup's next request, or acts on its result.
    fn continue_lookup(&mut self, at: &NodeRef, op: u64, lookup: Lookup, purpose: Purpose) {
        match lookup.next() {
            LookupStep::Ask(peer) => {
                let target = lookup.target();
                self.track(at, op, Op::Lookup { lookup, purpose });
                self.send(op, at, &peer, Request::FindStep(target));
            }
            LookupStep::Done { owner, hops } => {
                self.on_lookup_done(at, op, purpose, Some((owner, hops)));
            }
            LookupStep::Failed(_) => self.on_lookup_done(at, op, purpose, None),
        }
    }

    fn on_lookup_done(
        &mut self,
        at: &NodeRef,
        op: u64,
        purpose: Purpose,
        result: Option<(NodeRef, u32)>,
    ) {
        match purpose {
            Purpose::Query => {
                self.finished.insert(op, result);
            }
            Purpose::Finger(i) => {
                let ring = self.nodes.get_mut(&at.addr).and_then(|n| n.ring.as_mut());
                if let (Some(ring), Some((owner, _))) = (ring, result) {
                    ring.set_finger(i, owner);
                }
            }
            Purpose::Join { via, retried } => match result {
                Some((owner, _)) if owner.addr == at.addr && !retried => {
                    // The ring still names this address (an earlier life of
                    // it) as the owner of its own id; the node after that
                    // position is our successor.
                    let lookup = Lookup::new(at.id.add_pow2(0), Route::Forward(vec![via.clone()]));
                    let purpose = Purpose::Join { via, retried: true };
                    self.continue_lookup(at, op, lookup, purpose);
                }
                Some((owner, hops)) => {
                    if let Some(node) = self.nodes.get_mut(&at.addr) {
                        node.ring = Some(RingState::join(
                            at.clone(),
                            owner.clone(),
                            self.opts.clone(),
                        ));
                    }
                    self.finished.insert(op, Some((owner, hops)));
                }
                None => {
                    self.finished.insert(op, None);
                }
            },
        }
    }

    fn is_pending(&self, addr: &str, op: u64) -> bool {
        self.nodes
            .get(addr)
            .is_some_and(|n| n.ops.contains_key(&op))
    }

    /// Starts a stabilize round at `addr`; the operation, if it sent one.
    fn stabilize(&mut self, addr: &str) -> Option<u64> {
        let node = self.nodes.get_mut(addr)?;
        let me = node.me.clone();
        let ring = node.ring.as_mut()?;
        let target = ring.stabilize_target();
        if target.addr != me.addr {
            let op = self.new_op();
            self.track(
                &me,
                op,
                Op::Stabilize {
                    asked: target.clone(),
                },
            );
            self.send(op, &me, &target, Request::GetNeighbors);
            return Some(op);
        }
        // Alone: we are our own successor and answer ourselves.
        let predecessor = ring.predecessor().cloned();
        let successors = ring.successors().to_vec();
        if let Some(successor) = ring.on_stabilize(&me, predecessor, successors) {
            let op = self.new_op();
            self.track(&me, op, Op::Probe);
            self.send(op, &me, &successor, Request::Notify(me.clone()));
        }
        None
    }

    fn fix_finger(&mut self, addr: &str) {
        let Some(node) = self.nodes.get_mut(addr) else {
            return;
        };
        let me = node.me.clone();
        let Some(ring) = node.ring.as_mut() else {
            return;
        };
        let (i, start) = ring.next_finger();
        let lookup = Lookup::new(start, ring.route(&start));
        self.start_lookup(&me, lookup, Purpose::Finger(i));
    }

    fn check_predecessor(&mut self, addr: &str) {
        let Some(node) = self.nodes.get(addr) else {
            return;
        };
        let me = node.me.clone();
        let Some(pred) = node.ring.as_ref().and_then(|r| r.predecessor_to_check()) else {
            return;
        };
        let op = self.new_op();
        self.track(&me, op, Op::Probe);
        self.send(op, &me, &pred, Request::Ping);
    }
}
