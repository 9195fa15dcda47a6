//! How a whole local ring should look, checked against what its nodes say.
//!
//! A local fleet knows every member, so the truth is simply its running
//! nodes sorted by id: each node's predecessor and successor, and each
//! key's holders ([`chord_node::chord::true_holders`]), can be compared
//! with it. The tests' `TestCluster` and `bench chaos` judge a ring by
//! these checks. They only read (`GetInfo`, `ListKeys`), so they can run
//! while clients write; a key caught halfway through its replication is
//! short for a moment, which is why [`Holdings::short`] is meant to be
//! compared across two reads a little apart.

use std::collections::{BTreeMap, BTreeSet};

use chord_node::chord::{true_holders, Id, NodeRef};
use chord_node::peer::PeerPool;
use chord_node::store::Stamp;

/// What is wrong with the ring's pointers now, or `None` when every node
/// answers and its first successor and its predecessor are the true ones.
/// `truth` is every member, sorted by id.
pub async fn pointer_mismatch(peers: &PeerPool, truth: &[NodeRef]) -> Option<String> {
    let n = truth.len();
    for (i, node) in truth.iter().enumerate() {
        let info = match peers.get_info(&node.addr).await {
            Ok(info) => info,
            Err(e) => return Some(format!("{} does not answer: {e}", node.addr)),
        };
        let succ = &truth[(i + 1) % n];
        let pred = &truth[(i + n - 1) % n];
        let got_succ = info
            .successors
            .first()
            .map_or(node.addr.as_str(), |s| s.addr.as_str());
        if got_succ != succ.addr {
            return Some(format!(
                "{}: successor {got_succ}, want {}",
                node.addr, succ.addr
            ));
        }
        let got_pred = info.predecessor.as_ref().map(|p| p.addr.as_str());
        if n > 1 && got_pred != Some(pred.addr.as_str()) {
            return Some(format!(
                "{}: predecessor {got_pred:?}, want {}",
                node.addr, pred.addr
            ));
        }
    }
    None
}

/// Which node holds which keys, as each node's `ListKeys` over the whole
/// ring says.
#[derive(Debug, Default)]
pub struct Holdings {
    /// Chunk key → addresses of the nodes holding it.
    pub chunks: BTreeMap<Id, BTreeSet<String>>,
    /// Manifest key → address → the version that node holds.
    pub manifests: BTreeMap<Id, BTreeMap<String, Stamp>>,
}

impl Holdings {
    /// Asks every node in `addrs`, one after another.
    pub async fn read(peers: &PeerPool, addrs: &[String]) -> chord_node::Result<Holdings> {
        let mut held = Holdings::default();
        for addr in addrs {
            let keys = peers.list_keys(addr, &Id::ZERO, &Id::ZERO).await?;
            for key in keys.chunks {
                held.chunks.entry(key).or_default().insert(addr.clone());
            }
            for (key, stamp) in keys.manifests {
                held.manifests
                    .entry(key)
                    .or_default()
                    .insert(addr.clone(), stamp);
            }
        }
        Ok(held)
    }

    /// Keys not yet on every one of their true holders, each with a line
    /// saying where it is missing: a chunk some holder lacks, a manifest
    /// some holder lacks in the newest version any node has. Holders beyond
    /// the true ones (a copy not yet dropped after a join) are fine.
    pub fn short(&self, truth: &[NodeRef], replicas: usize) -> BTreeMap<Id, String> {
        let missing = |key: &Id, has: &dyn Fn(&str) -> bool| -> Vec<String> {
            true_holders(truth, key, replicas)
                .into_iter()
                .filter(|n| !has(&n.addr))
                .map(|n| n.addr)
                .collect()
        };
        let mut short = BTreeMap::new();
        for (key, holders) in &self.chunks {
            let lacking = missing(key, &|a| holders.contains(a));
            if !lacking.is_empty() {
                short.insert(
                    *key,
                    format!("chunk {} missing on {}", key.short(), lacking.join(", ")),
                );
            }
        }
        for (key, stamps) in &self.manifests {
            let Some(newest) = stamps.values().max() else {
                continue;
            };
            let lacking = missing(key, &|a| stamps.get(a) == Some(newest));
            if !lacking.is_empty() {
                short.insert(
                    *key,
                    format!(
                        "manifest {} (version {}) missing on {}",
                        key.short(),
                        newest.version,
                        lacking.join(", ")
                    ),
                );
            }
        }
        short
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_key_is_short_until_every_true_holder_has_it_in_its_newest_version() {
        let mut truth: Vec<NodeRef> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
            .into_iter()
            .map(NodeRef::from_addr)
            .collect();
        truth.sort_by_key(|n| n.id);
        let key = truth[0].id;
        let want: Vec<String> = true_holders(&truth, &key, 3)
            .into_iter()
            .map(|n| n.addr)
            .collect();
        let other = truth[3].addr.clone();
        let stamp = |version| Stamp {
            version,
            ..Stamp::default()
        };

        let mut held = Holdings::default();
        // On two of its three holders and on a fourth node: short.
        held.chunks
            .insert(key, [&want[0], &want[1], &other].map(|a| a.clone()).into());
        assert!(held.short(&truth, 3)[&key].contains(&want[2]));
        // On all three (and one more): fine.
        held.chunks.get_mut(&key).unwrap().insert(want[2].clone());
        assert!(held.short(&truth, 3).is_empty());

        // A manifest everywhere, but one holder still has the old version.
        let versions = [(&want[0], 2), (&want[1], 2), (&want[2], 1), (&other, 2)];
        held.manifests.insert(
            key,
            versions
                .iter()
                .map(|(a, v)| ((*a).clone(), stamp(*v)))
                .collect(),
        );
        let short = held.short(&truth, 3);
        assert!(short[&key].contains("version 2") && short[&key].contains(&want[2]));
        held.manifests
            .get_mut(&key)
            .unwrap()
            .insert(want[2].clone(), stamp(2));
        assert!(held.short(&truth, 3).is_empty());
    }
}
