//! `chord-node`: the headless daemon. One per machine (or per port locally).
//!
//! SIGTERM or SIGINT makes the node leave gracefully: it tells its neighbours
//! before exiting. Failure to start or join exits non-zero with one line.
//!
//! `--discovery static` (the default) takes the ring from the flags: `--join`
//! or create. `--discovery aws` runs on an Auto Scaling group's instance: the
//! identity comes from the instance metadata service, the ring from the
//! group's members (see `chord_node::discovery`), and the node also publishes
//! its metrics to CloudWatch, re-joins the others if it finds itself alone,
//! and drains when the group's terminating lifecycle hook holds it, then exits.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chord_node::auth::ClusterToken;
use chord_node::config::{Config, DEFAULT_PORT};
use chord_node::discovery::aws::{self as aws_discovery, AwsContext};
use chord_node::discovery::lifecycle::{self, LifecycleOptions};
use chord_node::metrics::{self, Publisher};
use chord_node::node::Node;
use chord_node::peer::PeerPool;
use chord_node::store::Store;
use chord_node::tls::TlsFiles;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// How long the AWS-mode tasks get to stop after the node has: they stop at
/// their next await on cancel, and one AWS call is bounded well below this.
const AWS_TASKS_STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// How the node finds its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Discovery {
    /// From the flags: `--join PEER`, or create a new ring.
    Static,
    /// From the instance's Auto Scaling group (IMDS, Auto Scaling, EC2).
    Aws,
}

#[derive(Debug, Parser)]
#[command(name = "chord-node", version, about = "A chord-dfs ring node")]
struct Args {
    /// Address the gRPC (and MessagePack-RPC) server binds.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// host:port other nodes reach this node at (default: the listen address).
    /// The node id is SHA-1 of this string.
    #[arg(long)]
    advertise: Option<String>,
    /// A live node to join through. Without it, the node creates a new ring.
    #[arg(long, conflicts_with = "idle")]
    join: Option<String>,
    /// Start in no ring and wait for a MessagePack-RPC `create` or `join` on
    /// the listen port, as the course's nodes do. gRPC calls are refused
    /// with UNAVAILABLE until then.
    #[arg(long)]
    idle: bool,
    /// Directory for chunks and manifests.
    #[arg(long, default_value = "chord-data")]
    data_dir: PathBuf,
    /// Length of the successor list (r).
    #[arg(long, default_value_t = 3)]
    successors: usize,
    /// Copies kept of every chunk and manifest.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Serve the HTTP gateway on this address (off without it).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Milliseconds between stabilize rounds.
    #[arg(long, default_value_t = 500)]
    stabilize_ms: u64,
    /// Milliseconds between fix_fingers steps.
    #[arg(long, default_value_t = 200)]
    fix_fingers_ms: u64,
    /// Milliseconds between check_predecessor rounds.
    #[arg(long, default_value_t = 1000)]
    check_predecessor_ms: u64,
    /// Milliseconds between repair rounds.
    #[arg(long, default_value_t = 3000)]
    repair_ms: u64,
    /// Cap on the repair loop's push rate, in MiB/s.
    #[arg(long, default_value_t = 64)]
    repair_mib_per_sec: u64,
    /// Keys a repair round takes from the index at a time: a round holds
    /// one page in memory, some 150 bytes a key.
    #[arg(long, default_value_t = 8_192)]
    repair_page_keys: usize,
    /// Chunk data the scrubber re-hashes per second, in MiB/s.
    #[arg(long, default_value_t = 8)]
    scrub_mib_per_sec: u64,
    /// Milliseconds between rounds of the chunk collector.
    #[arg(long, default_value_t = 60_000)]
    gc_ms: u64,
    /// Seconds a chunk must go unwritten and unasked-for before it may be
    /// collected: well above the longest upload (its chunks wait for its
    /// manifest).
    #[arg(long, default_value_t = 6 * 3600)]
    gc_grace_secs: u64,
    /// Most chunks the collector removes per second.
    #[arg(long, default_value_t = 500)]
    gc_chunks_per_sec: u64,
    /// Seconds a tombstone is kept once every holder has it (Cassandra's
    /// gc_grace). A node away longer re-checks its files with the ring.
    #[arg(long, default_value_t = 10 * 24 * 3600)]
    tombstone_grace_secs: u64,
    /// File holding the cluster token every gRPC call must carry (default:
    /// $CHORD_TOKEN_FILE, else $CHORD_TOKEN; none: nothing is checked).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve gRPC and the gateway over TLS only, with this certificate
    /// chain (PEM, leaf first); needs --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed every node's certificate: peers are reached
    /// over TLS and must show a certificate it signed for their address.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Serve the gateway's GET and HEAD without the token (writes and
    /// deletes always need it when one is set).
    #[arg(long)]
    public_reads: bool,
    /// Largest gateway request body in MiB (0: no limit); larger gets 413.
    #[arg(long, default_value_t = 64 * 1024)]
    http_max_body_mib: u64,
    /// Most files one gateway upload may carry; more gets 413.
    #[arg(long, default_value_t = 64)]
    http_max_parts: usize,
    /// Gateway uploads running at once; one more gets 429.
    #[arg(long, default_value_t = 16)]
    http_max_uploads: usize,
    /// MiB of chunk data incoming PutChunk calls may hold at once (client
    /// writes and replica copies each); past it a call waits one RPC
    /// deadline, then is refused as busy.
    #[arg(long, default_value_t = 256)]
    chunk_buffer_mib: usize,
    /// Most entries in one ListKeys or ListFiles answer, below the built-in
    /// caps (for tests: a small store then spans many pages).
    #[arg(long, hide = true)]
    list_page_cap: Option<usize>,
    /// Seconds a gateway connection may make no progress (headers not
    /// complete, an upload body with no new bytes, a download not read, an
    /// idle kept-alive connection); then 408 or the connection is closed.
    #[arg(long, default_value_t = 30)]
    http_idle_timeout_secs: u64,
    /// Seconds one gateway request may take until its answer starts (an
    /// upload: its whole body); past it, 408.
    #[arg(long, default_value_t = 3600)]
    http_request_timeout_secs: u64,
    /// Seconds a gRPC call may run before its answer starts: a backstop
    /// behind every caller's own deadline (a Drain answers within it).
    #[arg(long, default_value_t = 300)]
    grpc_request_timeout_secs: u64,
    /// gRPC calls one connection may have running at once; one more is
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 256)]
    grpc_calls_per_connection: usize,
    /// Deadline of one outbound call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    rpc_timeout_ms: u64,
    /// Seconds to keep trying the --join peer before giving up (in AWS mode,
    /// also how long to wait for another instance to create the ring).
    #[arg(long, default_value_t = 20)]
    join_timeout_secs: u64,
    /// How the node finds its ring.
    #[arg(long, value_enum, default_value_t = Discovery::Static)]
    discovery: Discovery,
    /// AWS mode: instance metadata endpoint (default: the SDK's, which honours
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT).
    #[arg(long)]
    imds_endpoint: Option<String>,
    /// AWS mode: CloudWatch namespace of the node's metrics.
    #[arg(long, default_value = metrics::DEFAULT_NAMESPACE)]
    metrics_namespace: String,
    /// AWS mode: seconds between two metric publications.
    #[arg(long, default_value_t = metrics::DEFAULT_INTERVAL.as_secs())]
    metrics_interval_secs: u64,
    /// AWS mode: name of the group's terminating lifecycle hook.
    #[arg(long, default_value = lifecycle::DEFAULT_HOOK)]
    lifecycle_hook: String,
    /// AWS mode: seconds between two reads of the target lifecycle state.
    #[arg(long, default_value_t = lifecycle::DEFAULT_POLL_INTERVAL.as_secs())]
    lifecycle_poll_secs: u64,
    /// AWS mode: seconds between two checks for being alone in the ring.
    #[arg(long, default_value_t = aws_discovery::DEFAULT_REJOIN_CHECK_INTERVAL.as_secs())]
    rejoin_check_secs: u64,
}

