//! The successor list: the next `r` nodes clockwise, for failure resilience.
//!
//! With `r` successors a node survives `r - 1` simultaneous failures of the
//! nodes after it: when its immediate successor dies it moves on to the next
//! entry instead of losing its place in the ring. The same list names the
//! replicas of the keys a node owns.
//!
//! Invariants: at most `r` entries, no two with the same address, and never
//! the node itself. An empty list means "I am my own successor" (a one-node
//! ring); [`SuccessorList::first`] then answers with the node itself.

use super::id::NodeRef;

/// The next `r` nodes after `me`, nearest first.
#[derive(Clone, Debug)]
pub struct SuccessorList {
    me: NodeRef,
    r: usize,
    list: Vec<NodeRef>,
}

impl SuccessorList {
    /// An empty list (a lone node) holding at most `r` successors. An `r` of 0
    /// is taken as 1: a node always needs its immediate successor.
    pub fn new(me: NodeRef, r: usize) -> Self {
        let r = r.max(1);
        SuccessorList {
            me,
            r,
            list: Vec::with_capacity(r),
        }
    }

    /// The immediate successor, or `me` when the list is empty.
    pub fn first(&self) -> &NodeRef {
        self.list.first().unwrap_or(&self.me)
    }

    pub fn as_slice(&self) -> &[NodeRef] {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The most entries the list keeps (`r`).
    pub fn capacity(&self) -> usize {
        self.r
    }

    /// Replaces the list with `nodes`, nearest first.
    ///
    /// Duplicates (by address) are dropped, and the list is cut at the first
    /// occurrence of `me`: a successor list learned from a peer wraps around
    /// the ring when the ring is smaller than `r`, and whatever follows `me`
    /// is already our successor's business, not ours.
    pub fn replace(&mut self, nodes: impl IntoIterator<Item = NodeRef>) {
        let mut list: Vec<NodeRef> = Vec::with_capacity(self.r);
        for node in nodes {
            if list.len() >= self.r || node.addr == self.me.addr {
                break;
            }
            if !list.iter().any(|n| n.addr == node.addr) {
                list.push(node);
            }
        }
        self.list = list;
    }

    /// Drops `addr` from the list; returns whether it was there.
    pub fn remove(&mut self, addr: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|n| n.addr != addr);
        self.list.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeRef {
        NodeRef::from_addr(name)
    }

    fn addrs(l: &SuccessorList) -> Vec<&str> {
        l.as_slice().iter().map(|n| n.addr.as_str()).collect()
    }

    #[test]
    fn empty_list_means_alone() {
        let l = SuccessorList::new(n("me"), 3);
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
        assert_eq!(l.first(), &n("me"));
        assert_eq!(l.capacity(), 3);
        assert_eq!(SuccessorList::new(n("me"), 0).capacity(), 1);
    }

    #[test]
    fn replace_table() {
        // (input, expected) with r = 3 and me = "me"
        let cases: &[(&[&str], &[&str])] = &[
            (&["a", "b", "c"], &["a", "b", "c"]),
            (&["a", "b", "c", "d"], &["a", "b", "c"]),
            // duplicates collapse, and do not use up capacity
            (&["a", "a", "b", "a", "c"], &["a", "b", "c"]),
            // two-node ring: the peer's list wraps through me
            (&["a", "me", "a"], &["a"]),
            // three-node ring
            (&["a", "b", "me", "a"], &["a", "b"]),
            (&["me", "a"], &[]),
            (&[], &[]),
        ];
        for (input, want) in cases {
            let mut l = SuccessorList::new(n("me"), 3);
            l.replace(input.iter().map(|s| n(s)));
            assert_eq!(addrs(&l), *want, "input {input:?}");
        }
    }

    #[test]
    fn remove_reports_presence() {
        let mut l = SuccessorList::new(n("me"), 3);
        l.replace([n("a"), n("b")]);
        assert!(l.remove("a"));
        assert!(!l.remove("a"));
        assert_eq!(l.first(), &n("b"));
        assert!(l.remove("b"));
        assert_eq!(l.first(), &n("me"));
    }
}
