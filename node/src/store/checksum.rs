//! A whole file's checksum, as its manifest carries it, and the hasher that
//! makes one.
//!
//! A new file's checksum is BLAKE3 over its chunks' BLAKE3 hashes, in file
//! order ([`Algorithm::Blake3Chunks`]): a two-level hash tree whose leaves
//! are the hashes the chunks' keys are made from (`chunk_key.rs`). So an
//! upload hashes each byte once on the client, for the chunk's key and the
//! file's checksum alike, and a download to a file hashes each byte once
//! as well, each chunk's hash then checking the chunk against its key at
//! no further cost. The checksum depends on the chunk size the file was
//! cut with; `chord-console checksum` makes it for a local file.
//!
//! Files written before it carry BLAKE3 of their bytes (from change 20 to
//! change 80 in docs/PERFORMANCE.md) or, older still, SHA-256; all three
//! are read and checked, each by its own algorithm, so a stored file never
//! needs rewriting.
//!
//! Pure: no I/O.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The algorithm a new file's checksum is made with.
pub const NEW_FILES: Algorithm = Algorithm::Blake3Chunks;

/// BLAKE3's key-derivation context for [`Algorithm::Blake3Chunks`]: the
/// tree's root is not a plain BLAKE3 hash of the concatenated chunk
/// hashes, so it cannot be mistaken for the hash of some other bytes.
const CHUNKS_CONTEXT: &str = "chord-dfs 2026-12-07 file checksum from its chunk hashes";

/// A hash algorithm for whole files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// What manifests carried before BLAKE3; still read and checked.
    Sha256,
    /// BLAKE3 of the file's bytes, what manifests carried before
    /// [`Algorithm::Blake3Chunks`]; still read and checked.
    Blake3,
    /// BLAKE3 (in key-derivation mode) over the BLAKE3 hash of each chunk,
    /// in file order; a file held in its manifest is one chunk.
    Blake3Chunks,
}

impl Algorithm {
    /// The algorithm's name as the manifest's JSON field, the wire's field,
    /// the gateway's answers and `--json` output spell it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
            Algorithm::Blake3Chunks => "blake3_chunks",
        }
    }

    /// Whether a checksum by this algorithm is made of the chunks' BLAKE3
    /// hashes: the one hash of a chunk that checks it against its key then
    /// feeds the checksum too, so a reader checks every chunk for free.
    pub fn is_chunk_tree(self) -> bool {
        self == Algorithm::Blake3Chunks
    }
}

/// A whole file's 32-byte hash and the algorithm that made it. On disk a
/// manifest holds it as one field named by the algorithm (`"sha256"`,
/// `"blake3"` or `"blake3_chunks"`) with 64 hex digits.
///
/// The derived order (SHA-256, BLAKE3, the chunk tree, then the bytes) is
/// part of the supersede order of manifests (`Manifest::supersedes`): any
/// fixed order will do, as long as every replica uses the same one, and a
/// new variant goes last so the order of the older ones stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    Sha256(#[serde(with = "hex32")] [u8; 32]),
    Blake3(#[serde(with = "hex32")] [u8; 32]),
    #[serde(rename = "blake3_chunks")]
    Blake3Chunks(#[serde(with = "hex32")] [u8; 32]),
}

impl Checksum {
    /// What a tombstone carries: it has no bytes to hash. All zeros in the
    /// SHA-256 field, as tombstones always had, so old and new ones compare
    /// equal.
    pub const NONE: Checksum = Checksum::Sha256([0; 32]);

    /// The checksum of `algorithm` that is `bytes`.
    pub fn new(algorithm: Algorithm, bytes: [u8; 32]) -> Checksum {
        match algorithm {
            Algorithm::Sha256 => Checksum::Sha256(bytes),
            Algorithm::Blake3 => Checksum::Blake3(bytes),
            Algorithm::Blake3Chunks => Checksum::Blake3Chunks(bytes),
        }
    }

    /// The checksum by `algorithm` of a file of one chunk, `data` (of none
    /// if it is empty): a file held in its manifest, or any file by the
    /// algorithms that hash its bytes as they are.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Checksum {
        let mut hasher = Hasher::new(algorithm);
        hasher.add_chunk(data);
        hasher.finish()
    }

    /// The [`Algorithm::Blake3Chunks`] checksum of a file whose chunks, in
    /// order, have these BLAKE3 hashes (`chunk_key::chunk_hash`).
    pub fn of_chunk_hashes<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> Checksum {
        let mut tree = blake3::Hasher::new_derive_key(CHUNKS_CONTEXT);
        for hash in hashes {
            tree.update(hash);
        }
        Checksum::Blake3Chunks(*tree.finalize().as_bytes())
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Checksum::Sha256(_) => Algorithm::Sha256,
            Checksum::Blake3(_) => Algorithm::Blake3,
            Checksum::Blake3Chunks(_) => Algorithm::Blake3Chunks,
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        match self {
            Checksum::Sha256(b) | Checksum::Blake3(b) | Checksum::Blake3Chunks(b) => b,
        }
    }

    /// The algorithm's name as the manifest's JSON field, the gateway's
    /// answers and `--json` output spell it.
    pub fn name(&self) -> &'static str {
        self.algorithm().name()
    }

    /// For error messages and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "SHA-256",
            Checksum::Blake3(_) => "BLAKE3",
            Checksum::Blake3Chunks(_) => "BLAKE3 of chunk hashes",
        }
    }

    pub fn to_hex(&self) -> String {
        const_hex::encode(self.bytes())
    }
}

