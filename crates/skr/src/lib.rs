//! Secure Key Release (SKR) for confidential containers.
//!
//! The data owner's key leaves the key broker (Azure Managed HSM, or
//! confsum's own) only wrapped to a key that an attested workload holds,
//! and only when the workload's attestation token satisfies the key's
//! release policy.
//!
//! - [`ReleasePolicy`]: Managed HSM's release policy grammar (1.0.0, and
//!   0.2), and [`ReleasePolicy::evaluate`], which says which claim failed.
//! - [`ImportKeyConfig`] and [`SidecarArgs`]: the recipe's
//!   `importkeyconfig.json` and `encfs-sidecar-args.json`.
//! - [`wrap_key`] / [`unwrap_key`]: RSA-OAEP + AES key wrap with padding,
//!   as Managed HSM releases and the sidecar unwraps;
//!   [`derive_rsa_hsm_key`], the sidecar's HKDF for `RSA-HSM` keys.
//! - [`SigningIdentity`] / [`ReleaseVerifier`]: the signed release
//!   response (RS256 JWS with `x5c`), made and checked.
//! - [`AzureDeployment`] / [`check_deployment`]: the ARM template,
//!   `importkeyconfig.json` and sidecar arguments of a deployment, made
//!   from one set of settings and checked against each other.
//! - [`Broker`]: the key broker's core (import, read, release, policy
//!   update) over an encrypted embedded store with a hash-chained audit
//!   log; HTTP is left to the caller.
//!
//! ```
//! use confsum_skr::{ClaimCondition, Decision, ReleasePolicy};
//!
//! let policy = ReleasePolicy::all_of(
//!     "https://sharedeus.eus.attest.azure.net",
//!     vec![vec![
//!         ClaimCondition::equals("x-ms-sevsnpvm-hostdata", "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"),
//!         ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
//!         ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
//!     ]],
//! );
//! let claims = serde_json::json!({
//!     "iss": "https://sharedeus.eus.attest.azure.net",
//!     "x-ms-sevsnpvm-hostdata": "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20",
//!     "x-ms-sevsnpvm-is-debuggable": true,
//!     "x-ms-sevsnpvm-vmpl": 0,
//! });
//! let claims = claims.as_object().unwrap();
//! match policy.evaluate("https://sharedeus.eus.attest.azure.net", claims) {
//!     Decision::Denied(denial) => assert_eq!(
//!         denial.to_string(),
//!         "branch 0 (authority https://sharedeus.eus.attest.azure.net): \
//!          claim x-ms-sevsnpvm-is-debuggable equals \"false\": actual true"
//!     ),
//!     Decision::Allowed { .. } => unreachable!(),
//! }
//! // The same policy, as Key Vault's release_policy.data carries it.
//! assert_eq!(ReleasePolicy::decode_base64url(&policy.encode_base64url())?, policy);
//! # Ok::<(), confsum_skr::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod broker;
mod config;
mod deploy;
mod error;
mod jws;
mod keys;
mod policy;
mod store;
mod wire;
mod wrap;

pub use crate::{
    audit::{
        AuditEvent, AuditHead, AuditKey, AuditRecord, AuditReport, GENESIS, TokenIdentity,
        verify_audit_jsonl,
    },
    broker::{
        AttestAuthorities, Broker, BrokerConfig, TokenCheck, VerifiedClaims, unverified_issuer,
    },
    config::{
        Akv, Authority, AzureFilesystem, AzureInfo, CertCache, Identity, ImportKeyConfig, KeyBlob,
        KeyDerivation, Secret, SidecarArgs,
    },
    deploy::{
        AzureDeployment, DEFAULT_SIDECAR_IMAGE, DeployProblem, DeploySettings, HOST_DATA_CLAIM,
        KeyField, Mismatch, SIDECAR_ARGS_ENV, SIDECAR_CONTAINER_NAME, check_deployment,
        find_placeholders,
    },
    error::{AuditProblem, Error, JwsProblem, KeyProblem, PolicyProblem},
    jws::{LocalCa, ReleaseVerifier, ReleasedKey, SigningIdentity},
    keys::{KeyMaterial, KeyType},
    policy::{
        Branch, BranchDenial, BranchFailure, ClaimCondition, ClaimFailure, ClaimValue, Combinator,
        Condition, Decision, Denial, FailureKind, MAX_POLICY_DEPTH, Operator, POLICY_CONTENT_TYPE,
        PolicyVersion, ReleasePolicy, authority_matches,
    },
    store::{MasterKey, verify_audit_db},
    wire::{
        ErrorBody, ErrorResponse, ImportAttributes, ImportKeyRequest, KeyAttributes, KeyBundle,
        KeyHsm, KeyHsmHeader, PayloadRequest, PayloadResponse, PublicJwk, ReleasePayload,
        ReleasePolicyBody, ReleaseRequest, ReleaseResponse, ReleasedKeyBundle, UpdateKeyRequest,
        WrappedJwk,
    },
    wrap::{
        DEFAULT_DERIVATION_LABEL, MAX_RSA_BITS, MIN_RSA_BITS, WrapAlgorithm, WrappingPrivateKey,
        WrappingPublicKey, derive_rsa_hsm_key, jwk_thumbprint, unwrap_key, wrap_key,
    },
};
