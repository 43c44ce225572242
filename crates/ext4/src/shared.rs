//! Input buffers that a sink may keep without copying them.
//!
//! A layer's file data passes through the converter untouched: the bytes
//! the tar reader holds are the bytes of the image's data blocks. Handing a
//! hasher a reference-counted piece of the read buffer, instead of a slice
//! it must copy before the buffer is reused, lets its worker threads hash
//! file data straight from the buffer the input was read into.
//!
//! Not the `bytes` crate: all that is needed is an `Arc` of a buffer and a
//! range, plus the recycling of buffers once every piece of them is gone,
//! which `Arc::get_mut` gives for free.

use std::io::{self, BufRead, Read};
use std::ops::{Deref, Range};
use std::sync::Arc;
use std::{fmt, mem};

/// Bytes per read buffer.
const SEGMENT: usize = 1 << 20;

/// Read buffers kept for reuse. Buffers still referenced by a sink wait
/// here until their last piece is dropped; more than this are freed.
const MAX_SPARE: usize = 16;

/// A cheaply cloned, read-only piece of an input buffer.
///
/// Derefs to its bytes. Holding one keeps its buffer from being reused, so
/// a sink should drop it once the bytes are consumed.
#[derive(Clone)]
pub struct SharedChunk {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl SharedChunk {
    /// A chunk holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Self {
        SharedChunk {
            buf: Arc::new(data.to_vec()),
            start: 0,
            end: data.len(),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The sub-piece `range` (relative to this chunk), sharing its buffer;
    /// `None` if the range lies outside the chunk.
    pub fn slice(&self, range: Range<usize>) -> Option<SharedChunk> {
        if range.start > range.end || range.end > self.end - self.start {
            return None;
        }
        Some(SharedChunk {
            buf: Arc::clone(&self.buf),
            start: self.start + range.start,
            end: self.start + range.end,
        })
    }
}

impl Deref for SharedChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for SharedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedChunk")
            .field("len", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

/// Called with each buffer of raw input bytes as it is read, in order.
pub type Observer<'a> = Box<dyn FnMut(&SharedChunk) + 'a>;

/// A buffered reader whose buffered bytes can be taken as [`SharedChunk`]s.
///
/// Reads fill whole buffers (1 MiB) unless the input ends, so a short read
/// from a decoder or a pipe does not waste a buffer. An optional observer
/// sees every buffer as it is filled, for example to digest the raw input
/// on another thread without a second read or copy.
pub struct SharedReader<'a, R> {
    inner: R,
    buf: Arc<Vec<u8>>,
    pos: usize,
    end: usize,
    spare: Vec<Arc<Vec<u8>>>,
    observer: Option<Observer<'a>>,
    /// A read error held back until the bytes read before it are used.
    pending: Option<io::Error>,
}

impl<R> fmt::Debug for SharedReader<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedReader")
            .field("buffered", &(self.end - self.pos))
            .finish_non_exhaustive()
    }
}

impl<'a, R: Read> SharedReader<'a, R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        SharedReader {
            inner,
            buf: Arc::new(Vec::new()),
            pos: 0,
            end: 0,
            spare: Vec::new(),
            observer: None,
            pending: None,
        }
    }

    /// Calls `observer` with each buffer as it is read from the input.
    pub fn with_observer(mut self, observer: impl FnMut(&SharedChunk) + 'a) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The next `len` buffered bytes as a shared chunk, without consuming
    /// them; `None` if fewer are buffered.
    pub fn peek_shared(&self, len: usize) -> Option<SharedChunk> {
        let end = self.pos.checked_add(len).filter(|&e| e <= self.end)?;
        Some(SharedChunk {
            buf: Arc::clone(&self.buf),
            start: self.pos,
            end,
        })
    }

    /// The same reader, buffered bytes and observer included, over a boxed
    /// input.
    pub(crate) fn into_boxed(self) -> SharedReader<'a, Box<dyn Read + 'a>>
    where
        R: 'a,
    {
        SharedReader {
            inner: Box::new(self.inner),
            buf: self.buf,
            pos: self.pos,
            end: self.end,
            spare: self.spare,
            observer: self.observer,
            pending: self.pending,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let buf = writable(&mut self.buf, &mut self.spare);
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(buf.get_mut(n..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // What was read before an error is delivered first.
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            }
        }
        self.pos = 0;
        self.end = n;
        if let (true, Some(observer)) = (n > 0, self.observer.as_mut()) {
            observer(&SharedChunk {
                buf: Arc::clone(&self.buf),
                start: 0,
                end: n,
            });
        }
        Ok(())
    }
}

/// Makes `buf` a whole segment that nobody else holds, taking a free spare
/// (or a new buffer) when pieces of the current one are still in use.
fn writable<'b>(buf: &'b mut Arc<Vec<u8>>, spare: &mut Vec<Arc<Vec<u8>>>) -> &'b mut Vec<u8> {
    if Arc::get_mut(buf).is_none_or(|b| b.len() != SEGMENT) {
        let fresh = match spare.iter_mut().position(|b| Arc::get_mut(b).is_some()) {
            Some(i) => spare.swap_remove(i),
            None => Arc::new(vec![0; SEGMENT]),
        };
        let old = mem::replace(buf, fresh);
        if spare.len() < MAX_SPARE && old.len() == SEGMENT {
            spare.push(old);
        }
    }
    // Unique by now, so this never copies.
    Arc::make_mut(buf)
}

impl<R: Read> Read for SharedReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for SharedReader<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.end {
            self.refill()?;
        }
        Ok(self.buf.get(self.pos..self.end).unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }
}
