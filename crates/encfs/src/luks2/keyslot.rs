//! LUKS2 key slots of type `luks2`: key derivation, the anti-forensic
//! splitter, and the encrypted key material.
//!
//! As cryptsetup does it (`lib/luks2/luks2_keyslot_luks2.c`,
//! `lib/luks1/af.c`): the passphrase and the slot's 32-byte salt give a key
//! of `area.key_size` bytes (PBKDF2 or Argon2); the volume key is split into
//! 4000 stripes (AF type `luks1`) whose material, padded with zeros to whole
//! 512-byte sectors, is encrypted with `aes-xts-plain64` under the derived
//! key, with 512-byte sectors and IVs counted from the start of the area.
//!
//! The splitter: all stripes but the last are random; a buffer starts at
//! zero and, for each of them, is XORed with the stripe and then diffused;
//! the last stripe is the buffer XOR the key. Diffusion replaces each
//! digest-sized chunk `c` (index `i`) of the buffer with
//! `H(be32(i) || c)`, the last chunk cut to its length.

use std::io::{self, Read, Seek, SeekFrom};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use super::json::{self, U64Str};
use super::{Kdf, KeyslotInfo, KeyslotPriority};
use crate::Error;
use crate::crypt::{SectorCipher, VolumeKey, random_fill};

/// Stripes of the splitter; cryptsetup uses no other number.
pub(crate) const STRIPES: u32 = 4000;

/// Length of key slot and digest salts.
pub(crate) const SALT_LEN: usize = 32;

/// The one cipher this crate supports, for data and key slots alike.
pub(crate) const CIPHER: &str = "aes-xts-plain64";

/// Largest Argon2 memory cryptsetup allows (4 GiB, in KiB).
const ARGON2_MAX_MEMORY: u32 = 4 * 1024 * 1024;

/// Most Argon2 lanes accepted when reading (cryptsetup writes at most 4).
const ARGON2_MAX_CPUS: u32 = 64;

/// Bytes of split key material for a key of `key_len` bytes, as stored:
/// whole 512-byte sectors.
pub(crate) fn material_len(key_len: usize) -> usize {
    (key_len * STRIPES as usize).div_ceil(512) * 512
}

/// Size of a new key slot's area: the material in whole 4096-byte blocks
/// (258048 bytes for a 64-byte key).
pub(crate) fn area_len(key_len: usize) -> u64 {
    ((key_len * STRIPES as usize).div_ceil(4096) * 4096) as u64
}

/// A hash that LUKS2 names in the JSON metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    pub(crate) fn from_name(name: &str) -> Result<Self, Error> {
        match name {
            "sha256" => Ok(Hash::Sha256),
            "sha512" => Ok(Hash::Sha512),
            other => Err(Error::Unsupported(format!("hash {other:?}"))),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha512 => "sha512",
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// PBKDF2-HMAC with this hash.
    pub(crate) fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, out),
        }
    }

    /// Diffuses `buf` in place (see the module comment).
    fn diffuse(self, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(self.len()).enumerate() {
            let counter = (i as u32).to_be_bytes();
            match self {
                Hash::Sha256 => diffuse_chunk::<Sha256>(counter, chunk),
                Hash::Sha512 => diffuse_chunk::<Sha512>(counter, chunk),
            }
        }
    }
}

/// Splits `key` into `material_len(key.len())` bytes (the stripes, then
/// zeros).
pub(crate) fn af_split(key: &[u8], hash: Hash) -> Result<Zeroizing<Vec<u8>>, Error> {
    let n = key.len();
    let stripes = STRIPES as usize;
    let mut out = Zeroizing::new(vec![0; material_len(n)]);
    let (random, rest) = out.split_at_mut(n * (stripes - 1));
    random_fill(random)?;
    let mut buf = Zeroizing::new(vec![0; n]);
    for stripe in random.chunks_exact(n) {
        buf.iter_mut().zip(stripe).for_each(|(b, s)| *b ^= s);
        hash.diffuse(&mut buf);
    }
    for ((o, b), k) in rest.iter_mut().zip(buf.iter()).zip(key) {
        *o = b ^ k;
    }
    Ok(out)
}

/// Recovers a key of `n` bytes from split material.
pub(crate) fn af_merge(material: &[u8], n: usize, hash: Hash) -> Zeroizing<Vec<u8>> {
    let stripes = STRIPES as usize;
    let mut buf = Zeroizing::new(vec![0; n]);
    let mut chunks = material.chunks_exact(n).take(stripes);
    for stripe in chunks.by_ref().take(stripes - 1) {
        buf.iter_mut().zip(stripe).for_each(|(b, s)| *b ^= s);
        hash.diffuse(&mut buf);
    }
    if let Some(last) = chunks.next() {
        buf.iter_mut().zip(last).for_each(|(b, s)| *b ^= s);
    }
    buf
}

