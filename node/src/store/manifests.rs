//! Manifest operations: one JSON file per file name, under
//! `manifests/<SHA-1(name) hex>.json`.
//!
//! Invariants: only a [valid](Manifest::validate) manifest is written, and
//! only over one it [supersedes](Manifest::supersedes) (the compare and the
//! rename happen under the key's lock). A manifest file that does not parse,
//! is invalid, or sits under another name's key is corrupt: it is moved to
//! `quarantine/` and reported, never a panic, and a newer write replaces it.
//! Nothing here follows a manifest's chunk list; that is the caller's.

use std::io;

use super::disk::{self, MANIFEST_EXT};
use super::index::ManifestEntry;
use super::manifest::Stamp;
use super::{Manifest, Store};
use crate::chord::Id;
use crate::error::{Error, Result};

/// Largest manifest file accepted, read or written. A manifest is about 43
/// bytes per chunk on disk, so the most chunks one message can carry
/// ([`super::MAX_MANIFEST_CHUNKS`], about 187k) take about 8 MiB; the cap
/// bounds what one read of a damaged or hostile file can allocate.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    /// Stores `m` if it is valid and supersedes the stored version of the
    /// same file (or there is none). Returns `false`, writing nothing, when
    /// the stored version is the same or newer.
    pub fn put_manifest(&self, m: &Manifest) -> Result<bool> {
        m.validate()?;
        let key = m.key();
        // Cheap early answer for the common resend of a version we have;
        // repeated under the lock below, where it counts.
        if let Ok(Some(stored)) = self.load_manifest(&key) {
            if !m.supersedes(&stored) {
                return Ok(false);
            }
        }
        let json = serde_json::to_vec(m)
            .map_err(|e| Error::io(format!("encoding manifest {key}"), io::Error::other(e)))?;
        if json.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::invalid(format!(
                "manifest for {:?} is {} bytes encoded, the limit is {MAX_MANIFEST_BYTES}",
                m.name,
                json.len()
            )));
        }
        let mut tmp = self.layout().tmp_file("manifest", &key)?;
        tmp.write_all(&json)?;
        tmp.finish()?;

        let _guard = self.key_lock(&key);
        match self.load_manifest(&key) {
            Ok(Some(stored)) if !m.supersedes(&stored) => return Ok(false),
            Ok(_) => {}
            // A corrupt file in the way is set aside; the new one replaces it.
            Err(Error::Corrupt(reason)) => self.move_manifest_to_quarantine(&key, &reason)?,
            Err(e) => return Err(e),
        }
        tmp.persist(&self.layout().manifest_path(&key))?;
        self.index()
            .insert_manifest(key, ManifestEntry::new(m, json.len() as u64));
        Ok(true)
    }

    /// The manifest stored under `key`, or `None`. A file that does not
    /// parse, is invalid or belongs to another key is quarantined and
    /// reported as `Error::Corrupt`.
    pub fn get_manifest(&self, key: &Id) -> Result<Option<Manifest>> {
        match self.load_manifest(key) {
            Err(Error::Corrupt(reason)) => {
                self.quarantine_manifest_if_corrupt(key)?;
                Err(Error::Corrupt(reason))
            }
            other => other,
        }
    }

    /// Removes the manifest under `key`, whatever its version (the hand-off
    /// does this once the rightful holders confirm their copies). Removing
    /// one that is not there succeeds.
    pub fn delete_manifest(&self, key: &Id) -> Result<()> {
        let path = self.layout().manifest_path(key);
        let _guard = self.key_lock(key);
        disk::remove_durably(&path, &format!("manifest {key}"))?;
        self.index().remove_manifest(key);
        Ok(())
    }

    /// Every stored manifest, tombstones included, sorted by name. Corrupt
    /// files are quarantined and left out (with a warning) rather than
    /// failing the whole listing.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let keys = self.index().manifest_keys();
        let mut out = self.read_listed(keys)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One page of the stored manifests, tombstones included, in key order:
    /// the first `limit` (at least one) keys above `after` (from the first
    /// key when `None`), and the last key of the page when more follow.
    /// Only the page's files are read; corrupt ones are left out as in
    /// [`Store::manifests`].
    pub fn manifests_page(
        &self,
        after: Option<&Id>,
        limit: usize,
    ) -> Result<(Vec<Manifest>, Option<Id>)> {
        let (keys, next) = self.index().manifest_keys_page(after, limit);
        Ok((self.read_listed(keys)?, next))
    }

    /// The manifests under `keys`, in that order, leaving out those deleted
    /// meanwhile and quarantining (with a warning) those that are corrupt.
    fn read_listed(&self, keys: Vec<Id>) -> Result<Vec<Manifest>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.get_manifest(&key) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {} // deleted since the index was read
                Err(Error::Corrupt(reason)) => {
                    tracing::warn!(key = %key, reason = %reason, "corrupt manifest left out of listing");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Keys and versions of the manifests in `(start, end]` on the circle,
    /// in clockwise order from `start`; equal ends mean the whole ring.
    pub fn manifest_keys_in(&self, start: &Id, end: &Id) -> Result<Vec<(Id, Stamp)>> {
        Ok(self.index().manifest_keys_in(start, end))
    }

    /// Reads and checks the manifest file for `key`, without side effects.
    fn load_manifest(&self, key: &Id) -> Result<Option<Manifest>> {
        let path = self.layout().manifest_path(key);
        let bytes = match disk::read_capped(&path, MAX_MANIFEST_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::Corrupt(format!("manifest {key}: {e}")));
            }
            Err(e) => return Err(Error::io(format!("reading manifest {key}"), e)),
        };
        Manifest::from_json(&bytes, key).map(Some)
    }

    /// Re-reads the manifest for `key` under its lock and quarantines it if
    /// it is still corrupt (a good version may have replaced it meanwhile).
    fn quarantine_manifest_if_corrupt(&self, key: &Id) -> Result<()> {
        let _guard = self.key_lock(key);
        match self.load_manifest(key) {
            Err(Error::Corrupt(reason)) => self.move_manifest_to_quarantine(key, &reason),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the manifest file for `key` aside. The caller holds the key's
    /// lock and has established the file is corrupt.
    fn move_manifest_to_quarantine(&self, key: &Id, reason: &str) -> Result<()> {
        let from = self.layout().manifest_path(key);
        let to = self.layout().quarantine_manifest_path(key);
        disk::move_durably(&from, &to)
            .map_err(|e| Error::io(format!("quarantining manifest {key}"), e))?;
        tracing::warn!(key = %key, reason = %reason, to = %to.display(), "corrupt manifest quarantined");
        self.index().remove_manifest(key);
        Ok(())
    }

    /// Rebuilds the manifest part of the index from `manifests/`, parsing
    /// every file: corrupt ones are quarantined, stray names left alone.
    pub(super) fn scan_manifests(&self) -> Result<()> {
        for entry in disk::read_dir(&self.layout().manifests)? {
            let path = entry.path();
            let key = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(MANIFEST_EXT))
                .and_then(|hex| hex.parse::<Id>().ok().filter(|k| k.to_hex() == hex));
            let Some(key) = key.filter(|_| entry.file_type().is_ok_and(|t| t.is_file())) else {
                tracing::warn!(path = %path.display(), "unexpected entry in manifests/, ignored");
                continue;
            };
            let _guard = self.key_lock(&key);
            match self.load_manifest(&key) {
                Ok(Some(m)) => {
                    let bytes = entry
                        .metadata()
                        .map_err(|e| {
                            Error::io(format!("reading metadata of {}", path.display()), e)
                        })?
                        .len();
                    self.index()
                        .insert_manifest(key, ManifestEntry::new(&m, bytes));
                }
                Ok(None) => {}
                Err(Error::Corrupt(reason)) => self.move_manifest_to_quarantine(&key, &reason)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::super::checksum::Checksum;
    use super::super::manifest::tests::live;
    use super::super::tests::open_temp;
    use super::*;
    use std::fs;

    fn quarantined(store: &Store) -> usize {
        fs::read_dir(store.root().join("quarantine"))
            .unwrap()
            .count()
    }

    #[test]
    fn put_then_get() {
        let (_dir, store) = open_temp();
        let m = live("notes.txt", 10, 4, 1);
        assert!(store.put_manifest(&m).unwrap());
        assert_eq!(store.get_manifest(&m.key()).unwrap(), Some(m.clone()));
        assert_eq!(store.get_manifest(&Id::hash(b"other")).unwrap(), None);
        let on_disk = fs::metadata(store.layout().manifest_path(&m.key()))
            .unwrap()
            .len();
        let stats = store.stats();
        assert_eq!(
            (stats.manifests, stats.tombstones, stats.bytes),
            (1, 0, on_disk)
        );
    }

    #[test]
    fn invalid_manifest_is_refused() {
        let (_dir, store) = open_temp();
        let mut m = live("bad.txt", 10, 4, 1);
        m.chunks.pop();
        assert!(matches!(
            store.put_manifest(&m),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            store.put_manifest(&live("a/b", 0, 0, 1)),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(store.stats().manifests, 0);
    }

    #[test]
    fn only_a_superseding_version_replaces() {
        let (dir, store) = open_temp();
        let v2 = live("f", 10, 4, 2);
        assert!(store.put_manifest(&v2).unwrap());
        // Older and equal versions are refused and change nothing.
        assert!(!store.put_manifest(&live("f", 3, 4, 1)).unwrap());
        assert!(!store.put_manifest(&v2).unwrap());
        assert_eq!(store.get_manifest(&v2.key()).unwrap(), Some(v2.clone()));
        // Same version, larger SHA-256: the tie-break picks it everywhere.
        let mut rival = v2.clone();
        rival.checksum = Checksum::Blake3([0xff; 32]);
        assert!(store.put_manifest(&rival).unwrap());
        assert!(!store.put_manifest(&v2).unwrap());
        assert_eq!(store.get_manifest(&v2.key()).unwrap(), Some(rival));
        let v3 = live("f", 1, 4, 3);
        assert!(store.put_manifest(&v3).unwrap());
        assert_eq!(store.get_manifest(&v3.key()).unwrap(), Some(v3));
        assert_eq!(store.stats().manifests, 1);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn tombstone_replaces_and_is_listed() {
        let (_dir, store) = open_temp();
        store.put_manifest(&live("b.txt", 10, 4, 1)).unwrap();
        store.put_manifest(&live("a.txt", 10, 4, 1)).unwrap();
        let tomb = Manifest::tombstone("b.txt", 2, 77);
        assert!(store.put_manifest(&tomb).unwrap());
        // A late copy of the old write cannot resurrect the file.
        assert!(!store.put_manifest(&live("b.txt", 10, 4, 1)).unwrap());
        // A delete racing a write of the same version wins.
        let racing_write = Manifest {
            checksum: Checksum::Blake3([0xee; 32]),
            ..live("a.txt", 5, 4, 1)
        };
        store.put_manifest(&racing_write).unwrap();
        assert!(store
            .put_manifest(&Manifest::tombstone("a.txt", 1, 0))
            .unwrap());
        assert!(!store.put_manifest(&racing_write).unwrap());

        let stats = store.stats();
        assert_eq!((stats.manifests, stats.tombstones), (0, 2));
        let names: Vec<_> = store
            .manifests()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(store.get_manifest(&tomb.key()).unwrap(), Some(tomb));
    }

    #[test]
    fn malformed_json_on_disk_is_corrupt_not_a_panic() {
        let (dir, store) = open_temp();
        let m = live("doc.txt", 10, 4, 1);
        let key = m.key();
        store.put_manifest(&m).unwrap();
        let path = store.layout().manifest_path(&key);
        fs::write(&path, b"{\"name\": \"doc.txt\", \"size\": ").unwrap();

        let err = store.get_manifest(&key).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(quarantined(&store), 1);
        assert_eq!(store.get_manifest(&key).unwrap(), None);
        assert_eq!(store.stats().manifests, 0);
        // A fresh write of the file is accepted over the hole.
        assert!(store.put_manifest(&m).unwrap());

        // The same again, discovered by put and by open instead of get.
        fs::write(&path, b"\xff\xfe not even utf-8").unwrap();
        assert!(store.put_manifest(&live("doc.txt", 10, 4, 1)).unwrap());
        assert_eq!(quarantined(&store), 2);
        fs::write(&path, b"[]").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(quarantined(&store), 3);
        assert_eq!(store.stats().manifests, 0);
    }

    #[test]
    fn well_formed_but_wrong_manifests_are_corrupt() {
        let (_dir, store) = open_temp();
        let m = live("real.txt", 10, 4, 1);
        store.put_manifest(&m).unwrap();
        let path = store.layout().manifest_path(&m.key());
        // Valid JSON of another file's manifest, under this file's key.
        fs::write(
            &path,
            serde_json::to_vec(&live("impostor", 10, 4, 9)).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            store.get_manifest(&m.key()),
            Err(Error::Corrupt(_))
        ));
        // Valid JSON whose chunk list does not fit its size.
        store.put_manifest(&m).unwrap();
        let mut broken = m.clone();
        broken.chunks.clear();
        fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
        assert!(matches!(
            store.get_manifest(&m.key()),
            Err(Error::Corrupt(_))
        ));
        // Listing skips what is corrupt instead of failing.
        store.put_manifest(&m).unwrap();
        store.put_manifest(&live("other.txt", 0, 0, 1)).unwrap();
        fs::write(&path, b"null").unwrap();
        let listed = store.manifests().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "other.txt");
        assert_eq!(quarantined(&store), 3);
    }

    #[test]
    fn keys_in_and_delete() {
        let (_dir, store) = open_temp();
        let mut expected: Vec<(Id, Stamp)> = (0..20u64)
            .map(|i| {
                let m = live(&format!("file-{i}"), 0, 0, i + 1);
                store.put_manifest(&m).unwrap();
                (m.key(), m.stamp())
            })
            .collect();
        expected.sort();
        let all = store.manifest_keys_in(&Id::ZERO, &Id::ZERO).unwrap();
        assert_eq!(all.len(), 20);
        // Wrap from the 15th key past zero to the 2nd.
        let got = store
            .manifest_keys_in(&expected[15].0, &expected[2].0)
            .unwrap();
        let mut want = expected[16..].to_vec();
        want.extend_from_slice(&expected[..=2]);
        assert_eq!(got, want);

        let gone = expected[0].0;
        store.delete_manifest(&gone).unwrap();
        store.delete_manifest(&gone).unwrap(); // idempotent
        assert_eq!(store.get_manifest(&gone).unwrap(), None);
        assert_eq!(store.stats().manifests, 19);
        assert_eq!(store.manifests().unwrap().len(), 19);
    }

    #[test]
    fn concurrent_versions_settle_on_the_newest() {
        let (_dir, store) = open_temp();
        std::thread::scope(|s| {
            for v in 1..=8u64 {
                let store = &store;
                s.spawn(move || store.put_manifest(&live("race", 8, 4, v)).unwrap());
            }
        });
        let key = Id::hash(b"race");
        assert_eq!(
            store.get_manifest(&key).unwrap().map(|m| m.version),
            Some(8)
        );
        let stamps = store.manifest_keys_in(&key, &key).unwrap();
        assert_eq!(stamps.len(), 1);
        assert_eq!((stamps[0].0, stamps[0].1.version), (key, 8));
    }
}
