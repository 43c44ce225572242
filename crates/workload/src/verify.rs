//! The consumer's checks, before anything a workload says is trusted
//! (`confsum client verify`), split as the attestation code is: the token
//! is verified (signature against the attestation service's keys, issuer,
//! validity), then its claims are validated against what the consumer
//! expects (host_data = the published policy's hash, debug off, VMPL 0,
//! hardware evidence unless emulated evidence is explicitly allowed), then
//! the bindings are checked (report_data commits to the runtime keys; the
//! evidence shown is the evidence the token was issued for; the runtime
//! keys hold a response-signing key).
//!
//! Every check is recorded, passed or not, with what was expected and what
//! was found, so a program can print exactly why it trusts or refuses.
//! When the token itself does not verify, nothing else in it is looked at.

use std::time::{Duration, SystemTime};

use confsum_attest::{
    AttestationReport, DEFAULT_LEEWAY, Error as AttestError, Jwks, SnpEvidence, TokenClaims,
    TokenError, TokenVerifier, runtime_keys_match,
};
use serde::Serialize;

use crate::{AttestationDocument, Error, ResponseVerifier};

/// What the consumer trusts and expects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Expectations {
    /// The attestation service's issuer (`iss`), exactly.
    pub issuer: String,
    /// The attestation service's signing keys (its `/certs`).
    pub jwks: Jwks,
    /// SHA-256 of the CCE policy the consumer agreed to.
    pub host_data: [u8; 32],
    /// **Insecure:** accept evidence from the emulated TEE.
    pub allow_insecure_emulated: bool,
    /// Clock-skew leeway for `exp` and `nbf`.
    pub leeway: Duration,
}

