//! `chord.v1.Store`: thin handlers over the node's disk store and the
//! ring-level operations in [`crate::replication`].
//!
//! Chunk data moves in pieces of at most [`crate::PIECE_BYTES`]; a chunk is
//! never larger than [`crate::MAX_CHUNK_BYTES`], so a handler holds at most
//! one chunk. A stream that ends early, lies about its size or carries bytes
//! that do not match its key stores nothing.
//!
//! A handler touches the file system only through [`Node::disk`], off the
//! async workers. `Referenced` and `GetStats` read the store's in-memory
//! index in place: its lock is short and never held across I/O.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chord_proto::pb;
use chord_proto::pb::put_chunk_request::Body;
use chord_proto::pb::store_server::{Store, StoreServer};
use futures::Stream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error_to_status;
use crate::chord::Id;
use crate::error::Error;
use crate::framing::{self, MessageReader, Piece, GET_CHUNK_PATH, PUT_CHUNK_PATH};
use crate::node::{Counters, Node};
use crate::stages::{self, Stage};
use crate::store::{validate_name, AlignedBuf, ChunkHasher, DIRECT_BLOCK_BYTES};
use crate::wire;
use crate::MAX_MESSAGE_BYTES;

/// Most keys one `HasChunks` call may ask about: bounds the answer's size.
pub const MAX_KEYS_PER_CALL: usize = 100_000;

/// Most distinct keys in one `ListKeys` answer. A key listed as chunk and
/// manifest takes under 100 bytes, so a page stays near 1 MiB, a quarter
/// of the message cap, however the keys are mixed.
pub const MAX_KEYS_PER_PAGE: usize = 10_000;

/// Most files in one `ListFiles` answer. An entry with the longest name
/// (1 KiB) takes about 1.1 KiB, so a page stays near 1 MiB.
pub const MAX_FILES_PER_PAGE: usize = 1_000;

/// Blocks of a chunk a handler gathers ahead of its disk writer
/// ([`DIRECT_BLOCK_BYTES`] each).
const BLOCKS_AHEAD: usize = 2;

#[derive(Clone, Debug)]
pub struct StoreService {
    node: Arc<Node>,
    /// Memory for chunks being received, in KiB: client writes (which
    /// forward copies) and replica copies (which forward nothing) draw on
    /// separate budgets, so two nodes forwarding to each other can never
    /// hold each other's budget while they wait.
    primary_buffers: Arc<Semaphore>,
    replica_buffers: Arc<Semaphore>,
}

