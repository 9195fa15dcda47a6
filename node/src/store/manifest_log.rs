//! The manifest log: every manifest a node stores, as records appended to
//! one file (`manifests/log`), with an in-memory map from each key to its
//! newest record.
//!
//! One file per manifest cost an r=3 ring three inode creations, three
//! renames and six fsyncs (file and directory) for every small file, where a
//! plain server pays one inode; a profile of small uploads had 28% of all
//! samples creating those files (PERFORMANCE.md, change 45). Here a write is
//! one append and one `fdatasync`, and writers that overlap share the sync
//! (group commit): a writer that finds a sync under way waits for it and
//! then for one more at most.
//!
//! A record, little-endian:
//!
//! ```text
//! len u32 | kind u8 | key [20] | payload [len] | BLAKE3 of all before [16]
//! ```
//!
//! `kind` 1 puts `payload` under `key`; 2 removes `key` (no payload). Every
//! read checks the record's hash, so a damaged record is
//! [`Error::Corrupt`], never wrong bytes. At open the log is read front to
//! back; at the first record that is cut short or fails its hash (a write a
//! crash tore, or damage), the rest of the file is copied to `quarantine/`
//! and cut off. Records after damage in the middle go with it: they are
//! copies the ring holds elsewhere, and the repair loop brings them back.
//!
//! Records superseded or removed stay in the file until a compaction
//! rewrites the live ones into a new file, renamed over the old: when the
//! dead bytes pass both the live bytes and [`COMPACT_MIN_BYTES`], so the
//! file stays under about twice what it holds plus that floor. A write
//! that finds the log due asks the log's compaction thread for one and is
//! answered without waiting for it (a writer used to run it, and wait the
//! whole copy: PERFORMANCE.md, change 57); an open compacts a log left due
//! before it returns. Dropping the log stops that thread, after the
//! compaction under way if there is one, so no two handles ever write one
//! file. The copy is synced a batch at a time ([`PacedCopy`]) and the old
//! file freed a step at a time ([`free_in_steps`]), so the appends' syncs
//! meanwhile never queue behind the whole of either (change 58).
//!
//! The file is kept longer than its records, the rest zeros written ahead
//! ([`ROOM_MIN`] to [`ROOM_MAX`] at a time), and records are written over
//! those zeros. An append that grows a file changes its size, which its
//! `fdatasync` must then write as well (on ext4, the inode: a second write
//! and a wait for it); one written over blocks already on disk syncs its
//! own bytes alone. Three logs on one disk, each appending 4.4 KB records
//! and syncing after each, did 1.7× the syncs per second that way
//! (PERFORMANCE.md, change 56). A zero header is no record, so the replay
//! at open stops where the zeros start; zeros alone after the last good
//! record are that room, not damage, and stay.
//!
//! A record is in the map, and so readable, as soon as it is appended,
//! before its sync returns, as a renamed manifest file used to be before
//! its directory's fsync; its writer is answered only after the sync. A
//! record whose sync failed may be found again at the next open.
//!
//! Locks: `state` is held for an append (a `pwrite` of one record) and for
//! the end of a compaction (the records appended while it copied, and the
//! swap), never across a sync of appends; `synced` is held across a sync,
//! and taken before `state` when both are; `compaction` lets one run at a
//! time and is taken before `state`; `wanted` is taken alone.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::chord::{Id, ID_BYTES};
use crate::error::{Error, Result};
use crate::stages::{self, Stage};

/// Record kinds.
const PUT: u8 = 1;
const REMOVE: u8 = 2;
/// Bytes before a record's payload: length, kind, key.
const HEAD_BYTES: usize = 4 + 1 + ID_BYTES;
/// Bytes of BLAKE3 kept after the payload.
const HASH_BYTES: usize = 16;
/// Dead bytes below which the log is never compacted.
pub const COMPACT_MIN_BYTES: u64 = 8 * 1024 * 1024;
/// Zeroed room written past the records when an append needs it: an
/// eighth of the records' length, at least `ROOM_MIN` and at most
/// `ROOM_MAX`.
const ROOM_MIN: u64 = 64 * 1024;
const ROOM_MAX: u64 = 8 * 1024 * 1024;
/// The room written after `end` bytes of records.
fn room_after(end: u64) -> u64 {
    (end / 8).clamp(ROOM_MIN, ROOM_MAX)
}

/// The zeros room is written from, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Where a key's newest record sits in the current file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    offset: u64,
    /// The whole record's length, head and hash included.
    len: u64,
}

/// An append-only log of keyed payloads; see the module docs. Its
/// compactions run on a thread of its own, which dropping the log stops
/// (waiting for a compaction under way to end).
#[derive(Debug)]
pub(super) struct ManifestLog {
    log: Arc<Log>,
    compactor: Option<JoinHandle<()>>,
}

/// The log itself, shared with its compaction thread.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    /// Where a compaction writes the new file before renaming it over.
    compacting: PathBuf,
    /// Most payload bytes a record may carry.
    max_payload: u64,
    /// Dead bytes below which no compaction runs ([`COMPACT_MIN_BYTES`];
    /// tests change it).
    compact_floor: AtomicU64,
    state: Mutex<State>,
    /// Bytes of [`State::appended`] known durable.
    synced: Mutex<u64>,
    /// Held by the one compaction that may run at a time.
    compaction: Mutex<()>,
    /// Set when a compaction's rename could not be made durable: every
    /// sync then syncs the directory too, until that succeeds, so no write
    /// is acknowledged that a crash could take back with the rename.
    rename_unsynced: AtomicBool,
    /// What the compaction thread is asked to do, and its bell.
    wanted: Mutex<Wanted>,
    bell: Condvar,
    /// Names of the threads compactions ran on, for the tests.
    #[cfg(test)]
    compacted_on: Mutex<Vec<Option<String>>>,
}

/// What the compaction thread is asked to do.
#[derive(Debug, Default)]
struct Wanted {
    /// A write found the log due.
    compaction: bool,
    /// The log is dropped: end.
    stop: bool,
}

