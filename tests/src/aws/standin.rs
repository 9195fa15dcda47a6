//! [`Ec2StandIn`]: plays EC2 for the group in moto, which launches nothing.
//!
//! A background task watches the group (every [`WATCH_INTERVAL`]) and, for
//! each new Pending/InService instance: starts a [`FakeImds`] for it, tags
//! the instance `chord:addr=<private ip>:<free port>` in moto, and only then
//! starts one real `chord-node --discovery aws` listening there (so no node
//! ever sees a live instance without its address). When an instance leaves
//! the group, its node gets SIGTERM (what an instance shutdown sends), then
//! SIGKILL after [`STOP_GRACE`]. An instance gets at most one node, ever.
//!
//! moto has no lifecycle Wait state, so [`Ec2StandIn::terminate_by_group`]
//! plays a scale-in that the group starts: it flips the instance's metadata
//! to `Terminated`, waits for the node to drain and exit by itself, and only
//! then terminates the instance in moto.
//!
//! Invariants: every node process is killed when the stand-in drops; every
//! node listens on, and every address is, a loopback address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_ec2::types::Tag;
use chord_console::fleet::locate_node_binary;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::imds::{FakeImds, TERMINATED};
use super::moto::{Moto, REGION};
use crate::free_port;

/// How often the stand-in looks at the group: fast enough that a new
/// instance gets its node within a second, slow enough not to load moto.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(300);

/// How long a node may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// The tag that tells discovery a node's address when it is not
/// `<private ip>:5057`.
pub const ADDR_TAG: &str = "chord:addr";

/// Settings of the nodes the stand-in runs.
#[derive(Clone, Debug)]
pub struct StandInOptions {
    pub replicas: usize,
    /// Extra flags for every node (maintenance intervals, metric period).
    pub extra_args: Vec<String>,
    /// The nodes' `RUST_LOG`.
    pub log_filter: String,
}

impl Default for StandInOptions {
    fn default() -> StandInOptions {
        StandInOptions {
            replicas: 3,
            extra_args: crate::FAST.iter().map(|s| s.to_string()).collect(),
            // The lifecycle handler's debug lines show each heartbeat sent
            // or refused, which the tests look for.
            log_filter: "info,chord_node::discovery=debug".to_string(),
        }
    }
}

/// One instance's node.
#[derive(Debug)]
pub struct InstanceNode {
    pub instance_id: String,
    /// The node's gRPC `host:port` (also the instance's `chord:addr` tag).
    pub addr: String,
    pub log: PathBuf,
    pub imds: FakeImds,
    pub started: Instant,
    child: Child,
}

/// A node whose process has ended.
#[derive(Debug, Clone)]
pub struct ExitedNode {
    pub instance_id: String,
    pub addr: String,
    pub log: PathBuf,
    /// `None` when it had to be killed.
    pub status: Option<ExitStatus>,
    /// Whether the stand-in stopped it (its instance left the group or was
    /// terminated) rather than it exiting on its own.
    pub stopped: bool,
}

#[derive(Debug, Default)]
struct Instances {
    running: BTreeMap<String, InstanceNode>,
    exited: Vec<ExitedNode>,
    /// Every instance that ever got a node.
    seen: BTreeSet<String>,
    /// Instances being terminated by the group: left alone by the watcher.
    terminating: BTreeSet<String>,
    last_error: Option<String>,
}

/// What the watcher needs, shared with the handle.
#[derive(Debug)]
struct Shared {
    group: String,
    config: SdkConfig,
    env: Vec<(String, String)>,
    binary: PathBuf,
    opts: StandInOptions,
    data_root: PathBuf,
    instances: Mutex<Instances>,
}

/// EC2 for one group in moto: one real node per running instance.
#[derive(Debug)]
pub struct Ec2StandIn {
    ctx: Arc<Shared>,
    watcher: tokio::task::JoinHandle<()>,
    // Kept for its Drop: the nodes' data and logs live here.
    _dir: TempDir,
}

impl Drop for Ec2StandIn {
    fn drop(&mut self) {
        // The watcher holds the other reference to the nodes; aborting it
        // lets them drop, which kills every process (kill_on_drop).
        self.watcher.abort();
    }
}

impl Ec2StandIn {
    /// Starts watching `group` in `moto`.
    pub async fn start(moto: &Moto, group: &str, opts: StandInOptions) -> Result<Ec2StandIn> {
        let dir = tempfile::Builder::new().prefix("chord-ec2-").tempdir()?;
        let ctx = Arc::new(Shared {
            group: group.to_string(),
            config: moto.sdk_config().await,
            env: moto.sdk_env(),
            binary: locate_node_binary()?,
            opts,
            data_root: dir.path().to_path_buf(),
            instances: Mutex::new(Instances::default()),
        });
        let watcher = tokio::spawn(watch(ctx.clone()));
        Ok(Ec2StandIn {
            ctx,
            watcher,
            _dir: dir,
        })
    }

