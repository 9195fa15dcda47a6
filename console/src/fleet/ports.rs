//! The local port layout: which address, gRPC and HTTP ports the i-th local
//! node uses.
//!
//! Two layouts ([`Layout`]):
//!
//! - **ports** (the default): every node on 127.0.0.1; node `i` (0-based)
//!   listens for gRPC on `grpc_base + i` and serves its HTTP gateway on
//!   `http_base + i`. The two ranges are contiguous, disjoint and sized for
//!   every slot the fleet may ever use (the autoscaler's maximum, not just
//!   the starting size), so a node added later never lands on a port that is
//!   another node's gateway. Overlapping or out-of-range layouts are refused
//!   up front with an error that names both ranges.
//! - **per-host**: one loopback address per node, as one instance per node
//!   on AWS: node `i` listens on `first + i` (127.0.0.1, 127.0.0.2, ...)
//!   with the same two ports everywhere, by default 5057 (gRPC and
//!   MessagePack-RPC) and 5058 (HTTP). Linux routes all of 127.0.0.0/8 to
//!   loopback, so the course's scripts, which hard-code those ports, run
//!   against a local fleet unchanged.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use tracing::warn;

/// Default gRPC port of node 0: the console's default `--peer`.
pub const DEFAULT_GRPC_BASE: u16 = 5057;
/// Default HTTP port of node 0. A thousand ports above the gRPC base, so
/// the ranges stay apart for any fleet this machine can run.
pub const DEFAULT_HTTP_BASE: u16 = 8057;

/// Default HTTP port of every node in the per-host layout: the gateway port
/// of an instance on AWS, and of the course's upload server.
pub const PER_HOST_HTTP_PORT: u16 = chord_node::config::DEFAULT_HTTP_PORT;

/// The host every node of the ports layout listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How a fleet's nodes are spread over addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One host (127.0.0.1), consecutive ports.
    Ports,
    /// One loopback host per node from `first` on, the same ports on each.
    PerHost { first: Ipv4Addr },
}

/// The addresses of every slot a local fleet may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortLayout {
    layout: Layout,
    grpc_base: u16,
    http_base: Option<u16>,
    slots: usize,
}

/// One slot's host and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub host: Ipv4Addr,
    pub grpc: u16,
    pub http: Option<u16>,
}

impl Slot {
    /// `host:port` of the node's gRPC (and MessagePack-RPC) server.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.host, self.grpc)
    }

    /// `host:port` of the node's HTTP gateway, if it has one.
    pub fn http_addr(&self) -> Option<String> {
        self.http.map(|p| format!("{}:{p}", self.host))
    }
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
            layout: Layout::Ports,
            grpc_base,
            http_base,
            slots,
        })
    }

    /// The per-host layout: node `i` on host `first + i`, every node on
    /// `grpc` and (when it has a gateway) `http`. Every host must be a
    /// loopback address.
    pub fn per_host(
        first: Ipv4Addr,
        grpc: u16,
        http: Option<u16>,
        slots: usize,
    ) -> Result<PortLayout> {
        if slots == 0 {
            bail!("a port layout needs at least one node");
        }
        if grpc == 0 || http == Some(0) {
            bail!("ports must not be 0");
        }
        if http == Some(grpc) {
            bail!("gRPC and HTTP cannot share port {grpc} on one host");
        }
        let last = u32::from(first).checked_add(u32::try_from(slots - 1).unwrap_or(u32::MAX));
        let last = last.map(Ipv4Addr::from);
        match last {
            Some(last) if first.is_loopback() && last.is_loopback() => {}
            _ => bail!(
                "the per-host layout needs {slots} loopback addresses from {first}; \
                 they must all lie in 127.0.0.0/8"
            ),
        }
        Ok(PortLayout {
            layout: Layout::PerHost { first },
            grpc_base: grpc,
            http_base: http,
            slots,
        })
    }

    /// Which of the two layouts this is.
    pub fn layout(&self) -> Layout {
        self.layout
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
        match self.layout {
            Layout::Ports => {
                // `new` checked that base + slots - 1 fits in a u16.
                let offset = u16::try_from(i).ok()?;
                Some(Slot {
                    host: LOCALHOST,
                    grpc: self.grpc_base + offset,
                    http: self.http_base.map(|h| h + offset),
                })
            }
            Layout::PerHost { first } => {
                // `per_host` checked that first + slots - 1 stays in 127/8.
                let host = u32::from(first).checked_add(u32::try_from(i).ok()?)?;
                Some(Slot {
                    host: Ipv4Addr::from(host),
                    grpc: self.grpc_base,
                    http: self.http_base,
                })
            }
        }
    }

    /// Every slot, in order.
    pub fn all(&self) -> Vec<Slot> {
        (0..self.slots).filter_map(|i| self.slot(i)).collect()
    }

    /// The slot whose gRPC address is `addr` (`host:port`).
    pub fn slot_of(&self, addr: &str) -> Option<usize> {
        (0..self.slots).find(|&i| self.slot(i).is_some_and(|s| s.grpc_addr() == addr))
    }

    /// A slot for a new node: not `taken` (by its gRPC address), never
    /// used before if there is one, else the one `freed` longest ago (peers
    /// remember a node that left for a while, and a new node at the same
    /// address should not meet that). A slot whose ports another process
    /// holds is skipped, so one stray listener does not fail every start.
    pub fn free_slot(
        &self,
        taken: impl Fn(&str) -> bool,
        freed: &HashMap<String, Instant>,
    ) -> Result<Slot> {
        let mut free: Vec<(Option<Instant>, Slot)> = self
            .all()
            .into_iter()
            .map(|s| (s.grpc_addr(), s))
            .filter(|(addr, _)| !taken(addr))
            .map(|(addr, s)| (freed.get(&addr).copied(), s))
            .collect();
        free.sort_by_key(|(freed, s)| (*freed, *s));
        free.into_iter()
            .map(|(_, s)| s)
            .find(|s| {
                let free = ports_free(s);
                if !free {
                    warn!(grpc = %s.grpc_addr(), http = ?s.http_addr(), "slot's ports are in use by another process; skipping it");
                }
                free
            })
            .ok_or_else(|| {
                anyhow!(
                    "no free port slot: the {} slots of the layout are taken by nodes or other processes",
                    self.slots
                )
            })
    }
}

