//! The consumer's side over HTTP: fetch the attestation, and read only
//! answers whose signature the attested key made.

use confsum_server::{Client, Request};
use sha2::{Digest as _, Sha256};

use crate::{
    AttestationDocument, DocumentList, Error, ResponseVerifier, SummariesPayload, SummariesRequest,
};

/// A client of a workload at a base URL.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    http: Client,
    base: String,
}

impl WorkloadClient {
    /// The workload at `base_url` (`http://127.0.0.1:8000`).
    pub fn new(http: Client, base_url: &str) -> Self {
        WorkloadClient {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /v1/attestation` (not yet verified: see
    /// [`crate::verify_attestation`]).
    ///
    /// # Errors
    ///
    /// [`Error::Http`].
    pub fn attestation(&self) -> Result<AttestationDocument, Error> {
        self.http
            .send_json(Request::get(&self.url("/v1/attestation")))
            .map_err(Error::Http)
    }

    /// `GET /v1/documents`, verified with `verifier`.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], or [`Error::Signature`] for an answer the attested
    /// key did not sign.
    pub fn documents(&self, verifier: &ResponseVerifier) -> Result<DocumentList, Error> {
        let body = self
            .http
            .get(&self.url("/v1/documents"))
            .map_err(Error::Http)?;
        verifier.verify_body(&body)
    }

    /// `POST /v1/summaries`, verified with `verifier`, and checked to
    /// answer this very request (its `request_sha256`).
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Signature`], or [`Error::RequestMismatch`].
    pub fn summarize(
        &self,
        verifier: &ResponseVerifier,
        request: &SummariesRequest,
    ) -> Result<SummariesPayload, Error> {
        let url = self.url("/v1/summaries");
        // Request::post_json serializes with serde_json::to_vec too, so
        // these are the bytes sent.
        let sent = serde_json::to_vec(request).map_err(|source| Error::Malformed {
            what: "summaries request",
            source,
        })?;
        let http_request =
            Request::post_json(&url, request).map_err(|source| Error::Malformed {
                what: "summaries request",
                source,
            })?;
        let body = self.http.send(http_request).map_err(Error::Http)?;
        let payload: SummariesPayload = verifier.verify_body(&body)?;
        if payload.request_sha256 != hex::encode(Sha256::digest(&sent)) {
            return Err(Error::RequestMismatch);
        }
        Ok(payload)
    }
}