/// A tombstone's: what a stamp holds before it is filled in.
impl Default for Checksum {
    fn default() -> Checksum {
        Checksum::NONE
    }
}

/// A running hash of a file fed chunk by chunk, in order.
#[derive(Clone, Debug)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    /// Boxed: its state (about 1.9 KiB) would make every `Hasher` that size.
    Blake3(Box<blake3::Hasher>),
    /// The tree over the chunk hashes so far; boxed as above.
    Blake3Chunks(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
            Algorithm::Blake3Chunks => {
                Hasher::Blake3Chunks(Box::new(blake3::Hasher::new_derive_key(CHUNKS_CONTEXT)))
            }
        }
    }

    /// Adds the file's next chunk, whole: [`Algorithm::Blake3Chunks`]
    /// hashes each call's bytes as one chunk. No bytes add nothing, so an
    /// empty file, held in its manifest or not, is a file of no chunks.
    pub fn add_chunk(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        match self {
            Hasher::Sha256(h) => h.update(chunk),
            Hasher::Blake3(h) => {
                h.update(chunk);
            }
            Hasher::Blake3Chunks(tree) => {
                tree.update(blake3::hash(chunk).as_bytes());
            }
        }
    }

    /// [`Hasher::add_chunk`] of a chunk whose BLAKE3 hash (as
    /// `chunk_key::chunk_hash` makes it) is `hash`: the chunk tree takes
    /// the hash as it is instead of hashing the bytes again; the other
    /// algorithms hash the bytes.
    pub fn add_hashed_chunk(&mut self, chunk: &[u8], hash: &[u8; 32]) {
        debug_assert_eq!(
            blake3::hash(chunk).as_bytes(),
            hash,
            "a chunk with another's hash"
        );
        match self {
            Hasher::Blake3Chunks(tree) if !chunk.is_empty() => {
                tree.update(hash);
            }
            _ => self.add_chunk(chunk),
        }
    }

    /// The checksum of everything fed so far; the hasher can go on.
    pub fn checksum(&self) -> Checksum {
        self.clone().finish()
    }

    pub fn finish(self) -> Checksum {
        match self {
            Hasher::Sha256(h) => Checksum::Sha256(h.finalize().into()),
            Hasher::Blake3(h) => Checksum::Blake3(*h.finalize().as_bytes()),
            Hasher::Blake3Chunks(tree) => Checksum::Blake3Chunks(*tree.finalize().as_bytes()),
        }
    }
}

