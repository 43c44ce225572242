//! Streaming, parallel leaf hashing.
//!
//! The ext4 writer produces an image front to back, and hashing it is the
//! slow part of computing a layer hash. So the writer's bytes are collected
//! into batches, and each full batch is hashed by one of a few worker
//! threads while the writer fills the next one. At most one batch per
//! worker, plus one, waits for the workers; beyond that the writer hashes
//! the next batch itself, which bounds memory and keeps the writer's core
//! busy. Leaves are hashed two at a time (`confsum_sha256x2`).
//!
//! The workers are plain threads that block on a queue, not a rayon pool:
//! between batches rayon's idle workers spin and yield, and on a two-core
//! machine that spinning took CPU from the writer, which is the other half
//! of the work (thousands of `sched_yield` calls per layer of small files).

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::{fmt, io, mem, thread};

use confsum_ext4::{BlockSink, SharedChunk};
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::Error;
use crate::root::{BLOCK_SIZE, HASH_SIZE, RootHash, ZERO_BLOCK_HASH, padded_hashes, salted_hash};
use crate::tree::VerityTree;

/// Bytes per batch: enough blocks to keep every core busy, few enough that
/// the first batch starts hashing soon.
const BATCH_BYTES: usize = 2 << 20;

/// Most worker threads; more would only add memory on top of what the
/// writer can feed.
const MAX_WORKERS: usize = 8;

type Hash = [u8; HASH_SIZE];

/// Computes a dm-verity tree from an image as it is written.
///
/// Implements [`BlockSink`], so it can take an image straight from the ext4
/// writer (alone, or paired with a file sink). Appends are hashed on all
/// cores while the caller keeps writing; whole zero blocks are not hashed at
/// all, and [`BlockSink::overwrite_block`] replaces a block's hash wherever
/// the block is in the pipeline.
///
/// Call [`VerityHasher::root_hash`] or [`VerityHasher::into_tree`] at the
/// end; calling [`BlockSink::finish`] first is allowed but not needed.
///
/// ```
/// use confsum_ext4::BlockSink;
/// use confsum_verity::{VerityHasher, root_hash};
///
/// // An image of one data block followed by a zero block.
/// let mut hasher = VerityHasher::new();
/// hasher.append(&[0xab; 4096])?;
/// hasher.append_zeros(4096)?;
/// let root = hasher.root_hash()?;
///
/// let mut image = vec![0xab; 4096];
/// image.resize(8192, 0);
/// assert_eq!(root, root_hash(&image[..])?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VerityHasher {
    /// Bytes not yet handed to a worker. Starts at a block boundary and may
    /// end with part of a block.
    buf: Vec<u8>,
    /// Where the whole blocks of `buf` go in `leaves`, in order; blocks are
    /// not contiguous when zero runs were appended between them.
    runs: Vec<Run>,
    /// Pieces of the input's buffers for the next batch, hashed where they
    /// are rather than copied into `buf`.
    shared: Vec<SharedRun>,
    /// Bytes in `shared`.
    shared_bytes: usize,
    /// The start of a block, as a piece of an input buffer; never set
    /// while `buf` ends inside a block. Usually the end of a file, which
    /// the zeros that follow complete without a copy.
    tail: Option<SharedChunk>,
    /// One hash per whole block appended. Blocks still in `buf` or in flight
    /// hold a placeholder until their batch comes back.
    leaves: Vec<Hash>,
    /// Batches being hashed, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Buffers of finished batches, kept for reuse.
    spare: Vec<Vec<u8>>,
    /// Hashes of overwritten blocks. Applied after all batches are merged,
    /// so they win over whatever the block held when it was hashed.
    overwrites: BTreeMap<usize, Hash>,
    batch_bytes: usize,
}

/// `blocks` consecutive blocks of a batch whose hashes go to `leaves[leaf..]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    leaf: usize,
    blocks: usize,
}

/// Blocks of an input buffer whose hashes go to `leaves[leaf..]`; a short
/// last block is padded with zeros.
struct SharedRun {
    leaf: usize,
    chunk: SharedChunk,
}

struct InFlight {
    /// Where the batch's hashes go: `buf`'s blocks, then the shared pieces'.
    runs: Vec<Run>,
    done: Receiver<(Vec<Hash>, Vec<u8>)>,
}

impl fmt::Debug for VerityHasher {
    // Not derived: that would print megabytes of buffered data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerityHasher")
            .field("len", &self.len())
            .field("batches_in_flight", &self.in_flight.len())
            .field("overwritten_blocks", &self.overwrites.len())
            .finish_non_exhaustive()
    }
}

