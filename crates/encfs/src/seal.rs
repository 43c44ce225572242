//! The data owner's step: a directory (or tar) in, an encrypted image out.
//!
//! The recipe does this with `mkfs.ext4`, a loop mount and `cryptsetup`, as
//! root. Here the ext4 image is laid out by `confsum-ext4` and encrypted
//! block by block as it is produced, so nothing is ever written in the
//! clear, nothing needs privileges, and the image is only as large as its
//! content plus the free space asked for. The output appears under its final
//! name only once it is complete.
//!
//! The data segment is written with direct I/O (`O_DIRECT`) where the file
//! system allows it: the image bypasses the page cache, so sealing neither
//! depends on free memory nor evicts the caller's cache, and on VMs that hand
//! freed memory back to the host it avoids paying for fresh pages on every
//! write. Batches are built in page-aligned blocks for that; a file system
//! that refuses direct I/O (tmpfs) gets ordinary writes of the same bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use confsum_ext4::{BLOCK_SIZE, BlockSink, Options, Writable, convert_dir, convert_tar};

use crate::Error;
use crate::crypt::{SectorCipher, VolumeKey};
use crate::luks2::{FormatOptions, Luks2};

/// Bytes encrypted per batch: large enough to spread over every core.
const BATCH: usize = 8 << 20;

/// One image block, aligned as direct I/O needs its buffers to be.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK_SIZE]);

/// Up to [`BATCH`] bytes of image in aligned blocks; the first `len` bytes
/// are in use.
struct Batch {
    blocks: Vec<Block>,
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            blocks: vec![Block([0; BLOCK_SIZE]); BATCH / BLOCK_SIZE],
            len: 0,
        }
    }

    fn room(&self) -> usize {
        BATCH - self.len
    }

    fn bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.blocks);
        all.get(..self.len).unwrap_or(all)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.blocks);
        match all.len() {
            n if n >= len => all.split_at_mut(len).0,
            _ => all,
        }
    }

    /// The `n` bytes after the used ones, now counted as used; `n` is at
    /// most [`Batch::room`].
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        self.len = (start + n).min(BATCH);
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.blocks);
        all.get_mut(start..start + n).unwrap_or_default()
    }
}

/// What to put in the image.
#[non_exhaustive]
pub enum SealSource<'a> {
    /// A directory tree on disk.
    Dir(&'a Path),
    /// An uncompressed tar stream.
    Tar(&'a mut dyn Read),
}

impl std::fmt::Debug for SealSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealSource::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
            SealSource::Tar(_) => f.write_str("Tar(..)"),
        }
    }
}

/// How to build the image.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SealOptions {
    /// LUKS2 parameters; the default is the recipe's.
    pub format: FormatOptions,
    /// Total image size in bytes, header included. `None`: content plus
    /// [`SealOptions::free_space`].
    pub size: Option<u64>,
    /// Free space left in the file system when no size is forced.
    pub free_space: u64,
    /// Replace an existing image at the output path.
    pub overwrite: bool,
    /// Set (from a signal handler, say) to stop sealing; the partial image
    /// is removed and [`seal`] fails with an `Interrupted` I/O error.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            format: FormatOptions::recipe(),
            size: None,
            free_space: 16 << 20,
            overwrite: false,
            cancel: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealReport {
    /// Size of the image file.
    pub image_size: u64,
    /// Size of the ext4 file system inside.
    pub filesystem_size: u64,
    /// The LUKS2 UUID.
    pub uuid: String,
}

