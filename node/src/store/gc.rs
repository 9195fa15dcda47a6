//! The store's side of getting space back: chunk ages and references for the
//! collector, tombstone expiry, and what a node keeps across an absence.
//!
//! The ring-level rules (who may collect what, and when) are in
//! `crate::gc`; everything here is a local check made under the key's lock,
//! so a chunk written, asked for or named by a new manifest while the
//! collector decides is never removed:
//! - a chunk is collected only if no live manifest held here names it and
//!   it was last touched (written, or asked for by `HasChunks`) at least the
//!   grace period ago, both re-checked under its lock;
//! - a tombstone is dropped only if it is still the stored version;
//! - manifests set aside after a long absence (`suspect/`) stay on disk
//!   until each is restored or discarded by the sync.

use std::fs;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chunks::touched_ago;
use super::disk::{self, MANIFEST_EXT};
use super::manifests::MAX_MANIFEST_BYTES;
use super::{Manifest, Stamp, Store};
use crate::chord::Id;
use crate::error::{Error, Result};

/// When this data dir last took part in a ring, kept in `alive.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliveClock {
    /// Since when it has been in a ring with no absence longer than the
    /// tombstone grace (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// When it was last seen running.
    pub last_ms: u64,
    /// When it was last seen before its latest absence longer than the
    /// tombstone grace (0: none).
    #[serde(default)]
    pub away_ms: u64,
}

impl Store {
    /// For each key, whether the chunk is held; each held one counts as
    /// touched now, restarting its grace period.
    pub fn touch_chunks(&self, keys: &[Id]) -> Vec<bool> {
        let now = touched_ago(Duration::ZERO);
        keys.iter()
            .map(|k| {
                // Under the key's lock: a collection either removed the chunk
                // before (and this says absent) or sees the touch.
                let _guard = self.key_lock(k);
                self.index().touch(k, now)
            })
            .collect()
    }

    /// For each key, whether a live manifest held here names it.
    pub fn referenced(&self, keys: &[Id]) -> Vec<bool> {
        let index = self.index();
        keys.iter().map(|k| index.is_referenced(k)).collect()
    }

    /// How long ago chunk `key` was last written or asked for, if held.
    pub fn chunk_age(&self, key: &Id) -> Option<Duration> {
        self.index().chunk_age(key, touched_ago(Duration::ZERO))
    }

    /// Chunks (with lengths) untouched for `grace` that no live manifest
    /// held here names: the candidates the collector asks the ring about.
    pub fn collect_candidates(&self, grace: Duration) -> Vec<(Id, u64)> {
        self.index()
            .unreferenced_older_than(grace, touched_ago(Duration::ZERO))
    }

    /// Removes chunk `key` if, under its lock, it is still unreferenced here
    /// and untouched for `grace`. Returns the bytes freed (`None`: kept).
    pub fn collect_chunk(&self, key: &Id, grace: Duration) -> Result<Option<u64>> {
        let path = self.layout().chunk_path(key);
        let _guard = self.key_lock(key);
        let len = {
            let index = self.index();
            let old_enough = index
                .chunk_age(key, touched_ago(Duration::ZERO))
                .is_some_and(|age| age >= grace);
            match index.chunk_len(key) {
                Some(len) if old_enough && !index.is_referenced(key) => len,
                _ => return Ok(None),
            }
        };
        disk::remove_durably(&path, &format!("chunk {key}"))?;
        self.index().remove_chunk(key);
        Ok(Some(len))
    }

    /// Whether the manifest under `key` is a tombstone written more than
    /// `grace_ms` before `now_ms`.
    pub fn is_expired_tombstone(&self, key: &Id, grace_ms: u64, now_ms: u64) -> bool {
        self.index()
            .tombstone_written_ms(key)
            .is_some_and(|at| now_ms.saturating_sub(at) > grace_ms)
    }

