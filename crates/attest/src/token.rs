//! Attestation tokens compatible with Microsoft Azure Attestation (MAA).
//!
//! An attestation token is an RS256 JWT (RFC 7519, JWS compact
//! serialization) that an attestation service signs after it has checked a
//! TEE's evidence. A key broker releases a key only to a token whose claims
//! satisfy the key's release policy, and wraps the key to the RSA key that
//! the token lists in `x-ms-runtime.keys`.
//!
//! - [`TokenIssuer`] is the local attestation service's signing side: it
//!   holds an RSA-2048 key, publishes it as a [`Jwks`] (the `/certs`
//!   document) and signs [`TokenClaims`].
//! - [`TokenVerifier`] checks a token against a [`Jwks`]: `alg` exactly
//!   `RS256` (checked before any key is looked up), the key named by `kid`,
//!   the signature, `iss`, and `nbf`/`exp` against a caller-supplied time
//!   with a leeway. It never reads the system clock.
//! - [`runtime_keys_match`] checks that the token's runtime keys are the
//!   ones the SNP report's report_data commits to.
//! - [`AttestRequest`], [`AttestResponse`], [`RuntimeData`] and
//!   [`SnpEvidence`] are the bodies of MAA's `attest/SevSnpVM` call.
//!
//! # Which bytes report_data commits to
//!
//! The TEE (the confidential sidecar, or the emulated TEE) serializes its
//! ephemeral key as a JWKS, sends those JSON bytes base64url-encoded as
//! `runtimeData.data`, and puts SHA-256 of exactly those bytes, followed by
//! 32 zero bytes, in report_data. JSON has many spellings of one value, so
//! no re-serialization can be trusted to give the same bytes back. This
//! module therefore never re-serializes runtime data: [`RuntimeClaims`]
//! keeps the JSON text verbatim (the issuer embeds the bytes the TEE sent
//! as the value of `x-ms-runtime`, and the verifier keeps the value's bytes
//! as they stand in the token payload), and [`runtime_keys_match`] hashes
//! that text. A token whose `x-ms-runtime` was re-serialized by its issuer
//! (whitespace or member order changed) does not match, by design. Only
//! whitespace *around* the object is lost (a claim's value starts at `{`):
//! the attestation service checks report_data against the exact bytes it
//! was sent before it issues a token, as Azure's does.

mod jwk;
mod maa;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use rsa::RsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts as _;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub use self::jwk::{Jwk, Jwks};
pub use self::maa::{AttestRequest, AttestResponse, RuntimeData, SnpEvidence};
use crate::{ClaimConflict, Error, KeyError, RuntimeDataError, TimeError, TokenError, TokenPart};

/// The one signature algorithm of attestation tokens.
const ALG: &str = "RS256";

/// The longest token [`TokenVerifier::verify`] looks at. MAA tokens for
/// confidential containers are a few kilobytes to a few tens of kilobytes.
pub const MAX_TOKEN_LEN: usize = 256 * 1024;

/// The default clock-skew leeway of [`TokenVerifier`].
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// `x-ms-attestation-type` of SEV-SNP evidence.
pub const ATTESTATION_TYPE_SEVSNPVM: &str = "sevsnpvm";

/// `x-ms-compliance-status` of evidence from a UVM that Azure signed.
pub const COMPLIANCE_AZURE_UVM: &str = "azure-compliant-uvm";

/// The RSA modulus size of keys that [`TokenIssuer::generate`] makes.
const ISSUER_KEY_BITS: usize = 2048;

/// Serde for fixed-size byte arrays as lowercase hex text (reading either case).
mod hex_array {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        de: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(de)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|_| D::Error::custom(format_args!("expected {} hex digits", 2 * N)))?;
        Ok(out)
    }
}

/// The `x-ms-runtime` claim: the runtime data the TEE sent (its JWKS), kept
/// as the exact JSON text (see the module docs for why).
#[derive(Debug, Clone)]
pub struct RuntimeClaims {
    raw: Box<RawValue>,
}

