//! Node configuration: every tunable of a running node, with the reason for
//! its default. The binary fills it from flags; tests and the local fleet fill
//! it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::peer::PeerOptions;
use crate::wire;

/// Default gRPC port of a node.
pub const DEFAULT_PORT: u16 = 5057;
/// Default HTTP gateway port (the port the original file server used).
pub const DEFAULT_HTTP_PORT: u16 = 5058;

#[derive(Clone, Debug)]
pub struct Config {
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// `host:port` other nodes use to reach us; our id is its SHA-1.
    pub advertise: String,
    /// A live node to join through; `None` creates a new ring (unless idle).
    pub join: Option<String>,
    /// Start in no ring and wait for a MessagePack-RPC `create` or `join`,
    /// as the course's nodes do (their test scripts build the ring).
    pub idle: bool,
    /// Where chunks and manifests live.
    pub data_dir: PathBuf,
    /// Length r of the successor list: the ring survives r-1 adjacent failures.
    pub successors: usize,
    /// Copies kept of every chunk and manifest.
    pub replicas: usize,
    /// Address of the HTTP gateway, if it is on.
    pub http: Option<SocketAddr>,
    /// Period of `stabilize`. Short enough that a join is visible within a
    /// second or two on loopback, long enough to stay cheap on a big ring.
    pub stabilize_interval: Duration,
    /// Period of one `fix_fingers` step (one finger refreshed per step; the
    /// core skips fingers that share a target, so ~log N steps refresh all).
    pub fix_fingers_interval: Duration,
    /// Period of `check_predecessor`.
    pub check_predecessor_interval: Duration,
    /// Deadline of one outbound call; a peer slower than this counts as failed.
    pub rpc_timeout: Duration,
    /// How long a joining node keeps trying its bootstrap peer.
    pub join_timeout: Duration,
    /// Period of the repair loop.
    pub repair_interval: Duration,
    /// Chunk size used by the HTTP gateway's uploads.
    pub chunk_size: usize,
    /// Cap on the repair loop's push rate, so repair never starves clients.
    pub repair_bytes_per_sec: u64,
    /// Keys a repair round takes from the index at a time: a round's memory
    /// is a page's, however many keys the node holds.
    pub repair_page_keys: usize,
    /// Chunk bytes re-hashed per second by the scrubber: slow enough not to
    /// compete with clients, fast enough to check 100 GiB in about 4 hours.
    pub scrub_bytes_per_sec: u64,
    /// How long a gracefully leaving node keeps handing keys over.
    pub handoff_timeout: Duration,
    /// Period of the chunk collector's rounds.
    pub gc_interval: Duration,
    /// A chunk is collected only once it has gone this long without being
    /// written or asked for: well above the longest upload, whose chunks
    /// wait for their manifest.
    pub gc_grace: Duration,
    /// Most chunks the collector removes per second.
    pub gc_chunks_per_sec: u64,
    /// A tombstone is dropped once every holder has it and it is older than
    /// this (Cassandra's `gc_grace`). A node away for longer re-checks its
    /// manifests with the ring before offering them.
    pub tombstone_grace: Duration,
    /// The cluster token every gRPC call must carry (none: nothing is
    /// checked). Also sent with this node's own calls.
    pub token: Option<crate::auth::ClusterToken>,
    /// Serve gRPC and the gateway over TLS only, and reach peers over TLS
    /// (none: plaintext, as before).
    pub tls: Option<crate::tls::NodeTls>,
    /// Serve gateway reads (GET, HEAD) without the token.
    pub public_reads: bool,
    /// Largest gateway request body (0: no limit); larger gets 413.
    pub http_max_body_bytes: u64,
    /// Most files one gateway upload request may carry; more gets 413.
    pub http_max_parts: usize,
    /// Gateway uploads running at once; one more gets 429.
    pub http_max_uploads: usize,
    /// Bytes of chunk data `PutChunk` calls may hold in memory at once,
    /// for client writes and for replica copies each. A call past it waits
    /// up to one RPC deadline, then is refused as busy (retryable).
    pub chunk_buffer_bytes: usize,
    /// A smaller cap on the entries of one `ListKeys` or `ListFiles` page
    /// than the built-in ones (`MAX_KEYS_PER_PAGE`, `MAX_FILES_PER_PAGE` in
    /// `server::store`): tests use it to make small stores span many pages.
    pub list_page_cap: Option<usize>,
    /// How long a gateway connection may make no progress: request headers
    /// not complete (a slow-loris trickling them in counts from the first
    /// byte), an upload body with no new bytes, a download the client
    /// stopped reading, or a kept-alive connection with no next request.
    /// A stalled body gets 408; the other cases close the connection.
    pub http_idle_timeout: Duration,
    /// Longest one gateway request may take until its answer starts. An
    /// upload's answer comes after its whole body, so this bounds a body
    /// trickled in just fast enough to dodge the idle timeout (408); a
    /// download's answer starts at once and then streams under the idle
    /// timeout. Long enough for the largest upload a gateway should take.
    pub http_request_timeout: Duration,
    /// Longest a gRPC call may run before its answer starts (tonic's
    /// server timeout; a caller's shorter `grpc-timeout` wins). A backstop
    /// well above every deadline the project's own callers set (a 64 MiB
    /// chunk and its replication get 15 RPC timeouts, 30 s by default), so
    /// only a stalled or hostile call meets it. A streamed answer
    /// (GetChunk) counts until its first message; a `Drain` answers within
    /// it with what it has done ([`crate::server::drain_deadline`]).
    pub grpc_request_timeout: Duration,
    /// gRPC calls one connection may have running at once; one more is
    /// refused at once (RESOURCE_EXHAUSTED, which callers retry) instead of
    /// queued, so a client cannot pile up unbounded work on one HTTP/2
    /// connection. A peer sends all its calls to us over one connection;
    /// the busiest (a gateway's uploads, `bench load`) run about a hundred.
    pub grpc_calls_per_connection: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            advertise: format!("127.0.0.1:{DEFAULT_PORT}"),
            join: None,
            idle: false,
            data_dir: PathBuf::from("chord-data"),
            successors: 3,
            replicas: 3,
            http: None,
            stabilize_interval: Duration::from_millis(500),
            fix_fingers_interval: Duration::from_millis(200),
            check_predecessor_interval: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            join_timeout: Duration::from_secs(20),
            repair_interval: Duration::from_secs(3),
            chunk_size: crate::DEFAULT_CHUNK_BYTES,
            repair_bytes_per_sec: 64 * 1024 * 1024,
            repair_page_keys: 8_192,
            scrub_bytes_per_sec: 8 * 1024 * 1024,
            handoff_timeout: Duration::from_secs(120),
            gc_interval: Duration::from_secs(60),
            gc_grace: Duration::from_secs(6 * 3600),
            gc_chunks_per_sec: 500,
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            token: None,
            tls: None,
            public_reads: false,
            http_max_body_bytes: 64 << 30,
            http_max_parts: 64,
            http_max_uploads: 16,
            chunk_buffer_bytes: 256 << 20,
            list_page_cap: None,
            http_idle_timeout: Duration::from_secs(30),
            http_request_timeout: Duration::from_secs(3600),
            grpc_request_timeout: Duration::from_secs(300),
            grpc_calls_per_connection: 256,
        }
    }
}

