//! Chunk operations: content-addressed blobs under `chunks/<2 hex>/<40 hex>`.
//!
//! Invariants: a chunk is stored only if its bytes hash to its key
//! (`chunk_key.rs` says how, and how chunks stored before that are
//! checked), whether it arrives whole ([`Store::put_chunk`]) or streamed
//! ([`ChunkWriter`]), and is never longer than [`crate::MAX_CHUNK_BYTES`].
//! Every full read re-checks the hash; a mismatch moves the file to
//! `quarantine/` (re-checked under the key's lock first, so a good copy
//! written meanwhile is never moved aside). Nothing here decides which
//! chunks a node should hold.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::aligned::AlignedBuf;
use super::chunk_key::{chunk_hash, key_of_hash, KeyHasher, OldKeyHasher};
use super::disk::{self, Layout, TmpFile, QUARANTINED_CHUNK_PREFIX};
use super::Store;
use crate::chord::Id;
use crate::error::{Error, Result};
use crate::stages::{self, Stage};

impl Store {
    /// Stores `data` under `key`, after checking that it is `data`'s key
    /// (otherwise `Error::Corrupt` and nothing is written). Returns `false`
    /// when an intact copy was already there. A corrupt copy in the way is
    /// quarantined and replaced.
    pub fn put_chunk(&self, key: &Id, data: &[u8]) -> Result<bool> {
        let chunk = CheckedChunk::new(*key, Bytes::copy_from_slice(data))?;
        self.put_checked_chunk(&chunk, Duration::ZERO)
    }

    /// Stores a chunk whose bytes were already checked against its key
    /// (so they are not hashed again), last touched `age` ago elsewhere: a
    /// repair push keeps the collector's grace period from restarting.
    pub fn put_checked_chunk(&self, chunk: &CheckedChunk, age: Duration) -> Result<bool> {
        let (key, data) = (chunk.key(), chunk.data());
        let touched = touched_ago(age);
        // Replicas and retries often resend what is already here: skip the
        // write (and its fsyncs) when a good copy exists.
        if self.has_intact_chunk(key)? {
            let _guard = self.key_lock(key);
            if self.index().touch(key, touched) {
                return Ok(false);
            }
            // Collected since the check: written again below.
        }
        let mut tmp = self.layout().tmp_chunk_file(key)?;
        stages::time(Stage::DiskWrite, || tmp.write_all(data))?;
        stages::time(Stage::DiskSync, || {
            tmp.finish()?;
            self.commit_chunk(key, tmp, data.len() as u64, touched)
        })
    }

    /// Starts a streamed write of the chunk `key`, holding at most one
    /// buffer of it in memory.
    pub fn chunk_writer(&self, key: Id) -> Result<ChunkWriter> {
        let tmp = self.layout().tmp_chunk_file(&key)?;
        Ok(ChunkWriter {
            store: self.clone(),
            key,
            tmp,
            hasher: KeyHasher::new(),
            len: 0,
        })
    }

    /// The bytes of chunk `key`, checked against the key. Missing is
    /// `Error::NotFound`; bytes that do not match are quarantined and
    /// reported as `Error::Corrupt`.
    pub fn read_chunk(&self, key: &Id) -> Result<CheckedChunk> {
        let data = self.read_chunk_unchecked(key)?;
        match CheckedChunk::new(*key, data) {
            Ok(chunk) => Ok(chunk),
            Err(e) => {
                self.quarantine_if_corrupt(key)?;
                Err(e)
            }
        }
    }

    /// The bytes of chunk `key` as they are on disk, not re-hashed: what
    /// `GetChunk` sends. Its receiver checks them against the key and, on a
    /// mismatch, asks this node to [`Store::quarantine_chunk`] (which does
    /// re-hash); the scrubber re-hashes everything at rest meanwhile.
    pub fn read_chunk_unchecked(&self, key: &Id) -> Result<Bytes> {
        let path = self.layout().chunk_path(key);
        match stages::time(Stage::DiskRead, || {
            self.layout()
                .read_chunk_file(&path, crate::MAX_CHUNK_BYTES as u64)
        }) {
            Ok(data) => Ok(data),
            Err(e) => match e.kind() {
                io::ErrorKind::NotFound => Err(not_found(key)),
                io::ErrorKind::InvalidData => {
                    self.quarantine_if_corrupt(key)?;
                    Err(Error::Corrupt(format!("chunk {key}: {e}")))
                }
                _ => Err(Error::io(format!("reading chunk {key}"), e)),
            },
        }
    }

