//! Opening a sealed image without privileges: the kernel's `cryptsetup open`
//! and ext4 mount, in user space.
//!
//! Sectors are decrypted only when read. The file system on top is read with
//! `ext4-view`, a well-kept read-only ext4 reader, rather than by hand.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Read, FileType};

use crate::Error;
use crate::crypt::SectorCipher;
use crate::luks2::{KeyslotInfo, Luks2};

/// An unlocked LUKS2 image: its header and decrypting access to its data.
pub struct Volume {
    file: File,
    luks: Luks2,
    cipher: SectorCipher,
    data_len: u64,
    slot: usize,
}

impl fmt::Debug for Volume {
    // Not derived: the cipher holds the volume key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("uuid", &self.luks.uuid())
            .field("data_len", &self.data_len)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// Opens `path` with a key file's bytes or a passphrase.
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Volume, Error> {
        Self::open_with_progress(path, passphrase, &mut |_| {})
    }

    /// [`Volume::open`], calling `before_slot` before each key slot's key
    /// derivation (see [`Luks2::unlock_with_progress`]).
    ///
    /// The header is read and the key slot opened under a shared `flock`
    /// on the file, as cryptsetup's readers take, so that a key change in
    /// progress ([`LockedImage`](crate::LockedImage)) is never seen half
    /// done. The lock is released before this returns.
    pub fn open_with_progress(
        path: &Path,
        passphrase: &[u8],
        before_slot: &mut dyn FnMut(&KeyslotInfo),
    ) -> Result<Volume, Error> {
        let file = File::open(path)?;
        crate::locked::lock_shared(&file)?;
        let unlocked = Luks2::read(&file).and_then(|luks| {
            let opened = luks.unlock_with_progress(&file, passphrase, before_slot)?;
            Ok((luks, opened))
        });
        crate::locked::unlock(&file);
        let (luks, (slot, key)) = unlocked?;
        let cipher = SectorCipher::new(&key, luks.sector_size(), luks.iv_tweak())?;
        let file_len = file.metadata()?.len();
        let data_len = match luks.segment_size() {
            Some(size) => size,
            None => file_len
                .checked_sub(luks.data_offset())
                .ok_or(Error::Truncated)?,
        };
        if luks.data_offset() + data_len > file_len {
            return Err(Error::Truncated);
        }
        Ok(Volume {
            file,
            luks,
            cipher,
            data_len,
            slot,
        })
    }

    /// The keyslot that opened the image.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The parsed header.
    pub fn header(&self) -> &Luks2 {
        &self.luks
    }

    /// Bytes in the decrypted data segment.
    pub fn len(&self) -> u64 {
        self.data_len
    }

    /// Whether the data segment is empty.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// Reads decrypted bytes at `offset` in the data segment into `buf`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.data_len)
            .ok_or(Error::Truncated)?;
        let sector = self.cipher.sector_size() as u64;
        let first = offset / sector * sector;
        let last = end.div_ceil(sector) * sector;
        let mut sectors = vec![0u8; (last - first) as usize];
        self.file
            .read_exact_at(&mut sectors, self.luks.data_offset() + first)?;
        self.cipher.decrypt(first, &mut sectors)?;
        let skip = (offset - first) as usize;
        let plain = sectors
            .get(skip..skip + buf.len())
            .ok_or(Error::Truncated)?;
        buf.copy_from_slice(plain);
        Ok(())
    }

    /// The ext4 file system inside. Fails if the image is shorter than the
    /// file system claims to be, rather than on some later read.
    pub fn filesystem(self) -> Result<Filesystem, Error> {
        let mut sb = [0u8; 1024];
        self.read_exact_at(1024, &mut sb)?;
        let field = |at: usize| -> u64 {
            sb.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
        };
        if sb.get(56..58) != Some(&[0x53, 0xef][..]) {
            return Err(Error::NotExt4);
        }
        let incompat_64bit = field(96) & 0x80 != 0;
        let blocks = field(4) | if incompat_64bit { field(336) << 32 } else { 0 };
        let block_size = 1024u64 << field(24).min(16);
        if blocks.saturating_mul(block_size) > self.data_len {
            return Err(Error::Truncated);
        }
        let fs = Ext4::load(Box::new(self)).map_err(|e| Error::Filesystem {
            path: "/".into(),
            source: e,
        })?;
        Ok(Filesystem { fs })
    }
}

impl Ext4Read for Volume {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_exact_at(start_byte, dst).map_err(Into::into)
    }
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Special,
}

/// One entry of a sealed file system.
///
/// ext4 names are bytes, not text: [`EntryInfo::path`] holds them as they
/// are on disk, and [`EntryInfo::display_path`] shows them to people.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Absolute path inside the image, as the bytes of its names.
    pub path: Vec<u8>,
    /// File type.
    pub kind: FileKind,
    /// Permission bits (`0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl EntryInfo {
    /// The entry's own name: the last component of its path.
    pub fn name(&self) -> &[u8] {
        self.path.rsplit(|&b| b == b'/').next().unwrap_or_default()
    }

    /// The path for people; see [`Escaped`].
    pub fn display_path(&self) -> Escaped<'_> {
        Escaped(&self.path)
    }

    /// The name for people; see [`Escaped`].
    pub fn display_name(&self) -> Escaped<'_> {
        Escaped(self.name())
    }
}

