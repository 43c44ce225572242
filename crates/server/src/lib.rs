//! HTTP for confsum: the one place that knows about axum, hyper, tokio,
//! rustls and ureq.
//!
//! - **Serving.** A [`Server`] binds an address, optionally speaks HTTPS
//!   ([`TlsConfig`], rustls with the *ring* provider), wraps a service's
//!   axum [`Router`](axum::Router) in the shared [`Limits`] (body size,
//!   per-process [`RateLimit`], request timeout) and serves it until a
//!   shutdown future ([`shutdown_signal`]: Ctrl-C or SIGTERM) resolves.
//!   Errors are one JSON envelope, `{"error":{"code","message"}}`, the
//!   shape of Key Vault, Managed HSM and Azure Attestation: handlers
//!   return [`ApiError`], read bodies with [`Body`], and routers fall
//!   back to [`not_found`] and [`method_not_allowed`].
//! - **Services.** [`attest::router`] puts `confsum-attest`'s HTTP-free
//!   [`Service`](confsum_attest::Service) on MAA's paths;
//!   [`skr::router`] puts `confsum-skr`'s [`Broker`](confsum_skr::Broker)
//!   on Managed HSM's (`/keys/{name}`, `/keys/{name}/release`), with
//!   [`skr::TrustedAuthorities`] checking attestation tokens. A new service
//!   writes a `Router` the same way and mounts it in two lines:
//!   `Server::bind(addr)?.serve_blocking(router, shutdown_signal())`, or
//!   [`Server::spawn`] for a server on its own thread that stops when its
//!   [`Spawned`] handle is dropped.
//! - **Calling.** One blocking [`Client`] (ureq 3, rustls with *ring*,
//!   timeouts, an answer-size limit, an optional extra trusted CA) for
//!   JWKS fetches, attestation requests ([`Client::attest`]), REST calls
//!   with a bearer token ([`Request`]), and AMD's Key Distribution
//!   Service ([`KdsFetcher`], a
//!   [`CertificateFetcher`](confsum_attest::CertificateFetcher)).
//!   [`HsmClient`] imports and releases keys at a Managed HSM or a
//!   confsum key broker, verifying each release as the sidecar does.
//!
//! ```
//! use std::time::SystemTime;
//! use confsum_attest::{Service, TokenIssuer, TrustedRoots};
//! use confsum_server::{Client, Server};
//!
//! let server = Server::bind("127.0.0.1:0".parse().unwrap())?;
//! let url = server.url();
//! let issuer = TokenIssuer::generate(&url)?;
//! let router = confsum_server::attest::router(Service::new(issuer, TrustedRoots::amd()));
//! let serving = server.spawn(router)?; // stops when dropped
//!
//! let jwks = Client::new().fetch_jwks(&format!("{url}/certs"))?;
//! assert_eq!(jwks.keys.len(), 1);
//!
//! serving.stop()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attest;
mod client;
mod envelope;
mod error;
mod hsm;
mod kds;
mod serve;
pub mod skr;

pub use crate::{
    client::{Client, ClientBuilder, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, Method, Request},
    envelope::{ApiError, Body, RemoteError, error_chain, json, method_not_allowed, not_found},
    error::Error,
    hsm::{ACCESS_TOKEN_ENV, HSM_API_VERSION, HsmClient, bearer_token, hsm_endpoint},
    kds::{AMD_KDS_URL, KdsFetcher},
    serve::{Limits, RateLimit, Server, Spawned, TlsConfig, shutdown_signal},
};

pub(crate) use crate::envelope::Envelope;