impl RuntimeClaims {
    /// Runtime claims from the JSON bytes the TEE hashed into report_data
    /// (the decoded `runtimeData.data` of the request): one JSON object,
    /// with any whitespace inside or around it.
    ///
    /// Whitespace around the object cannot stand in a token (the claim's
    /// value starts at `{` and ends at `}`), so [`json`](Self::json) drops
    /// it and keeps the rest byte for byte. Such runtime data is accepted
    /// because report_data commits to the exact bytes, which the service
    /// checks before it issues a token (Azure does the same); but
    /// [`report_data`](Self::report_data) and [`runtime_keys_match`] hash
    /// the text as the token holds it, so for runtime data that had
    /// surrounding whitespace they cannot match. The sidecar's runtime
    /// data (a compact JWKS) has none.
    ///
    /// # Errors
    ///
    /// [`Error::BadRuntimeData`] if the bytes are not UTF-8 or not one
    /// JSON object.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(json).map_err(|_| RuntimeDataError::NotUtf8)?;
        // JSON's whitespace: space, tab, line feed, carriage return.
        let text = text.trim_matches([' ', '\t', '\n', '\r']);
        let raw = RawValue::from_string(text.to_owned()).map_err(RuntimeDataError::NotJson)?;
        Ok(Self::from_raw(raw)?)
    }

    /// Checks that a raw value is a JSON object.
    fn from_raw(raw: Box<RawValue>) -> Result<Self, RuntimeDataError> {
        if raw.get().starts_with('{') {
            Ok(RuntimeClaims { raw })
        } else {
            Err(RuntimeDataError::NotObject)
        }
    }

    /// The JSON text, byte for byte as the TEE sent it, without surrounding
    /// whitespace.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The JWKS in the runtime data (its `keys` member and nothing else).
    ///
    /// # Errors
    ///
    /// [`Error::BadRuntimeData`] if there is no `keys` array of JWKs.
    pub fn keys(&self) -> Result<Jwks, Error> {
        serde_json::from_str(self.json()).map_err(|err| RuntimeDataError::NotJwks(err).into())
    }

    /// The report_data that commits to this runtime data: SHA-256 of
    /// [`json`](Self::json) followed by 32 zero bytes.
    pub fn report_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&Sha256::digest(self.json().as_bytes()));
        out
    }
}

impl PartialEq for RuntimeClaims {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Eq for RuntimeClaims {}

impl Serialize for RuntimeClaims {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(ser)
    }
}

impl<'de> Deserialize<'de> for RuntimeClaims {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(de)?;
        RuntimeClaims::from_raw(raw).map_err(D::Error::custom)
    }
}

/// The claims of an attestation token, named as MAA names them for
/// `SevSnpVM` evidence. Claims this type does not know are ignored when a
/// token is read.
///
/// Make one with [`TokenClaims::builder`]; [`TokenIssuer::issue`] fills in
/// the registered claims (`iss`, `iat`, `nbf`, `exp`, `jti`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenClaims {
    /// Issuer: the attestation service's base URL.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// `x-ms-attestation-type`: `"sevsnpvm"`.
    #[serde(rename = "x-ms-attestation-type")]
    pub attestation_type: String,
    /// `x-ms-compliance-status`: `"azure-compliant-uvm"` when the UVM is
    /// one that Azure signed; absent otherwise.
    #[serde(
        rename = "x-ms-compliance-status",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compliance_status: Option<String>,
    /// `x-ms-sevsnpvm-hostdata`: the report's host_data (for ACI, SHA-256
    /// of the CCE policy), hex.
    #[serde(rename = "x-ms-sevsnpvm-hostdata", with = "hex_array")]
    pub host_data: [u8; 32],
    /// `x-ms-sevsnpvm-is-debuggable`: the guest policy allows debugging.
    #[serde(rename = "x-ms-sevsnpvm-is-debuggable")]
    pub is_debuggable: bool,
    /// `x-ms-sevsnpvm-vmpl`: the VM privilege level that asked for the report.
    #[serde(rename = "x-ms-sevsnpvm-vmpl")]
    pub vmpl: u32,
    /// `x-ms-sevsnpvm-reportdata`: the report's report_data, hex.
    #[serde(rename = "x-ms-sevsnpvm-reportdata", with = "hex_array")]
    pub report_data: [u8; 64],
    /// `x-ms-sevsnpvm-launchmeasurement`: the launch measurement, hex.
    #[serde(rename = "x-ms-sevsnpvm-launchmeasurement", with = "hex_array")]
    pub launch_measurement: [u8; 48],
    /// `x-ms-runtime`: the runtime data, the TEE's JWKS (`keys`).
    #[serde(
        rename = "x-ms-runtime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime: Option<RuntimeClaims>,
    /// The nonce of the attestation request, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `x-confsum-insecure-emulated`: the evidence came from the emulated
    /// TEE, so nothing about it is hardware-backed. Never together with a
    /// compliance status.
    #[serde(
        rename = "x-confsum-insecure-emulated",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_emulated: bool,
}