/// `[u8; 32]` as a 64-digit hex string.
mod hex32 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&const_hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        const_hex::decode_to_slice(&text, &mut out)
            .map_err(|e| D::Error::custom(format!("a checksum must be 64 hex digits: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn each_algorithm_matches_its_reference_vectors() {
        // The empty input's digests, as the algorithms' specifications give them.
        assert_eq!(
            Checksum::of(Algorithm::Sha256, b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Checksum::of(Algorithm::Blake3, b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn the_plain_algorithms_take_a_file_in_pieces_of_any_size() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Blake3] {
            let mut hasher = Hasher::new(algorithm);
            for piece in data.chunks(4097) {
                hasher.add_chunk(piece);
            }
            assert_eq!(hasher.checksum(), hasher.clone().finish());
            let whole = Checksum::of(algorithm, &data);
            assert_eq!(hasher.finish(), whole);
            assert_eq!(whole.algorithm(), algorithm);
        }
        assert_ne!(
            Checksum::of(Algorithm::Sha256, &data).bytes(),
            Checksum::of(Algorithm::Blake3, &data).bytes()
        );
    }

    /// The chunk-tree checksum, made here from the `blake3` crate alone:
    /// key-derivation mode with the context below, over each chunk's plain
    /// BLAKE3 hash in order. Fed chunks or their hashes, the hasher and
    /// `of_chunk_hashes` agree with it; the same bytes cut otherwise, in
    /// another order or hashed plainly give other checksums.
    #[test]
    fn the_chunk_tree_is_blake3_over_the_chunk_hashes_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(65_536).collect();
        let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
        let mut tree = blake3::Hasher::new_derive_key(
            "chord-dfs 2026-12-07 file checksum from its chunk hashes",
        );
        for hash in &hashes {
            tree.update(hash);
        }
        let expected = Checksum::Blake3Chunks(*tree.finalize().as_bytes());

        let mut hasher = Hasher::new(Algorithm::Blake3Chunks);
        for chunk in &chunks {
            hasher.add_chunk(chunk);
        }
        assert_eq!(hasher.finish(), expected);
        assert_eq!(Checksum::of_chunk_hashes(&hashes), expected);
        assert_eq!(expected.algorithm(), Algorithm::Blake3Chunks);

        let mut known = Hasher::new(Algorithm::Blake3Chunks);
        for (chunk, hash) in chunks.iter().zip(&hashes) {
            known.add_hashed_chunk(chunk, hash);
        }
        assert_eq!(known.finish(), expected);
        let mut plain = Hasher::new(Algorithm::Blake3);
        for (chunk, hash) in chunks.iter().zip(&hashes) {
            plain.add_hashed_chunk(chunk, hash);
        }
        assert_eq!(plain.finish(), Checksum::of(Algorithm::Blake3, &data));

        let mut recut = Hasher::new(Algorithm::Blake3Chunks);
        for chunk in data.chunks(32_768) {
            recut.add_chunk(chunk);
        }
        assert_ne!(recut.finish(), expected);
        assert_ne!(Checksum::of_chunk_hashes(hashes.iter().rev()), expected);
        assert_ne!(
            Checksum::of(Algorithm::Blake3, &hashes.concat()).bytes(),
            expected.bytes()
        );
        // A file of one chunk (one held in its manifest), and the empty file.
        assert_eq!(
            Checksum::of(Algorithm::Blake3Chunks, &data),
            Checksum::of_chunk_hashes(&[*blake3::hash(&data).as_bytes()])
        );
        let none = Checksum::of_chunk_hashes(&[]);
        assert_eq!(Hasher::new(Algorithm::Blake3Chunks).finish(), none);
        assert_eq!(Checksum::of(Algorithm::Blake3Chunks, b""), none);
    }

    #[test]
    fn json_names_the_algorithm_and_refuses_bad_hex() {
        let c = Checksum::Blake3([0xab; 32]);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, format!("{{\"blake3\":\"{}\"}}", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Checksum>(&text).unwrap(), c);
        let old = format!("{{\"sha256\":\"{}\"}}", "00".repeat(32));
        assert_eq!(
            serde_json::from_str::<Checksum>(&old).unwrap(),
            Checksum::NONE
        );
        let tree = Checksum::Blake3Chunks([0xcd; 32]);
        let text = serde_json::to_string(&tree).unwrap();
        assert_eq!(
            text,
            format!("{{\"blake3_chunks\":\"{}\"}}", "cd".repeat(32))
        );
        assert_eq!(serde_json::from_str::<Checksum>(&text).unwrap(), tree);
        assert!(serde_json::from_str::<Checksum>("{\"blake3\":\"zz\"}").is_err());
        assert!(serde_json::from_str::<Checksum>("{\"md5\":\"00\"}").is_err());
    }
}
