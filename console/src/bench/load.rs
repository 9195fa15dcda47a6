//! `bench load`: a steady, mixed load of small uploads and downloads through
//! the ring, to drive (and show) auto scaling, and what it achieved.
//!
//! Requests are paced open-loop at `--rps` per second and spread over the
//! ring's nodes as entry points; the set of entry nodes is refreshed from a
//! ring walk every few seconds, so nodes that join get load and nodes that
//! leave stop getting it. At most `--concurrency` requests are in flight; a
//! request whose turn comes while all slots are busy is counted as missed
//! rather than queued, so the offered rate never silently drifts.
//!
//! One *bench* request is one whole upload or download of a small file.
//! Each one is several *node* requests (the `requests` counter the
//! autoscaler tracks): lookups, a chunk put that the owner replicates to
//! its successors, a manifest put or get. The bench reads the nodes'
//! counters before and after, and prints the node request rate it caused.
//! Downloads check every byte (chunk keys and the whole-file SHA-256).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_node::client::{Client, TransferOptions};
use chord_node::peer::PeerOptions;
use clap::Args;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::debug;

use super::size::{format_size, parse_size};

/// How often the entry nodes are re-read from the ring.
const ENTRY_REFRESH: Duration = Duration::from_secs(3);
/// Deadline of one bench request (one small file's upload or download),
/// generous for a machine busy with the nodes themselves.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one call to a node.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on `--rps`: the pacer's tick is 1 ms at best.
const MAX_RPS: f64 = 1000.0;
/// Slowest requests listed one by one, so that a few stalls (a retry after
/// a clash, a node's pause) can be told apart from the tail's shape.
const SLOWEST_SHOWN: usize = 8;
/// Upper bound on `--size`: the load is of *small* files, one chunk each.
const MAX_SIZE: u64 = chord_node::DEFAULT_CHUNK_BYTES as u64;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Bench requests per second to offer. One bench request is a whole
    /// small upload or download, which is several node requests (the
    /// autoscaler's `--target` counts node requests per node).
    #[arg(long, default_value_t = 20.0)]
    pub rps: f64,
    /// How long to offer the load.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Size of each uploaded file (e.g. 4KiB).
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub size: u64,
    /// How many distinct files the load reads and rewrites.
    #[arg(long, default_value_t = 20)]
    pub files: usize,
    /// Share of requests that are downloads (0 to 1); the rest are uploads.
    #[arg(long, default_value_t = 0.5)]
    pub read_share: f64,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Prefix of the files' names on the ring.
    #[arg(long, default_value = "bench-load")]
    pub prefix: String,
}

