//! Tar streams in, with the reading rules of Go's `archive/tar`.
//!
//! The `tar` crate does the framing (checksums, GNU long names, PAX records,
//! sizes). On top of it this module applies what the reference converter sees
//! through Go's reader: legacy type flags, PAX times with nanoseconds, GNU
//! access and change times, xattrs from `SCHILY.xattr.*`, global PAX headers
//! surfacing as files, and whiteout conversion. Where the two readers would
//! frame an archive differently, the entry is refused rather than hashed.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use crate::error::Error;
use crate::sink::BlockSink;
use crate::time::GoTime;
use crate::writer::{FileSpec, Writer, mode, split_last};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How entry names that are absolute or contain `..` are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PathPolicy {
    /// Refuse the archive. The safe choice, and the default.
    #[default]
    Reject,
    /// Resolve them inside the image root, as the reference converter does
    /// (`/../etc/x` becomes `etc/x`). Use to reproduce the hash of such a layer.
    Clean,
}

/// Conversion settings. The defaults are the ones Azure uses for layer hashes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Largest image allowed, in bytes; also sizes the group descriptor table,
    /// so it changes the image. Azure uses 128 GiB.
    pub max_disk_size: u64,
    /// Turn OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) into overlayfs ones.
    pub convert_whiteouts: bool,
    /// What to do with absolute names and `..`.
    pub path_policy: PathPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_disk_size: 128 << 30,
            convert_whiteouts: true,
            path_policy: PathPolicy::Reject,
        }
    }
}

/// Wraps `input` in a gzip or zstd decoder when its first bytes say so.
pub fn decompress<'a, R: BufRead + 'a>(mut input: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(input)?))
    } else {
        Ok(Box::new(input))
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Converts an uncompressed tar stream into an ext4 image written to `sink`,
/// and returns the sink once the image is complete.
pub fn convert_tar<R: Read, S: BlockSink>(
    input: R,
    sink: S,
    options: &Options,
) -> Result<S, Error> {
    let mut archive = tar::Archive::new(input);
    let mut w = Writer::new(sink, options.max_disk_size);
    let mut last: Option<String> = None;
    let tar_err = |last: &Option<String>, source: io::Error| Error::Tar {
        entry: last.clone(),
        source,
    };
    let entries = archive.entries().map_err(|e| tar_err(&last, e))?;
    let mut buf = vec![0u8; 1 << 20];
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(&last, e))?;
        let header = entry.header().clone();
        let typeflag = header.entry_type().as_byte();
        let records = pax_records(&mut entry).map_err(|e| tar_err(&last, e))?;

        let mut name = entry.path_bytes().into_owned();
        let mut link_name = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        // Go keeps the header's value when a PAX record is empty.
        if name.is_empty() {
            name = header.path_bytes().into_owned();
        }
        if link_name.is_empty() {
            link_name = header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
        }
        if typeflag == b'g' {
            if let Some(p) = records.get(b"path".as_slice()).filter(|p| !p.is_empty()) {
                name.clone_from(p);
            }
        }
        last = Some(lossy(&name));
        let entry_name = || lossy(&name);

        if header.as_bytes().get(508..512) == Some(b"tar\0") && header.as_ustar().is_some() {
            return Err(Error::Unsupported {
                entry: entry_name(),
                what: "star-format header",
            });
        }
        if records.keys().any(|k| k.starts_with(b"GNU.sparse.")) {
            return Err(Error::Unsupported {
                entry: entry_name(),
                what: "PAX sparse file",
            });
        }
        // Go's legacy rule: a NUL type flag is a directory when the name ends in '/'.
        let typeflag = match typeflag {
            0 if name.ends_with(b"/") => b'5',
            0 => b'0',
            t => t,
        };
        let header_only = matches!(typeflag, b'1'..=b'6');
        if header_only && entry.size() != 0 {
            return Err(Error::Unsupported {
                entry: entry_name(),
                what: "link, device, fifo or directory with a non-zero size",
            });
        }

        check_path(&name, options)?;
        if typeflag == b'1' {
            check_path(&link_name, options)?;
        }

        w.make_parents(&name)?;

        if options.convert_whiteouts {
            let (dir, file) = split_last(&name);
            if let Some(target) = file.strip_prefix(WHITEOUT_PREFIX) {
                if file == OPAQUE_WHITEOUT {
                    let mut f = w.stat(dir)?;
                    f.xattrs
                        .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
                    w.create(dir, &mut f)?;
                } else {
                    let mut f = FileSpec {
                        mode: mode::CHR,
                        ..FileSpec::default()
                    };
                    w.create(&[dir, target].concat(), &mut f)?;
                }
                continue;
            }
        }

        if typeflag == b'1' {
            w.link(&link_name, &name)?;
            continue;
        }

        let mut f = if typeflag == b'g' {
            // Go hands a global header to the converter as a bare entry.
            FileSpec::default()
        } else {
            file_spec(&header, &records, link_name).map_err(|e| tar_err(&last, e))?
        };
        f.size = if typeflag == b'g' { 0 } else { entry.size() };
        let typ = match typeflag {
            b'0' => mode::REG,
            b'2' => mode::LNK,
            b'3' => mode::CHR,
            b'4' => mode::BLK,
            b'5' => mode::DIR,
            b'6' => mode::FIFO,
            _ => 0,
        };
        f.mode = (f.mode & !mode::TYPE_MASK) | typ;
        for (k, v) in &records {
            if let Some(x) = k.strip_prefix(XATTR_PREFIX) {
                f.xattrs.insert(x.to_vec(), v.clone());
            }
        }
        w.create(&name, &mut f)?;
        if typeflag != b'g' {
            loop {
                let n = entry.read(&mut buf).map_err(|e| tar_err(&last, e))?;
                let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                    break;
                };
                w.write_data(chunk)?;
            }
        }
    }
    w.close()
}

