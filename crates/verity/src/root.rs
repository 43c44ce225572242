//! The tree's parameters, the root hash, and hashing data already written.
//!
//! Azure identifies each container layer by the dm-verity root hash of the
//! layer's ext4 image, so this crate must agree bit for bit with hcsshim's
//! `ext4/dmverity` (and, for two or more data blocks, with `veritysetup`):
//! SHA-256, 4096-byte data and hash blocks, and a salt of 32 zero bytes put
//! in front of every block before it is hashed. Each level is the
//! concatenation of the hashes of the level below, padded with zeros to a
//! whole block, and levels are added until one block remains. The root is
//! the salted hash of that top block.
//!
//! hcsshim always builds at least one level. For a single data block the
//! kernel and `veritysetup` build none and use the salted hash of the data
//! block itself as the root, so the two roots differ in that one case. This
//! crate follows hcsshim; a layer image is never one block long.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::str::FromStr;

use confsum_ext4::BlockSink;
use sha2::{Digest, Sha256};

use crate::{Error, VerityHasher};

/// Size of every data block and hash block.
pub(crate) const BLOCK_SIZE: usize = confsum_ext4::BLOCK_SIZE;

/// Size of one SHA-256 hash.
pub(crate) const HASH_SIZE: usize = 32;

/// How many hashes fit in one hash block.
pub(crate) const HASHES_PER_BLOCK: usize = BLOCK_SIZE / HASH_SIZE;

/// The salt: 32 zero bytes, as hcsshim uses.
pub(crate) const SALT: [u8; HASH_SIZE] = [0; HASH_SIZE];

/// `sha256(SALT || [0; 4096])`, the leaf hash of an all-zero block. Images
/// end in long runs of zeros, which this spares us from hashing.
pub(crate) const ZERO_BLOCK_HASH: [u8; HASH_SIZE] = [
    0x2e, 0x53, 0x4e, 0xf0, 0x10, 0x7d, 0x59, 0x2d, 0x17, 0x06, 0xac, 0x38, 0xad, 0x58, 0x59, 0x6b,
    0x85, 0xef, 0x33, 0x75, 0xd3, 0x60, 0xa6, 0xd6, 0x69, 0xf9, 0x74, 0x79, 0x2d, 0xf5, 0xcb, 0x5a,
];

/// Salted SHA-256 of one block (or of any bytes).
pub(crate) fn salted_hash(block: &[u8]) -> [u8; HASH_SIZE] {
    let mut hasher = Sha256::new();
    hasher.update(SALT);
    hasher.update(block);
    hasher.finalize().into()
}

/// Salted SHA-256 of a block's first bytes followed by zeros up to a whole
/// block, without building the block.
pub(crate) fn padded_hash(data: &[u8]) -> [u8; HASH_SIZE] {
    const ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
    let mut hasher = Sha256::new();
    hasher.update(SALT);
    hasher.update(data);
    let pad = BLOCK_SIZE.saturating_sub(data.len());
    hasher.update(ZEROS.get(..pad).unwrap_or_default());
    hasher.finalize().into()
}

/// [`padded_hash`] of every block, in order, appended to `out`.
///
/// Blocks go two at a time through [`confsum_sha256x2::digest_pair`],
/// which on CPUs with the SHA extensions hashes both in the time `sha2`
/// takes for 1.6 (see that crate). A short block is padded with zeros on
/// the stack.
pub(crate) fn padded_hashes<'a>(
    blocks: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<[u8; HASH_SIZE]>,
) {
    let mut held: Option<&[u8]> = None;
    for block in blocks {
        match held.take() {
            None => held = Some(block),
            Some(first) => out.extend(padded_pair(first, block)),
        }
    }
    if let Some(last) = held {
        out.push(padded_hash(last));
    }
}

fn padded_pair(a: &[u8], b: &[u8]) -> [[u8; HASH_SIZE]; 2] {
    if a.len() == BLOCK_SIZE && b.len() == BLOCK_SIZE {
        return confsum_sha256x2::digest_pair(&SALT, [a, b]);
    }
    let mut padded = [[0; BLOCK_SIZE]; 2];
    let [pa, pb] = &mut padded;
    for (buf, block) in [(&mut *pa, a), (&mut *pb, b)] {
        if let Some(head) = buf.get_mut(..block.len()) {
            head.copy_from_slice(block);
        }
    }
    confsum_sha256x2::digest_pair(&SALT, [pa, pb])
}

/// The root hash of a dm-verity tree: 32 bytes, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash([u8; HASH_SIZE]);

impl RootHash {
    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }
}

impl From<[u8; HASH_SIZE]> for RootHash {
    fn from(bytes: [u8; HASH_SIZE]) -> Self {
        RootHash(bytes)
    }
}

impl fmt::LowerHex for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str("0x")?;
        }
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(self, f)
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({self})")
    }
}

