//! `bench transfer`: upload and download speed of one large file, and the
//! memory the nodes need for it, beside a plain HTTP baseline, in one run.
//!
//! The setups, each measured the same way on the same random file:
//! 1. a fresh local fleet of `--nodes` real `chord-node` processes with one
//!    copy of every key,
//! 2. a fresh fleet with three copies,
//! 3. a plain HTTP server on the same disk ([`super::http_baseline`]).
//!
//! Upload and download are timed separately; the downloaded file is then
//! compared with the source by SHA-256 (outside the timing), so a fast but
//! wrong transfer fails the bench instead of winning it. The nodes' resident
//! memory is sampled while they work, and their `VmHWM` read before they
//! stop ([`super::rss`]). Every wait is bounded; the fleets kill their
//! processes if anything fails, and the temporary directory (source file,
//! node data, downloads) is removed at the end unless `--keep` is given.
//! Figures go to stdout; progress lines go to stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chord_node::chord::NodeRef;
use chord_node::client::{Client, TransferOptions};
use chord_node::peer::PeerOptions;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http_baseline::{self, BaselineServer, IO_BUFFER};
use super::rss::RssSampler;
use super::size::{format_size, parse_size};
use crate::fleet::{locate_node_binary, Fleet, FleetOptions, STOP_TIMEOUT};

/// Fewest nodes: a ring with three copies of every key needs three nodes
/// for the copies to land on distinct processes.
pub const MIN_NODES: u64 = 3;
/// Most nodes: every node is a process on this machine.
pub const MAX_NODES: u64 = 64;

/// Name the file is stored under on the ring.
const FILE_NAME: &str = "bench-transfer.bin";

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

/// Deadline of one call to a node from the bench's client: generous, since
/// the machine is busy with the nodes themselves.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the progress line of a transfer is printed, in percent.
const PROGRESS_STEP_PERCENT: u64 = 25;

#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    /// Size of the test file: 4096, 10MB, 100MiB, 1GiB, 1.5GiB ...
    #[arg(long, default_value = "256MiB", value_parser = parse_positive_size)]
    pub size: u64,
    /// Nodes in each chord-dfs fleet (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(MIN_NODES..=MAX_NODES))]
    pub nodes: usize,
    /// Chunk size of the chord-dfs uploads.
    #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
    pub chunk_size: usize,
    /// Chunks in flight at once during a chord-dfs transfer.
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
    upload: Duration,
    download: Duration,
    /// Highest peak resident memory of any node; `None` where no separate
    /// process was measured (the in-process baseline).
    peak_rss: Option<u64>,
    /// How long the graceful stop of the fleet took.
    stop: Option<Duration>,
}

/// The random source file all setups transfer.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    size: u64,
    sha256: [u8; 32],
}

/// Runs the bench and prints its figures.
pub async fn run(args: &TransferArgs, json: bool) -> Result<()> {
    let binary = locate_node_binary()?;
    let mut builder = tempfile::Builder::new();
    builder.prefix("chord-bench-");
    let temp = match &args.dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .context("cannot create the bench directory")?;
    // With --keep the directory outlives even a failed run, for inspection.
    let (root, guard) = if args.keep {
        (temp.keep(), None)
    } else {
        (temp.path().to_path_buf(), Some(temp))
    };

    eprintln!(
        "writing {} of random bytes to {}",
        format_size(args.size),
        root.display()
    );
    let source = write_random_file(root.join("source.bin"), args.size).await?;

    let mut rows = Vec::new();
    for replicas in [1, 3] {
        rows.push(bench_ring(args, &binary, &root, &source, replicas).await?);
    }
    rows.push(bench_baseline(&root, &source).await?);

    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(args, &rows))?
        );
    } else {
        print_table(args, &rows);
    }
    match guard {
        Some(temp) => temp.close().context("cannot remove the bench directory")?,
        None => eprintln!("kept the bench data in {}", root.display()),
    }
    Ok(())
}

