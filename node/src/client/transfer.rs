//! File transfer through the ring: chunked, parallel, resumable uploads and
//! verified downloads.
//!
//! An upload reads its source one chunk at a time, sends up to
//! [`TransferOptions::parallel`] chunks at once to their owners (which
//! replicate them), skips chunks the ring already holds (so re-running an
//! interrupted upload resumes it), and writes the manifest last, so the file
//! becomes visible whole or not at all. A download fetches chunks in order
//! with a bounded read-ahead (falling back to the next replica on a dead
//! holder) and checks the whole file's checksum before the file is renamed
//! into place; only if that fails is it fetched again with each chunk
//! checked against its key, which finds the bad copy and reads another (see
//! [`ReadCheck`]). Memory is bounded by `parallel × chunk_size` either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chord_proto::pb;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::Client;
use crate::chord::{nodes_past, replica_set, Id, NodeRef, SEARCH_PAST_HOLDERS};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::replication::newest_manifest;
use crate::stages::{self, Stage};
use crate::store::{
    check_manifest_fits, chunk_hash, key_of_hash, validate_name, Algorithm, AlignedBuf,
    CheckedChunk, Checksum, Hasher, Manifest, OutputFile, MAX_INLINE_BYTES, NEW_FILES,
};

use super::digest::{FileDigest, DIGEST_DEPTH};

#[derive(Clone, Debug)]
pub struct TransferOptions {
    /// Bytes per chunk of an upload.
    pub chunk_size: usize,
    /// Chunks in flight at once: enough to keep several owners busy, few
    /// enough that `parallel × chunk_size` stays small.
    pub parallel: usize,
    /// Tries per chunk (each with a fresh lookup) before the transfer fails.
    pub attempts: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            chunk_size: crate::DEFAULT_CHUNK_BYTES,
            parallel: 4,
            attempts: 5,
        }
    }
}

/// How a read checks the chunks it fetches. Either way every byte is
/// checked before anyone sees it; the question is only which hash does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadCheck {
    /// Each chunk against its key as it arrives, falling back to the
    /// next holder on bad bytes: for bytes handed on at once (a pipe,
    /// an HTTP answer), which cannot be taken back.
    EachChunk,
    /// None on arrival: the caller holds the file back until its checksum
    /// matches the manifest, and reads it again with `EachChunk` if it does
    /// not. Each byte is hashed once instead of twice.
    WholeFile,
}

/// What a transfer tells its caller as it goes: a progress bar, a counter.
/// Any `Fn(u64)` is one, counting bytes and ignoring a restart.
pub trait ProgressSink: Sync {
    /// `bytes` more have landed.
    fn advance(&self, bytes: u64);
    /// What was counted so far no longer counts: a download whose whole
    /// file did not match its checksum starts over, every chunk checked
    /// (see [`ReadCheck`]), and counts its bytes again from zero.
    fn restart(&self) {}
}

impl<F: Fn(u64) + Sync> ProgressSink for F {
    fn advance(&self, bytes: u64) {
        self(bytes);
    }
}

#[derive(Clone, Debug)]
pub struct UploadReport {
    pub name: String,
    pub size: u64,
    pub chunks: usize,
    /// Chunks the ring already held (earlier upload, or the same bytes in another file).
    pub chunks_skipped: usize,
    pub version: u64,
    /// The whole file's checksum, as its manifest holds it.
    pub checksum: Checksum,
}

#[derive(Clone, Debug)]
pub struct DownloadReport {
    pub name: String,
    pub size: u64,
    pub chunks: usize,
    pub version: u64,
    /// What the file was checked against.
    pub checksum: Checksum,
    /// Where the bytes went: the path asked for, or the file's name inside
    /// it when that was a directory.
    pub path: PathBuf,
}

/// A listed file.
pub type FileEntry = pb::FileEntry;

/// One node's store counters, as `status` shows them.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub node: NodeRef,
    pub stats: pb::StoreStats,
}

/// What `status` found: the nodes that answered, and those the ring names
/// that did not.
#[derive(Clone, Debug, Default)]
pub struct RingStatus {
    pub nodes: Vec<NodeStatus>,
    pub silent: Vec<NodeRef>,
}

/// Pause before retrying a chunk, multiplied by the attempt number: long
/// enough for stabilize to route around a node that just died.
const RETRY_BACKOFF: Duration = Duration::from_millis(300);

/// Runs `op` until it succeeds, fails for good, or `attempts` tries have
/// failed retryably (the ring may be repairing itself); each retry waits a
/// little longer. A node that said it is leaving is the exception: there
/// is nothing to wait out, as `op` has marked it silent and tries the
/// holder after it (which takes its keys) at once. After a second leaving
/// node in a row (several going at once) the retry waits as any other.
async fn retrying<T, F, Fut>(attempts: usize, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    let mut after_leaving = false;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && attempt + 1 < attempts.max(1) => {
                attempt += 1;
                debug!(error = %e, attempt, "retrying");
                let leaving = matches!(e, Error::Leaving { .. });
                if !leaving || after_leaving {
                    tokio::time::sleep(RETRY_BACKOFF * attempt as u32).await;
                }
                after_leaving = leaving;
            }
            other => return other,
        }
    }
}

/// Tries of a single metadata call (manifest read, listing) before giving up.
const CALL_ATTEMPTS: usize = 4;

impl Client {
    /// How many copies the ring keeps: as a node said within the time its
    /// successor list is taken as current (see `memory.rs`), else as the
    /// entry node says now.
    pub async fn replicas(&self) -> Result<u32> {
        match self.memory.fresh_replicas() {
            Some(replicas) => Ok(replicas),
            None => Ok(self.info(self.entry()).await?.replicas.max(1)),
        }
    }

