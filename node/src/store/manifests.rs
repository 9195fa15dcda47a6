//! Manifest operations, over the manifest log (`manifest_log.rs`): one
//! record per version, keyed by SHA-1 of the file's name.
//!
//! Invariants: only a [valid](Manifest::validate) manifest is written, and
//! only over one it [supersedes](Manifest::supersedes) (the compare and the
//! append happen under the key's lock). A record that fails its hash, does
//! not parse, is invalid, or sits under another name's key is corrupt: its
//! bytes are copied to `quarantine/` and it is removed from the log and
//! reported, never a panic, and a newer write replaces it. Nothing here
//! follows a manifest's chunk list; that is the caller's.

use std::collections::HashMap;
use std::io;

use super::disk::{self, MANIFEST_EXT};
use super::index::{Index, ManifestEntry};
use super::manifest::Stamp;
use super::{Manifest, Store};
use crate::chord::Id;
use crate::error::{Error, Result};

/// Largest manifest accepted, read or written. A manifest is about 43
/// bytes per chunk encoded, so the most chunks one message can carry
/// ([`super::MAX_MANIFEST_CHUNKS`], about 187k) take about 8 MiB; the cap
/// bounds what one read of a damaged or hostile record can allocate.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The manifest part of the index, built as the log is replayed at open:
/// every put record is parsed as it is read (later records replace earlier
/// ones of their key, a removal drops it), so each record is read and
/// hashed once. A key whose newest record is corrupt is left out and
/// noted, for [`Store::settle_manifests`] to quarantine.
#[derive(Default)]
pub(super) struct ManifestScan {
    pub index: Index,
    pub corrupt: HashMap<Id, String>,
}

impl ManifestScan {
    /// Applies one record: a put's payload, or `None` for a removal.
    pub fn record(&mut self, key: &Id, payload: Option<&[u8]>) {
        let Some(payload) = payload else {
            self.index.remove_manifest(key);
            self.corrupt.remove(key);
            return;
        };
        match Manifest::from_stored(payload, key) {
            Ok(m) => {
                let entry = ManifestEntry::new(&m, payload.len());
                self.index.insert_manifest(*key, entry);
                self.corrupt.remove(key);
            }
            Err(e) => {
                self.index.remove_manifest(key);
                let reason = match e {
                    Error::Corrupt(reason) => reason,
                    other => other.to_string(),
                };
                self.corrupt.insert(*key, reason);
            }
        }
    }
}