impl FromStr for RootHash {
    type Err = Error;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut bytes = [0; HASH_SIZE];
        hex::decode_to_slice(s, &mut bytes).map_err(Error::BadRootHash)?;
        Ok(RootHash(bytes))
    }
}

/// Computes the dm-verity root hash of `data`, which must be a non-empty,
/// whole number of 4096-byte blocks.
///
/// Reads to the end of `data`, hashing on all cores as it goes.
pub fn root_hash<R: Read>(mut data: R) -> Result<RootHash, Error> {
    let mut hasher = VerityHasher::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.append(buf.get(..n).unwrap_or(&buf))?;
    }
    hasher.root_hash()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of whole and short blocks, and an odd one out, as the
    /// one-at-a-time hash gives them.
    #[test]
    fn padded_hashes_match_one_at_a_time() {
        let data = pattern(9);
        for lens in [
            &[4096, 4096, 4096][..],
            &[1, 4096, 4095, 0, 4096, 17],
            &[4096, 100],
            &[5],
            &[],
        ] {
            let blocks: Vec<&[u8]> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| &data[i * BLOCK_SIZE..][..len])
                .collect();
            let mut paired = Vec::new();
            padded_hashes(blocks.iter().copied(), &mut paired);
            let single: Vec<_> = blocks.iter().map(|b| padded_hash(b)).collect();
            assert_eq!(paired, single, "{lens:?}");
        }
    }

    #[test]
    fn zero_block_hash_is_salted_hash_of_zeros() {
        assert_eq!(ZERO_BLOCK_HASH, salted_hash(&[0; BLOCK_SIZE]));
        assert_eq!(
            hex::encode(ZERO_BLOCK_HASH),
            "2e534ef0107d592d1706ac38ad58596b85ef3375d360a6d669f974792df5cb5a"
        );
    }

    #[test]
    fn root_hash_text_round_trips() {
        let text = "24ab3a032abf331521fa2e9f4914fff3f1751c47e7d9bd67f2a14fd6a329048a";
        let root: RootHash = text.parse().unwrap();
        assert_eq!(root.to_string(), text);
        assert_eq!(format!("{root:x}"), text);
        assert_eq!(format!("{root:#x}"), format!("0x{text}"));
        assert_eq!(format!("{root:?}"), format!("RootHash({text})"));
        assert_eq!(text.to_uppercase().parse::<RootHash>().unwrap(), root);
        assert_eq!(root.as_bytes()[0], 0x24);
        assert!(matches!(
            text[1..].parse::<RootHash>(),
            Err(Error::BadRootHash(_))
        ));
        assert!(matches!(
            "zz".repeat(32).parse::<RootHash>(),
            Err(Error::BadRootHash(_))
        ));
    }

    /// A reference tree built the way hcsshim's `MerkleTree` builds it:
    /// hash every block of a level, pad, repeat until one block remains.
    fn reference_root(data: &[u8]) -> String {
        let mut level = data.to_vec();
        loop {
            let mut next: Vec<u8> = level.chunks(BLOCK_SIZE).flat_map(salted_hash).collect();
            next.resize(next.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
            level = next;
            if level.len() == BLOCK_SIZE {
                return hex::encode(salted_hash(&level));
            }
        }
    }

    /// Block `i` filled with the byte `i * 7 + 1`.
    fn pattern(blocks: usize) -> Vec<u8> {
        (0..blocks)
            .flat_map(|i| [(i * 7 + 1) as u8; BLOCK_SIZE])
            .collect()
    }

    #[test]
    fn known_answers() {
        // Computed independently (Python hashlib, hcsshim's algorithm).
        let data = pattern(130);
        assert_eq!(
            root_hash(&data[..]).unwrap().to_string(),
            "24ab3a032abf331521fa2e9f4914fff3f1751c47e7d9bd67f2a14fd6a329048a"
        );
        assert_eq!(
            reference_root(&data),
            root_hash(&data[..]).unwrap().to_string()
        );
        // One block still gets one level, as in hcsshim.
        assert_eq!(
            root_hash(&[0; BLOCK_SIZE][..]).unwrap().to_string(),
            "7c92821bbc116b4d1970d56f17c97827de9977ac096f7fe3d68a2bb624392a96"
        );
    }

    #[test]
    fn matches_reference_at_level_boundaries() {
        for blocks in [1, 2, 127, 128, 129, 255, 256, 257] {
            let data = pattern(blocks);
            assert_eq!(
                root_hash(&data[..]).unwrap().to_string(),
                reference_root(&data),
                "{blocks} blocks"
            );
        }
    }

    #[test]
    fn rejects_empty_and_unaligned_data() {
        assert!(matches!(root_hash(&[][..]), Err(Error::EmptyData)));
        assert!(matches!(
            root_hash(&[1; BLOCK_SIZE + 1][..]),
            Err(Error::NotBlockAligned { len }) if len == BLOCK_SIZE as u64 + 1
        ));
    }
}