/// A key derivation with its parameters, as read or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KdfParams {
    Pbkdf2 {
        hash: Hash,
        iterations: u32,
    },
    Argon2 {
        /// Argon2id, or else Argon2i.
        id: bool,
        time: u32,
        memory: u32,
        cpus: u32,
    },
}

impl KdfParams {
    /// The parameters of a new key slot, checked against cryptsetup's
    /// limits (PBKDF2 at least 1000 iterations; Argon2 at least 4 passes,
    /// 32 KiB to 4 GiB of memory, 1 to 4 lanes).
    pub(crate) fn for_new_slot(kdf: &Kdf) -> Result<Self, Error> {
        match *kdf {
            Kdf::Pbkdf2 { iterations } => {
                if iterations < 1000 {
                    return Err(Error::BadOptions(format!(
                        "PBKDF2 with {iterations} iterations (cryptsetup needs at least 1000)"
                    )));
                }
                Ok(KdfParams::Pbkdf2 {
                    hash: Hash::Sha256,
                    iterations,
                })
            }
            Kdf::Argon2id {
                time,
                memory_kib,
                parallel,
            } => {
                if time < 4
                    || !(32..=ARGON2_MAX_MEMORY).contains(&memory_kib)
                    || !(1..=4).contains(&parallel)
                    || memory_kib < 8 * parallel
                {
                    return Err(Error::BadOptions(format!(
                        "Argon2id time {time}, memory {memory_kib} KiB, {parallel} lanes \
                         (cryptsetup needs time >= 4, 32 KiB to 4 GiB, 1 to 4 lanes)"
                    )));
                }
                Ok(KdfParams::Argon2 {
                    id: true,
                    time,
                    memory: memory_kib,
                    cpus: parallel,
                })
            }
        }
    }

    /// Derives `out_len` bytes from `passphrase` and `salt`.
    pub(crate) fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8],
        out_len: usize,
    ) -> Result<VolumeKey, Error> {
        let mut out = Zeroizing::new(vec![0; out_len]);
        match *self {
            KdfParams::Pbkdf2 { hash, iterations } => {
                hash.pbkdf2(passphrase, salt, iterations, &mut out);
            }
            KdfParams::Argon2 {
                id,
                time,
                memory,
                cpus,
            } => {
                let params = Params::new(memory, time, cpus, Some(out_len))
                    .map_err(|_| Error::BadHeader("bad Argon2 parameters"))?;
                let algorithm = if id {
                    Algorithm::Argon2id
                } else {
                    Algorithm::Argon2i
                };
                Argon2::new(algorithm, Version::V0x13, params)
                    .hash_password_into(passphrase, salt, &mut out)
                    .map_err(|_| Error::BadHeader("bad Argon2 parameters"))?;
            }
        }
        Ok(VolumeKey::from_zeroizing(out))
    }

    /// The JSON `kdf` object, with `salt`.
    fn to_json(self, salt: &[u8]) -> json::KdfJson {
        let mut kdf = json::KdfJson {
            kind: String::new(),
            hash: None,
            iterations: None,
            time: None,
            memory: None,
            cpus: None,
            salt: BASE64.encode(salt),
            extra: json::Extra::new(),
        };
        match self {
            KdfParams::Pbkdf2 { hash, iterations } => {
                kdf.kind = "pbkdf2".to_owned();
                kdf.hash = Some(hash.name().to_owned());
                kdf.iterations = Some(iterations);
            }
            KdfParams::Argon2 {
                id,
                time,
                memory,
                cpus,
            } => {
                kdf.kind = if id { "argon2id" } else { "argon2i" }.to_owned();
                kdf.time = Some(time);
                kdf.memory = Some(memory);
                kdf.cpus = Some(cpus);
            }
        }
        kdf
    }
}

/// A `luks2` key slot's parameters, checked.
#[derive(Debug, Clone)]
pub(crate) struct SlotParams {
    /// Volume key length.
    pub(crate) key_size: usize,
    pub(crate) area_offset: u64,
    pub(crate) area_size: u64,
    /// Length of the derived key that encrypts the area.
    pub(crate) area_key_size: usize,
    pub(crate) af_hash: Hash,
    pub(crate) kdf: KdfParams,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) priority: KeyslotPriority,
}

