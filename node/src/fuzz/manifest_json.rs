//! What the store reads back from its data dir: manifests (a manifest log
//! record, JSON with inline bytes raw after it or in hex, or a file from
//! before the log, through [`Manifest::from_stored`], as
//! `Store::get_manifest` and the replay of the log at open read them) and `alive.json`.
//!
//! A data dir is the node's own, but a disk can be damaged, a file edited
//! by hand or copied from elsewhere; none of that may crash the node.

use arbtest::arbitrary::{self, Unstructured};

use super::Outcome;
use crate::chord::Id;
use crate::error::Error;
use crate::store::{raw_inline_record, Algorithm, AliveClock, Checksum, Manifest};
use crate::wire::{checksum_to_pb, manifest_from_pb, manifest_to_pb};

pub(super) fn run() {
    super::run("manifest_json", 16384, |u| {
        if u.ratio(1, 8)? {
            return alive_clock(u);
        }
        // Mostly a valid manifest (what the store writes), else one that
        // breaks a rule: a wrong length of hash, a chunk list that does not
        // fit, a name the rules refuse.
        let mut m = super::wire::manifest(u)?;
        // Now and then a small file held inline whose bytes match: the
        // wire's generator rarely makes one.
        if u.ratio(1, 4)? {
            let len = u.int_in_range(1..=256)?;
            m.inline = u.bytes(len)?.to_vec();
            (m.size, m.chunk_size, m.chunks, m.deleted) = (len as u64, 0, Vec::new(), false);
            // By the algorithm of new files or the one before it.
            let algorithm = *u.choose(&[Algorithm::Blake3Chunks, Algorithm::Blake3])?;
            [m.sha256, m.blake3, m.blake3_chunks] =
                checksum_to_pb(&Checksum::of(algorithm, &m.inline));
        }
        let own_key = Id::hash(m.name.as_bytes());
        let mut json = serde_json::json!({
            "name": m.name,
            "size": m.size,
            "chunk_size": m.chunk_size,
            "chunks": m.chunks.iter().map(const_hex::encode).collect::<Vec<_>>(),
            "version": m.version,
            "deleted": m.deleted,
            "modified_ms": m.modified_ms,
        });
        // The checksum under the name of each field the wire set (one, as
        // the store writes it, or now and then none or both).
        for (field, bytes) in [
            ("sha256", &m.sha256),
            ("blake3", &m.blake3),
            ("blake3_chunks", &m.blake3_chunks),
        ] {
            if !bytes.is_empty() {
                json[field] = const_hex::encode(bytes).into();
            }
        }
        let raw_inline = !m.inline.is_empty() && u.ratio(3, 4)?;
        if !m.inline.is_empty() && !raw_inline {
            // As written before the raw form.
            json["inline"] = const_hex::encode(&m.inline).into();
        }
        let mut bytes = serde_json::to_vec(&json).expect("JSON encodes");
        if u.ratio(1, 4)? {
            bytes = pretty(&bytes);
        }
        if raw_inline {
            bytes = raw_inline_record(&bytes, &m.inline).expect("a small manifest");
        }
        super::mutate(u, &mut bytes, TOKENS)?;
        let key = if u.ratio(7, 8)? {
            own_key
        } else {
            Id::from_array(u.arbitrary()?)
        };
        Ok(check(&bytes, &key))
    });
}

/// JSON pieces worth splicing in: structure, every field name, values at
/// and past the limits of their types, escapes that decode to control
/// characters or lone surrogates, and deep nesting.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e400",
    b"18446744073709551615",
    b"18446744073709551616",
    b"4294967296",
    b"\"name\"",
    b"\"size\"",
    b"\"chunk_size\"",
    b"\"chunks\"",
    b"\"sha256\"",
    b"\"blake3\"",
    b"\"blake3_chunks\"",
    b"\"version\"",
    b"\"deleted\"",
    b"\"modified_ms\"",
    b"\"inline\"",
    b"\x01\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\\u0000",
    b"\\u002f",
    b"\\ud800",
    b"\\\"",
    b"0123456789abcdef",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

/// The same JSON, indented, so edits land among whitespace too.
fn pretty(json: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_vec_pretty(&v))
        .unwrap_or_else(|_| json.to_vec())
}

/// Bytes under `key` either decode to a valid manifest of that key that
/// re-encodes to itself (on disk and on the wire), or are `Corrupt`.
fn check(bytes: &[u8], key: &Id) -> Outcome {
    match Manifest::from_stored(bytes, key) {
        Ok(m) => {
            assert_eq!(m.key(), *key, "{m:?}");
            assert!(m.validate().is_ok(), "{m:?}");
            let again = m.to_stored().expect("a manifest encodes");
            assert_eq!(Manifest::from_stored(&again, key).ok().as_ref(), Some(&m));
            assert_eq!(manifest_from_pb(manifest_to_pb(&m)).ok().as_ref(), Some(&m));
            Outcome::Accepted
        }
        Err(e) => {
            assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
            Outcome::Refused
        }
    }
}

/// `alive.json`: whatever parses re-encodes to itself.
fn alive_clock(u: &mut Unstructured<'_>) -> arbitrary::Result<Outcome> {
    let clock = AliveClock {
        since_ms: u.arbitrary()?,
        last_ms: u.arbitrary()?,
        away_ms: u.arbitrary()?,
    };
    let mut bytes = serde_json::to_vec(&clock).expect("a clock encodes");
    super::mutate(u, &mut bytes, TOKENS)?;
    Ok(match serde_json::from_slice::<AliveClock>(&bytes) {
        Ok(clock) => {
            let again = serde_json::to_vec(&clock).expect("a clock encodes");
            assert_eq!(
                serde_json::from_slice::<AliveClock>(&again).ok(),
                Some(clock)
            );
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    })
}