impl LoadArgs {
    fn validate(&self) -> Result<()> {
        if !(self.rps.is_finite() && self.rps > 0.0 && self.rps <= MAX_RPS) {
            bail!("--rps must be above 0 and at most {MAX_RPS}");
        }
        if self.seconds == 0 {
            bail!("--seconds must be at least 1");
        }
        if self.size == 0 || self.size > MAX_SIZE {
            bail!("--size must be 1 byte to {}", format_size(MAX_SIZE));
        }
        if self.files == 0 {
            bail!("--files must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.read_share) {
            bail!("--read-share must be between 0 and 1");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        Ok(())
    }
}

/// What the run saw, per kind of request.
#[derive(Debug, Default)]
struct Tally {
    upload_ms: Vec<f64>,
    download_ms: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

/// Clients for the ring's nodes, one per entry node, reused across requests.
#[derive(Debug)]
pub(super) struct Entries {
    clients: Mutex<Vec<Arc<Client>>>,
    opts: PeerOptions,
}

impl Entries {
    pub(super) fn new(opts: PeerOptions) -> Entries {
        Entries {
            clients: Mutex::new(Vec::new()),
            opts,
        }
    }

    /// A client entering through a random entry node.
    pub(super) fn pick(&self) -> Option<Arc<Client>> {
        let clients = self.clients.lock().ok()?;
        clients.choose(&mut rand::rng()).cloned()
    }

    /// Re-reads the ring through any known node and keeps a client for each
    /// node found (reusing existing ones and their connections).
    async fn refresh(&self, seed: &str) -> Result<usize> {
        let via = self.pick().map(|c| c.entry().to_string());
        let walker = Client::new(via.unwrap_or_else(|| seed.to_string()), self.opts.clone())?;
        let nodes = match walker.walk().await {
            Ok(nodes) => nodes,
            // The node we asked may have just left: fall back to the seed.
            Err(_) => Client::new(seed, self.opts.clone())?.walk().await?,
        };
        self.set(nodes.into_iter().map(|n| n.addr))
    }

    /// Makes `addrs` the entry nodes, keeping the clients (and connections)
    /// of those already known; returns how many there are.
    pub(super) fn set(&self, addrs: impl IntoIterator<Item = String>) -> Result<usize> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow::anyhow!("entry list poisoned"))?;
        let old: HashMap<String, Arc<Client>> = clients
            .drain(..)
            .map(|c| (c.entry().to_string(), c))
            .collect();
        for addr in addrs {
            let client = match old.get(&addr) {
                Some(c) => c.clone(),
                None => Arc::new(Client::new(addr, self.opts.clone())?),
            };
            clients.push(client);
        }
        Ok(clients.len())
    }
}

/// Runs the load against the ring that `peer` is part of.
pub async fn run(peer: &str, args: &LoadArgs, as_json: bool) -> Result<()> {
    args.validate()?;
    let opts = PeerOptions {
        rpc_timeout: RPC_TIMEOUT,
        ..PeerOptions::default()
    };
    let entries = Arc::new(Entries::new(opts.clone()));
    let n = entries.refresh(peer).await.context("reading the ring")?;
    if n == 0 {
        bail!("the ring has no nodes");
    }
    let names: Arc<Vec<String>> = Arc::new(
        (0..args.files)
            .map(|i| format!("{}-{i:04}", args.prefix))
            .collect(),
    );
    let size = usize::try_from(args.size).context("--size")?;
    let transfer = TransferOptions::default();

    // Every name exists before the timed run, so downloads have targets.
    for name in names.iter() {
        let client = entries.pick().context("no entry node")?;
        let data = random_bytes(size);
        client
            .upload(&data[..], name, &transfer, &|_| {})
            .await
            .with_context(|| format!("seeding {name}"))?;
    }
    let before = node_requests(peer, &opts).await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let missed = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / args.rps);
    let mut pacer = tokio::time::interval(period);
    pacer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (args.rps * args.seconds as f64).round() as u64;
    let started = Instant::now();
    let refresher = {
        let (entries, peer) = (entries.clone(), peer.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ENTRY_REFRESH).await;
                if let Err(e) = entries.refresh(&peer).await {
                    debug!(error = %e, "entry refresh failed; keeping the old list");
                }
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    if !as_json {
        eprintln!(
            "offering {} requests/s for {} s over {n} entry nodes ({} files of {})",
            args.rps,
            args.seconds,
            args.files,
            format_size(args.size)
        );
    }
    for _ in 0..total {
        pacer.tick().await;
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            missed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(client) = entries.pick() else {
            missed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (name, read) = {
            let mut rng = rand::rng();
            let name = names.choose(&mut rng).cloned().unwrap_or_default();
            (name, rng.random_bool(args.read_share))
        };
        let tally = tally.clone();
        let transfer = transfer.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
                if read {
                    let manifest = client.manifest(&name).await?;
                    let replicas = client.replicas().await? as usize;
                    let mut sink = tokio::io::sink();
                    client
                        .write_to(&manifest, &mut sink, replicas, &transfer, &|_| {})
                        .await
                        .map(|_| ())
                } else {
                    let data = random_bytes(size);
                    client
                        .upload(&data[..], &name, &transfer, &|_| {})
                        .await
                        .map(|_| ())
                }
            })
            .await;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let Ok(mut tally) = tally.lock() else { return };
            match result {
                Ok(Ok(())) if read => tally.download_ms.push(ms),
                Ok(Ok(())) => tally.upload_ms.push(ms),
                Ok(Err(e)) => {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("{} via {}: {e}", name, client.entry()));
                }
                Err(_) => {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("{name}: no answer in {REQUEST_TIMEOUT:?}"));
                }
            }
            drop(permit);
        });
    }
    // Requests still running finish within their own timeout.
    while tasks.join_next().await.is_some() {}
    refresher.abort();
    let secs = started.elapsed().as_secs_f64();
    let after = node_requests(peer, &opts).await;

    let tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?,
    );
    let missed = missed.load(Ordering::Relaxed);
    let ok = (tally.upload_ms.len() + tally.download_ms.len()) as u64;
    let mut all: Vec<f64> = tally
        .upload_ms
        .iter()
        .chain(&tally.download_ms)
        .copied()
        .collect();
    // Sorted once here; `summary` finds it sorted.
    all.sort_unstable_by(f64::total_cmp);
    let slowest: Vec<f64> = all.iter().rev().take(SLOWEST_SHOWN).copied().collect();
    let max = slowest.first().copied().unwrap_or(0.0);
    let (_, p50, p99) = crate::cli::summary(all);
    let (_, up50, up99) = crate::cli::summary(tally.upload_ms.clone());
    let (_, down50, down99) = crate::cli::summary(tally.download_ms.clone());
    let achieved = ok as f64 / secs.max(1e-9);
    let node_rps = match (before, after) {
        (Some((b, _)), Some((a, nodes))) if a >= b => {
            Some(((a - b) as f64 / secs.max(1e-9), nodes))
        }
        _ => None,
    };
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "offered_rps": args.rps, "seconds": secs, "requests": total,
                "ok": ok, "errors": tally.errors, "missed": missed,
                "achieved_rps": achieved,
                "uploads": tally.upload_ms.len(), "downloads": tally.download_ms.len(),
                "latency_ms": { "p50": p50, "p99": p99, "max": max, "slowest": slowest,
                    "upload": { "p50": up50, "p99": up99 },
                    "download": { "p50": down50, "p99": down99 } },
                "node_requests_per_sec": node_rps.map(|(r, _)| r),
                "node_requests_per_sec_per_node": node_rps.map(|(r, n)| r / n.max(1) as f64),
                "nodes": node_rps.map(|(_, n)| n),
                "first_error": tally.first_error,
            }))?
        )?;
        return Ok(());
    }
    outln!(
        "offered {:.1} req/s for {secs:.1} s: {ok} ok ({} uploads, {} downloads), {} errors, {missed} missed",
        args.rps,
        tally.upload_ms.len(),
        tally.download_ms.len(),
        tally.errors
    )?;
    outln!("achieved  {achieved:.1} req/s")?;
    outln!("latency   p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (upload p50 {up50:.1} / p99 {up99:.1}, download p50 {down50:.1} / p99 {down99:.1})")?;
    if slowest.len() > 1 {
        let shown: Vec<String> = slowest.iter().map(|ms| format!("{ms:.1}")).collect();
        outln!("slowest   {} ms", shown.join(", "))?;
    }
    if let Some((r, nodes)) = node_rps {
        outln!(
            "nodes     {r:.0} node requests/s over {nodes} nodes ({:.0} per node; the autoscaler's metric; \
             counters of nodes that left during the run are not in it)",
            r / nodes.max(1) as f64
        )?;
    }
    if let Some(e) = &tally.first_error {
        outln!("first error: {e}")?;
    }
    Ok(())
}

