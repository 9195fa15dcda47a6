//! The console's own picture of a ring: plain data converted from the
//! nodes' answers, and the pure arithmetic the panes need (rates from
//! counter deltas, stale fingers, id-space shares, imbalance).
//!
//! Nothing here holds a protobuf type, a clock or a connection: the poller
//! converts answers into these types, and fixtures build them by hand, so
//! every pane can be rendered from data alone.

use std::collections::HashMap;

use chord_node::chord::Id;

/// Where a node is in its life, as the console sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    Joining,
    Serving,
    Leaving,
    /// Known to the console but missed the last poll's deadline.
    Unreachable,
}

impl NodeState {
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Serving => "serving",
            NodeState::Leaving => "leaving",
            NodeState::Unreachable => "unreachable",
        }
    }
}

/// A node's store counters. The monotonic ones (`requests`, `repair_bytes`)
/// only mean something as rates between two polls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub chunks: u64,
    pub manifests: u64,
    pub bytes: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub repair_bytes: u64,
}

impl Counters {
    /// Keys held: chunks and manifests.
    pub fn keys(&self) -> u64 {
        self.chunks + self.manifests
    }
}

/// Per-second rates derived from two readings of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub requests: f64,
    pub repair_bytes: f64,
}

impl Rates {
    /// Rates between two readings `secs` apart. A counter that went down
    /// (the node restarted) gives a rate of zero rather than a negative one.
    pub fn between(prev: &Counters, cur: &Counters, secs: f64) -> Rates {
        if secs <= 0.0 {
            return Rates::default();
        }
        let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Rates {
            requests: per_sec(prev.requests, cur.requests),
            repair_bytes: per_sec(prev.repair_bytes, cur.repair_bytes),
        }
    }
}

/// A run of consecutive finger-table rows that point at the same node.
/// Chord fingers collapse into a few such runs (most of the 160 rows point
/// at the immediate successor), so the pane lists runs, not rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerView {
    /// First and last finger index of the run.
    pub first: u32,
    pub last: u32,
    /// Start of the first finger of the run.
    pub start: Id,
    pub target: Option<String>,
    pub target_id: Option<Id>,
    /// The target is not the true successor of some start in the run, given
    /// the nodes the console sees.
    pub stale: bool,
}

/// One node of the ring.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub addr: String,
    pub id: Id,
    pub state: NodeState,
    pub predecessor: Option<String>,
    pub successors: Vec<String>,
    pub fingers: Vec<FingerView>,
    pub counters: Counters,
    pub rates: Rates,
    pub uptime_secs: u64,
}

impl NodeView {
    /// A node the console knows only by address and id (say, from another
    /// node's successor list), before it answered.
    pub fn bare(addr: &str, id: Id, state: NodeState) -> NodeView {
        NodeView {
            addr: addr.to_string(),
            id,
            state,
            predecessor: None,
            successors: Vec::new(),
            fingers: Vec::new(),
            counters: Counters::default(),
            rates: Rates::default(),
            uptime_secs: 0,
        }
    }
}

/// A file on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    pub name: String,
    pub size: u64,
    pub version: u64,
    pub chunks: u32,
    pub modified_ms: u64,
}

/// Who reported an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// A node's own event log.
    Node(String),
    /// The console itself: capacity changes, transfers, what it saw change
    /// between two snapshots.
    Console,
}

/// How an event should stand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Good,
    Warn,
    Error,
}

/// One line of the events pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventView {
    pub at_ms: u64,
    pub source: EventSource,
    /// Short kind label (`joined`, `repair`, `upload`...).
    pub kind: String,
    pub text: String,
    pub severity: Severity,
}

impl EventView {
    pub fn console(
        at_ms: u64,
        kind: &str,
        text: impl Into<String>,
        severity: Severity,
    ) -> EventView {
        EventView {
            at_ms,
            source: EventSource::Console,
            kind: kind.to_string(),
            text: text.into(),
            severity,
        }
    }
}

/// One point of the graphs' local history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricSample {
    pub at_ms: u64,
    pub nodes: usize,
    pub requests_per_sec: f64,
    pub stored_bytes: u64,
}

/// A graph's data, whatever its source (local snapshots or CloudWatch).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub title: String,
    /// Unit of the y axis, for its label.
    pub unit: Unit,
    /// `(milliseconds since the epoch, value)`, oldest first.
    pub points: Vec<(u64, f64)>,
}

/// How a series' values are printed on its axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    PerSecond,
    Bytes,
}

/// One poll of the ring.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RingSnapshot {
    pub taken_ms: u64,
    /// In ring order (ascending id).
    pub nodes: Vec<NodeView>,
    /// `None` when the listing missed the deadline: keep the last one.
    pub files: Option<Vec<FileView>>,
    /// Key positions sampled from the nodes' stores, for the rim ticks.
    /// `None` when this poll did not sample keys.
    pub key_ticks: Option<Vec<Id>>,
    /// Why the poll found no node, if it did not.
    pub error: Option<String>,
}

/// One finger-table row: index, start, and target (address and id).
pub type FingerRow = (u32, Id, Option<(String, Id)>);

