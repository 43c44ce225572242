//! The attestation service's logic, without HTTP: what a local
//! Microsoft Azure Attestation look-alike answers to
//! `POST /attest/SevSnpVM?api-version=2020-10-01` and `GET /certs`.
//! `confsum-server` maps it to HTTP.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use sha2::{Digest as _, Sha256};

use crate::{
    AttestRequest, AttestResponse, CertChain, Error, Jwks, RequestError, RuntimeClaims,
    TokenClaims, TokenIssuer, TrustedRoots, Verifier,
};

/// The one `api-version` the service accepts.
pub const ATTEST_API_VERSION: &str = "2020-10-01";

/// How long issued tokens are valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

struct Inner {
    issuer: TokenIssuer,
    verifier: Verifier,
}

/// The attestation service: a [`TokenIssuer`] and the roots it trusts.
///
/// [`attest`](Self::attest) takes the body of an attestation request as
/// the confidential sidecar sends it and answers with a token, or with
/// the [`Error`] that says why not:
///
/// - the evidence's report and PEM chain must verify against the trusted
///   roots (AMD's, plus the emulated TEE's ARK only when the roots were
///   given it with [`TrustedRoots::add_insecure_root`]);
/// - report_data must be SHA-256 of the exact runtime data bytes followed
///   by 32 zero bytes; the runtime data must be a JSON object (with any
///   whitespace);
/// - `initTimeData` (empty from the sidecar) is read and ignored, and the
///   nonce (a JSON number up to 2^64 - 1, or a string) is copied into the
///   token.
///
/// Tokens never carry `x-ms-compliance-status: azure-compliant-uvm`: for
/// emulated evidence that would be a lie, and for real AMD evidence this
/// service does not check the UVM endorsements (the COSE_Sign1 documents
/// Azure signs) yet, so it cannot claim the UVM is Azure's. Tokens for
/// evidence that chains to an insecure root carry
/// `x-confsum-insecure-emulated: true`, and [`Attested`] says so too.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use confsum_attest::{AttestRequest, Service, SnpEvidence, TokenIssuer, TrustedRoots,
///     TokenVerifier, ATTEST_API_VERSION};
///
/// // The real ACI capture, with the runtime data the sidecar's test bound
/// // into it (report_data = SHA-256 of these exact bytes).
/// let report = include_bytes!("../testdata/snp_report.bin");
/// let chain = include_bytes!("../testdata/uvm_host_amd_certificate.pem");
/// let runtime = b"{\n   \"akey\" : \"avalue\"\n}\n";
/// let request = AttestRequest::new(&SnpEvidence::new(report, chain, &[]), runtime, None);
/// let body = serde_json::to_vec(&request)?;
///
/// let service = Service::new(TokenIssuer::generate("https://attest.local")?, TrustedRoots::amd());
/// let now = UNIX_EPOCH + Duration::from_secs(1_748_736_000); // 2025-06-01
/// let attested = service.attest(&body, Some(ATTEST_API_VERSION), now)?;
/// assert!(!attested.insecure_emulated);
///
/// let claims = TokenVerifier::new(service.jwks(), "https://attest.local")
///     .verify(&attested.response.token, now)?;
/// assert_eq!(claims.vmpl, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("issuer", &self.inner.issuer)
            .field("roots", &self.inner.verifier.roots().len())
            .field("accepts_insecure", &self.accepts_insecure())
            .finish()
    }
}

/// A token the service issued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attested {
    /// The answer: `{"token": …}`.
    pub response: AttestResponse,
    /// The evidence chained to an insecure root (the emulated TEE): the
    /// token proves nothing about hardware, and says so.
    pub insecure_emulated: bool,
}

impl Service {
    /// A service that signs with `issuer` and trusts `roots`
    /// ([`TrustedRoots::amd`], plus an insecure root only for tests and
    /// local development).
    pub fn new(issuer: TokenIssuer, roots: TrustedRoots) -> Self {
        Service {
            inner: Arc::new(Inner {
                issuer,
                verifier: Verifier::new(roots),
            }),
        }
    }

