//! The cluster token: a ring started with one admits only calls that carry
//! it, over gRPC, through the HTTP gateway, and on the MessagePack-RPC face.

// A failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chord_node::auth::ClusterToken;
use chord_node::chord::{Id, NodeRef};
use chord_node::client::Client;
use chord_node::peer::{PeerOptions, PeerPool};
use chord_node::store::{CheckedChunk, Manifest};
use chord_node::Error;
use chord_tests::files::{no_progress, random_file, small_chunks};
use chord_tests::{free_port, TestCluster, CONVERGE, FAST};

const HTTP_OFFSET: u16 = 1000;

fn token(text: &str) -> ClusterToken {
    ClusterToken::new(text).unwrap()
}

fn pool(token: Option<ClusterToken>) -> PeerPool {
    PeerPool::new(PeerOptions {
        rpc_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        token,
        ca: None,
    })
}

fn refused<T: std::fmt::Debug>(what: &str, answer: chord_node::Result<T>) {
    match answer {
        Err(Error::Unauthenticated(_)) => {}
        other => panic!("{what}: want a refusal, got {other:?}"),
    }
}

/// A gRPC port whose port + HTTP_OFFSET is free too.
fn ports() -> u16 {
    loop {
        let port = free_port().unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port + HTTP_OFFSET)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_with_a_token_admits_only_calls_that_carry_it() {
    let secret = token("test-ring-token-0123456789");
    let mut cluster =
        TestCluster::configured(3, FAST, Some(secret.clone()), Some(HTTP_OFFSET)).unwrap();
    for _ in 0..3 {
        let join = cluster.addrs().first().cloned();
        cluster.fleet.start(ports(), join.as_deref()).await.unwrap();
    }
    // The nodes talk to each other with it: the ring forms.
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let addr = cluster.addrs()[0].clone();

    // A client with the token does everything.
    let dir = tempfile::tempdir().unwrap();
    let path = random_file(dir.path(), "kept", 150_000).unwrap();
    let with = Client::new(
        addr.clone(),
        PeerOptions {
            token: Some(secret.clone()),
            ..PeerOptions::default()
        },
    )
    .unwrap();
    with.upload_file(&path, "kept", &small_chunks(), &no_progress)
        .await
        .unwrap();
    cluster
        .check_files_intact(dir.path(), &["kept".to_string()])
        .await
        .expect_err("a client without the token must not read");

    // Without it, or with another, nothing gets through: not a read, not a
    // leave, not a notify into a key range, not a replica manifest, not a
    // delete.
    for (who, peers) in [
        ("no token", pool(None)),
        (
            "a wrong token",
            pool(Some(token("another-token-0123456789"))),
        ),
    ] {
        refused(who, peers.get_info(&addr).await);
        refused(who, peers.list_files(&addr, true).await);
        let me = NodeRef::from_addr("127.0.0.1:1".to_string());
        refused(who, peers.notify(&addr, &me).await);
        refused(who, peers.leave(&addr, &me, None, &[]).await);
        let fake = Manifest::tombstone("kept", u64::from(u32::MAX), 1);
        refused(who, peers.put_manifest(&addr, &fake, 1, true).await);
        refused(who, peers.delete_file(&addr, "kept").await);
        refused(who, peers.get_chunk(&addr, &Id::hash(b"x")).await);
        // A chunk's upload, whose body the pool frames itself.
        let chunk = CheckedChunk::of(vec![7u8; 600_000].into()).unwrap();
        refused(who, peers.put_chunk(&addr, &chunk, 1).await);
    }
    assert_eq!(
        chord_tests::files::listed(&with).await.unwrap(),
        vec!["kept".to_string()],
        "the refused calls changed nothing"
    );

    // A node without the token cannot join: it says why and exits.
    let mut outsider = TestCluster::configured(3, FAST, None, None).unwrap();
    let joined = outsider
        .fleet
        .start(free_port().unwrap(), Some(&addr))
        .await;
    let err = format!("{:#}", joined.expect_err("a node without the token joined"));
    assert!(err.contains("cluster token"), "{err}");

    // The gateway: writes and reads need the token; with it they work.
    let http = cluster.fleet.node(&addr).unwrap().http.clone().unwrap();
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(&args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let bearer = format!("Authorization: Bearer {}", secret.reveal());
    let file = format!("files=@{}", path.display());
    let upload = format!("http://{http}/upload");
    let get = format!("http://{http}/kept");
    assert_eq!(
        curl(vec!["-F".into(), file.clone(), upload.clone()]).await,
        "401"
    );
    assert_eq!(curl(vec![get.clone()]).await, "401");
    assert_eq!(
        curl(vec!["-X".into(), "DELETE".into(), get.clone()]).await,
        "401"
    );
    assert_eq!(
        curl(vec!["-H".into(), bearer.clone(), "-F".into(), file, upload]).await,
        "200"
    );
    assert_eq!(
        curl(vec!["-H".into(), bearer.clone(), get.clone()]).await,
        "200"
    );

    // The MessagePack-RPC face answers questions but takes no orders.
    let course = |method: &str| chord_tests::course_call(&addr, method).unwrap();
    let info = course("get_info");
    assert!(info[2].is_nil(), "{info}");
    let kill = course("kill");
    assert!(
        kill[2]
            .as_str()
            .is_some_and(|e| e.contains("cluster token")),
        "{kill}"
    );
    assert!(
        cluster.peers.get_info(&addr).await.is_ok(),
        "kill went through"
    );
}
