//! The snapshot poller: every [`POLL_INTERVAL`] it asks every node it knows
//! for its info, finger table, store counters and new events, all nodes in
//! parallel under one overall deadline ([`POLL_DEADLINE`]), and sends the
//! app one [`RingSnapshot`] in the console's own types.
//!
//! Invariants: a node that misses the deadline is shown unreachable and
//! never delays the others; nodes are discovered from the successor lists,
//! predecessors and fingers of the nodes that answered, so the poller needs
//! only one seed; an unreachable node is dropped once no answering node
//! has it as successor or predecessor (the ring has routed around it).
//! Rates are computed here from counter deltas between two answers of the
//! same node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chord_node::chord::{Id, NodeRef};
use chord_node::client::FileEntry;
use chord_node::events::{Event, EventKind};
use chord_node::peer::{FingerRow, NodeState as PeerState, PeerInfo, PeerPool};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use super::app::Update;
use super::metrics::MetricsSource;
use super::model::{
    finger_runs, Counters, EventSource, EventView, FileView, NodeState, NodeView, Rates,
    RingSnapshot, Severity,
};
use super::ui::MAX_RIM_TICKS;

/// Time between two polls: a screen that follows the ring by the second.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// One overall deadline for a whole poll. Past it, a node that has not
/// answered is shown unreachable; a loopback or VPC node answers in ms.
pub const POLL_DEADLINE: Duration = Duration::from_millis(1500);
/// Sample key positions for the rim every this many polls: listing keys
/// costs a node a scan of its store, which need not happen every second.
const KEYS_EVERY: u64 = 5;
/// Most keys asked of one node per sample.
const KEYS_PER_NODE: usize = 2048;

/// What the event loop tells the poller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollControl {
    Pause(bool),
}

/// What one node answered in one poll.
struct Answer {
    info: PeerInfo,
    fingers: Vec<FingerRow>,
    counters: Option<Counters>,
    events: Vec<Event>,
    next_cursor: Option<u64>,
    keys: Vec<Id>,
}

/// What the poller remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    /// Every node seen, with its last view.
    known: BTreeMap<String, NodeView>,
    /// Last counters per node and when they were read.
    counters: HashMap<String, (Counters, Instant)>,
    /// Event cursor per node.
    cursors: HashMap<String, u64>,
    rounds: u64,
}

fn counters_of(stats: &chord_proto::pb::StoreStats) -> Counters {
    Counters {
        chunks: stats.chunks,
        manifests: stats.manifests,
        bytes: stats.bytes,
        requests: stats.requests,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        repair_bytes: stats.repair_bytes,
    }
}

fn state_of(s: PeerState) -> NodeState {
    match s {
        PeerState::Joining => NodeState::Joining,
        PeerState::Serving => NodeState::Serving,
        PeerState::Leaving => NodeState::Leaving,
    }
}

/// A node's log event as a line of the events pane.
pub fn event_view(addr: &str, e: &Event) -> EventView {
    let severity = match e.kind {
        EventKind::PeerFailed | EventKind::NeighbourLeft => Severity::Warn,
        EventKind::Error => Severity::Error,
        EventKind::Joined | EventKind::Created | EventKind::NeighbourJoined => Severity::Good,
        EventKind::HandoffDone if e.detail.contains("unconfirmed") => Severity::Warn,
        EventKind::Synced if e.detail.contains("set aside") => Severity::Warn,
        _ => Severity::Info,
    };
    let mut text = e.detail.clone();
    if let Some(peer) = &e.peer {
        if !text.contains(peer.as_str()) {
            text = if text.is_empty() {
                peer.clone()
            } else {
                format!("{peer}: {text}")
            };
        }
    }
    // What moved leads, so a narrow pane still shows it.
    if e.keys > 0 || e.bytes > 0 {
        text = format!(
            "[{} keys, {}] {text}",
            e.keys,
            super::model::human_bytes(e.bytes as f64)
        );
    }
    EventView {
        at_ms: e.at_ms,
        source: EventSource::Node(addr.to_string()),
        kind: e.kind.as_str().to_string(),
        text,
        severity,
    }
}