    /// Whether evidence from an insecure root (the emulated TEE) is
    /// accepted: the caller should warn loudly that it is.
    pub fn accepts_insecure(&self) -> bool {
        self.inner.verifier.roots().has_insecure()
    }

    /// The issuer URL of the tokens (`iss`).
    pub fn issuer(&self) -> &str {
        self.inner.issuer.issuer()
    }

    /// The `/certs` document: the JWKS of the signing key.
    pub fn jwks(&self) -> Jwks {
        self.inner.issuer.jwks()
    }

    /// Answers one attestation request: `body` as sent, `api_version` the
    /// value of the `api-version` query parameter, `now` the time at which
    /// certificates must be valid and tokens start.
    ///
    /// # Errors
    ///
    /// - [`Error::BadRequest`] for a missing or unsupported `api-version`,
    ///   a body that is not an attestation request, fields that are not
    ///   base64url, a `VcekCertChain` that is not a chain, a `dataType`
    ///   other than `JSON`, or report_data that does not commit to the
    ///   runtime data;
    /// - [`Error::BadRuntimeData`] for runtime data that is not a JSON
    ///   object;
    /// - [`Error::ReportLength`] and [`Error::UnsupportedReportVersion`]
    ///   for a report that does not parse;
    /// - the errors of [`Verifier::verify`] for evidence that does not
    ///   verify;
    /// - [`Error::BadKey`], [`Error::BadTime`] if signing fails.
    pub fn attest(
        &self,
        body: &[u8],
        api_version: Option<&str>,
        now: SystemTime,
    ) -> Result<Attested, Error> {
        match api_version {
            Some(ATTEST_API_VERSION) => {}
            Some(other) => return Err(RequestError::UnsupportedApiVersion(other.to_owned()).into()),
            None => return Err(RequestError::MissingApiVersion.into()),
        }
        let request: AttestRequest = serde_json::from_slice(body).map_err(RequestError::Body)?;
        let evidence = request.evidence()?;
        let report = evidence.report_bytes()?;
        let chain_pem = evidence.cert_chain_pem()?;
        let runtime = request.runtime_data.bytes()?;
        if !request.runtime_data.data_type.eq_ignore_ascii_case("JSON") {
            return Err(
                RequestError::UnsupportedDataType(request.runtime_data.data_type.clone()).into(),
            );
        }
        let chain =
            CertChain::from_pem(&chain_pem).map_err(|e| RequestError::CertChain(Box::new(e)))?;
        let verified = self.inner.verifier.verify(&report, &chain, now)?;
        // The binding is to the exact bytes the TEE hashed, whitespace
        // and all (the ACI capture's runtime data ends in a newline).
        let digest = Sha256::digest(&runtime);
        let (hash, rest) = verified.report_data.split_at(32);
        if hash != digest.as_slice() || rest.iter().any(|&b| b != 0) {
            return Err(RequestError::RuntimeDataMismatch.into());
        }
        let runtime = RuntimeClaims::from_json(&runtime)?;
        let insecure = verified.insecure_root();
        let mut claims = TokenClaims::builder()
            .host_data(verified.host_data)
            .debuggable(verified.policy.debug())
            .vmpl(verified.vmpl)
            .report_data(verified.report_data)
            .launch_measurement(verified.measurement)
            .runtime(runtime)
            .insecure_emulated(insecure)
            // Not for emulated evidence, and not for real evidence either:
            // the UVM endorsements are not checked yet.
            .azure_compliant_uvm(false);
        if let Some(nonce) = request.nonce {
            claims = claims.nonce(nonce);
        }
        let token = self
            .inner
            .issuer
            .issue(&claims.build()?, now, TOKEN_LIFETIME)?;
        Ok(Attested {
            response: AttestResponse { token },
            insecure_emulated: insecure,
        })
    }
}
