//! A frozen node (SIGSTOP: its sockets stay open, nothing answers) seen
//! through the console as an operator runs it: every command still
//! finishes, each within its healthy time plus one call deadline and one
//! retry.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use chord_node::chord::Id;
use chord_tests::files::random_file;
use chord_tests::{console_binary, Frozen, TestCluster, FAST};

/// The console's deadline for one call, here and in every command below.
const DEADLINE: Duration = Duration::from_millis(1000);

/// What a command may take beyond its healthy time and two deadlines (the
/// one the frozen node costs, and the retry's): the retry's back-off, and
/// what a debug build on a loaded machine adds.
const SLACK: Duration = Duration::from_secs(2);

/// Runs the console with `args` against `peer`, failing the test if it
/// does not succeed; returns how long it took and its stdout.
async fn timed(peer: &str, args: &[&str]) -> (Duration, String) {
    let mut cmd = tokio::process::Command::new(console_binary().unwrap());
    cmd.arg("--peer")
        .arg(peer)
        .arg("--timeout-ms")
        .arg(DEADLINE.as_millis().to_string())
        .args(args);
    let started = Instant::now();
    let out = chord_tests::output_within(&mut cmd, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{args:?} failed after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The four commands, each as `run` gives it.
const COMMANDS: [&str; 4] = ["ls", "status", "upload", "download"];

/// Runs `command` (one of [`COMMANDS`]) once through `peer`.
async fn run(command: &str, peer: &str, dir: &Path, round: &str) -> (Duration, String) {
    match command {
        "upload" => {
            let fresh = random_file(dir, &format!("{round}.bin"), 1 << 21).unwrap();
            let args = ["upload", "--chunk-size", "262144", fresh.to_str().unwrap()];
            timed(peer, &args).await
        }
        "download" => {
            let out = dir.join(format!("{round}.out"));
            let answer = timed(peer, &["download", "kept.bin", "-o", out.to_str().unwrap()]).await;
            assert_eq!(
                std::fs::read(dir.join("kept.bin")).unwrap(),
                std::fs::read(&out).unwrap(),
                "{round}: the download differs from the upload"
            );
            answer
        }
        other => timed(peer, &[other]).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_costs_each_command_at_most_a_deadline_and_a_retry() {
    let cluster = TestCluster::start_converged(5, 3, FAST).await.unwrap();
    // The frozen node owns the kept file's manifest, so a download must
    // find another holder; 8 chunks over 5 nodes give it chunks too.
    let frozen = cluster.owner_of(&Id::hash(b"kept.bin")).unwrap().addr;
    let entry = cluster.addrs().into_iter().find(|a| *a != frozen).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kept = random_file(dir.path(), "kept.bin", 1 << 21).unwrap();
    timed(
        &entry,
        &["upload", "--chunk-size", "262144", kept.to_str().unwrap()],
    )
    .await;
    let pid = cluster.fleet.node(&frozen).unwrap().pid().unwrap();
    for command in COMMANDS {
        let (healthy, _) = run(command, &entry, dir.path(), &format!("{command}-healthy")).await;
        // Each command meets a fresh freeze: the ring still counts the
        // node in, as it does for the first seconds of a real stall.
        let (took, stdout) = {
            let _frozen = Frozen::freeze(pid).await.unwrap();
            run(command, &entry, dir.path(), &format!("{command}-frozen")).await
        };
        eprintln!("{command}: healthy {healthy:?}, with a frozen node {took:?}");
        assert!(
            took <= healthy + 2 * DEADLINE + SLACK,
            "{command} took {took:?} with a frozen node, {healthy:?} without"
        );
        match command {
            "ls" => assert!(stdout.contains("kept.bin"), "ls lost a file: {stdout}"),
            "status" => {
                let answering = cluster
                    .addrs()
                    .into_iter()
                    .filter(|a| *a != frozen && stdout.contains(a.as_str()))
                    .count();
                assert_eq!(answering, 4, "status left out live nodes: {stdout}");
                assert!(
                    stdout
                        .lines()
                        .any(|l| l.starts_with(&frozen) && l.contains("does not answer")),
                    "status does not show the frozen node: {stdout}"
                );
            }
            _ => {}
        }
        cluster
            .wait_consistent(chord_tests::CONVERGE)
            .await
            .unwrap();
    }
    // What was uploaded during the freeze is whole once the node is back.
    let back = dir.path().join("upload-frozen.back");
    timed(
        &entry,
        &[
            "download",
            "upload-frozen.bin",
            "-o",
            back.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        std::fs::read(dir.path().join("upload-frozen.bin")).unwrap(),
        std::fs::read(&back).unwrap()
    );
}
