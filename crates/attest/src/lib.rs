//! SEV-SNP attestation evidence and attestation tokens.
//!
//! [`AttestationReport::parse`] reads the 1184-byte SEV-SNP report; a
//! [`Verifier`] checks its ECDSA P-384 signature with the VCEK (or VLEK)
//! of a [`CertChain`] (THIM JSON, PEM or DER) and the chain up to one of
//! AMD's ARKs for Milan, Genoa or Turin ([`TrustedRoots::amd`]), at a time
//! the caller gives; [`validate`] compares its fields with what the relying
//! party expects ([`ValidationOptions`]).
//!
//! [`service`] is a local attestation service speaking MAA's SEV-SNP
//! protocol; [`insecure`] is an emulated TEE for tests whose evidence
//! proves nothing and verifies only against a root added with
//! [`TrustedRoots::add_insecure_root`].
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
pub mod insecure;
mod report;
mod roots;
pub mod service;
mod token;
mod validate;
mod verify;

pub use crate::{
    certs::{CertChain, CertificateFetcher},
    error::Error,
    report::{
        AttestationReport, Cpuid, FirmwareVersion, GuestPolicy, REPORT_LEN, SIGNED_LEN, SigningKey,
        TcbLayout, TcbVersion,
    },
    roots::{Product, TrustedRoots},
    token::{
        ATTESTATION_TYPE_SEVSNPVM, AttestRequest, AttestResponse, COMPLIANCE_AZURE_UVM,
        DEFAULT_LEEWAY, Jwk, Jwks, MAX_TOKEN_LEN, RuntimeClaims, RuntimeData, SnpEvidence,
        TokenClaims, TokenClaimsBuilder, TokenIssuer, TokenVerifier, runtime_keys_match,
    },
    validate::{ValidationOptions, validate},
    verify::{VerifiedReport, Verifier},
};
