//! Conversions between `chord.v1` messages and the node's domain types.
//!
//! Everything that arrives from the network passes through here before the
//! core sees it, so this is where malformed input is turned into
//! [`Error::InvalidArgument`] (from a client) or [`Error::BadReply`] (from a
//! peer we asked). A node's id must be SHA-1 of the address it advertises: a
//! peer that claims otherwise is answering nonsense.

use chord_proto::pb;

use crate::chord::{Id, NodeRef, Route};
use crate::error::{Error, Result};
use crate::events::{Event, EventBatch, EventKind};
use crate::repair::HandoffReport;
use crate::store::{check_manifest_fits, Algorithm, Checksum, Manifest, Stamp};

/// Longest `host:port` accepted: a DNS name is at most 253 bytes, plus the port.
pub const MAX_ADDR_LEN: usize = 260;

pub fn node_to_pb(node: &NodeRef) -> pb::NodeRef {
    pb::NodeRef {
        id: node.id.as_bytes().to_vec(),
        addr: node.addr.clone(),
    }
}

pub fn nodes_to_pb<'a>(nodes: impl IntoIterator<Item = &'a NodeRef>) -> Vec<pb::NodeRef> {
    nodes.into_iter().map(node_to_pb).collect()
}

/// Checks that `addr` is `host:port` with a non-empty host and a port number.
pub fn validate_addr(addr: &str) -> Result<()> {
    if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return Err(Error::invalid(format!(
            "address must be 1..={MAX_ADDR_LEN} bytes, got {}",
            addr.len()
        )));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid(format!("address {addr:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !host_ok {
        return Err(Error::invalid(format!("address {addr:?} has a bad host")));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(Error::invalid(format!("address {addr:?} has a bad port"))),
    }
}

/// A node reference sent by a client or peer; its id must match its address.
pub fn node_from_pb(node: Option<pb::NodeRef>, what: &str) -> Result<NodeRef> {
    let node = node.ok_or_else(|| Error::invalid(format!("{what} is missing")))?;
    validate_addr(&node.addr)?;
    let id = Id::from_slice(&node.id).map_err(|e| e.about(what))?;
    let expected = NodeRef::from_addr(node.addr);
    if expected.id != id {
        return Err(Error::invalid(format!(
            "{what}: id {} is not SHA-1 of {:?}",
            id.short(),
            expected.addr
        )));
    }
    Ok(expected)
}

pub fn nodes_from_pb(nodes: Vec<pb::NodeRef>, what: &str) -> Result<Vec<NodeRef>> {
    nodes
        .into_iter()
        .map(|n| node_from_pb(Some(n), what))
        .collect()
}

pub fn id_from_pb(bytes: &[u8], what: &str) -> Result<Id> {
    Id::from_slice(bytes).map_err(|e| e.about(what))
}

pub fn route_to_pb(route: Route) -> pb::FindStepResponse {
    match route {
        Route::Owner(owner) => pb::FindStepResponse {
            owner: Some(node_to_pb(&owner)),
            next: Vec::new(),
        },
        Route::Forward(next) => pb::FindStepResponse {
            owner: None,
            next: nodes_to_pb(&next),
        },
    }
}

pub fn route_from_pb(resp: pb::FindStepResponse) -> Result<Route> {
    match resp.owner {
        Some(owner) => Ok(Route::Owner(node_from_pb(Some(owner), "owner")?)),
        None if resp.next.is_empty() => {
            Err(Error::invalid("a step names no owner and no next hop"))
        }
        None => Ok(Route::Forward(nodes_from_pb(resp.next, "next hop")?)),
    }
}

/// A chunk's bytes as the pieces of a stream, each at most
/// [`crate::PIECE_BYTES`]: slices of `data`, not copies. An empty chunk is
/// no pieces.
pub fn pieces(data: &bytes::Bytes) -> impl Iterator<Item = bytes::Bytes> + '_ {
    (0..data.len())
        .step_by(crate::PIECE_BYTES)
        .map(move |at| data.slice(at..(at + crate::PIECE_BYTES).min(data.len())))
}

pub fn manifest_to_pb(m: &Manifest) -> pb::Manifest {
    let [sha256, blake3, blake3_chunks] = checksum_to_pb(&m.checksum);
    pb::Manifest {
        name: m.name.clone(),
        size: m.size,
        chunk_size: m.chunk_size,
        chunks: m.chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
        sha256,
        blake3,
        blake3_chunks,
        version: m.version,
        deleted: m.deleted,
        modified_ms: m.modified_ms,
        inline: m.inline.clone(),
    }
}

