//! Where a process's transfer time goes: a running total of the time spent
//! in each stage of moving chunks and writing manifests, for `bench
//! transfer`'s breakdown.
//!
//! Totals are process-wide atomics, added to by whichever thread runs a
//! stage, so a stage that runs on several threads at once (four chunk calls
//! in flight, hashing on blocking threads) can sum to more than the wall
//! time of the transfer. A stage that is one step at a time (the file
//! digest thread) and whose total nears the wall time is what bounds the
//! speed. A node reports its totals in `GetStats`; a client reads its own
//! with [`totals`]. A process that is both (a node serving its gateway)
//! adds both roles into the same totals.
//!
//! Timing a span costs two clock reads and one atomic add; the spans are a
//! chunk or one piece of one (64 KiB) long, so the cost stays far below
//! what they measure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One stage of moving chunks. The names ([`Stage::name`]) are part of
/// `GetStats`' answer and of the bench's JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading an upload's source file.
    FileRead,
    /// Making the key of each chunk of an upload (`store::chunk_key`).
    ChunkKey,
    /// The whole-file checksum (BLAKE3) of an upload or a download.
    FileDigest,
    /// Finding a chunk's or manifest's holders (lookup, successor list,
    /// which holders already have a chunk).
    Locate,
    /// PutChunk calls, from the first piece sent to the answer: a client's
    /// uploads (written in place when the client runs inside the chunk's
    /// node, a gateway's), and a node's copies of them to its successors.
    PutChunkCall,
    /// GetChunk calls of a download, from the request to the last piece (a
    /// read in place when the client runs inside the holder).
    GetChunkCall,
    /// Checking a chunk against its key as its pieces arrive, with the
    /// copy of each piece into one buffer (a node receiving PutChunk, a
    /// client or node receiving GetChunk).
    ChunkCheck,
    /// Writing a download to its file (into the page cache).
    FileWrite,
    /// Syncing a download's file.
    FileSync,
    /// Manifest calls: the write that ends an upload, the read that starts
    /// a download, and an owner's copies of a manifest to its successors.
    ManifestCall,
    /// A node reading a chunk's file.
    DiskRead,
    /// A node writing a chunk's file (into the page cache).
    DiskWrite,
    /// A node making a chunk durable: the file's fsync, the rename and the
    /// directory's fsync.
    DiskSync,
    /// A node appending a manifest record to its log (into the page cache).
    LogWrite,
    /// A node making its appended manifest records durable: the log's
    /// `fdatasync`, or the wait for one under way that covers them.
    LogSync,
}

impl Stage {
    /// Every stage, in the order of the breakdown.
    pub const ALL: [Stage; 15] = [
        Stage::FileRead,
        Stage::ChunkKey,
        Stage::FileDigest,
        Stage::Locate,
        Stage::PutChunkCall,
        Stage::GetChunkCall,
        Stage::ChunkCheck,
        Stage::FileWrite,
        Stage::FileSync,
        Stage::ManifestCall,
        Stage::DiskRead,
        Stage::DiskWrite,
        Stage::DiskSync,
        Stage::LogWrite,
        Stage::LogSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::FileRead => "file_read",
            Stage::ChunkKey => "chunk_key",
            Stage::FileDigest => "file_digest",
            Stage::Locate => "locate",
            Stage::PutChunkCall => "put_chunk_call",
            Stage::GetChunkCall => "get_chunk_call",
            Stage::ChunkCheck => "chunk_check",
            Stage::FileWrite => "file_write",
            Stage::FileSync => "file_sync",
            Stage::ManifestCall => "manifest_call",
            Stage::DiskRead => "disk_read",
            Stage::DiskWrite => "disk_write",
            Stage::DiskSync => "disk_sync",
            Stage::LogWrite => "log_write",
            Stage::LogSync => "log_sync",
        }
    }
}

/// Nanoseconds spent in each stage since the process started, indexed as
/// [`Stage::ALL`].
static NANOS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];

/// Adds `spent` to `stage`'s total.
pub fn add(stage: Stage, spent: Duration) {
    let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
    NANOS[stage as usize].fetch_add(nanos, Ordering::Relaxed);
}

/// Runs `f`, counting its time to `stage`.
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    add(stage, started.elapsed());
    out
}

/// Awaits `fut`, counting the time from now to its end to `stage`.
pub async fn time_async<T>(stage: Stage, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    add(stage, started.elapsed());
    out
}

/// Every stage's total so far.
pub fn totals() -> Vec<(Stage, Duration)> {
    Stage::ALL
        .iter()
        .map(|&s| {
            (
                s,
                Duration::from_nanos(NANOS[s as usize].load(Ordering::Relaxed)),
            )
        })
        .collect()
}

/// The stage named `name`, if there is one.
pub fn by_name(name: &str) -> Option<Stage> {
    Stage::ALL.into_iter().find(|s| s.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_found_again() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "ALL is in declaration order");
            assert_eq!(by_name(s.name()), Some(*s));
        }
        assert_eq!(by_name("no_such_stage"), None);
    }

    #[test]
    fn time_adds_its_span_to_its_stage() {
        let before: Vec<_> = totals();
        time(Stage::FileSync, || {
            std::thread::sleep(Duration::from_millis(5));
        });
        let after = totals();
        let grew = |s: Stage| after[s as usize].1 - before[s as usize].1;
        assert!(grew(Stage::FileSync) >= Duration::from_millis(5));
    }
}