fn file_view(f: &FileEntry) -> FileView {
    FileView {
        name: f.name.clone(),
        size: f.size,
        version: f.version,
        chunks: f.chunks,
        modified_ms: f.modified_ms,
    }
}

/// Asks one node everything one poll needs. The info comes first (its
/// predecessor bounds the key sample); the rest goes out together.
async fn ask(
    pool: &PeerPool,
    addr: String,
    cursor: Option<u64>,
    sample_keys: bool,
) -> Result<Answer, String> {
    let info = match pool.get_info(&addr).await {
        Ok(info) => info,
        Err(e) => {
            debug!(peer = %addr, error = %e, "no info");
            return Err(e.to_string());
        }
    };
    let keys = async {
        if !sample_keys {
            return Vec::new();
        }
        let Some(pred) = &info.predecessor else {
            return Vec::new();
        };
        // One page of a sample's size: the node lists no more than that.
        let limit = u32::try_from(KEYS_PER_NODE).unwrap_or(u32::MAX);
        match pool
            .list_keys_page(&addr, &pred.id, &info.node.id, limit)
            .await
        {
            Ok(page) => {
                let mut keys = page.chunks;
                keys.extend(page.manifests.into_iter().map(|(k, _)| k));
                keys.truncate(KEYS_PER_NODE);
                keys
            }
            Err(_) => Vec::new(),
        }
    };
    // A new node's log is read from its start; its whole history fits in one read.
    let since = cursor.unwrap_or(0);
    let (fingers, stats, events, keys) = tokio::join!(
        pool.get_finger_table(&addr),
        pool.get_stats(&addr),
        pool.events(&addr, since),
        keys
    );
    let (events, next_cursor) = match events {
        Ok(batch) => (batch.events, Some(batch.next)),
        Err(_) => (Vec::new(), cursor),
    };
    Ok(Answer {
        info,
        fingers: fingers.unwrap_or_default(),
        counters: stats.ok().as_ref().map(counters_of),
        events,
        next_cursor,
        keys,
    })
}

/// Asks every address it learns of, in parallel, until `deadline`: the
/// known nodes and seeds at once, and each node an answer names (successor,
/// predecessor, finger) as soon as that answer arrives, so one silent node
/// never holds back the discovery of the rest. Whatever has not answered at
/// the deadline is reported as such. Returns the answers and the ids of
/// every node named in them.
async fn ask_everyone(
    pool: &PeerPool,
    first: Vec<String>,
    cursors: &HashMap<String, u64>,
    sample_keys: bool,
    deadline: Instant,
) -> (Vec<(String, Result<Answer, String>)>, HashMap<String, Id>) {
    let ask_one = |addr: String| {
        let cursor = cursors.get(&addr).copied();
        async move {
            let answer = ask(pool, addr.clone(), cursor, sample_keys).await;
            (addr, answer)
        }
    };
    let mut asked: HashSet<String> = first.iter().cloned().collect();
    let mut pending: FuturesUnordered<_> = first.into_iter().map(ask_one).collect();
    let mut answers = Vec::new();
    let mut refs: HashMap<String, Id> = HashMap::new();
    loop {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some((addr, answer))) => {
                for r in answer.iter().flat_map(referenced) {
                    if asked.insert(r.addr.clone()) {
                        pending.push(ask_one(r.addr.clone()));
                    }
                    refs.entry(r.addr).or_insert(r.id);
                }
                answers.push((addr, answer));
            }
            Ok(None) => break,
            Err(_) => {
                let answered: HashSet<&String> = answers.iter().map(|(a, _)| a).collect();
                let late: Vec<String> = asked
                    .iter()
                    .filter(|a| !answered.contains(a))
                    .cloned()
                    .collect();
                answers.extend(
                    late.into_iter()
                        .map(|a| (a, Err("no answer within the poll deadline".to_string()))),
                );
                break;
            }
        }
    }
    (answers, refs)
}

