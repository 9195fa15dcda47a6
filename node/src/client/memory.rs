//! What a client remembers between its calls: which peers just failed to
//! answer, and what nodes reported of themselves: their successor lists
//! and the arcs of keys they own.
//!
//! Until the ring notices a frozen or dead node (a few stabilize rounds),
//! lookups still name it. A client that forgot it after each failed call
//! would pay a call deadline for every chunk it owns; one that remembers
//! sends those chunks to the next holder at once. The successor lists are
//! what make that possible: the holders after a silent owner are read from
//! the last list that named it, not asked of the owner.
//!
//! A list a node reported within [`SUCCESSORS_FRESH_FOR`] stands for
//! the list it would report now, so a transfer asks each owner for it once
//! per that time, not once per chunk. So does the arc a node owns, from
//! its predecessor (exclusive) to itself, as the same report gives it: a
//! key in a fresh arc is taken to be that node's without a lookup, so a
//! transfer looks up each owner about once per that time, not each chunk.
//! So does the ring's copy count, which every upload and download needs:
//! a run of small files asks for it once per that time, not once a file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chord::{Id, NodeRef};

/// Most peers remembered of each kind: far more than a ring has, so only a
/// long-lived client over years of churn (a gateway's) ever starts afresh.
const MAX_REMEMBERED: usize = 4096;

/// How long a node's own report of its successors is taken as current: a
/// node's default stabilize period, the time within which its list changes
/// at most once. A list this old is at most one round behind, as the one a
/// node answers with can be anyway while a join or a failure is settling.
pub(super) const SUCCESSORS_FRESH_FOR: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct PeerMemory {
    /// How long a peer that failed to answer is passed over.
    silent_for: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Peers that failed to answer, and when.
    silent: HashMap<String, Instant>,
    /// Each node's successor list, as it last reported it, and when.
    successors: HashMap<String, (Vec<NodeRef>, Instant)>,
    /// The arcs nodes reported owning, by the owner's id: the owner, its
    /// predecessor's id (the arc is `(predecessor, owner]`), and when.
    arcs: BTreeMap<Id, (NodeRef, Id, Instant)>,
    /// How many copies the ring keeps, as a node last reported, and when.
    replicas: Option<(u32, Instant)>,
}

