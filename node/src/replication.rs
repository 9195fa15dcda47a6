//! Storage operations that span the ring: replicated writes, manifests that
//! are checked against the chunks the ring holds, routed manifest reads and
//! the ring-wide file listing.
//!
//! Placement rule: a key lives on its owner (its successor on the ring) and
//! the owner's next R-1 successors. A write is acknowledged once
//! min(R, ring size) copies are durable. These are methods of [`Node`]; the
//! disk is reached only through [`Node::disk`].

use std::collections::BTreeMap;

use bytes::Bytes;
use chord_proto::pb;
use futures::stream::{self, StreamExt};
use tracing::{debug, warn};

use crate::chord::{nodes_past, Id, NodeRef, SEARCH_PAST_HOLDERS};
use crate::error::{Error, Result};
use crate::node::{Counters, Node};
use crate::now_ms;
use crate::peer::FilesPage;
use crate::stages::{self, Stage};
use crate::store::{validate_name, CheckedChunk, Manifest};

/// How far ahead of the clock a client-chosen manifest version may be.
const MAX_VERSION_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Lookups in flight at once while checking a manifest's chunks.
const CHECK_PARALLELISM: usize = 16;

impl Node {
    /// Copies wanted for every key, capped by what a successor list can name.
    pub fn replicas(&self) -> usize {
        self.config().replicas
    }

    /// Stores `chunk` (last touched `age` ago by the sender) here and on
    /// our successors until `copies` copies (or as many as the ring has
    /// nodes) are durable. The local write and the copies to successors run
    /// at once; the answer waits for both. Returns the copies made.
    pub async fn put_chunk_replicated(
        &self,
        chunk: CheckedChunk,
        copies: u32,
        age: std::time::Duration,
    ) -> Result<u32> {
        let key = *chunk.key();
        let len = chunk.data().len() as u64;
        let local = chunk.clone();
        let write_here = self.disk(move |s| s.put_checked_chunk(&local, age));
        let what = format!("chunk {}", key.short());
        let copy_on = self.copy_to_successors(copies, &what, |peer| {
            let chunk = chunk.clone();
            async move {
                stages::time_async(
                    Stage::PutChunkCall,
                    self.peers().put_chunk(&peer.addr, &chunk, 1),
                )
                .await?;
                Counters::bump(&self.counters.bytes_out, len);
                Ok(())
            }
        });
        let (written, copied) = futures::future::join(write_here, copy_on).await;
        written?;
        Counters::bump(&self.counters.bytes_in, len);
        copied
    }

