//! Getting space back across the ring: the chunk collector, and what a node
//! does when it returns after an absence longer than the tombstone grace.
//!
//! **Collection** is mark and sweep, run by every node over its own chunks.
//! A round:
//! 1. takes the chunks held here that no live manifest held here names and
//!    that nobody wrote or asked for during the grace period (the
//!    candidates);
//! 2. walks the ring and requires it settled: every node serving, each
//!    one's predecessor the node before it in the walk;
//! 3. asks every node which candidates a live manifest it holds names
//!    (`Referenced`); one node that does not answer, or answers that it is
//!    still syncing, ends the round with nothing removed;
//! 4. walks the ring again and requires the same members, so no manifest
//!    moved between nodes while it asked;
//! 5. removes the candidates nobody named, each re-checked under its lock,
//!    at most `gc_chunks_per_sec`, and only while the round is younger than
//!    half the grace period.
//!
//! Why a manifest written during a round cannot lose its chunks: before a
//! manifest is stored, its chunks are checked with `HasChunks`, which
//! touches them, and that check must finish within half the grace period
//! (`put_manifest_primary`). A manifest the round missed was stored after
//! the round began, so its chunks were touched after the round began minus
//! half the grace; they are not old enough to be removed before the round
//! ends at its start plus half the grace. An upload's chunks are written
//! (touched) before its manifest, so the same holds for an upload in
//! progress as long as it takes less than the grace period. A repair push
//! carries the chunk's age, so moving a chunk does not make it young, and a
//! restart counts every chunk as touched at open.
//!
//! **Tombstones** expire in the repair loop (`crate::repair`): once older
//! than the tombstone grace and held by every current holder (or by none:
//! an expired tombstone is only pushed to a holder whose live version it
//! must replace), a holder drops its copy.
//!
//! **A long absence.** A node keeps in `alive.json` when it was last in a
//! ring. Coming back after longer than the tombstone grace, it sets its live
//! manifests aside (`suspect/`) before it serves, and settles each with the
//! file's other holders:
//! - a holder has the same or a newer version: ours is dropped;
//! - a holder has an older version: ours is restored, and repair spreads it;
//! - no holder has the file, and one of them has been in the ring since
//!   before we left: the file was deleted while we were away and its
//!   tombstone has expired, so ours is dropped;
//! - otherwise (the whole ring was down, or we are alone): ours is restored.
//!
//! While any manifest is set aside the node refuses `Referenced`, so no
//! collection runs anywhere until its files count again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tracing::{debug, info, warn};

use crate::chord::{Id, NodeRef};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::node::{Counters, Node};
use crate::now_ms;
use crate::peer::{NodeState, PeerInfo};
use crate::server::MAX_KEYS_PER_CALL;
use crate::store::{AliveClock, Manifest, Store};

/// Peers asked at once during a round's mark phase.
const MARK_PARALLELISM: usize = 8;
/// How often `alive.json` is rewritten while the node runs.
const CLOCK_EVERY: Duration = Duration::from_secs(5);

/// The collector's counters and the node's absence state.
#[derive(Debug, Default)]
pub struct GcState {
    /// Chunk bytes removed since the node started.
    pub collected_bytes: AtomicU64,
    /// Unreferenced, old chunk bytes the last round found and left.
    pub collectable_bytes: AtomicU64,
    /// Tombstones dropped after the tombstone grace since the node started.
    pub tombstones_expired: AtomicU64,
    /// Since when this data dir has been in the ring (see [`AliveClock`]).
    alive_since_ms: AtomicU64,
    /// When the node was last in a ring before a long absence (0: none).
    away_from_ms: AtomicU64,
    /// Manifests are set aside, waiting to be settled with the ring.
    syncing: AtomicBool,
}

impl GcState {
    pub fn alive_since_ms(&self) -> u64 {
        self.alive_since_ms.load(Ordering::Relaxed)
    }

    pub fn is_syncing(&self) -> bool {
        self.syncing.load(Ordering::Acquire)
    }
}

/// What one collection round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Chunks that were old and unreferenced here.
    pub candidates: u64,
    /// Of those, the ones no node named.
    pub garbage: u64,
    pub chunks_removed: u64,
    pub bytes_removed: u64,
    /// Garbage bytes left for a later round.
    pub bytes_left: u64,
}