impl TokenClaims {
    /// A builder for the evidence claims of a token.
    pub fn builder() -> TokenClaimsBuilder {
        TokenClaimsBuilder::default()
    }

    /// Reads claims from a token payload (JSON), without any check of
    /// signature, issuer or time: use [`TokenVerifier::verify`] for tokens.
    ///
    /// # Errors
    ///
    /// [`Error::Token`] ([`TokenError::Claims`]) if the payload is not the
    /// claims JSON, and [`Error::ClaimConflict`] if it claims both emulated
    /// evidence and a compliance status.
    pub fn from_json(payload: &[u8]) -> Result<Self, Error> {
        let claims: TokenClaims = serde_json::from_slice(payload).map_err(TokenError::Claims)?;
        claims.check_consistent()?;
        Ok(claims)
    }

    /// Refuses emulated evidence that claims to be compliant.
    fn check_consistent(&self) -> Result<(), Error> {
        if self.insecure_emulated && self.compliance_status.is_some() {
            return Err(ClaimConflict::EmulatedCompliant.into());
        }
        Ok(())
    }
}

/// Builds the evidence claims of a [`TokenClaims`]; unset values are zero,
/// `false` or absent.
#[derive(Debug, Clone, Default)]
pub struct TokenClaimsBuilder {
    host_data: [u8; 32],
    report_data: Option<[u8; 64]>,
    launch_measurement: Option<[u8; 48]>,
    vmpl: u32,
    is_debuggable: bool,
    runtime: Option<RuntimeClaims>,
    azure_compliant_uvm: bool,
    insecure_emulated: bool,
    nonce: Option<String>,
}

impl TokenClaimsBuilder {
    /// Sets `x-ms-sevsnpvm-hostdata`.
    pub fn host_data(mut self, host_data: [u8; 32]) -> Self {
        self.host_data = host_data;
        self
    }

    /// Sets `x-ms-sevsnpvm-reportdata`.
    pub fn report_data(mut self, report_data: [u8; 64]) -> Self {
        self.report_data = Some(report_data);
        self
    }

    /// Sets `x-ms-sevsnpvm-launchmeasurement`.
    pub fn launch_measurement(mut self, measurement: [u8; 48]) -> Self {
        self.launch_measurement = Some(measurement);
        self
    }

    /// Sets `x-ms-sevsnpvm-vmpl`.
    pub fn vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }

    /// Sets `x-ms-sevsnpvm-is-debuggable`.
    pub fn debuggable(mut self, is_debuggable: bool) -> Self {
        self.is_debuggable = is_debuggable;
        self
    }

    /// Sets `x-ms-runtime`.
    pub fn runtime(mut self, runtime: RuntimeClaims) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Sets `x-ms-compliance-status` to `"azure-compliant-uvm"` (or leaves
    /// it out).
    pub fn azure_compliant_uvm(mut self, compliant: bool) -> Self {
        self.azure_compliant_uvm = compliant;
        self
    }

    /// Marks the evidence as emulated (`x-confsum-insecure-emulated`).
    pub fn insecure_emulated(mut self, emulated: bool) -> Self {
        self.insecure_emulated = emulated;
        self
    }

    /// Sets the `nonce` claim.
    pub fn nonce(mut self, nonce: impl Into<String>) -> Self {
        self.nonce = Some(nonce.into());
        self
    }

    /// The claims, with empty `iss` and `jti` and zero times for
    /// [`TokenIssuer::issue`] to fill in.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimConflict`] if the evidence is both emulated and
    /// Azure-compliant.
    pub fn build(self) -> Result<TokenClaims, Error> {
        let claims = TokenClaims {
            iss: String::new(),
            iat: 0,
            nbf: 0,
            exp: 0,
            jti: String::new(),
            attestation_type: ATTESTATION_TYPE_SEVSNPVM.to_owned(),
            compliance_status: self
                .azure_compliant_uvm
                .then(|| COMPLIANCE_AZURE_UVM.to_owned()),
            host_data: self.host_data,
            is_debuggable: self.is_debuggable,
            vmpl: self.vmpl,
            report_data: self.report_data.unwrap_or([0; 64]),
            launch_measurement: self.launch_measurement.unwrap_or([0; 48]),
            runtime: self.runtime,
            nonce: self.nonce,
            insecure_emulated: self.insecure_emulated,
        };
        claims.check_consistent()?;
        Ok(claims)
    }
}

