//! The `chord-console` binary as scripts use it: `--json` documents whose
//! keys are a contract, exit codes, and one-line reasons on failure.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use chord_node::chord::{Id, NodeRef};
use chord_tests::files::{chunk_tree_hex, random_file};
use chord_tests::{TestCluster, FAST};
use serde_json::Value;

fn console_binary() -> PathBuf {
    let node = chord_console::fleet::locate_node_binary().unwrap();
    node.with_file_name("chord-console")
}

async fn console(peer: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(console_binary());
    cmd.arg("--peer").arg(peer).args(args);
    chord_tests::output_within(&mut cmd, Duration::from_secs(120)).await
}

async fn json(peer: &str, args: &[&str]) -> Value {
    let out = console(peer, args).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn json_documents_keep_their_contract() {
    let cluster = TestCluster::start_converged(5, 3, FAST).await.unwrap();
    let peer = cluster.random_addr().unwrap();

    // ring --json: nodes in ring order with the contract keys.
    let ring = json(&peer, &["ring", "--json"]).await;
    let nodes = ring["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    let truth = cluster.truth();
    let start = truth
        .iter()
        .position(|n| n.addr == nodes[0]["addr"])
        .unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let want = &truth[(start + i) % truth.len()];
        assert_eq!(node["addr"], want.addr.as_str());
        assert_eq!(node["id"], want.id.to_hex().as_str());
        let pred = &truth[(start + i + truth.len() - 1) % truth.len()];
        assert_eq!(node["predecessor"], pred.addr.as_str());
        let succ = &truth[(start + i + 1) % truth.len()];
        assert_eq!(node["successors"][0], succ.addr.as_str());
        assert!(!node["fingers"].as_array().unwrap().is_empty());
    }

    // lookup by key and by name.
    let key = Id::hash(b"some key");
    let found = json(&peer, &["lookup", "--key", &key.to_hex(), "--json"]).await;
    let owner: NodeRef = cluster.owner_of(&key).unwrap();
    assert_eq!(found["key"], key.to_hex().as_str());
    assert_eq!(found["owner"]["addr"], owner.addr.as_str());
    assert_eq!(found["owner"]["id"], owner.id.to_hex().as_str());
    assert!(found["hops"].as_u64().is_some());
    let by_name = json(&peer, &["lookup", "report.pdf", "--json"]).await;
    assert_eq!(by_name["key"], Id::hash(b"report.pdf").to_hex().as_str());

    // upload, ls, status, download, rm.
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "data.bin", 300_000).unwrap();
    let up = json(
        &peer,
        &[
            "upload",
            src.to_str().unwrap(),
            "--chunk-size",
            "65536",
            "--json",
        ],
    )
    .await;
    assert_eq!(up["name"], "data.bin");
    assert_eq!(up["size"], 300_000);
    assert_eq!(up["chunks"], 5);
    let bytes = std::fs::read(&src).unwrap();
    let tree = chunk_tree_hex(&bytes, 65536);
    assert_eq!(up["blake3_chunks"], tree.as_str(), "{up}");
    // `checksum` makes the same of the local file, at the same chunk size,
    // and another at another.
    let sum = json(
        &peer,
        &[
            "checksum",
            src.to_str().unwrap(),
            "--chunk-size",
            "65536",
            "--json",
        ],
    )
    .await;
    assert_eq!(sum["blake3_chunks"], tree.as_str(), "{sum}");
    assert_eq!(sum["size"], 300_000, "{sum}");
    let default_size = json(&peer, &["checksum", src.to_str().unwrap(), "--json"]).await;
    let whole = chunk_tree_hex(&bytes, chord_node::DEFAULT_CHUNK_BYTES);
    assert_eq!(
        default_size["blake3_chunks"],
        whole.as_str(),
        "{default_size}"
    );
    assert_ne!(whole, tree);
    let ls = json(&peer, &["ls", "--json"]).await;
    assert_eq!(ls["files"][0]["name"], "data.bin");
    assert_eq!(ls["files"][0]["size"], 300_000);
    // status: 3 copies of each of the 5 chunks, summed over the nodes
    // (once the repair loop has nothing left to do).
    cluster
        .wait_for(
            "status sums to 3 x 5 chunks",
            Duration::from_secs(30),
            || async {
                let status = json(&peer, &["status", "--json"]).await;
                let nodes = status["nodes"].as_array().unwrap();
                let chunks: u64 = nodes.iter().map(|n| n["chunks"].as_u64().unwrap()).sum();
                let keys_ok = nodes.iter().all(|n| {
                    n["addr"].is_string()
                        && n["id"].is_string()
                        && n["manifests"].is_u64()
                        && n["bytes"].is_u64()
                        // A node holding a manifest has it in its log.
                        && (n["manifests"].as_u64() == Some(0)
                            || n["manifest_log_bytes"].as_u64() > Some(0))
                });
                let none_silent = status["unreachable"].as_array().is_some_and(Vec::is_empty);
                Ok(nodes.len() == 5 && keys_ok && none_silent && chunks == 15)
            },
        )
        .await
        .unwrap();
    let out = dir.path().join("back.bin");
    let down = json(
        &peer,
        &[
            "download",
            "data.bin",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(down["size"], 300_000);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    // `-o -` streams the bytes to stdout, for pipes.
    let piped = console(&peer, &["download", "data.bin", "-o", "-"]).await;
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(
        piped.stdout == std::fs::read(&src).unwrap(),
        "stdout bytes differ"
    );
    let rm = json(&peer, &["rm", "data.bin", "--json"]).await;
    assert_eq!(rm["deleted"], true);
    assert_eq!(
        json(&peer, &["ls", "--json"]).await["files"],
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn failures_exit_non_zero_with_one_line() {
    let cluster = TestCluster::start(2, 3, FAST).await.unwrap();
    let peer = cluster.addrs()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let missing_out = dir.path().join("never");
    let small = dir.path().join("small");
    std::fs::write(&small, b"a small file").unwrap();
    let stored = console(&peer, &["upload", &small.display().to_string()]).await;
    assert!(stored.status.success(), "{stored:?}");
    let nowhere = dir.path().join("no-such-dir").join("small");
    let dead = format!("127.0.0.1:{}", chord_tests::free_port().unwrap());
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            peer.clone(),
            vec![
                "download".into(),
                "nope".into(),
                "-o".into(),
                missing_out.display().to_string(),
            ],
            "no file named",
        ),
        (
            peer.clone(),
            vec!["lookup".into(), "--key".into(), "xyz".into()],
            "40 hex digits",
        ),
        (
            peer.clone(),
            vec!["upload".into(), "/no/such/file".into()],
            "cannot read",
        ),
        (
            peer.clone(),
            vec!["rm".into(), "a/b".into()],
            "invalid argument",
        ),
        // Refused before any progress line.
        (
            peer.clone(),
            vec!["upload".into(), dir.path().display().to_string()],
            "is a directory; an upload takes one file",
        ),
        (
            peer.clone(),
            vec![
                "upload".into(),
                small.display().to_string(),
                "--name".into(),
                "a/b".into(),
            ],
            "path separator",
        ),
        (
            peer.clone(),
            vec![
                "download".into(),
                "small".into(),
                "-o".into(),
                nowhere.display().to_string(),
            ],
            "cannot write",
        ),
        (
            peer.clone(),
            vec!["checksum".into(), "/no/such/file".into()],
            "cannot open /no/such/file",
        ),
        (
            peer.clone(),
            vec!["checksum".into(), dir.path().display().to_string()],
            "is a directory",
        ),
        // Opens, then fails to read (offset 0 of a process's memory is
        // not mapped): the error names the file.
        (
            peer.clone(),
            vec!["checksum".into(), "/proc/self/mem".into()],
            "cannot read /proc/self/mem",
        ),
        (
            peer.clone(),
            vec![
                "checksum".into(),
                "/dev/null".into(),
                "--chunk-size".into(),
                "1".into(),
            ],
            "chunk size must be",
        ),
        (dead, vec!["ring".into()], "unreachable"),
        ("not-an-address".into(), vec!["ring".into()], "--peer"),
    ];
    for (peer, args, reason) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = console(&peer, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {stderr}"
        );
        assert!(
            stderr.starts_with("chord-console: ") && stderr.contains(reason),
            "{args:?}: unclear reason {stderr:?}"
        );
    }
    assert!(
        !missing_out.exists(),
        "a failed download left a file behind"
    );
    // An upload's read error names the file too (after its progress line:
    // the file says it is empty, so the upload starts).
    let out = console(&peer, &["upload", "/proc/self/mem"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uploading /proc/self/mem succeeded");
    assert!(
        stderr.lines().last().is_some_and(
            |l| l.starts_with("chord-console: ") && l.contains("cannot read /proc/self/mem")
        ),
        "unclear reason {stderr:?}"
    );
}

/// `chord-console --peer PEER ARGS` with its stdout sent to `stdout`; a
/// piped stdout's reader goes at once, before the console has asked the
/// ring anything, so its first write finds the pipe closed.
async fn console_writing_to(peer: &str, args: &[&str], stdout: std::process::Stdio) -> Output {
    let mut child = tokio::process::Command::new(console_binary())
        .arg("--peer")
        .arg(peer)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the console hung on its stdout")
        .unwrap()
}

/// Output to a pipe whose reader has gone (`| head`) ends the command
/// quietly and successfully; output to a full disk is a one-line failure.
/// Neither panics.
#[tokio::test]
async fn a_closed_or_full_stdout_is_no_panic() {
    let cluster = TestCluster::start(2, 3, FAST).await.unwrap();
    let peer = cluster.addrs()[0].clone();
    for args in [&["status"][..], &["--json", "ring"], &["ls"]] {
        let out = console_writing_to(&peer, args, std::process::Stdio::piped()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = console_writing_to(&peer, args, full.into()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "chord-console: writing to standard output: No space left on device (os error 28)",
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn a_console_pointed_at_a_gateway_port_says_so() {
    let mut cluster = TestCluster::new(1, FAST).unwrap();
    let grpc = chord_tests::free_port().unwrap();
    let http = chord_tests::free_port().unwrap();
    let addr = cluster
        .fleet
        .start_with_http(grpc, None, Some(http))
        .await
        .unwrap();
    let out = console(&format!("127.0.0.1:{http}"), &["ring"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains("HTTP gateway") && stderr.contains(&addr),
        "does not name the gateway and the gRPC address: {stderr}"
    );
}

/// `bench transfer --json` of `load` (its size flags) in a fresh
/// directory, which it must leave empty; its document.
async fn bench_transfer(load: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "transfer",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(load);
    let doc = json("127.0.0.1:1", &args).await;
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the bench left its data behind"
    );
    doc
}

/// `bench transfer` end to end on a tiny load: three small files through
/// every setup (client r=1, curl through the gateways, client r=3, the
/// plain server), each download checked by SHA-256 inside the bench, and
/// a JSON document with a speed, a rate of files and a ratio per setup.
#[tokio::test]
async fn bench_transfer_runs_every_setup_on_small_files() {
    let doc = bench_transfer(&["--size", "20KiB", "--files", "3"]).await;
    assert_eq!(doc["files"], 3);
    let setups = doc["setups"].as_array().unwrap();
    let names: Vec<&str> = setups
        .iter()
        .map(|s| s["setup"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chord-dfs r=1",
            "r=1 curl+gw",
            "chord-dfs r=3",
            "http baseline"
        ]
    );
    for setup in setups {
        for key in ["upload_files_per_s", "download_files_per_s", "upload_ratio"] {
            assert!(setup[key].as_f64().unwrap() > 0.0, "{key} of {setup}");
        }
    }
    // The breakdown: each stage where the work must have happened took
    // time, on the side that did it; the baseline has none.
    let stage = |setup: &Value, way: &str, side: &str, name: &str| {
        setup["stages"][way][side][name].as_f64().unwrap_or(0.0)
    };
    let r1 = &setups[0];
    assert_eq!(r1["stages"]["upload"]["per"], "file");
    for (way, side, name) in [
        ("upload", "client_us", "chunk_key"),
        ("upload", "client_us", "put_chunk_call"),
        ("upload", "nodes_us", "chunk_check"),
        ("upload", "nodes_us", "disk_sync"),
        ("upload", "nodes_us", "log_write"),
        ("upload", "nodes_us", "log_sync"),
        ("download", "client_us", "get_chunk_call"),
        ("download", "client_us", "file_write"),
        ("download", "nodes_us", "disk_read"),
    ] {
        assert!(
            stage(r1, way, side, name) > 0.0,
            "{way} {side} {name}: {r1}"
        );
    }
    // CPU time comes in clock ticks of 10 ms, which three small files on
    // one setup may not reach; summed over every chord-dfs setup and both
    // ways, the nodes' work does.
    let nodes_cpu: f64 = setups[..3]
        .iter()
        .flat_map(|s| ["upload", "download"].map(|way| stage(s, way, "cpu_us", "nodes")))
        .sum();
    assert!(nodes_cpu > 0.0, "{setups:?}");
    // Through the gateway, the nodes run the client's stages themselves.
    let gateway = &setups[1];
    assert!(
        stage(gateway, "upload", "nodes_us", "chunk_key") > 0.0,
        "{gateway}"
    );
    assert_eq!(stage(gateway, "upload", "client_us", "chunk_key"), 0.0);
    // Three copies: the owner forwards each chunk, and each manifest, to
    // two successors.
    for name in ["put_chunk_call", "manifest_call"] {
        assert!(
            stage(&setups[2], "upload", "nodes_us", name) > 0.0,
            "{name}"
        );
    }
    assert!(setups[3]["stages"].is_null());
}

/// `bench transfer` of one file adds the disk alone, doing the r=1 and r=3
/// setups' disk work with nothing else, as rows beside the setups: both
/// directions measured and compared with the baseline, one download
/// figure for both, no memory or stages of their own.
#[tokio::test]
async fn bench_transfer_of_one_file_shows_the_disk_alone() {
    let doc = bench_transfer(&["--size", "1100KiB", "--chunk-size", "256KiB"]).await;
    let setups = doc["setups"].as_array().unwrap();
    let alone: Vec<&Value> = setups.iter().filter(|s| s["disk_alone"] == true).collect();
    let names: Vec<&str> = alone.iter().map(|s| s["setup"].as_str().unwrap()).collect();
    assert_eq!(names, ["disk alone r=1", "disk alone r=3"]);
    for row in &alone {
        for key in [
            "upload_mb_per_s",
            "download_mb_per_s",
            "upload_ratio",
            "download_ratio",
        ] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key} of {row}");
        }
        assert!(
            row["peak_node_rss_mib"].is_null() && row["stages"].is_null(),
            "{row}"
        );
        assert_eq!(row["baseline"], false);
        assert!(row["direct_io"].is_boolean(), "{row}");
    }
    assert!(setups
        .iter()
        .filter(|s| s["disk_alone"] == false)
        .all(|s| s["direct_io"].is_null()));
    // Each chord-dfs setup is compared with the disk alone of its copies.
    let secs = |setup: &Value, key: &str| setup[key].as_f64().unwrap();
    for (setup, disk) in [(0, 0), (1, 0), (2, 1)] {
        let (setup, disk) = (&setups[setup], alone[disk]);
        for way in ["upload", "download"] {
            let of_disk = secs(setup, &format!("{way}_of_disk_alone"));
            let want = secs(disk, &format!("{way}_secs")) / secs(setup, &format!("{way}_secs"));
            assert!((of_disk - want).abs() < 1e-9, "{way} of {setup}");
        }
    }
    for row in alone.iter().copied().chain(setups.last()) {
        assert!(row["upload_of_disk_alone"].is_null(), "{row}");
    }
    assert_eq!(alone[0]["download_secs"], alone[1]["download_secs"]);
    assert_eq!(setups.last().unwrap()["setup"], "http baseline");
}