/// Groups a node's finger rows into runs and marks stale ones against the
/// sorted ids of the nodes the console sees.
pub fn finger_runs(rows: &[FingerRow], sorted_ids: &[Id]) -> Vec<FingerView> {
    let mut runs: Vec<FingerView> = Vec::new();
    for (index, start, target) in rows {
        let truth = crate::cli::true_owner(sorted_ids, start);
        let stale = match target {
            Some((_, id)) => truth.is_some_and(|t| t != *id),
            None => !sorted_ids.is_empty(),
        };
        let addr = target.as_ref().map(|(a, _)| a.clone());
        match runs.last_mut() {
            Some(run) if run.target == addr && run.last + 1 == *index => {
                run.last = *index;
                run.stale |= stale;
            }
            _ => runs.push(FingerView {
                first: *index,
                last: *index,
                start: *start,
                target: addr,
                target_id: target.as_ref().map(|(_, id)| *id),
                stale,
            }),
        }
    }
    runs
}

/// The share of the id space each node owns, `(pred, id]`, in the order
/// of `sorted_ids`. One node owns all of it.
pub fn id_shares(sorted_ids: &[Id]) -> Vec<f64> {
    match sorted_ids.len() {
        0 => Vec::new(),
        1 => vec![1.0],
        n => (0..n)
            .map(|i| {
                let pred = sorted_ids[(i + n - 1) % n];
                pred.distance_to(&sorted_ids[i]).fraction()
            })
            .collect(),
    }
}

/// Max over mean of `values` (1.0 is perfect balance; 0 when empty or all zero).
pub fn imbalance(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let max = values.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        0.0
    }
}

/// Addresses that appeared and disappeared between two snapshots.
pub fn membership_changes(before: &[NodeView], after: &[NodeView]) -> (Vec<String>, Vec<String>) {
    let old: HashMap<&str, NodeState> = before.iter().map(|n| (n.addr.as_str(), n.state)).collect();
    let new: HashMap<&str, NodeState> = after.iter().map(|n| (n.addr.as_str(), n.state)).collect();
    let mut joined: Vec<String> = new
        .keys()
        .filter(|a| !old.contains_key(*a))
        .map(|a| a.to_string())
        .collect();
    let mut gone: Vec<String> = old
        .keys()
        .filter(|a| !new.contains_key(*a))
        .map(|a| a.to_string())
        .collect();
    joined.sort();
    gone.sort();
    (joined, gone)
}

/// Bytes in a short human form (`0 B`, `12.3 KiB`, `4.0 GiB`).
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `HH:MM:SS` (UTC) of a time in milliseconds since the epoch.
pub fn clock(at_ms: u64) -> String {
    let secs = (at_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(top: u8) -> Id {
        let mut a = [0u8; 20];
        a[0] = top;
        Id::from_array(a)
    }

    #[test]
    fn rates_are_deltas_per_second_and_never_negative() {
        let a = Counters {
            requests: 100,
            repair_bytes: 1000,
            ..Counters::default()
        };
        let b = Counters {
            requests: 150,
            repair_bytes: 3000,
            ..Counters::default()
        };
        let r = Rates::between(&a, &b, 2.0);
        assert_eq!(r.requests, 25.0);
        assert_eq!(r.repair_bytes, 1000.0);
        assert_eq!(Rates::between(&b, &a, 2.0), Rates::default());
        assert_eq!(Rates::between(&a, &b, 0.0), Rates::default());
    }

    #[test]
    fn shares_wrap_and_sum_to_one() {
        let ids = [id(0x40), id(0x80), id(0xc0)];
        let s = id_shares(&ids);
        assert!((s[0] - 0.5).abs() < 1e-9, "{s:?}"); // from 0xc0 around to 0x40
        assert!((s[1] - 0.25).abs() < 1e-9);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(id_shares(&[id(1)]), vec![1.0]);
        assert!(id_shares(&[]).is_empty());
        assert!((imbalance(&s) - 1.5).abs() < 1e-9);
        assert_eq!(imbalance(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn finger_runs_collapse_and_mark_stale() {
        let ids = [id(0x40), id(0x80)];
        let a = Some(("a".to_string(), id(0x40)));
        let b = Some(("b".to_string(), id(0x80)));
        let rows = vec![
            (0, id(0x10), a.clone()),
            (1, id(0x20), a.clone()),
            (2, id(0x50), b.clone()),
            // Start 0x90 belongs to 0x40 (wrapping), not 0x80: stale.
            (3, id(0x90), b.clone()),
            (4, id(0xa0), None),
        ];
        let runs = finger_runs(&rows, &ids);
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[0].first, runs[0].last, runs[0].stale), (0, 1, false));
        assert_eq!((runs[1].first, runs[1].last, runs[1].stale), (2, 3, true));
        assert_eq!((runs[2].target.clone(), runs[2].stale), (None, true));
    }

    #[test]
    fn membership_changes_name_both_sides() {
        let a = NodeView::bare("a", id(1), NodeState::Serving);
        let b = NodeView::bare("b", id(2), NodeState::Serving);
        let c = NodeView::bare("c", id(3), NodeState::Serving);
        let (joined, gone) = membership_changes(&[a.clone(), b], &[a, c]);
        assert_eq!(joined, vec!["c".to_string()]);
        assert_eq!(gone, vec!["b".to_string()]);
    }

    #[test]
    fn formats() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(50.0 * 1024.0 * 1024.0), "50.0 MiB");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