    /// Addresses of the running nodes by instance id.
    pub async fn nodes(&self) -> BTreeMap<String, String> {
        self.ctx
            .instances
            .lock()
            .await
            .running
            .values()
            .map(|n| (n.instance_id.clone(), n.addr.clone()))
            .collect()
    }

    /// Addresses of the running nodes, sorted.
    pub async fn addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.nodes().await.into_values().collect();
        addrs.sort();
        addrs
    }

    /// The nodes whose processes ended so far.
    pub async fn exited(&self) -> Vec<ExitedNode> {
        self.ctx.instances.lock().await.exited.clone()
    }

    /// The log of the node of `instance_id` (running or exited).
    pub async fn log_of(&self, instance_id: &str) -> Option<PathBuf> {
        let all = self.ctx.instances.lock().await;
        all.running
            .get(instance_id)
            .map(|n| n.log.clone())
            .or_else(|| {
                all.exited
                    .iter()
                    .find(|e| e.instance_id == instance_id)
                    .map(|e| e.log.clone())
            })
    }

    /// Waits until exactly `n` nodes run and each answers a ping; returns
    /// their addresses. The error says what was last seen.
    pub async fn wait_nodes(&self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let peers = chord_node::peer::PeerPool::new(chord_node::peer::PeerOptions {
            rpc_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            ..chord_node::peer::PeerOptions::default()
        });
        let start = Instant::now();
        loop {
            let addrs = self.addrs().await;
            let mut answering = 0;
            for a in &addrs {
                if peers.ping(a).await.is_ok() {
                    answering += 1;
                }
            }
            if addrs.len() == n && answering == n {
                return Ok(addrs);
            }
            if start.elapsed() >= timeout {
                let last = self.ctx.instances.lock().await.last_error.clone();
                bail!(
                    "want {n} answering nodes, have {} running ({answering} answering) after {timeout:?}; last watcher error: {}",
                    addrs.len(),
                    last.as_deref().unwrap_or("none")
                );
            }
            tokio::time::sleep(crate::POLL).await;
        }
    }

    /// Plays a scale-in the group starts itself: the instance's lifecycle
    /// state turns `Terminated`, the node must drain and exit on its own
    /// within `timeout`, and then the instance is terminated in moto (with
    /// a decrement of the desired capacity). Returns how the node exited.
    pub async fn terminate_by_group(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<ExitedNode> {
        {
            let mut all = self.ctx.instances.lock().await;
            let node = all
                .running
                .get(instance_id)
                .with_context(|| format!("no running node for {instance_id}"))?;
            node.imds.set_lifecycle_state(TERMINATED);
            all.terminating.insert(instance_id.to_string());
        }
        let start = Instant::now();
        let exited = loop {
            {
                let mut all = self.ctx.instances.lock().await;
                let status = match all.running.get_mut(instance_id) {
                    Some(node) => node.child.try_wait()?,
                    None => bail!("the node of {instance_id} vanished"),
                };
                if let Some(status) = status {
                    let node = all.running.remove(instance_id).context("gone")?;
                    let exited = ExitedNode {
                        instance_id: node.instance_id.clone(),
                        addr: node.addr.clone(),
                        log: node.log.clone(),
                        status: Some(status),
                        stopped: false,
                    };
                    all.exited.push(exited.clone());
                    break exited;
                }
            }
            if start.elapsed() >= timeout {
                let log = self.log_of(instance_id).await.unwrap_or_default();
                bail!(
                    "the node of {instance_id} did not drain and exit within {timeout:?}; its log ends: {}",
                    chord_console::fleet::last_line(&log)
                );
            }
            tokio::time::sleep(crate::POLL).await;
        };
        aws_sdk_autoscaling::Client::new(&self.ctx.config)
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .context("TerminateInstanceInAutoScalingGroup")?;
        self.ctx
            .instances
            .lock()
            .await
            .terminating
            .remove(instance_id);
        Ok(exited)
    }
}

