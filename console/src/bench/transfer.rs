//! `bench transfer`: upload and download speed of one large file (or of
//! `--files` small ones), and the memory the nodes need for it, beside a
//! plain HTTP baseline, in one run.
//!
//! The setups, each measured the same way on the same random files:
//! 1. a fresh local fleet of `--nodes` real `chord-node` processes with one
//!    copy of every key, through the client library (as `chord-console
//!    upload` and `download` run);
//! 2. a fresh fleet with one copy, through the HTTP gateways with `curl`:
//!    uploads to the first node's gateway, downloads from the second's,
//!    each downloaded file synced within the time as the other setups'
//!    are (skipped, with a note, where no `curl` is installed);
//! 3. a fresh fleet with three copies, through the client library;
//! 4. with one file, the disk alone (`super::disk`): the chunk writes of
//!    one copy and of three, and a download's reads and writes, with
//!    nothing else, so the table shows what the disk allows each setup
//!    and how near the setup came to it (`of disk`);
//! 5. a plain HTTP server on the same disk (`super::http_baseline`),
//!    twice, its faster round of each direction counting
//!    (`BASELINE_ROUNDS`).
//!
//! With several files, `--parallel` of them are in flight at once in every
//! setup (and each file's chunks go one at a time), so the setups compare
//! like for like. Upload and download are timed separately; every
//! downloaded file is then compared with its source by SHA-256 (outside
//! the timing), so a fast but wrong transfer fails the bench instead of
//! winning it. The nodes' resident
//! memory is sampled while they work, and their `VmHWM` read before they
//! stop (`super::rss`). Every wait is bounded; the fleets kill their
//! processes if anything fails, and the temporary directory (source file,
//! node data, downloads) is removed at the end unless `--keep` is given.
//! Figures go to stdout; progress lines go to stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chord_node::auth::ClusterToken;
use chord_node::chord::NodeRef;
use chord_node::client::{Client, TransferOptions};
use chord_node::peer::PeerOptions;
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::breakdown::{Breakdown, Per, Snapshot};
use super::disk;
use super::http_baseline::{self, BaselineServer, IO_BUFFER};
use super::rss::RssSampler;
use super::size::{format_size, parse_size};
use super::workdir::WorkDir;
use crate::fleet::{locate_node_binary, Fleet, FleetOptions, STOP_TIMEOUT};

/// Fewest nodes: a ring with three copies of every key needs three nodes
/// for the copies to land on distinct processes.
pub const MIN_NODES: u64 = 3;
/// Most nodes: every node is a process on this machine.
pub const MAX_NODES: u64 = 64;

/// Name the file is stored under on the ring, when there is one.
const FILE_NAME: &str = "bench-transfer.bin";

/// Most files one run may move.
const MAX_FILES: u64 = 100_000;

/// How long a fresh fleet may take until every successor list and
/// predecessor is right: a few stabilize rounds for a handful of nodes.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between convergence checks.
const CONVERGE_POLL: Duration = Duration::from_millis(200);

/// Fixed allowance of one timed transfer, for setup and slow starts.
const TRANSFER_SLACK: Duration = Duration::from_secs(120);
/// Slowest throughput a transfer may have before the bench gives up on it:
/// far below anything a working setup does on one machine.
const TRANSFER_FLOOR_BYTES_PER_SEC: u64 = 1 << 20;
/// Slowest rate of files, likewise.
const TRANSFER_FLOOR_FILES_PER_SEC: u64 = 5;

/// Deadline of one call to a node from the bench's client: generous, since
/// the machine is busy with the nodes themselves.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the progress line of a transfer is printed, in percent.
const PROGRESS_STEP_PERCENT: u64 = 25;

#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    /// Size of the test file (of each, with --files): 4096, 4KiB, 10MB,
    /// 100MiB, 1GiB, 1.5GiB ...
    #[arg(long, default_value = "256MiB", value_parser = parse_positive_size)]
    pub size: u64,
    /// Move this many files of --size each instead of one, --parallel at
    /// a time, and give files per second as well.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_FILES))]
    pub files: usize,
    /// Nodes in each chord-dfs fleet (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(MIN_NODES..=MAX_NODES))]
    pub nodes: usize,
    /// Chunk size of the chord-dfs uploads.
    #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
    pub chunk_size: usize,
    /// Chunks in flight at once during a chord-dfs transfer of one file;
    /// files in flight at once with --files, in every setup.
    #[arg(long, default_value_t = TransferOptions::default().parallel, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub parallel: usize,
    /// Directory to work in (default: the system temp dir); it decides
    /// which disk is measured.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary data (source file, node data, downloads).
    #[arg(long)]
    pub keep: bool,
}

