//! The compact ext4 layout engine.
//!
//! Written by hand because no crate writes ext4, and because the layer hash
//! that Azure checks is the dm-verity root of *exactly* the image that hcsshim's
//! `compactext4` writer lays out. Every placement decision below (inode
//! numbering, directory entry order, extent trees, xattr packing, group sizing)
//! follows that writer, quirks included; changing any of them changes the hash.
//!
//! The layout, in write order: the superblock and group descriptors (reserved
//! first, filled in last), then file data and xattr blocks as entries arrive,
//! then directories (pre-order), the inode table, the bitmaps, and zeros up to
//! the disk size.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::{Error, Refusal};
use crate::format::{self, Inode as RawInode, SuperBlock};
use crate::options::{Options, Writable};
use crate::shared::SharedChunk;
use crate::sink::{BLOCK_SIZE, BlockSink};
use crate::time::{FsTime, GoTime};
use crate::xattr::{self, XattrState};

const BLOCK: u64 = BLOCK_SIZE as u64;
const INODE_FIRST: u32 = 11;
const INODE_ROOT: u32 = 2;
const BLOCKS_PER_GROUP: u32 = BLOCK_SIZE as u32 * 8;
const INODE_SIZE: u32 = 256;
const MAX_INODES_PER_GROUP: u32 = BLOCK_SIZE as u32 * 8;
const INODES_PER_GROUP_INCREMENT: u32 = BLOCK_SIZE as u32 / INODE_SIZE;
const GROUPS_PER_DESCRIPTOR_BLOCK: u32 = BLOCK_SIZE as u32 / 32;
const MAX_FILE_SIZE: u64 = 128 << 30;
const SMALL_SYMLINK_SIZE: u64 = 59;
const MAX_BLOCKS_PER_EXTENT: u32 = 0x8000;
const MAX_LINKS: u32 = 65000;
const DIRENT_HEADER: usize = 8;

/// The default and largest disk sizes the reference accepts.
pub(crate) const DEFAULT_MAX_DISK_SIZE: u64 = 16 << 30;
pub(crate) const MAX_MAX_DISK_SIZE: u64 = 16 << 40;

/// Unix file type bits.
pub(crate) mod mode {
    pub(crate) const TYPE_MASK: u16 = 0xf000;
    pub(crate) const FIFO: u16 = 0x1000;
    pub(crate) const CHR: u16 = 0x2000;
    pub(crate) const DIR: u16 = 0x4000;
    pub(crate) const BLK: u16 = 0x6000;
    pub(crate) const REG: u16 = 0x8000;
    pub(crate) const LNK: u16 = 0xa000;
    pub(crate) const SOCK: u16 = 0xc000;
}

/// A file to add, with the fields the reference takes from a tar header.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileSpec {
    pub(crate) link_name: Vec<u8>,
    pub(crate) size: u64,
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: GoTime,
    pub(crate) ctime: GoTime,
    pub(crate) mtime: GoTime,
    pub(crate) crtime: GoTime,
    pub(crate) devmajor: u32,
    pub(crate) devminor: u32,
    /// Extended attributes by full name; a map keeps them in byte order.
    pub(crate) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Node {
    number: u32,
    size: u64,
    atime: FsTime,
    ctime: FsTime,
    mtime: FsTime,
    crtime: FsTime,
    mode: u16,
    uid: u32,
    gid: u32,
    link_count: u32,
    xattr_block: u32,
    block_count: u32,
    devmajor: u32,
    devminor: u32,
    flags: u32,
    /// The inode's 60-byte `i_block` area: an extent root or a short symlink.
    data: Vec<u8>,
    /// The in-inode xattr area (magic plus entries), empty when unused.
    xattr_inline: Vec<u8>,
    /// What the xattr block holds, kept so it never has to be read back.
    block_xattrs: Vec<xattr::Xattr>,
    /// Children by name, for directories only.
    children: Option<BTreeMap<Vec<u8>, u32>>,
}

impl Node {
    fn file_type(&self) -> u16 {
        self.mode & mode::TYPE_MASK
    }
    fn is_dir(&self) -> bool {
        self.file_type() == mode::DIR
    }
}

/// The file whose data is being written.
#[derive(Debug)]
struct Current {
    ino: u32,
    name: Vec<u8>,
    written: u64,
    max: u64,
}

/// Lays out an ext4 image into a [`BlockSink`].
#[derive(Debug)]
pub(crate) struct Writer<S: BlockSink> {
    sink: S,
    /// Inode `n` lives at index `n - 1`; reserved numbers hold `None`.
    inodes: Vec<Option<Node>>,
    pos: u64,
    max_disk_size: u64,
    gd_blocks: u32,
    cur: Option<Current>,
    initialized: bool,
    writable: Option<Writable>,
}

/// A name for messages: entry names are bytes and need not be UTF-8.
pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn refused(name: &[u8], reason: Refusal) -> Error {
    Error::Refused {
        entry: lossy(name),
        reason,
    }
}

