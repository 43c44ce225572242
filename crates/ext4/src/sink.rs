//! Where the writer's bytes go.
//!
//! The writer emits the image almost strictly in order; only a handful of
//! whole blocks (the superblock, the group descriptors and rewritten xattr
//! blocks) are patched after the fact. Modelling the output as an append-only
//! stream plus whole-block overwrites lets a hasher consume the image without
//! it ever touching disk.

use std::io::{self, Seek, SeekFrom, Write};

use crate::shared::SharedChunk;

/// Size of every ext4 block this crate writes, and of every dm-verity block.
pub const BLOCK_SIZE: usize = 4096;

/// Receives an image as it is written.
///
/// Calls arrive as appends at the current end of the image, interleaved with
/// whole-block overwrites of blocks that lie entirely before that end. The
/// writer always appends in whole blocks by the time it calls
/// [`BlockSink::finish`].
pub trait BlockSink {
    /// Appends `data` at the current end of the image.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;

    /// Appends a piece of an input buffer at the current end of the image.
    ///
    /// The same as [`BlockSink::append`], except that a sink may keep the
    /// chunk (a reference, not a copy) instead of copying its bytes. The
    /// converter passes file data this way.
    fn append_shared(&mut self, chunk: &SharedChunk) -> io::Result<()> {
        self.append(chunk)
    }

    /// Appends `len` zero bytes at the current end of the image.
    fn append_zeros(&mut self, mut len: u64) -> io::Result<()> {
        const ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
        while len > 0 {
            let n = len.min(BLOCK_SIZE as u64) as usize;
            self.append(ZEROS.get(..n).unwrap_or(&ZEROS))?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Replaces block number `index`, which lies before the current end.
    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()>;

    /// Called once, after the last byte of the image.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: BlockSink + ?Sized> BlockSink for &mut S {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).append(data)
    }
    fn append_shared(&mut self, chunk: &SharedChunk) -> io::Result<()> {
        (**self).append_shared(chunk)
    }
    fn append_zeros(&mut self, len: u64) -> io::Result<()> {
        (**self).append_zeros(len)
    }
    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        (**self).overwrite_block(index, block)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
}

/// Feeds two sinks at once, for example an image file and a hasher.
impl<A: BlockSink, B: BlockSink> BlockSink for (A, B) {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.append(data)?;
        self.1.append(data)
    }
    fn append_shared(&mut self, chunk: &SharedChunk) -> io::Result<()> {
        self.0.append_shared(chunk)?;
        self.1.append_shared(chunk)
    }
    fn append_zeros(&mut self, len: u64) -> io::Result<()> {
        self.0.append_zeros(len)?;
        self.1.append_zeros(len)
    }
    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        self.0.overwrite_block(index, block)?;
        self.1.overwrite_block(index, block)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}

/// Writes the image to a seekable file, leaving runs of zeros as holes.
///
/// The file must be empty when the sink is created.
#[derive(Debug)]
pub struct ImageSink<W: Write + Seek> {
    inner: W,
    /// Logical end of the image; the file may be shorter while a hole is pending.
    end: u64,
    /// Where the file's cursor is, if known.
    cursor: u64,
}

impl<W: Write + Seek> ImageSink<W> {
    /// Wraps an empty, seekable output.
    pub fn new(inner: W) -> Self {
        ImageSink {
            inner,
            end: 0,
            cursor: 0,
        }
    }

    /// Returns the output, after [`BlockSink::finish`].
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        if self.cursor != pos {
            self.inner.seek(SeekFrom::Start(pos))?;
            self.cursor = pos;
        }
        Ok(())
    }
}

impl<W: Write + Seek> BlockSink for ImageSink<W> {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.seek_to(self.end)?;
        self.inner.write_all(data)?;
        self.end += data.len() as u64;
        self.cursor = self.end;
        Ok(())
    }

    fn append_zeros(&mut self, len: u64) -> io::Result<()> {
        // A hole reads back as zeros; `finish` makes sure the file is long enough.
        self.end += len;
        Ok(())
    }

    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        let pos = index * BLOCK_SIZE as u64;
        if pos + BLOCK_SIZE as u64 > self.end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overwrite past the end of the image",
            ));
        }
        self.seek_to(pos)?;
        self.inner.write_all(block)?;
        self.cursor = pos + BLOCK_SIZE as u64;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        // Extend the file over a trailing hole by writing its last byte.
        let len = self.inner.seek(SeekFrom::End(0))?;
        self.cursor = len;
        if len < self.end {
            self.seek_to(self.end - 1)?;
            self.inner.write_all(&[0])?;
            self.cursor = self.end;
        }
        self.inner.flush()
    }
}
