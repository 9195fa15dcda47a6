//! The node's on-disk store of chunks and manifests.
//!
//! Layout under the data dir (every on-disk name is a hex key, never a
//! user-supplied string):
//!
//! ```text
//! chunks/<2 hex>/<40 hex>     chunk bytes, named by their key (chunk_key.rs)
//! manifests/log               every manifest, as records appended to one
//!                             file, keyed by SHA-1 of the file's name
//!                             (manifest_log.rs)
//! tmp/                        files being written; cleared on open
//! quarantine/                 files that failed their check, moved aside
//! suspect/                    manifests set aside after a long absence
//! alive.json                  when this dir joined and was last in a ring
//! lock                        locked by the process that has the dir open
//! ```
//!
//! Invariants:
//! - A chunk file's bytes hash to its name. Bytes are checked before they are
//!   stored and again whenever they are read or scrubbed; a file that fails is
//!   moved to `quarantine/`, never deleted, and reported as
//!   [`Error::Corrupt`](crate::error::Error::Corrupt) so the caller can fetch
//!   another replica.
//! - A chunk file is visible under its final name only complete and durable
//!   (temporary file, fsync, rename, fsync of the directory; see `disk.rs`).
//!   A manifest is acknowledged only once its log record is synced.
//! - A stored manifest is replaced only by one that
//!   [supersedes](Manifest::supersedes) it.
//! - The in-memory index (`index.rs`) matches the chunk directories and the
//!   manifest log: it is rebuilt at open
//!   and updated under the key's lock after every change this store makes.
//!   The process must own the data dir: open takes the dir's `lock`, and a
//!   second process opening it is refused.
//!
//! Concurrency: [`Store`] is a cheap handle (`Clone`, `Send + Sync`). Changes
//! to one key are serialised by a striped lock; the index has its own short
//! lock, always taken after a key lock and never held across I/O. All calls
//! block on the file system; async callers use `spawn_blocking`.
//!
//! This module does no networking and knows nothing of the ring beyond key
//! ranges: which keys a node should hold is decided elsewhere.
//!
//! Files: `name.rs` (naming rules), `manifest.rs` (the record and its
//! order), `checksum.rs` (a whole file's hash), `chunk_key.rs` (how a
//! chunk's bytes make its key), `chunks.rs` and
//! `manifests.rs` (the store's operations on each), `manifest_log.rs` (the
//! file the manifests are kept in), `gc.rs` (chunk ages and references, tombstone expiry, manifests set aside
//! after a long absence), `index.rs` (the in-memory index), `disk.rs` (paths,
//! temporary files, fsync), `aligned.rs` (chunk buffers aligned for direct
//! I/O and reused).

mod aligned;
mod checksum;
mod chunk_key;
mod chunks;
mod disk;
mod gc;
mod index;
mod manifest;
mod manifest_log;
mod manifests;
mod name;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chord::Id;
use crate::error::Result;

pub use aligned::AlignedBuf;
pub use checksum::{Algorithm, Checksum, Hasher, NEW_FILES};
pub use chunk_key::{chunk_hash, chunk_key, key_of_hash};
pub(crate) use chunks::check_chunk_len;
pub use chunks::{CheckedChunk, ChunkBuffer, ChunkHasher, ChunkWriter};
pub use disk::{chunk_path, read_whole, OutputFile, DIRECT_BLOCK_BYTES, WRITE_PIECE_BYTES};
pub use gc::AliveClock;
pub use index::{KeysPage, StoreStats};
/// A valid manifest holding its bytes inline, for tests outside the store.
#[cfg(test)]
pub(crate) use manifest::tests::inline as inline_manifest;
pub use manifest::{check_manifest_fits, Manifest, Stamp, MAX_INLINE_BYTES, MAX_MANIFEST_CHUNKS};
pub use manifests::MAX_MANIFEST_BYTES;
pub use name::{validate_name, MAX_NAME_BYTES};

