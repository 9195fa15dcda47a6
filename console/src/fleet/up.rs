//! `chord-console local up`: start a local fleet on the [`PortLayout`],
//! print its address table, and keep it up (optionally under the
//! autoscaler) until Ctrl-C, SIGTERM or SIGHUP, then stop every node.
//!
//! Output is human lines, or with `--json` one JSON object per line (the
//! command streams: the address table first, then one object per scaling
//! decision), so a script can read it line by line while it runs. Each
//! scaling line carries `run_secs`, the seconds since the command started.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::seq::IndexedRandom;
use serde_json::{json, Value};

use super::{
    locate_node_binary, Fleet, FleetOptions, Layout, LocalCapacity, LocalLimits, PortLayout, Slot,
    STOP_TIMEOUT,
};
use crate::output::StdoutError;
use crate::scaling::{Controller, ControllerOptions, NodeStatsReader, ScalingEvent};

/// Scaling events buffered between the controller and the printer.
const EVENT_BUFFER: usize = 64;

/// What `local up` needs to start the fleet.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub nodes: usize,
    /// Ports (everything on 127.0.0.1) or per-host (one address per node).
    pub layout: Layout,
    /// gRPC port of node 0 (every node's, in the per-host layout).
    pub grpc_base: u16,
    /// `None` runs the nodes without gateways.
    pub http_base: Option<u16>,
    /// Port slots to reserve: the most nodes the fleet may ever run.
    pub slots: usize,
    pub data_root: Option<PathBuf>,
    pub replicas: usize,
    /// Extra flags for every node.
    pub node_args: Vec<String>,
    /// The nodes serve TLS with these files.
    pub tls: Option<chord_node::tls::TlsFiles>,
    pub json: bool,
}

/// A started fleet with its layout and where its data lives.
#[derive(Debug)]
pub struct Started {
    pub fleet: Fleet,
    pub layout: PortLayout,
    pub data_root: PathBuf,
}

/// Starts `opts.nodes` nodes on the first slots of the layout, each joining
/// through a random earlier one, and prints the address table.
pub async fn start(opts: &UpOptions) -> Result<Started> {
    if opts.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let slots = opts.slots.max(opts.nodes);
    let layout = match opts.layout {
        Layout::Ports => PortLayout::new(opts.grpc_base, opts.http_base, slots)?,
        Layout::PerHost { first } => {
            PortLayout::per_host(first, opts.grpc_base, opts.http_base, slots)?
        }
    };
    let data_root = opts.data_root.clone().unwrap_or_else(|| {
        let name = match opts.layout {
            Layout::Ports => format!("chord-dfs-local-{}", opts.grpc_base),
            Layout::PerHost { first } => format!("chord-dfs-local-{first}-{}", opts.grpc_base),
        };
        std::env::temp_dir().join(name)
    });
    let mut fleet_opts = FleetOptions::new(locate_node_binary()?, data_root.clone());
    fleet_opts.replicas = opts.replicas;
    fleet_opts.successors = opts.replicas.max(3);
    fleet_opts.extra_args = opts.node_args.clone();
    fleet_opts.tls = opts.tls.clone();
    let mut fleet = Fleet::new(fleet_opts)?;
    let mut rng = rand::rng();
    let mut addrs: Vec<String> = Vec::new();
    for (i, slot) in layout.all().into_iter().take(opts.nodes).enumerate() {
        let join = addrs.choose(&mut rng).cloned();
        let addr = fleet
            .start_slot(&slot, join.as_deref())
            .await
            .with_context(|| format!("starting node {i}"))?;
        addrs.push(addr);
    }
    print_table(&fleet, &layout, opts.nodes, &data_root, opts.json)?;
    Ok(Started {
        fleet,
        layout,
        data_root,
    })
}

/// One row of the address table as JSON.
fn slot_json(i: usize, slot: &Slot) -> Value {
    json!({
        "node": i,
        "grpc": slot.grpc_addr(),
        "http": slot.http_addr(),
    })
}