impl SlotParams {
    /// Checks a key slot from the JSON metadata.
    pub(crate) fn from_json(slot: &json::Keyslot) -> Result<Self, Error> {
        let unsupported = |what: String| Err(Error::Unsupported(what));
        if slot.kind != "luks2" {
            return unsupported(format!("key slot type {:?}", slot.kind));
        }
        let key_size = slot.key_size as usize;
        if key_size != 32 && key_size != 64 {
            return unsupported(format!("a {key_size}-byte volume key"));
        }
        let af = slot
            .af
            .as_ref()
            .ok_or(Error::BadHeader("key slot has no af"))?;
        if af.kind != "luks1" || af.stripes != STRIPES {
            return unsupported(format!("AF {:?} with {} stripes", af.kind, af.stripes));
        }
        let af_hash = Hash::from_name(&af.hash)?;
        let area = &slot.area;
        if area.kind != "raw" {
            return unsupported(format!("key slot area type {:?}", area.kind));
        }
        match area.encryption.as_deref() {
            Some(CIPHER) => {}
            Some(other) => return unsupported(format!("key slot cipher {other:?}")),
            None => return Err(Error::BadHeader("key slot area has no encryption")),
        }
        let area_key_size = match area.key_size {
            Some(n @ (32 | 64)) => n as usize,
            Some(n) => return unsupported(format!("a {n}-byte key slot key")),
            None => return Err(Error::BadHeader("key slot area has no key size")),
        };
        if area.size.0 < material_len(key_size) as u64 {
            return Err(Error::BadHeader("key slot area too small for its key"));
        }
        let kdf_json = slot
            .kdf
            .as_ref()
            .ok_or(Error::BadHeader("key slot has no kdf"))?;
        let kdf = match kdf_json.kind.as_str() {
            "pbkdf2" => {
                let hash = kdf_json
                    .hash
                    .as_deref()
                    .ok_or(Error::BadHeader("PBKDF2 without a hash"))?;
                match kdf_json.iterations {
                    Some(iterations) if iterations > 0 => KdfParams::Pbkdf2 {
                        hash: Hash::from_name(hash)?,
                        iterations,
                    },
                    _ => return Err(Error::BadHeader("bad PBKDF2 iterations")),
                }
            }
            kind @ ("argon2i" | "argon2id") => {
                match (kdf_json.time, kdf_json.memory, kdf_json.cpus) {
                    (Some(time), Some(memory), Some(cpus))
                        if time > 0
                            && (1..=ARGON2_MAX_CPUS).contains(&cpus)
                            && (8 * cpus..=ARGON2_MAX_MEMORY).contains(&memory) =>
                    {
                        KdfParams::Argon2 {
                            id: kind == "argon2id",
                            time,
                            memory,
                            cpus,
                        }
                    }
                    _ => return Err(Error::BadHeader("bad Argon2 parameters")),
                }
            }
            other => return unsupported(format!("key derivation {other:?}")),
        };
        let salt = decode_salt(&kdf_json.salt)?;
        let priority = match slot.priority {
            None | Some(1) => KeyslotPriority::Normal,
            Some(0) => KeyslotPriority::Ignore,
            Some(2) => KeyslotPriority::Prefer,
            Some(_) => return Err(Error::BadHeader("bad key slot priority")),
        };
        Ok(SlotParams {
            key_size,
            area_offset: area.offset.0,
            area_size: area.size.0,
            area_key_size,
            af_hash,
            kdf,
            salt,
            priority,
        })
    }

    /// What `Luks2::keyslots` reports.
    pub(crate) fn info(&self, id: usize) -> KeyslotInfo {
        let (kdf, kdf_params) = match self.kdf {
            KdfParams::Pbkdf2 { hash, iterations } => (
                "pbkdf2",
                format!("hash {}, iterations {iterations}", hash.name()),
            ),
            KdfParams::Argon2 {
                id,
                time,
                memory,
                cpus,
            } => (
                if id { "argon2id" } else { "argon2i" },
                format!("time {time}, memory {memory} KiB, cpus {cpus}"),
            ),
        };
        KeyslotInfo {
            id,
            kdf: kdf.to_owned(),
            kdf_params,
            key_size: self.key_size,
            area_offset: self.area_offset,
            area_size: self.area_size,
            priority: self.priority,
        }
    }

    /// Derives the slot key from `passphrase`, reads and decrypts the area
    /// from `r`, and merges the stripes into a candidate volume key (right
    /// only if the digest says so).
    pub(crate) fn open<R: Read + Seek>(
        &self,
        r: &mut R,
        passphrase: &[u8],
    ) -> Result<VolumeKey, Error> {
        let derived = self
            .kdf
            .derive(passphrase, &self.salt, self.area_key_size)?;
        let mut material = Zeroizing::new(vec![0; material_len(self.key_size)]);
        r.seek(SeekFrom::Start(self.area_offset))?;
        r.read_exact(&mut material).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::BadHeader("image ends inside a key slot area"),
            _ => Error::Io(e),
        })?;
        SectorCipher::new(&derived, 512, 0)?.decrypt(0, &mut material)?;
        let key = af_merge(&material, self.key_size, self.af_hash);
        Ok(VolumeKey::from_zeroizing(key))
    }
}

