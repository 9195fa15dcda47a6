//! Test harness: a [`TestCluster`] of real `chord-node` processes on
//! 127.0.0.1, built on the console's [`Fleet`] so every process is killed when
//! the cluster is dropped (a failing test leaves nothing behind). Every wait
//! here is bounded and reports what it last saw when it gives up.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
pub use chord_console::fleet::free_port_range;
use chord_console::fleet::{check, locate_node_binary, Fleet, FleetOptions};
use chord_node::chord::{Id, NodeRef};
use chord_node::peer::{NodeState, PeerOptions, PeerPool};
use rand::seq::IndexedRandom;
use tempfile::TempDir;

pub mod aws;
pub mod tmux;

/// Maintenance intervals that make a small loopback ring converge in seconds.
pub const FAST: &[&str] = &[
    "--stabilize-ms",
    "150",
    "--fix-fingers-ms",
    "30",
    "--check-predecessor-ms",
    "300",
    "--rpc-timeout-ms",
    "1000",
    "--repair-ms",
    "1000",
];

/// [`FAST`] with repair as good as off (a round every ten minutes): what a
/// test puts in place, a broken copy or a stray version, stays as it is
/// unless the path under test moves it.
pub fn fast_without_repair() -> Vec<&'static str> {
    // Dropped and added, not rewritten in place: the slow round holds
    // even if FAST stops naming a repair interval.
    let mut args: Vec<&str> = FAST
        .chunks(2)
        .filter(|flag| flag[0] != "--repair-ms")
        .flatten()
        .copied()
        .collect();
    args.extend(["--repair-ms", "600000"]);
    args
}

/// [`FAST`] with hand-offs held to 1 MiB/s (the repair rate): a node
/// holding a few MB hands them over for seconds, long enough to read
/// through a hand-off ([`TestCluster::read_while_draining`]).
pub fn fast_with_slow_handoffs() -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend(["--repair-mib-per-sec", "1"]);
    args
}

/// How long a test ring may take to converge after its nodes start.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Pause between polls while waiting for a condition.
pub const POLL: Duration = Duration::from_millis(200);

pub struct TestCluster {
    pub fleet: Fleet,
    pub peers: PeerPool,
    // Kept for its Drop: the nodes' data lives here.
    dir: TempDir,
}

/// A Python tool (`python3`, `moto_server`, `cfn-lint`) from the project's
/// virtualenv: `$CHORD_VENV/bin`, else `target/venv/bin` of this workspace
/// (where the README's test command installs `tests/requirements.txt`),
/// else whatever `PATH` finds.
pub fn python_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("CHORD_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    let candidate = venv.join("bin").join(name);
    if candidate.is_file() {
        candidate
    } else {
        std::path::PathBuf::from(name)
    }
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind")?;
    Ok(l.local_addr()?.port())
}

/// One MessagePack-RPC request with no params, `[0, 1, method, []]`, on a
/// new connection to `addr`; the whole response, `[1, 1, error, result]`.
pub fn course_call(addr: &str, method: &str) -> Result<rmpv::Value> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(COURSE_CALL_TIMEOUT))?;
    let request = rmpv::Value::Array(vec![
        0.into(),
        1.into(),
        method.into(),
        rmpv::Value::Array(vec![]),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &request)?;
    conn.write_all(&bytes)?;
    let mut answer = vec![0u8; 4096];
    let n = conn.read(&mut answer)?;
    Ok(rmpv::decode::read_value(&mut &answer[..n])?)
}

/// How long [`course_call`] waits for its answer: a node answers at once.
const COURSE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `cmd` to its end (stdin closed), killing it if it takes longer
/// than `limit`, which fails the test.
pub async fn output_within(
    cmd: &mut tokio::process::Command,
    limit: Duration,
) -> std::process::Output {
    let run = cmd
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {cmd:?}: {e}"),
        Err(_) => panic!("{cmd:?} still running after {limit:?}"),
    }
}

/// The `chord-console` binary beside `chord-node`.
/// A process stopped with SIGSTOP (its sockets stay open, nothing answers),
/// let go on (SIGCONT) when dropped, so a failing test never leaves a
/// stopped node behind.
pub struct Frozen(nix::unistd::Pid);

