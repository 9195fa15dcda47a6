//! The manifest: what a stored file is made of, and which of two versions wins.
//!
//! A manifest names a file, lists its chunk keys in order and carries the
//! whole file's [`Checksum`] and a version. It is stored under `SHA-1(name)` and is
//! written after all its chunks, so a file is visible only once complete. A
//! file of at most [`MAX_INLINE_BYTES`] that fits in one chunk is held in
//! its manifest instead (`inline`, no chunks): one durable write and one
//! call instead of a chunk's and a manifest's. A
//! deletion is a *tombstone*: a manifest with `deleted = true` and no chunks,
//! which replicates and supersedes like any other version so that a deleted
//! file cannot be resurrected by a replica that missed the delete.
//!
//! Invariant: [`Manifest::supersedes`] is a strict total order on distinct
//! manifests, so every replica that sees the same set of versions keeps the
//! same one whatever the order they arrived in. Pure: no I/O.

use std::cmp::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::checksum::Checksum;
use super::name::validate_name;
use crate::chord::Id;
use crate::error::{Error, Result};

/// Bytes one chunk key adds to an encoded `chord.v1.Manifest`: the field's
/// tag, a length byte and the 20-byte key.
pub const CHUNK_KEY_WIRE_BYTES: usize = 22;

/// Room kept in a message for everything a manifest travels with besides
/// its chunk keys: the name (at most 1 KiB), numbers, hash, and the fields
/// of the request or answer around it. They take about 1.2 KiB; the rest is
/// margin.
const MANIFEST_FIELDS_BYTES: usize = 64 * 1024;

/// Most chunks one manifest may name. A manifest is written and read in one
/// gRPC message of at most [`crate::MAX_MESSAGE_BYTES`], so this is what
/// fits: about 187k chunks, a file of up to 733 GiB in the default 4 MiB
/// chunks, or 733 MiB in the smallest (4 KiB).
pub const MAX_MANIFEST_CHUNKS: usize =
    (crate::MAX_MESSAGE_BYTES - MANIFEST_FIELDS_BYTES) / CHUNK_KEY_WIRE_BYTES;

/// Refuses a file of `size` bytes that in chunks of `chunk_size` bytes
/// would need more than [`MAX_MANIFEST_CHUNKS`] chunks: its manifest could
/// never be sent. An upload checks this before it sends a byte (and again
/// as a stream of unknown length grows); a node checks every manifest it
/// is sent.
pub fn check_manifest_fits(name: &str, size: u64, chunk_size: u64) -> Result<()> {
    let chunks = size.div_ceil(chunk_size.max(1));
    let most = MAX_MANIFEST_CHUNKS as u64;
    if chunks <= most {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{name:?}: {size} bytes in chunks of {chunk_size} bytes make {chunks} chunks, more than \
         the {most} one manifest can name (it travels in one {} MiB message); use chunks of at \
         least {} bytes",
        crate::MAX_MESSAGE_BYTES >> 20,
        size.div_ceil(most).max(crate::MIN_CHUNK_BYTES as u64)
    )))
}

/// Largest file whose bytes its manifest holds instead of chunks. Small
/// files are where the calls and fsyncs per file, not bytes, set the
/// speed: as a chunk and a manifest, a 4 KiB file made about nine calls
/// and two durable writes (docs/PERFORMANCE.md). 16 KiB keeps a manifest
/// record and its messages small.
pub const MAX_INLINE_BYTES: usize = 16 * 1024;

/// First byte of a stored manifest that holds its file's bytes raw after
/// its JSON (see [`Manifest::to_stored`]). JSON text never starts with it,
/// so a record says which of the two forms it is.
const RAW_INLINE: u8 = 0x01;

/// Bytes of the JSON's length after [`RAW_INLINE`].
const RAW_INLINE_LEN_BYTES: usize = 4;

