//! Protobuf messages from clients and peers, through [`crate::wire`]'s
//! conversions to domain types.
//!
//! Each input is one message, built near-valid (ids that are SHA-1 of their
//! addresses, chunk lists that fit their sizes), encoded, damaged by
//! [`super::mutate`], and decoded with prost, as a server or a client would
//! receive it.

use arbtest::arbitrary::{self, Unstructured};
use chord_proto::pb;
use prost::Message;

use super::Outcome;
use crate::chord::{Id, NodeRef};
use crate::error::Error;
use crate::events::EventKind;
use crate::peer::info_from_pb;
use crate::store::Manifest;
use crate::wire::{
    checksum_to_pb, events_from_pb, events_to_pb, id_from_pb, manifest_from_pb, manifest_to_pb,
    node_from_pb, node_to_pb, route_from_pb, route_to_pb, stamp_from_pb, validate_addr,
};

pub(super) fn run() {
    super::run("wire", 8192, |u| match u.int_in_range(0..=6)? {
        0 => {
            let msg = node_ref(u)?;
            check_with(u, &msg, |m: pb::NodeRef| {
                check_node(node_from_pb(Some(m), "n"))
            })
        }
        1 => {
            let msg = pb::FindStepResponse {
                owner: u.ratio(1, 2)?.then(|| node_ref(u)).transpose()?,
                next: (0..u.int_in_range(0..=4)?)
                    .map(|_| node_ref(u))
                    .collect::<arbitrary::Result<_>>()?,
            };
            check_with(u, &msg, check_route)
        }
        2 => {
            let msg = manifest(u)?;
            check_with(u, &msg, check_manifest)
        }
        3 => {
            let [sha256, blake3, blake3_chunks] = checksum(u)?;
            let msg = pb::KeyVersion {
                key: id_bytes(u, "k")?,
                version: u.arbitrary()?,
                deleted: u.arbitrary()?,
                sha256,
                blake3,
                blake3_chunks,
            };
            check_with(u, &msg, |m: pb::KeyVersion| match stamp_from_pb(&m) {
                Ok(stamp) => {
                    assert_eq!(
                        checksum_to_pb(&stamp.checksum),
                        [m.sha256, m.blake3, m.blake3_chunks]
                    );
                    Outcome::Accepted
                }
                Err(e) => refused(&e),
            })
        }
        4 => {
            let msg = events(u)?;
            check_with(u, &msg, check_events)
        }
        5 => {
            let msg = pb::KeyList {
                keys: (0..u.int_in_range(0..=8)?)
                    .map(|_| id_bytes(u, "k"))
                    .collect::<arbitrary::Result<_>>()?,
            };
            check_with(u, &msg, |m: pb::KeyList| {
                let ids: Result<Vec<Id>, _> = m.keys.iter().map(|k| id_from_pb(k, "k")).collect();
                match ids {
                    Ok(ids) => {
                        for (id, bytes) in ids.iter().zip(&m.keys) {
                            assert_eq!(id.as_bytes().as_slice(), bytes.as_slice());
                        }
                        Outcome::Accepted
                    }
                    Err(e) => refused(&e),
                }
            })
        }
        _ => {
            let msg = pb::NodeInfo {
                node: Some(node_ref(u)?),
                predecessor: u.ratio(1, 2)?.then(|| node_ref(u)).transpose()?,
                successors: (0..u.int_in_range(0..=4)?)
                    .map(|_| node_ref(u))
                    .collect::<arbitrary::Result<_>>()?,
                uptime_secs: u.arbitrary()?,
                replicas: u.arbitrary()?,
                state: u.int_in_range(-1..=4)?,
                alive_since_ms: u.arbitrary()?,
            };
            check_with(u, &msg, |m: pb::NodeInfo| match info_from_pb(m) {
                Ok(info) => {
                    let nodes = std::iter::once(&info.node)
                        .chain(&info.predecessor)
                        .chain(&info.successors);
                    for n in nodes {
                        check_node(Ok(n.clone()));
                    }
                    Outcome::Accepted
                }
                Err(e) => refused(&e),
            })
        }
    });
}