/// Addresses (with ids) a node's answer names.
fn referenced(answer: &Answer) -> Vec<NodeRef> {
    let mut out: Vec<NodeRef> = answer.info.successors.clone();
    out.extend(answer.info.predecessor.clone());
    out.extend(answer.fingers.iter().filter_map(|f| f.node.clone()));
    out
}

/// One poll: fan out, discover, fan out to the newcomers, build the
/// snapshot; returns it with the nodes' new events. Takes at most
/// [`POLL_DEADLINE`] (plus the listing's own bound, the same deadline).
pub async fn poll_once(
    pool: &PeerPool,
    seeds: &[String],
    memory: &mut Memory,
    files_from: Option<String>,
    now_ms: u64,
) -> (RingSnapshot, Vec<EventView>) {
    let started = Instant::now();
    let deadline = started + POLL_DEADLINE;
    memory.rounds += 1;
    let sample_keys = memory.rounds % KEYS_EVERY == 1;
    let mut first: Vec<String> = memory.known.keys().cloned().collect();
    first.extend(
        seeds
            .iter()
            .filter(|s| !memory.known.contains_key(*s))
            .cloned(),
    );
    let entry = files_from.or_else(|| seeds.first().cloned());
    let files = async {
        let entry = entry?;
        tokio::time::timeout_at(deadline, pool.list_files(&entry, true))
            .await
            .ok()?
            .ok()
    };
    let everyone = ask_everyone(pool, first, &memory.cursors, sample_keys, deadline);
    let ((answers, refs), files) = tokio::join!(everyone, files);
    // Nodes the ring itself still links: successor lists and predecessors.
    // Fingers do not count; they catch up with a death last.
    let in_ring: HashSet<String> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .flat_map(|a| a.info.successors.iter().chain(a.info.predecessor.iter()))
        .map(|n| n.addr.clone())
        .collect();
    let mut events = Vec::new();
    let mut ticks = Vec::new();
    let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
    let mut raw_fingers: HashMap<String, Vec<FingerRow>> = HashMap::new();
    let mut seed_errors = Vec::new();
    for (addr, answer) in answers {
        match answer {
            Ok(a) => {
                let counters = a.counters.unwrap_or_default();
                let rates = match (a.counters, memory.counters.get(&addr)) {
                    (Some(cur), Some((prev, at))) => {
                        Rates::between(prev, &cur, started.duration_since(*at).as_secs_f64())
                    }
                    _ => Rates::default(),
                };
                if let Some(c) = a.counters {
                    memory.counters.insert(addr.clone(), (c, started));
                }
                if let Some(next) = a.next_cursor {
                    memory.cursors.insert(addr.clone(), next);
                }
                events.extend(a.events.iter().map(|e| event_view(&addr, e)));
                ticks.extend(a.keys);
                raw_fingers.insert(addr.clone(), a.fingers);
                nodes.insert(
                    addr.clone(),
                    NodeView {
                        addr: addr.clone(),
                        id: a.info.node.id,
                        state: state_of(a.info.state),
                        predecessor: a.info.predecessor.map(|p| p.addr),
                        successors: a.info.successors.into_iter().map(|s| s.addr).collect(),
                        fingers: Vec::new(),
                        counters,
                        rates,
                        uptime_secs: a.info.uptime_secs,
                    },
                );
            }
            Err(reason) => {
                if seeds.contains(&addr) {
                    seed_errors.push(if reason.contains(addr.as_str()) {
                        reason
                    } else {
                        format!("{addr}: {reason}")
                    });
                }
                // Keep an unreachable node while the ring still links it or
                // the console started it; drop it once the ring moved on.
                let named = in_ring.contains(&addr) || seeds.contains(&addr);
                if !named {
                    memory.counters.remove(&addr);
                    memory.cursors.remove(&addr);
                    continue;
                }
                let view = match memory.known.get(&addr) {
                    Some(old) => NodeView {
                        state: NodeState::Unreachable,
                        rates: Rates::default(),
                        ..old.clone()
                    },
                    None => match refs.get(&addr) {
                        Some(id) => NodeView::bare(&addr, *id, NodeState::Unreachable),
                        // A seed that never answered and that nobody names.
                        None => {
                            NodeView::bare(&addr, Id::hash(addr.as_bytes()), NodeState::Unreachable)
                        }
                    },
                };
                nodes.insert(addr, view);
            }
        }
    }
    let mut sorted: Vec<NodeView> = nodes.into_values().collect();
    sorted.sort_by_key(|n| n.id);
    let ids: Vec<Id> = sorted
        .iter()
        .filter(|n| n.state != NodeState::Unreachable)
        .map(|n| n.id)
        .collect();
    for node in &mut sorted {
        if let Some(rows) = raw_fingers.get(&node.addr) {
            let rows: Vec<super::model::FingerRow> = rows
                .iter()
                .map(|f| {
                    (
                        f.index,
                        f.start,
                        f.node.as_ref().map(|n| (n.addr.clone(), n.id)),
                    )
                })
                .collect();
            node.fingers = finger_runs(&rows, &ids);
        }
    }
    memory.known = sorted.iter().map(|n| (n.addr.clone(), n.clone())).collect();
    events.sort_by_key(|e| e.at_ms);
    ticks.sort();
    // Say why when nothing answers: a seed's own error (say, a gateway
    // port given as --peer) is the most useful line.
    let error = sorted
        .iter()
        .all(|n| n.state == NodeState::Unreachable)
        .then(|| {
            seed_errors
                .first()
                .cloned()
                .unwrap_or_else(|| "no node answers".to_string())
        });
    let snapshot = RingSnapshot {
        taken_ms: now_ms,
        nodes: sorted,
        files: files.map(|f| f.iter().filter(|f| !f.deleted).map(file_view).collect()),
        key_ticks: sample_keys.then(|| super::ui::sample(&ticks, MAX_RIM_TICKS)),
        error,
    };
    (snapshot, events)
}