    /// Removes the tombstone under `key` if `stamp` is still the stored
    /// version (a newer write in between keeps it). Returns whether it went.
    pub fn drop_tombstone(&self, key: &Id, stamp: &Stamp) -> Result<bool> {
        let _guard = self.key_lock(key);
        if self.index().manifest_stamp(key).as_ref() != Some(stamp) || !stamp.deleted {
            return Ok(false);
        }
        self.log().remove(key)?;
        self.index().remove_manifest(key);
        Ok(true)
    }

    /// Moves every live manifest to `suspect/`, out of the index: after an
    /// absence longer than the tombstone grace, some of them may have been
    /// deleted meanwhile with their tombstones since expired. Returns how
    /// many were set aside.
    pub fn set_aside_live_manifests(&self) -> Result<usize> {
        let mut moved = 0;
        for listed in self.manifests()? {
            let key = listed.key();
            let _guard = self.key_lock(&key);
            // Read again under the lock: a write may have come in between.
            let Some(m) = self.load_manifest(&key)?.filter(|m| !m.deleted) else {
                continue;
            };
            let json = serde_json::to_vec(&m)
                .map_err(|e| Error::io(format!("encoding manifest {key}"), io::Error::other(e)))?;
            self.layout().write_durably(
                "suspect",
                &key,
                &self.layout().suspect_path(&key),
                &json,
            )?;
            self.log().remove(&key)?;
            self.index().remove_manifest(&key);
            moved += 1;
        }
        Ok(moved)
    }

