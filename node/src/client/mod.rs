//! The client library: what the console and the tests use to talk to a ring.
//!
//! A [`Client`] enters the ring through one node (the entry peer) and reaches
//! any other node it learns of. Every answer about the ring is fresh from
//! the nodes; all it keeps is a short memory of which peers just failed to
//! answer and of the successor lists it was told (`memory`), so one
//! frozen node costs a transfer one call deadline, not one per chunk.
//! A client inside a node (the gateway's) moves that node's own chunks in
//! place ([`Client::inside`]).

use std::collections::HashSet;
use std::sync::Arc;

mod digest;
mod memory;
mod transfer;

pub(crate) use digest::{FileDigest, DIGEST_DEPTH};
pub(crate) use transfer::pieces;
pub use transfer::{
    checksum_of_file, download_path, file_json, upload_size, verify_whole, DownloadReport,
    FileEntry, NodeStatus, ProgressSink, ReadCheck, RingStatus, TransferOptions, UploadReport,
};

use crate::chord::{Id, NodeRef};
use crate::error::Result;
use crate::node::Node;
use crate::peer::{FingerRow, NodeState, PeerInfo, PeerOptions, PeerPool};
use memory::PeerMemory;

#[derive(Debug)]
pub struct Client {
    entry: String,
    peers: PeerPool,
    memory: PeerMemory,
    /// The node this client runs inside (a gateway's), whose chunks it
    /// writes and reads in place instead of calling itself over gRPC.
    local: Option<Arc<Node>>,
}

/// A peer that failed to answer is passed over for this many call
/// deadlines, unless it answers first: long enough for the ring to drop
/// it, short enough that a peer back from a stall is soon used again.
const SILENT_DEADLINES: u32 = 10;

/// One node as seen by a ring walk.
#[derive(Clone, Debug)]
pub struct RingNode {
    pub info: PeerInfo,
    pub fingers: Vec<FingerRow>,
}

impl RingNode {
    /// The distinct finger targets in finger order.
    pub fn distinct_fingers(&self) -> Vec<NodeRef> {
        let mut seen = HashSet::new();
        self.fingers
            .iter()
            .filter_map(|f| f.node.clone())
            .filter(|n| seen.insert(n.addr.clone()))
            .collect()
    }
}

impl Client {
    pub fn new(entry: impl Into<String>, opts: PeerOptions) -> Result<Client> {
        let entry = entry.into();
        crate::wire::validate_addr(&entry).map_err(|e| e.about("--peer"))?;
        Ok(Client {
            entry,
            memory: PeerMemory::new(opts.rpc_timeout * SILENT_DEADLINES),
            peers: PeerPool::new(opts),
            local: None,
        })
    }

    /// This client, running inside `node`: a chunk `node` is to hold is
    /// written there in place, as its PutChunk handler would after hashing
    /// (the client has hashed it already), and a chunk it holds is read
    /// there; the bytes skip the loopback connection, its framing and its
    /// second hash. A node that is leaving takes no writes, in place or not.
    pub fn inside(mut self, node: Arc<Node>) -> Client {
        self.local = Some(node);
        self
    }

    /// The node this client runs inside, if it is `target` and takes writes.
    fn local_node(&self, target: &NodeRef) -> Option<&Node> {
        self.local
            .as_deref()
            .filter(|node| node.me().addr == target.addr && !node.is_leaving())
    }

    pub fn entry(&self) -> &str {
        &self.entry
    }

    pub fn peers(&self) -> &PeerPool {
        &self.peers
    }

    /// What `addr` says of itself; its successor list and the arc it owns
    /// are remembered.
    pub async fn info(&self, addr: &str) -> Result<PeerInfo> {
        let info = self.heard(addr, self.peers.get_info(addr).await)?;
        if info.state == NodeState::Leaving {
            // It hands its keys on and then drops them: passed over as a
            // holder, with no arc of its own, as if it had refused a write.
            self.memory.learn(&info.node, None, &info.successors);
            self.memory.silent(addr);
        } else {
            self.memory
                .learn(&info.node, info.predecessor.as_ref(), &info.successors);
        }
        self.memory.learn_replicas(info.replicas.max(1));
        Ok(info)
    }

    /// Passes on `answer`, a call's to `addr`, remembering `addr` as
    /// answering, or as silent if the error says it may be gone.
    fn heard<T>(&self, addr: &str, answer: Result<T>) -> Result<T> {
        match &answer {
            Ok(_) => self.memory.answered(addr),
            Err(e) if e.peer_may_be_gone() => self.memory.silent(addr),
            Err(_) => {}
        }
        answer
    }

    /// Walks the ring by successor pointers from the entry node, in ring
    /// order, with each node's finger table (see [`PeerPool::walk_ring`]).
    pub async fn ring(&self) -> Result<Vec<RingNode>> {
        let first = self.peers.get_info(&self.entry).await?;
        let mut nodes = Vec::new();
        for info in self.peers.walk_ring(first).await {
            let fingers = self
                .peers
                .get_finger_table(&info.node.addr)
                .await
                .unwrap_or_default();
            nodes.push(RingNode { info, fingers });
        }
        Ok(nodes)
    }

    /// The nodes of the ring in ring order, without their finger tables.
    pub async fn walk(&self) -> Result<Vec<NodeRef>> {
        let first = self.peers.get_info(&self.entry).await?;
        let infos = self.peers.walk_ring(first).await;
        Ok(infos.into_iter().map(|info| info.node).collect())
    }

    /// The owner of `key` and the hops the entry node took to find it.
    pub async fn lookup(&self, key: &Id) -> Result<(NodeRef, u32)> {
        self.peers.find_successor(&self.entry, key).await
    }

    /// Same as [`Client::lookup`], started at another node.
    pub async fn lookup_from(&self, addr: &str, key: &Id) -> Result<(NodeRef, u32)> {
        self.peers.find_successor(addr, key).await
    }
}