    /// Uploads everything `reader` yields as file `name`.
    /// `progress` is told the byte count of each chunk as it lands.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        name: &str,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<UploadReport> {
        let source = futures::stream::try_unfold(reader, |mut reader| async move {
            let chunk = read_chunk(&mut reader, opts.chunk_size).await?;
            Ok((!chunk.is_empty()).then_some((chunk, reader)))
        });
        self.upload_chunks(source, name, opts, progress).await
    }

    /// Uploads the file at `path`, read on a blocking thread one chunk
    /// ahead of the network.
    pub async fn upload_file(
        &self,
        path: &Path,
        name: &str,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<UploadReport> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let opened = upload_source(path, file.metadata())?;
        let len = opened.len();
        // A regular file is checked at its end against how it was opened;
        // a pipe or a device has no length to hold it to.
        let opened = Some(opened).filter(std::fs::Metadata::is_file);
        // The chunk size's own range first: the manifest's limit below
        // would otherwise speak of chunks of sizes never allowed.
        crate::check_chunk_size(opts.chunk_size)?;
        check_manifest_fits(name, len, opts.chunk_size as u64)?;
        let size = opts.chunk_size;
        let path: Arc<Path> = Arc::from(path);
        let source = futures::stream::try_unfold(Some((file, 0u64)), move |state| {
            let path = Arc::clone(&path);
            let opened = opened.clone();
            async move {
                let Some((file, read)) = state else {
                    return Ok(None);
                };
                let (file, chunk) = blocking("the file reader", move || {
                    let (file, chunk) = read_file_chunk(file, size, &path)?;
                    if let (true, Some(opened)) = (chunk.is_empty(), &opened) {
                        unchanged_since_open(&file, opened, read, &path)?;
                    }
                    Ok((file, chunk))
                })
                .await?;
                let read = read + chunk.len() as u64;
                Ok((!chunk.is_empty()).then_some((chunk, Some((file, read)))))
            }
        });
        self.upload_chunks(source, name, opts, progress).await
    }

    /// The upload pipeline: chunks come from `source` in file order, and
    /// `parallel` at once are hashed (off the async workers) and sent to
    /// their owners, while the source reads ahead. The manifest goes last,
    /// its checksum made from the chunks' hashes. Memory holds at most
    /// about `parallel + 1` chunks.
    async fn upload_chunks(
        &self,
        source: impl futures::Stream<Item = Result<Bytes>>,
        name: &str,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<UploadReport> {
        validate_name(name)?;
        crate::check_chunk_size(opts.chunk_size)?;
        let replicas = self.replicas().await?;
        // A file that ends within its first chunk, if that is at most
        // MAX_INLINE_BYTES, goes inside its manifest; anything read to find
        // out goes back in front otherwise.
        let mut source = Box::pin(source);
        let mut read_ahead = Vec::new();
        if let Some(first) = source.next().await.transpose()? {
            let small = first.len() <= MAX_INLINE_BYTES;
            read_ahead.push(first);
            if small {
                match source.next().await.transpose()? {
                    None => {
                        let data = read_ahead.remove(0);
                        return self
                            .upload_inline(data, name, replicas, opts, progress)
                            .await;
                    }
                    Some(next) => read_ahead.push(next),
                }
            }
        }
        let source = futures::stream::iter(read_ahead.into_iter().map(Ok)).chain(source);
        // Each chunk's key and the BLAKE3 hash it is made from, by index:
        // the file's checksum is made from the hashes, so its bytes are
        // hashed once (see `store::checksum`).
        let mut keys: Vec<Option<(Id, [u8; 32])>> = Vec::new();
        let mut skipped = 0usize;
        let mut read = 0u64;
        let sent: Result<()> = async {
            let parallel = opts.parallel.max(1);
            let mut source = std::pin::pin!(source);
            let mut in_flight = FuturesUnordered::new();
            let mut read_all = false;
            loop {
                let sent = if read_all || in_flight.len() >= parallel {
                    match in_flight.next().await {
                        Some(sent) => sent,
                        None => return Ok(()),
                    }
                } else {
                    // Read ahead while the chunks in flight move on.
                    tokio::select! {
                        biased;
                        Some(sent) = in_flight.next(), if !in_flight.is_empty() => sent,
                        next = source.next() => {
                            match next {
                                Some(chunk) => {
                                    let chunk = chunk?;
                                    read += chunk.len() as u64;
                                    check_manifest_fits(name, read, opts.chunk_size as u64)?;
                                    in_flight.push(self.send_chunk(keys.len(), chunk, replicas, opts, progress));
                                    keys.push(None);
                                }
                                None => read_all = true,
                            }
                            continue;
                        }
                    }
                };
                let (index, key, hash, already) = sent?;
                keys[index] = Some((key, hash));
                skipped += usize::from(already);
            }
        }
        .await;
        sent?;
        let (chunks, hashes): (Vec<Id>, Vec<[u8; 32]>) = keys
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Unavailable("a chunk of the upload went missing".into()))?
            .into_iter()
            .unzip();
        let checksum = Checksum::of_chunk_hashes(&hashes);
        let size = read;
        let manifest = Manifest {
            name: name.to_string(),
            size,
            chunk_size: if size == 0 { 0 } else { opts.chunk_size as u32 },
            chunks,
            checksum,
            version: 0,
            deleted: false,
            modified_ms: now_ms(),
            inline: Vec::new(),
        };
        self.commit_upload(manifest, skipped, replicas, opts).await
    }

    /// Writes `manifest`, the last step of an upload that skipped `skipped`
    /// chunks the ring had, and reports it.
    async fn commit_upload(
        &self,
        manifest: Manifest,
        skipped: usize,
        replicas: u32,
        opts: &TransferOptions,
    ) -> Result<UploadReport> {
        let version = self.put_manifest(&manifest, replicas, opts).await?;
        Ok(UploadReport {
            name: manifest.name,
            size: manifest.size,
            chunks: manifest.chunks.len(),
            chunks_skipped: skipped,
            version,
            checksum: manifest.checksum,
        })
    }

    /// Uploads `data`, a whole file of at most [`MAX_INLINE_BYTES`], inside
    /// its manifest: no chunk, one call.
    async fn upload_inline(
        &self,
        data: Bytes,
        name: &str,
        replicas: u32,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<UploadReport> {
        let checksum = stages::time(Stage::FileDigest, || Checksum::of(NEW_FILES, &data));
        let manifest = Manifest {
            name: name.to_string(),
            size: data.len() as u64,
            chunk_size: 0,
            chunks: Vec::new(),
            checksum,
            version: 0,
            deleted: false,
            modified_ms: now_ms(),
            inline: data.to_vec(),
        };
        let report = self.commit_upload(manifest, 0, replicas, opts).await?;
        progress.advance(report.size);
        Ok(report)
    }

    /// Hashes chunk number `index` of an upload (off the async workers) and
    /// sends it; returns its index, key, BLAKE3 hash and whether the ring
    /// had it.
    async fn send_chunk(
        &self,
        index: usize,
        data: Bytes,
        replicas: u32,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<(usize, Id, [u8; 32], bool)> {
        let (chunk, hash) = chunk_of(data).await?;
        let key = *chunk.key();
        let already = self.upload_chunk(chunk, replicas, opts, progress).await?;
        Ok((index, key, hash, already))
    }

    /// Sends one chunk to its owner; returns true when the ring already had it.
    async fn upload_chunk(
        &self,
        chunk: CheckedChunk,
        replicas: u32,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<bool> {
        let key = *chunk.key();
        let len = chunk.data().len() as u64;
        let already = retrying(opts.attempts, || async {
            // Skip only what every holder already has: a chunk an earlier,
            // failed attempt left on the owner alone is sent again, so the
            // owner replicates it before this upload counts it as stored.
            let (holders, held) = stages::time_async(Stage::Locate, async {
                let holders = self.holders(key, replicas as usize).await?;
                let replica_set = &holders[..holders.len().min(replicas as usize)];
                let held = self.held_by_all(key, replica_set).await;
                Ok::<_, Error>((holders, held))
            })
            .await?;
            if held {
                return Ok(true);
            }
            // The owner, unless it just failed to answer: then the next
            // holder, which keeps the copies on the holders after it.
            let target = self.first_answering(&holders);
            let put = stages::time_async(
                Stage::PutChunkCall,
                self.put_chunk_to(target, &chunk, replicas),
            )
            .await;
            self.heard(&target.addr, put)?;
            Ok(false)
        })
        .await?;
        progress.advance(len);
        Ok(already)
    }

    /// PutChunk of `chunk` to `target`, or the same write in place when
    /// `target` is the node this client runs inside.
    async fn put_chunk_to(
        &self,
        target: &NodeRef,
        chunk: &CheckedChunk,
        copies: u32,
    ) -> Result<u32> {
        match self.local_node(target) {
            Some(node) => {
                node.put_chunk_replicated(chunk.clone(), copies, Duration::ZERO)
                    .await
            }
            None => self.peers().put_chunk(&target.addr, chunk, copies).await,
        }
    }

    /// GetChunk of `key` from `holder`, checked as `check` says, or the
    /// same read in place when `holder` is the node this client runs
    /// inside.
    async fn get_chunk_at(&self, holder: &NodeRef, key: Id, check: ReadCheck) -> Result<Bytes> {
        match (self.local_node(holder), check) {
            (Some(node), ReadCheck::EachChunk) => node.checked_chunk_here(key).await,
            (Some(node), ReadCheck::WholeFile) => node.chunk_here(key, 0).await,
            (None, ReadCheck::EachChunk) => Ok(self
                .peers()
                .get_chunk(&holder.addr, &key)
                .await?
                .into_data()),
            (None, ReadCheck::WholeFile) => {
                self.peers().get_chunk_unchecked(&holder.addr, &key).await
            }
        }
    }

    /// Whether every one of `holders` says it has chunk `key` (asked all at
    /// once).
    async fn held_by_all(&self, key: Id, holders: &[NodeRef]) -> bool {
        if holders.iter().any(|h| self.memory.is_silent(&h.addr)) {
            // Not a copy that can be counted on; no need to wait to hear it.
            return false;
        }
        let keys = [key];
        let answers = futures::future::join_all(
            holders
                .iter()
                .map(|holder| self.peers().has_chunks(&holder.addr, &keys)),
        )
        .await;
        !holders.is_empty()
            && answers
                .iter()
                .all(|a| matches!(a, Ok(present) if present.first() == Some(&true)))
    }

    async fn put_manifest(
        &self,
        manifest: &Manifest,
        replicas: u32,
        opts: &TransferOptions,
    ) -> Result<u64> {
        retrying(opts.attempts, || async {
            // The next holder has the file's last version too, so it can
            // stand in for an owner that just failed to answer.
            let holders = stages::time_async(
                Stage::Locate,
                self.holders(manifest.key(), replicas as usize),
            )
            .await?;
            let target = self.first_answering(&holders);
            let put = stages::time_async(
                Stage::ManifestCall,
                self.peers()
                    .put_manifest(&target.addr, manifest, replicas, false),
            )
            .await;
            Ok(self.heard(&target.addr, put)?.1)
        })
        .await
    }

    /// The live manifest of `name`; [`Error::NotFound`] if there is none.
    pub async fn manifest(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        let found = retrying(CALL_ATTEMPTS, || self.find_manifest(name)).await?;
        match found {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(Error::NotFound(format!("no file named {name:?}"))),
        }
    }

    /// The newest manifest of `name` among its holders (tombstones
    /// included), as a node's `find_manifest` finds it, but asked of the
    /// holders directly and all at once: no hop through the entry node.
    /// Holders known to be silent are left out unless all of them are.
    /// Where none has the file, or one did not answer, the entry node looks
    /// again (`route`), so a holder this client still takes for one but
    /// that has handed its keys on (a leaving node, within its last report)
    /// cannot make a file that exists look missing. A leaving node's answer
    /// does not count either: its successor owns the key now and takes its
    /// writes, so the leaving node's copy may be an older version.
    async fn find_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        match self.ask_holders_for_manifest(name).await {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) | Err(_) => {
                stages::time_async(
                    Stage::ManifestCall,
                    self.peers().find_manifest_through(self.entry(), name),
                )
                .await
            }
        }
    }

    /// The newest manifest of `name` that its holders, as this client
    /// knows them, answer with.
    async fn ask_holders_for_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        let key = Id::hash(name.as_bytes());
        let replicas = self.replicas().await? as usize;
        let holders = stages::time_async(Stage::Locate, self.holders(key, replicas)).await?;
        let holders = &holders[..holders.len().min(replicas)];
        let answering: Vec<&NodeRef> = holders
            .iter()
            .filter(|h| !self.memory.is_silent(&h.addr))
            .collect();
        let asked = if answering.is_empty() {
            holders.iter().collect()
        } else {
            answering
        };
        let answers = stages::time_async(
            Stage::ManifestCall,
            futures::future::join_all(asked.into_iter().map(|holder| async move {
                match self.local_node(holder) {
                    Some(node) if node.is_leaving() => Err(Error::Leaving {
                        peer: holder.addr.clone(),
                    }),
                    Some(node) => node.manifest_here(key, name, 0).await,
                    None => {
                        let found = self.peers().get_holder_manifest(&holder.addr, name).await;
                        self.heard(&holder.addr, found)
                    }
                }
            })),
        )
        .await;
        newest_manifest(name, answers)
    }

    /// One chunk, from whichever of its holders answers (with intact bytes,
    /// if `check` is [`ReadCheck::EachChunk`]).
    pub async fn fetch_chunk(
        &self,
        key: Id,
        replicas: usize,
        attempts: usize,
        check: ReadCheck,
    ) -> Result<Bytes> {
        let mut last = None;
        // Holders whose copy did not match the key: each set it aside, so
        // the next round hears "not found" from them.
        let mut corrupt_at: Vec<String> = Vec::new();
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(RETRY_BACKOFF * attempt as u32).await;
            }
            let holders = match stages::time_async(Stage::Locate, self.holders(key, replicas)).await
            {
                Ok(h) => h,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut none_has_it = true;
            for holder in self.memory.answering_first(holders.clone()) {
                match self.get_chunk_from(&holder, key, check).await {
                    Ok(chunk) => return Ok(chunk),
                    Err(e) => {
                        none_has_it &= matches!(e, Error::NotFound(_));
                        if matches!(e, Error::Corrupt(_)) && !corrupt_at.contains(&holder.addr) {
                            corrupt_at.push(holder.addr.clone());
                        }
                        last = Some(e);
                    }
                }
            }
            if !none_has_it {
                continue;
            }
            // Every holder answered that it has no copy: after joins the
            // copies may all be past them, with the old holders.
            for node in self.nodes_past(&holders).await {
                if let Ok(chunk) = self.get_chunk_from(&node, key, check).await {
                    return Ok(chunk);
                }
            }
        }
        match last {
            // Missing now because its copies were bad: say so, rather than
            // that the chunk was never there.
            Some(Error::NotFound(_)) if !corrupt_at.is_empty() => Err(Error::Corrupt(format!(
                "chunk {key}: no intact copy left; the copies on {} did not match the key \
                 and were set aside",
                corrupt_at.join(", ")
            ))),
            Some(e) => Err(e),
            None => Err(Error::Unavailable(format!(
                "no holder of chunk {}",
                key.short()
            ))),
        }
    }

    /// One chunk for a reader that hands each chunk on as it comes (the
    /// gateway, `download -o -`) or writes a chunk-tree file's download,
    /// checked against its key before it is returned, with its BLAKE3
    /// hash when the file's checksum (by `algorithm`) is made of those.
    /// Then the chunk is fetched unchecked and hashed once here, for its
    /// key and the file's checksum alike; a copy that does not match is
    /// fetched again the checked way ([`ReadCheck::EachChunk`]), which
    /// tells its holder and reads another copy. Otherwise it is fetched
    /// the checked way to begin with.
    pub async fn fetch_verified(
        &self,
        key: Id,
        replicas: usize,
        attempts: usize,
        algorithm: Algorithm,
    ) -> Result<(Bytes, Option<[u8; 32]>)> {
        let checked = || self.fetch_chunk(key, replicas, attempts, ReadCheck::EachChunk);
        if !algorithm.is_chunk_tree() {
            return Ok((checked().await?, None));
        }
        let data = self
            .fetch_chunk(key, replicas, attempts, ReadCheck::WholeFile)
            .await?;
        let (data, hash) = hash_chunk(data).await?;
        if key_of_hash(&hash) == key {
            return Ok((data, Some(hash)));
        }
        warn!(key = %key.short(), "a chunk read does not match its key; reading it again checked");
        let (data, hash) = hash_chunk(checked().await?).await?;
        Ok((data, Some(hash)))
    }

    /// Chunk `key` from `node`, timed and heard.
    async fn get_chunk_from(&self, node: &NodeRef, key: Id, check: ReadCheck) -> Result<Bytes> {
        let got =
            stages::time_async(Stage::GetChunkCall, self.get_chunk_at(node, key, check)).await;
        self.heard(&node.addr, got).inspect_err(|e| {
            debug!(peer = %node.addr, key = %key.short(), error = %e, "chunk read failed");
        })
    }

    /// The nodes past `holders` where a read looks before calling a key
    /// missing ([`SEARCH_PAST_HOLDERS`]).
    async fn nodes_past(&self, holders: &[NodeRef]) -> Vec<NodeRef> {
        nodes_past(holders, SEARCH_PAST_HOLDERS, |n| async move {
            Ok(self.info(&n.addr).await?.successors)
        })
        .await
    }

    /// The owner of `key` and its next successors: where copies should be.
    /// The owner is looked up unless a node that answers reported owning
    /// `key` within a stabilize period (`memory::SUCCESSORS_FRESH_FOR`).
    /// An owner that just failed to answer is not asked for its successors:
    /// the last list that named it gives them; nor is one that reported
    /// them within a stabilize period.
    pub async fn holders(&self, key: Id, replicas: usize) -> Result<Vec<NodeRef>> {
        let owner = match self.memory.fresh_owner_of(&key) {
            Some(owner) if !self.memory.is_silent(&owner.addr) => owner,
            _ => self.lookup(&key).await?.0,
        };
        let successors = if self.memory.is_silent(&owner.addr) {
            self.memory.successors_of(&owner)
        } else if let Some(fresh) = self.memory.fresh_successors_of(&owner) {
            fresh
        } else {
            match self.info(&owner.addr).await {
                Ok(info) => info.successors,
                Err(_) => self.memory.successors_of(&owner),
            }
        };
        // One node past the replica set, as a last resort for reads.
        Ok(replica_set(owner, successors, replicas.max(1) + 1))
    }

    /// The first of `holders` (never empty) not known to be silent, else the
    /// first.
    fn first_answering<'h>(&self, holders: &'h [NodeRef]) -> &'h NodeRef {
        holders
            .iter()
            .find(|h| !self.memory.is_silent(&h.addr))
            .unwrap_or(&holders[0])
    }

    /// Downloads `name` to `out`, through a temporary file in the same
    /// directory that is renamed into place only after the checksum matches.
    /// A file whose checksum is made of its chunk hashes has each chunk
    /// checked against its key as it arrives, by the one hash that also
    /// feeds the checksum ([`Client::fetch_verified`]): a bad copy is read
    /// again from another holder, and the download goes on. An older
    /// file's chunks are not checked one by one ([`ReadCheck::WholeFile`]);
    /// if the whole does not match, the file is fetched again with every
    /// chunk checked, which reports the bad copy to its holder and reads that
    /// chunk from another; `progress` is told to restart, and counts that pass
    /// from zero.
    pub async fn download(
        &self,
        name: &str,
        out: &Path,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<DownloadReport> {
        let manifest = self.manifest(name).await?;
        self.download_to(&manifest, out, opts, progress).await
    }

    /// [`Client::download`] of the file version `manifest` names, for a
    /// caller that has read it already (to size a progress bar, say): the
    /// bytes written are that version's, whatever was written since.
    ///
    /// An `out` that is a directory gets the file under its name, as `cp`
    /// does. One that is neither a directory nor a regular file (a device
    /// such as `/dev/null`, a pipe) is written to in place, every chunk
    /// checked as it arrives, since renaming a finished file onto it would
    /// replace it.
    pub async fn download_to(
        &self,
        manifest: &Manifest,
        out: &Path,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<DownloadReport> {
        let report = |path| DownloadReport {
            name: manifest.name.clone(),
            size: manifest.size,
            chunks: manifest.chunks.len(),
            version: manifest.version,
            checksum: manifest.checksum,
            path,
        };
        if manifest.chunks.is_empty() {
            let (held, out) = (manifest.clone(), out.to_path_buf());
            let path = blocking("the file writer", move || write_held(&held, &out)).await?;
            progress.advance(manifest.size);
            return Ok(report(path));
        }
        let replicas = self.replicas().await? as usize;
        let name = manifest.name.clone();
        let to = out.to_path_buf();
        let (out, found) =
            blocking("the destination's lookup", move || destination(&to, &name)).await?;
        if found.is_some_and(|meta| is_special(&meta)) {
            let mut sink = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&out)
                .await
                .map_err(|e| Error::io(format!("cannot open {}", out.display()), e))?;
            self.write_to(manifest, &mut sink, replicas, opts, progress)
                .await?;
            return Ok(report(out));
        }
        let part = part_path(&out);
        let (into, named) = (&part, &out);
        let attempt = |check| async move {
            let target = create_part(into, named, manifest.size)?;
            self.download_into(manifest, target, replicas, opts, progress, check)
                .await
        };
        let mut result = attempt(ReadCheck::WholeFile).await;
        // A chunk-tree file's chunks were each checked as they came, so a
        // second pass would read the same bytes to the same end.
        let checked_whole = !manifest.checksum.algorithm().is_chunk_tree();
        if let (Err(Error::Corrupt(reason)), true) = (&result, checked_whole) {
            warn!(name = %manifest.name, %reason, "the download does not match its manifest; fetching it again with every chunk checked");
            progress.restart();
            result = attempt(ReadCheck::EachChunk).await;
        }
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        let to = out.clone();
        blocking("the rename", move || move_into_place(&part, &to)).await?;
        Ok(report(out))
    }

    /// Writes the file of `manifest` to `target`, a new file, and syncs it:
    /// chunks arrive `parallel` ahead, and one blocking thread writes each
    /// in order. A chunk-tree file's chunks come checked against their
    /// keys and hashed ([`Client::pieces`]); an older file's are checked
    /// as `check` says, and the thread hashes each while it is written.
    /// The size and checksum are checked before the caller renames the
    /// file into place.
    async fn download_into(
        &self,
        manifest: &Manifest,
        target: OutputFile,
        replicas: usize,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
        check: ReadCheck,
    ) -> Result<()> {
        let digest = FileDigest::start(manifest.checksum.algorithm(), DIGEST_DEPTH, Some(target));
        let fed = async {
            let mut pieces = std::pin::pin!(pieces(self, manifest, replicas, opts, check));
            while let Some(piece) = pieces.next().await {
                let (chunk, hash) = piece?;
                let len = chunk.len() as u64;
                digest.push(chunk, hash).await?;
                progress.advance(len);
            }
            Ok(())
        }
        .await;
        let (checksum, size) = digest.finish_after(fed).await?;
        verify_whole(manifest, size, checksum)
    }

    /// Writes the file of `manifest` to `out` chunk by chunk, in order, then
    /// checks its size and checksum. Bytes reach `out` before the whole-file
    /// check, so a caller that cannot take them back (a pipe) must treat an
    /// error as "discard what you got".
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &self,
        manifest: &Manifest,
        out: &mut W,
        replicas: usize,
        opts: &TransferOptions,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let digest = FileDigest::start(manifest.checksum.algorithm(), DIGEST_DEPTH, None);
        let fed = async {
            let mut chunks =
                std::pin::pin!(pieces(self, manifest, replicas, opts, ReadCheck::EachChunk));
            while let Some(chunk) = chunks.next().await {
                let (chunk, hash) = chunk?;
                digest.push(chunk.clone(), hash).await?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(format!("writing {:?}", manifest.name), e))?;
                progress.advance(chunk.len() as u64);
            }
            out.flush()
                .await
                .map_err(|e| Error::io(format!("writing {:?}", manifest.name), e))
        }
        .await;
        let (checksum, size) = digest.finish_after(fed).await?;
        verify_whole(manifest, size, checksum)
    }

    /// Every live file on the ring.
    pub async fn list(&self) -> Result<Vec<FileEntry>> {
        retrying(CALL_ATTEMPTS, || {
            self.peers().list_files(self.entry(), true)
        })
        .await
    }

    /// Deletes `name` (a tombstone every holder learns). Returns its version.
    pub async fn remove(&self, name: &str) -> Result<u64> {
        validate_name(name)?;
        self.peers().delete_file(self.entry(), name).await
    }

    /// Store counters of every node that answers, in ring order, asked all
    /// at once; and the nodes that did not answer though the ring still
    /// names them (in another node's successor list, or walked but then
    /// silent), so a frozen or dead node shows instead of vanishing.
    pub async fn status(&self) -> Result<RingStatus> {
        let first = self.peers().get_info(self.entry()).await?;
        let infos = self.peers().walk_ring(first).await;
        let stats = futures::future::join_all(
            infos
                .iter()
                .map(|info| self.peers().get_stats(&info.node.addr)),
        )
        .await;
        let mut status = RingStatus::default();
        for (info, stats) in infos.iter().zip(stats) {
            match stats {
                Ok(stats) => status.nodes.push(NodeStatus {
                    node: info.node.clone(),
                    stats,
                }),
                Err(e) => {
                    debug!(peer = %info.node.addr, error = %e, "no stats");
                    status.silent.push(info.node.clone());
                }
            }
        }
        let walked: std::collections::HashSet<&str> =
            infos.iter().map(|i| i.node.addr.as_str()).collect();
        for named in infos.iter().flat_map(|i| &i.successors) {
            if !walked.contains(named.addr.as_str())
                && !status.silent.iter().any(|s| s.addr == named.addr)
            {
                status.silent.push(named.clone());
            }
        }
        Ok(status)
    }
}

