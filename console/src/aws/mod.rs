//! `chord-console aws …`: the ring on an Auto Scaling group.
//!
//! - `aws status --asg NAME`: sizes, instances with lifecycle state and node
//!   address, recent scaling activities, CloudWatch metric sparklines.
//! - `aws scale --asg NAME --desired N`: one node at a time; a scale-in is
//!   drain-then-terminate ([`capacity::AsgCapacity`]).
//! - `aws watch --asg NAME`: `status` every few seconds until Ctrl-C.
//!
//! Endpoint, region and credentials come from the SDK's usual sources (the
//! environment, `~/.aws`, an instance role); `AWS_ENDPOINT_URL` sends every
//! call to another endpoint (the tests' moto server), so there is no
//! endpoint flag. `--region` overrides the configured region.

pub mod capacity;
pub mod scale;
pub mod status;

use std::time::Duration;

use anyhow::Result;
use chord_aws::AwsClients;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::Cli;
use capacity::{AsgCapacity, AsgOptions};

/// The namespace chord-node publishes its metrics under by default.
pub const DEFAULT_NAMESPACE: &str = "ChordDFS";

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Show the group: sizes, instances, scaling activities, metrics.
    Status(AwsStatusArgs),
    /// Move the group to a desired size, one node at a time (scale-in drains
    /// each node before terminating it).
    Scale(AwsScaleArgs),
    /// Show the group's status every few seconds until Ctrl-C.
    Watch(AwsWatchArgs),
}

/// What every `aws` command needs.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The Auto Scaling group the ring runs on.
    #[arg(long, env = "CHORD_ASG")]
    pub asg: String,
    /// AWS region (default: the SDK's configured region).
    #[arg(long)]
    pub region: Option<String>,
    /// gRPC port of nodes on instances without a `chord:addr` tag.
    #[arg(long, default_value_t = capacity::DEFAULT_NODE_PORT)]
    pub node_port: u16,
    /// CloudWatch namespace of the nodes' metrics.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub metrics_namespace: String,
}

#[derive(Debug, Args)]
pub struct AwsStatusArgs {
    #[command(flatten)]
    pub group: GroupArgs,
}

#[derive(Debug, Args)]
pub struct AwsScaleArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// The size to reach.
    #[arg(long)]
    pub desired: usize,
    /// How long one new node may take to boot and join the ring.
    #[arg(long, default_value_t = 300)]
    pub join_timeout_secs: u64,
    /// How long one node's drain may take before the scale-in stops (the
    /// node is then kept).
    #[arg(long, default_value_t = capacity::DRAIN_DEADLINE.as_secs())]
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct AwsWatchArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 5)]
    pub interval_secs: u64,
    /// Print one status and exit.
    #[arg(long)]
    pub once: bool,
}

async fn connect(args: &GroupArgs, opts: AsgOptions) -> AsgCapacity {
    let aws = AwsClients::from_env(args.region.clone()).await;
    AsgCapacity::new(
        aws,
        &args.asg,
        AsgOptions {
            node_port: args.node_port,
            ..opts
        },
    )
}

/// Runs one `aws` command.
pub async fn run(cli: &Cli, cmd: &AwsCommand) -> Result<()> {
    match cmd {
        AwsCommand::Status(args) => {
            let cap = connect(&args.group, AsgOptions::default()).await;
            print_status(&cap, &args.group.metrics_namespace, cli.json, true).await
        }
        AwsCommand::Scale(args) => {
            let opts = AsgOptions {
                drain_deadline: Duration::from_secs(args.drain_timeout_secs),
                ..AsgOptions::default()
            };
            let mut cap = connect(&args.group, opts).await;
            scale::run(
                &mut cap,
                args.desired,
                Duration::from_secs(args.join_timeout_secs),
                cli.json,
            )
            .await
        }
        AwsCommand::Watch(args) => {
            let cap = connect(&args.group, AsgOptions::default()).await;
            watch(&cap, args, cli.json).await
        }
    }
}

/// One status; `pretty` JSON for `status`, one line per document for
/// `watch` (a stream of JSON lines).
async fn print_status(cap: &AsgCapacity, namespace: &str, json: bool, pretty: bool) -> Result<()> {
    let s = status::gather(cap, namespace).await?;
    if json {
        let doc: Value = status::status_json(&s);
        if pretty {
            outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        } else {
            outln!("{}", serde_json::to_string(&doc)?)?;
        }
    } else {
        out!("{}", status::render_text(&s))?;
    }
    Ok(())
}

async fn watch(cap: &AsgCapacity, args: &AwsWatchArgs, json: bool) -> Result<()> {
    let interval = Duration::from_secs(args.interval_secs.max(1));
    loop {
        if !json && !args.once {
            outln!("--- {}", refresh_marker())?;
        }
        // A failed refresh is shown and retried; watching goes on.
        if let Err(e) = print_status(cap, &args.group.metrics_namespace, json, args.once).await {
            if args.once {
                return Err(e);
            }
            eprintln!("chord-console: {e:#}");
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            r = crate::cli::stop_signal() => return r,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Seconds since the epoch, as a refresh marker (no date crate needed).
fn refresh_marker() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("t={secs}")
}
