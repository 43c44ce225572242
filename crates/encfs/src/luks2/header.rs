//! The LUKS2 binary header and the reading of both metadata copies.
//!
//! Layout (cryptsetup `lib/luks2/luks2.h`, `struct luks2_hdr_disk`, all
//! integers big-endian): magic[6], version u16 (2), hdr_size u64 (binary
//! header + JSON area), seqid u64, label[48], checksum_alg[32], salt[64],
//! uuid[40], subsystem[48], hdr_offset u64, padding[184], csum[64], then
//! padding to 4096 bytes. The checksum is SHA-256 over the whole
//! `hdr_size` bytes with the csum field zeroed.
//!
//! Reading follows cryptsetup's `LUKS2_disk_hdr_read`
//! (`lib/luks2/luks2_disk_metadata.c`): the primary copy at 0; if it checks
//! out, the secondary at its `hdr_size`, otherwise every known secondary
//! offset in turn; of two good copies the higher seqid wins.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::json::Metadata;
use crate::Error;

/// Size of the binary header.
pub(crate) const BIN_LEN: usize = 4096;

/// The metadata sizes LUKS2 allows; also where a secondary copy may lie.
pub(crate) const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

/// Largest key slot area.
pub(crate) const MAX_KEYSLOTS_SIZE: u64 = 0x800_0000;

const MAGIC_1ST: &[u8; 6] = b"LUKS\xba\xbe";
const MAGIC_2ND: &[u8; 6] = b"SKUL\xba\xbe";

const LABEL: std::ops::Range<usize> = 24..72;
const CHECKSUM_ALG: std::ops::Range<usize> = 72..104;
const SALT: std::ops::Range<usize> = 104..168;
const UUID: std::ops::Range<usize> = 168..208;
const SUBSYSTEM: std::ops::Range<usize> = 208..256;
const CSUM: std::ops::Range<usize> = 448..512;

/// The fields of one binary header that matter after reading.
#[derive(Debug, Clone)]
pub(crate) struct BinHeader {
    pub(crate) hdr_size: u64,
    pub(crate) seqid: u64,
    pub(crate) label: [u8; 48],
    pub(crate) subsystem: [u8; 48],
    pub(crate) uuid: [u8; 40],
    pub(crate) salt: [u8; 64],
}

impl BinHeader {
    /// Both metadata copies as they lie on disk: `hdr_size` bytes each,
    /// the primary at 0 and the secondary right after it, with checksums.
    /// `salts` are the primary's and the secondary's.
    pub(crate) fn encode_pair(&self, salts: &[[u8; 64]; 2], json_area: &[u8]) -> [Vec<u8>; 2] {
        [
            self.encode(false, &salts[0], json_area),
            self.encode(true, &salts[1], json_area),
        ]
    }

    fn encode(&self, secondary: bool, salt: &[u8; 64], json_area: &[u8]) -> Vec<u8> {
        let mut out = vec![0; BIN_LEN];
        out[..6].copy_from_slice(if secondary { MAGIC_2ND } else { MAGIC_1ST });
        out[6..8].copy_from_slice(&2u16.to_be_bytes());
        out[8..16].copy_from_slice(&self.hdr_size.to_be_bytes());
        out[16..24].copy_from_slice(&self.seqid.to_be_bytes());
        out[LABEL].copy_from_slice(&self.label);
        out[CHECKSUM_ALG][..6].copy_from_slice(b"sha256");
        out[SALT].copy_from_slice(salt);
        out[UUID].copy_from_slice(&self.uuid);
        out[SUBSYSTEM].copy_from_slice(&self.subsystem);
        let offset = if secondary { self.hdr_size } else { 0 };
        out[256..264].copy_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(json_area);
        let sum = Sha256::digest(&out);
        out[CSUM][..32].copy_from_slice(&sum);
        out
    }
}

