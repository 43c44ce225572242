//! Random layers: every archive converts, passes `e2fsck -fn`, and reads back
//! through `debugfs` exactly as the tar says (see `common::model`).
//!
//! Needs `e2fsck` and `debugfs` (e2fsprogs); `CONFSUM_SKIP_REAL_TOOLS=1` skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

use common::debugfs;
use common::model;
use common::tarball::{self, Dialect, Entry, Kind};

#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    xattrs: BTreeMap<String, Vec<u8>>,
    dialect: Dialect,
}

#[derive(Debug, Clone)]
enum Node {
    Dir {
        meta: Meta,
        /// Whether the archive has an entry for it (else a child creates it).
        explicit: bool,
        /// Whether that entry comes after the children.
        late: bool,
        /// Whether it holds `.wh..wh..opq`.
        opaque: bool,
        children: BTreeMap<String, Node>,
    },
    File {
        meta: Meta,
        data: Vec<u8>,
    },
    Symlink {
        meta: Meta,
        target: String,
    },
    Fifo {
        meta: Meta,
    },
}

#[derive(Debug, Clone)]
struct Layer {
    root: BTreeMap<String, Node>,
    /// `.wh.` entries, each in some directory of the tree.
    whiteouts: Vec<Index>,
    /// Hard links: (target among files and symlinks, directory to put it in).
    links: Vec<(Index, Index)>,
}

fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        10 => prop::char::range('a', 'z'),
        2 => prop::char::range('0', '9'),
        2 => prop::sample::select(vec![
            '.', '-', '_', ' ', '+', '@', '#', '%', '"', '\'', '\\', '*', '?', ':', '=', '$',
        ]),
        2 => prop::sample::select(vec!['é', 'ß', 'ü', '中', '文', '😀', 'Ω', 'ж', '\u{301}']),
        1 => prop::char::range('\u{a1}', '\u{2fff}'),
    ]
}

/// A file name: up to 255 bytes of UTF-8, never `.`, `..`, a whiteout, `~`
/// (kept for the names this test makes up) or `lost+found`.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(name_char(), 1..12),
        1 => vec(name_char(), 60..130),
        1 => vec(prop::char::range('a', 'z'), 250..=255),
    ]
    .prop_map(|chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > 255 {
                break;
            }
            s.push(c);
        }
        s
    })
    .prop_filter("reserved name", |s| {
        s != "." && s != ".." && s != "lost+found" && !s.starts_with(".wh.")
    })
}

fn mtime() -> impl Strategy<Value = (i64, u32)> {
    let secs = prop_oneof![
        6 => 0i64..(1 << 31),
        1 => Just(0i64),
        2 => -(1i64 << 31)..0,
        2 => (1i64 << 31)..0x3_8000_0000,
        1 => prop::sample::select(vec![-(1i64 << 40), 1 << 40, (1 << 32) - 1, -(1 << 31) - 1]),
    ];
    let nanos = prop_oneof![3 => Just(0u32), 1 => 0u32..1_000_000_000];
    (secs, nanos)
}

fn meta() -> impl Strategy<Value = Meta> {
    let id =
        || prop_oneof![3 => Just(0u64), 3 => 0u64..70_000, 1 => any::<u32>().prop_map(u64::from)];
    let xattr_name = vec(prop::char::range('a', 'z'), 1..10)
        .prop_map(|cs| format!("user.{}", cs.into_iter().collect::<String>()));
    let xattrs = prop_oneof![
        3 => Just(BTreeMap::new()),
        // Any bytes: PAX records are sized by their length prefix, not by
        // newlines, so binary values (file capabilities) must survive.
        1 => btree_map(xattr_name, vec(any::<u8>(), 0..40), 1..4),
    ];
    let dialect = prop::sample::select(vec![Dialect::Ustar, Dialect::Pax, Dialect::Gnu]);
    (0u32..0o10000, id(), id(), mtime(), xattrs, dialect).prop_map(
        |(mode, uid, gid, mtime, xattrs, dialect)| Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
            dialect,
        },
    )
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => vec(any::<u8>(), 1..100),
        1 => vec(any::<u8>(), 4090..4200),
        1 => vec(any::<u8>(), 8000..9000),
    ]
}