impl PeerMemory {
    pub(super) fn new(silent_for: Duration) -> PeerMemory {
        PeerMemory {
            silent_for,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `addr` failed to answer a call just now.
    pub(super) fn silent(&self, addr: &str) {
        let mut inner = self.lock();
        if inner.silent.len() >= MAX_REMEMBERED {
            inner.silent.clear();
        }
        inner.silent.insert(addr.to_string(), Instant::now());
    }

    /// `addr` answered a call: it is not passed over any more.
    pub(super) fn answered(&self, addr: &str) {
        self.lock().silent.remove(addr);
    }

    /// Whether `addr` failed to answer within the last `silent_for`.
    pub(super) fn is_silent(&self, addr: &str) -> bool {
        let mut inner = self.lock();
        match inner.silent.get(addr) {
            Some(at) if at.elapsed() < self.silent_for => true,
            Some(_) => {
                inner.silent.remove(addr);
                false
            }
            None => false,
        }
    }

    /// `node` reported `successors` and `predecessor` just now.
    pub(super) fn learn(
        &self,
        node: &NodeRef,
        predecessor: Option<&NodeRef>,
        successors: &[NodeRef],
    ) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.successors.len() >= MAX_REMEMBERED {
            inner.successors.clear();
        }
        if inner.arcs.len() >= MAX_REMEMBERED {
            inner.arcs.clear();
        }
        inner
            .successors
            .insert(node.addr.clone(), (successors.to_vec(), now));
        match predecessor {
            Some(p) => {
                inner.arcs.insert(node.id, (node.clone(), p.id, now));
            }
            // Between a predecessor's failure and the next notify a node
            // cannot say what it owns.
            None => {
                inner.arcs.remove(&node.id);
            }
        }
    }

    /// A node reported just now that the ring keeps `replicas` copies.
    pub(super) fn learn_replicas(&self, replicas: u32) {
        self.lock().replicas = Some((replicas, Instant::now()));
    }

    /// The ring's copy count as a node reported it within
    /// [`SUCCESSORS_FRESH_FOR`]; `None` if none has that recently.
    pub(super) fn fresh_replicas(&self) -> Option<u32> {
        let (replicas, at) = self.lock().replicas?;
        (at.elapsed() < SUCCESSORS_FRESH_FOR).then_some(replicas)
    }

    /// The node that reported owning `key` within [`SUCCESSORS_FRESH_FOR`],
    /// if one did: the first remembered node at or after `key` on the
    /// circle, if its reported arc holds `key`. A node unknown here that
    /// sits between them has become that node's predecessor in its report,
    /// so the arc does not hold `key` and the answer is `None`.
    pub(super) fn fresh_owner_of(&self, key: &Id) -> Option<NodeRef> {
        let inner = self.lock();
        let (owner, predecessor, at) = inner
            .arcs
            .range(*key..)
            .next()
            .or_else(|| inner.arcs.iter().next())
            .map(|(_, arc)| arc)?;
        (at.elapsed() < SUCCESSORS_FRESH_FOR && key.in_half_open(predecessor, &owner.id))
            .then(|| owner.clone())
    }

    /// The successors of `node` as it reported them within
    /// [`SUCCESSORS_FRESH_FOR`]; `None` if it has not that recently.
    pub(super) fn fresh_successors_of(&self, node: &NodeRef) -> Option<Vec<NodeRef>> {
        let inner = self.lock();
        let (list, at) = inner.successors.get(&node.addr)?;
        (at.elapsed() < SUCCESSORS_FRESH_FOR).then(|| list.clone())
    }

    /// The successors of `node` as last known: its own report, else the
    /// longest run after it in a list another node reported.
    pub(super) fn successors_of(&self, node: &NodeRef) -> Vec<NodeRef> {
        let inner = self.lock();
        if let Some((own, _)) = inner.successors.get(&node.addr) {
            return own.clone();
        }
        inner
            .successors
            .values()
            .filter_map(|(list, _)| {
                let at = list.iter().position(|n| n.addr == node.addr)?;
                Some(&list[at + 1..])
            })
            .max_by_key(|after| after.len())
            .map(<[NodeRef]>::to_vec)
            .unwrap_or_default()
    }

    /// `nodes` with the silent ones moved to the end, order kept otherwise.
    pub(super) fn answering_first(&self, mut nodes: Vec<NodeRef>) -> Vec<NodeRef> {
        nodes.sort_by_key(|n| self.is_silent(&n.addr));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::Id;

    fn node(name: &str) -> NodeRef {
        NodeRef {
            id: Id::hash(name.as_bytes()),
            addr: name.to_string(),
        }
    }

    fn addrs(nodes: &[NodeRef]) -> Vec<&str> {
        nodes.iter().map(|n| n.addr.as_str()).collect()
    }

    #[test]
    fn a_silent_peer_goes_last_until_it_answers_or_the_time_is_up() {
        let memory = PeerMemory::new(Duration::from_millis(50));
        let nodes = vec![node("a"), node("b"), node("c")];
        memory.silent("a");
        assert!(memory.is_silent("a"));
        assert_eq!(
            addrs(&memory.answering_first(nodes.clone())),
            ["b", "c", "a"]
        );
        memory.answered("a");
        assert_eq!(
            addrs(&memory.answering_first(nodes.clone())),
            ["a", "b", "c"]
        );
        memory.silent("b");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!memory.is_silent("b"));
    }

    #[test]
    fn the_copy_count_is_remembered_while_fresh() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        assert_eq!(memory.fresh_replicas(), None);
        memory.learn_replicas(3);
        assert_eq!(memory.fresh_replicas(), Some(3));
        memory.learn_replicas(2);
        assert_eq!(memory.fresh_replicas(), Some(2));
        std::thread::sleep(SUCCESSORS_FRESH_FOR + Duration::from_millis(10));
        assert_eq!(memory.fresh_replicas(), None);
    }

