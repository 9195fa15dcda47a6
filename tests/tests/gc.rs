//! Space comes back: deleted and overwritten files free their chunks on
//! every holder, tombstones expire, and no live byte is ever collected —
//! under stalled uploads, shared chunks, a node back after a long absence,
//! and kills.
// A failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chord_node::store::{chunk_key, CheckedChunk};
use chord_tests::files::{client, listed, no_progress, random_file, small_chunks};
use chord_tests::{TestCluster, CONVERGE, FAST};
use rand::Rng;

/// Collection every 300 ms, with a grace period of 3 s.
const GC_GRACE_SECS: u64 = 3;
/// How long a test gives the collector to bring the stored bytes down.
const COLLECT: Duration = Duration::from_secs(60);
const CHUNK: u64 = 64 * 1024;
const R: usize = 3;

/// FAST plus a short collection grace; `tombstone_grace_secs` as given.
fn gc_args(tombstone_grace_secs: u64) -> Vec<String> {
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--gc-ms",
            "300",
            "--gc-grace-secs",
            &GC_GRACE_SECS.to_string(),
            "--gc-chunks-per-sec",
            "5000",
            "--tombstone-grace-secs",
            &tombstone_grace_secs.to_string(),
        ]
        .map(String::from),
    );
    args
}

