//! The disk alone: the I/O a one-file run of `bench transfer` asks of the
//! device, done with nothing else (no network, no hashing, no nodes), so
//! each run shows how near a chord-dfs setup comes to what its disk
//! allows and what is left for the software to win.
//!
//! In the bench directory, so on the disk the setups used:
//! - **writing `copies` copies** (an upload): the file's bytes as
//!   chunk-sized files, `parallel × copies` written at once, each as a node
//!   writes a chunk: created under a temporary name, written around the
//!   page cache a block at a time, synced, renamed into one of 256
//!   directories, that directory synced.
//!   Each copy goes to a directory of its own, as to a node of its own;
//! - **reading while writing** (a download to a file): those chunk files
//!   read back around the page cache, `parallel` at once, each whole, and
//!   handed as they come to one writer that puts them in one output file
//!   around the page cache and syncs it at the end.
//!
//! Where the file system refuses direct I/O both go through the page cache,
//! and the report says so.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use chord_node::store::{read_whole, AlignedBuf, OutputFile, DIRECT_BLOCK_BYTES};
use rand::RngCore;

/// What the disk alone took for one file's transfers.
#[derive(Debug, Clone, Copy)]
pub struct DiskAlone {
    /// Writing one copy of the file as synced chunk files (r=1's upload).
    pub write_one: Duration,
    /// Writing three copies at once (r=3's upload).
    pub write_three: Duration,
    /// Reading one copy back while writing the output file (a download).
    pub read_and_write: Duration,
    /// Whether the file system took direct I/O.
    pub direct: bool,
}

/// How the measurement is shaped: the bench's own file and chunk sizes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub size: u64,
    pub chunk: usize,
    pub parallel: usize,
}

impl Shape {
    fn chunks(&self) -> usize {
        usize::try_from(self.size.div_ceil(self.chunk as u64)).unwrap_or(usize::MAX)
    }

    /// The length of chunk `index`: the chunk size, less at the end.
    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * self.chunk as u64;
        (self.size - start).min(self.chunk as u64) as usize
    }
}

/// Measures the three patterns in the new directory `dir` (removed again
/// on success), on a blocking thread.
pub async fn measure(dir: PathBuf, shape: Shape) -> Result<DiskAlone> {
    tokio::task::spawn_blocking(move || measure_in(&dir, shape))
        .await
        .map_err(|e| anyhow!("the disk measurement failed: {e}"))?
}

