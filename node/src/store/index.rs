//! The in-memory index of what the store holds: every chunk key with its
//! length and when it was last written or asked for, every manifest key with
//! its version and the chunks it names, how many live manifests name each
//! chunk, and the running totals.
//!
//! It is a cache of the chunk directories and the manifest log, rebuilt by a
//! scan at open and updated by the store right after each rename, removal or
//! append it makes, so that range queries (the repair loop asks for keys in
//! an arc of the ring every round) and statistics never walk the disk. The
//! disk stays the truth for content: reads go to it. Pure data; the caller holds the lock.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::checksum::Checksum;
use super::manifest::{Manifest, Stamp};
use crate::chord::Id;

/// What the index remembers about one manifest: 64 bytes, which with its
/// key and the tree's nodes is most of a node's memory per small file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ManifestEntry {
    pub version: u64,
    pub deleted: bool,
    /// Whole-file hash, the last part of the entry's [`Stamp`].
    pub checksum: Checksum,
    /// Length of the manifest as stored (`Manifest::to_stored`), which is
    /// far below 4 GiB: a manifest travels in one message.
    pub bytes: u32,
    /// When the version was written (a tombstone's age is measured from it).
    pub modified_ms: u64,
    /// The distinct chunks a live manifest names, behind a thin pointer;
    /// none for a manifest that names none (a small file held inline, an
    /// empty file, a tombstone), which so costs no allocation.
    chunks: Option<Arc<Vec<Id>>>,
}

impl ManifestEntry {
    /// The entry for `m`, stored in `bytes` bytes.
    pub fn new(m: &Manifest, bytes: usize) -> ManifestEntry {
        let chunks = (!m.deleted && !m.chunks.is_empty()).then(|| {
            let mut distinct = m.chunks.clone();
            distinct.sort();
            distinct.dedup();
            Arc::new(distinct)
        });
        ManifestEntry {
            version: m.version,
            deleted: m.deleted,
            checksum: m.checksum,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            modified_ms: m.modified_ms,
            chunks,
        }
    }

    /// The distinct chunks the manifest names, in key order.
    pub fn chunks(&self) -> &[Id] {
        self.chunks.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// What the index remembers about one chunk file: 12 bytes, which with
/// its key and the tree's nodes is most of a node's memory per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
struct ChunkEntry {
    /// At most [`crate::MAX_CHUNK_BYTES`], which a `u32` holds: the scan at
    /// open quarantines a longer file under a chunk's name.
    len: u32,
    /// When the chunk was last written or asked for, as the collector's
    /// grace period counts: milliseconds of the monotonic clock since
    /// [`epoch`]. In memory only: a restart counts every chunk as touched
    /// at open, which can only delay a collection.
    touched_ms: u64,
}

impl ChunkEntry {
    fn new(len: u64, touched: Instant) -> ChunkEntry {
        ChunkEntry {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            touched_ms: ms_since_epoch(touched),
        }
    }

    fn len(&self) -> u64 {
        u64::from(self.len)
    }

    /// How long before `now_ms` (by [`ms_since_epoch`]) the chunk was last
    /// touched.
    fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.touched_ms))
    }
}

/// How far back of the first touch the index counts from: touches that old
/// are far past any grace period, and one older still counts as this old,
/// which can only delay its collection.
const EPOCH_BACK: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The instant touches are counted from, the same for every index of the
/// process: [`EPOCH_BACK`] before its first use, or then if the clock does
/// not reach that far back.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(EPOCH_BACK).unwrap_or(now)
    })
}

/// `at` as whole milliseconds since [`epoch`] (0 if before it).
fn ms_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
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
    /// Bytes of chunk files plus the manifests' JSON.
    pub bytes: u64,
    /// Length of the manifest log file, superseded records included until
    /// its next compaction (filled in by `Store::stats`).
    pub manifest_log_bytes: u64,
    /// Chunk files in `quarantine/`: bytes that failed their check and wait
    /// for an operator (they are never deleted automatically).
    pub corrupt_chunks: u64,
}

