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
