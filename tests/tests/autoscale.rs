//! Auto scaling of a local fleet: [`LocalCapacity`] adds and drains nodes
//! within its bounds, and `chord-console local up --autoscale` grows the
//! ring under `bench load` and shrinks it, one node at a time, when the load
//! stops, losing no file. Real processes on 127.0.0.1, timings shortened by
//! flags so the whole run fits in about three minutes.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chord_console::capacity::{Capacity, MemberState};
use chord_console::fleet::{
    locate_node_binary, Fleet, FleetOptions, LocalCapacity, LocalLimits, PortLayout,
};
use chord_node::chord::NodeRef;
use chord_node::client::Client;
use chord_node::peer::PeerOptions;
use chord_tests::files::{no_progress, random_file, small_chunks};
use chord_tests::{console_binary, free_port_range, FAST};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn client(addr: &str) -> Client {
    Client::new(addr, PeerOptions::default()).unwrap()
}

/// Uploads `count` random files `<prefix>-<i>` (one to two chunks each)
/// through `entry`, `pause` apart; the originals stay in `dir`.
async fn upload_files(
    entry: &str,
    dir: &Path,
    prefix: &str,
    count: usize,
    pause: Duration,
) -> Vec<String> {
    let c = client(entry);
    let mut names = Vec::new();
    for i in 0..count {
        tokio::time::sleep(pause).await;
        let name = format!("{prefix}-{i:02}");
        let path = random_file(dir, &name, 30_000 + i * 1_500).unwrap();
        c.upload_file(&path, &name, &small_chunks(), &no_progress)
            .await
            .unwrap_or_else(|e| panic!("uploading {name}: {e}"));
        names.push(name);
    }
    names
}

/// Downloads every name through `entry` and compares it with its original.
async fn check_intact(entry: &str, dir: &Path, names: &[String]) {
    let c = client(entry);
    for name in names {
        let out = dir.join(format!("{name}.out"));
        c.download(name, &out, &small_chunks(), &no_progress)
            .await
            .unwrap_or_else(|e| panic!("{name} lost: {e}"));
        assert!(
            std::fs::read(dir.join(name)).unwrap() == std::fs::read(&out).unwrap(),
            "{name} came back with different bytes"
        );
    }
}

#[tokio::test]
async fn local_capacity_adds_and_drains_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = FleetOptions::new(locate_node_binary().unwrap(), dir.path().join("nodes"));
    opts.extra_args = FAST.iter().map(|s| s.to_string()).collect();
    let base = free_port_range(4).unwrap();
    let layout = PortLayout::new(base, None, 4).unwrap();
    let mut fleet = Fleet::new(opts).unwrap();
    let first = fleet.start(base, None).await.unwrap();
    fleet.start(base + 1, Some(&first)).await.unwrap();
    let mut capacity = LocalCapacity::new(fleet, layout, LocalLimits::new(2, 3).unwrap()).unwrap();
    let files = tempfile::tempdir().unwrap();
    let names = upload_files(&first, files.path(), "cap", 12, Duration::ZERO).await;

    // Another process holds the third slot's port: the add takes the fourth.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let added = capacity.add().await.unwrap();
    drop(squatter);
    assert_eq!(
        added.id,
        format!("127.0.0.1:{}", base + 3),
        "next free slot"
    );
    let err = capacity.add().await.unwrap_err().to_string();
    assert!(err.contains("maximum of 3"), "{err}");
    let state = capacity.describe().await.unwrap();
    assert_eq!((state.desired, state.min, state.max), (3, 2, 3));
    assert_eq!(state.members.len(), 3);

    // Let the new node take its share, so its drain has keys to hand off.
    let started = Instant::now();
    loop {
        let stats = chord_node::peer::PeerPool::new(PeerOptions::default())
            .get_stats(&added.id)
            .await
            .unwrap();
        if stats.chunks > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the added node never got keys"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The newest node is the one drained; the report says what moved.
    let removal = capacity.remove(None).await.unwrap();
    assert_eq!(removal.member.id, added.id);
    assert!(removal.handoff.is_complete(), "{:?}", removal.handoff);
    assert!(removal.handoff.keys > 0, "{:?}", removal.handoff);
    assert_eq!(capacity.fleet().len(), 2);
    let err = capacity.remove(None).await.unwrap_err().to_string();
    assert!(err.contains("minimum of 2"), "{err}");
    let err = capacity
        .remove(Some("127.0.0.1:1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no node"), "{err}");
    let state = capacity.describe().await.unwrap();
    assert_eq!(state.desired, 2);
    assert!(state
        .members
        .iter()
        .all(|m| m.state != MemberState::Draining));
    check_intact(&first, files.path(), &names).await;
}

