//! e2fsprogs as an oracle: `e2fsck -fn` for validity, `debugfs` to read an
//! image back without mounting it.
//!
//! `debugfs -f CMDFILE` runs a whole batch of commands in one process; every
//! command is echoed as `debugfs: CMD` on stdout, which splits the output.
//! Inodes are named as `<N>`, never by path, so no file name needs quoting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::model::{Content, KEEP_DATA_UP_TO, Kind, Node, RawTime, Times, Tree};

/// Paths of the e2fsprogs binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    pub e2fsck: PathBuf,
    pub debugfs: PathBuf,
}

/// The tools, or `None` (after saying so) when they are missing and
/// `CONFSUM_SKIP_REAL_TOOLS=1`. Missing tools fail the test otherwise.
pub fn tools() -> Option<Tools> {
    Some(Tools {
        e2fsck: confsum_testkit::real_tool("e2fsck", "e2fsprogs")?,
        debugfs: confsum_testkit::real_tool("debugfs", "e2fsprogs")?,
    })
}

/// What `e2fsck -n` reports for every image the reference writes: it lays out
/// fewer inodes per group than a bitmap block has bits and leaves the rest of
/// the inode bitmap clear (e2fsprogs >= 1.45.1 checks those tail bits). The
/// layer hash depends on those bytes, so they cannot be changed.
pub const BITMAP_PADDING: &str = "Padding at end of inode bitmap is not set. Fix? no";

impl Tools {
    /// Runs `e2fsck -fn` and accepts its verdict only if the sole problems
    /// are the reference's known quirks: [`BITMAP_PADDING`], and "likely
    /// pre-1970" timestamps on exactly the inodes in `pre_1970` (the
    /// reference encodes times before 1970 that way). The exit status must be
    /// 0, or 4 because of the padding. Returns e2fsck's output on failure.
    pub fn fsck(&self, image: &Path, pre_1970: &BTreeSet<u64>) -> Result<(), String> {
        let out = Command::new(&self.e2fsck)
            .arg("-fn")
            .arg(image)
            .output()
            .expect("running e2fsck");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let report = || format!("e2fsck -fn exited with {code:?}\n{stdout}{stderr}");
        let img = format!("{}: ", image.display());
        let mut padding = false;
        let mut flagged = BTreeSet::new();
        let mut lines = stdout.lines();
        while let Some(line) = lines.next() {
            let standard = line.is_empty()
                || [
                    "Pass 1: Checking inodes, blocks, and sizes",
                    "Pass 2: Checking directory structure",
                    "Pass 3: Checking directory connectivity",
                    "Pass 4: Checking reference counts",
                    "Pass 5: Checking group summary information",
                ]
                .contains(&line)
                || line.strip_prefix(&img).is_some_and(|rest| {
                    rest.contains(" files (") && rest.contains(" blocks")
                        || rest == "********** WARNING: Filesystem still has errors **********"
                });
            if standard {
                continue;
            }
            if line == BITMAP_PADDING {
                padding = true;
                continue;
            }
            let ino = line
                .strip_prefix("Timestamp(s) on inode ")
                .and_then(|r| r.strip_suffix(" beyond 2310-04-04 are likely pre-1970."))
                .and_then(|n| n.parse::<u64>().ok());
            match ino {
                Some(ino) if lines.next() == Some("Fix? no") => {
                    flagged.insert(ino);
                }
                _ => return Err(format!("unexpected line {line:?}\n{}", report())),
            }
        }
        if &flagged != pre_1970 {
            return Err(format!(
                "inodes flagged pre-1970: {flagged:?}, expected {pre_1970:?}\n{}",
                report()
            ));
        }
        // Declining the timestamp fix leaves the exit status alone; declining
        // the padding fix makes it 4 ("errors left uncorrected").
        let want = if padding { Some(4) } else { Some(0) };
        if code != want || !stderr.lines().all(|l| l.starts_with("e2fsck ")) {
            return Err(report());
        }
        Ok(())
    }

    pub fn debugfs(&self, image: &Path) -> Debugfs {
        Debugfs {
            bin: self.debugfs.clone(),
            image: image.to_path_buf(),
            scratch: tempfile::tempdir().expect("a scratch directory"),
        }
    }
}