use disk::Layout;
use index::Index;
#[cfg(test)]
pub(crate) use manifest::raw_inline_record;
#[cfg(test)]
pub(crate) use manifest_log::fuzzing as manifest_log_fuzzing;
use manifest_log::ManifestLog;
use manifests::ManifestScan;

/// Number of locks that serialise changes per key. Changes to different keys
/// rarely share a stripe, so writers seldom wait on each other, while the
/// table stays a fixed, small size.
const KEY_LOCK_STRIPES: usize = 64;

/// A handle on the store in one data directory.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    /// Every manifest, in one append-only file.
    manifests: ManifestLog,
    index: Mutex<Index>,
    key_locks: [Mutex<()>; KEY_LOCK_STRIPES],
    /// The data dir's lock ([`Layout::lock`]), held as long as the store.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.layout.root)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if need be) the store in `dir`: makes the layout,
    /// takes the dir's lock (refusing a dir another process has open),
    /// removes what a crash left in `tmp/`, and scans chunks, manifests and
    /// quarantine to rebuild the index. Chunk bytes are not re-hashed here
    /// (that is the scrubber's job via [`Store::verify_chunk`]); manifests
    /// are parsed, and any that fail are quarantined.
    pub fn open(dir: &Path) -> Result<Store> {
        let layout = Layout::new(dir);
        layout.create()?;
        let lock = layout.lock()?;
        let cleared = layout.clear_tmp()?;
        let direct = layout.probe_direct();
        let mut scan = ManifestScan::default();
        let (manifests, log) = ManifestLog::open(
            &layout.manifest_log(),
            &layout.quarantine_log_tail_path(),
            MAX_MANIFEST_BYTES,
            |key, payload| scan.record(key, payload),
        )?;
        let store = Store {
            inner: Arc::new(Inner {
                layout,
                manifests,
                index: Mutex::new(scan.index),
                key_locks: std::array::from_fn(|_| Mutex::new(())),
                _lock: lock,
            }),
        };
        store.scan_quarantine()?;
        store.scan_chunks()?;
        store.settle_manifests(scan.corrupt)?;
        let stats = store.stats();
        tracing::info!(
            dir = %dir.display(),
            chunks = stats.chunks,
            manifests = stats.manifests,
            tombstones = stats.tombstones,
            bytes = stats.bytes,
            corrupt_chunks = stats.corrupt_chunks,
            tmp_cleared = cleared,
            log_records = log.records,
            log_bytes_cut = log.cut_bytes,
            direct_writes = direct,
            "store opened"
        );
        Ok(store)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Current totals; cheap (no disk access).
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            manifest_log_bytes: self.log().records_len(),
            ..self.index().stats()
        }
    }

    /// Free space on the data dir's file system. Always `None` for now:
    /// asking the OS (statvfs) needs `unsafe` or a crate outside the
    /// workspace's dependencies, and the workspace forbids `unsafe`. A full
    /// disk still surfaces, as `Error::DiskFull` from the write that hit it.
    pub fn available_bytes(&self) -> Option<u64> {
        None
    }

    /// The first `limit` (at least one) distinct keys held in `(start, end]`
    /// on the circle, chunks and manifests merged in clockwise order from
    /// `start` (equal ends mean the whole ring), and where the next page
    /// starts if the arc holds more: what one `ListKeys` answer carries.
    pub fn keys_page(&self, start: &Id, end: &Id, limit: usize) -> KeysPage {
        self.index().keys_page(start, end, limit)
    }

    fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn log(&self) -> &ManifestLog {
        &self.inner.manifests
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index holds plain numbers updated without panicking paths, so
        // a poisoned lock (a panic elsewhere while held) leaves it usable.
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock that serialises changes to `key`'s files. Hold it across a
    /// check-then-rename so two writers of one key cannot interleave.
    fn key_lock(&self, key: &Id) -> MutexGuard<'_, ()> {
        let stripe = usize::from(key.as_bytes()[0]) % KEY_LOCK_STRIPES;
        self.inner.key_locks[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::fs;

    use super::*;

    pub(super) fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn store_is_send_sync_and_cloneable() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Store>();
        fn assert_send<T: Send + 'static>() {}
        assert_send::<ChunkWriter>();
    }

    #[test]
    fn open_creates_the_layout() {
        let (dir, store) = open_temp();
        for sub in ["chunks/00", "chunks/ff", "manifests", "tmp", "quarantine"] {
            assert!(dir.path().join(sub).is_dir(), "{sub}");
        }
        assert_eq!(store.root(), dir.path());
        assert_eq!(store.stats(), StoreStats::default());
        assert_eq!(store.available_bytes(), None);
    }

    #[test]
    fn a_dir_is_opened_by_one_store_at_a_time() {
        let (dir, store) = open_temp();
        let a = b"kept while the second open is refused".to_vec();
        store.put_chunk(&chunk_key(&a), &a).unwrap();
        fs::write(dir.path().join("tmp/9-chunk-in-progress"), b"half").unwrap();

        let Err(err) = Store::open(dir.path()) else {
            panic!("a second open of a dir in use succeeded");
        };
        let message = err.to_string();
        assert!(matches!(err, crate::Error::Unavailable(_)), "{message}");
        assert!(
            message.contains("in use by another chord-node"),
            "{message}"
        );
        assert!(
            message.contains(&format!("(process {})", std::process::id())),
            "{message}"
        );
        // The refused open touched nothing: the first store's file in
        // progress and its chunk are where they were.
        assert!(dir.path().join("tmp/9-chunk-in-progress").exists());
        assert_eq!(store.read_chunk_unchecked(&chunk_key(&a)).unwrap(), a);

        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read_chunk_unchecked(&chunk_key(&a)).unwrap(), a);
    }

    #[test]
    fn reopen_clears_tmp_and_rebuilds_counters() {
        let (dir, store) = open_temp();
        let a = b"first chunk".to_vec();
        let b = vec![42u8; 5000];
        store.put_chunk(&chunk_key(&a), &a).unwrap();
        store.put_chunk(&chunk_key(&b), &b).unwrap();
        let live = manifest::tests::live("kept.txt", 10, 4, 1);
        store.put_manifest(&live).unwrap();
        store
            .put_manifest(&Manifest::tombstone("gone.txt", 3, 5))
            .unwrap();
        let before = store.stats();
        assert_eq!(
            (before.chunks, before.manifests, before.tombstones),
            (2, 1, 1)
        );
        assert!(before.bytes > (a.len() + b.len()) as u64);
        drop(store);

        // What a crash mid-write leaves behind, plus stray files that are not
        // ours: the former are cleared, the latter ignored (not counted).
        fs::write(dir.path().join("tmp/7-chunk-abandoned"), b"half").unwrap();
        fs::create_dir(dir.path().join("tmp/odd-dir")).unwrap();
        fs::write(dir.path().join("chunks/ab/not-a-key"), b"x").unwrap();
        fs::write(dir.path().join("chunks/README"), b"x").unwrap();
        let misplaced = Id::hash(b"misplaced");
        let wrong_dir = if misplaced.to_hex().starts_with("00") {
            "01"
        } else {
            "00"
        };
        fs::write(
            dir.path()
                .join("chunks")
                .join(wrong_dir)
                .join(misplaced.to_hex()),
            b"misplaced",
        )
        .unwrap();
        fs::write(dir.path().join("manifests/notes.txt"), b"x").unwrap();

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.stats(), before);
        let mut expected = vec![chunk_key(&a), chunk_key(&b)];
        expected.sort();
        assert_eq!(store.chunk_keys().unwrap(), expected);
        assert_eq!(store.manifests().unwrap().len(), 2);
        // Stray files were left alone, not deleted.
        assert!(dir.path().join("chunks/ab/not-a-key").exists());
    }
}
