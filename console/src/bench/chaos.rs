//! `bench chaos`: uploads, overwrites, downloads and deletes, every byte
//! checked by SHA-256, while the ring's membership keeps changing: nodes
//! killed with SIGKILL, killed nodes restarted on their data, fresh nodes
//! joining, nodes leaving gracefully (SIGTERM). At the end every file is
//! read back; one lost, changed, or back from the dead fails the run.
//!
//! **The bound it keeps: at most R-1 copies gone at once.** A ring has
//! *settled* when every node's predecessor and successor are the true ones
//! and every key held anywhere is on all R of its true holders (a manifest
//! in its newest version), seen in two reads a second apart so that a
//! write still replicating is not taken for a shortfall
//! ([`crate::fleet::check`]). From a settled ring a copy goes away only
//! with its node: a kill takes that node's copies, and a leave may exit
//! with some not handed over. Repair drops a copy only once all R current
//! holders have confirmed theirs, so a drop never takes a key below R. So
//! after k kills and leaves since the ring last settled, every key still
//! has at least R - k live copies. The bench makes at most R - 1 of them
//! between two settled states: before one more, it waits until the ring
//! has settled again (a node exiting on its own counts too). Joins and
//! restarts only add copies and are not counted. If the ring does not
//! settle within `--settle-timeout-secs`, the bench stops disrupting and
//! says so, rather than break the bound.
//!
//! Membership stays between `--nodes` - 2 (never fewer than R + 1) and
//! `--nodes` + 1. A killed node either comes back on its data, or after
//! `GIVE_UP_AFTER` is given up on: its slot's data dir is wiped when a
//! fresh node takes the slot, as a replaced machine would be.
//!
//! **What counts.** `ops` are operations that completed and `failed` those
//! that did not after `ATTEMPTS` tries (each through a random live node,
//! so a client whose entry node dies under it tries another). A file's
//! acceptable states are what its last acknowledged write left plus
//! whatever an unacknowledged write since may have left (an upload or
//! delete that failed may still have landed). Read back at the end, a file
//! is `lost` when it is missing or older than its acknowledged version,
//! `resurrected` when it was deleted and is back, and `corrupt` when its
//! bytes are no version ever uploaded under its name (wrong bytes served
//! during the run count as corrupt too). `repair_bytes` sums the repair
//! counter of every node incarnation, read every few seconds and just
//! before a node is stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chord_node::chord::NodeRef;
use chord_node::client::{Client, TransferOptions};
use chord_node::peer::{PeerOptions, PeerPool};
use clap::Args;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::load::{random_bytes, Entries};
use super::size::{format_size, parse_size};
use super::workdir::WorkDir;
use crate::fleet::check::{pointer_mismatch, Holdings};
use crate::fleet::{
    free_port_range, locate_node_binary, Fleet, FleetOptions, PortLayout, Slot, STOP_TIMEOUT,
};

/// Port slots per `--nodes`: room for joins while killed nodes keep
/// theirs for a restart, and for slots to rest before they are reused.
pub const SLOTS_PER_NODE: usize = 3;
/// Most nodes: every node is a process on this machine.
const MAX_NODES: usize = 64;
/// Chunk size of the uploads: small, so small files span several chunks
/// and the ring holds many keys to move.
const CHUNK_BYTES: usize = 16 * 1024;
/// Largest `--max-size`: the workers hold whole files in memory.
const MAX_FILE: u64 = 16 << 20;
/// Live files one worker keeps at most; past it, it overwrites instead of
/// adding, so a long run's disk use stays bounded.
const FILES_PER_WORKER: usize = 250;
/// Tries per operation before it counts as failed.
const ATTEMPTS: usize = 3;
/// Lines of history kept per file: enough to tell how a bad one got so.
const HISTORY_LINES: usize = 32;
/// Deadline of one try of one operation (a file of at most a few MiB).
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two tries of an operation.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Tries per file when the files are read back at the end.
const VERIFY_ATTEMPTS: usize = 5;
/// Files read back at once at the end.
const VERIFY_PARALLEL: usize = 4;
/// Deadline of one call from the bench's clients to a node.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every node's repair counter is read.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Pause between two checks of whether the ring has settled.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// Gap between the two key listings of one settle check: longer than any
/// one write takes to reach all its holders on a healthy ring.
const SNAPSHOT_GAP: Duration = Duration::from_secs(1);
/// A killed node not restarted within this is given up on.
const GIVE_UP_AFTER: Duration = Duration::from_secs(45);
/// How long the workers may take to finish their operations once time is up.
const WORKERS_STOP: Duration = Duration::from_secs(90);

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Nodes the ring is kept around: kills and leaves take it down to two
    /// fewer (never below --replicas + 1), joins up to one more.
    #[arg(long, default_value_t = 12)]
    pub nodes: usize,
    /// How long the chaos lasts, in minutes (fractions allowed, e.g. 0.5);
    /// default 1.
    #[arg(long, conflicts_with = "secs")]
    pub minutes: Option<f64>,
    /// How long the chaos lasts, in seconds, instead of --minutes.
    #[arg(long)]
    pub secs: Option<f64>,
    /// Copies of every key (R): at most R-1 kills and leaves happen between
    /// two moments the ring is seen settled.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Mean seconds between two membership changes (each pause is drawn
    /// from half to one and a half times this).
    #[arg(long, default_value_t = 4.0)]
    pub every_secs: f64,
    /// Clients uploading, downloading and deleting at once.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Largest file; sizes are uniform from 0 up to this (16 KiB chunks).
    #[arg(long, default_value = "96KiB", value_parser = parse_size)]
    pub max_size: u64,
    /// gRPC port of the first node slot; the bench uses 3 × --nodes
    /// consecutive ports from it (default: a free range found at start).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// How long the ring may take to settle (every key on all its true
    /// holders) before the bench stops disrupting it; also the bound of the
    /// final wait before the files are read back.
    #[arg(long, default_value_t = 180)]
    pub settle_timeout_secs: u64,
    /// Directory for the nodes' data and logs (default: the temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the nodes' data and logs after the run.
    #[arg(long)]
    pub keep: bool,
    /// Extra flag for every node (repeatable), e.g. `--node-arg=--repair-ms=1000`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
}

