//! The ring state of one node: predecessor, successor list and fingers, and
//! the Chord protocol steps that update them.
//!
//! [`RingState`] is a synchronous state machine. A driver (the gRPC node, or
//! the simulator in [`super::sim`]) asks it what to do (`route`,
//! `stabilize_target`, `next_finger`, `predecessor_to_check`,
//! `leave_notices`), performs the remote calls itself, and feeds the answers
//! back (`on_stabilize`, `notify`, `set_finger`, `peer_failed`, `on_leave`).
//! Nothing here blocks, sleeps or does I/O.
//!
//! Invariants kept by every method:
//! - the successor list never contains this node (by address); an empty list
//!   means the node is alone in its ring;
//! - when the successor list is empty there is no predecessor and no finger
//!   either, because any known peer is first promoted to successor;
//! - the predecessor, when known, is never this node;
//! - a [`Route::Forward`] is never empty, never names this node, and lists
//!   nodes strictly between this node and the target, nearest to the target
//!   first, so every forward makes clockwise progress; only its last entry
//!   may be a last-resort owner past the target (see [`Route`]).
//!
//! Peers are told apart by address: two addresses hashing to the same id
//! would be a SHA-1 collision, which the protocol does not try to survive.

use super::finger::FingerTable;
use super::id::{Id, NodeRef, ID_BITS};
use super::successors::SuccessorList;

/// Default length `r` of the successor list: survives two adjacent failures
/// between stabilizations, and matches the default replication factor.
pub const DEFAULT_SUCCESSORS: usize = 3;

/// Most nodes a [`Route::Forward`] names: the best next hop plus fallbacks
/// for when it does not answer. More would only lengthen replies, since a
/// lookup rarely needs more than one fallback per step.
pub const MAX_CANDIDATES: usize = 4;

/// Tunables of the ring protocol.
#[derive(Clone, Debug)]
pub struct Options {
    /// Length `r` of the successor list (at least 1).
    pub successors: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            successors: DEFAULT_SUCCESSORS,
        }
    }
}

/// One node's answer to "who owns this target?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The owner (successor) of the target is known: this is it.
    Owner(NodeRef),
    /// Ask one of these next: closest preceding node of the target first,
    /// then fallbacks. Never empty, at most [`MAX_CANDIDATES`] nodes.
    ///
    /// All but possibly the last lie strictly between the answering node and
    /// the target. The last may instead lie at or past the target: it is the
    /// answering node's successor-list entry that owns the target should
    /// every node listed before it be dead (see [`crate::chord::lookup`]).
    Forward(Vec<NodeRef>),
}

/// What a gracefully leaving node tells a neighbour, so the neighbour can
/// splice the ring without waiting for failure detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveNotice {
    /// The neighbour to tell.
    pub to: NodeRef,
    /// The leaving node's predecessor: its successor's new predecessor.
    pub predecessor: Option<NodeRef>,
    /// The leaving node's successor list: its predecessor's new successors.
    pub successors: Vec<NodeRef>,
}

/// The Chord view of one node. See the module documentation.
#[derive(Clone, Debug)]
pub struct RingState {
    me: NodeRef,
    predecessor: Option<NodeRef>,
    successors: SuccessorList,
    fingers: FingerTable,
    /// Round-robin position of `fix_fingers`.
    next_finger: usize,
}

impl RingState {
    /// The first node of a new ring: no predecessor, its own successor.
    pub fn create(me: NodeRef, opts: Options) -> Self {
        RingState {
            predecessor: None,
            successors: SuccessorList::new(me.clone(), opts.successors),
            fingers: FingerTable::new(me.id),
            next_finger: 0,
            me,
        }
    }

    /// A node joining an existing ring, whose successor was found by a
    /// lookup through a bootstrap peer. The predecessor is learned later from
    /// `notify`, the rest of the successor list from `stabilize`.
    pub fn join(me: NodeRef, successor: NodeRef, opts: Options) -> Self {
        let mut state = RingState::create(me, opts);
        // `replace` drops `successor` if it is us, leaving a lone node.
        state.successors.replace([successor]);
        state
    }

