//! The in-memory index of what the store holds: every chunk key with its
//! length, every manifest key with its version, and the running totals.
//!
//! It is a cache of the directories, rebuilt by a scan at open and updated by
//! the store right after each rename or removal it makes, so that range
//! queries (the repair loop asks for keys in an arc of the ring every round)
//! and statistics never walk the disk. The files stay the truth for content:
//! reads go to disk. Pure data; the caller holds the lock.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::manifest::Stamp;
use crate::chord::Id;

/// What the index remembers about one manifest file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ManifestEntry {
    pub version: u64,
    pub deleted: bool,
    /// Whole-file hash, the last part of the entry's [`Stamp`].
    pub sha256: [u8; 32],
    /// Size of the JSON file on disk.
    pub bytes: u64,
}

/// Totals of the store, as reported to the operator and to metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Chunk files held.
    pub chunks: u64,
    /// Live (not deleted) manifests held.
    pub manifests: u64,
    /// Tombstones held.
    pub tombstones: u64,
    /// Bytes of chunk files plus manifest files.
    pub bytes: u64,
    /// Chunk files in `quarantine/`: bytes that failed their check and wait
    /// for an operator (they are never deleted automatically).
    pub corrupt_chunks: u64,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    chunks: BTreeMap<Id, u64>,
    chunk_bytes: u64,
    manifests: BTreeMap<Id, ManifestEntry>,
    manifest_bytes: u64,
    tombstones: u64,
    corrupt_chunks: u64,
}

impl Index {
    /// Records a chunk file of `len` bytes (replacing any earlier record).
    pub fn insert_chunk(&mut self, key: Id, len: u64) {
        if let Some(old) = self.chunks.insert(key, len) {
            self.chunk_bytes -= old;
        }
        self.chunk_bytes += len;
    }

    pub fn remove_chunk(&mut self, key: &Id) {
        if let Some(old) = self.chunks.remove(key) {
            self.chunk_bytes -= old;
        }
    }

    pub fn count_corrupt_chunk(&mut self) {
        self.corrupt_chunks += 1;
    }

    pub fn insert_manifest(&mut self, key: Id, entry: ManifestEntry) {
        self.remove_manifest(&key);
        self.manifest_bytes += entry.bytes;
        self.tombstones += u64::from(entry.deleted);
        self.manifests.insert(key, entry);
    }

    pub fn remove_manifest(&mut self, key: &Id) {
        if let Some(old) = self.manifests.remove(key) {
            self.manifest_bytes -= old.bytes;
            self.tombstones -= u64::from(old.deleted);
        }
    }

    pub fn chunk_keys(&self) -> Vec<Id> {
        self.chunks.keys().copied().collect()
    }

    pub fn chunk_keys_in(&self, start: &Id, end: &Id) -> Vec<Id> {
        arc(&self.chunks, start, end).map(|(k, _)| *k).collect()
    }

    pub fn manifest_keys(&self) -> Vec<Id> {
        self.manifests.keys().copied().collect()
    }

    pub fn manifest_keys_in(&self, start: &Id, end: &Id) -> Vec<(Id, Stamp)> {
        arc(&self.manifests, start, end)
            .map(|(k, e)| {
                let stamp = Stamp {
                    version: e.version,
                    deleted: e.deleted,
                    sha256: e.sha256,
                };
                (*k, stamp)
            })
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let manifests = self.manifests.len() as u64;
        StoreStats {
            chunks: self.chunks.len() as u64,
            manifests: manifests - self.tombstones,
            tombstones: self.tombstones,
            bytes: self.chunk_bytes + self.manifest_bytes,
            corrupt_chunks: self.corrupt_chunks,
        }
    }
}

/// The entries whose keys lie in `(start, end]` on the circle, in clockwise
/// order from `start`. Equal ends mean the whole ring, as in
/// [`Id::in_half_open`].
fn arc<'a, V>(
    map: &'a BTreeMap<Id, V>,
    start: &Id,
    end: &Id,
) -> Box<dyn Iterator<Item = (&'a Id, &'a V)> + 'a> {
    let after_start = (Bound::Excluded(*start), Bound::Unbounded);
    if start < end {
        Box::new(map.range((Bound::Excluded(*start), Bound::Included(*end))))
    } else if start == end {
        // Whole ring, still clockwise from start: (start, MAX] then [0, start].
        Box::new(map.range(after_start).chain(map.range(..=*start)))
    } else {
        // Wraps past zero: (start, MAX] then [0, end].
        Box::new(map.range(after_start).chain(map.range(..=*end)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::chord::ID_BYTES;

    fn id(last: u8) -> Id {
        let mut b = [0u8; ID_BYTES];
        b[ID_BYTES - 1] = last;
        Id::from_array(b)
    }

    #[test]
    fn arcs_match_in_half_open_with_wrap() {
        let mut index = Index::default();
        let keys = [0u8, 1, 5, 10, 100, 200, 255];
        for k in keys {
            index.insert_chunk(id(k), 1);
        }
        index.insert_chunk(Id::MAX, 1);
        let all = index.chunk_keys();
        // (start, end, expected in clockwise order)
        let cases: &[(Id, Id, Vec<Id>)] = &[
            (id(1), id(10), vec![id(5), id(10)]),
            (id(0), id(0), {
                let mut v: Vec<Id> = all.iter().copied().filter(|k| *k > id(0)).collect();
                v.push(id(0));
                v
            }),
            (id(200), id(5), vec![id(255), Id::MAX, id(0), id(1), id(5)]),
            (Id::MAX, id(0), vec![id(0)]),
            (id(6), id(9), vec![]),
            (id(10), id(10), {
                let mut v: Vec<Id> = all.iter().copied().filter(|k| *k > id(10)).collect();
                v.extend(all.iter().copied().filter(|k| *k <= id(10)));
                v
            }),
        ];
        for (start, end, expected) in cases {
            let got = index.chunk_keys_in(start, end);
            assert_eq!(&got, expected, "({start}, {end}]");
            let mut filtered: Vec<Id> = all
                .iter()
                .copied()
                .filter(|k| k.in_half_open(start, end))
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            filtered.sort();
            assert_eq!(sorted, filtered, "agrees with in_half_open");
        }
    }

    #[test]
    fn totals_follow_inserts_and_removals() {
        let mut index = Index::default();
        index.insert_chunk(id(1), 10);
        index.insert_chunk(id(1), 12); // rewritten: replaces, not adds
        index.insert_chunk(id(2), 5);
        index.remove_chunk(&id(2));
        index.remove_chunk(&id(9)); // absent: no effect
        let live = ManifestEntry {
            version: 1,
            deleted: false,
            sha256: [0; 32],
            bytes: 100,
        };
        let tomb = ManifestEntry {
            version: 2,
            deleted: true,
            sha256: [0; 32],
            bytes: 50,
        };
        index.insert_manifest(id(3), live);
        index.insert_manifest(id(4), live);
        index.insert_manifest(id(3), tomb);
        index.count_corrupt_chunk();
        assert_eq!(
            index.stats(),
            StoreStats {
                chunks: 1,
                manifests: 1,
                tombstones: 1,
                bytes: 12 + 150,
                corrupt_chunks: 1
            }
        );
        let found = index.manifest_keys_in(&id(0), &id(3));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.version), (id(3), 2));
        index.remove_manifest(&id(3));
        assert_eq!(index.stats().tombstones, 0);
        assert_eq!(index.stats().bytes, 112);
    }
}