/// Seals `source` into a new LUKS2 image at `out`, with keyslot 0 opened by
/// `passphrase` (the recipe uses a 32-byte random key file). `progress` is
/// called with the number of image bytes written so far.
///
/// The image is written under a temporary name in `out`'s directory and
/// renamed into place once complete and flushed; on any error the
/// temporary file is removed. Callers with their own policy for outputs
/// use [`seal_into`].
pub fn seal(
    source: SealSource<'_>,
    out: &Path,
    passphrase: &[u8],
    options: &SealOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<SealReport, Error> {
    if !options.overwrite && out.exists() {
        return Err(Error::Exists(out.to_path_buf()));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let SealSource::Dir(source) = &source {
        refuse_output_inside(source, dir, out)?;
    }
    // Dropped (and so deleted) on any error below.
    let tmp = tempfile::Builder::new()
        .prefix(".confsum-seal-")
        .tempfile_in(dir)?;
    let report = seal_into(source, tmp.as_file(), passphrase, options, progress)?;
    tmp.as_file().sync_all()?;
    let persisted = if options.overwrite {
        tmp.persist(out).map(drop)
    } else {
        tmp.persist_noclobber(out).map(drop)
    };
    persisted.map_err(|e| Error::Io(e.error))?;
    Ok(report)
}

/// Seals `source` into `file`, an empty file opened for writing: the same
/// image as [`seal`], without the temporary name, the rename or the flush,
/// which are the caller's. [`SealOptions::overwrite`] is not used.
pub fn seal_into(
    source: SealSource<'_>,
    file: &File,
    passphrase: &[u8],
    options: &SealOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<SealReport, Error> {
    let key = VolumeKey::generate(64)?;
    let (luks, header) = Luks2::format(&key, passphrase, &options.format)?;
    let data_offset = luks.data_offset();
    let mut ext4 = Options::default();
    ext4.max_disk_size = 1 << 40;
    ext4.writable = Some(match options.size {
        Some(size) => {
            let fs_size = size
                .checked_sub(data_offset)
                .filter(|s| *s >= BLOCK_SIZE as u64)
                .ok_or(Error::ImageTooSmall {
                    size,
                    needed: data_offset + BLOCK_SIZE as u64,
                })?;
            Writable::with_min_size(fs_size - fs_size % BLOCK_SIZE as u64)
        }
        None => Writable::with_free_space(options.free_space),
    });

    file.write_all_at(&header, 0)?;
    progress(header.len() as u64);
    let cipher = SectorCipher::new(&key, luks.sector_size(), luks.iv_tweak())?;

    // Three stages: this thread lays out the file system, one thread
    // encrypts (on every core), one writes; each works on its own batch.
    let filesystem_size = std::thread::scope(|scope| -> Result<u64, Error> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(2);
        let (sealed_tx, sealed) = mpsc::sync_channel::<Job>(2);
        let (spare_tx, spare) = mpsc::channel::<Batch>();
        let encryptor = scope.spawn(|| encrypt_jobs(&cipher, queue, sealed_tx));
        let writer = scope.spawn(|| write_jobs(file, data_offset, sealed, spare_tx));
        let sink = EncryptingSink {
            jobs,
            spare,
            base: data_offset,
            buf: Batch::new(),
            buf_start: 0,
            progress,
            cancel: options.cancel.as_deref(),
        };
        let converted = match source {
            SealSource::Dir(path) => convert_dir(path, sink, &ext4),
            SealSource::Tar(reader) => convert_tar(reader, sink, &ext4),
        };
        // Dropping the sink closes the queue, so both stages end.
        let written = converted.map(|sink| sink.buf_start);
        let panicked = || Error::Io(io::Error::other("an encryption thread panicked"));
        let encrypted = encryptor.join().map_err(|_| panicked())?;
        let wrote = writer.join().map_err(|_| panicked())?;
        // A stage's failure is the cause of any failure it made the others see.
        wrote?;
        encrypted?;
        Ok(written?)
    })?;
    let image_size = data_offset + filesystem_size;
    if let Some(size) = options.size {
        if image_size > size {
            return Err(Error::ImageTooSmall {
                size,
                needed: image_size,
            });
        }
        // Round a forced size down to whole blocks, as the file system is.
        file.set_len(image_size)?;
    }
    Ok(SealReport {
        image_size,
        filesystem_size,
        uuid: luks.uuid(),
    })
}

/// Refuses an output whose directory lies inside the directory being
/// sealed: the image would be read into itself while it is written (its
/// temporary file is made beside it). Paths that cannot be resolved are
/// left to fail where they are used, with that step's error.
fn refuse_output_inside(source: &Path, out_dir: &Path, out: &Path) -> Result<(), Error> {
    if let (Ok(source), Ok(out_dir)) = (source.canonicalize(), out_dir.canonicalize()) {
        if out_dir.starts_with(&source) {
            return Err(Error::OutputInsideSource {
                out: out.to_owned(),
                source_dir: source,
            });
        }
    }
    Ok(())
}

/// Work for the encryption and writer threads, in image order.
enum Job {
    /// Whole blocks of plaintext at a segment offset.
    Batch { offset: u64, data: Batch },
    /// One block rewritten after it was queued.
    Block { offset: u64, block: Box<Block> },
}

/// Encrypts each job in place and passes it on, in order.
fn encrypt_jobs(
    cipher: &SectorCipher,
    queue: mpsc::Receiver<Job>,
    sealed: mpsc::SyncSender<Job>,
) -> Result<(), Error> {
    for mut job in queue {
        match &mut job {
            Job::Batch { offset, data } => cipher.encrypt(*offset, data.bytes_mut())?,
            Job::Block { offset, block } => cipher.encrypt(*offset, &mut block.0)?,
        }
        if sealed.send(job).is_err() {
            // The writer failed; it reports why.
            break;
        }
    }
    Ok(())
}

/// Writes encrypted jobs after the header; emptied batch buffers go back
/// for reuse.
fn write_jobs(
    file: &File,
    base: u64,
    sealed: mpsc::Receiver<Job>,
    spare: mpsc::Sender<Batch>,
) -> Result<(), Error> {
    let mut out = DirectWriter::new(file);
    for job in sealed {
        match job {
            Job::Batch { offset, mut data } => {
                out.write_all_at(data.bytes(), base + offset)?;
                data.len = 0;
                // The sink may be gone already; then nobody needs the buffer.
                let _ = spare.send(data);
            }
            Job::Block { offset, block } => out.write_all_at(&block.0, base + offset)?,
        }
    }
    Ok(())
}

/// Writes through a second, direct-I/O description of the output file
/// while the file system accepts it, and through the file itself otherwise.
///
/// Only ciphertext passes through here, so falling back never puts
/// plaintext anywhere; it only puts ciphertext in the page cache.
struct DirectWriter<'a> {
    file: &'a File,
    direct: Option<File>,
}

impl<'a> DirectWriter<'a> {
    fn new(file: &'a File) -> Self {
        // A new open file description, so that O_DIRECT does not leak into
        // the caller's (which writes the unaligned header and syncs).
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok();
        DirectWriter { file, direct }
    }

    /// `data` starts at an aligned address, and `pos` and `data.len()` are
    /// whole blocks, as direct I/O needs.
    fn write_all_at(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match direct.write_all_at(data, pos) {
                Ok(()) => return Ok(()),
                // Refused (tmpfs opens with O_DIRECT on some kernels and
                // fails the write): the whole buffer again, buffered.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, pos)
    }
}

/// Collects the image as the ext4 writer produces it and hands whole
/// batches to the encryption thread.
struct EncryptingSink<'a> {
    jobs: mpsc::SyncSender<Job>,
    spare: mpsc::Receiver<Batch>,
    /// Where the data segment starts in the file, for progress.
    base: u64,
    /// Plaintext not yet queued; starts at segment offset `buf_start`.
    buf: Batch,
    buf_start: u64,
    progress: &'a mut dyn FnMut(u64),
    cancel: Option<&'a AtomicBool>,
}

fn worker_gone() -> io::Error {
    io::Error::other("the encryption thread stopped")
}

impl EncryptingSink<'_> {
    /// Queues the buffer, which holds whole blocks.
    fn submit(&mut self) -> io::Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "sealing interrupted",
            ));
        }
        if self.buf.len == 0 {
            return Ok(());
        }
        if self.buf.len % BLOCK_SIZE != 0 {
            return Err(io::Error::other("image does not end on a block boundary"));
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Batch::new());
        let data = std::mem::replace(&mut self.buf, next);
        let offset = self.buf_start;
        self.buf_start += data.len as u64;
        self.jobs
            .send(Job::Batch { offset, data })
            .map_err(|_| worker_gone())?;
        (self.progress)(self.base + self.buf_start);
        Ok(())
    }
}