impl Default for VerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl VerityHasher {
    /// A hasher for an empty image.
    pub fn new() -> Self {
        Self::with_batch_bytes(BATCH_BYTES)
    }

    /// A hasher with `batch_bytes` (a whole number of blocks) per batch.
    fn with_batch_bytes(batch_bytes: usize) -> Self {
        VerityHasher {
            buf: Vec::with_capacity(batch_bytes),
            runs: Vec::new(),
            shared: Vec::new(),
            shared_bytes: 0,
            tail: None,
            leaves: Vec::new(),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            overwrites: BTreeMap::new(),
            batch_bytes,
        }
    }

    /// Finishes hashing and returns the whole tree.
    ///
    /// Fails if the image is empty or not a whole number of blocks.
    pub fn into_tree(mut self) -> Result<VerityTree, Error> {
        self.drain()?;
        let mut leaves = mem::take(&mut self.leaves);
        for (index, hash) in mem::take(&mut self.overwrites) {
            if let Some(leaf) = leaves.get_mut(index) {
                *leaf = hash;
            }
        }
        VerityTree::from_leaves(leaves)
    }

    /// Finishes hashing and returns the root hash.
    ///
    /// Fails if the image is empty or not a whole number of blocks.
    pub fn root_hash(self) -> Result<RootHash, Error> {
        Ok(self.into_tree()?.root_hash())
    }

    /// Bytes appended so far.
    fn len(&self) -> u64 {
        let tail = self.tail.as_ref().map_or(0, |t| t.len());
        self.leaves.len() as u64 * BLOCK_SIZE as u64
            + (self.buf.len() % BLOCK_SIZE) as u64
            + tail as u64
    }

    /// Moves a shared tail into `buf`, before bytes that cannot be shared.
    fn copy_tail(&mut self) -> Result<(), Error> {
        match self.tail.take() {
            Some(tail) => self.append_bytes(&tail),
            None => Ok(()),
        }
    }

    fn append_chunk(&mut self, chunk: &SharedChunk) -> Result<(), Error> {
        let mut start = 0;
        if self.tail.is_some() || self.buf.len() % BLOCK_SIZE != 0 {
            // Finish the open block by copying; at most one block per call.
            self.copy_tail()?;
            let open = self.buf.len() % BLOCK_SIZE;
            start = chunk.len().min(BLOCK_SIZE - open);
            self.append_bytes(chunk.get(..start).unwrap_or_default())?;
            if self.buf.len() % BLOCK_SIZE != 0 {
                return Ok(());
            }
        }
        let rest = chunk.len() - start;
        let whole = rest / BLOCK_SIZE * BLOCK_SIZE;
        if let Some(piece) = chunk.slice(start..start + whole).filter(|_| whole > 0) {
            self.push_shared(piece)?;
        }
        if whole < rest {
            self.tail = chunk.slice(start + whole..chunk.len());
        }
        Ok(())
    }

    /// Queues whole blocks, or one short block to be padded with zeros.
    fn push_shared(&mut self, chunk: SharedChunk) -> Result<(), Error> {
        let leaf = self.leaves.len();
        let blocks = chunk.len().div_ceil(BLOCK_SIZE);
        self.shared_bytes += blocks * BLOCK_SIZE;
        self.shared.push(SharedRun { leaf, chunk });
        self.push_leaves([0; HASH_SIZE], blocks)?;
        if self.shared_bytes + self.buf.len() >= self.batch_bytes {
            self.submit()?;
        }
        Ok(())
    }

