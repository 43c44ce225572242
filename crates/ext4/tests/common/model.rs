//! What an image converted from a tar must contain, worked out from the tar
//! alone, and the comparison of two such trees.
//!
//! The rules are those of hcsshim's `tar2ext4` (what Azure hashes), taken
//! from its source (`tar2ext4.go`, `compactext4/compact.go`) and written
//! again here, apart from this crate's code: entries apply in order; missing
//! parent directories copy their own parent's mode, owner and times;
//! `.wh.NAME` becomes a 0:0 character device and `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y`; hard links share an inode; the image always
//! has `lost+found`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;

/// Files larger than this are compared by length only (tests stream them).
pub const KEEP_DATA_UP_TO: u64 = 16 << 20;

/// A file's bytes, or just their length when they are large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub len: u64,
    pub data: Option<Vec<u8>>,
}

impl Content {
    pub fn of(data: &[u8]) -> Content {
        Content {
            len: data.len() as u64,
            data: (data.len() as u64 <= KEEP_DATA_UP_TO).then(|| data.to_vec()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    Socket,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "regular file",
            Kind::Symlink(_) => "symlink",
            Kind::Char(..) => "character device",
            Kind::Block(..) => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// An ext4 timestamp as stored: the 32-bit field and its `_extra` field.
pub type RawTime = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub atime: RawTime,
    pub ctime: RawTime,
    pub mtime: RawTime,
    pub crtime: RawTime,
}

impl Times {
    pub const ZERO: Times = Times {
        atime: (0, 0),
        ctime: (0, 0),
        mtime: (0, 0),
        crtime: (0, 0),
    };

    /// Whether e2fsck would call one of these "likely pre-1970": its
    /// 32-bit field has the sign bit set and both epoch bits are set.
    pub fn look_pre_1970(&self) -> bool {
        [self.atime, self.ctime, self.mtime, self.crtime]
            .iter()
            .any(|&(t, extra)| t & 0x8000_0000 != 0 && extra & 3 == 3)
    }
}

/// One path's inode, as a tar predicts it or as debugfs reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Equal for the paths of one inode (the inode number, when read back).
    pub id: u64,
    pub kind: Kind,
    /// The low 12 mode bits.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub times: Times,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every path of an image (the root is `""`), with its inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub paths: BTreeMap<Vec<u8>, Node>,
}

impl Tree {
    pub fn get(&self, path: &str) -> &Node {
        self.paths
            .get(path.as_bytes())
            .unwrap_or_else(|| panic!("{path:?} is not in the image"))
    }
}

// ---------------------------------------------------------------------------
// Time encodings.

/// A point in time as Go's `time.Time` holds it; `None` is Go's zero time.
pub type GoTime = Option<(i64, u32)>;

/// Go's `time.Unix(sec, nsec)`: nanoseconds normalised into `0..1e9`.
pub fn go_unix(sec: i64, nsec: i64) -> GoTime {
    let total = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    Some((
        total.div_euclid(1_000_000_000) as i64,
        total.rem_euclid(1_000_000_000) as u32,
    ))
}

/// hcsshim `timeToFsTime`: clamp to ext4's range, then `uint64(sec) |
/// nsec << 34`. For seconds outside `0..2^31` this is *not* the kernel's
/// encoding (see [`ext4_time`]); it is what the reference writes.
pub fn reference_time(t: GoTime) -> RawTime {
    let Some((s, ns)) = t else {
        return (0, 0);
    };
    let raw: u64 = if s < -0x8000_0000 {
        0x8000_0000
    } else if s > 0x3_7fff_ffff {
        0x3_7fff_ffff
    } else {
        (s as u64) | (u64::from(ns) << 34)
    };
    (raw as u32, (raw >> 32) as u32)
}

/// hcsshim `fsTimeToTime`, which its `Stat` uses; missing parents and opaque
/// directories get their times through it and then [`reference_time`].
pub fn reference_time_decode((lo, extra): RawTime) -> GoTime {
    let t = u64::from(lo) | u64::from(extra) << 32;
    if t == 0 {
        return None;
    }
    let mut s = (t & 0x3_ffff_ffff) as i64;
    if s > 0x7fff_ffff && s < 0x1_0000_0000 {
        s = i64::from(s as u32 as i32);
    }
    go_unix(s, (t >> 34) as i64)
}

/// The kernel's encoding (Documentation/filesystems/ext4: "Inode Timestamps").
pub fn ext4_time(sec: i64, nsec: u32) -> RawTime {
    let epoch = ((sec - i64::from(sec as i32)) >> 32) as u32 & 3;
    (sec as u32, nsec << 2 | epoch)
}

/// How the kernel and debugfs read a stored time.
pub fn ext4_time_decode((lo, extra): RawTime) -> (i64, u32) {
    (
        i64::from(lo as i32) + (i64::from(extra & 3) << 32),
        extra >> 2,
    )
}

// ---------------------------------------------------------------------------
// The expected tree.

#[derive(Debug, Clone)]
struct Inode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: GoTime,
    ctime: GoTime,
    mtime: GoTime,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    children: BTreeMap<Vec<u8>, usize>,
    links: usize,
}

impl Inode {
    fn times(&self) -> Times {
        Times {
            atime: reference_time(self.atime),
            ctime: reference_time(self.ctime),
            mtime: reference_time(self.mtime),
            crtime: reference_time(self.mtime),
        }
    }

