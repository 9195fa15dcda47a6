//! 160-bit Chord identifiers and the circular interval arithmetic on them.
//!
//! An [`Id`] is a big-endian unsigned integer modulo 2^160, the output size of
//! SHA-1. Node ids are SHA-1 of the advertised `host:port`, file keys SHA-1 of
//! the name, chunk keys SHA-1 of the BLAKE3 hash of the bytes
//! (`store/chunk_key.rs`). Intervals wrap around zero; the
//! degenerate interval whose two ends are equal means "the whole ring" (for a
//! one-node ring every key belongs to the only node).

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

/// Number of bits in an identifier (and entries in a finger table).
pub const ID_BITS: usize = 160;
/// Number of bytes in an identifier.
pub const ID_BYTES: usize = 20;

/// A point on the identifier circle.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id([u8; ID_BYTES]);

impl Id {
    pub const ZERO: Id = Id([0; ID_BYTES]);
    pub const MAX: Id = Id([0xff; ID_BYTES]);

    /// SHA-1 of `data`.
    pub fn hash(data: &[u8]) -> Id {
        Id(Sha1::digest(data).into())
    }

    pub const fn from_array(bytes: [u8; ID_BYTES]) -> Id {
        Id(bytes)
    }

    /// Parses exactly 20 bytes, as carried on the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Id> {
        let array: [u8; ID_BYTES] = bytes.try_into().map_err(|_| {
            Error::invalid(format!("an id is {ID_BYTES} bytes, got {}", bytes.len()))
        })?;
        Ok(Id(array))
    }

    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        const_hex::encode(self.0)
    }

    /// The first 8 hex digits: enough to tell nodes apart in logs and on screen.
    pub fn short(&self) -> String {
        const_hex::encode(&self.0[..4])
    }

    /// `(self + 2^i) mod 2^160`: the start of finger `i`.
    pub fn add_pow2(&self, i: usize) -> Id {
        assert!(i < ID_BITS, "finger index {i} out of range");
        let mut out = self.0;
        // Bit i counted from the least significant end.
        let mut byte = ID_BYTES - 1 - i / 8;
        let mut carry = 1u16 << (i % 8);
        loop {
            let sum = u16::from(out[byte]) + carry;
            out[byte] = sum as u8;
            carry = sum >> 8;
            if carry == 0 || byte == 0 {
                break;
            }
            byte -= 1;
        }
        Id(out)
    }

    /// `(other - self) mod 2^160`: how far clockwise `other` is from `self`.
    pub fn distance_to(&self, other: &Id) -> Id {
        let mut out = [0u8; ID_BYTES];
        let mut borrow = 0i16;
        for i in (0..ID_BYTES).rev() {
            let mut d = i16::from(other.0[i]) - i16::from(self.0[i]) - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            out[i] = d as u8;
        }
        Id(out)
    }

    /// `(self - 1) mod 2^160`: with it, `(k.prev(), b]` is the closed range `[k, b]`.
    pub fn prev(&self) -> Id {
        let mut out = self.0;
        for byte in out.iter_mut().rev() {
            let (v, borrow) = byte.overflowing_sub(1);
            *byte = v;
            if !borrow {
                break;
            }
        }
        Id(out)
    }

    /// `self ∈ (a, b)` on the circle. When `a == b` the interval is the whole
    /// circle except `a` itself.
    pub fn in_open(&self, a: &Id, b: &Id) -> bool {
        if a == b {
            return self != a;
        }
        if a < b {
            a < self && self < b
        } else {
            self > a || self < b
        }
    }

    /// `self ∈ (a, b]` on the circle. When `a == b` the interval is the whole circle.
    pub fn in_half_open(&self, a: &Id, b: &Id) -> bool {
        a == b || self == b || self.in_open(a, b)
    }

    /// Position on the circle as a fraction in `[0, 1)`, for drawing and for
    /// measuring how much of the ring a node owns.
    pub fn fraction(&self) -> f64 {
        // The top 64 bits are plenty of precision for an f64.
        let mut top = [0u8; 8];
        top.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(top) as f64 / 2f64.powi(64)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;

    /// Parses 40 hex digits.
    fn from_str(s: &str) -> Result<Id> {
        if s.len() != 2 * ID_BYTES {
            return Err(Error::invalid(format!(
                "a key is {} hex digits, got {} characters",
                2 * ID_BYTES,
                s.len()
            )));
        }
        let mut out = [0u8; ID_BYTES];
        const_hex::decode_to_slice(s, &mut out)
            .map_err(|e| Error::invalid(format!("a key is hex: {e}")))?;
        Ok(Id(out))
    }
}