/// Unix seconds of a time, for NumericDate claims.
fn unix_seconds(time: SystemTime) -> Result<u64, Error> {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TimeError::BeforeEpoch.into())
}

/// The JOSE header of a token.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    /// Critical extensions (RFC 7515 4.1.11): none is understood, so any
    /// makes the token invalid.
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Signs attestation tokens: the key of a local attestation service.
///
/// Signing uses *ring* (RSASSA-PKCS1-v1_5 with SHA-256), whose RSA
/// private-key operations are constant-time; the `rsa` crate's are not
/// (RUSTSEC-2023-0071, the Marvin attack, unpatched in every `rsa`
/// release) and a service signs on request, where timing can be observed.
/// *ring* cannot make RSA keys, so [`generate`](Self::generate) draws the
/// key with `rsa` (one key generation, not a repeated operation an
/// attacker can time) and hands it to *ring* as PKCS#8.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use confsum_attest::{TokenClaims, TokenIssuer, TokenVerifier};
///
/// let issuer = TokenIssuer::generate("https://attest.local")?;
/// let claims = TokenClaims::builder().host_data([7; 32]).build()?;
/// let now = SystemTime::now();
/// let token = issuer.issue(&claims, now, Duration::from_secs(3600))?;
///
/// // The `/certs` document is `issuer.jwks()`.
/// let checked = TokenVerifier::new(issuer.jwks(), "https://attest.local").verify(&token, now)?;
/// assert_eq!(checked.host_data, [7; 32]);
/// # Ok::<(), confsum_attest::Error>(())
/// ```
pub struct TokenIssuer {
    issuer: String,
    key: RsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    jwk: Jwk,
    random: SystemRandom,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer named `issuer_url` with a fresh RSA-2048 signing key.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if key generation fails (no randomness).
    pub fn generate(issuer_url: &str) -> Result<Self, Error> {
        let key =
            RsaPrivateKey::new(&mut OsRng, ISSUER_KEY_BITS).map_err(|_| KeyError::Generation)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Encoding)?;
        Self::from_pkcs8_der(issuer_url, der.as_bytes())
    }

    /// An issuer named `issuer_url` with an RSA key from PKCS#8 PEM
    /// (`-----BEGIN PRIVATE KEY-----`), 2048 to 4096 bits.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the PEM is not such a key.
    pub fn from_pkcs8_pem(issuer_url: &str, pem: &str) -> Result<Self, Error> {
        let (label, der) =
            der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| KeyError::NotPkcs8)?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(KeyError::NotPkcs8.into());
        }
        Self::from_pkcs8_der(issuer_url, &der)
    }

    /// An issuer named `issuer_url` with an RSA key from PKCS#8 DER,
    /// 2048 to 4096 bits.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the bytes are not such a key.
    pub fn from_pkcs8_der(issuer_url: &str, der: &[u8]) -> Result<Self, Error> {
        let key = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected)?;
        let bits = key.public().modulus_len() * 8;
        if !(2048..=4096).contains(&bits) {
            return Err(KeyError::Size { bits }.into());
        }
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
        let mut jwk = Jwk::from_rsa_components(&public.n, &public.e);
        jwk.key_use = Some("sig".to_owned());
        jwk.alg = Some(ALG.to_owned());
        Ok(TokenIssuer {
            issuer: issuer_url.to_owned(),
            key,
            pkcs8: Zeroizing::new(der.to_vec()),
            jwk,
            random: SystemRandom::new(),
        })
    }

    /// The signing key as PKCS#8 PEM, to keep it across restarts.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &self.pkcs8)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Encoding.into())
    }

    /// The issuer URL (`iss` of every token).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        self.jwk.kid.as_deref().unwrap_or_default()
    }

    /// The public signing key as a JWK (`kty`, `kid`, `use: "sig"`,
    /// `alg: "RS256"`, `n`, `e`).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The `/certs` document: a JWKS holding [`jwk`](Self::jwk).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Signs `claims` as a token valid from `now` for `lifetime`.
    ///
    /// `iss`, `iat`, `nbf`, `exp` and `jti` are set here, whatever `claims`
    /// holds; the header is `{"alg":"RS256","jku":"<issuer>/certs","kid":…,
    /// "typ":"JWT"}`, as MAA writes it.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimConflict`] for emulated evidence with a compliance
    /// status, [`Error::BadTime`] for a time before 1970 or a lifetime that
    /// overflows, [`Error::BadKey`] ([`KeyError::Signing`]) if the system's
    /// randomness fails.
    pub fn issue(
        &self,
        claims: &TokenClaims,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<String, Error> {
        claims.check_consistent()?;
        let iat = unix_seconds(now)?;
        let exp = iat
            .checked_add(lifetime.as_secs())
            .filter(|&exp| exp <= i64::MAX as u64)
            .ok_or(TimeError::LifetimeTooLong)?;
        let mut jti = [0u8; 32];
        self.random.fill(&mut jti).map_err(|_| KeyError::Signing)?;
        let mut claims = claims.clone();
        claims.iss = self.issuer.clone();
        claims.iat = iat;
        claims.nbf = iat;
        claims.exp = exp;
        claims.jti = hex::encode(jti);

        let header = Header {
            alg: ALG.to_owned(),
            jku: Some(format!("{}/certs", self.issuer.trim_end_matches('/'))),
            kid: Some(self.kid().to_owned()),
            typ: Some("JWT".to_owned()),
            crit: None,
        };
        let header = serde_json::to_vec(&header).map_err(TokenError::Header)?;
        let payload = serde_json::to_vec(&claims).map_err(TokenError::Claims)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.random,
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| KeyError::Signing)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}

