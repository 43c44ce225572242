//! Reading a layer on one thread while it is converted on another.
//!
//! Converting a layer has three stages: reading (a system-call copy out of
//! the page cache, or decompression), building the ext4 image (tar parsing
//! and metadata), and hashing the image. The hashing already runs on the
//! worker threads of [`VerityHasher`](crate::VerityHasher); without this
//! module the other two ran one after the other on the caller's thread,
//! which for a layer of small files was the slowest stage of all. Here the
//! caller's thread reads into chunks (so `R` need not be `Send`, and any
//! digest a caller computes in its reader runs there too), and a scoped
//! thread converts them, taking file data straight from the chunks.
//!
//! Chunks go back to the reader once used, so steady state allocates (and
//! zeroes) nothing, and at most [`DEPTH`] chunks wait between the threads, which
//! bounds memory whichever side is faster.

use std::io::{self, BufRead, Read};
use std::mem;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

/// Bytes per chunk: big enough that a chunk costs one system call and few
/// channel hand-offs, small enough to stay in the core's L2 cache between
/// the read that fills it and the conversion that reads it.
pub(crate) const CHUNK: usize = 256 << 10;

/// Chunks that may wait between reader and converter.
const DEPTH: usize = 4;

/// The converter's end: a [`BufRead`] over the chunks the reader sends.
pub(crate) struct Chunks {
    full: Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    /// Bytes of `cur` that hold data.
    len: usize,
    pos: usize,
    done: bool,
}

/// The reader's end.
pub(crate) struct Pump {
    full: SyncSender<io::Result<(Vec<u8>, usize)>>,
    empty: Receiver<Vec<u8>>,
}

/// A connected reader end and converter end.
pub(crate) fn channel() -> (Pump, Chunks) {
    let (full_tx, full_rx) = sync_channel(DEPTH);
    // Room for every chunk there can be, so returning one never blocks.
    let (empty_tx, empty_rx) = sync_channel(DEPTH + 2);
    (
        Pump {
            full: full_tx,
            empty: empty_rx,
        },
        Chunks {
            full: full_rx,
            empty: empty_tx,
            cur: Vec::new(),
            len: 0,
            pos: 0,
            done: false,
        },
    )
}

impl Pump {
    /// Reads `input` to its end (or until the converter stops listening)
    /// and sends it on in chunks. A read error is sent on too, and ends
    /// the reading.
    pub(crate) fn run<R: Read>(self, mut input: R) {
        loop {
            // Chunks are zeroed once, when first made, then reused as they are.
            let mut chunk = match self.empty.try_recv() {
                Ok(chunk) => chunk,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    let mut chunk = Vec::new();
                    if chunk.try_reserve_exact(CHUNK).is_err() {
                        let _ = self
                            .full
                            .send(Err(io::Error::from(io::ErrorKind::OutOfMemory)));
                        return;
                    }
                    chunk.resize(CHUNK, 0);
                    chunk
                }
            };
            let (filled, error) = fill(&mut input, &mut chunk);
            let last = error.is_some() || filled < chunk.len();
            if filled > 0 && self.full.send(Ok((chunk, filled))).is_err() {
                // The converter is done (the tar's end marker, or an
                // error): nothing more to read.
                return;
            }
            if let Some(e) = error {
                let _ = self.full.send(Err(e));
            }
            if last {
                return;
            }
        }
    }
}

/// Reads until `buf` is full, the input ends or reading fails.
fn fill<R: Read>(input: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

impl Chunks {
    fn next_chunk(&mut self) -> io::Result<()> {
        while self.pos >= self.len && !self.done {
            match self.full.recv() {
                Ok(Ok((chunk, len))) => {
                    let used = mem::replace(&mut self.cur, chunk);
                    (self.pos, self.len) = (0, len);
                    if used.capacity() > 0 {
                        // The reader may have gone; then the chunk is freed.
                        let _ = self.empty.try_send(used);
                    }
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The reader reached the end of the input.
                Err(_) => self.done = true,
            }
        }
        Ok(())
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.next_chunk()?;
        Ok(self.cur.get(self.pos..self.len).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives out a few bytes per call, then fails if told to.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        fail_at: Option<usize>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|at| self.pos >= at) {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(7919).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn passes_every_byte_in_order() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let input = data(len);
            let (pump, mut chunks) = channel();
            let got = std::thread::scope(|s| {
                let converter = s.spawn(move || {
                    let mut got = Vec::new();
                    chunks.read_to_end(&mut got).map(|_| got)
                });
                pump.run(Trickle {
                    data: input.clone(),
                    pos: 0,
                    fail_at: None,
                });
                converter.join().unwrap()
            });
            assert_eq!(got.unwrap(), input, "{len} bytes");
        }
    }

    #[test]
    fn read_error_reaches_the_converter() {
        let (pump, mut chunks) = channel();
        let err = std::thread::scope(|s| {
            let converter = s.spawn(move || {
                let mut got = Vec::new();
                chunks.read_to_end(&mut got).unwrap_err()
            });
            pump.run(Trickle {
                data: data(3 * CHUNK),
                pos: 0,
                fail_at: Some(CHUNK + 100),
            });
            converter.join().unwrap()
        });
        assert_eq!(err.to_string(), "disk on fire");
    }

    #[test]
    fn reader_stops_when_the_converter_does() {
        let (pump, mut chunks) = channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut first = [0; 10];
                chunks.read_exact(&mut first).unwrap();
            });
            // Endless input: only the closed channel can end this.
            pump.run(io::repeat(1));
        });
    }
}
