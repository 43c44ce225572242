//! LUKS2 headers and key slots that cryptsetup 2.x reads and writes.
//!
//! A LUKS2 image starts with two copies of the metadata (each a 4096-byte
//! binary header followed by a JSON area; 16 KiB per copy by default), then
//! the key slot area, then the data segment. This module writes and reads
//! the images of the recipe in DESIGN.md: one `crypt` segment with
//! `aes-xts-plain64`, key slots of type `luks2` (PBKDF2 or Argon2, the
//! `luks1` anti-forensic splitter with 4000 stripes), and a `pbkdf2`
//! digest of the volume key. Anything else in a header (other ciphers,
//! dm-integrity, an unfinished reencryption, LUKS1) is
//! [`Error::Unsupported`].
//!
//! Parsing treats the image as untrusted: sizes and offsets are checked
//! against each other and against the image's length before anything is
//! read or allocated, and a bad header is an error, never a panic. The
//! checks repeat cryptsetup's (see the `header` and `json` submodules), so
//! a header accepted here is one cryptsetup accepts.

mod digest;
mod header;
mod json;
mod keyslot;

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::Error;
use crate::crypt::{SectorCipher, VolumeKey, random_fill};

use self::digest::DigestParams;
use self::header::{BIN_LEN, BinHeader, MAX_KEYSLOTS_SIZE};
use self::json::{Metadata, U64Str};
use self::keyslot::{CIPHER, KdfParams, SlotParams};

/// Number of key slots LUKS2 has.
pub(crate) const KEYSLOTS_MAX: usize = 32;

/// Size of each metadata copy in a new header (binary header + JSON area).
const NEW_HDR_SIZE: u64 = 0x4000;

/// Largest data offset [`Luks2::format`] accepts: the header area is
/// returned in memory.
const MAX_DATA_OFFSET: u64 = 1 << 30;

/// How a new key slot derives its key from a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA256; cryptsetup needs at least 1000 iterations.
    Pbkdf2 {
        /// Iteration count.
        iterations: u32,
    },
    /// Argon2id (version 0x13); cryptsetup needs `time` >= 4, 32 KiB to
    /// 4 GiB of memory and 1 to 4 lanes.
    Argon2id {
        /// Passes over the memory.
        time: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Lanes (cryptsetup's `cpus`).
        parallel: u32,
    },
}

/// Parameters of a new LUKS2 header; the cipher is always
/// `aes-xts-plain64`, with AES-256 for a 64-byte volume key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Encryption sector size: 512, 1024, 2048 or 4096 bytes.
    pub sector_size: u32,
    /// Key derivation of key slot 0.
    pub kdf: Kdf,
    /// Where the data segment starts; a multiple of 4096, at least
    /// 290816 bytes (the two metadata copies and one key slot), at most
    /// 1 GiB. All bytes before it are header and key slot area.
    pub data_offset: u64,
    /// Label in the binary header (at most 47 bytes, no NUL).
    pub label: Option<String>,
    /// UUID; a random (version 4) one when `None`.
    pub uuid: Option<[u8; 16]>,
}

impl FormatOptions {
    /// The recipe's parameters (DESIGN.md): 4096-byte sectors, PBKDF2 with
    /// 1000 iterations and a 16 MiB data offset, as
    /// `cryptsetup luksFormat --type luks2 --cipher aes-xts-plain64
    /// --key-size 512 --sector-size 4096 --pbkdf pbkdf2
    /// --pbkdf-force-iterations 1000` makes. Use it with a 64-byte key.
    pub fn recipe() -> Self {
        FormatOptions {
            sector_size: 4096,
            kdf: Kdf::Pbkdf2 { iterations: 1000 },
            data_offset: 16 << 20,
            label: None,
            uuid: None,
        }
    }
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self::recipe()
    }
}

/// Whether and when a key slot is tried for a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyslotPriority {
    /// Only tried when named (cryptsetup priority 0); [`Luks2::unlock`]
    /// skips it.
    Ignore,
    /// Tried in order (priority 1, the default).
    Normal,
    /// Tried before the others (priority 2).
    Prefer,
}