/// `path.Clean("/" + name)[1:]` from Go, on bytes.
///
/// Borrowed when `name` is clean already, as nearly every tar entry's
/// name is: one allocation less per entry and lookup.
pub(crate) fn clean_rooted(name: &[u8]) -> Cow<'_, [u8]> {
    let clean = !name.starts_with(b"/")
        && !name.ends_with(b"/")
        && name
            .split(|&b| b == b'/')
            .all(|c| !matches!(c, b"" | b"." | b".."));
    if clean || name.is_empty() {
        return Cow::Borrowed(name);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Cow::Owned(parts.join(&b'/'))
}

/// Go's `path.Split`: everything up to and including the last slash, and the rest.
pub(crate) fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => p.split_at(i + 1),
        None => (&[], p),
    }
}

fn dirent_type(mode: u16) -> u8 {
    match mode & mode::TYPE_MASK {
        mode::REG => 1,
        mode::DIR => 2,
        mode::CHR => 3,
        mode::BLK => 4,
        mode::FIFO => 5,
        mode::SOCK => 6,
        mode::LNK => 7,
        _ => 0,
    }
}

impl<S: BlockSink> Writer<S> {
    /// A writer whose image may grow to `options.max_disk_size` bytes
    /// (rounded up to a block); 0 means the reference's default of 16 GiB.
    pub(crate) fn new(sink: S, options: &Options) -> Self {
        let max = options.max_disk_size;
        let max_disk_size = if max > MAX_MAX_DISK_SIZE {
            MAX_MAX_DISK_SIZE
        } else if max == 0 {
            DEFAULT_MAX_DISK_SIZE
        } else {
            max.div_ceil(BLOCK) * BLOCK
        };
        Writer {
            sink,
            inodes: Vec::new(),
            pos: 0,
            max_disk_size,
            gd_blocks: 0,
            cur: None,
            initialized: false,
            writable: options.writable,
        }
    }

    fn node(&self, ino: u32) -> &Node {
        // Inode numbers only ever come from `alloc`, so this lookup cannot miss.
        match self.inodes.get(ino.wrapping_sub(1) as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("inode {ino} referenced but never allocated"),
        }
    }

    fn node_mut(&mut self, ino: u32) -> &mut Node {
        match self.inodes.get_mut(ino.wrapping_sub(1) as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("inode {ino} referenced but never allocated"),
        }
    }

    fn block(&self) -> u32 {
        (self.pos / BLOCK) as u32
    }