/// The pieces of `manifest` in order, fetched `opts.parallel` ahead, each
/// with its BLAKE3 hash when the file's checksum is made of those. A
/// chunk-tree file's chunks, and any file's under [`ReadCheck::EachChunk`],
/// are checked against their keys before they are handed on
/// ([`Client::fetch_verified`]); an older file's under
/// [`ReadCheck::WholeFile`] come unchecked, for the whole file's checksum
/// to check.
///
/// The stream holds `client` and a copy of the chunk list, not `manifest`:
/// a `&Client` serves a download that ends within its caller, an
/// `Arc<Client>` a response body that outlives its handler (the gateway's).
pub(crate) fn pieces<C>(
    client: C,
    manifest: &Manifest,
    replicas: usize,
    opts: &TransferOptions,
    check: ReadCheck,
) -> impl Stream<Item = Result<(Bytes, Option<[u8; 32]>)>>
where
    C: std::ops::Deref<Target = Client> + Clone,
{
    let algorithm = manifest.checksum.algorithm();
    let unchecked = check == ReadCheck::WholeFile && !algorithm.is_chunk_tree();
    let attempts = opts.attempts;
    futures::stream::iter(manifest.inline_piece().map(|piece| Ok((piece, None)))).chain(
        futures::stream::iter(manifest.chunks.clone())
            .map(move |key| {
                let client = client.clone();
                async move {
                    if unchecked {
                        let data = client
                            .fetch_chunk(key, replicas, attempts, ReadCheck::WholeFile)
                            .await?;
                        return Ok((data, None));
                    }
                    client
                        .fetch_verified(key, replicas, attempts, algorithm)
                        .await
                }
            })
            .buffered(opts.parallel.max(1)),
    )
}