/// Encodes `msg`, damages the bytes, decodes them as `M` and runs `check`
/// on what decodes. Bytes prost refuses are refused input, cleanly.
fn check_with<M: Message + Default>(
    u: &mut Unstructured<'_>,
    msg: &M,
    check: impl FnOnce(M) -> Outcome,
) -> arbitrary::Result<Outcome> {
    let mut bytes = msg.encode_to_vec();
    super::mutate(u, &mut bytes, TOKENS)?;
    Ok(match M::decode(bytes.as_slice()) {
        Ok(decoded) => check(decoded),
        Err(_) => Outcome::Refused,
    })
}

/// Protobuf pieces worth splicing in: field tags of each wire type, long
/// and overlong varints, and a length prefix that claims more than is there.
const TOKENS: &[&[u8]] = &[
    &[0x0a],
    &[0x12],
    &[0x1a],
    &[0x08],
    &[0x10],
    &[0x0a, 0x14],
    &[0x12, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
    &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
];

/// An address: mostly one a node could advertise, sometimes one that
/// breaks a rule of [`validate_addr`].
fn addr(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let host = *u.choose(&[
        "127.0.0.1",
        "10.0.0.7",
        "ip-10-0-0-1.ec2.internal",
        "[::1]",
        "a",
        "",
        "ho st",
        "h\u{e9}",
        "host:1",
    ])?;
    let port = *u.choose(&["5057", "1", "65535", "0", "65536", "", "x", "-1", "05057"])?;
    Ok(match u.int_in_range(0..=5)? {
        0 => super::text(u, &[host, ":", port, ".", "[", "]"], 5)?,
        1 => host.to_string(),
        _ => format!("{host}:{port}"),
    })
}

/// Id bytes: SHA-1 of `of` (what a valid reference carries), random
/// 20 bytes, or a wrong length.
fn id_bytes(u: &mut Unstructured<'_>, of: &str) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=5)? {
        0 => u.bytes(20.min(u.len()))?.to_vec(),
        1 => {
            let len = u.int_in_range(0..=41)?.min(u.len());
            u.bytes(len)?.to_vec()
        }
        _ => Id::hash(of.as_bytes()).as_bytes().to_vec(),
    })
}