    fn check_room(&self, len: u64) -> Result<(), Error> {
        if self.pos + len > self.max_disk_size {
            return Err(Error::DiskFull {
                max: self.max_disk_size,
            });
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check_room(data.len() as u64)?;
        self.sink.append(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn append_zeros(&mut self, len: u64) -> Result<(), Error> {
        self.check_room(len)?;
        self.sink.append_zeros(len)?;
        self.pos += len;
        Ok(())
    }

    fn pad_to_block(&mut self) -> Result<(), Error> {
        let rem = self.pos % BLOCK;
        if rem != 0 {
            self.append_zeros(BLOCK - rem)?;
        }
        Ok(())
    }

    fn init(&mut self) -> Result<(), Error> {
        // Inode 1 (bad blocks) is never used.
        self.inodes = vec![None];
        let mut root = self.make_inode(
            b"",
            &mut FileSpec {
                mode: mode::DIR | 0o755,
                ..FileSpec::default()
            },
            None,
        )?;
        root.link_count += 1; // "." of the root
        self.inodes.push(Some(root));
        self.inodes.resize_with(INODE_FIRST as usize - 1, || None);

        let max_blocks = (self.max_disk_size - 1) / BLOCK + 1;
        let max_groups = (max_blocks - 1) / u64::from(BLOCKS_PER_GROUP) + 1;
        self.gd_blocks = ((max_groups - 1) / u64::from(GROUPS_PER_DESCRIPTOR_BLOCK) + 1) as u32;
        // The superblock and descriptors are filled in by `close`.
        self.append_zeros(u64::from(1 + self.gd_blocks) * BLOCK)?;
        self.initialized = true;

        // e2fsck insists on lost+found.
        self.create(
            b"lost+found",
            &mut FileSpec {
                mode: mode::DIR | 0o700,
                ..FileSpec::default()
            },
        )
    }

    /// Builds or updates an inode. A new node is returned for the caller to
    /// store; an updated one is taken out of the table and must be put back.
    fn make_inode(
        &mut self,
        name: &[u8],
        f: &mut FileSpec,
        reuse: Option<Node>,
    ) -> Result<Node, Error> {
        let mut m = f.mode;
        if m & mode::TYPE_MASK == 0 {
            m |= mode::REG;
        }
        let typ = m & mode::TYPE_MASK;
        let mut node = match reuse {
            None => {
                let mut n = Node {
                    number: self.inodes.len() as u32 + 1,
                    ..Node::default()
                };
                if typ == mode::DIR {
                    n.children = Some(BTreeMap::new());
                    n.link_count = 1;
                }
                n
            }
            Some(n) if n.flags & format::INODE_FLAG_EXTENTS != 0 => {
                // Blocks are never freed, so data already written stays put.
                return Err(self.fail_with(n, name, Refusal::OverwriteNonInline));
            }
            Some(n) => n,
        };
        node.mode = m;
        node.uid = f.uid;
        node.gid = f.gid;
        node.flags = format::INODE_FLAG_HUGE_FILE;
        node.atime = f.atime.to_fs();
        node.ctime = f.ctime.to_fs();
        node.mtime = f.mtime.to_fs();
        node.crtime = f.crtime.to_fs();
        node.devmajor = f.devmajor;
        node.devminor = f.devminor;
        node.data.clear();

        // Attributes already stored in the inode survive unless replaced; the
        // reference forgets those that lived in the xattr block.
        let existing = xattr::decode_inline(&node.xattr_inline);
        node.xattr_inline.clear();

        let size = match typ {
            mode::REG => {
                if f.size > MAX_FILE_SIZE {
                    return Err(self.fail_with(node, name, Refusal::FileTooBig(f.size)));
                }
                f.size
            }
            mode::LNK => {
                node.mode |= 0o777;
                let size = f.link_name.len() as u64;
                if size <= SMALL_SYMLINK_SIZE {
                    node.data = f.link_name.clone();
                }
                size
            }
            _ => 0,
        };

        for (k, v) in existing {
            f.xattrs.entry(k).or_insert(v);
        }
        let mut state = XattrState::new();
        for (k, v) in &f.xattrs {
            if !state.add(k, v) {
                let n = lossy(k);
                return Err(self.fail_with(node, name, Refusal::XattrTooLarge(n)));
            }
        }
        if state.block.len() > xattr::MAX_MODELLED_BLOCK_ENTRIES {
            self.put(node);
            return Err(Error::Unsupported {
                entry: lossy(name),
                what: "more than 12 extended attributes spill out of the inode",
            });
        }
        if let Err(e) = self.write_xattrs(&mut node, state) {
            return Err(self.fail_with_err(node, e));
        }

        node.size = size;
        if typ == mode::LNK && size > SMALL_SYMLINK_SIZE {
            let start = self.pos;
            if let Err(e) = self.append(&f.link_name) {
                return Err(self.fail_with_err(node, e));
            }
            if let Err(e) = self.write_extents(&mut node, start) {
                return Err(self.fail_with_err(node, e));
            }
        }
        Ok(node)
    }

    /// Puts a node back in the table on an error path, so that the table
    /// stays whole, and builds the error.
    fn fail_with(&mut self, node: Node, name: &[u8], reason: Refusal) -> Error {
        self.put(node);
        refused(name, reason)
    }

    fn fail_with_err(&mut self, node: Node, e: Error) -> Error {
        self.put(node);
        e
    }

    /// Stores a node at its number, if that slot was allocated before.
    fn put(&mut self, node: Node) {
        let idx = node.number as usize - 1;
        if let Some(slot) = self.inodes.get_mut(idx) {
            *slot = Some(node);
        }
    }

    fn write_xattrs(&mut self, node: &mut Node, mut state: XattrState) -> Result<(), Error> {
        if !state.inode.is_empty() {
            node.xattr_inline = xattr::encode_inline(&state.inode);
        }
        // An existing xattr block is rewritten even when it ends up empty.
        if !state.block.is_empty() || node.xattr_block != 0 {
            xattr::sort_block_entries(&mut state.block);
            let blk = xattr::encode_block(&state.block);
            if node.xattr_block == 0 {
                node.xattr_block = self.block();
                node.block_count += 1;
                self.append(&blk)?;
            } else {
                self.sink
                    .overwrite_block(u64::from(node.xattr_block), &blk)?;
            }
            node.block_xattrs = state.block;
        }
        Ok(())
    }

    /// Finds the directory that holds `name`, and the child if present.
    fn lookup(&self, name: &[u8], must_exist: bool) -> Result<(u32, Option<u32>, Vec<u8>), Error> {
        let clean = clean_rooted(name);
        if clean.is_empty() {
            return Ok((INODE_ROOT, Some(INODE_ROOT), Vec::new()));
        }
        let (dirname, child) = split_last(&clean);
        if child.is_empty() || child.len() > 255 {
            return Err(refused(name, Refusal::InvalidName));
        }
        let mut dir = Some(INODE_ROOT);
        for comp in dirname.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            dir = dir.and_then(|d| {
                self.node(d)
                    .children
                    .as_ref()
                    .and_then(|c| c.get(comp).copied())
            });
        }
        let dir = match dir {
            Some(d) if self.node(d).is_dir() => d,
            _ => return Err(refused(name, Refusal::PathNotFound)),
        };
        let existing = self
            .node(dir)
            .children
            .as_ref()
            .and_then(|c| c.get(child).copied());
        if existing.is_none() && must_exist {
            return Err(refused(name, Refusal::PathNotFound));
        }
        Ok((dir, existing, child.to_vec()))
    }

    /// Creates missing parent directories of `name`, copying each one's
    /// metadata from its own parent, as `mkdir -p` would with inheritance.
    pub(crate) fn make_parents(&mut self, name: &[u8]) -> Result<(), Error> {
        self.finish_inode()?;
        let clean = clean_rooted(name);
        let (parents, _) = split_last(&clean);
        let mut current_path = Vec::new();
        let mut dir = INODE_ROOT;
        for comp in parents.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            current_path.push(b'/');
            current_path.extend_from_slice(comp);
            let found = self
                .node(dir)
                .children
                .as_ref()
                .and_then(|c| c.get(comp).copied());
            let child = match found {
                Some(c) => c,
                None => {
                    let p = self.node(dir);
                    let mut f = FileSpec {
                        mode: p.mode,
                        atime: GoTime::from_fs(p.atime),
                        mtime: GoTime::from_fs(p.mtime),
                        ctime: GoTime::from_fs(p.ctime),
                        crtime: GoTime::from_fs(p.crtime),
                        uid: p.uid,
                        gid: p.gid,
                        devmajor: p.devmajor,
                        devminor: p.devminor,
                        ..FileSpec::default()
                    };
                    self.create(&current_path, &mut f)?;
                    match self
                        .node(dir)
                        .children
                        .as_ref()
                        .and_then(|c| c.get(comp).copied())
                    {
                        Some(c) => c,
                        None => return Err(refused(name, Refusal::PathNotFound)),
                    }
                }
            };
            dir = child;
        }
        Ok(())
    }

    /// Adds (or updates) a file; for a regular file, its data must follow
    /// through [`Writer::write_data`].
    pub(crate) fn create(&mut self, name: &[u8], f: &mut FileSpec) -> Result<(), Error> {
        self.finish_inode()?;
        let (dir, existing, child_name) = self.lookup(name, false)?;
        let want_dir = f.mode & mode::TYPE_MASK == mode::DIR;
        let mut reuse = None;
        if let Some(e) = existing {
            let en = self.node(e);
            if en.is_dir() {
                if !want_dir {
                    return Err(refused(name, Refusal::ReplaceDirWithFile));
                }
                reuse = Some(e);
            } else if want_dir {
                return Err(refused(name, Refusal::ReplaceFileWithDir));
            } else if en.link_count < 2 {
                reuse = Some(e);
            }
        } else if want_dir && self.node(dir).link_count >= MAX_LINKS {
            return Err(refused(name, Refusal::TooManyLinks));
        }

        let taken = reuse.and_then(|r| self.inodes.get_mut(r as usize - 1).and_then(Option::take));
        let node = self.make_inode(name, f, taken)?;
        let child = node.number;
        let is_new = child as usize > self.inodes.len();
        let child_is_dir = node.is_dir();
        let child_is_reg = node.file_type() == mode::REG;
        if is_new {
            self.inodes.push(Some(node));
        } else {
            self.put(node);
        }

        if existing != Some(child) {
            if let Some(e) = existing {
                self.node_mut(e).link_count -= 1;
            }
            if let Some(c) = self.node_mut(dir).children.as_mut() {
                c.insert(child_name, child);
            }
            self.node_mut(child).link_count += 1;
            if child_is_dir {
                self.node_mut(dir).link_count += 1;
            }
        }
        if child_is_reg {
            self.cur = Some(Current {
                ino: child,
                name: name.to_vec(),
                written: 0,
                max: f.size,
            });
        }
        Ok(())
    }

    /// Adds a hard link `new_name` to the existing `old_name`.
    pub(crate) fn link(&mut self, old_name: &[u8], new_name: &[u8]) -> Result<(), Error> {
        self.finish_inode()?;
        let (new_dir, existing, new_child) = self.lookup(new_name, false)?;
        if let Some(e) = existing {
            let en = self.node(e);
            if en.is_dir() || en.link_count < 2 {
                return Err(refused(new_name, Refusal::OrphanExisting));
            }
        }
        let not_found = || refused(new_name, Refusal::LinkTargetNotFound(lossy(old_name)));
        let (_, old, _) = self.lookup(old_name, true).map_err(|_| not_found())?;
        let old = old.ok_or_else(not_found)?;
        if self.node(old).is_dir() {
            return Err(refused(new_name, Refusal::LinkToDirectory));
        }
        if existing != Some(old) && self.node(old).link_count >= MAX_LINKS {
            return Err(refused(new_name, Refusal::TooManyLinks));
        }
        if let Some(e) = existing {
            self.node_mut(e).link_count -= 1;
        }
        self.node_mut(old).link_count += 1;
        if let Some(c) = self.node_mut(new_dir).children.as_mut() {
            c.insert(new_child, old);
        }
        Ok(())
    }

    /// What the reference's `Stat` reports of a file: enough to recreate it.
    pub(crate) fn stat(&mut self, name: &[u8]) -> Result<FileSpec, Error> {
        self.finish_inode()?;
        let (_, node, _) = self.lookup(name, true)?;
        let Some(ino) = node else {
            return Err(refused(name, Refusal::PathNotFound));
        };
        let n = self.node(ino);
        let mut xattrs = BTreeMap::new();
        for x in &n.block_xattrs {
            xattrs.insert(x.full_name(), x.value.clone());
        }
        if !n.xattr_inline.is_empty() {
            xattrs.extend(xattr::decode_inline(&n.xattr_inline));
            xattrs.remove(b"system.data".as_slice());
        }
        if n.file_type() == mode::LNK && n.size > SMALL_SYMLINK_SIZE {
            return Err(Error::Unsupported {
                entry: lossy(name),
                what: "cannot retrieve link information",
            });
        }
        Ok(FileSpec {
            size: n.size,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            atime: GoTime::from_fs(n.atime),
            ctime: GoTime::from_fs(n.ctime),
            mtime: GoTime::from_fs(n.mtime),
            crtime: GoTime::from_fs(n.crtime),
            devmajor: n.devmajor,
            devminor: n.devminor,
            link_name: if n.file_type() == mode::LNK {
                n.data.clone()
            } else {
                Vec::new()
            },
            xattrs,
        })
    }

    /// Appends data of the regular file most recently created.
    pub(crate) fn write_data(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.count_data(data.len())?;
        self.append(data)
    }

    /// [`Writer::write_data`] for a piece of the input buffer, which the
    /// sink may keep instead of copying.
    pub(crate) fn write_shared(&mut self, chunk: &SharedChunk) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.count_data(chunk.len())?;
        self.check_room(chunk.len() as u64)?;
        self.sink.append_shared(chunk)?;
        self.pos += chunk.len() as u64;
        Ok(())
    }