fn target() -> impl Strategy<Value = String> {
    let ch = prop_oneof![4 => name_char(), 1 => Just('/')];
    prop_oneof![
        vec(ch.clone(), 1..40),
        vec(ch.clone(), 55..65),
        vec(ch, 100..200)
    ]
    .prop_map(|cs| cs.into_iter().collect())
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => (meta(), data()).prop_map(|(meta, data)| Node::File { meta, data }),
        1 => (meta(), target()).prop_map(|(meta, target)| Node::Symlink { meta, target }),
        1 => meta().prop_map(|meta| Node::Fifo { meta }),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        (
            meta(),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.15),
            btree_map(name(), inner, 0..5),
        )
            .prop_map(|(meta, explicit, late, opaque, children)| Node::Dir {
                meta,
                explicit,
                late,
                opaque,
                children,
            })
    })
}

fn layer() -> impl Strategy<Value = Layer> {
    (
        btree_map(name(), node(), 1..8),
        vec(any::<Index>(), 0..3),
        vec((any::<Index>(), any::<Index>()), 0..4),
    )
        .prop_map(|(root, whiteouts, links)| Layer {
            root,
            whiteouts,
            links,
        })
}

fn entry(path: String, kind: Kind, m: &Meta) -> Entry {
    let mut e = Entry::new(path, kind)
        .mode(m.mode)
        .owner(m.uid, m.gid)
        .mtime(m.mtime.0, m.mtime.1)
        .dialect(m.dialect);
    e.xattrs = m.xattrs.clone().into_iter().collect();
    e
}

#[derive(Default)]
struct Flat {
    entries: Vec<Entry>,
    dirs: Vec<String>,
    linkable: Vec<String>,
}

fn flatten_into(prefix: &str, children: &BTreeMap<String, Node>, out: &mut Flat) {
    for (name, node) in children {
        let path = format!("{prefix}{name}");
        match node {
            Node::Dir {
                meta,
                explicit,
                late,
                opaque,
                children,
            } => {
                let declare = entry(format!("{path}/"), Kind::Dir, meta);
                if *explicit && !*late {
                    out.entries.push(declare.clone());
                }
                if *opaque {
                    out.entries
                        .push(Entry::file(format!("{path}/.wh..wh..opq"), ""));
                }
                out.dirs.push(path.clone());
                flatten_into(&format!("{path}/"), children, out);
                if *explicit && *late {
                    out.entries.push(declare);
                }
            }
            Node::File { meta, data } => {
                out.entries
                    .push(entry(path.clone(), Kind::File(data.clone()), meta));
                out.linkable.push(path);
            }
            Node::Symlink { meta, target } => {
                out.entries
                    .push(entry(path.clone(), Kind::Symlink(target.clone()), meta));
                out.linkable.push(path);
            }
            Node::Fifo { meta } => out.entries.push(entry(path, Kind::Fifo, meta)),
        }
    }
}

/// The archive for a layer: the tree in pre-order, then whiteouts and links.
fn entries(layer: &Layer) -> Vec<Entry> {
    let mut flat = Flat {
        dirs: vec![String::new()],
        ..Flat::default()
    };
    flatten_into("", &layer.root, &mut flat);
    let in_dir = |dir: &str, name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };
    for (i, d) in layer.whiteouts.iter().enumerate() {
        let dir: &String = d.get(&flat.dirs);
        flat.entries
            .push(Entry::file(in_dir(dir, &format!(".wh.~w{i}")), ""));
    }
    if !flat.linkable.is_empty() {
        for (i, (t, d)) in layer.links.iter().enumerate() {
            let target = t.get(&flat.linkable).clone();
            let dir: &String = d.get(&flat.dirs);
            let path = in_dir(dir, &format!("~h{i}"));
            flat.entries.push(Entry::hardlink(path, target));
        }
    }
    flat.entries
}

#[test]
fn random_layers_pass_e2fsck_and_read_back() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/proptest_tars.txt",
        ))),
        ..ProptestConfig::default()
    };
    proptest!(config, |(layer in layer())| {
        let tar = tarball::tar_of(&entries(&layer));
        let expected = model::expected_tree(&tar[..]);
        let image = common::image_file(&tar[..])
            .map_err(|e| TestCaseError::fail(format!("conversion failed: {e}: {e:?}")))?;
        common::verify(&tools, &expected, image.path()).map_err(TestCaseError::fail)?;
    });
}
