//! Chunk buffers aligned for direct I/O, kept for reuse.
//!
//! A chunk's bytes are gathered in one buffer as its pieces arrive (an
//! upload on a node, a download on a client, an upload cut from a stream
//! such as the gateway's) and read into one from disk (a node serving
//! `GetChunk`). Fresh memory for each costs a page fault
//! per 4 KiB as it is first written: on a 512 MiB upload, 72% of the
//! nodes' page faults were in the gather (`perf record -e page-faults`;
//! see PERFORMANCE.md). So a buffer of [`POOLED_MIN_BYTES`] or more goes
//! back to a small pool when the last `Bytes` made of it drops, and the
//! next chunk of about its size takes it from there.
//!
//! The pool holds at most [`IDLE_MAX`] buffers of at most
//! [`POOLED_MAX_BYTES`] each, so reuse adds at most that much idle memory
//! to what the transfers in flight hold (`parallel × chunk` on a client,
//! the buffer budget on a node); with the default 4 MiB chunks, 16 MiB.
//! A full pool keeps a buffer given back in place of its oldest one, so
//! what it holds follows the sizes in use: a node's uploads gather 1 MiB
//! blocks and its downloads read whole chunks (change 69).
//!
//! The bytes of a buffer start on a [`DIRECT_ALIGN`] boundary, so a direct
//! write takes them as they are, without a copy into an aligned buffer.

use std::sync::Mutex;

use bytes::Bytes;

use super::chunks::PREALLOCATED_BYTES;

/// Alignment of a direct write's buffer, file offset and length: the
/// largest logical block size in common use, so one value serves every
/// device.
pub(super) const DIRECT_ALIGN: usize = 4096;

/// Smallest buffer worth keeping: below it a fresh one costs few faults,
/// and small chunks would otherwise hold large buffers.
const POOLED_MIN_BYTES: usize = 1024 * 1024;

/// Largest buffer worth keeping: one gathered for the largest chunk a
/// buffer is made for up front ([`PREALLOCATED_BYTES`], 8 MiB), with its
/// alignment slack. Larger chunks are rare, and four idle buffers of them
/// would be a lot to hold.
const POOLED_MAX_BYTES: usize = PREALLOCATED_BYTES + 4 * DIRECT_ALIGN;

/// Most idle buffers kept: the default chunks in flight of one transfer.
const IDLE_MAX: usize = 4;

/// Idle buffers, each fully initialized.
#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
}

/// The pool of this process.
static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer with room for at least `room` bytes: an idle one of
    /// up to twice that room if there is one, a zeroed new one if not. A
    /// new one has a block more than asked, so that a buffer gathered for
    /// a chunk serves a read of a chunk of its size too (which asks for a
    /// block more than the file, to see a file that grew).
    fn buf(&'static self, room: usize) -> AlignedBuf {
        let vec = self
            .take(room)
            .unwrap_or_else(|| vec![0u8; room.next_multiple_of(DIRECT_ALIGN) + 2 * DIRECT_ALIGN]);
        let start = vec.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            vec,
            start,
            len: 0,
            pool: self,
        }
    }

    /// An idle buffer with at least `room` aligned bytes and no more than
    /// twice that, if there is one.
    fn take(&self, room: usize) -> Option<Vec<u8>> {
        if room < POOLED_MIN_BYTES / 2 {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |vec: &Vec<u8>| {
            let aligned = vec.len() - vec.as_ptr().align_offset(DIRECT_ALIGN);
            aligned >= room && aligned <= 2 * room + DIRECT_ALIGN
        };
        let at = idle.iter().position(fits)?;
        // In order, oldest first: `give_back` drops from the front.
        Some(idle.remove(at))
    }

    /// Keeps `vec` if its size is one worth keeping, in place of the
    /// buffer given back longest ago if the pool is full.
    fn give_back(&self, vec: Vec<u8>) {
        if (POOLED_MIN_BYTES..=POOLED_MAX_BYTES).contains(&vec.len()) {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let oldest = (idle.len() == IDLE_MAX).then(|| idle.remove(0));
            idle.push(vec);
            // Freed once the lock is let go.
            drop(idle);
            drop(oldest);
        }
    }
}

/// Bytes gathered from an aligned start, in memory taken from the pool
/// (or fresh) and given back to it on drop.
#[derive(Debug)]
pub struct AlignedBuf {
    /// Fully initialized; `start` is the first aligned byte.
    vec: Vec<u8>,
    start: usize,
    /// Bytes held, from `start` on.
    len: usize,
    pool: &'static Pool,
}

impl AlignedBuf {
    /// An empty buffer with room for at least `room` bytes: an idle one of
    /// up to twice that room if the pool has one, a zeroed new one if not.
    pub fn with_room(room: usize) -> AlignedBuf {
        POOL.buf(room)
    }