/// A node as other nodes know it: its id and the address it advertises.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub id: Id,
    pub addr: String,
}

impl NodeRef {
    /// The node that advertises `addr`; its id is SHA-1 of the address string.
    pub fn from_addr(addr: impl Into<String>) -> NodeRef {
        let addr = addr.into();
        NodeRef {
            id: Id::hash(addr.as_bytes()),
            addr,
        }
    }
}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.id.short())
    }
}

/// Small, readable ids and nodes for the core's tests: position `last` on
/// the circle, and a node there whose address names the position.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Id, NodeRef, ID_BYTES};

    pub fn id(last: u8) -> Id {
        let mut b = [0u8; ID_BYTES];
        b[ID_BYTES - 1] = last;
        Id(b)
    }

    pub fn node(last: u8) -> NodeRef {
        NodeRef {
            id: id(last),
            addr: format!("n{last}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::id;
    use super::*;

    #[test]
    fn sha1_of_address_is_the_node_id() {
        // SHA-1("127.0.0.1:5057"), computed independently with `sha1sum`.
        let n = NodeRef::from_addr("127.0.0.1:5057");
        assert_eq!(n.id.to_hex().len(), 40);
        assert_eq!(n.id, Id::hash(b"127.0.0.1:5057"));
        assert_eq!(
            Id::hash(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn open_interval_table() {
        // (x, a, b, in (a,b), in (a,b])
        let cases = [
            (5, 1, 10, true, true),
            (10, 1, 10, false, true),
            (1, 1, 10, false, false),
            (0, 1, 10, false, false),
            // wrap-around: (200, 10)
            (250, 200, 10, true, true),
            (5, 200, 10, true, true),
            (10, 200, 10, false, true),
            (100, 200, 10, false, false),
            (200, 200, 10, false, false),
            // equal ends: whole ring (minus the end for the open form)
            (7, 7, 7, false, true),
            (8, 7, 7, true, true),
            (0, 7, 7, true, true),
        ];
        for (x, a, b, open, half) in cases {
            assert_eq!(id(x).in_open(&id(a), &id(b)), open, "{x} in ({a},{b})");
            assert_eq!(id(x).in_half_open(&id(a), &id(b)), half, "{x} in ({a},{b}]");
        }
        // Around the very top of the space.
        assert!(Id::ZERO.in_open(&Id::MAX, &id(1)));
        assert!(Id::MAX.in_half_open(&id(3), &Id::ZERO));
    }

    #[test]
    fn add_pow2_carries_and_wraps() {
        assert_eq!(Id::ZERO.add_pow2(0), id(1));
        assert_eq!(id(0xff).add_pow2(0).as_bytes()[ID_BYTES - 2..], [1, 0]);
        assert_eq!(Id::MAX.add_pow2(0), Id::ZERO);
        let top = Id::ZERO.add_pow2(159);
        assert_eq!(top.as_bytes()[0], 0x80);
        assert_eq!(top.add_pow2(159), Id::ZERO);
    }

    #[test]
    fn distance_wraps() {
        assert_eq!(id(10).distance_to(&id(15)), id(5));
        assert_eq!(id(15).distance_to(&id(10)), id(4).distance_to(&Id::MAX));
        assert_eq!(id(3).distance_to(&id(3)), Id::ZERO);
        assert_eq!(id(3).prev(), id(2));
        assert_eq!(Id::ZERO.prev(), Id::MAX);
        assert_eq!(id(0).add_pow2(8).prev(), id(0xff));
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!("00".parse::<Id>().is_err());
        assert!("zz".repeat(20).parse::<Id>().is_err());
        assert!(Id::from_slice(&[0; 19]).is_err());
        assert!(Id::from_slice(&[0; 21]).is_err());
        let h = Id::hash(b"x");
        assert_eq!(h.to_hex().parse::<Id>().unwrap(), h);
        assert_eq!(Id::from_slice(h.as_bytes()).unwrap(), h);
    }

    #[test]
    fn fraction_is_monotonic() {
        assert_eq!(Id::ZERO.fraction(), 0.0);
        assert!(Id::MAX.fraction() < 1.0 + f64::EPSILON);
        assert!(id(1).add_pow2(150).fraction() > id(1).fraction());
    }
}
