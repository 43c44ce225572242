//! The key broker's core, without HTTP: import, read, release and policy
//! update of keys, as Managed HSM does them, over the embedded store and
//! the audit log.
//!
//! An HTTP router maps routes to methods and errors to statuses:
//!
//! | route | method |
//! |---|---|
//! | `PUT /keys/{name}` | [`Broker::import`] (admin bearer) |
//! | `GET /keys/{name}` | [`Broker::key`] |
//! | `POST /keys/{name}/release` | [`Broker::release_token`] with a [`TokenCheck`] |
//! | `PATCH /keys/{name}` | [`Broker::update`] (admin bearer) |
//!
//! Every error answers with [`Error::status`] and the body
//! [`Error::to_response`].
//!
//! Every answer to a release, a denial or a refused admin request is
//! audited first: the method returns only once its audit record is
//! committed (redb `Durability::Immediate`, fsync'd). A release writes
//! nothing else: the key is read in a read transaction. Records of
//! concurrent requests share one write transaction and one fsync (group
//! commit, [`BrokerConfig::group_commit`]): the chain stays in one strict
//! order because records are chained inside the transaction that writes
//! them, and a failed commit fails every request in it. A crash (or `kill
//! -9`) loses at most records whose requests had not been answered.
//!
//! A release's record is committed while the key is wrapped and the
//! response signed (the fsync waits on the disk, the crypto on the CPU);
//! should those fail after the record is durable, a denial record saying
//! so follows it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditRecord, AuditReport, TokenIdentity, verify_entries};
use crate::error::Error;
use crate::jws::SigningIdentity;
use crate::keys::{KeyMaterial, KeyType};
use crate::policy::{Decision, POLICY_CONTENT_TYPE, ReleasePolicy};
use crate::store::{MasterKey, Store};
use crate::wire::{
    ImportKeyRequest, KeyAttributes, KeyBundle, KeyHsm, KeyHsmHeader, PayloadRequest,
    PayloadResponse, PublicJwk, ReleasePayload, ReleasePolicyBody, ReleaseRequest, ReleaseResponse,
    ReleasedKeyBundle, UpdateKeyRequest, WrappedJwk,
};
use crate::wrap::{WrapAlgorithm, WrappingPublicKey, wrap_key};

/// Where the broker is reached and which API version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The base URL keys are named under (`https://localhost:8443`): a
    /// key's `kid` is `{vault_url}/keys/{name}/{version}`.
    pub vault_url: String,
    /// Reported as `request.api-version` in releases (`7.4`).
    pub api_version: String,
    /// Whether audit records of concurrent requests share one commit (one
    /// fsync) instead of one each; on by default. Either way a response
    /// leaves only once its record is durable. Off is only slower; it is
    /// kept to measure the difference.
    pub group_commit: bool,
}

impl BrokerConfig {
    /// Keys under `vault_url`, API version 7.4, group commit on.
    pub fn new(vault_url: &str) -> Self {
        BrokerConfig {
            vault_url: vault_url.trim_end_matches('/').to_owned(),
            api_version: "7.4".to_owned(),
            group_commit: true,
        }
    }
}

/// The claims of an attestation token whose signature, issuer and validity
/// period the caller has already verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    issuer: String,
    claims: Map<String, Value>,
}

impl VerifiedClaims {
    /// From a verified token's payload; `iss` must be a string.
    ///
    /// # Errors
    ///
    /// [`Error::TokenRejected`] if there is no `iss`.
    pub fn new(claims: Map<String, Value>) -> Result<Self, Error> {
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::TokenRejected("token has no iss claim".to_owned()))?
            .to_owned();
        Ok(VerifiedClaims { issuer, claims })
    }

    /// As [`VerifiedClaims::new`], from any JSON value.
    ///
    /// # Errors
    ///
    /// [`Error::TokenRejected`] if it is not an object with `iss`.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Self::new(map),
            _ => Err(Error::TokenRejected(
                "token payload is not an object".to_owned(),
            )),
        }
    }

    /// The token's issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// All claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// What the audit log records about the token.
    pub fn identity(&self) -> TokenIdentity {
        let text = |k: &str| {
            self.claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        TokenIdentity {
            iss: self.issuer.clone(),
            host_data: text("x-ms-sevsnpvm-hostdata"),
            jti: text("jti"),
            iat: self.claims.get("iat").and_then(Value::as_u64),
        }
    }
}