    /// Checks that `len` more bytes fit the current file's size.
    fn count_data(&mut self, len: usize) -> Result<(), Error> {
        let Some(cur) = self.cur.as_mut() else {
            return Err(refused(
                b"",
                Refusal::SizeMismatch {
                    expected: 0,
                    written: len as u64,
                },
            ));
        };
        let written = cur.written + len as u64;
        if written > cur.max {
            let (name, max) = (cur.name.clone(), cur.max);
            return Err(refused(
                &name,
                Refusal::SizeMismatch {
                    expected: max,
                    written,
                },
            ));
        }
        cur.written = written;
        Ok(())
    }

    fn finish_inode(&mut self) -> Result<(), Error> {
        if !self.initialized {
            self.init()?;
        }
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        if cur.written != cur.max {
            return Err(refused(
                &cur.name,
                Refusal::SizeMismatch {
                    expected: cur.max,
                    written: cur.written,
                },
            ));
        }
        if cur.max != 0 {
            let start = self.pos - cur.written;
            let mut node = self
                .inodes
                .get_mut(cur.ino as usize - 1)
                .and_then(Option::take)
                .unwrap_or_default();
            let r = self.write_extents(&mut node, start);
            self.put(node);
            r?;
        }
        Ok(())
    }

    /// Maps the blocks written since `start` (block aligned) into the inode.
    fn write_extents(&mut self, node: &mut Node, start: u64) -> Result<(), Error> {
        self.pad_to_block()?;
        let start_block = (start / BLOCK) as u32;
        let blocks = self.block() - start_block;
        let mut used_blocks = blocks;
        let extents = blocks.div_ceil(MAX_BLOCKS_PER_EXTENT);
        let mut root = Vec::with_capacity(60);
        if extents == 0 {
        } else if extents <= 4 {
            format::put_extent_header(&mut root, extents as u16, 4, 0);
            fill_extents(&mut root, extents, 4, start_block, 0, blocks);
        } else if extents <= 4 * format::EXTENTS_PER_BLOCK {
            // The reference's arithmetic for leaf blocks past the first is off
            // (it only matters above 42 GiB); it is kept, wrapping and all.
            let per_block = format::EXTENTS_PER_BLOCK;
            let extent_blocks = extents / per_block + 1;
            used_blocks += extent_blocks;
            let mut index = Vec::with_capacity(48);
            for i in 0..extent_blocks {
                let offset = i
                    .wrapping_mul(per_block)
                    .wrapping_mul(MAX_BLOCKS_PER_EXTENT);
                format::put_extent_index(&mut index, offset, self.block());
                let in_block = extents
                    .wrapping_sub(i.wrapping_mul(extent_blocks))
                    .min(per_block);
                let mut leaf = Vec::with_capacity(BLOCK_SIZE);
                format::put_extent_header(&mut leaf, in_block as u16, per_block as u16, 0);
                fill_extents(
                    &mut leaf,
                    in_block,
                    per_block,
                    start_block.wrapping_add(offset),
                    offset,
                    blocks,
                );
                leaf.resize(BLOCK_SIZE, 0);
                self.append(&leaf)?;
            }
            index.resize(48, 0);
            format::put_extent_header(&mut root, extent_blocks as u16, 4, 1);
            root.extend_from_slice(&index);
        } else {
            return Err(refused(&[], Refusal::FileTooBig(node.size)));
        }
        node.data = root;
        node.flags |= format::INODE_FLAG_EXTENTS;
        node.block_count = node.block_count.wrapping_add(used_blocks);
        Ok(())
    }