    /// The manifests set aside and not yet settled. Files that do not parse
    /// are left where they are and skipped, with a warning.
    pub fn suspects(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for entry in disk::read_dir(&self.layout().suspect)? {
            let path = entry.path();
            let named = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(MANIFEST_EXT));
            if !named {
                continue;
            }
            let parsed = disk::read_capped(&path, MAX_MANIFEST_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(m) if path == self.layout().suspect_path(&m.key()) => out.push(m),
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "suspect manifest under the wrong name, left alone")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable suspect manifest, left alone")
                }
            }
        }
        Ok(out)
    }

    /// Whether any manifest set aside is still unsettled.
    pub fn has_suspects(&self) -> bool {
        self.suspects().is_ok_and(|s| !s.is_empty())
    }

    /// Settles a manifest set aside: `keep` stores it again (if it still
    /// supersedes what is stored), otherwise it is discarded.
    pub fn settle_suspect(&self, m: &Manifest, keep: bool) -> Result<()> {
        if keep {
            self.put_manifest(m)?;
        }
        let path = self.layout().suspect_path(&m.key());
        disk::remove_durably(&path, &format!("set-aside manifest {}", m.key()))
    }

    /// The clock kept in `alive.json`, if there is a readable one.
    pub fn alive_clock(&self) -> Option<AliveClock> {
        let bytes = fs::read(&self.layout().clock).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes `clock` to `alive.json`, durably.
    pub fn save_alive_clock(&self, clock: &AliveClock) -> Result<()> {
        let json = serde_json::to_vec(clock)
            .map_err(|e| Error::io("encoding the alive clock", io::Error::other(e)))?;
        self.layout()
            .write_durably("clock", &Id::ZERO, &self.layout().clock, &json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use bytes::Bytes;

    use super::super::tests::open_temp;
    use super::super::CheckedChunk;
    use super::*;

    fn file(name: &str, chunks: &[Id], version: u64) -> Manifest {
        let mut m = Manifest::tombstone(name, version, version);
        m.deleted = false;
        m.chunks = chunks.to_vec();
        m.chunk_size = 4;
        m.size = 4 * chunks.len() as u64;
        m
    }

    #[test]
    fn only_old_unreferenced_chunks_are_collected() {
        let (_dir, store) = open_temp();
        let a = Id::hash(b"aaaa");
        let b = Id::hash(b"bbbb");
        store.put_chunk(&a, b"aaaa").unwrap();
        store.put_chunk(&b, b"bbbb").unwrap();
        store.put_manifest(&file("f", &[a], 1)).unwrap();
        // Young: nothing is a candidate yet.
        assert!(store.collect_candidates(Duration::from_secs(60)).is_empty());
        // With no grace, only the chunk no manifest names.
        assert_eq!(store.collect_candidates(Duration::ZERO), vec![(b, 4)]);
        assert_eq!(store.referenced(&[a, b]), vec![true, false]);
        assert_eq!(store.collect_chunk(&a, Duration::ZERO).unwrap(), None);
        assert_eq!(store.collect_chunk(&b, Duration::ZERO).unwrap(), Some(4));
        assert!(!store.has_chunk(&b));
        assert_eq!(store.collect_chunk(&b, Duration::ZERO).unwrap(), None);
        // A touch makes a chunk young again.
        store
            .put_checked_chunk(
                &CheckedChunk::new(b, Bytes::from_static(b"bbbb")).unwrap(),
                Duration::from_secs(120),
            )
            .unwrap();
        assert!(store.chunk_age(&b).unwrap() >= Duration::from_secs(120));
        assert_eq!(store.touch_chunks(&[b, Id::MAX]), vec![true, false]);
        assert_eq!(
            store.collect_chunk(&b, Duration::from_secs(60)).unwrap(),
            None
        );
        // Deleting the file frees its chunk.
        let mut gone = Manifest::tombstone("f", 2, 2);
        gone.modified_ms = 2;
        store.put_manifest(&gone).unwrap();
        assert_eq!(store.collect_chunk(&a, Duration::ZERO).unwrap(), Some(4));
    }

    #[test]
    fn tombstones_expire_only_as_the_stored_version() {
        let (_dir, store) = open_temp();
        let t = Manifest::tombstone("f", 5, 1_000);
        store.put_manifest(&t).unwrap();
        assert!(!store.is_expired_tombstone(&t.key(), 500, 1_200));
        assert!(store.is_expired_tombstone(&t.key(), 500, 2_000));
        // A newer version written meanwhile is not dropped.
        store.put_manifest(&file("f", &[], 6)).unwrap();
        assert!(!store.is_expired_tombstone(&t.key(), 500, 2_000));
        assert!(!store.drop_tombstone(&t.key(), &t.stamp()).unwrap());
        assert!(store.get_manifest(&t.key()).unwrap().is_some());
        let t2 = Manifest::tombstone("f", 7, 1_000);
        store.put_manifest(&t2).unwrap();
        assert!(store.drop_tombstone(&t2.key(), &t2.stamp()).unwrap());
        assert!(store.get_manifest(&t2.key()).unwrap().is_none());
        assert_eq!(store.stats().tombstones, 0);
    }

    #[test]
    fn suspects_are_set_aside_and_settled() {
        let (_dir, store) = open_temp();
        let a = Id::hash(b"aaaa");
        store.put_chunk(&a, b"aaaa").unwrap();
        store.put_manifest(&file("keep", &[a], 1)).unwrap();
        store.put_manifest(&file("drop", &[a], 1)).unwrap();
        store
            .put_manifest(&Manifest::tombstone("gone", 1, 1))
            .unwrap();
        assert_eq!(store.set_aside_live_manifests().unwrap(), 2);
        // Set aside: not served, not counted as references.
        assert_eq!(store.stats().manifests, 0);
        assert_eq!(store.stats().tombstones, 1);
        assert_eq!(store.referenced(&[a]), vec![false]);
        let suspects = store.suspects().unwrap();
        assert_eq!(suspects.len(), 2);
        assert!(store.has_suspects());
        for m in &suspects {
            store.settle_suspect(m, m.name == "keep").unwrap();
        }
        assert!(!store.has_suspects());
        assert_eq!(store.stats().manifests, 1);
        assert_eq!(store.referenced(&[a]), vec![true]);
    }

    #[test]
    fn the_alive_clock_round_trips() {
        let (_dir, store) = open_temp();
        assert_eq!(store.alive_clock(), None);
        let clock = AliveClock {
            since_ms: 10,
            last_ms: 20,
            away_ms: 5,
        };
        store.save_alive_clock(&clock).unwrap();
        assert_eq!(store.alive_clock(), Some(clock));
    }
}
