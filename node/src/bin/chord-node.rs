//! `chord-node`: the headless daemon. One per machine (or per port locally).
//!
//! SIGTERM or SIGINT makes the node leave gracefully: it tells its neighbours
//! before exiting. Failure to start or join exits non-zero with one line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chord_node::config::{Config, DEFAULT_PORT};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "chord-node", version, about = "A chord-dfs ring node")]
struct Args {
    /// Address the gRPC server binds.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// host:port other nodes reach this node at (default: the listen address).
    /// The node id is SHA-1 of this string.
    #[arg(long)]
    advertise: Option<String>,
    /// A live node to join through. Without it, the node creates a new ring.
    #[arg(long)]
    join: Option<String>,
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
    /// Chunk data the scrubber re-hashes per second, in MiB/s.
    #[arg(long, default_value_t = 8)]
    scrub_mib_per_sec: u64,
    /// Deadline of one outbound call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    rpc_timeout_ms: u64,
    /// Seconds to keep trying the --join peer before giving up.
    #[arg(long, default_value_t = 20)]
    join_timeout_secs: u64,
}

impl Args {
    fn into_config(self) -> Config {
        Config {
            advertise: self.advertise.unwrap_or_else(|| self.listen.to_string()),
            listen: self.listen,
            join: self.join,
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
            scrub_bytes_per_sec: self.scrub_mib_per_sec.saturating_mul(1 << 20),
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
    let config = args.into_config();
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    chord_node::server::serve(config, listener, shutdown_signal()).await?;
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
