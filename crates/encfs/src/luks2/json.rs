//! The LUKS2 JSON metadata: a serde model, its checks, and its JSON area.
//!
//! Field order follows cryptsetup's, so a header this crate writes reads
//! like one cryptsetup wrote. Fields this crate does not use are kept in
//! `extra` maps (and whole tokens as JSON values), so that rewriting the
//! metadata of an image made by cryptsetup keeps them. Numbers that may
//! not fit in a JSON double (offsets, sizes, `iv_tweak`) are decimal
//! strings, as in cryptsetup; the others are JSON integers.
//!
//! [`Metadata::validate`] repeats the checks of cryptsetup's
//! `LUKS2_hdr_validate` (`lib/luks2/luks2_json_metadata.c`) that matter for
//! reading: numbered keys, references between sections, the sizes in
//! `config`, and key slot areas inside the key slot area and apart.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::KEYSLOTS_MAX;
use super::header::{BIN_LEN, HDR_SIZES, MAX_KEYSLOTS_SIZE};
use crate::Error;

/// Unknown fields, kept as they were.
pub(crate) type Extra = Map<String, Value>;

/// A `u64` written as a decimal string (`"16777216"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct U64Str(pub(crate) u64);

impl Serialize for U64Str {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for U64Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_decimal(&s)
            .map(U64Str)
            .ok_or_else(|| de::Error::custom("not a decimal number"))
    }
}

/// Digits only (cryptsetup's `numbered()` plus `strtoull` without
/// overflow), and not empty.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A section key such as a key slot number: canonical decimal below
/// `limit`.
pub(crate) fn parse_id(s: &str, limit: usize) -> Option<usize> {
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    let n = usize::try_from(parse_decimal(s)?).ok()?;
    (n < limit).then_some(n)
}

/// The whole JSON object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) keyslots: BTreeMap<String, Keyslot>,
    pub(crate) tokens: BTreeMap<String, Value>,
    pub(crate) segments: BTreeMap<String, Segment>,
    pub(crate) digests: BTreeMap<String, Digest>,
    pub(crate) config: Config,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// One key slot. `af` and `kdf` are absent in the special key slots of an
/// unfinished reencryption.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Keyslot {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) key_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) af: Option<Af>,
    pub(crate) area: Area,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kdf: Option<KdfJson>,
    /// 0: ignore, 1 (or absent): normal, 2: prefer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) priority: Option<u32>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// The anti-forensic splitter of a key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Af {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) stripes: u32,
    pub(crate) hash: String,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// Where a key slot's material lies, and how it is encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Area {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) offset: U64Str,
    pub(crate) size: U64Str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_size: Option<u32>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// A key slot's key derivation: `hash` and `iterations` for PBKDF2,
/// `time`, `memory` (KiB) and `cpus` for Argon2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KdfJson {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpus: Option<u32>,
    pub(crate) salt: String,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// A data segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Segment {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) offset: U64Str,
    /// `"dynamic"` (to the end of the device) or a decimal byte count.
    pub(crate) size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iv_tweak: Option<U64Str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sector_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) integrity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flags: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// A digest of the volume key, linking key slots to segments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Digest {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) keyslots: Vec<String>,
    pub(crate) segments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// Sizes of the metadata areas, flags and requirements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Config {
    pub(crate) json_size: U64Str,
    pub(crate) keyslots_size: U64Str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) requirements: Option<Requirements>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// Features that a reader must know to touch the device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Requirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mandatory: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

