//! LUKS2 images and dm-verity hash trees.
//!
//! The data owner seals documents into a LUKS2 image ([`seal`]) that Azure's
//! encrypted-filesystem sidecar opens with the kernel's `cryptsetup open` and
//! mounts read-write; no root, device-mapper or loop device is needed to make
//! it. Inside the workload, [`Volume`] opens the same image (or one made by
//! cryptsetup) without privileges and [`Filesystem`] reads its files.
//! [`Luks2`] manages key slots, so the key the HSM releases can be rotated
//! without re-encrypting the data; [`LockedImage`] makes such changes on an
//! image file serialized (an exclusive `flock`, as cryptsetup takes) and
//! crash-safe, and [`KeyFile`] reads and writes key files within
//! cryptsetup's limits.
//!
//! Azure names each container layer by the dm-verity root hash of its ext4
//! image, so the policy side of the project needs trees that match hcsshim
//! exactly; [`VerityHasher`] computes one while the image is being written,
//! and [`VerityTree::write_hash_device`] writes the hash device that
//! `veritysetup` and the kernel read.
//!
//! ```
//! use confsum_ext4::BlockSink;
//! use confsum_encfs::{VerityHasher, root_hash};
//!
//! // An image of one data block followed by a zero block.
//! let mut hasher = VerityHasher::new();
//! hasher.append(&[0xab; 4096])?;
//! hasher.append_zeros(4096)?;
//! let root = hasher.root_hash()?;
//!
//! let mut image = vec![0xab; 4096];
//! image.resize(8192, 0);
//! assert_eq!(root, root_hash(&image[..])?);
//! assert_eq!(root.to_string().len(), 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod crypt;
mod error;
mod keyfile;
mod locked;
mod luks2;
mod seal;
mod verity;
mod volume;

pub use crate::{
    crypt::{SectorCipher, VolumeKey},
    error::Error,
    keyfile::KeyFile,
    locked::LockedImage,
    luks2::{FormatOptions, Kdf, KeyslotInfo, KeyslotPriority, Luks2},
    seal::{SealOptions, SealReport, SealSource, seal},
    verity::{RootHash, VerityHasher, VeritySuperblock, VerityTree, root_hash},
    volume::{EntryInfo, Escaped, FileKind, Filesystem, Volume},
};
