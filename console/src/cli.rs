//! Headless commands: clap definitions and what each command does.
//!
//! Every command prints human text by default and one JSON document with
//! `--json`; a failure returns an error that the binary prints as one line
//! and turns into a non-zero exit code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_node::chord::{Id, NodeRef};
use chord_node::client::{
    checksum_of_file, download_path, file_json, upload_size, Client, RingNode, RingStatus,
    TransferOptions,
};
use chord_node::peer::PeerOptions;
use chord_node::store::{check_manifest_fits, validate_name, Manifest};
use clap::{Args, Parser, Subcommand};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::progress::Progress;

#[derive(Debug, Parser)]
#[command(
    name = "chord-console",
    version,
    about = "Operate a chord-dfs ring: with no command, a live TUI of the ring"
)]
pub struct Cli {
    /// Node to enter the ring through (commands default to 127.0.0.1:5057;
    /// the TUI without it starts a local fleet of its own).
    #[arg(long, global = true, env = "CHORD_PEER")]
    pub peer: Option<String>,
    /// Print one JSON document instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline of one call to a node, in milliseconds.
    #[arg(long, global = true, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// File holding the ring's cluster token (default: $CHORD_TOKEN_FILE,
    /// else $CHORD_TOKEN). Every call carries it, and a local fleet's nodes
    /// get it too.
    #[arg(long, global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// Reach the nodes over TLS, trusting this CA (PEM) to have signed their
    /// certificates.
    #[arg(long, global = true, env = chord_node::tls::CA_ENV)]
    pub tls_ca: Option<PathBuf>,
    /// A local fleet this console starts (`local up`, the TUI) serves TLS
    /// with this certificate (PEM); needs --tls-key and --tls-ca.
    #[arg(long, global = true, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub tui: crate::tui::TuiArgs,
    /// With no command, the TUI opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The peer headless commands use when none is given.
pub const DEFAULT_PEER: &str = "127.0.0.1:5057";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Walk the ring by successor pointers and show every node.
    Ring,
    /// Find the node that owns a key (or a file name).
    Lookup(LookupArgs),
    /// Run a fleet of chord-node processes on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Measure the ring.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Store a file on the ring.
    Upload(UploadArgs),
    /// Fetch a file from the ring.
    Download(DownloadArgs),
    /// List the files on the ring.
    Ls,
    /// Delete a file from the ring.
    Rm(RmArgs),
    /// The checksum an upload gives a local file (BLAKE3 over its chunks'
    /// BLAKE3 hashes), to compare with what `upload --json` or the gateway
    /// said. Reads the file only; talks to no node.
    Checksum(ChecksumArgs),
    /// Per-node store counters.
    Status,
    /// The ring on an AWS Auto Scaling group (the SDK's usual settings;
    /// AWS_ENDPOINT_URL sends every call elsewhere, e.g. to an emulator).
    #[command(subcommand)]
    Aws(crate::aws::AwsCommand),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// Name on the ring (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = chord_node::DEFAULT_CHUNK_BYTES)]
    pub chunk_size: usize,
    /// Chunks in flight at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The file's name on the ring.
    pub name: String,
    /// Where to write it (default: the name, in the current directory; a
    /// directory gets the file under its name; `-` streams it to stdout; a
    /// device such as /dev/null is written to in place).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Chunks fetched ahead at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Debug, Args)]
pub struct ChecksumArgs {
    /// The local file.
    pub file: PathBuf,
    /// The chunk size it was (or will be) uploaded with, in bytes.
    #[arg(long, default_value_t = chord_node::DEFAULT_CHUNK_BYTES)]
    pub chunk_size: usize,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The file's name on the ring.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The key as 40 hex digits.
    #[arg(long, conflicts_with = "name")]
    pub key: Option<String>,
    /// A file name; its key is SHA-1 of the name.
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start N nodes on loopback joined into one ring; Ctrl-C stops them.
    Up(LocalUpArgs),
}

/// How `local up` spreads its nodes over addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// Every node on 127.0.0.1; node i on base-port + i, HTTP on
    /// http-base-port + i.
    Ports,
    /// Node i on its own address, host-base + i (127.0.0.1, 127.0.0.2, ...),
    /// gRPC and MessagePack-RPC on base-port (5057), HTTP on
    /// http-base-port (5058): one instance per node, as on AWS.
    PerHost,
}

