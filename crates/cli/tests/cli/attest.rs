//! `confsum attest` on the real ACI capture and on tokens.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use confsum_attest::{TokenClaims, TokenIssuer};
use confsum_testkit::Run;
use sha2::{Digest, Sha256};

use crate::common::{self, vectors};

fn aci(file: &str) -> PathBuf {
    vectors("aci").join(file)
}

fn confsum(args: &[&str]) -> Run {
    common::confsum().args(args).run()
}

fn policy_hash() -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(aci("uvm_security_policy.base64")).unwrap();
    let policy = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    hex::encode(Sha256::digest(policy))
}

#[test]
fn the_aci_capture_verifies_against_its_policy() {
    let report = aci("snp_report.bin");
    for certs in [
        "uvm_host_amd_certificate.json",
        "uvm_host_amd_certificate.pem",
    ] {
        let out = confsum(&[
            "attest",
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--certs",
            aci(certs).to_str().unwrap(),
            "--host-data",
            &policy_hash(),
        ]);
        assert!(
            out.status.success(),
            "{certs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Milan"));
    }
}

#[test]
fn a_flipped_byte_or_a_wrong_policy_fails_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = std::fs::read(aci("snp_report.bin")).unwrap();
    report[0xC0] ^= 1; // host_data, inside the signed part
    let flipped = tmp.path().join("flipped.bin");
    std::fs::write(&flipped, &report).unwrap();
    let certs = aci("uvm_host_amd_certificate.json");
    let out = confsum(&[
        "attest",
        "verify",
        "--report",
        flipped.to_str().unwrap(),
        "--certs",
        certs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = confsum(&[
        "attest",
        "verify",
        "--report",
        aci("snp_report.bin").to_str().unwrap(),
        "--certs",
        certs.to_str().unwrap(),
        "--host-data",
        &"00".repeat(32),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host_data") && err.contains(&policy_hash()),
        "{err}"
    );
}

#[test]
fn show_prints_the_fields() {
    let out = confsum(&["attest", "show", aci("snp_report.bin").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&policy_hash()) && text.contains("debug false"),
        "{text}"
    );
}

#[test]
fn tokens_verify_only_with_their_issuers_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::generate("https://attest.example").unwrap();
    let claims = TokenClaims::builder().host_data([7; 32]).build().unwrap();
    let token = issuer
        .issue(&claims, SystemTime::now(), Duration::from_secs(600))
        .unwrap();
    let jwks = tmp.path().join("certs.json");
    std::fs::write(&jwks, serde_json::to_vec(&issuer.jwks()).unwrap()).unwrap();

    let out = confsum(&[
        "attest",
        "token",
        "verify",
        &token,
        "--jwks",
        jwks.to_str().unwrap(),
        "--issuer",
        "https://attest.example",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&"07".repeat(32)));

    let other = TokenIssuer::generate("https://attest.example").unwrap();
    let forged = other
        .issue(&claims, SystemTime::now(), Duration::from_secs(600))
        .unwrap();
    let out = confsum(&[
        "attest",
        "token",
        "verify",
        &forged,
        "--jwks",
        jwks.to_str().unwrap(),
        "--issuer",
        "https://attest.example",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = confsum(&[
        "attest",
        "token",
        "verify",
        &token,
        "--jwks",
        jwks.to_str().unwrap(),
        "--issuer",
        "https://other.example",
    ]);
    assert_eq!(out.status.code(), Some(1));
}