/// One page of the keys held in an arc of the ring (`Index::keys_page`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysPage {
    /// Chunk keys, clockwise from the arc's start.
    pub chunks: Vec<Id>,
    /// Manifest keys with their stamps, clockwise from the arc's start.
    pub manifests: Vec<(Id, Stamp)>,
    /// The last key listed, when the arc holds more keys after it: the next
    /// page is `(next, end]`. `None` when the page reaches the arc's end.
    pub next: Option<Id>,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    chunks: BTreeMap<Id, ChunkEntry>,
    /// Live manifests held here that name each chunk (absent: none).
    refs: HashMap<Id, u32>,
    chunk_bytes: u64,
    manifests: BTreeMap<Id, ManifestEntry>,
    manifest_bytes: u64,
    tombstones: u64,
    corrupt_chunks: u64,
}

impl Index {
    /// Records a chunk file of `len` bytes touched at `touched` (replacing
    /// any earlier record, keeping the later of the two touches).
    pub fn insert_chunk(&mut self, key: Id, len: u64, touched: Instant) {
        let mut entry = ChunkEntry::new(len, touched);
        if let Some(old) = self.chunks.get(&key) {
            entry.touched_ms = entry.touched_ms.max(old.touched_ms);
        }
        if let Some(old) = self.chunks.insert(key, entry) {
            self.chunk_bytes -= old.len();
        }
        self.chunk_bytes += entry.len();
    }

    pub fn remove_chunk(&mut self, key: &Id) {
        if let Some(old) = self.chunks.remove(key) {
            self.chunk_bytes -= old.len();
        }
    }

    /// Moves chunk `key`'s last touch forward to `at` (never back). Returns
    /// whether the chunk is held.
    pub fn touch(&mut self, key: &Id, at: Instant) -> bool {
        match self.chunks.get_mut(key) {
            Some(e) => {
                e.touched_ms = e.touched_ms.max(ms_since_epoch(at));
                true
            }
            None => false,
        }
    }

    /// Length of chunk `key`, if it is held.
    pub fn chunk_len(&self, key: &Id) -> Option<u64> {
        self.chunks.get(key).map(ChunkEntry::len)
    }

    /// How long ago chunk `key` was last touched, if it is held.
    pub fn chunk_age(&self, key: &Id, now: Instant) -> Option<Duration> {
        self.chunks.get(key).map(|e| e.age(ms_since_epoch(now)))
    }

    /// Whether a live manifest held here names chunk `key`.
    pub fn is_referenced(&self, key: &Id) -> bool {
        self.refs.contains_key(key)
    }

    /// The chunks (with their lengths) untouched for at least `grace` that
    /// no live manifest held here names: what the collector asks the ring
    /// about.
    pub fn unreferenced_older_than(&self, grace: Duration, now: Instant) -> Vec<(Id, u64)> {
        let now_ms = ms_since_epoch(now);
        self.chunks
            .iter()
            .filter(|(k, e)| e.age(now_ms) >= grace && !self.refs.contains_key(*k))
            .map(|(k, e)| (*k, e.len()))
            .collect()
    }

    pub fn count_corrupt_chunk(&mut self) {
        self.corrupt_chunks += 1;
    }

    pub fn insert_manifest(&mut self, key: Id, entry: ManifestEntry) {
        self.remove_manifest(&key);
        self.manifest_bytes += u64::from(entry.bytes);
        self.tombstones += u64::from(entry.deleted);
        for chunk in entry.chunks() {
            *self.refs.entry(*chunk).or_default() += 1;
        }
        self.manifests.insert(key, entry);
    }

    pub fn remove_manifest(&mut self, key: &Id) {
        if let Some(old) = self.manifests.remove(key) {
            self.manifest_bytes -= u64::from(old.bytes);
            self.tombstones -= u64::from(old.deleted);
            for chunk in old.chunks() {
                if let Some(n) = self.refs.get_mut(chunk) {
                    *n -= 1;
                    if *n == 0 {
                        self.refs.remove(chunk);
                    }
                }
            }
        }
    }

    /// When the tombstone held under `key` was written, if one is.
    pub fn tombstone_written_ms(&self, key: &Id) -> Option<u64> {
        self.manifests
            .get(key)
            .filter(|e| e.deleted)
            .map(|e| e.modified_ms)
    }

