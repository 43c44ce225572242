//! A local attestation service that speaks Microsoft Azure Attestation's
//! SEV-SNP protocol.
//!
//! - `POST /attest/SevSnpVM?api-version=2020-10-01` with an
//!   [`AttestRequest`]: the evidence's report and PEM chain are verified
//!   (AMD's roots, plus the emulated TEE's ARK only when the service was
//!   made with one), `report_data` must be SHA-256 of the runtime data
//!   bytes followed by 32 zero bytes, and the answer is an
//!   [`AttestResponse`] `{"token": …}` signed by the [`TokenIssuer`].
//! - `GET /certs`: the issuer's [`crate::Jwks`].
//!
//! Errors are `{"error":{"code":…,"message":…}}`: 400 for a malformed
//! request (bad JSON, base64url, report length or version, wrong or missing
//! `api-version`, runtime data that report_data does not commit to), 403
//! for evidence that does not verify (signature, chain, unknown root), 404
//! and 405 for other paths and methods.
//!
//! Tokens never carry `x-ms-compliance-status: azure-compliant-uvm`: for
//! emulated evidence that would be a lie, and for real AMD evidence this
//! service does not check the UVM endorsements (the COSE_Sign1 documents
//! Azure signs) yet, so it cannot claim the UVM is Azure's. Tokens for
//! evidence that chains to the emulated root carry
//! `x-confsum-insecure-emulated: true`.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sha2::{Digest as _, Sha256};

use crate::{
    AttestRequest, AttestResponse, CertChain, Error, RuntimeClaims, TokenClaims, TokenIssuer,
    TrustedRoots, Verifier, insecure::INSECURE_WARNING,
};

/// The one `api-version` accepted.
pub const API_VERSION: &str = "2020-10-01";

/// How long issued tokens are valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The largest request body read.
const MAX_BODY: usize = 1024 * 1024;

struct Inner {
    issuer: TokenIssuer,
    verifier: Verifier,
}

/// The attestation service: a [`TokenIssuer`] and the roots it trusts.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("issuer", &self.inner.issuer)
            .field("roots", &self.inner.verifier.roots().len())
            .finish()
    }
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// Maps a crate error from decoding or verifying evidence.
    fn from_evidence(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::BadRequest(_) | Error::BadRuntimeData(_) => {
                ApiError::bad_request("InvalidRequest", message)
            }
            Error::ReportLength(_) | Error::UnsupportedReportVersion(_) => {
                ApiError::bad_request("InvalidReport", message)
            }
            _ => ApiError {
                status: StatusCode::FORBIDDEN,
                code: "EvidenceNotVerified",
                message,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        json_response(self.status, &body)
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

impl Service {
    /// A service that signs with `issuer` and trusts AMD's roots and, only
    /// when `insecure_root` is given (the emulated TEE's ARK, DER), that
    /// root too. Prints a loud warning when it is.
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] if `insecure_root` is not a certificate.
    pub fn new(issuer: TokenIssuer, insecure_root: Option<Vec<u8>>) -> Result<Self, Error> {
        let mut roots = TrustedRoots::amd();
        if let Some(der) = insecure_root {
            eprintln!("{INSECURE_WARNING} (the attestation service accepts emulated evidence)");
            roots.add_insecure_root(&der)?;
        }
        Ok(Service {
            inner: Arc::new(Inner {
                issuer,
                verifier: Verifier::new(roots),
            }),
        })
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/attest/SevSnpVM", post(attest))
            .route("/certs", get(certs))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Checks one request body and returns the token.
    fn attest(&self, body: &[u8], now: SystemTime) -> Result<AttestResponse, ApiError> {
        let request: AttestRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "InvalidRequest",
                format!("body is not an attestation request: {e}"),
            )
        })?;
        let evidence = request.evidence().map_err(ApiError::from_evidence)?;
        let report = evidence.report_bytes().map_err(ApiError::from_evidence)?;
        let chain_pem = evidence.cert_chain_pem().map_err(ApiError::from_evidence)?;
        let runtime = request
            .runtime_data
            .bytes()
            .map_err(ApiError::from_evidence)?;
        if !request.runtime_data.data_type.eq_ignore_ascii_case("JSON") {
            return Err(ApiError::bad_request(
                "InvalidRequest",
                format!(
                    "runtimeData.dataType {:?} is not supported: only \"JSON\"",
                    request.runtime_data.data_type
                ),
            ));
        }
        let chain = CertChain::from_pem(&chain_pem)
            .map_err(|e| ApiError::bad_request("InvalidRequest", format!("VcekCertChain: {e}")))?;
        let verified = self
            .inner
            .verifier
            .verify(&report, &chain, now)
            .map_err(ApiError::from_evidence)?;
        let digest = Sha256::digest(&runtime);
        let (hash, rest) = verified.report_data.split_at(32);
        if hash != digest.as_slice() || rest.iter().any(|&b| b != 0) {
            return Err(ApiError::bad_request(
                "RuntimeDataMismatch",
                "report_data is not SHA-256 of runtimeData.data followed by 32 zero bytes",
            ));
        }
        let runtime = RuntimeClaims::from_json(&runtime).map_err(ApiError::from_evidence)?;
        let insecure = verified.insecure_root();
        if insecure {
            eprintln!("{INSECURE_WARNING} (issuing a token for emulated evidence)");
        }
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
        let claims = claims.build().map_err(ApiError::from_evidence)?;
        let token = self
            .inner
            .issuer
            .issue(&claims, now, TOKEN_LIFETIME)
            .map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalError",
                message: e.to_string(),
            })?;
        Ok(AttestResponse { token })
    }
}

