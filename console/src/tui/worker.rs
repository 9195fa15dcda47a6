//! Background work the app asks for: transfers, and the capacity actor that
//! owns the capacity side, a local fleet or an Auto Scaling group (capacity
//! changes, leave, kill, the final stop).
//!
//! Every result comes back to the app as an [`Update`]; none of this runs
//! on the event loop, so a slow transfer or a long drain never holds the
//! screen. Transfers report progress as absolute byte counts a few times a
//! second, so a lost or late update never skews the gauge.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chord_node::client::{upload_size, Client, ProgressSink, TransferOptions};
use chord_node::now_ms;
use chord_node::peer::{PeerOptions, PeerPool};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::app::Update;
use super::local::STOP_GRACE;
use super::model::{human_bytes, EventView, Severity};
use crate::capacity::Capacity;
use crate::fleet::LocalCapacity;

/// How long `l` on an attached ring waits for the node's hand-off report.
const REMOTE_DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// How often the fleet actor re-reads the capacity side while idle, so a
/// node that finished joining counts as in service on screen.
const CAPACITY_REFRESH: Duration = Duration::from_secs(2);

/// How often a running transfer reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn note(kind: &str, text: String, severity: Severity) -> Update {
    Update::Events(vec![EventView::console(now_ms(), kind, text, severity)])
}

/// Like [`note`], for what an operator's action came to: the footer shows
/// it too.
fn outcome(kind: &str, text: String, severity: Severity) -> Update {
    Update::Outcome(EventView::console(now_ms(), kind, text, severity))
}

/// Runs one upload or download to completion, reporting as it goes.
pub async fn transfer(
    id: u64,
    request: TransferRequest,
    peer_opts: PeerOptions,
    update_tx: mpsc::Sender<Update>,
) {
    let counted = Arc::new(Counted::default());
    let work = run_transfer(id, request, peer_opts, counted.clone(), update_tx.clone());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    // Says so once for each start over, between two ticks or at the end.
    let restarted = || {
        counted
            .restarted
            .swap(false, Ordering::Relaxed)
            .then(|| Update::TransferRestarted {
                id,
                at_ms: now_ms(),
            })
    };
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                if let Some(update) = restarted() {
                    if update_tx.send(update).await.is_err() {
                        return;
                    }
                }
                let progress = Update::TransferProgress { id, done: counted.done.load(Ordering::Relaxed), at_ms: now_ms() };
                if update_tx.send(progress).await.is_err() {
                    return;
                }
            }
        }
    };
    if let Some(update) = restarted() {
        let _ = update_tx.send(update).await;
    }
    let update = match result {
        Ok(()) => Update::TransferDone {
            id,
            at_ms: now_ms(),
        },
        Err(e) => {
            warn!(transfer = id, error = %format!("{e:#}"), "transfer failed");
            Update::TransferFailed {
                id,
                reason: format!("{e:#}"),
                at_ms: now_ms(),
            }
        }
    };
    let _ = update_tx.send(update).await;
}

/// A transfer's bytes so far, and whether it started over since the ticker
/// that reports them last looked.
#[derive(Debug, Default)]
struct Counted {
    done: AtomicU64,
    restarted: AtomicBool,
}

impl ProgressSink for Counted {
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    fn restart(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.restarted.store(true, Ordering::Relaxed);
    }
}

/// What to move.
#[derive(Clone, Debug)]
pub enum TransferRequest {
    Upload {
        path: PathBuf,
        name: String,
        entry: String,
    },
    Download {
        name: String,
        dest: PathBuf,
        entry: String,
    },
}