    fn append_bytes(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let room = self.batch_bytes - self.buf.len();
            let (head, rest) = data.split_at(room.min(data.len()));
            let before = self.buf.len() / BLOCK_SIZE;
            self.buf.extend_from_slice(head);
            self.add_batch_blocks(self.buf.len() / BLOCK_SIZE - before)?;
            // `batch_bytes` is whole blocks, so a full batch has no partial tail.
            if self.buf.len() + self.shared_bytes >= self.batch_bytes {
                self.submit()?;
            }
            data = rest;
        }
        Ok(())
    }

    /// Records that `blocks` more whole blocks of `buf` are complete.
    fn add_batch_blocks(&mut self, blocks: usize) -> Result<(), Error> {
        if blocks == 0 {
            return Ok(());
        }
        let leaf = self.leaves.len();
        match self.runs.last_mut() {
            Some(run) if run.leaf + run.blocks == leaf => run.blocks += blocks,
            _ => self.runs.push(Run { leaf, blocks }),
        }
        self.push_leaves([0; HASH_SIZE], blocks)
    }

    fn push_leaves(&mut self, hash: Hash, count: usize) -> Result<(), Error> {
        // A huge zero run must fail cleanly rather than abort on allocation.
        self.leaves
            .try_reserve(count)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.leaves.resize(self.leaves.len() + count, hash);
        Ok(())
    }

    fn append_zero_bytes(&mut self, mut len: u64) -> Result<(), Error> {
        const ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
        if let Some(tail) = self.tail.take() {
            let pad = (BLOCK_SIZE - tail.len()) as u64;
            if len < pad {
                self.tail = Some(tail);
                self.copy_tail()?;
            } else {
                // The file's last block: hashed from the input buffer, with
                // the zeros added by the worker.
                len -= pad;
                self.push_shared(tail)?;
            }
        }
        let partial = self.buf.len() % BLOCK_SIZE;
        if partial != 0 {
            let n = len.min((BLOCK_SIZE - partial) as u64) as usize;
            self.append_bytes(ZEROS.get(..n).unwrap_or(&ZEROS))?;
            len -= n as u64;
        }
        // Now at a block boundary: whole zero blocks get the known hash.
        let whole = len / BLOCK_SIZE as u64;
        let count =
            usize::try_from(whole).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.push_leaves(ZERO_BLOCK_HASH, count)?;
        let rest = (len % BLOCK_SIZE as u64) as usize;
        self.append_bytes(ZEROS.get(..rest).unwrap_or(&ZEROS))
    }

    fn overwrite(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> Result<(), Error> {
        let blocks = self.leaves.len() as u64;
        let slot = usize::try_from(index)
            .ok()
            .filter(|&i| i < self.leaves.len())
            .ok_or(Error::OverwritePastEnd { index, blocks })?;
        // Hashing one block here is cheaper than chasing it through the pipeline.
        self.overwrites.insert(slot, salted_hash(block));
        Ok(())
    }

    /// Hands the whole blocks in `buf` to the pool.
    fn submit(&mut self) -> Result<(), Error> {
        let whole = self.buf.len() / BLOCK_SIZE * BLOCK_SIZE;
        if whole == 0 && self.shared.is_empty() {
            return Ok(());
        }
        while self.merge_oldest(false)? {}
        // As many batches wait as there are workers, and one more: rather
        // than wait for the oldest, hash this one here. Waiting left this
        // thread's core to the workers while the image it should be
        // converting stood still (1.11x faster on small files).
        let inline = self.in_flight.len() > workers().map_or(0, Workers::count);
        let mut next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.batch_bytes));
        next.extend_from_slice(self.buf.get(whole..).unwrap_or_default());
        let mut batch = mem::replace(&mut self.buf, next);
        batch.truncate(whole);
        let mut runs = mem::take(&mut self.runs);
        let pieces = mem::take(&mut self.shared);
        self.shared_bytes = 0;
        runs.extend(pieces.iter().map(|p| Run {
            leaf: p.leaf,
            blocks: p.chunk.len().div_ceil(BLOCK_SIZE),
        }));
        let blocks = runs.iter().map(|r| r.blocks).sum();

        // Capacity 1: the worker never blocks on sending its one result.
        let (tx, done) = mpsc::sync_channel(1);
        let job = move || {
            let mut hashes: Vec<Hash> = Vec::with_capacity(blocks);
            let whole = batch.chunks_exact(BLOCK_SIZE);
            let shared = pieces.iter().flat_map(|p| p.chunk.chunks(BLOCK_SIZE));
            padded_hashes(whole.chain(shared), &mut hashes);
            drop(pieces);
            // The hasher may have been dropped; then nobody wants the result.
            let _ = tx.send((hashes, batch));
        };
        match workers() {
            Some(workers) if !inline => workers.run(Box::new(job)),
            // Also when no threads could be started: still correct.
            _ => job(),
        }
        self.in_flight.push_back(InFlight { runs, done });
        Ok(())
    }

    /// Stores the oldest batch's hashes, waiting for them if `wait`;
    /// `false` when there was nothing (yet) to store.
    fn merge_oldest(&mut self, wait: bool) -> Result<bool, Error> {
        let Some(oldest) = self.in_flight.front() else {
            return Ok(false);
        };
        let stopped = || io::Error::other("dm-verity hashing worker stopped");
        let result = if wait {
            oldest.done.recv().map_err(|_| stopped())?
        } else {
            match oldest.done.try_recv() {
                Ok(result) => result,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Err(stopped().into()),
            }
        };
        let Some(batch) = self.in_flight.pop_front() else {
            return Ok(false);
        };
        let (hashes, mut buf) = result;
        let mut hashes = hashes.into_iter();
        for run in batch.runs {
            if let Some(slots) = self.leaves.get_mut(run.leaf..run.leaf + run.blocks) {
                slots.iter_mut().zip(&mut hashes).for_each(|(s, h)| *s = h);
            }
        }
        if self.spare.len() <= workers().map_or(0, Workers::count) {
            buf.clear();
            self.spare.push(buf);
        }
        Ok(true)
    }

    /// Hashes everything appended so far; fails on a partial last block.
    fn drain(&mut self) -> Result<(), Error> {
        if self.tail.is_some() || self.buf.len() % BLOCK_SIZE != 0 {
            return Err(Error::NotBlockAligned { len: self.len() });
        }
        self.submit()?;
        while self.merge_oldest(true)? {}
        Ok(())
    }
}