impl KeyslotPriority {
    /// The name `cryptsetup luksDump` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyslotPriority::Ignore => "ignore",
            KeyslotPriority::Normal => "normal",
            KeyslotPriority::Prefer => "prefer",
        }
    }
}

/// One key slot as `dump` shows it: no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyslotInfo {
    /// Key slot number (0 to 31).
    pub id: usize,
    /// Key derivation: `pbkdf2`, `argon2id` or `argon2i`.
    pub kdf: String,
    /// Its parameters, for people: `hash sha256, iterations 1000` or
    /// `time 4, memory 32768 KiB, cpus 1`.
    pub kdf_params: String,
    /// Length of the volume key the slot holds, in bytes.
    pub key_size: usize,
    /// Byte offset of the slot's area in the image.
    pub area_offset: u64,
    /// Size of the slot's area in bytes.
    pub area_size: u64,
    /// When the slot is tried.
    pub priority: KeyslotPriority,
}

/// The data segment's parameters, checked.
#[derive(Debug, Clone)]
struct SegmentInfo {
    offset: u64,
    size: Option<u64>,
    iv_tweak: u64,
    sector_size: usize,
    cipher: String,
}

/// A parsed LUKS2 header: the binary header and JSON metadata in use, and
/// what is needed to write both copies back.
///
/// ```
/// use std::io::Cursor;
/// use confsum_encfs::{FormatOptions, Kdf, Luks2, SectorCipher, VolumeKey};
///
/// let key = VolumeKey::generate(64)?;
/// let opts = FormatOptions { kdf: Kdf::Pbkdf2 { iterations: 1000 }, ..FormatOptions::recipe() };
/// let (luks, mut image) = Luks2::format(&key, b"passphrase", &opts)?;
/// assert_eq!(image.len() as u64, luks.data_offset());
///
/// // One data sector after the header.
/// let mut sector = vec![0x42; luks.sector_size()];
/// SectorCipher::new(&key, luks.sector_size(), luks.iv_tweak())?.encrypt(0, &mut sector)?;
/// image.extend_from_slice(&sector);
///
/// let read = Luks2::read(Cursor::new(&image))?;
/// let (slot, unlocked) = read.unlock(Cursor::new(&image), b"passphrase")?;
/// assert_eq!((slot, unlocked.expose()), (0, key.expose()));
/// # Ok::<(), confsum_encfs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Luks2 {
    bin: BinHeader,
    meta: Metadata,
    salts: [[u8; 64]; 2],
    /// Highest seqid of a valid copy; the next write uses one more.
    seqid: u64,
    /// Whether the primary and the secondary copy were valid and current.
    copies_ok: [bool; 2],
    label: String,
    uuid: String,
    segment: SegmentInfo,
    slots: Vec<(usize, SlotParams)>,
}