impl StoreService {
    pub fn new(node: Arc<Node>) -> StoreService {
        let kib = node.config().chunk_buffer_bytes / 1024;
        StoreService {
            node,
            primary_buffers: Arc::new(Semaphore::new(kib)),
            replica_buffers: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Room for a chunk of `size` bytes (a chunk larger than the whole
    /// budget takes all of it), waiting at most one RPC deadline; past
    /// that the node is busy, which the caller may retry.
    async fn reserve_buffer(
        &self,
        size: usize,
        primary: bool,
    ) -> Result<OwnedSemaphorePermit, Status> {
        let budget = if primary {
            &self.primary_buffers
        } else {
            &self.replica_buffers
        };
        let total = self.node.config().chunk_buffer_bytes / 1024;
        let kib = u32::try_from(size.div_ceil(1024).min(total)).unwrap_or(u32::MAX);
        let wait = self.node.config().rpc_timeout;
        match tokio::time::timeout(wait, budget.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(error_to_status(Error::Unavailable(format!(
                "busy: incoming chunks fill this node's {} MiB buffer budget; retry",
                total / 1024
            )))),
        }
    }

    fn count(&self) {
        Counters::bump(&self.node.counters.requests, 1);
    }

    /// Receives the data of a chunk that is to stay on this node alone (a
    /// write at R = 1, or a copy from its owner or from repair) and has it
    /// written as it arrives: the pieces are gathered into aligned blocks
    /// of one direct write each, which a blocking thread hashes and writes
    /// while the rest is on its way. The key is checked when the last
    /// block is in, before the file is synced and moved into place; a
    /// stream that breaks off, runs long or short, or does not match its
    /// key leaves nothing. Returns whether the chunk was written (`false`:
    /// an intact copy was here already).
    ///
    /// Each piece also goes, as it arrives, to every channel in `relay`
    /// (an owner passing the chunk on to its successors, see
    /// [`StoreService::write_and_pass_on`]); the channels close when the
    /// stream ends or breaks off.
    async fn write_as_it_arrives(
        &self,
        mut data: ChunkData,
        age: Duration,
        relay: Vec<UnboundedSender<Piece>>,
    ) -> Result<bool, Status> {
        let (key, size) = (data.key, data.size);
        let (blocks, mut arriving) = tokio::sync::mpsc::channel::<AlignedBuf>(BLOCKS_AHEAD);
        let writing = self.node.disk(move |s| {
            let mut writer = s.chunk_writer(key)?;
            while let Some(block) = arriving.blocking_recv() {
                writer.write(block.as_slice())?;
            }
            Ok(writer)
        });
        let receiving = async move {
            let mut block = AlignedBuf::with_room(DIRECT_BLOCK_BYTES);
            while let Some(piece) = data.next().await? {
                for to in &relay {
                    // A closed channel is a copy that has failed; its
                    // error is the answer of its call.
                    let _ = to.send(piece.clone());
                }
                for part in piece.parts() {
                    let mut rest = &part[..];
                    while !rest.is_empty() {
                        rest = block.fill_to(DIRECT_BLOCK_BYTES, rest);
                        if block.len() == DIRECT_BLOCK_BYTES {
                            let full = std::mem::replace(
                                &mut block,
                                AlignedBuf::with_room(DIRECT_BLOCK_BYTES),
                            );
                            if blocks.send(full).await.is_err() {
                                // The writer has stopped; its error is the answer.
                                return Ok(());
                            }
                        }
                    }
                }
            }
            data.check_complete()?;
            drop(relay);
            if !block.is_empty() {
                // An error here is the writer's, answered below.
                let _ = blocks.send(block).await;
            }
            Ok::<(), Status>(())
        };
        let (received, writer) = futures::future::join(receiving, writing).await;
        let writer = writer.map_err(error_to_status)?;
        let committed = self
            .node
            .disk(move |_| match received {
                // Dropping the writer removes its temporary file.
                Err(status) => Ok(Err(status)),
                Ok(()) => Ok(Ok(writer.commit(age))),
            })
            .await
            .map_err(error_to_status)??;
        match committed {
            Ok(written) => {
                Counters::bump(&self.node.counters.bytes_in, size as u64);
                Ok(written)
            }
            Err(Error::Corrupt(_)) => Err(key_mismatch(&key)),
            Err(e) => Err(error_to_status(e)),
        }
    }

    /// Receives a chunk written through this node, its owner, for
    /// `copies` copies in all: it is written here as it arrives (see
    /// [`StoreService::write_as_it_arrives`]) and each piece is passed on
    /// at once to the successors that take the other copies, each of which
    /// writes it as it arrives and checks the key itself. A successor
    /// that fails is replaced by the next one along, sent the copy written
    /// here. The chunk is held in memory only while a successor's stream
    /// lags behind this one. Returns the copies made.
    async fn write_and_pass_on(
        &self,
        data: ChunkData,
        copies: u32,
        age: Duration,
    ) -> Result<u32, Status> {
        let (key, size) = (data.key, data.size);
        let node = &self.node;
        let what = format!("chunk {}", key.short());
        let (want, successors) = node
            .copy_targets(copies, &what)
            .await
            .map_err(error_to_status)?;
        let mut relay = Vec::new();
        let mut streams = HashMap::new();
        for peer in successors.iter().take(want.saturating_sub(1)) {
            let (to, from) = tokio::sync::mpsc::unbounded_channel();
            relay.push(to);
            streams.insert(peer.addr.clone(), from);
        }
        let streams = std::sync::Mutex::new(streams);
        // Whether the copy here is durable, once its write has ended.
        let (stored_to, stored) = tokio::sync::watch::channel(None::<bool>);
        let writing = async {
            let written = self.write_as_it_arrives(data, age, relay).await;
            stored_to.send_replace(Some(written.is_ok()));
            written
        };
        let copying = node.copy_along(want, successors, &what, |peer| {
            let stream = streams
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&peer.addr);
            let mut stored = stored.clone();
            async move {
                let peers = node.peers();
                let call = async {
                    if let Some(pieces) = stream {
                        let pieces = UnboundedReceiverStream::new(pieces);
                        return peers
                            .put_chunk_streamed(&peer.addr, &key, size, 1, Duration::ZERO, pieces)
                            .await;
                    }
                    // Further along, in place of a successor that failed.
                    let durable = stored
                        .wait_for(Option::is_some)
                        .await
                        .is_ok_and(|s| *s == Some(true));
                    if !durable {
                        return Err(Error::Unavailable(format!(
                            "chunk {}: not written here, so not copied on",
                            key.short()
                        )));
                    }
                    let chunk = node.disk(move |s| s.read_chunk(&key)).await?;
                    peers.put_chunk(&peer.addr, &chunk, 1).await
                };
                stages::time_async(Stage::PutChunkCall, call).await?;
                Counters::bump(&node.counters.bytes_out, size as u64);
                Ok(())
            }
        });
        // The first error ends both: a failed write here cancels the copies
        // under way, whose receivers then store nothing.
        let (_, made) =
            futures::future::try_join(writing, async { copying.await.map_err(error_to_status) })
                .await?;
        Ok(made)
    }

    /// How many entries a listing page may carry: what the caller asked
    /// for (0: no preference), at most `cap`, or the node's configured
    /// smaller cap (`--list-page-cap`, for tests).
    fn page_limit(&self, asked: u32, cap: usize) -> usize {
        let cap = self.node.config().list_page_cap.map_or(cap, |c| c.min(cap));
        match usize::try_from(asked) {
            Ok(0) | Err(_) => cap,
            Ok(asked) => asked.min(cap),
        }
    }

    /// The bytes of the chunk a `GetChunk` asks for, read from the
    /// request's one message, as they are on disk (or, not here yet, as
    /// read behind and checked): the receiver checks them (see
    /// `CheckChunk`).
    async fn send_chunk(
        &self,
        mut messages: MessageReader<tonic::body::Body>,
    ) -> Result<Bytes, Status> {
        self.count();
        let message = messages
            .next_message()
            .await?
            .ok_or_else(|| Status::internal("a GetChunk with no request"))?;
        let req: pb::GetChunkRequest = framing::decode(message)?;
        let key = wire::id_from_pb(&req.key, "key").map_err(error_to_status)?;
        let data = self
            .node
            .chunk_here(key, req.passed_back)
            .await
            .map_err(error_to_status)?;
        Counters::bump(&self.node.counters.bytes_out, data.len() as u64);
        Ok(data)
    }

    /// A leaving node takes no new data (it would only have to hand it on
    /// again) and confirms no keys: the repair loop drops a copy only once
    /// every holder confirms, and a confirmation from a node that is about
    /// to go would let several leaving nodes drop the same key at once.
    fn refuse_if_leaving(&self) -> Result<(), Status> {
        if self.node.is_leaving() {
            return Err(error_to_status(Error::Leaving {
                peer: self.node.me().addr.clone(),
            }));
        }
        Ok(())
    }
}

/// The keys of a `KeyList`, at most [`MAX_KEYS_PER_CALL`] of them.
fn key_list(list: pb::KeyList) -> Result<Vec<Id>, Status> {
    if list.keys.len() > MAX_KEYS_PER_CALL {
        return Err(invalid(format!(
            "at most {MAX_KEYS_PER_CALL} keys per call"
        )));
    }
    list.keys
        .iter()
        .map(|k| wire::id_from_pb(k, "key"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(error_to_status)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChunkPiece, Status>> + Send>>;

fn invalid(msg: impl Into<String>) -> Status {
    error_to_status(Error::invalid(msg))
}

fn key_mismatch(key: &Id) -> Status {
    invalid(format!("bytes do not match chunk key {key}"))
}

/// The messages of a `PutChunk`, read from the request's frames by
/// [`StoreRoutes`], which takes every `PutChunk` the node serves.
struct PutChunkMessages(MessageReader<tonic::body::Body>);

/// One message of a `PutChunk`.
enum PutChunkMessage {
    Header(pb::PutChunkHeader),
    Data(Piece),
    /// A message with neither, which no sender of ours writes.
    Empty,
}

impl PutChunkMessages {
    /// The next message, `None` at the end of the stream; a piece of data
    /// stays the slices it arrived in.
    async fn next(&mut self) -> Result<Option<PutChunkMessage>, Status> {
        let Some(message) = self.0.next_message().await? else {
            return Ok(None);
        };
        let message: pb::PutChunkRequest = match framing::put_chunk_data(message) {
            Ok(piece) => return Ok(Some(PutChunkMessage::Data(piece))),
            Err(other) => framing::decode(other)?,
        };
        Ok(Some(match message.body {
            Some(Body::Header(header)) => PutChunkMessage::Header(header),
            Some(Body::Data(data)) => PutChunkMessage::Data(data.into()),
            None => PutChunkMessage::Empty,
        }))
    }
}

/// The data of a `PutChunk` after its header, held to the size the header
/// gave: what both ways of storing a chunk read it through.
struct ChunkData {
    stream: PutChunkMessages,
    key: Id,
    size: usize,
    /// Bytes received so far.
    len: usize,
}

impl ChunkData {
    /// The next piece, `None` at the end of the stream; an error for a
    /// message that is not data or a piece past the announced size.
    async fn next(&mut self) -> Result<Option<Piece>, Status> {
        let Some(message) = self.stream.next().await? else {
            return Ok(None);
        };
        let PutChunkMessage::Data(piece) = message else {
            return Err(invalid("PutChunk carries one header, then data only"));
        };
        self.len += piece.len();
        if self.len > self.size {
            return Err(invalid(format!(
                "chunk {} is longer than its header said",
                self.key.short()
            )));
        }
        Ok(Some(piece))
    }

    /// An error unless every announced byte arrived.
    fn check_complete(&self) -> Result<(), Status> {
        if self.len != self.size {
            return Err(invalid(format!(
                "chunk {} ended after {} of {} bytes",
                self.key.short(),
                self.len,
                self.size
            )));
        }
        Ok(())
    }
}

impl StoreService {
    /// Stores the chunk a `PutChunk` carries, from its first message (the
    /// header) to its last.
    async fn receive_chunk(
        &self,
        mut stream: PutChunkMessages,
    ) -> Result<pb::PutChunkResponse, Status> {
        self.count();
        self.refuse_if_leaving()?;
        let header = match stream.next().await? {
            Some(PutChunkMessage::Header(h)) => h,
            _ => return Err(invalid("the first message of PutChunk must be its header")),
        };
        let key = wire::id_from_pb(&header.key, "key").map_err(error_to_status)?;
        crate::store::check_chunk_len(&key, header.size).map_err(error_to_status)?;
        let size = usize::try_from(header.size).unwrap_or(usize::MAX);
        // Hashed as the pieces arrive; memory grows with what actually
        // arrives, not with what the header claims, within the budget.
        let _room = self.reserve_buffer(size, header.copies > 1).await?;
        let age = Duration::from_millis(header.age_ms);
        let already = self
            .node
            .disk(move |s| Ok(s.has_chunk(&key)))
            .await
            .map_err(error_to_status)?;
        let mut data = ChunkData {
            stream,
            key,
            size,
            len: 0,
        };
        if !already {
            if header.copies <= 1 {
                let written = self.write_as_it_arrives(data, age, Vec::new()).await?;
                return Ok(pb::PutChunkResponse { copies: 1, written });
            }
            let copies = self.write_and_pass_on(data, header.copies, age).await?;
            return Ok(pb::PutChunkResponse {
                copies,
                written: true,
            });
        }
        let mut chunk = ChunkHasher::new(key, size);
        while let Some(piece) = data.next().await? {
            for part in piece.parts() {
                stages::time(Stage::ChunkCheck, || chunk.push(part)).map_err(error_to_status)?;
            }
        }
        data.check_complete()?;
        let chunk = chunk.finish().map_err(|_| key_mismatch(&key))?;
        let copies = self
            .node
            .put_chunk_replicated(chunk, header.copies, age)
            .await
            .map_err(error_to_status)?;
        Ok(pb::PutChunkResponse {
            copies,
            written: !already,
        })
    }
}

#[tonic::async_trait]
impl Store for StoreService {
    /// Not reached: [`StoreRoutes`], the only way the node mounts this
    /// service, takes every `PutChunk` before tonic's generated server
    /// does, to read it without tonic's copy of each frame.
    async fn put_chunk(
        &self,
        _: Request<Streaming<pb::PutChunkRequest>>,
    ) -> Result<Response<pb::PutChunkResponse>, Status> {
        Err(Status::unimplemented(
            "PutChunk is served by StoreRoutes, which reads it from its frames",
        ))
    }

    type GetChunkStream = ChunkStream;

    /// Not reached, as `put_chunk`: [`StoreRoutes`] answers every
    /// `GetChunk` with pieces framed by hand.
    async fn get_chunk(
        &self,
        _: Request<pb::GetChunkRequest>,
    ) -> Result<Response<Self::GetChunkStream>, Status> {
        Err(Status::unimplemented(
            "GetChunk is served by StoreRoutes, which frames its pieces itself",
        ))
    }

    async fn check_chunk(
        &self,
        req: Request<pb::GetChunkRequest>,
    ) -> Result<Response<pb::ChunkCheck>, Status> {
        self.count();
        let key = wire::id_from_pb(&req.into_inner().key, "key").map_err(error_to_status)?;
        let intact = self
            .node
            .disk(move |s| s.check_chunk(&key))
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::ChunkCheck { intact }))
    }

    async fn has_chunks(
        &self,
        req: Request<pb::KeyList>,
    ) -> Result<Response<pb::HasChunksResponse>, Status> {
        self.count();
        let keys = key_list(req.into_inner())?;
        let present = self.node.disk(move |s| Ok(s.touch_chunks(&keys))).await;
        Ok(Response::new(pb::HasChunksResponse {
            present: present.map_err(error_to_status)?,
        }))
    }

    async fn referenced(
        &self,
        req: Request<pb::KeyList>,
    ) -> Result<Response<pb::HasChunksResponse>, Status> {
        self.count();
        let keys = key_list(req.into_inner())?;
        if self.node.gc().is_syncing() {
            return Err(error_to_status(Error::Unavailable(
                "this node is settling its files with the ring after a long absence; no collection until it is done".into(),
            )));
        }
        let present = self.node.store().referenced(&keys);
        Ok(Response::new(pb::HasChunksResponse { present }))
    }

    async fn put_manifest(
        &self,
        req: Request<pb::PutManifestRequest>,
    ) -> Result<Response<pb::PutManifestResponse>, Status> {
        self.count();
        self.refuse_if_leaving()?;
        let req = req.into_inner();
        let manifest = req
            .manifest
            .ok_or_else(|| invalid("manifest is missing"))
            .and_then(|m| wire::manifest_from_pb(m).map_err(error_to_status))?;
        if req.replica {
            let version = manifest.version;
            self.node
                .put_manifest_replica(manifest)
                .await
                .map_err(error_to_status)?;
            return Ok(Response::new(pb::PutManifestResponse {
                copies: 1,
                version,
            }));
        }
        let (copies, version) = self
            .node
            .put_manifest_primary(manifest, req.copies)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::PutManifestResponse { copies, version }))
    }

    async fn get_manifest(
        &self,
        req: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::GetManifestResponse>, Status> {
        self.count();
        let req = req.into_inner();
        validate_name(&req.name).map_err(error_to_status)?;
        let manifest = if req.route {
            self.node.find_manifest(&req.name).await
        } else {
            let key = Id::hash(req.name.as_bytes());
            self.node
                .manifest_here(key, &req.name, req.passed_back)
                .await
        }
        .map_err(error_to_status)?;
        Ok(Response::new(pb::GetManifestResponse {
            manifest: manifest.as_ref().map(wire::manifest_to_pb),
            leaving: !req.route && self.node.is_leaving(),
        }))
    }

    async fn delete_file(
        &self,
        req: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::PutManifestResponse>, Status> {
        self.count();
        let name = req.into_inner().name;
        let version = self
            .node
            .delete_file(&name)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::PutManifestResponse {
            copies: self.node.replicas() as u32,
            version,
        }))
    }

    async fn list_files(
        &self,
        req: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        self.count();
        let req = req.into_inner();
        let after = if req.start_after.is_empty() {
            None
        } else {
            Some(wire::id_from_pb(&req.start_after, "start_after").map_err(error_to_status)?)
        };
        let limit = self.page_limit(req.limit, MAX_FILES_PER_PAGE);
        let page = if req.ring {
            self.node.ring_files_page(after, limit).await
        } else {
            self.node.local_files_page(after, limit).await
        }
        .map_err(error_to_status)?;
        Ok(Response::new(pb::ListFilesResponse {
            files: page.files,
            next: page.next.map(|k| k.as_bytes().to_vec()),
        }))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.count();
        self.refuse_if_leaving()?;
        let req = req.into_inner();
        let start = wire::id_from_pb(&req.start, "start").map_err(error_to_status)?;
        let end = wire::id_from_pb(&req.end, "end").map_err(error_to_status)?;
        let limit = self.page_limit(req.limit, MAX_KEYS_PER_PAGE);
        let page = self.node.store().keys_page(&start, &end, limit);
        Ok(Response::new(pb::ListKeysResponse {
            chunks: page.chunks.iter().map(|k| k.as_bytes().to_vec()).collect(),
            next: page.next.map(|k| k.as_bytes().to_vec()),
            manifests: page
                .manifests
                .iter()
                .map(|(k, stamp)| {
                    let [sha256, blake3, blake3_chunks] = wire::checksum_to_pb(&stamp.checksum);
                    pb::KeyVersion {
                        key: k.as_bytes().to_vec(),
                        version: stamp.version,
                        deleted: stamp.deleted,
                        sha256,
                        blake3,
                        blake3_chunks,
                    }
                })
                .collect(),
        }))
    }

    async fn get_stats(&self, _: Request<pb::Empty>) -> Result<Response<pb::StoreStats>, Status> {
        self.count();
        Ok(Response::new(store_stats(&self.node)))
    }
}

/// The `chord.v1.Store` service as the server mounts it: `PutChunk` is
/// read from the request's frames without tonic's copy of each
/// ([`MessageReader`]) and answered as tonic would, `GetChunk` is answered
/// with pieces framed by hand ([`framing::get_chunk_answer`]) without
/// tonic's encoder's copy of each; every other call goes to tonic's
/// generated server.
#[derive(Clone)]
pub struct StoreRoutes {
    tonic: StoreServer<StoreService>,
    store: StoreService,
}

impl StoreRoutes {
    pub fn new(store: StoreService) -> StoreRoutes {
        let tonic = StoreServer::new(store.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        StoreRoutes { tonic, store }
    }
}

impl tonic::server::NamedService for StoreRoutes {
    const NAME: &'static str = chord_proto::pb::store_server::SERVICE_NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for StoreRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's server is always ready; asked anyway, as tower's contract
        // wants before its `call`.
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.tonic, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        if path == PUT_CHUNK_PATH {
            let store = self.store.clone();
            return Box::pin(async move {
                let reader = MessageReader::new(req.into_body(), MAX_MESSAGE_BYTES);
                let answer = store.receive_chunk(PutChunkMessages(reader)).await;
                Ok(framing::unary_answer(answer))
            });
        }
        if path == GET_CHUNK_PATH {
            let store = self.store.clone();
            return Box::pin(async move {
                let reader = MessageReader::new(req.into_body(), MAX_MESSAGE_BYTES);
                Ok(framing::get_chunk_answer(store.send_chunk(reader).await))
            });
        }
        self.tonic.call(req)
    }
}

pub fn store_stats(node: &Node) -> pb::StoreStats {
    let s = node.store().stats();
    let c = &node.counters;
    pb::StoreStats {
        chunks: s.chunks,
        manifests: s.manifests,
        tombstones: s.tombstones,
        bytes: s.bytes,
        requests: c.requests.load(Ordering::Relaxed),
        bytes_in: c.bytes_in.load(Ordering::Relaxed),
        bytes_out: c.bytes_out.load(Ordering::Relaxed),
        repair_bytes: c.repair_bytes.load(Ordering::Relaxed),
        corrupt_chunks: s.corrupt_chunks,
        manifest_log_bytes: s.manifest_log_bytes,
        gc_collected_bytes: node.gc().collected_bytes.load(Ordering::Relaxed),
        gc_collectable_bytes: node.gc().collectable_bytes.load(Ordering::Relaxed),
        tombstones_expired: node.gc().tombstones_expired.load(Ordering::Relaxed),
        syncing: node.gc().is_syncing(),
        stages: crate::stages::totals()
            .into_iter()
            .map(|(stage, spent)| pb::StageTime {
                stage: stage.name().to_string(),
                nanos: u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
            })
            .collect(),
    }
}
