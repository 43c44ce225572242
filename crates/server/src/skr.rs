//! The key broker on HTTP: the Managed HSM REST subset that the
//! confidential sidecar and Azure's import tool speak, over
//! `confsum-skr`'s HTTP-free [`Broker`].
//!
//! | route | broker call | auth |
//! |---|---|---|
//! | `PUT /keys/{name}` | [`Broker::import`] | admin bearer |
//! | `GET /keys/{name}` | [`Broker::key`] | none |
//! | `PATCH /keys/{name}` | [`Broker::update`] | admin bearer |
//! | `POST /keys/{name}/release` | [`Broker::release_token`] | the attestation token in the body |
//!
//! `?api-version=` is accepted on every route: any 7.x (Key Vault's
//! current line), or none. Errors are Key Vault's `{"error":{"code",
//! "message"}}`: 400 `BadParameter`, 401 `Unauthorized` (with
//! `WWW-Authenticate: Bearer`), 403 `Forbidden` (the message names the
//! failing claim), 404 `KeyNotFound`, 409 `Conflict` (an immutable
//! policy), 500 `InternalError` (no detail).
//!
//! On a release the `Authorization` header is not checked: Managed HSM
//! asks for an AAD token there, but this broker has no AAD, and the
//! attestation token is what authorizes a release.
//!
//! Attestation tokens are checked by a [`TrustedAuthorities`]: one JWKS
//! per trusted attestation service, fetched from `{issuer}/certs` (or
//! given), cached, and fetched again when it is older than the refresh
//! interval or when a token names a key it does not have (key rotation).

use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{post, put},
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_attest::{Jwks, TokenError, TokenVerifier};
use confsum_skr::{
    Broker, Error as SkrError, ImportKeyRequest, ReleaseRequest, TokenCheck, UpdateKeyRequest,
    VerifiedClaims, unverified_issuer,
};
use serde_json::Value;

use crate::{ApiError, Body, Client, envelope::json};

/// How long a fetched JWKS is used before it is fetched again.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(3600);
/// The least time between two fetches of one authority's JWKS when tokens
/// name unknown keys, so that bad tokens cannot make the broker hammer the
/// attestation service.
pub const MIN_JWKS_REFETCH: Duration = Duration::from_secs(30);

/// The state the key broker's routes share.
#[derive(Clone)]
struct BrokerState {
    broker: Arc<Broker>,
    tokens: Arc<dyn TokenCheck>,
}

/// The routes of the key broker (see the module docs), for
/// [`crate::Server::serve`]. Every broker call runs on tokio's blocking
/// pool (storage writes, token checks that may fetch a JWKS).
pub fn router(broker: Arc<Broker>, tokens: Arc<dyn TokenCheck>) -> Router {
    Router::new()
        .route("/keys/{name}", put(import).get(key).patch(update))
        .route("/keys/{name}/release", post(release))
        .fallback(crate::not_found)
        .method_not_allowed_fallback(crate::method_not_allowed)
        .with_state(BrokerState { broker, tokens })
}

/// The answer to a broker error: its status, Key Vault code and message
/// ([`SkrError::to_response`]); 401 also says `WWW-Authenticate: Bearer`.
pub fn api_error(error: &SkrError) -> Response {
    let body = error.to_response();
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = ApiError::new(status, body.error.code, body.error.message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Accepts a missing `api-version` or any 7.x.
fn check_api_version(query: Option<&str>) -> Result<(), ApiError> {
    let version = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "api-version").then_some(v)
        });
    match version {
        None => Ok(()),
        Some(v) if v.starts_with("7.") => Ok(()),
        Some(v) => Err(ApiError::bad_request(
            "BadParameter",
            format!("api-version {v:?} is not supported: use 7.x (7.4)"),
        )),
    }
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Runs a broker call on the blocking pool and answers 200 with its JSON,
/// or the error.
async fn blocking<T, F>(call: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(SystemTime) -> Result<T, SkrError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || call(SystemTime::now())).await {
        Ok(Ok(body)) => json(StatusCode::OK, &body),
        Ok(Err(error)) => api_error(&error),
        Err(_) => ApiError::internal("internal error").into_response(),
    }
}

async fn import(
    State(state): State<BrokerState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    if let Err(error) = check_api_version(query.as_deref()) {
        return error.into_response();
    }
    let auth = authorization(&headers);
    blocking(move |now| {
        // 401 before 400: an anonymous caller learns nothing about bodies.
        state.broker.authorize_admin(auth.as_deref(), &name, now)?;
        let request = ImportKeyRequest::decode(&body)?;
        state.broker.import(auth.as_deref(), &name, &request, now)
    })
    .await
}