/// The autoscaler's settings for the must-show run. `TARGET` is in node
/// requests per second per node: an idle ring of six serves about 20 (ring
/// maintenance and the controller's own polls), and `LOAD_RPS` bench
/// requests a second put two nodes near 90 each.
const TARGET: &str = "40";
const LOAD_RPS: &str = "20";
const LOAD_SECS: u64 = 45;
/// The bound for growing to four nodes under load.
const GROW_BOUND: Duration = Duration::from_secs(90);
/// Shrinking 6 -> 2 takes four cool-downs (10 s) plus drains and settling.
const SHRINK_BOUND: Duration = Duration::from_secs(150);
/// Pause between the uploads before the load: about 2.5 uploads a second,
/// some 15 node requests each, is well under the target on two nodes.
const BEFORE_PACE: Duration = Duration::from_millis(400);
/// How long `ring --json` may take to show a change.
const RING_BOUND: Duration = Duration::from_secs(30);

/// The lines `local up --json` printed, parsed, each with when it arrived;
/// shared with the reader task.
type Events = Arc<Mutex<Vec<(Instant, Value)>>>;

/// The fleet's members as the events say: the started nodes, plus each node
/// added, minus each node drained and stopped.
fn members(events: &Events) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, e) in events.lock().unwrap().iter() {
        match (e["event"].as_str(), e["applied"]["kind"].as_str()) {
            (Some("up"), _) => {
                for n in e["nodes"].as_array().unwrap() {
                    out.insert(n.as_str().unwrap().to_string());
                }
            }
            (Some("decision"), Some("added")) => {
                out.insert(e["applied"]["node"].as_str().unwrap().to_string());
            }
            (Some("decision"), Some("removed")) => {
                out.remove(e["applied"]["node"].as_str().unwrap());
            }
            _ => {}
        }
    }
    out
}