/// The seam for token verification: checks an attestation token (against
/// the trusted authorities' keys, at `now`) and returns its claims. A
/// closure `Fn(&str, SystemTime) -> Result<VerifiedClaims, Error>` is one.
/// Refusals should be [`Error::TokenRejected`] (HTTP 403).
pub trait TokenCheck: Send + Sync {
    /// Verifies `token`.
    ///
    /// # Errors
    ///
    /// [`Error::TokenRejected`] saying why.
    fn check(&self, token: &str, now: SystemTime) -> Result<VerifiedClaims, Error>;
}

impl<F> TokenCheck for F
where
    F: Fn(&str, SystemTime) -> Result<VerifiedClaims, Error> + Send + Sync,
{
    fn check(&self, token: &str, now: SystemTime) -> Result<VerifiedClaims, Error> {
        self(token, now)
    }
}

/// A [`TokenCheck`] over `confsum_attest::TokenVerifier`s, one per
/// trusted attestation service. The token's (unverified) `iss` picks the
/// verifier, which then checks signature, issuer and times.
///
/// Limitation: the claims come back through `confsum_attest::TokenClaims`,
/// so only the claims that type knows reach the policy.
#[derive(Debug, Clone, Default)]
pub struct AttestAuthorities {
    verifiers: Vec<(String, confsum_attest::TokenVerifier)>,
}

impl AttestAuthorities {
    /// Trusts no one yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts tokens with `iss` exactly `issuer`, signed by a key of `jwks`.
    pub fn trust(&mut self, issuer: &str, jwks: confsum_attest::Jwks) -> &mut Self {
        self.verifiers.push((
            issuer.to_owned(),
            confsum_attest::TokenVerifier::new(jwks, issuer),
        ));
        self
    }
}

impl TokenCheck for AttestAuthorities {
    fn check(&self, token: &str, now: SystemTime) -> Result<VerifiedClaims, Error> {
        let issuer = unverified_issuer(token)
            .ok_or_else(|| Error::TokenRejected("malformed token".to_owned()))?;
        let (_, verifier) = self
            .verifiers
            .iter()
            .find(|(i, _)| *i == issuer)
            .ok_or_else(|| Error::TokenRejected(format!("untrusted issuer {issuer:?}")))?;
        let claims = verifier
            .verify(token, now)
            .map_err(|e| Error::TokenRejected(e.to_string()))?;
        let value = serde_json::to_value(&claims)
            .map_err(|_| Error::TokenRejected("claims do not encode".to_owned()))?;
        VerifiedClaims::from_value(value)
    }
}

/// The `iss` of a JWT, read without any verification (to choose whose keys
/// to verify it with).
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

/// A key's public record, stored in the clear (and bound to the encrypted
/// material as associated data).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyMeta {
    name: String,
    version: String,
    kty: String,
    key_ops: Vec<String>,
    public: Map<String, Value>,
    attributes: KeyAttributes,
    release_policy: ReleasePolicyBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tags: Option<Map<String, Value>>,
}

/// The key broker.
#[derive(Debug)]
pub struct Broker {
    store: Store,
    signer: SigningIdentity,
    config: BrokerConfig,
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check_name(name: &str) -> Result<(), Error> {
    if (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "invalid key name {name:?}: 1 to 127 letters, digits and dashes"
        )))
    }
}

fn default_key_ops(kty: KeyType) -> Vec<String> {
    let ops: &[&str] = match kty {
        KeyType::Oct => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        KeyType::Rsa => &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ],
        KeyType::Ec => &["sign", "verify"],
    };
    ops.iter().map(|s| (*s).to_owned()).collect()
}

/// Parses and canonicalizes a policy body.
fn canonical_policy(body: &ReleasePolicyBody) -> Result<(ReleasePolicy, ReleasePolicyBody), Error> {
    if let Some(ct) = &body.content_type {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Error::BadRequest(format!(
                "unsupported release policy contentType {ct:?}"
            )));
        }
    }
    let policy = ReleasePolicy::decode_base64url(&body.data)?;
    let canonical = ReleasePolicyBody {
        content_type: Some(POLICY_CONTENT_TYPE.to_owned()),
        data: policy.encode_base64url(),
        immutable: Some(body.immutable.unwrap_or(false)),
    };
    Ok((policy, canonical))
}

