//! The crate's one error type.
//!
//! One enum for the whole crate keeps `?` simple for callers that mix
//! LUKS2 headers, sealing and reading; it is `#[non_exhaustive]` so new
//! variants are not breaking changes.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing failed.
    #[error("i/o error")]
    Io(#[from] io::Error),

    /// No key slot of a LUKS2 image opens with the passphrase given. This
    /// one error covers every way a passphrase can fail, so that it tells
    /// nothing about which slot came closest.
    #[error("no key slot opens with this key")]
    WrongKey,

    /// Bytes that should hold a LUKS2 header (binary header, JSON metadata
    /// or key slot area) do not.
    #[error("bad LUKS2 header: {0}")]
    BadHeader(&'static str),

    /// A valid LUKS2 header asks for something this crate does not do: a
    /// cipher other than `aes-xts-plain64`, LUKS1, dm-integrity, an
    /// unfinished reencryption, another key derivation or hash.
    #[error("unsupported LUKS2 feature: {0}")]
    Unsupported(String),

    /// All 32 LUKS2 key slots are in use, or the key slot area has no room
    /// for another one.
    #[error("no free key slot")]
    NoFreeKeyslot,

    /// Removing this key slot would leave the image with none, and that
    /// was not allowed.
    #[error("refusing to remove the last key slot")]
    LastKeyslot,

    /// A key slot number names no key slot.
    #[error("key slot {0} is not in use")]
    NoSuchKeyslot(usize),

    /// The header on disk is not the one this change was prepared from:
    /// another program changed the key slots in between. Nothing was
    /// written; read the header again and retry.
    #[error("the image's header changed since it was read (a concurrent key change?)")]
    HeaderChanged,

    /// The image could not be locked for a header change. Header changes
    /// take an exclusive `flock` on the image file, as cryptsetup does, so
    /// that two of them never interleave; a file system without `flock`
    /// cannot give that guarantee.
    #[error("cannot lock the image for a header change")]
    Lock(#[source] io::Error),

    /// The key given to prove that the image stays openable opens the
    /// very key slot being removed.
    #[error("the key given opens key slot {0} itself; give the key of a slot that stays")]
    KeyOpensRemovedSlot(usize),

    /// A key file is larger than cryptsetup reads (its compiled-in
    /// `DEFAULT_KEYFILE_SIZE_MAXKB`, 8192 KiB): cryptsetup would refuse
    /// it with "Maximum keyfile size exceeded", so an image unlocked with
    /// it here could not be opened by the kernel.
    #[error("key file {path:?} is {len} bytes, over cryptsetup's maximum of {max} bytes")]
    KeyFileTooLarge {
        /// The key file.
        path: std::path::PathBuf,
        /// Its size.
        len: u64,
        /// The largest size cryptsetup accepts.
        max: u64,
    },

    /// A key file holds no bytes.
    #[error("key file {0:?} is empty")]
    KeyFileEmpty(std::path::PathBuf),

    /// A key file, or the directory to hold it, could not be read or
    /// written.
    #[error("cannot access key file {path:?}")]
    KeyFileIo {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The metadata does not fit in the LUKS2 JSON area.
    #[error("LUKS2 metadata does not fit in its {0}-byte JSON area")]
    MetadataTooLarge(u64),

    /// Options for a new LUKS2 header or key slot are out of range.
    #[error("bad LUKS2 options: {0}")]
    BadOptions(String),

    /// Data to encrypt or decrypt does not start or end on a sector
    /// boundary.
    #[error("{len} bytes at offset {offset} are not whole {sector_size}-byte sectors")]
    NotSectorAligned {
        /// Byte offset of the data in the segment.
        offset: u64,
        /// Length of the data in bytes.
        len: u64,
        /// The sector size.
        sector_size: usize,
    },

    /// An image ends before its header or file system says it should.
    #[error("image is truncated")]
    Truncated,

    /// The decrypted data segment does not hold an ext4 file system.
    #[error("the decrypted image holds no ext4 file system")]
    NotExt4,

    /// Reading the file system inside an image failed.
    #[error("cannot read {path} in the image")]
    Filesystem {
        /// The path inside the image, escaped as
        /// [`Escaped`](crate::Escaped) shows it.
        path: String,
        /// What the ext4 reader reported.
        #[source]
        source: ext4_view::Ext4Error,
    },

    /// A path to look up in an image is not one ext4 can hold (a
    /// component over 255 bytes, a NUL, not absolute).
    #[error("bad path {path} in the image: {reason}")]
    BadPath {
        /// The path, escaped as [`Escaped`](crate::Escaped) shows it.
        path: String,
        /// Why.
        reason: String,
    },

    /// Building the file system to seal failed.
    #[error("cannot build the file system")]
    Ext4(#[from] confsum_ext4::Error),

    /// The output exists and was not to be replaced.
    #[error("{0:?} already exists")]
    Exists(std::path::PathBuf),

    /// The image to write lies inside the directory being sealed, so it
    /// would be sealed into itself.
    #[error(
        "{out:?} is inside {source_dir:?}, the directory being sealed; write the image elsewhere"
    )]
    OutputInsideSource {
        /// The image path asked for.
        out: std::path::PathBuf,
        /// The directory being sealed.
        source_dir: std::path::PathBuf,
    },

    /// A forced image size cannot hold the header and the content.
    #[error("an image of {size} bytes is too small: {needed} bytes are needed")]
    ImageTooSmall {
        /// The size asked for.
        size: u64,
        /// The size the header and content need.
        needed: u64,
    },
}