/// The algorithms of a checksum's three wire fields, in their order.
const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Sha256,
    Algorithm::Blake3,
    Algorithm::Blake3Chunks,
];

/// A checksum as the wire's three fields, `[sha256, blake3, blake3_chunks]`:
/// the one of its algorithm holds the 32 bytes, the others are empty.
pub fn checksum_to_pb(c: &Checksum) -> [Vec<u8>; 3] {
    let mut fields: [Vec<u8>; 3] = Default::default();
    for (field, algorithm) in fields.iter_mut().zip(ALGORITHMS) {
        if c.algorithm() == algorithm {
            *field = c.bytes().to_vec();
        }
    }
    fields
}

/// The checksum of a manifest or stamp from its three wire fields
/// (`[sha256, blake3, blake3_chunks]`): exactly one holds 32 bytes, the
/// others nothing.
pub fn checksum_from_pb(fields: [&[u8]; 3]) -> Result<Checksum> {
    let mut set = (0..3).filter(|&at| !fields[at].is_empty());
    let (Some(at), None) = (set.next(), set.next()) else {
        return Err(Error::invalid(if fields.iter().all(|f| f.is_empty()) {
            "a checksum is missing: sha256, blake3 and blake3_chunks are empty"
        } else {
            "two checksums: exactly one of sha256, blake3 and blake3_chunks may be set"
        }));
    };
    let bytes: [u8; 32] = fields[at].try_into().map_err(|_| {
        Error::invalid(format!(
            "{} is 32 bytes, got {}",
            ALGORITHMS[at].name(),
            fields[at].len()
        ))
    })?;
    Ok(Checksum::new(ALGORITHMS[at], bytes))
}

/// A manifest from the wire, checked for shape (see `Manifest::validate`)
/// and for a chunk count one message can carry ([`check_manifest_fits`]).
pub fn manifest_from_pb(m: pb::Manifest) -> Result<Manifest> {
    let checksum = checksum_from_pb([&m.sha256, &m.blake3, &m.blake3_chunks])?;
    let chunks = m
        .chunks
        .iter()
        .map(|c| id_from_pb(c, "chunk key"))
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest {
        name: m.name,
        size: m.size,
        chunk_size: m.chunk_size,
        chunks,
        checksum,
        version: m.version,
        deleted: m.deleted,
        modified_ms: m.modified_ms,
        inline: m.inline,
    };
    manifest.validate()?;
    // Validated: it names exactly the chunks its size and chunk size need.
    check_manifest_fits(
        &manifest.name,
        manifest.size,
        u64::from(manifest.chunk_size),
    )?;
    Ok(manifest)
}

/// A manifest stamp from a key listing.
pub fn stamp_from_pb(m: &pb::KeyVersion) -> Result<Stamp> {
    Ok(Stamp {
        version: m.version,
        deleted: m.deleted,
        checksum: checksum_from_pb([&m.sha256, &m.blake3, &m.blake3_chunks])?,
    })
}

/// Events as a node sends them. An unknown kind is refused: a reader that
/// does not know a kind cannot describe it honestly.
pub fn events_to_pb(batch: EventBatch) -> pb::EventsResponse {
    pb::EventsResponse {
        events: batch
            .events
            .into_iter()
            .map(|e| pb::Event {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.kind.as_str().to_string(),
                peer: e.peer.unwrap_or_default(),
                keys: e.keys,
                bytes: e.bytes,
                detail: e.detail,
            })
            .collect(),
        next: batch.next,
        missed: batch.missed,
    }
}

pub fn events_from_pb(resp: pb::EventsResponse) -> Result<EventBatch> {
    let mut events = Vec::with_capacity(resp.events.len());
    for e in resp.events {
        let kind = EventKind::parse(&e.kind)
            .ok_or_else(|| Error::invalid(format!("unknown event kind {:?}", e.kind)))?;
        if !e.peer.is_empty() {
            validate_addr(&e.peer).map_err(|err| err.about("event peer"))?;
        }
        events.push(Event {
            seq: e.seq,
            at_ms: e.at_ms,
            kind,
            peer: (!e.peer.is_empty()).then_some(e.peer),
            keys: e.keys,
            bytes: e.bytes,
            detail: e.detail,
        });
    }
    Ok(EventBatch {
        events,
        next: resp.next,
        missed: resp.missed,
    })
}

