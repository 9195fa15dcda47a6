//! The course's 32-bit identifier space, mapped onto the 160-bit ring.
//!
//! The seed's tools (the course's MessagePack-RPC scripts) speak of ids as
//! unsigned 32-bit integers, `md5(x) & 0xffffffff`. The ring keeps its
//! 160-bit SHA-1 ids; these two pure functions translate at the edge:
//!
//! - a 32-bit key `k` is looked up as the 160-bit key `k << 128`;
//! - a node reports as its 32-bit id the top 32 bits of its SHA-1 id.
//!
//! Then the owner of `k` in the 32-bit space (the first node id `>= k`,
//! wrapping) is the owner of `k << 128` on the ring: a node id `n` is
//! `>= k << 128` exactly when `top32(n) >= k`, because `k << 128` has
//! zeros below its top 32 bits. The one exception is two nodes that share
//! their top 32 bits: in the 32-bit space they have the same id, and the
//! ring's owner is the one with the smaller full id (one chance in about
//! 2^32 per pair of nodes; see docs/ARCHITECTURE.md).

use super::id::{Id, ID_BYTES};

/// How many bits the course's ids have.
pub const COURSE_ID_BITS: u32 = 32;

/// The 160-bit key a 32-bit course key `k` is looked up as: `k << 128`.
pub fn key_from_u32(k: u32) -> Id {
    let mut bytes = [0u8; ID_BYTES];
    bytes[..4].copy_from_slice(&k.to_be_bytes());
    Id::from_array(bytes)
}

/// The 32-bit id a node reports to course clients: the top 32 bits of its id.
pub fn id_to_u32(id: &Id) -> u32 {
    let b = id.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id_hex(hex: &str) -> Id {
        hex.parse().unwrap()
    }

    #[test]
    fn mapping_table() {
        // (32-bit key, the 160-bit key it is looked up as)
        let cases: &[(u32, &str)] = &[
            (0, "0000000000000000000000000000000000000000"),
            (1, "0000000100000000000000000000000000000000"),
            (0xdead_beef, "deadbeef00000000000000000000000000000000"),
            (u32::MAX, "ffffffff00000000000000000000000000000000"),
        ];
        for &(k, hex) in cases {
            assert_eq!(key_from_u32(k), id_hex(hex), "key {k:#x}");
            assert_eq!(id_to_u32(&key_from_u32(k)), k, "round trip {k:#x}");
        }
        // (160-bit node id, the 32-bit id it reports)
        let nodes: &[(&str, u32)] = &[
            ("0000000000000000000000000000000000000000", 0),
            ("00000000ffffffffffffffffffffffffffffffff", 0),
            ("12345678abcdef00000000000000000000000001", 0x1234_5678),
            ("ffffffffffffffffffffffffffffffffffffffff", u32::MAX),
        ];
        for &(hex, top) in nodes {
            assert_eq!(id_to_u32(&id_hex(hex)), top, "node {hex}");
        }
    }

    /// The owner of `k` among 32-bit ids: the first id `>= k`, wrapping.
    fn owner_u32(ids: &[u32], k: u32) -> u32 {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted
            .iter()
            .copied()
            .find(|&n| n >= k)
            .unwrap_or(sorted[0])
    }

    /// The owner of `key` among 160-bit ids: the first id `>= key`, wrapping.
    fn owner_160(ids: &[Id], key: &Id) -> Id {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted
            .iter()
            .copied()
            .find(|n| n >= key)
            .unwrap_or(sorted[0])
    }

    #[test]
    fn owners_agree_across_the_two_spaces() {
        let nodes: Vec<Id> = (0..8)
            .map(|i| Id::hash(format!("127.0.0.1:{}", 5057 + i).as_bytes()))
            .collect();
        let tops: Vec<u32> = nodes.iter().map(id_to_u32).collect();
        // Keys at, just below and just above every node, plus both ends.
        let mut keys = vec![0, 1, u32::MAX - 1, u32::MAX];
        for &t in &tops {
            keys.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
        }
        for k in keys {
            let on_ring = owner_160(&nodes, &key_from_u32(k));
            assert_eq!(id_to_u32(&on_ring), owner_u32(&tops, k), "key {k:#x}");
        }
    }

    #[test]
    fn shared_top_bits_are_the_documented_exception() {
        // Two nodes with the same top 32 bits: both report 0x10, and the ring
        // gives key 0x10 to the one with the smaller full id.
        let a = id_hex("0000001000000000000000000000000000000005");
        let b = id_hex("0000001000000000000000000000000000000009");
        assert_eq!(id_to_u32(&a), id_to_u32(&b));
        assert_eq!(owner_160(&[b, a], &key_from_u32(0x10)), a);
    }
}