/// A read-only debugfs session on one image.
#[derive(Debug)]
pub struct Debugfs {
    bin: PathBuf,
    image: PathBuf,
    /// Where `dump` and `ea_get -f` write.
    scratch: tempfile::TempDir,
}

/// What `stat <N>` says, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub inode: u64,
    pub kind: String,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub times: Option<Times>,
    pub fast_link: Option<Vec<u8>>,
    pub device: Option<(u32, u32)>,
    /// The lines after `EXTENTS:`, e.g. `(0-32767):1035-33802`.
    pub extents: Vec<String>,
}

/// One line of `ls -p`: `/ino/mode/uid/gid/name/size/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub name: Vec<u8>,
    /// Empty for directories.
    pub size: Option<u64>,
}

fn parse_id(s: &str) -> u32 {
    // debugfs prints ids with %d, so those above 2^31 come out negative.
    s.trim().parse::<i64>().expect("a numeric id") as u32
}

fn parse_time(s: &str) -> RawTime {
    let hex = s.trim().trim_start_matches("0x");
    let hex = hex.split_whitespace().next().unwrap_or("");
    let (lo, extra) = hex.split_once(':').unwrap_or((hex, "0"));
    (
        u32::from_str_radix(lo, 16).expect("a hex time"),
        u32::from_str_radix(extra, 16).expect("a hex time"),
    )
}

