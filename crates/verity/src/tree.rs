//! Upper levels, the root, and the hash device's bytes.
//!
//! The whole tree is kept in memory (about 0.8% of the data) because the
//! hash device stores the levels top first, so nothing can be written until
//! the last leaf is known.

use std::io::Write;

use rayon::prelude::*;

use crate::Error;
use crate::hasher::pool;
use crate::root::{BLOCK_SIZE, HASH_SIZE, HASHES_PER_BLOCK, RootHash, padded_hash, padded_hashes};
use crate::superblock::VeritySuperblock;

type Hash = [u8; HASH_SIZE];

/// A complete dm-verity hash tree, as built by [`VerityHasher`](crate::VerityHasher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    /// Levels bottom up: `levels[0]` holds one hash per data block, the last
    /// level fits in one block. Padding is implied, not stored.
    levels: Vec<Vec<Hash>>,
    root: RootHash,
}

impl VerityTree {
    /// Builds the upper levels over the leaf hashes.
    pub(crate) fn from_leaves(leaves: Vec<Hash>) -> Result<Self, Error> {
        if leaves.is_empty() {
            return Err(Error::EmptyData);
        }
        let mut levels = vec![leaves];
        // hcsshim stops once a level fits in one block, but always keeps the first.
        while let Some(below) = levels.last().filter(|l| l.len() > HASHES_PER_BLOCK) {
            let level = hash_level(below);
            levels.push(level);
        }
        let top = levels.last().map(Vec::as_slice).unwrap_or_default();
        // The top level, zero-padded to one block.
        let root = RootHash::from(padded_hash(top.as_flattened()));
        Ok(VerityTree { levels, root })
    }

    /// The root hash.
    pub fn root_hash(&self) -> RootHash {
        self.root
    }

    /// How many data blocks the tree covers.
    pub fn data_blocks(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// How many hash levels the tree has (at least one).
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// How many hash blocks the tree takes on the hash device.
    pub fn hash_blocks(&self) -> u64 {
        self.levels
            .iter()
            .map(|l| l.len().div_ceil(HASHES_PER_BLOCK) as u64)
            .sum()
    }

    /// The tree as `veritysetup` lays it out after the superblock: the top
    /// level first, down to the leaves, each level padded to whole blocks.
    /// hcsshim appends exactly these bytes to a layer's VHD.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tree_len());
        for level in self.levels.iter().rev() {
            out.extend_from_slice(level.as_flattened());
            out.resize(out.len().next_multiple_of(BLOCK_SIZE), 0);
        }
        out
    }

    /// Writes the bytes of [`VerityTree::to_bytes`] to `out`.
    pub fn write_tree<W: Write>(&self, mut out: W) -> Result<(), Error> {
        const ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
        for level in self.levels.iter().rev() {
            let bytes = level.as_flattened();
            out.write_all(bytes)?;
            let pad = bytes.len().next_multiple_of(BLOCK_SIZE) - bytes.len();
            out.write_all(ZEROS.get(..pad).unwrap_or_default())?;
        }
        Ok(())
    }

    /// The superblock describing this tree, with the given UUID.
    pub fn superblock(&self, uuid: [u8; 16]) -> VeritySuperblock {
        VeritySuperblock::new(self.data_blocks(), uuid)
    }

    /// Writes a complete hash device to `out`: the superblock padded to one
    /// block, then the tree. `veritysetup verify DATA DEVICE ROOT` and
    /// `veritysetup open` accept it.
    ///
    /// `veritysetup format` picks a random UUID; passing a fixed one keeps
    /// the output reproducible.
    pub fn write_hash_device<W: Write>(&self, mut out: W, uuid: [u8; 16]) -> Result<(), Error> {
        let mut first = [0; BLOCK_SIZE];
        if let Some(head) = first.get_mut(..VeritySuperblock::SIZE) {
            head.copy_from_slice(&self.superblock(uuid).encode());
        }
        out.write_all(&first)?;
        self.write_tree(&mut out)?;
        out.flush()?;
        Ok(())
    }

    fn tree_len(&self) -> usize {
        self.levels
            .iter()
            .map(|l| l.len().div_ceil(HASHES_PER_BLOCK) * BLOCK_SIZE)
            .sum()
    }
}

/// Hashes each block's worth of `below`, in parallel.
fn hash_level(below: &[Hash]) -> Vec<Hash> {
    let work = || {
        below
            .par_chunks(2 * HASHES_PER_BLOCK)
            .with_min_len(8)
            .flat_map_iter(|two| {
                let mut hashes = Vec::with_capacity(2);
                let blocks = two.chunks(HASHES_PER_BLOCK).map(<[Hash]>::as_flattened);
                padded_hashes(blocks, &mut hashes);
                hashes
            })
            .collect()
    };
    match pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::salted_hash;

    #[test]
    fn shape_at_level_boundaries() {
        // (data blocks, levels, hash blocks), as veritysetup reports them
        // (except one block, where hcsshim adds a level veritysetup omits).
        for (blocks, levels, hash_blocks) in [
            (1, 1, 1),
            (128, 1, 1),
            (129, 2, 3),
            (16384, 2, 129),
            (16385, 3, 132),
        ] {
            let tree = VerityTree::from_leaves(vec![[7; HASH_SIZE]; blocks]).unwrap();
            assert_eq!(tree.data_blocks(), blocks as u64);
            assert_eq!(tree.levels(), levels, "{blocks} blocks");
            assert_eq!(tree.hash_blocks(), hash_blocks, "{blocks} blocks");
            let bytes = tree.to_bytes();
            assert_eq!(bytes.len() as u64, hash_blocks * BLOCK_SIZE as u64);
            let mut written = Vec::new();
            tree.write_tree(&mut written).unwrap();
            assert_eq!(written, bytes);
            assert_eq!(
                tree.root_hash().as_bytes(),
                &salted_hash(&bytes[..BLOCK_SIZE])
            );
        }
    }
}