impl Luks2 {
    /// Builds a new header for `key` (32 or 64 bytes) with key slot 0
    /// opened by `passphrase`. Returns it and the bytes of the whole
    /// header area `[0, data_offset)` to write at the start of the image:
    /// both metadata copies, then the key slot area (random bytes around
    /// key slot 0, as cryptsetup leaves it), then zeros.
    ///
    /// Segment 0 is `crypt`, at `data_offset`, size `dynamic`, `iv_tweak`
    /// 0, `aes-xts-plain64` with the given sector size; the volume key's
    /// digest is PBKDF2-SHA256 with 1000 iterations (the key is random, so
    /// the digest needs no work factor).
    pub fn format(
        key: &VolumeKey,
        passphrase: &[u8],
        opts: &FormatOptions,
    ) -> Result<(Self, Vec<u8>), Error> {
        let kdf = KdfParams::for_new_slot(&opts.kdf)?;
        // Checks the key length and the sector size.
        SectorCipher::new(key, opts.sector_size as usize, 0)?;

        let areas_start = 2 * NEW_HDR_SIZE;
        let data_offset = opts.data_offset;
        let min_offset = areas_start + keyslot::area_len(key.len());
        if data_offset % 4096 != 0 || !(min_offset..=MAX_DATA_OFFSET).contains(&data_offset) {
            return Err(Error::BadOptions(format!(
                "data offset {data_offset} (a multiple of 4096 from {min_offset} to {MAX_DATA_OFFSET})"
            )));
        }
        let keyslots_size = (data_offset - areas_start).min(MAX_KEYSLOTS_SIZE) / 4096 * 4096;

        let mut label = [0; 48];
        if let Some(text) = &opts.label {
            if text.len() > 47 || text.contains('\0') {
                return Err(Error::BadOptions(
                    "label longer than 47 bytes or with a NUL".to_owned(),
                ));
            }
            label[..text.len()].copy_from_slice(text.as_bytes());
        }
        let uuid_bytes = match opts.uuid {
            Some(u) => u,
            None => {
                let mut u = [0; 16];
                random_fill(&mut u)?;
                u[6] = (u[6] & 0x0f) | 0x40;
                u[8] = (u[8] & 0x3f) | 0x80;
                u
            }
        };
        let mut uuid = [0; 40];
        uuid[..36].copy_from_slice(uuid_text(&uuid_bytes).as_bytes());

        let (slot, material) = keyslot::create(key, passphrase, kdf, areas_start)?;
        let digest = digest::create(key, vec!["0".to_owned()], vec!["0".to_owned()])?;
        let segment = json::Segment {
            kind: "crypt".to_owned(),
            offset: U64Str(data_offset),
            size: "dynamic".to_owned(),
            iv_tweak: Some(U64Str(0)),
            encryption: Some(CIPHER.to_owned()),
            sector_size: Some(opts.sector_size),
            integrity: None,
            flags: None,
            extra: json::Extra::new(),
        };
        let json_size = NEW_HDR_SIZE - BIN_LEN as u64;
        let meta = Metadata {
            keyslots: [("0".to_owned(), slot)].into(),
            tokens: Default::default(),
            segments: [("0".to_owned(), segment)].into(),
            digests: [("0".to_owned(), digest)].into(),
            config: json::Config {
                json_size: U64Str(json_size),
                keyslots_size: U64Str(keyslots_size),
                flags: None,
                requirements: None,
                extra: json::Extra::new(),
            },
            extra: json::Extra::new(),
        };
        meta.validate(json_size)?;
        let json_area = meta.to_area(json_size)?;

        let bin = BinHeader {
            hdr_size: NEW_HDR_SIZE,
            seqid: 1,
            label,
            subsystem: [0; 48],
            uuid,
            salt: [0; 64],
        };
        let mut salts = [[0; 64]; 2];
        random_fill(&mut salts[0])?;
        random_fill(&mut salts[1])?;

        // Header area: zeros, the key slot area random, then key slot 0
        // and both metadata copies.
        let mut image = vec![0; data_offset as usize];
        let areas = areas_start as usize..(areas_start + keyslots_size) as usize;
        random_fill(&mut image[areas])?;
        let start = areas_start as usize;
        image[start..start + material.len()].copy_from_slice(&material);
        let [primary, secondary] = bin.encode_pair(&salts, &json_area);
        image[..primary.len()].copy_from_slice(&primary);
        let at = NEW_HDR_SIZE as usize;
        image[at..at + secondary.len()].copy_from_slice(&secondary);

        let luks = Luks2::from_parts(bin, meta, salts, 1, [true; 2])?;
        Ok((luks, image))
    }

    /// Parses the header area of an image: reads both metadata copies,
    /// checks their SHA-256 checksums and metadata, and uses the valid one
    /// with the higher seqid. When the primary copy is damaged, the
    /// secondary is looked for at every offset LUKS2 allows (16 KiB to
    /// 4 MiB), as cryptsetup does. Nothing is written; a damaged copy is
    /// repaired by the next [`Luks2::add_key`] or [`Luks2::remove_key`].
    pub fn read<R: Read + Seek>(mut r: R) -> Result<Self, Error> {
        let set = header::read_headers(&mut r)?;
        let ok = [!set.primary_bad, !set.secondary_bad];
        Luks2::from_parts(set.bin, set.meta, set.salts, set.seqid, ok)
    }

