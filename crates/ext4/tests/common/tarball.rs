//! Test tars, written entry by entry in the dialects that real layers use.
//!
//! Headers are filled field by field here (not through `tar::Header`'s
//! setters, which normalise paths and refuse negative times) so that a test
//! says exactly which bytes the converter gets.

use std::io::{self, Read, Write};

use tar::{Builder, EntryType, Header};

/// How an entry's metadata is spelled in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// A ustar header; a PAX extended header only for what does not fit.
    #[default]
    Ustar,
    /// A ustar header always preceded by a PAX header carrying the path
    /// and the modification time.
    Pax,
    /// A GNU header: `L`/`K` records for long names, base-256 numbers.
    Gnu,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    HardLink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One tar entry. Paths are written exactly as given (`./x`, `dir/` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds (`0..1e9`) since the epoch.
    pub mtime: (i64, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub dialect: Dialect,
}

/// The default modification time: 2023-11-14T22:13:20Z.
pub const MTIME: i64 = 1_700_000_000;

impl Entry {
    pub fn new(path: impl Into<String>, kind: Kind) -> Entry {
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) | Kind::HardLink(_) => 0o777,
            _ => 0o644,
        };
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: (MTIME, 0),
            xattrs: Vec::new(),
            dialect: Dialect::default(),
        }
    }
    pub fn dir(path: impl Into<String>) -> Entry {
        Entry::new(path, Kind::Dir)
    }
    pub fn file(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Entry {
        Entry::new(path, Kind::File(data.into()))
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Entry {
        Entry::new(path, Kind::Symlink(target.into()))
    }
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> Entry {
        Entry::new(path, Kind::HardLink(target.into()))
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: i64, nanos: u32) -> Entry {
        self.mtime = (secs, nanos);
        self
    }
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Entry {
        self.xattrs.push((name.to_owned(), value.into()));
        self
    }
    pub fn dialect(mut self, dialect: Dialect) -> Entry {
        self.dialect = dialect;
        self
    }
}

/// A whole archive in memory.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    for e in entries {
        append(&mut b, e).unwrap_or_else(|err| panic!("writing {:?}: {err}", e.path));
    }
    b.into_inner().expect("finishing the archive")
}

/// Appends one entry; a `Kind::File` carries its data.
pub fn append<W: Write>(b: &mut Builder<W>, e: &Entry) -> io::Result<()> {
    match &e.kind {
        Kind::File(data) => append_with_data(b, e, data.len() as u64, &mut &data[..]),
        _ => append_with_data(b, e, 0, &mut io::empty()),
    }
}

/// Appends a regular file whose `size` bytes are streamed from `data`, so a
/// large file never has to sit in memory. `e.kind` is ignored.
pub fn append_stream<W: Write>(
    b: &mut Builder<W>,
    e: &Entry,
    size: u64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let e = Entry {
        kind: Kind::File(Vec::new()),
        ..e.clone()
    };
    append_with_data(b, &e, size, data)
}