/// A stored manifest in the raw form: [`RAW_INLINE`], the length of
/// `json`, `json`, then the file's `bytes`. `None` if `json` is too long
/// for its length field.
pub(crate) fn raw_inline_record(json: &[u8], bytes: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(json.len()).ok()?;
    let mut out = Vec::with_capacity(1 + RAW_INLINE_LEN_BYTES + json.len() + bytes.len());
    out.push(RAW_INLINE);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(bytes);
    Some(out)
}

/// One version of a stored file (or of its deletion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The user's file name; its SHA-1 is the manifest's key.
    pub name: String,
    /// File length in bytes.
    pub size: u64,
    /// Length of every chunk but the last, which holds the remainder.
    pub chunk_size: u32,
    /// Chunk keys (SHA-1 of each chunk's BLAKE3 hash) in file order; hex
    /// on disk.
    #[serde(with = "hex_ids")]
    pub chunks: Vec<Id>,
    /// The whole file's hash: on disk one field named by its algorithm
    /// (`"blake3_chunks"`, or `"blake3"` and `"sha256"` in manifests
    /// written before it) with 64 hex digits. [`Checksum::NONE`] in a
    /// tombstone.
    #[serde(flatten)]
    pub checksum: Checksum,
    /// Larger versions supersede smaller ones.
    pub version: u64,
    /// A tombstone: the file was deleted at this version.
    pub deleted: bool,
    /// Wall-clock time of the write, milliseconds since the Unix epoch; shown
    /// to users and used only as a late tie-break, never to order versions.
    pub modified_ms: u64,
    /// The file's bytes, for a file of at most [`MAX_INLINE_BYTES`] stored
    /// without chunks; hex in JSON, absent when empty. The manifest log
    /// keeps them raw after the JSON ([`Manifest::to_stored`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_bytes")]
    pub inline: Vec<u8>,
}

impl Manifest {
    /// The manifest's place on the ring: SHA-1 of the name's bytes.
    pub fn key(&self) -> Id {
        Id::hash(self.name.as_bytes())
    }

    /// The record of `name` being deleted at `version`.
    pub fn tombstone(name: impl Into<String>, version: u64, modified_ms: u64) -> Manifest {
        Manifest {
            name: name.into(),
            size: 0,
            chunk_size: 0,
            chunks: Vec::new(),
            checksum: Checksum::NONE,
            version,
            deleted: true,
            modified_ms,
            inline: Vec::new(),
        }
    }

    /// The manifest as a node stores it: its JSON, or, for a file held
    /// inline, `RAW_INLINE | JSON length (u32, little-endian) | JSON
    /// without the bytes | the bytes`. In JSON the bytes would be hex,
    /// twice their size: a 4 KiB file took 8,455 bytes of log, now 4,352
    /// (docs/PERFORMANCE.md, change 53).
    pub fn to_stored(&self) -> Result<Vec<u8>> {
        let encode = |m: &Manifest| {
            serde_json::to_vec(m).map_err(|e| {
                Error::io(
                    format!("encoding the manifest of {:?}", self.name),
                    std::io::Error::other(e),
                )
            })
        };
        if self.inline.is_empty() {
            return encode(self);
        }
        // Everything but the bytes (a valid inline manifest has no chunks).
        let rest = Manifest {
            name: self.name.clone(),
            chunks: self.chunks.clone(),
            inline: Vec::new(),
            ..*self
        };
        raw_inline_record(&encode(&rest)?, &self.inline)
            .ok_or_else(|| Error::invalid(format!("the manifest of {:?} is too large", self.name)))
    }