fn decode_salt(text: &str) -> Result<[u8; SALT_LEN], Error> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(text)
            .map_err(|_| Error::BadHeader("bad base64 salt"))?,
    );
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::BadHeader("salt is not 32 bytes"))
}

/// A new key slot for `key`, opened by `passphrase`: its JSON and the
/// encrypted material to write at `area_offset`.
pub(crate) fn create(
    key: &VolumeKey,
    passphrase: &[u8],
    kdf: KdfParams,
    area_offset: u64,
) -> Result<(json::Keyslot, Vec<u8>), Error> {
    let mut salt = [0; SALT_LEN];
    random_fill(&mut salt)?;
    let derived = kdf.derive(passphrase, &salt, key.len())?;
    let mut material = af_split(key.expose(), Hash::Sha256)?;
    SectorCipher::new(&derived, 512, 0)?.encrypt(0, &mut material)?;
    let key_size = u32::try_from(key.len()).map_err(|_| Error::BadOptions("key size".into()))?;
    let slot = json::Keyslot {
        kind: "luks2".to_owned(),
        key_size,
        af: Some(json::Af {
            kind: "luks1".to_owned(),
            stripes: STRIPES,
            hash: Hash::Sha256.name().to_owned(),
            extra: json::Extra::new(),
        }),
        area: json::Area {
            kind: "raw".to_owned(),
            offset: U64Str(area_offset),
            size: U64Str(area_len(key.len())),
            encryption: Some(CIPHER.to_owned()),
            key_size: Some(key_size),
            extra: json::Extra::new(),
        },
        kdf: Some(kdf.to_json(&salt)),
        priority: None,
        extra: json::Extra::new(),
    };
    Ok((slot, material.to_vec()))
}

/// One step of the AF diffusion: `chunk = H(counter || chunk)`, truncated.
fn diffuse_chunk<D: Digest>(counter: [u8; 4], chunk: &mut [u8]) {
    let d = D::new()
        .chain_update(counter)
        .chain_update(&*chunk)
        .finalize();
    let n = chunk.len().min(d.len());
    if let (Some(out), Some(src)) = (chunk.get_mut(..n), d.get(..n)) {
        out.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(area_len(64), 258_048);
        assert_eq!(area_len(32), 131_072);
        assert_eq!(material_len(64), 256_000);
        assert_eq!(material_len(32), 128_000);
    }

    #[test]
    fn split_merge_round_trip() {
        for hash in [Hash::Sha256, Hash::Sha512] {
            for n in [32, 64, 20] {
                let key: Vec<u8> = (0..n as u8).collect();
                let material = af_split(&key, hash).unwrap();
                assert_eq!(&*af_merge(&material, n, hash), &key);
                let mut broken = material.clone();
                broken[5] ^= 1;
                assert_ne!(&*af_merge(&broken, n, hash), &key);
            }
        }
    }

    /// Diffusion of a buffer that is not whole digests: 40 bytes are one
    /// SHA-256 of (0, 32 bytes) and the first 8 bytes of SHA-256 of
    /// (1, 8 bytes).
    #[test]
    fn diffuse_counts_big_endian_and_cuts_the_tail() {
        let mut buf = [0xab; 40];
        Hash::Sha256.diffuse(&mut buf);
        let first = Sha256::new()
            .chain_update([0, 0, 0, 0])
            .chain_update([0xab; 32])
            .finalize();
        let second = Sha256::new()
            .chain_update([0, 0, 0, 1])
            .chain_update([0xab; 8])
            .finalize();
        assert_eq!(&buf[..32], &first[..]);
        assert_eq!(&buf[32..], &second[..8]);
    }

    #[test]
    fn new_slot_limits() {
        assert!(KdfParams::for_new_slot(&Kdf::Pbkdf2 { iterations: 999 }).is_err());
        assert!(KdfParams::for_new_slot(&Kdf::Pbkdf2 { iterations: 1000 }).is_ok());
        let argon = |time, memory_kib, parallel| {
            KdfParams::for_new_slot(&Kdf::Argon2id {
                time,
                memory_kib,
                parallel,
            })
        };
        assert!(argon(4, 32, 1).is_ok());
        assert!(argon(3, 32, 1).is_err());
        assert!(argon(4, 31, 1).is_err());
        assert!(argon(4, 1024, 5).is_err());
        assert!(argon(4, 32, 4).is_ok());
    }
}