#[derive(Debug, Args)]
pub struct LocalUpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Ports (default): every node on 127.0.0.1 on its own ports; per-host:
    /// every node on its own loopback address with the same ports.
    #[arg(long, value_enum, default_value_t = LayoutArg::Ports)]
    pub layout: LayoutArg,
    /// Per-host layout: the address of node 0; node i listens on this + i.
    #[arg(long, default_value_t = crate::fleet::LOCALHOST)]
    pub host_base: std::net::Ipv4Addr,
    /// gRPC port of node 0; node i listens on base + i (every node on this
    /// port in the per-host layout).
    #[arg(long, default_value_t = crate::fleet::DEFAULT_GRPC_BASE)]
    pub base_port: u16,
    /// Where the nodes keep their data (default: a folder under the temp dir).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Copies of every key.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// HTTP gateway port of node 0; node i serves on http-base + i. This
    /// range must not overlap the gRPC range. Default 8057; in the per-host
    /// layout every node's gateway port, default 5058.
    #[arg(long)]
    pub http_base_port: Option<u16>,
    /// Run the nodes without HTTP gateways.
    #[arg(long)]
    pub no_http: bool,
    /// Extra flag for every node (repeatable), e.g. `--node-arg=--repair-ms=1000`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    #[command(flatten)]
    pub scaling: AutoscaleArgs,
}

/// `local up --autoscale`: the fleet grows and shrinks under the same
/// target-tracking policy as an Auto Scaling group.
#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// Scale the fleet with its load between --min and --max. Prints each
    /// decision as a line (one JSON object per line with --json).
    #[arg(long)]
    pub autoscale: bool,
    /// Fewest nodes the autoscaler keeps.
    #[arg(long, default_value_t = 2, requires = "autoscale")]
    pub min: usize,
    /// Most nodes the autoscaler starts; ports are reserved for this many.
    #[arg(long, default_value_t = 8, requires = "autoscale")]
    pub max: usize,
    /// Target per node. With --metric requests: gRPC requests per second per
    /// node, counting every call a node serves (client calls, calls
    /// forwarded by other nodes, replication and ring maintenance), so one
    /// small upload is several node requests and an idle node still serves
    /// a few maintenance calls a second. With --metric bytes: the fraction
    /// of --capacity-bytes stored per node (0 to 1).
    #[arg(long, default_value_t = 200.0, requires = "autoscale")]
    pub target: f64,
    /// What to track.
    #[arg(long, value_enum, default_value_t = MetricArg::Requests, requires = "autoscale")]
    pub metric: MetricArg,
    /// Disk each node may fill, for --metric bytes (e.g. 1GiB).
    #[arg(long, default_value = "1GiB", value_parser = crate::bench::parse_size, requires = "autoscale")]
    pub capacity_bytes: u64,
    /// Seconds a new node serves before its load counts.
    #[arg(long, default_value_t = 30, requires = "autoscale")]
    pub warmup_secs: u64,
    /// Seconds the load must stay 10% under target before one node is
    /// removed (and between two removals, counted from the end of the
    /// last drain). Far shorter than AWS's 300 s default, so a local fleet
    /// of 6 is back to 2 within five minutes even when drains are slow.
    #[arg(long, default_value_t = 30, requires = "autoscale")]
    pub scale_in_cooldown_secs: u64,
    /// Seconds between two looks at the load.
    #[arg(long, default_value_t = 5, requires = "autoscale")]
    pub interval_secs: u64,
    /// Seconds after a join or leave during which no other change starts,
    /// even before repair shows bytes moving.
    #[arg(long, default_value_t = 10, requires = "autoscale")]
    pub settle_secs: u64,
    /// Seconds a drained node may take to hand its keys off; past it the
    /// removal gives up and the node keeps running.
    #[arg(long, default_value_t = 120, requires = "autoscale")]
    pub drain_deadline_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricArg {
    /// gRPC requests per second per node.
    Requests,
    /// Stored bytes per node as a fraction of --capacity-bytes.
    Bytes,
}

