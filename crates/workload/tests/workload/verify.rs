//! The consumer refuses, naming the check: a token from another issuer,
//! an expired token, another host_data, a debuggable report, VMPL other
//! than 0, emulated evidence without the flag; and answers the attested
//! key did not sign.

use std::time::{Duration, SystemTime};

use confsum_attest::{InsecureEmulatedTee, RuntimeClaims, TokenClaims, TokenIssuer};
use confsum_workload::{
    AttestationDocument, CheckName, Error, Expectations, ResponseVerifier, SignatureProblem,
    WorkloadKeys, verify_attestation,
};

use crate::common::ISSUER;

const HOST_DATA: [u8; 32] = [0x11; 32];

struct Token {
    issuer_url: &'static str,
    other_key: bool,
    host_data: [u8; 32],
    debuggable: bool,
    vmpl: u32,
    emulated: bool,
    age: Duration,
}

const GOOD: Token = Token {
    issuer_url: ISSUER,
    other_key: false,
    host_data: HOST_DATA,
    debuggable: false,
    vmpl: 0,
    emulated: true,
    age: Duration::ZERO,
};

struct World {
    issuer: TokenIssuer,
    other: TokenIssuer,
    tee: InsecureEmulatedTee,
    keys: WorkloadKeys,
}

impl World {
    fn new() -> World {
        World {
            issuer: TokenIssuer::generate(ISSUER).unwrap(),
            other: TokenIssuer::generate("https://evil.test").unwrap(),
            tee: InsecureEmulatedTee::generate().unwrap(),
            keys: WorkloadKeys::generate().unwrap(),
        }
    }

    fn document(&self, t: &Token) -> AttestationDocument {
        let runtime_json = self.keys.runtime_json().unwrap();
        let runtime = RuntimeClaims::from_json(runtime_json.as_bytes()).unwrap();
        let report_data = runtime.report_data();
        let evidence = self.tee.evidence(&report_data, &t.host_data).unwrap();
        let claims = TokenClaims::builder()
            .host_data(t.host_data)
            .report_data(report_data)
            .runtime(runtime)
            .debuggable(t.debuggable)
            .vmpl(t.vmpl)
            .insecure_emulated(t.emulated)
            .build()
            .unwrap();
        let signer = if t.other_key {
            &self.other
        } else if t.issuer_url == ISSUER {
            &self.issuer
        } else {
            // Same key as the trusted service, another `iss`.
            &TokenIssuer::from_pkcs8_pem(t.issuer_url, &self.issuer.to_pkcs8_pem().unwrap())
                .unwrap()
        };
        let issued = SystemTime::now() - t.age;
        let token = signer
            .issue(&claims, issued, Duration::from_secs(3600))
            .unwrap();
        AttestationDocument {
            token,
            evidence: evidence.encode(),
            runtime_data: runtime_json,
        }
    }

    fn expect(&self, allow_emulated: bool) -> Expectations {
        let mut e = Expectations::new(ISSUER, self.issuer.jwks(), HOST_DATA);
        e.allow_insecure_emulated = allow_emulated;
        e
    }
}

