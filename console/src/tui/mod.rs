//! The operator console: a full-screen TUI of a ring (ratatui + crossterm).
//!
//! Split as state, update and render: [`app`] is plain data and its
//! transitions, [`ui`] draws it, [`model`] holds the console's own types.
//! Background tasks own every connection and process: the [`poller`] walks
//! the ring, [`worker`] runs transfers and the capacity actor (which owns
//! the [`local`] fleet, or the Auto Scaling group of [`group`]); they report through one channel of [`app::Update`]s that
//! the one `select!` loop in [`run`] feeds to the app, so a slow node never
//! freezes the screen. Logs go to a file, never to the terminal drawn on;
//! `ratatui::try_init` installs a panic hook that restores the terminal, and
//! the fleet's processes are killed when it is dropped.

pub mod app;
pub mod fixture;
pub mod group;
pub mod local;
pub mod metrics;
pub mod model;
pub mod poller;
pub mod ui;
pub mod worker;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chord_node::now_ms;
use chord_node::peer::{PeerOptions, PeerPool};
use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use app::{key_to_action, Action, App, Command, Origin, Update};
use group::{CloudMetrics, GroupSide};
use local::STOP_GRACE;
use metrics::LocalMetrics;
use poller::PollControl;
use worker::{FleetRequest, TransferRequest};

use crate::aws::capacity::{AsgCapacity, AsgOptions};
use crate::fleet::locate_node_binary;

/// Redraw at least this often, so ages ("refreshed 0.4 s ago") move.
const FRAME_INTERVAL: Duration = Duration::from_millis(250);
/// Updates queued from background tasks before they wait for the screen.
const UPDATE_QUEUE: usize = 256;
/// Fleet requests queued behind a running one (a drain can take a while).
const FLEET_QUEUE: usize = 16;
/// Deadline of one poll call to a node; under [`poller::POLL_DEADLINE`].
const POLL_RPC_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the poller waits for a TCP connection: a loopback or VPC node
/// accepts in well under a millisecond; a dead address should cost little.
const POLL_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause/resume requests queued for the poller; it takes them at once.
const CONTROL_QUEUE: usize = 4;

/// Flags of the TUI (`chord-console` with no subcommand).
#[derive(Clone, Debug, Args)]
pub struct TuiArgs {
    /// Nodes of the local fleet started when no --peer is given.
    #[arg(long = "nodes", default_value_t = 3)]
    pub nodes: usize,
    /// gRPC port of the local fleet's first node; node i listens on base + i.
    #[arg(long = "base-port", default_value_t = crate::fleet::DEFAULT_GRPC_BASE)]
    pub base_port: u16,
    /// HTTP gateway port of the local fleet's first node; node i serves on this + i.
    #[arg(long = "http-base-port", default_value_t = crate::fleet::DEFAULT_HTTP_BASE)]
    pub http_base_port: u16,
    /// Run the local fleet without HTTP gateways.
    #[arg(long = "no-http")]
    pub no_http: bool,
    /// Where the local fleet keeps its data (default: a fresh temp folder,
    /// removed on quit).
    #[arg(long = "data-root")]
    pub data_root: Option<PathBuf>,
    /// Where the console writes its log (default: chord-console.log in the
    /// temp folder).
    #[arg(long = "log-file")]
    pub log_file: Option<PathBuf>,
    /// Show the ring of this Auto Scaling group: `+`/`-` resize the group
    /// (a scale-in drains the node first) and the graphs read CloudWatch.
    #[arg(long = "asg", env = "CHORD_ASG")]
    pub asg: Option<String>,
    /// AWS region of the group (default: the SDK's configured region).
    #[arg(long = "region", requires = "asg")]
    pub region: Option<String>,
    /// gRPC port of nodes on instances without a `chord:addr` tag.
    #[arg(long = "node-port", default_value_t = crate::aws::capacity::DEFAULT_NODE_PORT)]
    pub node_port: u16,
    /// CloudWatch namespace of the nodes' metrics.
    #[arg(long = "metrics-namespace", default_value = crate::aws::DEFAULT_NAMESPACE)]
    pub metrics_namespace: String,
}

impl TuiArgs {
    pub fn log_path(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("chord-console.log"))
    }
}

/// Sends `tracing` output to `path` (appending), never to the terminal.
pub fn log_to_file(path: &std::path::Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(())
}