#[derive(Debug)]
struct State {
    /// The current file; readers clone the handle and read outside the
    /// lock, so a compaction's rename leaves their reads intact.
    file: Arc<File>,
    /// Where the next record goes in `file`.
    end: u64,
    /// The file's length: zeros from `end` to here.
    allocated: u64,
    /// Bytes ever appended, across compactions: a writer waits for the
    /// sync that covers its own mark.
    appended: u64,
    /// Each key's newest put record.
    at: HashMap<Id, Loc>,
    /// Bytes of the records in `at`.
    live: u64,
}

impl State {
    /// Makes sure `len` bytes fit between `end` and `allocated`, writing
    /// zeroed room past `allocated` if they do not; on a disk too full for
    /// the room, just enough for `len`. The room reaches the disk with the
    /// next sync.
    fn make_room(&mut self, len: u64) -> io::Result<()> {
        let need = self.end + len;
        if need <= self.allocated {
            return Ok(());
        }
        if self
            .zero_to((need + room_after(self.end)).next_multiple_of(4096))
            .is_ok()
        {
            return Ok(());
        }
        self.zero_to(need)
    }

    /// Writes zeros from `allocated` to `to`; on an error, cuts the file
    /// back to `allocated`.
    fn zero_to(&mut self, to: u64) -> io::Result<()> {
        let mut at = self.allocated;
        while at < to {
            let piece = (to - at).min(ZEROS.len() as u64);
            if let Err(e) = self.file.write_all_at(&ZEROS[..to_usize(piece)], at) {
                let _ = self.file.set_len(self.allocated);
                return Err(e);
            }
            at += piece;
        }
        self.allocated = to;
        Ok(())
    }

    /// Whether the dead bytes pass both the live ones and `floor`.
    fn compaction_due(&self, floor: u64) -> bool {
        self.end - self.live > self.live.max(floor)
    }
}

/// What [`ManifestLog::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Opened {
    /// Records read.
    pub records: u64,
    /// Bytes from the first bad record on copied to quarantine (the file
    /// is cut there; zeros at the end of what follows are not copied).
    pub cut_bytes: u64,
}