impl Debugfs {
    /// Runs `commands` in one debugfs process and returns each one's output.
    /// Panics if any command reports an error.
    pub fn run(&self, commands: &[String]) -> Vec<String> {
        if commands.is_empty() {
            return Vec::new();
        }
        let mut script = String::new();
        for c in commands {
            assert!(!c.contains('\n'), "one command per line: {c:?}");
            script.push_str(c);
            script.push('\n');
        }
        let file = self.scratch.path().join("commands");
        std::fs::write(&file, script).expect("writing the debugfs script");
        let out = Command::new(&self.bin)
            .arg("-f")
            .arg(&file)
            .arg(&self.image)
            .output()
            .expect("running debugfs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
            .collect();
        assert!(
            out.status.success() && errors.is_empty(),
            "debugfs failed ({}) on {}:\n{}",
            out.status,
            self.image.display(),
            errors.join("\n")
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut outputs: Vec<String> = Vec::with_capacity(commands.len());
        for line in stdout.split_inclusive('\n') {
            if let Some(cmd) = line.strip_prefix("debugfs: ") {
                let i = outputs.len();
                assert_eq!(
                    Some(cmd.trim_end_matches('\n')),
                    commands.get(i).map(String::as_str),
                    "debugfs echoed an unexpected command"
                );
                outputs.push(String::new());
            } else if let Some(o) = outputs.last_mut() {
                o.push_str(line);
            }
        }
        assert_eq!(outputs.len(), commands.len(), "debugfs ran every command");
        outputs
    }

    /// `ls -p` of each directory inode.
    pub fn list(&self, dirs: &[u64]) -> Vec<Vec<DirEntry>> {
        let cmds: Vec<String> = dirs.iter().map(|d| format!("ls -p <{d}>")).collect();
        self.run(&cmds)
            .iter()
            .map(|o| o.lines().filter_map(parse_ls_line).collect())
            .collect()
    }

    pub fn stat(&self, inode: u64) -> Stat {
        parse_stat(&self.run(&[format!("stat <{inode}>")])[0])
    }

    /// Where [`Debugfs::tree`] dumped the data of `inode`.
    pub fn dumped(&self, inode: u64) -> PathBuf {
        self.scratch.path().join(format!("data-{inode}"))
    }

    /// Reads the whole image back: every path from the root down, each
    /// inode's metadata, data, symlink target, device and xattrs. Also
    /// returns the parsed `stat` of every inode.
    pub fn tree(&self) -> (Tree, BTreeMap<u64, Stat>) {
        let mut entries: BTreeMap<Vec<u8>, DirEntry> = BTreeMap::new();
        entries.insert(
            Vec::new(),
            DirEntry {
                inode: 2,
                mode: 0,
                uid: 0,
                gid: 0,
                name: Vec::new(),
                size: None,
            },
        );
        let mut seen_dirs = BTreeSet::from([2u64]);
        let mut frontier: Vec<(Vec<u8>, u64)> = vec![(Vec::new(), 2)];
        while !frontier.is_empty() {
            let dirs: Vec<u64> = frontier.iter().map(|(_, i)| *i).collect();
            let listings = self.list(&dirs);
            let mut next = Vec::new();
            for ((path, _), listing) in frontier.iter().zip(listings) {
                for e in listing {
                    if e.name == b"." || e.name == b".." {
                        if path.is_empty() && e.name == b"." {
                            entries.insert(Vec::new(), e);
                        }
                        continue;
                    }
                    let p = if path.is_empty() {
                        e.name.clone()
                    } else {
                        [&path[..], b"/", &e.name].concat()
                    };
                    if e.mode & 0o170000 == 0o040000 {
                        assert!(
                            seen_dirs.insert(e.inode),
                            "directory inode {} is reachable twice (at {})",
                            e.inode,
                            String::from_utf8_lossy(&p)
                        );
                        next.push((p.clone(), e.inode));
                    }
                    entries.insert(p, e);
                }
            }
            frontier = next;
        }

        // One batch for every inode: stat, xattr names, data.
        let inodes: BTreeMap<u64, u32> = entries.values().map(|e| (e.inode, e.mode)).collect();
        let sizes: BTreeMap<u64, u64> = entries
            .values()
            .filter_map(|e| Some((e.inode, e.size?)))
            .collect();
        let mut cmds = Vec::new();
        for (&ino, &mode) in &inodes {
            cmds.push(format!("stat <{ino}>"));
            cmds.push(format!("ea_list <{ino}>"));
            // Fast symlinks (under 60 bytes) keep their target in the inode,
            // which `stat` shows; `dump` would read it as block numbers.
            let slow_link = mode & 0o170000 == 0o120000 && sizes.get(&ino) > Some(&59);
            if mode & 0o170000 == 0o100000 || slow_link {
                cmds.push(format!("dump <{ino}> {}", self.dumped(ino).display()));
            }
        }
        let outputs = self.run(&cmds);
        let mut stats = BTreeMap::new();
        let mut xattr_names: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (cmd, out) in cmds.iter().zip(&outputs) {
            let ino: u64 = cmd
                .split(['<', '>'])
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("an inode number");
            if cmd.starts_with("stat ") {
                stats.insert(ino, parse_stat(out));
            } else if cmd.starts_with("ea_list ") {
                xattr_names.insert(ino, parse_ea_list(out));
            }
        }

        // Second batch: xattr values, raw.
        let mut cmds = Vec::new();
        let mut files = Vec::new();
        for (ino, names) in &xattr_names {
            for (i, name) in names.iter().enumerate() {
                let f = self.scratch.path().join(format!("xattr-{ino}-{i}"));
                cmds.push(format!("ea_get -f {} <{ino}> {name}", f.display()));
                files.push((*ino, name.clone(), f));
            }
        }
        self.run(&cmds);
        let mut xattrs: BTreeMap<u64, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        for (ino, name, f) in files {
            let v = std::fs::read(&f).expect("an xattr value");
            xattrs.entry(ino).or_default().insert(name.into_bytes(), v);
        }

        let mut tree = Tree::default();
        for (path, e) in entries {
            let st = &stats[&e.inode];
            let mode = inodes[&e.inode];
            let kind = match mode & 0o170000 {
                0o040000 => Kind::Dir,
                0o100000 => Kind::File(self.content(e.inode)),
                0o120000 => Kind::Symlink(match &st.fast_link {
                    Some(t) => t.clone(),
                    None if st.size == 0 => Vec::new(),
                    None => std::fs::read(self.dumped(e.inode)).unwrap_or_else(|_| {
                        panic!("inode {}: a short symlink without a fast target", e.inode)
                    }),
                }),
                0o020000 => {
                    let (ma, mi) = st.device.expect("a device number");
                    Kind::Char(ma, mi)
                }
                0o060000 => {
                    let (ma, mi) = st.device.expect("a device number");
                    Kind::Block(ma, mi)
                }
                0o010000 => Kind::Fifo,
                0o140000 => Kind::Socket,
                m => panic!("inode {}: unknown type {m:o}", e.inode),
            };
            let node = Node {
                id: e.inode,
                kind,
                perm: (mode & 0o7777) as u16,
                uid: st.uid,
                gid: st.gid,
                times: st.times.expect("an inode with extra time fields"),
                xattrs: xattrs.get(&e.inode).cloned().unwrap_or_default(),
            };
            tree.paths.insert(path, node);
        }
        (tree, stats)
    }

    fn content(&self, inode: u64) -> Content {
        let f = self.dumped(inode);
        let len = std::fs::metadata(&f).expect("a dumped file").len();
        Content {
            len,
            data: (len <= KEEP_DATA_UP_TO).then(|| std::fs::read(&f).expect("a dumped file")),
        }
    }
}

fn parse_ls_line(line: &str) -> Option<DirEntry> {
    // /ino/mode/uid/gid/name/size/ ; names never contain '/'.
    let rest = line.strip_prefix('/')?;
    let mut it = rest.splitn(5, '/');
    let inode: u64 = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    let uid = parse_id(it.next()?);
    let gid = parse_id(it.next()?);
    let rest = it.next()?;
    let mut tail = rest.rsplitn(3, '/');
    let (_, size, name) = (tail.next()?, tail.next()?, tail.next()?);
    (inode != 0).then(|| DirEntry {
        inode,
        mode,
        uid,
        gid,
        name: name.as_bytes().to_vec(),
        size: size.parse().ok(),
    })
}

/// Attribute names from `ea_list`: lines `  NAME (LEN) = VALUE`.
fn parse_ea_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_once(" (").map(|(n, _)| n.to_owned()))
        .collect()
}