async fn gc_cluster(n: usize, tombstone_grace_secs: u64) -> TestCluster {
    let args = gc_args(tombstone_grace_secs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestCluster::start_converged(n, R, &args).await.unwrap()
}

/// Bytes held by every live node (chunks and manifests), as `status` sums them.
async fn stored(cluster: &TestCluster) -> u64 {
    cluster.sum_stats(|s| s.bytes).await.unwrap()
}

/// Waits until the ring holds R copies of `live_bytes` plus at most
/// `slack`: collection has finished, and repair has every copy back.
/// (Whether the live bytes are the right ones is each test's download.)
async fn wait_stored_near(cluster: &TestCluster, live_bytes: u64, slack: u64) -> Duration {
    let ideal = R as u64 * live_bytes;
    let last = AtomicU64::new(0);
    let waited = cluster
        .wait_for("stored bytes down to R x live bytes", COLLECT, || async {
            let now = stored(cluster).await;
            last.store(now, Ordering::Relaxed);
            Ok((ideal..=ideal + slack).contains(&now))
        })
        .await;
    match waited {
        Ok(d) => d,
        Err(e) => panic!(
            "{e}: {} bytes stored, ideal {ideal}, slack {slack}",
            last.load(Ordering::Relaxed)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_files_give_their_space_back_and_the_rest_stay_intact() {
    let cluster = gc_cluster(3, 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let size = |i: usize| 30_000 + 3_000 * i;
    let names = cluster
        .upload_random_files(dir.path(), "del", 50, size)
        .await
        .unwrap();
    let all: u64 = (0..50).map(|i| size(i) as u64).sum();
    cluster
        .wait_for("R copies of every chunk", CONVERGE, || async {
            Ok(stored(&cluster).await >= R as u64 * all)
        })
        .await
        .unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    for name in &names[..40] {
        c.remove(name).await.unwrap();
    }
    let kept: u64 = (40..50).map(|i| size(i) as u64).sum();
    // Within one chunk per remaining file: covers manifests and tombstones.
    let took = wait_stored_near(&cluster, kept, 10 * CHUNK).await;
    eprintln!("stored bytes fell to R x live within {took:?} of the deletes");
    let collected = cluster.sum_stats(|s| s.gc_collected_bytes).await.unwrap();
    assert!(
        collected >= R as u64 * (all - kept) - 40 * CHUNK,
        "collectors report {collected} bytes"
    );
    cluster
        .check_files_intact(dir.path(), &names[40..])
        .await
        .unwrap();
    let listed = c.list().await.unwrap();
    assert_eq!(listed.len(), 10, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_overwritten_ten_times_keeps_about_one_version() {
    let cluster = gc_cluster(3, 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&cluster.addrs()[1]).unwrap();
    let size = 300_000;
    for _ in 0..10 {
        let path = random_file(dir.path(), "again", size).unwrap();
        c.upload_file(&path, "again", &small_chunks(), &no_progress)
            .await
            .unwrap();
    }
    wait_stored_near(&cluster, size as u64, 2 * CHUNK).await;
    cluster
        .check_files_intact(dir.path(), &["again".to_string()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_file_keeps_the_chunks_another_file_shares() {
    let cluster = gc_cluster(3, 3600).await;
    let dir = tempfile::tempdir().unwrap();
    // Four whole chunks in common, then different tails.
    let mut common = vec![0u8; 4 * CHUNK as usize];
    rand::rng().fill(&mut common[..]);
    let mut a = common.clone();
    a.extend(std::iter::repeat_n(1u8, 100_000));
    let mut b = common;
    b.extend(std::iter::repeat_n(2u8, 50_000));
    std::fs::write(dir.path().join("a"), &a).unwrap();
    std::fs::write(dir.path().join("b"), &b).unwrap();
    let c = client(&cluster.addrs()[2]).unwrap();
    for name in ["a", "b"] {
        c.upload_file(&dir.path().join(name), name, &small_chunks(), &no_progress)
            .await
            .unwrap();
    }
    // Both files held whole, R copies of each chunk: the shared chunks once,
    // each tail once. Only then does a drop to R x b's bytes show
    // collection. (Before owners refused writes while their successor list
    // was still filling, two of twenty runs here held 1,123,100 and
    // 1,139,051 bytes right after the uploads; now the wait should end at
    // once, and it keeps the premise checked.)
    let both = (a.len() + b.len() - 4 * CHUNK as usize) as u64;
    cluster
        .wait_for("R copies of both files", COLLECT, || async {
            Ok(stored(&cluster).await >= R as u64 * both)
        })
        .await
        .unwrap();
    c.remove("a").await.unwrap();
    // Only a's own tail goes: b's bytes stay, shared chunks included.
    wait_stored_near(&cluster, b.len() as u64, 2 * CHUNK).await;
    assert!(cluster.sum_stats(|s| s.gc_collected_bytes).await.unwrap() > 0);
    cluster
        .check_files_intact(dir.path(), &["b".to_string()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_upload_keeps_its_chunks_through_the_grace_period() {
    let cluster = gc_cluster(3, 3600).await;
    let dir = tempfile::tempdir().unwrap();
    // A chunk no manifest will ever name, written with the upload: it must
    // go, which shows the collector runs while the upload waits.
    let stray = vec![9u8; 10_000];
    let stray_key = chunk_key(&stray);
    let owner = cluster.owner_of(&stray_key).unwrap();
    cluster
        .peers
        .put_chunk(
            &owner.addr,
            &CheckedChunk::of(stray.into()).unwrap(),
            R as u32,
        )
        .await
        .unwrap();
    let size = 5 * CHUNK as usize;
    let path = random_file(dir.path(), "slow", size).unwrap();
    // The progress callback runs once per stored chunk; after the last one
    // the upload stalls, its chunks written and its manifest not, for most
    // of the grace period, with collection rounds every 300 ms meanwhile.
    let sent = AtomicU64::new(0);
    let stalled = AtomicBool::new(false);
    let stall = Duration::from_millis(GC_GRACE_SECS * 1000 * 3 / 4);
    let progress = |n: u64| {
        if sent.fetch_add(n, Ordering::SeqCst) + n == size as u64 {
            stalled.store(true, Ordering::SeqCst);
            std::thread::sleep(stall);
        }
    };
    let c = client(&cluster.addrs()[0]).unwrap();
    c.upload_file(&path, "slow", &small_chunks(), &progress)
        .await
        .unwrap();
    assert!(stalled.load(Ordering::SeqCst), "the upload never stalled");
    cluster
        .wait_for("the stray chunk collected", COLLECT, || async {
            // ListKeys, not HasChunks: asking with HasChunks is a touch,
            // which would keep the chunk young.
            let mut held = 0;
            for addr in cluster.addrs() {
                let keys = cluster
                    .peers
                    .list_keys(&addr, &stray_key.prev(), &stray_key)
                    .await?;
                held += keys.chunks.len();
            }
            Ok(held == 0)
        })
        .await
        .unwrap();
    // Long past the grace period, the upload's chunks are all still there.
    // The wait is the test: another grace period of collection rounds
    // (every 300 ms) must leave them alone.
    tokio::time::sleep(Duration::from_secs(GC_GRACE_SECS)).await;
    wait_stored_near(&cluster, size as u64, CHUNK).await;
    cluster
        .check_files_intact(dir.path(), &["slow".to_string()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_after_the_tombstone_grace_resurrects_nothing_and_loses_nothing() {
    const TOMBSTONE_GRACE: u64 = 4;
    let mut cluster = gc_cluster(3, TOMBSTONE_GRACE).await;
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "old", 6, |_| 100_000)
        .await
        .unwrap();
    let away = cluster.addrs()[2].clone();
    let port: u16 = away.rsplit_once(':').unwrap().1.parse().unwrap();
    cluster
        .wait_for(
            "the node to be leaving holds every file",
            CONVERGE,
            || async { Ok(cluster.peers.get_stats(&away).await?.manifests == 6) },
        )
        .await
        .unwrap();
    // Gone without a hand-off: its disk keeps every file as it was.
    cluster.fleet.kill(&away).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    for name in &names[..3] {
        c.remove(name).await.unwrap();
    }
    let new = cluster
        .upload_random_files(dir.path(), "new", 2, |_| 90_000)
        .await
        .unwrap();
    // The others drop their tombstones once past the grace.
    cluster
        .wait_for("tombstones expired", COLLECT, || async {
            let expired = cluster.sum_stats(|s| s.tombstones_expired).await?;
            let held = cluster.sum_stats(|s| s.tombstones).await?;
            Ok(expired >= 3 && held == 0)
        })
        .await
        .unwrap();
    let back_at = Instant::now();
    let via = cluster.addrs()[0].clone();
    cluster.fleet.start(port, Some(&via)).await.unwrap();
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .wait_for("the returning node settles its files", CONVERGE, || async {
            Ok(!cluster.peers.get_stats(&away).await?.syncing)
        })
        .await
        .unwrap();
    eprintln!("settled {:?} after the restart", back_at.elapsed());
    let events = cluster.peers.events(&away, 0).await.unwrap();
    assert!(
        events.events.iter().any(|e| e.kind.as_str() == "synced"
            && e.detail.contains("3 newer on the ring")
            && e.detail.contains("3 deleted while away")),
        "{:?}",
        events.events
    );
    // A few repair rounds later, the deleted files are still gone... The
    // wait is the test: three repair rounds (1 s each in FAST) must not
    // bring them back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now_listed = listed(&c).await.unwrap();
    let mut live: Vec<String> = names[3..].iter().chain(new.iter()).cloned().collect();
    live.sort();
    assert_eq!(now_listed, live);
    for name in &names[..3] {
        assert!(c.manifest(name).await.is_err(), "{name} came back");
    }
    // ...and everything live is whole, on R holders, the returning node's
    // copies included.
    cluster.check_files_intact(dir.path(), &live).await.unwrap();
    wait_stored_near(&cluster, 3 * 100_000 + 2 * 90_000, 5 * CHUNK).await;
}

/// Runs `op` until it succeeds, at most 10 times a second apart.
async fn retry<F, Fut, T>(what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = chord_node::Result<T>>,
{
    for attempt in 1..=10 {
        match op().await {
            Ok(_) => return,
            Err(e) => eprintln!("{what}, attempt {attempt}: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{what} failed 10 times");
}

/// Uploads, deletes and overwrites while nodes are killed and replaced; at the end every live file is intact and the stored
/// bytes come down to within 10% of R x live. `CHORD_CHAOS_SECS` sets the
/// length (default 40 s; the README quotes a 300 s run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_deletes_and_overwrites_under_kills_lose_nothing_and_get_space_back() {
    let secs: u64 = std::env::var("CHORD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut cluster = gc_cluster(5, 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let entry = cluster.addrs()[0].clone();
    let c = client(&entry).unwrap();
    // name -> size of its current contents: what the ring should hold.
    let mut live: std::collections::BTreeMap<String, u64> = Default::default();
    let started = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs(10);
    let (mut uploads, mut deletes, mut overwrites, mut kills) = (0, 0, 0, 0);
    while started.elapsed() < Duration::from_secs(secs) {
        if Instant::now() >= next_kill {
            // One node at a time, never the one the client enters through;
            // a fresh one takes its place.
            let others: Vec<String> = cluster
                .addrs()
                .into_iter()
                .filter(|a| *a != entry)
                .collect();
            let victim = others[rand::rng().random_range(0..others.len())].clone();
            cluster.fleet.kill(&victim).await.unwrap();
            cluster.add_node().await.unwrap();
            kills += 1;
            next_kill = Instant::now() + Duration::from_secs(10);
        }
        let existing: Vec<String> = live.keys().cloned().collect();
        let pick = || existing[rand::rng().random_range(0..existing.len())].clone();
        let roll = rand::rng().random_range(0..10);
        if roll < 2 && !existing.is_empty() {
            let name = pick();
            // A write through a ring that just lost a node may fail; it is
            // tried again (a delete that did land answers "no such file").
            retry(&format!("delete {name}"), || async {
                match c.remove(&name).await {
                    Err(chord_node::Error::NotFound(_)) => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .await;
            live.remove(&name);
            deletes += 1;
        } else {
            let overwrite = roll < 4 && !existing.is_empty();
            let name = if overwrite {
                pick()
            } else {
                format!("chaos-{uploads:03}")
            };
            let size = rand::rng().random_range(10_000..400_000);
            let path = random_file(dir.path(), &format!("{name}.next"), size).unwrap();
            let opts = small_chunks();
            retry(&format!("upload {name}"), || {
                c.upload_file(&path, &name, &opts, &no_progress)
            })
            .await;
            std::fs::rename(&path, dir.path().join(&name)).unwrap();
            live.insert(name, size as u64);
            if overwrite {
                overwrites += 1;
            } else {
                uploads += 1;
            }
        }
    }
    eprintln!(
        "{secs}s: {uploads} uploads, {overwrites} overwrites, {deletes} deletes, {kills} kills; {} live files",
        live.len()
    );
    assert!(
        kills >= 1 && uploads > 0 && deletes > 0,
        "the run did too little"
    );
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let names: Vec<String> = live.keys().cloned().collect();
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap();
    let live_bytes: u64 = live.values().sum();
    let took = wait_stored_near(&cluster, live_bytes, R as u64 * live_bytes / 10).await;
    eprintln!(
        "stored bytes within 10% of R x {live_bytes} live bytes {took:?} after the run; {} now",
        stored(&cluster).await
    );
    let c = client(&cluster.addrs()[0]).unwrap();
    let now_listed = listed(&c).await.unwrap();
    assert_eq!(now_listed, names, "the listing differs from the truth");
}