async fn key(
    State(state): State<BrokerState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(error) = check_api_version(query.as_deref()) {
        return error.into_response();
    }
    blocking(move |_| state.broker.key(&name)).await
}

async fn update(
    State(state): State<BrokerState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    if let Err(error) = check_api_version(query.as_deref()) {
        return error.into_response();
    }
    let auth = authorization(&headers);
    blocking(move |now| {
        state.broker.authorize_admin(auth.as_deref(), &name, now)?;
        let request = UpdateKeyRequest::decode(&body)?;
        state.broker.update(auth.as_deref(), &name, &request, now)
    })
    .await
}

async fn release(
    State(state): State<BrokerState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> Response {
    if let Err(error) = check_api_version(query.as_deref()) {
        return error.into_response();
    }
    blocking(move |now| {
        let request = ReleaseRequest::decode(&body)?;
        state
            .broker
            .release_token(&name, &request, state.tokens.as_ref(), now)
    })
    .await
}

/// Where an authority's JWKS comes from.
#[derive(Debug, Clone)]
enum JwksSource {
    /// Fetched from this URL, and again when stale.
    Url(String),
    /// Given once (a file); never fetched.
    Fixed,
}

#[derive(Debug)]
struct Cached {
    verifier: TokenVerifier,
    fetched: Instant,
}

#[derive(Debug)]
struct Authority {
    issuer: String,
    source: JwksSource,
    cache: RwLock<Option<Arc<Cached>>>,
    /// Held while fetching, so that one caller fetches and the others
    /// wait for its keys; holds when the last fetch was tried.
    fetching: Mutex<Option<Instant>>,
}

/// A [`TokenCheck`] for the broker: the attestation services it trusts,
/// each with its JWKS, fetched over HTTP(S) with a [`Client`] and cached.
///
/// A token's `iss` (read before verification) picks the authority; then
/// signature, issuer and validity times are checked by
/// [`confsum_attest::TokenVerifier`]. The release policy then sees every
/// claim of the token's payload, not only those confsum-attest names.
///
/// The JWKS of an authority is fetched on first use, again when older
/// than the refresh interval (if that fetch fails, the old keys are used
/// until a fetch succeeds), and again when a token names a key that is
/// not in it, at most once per [`MIN_JWKS_REFETCH`].
#[derive(Debug)]
pub struct TrustedAuthorities {
    client: Client,
    authorities: Vec<Authority>,
    refresh: Duration,
    min_refetch: Duration,
}

fn normalize(issuer: &str) -> &str {
    issuer.trim_end_matches('/')
}

impl TrustedAuthorities {
    /// Trusts no one yet; JWKS documents are fetched with `client`.
    pub fn new(client: Client) -> Self {
        TrustedAuthorities {
            client,
            authorities: Vec::new(),
            refresh: DEFAULT_JWKS_REFRESH,
            min_refetch: MIN_JWKS_REFETCH,
        }
    }

    /// Sets how long a fetched JWKS is used before it is fetched again
    /// (default [`DEFAULT_JWKS_REFRESH`]).
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets the least time between fetches caused by unknown key ids
    /// (default [`MIN_JWKS_REFETCH`]).
    pub fn min_refetch(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// Trusts tokens issued by `issuer` (its base URL, as in the tokens'
    /// `iss`), whose keys are fetched from `{issuer}/certs`, where
    /// Microsoft Azure Attestation and `confsum attest serve` publish
    /// them.
    pub fn trust(self, issuer: &str) -> Self {
        let url = format!("{}/certs", normalize(issuer));
        self.trust_jwks_url(issuer, &url)
    }

    /// Trusts tokens issued by `issuer`, with keys fetched from `jwks_url`.
    pub fn trust_jwks_url(mut self, issuer: &str, jwks_url: &str) -> Self {
        self.authorities.push(Authority {
            issuer: normalize(issuer).to_owned(),
            source: JwksSource::Url(jwks_url.to_owned()),
            cache: RwLock::new(None),
            fetching: Mutex::new(None),
        });
        self
    }

    /// Trusts tokens issued by `issuer` and signed by a key of `jwks`,
    /// which is never fetched.
    pub fn trust_jwks(mut self, issuer: &str, jwks: Jwks) -> Self {
        let issuer = normalize(issuer).to_owned();
        let verifier = TokenVerifier::new(jwks, &issuer);
        self.authorities.push(Authority {
            issuer,
            source: JwksSource::Fixed,
            cache: RwLock::new(Some(Arc::new(Cached {
                verifier,
                fetched: Instant::now(),
            }))),
            fetching: Mutex::new(None),
        });
        self
    }

    /// The trusted issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.authorities.iter().map(|a| a.issuer.as_str())
    }

    /// Fetches the JWKS of `authority`, unless another caller replaced
    /// `seen` (the keys this caller found) meanwhile, or a fetch was tried
    /// less than `min_gap` ago. With `wait` false, gives up at once when
    /// another caller is fetching. Returns the keys to use.
    fn fetch(
        &self,
        authority: &Authority,
        seen: Option<&Arc<Cached>>,
        min_gap: Duration,
        wait: bool,
    ) -> Option<Arc<Cached>> {
        let JwksSource::Url(url) = &authority.source else {
            return read(&authority.cache);
        };
        let mut last = if wait {
            authority
                .fetching
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match authority.fetching.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return read(&authority.cache),
            }
        };
        let current = read(&authority.cache);
        let replaced = match (&current, seen) {
            (Some(current), Some(seen)) => !Arc::ptr_eq(current, seen),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if replaced || last.is_some_and(|t| t.elapsed() < min_gap) {
            return current;
        }
        *last = Some(Instant::now());
        match self.client.fetch_jwks(url) {
            Ok(jwks) => {
                let cached = Arc::new(Cached {
                    verifier: TokenVerifier::new(jwks, &authority.issuer),
                    fetched: Instant::now(),
                });
                *authority
                    .cache
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&cached));
                Some(cached)
            }
            // Keep using the old keys, if any, until a fetch succeeds.
            Err(_) => current,
        }
    }

    fn verifier(&self, authority: &Authority) -> Option<Arc<Cached>> {
        match read(&authority.cache) {
            Some(cached)
                if matches!(authority.source, JwksSource::Fixed)
                    || cached.fetched.elapsed() < self.refresh =>
            {
                Some(cached)
            }
            // Stale: one caller fetches; the others keep the old keys.
            Some(stale) => self.fetch(
                authority,
                Some(&stale),
                self.min_refetch.min(self.refresh),
                false,
            ),
            // None yet: wait for whoever is fetching.
            None => self.fetch(authority, None, Duration::from_secs(1), true),
        }
    }
}