    /// Whether its data lives in blocks, which the reference never frees
    /// (so it refuses to overwrite such a file).
    fn has_blocks(&self) -> bool {
        match &self.kind {
            Kind::File(c) => c.len > 0,
            Kind::Symlink(t) => t.len() > 59,
            _ => false,
        }
    }
}

const ROOT: usize = 0;

struct Model {
    inodes: Vec<Inode>,
}

/// `path.Clean("/" + p)` split into components.
fn components(p: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `path.Split`.
fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => p.split_at(i + 1),
        None => (&[], p),
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Model {
    fn new() -> Model {
        let dir = |perm| Inode {
            kind: Kind::Dir,
            perm,
            uid: 0,
            gid: 0,
            atime: None,
            ctime: None,
            mtime: None,
            xattrs: BTreeMap::new(),
            children: BTreeMap::new(),
            links: 1,
        };
        let mut m = Model {
            inodes: vec![dir(0o755)],
        };
        m.inodes.push(dir(0o700));
        m.inodes[ROOT].children.insert(b"lost+found".to_vec(), 1);
        m
    }

    fn lookup(&self, comps: &[&[u8]]) -> Option<usize> {
        let mut cur = ROOT;
        for c in comps {
            cur = *self.inodes[cur].children.get(*c)?;
        }
        Some(cur)
    }

    /// `(directory, name)` for an entry path; the root is `(ROOT, "")`.
    fn parent_of(&self, path: &[u8]) -> (usize, Vec<u8>) {
        let comps = components(path);
        let Some((last, dirs)) = comps.split_last() else {
            return (ROOT, Vec::new());
        };
        assert!(last.len() <= 255, "{}: name too long", show(path));
        let dir = self
            .lookup(dirs)
            .filter(|&d| self.inodes[d].kind == Kind::Dir)
            .unwrap_or_else(|| panic!("{}: parent is not a directory", show(path)));
        (dir, last.to_vec())
    }

    fn make_parents(&mut self, path: &[u8]) {
        let comps = components(path);
        let mut cur = ROOT;
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur = match self.inodes[cur].children.get(*c) {
                Some(&child) => child,
                None => {
                    let p = &self.inodes[cur];
                    let inherit = |t: GoTime| reference_time_decode(reference_time(t));
                    let child = Inode {
                        kind: Kind::Dir,
                        perm: p.perm,
                        uid: p.uid,
                        gid: p.gid,
                        atime: inherit(p.atime),
                        ctime: inherit(p.ctime),
                        mtime: inherit(p.mtime),
                        xattrs: BTreeMap::new(),
                        children: BTreeMap::new(),
                        links: 1,
                    };
                    self.inodes.push(child);
                    let id = self.inodes.len() - 1;
                    self.inodes[cur].children.insert(c.to_vec(), id);
                    id
                }
            };
            assert!(
                self.inodes[cur].kind == Kind::Dir,
                "{}: a parent is not a directory",
                show(path)
            );
        }
    }

    fn create(&mut self, path: &[u8], new: Inode) {
        let (dir, name) = self.parent_of(path);
        let existing = if name.is_empty() {
            Some(ROOT)
        } else {
            self.inodes[dir].children.get(&name).copied()
        };
        match existing {
            Some(e) if self.inodes[e].kind == Kind::Dir || new.kind == Kind::Dir => {
                assert!(
                    self.inodes[e].kind == Kind::Dir && new.kind == Kind::Dir,
                    "{}: the reference refuses to swap a directory and a non-directory",
                    show(path)
                );
                // Old attributes survive unless replaced. (The reference
                // forgets those that had spilled into the xattr block;
                // tests do not re-declare such inodes.)
                let old = &mut self.inodes[e];
                let mut xattrs = new.xattrs;
                for (k, v) in std::mem::take(&mut old.xattrs) {
                    xattrs.entry(k).or_insert(v);
                }
                *old = Inode {
                    xattrs,
                    children: std::mem::take(&mut old.children),
                    links: old.links,
                    ..new
                };
            }
            Some(e) if self.inodes[e].links == 1 => {
                assert!(
                    !self.inodes[e].has_blocks(),
                    "{}: the reference refuses to overwrite a file with data",
                    show(path)
                );
                let old = &mut self.inodes[e];
                let mut xattrs = new.xattrs;
                for (k, v) in std::mem::take(&mut old.xattrs) {
                    xattrs.entry(k).or_insert(v);
                }
                *old = Inode {
                    xattrs,
                    links: 1,
                    ..new
                };
            }
            other => {
                if let Some(e) = other {
                    self.inodes[e].links -= 1;
                }
                self.inodes.push(Inode { links: 1, ..new });
                let id = self.inodes.len() - 1;
                self.inodes[dir].children.insert(name, id);
            }
        }
    }

    fn link(&mut self, target: &[u8], path: &[u8]) {
        let (dir, name) = self.parent_of(path);
        if let Some(&e) = self.inodes[dir].children.get(&name) {
            assert!(
                self.inodes[e].kind != Kind::Dir && self.inodes[e].links > 1,
                "{}: the reference refuses a link that orphans an inode",
                show(path)
            );
            self.inodes[e].links -= 1;
        }
        let t = self
            .lookup(&components(target))
            .unwrap_or_else(|| panic!("{}: link target {} missing", show(path), show(target)));
        assert!(self.inodes[t].kind != Kind::Dir, "link to a directory");
        self.inodes[t].links += 1;
        self.inodes[dir].children.insert(name, t);
    }

    fn tree(&self) -> Tree {
        let mut out = Tree::default();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            let n = &self.inodes[id];
            for (name, &child) in &n.children {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    [&path[..], b"/", name].concat()
                };
                stack.push((p, child));
            }
            out.paths.insert(
                path,
                Node {
                    id: id as u64,
                    kind: n.kind.clone(),
                    perm: n.perm,
                    uid: n.uid,
                    gid: n.gid,
                    times: n.times(),
                    xattrs: n.xattrs.clone(),
                },
            );
        }
        out
    }
}

