//! Compact, deterministic ext4 images, byte-identical to hcsshim `tar2ext4`.
//!
//! Azure's confidential containers identify each container layer by the
//! dm-verity root hash of that layer converted to ext4 by hcsshim's
//! `tar2ext4` (with whiteout conversion and a 128 GiB maximum disk size).
//! This crate lays out the same image, byte for byte, from a tar stream or a
//! directory, and streams it into any [`BlockSink`]: a file, a hasher, or both.
//! Nothing is buffered beyond the file-system metadata, so multi-gigabyte
//! layers never need to fit in memory. The layer hash itself, in one call,
//! is `confsum_verity::layer_root_hash`.
//!
//! ```
//! use confsum_ext4::{convert_tar, ImageSink, Options};
//! use std::io::Cursor;
//!
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_ustar();
//! header.set_size(5);
//! header.set_mode(0o644);
//! header.set_cksum();
//! tar.append_data(&mut header, "hello.txt", &b"hello"[..])?;
//! let tar = tar.into_inner()?;
//!
//! let image = convert_tar(&tar[..], ImageSink::new(Cursor::new(Vec::new())), &Options::default())?;
//! let image = image.into_inner().into_inner();
//! assert_eq!(image.len() % 4096, 0);
//! assert_eq!(&image[1024 + 56..1024 + 58], &[0x53, 0xef]); // ext4 magic
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod format;
mod from_dir;
mod from_tar;
mod gotar;
mod options;
mod shared;
mod sink;
mod time;
mod writer;
mod xattr;

pub use crate::error::{Error, Refusal};
pub use crate::from_dir::convert_dir;
pub use crate::from_tar::{
    convert_shared_tar, convert_tar, convert_tar_with_report, decompress, decompress_shared,
};
pub use crate::gotar::{TarEnd, TarReport};
pub use crate::options::{Options, PathPolicy, Writable};
pub use crate::shared::{Observer, SharedChunk, SharedReader};
pub use crate::sink::{BLOCK_SIZE, BlockSink, ImageSink};