fn policy_hash(body: &ReleasePolicyBody) -> String {
    hex::encode(Sha256::digest(body.data.as_bytes()))
}

impl Broker {
    /// Opens (or creates) the broker's database at `path` with its master
    /// key, signing releases with `signer`.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`], or [`Error::MasterKey`] if `master` is not the
    /// key this database was created with.
    pub fn open(
        path: &std::path::Path,
        master: &MasterKey,
        signer: SigningIdentity,
        config: BrokerConfig,
    ) -> Result<Self, Error> {
        Ok(Broker {
            store: Store::open(path, master, config.group_commit)?,
            signer,
            config,
        })
    }

    /// The signing identity (its chain is what clients must trust).
    pub fn signer(&self) -> &SigningIdentity {
        &self.signer
    }

    /// Sets the admin bearer token; only its SHA-256 is stored. Until one
    /// is set, every admin request is refused.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] for a token under 16 characters,
    /// [`Error::Storage`].
    pub fn set_admin_token(&self, token: &str) -> Result<(), Error> {
        if token.len() < 16 {
            return Err(Error::BadRequest(
                "admin token must be at least 16 characters".to_owned(),
            ));
        }
        let write = self.store.begin()?;
        write.set_admin_token_hash(&Sha256::digest(token.as_bytes()))?;
        write.commit()
    }

    /// Checks an `Authorization` header value (`Bearer <token>`) against
    /// the admin token, for a request on key `name`; a refusal is audited.
    /// [`Broker::import`] and [`Broker::update`] do this themselves; an
    /// HTTP layer calls it first so that a caller without the token gets
    /// 401 before anything about its body is said.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] (401), [`Error::Storage`].
    pub fn authorize_admin(
        &self,
        authorization: Option<&str>,
        name: &str,
        now: SystemTime,
    ) -> Result<(), Error> {
        self.check_admin(authorization, name, now)
    }

