//! The local fleet: real `chord-node` processes on loopback addresses
//! (127.0.0.1, or one 127.x.y.z per node in the per-host layout).
//!
//! A [`Fleet`] owns its child processes: each is killed when the fleet is
//! dropped, so neither a panicking test nor a crashed console leaves nodes
//! behind. Graceful stops send SIGTERM and wait, bounded, before SIGKILL.
//! The integration tests use the same fleet as `chord-console local up`.
//!
//! [`PortLayout`] says which ports the i-th node uses; [`LocalCapacity`]
//! grows and shrinks a fleet through the [`crate::capacity::Capacity`] seam.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chord_node::peer::{PeerOptions, PeerPool};
use chord_node::tls::TlsFiles;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

mod capacity;
pub mod check;
mod ports;
pub mod up;

pub use capacity::{LocalCapacity, LocalLimits};
pub use ports::{
    free_port_range, Layout, PortLayout, Slot, DEFAULT_GRPC_BASE, DEFAULT_HTTP_BASE, LOCALHOST,
    PER_HOST_HTTP_PORT,
};

/// How long a node may take to answer its first ping after it starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to leave gracefully before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Settings shared by every node of a fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The `chord-node` binary.
    pub binary: PathBuf,
    /// Each node gets `<data_root>/<port>` as its data directory.
    pub data_root: PathBuf,
    /// Replicas per key.
    pub replicas: usize,
    /// Successor list length.
    pub successors: usize,
    /// Extra flags passed to every node (maintenance intervals, say).
    pub extra_args: Vec<String>,
    /// Turn on each node's HTTP gateway on `port + http_offset`.
    pub http_offset: Option<u16>,
    /// The cluster token the nodes require (passed in their environment);
    /// by default this process's own.
    pub token: Option<chord_node::auth::ClusterToken>,
    /// Serve TLS with these files (passed as flags; the fleet's own calls
    /// trust their CA). `None`: plaintext.
    pub tls: Option<TlsFiles>,
}

impl FleetOptions {
    pub fn new(binary: PathBuf, data_root: PathBuf) -> FleetOptions {
        FleetOptions {
            binary,
            data_root,
            replicas: 3,
            successors: 3,
            extra_args: Vec::new(),
            http_offset: None,
            token: chord_node::auth::process_token(),
            tls: None,
        }
    }

    /// The scheme of the nodes' gateway URLs.
    pub fn http_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// One running node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub addr: String,
    pub port: u16,
    pub http: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl NodeProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

#[derive(Debug)]
pub struct Fleet {
    opts: FleetOptions,
    nodes: BTreeMap<String, NodeProcess>,
    probe: PeerPool,
}

impl Fleet {
    pub fn new(opts: FleetOptions) -> Result<Fleet> {
        if !opts.binary.is_file() {
            bail!(
                "chord-node binary not found at {} (build it with `cargo build --bins`)",
                opts.binary.display()
            );
        }
        std::fs::create_dir_all(&opts.data_root)
            .with_context(|| format!("cannot create {}", opts.data_root.display()))?;
        let ca = opts.tls.as_ref().map(TlsFiles::trusted_ca).transpose()?;
        let probe = PeerPool::new(PeerOptions {
            rpc_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            token: opts.token.clone(),
            ca,
        });
        Ok(Fleet {
            opts,
            nodes: BTreeMap::new(),
            probe,
        })
    }

    pub fn options(&self) -> &FleetOptions {
        &self.opts
    }

    /// How the fleet calls its nodes: with their token and, under TLS,
    /// their CA.
    pub fn peer_options(&self) -> &PeerOptions {
        self.probe.options()
    }

    /// Addresses of the running nodes, sorted.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn node(&self, addr: &str) -> Option<&NodeProcess> {
        self.nodes.get(addr)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Starts a node on `port` (joining through `join`, or creating a ring)
    /// and waits until it answers. Its gateway, if the fleet has
    /// `http_offset`, listens on `port + http_offset`.
    pub async fn start(&mut self, port: u16, join: Option<&str>) -> Result<String> {
        let http = self.opts.http_offset.map(|off| port.saturating_add(off));
        self.start_with_http(port, join, http).await
    }

    /// Like [`Fleet::start`], with the gateway on an explicit port (or off).
    pub async fn start_with_http(
        &mut self,
        port: u16,
        join: Option<&str>,
        http_port: Option<u16>,
    ) -> Result<String> {
        let slot = Slot {
            host: LOCALHOST,
            grpc: port,
            http: http_port,
        };
        self.start_slot(&slot, join).await
    }

    /// Where a node on `slot` keeps its data: a node started again on the
    /// same slot finds its keys there.
    pub fn data_dir(&self, slot: &Slot) -> PathBuf {
        // 127.0.0.1 nodes keep the port as their folder name, as always.
        let dir_name = if slot.host == LOCALHOST {
            slot.grpc.to_string()
        } else {
            format!("{}-{}", slot.host, slot.grpc)
        };
        self.opts.data_root.join(dir_name)
    }