fn parse_positive_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("the size must be at least one byte".into()),
        n => Ok(n),
    }
}

fn parse_chunk_size(text: &str) -> Result<usize, String> {
    let bytes = parse_size(text)?;
    let range = chord_node::MIN_CHUNK_BYTES as u64..=chord_node::MAX_CHUNK_BYTES as u64;
    if !range.contains(&bytes) {
        return Err(format!(
            "the chunk size must be {}..={}",
            format_size(*range.start()),
            format_size(*range.end())
        ));
    }
    usize::try_from(bytes).map_err(|e| e.to_string())
}

/// The figures of one setup.
#[derive(Debug)]
struct Row {
    setup: String,
    /// Whether this is the plain HTTP server the others are compared with.
    baseline: bool,
    /// Whether this is the disk alone doing a setup's disk work, and if so
    /// whether its I/O went around the page cache.
    disk_alone: Option<Direct>,
    /// Copies of every key: of a chord-dfs setup, or those whose disk work
    /// a disk-alone row does; `None` for the baseline.
    replicas: Option<usize>,
    upload: Duration,
    download: Duration,
    /// Highest peak resident memory of any node; `None` where no separate
    /// process was measured (the in-process baseline).
    peak_rss: Option<u64>,
    /// How long the graceful stop of the fleet took.
    stop: Option<Duration>,
    /// Where the time of the upload and of the download went (chord-dfs
    /// setups only).
    stages: Option<(Breakdown, Breakdown)>,
}

/// The random source files all setups transfer, each `size` bytes.
#[derive(Debug)]
struct Source {
    files: Vec<SourceFile>,
    size: u64,
}

#[derive(Debug)]
struct SourceFile {
    path: PathBuf,
    /// Its name on the ring, the baseline server and in the downloads.
    name: String,
    sha256: [u8; 32],
}

impl Source {
    fn total(&self) -> u64 {
        self.size * self.files.len() as u64
    }
}

/// Whether the disk alone went around the page cache (O_DIRECT).
#[derive(Clone, Copy, Debug)]
struct Direct(bool);

/// Through what a chord-dfs setup moves the files.
#[derive(Clone, Debug)]
enum Via {
    /// The client library, as `chord-console upload` and `download`.
    Client,
    /// The nodes' HTTP gateways, with this `curl`.
    Gateway(PathBuf),
}

/// Runs the bench and prints its figures.
pub async fn run(args: &TransferArgs, json: bool) -> Result<()> {
    let binary = locate_node_binary()?;
    let work_dir = WorkDir::create("chord-bench-", args.dir.as_deref(), args.keep)?;
    let root = work_dir.path().to_path_buf();

    eprintln!(
        "writing {} file(s) of {} random bytes to {}",
        args.files,
        format_size(args.size),
        root.display()
    );
    let source = write_sources(&root.join("source"), args.files, args.size).await?;
    // The source, and whatever other programs left on this disk for the
    // kernel to write back (a build's binaries, hundreds of MiB), would
    // otherwise go out during some setup, the source over 30 s after it
    // was written, and slow that setup down, by half or more after a build.
    sync_file_system(&root).await?;

    let mut rows = vec![bench_ring(args, &binary, &root, &source, 1, Via::Client).await?];
    match which_curl() {
        Some(curl) => {
            rows.push(bench_ring(args, &binary, &root, &source, 1, Via::Gateway(curl)).await?)
        }
        None => eprintln!("note: no curl on PATH; the gateway setup is left out"),
    }
    rows.push(bench_ring(args, &binary, &root, &source, 3, Via::Client).await?);
    if source.files.len() == 1 {
        rows.extend(bench_disk_alone(args, &root, &source).await?);
    }
    rows.push(bench_baseline(args, &root, &source).await?);

    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report_json(args, &rows))?
        )?;
    } else {
        print_table(args, &rows)?;
    }
    work_dir.finish()
}

