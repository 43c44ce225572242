//! A tar reader that reads archives exactly as Go's `archive/tar` does.
//!
//! Written here rather than taken from the `tar` crate because the layer hash
//! is defined by what Go's reader hands hcsshim, and the crate reads some real
//! layers differently:
//! - it splits PAX records at newlines instead of by their length prefix, so a
//!   binary `security.capability` xattr (which often holds a 0x0a byte) makes
//!   it fail, or silently drop the records that follow;
//! - it skips data after links, devices and directories whose size field is
//!   non-zero, where Go reads the next header right after them.
//!
//! What follows Go (checked against Go 1.19's `reader.go` and `strconv.go`):
//! header checksums (signed or unsigned), USTAR/PAX, GNU and STAR layouts,
//! GNU long names and links, PAX records and their merge rules, global PAX
//! headers returned as entries, legacy NUL type flags, and the end-of-archive
//! rules. Sparse files are refused rather than expanded.

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use crate::time::GoTime;

const BLOCK: usize = 512;
/// Go's cap on GNU long names and PAX headers.
const MAX_SPECIAL_FILE_SIZE: u64 = 1 << 20;

/// One entry, with the fields Go's `tar.Header` reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub(crate) typeflag: u8,
    pub(crate) name: Vec<u8>,
    pub(crate) link_name: Vec<u8>,
    pub(crate) size: i64,
    pub(crate) mode: i64,
    pub(crate) uid: i64,
    pub(crate) gid: i64,
    pub(crate) mtime: GoTime,
    pub(crate) atime: GoTime,
    pub(crate) ctime: GoTime,
    pub(crate) devmajor: i64,
    pub(crate) devminor: i64,
    /// The PAX records that applied to the entry, empty values included.
    pub(crate) pax: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// How a tar stream ended. Go's `archive/tar` (and so hcsshim's
/// `tar2ext4`, which stops at the first `io.EOF` from `Reader.Next`) takes
/// all of these as a clean end; only the first is a complete archive.
///
/// What Go does, from `src/archive/tar/reader.go`: `readHeader` returns
/// `io.EOF` when it reads exactly 0 bytes where a header would start, or
/// one zero block and then nothing, or two zero blocks; the padding after
/// a member's data is read with `tryReadFull`, which gives `io.EOF` (not
/// `io.ErrUnexpectedEOF`) when the input stops inside it. A header, data
/// or a second zero block cut short is `io.ErrUnexpectedEOF`, an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TarEnd {
    /// Two zero blocks: a complete archive.
    Marker,
    /// One zero block, then the end of the input.
    LoneZeroBlock,
    /// The input stopped right after a member: no end-of-archive blocks.
    MissingMarker,
    /// The input stopped inside the zero padding after the last member's
    /// data (GNU tar calls such an archive truncated; Go does not).
    CutInPadding,
    /// The input was empty: 0 bytes. Go reads it as an archive with no
    /// members, so its image is the empty layer's.
    EmptyInput,
}

/// What reading a tar stream found, beyond its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TarReport {
    /// Members read, as Go's `Reader.Next` returns them (global PAX
    /// headers count; PAX and GNU long-name headers fold into the next).
    pub entries: u64,
    /// How the stream ended.
    pub end: TarEnd,
}

impl TarReport {
    /// Whether the input had no bytes at all. Its image is the empty
    /// layer's, as the reference gives it; a program may want to say so.
    pub fn is_empty_input(&self) -> bool {
        self.end == TarEnd::EmptyInput
    }

    /// Whether the archive ended with its end-of-archive marker.
    pub fn is_complete(&self) -> bool {
        self.end == TarEnd::Marker
    }
}