impl ChaosArgs {
    fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.replicas) {
            bail!("--replicas must be 2..=8: with one copy no node may go down");
        }
        let fewest = self.replicas + 2;
        if !(fewest..=MAX_NODES).contains(&self.nodes) {
            bail!("--nodes must be {fewest}..={MAX_NODES} for {} replicas: the ring must stay above R + 1 with nodes down", self.replicas);
        }
        let secs = self.duration_secs();
        if !(secs.is_finite() && secs > 0.0 && secs <= 24.0 * 3600.0) {
            bail!("--minutes (or --secs) must be above 0 and at most a day");
        }
        if !(self.every_secs.is_finite() && self.every_secs > 0.0 && self.every_secs <= 3600.0) {
            bail!("--every-secs must be above 0 and at most 3600");
        }
        if !(1..=64).contains(&self.workers) {
            bail!("--workers must be 1..=64");
        }
        if self.max_size > MAX_FILE {
            bail!("--max-size must be at most {}", format_size(MAX_FILE));
        }
        if self.settle_timeout_secs == 0 {
            bail!("--settle-timeout-secs must be at least 1");
        }
        Ok(())
    }

    fn duration_secs(&self) -> f64 {
        self.secs.unwrap_or(self.minutes.unwrap_or(1.0) * 60.0)
    }
}

/// One file's history, as far as the bench knows it.
#[derive(Clone, Debug)]
struct FileState {
    /// What the ring may hold now: `None` for no file (never written, or
    /// deleted), `Some` for the SHA-256 of a version.
    acceptable: Vec<Option<[u8; 32]>>,
    /// Every version ever uploaded under this name, acknowledged or not.
    uploaded: Vec<[u8; 32]>,
    /// The last [`HISTORY_LINES`] tries on it and what each answered.
    history: Vec<String>,
}

/// What reading a file back says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Verdict {
    Intact,
    /// Missing, or an older version than the one acknowledged.
    Lost,
    /// Deleted, and back.
    Resurrected,
    /// Bytes that are no version ever uploaded under its name.
    Corrupt,
}

impl FileState {
    fn new() -> FileState {
        FileState {
            acceptable: vec![None],
            uploaded: Vec::new(),
            history: Vec::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.history.len() == HISTORY_LINES {
            self.history.remove(0);
        }
        self.history.push(line);
    }

    fn uploading(&mut self, sha: [u8; 32]) {
        if !self.uploaded.contains(&sha) {
            self.uploaded.push(sha);
        }
    }

    /// A write that was not acknowledged may or may not have landed.
    fn maybe(&mut self, state: Option<[u8; 32]>) {
        if !self.acceptable.contains(&state) {
            self.acceptable.push(state);
        }
    }

    /// A write the ring acknowledged: nothing else is acceptable now.
    fn acked(&mut self, state: Option<[u8; 32]>) {
        self.acceptable = vec![state];
    }

    fn may_exist(&self) -> bool {
        self.acceptable.iter().any(Option::is_some)
    }

    fn must_exist(&self) -> bool {
        !self.acceptable.contains(&None)
    }

    /// Judges what a read found: `None` for no file, else its SHA-256.
    fn judge(&self, found: Option<[u8; 32]>) -> Verdict {
        match found {
            _ if self.acceptable.contains(&found) => Verdict::Intact,
            None => Verdict::Lost,
            Some(sha) if !self.uploaded.contains(&sha) => Verdict::Corrupt,
            Some(_) if !self.may_exist() => Verdict::Resurrected,
            Some(_) => Verdict::Lost,
        }
    }
}

/// Completed and failed operations.
#[derive(Debug, Default)]
struct Tally {
    uploads: u64,
    overwrites: u64,
    downloads: u64,
    deletes: u64,
    failed: u64,
    /// Reads that found an older version or no file, then retried.
    stale_reads: u64,
    /// Reads that got bytes no upload under that name ever had.
    corrupt_reads: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn ops(&self) -> u64 {
        self.uploads + self.overwrites + self.downloads + self.deletes
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}

/// What the workers share: every file's state and the tally.
#[derive(Debug)]
struct Book {
    files: Mutex<BTreeMap<String, FileState>>,
    tally: Mutex<Tally>,
    /// Where the times of the files' histories count from: the bench's
    /// start, as in its log.
    started: Instant,
}

impl Book {
    fn new(started: Instant) -> Book {
        Book {
            files: Mutex::default(),
            tally: Mutex::default(),
            started,
        }
    }

