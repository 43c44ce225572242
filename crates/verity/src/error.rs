//! The crate's one error type.
//!
//! Errors of the ext4 conversion nest whole ([`Error::Ext4`]), so a caller
//! can still match on the entry a layer was refused for.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the data or writing the hash device failed.
    #[error("i/o error")]
    Io(#[from] io::Error),

    /// The start of a layer could not be read to tell its compression
    /// (gzip, zstd or none), or the zstd decoder could not start.
    #[error("cannot read the layer's compression header")]
    Compression(#[source] io::Error),

    /// Converting a layer to ext4 failed: a malformed or refused tar, or an
    /// error reading the layer or writing the image.
    #[error("cannot convert the layer to ext4")]
    Ext4(#[from] confsum_ext4::Error),

    /// The data to hash is not a whole number of 4096-byte blocks.
    #[error("data length {len} is not a multiple of the 4096-byte block size")]
    NotBlockAligned {
        /// Length of the data in bytes.
        len: u64,
    },

    /// There is no data to hash; a dm-verity tree needs at least one block.
    #[error("no data blocks to hash")]
    EmptyData,

    /// A block overwrite named a block that has not been written yet.
    #[error("cannot overwrite block {index}: only {blocks} whole blocks have been written")]
    OverwritePastEnd {
        /// The block that was to be overwritten.
        index: u64,
        /// How many whole blocks had been written.
        blocks: u64,
    },

    /// Bytes that should hold a dm-verity superblock do not.
    #[error("bad dm-verity superblock: {0}")]
    BadSuperblock(&'static str),

    /// A root hash string is not 64 hex digits.
    #[error("bad dm-verity root hash")]
    BadRootHash(#[source] hex::FromHexError),
}

impl Error {
    /// Turns the error into an [`io::Error`] for [`confsum_ext4::BlockSink`],
    /// without burying an I/O error one level deeper.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            Error::BadSuperblock(_) | Error::BadRootHash(_) => {
                io::Error::new(io::ErrorKind::InvalidData, self)
            }
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}