/// One chord-dfs setup: a fresh fleet with `replicas` copies per key.
async fn bench_ring(
    args: &TransferArgs,
    binary: &Path,
    root: &Path,
    source: &Source,
    replicas: usize,
    via: Via,
) -> Result<Row> {
    // The setup's name in the table, and in its directories' names.
    let (setup, tag) = match &via {
        Via::Client => (format!("chord-dfs r={replicas}"), format!("r{replicas}")),
        Via::Gateway(_) => (
            format!("r={replicas} curl+gw"),
            format!("r{replicas}-gateway"),
        ),
    };
    let data_root = root.join(format!("ring-{tag}"));
    let mut opts = FleetOptions::new(binary.to_path_buf(), data_root.clone());
    opts.replicas = replicas;
    opts.successors = replicas.max(3);
    let mut fleet = Fleet::new(opts)?;
    eprintln!("{setup}: starting {} nodes", args.nodes);
    let mut entry: Option<String> = None;
    for _ in 0..args.nodes {
        let http = match &via {
            Via::Client => None,
            Via::Gateway(_) => Some(free_port()?),
        };
        let addr = fleet
            .start_with_http(free_port()?, entry.as_deref(), http)
            .await?;
        entry.get_or_insert(addr);
    }
    let entry = entry.context("the fleet has no nodes")?;
    let client = Client::new(
        entry,
        PeerOptions {
            rpc_timeout: RPC_TIMEOUT,
            ..PeerOptions::default()
        },
    )?;
    let waited = wait_converged(&client, &fleet.addrs(), fleet.options().successors).await?;
    eprintln!(
        "{setup}: ring converged after {:.1} s",
        waited.as_secs_f64()
    );

    let pids: Vec<u32> = fleet
        .addrs()
        .iter()
        .filter_map(|a| fleet.node(a).and_then(|n| n.pid()))
        .collect();
    let sampler = RssSampler::start(pids.clone());
    let transfer = TransferOptions {
        chunk_size: args.chunk_size,
        // Several files share the in-flight budget: one chunk each.
        parallel: if source.files.len() > 1 {
            1
        } else {
            args.parallel
        },
        ..TransferOptions::default()
    };
    let deadline = transfer_deadline(source);
    let out_dir = root.join(format!("download-{tag}"));
    tokio::fs::create_dir_all(&out_dir)
        .await
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let gateways: Vec<String> = fleet
        .addrs()
        .iter()
        .filter_map(|a| fleet.node(a).and_then(|n| n.http.clone()))
        .collect();
    let token = fleet.options().token.clone();

    let addrs = fleet.addrs();
    let snapshot = || Snapshot::take(&client, &addrs, &pids);
    let before_upload = snapshot().await?;
    let progress = Progress::new(format!("{setup}: upload"), source.total());
    let uploaded = async {
        match &via {
            Via::Client => {
                let skipped = for_each_file(source, args.parallel, |file| {
                    let (client, transfer, progress) = (&client, &transfer, &progress);
                    async move {
                        let report = client
                            .upload_file(&file.path, &file.name, transfer, &|n| progress.add(n))
                            .await?;
                        Ok::<_, anyhow::Error>(report.chunks_skipped)
                    }
                })
                .await?;
                Ok::<_, anyhow::Error>(skipped.into_iter().sum::<usize>())
            }
            Via::Gateway(curl) => {
                let gateway = gateways.first().context("no node serves a gateway")?;
                let config = curl_uploads(source, gateway, token.as_ref());
                run_curl(curl, &config, args.parallel).await?;
                progress.add(source.total());
                Ok(0)
            }
        }
    };
    let (skipped, upload) = within(deadline, format!("{setup}: the upload"), uploaded).await?;
    let before_download = snapshot().await?;
    // Per MiB for one file, per file for many small ones.
    let per = match source.files.len() {
        1 => Per::MiB(source.total()),
        n => Per::File(n),
    };
    let upload_stages = before_upload.until(&before_download, per, upload);
    eprintln!("{setup}: uploaded in {:.1} s", upload.as_secs_f64());
    if skipped > 0 {
        eprintln!("{setup}: note: {skipped} chunks were already on the ring and not sent");
    }

    let progress = Progress::new(format!("{setup}: download"), source.total());
    let downloaded = async {
        match &via {
            Via::Client => {
                for_each_file(source, args.parallel, |file| {
                    let (client, transfer, progress) = (&client, &transfer, &progress);
                    let out = out_dir.join(&file.name);
                    async move {
                        client
                            .download(&file.name, &out, transfer, &|n| progress.add(n))
                            .await?;
                        Ok::<_, anyhow::Error>(())
                    }
                })
                .await?;
                Ok::<_, anyhow::Error>(())
            }
            Via::Gateway(curl) => {
                // Another node than the one the files went in through.
                let gateway = gateways
                    .get(1)
                    .or(gateways.first())
                    .context("no node serves a gateway")?;
                let config = curl_downloads(source, gateway, &out_dir, token.as_ref());
                run_curl(curl, &config, args.parallel).await?;
                // curl leaves its files in the page cache; the client and
                // the plain server sync theirs before a download counts as
                // done, so these are synced within the time as well.
                for_each_file(source, args.parallel, |file| {
                    let out = out_dir.join(&file.name);
                    async move {
                        tokio::task::spawn_blocking(move || {
                            std::fs::File::open(&out)
                                .and_then(|f| f.sync_all())
                                .with_context(|| format!("cannot sync {}", out.display()))
                        })
                        .await?
                    }
                })
                .await?;
                progress.add(source.total());
                Ok(())
            }
        }
    };
    let ((), download) = within(deadline, format!("{setup}: the download"), downloaded).await?;
    eprintln!("{setup}: downloaded in {:.1} s", download.as_secs_f64());
    let download_stages = before_download.until(&snapshot().await?, per, download);

    let peaks = sampler.finish().await?;
    let peak_rss = peaks.values().map(|p| p.bytes()).max();

    let started = Instant::now();
    fleet.stop_all(STOP_TIMEOUT).await;
    let stop = started.elapsed();
    eprintln!("{setup}: fleet stopped in {:.1} s", stop.as_secs_f64());

    verify(&setup, source, &out_dir).await?;
    if !args.keep {
        remove_quietly(&out_dir, true).await;
        remove_quietly(&data_root, true).await;
    }
    Ok(Row {
        setup,
        baseline: false,
        disk_alone: None,
        replicas: Some(replicas),
        upload,
        download,
        peak_rss,
        stop: Some(stop),
        stages: Some((upload_stages, download_stages)),
    })
}

