//! The TUI as an operator meets it: the real `chord-console` binary in a
//! real terminal (a tmux pane), on a local fleet it starts itself. The test
//! presses keys and reads the screen (selection, help, upload, download,
//! adding and killing a node), then checks that quitting stops every node
//! of the fleet.
//! Also the TUI's poller against a real ring with a node that never
//! answers: one poll still costs only its deadline.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chord_console::tui::model::NodeState;
use chord_console::tui::poller::{poll_once, Memory, POLL_DEADLINE};
use chord_node::peer::{PeerOptions, PeerPool};
use chord_tests::files::{client, no_progress, random_file, small_chunks};
use chord_tests::tmux::{require_tmux, Tmux};
use chord_tests::{TestCluster, CONVERGE, FAST};

/// Nodes the TUI starts.
const NODES: u16 = 3;

/// A gRPC base and a gateway base whose next `n` ports are all free.
fn free_bases(n: u16) -> (u16, u16) {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20000 + (seed.wrapping_add(attempt.wrapping_mul(97)) % 10000);
        let http = base + 10000;
        if (0..n).all(|i| free(base + i) && free(http + i)) {
            return (base, http);
        }
    }
    panic!("no free port range found");
}

/// The `Fingers #i` of the selected node, its ring position.
fn selected_position(screen: &str) -> usize {
    let at = screen.find("Fingers #").expect("no fingers pane");
    screen[at + "Fingers #".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs tmux (tests/setup.sh); run with --run-ignored all"]
fn the_tui_drives_a_local_fleet_and_stops_it_on_quit() {
    require_tmux();
    let console: PathBuf = chord_console::fleet::locate_node_binary()
        .unwrap()
        .with_file_name("chord-console");
    let dir = tempfile::tempdir().unwrap();
    let data_root = dir.path().join("fleet");
    let log = dir.path().join("console.log");
    let upload = random_file(dir.path(), "tui-upload.bin", 300 * 1024).unwrap();
    // One more than the fleet: `+` adds a node on the next port.
    let (base, http) = free_bases(NODES + 1);
    let command = format!(
        "env -u CHORD_PEER {} --nodes {NODES} --base-port {base} --http-base-port {http} \
         --data-root {} --log-file {}; echo CONSOLE-EXITED-$?; sleep 120",
        console.display(),
        data_root.display(),
        log.display()
    );
    let tmux = Tmux::start(160, 48, &command);
    let addrs: Vec<String> = (0..NODES)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect();

    // Every node of the fleet, the ring, the fingers, the distribution, a graph.
    let screen = tmux.wait_for("all node addresses", |s| {
        addrs.iter().all(|a| s.contains(a.as_str())) && s.contains(&format!("Nodes ({NODES})"))
    });
    for pane in [
        "Ring ·",
        "Fingers #",
        "Distribution",
        "requests ·",
        "Events (",
    ] {
        assert!(screen.contains(pane), "no {pane} on screen:\n{screen}");
    }

    // j and k move the selection; the fingers pane follows it.
    let before = selected_position(&screen);
    let last = usize::from(NODES) - 1;
    let down = (before + 1).min(last);
    tmux.press("j");
    tmux.wait_for("j to move down", |s| selected_position(s) == down);
    tmux.press("k");
    tmux.wait_for("k to move up", |s| {
        selected_position(s) == down.saturating_sub(1)
    });

    // ? shows every key; Esc closes it.
    tmux.press("?");
    tmux.wait_for("the help overlay", |s| {
        s.contains("Keys (? or Esc closes)") && s.contains("kill the selected node")
    });
    tmux.press("Escape");
    tmux.wait_for("the help to close", |s| {
        !s.contains("Keys (? or Esc closes)")
    });

    // u, a path, Enter: the upload runs and the file shows in the files pane.
    tmux.press("u");
    tmux.wait_for("the upload prompt", |s| {
        s.contains("Upload: path of a local file")
    });
    tmux.type_text(&upload.display().to_string());
    tmux.press("Enter");
    // The transfers pane keeps a finished transfer for a while; the event
    // line may scroll by sooner.
    tmux.wait_for("the upload to finish", |s| {
        s.contains("uploaded tui-upload.bin") || s.contains("↑ tui-upload.bin done")
    });
    tmux.press("f");
    tmux.wait_for("the file in the files pane", |s| {
        s.contains("Files (1)")
            && s.lines()
                .any(|l| l.contains("tui-upload.bin") && l.contains("KiB"))
    });

    // d downloads the selected file (the files pane has the focus) to where we say.
    let back = dir.path().join("downloaded.bin");
    tmux.press("d");
    tmux.wait_for("the download prompt", |s| {
        s.contains("Download tui-upload.bin to:")
    });
    tmux.press("C-u");
    tmux.type_text(&back.display().to_string());
    tmux.press("Enter");
    tmux.wait_for("the download to finish", |s| {
        s.contains("downloaded tui-upload.bin") || s.contains("↓ tui-upload.bin done")
    });
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&upload).unwrap(),
        "the download differs"
    );

    // + starts a node on the next port, which joins and is polled.
    let added = format!("127.0.0.1:{}", base + NODES);
    tmux.press("+");
    let added_line = format!("added {added}");
    let grown = format!("Nodes ({})", NODES + 1);
    tmux.wait_for_each(
        "the added node",
        &[&|s: &str| s.contains(&added_line), &|s: &str| {
            s.contains(&grown) && s.contains(added.as_str())
        }],
    );

    // x asks, y kills the selected node; the ring reports the failure and
    // routes around it.
    tmux.press("x");
    let screen = tmux.wait_for("the kill question", |s| {
        s.contains("(kill -9, no hand-off)?")
    });
    let victim: String = screen
        .split("Kill ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    tmux.press("y");
    // Event lines scroll by as the ring repairs: each needs only be seen once.
    let killed = format!("killed {victim}");
    let nodes_left = format!("Nodes ({NODES})");
    tmux.wait_for_each(
        "the failure to be reported",
        &[
            &|s: &str| s.contains(&killed),
            &|s: &str| {
                s.lines()
                    .any(|l| l.contains("peer-failed") && l.contains(victim.as_str()))
            },
            &|s: &str| s.contains(&nodes_left),
        ],
    );

    // q stops the fleet and leaves the terminal to the shell.
    tmux.press("q");
    tmux.wait_for("the console to exit", |s| s.contains("CONSOLE-EXITED-"));
    let screen = tmux.screen();
    assert!(
        screen.contains("CONSOLE-EXITED-0"),
        "the console failed:\n{screen}"
    );
    for port in base..=base + NODES {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a node still listens on {port} after quit"
        );
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("starting a local fleet"),
        "no log written: {log_text}"
    );
}

