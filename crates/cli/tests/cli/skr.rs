//! `confsum skr`: policy, check and audit verify as a user runs them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use confsum_attest::{RuntimeClaims, TokenClaims, TokenIssuer};
use confsum_skr::{
    Broker, BrokerConfig, ImportKeyRequest, MasterKey, ReleaseRequest, SigningIdentity,
    VerifiedClaims, WrappingPrivateKey,
};
use serde_json::json;

const ISSUER: &str = "https://attest.local";
const HOST_DATA: [u8; 32] = [0x3c; 32];

fn confsum(args: &[&str]) -> Output {
    Command::new(crate::common::BIN)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token(issuer: &TokenIssuer, host_data: [u8; 32]) -> String {
    let workload = WrappingPrivateKey::generate(2048).unwrap();
    let runtime = RuntimeClaims::from_json(workload.runtime_jwks().as_bytes()).unwrap();
    let claims = TokenClaims::builder()
        .host_data(host_data)
        .runtime(runtime)
        .azure_compliant_uvm(true)
        .build()
        .unwrap();
    issuer
        .issue(&claims, SystemTime::now(), Duration::from_secs(600))
        .unwrap()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn policy_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let out = confsum(&[
        "skr",
        "policy",
        "--host-data",
        &hex::encode_upper(HOST_DATA),
        "--authority",
        "attest.local",
        "--claim",
        "x-ms-attestation-type=sevsnpvm",
        "--out",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(written["version"], "1.0.0");
    assert_eq!(written["anyOf"][0]["authority"], ISSUER);
    let claims = written["anyOf"][0]["allOf"].as_array().unwrap();
    assert_eq!(claims[0]["equals"], hex::encode(HOST_DATA), "lowercase hex");
    assert_eq!(
        claims[2],
        json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"})
    );
    assert_eq!(
        claims[3],
        json!({"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"})
    );
    assert_eq!(claims.len(), 5);

    let issuer = TokenIssuer::generate(ISSUER).unwrap();
    let good = write(dir.path(), "good.jwt", &token(&issuer, HOST_DATA));
    let bad = write(dir.path(), "bad.jwt", &token(&issuer, [0x11; 32]));
    let jwks = write(
        dir.path(),
        "jwks.json",
        &serde_json::to_string(&issuer.jwks()).unwrap(),
    );
    let p = policy.to_str().unwrap();

    // Unverified: allowed, with a loud warning.
    let out = confsum(&["skr", "check", "--policy", p, "--token", &good]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("ALLOWED"), "{stdout}");
    assert!(stderr.contains("NOT verified"), "{stderr}");

    // Another host_data: exit 3, naming the claim, expected and actual.
    let out = confsum(&["skr", "check", "--policy", p, "--token", &bad]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("DENIED"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "x-ms-sevsnpvm-hostdata equals \"{}\": actual \"{}\"",
            hex::encode(HOST_DATA),
            hex::encode([0x11; 32])
        )),
        "{stdout}"
    );

    // Verified against the JWKS.
    let out = confsum(&[
        "skr", "check", "--policy", p, "--token", &good, "--jwks", &jwks,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("token verified"), "{stdout}");
    assert!(!stderr.contains("NOT verified"));

    // A JWKS that did not sign it: exit 1.
    let other = TokenIssuer::generate(ISSUER).unwrap();
    let other_jwks = write(
        dir.path(),
        "other.json",
        &serde_json::to_string(&other.jwks()).unwrap(),
    );
    let out = confsum(&[
        "skr",
        "check",
        "--policy",
        p,
        "--token",
        &good,
        "--jwks",
        &other_jwks,
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));

    // The base64url form and an importkeyconfig.json are read as policies.
    let b64 = confsum(&[
        "skr",
        "policy",
        "--host-data",
        &hex::encode(HOST_DATA),
        "--authority",
        ISSUER,
        "--base64url",
    ]);
    assert!(b64.status.success());
    let b64_path = write(
        dir.path(),
        "policy.b64",
        &String::from_utf8(b64.stdout).unwrap(),
    );
    let out = confsum(&["skr", "check", "--policy", &b64_path, "--token", &good]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let config =
        std::fs::read_to_string(crate::common::vectors("aci").join("importkeyconfig.json"))
            .unwrap()
            .replace("<authority-of-key-imported-to-akv>", "attest.local")
            .replace(
                "<hash-digest-of-the-security-policy>",
                &hex::encode(HOST_DATA),
            );
    let config_path = write(dir.path(), "importkeyconfig.json", &config);
    let out = confsum(&["skr", "check", "--policy", &config_path, "--token", &good]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    // Bad input is an error, not a panic.
    let out = confsum(&["skr", "policy", "--host-data", "abc", "--authority", ISSUER]);
    assert_eq!(out.status.code(), Some(1));
    let junk = write(dir.path(), "junk", "not a token");
    let out = confsum(&["skr", "check", "--policy", p, "--token", &junk]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn audit_verify_db_and_exported_log() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let db_path = dir.path().join("broker.redb");
    let master = MasterKey::create_file(&key_path).unwrap();
    let (signer, _) =
        SigningIdentity::generate_with_local_ca(&["localhost"], SystemTime::now()).unwrap();
    let broker = Broker::open(
        &db_path,
        &master,
        signer,
        BrokerConfig::new("https://localhost"),
    )
    .unwrap();
    broker.set_admin_token("admin-token-0123456789").unwrap();
    let policy = confsum_skr::ReleasePolicy::all_of(
        ISSUER,
        vec![vec![confsum_skr::ClaimCondition::equals(
            "x-ms-sevsnpvm-vmpl",
            "0",
        )]],
    );
    let request = ImportKeyRequest::decode(
        json!({"key": {"kty": "oct-HSM",
            "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32])},
            "attributes": {"exportable": true},
            "release_policy": {"data": policy.encode_base64url()}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    broker
        .import(
            Some("Bearer admin-token-0123456789"),
            "k",
            &request,
            SystemTime::now(),
        )
        .unwrap();
    let workload = WrappingPrivateKey::generate(2048).unwrap();
    let claims = VerifiedClaims::from_value(json!({
        "iss": ISSUER, "x-ms-sevsnpvm-vmpl": 0,
        "x-ms-runtime": serde_json::from_str::<serde_json::Value>(&workload.runtime_jwks()).unwrap(),
    }))
    .unwrap();
    let release = ReleaseRequest {
        target: String::new(),
        enc: None,
        nonce: None,
    };
    broker
        .release("k", &release, &claims, SystemTime::now())
        .unwrap();
    let log = broker.export_audit().unwrap();
    drop(broker);

    let db = db_path.to_str().unwrap();
    let key = key_path.to_str().unwrap();
    let out = confsum(&["skr", "audit", "verify", db, "--master-key", key]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("2 records") && stdout.contains("MACs verified"),
        "{stdout}"
    );
    let out = confsum(&["skr", "audit", "verify", db]);
    assert!(text(&out).0.contains("NOT checked"), "{:?}", text(&out));

    let jsonl = dir.path().join("audit.jsonl");
    std::fs::write(&jsonl, &log).unwrap();
    let out = confsum(&[
        "skr",
        "audit",
        "verify",
        jsonl.to_str().unwrap(),
        "--master-key",
        key,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The first record removed.
    let text_log = String::from_utf8(log).unwrap();
    let cut: Vec<&str> = text_log.lines().skip(1).collect();
    std::fs::write(&jsonl, cut.join("\n")).unwrap();
    let out = confsum(&["skr", "audit", "verify", jsonl.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("does not verify"), "{stderr}");

    // Another master key does not open the database.
    let other = dir.path().join("other.key");
    MasterKey::create_file(&other).unwrap();
    let out = confsum(&[
        "skr",
        "audit",
        "verify",
        db,
        "--master-key",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = confsum(&[
        "skr",
        "audit",
        "verify",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}
