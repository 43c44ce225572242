//! A client of the Managed HSM REST subset: import a key with its release
//! policy, read it back, and release it to an attestation token, against
//! a real Managed HSM or `confsum skr serve` alike.
//!
//! A release answer is trusted only after [`ReleaseVerifier`] has checked
//! it as the confidential sidecar does: the JWS signature with `x5c[0]`,
//! that certificate chained to a trusted CA and named for the endpoint.
//!
//! ```no_run
//! use confsum_server::{HsmClient, bearer_token};
//! use confsum_skr::WrappingPrivateKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let attestation_token = "";
//! let hsm = HsmClient::public_roots("https://myhsm.managedhsm.azure.net")?
//!     .bearer(bearer_token(None)?);
//! let wrapping = WrappingPrivateKey::generate(2048)?;
//! // The token's x-ms-runtime.keys holds wrapping.public_key().
//! let released = hsm.release("mykey", attestation_token)?;
//! let key = released.unwrap(&wrapping)?; // raw bytes (oct) or PKCS#8 DER
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::SystemTime;

use confsum_skr::{
    ImportKeyRequest, KeyBundle, ReleaseRequest, ReleaseResponse, ReleaseVerifier, ReleasedKey,
    UpdateKeyRequest,
};
use zeroize::Zeroizing;

use crate::{Client, Error, Method, Request};

/// The environment variable [`bearer_token`] reads first.
pub const ACCESS_TOKEN_ENV: &str = "AZURE_ACCESS_TOKEN";

/// The API version sent (Key Vault 7.4, as the sidecar and Azure's import
/// tool use).
pub const HSM_API_VERSION: &str = "7.4";

/// The AAD bearer token for a Managed HSM: the file `token_file` if given
/// (trimmed), else `$AZURE_ACCESS_TOKEN`, else none. It is kept in memory
/// only, zeroized on drop, and never written anywhere.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read.
pub fn bearer_token(token_file: Option<&Path>) -> Result<Option<Zeroizing<String>>, Error> {
    let token = match token_file {
        Some(path) => {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?);
            Zeroizing::new(String::from_utf8_lossy(&bytes).trim().to_owned())
        }
        None => match std::env::var(ACCESS_TOKEN_ENV) {
            Ok(value) => Zeroizing::new(value.trim().to_owned()),
            Err(_) => return Ok(None),
        },
    };
    Ok((!token.is_empty()).then_some(token))
}

