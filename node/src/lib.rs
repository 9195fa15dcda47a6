//! chord-node: a Chord ring node that stores replicated, content-addressed chunks.
//!
//! Bottom-up: [`chord`] is the pure protocol core (no I/O); [`wire`] converts
//! and validates `chord.v1` messages; [`framing`] frames and reads chunk data
//! where tonic would copy it; [`peer`] makes deadline-bounded calls to
//! other nodes; [`node`] drives the core over the network. [`store`] keeps
//! chunks and manifests on disk; [`replication`] spreads writes and reads
//! over the ring; [`repair`] moves keys to where they belong; [`gc`] removes
//! chunks no file names and settles a node's files after a long absence. [`server`]
//! exposes it all as tonic services and owns the node's tasks; [`client`] is
//! the library the console and tests use. [`auth`] (the cluster token) and
//! [`tls`] secure the calls between them.

pub mod auth;
pub mod chord;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
pub mod events;
pub mod framing;
pub mod gateway;
pub mod gc;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod repair;
pub mod replication;
pub mod server;
pub mod stages;
pub mod store;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod fuzz;

pub use config::Config;
pub use error::{Error, Result};

/// Smallest chunk size accepted: below this, per-chunk overhead dominates.
pub const MIN_CHUNK_BYTES: usize = 4 * 1024;
/// Largest chunk size accepted: a node buffers at most one chunk per transfer.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024 * 1024;
/// `InvalidArgument` unless `size` is a chunk size accepted
/// ([`MIN_CHUNK_BYTES`]..=[`MAX_CHUNK_BYTES`]).
pub fn check_chunk_size(size: usize) -> Result<()> {
    if (MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&size) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "chunk size must be {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES} bytes"
        )))
    }
}

/// Default chunk size: MiB scale, so a 1 GiB file is a few hundred chunks.
pub const DEFAULT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Size of one streamed gRPC message of chunk data.
pub const PIECE_BYTES: usize = 256 * 1024;
/// Largest gRPC message a node or client accepts or sends, on both ends.
/// Chunk data moves in pieces of [`PIECE_BYTES`], far below this; listings
/// come in pages well under it; a manifest travels whole, which bounds the
/// chunks it may name ([`store::MAX_MANIFEST_CHUNKS`]). The cap bounds
/// what a misbehaving peer can make us buffer.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The environment a node should run with on glibc (name, value): two
/// malloc arenas instead of eight per core. With more, every thread that
/// frees a chunk buffer keeps it in its own arena, above the mmap threshold
/// glibc raises after the first such free, and a node's peak memory on a
/// 1 GiB transfer was 61-140 MiB instead of 40-72 (docs/PERFORMANCE.md,
/// "Memory"). The local fleet and the CloudFormation stack set it; set it
/// by hand when starting nodes some other way. A tunable already in the
/// environment wins.
pub const MALLOC_ENV: (&str, &str) = ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2");

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits for every task in `tasks` to end, for at most `limit`; past it,
/// aborts the rest (and waits for that). Returns whether all ended in time.
pub async fn join_within<T: 'static>(
    tasks: &mut tokio::task::JoinSet<T>,
    limit: std::time::Duration,
) -> bool {
    let ended = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    if !ended {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    ended
}
