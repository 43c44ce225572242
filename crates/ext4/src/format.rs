//! On-disk ext4 structures, encoded little-endian at their fixed offsets.
//!
//! Only the fields the compact writer sets are modelled; everything else is
//! zero, as in the reference.

use crate::time::FsTime;

pub(crate) const INODE_FLAG_HUGE_FILE: u32 = 0x4_0000;
pub(crate) const INODE_FLAG_EXTENTS: u32 = 0x8_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
/// Leaf entries that fit in one extent block after its header.
pub(crate) const EXTENTS_PER_BLOCK: u32 = 4096 / 12 - 1;

/// Bytes of the inode the writer fills, before the in-inode xattrs.
pub(crate) const INODE_USED_SIZE: usize = 152;
/// `i_extra_isize`: the fields used past the classic 128 bytes.
const EXTRA_ISIZE: u16 = (INODE_USED_SIZE - 128) as u16;

fn put16(b: &mut [u8], off: usize, v: u16) {
    if let Some(d) = b.get_mut(off..off + 2) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    if let Some(d) = b.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// The fields of an inode the writer sets.
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) links: u16,
    /// In file-system blocks (the huge_file flag is set on every inode).
    pub(crate) blocks: u32,
    pub(crate) flags: u32,
    pub(crate) block: [u8; 60],
    pub(crate) xattr_block: u32,
    pub(crate) atime: FsTime,
    pub(crate) ctime: FsTime,
    pub(crate) mtime: FsTime,
    pub(crate) crtime: FsTime,
}

impl Inode {
    /// Appends the first [`INODE_USED_SIZE`] bytes of the inode.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; INODE_USED_SIZE];
        put16(&mut b, 0, self.mode);
        put16(&mut b, 2, self.uid as u16);
        put32(&mut b, 4, self.size as u32);
        put32(&mut b, 8, self.atime.0 as u32);
        put32(&mut b, 12, self.ctime.0 as u32);
        put32(&mut b, 16, self.mtime.0 as u32);
        put16(&mut b, 24, self.gid as u16);
        put16(&mut b, 26, self.links);
        put32(&mut b, 28, self.blocks);
        put32(&mut b, 32, self.flags);
        if let Some(d) = b.get_mut(40..100) {
            d.copy_from_slice(&self.block);
        }
        put32(&mut b, 104, self.xattr_block);
        put32(&mut b, 108, (self.size >> 32) as u32);
        put16(&mut b, 120, (self.uid >> 16) as u16);
        put16(&mut b, 122, (self.gid >> 16) as u16);
        put16(&mut b, 128, EXTRA_ISIZE);
        put32(&mut b, 132, (self.ctime.0 >> 32) as u32);
        put32(&mut b, 136, (self.mtime.0 >> 32) as u32);
        put32(&mut b, 140, (self.atime.0 >> 32) as u32);
        put32(&mut b, 144, self.crtime.0 as u32);
        put32(&mut b, 148, (self.crtime.0 >> 32) as u32);
        out.extend_from_slice(&b);
    }
}

/// A 32-byte block group descriptor (the small, non-64-bit kind).
#[derive(Debug)]
pub(crate) struct GroupDescriptor {
    pub(crate) block_bitmap: u32,
    pub(crate) inode_bitmap: u32,
    pub(crate) inode_table: u32,
    pub(crate) free_blocks: u16,
    pub(crate) free_inodes: u16,
    pub(crate) used_dirs: u16,
}

impl GroupDescriptor {
    pub(crate) fn encode(&self, b: &mut [u8]) {
        put32(b, 0, self.block_bitmap);
        put32(b, 4, self.inode_bitmap);
        put32(b, 8, self.inode_table);
        put16(b, 12, self.free_blocks);
        put16(b, 14, self.free_inodes);
        put16(b, 16, self.used_dirs);
    }
}

/// The superblock fields that vary between images.
#[derive(Debug)]
pub(crate) struct SuperBlock {
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count: u32,
    pub(crate) free_blocks: u32,
    pub(crate) free_inodes: u32,
    pub(crate) blocks_per_group: u32,
    pub(crate) inodes_per_group: u32,
    pub(crate) first_inode: u32,
    pub(crate) inode_size: u16,
    pub(crate) lpf_inode: u32,
    /// Sets the read-only feature, as the reference does for layers.
    pub(crate) read_only: bool,
}

impl SuperBlock {
    /// Encodes the 1024-byte superblock.
    pub(crate) fn encode(&self, b: &mut [u8]) {
        const COMPAT_EXT_ATTR: u32 = 0x8;
        const COMPAT_SPARSE_SUPER2: u32 = 0x200;
        const INCOMPAT_FILETYPE: u32 = 0x2;
        const INCOMPAT_EXTENTS: u32 = 0x40;
        const INCOMPAT_FLEX_BG: u32 = 0x200;
        const RO_COMPAT_LARGE_FILE: u32 = 0x2;
        const RO_COMPAT_HUGE_FILE: u32 = 0x8;
        const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
        const RO_COMPAT_READONLY: u32 = 0x1000;

        put32(b, 0, self.inodes_count);
        put32(b, 4, self.blocks_count);
        put32(b, 12, self.free_blocks);
        put32(b, 16, self.free_inodes);
        put32(b, 24, 2); // log2(block size) - 10
        put32(b, 28, 2); // clusters are blocks
        put32(b, 32, self.blocks_per_group);
        put32(b, 36, self.blocks_per_group);
        put32(b, 40, self.inodes_per_group);
        put16(b, 56, 0xef53);
        put16(b, 58, 1); // cleanly unmounted
        put16(b, 60, 1); // continue on errors
        put32(b, 76, 1); // dynamic revision
        put32(b, 84, self.first_inode);
        put16(b, 88, self.inode_size);
        put32(b, 92, COMPAT_SPARSE_SUPER2 | COMPAT_EXT_ATTR);
        put32(
            b,
            96,
            INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG,
        );
        let read_only = if self.read_only {
            RO_COMPAT_READONLY
        } else {
            0
        };
        put32(
            b,
            100,
            RO_COMPAT_LARGE_FILE | RO_COMPAT_HUGE_FILE | RO_COMPAT_EXTRA_ISIZE | read_only,
        );
        put16(b, 348, EXTRA_ISIZE);
        put16(b, 350, EXTRA_ISIZE);
        if let Some(d) = b.get_mut(372) {
            // log2(groups per flex group): the reference's 31, or mke2fs's 4
            // where the kernel will allocate.
            *d = if self.read_only { 31 } else { 4 };
        }
        put32(b, 616, self.lpf_inode);
    }
}

pub(crate) fn put_extent_header(out: &mut Vec<u8>, entries: u16, max: u16, depth: u16) {
    out.extend_from_slice(&EXTENT_MAGIC.to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    out.extend_from_slice(&depth.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

pub(crate) fn put_extent_leaf(out: &mut Vec<u8>, block: u32, len: u16, start: u32) {
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
}

pub(crate) fn put_extent_index(out: &mut Vec<u8>, block: u32, leaf: u32) {
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&leaf.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}
