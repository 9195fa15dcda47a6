//! TLS: a ring started with `--tls-cert`, `--tls-key` and `--tls-ca` talks
//! to itself over TLS, serves the console and curl over TLS, and refuses
//! every client that does not trust its CA, plaintext ones included.
//!
//! The CA and the node certificate (for 127.0.0.1) are made at test time
//! with rcgen, so no key material lives in the repository.

// A failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use chord_node::peer::{PeerOptions, PeerPool};
use chord_node::tls::{TlsFiles, TrustedCa};
use chord_tests::files::random_file;
use chord_tests::{console_binary, free_port, output_within, TestCluster, CONVERGE, FAST};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const HTTP_OFFSET: u16 = 1000;

/// How long one chord-console or curl run may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A CA with one certificate it signed for `names`, written as PEM files
/// into `dir` under `prefix`.
fn pki(dir: &Path, prefix: &str, names: &[&str]) -> TlsFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (curl) takes a leaf named like its issuer
    // for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("chord-dfs test CA {prefix}"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let node_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut node_params = CertificateParams::new(names).unwrap();
    node_params
        .distinguished_name
        .push(DnType::CommonName, format!("chord-dfs test node {prefix}"));
    let node_cert = node_params.signed_by(&node_key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(format!("{prefix}-{name}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    TlsFiles {
        cert: write("node.pem", node_cert.pem()),
        key: write("node-key.pem", node_key.serialize_pem()),
        ca: write("ca.pem", ca_cert.pem()),
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

fn pool(ca: Option<TrustedCa>) -> PeerPool {
    PeerPool::new(PeerOptions {
        rpc_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        token: None,
        ca,
    })
}

async fn run(program: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_remove(chord_node::tls::CA_ENV);
    output_within(&mut cmd, COMMAND_TIMEOUT).await
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_ring_serves_only_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = pki(dir.path(), "ring", &["127.0.0.1"]);
    let stranger = pki(dir.path(), "stranger", &["127.0.0.1"]);
    let mut cluster = TestCluster::with_options(3, FAST, |opts| {
        opts.tls = Some(tls.clone());
        opts.http_offset = Some(HTTP_OFFSET);
    })
    .unwrap();
    for _ in 0..3 {
        let join = cluster.addrs().first().cloned();
        cluster.fleet.start(ports(), join.as_deref()).await.unwrap();
    }
    // The nodes reach each other over TLS (and the test's pool trusts the
    // CA): the ring forms.
    cluster.wait_consistent(CONVERGE).await.unwrap();
    let addrs = cluster.addrs();

    // The console with the CA uploads through one node and downloads
    // through another, byte for byte.
    let console = console_binary().unwrap();
    let ca = tls.ca.to_str().unwrap();
    let original = random_file(dir.path(), "over-tls", 300_000).unwrap();
    let up = run(
        &console,
        &[
            "--peer",
            &addrs[0],
            "--tls-ca",
            ca,
            "upload",
            original.to_str().unwrap(),
            "--chunk-size",
            "65536",
        ],
    )
    .await;
    assert!(up.status.success(), "upload: {}", text(&up));
    let copy: PathBuf = dir.path().join("over-tls.out");
    let down = run(
        &console,
        &[
            "--peer",
            &addrs[2],
            "--tls-ca",
            ca,
            "download",
            "over-tls",
            "-o",
            copy.to_str().unwrap(),
        ],
    )
    .await;
    assert!(down.status.success(), "download: {}", text(&down));
    assert_eq!(
        std::fs::read(&original).unwrap(),
        std::fs::read(&copy).unwrap()
    );

    // A plaintext client, and one that trusts another CA, get nothing.
    let addr = &addrs[1];
    let plain = pool(None).get_info(addr).await;
    assert!(plain.is_err(), "a plaintext call was answered: {plain:?}");
    let other = TrustedCa::from_file(&stranger.ca).unwrap();
    let wrong = pool(Some(other)).get_info(addr).await;
    assert!(
        matches!(&wrong, Err(chord_node::Error::Unreachable { reason, .. }) if reason.contains("certificate")),
        "a call trusting another CA: {wrong:?}"
    );
    let ls = run(&console, &["--peer", addr, "ls"]).await;
    assert!(!ls.status.success(), "ls without the CA: {}", text(&ls));
    let ls = run(
        &console,
        &[
            "--peer",
            addr,
            "--tls-ca",
            stranger.ca.to_str().unwrap(),
            "ls",
        ],
    )
    .await;
    assert!(!ls.status.success(), "ls with another CA: {}", text(&ls));

    // curl: with the CA the gateway answers over HTTPS; without it, or in
    // plaintext, there is no answer.
    let http = cluster.fleet.node(addr).unwrap().http.clone().unwrap();
    let curl = |args: Vec<String>| async move {
        let mut all = vec!["-sS", "--max-time", "30"];
        all.extend(args.iter().map(String::as_str));
        run(Path::new("curl"), &all).await
    };
    let listed = curl(vec![
        "--cacert".into(),
        ca.into(),
        format!("https://{http}/"),
    ])
    .await;
    assert!(
        listed.status.success(),
        "curl with the CA: {}",
        text(&listed)
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("over-tls"),
        "{}",
        text(&listed)
    );
    let got = curl(vec![
        "--cacert".into(),
        ca.into(),
        format!("https://{http}/over-tls"),
    ])
    .await;
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(got.stdout, std::fs::read(&original).unwrap());
    let untrusted = curl(vec![format!("https://{http}/")]).await;
    // 60: the peer's certificate could not be verified.
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "curl without the CA: {}",
        text(&untrusted)
    );
    let plaintext = curl(vec![format!("http://{http}/")]).await;
    assert!(
        !plaintext.status.success(),
        "curl in plaintext: {}",
        text(&plaintext)
    );

    // The MessagePack-RPC face, plaintext by nature, refuses and says why.
    let answer = chord_tests::course_call(addr, "get_info").unwrap();
    assert!(
        answer[2].as_str().is_some_and(|e| e.contains("TLS only")),
        "{answer}"
    );

    // Nothing of that disturbed the ring.
    cluster.wait_consistent(CONVERGE).await.unwrap();
}

#[tokio::test]
async fn a_node_with_a_key_that_is_not_its_certificates_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ring = pki(dir.path(), "ring", &["127.0.0.1"]);
    let other = pki(dir.path(), "other", &["127.0.0.1"]);
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..ring.clone()
    };
    let mut cluster = TestCluster::with_options(1, FAST, |opts| {
        opts.tls = Some(mismatched);
    })
    .unwrap();
    let err = cluster
        .fleet
        .start(free_port().unwrap(), None)
        .await
        .expect_err("a node started with another certificate's key");
    let err = format!("{err:#}");
    assert!(
        err.contains(ring.cert.to_str().unwrap()) && err.contains(other.key.to_str().unwrap()),
        "{err}"
    );
}
