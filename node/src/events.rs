//! The node's event log: a bounded, in-memory record of what happened to
//! this node (joins, leaves, failures detected, repairs and hand-offs with
//! the bytes they moved), read over gRPC (`Ring.GetEvents`) since a cursor.
//!
//! The log keeps the newest [`EVENT_LOG_CAPACITY`] events. Every event has a
//! sequence number that only grows, so a reader that asks "since N" learns
//! both the new events and how many it missed when it fell behind. The log
//! is a plain `std::sync::Mutex` section with no `.await` inside.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Events kept per node: enough for minutes of a busy ring, a few hundred
/// KiB at most.
pub const EVENT_LOG_CAPACITY: usize = 1024;
/// Most events returned by one `GetEvents` call.
pub const MAX_EVENTS_PER_READ: usize = 256;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// This node created a new ring.
    Created,
    /// This node joined a ring (`peer`: its first successor).
    Joined,
    /// A new predecessor or successor appeared next to this node (`peer`).
    NeighbourJoined,
    /// A neighbour left gracefully and told us (`peer`).
    NeighbourLeft,
    /// A peer stopped answering and was dropped from fingers and successors.
    PeerFailed,
    /// A repair round moved or dropped keys (`keys`, `bytes`).
    Repair,
    /// This node began leaving: it hands every key to the next holders.
    HandoffStarted,
    /// The hand-off ended (`keys`, `bytes`; `detail` says if any key is
    /// still unconfirmed).
    HandoffDone,
    /// The collector removed chunks no file names (`keys`, `bytes`).
    Collected,
    /// Files set aside after a long absence, or settled with the ring.
    Synced,
    /// Something went wrong that an operator should see.
    Error,
}

impl EventKind {
    /// Stable lower-case name, used on the wire and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Joined => "joined",
            EventKind::NeighbourJoined => "neighbour-joined",
            EventKind::NeighbourLeft => "neighbour-left",
            EventKind::PeerFailed => "peer-failed",
            EventKind::Repair => "repair",
            EventKind::HandoffStarted => "handoff-started",
            EventKind::HandoffDone => "handoff-done",
            EventKind::Collected => "collected",
            EventKind::Synced => "synced",
            EventKind::Error => "error",
        }
    }

    /// Every kind.
    pub const ALL: [EventKind; 11] = [
        EventKind::Created,
        EventKind::Joined,
        EventKind::NeighbourJoined,
        EventKind::NeighbourLeft,
        EventKind::PeerFailed,
        EventKind::Repair,
        EventKind::HandoffStarted,
        EventKind::HandoffDone,
        EventKind::Collected,
        EventKind::Synced,
        EventKind::Error,
    ];

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One thing that happened at one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the node's log, from 1, never reused.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    /// The other node involved, if any.
    pub peer: Option<String>,
    /// Keys moved, dropped or left over.
    pub keys: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// One line for a person.
    pub detail: String,
}

/// A read of the log since a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventBatch {
    pub events: Vec<Event>,
    /// The cursor for the next read: pass it as `since`.
    pub next: u64,
    /// Events the reader missed because the log had already dropped them.
    pub missed: u64,
}

/// The bounded log itself.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    events: VecDeque<Event>,
    last_seq: u64,
}

impl EventLog {
    /// Appends an event, stamping its sequence number and time.
    pub fn record(
        &self,
        kind: EventKind,
        peer: Option<&str>,
        keys: u64,
        bytes: u64,
        detail: impl Into<String>,
    ) {
        let mut log = self.lock();
        log.last_seq += 1;
        let event = Event {
            seq: log.last_seq,
            at_ms: crate::now_ms(),
            kind,
            peer: peer.map(str::to_string),
            keys,
            bytes,
            detail: detail.into(),
        };
        if log.events.len() == EVENT_LOG_CAPACITY {
            log.events.pop_front();
        }
        log.events.push_back(event);
    }

    /// Events with `seq > since`, oldest first, at most `max`.
    pub fn since(&self, since: u64, max: usize) -> EventBatch {
        let log = self.lock();
        let oldest = log.events.front().map_or(log.last_seq + 1, |e| e.seq);
        let missed = oldest.saturating_sub(since + 1);
        let events: Vec<Event> = log
            .events
            .iter()
            .filter(|e| e.seq > since)
            .take(max.min(MAX_EVENTS_PER_READ))
            .cloned()
            .collect();
        let next = events.last().map_or(since.max(oldest - 1), |e| e.seq);
        EventBatch {
            events,
            next,
            missed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resume_from_the_cursor() {
        let log = EventLog::default();
        for i in 0..5 {
            log.record(EventKind::Repair, None, i, 0, "");
        }
        let first = log.since(0, 3);
        assert_eq!(
            first.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(first.next, 3);
        let rest = log.since(first.next, 10);
        assert_eq!(
            rest.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(rest.missed, 0);
        let empty = log.since(rest.next, 10);
        assert!(empty.events.is_empty());
        assert_eq!(empty.next, 5);
    }

    #[test]
    fn a_slow_reader_learns_what_it_missed() {
        let log = EventLog::default();
        for _ in 0..EVENT_LOG_CAPACITY + 10 {
            log.record(EventKind::PeerFailed, Some("127.0.0.1:1"), 0, 0, "gone");
        }
        let batch = log.since(0, 1);
        assert_eq!(batch.missed, 10);
        assert_eq!(batch.events[0].seq, 11);
    }
}
