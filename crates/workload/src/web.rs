//! The consumer's web page at `/`: static HTML, JavaScript and CSS built
//! into the binary, no framework, nothing loaded from elsewhere.
//!
//! The page verifies in the browser, with WebCrypto: the attestation
//! token's RS256 signature against the JWKS that the browser fetches
//! itself from the issuer the user pins (`ISSUER/certs`, never through
//! the workload; `confsum attest serve` allows that cross-origin read),
//! the issuer, expiry, debug flag, VMPL, emulated flag, host_data against
//! the value the user pins, report_data against the runtime data, and
//! every signed answer's ES256 signature against the attested signing key
//! (and `request_sha256` against the body it sent). It lists what it does
//! not check: the AMD certificate chain and the report signature (the
//! attestation service checks those), and the page itself, which the
//! workload serves.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and
//! styles only from this origin (no inline code), no frames, no forms,
//! and connections only to this origin and to HTTPS (or loopback HTTP)
//! attestation services, whose JWKS the page must fetch.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

const INDEX: &str = include_str!("web/index.html");
const APP: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");
const ICON: &str = include_str!("web/favicon.svg");

/// The Content-Security-Policy of every page answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; \
     connect-src 'self' https: http://127.0.0.1:* http://localhost:*; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`, `/app.js`, `/style.css` and `/favicon.svg`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { page("image/svg+xml", ICON) }),
        )
}
