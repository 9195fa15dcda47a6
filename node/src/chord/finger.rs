//! The finger table: a node's shortcuts across the ring.
//!
//! Entry `i` is meant to hold the first node that succeeds `me + 2^i`, so the
//! fingers halve the remaining distance to any key and a lookup takes
//! O(log N) hops. Entries are hints, never truth: they may be empty (not yet
//! learned, or cleared after a failure) or stale, and routing must stay
//! correct with any of them missing. The table never holds the node itself:
//! "the successor of this start is me" is stored as an empty entry, since a
//! finger to oneself gives no progress.

use super::id::{Id, NodeRef, ID_BITS};

/// The [`ID_BITS`] routing shortcuts of one node.
#[derive(Clone, Debug)]
pub struct FingerTable {
    me: Id,
    entries: Vec<Option<NodeRef>>,
}

impl FingerTable {
    /// An empty table for the node at `me`.
    pub fn new(me: Id) -> Self {
        FingerTable {
            me,
            entries: vec![None; ID_BITS],
        }
    }

    /// `me + 2^i`: the point whose successor entry `i` should name.
    ///
    /// Panics if `i >= ID_BITS`, like slice indexing: an index out of range is
    /// a bug in the caller, not input from a peer.
    pub fn start(&self, i: usize) -> Id {
        self.me.add_pow2(i)
    }

    /// Entry `i`, if known. `None` as well for an index out of range.
    pub fn get(&self, i: usize) -> Option<&NodeRef> {
        self.entries.get(i).and_then(Option::as_ref)
    }

    /// Stores entry `i`. A node with our own id is stored as "none", see the
    /// module doc. An index out of range is ignored.
    pub fn set(&mut self, i: usize, node: Option<NodeRef>) {
        let node = node.filter(|n| n.id != self.me);
        if let Some(slot) = self.entries.get_mut(i) {
            *slot = node;
        }
    }

    /// Every entry with its index and start, index 0 first.
    pub fn entries(&self) -> impl Iterator<Item = (usize, Id, Option<&NodeRef>)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, node)| (i, self.me.add_pow2(i), node.as_ref()))
    }

    /// Clears every entry that points at `addr` (a peer that failed or left).
    pub fn remove(&mut self, addr: &str) {
        for slot in &mut self.entries {
            if slot.as_ref().is_some_and(|n| n.addr == addr) {
                *slot = None;
            }
        }
    }

    /// The distinct nodes in the table, in finger order (index 0 first), so
    /// the first one is the closest known node after us.
    pub fn distinct(&self) -> Vec<NodeRef> {
        let mut out: Vec<NodeRef> = Vec::new();
        for node in self.entries.iter().flatten() {
            // Consecutive entries usually share a node, and the distinct count
            // is about log2 N, so a linear scan beats hashing here.
            if !out.iter().any(|n| n.addr == node.addr) {
                out.push(node.clone());
            }
        }
        out
    }

    /// The finger with the highest index that lies strictly between us and
    /// `target`: the classic `closest_preceding_node` over fingers alone.
    pub fn closest_preceding(&self, target: &Id) -> Option<&NodeRef> {
        self.entries
            .iter()
            .rev()
            .flatten()
            .find(|n| n.id.in_open(&self.me, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::{id, node};

    #[test]
    fn starts_are_powers_of_two_and_wrap() {
        let t = FingerTable::new(id(10));
        assert_eq!(t.start(0), id(11));
        assert_eq!(t.start(3), id(18));
        let top = FingerTable::new(Id::MAX);
        assert_eq!(top.start(0), Id::ZERO);
        assert_eq!(t.entries().count(), ID_BITS);
        assert!(t.entries().all(|(i, s, n)| s == t.start(i) && n.is_none()));
    }

    #[test]
    fn set_get_remove_and_distinct() {
        let mut t = FingerTable::new(id(10));
        t.set(0, Some(node(20)));
        t.set(1, Some(node(20)));
        t.set(5, Some(node(50)));
        t.set(7, Some(node(200)));
        t.set(ID_BITS, Some(node(9))); // out of range: ignored
        assert_eq!(t.get(1), Some(&node(20)));
        assert_eq!(t.get(2), None);
        assert_eq!(t.get(ID_BITS), None);
        assert_eq!(t.distinct(), vec![node(20), node(50), node(200)]);
        t.remove("n20");
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(1), None);
        assert_eq!(t.distinct(), vec![node(50), node(200)]);
        t.set(5, None);
        assert_eq!(t.distinct(), vec![node(200)]);
    }

    #[test]
    fn never_stores_itself() {
        let mut t = FingerTable::new(id(10));
        t.set(0, Some(node(10)));
        assert_eq!(t.get(0), None);
        assert!(t.distinct().is_empty());
    }

    #[test]
    fn closest_preceding_table() {
        // me = 100, fingers at 110, 150, 220, 40 (wrapped past zero).
        let mut t = FingerTable::new(id(100));
        t.set(3, Some(node(110)));
        t.set(5, Some(node(150)));
        t.set(6, Some(node(220)));
        t.set(7, Some(node(40)));
        // (target, expected)
        let cases = [
            (120, Some(110)),
            (150, Some(110)), // a finger equal to the target does not precede it
            (151, Some(150)),
            (0, Some(220)), // wrap-around
            (50, Some(40)),
            (40, Some(220)),
            (105, None),     // nothing in (me, target)
            (100, Some(40)), // target == me: the whole ring but me
        ];
        for (target, want) in cases {
            assert_eq!(
                t.closest_preceding(&id(target)).map(|n| n.id),
                want.map(id),
                "target {target}"
            );
        }
        assert!(FingerTable::new(id(1)).closest_preceding(&id(0)).is_none());
    }
}
