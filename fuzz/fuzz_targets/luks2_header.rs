//! Arbitrary bytes -> `Luks2::read` (through a `Cursor`) -> every accessor.
//! Any panic is a bug; errors are the expected outcome for almost every
//! input, and reading must never write.
//!
//! The first byte picks how the rest is used:
//! - even: the rest is the image, as it is;
//! - odd: the rest is the start of an image of at least `IMAGE_LEN` bytes
//!   (zeros after it) whose primary header checksum is then made right, so
//!   that mutations of the binary header and the JSON get past the SHA-256
//!   check and reach the metadata checks.
#![no_main]

use std::io::Cursor;

use confsum_encfs::Luks2;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// Two 16 KiB metadata copies and one 64-byte key's key slot area
/// (258048 bytes): the smallest image `Luks2::format` makes.
const IMAGE_LEN: usize = 32768 + 258_048;

/// The header sizes LUKS2 allows.
const HDR_SIZES: [usize; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

fn check(image: &[u8]) {
    if let Ok(luks) = Luks2::read(Cursor::new(image)) {
        assert!(luks.data_offset() > 0);
        assert!(matches!(luks.sector_size(), 512 | 1024 | 2048 | 4096));
        assert_eq!(luks.cipher(), "aes-xts-plain64");
        let _ = (
            luks.iv_tweak(),
            luks.uuid(),
            luks.label(),
            luks.segment_size(),
        );
        let _ = luks.header_copies_ok();
        for slot in luks.keyslots() {
            assert!(slot.id < 32);
            assert!(slot.area_offset.checked_add(slot.area_size).is_some());
            assert!(slot.key_size == 32 || slot.key_size == 64);
        }
    }
}

/// Makes the primary copy's checksum right for its `hdr_size` (16 KiB
/// when that field is not a LUKS2 size or runs past the image).
fn fix_checksum(image: &mut [u8]) {
    let field = u64::from_be_bytes(image[8..16].try_into().unwrap_or_default());
    let size = HDR_SIZES
        .into_iter()
        .find(|&s| s as u64 == field && s <= image.len())
        .unwrap_or(0x4000);
    image[448..512].fill(0);
    let sum = Sha256::digest(&image[..size]);
    image[448..480].copy_from_slice(&sum);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest);
    } else {
        let mut image = vec![0; IMAGE_LEN.max(rest.len())];
        image[..rest.len()].copy_from_slice(rest);
        fix_checksum(&mut image);
        check(&image);
    }
});