#[tokio::test]
async fn a_poll_sees_the_whole_ring_from_one_seed_and_a_silent_node_costs_only_the_deadline() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let addrs = cluster.addrs();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "polled.bin", 200 * 1024).unwrap();
    client(&addrs[0])
        .unwrap()
        .upload_file(&file, "polled.bin", &small_chunks(), &no_progress)
        .await
        .unwrap();
    // An upload is acknowledged at min(R, successors known) copies; on a
    // ring this young a successor list may still be short, and repair makes
    // up the rest. The poll below must count what the nodes hold.
    cluster
        .wait_for("three copies of each chunk", CONVERGE, || async {
            Ok(cluster.chunk_copies().await? == 4 * 3)
        })
        .await
        .unwrap();
    // A "node" that takes connections and never says a word: the kernel
    // completes the TCP handshake, the HTTP/2 one never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    // Calls far slower than the poll's deadline: only that deadline bounds it.
    let pool = PeerPool::new(PeerOptions {
        rpc_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
        ..PeerOptions::default()
    });
    let seeds = vec![silent_addr.clone(), addrs[0].clone()];
    let mut memory = Memory::default();
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let (snapshot, events) = poll_once(
            &pool,
            &seeds,
            &mut memory,
            Some(addrs[1].clone()),
            chord_node::now_ms(),
        )
        .await;
        let took = started.elapsed();
        assert!(
            took < POLL_DEADLINE + Duration::from_millis(500),
            "a poll took {took:?}"
        );
        snapshots.push((snapshot, events));
    }
    let (first, events) = &snapshots[0];
    // Every node, found from one answering seed, in ring order.
    let serving: Vec<&str> = first
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Serving)
        .map(|n| n.addr.as_str())
        .collect();
    assert_eq!(serving.len(), 3, "{:?}", first.nodes);
    for addr in &addrs {
        assert!(serving.contains(&addr.as_str()), "{addr} missing");
    }
    assert!(first.nodes.windows(2).all(|w| w[0].id < w[1].id));
    let silent_view = first.nodes.iter().find(|n| n.addr == silent_addr).unwrap();
    assert_eq!(silent_view.state, NodeState::Unreachable);
    // Fingers, successors, counters and the file, in the console's own types.
    for node in first.nodes.iter().filter(|n| n.state == NodeState::Serving) {
        assert!(!node.fingers.is_empty(), "{} has no fingers", node.addr);
        assert!(!node.successors.is_empty());
    }
    let copies: u64 = first.nodes.iter().map(|n| n.counters.chunks).sum();
    assert_eq!(
        copies,
        4 * 3,
        "200 KiB in 64 KiB chunks, three copies each: {:?}",
        first
            .nodes
            .iter()
            .map(|n| (&n.addr, n.counters.chunks))
            .collect::<Vec<_>>()
    );
    let files = first.files.as_ref().unwrap();
    assert!(files
        .iter()
        .any(|f| f.name == "polled.bin" && f.size == 200 * 1024));
    // The nodes' own logs: each created or joined the ring.
    assert!(
        events.iter().any(|e| e.kind == "joined") && events.iter().any(|e| e.kind == "created"),
        "{events:?}"
    );
    // The second poll reads only new events, and has rates from the deltas.
    let (second, again) = &snapshots[1];
    assert!(!again.iter().any(|e| e.kind == "created"), "{again:?}");
    assert!(second
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Serving)
        .all(|n| n.rates.requests > 0.0));
}