/// Go's `parseNumeric`: base-256 when the top bit is set, else octal.
pub fn parse_numeric(b: &[u8]) -> i64 {
    if b.first().is_some_and(|&f| f & 0x80 != 0) {
        let neg = b[0] & 0x40 != 0;
        let mut x: i128 = if neg { -1 } else { 0 };
        for (i, &c) in b.iter().enumerate() {
            let c = if i == 0 {
                c & 0x7f | (c & 0x40) << 1
            } else {
                c
            };
            x = x << 8 | i128::from(c);
        }
        return x as i64;
    }
    let s = std::str::from_utf8(b).expect("an ASCII numeric field");
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        0
    } else {
        i64::from_str_radix(s, 8).expect("an octal field")
    }
}

/// Go's `parsePAXTime`.
pub fn parse_pax_time(v: &[u8]) -> GoTime {
    let s = std::str::from_utf8(v).expect("an ASCII PAX time");
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = secs.parse().expect("PAX seconds");
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: i64 = digits.parse().expect("PAX nanoseconds");
    if secs.starts_with('-') {
        go_unix(sec, -nsec)
    } else {
        go_unix(sec, nsec)
    }
}

/// The tree an image converted from `tar` (with whiteout conversion) holds.
/// Panics on archives the reference refuses: tests feed it valid ones.
pub fn expected_tree<R: Read>(tar: R) -> Tree {
    let mut m = Model::new();
    let mut archive = tar::Archive::new(tar);
    // Raw entries: the tar crate's own PAX parser splits records at newlines,
    // which binary xattr values contain; records are parsed here by length.
    let mut pending_pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let (mut long_name, mut long_link) = (None, None);
    for entry in archive.entries().expect("a tar").raw(true) {
        let mut entry = entry.expect("a tar entry");
        let header = entry.header().clone();
        let special = |entry: &mut tar::Entry<'_, R>| {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("metadata entry data");
            data
        };
        match header.entry_type().as_byte() {
            b'x' => {
                pending_pax = pax_records(&special(&mut entry));
                continue;
            }
            b'L' => {
                long_name = Some(cut_at_nul(special(&mut entry)));
                continue;
            }
            b'K' => {
                long_link = Some(cut_at_nul(special(&mut entry)));
                continue;
            }
            _ => {}
        }
        let pax = std::mem::take(&mut pending_pax);
        let pax_str = |k: &str| pax.get(k.as_bytes()).filter(|v| !v.is_empty()).cloned();
        let name = long_name
            .take()
            .or_else(|| pax_str("path"))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = long_link
            .take()
            .or_else(|| pax_str("linkpath"))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
            .unwrap_or_default();
        let pax_id = |k: &str| {
            pax_str(k).map(|v| {
                std::str::from_utf8(&v)
                    .expect("an ASCII PAX id")
                    .parse::<i64>()
                    .expect("a decimal PAX id")
            })
        };
        assert!(
            !name.starts_with(b"/") && !components_raw(&name).any(|c| c == b".."),
            "{}: unsafe paths are refused",
            show(&name)
        );
        m.make_parents(&name);

        let (dir, base) = split_last(&name);
        if let Some(target) = base.strip_prefix(b".wh.") {
            if base == b".wh..wh..opq" {
                let (parent, child) = m.parent_of(dir);
                let d = if child.is_empty() {
                    ROOT
                } else {
                    m.inodes[parent].children[&child]
                };
                // The reference re-creates the directory from its own Stat.
                let n = &mut m.inodes[d];
                for t in [&mut n.atime, &mut n.ctime, &mut n.mtime] {
                    *t = reference_time_decode(reference_time(*t));
                }
                n.xattrs
                    .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
            } else {
                let whiteout = Inode {
                    kind: Kind::Char(0, 0),
                    perm: 0,
                    uid: 0,
                    gid: 0,
                    atime: None,
                    ctime: None,
                    mtime: None,
                    xattrs: BTreeMap::new(),
                    children: BTreeMap::new(),
                    links: 1,
                };
                m.create(&[dir, target].concat(), whiteout);
            }
            continue;
        }

        let old = header.as_old();
        let ty = header.entry_type().as_byte();
        let ty = match ty {
            0 if name.ends_with(b"/") => b'5',
            0 | b'7' => b'0',
            t => t,
        };
        if ty == b'1' {
            m.link(&link, &name);
            continue;
        }
        let (major, minor) = match header.as_ustar() {
            Some(u) => (parse_numeric(&u.dev_major), parse_numeric(&u.dev_minor)),
            None => header.as_gnu().map_or((0, 0), |g| {
                (parse_numeric(&g.dev_major), parse_numeric(&g.dev_minor))
            }),
        };
        let kind = match ty {
            b'0' => {
                let mut data = Vec::new();
                let mut len = 0u64;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = entry.read(&mut buf).expect("entry data");
                    if n == 0 {
                        break;
                    }
                    len += n as u64;
                    if len <= KEEP_DATA_UP_TO {
                        data.extend_from_slice(&buf[..n]);
                    }
                }
                Kind::File(Content {
                    len,
                    data: (len <= KEEP_DATA_UP_TO).then_some(data),
                })
            }
            b'2' => Kind::Symlink(link),
            b'3' => Kind::Char(major as u32, minor as u32),
            b'4' => Kind::Block(major as u32, minor as u32),
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            t => panic!("{}: type {:?} not modelled", show(&name), t as char),
        };
        let pax_time = |k: &str| {
            pax.get(k.as_bytes())
                .filter(|v| !v.is_empty())
                .map(|v| parse_pax_time(v))
        };
        let mut mtime = go_unix(parse_numeric(&old.mtime), 0);
        let (mut atime, mut ctime) = (None, None);
        if let Some(g) = header.as_gnu() {
            if g.atime[0] != 0 {
                atime = go_unix(parse_numeric(&g.atime), 0);
            }
            if g.ctime[0] != 0 {
                ctime = go_unix(parse_numeric(&g.ctime), 0);
            }
        }
        mtime = pax_time("mtime").unwrap_or(mtime);
        atime = pax_time("atime").unwrap_or(atime);
        ctime = pax_time("ctime").unwrap_or(ctime);
        let mut perm = (parse_numeric(&old.mode) & 0o7777) as u16;
        if matches!(kind, Kind::Symlink(_)) {
            perm |= 0o777;
        }
        let xattrs = pax
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(b"SCHILY.xattr.")?.to_vec(), v.clone())))
            .collect();
        let node = Inode {
            kind,
            perm,
            uid: pax_id("uid").unwrap_or_else(|| parse_numeric(&old.uid)) as u32,
            gid: pax_id("gid").unwrap_or_else(|| parse_numeric(&old.gid)) as u32,
            atime,
            ctime,
            mtime,
            xattrs,
            children: BTreeMap::new(),
            links: 1,
        };
        m.create(&name, node);
    }
    m.tree()
}

