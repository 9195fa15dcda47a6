//! Files on the ring with real `chord-node` processes: round trips,
//! replication through crashes, joins and graceful leaves, corruption, and
//! bad input.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chord_node::chord::{true_holders, Id, NodeRef};
use chord_node::client::{ProgressSink, ReadCheck, TransferOptions};
use chord_node::store::{chunk_key, Algorithm, Checksum, Manifest, MAX_INLINE_BYTES};
use chord_node::Error;
use chord_tests::files::{client, listed, no_progress, random_file, small_chunks};
use chord_tests::{fast_without_repair, free_port, TestCluster, CONVERGE, FAST};

/// Uploads through one node and downloads through another; bytes must match.
async fn round_trip(
    cluster: &TestCluster,
    dir: &std::path::Path,
    name: &str,
    len: usize,
    opts: &TransferOptions,
) {
    let addrs = cluster.addrs();
    let src = random_file(dir, name, len).unwrap();
    let up = client(&addrs[0]).unwrap();
    let report = up
        .upload_file(&src, name, opts, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.size, len as u64);
    let out = dir.join(format!("{name}.out"));
    let down = client(&addrs[addrs.len() - 1]).unwrap();
    down.download(name, &out, opts, &no_progress).await.unwrap();
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
        "{name}: bytes differ"
    );
}

#[tokio::test]
async fn round_trips_of_edge_sizes_through_different_nodes() {
    let cluster = TestCluster::start_converged(4, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = TransferOptions {
        chunk_size: 1024 * 1024,
        ..TransferOptions::default()
    };
    for (name, len) in [
        ("empty", 0),
        ("one-byte", 1),
        ("exactly-one-chunk", 1024 * 1024),
        ("one-chunk-plus-one", 1024 * 1024 + 1),
        ("hundred-mib", 100 * 1024 * 1024),
        ("largest-inline", MAX_INLINE_BYTES),
        ("smallest-in-chunks", MAX_INLINE_BYTES + 1),
    ] {
        round_trip(&cluster, dir.path(), name, len, &opts).await;
    }
    // Small files live in their manifests; one byte more takes a chunk.
    let reader = client(&cluster.addrs()[3]).unwrap();
    for (name, inline) in [
        ("one-byte", true),
        ("largest-inline", true),
        ("smallest-in-chunks", false),
        ("exactly-one-chunk", false),
    ] {
        let m = reader.manifest(name).await.unwrap();
        assert_eq!(!m.inline.is_empty(), inline, "{name}: {m:?}");
        assert_eq!(m.chunks.len(), usize::from(!inline), "{name}");
    }
    // Listing shows all seven; re-uploading resumes (every chunk already there).
    let files = client(&cluster.addrs()[1]).unwrap().list().await.unwrap();
    assert_eq!(files.len(), 7, "{files:?}");
    let again = client(&cluster.addrs()[2])
        .unwrap()
        .upload_file(
            &dir.path().join("one-chunk-plus-one"),
            "one-chunk-plus-one",
            &opts,
            &no_progress,
        )
        .await
        .unwrap();
    assert_eq!(again.chunks_skipped, again.chunks);
}

#[tokio::test]
async fn an_upload_cut_short_resumes_past_the_chunks_it_sent() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = small_chunks();
    let whole = random_file(dir.path(), "whole", 20 * opts.chunk_size).unwrap();
    let data = std::fs::read(&whole).unwrap();
    // What an upload cut short after twelve chunks left: those chunks.
    let sent = dir.path().join("first-twelve");
    std::fs::write(&sent, &data[..12 * opts.chunk_size]).unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let first = c
        .upload_file(&sent, "first-twelve", &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((first.chunks, first.chunks_skipped), (12, 0));
    let report = c
        .upload_file(&whole, "whole", &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((report.chunks, report.chunks_skipped), (20, 12));
    let out = dir.path().join("back");
    c.download("whole", &out, &opts, &no_progress)
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "bytes differ");
}

#[tokio::test]
async fn twenty_files_survive_two_crashes_and_regain_three_copies() {
    let mut cluster = TestCluster::start_converged(8, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "file", 20, |i| 50_000 + i * 37_000)
        .await
        .unwrap();
    let victims: Vec<String> = cluster.addrs().into_iter().take(2).collect();
    for v in &victims {
        cluster.fleet.kill(v).await.unwrap();
    }
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("after two crashes: {e:#}"));
    // Distinct chunks, from the manifests.
    let c = client(&cluster.random_addr().unwrap()).unwrap();
    let mut distinct = HashSet::new();
    for name in &names {
        distinct.extend(c.manifest(name).await.unwrap().chunks);
    }
    let want = 3 * distinct.len() as u64;
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let took = cluster
        .wait_for(
            "3 copies of every chunk",
            Duration::from_secs(90),
            || async { Ok(cluster.chunk_copies().await? == want) },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e} (copies now {:?}, want {want})",
                futures_copies(&cluster)
            )
        });
    eprintln!(
        "{} distinct chunks back at 3 copies {took:?} after the ring settled",
        distinct.len()
    );
}

fn futures_copies(cluster: &TestCluster) -> Option<u64> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(cluster.chunk_copies())
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_nodes_take_their_share_of_a_loaded_ring() {
    let mut cluster = TestCluster::start_converged(4, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "load", 12, |_| 300_000)
        .await
        .unwrap();
    let before = cluster.sum_stats(|s| s.repair_bytes).await.unwrap();
    let mut newcomers = Vec::new();
    for _ in 0..4 {
        newcomers.push(cluster.add_node().await.unwrap());
    }
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .wait_for(
            "every newcomer holds keys",
            Duration::from_secs(60),
            || async {
                for n in &newcomers {
                    if cluster.peers.get_stats(n).await?.chunks == 0 {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await
        .unwrap();
    // Old holders hand over and drop what they no longer own: every chunk
    // ends up on exactly its owner and the owner's next two successors.
    cluster
        .wait_for(
            "every chunk on exactly its 3 rightful holders",
            Duration::from_secs(60),
            || async { Ok(cluster.placement_mismatch(3).await?.is_none()) },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}",
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(cluster.placement_mismatch(3))
                        .ok()
                })
            )
        });
    let moved = cluster.sum_stats(|s| s.repair_bytes).await.unwrap() - before;
    eprintln!("4 joins into a loaded 4-node ring: {moved} bytes moved by repair");
    assert!(moved > 0);
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("after joins: {e:#}"));
}

