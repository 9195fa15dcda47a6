//! The ring with real `chord-node` processes: joins, crashes, graceful
//! leaves and bad input.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use chord_node::chord::NodeRef;
use chord_proto::pb;
use chord_proto::pb::ring_client::RingClient;
use chord_tests::files::{client, no_progress, random_file, small_chunks};
use chord_tests::{free_port, output_within, TestCluster, CONVERGE, FAST};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn sixteen_nodes_converge_and_route_correctly() {
    let cluster = TestCluster::start(16, 3, FAST).await.unwrap();
    let took = cluster.wait_consistent(CONVERGE).await.unwrap();
    eprintln!("16 nodes consistent after {took:?}");
    let wrong = cluster.wrong_lookups(1000).await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} wrong lookups, e.g. {}",
        wrong.len(),
        wrong[0]
    );
}

#[tokio::test]
async fn survives_kill_of_r_minus_1_adjacent_nodes() {
    let mut cluster = TestCluster::start_converged(16, 3, FAST).await.unwrap();
    let truth = cluster.truth();
    // r = 3: kill two adjacent nodes at once.
    for victim in &truth[4..6] {
        cluster.fleet.kill(&victim.addr).await.unwrap();
    }
    let started = Instant::now();
    cluster
        .wait_consistent(Duration::from_secs(30))
        .await
        .unwrap();
    cluster
        .wait_lookups_correct(300, Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("repaired after kill -9 in {:?}", started.elapsed());
}

#[tokio::test]
async fn graceful_leave_repairs_neighbours_at_once() {
    // Failure detection is slow here on purpose (stabilize every 3 s, check
    // predecessor every 60 s): only the leave notices can repair in time.
    let slow = [
        "--stabilize-ms",
        "3000",
        "--fix-fingers-ms",
        "30",
        "--check-predecessor-ms",
        "60000",
    ];
    let mut cluster = TestCluster::start_converged(5, 3, &slow).await.unwrap();
    let leaver = cluster.truth()[2].clone();
    let clean = cluster
        .fleet
        .stop(&leaver.addr, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(clean, "the leaving node did not exit cleanly");
    // Well under one stabilize period.
    cluster
        .wait_consistent(Duration::from_millis(1000))
        .await
        .unwrap();
}

/// A `chord-node` that exited non-zero, its last line on stderr its
/// one-line reason, which says `why`.
fn refused_saying(out: &std::process::Output, why: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("chord-node: ") && last.contains(why),
        "unclear reason: {last:?}"
    );
}

#[tokio::test]
async fn join_through_a_dead_port_fails_cleanly() {
    let cluster = TestCluster::new(3, &[]).unwrap();
    let bin = cluster.fleet.options().binary.clone();
    let port = free_port().unwrap();
    let dead = free_port().unwrap();
    let started = Instant::now();
    let out = tokio::process::Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--join", &format!("127.0.0.1:{dead}")])
        .args(["--join-timeout-secs", "2"])
        .arg("--data-dir")
        .arg(cluster.data_root().join("dead-join"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("chord-node hung on a dead --join")
        .unwrap();
    refused_saying(&out, "could not join");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// A second node pointed at a data dir that a live node has open is
/// refused before it touches anything there, and the first node's files
/// stay whole.
#[tokio::test]
async fn a_second_node_on_a_data_dir_in_use_is_refused() {
    let cluster = TestCluster::start_converged(3, 3, FAST).await.unwrap();
    let addrs = cluster.addrs();
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "kept", 300_000).unwrap();
    let opts = small_chunks();
    client(&addrs[0])
        .unwrap()
        .upload_file(&src, "kept", &opts, &no_progress)
        .await
        .unwrap();

    let in_use = cluster.fleet.node(&addrs[0]).unwrap().data_dir.clone();
    let bin = cluster.fleet.options().binary.clone();
    let port = free_port().unwrap();
    let out = output_within(
        tokio::process::Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--join", &addrs[1]])
            .arg("--data-dir")
            .arg(&in_use),
        Duration::from_secs(20),
    )
    .await;
    refused_saying(&out, "is in use by another chord-node");

    let back = dir.path().join("kept.out");
    client(&addrs[0])
        .unwrap()
        .download("kept", &back, &opts, &no_progress)
        .await
        .unwrap();
    assert!(std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap());
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument() {
    let cluster = TestCluster::start(1, 3, FAST).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let mut ring = RingClient::connect(format!("http://{addr}")).await.unwrap();
    for bad in [vec![], vec![0u8; 19], vec![0u8; 21]] {
        let status = ring
            .find_successor(pb::FindSuccessorRequest { id: bad.clone() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        let status = ring
            .find_step(pb::FindStepRequest { id: bad })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    // A candidate whose id is not SHA-1 of its address, or whose address is junk.
    let mut forged = NodeRef::from_addr("127.0.0.1:1");
    forged.addr = "127.0.0.1:2".into();
    for candidate in [
        pb::NodeRef {
            id: forged.id.as_bytes().to_vec(),
            addr: forged.addr.clone(),
        },
        pb::NodeRef {
            id: vec![1; 20],
            addr: "not an address".into(),
        },
    ] {
        let status = ring
            .notify(pb::NotifyRequest {
                candidate: Some(candidate),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    let status = ring
        .notify(pb::NotifyRequest { candidate: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Raw garbage on the socket does not take the node down.
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"\x00\xffGET / HTTP/1.1\r\n\r\nnonsense\x00\x01\x02")
        .await
        .unwrap();
    drop(sock);
    ring.ping(pb::Empty {}).await.unwrap();
}

mod nonsense_peer {
    //! A gRPC peer that answers every call with well-formed but wrong data.
    use chord_proto::pb;
    use chord_proto::pb::ring_server::Ring;
    use tonic::{Request, Response, Status};

    pub struct Liar {
        pub addr: String,
    }

    fn bogus() -> pb::NodeRef {
        pb::NodeRef {
            id: vec![7; 3],
            addr: "::::".into(),
        }
    }

    #[tonic::async_trait]
    impl Ring for Liar {
        async fn get_info(&self, _: Request<pb::Empty>) -> Result<Response<pb::NodeInfo>, Status> {
            Ok(Response::new(pb::NodeInfo {
                node: Some(bogus()),
                predecessor: Some(bogus()),
                successors: vec![bogus(); 50],
                uptime_secs: 0,
                replicas: 0,
                state: 77,
                alive_since_ms: u64::MAX,
            }))
        }
        async fn find_successor(
            &self,
            _: Request<pb::FindSuccessorRequest>,
        ) -> Result<Response<pb::FindSuccessorResponse>, Status> {
            // Claims to own everything, with a correct id for its address:
            // the joiner accepts it, then sees nonsense on every later call.
            let me = chord_node::chord::NodeRef::from_addr(self.addr.clone());
            Ok(Response::new(pb::FindSuccessorResponse {
                owner: Some(chord_node::wire::node_to_pb(&me)),
                hops: u32::MAX,
            }))
        }
        async fn find_step(
            &self,
            _: Request<pb::FindStepRequest>,
        ) -> Result<Response<pb::FindStepResponse>, Status> {
            Ok(Response::new(pb::FindStepResponse {
                owner: None,
                next: vec![],
            }))
        }
        async fn get_predecessor(
            &self,
            _: Request<pb::Empty>,
        ) -> Result<Response<pb::PredecessorResponse>, Status> {
            Ok(Response::new(pb::PredecessorResponse {
                predecessor: Some(bogus()),
            }))
        }
        async fn get_successor_list(
            &self,
            _: Request<pb::Empty>,
        ) -> Result<Response<pb::SuccessorListResponse>, Status> {
            Ok(Response::new(pb::SuccessorListResponse {
                successors: vec![bogus()],
            }))
        }
        async fn notify(
            &self,
            _: Request<pb::NotifyRequest>,
        ) -> Result<Response<pb::Empty>, Status> {
            Err(Status::internal("\u{0}garbage"))
        }
        async fn ping(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
            Ok(Response::new(pb::Empty {}))
        }
        async fn get_finger_table(
            &self,
            _: Request<pb::Empty>,
        ) -> Result<Response<pb::FingerTableResponse>, Status> {
            Ok(Response::new(pb::FingerTableResponse {
                fingers: vec![pb::Finger {
                    index: 9999,
                    start: vec![],
                    node: Some(bogus()),
                }],
            }))
        }
        async fn leave(&self, _: Request<pb::LeaveRequest>) -> Result<Response<pb::Empty>, Status> {
            Ok(Response::new(pb::Empty {}))
        }
        async fn get_events(
            &self,
            _: Request<pb::GetEventsRequest>,
        ) -> Result<Response<pb::EventsResponse>, Status> {
            Ok(Response::new(pb::EventsResponse {
                events: vec![pb::Event {
                    kind: "\u{0}no such kind".into(),
                    peer: "::::".into(),
                    ..Default::default()
                }],
                next: u64::MAX,
                missed: u64::MAX,
            }))
        }
        async fn drain(
            &self,
            _: Request<pb::DrainRequest>,
        ) -> Result<Response<pb::HandoffReport>, Status> {
            // Claims a complete hand-off of nothing, instantly.
            Ok(Response::new(pb::HandoffReport::default()))
        }
    }
}

#[tokio::test]
async fn a_peer_answering_nonsense_does_not_crash_the_node() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_addr = listener.local_addr().unwrap().to_string();
    let liar = pb::ring_server::RingServer::new(nonsense_peer::Liar {
        addr: liar_addr.clone(),
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(liar)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut cluster = TestCluster::new(3, FAST).unwrap();
    let addr = cluster
        .fleet
        .start(free_port().unwrap(), Some(&liar_addr))
        .await
        .unwrap();
    // Stabilize, fix_fingers and check_predecessor rounds hit the liar
    // until the node gives up on it and stands alone.
    cluster
        .wait_for("the node gives up on the liar", CONVERGE, || async {
            let info = cluster.peers.get_info(&addr).await?;
            Ok(info.successors.iter().all(|s| s.addr != liar_addr))
        })
        .await
        .unwrap();
    // And it still serves.
    cluster
        .peers
        .get_info(&addr)
        .await
        .expect("node died after nonsense");
    let (owner, _) = cluster
        .peers
        .find_successor(&addr, &chord_node::chord::Id::hash(b"x"))
        .await
        .unwrap();
    assert_eq!(owner.addr, addr);
    // Events in a shape no node sends are refused as the peer's fault.
    let err = cluster.peers.events(&liar_addr, 0).await.unwrap_err();
    assert!(
        matches!(err, chord_node::Error::BadReply { .. }),
        "nonsense events accepted: {err}"
    );
    server.abort();
}

/// A peer stopped with SIGSTOP keeps its connections open and answers
/// nothing. A call to it must end at the caller's own deadline (tonic
/// enforces `grpc-timeout` on the client side too), not when HTTP/2
/// keepalive gives up some 15 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_costs_a_caller_one_deadline() {
    let cluster = TestCluster::start_converged(4, 3, FAST).await.unwrap();
    let frozen = cluster.addrs()[1].clone();
    // Connected first, so the freeze finds an open HTTP/2 connection.
    cluster.peers.get_info(&frozen).await.unwrap();
    let pid = cluster.fleet.node(&frozen).unwrap().pid().unwrap();
    let stopped = chord_tests::Frozen::freeze(pid).await.unwrap();
    let deadline = cluster.peers.options().rpc_timeout;
    let started = Instant::now();
    let answer = cluster.peers.get_info(&frozen).await;
    let took = started.elapsed();
    let still_frozen = cluster.peers.get_stats(&frozen).await;
    drop(stopped);
    let err = answer.expect_err("a stopped process answered");
    assert!(err.peer_may_be_gone(), "{err:?}");
    assert!(still_frozen.is_err());
    assert!(
        took < deadline + Duration::from_millis(1500),
        "the call took {took:?} with a {deadline:?} deadline"
    );
}

/// The server's own bounds, with a 2 s request timeout and 2 calls per
/// connection: uploads that send their header and then nothing hold both
/// slots of one connection, so a third call on it is refused at once with
/// RESOURCE_EXHAUSTED, while another connection is served; the node ends the
/// stalled calls at its timeout with a clean status; then the connection
/// serves again, a file goes in, and a Drain asked for a minute answers
/// within the timeout with an incomplete report instead of being cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_limit_or_the_timeout_gets_a_clean_error_and_the_node_keeps_serving() {
    use chord_proto::pb::store_client::StoreClient;
    use chord_tests::files::{client, no_progress, small_chunks};

    const TIMEOUT: Duration = Duration::from_secs(2);
    let mut args = FAST.to_vec();
    args.extend([
        "--grpc-request-timeout-secs",
        "2",
        "--grpc-calls-per-connection",
        "2",
    ]);
    let cluster = TestCluster::start(1, 3, &args).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    // One channel is one HTTP/2 connection; its calls carry no deadline.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A stall can lose its slot to the ping below that races it in; one
    // refused so asks again at once, within the first half of the timeout,
    // so that both slots end up held by stalls.
    let stall = || {
        let mut store = StoreClient::new(channel.clone());
        tokio::spawn(async move {
            let first = Instant::now();
            loop {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let header = pb::PutChunkRequest {
                    body: Some(pb::put_chunk_request::Body::Header(pb::PutChunkHeader {
                        key: vec![7; 20],
                        size: 1000,
                        copies: 1,
                        age_ms: 0,
                    })),
                };
                tx.send(header).await.unwrap();
                let started = Instant::now();
                let answer = store
                    .put_chunk(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await;
                // The sender lives until the answer: the stream never ends.
                drop(tx);
                let refused =
                    matches!(&answer, Err(s) if s.code() == tonic::Code::ResourceExhausted);
                if !refused || first.elapsed() >= TIMEOUT / 2 {
                    break (started.elapsed(), answer);
                }
            }
        })
    };
    let stalled = [stall(), stall()];
    let mut ring = RingClient::new(channel.clone());
    let refused = Instant::now();
    let status = loop {
        match ring.ping(pb::Empty {}).await {
            Err(status) => break status,
            Ok(_) if refused.elapsed() < TIMEOUT / 2 => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("a third call on a full connection was served"),
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Another connection is not held up by this one.
    cluster.peers.get_info(&addr).await.unwrap();
    for call in stalled {
        let (took, answer) = call.await.unwrap();
        let status = answer.expect_err("a stalled upload was accepted");
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
        assert!(status.message().contains("Timeout"), "{status:?}");
        assert!(
            took < TIMEOUT + Duration::from_millis(1500),
            "the stalled call ended after {took:?}"
        );
    }
    ring.ping(pb::Empty {}).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = chord_tests::files::random_file(dir.path(), "after", 100_000).unwrap();
    client(&addr)
        .unwrap()
        .upload_file(&path, "after", &small_chunks(), &no_progress)
        .await
        .unwrap();
    let started = Instant::now();
    let report = cluster
        .peers
        .drain(&addr, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!report.is_complete(), "the only holder gave its keys away");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
}