    pub fn me(&self) -> &NodeRef {
        &self.me
    }

    pub fn predecessor(&self) -> Option<&NodeRef> {
        self.predecessor.as_ref()
    }

    /// The immediate successor, or this node when it is alone.
    pub fn successor(&self) -> &NodeRef {
        self.successors.first()
    }

    /// The successor list, nearest first, without this node.
    pub fn successors(&self) -> &[NodeRef] {
        self.successors.as_slice()
    }

    /// Whether the successor list is complete: `r` entries, or every other
    /// node of a smaller ring ([`SuccessorList::is_complete`]).
    pub fn successors_complete(&self) -> bool {
        self.successors.is_complete()
    }

    pub fn fingers(&self) -> &FingerTable {
        &self.fingers
    }

    /// Whether this node knows of no other node (a one-node ring).
    pub fn is_alone(&self) -> bool {
        self.successors.is_empty()
    }

    /// Whether `key` belongs to this node: `key ∈ (predecessor, me]`. A lone
    /// node owns everything; a node that has lost its predecessor claims
    /// nothing until it learns a new one, rather than guess.
    pub fn owns(&self, key: &Id) -> bool {
        if self.is_alone() {
            return true;
        }
        match &self.predecessor {
            Some(p) => key.in_half_open(&p.id, &self.me.id),
            None => false,
        }
    }

    /// One step of `find_successor` for `target`, answered from local state.
    pub fn route(&self, target: &Id) -> Route {
        if self.is_alone() {
            return Route::Owner(self.me.clone());
        }
        if let Some(p) = &self.predecessor {
            // An equal id would make (p, me] the whole ring; see the module doc.
            if p.id != self.me.id && target.in_half_open(&p.id, &self.me.id) {
                return Route::Owner(self.me.clone());
            }
        }
        let successor = self.successor();
        if target.in_half_open(&self.me.id, &successor.id) {
            return Route::Owner(successor.clone());
        }
        let mut candidates = self.preceding(target, MAX_CANDIDATES - 1);
        match self.owner_if_gone(target, &candidates) {
            Some(owner) => candidates.push(owner),
            None => candidates = self.preceding(target, MAX_CANDIDATES),
        }
        if candidates.is_empty() {
            // Unreachable while the list holds a successor (it lies in
            // (me, target) whenever the target is past it), kept so a
            // Forward is never empty whatever the tables hold.
            Route::Forward(vec![successor.clone()])
        } else {
            Route::Forward(candidates)
        }
    }

    /// The successor-list entry that owns `target` if every entry before it
    /// is gone, provided all of those are among `candidates`.
    ///
    /// A lookup uses it as the last resort of a step: when the preceding
    /// nodes named here all time out (crashed, not yet noticed by us), the
    /// next live entry of our list is the owner, since the list has no gap.
    /// Without it the lookup would have nowhere to go until our stabilize
    /// noticed the crash.
    fn owner_if_gone(&self, target: &Id, candidates: &[NodeRef]) -> Option<NodeRef> {
        for node in self.successors.as_slice() {
            if target.in_half_open(&self.me.id, &node.id) {
                return Some(node.clone());
            }
            if !candidates.iter().any(|c| c.addr == node.addr) {
                return None;
            }
        }
        None
    }

    /// The known node closest before `target` (over fingers and successor
    /// list), or this node if none lies in `(me, target)`.
    pub fn closest_preceding_node(&self, target: &Id) -> NodeRef {
        self.preceding(target, 1)
            .into_iter()
            .next()
            .unwrap_or_else(|| self.me.clone())
    }