/// gRPC and HTTP ports for `n` local nodes: node i gets gRPC `base + i` and
/// HTTP `http_base + i`. Overlapping ranges are an error.
pub fn local_ports(n: usize, base: u16, http_base: Option<u16>) -> Result<Vec<(u16, Option<u16>)>> {
    let layout = crate::fleet::PortLayout::new(base, http_base, n)?;
    Ok(layout.all().iter().map(|s| (s.grpc, s.http)).collect())
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Hop count and latency of random lookups from random nodes.
    Lookups(BenchLookupsArgs),
    /// Upload and download speed and node memory, beside a plain HTTP baseline.
    Transfer(crate::bench::transfer::TransferArgs),
    /// A paced, mixed load of small uploads and downloads spread over the
    /// ring's nodes (to drive auto scaling); prints achieved rate, errors,
    /// latency, and the node requests per second it caused.
    Load(crate::bench::load::LoadArgs),
    /// Time to draw one TUI frame of a fixture ring, beside a small ring.
    Render(crate::bench::render::RenderArgs),
    /// Uploads and downloads checked by SHA-256 on a local fleet while nodes
    /// are killed, restarted, added and made to leave (at most R-1 down
    /// between two settled states); then every file is read back. Exits
    /// non-zero if any file was lost or corrupted.
    Chaos(crate::bench::chaos::ChaosArgs),
}

#[derive(Debug, Args)]
pub struct BenchLookupsArgs {
    /// How many lookups.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
}

impl Cli {
    /// The peer headless commands enter through.
    pub fn peer(&self) -> &str {
        self.peer.as_deref().unwrap_or(DEFAULT_PEER)
    }

    /// The TLS files of a local fleet this console starts, if it serves TLS.
    pub fn fleet_tls(&self) -> Option<chord_node::tls::TlsFiles> {
        Some(chord_node::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::new(
            self.peer().to_string(),
            PeerOptions {
                rpc_timeout: Duration::from_millis(self.timeout_ms),
                ..PeerOptions::default()
            },
        )?)
    }
}

/// Runs one headless command, or the TUI when there is none.
pub async fn run(cli: Cli) -> Result<()> {
    let Some(command) = &cli.command else {
        let timeout = Duration::from_millis(cli.timeout_ms);
        return crate::tui::run(cli.peer.clone(), timeout, cli.tui.clone(), cli.fleet_tls()).await;
    };
    match command {
        Command::Ring => ring(&cli).await,
        Command::Lookup(args) => lookup(&cli, args).await,
        Command::Local(LocalCommand::Up(args)) => local_up(&cli, args).await,
        Command::Bench(BenchCommand::Lookups(args)) => bench_lookups(&cli, args).await,
        Command::Bench(BenchCommand::Transfer(args)) => {
            crate::bench::transfer::run(args, cli.json).await
        }
        Command::Bench(BenchCommand::Load(args)) => {
            crate::bench::load::run(cli.peer(), args, cli.json).await
        }
        Command::Bench(BenchCommand::Render(args)) => crate::bench::render::run(args, cli.json),
        Command::Bench(BenchCommand::Chaos(args)) => crate::bench::chaos::run(args, cli.json).await,
        Command::Upload(args) => upload(&cli, args).await,
        Command::Download(args) => download(&cli, args).await,
        Command::Ls => ls(&cli).await,
        Command::Rm(args) => rm(&cli, args).await,
        Command::Checksum(args) => checksum(&cli, args).await,
        Command::Status => status(&cli).await,
        Command::Aws(cmd) => crate::aws::run(&cli, cmd).await,
    }
}

fn print_json(value: &Value) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

pub fn node_json(node: &NodeRef) -> Value {
    json!({ "addr": node.addr, "id": node.id.to_hex() })
}

