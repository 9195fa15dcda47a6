//! Drains: a node that is about to be destroyed hands every key off and
//! says so, never counts another leaving node as a holder, and never reports
//! a complete hand-off while it is the last holder of a key. Real
//! `chord-node` processes on 127.0.0.1.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chord_node::chord::Id;
use chord_node::client::Client;
use chord_node::events::EventKind;
use chord_node::peer::NodeState;
use chord_node::Error;
use chord_tests::files::{client, no_progress, read_back, small_chunks};
use chord_tests::{fast_with_slow_handoffs, TestCluster, CONVERGE, FAST};

/// Deadline given to a drain that should complete.
const DRAIN: Duration = Duration::from_secs(90);

#[tokio::test]
async fn two_adjacent_nodes_drained_at_once_lose_nothing() {
    // Repair and hand-off rounds take three keys from the index at a time
    // here (every other test's rounds take all of theirs in one page): a
    // run of keys with one owner spans pages, and pages end inside runs.
    let mut args = FAST.to_vec();
    args.extend(["--repair-page-keys", "3"]);
    let mut cluster = TestCluster::start_converged(6, 3, &args).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "drained", 12, |i| 90_000 + i * 7_000)
        .await
        .unwrap();
    // Two neighbours on the ring: together they hold two of the three
    // copies of every key in their ranges, so each must not count the other.
    let truth = cluster.truth();
    let (a, b) = (truth[1].addr.clone(), truth[2].addr.clone());
    let (ra, rb) = tokio::join!(
        cluster.peers.drain(&a, DRAIN),
        cluster.peers.drain(&b, DRAIN)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.is_complete(), "{a}: {ra:?}");
    assert!(rb.is_complete(), "{b}: {rb:?}");
    assert!(
        ra.keys + rb.keys > 0,
        "the drained nodes held nothing: {ra:?} {rb:?}"
    );
    assert!(ra.bytes + rb.bytes > 0, "no bytes moved: {ra:?} {rb:?}");

    // A drained node says it is leaving and holds nothing any more.
    for addr in [&a, &b] {
        let info = cluster.peers.get_info(addr).await.unwrap();
        assert_eq!(info.state, NodeState::Leaving, "{addr}");
        let stats = cluster.peers.get_stats(addr).await.unwrap();
        assert_eq!(stats.chunks + stats.manifests, 0, "{addr} still holds keys");
        let events = cluster.peers.events(addr, 0).await.unwrap();
        let done = events
            .events
            .iter()
            .find(|e| e.kind == EventKind::HandoffDone)
            .unwrap_or_else(|| panic!("{addr} logged no hand-off: {events:?}"));
        assert!(done.bytes > 0 || done.keys > 0, "{done:?}");
    }
    // Every file reads back while the drained nodes still run and answer,
    // though they hold nothing now: a client must not take their word.
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("with two drained nodes still up: {e:#}"));
    // Destroy them, as a scale-in would.
    cluster.fleet.kill(&a).await.unwrap();
    cluster.fleet.kill(&b).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("after draining two neighbours: {e:#}"));
    cluster
        .wait_for(
            "every chunk on exactly its 3 rightful holders",
            Duration::from_secs(60),
            || async { Ok(cluster.placement_mismatch(3).await?.is_none()) },
        )
        .await
        .unwrap();
}

/// [`read_back`] of a name the caller hands over, as
/// [`TestCluster::read_while_draining`] reads.
async fn read_back_owned(reader: &Client, dir: &Path, name: String) -> anyhow::Result<()> {
    read_back(reader, dir, &name).await
}