/// The AWS-mode settings, taken from the flags before they become a [`Config`].
#[derive(Debug)]
struct AwsArgs {
    imds_endpoint: Option<String>,
    advertise: Option<String>,
    metrics_namespace: String,
    metrics_interval: Duration,
    lifecycle_hook: String,
    lifecycle_poll: Duration,
    rejoin_check: Duration,
}

impl AwsArgs {
    fn from_args(args: &Args) -> anyhow::Result<AwsArgs> {
        if args.join.is_some() || args.idle {
            anyhow::bail!(
                "--join and --idle cannot be used with --discovery aws: the group names the ring"
            );
        }
        for (name, secs) in [
            ("--metrics-interval-secs", args.metrics_interval_secs),
            ("--lifecycle-poll-secs", args.lifecycle_poll_secs),
            ("--rejoin-check-secs", args.rejoin_check_secs),
        ] {
            if secs == 0 {
                anyhow::bail!("{name} must be above zero");
            }
        }
        if args.metrics_namespace.trim().is_empty() {
            anyhow::bail!("--metrics-namespace must not be empty");
        }
        Ok(AwsArgs {
            imds_endpoint: args.imds_endpoint.clone(),
            advertise: args.advertise.clone(),
            metrics_namespace: args.metrics_namespace.clone(),
            metrics_interval: Duration::from_secs(args.metrics_interval_secs),
            lifecycle_hook: args.lifecycle_hook.clone(),
            lifecycle_poll: Duration::from_secs(args.lifecycle_poll_secs),
            rejoin_check: Duration::from_secs(args.rejoin_check_secs),
        })
    }
}