pub fn handoff_to_pb(r: &HandoffReport) -> pb::HandoffReport {
    pb::HandoffReport {
        keys: r.keys,
        bytes: r.bytes,
        unconfirmed: r.unconfirmed,
        rounds: r.rounds,
        elapsed_ms: r.elapsed_ms,
    }
}

pub fn handoff_from_pb(r: &pb::HandoffReport) -> HandoffReport {
    HandoffReport {
        keys: r.keys,
        bytes: r.bytes,
        unconfirmed: r.unconfirmed,
        rounds: r.rounds,
        elapsed_ms: r.elapsed_ms,
    }
}

/// Re-labels an input error found in a peer's answer as that peer's fault.
pub fn blame(peer: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::InvalidArgument(reason) => Error::BadReply {
            peer: peer.to_string(),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_is_exactly_one_field_of_32_bytes() {
        for c in [
            Checksum::Sha256([1; 32]),
            Checksum::Blake3([2; 32]),
            Checksum::Blake3Chunks([3; 32]),
        ] {
            let fields = checksum_to_pb(&c);
            assert_eq!(fields.iter().filter(|f| !f.is_empty()).count(), 1);
            let [a, b, t] = &fields;
            assert_eq!(checksum_from_pb([a, b, t]).unwrap(), c);
        }
        let cases: [([&[u8]; 3], &str); 6] = [
            ([&[], &[], &[]], "missing"),
            ([&[1; 32], &[2; 32], &[]], "two checksums"),
            ([&[], &[2; 32], &[3; 32]], "two checksums"),
            ([&[1; 31], &[], &[]], "sha256 is 32 bytes, got 31"),
            ([&[], &[2; 33], &[]], "blake3 is 32 bytes, got 33"),
            ([&[], &[], &[3; 1]], "blake3_chunks is 32 bytes, got 1"),
        ];
        for (fields, want) in cases {
            let err = checksum_from_pb(fields).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:5057",
            "ip-10-0-0-1.ec2.internal:5057",
            "[::1]:80",
            "a:1",
        ] {
            assert!(validate_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":5057",
            "host:0",
            "host:70000",
            "ho st:1",
            "h:x",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_id_must_match_address() {
        let good = NodeRef::from_addr("127.0.0.1:5057");
        assert_eq!(node_from_pb(Some(node_to_pb(&good)), "n").unwrap(), good);
        let mut forged = node_to_pb(&good);
        forged.addr = "127.0.0.1:5058".into();
        assert!(node_from_pb(Some(forged), "n").is_err());
        let mut short = node_to_pb(&good);
        short.id.pop();
        assert!(matches!(
            node_from_pb(Some(short), "n"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(node_from_pb(None, "n").is_err());
    }

    #[test]
    fn the_largest_manifest_fits_one_message_and_one_chunk_more_is_refused() {
        use prost::Message;

        let chunk_size = crate::MIN_CHUNK_BYTES as u32;
        let n = crate::store::MAX_MANIFEST_CHUNKS;
        // Every other field as large as it can be.
        let mut m = Manifest {
            name: "n".repeat(crate::store::MAX_NAME_BYTES),
            size: n as u64 * u64::from(chunk_size),
            chunk_size,
            chunks: (0..n as u64).map(|i| Id::hash(&i.to_be_bytes())).collect(),
            checksum: crate::store::Checksum::Blake3([0xff; 32]),
            version: u64::MAX,
            deleted: false,
            modified_ms: u64::MAX,
            inline: Vec::new(),
        };
        let request = pb::PutManifestRequest {
            manifest: Some(manifest_to_pb(&m)),
            copies: u32::MAX,
            replica: true,
        };
        assert!(request.encoded_len() <= crate::MAX_MESSAGE_BYTES);
        let answer = pb::GetManifestResponse {
            manifest: Some(manifest_to_pb(&m)),
            leaving: false,
        };
        assert!(answer.encoded_len() <= crate::MAX_MESSAGE_BYTES);
        assert!(manifest_from_pb(manifest_to_pb(&m)).is_ok());

        m.size += 1;
        m.chunks.push(Id::hash(b"one more"));
        match manifest_from_pb(manifest_to_pb(&m)) {
            Err(Error::InvalidArgument(reason)) => {
                assert!(
                    reason.contains("use chunks of at least 4097 bytes"),
                    "{reason}"
                )
            }
            other => panic!("one chunk over the cap: {other:?}"),
        }
    }

    #[test]
    fn empty_step_is_rejected() {
        let empty = pb::FindStepResponse {
            owner: None,
            next: vec![],
        };
        assert!(route_from_pb(empty).is_err());
    }
}
