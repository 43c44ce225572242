//! From a container layer to its root hash: the call everyone uses.
//!
//! hcsshim names a layer by decompressing its tar, converting it to ext4
//! with `tar2ext4` (whiteouts converted, 128 GiB maximum disk size) and
//! taking the dm-verity root hash of that image. Here the image streams from
//! the ext4 writer straight into [`VerityHasher`], so nothing touches disk
//! unless the caller also wants the image.

use std::io::{BufReader, Read};

use confsum_ext4::{BlockSink, Options, convert_tar, decompress};

use crate::{Error, RootHash, VerityHasher};

/// Read buffer in front of the decompressor: big reads keep the gzip or
/// zstd decoder and the ext4 writer busy with few system calls.
const READ_BUFFER: usize = 1 << 20;

/// The root hash of a container layer, as Azure computes it: the value a
/// CCE policy lists under `layers`.
///
/// `layer` is the layer's tar, plain, gzip or zstd (told apart by their
/// first bytes, as registries serve layers), and is read to its end.
/// `options` are the ext4 conversion settings; [`Options::default`] is what
/// Azure uses, and anything else changes the hash.
///
/// Hashing runs on all cores, on a thread pool of this crate's own, so many
/// layers may be hashed at once from any threads (a rayon pool included)
/// without one call waiting on another's workers.
///
/// Errors: [`Error::Compression`] when the start of the stream cannot be
/// read, [`Error::Ext4`] for a malformed or refused tar or an I/O error
/// while reading it (the ext4 error is the [`source`](std::error::Error::source)).
pub fn layer_root_hash<R: Read>(layer: R, options: &Options) -> Result<RootHash, Error> {
    convert_tar(open(layer)?, VerityHasher::new(), options)?.root_hash()
}

/// [`layer_root_hash`], also writing the layer's ext4 image to `image`, which
/// is returned once the image is complete (`image` sees
/// [`BlockSink::finish`]).
///
/// The image is exactly the one that was hashed; for a file, pass a
/// [`confsum_ext4::ImageSink`]. On error the sink is dropped with a partial
/// image in it, so write to a temporary file and keep it only on success.
pub fn layer_root_hash_with_image<R: Read, S: BlockSink>(
    layer: R,
    options: &Options,
    image: S,
) -> Result<(RootHash, S), Error> {
    let tar = open(layer)?;
    let (image, hasher) = convert_tar(tar, (image, VerityHasher::new()), options)?;
    Ok((hasher.root_hash()?, image))
}

/// The layer's tar stream, decompressed if its first bytes say so.
fn open<'a, R: Read + 'a>(layer: R) -> Result<Box<dyn Read + 'a>, Error> {
    decompress(BufReader::with_capacity(READ_BUFFER, layer)).map_err(Error::Compression)
}
