//! A whole file's checksum, as its manifest carries it, and the hasher that
//! makes one.
//!
//! Files are written with BLAKE3: on one core of the 2-core CI machine it
//! hashes a MiB in about 215 µs against SHA-256's 740 (docs/PERFORMANCE.md,
//! change 20), and every upload and every download to a file hashes each
//! byte once with it. Manifests written before that carry SHA-256; both are
//! read and checked, each by its own algorithm, so a stored file never
//! needs rewriting. Chunk keys are 160-bit ring positions, made from
//! BLAKE3 too (`chunk_key.rs`).
//!
//! Pure: no I/O.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The algorithm a new file's checksum is made with.
pub const NEW_FILES: Algorithm = Algorithm::Blake3;

/// A hash algorithm for whole files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// What manifests carried before BLAKE3; still read and checked.
    Sha256,
    Blake3,
}

/// A whole file's 32-byte hash and the algorithm that made it. On disk a
/// manifest holds it as one field named by the algorithm (`"sha256"` or
/// `"blake3"`) with 64 hex digits.
///
/// The derived order (SHA-256 before BLAKE3, then the bytes) is part of the
/// supersede order of manifests (`Manifest::supersedes`): any fixed order
/// will do, as long as every replica uses the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    Sha256(#[serde(with = "hex32")] [u8; 32]),
    Blake3(#[serde(with = "hex32")] [u8; 32]),
}

impl Checksum {
    /// What a tombstone carries: it has no bytes to hash. All zeros in the
    /// SHA-256 field, as tombstones always had, so old and new ones compare
    /// equal.
    pub const NONE: Checksum = Checksum::Sha256([0; 32]);

    /// The checksum of `data` by `algorithm`, in one go.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Checksum {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Checksum::Sha256(_) => Algorithm::Sha256,
            Checksum::Blake3(_) => Algorithm::Blake3,
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        match self {
            Checksum::Sha256(b) | Checksum::Blake3(b) => b,
        }
    }

    /// The algorithm's name as the manifest's JSON field, the gateway's
    /// answers and `--json` output spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Blake3(_) => "blake3",
        }
    }

    /// For error messages and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "SHA-256",
            Checksum::Blake3(_) => "BLAKE3",
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

/// A running hash of a file fed in order.
#[derive(Clone, Debug)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    /// Boxed: its state (about 1.9 KiB) would make every `Hasher` that size.
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
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
    fn fed_in_pieces_or_at_once_gives_one_checksum() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Blake3] {
            let mut hasher = Hasher::new(algorithm);
            for piece in data.chunks(4097) {
                hasher.update(piece);
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
        assert!(serde_json::from_str::<Checksum>("{\"blake3\":\"zz\"}").is_err());
        assert!(serde_json::from_str::<Checksum>("{\"md5\":\"00\"}").is_err());
    }
}
