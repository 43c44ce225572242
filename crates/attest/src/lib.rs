//! SEV-SNP attestation evidence and attestation tokens.
//!
//! [`AttestationReport::parse`] reads the 1184-byte SEV-SNP report; a
//! [`Verifier`] checks its ECDSA P-384 signature with the VCEK (or VLEK)
//! of a [`CertChain`] (THIM JSON, PEM or DER) and the chain up to one of
//! AMD's ARKs for Milan, Genoa or Turin ([`TrustedRoots::amd`]), at a time
//! the caller gives; [`validate`] compares its fields with what the relying
//! party expects ([`ValidationOptions`]).
//!
//! [`TokenIssuer`] and [`TokenVerifier`] issue and check attestation
//! tokens shaped like Microsoft Azure Attestation's; [`Service`] is the
//! HTTP-free logic of a local attestation service that speaks MAA's
//! SEV-SNP protocol (`confsum-server` puts it on HTTP). Errors are one
//! [`Error`] enum whose payloads are typed ([`CertRole`], [`TokenError`],
//! [`KeyError`], ...), so callers match causes, never strings.
//!
//! With the `insecure` feature, `InsecureEmulatedTee` is an emulated
//! TEE for tests whose evidence proves nothing and verifies only against
//! a root added with [`TrustedRoots::add_insecure_root`]. This library
//! never prints; programs warn with [`INSECURE_WARNING`].
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use confsum_attest::{CertChain, Product, TrustedRoots, ValidationOptions, Verifier, validate};
//!
//! // A real report from Azure Container Instances, with the THIM JSON
//! // the sidecar got for it.
//! let report = include_bytes!("../testdata/snp_report.bin");
//! let chain = CertChain::from_thim_json(include_bytes!("../testdata/uvm_host_amd_certificate.json"))?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000); // 2025-06-15
//!
//! let verified = Verifier::new(TrustedRoots::amd()).verify(report, &chain, now)?;
//! assert_eq!(verified.product(), Some(Product::Milan));
//!
//! let mut expect = ValidationOptions::new(); // debug forbidden
//! expect.host_data = Some(verified.host_data);
//! expect.vmpl = Some(0);
//! validate(&verified, &expect)?;
//! # Ok::<(), confsum_attest::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod certs;
mod error;
#[cfg(feature = "insecure")]
mod insecure;
mod report;
mod roots;
mod service;
mod token;
mod validate;
mod verify;

#[cfg(feature = "insecure")]
pub use crate::insecure::{
    INSECURE_ARK_CN, INSECURE_ASK_CN, INSECURE_VCEK_CN, InsecureEmulatedTee,
};
pub use crate::{
    certs::{CertChain, CertificateFetcher},
    error::{
        CertError, CertRole, ClaimConflict, Error, ExtensionError, JwkMember, KeyError,
        RequestError, RequestField, RuntimeDataError, TimeError, TokenError, TokenPart,
    },
    report::{
        AttestationReport, Cpuid, FirmwareVersion, GuestPolicy, REPORT_LEN, SIGNED_LEN, SigningKey,
        TcbLayout, TcbVersion,
    },
    roots::{INSECURE_WARNING, Product, TrustedRoots},
    service::{ATTEST_API_VERSION, Attested, Service, TOKEN_LIFETIME},
    token::{
        ATTESTATION_TYPE_SEVSNPVM, AttestRequest, AttestResponse, COMPLIANCE_AZURE_UVM,
        DEFAULT_LEEWAY, Jwk, Jwks, MAX_TOKEN_LEN, RuntimeClaims, RuntimeData, SnpEvidence,
        TokenClaims, TokenClaimsBuilder, TokenIssuer, TokenVerifier, runtime_keys_match,
    },
    validate::{ValidationOptions, validate},
    verify::{VerifiedReport, Verifier},
};