    /// The stamp of the manifest held under `key`, if any.
    pub fn manifest_stamp(&self, key: &Id) -> Option<Stamp> {
        self.manifests.get(key).map(stamp)
    }

    /// Every chunk key, ascending; for tests (the node walks pages).
    #[cfg(test)]
    pub fn chunk_keys(&self) -> Vec<Id> {
        self.chunks.keys().copied().collect()
    }

    /// The chunk keys in `(start, end]`, clockwise; for tests.
    #[cfg(test)]
    pub fn chunk_keys_in(&self, start: &Id, end: &Id) -> Vec<Id> {
        arc(&self.chunks, start, end).map(|(k, _)| *k).collect()
    }

    /// The first `limit` (at least one) chunk keys clockwise after `start`,
    /// round the whole ring (`start` itself last, if held).
    pub fn chunk_keys_after(&self, start: &Id, limit: usize) -> Vec<Id> {
        arc(&self.chunks, start, start)
            .take(limit.max(1))
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn manifest_keys(&self) -> Vec<Id> {
        self.manifests.keys().copied().collect()
    }

    /// The manifest keys in `(start, end]` with their stamps, clockwise;
    /// for tests.
    #[cfg(test)]
    pub fn manifest_keys_in(&self, start: &Id, end: &Id) -> Vec<(Id, Stamp)> {
        arc(&self.manifests, start, end)
            .map(|(k, e)| (*k, stamp(e)))
            .collect()
    }

    /// The first `limit` (at least one) distinct keys in `(start, end]`, in
    /// clockwise order from `start`: chunks and manifests merged, a key held
    /// as both listed as both, so a page never ends between the two.
    pub fn keys_page(&self, start: &Id, end: &Id, limit: usize) -> KeysPage {
        // Clockwise from `start`: first the keys above it, then the wrapped ones.
        let clockwise = |k: &Id| (k <= start, *k);
        let mut chunks = arc(&self.chunks, start, end).map(|(k, _)| *k).peekable();
        let mut manifests = arc(&self.manifests, start, end)
            .map(|(k, e)| (*k, stamp(e)))
            .peekable();
        let mut page = KeysPage::default();
        let mut last = None;
        let mut listed = 0;
        loop {
            let key = match (chunks.peek(), manifests.peek()) {
                (None, None) => return page,
                (Some(c), None) => *c,
                (None, Some((m, _))) => *m,
                (Some(c), Some((m, _))) => std::cmp::min_by_key(*c, *m, clockwise),
            };
            if listed == limit.max(1) {
                page.next = last;
                return page;
            }
            if let Some(c) = chunks.next_if_eq(&key) {
                page.chunks.push(c);
            }
            if let Some(m) = manifests.next_if(|(m, _)| *m == key) {
                page.manifests.push(m);
            }
            last = Some(key);
            listed += 1;
        }
    }

    /// The first `limit` (at least one) manifest keys above `after` (from
    /// the smallest key when `None`), ascending, and the last of them when
    /// more follow.
    pub fn manifest_keys_page(&self, after: Option<&Id>, limit: usize) -> (Vec<Id>, Option<Id>) {
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(*a));
        let mut keys = self
            .manifests
            .range((from, Bound::Unbounded))
            .map(|(k, _)| *k);
        let page: Vec<Id> = keys.by_ref().take(limit.max(1)).collect();
        let next = match keys.next() {
            Some(_) => page.last().copied(),
            None => None,
        };
        (page, next)
    }

    pub fn stats(&self) -> StoreStats {
        let manifests = self.manifests.len() as u64;
        StoreStats {
            chunks: self.chunks.len() as u64,
            manifests: manifests - self.tombstones,
            tombstones: self.tombstones,
            bytes: self.chunk_bytes + self.manifest_bytes,
            corrupt_chunks: self.corrupt_chunks,
            manifest_log_bytes: 0,
        }
    }
}