/// The `ring --json` document; its keys are a contract scripts rely on.
pub fn ring_json(nodes: &[RingNode]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "addr": n.info.node.addr,
                "id": n.info.node.id.to_hex(),
                "predecessor": n.info.predecessor.as_ref().map(|p| p.addr.clone()),
                "successors": n.info.successors.iter().map(|s| s.addr.clone()).collect::<Vec<_>>(),
                "fingers": n.distinct_fingers().iter().map(|f| f.addr.clone()).collect::<Vec<_>>(),
                "uptime_secs": n.info.uptime_secs,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

async fn ring(cli: &Cli) -> Result<()> {
    let nodes = cli.client()?.ring().await?;
    if cli.json {
        return print_json(&ring_json(&nodes));
    }
    outln!(
        "{:<3} {:<22} {:<10} {:<22} {:<7} successors",
        "#",
        "addr",
        "id",
        "predecessor",
        "fingers"
    )?;
    for (i, n) in nodes.iter().enumerate() {
        let pred = n.info.predecessor.as_ref().map_or("-", |p| p.addr.as_str());
        let succs: Vec<&str> = n.info.successors.iter().map(|s| s.addr.as_str()).collect();
        outln!(
            "{:<3} {:<22} {:<10} {:<22} {:<7} {}",
            i,
            n.info.node.addr,
            n.info.node.id.short(),
            pred,
            n.distinct_fingers().len(),
            succs.join(" ")
        )?;
    }
    outln!("{} nodes", nodes.len())?;
    Ok(())
}

async fn lookup(cli: &Cli, args: &LookupArgs) -> Result<()> {
    let key = match (&args.key, &args.name) {
        (Some(hex), _) => hex.parse::<Id>()?,
        (None, Some(name)) => Id::hash(name.as_bytes()),
        (None, None) => bail!("give --key <40 hex> or a name"),
    };
    let (owner, hops) = cli.client()?.lookup(&key).await?;
    if cli.json {
        return print_json(
            &json!({ "key": key.to_hex(), "owner": node_json(&owner), "hops": hops }),
        );
    }
    outln!(
        "key   {key}\nowner {} ({})\nhops  {hops}",
        owner.addr,
        owner.id
    )?;
    Ok(())
}

async fn local_up(cli: &Cli, args: &LocalUpArgs) -> Result<()> {
    let scaling = &args.scaling;
    let (layout, default_http) = match args.layout {
        LayoutArg::Ports => (crate::fleet::Layout::Ports, crate::fleet::DEFAULT_HTTP_BASE),
        LayoutArg::PerHost => (
            crate::fleet::Layout::PerHost {
                first: args.host_base,
            },
            crate::fleet::PER_HOST_HTTP_PORT,
        ),
    };
    if args.layout == LayoutArg::Ports && args.host_base != crate::fleet::LOCALHOST {
        bail!("--host-base applies to --layout per-host only");
    }
    let opts = crate::fleet::up::UpOptions {
        nodes: args.nodes,
        layout,
        grpc_base: args.base_port,
        http_base: (!args.no_http).then_some(args.http_base_port.unwrap_or(default_http)),
        slots: if scaling.autoscale {
            args.nodes.max(scaling.max)
        } else {
            args.nodes
        },
        data_root: args.data_root.clone(),
        replicas: args.replicas,
        node_args: args.node_args.clone(),
        tls: cli.fleet_tls(),
        json: cli.json,
    };
    if !scaling.autoscale {
        return crate::fleet::up::run(&opts).await;
    }
    let policy = crate::scaling::policy::PolicyConfig {
        metric: match scaling.metric {
            MetricArg::Requests => crate::scaling::policy::MetricKind::Requests,
            MetricArg::Bytes => crate::scaling::policy::MetricKind::Bytes {
                capacity_bytes: scaling.capacity_bytes,
            },
        },
        target: scaling.target,
        min: scaling.min,
        max: scaling.max,
        warmup_ms: scaling.warmup_secs.saturating_mul(1000),
        scale_in_cooldown_ms: scaling.scale_in_cooldown_secs.saturating_mul(1000),
    };
    policy.validate().map_err(anyhow::Error::msg)?;
    if !(scaling.min..=scaling.max).contains(&args.nodes) {
        bail!(
            "--nodes {} is outside --min {} ..= --max {}",
            args.nodes,
            scaling.min,
            scaling.max
        );
    }
    if scaling.interval_secs == 0 {
        bail!("--interval-secs must be at least 1");
    }
    let controller = crate::scaling::ControllerOptions {
        policy,
        interval: Duration::from_secs(scaling.interval_secs),
        settle: Duration::from_secs(scaling.settle_secs),
    };
    crate::fleet::up::run_autoscaled(
        &opts,
        controller,
        Duration::from_secs(scaling.drain_deadline_secs),
    )
    .await
}

async fn upload(cli: &Cli, args: &UploadArgs) -> Result<()> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "{} has no usable file name; give --name",
                    args.file.display()
                )
            })?,
    };
    // All refused before the progress bar starts, as the upload would.
    validate_name(&name)?;
    let size = upload_size(&args.file)?;
    chord_node::check_chunk_size(args.chunk_size)?;
    check_manifest_fits(&name, size, args.chunk_size as u64)?;
    let opts = TransferOptions {
        chunk_size: args.chunk_size,
        parallel: args.parallel,
        ..TransferOptions::default()
    };
    let progress = Progress::new(&format!("upload {name}"), size, cli.json);
    let started = Instant::now();
    let report = cli
        .client()?
        .upload_file(&args.file, &name, &opts, &progress)
        .await?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    if cli.json {
        return print_json(&json!({
            "name": report.name, "size": report.size, "chunks": report.chunks,
            "chunks_skipped": report.chunks_skipped, "version": report.version,
            report.checksum.name(): report.checksum.to_hex(), "seconds": secs,
        }));
    }
    outln!(
        "uploaded {} ({} bytes, {} chunks, {} already on the ring) in {secs:.2} s, {:.1} MB/s",
        report.name,
        report.size,
        report.chunks,
        report.chunks_skipped,
        mb_per_sec(report.size, secs)
    )?;
    Ok(())
}