fn print_table(
    fleet: &Fleet,
    layout: &PortLayout,
    running: usize,
    data_root: &std::path::Path,
    as_json: bool,
) -> Result<()> {
    let slots = layout.all();
    let running_slots = &slots[..running.min(slots.len())];
    if as_json {
        let rows: Vec<Value> = running_slots
            .iter()
            .enumerate()
            .map(|(i, s)| slot_json(i, s))
            .collect();
        let line = json!({
            "event": "up",
            "nodes": running_slots.iter().map(Slot::grpc_addr).collect::<Vec<_>>(),
            "http": running_slots.iter().filter_map(Slot::http_addr).collect::<Vec<_>>(),
            "table": rows,
            "slots": slots.len(),
            "data_root": data_root,
        });
        outln!("{}", serde_json::to_string(&line)?)?;
        return Ok(());
    }
    outln!("{:<5} {:<22} HTTP", "node", "gRPC")?;
    for (i, s) in running_slots.iter().enumerate() {
        outln!(
            "{:<5} {:<22} {}",
            i,
            s.grpc_addr(),
            s.http_addr()
                .map(|a| format!("{}://{a}/", fleet.options().http_scheme()))
                .unwrap_or_else(|| "-".into())
        )?;
    }
    if slots.len() > running && layout.layout() != Layout::Ports {
        let (first, last) = (slots[running], slots[slots.len() - 1]);
        outln!("nodes added later take {} to {}", first.host, last.host)?;
    } else if slots.len() > running {
        let (first, last) = (slots[running], slots[slots.len() - 1]);
        outln!(
            "nodes added later take gRPC {}-{}{}",
            first.grpc,
            last.grpc,
            first
                .http
                .zip(last.http)
                .map(|(a, b)| format!(", HTTP {a}-{b}"))
                .unwrap_or_default()
        )?;
    }
    outln!(
        "{running} nodes up; data in {}; Ctrl-C stops them",
        data_root.display()
    )?;
    Ok(())
}

/// `local up` without the autoscaler: start, wait for a stop signal, stop.
pub async fn run(opts: &UpOptions) -> Result<()> {
    let stop = watch_stop()?;
    let Started { mut fleet, .. } = start(opts).await?;
    stop.await;
    stop_fleet(&mut fleet, opts.json).await
}

/// Stops every node gracefully, having said so unless `json`; a stdout
/// that cannot be written does not keep the nodes from their stop.
async fn stop_fleet(fleet: &mut Fleet, json: bool) -> Result<()> {
    let said = if json {
        Ok(())
    } else {
        outln!("stopping {} nodes", fleet.len())
    };
    fleet.stop_all(STOP_TIMEOUT).await;
    Ok(said?)
}

/// `local up --autoscale`: start, then let the controller grow and shrink
/// the fleet, printing every event, until a stop signal; then stop the fleet.
pub async fn run_autoscaled(
    opts: &UpOptions,
    controller: ControllerOptions,
    drain_deadline: std::time::Duration,
) -> Result<()> {
    let limits = LocalLimits::new(controller.policy.min, controller.policy.max)?;
    let stop = watch_stop()?;
    let Started { fleet, layout, .. } = start(opts).await?;
    let capacity = LocalCapacity::new(fleet, layout, limits)?.with_drain_deadline(drain_deadline);
    let mut controller = Controller::new(capacity, NodeStatsReader::new(), controller)?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<ScalingEvent>(EVENT_BUFFER);
    let as_json = opts.json;
    let began = std::time::Instant::now();
    let printer = tokio::spawn(async move {
        // Once stdout cannot be written (`| head`), events are still taken
        // and dropped, and the fleet runs on until a stop signal.
        let mut printing = true;
        while let Some(event) = events_rx.recv().await {
            if printing {
                printing = print_event(&event, as_json, began.elapsed().as_secs_f64()).is_ok();
            }
        }
    });
    controller.run(events_tx, stop).await;
    // The sender went with `run`; the printer drains what is left.
    let _ = printer.await;
    let mut fleet = controller.into_capacity().into_fleet();
    stop_fleet(&mut fleet, opts.json).await?;
    Ok(())
}

fn print_event(event: &ScalingEvent, as_json: bool, secs: f64) -> Result<(), StdoutError> {
    if as_json {
        match serde_json::to_value(event) {
            Ok(mut v) => {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("run_secs".into(), json!((secs * 10.0).round() / 10.0));
                }
                outln!("{v}")?;
            }
            Err(e) => tracing::warn!(error = %e, "cannot print a scaling event as JSON"),
        }
    } else {
        outln!("[{secs:>6.1}s] {}", event.line())?;
    }
    Ok(())
}

/// Starts watching for Ctrl-C, SIGTERM and SIGHUP now (so a signal during
/// start-up is not lost and still stops the nodes); the future completes on
/// the first of them.
pub fn watch_stop() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("watching Ctrl-C")?;
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    })
}
