//! Key slot changes on an image file that are serialized and survive a
//! crash.
//!
//! cryptsetup takes an exclusive `flock` on a regular image file itself for
//! every metadata write, and a shared one to read it
//! (`lib/utils_device_locking.c`: `acquire_lock_handle` locks the file's
//! own descriptor in `DEV_LOCK_FILE` mode; `device_write_lock_internal` is
//! `LOCK_EX`, `device_read_lock_internal` `LOCK_SH`). [`LockedImage`] takes
//! the same lock, so it excludes another confsum and a cryptsetup alike,
//! and reads the header only once the lock is held: the header it changes
//! is the one on disk, never a stale copy.
//!
//! Each step is synced before the next (`fsync`), in cryptsetup's order
//! (see [`Luks2::add_key`] and [`Luks2::remove_key`]), so that a crash or a
//! power cut leaves either the old key set or the new one.
//!
//! The lock goes through `rustix`'s safe `flock` because the standard
//! library's `File::lock` is newer than this workspace's minimum Rust.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::Error;
use crate::crypt::VolumeKey;
use crate::luks2::{Kdf, Luks2};

/// A LUKS2 image file opened for key slot changes, under an exclusive
/// advisory lock held until it is dropped.
///
/// [`LockedImage::open`] waits as long as another holder keeps the lock,
/// as cryptsetup does. `flock` locks belong to open files, not to
/// processes: a [`Volume::open`](crate::Volume::open) of the same image
/// in the same program waits for this value to be dropped, so unlock
/// through [`LockedImage::unlock`] while holding it.
///
/// ```no_run
/// use std::path::Path;
/// use confsum_encfs::{Kdf, KeyFile, LockedImage};
///
/// let old = KeyFile::load(Path::new("old.key"))?;
/// let new = KeyFile::generate()?;
/// new.write_new(Path::new("new.key"))?;
/// let mut image = LockedImage::open(Path::new("encfs.img"))?;
/// let slot = image.add_key(old.expose(), new.expose(), &Kdf::Pbkdf2 { iterations: 1000 })?;
/// // Retire the old key, proving with the new one that the image stays openable.
/// let (old_slot, _) = image.unlock(old.expose())?;
/// image.remove_key(old_slot, new.expose())?;
/// # let _ = slot;
/// # Ok::<(), confsum_encfs::Error>(())
/// ```
#[derive(Debug)]
pub struct LockedImage {
    file: File,
    path: PathBuf,
    luks: Luks2,
}

/// Takes `op` on `file`, retrying when a signal interrupts the wait.
fn lock(file: &File, op: FlockOperation) -> io::Result<()> {
    loop {
        match flock(file, op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Takes a shared lock for reading a header, as cryptsetup's readers do.
/// A file system without `flock` (some network and FUSE ones) is read
/// without it: the checksums and seqids still keep a reader from using a
/// torn header, though a reader racing a key removal may then miss the
/// key being removed a moment early.
pub(crate) fn lock_shared(file: &File) -> Result<(), Error> {
    match lock(file, FlockOperation::LockShared) {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => Ok(()),
        Err(e) => Err(Error::Lock(e)),
    }
}

/// Drops a shared lock taken by [`lock_shared`].
pub(crate) fn unlock(file: &File) {
    // Closing the file drops the lock anyway; nothing to do on failure.
    let _ = lock(file, FlockOperation::Unlock);
}

fn unsupported(e: &io::Error) -> bool {
    let errno = e.raw_os_error();
    errno == Some(rustix::io::Errno::NOLCK.raw_os_error())
        || errno == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
}

impl LockedImage {
    /// Opens the image at `path` for reading and writing, waits for an
    /// exclusive lock on it (another confsum or cryptsetup changing it
    /// holds one), then reads its header.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened, [`Error::Lock`] when
    /// it cannot be locked, and those of [`Luks2::read`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock(&file, FlockOperation::LockExclusive).map_err(Error::Lock)?;
        let luks = Luks2::read(&file)?;
        Ok(LockedImage {
            file,
            path: path.to_owned(),
            luks,
        })
    }

    /// The header, as read under the lock and changed since.
    pub fn header(&self) -> &Luks2 {
        &self.luks
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finds the volume key with `passphrase`; see [`Luks2::unlock`].
    pub fn unlock(&self, passphrase: &[u8]) -> Result<(usize, VolumeKey), Error> {
        self.luks.unlock(&self.file, passphrase)
    }

    /// Adds a key slot opened by `new_passphrase`, unlocking with
    /// `existing`; see [`Luks2::add_key`]. Every write is synced before the
    /// next, so a crash leaves the image with the old key set or the new
    /// one. Returns the new slot's number.
    pub fn add_key(
        &mut self,
        existing: &[u8],
        new_passphrase: &[u8],
        kdf: &Kdf,
    ) -> Result<usize, Error> {
        let mut file = &self.file;
        self.luks
            .add_key_synced(&mut file, existing, new_passphrase, kdf, &mut |f| {
                f.sync_data()
            })
    }

    /// Removes key slot `slot`, once `remaining` (a key file's bytes or a
    /// passphrase) has opened another slot: the image stays openable with
    /// it. Under the lock, so two removals racing each other cannot both
    /// pass this check and leave no key. Writes are synced as in
    /// [`LockedImage::add_key`].
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchKeyslot`] for a slot not in use, [`Error::WrongKey`]
    /// when `remaining` opens nothing, [`Error::KeyOpensRemovedSlot`] when
    /// it opens only `slot` itself.
    pub fn remove_key(&mut self, slot: usize, remaining: &[u8]) -> Result<(), Error> {
        if !self.luks.keyslots().iter().any(|k| k.id == slot) {
            return Err(Error::NoSuchKeyslot(slot));
        }
        // As cryptsetup's luksKillSlot: the key must open a slot other
        // than the one going away.
        match self
            .luks
            .unlock_filtered(&self.file, remaining, Some(slot), &mut |_| {})
        {
            Ok(_) => {}
            Err(Error::WrongKey) if self.luks.opens_slot(&self.file, remaining, slot)? => {
                return Err(Error::KeyOpensRemovedSlot(slot));
            }
            Err(e) => return Err(e),
        }
        let mut file = &self.file;
        self.luks
            .remove_key_synced(&mut file, slot, false, &mut |f| f.sync_data())
    }
}