fn check_path(name: &[u8], options: &Options) -> Result<(), Error> {
    if options.path_policy == PathPolicy::Clean {
        return Ok(());
    }
    if name.starts_with(b"/") || name.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(Error::UnsafePath { entry: lossy(name) });
    }
    Ok(())
}

/// The PAX records that apply to this entry (last one wins, as in Go).
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            out.insert(ext.key_bytes().to_vec(), ext.value_bytes().to_vec());
        }
    }
    Ok(out)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The metadata Go's reader reports for a header plus its PAX records.
fn file_spec(
    header: &tar::Header,
    records: &BTreeMap<Vec<u8>, Vec<u8>>,
    link_name: Vec<u8>,
) -> io::Result<FileSpec> {
    let old = header.as_old();
    let num = |f: &[u8], what: &str| parse_numeric(f).ok_or_else(|| bad(what));
    let mut mtime = GoTime::unix(num(&old.mtime, "bad mtime")?, 0);
    let (mut atime, mut ctime) = (GoTime::ZERO, GoTime::ZERO);
    if let Some(gnu) = header.as_gnu() {
        let a = (gnu.atime[0] != 0).then(|| parse_numeric(&gnu.atime));
        let c = (gnu.ctime[0] != 0).then(|| parse_numeric(&gnu.ctime));
        // Go drops both when either fails to parse.
        if let (Some(None), _) | (_, Some(None)) = (a, c) {
        } else {
            if let Some(Some(a)) = a {
                atime = GoTime::unix(a, 0);
            }
            if let Some(Some(c)) = c {
                ctime = GoTime::unix(c, 0);
            }
        }
    }
    // Go parses device numbers for every non-V7 header, whatever the type.
    let dev = |f: &[u8]| num(f, "bad device number");
    let (devmajor, devminor) = if let Some(u) = header.as_ustar() {
        (dev(&u.dev_major)?, dev(&u.dev_minor)?)
    } else if let Some(g) = header.as_gnu() {
        (dev(&g.dev_major)?, dev(&g.dev_minor)?)
    } else {
        (0, 0)
    };
    let pax = |key: &str| records.get(key.as_bytes()).filter(|v| !v.is_empty());
    if let Some(v) = pax("mtime") {
        mtime = parse_pax_time(v).ok_or_else(|| bad("bad PAX mtime"))?;
    }
    if let Some(v) = pax("atime") {
        atime = parse_pax_time(v).ok_or_else(|| bad("bad PAX atime"))?;
    }
    if let Some(v) = pax("ctime") {
        ctime = parse_pax_time(v).ok_or_else(|| bad("bad PAX ctime"))?;
    }
    Ok(FileSpec {
        link_name,
        size: 0,
        mode: num(&old.mode, "bad mode")? as u16,
        uid: num(&old.uid, "bad uid")? as u32,
        gid: num(&old.gid, "bad gid")? as u32,
        atime,
        ctime,
        mtime,
        crtime: mtime,
        devmajor: devmajor as u32,
        devminor: devminor as u32,
        xattrs: BTreeMap::new(),
    })
}

/// Go's `parseNumeric`: base-256 when the top bit is set, else octal with
/// surrounding spaces and NULs ignored.
fn parse_numeric(b: &[u8]) -> Option<i64> {
    let (&first, rest) = b.split_first()?;
    if first & 0x80 != 0 {
        // Two's complement, sign in bit 6 of the first byte.
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in std::iter::once(&first).chain(rest).enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    let s = std::str::from_utf8(b).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(s, 8).ok()
}

/// Go's `parsePAXTime`: seconds, then up to nine fraction digits (truncated).
fn parse_pax_time(v: &[u8]) -> Option<GoTime> {
    let s = std::str::from_utf8(v).ok()?;
    let (ss, sn) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = ss.parse().ok()?;
    if sn.is_empty() {
        return Some(GoTime::unix(secs, 0));
    }
    if !sn.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = sn.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsecs: i64 = digits.parse().ok()?;
    if ss.starts_with('-') {
        return Some(GoTime::unix(secs, -nsecs));
    }
    Some(GoTime::unix(secs, nsecs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_like_go() {
        let cases: &[(&str, Option<GoTime>)] = &[
            ("1700000000", Some(GoTime::unix(1_700_000_000, 0))),
            ("1.5", Some(GoTime::unix(1, 500_000_000))),
            ("1.1234567891", Some(GoTime::unix(1, 123_456_789))),
            ("-1.5", Some(GoTime::unix(-2, 500_000_000))),
            ("5.", Some(GoTime::unix(5, 0))),
            ("1.x", None),
            ("", None),
            ("abc", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_pax_time(input.as_bytes()), *want, "{input}");
        }
    }

    #[test]
    fn numerics_parse_like_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b" 17 \0"), Some(0o17));
        assert_eq!(parse_numeric(b"\0\0\0"), Some(0));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Some(1)
        );
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        assert_eq!(parse_numeric(b"9"), None);
    }
}