pub fn parse_stat(out: &str) -> Stat {
    let mut st = Stat::default();
    let mut times = Times::ZERO;
    let mut have_times = 0;
    let mut in_extents = false;
    // Each `Key: value` pair on a line, e.g. "User:     0   Group:     0   Size: 6".
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(key)? + key.len();
        Some(
            line[at..]
                .trim_start()
                .split("   ")
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        )
    };
    for line in out.lines() {
        if in_extents {
            st.extents
                .extend(line.split(", ").map(|s| s.trim().to_owned()));
            continue;
        }
        if line.starts_with("Inode:") {
            st.inode = field(line, "Inode:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            st.kind = field(line, "Type:").unwrap_or_default();
            st.perm = field(line, "Mode:")
                .and_then(|v| u16::from_str_radix(&v, 8).ok())
                .unwrap_or(0);
        } else if line.starts_with("User:") {
            st.uid = parse_id(&field(line, "User:").unwrap_or_default());
            st.gid = parse_id(&field(line, "Group:").unwrap_or_default());
            st.size = field(line, "Size:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if line.starts_with("Links:") {
            st.links = field(line, "Links:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if let Some(dest) = line.strip_prefix("Fast link dest: \"") {
            st.fast_link = Some(dest.strip_suffix('"').unwrap_or(dest).as_bytes().to_vec());
        } else if line.contains("Device major/minor number:") {
            let v = line.split("number:").nth(1).unwrap_or("");
            let v = v.split(" (hex").next().unwrap_or("").trim();
            let (ma, mi) = v.split_once(':').expect("major:minor");
            st.device = Some((
                ma.trim().parse().expect("a major"),
                mi.trim().parse().expect("a minor"),
            ));
        } else if line == "EXTENTS:" {
            in_extents = true;
        } else {
            let t = line.trim_start();
            for (key, slot) in [
                ("atime:", &mut times.atime),
                ("ctime:", &mut times.ctime),
                ("mtime:", &mut times.mtime),
                ("crtime:", &mut times.crtime),
            ] {
                if let Some(v) = t.strip_prefix(key) {
                    *slot = parse_time(v);
                    have_times += 1;
                }
            }
        }
    }
    st.times = (have_times == 4).then_some(times);
    st
}