    fn sorted_children(&self, dir: u32) -> Vec<(Vec<u8>, u32)> {
        let mut kids: Vec<(Vec<u8>, u32)> = self
            .node(dir)
            .children
            .iter()
            .flatten()
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        // e2fsck's convention: by inode number, then by name.
        kids.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        kids
    }

    fn write_directory(&mut self, dir: u32, parent: u32) -> Result<(), Error> {
        self.finish_inode()?;
        let start = self.pos;
        let mut block = Vec::with_capacity(BLOCK_SIZE);
        let mut out: Vec<u8> = Vec::new();
        let mut entries = vec![(b".".to_vec(), dir), (b"..".to_vec(), parent)];
        entries.extend(self.sorted_children(dir));
        for (name, ino) in &entries {
            let rlb = DIRENT_HEADER + name.len();
            let rl = (rlb + 3) & !3;
            if BLOCK_SIZE - block.len() < rl + 12 {
                finish_dir_block(&mut block, &mut out);
            }
            block.extend_from_slice(&ino.to_le_bytes());
            block.extend_from_slice(&(rl as u16).to_le_bytes());
            block.push(name.len() as u8);
            block.push(dirent_type(self.node(*ino).mode));
            block.extend_from_slice(name);
            block.resize(block.len() + rl - rlb, 0);
        }
        finish_dir_block(&mut block, &mut out);
        self.append(&out)?;
        let written = out.len() as u64;
        let mut node = self
            .inodes
            .get_mut(dir as usize - 1)
            .and_then(Option::take)
            .unwrap_or_default();
        node.size = written;
        let r = self.write_extents(&mut node, start);
        self.put(node);
        r
    }