fn stamp(e: &ManifestEntry) -> Stamp {
    Stamp {
        version: e.version,
        deleted: e.deleted,
        checksum: e.checksum,
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

    /// An index holding a chunk of one byte at each of `keys`.
    fn holding(keys: &[u8]) -> Index {
        let mut index = Index::default();
        for &k in keys {
            index.insert_chunk(id(k), 1, Instant::now());
        }
        index
    }

    #[test]
    fn arcs_match_in_half_open_with_wrap() {
        let mut index = holding(&[0, 1, 5, 10, 100, 200, 255]);
        index.insert_chunk(Id::MAX, 1, Instant::now());
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
    fn pages_after_a_key_walk_the_ring_clockwise_and_wrap() {
        let index = holding(&[0, 1, 5, 10, 100, 200, 255]);
        // One lap from 10 in pages of three, each page starting after the
        // last key of the one before: the keys above 10, then from zero.
        let mut last = id(10);
        let mut lap = Vec::new();
        for _ in 0..3 {
            let page = index.chunk_keys_after(&last, 3);
            assert!(page.len() <= 3, "{page:?}");
            last = *page.last().unwrap();
            lap.extend(page);
        }
        let expected: Vec<Id> = [100, 200, 255, 0, 1, 5, 10].into_iter().map(id).collect();
        assert_eq!(lap[..7], expected[..]);
        // A key not held starts the walk just the same; zero asks for one.
        assert_eq!(index.chunk_keys_after(&id(6), 2), vec![id(10), id(100)]);
        assert_eq!(index.chunk_keys_after(&id(255), 0), vec![id(0)]);
        assert!(Index::default().chunk_keys_after(&id(1), 5).is_empty());
    }

    fn entry(version: u64, deleted: bool, bytes: u32, chunks: &[Id]) -> ManifestEntry {
        ManifestEntry {
            version,
            deleted,
            checksum: Checksum::NONE,
            bytes,
            modified_ms: version,
            chunks: (!chunks.is_empty()).then(|| Arc::new(chunks.to_vec())),
        }
    }

    /// The entry is most of what a node keeps in memory per small file:
    /// a field that grows it should be a choice, not an accident.
    #[test]
    fn a_manifest_entry_stays_64_bytes() {
        assert_eq!(std::mem::size_of::<ManifestEntry>(), 64);
        let held_inline = entry(1, false, 1, &[]);
        assert!(held_inline.chunks.is_none() && held_inline.chunks().is_empty());
    }

    /// The entry is most of what a node keeps in memory per chunk, as the
    /// manifest entry is per small file.
    #[test]
    fn a_chunk_entry_stays_12_bytes() {
        assert_eq!(std::mem::size_of::<ChunkEntry>(), 12);
        let entry = ChunkEntry::new(crate::MAX_CHUNK_BYTES as u64, Instant::now());
        assert_eq!(entry.len(), crate::MAX_CHUNK_BYTES as u64);
    }

    /// Ages count to the millisecond from the touch, whatever instant it
    /// was; a touch from before the epoch counts as made at the epoch.
    #[test]
    fn chunk_ages_count_from_their_touch() {
        let now = Instant::now();
        for ago in [0, 1, 999, 1_000, 86_400_000] {
            let Some(touched) = now.checked_sub(Duration::from_millis(ago)) else {
                continue; // a clock that does not reach back a day
            };
            let age = ChunkEntry::new(1, touched)
                .age(ms_since_epoch(now))
                .as_millis();
            assert!(age.abs_diff(u128::from(ago)) <= 1, "{ago} ms ago: {age}");
        }
        let before = epoch().checked_sub(Duration::from_secs(1));
        if let Some(before) = before {
            let now_ms = ms_since_epoch(now);
            let entry = ChunkEntry::new(1, before);
            assert_eq!(entry.age(now_ms), ChunkEntry::new(1, epoch()).age(now_ms));
        }
    }

    #[test]
    fn references_follow_the_live_manifests_that_name_a_chunk() {
        let mut index = Index::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(100);
        for k in [1, 2, 3] {
            index.insert_chunk(id(k), 10, t0);
        }
        // Two files share chunk 2; file 5 also names chunk 1.
        index.insert_manifest(id(4), entry(1, false, 1, &[id(1), id(2)]));
        index.insert_manifest(id(5), entry(1, false, 1, &[id(2)]));
        let grace = Duration::from_secs(10);
        assert_eq!(
            index.unreferenced_older_than(grace, later),
            vec![(id(3), 10)]
        );
        // Deleting file 4 frees chunk 1, not the shared chunk 2.
        index.insert_manifest(id(4), entry(2, true, 1, &[]));
        assert_eq!(
            index.unreferenced_older_than(grace, later),
            vec![(id(1), 10), (id(3), 10)]
        );
        assert!(index.is_referenced(&id(2)));
        // Overwriting file 5 with one naming chunk 3 frees chunk 2.
        index.insert_manifest(id(5), entry(2, false, 1, &[id(3)]));
        assert_eq!(
            index.unreferenced_older_than(grace, later),
            vec![(id(1), 10), (id(2), 10)]
        );
        // A touch restarts the grace period; it never moves back.
        assert!(index.touch(&id(1), later));
        assert!(index.touch(&id(1), t0));
        assert!(!index.touch(&id(9), later));
        assert_eq!(
            index.unreferenced_older_than(grace, later),
            vec![(id(2), 10)]
        );
        assert_eq!(index.chunk_age(&id(1), later), Some(Duration::ZERO));
        // A rewrite keeps the later touch.
        index.insert_chunk(id(1), 10, t0);
        assert_eq!(index.chunk_age(&id(1), later), Some(Duration::ZERO));
        // Tombstones age from when they were written.
        assert_eq!(index.tombstone_written_ms(&id(4)), Some(2));
        assert_eq!(index.tombstone_written_ms(&id(5)), None);
        index.remove_manifest(&id(5));
        assert!(!index.is_referenced(&id(3)));
    }

    /// Pages through `(start, end]` as a ListKeys caller does, checking
    /// each page's size and cursor; returns the concatenated pages.
    fn page_through(
        index: &Index,
        start: &Id,
        end: &Id,
        limit: usize,
    ) -> (Vec<Id>, Vec<(Id, Stamp)>) {
        let (mut chunks, mut manifests) = (Vec::new(), Vec::new());
        let mut from = *start;
        loop {
            let page = index.keys_page(&from, end, limit);
            let mut distinct: Vec<Id> = page.chunks.clone();
            distinct.extend(page.manifests.iter().map(|(k, _)| *k));
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() <= limit.max(1), "page over its limit");
            chunks.extend(page.chunks);
            manifests.extend(page.manifests);
            match page.next {
                Some(next) => {
                    assert_ne!(next, *end, "a cursor at the end would mean the whole ring");
                    assert!(next.in_half_open(&from, end), "cursor outside the arc");
                    from = next;
                }
                None => return (chunks, manifests),
            }
        }
    }

    #[test]
    fn pages_end_at_keys_and_wrap_like_the_whole_arc() {
        let mut index = holding(&[0, 1, 5, 10, 200, 255]);
        index.insert_chunk(Id::MAX, 1, Instant::now());
        // Key 5 is both a chunk and a manifest; 7 and 250 are manifests only.
        for k in [5u8, 7, 250] {
            index.insert_manifest(id(k), entry(u64::from(k), false, 1, &[]));
        }
        let ids = |v: &[u8]| v.iter().map(|&k| id(k)).collect::<Vec<Id>>();
        let page = |start: u8, end: u8, limit: usize| {
            let p = index.keys_page(&id(start), &id(end), limit);
            let manifests: Vec<Id> = p.manifests.iter().map(|(k, _)| *k).collect();
            (p.chunks, manifests, p.next)
        };
        // (start, end, limit) -> (chunks, manifests, next)
        let cases = [
            // A page never splits a key held as chunk and manifest.
            ((1, 10, 1), (ids(&[5]), ids(&[5]), Some(id(5)))),
            ((5, 10, 1), (vec![], ids(&[7]), Some(id(7)))),
            // The page holding the arc's last key says so: no cursor.
            ((5, 10, 2), (ids(&[10]), ids(&[7]), None)),
            ((7, 10, 1), (ids(&[10]), vec![], None)),
            // Wrapping past zero, clockwise.
            (
                (200, 1, 3),
                (vec![id(255), Id::MAX], ids(&[250]), Some(Id::MAX)),
            ),
            ((255, 1, 2), (vec![Id::MAX, id(0)], vec![], Some(id(0)))),
            ((0, 1, 2), (ids(&[1]), vec![], None)),
            // A limit of 0 still lists one key.
            ((0, 0, 0), (ids(&[1]), vec![], Some(id(1)))),
            // An empty arc.
            ((11, 199, 5), (vec![], vec![], None)),
        ];
        for ((start, end, limit), want) in cases {
            assert_eq!(
                page(start, end, limit),
                want,
                "({start}, {end}] limit {limit}"
            );
        }
        // Whole ring from a held key: that key comes last.
        let (chunks, manifests) = page_through(&index, &id(5), &id(5), 2);
        let mut want = ids(&[10, 200, 255]);
        want.extend([Id::MAX, id(0), id(1), id(5)]);
        assert_eq!(chunks, want);
        assert_eq!(
            manifests.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ids(&[7, 250, 5])
        );
    }

    #[test]
    fn three_hundred_thousand_keys_page_through_without_loss_or_repeat() {
        let mut index = Index::default();
        let now = Instant::now();
        let key = |i: u32| Id::hash(&i.to_le_bytes());
        // Two in three keys are chunks, one in three a manifest, and every
        // tenth chunk key is also a manifest key.
        for i in 0..300_000u32 {
            if i % 3 != 2 {
                index.insert_chunk(key(i), 1, now);
            }
            if i % 3 == 2 || i % 30 == 0 {
                index.insert_manifest(key(i), entry(u64::from(i), i % 7 == 0, 1, &[]));
            }
        }
        let quarter = Id::from_array([0x40; ID_BYTES]);
        let three_quarters = Id::from_array([0xc0; ID_BYTES]);
        let held = key(12_345);
        let arcs = [
            (Id::ZERO, Id::ZERO),      // the whole ring, as tests and tools ask
            (held, held),              // the whole ring from a held key
            (quarter, three_quarters), // half the ring
            (three_quarters, quarter), // half the ring, wrapping past zero
            (held.prev(), held),       // one key
        ];
        for (start, end) in arcs {
            let want_chunks = index.chunk_keys_in(&start, &end);
            let want_manifests = index.manifest_keys_in(&start, &end);
            for limit in [10_000, 997, 1] {
                if limit == 1 && start == end {
                    continue; // 300k calls prove nothing the other limits do not
                }
                let (chunks, manifests) = page_through(&index, &start, &end, limit);
                assert_eq!(chunks, want_chunks, "chunks of ({start}, {end}] by {limit}");
                assert_eq!(
                    manifests, want_manifests,
                    "manifests of ({start}, {end}] by {limit}"
                );
            }
        }
        assert_eq!(
            index.chunk_keys_in(&Id::ZERO, &Id::ZERO).len()
                + index.manifest_keys_in(&Id::ZERO, &Id::ZERO).len(),
            200_000 + 100_000 + 10_000
        );
    }

    #[test]
    fn manifest_pages_go_up_in_key_order() {
        let mut index = Index::default();
        for k in [3u8, 9, 4, 200] {
            index.insert_manifest(id(k), entry(1, false, 1, &[]));
        }
        assert_eq!(
            index.manifest_keys_page(None, 2),
            (vec![id(3), id(4)], Some(id(4)))
        );
        assert_eq!(
            index.manifest_keys_page(Some(&id(4)), 2),
            (vec![id(9), id(200)], None)
        );
        assert_eq!(
            index.manifest_keys_page(Some(&id(3)), 0),
            (vec![id(4)], Some(id(4)))
        );
        assert_eq!(index.manifest_keys_page(Some(&id(200)), 5), (vec![], None));
    }

    #[test]
    fn totals_follow_inserts_and_removals() {
        let mut index = Index::default();
        let now = Instant::now();
        index.insert_chunk(id(1), 10, now);
        index.insert_chunk(id(1), 12, now); // rewritten: replaces, not adds
        index.insert_chunk(id(2), 5, now);
        index.remove_chunk(&id(2));
        index.remove_chunk(&id(9)); // absent: no effect
        let live = entry(1, false, 100, &[]);
        let tomb = entry(2, true, 50, &[]);
        index.insert_manifest(id(3), live.clone());
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
                corrupt_chunks: 1,
                manifest_log_bytes: 0,
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