fn cut_at_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&c| c == 0) {
        v.truncate(i);
    }
    v
}

/// PAX records (`"%d %s=%s\n"`), each sized by its decimal length prefix.
fn pax_records(mut data: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    while !data.is_empty() {
        let space = data.iter().position(|&c| c == b' ').expect("a PAX length");
        let len: usize = std::str::from_utf8(&data[..space])
            .unwrap()
            .parse()
            .expect("a decimal PAX length");
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&c| c == b'=').expect("a PAX key");
        out.insert(record[..eq].to_vec(), record[eq + 1..].to_vec());
        data = &data[len..];
    }
    out
}

fn components_raw(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|&b| b == b'/')
}

// ---------------------------------------------------------------------------
// Comparison.

/// Every difference between what a tar predicts and what the image holds,
/// one line each, naming the path.
pub fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let paths: BTreeSet<&Vec<u8>> = expected.paths.keys().chain(actual.paths.keys()).collect();
    // Paths that share an inode on one side must share it on the other.
    let mut e2a: BTreeMap<u64, (u64, &[u8])> = BTreeMap::new();
    let mut a2e: BTreeMap<u64, (u64, &[u8])> = BTreeMap::new();
    for path in paths {
        let p = format!("/{}", show(path));
        let (e, a) = match (expected.paths.get(path), actual.paths.get(path)) {
            (Some(e), Some(a)) => (e, a),
            (Some(e), None) => {
                out.push(format!("{p}: missing from the image (a {})", e.kind.name()));
                continue;
            }
            (None, Some(a)) => {
                out.push(format!(
                    "{p}: in the image (a {}) but not in the tar",
                    a.kind.name()
                ));
                continue;
            }
            (None, None) => unreachable!(),
        };
        if let Some((other, first)) = e2a.insert(e.id, (a.id, path)) {
            if other != a.id {
                out.push(format!(
                    "{p}: should be the same inode as /{} (hard link) but is {} vs {other}",
                    show(first),
                    a.id
                ));
            }
        }
        if let Some((other, first)) = a2e.insert(a.id, (e.id, path)) {
            if other != e.id {
                out.push(format!(
                    "{p}: shares inode {} with /{} but the tar has no such hard link",
                    a.id,
                    show(first)
                ));
            }
        }
        diff_node(&p, e, a, &mut out);
    }
    out
}