/// A NUL-terminated string field (cryptsetup ends each at its last byte).
pub(crate) fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// How reading one copy went.
enum CopyState {
    /// Checksum good and metadata valid.
    Good(Box<BinHeader>, Box<Metadata>),
    /// Checksum good (so is its `hdr_size`), metadata not: the error says
    /// why.
    BadJson(Error, u64),
    /// Not there, or its checksum is wrong.
    Bad(&'static str),
    /// The image ends inside it.
    Short,
}

/// Both copies, after choosing.
#[derive(Debug)]
pub(crate) struct HeaderSet {
    /// The copy in use.
    pub(crate) bin: BinHeader,
    pub(crate) meta: Metadata,
    /// The salts of the primary and the secondary copy; a fresh salt for a
    /// copy that was not valid.
    pub(crate) salts: [[u8; 64]; 2],
    /// The highest seqid of a valid copy.
    pub(crate) seqid: u64,
    /// Whether the primary copy was bad or out of date.
    pub(crate) primary_bad: bool,
    /// Whether the secondary copy was bad or out of date.
    pub(crate) secondary_bad: bool,
}

/// Reads `len` bytes at `offset`, or `None` when the image is shorter.
fn read_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    len: u64,
    file_len: u64,
) -> Result<Option<Vec<u8>>, Error> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => {}
        _ => return Ok(None),
    }
    let n = usize::try_from(len).map_err(|_| Error::BadHeader("header size too large"))?;
    let mut buf = vec![0; n];
    r.seek(SeekFrom::Start(offset))?;
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn be_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn array<const N: usize>(buf: &[u8], range: std::ops::Range<usize>) -> [u8; N] {
    buf.get(range)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

/// Reads and checks one copy at `offset`.
fn read_copy<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    secondary: bool,
    file_len: u64,
) -> Result<CopyState, Error> {
    let Some(mut bin) = read_at(r, offset, BIN_LEN as u64, file_len)? else {
        return Ok(CopyState::Short);
    };
    // cryptsetup's hdr_disk_sanity_check_pre.
    let magic = if secondary { MAGIC_2ND } else { MAGIC_1ST };
    if bin.get(..6) != Some(&magic[..]) {
        return Ok(CopyState::Bad("no LUKS2 header"));
    }
    if bin.get(6..8) != Some(&[0, 2][..]) {
        return Ok(CopyState::Bad("not LUKS version 2"));
    }
    if be_u64(&bin, 256) != offset {
        return Ok(CopyState::Bad(
            "header offset field does not match its place",
        ));
    }
    let hdr_size = be_u64(&bin, 8);
    if !HDR_SIZES.contains(&hdr_size) || (secondary && hdr_size != offset) {
        return Ok(CopyState::Bad("bad header size"));
    }
    if bin.get(CHECKSUM_ALG).map(c_string).as_deref() != Some("sha256") {
        return Ok(CopyState::Bad("checksum algorithm is not sha256"));
    }
    let json_len = hdr_size - BIN_LEN as u64;
    let Some(json_area) = read_at(r, offset + BIN_LEN as u64, json_len, file_len)? else {
        return Ok(CopyState::Short);
    };

    let stored: [u8; 32] = array(&bin, CSUM.start..CSUM.start + 32);
    if let Some(csum) = bin.get_mut(CSUM) {
        csum.fill(0);
    }
    let sum: [u8; 32] = Sha256::new()
        .chain_update(&bin)
        .chain_update(&json_area)
        .finalize()
        .into();
    if sum != stored {
        return Ok(CopyState::Bad("header checksum mismatch"));
    }

    let meta = match Metadata::parse(&json_area).and_then(|m| m.validate(json_len).map(|()| m)) {
        Ok(m) => m,
        Err(e) => return Ok(CopyState::BadJson(e, hdr_size)),
    };
    let header = BinHeader {
        hdr_size,
        seqid: be_u64(&bin, 16),
        label: array(&bin, LABEL),
        subsystem: array(&bin, SUBSYSTEM),
        uuid: array(&bin, UUID),
        salt: array(&bin, SALT),
    };
    Ok(CopyState::Good(Box::new(header), Box::new(meta)))
}

