//! The repair loop: one mechanism that makes joins, graceful leaves,
//! crashes and corrupt chunks all converge to "every key on its R holders".
//!
//! Each round, a node walks the keys it holds in ring order. For a run of
//! keys with the same owner it asks the owner's replica set which of those
//! keys they hold (paging through their listings), pushes what they lack,
//! and — only if it is not itself one of the holders — drops its own copies
//! once every holder has confirmed (by listing the key or by acknowledging
//! the push). Nothing is deleted on a guess: a holder that does not answer
//! keeps our copy alive, and the holders that must have confirmed are those
//! of the replica set as it is at the drop (`chord::may_drop`), so a node
//! outside it never causes one.
//!
//! A scrubber re-hashes chunk bytes at a bounded rate; a corrupt
//! chunk is quarantined, and the next round of another holder restores it.
//! Pushes go one at a time under a byte-rate cap so repair never starves
//! client transfers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::chord::{may_drop, Id, NodeRef};
use crate::error::Result;
use crate::events::EventKind;
use crate::node::{Counters, Node};
use crate::store::{Manifest, Stamp};

/// What one repair round did.
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    pub chunks_pushed: u64,
    pub manifests_pushed: u64,
    pub bytes_pushed: u64,
    pub chunks_dropped: u64,
    pub manifests_dropped: u64,
    /// Tombstones dropped after the tombstone grace.
    pub tombstones_expired: u64,
    /// Keys we hold but could not confirm on all holders (kept).
    pub unconfirmed: u64,
    pub corrupt_found: u64,
}

impl RepairReport {
    /// Adds `other`'s counts to this report.
    fn absorb(&mut self, other: &RepairReport) {
        self.chunks_pushed += other.chunks_pushed;
        self.manifests_pushed += other.manifests_pushed;
        self.bytes_pushed += other.bytes_pushed;
        self.chunks_dropped += other.chunks_dropped;
        self.manifests_dropped += other.manifests_dropped;
        self.tombstones_expired += other.tombstones_expired;
        self.unconfirmed += other.unconfirmed;
        self.corrupt_found += other.corrupt_found;
    }

    pub fn is_quiet(&self) -> bool {
        self.chunks_pushed
            + self.manifests_pushed
            + self.chunks_dropped
            + self.manifests_dropped
            + self.tombstones_expired
            + self.corrupt_found
            == 0
    }
}

/// What a hand-off (a graceful leave or a drain) did, returned to whoever
/// asked for it: the console, the autoscaler, the lifecycle-hook handler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Chunks and manifests confirmed by their next holders and dropped here.
    pub keys: u64,
    /// Bytes pushed to the next holders.
    pub bytes: u64,
    /// Keys still held here that no next holder has confirmed. Zero means
    /// the node can be destroyed without losing anything.
    pub unconfirmed: u64,
    /// Hand-off rounds run.
    pub rounds: u32,
    /// Time spent, in milliseconds.
    pub elapsed_ms: u64,
}

impl HandoffReport {
    /// Whether every key this node held is confirmed elsewhere.
    pub fn is_complete(&self) -> bool {
        self.unconfirmed == 0
    }
}