async fn download(cli: &Cli, args: &DownloadArgs) -> Result<()> {
    let client = cli.client()?;
    let manifest = client.manifest(&args.name).await?;
    // Only `-o -` means stdout: a file named `-` goes, by default, to a
    // file of that name, as any other name does.
    let to_stdout = args.output.as_deref() == Some(std::path::Path::new("-"));
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let opts = TransferOptions {
        parallel: args.parallel,
        ..TransferOptions::default()
    };
    if to_stdout {
        return download_to_stdout(&client, &manifest, &opts).await;
    }
    // Refused before the progress bar starts, as the download would.
    download_path(&out, &manifest.name)?;
    let progress = Progress::new(&format!("download {}", args.name), manifest.size, cli.json);
    let started = Instant::now();
    let report = client
        .download_to(&manifest, &out, &opts, &progress)
        .await?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    if cli.json {
        return print_json(&json!({
            "name": report.name, "size": report.size, "chunks": report.chunks,
            "version": report.version, "path": report.path, "seconds": secs,
            report.checksum.name(): report.checksum.to_hex(),
        }));
    }
    outln!(
        "downloaded {} to {} ({} bytes, {} verified) in {secs:.2} s, {:.1} MB/s",
        report.name,
        report.path.display(),
        report.size,
        report.checksum.label(),
        mb_per_sec(report.size, secs)
    )?;
    Ok(())
}

/// Streams a file to stdout (`-o -`), for pipes. Each chunk is checked
/// against its key as it arrives; if the whole file's checksum does not match
/// at the end, the command fails so the pipe's consumer can tell.
async fn download_to_stdout(
    client: &Client,
    manifest: &Manifest,
    opts: &TransferOptions,
) -> Result<()> {
    let replicas = client.replicas().await? as usize;
    let mut stdout = tokio::io::stdout();
    client
        .write_to(manifest, &mut stdout, replicas, opts, &|_| {})
        .await?;
    Ok(())
}

fn mb_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

async fn ls(cli: &Cli) -> Result<()> {
    let files = cli.client()?.list().await?;
    if cli.json {
        let files: Vec<Value> = files.iter().map(file_json).collect();
        return print_json(&json!({ "files": files }));
    }
    for f in &files {
        outln!("{:>14}  {:>4} chunks  {}", f.size, f.chunks, f.name)?;
    }
    outln!("{} files", files.len())?;
    Ok(())
}

async fn checksum(cli: &Cli, args: &ChecksumArgs) -> Result<()> {
    let (file, chunk_size) = (args.file.clone(), args.chunk_size);
    let (checksum, size) =
        tokio::task::spawn_blocking(move || checksum_of_file(&file, chunk_size)).await??;
    if cli.json {
        return print_json(&json!({
            "path": args.file, "size": size, "chunk_size": chunk_size,
            checksum.name(): checksum.to_hex(),
        }));
    }
    outln!("{}  {}", checksum.to_hex(), args.file.display())?;
    Ok(())
}