impl Store {
    /// Stores `m` if it is valid and supersedes the stored version of the
    /// same file (or there is none). Returns `false`, writing nothing, when
    /// the stored version is the same or newer.
    pub fn put_manifest(&self, m: &Manifest) -> Result<bool> {
        m.validate()?;
        let key = m.key();
        // Cheap early answer for a version older than the one stored;
        // repeated under the lock below, where it counts.
        let stored = self.manifest_stamp(&key);
        if stored.is_some_and(|stored| m.stamp() < stored) {
            return Ok(false);
        }
        let encoded = m.to_stored()?;
        if encoded.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::invalid(format!(
                "manifest for {:?} is {} bytes encoded, the limit is {MAX_MANIFEST_BYTES}",
                m.name,
                encoded.len()
            )));
        }
        let _guard = self.key_lock(&key);
        if !self.replaces_stored(&key, m)? {
            return Ok(false);
        }
        self.append_manifest(key, m, &encoded)?;
        Ok(true)
    }

    /// Appends `stored`, the manifest `m` as stored, to the log under `key`
    /// and puts it in the index. The caller holds the key's lock and has
    /// found that `m` replaces what is stored.
    fn append_manifest(&self, key: Id, m: &Manifest, stored: &[u8]) -> Result<()> {
        self.log().put(&key, stored)?;
        self.index()
            .insert_manifest(key, ManifestEntry::new(m, stored.len()));
        Ok(())
    }

    /// Whether `m` replaces what is stored under `key`; the caller holds the
    /// key's lock. Stamps that differ decide it from the index alone, since
    /// a higher stamp always belongs to the winning manifest; only equal
    /// ones (a resend of the stored version, as a rule) read the stored
    /// manifest for the rest of the order, and set it aside if it is
    /// corrupt. A corrupt record a newer stamp replaces is not read: it is
    /// dead from then on, and compaction drops it.
    fn replaces_stored(&self, key: &Id, m: &Manifest) -> Result<bool> {
        match self.manifest_stamp(key) {
            None => Ok(true),
            Some(stored) if stored != m.stamp() => Ok(m.stamp() > stored),
            Some(_) => match self.load_manifest(key) {
                Ok(Some(stored)) => Ok(m.supersedes(&stored)),
                Ok(None) => Ok(true),
                Err(Error::Corrupt(reason)) => {
                    self.move_manifest_to_quarantine(key, &reason)?;
                    Ok(true)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The stamp of the manifest stored under `key`, if any, from the
    /// index: no read of the record.
    pub fn manifest_stamp(&self, key: &Id) -> Option<Stamp> {
        self.index().manifest_stamp(key)
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
        let _guard = self.key_lock(key);
        self.log().remove(key)?;
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
    /// in clockwise order from `start`; equal ends mean the whole ring. For
    /// tests only, as [`Store::chunk_keys_in`] is: the node pages through
    /// its keys ([`Store::keys_page`]).
    #[cfg(test)]
    pub fn manifest_keys_in(&self, start: &Id, end: &Id) -> Result<Vec<(Id, Stamp)>> {
        Ok(self.index().manifest_keys_in(start, end))
    }

    /// Reads and checks the manifest for `key`, without side effects.
    pub(super) fn load_manifest(&self, key: &Id) -> Result<Option<Manifest>> {
        match self.log().get(key)? {
            Some(bytes) => Manifest::from_stored(&bytes, key).map(Some),
            None => Ok(None),
        }
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

    /// Copies the record for `key`, as it is, to `quarantine/` and removes
    /// it from the log. The caller holds the key's lock and has established
    /// the record is corrupt.
    fn move_manifest_to_quarantine(&self, key: &Id, reason: &str) -> Result<()> {
        let to = self.layout().quarantine_manifest_path(key);
        if let Some(record) = self.log().record(key)? {
            self.layout()
                .write_durably("quarantine", key, &to, &record)?;
        }
        self.log().remove(key)?;
        tracing::warn!(key = %key, reason = %reason, to = %to.display(), "corrupt manifest quarantined");
        self.index().remove_manifest(key);
        Ok(())
    }

    /// Finishes what the log's replay at open found ([`ManifestScan`]):
    /// quarantines the records left corrupt, then moves in any manifests
    /// kept one file each.
    pub(super) fn settle_manifests(&self, corrupt: HashMap<Id, String>) -> Result<()> {
        for (key, reason) in corrupt {
            let _guard = self.key_lock(&key);
            self.move_manifest_to_quarantine(&key, &reason)?;
        }
        self.import_manifest_files()
    }

    /// Moves manifests kept one file each under `manifests/` (the layout
    /// before the log) into the log: a valid one is appended unless the log
    /// holds the same version or a newer one, a corrupt one is moved to
    /// `quarantine/`, and each file goes once its manifest is durable in
    /// the log. Other names are left alone.
    fn import_manifest_files(&self) -> Result<()> {
        let log_path = self.layout().manifest_log();
        let mut moved = 0usize;
        for entry in disk::read_dir(&self.layout().manifests)? {
            let path = entry.path();
            // The log itself, and a compaction's file (`log.compacting`).
            if path.with_extension("") == log_path {
                continue;
            }
            let key = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(MANIFEST_EXT))
                .and_then(|hex| hex.parse::<Id>().ok().filter(|k| k.to_hex() == hex));
            let Some(key) = key.filter(|_| entry.file_type().is_ok_and(|t| t.is_file())) else {
                tracing::warn!(path = %path.display(), "unexpected entry in manifests/, ignored");
                continue;
            };
            let parsed = match disk::read_capped(&path, MAX_MANIFEST_BYTES) {
                Ok(json) => Manifest::from_stored(&json, &key).map(|m| (m, json)),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    Err(Error::Corrupt(format!("manifest {key}: {e}")))
                }
                Err(e) => return Err(Error::io(format!("reading manifest {key}"), e)),
            };
            let _guard = self.key_lock(&key);
            match parsed {
                Ok((m, json)) => {
                    let newer = match self.load_manifest(&key) {
                        Ok(Some(stored)) => m.supersedes(&stored),
                        _ => true,
                    };
                    if newer {
                        self.append_manifest(key, &m, &json)?;
                    }
                    disk::remove_durably(&path, &format!("manifest file {key}"))?;
                    moved += 1;
                }
                Err(Error::Corrupt(reason)) => {
                    let to = self.layout().quarantine_manifest_path(&key);
                    disk::move_durably(&path, &to)
                        .map_err(|e| Error::io(format!("quarantining manifest {key}"), e))?;
                    tracing::warn!(key = %key, reason = %reason, to = %to.display(), "corrupt manifest file quarantined");
                }
                Err(e) => return Err(e),
            }
        }
        if moved > 0 {
            tracing::info!(
                manifests = moved,
                "manifest files moved into the manifest log"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::super::checksum::Checksum;
    use super::super::manifest::tests::{inline, live};
    use super::super::tests::open_temp;
    use super::*;
    use std::fs;

    /// One bit of the log's first record flips on disk, under a store
    /// opened on `root`.
    fn flip_a_bit_of_the_first_record(root: &std::path::Path) {
        let path = root.join("manifests/log");
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
    }

    fn quarantined(store: &Store) -> usize {
        fs::read_dir(store.root().join("quarantine"))
            .unwrap()
            .count()
    }

    #[test]
    fn put_then_get() {
        let (dir, store) = open_temp();
        let m = live("notes.txt", 10, 4, 1);
        assert!(store.put_manifest(&m).unwrap());
        assert_eq!(store.get_manifest(&m.key()).unwrap(), Some(m.clone()));
        assert_eq!(store.get_manifest(&Id::hash(b"other")).unwrap(), None);
        let encoded = serde_json::to_vec(&m).unwrap().len() as u64;
        let stats = store.stats();
        assert_eq!(
            (stats.manifests, stats.tombstones, stats.bytes),
            (1, 0, encoded)
        );
        // The record is the JSON, its length, kind and key (25 bytes) and
        // 16 bytes of hash.
        assert_eq!(stats.manifest_log_bytes, encoded + 25 + 16);
        // One log, no file per manifest.
        let names: Vec<_> = fs::read_dir(dir.path().join("manifests"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["log"]);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_manifest(&m.key()).unwrap(), Some(m));
        assert_eq!(store.stats(), stats);
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
    fn malformed_json_in_the_log_is_corrupt_not_a_panic() {
        let (dir, store) = open_temp();
        let m = live("doc.txt", 10, 4, 1);
        let key = m.key();
        store.put_manifest(&m).unwrap();
        // Records that pass their hash but do not hold a manifest, as a
        // bug or an older version might have written them.
        store
            .log()
            .put(&key, b"{\"name\": \"doc.txt\", \"size\": ")
            .unwrap();

        let err = store.get_manifest(&key).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(quarantined(&store), 1);
        assert_eq!(store.get_manifest(&key).unwrap(), None);
        assert_eq!(store.stats().manifests, 0);
        // A fresh write of the file is accepted over the hole.
        assert!(store.put_manifest(&m).unwrap());

        // The same again, discovered by put and by open instead of get.
        store.log().put(&key, b"\xff\xfe not even utf-8").unwrap();
        assert!(store.put_manifest(&live("doc.txt", 10, 4, 1)).unwrap());
        assert_eq!(quarantined(&store), 2);
        store.log().put(&key, b"[]").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(quarantined(&store), 3);
        assert_eq!(store.stats().manifests, 0);
    }

    #[test]
    fn a_damaged_record_is_quarantined_and_rewritten() {
        let (dir, store) = open_temp();
        let m = live("doc.txt", 10, 4, 1);
        store.put_manifest(&m).unwrap();
        flip_a_bit_of_the_first_record(dir.path());
        let err = store.get_manifest(&m.key()).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(quarantined(&store), 1);
        assert_eq!(store.get_manifest(&m.key()).unwrap(), None);
        assert!(store.put_manifest(&m).unwrap());
        assert_eq!(store.get_manifest(&m.key()).unwrap(), Some(m));
    }

    /// Which version wins is read from the index: a newer stamp replaces
    /// the stored record and an older one is refused without either being
    /// read, so a damaged record in the way does not stop them (and is not
    /// quarantined; it is dead from then on). An equal stamp reads it.
    #[test]
    fn the_index_decides_between_stamps_that_differ() {
        let (dir, store) = open_temp();
        let v2 = live("doc.txt", 10, 4, 2);
        store.put_manifest(&v2).unwrap();
        flip_a_bit_of_the_first_record(dir.path());

        assert!(!store.put_manifest(&live("doc.txt", 10, 4, 1)).unwrap());
        let v3 = live("doc.txt", 10, 4, 3);
        assert!(store.put_manifest(&v3).unwrap());
        assert_eq!(quarantined(&store), 0);
        assert_eq!(store.get_manifest(&v3.key()).unwrap(), Some(v3.clone()));
        assert_eq!(store.manifest_stamp(&v3.key()), Some(v3.stamp()));

        // The same stamp again with other metadata is told apart by the
        // stored manifest itself.
        let mut later = v3.clone();
        later.modified_ms += 1;
        assert!(store.put_manifest(&later).unwrap());
        assert!(!store.put_manifest(&v3).unwrap());
        assert_eq!(store.get_manifest(&v3.key()).unwrap(), Some(later));
    }

    #[test]
    fn well_formed_but_wrong_manifests_are_corrupt() {
        let (_dir, store) = open_temp();
        let m = live("real.txt", 10, 4, 1);
        store.put_manifest(&m).unwrap();
        let key = m.key();
        // Valid JSON of another file's manifest, under this file's key.
        store
            .log()
            .put(
                &key,
                &serde_json::to_vec(&live("impostor", 10, 4, 9)).unwrap(),
            )
            .unwrap();
        assert!(matches!(store.get_manifest(&key), Err(Error::Corrupt(_))));
        // Valid JSON whose chunk list does not fit its size.
        store.put_manifest(&m).unwrap();
        let mut broken = m.clone();
        broken.chunks.clear();
        store
            .log()
            .put(&key, &serde_json::to_vec(&broken).unwrap())
            .unwrap();
        assert!(matches!(store.get_manifest(&key), Err(Error::Corrupt(_))));
        // Listing skips what is corrupt instead of failing.
        store.put_manifest(&m).unwrap();
        store.put_manifest(&live("other.txt", 0, 0, 1)).unwrap();
        store.log().put(&key, b"null").unwrap();
        let listed = store.manifests().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "other.txt");
        assert_eq!(quarantined(&store), 3);
    }

    #[test]
    fn manifest_files_of_the_layout_before_the_log_are_moved_in() {
        let (dir, store) = open_temp();
        let newer_in_log = live("both.txt", 10, 4, 5);
        store.put_manifest(&newer_in_log).unwrap();
        drop(store);
        // Files as a node kept them before the log: one valid, one older
        // than what the log holds, one corrupt, and a stray name.
        let files = dir.path().join("manifests");
        let only_file = live("only-file.txt", 10, 4, 2);
        let write = |m: &Manifest| {
            fs::write(
                files.join(format!("{}.json", m.key().to_hex())),
                serde_json::to_vec(m).unwrap(),
            )
            .unwrap()
        };
        write(&only_file);
        write(&live("both.txt", 10, 4, 3));
        let corrupt = Id::hash(b"corrupt.txt");
        fs::write(files.join(format!("{}.json", corrupt.to_hex())), b"{").unwrap();
        fs::write(files.join("notes.txt"), b"x").unwrap();

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.get_manifest(&only_file.key()).unwrap(),
            Some(only_file)
        );
        assert_eq!(
            store.get_manifest(&newer_in_log.key()).unwrap(),
            Some(newer_in_log)
        );
        assert_eq!(store.get_manifest(&corrupt).unwrap(), None);
        assert_eq!(store.stats().manifests, 2);
        assert_eq!(quarantined(&store), 1);
        let mut left: Vec<_> = fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["log", "notes.txt"]);
    }

    #[test]
    fn records_holding_inline_bytes_in_hex_still_read_and_new_ones_are_raw() {
        let (dir, store) = open_temp();
        // As a node wrote a small file before the raw form: its JSON alone.
        let old = inline("old.txt", &[0x5a; 4096]);
        store
            .log()
            .put(&old.key(), &serde_json::to_vec(&old).unwrap())
            .unwrap();
        let new = inline("new.txt", &[0xa5; 4096]);
        assert!(store.put_manifest(&new).unwrap());
        let stored = store.log().get(&new.key()).unwrap().unwrap();
        assert_eq!(stored, new.to_stored().unwrap());
        assert!(stored.len() < 4096 + 300, "{} bytes", stored.len());
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_manifest(&old.key()).unwrap(), Some(old.clone()));
        assert_eq!(store.get_manifest(&new.key()).unwrap(), Some(new));
        assert_eq!(store.stats().manifests, 2);
        assert_eq!(quarantined(&store), 0);
        // A resend of the old version is the same version: nothing written.
        assert!(!store.put_manifest(&old).unwrap());
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