    /// Checks what this crate supports and caches the checked parameters.
    fn from_parts(
        bin: BinHeader,
        meta: Metadata,
        salts: [[u8; 64]; 2],
        seqid: u64,
        copies_ok: [bool; 2],
    ) -> Result<Self, Error> {
        let unsupported = |what: String| Err(Error::Unsupported(what));
        if let Some(reqs) = meta
            .config
            .requirements
            .as_ref()
            .and_then(|r| r.mandatory.as_ref())
            .filter(|m| !m.is_empty())
        {
            return unsupported(format!("requirements {reqs:?}"));
        }
        let seg = match (meta.segments.len(), meta.segments.get("0")) {
            (1, Some(seg)) => seg,
            _ => return unsupported("more than one data segment".to_owned()),
        };
        if seg.kind != "crypt" {
            return unsupported(format!("segment type {:?}", seg.kind));
        }
        if seg.integrity.is_some() {
            return unsupported("dm-integrity".to_owned());
        }
        let cipher = seg.encryption.clone().unwrap_or_default();
        if cipher != CIPHER {
            return unsupported(format!("cipher {cipher:?}"));
        }
        let sector_size = seg.sector_size.unwrap_or_default() as usize;
        if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
            return unsupported(format!("sector size {sector_size}"));
        }
        let offset = seg.offset.0;
        if offset == 0 {
            return unsupported("a detached header (data offset 0)".to_owned());
        }
        if offset < meta.areas_end() || offset % sector_size as u64 != 0 {
            return Err(Error::BadHeader("data segment overlaps the header"));
        }
        let size = match seg.size.as_str() {
            "dynamic" => None,
            // validate() has checked it.
            n => json::parse_decimal(n),
        };
        let segment = SegmentInfo {
            offset,
            size,
            iv_tweak: seg.iv_tweak.map(|t| t.0).unwrap_or_default(),
            sector_size,
            cipher,
        };
        for d in meta.digests.values() {
            DigestParams::from_json(d)?;
        }
        let mut slots = Vec::with_capacity(meta.keyslots.len());
        for (id, slot) in &meta.keyslots {
            let id = json::parse_id(id, KEYSLOTS_MAX).ok_or(Error::BadHeader("bad key slot"))?;
            slots.push((id, SlotParams::from_json(slot)?));
        }
        slots.sort_by_key(|(id, _)| *id);
        Ok(Luks2 {
            label: header::c_string(&bin.label),
            uuid: header::c_string(&bin.uuid),
            bin,
            meta,
            salts,
            seqid,
            copies_ok,
            segment,
            slots,
        })
    }

    /// Finds the volume key: tries each key slot (preferred ones first,
    /// never those with priority `ignore`), reading its area from `r`, and
    /// returns the first whose key matches the data segment's digest.
    ///
    /// A passphrase that opens nothing gives [`Error::WrongKey`] and
    /// nothing more specific.
    pub fn unlock<R: Read + Seek>(
        &self,
        r: R,
        passphrase: &[u8],
    ) -> Result<(usize, VolumeKey), Error> {
        self.unlock_with_progress(r, passphrase, &mut |_| {})
    }

    /// [`Luks2::unlock`], calling `before_slot` with each key slot it is
    /// about to try, before that slot's key derivation runs. An Argon2id
    /// slot made with cryptsetup's defaults (1 GiB, 4 lanes) takes seconds
    /// to derive; this is where a program says so.
    pub fn unlock_with_progress<R: Read + Seek>(
        &self,
        r: R,
        passphrase: &[u8],
        before_slot: &mut dyn FnMut(&KeyslotInfo),
    ) -> Result<(usize, VolumeKey), Error> {
        self.unlock_filtered(r, passphrase, None, before_slot)
    }

    /// Whether `passphrase` opens key slot `id` (whatever its priority).
    pub(crate) fn opens_slot<R: Read + Seek>(
        &self,
        mut r: R,
        passphrase: &[u8],
        id: usize,
    ) -> Result<bool, Error> {
        let Some((_, params)) = self.slots.iter().find(|(i, _)| *i == id) else {
            return Ok(false);
        };
        let digests = self.segment_digests(id)?;
        let key = params.open(&mut r, passphrase)?;
        Ok(digests.iter().any(|d| d.matches(&key)))
    }

    /// [`Luks2::unlock_with_progress`], never trying key slot `skip`.
    pub(crate) fn unlock_filtered<R: Read + Seek>(
        &self,
        mut r: R,
        passphrase: &[u8],
        skip: Option<usize>,
        before_slot: &mut dyn FnMut(&KeyslotInfo),
    ) -> Result<(usize, VolumeKey), Error> {
        let mut order: Vec<&(usize, SlotParams)> = self
            .slots
            .iter()
            .filter(|(_, p)| p.priority == KeyslotPriority::Prefer)
            .collect();
        order.extend(
            self.slots
                .iter()
                .filter(|(_, p)| p.priority == KeyslotPriority::Normal),
        );
        for (id, params) in order {
            if skip == Some(*id) {
                continue;
            }
            let digests = self.segment_digests(*id)?;
            if digests.is_empty() {
                continue;
            }
            before_slot(&params.info(*id));
            let key = params.open(&mut r, passphrase)?;
            if digests.iter().any(|d| d.matches(&key)) {
                return Ok((*id, key));
            }
        }
        Err(Error::WrongKey)
    }

    /// The digests that link key slot `id` to segment 0.
    fn segment_digests(&self, id: usize) -> Result<Vec<DigestParams>, Error> {
        let id = id.to_string();
        self.meta
            .digests
            .values()
            .filter(|d| d.keyslots.contains(&id) && d.segments.iter().any(|s| s == "0"))
            .map(DigestParams::from_json)
            .collect()
    }

    /// Byte offset of the data segment.
    pub fn data_offset(&self) -> u64 {
        self.segment.offset
    }

    /// Encryption sector size of the data segment, in bytes.
    pub fn sector_size(&self) -> usize {
        self.segment.sector_size
    }

    /// Added to every IV of the data segment (see [`SectorCipher`]).
    pub fn iv_tweak(&self) -> u64 {
        self.segment.iv_tweak
    }

    /// The data segment's cipher; always `aes-xts-plain64`.
    pub fn cipher(&self) -> &str {
        &self.segment.cipher
    }

    /// The UUID as the header spells it (`xxxxxxxx-xxxx-...`).
    pub fn uuid(&self) -> String {
        self.uuid.clone()
    }

    /// The label, if the header has one.
    pub fn label(&self) -> Option<&str> {
        Some(self.label.as_str()).filter(|l| !l.is_empty())
    }

    /// The data segment's size in bytes; `None` when it runs to the end of
    /// the device (`dynamic`).
    pub fn segment_size(&self) -> Option<u64> {
        self.segment.size
    }

    /// Whether the primary and the secondary metadata copy were valid and
    /// current when read. A `false` is repaired by the next write.
    pub fn header_copies_ok(&self) -> [bool; 2] {
        self.copies_ok
    }

    /// The key slots in use, by number.
    pub fn keyslots(&self) -> Vec<KeyslotInfo> {
        self.slots.iter().map(|(id, p)| p.info(*id)).collect()
    }

    /// Adds a key slot opened by `new_passphrase`, after unlocking with
    /// `existing`, in the lowest free slot and the first gap of the key
    /// slot area that fits it. Writes the slot's area, then both metadata
    /// copies (seqid + 1), into `f` in place. Returns the slot number.
    ///
    /// `f` must hold the header this value was read from (checked by its
    /// seqid and UUID). Nothing here serializes writers or makes the
    /// writes durable: for an image file use [`LockedImage`], which does
    /// both.
    ///
    /// [`LockedImage`]: crate::LockedImage
    pub fn add_key<F: Read + Write + Seek>(
        &mut self,
        mut f: F,
        existing: &[u8],
        new_passphrase: &[u8],
        kdf: &Kdf,
    ) -> Result<usize, Error> {
        self.add_key_synced(&mut f, existing, new_passphrase, kdf, &mut |f| f.flush())
    }

    /// [`Luks2::add_key`], calling `sync` after the key material and after
    /// each metadata copy, so that each is on disk before the next starts.
    pub(crate) fn add_key_synced<F: Read + Write + Seek>(
        &mut self,
        f: &mut F,
        existing: &[u8],
        new_passphrase: &[u8],
        kdf: &Kdf,
        sync: &mut dyn FnMut(&mut F) -> io::Result<()>,
    ) -> Result<usize, Error> {
        let kdf = KdfParams::for_new_slot(kdf)?;
        self.check_on_disk(f)?;
        let (_, key) = self.unlock(&mut *f, existing)?;
        let slot = (0..KEYSLOTS_MAX)
            .find(|id| !self.meta.keyslots.contains_key(&id.to_string()))
            .ok_or(Error::NoFreeKeyslot)?;
        let offset = self
            .find_area(keyslot::area_len(key.len()))
            .ok_or(Error::NoFreeKeyslot)?;
        let (json_slot, material) = keyslot::create(&key, new_passphrase, kdf, offset)?;

        let mut meta = self.meta.clone();
        let id = slot.to_string();
        meta.keyslots.insert(id.clone(), json_slot);
        for d in meta.digests.values_mut() {
            if d.segments.iter().any(|s| s == "0") && DigestParams::from_json(d)?.matches(&key) {
                d.keyslots.push(id.clone());
            }
        }
        // Fail before writing anything if the metadata would not fit.
        meta.to_area(self.json_size())?;

        // The area is free in the header on disk, so a crash while it is
        // written leaves the old key set; it must be on disk before a
        // header copy points at it.
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&material)?;
        sync(f)?;
        self.write_metadata(f, meta, sync)?;
        Ok(slot)
    }

    /// Removes key slot `slot`: overwrites its area with random bytes,
    /// drops it from the key slots, digests and tokens, and writes both
    /// metadata copies (seqid + 1) into `f` in place. Refuses to remove the
    /// last key slot unless `allow_last`; without a key slot the volume
    /// key is lost for good.
    ///
    /// As with [`Luks2::add_key`], an image file is better changed through
    /// [`LockedImage`], which serializes writers, checks that a remaining
    /// key opens the image, and makes each step durable.
    ///
    /// [`LockedImage`]: crate::LockedImage
    pub fn remove_key<F: Read + Write + Seek>(
        &mut self,
        mut f: F,
        slot: usize,
        allow_last: bool,
    ) -> Result<(), Error> {
        self.remove_key_synced(&mut f, slot, allow_last, &mut |f| f.flush())
    }

    /// [`Luks2::remove_key`], calling `sync` after the wipe and after each
    /// metadata copy.
    pub(crate) fn remove_key_synced<F: Read + Write + Seek>(
        &mut self,
        f: &mut F,
        slot: usize,
        allow_last: bool,
        sync: &mut dyn FnMut(&mut F) -> io::Result<()>,
    ) -> Result<(), Error> {
        let id = slot.to_string();
        let area = match self.meta.keyslots.get(&id) {
            Some(s) => s.area.clone(),
            None => return Err(Error::NoSuchKeyslot(slot)),
        };
        if self.meta.keyslots.len() == 1 && !allow_last {
            return Err(Error::LastKeyslot);
        }
        self.check_on_disk(f)?;

        let mut meta = self.meta.clone();
        meta.keyslots.remove(&id);
        for d in meta.digests.values_mut() {
            d.keyslots.retain(|k| *k != id);
        }
        meta.digests
            .retain(|_, d| !(d.keyslots.is_empty() && d.segments.is_empty()));
        for token in meta.tokens.values_mut() {
            if let Some(slots) = token.get_mut("keyslots").and_then(|k| k.as_array_mut()) {
                slots.retain(|k| k.as_str() != Some(id.as_str()));
            }
        }
        meta.to_area(self.json_size())?;

        // Wipe first, then drop the slot from the header, as cryptsetup's
        // LUKS2_keyslot_wipe does: a crash in between leaves a slot whose
        // key no longer opens anything, which is the new key set, and the
        // key material is never left behind unreferenced.
        f.seek(SeekFrom::Start(area.offset.0))?;
        let mut left = area.size.0;
        let mut noise = vec![0; 1 << 20];
        while left > 0 {
            let n = left.min(noise.len() as u64) as usize;
            random_fill(&mut noise[..n])?;
            f.write_all(&noise[..n])?;
            left -= n as u64;
        }
        sync(f)?;
        self.write_metadata(f, meta, sync)
    }

    fn json_size(&self) -> u64 {
        self.bin.hdr_size - BIN_LEN as u64
    }

    /// Offset of the first gap in the key slot area that holds `len`
    /// bytes (cryptsetup's `LUKS2_find_area_gap`).
    fn find_area(&self, len: u64) -> Option<u64> {
        let mut areas: Vec<(u64, u64)> = self
            .meta
            .keyslots
            .values()
            .map(|s| (s.area.offset.0, s.area.size.0))
            .collect();
        areas.sort_unstable();
        let mut offset = 2 * self.bin.hdr_size;
        for (start, size) in areas {
            if offset.checked_add(len)? <= start {
                break;
            }
            offset = offset.max(start.checked_add(size)?);
        }
        (offset.checked_add(len)? <= self.meta.areas_end()).then_some(offset)
    }

    /// Refuses to write over a header other than the one read.
    fn check_on_disk<F: Read + Seek>(&self, f: &mut F) -> Result<(), Error> {
        let now = header::read_headers(f)?;
        if now.seqid != self.seqid || now.bin.uuid != self.bin.uuid {
            return Err(Error::HeaderChanged);
        }
        Ok(())
    }

    /// Writes `meta` as both metadata copies with the next seqid, then
    /// makes it this value's metadata.
    ///
    /// The order is cryptsetup's (`LUKS2_disk_hdr_write`): the primary
    /// copy, synced, then the secondary, synced, both with the same new
    /// seqid. A reader takes the valid copy with the higher seqid, so a
    /// crash at any point leaves the old metadata (primary torn: its
    /// checksum fails and the old secondary is used) or the new one
    /// (primary whole: its seqid is higher than the old secondary's).
    fn write_metadata<F: Write + Seek>(
        &mut self,
        f: &mut F,
        meta: Metadata,
        sync: &mut dyn FnMut(&mut F) -> io::Result<()>,
    ) -> Result<(), Error> {
        let json_area = meta.to_area(self.json_size())?;
        let mut bin = self.bin.clone();
        bin.seqid = self
            .seqid
            .checked_add(1)
            .ok_or(Error::BadHeader("seqid overflow"))?;
        let [primary, secondary] = bin.encode_pair(&self.salts, &json_area);
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&primary)?;
        sync(f)?;
        f.seek(SeekFrom::Start(bin.hdr_size))?;
        f.write_all(&secondary)?;
        sync(f)?;
        let seqid = bin.seqid;
        *self = Luks2::from_parts(bin, meta, self.salts, seqid, [true; 2])?;
        Ok(())
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase.
fn uuid_text(u: &[u8; 16]) -> String {
    let hex = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::io::Cursor;

    use super::*;

    fn small() -> FormatOptions {
        FormatOptions {
            sector_size: 512,
            data_offset: 1 << 20,
            uuid: Some([0xab; 16]),
            label: Some("test".to_owned()),
            ..FormatOptions::recipe()
        }
    }

    #[test]
    fn format_read_unlock() {
        let key = VolumeKey::generate(64).unwrap();
        let (luks, image) = Luks2::format(&key, b"pw", &small()).unwrap();
        assert_eq!(image.len(), 1 << 20);
        let read = Luks2::read(Cursor::new(&image)).unwrap();
        assert_eq!(read.uuid(), "abababab-abab-abab-abab-abababababab");
        assert_eq!(read.label(), Some("test"));
        assert_eq!(read.data_offset(), 1 << 20);
        assert_eq!(read.sector_size(), 512);
        assert_eq!(read.segment_size(), None);
        assert_eq!(read.keyslots(), luks.keyslots());
        let (slot, k) = read.unlock(Cursor::new(&image), b"pw").unwrap();
        assert_eq!((slot, k.expose()), (0, key.expose()));
        assert!(matches!(
            read.unlock(Cursor::new(&image), b"pW"),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn add_and_remove_keys() {
        let key = VolumeKey::generate(32).unwrap();
        let (mut luks, image) = Luks2::format(&key, b"a", &small()).unwrap();
        let mut f = Cursor::new(image);
        let kdf = Kdf::Pbkdf2 { iterations: 1000 };
        assert!(matches!(
            luks.add_key(&mut f, b"x", b"b", &kdf),
            Err(Error::WrongKey)
        ));
        assert_eq!(luks.add_key(&mut f, b"a", b"b", &kdf).unwrap(), 1);
        assert_eq!(luks.add_key(&mut f, b"b", b"c", &kdf).unwrap(), 2);
        let areas: Vec<u64> = luks.keyslots().iter().map(|k| k.area_offset).collect();
        assert_eq!(areas, [32768, 32768 + 131_072, 32768 + 2 * 131_072]);

        let read = Luks2::read(&mut f).unwrap();
        assert_eq!(read.seqid, 3);
        assert_eq!(read.unlock(&mut f, b"c").unwrap().0, 2);

        luks.remove_key(&mut f, 1, false).unwrap();
        assert!(matches!(
            luks.remove_key(&mut f, 1, false),
            Err(Error::NoSuchKeyslot(1))
        ));
        let read = Luks2::read(&mut f).unwrap();
        assert!(matches!(read.unlock(&mut f, b"b"), Err(Error::WrongKey)));
        assert_eq!(read.unlock(&mut f, b"a").unwrap().0, 0);
        // The freed area is reused.
        assert_eq!(luks.add_key(&mut f, b"c", b"d", &kdf).unwrap(), 1);
        assert_eq!(luks.keyslots()[1].area_offset, 32768 + 131_072);

        luks.remove_key(&mut f, 0, false).unwrap();
        luks.remove_key(&mut f, 1, false).unwrap();
        assert!(matches!(
            luks.remove_key(&mut f, 2, false),
            Err(Error::LastKeyslot)
        ));
        luks.remove_key(&mut f, 2, true).unwrap();
        let read = Luks2::read(&mut f).unwrap();
        assert!(read.keyslots().is_empty());
        assert!(matches!(read.unlock(&mut f, b"c"), Err(Error::WrongKey)));

        // A stale value refuses to write.
        let mut stale = Luks2::read(&mut f).unwrap();
        stale.seqid -= 1;
        assert!(matches!(
            stale.add_key(&mut f, b"c", b"d", &kdf),
            Err(Error::HeaderChanged)
        ));
    }

    #[test]
    fn format_options_are_checked() {
        let key = VolumeKey::generate(64).unwrap();
        let bad = [
            FormatOptions {
                sector_size: 8192,
                ..small()
            },
            FormatOptions {
                data_offset: 4096 * 70,
                ..small()
            },
            FormatOptions {
                data_offset: (1 << 20) + 512,
                ..small()
            },
            FormatOptions {
                label: Some("x".repeat(48)),
                ..small()
            },
            FormatOptions {
                kdf: Kdf::Pbkdf2 { iterations: 10 },
                ..small()
            },
        ];
        for opts in bad {
            assert!(Luks2::format(&key, b"", &opts).is_err(), "{opts:?}");
        }
        let key48 = VolumeKey::generate(48).unwrap();
        assert!(matches!(
            Luks2::format(&key48, b"", &small()),
            Err(Error::Unsupported(_))
        ));
    }
}