impl Config {
    /// How this node calls its peers (and itself, from its gateway): with
    /// its deadline, its token and, under TLS, its CA.
    pub fn peer_options(&self) -> PeerOptions {
        PeerOptions {
            rpc_timeout: self.rpc_timeout,
            token: self.token.clone(),
            ca: self.tls.as_ref().map(|tls| tls.ca.clone()),
            ..PeerOptions::default()
        }
    }

    /// Rejects settings the node cannot run with, with a reason.
    pub fn validate(&self) -> Result<()> {
        wire::validate_addr(&self.advertise).map_err(|e| e.about("--advertise"))?;
        if let Some(join) = &self.join {
            wire::validate_addr(join).map_err(|e| e.about("--join"))?;
            if *join == self.advertise {
                return Err(Error::invalid("--join names this node itself"));
            }
        }
        if self.idle && self.join.is_some() {
            return Err(Error::invalid(
                "--idle and --join exclude each other: an idle node waits to be told",
            ));
        }
        if self.idle && self.tls.is_some() {
            return Err(Error::invalid(
                "--idle and TLS exclude each other: an idle node waits for MessagePack-RPC, which a TLS node refuses",
            ));
        }
        if !(1..=32).contains(&self.successors) {
            return Err(Error::invalid("--successors must be 1..=32"));
        }
        if !(1..=16).contains(&self.replicas) {
            return Err(Error::invalid("--replicas must be 1..=16"));
        }
        if self.replicas > self.successors + 1 {
            return Err(Error::invalid(
                "--replicas must not exceed --successors + 1 (a node only knows that many holders)",
            ));
        }
        for (name, d) in [
            ("stabilize", self.stabilize_interval),
            ("fix-fingers", self.fix_fingers_interval),
            ("check-predecessor", self.check_predecessor_interval),
            ("rpc-timeout", self.rpc_timeout),
            ("repair", self.repair_interval),
            ("gc", self.gc_interval),
            ("gc-grace", self.gc_grace),
            ("tombstone-grace", self.tombstone_grace),
            ("http-idle-timeout", self.http_idle_timeout),
            ("http-request-timeout", self.http_request_timeout),
            ("grpc-request-timeout", self.grpc_request_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(format!(
                    "--{name} interval must be above zero"
                )));
            }
        }
        if self.repair_bytes_per_sec == 0
            || self.scrub_bytes_per_sec == 0
            || self.gc_chunks_per_sec == 0
        {
            return Err(Error::invalid(
                "repair, scrub and collection rates must be above zero",
            ));
        }
        if self.repair_page_keys == 0 {
            return Err(Error::invalid("--repair-page-keys must be above zero"));
        }
        if self.rpc_timeout >= self.gc_grace / 2 {
            return Err(Error::invalid(
                "--gc-grace-secs must be above twice the RPC timeout: a collection round must finish well within it",
            ));
        }
        if self.chunk_buffer_bytes < crate::MIN_CHUNK_BYTES {
            return Err(Error::invalid(format!(
                "--chunk-buffer-mib must hold at least one chunk of {} bytes",
                crate::MIN_CHUNK_BYTES
            )));
        }
        if self.http_max_parts == 0 || self.http_max_uploads == 0 {
            return Err(Error::invalid(
                "--http-max-parts and --http-max-uploads must be above zero",
            ));
        }
        if self.list_page_cap == Some(0) {
            return Err(Error::invalid("--list-page-cap must be above zero"));
        }
        if self.grpc_calls_per_connection == 0 {
            return Err(Error::invalid(
                "--grpc-calls-per-connection must be above zero",
            ));
        }
        if self.grpc_request_timeout <= self.rpc_timeout {
            return Err(Error::invalid(
                "--grpc-request-timeout-secs must be above the RPC timeout: it is a backstop behind every caller's own deadline",
            ));
        }
        crate::check_chunk_size(self.chunk_size)?;
        Ok(())
    }
}