    /// Bytes it can hold without moving.
    pub fn room(&self) -> usize {
        self.vec.len() - self.start
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    /// Appends `piece`, moving to a buffer of twice the room (or what it
    /// takes) if it does not fit.
    pub fn extend_from_slice(&mut self, piece: &[u8]) {
        let needed = self.len + piece.len();
        if needed > self.room() {
            let mut larger = self.pool.buf(needed.max(2 * self.room()));
            larger.extend_from_slice(self.as_slice());
            *self = larger;
        }
        let at = self.start + self.len;
        self.vec[at..at + piece.len()].copy_from_slice(piece);
        self.len = needed;
    }

    /// Appends as much of `data` as keeps it at most `cap` bytes long, and
    /// returns the rest: how a writer fills blocks of one size.
    pub fn fill_to<'a>(&mut self, cap: usize, data: &'a [u8]) -> &'a [u8] {
        let n = cap.saturating_sub(self.len).min(data.len());
        self.extend_from_slice(&data[..n]);
        &data[n..]
    }

    /// The room after the bytes held (aligned when they fill whole
    /// blocks), to read into; [`AlignedBuf::commit`] keeps what was.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let at = self.start + self.len;
        &mut self.vec[at..]
    }

    /// Counts `n` more bytes, written through [`AlignedBuf::spare_mut`], as
    /// held.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.room() - self.len, "commit past the buffer's room");
        self.len += n;
    }

    /// Forgets the bytes held, keeping the room.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The bytes held, which give the buffer back to the pool when the
    /// last of their clones and slices drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.vec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of the test's own, so tests running at once do not share.
    fn own_pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    /// Bytes keep their order and their alignment through growth, reads
    /// into the spare room and freezing, and a frozen buffer's memory is
    /// handed out again once the last slice of it is dropped.
    #[test]
    fn buffers_hold_their_bytes_aligned_and_are_reused() {
        let pool = own_pool();
        let data: Vec<u8> = (0..3 * POOLED_MIN_BYTES + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut buf = pool.buf(10);
        for piece in data.chunks(100_003) {
            buf.extend_from_slice(piece);
            assert_eq!(buf.as_slice().as_ptr().addr() % DIRECT_ALIGN, 0);
        }
        assert_eq!(buf.as_slice(), &data[..]);

        let mut read = pool.buf(2 * POOLED_MIN_BYTES);
        read.spare_mut()[..3].copy_from_slice(b"abc");
        read.commit(3);
        read.extend_from_slice(b"de");
        assert_eq!(read.as_slice(), b"abcde");
        read.clear();
        assert!(read.is_empty());

        let bytes = buf.freeze();
        assert_eq!(&bytes[..], &data[..]);
        assert_eq!(bytes.as_ptr().addr() % DIRECT_ALIGN, 0);
        let addr = bytes.as_ptr().addr();
        let slice = bytes.slice(5..10);
        drop(bytes);
        assert_eq!(&slice[..], &data[5..10], "a slice keeps the buffer alive");
        assert!(
            pool.take(data.len()).is_none(),
            "not back while a slice lives"
        );
        drop(slice);
        let again = pool.buf(data.len());
        assert_eq!(
            again.spare_mut_addr(),
            addr,
            "the same memory, handed out again"
        );
        assert!(again.is_empty() && again.room() >= data.len());
    }

    #[test]
    fn a_block_fills_to_its_size_and_hands_back_the_rest() {
        let mut block = AlignedBuf::with_room(8);
        assert_eq!(block.fill_to(8, b"abcde"), b"");
        assert_eq!(block.fill_to(8, b"fghij"), b"ij");
        assert_eq!(block.as_slice(), b"abcdefgh");
        assert_eq!(block.fill_to(8, b"k"), b"k");
    }

    /// The pool keeps no buffers smaller or larger than it pools and no
    /// more than [`IDLE_MAX`], and does not hand a large buffer to a small
    /// chunk.
    #[test]
    fn the_pool_stays_bounded() {
        let pool = own_pool();
        let bufs: Vec<AlignedBuf> = (0..IDLE_MAX + 2)
            .map(|_| pool.buf(POOLED_MIN_BYTES))
            .collect();
        drop(pool.buf(4096));
        drop(pool.buf(POOLED_MAX_BYTES));
        drop(bufs);
        let sizes: Vec<usize> = pool.idle.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes.len(), IDLE_MAX);
        assert!(sizes
            .iter()
            .all(|len| (POOLED_MIN_BYTES..=POOLED_MAX_BYTES).contains(len)));
        assert!(pool.take(4096).is_none());
        assert!(pool.take(POOLED_MIN_BYTES / 4).is_none());
        assert!(pool.take(4 * POOLED_MIN_BYTES).is_none());
        assert!(pool.take(POOLED_MIN_BYTES).is_some());
    }

    /// A full pool takes a buffer of another size in place of its oldest,
    /// so a node whose blocks filled the pool during uploads still reuses
    /// the whole-chunk buffers its downloads read into.
    #[test]
    fn a_full_pool_keeps_the_newest_buffers() {
        let pool = own_pool();
        let blocks: Vec<AlignedBuf> = (0..IDLE_MAX).map(|_| pool.buf(POOLED_MIN_BYTES)).collect();
        drop(blocks);
        let chunk = 4 * POOLED_MIN_BYTES;
        assert!(pool.take(chunk).is_none(), "only blocks so far");
        drop(pool.buf(chunk));
        assert_eq!(pool.idle.lock().unwrap().len(), IDLE_MAX);
        assert!(pool.take(chunk).is_some(), "the chunk buffer is kept");
        assert!(
            pool.take(POOLED_MIN_BYTES).is_some(),
            "and the newer blocks"
        );
    }

    impl AlignedBuf {
        fn spare_mut_addr(&self) -> usize {
            self.vec[self.start..].as_ptr().addr()
        }
    }
}