/// The disk alone, shaped as one file's setups use it: a row for r=1 and
/// one for r=3, each with the download's reads and writes.
async fn bench_disk_alone(args: &TransferArgs, root: &Path, source: &Source) -> Result<Vec<Row>> {
    eprintln!("disk alone: the setups' chunk writes and reads, with nothing else");
    let shape = disk::Shape {
        size: source.total(),
        chunk: args.chunk_size,
        parallel: args.parallel,
    };
    // Six passes over the file's bytes: one copy, its reads, the output's
    // writes, then three copies.
    let deadline = transfer_deadline(source) * 6;
    let measured = disk::measure(root.join("disk-alone"), shape);
    let (alone, took) = within(deadline, "disk alone".to_string(), measured).await?;
    eprintln!("disk alone: done in {:.1} s", took.as_secs_f64());
    let row = |replicas: usize, upload| Row {
        setup: format!("disk alone r={replicas}"),
        baseline: false,
        disk_alone: Some(Direct(alone.direct)),
        replicas: Some(replicas),
        upload,
        download: alone.read_and_write,
        peak_rss: None,
        stop: None,
        stages: None,
    };
    Ok(vec![row(1, alone.write_one), row(3, alone.write_three)])
}

/// How many times the baseline moves the files, back to back; the fastest
/// round of each direction is its figure. On a VM whose freed memory goes
/// back to its host (the CI machine), a server's first pass through the
/// page cache pays for faulting fresh pages in, and how much depends on
/// what ran just before: the same baseline uploaded 1 GiB at 915-1,131
/// MB/s after setups that had filled and freed the cache and at 290-325
/// after setups that had not (see PERFORMANCE.md). Its best round keeps a
/// chord-dfs figure from looking better for the baseline's bad luck.
const BASELINE_ROUNDS: usize = 2;

/// The baseline setup: the same files through a plain HTTP server, best of
/// [`BASELINE_ROUNDS`] rounds each way.
async fn bench_baseline(args: &TransferArgs, root: &Path, source: &Source) -> Result<Row> {
    let setup = "http baseline".to_string();
    let mut best: Option<(Duration, Duration)> = None;
    for round in 1..=BASELINE_ROUNDS {
        let label = format!("{setup} (round {round} of {BASELINE_ROUNDS})");
        // With --keep, the last round's files stay; every round starts empty.
        let keep = args.keep && round == BASELINE_ROUNDS;
        let (upload, download) = baseline_round(args, root, source, &label, keep).await?;
        best = Some(match best {
            None => (upload, download),
            Some((up, down)) => (up.min(upload), down.min(download)),
        });
    }
    let (upload, download) = best.context("the baseline ran no round")?;
    Ok(Row {
        setup,
        baseline: true,
        disk_alone: None,
        replicas: None,
        upload,
        download,
        peak_rss: None,
        stop: None,
        stages: None,
    })
}