impl Metadata {
    /// Parses a JSON area: a JSON object from the first byte, then only
    /// NULs to the end of the area (as cryptsetup's `validate_json_area`
    /// demands).
    pub(crate) fn parse(area: &[u8]) -> Result<Self, Error> {
        if area.first() != Some(&b'{') {
            return Err(Error::BadHeader("JSON area does not start with '{'"));
        }
        let end = area
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::BadHeader("JSON area has no terminating NUL"))?;
        let (text, rest) = area.split_at(end);
        if rest.iter().any(|&b| b != 0) {
            return Err(Error::BadHeader("bytes after the JSON text"));
        }
        if text.last() != Some(&b'}') {
            return Err(Error::BadHeader("bytes after the JSON text"));
        }
        serde_json::from_slice(text).map_err(|_| Error::BadHeader("malformed JSON metadata"))
    }

    /// The JSON text padded with NULs to `size` bytes. At least one NUL
    /// must follow the text.
    pub(crate) fn to_area(&self, size: u64) -> Result<Vec<u8>, Error> {
        let mut area = serde_json::to_vec(self)
            .map_err(|_| Error::BadHeader("metadata cannot be written as JSON"))?;
        let len = usize::try_from(size).map_err(|_| Error::MetadataTooLarge(size))?;
        if area.len() >= len {
            return Err(Error::MetadataTooLarge(size));
        }
        area.resize(len, 0);
        Ok(area)
    }

    /// Size of one metadata copy (binary header + JSON area) by `config`.
    pub(crate) fn metadata_size(&self) -> u64 {
        self.config.json_size.0.saturating_add(BIN_LEN as u64)
    }

    /// End of the key slot area: both metadata copies plus `keyslots_size`.
    pub(crate) fn areas_end(&self) -> u64 {
        self.metadata_size()
            .saturating_mul(2)
            .saturating_add(self.config.keyslots_size.0)
    }

    /// cryptsetup's structural checks; `json_size` is the JSON area size
    /// by the binary header.
    pub(crate) fn validate(&self, json_size: u64) -> Result<(), Error> {
        let bad = Error::BadHeader;

        // config
        if self.config.json_size.0 != json_size {
            return Err(bad("JSON area size differs from the binary header's"));
        }
        let metadata_size = self.metadata_size();
        if !HDR_SIZES.contains(&metadata_size) {
            return Err(bad("unsupported metadata size"));
        }
        let keyslots_size = self.config.keyslots_size.0;
        if keyslots_size % 4096 != 0 || keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(bad("unsupported key slot area size"));
        }
        let areas_start = 2 * metadata_size;
        let areas_end = areas_start + keyslots_size;

        // keyslots
        let mut intervals = Vec::with_capacity(self.keyslots.len());
        for (key, slot) in &self.keyslots {
            parse_id(key, KEYSLOTS_MAX).ok_or(bad("bad key slot number"))?;
            let (offset, size) = (slot.area.offset.0, slot.area.size.0);
            if offset < areas_start || size == 0 {
                return Err(bad("key slot area outside the key slot area"));
            }
            match offset.checked_add(size) {
                Some(end) if end <= areas_end => intervals.push((offset, end)),
                _ => return Err(bad("key slot area outside the key slot area")),
            }
        }
        intervals.sort_unstable();
        if intervals.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(bad("key slot areas overlap"));
        }

        // digests
        for (key, digest) in &self.digests {
            parse_id(key, usize::MAX).ok_or(bad("bad digest number"))?;
            if !digest
                .keyslots
                .iter()
                .all(|k| self.keyslots.contains_key(k))
            {
                return Err(bad("digest names a missing key slot"));
            }
            if !digest
                .segments
                .iter()
                .all(|s| self.segments.contains_key(s))
            {
                return Err(bad("digest names a missing segment"));
            }
        }

        // segments
        if self.segments.is_empty() {
            return Err(bad("no segments"));
        }
        let mut first_data = u64::MAX;
        for (key, seg) in &self.segments {
            parse_id(key, usize::MAX).ok_or(bad("bad segment number"))?;
            let offset = seg.offset.0;
            let size = if seg.size == "dynamic" {
                0
            } else {
                match parse_decimal(&seg.size) {
                    Some(n) if n > 0 => n,
                    _ => return Err(bad("bad segment size")),
                }
            };
            if offset % 512 != 0 || size % 512 != 0 {
                return Err(bad("segment not aligned to 512 bytes"));
            }
            if seg.kind == "crypt" {
                let sector_size = match (&seg.iv_tweak, &seg.encryption, seg.sector_size) {
                    (Some(_), Some(_), Some(s)) => u64::from(s),
                    _ => return Err(bad("crypt segment lacks a field")),
                };
                if sector_size == 0 || sector_size % 512 != 0 || size % sector_size != 0 {
                    return Err(bad("bad segment sector size"));
                }
                if !self.digests.values().any(|d| d.segments.contains(key)) {
                    return Err(bad("segment has no digest"));
                }
                first_data = first_data.min(offset);
            }
        }
        if first_data != u64::MAX
            && first_data != 0
            && first_data
                .checked_sub(keyslots_size)
                .is_none_or(|gap| gap < areas_start)
        {
            return Err(bad("key slot area overlaps the data"));
        }

        // tokens
        for (key, token) in &self.tokens {
            parse_id(key, usize::MAX).ok_or(bad("bad token number"))?;
            let ok = token.get("type").is_some_and(Value::is_string)
                && token
                    .get("keyslots")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .all(|k| k.as_str().is_some_and(|k| self.keyslots.contains_key(k)))
                    });
            if !ok {
                return Err(bad("bad token"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// What cryptsetup 2.6.1 wrote for
    /// `luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000
    /// --sector-size 4096` on a 20 MiB file.
    const CRYPTSETUP_JSON: &str = r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"C1JGzpkYVX3FzGVxYV/zxOL93GEZsOhQZpi7MPQzkYI="}}},"tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"Gb3P3llDi5aMJ5Utuk8HOtPOQCaM1GCwCjg0aGX+3f4=","digest":"YmB1m9Yj8gQsU8KOZ5DQPTnzUvRlIqqMF4dNG1C4CdY="}},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#;

    fn area(text: &str) -> Vec<u8> {
        let mut a = text.as_bytes().to_vec();
        a.resize(12288, 0);
        a
    }

    #[test]
    fn round_trips_cryptsetup_json_byte_for_byte() {
        let meta = Metadata::parse(&area(CRYPTSETUP_JSON)).unwrap();
        meta.validate(12288).unwrap();
        assert_eq!(meta.to_area(12288).unwrap(), area(CRYPTSETUP_JSON));
    }

    #[test]
    fn keeps_unknown_fields() {
        let text = CRYPTSETUP_JSON
            .replace(
                r#""tokens":{}"#,
                r#""tokens":{"0":{"type":"x","keyslots":["0"],"k":[1]}}"#,
            )
            .replace(
                r#""keyslots_size":"16744448""#,
                r#""keyslots_size":"16744448","flags":["allow-discards"],"future":{"a":1}"#,
            );
        let meta = Metadata::parse(&area(&text)).unwrap();
        meta.validate(12288).unwrap();
        let out = String::from_utf8(meta.to_area(12288).unwrap()).unwrap();
        assert!(out.contains(r#""tokens":{"0":{"k":[1],"keyslots":["0"],"type":"x"}}"#));
        assert!(out.contains(r#""flags":["allow-discards"],"future":{"a":1}"#));
    }

    #[test]
    fn rejects_bad_areas_and_numbers() {
        for (from, to) in [
            (r#""offset":"32768""#, r#""offset":"0""#),
            (r#""offset":"32768""#, r#""offset":"+32768""#),
            (
                r#""offset":"32768""#,
                r#""offset":"99999999999999999999999""#,
            ),
            (r#""size":"258048""#, r#""size":"16744449""#),
            (r#""keyslots":["0"]"#, r#""keyslots":["1"]"#),
            (r#""segments":["0"]"#, r#""segments":[]"#),
            (r#""json_size":"12288""#, r#""json_size":"4096""#),
            (r#""sector_size":4096"#, r#""sector_size":1000"#),
            (r#""key_size":64,"af""#, r#""key_size":-1,"af""#),
            (r#"{"keyslots":{"0""#, r#"{"keyslots":{"00""#),
            (r#""offset":"16777216""#, r#""offset":"65536""#),
        ] {
            let text = CRYPTSETUP_JSON.replacen(from, to, 1);
            assert_ne!(text, CRYPTSETUP_JSON, "{from}");
            let r = Metadata::parse(&area(&text)).and_then(|m| m.validate(12288));
            assert!(matches!(r, Err(Error::BadHeader(_))), "{to}: {r:?}");
        }
    }

    #[test]
    fn rejects_bad_areas_framing() {
        let mut a = area(CRYPTSETUP_JSON);
        *a.last_mut().unwrap() = b' ';
        assert!(Metadata::parse(&a).is_err());
        assert!(Metadata::parse(&area(&format!(" {CRYPTSETUP_JSON}"))).is_err());
        assert!(Metadata::parse(&area(&format!("{CRYPTSETUP_JSON} "))).is_err());
        assert!(Metadata::parse(&[b'{'; 100]).is_err());
        assert!(Metadata::parse(&[]).is_err());
    }
}