fn append_with_data<W: Write>(
    b: &mut Builder<W>,
    e: &Entry,
    size: u64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let gnu = e.dialect == Dialect::Gnu;
    let mut h = if gnu {
        Header::new_gnu()
    } else {
        Header::new_ustar()
    };
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let (ty, link) = match &e.kind {
        Kind::Dir => (EntryType::Directory, None),
        Kind::File(_) => (EntryType::Regular, None),
        Kind::Symlink(t) => (EntryType::Symlink, Some(t)),
        Kind::HardLink(t) => (EntryType::Link, Some(t)),
        Kind::Char(..) => (EntryType::Char, None),
        Kind::Block(..) => (EntryType::Block, None),
        Kind::Fifo => (EntryType::Fifo, None),
    };
    h.set_entry_type(ty);
    h.set_size(size);

    let path = e.path.as_bytes();
    let old = h.as_old_mut();
    if path.len() <= old.name.len() && e.dialect != Dialect::Pax {
        old.name[..path.len()].copy_from_slice(path);
    } else {
        // Something recognisable, as tar writers do; readers use the record.
        let cut = truncate(&e.path, old.name.len() - 1);
        old.name[..cut.len()].copy_from_slice(cut.as_bytes());
        if gnu {
            gnu_long(b, b'L', path)?;
        } else {
            pax.push(("path".into(), path.to_vec()));
        }
    }
    if let Some(target) = link {
        let t = target.as_bytes();
        if t.len() <= old.linkname.len() {
            old.linkname[..t.len()].copy_from_slice(t);
        } else if gnu {
            gnu_long(b, b'K', t)?;
        } else {
            pax.push(("linkpath".into(), t.to_vec()));
        }
    }

    put_numeric(&mut old.mode, i64::from(e.mode));
    for (field, value, key) in [(&mut old.uid, e.uid, "uid"), (&mut old.gid, e.gid, "gid")] {
        if fits_octal(field, value as i64) || gnu {
            put_numeric(field, value as i64);
        } else {
            put_numeric(field, 0);
            pax.push((key.into(), value.to_string().into_bytes()));
        }
    }
    let (secs, nanos) = e.mtime;
    if nanos == 0 && e.dialect != Dialect::Pax && (fits_octal(&old.mtime, secs) || gnu) {
        put_numeric(&mut old.mtime, secs);
    } else {
        put_numeric(&mut old.mtime, secs.clamp(0, 0o777_7777_7777));
        pax.push(("mtime".into(), pax_time(secs, nanos).into_bytes()));
    }

    if let Kind::Char(major, minor) | Kind::Block(major, minor) = e.kind {
        let (dmaj, dmin) = if gnu {
            let g = h.as_gnu_mut().expect("a GNU header");
            (&mut g.dev_major, &mut g.dev_minor)
        } else {
            let u = h.as_ustar_mut().expect("a ustar header");
            (&mut u.dev_major, &mut u.dev_minor)
        };
        put_numeric(dmaj, i64::from(major));
        put_numeric(dmin, i64::from(minor));
    }
    for (name, value) in &e.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    if e.dialect == Dialect::Pax && !pax.iter().any(|(k, _)| k == "path") {
        pax.push(("path".into(), path.to_vec()));
    }
    if !pax.is_empty() {
        append_pax(b, &pax)?;
    }
    h.set_cksum();
    b.append(&h, data)
}

/// Appends a PAX extended header (`x`) holding `records`, for the next entry.
pub fn append_pax<W: Write>(b: &mut Builder<W>, records: &[(String, Vec<u8>)]) -> io::Result<()> {
    let mut body = Vec::new();
    for (k, v) in records {
        body.extend_from_slice(&pax_record(k, v));
    }
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    let name = b"PaxHeaders.0/entry";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    h.set_cksum();
    b.append(&h, &body[..])
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A PAX time that Go's `parsePAXTime` reads back as exactly `(secs, nanos)`.
pub fn pax_time(secs: i64, nanos: u32) -> String {
    if nanos == 0 {
        secs.to_string()
    } else if secs >= 0 {
        format!("{secs}.{nanos:09}")
    } else {
        // -1.25 s is (secs -2, nanos 750_000_000).
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nanos)
    }
}

fn gnu_long<W: Write>(b: &mut Builder<W>, ty: u8, value: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    let name = b"././@LongLink";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(EntryType::new(ty));
    h.set_mode(0o644);
    h.set_size(value.len() as u64 + 1);
    h.set_cksum();
    b.append(&h, value.chain(&[0u8][..]))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn fits_octal(field: &[u8], v: i64) -> bool {
    let digits = field.len() as u32 - 1;
    v >= 0 && (v as u128) < 8u128.pow(digits)
}

/// Octal with a trailing NUL when it fits, else GNU base-256 (two's
/// complement, top bit set), which Go's reader accepts in every format.
pub fn put_numeric(field: &mut [u8], v: i64) {
    if fits_octal(field, v) {
        let digits = field.len() - 1;
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        let bytes = i128::from(v).to_be_bytes();
        let n = field.len();
        field.copy_from_slice(&bytes[bytes.len() - n..]);
        field[0] |= 0x80;
    }
}