/// One round of the baseline, from an empty server to checked downloads
/// (removed unless `keep`); its upload and download times.
async fn baseline_round(
    args: &TransferArgs,
    root: &Path,
    source: &Source,
    setup: &str,
    keep: bool,
) -> Result<(Duration, Duration)> {
    let stored = root.join("http-stored");
    let out_dir = root.join("download-http");
    for dir in [&stored, &out_dir] {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let server = BaselineServer::start(stored.clone()).await?;
    let addr = server.addr();
    let deadline = transfer_deadline(source);
    eprintln!("{setup}: serving on {addr}");

    let uploaded = for_each_file(source, args.parallel, |file| async move {
        http_baseline::upload(addr, &file.path, &file.name).await
    });
    let (_, upload) = within(deadline, format!("{setup}: the upload"), uploaded).await?;
    eprintln!("{setup}: uploaded in {:.1} s", upload.as_secs_f64());

    let downloaded = for_each_file(source, args.parallel, |file| {
        let out = out_dir.join(&file.name);
        async move {
            http_baseline::download(addr, &file.name, &out)
                .await
                .map(drop)
        }
    });
    let (_, download) = within(deadline, format!("{setup}: the download"), downloaded).await?;
    eprintln!("{setup}: downloaded in {:.1} s", download.as_secs_f64());
    server.stop().await?;

    verify(setup, source, &out_dir).await?;
    if !keep {
        remove_quietly(&out_dir, true).await;
        remove_quietly(&stored, true).await;
    }
    Ok((upload, download))
}

/// Runs `transfer` (what `what` names), bounded by `deadline`; returns its
/// result and how long it took.
async fn within<T>(
    deadline: Duration,
    what: String,
    transfer: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Duration)> {
    let started = Instant::now();
    let done = tokio::time::timeout(deadline, transfer)
        .await
        .map_err(|_| anyhow!("{what} took longer than {deadline:?}"))??;
    Ok((done, started.elapsed()))
}

/// Runs `op` on every source file, `parallel` at once; the results in no
/// particular order, or the first error.
async fn for_each_file<'s, T, F, Fut>(source: &'s Source, parallel: usize, op: F) -> Result<Vec<T>>
where
    F: FnMut(&'s SourceFile) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    futures::stream::iter(source.files.iter().map(op))
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await
}

/// The `curl` binary on `PATH`, if there is one.
fn which_curl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("curl"))
        .find(|candidate| candidate.is_file())
}

/// A curl config (see `curl --config`) with one multipart upload per
/// source file to `gateway`'s `/upload`.
fn curl_uploads(source: &Source, gateway: &str, token: Option<&ClusterToken>) -> String {
    let url = format!("http://{gateway}/upload");
    curl_config(
        token,
        source.files.iter().map(|f| {
            vec![
                ("url", url.clone()),
                (
                    "form",
                    format!(
                        "{}=@{};filename={}",
                        chord_node::gateway::UPLOAD_FIELD,
                        f.path.display(),
                        f.name
                    ),
                ),
                ("output", "/dev/null".to_string()),
            ]
        }),
    )
}

/// A curl config with one download per source file from `gateway`, each
/// to its name in `out_dir`.
fn curl_downloads(
    source: &Source,
    gateway: &str,
    out_dir: &Path,
    token: Option<&ClusterToken>,
) -> String {
    curl_config(
        token,
        source.files.iter().map(|f| {
            vec![
                ("url", format!("http://{gateway}/{}", f.name)),
                ("output", out_dir.join(&f.name).display().to_string()),
            ]
        }),
    )
}

/// One curl config with a transfer per item of `transfers`, separated by
/// `next`; each fails on an HTTP error and carries the token if any.
fn curl_config(
    token: Option<&ClusterToken>,
    transfers: impl Iterator<Item = Vec<(&'static str, String)>>,
) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut config = String::new();
    for (i, options) in transfers.enumerate() {
        if i > 0 {
            config.push_str("next\n");
        }
        config.push_str("fail\nsilent\nshow-error\n");
        if let Some(token) = token {
            let header = format!("Authorization: Bearer {}", token.reveal());
            config.push_str(&format!("header = {}\n", quote(&header)));
        }
        for (key, value) in options {
            config.push_str(&format!("{key} = {}\n", quote(&value)));
        }
    }
    config
}

/// Runs `curl` on `config` (fed on stdin), `parallel` transfers at once;
/// an error with curl's own words if any transfer failed.
async fn run_curl(curl: &Path, config: &str, parallel: usize) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(curl)
        .args(["--parallel", "--parallel-max"])
        .arg(parallel.max(1).to_string())
        .args(["--config", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", curl.display()))?;
    let mut stdin = child.stdin.take().context("curl has no stdin")?;
    let config = config.to_string();
    let feed = tokio::spawn(async move {
        let written = stdin.write_all(config.as_bytes()).await;
        drop(stdin);
        written
    });
    let out = child.wait_with_output().await.context("curl")?;
    feed.await
        .map_err(|e| anyhow!("feeding curl failed: {e}"))?
        .context("cannot feed curl its config")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "curl failed ({}): {}",
            out.status,
            // Its progress meter is on stderr too (parallel mode keeps it).
            stderr
                .split(['\r', '\n'])
                .find_map(|l| l.find("curl: (").map(|at| &l[at..]))
                .unwrap_or("no message")
        );
    }
    Ok(())
}