impl Frozen {
    /// Stops `pid` and returns once every thread of it is stopped: the
    /// signal is delivered to each thread in turn, and one still running on
    /// the other core could otherwise answer one more call.
    pub async fn freeze(pid: u32) -> Result<Frozen> {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGSTOP)?;
        let frozen = Frozen(pid);
        let start = Instant::now();
        while !all_threads_stopped(pid)? {
            if start.elapsed() > Duration::from_secs(5) {
                bail!("process {pid} was sent SIGSTOP but has a thread still running after 5 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(frozen)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Whether every thread of `pid` is stopped, as `/proc` says (state `T`,
/// the field after the command name's closing parenthesis).
fn all_threads_stopped(pid: nix::unistd::Pid) -> Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended meanwhile has no stat to read: it runs no more.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn console_binary() -> Result<std::path::PathBuf> {
    Ok(locate_node_binary()?.with_file_name("chord-console"))
}

impl TestCluster {
    /// A cluster with no nodes yet; `args` go to every node.
    pub fn new(replicas: usize, args: &[&str]) -> Result<TestCluster> {
        TestCluster::configured(replicas, args, None, None)
    }

    /// [`TestCluster::new`] with every node requiring `token` (the test's
    /// own calls carry it), and each node's gateway on `port + http_offset`.
    pub fn configured(
        replicas: usize,
        args: &[&str],
        token: Option<chord_node::auth::ClusterToken>,
        http_offset: Option<u16>,
    ) -> Result<TestCluster> {
        TestCluster::with_options(replicas, args, |opts| {
            opts.token = token;
            opts.http_offset = http_offset;
        })
    }

    /// [`TestCluster::new`] with the nodes' data dirs under `parent` (a
    /// tmpfs, say, for a test that writes hundreds of thousands of files).
    pub fn new_in(parent: &std::path::Path, replicas: usize, args: &[&str]) -> Result<TestCluster> {
        TestCluster::with_options_in(parent, replicas, args, |_| {})
    }

    /// [`TestCluster::new`] with the fleet's options set by `setup` (token,
    /// TLS, gateways); the test's own calls ([`TestCluster::peers`],
    /// [`TestCluster::client`]) carry the fleet's token and trust its CA.
    pub fn with_options(
        replicas: usize,
        args: &[&str],
        setup: impl FnOnce(&mut FleetOptions),
    ) -> Result<TestCluster> {
        TestCluster::with_options_in(&std::env::temp_dir(), replicas, args, setup)
    }

    fn with_options_in(
        parent: &std::path::Path,
        replicas: usize,
        args: &[&str],
        setup: impl FnOnce(&mut FleetOptions),
    ) -> Result<TestCluster> {
        // CHORD_KEEP_TEST_DIRS=1 keeps the nodes' data dirs and logs for a
        // post-mortem (the path is printed).
        let keep = std::env::var_os("CHORD_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("chord-test-")
            .disable_cleanup(keep)
            .tempdir_in(parent)?;
        if keep {
            eprintln!("keeping {}", dir.path().display());
        }
        let mut opts = FleetOptions::new(locate_node_binary()?, dir.path().to_path_buf());
        opts.replicas = replicas;
        opts.successors = replicas.max(3);
        opts.extra_args = args.iter().map(|s| s.to_string()).collect();
        setup(&mut opts);
        let fleet = Fleet::new(opts)?;
        let peers = PeerPool::new(PeerOptions {
            rpc_timeout: Duration::from_secs(2),
            ..fleet.peer_options().clone()
        });
        Ok(TestCluster { fleet, peers, dir })
    }

    /// A client entering the ring at `addr` with this cluster's token and CA.
    pub fn client(&self, addr: &str) -> Result<chord_node::client::Client> {
        Ok(chord_node::client::Client::new(
            addr,
            self.peers.options().clone(),
        )?)
    }

    /// `n` nodes, each joining through a randomly chosen earlier one.
    pub async fn start(n: usize, replicas: usize, args: &[&str]) -> Result<TestCluster> {
        let mut cluster = TestCluster::new(replicas, args)?;
        for _ in 0..n {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }

    /// Like [`TestCluster::start`], then waits until every pointer matches
    /// the truth (at most [`CONVERGE`]).
    pub async fn start_converged(n: usize, replicas: usize, args: &[&str]) -> Result<TestCluster> {
        let cluster = TestCluster::start(n, replicas, args).await?;
        cluster.wait_consistent(CONVERGE).await?;
        Ok(cluster)
    }

    /// Starts one more node, joining through a random live node.
    pub async fn add_node(&mut self) -> Result<String> {
        let join = self.fleet.addrs().choose(&mut rand::rng()).cloned();
        self.fleet.start(free_port()?, join.as_deref()).await
    }

    pub fn addrs(&self) -> Vec<String> {
        self.fleet.addrs()
    }

    pub fn data_root(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Where node `addr` keeps chunk `key` on disk.
    pub fn chunk_path(&self, addr: &str, key: &Id) -> Result<std::path::PathBuf> {
        let node = self.fleet.node(addr).context("no such node")?;
        Ok(chord_node::store::chunk_path(&node.data_dir, key))
    }

    /// Stores `manifest` on every node as a replica copy, as if each held
    /// it: a version written by some other client, in place at once.
    pub async fn put_manifest_everywhere(
        &self,
        manifest: &chord_node::store::Manifest,
    ) -> Result<()> {
        for addr in self.addrs() {
            self.peers.put_manifest(&addr, manifest, 1, true).await?;
        }
        Ok(())
    }

    pub fn random_addr(&self) -> Result<String> {
        self.addrs()
            .choose(&mut rand::rng())
            .cloned()
            .context("cluster is empty")
    }

    /// The live nodes sorted by id: the ring as it should be.
    pub fn truth(&self) -> Vec<NodeRef> {
        let mut nodes: Vec<NodeRef> = self.addrs().into_iter().map(NodeRef::from_addr).collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }

    /// The node `steps` places clockwise from `addr` on the true ring.
    pub fn after(&self, addr: &str, steps: usize) -> Result<String> {
        let ring = self.truth();
        let at = ring
            .iter()
            .position(|n| n.addr == addr)
            .with_context(|| format!("{addr} is not in the ring"))?;
        Ok(ring[(at + steps) % ring.len()].addr.clone())
    }

    /// The true owner of `key`: the first node at or after it.
    pub fn owner_of(&self, key: &Id) -> Result<NodeRef> {
        chord_node::chord::true_holders(&self.truth(), key, 1)
            .pop()
            .context("cluster is empty")
    }

    /// What is wrong with the ring's pointers now, or `None` when every
    /// successor and predecessor matches the truth.
    pub async fn mismatch(&self) -> Option<String> {
        check::pointer_mismatch(&self.peers, &self.truth()).await
    }

    /// Waits until every pointer matches the truth; returns how long it took.
    pub async fn wait_consistent(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let Some(problem) = self.mismatch().await else {
                return Ok(start.elapsed());
            };
            if start.elapsed() >= timeout {
                bail!("ring not consistent after {timeout:?}: {problem}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Looks up `count` random keys from random nodes; returns the failures.
    pub async fn wrong_lookups(&self, count: usize) -> Result<Vec<String>> {
        let mut wrong = Vec::new();
        for _ in 0..count {
            let key = Id::from_array(rand::random());
            let from = self.random_addr()?;
            let want = self.owner_of(&key)?;
            match self.peers.find_successor(&from, &key).await {
                Ok((owner, _)) if owner == want => {}
                Ok((owner, _)) => wrong.push(format!(
                    "{} from {from}: got {}, want {}",
                    key.short(),
                    owner.addr,
                    want.addr
                )),
                Err(e) => wrong.push(format!("{} from {from}: {e}", key.short())),
            }
        }
        Ok(wrong)
    }

    /// Waits until `count` random lookups all return the true owner.
    pub async fn wait_lookups_correct(&self, count: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let wrong = self.wrong_lookups(count).await?;
            if wrong.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} of {count} lookups wrong, e.g. {}",
                    wrong.len(),
                    wrong[0]
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Files for storage tests: random bytes written to a temp dir.
pub mod files {
    use std::path::{Path, PathBuf};

    use anyhow::{bail, Context, Result};
    use chord_node::client::{Client, TransferOptions};
    use chord_node::peer::PeerOptions;
    use rand::RngCore;

    /// Writes `len` random bytes to `dir/name` and returns the path.
    pub fn random_file(dir: &Path, name: &str, len: usize) -> Result<PathBuf> {
        let path = dir.join(name);
        let mut data = vec![0u8; len];
        rand::rng().fill_bytes(&mut data);
        std::fs::write(&path, &data)?;
        Ok(path)
    }

    pub fn client(addr: &str) -> Result<Client> {
        Ok(Client::new(addr, PeerOptions::default())?)
    }

    /// Small chunks, so small test files still span several chunks.
    pub fn small_chunks() -> TransferOptions {
        TransferOptions {
            chunk_size: 64 * 1024,
            ..TransferOptions::default()
        }
    }

    pub fn no_progress(_: u64) {}

    /// The checksum chord-dfs gives `bytes` uploaded in chunks of
    /// `chunk_size`, as the hex of its `"blake3_chunks"` field, made here
    /// from the `blake3` crate alone rather than chord-node's code: BLAKE3
    /// in key-derivation mode, with the context below, over each chunk's
    /// BLAKE3 hash in order.
    pub fn chunk_tree_hex(bytes: &[u8], chunk_size: usize) -> String {
        let mut tree = blake3::Hasher::new_derive_key(
            "chord-dfs 2026-12-07 file checksum from its chunk hashes",
        );
        for chunk in bytes.chunks(chunk_size) {
            tree.update(blake3::hash(chunk).as_bytes());
        }
        tree.finalize().to_hex().to_string()
    }

    /// Downloads `name` through `client` and compares it with the original
    /// in `dir`; the error says whether it was lost or came back changed.
    pub async fn read_back(client: &Client, dir: &Path, name: &str) -> Result<()> {
        let out = dir.join(format!("{name}.out"));
        client
            .download(name, &out, &small_chunks(), &no_progress)
            .await
            .with_context(|| format!("{name} lost"))?;
        if std::fs::read(dir.join(name))? != std::fs::read(&out)? {
            bail!("{name} came back with different bytes");
        }
        Ok(())
    }

    /// The names the ring lists, in order.
    pub async fn listed(c: &Client) -> Result<Vec<String>> {
        Ok(c.list().await?.into_iter().map(|f| f.name).collect())
    }
}

impl TestCluster {
    /// Sum of the chunk counts of every live node.
    pub async fn chunk_copies(&self) -> Result<u64> {
        let mut total = 0;
        for addr in self.addrs() {
            total += self.peers.get_stats(&addr).await?.chunks;
        }
        Ok(total)
    }

    /// Sum of a counter over all live nodes.
    pub async fn sum_stats(&self, f: impl Fn(&chord_proto::pb::StoreStats) -> u64) -> Result<u64> {
        let mut total = 0;
        for addr in self.addrs() {
            total += f(&self.peers.get_stats(&addr).await?);
        }
        Ok(total)
    }

    /// Waits until `cond` holds, polling; reports `what` on timeout.
    pub async fn wait_for<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        loop {
            if cond().await.unwrap_or(false) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                bail!("{what}: not true after {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl TestCluster {
    /// Where chunk copies are versus where they should be (each chunk on the
    /// first `replicas` nodes at or after its key). `None` when they agree.
    pub async fn placement_mismatch(&self, replicas: usize) -> Result<Option<String>> {
        let truth = self.truth();
        let held = check::Holdings::read(&self.peers, &self.addrs()).await?;
        for (key, holders) in &held.chunks {
            let want: std::collections::BTreeSet<String> =
                chord_node::chord::true_holders(&truth, key, replicas)
                    .into_iter()
                    .map(|n| n.addr)
                    .collect();
            if *holders != want {
                return Ok(Some(format!(
                    "chunk {} on {holders:?}, want {want:?}",
                    key.short()
                )));
            }
        }
        Ok(None)
    }
}

impl TestCluster {
    /// Uploads `count` random files named `<prefix>-<i>` of `len(i)` bytes
    /// into `dir` and the ring, each through a random node; returns the names.
    pub async fn upload_random_files(
        &self,
        dir: &std::path::Path,
        prefix: &str,
        count: usize,
        len: impl Fn(usize) -> usize,
    ) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{prefix}-{i:02}");
            let path = files::random_file(dir, &name, len(i))?;
            files::client(&self.random_addr()?)?
                .upload_file(&path, &name, &files::small_chunks(), &files::no_progress)
                .await
                .with_context(|| format!("uploading {name}"))?;
            names.push(name);
        }
        Ok(names)
    }

    /// The node holding the most chunks (an error if none holds one): a
    /// node to take away whose keys must then move.
    pub async fn busiest_node(&self) -> Result<String> {
        let mut busiest = None;
        let mut most = 0;
        for addr in self.addrs() {
            let held = self.peers.get_stats(&addr).await?.chunks;
            if held > most {
                (busiest, most) = (Some(addr), held);
            }
        }
        busiest.context("no node holds a chunk")
    }

    /// Uploads 24 files of about 400 KB into `dir` and the ring, and picks
    /// the node that holds the most to drain: at least 2 MB, so that under
    /// [`fast_with_slow_handoffs`] its hand-off outlasts reading them all.
    /// Returns the files' names and that node.
    pub async fn files_to_hand_over(&self, dir: &std::path::Path) -> Result<(Vec<String>, String)> {
        let names = self
            .upload_random_files(dir, "handed", 24, |i| 400_000 + i * 1_000)
            .await?;
        let leaving = self.busiest_node().await?;
        let held = self.peers.get_stats(&leaving).await?;
        if held.bytes < 2_000_000 {
            bail!("{leaving}, the busiest node, holds too little to hand over for long: {held:?}");
        }
        Ok((names, leaving))
    }

    /// Drains each of `leaving`, each one once the one before says it
    /// leaves (so their drains overlap, as a scale-in of several instances
    /// has them), and from the moment the last says it leaves, `read`s each
    /// of `names` in turn (what a read must find is the test's to check).
    /// An error if a drain was not complete, or the first had ended before
    /// the reads did: reads after a hand-off say nothing about reads during
    /// it.
    pub async fn read_while_draining<F, Fut>(
        &self,
        leaving: &[&str],
        names: &[String],
        read: F,
    ) -> Result<()>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let said_leaving = |addr: &str| {
            let addr = addr.to_string();
            self.wait_for("a node to leave", Duration::from_secs(10), move || {
                let addr = addr.clone();
                async move { Ok(self.peers.get_info(&addr).await?.state == NodeState::Leaving) }
            })
        };
        let first_drained = AtomicBool::new(false);
        let drains = futures::future::join_all(leaving.iter().enumerate().map(|(i, addr)| {
            let (earlier, first_drained, said_leaving) =
                (&leaving[..i], &first_drained, &said_leaving);
            async move {
                if let Some(before) = earlier.last() {
                    said_leaving(before).await?;
                }
                let report = self.peers.drain(addr, Duration::from_secs(90)).await;
                if i == 0 {
                    first_drained.store(true, Ordering::SeqCst);
                }
                let report = report?;
                if !report.is_complete() {
                    bail!("the drain of {addr} did not complete: {report:?}");
                }
                Ok(report)
            }
        }));
        let reads = async {
            for addr in leaving {
                said_leaving(addr).await?;
            }
            for name in names {
                read(name.clone())
                    .await
                    .with_context(|| format!("{name} during the hand-off"))?;
            }
            anyhow::Ok(first_drained.load(Ordering::SeqCst))
        };
        let (reports, reads) = tokio::join!(drains, reads);
        let reports = reports.into_iter().collect::<Result<Vec<_>>>()?;
        if reads? {
            bail!(
                "the hand-off ended before the reads did, so they read nothing behind: {reports:?}"
            );
        }
        Ok(())
    }

    /// Downloads every name (each through a random node) and compares it with
    /// the original in `dir`; the error names the first file lost or changed.
    pub async fn check_files_intact(&self, dir: &std::path::Path, names: &[String]) -> Result<()> {
        for name in names {
            files::read_back(&files::client(&self.random_addr()?)?, dir, name).await?;
        }
        Ok(())
    }
}
