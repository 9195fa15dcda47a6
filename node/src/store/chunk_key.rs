//! How a chunk's bytes name it on the ring.
//!
//! A chunk's key is SHA-1 of the BLAKE3 hash of its bytes: a 160-bit ring
//! position like every other key, and still content addressing (the same
//! bytes always get the same key, so they are stored once, and the key
//! checks the bytes it names). Each byte goes through BLAKE3 only, which on
//! one core of the 2-core CI machine hashes a MiB in about 116–240 µs
//! against SHA-1's 540–1,100 (docs/PERFORMANCE.md, change 26); the SHA-1
//! over 32 bytes after it costs next to nothing. An upload hashes every
//! byte twice for keys (the client makes it, the receiving node checks it),
//! so this is the largest share of CPU an upload spends.
//!
//! Chunks stored before change 26 are keyed by SHA-1 of their bytes, and
//! they stay valid: bytes that do not match a key the current way are
//! checked the old way before they are called corrupt. That second hash
//! runs only for such chunks (and for bad bytes), and nothing needs
//! rewriting. The two ways cannot name different bytes with one key unless
//! SHA-1 has a collision between some bytes and a BLAKE3 hash.
//!
//! Pure: no I/O.

use sha1::{Digest as _, Sha1};

use crate::chord::Id;

/// The key of the chunk holding `data`.
pub fn chunk_key(data: &[u8]) -> Id {
    key_of_hash(&chunk_hash(data))
}

/// The BLAKE3 hash of a chunk's bytes, which its key is made from, and
/// which a new file's checksum is made from too (`Checksum::of_chunk_hashes`).
pub fn chunk_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// The key of the chunk whose BLAKE3 hash is `hash`.
pub fn key_of_hash(hash: &[u8; 32]) -> Id {
    Id::hash(hash)
}

/// Makes a chunk's key from its bytes as they come, in pieces of any size.
#[derive(Clone, Debug, Default)]
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new() -> KeyHasher {
        KeyHasher::default()
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The key of the bytes fed in so far.
    pub fn key(&self) -> Id {
        key_of_hash(self.0.finalize().as_bytes())
    }

    /// Whether the bytes fed in are chunk `key`'s. When they are not its
    /// key the current way, `old_way` is asked for SHA-1 of the same bytes
    /// (see the module docs). `Err` carries the key the bytes have now,
    /// for the error message.
    pub fn check<E>(
        &self,
        key: &Id,
        old_way: impl FnOnce() -> Result<Id, E>,
    ) -> Result<Result<(), Id>, E> {
        let actual = self.key();
        if actual == *key || old_way()? == *key {
            Ok(Ok(()))
        } else {
            Ok(Err(actual))
        }
    }
}

/// SHA-1 of bytes fed in pieces: how chunk keys were made before change 26.
#[derive(Clone, Debug, Default)]
pub struct OldKeyHasher(Sha1);

impl OldKeyHasher {
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    pub fn key(self) -> Id {
        Id::from_array(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &Id, data: &[u8]) -> Result<(), Id> {
        let mut hasher = KeyHasher::new();
        hasher.update(data);
        let checked: Result<_, std::convert::Infallible> = hasher.check(key, || Ok(Id::hash(data)));
        checked.unwrap_or_else(|never| match never {})
    }

    #[test]
    fn a_key_is_sha1_of_blake3() {
        // BLAKE3 of "abc" is 6437b3ac...5d85 (the reference implementation).
        let b3 = blake3::hash(b"abc");
        assert_eq!(
            b3.to_hex().as_str(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(chunk_key(b"abc"), Id::hash(b3.as_bytes()));
        assert_ne!(chunk_key(b"abc"), Id::hash(b"abc"));
    }

    #[test]
    fn pieces_give_the_key_of_the_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for piece in [1, 1000, 1024, 65_536, 300_000] {
            let mut hasher = KeyHasher::new();
            data.chunks(piece).for_each(|p| hasher.update(p));
            assert_eq!(hasher.key(), chunk_key(&data), "pieces of {piece}");
            let mut old = OldKeyHasher::default();
            data.chunks(piece).for_each(|p| old.update(p));
            assert_eq!(old.key(), Id::hash(&data), "pieces of {piece}");
        }
    }

    #[test]
    fn bytes_match_their_key_either_way_and_nothing_else() {
        let data = b"some chunk".as_slice();
        assert_eq!(check(&chunk_key(data), data), Ok(()));
        assert_eq!(
            check(&Id::hash(data), data),
            Ok(()),
            "a chunk stored before change 26"
        );
        let other = chunk_key(b"other bytes");
        assert_eq!(check(&other, data), Err(chunk_key(data)));
    }

    #[test]
    fn the_old_way_is_asked_only_when_the_new_one_fails() {
        let data = b"fresh";
        let mut hasher = KeyHasher::new();
        hasher.update(data);
        let asked: Result<_, ()> = hasher.check(&chunk_key(data), || panic!("asked"));
        assert_eq!(asked, Ok(Ok(())));
        let failed: Result<Result<(), Id>, &str> = hasher.check(&Id::hash(b"x"), || Err("io"));
        assert_eq!(failed, Err("io"));
    }
}