    /// Writes every directory, pre-order, children in inode order.
    fn write_directories(&mut self) -> Result<(), Error> {
        let mut stack = vec![(INODE_ROOT, INODE_ROOT)];
        while let Some((dir, parent)) = stack.pop() {
            self.write_directory(dir, parent)?;
            let kids = self.sorted_children(dir);
            for (_, ino) in kids.into_iter().rev() {
                if self.node(ino).is_dir() {
                    stack.push((ino, dir));
                }
            }
        }
        Ok(())
    }

    fn write_inode_table(&mut self, table_size: u64) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(self.inodes.len() * INODE_SIZE as usize);
        for slot in &self.inodes {
            let start = buf.len();
            if let Some(n) = slot {
                let mut block = [0u8; 60];
                match n.file_type() {
                    mode::DIR | mode::REG | mode::LNK => {
                        for (d, s) in block.iter_mut().zip(&n.data) {
                            *d = *s;
                        }
                    }
                    mode::BLK | mode::CHR => {
                        let dev = (n.devminor & 0xff)
                            | (n.devmajor << 8)
                            | ((n.devminor & 0xffff_ff00) << 12);
                        if let Some(d) = block.get_mut(4..8) {
                            d.copy_from_slice(&dev.to_le_bytes());
                        }
                    }
                    _ => {}
                }
                let raw = RawInode {
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                    size: n.size,
                    links: n.link_count as u16,
                    blocks: n.block_count,
                    flags: n.flags,
                    block,
                    xattr_block: n.xattr_block,
                    atime: n.atime,
                    ctime: n.ctime,
                    mtime: n.mtime,
                    crtime: n.crtime,
                };
                raw.encode(&mut buf);
                buf.extend_from_slice(&n.xattr_inline);
            }
            buf.resize(start + INODE_SIZE as usize, 0);
        }
        self.append(&buf)?;
        self.append_zeros(table_size - buf.len() as u64)
    }

    /// Writes the metadata that can only be laid out once every file is in.
    pub(crate) fn close(mut self) -> Result<S, Error> {
        self.finish_inode()?;
        self.write_directories()?;
        self.finish_inode()?;

        let inode_table_offset = self.block();
        let (groups, inodes_per_group, requested) = match self.writable {
            None => {
                let (g, ipg) = best_group_count(inode_table_offset, self.inodes.len() as u32);
                (g, ipg, 0)
            }
            Some(w) => self.writable_layout(inode_table_offset, w)?,
        };
        let table_size = u64::from(groups) * u64::from(inodes_per_group) * u64::from(INODE_SIZE);
        if table_size > u64::from(u32::MAX) {
            return Err(Error::DiskFull {
                max: self.max_disk_size,
            });
        }
        self.write_inode_table(table_size)?;

        let bitmap_offset = self.block();
        let bitmap_size = groups * 2;
        let valid_data_size = bitmap_offset + bitmap_size;
        let min_size = (groups - 1) * BLOCKS_PER_GROUP + 1;
        let disk_size = valid_data_size.max(min_size).max(requested);

        let used_gd_blocks = (groups - 1) / GROUPS_PER_DESCRIPTOR_BLOCK + 1;
        if used_gd_blocks > self.gd_blocks {
            return Err(Error::DiskFull {
                max: self.max_disk_size,
            });
        }

        let inode_table_blocks_per_group = inodes_per_group * INODE_SIZE / BLOCK_SIZE as u32;
        let mut gds = vec![0u8; self.gd_blocks as usize * BLOCK_SIZE];
        let (mut total_used_blocks, mut total_used_inodes) = (0u32, 0u32);
        let mut bitmaps = vec![0u8; 2 * BLOCK_SIZE];
        for g in 0..groups {
            bitmaps.fill(0);
            let (block_bitmap, inode_bitmap) = bitmaps.split_at_mut(BLOCK_SIZE);
            let mut used_blocks: u32 = 0;
            if (g + 1) * BLOCKS_PER_GROUP <= valid_data_size {
                block_bitmap.fill(0xff);
                used_blocks = BLOCKS_PER_GROUP;
            } else if g * BLOCKS_PER_GROUP < valid_data_size {
                for j in 0..valid_data_size - g * BLOCKS_PER_GROUP {
                    set_bit(block_bitmap, j);
                    used_blocks += 1;
                }
            }
            if g == 0 {
                // Descriptor blocks reserved for growth but never used are free.
                for j in 1 + used_gd_blocks..1 + self.gd_blocks {
                    clear_bit(block_bitmap, j);
                    used_blocks = used_blocks.wrapping_sub(1);
                }
            }
            if g == groups - 1 && disk_size % BLOCKS_PER_GROUP != 0 {
                // Blocks past the end of the disk count as allocated.
                for j in disk_size % BLOCKS_PER_GROUP..BLOCKS_PER_GROUP {
                    set_bit(block_bitmap, j);
                    used_blocks += 1;
                }
            }
            let (mut dirs, mut used_inodes) = (0u16, 0u16);
            for j in 0..inodes_per_group {
                let ino = 1 + g * inodes_per_group + j;
                let node = self.inodes.get(ino as usize - 1).and_then(Option::as_ref);
                if ino < INODE_FIRST || node.is_some() {
                    set_bit(inode_bitmap, j);
                    used_inodes = used_inodes.wrapping_add(1);
                }
                if node.is_some_and(Node::is_dir) {
                    dirs = dirs.wrapping_add(1);
                }
            }
            if self.writable.is_some() {
                // The reference leaves these clear; e2fsck wants them set.
                for j in inodes_per_group..MAX_INODES_PER_GROUP {
                    set_bit(inode_bitmap, j);
                }
            }
            self.append(&bitmaps)?;

            let used_blocks = used_blocks as u16;
            let gd = format::GroupDescriptor {
                block_bitmap: bitmap_offset + 2 * g,
                inode_bitmap: bitmap_offset + 2 * g + 1,
                inode_table: inode_table_offset + g * inode_table_blocks_per_group,
                free_blocks: (BLOCKS_PER_GROUP as u16).wrapping_sub(used_blocks),
                free_inodes: (inodes_per_group as u16).wrapping_sub(used_inodes),
                used_dirs: dirs,
            };
            if let Some(slot) = gds.get_mut(g as usize * 32..(g as usize + 1) * 32) {
                gd.encode(slot);
            }
            total_used_blocks = total_used_blocks.wrapping_add(u32::from(used_blocks));
            total_used_inodes = total_used_inodes.wrapping_add(u32::from(used_inodes));
        }

        self.append_zeros(u64::from(disk_size - bitmap_offset - bitmap_size) * BLOCK)?;

        for (i, chunk) in gds.chunks_exact(BLOCK_SIZE).enumerate() {
            let mut blk = [0u8; BLOCK_SIZE];
            blk.copy_from_slice(chunk);
            self.sink.overwrite_block(1 + i as u64, &blk)?;
        }

        let sb = SuperBlock {
            inodes_count: inodes_per_group.wrapping_mul(groups),
            blocks_count: disk_size,
            free_blocks: (BLOCKS_PER_GROUP.wrapping_mul(groups)).wrapping_sub(total_used_blocks),
            free_inodes: inodes_per_group
                .wrapping_mul(groups)
                .wrapping_sub(total_used_inodes),
            blocks_per_group: BLOCKS_PER_GROUP,
            inodes_per_group,
            first_inode: INODE_FIRST,
            inode_size: INODE_SIZE as u16,
            lpf_inode: INODE_FIRST,
            read_only: self.writable.is_none(),
        };
        let mut blk = [0u8; BLOCK_SIZE];
        if let Some(s) = blk.get_mut(1024..2048) {
            sb.encode(s);
        }
        self.sink.overwrite_block(0, &blk)?;
        self.sink.finish()?;
        Ok(self.sink)
    }
}