    /// Up to `limit` distinct known nodes in `(me, target)`, nearest to the
    /// target first.
    fn preceding(&self, target: &Id, limit: usize) -> Vec<NodeRef> {
        let mut found: Vec<&NodeRef> = Vec::new();
        let fingers = self.fingers.entries().filter_map(|(_, _, n)| n);
        for node in self.successors.as_slice().iter().chain(fingers) {
            if node.addr != self.me.addr
                && node.id.in_open(&self.me.id, target)
                && !found.iter().any(|n| n.addr == node.addr)
            {
                found.push(node);
            }
        }
        // Stable, so successor-list entries win ties with fingers.
        found.sort_by_key(|n| n.id.distance_to(target));
        found.into_iter().take(limit).cloned().collect()
    }

    /// The node to ask for its predecessor and successor list: our successor.
    /// When alone that is this node, and the driver answers from local state.
    pub fn stabilize_target(&self) -> NodeRef {
        self.successor().clone()
    }

    /// The answer to a stabilize request: `from`'s predecessor and successor
    /// list. Returns the node to `notify` next (our successor), or `None`
    /// when that is this node or the answer no longer applies.
    pub fn on_stabilize(
        &mut self,
        from: &NodeRef,
        their_predecessor: Option<NodeRef>,
        their_successors: Vec<NodeRef>,
    ) -> Option<NodeRef> {
        if from.addr != self.successor().addr {
            // The successor changed while the request was in flight (a
            // notify, a failure, a leave): this answer describes a node that
            // is not our successor any more, and adopting its list would undo
            // the newer information.
            return None;
        }
        let closer = their_predecessor.filter(|x| {
            x.addr != self.me.addr && x.addr != from.addr && x.id.in_open(&self.me.id, &from.id)
        });
        let head = closer.into_iter().chain(std::iter::once(from.clone()));
        self.successors.replace(head.chain(their_successors));
        if self.is_alone() {
            return None;
        }
        Some(self.successor().clone())
    }

    /// `candidate` thinks it might be our predecessor. Adopts it if we have
    /// none or it lies between the current one and us. Returns whether any
    /// link changed.
    pub fn notify(&mut self, candidate: NodeRef) -> bool {
        if candidate.addr == self.me.addr || candidate.id == self.me.id {
            return false;
        }
        let mut changed = false;
        if self.is_alone() {
            // A lone node's successor is itself; the node notifying it is the
            // only other node it knows, hence its successor too. Waiting for
            // stabilize to discover this would cost a round.
            self.successors.replace([candidate.clone()]);
            changed = true;
        }
        let adopt = match &self.predecessor {
            None => true,
            Some(p) => p.addr != candidate.addr && candidate.id.in_open(&p.id, &self.me.id),
        };
        if adopt {
            self.predecessor = Some(candidate);
            changed = true;
        }
        changed
    }

    /// The next finger to refresh (round-robin) and the start to look up.
    pub fn next_finger(&mut self) -> (usize, Id) {
        let i = self.next_finger % ID_BITS;
        self.next_finger = (i + 1) % ID_BITS;
        (i, self.fingers.start(i))
    }

    /// Stores the owner of finger `i`'s start. Every later finger whose start
    /// also falls in `(me, node]` has the same owner, since nothing lies
    /// between finger `i`'s start and `node`, so those are filled too and the
    /// round-robin skips them: with N nodes only about log2 N lookups refresh
    /// the whole table. An index out of range is ignored.
    pub fn set_finger(&mut self, i: usize, node: NodeRef) {
        if i >= ID_BITS {
            return;
        }
        let mut last = i;
        for j in i + 1..ID_BITS {
            if !self.fingers.start(j).in_half_open(&self.me.id, &node.id) {
                break;
            }
            last = j;
        }
        // The table stores "the owner is me" as an empty entry.
        let entry = (node.addr != self.me.addr).then_some(node);
        for j in i..=last {
            self.fingers.set(j, entry.clone());
        }
        if self.next_finger > i && self.next_finger <= last {
            self.next_finger = (last + 1) % ID_BITS;
        }
        // A lookup answered after we became alone still names a live node.
        self.refill_successor();
    }