pub(super) fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// The sum of every node's `requests` counter and the node count, or
/// `None` if the ring cannot be read (the figure is then left out).
async fn node_requests(peer: &str, opts: &PeerOptions) -> Option<(u64, usize)> {
    let client = Client::new(peer, opts.clone()).ok()?;
    let nodes = client.status().await.ok()?.nodes;
    Some((nodes.iter().map(|n| n.stats.requests).sum(), nodes.len()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        load: LoadArgs,
    }

    #[test]
    fn bad_arguments_are_refused() {
        let cases: &[(&[&str], &str)] = &[
            (&["--rps", "0"], "--rps"),
            (&["--rps", "5000"], "--rps"),
            (&["--seconds", "0"], "--seconds"),
            (&["--size", "0"], "--size"),
            (&["--size", "1GiB"], "--size"),
            (&["--files", "0"], "--files"),
            (&["--read-share", "1.5"], "--read-share"),
            (&["--concurrency", "0"], "--concurrency"),
        ];
        for (args, words) in cases {
            let parsed =
                Wrap::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
            let err = parsed.load.validate().unwrap_err().to_string();
            assert!(err.contains(words), "{args:?}: {err}");
        }
        let ok = Wrap::try_parse_from(["x", "--rps", "50", "--size", "8KiB"]).unwrap();
        assert!(ok.load.validate().is_ok());
    }
}
