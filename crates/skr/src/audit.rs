//! The broker's append-only, hash-chained audit log.
//!
//! Each entry is one JSON line `{"record": {…}, "mac": "<hex>"}`. A
//! record's `prev` is the SHA-256 of the previous record's bytes (64 zeros
//! for the first), and `seq` counts from 0, so a record that is changed,
//! removed or moved breaks the chain at the next record. The chain alone
//! cannot show a change to the last record, or records cut off the end, by
//! someone who rewrites the file; so each record also carries an
//! HMAC-SHA256 under the broker's audit key (derived from its master key),
//! and the log ends with a head line `{"head": {"count", "hash", "mac"}}`.
//! Verification without the key checks the chain only, and says so.

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{AuditProblem, Error};

type HmacSha256 = Hmac<Sha256>;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A key was imported (or a new version of it).
    Import,
    /// A key's release policy or attributes changed.
    UpdatePolicy,
    /// A key was released.
    Release,
    /// A release was refused (policy, token or request).
    Deny,
    /// An admin request was refused (bad bearer token).
    AdminDenied,
}

/// Who asked, as far as the attestation token says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    /// The token's issuer.
    pub iss: String,
    /// `x-ms-sevsnpvm-hostdata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_data: Option<String>,
    /// `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When (Unix seconds).
    pub time: u64,
    /// SHA-256 (hex) of the previous record's bytes.
    pub prev: String,
    /// What happened.
    pub event: AuditEvent,
    /// The key's name.
    pub key: String,
    /// The key version concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why (for denials), or what (the wrapping algorithm for releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The token's identity (releases and denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenIdentity>,
    /// SHA-256 (hex) of the release policy in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
}

/// The HMAC key of the audit log. Zeroized on drop.
#[derive(Clone)]
pub struct AuditKey(pub(crate) Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    fn mac(&self, parts: &[&[u8]]) -> String {
        // HMAC takes keys of any length.
        let Ok(mut mac) = <HmacSha256 as hmac::Mac>::new_from_slice(self.0.as_ref()) else {
            return String::new();
        };
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(&self, parts: &[&[u8]], expected: &str) -> bool {
        let Ok(expected) = hex::decode(expected) else {
            return false;
        };
        let Ok(mut mac) = <HmacSha256 as hmac::Mac>::new_from_slice(self.0.as_ref()) else {
            return false;
        };
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&expected).is_ok()
    }
}

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    record: &'a RawValue,
    mac: String,
}

/// The log's head: how many records, and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Number of records.
    pub count: u64,
    /// SHA-256 (hex) of the last record ([`GENESIS`] when empty).
    pub hash: String,
    /// HMAC over `count` and `hash`.
    pub mac: String,
}

impl AuditHead {
    pub(crate) fn empty(key: &AuditKey) -> Self {
        Self::new(key, 0, GENESIS.to_owned())
    }

    fn new(key: &AuditKey, count: u64, hash: String) -> Self {
        let mac = key.mac(&[b"head", &count.to_be_bytes(), hash.as_bytes()]);
        AuditHead { count, hash, mac }
    }
}

/// Makes the entry line for `record` (whose `seq` and `prev` the caller
/// set from `head`) and the new head.
pub(crate) fn seal(
    key: &AuditKey,
    head: &AuditHead,
    record: &AuditRecord,
) -> Result<(Vec<u8>, AuditHead), Error> {
    let bytes = serde_json::to_vec(record).map_err(|_| Error::Crypto("audit record encoding"))?;
    let raw = RawValue::from_string(String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|_| Error::Crypto("audit record encoding"))?;
    let entry = Entry {
        record: &raw,
        mac: key.mac(&[&bytes]),
    };
    let line = serde_json::to_vec(&entry).map_err(|_| Error::Crypto("audit entry encoding"))?;
    let hash = hex::encode(Sha256::digest(&bytes));
    Ok((line, AuditHead::new(key, head.count + 1, hash)))
}

/// What a verification checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReport {
    /// Records verified.
    pub records: u64,
    /// Whether every record's MAC was checked (a key was given).
    pub macs_checked: bool,
    /// Whether the head was present and matched (and, with a key, its MAC
    /// verified), so that nothing was cut off the end.
    pub head_checked: bool,
}

/// Verifies a log: `entries` are the entry lines in order; `head` the head
/// if there is one; `key` the audit key if the caller has it.
///
/// # Errors
///
/// [`Error::AuditBroken`] at the first record that fails.
pub(crate) fn verify_entries<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
    head: Option<&AuditHead>,
    key: Option<&AuditKey>,
) -> Result<AuditReport, Error> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0u64;
    for line in entries {
        let broken = |problem| Error::AuditBroken {
            seq: count,
            problem,
        };
        let entry: Entry<'_> =
            serde_json::from_slice(line).map_err(|_| broken(AuditProblem::Malformed))?;
        let bytes = entry.record.get().as_bytes();
        let record: AuditRecord =
            serde_json::from_slice(bytes).map_err(|_| broken(AuditProblem::Malformed))?;
        if record.seq != count {
            return Err(broken(AuditProblem::Sequence {
                expected: count,
                found: record.seq,
            }));
        }
        if record.prev != prev {
            return Err(broken(AuditProblem::Chain));
        }
        if key.is_some_and(|key| !key.check(&[bytes], &entry.mac)) {
            return Err(broken(AuditProblem::Mac));
        }
        prev = hex::encode(Sha256::digest(bytes));
        count += 1;
    }
    let head_checked = match head {
        None => false,
        Some(head) => {
            if head.count != count {
                return Err(Error::AuditBroken {
                    seq: count,
                    problem: AuditProblem::Truncated {
                        expected: head.count,
                        found: count,
                    },
                });
            }
            if head.hash != prev {
                return Err(Error::AuditBroken {
                    seq: count.saturating_sub(1),
                    problem: AuditProblem::Chain,
                });
            }
            let head_parts: [&[u8]; 3] = [b"head", &head.count.to_be_bytes(), head.hash.as_bytes()];
            if key.is_some_and(|key| !key.check(&head_parts, &head.mac)) {
                return Err(Error::AuditBroken {
                    seq: count,
                    problem: AuditProblem::Mac,
                });
            }
            true
        }
    };
    Ok(AuditReport {
        records: count,
        macs_checked: key.is_some(),
        head_checked,
    })
}

#[derive(Serialize, Deserialize)]
struct HeadLine {
    head: AuditHead,
}

/// Writes a log as JSON lines: the entries, then the head line.
pub(crate) fn export_jsonl(entries: &[Vec<u8>], head: &AuditHead) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(entry);
        out.push(b'\n');
    }
    if let Ok(line) = serde_json::to_vec(&HeadLine { head: head.clone() }) {
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

/// Verifies an exported log (JSON lines, as [`crate::Broker::export_audit`]
/// writes them). The head line is optional; without it, or without `key`,
/// the report says what could not be checked.
///
/// # Errors
///
/// [`Error::AuditBroken`] at the first record that fails.
pub fn verify_audit_jsonl(text: &[u8], key: Option<&AuditKey>) -> Result<AuditReport, Error> {
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let (head, entries) = match lines.split_last() {
        Some((last, rest)) => match serde_json::from_slice::<HeadLine>(last) {
            Ok(h) => (Some(h.head), rest),
            Err(_) => (None, lines.as_slice()),
        },
        None => (None, lines.as_slice()),
    };
    verify_entries(entries.iter().copied(), head.as_ref(), key)
}