    /// The predecessor to probe in `check_predecessor`, if any.
    pub fn predecessor_to_check(&self) -> Option<NodeRef> {
        self.predecessor.clone()
    }

    /// Whether `addr` is linked from this node: predecessor, a successor or
    /// a finger.
    pub fn knows(&self, addr: &str) -> bool {
        self.predecessor.as_ref().is_some_and(|p| p.addr == addr)
            || self.successors.as_slice().iter().any(|n| n.addr == addr)
            || self.fingers.distinct().iter().any(|n| n.addr == addr)
    }

    /// `addr` timed out or could not be reached: forget it everywhere.
    pub fn peer_failed(&mut self, addr: &str) {
        if addr == self.me.addr {
            return;
        }
        if self.predecessor.as_ref().is_some_and(|p| p.addr == addr) {
            self.predecessor = None;
        }
        self.successors.remove(addr);
        self.fingers.remove(addr);
        self.refill_successor();
    }

    /// When the successor list ran dry, promotes the nearest other known
    /// node (a finger, else the predecessor) to successor: any link keeps us
    /// in the ring, and stabilize walks it back to the true successor, while
    /// an empty list would split us off as a ring of our own.
    fn refill_successor(&mut self) {
        if !self.successors.is_empty() {
            return;
        }
        let me = self.me.id;
        let nearest_finger = self
            .fingers
            .distinct()
            .into_iter()
            .min_by_key(|n| me.distance_to(&n.id));
        if let Some(node) = nearest_finger.or_else(|| self.predecessor.clone()) {
            self.successors.replace([node]);
        }
    }

    /// Messages for a graceful leave: our successor learns its new
    /// predecessor (ours), our predecessor learns its new successors (ours).
    /// Empty when alone. One notice when both neighbours are the same node.
    pub fn leave_notices(&self) -> Vec<LeaveNotice> {
        if self.is_alone() {
            return Vec::new();
        }
        let notice = |to: &NodeRef| LeaveNotice {
            to: to.clone(),
            predecessor: self.predecessor.clone(),
            successors: self.successors.as_slice().to_vec(),
        };
        let successor = self.successor();
        let mut notices = vec![notice(successor)];
        if let Some(p) = &self.predecessor {
            if p.addr != successor.addr {
                notices.push(notice(p));
            }
        }
        notices
    }