/// Bytes of a name shown as text without losing any: valid UTF-8 as it is,
/// every other byte as `\xNN`, a backslash as `\\`, and control
/// characters as `\xNN` (so a name cannot move a terminal's cursor or
/// forge a line). `caf\xe9` is the Latin-1 spelling of "café".
///
/// ```
/// use confsum_encfs::Escaped;
/// assert_eq!(Escaped::new(b"caf\xe9").to_string(), r"caf\xe9");
/// assert_eq!(Escaped::new("café".as_bytes()).to_string(), "café");
/// assert_eq!(Escaped::new(b"a\\b\n").to_string(), r"a\\b\x0a");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(&'a [u8]);

impl<'a> Escaped<'a> {
    /// Wraps `bytes` for display.
    pub fn new(bytes: &'a [u8]) -> Self {
        Escaped(bytes)
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => {
                        let mut buf = [0; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            write!(f, "\\x{b:02x}")?;
                        }
                    }
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Read-only access to the ext4 file system of an unlocked image.
///
/// Paths are bytes (`&str`, `&[u8]` and `Vec<u8>` all work): ext4 names
/// need not be UTF-8, and every one of them can be listed, read and
/// extracted.
pub struct Filesystem {
    fs: Ext4,
}

impl fmt::Debug for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filesystem").finish_non_exhaustive()
    }
}

fn fs_error(path: &[u8]) -> impl FnOnce(ext4_view::Ext4Error) -> Error + '_ {
    move |source| Error::Filesystem {
        path: Escaped(path).to_string(),
        source,
    }
}

/// ext4-view's path for `path`, or the error it would give for it.
fn ext4_path(path: &[u8]) -> Result<ext4_view::Path<'_>, Error> {
    ext4_view::Path::try_from(path).map_err(|e| Error::BadPath {
        path: Escaped(path).to_string(),
        reason: e.to_string(),
    })
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = dir.to_vec();
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

impl Filesystem {
    /// Describes `path` (not following a final symlink).
    pub fn stat(&self, path: impl AsRef<[u8]>) -> Result<EntryInfo, Error> {
        let path = path.as_ref();
        let md = self
            .fs
            .symlink_metadata(ext4_path(path)?)
            .map_err(fs_error(path))?;
        let kind = match md.file_type() {
            FileType::Regular => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            _ => FileKind::Special,
        };
        Ok(EntryInfo {
            path: path.to_owned(),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: md.len(),
            mtime: md.modified().seconds(),
        })
    }

    /// Lists a directory, sorted by name (as bytes), without `.` and `..`.
    pub fn list(&self, dir: impl AsRef<[u8]>) -> Result<Vec<EntryInfo>, Error> {
        let dir = dir.as_ref();
        let mut out = Vec::new();
        for entry in self.fs.read_dir(ext4_path(dir)?).map_err(fs_error(dir))? {
            let entry = entry.map_err(fs_error(dir))?;
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            out.push(self.stat(join(dir, name.as_ref()))?);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The target of a symlink, as bytes.
    pub fn read_link(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>, Error> {
        let path = path.as_ref();
        let target = self
            .fs
            .read_link(ext4_path(path)?)
            .map_err(fs_error(path))?;
        Ok(target.as_ref().to_vec())
    }

    /// Copies a regular file's bytes into `out`; returns how many.
    pub fn copy_to(&self, path: impl AsRef<[u8]>, out: &mut dyn Write) -> Result<u64, Error> {
        let path = path.as_ref();
        let mut file = self.fs.open(ext4_path(path)?).map_err(fs_error(path))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = file.read_bytes(&mut buf).map_err(fs_error(path))?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                return Ok(total);
            };
            out.write_all(chunk)?;
            total += n as u64;
        }
    }

    /// Copies the whole tree into `to`, which must not exist or be empty.
    /// Names are written as the same bytes they have in the image, whatever
    /// they are. Files are created new (never through an existing
    /// symlink); devices and FIFOs are skipped. Returns the number of
    /// entries written.
    pub fn extract(&self, to: &Path, progress: &mut dyn FnMut(u64)) -> Result<u64, Error> {
        if to.exists() && fs::read_dir(to)?.next().is_some() {
            return Err(Error::Exists(to.to_path_buf()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(to)?;
        let mut count = 0;
        let mut bytes = 0;
        let mut stack: Vec<(Vec<u8>, PathBuf)> = vec![(b"/".to_vec(), to.to_path_buf())];
        let mut dirs = Vec::new();
        while let Some((dir, dest)) = stack.pop() {
            for e in self.list(&dir)? {
                // mkfs's lost+found is file system plumbing, not content.
                if e.path == b"/lost+found" && self.list(&e.path)?.is_empty() {
                    continue;
                }
                // ext4 names cannot hold '/' or NUL (ext4-view refuses such
                // entries), and "." and ".." are skipped by `list`, so every
                // target stays inside `to`.
                let target = dest.join(OsStr::from_bytes(e.name()));
                match e.kind {
                    FileKind::Dir => {
                        fs::DirBuilder::new().mode(0o700).create(&target)?;
                        dirs.push((target.clone(), e.mode));
                        stack.push((e.path.clone(), target));
                    }
                    FileKind::File => {
                        let mut f = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&target)?;
                        bytes += self.copy_to(&e.path, &mut f)?;
                        f.set_permissions(fs::Permissions::from_mode(u32::from(e.mode)))?;
                        progress(bytes);
                    }
                    FileKind::Symlink => {
                        let link = self.read_link(&e.path)?;
                        std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)?;
                    }
                    FileKind::Special => continue,
                }
                count += 1;
            }
        }
        // Directory modes last, so read-only ones could still be filled.
        for (dir, mode) in dirs.into_iter().rev() {
            fs::set_permissions(&dir, fs::Permissions::from_mode(u32::from(mode)))?;
        }
        Ok(count)
    }
}