impl BlockSink for VerityHasher {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.copy_tail()
            .and_then(|()| self.append_bytes(data))
            .map_err(Error::into_io)
    }

    fn append_shared(&mut self, chunk: &SharedChunk) -> io::Result<()> {
        self.append_chunk(chunk).map_err(Error::into_io)
    }

    fn append_zeros(&mut self, len: u64) -> io::Result<()> {
        self.append_zero_bytes(len).map_err(Error::into_io)
    }

    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        self.overwrite(index, block).map_err(Error::into_io)
    }

    /// Waits for all hashing; fails if the image ends inside a block.
    fn finish(&mut self) -> io::Result<()> {
        self.drain().map_err(Error::into_io)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that hash batches, shared by every hasher in the process.
///
/// Threads of our own rather than rayon's global pool: callers may drive a
/// hasher from a global-pool thread (say, one layer per thread), and waiting
/// for a batch there could block every thread the batch needs.
struct Workers {
    queue: Mutex<Sender<Job>>,
    count: usize,
}

impl Workers {
    fn count(&self) -> usize {
        self.count
    }

    fn run(&self, job: Job) {
        let sent = match self.queue.lock() {
            Ok(queue) => queue.send(job),
            Err(poisoned) => poisoned.into_inner().send(job),
        };
        // Every worker is gone (they never exit while the queue lives):
        // run it here.
        if let Err(mpsc::SendError(job)) = sent {
            job();
        }
    }
}

/// The batch workers, one per core (at most [`MAX_WORKERS`]); `None` if
/// no thread could be started.
fn workers() -> Option<&'static Workers> {
    static WORKERS: OnceLock<Option<Workers>> = OnceLock::new();
    WORKERS
        .get_or_init(|| {
            let wanted = thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS);
            let (queue, jobs) = mpsc::channel::<Job>();
            let jobs = std::sync::Arc::new(Mutex::new(jobs));
            let mut count = 0;
            for i in 0..wanted {
                let jobs = jobs.clone();
                let started = thread::Builder::new()
                    .name(format!("confsum-verity-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only while waiting for a job.
                            let job = match jobs.lock() {
                                Ok(rx) => rx.recv(),
                                Err(poisoned) => poisoned.into_inner().recv(),
                            };
                            let Ok(job) = job else { break };
                            // A panicking job drops its result sender, which
                            // its hasher reports as an error; the worker lives on.
                            let _ = catch_unwind(AssertUnwindSafe(job));
                        }
                    });
                if started.is_ok() {
                    count += 1;
                }
            }
            (count > 0).then(|| Workers {
                queue: Mutex::new(queue),
                count,
            })
        })
        .as_ref()
}

