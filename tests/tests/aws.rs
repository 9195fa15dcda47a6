//! chord-dfs on an Auto Scaling group, emulated: the real AWS SDK against
//! moto on 127.0.0.1, one real `chord-node --discovery aws` per instance
//! (run by the [`Ec2StandIn`]), and the real `chord-console aws …` binary.
//!
//! Each test starts its own moto and group, so none depends on another.
//! The tests that need moto are `#[ignore]`d (so a run without the set-up
//! counts them as skipped); the README's test command runs them with
//! `--run-ignored all`, and then a missing moto is a failure.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, Statistic};
use chord_node::chord::NodeRef;
use chord_node::client::Client;
use chord_node::peer::{PeerOptions, PeerPool};
use chord_tests::aws::moto::STRAY_AWS_ENV;
use chord_tests::aws::{create_group, Ec2StandIn, GroupSpec, Moto, StandInOptions};
use chord_tests::files;
use chord_tests::tmux::{require_tmux, Tmux};
use rand::seq::IndexedRandom;
use serde_json::Value;

/// How long instances that boot together may take to all serve.
const BOOT: Duration = Duration::from_secs(60);
/// How long a ring may take to settle after a membership change.
const SETTLE: Duration = chord_tests::CONVERGE;
/// Upper bound of one console command (a scale moves several nodes).
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(240);
/// Metric publishing period of the test nodes: a few points per minute.
const METRICS_PERIOD_SECS: &str = "2";

/// Flags of every test node: fast ring maintenance, fast AWS loops.
fn node_options() -> StandInOptions {
    let mut opts = StandInOptions::default();
    opts.extra_args.extend(
        [
            "--metrics-interval-secs",
            METRICS_PERIOD_SECS,
            "--lifecycle-poll-secs",
            "1",
            "--rejoin-check-secs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    opts
}

/// moto, a group of `desired` instances, and their nodes.
async fn start_group(
    name: &str,
    min: i32,
    max: i32,
    desired: i32,
) -> (Moto, SdkConfig, Ec2StandIn) {
    let moto = Moto::start().await.unwrap();
    let config = moto.sdk_config().await;
    create_group(&config, &GroupSpec::new(name, min, max, desired))
        .await
        .unwrap();
    let ec2 = Ec2StandIn::start(&moto, name, node_options())
        .await
        .unwrap();
    (moto, config, ec2)
}

/// A group of three serving nodes in one ring, with `files` files uploaded
/// from `dir` under names starting with `name`.
struct LoadedGroup {
    moto: Moto,
    config: SdkConfig,
    ec2: Ec2StandIn,
    addrs: Vec<String>,
    dir: tempfile::TempDir,
    names: Vec<String>,
}

async fn loaded_group(name: &str, min: i32, files: usize) -> LoadedGroup {
    let (moto, config, ec2) = start_group(name, min, 6, 3).await;
    let addrs = ec2.wait_nodes(3, BOOT).await.unwrap();
    wait_one_ring(&addrs, SETTLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = upload_files(dir.path(), &addrs, name, files).await;
    LoadedGroup {
        moto,
        config,
        ec2,
        addrs,
        dir,
        names,
    }
}

fn peers() -> PeerPool {
    PeerPool::new(PeerOptions {
        rpc_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        ..PeerOptions::default()
    })
}

/// `addrs` sorted by node id: the ring as it should be.
fn truth(addrs: &[String]) -> Vec<String> {
    let mut nodes: Vec<NodeRef> = addrs.iter().cloned().map(NodeRef::from_addr).collect();
    nodes.sort_by_key(|n| n.id);
    nodes.into_iter().map(|n| n.addr).collect()
}

/// What is wrong with the ring of `addrs`, or `None` when the walk from
/// every node visits exactly `addrs` in id order.
async fn ring_problem(addrs: &[String]) -> Option<String> {
    let want = truth(addrs);
    for from in addrs {
        let walk = match Client::new(from.clone(), PeerOptions::default()) {
            Ok(c) => c.walk().await,
            Err(e) => return Some(format!("{from}: {e}")),
        };
        let got: Vec<String> = match walk {
            Ok(nodes) => nodes.into_iter().map(|n| n.addr).collect(),
            Err(e) => return Some(format!("walk from {from}: {e}")),
        };
        let Some(start) = want.iter().position(|a| *a == *from) else {
            return Some(format!("{from} is not among {want:?}"));
        };
        let rotated: Vec<String> = want[start..]
            .iter()
            .chain(&want[..start])
            .cloned()
            .collect();
        if got != rotated {
            return Some(format!("walk from {from}: {got:?}, want {rotated:?}"));
        }
    }
    None
}

async fn wait_one_ring(addrs: &[String], timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let Some(problem) = ring_problem(addrs).await else {
            return Ok(start.elapsed());
        };
        if start.elapsed() >= timeout {
            bail!(
                "not one ring of {} after {timeout:?}: {problem}",
                addrs.len()
            );
        }
        tokio::time::sleep(chord_tests::POLL).await;
    }
}

/// Waits until `cond` holds; the error names `what`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match cond().await {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if start.elapsed() >= timeout {
            bail!("{what}: not true after {timeout:?}{last}");
        }
        tokio::time::sleep(chord_tests::POLL).await;
    }
}

