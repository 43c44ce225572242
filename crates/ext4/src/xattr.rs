//! Extended attributes, packed the way the reference packs them.
//!
//! Attributes go into the inode's spare 104 bytes while they fit, then into
//! one shared 4 KiB block. Names are stored with their namespace prefix
//! replaced by an index, and each entry carries ext4's xattr hash.

use crate::format::INODE_USED_SIZE;
use crate::sink::BLOCK_SIZE;

const MAGIC: u32 = 0xea02_0000;
const INODE_EXTRA_SIZE: usize = 256 - INODE_USED_SIZE;
/// Magic number plus the empty terminating entry.
const INODE_OVERHEAD: usize = 4 + 4;
/// Block header plus the empty terminating entry.
const BLOCK_OVERHEAD: usize = 32 + 4;
const ENTRY_HEADER: usize = 16;

/// Namespace prefixes in the order the reference tries them: the first match wins.
const PREFIXES: &[(u8, &[u8])] = &[
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (8, b"system.richacl"),
    (7, b"system."),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
];

/// One attribute, with its name already stripped of the namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Xattr {
    pub(crate) index: u8,
    pub(crate) name: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

impl Xattr {
    fn new(full_name: &[u8], value: &[u8]) -> Xattr {
        let (index, name) = PREFIXES
            .iter()
            .find_map(|(i, p)| full_name.strip_prefix(*p).map(|n| (*i, n)))
            .unwrap_or((0, full_name));
        Xattr {
            index,
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }

    pub(crate) fn full_name(&self) -> Vec<u8> {
        let prefix = PREFIXES
            .iter()
            .find(|(i, _)| *i == self.index)
            .map_or(&b""[..], |(_, p)| p);
        [prefix, &self.name].concat()
    }

    fn entry_len(&self) -> usize {
        ((self.name.len() + 3) & !3) + ENTRY_HEADER
    }

    fn value_len(&self) -> usize {
        (self.value.len() + 3) & !3
    }

    fn hash(&self) -> u32 {
        let mut hash: u32 = 0;
        for &c in &self.name {
            hash = (hash << 5) ^ (hash >> 27) ^ u32::from(c);
        }
        for chunk in self.value.chunks(4) {
            let mut word = [0u8; 4];
            word.get_mut(..chunk.len())
                .map(|w| w.copy_from_slice(chunk))
                .unwrap_or_default();
            hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(word);
        }
        hash
    }
}

/// Where each attribute of one inode goes, first fit.
#[derive(Debug)]
pub(crate) struct XattrState {
    pub(crate) inode: Vec<Xattr>,
    pub(crate) block: Vec<Xattr>,
    inode_left: usize,
    block_left: usize,
}

impl XattrState {
    pub(crate) fn new() -> Self {
        XattrState {
            inode: Vec::new(),
            block: Vec::new(),
            inode_left: INODE_EXTRA_SIZE - INODE_OVERHEAD,
            block_left: BLOCK_SIZE - BLOCK_OVERHEAD,
        }
    }