    /// Checks an `Authorization` header value (`Bearer <token>`) against
    /// the admin token, in constant time.
    fn check_admin(
        &self,
        authorization: Option<&str>,
        name: &str,
        now: SystemTime,
    ) -> Result<(), Error> {
        let presented = authorization.and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let ok = match (presented, self.store.admin_token_hash()?) {
            (Some(token), Some(stored)) => {
                bool::from(Sha256::digest(token.as_bytes()).as_slice().ct_eq(&stored))
            }
            _ => false,
        };
        if ok {
            return Ok(());
        }
        self.store.append_audit(self.record(
            now,
            AuditEvent::AdminDenied,
            name,
            None,
            Some("bad or missing bearer token".to_owned()),
            None,
            None,
        ))?;
        Err(Error::Unauthorized)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        now: SystemTime,
        event: AuditEvent,
        key: &str,
        version: Option<String>,
        reason: Option<String>,
        token: Option<TokenIdentity>,
        policy_sha256: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time: unix(now),
            prev: String::new(),
            event,
            key: key.to_owned(),
            version,
            reason,
            token,
            policy_sha256,
        }
    }

    fn bundle(&self, meta: &KeyMeta) -> KeyBundle {
        KeyBundle {
            key: PublicJwk {
                kid: self.kid(meta),
                kty: meta.kty.clone(),
                key_ops: meta.key_ops.clone(),
                public: meta.public.clone(),
            },
            attributes: meta.attributes.clone(),
            release_policy: meta.release_policy.clone(),
            tags: meta.tags.clone(),
        }
    }

    fn kid(&self, meta: &KeyMeta) -> String {
        format!(
            "{}/keys/{}/{}",
            self.config.vault_url, meta.name, meta.version
        )
    }

    /// `PUT /keys/{name}`: imports a key with its release policy. When the
    /// name exists the import is a new version that replaces the old one
    /// (older versions are not kept). `authorization` is the request's
    /// `Authorization` header; a refused one is audited.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] (401); [`Error::BadRequest`],
    /// [`Error::BadKey`], [`Error::Policy`], [`Error::Encoding`] (400);
    /// [`Error::Storage`] (500).
    pub fn import(
        &self,
        authorization: Option<&str>,
        name: &str,
        request: &ImportKeyRequest,
        now: SystemTime,
    ) -> Result<KeyBundle, Error> {
        self.check_admin(authorization, name, now)?;
        check_name(name)?;
        let body = request.release_policy.as_ref().ok_or_else(|| {
            Error::BadRequest(
                "release_policy is required: this broker holds only keys it may release".to_owned(),
            )
        })?;
        let (_, release_policy) = canonical_policy(body)?;
        let attributes = request.attributes.clone().unwrap_or_default();
        if attributes.exportable != Some(true) {
            return Err(Error::BadRequest(
                "attributes.exportable must be true for a key with a release policy".to_owned(),
            ));
        }
        let material = KeyMaterial::from_jwk(&request.key)?;
        let key_ops = match request.key.get("key_ops") {
            None | Some(Value::Null) => default_key_ops(material.kty()),
            Some(Value::Array(ops)) => ops
                .iter()
                .map(|op| op.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::BadRequest("key_ops must be strings".to_owned()))?,
            Some(_) => return Err(Error::BadRequest("key_ops must be an array".to_owned())),
        };
        let mut version = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut version)
            .map_err(|_| Error::Crypto("random number generator failed"))?;
        let t = unix(now);
        let meta = KeyMeta {
            name: name.to_owned(),
            version: hex::encode(version),
            kty: material.kty().hsm_name().to_owned(),
            key_ops,
            public: material.public_jwk().clone(),
            attributes: KeyAttributes {
                enabled: attributes.enabled.unwrap_or(true),
                exportable: true,
                created: t,
                updated: t,
                recovery_level: "Purgeable".to_owned(),
            },
            release_policy,
            tags: request.tags.clone(),
        };
        let meta_bytes = serde_json::to_vec(&meta).map_err(Error::storage)?;
        let write = self.store.begin()?;
        write.put_key(name, &meta_bytes, material.bytes())?;
        write.audit(self.record(
            now,
            AuditEvent::Import,
            name,
            Some(meta.version.clone()),
            None,
            None,
            Some(policy_hash(&meta.release_policy)),
        ))?;
        write.commit()?;
        Ok(self.bundle(&meta))
    }

    /// `GET /keys/{name}`: public attributes and policy, never key material.
    ///
    /// # Errors
    ///
    /// [`Error::KeyNotFound`] (404), [`Error::Storage`] (500).
    pub fn key(&self, name: &str) -> Result<KeyBundle, Error> {
        check_name(name).map_err(|_| Error::KeyNotFound { name: name.into() })?;
        let meta = self
            .store
            .meta(name)?
            .ok_or_else(|| Error::KeyNotFound { name: name.into() })?;
        let meta: KeyMeta =
            serde_json::from_slice(&meta).map_err(|_| Error::Tampered { name: name.into() })?;
        Ok(self.bundle(&meta))
    }

    /// `POST /keys/{name}/release`, token verification included: checks
    /// `request.target` with `check`, then releases as
    /// [`Broker::release`]. A refused token is audited as a denial.
    ///
    /// # Errors
    ///
    /// As [`Broker::release`], and [`Error::TokenRejected`] (403).
    pub fn release_token(
        &self,
        name: &str,
        request: &ReleaseRequest,
        check: &dyn TokenCheck,
        now: SystemTime,
    ) -> Result<ReleaseResponse, Error> {
        // Unknown keys answer 404 before any token work, as Key Vault does.
        self.key(name)?;
        match check.check(&request.target, now) {
            Ok(claims) => self.release(name, request, &claims, now),
            Err(err) => {
                let identity = unverified_issuer(&request.target).map(|iss| TokenIdentity {
                    iss,
                    ..TokenIdentity::default()
                });
                self.store.append_audit(self.record(
                    now,
                    AuditEvent::Deny,
                    name,
                    None,
                    Some(format!("token rejected: {err}")),
                    identity,
                    None,
                ))?;
                Err(match err {
                    Error::TokenRejected(_) => err,
                    other => Error::TokenRejected(other.to_string()),
                })
            }
        }
    }

    /// Releases key `name` to the holder of a verified token: evaluates the
    /// release policy against `claims`, wraps the key to the token's
    /// `x-ms-runtime.keys` key with `request.enc` (default
    /// `CKM_RSA_AES_KEY_WRAP`), signs the response, and audits the release
    /// (or the denial, with its reason) before answering.
    ///
    /// # Errors
    ///
    /// [`Error::KeyNotFound`] (404); [`Error::Denied`] naming the failing
    /// claims, or a disabled key (403); [`Error::UnsupportedAlgorithm`] or
    /// [`Error::BadKey`] for a token without a usable wrapping key (400);
    /// [`Error::Tampered`], [`Error::Storage`], [`Error::Crypto`] (500).
    pub fn release(
        &self,
        name: &str,
        request: &ReleaseRequest,
        claims: &VerifiedClaims,
        now: SystemTime,
    ) -> Result<ReleaseResponse, Error> {
        check_name(name).map_err(|_| Error::KeyNotFound { name: name.into() })?;
        let (meta_bytes, material) = self
            .store
            .load(name)?
            .ok_or_else(|| Error::KeyNotFound { name: name.into() })?;
        let meta: KeyMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|_| Error::Tampered { name: name.into() })?;
        let identity = claims.identity();
        let deny = |reason: String, err: Error| -> Result<ReleaseResponse, Error> {
            self.store.append_audit(self.record(
                now,
                AuditEvent::Deny,
                name,
                Some(meta.version.clone()),
                Some(reason),
                Some(identity.clone()),
                Some(policy_hash(&meta.release_policy)),
            ))?;
            Err(err)
        };

        let enc = match request.enc.as_deref() {
            None => WrapAlgorithm::RsaAesKeyWrap,
            Some(name) => match WrapAlgorithm::from_name(name) {
                Ok(enc) => enc,
                Err(err) => return deny(err.to_string(), err),
            },
        };
        if !meta.attributes.enabled || !meta.attributes.exportable {
            let err = Error::KeyDisabled { name: name.into() };
            return deny(err.to_string(), err);
        }
        let policy = ReleasePolicy::decode_base64url(&meta.release_policy.data)?;
        if let Decision::Denied(denial) = policy.evaluate(claims.issuer(), claims.claims()) {
            let reason = denial.to_string();
            return deny(reason, Error::Denied(Box::new(denial)));
        }
        let wrapping = match WrappingPublicKey::from_claims(claims.claims()) {
            Ok(key) => key,
            Err(err) => return deny(err.to_string(), err),
        };
        let record = self.record(
            now,
            AuditEvent::Release,
            name,
            Some(meta.version.clone()),
            Some(enc.name().to_owned()),
            Some(identity.clone()),
            Some(policy_hash(&meta.release_policy)),
        );
        // The audit commit (an fsync) and the wrap and signature (CPU)
        // overlap; the response leaves only once its record is durable.
        let sign = || self.sign_release(&meta, material, &wrapping, enc, request);
        let (audited, signed) = std::thread::scope(|s| {
            let audit = std::thread::Builder::new()
                .name("skr-audit".to_owned())
                .spawn_scoped(s, || self.store.append_audit(record.clone()));
            match audit {
                Ok(audit) => {
                    let signed = sign();
                    let audited = audit
                        .join()
                        .unwrap_or_else(|_| Err(Error::storage("audit append panicked")));
                    (audited, signed)
                }
                // No thread to spare: one after the other.
                Err(_) => (self.store.append_audit(record.clone()), sign()),
            }
        });
        audited?;
        match signed {
            Ok(jws) => Ok(ReleaseResponse { value: jws }),
            // Audited as a release, but nothing left: say so in the log.
            Err(err) => deny(format!("release failed after it was audited: {err}"), err),
        }
    }

    /// The signed release response: `material` wrapped to `wrapping` with
    /// `enc`, in the payload Managed HSM sends, as an RS256 JWS.
    fn sign_release(
        &self,
        meta: &KeyMeta,
        material: Zeroizing<Vec<u8>>,
        wrapping: &WrappingPublicKey,
        enc: WrapAlgorithm,
        request: &ReleaseRequest,
    ) -> Result<String, Error> {
        let kty = KeyType::from_kty(&meta.kty)?;
        // Re-read through the type check: stored material must still be a
        // key of its recorded type.
        let material = KeyMaterial::from_bytes(kty, material)?;
        let ciphertext = wrap_key(wrapping, enc, material.bytes())?;
        let key_hsm = KeyHsm {
            schema_version: "1.0.0".to_owned(),
            header: KeyHsmHeader {
                alg: "dir".to_owned(),
                enc: enc.name().to_owned(),
                kid: wrapping.kid().map(str::to_owned),
            },
            ciphertext: URL_SAFE_NO_PAD.encode(&ciphertext),
        };
        let kid = self.kid(meta);
        let payload = ReleasePayload {
            request: PayloadRequest {
                api_version: self.config.api_version.clone(),
                enc: enc.name().to_owned(),
                kid: kid.clone(),
                nonce: request.nonce.clone(),
            },
            response: PayloadResponse {
                key: ReleasedKeyBundle {
                    attributes: meta.attributes.clone(),
                    key: WrappedJwk {
                        key_hsm: URL_SAFE_NO_PAD
                            .encode(serde_json::to_vec(&key_hsm).map_err(Error::storage)?),
                        kid,
                        kty: meta.kty.clone(),
                        key_ops: meta.key_ops.clone(),
                    },
                    release_policy: ReleasePolicyBody {
                        content_type: meta.release_policy.content_type.clone(),
                        data: meta.release_policy.data.clone(),
                        immutable: None,
                    },
                },
            },
        };
        self.signer
            .sign(&serde_json::to_vec(&payload).map_err(Error::storage)?)
    }

    /// `PATCH /keys/{name}`: replaces the release policy and/or sets
    /// `enabled`. An immutable policy cannot be changed (409); `exportable`
    /// cannot be turned off.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] (401), [`Error::KeyNotFound`] (404),
    /// [`Error::PolicyImmutable`] (409), [`Error::BadRequest`] and policy
    /// errors (400), [`Error::Storage`] (500).
    pub fn update(
        &self,
        authorization: Option<&str>,
        name: &str,
        request: &UpdateKeyRequest,
        now: SystemTime,
    ) -> Result<KeyBundle, Error> {
        self.check_admin(authorization, name, now)?;
        check_name(name).map_err(|_| Error::KeyNotFound { name: name.into() })?;
        let write = self.store.begin()?;
        let (meta_bytes, material) = write
            .load(name)?
            .ok_or_else(|| Error::KeyNotFound { name: name.into() })?;
        let mut meta: KeyMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|_| Error::Tampered { name: name.into() })?;
        if let Some(body) = &request.release_policy {
            let (_, canonical) = canonical_policy(body)?;
            if meta.release_policy.immutable == Some(true) {
                let same =
                    canonical.data == meta.release_policy.data && canonical.immutable == Some(true);
                if !same {
                    return Err(Error::PolicyImmutable { name: name.into() });
                }
            }
            meta.release_policy = canonical;
        }
        if let Some(attributes) = &request.attributes {
            if attributes.exportable == Some(false) {
                return Err(Error::BadRequest(
                    "exportable cannot be turned off".to_owned(),
                ));
            }
            if let Some(enabled) = attributes.enabled {
                meta.attributes.enabled = enabled;
            }
        }
        meta.attributes.updated = unix(now);
        let meta_bytes = serde_json::to_vec(&meta).map_err(Error::storage)?;
        write.put_key(name, &meta_bytes, &material)?;
        write.audit(self.record(
            now,
            AuditEvent::UpdatePolicy,
            name,
            Some(meta.version.clone()),
            None,
            None,
            Some(policy_hash(&meta.release_policy)),
        ))?;
        write.commit()?;
        Ok(self.bundle(&meta))
    }

    /// The audit log as JSON lines (entries, then the signed head), for
    /// [`crate::verify_audit_jsonl`].
    ///
    /// # Errors
    ///
    /// [`Error::Storage`].
    pub fn export_audit(&self) -> Result<Vec<u8>, Error> {
        let (entries, head) = self.store.audit_entries()?;
        Ok(crate::audit::export_jsonl(&entries, &head))
    }

    /// Verifies the stored audit log with the master key: chain, every MAC
    /// and the head.
    ///
    /// # Errors
    ///
    /// [`Error::AuditBroken`] at the first bad record.
    pub fn verify_audit(&self) -> Result<AuditReport, Error> {
        let (entries, head) = self.store.audit_entries()?;
        verify_entries(
            entries.iter().map(Vec::as_slice),
            Some(&head),
            Some(self.store.audit_key()),
        )
    }
}