/// `~/x` as `$HOME/x`, as a shell would read what was typed in the prompt.
fn expand_home(path: &std::path::Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

async fn run_transfer(
    id: u64,
    request: TransferRequest,
    peer_opts: PeerOptions,
    progress: Arc<Counted>,
    update_tx: mpsc::Sender<Update>,
) -> Result<()> {
    let progress = &*progress;
    let opts = TransferOptions::default();
    match request {
        TransferRequest::Upload { path, name, entry } => {
            let path = expand_home(&path);
            let total = upload_size(&path)?;
            let _ = update_tx
                .send(Update::TransferSize {
                    id,
                    total,
                    at_ms: now_ms(),
                })
                .await;
            let client = Client::new(entry, peer_opts)?;
            let report = client.upload_file(&path, &name, &opts, progress).await?;
            info!(file = %report.name, bytes = report.size, "uploaded");
        }
        TransferRequest::Download { name, dest, entry } => {
            let dest = expand_home(&dest);
            let client = Client::new(entry, peer_opts)?;
            let manifest = client.manifest(&name).await?;
            let _ = update_tx
                .send(Update::TransferSize {
                    id,
                    total: manifest.size,
                    at_ms: now_ms(),
                })
                .await;
            let report = client
                .download_to(&manifest, &dest, &opts, progress)
                .await?;
            info!(file = %report.name, bytes = report.size, dest = %report.path.display(), "downloaded");
        }
    }
    Ok(())
}

/// What the fleet actor is asked to do.
#[derive(Debug)]
pub enum FleetRequest {
    Add,
    Remove,
    /// Drain the node, then stop it if it is ours.
    Leave {
        addr: String,
    },
    Kill {
        addr: String,
    },
    /// Stop every node; answers when they are gone.
    Shutdown(oneshot::Sender<()>),
}

/// What the capacity actor needs of its side beyond [`Capacity`]: the
/// local fleet, or an Auto Scaling group ([`super::group::GroupSide`]).
pub trait Side: Capacity {
    /// Addresses the poller may start its walk from.
    fn seeds(&self) -> Vec<String>;
    /// The member id of the node at `addr` (what `remove` takes).
    fn member_at(&self, addr: &str) -> Option<String>;
    /// Kills the node at `addr` without a hand-off, where the side can.
    fn kill(&mut self, addr: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// What quitting the console does to the side.
    fn shutdown(self) -> impl std::future::Future<Output = ()> + Send;
}

impl Side for LocalCapacity {
    fn seeds(&self) -> Vec<String> {
        self.fleet().addrs()
    }

    fn member_at(&self, addr: &str) -> Option<String> {
        // A local member's id is its address.
        Some(addr.to_string())
    }

    async fn kill(&mut self, addr: &str) -> Result<()> {
        self.fleet_mut().kill(addr).await
    }

    /// The fleet is the console's own: it stops with it.
    async fn shutdown(self) {
        self.into_fleet().stop_all(STOP_GRACE).await;
    }
}

/// Owns the local fleet: starts its first `initial` nodes, then serves
/// requests as [`capacity_actor`] does.
pub async fn fleet_actor(
    mut capacity: LocalCapacity,
    initial: usize,
    request_rx: mpsc::Receiver<FleetRequest>,
    seeds_tx: watch::Sender<Vec<String>>,
    update_tx: mpsc::Sender<Update>,
) {
    for i in 0..initial {
        let update = match capacity.add().await {
            Ok(m) => {
                let addr = m.addr.clone().unwrap_or_default();
                let http = capacity
                    .fleet()
                    .node(&addr)
                    .and_then(|n| n.http.clone())
                    .map(|h| {
                        format!(
                            ", gateway {}://{h}/",
                            capacity.fleet().options().http_scheme()
                        )
                    })
                    .unwrap_or_default();
                note(
                    "node-started",
                    format!("started {addr}{http} ({}/{initial})", i + 1),
                    Severity::Good,
                )
            }
            Err(e) => note(
                "error",
                format!("starting node {}: {e:#}", i + 1),
                Severity::Error,
            ),
        };
        seeds_tx.send_replace(capacity.seeds());
        if update_tx.send(update).await.is_err() {
            return;
        }
    }
    capacity_actor(capacity, request_rx, seeds_tx, update_tx).await;
}

/// Owns a capacity side and serves requests one at a time until shutdown
/// or until the app is gone (a local fleet is then dropped, which kills
/// its processes). While idle it re-reads the side every
/// `CAPACITY_REFRESH`, so a node that finished joining counts as in
/// service on screen and the poller's seeds follow the side.
pub async fn capacity_actor<S: Side>(
    mut side: S,
    mut request_rx: mpsc::Receiver<FleetRequest>,
    seeds_tx: watch::Sender<Vec<String>>,
    update_tx: mpsc::Sender<Update>,
) {
    let mut refresh = tokio::time::interval(CAPACITY_REFRESH);
    loop {
        let request = tokio::select! {
            request = request_rx.recv() => match request {
                Some(r) => r,
                None => return,
            },
            _ = refresh.tick() => {
                report_capacity(&mut side, &seeds_tx, &update_tx).await;
                continue;
            }
        };
        let update = match request {
            FleetRequest::Add => match side.add().await {
                Ok(m) => outcome("capacity", format!("+ added {}", m.id), Severity::Good),
                Err(e) => outcome(
                    "capacity",
                    format!("adding a node failed: {e:#}"),
                    Severity::Error,
                ),
            },
            FleetRequest::Remove => match side.remove(None).await {
                Ok(r) => removal_outcome(&r.member.id, &r.handoff),
                Err(e) => outcome(
                    "capacity",
                    format!("removing a node failed: {e:#}"),
                    Severity::Error,
                ),
            },
            FleetRequest::Leave { addr } => match side.member_at(&addr) {
                Some(id) => match side.remove(Some(&id)).await {
                    Ok(r) => removal_outcome(&r.member.id, &r.handoff),
                    Err(e) => outcome("leave", format!("{e:#}"), Severity::Error),
                },
                None => outcome(
                    "leave",
                    format!("{addr} is not a member the console knows yet; try again"),
                    Severity::Error,
                ),
            },
            FleetRequest::Kill { addr } => match side.kill(&addr).await {
                Ok(()) => outcome("kill", format!("killed {addr} (kill -9)"), Severity::Warn),
                Err(e) => outcome("kill", format!("{e:#}"), Severity::Error),
            },
            FleetRequest::Shutdown(done) => {
                side.shutdown().await;
                seeds_tx.send_replace(Vec::new());
                let _ = done.send(());
                return;
            }
        };
        if update_tx.send(update).await.is_err() {
            return;
        }
        report_capacity(&mut side, &seeds_tx, &update_tx).await;
    }
}

fn removal_outcome(addr: &str, h: &chord_node::repair::HandoffReport) -> Update {
    outcome(
        "capacity",
        format!(
            "- {addr} drained ({} keys, {} handed off in {:.1} s) and removed",
            h.keys,
            human_bytes(h.bytes as f64),
            h.elapsed_ms as f64 / 1000.0
        ),
        Severity::Good,
    )
}

async fn report_capacity<S: Side>(
    side: &mut S,
    seeds_tx: &watch::Sender<Vec<String>>,
    update_tx: &mpsc::Sender<Update>,
) {
    if let Ok(state) = side.describe().await {
        // The poller polls at once on a change, so only a real one is sent.
        let seeds = side.seeds();
        seeds_tx.send_if_modified(|s| {
            let changed = *s != seeds;
            if changed {
                *s = seeds;
            }
            changed
        });
        let _ = update_tx.send(Update::Capacity(state)).await;
    }
}

/// `l` on a ring this console does not run: drain the node; stopping its
/// process is up to whoever runs it.
pub async fn drain_remote(pool: Arc<PeerPool>, addr: String, update_tx: mpsc::Sender<Update>) {
    let update = match pool.drain(&addr, REMOTE_DRAIN_DEADLINE).await {
        Ok(h) if h.is_complete() => outcome(
            "leave",
            format!(
                "{addr} drained ({} keys, {}); stop its process to finish",
                h.keys,
                human_bytes(h.bytes as f64)
            ),
            Severity::Good,
        ),
        Ok(h) => outcome(
            "leave",
            format!(
                "{addr}: {} keys still unconfirmed after the drain",
                h.unconfirmed
            ),
            Severity::Error,
        ),
        Err(e) => outcome("leave", format!("draining {addr}: {e}"), Severity::Error),
    };
    let _ = update_tx.send(update).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_folder() {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(expand_home(std::path::Path::new("~/a/b")), home.join("a/b"));
        assert_eq!(
            expand_home(std::path::Path::new("/x/~/y")),
            PathBuf::from("/x/~/y")
        );
        assert_eq!(
            expand_home(std::path::Path::new("rel")),
            PathBuf::from("rel")
        );
    }
}
