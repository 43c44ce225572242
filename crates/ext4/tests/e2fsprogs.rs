//! e2fsprogs as an independent oracle: `e2fsck -fn` finds nothing but the
//! reference's own quirks, and `debugfs` reads back exactly what the tar says.
//!
//! The images copy hcsshim's byte for byte, and with it these quirks, which a
//! "fix" would turn into a different layer hash (checked on images from the
//! reference itself):
//! - the inode bitmap's padding bits are left clear, so e2fsprogs 1.45.1 and
//!   later report "Padding at end of inode bitmap is not set" and exit 4;
//!   with those bits set, e2fsck exits 0 (see the padding test);
//! - seconds are stored as `uint64(sec) | nsec << 34`: 2038..2106 lose their
//!   epoch bit and negative times set every high bit ("likely pre-1970");
//! - an empty symlink target is written as is, which e2fsck calls invalid;
//! - `system.posix_acl_*` values stay in the tar's VFS format.
//!
//! Needs `e2fsck` and `debugfs` (Debian: e2fsprogs); set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip where they cannot be installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use common::debugfs::{self, BITMAP_PADDING};
use common::model::{self, Content, Kind, ext4_time_decode};
use common::tarball::{self, Dialect, Entry, Kind as T};

fn vector_tars() -> Vec<std::path::PathBuf> {
    let mut tars: Vec<_> = std::fs::read_dir(common::vectors_dir())
        .expect("the shared vectors are checked out beside the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    tars.sort();
    assert!(tars.len() >= 7, "the layer vectors: {tars:?}");
    tars
}

#[test]
fn every_layer_vector_reads_back_through_e2fsprogs() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let mut failures = Vec::new();
    for path in vector_tars() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let tar = std::fs::read(&path).unwrap();
        let expected = model::expected_tree(&tar[..]);
        let image = common::image_file(&tar[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = common::verify(&tools, &expected, image.path()) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A deterministic, position-dependent filler, so that misplaced blocks show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

const LONG_TARGET_REPEAT: usize = 40;

fn long_target() -> String {
    format!("/{}target", "deep/".repeat(LONG_TARGET_REPEAT))
}

/// One archive with every feature the converter must carry over.
fn features() -> Vec<Entry> {
    vec![
        // The root itself, as Docker writes it.
        Entry::dir("./").mtime(1_600_000_000, 0),
        Entry::dir("etc/"),
        Entry::file("etc/hosts", "127.0.0.1 localhost\n"),
        Entry::file("./etc/motd", "hello\n").dialect(Dialect::Gnu),
        // Whiteouts: a file, an opaque directory, both under missing parents too.
        Entry::file("etc/.wh.passwd", ""),
        Entry::dir("var/"),
        Entry::dir("var/cache/"),
        Entry::file("var/cache/.wh..wh..opq", ""),
        Entry::file("var/cache/keep", "kept\n"),
        Entry::file("gone/.wh.x", ""),
        Entry::file("opaque-implicit/.wh..wh..opq", ""),
        // Hard links, by plain, "./" and GNU long names, into a missing parent.
        Entry::dir("bin/"),
        Entry::file("bin/busybox", pattern(20_000)).mode(0o755),
        Entry::hardlink("bin/sh", "bin/busybox"),
        Entry::hardlink("bin/ls", "./bin/busybox"),
        Entry::hardlink(format!("bin/{}", "l".repeat(120)), "bin/busybox").dialect(Dialect::Gnu),
        Entry::hardlink("links/elsewhere", "bin/busybox"),
        Entry::file("bin/su", "su").mode(0o4755),
        Entry::dir("tmp/").mode(0o1777),
        // Symlinks: fast (< 60 bytes), slow, with PAX and GNU long targets.
        Entry::symlink("lnk/short", "../etc/hosts"),
        Entry::symlink("lnk/exactly59", "x".repeat(59)),
        Entry::symlink("lnk/exactly60", "y".repeat(60)),
        Entry::symlink("lnk/long", long_target()),
        Entry::symlink("lnk/gnu", "g".repeat(150)).dialect(Dialect::Gnu),
        Entry::symlink("lnk/dangling", "../nowhere"),
        // Devices and a fifo.
        Entry::new("dev/null", T::Char(1, 3)).mode(0o666),
        Entry::new("dev/sda", T::Block(8, 0)).mode(0o660),
        Entry::new("dev/big", T::Char(300, 70_000)).mode(0o600),
        Entry::new("dev/max", T::Block(4095, 1_048_575)),
        Entry::new("dev/gnu-null", T::Char(1, 3)).dialect(Dialect::Gnu),
        Entry::new("dev/fifo", T::Fifo),
        // Long and non-ASCII names.
        Entry::file(format!("pax/{}/file", "p".repeat(120)), "pax long name\n"),
        Entry::file(format!("pax/{}", "n".repeat(255)), "255 bytes\n"),
        Entry::file(format!("gnu/{}/file", "g".repeat(150)), "gnu long name\n")
            .dialect(Dialect::Gnu),
        Entry::file(format!("ünï-中文-😀/{}", "é".repeat(127)), "utf-8\n"),
        Entry::file("always-pax", "pax\n").dialect(Dialect::Pax),
        // Extended attributes, in the inode and spilling into a block.
        Entry::file("xattr/small", "x")
            .xattr("user.foo", "bar")
            .xattr("user.empty", ""),
        Entry::file("xattr/spill", "x")
            .xattr("user.big", vec![0xa5; 200])
            .xattr("user.small", "s"),
        Entry::dir("xattr/dir/")
            .xattr("user.dir", "d")
            .xattr("trusted.t", [0u8, 1, 2, 255]),
        Entry::symlink("xattr/link", "small").xattr("user.l", "l"),
        Entry::file("xattr/cap", "").xattr(
            "security.capability",
            [
                1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        // Missing parents: from the root, and from a declared directory.
        Entry::file("deep/er/file", "deep\n"),
        Entry::dir("priv/")
            .mode(0o700)
            .owner(7, 8)
            .mtime(1_234_567_890, 5),
        Entry::file("priv/x/y/file", "private\n").owner(7, 8),
        Entry::dir("declared-late/sub/"),
        Entry::dir("declared-late/").mode(0o750).owner(1, 2),
        // An empty file may be written again, with data this time.
        Entry::file("overwrite", "").xattr("user.first", "1"),
        Entry::file("overwrite", "second\n").xattr("user.second", "2"),
        // Owners beyond ustar's fields: PAX records, GNU base-256.
        Entry::file("ids/pax", "").owner(3_000_000, 4_000_000),
        Entry::file("ids/gnu", "")
            .owner(4_294_967_294, 65_534)
            .dialect(Dialect::Gnu),
        // Times.
        Entry::file("times/nanos", "").mtime(1_700_000_000, 123_456_789),
        Entry::file("times/epoch", "").mtime(0, 0),
        Entry::file("times/2100", "")
            .mtime(4_102_444_800, 0)
            .dialect(Dialect::Pax),
        Entry::file("times/2100-octal", "").mtime(4_102_444_800, 0),
        Entry::file("times/2106+", "")
            .mtime((1 << 32) + 5, 0)
            .dialect(Dialect::Gnu),
        Entry::file("times/max", "").mtime(0x3_7fff_ffff, 0),
        Entry::file("times/clamped-high", "").mtime(1 << 40, 0),
        Entry::file("times/pre-1970", "").mtime(-1, 500_000_000),
        Entry::file("times/pre-1970-gnu", "")
            .mtime(-86_400, 0)
            .dialect(Dialect::Gnu),
        Entry::file("times/clamped-low", "").mtime(-(1 << 40), 0),
        Entry::dir("late/").mtime(4_102_444_800, 0),
        Entry::file("late/sub/file", ""),
    ]
}

#[test]
fn hand_built_features_read_back_through_e2fsprogs() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let tar = tarball::tar_of(&features());
    let rb = common::check_tar(&tools, "features", &tar);
    let t = &rb.tree;

    // Spot checks written out by hand, independent of the model.
    let file = |s: &str| Kind::File(Content::of(s.as_bytes()));
    let link = |s: &str| Kind::Symlink(s.as_bytes().to_vec());
    let cases: Vec<(&str, Kind, u16)> = vec![
        ("etc/passwd", Kind::Char(0, 0), 0),
        ("gone/x", Kind::Char(0, 0), 0),
        ("dev/null", Kind::Char(1, 3), 0o666),
        ("dev/gnu-null", Kind::Char(1, 3), 0o644),
        ("dev/sda", Kind::Block(8, 0), 0o660),
        ("dev/big", Kind::Char(300, 70_000), 0o600),
        ("dev/max", Kind::Block(4095, 1_048_575), 0o644),
        ("dev/fifo", Kind::Fifo, 0o644),
        ("etc/motd", file("hello\n"), 0o644),
        ("bin/su", file("su"), 0o4755),
        ("tmp", Kind::Dir, 0o1777),
        ("priv/x/y", Kind::Dir, 0o700),
        ("declared-late", Kind::Dir, 0o750),
        ("overwrite", file("second\n"), 0o644),
        ("lnk/short", link("../etc/hosts"), 0o777),
        ("lnk/long", link(&long_target()), 0o777),
        ("lnk/gnu", link(&"g".repeat(150)), 0o777),
        ("", Kind::Dir, 0o755),
        ("lost+found", Kind::Dir, 0o700),
    ];
    for (path, kind, perm) in cases {
        let n = t.get(path);
        assert_eq!(n.kind, kind, "{path}: type and contents");
        assert_eq!(n.perm, perm, "{path}: mode {:o}", n.perm);
    }

    let busybox = t.get("bin/busybox").id;
    for path in [
        "bin/sh".to_owned(),
        "bin/ls".to_owned(),
        format!("bin/{}", "l".repeat(120)),
        "links/elsewhere".to_owned(),
    ] {
        assert_eq!(
            t.get(&path).id,
            busybox,
            "{path}: a hard link to bin/busybox"
        );
    }
    assert_eq!(rb.stat("bin/busybox").links, 5, "bin/busybox: link count");

    assert!(
        rb.stat("lnk/exactly59").fast_link.is_some(),
        "59 bytes fit in the inode"
    );
    assert!(
        rb.stat("lnk/exactly60").fast_link.is_none()
            && !rb.stat("lnk/exactly60").extents.is_empty(),
        "60 bytes need a block: {:?}",
        rb.stat("lnk/exactly60")
    );

    let opaque = BTreeMap::from([(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())]);
    for path in ["var/cache", "opaque-implicit"] {
        assert_eq!(t.get(path).xattrs, opaque, "{path}: opaque directory");
    }
    assert!(t.get("var").xattrs.is_empty(), "var is not opaque");
    assert_eq!(
        t.get("xattr/small").xattrs,
        BTreeMap::from([
            (b"user.empty".to_vec(), Vec::new()),
            (b"user.foo".to_vec(), b"bar".to_vec()),
        ])
    );
    assert_eq!(
        t.get("xattr/spill").xattrs[&b"user.big"[..]],
        vec![0xa5; 200],
        "xattr/spill: a value in the xattr block"
    );
    assert_eq!(t.get("overwrite").xattrs.len(), 2, "overwrite: both xattrs");

    for (path, uid, gid) in [
        ("ids/pax", 3_000_000, 4_000_000),
        ("ids/gnu", 4_294_967_294, 65_534),
        ("priv/x/y/file", 7, 8),
        ("priv/x", 7, 8),
        ("deep/er", 0, 0),
    ] {
        let n = t.get(path);
        assert_eq!((n.uid, n.gid), (uid, gid), "{path}: owner");
    }

    // Times inside 1970..2038 read back exactly, nanoseconds included.
    for (path, secs, nanos) in [
        ("times/nanos", 1_700_000_000, 123_456_789),
        ("times/epoch", 0, 0),
        ("priv", 1_234_567_890, 5),
        ("priv/x/y", 1_234_567_890, 5),
        ("", 1_600_000_000, 0),
    ] {
        let got = ext4_time_decode(t.get(path).times.mtime);
        assert_eq!(got, (secs, nanos), "{path}: mtime");
    }
    // Outside that range the reference stores `uint64(sec) | nsec << 34`:
    // 2100 is written without its epoch bit (see the ignored tests below).
    assert_eq!(t.get("times/2100").times.mtime, (0xf486_5700, 0));
    assert_eq!(t.get("times/2100-octal").times.mtime, (0xf486_5700, 0));
    assert_eq!(t.get("times/max").times.mtime, (0x7fff_ffff, 3));
}

#[test]
fn three_thousand_entries_in_one_directory() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let mut entries = vec![Entry::dir("many/")];
    for i in 0..3000 {
        let name = format!("many/entry-{i:05}-{}", "x".repeat(i % 50));
        let data = if i % 3 == 0 {
            format!("{i}\n")
        } else {
            String::new()
        };
        entries.push(Entry::file(name, data));
    }
    let rb = common::check_tar(&tools, "3000 entries", &tarball::tar_of(&entries));
    let n = rb
        .tree
        .paths
        .keys()
        .filter(|p| p.starts_with(b"many/"))
        .count();
    assert_eq!(n, 3000);
    assert!(
        rb.stat("many").size > 16 * 4096,
        "the directory spans many blocks: {:?}",
        rb.stat("many")
    );
}

/// `len` bytes where each 4 KiB block starts with its own index, so that a
/// block written to the wrong place cannot go unnoticed.
struct Blocks {
    pos: u64,
    len: u64,
    filler: Vec<u8>,
}

impl Blocks {
    fn new(len: u64) -> Blocks {
        Blocks {
            pos: 0,
            len,
            filler: pattern(4096),
        }
    }
}

impl Read for Blocks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.pos < self.len {
            let off = (self.pos % 4096) as usize;
            let mut block = [0u8; 4096];
            block.copy_from_slice(&self.filler);
            block[..8].copy_from_slice(&(self.pos / 4096).to_le_bytes());
            let take = (4096 - off)
                .min(buf.len() - n)
                .min((self.len - self.pos) as usize);
            buf[n..n + take].copy_from_slice(&block[off..off + take]);
            n += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

#[test]
fn a_file_over_128_mib_needs_two_extents() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    // 32768 blocks is the most one extent maps.
    const LEN: u64 = (130 << 20) + 123;
    let mut tar = tempfile::tempfile().unwrap();
    {
        let mut b = tar::Builder::new(&mut tar);
        tarball::append(&mut b, &Entry::dir("big/")).unwrap();
        let e = Entry::file("big/file", Vec::new()).mode(0o600);
        tarball::append_stream(&mut b, &e, LEN, &mut Blocks::new(LEN)).unwrap();
        tarball::append(&mut b, &Entry::file("big/after", "after\n")).unwrap();
        b.finish().unwrap();
    }
    tar.seek(SeekFrom::Start(0)).unwrap();
    let expected = model::expected_tree(BufReader::new(&mut tar));
    tar.seek(SeekFrom::Start(0)).unwrap();
    let image = common::image_file(&mut tar).unwrap();
    drop(tar);
    let rb = common::verify(&tools, &expected, image.path()).unwrap_or_else(|e| panic!("{e}"));

    let st = rb.stat("big/file");
    assert_eq!(st.size, LEN);
    assert_eq!(st.extents.len(), 2, "extents of big/file: {:?}", st.extents);
    let mut dumped = BufReader::new(File::open(rb.debugfs.dumped(st.inode)).unwrap());
    let mut want = Blocks::new(LEN);
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = want.read(&mut a).unwrap();
        dumped.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "big/file differs in the 1 MiB from {at}");
        at += n as u64;
        if n == 0 {
            break;
        }
    }
    assert_eq!(dumped.read(&mut b).unwrap(), 0, "big/file: trailing bytes");
}

/// Sets the unused tail of every group's inode bitmap, as mke2fs would.
fn set_inode_bitmap_padding(image: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).unwrap();
    f.read_exact(&mut sb).unwrap();
    let le = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    let (blocks, blocks_per_group, inodes_per_group) = (le(4), le(32), le(40));
    assert_eq!(le(24), 2, "4 KiB blocks");
    let groups = blocks.div_ceil(blocks_per_group);
    for g in 0..groups {
        let mut gd = [0u8; 32];
        f.seek(SeekFrom::Start(4096 + 32 * u64::from(g))).unwrap();
        f.read_exact(&mut gd).unwrap();
        let bitmap = u64::from(u32::from_le_bytes(gd[4..8].try_into().unwrap()));
        let mut map = [0u8; 4096];
        f.seek(SeekFrom::Start(bitmap * 4096)).unwrap();
        f.read_exact(&mut map).unwrap();
        for bit in inodes_per_group..4096 * 8 {
            map[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        f.seek(SeekFrom::Start(bitmap * 4096)).unwrap();
        f.write_all(&map).unwrap();
    }
}

fn e2fsck(tools: &debugfs::Tools, image: &Path) -> (Option<i32>, String) {
    let out = Command::new(&tools.e2fsck)
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The reference leaves the tail of each inode bitmap clear, which e2fsck
/// (>= 1.45.1) reports. That is the only thing it finds: with the padding
/// set, every vector's image passes `e2fsck -fn` with exit status 0.
#[test]
fn vectors_pass_e2fsck_once_the_inode_bitmap_padding_is_set() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let mut failures = Vec::new();
    for path in vector_tars() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let image = common::image_file(File::open(&path).unwrap()).unwrap();
        let (code, out) = e2fsck(&tools, image.path());
        if code != Some(4) || !out.contains(BITMAP_PADDING) {
            failures.push(format!("{name} as converted: exit {code:?}\n{out}"));
        }
        set_inode_bitmap_padding(image.path());
        let (code, out) = e2fsck(&tools, image.path());
        if code != Some(0) {
            failures.push(format!("{name} with padding set: exit {code:?}\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn pax_values_may_contain_newlines() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    // security.capability v2 with CAP_SYS_RAWIO and CAP_SYS_PTRACE permitted:
    // bits 17 and 19 make the byte 0x0a.
    let cap = [
        1u8, 0, 0, 2, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tar = tarball::tar_of(&[Entry::file("bin/ping", "x").xattr("security.capability", cap)]);
    let image = common::image_file(&tar[..]).unwrap_or_else(|e| panic!("{e}: {e:?}"));
    let (tree, _) = tools.debugfs(image.path()).tree();
    assert_eq!(
        tree.get("bin/ping").xattrs[&b"security.capability"[..]],
        cap.to_vec()
    );
}