/// What the event loop hands work to.
struct Workers {
    fleet_tx: Option<mpsc::Sender<FleetRequest>>,
    control_tx: mpsc::Sender<PollControl>,
    update_tx: mpsc::Sender<Update>,
    pool: Arc<PeerPool>,
    transfer_opts: PeerOptions,
    tasks: JoinSet<()>,
}

impl Workers {
    fn dispatch(&mut self, command: Command, app: &mut App) {
        let fleet_request = match command {
            Command::Upload {
                id,
                path,
                name,
                entry,
            } => {
                let request = TransferRequest::Upload {
                    path: PathBuf::from(path),
                    name,
                    entry,
                };
                self.tasks.spawn(worker::transfer(
                    id,
                    request,
                    self.transfer_opts.clone(),
                    self.update_tx.clone(),
                ));
                return;
            }
            Command::Download {
                id,
                name,
                dest,
                entry,
            } => {
                let request = TransferRequest::Download {
                    name,
                    dest: PathBuf::from(dest),
                    entry,
                };
                self.tasks.spawn(worker::transfer(
                    id,
                    request,
                    self.transfer_opts.clone(),
                    self.update_tx.clone(),
                ));
                return;
            }
            Command::SetPaused(p) => {
                let _ = self.control_tx.try_send(PollControl::Pause(p));
                return;
            }
            Command::Leave { addr } if self.fleet_tx.is_none() => {
                self.tasks.spawn(worker::drain_remote(
                    self.pool.clone(),
                    addr,
                    self.update_tx.clone(),
                ));
                return;
            }
            Command::AddNode => FleetRequest::Add,
            Command::RemoveNode => FleetRequest::Remove,
            Command::Leave { addr } => FleetRequest::Leave { addr },
            Command::Kill { addr } => FleetRequest::Kill { addr },
        };
        let Some(fleet_tx) = &self.fleet_tx else {
            app.say(
                "capacity changes need a fleet this console runs (start it without --peer)"
                    .to_string(),
            );
            return;
        };
        if fleet_tx.try_send(fleet_request).is_err() {
            app.say("the fleet is busy with earlier requests; try again");
        }
    }
}