/// The value of `api-version` in a query string.
fn api_version(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "api-version")
        .map(|(_, v)| v)
}

async fn attest(
    State(service): State<Service>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    match api_version(query.as_deref()) {
        Some(API_VERSION) => {}
        Some(other) => {
            return ApiError::bad_request(
                "InvalidApiVersion",
                format!("api-version {other:?} is not supported: use {API_VERSION}"),
            )
            .into_response();
        }
        None => {
            return ApiError::bad_request(
                "MissingApiVersion",
                format!("the api-version query parameter is required ({API_VERSION})"),
            )
            .into_response();
        }
    }
    match service.attest(&body, SystemTime::now()) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(err) => err.into_response(),
    }
}

async fn certs(State(service): State<Service>) -> Response {
    json_response(StatusCode::OK, &service.inner.issuer.jwks())
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "NotFound",
        message: "no such endpoint: use POST /attest/SevSnpVM or GET /certs".to_owned(),
    }
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "MethodNotAllowed",
        message: "use POST for /attest/SevSnpVM and GET for /certs".to_owned(),
    }
    .into_response()
}

/// Serves `service` on `listener` until the process ends, on the current
/// tokio runtime.
///
/// # Errors
///
/// The I/O error that stopped the server.
pub async fn serve(listener: tokio::net::TcpListener, service: Service) -> io::Result<()> {
    axum::serve(listener, service.router()).await
}

/// Binds `addr` (port 0 picks a free one) from blocking code and returns
/// the listener with the address it got, for [`serve_blocking`].
///
/// # Errors
///
/// The I/O error from binding.
pub fn bind(addr: SocketAddr) -> io::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `service` on `listener` on a new single-threaded tokio runtime,
/// blocking the calling thread until the server stops.
///
/// # Errors
///
/// The I/O error that stopped the server or kept the runtime from starting.
pub fn serve_blocking(listener: std::net::TcpListener, service: Service) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        serve(listener, service).await
    })
}

#[cfg(test)]
mod tests {
    use super::api_version;

    #[test]
    fn reads_api_version() {
        assert_eq!(
            api_version(Some("api-version=2020-10-01")),
            Some("2020-10-01")
        );
        assert_eq!(api_version(Some("a=b&api-version=x")), Some("x"));
        assert_eq!(api_version(Some("a=b")), None);
        assert_eq!(api_version(None), None);
    }
}
