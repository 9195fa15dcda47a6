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

/// How many nodes past a key's holders a read looks before it calls the
/// key missing. Nodes that join just in front of a key's holders take it
/// over before repair has copied it to them, and the old holders, now
/// further clockwise, keep their copies until the new ones confirm them:
/// for a while the key is only past its holders. Eight finds the first
/// old holder after up to R + 7 nodes joined in front of one key at once.
pub const SEARCH_PAST_HOLDERS: usize = 8;

/// Up to `count` nodes clockwise past `set` (a key's holders, owner first),
/// read from successor lists: the last holder's, then the last listed
/// node's, and so on; `successors_of` asks a node for its list. A node
/// that does not answer is passed over (the one before it goes on), and
/// the walk ends where the ring closes back on what it has seen, or after
/// `count` calls.
pub async fn nodes_past<F, Fut>(set: &[NodeRef], count: usize, successors_of: F) -> Vec<NodeRef>
where
    F: Fn(NodeRef) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Vec<NodeRef>>>,
{
    let mut trail = set.to_vec();
    let mut dead: Vec<NodeRef> = Vec::new();
    for _ in 0..count {
        if trail.len() >= set.len() + count {
            break;
        }
        let Some(at) = trail.last().cloned() else {
            break;
        };
        match successors_of(at.clone()).await {
            Ok(list) => {
                let before = trail.len();
                let mut closed = false;
                for n in list {
                    if trail.iter().any(|t| t.addr == n.addr) {
                        closed = true;
                        break;
                    }
                    if !dead.iter().any(|d| d.addr == n.addr) {
                        trail.push(n);
                    }
                }
                if closed || trail.len() == before {
                    break;
                }
            }
            // The holders' own lists are where the walk starts: with the
            // last holder silent there is nothing to go on from.
            Err(_) if trail.len() > set.len() => {
                dead.extend(trail.pop());
            }
            Err(_) => break,
        }
    }
    trail
        .split_off(set.len().min(trail.len()))
        .into_iter()
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::id::fixtures::{id, node as n};
    use crate::chord::ID_BYTES;

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

    /// A walk past holders on a ring of `ring` (successor lists of three),
    /// with the nodes in `dead` not answering.
    async fn walk(ring: &[u8], dead: &[u8], set: &[u8], count: usize) -> Vec<u8> {
        let nodes: Vec<NodeRef> = ring.iter().map(|&i| n(i)).collect();
        let successors_of = |at: NodeRef| {
            let pos = nodes.iter().position(|x| x.addr == at.addr).unwrap();
            let list: Vec<NodeRef> = (1..=3)
                .map(|k| nodes[(pos + k) % nodes.len()].clone())
                .collect();
            let silent = dead.iter().any(|&d| n(d).addr == at.addr);
            async move {
                if silent {
                    Err(crate::Error::Unavailable("down".into()))
                } else {
                    Ok(list)
                }
            }
        };
        let set: Vec<NodeRef> = set.iter().map(|&i| n(i)).collect();
        let past = nodes_past(&set, count, successors_of).await;
        past.iter().map(|x| x.id.as_bytes()[ID_BYTES - 1]).collect()
    }

    #[tokio::test]
    async fn the_walk_past_holders_follows_successor_lists() {
        let ring: Vec<u8> = (1..=10).map(|i| i * 10).collect();
        // Two lists' worth, cut at the count.
        assert_eq!(walk(&ring, &[], &[10, 20, 30], 4).await, [40, 50, 60, 70]);
        // A small ring: the walk stops where it comes back round.
        assert_eq!(walk(&ring[..5], &[], &[10, 20, 30], 8).await, [40, 50]);
        assert!(walk(&ring[..3], &[], &[10, 20, 30], 8).await.is_empty());
        // A silent node the walk would go on from is dropped, and the
        // node before it goes on past it.
        assert_eq!(
            walk(&ring, &[60], &[10, 20, 30], 5).await,
            [40, 50, 70, 80, 90]
        );
        // With the last holder silent there is nothing to go on from.
        assert!(walk(&ring, &[30], &[10, 20, 30], 4).await.is_empty());
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