impl BlockSink for EncryptingSink<'_> {
    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let (head, rest) = data.split_at(self.buf.room().min(data.len()));
            self.buf.grow(head.len()).copy_from_slice(head);
            if self.buf.room() == 0 {
                self.submit()?;
            }
            data = rest;
        }
        Ok(())
    }

    fn append_zeros(&mut self, mut len: u64) -> io::Result<()> {
        // Free space is encrypted zeros, not holes: a hole would decrypt to
        // noise, and the image should not reveal which blocks are in use.
        while len > 0 {
            let n = (self.buf.room() as u64).min(len) as usize;
            self.buf.grow(n).fill(0);
            len -= n as u64;
            if self.buf.room() == 0 {
                self.submit()?;
            }
        }
        Ok(())
    }

    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        let offset = index * BLOCK_SIZE as u64;
        if offset >= self.buf_start {
            let at = (offset - self.buf_start) as usize;
            return match self.buf.bytes_mut().get_mut(at..at + BLOCK_SIZE) {
                Some(slot) => {
                    slot.copy_from_slice(block);
                    Ok(())
                }
                None => Err(io::Error::other("overwrite past the end of the image")),
            };
        }
        // Queued behind the batch that holds the block, so it lands last.
        self.jobs
            .send(Job::Block {
                offset,
                block: Box::new(Block(*block)),
            })
            .map_err(|_| worker_gone())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.submit()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refused_direct_writes_fall_back_to_buffered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut out = DirectWriter::new(&file);
        let direct = out.direct.is_some();

        // Aligned: direct I/O takes it where the file system has it.
        let block = Box::new(Block([7; BLOCK_SIZE]));
        out.write_all_at(&block.0, BLOCK_SIZE as u64).unwrap();
        assert_eq!(out.direct.is_some(), direct);

        // Unaligned: refused (EINVAL) by direct I/O, written buffered.
        out.write_all_at(b"abc", 1).unwrap();
        assert!(out.direct.is_none());
        out.write_all_at(&block.0, 2 * BLOCK_SIZE as u64).unwrap();

        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3 * BLOCK_SIZE);
        assert_eq!(&data[..4], b"\0abc");
        assert!(data[BLOCK_SIZE..].iter().all(|&b| b == 7));
    }
}