/// Nodes that join just in front of a file's holders take the file over
/// before repair has copied it to them; until it does, the copies are only
/// on the old holders, past the new ones. With repair off, four nodes join
/// in front of a small file and of a one-chunk file, so that every holder
/// of both, and the node a chunk read tries after them, is new and empty:
/// each file is still read through every node, a name never written is
/// still missing, and a delete still finds the version it replaces.
#[tokio::test(flavor = "multi_thread")]
async fn files_whose_holders_all_just_joined_are_still_found() {
    let mut cluster = TestCluster::start_converged(4, 3, &fast_without_repair())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The widest gap between the old nodes, and four free ports whose
    // nodes fall into it, as far round it as can be found: keys before
    // them in the gap are theirs once they join.
    let mut old: Vec<Id> = cluster
        .addrs()
        .iter()
        .map(|a| NodeRef::from_addr(a.clone()).id)
        .collect();
    old.sort();
    let gap = |i: usize| (old[i], old[(i + 1) % old.len()]);
    let widest = (0..old.len())
        .max_by_key(|&i| {
            let (a, b) = gap(i);
            a.distance_to(&b)
        })
        .unwrap();
    let (start, end) = gap(widest);
    let mut candidates: Vec<(u16, Id)> = Vec::new();
    for _ in 0..10_000 {
        if candidates.len() == 24 {
            break;
        }
        let port = free_port().unwrap();
        let id = NodeRef::from_addr(format!("127.0.0.1:{port}")).id;
        if id.in_open(&start, &end) && !candidates.iter().any(|(p, _)| *p == port) {
            candidates.push((port, id));
        }
    }
    assert_eq!(candidates.len(), 24, "too few free ports fall in the gap");
    candidates.sort_by_key(|(_, id)| start.distance_to(id));
    let newcomers = &candidates[candidates.len() - 4..];
    let first_new = newcomers[0].1;
    let theirs = |key: &Id| key.in_open(&start, &first_new);

    // A small file, held inline in its manifest, and a one-chunk file,
    // each where the newcomers will hold it.
    let small = (0..)
        .map(|i| format!("far-small-{i}"))
        .find(|n| theirs(&Id::hash(n.as_bytes())))
        .unwrap();
    let absent = (0..)
        .map(|i| format!("far-absent-{i}"))
        .find(|n| theirs(&Id::hash(n.as_bytes())))
        .unwrap();
    let chunk_bytes = (0u64..)
        .map(|seed| {
            let mut data = vec![0u8; MAX_INLINE_BYTES + 1000];
            data[..8].copy_from_slice(&seed.to_le_bytes());
            data
        })
        .find(|data| theirs(&chunk_key(data)))
        .unwrap();
    let chunky = (0..)
        .map(|i| format!("far-chunky-{i}"))
        .find(|n| theirs(&Id::hash(n.as_bytes())))
        .unwrap();
    std::fs::write(dir.path().join(&small), b"a small file").unwrap();
    std::fs::write(dir.path().join(&chunky), &chunk_bytes).unwrap();
    let up = client(&cluster.addrs()[0]).unwrap();
    let mut versions = Vec::new();
    for name in [&small, &chunky] {
        let report = up
            .upload_file(&dir.path().join(name), name, &small_chunks(), &no_progress)
            .await
            .unwrap();
        versions.push(report.version);
    }

    let joined_through = cluster.addrs()[0].clone();
    for (port, _) in newcomers {
        cluster
            .fleet
            .start(*port, Some(&joined_through))
            .await
            .unwrap();
    }
    cluster.wait_consistent(CONVERGE).await.unwrap();
    // Every holder of both files, and the next node, is a newcomer, and
    // none has either yet.
    let mut ring: Vec<NodeRef> = cluster
        .addrs()
        .into_iter()
        .map(NodeRef::from_addr)
        .collect();
    ring.sort_by_key(|n| n.id);
    let new_addrs: HashSet<String> = newcomers
        .iter()
        .map(|(port, _)| format!("127.0.0.1:{port}"))
        .collect();
    let chunk = chunk_key(&chunk_bytes);
    for key in [
        Id::hash(small.as_bytes()),
        Id::hash(chunky.as_bytes()),
        chunk,
    ] {
        let holders: HashSet<String> = true_holders(&ring, &key, 4)
            .into_iter()
            .map(|n| n.addr)
            .collect();
        assert_eq!(holders, new_addrs, "key {}", key.short());
    }
    for addr in &new_addrs {
        for name in [&small, &chunky] {
            let held = cluster.peers.get_manifest(addr, name).await.unwrap();
            assert!(held.is_none(), "{addr} already has {name}");
        }
        let held = cluster.peers.has_chunks(addr, &[chunk]).await.unwrap();
        assert_eq!(held, [false], "{addr} already has the chunk");
    }

    for entry in cluster.addrs() {
        let reader = client(&entry).unwrap();
        for name in [&small, &chunky] {
            let out = dir.path().join(format!("{name}.out"));
            reader
                .download(name, &out, &small_chunks(), &no_progress)
                .await
                .unwrap_or_else(|e| panic!("{name} through {entry}: {e}"));
            assert!(
                std::fs::read(dir.path().join(name)).unwrap() == std::fs::read(&out).unwrap(),
                "{name} through {entry}: bytes differ"
            );
        }
        let missing = reader.manifest(&absent).await;
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    }
    // A delete through a newcomer replaces the version the old holders keep.
    let deleter = client(&format!("127.0.0.1:{}", newcomers[1].0)).unwrap();
    let deleted = deleter.remove(&small).await.unwrap();
    assert!(deleted > versions[0], "{deleted} after {}", versions[0]);
    let gone = deleter.manifest(&small).await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
}

#[tokio::test]
async fn sigterm_of_half_the_ring_one_by_one_loses_nothing() {
    let mut cluster = TestCluster::start_converged(8, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "keep", 10, |_| 200_000)
        .await
        .unwrap();
    for _ in 0..4 {
        let leaver = cluster.random_addr().unwrap();
        let clean = cluster
            .fleet
            .stop(&leaver, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(clean, "{leaver} did not leave cleanly");
        cluster.wait_consistent(CONVERGE).await.unwrap();
    }
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("after graceful leaves: {e:#}"));
    cluster
        .wait_for(
            "every chunk on exactly its 3 rightful holders",
            Duration::from_secs(60),
            || async { Ok(cluster.placement_mismatch(3).await?.is_none()) },
        )
        .await
        .unwrap();
}

/// Right after a ring's pointers converge, a node's successor list may
/// still name fewer nodes than the ring has: it fills one stabilize round at
/// a time. An owner must not take that short list for a small ring and
/// acknowledge a write with fewer than min(R, ring size) copies. Three fresh
/// 3-node rings with R = 3 and a slow stabilize (1 s, so the lists are
/// short for seconds): the moment each upload returns, every chunk is on
/// all three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_just_after_the_ring_forms_is_acknowledged_with_r_copies() {
    const CHUNKS: usize = 8;
    let mut args = FAST.to_vec();
    let at = args.iter().position(|a| *a == "--stabilize-ms").unwrap();
    args[at + 1] = "1000";
    let dir = tempfile::tempdir().unwrap();
    let opts = small_chunks();
    for ring in 0..3 {
        let cluster = TestCluster::start(3, 3, &args).await.unwrap();
        cluster.wait_consistent(CONVERGE).await.unwrap();
        let name = format!("early-{ring}");
        let path = random_file(dir.path(), &name, CHUNKS * opts.chunk_size).unwrap();
        let keys: Vec<Id> = std::fs::read(&path)
            .unwrap()
            .chunks(opts.chunk_size)
            .map(chunk_key)
            .collect();
        client(&cluster.addrs()[0])
            .unwrap()
            .upload_file(&path, &name, &opts, &no_progress)
            .await
            .unwrap();
        let copies: Vec<usize> = keys
            .iter()
            .map(|key| {
                cluster
                    .addrs()
                    .iter()
                    .filter(|addr| cluster.chunk_path(addr, key).unwrap().exists())
                    .count()
            })
            .collect();
        assert_eq!(copies, [3; CHUNKS], "ring {ring}: copies of each chunk");
    }
}

