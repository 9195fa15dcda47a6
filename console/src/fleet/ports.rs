//! The local port layout: which gRPC and HTTP ports the i-th local node uses.
//!
//! Node `i` (0-based) listens for gRPC on `grpc_base + i` and serves its HTTP
//! gateway on `http_base + i`. The two ranges are contiguous, disjoint and
//! sized for every slot the fleet may ever use (the autoscaler's maximum, not
//! just the starting size), so a node added later never lands on a port that
//! is another node's gateway. Overlapping or out-of-range layouts are refused
//! up front with an error that names both ranges.

use anyhow::{bail, Result};

/// Default gRPC port of node 0: the console's default `--peer`.
pub const DEFAULT_GRPC_BASE: u16 = 5057;
/// Default HTTP port of node 0. A thousand ports above the gRPC base, so
/// the ranges stay apart for any fleet this machine can run.
pub const DEFAULT_HTTP_BASE: u16 = 8057;

/// The ports of every slot a local fleet may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortLayout {
    grpc_base: u16,
    http_base: Option<u16>,
    slots: usize,
}

/// One slot's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub grpc: u16,
    pub http: Option<u16>,
}

impl PortLayout {
    /// A layout of `slots` nodes; `http_base` is `None` when the nodes run
    /// without gateways.
    pub fn new(grpc_base: u16, http_base: Option<u16>, slots: usize) -> Result<PortLayout> {
        if slots == 0 {
            bail!("a port layout needs at least one node");
        }
        let grpc = range("gRPC", grpc_base, slots)?;
        if let Some(http_base) = http_base {
            let http = range("HTTP", http_base, slots)?;
            if grpc.0 <= http.1 && http.0 <= grpc.1 {
                bail!(
                    "gRPC ports {}-{} and HTTP ports {}-{} overlap for {slots} nodes; \
                     move --http-base-port (or --base-port) so the ranges are apart",
                    grpc.0,
                    grpc.1,
                    http.0,
                    http.1
                );
            }
        }
        Ok(PortLayout {
            grpc_base,
            http_base,
            slots,
        })
    }

    /// How many nodes the layout has room for.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The ports of slot `i`, if the layout has it.
    pub fn slot(&self, i: usize) -> Option<Slot> {
        if i >= self.slots {
            return None;
        }
        // `new` checked that base + slots - 1 fits in a u16.
        let offset = u16::try_from(i).ok()?;
        Some(Slot {
            grpc: self.grpc_base + offset,
            http: self.http_base.map(|h| h + offset),
        })
    }

    /// Every slot, in order.
    pub fn all(&self) -> Vec<Slot> {
        (0..self.slots).filter_map(|i| self.slot(i)).collect()
    }

    /// The slot whose gRPC port is `port`.
    pub fn slot_of(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.grpc_base)?);
        (i < self.slots).then_some(i)
    }
}

/// The inclusive port range `[base, base + n - 1]`, or an error naming `what`.
fn range(what: &str, base: u16, n: usize) -> Result<(u16, u16)> {
    if base == 0 {
        bail!("{what} base port must not be 0");
    }
    let last = u32::from(base) + u32::try_from(n - 1).unwrap_or(u32::MAX);
    match u16::try_from(last) {
        Ok(last) => Ok((base, last)),
        Err(_) => bail!("{what} ports {base}.. for {n} nodes run past 65535"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_base_plus_index() {
        let l = PortLayout::new(5057, Some(8057), 3).unwrap();
        let got: Vec<(u16, Option<u16>)> = l.all().iter().map(|s| (s.grpc, s.http)).collect();
        assert_eq!(
            got,
            vec![(5057, Some(8057)), (5058, Some(8058)), (5059, Some(8059))]
        );
        assert_eq!(l.slot(3), None);
        assert_eq!(l.slot_of(5059), Some(2));
        assert_eq!(l.slot_of(5060), None);
        assert_eq!(l.slot_of(5000), None);
        let plain = PortLayout::new(6000, None, 2).unwrap();
        assert_eq!(
            plain.slot(1),
            Some(Slot {
                grpc: 6001,
                http: None
            })
        );
    }

    #[test]
    fn bad_layouts_are_refused() {
        // (grpc base, http base, slots, words the error must contain)
        let cases: &[(u16, Option<u16>, usize, &str)] = &[
            (5057, Some(5058), 2, "overlap"),
            (5057, Some(5050), 8, "overlap"),
            (5057, Some(5057), 1, "overlap"),
            (8000, Some(7990), 11, "overlap"),
            (65534, None, 3, "65535"),
            (5057, Some(65535), 2, "HTTP ports"),
            (0, None, 1, "must not be 0"),
            (5057, None, 0, "at least one"),
        ];
        for &(grpc, http, n, words) in cases {
            let err = PortLayout::new(grpc, http, n).unwrap_err().to_string();
            assert!(err.contains(words), "{grpc} {http:?} {n}: {err}");
        }
        // Touching but not overlapping is fine.
        assert!(PortLayout::new(5057, Some(5059), 2).is_ok());
        assert!(PortLayout::new(5059, Some(5057), 2).is_ok());
    }
}
