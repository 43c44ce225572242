//! One blocking HTTP client (ureq, rustls with *ring*) for every outgoing
//! call: JWKS and certificate fetches, attestation requests, key broker
//! and Managed HSM REST calls.

use std::{sync::Arc, time::Duration};

use confsum_attest::{ATTEST_API_VERSION, AttestRequest, AttestResponse, Jwks};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use serde::{Serialize, de::DeserializeOwned};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::{Envelope, Error};

/// The default whole-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default largest answer read: JWKS documents, certificates, tokens
/// and key releases are a few kilobytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    fn as_http(self) -> ureq::http::Method {
        match self {
            Method::Get => ureq::http::Method::GET,
            Method::Post => ureq::http::Method::POST,
            Method::Put => ureq::http::Method::PUT,
            Method::Patch => ureq::http::Method::PATCH,
            Method::Delete => ureq::http::Method::DELETE,
        }
    }
}

/// One request for [`Client::send`]: a method, a URL, optionally a
/// bearer token and a JSON body.
///
/// ```
/// use confsum_server::{Method, Request};
///
/// let release = Request::post_json(
///     "https://myhsm.managedhsm.azure.net/keys/k/release?api-version=7.4",
///     &serde_json::json!({"target": "eyJ…"}),
/// )?
/// .bearer("aad-token");
/// assert_eq!(release.method(), Method::Post);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Request<'a> {
    method: Method,
    url: &'a str,
    bearer: Option<&'a str>,
    json: Option<Vec<u8>>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bearer token.
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("bearer", &self.bearer.map(|_| "…"))
            .field("json_bytes", &self.json.as_ref().map(Vec::len))
            .finish()
    }
}

impl<'a> Request<'a> {
    /// A request without a body.
    pub fn new(method: Method, url: &'a str) -> Self {
        Request {
            method,
            url,
            bearer: None,
            json: None,
        }
    }

    /// GET `url`.
    pub fn get(url: &'a str) -> Self {
        Request::new(Method::Get, url)
    }

    /// `method` `url` with `body` as JSON.
    ///
    /// # Errors
    ///
    /// The serializer's error.
    pub fn json(
        method: Method,
        url: &'a str,
        body: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Request {
            json: Some(serde_json::to_vec(body)?),
            ..Request::new(method, url)
        })
    }

    /// POST `url` with `body` as JSON.
    ///
    /// # Errors
    ///
    /// The serializer's error.
    pub fn post_json(url: &'a str, body: &impl Serialize) -> Result<Self, serde_json::Error> {
        Request::json(Method::Post, url, body)
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &'a str) -> Self {
        self.bearer = Some(token);
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        self.url
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    timeout: Duration,
    max_response_bytes: u64,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl ClientBuilder {
    /// The whole-request timeout (connect, send, receive). Default
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest answer read; larger ones are [`Error::TooLarge`].
    /// Default [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Also trusts the CA certificates in `pem` for HTTPS, besides
    /// Mozilla's roots: for local services with their own CA.
    ///
    /// # Errors
    ///
    /// [`Error::Pem`] if the PEM does not parse, [`Error::NoCertificate`]
    /// if it holds none.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Pem)?;
        if certs.is_empty() {
            return Err(Error::NoCertificate);
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// The client.
    pub fn build(self) -> Client {
        let roots = if self.extra_roots.is_empty() {
            RootCerts::WebPki
        } else {
            let certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .chain(&self.extra_roots)
                .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                .collect();
            RootCerts::Specific(Arc::new(certs))
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .user_agent(concat!("confsum/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client {
            agent,
            max_response_bytes: self.max_response_bytes,
        }
    }
}

/// A blocking HTTP(S) client with timeouts, an answer-size limit and,
/// optionally, an extra trusted CA. Cheap to clone (connections are
/// pooled and shared).
///
/// Statuses other than 2xx are [`Error::Status`], with the service's
/// `{"error":{"code","message"}}` envelope when it sent one, so callers
/// can tell a 401 from a 403 from a `KeyNotFound`.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    max_response_bytes: u64,
}

impl Default for Client {
    fn default() -> Self {
        Client::builder().build()
    }
}

impl Client {
    /// A client with the defaults: Mozilla's roots, 30 s, 1 MiB answers.
    pub fn new() -> Self {
        Client::default()
    }

    /// A builder, to change the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_roots: Vec::new(),
        }
    }

    /// Sends `request` and returns the body of a 2xx answer.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] when no answer came, [`Error::Status`] for another
    /// status, [`Error::TooLarge`] for an answer over the limit.
    pub fn send(&self, request: Request<'_>) -> Result<Vec<u8>, Error> {
        let url = request.url;
        let http_error = |source: ureq::Error| Error::Http {
            url: url.to_owned(),
            source: Box::new(source),
        };
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_http())
            .uri(url)
            .header("Accept", "application/json");
        if let Some(token) = request.bearer {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let body = match request.json {
            Some(json) => {
                builder = builder.header("Content-Type", "application/json");
                json
            }
            None => Vec::new(),
        };
        let http_request = builder
            .body(body)
            .map_err(|e| http_error(ureq::Error::Http(e)))?;
        let mut response = self.agent.run(http_request).map_err(http_error)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge {
                    url: url.to_owned(),
                    limit,
                },
                other => http_error(other),
            })?;
        if !(200..300).contains(&status) {
            let error = serde_json::from_slice::<Envelope>(&body)
                .ok()
                .map(|envelope| envelope.error);
            return Err(Error::Status {
                url: url.to_owned(),
                status,
                error,
            });
        }
        Ok(body)
    }

    /// Sends `request` and reads the answer as JSON.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`Error::Json`].
    pub fn send_json<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T, Error> {
        let url = request.url;
        let body = self.send(request)?;
        serde_json::from_slice(&body).map_err(|source| Error::Json {
            url: url.to_owned(),
            source,
        })
    }

    /// GETs `url`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        self.send(Request::get(url))
    }

    /// GETs a JWKS, such as an attestation service's `/certs`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`Error::Attest`] if the answer is not
    /// a JWKS.
    pub fn fetch_jwks(&self, url: &str) -> Result<Jwks, Error> {
        Jwks::from_json(&self.get(url)?).map_err(|source| Error::Attest {
            url: url.to_owned(),
            source,
        })
    }

    /// Asks the attestation service at `base_url` (such as
    /// `https://sharedeus2.eus2.attest.azure.net`, or a local
    /// `confsum attest serve`) for a token:
    /// `POST <base_url>/attest/SevSnpVM?api-version=2020-10-01`.
    ///
    /// # Errors
    ///
    /// As [`send_json`](Self::send_json).
    pub fn attest(&self, base_url: &str, request: &AttestRequest) -> Result<AttestResponse, Error> {
        let url = format!(
            "{}/attest/SevSnpVM?api-version={ATTEST_API_VERSION}",
            base_url.trim_end_matches('/')
        );
        let request = Request::post_json(&url, request).map_err(|source| Error::Json {
            url: url.clone(),
            source,
        })?;
        self.send_json(request)
    }
}