    /// `leaving` is leaving the ring gracefully and handed us its links.
    pub fn on_leave(
        &mut self,
        leaving: &NodeRef,
        predecessor: Option<NodeRef>,
        successors: Vec<NodeRef>,
    ) {
        if leaving.addr == self.me.addr {
            return;
        }
        if self
            .predecessor
            .as_ref()
            .is_some_and(|p| p.addr == leaving.addr)
        {
            self.predecessor =
                predecessor.filter(|p| p.addr != self.me.addr && p.addr != leaving.addr);
        }
        let position = self
            .successors
            .as_slice()
            .iter()
            .position(|n| n.addr == leaving.addr);
        match position {
            Some(0) => {
                let rest: Vec<NodeRef> = self.successors.as_slice()[1..].to_vec();
                let handed = successors.into_iter().filter(|n| n.addr != leaving.addr);
                // `replace` cuts at us: the leaving node's list wraps past us
                // in a ring smaller than r.
                self.successors.replace(handed.chain(rest));
            }
            Some(_) => {
                self.successors.remove(&leaving.addr);
            }
            None => {}
        }
        self.fingers.remove(&leaving.addr);
        self.refill_successor();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::{id, node as n};

    fn opts() -> Options {
        Options::default()
    }

    /// Node `me` in a settled ring of the given positions (sorted ascending).
    fn settled(me: u8, ring: &[u8]) -> RingState {
        let pos = ring
            .iter()
            .position(|&x| x == me)
            .expect("me is in the ring");
        let len = ring.len();
        let mut s = RingState::create(n(me), opts());
        let succs = (1..len).map(|k| n(ring[(pos + k) % len]));
        s.successors.replace(succs);
        if len > 1 {
            s.predecessor = Some(n(ring[(pos + len - 1) % len]));
        }
        s
    }

    fn addrs(nodes: &[NodeRef]) -> Vec<&str> {
        nodes.iter().map(|n| n.addr.as_str()).collect()
    }

    #[test]
    fn lone_node_owns_everything() {
        let s = RingState::create(n(10), opts());
        assert!(s.is_alone());
        assert_eq!(s.successor(), &n(10));
        assert_eq!(s.predecessor(), None);
        for key in [0, 9, 10, 11, 255] {
            assert!(s.owns(&id(key)));
            assert_eq!(s.route(&id(key)), Route::Owner(n(10)));
        }
        assert_eq!(s.closest_preceding_node(&id(5)), n(10));
        assert!(s.leave_notices().is_empty());
        assert_eq!(s.stabilize_target(), n(10));
    }

    #[test]
    fn joining_at_own_address_leaves_a_lone_node() {
        let s = RingState::join(n(10), n(10), opts());
        assert!(s.is_alone());
    }

    #[test]
    fn route_table() {
        // Ring 10, 50, 100, 200; we are 100 with fingers on 200 and 10.
        let mut s = settled(100, &[10, 50, 100, 200]);
        s.successors.replace([n(200)]);
        s.fingers.set(6, Some(n(200)));
        s.fingers.set(7, Some(n(10)));
        // (target, expected): Owner(x) as (true, [x]), Forward as (false, list)
        let cases: &[(u8, bool, &[u8])] = &[
            (100, true, &[100]),     // equal to me
            (60, true, &[100]),      // (pred, me]
            (50, false, &[10, 200]), // equal to pred: not mine
            (150, true, &[200]),     // (me, successor]
            (200, true, &[200]),     // equal to successor
            (201, false, &[200]),
            (5, false, &[200]), // wrap-around
            (10, false, &[200]),
            (11, false, &[10, 200]),
        ];
        for &(target, owner, want) in cases {
            let got = s.route(&id(target));
            let want_nodes: Vec<NodeRef> = want.iter().map(|&x| n(x)).collect();
            let expected = if owner {
                Route::Owner(want_nodes[0].clone())
            } else {
                Route::Forward(want_nodes)
            };
            assert_eq!(got, expected, "target {target}");
        }
    }

    #[test]
    fn route_without_predecessor_forwards_keys_before_me() {
        let mut s = settled(100, &[10, 50, 100, 200]);
        s.predecessor = None;
        assert!(!s.owns(&id(60)));
        // Without a predecessor we cannot claim (50, 100]: ask around.
        match s.route(&id(60)) {
            Route::Forward(c) => assert_eq!(addrs(&c)[0], "n50"),
            other => panic!("expected a forward, got {other:?}"),
        }
        // Even our own id: the node before us knows we own it.
        match s.route(&id(100)) {
            Route::Forward(c) => assert_eq!(addrs(&c)[0], "n50"),
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn forward_is_bounded_ordered_and_excludes_me() {
        let mut s = settled(0, &[0, 1, 2, 3]);
        s.predecessor = None;
        for (i, x) in [4u8, 8, 16, 32, 64, 128].iter().enumerate() {
            s.fingers.set(i + 2, Some(n(*x)));
        }
        match s.route(&id(200)) {
            Route::Forward(c) => {
                assert_eq!(addrs(&c), ["n128", "n64", "n32", "n16"]);
                assert_eq!(c.len(), MAX_CANDIDATES);
            }
            other => panic!("expected a forward, got {other:?}"),
        }
        assert_eq!(s.closest_preceding_node(&id(100)), n(64));
        assert_eq!(s.closest_preceding_node(&id(1)), n(0));
    }

    #[test]
    fn forward_ends_with_the_owner_should_the_successors_before_it_be_gone() {
        let mut s = settled(100, &[10, 50, 100, 150, 160, 200]);
        let fwd = |s: &RingState, t: u8| match s.route(&id(t)) {
            Route::Forward(c) => c.iter().map(|n| n.addr.clone()).collect::<Vec<_>>(),
            other => panic!("expected a forward, got {other:?}"),
        };
        assert_eq!(fwd(&s, 170), ["n160", "n150", "n200"]);
        assert_eq!(fwd(&s, 200), ["n160", "n150", "n200"]); // the owner itself
                                                            // Past the list's reach: no owner to name.
        assert_eq!(fwd(&s, 5), ["n200", "n160", "n150"]);
        // Fingers crowding out a list entry: no guess without the whole list.
        for (i, x) in [161, 165, 168].into_iter().enumerate() {
            s.fingers.set(i, Some(n(x)));
        }
        assert_eq!(fwd(&s, 170), ["n168", "n165", "n161", "n160"]);
    }

    #[test]
    fn two_node_ring_forms_through_notify_and_stabilize() {
        let mut a = RingState::create(n(10), opts());
        let mut b = RingState::join(n(200), n(10), opts());
        assert_eq!(b.successor(), &n(10));
        // b stabilizes with a: a has no predecessor, b keeps a and notifies it.
        let notify = b.on_stabilize(&n(10), a.predecessor().cloned(), a.successors().to_vec());
        assert_eq!(notify, Some(n(10)));
        assert!(a.notify(n(200)));
        assert_eq!(a.predecessor(), Some(&n(200)));
        assert_eq!(a.successor(), &n(200)); // the lone-node shortcut
                                            // a stabilizes with b: b's list wraps through a and is cut there.
        let notify = a.on_stabilize(&n(200), b.predecessor().cloned(), b.successors().to_vec());
        assert_eq!(notify, Some(n(200)));
        assert!(b.notify(n(10)));
        assert!(!b.notify(n(10)));
        assert_eq!(addrs(a.successors()), ["n200"]);
        assert_eq!(addrs(b.successors()), ["n10"]);
        assert!(a.owns(&id(5)) && a.owns(&id(201)) && !a.owns(&id(100)));
        assert!(b.owns(&id(100)) && b.owns(&id(200)) && !b.owns(&id(10)));
    }

    #[test]
    fn lone_node_stabilizing_with_itself_adopts_its_predecessor() {
        let mut a = RingState::create(n(10), opts());
        a.predecessor = Some(n(30)); // as if a notify was missed
        a.successors.replace([]);
        let pred = a.predecessor().cloned();
        assert_eq!(a.on_stabilize(&n(10), pred, vec![]), Some(n(30)));
        assert_eq!(a.successor(), &n(30));
    }

    #[test]
    fn stabilize_table() {
        // We are 100 with successor 200.
        // (their predecessor, their successors, expected list, notify)
        type Case<'a> = (Option<u8>, &'a [u8], &'a [u8], Option<u8>);
        let cases: &[Case] = &[
            (Some(100), &[250, 5], &[200, 250, 5], Some(200)),
            (Some(150), &[250, 5], &[150, 200, 250], Some(150)),
            (Some(50), &[250], &[200, 250], Some(200)), // not between us
            (None, &[100, 200], &[200], Some(200)),     // 2-node ring
            (Some(200), &[250], &[200, 250], Some(200)), // nonsense: itself
            (Some(150), &[200, 200, 250], &[150, 200, 250], Some(150)),
        ];
        for (pred, succs, want, notify) in cases {
            let mut s = RingState::join(n(100), n(200), opts());
            let got = s.on_stabilize(&n(200), pred.map(n), succs.iter().map(|&x| n(x)).collect());
            let want_nodes: Vec<NodeRef> = want.iter().map(|&x| n(x)).collect();
            assert_eq!(s.successors(), want_nodes.as_slice(), "pred {pred:?}");
            assert_eq!(got, notify.map(n), "pred {pred:?}");
        }
    }

    #[test]
    fn stale_stabilize_answer_is_ignored() {
        let mut s = RingState::join(n(100), n(200), opts());
        s.notify(n(50));
        assert_eq!(s.on_stabilize(&n(220), Some(n(150)), vec![n(230)]), None);
        assert_eq!(addrs(s.successors()), ["n200"]);
    }

    #[test]
    fn notify_table() {
        // (current predecessor, candidate, adopted)
        let cases: &[(Option<u8>, u8, bool)] = &[
            (None, 50, true),
            (Some(50), 60, true),
            (Some(50), 40, false),
            (Some(50), 50, false),
            (Some(250), 10, true), // wrap-around: 10 ∈ (250, 100)
            (Some(250), 240, false),
            (Some(50), 100, false), // candidate is me
            (Some(50), 150, false), // after me: not a predecessor
        ];
        for &(pred, cand, adopted) in cases {
            let mut s = RingState::join(n(100), n(200), opts());
            s.predecessor = pred.map(n);
            let changed = s.notify(n(cand));
            assert_eq!(changed, adopted, "pred {pred:?} candidate {cand}");
            let want = if adopted { Some(cand) } else { pred };
            assert_eq!(s.predecessor(), want.map(n).as_ref());
        }
    }

    #[test]
    fn set_finger_fills_following_entries_and_skips_them() {
        let mut s = RingState::create(n(0), opts());
        assert_eq!(s.next_finger(), (0, id(1)));
        // Successor of 1 is 20: starts 1, 2, 4, 8, 16 all map to it.
        s.set_finger(0, n(20));
        for i in 0..5 {
            assert_eq!(s.fingers().get(i), Some(&n(20)), "finger {i}");
        }
        assert_eq!(s.fingers().get(5), None);
        assert_eq!(s.next_finger(), (5, id(32)));
        // Successor of 32 is me (nothing further): the rest are empty and the
        // round-robin wraps to the start.
        s.set_finger(5, n(0));
        assert!((5..ID_BITS).all(|i| s.fingers().get(i).is_none()));
        assert_eq!(s.next_finger().0, 0);
        // Out of range is ignored.
        s.set_finger(ID_BITS, n(9));
        // We started alone: the first finger learned became the successor.
        assert_eq!(s.successor(), &n(20));
    }

    #[test]
    fn fix_fingers_round_robin_covers_every_index() {
        let mut s = RingState::create(n(0), opts());
        let seen: Vec<usize> = (0..ID_BITS).map(|_| s.next_finger().0).collect();
        assert_eq!(seen, (0..ID_BITS).collect::<Vec<_>>());
        assert_eq!(s.next_finger().0, 0);
    }

    #[test]
    fn peer_failed_drops_everywhere_and_refills() {
        let mut s = settled(100, &[10, 50, 100, 150, 200, 250]);
        s.fingers.set(0, Some(n(150)));
        s.fingers.set(6, Some(n(250)));
        s.peer_failed("n150");
        assert_eq!(addrs(s.successors()), ["n200", "n250"]);
        assert_eq!(s.fingers().get(0), None);
        s.peer_failed("n50");
        assert_eq!(s.predecessor(), None);
        // Whole list gone: the nearest live finger takes over.
        s.peer_failed("n200");
        s.successors.remove("n250");
        s.fingers.set(7, Some(n(10)));
        s.peer_failed("nothing");
        assert_eq!(addrs(s.successors()), ["n250"]);
        s.peer_failed("n250");
        assert_eq!(addrs(s.successors()), ["n10"]);
        s.peer_failed("n10");
        assert!(s.is_alone());
        assert!(s.owns(&id(3)));
        s.peer_failed("n100"); // ourselves: ignored
        assert_eq!(s.me(), &n(100));
    }

    #[test]
    fn knows_its_links_only() {
        let mut s = settled(100, &[10, 50, 100, 150, 200, 250]);
        s.fingers.set(9, Some(n(10)));
        for (addr, known) in [("n50", true), ("n150", true), ("n10", true), ("n77", false)] {
            assert_eq!(s.knows(addr), known, "{addr}");
        }
        s.peer_failed("n150");
        assert!(!s.knows("n150"));
    }

    #[test]
    fn peer_failed_falls_back_to_predecessor() {
        let mut s = RingState::join(n(100), n(200), opts());
        s.notify(n(50));
        s.peer_failed("n200");
        assert_eq!(s.successor(), &n(50));
        assert!(!s.is_alone());
    }

    #[test]
    fn leave_notices_table() {
        let s = settled(100, &[10, 50, 100, 200, 250]);
        let notices = s.leave_notices();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].to, n(200));
        assert_eq!(notices[1].to, n(50));
        for notice in &notices {
            assert_eq!(notice.predecessor, Some(n(50)));
            assert_eq!(addrs(&notice.successors), ["n200", "n250", "n10"]);
        }
        // Two-node ring: one neighbour is both.
        let s = settled(100, &[50, 100]);
        let notices = s.leave_notices();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].to, n(50));
    }

    #[test]
    fn leave_splices_both_neighbours() {
        let ring = [10, 50, 100, 200, 250];
        let leaving = settled(100, &ring);
        let mut pred = settled(50, &ring);
        let mut succ = settled(200, &ring);
        pred.fingers.set(0, Some(n(100)));
        for notice in leaving.leave_notices() {
            let target = if notice.to == n(50) {
                &mut pred
            } else {
                &mut succ
            };
            target.on_leave(&n(100), notice.predecessor, notice.successors);
        }
        assert_eq!(addrs(pred.successors()), ["n200", "n250", "n10"]);
        assert_eq!(pred.fingers().get(0), None);
        assert_eq!(succ.predecessor(), Some(&n(50)));
        assert_eq!(addrs(succ.successors()), ["n250", "n10", "n50"]);
    }

    #[test]
    fn leave_of_a_later_successor_just_removes_it() {
        let mut s = settled(10, &[10, 50, 100, 200]);
        s.on_leave(&n(100), Some(n(50)), vec![n(200), n(10)]);
        assert_eq!(addrs(s.successors()), ["n50", "n200"]);
        assert_eq!(s.predecessor(), Some(&n(200)));
    }

    #[test]
    fn leave_in_small_rings() {
        // Two nodes: the survivor is alone afterwards.
        let mut s = settled(100, &[50, 100]);
        let notices = settled(50, &[50, 100]).leave_notices();
        assert_eq!(notices.len(), 1);
        let notice = notices[0].clone();
        s.on_leave(&n(50), notice.predecessor, notice.successors);
        assert!(s.is_alone());
        assert_eq!(s.predecessor(), None);
        // Three nodes: list wraps through us and is cut there.
        let ring = [10, 50, 100];
        let mut a = settled(10, &ring);
        let mut c = settled(100, &ring);
        for notice in settled(50, &ring).leave_notices() {
            let target = if notice.to == n(10) { &mut a } else { &mut c };
            target.on_leave(&n(50), notice.predecessor, notice.successors);
        }
        assert_eq!(addrs(a.successors()), ["n100"]);
        assert_eq!(c.predecessor(), Some(&n(10)));
        assert_eq!(addrs(c.successors()), ["n10"]);
    }

    #[test]
    fn owns_table() {
        let s = settled(100, &[50, 100, 200]);
        // (key, owned)
        for (key, owned) in [
            (50, false),
            (51, true),
            (100, true),
            (101, false),
            (0, false),
        ] {
            assert_eq!(s.owns(&id(key)), owned, "key {key}");
        }
        // Wrap-around: the lowest node owns the top of the ring.
        let s = settled(50, &[50, 100, 200]);
        for (key, owned) in [
            (201, true),
            (255, true),
            (0, true),
            (50, true),
            (200, false),
        ] {
            assert_eq!(s.owns(&id(key)), owned, "key {key}");
        }
    }
}
