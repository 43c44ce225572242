//! LUKS2 digests of type `pbkdf2`: how a candidate volume key is checked.
//!
//! The digest is PBKDF2 over the volume key (as the password) with the
//! digest's 32-byte salt and iterations, as long as the stored digest (the
//! hash's length, or 20 bytes in headers converted from LUKS1), as in
//! cryptsetup's `lib/luks2/luks2_digest_pbkdf2.c`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use super::json;
use super::keyslot::{Hash, SALT_LEN};
use crate::Error;
use crate::crypt::{VolumeKey, random_fill};

/// Iterations of a new digest. The volume key is random, so the digest
/// needs no work factor; cryptsetup's minimum is 1000.
pub(crate) const ITERATIONS: u32 = 1000;

/// A `pbkdf2` digest, checked.
#[derive(Debug, Clone)]
pub(crate) struct DigestParams {
    hash: Hash,
    iterations: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

impl DigestParams {
    /// Checks a digest from the JSON metadata.
    pub(crate) fn from_json(d: &json::Digest) -> Result<Self, Error> {
        if d.kind != "pbkdf2" {
            return Err(Error::Unsupported(format!("digest type {:?}", d.kind)));
        }
        let hash = d
            .hash
            .as_deref()
            .ok_or(Error::BadHeader("digest has no hash"))?;
        let hash = Hash::from_name(hash)?;
        let iterations = match d.iterations {
            Some(n) if n > 0 => n,
            _ => return Err(Error::BadHeader("bad digest iterations")),
        };
        let decode = |field: &Option<String>| {
            field
                .as_deref()
                .and_then(|text| BASE64.decode(text).ok())
                .ok_or(Error::BadHeader("bad digest salt or value"))
        };
        let salt = decode(&d.salt)?;
        let digest = decode(&d.digest)?;
        if salt.len() != SALT_LEN || (digest.len() != 20 && digest.len() != hash.len()) {
            return Err(Error::BadHeader("bad digest salt or value"));
        }
        Ok(DigestParams {
            hash,
            iterations,
            salt,
            digest,
        })
    }

    /// Whether `key` is the key this digest was made from. The comparison
    /// takes the same time wherever the bytes differ.
    pub(crate) fn matches(&self, key: &VolumeKey) -> bool {
        let mut computed = Zeroizing::new(vec![0; self.digest.len()]);
        self.hash
            .pbkdf2(key.expose(), &self.salt, self.iterations, &mut computed);
        computed
            .iter()
            .zip(&self.digest)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A new digest of `key`, linked to `keyslots` and `segments`.
pub(crate) fn create(
    key: &VolumeKey,
    keyslots: Vec<String>,
    segments: Vec<String>,
) -> Result<json::Digest, Error> {
    let mut salt = [0; SALT_LEN];
    random_fill(&mut salt)?;
    let mut digest = [0; 32];
    Hash::Sha256.pbkdf2(key.expose(), &salt, ITERATIONS, &mut digest);
    Ok(json::Digest {
        kind: "pbkdf2".to_owned(),
        keyslots,
        segments,
        hash: Some(Hash::Sha256.name().to_owned()),
        iterations: Some(ITERATIONS),
        salt: Some(BASE64.encode(salt)),
        digest: Some(BASE64.encode(digest)),
        extra: json::Extra::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The digest cryptsetup 2.6.1 stored for the volume key that
    /// `luksDump --dump-volume-key` printed (the image of
    /// `json::tests::CRYPTSETUP_JSON`).
    #[test]
    fn checks_a_cryptsetup_digest() {
        let d = json::Digest {
            kind: "pbkdf2".to_owned(),
            keyslots: vec!["0".to_owned()],
            segments: vec!["0".to_owned()],
            hash: Some("sha256".to_owned()),
            iterations: Some(1000),
            salt: Some("Gb3P3llDi5aMJ5Utuk8HOtPOQCaM1GCwCjg0aGX+3f4=".to_owned()),
            digest: Some("YmB1m9Yj8gQsU8KOZ5DQPTnzUvRlIqqMF4dNG1C4CdY=".to_owned()),
            extra: json::Extra::new(),
        };
        let key = hex::decode(
            "d77542c8068485bfe8a0013fbf2dd30326c59c6a03aecab5c847cefb26b76eca\
             58b3c6107219fadec10e41edaf0b3e53165df9b92c130bb9c6813a646d7dd1d4",
        )
        .unwrap();
        let p = DigestParams::from_json(&d).unwrap();
        assert!(p.matches(&VolumeKey::from_bytes(&key)));
        let mut wrong = key.clone();
        wrong[63] ^= 1;
        assert!(!p.matches(&VolumeKey::from_bytes(&wrong)));

        let ours = create(&VolumeKey::from_bytes(&key), vec![], vec![]).unwrap();
        let ours = DigestParams::from_json(&ours).unwrap();
        assert!(ours.matches(&VolumeKey::from_bytes(&key)));
    }
}
