//! The course-compatible MessagePack-RPC face: the course's test flow in
//! Python against idle nodes, the course's upload and download scripts
//! against a fleet in the one-instance layout, and gRPC and MessagePack-RPC
//! clients sharing one port under load.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_console::fleet::locate_node_binary;
use chord_node::chord::course::{id_to_u32, key_from_u32};
use chord_node::peer::{PeerOptions, PeerPool};
use chord_tests::{free_port_range, python_tool, TestCluster, FAST};
use rand::Rng;
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Nodes in the course's test ring (5057–5064 there; free ports here).
const COURSE_NODES: u16 = 8;
/// Bound on one Python script run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long each side hammers the shared port.
const HAMMER_FOR: Duration = Duration::from_secs(4);
/// Concurrent clients of each protocol in the hammer test.
const HAMMER_CLIENTS: usize = 6;
/// Deadline of one call in the hammer test.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The venv's python with `modules`; the test fails, saying how to install
/// them, when they are missing (the tests that need them are `#[ignore]`d
/// and run only when asked for).
async fn python_with(modules: &str) -> String {
    let python = python_tool("python3").to_string_lossy().into_owned();
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with {modules} is not installed (bash tests/setup.sh installs it into target/venv)"
    );
    python
}

/// Runs a Python script from `tests/` with a bound; returns its stdout, or
/// fails with both outputs.
async fn run_script(python: &str, script: &str, args: &[&str]) -> Result<String> {
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python);
    cmd.arg(&path).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{script} {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `chord-node --idle` processes, killed when dropped.
struct IdleNodes {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl IdleNodes {
    async fn start(first_port: u16, n: u16) -> Result<IdleNodes> {
        let dir = tempfile::Builder::new().prefix("chord-course-").tempdir()?;
        let binary = locate_node_binary()?;
        let mut children = Vec::new();
        for port in first_port..first_port + n {
            let data = dir.path().join(port.to_string());
            let log = std::fs::File::create(dir.path().join(format!("{port}.log")))?;
            let child = Command::new(&binary)
                .arg("--idle")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(&data)
                .args(FAST)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .context("starting chord-node --idle")?;
            children.push(child);
        }
        Ok(IdleNodes {
            children,
            _dir: dir,
        })
    }
}

#[tokio::test]
#[ignore = "needs python3 with msgpack (tests/setup.sh); run with --run-ignored all"]
async fn course_test_flow_builds_and_heals_a_ring_of_idle_nodes() {
    let python = python_with("msgpack").await;
    let first = free_port_range(COURSE_NODES).unwrap();
    let mut nodes = IdleNodes::start(first, COURSE_NODES).await.unwrap();
    let out = run_script(
        &python,
        "course_ring.py",
        &["127.0.0.1", &first.to_string(), &COURSE_NODES.to_string()],
    )
    .await
    .unwrap();
    eprintln!("{out}");
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    // The two nodes told to `kill` crashed with the status of SIGKILL: no
    // graceful leave. The others still run.
    for (i, child) in nodes.children.iter_mut().enumerate() {
        let status = child.try_wait().unwrap();
        if i == 2 || i == 5 {
            let code = status.and_then(|s| s.code());
            assert_eq!(
                code,
                Some(chord_node::server::msgpack::KILLED_EXIT_CODE),
                "node {i}"
            );
        } else {
            assert!(status.is_none(), "node {i} exited: {status:?}");
        }
    }
}

/// One MessagePack-RPC call on an open connection.
async fn msgpack_call(
    stream: &mut TcpStream,
    msgid: u32,
    method: &str,
    params: Vec<Value>,
) -> Result<Value> {
    let request = Value::Array(vec![
        Value::from(0),
        Value::from(msgid),
        Value::from(method),
        Value::Array(params),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &request)?;
    stream.write_all(&bytes).await?;
    let mut buf = Vec::new();
    loop {
        let mut cursor = std::io::Cursor::new(&buf[..]);
        if let Ok(Value::Array(reply)) = rmpv::decode::read_value(&mut cursor) {
            let [kind, id, error, result] = <[Value; 4]>::try_from(reply)
                .map_err(|r| anyhow::anyhow!("not a response: {r:?}"))?;
            if kind.as_u64() != Some(1) || id.as_u64() != Some(u64::from(msgid)) {
                bail!("unexpected response header {kind} {id}");
            }
            if !error.is_nil() {
                bail!("{method} failed: {error}");
            }
            return Ok(result);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during {method}");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn grpc_and_msgpack_clients_share_one_port() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let deadline = Instant::now() + HAMMER_FOR;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..HAMMER_CLIENTS {
        // gRPC: each client its own pool, so its own HTTP/2 connection.
        let grpc_addr = addr.clone();
        let truth = cluster.truth();
        tasks.spawn(async move {
            let addr = grpc_addr;
            let pool = PeerPool::new(PeerOptions {
                rpc_timeout: CALL_TIMEOUT,
                ..PeerOptions::default()
            });
            let mut served = 0u64;
            while Instant::now() < deadline {
                let key = chord_node::chord::Id::hash(&rand::rng().random::<[u8; 8]>());
                let (owner, _) = pool.find_successor(&addr, &key).await?;
                let want = truth.iter().find(|n| n.id >= key).or(truth.first());
                if Some(&owner.addr) != want.map(|n| &n.addr) {
                    bail!("gRPC lookup of {key} named {owner}");
                }
                served += 1;
            }
            Ok(("grpc", served))
        });
        // MessagePack-RPC: one long connection per client.
        let msgpack_addr = addr.clone();
        let truth = cluster.truth();
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(&msgpack_addr).await?;
            let mut served = 0u64;
            let mut msgid = 0u32;
            while Instant::now() < deadline {
                msgid += 1;
                let k: u32 = rand::rng().random();
                let call = msgpack_call(&mut stream, msgid, "find_successor", vec![k.into()]);
                let owner = tokio::time::timeout(CALL_TIMEOUT, call).await??;
                let key = key_from_u32(k);
                let want = truth.iter().find(|n| n.id >= key).or(truth.first());
                let got = owner
                    .as_array()
                    .and_then(|f| f.get(2))
                    .and_then(Value::as_u64);
                if got != want.map(|n| u64::from(id_to_u32(&n.id))) {
                    bail!("MessagePack-RPC lookup of {k} answered {owner}");
                }
                served += 1;
            }
            Ok(("msgpack", served))
        });
    }
    // Garbage and silent connections meanwhile: they must not disturb anyone.
    let garbage_addr = addr.clone();
    tasks.spawn(async move {
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let mut stream = TcpStream::connect(&garbage_addr).await?;
            stream.write_all(&[0x94, 0xc1, 0xff, 0x00, 0x12]).await?;
            let _ = stream.shutdown().await;
            let _silent = TcpStream::connect(&garbage_addr).await?;
            sent += 1;
            // Paced: a steady stream beside the real clients, not a flood
            // that would only measure accept().
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(("garbage", sent))
    });
    let mut served = std::collections::BTreeMap::new();
    while let Some(res) = tasks.join_next().await {
        let (side, n) = res.unwrap().unwrap();
        *served.entry(side).or_insert(0u64) += n;
    }
    eprintln!("served in {HAMMER_FOR:?} on one port: {served:?}");
    assert!(served["grpc"] > 0 && served["msgpack"] > 0, "{served:?}");
    // The node still answers both after the storm.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    msgpack_call(&mut stream, 1, "get_info", vec![])
        .await
        .unwrap();
    cluster.peers.get_info(&addr).await.unwrap();
}

/// Nodes in the one-instance fleet of the upload/download test.
const PER_HOST_NODES: usize = 4;

/// A block of loopback addresses for the per-host fleet, picked from the
/// process id (so two test runs at once do not meet) and checked free on
/// ports 5057 and 5058.
fn free_host_base(n: usize) -> Result<std::net::Ipv4Addr> {
    let pid = std::process::id();
    for attempt in 0..64u32 {
        let seed = pid.wrapping_add(attempt.wrapping_mul(7919));
        // 127.64.0.1 and up: far from 127.0.0.x, where other rings live.
        let first = std::net::Ipv4Addr::new(127, 64 + (seed >> 8) as u8 % 128, seed as u8, 1);
        let free = (0..n).all(|i| {
            let host = std::net::Ipv4Addr::from(u32::from(first) + i as u32);
            [5057u16, 5058]
                .iter()
                .all(|&p| std::net::TcpListener::bind((host, p)).is_ok())
        });
        if free {
            return Ok(first);
        }
    }
    bail!("no block of {n} loopback addresses with 5057 and 5058 free")
}

#[tokio::test]
#[ignore = "needs python3 with msgpack and requests (tests/setup.sh); run with --run-ignored all"]
async fn course_upload_and_download_scripts_work_on_the_one_instance_layout() {
    let python = python_with("msgpack, requests").await;
    let first = free_host_base(PER_HOST_NODES).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("chord-course-files-")
        .tempdir()
        .unwrap();
    let opts = chord_console::fleet::up::UpOptions {
        nodes: PER_HOST_NODES,
        layout: chord_console::fleet::Layout::PerHost { first },
        grpc_base: 5057,
        http_base: Some(5058),
        slots: PER_HOST_NODES,
        data_root: Some(dir.path().join("nodes")),
        replicas: 3,
        node_args: FAST.iter().map(|s| s.to_string()).collect(),
        tls: None,
        json: true,
    };
    // Owned here: every node is killed if the test fails.
    let started = chord_console::fleet::up::start(&opts).await.unwrap();
    let hosts: Vec<String> = (0..PER_HOST_NODES)
        .map(|i| started.layout.slot(i).unwrap().host.to_string())
        .collect();
    assert_eq!(
        hosts[1],
        std::net::Ipv4Addr::from(u32::from(first) + 1).to_string()
    );
    // A converged ring: every node knows its true successor.
    let peers = PeerPool::new(PeerOptions::default());
    let mut truth: Vec<chord_node::chord::NodeRef> = started
        .fleet
        .addrs()
        .into_iter()
        .map(chord_node::chord::NodeRef::from_addr)
        .collect();
    truth.sort_by_key(|n| n.id);
    let settle = Instant::now() + chord_tests::CONVERGE;
    'settle: loop {
        for (i, node) in truth.iter().enumerate() {
            let want = &truth[(i + 1) % truth.len()].addr;
            let ok = peers
                .get_info(&node.addr)
                .await
                .map(|info| info.successors.first().map(|s| &s.addr) == Some(want))
                .unwrap_or(false);
            if !ok {
                assert!(Instant::now() < settle, "the ring did not converge");
                tokio::time::sleep(chord_tests::POLL).await;
                continue 'settle;
            }
        }
        break;
    }

    let download = format!("{}/course/download.py", env!("CARGO_MANIFEST_DIR"));
    let mut rng = rand::rng();
    for (i, name) in ["report.pdf", "photo 1.jpg", "notes.txt"]
        .iter()
        .enumerate()
    {
        let size = 1_000_000 + rng.random_range(0..3_000_000);
        let bytes: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let path = src.join(name);
        std::fs::write(&path, &bytes).unwrap();
        // Upload through one node, download through another.
        let (up_host, down_host) = (&hosts[i % hosts.len()], &hosts[(i + 2) % hosts.len()]);
        let out = run_script(
            &python,
            "course/upload.py",
            &[path.to_str().unwrap(), up_host],
        )
        .await
        .unwrap();
        eprint!("{out}");
        let dst = dir.path().join(format!("dst{i}"));
        std::fs::create_dir_all(&dst).unwrap();
        let mut cmd = Command::new(&python);
        cmd.arg(&download)
            .args([*name, down_host.as_str()])
            .current_dir(&dst)
            .kill_on_drop(true);
        let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "download.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            std::fs::read(dst.join(name)).unwrap() == bytes,
            "{name} differs"
        );
        // Every node's gateway serves it, not only the owner's.
        for host in &hosts {
            let url = format!("http://{host}:5058/{}", name.replace(' ', "%20"));
            let got = Command::new("curl")
                .args(["-sf", "--max-time", "60", &url])
                .output()
                .await
                .unwrap();
            assert!(got.status.success(), "curl {url}: {}", got.status);
            assert!(got.stdout == bytes, "{name} from {host} differs");
        }
    }
    let mut fleet = started.fleet;
    fleet.stop_all(Duration::from_secs(10)).await;
}
