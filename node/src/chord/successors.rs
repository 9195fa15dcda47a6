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
//!
//! A list also knows whether it is complete: it holds `r` entries, or it
//! was learned all the way round the ring back to the node itself, which
//! happens only in a ring of at most `r` nodes. Only a complete list's
//! length says how many copies the ring can hold; a shorter one may still
//! be filling, right after a join or a failure.

use super::id::NodeRef;

/// The next `r` nodes after `me`, nearest first.
#[derive(Clone, Debug)]
pub struct SuccessorList {
    me: NodeRef,
    r: usize,
    list: Vec<NodeRef>,
    /// The list was last learned round to `me`: it names every other node
    /// the ring had then.
    closed: bool,
}

impl SuccessorList {
    /// An empty list (a lone node) holding at most `r` successors. An `r` of 0
    /// is taken as 1: a node always needs its immediate successor. A new
    /// ring's first node knows it is alone, so its empty list is complete.
    pub fn new(me: NodeRef, r: usize) -> Self {
        let r = r.max(1);
        SuccessorList {
            me,
            r,
            list: Vec::with_capacity(r),
            closed: true,
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

    /// Whether the list names `r` successors, or every other node of a ring
    /// smaller than that, as far as this node last learned. An incomplete
    /// list is still filling: the ring may hold more nodes than it names.
    pub fn is_complete(&self) -> bool {
        self.closed || self.list.len() == self.r
    }

    /// Replaces the list with `nodes`, nearest first.
    ///
    /// Duplicates (by address) are dropped, and the list is cut at the first
    /// occurrence of `me`: a successor list learned from a peer wraps around
    /// the ring when the ring is smaller than `r`, and whatever follows `me`
    /// is already our successor's business, not ours. Meeting `me` before
    /// `r` entries closes the list (see [`SuccessorList::is_complete`]);
    /// running out of nodes first leaves it open.
    pub fn replace(&mut self, nodes: impl IntoIterator<Item = NodeRef>) {
        let mut list: Vec<NodeRef> = Vec::with_capacity(self.r);
        let mut closed = false;
        for node in nodes {
            if list.len() >= self.r {
                break;
            }
            if node.addr == self.me.addr {
                closed = true;
                break;
            }
            if !list.iter().any(|n| n.addr == node.addr) {
                list.push(node);
            }
        }
        self.list = list;
        self.closed = closed;
    }

    /// Drops `addr` from the list; returns whether it was there. A full
    /// list that loses an entry is incomplete until it is learned again; a
    /// closed one stays closed, as the ring it names has only shrunk.
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
    fn a_list_is_complete_when_full_or_learned_round_to_me() {
        // (input, complete) with r = 3 and me = "me"
        let cases: &[(&[&str], bool)] = &[
            (&["a", "b", "c"], true),
            (&["a", "b", "c", "me"], true),
            // a three-node ring, and a two-node one: round to me
            (&["a", "b", "me", "a"], true),
            (&["a", "me"], true),
            (&["me"], true),
            // a list still filling: the peer knew no more yet
            (&["a", "b"], false),
            (&["a"], false),
            (&[], false),
        ];
        for (input, want) in cases {
            let mut l = SuccessorList::new(n("me"), 3);
            l.replace(input.iter().map(|s| n(s)));
            assert_eq!(l.is_complete(), *want, "input {input:?}");
        }
        assert!(SuccessorList::new(n("me"), 3).is_complete(), "a new ring");
    }

    #[test]
    fn losing_an_entry_opens_a_full_list_but_not_a_closed_one() {
        let mut full = SuccessorList::new(n("me"), 3);
        full.replace([n("a"), n("b"), n("c")]);
        full.remove("b");
        assert!(!full.is_complete(), "the ring may have a node after c");
        full.replace([n("a"), n("c"), n("d")]);
        assert!(full.is_complete());

        let mut closed = SuccessorList::new(n("me"), 3);
        closed.replace([n("a"), n("b"), n("me")]);
        closed.remove("a");
        assert!(closed.is_complete(), "the ring only shrank");
        assert_eq!(addrs(&closed), ["b"]);
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
