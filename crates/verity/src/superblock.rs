//! The superblock `veritysetup` keeps at the start of a hash device.
//!
//! It records the tree's parameters, so a device can be opened with only
//! the root hash. The layout is cryptsetup's `struct verity_sb` (512 bytes,
//! little-endian); decoding checks what cryptsetup's `VERITY_read_sb`
//! checks, since a device this accepts should be one cryptsetup accepts.

use crate::Error;
use crate::root::{BLOCK_SIZE, SALT};

const SIGNATURE: [u8; 8] = *b"verity\0\0";
const ALGORITHM_LEN: usize = 32;
const MAX_SALT_LEN: usize = 256;

/// A dm-verity superblock (format version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeritySuperblock {
    hash_type: u32,
    uuid: [u8; 16],
    algorithm: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: Vec<u8>,
}

impl VeritySuperblock {
    /// Size of the encoded superblock. On the device it is padded to one
    /// hash block.
    pub const SIZE: usize = 512;

    /// The superblock for this crate's trees: hash type 1, SHA-256,
    /// 4096-byte blocks, the 32-byte zero salt, and `data_blocks` blocks.
    pub fn new(data_blocks: u64, uuid: [u8; 16]) -> Self {
        VeritySuperblock {
            hash_type: 1,
            uuid,
            algorithm: "sha256".to_owned(),
            data_block_size: BLOCK_SIZE as u32,
            hash_block_size: BLOCK_SIZE as u32,
            data_blocks,
            salt: SALT.to_vec(),
        }
    }

    /// Hash type: 0 for Chrome OS trees, 1 for normal ones.
    pub fn hash_type(&self) -> u32 {
        self.hash_type
    }

    /// The hash device's UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The hash algorithm's name, as cryptsetup spells it (`sha256`).
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// Data block size in bytes.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    /// Hash block size in bytes.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// Number of data blocks the tree covers.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The 512 bytes of the superblock.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        let mut w = Writer(&mut out);
        w.put(&SIGNATURE);
        w.put(&1u32.to_le_bytes());
        w.put(&self.hash_type.to_le_bytes());
        w.put(&self.uuid);
        // Invariant: the name is at most 31 bytes, so it stays NUL-terminated.
        let mut algorithm = [0; ALGORITHM_LEN];
        algorithm
            .iter_mut()
            .zip(self.algorithm.as_bytes())
            .for_each(|(d, s)| *d = *s);
        w.put(&algorithm);
        w.put(&self.data_block_size.to_le_bytes());
        w.put(&self.hash_block_size.to_le_bytes());
        w.put(&self.data_blocks.to_le_bytes());
        // Invariant: the salt is at most 256 bytes.
        w.put(&(self.salt.len() as u16).to_le_bytes());
        w.put(&[0; 6]);
        w.put(&self.salt);
        out
    }

    /// Parses a superblock from the start of `bytes` (at least 512 bytes).
    ///
    /// Checks what cryptsetup checks: signature, version 1, hash type 0 or
    /// 1, block sizes that are powers of two from 512 bytes to 512 KiB, a
    /// NUL-terminated algorithm name and a salt of at most 256 bytes. Does
    /// not check that the algorithm is one this crate can compute.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(
            bytes
                .get(..Self::SIZE)
                .ok_or(Error::BadSuperblock("shorter than 512 bytes"))?,
        );
        if r.array::<8>()? != SIGNATURE {
            return Err(Error::BadSuperblock("no \"verity\" signature"));
        }
        if u32::from_le_bytes(r.array()?) != 1 {
            return Err(Error::BadSuperblock("unsupported version"));
        }
        let hash_type = u32::from_le_bytes(r.array()?);
        if hash_type > 1 {
            return Err(Error::BadSuperblock("unsupported hash type"));
        }
        let uuid = r.array()?;
        let name: [u8; ALGORITHM_LEN] = r.array()?;
        let len = name
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::BadSuperblock("algorithm name not terminated"))?;
        let algorithm = name
            .get(..len)
            .filter(|n| !n.is_empty() && n.iter().all(u8::is_ascii_graphic))
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or(Error::BadSuperblock("bad algorithm name"))?
            .to_owned();
        let data_block_size = u32::from_le_bytes(r.array()?);
        let hash_block_size = u32::from_le_bytes(r.array()?);
        if !block_size_ok(data_block_size) || !block_size_ok(hash_block_size) {
            return Err(Error::BadSuperblock("unsupported block size"));
        }
        let data_blocks = u64::from_le_bytes(r.array()?);
        let salt_len = usize::from(u16::from_le_bytes(r.array()?));
        let _pad: [u8; 6] = r.array()?;
        let salt_area: [u8; MAX_SALT_LEN] = r.array()?;
        let salt = salt_area
            .get(..salt_len)
            .ok_or(Error::BadSuperblock("salt longer than 256 bytes"))?
            .to_vec();
        Ok(VeritySuperblock {
            hash_type,
            uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        })
    }
}

/// cryptsetup's `VERITY_BLOCK_SIZE_OK`: a power of two, 512 B to 512 KiB.
fn block_size_ok(size: u32) -> bool {
    size.is_power_of_two() && (512..=512 * 1024).contains(&size)
}

/// Writes fields one after another into a fixed buffer.
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn put(&mut self, field: &[u8]) {
        let buf = std::mem::take(&mut self.0);
        let (head, rest) = buf.split_at_mut(field.len().min(buf.len()));
        head.copy_from_slice(field.get(..head.len()).unwrap_or_default());
        self.0 = rest;
    }
}

/// Reads fields one after another from untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(Error::BadSuperblock("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let sb = VeritySuperblock::new(16385, [9; 16]);
        let bytes = sb.encode();
        assert_eq!(&bytes[..8], b"verity\0\0");
        assert_eq!(&bytes[32..39], b"sha256\0");
        assert_eq!(&bytes[72..80], &16385u64.to_le_bytes());
        assert_eq!(&bytes[80..82], &32u16.to_le_bytes());
        assert!(bytes[88..].iter().all(|&b| b == 0));
        assert_eq!(VeritySuperblock::decode(&bytes).unwrap(), sb);
    }
}