/// Why an archive cannot be read.
#[derive(Debug)]
pub(crate) enum TarError {
    /// The bytes are not a valid archive.
    Invalid(&'static str),
    /// The entry named uses a feature that is deliberately not supported.
    Unsupported(Vec<u8>, &'static str),
    /// Reading failed, or the archive ended early.
    Io(io::Error),
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

/// Reads entries and their data from a tar stream.
#[derive(Debug)]
pub(crate) struct TarReader<R> {
    r: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    done: bool,
    /// Bytes read from the input so far.
    read: u64,
    entries: u64,
    /// How the input ended, once it has.
    end: Option<TarEnd>,
}

fn field(b: &[u8; BLOCK], start: usize, len: usize) -> &[u8] {
    b.get(start..start + len).unwrap_or_default()
}

/// Go's `parseString`: up to the first NUL.
fn parse_string(b: &[u8]) -> Vec<u8> {
    b.split(|&c| c == 0).next().unwrap_or_default().to_vec()
}

/// Go's `parseOctal`: trims spaces and NULs, then base 8.
fn parse_octal(b: &[u8]) -> Result<i64, TarError> {
    let start = b.iter().position(|&c| c != b' ' && c != 0);
    let end = b.iter().rposition(|&c| c != b' ' && c != 0);
    let (Some(start), Some(end)) = (start, end) else {
        return Ok(0);
    };
    let trimmed = b.get(start..=end).unwrap_or_default();
    // Up to the first NUL, as `parseString`; no copy (this runs several
    // times per header).
    let s = trimmed.split(|&c| c == 0).next().unwrap_or_default();
    // Digits only: Rust's parser would also take a leading '+', Go's does not.
    if s.is_empty() || !s.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return Err(TarError::Invalid("invalid octal number in header"));
    }
    // Base 8 into a u64, failing on overflow as `u64::from_str_radix` does.
    s.iter()
        .try_fold(0u64, |v, &c| {
            v.checked_mul(8)?.checked_add(u64::from(c - b'0'))
        })
        .map(|x| x as i64)
        .ok_or(TarError::Invalid("invalid octal number in header"))
}

/// Go's `parseNumeric`: base-256 two's complement when the top bit is set,
/// octal otherwise.
pub(crate) fn parse_numeric(b: &[u8]) -> Result<i64, TarError> {
    let Some(&first) = b.first() else {
        return Ok(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(b);
    }
    let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let mut c = c ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 > 0 {
            return Err(TarError::Invalid("number in header overflows"));
        }
        x = x << 8 | u64::from(c);
    }
    if x >> 63 > 0 {
        return Err(TarError::Invalid("number in header overflows"));
    }
    Ok(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// Go's `parsePAXTime`: seconds, then up to nine fraction digits, truncated.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<GoTime> {
    let s = std::str::from_utf8(v).ok()?;
    let (ss, sn) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = ss.parse().ok()?;
    if sn.is_empty() {
        return Some(GoTime::unix(secs, 0));
    }
    if !sn.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = sn.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsecs: i64 = digits.parse().ok()?;
    if ss.starts_with('-') {
        return Some(GoTime::unix(secs, -nsecs));
    }
    Some(GoTime::unix(secs, nsecs))
}

/// Go's `parsePAX`: `"%d %s=%s\n"` records, each sized by its length prefix.
fn parse_pax(mut data: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, TarError> {
    const BAD: TarError = TarError::Invalid("malformed PAX record");
    let mut out = BTreeMap::new();
    let mut sparse_map_seen = false;
    while !data.is_empty() {
        let space = data.iter().position(|&c| c == b' ').ok_or(BAD)?;
        let len: usize = std::str::from_utf8(data.get(..space).ok_or(BAD)?)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|&n| n >= 5 && n as u64 <= data.len() as u64)
            .ok_or(BAD)? as usize;
        if len <= space + 1 {
            return Err(BAD);
        }
        let record = data.get(space + 1..len - 1).ok_or(BAD)?;
        if data.get(len - 1) != Some(&b'\n') {
            return Err(BAD);
        }
        let eq = record.iter().position(|&c| c == b'=').ok_or(BAD)?;
        let (key, value) = (
            record.get(..eq).ok_or(BAD)?,
            record.get(eq + 1..).ok_or(BAD)?,
        );
        let nul_checked: &[u8] = match key {
            b"path" | b"linkpath" | b"uname" | b"gname" => value,
            _ => key,
        };
        if key.is_empty() || nul_checked.contains(&0) {
            return Err(BAD);
        }
        if key == b"GNU.sparse.offset" || key == b"GNU.sparse.numbytes" {
            sparse_map_seen = true;
        } else {
            out.insert(key.to_vec(), value.to_vec());
        }
        data = data.get(len..).ok_or(BAD)?;
    }
    if sparse_map_seen {
        out.insert(b"GNU.sparse.map".to_vec(), Vec::new());
    }
    Ok(out)
}

/// Go's `mergePAX`: records override header fields; empty values are ignored.
fn merge_pax(e: &mut Entry, pax: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), TarError> {
    const BAD: TarError = TarError::Invalid("malformed PAX value");
    let int = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(BAD)
    };
    for (k, v) in &pax {
        if v.is_empty() {
            continue;
        }
        match k.as_slice() {
            b"path" => e.name.clone_from(v),
            b"linkpath" => e.link_name.clone_from(v),
            b"uid" => e.uid = int(v)?,
            b"gid" => e.gid = int(v)?,
            b"atime" => e.atime = parse_pax_time(v).ok_or(BAD)?,
            b"mtime" => e.mtime = parse_pax_time(v).ok_or(BAD)?,
            b"ctime" => e.ctime = parse_pax_time(v).ok_or(BAD)?,
            b"size" => e.size = int(v)?,
            _ => {}
        }
    }
    e.pax = pax;
    Ok(())
}

fn is_header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

impl<R: BufRead> TarReader<R> {
    pub(crate) fn new(r: R) -> Self {
        TarReader {
            r,
            remaining: 0,
            pad: 0,
            done: false,
            read: 0,
            entries: 0,
            end: None,
        }
    }

    /// The underlying reader.
    pub(crate) fn reader(&self) -> &R {
        &self.r
    }

    /// What was read; `None` until the end of the archive was reached.
    pub(crate) fn report(&self) -> Option<TarReport> {
        self.end.map(|end| TarReport {
            entries: self.entries,
            end,
        })
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(buf.get_mut(n..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.read += n as u64;
        Ok(n)
    }

    /// Skips up to `n` bytes without copying them; returns the bytes skipped.
    fn skip(&mut self, mut n: u64) -> io::Result<u64> {
        let mut skipped = 0;
        while n > 0 {
            let avail = match self.r.fill_buf() {
                Ok(b) => b.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail == 0 {
                break;
            }
            let k = n.min(avail as u64);
            self.r.consume(k as usize);
            skipped += k;
            n -= k;
        }
        self.read += skipped;
        Ok(skipped)
    }

    /// The next bytes of the current entry's data, straight from the
    /// reader's buffer (no copy); empty at the end of the data. Pass how
    /// many were used to [`TarReader::consume_data`].
    pub(crate) fn data_chunk(&mut self) -> io::Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        loop {
            match self.r.fill_buf() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        // Buffered now (or at the end): this call does not read again.
        let buf = self.r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = (buf.len() as u64).min(remaining) as usize;
        Ok(buf.get(..n).unwrap_or(buf))
    }

    /// Marks `n` bytes returned by [`TarReader::data_chunk`] as read.
    pub(crate) fn consume_data(&mut self, n: usize) {
        let n = (n as u64).min(self.remaining);
        self.r.consume(n as usize);
        self.read += n;
        self.remaining -= n;
    }

    /// Reads the whole data of a metadata entry (long name, PAX records).
    fn read_special(&mut self) -> Result<Vec<u8>, TarError> {
        if self.remaining > MAX_SPECIAL_FILE_SIZE {
            return Err(TarError::Invalid("GNU long name or PAX header over 1 MiB"));
        }
        let mut buf = vec![0u8; self.remaining as usize];
        let n = self.read_full(&mut buf)?;
        self.remaining -= n as u64;
        if n < buf.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        Ok(buf)
    }

    /// Skips what is left of the current entry and its padding. Go reads a
    /// short padding at the very end as the end of the archive.
    fn finish_entry(&mut self) -> Result<bool, TarError> {
        let rem = self.remaining;
        if self.skip(rem)? < rem {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.remaining = 0;
        let pad = self.pad;
        self.pad = 0;
        if self.skip(pad)? == pad {
            return Ok(true);
        }
        self.end = Some(TarEnd::CutInPadding);
        Ok(false)
    }

    /// Reads one header block; `None` at the end of the archive.
    fn read_header(&mut self) -> Result<Option<Entry>, TarError> {
        let mut blk = [0u8; BLOCK];
        match self.read_full(&mut blk)? {
            0 => {
                self.end = Some(if self.read == 0 {
                    TarEnd::EmptyInput
                } else {
                    TarEnd::MissingMarker
                });
                return Ok(None);
            }
            BLOCK => {}
            _ => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        }
        if blk.iter().all(|&c| c == 0) {
            match self.read_full(&mut blk)? {
                0 => {
                    self.end = Some(TarEnd::LoneZeroBlock);
                    return Ok(None);
                }
                BLOCK if blk.iter().all(|&c| c == 0) => {
                    self.end = Some(TarEnd::Marker);
                    return Ok(None);
                }
                BLOCK => return Err(TarError::Invalid("zero block followed by a header")),
                _ => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            }
        }

        let stored = parse_octal(field(&blk, 148, 8))
            .map_err(|_| TarError::Invalid("bad header checksum"))?;
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &c) in blk.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            unsigned += i64::from(c);
            signed += i64::from(c as i8);
        }
        if stored != unsigned && stored != signed {
            return Err(TarError::Invalid("bad header checksum"));
        }

        let magic = field(&blk, 257, 6);
        let version = field(&blk, 263, 2);
        let trailer = field(&blk, 508, 4);
        let ustar = magic == b"ustar\0";
        let star = ustar && trailer == b"tar\0";
        let gnu = magic == b"ustar " && version == b" \0";

        let mut e = Entry {
            typeflag: blk[156],
            name: parse_string(field(&blk, 0, 100)),
            link_name: parse_string(field(&blk, 157, 100)),
            size: parse_numeric(field(&blk, 124, 12))?,
            mode: parse_numeric(field(&blk, 100, 8))?,
            uid: parse_numeric(field(&blk, 108, 8))?,
            gid: parse_numeric(field(&blk, 116, 8))?,
            mtime: GoTime::unix(parse_numeric(field(&blk, 136, 12))?, 0),
            ..Entry::default()
        };
        if ustar || gnu {
            e.devmajor = parse_numeric(field(&blk, 329, 8))?;
            e.devminor = parse_numeric(field(&blk, 337, 8))?;
            let prefix = if star {
                e.atime = GoTime::unix(parse_numeric(field(&blk, 476, 12))?, 0);
                e.ctime = GoTime::unix(parse_numeric(field(&blk, 488, 12))?, 0);
                parse_string(field(&blk, 345, 131))
            } else if ustar {
                parse_string(field(&blk, 345, 155))
            } else {
                let a = field(&blk, 345, 12);
                let c = field(&blk, 357, 12);
                let parsed = (
                    (a.first() != Some(&0))
                        .then(|| parse_numeric(a))
                        .transpose(),
                    (c.first() != Some(&0))
                        .then(|| parse_numeric(c))
                        .transpose(),
                );
                match parsed {
                    (Ok(a), Ok(c)) => {
                        e.atime = a.map_or(GoTime::ZERO, |a| GoTime::unix(a, 0));
                        e.ctime = c.map_or(GoTime::ZERO, |c| GoTime::unix(c, 0));
                        Vec::new()
                    }
                    // Archives from Go before 1.8 put a USTAR prefix here.
                    _ => {
                        let p = parse_string(field(&blk, 345, 155));
                        if p.is_ascii() { p } else { Vec::new() }
                    }
                }
            };
            if !prefix.is_empty() {
                e.name = [prefix.as_slice(), b"/", &e.name].concat();
            }
        }
        Ok(Some(e))
    }

    fn start_data(&mut self, e: &Entry) -> Result<(), TarError> {
        let nb = if is_header_only(e.typeflag) {
            0
        } else {
            e.size
        };
        let nb = u64::try_from(nb).map_err(|_| TarError::Invalid("negative size"))?;
        self.remaining = nb;
        self.pad = (BLOCK as u64 - nb % BLOCK as u64) % BLOCK as u64;
        Ok(())
    }

    /// The next entry, with metadata entries folded in as Go folds them.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut long_name = Vec::new();
        let mut long_link = Vec::new();
        loop {
            if !self.finish_entry()? {
                self.done = true;
                return Ok(None);
            }
            let Some(mut e) = self.read_header()? else {
                self.done = true;
                return Ok(None);
            };
            self.start_data(&e)?;
            match e.typeflag {
                b'x' | b'g' => {
                    pax = parse_pax(&self.read_special()?)?;
                    if e.typeflag == b'g' {
                        // Go returns a global header as an entry of its own,
                        // with nothing but its name and records.
                        let mut g = Entry {
                            typeflag: b'g',
                            name: e.name,
                            ..Entry::default()
                        };
                        if merge_pax(&mut g, pax).is_err() {
                            return Err(TarError::Unsupported(
                                g.name,
                                "global PAX header with invalid records",
                            ));
                        }
                        let pax = std::mem::take(&mut g.pax);
                        self.entries += 1;
                        return Ok(Some(Entry {
                            typeflag: b'g',
                            name: g.name,
                            pax,
                            ..Entry::default()
                        }));
                    }
                }
                b'L' => long_name = parse_string(&self.read_special()?),
                b'K' => long_link = parse_string(&self.read_special()?),
                _ => {
                    merge_pax(&mut e, pax)?;
                    if !long_name.is_empty() {
                        e.name = long_name;
                    }
                    if !long_link.is_empty() {
                        e.link_name = long_link;
                    }
                    if e.typeflag == 0 {
                        e.typeflag = if e.name.ends_with(b"/") { b'5' } else { b'0' };
                    }
                    if e.typeflag == b'S' || e.pax.keys().any(|k| k.starts_with(b"GNU.sparse.")) {
                        return Err(TarError::Unsupported(e.name, "sparse file"));
                    }
                    // PAX may have changed the size.
                    self.start_data(&e)?;
                    self.entries += 1;
                    return Ok(Some(e));
                }
            }
        }
    }
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
        let ok: &[(&[u8], i64)] = &[
            (b"0000644\0", 0o644),
            (b" 17 \0", 0o17),
            (b"\0\0\0", 0),
            (b"", 0),
            (&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1),
            (&[0xff; 12], -1),
        ];
        for (input, want) in ok {
            assert_eq!(parse_numeric(input).ok(), Some(*want), "{input:?}");
        }
        for bad in [
            &b"9"[..],
            b"12 34",
            &[0x80, 0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(parse_numeric(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pax_records_are_sized_by_their_prefix_not_by_newlines() {
        let value = b"\x01\x00\x00\x02\n\x00";
        let rec = [&b"32 SCHILY.xattr.security.cap="[..], value, b"\n"].concat();
        assert_eq!(rec.len(), 36);
        let rec = [&b"36"[..], &rec[2..]].concat();
        let both = [rec.as_slice(), b"12 path=abc\n"].concat();
        let pax = parse_pax(&both).ok().unwrap_or_default();
        assert_eq!(
            pax.get(&b"SCHILY.xattr.security.cap"[..])
                .map(Vec::as_slice),
            Some(&value[..])
        );
        assert_eq!(pax.get(&b"path"[..]).map(Vec::as_slice), Some(&b"abc"[..]));
    }

    #[test]
    fn malformed_pax_records_are_refused() {
        for bad in [
            &b"10 path=x"[..],
            b"x path=abc\n",
            b"12 pathabc\n\n",
            b"3 =\n",
            b"99 path=short\n",
            b"11 =value\n",
            b"13 path=a\0b\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