impl Expectations {
    /// Expect tokens from `issuer` signed by `jwks`, for `host_data`, from
    /// hardware (not emulated), with the default leeway.
    pub fn new(issuer: &str, jwks: Jwks, host_data: [u8; 32]) -> Self {
        Expectations {
            issuer: issuer.to_owned(),
            jwks,
            host_data,
            allow_insecure_emulated: false,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckName {
    /// The token's signature, with a key of the attestation service.
    TokenSignature,
    /// The token's issuer.
    Issuer,
    /// The token's validity period (`nbf`, `exp`).
    Validity,
    /// `x-ms-sevsnpvm-hostdata` = the policy's hash.
    HostData,
    /// `x-ms-sevsnpvm-is-debuggable` = false.
    Debug,
    /// `x-ms-sevsnpvm-vmpl` = 0.
    Vmpl,
    /// Not emulated evidence (unless allowed).
    Emulated,
    /// report_data commits to the runtime keys in the token.
    RuntimeBinding,
    /// The evidence shown is the evidence the token was issued for.
    Evidence,
    /// The runtime keys hold the response-signing key.
    SigningKey,
}

impl CheckName {
    /// The name as printed (`host_data`, `vmpl`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::TokenSignature => "token signature",
            CheckName::Issuer => "issuer",
            CheckName::Validity => "validity",
            CheckName::HostData => "host_data",
            CheckName::Debug => "debug",
            CheckName::Vmpl => "vmpl",
            CheckName::Emulated => "emulated",
            CheckName::RuntimeBinding => "runtime binding",
            CheckName::Evidence => "evidence",
            CheckName::SigningKey => "signing key",
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which check.
    pub check: CheckName,
    /// Whether it passed.
    pub passed: bool,
    /// What was expected.
    pub expected: String,
    /// What was found.
    pub actual: String,
}

/// The outcome of [`verify_attestation`].
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Every check made, in order.
    pub checks: Vec<Check>,
    /// Whether every check passed (and there was at least one of each
    /// kind needed).
    pub trusted: bool,
    /// The token's verified claims, when its signature, issuer and
    /// validity held.
    #[serde(skip)]
    pub claims: Option<TokenClaims>,
    #[serde(skip)]
    verifier: Option<ResponseVerifier>,
}

impl Verification {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The verifier of the workload's signed answers, only when trusted.
    ///
    /// # Errors
    ///
    /// [`Error::Untrusted`] naming the failed checks.
    pub fn trusted_verifier(&self) -> Result<&ResponseVerifier, Error> {
        match (&self.verifier, self.trusted) {
            (Some(v), true) => Ok(v),
            _ => Err(Error::Untrusted(self.refusal())),
        }
    }

    /// The failed checks in one line: `host_data: expected …, actual …`.
    pub fn refusal(&self) -> String {
        let failed: Vec<String> = self
            .failures()
            .map(|c| {
                format!(
                    "{}: expected {}, actual {}",
                    c.check.as_str(),
                    c.expected,
                    c.actual
                )
            })
            .collect();
        if failed.is_empty() {
            "not every check could be made".to_owned()
        } else {
            failed.join("; ")
        }
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, check: CheckName, passed: bool, expected: String, actual: String) -> bool {
        self.0.push(Check {
            check,
            passed,
            expected,
            actual,
        });
        passed
    }
}

/// Checks a workload's attestation at `now` (see the module docs).
pub fn verify_attestation(
    doc: &AttestationDocument,
    expect: &Expectations,
    now: SystemTime,
) -> Verification {
    let mut checks = Checks(Vec::new());
    let claims = verify_token(doc, expect, now, &mut checks);
    let Some(claims) = claims else {
        return Verification {
            checks: checks.0,
            trusted: false,
            claims: None,
            verifier: None,
        };
    };
    let mut ok = true;
    ok &= checks.add(
        CheckName::HostData,
        claims.host_data == expect.host_data,
        hex::encode(expect.host_data),
        hex::encode(claims.host_data),
    );
    ok &= checks.add(
        CheckName::Debug,
        !claims.is_debuggable,
        "false".to_owned(),
        claims.is_debuggable.to_string(),
    );
    ok &= checks.add(
        CheckName::Vmpl,
        claims.vmpl == 0,
        "0".to_owned(),
        claims.vmpl.to_string(),
    );
    let (expected, passed) = if expect.allow_insecure_emulated {
        ("hardware or emulated (emulated allowed)", true)
    } else {
        ("hardware evidence", !claims.insecure_emulated)
    };
    ok &= checks.add(
        CheckName::Emulated,
        passed,
        expected.to_owned(),
        if claims.insecure_emulated {
            "INSECURE emulated evidence"
        } else {
            "hardware evidence"
        }
        .to_owned(),
    );
    let binding = runtime_keys_match(&claims, &claims.report_data);
    let same_runtime = claims
        .runtime
        .as_ref()
        .is_some_and(|r| r.json() == doc.runtime_data.trim());
    ok &= checks.add(
        CheckName::RuntimeBinding,
        binding.is_ok() && same_runtime,
        "report_data = SHA-256 of the token's runtime keys".to_owned(),
        match (&binding, same_runtime) {
            (Err(e), _) => e.to_string(),
            (Ok(()), false) => "the runtime data shown differs from the token's".to_owned(),
            (Ok(()), true) => "bound".to_owned(),
        },
    );
    let evidence = check_evidence(doc, &claims);
    ok &= checks.add(
        CheckName::Evidence,
        evidence.is_ok(),
        "the report's host_data and report_data are the token's".to_owned(),
        evidence.err().unwrap_or_else(|| "the same".to_owned()),
    );
    let verifier = claims
        .runtime
        .as_ref()
        .ok_or(Error::Untrusted("no runtime data".to_owned()))
        .and_then(|r| ResponseVerifier::from_runtime_json(r.json()));
    ok &= checks.add(
        CheckName::SigningKey,
        verifier.is_ok(),
        "an ES256 key with key_ops [\"verify\"]".to_owned(),
        match &verifier {
            Ok(v) => format!("kid {}", v.kid()),
            Err(e) => e.to_string(),
        },
    );
    Verification {
        checks: checks.0,
        trusted: ok,
        claims: Some(claims),
        verifier: verifier.ok(),
    }
}

/// Signature, issuer and validity; the claims only if all three hold.
fn verify_token(
    doc: &AttestationDocument,
    expect: &Expectations,
    now: SystemTime,
    checks: &mut Checks,
) -> Option<TokenClaims> {
    let verifier = TokenVerifier::new(expect.jwks.clone(), &expect.issuer).leeway(expect.leeway);
    let signed = "signed (RS256) by a key of the attestation service".to_owned();
    let issuer = expect.issuer.clone();
    let valid = "now within nbf..exp".to_owned();
    match verifier.verify(doc.token.trim(), now) {
        Ok(claims) => {
            checks.add(CheckName::TokenSignature, true, signed, "signed".to_owned());
            checks.add(CheckName::Issuer, true, issuer, claims.iss.clone());
            checks.add(
                CheckName::Validity,
                true,
                valid,
                format!("valid until {} (Unix time)", claims.exp),
            );
            Some(claims)
        }
        Err(AttestError::Token(TokenError::WrongIssuer { found, .. })) => {
            checks.add(CheckName::TokenSignature, true, signed, "signed".to_owned());
            checks.add(CheckName::Issuer, false, issuer, found);
            None
        }
        Err(AttestError::Token(TokenError::Expired { exp, now })) => {
            checks.add(CheckName::TokenSignature, true, signed, "signed".to_owned());
            checks.add(CheckName::Issuer, true, issuer.clone(), issuer);
            checks.add(
                CheckName::Validity,
                false,
                valid,
                format!("expired at {exp}, now {now} (Unix time)"),
            );
            None
        }
        Err(AttestError::Token(TokenError::NotYetValid { nbf, now })) => {
            checks.add(CheckName::TokenSignature, true, signed, "signed".to_owned());
            checks.add(CheckName::Issuer, true, issuer.clone(), issuer);
            checks.add(
                CheckName::Validity,
                false,
                valid,
                format!("not valid before {nbf}, now {now} (Unix time)"),
            );
            None
        }
        Err(e) => {
            let mut actual = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                actual.push_str(": ");
                actual.push_str(&cause.to_string());
                source = cause.source();
            }
            checks.add(CheckName::TokenSignature, false, signed, actual);
            None
        }
    }
}

/// The evidence shown must be the report the token was issued for. Its
/// signature chain was checked by the attestation service, whose token
/// is what the consumer trusts.
fn check_evidence(doc: &AttestationDocument, claims: &TokenClaims) -> Result<(), String> {
    let evidence = SnpEvidence::decode(&doc.evidence).map_err(|e| e.to_string())?;
    let bytes = evidence.report_bytes().map_err(|e| e.to_string())?;
    let report = AttestationReport::parse(&bytes).map_err(|e| e.to_string())?;
    if report.host_data != claims.host_data {
        return Err(format!(
            "the report's host_data is {}",
            hex::encode(report.host_data)
        ));
    }
    if report.report_data != claims.report_data {
        return Err("the report's report_data differs".to_owned());
    }
    Ok(())
}