/// The last `n` events, one per line, for failure messages.
fn last_lines(events: &Events, n: usize) -> String {
    let events = events.lock().unwrap();
    let skip = events.len().saturating_sub(n);
    events
        .iter()
        .skip(skip)
        .map(|(_, e)| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the latest decision saw a reading under `target`.
fn last_decision_below(events: &Events, target: f64) -> bool {
    let events = events.lock().unwrap();
    events
        .iter()
        .rev()
        .find(|(_, e)| e["event"] == "decision")
        .and_then(|(_, e)| e["value"].as_f64())
        .is_some_and(|v| v < target)
}

/// Runs `chord-console --peer <peer> <args>` with a deadline.
async fn console(peer: &str, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(console_binary().unwrap())
        .arg("--peer")
        .arg(peer)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chord-console hung")
        .unwrap()
}

/// What is wrong with `ring --json` against the members, or `None`: the
/// nodes must be exactly the members, each id SHA-1 of its address, in
/// ring order (ascending ids from some start), each pointing at its true
/// predecessor and successor.
async fn ring_problem(peer: &str, want: &BTreeSet<String>) -> Option<String> {
    let out = console(peer, &["ring", "--json"]).await;
    if !out.status.success() {
        return Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let ring: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    let nodes = ring["nodes"].as_array()?;
    let got: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n["addr"].as_str().map(str::to_string))
        .collect();
    if got != *want {
        return Some(format!("ring has {got:?}, fleet has {want:?}"));
    }
    let mut truth: Vec<NodeRef> = want.iter().cloned().map(NodeRef::from_addr).collect();
    truth.sort_by_key(|n| n.id);
    let start = truth.iter().position(|n| n.addr == nodes[0]["addr"])?;
    let k = truth.len();
    for (i, node) in nodes.iter().enumerate() {
        let me = &truth[(start + i) % k];
        let pred = &truth[(start + i + k - 1) % k];
        let succ = &truth[(start + i + 1) % k];
        if node["addr"] != me.addr.as_str() || node["id"] != me.id.to_hex().as_str() {
            return Some(format!("position {i}: {node} is not {}", me.addr));
        }
        if node["predecessor"] != pred.addr.as_str() || node["successors"][0] != succ.addr.as_str()
        {
            return Some(format!("{}: pointers not yet right: {node}", me.addr));
        }
    }
    None
}

/// Waits until `ring --json` matches the members the events name; returns
/// how many members that was.
async fn wait_ring_correct(peer: &str, events: &Events, after: &str) -> usize {
    let started = Instant::now();
    loop {
        let want = members(events);
        let Some(problem) = ring_problem(peer, &want).await else {
            return want.len();
        };
        assert!(
            started.elapsed() < RING_BOUND,
            "ring --json wrong {RING_BOUND:?} after {after}: {problem}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ring size from a successor walk, or `None` if the walk failed.
async fn ring_size(peer: &str) -> Option<usize> {
    client(peer).walk().await.ok().map(|n| n.len())
}

/// Follows the fleet while it scales: membership from the events changes
/// by one node at a time, `ring --json` is right after each change, and a
/// successor walk never loses two nodes between two polls.
struct Watch {
    peer: String,
    events: Events,
    seen: usize,
    walked: Option<usize>,
}

impl Watch {
    async fn poll(&mut self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(size) = ring_size(&self.peer).await {
            if let Some(last) = self.walked {
                assert!(
                    size + 1 >= last,
                    "ring shrank from {last} to {size} between polls"
                );
            }
            self.walked = Some(size);
        }
        let now = members(&self.events).len();
        if now != self.seen {
            let after = format!("{} -> {now} nodes", self.seen);
            self.seen = wait_ring_correct(&self.peer, &self.events, &after).await;
        }
    }
}

/// Checks from the events that changes never overlapped: after each node
/// added or removed, the controller saw its keys settle before the next.
fn one_change_at_a_time(events: &[(Instant, Value)]) {
    let mut open: Option<String> = None;
    for (_, e) in events {
        let kind = e["applied"]["kind"].as_str();
        if matches!(kind, Some("added" | "removed")) {
            let node = e["applied"]["node"].as_str().unwrap().to_string();
            assert!(
                open.is_none(),
                "{node} {} while the change of {open:?} had not settled",
                kind.unwrap()
            );
            open = Some(node);
        } else if e["event"] == "settled" {
            assert_eq!(open.as_deref(), e["node"].as_str(), "settled out of order");
            open = None;
        }
    }
}

#[tokio::test]
async fn local_fleet_grows_under_load_and_shrinks_one_node_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port_range(6).unwrap();
    let http = loop {
        let h = free_port_range(6).unwrap();
        if h.abs_diff(grpc) >= 6 {
            break h;
        }
    };
    let peer = format!("127.0.0.1:{grpc}");
    let data_root = dir.path().join("nodes");
    let mut up = tokio::process::Command::new(console_binary().unwrap())
        .args(["--json", "local", "up", "--nodes", "2"])
        .args(["--base-port", &grpc.to_string()])
        .args(["--http-base-port", &http.to_string()])
        .arg("--data-root")
        .arg(&data_root)
        .args([
            "--autoscale",
            "--min",
            "2",
            "--max",
            "6",
            "--target",
            TARGET,
        ])
        .args(["--warmup-secs", "4", "--scale-in-cooldown-secs", "10"])
        .args(["--interval-secs", "2", "--settle-secs", "4"])
        .args(["--drain-deadline-secs", "60"])
        .arg("--node-arg=--repair-ms=1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("up.err")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let events: Events = Arc::default();
    let lines = BufReader::new(up.stdout.take().unwrap());
    let reader = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut lines = lines.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // A line that is not JSON is kept as a string, and fails
                // the test at the end (a panic here would go unseen).
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                events.lock().unwrap().push((Instant::now(), v));
            }
        })
    };
    let started = Instant::now();
    while members(&events).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "local up did not start: {}",
            std::fs::read_to_string(dir.path().join("up.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_ring_correct(&peer, &events, "start").await;

    // 50 files before the load.
    let files = tempfile::tempdir().unwrap();
    // Paced, so these uploads stay under the target themselves.
    let mut names = upload_files(&peer, files.path(), "before", 50, BEFORE_PACE).await;

    // The uploads are load too and may have grown the fleet: let it go
    // quiet and back to 2, so the bench is a clean step up from 2 nodes.
    let target: f64 = TARGET.parse().unwrap();
    let quiet = Instant::now();
    let mut watch = Watch {
        peer: peer.clone(),
        events: events.clone(),
        seen: members(&events).len(),
        walked: None,
    };
    while !(watch.seen == 2 && last_decision_below(&events, target)) {
        assert!(
            quiet.elapsed() < Duration::from_secs(90),
            "the ring never went quiet at 2 nodes after the uploads; last events:\n{}",
            last_lines(&events, 8)
        );
        watch.poll().await;
    }

    // Load above target; 50 more files while the ring grows.
    let load_at = Instant::now();
    let bench = tokio::process::Command::new(console_binary().unwrap())
        .args(["--peer", &peer, "--json", "bench", "load"])
        .args(["--rps", LOAD_RPS, "--seconds", &LOAD_SECS.to_string()])
        .args(["--files", "20", "--size", "4KiB", "--prefix", "load"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let during = {
        let (peer, dir) = (peer.clone(), files.path().to_path_buf());
        tokio::spawn(async move { upload_files(&peer, &dir, "during", 50, Duration::ZERO).await })
    };
    let bench = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(LOAD_SECS + 60),
            bench.wait_with_output(),
        )
        .await
    });
    let mut grew_at = None;
    while grew_at.is_none() || !bench.is_finished() {
        assert!(
            grew_at.is_some() || load_at.elapsed() < GROW_BOUND,
            "fleet has {} nodes {GROW_BOUND:?} after the load started; last events:\n{}",
            watch.seen,
            last_lines(&events, 8)
        );
        watch.poll().await;
        if watch.seen >= 4 && grew_at.is_none() {
            grew_at = Some(load_at.elapsed());
        }
    }
    let bench = bench.await.unwrap().expect("bench load hung").unwrap();
    assert!(
        bench.status.success(),
        "bench load failed: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let report: Value = serde_json::from_slice(&bench.stdout).unwrap();
    let (ok, errors) = (
        report["ok"].as_u64().unwrap(),
        report["errors"].as_u64().unwrap(),
    );
    assert!(ok > 0 && errors * 20 <= ok, "bench load: {report}");
    // The slowest requests, slowest first, led by the maximum.
    let latency = &report["latency_ms"];
    let slowest: Vec<f64> = latency["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ms| ms.as_f64().unwrap())
        .collect();
    assert!(
        (1..=8).contains(&slowest.len()) && slowest.is_sorted_by(|a, b| a >= b),
        "bench load: {report}"
    );
    assert_eq!(Some(slowest[0]), latency["max"].as_f64());
    eprintln!("bench load: {report}");
    names.extend(
        tokio::time::timeout(Duration::from_secs(120), during)
            .await
            .expect("uploads during the load hung")
            .unwrap(),
    );

    // The load has stopped: back to 2, one node at a time.
    let quiet_at = Instant::now();
    while watch.seen > 2 {
        assert!(
            quiet_at.elapsed() < SHRINK_BOUND,
            "fleet still has {} nodes {SHRINK_BOUND:?} after the load stopped; last events:\n{}",
            watch.seen,
            last_lines(&events, 8)
        );
        watch.poll().await;
    }
    let shrink_took = quiet_at.elapsed();
    assert_eq!(names.len(), 100);
    check_intact(&peer, files.path(), &names).await;

    // Figures for the README, from the controller's own events.
    let all = events.lock().unwrap().clone();
    // A node added for this load (not for the uploads before it) that owns keys.
    let added_for_load: BTreeSet<&str> = all
        .iter()
        .filter(|(at, e)| *at >= load_at && e["applied"]["kind"] == "added")
        .filter_map(|(_, e)| e["applied"]["node"].as_str())
        .collect();
    let first_owner = all
        .iter()
        .find(|(at, e)| {
            *at >= load_at
                && e["event"] == "owns_keys"
                && added_for_load.contains(e["node"].as_str().unwrap_or(""))
        })
        .map(|(at, _)| at.saturating_duration_since(load_at))
        .expect("no node added for the load ever owned keys");
    let out_bytes: Vec<u64> = all
        .iter()
        .filter(|(_, e)| e["event"] == "settled" && e["action"] == "scale_out")
        .map(|(_, e)| e["repair_bytes"].as_u64().unwrap())
        .collect();
    let in_bytes: Vec<(u64, u64)> = all
        .iter()
        .filter(|(_, e)| e["event"] == "settled" && e["action"] == "scale_in")
        .map(|(_, e)| {
            (
                e["handoff_bytes"].as_u64().unwrap(),
                e["repair_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    if let Some((_, bad)) = all.iter().find(|(_, e)| e.is_string()) {
        panic!("local up --json printed a line that is not JSON: {bad}");
    }
    one_change_at_a_time(&all);
    let removed: Vec<&Value> = all
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["applied"]["kind"] == "removed")
        .collect();
    assert!(removed.len() >= 2, "shrank without drained removals");
    assert!(
        removed.iter().all(|e| e["applied"]["unconfirmed"] == 0),
        "a node was stopped with unconfirmed keys"
    );
    eprintln!(
        "grew to 4 nodes {grew_at:?} after the load started; a new node owned keys \
         {first_owner:?} after the load started; shrank to 2 in {shrink_took:?}; \
         scale-out repair bytes {out_bytes:?}; scale-in (hand-off, repair) bytes {in_bytes:?}"
    );

    // Stop the fleet as an operator would.
    if let Some(pid) = up.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait())
        .await
        .expect("local up did not stop")
        .unwrap();
    assert!(status.success(), "local up exited with {status}");
    let _ = reader.await;
}