/// Runs the TUI until `q`: attached to `peer`, or on a local fleet it
/// starts (and stops on quit) when `peer` is `None`.
pub async fn run(
    peer: Option<String>,
    rpc_timeout: Duration,
    args: TuiArgs,
    fleet_tls: Option<chord_node::tls::TlsFiles>,
) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("the TUI needs a terminal; scripts use the commands (chord-console --help)");
    }
    let (update_tx, mut update_rx) = mpsc::channel(UPDATE_QUEUE);
    let (seeds_tx, seeds_rx) = watch::channel(Vec::new());
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let mut background = JoinSet::new();
    let mut temp_root = None;
    let mut cloud = None;
    let (origin, fleet_tx) = match (peer, &args.asg) {
        (peer, Some(group)) => {
            let aws = chord_aws::AwsClients::from_env(args.region.clone()).await;
            let cap = AsgCapacity::new(
                aws.clone(),
                group,
                AsgOptions {
                    node_port: args.node_port,
                    ..AsgOptions::default()
                },
            );
            // The group answers before the screen is taken, so a wrong name
            // or missing credentials is one line on the terminal.
            cap.group_state()
                .await
                .with_context(|| format!("cannot read Auto Scaling group {group}"))?;
            if let Some(peer) = peer {
                chord_node::wire::validate_addr(&peer).map_err(|e| e.about("--peer"))?;
                seeds_tx.send_replace(vec![peer]);
            }
            let (fleet_tx, fleet_rx) = mpsc::channel(FLEET_QUEUE);
            background.spawn(worker::capacity_actor(
                GroupSide::new(cap),
                fleet_rx,
                seeds_tx,
                update_tx.clone(),
            ));
            cloud = Some(CloudMetrics::start(
                aws,
                group.clone(),
                args.metrics_namespace.clone(),
            ));
            info!(%group, "attached to an Auto Scaling group");
            let origin = Origin::Group {
                group: group.clone(),
            };
            (origin, Some(fleet_tx))
        }
        (Some(peer), None) => {
            chord_node::wire::validate_addr(&peer).map_err(|e| e.about("--peer"))?;
            seeds_tx.send_replace(vec![peer.clone()]);
            (Origin::Attached { peer }, None)
        }
        (None, None) => {
            if args.nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if args.nodes > local::MAX_LOCAL_NODES {
                bail!("--nodes is at most {}", local::MAX_LOCAL_NODES);
            }
            let layout = local::layout(
                args.base_port,
                (!args.no_http).then_some(args.http_base_port),
            )?;
            local::check_ports_free(&layout, args.nodes)?;
            let data_root = match &args.data_root {
                Some(root) => root.clone(),
                None => {
                    let dir = tempfile::Builder::new()
                        .prefix("chord-console-")
                        .tempdir()
                        .context("cannot create a temp folder for the fleet")?;
                    let path = dir.path().to_path_buf();
                    temp_root = Some(dir);
                    path
                }
            };
            let fleet =
                local::capacity(locate_node_binary()?, data_root.clone(), layout, fleet_tls)?;
            let (fleet_tx, fleet_rx) = mpsc::channel(FLEET_QUEUE);
            background.spawn(worker::fleet_actor(
                fleet,
                args.nodes,
                fleet_rx,
                seeds_tx,
                update_tx.clone(),
            ));
            info!(nodes = args.nodes, data_root = %data_root.display(), "starting a local fleet");
            let origin = Origin::Local {
                data_root: data_root.display().to_string(),
            };
            (origin, Some(fleet_tx))
        }
    };
    let pool = Arc::new(PeerPool::new(PeerOptions {
        rpc_timeout: POLL_RPC_TIMEOUT,
        connect_timeout: POLL_CONNECT_TIMEOUT,
        ..PeerOptions::default()
    }));
    match cloud {
        Some(cloud) => background.spawn(poller::run(
            pool.clone(),
            seeds_rx,
            control_rx,
            update_tx.clone(),
            cloud,
        )),
        None => background.spawn(poller::run(
            pool.clone(),
            seeds_rx,
            control_rx,
            update_tx.clone(),
            LocalMetrics::default(),
        )),
    };
    let can_kill = matches!(origin, Origin::Local { .. });
    let mut workers = Workers {
        fleet_tx,
        control_tx,
        update_tx,
        pool,
        transfer_opts: PeerOptions {
            rpc_timeout,
            ..PeerOptions::default()
        },
        tasks: JoinSet::new(),
    };
    let mut app = App::new(origin, can_kill, now_ms());

    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let result = event_loop(&mut terminal, &mut app, &mut workers, &mut update_rx).await;
    if let Some(fleet_tx) = workers.fleet_tx.take() {
        if matches!(app.origin, Origin::Local { .. }) {
            app.say("stopping the local fleet…");
        }
        let _ = terminal.draw(|f| ui::render(&app, f));
        let (done_tx, done_rx) = oneshot::channel();
        // The actor may be busy (a drain); its queue then holds the request.
        if fleet_tx.send(FleetRequest::Shutdown(done_tx)).await.is_ok()
            && tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), done_rx)
                .await
                .is_err()
        {
            warn!("the fleet did not stop in time; its processes are killed");
        }
    }
    ratatui::restore();
    workers.tasks.abort_all();
    // Dropping the actor drops the fleet, which kills whatever is left.
    background.abort_all();
    while background.join_next().await.is_some() {}
    drop(temp_root);
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    workers: &mut Workers,
    update_rx: &mut mpsc::Receiver<Update>,
) -> Result<()> {
    let mut keys = EventStream::new();
    let mut frame = tokio::time::interval(FRAME_INTERVAL);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = crate::cli::stop_signal();
    tokio::pin!(stop);
    loop {
        terminal.draw(|f| ui::render(app, f))?;
        let commands = tokio::select! {
            event = keys.next() => match event {
                Some(Ok(TermEvent::Key(key))) => match key_to_action(app, key) {
                    Some(action) => app.update(action),
                    None => Vec::new(),
                },
                // Resizes and the rest only need the redraw above.
                Some(Ok(_)) => Vec::new(),
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => app.update(Action::Quit),
            },
            Some(update) = update_rx.recv() => app.apply(update),
            _ = frame.tick() => app.update(Action::Tick { now_ms: now_ms() }),
            _ = &mut stop => app.update(Action::Quit),
        };
        for command in commands {
            workers.dispatch(command, app);
        }
        if app.quit {
            return Ok(());
        }
    }
}