/// A listed file as JSON, the same for `chord-console ls --json` and the
/// gateway's `GET /?json`, so scripts see one shape.
pub fn file_json(f: &FileEntry) -> serde_json::Value {
    serde_json::json!({
        "name": f.name,
        "size": f.size,
        "version": f.version,
        "chunks": f.chunks,
        "modified_ms": f.modified_ms,
    })
}

/// Checks a whole downloaded file against its manifest.
pub fn verify_whole(manifest: &Manifest, size: u64, checksum: Checksum) -> Result<()> {
    if size != manifest.size {
        return Err(Error::Corrupt(format!(
            "{:?}: got {size} bytes, the manifest says {}",
            manifest.name, manifest.size
        )));
    }
    if checksum != manifest.checksum {
        return Err(Error::Corrupt(format!(
            "{:?}: {} does not match",
            manifest.name,
            manifest.checksum.label()
        )));
    }
    Ok(())
}

/// `data` and its BLAKE3 hash, computed on a blocking thread. Timed as the
/// file's digest, which it is most of: the key's check costs a SHA-1 of 32
/// bytes more (`chunk_check` is the nodes' check of chunks they receive).
async fn hash_chunk(data: Bytes) -> Result<(Bytes, [u8; 32])> {
    blocking("the chunk hasher", move || {
        let hash = stages::time(Stage::FileDigest, || chunk_hash(&data));
        Ok((data, hash))
    })
    .await
}