    /// An open handle on chunk `key` and its length, for streaming it out.
    /// The caller hashes while streaming and calls
    /// [`Store::quarantine_chunk`] if the bytes turn out wrong. The handle
    /// stays valid even if the chunk is replaced or deleted meanwhile.
    pub fn open_chunk(&self, key: &Id) -> Result<(File, u64)> {
        let path = self.layout().chunk_path(key);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(key),
            _ => Error::io(format!("opening chunk {key}"), e),
        })?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading metadata of chunk {key}"), e))?
            .len();
        Ok((file, len))
    }

    /// Reports that chunk `key` was found corrupt while streaming. The file
    /// is re-hashed under the key's lock and moved to `quarantine/` only if
    /// it really does not match (a good copy may have replaced it since the
    /// caller opened it). A missing chunk is not an error.
    pub fn quarantine_chunk(&self, key: &Id) -> Result<()> {
        self.quarantine_if_corrupt(key).map(|_| ())
    }

    /// Whether a file for chunk `key` exists. Cheap: does not check bytes.
    pub fn has_chunk(&self, key: &Id) -> bool {
        self.layout().chunk_path(key).is_file()
    }

    /// Re-hashes chunk `key` in full (the scrubber's check). Missing is
    /// `Error::NotFound`; a mismatch quarantines it and is `Error::Corrupt`.
    pub fn verify_chunk(&self, key: &Id) -> Result<()> {
        let path = self.layout().chunk_path(key);
        let checked = check_file(self.layout(), &path, key).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(key),
            _ => Error::io(format!("hashing chunk {key}"), e),
        })?;
        if let Err(corrupt) = checked {
            self.quarantine_if_corrupt(key)?;
            return Err(corrupt);
        }
        Ok(())
    }

    /// What a receiver of bad bytes from this node asks: re-hashes chunk
    /// `key` now (quarantining a bad copy, under the key's lock) and says
    /// whether an intact copy is here.
    pub fn check_chunk(&self, key: &Id) -> Result<bool> {
        match self.verify_chunk(key) {
            Ok(()) => Ok(true),
            Err(Error::NotFound(_) | Error::Corrupt(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes chunk `key`. Removing a chunk that is not there succeeds, so
    /// a retried hand-off does not fail.
    pub fn delete_chunk(&self, key: &Id) -> Result<()> {
        let path = self.layout().chunk_path(key);
        let _guard = self.key_lock(key);
        disk::remove_durably(&path, &format!("chunk {key}"))?;
        self.index().remove_chunk(key);
        Ok(())
    }

    /// Every chunk key held, in ascending order. For tests only: the node
    /// itself walks its chunks a page at a time ([`Store::chunk_keys_after`]),
    /// since a copy of every key holds the index's lock for milliseconds
    /// on a large store.
    #[cfg(test)]
    pub fn chunk_keys(&self) -> Result<Vec<Id>> {
        Ok(self.index().chunk_keys())
    }

    /// The chunk keys in `(start, end]` on the circle, in clockwise order
    /// from `start` (ascending unless the arc wraps past zero). Equal ends
    /// mean the whole ring. For tests only, as [`Store::chunk_keys`] is.
    #[cfg(test)]
    pub fn chunk_keys_in(&self, start: &Id, end: &Id) -> Result<Vec<Id>> {
        Ok(self.index().chunk_keys_in(start, end))
    }

    /// The first `limit` (at least one) chunk keys clockwise after `start`,
    /// round the whole ring: a page of a walk that holds the index's lock
    /// only for the page, however many chunks the node holds.
    pub fn chunk_keys_after(&self, start: &Id, limit: usize) -> Result<Vec<Id>> {
        Ok(self.index().chunk_keys_after(start, limit))
    }

    /// Length in bytes of chunk `key`'s file.
    pub fn chunk_len(&self, key: &Id) -> Result<u64> {
        let path = self.layout().chunk_path(key);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(key)),
            Err(e) => Err(Error::io(format!("reading metadata of chunk {key}"), e)),
        }
    }

    /// Whether a file for `key` exists and hashes to `key`.
    fn has_intact_chunk(&self, key: &Id) -> Result<bool> {
        match check_file(self.layout(), &self.layout().chunk_path(key), key) {
            Ok(checked) => Ok(checked.is_ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("hashing chunk {key}"), e)),
        }
    }

    /// Moves a verified, fsynced temporary file into place as chunk `key`
    /// unless an intact copy beat it there.
    fn commit_chunk(&self, key: &Id, tmp: TmpFile, len: u64, touched: Instant) -> Result<bool> {
        let path = self.layout().chunk_path(key);
        let _guard = self.key_lock(key);
        match check_file(self.layout(), &path, key) {
            Ok(Ok(())) => {
                self.index().touch(key, touched);
                return Ok(false); // tmp dropped: removed
            }
            Ok(Err(_)) => self.move_chunk_to_quarantine(key)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("hashing chunk {key}"), e)),
        }
        tmp.persist(&path)?;
        self.index().insert_chunk(*key, len, touched);
        Ok(true)
    }

    /// Re-hashes chunk `key` under its lock and quarantines it if it does
    /// not match. Returns whether it was moved.
    fn quarantine_if_corrupt(&self, key: &Id) -> Result<bool> {
        let path = self.layout().chunk_path(key);
        let _guard = self.key_lock(key);
        match check_file(self.layout(), &path, key) {
            Ok(Ok(())) => Ok(false),
            Ok(Err(_)) => self.move_chunk_to_quarantine(key).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("hashing chunk {key}"), e)),
        }
    }

    /// Moves chunk `key`'s file aside and counts it. The caller holds the
    /// key's lock and has established the file is corrupt.
    fn move_chunk_to_quarantine(&self, key: &Id) -> Result<()> {
        let from = self.layout().chunk_path(key);
        let to = self.layout().quarantine_chunk_path(key);
        disk::move_durably(&from, &to)
            .map_err(|e| Error::io(format!("quarantining chunk {key}"), e))?;
        tracing::warn!(key = %key, to = %to.display(), "corrupt chunk quarantined");
        let mut index = self.index();
        index.remove_chunk(key);
        index.count_corrupt_chunk();
        Ok(())
    }

    /// Rebuilds the chunk part of the index from `chunks/`. Entries that
    /// are not a chunk in its right fan-out dir are logged and left alone;
    /// a chunk's file longer than any chunk can be is quarantined unread.
    /// Runs after [`Store::scan_quarantine`], which would count it again.
    /// Each fan-out dir's chunks go into the index as soon as it is read,
    /// so the scan holds one dir's list at a time, not the whole store's: a
    /// million chunks would otherwise hold 30 MiB more at the start
    /// (change 85).
    pub(super) fn scan_chunks(&self) -> Result<()> {
        // Ages are not kept across a restart: every chunk counts as touched
        // now, which can only delay its collection.
        let now = Instant::now();
        let mut found = Vec::new();
        for fan_out in disk::read_dir(&self.layout().chunks)? {
            let dir_name = fan_out.file_name();
            let prefix = dir_name.to_str().filter(|n| {
                n.len() == 2
                    && n.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
            let is_dir = fan_out.file_type().is_ok_and(|t| t.is_dir());
            let Some(prefix) = prefix.filter(|_| is_dir) else {
                tracing::warn!(path = %fan_out.path().display(), "unexpected entry in chunks/, ignored");
                continue;
            };
            for entry in disk::read_dir(&fan_out.path())? {
                let path = entry.path();
                let key = entry
                    .file_name()
                    .to_str()
                    .filter(|n| n.starts_with(prefix))
                    .and_then(|n| n.parse::<Id>().ok())
                    .filter(|k| k.to_hex() == entry.file_name().to_string_lossy());
                let meta = entry
                    .metadata()
                    .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?;
                match key {
                    // No chunk is that long: moved aside, not indexed.
                    Some(key)
                        if meta.is_file() && beyond_chunk_limit(&key, meta.len()).is_some() =>
                    {
                        self.quarantine_if_corrupt(&key)?;
                    }
                    Some(key) if meta.is_file() => found.push((key, meta.len())),
                    _ => {
                        tracing::warn!(path = %path.display(), "unexpected entry in chunks/, ignored");
                    }
                }
            }
            let mut index = self.index();
            for (key, len) in found.drain(..) {
                index.insert_chunk(key, len, now);
            }
        }
        Ok(())
    }

    /// Counts the chunks already in `quarantine/`, so the corrupt count
    /// survives a restart until an operator deals with them.
    pub(super) fn scan_quarantine(&self) -> Result<()> {
        let count = disk::read_dir(&self.layout().quarantine)?
            .iter()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(QUARANTINED_CHUNK_PREFIX))
            })
            .count();
        let mut index = self.index();
        for _ in 0..count {
            index.count_corrupt_chunk();
        }
        Ok(())
    }
}

