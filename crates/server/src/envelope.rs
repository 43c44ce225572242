//! The one JSON error envelope, in the shape Key Vault, Managed HSM and
//! Microsoft Azure Attestation answer with: `{"error":{"code","message"}}`.

use std::borrow::Cow;

use axum::{
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

/// An error answer: an HTTP status and the envelope
/// `{"error":{"code":…,"message":…}}`.
///
/// Services map their typed errors to one of these (for the attestation
/// service, [`crate::attest::api_error`]); handlers return
/// `Result<_, ApiError>`.
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use confsum_server::ApiError;
///
/// let answer = ApiError::forbidden("Forbidden", "claim x-ms-sevsnpvm-hostdata differs");
/// assert_eq!(answer.status(), StatusCode::FORBIDDEN);
/// assert_eq!(answer.into_response().status(), StatusCode::FORBIDDEN);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl ApiError {
    /// An answer with `status`, the machine-readable `code` (Azure's are
    /// PascalCase, such as `BadParameter` or `KeyNotFound`) and a message
    /// for people.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 Not Found.
    pub fn not_found(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409 Conflict.
    pub fn conflict(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500 Internal Server Error, code `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The envelope's `code`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The envelope's `message`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: RemoteError {
                code: self.code.into_owned(),
                message: self.message,
            },
        };
        json(self.status, &body)
    }
}

/// An error and its sources, joined with `": "`: the message of an
/// [`ApiError`] made from a typed error.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A JSON response (`application/json; charset=utf-8`).
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            bytes,
        )
            .into_response(),
        // Only a type with a failing Serialize impl gets here.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The `error` member of an envelope, as a client reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The machine-readable code.
    pub code: String,
    /// The message.
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) error: RemoteError,
}

/// 404 with code `NotFound`: the fallback routers set for unknown paths.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "NotFound",
        format!("no such endpoint: {}", request.uri().path()),
    )
}

/// 405 with code `MethodNotAllowed`: the fallback routers set for a known
/// path with another method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The request body as bytes, at most the server's body limit
/// ([`crate::Limits::body_bytes`]); a body over it is refused with 413
/// (`PayloadTooLarge`) in the envelope, where axum's own extractor would
/// answer in plain text.
#[derive(Debug, Clone)]
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLarge",
                    "the request body is larger than this service accepts",
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(
                "InvalidRequest",
                rejection.body_text(),
            )),
        }
    }
}