/// Whether both ports of `slot` can be bound on its host right now.
fn ports_free(slot: &Slot) -> bool {
    let bindable = |port: u16| std::net::TcpListener::bind((slot.host, port)).is_ok();
    bindable(slot.grpc) && slot.http.is_none_or(bindable)
}

/// The first of `n` consecutive ports on 127.0.0.1 that were all free a
/// moment ago, below 32768: Linux hands out ephemeral ports (outgoing
/// connections, port 0) above it, so a node restarted on its port later
/// does not find it taken by someone's outgoing connection.
pub fn free_port_range(n: u16) -> Result<u16> {
    for _ in 0..200 {
        let base: u16 = rand::Rng::random_range(&mut rand::rng(), 20_000..32_000 - n);
        let all_free =
            (base..base + n).all(|p| std::net::TcpListener::bind((LOCALHOST, p)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free ports found")
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
        assert!(l.all().iter().all(|s| s.host == LOCALHOST));
        assert_eq!(l.slot(3), None);
        assert_eq!(l.slot_of("127.0.0.1:5059"), Some(2));
        assert_eq!(l.slot_of("127.0.0.1:5060"), None);
        assert_eq!(l.slot_of("127.0.0.1:5000"), None);
        assert_eq!(l.slot_of("127.0.0.2:5057"), None);
        let plain = PortLayout::new(6000, None, 2).unwrap();
        assert_eq!(
            plain.slot(1),
            Some(Slot {
                host: LOCALHOST,
                grpc: 6001,
                http: None
            })
        );
    }

    #[test]
    fn per_host_slots_are_one_address_each() {
        let l = PortLayout::per_host(LOCALHOST, 5057, Some(5058), 3).unwrap();
        let got: Vec<(String, Option<String>)> = l
            .all()
            .iter()
            .map(|s| (s.grpc_addr(), s.http_addr()))
            .collect();
        let want: Vec<(String, Option<String>)> = (1..=3)
            .map(|i| {
                (
                    format!("127.0.0.{i}:5057"),
                    Some(format!("127.0.0.{i}:5058")),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(l.slot_of("127.0.0.3:5057"), Some(2));
        assert_eq!(l.slot_of("127.0.0.4:5057"), None);
        // Crossing an octet boundary is fine inside 127/8.
        let l = PortLayout::per_host(Ipv4Addr::new(127, 0, 5, 255), 5057, None, 2).unwrap();
        assert_eq!(l.slot(1).unwrap().grpc_addr(), "127.0.6.0:5057");
        // (first host, grpc, http, slots, words the error must contain)
        let bad: &[(Ipv4Addr, u16, Option<u16>, usize, &str)] = &[
            (Ipv4Addr::new(10, 0, 0, 1), 5057, Some(5058), 2, "loopback"),
            (Ipv4Addr::new(127, 255, 255, 255), 5057, None, 2, "loopback"),
            (LOCALHOST, 5057, Some(5057), 2, "share"),
            (LOCALHOST, 0, None, 2, "must not be 0"),
            (LOCALHOST, 5057, None, 0, "at least one"),
        ];
        for &(first, grpc, http, n, words) in bad {
            let err = PortLayout::per_host(first, grpc, http, n)
                .unwrap_err()
                .to_string();
            assert!(err.contains(words), "{first} {grpc} {http:?} {n}: {err}");
        }
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