/// Waits until every node's predecessor and first successors are the true
/// ones, so replicas land where they should from the first chunk on.
/// Returns how long that took.
async fn wait_converged(client: &Client, addrs: &[String], successors: usize) -> Result<Duration> {
    let mut truth: Vec<NodeRef> = addrs.iter().cloned().map(NodeRef::from_addr).collect();
    truth.sort_by_key(|n| n.id);
    let started = Instant::now();
    loop {
        let problem = ring_mismatch(client, &truth, successors).await;
        let Some(problem) = problem else {
            return Ok(started.elapsed());
        };
        if started.elapsed() >= CONVERGE_TIMEOUT {
            bail!("the ring did not converge within {CONVERGE_TIMEOUT:?}: {problem}");
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}

/// What is still wrong with the ring's pointers, or `None`.
async fn ring_mismatch(client: &Client, truth: &[NodeRef], successors: usize) -> Option<String> {
    let n = truth.len();
    let want_successors = successors.min(n.saturating_sub(1));
    for (i, node) in truth.iter().enumerate() {
        let info = match client.info(&node.addr).await {
            Ok(info) => info,
            Err(e) => return Some(format!("{} does not answer: {e}", node.addr)),
        };
        let pred = &truth[(i + n - 1) % n];
        if n > 1 && info.predecessor.as_ref().map(|p| &p.addr) != Some(&pred.addr) {
            return Some(format!("{} has the wrong predecessor", node.addr));
        }
        let mut got: Vec<&str> = Vec::new();
        for s in &info.successors {
            if s.addr != node.addr && !got.contains(&s.addr.as_str()) {
                got.push(&s.addr);
            }
        }
        for k in 0..want_successors {
            let want = &truth[(i + 1 + k) % n].addr;
            if got.get(k).copied() != Some(want.as_str()) {
                return Some(format!("{}: successor {k} is not {want} yet", node.addr));
            }
        }
    }
    None
}

/// A port that was free a moment ago (the OS picks it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// How long moving all of `source` one way may take: a fixed allowance,
/// the bytes at a floor speed, and a floor rate of files.
fn transfer_deadline(source: &Source) -> Duration {
    TRANSFER_SLACK
        + Duration::from_secs(source.total() / TRANSFER_FLOOR_BYTES_PER_SEC)
        + Duration::from_secs(source.files.len() as u64 / TRANSFER_FLOOR_FILES_PER_SEC)
}

/// Writes back everything waiting in the page cache of the file system
/// that holds `dir` (syncfs).
async fn sync_file_system(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let handle =
            std::fs::File::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
        nix::unistd::syncfs(&handle)
            .with_context(|| format!("cannot sync the file system of {}", dir.display()))
    })
    .await
    .context("the file system sync failed")?
}

/// Writes `count` files of `size` random bytes in the new directory `dir`.
async fn write_sources(dir: &Path, count: usize, size: u64) -> Result<Source> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::with_capacity(count);
    for i in 0..count {
        let name = if count == 1 {
            FILE_NAME.to_string()
        } else {
            format!("bench-{i:06}.bin")
        };
        files.push(write_random_file(dir.join(&name), name, size).await?);
    }
    Ok(Source { files, size })
}

/// Writes `size` random bytes to `path`, hashing them on the way, one
/// buffer at a time. Random bytes, so no two chunks are equal and
/// content addressing cannot skip any of them.
async fn write_random_file(path: PathBuf, name: String, size: u64) -> Result<SourceFile> {
    tokio::task::spawn_blocking(move || -> Result<SourceFile> {
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(IO_BUFFER, file);
        let mut rng = rand::rng();
        let mut buf = vec![0u8; IO_BUFFER];
        let mut sha = Sha256::new();
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(IO_BUFFER as u64))?;
            let piece = &mut buf[..n];
            rng.fill_bytes(piece);
            sha.update(&*piece);
            out.write_all(piece)
                .with_context(|| format!("cannot write {}", path.display()))?;
            left -= n as u64;
        }
        out.flush()?;
        Ok(SourceFile {
            path,
            name,
            sha256: sha.finalize().into(),
        })
    })
    .await
    .context("the file writer failed")?
}