/// What the sync after a long absence did with the manifests set aside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Ours was the newest: stored again.
    pub restored: u64,
    /// A holder had the same or a newer version: ours dropped (repair
    /// brings theirs).
    pub superseded: u64,
    /// Deleted while we were away, the tombstone since expired: dropped.
    pub deleted: u64,
    /// Not settled yet: no holder could be asked.
    pub pending: u64,
}

/// How a manifest set aside is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Restore,
    /// The ring has the same or a newer version.
    Superseded,
    /// The file was deleted while we were away.
    Deleted,
    Undecided,
}

/// One other holder's answer about a manifest set aside.
#[derive(Clone, Debug)]
struct HolderAnswer {
    record: Option<Manifest>,
    alive_since_ms: u64,
}

/// The rule of the module docs, pure: what to do with `ours`, set aside
/// since `away_from_ms`, given what the other holders said (`None`: did not
/// answer).
fn settle(ours: &Manifest, away_from_ms: u64, answers: &[Option<HolderAnswer>]) -> Verdict {
    let answered: Vec<&HolderAnswer> = answers.iter().flatten().collect();
    if answered
        .iter()
        .any(|a| a.record.as_ref().is_some_and(|m| m.stamp() >= ours.stamp()))
    {
        return Verdict::Superseded;
    }
    if answered.iter().any(|a| a.record.is_some()) {
        return Verdict::Restore;
    }
    if answered.iter().any(|a| a.alive_since_ms <= away_from_ms) {
        return Verdict::Deleted;
    }
    if answers.is_empty() || answered.len() == answers.len() {
        // Alone, or every holder came back with us: nobody saw a delete.
        return Verdict::Restore;
    }
    Verdict::Undecided
}

impl Node {
    /// The collector's counters and the absence state.
    pub fn gc(&self) -> &GcState {
        &self.gc
    }

    /// Reads `alive.json` before the node serves. After an absence longer
    /// than the tombstone grace, sets the live manifests aside for the sync;
    /// a sync a crash interrupted carries on.
    pub async fn open_alive_clock(&self) -> Result<()> {
        let grace_ms = millis(self.config().tombstone_grace);
        let (clock, set_aside, syncing) = self
            .disk(move |s| {
                let (clock, set_aside) = open_clock(s, grace_ms, now_ms())?;
                Ok((clock, set_aside, s.has_suspects()))
            })
            .await?;
        self.gc
            .alive_since_ms
            .store(clock.since_ms, Ordering::Relaxed);
        self.gc.away_from_ms.store(clock.away_ms, Ordering::Relaxed);
        self.gc.syncing.store(syncing, Ordering::Release);
        if set_aside > 0 {
            let away = Duration::from_millis(now_ms().saturating_sub(clock.away_ms));
            warn!(
                manifests = set_aside,
                away_secs = away.as_secs(),
                "back after longer than the tombstone grace: files set aside until the ring confirms them"
            );
            self.events().record(
                EventKind::Synced,
                None,
                set_aside as u64,
                0,
                format!(
                    "away {}s, longer than the tombstone grace: {set_aside} files set aside until their holders confirm them",
                    away.as_secs()
                ),
            );
        }
        Ok(())
    }

