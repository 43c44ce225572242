//! dm-verity hash trees, as hcsshim and `veritysetup` compute them.
//!
//! Azure Confidential Container Instances name each container layer by the
//! dm-verity root hash of the layer's ext4 image, so this crate agrees bit
//! for bit with hcsshim and `veritysetup`: [`VerityHasher`] hashes any image
//! while it is being written, [`root_hash`] hashes one that already exists,
//! [`VerityTree`] writes the hash device that `veritysetup` and the kernel
//! read, and [`VeritySuperblock`] encodes and checks that device's
//! superblock.
//!
//! ```
//! use confsum_verity::root_hash;
//!
//! let image = vec![0xab; 8192];
//! assert_eq!(root_hash(&image[..])?.to_string().len(), 64);
//! # Ok::<(), confsum_verity::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod hasher;
mod root;
mod superblock;
mod tree;

pub use crate::{
    error::Error,
    hasher::VerityHasher,
    root::{RootHash, root_hash},
    superblock::VeritySuperblock,
    tree::VerityTree,
};