    /// Starts a node on `slot`'s host and ports (joining through `join`, or
    /// creating a ring) and waits until it answers.
    pub async fn start_slot(&mut self, slot: &Slot, join: Option<&str>) -> Result<String> {
        let port = slot.grpc;
        let addr = slot.grpc_addr();
        if self.nodes.contains_key(&addr) {
            bail!("a node already runs on {addr}");
        }
        let data_dir = self.data_dir(slot);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log = data_dir.join("node.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut cmd = Command::new(&self.opts.binary);
        cmd.arg("--listen")
            .arg(&addr)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--replicas")
            .arg(self.opts.replicas.to_string())
            .arg("--successors")
            .arg(self.opts.successors.to_string());
        if let Some(join) = join {
            cmd.arg("--join").arg(join);
        }
        let http = slot.http_addr();
        if let Some(http) = &http {
            cmd.arg("--http").arg(http);
        }
        if let Some(token) = &self.opts.token {
            // The environment, not argv: argv is readable by every user.
            cmd.env(chord_node::auth::TOKEN_ENV, token.reveal())
                .env_remove(chord_node::auth::TOKEN_FILE_ENV);
        }
        if let Some(tls) = &self.opts.tls {
            cmd.args(tls.node_args());
        }
        let (malloc_var, malloc_value) = chord_node::MALLOC_ENV;
        if std::env::var_os(malloc_var).is_none() {
            cmd.env(malloc_var, malloc_value);
        }
        cmd.args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.opts.binary.display()))?;
        self.nodes.insert(
            addr.clone(),
            NodeProcess {
                addr: addr.clone(),
                port,
                http,
                data_dir,
                log,
                child,
            },
        );
        self.wait_ready(&addr, READY_TIMEOUT).await?;
        Ok(addr)
    }

    /// Waits until the node at `addr` answers a ping, or its process exits.
    pub async fn wait_ready(&mut self, addr: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.probe.ping(addr).await.is_ok() {
                return Ok(());
            }
            let node = self
                .nodes
                .get_mut(addr)
                .ok_or_else(|| anyhow!("no node {addr} in this fleet"))?;
            if let Some(status) = node.child.try_wait()? {
                let log = node.log.clone();
                self.nodes.remove(addr);
                bail!(
                    "node {addr} exited with {status} before it was ready: {}",
                    last_line(&log)
                );
            }
            if Instant::now() >= deadline {
                bail!("node {addr} did not answer within {timeout:?}");
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Forgets nodes whose process has exited on its own; returns each one's
    /// address with the last line of its log, so the caller can say why.
    pub fn reap(&mut self) -> Vec<(String, String)> {
        let exited: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|(addr, node)| {
                matches!(node.child.try_wait(), Ok(Some(_)) | Err(_)).then(|| addr.clone())
            })
            .collect();
        exited
            .into_iter()
            .filter_map(|addr| {
                let node = self.nodes.remove(&addr)?;
                Some((addr, last_line(&node.log)))
            })
            .collect()
    }

    /// `kill -9`: the node vanishes without a word to its neighbours.
    pub async fn kill(&mut self, addr: &str) -> Result<()> {
        let mut node = self
            .nodes
            .remove(addr)
            .ok_or_else(|| anyhow!("no node {addr} in this fleet"))?;
        node.child.kill().await.context("kill")?;
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for a graceful exit; SIGKILL after.
    /// Returns whether the node exited on its own with success.
    pub async fn stop(&mut self, addr: &str, timeout: Duration) -> Result<bool> {
        let mut node = self
            .nodes
            .remove(addr)
            .ok_or_else(|| anyhow!("no node {addr} in this fleet"))?;
        terminate(&mut node, timeout).await
    }

    /// Stops every node gracefully, in parallel, each bounded by `timeout`.
    pub async fn stop_all(&mut self, timeout: Duration) {
        let nodes = std::mem::take(&mut self.nodes);
        let stops = nodes.into_values().map(|mut node| async move {
            let _ = terminate(&mut node, timeout).await;
        });
        futures::future::join_all(stops).await;
    }
}

async fn terminate(node: &mut NodeProcess, timeout: Duration) -> Result<bool> {
    if let Some(pid) = node.child.id() {
        let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        // The process may already be gone; that is fine.
        let _ = kill(pid, Signal::SIGTERM);
    }
    match tokio::time::timeout(timeout, node.child.wait()).await {
        Ok(status) => Ok(status.context("wait")?.success()),
        Err(_) => {
            node.child.kill().await.context("kill")?;
            Ok(false)
        }
    }
}

/// The last non-empty line of a log file, for one-line error reasons.
pub fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("(no output; see {})", path.display()))
}

/// Finds the `chord-node` binary: `$CHORD_NODE_BIN`, else beside this
/// executable, else one directory up (a test binary lives in `target/*/deps`).
pub fn locate_node_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHORD_NODE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("chord-node");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "chord-node binary not found beside {} (build it with `cargo build --bins`, or set CHORD_NODE_BIN)",
        exe.display()
    )
}