/// Checks attestation tokens against an attestation service's JWKS.
///
/// Verification is a public-key operation and uses the `rsa` crate
/// (RUSTSEC-2023-0071 concerns private-key operations only). It never
/// reads the clock: the caller passes `now`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use confsum_attest::{Error, TokenClaims, TokenError, TokenIssuer, TokenVerifier};
///
/// let issuer = TokenIssuer::generate("https://attest.local")?;
/// let now = SystemTime::now();
/// let token = issuer.issue(&TokenClaims::builder().build()?, now, Duration::from_secs(60))?;
///
/// let verifier = TokenVerifier::new(issuer.jwks(), "https://attest.local");
/// verifier.verify(&token, now)?;
/// // An hour later it has expired, and the error says so in a type.
/// let later = now + Duration::from_secs(3600);
/// assert!(matches!(
///     verifier.verify(&token, later),
///     Err(Error::Token(TokenError::Expired { .. }))
/// ));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    jwks: Jwks,
    issuer: String,
    leeway: Duration,
}

impl TokenVerifier {
    /// A verifier that trusts the keys in `jwks` for tokens whose `iss` is
    /// exactly `expected_issuer`, with a leeway of [`DEFAULT_LEEWAY`].
    pub fn new(jwks: Jwks, expected_issuer: &str) -> Self {
        TokenVerifier {
            jwks,
            issuer: expected_issuer.to_owned(),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Sets the clock-skew leeway applied to `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Checks `token` at time `now` and returns its claims.
    ///
    /// In order: length (at most [`MAX_TOKEN_LEN`]), three base64url parts,
    /// header JSON, `alg` exactly `RS256` and no `crit`, the key named by
    /// `kid` (a usable RSA key of 2048 to 4096 bits, from `n`/`e` or
    /// `x5c[0]`), the signature, the claims, `iss`, then `nbf` and `exp`
    /// with the leeway.
    ///
    /// # Errors
    ///
    /// [`Error::Token`] with the [`TokenError`] of the check that failed
    /// first; [`Error::ClaimConflict`] for contradictory claims and
    /// [`Error::BadTime`] for a `now` before 1970.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<TokenClaims, Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            }
            .into());
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotCompact.into());
        };
        let header = decode_part(header_b64, TokenPart::Header)?;
        let header: Header = serde_json::from_slice(&header).map_err(TokenError::Header)?;
        if header.alg != ALG {
            return Err(TokenError::AlgorithmRefused(header.alg).into());
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader.into());
        }
        let kid = header.kid.unwrap_or_default();
        let jwk = self
            .jwks
            .find(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let refused = |error| TokenError::KeyRefused {
            kid: kid.clone(),
            error,
        };
        if let Some(alg) = jwk.alg.as_deref().filter(|&alg| alg != ALG) {
            return Err(refused(KeyError::NotForRs256(alg.to_owned())).into());
        }
        if let Some(key_use) = jwk.key_use.as_deref().filter(|&u| u != "sig") {
            return Err(refused(KeyError::NotForSignatures(key_use.to_owned())).into());
        }
        let public = jwk.rsa_key().map_err(refused)?;

        let signature = decode_part(signature_b64, TokenPart::Signature)?;
        if signature.len() != public.size() {
            return Err(TokenError::BadSignature.into());
        }
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = token
            .as_bytes()
            .get(..signed_len)
            .ok_or(TokenError::NotCompact)?;
        // ring, not the rsa crate: every key release verifies one token,
        // and the whole check takes 44 µs where rsa's signature check
        // alone took 440-470 µs.
        let (n, e) = (public.n().to_bytes_be(), public.e().to_bytes_be());
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed, &signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims = TokenClaims::from_json(&decode_part(payload_b64, TokenPart::Payload)?)?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer {
                expected: self.issuer.clone(),
                found: claims.iss,
            }
            .into());
        }
        let now = unix_seconds(now)?;
        let leeway = self.leeway.as_secs();
        if now.saturating_add(leeway) < claims.nbf {
            return Err(TokenError::NotYetValid {
                nbf: claims.nbf,
                now,
            }
            .into());
        }
        if now > claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            }
            .into());
        }
        Ok(claims)
    }
}

/// Decodes one part of a token: base64url without padding, canonical.
fn decode_part(part: &str, which: TokenPart) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Base64(which))
}

/// Checks that the token's runtime keys are the ones `report_data` (from the
/// verified SNP report) commits to: `report_data[..32]` must be SHA-256 of
/// the `x-ms-runtime` JSON text exactly as it stands in the token (see the
/// module docs), `report_data[32..]` must be zero, and that text must be a
/// JWKS with at least one key.
///
/// The TEE hashes its JWKS into report_data; the service embeds the same
/// bytes in the token; a relying party that holds the verified report
/// checks that they agree:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use confsum_attest::{Jwks, RuntimeClaims, TokenClaims, TokenIssuer, TokenVerifier,
///     runtime_keys_match};
///
/// let issuer = TokenIssuer::generate("https://attest.local")?;
/// let tee_jwks = br#"{"keys":[{"kty":"RSA","kid":"wrap","n":"AQAB","e":"AQAB"}]}"#;
/// let runtime = RuntimeClaims::from_json(tee_jwks)?;
/// let report_data = runtime.report_data();
/// let claims = TokenClaims::builder()
///     .host_data([7; 32])
///     .report_data(report_data)
///     .runtime(runtime)
///     .insecure_emulated(true)
///     .build()?;
/// let now = SystemTime::now();
/// let token = issuer.issue(&claims, now, Duration::from_secs(3600))?;
///
/// let certs: Jwks = serde_json::from_str(&serde_json::to_string(&issuer.jwks())?)?;
/// let checked = TokenVerifier::new(certs, "https://attest.local").verify(&token, now)?;
/// assert_eq!(checked.host_data, [7; 32]);
/// runtime_keys_match(&checked, &report_data)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::BadRuntimeData`] if the token has no usable `x-ms-runtime`,
/// [`Error::RuntimeKeysMismatch`] if the hash differs.
pub fn runtime_keys_match(claims: &TokenClaims, report_data: &[u8; 64]) -> Result<(), Error> {
    let runtime = claims.runtime.as_ref().ok_or(RuntimeDataError::Missing)?;
    if runtime.keys()?.keys.is_empty() {
        return Err(RuntimeDataError::NoKeys.into());
    }
    if runtime.report_data() != *report_data {
        return Err(Error::RuntimeKeysMismatch);
    }
    Ok(())
}
