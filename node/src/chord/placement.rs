//! Replica placement: which nodes should hold a key.
//!
//! A key lives on its owner (its successor on the ring) and the owner's next
//! successors. This is the one statement of that rule; the node's writes and
//! repair, and the client's reads, all place keys through it.

use super::id::NodeRef;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::node as n;

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