/// SHA-256 and length of the file at `path`, read one buffer at a time.
async fn sha256_file(path: PathBuf) -> Result<([u8; 32], u64)> {
    tokio::task::spawn_blocking(move || -> Result<([u8; 32], u64)> {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut buf = vec![0u8; IO_BUFFER];
        let mut sha = Sha256::new();
        let mut len = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                return Ok((sha.finalize().into(), len));
            }
            sha.update(&buf[..n]);
            len += n as u64;
        }
    })
    .await
    .context("the hasher failed")?
}

/// Fails unless every file downloaded to `out_dir` has exactly its
/// source's bytes.
async fn verify(setup: &str, source: &Source, out_dir: &Path) -> Result<()> {
    for file in &source.files {
        let (sha, len) = sha256_file(out_dir.join(&file.name)).await?;
        if len != source.size {
            bail!(
                "{setup}: {}: downloaded {len} bytes, uploaded {}",
                file.name,
                source.size
            );
        }
        if sha != file.sha256 {
            bail!(
                "{setup}: {}: the downloaded bytes differ from the uploaded ones (SHA-256)",
                file.name
            );
        }
    }
    eprintln!(
        "{setup}: {} download(s) verified by SHA-256",
        source.files.len()
    );
    Ok(())
}

/// Frees disk space between setups; a failure only costs space, which the
/// final removal of the bench directory retries.
async fn remove_quietly(path: &Path, dir: bool) {
    let result = if dir {
        tokio::fs::remove_dir_all(path).await
    } else {
        tokio::fs::remove_file(path).await
    };
    if let Err(e) = result {
        eprintln!("warning: cannot remove {}: {e}", path.display());
    }
}

/// Plain progress lines for one transfer, every [`PROGRESS_STEP_PERCENT`].
struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
}

impl Progress {
    fn new(label: String, total: u64) -> Progress {
        Progress {
            label,
            total: total.max(1),
            done: AtomicU64::new(0),
        }
    }

    fn add(&self, bytes: u64) {
        let before = self.done.fetch_add(bytes, Ordering::Relaxed);
        let step = |b: u64| b.saturating_mul(100) / self.total / PROGRESS_STEP_PERCENT;
        let now = before + bytes;
        if step(now) > step(before) && now < self.total {
            eprintln!("{}: {}%", self.label, step(now) * PROGRESS_STEP_PERCENT);
        }
    }
}

/// Throughput in MB/s (10^6 bytes per second).
fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(f64::EPSILON)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// The baseline's row.
fn baseline(rows: &[Row]) -> Option<&Row> {
    rows.iter().find(|r| r.baseline)
}

/// How a chord-dfs setup's speeds compare with the disk alone doing its
/// disk work in the same run (upload, download); `None` for other rows
/// and where the disk alone was not measured.
fn of_disk_alone(row: &Row, rows: &[Row]) -> Option<(f64, f64)> {
    if row.disk_alone.is_some() {
        return None;
    }
    let replicas = row.replicas?;
    let disk = rows
        .iter()
        .find(|r| r.disk_alone.is_some() && r.replicas == Some(replicas))?;
    Some((
        ratio(row.upload, disk.upload),
        ratio(row.download, disk.download),
    ))
}

/// Files per second.
fn per_s(files: usize, took: Duration) -> f64 {
    files as f64 / took.as_secs_f64().max(f64::EPSILON)
}

/// How a time compares with the baseline's as a speed ratio (1.0 = as
/// fast; 0.5 = half as fast).
fn ratio(took: Duration, baseline: Duration) -> f64 {
    baseline.as_secs_f64() / took.as_secs_f64().max(f64::EPSILON)
}

