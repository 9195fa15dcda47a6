//! Storage operations that span the ring: replicated writes, manifests that
//! are checked against the chunks the ring holds, routed manifest reads and
//! the ring-wide file listing.
//!
//! Placement rule: a key lives on its owner (its successor on the ring) and
//! the owner's next R-1 successors. A write is acknowledged once
//! min(R, ring size) copies are durable. These are methods of [`Node`]; the
//! disk is reached only through [`Node::disk`].

use std::collections::HashMap;

use chord_proto::pb;
use futures::stream::{self, StreamExt};
use tracing::{debug, warn};

use crate::chord::{Id, NodeRef};
use crate::error::{Error, Result};
use crate::node::{Counters, Node};
use crate::now_ms;
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
                self.peers().put_chunk(&peer.addr, &chunk, 1).await?;
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
    /// counted as made (its write runs beside, or before): copy to the nearest successors in parallel, one more
    /// further along the list for each that fails, until `copies` copies
    /// exist in all; an error unless min(`copies`, ring size) do.
    async fn copy_to_successors<F, Fut>(&self, copies: u32, what: &str, copy: F) -> Result<u32>
    where
        F: Fn(NodeRef) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let want = (copies.max(1) as usize).min(self.replicas());
        let successors = self.ring().successors().to_vec();
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
        // The collector's safety rests on this bound: chunks checked (and
        // so touched) here are named by a stored manifest within half the
        // grace period, or the write fails and the client tries again.
        let checked_from = std::time::Instant::now();
        if !manifest.deleted {
            let mut distinct = manifest.chunks.clone();
            distinct.sort();
            distinct.dedup();
            let missing: Vec<Id> = stream::iter(distinct)
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
        }
        if checked_from.elapsed() >= self.config().gc_grace / 2 {
            return Err(Error::Unavailable(format!(
                "checking the chunks of {:?} took longer than half the collection grace period; try again",
                manifest.name
            )));
        }
        let key = manifest.key();
        let stored = self
            .disk(move |s| s.get_manifest(&key))
            .await
            .unwrap_or(None);
        // A stored version at the top of the range (a client may send any
        // version) cannot be superseded: refuse rather than wrap around.
        let floor = match stored {
            None => 0,
            Some(m) => m.version.checked_add(1).ok_or_else(|| {
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

    /// Stores `manifest` here and on successors, newest version winning.
    async fn put_manifest_replicated(&self, manifest: Manifest, copies: u32) -> Result<u32> {
        let local = manifest.clone();
        if !self.disk(move |s| s.put_manifest(&local)).await? {
            // Another write of the same name got in first with a newer
            // version: this one is not stored, and must not say it was.
            return Err(Error::Unavailable(format!(
                "a newer version of {:?} was written at the same time; try again",
                manifest.name
            )));
        }
        let what = format!("manifest for {:?}", manifest.name);
        self.copy_to_successors(copies, &what, |peer| {
            let manifest = &manifest;
            async move {
                self.peers()
                    .put_manifest(&peer.addr, manifest, 1, true)
                    .await?;
                Ok(())
            }
        })
        .await
    }

    /// The newest manifest of `name` among its holders (tombstones included).
    pub async fn find_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        validate_name(name)?;
        let key = Id::hash(name.as_bytes());
        let holders = self.replica_set(key, self.replicas()).await?;
        let answers = futures::future::join_all(holders.iter().map(|holder| async move {
            if holder.addr == self.me().addr {
                self.disk(move |s| s.get_manifest(&key)).await
            } else {
                self.peers().get_manifest(&holder.addr, name, false).await
            }
        }))
        .await;
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
        if best.is_none() && errors == holders.len() {
            return Err(Error::Unavailable(format!(
                "no holder of {name:?} answered"
            )));
        }
        Ok(best)
    }

    /// Writes a tombstone for `name` through its owner. Returns its version.
    pub async fn delete_file(&self, name: &str) -> Result<u64> {
        let current = self
            .find_manifest(name)
            .await?
            .filter(|m| !m.deleted)
            .ok_or_else(|| Error::NotFound(format!("no file named {name:?}")))?;
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
        Ok(version)
    }

    /// This node's manifests as listing entries (tombstones included).
    pub async fn local_files(&self) -> Result<Vec<pb::FileEntry>> {
        let manifests = self.disk(|s| s.manifests()).await?;
        Ok(manifests.iter().map(file_entry).collect())
    }

    /// Every live file on the ring: each node's listing, merged so that the
    /// newest version of a name wins and deleted names drop out.
    pub async fn ring_files(&self) -> Result<Vec<pb::FileEntry>> {
        let mut merged: HashMap<String, pb::FileEntry> = HashMap::new();
        let mut absorb = |entries: Vec<pb::FileEntry>| {
            for e in entries {
                let newer = merged
                    .get(&e.name)
                    .is_none_or(|old| (e.version, e.deleted) > (old.version, old.deleted));
                if newer {
                    merged.insert(e.name.clone(), e);
                }
            }
        };
        absorb(self.local_files().await?);
        for peer in self.walk_ring().await {
            match self.peers().list_files(&peer.addr, false).await {
                Ok(entries) => absorb(entries),
                Err(e) => debug!(peer = %peer.addr, error = %e, "listing failed"),
            }
        }
        let mut files: Vec<pb::FileEntry> = merged.into_values().filter(|e| !e.deleted).collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// The other nodes of the ring, found by following successor pointers.
    pub async fn walk_ring(&self) -> Vec<NodeRef> {
        let infos = self.peers().walk_ring(self.info()).await;
        infos.into_iter().skip(1).map(|info| info.node).collect()
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