/// Keeps the average byte rate of pushes under a cap.
#[derive(Debug)]
struct Pacer {
    bytes_per_sec: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            sent: 0,
        }
    }

    async fn account(&mut self, bytes: u64) {
        self.sent += bytes;
        let due = Duration::from_secs_f64(self.sent as f64 / self.bytes_per_sec as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Chunk,
    Manifest(Stamp),
}

impl Node {
    /// Runs the repair loop until `cancel` fires.
    pub async fn repair_loop(&self, cancel: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(self.config().repair_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scrub_cursor = Id::ZERO;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if self.is_leaving() {
                // The hand-off runs its own rounds.
                continue;
            }
            let round = async {
                let mut report = self.scrub(&mut scrub_cursor).await;
                match self.repair_round(false).await {
                    Ok(r) => report.absorb(&r),
                    Err(e) => debug!(error = %e, "repair round failed"),
                }
                report
            };
            let report = tokio::select! {
                _ = cancel.cancelled() => break,
                report = round => report,
            };
            if !report.is_quiet() {
                info!(?report, "repair round");
                let keys = report.chunks_pushed
                    + report.manifests_pushed
                    + report.chunks_dropped
                    + report.manifests_dropped;
                self.events().record(
                    EventKind::Repair,
                    None,
                    keys,
                    report.bytes_pushed,
                    format!(
                        "pushed {} chunks and {} manifests, dropped {} keys, expired {} tombstones, {} corrupt found",
                        report.chunks_pushed,
                        report.manifests_pushed,
                        report.chunks_dropped + report.manifests_dropped,
                        report.tombstones_expired,
                        report.corrupt_found
                    ),
                );
            }
        }
    }

    /// Hands every key to its holders as if this node were gone, retrying
    /// until all are confirmed or `deadline` passes; `mode` says whether a
    /// run of rounds that move nothing ends it early.
    pub async fn hand_off(&self, deadline: Duration, mode: HandoffMode) -> HandoffReport {
        let started = Instant::now();
        self.events().record(
            EventKind::HandoffStarted,
            None,
            0,
            0,
            format!("handing every key to its next holders ({mode:?})"),
        );
        let mut moved = RepairReport::default();
        let mut rounds = 0u32;
        let mut stalled = 0;
        let mut unconfirmed;
        loop {
            rounds += 1;
            // The deadline holds within a round too: a round stuck on slow
            // peers is cut off, and what it did not confirm stays counted.
            let left = deadline.saturating_sub(started.elapsed());
            let round = match tokio::time::timeout(left, self.repair_round(true)).await {
                Ok(round) => round,
                Err(_) => Err(crate::Error::Unavailable(
                    "the hand-off deadline passed during a round".into(),
                )),
            };
            match round {
                Ok(r) => {
                    moved.absorb(&r);
                    unconfirmed = r.unconfirmed;
                    if unconfirmed == 0 {
                        break;
                    }
                    stalled = if r.is_quiet() { stalled + 1 } else { 0 };
                }
                Err(e) => {
                    warn!(error = %e, "hand-off round failed");
                    // Nothing was confirmed this round: count every key.
                    let held = self.store().stats();
                    unconfirmed = held.chunks + held.manifests + held.tombstones;
                    stalled += 1;
                }
            }
            if started.elapsed() >= deadline {
                warn!(
                    left = unconfirmed,
                    "hand-off deadline passed; keys stay on disk"
                );
                break;
            }
            if mode == HandoffMode::UntilStalled && stalled >= HANDOFF_STALL_ROUNDS {
                // The last node of a ring, or a whole fleet stopping at once,
                // has no one to hand to: the keys stay on disk, intact.
                warn!(
                    left = unconfirmed,
                    "hand-off cannot make progress; keys stay on disk"
                );
                break;
            }
            // The pause between rounds is inside the deadline too.
            tokio::time::sleep(HANDOFF_RETRY.min(deadline.saturating_sub(started.elapsed()))).await;
        }
        let report = HandoffReport {
            keys: moved.chunks_dropped + moved.manifests_dropped,
            bytes: moved.bytes_pushed,
            unconfirmed,
            rounds,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let detail = if report.is_complete() {
            "every key confirmed by its next holders".to_string()
        } else {
            format!(
                "{} keys not confirmed elsewhere; kept on disk",
                report.unconfirmed
            )
        };
        self.events().record(
            EventKind::HandoffDone,
            None,
            report.keys,
            report.bytes,
            detail,
        );
        report
    }

    /// One pass over every key held here, clockwise from zero, a page of
    /// `repair_page_keys` at a time, so that a round's memory is a page's
    /// however many keys the node holds (listing them all at once took a
    /// node of 400,000 small files from 85 MiB to about 200 every round).
    /// With `leaving`, this node counts as no key's holder, so everything
    /// is pushed on and then dropped.
    pub async fn repair_round(&self, leaving: bool) -> Result<RepairReport> {
        let mut report = RepairReport::default();
        let mut pacer = Pacer::new(self.config().repair_bytes_per_sec);
        let page_keys = self.config().repair_page_keys;
        let mut after = Id::ZERO;
        loop {
            let page = self
                .disk(move |s| Ok(s.keys_page(&after, &Id::ZERO, page_keys)))
                .await?;
            let mut keys: Vec<(Id, Held)> =
                page.chunks.into_iter().map(|k| (k, Held::Chunk)).collect();
            keys.extend(
                page.manifests
                    .into_iter()
                    .map(|(k, v)| (k, Held::Manifest(v))),
            );
            // Clockwise from `after`: the keys above it, then a wrapped zero.
            keys.sort_by_key(|(k, _)| (*k <= after, *k));
            self.repair_keys(&keys, leaving, &mut pacer, &mut report)
                .await;
            match page.next {
                Some(next) => after = next,
                None => return Ok(report),
            }
        }
    }

    /// Repairs `keys` (in clockwise order), run by run of keys with the
    /// same holders.
    async fn repair_keys(
        &self,
        keys: &[(Id, Held)],
        leaving: bool,
        pacer: &mut Pacer,
        report: &mut RepairReport,
    ) {
        let mut i = 0;
        while i < keys.len() {
            let first = keys[i].0;
            let holders = match self.holders(first, leaving).await {
                Ok(h) => h,
                Err(e) => {
                    debug!(key = %first.short(), error = %e, "cannot place key; keeping it");
                    report.unconfirmed += 1;
                    i += 1;
                    continue;
                }
            };
            // Every key in [first, owner] has the same owner, hence the same holders.
            let owner = holders[0].id;
            let run_end = keys[i..]
                .iter()
                .position(|(k, _)| !k.in_half_open(&first.prev(), &owner))
                .map_or(keys.len(), |n| i + n);
            let run = &keys[i..run_end];
            self.repair_run(run, &holders, leaving, pacer, report).await;
            i = run_end;
        }
    }

    /// The nodes that should hold `key`, owner first, without this node when
    /// it is leaving.
    async fn holders(&self, key: Id, leaving: bool) -> Result<Vec<NodeRef>> {
        let want = self.replicas();
        // Ask for spares: this node and peers known to be leaving are not
        // holders, whoever the successor lists still name.
        let set = self
            .replica_set(key, want + 1 + self.config().successors)
            .await?;
        let mut holders = Vec::with_capacity(set.len());
        for n in set {
            let me = n.addr == self.me().addr;
            if me && leaving {
                continue;
            }
            if !me && self.is_peer_leaving(&n.addr).await {
                continue;
            }
            holders.push(n);
        }
        let mut set = holders;
        set.truncate(want);
        if set.is_empty() {
            return Err(crate::Error::Unavailable(
                "no other node to hold the key".into(),
            ));
        }
        Ok(set)
    }

    async fn repair_run(
        &self,
        run: &[(Id, Held)],
        holders: &[NodeRef],
        leaving: bool,
        pacer: &mut Pacer,
        report: &mut RepairReport,
    ) {
        let me = self.me().addr.clone();
        let first = run[0].0;
        let last = run[run.len() - 1].0;
        let others: Vec<&NodeRef> = holders.iter().filter(|h| h.addr != me).collect();
        // Per key, which of `others` confirmed it: bit i for others[i]
        // (at most 16 replicas, so a u32 has room).
        let mut confirmed: HashMap<Id, u32> = HashMap::new();
        let confirmed_by_all = |key: &Id, confirmed: &HashMap<Id, u32>| {
            confirmed.get(key).map_or(0, |bits| bits.count_ones()) as usize == others.len()
        };
        // Tombstones past the tombstone grace: pushed only where they must
        // replace a live version, and dropped once no holder lacks them.
        let grace_ms = u64::try_from(self.config().tombstone_grace.as_millis()).unwrap_or(u64::MAX);
        let now = crate::now_ms();
        let expired: HashMap<Id, Stamp> = run
            .iter()
            .filter_map(|(key, kind)| match kind {
                Held::Manifest(stamp)
                    if stamp.deleted && self.store().is_expired_tombstone(key, grace_ms, now) =>
                {
                    Some((*key, *stamp))
                }
                _ => None,
            })
            .collect();
        for (i, holder) in others.iter().enumerate() {
            let held = match self
                .peers()
                .list_keys(&holder.addr, &first.prev(), &last)
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    if matches!(e, crate::Error::Leaving { .. }) {
                        // Not a holder; the next round places past it.
                        self.peer_leaving(&holder.addr);
                    }
                    debug!(peer = %holder.addr, error = %e, "holder did not list its keys");
                    continue;
                }
            };
            let chunks: std::collections::HashSet<Id> = held.chunks.into_iter().collect();
            let stamps: HashMap<Id, Stamp> = held.manifests.into_iter().collect();
            for (key, kind) in run {
                let ok = match kind {
                    Held::Chunk if chunks.contains(key) => true,
                    Held::Chunk => self.push_chunk(holder, *key, pacer, report).await,
                    // Equal or higher stamp: theirs wins or is ours. A lower
                    // one (older, or a same-version tie it loses) gets ours.
                    Held::Manifest(mine)
                        if stamps.get(key).is_some_and(|theirs| theirs >= mine) =>
                    {
                        true
                    }
                    Held::Manifest(_) if expired.contains_key(key) && !stamps.contains_key(key) => {
                        true
                    }
                    Held::Manifest(_) => self.push_manifest(holder, *key, report).await,
                };
                if ok {
                    *confirmed.entry(*key).or_default() |= 1u32.checked_shl(i as u32).unwrap_or(0);
                }
            }
        }
        let mut expired_dropped = std::collections::HashSet::new();
        for (&key, &stamp) in &expired {
            if !confirmed_by_all(&key, &confirmed) {
                continue;
            }
            match self.disk(move |s| s.drop_tombstone(&key, &stamp)).await {
                Ok(true) => {
                    report.tombstones_expired += 1;
                    Counters::bump(&self.gc().tombstones_expired, 1);
                    expired_dropped.insert(key);
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(key = %key.short(), error = %e, "could not drop an expired tombstone")
                }
            }
        }
        let i_hold = !leaving && holders.iter().any(|h| h.addr == me);
        if i_hold {
            return;
        }
        // Not a holder: drop our copy of each key every holder confirmed,
        // holders as they are now, which may not be those asked (a run of
        // pushes takes a while): only a confirmation from a node in the
        // current view counts.
        let view = match self.holders(first, leaving).await {
            Ok(view) => view,
            Err(e) => {
                debug!(key = %first.short(), error = %e, "cannot place keys again; keeping them");
                Vec::new()
            }
        };
        let confirmed_by = |key: &Id, holder: &NodeRef| {
            let bits = confirmed.get(key).copied().unwrap_or(0);
            others
                .iter()
                .position(|o| o.addr == holder.addr)
                .is_some_and(|i| bits & 1u32.checked_shl(i as u32).unwrap_or(0) != 0)
        };
        for (key, kind) in run {
            if expired_dropped.contains(key) {
                continue;
            }
            if !may_drop(&view, self.me(), leaving, |h| confirmed_by(key, h)) {
                report.unconfirmed += 1;
                continue;
            }
            let key = *key;
            let dropped = match kind {
                Held::Chunk => self.disk(move |s| s.delete_chunk(&key)).await,
                Held::Manifest(_) => self.disk(move |s| s.delete_manifest(&key)).await,
            };
            match (dropped, kind) {
                (Ok(()), Held::Chunk) => report.chunks_dropped += 1,
                (Ok(()), Held::Manifest(_)) => report.manifests_dropped += 1,
                (Err(e), _) => {
                    warn!(key = %key.short(), error = %e, "could not drop a handed-off key")
                }
            }
        }
    }

    async fn push_chunk(
        &self,
        to: &NodeRef,
        key: Id,
        pacer: &mut Pacer,
        report: &mut RepairReport,
    ) -> bool {
        let chunk = match self.disk(move |s| s.read_chunk(&key)).await {
            Ok(chunk) => chunk,
            Err(e) => {
                // Corrupt (now quarantined) or gone: nothing of ours to push.
                debug!(key = %key.short(), error = %e, "cannot read chunk to push");
                return false;
            }
        };
        let len = chunk.data().len() as u64;
        // The copy keeps our copy's age: moving a chunk does not restart the
        // collector's grace period (see `crate::gc`).
        let age = self.store().chunk_age(&key).unwrap_or_default();
        match self.peers().put_chunk_aged(&to.addr, &chunk, 1, age).await {
            Ok(_) => {
                report.chunks_pushed += 1;
                report.bytes_pushed += len;
                Counters::bump(&self.counters.repair_bytes, len);
                Counters::bump(&self.counters.bytes_out, len);
                pacer.account(len).await;
                true
            }
            Err(e) => {
                if matches!(e, crate::Error::Leaving { .. }) {
                    self.peer_leaving(&to.addr);
                }
                debug!(peer = %to.addr, key = %key.short(), error = %e, "chunk push failed");
                false
            }
        }
    }

    async fn push_manifest(&self, to: &NodeRef, key: Id, report: &mut RepairReport) -> bool {
        let manifest: Option<Manifest> = match self.disk(move |s| s.get_manifest(&key)).await {
            Ok(m) => m,
            Err(e) => {
                debug!(key = %key.short(), error = %e, "cannot read manifest to push");
                return false;
            }
        };
        let Some(manifest) = manifest else {
            return false;
        };
        match self
            .peers()
            .put_manifest(&to.addr, &manifest, 1, true)
            .await
        {
            Ok(_) => {
                report.manifests_pushed += 1;
                true
            }
            Err(e) => {
                if matches!(e, crate::Error::Leaving { .. }) {
                    self.peer_leaving(&to.addr);
                }
                debug!(peer = %to.addr, error = %e, "manifest push failed");
                false
            }
        }
    }

    /// Re-hashes one repair interval's worth of chunk data (at
    /// `scrub_bytes_per_sec`), continuing where the previous round stopped;
    /// quarantines what does not match.
    async fn scrub(&self, cursor: &mut Id) -> RepairReport {
        let mut report = RepairReport::default();
        let from = *cursor;
        let per_round = (self.config().scrub_bytes_per_sec as f64
            * self.config().repair_interval.as_secs_f64()) as u64;
        let result = self
            .disk(move |s| {
                // At most one lap of the ring per round, a page of keys at
                // a time.
                let mut left = usize::try_from(s.stats().chunks).unwrap_or(usize::MAX);
                let mut budget = per_round.max(1);
                let mut corrupt = 0u64;
                let mut last = from;
                while budget > 0 && left > 0 {
                    let page = s.chunk_keys_after(&last, SCRUB_PAGE_KEYS.min(left))?;
                    if page.is_empty() {
                        break;
                    }
                    for key in page {
                        if budget == 0 {
                            break;
                        }
                        budget = budget.saturating_sub(s.chunk_len(&key).unwrap_or(0).max(1));
                        if let Err(crate::Error::Corrupt(_)) = s.verify_chunk(&key) {
                            corrupt += 1;
                        }
                        last = key;
                        left -= 1;
                    }
                }
                Ok((corrupt, last))
            })
            .await;
        match result {
            Ok((corrupt, last)) => {
                *cursor = last;
                if corrupt > 0 {
                    warn!(
                        corrupt,
                        "scrub found corrupt chunks; quarantined for repair"
                    );
                }
                report.corrupt_found = corrupt;
            }
            Err(e) => debug!(error = %e, "scrub failed"),
        }
        report
    }
}

/// When a hand-off may stop before every key is confirmed elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffMode {
    /// A plain shutdown (SIGTERM): the disk stays, so after
    /// `HANDOFF_STALL_ROUNDS` rounds that move nothing (the last node of
    /// a ring, a whole fleet stopping at once) the node stops trying.
    UntilStalled,
    /// A drain before the node is destroyed: only the deadline ends it.
    UntilConfirmed,
}

/// Hand-off rounds in a row that move nothing before a node that keeps its
/// disk stops trying (its remaining keys stay on disk).
const HANDOFF_STALL_ROUNDS: u32 = 4;
/// Pause between hand-off rounds: time for stabilize to settle a busy ring.
const HANDOFF_RETRY: Duration = Duration::from_millis(500);
/// How many chunk keys a scrub round takes from the index at a time, so
/// that a round holds the index's lock for one page, and lists one, however
/// many chunks the node holds.
const SCRUB_PAGE_KEYS: usize = 1024;