#[tokio::test]
async fn at_one_copy_a_file_reads_while_its_node_hands_it_over() {
    // One copy of each key, and hand-offs held to 1 MiB/s: for seconds, a
    // file of the draining node's range is there and not yet on its
    // successor, which the ring already routes its keys to.
    let cluster = TestCluster::start_converged(3, 1, &fast_with_slow_handoffs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (names, leaving) = cluster.files_to_hand_over(dir.path()).await.unwrap();
    let entry = cluster.addrs().into_iter().find(|a| *a != leaving).unwrap();
    let reader = client(&entry).unwrap();
    let dir = dir.path();
    cluster
        .read_while_draining(&[&leaving], &names, |name| {
            read_back_owned(&reader, dir, name)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn at_one_copy_a_file_reads_while_it_and_its_successor_hand_over() {
    // A scale-in of two instances may drain two neighbours at once. The
    // first hands its keys past the second, which is leaving too, to the
    // node after both; the second learns of the first's leave, then leaves
    // itself. Reads routed to the node after both must reach back through
    // both for what has not arrived yet.
    let cluster = TestCluster::start_converged(4, 1, &fast_with_slow_handoffs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (names, first) = cluster.files_to_hand_over(dir.path()).await.unwrap();
    let second = cluster.after(&first, 1).unwrap();
    let entry = cluster.after(&first, 2).unwrap();
    let reader = client(&entry).unwrap();
    let dir = dir.path();
    cluster
        .read_while_draining(&[&first, &second], &names, |name| {
            read_back_owned(&reader, dir, name)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn at_one_copy_a_reader_that_knew_the_leaving_owner_reads_the_newer_version() {
    // A client takes a node's report of the keys it owns as good for half
    // a second. The owner of a file starts leaving within that half second
    // and a newer version is written to its successor, which owns the key
    // now: the reader must get that version, not the copy the leaving node
    // still has and keeps answering with while it hands its range over.
    let cluster = TestCluster::start_converged(3, 1, &fast_with_slow_handoffs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, leaving) = cluster.files_to_hand_over(dir.path()).await.unwrap();
    let name = (0..)
        .map(|i| format!("fresh-{i}"))
        .find(|n| cluster.owner_of(&Id::hash(n.as_bytes())).unwrap().addr == leaving)
        .unwrap();
    let others: Vec<String> = cluster
        .addrs()
        .into_iter()
        .filter(|a| *a != leaving)
        .collect();
    let reader = client(&others[0]).unwrap();
    let (writer_entry, name) = (&others[1], name.as_str());
    // Each version by a client of its own, which knows nothing yet.
    let write = |bytes: &'static [u8]| async move {
        client(writer_entry)
            .unwrap()
            .upload(bytes, name, &small_chunks(), &no_progress)
            .await
            .unwrap()
    };
    write(b"the first version").await;
    let read = || async {
        let out = dir.path().join("read.out");
        reader
            .download(name, &out, &small_chunks(), &no_progress)
            .await
            .unwrap();
        std::fs::read(&out).unwrap()
    };
    assert_eq!(read().await, b"the first version");
    let known = std::time::Instant::now();
    let newer = async {
        while cluster.peers.get_info(&leaving).await.unwrap().state != NodeState::Leaving {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        write(b"the second version").await;
        let since = known.elapsed();
        (since, read().await)
    };
    let (report, (since, got)) = tokio::join!(cluster.peers.drain(&leaving, DRAIN), newer);
    assert!(
        since < Duration::from_millis(450),
        "the newer version took {since:?} to write: the reader's report of the old owner \
         is no longer fresh, so this says nothing"
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "the second version",
        "read {since:?} after the reader last heard from the leaving owner"
    );
    let report = report.unwrap();
    assert!(report.is_complete(), "{report:?}");
}

#[tokio::test]
async fn a_drain_with_no_one_to_hand_to_never_reports_complete() {
    // Both nodes of a two-node ring drain at once. Whichever learns of the
    // other's leave first cannot count it as a holder; at most one of them
    // may hand off (to a node that was not leaving yet when it confirmed),
    // and the last holder must keep trying until its deadline, say so, keep
    // its keys and keep serving reads.
    let cluster = TestCluster::start_converged(2, 2, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "kept", 4, |_| 150_000)
        .await
        .unwrap();
    let addrs = cluster.addrs();
    let deadline = Duration::from_secs(6);
    let (r0, r1) = tokio::join!(
        cluster.peers.drain(&addrs[0], deadline),
        cluster.peers.drain(&addrs[1], deadline)
    );
    let reports = [r0.unwrap(), r1.unwrap()];
    assert!(
        !(reports[0].is_complete() && reports[1].is_complete()),
        "both leaving nodes claim a complete hand-off: {reports:?}"
    );
    for (addr, report) in addrs.iter().zip(&reports) {
        if report.is_complete() {
            continue;
        }
        // The stall rule of a plain shutdown (4 quiet rounds) did not end it.
        assert!(report.rounds > 4, "{addr} gave up early: {report:?}");
        assert!(
            report.elapsed_ms >= 5_000,
            "{addr} gave up early: {report:?}"
        );
        let stats = cluster.peers.get_stats(addr).await.unwrap();
        assert!(
            stats.chunks > 0,
            "{addr} is the last holder and lost its chunks"
        );
    }
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("drained nodes must still serve reads: {e:#}"));
    // Each heard the other leave, so each passes what it lacks back to the
    // other: a read of a file no one has must still be answered "not
    // found", within one call deadline (FAST's 1 s), not cut off by one.
    // Passed back without end, it took 1.5 s there.
    for addr in &addrs {
        let asked = std::time::Instant::now();
        let missing = tokio::time::timeout(
            Duration::from_secs(20),
            client(addr).unwrap().manifest("never-written"),
        )
        .await
        .unwrap_or_else(|_| panic!("a read of a missing file through {addr} did not end"));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "a read of a missing file through {addr} took {:?}",
            asked.elapsed()
        );
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    }
}

#[tokio::test]
async fn the_event_log_records_joins_failures_and_repairs() {
    let mut cluster = TestCluster::start_converged(4, 2, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    cluster
        .upload_random_files(dir.path(), "ev", 4, |_| 200_000)
        .await
        .unwrap();
    // A node holding no chunk would leave nothing to repair.
    let victim = cluster.busiest_node().await.unwrap();
    cluster.fleet.kill(&victim).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let watcher = cluster.addrs()[0].clone();
    cluster
        .wait_for(
            "some node reports the failure and a repair",
            Duration::from_secs(30),
            || {
                let peers = &cluster.peers;
                let addrs = cluster.addrs();
                let victim = victim.clone();
                async move {
                    let mut seen = Vec::new();
                    for addr in addrs {
                        seen.extend(peers.events(&addr, 0).await?.events);
                    }
                    let failed = seen.iter().any(|e| {
                        e.kind == EventKind::PeerFailed && e.peer.as_deref() == Some(&victim)
                    });
                    let repaired = seen
                        .iter()
                        .any(|e| e.kind == EventKind::Repair && e.bytes > 0);
                    Ok(failed && repaired)
                }
            },
        )
        .await
        .unwrap();
    // Reading since the cursor returns only newer events.
    let first = cluster.peers.events(&watcher, 0).await.unwrap();
    assert!(!first.events.is_empty());
    let again = cluster.peers.events(&watcher, first.next).await.unwrap();
    assert!(again.events.iter().all(|e| e.seq > first.next));
}

#[tokio::test]
async fn a_node_drained_and_restarted_on_its_address_holds_keys_again() {
    let mut cluster = TestCluster::start_converged(4, 2, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "back", 8, |_| 120_000)
        .await
        .unwrap();
    // The node holding the most chunks: after its restart it is again a
    // rightful holder of some (a node whose arcs hold no key would make
    // "it holds keys again" vacuous).
    let addr = cluster.busiest_node().await.unwrap();
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let report = cluster.peers.drain(&addr, DRAIN).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert!(cluster
        .fleet
        .stop(&addr, Duration::from_secs(30))
        .await
        .unwrap());
    cluster.wait_consistent(CONVERGE).await.unwrap();
    // It told its neighbours once, when the drain began: stopping it
    // afterwards does not tell them again.
    let mut told = 0;
    for other in cluster.addrs() {
        let events = cluster.peers.events(&other, 0).await.unwrap().events;
        let heard = events
            .iter()
            .filter(|e| e.kind == EventKind::NeighbourLeft && e.peer.as_deref() == Some(&addr))
            .count();
        assert!(heard <= 1, "{other} heard {addr} leave {heard} times");
        told += heard;
    }
    assert!(told > 0, "no neighbour heard {addr} leave");
    // Back on the same address (and data dir) well within the time the
    // others remember it as leaving: it must count as a holder again.
    let via = cluster.addrs()[0].clone();
    cluster.fleet.start(port, Some(&via)).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .wait_for(
            "every chunk on exactly its 2 rightful holders, the restarted node included",
            Duration::from_secs(60),
            || async { Ok(cluster.placement_mismatch(2).await?.is_none()) },
        )
        .await
        .unwrap();
    let held = cluster.peers.get_stats(&addr).await.unwrap();
    assert!(held.chunks > 0, "the restarted node holds nothing");
    // And it stays that way: no holder keeps pushing keys back and forth
    // because it still counts the restarted node out. The wait is the test:
    // nothing may move during several repair rounds (1 s each in FAST).
    let pushed = cluster.sum_stats(|s| s.repair_bytes).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pushed_later = cluster.sum_stats(|s| s.repair_bytes).await.unwrap();
    assert_eq!(
        pushed_later,
        pushed,
        "repair still moves bytes on a settled ring: {} more",
        pushed_later - pushed
    );
    assert_eq!(cluster.placement_mismatch(2).await.unwrap(), None);
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap();
}
