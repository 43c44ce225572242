//! From a container layer to its root hash: the call everyone uses.
//!
//! hcsshim names a layer by decompressing its tar, converting it to ext4
//! with `tar2ext4` (whiteouts converted, 128 GiB maximum disk size) and
//! taking the dm-verity root hash of that image. Here the image streams from
//! the ext4 writer straight into [`VerityHasher`], so nothing touches disk
//! unless the caller also wants the image.

use std::io::Read;

use confsum_ext4::{
    BlockSink, Options, SharedChunk, SharedReader, TarReport, convert_shared_tar, decompress_shared,
};

use crate::{Error, RootHash, VerityHasher};

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
    Ok(hash_layer(layer, options)?.root)
}

/// What hashing a layer found: its root hash, and how its tar ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerHash {
    /// The layer's root hash.
    pub root: RootHash,
    /// How the tar stream ended. The reference hashes an empty input, or a
    /// tar cut inside its last padding, without a word; a tool may want to
    /// say so.
    pub tar: TarReport,
}

/// [`layer_root_hash`], with the [`LayerHash::tar`] report.
pub fn hash_layer<R: Read>(layer: R, options: &Options) -> Result<LayerHash, Error> {
    hash_layer_watched(layer, options, |_| {})
}

/// [`hash_layer`], calling `watch` with the layer's stored bytes (before
/// decompression) as they are read, in order, in pieces of the read buffer.
///
/// This is for a second use of the same bytes, say their SHA-256 to check
/// against a manifest's digest, without reading or copying them again: the
/// pieces may be sent to another thread. `watch` sees the bytes that were
/// read, which may stop at the tar's end-of-archive marker, short of the
/// end of the input.
pub fn hash_layer_watched<R: Read>(
    layer: R,
    options: &Options,
    watch: impl FnMut(&SharedChunk),
) -> Result<LayerHash, Error> {
    let raw = SharedReader::new(layer).with_observer(watch);
    let tar = decompress_shared(raw).map_err(Error::Compression)?;
    let (hasher, tar) = convert_shared_tar(tar, VerityHasher::new(), options)?;
    Ok(LayerHash {
        root: hasher.root_hash()?,
        tar,
    })
}

/// [`layer_root_hash_with_image`], with the [`LayerHash::tar`] report.
pub fn hash_layer_with_image<R: Read, S: BlockSink>(
    layer: R,
    options: &Options,
    image: S,
) -> Result<(LayerHash, S), Error> {
    let tar = decompress_shared(SharedReader::new(layer)).map_err(Error::Compression)?;
    let ((image, hasher), tar) = convert_shared_tar(tar, (image, VerityHasher::new()), options)?;
    let root = hasher.root_hash()?;
    Ok((LayerHash { root, tar }, image))
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
    let (hash, image) = hash_layer_with_image(layer, options, image)?;
    Ok((hash.root, image))
}