impl ManifestLog {
    /// Opens (creating if need be) the log at `path`, rebuilding the map
    /// from its records. Zeros alone after the last good record are room
    /// for the next ones; anything else after it is damage, copied to
    /// `quarantine` (a file that must not exist) and cut off. `visit` sees
    /// every good record in file order as it is read, its payload for a
    /// put and `None` for a removal, so the caller builds what it needs in
    /// the same pass instead of reading each live record again.
    pub fn open(
        path: &Path,
        quarantine: &Path,
        max_payload: u64,
        mut visit: impl FnMut(&Id, Option<&[u8]>),
    ) -> Result<(ManifestLog, Opened)> {
        let context = |what: &str| format!("{what} the manifest log {}", path.display());
        let compacting = path.with_extension("compacting");
        // A compaction a crash cut short; the log it was to replace is whole.
        match fs::remove_file(&compacting) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(context("clearing a compaction of"), e));
            }
            _ => {}
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(context("opening"), e))?;
        if created {
            super::disk::fsync_parent(path)?;
        }
        let mut at = HashMap::new();
        let (good, records) = {
            let mut reader = BufReader::with_capacity(1 << 20, &file);
            reader
                .seek(SeekFrom::Start(0))
                .and_then(|_| replay(reader, 0, max_payload, &mut at, &mut visit))
                .map_err(|e| Error::io(context("reading"), e))?
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(context("reading"), e))?
            .len();
        // Past the good records: the zeroed room alone, or damage (cut off
        // with whatever follows it, trailing zeros left out of the copy).
        let damaged =
            last_nonzero(&file, good, len).map_err(|e| Error::io(context("reading"), e))?;
        let (cut_bytes, allocated) = match damaged {
            None => (0, len),
            Some(last) => (last + 1 - good, good),
        };
        if cut_bytes > 0 {
            cut_tail(&file, good, good + cut_bytes, quarantine)
                .map_err(|e| Error::io(context("cutting"), e))?;
            tracing::warn!(
                log = %path.display(),
                at = good,
                bytes = cut_bytes,
                to = %quarantine.display(),
                "manifest log damaged or torn: the rest from there is quarantined"
            );
        }
        let live = at.values().map(|l| l.len).sum();
        let log = Log {
            path: path.to_path_buf(),
            compacting,
            max_payload,
            compact_floor: AtomicU64::new(COMPACT_MIN_BYTES),
            state: Mutex::new(State {
                file: Arc::new(file),
                end: good,
                allocated,
                appended: good,
                at,
                live,
            }),
            synced: Mutex::new(good),
            compaction: Mutex::new(()),
            rename_unsynced: AtomicBool::new(false),
            wanted: Mutex::new(Wanted::default()),
            bell: Condvar::new(),
            #[cfg(test)]
            compacted_on: Mutex::new(Vec::new()),
        };
        // A log left due (its last compaction failed, say on a full disk)
        // is compacted now rather than at the next write, which a node
        // that only serves reads may never get.
        log.compact_if_due();
        let log = Arc::new(log);
        let compactor = {
            let log = Arc::clone(&log);
            thread::Builder::new()
                .name("manifest-compaction".into())
                .spawn(move || log.run_compactions())
                .map_err(|e| Error::io(context("starting the compaction thread of"), e))?
        };
        Ok((
            ManifestLog {
                log,
                compactor: Some(compactor),
            },
            Opened { records, cut_bytes },
        ))
    }

    /// The payload under `key`, or `None`. A record that fails its hash or
    /// is not what the map says is `Error::Corrupt`.
    pub fn get(&self, key: &Id) -> Result<Option<Vec<u8>>> {
        self.log.get(key)
    }

    /// The whole record under `key` as it is on disk, unchecked (to set a
    /// damaged one aside), or `None`.
    pub fn record(&self, key: &Id) -> Result<Option<Vec<u8>>> {
        self.log.record(key)
    }

    /// Appends `payload` under `key` and returns once it is durable, not
    /// waiting for a compaction it finds due. The caller holds the key's
    /// lock.
    pub fn put(&self, key: &Id, payload: &[u8]) -> Result<()> {
        self.log.put(key, payload)
    }

    /// Appends a removal of `key`, if it has a record, and returns once it
    /// is durable. The caller holds the key's lock.
    pub fn remove(&self, key: &Id) -> Result<()> {
        self.log.remove(key)
    }

    /// Length of the records in the current file.
    pub fn records_len(&self) -> u64 {
        self.log.state().end
    }

    /// Bytes of the current file, and of the records in it still live.
    #[cfg(test)]
    pub fn sizes(&self) -> (u64, u64) {
        let state = self.log.state();
        (state.end, state.live)
    }

    /// Sets the dead bytes below which no compaction runs.
    #[cfg(test)]
    fn set_compact_floor(&self, floor: u64) {
        self.log.compact_floor.store(floor, Ordering::Relaxed);
    }

    /// Returns once no compaction is due, asked for or under way (panics
    /// after ten seconds).
    #[cfg(test)]
    fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let asked = self.log.wanted().compaction;
            if !asked {
                let _idle = self.log.compaction.lock().unwrap();
                if !self.log.due() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "compaction never settled"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for ManifestLog {
    fn drop(&mut self) {
        {
            let mut wanted = self.log.wanted();
            wanted.stop = true;
            self.log.bell.notify_all();
        }
        if let Some(thread) = self.compactor.take() {
            let _ = thread.join();
        }
    }
}

impl Log {
    /// [`ManifestLog::get`].
    fn get(&self, key: &Id) -> Result<Option<Vec<u8>>> {
        let Some(record) = self.record(key)? else {
            return Ok(None);
        };
        let (kind, stored_key, payload) = parse(&record).ok_or_else(|| {
            Error::Corrupt(format!("manifest {key}: its log record fails its hash"))
        })?;
        if kind != PUT || stored_key != *key {
            return Err(Error::Corrupt(format!(
                "manifest {key}: its log record is for another key or no put"
            )));
        }
        Ok(Some(payload.to_vec()))
    }

    /// [`ManifestLog::record`].
    fn record(&self, key: &Id) -> Result<Option<Vec<u8>>> {
        let (file, loc) = {
            let state = self.state();
            match state.at.get(key) {
                Some(loc) => (Arc::clone(&state.file), *loc),
                None => return Ok(None),
            }
        };
        let mut record = vec![0u8; to_usize(loc.len)];
        file.read_exact_at(&mut record, loc.offset)
            .map_err(|e| Error::io(format!("reading manifest {key} from the log"), e))?;
        Ok(Some(record))
    }

    /// [`ManifestLog::put`].
    fn put(&self, key: &Id, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 > self.max_payload {
            return Err(Error::invalid(format!(
                "manifest {key} is {} bytes, the limit is {}",
                payload.len(),
                self.max_payload
            )));
        }
        self.append(key, PUT, payload)
    }

    /// [`ManifestLog::remove`].
    fn remove(&self, key: &Id) -> Result<()> {
        if !self.state().at.contains_key(key) {
            return Ok(());
        }
        self.append(key, REMOVE, &[])
    }

    fn append(&self, key: &Id, kind: u8, payload: &[u8]) -> Result<()> {
        let record = encode(key, kind, payload);
        let mark = {
            let mut state = self.state();
            let offset = state.end;
            let written = stages::time(Stage::LogWrite, || {
                state.make_room(record.len() as u64)?;
                state.file.write_all_at(&record, offset)
            });
            if let Err(e) = written {
                // Cut off what part of it went in, and the room after it,
                // so the next record follows the last whole one and
                // nothing but zeros follows that.
                let _ = state.file.set_len(offset);
                state.allocated = offset;
                return Err(Error::io(format!("appending manifest {key} to the log"), e));
            }
            state.end += record.len() as u64;
            state.appended += record.len() as u64;
            let new = Loc {
                offset,
                len: record.len() as u64,
            };
            let old = if kind == PUT {
                state.live += new.len;
                state.at.insert(*key, new)
            } else {
                state.at.remove(key)
            };
            state.live -= old.map_or(0, |l| l.len);
            state.appended
        };
        stages::time(Stage::LogSync, || self.sync_to(mark)).map_err(|e| {
            Error::io(
                format!("syncing the manifest log {}", self.path.display()),
                e,
            )
        })?;
        if self.due() {
            self.wanted().compaction = true;
            self.bell.notify_one();
        }
        Ok(())
    }

    /// Returns once the first `mark` bytes ever appended are durable,
    /// syncing them unless a sync that covers them has already run.
    fn sync_to(&self, mark: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= mark {
            return Ok(());
        }
        let (file, appended) = {
            let state = self.state();
            (Arc::clone(&state.file), state.appended)
        };
        file.sync_data()?;
        if self.rename_unsynced.load(Ordering::Acquire) {
            super::disk::sync_parent(&self.path)?;
            self.rename_unsynced.store(false, Ordering::Release);
        }
        *synced = appended;
        Ok(())
    }

    /// Whether the dead bytes are due for a compaction.
    fn due(&self) -> bool {
        self.state()
            .compaction_due(self.compact_floor.load(Ordering::Relaxed))
    }

    fn wanted(&self) -> MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compaction thread: compacts each time a write asks, until the
    /// log is dropped.
    fn run_compactions(&self) {
        loop {
            {
                let mut wanted = self.wanted();
                while !wanted.compaction && !wanted.stop {
                    wanted = self.bell.wait(wanted).unwrap_or_else(|p| p.into_inner());
                }
                if wanted.stop {
                    return;
                }
                wanted.compaction = false;
            }
            self.compact_if_due();
        }
    }

    /// Compacts if the dead bytes are due and no other compaction runs; a
    /// failure leaves the old file in use and is only logged (the writes
    /// that found the log due have succeeded).
    fn compact_if_due(&self) {
        if !self.due() {
            return;
        }
        let Ok(_running) = self.compaction.try_lock() else {
            return;
        };
        #[cfg(test)]
        self.compacted_on
            .lock()
            .unwrap()
            .push(thread::current().name().map(str::to_string));
        match self.compact() {
            Ok(None) => {}
            Ok(Some((before, after))) => tracing::info!(
                log = %self.path.display(),
                before,
                after,
                "manifest log compacted"
            ),
            Err(e) => {
                let _ = fs::remove_file(&self.compacting);
                tracing::warn!(log = %self.path.display(), error = %e, "manifest log compaction failed; the old file stays");
            }
        }
    }

    /// Writes the live records to a new file and renames it over the log,
    /// returning the file's length before and after (`None` if another
    /// compaction made this one needless). The live records are copied
    /// with no lock held; only the records appended meanwhile are copied,
    /// and the new file swapped in, under the state lock, so appends and
    /// lookups wait for that tail alone.
    fn compact(&self) -> io::Result<Option<(u64, u64)>> {
        let (file, from, mut live) = {
            let state = self.state();
            if !state.compaction_due(self.compact_floor.load(Ordering::Relaxed)) {
                return Ok(None);
            }
            let live: Vec<(Id, Loc)> = state.at.iter().map(|(k, l)| (*k, *l)).collect();
            (Arc::clone(&state.file), state.end, live)
        };
        live.sort_by_key(|(_, l)| l.offset);
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.compacting)?;
        let mut at = HashMap::with_capacity(live.len());
        let mut offset = 0u64;
        let mut copy = PacedCopy::new(&new);
        for (key, loc) in live {
            file.read_exact_at(copy.next(to_usize(loc.len)), loc.offset)?;
            copy.filled()?;
            at.insert(
                key,
                Loc {
                    offset,
                    len: loc.len,
                },
            );
            offset += loc.len;
        }
        copy.finish()?;
        // The room the appends after the swap will write over, written
        // and synced with the copy. Left to the first append, it was up to
        // 8 MiB of zeros written under the lock, for the next sync to wait
        // for. A disk too full for it leaves the room to the appends: the
        // compaction is what frees the space.
        let mut room_end = (offset + room_after(offset)).next_multiple_of(4096);
        if let Err(e) = copy.zeros(room_end - offset).and_then(|()| copy.finish()) {
            tracing::debug!(log = %self.path.display(), error = %e, "no room written after the compacted records");
            new.set_len(offset)?;
            room_end = offset;
        }
        new.sync_data()?;

        let mut state = self.state();
        let mut tail = vec![0u8; to_usize(state.end - from)];
        state.file.read_exact_at(&mut tail, from)?;
        let (replayed, _) = replay(&tail[..], offset, self.max_payload, &mut at, &mut |_, _| {})?;
        if replayed != tail.len() as u64 {
            return Err(io::Error::other(
                "the log's newest records do not read back whole",
            ));
        }
        new.write_all_at(&tail, offset)?;
        new.sync_all()?;
        fs::rename(&self.compacting, &self.path)?;
        // From here the new file is the log under its name, so it takes
        // the appends whatever follows; the old one is unlinked.
        let before = state.end;
        state.file = Arc::new(new);
        state.end = offset + tail.len() as u64;
        state.allocated = state.end.max(room_end);
        state.live = at.values().map(|l| l.len).sum();
        state.at = at;
        if let Err(e) = super::disk::sync_parent(&self.path) {
            self.rename_unsynced.store(true, Ordering::Release);
            tracing::error!(log = %self.path.display(), error = %e, "syncing the directory after a compaction failed; every write syncs it until that works");
        }
        let sizes = (before, state.end);
        drop(state);
        free_in_steps(file);
        Ok(Some(sizes))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole before a panic could
        // interrupt it, so a poisoned lock leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frees the blocks of a log file a compaction has replaced (renamed
/// over, so unlinked) [`FREE_STEP_BYTES`] at a time, then closes it.
///
/// Closed whole, the last handle freed all of its blocks in one go; on a
/// file system mounted with `discard` (as this project's CI machine is),
/// that close took 62-76 ms for a log of about 100 MB, and the appends'
/// syncs waited for it (PERFORMANCE.md, change 58). The file is cut only
/// once no reader holds it: the state no longer hands it out, so readers
/// that took it before the swap are all that can; one still reading after
/// [`FREE_WAIT`] (none should be) leaves the freeing to its own close.
fn free_in_steps(mut file: Arc<File>) {
    let deadline = std::time::Instant::now() + FREE_WAIT;
    let file = loop {
        match Arc::try_unwrap(file) {
            Ok(file) => break file,
            Err(shared) if std::time::Instant::now() < deadline => {
                file = shared;
                thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => return,
        }
    };
    let Ok(mut len) = file.metadata().map(|meta| meta.len()) else {
        return;
    };
    while len > 0 {
        len = len.saturating_sub(FREE_STEP_BYTES);
        if file.set_len(len).is_err() {
            return;
        }
    }
}

/// Bytes a replaced log file is cut by at a time (see [`free_in_steps`]).
const FREE_STEP_BYTES: u64 = 4 * 1024 * 1024;

/// Longest wait for the readers of a replaced log file to let it go.
const FREE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A compaction's copy, written to its new file and synced
/// [`COPY_PACE_BYTES`] at a time, so that the device never holds more
/// than one batch of it ahead of a writer's sync.
///
/// Copied whole and synced once, a compaction of 87 MB handed the device
/// all of it at that sync, and every append's `fdatasync` waited behind
/// it: the slowest writes took 206-233 ms on a disk that wrote about
/// 400 MB/s (PERFORMANCE.md, change 57). Paced, with the old file freed
/// in steps as well, the slowest took 11-25 ms in six runs of seven (50
/// in the other) against 54-94 ms before, on a disk of 1.4 GB/s; either
/// alone left them at 40-83 ms (change 58).
struct PacedCopy<'a> {
    file: &'a File,
    batch: Vec<u8>,
    /// Where the next batch goes in the file.
    at: u64,
}

/// Bytes of a compaction's copy per batch (see [`PacedCopy`]).
const COPY_PACE_BYTES: usize = 1024 * 1024;

impl<'a> PacedCopy<'a> {
    fn new(file: &'a File) -> PacedCopy<'a> {
        PacedCopy {
            file,
            batch: Vec::with_capacity(COPY_PACE_BYTES),
            at: 0,
        }
    }

    /// Room for the next `len` bytes at the end of the batch, to be filled
    /// before [`PacedCopy::filled`].
    fn next(&mut self, len: usize) -> &mut [u8] {
        let start = self.batch.len();
        self.batch.resize(start + len, 0);
        &mut self.batch[start..]
    }

    /// Writes and syncs the batch once it is full.
    fn filled(&mut self) -> io::Result<()> {
        if self.batch.len() >= COPY_PACE_BYTES {
            self.write_batch()?;
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Adds `len` zeros.
    fn zeros(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 {
            // The batch is never full here: `filled` empties a full one.
            let piece = len.min((COPY_PACE_BYTES - self.batch.len()) as u64);
            self.next(to_usize(piece));
            self.filled()?;
            len -= piece;
        }
        Ok(())
    }

    /// Writes what is left, for the caller to sync; the copy can go on
    /// after it.
    fn finish(&mut self) -> io::Result<()> {
        self.write_batch()
    }

    fn write_batch(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.batch, self.at)?;
        self.at += self.batch.len() as u64;
        self.batch.clear();
        Ok(())
    }
}

/// One record's bytes.
fn encode(key: &Id, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEAD_BYTES + payload.len() + HASH_BYTES);
    // `put` caps payloads far below 4 GiB.
    record.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    record.push(kind);
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(payload);
    let hash = blake3::hash(&record);
    record.extend_from_slice(&hash.as_bytes()[..HASH_BYTES]);
    record
}

/// A whole record's kind, key and payload, if its length and hash hold.
fn parse(record: &[u8]) -> Option<(u8, Id, &[u8])> {
    let body_len = record.len().checked_sub(HASH_BYTES)?;
    let (body, hash) = record.split_at(body_len);
    if body.len() < HEAD_BYTES || blake3::hash(body).as_bytes()[..HASH_BYTES] != *hash {
        return None;
    }
    let len = u32::from_le_bytes(body[..4].try_into().ok()?);
    let payload = &body[HEAD_BYTES..];
    if payload.len() != to_usize(u64::from(len)) {
        return None;
    }
    let key = Id::from_slice(&body[5..HEAD_BYTES]).ok()?;
    Some((body[4], key, payload))
}

/// Reads records from `reader` until it ends or one is cut short or bad,
/// applying each to `at` as if the first sat at `base` in the file and
/// showing it to `visit` (a put's payload, or `None` for a removal), and
/// returns the length of the good records and how many there were.
fn replay(
    mut reader: impl Read,
    base: u64,
    max_payload: u64,
    at: &mut HashMap<Id, Loc>,
    visit: &mut dyn FnMut(&Id, Option<&[u8]>),
) -> io::Result<(u64, u64)> {
    let mut good = 0u64;
    let mut records = 0u64;
    let mut record = Vec::new();
    loop {
        let mut head = [0u8; HEAD_BYTES];
        if !read_full(&mut reader, &mut head)? {
            break;
        }
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let kind = head[4];
        if len > max_payload || !(kind == PUT || kind == REMOVE) || (kind == REMOVE && len != 0) {
            break;
        }
        let whole = HEAD_BYTES as u64 + len + HASH_BYTES as u64;
        record.clear();
        record.extend_from_slice(&head);
        record.resize(to_usize(whole), 0);
        if !read_full(&mut reader, &mut record[HEAD_BYTES..])? {
            break;
        }
        let Some((kind, key, payload)) = parse(&record) else {
            break;
        };
        if kind == PUT {
            let offset = base + good;
            at.insert(key, Loc { offset, len: whole });
            visit(&key, Some(payload));
        } else {
            at.remove(&key);
            visit(&key, None);
        }
        good += whole;
        records += 1;
    }
    Ok((good, records))
}

/// Fills `buf`; `false` if the file ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where the last byte other than zero lies in `file` from `from` to `to`,
/// if there is one.
fn last_nonzero(file: &File, from: u64, to: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 1 << 20];
    let mut last = None;
    let mut at = from;
    while at < to {
        let piece = &mut buf[..to_usize((to - at).min(1 << 20))];
        file.read_exact_at(piece, at)?;
        if let Some(i) = piece.iter().rposition(|&b| b != 0) {
            last = Some(at + i as u64);
        }
        at += piece.len() as u64;
    }
    Ok(last)
}

/// Copies `file` from `good` to `upto` to `quarantine`, durably, then cuts
/// the file at `good`.
fn cut_tail(file: &File, good: u64, upto: u64, quarantine: &Path) -> io::Result<()> {
    let mut from = file.try_clone()?;
    from.seek(SeekFrom::Start(good))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(quarantine)?;
    io::copy(&mut from.take(upto - good), &mut to)?;
    to.sync_all()?;
    super::disk::sync_parent(quarantine)?;
    file.set_len(good)?;
    file.sync_all()
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What the fuzz target (`fuzz/manifest_log.rs`) reaches: the encoder, and
/// the replay at open with its promises checked.
#[cfg(test)]
pub(crate) mod fuzzing {
    use super::*;

    pub fn put(key: &Id, payload: &[u8]) -> Vec<u8> {
        encode(key, PUT, payload)
    }

    pub fn remove(key: &Id) -> Vec<u8> {
        encode(key, REMOVE, &[])
    }

    /// Replays `bytes` as a log file and checks what came out: every key
    /// points at a whole put record of its own within the good prefix, and
    /// that prefix alone replays the same. Returns whether all of `bytes`
    /// was taken, and each key's payload.
    pub fn replay_checked(bytes: &[u8], max_payload: u64) -> (bool, HashMap<Id, Vec<u8>>) {
        let mut at = HashMap::new();
        // What a caller of `open` builds from the records it is shown.
        let mut seen = HashMap::new();
        let (good, records) = replay(bytes, 0, max_payload, &mut at, &mut |key, payload| {
            match payload {
                Some(p) => seen.insert(*key, p.to_vec()),
                None => seen.remove(key),
            };
        })
        .expect("reading memory does not fail");
        assert!(good <= bytes.len() as u64);
        let mut payloads = HashMap::new();
        for (key, loc) in &at {
            assert!(loc.offset + loc.len <= good, "{loc:?} past {good}");
            let record = &bytes[to_usize(loc.offset)..to_usize(loc.offset + loc.len)];
            let (kind, stored, payload) = parse(record).expect("a replayed record parses");
            assert_eq!((kind, stored), (PUT, *key));
            payloads.insert(*key, payload.to_vec());
        }
        assert_eq!(
            seen, payloads,
            "what open shows its caller is what the log holds"
        );
        let mut again = HashMap::new();
        let prefix = &bytes[..to_usize(good)];
        assert_eq!(
            replay(prefix, 0, max_payload, &mut again, &mut |_, _| {})
                .expect("reading memory does not fail"),
            (good, records)
        );
        assert_eq!(again, at);
        (good == bytes.len() as u64, payloads)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn open(dir: &Path, n: u32) -> (ManifestLog, Opened) {
        let (log, opened, _) = open_seen(dir, n);
        (log, opened)
    }

    /// A record as `open` shows it: the key, and a put's payload.
    type Seen = (Id, Option<Vec<u8>>);

    /// [`open`], with the records it showed, in order.
    fn open_seen(dir: &Path, n: u32) -> (ManifestLog, Opened, Vec<Seen>) {
        let mut seen = Vec::new();
        let quarantine = dir.join(format!("quarantined-{n}"));
        let (log, opened) = ManifestLog::open(&dir.join("log"), &quarantine, MAX, |k, p| {
            seen.push((*k, p.map(<[u8]>::to_vec)));
        })
        .unwrap();
        (log, opened, seen)
    }

    fn key(i: u32) -> Id {
        Id::hash(&i.to_le_bytes())
    }

    #[test]
    fn puts_removes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (log, opened) = open(dir.path(), 0);
        assert_eq!(opened, Opened::default());
        log.put(&key(1), b"one").unwrap();
        log.put(&key(2), b"two").unwrap();
        log.put(&key(1), b"one, again").unwrap();
        log.remove(&key(2)).unwrap();
        log.remove(&key(3)).unwrap(); // nothing to remove: no record
        log.put(&key(4), b"").unwrap();
        assert_eq!(
            log.get(&key(1)).unwrap().as_deref(),
            Some(&b"one, again"[..])
        );
        assert_eq!(log.get(&key(2)).unwrap(), None);
        assert_eq!(log.get(&key(4)).unwrap().as_deref(), Some(&b""[..]));
        drop(log);

        let (log, opened, seen) = open_seen(dir.path(), 1);
        assert_eq!(
            opened,
            Opened {
                records: 5,
                cut_bytes: 0
            }
        );
        // Every record, in the order written.
        let put = |i, p: &[u8]| (key(i), Some(p.to_vec()));
        assert_eq!(
            seen,
            vec![
                put(1, b"one"),
                put(2, b"two"),
                put(1, b"one, again"),
                (key(2), None),
                put(4, b""),
            ]
        );
        assert_eq!(
            log.get(&key(1)).unwrap().as_deref(),
            Some(&b"one, again"[..])
        );
        assert_eq!(log.get(&key(2)).unwrap(), None);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_kept_aside() {
        // A crash in the middle of the second record's write: its last
        // bytes missing from a file cut short, or still zeros in the room.
        for in_the_room in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = open(dir.path(), 0);
            log.put(&key(1), b"kept").unwrap();
            log.put(&key(2), b"torn by a crash").unwrap();
            let (whole, _) = log.sizes();
            drop(log);
            let file = OpenOptions::new()
                .write(true)
                .open(dir.path().join("log"))
                .unwrap();
            if in_the_room {
                file.write_all_at(&[0u8; 7], whole - 7).unwrap();
            } else {
                file.set_len(whole - 7).unwrap();
            }
            drop(file);

            let (log, opened) = open(dir.path(), 1);
            assert_eq!(opened.records, 1);
            let record = encode(&key(2), PUT, b"torn by a crash");
            let written = &record[..record.len() - 7];
            // Zeros at the end of what was written are not set aside.
            let torn = written.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
            assert_eq!(opened.cut_bytes, torn);
            assert_eq!(
                fs::read(dir.path().join("quarantined-1")).unwrap(),
                written[..torn as usize]
            );
            assert_eq!(log.get(&key(1)).unwrap().as_deref(), Some(&b"kept"[..]));
            assert_eq!(log.get(&key(2)).unwrap(), None);
            // Writing goes on after the last whole record.
            log.put(&key(3), b"after").unwrap();
            drop(log);
            let (log, opened) = open(dir.path(), 2);
            assert_eq!(
                opened,
                Opened {
                    records: 2,
                    cut_bytes: 0
                }
            );
            assert_eq!(log.get(&key(3)).unwrap().as_deref(), Some(&b"after"[..]));
        }
    }

    #[test]
    fn a_damaged_record_is_corrupt_on_read_and_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        log.put(&key(1), b"first").unwrap();
        log.put(&key(2), b"second, to be damaged").unwrap();
        log.put(&key(3), b"third").unwrap();
        let first = encode(&key(1), PUT, b"first").len() as u64;
        // One byte of the second record's payload flips on disk.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("log"))
            .unwrap();
        let at = first + HEAD_BYTES as u64 + 3;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
        drop(file);

        let err = log.get(&key(2)).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(log.get(&key(1)).unwrap().as_deref(), Some(&b"first"[..]));
        drop(log);
        // At open, everything from the damage on is set aside.
        let (log, opened) = open(dir.path(), 1);
        assert_eq!(opened.records, 1);
        assert!(opened.cut_bytes > 0);
        assert_eq!(log.get(&key(1)).unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(log.get(&key(2)).unwrap(), None);
        assert_eq!(log.get(&key(3)).unwrap(), None);
    }

    #[test]
    fn garbage_lengths_and_kinds_end_the_log_without_a_panic() {
        for junk in [
            &[0xff, 0xff, 0xff, 0xff, 1][..],
            &[0, 0, 0, 0, 9],
            &[1, 0, 0, 0, REMOVE],
            &[3],
        ] {
            // Where the next record goes (in the zeroed room), and past
            // the room, after the zeros.
            for past_the_room in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let (log, _) = open(dir.path(), 0);
                log.put(&key(1), b"good").unwrap();
                let (good, _) = log.sizes();
                drop(log);
                let path = dir.path().join("log");
                let len = fs::metadata(&path).unwrap().len();
                let at = if past_the_room { len } else { good };
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                file.write_all_at(junk, at).unwrap();
                file.write_all_at(&[0u8; 64], at + junk.len() as u64)
                    .unwrap();
                drop(file);
                let (log, opened) = open(dir.path(), 1);
                assert_eq!(opened.records, 1, "{junk:?}");
                // The copy set aside ends at the junk's last byte other
                // than zero; the zeros after it are left out.
                let last = junk.iter().rposition(|&b| b != 0).unwrap() as u64;
                assert_eq!(opened.cut_bytes, at + last + 1 - good, "{junk:?}");
                assert_eq!(
                    fs::metadata(dir.path().join("quarantined-1"))
                        .unwrap()
                        .len(),
                    opened.cut_bytes
                );
                assert_eq!(log.get(&key(1)).unwrap().as_deref(), Some(&b"good"[..]));
                log.put(&key(2), b"after").unwrap();
                drop(log);
                let (log, opened) = open(dir.path(), 2);
                assert_eq!((opened.records, opened.cut_bytes), (2, 0));
                assert_eq!(log.get(&key(2)).unwrap().as_deref(), Some(&b"after"[..]));
            }
        }
    }

    #[test]
    fn records_are_written_over_zeroed_room_that_reopens_as_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, _) = open(dir.path(), 0);
        log.put(&key(0), b"first").unwrap();
        let room = fs::metadata(&path).unwrap().len();
        assert!(room >= ROOM_MIN, "{room}");
        // Records that fit leave the file's length as it is.
        let payload = [5u8; 100];
        let mut i = 1;
        while log.sizes().0 + 200 < room {
            log.put(&key(i), &payload).unwrap();
            i += 1;
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), room);
        // One that does not fit adds room: an eighth of the records, at
        // least ROOM_MIN.
        for _ in 0..2 {
            log.put(&key(i), &payload).unwrap();
            i += 1;
        }
        let grown = fs::metadata(&path).unwrap().len();
        assert!(grown >= log.sizes().0 + ROOM_MIN - 200, "{grown}");
        let (end, _) = log.sizes();
        drop(log);
        // The zeros after the records are room, not damage: nothing is cut,
        // and the next record goes where the last one ended.
        let (log, opened) = open(dir.path(), 1);
        assert_eq!(
            opened,
            Opened {
                records: u64::from(i),
                cut_bytes: 0
            }
        );
        assert!(!dir.path().join("quarantined-1").exists());
        assert_eq!(fs::metadata(&path).unwrap().len(), grown);
        log.put(&key(i), b"after the reopen").unwrap();
        assert_eq!(
            log.sizes().0,
            end + encode(&key(i), PUT, b"after the reopen").len() as u64
        );
        for k in 1..i {
            assert_eq!(log.get(&key(k)).unwrap().as_deref(), Some(&payload[..]));
        }
        drop(log);
        let (log, opened) = open(dir.path(), 2);
        assert_eq!((opened.records, opened.cut_bytes), (u64::from(i) + 1, 0));
        assert_eq!(
            log.get(&key(i)).unwrap().as_deref(),
            Some(&b"after the reopen"[..])
        );
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        let err = log.put(&key(1), &vec![0u8; MAX as usize + 1]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(log.sizes(), (0, 0));
    }

    #[test]
    fn dead_records_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        let payload = vec![7u8; 64 * 1024];
        // Far more overwrites than the floor allows dead.
        let rounds = (3 * COMPACT_MIN_BYTES / payload.len() as u64) as u32;
        for i in 0..rounds {
            log.put(&key(i % 4), &payload[..payload.len() - (i as usize % 5)])
                .unwrap();
        }
        log.put(&key(9), b"last").unwrap();
        log.settle();
        // The writers did not compact: the log's own thread did.
        let on = log.log.compacted_on.lock().unwrap().clone();
        assert!(!on.is_empty());
        assert!(
            on.iter()
                .all(|t| t.as_deref() == Some("manifest-compaction")),
            "{on:?}"
        );
        let (end, live) = log.sizes();
        assert!(end - live <= live.max(COMPACT_MIN_BYTES), "{end} {live}");
        assert!(end < 2 * COMPACT_MIN_BYTES, "{end}");
        assert!(!dir.path().join("log.compacting").exists());
        for i in 0..4 {
            let last = (0..rounds).rev().find(|r| r % 4 == i).unwrap();
            let want = &payload[..payload.len() - (last as usize % 5)];
            assert_eq!(log.get(&key(i)).unwrap().as_deref(), Some(want));
        }
        drop(log);
        let (log, opened, seen) = open_seen(dir.path(), 1);
        assert_eq!(opened.cut_bytes, 0);
        // What the records shown add up to: the five keys written.
        let mut live = HashMap::new();
        for (k, p) in seen {
            match p {
                Some(p) => live.insert(k, p),
                None => live.remove(&k),
            };
        }
        assert_eq!(live.len(), 5);
        assert_eq!(live[&key(9)], b"last");
        assert_eq!(log.get(&key(9)).unwrap().as_deref(), Some(&b"last"[..]));
    }

    #[test]
    fn a_log_left_due_is_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        log.set_compact_floor(u64::MAX); // as if every compaction failed

        // Live records over several of the copy's batches.
        const KEYS: u32 = 40;
        let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        assert!(u64::from(KEYS) * payload.len() as u64 > 2 * COPY_PACE_BYTES as u64);
        let rounds = (COMPACT_MIN_BYTES / payload.len() as u64) as u32 + KEYS + 32;
        for i in 0..rounds {
            log.put(&key(i % KEYS), &payload[..payload.len() - i as usize])
                .unwrap();
        }
        let (end, live) = log.sizes();
        assert!(end - live > COMPACT_MIN_BYTES, "{end} {live}");
        drop(log);

        let (log, opened) = open(dir.path(), 1);
        assert_eq!(opened.records, u64::from(rounds));
        let (end, live) = log.sizes();
        assert_eq!(end, live);
        // The compacted file ends in zeroed room, written with the copy,
        // which the next append writes over without growing the file.
        let file_len = || fs::metadata(dir.path().join("log")).unwrap().len();
        let with_room = (end + room_after(end)).next_multiple_of(4096);
        assert_eq!(file_len(), with_room);
        let check = |log: &ManifestLog| {
            for k in 0..KEYS {
                let last = rounds - KEYS + k;
                let want = &payload[..payload.len() - last as usize];
                assert_eq!(log.get(&key(k)).unwrap().as_deref(), Some(want));
            }
        };
        check(&log);
        log.put(&key(KEYS), b"after").unwrap();
        assert_eq!(file_len(), with_room);
        drop(log);
        let (log, opened) = open(dir.path(), 1);
        assert_eq!((opened.records, opened.cut_bytes), (u64::from(KEYS) + 1, 0));
        check(&log);
        assert_eq!(log.get(&key(KEYS)).unwrap().as_deref(), Some(&b"after"[..]));
        assert_eq!(file_len(), with_room);
    }

    /// A tmpfs of `bytes` mounted on `path` for the guard's life (root
    /// only).
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        fn mount(path: &Path, bytes: u64) -> SmallDisk {
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(mounted, "cannot mount a tmpfs (this test needs root)");
            SmallDisk(path.to_path_buf())
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    #[test]
    #[ignore = "needs root, to mount a small tmpfs; run with --run-ignored all"]
    fn a_compaction_on_a_full_disk_fails_whole_or_leaves_the_room_to_the_appends() {
        let dir = tempfile::tempdir().unwrap();
        let _disk = SmallDisk::mount(dir.path(), 4 << 20);
        let (log, _) = open(dir.path(), 0);
        log.set_compact_floor(u64::MAX);
        // Eight keys written eight times over: seven records in eight dead.
        const KEYS: u32 = 8;
        let payload = |round: u32, k: u32| vec![(round * KEYS + k) as u8; 16 * 1024];
        for round in 0..8 {
            for k in 0..KEYS {
                log.put(&key(k), &payload(round, k)).unwrap();
            }
        }
        let (end, live) = log.sizes();
        assert!(live < end / 4, "{end} {live}");
        let check = |log: &ManifestLog| {
            for k in 0..KEYS {
                assert_eq!(log.get(&key(k)).unwrap(), Some(payload(7, k)));
            }
        };
        let log_len = || fs::metadata(dir.path().join("log")).unwrap().len();
        let left_behind = || dir.path().join("log.compacting").exists();
        let file_before = log_len();

        // Every page of the disk taken.
        let filler_path = dir.path().join("filler");
        let mut filler = File::create(&filler_path).unwrap();
        let page = [1u8; 4096];
        while std::io::Write::write_all(&mut filler, &page).is_ok() {}
        let filled = filler.metadata().unwrap().len();

        // No room even for the live records: the compaction fails whole,
        // and the old file goes on as it was.
        log.set_compact_floor(4096);
        log.log.compact_if_due();
        assert_eq!(log.sizes(), (end, live));
        assert_eq!(log_len(), file_before);
        assert!(!left_behind());
        check(&log);

        // Room for the live records and two pages more, short of the
        // 64 KiB of zeros a compaction writes after them: the records are
        // compacted and the room is left to the appends.
        filler
            .set_len(filled - (live.next_multiple_of(4096) + 2 * 4096))
            .unwrap();
        log.log.compact_if_due();
        assert_eq!(log.sizes(), (live, live));
        assert_eq!(log_len(), live, "the file ends at its records");
        assert!(!left_behind());
        check(&log);

        // With the disk freed, the next append writes room of its own.
        drop(filler);
        fs::remove_file(&filler_path).unwrap();
        log.put(&key(KEYS), b"after").unwrap();
        assert!(log_len() >= live + room_after(live), "{}", log_len());
        drop(log);
        let (log, opened) = open(dir.path(), 1);
        assert_eq!((opened.records, opened.cut_bytes), (u64::from(KEYS) + 1, 0));
        check(&log);
        assert_eq!(log.get(&key(KEYS)).unwrap().as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn compactions_under_concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        log.set_compact_floor(4096);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..300u32 {
                        // Each thread overwrites its own five keys and
                        // removes one now and then.
                        let k = key(t * 1000 + i % 5);
                        if i % 7 == 6 {
                            log.remove(&k).unwrap();
                            assert_eq!(log.get(&k).unwrap(), None);
                        } else {
                            let v = format!("{t}/{i}").repeat(20);
                            log.put(&k, v.as_bytes()).unwrap();
                            assert_eq!(log.get(&k).unwrap().unwrap(), v.as_bytes());
                        }
                    }
                });
            }
        });
        log.settle();
        let (end, live) = log.sizes();
        assert!(end - live <= live.max(4096), "{end} {live}");
        let expect = |log: &ManifestLog| {
            for t in 0..4u32 {
                for j in 0..5u32 {
                    let last = (0..300u32).rev().find(|i| i % 5 == j).unwrap();
                    let want = (last % 7 != 6).then(|| format!("{t}/{last}").repeat(20));
                    let got = log.get(&key(t * 1000 + j)).unwrap();
                    assert_eq!(got, want.map(String::into_bytes), "{t} {j}");
                }
            }
        };
        expect(&log);
        drop(log);
        let (log, opened) = open(dir.path(), 1);
        assert_eq!(opened.cut_bytes, 0);
        expect(&log);
    }

    #[test]
    fn concurrent_writers_share_syncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..50u32 {
                        let k = key(t * 1000 + i);
                        log.put(&k, format!("{t}/{i}").as_bytes()).unwrap();
                        assert_eq!(log.get(&k).unwrap().unwrap(), format!("{t}/{i}").as_bytes());
                    }
                });
            }
        });
        drop(log);
        let (log, opened) = open(dir.path(), 1);
        assert_eq!(
            opened,
            Opened {
                records: 400,
                cut_bytes: 0
            }
        );
        for t in 0..8u32 {
            for i in 0..50u32 {
                let got = log.get(&key(t * 1000 + i)).unwrap().unwrap();
                assert_eq!(got, format!("{t}/{i}").as_bytes());
            }
        }
    }
}