#[test]
fn refusals_name_the_failing_check() {
    let world = World::new();
    let cases: &[(&str, Token, bool, CheckName)] = &[
        (
            "token from another attestation service",
            Token {
                issuer_url: "https://evil.test",
                other_key: true,
                ..GOOD
            },
            true,
            CheckName::TokenSignature,
        ),
        (
            "token with another issuer",
            Token {
                issuer_url: "https://attest.test.evil",
                ..GOOD
            },
            true,
            CheckName::Issuer,
        ),
        (
            "expired token",
            Token {
                age: Duration::from_secs(2 * 3600),
                ..GOOD
            },
            true,
            CheckName::Validity,
        ),
        (
            "other host_data",
            Token {
                host_data: [0x22; 32],
                ..GOOD
            },
            true,
            CheckName::HostData,
        ),
        (
            "debuggable",
            Token {
                debuggable: true,
                ..GOOD
            },
            true,
            CheckName::Debug,
        ),
        ("vmpl 1", Token { vmpl: 1, ..GOOD }, true, CheckName::Vmpl),
        (
            "emulated without the flag",
            GOOD,
            false,
            CheckName::Emulated,
        ),
    ];
    for (name, token, allow, failing) in cases {
        let doc = world.document(token);
        let v = verify_attestation(&doc, &world.expect(*allow), SystemTime::now());
        assert!(!v.trusted, "{name}: trusted");
        let failed: Vec<_> = v.failures().map(|c| c.check).collect();
        assert_eq!(failed, [*failing], "{name}: {}", v.refusal());
        assert!(v.trusted_verifier().is_err(), "{name}");
        assert!(v.refusal().contains(failing.as_str()), "{name}");
    }

    // The control: the good token with the flag is trusted, and says
    // which checks it made.
    let v = verify_attestation(
        &world.document(&GOOD),
        &world.expect(true),
        SystemTime::now(),
    );
    assert!(v.trusted, "{}", v.refusal());
    assert_eq!(v.checks.len(), 10);
    let host = v
        .checks
        .iter()
        .find(|c| c.check == CheckName::HostData)
        .unwrap();
    assert_eq!(host.actual, hex::encode(HOST_DATA));
}

#[test]
fn evidence_and_runtime_data_must_be_the_tokens() {
    let world = World::new();
    let mut doc = world.document(&GOOD);
    // Evidence of another report (other host_data) next to the token.
    let other = world.document(&Token {
        host_data: [0x33; 32],
        ..GOOD
    });
    doc.evidence = other.evidence;
    let v = verify_attestation(&doc, &world.expect(true), SystemTime::now());
    let failed: Vec<_> = v.failures().map(|c| c.check).collect();
    assert_eq!(failed, [CheckName::Evidence]);

    let mut doc = world.document(&GOOD);
    doc.runtime_data = WorkloadKeys::generate().unwrap().runtime_json().unwrap();
    let v = verify_attestation(&doc, &world.expect(true), SystemTime::now());
    let failed: Vec<_> = v.failures().map(|c| c.check).collect();
    assert_eq!(failed, [CheckName::RuntimeBinding]);
}

#[test]
fn answers_not_signed_by_the_attested_key_are_refused() {
    let world = World::new();
    let doc = world.document(&GOOD);
    let v = verify_attestation(&doc, &world.expect(true), SystemTime::now());
    let verifier = v.trusted_verifier().unwrap();
    let payload = br#"{"summaries":[]}"#;

    let good = world.keys.signer().sign(payload).unwrap();
    assert_eq!(verifier.verify(&good).unwrap(), payload);

    // Another key (another workload, or an impostor).
    let impostor = WorkloadKeys::generate().unwrap();
    let other = impostor.signer().sign(payload).unwrap();
    assert!(matches!(
        verifier.verify(&other),
        Err(Error::Signature(SignatureProblem::WrongKey { .. }))
    ));
    // Another key claiming the attested kid.
    let mut forged = other.clone();
    forged.protected = good.protected.clone();
    assert!(matches!(
        verifier.verify(&forged),
        Err(Error::Signature(SignatureProblem::BadSignature))
    ));
    // A changed answer.
    let mut changed = good.clone();
    changed.payload = other_payload(&good.payload);
    assert!(matches!(
        verifier.verify(&changed),
        Err(Error::Signature(SignatureProblem::BadSignature))
    ));
    // Not signed at all.
    assert!(matches!(
        verifier.verify_body::<serde_json::Value>(payload),
        Err(Error::Signature(SignatureProblem::NotSigned))
    ));
    // alg none.
    let mut none = good.clone();
    none.protected = base64_url(br#"{"alg":"none"}"#);
    assert!(matches!(
        verifier.verify(&none),
        Err(Error::Signature(SignatureProblem::Algorithm(_)))
    ));
    // Runtime data without a signing key gives no verifier.
    let wrap_only = world.keys.wrapping().runtime_jwks();
    assert!(matches!(
        ResponseVerifier::from_runtime_json(&wrap_only),
        Err(Error::Signature(SignatureProblem::NoSigningKey))
    ));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn other_payload(_: &str) -> String {
    base64_url(br#"{"summaries":[{"summary":"forged"}]}"#)
}