/// The chunk of `data` and its BLAKE3 hash, computed on a blocking thread.
async fn chunk_of(data: Bytes) -> Result<(CheckedChunk, [u8; 32])> {
    blocking("the chunk hasher", move || {
        stages::time(Stage::ChunkKey, || CheckedChunk::hashed(data))
    })
    .await
}

/// Runs `op` on a blocking thread; `what` names it should the thread fail.
async fn blocking<T, F>(what: &str, op: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| Error::Unavailable(format!("{what} failed: {e}")))?
}

/// The size of the file at `path`, for an upload of it to announce before
/// it starts (a progress bar's total); a directory is refused by name, as
/// [`Client::upload_file`] refuses it, rather than at its first read.
pub fn upload_size(path: &Path) -> Result<u64> {
    upload_source(path, std::fs::metadata(path)).map(|meta| meta.len())
}

/// `path`'s metadata, however it was read, if it can be uploaded: the
/// checks of [`upload_size`].
fn upload_source(
    path: &Path,
    meta: std::io::Result<std::fs::Metadata>,
) -> Result<std::fs::Metadata> {
    let meta = meta.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    if meta.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a directory; an upload takes one file",
            path.display()
        )));
    }
    Ok(meta)
}

/// Refuses a regular file that changed while its upload read it: one
/// whose length now differs from its length when opened, or that was
/// written since. Stored, it would hold bytes the file never held all at
/// once. Checked at the end of the file, before the manifest makes
/// anything visible. The bytes read are only named: a file of `/proc` or
/// `/sys` gives more or fewer than the length it states, unchanged.
fn unchanged_since_open(
    file: &std::fs::File,
    opened: &std::fs::Metadata,
    read: u64,
    path: &Path,
) -> Result<()> {
    let now = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let written = now.modified().ok() != opened.modified().ok();
    if now.len() == opened.len() && !written {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{} changed while it was uploaded ({} bytes when opened, {read} read, {} now{}); \
         nothing was stored: upload it again once it is no longer being written",
        path.display(),
        opened.len(),
        now.len(),
        if written { ", written since" } else { "" }
    )))
}

