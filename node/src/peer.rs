//! Outbound calls to other nodes: a pool of tonic channels with deadlines.
//!
//! Every call carries a deadline ([`PeerOptions::rpc_timeout`]), and every
//! answer is validated by [`crate::wire`] before it is returned. This module
//! holds the one mapping from a `tonic::Status` answered by a peer to
//! [`Error`]. It knows nothing of ring state: callers decide what a failure
//! means (usually `RingState::peer_failed`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chord_proto::pb;
use chord_proto::pb::ring_client::RingClient;
use chord_proto::pb::store_client::StoreClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::util::MapResponse;
use tracing::debug;

use crate::auth::ClusterToken;
use crate::chord::{Id, NodeRef, Route};
use crate::error::{Error, Result};
use crate::events::EventBatch;
use crate::framing;
use crate::repair::HandoffReport;
use crate::stages::{self, Stage};
use crate::store::{CheckedChunk, ChunkBuffer, ChunkHasher, KeysPage, Manifest, Stamp};
use crate::tls::TrustedCa;
use crate::wire;
use crate::MAX_MESSAGE_BYTES;

/// Most nodes a ring walk visits before it stops: a guard against a ring
/// whose successor pointers never lead back to the start.
pub const MAX_RING_WALK: usize = 4096;
/// A ring walk ends within this many calls' deadlines, however many nodes
/// it has left: several hundred answering nodes fit easily.
const WALK_BOUND_CALLS: u32 = 10;

/// HTTP/2 flow-control window of one stream (both ways, client and
/// server): a default chunk flows without stopping for the receiver's
/// window updates, which at the protocol's 64 KiB default cost a wake-up
/// of both ends every 64 KiB.
pub const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// HTTP/2 window of one connection: several chunks in flight at once. It
/// bounds what a connection can have buffered unread.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame either end takes (both ways, client and server): a
/// piece of chunk data in one frame, read in one go, instead of sixteen
/// frames of the protocol's 16 KiB default, each its own read.
pub const FRAME_BYTES: u32 = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Deadline of one unary call. Loopback and a VPC answer in milliseconds;
    /// a peer slower than this is treated as failed.
    pub rpc_timeout: Duration,
    /// How long to wait for a TCP connection before calling the peer unreachable.
    pub connect_timeout: Duration,
    /// Sent with every call (see [`crate::auth`]); by default the process's.
    pub token: Option<ClusterToken>,
    /// With a CA, peers are reached over TLS and must show a certificate it
    /// signed for their address (see [`crate::tls`]); by default the process's.
    pub ca: Option<TrustedCa>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            rpc_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            token: crate::auth::process_token(),
            ca: crate::tls::process_ca(),
        }
    }
}

/// The client end of the cluster token: adds it to every outgoing call.
#[derive(Clone, Debug)]
pub struct Bearer(Option<ClusterToken>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            token.attach(req.metadata_mut());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the cluster token, its answers' bodies cut
/// after large messages' headers ([`crate::framing`]).
pub type PeerChannel = InterceptedService<CutChannel, Bearer>;

/// A channel whose answers' bodies are cut after large messages' headers.
pub type CutChannel = MapResponse<Channel, fn(CutResponse) -> CutResponse>;
type CutResponse = http::Response<tonic::body::Body>;

/// Cached channels to peers, keyed by advertised address.
#[derive(Debug)]
pub struct PeerPool {
    opts: PeerOptions,
    channels: Mutex<HashMap<String, CutChannel>>,
}

/// What `GetInfo` tells about a peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub node: NodeRef,
    pub predecessor: Option<NodeRef>,
    pub successors: Vec<NodeRef>,
    pub uptime_secs: u64,
    pub replicas: u32,
    pub state: NodeState,
    /// Since when the node's data dir has been in a ring with no absence
    /// longer than the tombstone grace (ms since the Unix epoch).
    pub alive_since_ms: u64,
}

/// Where a node is in its life, as it reports itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Joined, but no predecessor has notified it yet.
    Joining,
    /// Serving its share of the ring.
    Serving,
    /// Handing its keys off before it goes (graceful leave or drain).
    Leaving,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Serving => "serving",
            NodeState::Leaving => "leaving",
        }
    }

    pub fn to_pb(self) -> pb::NodeState {
        match self {
            NodeState::Joining => pb::NodeState::Joining,
            NodeState::Serving => pb::NodeState::Serving,
            NodeState::Leaving => pb::NodeState::Leaving,
        }
    }

    /// An unknown or unset state (an older node) reads as serving.
    pub fn from_pb(state: i32) -> NodeState {
        match pb::NodeState::try_from(state) {
            Ok(pb::NodeState::Joining) => NodeState::Joining,
            Ok(pb::NodeState::Leaving) => NodeState::Leaving,
            _ => NodeState::Serving,
        }
    }
}

/// One row of a peer's finger table.
#[derive(Clone, Debug)]
pub struct FingerRow {
    pub index: u32,
    pub start: Id,
    pub node: Option<NodeRef>,
}

