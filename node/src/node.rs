//! The running node: ring state behind a short-held lock, the peer pool, and
//! the maintenance loops that drive the pure core over the network.
//!
//! [`Node`] is shared by the tonic services, the HTTP gateway and the
//! maintenance tasks. The only mutable protocol state is the [`RingState`]
//! inside a `std::sync::Mutex`; every critical section is a few core calls
//! with no `.await` inside, so the lock is never held across network I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::chord::{replica_set, Id, Lookup, LookupStep, NodeRef, Options, RingState, Route};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{EventKind, EventLog};
use crate::peer::{NodeState, PeerInfo, PeerPool};
use crate::store::Store;

/// A lookup ends within this many outbound calls' deadlines, whatever
/// its path.
const LOOKUP_BOUND_CALLS: u32 = 5;

/// The shared state of one running node.
#[derive(Debug)]
pub struct Node {
    me: NodeRef,
    config: Config,
    ring: Mutex<RingState>,
    peers: PeerPool,
    store: Arc<Store>,
    /// Set while the node is in no ring: started with `--idle`, it waits for
    /// a `create` or `join` (MessagePack-RPC) and refuses gRPC meanwhile.
    idle: AtomicBool,
    /// One `create` or `join` at a time, so two callers cannot both move an
    /// idle node into a ring.
    entry_lock: tokio::sync::Mutex<()>,
    /// Set once a graceful leave has begun: the node stops claiming its
    /// range (lookups for it go to the successor) while it hands keys over.
    leaving: AtomicBool,
    /// Peers known to be leaving (they said so in a `Leave` notice or a
    /// refusal), with when we learned it. Repair never counts them as
    /// holders, so two leaving nodes never drop a key on each other's word.
    leaving_peers: Mutex<HashMap<String, LeavingMark>>,
    /// Predecessors that left gracefully, handing their range to this
    /// node, and when they said so: until one has handed every key on, a
    /// key of that range may be there and not here yet, so a read that
    /// finds nothing here asks them (`Node::chunk_here`,
    /// `Node::manifest_here`).
    handing_over: Mutex<Vec<(NodeRef, Instant)>>,
    /// One drain at a time: a second `Drain` call waits for the first.
    drain_lock: tokio::sync::Mutex<()>,
    events: EventLog,
    started: Instant,
    pub counters: Counters,
    /// The collector's counters and the absence state (`crate::gc`).
    pub(crate) gc: crate::gc::GcState,
}

/// Request counters exposed by `status` and published as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub lookups: AtomicU64,
    pub lookup_hops: AtomicU64,
    /// Chunk bytes received from clients and peers.
    pub bytes_in: AtomicU64,
    /// Chunk bytes sent to clients and peers.
    pub bytes_out: AtomicU64,
    /// Bytes pushed by the repair loop (a subset of `bytes_out`).
    pub repair_bytes: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

impl Node {
    /// A node that starts a new ring of its own.
    pub fn create(config: Config, store: Store) -> Arc<Node> {
        let me = NodeRef::from_addr(config.advertise.clone());
        let state = RingState::create(me.clone(), ring_options(&config));
        let node = Node::with_state(config, me, state, store);
        node.events
            .record(EventKind::Created, None, 0, 0, "created a new ring");
        node
    }

    /// A node that joins the ring `config.join` belongs to: asks that peer for
    /// our successor, retrying until `config.join_timeout` has passed.
    pub async fn join(config: Config, store: Store) -> Result<Arc<Node>> {
        let bootstrap = config
            .join
            .clone()
            .ok_or_else(|| Error::invalid("join needs a peer address"))?;
        let node = Node::idle(config, store);
        node.join_ring(&bootstrap).await?;
        Ok(node)
    }

    /// A node in no ring yet: it waits for [`Node::create_ring`] or
    /// [`Node::join_ring`], and refuses gRPC calls meanwhile.
    pub fn idle(config: Config, store: Store) -> Arc<Node> {
        let me = NodeRef::from_addr(config.advertise.clone());
        let state = RingState::create(me.clone(), ring_options(&config));
        let node = Node::with_state(config, me, state, store);
        node.idle.store(true, Ordering::Release);
        node
    }