    #[test]
    fn successors_come_from_the_node_else_from_the_longest_list_naming_it() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        assert!(memory.successors_of(&node("b")).is_empty());
        memory.learn(&node("a"), None, &[node("b"), node("c")]);
        memory.learn(
            &node("z"),
            None,
            &[node("a"), node("b"), node("c"), node("d")],
        );
        assert_eq!(addrs(&memory.successors_of(&node("b"))), ["c", "d"]);
        memory.learn(&node("b"), None, &[node("x")]);
        assert_eq!(addrs(&memory.successors_of(&node("b"))), ["x"]);
    }

    #[test]
    fn only_a_nodes_own_recent_report_is_fresh() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        memory.learn(&node("a"), None, &[node("b"), node("c")]);
        // Named in a's list, but b has not reported its own.
        assert_eq!(memory.fresh_successors_of(&node("b")), None);
        let fresh = memory
            .fresh_successors_of(&node("a"))
            .expect("just learned");
        assert_eq!(addrs(&fresh), ["b", "c"]);
        std::thread::sleep(SUCCESSORS_FRESH_FOR + Duration::from_millis(20));
        assert_eq!(memory.fresh_successors_of(&node("a")), None);
        // Stale, but still what stands in for a silent node's list.
        assert_eq!(addrs(&memory.successors_of(&node("a"))), ["b", "c"]);
    }

    /// A node at `at` on the circle (the first byte of its id), named by it.
    fn at(byte: u8) -> NodeRef {
        let mut id = [0u8; 20];
        id[0] = byte;
        NodeRef {
            id: Id::from_array(id),
            addr: format!("n{byte}"),
        }
    }

    fn key(byte: u8) -> Id {
        let mut id = [0u8; 20];
        id[0] = byte;
        id[19] = 1;
        Id::from_array(id)
    }

    #[test]
    fn a_key_in_a_fresh_reported_arc_has_its_owner_without_a_lookup() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        assert_eq!(memory.fresh_owner_of(&key(5)), None);
        // Three nodes at 10, 100 and 200; 100 and 200 have reported.
        memory.learn(&at(100), Some(&at(10)), &[at(200)]);
        memory.learn(&at(200), Some(&at(100)), &[at(10)]);
        let owner = |k: u8| memory.fresh_owner_of(&key(k)).map(|n| n.addr);
        assert_eq!(owner(10).as_deref(), Some("n100"));
        assert_eq!(owner(99).as_deref(), Some("n100"));
        assert_eq!(owner(150).as_deref(), Some("n200"));
        // (200, 10] is 10's arc, which has not been reported: around the
        // circle the first node known is 100, whose arc does not hold it.
        assert_eq!(owner(250), None);
        assert_eq!(owner(3), None);
        // 10 reports, and its arc wraps around the top of the circle.
        memory.learn(&at(10), Some(&at(200)), &[at(100)]);
        assert_eq!(owner(250).as_deref(), Some("n10"));
        assert_eq!(owner(3).as_deref(), Some("n10"));
        // A node that joined at 50 and notified 100: 100's new report no
        // longer holds 10..50, and 50 is not known here yet.
        memory.learn(&at(100), Some(&at(50)), &[at(200)]);
        assert_eq!(owner(30), None);
        assert_eq!(owner(60).as_deref(), Some("n100"));
        // Without a predecessor a node names no arc.
        memory.learn(&at(200), None, &[at(10)]);
        assert_eq!(owner(150), None);
        // And reports go stale.
        std::thread::sleep(SUCCESSORS_FRESH_FOR + Duration::from_millis(20));
        assert_eq!(owner(60), None);
    }
}