impl PeerPool {
    pub fn new(opts: PeerOptions) -> PeerPool {
        PeerPool {
            opts,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub fn options(&self) -> &PeerOptions {
        &self.opts
    }

    /// The URI scheme of calls to peers: TLS when a CA is given.
    fn scheme(&self) -> &'static str {
        if self.opts.ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A channel to `addr`, created lazily; the connection is made on first use.
    pub fn channel(&self, addr: &str) -> Result<CutChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        wire::validate_addr(addr)?;
        let scheme = self.scheme();
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::invalid(format!("address {addr:?}: {e}")))?
            .connect_timeout(self.opts.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(FRAME_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.opts.ca {
            endpoint = endpoint
                .tls_config(ca.grpc())
                .map_err(|e| Error::invalid(format!("TLS to {addr}: {e}")))?;
        }
        let cut: fn(CutResponse) -> CutResponse = crate::framing::cut_response;
        let ch = MapResponse::new(endpoint.connect_lazy(), cut);
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn bearer(&self) -> Bearer {
        Bearer(self.opts.token.clone())
    }

    /// Forgets the channel to `addr` so the next call reconnects from scratch.
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    pub fn ring(&self, addr: &str) -> Result<RingClient<PeerChannel>> {
        Ok(
            RingClient::with_interceptor(self.channel(addr)?, self.bearer())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    pub fn store(&self, addr: &str) -> Result<StoreClient<PeerChannel>> {
        Ok(
            StoreClient::with_interceptor(self.channel(addr)?, self.bearer())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// Wraps `msg` in a request with the unary deadline.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.opts.rpc_timeout);
        req
    }

    /// Maps a failed call's status to an error, forgetting the channel when
    /// the peer could not be reached so a restarted peer is reconnected.
    pub fn fail(&self, addr: &str, status: Status) -> Error {
        let err = status_to_error(addr, status);
        if matches!(err, Error::Unreachable { .. }) {
            self.forget(addr);
        }
        err
    }

    pub async fn get_info(&self, addr: &str) -> Result<PeerInfo> {
        let resp = self
            .ring(addr)?
            .get_info(self.request(pb::Empty {}))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner();
        info_from_pb(resp).map_err(wire::blame(addr))
    }

    pub async fn find_step(&self, addr: &str, target: &Id) -> Result<Route> {
        let resp = self
            .ring(addr)?
            .find_step(self.request(pb::FindStepRequest {
                id: target.as_bytes().to_vec(),
            }))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner();
        wire::route_from_pb(resp).map_err(wire::blame(addr))
    }

    /// Asks `addr` to run a whole lookup; the deadline allows for its own hops.
    pub async fn find_successor(&self, addr: &str, target: &Id) -> Result<(NodeRef, u32)> {
        let mut req = tonic::Request::new(pb::FindSuccessorRequest {
            id: target.as_bytes().to_vec(),
        });
        req.set_timeout(self.opts.rpc_timeout * LOOKUP_DEADLINE_FACTOR);
        let mut ring = self.ring(addr)?;
        let resp = self
            .watched(addr, async {
                ring.find_successor(req)
                    .await
                    .map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        let owner = wire::node_from_pb(resp.owner, "owner").map_err(wire::blame(addr))?;
        Ok((owner, resp.hops))
    }

    pub async fn notify(&self, addr: &str, candidate: &NodeRef) -> Result<()> {
        self.ring(addr)?
            .notify(self.request(pb::NotifyRequest {
                candidate: Some(wire::node_to_pb(candidate)),
            }))
            .await
            .map_err(|s| self.fail(addr, s))?;
        Ok(())
    }

    pub async fn ping(&self, addr: &str) -> Result<()> {
        self.ring(addr)?
            .ping(self.request(pb::Empty {}))
            .await
            .map_err(|s| self.fail(addr, s))?;
        Ok(())
    }

    /// Runs `call`, a call to `addr` whose deadline allows for many bytes
    /// or hops, and pings `addr` while it runs: first once the call has
    /// taken a tenth of a deadline, then a deadline after each answer. A
    /// peer that does not answer (frozen, or gone with its socket still
    /// open) fails the call within about one deadline when it was silent
    /// from the start, two when it stops midway, instead of at the end of
    /// the long one. HTTP/2 keepalive cannot tell: a connection opened to a
    /// frozen process never reads a byte, so it is never pinged. A busy
    /// peer answers the ping (or says it is busy), and its call goes on.
    async fn watched<T>(&self, addr: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let watchdog = async {
            tokio::time::sleep(self.opts.rpc_timeout / 10).await;
            loop {
                match self.ping(addr).await {
                    Err(e) if e.peer_may_be_gone() => return e,
                    _ => tokio::time::sleep(self.opts.rpc_timeout).await,
                }
            }
        };
        tokio::select! {
            biased;
            answer = call => answer,
            gone = watchdog => Err(gone),
        }
    }

    pub async fn leave(
        &self,
        addr: &str,
        leaving: &NodeRef,
        predecessor: Option<&NodeRef>,
        successors: &[NodeRef],
    ) -> Result<()> {
        self.ring(addr)?
            .leave(self.request(pb::LeaveRequest {
                leaving: Some(wire::node_to_pb(leaving)),
                predecessor: predecessor.map(wire::node_to_pb),
                successors: wire::nodes_to_pb(successors),
            }))
            .await
            .map_err(|s| self.fail(addr, s))?;
        Ok(())
    }

    /// Follows successor pointers from `first`, returning each node's info
    /// in ring order, `first` included. A node that does not answer is passed
    /// over via the previous node's successor list, so one dead node does not
    /// end the walk; it stops on reaching a node already seen, after
    /// [`MAX_RING_WALK`] nodes, or once `WALK_BOUND_CALLS` deadlines have
    /// passed (a partial walk: callers that need the whole ring check that
    /// it closes).
    pub async fn walk_ring(&self, first: PeerInfo) -> Vec<PeerInfo> {
        let started = std::time::Instant::now();
        let bound = self.opts.rpc_timeout * WALK_BOUND_CALLS;
        let mut seen = HashSet::from([first.node.addr.clone()]);
        let mut frontier = first.successors.clone();
        let mut out = vec![first];
        while let Some(next) = frontier.first().cloned() {
            if seen.contains(&next.addr) || out.len() >= MAX_RING_WALK {
                break;
            }
            if started.elapsed() >= bound {
                tracing::warn!(
                    nodes = out.len(),
                    ?bound,
                    "ring walk cut short at its bound"
                );
                break;
            }
            match self.get_info(&next.addr).await {
                Ok(info) => {
                    seen.insert(next.addr);
                    frontier = info.successors.clone();
                    out.push(info);
                }
                Err(_) => {
                    frontier.remove(0);
                }
            }
        }
        out
    }

    pub async fn get_finger_table(&self, addr: &str) -> Result<Vec<FingerRow>> {
        let resp = self
            .ring(addr)?
            .get_finger_table(self.request(pb::Empty {}))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner();
        resp.fingers
            .into_iter()
            .map(|f| {
                Ok(FingerRow {
                    index: f.index,
                    start: wire::id_from_pb(&f.start, "finger start")?,
                    node: f
                        .node
                        .map(|n| wire::node_from_pb(Some(n), "finger"))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(wire::blame(addr))
    }
}

// ------------------------------------------------------------------ Store

fn key_list(keys: &[Id]) -> pb::KeyList {
    pb::KeyList {
        keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
    }
}

impl PeerPool {
    /// Streams `chunk` to `addr` in [`crate::PIECE_BYTES`] pieces.
    /// `copies` > 1 asks the receiver to replicate before answering.
    /// Returns how many copies are durable.
    pub async fn put_chunk(&self, addr: &str, chunk: &CheckedChunk, copies: u32) -> Result<u32> {
        self.put_chunk_aged(addr, chunk, copies, Duration::ZERO)
            .await
    }

    /// [`PeerPool::put_chunk`] of a copy last touched `age` ago here (a
    /// repair push), so the receiver's collector counts from the same time.
    pub async fn put_chunk_aged(
        &self,
        addr: &str,
        chunk: &CheckedChunk,
        copies: u32,
        age: Duration,
    ) -> Result<u32> {
        let data = chunk.data().clone();
        let pieces: Vec<framing::Piece> = wire::pieces(&data).map(Into::into).collect();
        self.put_chunk_streamed(
            addr,
            chunk.key(),
            data.len(),
            copies,
            age,
            futures::stream::iter(pieces),
        )
        .await
    }

    /// A `PutChunk` of chunk `key` (`size` bytes) whose pieces are sent as
    /// `pieces` yields them: for an owner passing on a chunk it is still
    /// receiving. The receiver checks the bytes against `key`, so a
    /// stream that ends short or carries other bytes stores nothing.
    pub async fn put_chunk_streamed(
        &self,
        addr: &str,
        key: &Id,
        size: usize,
        copies: u32,
        age: Duration,
        pieces: impl futures::Stream<Item = framing::Piece> + Send + 'static,
    ) -> Result<u32> {
        let header = pb::PutChunkHeader {
            key: key.as_bytes().to_vec(),
            size: size as u64,
            copies,
            age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        };
        let body = framing::put_chunk_body(header, pieces);
        let deadline = self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR;
        let channel = self.channel(addr)?;
        let resp: pb::PutChunkResponse = self
            .watched(addr, async {
                let call = async {
                    let path = framing::PUT_CHUNK_PATH;
                    let res = self
                        .send_framed(channel, addr, path, body, deadline)
                        .await?;
                    unary_message(res).await
                };
                call.await.map_err(|s| self.fail(addr, s))
            })
            .await?;
        Ok(resp.copies)
    }

    /// Sends a call on `channel` (to `addr`) whose request body is given
    /// whole, already framed (see [`framing::put_chunk_body`]), with the
    /// same token and deadline header as the generated clients' calls. An
    /// error status in the answer's headers (a trailers-only answer, which
    /// carries no message) is returned as the error; otherwise the answer,
    /// whose messages and trailers the caller reads ([`unary_message`], or
    /// a [`framing::MessageReader`]).
    async fn send_framed(
        &self,
        channel: CutChannel,
        addr: &str,
        path: &'static str,
        body: tonic::body::Body,
        deadline: Duration,
    ) -> std::result::Result<http::Response<tonic::body::Body>, Status> {
        use tower::ServiceExt;
        let scheme = self.scheme();
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(addr)
            .path_and_query(path)
            .build()
            .map_err(|e| Status::invalid_argument(format!("address {addr:?}: {e}")))?;
        // tonic's own form of the deadline header.
        let mut metadata = tonic::Request::new(());
        metadata.set_timeout(deadline);
        let mut req = http::Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = metadata.into_parts().0.into_headers();
        let headers = req.headers_mut();
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        let res = InterceptedService::new(channel, self.bearer())
            .oneshot(req)
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        match Status::from_header_map(res.headers()) {
            Some(status) if status.code() == Code::Ok => {
                Err(Status::internal("an answer with no message"))
            }
            Some(status) => Err(status),
            None => Ok(res.map(tonic::body::Body::new)),
        }
    }

    /// Fetches one chunk from `addr` and checks its bytes against `key`.
    /// Bytes that do not match are [`Error::Corrupt`], and `addr` is asked
    /// to re-check its copy (in the background: the caller goes on to the
    /// next holder).
    pub async fn get_chunk(&self, addr: &str, key: &Id) -> Result<CheckedChunk> {
        self.get_chunk_behind(addr, key, 0).await
    }

    /// [`PeerPool::get_chunk`] for a read that `passed_back` nodes have
    /// passed back already, each to a node handing its range over to it.
    pub async fn get_chunk_behind(
        &self,
        addr: &str,
        key: &Id,
        passed_back: u32,
    ) -> Result<CheckedChunk> {
        match self
            .fetch_chunk::<ChunkHasher>(addr, key, passed_back)
            .await
        {
            Err(Error::Corrupt(reason)) => {
                self.report_corrupt(addr, *key);
                Err(Error::Corrupt(format!("{addr} sent bad bytes: {reason}")))
            }
            answer => answer,
        }
    }

    /// Fetches one chunk from `addr` as it comes, within the size limit but
    /// not checked against `key`: for a reader that checks the bytes as
    /// part of a whole (a download to a file, held back until its SHA-256
    /// matches) and asks again with [`PeerPool::get_chunk`] if they fail.
    pub async fn get_chunk_unchecked(&self, addr: &str, key: &Id) -> Result<Bytes> {
        self.fetch_chunk::<ChunkBuffer>(addr, key, 0).await
    }

    /// One GetChunk, its pieces gathered by `G`, within the transfer
    /// deadline.
    async fn fetch_chunk<G: Gather>(
        &self,
        addr: &str,
        key: &Id,
        passed_back: u32,
    ) -> Result<G::Chunk> {
        // tonic ends a call at its deadline only until the answer's headers
        // arrive; the pieces after them are bounded here, by the same one.
        let deadline = self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR;
        let req = pb::GetChunkRequest {
            key: key.as_bytes().to_vec(),
            passed_back,
        };
        let call = self.watched(addr, self.get_chunk_within::<G>(addr, key, req, deadline));
        match tokio::time::timeout(deadline, call).await {
            Ok(answer) => answer,
            Err(_) => {
                self.forget(addr);
                Err(Error::Unreachable {
                    peer: addr.to_string(),
                    reason: format!("chunk {} not sent within {deadline:?}", key.short()),
                })
            }
        }
    }

    /// The `GetChunk` itself: its answer read from the frames it arrives
    /// in ([`framing::MessageReader`]), each piece's data handed to `G`
    /// without tonic's copy into a decode buffer.
    async fn get_chunk_within<G: Gather>(
        &self,
        addr: &str,
        key: &Id,
        req: pb::GetChunkRequest,
        deadline: Duration,
    ) -> Result<G::Chunk> {
        let channel = self.channel(addr)?;
        let body = framing::unary_body(&req);
        let res = self
            .send_framed(channel, addr, framing::GET_CHUNK_PATH, body, deadline)
            .await
            .map_err(|s| self.fail(addr, s))?;
        let mut messages = framing::MessageReader::new(res.into_body(), MAX_MESSAGE_BYTES);
        let mut chunk: Option<G> = None;
        while let Some(message) = messages
            .next_message()
            .await
            .map_err(|s| self.fail(addr, s))?
        {
            let (data, size) = match framing::chunk_piece_data(message) {
                Ok(piece) => piece,
                // Fields in another order than ours: prost reads them.
                Err(message) => {
                    let piece: pb::ChunkPiece =
                        framing::decode(message).map_err(|s| self.fail(addr, s))?;
                    (framing::Piece::from(piece.data), piece.size)
                }
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            let gathered = chunk.get_or_insert_with(|| G::new(*key, size));
            for part in data.parts() {
                gathered.push(part).map_err(|_| Error::BadReply {
                    peer: addr.to_string(),
                    reason: format!("chunk {} is larger than any chunk may be", key.short()),
                })?;
            }
        }
        // An error the node ended its answer with, or none at all.
        messages.status().map_err(|s| self.fail(addr, s))?;
        chunk.unwrap_or_else(|| G::new(*key, 0)).finish()
    }

    /// Asks `addr` to re-hash its copy of `key`, which sent bad bytes, so a
    /// rotten copy is moved aside now rather than at the next scrub. Runs
    /// in the background, bounded by the call deadline; a failure only
    /// leaves the scrubber to find it.
    fn report_corrupt(&self, addr: &str, key: Id) {
        let mut store = match self.store(addr) {
            Ok(store) => store,
            Err(e) => {
                debug!(peer = %addr, error = %e, "cannot ask a holder to re-check a chunk");
                return;
            }
        };
        let mut req = self.request(pb::GetChunkRequest {
            key: key.as_bytes().to_vec(),
            passed_back: 0,
        });
        req.set_timeout(self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR);
        let addr = addr.to_string();
        tokio::spawn(async move {
            match store.check_chunk(req).await {
                Ok(resp) => {
                    let intact = resp.into_inner().intact;
                    debug!(peer = %addr, key = %key.short(), intact, "a holder re-checked a chunk it sent bad");
                }
                Err(status) => {
                    debug!(peer = %addr, key = %key.short(), error = %status, "cannot ask a holder to re-check a chunk");
                }
            }
        });
    }

    /// Which of `keys` the node at `addr` holds (each held one counts as
    /// just touched there).
    pub async fn has_chunks(&self, addr: &str, keys: &[Id]) -> Result<Vec<bool>> {
        let req = self.request(key_list(keys));
        let resp = self.store(addr)?.has_chunks(req).await;
        self.key_answers(addr, keys, resp)
    }

    /// Which of `keys` a live manifest held at `addr` names.
    pub async fn referenced(&self, addr: &str, keys: &[Id]) -> Result<Vec<bool>> {
        let req = self.request(key_list(keys));
        let resp = self.store(addr)?.referenced(req).await;
        self.key_answers(addr, keys, resp)
    }

    /// One flag per asked key, or why the answer cannot be used.
    fn key_answers(
        &self,
        addr: &str,
        keys: &[Id],
        resp: std::result::Result<tonic::Response<pb::HasChunksResponse>, Status>,
    ) -> Result<Vec<bool>> {
        let resp = resp.map_err(|s| self.fail(addr, s))?.into_inner();
        if resp.present.len() != keys.len() {
            return Err(Error::BadReply {
                peer: addr.to_string(),
                reason: format!(
                    "asked about {} keys, told about {}",
                    keys.len(),
                    resp.present.len()
                ),
            });
        }
        Ok(resp.present)
    }

    /// Stores `manifest` on `addr`. `replica` marks a copy forwarded by
    /// another node (stored as is, not forwarded again).
    pub async fn put_manifest(
        &self,
        addr: &str,
        manifest: &Manifest,
        copies: u32,
        replica: bool,
    ) -> Result<(u32, u64)> {
        let mut req = tonic::Request::new(pb::PutManifestRequest {
            manifest: Some(wire::manifest_to_pb(manifest)),
            copies,
            replica,
        });
        req.set_timeout(self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR);
        let mut store = self.store(addr)?;
        let resp = self
            .watched(addr, async {
                store
                    .put_manifest(req)
                    .await
                    .map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        Ok((resp.copies, resp.version))
    }

    /// `addr`'s own copy of manifest `name` (tombstones included), not
    /// looked for through the ring.
    pub async fn get_manifest(&self, addr: &str, name: &str) -> Result<Option<Manifest>> {
        self.get_manifest_behind(addr, name, 0).await
    }

    /// The manifest of `name` as `addr` finds it through the ring
    /// (tombstones included).
    pub async fn find_manifest_through(&self, addr: &str, name: &str) -> Result<Option<Manifest>> {
        let req = pb::GetManifestRequest {
            name: name.to_string(),
            route: true,
            passed_back: 0,
        };
        Ok(self.manifest_call(addr, req).await?.0)
    }

    /// `addr`'s own copy of manifest `name`, for a reader that takes `addr`
    /// for one of its holders: [`Error::Leaving`] if `addr` is leaving, as
    /// its copy may be older than its successor's, which owns the key now.
    pub async fn get_holder_manifest(&self, addr: &str, name: &str) -> Result<Option<Manifest>> {
        match self.own_manifest(addr, name, 0).await? {
            (_, true) => Err(Error::Leaving {
                peer: addr.to_string(),
            }),
            (manifest, false) => Ok(manifest),
        }
    }

    /// `addr`'s own copy of manifest `name`, for a read that `passed_back`
    /// nodes have passed back already (see [`PeerPool::get_chunk_behind`]).
    pub async fn get_manifest_behind(
        &self,
        addr: &str,
        name: &str,
        passed_back: u32,
    ) -> Result<Option<Manifest>> {
        Ok(self.own_manifest(addr, name, passed_back).await?.0)
    }

    /// `addr`'s own copy of manifest `name` (not looked for through the
    /// ring), and whether `addr` said it leaves.
    async fn own_manifest(
        &self,
        addr: &str,
        name: &str,
        passed_back: u32,
    ) -> Result<(Option<Manifest>, bool)> {
        let req = pb::GetManifestRequest {
            name: name.to_string(),
            route: false,
            passed_back,
        };
        self.manifest_call(addr, req).await
    }

    /// One GetManifest: the manifest, and whether the node said it leaves.
    async fn manifest_call(
        &self,
        addr: &str,
        req: pb::GetManifestRequest,
    ) -> Result<(Option<Manifest>, bool)> {
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.opts.rpc_timeout * LOOKUP_DEADLINE_FACTOR);
        let mut store = self.store(addr)?;
        let resp = self
            .watched(addr, async {
                store
                    .get_manifest(req)
                    .await
                    .map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        let manifest = resp
            .manifest
            .map(wire::manifest_from_pb)
            .transpose()
            .map_err(wire::blame(addr))?;
        Ok((manifest, resp.leaving))
    }

    /// Writes a tombstone for `name` through `addr`.
    pub async fn delete_file(&self, addr: &str, name: &str) -> Result<u64> {
        let mut req = tonic::Request::new(pb::DeleteFileRequest {
            name: name.to_string(),
        });
        req.set_timeout(self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR);
        let mut store = self.store(addr)?;
        let resp = self
            .watched(addr, async {
                store.delete_file(req).await.map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        Ok(resp.version)
    }

    /// Live files: on `addr` only (tombstones included), or gathered from
    /// the whole ring; every page of them, sorted by name.
    pub async fn list_files(&self, addr: &str, ring: bool) -> Result<Vec<pb::FileEntry>> {
        let pages = read_pages(
            addr,
            None,
            |after: Option<Id>| async move {
                let page = self.list_files_page(addr, ring, after.as_ref(), 0).await?;
                Ok((page.files, page.next.map(Some)))
            },
            |before, next| next.is_some_and(|n| before.is_none_or(|b| n > b)),
        )
        .await?;
        let mut files: Vec<pb::FileEntry> = pages.into_iter().flatten().collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// One page of files in manifest-key order after `after` (from the
    /// first key when `None`): at most `limit` (0: as many as the node
    /// sends in one page).
    pub async fn list_files_page(
        &self,
        addr: &str,
        ring: bool,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<FilesPage> {
        let mut req = tonic::Request::new(pb::ListFilesRequest {
            ring,
            start_after: after.map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
            limit,
        });
        req.set_timeout(self.opts.rpc_timeout * TRANSFER_DEADLINE_FACTOR);
        let mut store = self.store(addr)?;
        let resp = self
            .watched(addr, async {
                store.list_files(req).await.map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        Ok(FilesPage {
            files: resp.files,
            next: resp
                .next
                .map(|n| wire::id_from_pb(&n, "next").map_err(wire::blame(addr)))
                .transpose()?,
        })
    }

    /// Keys `addr` holds in `(start, end]`: chunk keys, and manifest keys
    /// with their versions, every page of them, clockwise from `start`.
    pub async fn list_keys(&self, addr: &str, start: &Id, end: &Id) -> Result<KeysHeld> {
        let pages = read_pages(
            addr,
            *start,
            |from: Id| async move {
                let page = self.list_keys_page(addr, &from, end, 0).await?;
                let next = page.next;
                Ok((page, next))
            },
            // Each page must end inside what is left of the arc, so the
            // arc shrinks; a cursor at `end` would mean the whole ring.
            |from, next| next.in_open(from, end),
        )
        .await?;
        let mut held = KeysHeld::default();
        for page in pages {
            held.chunks.extend(page.chunks);
            held.manifests.extend(page.manifests);
        }
        Ok(held)
    }

    /// One page of the keys `addr` holds in `(start, end]`: at most `limit`
    /// distinct keys (0: as many as the node sends in one page), and where
    /// the next page starts if there is more.
    pub async fn list_keys_page(
        &self,
        addr: &str,
        start: &Id,
        end: &Id,
        limit: u32,
    ) -> Result<KeysPage> {
        let resp = self
            .store(addr)?
            .list_keys(self.request(pb::ListKeysRequest {
                start: start.as_bytes().to_vec(),
                end: end.as_bytes().to_vec(),
                limit,
            }))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner();
        let parse = |b: &[u8]| wire::id_from_pb(b, "key").map_err(wire::blame(addr));
        Ok(KeysPage {
            chunks: resp
                .chunks
                .iter()
                .map(|k| parse(k))
                .collect::<Result<_>>()?,
            manifests: resp
                .manifests
                .iter()
                .map(|m| {
                    Ok((
                        parse(&m.key)?,
                        wire::stamp_from_pb(m).map_err(wire::blame(addr))?,
                    ))
                })
                .collect::<Result<_>>()?,
            next: resp.next.as_deref().map(parse).transpose()?,
        })
    }

    pub async fn get_stats(&self, addr: &str) -> Result<pb::StoreStats> {
        Ok(self
            .store(addr)?
            .get_stats(self.request(pb::Empty {}))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner())
    }
}

impl PeerPool {
    /// The node's events since `since` (see [`crate::events`]).
    pub async fn events(&self, addr: &str, since: u64) -> Result<EventBatch> {
        let resp = self
            .ring(addr)?
            .get_events(self.request(pb::GetEventsRequest {
                since,
                max: crate::events::MAX_EVENTS_PER_READ as u32,
            }))
            .await
            .map_err(|s| self.fail(addr, s))?
            .into_inner();
        wire::events_from_pb(resp).map_err(wire::blame(addr))
    }

    /// Asks the node to leave the ring and hand every key off, waiting up to
    /// `deadline` for it to answer with its report. Destroy the node only if
    /// the report [`is_complete`](HandoffReport::is_complete).
    pub async fn drain(&self, addr: &str, deadline: Duration) -> Result<HandoffReport> {
        let mut req = tonic::Request::new(pb::DrainRequest {
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        });
        // The node answers at its deadline at the latest; allow for the trip.
        req.set_timeout(deadline + self.opts.rpc_timeout * 2);
        let mut ring = self.ring(addr)?;
        let resp = self
            .watched(addr, async {
                ring.drain(req).await.map_err(|s| self.fail(addr, s))
            })
            .await?
            .into_inner();
        Ok(wire::handoff_from_pb(&resp))
    }
}

/// What a node holds in a key range.
#[derive(Clone, Debug, Default)]
pub struct KeysHeld {
    pub chunks: Vec<Id>,
    pub manifests: Vec<(Id, Stamp)>,
}

/// One page of a file listing, in manifest-key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilesPage {
    pub files: Vec<pb::FileEntry>,
    /// The last key this page covers, when more files follow.
    pub next: Option<Id>,
}

/// Most pages one listing reads from a node. With the nodes' page caps
/// that is far more keys or files than a node holds; it ends a listing
/// that a peer keeps extending.
pub const MAX_LIST_PAGES: usize = 10_000;

/// Reads a listing page by page from `addr`: `fetch(cursor)` answers one
/// page and the cursor of the next (`None`: that was the last), which must
/// move on from the one before (`advances(before, next)`); at most
/// [`MAX_LIST_PAGES`] pages.
async fn read_pages<C, P, F, Fut>(
    addr: &str,
    first: C,
    mut fetch: F,
    advances: impl Fn(&C, &C) -> bool,
) -> Result<Vec<P>>
where
    F: FnMut(C) -> Fut,
    Fut: std::future::Future<Output = Result<(P, Option<C>)>>,
    C: Clone,
{
    let mut pages = Vec::new();
    let mut cursor = first;
    while pages.len() < MAX_LIST_PAGES {
        let (page, next) = fetch(cursor.clone()).await?;
        pages.push(page);
        match next {
            None => return Ok(pages),
            Some(next) if advances(&cursor, &next) => cursor = next,
            Some(_) => {
                return Err(Error::BadReply {
                    peer: addr.to_string(),
                    reason: "a listing page's cursor does not move forward".into(),
                })
            }
        }
    }
    Err(Error::BadReply {
        peer: addr.to_string(),
        reason: format!("a listing went on past {MAX_LIST_PAGES} pages"),
    })
}

/// Moving a chunk (up to [`crate::MAX_CHUNK_BYTES`]) and its replication
/// takes longer than a unary call; its deadline is this many unary ones.
const TRANSFER_DEADLINE_FACTOR: u32 = 15;

/// A lookup asked of another node may take several hops of its own, each
/// with its own deadline; the outer call allows for a few of them.
const LOOKUP_DEADLINE_FACTOR: u32 = 4;

pub fn info_from_pb(resp: pb::NodeInfo) -> Result<PeerInfo> {
    Ok(PeerInfo {
        node: wire::node_from_pb(resp.node, "node")?,
        predecessor: resp
            .predecessor
            .map(|p| wire::node_from_pb(Some(p), "predecessor"))
            .transpose()?,
        successors: wire::nodes_from_pb(resp.successors, "successor")?,
        uptime_secs: resp.uptime_secs,
        replicas: resp.replicas,
        state: NodeState::from_pb(resp.state),
        alive_since_ms: resp.alive_since_ms,
    })
}

/// The one mapping from a status answered by (or on the way to) a peer.
pub fn status_to_error(peer: &str, status: Status) -> Error {
    let peer = peer.to_string();
    if status
        .metadata()
        .contains_key(crate::server::LEAVING_HEADER)
    {
        return Error::Leaving { peer };
    }
    if status
        .metadata()
        .contains_key(crate::server::ANSWERED_HEADER)
    {
        // Alive, and said "not now": not a reason to drop it.
        return Error::Remote {
            peer,
            message: status.message().to_string(),
            retryable: true,
        };
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Error::Unreachable {
                peer,
                reason: status.message().to_string(),
            }
        }
        Code::NotFound => Error::NotFound(status.message().to_string()),
        Code::InvalidArgument => Error::InvalidArgument(status.message().to_string()),
        Code::Unauthenticated => Error::Unauthenticated(format!("{peer}: {}", status.message())),
        Code::DataLoss => Error::Corrupt(format!("{peer}: {}", status.message())),
        Code::ResourceExhausted
            if status
                .metadata()
                .contains_key(crate::server::DISK_FULL_HEADER) =>
        {
            Error::DiskFull(format!("{peer}: {}", status.message()))
        }
        // Too many calls at once on our connection: alive, try again.
        Code::ResourceExhausted => Error::Remote {
            peer,
            message: format!("overloaded: {}", status.message()),
            retryable: true,
        },
        // A refusal that trying again will not change.
        Code::FailedPrecondition => Error::Remote {
            peer,
            message: status.message().to_string(),
            retryable: false,
        },
        // tonic's wording for an answer that was plain HTTP, not gRPC.
        Code::Internal
            if status
                .message()
                .contains("while receiving response with status") =>
        {
            Error::BadReply {
                peer,
                reason: "not a chord-dfs gRPC port (it answered plain HTTP)".into(),
            }
        }
        Code::Internal | Code::Unimplemented => Error::BadReply {
            peer,
            reason: status.message().to_string(),
        },
        _ => Error::Remote {
            peer,
            message: format!("{:?}: {}", status.code(), status.message()),
            retryable: true,
        },
    }
}

/// The one message `M` of a unary call's answer as [`PeerPool::send_framed`]
/// gave it, read by tonic's decoder; an error status in its trailers is
/// returned as tonic's clients return it.
async fn unary_message<M>(res: http::Response<tonic::body::Body>) -> std::result::Result<M, Status>
where
    M: prost::Message + Default + Send + Sync + 'static,
{
    let code = res.status();
    let mut answer = tonic::codec::Streaming::new_response(
        tonic_prost::ProstDecoder::<M>::default(),
        res.into_body(),
        code,
        None,
        Some(MAX_MESSAGE_BYTES),
    );
    let message = answer
        .message()
        .await?
        .ok_or_else(|| Status::internal("an answer with no message"))?;
    // Reads to the end: an error status in the trailers comes out here.
    answer.trailers().await?;
    Ok(message)
}

/// How [`PeerPool`] gathers the pieces of a chunk it reads: checked
/// against the key ([`ChunkHasher`]) or as they come ([`ChunkBuffer`]).
trait Gather: Sized {
    type Chunk;
    fn new(key: Id, size: usize) -> Self;
    fn push(&mut self, piece: &[u8]) -> Result<()>;
    fn finish(self) -> Result<Self::Chunk>;
}

impl Gather for ChunkHasher {
    type Chunk = CheckedChunk;
    fn new(key: Id, size: usize) -> Self {
        ChunkHasher::new(key, size)
    }
    fn push(&mut self, piece: &[u8]) -> Result<()> {
        stages::time(Stage::ChunkCheck, || ChunkHasher::push(self, piece))
    }
    fn finish(self) -> Result<CheckedChunk> {
        ChunkHasher::finish(self)
    }
}

impl Gather for ChunkBuffer {
    type Chunk = Bytes;
    fn new(key: Id, size: usize) -> Self {
        ChunkBuffer::new(key, size)
    }
    fn push(&mut self, piece: &[u8]) -> Result<()> {
        ChunkBuffer::push(self, piece)
    }
    fn finish(self) -> Result<Bytes> {
        Ok(self.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::error_to_status;

    /// What a caller makes of each error a node answers with: whether it
    /// retries, and whether it drops the node from its tables.
    #[test]
    fn errors_cross_the_wire_with_their_meaning() {
        let peer = "10.0.0.1:5057";
        let remote = |retryable| Error::Remote {
            peer: "c".into(),
            message: "m".into(),
            retryable,
        };
        // (answered error, retried by the caller, peer counted as gone)
        let table = [
            (
                Error::Unavailable("only 1 of 3 copies durable".into()),
                true,
                false,
            ),
            (
                Error::Unreachable {
                    peer: "c".into(),
                    reason: "refused".into(),
                },
                true,
                false,
            ),
            (remote(true), true, false),
            (remote(false), false, false),
            (Error::Leaving { peer: peer.into() }, true, true),
            (Error::DiskFull("full".into()), false, false),
            (Error::NotFound("x".into()), false, false),
            (Error::invalid("x"), false, false),
            (Error::Unauthenticated("no token".into()), false, true),
            (Error::Shutdown, true, true),
        ];
        for (answered, retried, gone) in table {
            let what = answered.to_string();
            let seen = status_to_error(peer, error_to_status(answered));
            assert_eq!(seen.is_retryable(), retried, "{what} -> {seen:?}");
            assert_eq!(seen.peer_may_be_gone(), gone, "{what} -> {seen:?}");
        }
        // The kind is said once, by the caller's error.
        for (answered, seen) in [
            (
                Error::NotFound("chunk 97fd".into()),
                "not found: chunk 97fd",
            ),
            (Error::invalid("bad name"), "invalid argument: bad name"),
            (
                Error::Corrupt("chunk 97fd: bytes hash to 0a1b".into()),
                "corrupt data: 10.0.0.1:5057: chunk 97fd: bytes hash to 0a1b",
            ),
        ] {
            let status = error_to_status(answered);
            assert_eq!(status_to_error(peer, status).to_string(), seen);
        }
        // tonic's refusal of a call over the per-connection limit.
        let busy = status_to_error(
            peer,
            Status::resource_exhausted("Too many active requests for the connection"),
        );
        assert!(busy.is_retryable() && !busy.peer_may_be_gone(), "{busy:?}");
        // No answer at all: the one UNAVAILABLE that means the peer may be gone.
        let silent = status_to_error(peer, Status::unavailable("connection refused"));
        assert!(silent.peer_may_be_gone() && silent.is_retryable());
    }
}