    /// The manifest stored under `key`, decoded from what
    /// [`to_stored`](Manifest::to_stored) wrote, or from JSON alone with
    /// any inline bytes in hex (records and files written before the raw
    /// form, which are read as they are and never rewritten). The bytes
    /// must decode to a manifest of the file whose key is `key`, and it
    /// must be [valid](Manifest::validate). Anything else is
    /// `Error::Corrupt` (the record is damaged or misplaced), never a
    /// panic. What this accepts re-encodes to bytes that decode equal (the
    /// fuzz target `fuzz::manifest_json` holds it to both).
    pub fn from_stored(bytes: &[u8], key: &Id) -> Result<Manifest> {
        let corrupt = |why: &str| Error::Corrupt(format!("manifest {key} {why}"));
        let (json, raw) = match bytes.split_first() {
            Some((&RAW_INLINE, rest)) => {
                let (len, rest) = rest
                    .split_first_chunk::<RAW_INLINE_LEN_BYTES>()
                    .ok_or_else(|| corrupt("is cut short"))?;
                let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
                if len > rest.len() {
                    return Err(corrupt("is cut short"));
                }
                let (json, raw) = rest.split_at(len);
                if raw.is_empty() {
                    return Err(corrupt("is marked as holding bytes but holds none"));
                }
                (json, Some(raw))
            }
            _ => (bytes, None),
        };
        let mut m: Manifest = serde_json::from_slice(json)
            .map_err(|e| Error::Corrupt(format!("manifest {key} does not parse: {e}")))?;
        if let Some(raw) = raw {
            if !m.inline.is_empty() {
                return Err(corrupt("holds its bytes twice, raw and in hex"));
            }
            m.inline = raw.to_vec();
        }
        if m.key() != *key {
            return Err(Error::Corrupt(format!(
                "manifest {key} holds the file {:?}, whose key is {}",
                m.name,
                m.key()
            )));
        }
        m.validate()
            .map_err(|e| Error::Corrupt(format!("manifest {key} is inconsistent: {e}")))?;
        Ok(m)
    }

    /// Checks the manifest is self-consistent: a valid name, and exactly
    /// `ceil(size / chunk_size)` chunks of an acceptable size (none for an
    /// empty file or a tombstone), or bytes held inline that are the file
    /// (`validate_inline`).
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if !self.inline.is_empty() {
            return self.validate_inline();
        }
        if self.deleted {
            if self.size != 0 || !self.chunks.is_empty() {
                return Err(Error::invalid(format!(
                    "tombstone for {:?} has size {} and {} chunks; it must have none",
                    self.name,
                    self.size,
                    self.chunks.len()
                )));
            }
            return Ok(());
        }
        if self.size == 0 {
            if !self.chunks.is_empty() {
                return Err(Error::invalid(format!(
                    "empty file {:?} lists {} chunks",
                    self.name,
                    self.chunks.len()
                )));
            }
            return Ok(());
        }
        if self.chunk_size == 0 {
            return Err(Error::invalid(format!(
                "file {:?} has {} bytes but a chunk size of 0",
                self.name, self.size
            )));
        }
        if self.chunk_size as usize > crate::MAX_CHUNK_BYTES {
            return Err(Error::invalid(format!(
                "file {:?} has chunk size {}, above the limit of {}",
                self.name,
                self.chunk_size,
                crate::MAX_CHUNK_BYTES
            )));
        }
        let expected = self.size.div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != expected {
            return Err(Error::invalid(format!(
                "file {:?} of {} bytes in chunks of {} needs {expected} chunks, lists {}",
                self.name,
                self.size,
                self.chunk_size,
                self.chunks.len()
            )));
        }
        Ok(())
    }

    /// The file's bytes as its one piece, when the manifest holds them
    /// (then it names no chunks); what every reader streams first.
    pub fn inline_piece(&self) -> Option<Bytes> {
        (!self.inline.is_empty()).then(|| Bytes::copy_from_slice(&self.inline))
    }

    /// How many pieces a reader streams: the [`Manifest::inline_piece`],
    /// if any, then one per chunk.
    pub fn piece_count(&self) -> usize {
        self.chunks.len() + usize::from(!self.inline.is_empty())
    }

    /// The rules of a manifest that holds its file's bytes: a live file of
    /// exactly those bytes, at most [`MAX_INLINE_BYTES`], with no chunks,
    /// whose checksum they match (so a manifest that decodes holds the bytes
    /// it was written with, as a chunk that reads back matches its key).
    fn validate_inline(&self) -> Result<()> {
        let len = self.inline.len();
        if self.deleted || !self.chunks.is_empty() || self.chunk_size != 0 {
            return Err(Error::invalid(format!(
                "{:?} holds its bytes inline, so it can be neither a tombstone nor list chunks",
                self.name
            )));
        }
        if len > MAX_INLINE_BYTES || self.size != len as u64 {
            return Err(Error::invalid(format!(
                "{:?} holds {len} bytes inline for a size of {} (at most {MAX_INLINE_BYTES})",
                self.name, self.size
            )));
        }
        if Checksum::of(self.checksum.algorithm(), &self.inline) != self.checksum {
            return Err(Error::invalid(format!(
                "{:?}: the bytes held inline do not match the file's {}",
                self.name,
                self.checksum.label()
            )));
        }
        Ok(())
    }

    /// Whether `self` should replace `other` (two versions of the same file).
    ///
    /// The larger version wins. Equal versions come from concurrent writers
    /// that both read the same old version; any fixed rule makes replicas
    /// converge, and this one prefers, in turn: a tombstone (a delete racing a
    /// write should not be silently undone), the larger checksum, the later
    /// `modified_ms`, then the remaining fields, so that two manifests that
    /// differ at all are always ordered.
    /// The leading part of the supersede order, small enough to list for
    /// every manifest: replicas compare stamps to find what to exchange.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            version: self.version,
            deleted: self.deleted,
            checksum: self.checksum,
        }
    }

    pub fn supersedes(&self, other: &Manifest) -> bool {
        self.rank(other) == Ordering::Greater
    }

    fn rank(&self, other: &Manifest) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.deleted.cmp(&other.deleted))
            .then(self.checksum.cmp(&other.checksum))
            .then(self.modified_ms.cmp(&other.modified_ms))
            .then(self.size.cmp(&other.size))
            .then(self.chunk_size.cmp(&other.chunk_size))
            .then_with(|| self.chunks.cmp(&other.chunks))
            .then_with(|| self.inline.cmp(&other.inline))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// Version, tombstone flag and content hash of a manifest, ordered as