/// Uploads `count` random files through random nodes; returns their names.
async fn upload_files(dir: &Path, addrs: &[String], prefix: &str, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i:02}");
        // Several chunks each, of different sizes.
        let path = files::random_file(dir, &name, 50_000 + i * 37_000).unwrap();
        let via = addrs.choose(&mut rand::rng()).unwrap();
        files::client(via)
            .unwrap()
            .upload_file(&path, &name, &files::small_chunks(), &files::no_progress)
            .await
            .with_context(|| format!("uploading {name} via {via}"))
            .unwrap();
        names.push(name);
    }
    names
}

/// Downloads every file through random nodes and compares the bytes.
async fn files_intact(dir: &Path, addrs: &[String], names: &[String]) -> Result<()> {
    for name in names {
        let via = addrs.choose(&mut rand::rng()).context("no nodes")?;
        files::read_back(&files::client(via)?, dir, name)
            .await
            .with_context(|| format!("via {via}"))?;
    }
    Ok(())
}

fn console_binary() -> PathBuf {
    chord_console::fleet::locate_node_binary()
        .unwrap()
        .with_file_name("chord-console")
}

/// Runs `chord-console aws <args> --json` with the SDK pointed at moto.
async fn console_aws(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(console_binary());
    moto.apply_env(&mut cmd);
    cmd.arg("aws").args(args).arg("--json");
    chord_tests::output_within(&mut cmd, CONSOLE_TIMEOUT).await
}