impl<S: BlockSink> Writer<S> {
    /// Groups, inodes per group and disk blocks for a writable image: the
    /// requested size or free space, room for the metadata, inodes for the
    /// ratio, and a block count whose group count is exactly `groups`.
    fn writable_layout(&self, data_blocks: u32, w: Writable) -> Result<(u32, u32, u32), Error> {
        let full = || Error::DiskFull {
            max: self.max_disk_size,
        };
        let min_blocks = w.min_size.div_ceil(BLOCK);
        let free_blocks = w.free_space.div_ceil(BLOCK);
        let estimate = min_blocks.max(u64::from(data_blocks) + free_blocks);
        let wanted =
            (estimate * BLOCK / w.bytes_per_inode.max(BLOCK)).max(self.inodes.len() as u64);
        let wanted = u32::try_from(wanted).map_err(|_| full())?;
        let per_group = u64::from(BLOCKS_PER_GROUP);
        let mut groups = u32::try_from(estimate.div_ceil(per_group).max(1)).map_err(|_| full())?;
        while groups <= GROUPS_PER_DESCRIPTOR_BLOCK * self.gd_blocks {
            let ipg = wanted
                .div_ceil(groups)
                .next_multiple_of(INODES_PER_GROUP_INCREMENT)
                .max(INODES_PER_GROUP_INCREMENT);
            let metadata = u64::from(groups) * u64::from(ipg * INODE_SIZE / BLOCK_SIZE as u32 + 2);
            let needed = min_blocks.max(u64::from(data_blocks) + metadata + free_blocks);
            // The block count decides the group count: pad up into the last group.
            let blocks = needed.max((u64::from(groups) - 1) * per_group + 1);
            if ipg <= MAX_INODES_PER_GROUP && blocks <= u64::from(groups) * per_group {
                let blocks = u32::try_from(blocks).map_err(|_| full())?;
                return Ok((groups, ipg, blocks));
            }
            groups += 1;
        }
        Err(full())
    }
}