/// One chord-dfs setup: a fresh fleet with `replicas` copies per key.
async fn bench_ring(
    args: &TransferArgs,
    binary: &Path,
    root: &Path,
    source: &Source,
    replicas: usize,
) -> Result<Row> {
    let setup = format!("chord-dfs r={replicas}");
    let data_root = root.join(format!("ring-r{replicas}"));
    let mut opts = FleetOptions::new(binary.to_path_buf(), data_root.clone());
    opts.replicas = replicas;
    opts.successors = replicas.max(3);
    let mut fleet = Fleet::new(opts)?;
    eprintln!("{setup}: starting {} nodes", args.nodes);
    let mut entry: Option<String> = None;
    for _ in 0..args.nodes {
        let addr = fleet.start(free_port()?, entry.as_deref()).await?;
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
    let sampler = RssSampler::start(pids);
    let transfer = TransferOptions {
        chunk_size: args.chunk_size,
        parallel: args.parallel,
        ..TransferOptions::default()
    };
    let deadline = transfer_deadline(source.size);

    let progress = Progress::new(format!("{setup}: upload"), source.size);
    let started = Instant::now();
    let report = tokio::time::timeout(
        deadline,
        client.upload_file(&source.path, FILE_NAME, &transfer, &|n| progress.add(n)),
    )
    .await
    .map_err(|_| anyhow!("{setup}: the upload took longer than {deadline:?}"))??;
    let upload = started.elapsed();
    eprintln!(
        "{setup}: uploaded {} chunks in {:.1} s",
        report.chunks,
        upload.as_secs_f64()
    );
    if report.chunks_skipped > 0 {
        eprintln!(
            "{setup}: note: {} chunks were already on the ring and not sent",
            report.chunks_skipped
        );
    }

    let out = root.join(format!("download-r{replicas}.bin"));
    let progress = Progress::new(format!("{setup}: download"), source.size);
    let started = Instant::now();
    tokio::time::timeout(
        deadline,
        client.download(FILE_NAME, &out, &transfer, &|n| progress.add(n)),
    )
    .await
    .map_err(|_| anyhow!("{setup}: the download took longer than {deadline:?}"))??;
    let download = started.elapsed();
    eprintln!("{setup}: downloaded in {:.1} s", download.as_secs_f64());

    let peaks = sampler.finish().await?;
    let peak_rss = peaks.values().map(|p| p.bytes()).max();

    let started = Instant::now();
    fleet.stop_all(STOP_TIMEOUT).await;
    let stop = started.elapsed();
    eprintln!("{setup}: fleet stopped in {:.1} s", stop.as_secs_f64());

    verify(&setup, source, &out).await?;
    if !args.keep {
        remove_quietly(&out, false).await;
        remove_quietly(&data_root, true).await;
    }
    Ok(Row {
        setup,
        upload,
        download,
        peak_rss,
        stop: Some(stop),
    })
}

/// The baseline setup: the same file through a plain HTTP server.
async fn bench_baseline(root: &Path, source: &Source) -> Result<Row> {
    let setup = "http baseline".to_string();
    let stored = root.join("http-stored.bin");
    let out = root.join("download-http.bin");
    let server = BaselineServer::start(stored.clone()).await?;
    let deadline = transfer_deadline(source.size);
    eprintln!("{setup}: serving on {}", server.addr());

    let started = Instant::now();
    tokio::time::timeout(deadline, http_baseline::upload(server.addr(), &source.path))
        .await
        .map_err(|_| anyhow!("{setup}: the upload took longer than {deadline:?}"))??;
    let upload = started.elapsed();
    eprintln!("{setup}: uploaded in {:.1} s", upload.as_secs_f64());

    let started = Instant::now();
    tokio::time::timeout(deadline, http_baseline::download(server.addr(), &out))
        .await
        .map_err(|_| anyhow!("{setup}: the download took longer than {deadline:?}"))??;
    let download = started.elapsed();
    eprintln!("{setup}: downloaded in {:.1} s", download.as_secs_f64());
    server.stop().await?;

    verify(&setup, source, &out).await?;
    Ok(Row {
        setup,
        upload,
        download,
        peak_rss: None,
        stop: None,
    })
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

/// How long one transfer of `size` bytes may take.
fn transfer_deadline(size: u64) -> Duration {
    TRANSFER_SLACK + Duration::from_secs(size / TRANSFER_FLOOR_BYTES_PER_SEC)
}

/// Writes `size` random bytes to `path`, hashing them on the way, one
/// buffer at a time. Random bytes, so no two chunks are equal and
/// content addressing cannot skip any of them.
async fn write_random_file(path: PathBuf, size: u64) -> Result<Source> {
    tokio::task::spawn_blocking(move || -> Result<Source> {
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
        Ok(Source {
            path,
            size,
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

/// Fails unless the file at `out` has exactly the source's bytes.
async fn verify(setup: &str, source: &Source, out: &Path) -> Result<()> {
    let (sha, len) = sha256_file(out.to_path_buf()).await?;
    if len != source.size {
        bail!("{setup}: downloaded {len} bytes, uploaded {}", source.size);
    }
    if sha != source.sha256 {
        bail!("{setup}: the downloaded bytes differ from the uploaded ones (SHA-256)");
    }
    eprintln!(
        "{setup}: download verified (SHA-256 {})",
        &hex::encode(sha)[..16]
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

/// The baseline's row: the one without node processes.
fn baseline(rows: &[Row]) -> Option<&Row> {
    rows.iter().find(|r| r.peak_rss.is_none())
}

/// How a time compares with the baseline's as a speed ratio (1.0 = as
/// fast; 0.5 = half as fast).
fn ratio(took: Duration, baseline: Duration) -> f64 {
    baseline.as_secs_f64() / took.as_secs_f64().max(f64::EPSILON)
}

fn print_table(args: &TransferArgs, rows: &[Row]) {
    println!(
        "{} file, {} nodes per ring, {} chunks, {} in flight (MB = 10^6 bytes; ratio = speed / baseline's)",
        format_size(args.size),
        args.nodes,
        format_size(args.chunk_size as u64),
        args.parallel
    );
    println!(
        "{:<16} {:>12} {:>6} {:>14} {:>6} {:>18}",
        "setup", "upload MB/s", "ratio", "download MB/s", "ratio", "peak node RSS MiB"
    );
    let base = baseline(rows);
    for row in rows {
        let rss = row
            .peak_rss
            .map_or_else(|| "-".to_string(), |b| format!("{:.1}", mib(b)));
        let (up, down) = base.map_or((f64::NAN, f64::NAN), |b| {
            (ratio(row.upload, b.upload), ratio(row.download, b.download))
        });
        println!(
            "{:<16} {:>12.1} {:>6.2} {:>14.1} {:>6.2} {:>18}",
            row.setup,
            mb_per_s(args.size, row.upload),
            up,
            mb_per_s(args.size, row.download),
            down,
            rss
        );
    }
}

fn report_json(args: &TransferArgs, rows: &[Row]) -> Value {
    let base = baseline(rows);
    let setups: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "upload_ratio": base.map(|b| ratio(row.upload, b.upload)),
                "download_ratio": base.map(|b| ratio(row.download, b.download)),
                "setup": row.setup,
                "upload_secs": row.upload.as_secs_f64(),
                "upload_mb_per_s": mb_per_s(args.size, row.upload),
                "download_secs": row.download.as_secs_f64(),
                "download_mb_per_s": mb_per_s(args.size, row.download),
                "peak_node_rss_mib": row.peak_rss.map(mib),
                "stop_secs": row.stop.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    json!({
        "size_bytes": args.size,
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
        assert!(transfer_deadline(1 << 30) > TRANSFER_SLACK);
    }
}