/// Damages the stored copy at `copy` in place (every bit of byte `at`
/// flipped) and returns its bytes as they were.
fn rot(copy: &std::path::Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(copy).unwrap();
    let mut bad = original.clone();
    bad[at] ^= 0xff;
    std::fs::write(copy, &bad).unwrap();
    original
}

#[tokio::test]
async fn a_chunk_corrupted_on_disk_is_detected_and_repaired() {
    let cluster = TestCluster::start_converged(4, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = random_file(dir.path(), "victim", 100_000).unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    c.upload_file(&path, "victim", &small_chunks(), &no_progress)
        .await
        .unwrap();
    let key: Id = c.manifest("victim").await.unwrap().chunks[0];
    let copy_on = |addr: &str| cluster.chunk_path(addr, &key).unwrap();
    // The copies on the chunk's true holders, once all three have it: an
    // owner's successor list can still be wrong just after the pointers
    // converge (a finger-made entry, say), and repair settles that.
    let holders: Vec<_> = chord_node::chord::true_holders(&cluster.truth(), &key, 3)
        .into_iter()
        .map(|n| copy_on(&n.addr))
        .collect();
    cluster
        .wait_for(
            "the chunk on its 3 true holders",
            Duration::from_secs(30),
            || async { Ok(holders.iter().all(|p| p.exists())) },
        )
        .await
        .unwrap();
    // Flip one byte of one holder's copy.
    let copy = holders[0].clone();
    let original = rot(&copy, 10);
    cluster
        .wait_for(
            "corrupt copy replaced by good bytes",
            Duration::from_secs(30),
            || async { Ok(std::fs::read(&copy).map(|b| b == original).unwrap_or(false)) },
        )
        .await
        .unwrap();
    assert!(cluster.sum_stats(|s| s.corrupt_chunks).await.unwrap() >= 1);
    // The file still reads back intact.
    let out = dir.path().join("victim.out");
    c.download("victim", &out, &small_chunks(), &no_progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}

/// The first message of a raw `PutChunk` call: one plain copy of `size` bytes.
fn chunk_header(key: Id, size: u64) -> chord_proto::pb::PutChunkRequest {
    use chord_proto::pb;
    pb::PutChunkRequest {
        body: Some(pb::put_chunk_request::Body::Header(pb::PutChunkHeader {
            key: key.as_bytes().to_vec(),
            size,
            copies: 1,
            age_ms: 0,
        })),
    }
}

/// A data message of a raw `PutChunk` call.
fn chunk_data(bytes: &[u8]) -> chord_proto::pb::PutChunkRequest {
    use chord_proto::pb;
    pb::PutChunkRequest {
        body: Some(pb::put_chunk_request::Body::Data(bytes.to_vec().into())),
    }
}

#[tokio::test]
async fn incoming_chunks_share_a_bounded_buffer_and_a_busy_node_keeps_serving() {
    use chord_proto::pb;
    use chord_proto::pb::store_client::StoreClient;

    let mut args = FAST.to_vec();
    args.push("--chunk-buffer-mib");
    args.push("1");
    let cluster = TestCluster::start_converged(1, 1, &args).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let mut store = StoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (header, data) = (chunk_header, chunk_data);

    // A call announcing 1 MiB and then sending nothing holds the whole budget.
    let (hold, held) = tokio::sync::mpsc::channel(1);
    hold.send(header(Id::hash(b"never sent"), 1 << 20))
        .await
        .unwrap();
    let mut first = store.clone();
    let holder = tokio::spawn(async move {
        first
            .put_chunk(tokio_stream::wrappers::ReceiverStream::new(held))
            .await
    });
    // Another chunk waits one deadline for room, then is refused as busy.
    // (Until the holder's header is in, puts still succeed: poll.)
    let mut attempt = 0;
    let refused = loop {
        attempt += 1;
        assert!(
            attempt <= 50,
            "no put was refused while the budget was held"
        );
        let other = format!("chunk number {attempt}").into_bytes();
        let answer = store
            .put_chunk(futures::stream::iter(vec![
                header(chunk_key(&other), other.len() as u64),
                data(&other),
            ]))
            .await;
        match answer {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(status) => break status,
        }
    };
    let small = b"a small chunk".to_vec();
    let key = chunk_key(&small);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("busy"), "{refused:?}");
    // Meanwhile the node answers everything else.
    store
        .has_chunks(pb::KeyList {
            keys: vec![key.as_bytes().to_vec()],
        })
        .await
        .unwrap();
    // The holder gives up: its room comes back and the chunk goes in.
    drop(hold);
    let ended = tokio::time::timeout(Duration::from_secs(10), holder)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), tonic::Code::InvalidArgument);
    store
        .put_chunk(futures::stream::iter(vec![
            header(key, small.len() as u64),
            data(&small),
        ]))
        .await
        .unwrap();
    let has = store
        .has_chunks(pb::KeyList {
            keys: vec![key.as_bytes().to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(has.present, vec![true]);
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_partial_appears() {
    use chord_proto::pb;
    use chord_proto::pb::store_client::StoreClient;

    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let c = client(&addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = random_file(dir.path(), "x", 10).unwrap();
    let long = "n".repeat(1025);
    for bad in ["", "a/b", "..", ".", "nul\0name", " lead", long.as_str()] {
        let err = c
            .upload_file(&path, bad, &small_chunks(), &no_progress)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
    }
    c.upload_file(&path, &"n".repeat(1024), &small_chunks(), &no_progress)
        .await
        .unwrap();
    assert!(matches!(
        c.manifest("missing").await.unwrap_err(),
        Error::NotFound(_)
    ));

    let mut store = StoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (header, data) = (chunk_header, chunk_data);
    // Bytes that do not match the key.
    let wrong = Id::hash(b"something else");
    let status = store
        .put_chunk(futures::stream::iter(vec![
            header(wrong, 5),
            data(b"hello"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // A stream that stops early (a client dying mid-transfer): nothing stored.
    let key = Id::hash(b"hello world");
    let status = store
        .put_chunk(futures::stream::iter(vec![header(key, 11), data(b"hello")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // More bytes than the header said, and a second header mid-stream.
    for messages in [
        vec![header(key, 5), data(b"hello"), data(b" world")],
        vec![header(key, 11), data(b"hello"), header(key, 11)],
    ] {
        let status = store
            .put_chunk(futures::stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    // A header larger than any chunk is refused before a byte is reserved,
    // saying how large, once.
    let status = store
        .put_chunk(futures::stream::iter(vec![header(key, 1 << 40)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        format!("chunk {key}: 1099511627776 bytes, more than the limit of 67108864"),
    );
    // None of them leaves a temporary file behind.
    let tmp = cluster.fleet.node(&addr).unwrap().data_dir.join("tmp");
    cluster
        .wait_for("no temporary files", Duration::from_secs(10), || async {
            Ok(std::fs::read_dir(&tmp)?.next().is_none())
        })
        .await
        .unwrap();
    let has = store
        .has_chunks(pb::KeyList {
            keys: vec![key.as_bytes().to_vec(), wrong.as_bytes().to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(has.present, vec![false, false]);
    // A manifest that names chunks the ring does not hold.
    let manifest = pb::Manifest {
        name: "ghost".into(),
        size: 5,
        chunk_size: 65536,
        chunks: vec![Id::hash(b"never stored").as_bytes().to_vec()],
        sha256: Vec::new(),
        blake3: Vec::new(),
        blake3_chunks: vec![0; 32],
        version: 0,
        deleted: false,
        modified_ms: 0,
        inline: Vec::new(),
    };
    let status = store
        .put_manifest(pb::PutManifestRequest {
            manifest: Some(manifest),
            copies: 3,
            replica: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(matches!(
        c.manifest("ghost").await.unwrap_err(),
        Error::NotFound(_)
    ));
    // Delete is seen everywhere; deleting again is NotFound.
    c.remove(&"n".repeat(1024)).await.unwrap();
    for a in cluster.addrs() {
        assert!(client(&a).unwrap().list().await.unwrap().is_empty());
    }
    assert!(matches!(
        c.remove(&"n".repeat(1024)).await.unwrap_err(),
        Error::NotFound(_)
    ));
    // The node is still serving.
    assert!(c.list().await.is_ok());
}

/// Mounts a small tmpfs at `path` for the life of the guard (root only).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, bytes: usize) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
#[ignore = "needs root, to mount a small tmpfs; run with --run-ignored all"]
async fn a_full_disk_is_a_clear_error_and_the_node_keeps_serving() {
    let mut cluster = TestCluster::new(1, FAST).unwrap();
    let port = chord_tests::free_port().unwrap();
    let _disk = SmallDisk::mount(&cluster.data_root().join(port.to_string()), 3 << 20)
        .expect("cannot mount a tmpfs (this test needs root)");
    let addr = cluster.fleet.start(port, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&addr).unwrap();
    let small = random_file(dir.path(), "small", 100_000).unwrap();
    c.upload_file(&small, "small", &small_chunks(), &no_progress)
        .await
        .unwrap();

    let big = random_file(dir.path(), "big", 8 << 20).unwrap();
    let err = c
        .upload_file(&big, "big", &small_chunks(), &no_progress)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("disk full"),
        "unclear error: {err}"
    );
    // Nothing partial is visible, no temporary file is left, and the node
    // still serves what it had.
    assert!(matches!(
        c.manifest("big").await.unwrap_err(),
        Error::NotFound(_)
    ));
    let names: Vec<String> = listed(&c).await.unwrap();
    assert_eq!(names, vec!["small".to_string()]);
    let tmp = cluster.fleet.node(&addr).unwrap().data_dir.join("tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temporary files left behind"
    );
    let out = dir.path().join("small.out");
    c.download("small", &out, &small_chunks(), &no_progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&small).unwrap());
    cluster.fleet.stop_all(Duration::from_secs(10)).await;
}

#[tokio::test]
#[ignore = "needs root, to mount a small tmpfs; run with --run-ignored all"]
async fn a_download_that_fills_the_disk_is_a_clear_error_and_leaves_nothing() {
    let cluster = TestCluster::start(1, 1, FAST).await.unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "big", 3 << 20).unwrap();
    c.upload_file(&src, "big", &small_chunks(), &no_progress)
        .await
        .unwrap();

    let full = dir.path().join("full");
    let _disk =
        SmallDisk::mount(&full, 1 << 20).expect("cannot mount a tmpfs (this test needs root)");
    let err = c
        .download("big", &full.join("big"), &small_chunks(), &no_progress)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("disk full"),
        "unclear error: {err}"
    );
    // No partial file under either name.
    let left: Vec<_> = std::fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // The client and the ring are as they were: the same download to a
    // disk with room gives the file.
    let out = dir.path().join("big.out");
    c.download("big", &out, &small_chunks(), &no_progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}

#[tokio::test]
#[ignore = "needs root, to mount a small tmpfs; run with --run-ignored all"]
async fn a_manifest_write_that_fills_the_disk_leaves_the_log_whole() {
    let mut cluster = TestCluster::new(1, FAST).unwrap();
    let port = chord_tests::free_port().unwrap();
    let data = cluster.data_root().join(port.to_string());
    let _disk =
        SmallDisk::mount(&data, 1 << 20).expect("cannot mount a tmpfs (this test needs root)");
    let addr = cluster.fleet.start(port, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&addr).unwrap();

    // Small files live in their manifests, so each upload is one record
    // appended to the node's manifest log, until one finds the disk full.
    let mut stored = Vec::new();
    let err = loop {
        assert!(stored.len() < 200, "1 MiB never filled up");
        let name = format!("small-{}", stored.len());
        let path = random_file(dir.path(), &name, MAX_INLINE_BYTES).unwrap();
        match c
            .upload_file(&path, &name, &small_chunks(), &no_progress)
            .await
        {
            Ok(_) => stored.push((name, path)),
            Err(e) => break e,
        }
    };
    assert!(
        err.to_string().contains("disk full"),
        "unclear error: {err}"
    );
    assert!(stored.len() > 5, "only {} files fit", stored.len());

    // A crash now, and a restart on the same full disk: the record the
    // disk had no room for was cut back whole, so the log reads to its
    // end (nothing quarantined) and every acknowledged file is there.
    cluster.fleet.kill(&addr).await.unwrap();
    let addr = cluster.fleet.start(port, None).await.unwrap();
    let c = client(&addr).unwrap();
    let quarantined: Vec<_> = std::fs::read_dir(data.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(quarantined.is_empty(), "{quarantined:?}");
    let mut names: Vec<String> = listed(&c).await.unwrap();
    names.sort();
    let mut want: Vec<String> = stored.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(names, want);
    for (name, path) in &stored {
        let out = dir.path().join(format!("{name}.out"));
        c.download(name, &out, &small_chunks(), &no_progress)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(path).unwrap());
    }
    cluster.fleet.stop_all(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_node_killed_mid_transfer_does_not_fail_the_transfer() {
    let mut cluster = TestCluster::start_converged(8, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let len = 40 << 20;
    let path = random_file(dir.path(), "big", len).unwrap();
    let opts = TransferOptions {
        chunk_size: 1 << 20,
        ..TransferOptions::default()
    };
    let entry = cluster.addrs()[0].clone();
    let c = client(&entry).unwrap();

    // Kill one node (never the entry) once a quarter of the bytes moved.
    let done = AtomicU64::new(0);
    let progress = |n: u64| {
        done.fetch_add(n, Ordering::Relaxed);
    };
    let mut victims = cluster.addrs().into_iter().filter(|a| *a != entry);
    let first = victims.next().unwrap();
    let second = victims.next().unwrap();
    let (uploaded, killed) = tokio::join!(
        c.upload_file(&path, "big", &opts, &progress),
        kill_midway(first, &done, (len / 4) as u64, &mut cluster.fleet)
    );
    uploaded.expect("upload failed after a node died mid-transfer");
    assert!(killed, "the upload ended before a node could be killed");

    done.store(0, Ordering::Relaxed);
    let out = dir.path().join("big.out");
    let (downloaded, killed) = tokio::join!(
        c.download("big", &out, &opts, &progress),
        kill_midway(second, &done, (len / 4) as u64, &mut cluster.fleet)
    );
    downloaded.expect("download failed after a node died mid-transfer");
    assert!(killed, "the download ended before a node could be killed");
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&path).unwrap(),
        "bytes differ"
    );
}

/// Kills `victim` once `done` reaches `after` bytes; false if it never did.
async fn kill_midway(
    victim: String,
    done: &AtomicU64,
    after: u64,
    fleet: &mut chord_console::fleet::Fleet,
) -> bool {
    for _ in 0..6000 {
        if done.load(Ordering::Relaxed) >= after {
            fleet.kill(&victim).await.unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn stopping_the_whole_ring_at_once_keeps_every_file() {
    let mut cluster = TestCluster::start_converged(5, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "all", 10, |i| 100_000 + i * 10_000)
        .await
        .unwrap();
    // Every node leaves at the same moment: nobody is left to hand keys to,
    // and no leaving node may count another leaving node as a safe holder.
    let ports: Vec<u16> = cluster
        .addrs()
        .iter()
        .map(|a| cluster.fleet.node(a).unwrap().port)
        .collect();
    cluster.fleet.stop_all(Duration::from_secs(60)).await;
    let first = cluster.fleet.start(ports[0], None).await.unwrap();
    for port in &ports[1..] {
        cluster.fleet.start(*port, Some(&first)).await.unwrap();
    }
    cluster.wait_consistent(CONVERGE).await.unwrap();
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap_or_else(|e| panic!("after the whole ring stopped at once: {e:#}"));
}

#[tokio::test]
async fn a_leaving_node_takes_no_writes_and_confirms_no_keys() {
    use chord_proto::pb;
    use chord_proto::pb::store_client::StoreClient;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    // Alone in its ring, a leaving node has no one to hand keys to, so it
    // stays in its leaving phase for a few hand-off rounds before it exits.
    let cluster = TestCluster::start(1, 3, FAST).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "stay", 1, |_| 100_000)
        .await
        .unwrap();
    let key = client(&addr)
        .unwrap()
        .manifest(&names[0])
        .await
        .unwrap()
        .chunks[0];
    let mut store = StoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let pid = cluster.fleet.node(&addr).unwrap().pid().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();

    let mut refused = false;
    for _ in 0..200 {
        let listed = store
            .list_keys(pb::ListKeysRequest {
                start: Id::ZERO.as_bytes().to_vec(),
                end: Id::ZERO.as_bytes().to_vec(),
                limit: 0,
            })
            .await;
        if let Err(status) = listed {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the leaving node kept confirming keys");
    // Writes are refused too, but its data can still be read while it leaves.
    let write = store
        .put_manifest(pb::PutManifestRequest {
            manifest: None,
            copies: 1,
            replica: true,
        })
        .await
        .unwrap_err();
    assert_eq!(write.code(), tonic::Code::Unavailable, "{write:?}");
    let read = client(&addr)
        .unwrap()
        .fetch_chunk(key, 1, 1, ReadCheck::EachChunk)
        .await;
    assert!(read.is_ok(), "reads must go on during hand-off: {read:?}");
}

/// A ring of four at three copies, repair off (so only the read path can
/// get around a bad copy), with one file of 200,000 bytes whose first
/// chunk's copy on its owner, the holder every read tries first, is
/// corrupt. Returns the owner and that copy's path too.
async fn a_file_with_a_bad_copy_on_its_owner(
    prefix: &str,
) -> (
    TestCluster,
    tempfile::TempDir,
    Vec<String>,
    NodeRef,
    std::path::PathBuf,
) {
    let cluster = TestCluster::start_converged(4, 3, &fast_without_repair())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), prefix, 1, |_| 200_000)
        .await
        .unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let key = c.manifest(&names[0]).await.unwrap().chunks[0];
    let owner = cluster.owner_of(&key).unwrap();
    let copy = cluster.chunk_path(&owner.addr, &key).unwrap();
    rot(&copy, 0);
    (cluster, dir, names, owner, copy)
}

/// When every copy of a chunk is bad, a download says the data is corrupt,
/// not that the chunk is missing (each holder sets its bad copy aside when
/// told, and answers "not found" after), and leaves no file behind.
#[tokio::test]
async fn a_chunk_bad_on_every_holder_is_reported_corrupt_not_missing() {
    let cluster = TestCluster::start_converged(4, 3, &fast_without_repair())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), "rotten", 1, |_| 200_000)
        .await
        .unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let key = c.manifest(&names[0]).await.unwrap().chunks[0];
    let mut rotted = 0;
    for addr in cluster.addrs() {
        let copy = cluster.chunk_path(&addr, &key).unwrap();
        if copy.exists() {
            rot(&copy, 0);
            rotted += 1;
        }
    }
    assert_eq!(rotted, 3, "a copy on each of the three holders");
    let out = dir.path().join("rotten.out");
    match c
        .download(&names[0], &out, &TransferOptions::default(), &no_progress)
        .await
    {
        Err(Error::Corrupt(reason)) => {
            assert!(reason.contains("no intact copy left"), "{reason}");
        }
        other => panic!("want a corrupt-data error, got {other:?}"),
    }
    assert!(!out.exists(), "a file was left behind");
}

/// The owner was told of its bad copy by a reader, re-hashed it and moved
/// it aside (the owner itself sends what is on disk unchecked).
async fn the_owner_quarantines(cluster: &TestCluster, owner: &NodeRef, copy: &std::path::Path) {
    cluster
        .wait_for(
            "the owner to quarantine its bad copy",
            Duration::from_secs(10),
            || async {
                let stats = cluster.peers.get_stats(&owner.addr).await?;
                Ok(stats.corrupt_chunks == 1)
            },
        )
        .await
        .unwrap();
    assert!(!copy.exists(), "the corrupt copy is still in place");
}

/// A download of a file whose checksum is made of its chunk hashes hashes
/// each chunk once, for its key and the checksum alike, so a bad copy is
/// caught as it arrives and read again, checked, from another holder: one
/// chunk read twice, not the whole file.
#[tokio::test]
async fn a_download_reads_a_bad_chunk_again_from_the_next_holder() {
    let (cluster, dir, names, owner, copy) = a_file_with_a_bad_copy_on_its_owner("fallback").await;
    let c = client(&cluster.addrs()[0]).unwrap();
    let counted = Counted::default();
    let out = dir.path().join("fallback.out");
    c.download(&names[0], &out, &small_chunks(), &counted)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(dir.path().join(&names[0])).unwrap()
    );
    assert_eq!(counted.restarts.load(Ordering::Relaxed), 0);
    assert_eq!(counted.bytes.load(Ordering::Relaxed), 200_000);
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap();
    the_owner_quarantines(&cluster, &owner, &copy).await;
}

/// A file written before the chunk tree is checked whole: a download reads
/// the bad copy unchecked, so the whole file does not match, and it starts
/// over, every chunk checked, and so does its count.
#[tokio::test]
async fn a_download_of_an_older_file_starts_over_checked_when_its_bytes_are_bad() {
    let (cluster, dir, names, owner, copy) = a_file_with_a_bad_copy_on_its_owner("older").await;
    let c = client(&cluster.addrs()[0]).unwrap();
    let data = std::fs::read(dir.path().join(&names[0])).unwrap();
    let mut old = c.manifest(&names[0]).await.unwrap();
    old.version += 1;
    old.checksum = Checksum::of(Algorithm::Blake3, &data);
    cluster.put_manifest_everywhere(&old).await.unwrap();

    let counted = Counted::default();
    let out = dir.path().join("older.out");
    c.download(&names[0], &out, &small_chunks(), &counted)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(counted.restarts.load(Ordering::Relaxed), 1);
    assert_eq!(counted.before_restart.load(Ordering::Relaxed), 200_000);
    assert_eq!(counted.bytes.load(Ordering::Relaxed), 200_000);
    the_owner_quarantines(&cluster, &owner, &copy).await;
}

/// A streamed read (the gateway's, `download -o -`) cannot start over: it
/// hashes each chunk once, for its key and the file's checksum alike, and
/// reads a chunk that does not match its key again, checked, from another
/// holder, before passing it on. Only good bytes reach the writer.
#[tokio::test]
async fn a_streamed_read_passes_on_only_chunks_that_match_their_keys() {
    let (cluster, dir, names, owner, copy) = a_file_with_a_bad_copy_on_its_owner("streamed").await;
    let c = client(&cluster.addrs()[0]).unwrap();
    let manifest = c.manifest(&names[0]).await.unwrap();
    assert_eq!(manifest.checksum.algorithm(), Algorithm::Blake3Chunks);
    let counted = Counted::default();
    let mut out = Vec::new();
    c.write_to(&manifest, &mut out, 3, &small_chunks(), &counted)
        .await
        .unwrap();
    assert!(
        out == std::fs::read(dir.path().join(&names[0])).unwrap(),
        "other bytes"
    );
    assert_eq!(counted.restarts.load(Ordering::Relaxed), 0);
    assert_eq!(counted.bytes.load(Ordering::Relaxed), 200_000);
    the_owner_quarantines(&cluster, &owner, &copy).await;
}

/// As `a_chunk_corrupted_on_disk_is_detected_and_repaired`, on a node that
/// holds more chunks than a scrub page: the scrubber walks its keys a page
/// at a time and round the ring, so rot at the first and at the last key
/// of the walk is found, quarantined, and replaced by repair.
#[tokio::test]
async fn the_scrubber_finds_rot_across_its_pages_and_repair_restores_it() {
    const CHUNKS: usize = 1_200;
    // Repair (and so the scrub) every second; a round's budget, 8 MiB,
    // covers every chunk of this node.
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = TransferOptions {
        chunk_size: chord_node::MIN_CHUNK_BYTES,
        ..TransferOptions::default()
    };
    let name = "rotting".to_string();
    let src = random_file(dir.path(), &name, CHUNKS * opts.chunk_size).unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    c.upload_file(&src, &name, &opts, &no_progress)
        .await
        .unwrap();
    let keys = c.manifest(&name).await.unwrap().chunks;
    assert_eq!(keys.len(), CHUNKS);
    let (first, last) = (*keys.iter().min().unwrap(), *keys.iter().max().unwrap());

    // Every node holds every chunk (R = 3 on three nodes); rot two on one.
    let addr = cluster.addrs()[0].clone();
    let copies = [first, last].map(|key| cluster.chunk_path(&addr, &key).unwrap());
    let originals = copies.clone().map(|copy| rot(&copy, 0));
    cluster
        .wait_for(
            "the scrubber to quarantine both rotten copies",
            Duration::from_secs(30),
            || async {
                let stats = cluster.peers.get_stats(&addr).await?;
                Ok(stats.corrupt_chunks == 2)
            },
        )
        .await
        .unwrap();
    cluster
        .wait_for(
            "repair to put good copies back",
            Duration::from_secs(30),
            || async {
                Ok(copies
                    .iter()
                    .zip(&originals)
                    .all(|(copy, original)| std::fs::read(copy).is_ok_and(|b| b == *original)))
            },
        )
        .await
        .unwrap();
    cluster
        .check_files_intact(dir.path(), &[name])
        .await
        .unwrap();
}

/// What a transfer told its progress sink: bytes since the last restart,
/// bytes before it, and restarts.
#[derive(Debug, Default)]
struct Counted {
    bytes: AtomicU64,
    before_restart: AtomicU64,
    restarts: AtomicU64,
}

impl ProgressSink for Counted {
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn restart(&self) {
        let before = self.bytes.swap(0, Ordering::Relaxed);
        self.before_restart.store(before, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// A converged ring of three holding one uploaded file of `len` bytes: the
/// ring, the dir with the original, the file's name (in a list) and its
/// manifest.
async fn three_nodes_one_file(
    prefix: &str,
    len: usize,
) -> (TestCluster, tempfile::TempDir, Vec<String>, Manifest) {
    three_nodes_one_file_with(prefix, len, FAST).await
}

/// [`three_nodes_one_file`] with the nodes' flags given.
async fn three_nodes_one_file_with(
    prefix: &str,
    len: usize,
    args: &[&str],
) -> (TestCluster, tempfile::TempDir, Vec<String>, Manifest) {
    let cluster = TestCluster::start_converged(3, 3, args).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = cluster
        .upload_random_files(dir.path(), prefix, 1, |_| len)
        .await
        .unwrap();
    let manifest = client(&cluster.addrs()[0])
        .unwrap()
        .manifest(&names[0])
        .await
        .unwrap();
    (cluster, dir, names, manifest)
}

/// Files written before the chunk-tree checksum carry BLAKE3 of their
/// bytes, or SHA-256 before that: each downloads checked by its own.
#[tokio::test]
async fn files_written_before_the_chunk_tree_download_checked_by_their_own_algorithm() {
    let (cluster, dir, names, real) =
        three_nodes_one_file("old-sum", MAX_INLINE_BYTES + 5000).await;
    assert_eq!(
        real.checksum.algorithm(),
        Algorithm::Blake3Chunks,
        "{real:?}"
    );
    let data = std::fs::read(dir.path().join(&names[0])).unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let mut old = real.clone();
    for algorithm in [Algorithm::Blake3, Algorithm::Sha256] {
        // The file as a client of that time wrote it, on every holder: a
        // newer version of the same chunks carrying its checksum.
        old.version += 1;
        old.checksum = Checksum::of(algorithm, &data);
        cluster.put_manifest_everywhere(&old).await.unwrap();
        assert_eq!(c.manifest(&names[0]).await.unwrap(), old);
        let out = dir.path().join(format!("{algorithm:?}.out"));
        c.download(&names[0], &out, &small_chunks(), &no_progress)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data, "{algorithm:?}");

        // It is checked by that algorithm: a checksum the bytes do not have
        // (the chunk tree's bytes, under the older name) fails the
        // download, twice checked, and leaves no file.
        old.version += 1;
        old.checksum = Checksum::new(algorithm, *real.checksum.bytes());
        cluster.put_manifest_everywhere(&old).await.unwrap();
        let bad = dir.path().join("bad");
        let err = c
            .download(&names[0], &bad, &small_chunks(), &no_progress)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        let mismatch = format!("{} does not match", old.checksum.label());
        assert!(err.to_string().contains(&mismatch), "{err}");
        assert!(!bad.exists());
    }

    // A chunk-tree checksum the chunks do not make fails in one pass: its
    // chunks were each checked on the way, so there is nothing to fetch
    // again.
    old.version += 1;
    old.checksum = Checksum::new(Algorithm::Blake3Chunks, [7; 32]);
    cluster.put_manifest_everywhere(&old).await.unwrap();
    let counted = Counted::default();
    let bad = dir.path().join("bad");
    let err = c
        .download(&names[0], &bad, &small_chunks(), &counted)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert_eq!(counted.restarts.load(Ordering::Relaxed), 0);
    assert!(!bad.exists());
}

#[tokio::test]
async fn a_retried_delete_told_no_such_file_leaves_the_tombstone_on_every_holder() {
    // Repair is off: only the delete may move the tombstone on.
    let (cluster, _dir, names, real) =
        three_nodes_one_file_with("half-deleted", 1000, &fast_without_repair()).await;
    let name = &names[0];
    // An earlier delete that failed after its tombstone reached one holder.
    let tombstone = Manifest::tombstone(name, real.version + 1, real.modified_ms);
    let reached = cluster.addrs()[0].clone();
    cluster
        .peers
        .put_manifest(&reached, &tombstone, 1, true)
        .await
        .unwrap();
    let holding_it = || async {
        let mut tombstones = 0;
        for addr in cluster.addrs() {
            let stored = cluster.peers.get_manifest(&addr, name).await;
            tombstones += usize::from(stored.unwrap().is_some_and(|m| m.deleted));
        }
        tombstones
    };
    assert_eq!(holding_it().await, 1);

    // Tried again, it is told the file is gone, and that now holds on all
    // three holders.
    for entry in cluster.addrs() {
        let again = client(&entry).unwrap().remove(name).await;
        assert!(matches!(again, Err(Error::NotFound(_))), "{again:?}");
        assert_eq!(holding_it().await, 3, "after a delete through {entry}");
    }
}

#[tokio::test]
async fn holders_with_different_manifests_of_one_version_converge() {
    // Above the inline limit: a rival of a file held inline would have to
    // hold other bytes, not just another hash.
    let (cluster, _dir, names, real) = three_nodes_one_file("tie", MAX_INLINE_BYTES + 1000).await;
    // A rival with the same version but other content (as two primaries
    // might write in the same millisecond), ranked above the real one, on
    // one holder only.
    let mut rival = real.clone();
    rival.checksum = Checksum::new(real.checksum.algorithm(), [0xff; 32]);
    assert!(rival.supersedes(&real));
    let target = cluster.addrs()[1].clone();
    cluster
        .peers
        .put_manifest(&target, &rival, 1, true)
        .await
        .unwrap();
    cluster
        .wait_for(
            "every holder has the winning manifest",
            Duration::from_secs(30),
            || async {
                for addr in cluster.addrs() {
                    let stored = cluster.peers.get_manifest(&addr, &names[0]).await?;
                    if stored.as_ref() != Some(&rival) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replica_manifest_naming_chunks_nobody_has_is_refused_and_changes_nothing() {
    let (cluster, dir, names, real) = three_nodes_one_file("real", 200_000).await;
    let target = cluster.addrs()[1].clone();
    let before = cluster.peers.get_stats(&target).await.unwrap();

    // Copies "forwarded" by no owner: a new file, and a newer version of
    // the real one, each naming a chunk no node has.
    let ghost = Id::hash(b"a chunk nobody stored");
    let mut new_file = real.clone();
    new_file.name = "forged".into();
    new_file.chunks[0] = ghost;
    let mut overwrite = real.clone();
    overwrite.version += 1_000;
    overwrite.chunks[0] = ghost;
    for forged in [&new_file, &overwrite] {
        match cluster.peers.put_manifest(&target, forged, 1, true).await {
            Err(Error::InvalidArgument(reason)) => {
                assert!(reason.contains("the ring does not hold"), "{reason}")
            }
            other => panic!("forged copy of {:?}: {other:?}", forged.name),
        }
    }
    let stored = |name: &'static str| cluster.peers.get_manifest(&target, name);
    assert_eq!(stored("forged").await.unwrap(), None);
    assert_eq!(
        cluster
            .peers
            .get_manifest(&target, &names[0])
            .await
            .unwrap(),
        Some(real.clone())
    );
    let after = cluster.peers.get_stats(&target).await.unwrap();
    assert_eq!(
        (after.manifests, after.tombstones, after.chunks),
        (before.manifests, before.tombstones, before.chunks)
    );
    cluster
        .check_files_intact(dir.path(), &names)
        .await
        .unwrap();

    // A copy whose chunks the ring holds is taken, as replication and
    // repair need.
    let mut sound = real.clone();
    sound.name = "same-chunks".into();
    cluster
        .peers
        .put_manifest(&target, &sound, 1, true)
        .await
        .unwrap();
    assert_eq!(stored("same-chunks").await.unwrap(), Some(sound));
}

#[tokio::test]
async fn a_file_needing_more_chunks_than_a_manifest_holds_is_refused_up_front() {
    use chord_proto::pb;
    use chord_proto::pb::store_client::StoreClient;

    let cluster = TestCluster::start_converged(1, 3, FAST).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    // 1 GiB (sparse) in the smallest chunks is 262,144 chunks, more than
    // one manifest can name: the upload says so before it sends a chunk.
    let path = dir.path().join("big.iso");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let opts = TransferOptions {
        chunk_size: chord_node::MIN_CHUNK_BYTES,
        ..TransferOptions::default()
    };
    let c = client(&addr).unwrap();
    let upload = c.upload_file(&path, "big.iso", &opts, &no_progress);
    match tokio::time::timeout(Duration::from_secs(10), upload)
        .await
        .expect("the upload went ahead instead of being refused")
    {
        Err(Error::InvalidArgument(reason)) => {
            assert!(reason.contains("use chunks of at least"), "{reason}")
        }
        other => panic!("want a refusal, got {other:?}"),
    }
    assert_eq!(
        cluster.peers.get_stats(&addr).await.unwrap().chunks,
        0,
        "chunks were sent"
    );

    // The node refuses such a manifest itself, as a client write or as a
    // copy, at once and without storing it (it still fits one message).
    let n = chord_node::store::MAX_MANIFEST_CHUNKS + 1;
    let manifest = pb::Manifest {
        name: "too-many-chunks".into(),
        size: n as u64 * 4096,
        chunk_size: 4096,
        chunks: (0..n as u64)
            .map(|i| Id::hash(&i.to_be_bytes()).as_bytes().to_vec())
            .collect(),
        sha256: Vec::new(),
        blake3: Vec::new(),
        blake3_chunks: vec![0; 32],
        version: 1,
        deleted: false,
        modified_ms: 1,
        inline: Vec::new(),
    };
    let mut store = StoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for replica in [false, true] {
        let put = store.put_manifest(pb::PutManifestRequest {
            manifest: Some(manifest.clone()),
            copies: 3,
            replica,
        });
        let status = tokio::time::timeout(Duration::from_secs(10), put)
            .await
            .expect("the node did not refuse at once")
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("one manifest can name"),
            "{status:?}"
        );
    }
    assert_eq!(
        cluster
            .peers
            .get_manifest(&addr, "too-many-chunks")
            .await
            .unwrap(),
        None
    );
}

/// `download -o DIR` puts the file in DIR under its name, leaving nothing
/// else there; `-o /dev/null` writes into the device instead of renaming a
/// finished file over it. Both for a file in chunks and for one held in
/// its manifest.
#[tokio::test]
async fn downloads_go_into_a_directory_or_straight_into_a_device() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let opts = small_chunks();
    let source = random_file(dir.path(), "source", 300_000).unwrap();
    c.upload_file(&source, "photo.jpg", &opts, &no_progress)
        .await
        .unwrap();

    // A directory gets the file under its name, as cp does.
    let into = dir.path().join("downloads");
    std::fs::create_dir(&into).unwrap();
    let report = c
        .download("photo.jpg", &into, &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.path, into.join("photo.jpg"));
    assert!(std::fs::read(&report.path).unwrap() == std::fs::read(&source).unwrap());
    // And one small enough to be held in its manifest.
    let note = random_file(dir.path(), "note", 5_000).unwrap();
    c.upload_file(&note, "note.txt", &opts, &no_progress)
        .await
        .unwrap();
    let report = c
        .download("note.txt", &into, &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((report.path, report.chunks), (into.join("note.txt"), 0));
    assert!(std::fs::read(into.join("note.txt")).unwrap() == std::fs::read(&note).unwrap());
    let left: Vec<_> = std::fs::read_dir(&into).unwrap().collect();
    assert_eq!(left.len(), 2, "only the files, no temporary file: {left:?}");

    // A device is written in place, not replaced by a renamed file.
    let null = std::path::Path::new("/dev/null");
    let report = c
        .download("photo.jpg", null, &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((report.path.as_path(), report.size), (null, 300_000));
    let report = c
        .download("note.txt", null, &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((report.path.as_path(), report.size), (null, 5_000));
    assert!(std::fs::metadata(null)
        .unwrap()
        .file_type()
        .is_char_device());
}

/// A caller that has read a manifest (the console, to size its progress
/// bar) gets that version's bytes from `download_to`, even once the file
/// has been written over; `download` by name gets the newest.
#[tokio::test]
async fn download_to_fetches_the_version_it_was_given() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(&cluster.addrs()[0]).unwrap();
    let opts = small_chunks();
    let first = random_file(dir.path(), "first", 200_000).unwrap();
    c.upload_file(&first, "doc", &opts, &no_progress)
        .await
        .unwrap();
    let read = c.manifest("doc").await.unwrap();
    let second = random_file(dir.path(), "second", 300_000).unwrap();
    c.upload_file(&second, "doc", &opts, &no_progress)
        .await
        .unwrap();
    assert!(c.manifest("doc").await.unwrap().version > read.version);

    let out = dir.path().join("doc.out");
    let report = c
        .download_to(&read, &out, &opts, &no_progress)
        .await
        .unwrap();
    assert_eq!((report.version, report.size), (read.version, 200_000));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&first).unwrap());
    c.download("doc", &out, &opts, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&second).unwrap());
}

#[tokio::test]
async fn writers_racing_on_one_name_leave_one_newest_version_everywhere() {
    // The owner writes a manifest here and copies it on at once, so a
    // write it refuses (a newer version got in first) may leave copies on
    // the successors: they must lose to the version that won.
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addrs = cluster.addrs();
    let writers = 12;
    // Small ones live in the manifest, larger ones name chunks.
    let names = cluster
        .upload_random_files(dir.path(), "src", writers, |i| {
            if i % 2 == 0 {
                100 + i
            } else {
                MAX_INLINE_BYTES + 1000 + i
            }
        })
        .await
        .unwrap();
    let reader = client(&addrs[0]).unwrap();
    let mut rivals = Vec::new();
    for name in &names {
        let mut m = reader.manifest(name).await.unwrap();
        m.name = "contested".into();
        rivals.push(m);
    }
    let owner = cluster.owner_of(&Id::hash(b"contested")).unwrap().addr;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for round in 0..4u64 {
        // Versions ahead of the clock, the later-sent ones lower: a write
        // that read the stored version before a higher one landed is
        // refused when it comes to store its own.
        let base = chord_node::now_ms() + 60_000 + round * 10_000;
        let writes = rivals.iter().enumerate().map(|(i, m)| {
            let mut m = m.clone();
            m.version = base + ((writers - i) as u64) * 10;
            let (cluster, owner) = (&cluster, &owner);
            async move {
                let put = cluster.peers.put_manifest(owner, &m, 3, false).await;
                (i, m.checksum, put)
            }
        });
        for (i, checksum, put) in futures::future::join_all(writes).await {
            match put {
                Ok((copies, version)) => {
                    assert_eq!(copies, 3, "write {i} of round {round}");
                    acknowledged.push((version, checksum, i));
                }
                Err(e) if e.to_string().contains("written at the same time") => refused += 1,
                Err(e) => panic!("write {i} of round {round}: {e}"),
            }
        }
    }
    eprintln!(
        "{} of {} writes acknowledged, {refused} refused",
        acknowledged.len(),
        4 * writers
    );
    cluster
        .wait_for(
            "every holder has the same manifest",
            Duration::from_secs(30),
            || async {
                let mut seen = Vec::new();
                for addr in cluster.addrs() {
                    seen.push(cluster.peers.get_manifest(&addr, "contested").await?);
                }
                Ok(seen.windows(2).all(|w| w[0] == w[1]))
            },
        )
        .await
        .unwrap();
    let stored = cluster
        .peers
        .get_manifest(&addrs[0], "contested")
        .await
        .unwrap()
        .unwrap();
    // The winner is the newest write acknowledged, and reads back as it.
    let newest = acknowledged.iter().map(|(v, _, _)| *v).max().unwrap();
    assert_eq!(stored.version, newest, "{acknowledged:?}");
    let winner = acknowledged
        .iter()
        .find(|(v, c, _)| (*v, *c) == (stored.version, stored.checksum))
        .expect("the stored version is one a writer was told it wrote");
    let out = dir.path().join("contested.out");
    client(&addrs[1])
        .unwrap()
        .download("contested", &out, &small_chunks(), &no_progress)
        .await
        .unwrap();
    assert!(
        std::fs::read(dir.path().join(&names[winner.2])).unwrap() == std::fs::read(&out).unwrap(),
        "the file read back is not the version that won"
    );
}