fn finish_dir_block(block: &mut Vec<u8>, out: &mut Vec<u8>) {
    let left = BLOCK_SIZE - block.len();
    if left > 0 {
        // An empty entry (inode 0) spans the rest of the block.
        block.extend_from_slice(&0u32.to_le_bytes());
        block.extend_from_slice(&(left as u16).to_le_bytes());
        block.resize(BLOCK_SIZE, 0);
    }
    out.extend_from_slice(block);
    block.clear();
}

fn set_bit(map: &mut [u8], bit: u32) {
    if let Some(b) = map.get_mut((bit / 8) as usize) {
        *b |= 1 << (bit % 8);
    }
}

fn clear_bit(map: &mut [u8], bit: u32) {
    if let Some(b) = map.get_mut((bit / 8) as usize) {
        *b &= !(1 << (bit % 8));
    }
}

/// Appends `count` leaf extents (padded to `max` slots) covering the file's
/// blocks from `offset` on, the way the reference fills them.
fn fill_extents(
    out: &mut Vec<u8>,
    count: u32,
    max: u32,
    start_block: u32,
    offset: u32,
    file_blocks: u32,
) {
    for i in 0..count {
        let block = offset.wrapping_add(i.wrapping_mul(MAX_BLOCKS_PER_EXTENT));
        let length = file_blocks.wrapping_sub(block).min(MAX_BLOCKS_PER_EXTENT);
        format::put_extent_leaf(out, block, length as u16, start_block.wrapping_add(block));
    }
    for _ in count..max {
        out.extend_from_slice(&[0; 12]);
    }
}

fn group_count(blocks: u32, inodes: u32, inodes_per_group: u32) -> u32 {
    let inode_blocks_per_group = inodes_per_group * INODE_SIZE / BLOCK_SIZE as u32;
    let data_blocks_per_group = BLOCKS_PER_GROUP - inode_blocks_per_group - 2;
    // Enough groups for all the inodes.
    let min_blocks = (inodes - 1) / inodes_per_group * data_blocks_per_group + 1;
    blocks.max(min_blocks).div_ceil(data_blocks_per_group)
}

fn best_group_count(blocks: u32, inodes: u32) -> (u32, u32) {
    let mut best = (u32::MAX, 0);
    let mut ipg = INODES_PER_GROUP_INCREMENT;
    while ipg <= MAX_INODES_PER_GROUP {
        let g = group_count(blocks, inodes, ipg);
        if g < best.0 {
            best = (g, ipg);
        }
        ipg += INODES_PER_GROUP_INCREMENT;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean() {
        for (input, want) in [
            ("a/b/c", "a/b/c"),
            ("./a//b/", "a/b"),
            ("/abs/x", "abs/x"),
            ("../../etc", "etc"),
            ("a/../b", "b"),
            ("", ""),
            (".", ""),
        ] {
            assert_eq!(&*clean_rooted(input.as_bytes()), want.as_bytes(), "{input}");
        }
    }

    #[test]
    fn split_matches_go_path_split() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b/"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split_last(b"a/"), (&b"a/"[..], &b""[..]));
    }

    #[test]
    fn group_count_prefers_fewest_groups_then_smallest_table() {
        assert_eq!(best_group_count(20, 12), (1, 16));
    }
}