/// Reads the next chunk of up to `size` bytes of `file`, opened from
/// `path` (fewer only at its end), handing the file back for the next read.
/// Its first [`FIRST_READ_BYTES`] go in fresh memory, which a small file
/// needs no more than, and a larger chunk is gathered in a pooled buffer,
/// whose reused memory takes no page faults (change 84).
fn read_file_chunk(
    mut file: std::fs::File,
    size: usize,
    path: &Path,
) -> Result<(std::fs::File, Bytes)> {
    let cannot_read = |e| Error::io(format!("cannot read {}", path.display()), e);
    let chunk = stages::time(Stage::FileRead, || {
        let first = size.min(FIRST_READ_BYTES);
        let mut head = Vec::with_capacity(first);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, first as u64), &mut head)
            .map_err(cannot_read)?;
        if head.len() < first || size == first {
            return Ok(Bytes::from(head));
        }
        let mut whole = AlignedBuf::with_room(size);
        whole.extend_from_slice(&head);
        while whole.len() < size {
            let want = size - whole.len();
            match std::io::Read::read(&mut file, &mut whole.spare_mut()[..want]) {
                Ok(0) => break,
                Ok(n) => whole.commit(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(cannot_read(e)),
            }
        }
        Ok(whole.freeze())
    })?;
    Ok((file, chunk))
}

/// The checksum an upload in chunks of `chunk_size` gives the file at
/// `path`, and the file's length: what `chord-console checksum` prints, to
/// compare with what `upload --json` or the gateway said.
pub fn checksum_of_file(path: &Path, chunk_size: usize) -> Result<(Checksum, u64)> {
    crate::check_chunk_size(chunk_size)?;
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    if file.metadata().is_ok_and(|meta| meta.is_dir()) {
        return Err(Error::invalid(format!("{} is a directory", path.display())));
    }
    let mut hasher = Hasher::new(NEW_FILES);
    let mut size = 0u64;
    loop {
        let (rest, chunk) = read_file_chunk(file, chunk_size, path)?;
        if chunk.is_empty() {
            return Ok((hasher.finish(), size));
        }
        hasher.add_chunk(&chunk);
        size += chunk.len() as u64;
        file = rest;
    }
}

/// How much of a chunk is read before a chunk-sized buffer is taken: more
/// than a file that goes inside its manifest, so that a small upload (of
/// a file, or through the gateway) does not hold a buffer of a whole
/// chunk.
const FIRST_READ_BYTES: usize = 64 * 1024;
const _: () = assert!(FIRST_READ_BYTES > MAX_INLINE_BYTES);

