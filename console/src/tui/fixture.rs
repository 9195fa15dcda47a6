//! Deterministic app states for snapshot tests and the render bench: a ring
//! of `n` nodes on the local port layout with true finger tables (one run
//! made stale on purpose), counters, files, events, graphs and transfers.
//! No clock, no randomness: the same `n` always gives the same screen.

use chord_node::chord::Id;

use super::app::{App, Direction, Origin, TransferState, TransferView};
use super::model::{
    finger_runs, Counters, EventSource, EventView, FileView, FingerRow, NodeState, NodeView, Rates,
    Series, Severity, Unit,
};

/// The fixture's "now": 2025-11-25 10:00:00 UTC.
pub const NOW_MS: u64 = 1_764_064_800_000;

/// Finger rows `(index, start, target)` of node `id` in a ring of `sorted` ids.
fn true_fingers(id: &Id, sorted: &[(Id, String)]) -> Vec<FingerRow> {
    let ids: Vec<Id> = sorted.iter().map(|(id, _)| *id).collect();
    (0..chord_node::chord::ID_BITS)
        .map(|i| {
            let start = id.add_pow2(i);
            let owner = crate::cli::true_owner(&ids, &start)
                .and_then(|o| sorted.iter().find(|(id, _)| *id == o).cloned())
                .map(|(id, addr)| (addr, id));
            (i as u32, start, owner)
        })
        .collect()
}

/// A ring of `n` nodes, the first one selected, nothing pending.
pub fn app(n: usize) -> App {
    let mut sorted: Vec<(Id, String)> = (0..n)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", 5057 + i);
            (Id::hash(addr.as_bytes()), addr)
        })
        .collect();
    sorted.sort();
    let ids: Vec<Id> = sorted.iter().map(|(id, _)| *id).collect();
    let nodes: Vec<NodeView> = sorted
        .iter()
        .enumerate()
        .map(|(i, (id, addr))| {
            let mut rows = true_fingers(id, &sorted);
            // Node 1 still points its top finger at its successor: stale.
            if i == 1 && n > 2 {
                if let Some(last) = rows.last_mut() {
                    last.2 = Some((sorted[2].1.clone(), sorted[2].0));
                }
            }
            let state = match (i, n) {
                (_, n) if n < 3 => NodeState::Serving,
                (i, n) if i == n - 1 => NodeState::Unreachable,
                (i, n) if i == n - 2 => NodeState::Joining,
                _ => NodeState::Serving,
            };
            let k = i as u64 + 1;
            NodeView {
                addr: addr.clone(),
                id: *id,
                state,
                predecessor: Some(sorted[(i + n - 1) % n].1.clone()),
                successors: (1..=3.min(n.saturating_sub(1)))
                    .map(|d| sorted[(i + d) % n].1.clone())
                    .collect(),
                fingers: finger_runs(&rows, &ids),
                counters: Counters {
                    chunks: 40 + 13 * k % 37,
                    manifests: 3 + k % 4,
                    bytes: (40 + 13 * k % 37) * 4 * 1024 * 1024,
                    requests: 1000 * k,
                    bytes_in: 0,
                    bytes_out: 0,
                    repair_bytes: 0,
                },
                rates: Rates {
                    requests: (k % 5) as f64 * 3.5,
                    repair_bytes: if i == 0 { 524_288.0 } else { 0.0 },
                },
                uptime_secs: 600,
            }
        })
        .collect();
    let mut app = App::new(
        Origin::Local {
            data_root: "/tmp/chord-console-fixture".to_string(),
        },
        true,
        NOW_MS,
    );
    app.selected = nodes.first().map(|n| n.addr.clone());
    app.files = ["backup.tar", "notes.md", "photos.zip"]
        .iter()
        .enumerate()
        .map(|(i, name)| FileView {
            name: name.to_string(),
            size: [52_428_800, 2_048, 7_340_032][i],
            version: NOW_MS - 60_000 * (i as u64 + 1),
            chunks: [13, 1, 2][i],
            modified_ms: NOW_MS - 60_000 * (i as u64 + 1),
        })
        .collect();
    app.key_ticks = (0..200u32).map(|i| Id::hash(&i.to_be_bytes())).collect();
    let first = sorted.first().map(|(_, a)| a.clone()).unwrap_or_default();
    let last = sorted.last().map(|(_, a)| a.clone()).unwrap_or_default();
    let events = [
        (
            EventSource::Node(first.clone()),
            "created",
            "created the ring".to_string(),
            Severity::Info,
        ),
        (
            EventSource::Node(first.clone()),
            "neighbour-joined",
            "127.0.0.1:5058 joined next to us".to_string(),
            Severity::Good,
        ),
        (
            EventSource::Node(first.clone()),
            "repair",
            "moved 12 keys (48.0 MiB)".to_string(),
            Severity::Info,
        ),
        (
            EventSource::Console,
            "transfer",
            "uploaded backup.tar (50.0 MiB) at 21.3 MiB/s".to_string(),
            Severity::Good,
        ),
        (
            EventSource::Console,
            "unreachable",
            format!("{last} missed the poll deadline"),
            Severity::Warn,
        ),
        (
            EventSource::Node(first),
            "peer-failed",
            "dropped an unresponsive successor".to_string(),
            Severity::Warn,
        ),
    ];
    for (i, (source, kind, text, severity)) in events.into_iter().enumerate() {
        app.push_event(EventView {
            at_ms: NOW_MS - 1000 * (60 - 10 * i as u64),
            source,
            kind: kind.to_string(),
            text,
            severity,
        });
    }
    let points = |f: &dyn Fn(u64) -> f64| -> Vec<(u64, f64)> {
        (0..60u64)
            .map(|s| (NOW_MS - 1000 * (59 - s), f(s)))
            .collect()
    };
    app.series = vec![
        Series {
            title: "requests".to_string(),
            unit: Unit::PerSecond,
            points: points(&|s| (s % 20) as f64 * 1.5),
        },
        Series {
            title: "stored".to_string(),
            unit: Unit::Bytes,
            points: points(&|s| (s * 1_048_576) as f64),
        },
        Series {
            title: "nodes".to_string(),
            unit: Unit::Count,
            points: points(&|s| if s < 30 { n as f64 - 1.0 } else { n as f64 }),
        },
    ];
    app.transfers = vec![
        TransferView {
            id: 1,
            direction: Direction::Upload,
            name: "video.mkv".to_string(),
            total: 104_857_600,
            done: 41_943_040,
            started_ms: NOW_MS - 4_000,
            updated_ms: NOW_MS,
            state: TransferState::Running,
        },
        TransferView {
            id: 2,
            direction: Direction::Download,
            name: "notes.md".to_string(),
            total: 2_048,
            done: 2_048,
            started_ms: NOW_MS - 2_000,
            updated_ms: NOW_MS - 1_000,
            state: TransferState::Done,
        },
        TransferView {
            id: 3,
            direction: Direction::Upload,
            name: "missing.bin".to_string(),
            total: 0,
            done: 0,
            started_ms: NOW_MS - 500,
            updated_ms: NOW_MS - 500,
            state: TransferState::Failed(
                "cannot open missing.bin: No such file or directory".to_string(),
            ),
        },
    ];
    app.nodes = nodes;
    app.last_snapshot_ms = Some(NOW_MS - 400);
    app
}
