//! Listings in pages: `ListKeys` and `ListFiles` answers stop at a page
//! cap, callers page through to the end, and repair still converges on
//! holders whose keys span many pages.

// A failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use chord_node::chord::{Id, NodeRef};
use chord_node::client::TransferOptions;
use chord_node::store::{chunk_key, chunk_path, MAX_INLINE_BYTES};
use chord_tests::files::{client, listed, no_progress, random_file};
use chord_tests::{free_port, TestCluster, CONVERGE, FAST};

/// `FAST` with listing pages of at most `cap` entries.
fn paged(cap: &'static str) -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend(["--list-page-cap", cap]);
    args
}

#[tokio::test]
async fn a_holder_with_more_keys_than_a_page_is_repaired_and_then_left_alone() {
    let mut cluster = TestCluster::start_converged(3, 3, &paged("40"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 300 chunks in one file and 50 one-chunk files (too large to be held
    // in their manifests): every node holds ten pages of keys, and the
    // ring's listing spans two pages of files.
    let opts = TransferOptions {
        chunk_size: chord_node::MIN_CHUNK_BYTES,
        ..TransferOptions::default()
    };
    let big = random_file(dir.path(), "many-chunks", 300 * opts.chunk_size).unwrap();
    client(&cluster.addrs()[0])
        .unwrap()
        .upload_file(&big, "many-chunks", &opts, &no_progress)
        .await
        .unwrap();
    let mut names = cluster
        .upload_random_files(dir.path(), "small", 50, |_| MAX_INLINE_BYTES + 100)
        .await
        .unwrap();
    names.push("many-chunks".to_string());
    names.sort();
    assert_eq!(
        listed(&client(&cluster.random_addr().unwrap()).unwrap())
            .await
            .unwrap(),
        names,
        "ls pages through every name once, in order"
    );

    // A node and its disk are lost; a new, empty node takes the place, and
    // the others must fill it through listings of many pages.
    let lost = cluster.addrs()[1].clone();
    cluster.fleet.kill(&lost).await.unwrap();
    let fresh = cluster.add_node().await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .wait_for(
            "every key on exactly its three holders",
            Duration::from_secs(120),
            || async {
                let stats = cluster.peers.get_stats(&fresh).await?;
                Ok(stats.chunks == 350
                    && stats.manifests == 51
                    && cluster.placement_mismatch(3).await?.is_none())
            },
        )
        .await
        .unwrap();
    // Every holder now lists every key, in whatever number of pages, so
    // repair has nothing left to push: a caller that read only the first
    // page of a listing would push the rest again every round.
    let pushed = || cluster.sum_stats(|s| s.repair_bytes);
    let before = pushed().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pushed().await.unwrap(), before, "repair kept pushing");
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap();
}

/// Writes `chunks` (key, bytes) into the data dir `root` as the store lays
/// them out; those whose index is in `skip` are left out. With `link_from`,
/// each file is a hard link to the same chunk under that data dir.
fn lay_out_chunks(
    root: &Path,
    chunks: &[(Id, Vec<u8>)],
    skip: std::ops::Range<usize>,
    link_from: Option<&Path>,
) {
    for (i, (key, data)) in chunks.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let to = chunk_path(root, key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        match link_from {
            Some(from) if !chunk_path(from, key).exists() => std::fs::write(&to, data).unwrap(),
            Some(from) => std::fs::hard_link(chunk_path(from, key), &to).unwrap(),
            None => std::fs::write(&to, data).unwrap(),
        }
    }
}

/// 300,000 keys in one holder's range: one listing of them is about
/// 6.6 MB, past the 4 MiB message cap, so without pages repair could never
/// compare the two holders. Each lacks keys the other has; they converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_thousand_keys_page_through_and_repair_converges() {
    const KEYS: usize = 300_000;
    const MISSING: usize = 50;
    let started = Instant::now();
    // Scrub little: a round's budget is a few hundred of these 1 KiB chunks.
    let mut args = FAST.to_vec();
    args.extend(["--scrub-mib-per-sec", "1"]);
    // Memory, where creating and removing 600k files takes seconds, not
    // minutes.
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let mut cluster = TestCluster::new_in(&parent, 2, &args).unwrap();
    let (port_a, port_b) = (free_port().unwrap(), free_port().unwrap());
    let a = NodeRef::from_addr(format!("127.0.0.1:{port_a}"));
    let b = NodeRef::from_addr(format!("127.0.0.1:{port_b}"));
    // Every key in the larger of the two arcs, so one run of repair covers
    // them all.
    let (start, end) = if (b.id.fraction() - a.id.fraction()).rem_euclid(1.0) >= 0.5 {
        (a.id, b.id)
    } else {
        (b.id, a.id)
    };
    let chunks: Vec<(Id, Vec<u8>)> = (0u64..)
        .map(|i| {
            let data = format!("{i:016}").repeat(64).into_bytes();
            (chunk_key(&data), data)
        })
        .filter(|(key, _)| key.in_half_open(&start, &end))
        .take(KEYS)
        .collect();
    let dir_a = cluster.data_root().join(port_a.to_string());
    let dir_b = cluster.data_root().join(port_b.to_string());
    // A lacks the first keys, B the last ones.
    lay_out_chunks(&dir_a, &chunks, 0..MISSING, None);
    lay_out_chunks(&dir_b, &chunks, KEYS - MISSING..KEYS, Some(&dir_a));
    let laid_out = started.elapsed();

    let addr_a = cluster.fleet.start(port_a, None).await.unwrap();
    cluster.fleet.start(port_b, Some(&addr_a)).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let listed = cluster
        .peers
        .list_keys(&addr_a, &start, &end)
        .await
        .unwrap();
    // Repair may already have pushed A some of its missing keys (it runs
    // from the moment the ring forms), so the listing holds every key A
    // was given, each once, and nothing but the test's keys.
    let listed_set: std::collections::HashSet<Id> = listed.chunks.iter().copied().collect();
    assert_eq!(listed_set.len(), listed.chunks.len(), "a key listed twice");
    assert!(
        chunks[MISSING..]
            .iter()
            .all(|(key, _)| listed_set.contains(key)),
        "A's listing lost some of the keys it was given"
    );
    let all: std::collections::HashSet<Id> = chunks.iter().map(|(key, _)| *key).collect();
    assert!(
        listed_set.is_subset(&all),
        "A listed a key it was never given"
    );
    let took = cluster
        .wait_for(
            "both holders hold all 300k keys",
            Duration::from_secs(180),
            || async {
                for addr in cluster.addrs() {
                    if cluster.peers.get_stats(&addr).await?.chunks != KEYS as u64 {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await
        .unwrap();
    assert_eq!(cluster.placement_mismatch(2).await.unwrap(), None);
    eprintln!(
        "laid out in {laid_out:?}, converged {took:?} after the ring formed, {:?} in all",
        started.elapsed()
    );
}