fn read(cache: &RwLock<Option<Arc<Cached>>>) -> Option<Arc<Cached>> {
    cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn rejected(message: impl Into<String>) -> SkrError {
    SkrError::TokenRejected(message.into())
}

impl TokenCheck for TrustedAuthorities {
    fn check(&self, token: &str, now: SystemTime) -> Result<VerifiedClaims, SkrError> {
        let issuer =
            unverified_issuer(token).ok_or_else(|| rejected("the token is not a readable JWT"))?;
        let authority = self
            .authorities
            .iter()
            .find(|a| a.issuer == normalize(&issuer))
            .ok_or_else(|| {
                rejected(format!(
                    "the token's issuer {issuer:?} is not a trusted attestation authority"
                ))
            })?;
        let cached = self.verifier(authority).ok_or_else(|| {
            rejected(format!(
                "the keys of attestation authority {} cannot be fetched",
                authority.issuer
            ))
        })?;
        let verified = match cached.verifier.verify(token, now) {
            Err(confsum_attest::Error::Token(TokenError::UnknownKey(_))) => {
                // Perhaps the authority rotated its keys.
                match self.fetch(authority, Some(&cached), self.min_refetch, true) {
                    Some(fresh) if !Arc::ptr_eq(&fresh, &cached) => {
                        fresh.verifier.verify(token, now)
                    }
                    _ => cached.verifier.verify(token, now),
                }
            }
            other => other,
        }
        .map_err(|e| {
            rejected(format!(
                "the attestation token is invalid: {}",
                crate::error_chain(&e)
            ))
        })?;
        // Verified: every claim of the payload, as the service wrote it.
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .ok_or_else(|| rejected("the token's payload is not JSON"))?;
        let claims = VerifiedClaims::from_value(payload)?;
        if normalize(claims.issuer()) != normalize(&verified.iss) {
            return Err(rejected("the token's issuer is ambiguous"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::check_api_version;

    #[test]
    fn api_versions() {
        assert!(check_api_version(None).is_ok());
        assert!(check_api_version(Some("api-version=7.4")).is_ok());
        assert!(check_api_version(Some("x=1&api-version=7.3")).is_ok());
        assert!(check_api_version(Some("x=1")).is_ok());
        assert!(check_api_version(Some("api-version=2020-10-01")).is_err());
    }
}