/// Reads up to `size` bytes; fewer only at the end of the input. A chunk
/// is gathered in a pooled, aligned buffer: reused memory takes no page
/// faults, and a gateway that stores the chunk itself writes it around the
/// page cache from where it is, without gathering it again.
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> Result<Bytes> {
    let first = size.min(FIRST_READ_BYTES);
    let mut buf = AlignedBuf::with_room(first);
    read_into(reader, &mut buf, first).await?;
    if buf.len() == first && size > first {
        let mut whole = AlignedBuf::with_room(size);
        whole.extend_from_slice(buf.as_slice());
        buf = whole;
        read_into(reader, &mut buf, size).await?;
    }
    Ok(buf.freeze())
}

/// Reads into `buf` until it holds `len` bytes or the input ends.
async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut AlignedBuf,
    len: usize,
) -> Result<()> {
    while buf.len() < len {
        let want = len - buf.len();
        let n = reader
            .read(&mut buf.spare_mut()[..want])
            .await
            .map_err(|e| Error::io("reading the upload", e))?;
        if n == 0 {
            break;
        }
        buf.commit(n);
    }
    Ok(())
}

/// Where a download of the file `name` to `out` goes: `out` itself, or
/// the file under `name` inside `out` if `out` is a directory, as `cp`
/// does. For a caller that starts something before the download (a
/// progress bar), so that a destination that cannot be written is refused
/// first, as [`Client::download_to`] would refuse it.
pub fn download_path(out: &Path, name: &str) -> Result<PathBuf> {
    destination(out, name).map(|(path, _)| path)
}

/// [`download_path`], and what is there now. A new file's directory must
/// exist: an error names `out`, the path given, not the hidden temporary
/// file the download is written to first.
fn destination(out: &Path, name: &str) -> Result<(PathBuf, Option<std::fs::Metadata>)> {
    match std::fs::metadata(out) {
        Ok(meta) if meta.is_dir() => {
            let inside = out.join(name);
            let found = std::fs::metadata(&inside).ok();
            Ok((inside, found))
        }
        Ok(meta) => Ok((out.to_path_buf(), Some(meta))),
        Err(_) => {
            let dir = out
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let cannot = |why: String| format!("cannot write {}: {why}", out.display());
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => Ok((out.to_path_buf(), None)),
                Ok(_) => Err(Error::invalid(cannot(format!(
                    "{} is not a directory",
                    dir.display()
                )))),
                Err(e) => Err(Error::io(cannot(dir.display().to_string()), e)),
            }
        }
    }
}

/// Neither a directory nor a regular file: a device such as `/dev/null`, a
/// pipe. A download writes to it in place, since renaming a finished file
/// onto it would replace it.
fn is_special(meta: &std::fs::Metadata) -> bool {
    !meta.is_file() && !meta.is_dir()
}

/// Renames a finished download at `part` to `out`; on failure, removes it.
fn move_into_place(part: &Path, out: &Path) -> Result<()> {
    std::fs::rename(part, out).map_err(|e| {
        let _ = std::fs::remove_file(part);
        Error::io(format!("cannot move the download to {}", out.display()), e)
    })
}