/// The pool that builds upper levels.
///
/// A pool of our own rather than rayon's global one: callers may drive a
/// hasher from a global-pool thread (say, one layer per thread), and waiting
/// for a batch there could block every thread the batch needs.
pub(crate) fn pool() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        ThreadPoolBuilder::new()
            .thread_name(|i| format!("confsum-verity-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::root_hash;

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    /// Small batches make every path of the pipeline run many times.
    #[test]
    fn small_batches_with_zeros_and_overwrites() {
        let blocks = 300;
        let mut image = pseudo_random(blocks * BLOCK_SIZE, 7);
        let mut hasher = VerityHasher::with_batch_bytes(4 * BLOCK_SIZE);
        let mut pos = 0;
        let mut step = 1;
        while pos < image.len() {
            let end = (pos + step * 997).min(image.len());
            if step % 3 == 0 {
                image[pos..end].fill(0);
                hasher.append_zeros((end - pos) as u64).unwrap();
            } else {
                hasher.append(&image[pos..end]).unwrap();
            }
            // Overwrite blocks in the batch being filled, in flight and done.
            let written = end / BLOCK_SIZE;
            for back in [1, 3, 9, 40] {
                if written > back && (written + back) % 5 == 0 {
                    let index = written - back;
                    let block: [u8; BLOCK_SIZE] =
                        pseudo_random(BLOCK_SIZE, (index * 31 + step) as u64)
                            .try_into()
                            .unwrap();
                    image[index * BLOCK_SIZE..][..BLOCK_SIZE].copy_from_slice(&block);
                    hasher.overwrite_block(index as u64, &block).unwrap();
                }
            }
            pos = end;
            step = step % 17 + 1;
        }
        hasher.finish().unwrap();
        assert_eq!(hasher.root_hash().unwrap(), root_hash(&image[..]).unwrap());
    }

    /// Shared pieces of every length, at and off block boundaries, with
    /// copied bytes and zeros between them, as the converter sends a tar's
    /// files and metadata.
    #[test]
    fn shared_pieces_mixed_with_copies_and_zeros() {
        let source = SharedChunk::copy_from(&pseudo_random(64 * BLOCK_SIZE, 11));
        let mut image = Vec::new();
        let mut hasher = VerityHasher::with_batch_bytes(3 * BLOCK_SIZE);
        let mut at = 0;
        for (i, len) in [1, 4096, 5000, 8192, 4095, 0, 12000, 7, 4097, 3]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let len = len.min(source.len() - at);
            let piece = source.slice(at..at + len).unwrap();
            at = (at + len) % (source.len() - 20_000);
            hasher.append_shared(&piece).unwrap();
            image.extend_from_slice(&piece);
            match i % 4 {
                // Pad to a block, as after a file's data.
                0 | 1 => {
                    let pad = (BLOCK_SIZE - image.len() % BLOCK_SIZE) % BLOCK_SIZE;
                    let pad = pad + (i % 3) * BLOCK_SIZE;
                    hasher.append_zeros(pad as u64).unwrap();
                    image.resize(image.len() + pad, 0);
                }
                // Copied metadata right after a shared piece.
                2 => {
                    let meta = pseudo_random(100 + i * 37, i as u64);
                    hasher.append(&meta).unwrap();
                    image.extend_from_slice(&meta);
                }
                // A few zeros that do not finish the block.
                _ => {
                    hasher.append_zeros(5).unwrap();
                    image.resize(image.len() + 5, 0);
                }
            }
        }
        let pad = (BLOCK_SIZE - image.len() % BLOCK_SIZE) % BLOCK_SIZE;
        hasher.append_zeros(pad as u64).unwrap();
        image.resize(image.len() + pad, 0);
        assert_eq!(hasher.root_hash().unwrap(), root_hash(&image[..]).unwrap());
    }

    #[test]
    fn shared_tail_left_open_is_unaligned() {
        let mut hasher = VerityHasher::new();
        hasher
            .append_shared(&SharedChunk::copy_from(&[1; BLOCK_SIZE + 10]))
            .unwrap();
        assert!(matches!(
            hasher.root_hash(),
            Err(Error::NotBlockAligned { len }) if len == BLOCK_SIZE as u64 + 10
        ));
    }

    #[test]
    fn hasher_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<VerityHasher>();
    }

    #[test]
    fn overwrite_past_end_is_an_error() {
        let mut hasher = VerityHasher::new();
        hasher.append(&[1; BLOCK_SIZE + 10]).unwrap();
        let err = hasher.overwrite_block(1, &[0; BLOCK_SIZE]).unwrap_err();
        let inner = err.into_inner().unwrap().downcast::<Error>().unwrap();
        assert!(matches!(
            *inner,
            Error::OverwritePastEnd {
                index: 1,
                blocks: 1
            }
        ));
    }

    #[test]
    fn unaligned_finish_is_an_error() {
        let mut hasher = VerityHasher::new();
        hasher.append_zeros(BLOCK_SIZE as u64 * 3 + 1).unwrap();
        assert_eq!(
            hasher.finish().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(matches!(
            hasher.root_hash(),
            Err(Error::NotBlockAligned { len }) if len == BLOCK_SIZE as u64 * 3 + 1
        ));
    }
}