async fn rm(cli: &Cli, args: &RmArgs) -> Result<()> {
    let version = cli.client()?.remove(&args.name).await?;
    if cli.json {
        return print_json(&json!({ "name": args.name, "deleted": true, "version": version }));
    }
    outln!("deleted {}", args.name)?;
    Ok(())
}

/// The `status --json` document; its keys are a contract scripts rely on.
/// `unreachable` lists the nodes the ring names that did not answer.
pub fn status_json(status: &RingStatus) -> Value {
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            let s = &n.stats;
            json!({
                "addr": n.node.addr, "id": n.node.id.to_hex(),
                "chunks": s.chunks, "manifests": s.manifests, "tombstones": s.tombstones,
                "bytes": s.bytes, "requests": s.requests, "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out, "repair_bytes": s.repair_bytes,
                "corrupt_chunks": s.corrupt_chunks,
                "manifest_log_bytes": s.manifest_log_bytes,
                "gc_collected_bytes": s.gc_collected_bytes,
                "gc_collectable_bytes": s.gc_collectable_bytes,
                "tombstones_expired": s.tombstones_expired,
                "syncing": s.syncing,
            })
        })
        .collect();
    let unreachable: Vec<Value> = status
        .silent
        .iter()
        .map(|n| json!({ "addr": n.addr, "id": n.id.to_hex() }))
        .collect();
    json!({ "nodes": nodes, "unreachable": unreachable })
}

async fn status(cli: &Cli) -> Result<()> {
    let status = cli.client()?.status().await?;
    if cli.json {
        return print_json(&status_json(&status));
    }
    let nodes = &status.nodes;
    outln!(
        "{:<22} {:<10} {:>7} {:>9} {:>14} {:>10} {:>14} {:>14} {:>14}",
        "addr",
        "id",
        "chunks",
        "manifests",
        "bytes",
        "requests",
        "repair bytes",
        "collected",
        "collectable"
    )?;
    for n in nodes {
        let s = &n.stats;
        outln!(
            "{:<22} {:<10} {:>7} {:>9} {:>14} {:>10} {:>14} {:>14} {:>14}{}",
            n.node.addr,
            n.node.id.short(),
            s.chunks,
            s.manifests,
            s.bytes,
            s.requests,
            s.repair_bytes,
            s.gc_collected_bytes,
            s.gc_collectable_bytes,
            if s.syncing {
                "  syncing after a long absence"
            } else {
                ""
            }
        )?;
    }
    for n in &status.silent {
        outln!("{:<22} {:<10} does not answer", n.addr, n.id.short())?;
    }
    let sum = |f: fn(&chord_proto::pb::StoreStats) -> u64| -> u64 {
        nodes.iter().map(|n| f(&n.stats)).sum()
    };
    outln!(
        "{} nodes{}, {} bytes stored, {} bytes of manifest log; {} bytes collected, {} collectable, {} tombstones expired",
        nodes.len(),
        match status.silent.len() {
            0 => String::new(),
            silent => format!(" answering, {silent} not"),
        },
        sum(|s| s.bytes),
        sum(|s| s.manifest_log_bytes),
        sum(|s| s.gc_collected_bytes),
        sum(|s| s.gc_collectable_bytes),
        sum(|s| s.tombstones_expired)
    )?;
    Ok(())
}

/// Completes on Ctrl-C, SIGTERM or SIGHUP, so the fleet is always stopped.
/// (Watching starts when this is first polled; to watch from an earlier
/// moment, use [`crate::fleet::up::watch_stop`].)
pub async fn stop_signal() -> Result<()> {
    crate::fleet::up::watch_stop()?.await;
    Ok(())
}

/// Mean, median and 99th percentile of a sample.
pub(crate) fn summary(mut xs: Vec<f64>) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (mean, at(0.5), at(0.99))
}

/// The true owner of `key` among `ids`: the first id at or after it.
pub fn true_owner(sorted: &[Id], key: &Id) -> Option<Id> {
    sorted
        .iter()
        .find(|id| *id >= key)
        .or_else(|| sorted.first())
        .copied()
}

