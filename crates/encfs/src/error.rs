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
    #[error("cannot read {path:?} in the image")]
    Filesystem {
        /// The path inside the image.
        path: String,
        /// What the ext4 reader reported.
        #[source]
        source: ext4_view::Ext4Error,
    },

    /// Building the file system to seal failed.
    #[error("cannot build the file system")]
    Ext4(#[from] confsum_ext4::Error),

    /// The output exists and was not to be replaced.
    #[error("{0:?} already exists")]
    Exists(std::path::PathBuf),

    /// A forced image size cannot hold the header and the content.
    #[error("an image of {size} bytes is too small: {needed} bytes are needed")]
    ImageTooSmall {
        /// The size asked for.
        size: u64,
        /// The size the header and content need.
        needed: u64,
    },
}