fn diff_node(p: &str, e: &Node, a: &Node, out: &mut Vec<String>) {
    match (&e.kind, &a.kind) {
        (Kind::File(ec), Kind::File(ac)) => {
            if ec.len != ac.len {
                out.push(format!(
                    "{p}: size {} in the image, {} in the tar",
                    ac.len, ec.len
                ));
            } else if let (Some(ed), Some(ad)) = (&ec.data, &ac.data) {
                if let Some(i) = ed.iter().zip(ad).position(|(x, y)| x != y) {
                    out.push(format!(
                        "{p}: contents differ from byte {i}: image {:02x?}, tar {:02x?}",
                        &ad[i..ad.len().min(i + 16)],
                        &ed[i..ed.len().min(i + 16)]
                    ));
                }
            }
        }
        (Kind::Symlink(et), Kind::Symlink(at)) if et != at => {
            out.push(format!(
                "{p}: symlink to {:?} in the image, to {:?} in the tar",
                show(at),
                show(et)
            ));
        }
        (ek, ak) if ek != ak => {
            out.push(format!("{p}: is {ak:?} in the image, {ek:?} in the tar"));
        }
        _ => {}
    }
    if e.perm != a.perm {
        out.push(format!(
            "{p}: mode {:04o} in the image, {:04o} in the tar",
            a.perm, e.perm
        ));
    }
    if (e.uid, e.gid) != (a.uid, a.gid) {
        out.push(format!(
            "{p}: owner {}:{} in the image, {}:{} in the tar",
            a.uid, a.gid, e.uid, e.gid
        ));
    }
    for (what, et, at) in [
        ("atime", e.times.atime, a.times.atime),
        ("ctime", e.times.ctime, a.times.ctime),
        ("mtime", e.times.mtime, a.times.mtime),
        ("crtime", e.times.crtime, a.times.crtime),
    ] {
        if et != at {
            out.push(format!(
                "{p}: {what} 0x{:08x}:{:08x} in the image, 0x{:08x}:{:08x} expected",
                at.0, at.1, et.0, et.1
            ));
        }
    }
    if e.xattrs != a.xattrs {
        let fmt = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
            let mut s = String::new();
            for (k, v) in m {
                let _ = write!(s, "{}={:?} ", show(k), String::from_utf8_lossy(v));
            }
            s
        };
        out.push(format!(
            "{p}: xattrs [{}] in the image, [{}] in the tar",
            fmt(&a.xattrs),
            fmt(&e.xattrs)
        ));
    }
}