fn node_ref(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::NodeRef> {
    let addr = addr(u)?;
    Ok(pb::NodeRef {
        id: id_bytes(u, &addr)?,
        addr,
    })
}

/// The wire's three checksum fields, `[sha256, blake3, blake3_chunks]`:
/// mostly one of 32 bytes and the others empty, as a manifest carries
/// them; now and then another length in any of them.
fn checksum(u: &mut Unstructured<'_>) -> arbitrary::Result<[Vec<u8>; 3]> {
    let set = *u.choose(&[0, 1, 2, 2])?;
    let mut field = |at: usize| -> arbitrary::Result<Vec<u8>> {
        let len = match (at == set, u.ratio(7, 8)?) {
            (true, true) => 32,
            (false, true) => 0,
            _ => u.int_in_range(0..=40)?,
        };
        Ok(u.bytes(len.min(u.len()))?.to_vec())
    };
    Ok([field(0)?, field(1)?, field(2)?])
}

/// A manifest whose chunk list mostly fits its size, for a file, an empty
/// file or a tombstone, at chunk sizes that include the limits.
pub(super) fn manifest(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::Manifest> {
    let name = super::name(u)?;
    let chunk_size: u32 = *u.choose(&[
        0,
        1,
        4096,
        1 << 20,
        crate::MAX_CHUNK_BYTES as u32,
        crate::MAX_CHUNK_BYTES as u32 + 1,
        u32::MAX,
    ])?;
    let chunks: usize = u.int_in_range(0..=8)?;
    let size = match u.int_in_range(0..=3)? {
        // Consistent with the chunk count.
        0 | 1 if chunks > 0 && chunk_size > 0 => {
            let whole = (chunks as u64 - 1) * u64::from(chunk_size);
            whole + u.int_in_range(1..=u64::from(chunk_size))?
        }
        2 => 0,
        _ => u.arbitrary()?,
    };
    let deleted = u.ratio(1, 5)?;
    let [sha256, blake3, blake3_chunks] = checksum(u)?;
    Ok(pb::Manifest {
        name: name.clone(),
        size: if deleted && u.ratio(3, 4)? { 0 } else { size },
        chunk_size,
        chunks: if deleted && u.ratio(3, 4)? {
            Vec::new()
        } else {
            (0..chunks)
                .map(|i| id_bytes(u, &format!("{name}-{i}")))
                .collect::<arbitrary::Result<_>>()?
        },
        sha256,
        blake3,
        blake3_chunks,
        version: u.arbitrary()?,
        deleted,
        modified_ms: u.arbitrary()?,
        // Now and then bytes held inline, mostly not matching the rest.
        inline: if u.ratio(1, 6)? {
            let len = u.int_in_range(0..=64)?;
            u.bytes(len)?.to_vec()
        } else {
            Vec::new()
        },
    })
}

fn events(u: &mut Unstructured<'_>) -> arbitrary::Result<pb::EventsResponse> {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    let events = (0..u.int_in_range(0..=4)?)
        .map(|_| {
            Ok(pb::Event {
                seq: u.arbitrary()?,
                at_ms: u.arbitrary()?,
                kind: if u.ratio(7, 8)? {
                    u.choose(&kinds)?.to_string()
                } else {
                    super::text(u, &kinds, 2)?
                },
                peer: if u.ratio(1, 3)? {
                    String::new()
                } else {
                    addr(u)?
                },
                keys: u.arbitrary()?,
                bytes: u.arbitrary()?,
                detail: super::text(u, super::NAME_TOKENS, 4)?,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    Ok(pb::EventsResponse {
        events,
        next: u.arbitrary()?,
        missed: u.arbitrary()?,
    })
}

fn refused(e: &Error) -> Outcome {
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    Outcome::Refused
}

/// An accepted node reference has a valid address, the SHA-1 of it for an
/// id, and converts back to itself.
fn check_node(n: crate::Result<NodeRef>) -> Outcome {
    match n {
        Ok(n) => {
            assert!(validate_addr(&n.addr).is_ok(), "{n:?}");
            assert_eq!(n.id, Id::hash(n.addr.as_bytes()), "{n:?}");
            assert_eq!(node_from_pb(Some(node_to_pb(&n)), "n").ok(), Some(n));
            Outcome::Accepted
        }
        Err(e) => refused(&e),
    }
}

fn check_route(m: pb::FindStepResponse) -> Outcome {
    match route_from_pb(m) {
        Ok(route) => {
            match &route {
                crate::chord::Route::Owner(n) => {
                    check_node(Ok(n.clone()));
                }
                crate::chord::Route::Forward(next) => {
                    assert!(!next.is_empty(), "a step with nowhere to go");
                    for n in next {
                        check_node(Ok(n.clone()));
                    }
                }
            }
            assert_eq!(route_from_pb(route_to_pb(route.clone())).ok(), Some(route));
            Outcome::Accepted
        }
        Err(e) => refused(&e),
    }
}

/// An accepted manifest is valid, converts back to itself, and is one the
/// store would read back from its own record.
fn check_manifest(m: pb::Manifest) -> Outcome {
    match manifest_from_pb(m) {
        Ok(m) => {
            assert!(m.validate().is_ok(), "{m:?}");
            assert_eq!(manifest_from_pb(manifest_to_pb(&m)).as_ref().ok(), Some(&m));
            let stored = m.to_stored().expect("a manifest encodes");
            assert_eq!(Manifest::from_stored(&stored, &m.key()).ok(), Some(m));
            Outcome::Accepted
        }
        Err(e) => refused(&e),
    }
}

/// Accepted events have known kinds and valid peers, and convert back to
/// themselves.
fn check_events(m: pb::EventsResponse) -> Outcome {
    match events_from_pb(m) {
        Ok(batch) => {
            for e in &batch.events {
                assert_eq!(EventKind::parse(e.kind.as_str()), Some(e.kind));
                if let Some(peer) = &e.peer {
                    assert!(validate_addr(peer).is_ok(), "{e:?}");
                }
            }
            let again = events_from_pb(events_to_pb(batch.clone())).expect("converts back");
            assert_eq!(again, batch);
            Outcome::Accepted
        }
        Err(e) => refused(&e),
    }
}
