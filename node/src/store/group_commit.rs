//! Group commit of chunk writes.
//!
//! Made durable one by one, a chunk costs two fsyncs: its file, then its
//! directory after the rename. Here writers instead hand their written and
//! closed temporary files to one thread, which makes a whole batch durable
//! with two `syncfs` calls of the data directory's file system:
//!
//! 1. `syncfs`: every batched file's bytes are on disk before any final
//!    name can point at them;
//! 2. the renames (each under its key's lock);
//! 3. `syncfs`: the names are on disk;
//! 4. the chunks enter the index, so nothing (`HasChunks`, a manifest
//!    check, a duplicate write) counts a chunk that is not yet durable.
//!
//! Only then does a writer get its answer. Batches form by themselves:
//! whatever arrives while a round runs goes into the next, so one chunk
//! waits at most two rounds, and many writers share each. A crash at any
//! point leaves either a temporary file (cleared at the next open) or a
//! complete chunk under its name, never a partial one.
//!
//! Off Linux there is no `syncfs`; a round then flushes the whole machine
//! with `sync`.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc;

use crate::error::{Error, Result};

/// Step 2 of a job: moves the file into place, returning whether it wrote
/// anything (`false`: an intact copy was already there) and the step to run
/// once the move is durable.
pub(super) type Rename = Box<dyn FnOnce() -> Result<(bool, Publish)> + Send>;
/// Step 4 of a job: makes the durable chunk visible.
pub(super) type Publish = Box<dyn FnOnce() + Send>;

struct Job {
    rename: Rename,
    reply: mpsc::SyncSender<Result<bool>>,
}

/// The handle writers share; the thread ends when the last is dropped.
#[derive(Debug)]
pub(super) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl GroupCommit {
    /// Starts the thread for the file system holding `root`.
    pub fn start(root: &Path) -> Result<GroupCommit> {
        let dir =
            File::open(root).map_err(|e| Error::io(format!("opening {}", root.display()), e))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("chord-group-commit".into())
            .spawn(move || run(&dir, &queue))
            .map_err(|e| Error::io("starting the group-commit thread", e))?;
        Ok(GroupCommit { jobs })
    }

    /// Runs `rename` in the next round and waits until its effect is
    /// durable and published. Blocks: call from a blocking thread.
    pub fn commit(&self, rename: Rename) -> Result<bool> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || Error::Unavailable("the store's group-commit thread stopped".into());
        self.jobs
            .send(Job { rename, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

fn run(dir: &File, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let before = sync(dir);
        let mut renamed = Vec::with_capacity(batch.len());
        for job in batch {
            let result = match &before {
                Ok(()) => (job.rename)(),
                Err(e) => Err(copy_error(e)),
            };
            renamed.push((job.reply, result));
        }
        let after = sync(dir);
        for (reply, result) in renamed {
            let answer = match (result, &after) {
                (Ok((written, publish)), Ok(())) => {
                    publish();
                    Ok(written)
                }
                (Ok(_), Err(e)) => Err(copy_error(e)),
                (Err(e), _) => Err(e),
            };
            // A writer that gave up waiting is no one's concern.
            let _ = reply.send(answer);
        }
    }
}

/// Flushes every dirty byte and name of the file system holding `dir`.
#[cfg(target_os = "linux")]
fn sync(dir: &File) -> std::result::Result<(), io::Error> {
    rustix::fs::syncfs(dir).map_err(io::Error::from)
}

/// Without `syncfs`: the directory's own fsync does not cover the files in
/// it, so everything the machine has dirty is flushed.
#[cfg(not(target_os = "linux"))]
fn sync(_dir: &File) -> std::result::Result<(), io::Error> {
    rustix::fs::sync();
    Ok(())
}

/// One round's sync error, given to each of its writers.
fn copy_error(e: &io::Error) -> Error {
    let copy = e.raw_os_error().map_or_else(
        || io::Error::new(e.kind(), e.to_string()),
        io::Error::from_raw_os_error,
    );
    Error::io("syncing the data directory", copy)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_writer_is_answered_after_its_publish_and_errors_stay_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(GroupCommit::start(dir.path()).unwrap());
        let published = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let group = group.clone();
                    let published = published.clone();
                    s.spawn(move || {
                        let rename: Rename = Box::new(move || {
                            if i == 3 {
                                return Err(Error::invalid("job 3 fails"));
                            }
                            let publish: Publish = Box::new(move || {
                                published.fetch_add(1, Ordering::SeqCst);
                            });
                            Ok((i % 2 == 0, publish))
                        });
                        (i, group.commit(rename))
                    })
                })
                .collect();
            for h in handles {
                let (i, answer) = h.join().unwrap();
                match i {
                    3 => assert!(answer.is_err()),
                    _ => assert_eq!(answer.unwrap(), i % 2 == 0),
                }
            }
        });
        assert_eq!(published.load(Ordering::SeqCst), 15);
    }
}