/// The endpoint string of a URL, as the sidecar compares it with the
/// release certificate's names: the authority (`host` or `host:port`),
/// without scheme, path or user info.
pub fn hsm_endpoint(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

/// A Managed HSM (or `confsum skr serve`) at one base URL.
#[derive(Clone)]
pub struct HsmClient {
    client: Client,
    base_url: String,
    bearer: Option<Zeroizing<String>>,
    verifier: ReleaseVerifier,
}

impl std::fmt::Debug for HsmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmClient")
            .field("base_url", &self.base_url)
            .field("bearer", &self.bearer.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl HsmClient {
    /// The HSM at `base_url` (`https://myhsm.managedhsm.azure.net`, or a
    /// local broker), whose releases `verifier` checks; requests go
    /// through `client`.
    pub fn new(client: Client, base_url: &str, verifier: ReleaseVerifier) -> Self {
        HsmClient {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            bearer: None,
            verifier,
        }
    }

    /// The HSM at `base_url`, with the default [`Client`] and release
    /// signatures trusted when they chain to Mozilla's roots (as Managed
    /// HSM's do) and name the URL's host.
    ///
    /// # Errors
    ///
    /// [`Error::Skr`] if a root does not parse.
    pub fn public_roots(base_url: &str) -> Result<Self, Error> {
        let verifier = ReleaseVerifier::new(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS,
            hsm_endpoint(base_url),
        )
        .map_err(|source| Error::Skr {
            url: base_url.to_owned(),
            source,
        })?;
        Ok(HsmClient::new(Client::new(), base_url, verifier))
    }

    /// The HSM at `base_url` with its own CA (PEM; such as the
    /// `release-ca.pem` that `confsum skr serve` writes): trusted for
    /// HTTPS and for release signatures.
    ///
    /// # Errors
    ///
    /// [`Error::Pem`], [`Error::NoCertificate`], or [`Error::Skr`] if a
    /// certificate is not a usable CA.
    pub fn with_ca_pem(base_url: &str, ca_pem: &[u8]) -> Result<Self, Error> {
        use rustls_pki_types::{CertificateDer, pem::PemObject as _};
        let certs = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Pem)?;
        if certs.is_empty() {
            return Err(Error::NoCertificate);
        }
        let verifier =
            ReleaseVerifier::new(&certs, hsm_endpoint(base_url)).map_err(|source| Error::Skr {
                url: base_url.to_owned(),
                source,
            })?;
        let client = Client::builder().add_root_pem(ca_pem)?.build();
        Ok(HsmClient::new(client, base_url, verifier))
    }

    /// Sends `Authorization: Bearer <token>` (Managed HSM needs an AAD
    /// token on every call; `confsum skr serve` needs its admin token for
    /// import and update).
    pub fn bearer(mut self, token: Option<Zeroizing<String>>) -> Self {
        self.bearer = token;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/keys/{name}{suffix}?api-version={HSM_API_VERSION}",
            self.base_url
        )
    }

    fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, Error> {
        let mut request = match body {
            Some(body) => Request::json(method, url, body).map_err(|source| Error::Json {
                url: url.to_owned(),
                source,
            })?,
            None => Request::new(method, url),
        };
        if let Some(token) = &self.bearer {
            request = request.bearer(token);
        }
        self.client.send_json(request)
    }

    /// `PUT /keys/{name}`: imports a key (a private JWK) with its release
    /// policy.
    ///
    /// # Errors
    ///
    /// [`Error::Status`] with the service's error (401 for a bad bearer
    /// token), or any error of [`Client::send`].
    pub fn import(&self, name: &str, request: &ImportKeyRequest) -> Result<KeyBundle, Error> {
        self.send(Method::Put, &self.url(name, ""), Some(request))
    }

    /// `GET /keys/{name}`: public attributes and release policy.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import) (404 for an unknown key).
    pub fn key(&self, name: &str) -> Result<KeyBundle, Error> {
        self.send(Method::Get, &self.url(name, ""), None::<&()>)
    }

    /// `PATCH /keys/{name}`: a new release policy, or `enabled`.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import) (409 for an immutable policy).
    pub fn update(&self, name: &str, request: &UpdateKeyRequest) -> Result<KeyBundle, Error> {
        self.send(Method::Patch, &self.url(name, ""), Some(request))
    }

    /// `POST /keys/{name}/release` with `{"target": attestation_token}`,
    /// exactly as the sidecar sends it; the answer is verified. Unwrap the
    /// result with [`ReleasedKey::unwrap`] and the private key whose
    /// public half the token's `x-ms-runtime.keys` holds.
    ///
    /// # Errors
    ///
    /// [`Error::Status`] with the service's refusal (403 names the failing
    /// claim), [`Error::Skr`] if the answer does not verify, or any error
    /// of [`Client::send`].
    pub fn release(&self, name: &str, attestation_token: &str) -> Result<ReleasedKey, Error> {
        self.release_request(
            name,
            &ReleaseRequest {
                target: attestation_token.to_owned(),
                enc: None,
                nonce: None,
            },
        )
    }

    /// As [`release`](Self::release), with `enc` and `nonce` as given.
    ///
    /// # Errors
    ///
    /// As [`release`](Self::release).
    pub fn release_request(
        &self,
        name: &str,
        request: &ReleaseRequest,
    ) -> Result<ReleasedKey, Error> {
        let url = self.url(name, "/release");
        let response: ReleaseResponse = self.send(Method::Post, &url, Some(request))?;
        self.verifier
            .verify(&response.value, SystemTime::now())
            .map_err(|source| Error::Skr { url, source })
    }
}

#[cfg(test)]
mod tests {
    use super::hsm_endpoint;

    #[test]
    fn endpoints() {
        assert_eq!(
            hsm_endpoint("https://myhsm.managedhsm.azure.net"),
            "myhsm.managedhsm.azure.net"
        );
        assert_eq!(
            hsm_endpoint("https://127.0.0.1:8443/keys?x"),
            "127.0.0.1:8443"
        );
        assert_eq!(hsm_endpoint("localhost:1"), "localhost:1");
    }
}