    /// Runs collection rounds (and the sync, while one is due) until
    /// `cancel` fires; keeps `alive.json` current.
    pub async fn collect_loop(&self, cancel: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(self.config().gc_interval.min(CLOCK_EVERY));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_round = Instant::now() + self.config().gc_interval;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.touch_alive_clock().await;
            if self.is_leaving() || self.is_idle() {
                continue;
            }
            if self.gc.is_syncing() {
                let work = self.sync_after_absence();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = work => match r {
                        Ok(report) => debug!(?report, "sync after absence"),
                        Err(e) => debug!(error = %e, "sync after absence failed"),
                    },
                }
                continue;
            }
            if Instant::now() < next_round {
                continue;
            }
            next_round = Instant::now() + self.config().gc_interval;
            let round = self.collect_round();
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = round => r,
            };
            match result {
                Ok(r) if r.chunks_removed > 0 => {
                    info!(?r, "collection round");
                    self.events().record(
                        EventKind::Collected,
                        None,
                        r.chunks_removed,
                        r.bytes_removed,
                        format!(
                            "removed {} chunks no file names ({} bytes){}",
                            r.chunks_removed,
                            r.bytes_removed,
                            if r.bytes_left > 0 {
                                format!(", {} bytes left for the next round", r.bytes_left)
                            } else {
                                String::new()
                            }
                        ),
                    );
                }
                Ok(r) => debug!(?r, "collection round"),
                Err(e) => debug!(error = %e, "collection round skipped"),
            }
        }
    }

    async fn touch_alive_clock(&self) {
        let since_ms = self.gc.alive_since_ms();
        let away_ms = self.gc.away_from_ms.load(Ordering::Relaxed);
        let clock = AliveClock {
            since_ms,
            last_ms: now_ms(),
            away_ms,
        };
        if let Err(e) = self.disk(move |s| s.save_alive_clock(&clock)).await {
            warn!(error = %e, "cannot record that the node is alive");
        }
    }

    /// One collection round (see the module docs).
    pub async fn collect_round(&self) -> Result<CollectReport> {
        let grace = self.config().gc_grace;
        let budget = grace / 2;
        let started = Instant::now();
        let candidates = self.disk(move |s| Ok(s.collect_candidates(grace))).await?;
        let mut report = CollectReport {
            candidates: candidates.len() as u64,
            ..CollectReport::default()
        };
        if candidates.is_empty() {
            self.gc.collectable_bytes.store(0, Ordering::Relaxed);
            return Ok(report);
        }
        let before = self.settled_ring().await?;
        let keys: Vec<Id> = candidates.iter().map(|(k, _)| *k).collect();
        let named = self.named_anywhere(&before, &keys).await?;
        let after = self.settled_ring().await?;
        if before != after {
            return Err(Error::Unavailable(
                "the ring changed while the collector asked it".into(),
            ));
        }
        let garbage: Vec<(Id, u64)> = candidates
            .into_iter()
            .filter(|(k, _)| !named.contains(k))
            .collect();
        report.garbage = garbage.len() as u64;
        let mut left: u64 = garbage.iter().map(|(_, len)| len).sum();
        let per_chunk = Duration::from_secs_f64(1.0 / self.config().gc_chunks_per_sec as f64);
        for (key, len) in garbage {
            if started.elapsed() >= budget {
                break;
            }
            match self.disk(move |s| s.collect_chunk(&key, grace)).await {
                Ok(Some(bytes)) => {
                    report.chunks_removed += 1;
                    report.bytes_removed += bytes;
                    left = left.saturating_sub(len);
                    Counters::bump(&self.gc.collected_bytes, bytes);
                    tokio::time::sleep(per_chunk).await;
                }
                // Touched or named here since the candidates were taken:
                // kept, and no longer garbage.
                Ok(None) => left = left.saturating_sub(len),
                Err(e) => warn!(key = %key.short(), error = %e, "could not collect a chunk"),
            }
        }
        report.bytes_left = left;
        self.gc.collectable_bytes.store(left, Ordering::Relaxed);
        Ok(report)
    }

    /// The ring's members in order, if it is settled: every node serving,
    /// each one's predecessor the node before it and its first successor the
    /// node after it. An error otherwise.
    async fn settled_ring(&self) -> Result<Vec<NodeRef>> {
        let infos = self.peers().walk_ring(self.info()).await;
        check_settled(&infos)?;
        Ok(infos.into_iter().map(|i| i.node).collect())
    }

    /// The keys among `keys` that a live manifest on any of `members` names.
    async fn named_anywhere(&self, members: &[NodeRef], keys: &[Id]) -> Result<HashSet<Id>> {
        let mut named: HashSet<Id> = HashSet::new();
        let local = self.store().referenced(keys);
        named.extend(keys.iter().zip(local).filter(|(_, n)| *n).map(|(k, _)| *k));
        let asks: Vec<_> = members
            .iter()
            .filter(|m| m.addr != self.me().addr)
            .map(|peer| self.named_by(peer.addr.clone(), keys))
            .collect();
        let answers: Vec<Result<Vec<Id>>> = stream::iter(asks)
            .buffer_unordered(MARK_PARALLELISM)
            .collect()
            .await;
        for answer in answers {
            named.extend(answer?);
        }
        Ok(named)
    }

    /// The keys among `keys` that a live manifest held at `addr` names.
    async fn named_by(&self, addr: String, keys: &[Id]) -> Result<Vec<Id>> {
        let mut found = Vec::new();
        for batch in keys.chunks(MAX_KEYS_PER_CALL) {
            let flags = self.peers().referenced(&addr, batch).await?;
            found.extend(batch.iter().zip(flags).filter(|(_, n)| *n).map(|(k, _)| *k));
        }
        Ok(found)
    }

    /// What the holder at `addr` has of `name`, and since when it has been
    /// in the ring; `None` if it does not answer.
    async fn holder_answer(&self, addr: String, name: String) -> Option<HolderAnswer> {
        let info = self.peers().get_info(&addr).await.ok()?;
        let record = self.peers().get_manifest(&addr, &name).await.ok()?;
        Some(HolderAnswer {
            record,
            alive_since_ms: info.alive_since_ms,
        })
    }

    /// Settles the manifests set aside after a long absence, as far as the
    /// holders answer; clears the syncing state once none is left.
    pub async fn sync_after_absence(&self) -> Result<SyncReport> {
        let suspects = self.disk(|s| s.suspects()).await?;
        let away_from_ms = self.gc.away_from_ms.load(Ordering::Relaxed);
        let mut report = SyncReport::default();
        for ours in suspects {
            let holders = self.replica_set(ours.key(), self.replicas()).await?;
            let asks: Vec<_> = holders
                .iter()
                .filter(|h| h.addr != self.me().addr)
                .map(|h| self.holder_answer(h.addr.clone(), ours.name.clone()))
                .collect();
            let answers = futures::future::join_all(asks).await;
            let verdict = settle(&ours, away_from_ms, &answers);
            if verdict == Verdict::Undecided {
                report.pending += 1;
                continue;
            }
            let keep = verdict == Verdict::Restore;
            let m = ours.clone();
            self.disk(move |s| s.settle_suspect(&m, keep)).await?;
            match verdict {
                Verdict::Restore => report.restored += 1,
                Verdict::Superseded => report.superseded += 1,
                _ => {
                    info!(file = %ours.name, "dropped a file deleted while this node was away");
                    report.deleted += 1;
                }
            }
        }
        if report.pending == 0 {
            self.gc.syncing.store(false, Ordering::Release);
            info!(?report, "files set aside after the absence are settled");
            self.events().record(
                EventKind::Synced,
                None,
                report.restored + report.superseded + report.deleted,
                0,
                format!(
                    "in sync with the ring: {} files kept, {} newer on the ring, {} deleted while away",
                    report.restored, report.superseded, report.deleted
                ),
            );
        }
        Ok(report)
    }
}

