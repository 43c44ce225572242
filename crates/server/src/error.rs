//! The crate's one error type.

use std::{io, net::SocketAddr, path::PathBuf};

use crate::RemoteError;

/// Everything that can go wrong serving or calling HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file (a certificate, a key) failed.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The server stopped with an I/O error, or its runtime did not start.
    #[error("the server stopped")]
    Serve(#[source] io::Error),

    /// PEM (a certificate chain or a key) does not parse.
    #[error("malformed PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),

    /// No certificate in the PEM given for TLS.
    #[error("no PEM certificate found")]
    NoCertificate,

    /// No private key in the PEM given for TLS.
    #[error("no PEM private key found")]
    NoPrivateKey,

    /// rustls refused the certificate or key.
    #[error("unusable TLS certificate or key")]
    Tls(#[source] rustls::Error),

    /// A request could not be made or its answer not read: DNS,
    /// connection, TLS, timeout.
    #[error("request to {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// What ureq said.
        #[source]
        source: Box<ureq::Error>,
    },

    /// The server answered with a status other than 2xx. `error` is its
    /// `{"error":{"code","message"}}` envelope, when it sent one.
    #[error("{url} answered HTTP {status}{}", remote_suffix(.error))]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error envelope of the answer, if it had one.
        error: Option<RemoteError>,
    },

    /// The answer is larger than the client accepts.
    #[error("the answer from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },

    /// The answer is not the JSON expected.
    #[error("the answer from {url} is not the expected JSON")]
    Json {
        /// The URL.
        url: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A key broker's answer does not verify or make sense to
    /// confsum-skr (a release JWS, its certificate chain).
    #[error("unusable answer from {url}")]
    Skr {
        /// The URL.
        url: String,
        /// What confsum-skr said.
        #[source]
        source: confsum_skr::Error,
    },

    /// What a service sent does not make sense to confsum-attest (a JWKS,
    /// a certificate chain).
    #[error("unusable answer from {url}")]
    Attest {
        /// The URL.
        url: String,
        /// What confsum-attest said.
        #[source]
        source: confsum_attest::Error,
    },
}

fn remote_suffix(error: &Option<RemoteError>) -> String {
    match error {
        Some(e) => format!(": {}: {}", e.code, e.message),
        None => String::new(),
    }
}