async fn console_json(moto: &Moto, args: &[&str]) -> Value {
    let out = console_aws(moto, args).await;
    assert!(
        out.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "aws {args:?}: not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Chunks a node stores.
async fn chunks_on(addr: &str) -> Result<u64> {
    Ok(peers().get_stats(addr).await?.chunks)
}

/// The status line of a plain GET without a token (raw HTTP/1.1).
async fn status_without_token(endpoint: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_fake_metadata_service_speaks_imdsv2_to_the_sdk() {
    let imds = chord_tests::aws::FakeImds::start("i-0abc", "127.0.0.9", "us-east-1")
        .await
        .unwrap();
    let client = chord_aws::Imds::new(Some(&imds.endpoint())).unwrap();
    let me = client.identity().await.unwrap();
    assert_eq!(
        (
            me.instance_id.as_str(),
            me.private_ip.as_str(),
            me.region.as_str()
        ),
        ("i-0abc", "127.0.0.9", "us-east-1")
    );
    let state = client.target_state().await.unwrap().unwrap();
    assert_eq!(state, chord_aws::LifecycleState::InService);
    imds.set_lifecycle_state(chord_tests::aws::imds::TERMINATED);
    let state = client.target_state().await.unwrap().unwrap();
    assert_eq!(state, chord_aws::LifecycleState::Terminated);
    assert_eq!(imds.lifecycle_reads(), 2);
    // Without the session token, metadata is refused, as on EC2.
    let refused = status_without_token(&imds.endpoint(), "/latest/meta-data/instance-id").await;
    assert!(refused.contains("401"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (tests/setup.sh); run with --run-ignored all"]
async fn instances_that_boot_together_form_one_ring() {
    let (_moto, _config, ec2) = start_group("boot-together", 1, 6, 3).await;
    let addrs = ec2.wait_nodes(3, BOOT).await.unwrap();
    let took = wait_one_ring(&addrs, SETTLE).await.unwrap();
    eprintln!("3 instances booted together: one ring {took:?} after all answered");
    // Every instance carries the address its node serves on.
    for (id, addr) in ec2.nodes().await {
        assert!(addrs.contains(&addr), "{id} at {addr}");
    }
    // No node gave up or crashed while they raced to bootstrap.
    assert!(ec2.exited().await.is_empty(), "{:?}", ec2.exited().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (tests/setup.sh); run with --run-ignored all"]
async fn console_scales_out_and_in_without_losing_files() {
    let LoadedGroup {
        moto,
        config: _,
        ec2,
        addrs,
        dir,
        names,
    } = loaded_group("scale", 2, 12).await;
    let before: BTreeSet<String> = addrs.iter().cloned().collect();

    // Out: 3 → 5, one node at a time, each in the ring before the next.
    let out = console_json(&moto, &["scale", "--asg", "scale", "--desired", "5"]).await;
    let steps = out["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{out}");
    for s in steps {
        assert_eq!(s["action"], "add", "{out}");
    }
    assert_eq!(steps[0]["ring_size"], 4, "{out}");
    assert_eq!(steps[1]["ring_size"], 5, "{out}");
    let addrs = ec2.wait_nodes(5, BOOT).await.unwrap();
    wait_one_ring(&addrs, SETTLE).await.unwrap();
    // The new nodes take over their share of the keys.
    let new: Vec<String> = addrs
        .iter()
        .filter(|a| !before.contains(*a))
        .cloned()
        .collect();
    assert_eq!(new.len(), 2);
    for addr in &new {
        let took = wait_until(&format!("{addr} holds keys"), SETTLE, || async {
            Ok(chunks_on(addr).await? > 0)
        })
        .await
        .unwrap();
        eprintln!("new node {addr} holds keys {took:?} after joining");
    }
    files_intact(dir.path(), &addrs, &names).await.unwrap();

    // In: 5 → 2, each node drained (hand-off confirmed) before terminate.
    let out = console_json(&moto, &["scale", "--asg", "scale", "--desired", "2"]).await;
    let steps = out["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{out}");
    let mut moved = 0;
    for s in steps {
        assert_eq!(s["action"], "remove", "{out}");
        assert_eq!(s["complete"], true, "{out}");
        assert_eq!(s["unconfirmed"], 0, "{out}");
        moved += s["keys"].as_u64().unwrap();
        eprintln!(
            "removed {}: {} keys, {} bytes handed off",
            s["instance"], s["keys"], s["bytes"]
        );
    }
    assert!(moved > 0, "three drains moved no key at all: {out}");
    let addrs = ec2.wait_nodes(2, SETTLE).await.unwrap();
    wait_one_ring(&addrs, SETTLE).await.unwrap();
    // The removed nodes were stopped by their instances going, not crashed.
    // The stand-in takes a node off the running ones before it stops it,
    // so an exit can come a moment after the count of running nodes drops.
    wait_until("the three removed nodes exit", SETTLE, || async {
        Ok(ec2.exited().await.len() >= 3)
    })
    .await
    .unwrap();
    let exited = ec2.exited().await;
    assert_eq!(exited.len(), 3, "{exited:?}");
    for e in &exited {
        assert!(e.stopped, "{e:?} exited before its instance was terminated");
        // Drained, a node exits promptly on the instance's SIGTERM.
        assert!(e.status.is_some(), "{e:?} had to be killed");
    }
    files_intact(dir.path(), &addrs, &names).await.unwrap();

    // Below min is refused with a reason, and nothing is removed.
    let refused = console_aws(&moto, &["scale", "--asg", "scale", "--desired", "1"]).await;
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("outside the group's sizes"), "{why}");
    assert_eq!(ec2.addrs().await.len(), 2);
}

/// One CloudWatch series read back through GetMetricData.
async fn metric_data(config: &SdkConfig, name: &str, dims: &[(&str, &str)]) -> Result<Vec<f64>> {
    let metric = Metric::builder()
        .namespace("ChordDFS")
        .metric_name(name)
        .set_dimensions(Some(
            dims.iter()
                .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                .collect(),
        ))
        .build();
    let now = SystemTime::now();
    let out = aws_sdk_cloudwatch::Client::new(config)
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("m")
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat("Average")
                        .build(),
                )
                .build(),
        )
        .start_time(DateTime::from(now - Duration::from_secs(600)))
        .end_time(DateTime::from(now + Duration::from_secs(60)))
        .send()
        .await?;
    Ok(out
        .metric_data_results()
        .iter()
        .flat_map(|r| r.values().to_vec())
        .collect())
}

/// The maximum of one series through GetMetricStatistics.
async fn metric_max(config: &SdkConfig, name: &str, dims: &[(&str, &str)]) -> Result<Option<f64>> {
    let now = SystemTime::now();
    let out = aws_sdk_cloudwatch::Client::new(config)
        .get_metric_statistics()
        .namespace("ChordDFS")
        .metric_name(name)
        .set_dimensions(Some(
            dims.iter()
                .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                .collect(),
        ))
        .start_time(DateTime::from(now - Duration::from_secs(600)))
        .end_time(DateTime::from(now + Duration::from_secs(60)))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await?;
    Ok(out
        .datapoints()
        .iter()
        .filter_map(|d| d.maximum())
        .reduce(f64::max))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (tests/setup.sh); run with --run-ignored all"]
async fn nodes_publish_metrics_per_group_and_per_instance() {
    let (moto, config, ec2) = start_group("metrics", 1, 6, 3).await;
    let addrs = ec2.wait_nodes(3, BOOT).await.unwrap();
    wait_one_ring(&addrs, SETTLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = upload_files(dir.path(), &addrs, "metric", 6).await;
    files_intact(dir.path(), &addrs, &names).await.unwrap();

    // Group level: the requests just made show up in NodeRequestRate.
    let group = [("AutoScalingGroupName", "metrics")];
    wait_until("NodeRequestRate > 0 for the group", SETTLE, || async {
        Ok(metric_data(&config, "NodeRequestRate", &group)
            .await?
            .iter()
            .any(|v| *v > 0.0))
    })
    .await
    .unwrap();
    wait_until("NodeStoredBytes > 0 for the group", SETTLE, || async {
        Ok(metric_data(&config, "NodeStoredBytes", &group)
            .await?
            .iter()
            .any(|v| *v > 0.0))
    })
    .await
    .unwrap();

    // Per instance: each node's stored bytes and key count, under its own
    // instance id, match what the node itself reports.
    for (id, addr) in ec2.nodes().await {
        let dims = [
            ("AutoScalingGroupName", "metrics"),
            ("InstanceId", id.as_str()),
        ];
        let stats = peers().get_stats(&addr).await.unwrap();
        assert!(stats.chunks > 0, "{addr} holds nothing");
        wait_until(&format!("{id}: InstanceStoredBytes"), SETTLE, || async {
            Ok(
                metric_max(&config, "InstanceStoredBytes", &dims).await?
                    == Some(stats.bytes as f64),
            )
        })
        .await
        .unwrap();
        wait_until(&format!("{id}: InstanceKeyCount"), SETTLE, || async {
            Ok(metric_max(&config, "InstanceKeyCount", &dims)
                .await?
                .is_some_and(|v| v >= stats.chunks as f64))
        })
        .await
        .unwrap();
        let rate = metric_data(&config, "InstanceRequestRate", &dims)
            .await
            .unwrap();
        assert!(!rate.is_empty(), "{id}: no InstanceRequestRate");
    }

    // The console shows the same: members with addresses, and the graphs.
    let status = console_json(&moto, &["status", "--asg", "metrics"]).await;
    assert_eq!(status["desired"], 3, "{status}");
    let instances = status["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{status}");
    for i in instances {
        assert_eq!(i["lifecycle_state"], "InService", "{status}");
        assert_eq!(i["node"]["answers"], true, "{status}");
        assert!(addrs.iter().any(|a| *a == i["addr"]), "{status}");
    }
    let metrics = status["metrics"].as_array().unwrap();
    let request_rate = metrics
        .iter()
        .find(|m| m["metric"] == "NodeRequestRate" && m["dimensions"].get("InstanceId").is_none())
        .unwrap();
    assert!(
        !request_rate["values"].as_array().unwrap().is_empty(),
        "{status}"
    );
    // `watch --once` prints the same document once.
    let watched = console_json(&moto, &["watch", "--asg", "metrics", "--once"]).await;
    assert_eq!(watched["group"], "metrics", "{watched}");
    assert_eq!(
        watched["instances"].as_array().unwrap().len(),
        3,
        "{watched}"
    );
    // One graph per instance, with the points read back above.
    for id in ec2.nodes().await.keys() {
        let graph = metrics
            .iter()
            .find(|m| {
                m["metric"] == "InstanceStoredBytes" && m["dimensions"]["InstanceId"] == id.as_str()
            })
            .unwrap_or_else(|| panic!("no InstanceStoredBytes graph for {id}: {status}"));
        assert!(
            !graph["values"].as_array().unwrap().is_empty(),
            "{id}'s InstanceStoredBytes graph is empty: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (tests/setup.sh); run with --run-ignored all"]
async fn a_node_the_group_terminates_drains_first() {
    // moto must outlive the test: bound, not dropped with the pattern.
    let LoadedGroup {
        moto: _moto,
        config,
        ec2,
        addrs,
        dir,
        names,
    } = loaded_group("hook", 1, 10).await;

    // The group starts terminating the instance holding the most keys.
    let mut most = (String::new(), String::new(), 0);
    for (id, addr) in ec2.nodes().await {
        let n = chunks_on(&addr).await.unwrap();
        if n >= most.2 {
            most = (id, addr, n);
        }
    }
    let (victim, victim_addr, held) = most;
    assert!(held > 0);
    let started = Instant::now();
    let exited = ec2
        .terminate_by_group(&victim, Duration::from_secs(120))
        .await
        .unwrap();
    eprintln!(
        "{victim} held {held} chunks; drained and exited {:?} after its state turned Terminated",
        started.elapsed()
    );
    let log = std::fs::read_to_string(&exited.log).unwrap();
    assert!(
        exited.status.is_some_and(|s| s.success()),
        "{victim} exited with {:?}; log:\n{log}",
        exited.status
    );
    // moto answers 500 to the lifecycle calls: the node says so in one line
    // and that the drain itself completed.
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lifecycle action not completed"))
        .collect();
    assert_eq!(complaints.len(), 1, "log:\n{log}");
    assert!(complaints[0].contains("500"), "{}", complaints[0]);
    eprintln!("the node said: {}", complaints[0]);
    assert!(
        log.lines().any(|l| l.to_lowercase().contains("heartbeat")),
        "no lifecycle heartbeat in the log:\n{log}"
    );

    // The group shrank by one and the rest of the ring has every file.
    let (desired, members) = chord_tests::aws::group::describe(&config, "hook")
        .await
        .unwrap();
    assert_eq!(desired, 2);
    assert!(!members.iter().any(|(id, _)| *id == victim));
    let rest: Vec<String> = addrs
        .iter()
        .filter(|a| **a != victim_addr)
        .cloned()
        .collect();
    let rest = {
        let now = ec2.wait_nodes(2, SETTLE).await.unwrap();
        assert_eq!(now, rest);
        now
    };
    wait_one_ring(&rest, SETTLE).await.unwrap();
    files_intact(dir.path(), &rest, &names).await.unwrap();
}

/// The TUI on the group (`chord-console --asg NAME`) in a real terminal:
/// `+` raises the group's desired capacity and the new node shows up, `-`
/// drains a node before terminating it, `x` is refused (an instance is not
/// a local process), and every file survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto and tmux (tests/setup.sh); run with --run-ignored all"]
async fn the_tui_resizes_the_group_and_drains_before_terminating() {
    require_tmux();
    let LoadedGroup {
        moto,
        config: _,
        ec2,
        addrs,
        dir,
        names,
    } = loaded_group("tui", 2, 8).await;

    let console_log = dir.path().join("console.log");
    let command = format!(
        "{} --asg tui --log-file {}",
        console_binary().display(),
        console_log.display()
    );
    let tmux = Tmux::start_with_env(160, 48, &command, &moto.sdk_env(), STRAY_AWS_ENV);
    // The screen waits block; the nodes' stand-in runs on the other worker.
    // A wait that fails shows the end of the console's log too.
    let log_tail = || {
        let log = std::fs::read_to_string(&console_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "the console's log, last lines:\n{}",
            lines[from..].join("\n")
        )
    };
    let on_screen = |what: &str, pred: &dyn Fn(&str) -> bool| {
        tokio::task::block_in_place(|| tmux.wait_for_or_show(what, pred, log_tail))
    };
    on_screen("the group's three nodes", &|s| {
        s.contains("Auto Scaling group tui")
            && s.contains("desired 3")
            && addrs.iter().all(|a| s.contains(a.as_str()))
    });

    tmux.press("+");
    on_screen("desired 4", &|s| s.contains("desired 4"));
    let four = ec2.wait_nodes(4, BOOT).await.unwrap();
    wait_one_ring(&four, SETTLE).await.unwrap();
    on_screen("the fourth node", &|s| {
        four.iter().all(|a| s.contains(a.as_str()))
    });

    tmux.press("x");
    on_screen("x refused", &|s| s.contains("x kills only"));

    tmux.press("-");
    on_screen("the question", &|s| s.contains("y confirms"));
    tmux.press("y");
    let shown = on_screen("the drain's report", &|s| {
        s.contains("drained") && s.contains("and removed")
    });
    eprintln!("the TUI after the drain:\n{shown}");
    let three = ec2.wait_nodes(3, SETTLE).await.unwrap();
    wait_one_ring(&three, SETTLE).await.unwrap();
    on_screen("desired 3 again", &|s| s.contains("desired 3"));
    files_intact(dir.path(), &three, &names).await.unwrap();

    tmux.press("q");
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tmux.console_running() {
            assert!(Instant::now() < deadline, "the console did not quit");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Quitting leaves the group as it is: the nodes are the group's.
    assert_eq!(ec2.wait_nodes(3, SETTLE).await.unwrap(), three);
}