impl Args {
    /// The TLS files, when given (clap makes sure all three are).
    fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }

    fn into_config(self) -> Config {
        Config {
            advertise: self.advertise.unwrap_or_else(|| self.listen.to_string()),
            listen: self.listen,
            join: self.join,
            idle: self.idle,
            data_dir: self.data_dir,
            successors: self.successors,
            replicas: self.replicas,
            http: self.http,
            stabilize_interval: Duration::from_millis(self.stabilize_ms),
            fix_fingers_interval: Duration::from_millis(self.fix_fingers_ms),
            check_predecessor_interval: Duration::from_millis(self.check_predecessor_ms),
            repair_interval: Duration::from_millis(self.repair_ms),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
            join_timeout: Duration::from_secs(self.join_timeout_secs),
            repair_bytes_per_sec: self.repair_mib_per_sec.saturating_mul(1 << 20),
            repair_page_keys: self.repair_page_keys,
            scrub_bytes_per_sec: self.scrub_mib_per_sec.saturating_mul(1 << 20),
            gc_interval: Duration::from_millis(self.gc_ms),
            gc_grace: Duration::from_secs(self.gc_grace_secs),
            gc_chunks_per_sec: self.gc_chunks_per_sec,
            tombstone_grace: Duration::from_secs(self.tombstone_grace_secs),
            public_reads: self.public_reads,
            http_max_body_bytes: self.http_max_body_mib.saturating_mul(1 << 20),
            http_max_parts: self.http_max_parts,
            http_max_uploads: self.http_max_uploads,
            chunk_buffer_bytes: self.chunk_buffer_mib.saturating_mul(1 << 20),
            list_page_cap: self.list_page_cap,
            http_idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            http_request_timeout: Duration::from_secs(self.http_request_timeout_secs),
            grpc_request_timeout: Duration::from_secs(self.grpc_request_timeout_secs),
            grpc_calls_per_connection: self.grpc_calls_per_connection,
            ..Config::default()
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal; log files and journald get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chord-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    // One token for the server's check and for every call this process
    // makes (the gateway's, the AWS-mode probes').
    let token = ClusterToken::load(args.token_file.as_deref())?;
    chord_node::auth::set_process_token(token.clone());
    // Likewise one CA (and never $CHORD_TLS_CA: a node's TLS is its flags).
    let tls = args.tls_files().map(|files| files.load()).transpose()?;
    chord_node::tls::set_process_ca(tls.as_ref().map(|tls| tls.ca.clone()));
    let aws = match args.discovery {
        Discovery::Aws => Some(AwsArgs::from_args(&args)?),
        Discovery::Static => None,
    };
    let mut config = args.into_config();
    config.token = token;
    config.tls = tls;
    if let Some(aws) = aws {
        return run_aws(config, aws).await;
    }
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    chord_node::server::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// AWS mode: finds the ring through the group, serves the node with the
/// metrics publisher, the alone check and the lifecycle watcher beside it,
/// and stops when signalled or when the group's scale-in has been drained.
async fn run_aws(mut config: Config, aws: AwsArgs) -> anyhow::Result<()> {
    let ctx = AwsContext::connect(aws.imds_endpoint.as_deref())
        .await
        .context("AWS discovery")?;
    let port = config.listen.port();
    config.advertise = ctx
        .advertise_addr(aws.advertise.as_deref(), port)
        .await
        .context("AWS discovery")?;
    let peers = PeerPool::new(config.peer_options());
    config.join = aws_discovery::find_bootstrap(&ctx, &peers, port, config.join_timeout)
        .await
        .context("AWS discovery")?;
    config.validate()?;
    // Bound only now: while undecided, a peer probing us gets a quick
    // "refused" rather than a connection nobody answers.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .context("opening the store")??;
    let node = match config.join.clone() {
        None => Node::create(config, store),
        Some(_) => Node::join(config, store).await?,
    };
    info!(id = %node.me().id, addr = %node.me().addr, instance = %ctx.identity.instance_id, "node is up (AWS mode)");

    let ctx = Arc::new(ctx);
    let stop_tasks = CancellationToken::new();
    let drained = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(metrics::publish(
        node.clone(),
        ctx.clients.clone(),
        aws.metrics_namespace,
        Publisher {
            group: ctx.group.clone(),
            instance_id: ctx.identity.instance_id.clone(),
        },
        aws.metrics_interval,
        stop_tasks.clone(),
    ));
    tasks.spawn(aws_discovery::watch_alone(
        node.clone(),
        ctx.clone(),
        port,
        aws.rejoin_check,
        stop_tasks.clone(),
    ));
    tasks.spawn(lifecycle::watch(
        node.clone(),
        ctx.clone(),
        LifecycleOptions {
            hook: aws.lifecycle_hook,
            poll: aws.lifecycle_poll,
            drain_round: node.config().handoff_timeout,
        },
        stop_tasks.clone(),
        drained.clone(),
    ));
    let shutdown = async {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = drained.cancelled() => info!("drained for the group's scale-in: stopping"),
        }
    };
    let served = chord_node::server::run(node, listener, shutdown).await;
    stop_tasks.cancel();
    if !chord_node::join_within(&mut tasks, AWS_TASKS_STOP_TIMEOUT).await {
        warn!("AWS tasks did not stop in time; aborted them");
    }
    served?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C will stop the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
