//! The manifest log as the store reads it back at open (`replay` in
//! `store/manifest_log.rs`): a file of records, torn by a crash or damaged
//! on disk, may not crash the node or hand back a record it did not write.

use std::collections::HashMap;

use super::Outcome;
use crate::chord::Id;
use crate::store::manifest_log_fuzzing::{put, remove, replay_checked};

/// Most payload bytes a record may carry here: small, so that lengths
/// spliced in land on both sides of it.
const MAX_PAYLOAD: u64 = 1024;

pub(super) fn run() {
    super::run("manifest_log", 32768, |u| {
        // A log as the store writes it: puts and removes over a few keys,
        // and what each key should hold after them.
        let keys: Vec<Id> = (0..u.int_in_range(1..=6u8)?)
            .map(|i| Id::hash(&[i]))
            .collect();
        let mut bytes = Vec::new();
        let mut held: HashMap<Id, Vec<u8>> = HashMap::new();
        for _ in 0..u.int_in_range(0..=24)? {
            let key = *u.choose(&keys)?;
            if u.ratio(1, 4)? {
                bytes.extend(remove(&key));
                held.remove(&key);
            } else {
                let len = u.int_in_range(0..=300)?;
                let payload = u.bytes(len)?;
                bytes.extend(put(&key, payload));
                held.insert(key, payload.to_vec());
            }
        }
        let intact = bytes.clone();
        super::mutate(u, &mut bytes, TOKENS)?;
        let (whole, payloads) = replay_checked(&bytes, MAX_PAYLOAD);
        if bytes == intact {
            assert!(whole, "an intact log is taken whole");
            assert_eq!(payloads, held);
        }
        Ok(if whole {
            Outcome::Accepted
        } else {
            Outcome::Refused
        })
    });
}

/// Record heads worth splicing in: lengths at and past the limit, each
/// kind and none, and a zero length.
const TOKENS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff],
    &[0x00, 0x04, 0x00, 0x00],
    &[0x01, 0x04, 0x00, 0x00],
    &[0x00, 0x00, 0x00, 0x00],
    &[0x01],
    &[0x02],
    &[0x03],
];