async fn bench_lookups(cli: &Cli, args: &BenchLookupsArgs) -> Result<()> {
    let client = cli.client()?;
    let nodes = client.ring().await?;
    if nodes.is_empty() {
        bail!("the ring has no nodes");
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.info.node.addr.clone()).collect();
    let mut sorted: Vec<Id> = nodes.iter().map(|n| n.info.node.id).collect();
    sorted.sort();
    // Connect to every node first, so the figures are steady-state lookups
    // and not TCP and HTTP/2 handshakes.
    for addr in &addrs {
        client.peers().ping(addr).await.ok();
    }
    let mut rng = rand::rng();
    let (mut hops, mut millis, mut wrong, mut failed) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for _ in 0..args.count {
        let key = Id::from_array(rng.random());
        let from = addrs.choose(&mut rng).context("no nodes")?;
        let t = Instant::now();
        match client.lookup_from(from, &key).await {
            Ok((owner, h)) => {
                millis.push(t.elapsed().as_secs_f64() * 1e3);
                hops.push(f64::from(h));
                if Some(owner.id) != true_owner(&sorted, &key) {
                    wrong += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    let n = nodes.len();
    let paper = 0.5 * (n as f64).log2();
    let (h_mean, h_p50, h_p99) = summary(hops);
    let (l_mean, l_p50, l_p99) = summary(millis);
    if cli.json {
        return print_json(&json!({
            "nodes": n, "lookups": args.count, "failed": failed, "wrong_owner": wrong,
            "hops": { "mean": h_mean, "p50": h_p50, "p99": h_p99 },
            "latency_ms": { "mean": l_mean, "p50": l_p50, "p99": l_p99 },
            "paper_mean_hops": paper,
        }));
    }
    outln!(
        "{n} nodes, {} lookups ({failed} failed, {wrong} wrong owner)",
        args.count
    )?;
    outln!("{:<12} {:>8} {:>8} {:>8}", "", "mean", "p50", "p99")?;
    outln!(
        "{:<12} {:>8.2} {:>8.1} {:>8.1}",
        "hops",
        h_mean,
        h_p50,
        h_p99
    )?;
    outln!(
        "{:<12} {:>8.2} {:>8.2} {:>8.2}",
        "latency ms",
        l_mean,
        l_p50,
        l_p99
    )?;
    outln!(
        "{:<12} {:>8.2}   (Chord paper: ½·log2 N)",
        "paper hops",
        paper
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_owner_wraps() {
        let ids: Vec<Id> = [10u8, 20, 30]
            .iter()
            .map(|b| {
                let mut a = [0u8; 20];
                a[19] = *b;
                Id::from_array(a)
            })
            .collect();
        let key = |b: u8| {
            let mut a = [0u8; 20];
            a[19] = b;
            Id::from_array(a)
        };
        assert_eq!(true_owner(&ids, &key(15)), Some(ids[1]));
        assert_eq!(true_owner(&ids, &key(20)), Some(ids[1]));
        assert_eq!(true_owner(&ids, &key(31)), Some(ids[0]));
        assert_eq!(true_owner(&ids, &key(0)), Some(ids[0]));
        assert_eq!(true_owner(&[], &key(0)), None);
    }

    #[test]
    fn local_ports_are_two_disjoint_ranges() {
        let ports = local_ports(3, 5057, Some(8057)).unwrap();
        assert_eq!(
            ports,
            vec![(5057, Some(8057)), (5058, Some(8058)), (5059, Some(8059))]
        );
        let plain = local_ports(2, 6000, None).unwrap();
        assert_eq!(plain, vec![(6000, None), (6001, None)]);
        assert!(local_ports(3, 65534, None).is_err());
        let overlap = local_ports(3, 5057, Some(5058)).unwrap_err().to_string();
        assert!(overlap.contains("overlap"), "{overlap}");
    }

    #[test]
    fn summary_percentiles() {
        let (mean, p50, p99) = summary((1..=100).map(f64::from).collect());
        assert_eq!(mean, 50.5);
        assert!((50.0..=51.0).contains(&p50));
        assert!(p99 >= 98.0);
    }
}
