//! A directory on disk in, as if it had been archived first.
//!
//! Entries are visited in byte order of their names, parents before children,
//! so the same tree always gives the same image whatever the order the file
//! system lists it in. Hard links (same device and inode) become links.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::options::Options;
use crate::sink::BlockSink;
use crate::time::GoTime;
use crate::writer::{FileSpec, Writer, mode};

/// Converts the tree under `root` into an ext4 image written to `sink`.
///
/// The root directory's own metadata becomes the image root's. Ownership,
/// permissions, times, device numbers and extended attributes are kept.
pub fn convert_dir<S: BlockSink>(root: &Path, sink: S, options: &Options) -> Result<S, Error> {
    let mut w = Writer::new(sink, options);
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    // (path on disk, path in the image)
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((path, name)) = stack.pop() {
        let walk = |source| Error::Walk {
            path: path.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(walk)?;
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(target) = links.get(&key) {
                w.link(target, &name)?;
                continue;
            }
            links.insert(key, name.clone());
        }
        let typ = if ft.is_dir() {
            mode::DIR
        } else if ft.is_file() {
            mode::REG
        } else if ft.is_symlink() {
            mode::LNK
        } else if ft.is_char_device() {
            mode::CHR
        } else if ft.is_block_device() {
            mode::BLK
        } else if ft.is_fifo() {
            mode::FIFO
        } else {
            mode::SOCK
        };
        let rdev = meta.rdev();
        let mtime = GoTime::unix(meta.mtime(), meta.mtime_nsec());
        let mut f = FileSpec {
            link_name: if ft.is_symlink() {
                fs::read_link(&path)
                    .map_err(walk)?
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            },
            size: if ft.is_file() { meta.len() } else { 0 },
            mode: (meta.mode() as u16 & 0o7777) | typ,
            uid: meta.uid(),
            gid: meta.gid(),
            atime: GoTime::unix(meta.atime(), meta.atime_nsec()),
            ctime: GoTime::unix(meta.ctime(), meta.ctime_nsec()),
            mtime,
            crtime: mtime,
            devmajor: major(rdev),
            devminor: minor(rdev),
            xattrs: read_xattrs(&path).map_err(walk)?,
        };
        w.make_parents(&name)?;
        w.create(&name, &mut f)?;
        if ft.is_file() {
            let mut file = File::open(&path).map_err(walk)?;
            let mut left = f.size;
            while left > 0 {
                let n = file.read(&mut buf).map_err(walk)?;
                if n == 0 {
                    break;
                }
                let n = (n as u64).min(left) as usize;
                if let Some(chunk) = buf.get(..n) {
                    w.write_data(chunk)?;
                }
                left -= n as u64;
            }
            // A file that shrank while being read fails with a size mismatch.
        }
        if ft.is_dir() {
            let mut kids: Vec<(Vec<u8>, PathBuf)> = Vec::new();
            for e in fs::read_dir(&path).map_err(walk)? {
                let e = e.map_err(walk)?;
                kids.push((e.file_name().as_bytes().to_vec(), e.path()));
            }
            kids.sort();
            for (kid, kid_path) in kids.into_iter().rev() {
                let kid_name = if name.is_empty() {
                    kid
                } else {
                    [name.as_slice(), b"/", &kid].concat()
                };
                stack.push((kid_path, kid_name));
            }
        }
    }
    w.close()
}

fn read_xattrs(path: &Path) -> std::io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if !xattr::SUPPORTED_PLATFORM {
        return Ok(out);
    }
    let names = match xattr::list(path) {
        Ok(n) => n,
        // File systems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(95) => return Ok(out),
        Err(e) => return Err(e),
    };
    for n in names {
        if let Some(v) = xattr::get(path, &n)? {
            out.insert(n.as_bytes().to_vec(), v);
        }
    }
    Ok(out)
}

/// glibc's `gnu_dev_major`/`gnu_dev_minor`.
fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}