/// The watcher: syncs nodes with the group until aborted. Errors (moto
/// hiccups) are kept for the failure message and retried next round.
async fn watch(ctx: Arc<Shared>) {
    loop {
        if let Err(e) = sync_once(&ctx).await {
            ctx.instances.lock().await.last_error = Some(format!("{e:#}"));
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

async fn sync_once(ctx: &Shared) -> Result<()> {
    let (_, members) = super::group::describe(&ctx.config, &ctx.group).await?;
    let live: BTreeSet<String> = members
        .iter()
        .filter(|(_, state)| state.starts_with("Pending") || state.starts_with("InService"))
        .map(|(id, _)| id.clone())
        .collect();

    // Nodes whose instance left the group, or whose process ended.
    let mut leaving = Vec::new();
    {
        let mut all = ctx.instances.lock().await;
        let ids: Vec<String> = all.running.keys().cloned().collect();
        for id in ids {
            if all.terminating.contains(&id) {
                continue;
            }
            let Some(node) = all.running.get_mut(&id) else {
                continue;
            };
            if let Some(status) = node.child.try_wait()? {
                if let Some(node) = all.running.remove(&id) {
                    all.exited.push(ExitedNode {
                        instance_id: id.clone(),
                        addr: node.addr.clone(),
                        log: node.log.clone(),
                        status: Some(status),
                        stopped: false,
                    });
                }
            } else if !live.contains(&id) {
                if let Some(node) = all.running.remove(&id) {
                    leaving.push(node);
                }
            }
        }
    }
    for node in leaving {
        let exited = stop(node).await;
        ctx.instances.lock().await.exited.push(exited);
    }

    let new: Vec<String> = {
        let all = ctx.instances.lock().await;
        live.iter()
            .filter(|id| !all.seen.contains(*id))
            .cloned()
            .collect()
    };
    if new.is_empty() {
        return Ok(());
    }
    let ips = private_ips(&ctx.config, &new).await?;
    // Tag every new instance before starting any node, so instances that
    // boot together all find each other's addresses.
    let mut ready = Vec::new();
    for id in &new {
        let Some(ip) = ips.get(id) else {
            continue; // not running in EC2 yet; next round
        };
        let addr = format!("{ip}:{}", free_port()?);
        aws_sdk_ec2::Client::new(&ctx.config)
            .create_tags()
            .resources(id)
            .tags(Tag::builder().key(ADDR_TAG).value(&addr).build())
            .send()
            .await
            .context("CreateTags")?;
        ready.push((id.clone(), ip.clone(), addr));
    }
    for (id, ip, addr) in ready {
        let node = launch(ctx, &id, &ip, &addr).await?;
        let mut all = ctx.instances.lock().await;
        all.seen.insert(id.clone());
        all.running.insert(id, node);
    }
    Ok(())
}

/// Private IPs of running instances, refusing any that is not loopback.
async fn private_ips(config: &SdkConfig, ids: &[String]) -> Result<BTreeMap<String, String>> {
    let out = aws_sdk_ec2::Client::new(config)
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .context("DescribeInstances")?;
    let mut ips = BTreeMap::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let running = i
            .state()
            .and_then(|s| s.name())
            .is_some_and(|n| n.as_str() == "running");
        let (Some(id), Some(ip)) = (i.instance_id(), i.private_ip_address()) else {
            continue;
        };
        if !running {
            continue;
        }
        let parsed: IpAddr = ip
            .parse()
            .with_context(|| format!("{id}: bad private IP {ip}"))?;
        if !parsed.is_loopback() {
            bail!("{id} has private IP {ip}, not loopback: refusing to run a node for it");
        }
        ips.insert(id.to_string(), ip.to_string());
    }
    Ok(ips)
}

/// Starts the metadata service and the node of one instance.
async fn launch(ctx: &Shared, id: &str, ip: &str, addr: &str) -> Result<InstanceNode> {
    let imds = FakeImds::start(id, ip, REGION).await?;
    let data_dir = ctx.data_root.join(id);
    std::fs::create_dir_all(&data_dir)?;
    let log = data_dir.join("node.log");
    let log_file = std::fs::File::create(&log)?;
    let replicas = ctx.opts.replicas.to_string();
    let successors = ctx.opts.replicas.max(3).to_string();
    let mut cmd = Command::new(&ctx.binary);
    cmd.args(["--discovery", "aws", "--imds-endpoint"])
        .arg(imds.endpoint())
        .arg("--listen")
        .arg(addr)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--replicas", &replicas, "--successors", &successors])
        .args(&ctx.opts.extra_args);
    for key in super::moto::STRAY_AWS_ENV {
        cmd.env_remove(key);
    }
    cmd.envs(ctx.env.iter().map(|(k, v)| (k, v)))
        // Belt and braces: anything in the SDK that reads instance metadata
        // by itself finds this instance's fake, on loopback.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .env("RUST_LOG", &ctx.opts.log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", ctx.binary.display()))?;
    Ok(InstanceNode {
        instance_id: id.to_string(),
        addr: addr.to_string(),
        log,
        imds,
        started: Instant::now(),
        child,
    })
}

/// SIGTERM, a bounded wait, then SIGKILL.
async fn stop(mut node: InstanceNode) -> ExitedNode {
    if let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) {
        // The process may be gone already; that is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(STOP_GRACE, node.child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            let _ = node.child.kill().await;
            None
        }
    };
    ExitedNode {
        instance_id: node.instance_id,
        addr: node.addr,
        log: node.log,
        status,
        stopped: true,
    }
}
