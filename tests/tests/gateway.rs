//! The HTTP gateway with real `chord-node` processes, driven by the clients
//! people use: curl and Python `requests`. Every external command runs under
//! a timeout and is killed if it overruns.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chord_node::store::{chunk_key, Algorithm, Checksum};
use chord_tests::files::chunk_tree_hex;
use chord_tests::{
    fast_with_slow_handoffs, fast_without_repair, free_port, TestCluster, CONVERGE, FAST, POLL,
};
use rand::Rng;

/// Each node's gateway listens on its gRPC port plus this.
const HTTP_OFFSET: u16 = 1000;
/// How long a gateway may take to accept connections after its node answers.
const HTTP_READY: Duration = Duration::from_secs(15);
/// Bound on one curl or python run (a few MiB through a debug build).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the 429 test may take to see a second upload turned away while
/// a slow one runs: a few rounds of a 6 s upload.
const BUSY_WAIT: Duration = Duration::from_secs(60);
/// More than two default (4 MiB) chunks, so the last one is partial.
const BIG_FILE: usize = 9 * 1024 * 1024;

/// A 3-node, 3-replica ring with a gateway on every node, started with
/// `args`; returns the cluster and the gateways' `http://host:port` bases.
async fn gateway_cluster(args: &[&str]) -> Result<(TestCluster, Vec<String>)> {
    gateway_cluster_of(3, args).await
}

/// [`gateway_cluster`] keeping `replicas` copies of each key; the bases
/// are in the order of [`TestCluster::addrs`].
async fn gateway_cluster_of(replicas: usize, args: &[&str]) -> Result<(TestCluster, Vec<String>)> {
    let mut cluster = TestCluster::configured(replicas, args, None, Some(HTTP_OFFSET))?;
    for _ in 0..3 {
        let port = port_with_free_http()?;
        let join = cluster.addrs().first().cloned();
        cluster.fleet.start(port, join.as_deref()).await?;
    }
    cluster.wait_consistent(CONVERGE).await?;
    let mut bases = Vec::new();
    for addr in cluster.addrs() {
        let http = cluster
            .fleet
            .node(&addr)
            .and_then(|n| n.http.clone())
            .with_context(|| format!("{addr} has no gateway"))?;
        wait_listening(&http).await?;
        bases.push(format!("http://{http}"));
    }
    Ok((cluster, bases))
}

/// A free port whose gateway port (`+ HTTP_OFFSET`) is free as well.
fn port_with_free_http() -> Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        let Some(http) = port.checked_add(HTTP_OFFSET) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", http)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port pair (p, p + {HTTP_OFFSET}) free after 50 tries")
}