/// Polls until `update_tx` closes. `seeds_rx` carries the addresses the
/// console knows of without asking the ring (its fleet, or `--peer`).
pub async fn run<M: MetricsSource>(
    pool: Arc<PeerPool>,
    mut seeds_rx: watch::Receiver<Vec<String>>,
    mut control_rx: mpsc::Receiver<PollControl>,
    update_tx: mpsc::Sender<Update>,
    mut metrics: M,
) {
    let mut memory = Memory::default();
    let mut paused = false;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            control = control_rx.recv() => match control {
                Some(PollControl::Pause(p)) => { paused = p; continue; }
                None => return,
            },
            changed = seeds_rx.changed() => {
                if changed.is_err() { return; }
            }
        }
        if paused {
            continue;
        }
        let seeds = seeds_rx.borrow().clone();
        if seeds.is_empty() && memory.known.is_empty() {
            continue;
        }
        let files_from = memory
            .known
            .values()
            .find(|n| n.state != NodeState::Unreachable)
            .map(|n| n.addr.clone());
        let (snapshot, events) =
            poll_once(&pool, &seeds, &mut memory, files_from, chord_node::now_ms()).await;
        let series = match metrics.refresh(&snapshot).await {
            Ok(s) => Some(s),
            Err(e) => {
                debug!(error = %e, "metrics source failed");
                None
            }
        };
        let mut updates = vec![Update::Snapshot(snapshot)];
        if !events.is_empty() {
            updates.push(Update::Events(events));
        }
        updates.extend(series.map(Update::Series));
        for u in updates {
            if update_tx.send(u).await.is_err() {
                return;
            }
        }
    }
}
