//! Key files: the recipe's 32 random bytes, used as the passphrase of a key
//! slot.
//!
//! Loading applies cryptsetup's own limit, so that a key file confsum
//! accepts is one the kernel side (`cryptsetup open --key-file`) accepts
//! too: cryptsetup reads at most `DEFAULT_KEYFILE_SIZE_MAXKB` KiB (8192 in
//! its build defaults, printed by `cryptsetup --help` as "Maximum keyfile
//! size: 8192kB") and fails a larger file with "Maximum keyfile size
//! exceeded" (`lib/utils.c`, `crypt_keyfile_device_read`: it reads up to
//! the limit plus one byte and refuses when that byte is there). So
//! 8 MiB is accepted and 8 MiB + 1 byte is not.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::Error;
use crate::crypt::random_fill;

/// The bytes of a key file, wiped from memory when dropped and never shown
/// by `Debug`.
///
/// ```
/// use confsum_encfs::KeyFile;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("new.key");
/// let key = KeyFile::generate()?;
/// key.write_new(&path)?;
/// assert_eq!(KeyFile::load(&path)?.expose(), key.expose());
/// // Never over an existing file.
/// assert!(KeyFile::generate()?.write_new(&path).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyFile(Zeroizing<Vec<u8>>);

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// The largest key file cryptsetup reads: 8192 KiB.
    pub const MAX_LEN: u64 = 8192 * 1024;

    /// Length of a generated key file, as the recipe's
    /// `dd if=/dev/urandom bs=32 count=1`.
    pub const GENERATED_LEN: usize = 32;

    /// 32 bytes from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new(vec![0; Self::GENERATED_LEN]);
        random_fill(&mut key)?;
        Ok(KeyFile(key))
    }

    /// Reads a key file: all of it, as cryptsetup does without
    /// `--keyfile-size`.
    ///
    /// # Errors
    ///
    /// [`Error::KeyFileIo`] when it cannot be read,
    /// [`Error::KeyFileTooLarge`] over [`KeyFile::MAX_LEN`] (checked
    /// before reading, and again while reading in case it grows),
    /// [`Error::KeyFileEmpty`] for an empty one.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let too_large = |len| Error::KeyFileTooLarge {
            path: path.to_owned(),
            len,
            max: Self::MAX_LEN,
        };
        if len > Self::MAX_LEN {
            return Err(too_large(len));
        }
        // One byte past the limit tells a file that grew (or a pipe) apart.
        let mut key = Zeroizing::new(Vec::with_capacity(len as usize + 1));
        file.take(Self::MAX_LEN + 1)
            .read_to_end(&mut key)
            .map_err(io)?;
        if key.len() as u64 > Self::MAX_LEN {
            return Err(too_large(key.len() as u64));
        }
        if key.is_empty() {
            return Err(Error::KeyFileEmpty(path.to_owned()));
        }
        Ok(KeyFile(key))
    }

    /// Writes the key to a new file at `path`, readable by its owner only
    /// (mode 0600), and syncs it. Never replaces an existing file (the key
    /// it holds may be the only one that opens some image). On failure,
    /// nothing is left at `path`.
    pub fn write_new(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let written = file.write_all(&self.0).and_then(|()| file.sync_all());
        if let Err(e) = written {
            drop(file);
            // We created it; a partial key would only mislead.
            let _ = fs::remove_file(path);
            return Err(io(e));
        }
        Ok(())
    }

    /// The key's bytes, to unlock or add a key slot with.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}