fn print_table(args: &TransferArgs, rows: &[Row]) -> Result<()> {
    let what = if args.files == 1 {
        format!("{} file", format_size(args.size))
    } else {
        format!("{} files of {}", args.files, format_size(args.size))
    };
    outln!(
        "{what}, {} nodes per ring, {} chunks, {} in flight (MB = 10^6 bytes; ratio = speed / baseline's)",
        args.nodes,
        format_size(args.chunk_size as u64),
        args.parallel
    )?;
    let many = args.files > 1;
    if many {
        outln!(
            "{:<16} {:>10} {:>12} {:>6} {:>10} {:>14} {:>6} {:>18}",
            "setup",
            "up files/s",
            "upload MB/s",
            "ratio",
            "down fil/s",
            "download MB/s",
            "ratio",
            "peak node RSS MiB"
        )?;
    } else {
        outln!(
            "{:<16} {:>12} {:>6} {:>8} {:>14} {:>6} {:>8} {:>18}",
            "setup",
            "upload MB/s",
            "ratio",
            "of disk",
            "download MB/s",
            "ratio",
            "of disk",
            "peak node RSS MiB"
        )?;
    }
    let base = baseline(rows);
    let total = args.size * args.files as u64;
    for row in rows {
        let rss = row
            .peak_rss
            .map_or_else(|| "-".to_string(), |b| format!("{:.1}", mib(b)));
        let (up, down) = base.map_or((f64::NAN, f64::NAN), |b| {
            (ratio(row.upload, b.upload), ratio(row.download, b.download))
        });
        if many {
            outln!(
                "{:<16} {:>10.1} {:>12.1} {:>6.2} {:>10.1} {:>14.1} {:>6.2} {:>18}",
                row.setup,
                per_s(args.files, row.upload),
                mb_per_s(total, row.upload),
                up,
                per_s(args.files, row.download),
                mb_per_s(total, row.download),
                down,
                rss
            )?;
        } else {
            let (up_disk, down_disk) = of_disk_alone(row, rows).map_or_else(
                || ("-".to_string(), "-".to_string()),
                |(up, down)| (format!("{up:.2}"), format!("{down:.2}")),
            );
            outln!(
                "{:<16} {:>12.1} {:>6.2} {:>8} {:>14.1} {:>6.2} {:>8} {:>18}",
                row.setup,
                mb_per_s(total, row.upload),
                up,
                up_disk,
                mb_per_s(total, row.download),
                down,
                down_disk,
                rss
            )?;
        }
    }
    if let Some(Direct(direct)) = rows.iter().find_map(|r| r.disk_alone) {
        outln!(
            "disk alone: the chunk files of one copy or three written as the nodes write them, and one copy read back"
        )?;
        outln!(
            "while a download's file is written, with nothing else{}: about the best a setup can do on this disk;",
            if direct { "" } else { " (through the page cache: this file system takes no direct I/O)" }
        )?;
        outln!("of disk = speed / the disk alone's for the same copies, in this run")?;
    }
    outln!()?;
    let per = if args.files == 1 { "MiB" } else { "file" };
    outln!("where the time went, µs per {per} (stage times add every thread's; see `chord_node::stages`):")?;
    for row in rows {
        if let Some((up, down)) = &row.stages {
            outln!("{} upload:   {}", row.setup, up.line())?;
            outln!("{} download: {}", row.setup, down.line())?;
        }
    }
    Ok(())
}

fn report_json(args: &TransferArgs, rows: &[Row]) -> Value {
    let base = baseline(rows);
    let total = args.size * args.files as u64;
    let setups: Vec<Value> = rows
        .iter()
        .map(|row| {
            let of_disk = of_disk_alone(row, rows);
            json!({
                "upload_ratio": base.map(|b| ratio(row.upload, b.upload)),
                "download_ratio": base.map(|b| ratio(row.download, b.download)),
                "setup": row.setup,
                "baseline": row.baseline,
                "disk_alone": row.disk_alone.is_some(),
                "upload_of_disk_alone": of_disk.map(|(up, _)| up),
                "download_of_disk_alone": of_disk.map(|(_, down)| down),
                "direct_io": row.disk_alone.map(|Direct(direct)| direct),
                "upload_secs": row.upload.as_secs_f64(),
                "upload_mb_per_s": mb_per_s(total, row.upload),
                "upload_files_per_s": per_s(args.files, row.upload),
                "download_secs": row.download.as_secs_f64(),
                "download_mb_per_s": mb_per_s(total, row.download),
                "download_files_per_s": per_s(args.files, row.download),
                "peak_node_rss_mib": row.peak_rss.map(mib),
                "stop_secs": row.stop.map(|d| d.as_secs_f64()),
                "stages": row.stages.as_ref().map(|(up, down)| json!({
                    "upload": up.json(),
                    "download": down.json(),
                })),
            })
        })
        .collect();
    json!({
        "size_bytes": args.size,
        "files": args.files,
        "nodes": args.nodes,
        "chunk_size_bytes": args.chunk_size,
        "parallel": args.parallel,
        "setups": setups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_is_bounded() {
        assert_eq!(parse_chunk_size("4MiB"), Ok(4 << 20));
        assert!(parse_chunk_size("1KiB").is_err());
        assert!(parse_chunk_size("1GiB").is_err());
        assert!(parse_positive_size("0").is_err());
        assert_eq!(parse_positive_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn throughput_in_decimal_megabytes() {
        assert!((mb_per_s(10_000_000, Duration::from_secs(2)) - 5.0).abs() < 1e-9);
        let source = Source {
            files: Vec::new(),
            size: 1 << 30,
        };
        assert_eq!(transfer_deadline(&source), TRANSFER_SLACK);
    }
}
