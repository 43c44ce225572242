//! The attestation service on HTTP: `POST /attest/SevSnpVM` and
//! `GET /certs`, as Microsoft Azure Attestation serves them.

use std::time::SystemTime;

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::Response,
    routing::{get, post},
};
use confsum_attest::{Error, RequestError, Service};

use crate::{ApiError, Body, envelope::json, error_chain};

/// The routes of `service`:
///
/// - `POST /attest/SevSnpVM?api-version=2020-10-01` with an attestation
///   request answers `{"token": …}` ([`Service::attest`]);
/// - `GET /certs` answers the signing keys ([`Service::jwks`]), with
///   `Access-Control-Allow-Origin: *` so that a consumer's web page can
///   fetch them itself (they are public keys; nothing else here allows
///   cross-origin reads);
/// - anything else is 404 or 405 in the error envelope.
///
/// Mount it with [`crate::Server::serve`]. Verification runs on tokio's
/// blocking pool, so a slow request does not stall the others.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/attest/SevSnpVM", post(attest))
        .route("/certs", get(certs))
        .fallback(crate::not_found)
        .method_not_allowed_fallback(crate::method_not_allowed)
        .with_state(service)
}

/// The answer to a refused attestation request, from the cause:
///
/// | status | code | causes |
/// |---|---|---|
/// | 400 | `MissingApiVersion`, `InvalidApiVersion` | the `api-version` parameter |
/// | 400 | `RuntimeDataMismatch` | report_data does not commit to the runtime data |
/// | 400 | `InvalidRequest` | a malformed body, field, chain or runtime data |
/// | 400 | `InvalidReport` | a report of the wrong length or version |
/// | 500 | `InternalError` | signing the token failed |
/// | 403 | `EvidenceNotVerified` | everything else: the evidence does not verify |
///
/// The message is the error with its causes.
pub fn api_error(error: &Error) -> ApiError {
    let message = error_chain(error);
    match error {
        Error::BadRequest(RequestError::MissingApiVersion) => {
            ApiError::bad_request("MissingApiVersion", message)
        }
        Error::BadRequest(RequestError::UnsupportedApiVersion(_)) => {
            ApiError::bad_request("InvalidApiVersion", message)
        }
        Error::BadRequest(RequestError::RuntimeDataMismatch) => {
            ApiError::bad_request("RuntimeDataMismatch", message)
        }
        Error::BadRequest(_) | Error::BadRuntimeData(_) => {
            ApiError::bad_request("InvalidRequest", message)
        }
        Error::ReportLength(_) | Error::UnsupportedReportVersion(_) => {
            ApiError::bad_request("InvalidReport", message)
        }
        Error::BadKey(_) | Error::BadTime(_) | Error::ClaimConflict(_) | Error::Token(_) => {
            ApiError::internal(message)
        }
        _ => ApiError::forbidden("EvidenceNotVerified", message),
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
    Body(body): Body,
) -> Result<Response, ApiError> {
    let version = api_version(query.as_deref()).map(str::to_owned);
    let attested = tokio::task::spawn_blocking(move || {
        service.attest(&body, version.as_deref(), SystemTime::now())
    })
    .await
    .map_err(|_| ApiError::internal("the attestation task failed"))?
    .map_err(|e| api_error(&e))?;
    Ok(json(StatusCode::OK, &attested.response))
}

async fn certs(State(service): State<Service>) -> Response {
    let mut response = json(StatusCode::OK, &service.jwks());
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    response
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