async fn wait_listening(addr: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= HTTP_READY => {
                bail!("gateway {addr} not listening after {HTTP_READY:?}: {e}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Runs `program` to completion, killing it after [`COMMAND_TIMEOUT`].
async fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{program} did not finish within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("cannot run {program}"))
}

/// Runs curl and insists on exit code 0; returns stdout.
async fn curl_ok<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    let out = run("curl", args).await?;
    if !out.status.success() {
        bail!(
            "curl {:?} failed with {}: {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `curl -sSf -F files=@PATH BASE/upload`: uploads the file at `path`
/// through the gateway at `base`; returns the gateway's summary.
async fn curl_upload(path: &str, base: &str) -> Result<String> {
    curl_ok(&[
        "-sSf",
        "-F",
        &format!("files=@{path}"),
        &format!("{base}/upload"),
    ])
    .await
}

/// `curl -sSf -o OUT URL`: downloads `url` to `out`; returns the bytes saved.
async fn curl_download(url: &str, out: &Path) -> Result<Vec<u8>> {
    curl_ok(&[
        OsStr::new("-sSf"),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new(url),
    ])
    .await?;
    Ok(std::fs::read(out)?)
}

/// The bytes curl saved of `url` to `out` before the download failed, as a
/// download the gateway cuts short must; an error if it succeeded.
async fn curl_cut_short(url: &str, out: &Path) -> Result<Vec<u8>> {
    let res = run("curl", &["-sS", "-o", out.to_str().context("path")?, url]).await?;
    if res.status.success() {
        bail!("curl got all of {url}, which should have been cut short");
    }
    Ok(std::fs::read(out).unwrap_or_default())
}

/// The HTTP status and body of a request made with `extra` curl flags.
async fn status_and_body(extra: &[&str], url: &str) -> Result<(u16, String)> {
    let mut args: Vec<&str> = vec!["-s", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = String::from_utf8_lossy(&run("curl", &args).await?.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').context("curl printed no status")?;
    Ok((
        code.trim()
            .parse()
            .with_context(|| format!("status {code:?}"))?,
        body.to_string(),
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill(&mut data[..]);
    data
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn curl_round_trip_through_any_node() {
    let (_cluster, http) = gateway_cluster(FAST).await.unwrap();
    let (a, b, c) = (&http[0], &http[1], &http[2]);
    let dir = tempfile::tempdir().unwrap();

    // Upload through A, download through B: identical bytes.
    let big = random_bytes(BIG_FILE);
    let big_path = write(dir.path(), "big.bin", &big);
    let summary = curl_upload(&big_path, a).await.unwrap();
    assert_eq!(summary, format!("big.bin\t{BIG_FILE}\t3\n"));
    let out = dir.path().join("big.out");
    let got = curl_download(&format!("{b}/big.bin"), &out).await.unwrap();
    assert!(got == big, "downloaded bytes differ");

    // HEAD: the headers only.
    let head = curl_ok(&["-sSf", "-I", &format!("{c}/big.bin")])
        .await
        .unwrap()
        .to_lowercase();
    assert!(
        head.contains(&format!("content-length: {BIG_FILE}")),
        "{head}"
    );
    assert!(
        head.contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"big.bin\""),
        "{head}"
    );
    // The ETag is the file's checksum: BLAKE3 over its chunks' BLAKE3
    // hashes, for a file written now (in the node's default chunks).
    let tree = chunk_tree_hex(&big, chord_node::DEFAULT_CHUNK_BYTES);
    assert!(head.contains(&format!("etag: \"{tree}\"")), "{head}");

    // A missing name: curl -f fails with 22 and writes no file; the status is 404.
    let missing_out = dir.path().join("missing.out");
    let res = run(
        "curl",
        &[
            "-sf",
            "-o",
            missing_out.to_str().unwrap(),
            &format!("{c}/no-such-file"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(res.status.code(), Some(22));
    assert!(!missing_out.exists(), "curl -f saved an error page");
    let (code, body) = status_and_body(&[], &format!("{c}/no-such-file"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    assert_eq!(body.lines().count(), 1, "{body:?}");

    // Listing: text by default, JSON on request.
    let text = curl_ok(&["-sSf", &format!("{c}/")]).await.unwrap();
    assert!(
        text.lines().any(|l| l == format!("big.bin\t{BIG_FILE}")),
        "{text}"
    );
    for extra in [vec![], vec!["-H", "Accept: application/json"]] {
        let url = if extra.is_empty() {
            format!("{b}/?json")
        } else {
            format!("{b}/")
        };
        let mut args: Vec<&str> = vec!["-sSf"];
        args.extend(extra.iter().copied());
        args.push(&url);
        let listing: serde_json::Value =
            serde_json::from_str(&curl_ok(&args).await.unwrap()).unwrap();
        let entry = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "big.bin")
            .unwrap_or_else(|| panic!("big.bin not listed: {listing}"));
        assert_eq!(entry["size"], BIG_FILE as u64);
        assert_eq!(entry["chunks"], 3);
        assert!(entry["version"].as_u64().is_some() && entry["modified_ms"].as_u64().is_some());
    }

    // Several files in one request.
    let small: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("small-{i}.dat"), random_bytes(1000 + i * 777)))
        .collect();
    let mut args = vec!["-sSf".to_string()];
    for (name, data) in &small {
        args.push("-F".into());
        args.push(format!("files=@{}", write(dir.path(), name, data)));
    }
    args.push(format!("{b}/upload"));
    let summary = curl_ok(&args).await.unwrap();
    assert_eq!(summary.lines().count(), 3, "{summary}");
    for (name, data) in &small {
        let out = dir.path().join(format!("{name}.out"));
        let got = curl_download(&format!("{c}/{name}"), &out).await.unwrap();
        assert!(got == *data, "{name} differs");
    }

    // PUT: the body is the file. `curl -T FILE BASE/` names it after FILE.
    let put = random_bytes(BIG_FILE + 12_345);
    let put_path = write(dir.path(), "put.bin", &put);
    let summary = curl_ok(&["-sSf", "-T", &put_path, &format!("{c}/")])
        .await
        .unwrap();
    assert_eq!(summary, format!("put.bin\t{}\t3\n", put.len()));
    let out = dir.path().join("put.out");
    let got = curl_download(&format!("{a}/put.bin"), &out).await.unwrap();
    assert!(got == put, "put.bin differs");
    // Under another name, sent chunked (no Content-Length), answered in JSON.
    let answer = curl_ok(&[
        "-sSf",
        "-T",
        &put_path,
        "-H",
        "Transfer-Encoding: chunked",
        &format!("{b}/{}?json", encode("put again.bin")),
    ])
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer[0]["name"], "put again.bin", "{answer}");
    assert_eq!(answer[0]["size"], put.len() as u64, "{answer}");
    assert_eq!(
        answer[0]["blake3_chunks"],
        chunk_tree_hex(&put, chord_node::DEFAULT_CHUNK_BYTES),
        "{answer}"
    );
    let got = curl_download(&format!("{c}/put%20again.bin"), &out)
        .await
        .unwrap();
    assert!(got == put, "\"put again.bin\" differs");
    // `/upload` is a name like any other to PUT.
    curl_ok(&["-sSf", "-T", &put_path, &format!("{a}/upload")])
        .await
        .unwrap();
    let got = curl_download(&format!("{b}/upload"), &out).await.unwrap();
    assert!(got == put, "\"upload\" differs");

    // Bad names: 400 with a one-line reason, nothing stored.
    let some = write(dir.path(), "some.txt", b"hello");
    for bad in ["..", "bad\u{1}name", " padded"] {
        let form = format!("files=@{some};filename=\"{bad}\"");
        let (code, body) = status_and_body(&["-F", &form], &format!("{a}/upload"))
            .await
            .unwrap();
        assert_eq!(code, 400, "{bad:?}: {body}");
        assert_eq!(body.lines().count(), 1, "{bad:?}: {body:?}");
    }
    // A body that is not multipart: 400, one line saying what is taken.
    let (code, body) = status_and_body(
        &["-H", "Content-Type: text/plain", "--data-binary", "hello"],
        &format!("{a}/upload"),
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(body.contains("takes a multipart/form-data body"), "{body}");
    let (code, _) = status_and_body(&[], &format!("{a}/bad%01name"))
        .await
        .unwrap();
    assert_eq!(code, 400);
    let (code, body) = status_and_body(&["-T", &some], &format!("{a}/bad%01name"))
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
    let (code, _) = status_and_body(&[], &format!("{a}/a%2Fb")).await.unwrap();
    assert_eq!(code, 400);
    // A method a path does not take: 405, one line, and what it does take.
    for (method, url) in [("POST", format!("{a}/some.txt")), ("PUT", format!("{a}/"))] {
        let (code, body) = status_and_body(&["-i", "-X", method], &url).await.unwrap();
        assert_eq!(code, 405, "{method} {url}: {body}");
        let (head, text) = body.split_once("\r\n\r\n").unwrap();
        assert!(head.to_lowercase().contains("allow: get"), "{head}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }

    // A name with a space and non-ASCII characters round-trips.
    let fancy = "résumé final 🎵.txt";
    let fancy_data = random_bytes(5000);
    let fancy_path = write(dir.path(), fancy, &fancy_data);
    curl_upload(&fancy_path, c).await.unwrap();
    let out = dir.path().join("fancy.out");
    let got = curl_download(&format!("{a}/{}", encode(fancy)), &out)
        .await
        .unwrap();
    assert!(got == fancy_data, "{fancy} differs");

    // Delete, then the name is gone everywhere; a second delete is a 404.
    let (code, _) = status_and_body(&["-X", "DELETE"], &format!("{b}/big.bin"))
        .await
        .unwrap();
    assert_eq!(code, 204);
    let (code, _) = status_and_body(&[], &format!("{a}/big.bin")).await.unwrap();
    assert_eq!(code, 404);
    let (code, _) = status_and_body(&["-X", "DELETE"], &format!("{c}/big.bin"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    let text = curl_ok(&["-sSf", &format!("{a}/")]).await.unwrap();
    assert!(!text.contains("big.bin"), "{text}");
}

/// Every file under `dir` (recursively) named `name`.
fn find_files(dir: &Path, name: &str, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_files(&path, name, found);
        } else if path.file_name() == Some(OsStr::new(name)) {
            found.push(path);
        }
    }
}

/// A gateway writes and reads its own node's chunks in place: on a ring of
/// one node nothing reaches the node as a chunk over gRPC, so no chunk is
/// hashed on receipt (`chunk_check`), while the gateway's client hashes
/// every key and the node's disk does the writes and reads.
#[tokio::test]
async fn a_gateway_moves_its_own_nodes_chunks_in_place() {
    let mut cluster = TestCluster::configured(1, FAST, None, Some(HTTP_OFFSET)).unwrap();
    let port = port_with_free_http().unwrap();
    cluster.fleet.start(port, None).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let http = cluster
        .fleet
        .node(&addr)
        .and_then(|n| n.http.clone())
        .unwrap();
    wait_listening(&http).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(BIG_FILE);
    let path = write(dir.path(), "own.bin", &data);
    let base = format!("http://{http}");
    curl_upload(&path, &base).await.unwrap();
    let out = dir.path().join("own.out");
    let got = curl_download(&format!("{base}/own.bin"), &out)
        .await
        .unwrap();
    assert!(got == data, "downloaded bytes differ");

    let stats = cluster
        .client(&addr)
        .unwrap()
        .peers()
        .get_stats(&addr)
        .await
        .unwrap();
    let spent = |name: &str| {
        stats
            .stages
            .iter()
            .find(|s| s.stage == name)
            .map_or(0, |s| s.nanos)
    };
    for stage in ["chunk_key", "file_digest", "disk_write", "disk_read"] {
        assert!(spent(stage) > 0, "no time in {stage}: {stats:?}");
    }
    assert_eq!(spent("chunk_check"), 0, "a chunk came over gRPC: {stats:?}");
}

/// At one copy, the successor of a draining node serves that node's files
/// through its gateway while the hand-off (held to 1 MiB/s) brings them:
/// the gateway's client reads its own node in place, and that read looks
/// behind to the leaving node for what has not arrived.
#[tokio::test]
async fn a_gateway_reads_behind_a_node_handing_its_range_over() {
    let (cluster, http) = gateway_cluster_of(1, &fast_with_slow_handoffs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (names, leaving) = cluster.files_to_hand_over(dir.path()).await.unwrap();
    let successor = cluster.after(&leaving, 1).unwrap();
    let addrs = cluster.addrs();
    let base = &http[addrs.iter().position(|a| *a == successor).unwrap()];
    let dir = dir.path();
    cluster
        .read_while_draining(&[&leaving], &names, |name| async move {
            let out = dir.join(format!("{name}.out"));
            let got = curl_download(&format!("{base}/{name}"), &out).await?;
            if got != std::fs::read(dir.join(&name))? {
                bail!("different bytes");
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// Files written before the chunk-tree checksum carry BLAKE3 of their
/// bytes, or SHA-256 before that: each streams checked by its own.
#[tokio::test]
async fn files_written_before_the_chunk_tree_stream_checked_by_their_own_algorithm() {
    let (cluster, http) = gateway_cluster(FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(BIG_FILE);
    let path = write(dir.path(), "old.bin", &data);
    curl_upload(&path, &http[0]).await.unwrap();
    let c = cluster.client(&cluster.addrs()[0]).unwrap();
    let mut old = c.manifest("old.bin").await.unwrap();
    for algorithm in [Algorithm::Blake3, Algorithm::Sha256] {
        // The file as a client of that time wrote it: a newer version of
        // the same chunks carrying its checksum, on every holder.
        old.version += 1;
        old.checksum = Checksum::of(algorithm, &data);
        cluster.put_manifest_everywhere(&old).await.unwrap();
        let out = dir.path().join("old.out");
        let got = curl_download(&format!("{}/old.bin", http[1]), &out)
            .await
            .unwrap();
        assert!(got == data, "{algorithm:?}: downloaded bytes differ");
        let head = curl_ok(&["-sSf", "-I", &format!("{}/old.bin", http[2])])
            .await
            .unwrap()
            .to_lowercase();
        assert!(
            head.contains(&format!("etag: \"{}\"", old.checksum.to_hex())),
            "{algorithm:?}: {head}"
        );

        // A checksum the bytes do not have: the last chunk is held back
        // and the connection cut, so curl fails short of the whole file.
        old.version += 1;
        old.checksum = Checksum::new(algorithm, [0x5a; 32]);
        cluster.put_manifest_everywhere(&old).await.unwrap();
        let bad = dir.path().join("bad.out");
        let got = curl_cut_short(&format!("{}/old.bin", http[1]), &bad)
            .await
            .unwrap();
        assert!(
            got.len() < BIG_FILE,
            "{algorithm:?}: got all {} bytes",
            got.len()
        );
    }
}

#[tokio::test]
async fn download_is_cut_short_when_a_chunk_is_bad_everywhere() {
    // Repair would heal the copies this test breaks (from a good copy it
    // read just before), so it runs too rarely to interfere here.
    let (cluster, http) = gateway_cluster(&fast_without_repair()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(BIG_FILE);
    let path = write(dir.path(), "doomed.bin", &data);
    curl_upload(&path, &http[0]).await.unwrap();

    // Overwrite every copy of the second chunk with same-length garbage.
    let chunk = 4 * 1024 * 1024;
    let key = chunk_key(&data[chunk..2 * chunk]).to_hex();
    // The upload is acknowledged once every copy is durable; waiting here
    // only guards against a copy still being renamed into place.
    let start = Instant::now();
    let copies = loop {
        let mut copies = Vec::new();
        find_files(cluster.data_root(), &key, &mut copies);
        if copies.len() >= 3 {
            break copies;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "only {} copies of chunk {key} on disk",
            copies.len()
        );
        tokio::time::sleep(POLL).await;
    };
    for copy in &copies {
        std::fs::write(copy, random_bytes(chunk)).unwrap();
    }

    // The first chunk goes out, then the connection is cut: curl fails and
    // has fewer bytes than Content-Length, never a complete-looking file.
    let out = dir.path().join("doomed.out");
    let got = curl_cut_short(&format!("{}/doomed.bin", http[1]), &out)
        .await
        .unwrap();
    assert!(got.len() < BIG_FILE, "got all {} bytes", got.len());
    assert!(
        data.starts_with(&got),
        "the bytes sent before the cut are wrong"
    );
}

#[tokio::test]
#[ignore = "needs python3 with requests (tests/setup.sh); run with --run-ignored all"]
async fn python_requests_client_round_trip() {
    let python = chord_tests::python_tool("python3");
    let python = python.to_string_lossy();
    let found = run(&python, &["-c", "import requests"]).await;
    assert!(
        found.is_ok_and(|out| out.status.success()),
        "python3 with `requests` is not installed (bash tests/setup.sh installs it into target/venv)"
    );
    let (_cluster, http) = gateway_cluster(FAST).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(5 * 1024 * 1024 + 123);
    let path = write(dir.path(), "from python.bin", &data);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway_client.py");
    let out = run(&python, &[script, &http[0], &http[1], &path])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "gateway_client.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[tokio::test]
async fn gateway_limits_answer_413_and_429_and_the_gateway_keeps_serving() {
    let mut args = FAST.to_vec();
    args.extend([
        "--http-max-body-mib",
        "1",
        "--http-max-parts",
        "2",
        "--http-max-uploads",
        "1",
    ]);
    let (_cluster, http) = gateway_cluster(&args).await.unwrap();
    let a = &http[0];
    let dir = tempfile::tempdir().unwrap();
    let upload = format!("{a}/upload");
    let part =
        |name: &str, len: usize| format!("files=@{}", write(dir.path(), name, &random_bytes(len)));

    // A body over the limit: 413, and nothing of it is stored.
    let too_big = part("too-big", 2 * 1024 * 1024);
    let (code, body) = status_and_body(&["-F", &too_big], &upload).await.unwrap();
    assert_eq!(code, 413, "{body}");
    // The same for a PUT, whether its length is declared or it is sent
    // chunked and cut off at the limit.
    let too_big_path = dir.path().join("too-big").to_string_lossy().into_owned();
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec!["-T", too_big_path.as_str()];
        args.extend_from_slice(extra);
        let (code, body) = status_and_body(&args, &format!("{a}/too-big"))
            .await
            .unwrap();
        assert_eq!(code, 413, "{extra:?}: {body}");
        assert!(body.contains("--http-max-body-mib"), "{body}");
    }
    // More files than one request may carry: 413, naming what was stored.
    let (one, two, three) = (part("p1", 1000), part("p2", 1000), part("p3", 1000));
    let (code, body) = status_and_body(&["-F", &one, "-F", &two, "-F", &three], &upload)
        .await
        .unwrap();
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("more than 2 files"), "{body}");
    // One upload at a time: a second while the first trickles in is 429.
    // Quick uploads probe until one is turned away. Until the slow upload
    // holds the gateway's one permit a probe goes through (200); a probe
    // that takes the permit first turns the slow one away instead, and
    // that round starts over.
    let slow = part("slow", 600_000);
    let quick = part("quick", 1000);
    let started = Instant::now();
    loop {
        let slow_upload = {
            let (slow, upload) = (slow.clone(), upload.clone());
            tokio::spawn(async move {
                status_and_body(&["--limit-rate", "100k", "-F", &slow], &upload).await
            })
        };
        let mut refused = None;
        while refused.is_none() && !slow_upload.is_finished() {
            let (code, body) = status_and_body(&["-i", "-F", &quick], &upload)
                .await
                .unwrap();
            match code {
                429 => refused = Some(body),
                200 => tokio::time::sleep(POLL).await,
                _ => panic!("a probe upload: {code} {body}"),
            }
        }
        let (code, slow_body) = slow_upload.await.unwrap().unwrap();
        if let (Some(body), 200) = (&refused, code) {
            assert!(
                body.to_ascii_lowercase().contains("retry-after: 1"),
                "{body}"
            );
            break;
        }
        assert!(
            started.elapsed() < BUSY_WAIT,
            "no upload turned away while another ran within {BUSY_WAIT:?}; the slow one: {code} {slow_body}"
        );
    }
    // Then the gateway takes the next one, and everything stored reads back.
    let (code, body) = status_and_body(&["-F", &quick], &upload).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, listing) = status_and_body(&[], &format!("{a}/")).await.unwrap();
    assert_eq!(code, 200);
    for name in ["p1", "p2", "slow", "quick"] {
        assert!(listing.contains(name), "{name} missing: {listing}");
    }
    for name in ["too-big", "p3"] {
        assert!(!listing.contains(name), "{name} stored: {listing}");
    }

    // A PUT part of whose body has come holds the one permit: uploads
    // either way are turned away meanwhile. Then its client goes away,
    // which stores nothing and gives the permit back.
    {
        use tokio::io::AsyncWriteExt;
        let addr = a.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "PUT /cut-short HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&random_bytes(100_000)).await.unwrap();
        let quick_path = quick.trim_start_matches("files=@");
        let put_url = format!("{a}/quick-put");
        let probes: [(Vec<&str>, &str); 2] = [
            (vec!["-i", "-F", &quick], &upload),
            (vec!["-i", "-T", quick_path], &put_url),
        ];
        for (args, url) in &probes {
            let started = Instant::now();
            loop {
                let (code, body) = status_and_body(args, url).await.unwrap();
                match code {
                    429 => {
                        assert!(
                            body.to_ascii_lowercase().contains("retry-after: 1"),
                            "{body}"
                        );
                        break;
                    }
                    // Until the gateway has read the held request's head.
                    200 if started.elapsed() < BUSY_WAIT => tokio::time::sleep(POLL).await,
                    _ => panic!("{args:?} while a PUT holds the permit: {code} {body}"),
                }
            }
        }
    }
    let started = Instant::now();
    loop {
        let (code, body) = status_and_body(&["-F", &quick], &upload).await.unwrap();
        match code {
            200 => break,
            429 if started.elapsed() < BUSY_WAIT => tokio::time::sleep(POLL).await,
            _ => panic!("an upload after the cut one: {code} {body}"),
        }
    }
    let (_, listing) = status_and_body(&[], &format!("{a}/")).await.unwrap();
    assert!(!listing.contains("cut-short"), "{listing}");
}

/// Pause between two bytes of a slow-loris client: well inside the idle
/// timeout, so only the overall bounds can end it.
const TRICKLE: Duration = Duration::from_millis(300);

/// Sends `head` on a new connection to `addr`, then `trickle` one byte per
/// [`TRICKLE`] while the connection lasts, and reads until the gateway
/// closes it or has answered (headers and a one-line body). Returns how
/// long after `head` that took and what came back.
async fn stall(addr: &str, head: &[u8], trickle: &[u8]) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    tx.write_all(head).await.unwrap();
    let started = Instant::now();
    let trickle = trickle.to_vec();
    let writer = tokio::spawn(async move {
        for b in trickle {
            tokio::time::sleep(TRICKLE).await;
            if tx.write_all(&[b]).await.is_err() {
                break;
            }
        }
        // Holds the connection open, silent, until aborted.
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if text
                .split_once("\r\n\r\n")
                .is_some_and(|(_, body)| body.ends_with('\n'))
            {
                break;
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        read.is_ok(),
        "the gateway neither answered nor closed in 30 s"
    );
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

/// Raw sockets that stall a gateway with a 2 s idle timeout and a 5 s
/// request timeout: headers never finished, headers trickled in, an upload
/// body that never comes, one trickled in, and a download never read. Each
/// is ended within its bound (a close, or 408 with one line), and then the
/// gateway serves an upload and a listing as before.
#[tokio::test]
async fn stalled_requests_are_ended_and_the_gateway_keeps_serving() {
    const IDLE: Duration = Duration::from_secs(2);
    const REQUEST: Duration = Duration::from_secs(5);
    const SLACK: Duration = Duration::from_secs(3);
    let mut args = FAST.to_vec();
    args.extend([
        "--http-idle-timeout-secs",
        "2",
        "--http-request-timeout-secs",
        "5",
    ]);
    let (_cluster, http) = gateway_cluster(&args).await.unwrap();
    let base = &http[0];
    let addr = base.trim_start_matches("http://");
    let within = |took: Duration, bound: Duration, what: &str| {
        assert!(
            took >= bound - Duration::from_millis(300) && took < bound + SLACK,
            "{what}: ended after {took:?}, bound {bound:?}"
        );
    };

    // Headers begun and never finished: closed, no answer.
    let (took, answer) = stall(addr, b"GET / HTTP/1.1\r\nHost: x\r\n", b"").await;
    within(took, IDLE, "unfinished headers");
    assert!(answer.is_empty(), "{answer}");
    // Headers trickled in a byte at a time: closed all the same.
    let (took, answer) = stall(addr, b"GET / HTTP/1.1\r\n", &[b'X'; 100]).await;
    within(took, IDLE, "trickled headers");
    assert!(answer.is_empty(), "{answer}");

    // An upload's headers, then no body: 408 once the body is idle.
    let upload_head = b"POST /upload HTTP/1.1\r\nHost: x\r\n\
        Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n";
    let (took, answer) = stall(addr, upload_head, b"").await;
    within(took, IDLE, "silent body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("sent nothing for 2 s"), "{answer}");
    // The same for a PUT's body.
    let put_head = b"PUT /silent HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    let (took, answer) = stall(addr, put_head, b"").await;
    within(took, IDLE, "silent PUT body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("sent nothing for 2 s"), "{answer}");
    // The body trickled in: never idle, so 408 at the request timeout.
    let part = b"--B\r\nContent-Disposition: form-data; name=\"files\"; \
        filename=\"loris\"\r\n\r\nabcdefghijklmnopqrstuvwxyz";
    let (took, answer) = stall(addr, upload_head, part).await;
    within(took, REQUEST, "trickled body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not done within 5 s"), "{answer}");

    // A download nobody reads: cut once the gateway's writes stop moving,
    // before the client has it all (loopback buffers hold a few MiB).
    let dir = tempfile::tempdir().unwrap();
    let size = 24 * 1024 * 1024;
    let big = write(dir.path(), "unread.bin", &random_bytes(size));
    curl_upload(&big, base).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /unread.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(IDLE + SLACK).await;
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the unread download was never cut");
        assert!(
            got.len() < size,
            "the whole file went out to a client that read nothing for {:?}",
            IDLE + SLACK
        );
    }

    // Still serving.
    let small = write(dir.path(), "after", &random_bytes(5000));
    let (code, body) = status_and_body(
        &["-F", &format!("files=@{small}")],
        &format!("{base}/upload"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, listing) = status_and_body(&[], &format!("{base}/")).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        listing.contains("after") && listing.contains("unread.bin"),
        "{listing}"
    );
}
