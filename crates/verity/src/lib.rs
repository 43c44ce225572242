//! Container layer hashes and dm-verity hash trees, as Azure computes them.
//!
//! Azure Confidential Container Instances name each container layer by the
//! dm-verity root hash of the layer converted to ext4 by hcsshim's
//! `tar2ext4`; a CCE policy lists these hashes under `layers`.
//! [`layer_root_hash`] is that one step: a layer's tar (plain, gzip or zstd)
//! in, its root hash out, streamed and hashed on all cores.
//! [`layer_root_hash_with_image`] also keeps the ext4 image.
//!
//! Underneath are the dm-verity parts, which agree bit for bit with hcsshim
//! and `veritysetup`: [`VerityHasher`] hashes any image while it is being
//! written, [`root_hash`] hashes one that already exists, [`VerityTree`]
//! writes the hash device that `veritysetup` and the kernel read, and
//! [`VeritySuperblock`] encodes and checks that device's superblock.
//!
//! ```
//! use confsum_ext4::{ImageSink, Options};
//! use confsum_verity::{layer_root_hash, layer_root_hash_with_image, root_hash};
//! use std::io::Cursor;
//!
//! // A layer with one file.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_ustar();
//! header.set_size(5);
//! header.set_mode(0o644);
//! tar.append_data(&mut header, "hello.txt", &b"hello"[..])?;
//! let tar = tar.into_inner()?;
//!
//! // The default options are the ones Azure uses.
//! let root = layer_root_hash(&tar[..], &Options::default())?;
//! assert_eq!(root.to_string().len(), 64);
//!
//! // Keeping the image: the root is that of the image's bytes.
//! let sink = ImageSink::new(Cursor::new(Vec::new()));
//! let (same, sink) = layer_root_hash_with_image(&tar[..], &Options::default(), sink)?;
//! let image = sink.into_inner().into_inner();
//! assert_eq!((same, root_hash(&image[..])?), (root, root));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod hasher;
mod layer;
mod root;
mod superblock;
mod tree;

pub use crate::{
    error::Error,
    hasher::VerityHasher,
    layer::{
        LayerHash, hash_layer, hash_layer_watched, hash_layer_with_image, layer_root_hash,
        layer_root_hash_with_image,
    },
    root::{RootHash, root_hash},
    superblock::VeritySuperblock,
    tree::VerityTree,
};