    /// Adds a line, stamped with the time, to `name`'s history.
    fn note(&self, name: &str, what: impl std::fmt::Display) {
        let at = self.started.elapsed().as_secs_f64();
        self.with_file(name, |f| f.note(format!("[{at:7.1}s] {what}")));
    }

    fn with_file<T>(&self, name: &str, f: impl FnOnce(&mut FileState) -> T) -> T {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        f(files.entry(name.to_string()).or_insert_with(FileState::new))
    }

    fn file(&self, name: &str) -> FileState {
        self.with_file(name, |f| f.clone())
    }

    fn tally<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        f(&mut self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reads `name` through `client`: `None` when the ring has no such file,
/// else the SHA-256 of its bytes (which the client has also checked
/// against the manifest, chunk by chunk and whole).
async fn fetch(
    client: &Client,
    name: &str,
    replicas: usize,
) -> chord_node::Result<Option<[u8; 32]>> {
    let manifest = match client.manifest(name).await {
        Ok(m) => m,
        Err(chord_node::Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // The files are the bench's own, at most --max-size; a manifest claiming
    // more does not get to size the buffer.
    let mut bytes = Vec::with_capacity(usize::try_from(manifest.size.min(MAX_FILE)).unwrap_or(0));
    client
        .write_to(
            &manifest,
            &mut bytes,
            replicas,
            &transfer_options(),
            &|_| {},
        )
        .await?;
    Ok(Some(Sha256::digest(&bytes).into()))
}

fn transfer_options() -> TransferOptions {
    TransferOptions {
        chunk_size: CHUNK_BYTES,
        ..TransferOptions::default()
    }
}

/// One worker's loop: until `stop`, one operation after another on files
/// of its own (no two workers touch one name, so a file's state is exact).
async fn work(
    worker: usize,
    entries: Arc<Entries>,
    book: Arc<Book>,
    replicas: usize,
    max_size: usize,
    stop: CancellationToken,
) {
    // Names that may exist: a name whose delete was acknowledged is done
    // with (the final check still reads it).
    let mut live: Vec<String> = Vec::new();
    let mut next = 0;
    while !stop.is_cancelled() {
        live.retain(|n| book.file(n).may_exist());
        let (roll, target) = {
            let mut rng = rand::rng();
            (rng.random_range(0..100), live.choose(&mut rng).cloned())
        };
        match target {
            Some(name) if roll >= 35 || live.len() >= FILES_PER_WORKER => match roll {
                0..50 => upload(&entries, &book, &name, max_size, true).await,
                50..90 => download(&entries, &book, &name, replicas).await,
                _ => delete(&entries, &book, &name).await,
            },
            _ => {
                let name = format!("chaos-{worker}-{next:05}");
                next += 1;
                live.push(name.clone());
                upload(&entries, &book, &name, max_size, false).await;
            }
        }
    }
}

/// Runs `attempt` up to [`ATTEMPTS`] times, each through a random entry
/// node and bounded by [`OP_TIMEOUT`], until it says it is done; returns
/// the last failure otherwise.
async fn with_retries<F, Fut>(
    entries: &Entries,
    book: &Book,
    name: &str,
    what: &str,
    mut attempt: F,
) -> std::result::Result<(), String>
where
    F: FnMut(Arc<Client>, usize) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut last = String::from("no entry node");
    for i in 0..ATTEMPTS {
        if i > 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let Some(client) = entries.pick() else {
            continue;
        };
        let entry = client.entry().to_string();
        match tokio::time::timeout(OP_TIMEOUT, attempt(client, i)).await {
            Ok(Ok(())) => {
                book.note(
                    name,
                    format_args!("{what}, try {}, via {entry}: done", i + 1),
                );
                return Ok(());
            }
            Ok(Err(e)) => last = format!("via {entry}: {e}"),
            Err(_) => last = format!("via {entry}: no answer within {OP_TIMEOUT:?}"),
        }
        book.note(name, format_args!("{what}, try {}, {last}", i + 1));
    }
    Err(last)
}

async fn upload(entries: &Entries, book: &Book, name: &str, max_size: usize, overwrite: bool) {
    let data = random_bytes(rand::rng().random_range(0..=max_size));
    let sha: [u8; 32] = Sha256::digest(&data).into();
    book.with_file(name, |f| f.uploading(sha));
    let what = format!("upload {}", describe(Some(sha)));
    let done = with_retries(entries, book, name, &what, |client, _| {
        let data = &data;
        async move {
            // Failed or cut short by its deadline, a try may still land.
            book.with_file(name, |f| f.maybe(Some(sha)));
            client
                .upload(&data[..], name, &transfer_options(), &|_| {})
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    match done {
        Ok(()) => {
            book.with_file(name, |f| f.acked(Some(sha)));
            book.tally(|t| match overwrite {
                true => t.overwrites += 1,
                false => t.uploads += 1,
            });
        }
        Err(why) => book.tally(|t| t.fail(format!("upload {name} {why}"))),
    }
}

async fn download(entries: &Entries, book: &Book, name: &str, replicas: usize) {
    let state = book.file(name);
    let done = with_retries(entries, book, name, "download", |client, _| {
        let state = &state;
        async move {
            let found = fetch(&client, name, replicas)
                .await
                .map_err(|e| e.to_string())?;
            match state.judge(found) {
                Verdict::Intact => Ok(()),
                Verdict::Corrupt => {
                    book.tally(|t| t.corrupt_reads += 1);
                    Err("bytes that were never uploaded".into())
                }
                Verdict::Lost | Verdict::Resurrected => {
                    book.tally(|t| t.stale_reads += 1);
                    Err(match found {
                        None => "no such file".into(),
                        Some(_) => format!(
                            "another version ({}) than the acknowledged one",
                            describe(found)
                        ),
                    })
                }
            }
        }
    })
    .await;
    match done {
        Ok(()) => book.tally(|t| t.downloads += 1),
        Err(why) => book.tally(|t| t.fail(format!("download {name} {why}"))),
    }
}

async fn delete(entries: &Entries, book: &Book, name: &str) {
    let must_exist = book.file(name).must_exist();
    let done = with_retries(
        entries,
        book,
        name,
        "delete",
        |client, attempt| async move {
            // Failed or cut short by its deadline, a try may still land.
            book.with_file(name, |f| f.maybe(None));
            match client.remove(name).await {
                Ok(_) => Ok(()),
                // An earlier try may have landed, or the file may never have.
                Err(chord_node::Error::NotFound(_)) if attempt > 0 || !must_exist => {
                    book.note(name, "delete: no such file, taken as deleted");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    match done {
        Ok(()) => {
            book.with_file(name, |f| f.acked(None));
            book.tally(|t| t.deletes += 1);
        }
        Err(why) => book.tally(|t| t.fail(format!("delete {name} {why}"))),
    }
}

/// Membership changes made and what they cost.
#[derive(Debug, Default)]
struct Changes {
    kills: u64,
    restarts: u64,
    joins: u64,
    leaves: u64,
    /// Leaves that did not exit within the stop timeout and were killed.
    leaves_forced: u64,
    /// Killed nodes never restarted.
    given_up: u64,
    /// Nodes that exited without being told to.
    crashed: u64,
    /// Restarts and joins whose node did not come up.
    start_failures: u64,
    /// Times the ring was seen settled during the run, and the waits.
    settles: u64,
    settle_wait: Duration,
    /// The most kills and leaves between two settled states.
    most_between_settles: usize,
    /// Kills and leaves aimed at a ring neighbour of the one before.
    neighbours: u64,
}

/// Every node incarnation's last `repair_bytes`: a node restarted on its
/// address starts from zero again, which is how a new incarnation shows.
#[derive(Debug, Default)]
struct RepairTally {
    last: HashMap<String, u64>,
    earlier: u64,
}

impl RepairTally {
    fn saw(&mut self, addr: &str, bytes: u64) {
        let last = self.last.entry(addr.to_string()).or_default();
        if bytes < *last {
            self.earlier += *last;
        }
        *last = bytes;
    }

    fn total(&self) -> u64 {
        self.earlier + self.last.values().sum::<u64>()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Kill,
    Leave,
    Restart,
    Join,
}

/// The fleet under chaos: who is up, who is down, and the bound's count.
struct Churn {
    fleet: Fleet,
    layout: PortLayout,
    replicas: usize,
    target: usize,
    peers: PeerPool,
    /// Killed nodes that may come back on their data, and since when.
    down: BTreeMap<String, Instant>,
    /// Slots whose node left or was given up on, and since when.
    freed: HashMap<String, Instant>,
    /// Kills, leaves and crashes since the ring was last seen settled.
    since_settled: usize,
    /// The node the last kill or leave since then took away.
    last_gone: Option<NodeRef>,
    /// Cleared once the ring fails to settle in time: no more kills or leaves.
    disrupting: bool,
    settle_timeout: Duration,
    changes: Changes,
    repair: RepairTally,
    started: Instant,
}

impl Churn {
    fn say(&self, what: &str) {
        eprintln!(
            "[{:7.1}s] {what} ({} up, {} down, {} since settled)",
            self.started.elapsed().as_secs_f64(),
            self.fleet.len(),
            self.down.len(),
            self.since_settled
        );
    }

    /// The running nodes sorted by id: the ring as it should be.
    fn truth(&self) -> Vec<NodeRef> {
        let mut nodes: Vec<NodeRef> = self
            .fleet
            .addrs()
            .into_iter()
            .map(NodeRef::from_addr)
            .collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }

    fn random_up(&self) -> Option<String> {
        self.fleet.addrs().choose(&mut rand::rng()).cloned()
    }

    /// Whom to kill or stop: after an earlier one since the ring settled,
    /// half the time a ring neighbour of it (so R-1 holders of the same
    /// keys go down together, the case the bound is about), else anyone.
    fn victim(&mut self) -> Option<String> {
        let mut rng = rand::rng();
        if let Some(gone) = self.last_gone.as_ref().filter(|_| self.since_settled > 0) {
            if rng.random_bool(0.5) {
                let truth = self.truth();
                // The nodes now on either side of where it was.
                let next = truth.iter().position(|n| n.id > gone.id).unwrap_or(0);
                let prev = (next + truth.len() - 1) % truth.len().max(1);
                if let Some(n) = [next, prev].choose(&mut rng).and_then(|&i| truth.get(i)) {
                    self.changes.neighbours += 1;
                    return Some(n.addr.clone());
                }
            }
        }
        self.random_up()
    }

    /// Starts a node on `slot`, joining through a random live one; a node
    /// that does not come up is counted, said, and its slot left to rest.
    async fn bring_up(&mut self, slot: &Slot, what: &str) -> bool {
        let join = self.random_up();
        match self.fleet.start_slot(slot, join.as_deref()).await {
            Ok(_) => true,
            Err(e) => {
                self.changes.start_failures += 1;
                self.freed.insert(slot.grpc_addr(), Instant::now());
                self.say(&format!("{what} on {} failed: {e:#}", slot.grpc_addr()));
                false
            }
        }
    }

    /// Starts `n` nodes, each joining through a random earlier one.
    async fn start(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let fleet = &self.fleet;
            let slot = self
                .layout
                .free_slot(|a| fleet.node(a).is_some(), &self.freed)?;
            let join = self.random_up();
            self.fleet.start_slot(&slot, join.as_deref()).await?;
        }
        Ok(())
    }

    /// What keeps the ring from being settled, or `None` when it is.
    async fn unsettled(&self) -> Option<String> {
        let truth = self.truth();
        if let Some(problem) = pointer_mismatch(&self.peers, &truth).await {
            return Some(problem);
        }
        let addrs = self.fleet.addrs();
        let first = match Holdings::read(&self.peers, &addrs).await {
            Ok(h) => h.short(&truth, self.replicas),
            Err(e) => return Some(format!("listing keys: {e}")),
        };
        if first.is_empty() {
            return None;
        }
        tokio::time::sleep(SNAPSHOT_GAP).await;
        let second = match Holdings::read(&self.peers, &addrs).await {
            Ok(h) => h.short(&truth, self.replicas),
            Err(e) => return Some(format!("listing keys: {e}")),
        };
        let still: Vec<&String> = second
            .iter()
            .filter(|(key, _)| first.contains_key(key))
            .map(|(_, why)| why)
            .collect();
        still
            .first()
            .map(|why| format!("{} keys short of their holders, e.g. {why}", still.len()))
    }

    /// Waits until the ring has settled, at most `limit`; returns how long
    /// that took, or `None` (with the last problem said) if it did not.
    async fn wait_settled(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            match self.unsettled().await {
                None => {
                    let took = started.elapsed();
                    self.since_settled = 0;
                    return Some(took);
                }
                Some(problem) if started.elapsed() >= limit => {
                    self.say(&format!("not settled after {limit:?}: {problem}"));
                    return None;
                }
                Some(_) => tokio::time::sleep(SETTLE_POLL).await,
            }
        }
    }

    /// Reads the repair counter of every node in `addrs`.
    async fn sample(&mut self, addrs: &[String]) {
        let peers = &self.peers;
        let stats = futures::future::join_all(
            addrs
                .iter()
                .map(|a| async move { (a.clone(), peers.get_stats(a).await) }),
        )
        .await;
        for (addr, stats) in stats {
            if let Ok(s) = stats {
                self.repair.saw(&addr, s.repair_bytes);
            }
        }
    }

    /// Notices nodes that exited on their own: like a kill, they count
    /// towards the bound, and may be restarted.
    fn reap(&mut self) {
        for (addr, why) in self.fleet.reap() {
            self.changes.crashed += 1;
            self.since_settled += 1;
            self.changes.most_between_settles =
                self.changes.most_between_settles.max(self.since_settled);
            self.down.insert(addr.clone(), Instant::now());
            self.say(&format!("{addr} exited on its own: {why}"));
        }
        let now = Instant::now();
        let old: Vec<String> = self
            .down
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= GIVE_UP_AFTER)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in old {
            self.down.remove(&addr);
            self.freed.insert(addr, now);
            self.changes.given_up += 1;
        }
    }

    /// The next change, drawn so membership stays in its band and each
    /// kind happens about as often as its pair (the rarer one is taken,
    /// ties at random); `None` when nothing may change.
    fn choose(&self) -> Option<Change> {
        let live = self.fleet.len();
        let low = self.target.saturating_sub(2).max(self.replicas + 1);
        let may_disrupt = self.disrupting && live > low;
        let may_add = live <= self.target;
        let mut rng = rand::rng();
        let disrupt = match (may_disrupt, may_add) {
            (false, false) => return None,
            (true, false) => true,
            (false, true) => false,
            (true, true) if live < self.target => rng.random_bool(0.4),
            (true, true) => rng.random_bool(0.7),
        };
        let c = &self.changes;
        let rarer = |a: (Change, u64), b: (Change, u64)| match a.1.cmp(&b.1) {
            std::cmp::Ordering::Less => a.0,
            std::cmp::Ordering::Greater => b.0,
            std::cmp::Ordering::Equal => *[a.0, b.0].choose(&mut rand::rng()).unwrap_or(&a.0),
        };
        Some(if disrupt {
            rarer((Change::Kill, c.kills), (Change::Leave, c.leaves))
        } else if self.down.is_empty() {
            Change::Join
        } else {
            rarer((Change::Restart, c.restarts), (Change::Join, c.joins))
        })
    }

    /// Makes one change. A kill or leave past the bound first waits for the
    /// ring to settle, at most until `until`.
    async fn step(&mut self, until: Instant, entries: &Entries) -> Result<()> {
        let Some(change) = self.choose() else {
            return Ok(());
        };
        match change {
            Change::Kill | Change::Leave => {
                if self.since_settled + 1 >= self.replicas {
                    let limit = self
                        .settle_timeout
                        .min(until.saturating_duration_since(Instant::now()));
                    match self.wait_settled(limit).await {
                        Some(took) => {
                            self.changes.settles += 1;
                            self.changes.settle_wait += took;
                            self.say(&format!("settled after {:.1} s", took.as_secs_f64()));
                            if Instant::now() >= until {
                                return Ok(());
                            }
                        }
                        None if Instant::now() >= until => return Ok(()),
                        None => {
                            self.disrupting = false;
                            self.say("the ring did not settle in time: no more kills or leaves");
                            return Ok(());
                        }
                    }
                }
                let Some(victim) = self.victim() else {
                    return Ok(());
                };
                // Clients stop entering through it first.
                entries.set(self.fleet.addrs().into_iter().filter(|a| *a != victim))?;
                self.sample(std::slice::from_ref(&victim)).await;
                if change == Change::Kill {
                    self.fleet.kill(&victim).await?;
                    self.down.insert(victim.clone(), Instant::now());
                    self.changes.kills += 1;
                    self.since_settled += 1;
                    self.say(&format!("kill -9 {victim}"));
                } else {
                    let clean = self.fleet.stop(&victim, STOP_TIMEOUT).await?;
                    self.freed.insert(victim.clone(), Instant::now());
                    self.changes.leaves += 1;
                    self.changes.leaves_forced += u64::from(!clean);
                    self.since_settled += 1;
                    let how = if clean {
                        "left"
                    } else {
                        "killed after the stop timeout"
                    };
                    self.say(&format!("SIGTERM {victim}: {how}"));
                }
                self.changes.most_between_settles =
                    self.changes.most_between_settles.max(self.since_settled);
                self.last_gone = Some(NodeRef::from_addr(victim));
            }
            Change::Restart => {
                let Some(addr) = self
                    .down
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .choose(&mut rand::rng())
                    .cloned()
                else {
                    return Ok(());
                };
                self.down.remove(&addr);
                let slot = self
                    .layout
                    .slot_of(&addr)
                    .and_then(|i| self.layout.slot(i))
                    .ok_or_else(|| anyhow!("{addr} is in no slot of the layout"))?;
                if self.bring_up(&slot, "restart").await {
                    self.changes.restarts += 1;
                    self.say(&format!("restart {addr} on its data"));
                }
            }
            Change::Join => {
                let (fleet, down) = (&self.fleet, &self.down);
                let slot = self.layout.free_slot(
                    |a| fleet.node(a).is_some() || down.contains_key(a),
                    &self.freed,
                )?;
                // A fresh node: whatever an earlier one left there goes.
                let dir = self.fleet.data_dir(&slot);
                if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                    tokio::fs::remove_dir_all(&dir)
                        .await
                        .with_context(|| format!("cannot wipe {}", dir.display()))?;
                }
                self.freed.remove(&slot.grpc_addr());
                if self.bring_up(&slot, "join").await {
                    self.changes.joins += 1;
                    self.say(&format!("join {} (fresh)", slot.grpc_addr()));
                }
            }
        }
        entries.set(self.fleet.addrs())?;
        Ok(())
    }

    /// Changes membership every `every` or so until `until`, reading the
    /// repair counters in between.
    async fn run(&mut self, until: Instant, every: Duration, entries: &Entries) -> Result<()> {
        let mut next_sample = Instant::now();
        loop {
            let pause = every.mul_f64(rand::rng().random_range(0.5..1.5));
            let wake = (Instant::now() + pause).min(until);
            loop {
                let now = Instant::now();
                if now >= next_sample {
                    self.sample(&self.fleet.addrs()).await;
                    next_sample = now + STATS_EVERY;
                }
                if now >= wake {
                    break;
                }
                tokio::time::sleep((wake - now).min(STATS_EVERY)).await;
            }
            if Instant::now() >= until {
                return Ok(());
            }
            self.reap();
            self.step(until, entries).await?;
        }
    }
}

/// Reads every file back and judges it; returns the count of each verdict
/// and the first bad file's name with a line about it.
async fn verify(
    entries: &Entries,
    files: &BTreeMap<String, FileState>,
    replicas: usize,
) -> (HashMap<Verdict, u64>, Option<(String, String)>) {
    let checks = futures::stream::iter(files.iter())
        .map(|(name, state)| async move {
            let mut last = String::new();
            for attempt in 0..VERIFY_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let Some(client) = entries.pick() else {
                    continue;
                };
                let read = tokio::time::timeout(OP_TIMEOUT, fetch(&client, name, replicas)).await;
                match read {
                    Ok(Ok(found)) => match state.judge(found) {
                        Verdict::Intact => return (Verdict::Intact, None),
                        Verdict::Corrupt => {
                            let why = format!("{name}: unknown bytes");
                            return (Verdict::Corrupt, Some((name.clone(), why)));
                        }
                        verdict if attempt + 1 == VERIFY_ATTEMPTS => {
                            let why = format!("{name}: {verdict:?} (found {})", describe(found));
                            return (verdict, Some((name.clone(), why)));
                        }
                        verdict => last = format!("{verdict:?}"),
                    },
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("no answer within {OP_TIMEOUT:?}"),
                }
            }
            let why = format!("{name}: unreadable: {last}");
            (Verdict::Lost, Some((name.clone(), why)))
        })
        .buffer_unordered(VERIFY_PARALLEL);
    let results: Vec<(Verdict, Option<(String, String)>)> = checks.collect().await;
    let mut counts: HashMap<Verdict, u64> = HashMap::new();
    let mut first = None;
    for (verdict, why) in results {
        *counts.entry(verdict).or_default() += 1;
        if first.is_none() {
            first = why;
        }
    }
    (counts, first)
}

fn describe(found: Option<[u8; 32]>) -> String {
    found.map_or_else(|| "no file".into(), |sha| const_hex::encode(&sha[..8]))
}

/// Runs the bench and prints its report; fails if any file was lost,
/// corrupted or came back after its delete.
pub async fn run(args: &ChaosArgs, json: bool) -> Result<()> {
    args.validate()?;
    let secs = args.duration_secs();
    let slots = SLOTS_PER_NODE * args.nodes;
    let base = match args.base_port {
        Some(port) => port,
        None => free_port_range(u16::try_from(slots)?)?,
    };
    let layout = PortLayout::new(base, None, slots)?;
    let work_dir = WorkDir::create("chord-chaos-", args.dir.as_deref(), args.keep)?;
    let root = work_dir.path().to_path_buf();
    let mut opts = FleetOptions::new(locate_node_binary()?, root.clone());
    opts.replicas = args.replicas;
    opts.successors = args.replicas.max(3);
    opts.extra_args = args.node_args.clone();
    let mut churn = Churn {
        fleet: Fleet::new(opts)?,
        layout,
        replicas: args.replicas,
        target: args.nodes,
        peers: PeerPool::new(PeerOptions {
            rpc_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            ..PeerOptions::default()
        }),
        down: BTreeMap::new(),
        freed: HashMap::new(),
        since_settled: 0,
        last_gone: None,
        disrupting: true,
        settle_timeout: Duration::from_secs(args.settle_timeout_secs),
        changes: Changes::default(),
        repair: RepairTally::default(),
        started: Instant::now(),
    };
    eprintln!(
        "starting {} nodes (R={}) on ports {base}.. in {}",
        args.nodes,
        args.replicas,
        root.display()
    );
    churn.start(args.nodes).await?;
    let settle_timeout = churn.settle_timeout;
    churn
        .wait_settled(settle_timeout)
        .await
        .context("the new ring did not settle")?;

    let entries = Arc::new(Entries::new(PeerOptions {
        rpc_timeout: RPC_TIMEOUT,
        ..PeerOptions::default()
    }));
    entries.set(churn.fleet.addrs())?;
    let book = Arc::new(Book::new(churn.started));
    let stop = CancellationToken::new();
    let max_size = usize::try_from(args.max_size)?;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        workers.spawn(work(
            w,
            entries.clone(),
            book.clone(),
            args.replicas,
            max_size,
            stop.clone(),
        ));
    }
    churn.say(&format!(
        "chaos for {secs:.0} s: {} workers, files up to {}",
        args.workers,
        format_size(args.max_size)
    ));
    let chaos_started = Instant::now();
    let churned = churn
        .run(
            chaos_started + Duration::from_secs_f64(secs),
            Duration::from_secs_f64(args.every_secs),
            &entries,
        )
        .await;
    stop.cancel();
    if !chord_node::join_within(&mut workers, WORKERS_STOP).await {
        // Every try was booked as possibly landed before it began, so the
        // files' states still hold for the ones cut short here.
        churn.say(&format!(
            "workers still busy after {WORKERS_STOP:?}: cut short"
        ));
    }
    churned?;
    let chaos_secs = chaos_started.elapsed().as_secs_f64();

    churn.reap();
    churn.say("time is up: waiting for the ring to settle, then reading every file back");
    let final_settle = churn.wait_settled(settle_timeout).await;
    let addrs = churn.fleet.addrs();
    churn.sample(&addrs).await;
    entries.set(addrs)?;
    let files = std::mem::take(&mut *book.files.lock().unwrap_or_else(|e| e.into_inner()));
    let tally = std::mem::take(&mut *book.tally.lock().unwrap_or_else(|e| e.into_inner()));
    let (verdicts, first_bad) = verify(&entries, &files, args.replicas).await;
    let first_bad_history = first_bad
        .as_ref()
        .and_then(|(name, _)| files.get(name))
        .map(|f| f.history.clone())
        .unwrap_or_default();
    let first_bad = first_bad.map(|(_, why)| why);
    let count = |v: Verdict| verdicts.get(&v).copied().unwrap_or(0);
    let lost = count(Verdict::Lost);
    let corrupt = count(Verdict::Corrupt) + tally.corrupt_reads;
    let resurrected = count(Verdict::Resurrected);
    let checked = files.values().filter(|f| f.must_exist()).count();
    let c = &churn.changes;
    let report = json!({
        "nodes": args.nodes, "replicas": args.replicas, "workers": args.workers,
        "seconds": chaos_secs,
        "ops": tally.ops(), "failed": tally.failed,
        "uploads": tally.uploads, "overwrites": tally.overwrites,
        "downloads": tally.downloads, "deletes": tally.deletes,
        "stale_reads": tally.stale_reads,
        "files": files.len(), "files_acknowledged": checked,
        "lost": lost, "corrupt": corrupt, "resurrected": resurrected,
        "repair_bytes": churn.repair.total(),
        "kills": c.kills, "restarts": c.restarts, "joins": c.joins, "leaves": c.leaves,
        "leaves_forced": c.leaves_forced, "given_up": c.given_up,
        "crashed": c.crashed, "start_failures": c.start_failures,
        "settles": c.settles, "settle_wait_secs": c.settle_wait.as_secs_f64(),
        "most_down_between_settles": c.most_between_settles,
        "neighbour_disruptions": c.neighbours,
        "kept_disrupting": churn.disrupting,
        "settled_at_end": final_settle.is_some(),
        "final_settle_secs": final_settle.map(|d| d.as_secs_f64()),
        "nodes_at_end": churn.fleet.len(),
        "first_failure": tally.first_failure, "first_bad_file": first_bad,
        "first_bad_history": first_bad_history,
    });
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!(
            "{chaos_secs:.0} s of chaos on {} nodes (R={}): {} ops done ({} uploads, {} overwrites, {} downloads, {} deletes), {} failed, {} stale reads retried",
            args.nodes, args.replicas, tally.ops(), tally.uploads, tally.overwrites, tally.downloads, tally.deletes, tally.failed, tally.stale_reads
        )?;
        outln!(
            "changes   {} kills, {} restarts, {} joins, {} leaves ({} forced); {} killed nodes given up; at most {} down between settles ({} next to the one before); {} settles, {:.1} s waited",
            c.kills, c.restarts, c.joins, c.leaves, c.leaves_forced, c.given_up, c.most_between_settles, c.neighbours, c.settles, c.settle_wait.as_secs_f64()
        )?;
        outln!(
            "end       {} files ({} acknowledged live): {lost} lost, {corrupt} corrupt, {resurrected} resurrected; ring {} ",
            files.len(),
            checked,
            match final_settle {
                Some(d) => format!("settled {:.1} s after the chaos", d.as_secs_f64()),
                None => "did not settle".to_string(),
            }
        )?;
        outln!("repair    {} bytes pushed by repair", churn.repair.total())?;
        if c.crashed + c.start_failures > 0 {
            outln!(
                "nodes     {} exited on their own, {} failed to start",
                c.crashed,
                c.start_failures
            )?;
        }
        if let Some(why) = &tally.first_failure {
            outln!("first failed op: {why}")?;
        }
        if let Some(why) = &first_bad {
            outln!("first bad file: {why}")?;
            for line in &first_bad_history {
                outln!("  {line}")?;
            }
        }
    }
    // Killed and waited for, so nothing writes while the data goes.
    for addr in churn.fleet.addrs() {
        churn.fleet.kill(&addr).await?;
    }
    work_dir.finish()?;
    if lost + corrupt + resurrected > 0 {
        bail!("{lost} files lost, {corrupt} corrupt, {resurrected} back after their delete");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_read_is_judged_against_every_state_the_writes_may_have_left() {
        let (a, b, x) = ([1u8; 32], [2u8; 32], [9u8; 32]);
        let mut f = FileState::new();
        f.uploading(a);
        f.acked(Some(a));
        f.uploading(b);
        f.maybe(Some(b)); // an overwrite that failed
        let table = [
            (Some(a), Verdict::Intact),
            (Some(b), Verdict::Intact),
            (None, Verdict::Lost),
            (Some(x), Verdict::Corrupt),
        ];
        for (found, want) in table {
            assert_eq!(f.judge(found), want, "{found:?}");
        }
        f.acked(Some(b));
        assert_eq!(f.judge(Some(a)), Verdict::Lost, "older than acknowledged");
        f.maybe(None); // a delete that failed
        assert_eq!(f.judge(None), Verdict::Intact);
        assert!(!f.must_exist() && f.may_exist());
        f.acked(None);
        assert_eq!(f.judge(Some(b)), Verdict::Resurrected);
        assert_eq!(f.judge(None), Verdict::Intact);
        assert_eq!(f.judge(Some(x)), Verdict::Corrupt);
    }

    #[test]
    fn a_file_keeps_only_its_latest_history() {
        let mut f = FileState::new();
        for i in 0..HISTORY_LINES + 5 {
            f.note(format!("try {i}"));
        }
        assert_eq!(f.history.len(), HISTORY_LINES);
        assert_eq!(f.history[0], "try 5");
        assert_eq!(
            f.history.last().unwrap(),
            &format!("try {}", HISTORY_LINES + 4)
        );
    }

    #[test]
    fn repair_bytes_add_up_over_restarts() {
        let mut t = RepairTally::default();
        t.saw("a", 100);
        t.saw("b", 50);
        t.saw("a", 300);
        t.saw("a", 20); // restarted: a new incarnation
        assert_eq!(t.total(), 300 + 20 + 50);
    }

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        chaos: ChaosArgs,
    }

    #[test]
    fn arguments() {
        let parse = |args: &[&str]| {
            Wrap::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|w| w.chaos)
        };
        let ok = parse(&["--minutes", "0.5"]).unwrap();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.duration_secs(), 30.0);
        assert_eq!(parse(&["--secs", "45"]).unwrap().duration_secs(), 45.0);
        assert_eq!(parse(&[]).unwrap().duration_secs(), 60.0);
        assert!(parse(&["--minutes", "1", "--secs", "5"]).is_err());
        let cases: &[(&[&str], &str)] = &[
            (&["--minutes", "0"], "--minutes"),
            (&["--secs=-1"], "--minutes"),
            (&["--replicas", "1"], "--replicas"),
            (&["--nodes", "4"], "--nodes"),
            (&["--every-secs", "0"], "--every-secs"),
            (&["--workers", "0"], "--workers"),
            (&["--max-size", "1GiB"], "--max-size"),
        ];
        for (args, words) in cases {
            let err = parse(args).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(words), "{args:?}: {err}");
        }
    }
}