fn measure_in(dir: &Path, shape: Shape) -> Result<DiskAlone> {
    if shape.size == 0 || shape.chunk == 0 {
        bail!("nothing to measure: the file or its chunks are empty");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let direct = takes_direct_io(dir)?;
    // Random bytes, so that no layer below can shrink them.
    let mut data = AlignedBuf::with_room(shape.chunk);
    rand::rng().fill_bytes(&mut data.spare_mut()[..shape.chunk]);
    data.commit(shape.chunk);

    let (one, output) = ([dir.join("copy-1")], dir.join("output"));
    let write_one = write_copies(&one, shape, &data, direct)?;
    let read_and_write = read_while_writing(&one[0], &output, shape, direct)?;
    remove_all(&one)?;
    std::fs::remove_file(&output).with_context(|| format!("cannot remove {}", output.display()))?;

    let three = ["copy-1", "copy-2", "copy-3"].map(|d| dir.join(d));
    let write_three = write_copies(&three, shape, &data, direct)?;
    remove_all(&three)?;
    std::fs::remove_dir(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(DiskAlone {
        write_one,
        write_three,
        read_and_write,
        direct,
    })
}

fn remove_all(dirs: &[PathBuf]) -> Result<()> {
    dirs.iter().try_for_each(|dir| {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
    })
}

/// Whether `dir`'s file system takes O_DIRECT, found out as the store
/// does: an output file of a block's length is opened around the page
/// cache where one aligned block can be written to it (only a refusal,
/// EINVAL, says no; other errors are errors).
fn takes_direct_io(dir: &Path) -> Result<bool> {
    let probe = dir.join("probe");
    let direct = OutputFile::create(&probe, DIRECT_BLOCK_BYTES as u64)?.is_direct();
    std::fs::remove_file(&probe).with_context(|| format!("cannot remove {}", probe.display()))?;
    Ok(direct)
}

/// `path`, created (it must not exist) for writing, around the page cache
/// if `direct`.
fn open_new(path: &Path, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if direct {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_DIRECT);
    }
    options.open(path)
}

/// Writes every chunk of the file once into each of `copies` (new
/// directories), `parallel` chunks per copy at once, as a node writes a
/// chunk; returns how long all of it took.
fn write_copies(
    copies: &[PathBuf],
    shape: Shape,
    data: &AlignedBuf,
    direct: bool,
) -> Result<Duration> {
    let chunks = shape.chunks();
    for copy in copies {
        for sub in std::iter::once("tmp".to_string()).chain((0..chunks.min(FAN_OUT)).map(fan_out)) {
            let dir = copy.join(sub);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..shape.parallel.max(1) * copies.len())
            .map(|_| {
                let next = &next;
                scope.spawn(move || -> Result<()> {
                    // One count over every copy of every chunk, the copies
                    // of a chunk taken one after another, as a chunk's
                    // holders write it at about the same time.
                    let total = chunks * copies.len();
                    loop {
                        let taken = next.fetch_add(1, Ordering::Relaxed);
                        if taken >= total {
                            return Ok(());
                        }
                        let (dir, index) = (&copies[taken % copies.len()], taken / copies.len());
                        let bytes = &data.as_slice()[..shape.chunk_len(index)];
                        if let Err(e) = write_chunk_file(dir, index, bytes, direct) {
                            // The others stop too: a full disk fails them all.
                            next.fetch_max(total, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow!("a disk writer panicked"))?)
    })?;
    Ok(started.elapsed())
}

/// How many directories a copy's chunk files are spread over, as a
/// node's are over `chunks/00` to `chunks/ff`.
const FAN_OUT: usize = 256;

/// The directory of chunk number `index` in its copy.
fn fan_out(index: usize) -> String {
    format!("{:02x}", index % FAN_OUT)
}

/// Writes chunk number `index` in `dir` as a node writes a chunk file:
/// under `tmp/`, then renamed into its fan-out directory, which is synced.
fn write_chunk_file(dir: &Path, index: usize, bytes: &[u8], direct: bool) -> Result<()> {
    let tmp = dir.join("tmp").join(format!("{index}"));
    let parent = dir.join(fan_out(index));
    let dest = parent.join(format!("{index}"));
    let context = || format!("cannot write {}", tmp.display());
    let file = open_new(&tmp, direct).with_context(context)?;
    // The store's own writer, handed a block at a time as a node's blocks
    // arrive, the last one padded and cut back, then synced.
    let mut file = OutputFile::over(file, &tmp, direct);
    for block in bytes.chunks(DIRECT_BLOCK_BYTES) {
        file.write_all(block)?;
    }
    file.finish()?;
    std::fs::rename(&tmp, &dest).with_context(context)?;
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", parent.display()))
}

/// Reads the chunk files in `copy`, `parallel` at once, and writes what
/// they hold, as it comes, to the file `output` as a download writes its
/// file; returns how long that took.
fn read_while_writing(copy: &Path, output: &Path, shape: Shape, direct: bool) -> Result<Duration> {
    let chunks = shape.chunks();
    let next = AtomicUsize::new(0);
    let (read, to_write) = mpsc::sync_channel::<Bytes>(shape.parallel.max(1));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..shape.parallel.max(1))
            .map(|_| {
                let (next, read) = (&next, read.clone());
                scope.spawn(move || -> Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= chunks {
                            return Ok(());
                        }
                        let path = copy.join(fan_out(index)).join(format!("{index}"));
                        let chunk = match read_chunk_file(&path, shape.chunk_len(index), direct) {
                            Ok(chunk) => chunk,
                            Err(e) => {
                                next.fetch_max(chunks, Ordering::Relaxed);
                                return Err(e);
                            }
                        };
                        if read.send(chunk).is_err() {
                            return Ok(()); // the writer stopped; it says why
                        }
                    }
                })
            })
            .collect();
        drop(read);
        // The client's own output file: around the page cache where it can
        // be, bytes gathered into aligned blocks, synced at the end.
        let written = (|| -> Result<u64> {
            let mut file = OutputFile::create(output, shape.size)?;
            let mut len = 0u64;
            for chunk in to_write {
                file.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            file.finish()?;
            Ok(len)
        })();
        for reader in readers {
            reader
                .join()
                .map_err(|_| anyhow!("a disk reader panicked"))??;
        }
        match written? {
            len if len == shape.size => Ok(()),
            len => bail!("the disk output got {len} bytes of {}", shape.size),
        }
    })?;
    Ok(started.elapsed())
}

/// Reads the whole chunk file at `path`, `len` bytes, as a node reads one.
fn read_chunk_file(path: &Path, len: usize, direct: bool) -> Result<Bytes> {
    let bytes = read_whole(path, len as u64, direct)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() != len {
        bail!("{} held {} bytes, not {len}", path.display(), bytes.len());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern runs to the end on a file that does not fill its last
    /// chunk, reads back exactly what it wrote, and leaves nothing behind.
    #[tokio::test]
    async fn every_pattern_moves_the_whole_file_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("disk");
        let shape = Shape {
            size: 3 * 1024 * 1024 + 12_345,
            chunk: 1024 * 1024,
            parallel: 2,
        };
        let alone = measure(dir.clone(), shape).await.unwrap();
        for took in [alone.write_one, alone.write_three, alone.read_and_write] {
            assert!(took > Duration::ZERO, "{alone:?}");
        }
        assert!(!dir.exists(), "left {dir:?} behind");
    }

    /// A download's output gets every byte once, whatever order the
    /// chunks are read in, the short last one included.
    #[test]
    fn the_output_is_as_long_as_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape {
            // Past a MiB, so the output goes around the page cache here.
            size: 4 * 256 * 1024 + 777,
            chunk: 256 * 1024,
            parallel: 3,
        };
        let direct = takes_direct_io(dir.path()).unwrap();
        let mut data = AlignedBuf::with_room(shape.chunk);
        data.commit(shape.chunk);
        let copy = [dir.path().join("copy")];
        write_copies(&copy, shape, &data, direct).unwrap();
        let output = dir.path().join("output");
        read_while_writing(&copy[0], &output, shape, direct).unwrap();
        assert_eq!(std::fs::metadata(&output).unwrap().len(), shape.size);
    }

    #[test]
    fn chunks_cover_the_file_and_only_the_last_is_short() {
        let shape = Shape {
            size: 10,
            chunk: 4,
            parallel: 1,
        };
        assert_eq!(shape.chunks(), 3);
        let lens: Vec<usize> = (0..3).map(|i| shape.chunk_len(i)).collect();
        assert_eq!(lens, [4, 4, 2]);
    }

    #[test]
    fn a_chunk_file_shorter_than_asked_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"abc").unwrap();
        let err = read_chunk_file(&path, 4, false).unwrap_err();
        assert!(err.to_string().contains("held 3 bytes, not 4"), "{err:#}");
    }
}