/// Reads both copies and picks one, as cryptsetup does.
pub(crate) fn read_headers<R: Read + Seek>(r: &mut R) -> Result<HeaderSet, Error> {
    let file_len = r.seek(SeekFrom::End(0))?;

    let primary = read_copy(r, 0, false, file_len)?;
    let secondary = match &primary {
        CopyState::Good(bin, _) => read_copy(r, bin.hdr_size, true, file_len)?,
        CopyState::BadJson(_, hdr_size) => read_copy(r, *hdr_size, true, file_len)?,
        CopyState::Bad(_) | CopyState::Short => {
            let mut found = CopyState::Bad("no LUKS2 header");
            for offset in HDR_SIZES {
                found = read_copy(r, offset, true, file_len)?;
                if matches!(found, CopyState::Good(..) | CopyState::BadJson(..)) {
                    break;
                }
            }
            found
        }
    };

    let (bin, meta, primary_bad, secondary_bad, seqid, salts) = match (primary, secondary) {
        (CopyState::Good(b1, m1), CopyState::Good(b2, m2)) => {
            let seqid = b1.seqid.max(b2.seqid);
            let salts = [b1.salt, b2.salt];
            if b2.seqid > b1.seqid {
                (*b2, *m2, true, false, seqid, salts)
            } else {
                let stale = b2.seqid < b1.seqid;
                (*b1, *m1, false, stale, seqid, salts)
            }
        }
        (CopyState::Good(b, m), _) => {
            let salts = [b.salt, fresh_salt()?];
            let seqid = b.seqid;
            (*b, *m, false, true, seqid, salts)
        }
        (_, CopyState::Good(b, m)) => {
            let salts = [fresh_salt()?, b.salt];
            let seqid = b.seqid;
            (*b, *m, true, false, seqid, salts)
        }
        (p, s) => return Err(no_header(p, s, r)?),
    };
    if file_len < meta.areas_end() {
        return Err(Error::BadHeader("image too short for its key slot area"));
    }
    Ok(HeaderSet {
        bin,
        meta,
        salts,
        seqid,
        primary_bad,
        secondary_bad,
    })
}

fn fresh_salt() -> Result<[u8; 64], Error> {
    let mut salt = [0; 64];
    crate::crypt::random_fill(&mut salt)?;
    Ok(salt)
}

/// The most telling error when neither copy is usable.
fn no_header<R: Read + Seek>(
    primary: CopyState,
    secondary: CopyState,
    r: &mut R,
) -> Result<Error, Error> {
    // A LUKS1 header has the same magic and version 1.
    let mut start = [0; 8];
    r.seek(SeekFrom::Start(0))?;
    let whole = r.read_exact(&mut start).is_ok();
    if whole && start == *b"LUKS\xba\xbe\x00\x01" {
        return Ok(Error::Unsupported("LUKS1 header".to_owned()));
    }
    // A short file that does not even start like LUKS is not a cut image.
    let magic = whole && start.starts_with(MAGIC_1ST);
    Ok(match (primary, secondary) {
        (CopyState::Short, _) if !magic => Error::BadHeader("no LUKS2 header"),
        (CopyState::BadJson(e, _), _) | (_, CopyState::BadJson(e, _)) => e,
        (CopyState::Short, _) | (_, CopyState::Short) => {
            Error::BadHeader("image ends inside its header")
        }
        (CopyState::Bad(why), _) => {
            if why == "no LUKS2 header" {
                Error::BadHeader(why)
            } else {
                Error::BadHeader("both header copies are corrupt")
            }
        }
        (CopyState::Good(..), _) => Error::BadHeader("both header copies are corrupt"),
    })
}