    /// The replication rule shared by chunks and manifests, the local copy
    /// counted as made (its write runs beside): copy to the nearest
    /// successors in parallel, one more further along the list for each
    /// that fails, until `copies` copies exist in all; an error unless
    /// min(`copies`, ring size) do.
    async fn copy_to_successors<F, Fut>(&self, copies: u32, what: &str, copy: F) -> Result<u32>
    where
        F: Fn(NodeRef) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let (want, successors) = self.copy_targets(copies, what).await?;
        self.copy_along(want, successors, what, copy).await
    }

    /// Where the copies of a key written here go, for `copies` in all
    /// (the local one counted, at most R): how many copies are wanted, and
    /// the successors to make them on, nearest first. The first `want - 1`
    /// are tried first; [`Node::copy_along`] goes further along for each
    /// that fails.
    pub async fn copy_targets(&self, copies: u32, what: &str) -> Result<(usize, Vec<NodeRef>)> {
        let want = (copies.max(1) as usize).min(self.replicas());
        Ok((want, self.successors_for(want, what).await?))
    }

    /// The replication rule of `copy_to_successors` (above) over targets
    /// already chosen by [`Node::copy_targets`].
    pub async fn copy_along<F, Fut>(
        &self,
        want: usize,
        successors: Vec<NodeRef>,
        what: &str,
        copy: F,
    ) -> Result<u32>
    where
        F: Fn(NodeRef) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let needed = want.min(1 + successors.len());
        let mut made = 1;
        let mut next = successors.into_iter();
        let mut batch: Vec<NodeRef> = next.by_ref().take(want - 1).collect();
        while !batch.is_empty() && made < want {
            let results = futures::future::join_all(batch.iter().map(|peer| {
                let copying = copy(peer.clone());
                async move { (peer, copying.await) }
            }))
            .await;
            let mut failed = 0;
            for (peer, result) in results {
                match result {
                    Ok(()) => made += 1,
                    Err(e) => {
                        warn!(peer = %peer.addr, error = %e, "replica write of {what} failed");
                        if e.peer_may_be_gone() {
                            self.peer_failed(peer);
                        }
                        failed += 1;
                    }
                }
            }
            batch = next.by_ref().take(failed).collect();
        }
        if made < needed {
            return Err(Error::Unavailable(format!(
                "{what}: only {made} of {needed} copies durable"
            )));
        }
        Ok(made as u32)
    }

    /// The successor list to copy to, for `want` copies in all. A list long
    /// enough is taken as it is. A shorter one says the ring has fewer nodes
    /// only if it is complete, and even then only as of the last stabilize:
    /// so it first gets one stabilize round of its own, which fills a list
    /// still filling after a join or a failure, and adds a node that joined
    /// a small ring since. If it is still incomplete the write is refused,
    /// retryably: acknowledging fewer copies than the ring can hold would
    /// break the min(R, ring size) rule.
    async fn successors_for(&self, want: usize, what: &str) -> Result<Vec<NodeRef>> {
        let successors = self.ring().successors().to_vec();
        if 1 + successors.len() >= want {
            return Ok(successors);
        }
        self.stabilize().await;
        let ring = self.ring();
        if 1 + ring.successors().len() < want && !ring.successors_complete() {
            return Err(Error::Unavailable(format!(
                "{what}: the successor list is still filling ({} of {} successors known)",
                ring.successors().len(),
                want - 1
            )));
        }
        Ok(ring.successors().to_vec())
    }

    /// Whether some holder of `key` has the chunk (the owner, else a
    /// replica). The holder that says so counts the chunk as just touched.
    async fn ring_has_chunk(&self, key: Id) -> Result<bool> {
        let holders = self.replica_set(key, self.replicas()).await?;
        for holder in holders {
            let present = if holder.addr == self.me().addr {
                self.disk(move |s| Ok(s.touch_chunks(&[key])))
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(false)
            } else {
                match self.peers().has_chunks(&holder.addr, &[key]).await {
                    Ok(p) => p.first().copied().unwrap_or(false),
                    Err(e) => {
                        debug!(peer = %holder.addr, error = %e, "has_chunks failed");
                        false
                    }
                }
            };
            if present {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores a manifest written by a client: every chunk it names must be on
    /// the ring, its version is made newer than any stored one, and it is
    /// replicated like a chunk. Returns (copies, version).
    pub async fn put_manifest_primary(
        &self,
        mut manifest: Manifest,
        copies: u32,
    ) -> Result<(u32, u64)> {
        manifest.validate()?;
        // Versions are milliseconds of the owner's clock, and the next write
        // gets one more than the stored one: a client's far-future version
        // would pin the file there.
        if manifest.version > now_ms().saturating_add(MAX_VERSION_AHEAD_MS) {
            return Err(Error::invalid(format!(
                "version {} of {:?} is more than a day ahead of this node's clock",
                manifest.version, manifest.name
            )));
        }
        self.check_chunks_held(&manifest).await?;
        let key = manifest.key();
        // The stored version, from the index: the record itself is not read.
        let stored = self.disk(move |s| Ok(s.manifest_stamp(&key))).await?;
        // A stored version at the top of the range (a client may send any
        // version) cannot be superseded: refuse rather than wrap around.
        let floor = match stored {
            None => 0,
            Some(stamp) => stamp.version.checked_add(1).ok_or_else(|| {
                Error::invalid(format!(
                    "{:?} is at the highest version there is and cannot be replaced",
                    manifest.name
                ))
            })?,
        };
        manifest.version = manifest.version.max(floor).max(now_ms());
        if manifest.modified_ms == 0 {
            manifest.modified_ms = now_ms();
        }
        let version = manifest.version;
        let made = self.put_manifest_replicated(manifest, copies).await?;
        Ok((made, version))
    }

    /// Checks that every chunk `manifest` names is on the ring: held here,
    /// or by one of that chunk's holders. Either way the chunk counts as just
    /// touched, and the check must end within half the collection grace:
    /// the collector's safety rests on that bound (chunks checked here are
    /// named by a stored manifest in time, or the write fails and is tried
    /// again). A tombstone names no chunks.
    async fn check_chunks_held(&self, manifest: &Manifest) -> Result<()> {
        if manifest.chunks.is_empty() {
            return Ok(());
        }
        let checked_from = std::time::Instant::now();
        let mut distinct = manifest.chunks.clone();
        distinct.sort();
        distinct.dedup();
        let keys = distinct.clone();
        let here = self.disk(move |s| Ok(s.touch_chunks(&keys))).await?;
        let elsewhere = distinct
            .into_iter()
            .zip(here)
            .filter_map(|(key, held)| (!held).then_some(key));
        let missing: Vec<Id> = stream::iter(elsewhere)
            .map(|key| async move { (key, self.ring_has_chunk(key).await) })
            .buffer_unordered(CHECK_PARALLELISM)
            .filter_map(|(key, has)| async move {
                match has {
                    Ok(true) => None,
                    _ => Some(key),
                }
            })
            .collect()
            .await;
        if let Some(first) = missing.first() {
            return Err(Error::invalid(format!(
                "manifest for {:?} names {} chunk(s) the ring does not hold (e.g. {first})",
                manifest.name,
                missing.len()
            )));
        }
        if checked_from.elapsed() >= self.config().gc_grace / 2 {
            return Err(Error::Unavailable(format!(
                "checking the chunks of {:?} took longer than half the collection grace period; try again",
                manifest.name
            )));
        }
        Ok(())
    }

    /// Stores a copy of a manifest another node sent (its owner replicating
    /// a write, or repair): as is, forwarded nowhere, but only once every
    /// chunk it names is verified on the ring, so a copy cannot make a file
    /// of chunks nobody has. Returns whether it was stored (`false`: the
    /// stored version is the same or newer).
    pub async fn put_manifest_replica(&self, manifest: Manifest) -> Result<bool> {
        self.check_chunks_held(&manifest).await?;
        self.disk(move |s| s.put_manifest(&manifest)).await
    }

    /// Stores `manifest` here and on successors, newest version winning.
    /// As with a chunk, the local write and the copies run at once and the
    /// answer waits for both. A write refused here (a newer version of the
    /// name got in first) is an error, though its copies may have landed:
    /// they are older than the version that won here, which its own write
    /// copies on, and a reader takes the newest among the holders.
    async fn put_manifest_replicated(&self, manifest: Manifest, copies: u32) -> Result<u32> {
        let local = manifest.clone();
        let write_here = self.disk(move |s| s.put_manifest(&local));
        let what = format!("manifest for {:?}", manifest.name);
        let copy_on = self.copy_to_successors(copies, &what, |peer| {
            let manifest = &manifest;
            async move {
                stages::time_async(
                    Stage::ManifestCall,
                    self.peers().put_manifest(&peer.addr, manifest, 1, true),
                )
                .await?;
                Ok(())
            }
        });
        let (written, copied) = futures::future::join(write_here, copy_on).await;
        if !written? {
            // Another write of the same name got in first with a newer
            // version: this one is not stored, and must not say it was.
            return Err(Error::Unavailable(format!(
                "a newer version of {:?} was written at the same time; try again",
                manifest.name
            )));
        }
        copied
    }

    /// The newest manifest of `name` among its holders (tombstones included).
    ///
    /// Where every holder answers that it has none, the nodes past them are
    /// asked too ([`SEARCH_PAST_HOLDERS`]): after joins the holders can all
    /// be newcomers that repair has not reached yet, while the old holders,
    /// further clockwise, still keep the file. Those extra nodes are a
    /// search, not holders: one that does not answer changes nothing, and
    /// the search gives up after one call's deadline.
    pub async fn find_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        validate_name(name)?;
        let key = Id::hash(name.as_bytes());
        let holders = self.replica_set(key, self.replicas()).await?;
        let found = newest_manifest(name, self.ask_for_manifest(&holders, name).await)?;
        if found.is_some() {
            return Ok(found);
        }
        // Within one call's deadline in all: a node past the holders that
        // is frozen costs a read of a missing name no more than that.
        let search = async {
            let past = nodes_past(&holders, SEARCH_PAST_HOLDERS, |n| async move {
                self.successors_of(&n).await
            })
            .await;
            debug!(
                name,
                past = past.len(),
                "no holder has it; asking the nodes past them"
            );
            let answers = self.ask_for_manifest(&past, name).await;
            newest_manifest(name, answers.into_iter().filter(Result::is_ok).collect())
        };
        tokio::time::timeout(self.config().rpc_timeout, search)
            .await
            .unwrap_or(Ok(None))
    }

    /// This node's copy of manifest `name` (its key `key`), or where it
    /// has none, the newest copy a predecessor still handing its range
    /// over has: a key of a range this node has just taken over may be
    /// there and not here yet (at R = 1 the only copy). What the reader is
    /// told is what it would have found a little later, when the hand-off
    /// has brought it here.
    /// `passed_back` says how many nodes have passed this read back already
    /// ([`Node::handing_over`]).
    pub async fn manifest_here(
        &self,
        key: Id,
        name: &str,
        passed_back: u32,
    ) -> Result<Option<Manifest>> {
        let here = self.disk(move |s| s.get_manifest(&key)).await?;
        if here.is_some() {
            return Ok(here);
        }
        let behind = self.handing_over(passed_back);
        let answers = futures::future::join_all(behind.iter().map(|node| async move {
            let answer = self
                .peers()
                .get_manifest_behind(&node.addr, name, passed_back + 1)
                .await;
            self.behind_answered(node, &answer);
            answer
        }))
        .await;
        newest_manifest(name, answers.into_iter().filter(Result::is_ok).collect())
    }

    /// Chunk `key` as this node has it on disk, not checked (the reader
    /// checks), or where it has none, checked, from a predecessor still
    /// handing its range over (see [`Node::manifest_here`]).
    pub async fn chunk_here(&self, key: Id, passed_back: u32) -> Result<Bytes> {
        let here = self.disk(move |s| s.read_chunk_unchecked(&key)).await;
        self.or_behind(key, here, passed_back).await
    }

    /// [`Node::chunk_here`] with this node's copy checked against its key
    /// as well (and quarantined if it does not match): for a reader in
    /// this process, which gets no second look at the bytes.
    pub async fn checked_chunk_here(&self, key: Id) -> Result<Bytes> {
        let here = self
            .disk(move |s| s.read_chunk(&key).map(CheckedChunk::into_data))
            .await;
        self.or_behind(key, here, 0).await
    }

    /// `here`, unless it is "not found": then the chunk as a predecessor
    /// still handing its range over has it, if one does.
    async fn or_behind(&self, key: Id, here: Result<Bytes>, passed_back: u32) -> Result<Bytes> {
        match here {
            Err(missing @ Error::NotFound(_)) => match self.chunk_behind(key, passed_back).await {
                Some(chunk) => Ok(chunk.into_data()),
                None => Err(missing),
            },
            found => found,
        }
    }

    /// Chunk `key`, checked, from the first predecessor still handing its
    /// range over that has it.
    async fn chunk_behind(&self, key: Id, passed_back: u32) -> Option<CheckedChunk> {
        for node in self.handing_over(passed_back) {
            let answer = self
                .peers()
                .get_chunk_behind(&node.addr, &key, passed_back + 1)
                .await;
            self.behind_answered(&node, &answer);
            if let Ok(chunk) = answer {
                debug!(key = %key.short(), from = %node.addr, "read behind: the chunk is not here yet");
                return Some(chunk);
            }
        }
        None
    }

    /// A predecessor handing over that cannot be reached has gone, and
    /// has nothing more to hand over.
    fn behind_answered<T>(&self, node: &NodeRef, answer: &Result<T>) {
        if let Err(e @ Error::Unreachable { .. }) = answer {
            debug!(peer = %node.addr, error = %e, "a node handing over is gone");
            self.handed_over(&node.addr);
        }
    }

    /// What each of `nodes` holds of `name`, asked all at once.
    async fn ask_for_manifest(
        &self,
        nodes: &[NodeRef],
        name: &str,
    ) -> Vec<Result<Option<Manifest>>> {
        let key = Id::hash(name.as_bytes());
        futures::future::join_all(nodes.iter().map(|node| async move {
            if node.addr == self.me().addr {
                self.manifest_here(key, name, 0).await
            } else {
                self.peers().get_manifest(&node.addr, name).await
            }
        }))
        .await
    }

    /// Writes a tombstone for `name` through its owner. Returns its version.
    ///
    /// A name whose newest version is already a tombstone is not found,
    /// but its tombstone is written through the owner again first: it may
    /// be an earlier delete that failed after reaching only some holders,
    /// and a retried delete answered "no such file" must stand on all R of
    /// them, as the delete it repeats would have.
    pub async fn delete_file(&self, name: &str) -> Result<u64> {
        let not_found = || Error::NotFound(format!("no file named {name:?}"));
        let current = self.find_manifest(name).await?.ok_or_else(not_found)?;
        let version = current.version.checked_add(1).ok_or_else(|| {
            Error::invalid(format!("{name:?} is at the highest version there is"))
        })?;
        let tombstone = Manifest::tombstone(name, version, now_ms());
        let (owner, _) = self.find_successor(tombstone.key()).await?;
        let copies = self.replicas() as u32;
        let (_, version) = if owner.addr == self.me().addr {
            self.put_manifest_primary(tombstone, copies).await?
        } else {
            self.peers()
                .put_manifest(&owner.addr, &tombstone, copies, false)
                .await?
        };
        if current.deleted {
            return Err(not_found());
        }
        Ok(version)
    }

    /// One page of this node's manifests as listing entries (tombstones
    /// included), in key order after `after`.
    pub async fn local_files_page(&self, after: Option<Id>, limit: usize) -> Result<FilesPage> {
        let (manifests, next) = self
            .disk(move |s| s.manifests_page(after.as_ref(), limit))
            .await?;
        Ok(FilesPage {
            files: manifests.iter().map(file_entry).collect(),
            next,
        })
    }

    /// One page of the live files on the ring, in key order after `after`:
    /// the same page of every node's listing, merged so that the newest
    /// version of a name wins and deleted names drop out.
    pub async fn ring_files_page(&self, after: Option<Id>, limit: usize) -> Result<FilesPage> {
        let mut pages = vec![self.local_files_page(after, limit).await?];
        let asked = u32::try_from(limit).unwrap_or(u32::MAX);
        for peer in self.walk_ring().await {
            match self
                .peers()
                .list_files_page(&peer.addr, false, after.as_ref(), asked)
                .await
            {
                Ok(page) => pages.push(page),
                Err(e) => debug!(peer = %peer.addr, error = %e, "listing failed"),
            }
        }
        Ok(merge_file_pages(pages, after, limit))
    }

    /// The other nodes of the ring, found by following successor pointers.
    pub async fn walk_ring(&self) -> Vec<NodeRef> {
        let infos = self.peers().walk_ring(self.info()).await;
        infos.into_iter().skip(1).map(|info| info.node).collect()
    }
}

/// Merges the same page (after `after`) of several nodes' listings into
/// at most `limit` names of the ring's listing. Each node listed every key
/// up to its own cursor, so up to the smallest cursor every node's entries
/// are in: that is as far as the merged page may go, and its cursor.
fn merge_file_pages(pages: Vec<FilesPage>, after: Option<Id>, limit: usize) -> FilesPage {
    let mut next = pages.iter().filter_map(|p| p.next).min();
    let mut merged: BTreeMap<Id, pb::FileEntry> = BTreeMap::new();
    for entry in pages.into_iter().flat_map(|p| p.files) {
        let key = Id::hash(entry.name.as_bytes());
        if after.is_some_and(|a| key <= a) || next.is_some_and(|n| key > n) {
            continue;
        }
        let newer = merged
            .get(&key)
            .is_none_or(|old| (entry.version, entry.deleted) > (old.version, old.deleted));
        if newer {
            merged.insert(key, entry);
        }
    }
    // Different nodes hold different names: their union may be longer.
    if let Some(first_left) = merged.keys().nth(limit.max(1)).copied() {
        merged.split_off(&first_left);
        next = merged.keys().next_back().copied();
    }
    FilesPage {
        files: merged.into_values().filter(|e| !e.deleted).collect(),
        next,
    }
}

pub fn file_entry(m: &Manifest) -> pb::FileEntry {
    pb::FileEntry {
        name: m.name.clone(),
        size: m.size,
        version: m.version,
        chunks: m.chunks.len() as u32,
        modified_ms: m.modified_ms,
        deleted: m.deleted,
    }
}

/// The newest of the manifests of `name` its holders answered with
/// (`None` where a holder has none). Without one, `None` only if every
/// holder answered: a holder that failed may be the one that has it.
pub(crate) fn newest_manifest(
    name: &str,
    answers: Vec<Result<Option<Manifest>>>,
) -> Result<Option<Manifest>> {
    let asked = answers.len();
    let mut best: Option<Manifest> = None;
    let mut errors = 0;
    for answer in answers {
        match answer {
            Ok(Some(m)) => {
                if best.as_ref().is_none_or(|b| m.supersedes(b)) {
                    best = Some(m);
                }
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "manifest read failed");
                errors += 1;
            }
        }
    }
    // "No such file" needs every holder asked: the one that did not answer
    // may be the one holder left with it.
    if best.is_none() && errors > 0 {
        return Err(Error::Unavailable(format!(
            "{errors} of the {asked} holders of {name:?} did not answer, and no other has it"
        )));
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest answer wins (a tombstone over a live copy of its
    /// version), and failed holders are passed over, but no file is
    /// answered only when every holder said so.
    #[test]
    fn the_newest_answer_wins_and_absence_needs_every_holder() {
        let live = |version| Manifest {
            deleted: false,
            ..Manifest::tombstone("f", version, 1)
        };
        let failed = || Err(Error::Unavailable("gone".into()));
        let answers = vec![Ok(Some(live(1))), failed(), Ok(Some(live(3))), Ok(None)];
        let newest = newest_manifest("f", answers).unwrap().unwrap();
        assert_eq!((newest.version, newest.deleted), (3, false));
        let answers = vec![Ok(Some(live(2))), Ok(Some(Manifest::tombstone("f", 2, 1)))];
        assert!(newest_manifest("f", answers).unwrap().unwrap().deleted);
        assert!(newest_manifest("f", vec![Ok(None), Ok(None)])
            .unwrap()
            .is_none());
        assert!(matches!(
            newest_manifest("f", vec![failed(), Ok(None)]),
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            newest_manifest("f", vec![failed(), failed()]),
            Err(Error::Unavailable(_))
        ));
    }

    /// Six names in the order of their keys, with their keys.
    fn names_by_key() -> Vec<(Id, String)> {
        let mut names: Vec<(Id, String)> = (0..6)
            .map(|i| {
                let name = format!("file-{i}");
                (Id::hash(name.as_bytes()), name)
            })
            .collect();
        names.sort();
        names
    }

    /// One node's page: (name index, version, deleted) entries and the name
    /// index of its cursor.
    fn page(
        names: &[(Id, String)],
        entries: &[(usize, u64, bool)],
        next: Option<usize>,
    ) -> FilesPage {
        FilesPage {
            files: entries
                .iter()
                .map(|&(i, version, deleted)| pb::FileEntry {
                    name: names[i].1.clone(),
                    version,
                    deleted,
                    ..pb::FileEntry::default()
                })
                .collect(),
            next: next.map(|i| names[i].0),
        }
    }

    /// What a merged page lists, as (name index, version), and its cursor.
    fn merged(
        names: &[(Id, String)],
        pages: Vec<FilesPage>,
        after: Option<usize>,
        limit: usize,
    ) -> (Vec<(usize, u64)>, Option<usize>) {
        let at = |key: Id| names.iter().position(|(k, _)| *k == key);
        let out = merge_file_pages(pages, after.map(|i| names[i].0), limit);
        let listed = out
            .files
            .iter()
            .filter_map(|e| Some((at(Id::hash(e.name.as_bytes()))?, e.version)))
            .collect();
        (listed, out.next.and_then(at))
    }

    #[test]
    fn a_merged_page_stops_where_every_node_is_complete() {
        let names = &names_by_key();
        // Node a has more after name 2; node b is done, with a name past
        // a's cursor that must wait for the page that covers it.
        let a = page(names, &[(0, 1, false), (2, 1, false)], Some(2));
        let b = page(names, &[(1, 1, false), (4, 1, false)], None);
        assert_eq!(
            merged(names, vec![a, b], None, 10),
            (vec![(0, 1), (1, 1), (2, 1)], Some(2))
        );
    }

    #[test]
    fn the_newest_version_wins_and_tombstones_hide_older_copies() {
        let names = &names_by_key();
        let a = page(names, &[(0, 2, true), (1, 1, true), (2, 1, false)], None);
        let b = page(names, &[(0, 1, false), (1, 2, false)], None);
        assert_eq!(
            merged(names, vec![a, b], None, 10),
            (vec![(1, 2), (2, 1)], None)
        );
    }

    #[test]
    fn a_union_longer_than_the_limit_is_cut_with_a_cursor() {
        let names = &names_by_key();
        // Two complete nodes with different names: five in all, two a page;
        // the tombstone counts towards the limit but is not listed.
        let a = page(names, &[(0, 1, false), (3, 1, true)], None);
        let b = page(names, &[(1, 1, false), (2, 1, false), (4, 1, false)], None);
        let both = || vec![a.clone(), b.clone()];
        assert_eq!(
            merged(names, both(), None, 2),
            (vec![(0, 1), (1, 1)], Some(1))
        );
        assert_eq!(merged(names, both(), Some(1), 2), (vec![(2, 1)], Some(3)));
        assert_eq!(merged(names, both(), Some(3), 2), (vec![(4, 1)], None));
    }
}
