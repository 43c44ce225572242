//! LUKS2 images: the data owner's sealed documents.
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
//! ```
//! use confsum_encfs::{SealOptions, SealSource, Volume, seal};
//!
//! let dir = tempfile::tempdir()?;
//! let docs = dir.path().join("docs");
//! std::fs::create_dir(&docs)?;
//! std::fs::write(docs.join("a.txt"), "secret\n")?;
//!
//! // The recipe unlocks keyslot 0 with a random 32-byte key file.
//! let key = [7u8; 32];
//! let img = dir.path().join("docs.img");
//! seal(SealSource::Dir(&docs), &img, &key, &SealOptions::default(), &mut |_| {})?;
//!
//! let fs = Volume::open(&img, &key)?.filesystem()?;
//! let mut text = Vec::new();
//! fs.copy_to("/a.txt", &mut text)?;
//! assert_eq!(text, b"secret\n");
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
mod volume;

pub use crate::{
    crypt::{SectorCipher, VolumeKey},
    error::Error,
    keyfile::KeyFile,
    locked::LockedImage,
    luks2::{FormatOptions, Kdf, KeyslotInfo, KeyslotPriority, Luks2},
    seal::{SealOptions, SealReport, SealSource, seal, seal_into},
    volume::{EntryInfo, Escaped, FileKind, Filesystem, Volume},
};
