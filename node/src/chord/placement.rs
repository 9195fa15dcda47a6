//! Replica placement: which nodes should hold a key.
//!
//! A key lives on its owner (its successor on the ring) and the owner's next
//! successors. This is the one statement of that rule; the node's writes and
//! repair, and the client's reads, all place keys through it.

use super::id::{Id, NodeRef};

/// The owner followed by the first distinct nodes of its successor list,
/// `count` nodes in all, or fewer when the ring has fewer nodes.
pub fn replica_set(
    owner: NodeRef,
    successors: impl IntoIterator<Item = NodeRef>,
    count: usize,
) -> Vec<NodeRef> {
    let mut set = vec![owner];
    for s in successors {
        if set.len() >= count {
            break;
        }
        if !set.iter().any(|n| n.addr == s.addr) {
            set.push(s);
        }
    }
    set
}

/// Whether a node (`me`) may drop its copy of a key: only when it is none
/// of the key's holders in `view`, `view` names some other node, and every
/// one of those has confirmed it holds the key (`confirmed`).
///
/// `view` is the key's replica set as the node sees it at the moment of the
/// drop (the owner's current successor list, leaving peers left out, and
/// the node itself left out when it is `leaving`), not as it was when the
/// holders were asked: a confirmation counts only from a node in it, so a
/// node outside the view, however it answered, never causes a drop.
pub fn may_drop(
    view: &[NodeRef],
    me: &NodeRef,
    leaving: bool,
    confirmed: impl Fn(&NodeRef) -> bool,
) -> bool {
    let mut others = view.iter().filter(|n| n.addr != me.addr).peekable();
    let i_hold = others.clone().count() < view.len();
    if i_hold && !leaving {
        return false;
    }
    others.peek().is_some() && others.all(confirmed)
}

/// The nodes that should hold `key` on a ring whose every member is known:
/// `ring` sorted by id, the owner is the first node at or after the key
/// (wrapping), followed by the nodes after it. This is what the ring
/// converges to; tools that run the whole ring (a local fleet, the tests)
/// check placement against it.
pub fn true_holders(ring: &[NodeRef], key: &Id, count: usize) -> Vec<NodeRef> {
    let Some(start) = ring
        .iter()
        .position(|n| n.id >= *key)
        .or((!ring.is_empty()).then_some(0))
    else {
        return Vec::new();
    };
    let after = ring[start..].iter().chain(&ring[..start]).skip(1).cloned();
    replica_set(ring[start].clone(), after, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::{id, node as n};

    #[test]
    fn true_holders_wrap_around_the_ring() {
        let ring: Vec<NodeRef> = [10, 20, 30, 40].into_iter().map(n).collect();
        let cases = [
            // (key, count, expected)
            (15, 3, vec![20, 30, 40]),
            (20, 3, vec![20, 30, 40]), // a node owns its own id
            (35, 3, vec![40, 10, 20]),
            (41, 2, vec![10, 20]), // past the last node: the first owns it
            (0, 1, vec![10]),
            (5, 9, vec![10, 20, 30, 40]), // ring smaller than R
        ];
        for (key, count, want) in cases {
            let got = true_holders(&ring, &id(key), count);
            let want: Vec<NodeRef> = want.into_iter().map(n).collect();
            assert_eq!(got, want, "key {key} count {count}");
        }
        assert!(true_holders(&[], &id(1), 3).is_empty());
    }

    #[test]
    fn owner_first_then_distinct_successors() {
        let cases = [
            // (successors, count, expected positions)
            (vec![2, 3, 4], 3, vec![1, 2, 3]),
            (vec![2, 3, 4], 1, vec![1]),
            (vec![2], 3, vec![1, 2]),             // ring smaller than R
            (vec![], 3, vec![1]),                 // alone
            (vec![1, 2, 2, 3], 3, vec![1, 2, 3]), // repeats and the owner skipped
        ];
        for (succs, count, want) in cases {
            let got = replica_set(n(1), succs.iter().map(|&i| n(i)), count);
            let want: Vec<NodeRef> = want.into_iter().map(n).collect();
            assert_eq!(got, want, "{succs:?} count {count}");
        }
    }
}

#[cfg(test)]
mod drop_tests {
    use super::*;
    use crate::chord::id::fixtures::node as n;

    #[test]
    fn a_copy_is_dropped_only_on_the_word_of_every_holder_in_the_view() {
        // (view, leaving, confirmed by, may drop)
        let cases: &[(&[u8], bool, &[u8], bool)] = &[
            (&[2, 3, 4], false, &[2, 3, 4], true),
            (&[2, 3, 4], false, &[2, 3], false), // one holder silent
            (&[2, 3, 4], false, &[], false),
            // Confirmations from outside the view count for nothing, even
            // from as many nodes as the view has.
            (&[2, 3, 4], false, &[5, 6, 7], false),
            (&[2, 3, 4], false, &[2, 3, 9], false),
            // A holder that joined the view after the holders were asked
            // has not confirmed: keep the copy until it has.
            (&[2, 8, 3], false, &[2, 3, 4], false),
            // A holder keeps its copy, whatever the others say...
            (&[1, 2, 3], false, &[1, 2, 3], false),
            // ...unless it is leaving: then it counts for nothing itself.
            (&[1, 2, 3], true, &[2, 3], true),
            (&[2, 3], true, &[2, 3], true),
            // No one else to hold the key: never drop the last copy.
            (&[], false, &[], false),
            (&[], true, &[2], false),
            (&[1], true, &[1], false),
            // A smaller ring than R: every node there is enough.
            (&[2], false, &[2], true),
        ];
        let me = n(1);
        for &(view, leaving, confirmed, want) in cases {
            let view: Vec<NodeRef> = view.iter().map(|&i| n(i)).collect();
            let by: Vec<NodeRef> = confirmed.iter().map(|&i| n(i)).collect();
            let got = may_drop(&view, &me, leaving, |h| by.contains(h));
            assert_eq!(
                got, want,
                "view {view:?} leaving {leaving} confirmed {confirmed:?}"
            );
        }
    }
}