    /// Whether the node is still waiting for `create` or `join`.
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Starts a ring of this node alone if it is idle. Returns whether it
    /// did: on a node already in a ring this changes nothing (the course's
    /// scripts call `create` before every upload).
    pub async fn create_ring(&self) -> bool {
        let _one_at_a_time = self.entry_lock.lock().await;
        if !self.is_idle() {
            return false;
        }
        // An idle node's state is already a ring of itself alone.
        self.idle.store(false, Ordering::Release);
        info!(addr = %self.me.addr, "created a new ring");
        self.events
            .record(EventKind::Created, None, 0, 0, "created a new ring");
        true
    }

    /// Moves an idle node into the ring `bootstrap` belongs to: asks that
    /// peer for our successor, retrying until `config.join_timeout` has
    /// passed. A node already in a ring refuses.
    pub async fn join_ring(&self, bootstrap: &str) -> Result<()> {
        let _one_at_a_time = self.entry_lock.lock().await;
        if !self.is_idle() {
            return Err(Error::invalid(format!(
                "{} is already in a ring; only an idle node joins",
                self.me.addr
            )));
        }
        if bootstrap == self.me.addr {
            return Err(Error::invalid("a node cannot join through itself"));
        }
        let deadline = Instant::now() + self.config.join_timeout;
        let mut last_err;
        loop {
            let found = match find_successor_via(&self.peers, bootstrap, &self.me).await {
                // The successor's own list, read at once: with only the one
                // entry, a successor that dies before our first stabilize
                // would leave this node alone, a ring of its own. A
                // successor that does not answer means the lookup went
                // through stale pointers; the join is tried again.
                // (One that answers, but not sense, is left to stabilize.)
                Ok(successor) => match self.peers.get_info(&successor.addr).await {
                    Ok(info) => Ok((successor, Some(info))),
                    Err(
                        e @ (Error::Unreachable { .. }
                        | Error::Unavailable(_)
                        | Error::Leaving { .. }),
                    ) => Err(e),
                    Err(e) => {
                        debug!(peer = %successor.addr, error = %e, "successor's list unreadable");
                        Ok((successor, None))
                    }
                },
                Err(e) => Err(e),
            };
            match found {
                Ok((successor, info)) => {
                    info!(peer = %bootstrap, successor = %successor, "joined ring");
                    let mut state = RingState::join(
                        self.me.clone(),
                        successor.clone(),
                        ring_options(&self.config),
                    );
                    if let Some(info) = info {
                        state.on_stabilize(&successor, info.predecessor, info.successors);
                    }
                    *self.ring() = state;
                    self.idle.store(false, Ordering::Release);
                    self.events.record(
                        EventKind::Joined,
                        Some(&successor.addr),
                        0,
                        0,
                        format!("joined through {bootstrap}"),
                    );
                    return Ok(());
                }
                Err(e) if e.is_retryable() => last_err = e,
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "could not join through {bootstrap} within {:?}: {last_err}",
                    self.config.join_timeout
                )));
            }
            debug!(peer = %bootstrap, error = %last_err, "join attempt failed; retrying");
            tokio::time::sleep(JOIN_RETRY_INTERVAL).await;
        }
    }

    fn with_state(config: Config, me: NodeRef, state: RingState, store: Store) -> Arc<Node> {
        Arc::new(Node {
            peers: PeerPool::new(config.peer_options()),
            me,
            config,
            ring: Mutex::new(state),
            store: Arc::new(store),
            idle: AtomicBool::new(false),
            entry_lock: tokio::sync::Mutex::new(()),
            leaving: AtomicBool::new(false),
            leaving_peers: Mutex::new(HashMap::new()),
            handing_over: Mutex::new(Vec::new()),
            drain_lock: tokio::sync::Mutex::new(()),
            events: EventLog::default(),
            started: Instant::now(),
            counters: Counters::default(),
            gc: crate::gc::GcState::default(),
        })
    }

    pub fn me(&self) -> &NodeRef {
        &self.me
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn peers(&self) -> &PeerPool {
        &self.peers
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs a blocking store operation off the async threads.
    pub async fn disk<T, F>(&self, op: F) -> Result<T>
    where
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| Error::Unavailable(format!("disk task failed: {e}")))?
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// The node's event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Where this node is in its life.
    pub fn state(&self) -> NodeState {
        if self.is_leaving() {
            return NodeState::Leaving;
        }
        let ring = self.ring();
        if !ring.is_alone() && ring.predecessor().is_none() {
            NodeState::Joining
        } else {
            NodeState::Serving
        }
    }

    /// Notes that `addr` is leaving the ring (it told us, or refused a call
    /// because of it).
    pub fn peer_leaving(&self, addr: &str) {
        if addr == self.me.addr {
            return;
        }
        let now = Instant::now();
        self.leaving_peers_map().insert(
            addr.to_string(),
            LeavingMark {
                since: now,
                checked: now,
            },
        );
    }

    /// `addr` acted as a member again (it notified us, or said it serves):
    /// a node restarted on the same address is not leaving.
    pub fn peer_rejoined(&self, addr: &str) {
        self.leaving_peers_map().remove(addr);
        self.handed_over(addr);
    }

    /// `leaving` said it leaves the ring; if it is this node's predecessor,
    /// its range is this node's now, and its keys are on their way here.
    /// A node that is leaving itself marks it too: its own successor
    /// passes reads back through it (see [`Node::handing_over`]).
    pub fn taking_over_from(&self, leaving: &NodeRef) {
        if self.ring().predecessor() != Some(leaving) {
            return;
        }
        let mut list = self.handing_over_list();
        list.retain(|(n, _)| n.addr != leaving.addr);
        list.push((leaving.clone(), Instant::now()));
    }

    /// Where to pass back a read of a key this node lacks, which
    /// `passed_back` nodes have passed back already: the predecessors
    /// still handing their range to this node, those that said so within
    /// `LEAVING_MARK_TTL` and have not stopped answering. A scale-in
    /// may drain neighbours at once: the first hands its keys past the
    /// second to the node after both, which has heard only of the second,
    /// so the read goes back through both. None once a read has been
    /// passed back [`READ_BEHIND_STEPS`] times: nodes that all leave at
    /// once may mark each other.
    pub fn handing_over(&self, passed_back: u32) -> Vec<NodeRef> {
        if passed_back >= READ_BEHIND_STEPS {
            return Vec::new();
        }
        let mut list = self.handing_over_list();
        list.retain(|(_, since)| since.elapsed() < LEAVING_MARK_TTL);
        list.iter().map(|(n, _)| n.clone()).collect()
    }

    /// `addr` has nothing more to hand over: it no longer answers (it has
    /// gone), or it is a member again.
    pub fn handed_over(&self, addr: &str) {
        self.handing_over_list().retain(|(n, _)| n.addr != addr);
    }

    fn handing_over_list(&self) -> MutexGuard<'_, Vec<(NodeRef, Instant)>> {
        self.handing_over.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr` is known to be leaving. A mark older than
    /// `LEAVING_RECHECK` is checked with the peer itself (its `GetInfo`
    /// state), so a node drained and then restarted on the same address is
    /// a holder again within seconds; a peer that does not answer stays
    /// marked (it is no holder either way). Marks expire after
    /// `LEAVING_MARK_TTL`.
    pub async fn is_peer_leaving(&self, addr: &str) -> bool {
        let recheck = {
            let mut map = self.leaving_peers_map();
            map.retain(|_, mark| mark.since.elapsed() < LEAVING_MARK_TTL);
            match map.get_mut(addr) {
                None => return false,
                Some(mark) if mark.checked.elapsed() < LEAVING_RECHECK => return true,
                Some(mark) => {
                    mark.checked = Instant::now();
                    true
                }
            }
        };
        if recheck {
            if let Ok(info) = self.peers.get_info(addr).await {
                if info.state != NodeState::Leaving {
                    info!(peer = %addr, "peer serves again; it counts as a holder");
                    self.peer_rejoined(addr);
                    return false;
                }
            }
        }
        true
    }

    fn leaving_peers_map(&self) -> MutexGuard<'_, HashMap<String, LeavingMark>> {
        self.leaving_peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One routing step for `target`, as this node answers it. While leaving,
    /// the node's own range is answered with its successor, the next owner.
    pub fn route(&self, target: &Id) -> Route {
        let ring = self.ring();
        if self.is_leaving() && ring.owns(target) && ring.successor().addr != self.me.addr {
            return Route::Owner(ring.successor().clone());
        }
        ring.route(target)
    }

    /// This node as `GetInfo` describes it: who it is and its neighbours.
    pub fn info(&self) -> PeerInfo {
        let state = self.state();
        let ring = self.ring();
        PeerInfo {
            node: ring.me().clone(),
            predecessor: ring.predecessor().cloned(),
            successors: ring.successors().to_vec(),
            uptime_secs: self.uptime().as_secs(),
            replicas: self.config.replicas as u32,
            state,
            alive_since_ms: self.gc.alive_since_ms(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The ring state, for a short section with no `.await` inside.
    pub fn ring(&self) -> MutexGuard<'_, RingState> {
        // A panic while holding the lock cannot leave the core half-updated in
        // a way worse than a stale pointer, which stabilize repairs.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the core a peer failed, and drops our channel to it.
    pub fn peer_failed(&self, peer: &NodeRef) {
        if peer.addr == self.me.addr {
            return;
        }
        let known = {
            let mut ring = self.ring();
            let known = ring.knows(&peer.addr);
            ring.peer_failed(&peer.addr);
            known
        };
        self.peers.forget(&peer.addr);
        // Only a peer we still linked to is news: the same dead node is
        // reported by many calls before every table forgets it.
        if known {
            warn!(peer = %peer.addr, "peer failed; dropping it from fingers and successors");
            self.events.record(
                EventKind::PeerFailed,
                Some(&peer.addr),
                0,
                0,
                "stopped answering; dropped from fingers and successors",
            );
        }
    }

    /// Finds the owner of `target` by an iterative walk started here.
    /// Returns the owner and the number of remote nodes asked.
    pub async fn find_successor(&self, target: Id) -> Result<(NodeRef, u32)> {
        let first = self.route(&target);
        let mut lookup = Lookup::new(target, first);
        // However many steps the walk has left, it ends within this bound:
        // a few calls' worth, not one deadline per step.
        let bound = self.config.rpc_timeout * LOOKUP_BOUND_CALLS;
        let (owner, hops) = tokio::time::timeout(bound, self.drive_lookup(&mut lookup))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "lookup of {} did not finish within {bound:?}",
                    target.short()
                ))
            })??;
        Counters::bump(&self.counters.lookups, 1);
        Counters::bump(&self.counters.lookup_hops, u64::from(hops));
        Ok((owner, hops))
    }

    async fn drive_lookup(&self, lookup: &mut Lookup) -> Result<(NodeRef, u32)> {
        loop {
            match lookup.next() {
                LookupStep::Done { owner, hops } => return Ok((owner, hops)),
                LookupStep::Failed(reason) => {
                    return Err(Error::Unavailable(format!(
                        "lookup of {} failed: {reason}",
                        lookup.target().short()
                    )))
                }
                LookupStep::Ask(peer) => {
                    if peer.addr == self.me.addr {
                        let route = self.route(&lookup.target());
                        lookup.on_route(&peer, route);
                        continue;
                    }
                    match self.peers.find_step(&peer.addr, &lookup.target()).await {
                        Ok(route) => lookup.on_route(&peer, route),
                        Err(e) => {
                            debug!(peer = %peer.addr, error = %e, "lookup step failed");
                            if e.peer_may_be_gone() {
                                self.peer_failed(&peer);
                            }
                            lookup.on_failure(&peer);
                        }
                    }
                }
            }
        }
    }

    /// The successor list of the owner of `key`, owner first: the nodes that
    /// should hold a key replicated `count` times.
    ///
    /// Right after a crash a lookup can still name the dead node (its
    /// predecessor has not noticed yet); then the dead node is dropped here
    /// and the lookup is retried once stabilize has had time to route
    /// around it.
    pub async fn replica_set(&self, key: Id, count: usize) -> Result<Vec<NodeRef>> {
        let mut last = None;
        for attempt in 0..PLACEMENT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.config.stabilize_interval).await;
            }
            let (owner, _) = match self.find_successor(key).await {
                Ok(found) => found,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let successors = if count > 1 {
                match self.successors_of(&owner).await {
                    Ok(successors) => successors,
                    Err(e) => {
                        self.peer_failed(&owner);
                        last = Some(e);
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            return Ok(replica_set(owner, successors, count));
        }
        Err(last.unwrap_or_else(|| Error::Unavailable(format!("cannot place key {}", key.short()))))
    }

    /// The successor list of `node`: this node's own, or as `node` reports
    /// it.
    pub async fn successors_of(&self, node: &NodeRef) -> Result<Vec<NodeRef>> {
        if node.addr == self.me.addr {
            return Ok(self.ring().successors().to_vec());
        }
        Ok(self.peers.get_info(&node.addr).await?.successors)
    }

    /// One round of `stabilize`: learn the successor's predecessor and
    /// successor list, adopt a closer successor, and notify it.
    pub async fn stabilize(&self) {
        // A leaving node has handed its links on; notifying its successor
        // again would pull it back into the ring.
        if self.is_leaving() {
            return;
        }
        let before = self.ring().successor().addr.clone();
        self.stabilize_once().await;
        let after = self.ring().successor().clone();
        if after.addr != before && after.addr != self.me.addr {
            info!(successor = %after, "new successor");
            self.events.record(
                EventKind::NeighbourJoined,
                Some(&after.addr),
                0,
                0,
                "new successor",
            );
        }
    }

    async fn stabilize_once(&self) {
        let target = self.ring().stabilize_target();
        let to_notify = if target.addr == self.me.addr {
            let mut ring = self.ring();
            let pred = ring.predecessor().cloned();
            let succs = ring.successors().to_vec();
            ring.on_stabilize(&target, pred, succs)
        } else {
            match self.peers.get_info(&target.addr).await {
                Ok(info) => {
                    // Our successor says it serves: a node restarted on an
                    // address that was leaving is a holder again now, not
                    // only when its leaving mark is next rechecked.
                    if info.state != NodeState::Leaving {
                        self.peer_rejoined(&target.addr);
                    }
                    self.ring()
                        .on_stabilize(&target, info.predecessor, info.successors)
                }
                Err(e) => {
                    debug!(peer = %target.addr, error = %e, "stabilize failed");
                    self.peer_failed(&target);
                    return;
                }
            }
        };
        if let Some(successor) = to_notify {
            if successor.addr == self.me.addr {
                return;
            }
            if let Err(e) = self.peers.notify(&successor.addr, &self.me).await {
                debug!(peer = %successor.addr, error = %e, "notify failed");
                self.peer_failed(&successor);
            }
        }
    }

    /// One round of `fix_fingers`: refresh the next finger by a lookup.
    pub async fn fix_fingers(&self) {
        let (index, start) = self.ring().next_finger();
        match self.find_successor(start).await {
            Ok((owner, _)) => self.ring().set_finger(index, owner),
            Err(e) => debug!(finger = index, error = %e, "fix_fingers lookup failed"),
        }
    }

    /// One round of `check_predecessor`: drop the predecessor if it is gone.
    pub async fn check_predecessor(&self) {
        let Some(pred) = self.ring().predecessor_to_check() else {
            return;
        };
        if pred.addr == self.me.addr {
            return;
        }
        if let Err(e) = self.peers.ping(&pred.addr).await {
            debug!(peer = %pred.addr, error = %e, "predecessor did not answer");
            self.peer_failed(&pred);
        }
    }

    /// Re-enters the ring through `via` after this node found itself alone
    /// while other nodes exist (a partition healed, or two rings were made).
    /// Its keys stay; repair moves them to where the joined ring wants them.
    pub async fn rejoin(&self, via: &str) -> Result<()> {
        let successor = find_successor_via(&self.peers, via, &self.me).await?;
        if successor.addr == self.me.addr {
            return Err(Error::Unavailable(format!(
                "{via} answered with this node itself; nothing to join"
            )));
        }
        *self.ring() = RingState::join(
            self.me.clone(),
            successor.clone(),
            ring_options(&self.config),
        );
        info!(peer = %via, successor = %successor, "re-joined the ring");
        self.events.record(
            EventKind::Joined,
            Some(&successor.addr),
            0,
            0,
            format!("re-joined through {via}"),
        );
        Ok(())
    }

    /// Leaves the ring and hands every key to its next holders, for a node
    /// that is about to be destroyed (a scale-in). Unlike a plain shutdown
    /// it never stops early because rounds make no progress: while this
    /// node is the last confirmed holder of a key, it keeps trying until
    /// `deadline`, and the report says what is left. One drain runs at a
    /// time; the node keeps serving reads until it is stopped.
    pub async fn drain(&self, deadline: Duration) -> crate::repair::HandoffReport {
        let _one_at_a_time = self.drain_lock.lock().await;
        self.leave_ring().await;
        self.hand_off(deadline, crate::repair::HandoffMode::UntilConfirmed)
            .await
    }

    /// Graceful leave: hand our links to our neighbours so they repair at once.
    /// Once only: a node stopped after a drain has told them already, and
    /// a second notice would only log its leave twice on each.
    pub async fn leave_ring(&self) {
        if self.leaving.swap(true, Ordering::AcqRel) {
            return;
        }
        let notices = self.ring().leave_notices();
        for notice in notices {
            let result = self
                .peers
                .leave(
                    &notice.to.addr,
                    &self.me,
                    notice.predecessor.as_ref(),
                    &notice.successors,
                )
                .await;
            match result {
                Ok(()) => info!(peer = %notice.to.addr, "told neighbour we are leaving"),
                Err(e) => {
                    warn!(peer = %notice.to.addr, error = %e, "could not tell neighbour we are leaving")
                }
            }
        }
    }

    /// Runs the three maintenance loops until `cancel` fires.
    pub async fn maintain(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let c = &self.config;
        for (what, period) in [
            (Task::Stabilize, c.stabilize_interval),
            (Task::FixFingers, c.fix_fingers_interval),
            (Task::CheckPredecessor, c.check_predecessor_interval),
        ] {
            let node = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = ticker.tick() => match what {
                            Task::Stabilize => node.stabilize().await,
                            Task::FixFingers => node.fix_fingers().await,
                            Task::CheckPredecessor => node.check_predecessor().await,
                        },
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[derive(Clone, Copy, Debug)]
enum Task {
    Stabilize,
    FixFingers,
    CheckPredecessor,
}

/// When a peer was marked as leaving, and when we last asked it.
#[derive(Clone, Copy, Debug)]
struct LeavingMark {
    since: Instant,
    checked: Instant,
}

/// How often a peer marked as leaving is asked whether it still is: rarely
/// enough to cost nothing while it drains, often enough that a restarted
/// node is counted again after a round or two of repair.
const LEAVING_RECHECK: Duration = Duration::from_secs(5);

/// How many times a read may be passed back to a node handing its range
/// over ([`Node::handing_over`]): as many neighbours as may drain at once.
pub const READ_BEHIND_STEPS: u32 = 4;

/// How long a peer stays marked as leaving: long enough for any drain we
/// would otherwise count it in, short enough that a node restarted on the
/// same address is soon a holder again.
const LEAVING_MARK_TTL: Duration = Duration::from_secs(600);

/// Lookups tried (a stabilize interval apart) before a key counts as unplaceable.
const PLACEMENT_ATTEMPTS: usize = 4;

/// Pause between attempts to reach the bootstrap peer while joining.
const JOIN_RETRY_INTERVAL: Duration = Duration::from_millis(500);

async fn find_successor_via(peers: &PeerPool, bootstrap: &str, me: &NodeRef) -> Result<NodeRef> {
    let (successor, _) = peers.find_successor(bootstrap, &me.id).await?;
    if successor.addr != me.addr {
        return Ok(successor);
    }
    // The ring still remembers an earlier run of this address: our place is
    // already ours, so the node after it is our successor.
    let (next, _) = peers.find_successor(bootstrap, &me.id.add_pow2(0)).await?;
    Ok(next)
}

fn ring_options(config: &Config) -> Options {
    Options {
        successors: config.successors,
    }
}