/// A streamed write of one chunk: bytes go to a temporary file while their
/// key is computed, so memory stays bounded whatever the chunk size.
/// [`ChunkWriter::commit`] checks the hash and moves the file into place;
/// dropping the writer without committing removes the temporary file.
#[derive(Debug)]
pub struct ChunkWriter {
    store: Store,
    key: Id,
    tmp: TmpFile,
    hasher: KeyHasher,
    len: u64,
}

impl ChunkWriter {
    /// The key the bytes must hash to.
    pub fn key(&self) -> &Id {
        &self.key
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`. Fails with `Error::InvalidArgument` once the chunk
    /// would pass [`crate::MAX_CHUNK_BYTES`], so a peer cannot fill the disk
    /// through one endless stream.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = self.len + data.len() as u64;
        check_chunk_len(&self.key, len)?;
        stages::time(Stage::DiskWrite, || self.tmp.write_all(data))?;
        stages::time(Stage::ChunkCheck, || self.hasher.update(data));
        self.len = len;
        Ok(())
    }

    /// Checks the bytes against the key (`Error::Corrupt` and nothing kept
    /// otherwise), makes them durable and moves them into place, as last
    /// touched `age` ago elsewhere (as [`Store::put_checked_chunk`] takes
    /// it). Returns `false` if an intact copy was already stored.
    pub fn commit(self, age: Duration) -> Result<bool> {
        let ChunkWriter {
            store,
            key,
            mut tmp,
            hasher,
            len,
        } = self;
        // A key made the old way is checked on the finished file: the
        // bytes are no longer in memory.
        let checked = hasher.check(&key, || {
            tmp.finish()?;
            old_key_of_file(store.layout(), tmp.path())
                .map_err(|e| Error::io(format!("hashing {}", tmp.path().display()), e))
        })?;
        if let Err(actual) = checked {
            return Err(mismatch(&key, &actual));
        }
        stages::time(Stage::DiskSync, || {
            tmp.finish()?;
            store.commit_chunk(&key, tmp, len, touched_ago(age))
        })
    }
}

/// Chunk bytes checked against their key: what the store writes and what
/// peers hand over. Only [`CheckedChunk::new`] and [`ChunkHasher::finish`]
/// make one, so no write skips the check and no path hashes the same bytes
/// twice (but for a chunk keyed the old way, which `chunk_key.rs` checks
/// a second way).
#[derive(Clone, Debug)]
pub struct CheckedChunk {
    key: Id,
    data: Bytes,
}

impl CheckedChunk {
    /// Checks that `data` is within the size limit and hashes to `key`
    /// (`Error::Corrupt` otherwise).
    pub fn new(key: Id, data: Bytes) -> Result<CheckedChunk> {
        check_chunk_len(&key, data.len() as u64)?;
        let mut hasher = KeyHasher::new();
        hasher.update(&data);
        check_bytes(&hasher, &key, &data)?;
        Ok(CheckedChunk { key, data })
    }

    /// The chunk of `data`: its key is made from them, so only the size
    /// limit can refuse it.
    pub fn of(data: Bytes) -> Result<CheckedChunk> {
        Ok(CheckedChunk::hashed(data)?.0)
    }

    /// [`CheckedChunk::of`], with the BLAKE3 hash the key was made from.
    pub fn hashed(data: Bytes) -> Result<(CheckedChunk, [u8; 32])> {
        let hash = chunk_hash(&data);
        let key = key_of_hash(&hash);
        check_chunk_len(&key, data.len() as u64)?;
        Ok((CheckedChunk { key, data }, hash))
    }

    pub fn key(&self) -> &Id {
        &self.key
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn into_data(self) -> Bytes {
        self.data
    }
}

/// The pieces of one chunk gathered as they arrive, unchecked. Refuses to
/// grow past [`crate::MAX_CHUNK_BYTES`], so an endless stream cannot take
/// memory. For a reader that checks the bytes some other way (a download
/// checked as a whole file); [`ChunkHasher`] checks them against the key.
#[derive(Debug)]
pub struct ChunkBuffer {
    key: Id,
    buf: AlignedBuf,
}

/// Most memory reserved up front on a sender's word; more grows with what
/// actually arrives. Covers the default chunk size in one allocation.
pub(super) const PREALLOCATED_BYTES: usize = 8 * 1024 * 1024;

impl ChunkBuffer {
    /// A buffer for chunk `key` of (the sender says) `size` bytes, aligned
    /// so that a direct write takes the gathered bytes as they are.
    pub fn new(key: Id, size: usize) -> ChunkBuffer {
        ChunkBuffer {
            key,
            buf: AlignedBuf::with_room(size.min(PREALLOCATED_BYTES)),
        }
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Keeps one piece.
    pub fn push(&mut self, piece: &[u8]) -> Result<()> {
        check_chunk_len(&self.key, (self.buf.len() + piece.len()) as u64)?;
        self.buf.extend_from_slice(piece);
        Ok(())
    }

    /// The gathered bytes, as they came.
    pub fn into_bytes(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Hashes a chunk while its pieces arrive and gathers them, so the check
/// is done when the last piece lands instead of starting then. Within the
/// same size limit as [`ChunkBuffer`].
#[derive(Debug)]
pub struct ChunkHasher {
    hasher: KeyHasher,
    buf: ChunkBuffer,
}

impl ChunkHasher {
    /// A hasher for chunk `key` of (the sender says) `size` bytes.
    pub fn new(key: Id, size: usize) -> ChunkHasher {
        ChunkHasher {
            hasher: KeyHasher::new(),
            buf: ChunkBuffer::new(key, size),
        }
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Hashes and keeps one piece.
    pub fn push(&mut self, piece: &[u8]) -> Result<()> {
        self.buf.push(piece)?;
        self.hasher.update(piece);
        Ok(())
    }

    /// The gathered bytes, if they hash to the key (`Error::Corrupt`
    /// otherwise).
    pub fn finish(self) -> Result<CheckedChunk> {
        let key = self.buf.key;
        let data = self.buf.into_bytes();
        check_bytes(&self.hasher, &key, &data)?;
        Ok(CheckedChunk { key, data })
    }
}

/// The instant `age` ago, or now if the clock cannot reach that far back
/// (a younger touch only delays a collection).
pub(super) fn touched_ago(age: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

/// Why `len` bytes cannot be chunk `key`'s, if they cannot: no chunk is
/// longer than [`crate::MAX_CHUNK_BYTES`]. Bytes arriving that long are
/// the sender's error ([`check_chunk_len`]); a file on disk that long is
/// corrupt ([`check_file`]).
fn beyond_chunk_limit(key: &Id, len: u64) -> Option<String> {
    (len > crate::MAX_CHUNK_BYTES as u64).then(|| {
        format!(
            "chunk {key}: {len} bytes, more than the limit of {}",
            crate::MAX_CHUNK_BYTES
        )
    })
}

/// `InvalidArgument` unless `len` bytes can be chunk `key`'s: for bytes
/// arriving, and a `PutChunk` header before them.
pub(crate) fn check_chunk_len(key: &Id, len: u64) -> Result<()> {
    beyond_chunk_limit(key, len).map_or(Ok(()), |why| Err(Error::invalid(why)))
}

/// Whether `data`, fed whole to `hasher`, is chunk `key`'s
/// (`Error::Corrupt` otherwise).
fn check_bytes(hasher: &KeyHasher, key: &Id, data: &[u8]) -> Result<()> {
    let checked = hasher.check(key, || Ok::<_, Error>(Id::hash(data)))?;
    checked.map_err(|actual| mismatch(key, &actual))
}

/// Whether the chunk file at `path` holds chunk `key`'s bytes: `Err` is
/// the `Error::Corrupt` saying why not. A file longer than any chunk can
/// be is not read at all.
fn check_file(layout: &Layout, path: &Path, key: &Id) -> io::Result<Result<()>> {
    if let Some(why) = beyond_chunk_limit(key, fs::metadata(path)?.len()) {
        return Ok(Err(Error::Corrupt(why)));
    }
    let mut hasher = KeyHasher::new();
    layout.read_chunk_pieces(path, |p| hasher.update(p))?;
    let checked = hasher.check(key, || old_key_of_file(layout, path))?;
    Ok(checked.map_err(|actual| mismatch(key, &actual)))
}

/// The key the chunk file at `path` has the old way (SHA-1 of its bytes).
fn old_key_of_file(layout: &Layout, path: &Path) -> io::Result<Id> {
    let mut old = OldKeyHasher::default();
    layout.read_chunk_pieces(path, |p| old.update(p))?;
    Ok(old.key())
}

fn mismatch(key: &Id, actual: &Id) -> Error {
    Error::Corrupt(format!("chunk {key}: bytes hash to {actual}"))
}

fn not_found(key: &Id) -> Error {
    Error::NotFound(format!("chunk {key}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::io::Read;

    use super::super::tests::open_temp;
    use super::*;
    use crate::store::chunk_key;

    fn count(dir: &std::path::Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    /// Every chunk file under `chunks/`, across fan-out dirs.
    fn chunk_files(root: &std::path::Path) -> usize {
        fs::read_dir(root.join("chunks"))
            .unwrap()
            .map(|d| count(&d.unwrap().path()))
            .sum()
    }

    fn flip_a_byte(store: &Store, key: &Id) {
        let path = store.layout().chunk_path(key);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn round_trip() {
        let (_dir, store) = open_temp();
        let data = b"hello, ring".to_vec();
        let key = chunk_key(&data);
        assert!(!store.has_chunk(&key));
        assert!(store.put_chunk(&key, &data).unwrap());
        assert!(store.has_chunk(&key));
        assert_eq!(store.read_chunk(&key).unwrap().data(), &data);
        assert_eq!(store.chunk_len(&key).unwrap(), data.len() as u64);
        let (mut file, len) = store.open_chunk(&key).unwrap();
        let mut streamed = Vec::new();
        file.read_to_end(&mut streamed).unwrap();
        assert_eq!((streamed, len), (data.clone(), data.len() as u64));
        store.verify_chunk(&key).unwrap();
        assert_eq!(store.chunk_keys().unwrap(), vec![key]);
        let stats = store.stats();
        assert_eq!((stats.chunks, stats.bytes), (1, data.len() as u64));

        // A second copy is recognised, not rewritten or double-counted.
        assert!(!store.put_chunk(&key, &data).unwrap());
        assert_eq!(store.stats(), stats);

        // The empty chunk is a chunk like any other.
        let empty = chunk_key(b"");
        assert!(store.put_chunk(&empty, b"").unwrap());
        assert!(store.read_chunk(&empty).unwrap().data().is_empty());
    }

    /// Chunks stored before keys were made from BLAKE3 are keyed by SHA-1
    /// of their bytes. They are still taken, read and checked, and caught
    /// when damaged, whichever way they arrive.
    #[test]
    fn chunks_keyed_the_old_way_are_still_taken_and_checked() {
        let (dir, store) = open_temp();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let old = Id::hash(&data);
        assert_ne!(old, chunk_key(&data));
        assert!(store.put_chunk(&old, &data).unwrap());
        assert_eq!(store.read_chunk(&old).unwrap().data(), &data);
        store.verify_chunk(&old).unwrap();
        assert!(store.check_chunk(&old).unwrap());
        // An intact copy is recognised, not rewritten.
        assert!(!store.put_chunk(&old, &data).unwrap());

        let mut hasher = ChunkHasher::new(old, data.len());
        data.chunks(9_000).for_each(|p| hasher.push(p).unwrap());
        assert_eq!(hasher.finish().unwrap().key(), &old);

        let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        let other_old = Id::hash(&other);
        let mut writer = store.chunk_writer(other_old).unwrap();
        other.chunks(30_000).for_each(|p| writer.write(p).unwrap());
        assert!(writer.commit(Duration::ZERO).unwrap());
        assert_eq!(store.read_chunk(&other_old).unwrap().data(), &other);

        flip_a_byte(&store, &old);
        let err = store.verify_chunk(&old).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(count(&dir.path().join("quarantine")), 1);
        let mut bad = data.clone();
        bad[0] ^= 1;
        let err = store.put_chunk(&old, &bad).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn missing_chunk_is_not_found() {
        let (_dir, store) = open_temp();
        let key = Id::hash(b"nowhere");
        assert!(matches!(store.read_chunk(&key), Err(Error::NotFound(_))));
        assert!(matches!(store.verify_chunk(&key), Err(Error::NotFound(_))));
        assert!(matches!(store.open_chunk(&key), Err(Error::NotFound(_))));
        assert!(matches!(store.chunk_len(&key), Err(Error::NotFound(_))));
        store.delete_chunk(&key).unwrap();
        store.quarantine_chunk(&key).unwrap();
    }

    #[test]
    fn key_mismatch_is_rejected_and_leaves_nothing() {
        let (dir, store) = open_temp();
        let wrong = Id::hash(b"something else");
        let err = store.put_chunk(&wrong, b"these bytes").unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");

        let mut writer = store.chunk_writer(wrong).unwrap();
        writer.write(b"these ").unwrap();
        writer.write(b"bytes").unwrap();
        let err = writer.commit(Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");

        assert_eq!(chunk_files(dir.path()), 0);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(store.stats().chunks, 0);
        assert!(!store.has_chunk(&wrong));
    }

    #[test]
    fn corruption_is_detected_and_quarantined() {
        let (dir, store) = open_temp();
        let a = vec![1u8; 1000];
        let b = vec![2u8; 1000];
        let (ka, kb) = (chunk_key(&a), chunk_key(&b));
        store.put_chunk(&ka, &a).unwrap();
        store.put_chunk(&kb, &b).unwrap();
        flip_a_byte(&store, &ka);
        flip_a_byte(&store, &kb);

        let err = store.read_chunk(&ka).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        let err = store.verify_chunk(&kb).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");

        for key in [ka, kb] {
            assert!(!store.has_chunk(&key));
            assert!(matches!(store.read_chunk(&key), Err(Error::NotFound(_))));
        }
        // Moved aside, not deleted: the bad bytes are still there to inspect.
        assert_eq!(count(&dir.path().join("quarantine")), 2);
        let stats = store.stats();
        assert_eq!((stats.chunks, stats.bytes, stats.corrupt_chunks), (0, 0, 2));

        // A good copy can be stored again, and the count survives a restart.
        assert!(store.put_chunk(&ka, &a).unwrap());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.stats().corrupt_chunks, 2);
        assert_eq!(store.read_chunk(&ka).unwrap().data(), &a);
    }

    /// A truncated file is corrupt; so is one longer than any chunk, found
    /// without being read (these are sparse, 5 GiB: hashing one would take
    /// seconds), and a restart quarantines such a file instead of indexing
    /// it.
    #[test]
    fn truncated_or_oversized_files_are_corrupt() {
        let (dir, store) = open_temp();
        let data = vec![3u8; 100];
        let key = chunk_key(&data);
        store.put_chunk(&key, &data).unwrap();
        fs::write(store.layout().chunk_path(&key), &data[..50]).unwrap();
        assert!(matches!(store.verify_chunk(&key), Err(Error::Corrupt(_))));
        assert_eq!(store.stats().corrupt_chunks, 1);

        let too_long = |key: &Id| {
            let file = fs::File::create(store.layout().chunk_path(key)).unwrap();
            file.set_len(5 << 30).unwrap();
        };
        store.put_chunk(&key, &data).unwrap();
        too_long(&key);
        let err = store.verify_chunk(&key).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(m) if m.contains("more than the limit")),
            "{err:?}"
        );
        assert_eq!(store.stats().corrupt_chunks, 2);

        let stray = chunk_key(b"not stored");
        fs::create_dir_all(store.layout().chunk_path(&stray).parent().unwrap()).unwrap();
        too_long(&stray);
        store.put_chunk(&key, &data).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let stats = store.stats();
        assert_eq!(
            (stats.chunks, stats.bytes, stats.corrupt_chunks),
            (1, data.len() as u64, 3)
        );
        assert!(!store.has_chunk(&stray));
        assert_eq!(count(&dir.path().join("quarantine")), 3);
    }

    #[test]
    fn put_replaces_a_corrupt_copy() {
        let (dir, store) = open_temp();
        let data = vec![9u8; 300];
        let key = chunk_key(&data);
        store.put_chunk(&key, &data).unwrap();
        flip_a_byte(&store, &key);
        // Not an intact copy, so the put writes and reports it did.
        assert!(store.put_chunk(&key, &data).unwrap());
        assert_eq!(store.read_chunk(&key).unwrap().data(), &data);
        assert_eq!(count(&dir.path().join("quarantine")), 1);
        let stats = store.stats();
        assert_eq!(
            (stats.chunks, stats.bytes, stats.corrupt_chunks),
            (1, 300, 1)
        );
    }

    #[test]
    fn quarantine_chunk_rechecks_before_moving() {
        let (dir, store) = open_temp();
        let data = vec![4u8; 64];
        let key = chunk_key(&data);
        store.put_chunk(&key, &data).unwrap();
        // The caller thinks it is bad, but the bytes on disk are fine.
        store.quarantine_chunk(&key).unwrap();
        assert!(store.has_chunk(&key));
        flip_a_byte(&store, &key);
        store.quarantine_chunk(&key).unwrap();
        assert!(!store.has_chunk(&key));
        assert_eq!(count(&dir.path().join("quarantine")), 1);
    }

    #[test]
    fn delete_removes_file_and_counts() {
        let (_dir, store) = open_temp();
        let data = b"short-lived".to_vec();
        let key = chunk_key(&data);
        store.put_chunk(&key, &data).unwrap();
        store.delete_chunk(&key).unwrap();
        assert!(!store.has_chunk(&key));
        assert_eq!(store.stats(), super::super::StoreStats::default());
        store.delete_chunk(&key).unwrap(); // idempotent
    }

    #[test]
    fn keys_in_wraps_around_zero() {
        let (_dir, store) = open_temp();
        let mut keys: Vec<Id> = (0u32..40)
            .map(|i| {
                let data = i.to_be_bytes();
                let key = chunk_key(&data);
                store.put_chunk(&key, &data).unwrap();
                key
            })
            .collect();
        keys.sort();
        assert_eq!(store.chunk_keys().unwrap(), keys);
        // An arc from the 30th key round past zero to the 5th.
        let (start, end) = (keys[30], keys[5]);
        let got = store.chunk_keys_in(&start, &end).unwrap();
        let mut expected: Vec<Id> = keys[31..].to_vec();
        expected.extend_from_slice(&keys[..=5]);
        assert_eq!(got, expected);
        assert!(got.iter().all(|k| k.in_half_open(&start, &end)));
        assert_eq!(
            store.chunk_keys_in(&keys[2], &keys[4]).unwrap(),
            keys[3..=4]
        );
        assert_eq!(store.chunk_keys_in(&keys[7], &keys[7]).unwrap().len(), 40);
    }

    #[test]
    fn writer_commits_streamed_bytes() {
        let (dir, store) = open_temp();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let key = chunk_key(&data);
        let mut writer = store.chunk_writer(key).unwrap();
        assert!(writer.is_empty());
        for piece in data.chunks(7_000) {
            writer.write(piece).unwrap();
        }
        assert_eq!((*writer.key(), writer.len()), (key, data.len() as u64));
        assert!(writer.commit(Duration::ZERO).unwrap());
        assert_eq!(store.read_chunk(&key).unwrap().data(), &data);
        assert_eq!(count(&dir.path().join("tmp")), 0);

        // Streaming a chunk that is already stored changes nothing.
        let mut again = store.chunk_writer(key).unwrap();
        again.write(&data).unwrap();
        assert!(!again.commit(Duration::ZERO).unwrap());
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(store.stats().chunks, 1);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (dir, store) = open_temp();
        let key = Id::hash(b"never finished");
        let mut writer = store.chunk_writer(key).unwrap();
        writer.write(b"never").unwrap();
        assert_eq!(count(&dir.path().join("tmp")), 1);
        drop(writer);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert!(!store.has_chunk(&key));
        assert_eq!(store.stats().chunks, 0);
    }

    #[test]
    fn writer_refuses_to_grow_past_the_limit() {
        let (dir, store) = open_temp();
        let mut writer = store.chunk_writer(Id::hash(b"endless")).unwrap();
        let piece = vec![0u8; 4 << 20];
        let mut written = 0usize;
        let err = loop {
            match writer.write(&piece) {
                Ok(()) => written += piece.len(),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(written, crate::MAX_CHUNK_BYTES);
        drop(writer);
        assert_eq!(count(&dir.path().join("tmp")), 0);
    }

    #[test]
    fn concurrent_puts_of_one_chunk_count_once() {
        let (_dir, store) = open_temp();
        let data = vec![5u8; 50_000];
        let key = chunk_key(&data);
        let stored: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| store.put_chunk(&key, &data).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(stored, 1);
        let stats = store.stats();
        assert_eq!((stats.chunks, stats.bytes), (1, 50_000));
    }
}
