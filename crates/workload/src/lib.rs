//! The confidential summarization workload, and its consumer's checks.
//!
//! **Workload.** [`Workload::start`] does what the confidential sidecar
//! and the app do together on Azure Confidential ACI: it makes two
//! ephemeral keys ([`WorkloadKeys`]: an RSA key-release key with
//! `key_ops: ["encrypt"]` and an ES256 response-signing key with
//! `key_ops: ["verify"]`) and publishes both in its attestation runtime
//! data; it gets evidence ([`EvidenceSource`]) and a token
//! ([`Attestation`]); it has the disk key released ([`KeyRelease`]),
//! checks the broker's signed answer and unwraps the key; it opens the
//! sealed LUKS2 image in userspace and reads its documents; and it loads
//! the summarizer. [`router`] serves it ([`Service`]): documents,
//! batched summaries, the attestation, health and readiness; every
//! answer is signed ([`SignedResponse`]) with the attested key.
//!
//! **Consumer.** [`verify_attestation`] checks a workload's attestation
//! against what the consumer expects ([`Expectations`]) and says, check
//! by check, why it trusts or refuses ([`Verification`]); a
//! [`ResponseVerifier`] then reads only answers the attested key signed,
//! and [`WorkloadClient`] does both over HTTP.
//!
//! With the `insecure` feature, [`InsecureEmulatedEvidence`] is evidence
//! from the emulated TEE, for local runs: it proves nothing, and tokens
//! for it say so. This library never prints; programs warn.
//!
//! ```
//! use confsum_workload::{ResponseVerifier, WorkloadKeys};
//!
//! let keys = WorkloadKeys::generate()?;
//! let runtime = keys.runtime_json()?; // hashed into report_data
//! let signed = keys.signer().sign(br#"{"summaries":[]}"#)?;
//!
//! // The consumer takes the key from the (verified) token's runtime data.
//! let verifier = ResponseVerifier::from_runtime_json(&runtime)?;
//! assert_eq!(verifier.verify(&signed)?, br#"{"summaries":[]}"#);
//! # Ok::<(), confsum_workload::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod documents;
mod error;
mod keys;
mod service;
mod signed;
mod start;
mod verify;
mod web;

#[cfg(feature = "insecure")]
pub use crate::start::InsecureEmulatedEvidence;
pub use crate::{
    client::WorkloadClient,
    documents::{MAX_DOCUMENT_BYTES, MAX_DOCUMENTS},
    error::{Error, SignatureProblem},
    keys::{RESPONSE_ALG, ResponseSigner, WorkloadKeys},
    service::{
        DocumentInfo, DocumentList, Service, ServiceConfig, SummariesPayload, SummariesRequest,
        SummaryItem, router,
    },
    signed::{ResponseVerifier, SignedResponse},
    start::{
        Attestation, AttestationDocument, EvidenceSource, HsmKeyRelease, HttpAttestation,
        KeyDerivation, KeyRelease, LocalBroker, StartOptions, Step, Workload,
    },
    verify::{Check, CheckName, Expectations, Verification, verify_attestation},
    web::CONTENT_SECURITY_POLICY,
};
