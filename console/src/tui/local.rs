//! The TUI's local fleet: [`LocalCapacity`] (the [`crate::capacity::Capacity`]
//! seam over real `chord-node` processes) on the shared [`PortLayout`], and
//! the checks made before the screen is taken, so a busy port is a plain
//! error on the terminal rather than a failure inside the TUI.
//!
//! Node `i` listens for gRPC on `base + i` and serves its gateway on
//! `http_base + i`. Removal (`-`, `l`) is the seam's drain-then-stop; `x`
//! kills through the fleet itself, since only a local fleet can.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chord_node::tls::TlsFiles;

use crate::fleet::{Fleet, FleetOptions, PortLayout};
use crate::fleet::{LocalCapacity, LocalLimits};

/// Most nodes `+` may start on one machine: beyond this a 2-core machine
/// spends its time switching processes. Also the port slots reserved.
pub const MAX_LOCAL_NODES: usize = 64;
/// How long a node may take to exit after SIGTERM when the console quits.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The layout of a fleet of up to [`MAX_LOCAL_NODES`] from these bases.
pub fn layout(grpc_base: u16, http_base: Option<u16>) -> Result<PortLayout> {
    PortLayout::new(grpc_base, http_base, MAX_LOCAL_NODES)
}

/// Fails if a port of the first `nodes` slots is already taken.
pub fn check_ports_free(layout: &PortLayout, nodes: usize) -> Result<()> {
    for i in 0..nodes {
        let slot = layout.slot(i).with_context(|| {
            format!(
                "{nodes} nodes need more than the {} port slots",
                layout.slots()
            )
        })?;
        for port in std::iter::once(slot.grpc).chain(slot.http) {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} on 127.0.0.1 is in use (a ring already running there?): \
                     attach to it with --peer 127.0.0.1:{}, or start elsewhere with \
                     --base-port / --http-base-port",
                    slot.grpc
                );
            }
        }
    }
    Ok(())
}

/// An empty fleet behind the capacity seam, ready for `add`; its nodes
/// serve TLS with `tls`, when given.
pub fn capacity(
    binary: PathBuf,
    data_root: PathBuf,
    layout: PortLayout,
    tls: Option<TlsFiles>,
) -> Result<LocalCapacity> {
    let mut opts = FleetOptions::new(binary, data_root);
    opts.tls = tls;
    let fleet = Fleet::new(opts)?;
    LocalCapacity::new(fleet, layout, LocalLimits::new(1, MAX_LOCAL_NODES)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_reported_before_anything_starts() {
        let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let layout = PortLayout::new(port, None, 2).unwrap();
        let err = check_ports_free(&layout, 1).unwrap_err().to_string();
        assert!(
            err.contains(&format!("port {port}")) && err.contains("--peer"),
            "{err}"
        );
    }
}
