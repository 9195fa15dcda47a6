//! What a client remembers between its calls: which peers just failed to
//! answer, and the successor lists nodes reported.
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
//! per that time, not once per chunk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chord::NodeRef;

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

    /// `node` reported `successors` just now.
    pub(super) fn learn(&self, node: &NodeRef, successors: &[NodeRef]) {
        let mut inner = self.lock();
        if inner.successors.len() >= MAX_REMEMBERED {
            inner.successors.clear();
        }
        inner
            .successors
            .insert(node.addr.clone(), (successors.to_vec(), Instant::now()));
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
    fn successors_come_from_the_node_else_from_the_longest_list_naming_it() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        assert!(memory.successors_of(&node("b")).is_empty());
        memory.learn(&node("a"), &[node("b"), node("c")]);
        memory.learn(&node("z"), &[node("a"), node("b"), node("c"), node("d")]);
        assert_eq!(addrs(&memory.successors_of(&node("b"))), ["c", "d"]);
        memory.learn(&node("b"), &[node("x")]);
        assert_eq!(addrs(&memory.successors_of(&node("b"))), ["x"]);
    }

    #[test]
    fn only_a_nodes_own_recent_report_is_fresh() {
        let memory = PeerMemory::new(Duration::from_secs(1));
        memory.learn(&node("a"), &[node("b"), node("c")]);
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
}