/// [`Manifest::supersedes`] orders manifests (field order matters for the
/// derived `Ord`): a higher stamp always belongs to the winning manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub version: u64,
    pub deleted: bool,
    pub checksum: Checksum,
}

/// `Vec<Id>` as a JSON array of 40-digit hex strings.
mod hex_ids {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::chord::Id;

    pub fn serialize<S: Serializer>(ids: &[Id], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(Id::to_hex))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Id>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| s.parse::<Id>().map_err(D::Error::custom))
            .collect()
    }
}

/// `Vec<u8>` as one hex string. Decoded straight from the JSON's bytes
/// (no copy of the string first): an inline file is most of the bytes of
/// a manifest record written before the raw form.
mod hex_bytes {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&const_hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(HexVisitor)
    }

    struct HexVisitor;

    impl Visitor<'_> for HexVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string of hex digits")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            const_hex::decode(text).map_err(|e| E::custom(format!("inline bytes must be hex: {e}")))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(super) mod tests {
    use super::*;

    /// A valid live manifest of `size` bytes in chunks of `chunk_size`.
    use crate::store::checksum::{Algorithm, NEW_FILES};

    pub(crate) fn live(name: &str, size: u64, chunk_size: u32, version: u64) -> Manifest {
        let n = if size == 0 {
            0
        } else {
            size.div_ceil(u64::from(chunk_size))
        };
        Manifest {
            name: name.to_string(),
            size,
            chunk_size,
            chunks: (0..n).map(|i| Id::hash(&i.to_be_bytes())).collect(),
            checksum: Checksum::Blake3([7; 32]),
            version,
            deleted: false,
            modified_ms: 1_700_000_000_000,
            inline: Vec::new(),
        }
    }

    /// A valid manifest holding `data` inline.
    pub(crate) fn inline(name: &str, data: &[u8]) -> Manifest {
        Manifest {
            name: name.to_string(),
            size: data.len() as u64,
            chunk_size: 0,
            chunks: Vec::new(),
            checksum: Checksum::of(NEW_FILES, data),
            version: 3,
            deleted: false,
            modified_ms: 1_700_000_000_000,
            inline: data.to_vec(),
        }
    }

    #[test]
    fn a_small_file_held_inline_round_trips_and_must_be_consistent() {
        let m = inline("small.txt", b"hello, ring");
        m.validate().unwrap();
        let stored = m.to_stored().unwrap();
        assert!(
            stored.ends_with(b"hello, ring"),
            "inline bytes are stored raw, after the JSON"
        );
        assert_eq!(Manifest::from_stored(&stored, &m.key()).unwrap(), m);
        // A manifest without inline bytes is its JSON alone, without the field.
        let big = live("big", 10, 4, 1);
        let plain = big.to_stored().unwrap();
        assert_eq!(plain, serde_json::to_vec(&big).unwrap());
        assert!(!String::from_utf8_lossy(&plain).contains("inline"));

        let largest = inline("largest", &[7; MAX_INLINE_BYTES]);
        largest.validate().unwrap();
        // What is wrong, and the change that makes it so.
        type Damage = (&'static str, fn(&mut Manifest));
        let broken: [Damage; 6] = [
            ("other bytes", |m| m.inline[0] ^= 1),
            ("a size that differs", |m| m.size += 1),
            ("chunks too", |m| m.chunks.push(Id::hash(b"x"))),
            ("a chunk size", |m| m.chunk_size = 4096),
            ("a tombstone", |m| m.deleted = true),
            ("too many bytes", |m| {
                m.inline = vec![7; MAX_INLINE_BYTES + 1];
                m.size = m.inline.len() as u64;
                m.checksum = Checksum::of(NEW_FILES, &m.inline);
            }),
        ];
        for (what, damage) in broken {
            let mut m = inline("small.txt", b"hello, ring");
            damage(&mut m);
            assert!(m.validate().is_err(), "accepted with {what}");
            // Stored either way, raw or (as before the raw form) in hex.
            for bytes in [m.to_stored().unwrap(), serde_json::to_vec(&m).unwrap()] {
                assert!(
                    matches!(
                        Manifest::from_stored(&bytes, &m.key()),
                        Err(Error::Corrupt(_))
                    ),
                    "decoded with {what}"
                );
            }
        }
    }

    #[test]
    fn inline_bytes_stored_in_hex_before_the_raw_form_still_read() {
        let m = inline("old.txt", &[0xab; 4096]);
        let hex = serde_json::to_vec(&m).unwrap();
        assert!(String::from_utf8_lossy(&hex).contains(&"ab".repeat(4096)));
        assert_eq!(Manifest::from_stored(&hex, &m.key()).unwrap(), m);
        // The raw form is about half the size.
        let raw = m.to_stored().unwrap();
        assert!(
            raw.len() < 4096 + 300 && hex.len() > 2 * 4096,
            "{} / {}",
            raw.len(),
            hex.len()
        );
    }

    #[test]
    fn a_damaged_raw_inline_record_is_corrupt() {
        let m = inline("small.txt", b"hello, ring");
        let key = m.key();
        let good = m.to_stored().unwrap();
        let json_len = good.len() - 1 - RAW_INLINE_LEN_BYTES - b"hello, ring".len();
        let with_len = |len: u32| {
            let mut b = good.clone();
            b[1..1 + RAW_INLINE_LEN_BYTES].copy_from_slice(&len.to_le_bytes());
            b
        };
        let twice = raw_inline_record(&serde_json::to_vec(&m).unwrap(), b"hello, ring").unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let cases: [(&str, Vec<u8>); 7] = [
            ("the tag alone", vec![RAW_INLINE]),
            ("a length cut short", good[..3].to_vec()),
            ("a length past the end", with_len(u32::MAX)),
            ("no bytes after the JSON", good[..good.len() - 11].to_vec()),
            (
                "a length into the bytes",
                with_len(u32::try_from(json_len + 2).unwrap()),
            ),
            ("the bytes in hex as well", twice),
            ("a flipped byte", flipped),
        ];
        for (what, bytes) in cases {
            assert!(
                matches!(Manifest::from_stored(&bytes, &key), Err(Error::Corrupt(_))),
                "decoded with {what}"
            );
        }
        assert_eq!(Manifest::from_stored(&good, &key).unwrap(), m);
    }

    #[test]
    fn a_file_fits_while_its_chunks_fit_one_message() {
        let most = MAX_MANIFEST_CHUNKS as u64;
        let cases = [
            // (size, chunk size, fits)
            (0, 4096, true),
            (most * 4096, 4096, true),
            (most * 4096 + 1, 4096, false),
            (1 << 30, 4096, false),
            (1 << 30, 8192, true),
            (700 << 30, 4 << 20, true),
            (800 << 30, 4 << 20, false),
        ];
        for (size, chunk_size, fits) in cases {
            let got = check_manifest_fits("f", size, chunk_size);
            assert_eq!(got.is_ok(), fits, "{size} in {chunk_size}: {got:?}");
        }
        let err = check_manifest_fits("big.iso", 1 << 30, 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid argument: \"big.iso\": 1073741824 bytes in chunks of 4096 bytes make \
                 262144 chunks, more than the {most} one manifest can name (it travels in one \
                 4 MiB message); use chunks of at least {} bytes",
                (1u64 << 30).div_ceil(most)
            )
        );
        // Chunks below the smallest allowed are advised up to it, not to a
        // size that the chunk size's own check refuses.
        let err = check_manifest_fits("f", 5_000_000, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!("at least {} bytes", crate::MIN_CHUNK_BYTES)),
            "{err}"
        );
    }

    #[test]
    fn key_is_sha1_of_name() {
        let m = live("abc", 0, 0, 1);
        assert_eq!(m.key().to_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn validate_table() {
        let mut too_few = live("f", 10, 4, 1);
        too_few.chunks.pop();
        let mut too_many = live("f", 8, 4, 1);
        too_many.chunks.push(Id::hash(b"extra"));
        let mut zero_chunk_size = live("f", 8, 4, 1);
        zero_chunk_size.chunk_size = 0;
        let mut empty_with_chunks = live("f", 0, 4, 1);
        empty_with_chunks.chunks.push(Id::hash(b"x"));
        let mut fat_tombstone = Manifest::tombstone("f", 2, 0);
        fat_tombstone.chunks.push(Id::hash(b"x"));
        let mut sized_tombstone = Manifest::tombstone("f", 2, 0);
        sized_tombstone.size = 3;
        let mut huge_chunks = live("f", 1, 4, 1);
        huge_chunks.chunk_size = crate::MAX_CHUNK_BYTES as u32 + 1;
        let cases = [
            (live("f", 0, 0, 1), true),
            (live("f", 0, 4, 1), true),
            (live("f", 1, 4, 1), true),
            (live("f", 4, 4, 1), true),
            (live("f", 5, 4, 1), true),
            (live("f", 3 << 20, 1 << 20, 1), true),
            (Manifest::tombstone("f", 2, 0), true),
            (live("", 0, 0, 1), false),
            (live("a/b", 0, 0, 1), false),
            (too_few, false),
            (too_many, false),
            (zero_chunk_size, false),
            (empty_with_chunks, false),
            (fat_tombstone, false),
            (sized_tombstone, false),
            (huge_chunks, false),
        ];
        for (i, (m, ok)) in cases.iter().enumerate() {
            let got = m.validate();
            assert_eq!(got.is_ok(), *ok, "case {i}: {got:?}");
            if let Err(e) = got {
                assert!(matches!(e, Error::InvalidArgument(_)), "case {i}: {e:?}");
            }
        }
    }

    #[test]
    fn newer_version_wins_whatever_else() {
        let old = Manifest::tombstone("f", 1, 99);
        let new = live("f", 5, 4, 2);
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        assert!(!new.supersedes(&new.clone()), "equal is not newer");
    }

    #[test]
    fn equal_versions_break_ties_the_same_way_everywhere() {
        let a = live("f", 5, 4, 3);
        let mut b = a.clone();
        b.checksum = Checksum::Blake3([9; 32]);
        let tomb = Manifest::tombstone("f", 3, 0);
        let mut later = a.clone();
        later.modified_ms += 1;
        let mut other_chunking = a.clone();
        other_chunking.chunk_size = 5;
        other_chunking.chunks.truncate(1);
        // The tombstone beats both writes; the larger checksum beats the smaller.
        assert!(tomb.supersedes(&a) && tomb.supersedes(&b));
        assert!(b.supersedes(&a));
        assert!(later.supersedes(&a));
        // Exactly one of any two distinct manifests wins: replicas converge.
        let all = [a, b, tomb, later, other_chunking];
        for x in &all {
            for y in &all {
                if x == y {
                    assert!(!x.supersedes(y));
                } else {
                    assert!(x.supersedes(y) ^ y.supersedes(x), "{x:?} vs {y:?}");
                }
            }
        }
    }

    #[test]
    fn json_uses_hex_and_round_trips() {
        let m = live("f", 9, 4, 1);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(&m.chunks[0].to_hex()), "{text}");
        assert!(text.contains(&"07".repeat(32)), "{text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_manifest_written_with_sha256_still_reads_and_checks() {
        // As manifests were written before BLAKE3: a "sha256" field.
        let data = b"written by an older client";
        let mut old = inline("old.txt", data);
        old.checksum = Checksum::of(Algorithm::Sha256, data);
        let text = serde_json::to_string(&old).unwrap();
        assert!(text.contains("\"sha256\":"), "{text}");
        assert!(!text.contains("blake3"), "{text}");
        let back = Manifest::from_stored(text.as_bytes(), &old.key()).unwrap();
        assert_eq!(back, old);
        // Its inline bytes are checked by SHA-256, not by BLAKE3.
        let mut forged = old.clone();
        forged.checksum = Checksum::Sha256(*Checksum::of(Algorithm::Blake3, data).bytes());
        assert!(forged.validate().is_err());
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        let good = serde_json::to_value(live("f", 9, 4, 1)).unwrap();
        let mut short_id = good.clone();
        short_id["chunks"][0] = "abcd".into();
        let mut bad_sha = good.clone();
        bad_sha["blake3"] = "zz".into();
        let mut neg_size = good.clone();
        neg_size["size"] = (-1).into();
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("version");
        let mut no_checksum = good;
        no_checksum.as_object_mut().unwrap().remove("blake3");
        for v in [short_id, bad_sha, neg_size, missing, no_checksum] {
            assert!(serde_json::from_value::<Manifest>(v).is_err());
        }
        assert!(serde_json::from_str::<Manifest>("{not json").is_err());
    }

    #[test]
    fn stamps_order_like_supersedes() {
        let base = live("s", 10, 4, 5);
        let mut newer = base.clone();
        newer.version = 6;
        let tomb = Manifest::tombstone("s", 5, 0);
        let mut other_bytes = base.clone();
        other_bytes.checksum = Checksum::Blake3([0xff; 32]);
        let mut older_algorithm = base.clone();
        older_algorithm.checksum = Checksum::Sha256([0xff; 32]);
        let all = [base, newer, tomb, other_bytes, older_algorithm];
        for a in &all {
            for b in &all {
                if a.stamp() != b.stamp() {
                    assert_eq!(a.supersedes(b), a.stamp() > b.stamp(), "{a:?} vs {b:?}");
                }
            }
        }
    }
}
