//! A file's whole checksum, computed on a blocking thread beside the network
//! work instead of on the async workers between chunks. A download also
//! writes each chunk to its file from that thread. A chunk that comes with
//! its hash (a chunk-tree file's, hashed as it arrived) is only written; a
//! large one without is hashed on a second thread while its write waits
//! for the device.
//!
//! Chunks are fed in file order through a queue of bounded depth: a slow
//! disk or hash holds the feeder back instead of piling chunks up in
//! memory.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::stages::{self, Stage};
use crate::store::{Algorithm, Checksum, Hasher, OutputFile, DIRECT_BLOCK_BYTES};

/// Chunks of a download or upload that may wait for the whole-file digest
/// thread: it outpaces the network, so two keep it busy.
pub const DIGEST_DEPTH: usize = 2;

/// What the thread hands back: the checksum and the bytes it saw.
type Outcome = Result<(Checksum, u64)>;

/// The size from which a chunk is hashed on a thread of its own while it
/// is written (see [`write_while_hashing`]); below it, starting the thread
/// would cost about as much as the hash.
const OVERLAP_MIN_BYTES: usize = DIRECT_BLOCK_BYTES;

/// A chunk for the thread, with its BLAKE3 hash if it is known already.
type Fed = (Bytes, Option<[u8; 32]>);

#[derive(Debug)]
pub struct FileDigest {
    queue: mpsc::Sender<Fed>,
    task: JoinHandle<Outcome>,
}

impl FileDigest {
    /// Starts the thread, hashing by `algorithm` and writing each chunk to
    /// `target` (synced at the end), if given. At most `depth` chunks wait
    /// for it.
    pub fn start(algorithm: Algorithm, depth: usize, mut target: Option<OutputFile>) -> FileDigest {
        let (queue, mut chunks) = mpsc::channel::<Fed>(depth.max(1));
        let task = tokio::task::spawn_blocking(move || -> Outcome {
            let mut hasher = Hasher::new(algorithm);
            let mut len = 0u64;
            while let Some((chunk, hash)) = chunks.blocking_recv() {
                match (&mut target, hash) {
                    (Some(file), None) if chunk.len() >= OVERLAP_MIN_BYTES => {
                        write_while_hashing(file, &mut hasher, &chunk)?;
                    }
                    (Some(file), _) => {
                        stages::time(Stage::FileWrite, || file.write_all(&chunk))?;
                        stages::time(Stage::FileDigest, || add(&mut hasher, &chunk, hash));
                    }
                    (None, _) => stages::time(Stage::FileDigest, || add(&mut hasher, &chunk, hash)),
                }
                len += chunk.len() as u64;
            }
            if let Some(file) = target {
                stages::time(Stage::FileSync, || file.finish())?;
            }
            Ok((hasher.finish(), len))
        });
        FileDigest { queue, task }
    }

    /// Hands the next chunk over, with its BLAKE3 hash if it is made
    /// already (a checksum made of chunk hashes takes it as it is; the
    /// thread hashes a chunk without one), waiting while the queue is
    /// full. Fails only if the thread has stopped; [`FileDigest::finish`]
    /// then says why.
    pub async fn push(&self, chunk: Bytes, hash: Option<[u8; 32]>) -> Result<()> {
        self.queue
            .send((chunk, hash))
            .await
            .map_err(|_| Error::Unavailable("the file digest stopped early".into()))
    }

    /// The checksum of everything pushed, and its length, once the thread
    /// has taken it all in (and synced the target file, if any).
    pub async fn finish(self) -> Result<(Checksum, u64)> {
        drop(self.queue);
        self.task
            .await
            .map_err(|e| Error::Unavailable(format!("the file digest failed: {e}")))?
    }

    /// [`FileDigest::finish`] after a feeding that ended with `fed`: the
    /// thread's own error comes first, since a failed write is why a push
    /// failed.
    pub async fn finish_after(self, fed: Result<()>) -> Result<(Checksum, u64)> {
        match (fed, self.finish().await) {
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Ok(()), done) => done,
        }
    }
}

/// Adds `chunk` to `hasher`, by its hash if that is known.
fn add(hasher: &mut Hasher, chunk: &[u8], hash: Option<[u8; 32]>) {
    match hash {
        Some(hash) => hasher.add_hashed_chunk(chunk, &hash),
        None => hasher.add_chunk(chunk),
    }
}

/// Writes `chunk` to `file` and adds it to `hasher` at once, the hash on a
/// scoped thread while the write waits for the device. One after the
/// other, a 1 GiB download spent a ninth of its time hashing with the
/// device idle on its side: overlapped, eight alternated pairs downloaded
/// 1.10× as fast (docs/PERFORMANCE.md, change 71).
fn write_while_hashing(file: &mut OutputFile, hasher: &mut Hasher, chunk: &[u8]) -> Result<()> {
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| stages::time(Stage::FileDigest, || hasher.add_chunk(chunk)));
        let written = stages::time(Stage::FileWrite, || file.write_all(chunk));
        hashing
            .join()
            .map_err(|_| Error::Unavailable("the file digest's hashing thread panicked".into()))?;
        written
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn digest_and_file_match_the_bytes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // Small parts, hashed after their write, then parts large enough
        // to be hashed beside it, then a small one again.
        let mut parts: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        for (i, len) in [OVERLAP_MIN_BYTES, 2 * OVERLAP_MIN_BYTES + 5, 17]
            .into_iter()
            .enumerate()
        {
            parts.push((0..len).map(|b| (b * 7 + i) as u8).collect());
        }
        let total = parts.iter().map(Vec::len).sum::<usize>() as u64;
        let target = OutputFile::create(&path, total).unwrap();
        let digest = FileDigest::start(Algorithm::Blake3Chunks, 1, Some(target));
        for part in &parts {
            digest.push(Bytes::from(part.clone()), None).await.unwrap();
        }
        let (checksum, len) = digest.finish().await.unwrap();
        let whole = parts.concat();
        assert_eq!(len, whole.len() as u64);
        let hashes: Vec<[u8; 32]> = parts.iter().map(|p| *blake3::hash(p).as_bytes()).collect();
        assert_eq!(checksum, Checksum::of_chunk_hashes(&hashes));
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        // And by the algorithms of older manifests, with no file.
        for algorithm in [Algorithm::Blake3, Algorithm::Sha256] {
            let digest = FileDigest::start(algorithm, 1, None);
            for part in &parts {
                digest.push(Bytes::from(part.clone()), None).await.unwrap();
            }
            let (checksum, _) = digest.finish().await.unwrap();
            assert_eq!(checksum, Checksum::of(algorithm, &whole));
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_the_error_of_the_next_push_or_the_finish() {
        // A file opened read-only: the first write fails, whether the
        // chunk is hashed after its write or beside it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        for chunk in [
            Bytes::from_static(b"abc"),
            Bytes::from(vec![1u8; OVERLAP_MIN_BYTES]),
        ] {
            let file = std::fs::File::open(&path).unwrap();
            let target = OutputFile::over(file, &path, false);
            let digest = FileDigest::start(Algorithm::Blake3, 1, Some(target));
            let mut fed = Ok(());
            for _ in 0..10 {
                fed = digest.push(chunk.clone(), None).await;
                if fed.is_err() {
                    break;
                }
            }
            let err = digest.finish_after(fed).await.unwrap_err();
            assert!(err.to_string().contains("writing"), "{err}");
        }
    }
}