/// [`Client::download_to`] of a file held in its manifest (its bytes
/// inline, or none), on the calling thread, which may block: the bytes are
/// checked against the file's checksum, then written as a download's are
/// (a temporary file, synced and renamed into place; a special file in
/// place). One blocking call per small file, where the way of chunks
/// takes three. Returns where the file went.
fn write_held(manifest: &Manifest, out: &Path) -> Result<PathBuf> {
    let bytes = &manifest.inline;
    let checksum = Checksum::of(manifest.checksum.algorithm(), bytes);
    verify_whole(manifest, bytes.len() as u64, checksum)?;
    let (out, found) = destination(out, &manifest.name)?;
    if found.is_some_and(|meta| is_special(&meta)) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&out)
            .and_then(|mut sink| std::io::Write::write_all(&mut sink, bytes))
            .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
        return Ok(out);
    }
    let part = part_path(&out);
    let written = create_part(&part, &out, manifest.size).and_then(|mut file| {
        stages::time(Stage::FileWrite, || file.write_all(bytes))?;
        stages::time(Stage::FileSync, || file.finish())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    move_into_place(&part, &out)?;
    Ok(out)
}

/// Creates `part`, the temporary file a download to `out` is written to
/// first, for `len` bytes. An error names `out`, the path the user gave,
/// before the temporary file.
fn create_part(part: &Path, out: &Path, len: u64) -> Result<OutputFile> {
    OutputFile::create(part, len).map_err(|e| e.about(format!("cannot write {}", out.display())))
}

/// `dir/.name.part-<pid>` beside `out`: same file system, so the final
/// rename is atomic, and hidden so a half-written file is never mistaken.
fn part_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    out.with_file_name(format!(".{name}.part-{}", std::process::id()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::store::inline_manifest as held;

    /// How long (in paused time) `retrying` takes over answers that fail
    /// with `errors` in turn and then succeed.
    async fn time_to_retry(errors: Vec<Error>) -> Duration {
        let answers = std::sync::Mutex::new(errors.into_iter());
        let start = tokio::time::Instant::now();
        let got = retrying(5, || async {
            match answers.lock().unwrap().next() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await;
        assert!(got.is_ok(), "{got:?}");
        start.elapsed()
    }

    /// An upload's source, a stream (the gateway's, `upload -`) or a file,
    /// is cut into whole chunks in order, however its pieces arrive and
    /// wherever it ends: before, at or past the first read, at a chunk's
    /// end or within one. A stream's chunks start on a direct-write
    /// boundary, and so does a file's chunk that is larger than its first
    /// read (it comes from the pool).
    #[tokio::test]
    async fn an_upload_is_cut_into_whole_chunks() {
        let size = 256 * 1024;
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            MAX_INLINE_BYTES,
            FIRST_READ_BYTES - 1,
            FIRST_READ_BYTES,
            FIRST_READ_BYTES + 1,
            size,
            2 * size + 4097,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let pieces: Vec<std::io::Result<Bytes>> = data
                .chunks(1000)
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect();
            let mut reader = tokio_util::io::StreamReader::new(futures::stream::iter(pieces));
            let mut streamed = Vec::new();
            loop {
                let chunk = read_chunk(&mut reader, size).await.unwrap();
                if chunk.is_empty() {
                    break;
                }
                assert!(chunk.as_ptr().addr().is_multiple_of(4096), "unaligned");
                streamed.push(chunk);
            }

            let path = dir.path().join(len.to_string());
            std::fs::write(&path, &data).unwrap();
            let mut file = std::fs::File::open(&path).unwrap();
            let mut read = Vec::new();
            loop {
                let (rest, chunk) = read_file_chunk(file, size, &path).unwrap();
                if chunk.is_empty() {
                    break;
                }
                if chunk.len() > FIRST_READ_BYTES {
                    assert!(chunk.as_ptr().addr().is_multiple_of(4096), "unaligned");
                }
                read.push(chunk);
                file = rest;
            }

            for (source, chunks) in [("stream", streamed), ("file", read)] {
                let mut got = Vec::new();
                for chunk in chunks {
                    assert!(
                        chunk.len() == size || got.len() + chunk.len() == len,
                        "a short chunk of {} bytes before the end of a {source} of {len}",
                        chunk.len()
                    );
                    got.extend_from_slice(&chunk);
                }
                assert!(
                    got == data,
                    "a {source} of {len} bytes came back as {} others",
                    got.len()
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaving_node_is_passed_over_without_a_pause() {
        let leaving = || Error::Leaving {
            peer: "127.0.0.1:1".into(),
        };
        let gone = || Error::Unavailable("no answer".into());
        assert_eq!(time_to_retry(vec![leaving()]).await, Duration::ZERO);
        assert_eq!(time_to_retry(vec![gone()]).await, RETRY_BACKOFF);
        // A second leaving node in a row waits, as the ring may be moving.
        assert_eq!(
            time_to_retry(vec![leaving(), leaving()]).await,
            RETRY_BACKOFF * 2
        );
        assert_eq!(time_to_retry(vec![gone(), leaving()]).await, RETRY_BACKOFF);
    }

    /// A directory given as an upload's source is refused by name, the
    /// same way before the upload (a progress bar's size) and by it,
    /// before any call; a missing file says it cannot be read.
    #[tokio::test]
    async fn an_upload_refuses_a_directory_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(upload_size(&file).unwrap(), 5);

        let refused = upload_size(dir.path()).unwrap_err();
        assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
        assert!(refused
            .to_string()
            .ends_with("is a directory; an upload takes one file"));
        let client = Client::new("127.0.0.1:1", crate::peer::PeerOptions::default()).unwrap();
        let by_upload = client
            .upload_file(dir.path(), "d", &TransferOptions::default(), &|_| {})
            .await
            .unwrap_err();
        assert_eq!(by_upload.to_string(), refused.to_string());

        let missing = upload_size(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    /// A file read for upload is refused at its end if it is not as it was
    /// opened: shorter, longer, or written since.
    #[test]
    fn a_file_that_changed_while_read_is_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let opened = file.metadata().unwrap();
        unchanged_since_open(&file, &opened, 5, &path).unwrap();
        // A pseudo-file's bytes read need not match the length it states.
        unchanged_since_open(&file, &opened, 7, &path).unwrap();

        // Written to meanwhile: its time of change moves on, even where
        // its length ends as it was.
        std::thread::sleep(Duration::from_millis(20));
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"9").unwrap();
        let written = unchanged_since_open(&file, &opened, 5, &path).unwrap_err();
        assert!(matches!(written, Error::InvalidArgument(_)), "{written:?}");
        assert!(
            written.to_string().contains(
                "changed while it was uploaded (5 bytes when opened, 5 read, 5 now, written since)"
            ),
            "{written}"
        );

        // Cut short while read.
        writer.set_len(3).unwrap();
        let short = unchanged_since_open(&file, &opened, 3, &path).unwrap_err();
        assert!(short.to_string().contains("3 read, 3 now"), "{short}");
    }

    /// A download goes to the path given, or under the file's name into a
    /// directory; a new file's directory must exist, and the error says
    /// which path could not be written, not the temporary file's.
    #[test]
    fn a_download_path_is_checked_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let into = download_path(dir.path(), "a.bin").unwrap();
        assert_eq!(into, dir.path().join("a.bin"));
        let new = dir.path().join("b.bin");
        assert_eq!(download_path(&new, "a.bin").unwrap(), new);

        let nowhere = dir.path().join("missing").join("b.bin");
        let err = download_path(&nowhere, "a.bin").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("cannot write {}", nowhere.display())),
            "{err}"
        );
        // The error comes before a temporary file, for small files too.
        let err = write_held(&held("a.bin", b"held"), &nowhere).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");

        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let under_a_file = dir.path().join("file").join("b.bin");
        let err = download_path(&under_a_file, "a.bin").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().ends_with("is not a directory"), "{err}");

        // Where the temporary file cannot be made (here a directory is in
        // its place, as /proc refuses any new file), the error names the
        // path given first, and what was there is left as it was.
        let kept = dir.path().join("kept.bin");
        std::fs::write(&kept, b"before").unwrap();
        std::fs::create_dir(part_path(&kept)).unwrap();
        let err = write_held(&held("a.bin", b"held"), &kept).unwrap_err();
        let said = err.to_string();
        assert!(
            said.starts_with(&format!("i/o error: cannot write {}: ", kept.display())),
            "{said}"
        );
        let err = create_part(&part_path(&kept), &kept, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert_eq!(std::fs::read(&kept).unwrap(), b"before");
    }

    #[test]
    fn a_held_file_is_written_whole_and_checked_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let note = held("note.txt", b"held in its manifest");

        // Into a directory, under its name.
        let path = write_held(&note, dir.path()).unwrap();
        assert_eq!(path, dir.path().join("note.txt"));
        assert_eq!(std::fs::read(&path).unwrap(), note.inline);

        // Over a longer file, which it replaces whole.
        let out = dir.path().join("out");
        std::fs::write(&out, vec![b'x'; 10_000]).unwrap();
        assert_eq!(write_held(&note, &out).unwrap(), out);
        assert_eq!(std::fs::read(&out).unwrap(), note.inline);

        // Bytes that do not match the checksum: an error, and the file
        // there stays as it was.
        let mut bad = note.clone();
        bad.inline[0] ^= 1;
        assert!(matches!(write_held(&bad, &out), Err(Error::Corrupt(_))));
        assert_eq!(std::fs::read(&out).unwrap(), note.inline);

        // An empty file is a file too.
        let empty = write_held(&held("empty", b""), dir.path()).unwrap();
        assert_eq!(std::fs::read(&empty).unwrap(), b"");

        // No temporary file is left behind.
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["empty", "note.txt", "out"]);

        // A device is written in place.
        let null = Path::new("/dev/null");
        assert_eq!(write_held(&note, null).unwrap(), null);
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &std::fs::metadata(null).unwrap().file_type()
        ));
    }
}