    /// Places one attribute; false when it fits nowhere.
    pub(crate) fn add(&mut self, full_name: &[u8], value: &[u8]) -> bool {
        let x = Xattr::new(full_name, value);
        if x.name.len() > 255 {
            return false;
        }
        let len = x.entry_len() + x.value_len();
        if self.inode_left >= len {
            self.inode.push(x);
            self.inode_left -= len;
        } else if self.block_left >= len {
            self.block.push(x);
            self.block_left -= len;
        } else {
            return false;
        }
        true
    }
}

/// Entries grow up from the start of `area`, values down from its end.
/// Value offsets are relative to `area` plus `offset_delta`.
fn put_entries(xattrs: &[Xattr], area: &mut [u8], offset_delta: usize) {
    let mut value_end = area.len();
    let mut entry = 0;
    for x in xattrs {
        let vl = x.value_len();
        value_end -= vl;
        let mut e = Vec::with_capacity(x.entry_len());
        e.push(x.name.len() as u8);
        e.push(x.index);
        e.extend_from_slice(&((value_end + offset_delta) as u16).to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&(x.value.len() as u32).to_le_bytes());
        e.extend_from_slice(&x.hash().to_le_bytes());
        e.extend_from_slice(&x.name);
        e.resize(x.entry_len(), 0);
        if let Some(d) = area.get_mut(entry..entry + e.len()) {
            d.copy_from_slice(&e);
        }
        entry += e.len();
        if let Some(d) = area.get_mut(value_end..value_end + x.value.len()) {
            d.copy_from_slice(&x.value);
        }
    }
}

/// The in-inode area: magic, then entries.
pub(crate) fn encode_inline(xattrs: &[Xattr]) -> Vec<u8> {
    let mut area = vec![0u8; INODE_EXTRA_SIZE];
    if let Some(m) = area.get_mut(..4) {
        m.copy_from_slice(&MAGIC.to_le_bytes());
    }
    if let Some(rest) = area.get_mut(4..) {
        put_entries(xattrs, rest, 0);
    }
    area
}

/// A whole xattr block: header (magic, one reference, one block), then entries.
pub(crate) fn encode_block(xattrs: &[Xattr]) -> [u8; BLOCK_SIZE] {
    let mut b = [0u8; BLOCK_SIZE];
    for (off, v) in [(0, MAGIC), (4, 1), (8, 1)] {
        if let Some(d) = b.get_mut(off..off + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(rest) = b.get_mut(32..) {
        put_entries(xattrs, rest, 32);
    }
    b
}

/// Reads back an area written by [`encode_inline`].
pub(crate) fn decode_inline(area: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(b) = area.get(4..) else {
        return out;
    };
    let mut pos = 0;
    while let Some(&[name_len, index, o0, o1, _, _, _, _, s0, s1, s2, s3]) = b
        .get(pos..pos + 12)
        .and_then(|h| <[u8; 12]>::try_from(h).ok())
        .as_ref()
    {
        if name_len == 0 {
            break;
        }
        let offset = usize::from(u16::from_le_bytes([o0, o1]));
        let size = u32::from_le_bytes([s0, s1, s2, s3]) as usize;
        let name = b.get(pos + ENTRY_HEADER..pos + ENTRY_HEADER + usize::from(name_len));
        let value = b.get(offset..offset + size);
        let (Some(name), Some(value)) = (name, value) else {
            break;
        };
        let x = Xattr {
            index,
            name: name.to_vec(),
            value: value.to_vec(),
        };
        out.push((x.full_name(), x.value.clone()));
        pos += x.entry_len();
    }
    out
}

/// Orders block entries with the reference's comparator. It is not a strict
/// weak order, so the result depends on the algorithm: Go's `sort.Slice` runs
/// insertion sort on up to 12 elements, reproduced here. Blocks rarely hold
/// more; beyond 12 Go's pattern-defeating quicksort would decide, which this
/// does not model, so the caller refuses that case.
pub(crate) fn sort_block_entries(xs: &mut [Xattr]) {
    let less =
        |a: &Xattr, b: &Xattr| a.index < b.index || a.name.len() < b.name.len() || a.name < b.name;
    for i in 1..xs.len() {
        let mut j = i;
        while j > 0 && less(&xs[j], &xs[j - 1]) {
            xs.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Insertion sort is what Go uses for slices this short.
pub(crate) const MAX_MODELLED_BLOCK_ENTRIES: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_compress_and_expand() {
        for name in [
            "user.foo",
            "trusted.overlay.opaque",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_access_x",
            "other.thing",
        ] {
            let x = Xattr::new(name.as_bytes(), b"v");
            assert_eq!(x.full_name(), name.as_bytes());
        }
        assert_eq!(Xattr::new(b"trusted.overlay.opaque", b"y").index, 4);
    }

    #[test]
    fn inline_round_trips() {
        let mut s = XattrState::new();
        assert!(s.add(b"trusted.overlay.opaque", b"y"));
        assert!(s.add(b"user.k", b""));
        let area = encode_inline(&s.inode);
        let back = decode_inline(&area);
        assert_eq!(
            back,
            vec![
                (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
                (b"user.k".to_vec(), Vec::new())
            ]
        );
    }

    #[test]
    fn big_values_spill_to_the_block() {
        let mut s = XattrState::new();
        assert!(s.add(b"user.big", &[7; 200]));
        assert!(s.inode.is_empty());
        assert_eq!(s.block.len(), 1);
        assert!(!s.add(b"user.huge", &[7; 5000]));
    }
}