/// Reads and updates the clock at open, setting manifests aside after an
/// absence longer than `grace_ms`. Returns the clock now in force and how
/// many manifests were set aside.
fn open_clock(store: &Store, grace_ms: u64, now_ms: u64) -> Result<(AliveClock, usize)> {
    let (clock, long_absence) = match store.alive_clock() {
        Some(old) if now_ms.saturating_sub(old.last_ms) > grace_ms => {
            let clock = AliveClock {
                since_ms: now_ms,
                last_ms: now_ms,
                away_ms: old.last_ms,
            };
            (clock, true)
        }
        Some(old) => {
            let clock = AliveClock {
                last_ms: now_ms,
                ..old
            };
            (clock, false)
        }
        // A new data dir, or one from before the clock existed: it counts
        // as having joined now, which never makes another node drop a file.
        None => {
            let clock = AliveClock {
                since_ms: now_ms,
                last_ms: now_ms,
                away_ms: 0,
            };
            (clock, false)
        }
    };
    let set_aside = if long_absence {
        store.set_aside_live_manifests()?
    } else {
        0
    };
    store.save_alive_clock(&clock)?;
    Ok((clock, set_aside))
}

/// Whether a ring walk shows a settled ring (see [`Node::settled_ring`]).
fn check_settled(infos: &[PeerInfo]) -> Result<()> {
    let n = infos.len();
    for (i, info) in infos.iter().enumerate() {
        if info.state != NodeState::Serving {
            return Err(Error::Unavailable(format!(
                "{} is {:?}; collection waits for a settled ring",
                info.node.addr, info.state
            )));
        }
        if n == 1 {
            break;
        }
        let next = &infos[(i + 1) % n];
        let prev = &infos[(i + n - 1) % n];
        let links = info.successors.first().map(|s| &s.addr) == Some(&next.node.addr)
            && info.predecessor.as_ref().map(|p| &p.addr) == Some(&prev.node.addr);
        if !links {
            return Err(Error::Unavailable(format!(
                "{} does not link to its walk neighbours; collection waits for a settled ring",
                info.node.addr
            )));
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn live(version: u64) -> Manifest {
        let mut m = Manifest::tombstone("f", version, version);
        m.deleted = false;
        m
    }

    fn says(record: Option<Manifest>, alive_since_ms: u64) -> Option<HolderAnswer> {
        Some(HolderAnswer {
            record,
            alive_since_ms,
        })
    }

    #[test]
    fn a_file_set_aside_is_settled_by_the_rule() {
        let ours = live(10);
        let away = 1_000;
        let tomb = Manifest::tombstone("f", 11, 11);
        let cases: &[(&str, Vec<Option<HolderAnswer>>, Verdict)] = &[
            ("alone", vec![], Verdict::Restore),
            (
                "newer tombstone",
                vec![says(Some(tomb), 5_000)],
                Verdict::Superseded,
            ),
            (
                "same version",
                vec![None, says(Some(live(10)), 5_000)],
                Verdict::Superseded,
            ),
            (
                "older version",
                vec![says(Some(live(9)), 500)],
                Verdict::Restore,
            ),
            (
                "deleted while away: an old-timer has nothing",
                vec![says(None, 5_000), says(None, 900)],
                Verdict::Deleted,
            ),
            (
                "whole ring came back: nobody saw a delete",
                vec![says(None, 5_000), says(None, 6_000)],
                Verdict::Restore,
            ),
            (
                "newcomers only, one silent: wait",
                vec![says(None, 5_000), None],
                Verdict::Undecided,
            ),
            ("nobody answers: wait", vec![None, None], Verdict::Undecided),
        ];
        for (what, answers, want) in cases {
            assert_eq!(settle(&ours, away, answers), *want, "{what}");
        }
    }

    #[test]
    fn the_clock_sets_files_aside_only_after_a_long_absence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut m = live(1);
        m.modified_ms = 1;
        store.put_manifest(&m).unwrap();
        // First open: no clock yet, nothing set aside.
        let (clock, aside) = open_clock(&store, 100, 1_000).unwrap();
        assert_eq!((clock.since_ms, clock.away_ms, aside), (1_000, 0, 0));
        // Short absence: the ring membership carries on.
        let (clock, aside) = open_clock(&store, 100, 1_050).unwrap();
        assert_eq!((clock.since_ms, clock.last_ms, aside), (1_000, 1_050, 0));
        // Long absence: files set aside, membership starts again.
        let (clock, aside) = open_clock(&store, 100, 2_000).unwrap();
        assert_eq!((clock.since_ms, clock.away_ms, aside), (2_000, 1_050, 1));
        assert!(store.has_suspects());
        assert_eq!(store.stats().manifests, 0);
    }

    fn info(addr: &str, pred: &str, succ: &str, state: NodeState) -> PeerInfo {
        PeerInfo {
            node: NodeRef::from_addr(addr.to_string()),
            predecessor: Some(NodeRef::from_addr(pred.to_string())),
            successors: vec![NodeRef::from_addr(succ.to_string())],
            uptime_secs: 0,
            replicas: 3,
            state,
            alive_since_ms: 0,
        }
    }

    #[test]
    fn only_a_settled_walk_lets_a_round_go_on() {
        use NodeState::*;
        let ring = |s: NodeState| {
            vec![
                info("a:1", "c:1", "b:1", Serving),
                info("b:1", "a:1", "c:1", s),
                info("c:1", "b:1", "a:1", Serving),
            ]
        };
        assert!(check_settled(&ring(Serving)).is_ok());
        assert!(check_settled(&ring(Joining)).is_err());
        assert!(check_settled(&ring(Leaving)).is_err());
        // b's predecessor is not yet a: a node joined between them.
        let mut joined = ring(Serving);
        joined[1].predecessor = Some(NodeRef::from_addr("x:1".to_string()));
        assert!(check_settled(&joined).is_err());
        // The walk skipped a dead node: a's successor is not the next one.
        let mut skipped = ring(Serving);
        skipped[0].successors = vec![NodeRef::from_addr("dead:1".to_string())];
        assert!(check_settled(&skipped).is_err());
        assert!(check_settled(&[info("a:1", "a:1", "a:1", Serving)]).is_ok());
    }
}
