//! The broker core end to end, in process: tokens from confsum-attest's
//! issuer, import, release, the signed response checked as the sidecar
//! checks it, denials, admin auth, restarts, tampering, concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confsum_testkit::{Cmd, python_with};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_attest::{RuntimeClaims, TokenClaims, TokenIssuer};
use confsum_skr::{
    AttestAuthorities, AuditProblem, Broker, BrokerConfig, Error, ImportKeyRequest, KeyMaterial,
    KeyType, LocalCa, MasterKey, ReleasePolicy, ReleaseRequest, ReleaseVerifier, SigningIdentity,
    UpdateKeyRequest, VerifiedClaims, WrapAlgorithm, WrappingPrivateKey, derive_rsa_hsm_key,
    verify_audit_jsonl,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://attest.local";
const ADMIN: &str = "admin-token-0123456789";
const HOST_DATA: [u8; 32] = [0xab; 32];
const ENDPOINT: &str = "localhost:8443";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_760_000_000)
}

struct Fixture {
    dir: tempfile::TempDir,
    broker: Broker,
    ca: LocalCa,
    master: MasterKey,
    issuer: TokenIssuer,
    authorities: AttestAuthorities,
    workload: WrappingPrivateKey,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
        let (signer, ca) =
            SigningIdentity::generate_with_local_ca(&["localhost", ENDPOINT, "127.0.0.1"], now())
                .unwrap();
        let broker = Broker::open(
            &dir.path().join("broker.redb"),
            &master,
            signer,
            BrokerConfig::new(&format!("https://{ENDPOINT}")),
        )
        .unwrap();
        broker.set_admin_token(ADMIN).unwrap();
        let issuer = TokenIssuer::generate(ISSUER).unwrap();
        let mut authorities = AttestAuthorities::new();
        authorities.trust(ISSUER, issuer.jwks());
        Fixture {
            dir,
            broker,
            ca,
            master,
            issuer,
            authorities,
            workload: WrappingPrivateKey::generate(2048).unwrap(),
        }
    }

    /// Closes the database (a placeholder broker takes the fixture's place).
    fn close(&mut self) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let placeholder = Broker::open(
            &self.dir.path().join(format!("placeholder-{n}.redb")),
            &self.master,
            SigningIdentity::generate_with_local_ca(&["x"], now())
                .unwrap()
                .0,
            BrokerConfig::new("https://x"),
        )
        .unwrap();
        drop(std::mem::replace(&mut self.broker, placeholder));
    }

    /// Restarts the broker on the same database and master key (with a
    /// new signing identity: the test keeps no copy of the old key).
    fn reopen(&mut self) {
        self.reopen_with(true);
    }

    /// As [`Fixture::reopen`], with group commit on or off.
    fn reopen_with(&mut self, group_commit: bool) {
        self.close();
        let (signer, ca) =
            SigningIdentity::generate_with_local_ca(&["localhost", ENDPOINT], now()).unwrap();
        self.ca = ca;
        let mut config = BrokerConfig::new(&format!("https://{ENDPOINT}"));
        config.group_commit = group_commit;
        self.broker = Broker::open(
            &self.dir.path().join("broker.redb"),
            &self.master,
            signer,
            config,
        )
        .unwrap();
    }

    fn token(&self, host_data: [u8; 32], debuggable: bool, lifetime: u64) -> String {
        let runtime = RuntimeClaims::from_json(self.workload.runtime_jwks().as_bytes()).unwrap();
        let claims = TokenClaims::builder()
            .host_data(host_data)
            .report_data(runtime.report_data())
            .runtime(runtime)
            .vmpl(0)
            .debuggable(debuggable)
            .azure_compliant_uvm(true)
            .build()
            .unwrap();
        self.issuer
            .issue(&claims, now(), Duration::from_secs(lifetime))
            .unwrap()
    }

    fn policy(&self) -> ReleasePolicy {
        ReleasePolicy::decode(
            json!({"version": "1.0.0", "anyOf": [{"authority": ISSUER, "allOf": [
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": hex::encode(HOST_DATA)},
                {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"},
                {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"},
            ]}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn import(&self, name: &str, jwk: Value, immutable: bool) -> Result<Value, Error> {
        let body = json!({
            "key": jwk,
            "hsm": true,
            "attributes": {"exportable": true},
            "release_policy": {
                "contentType": "application/json; charset=utf-8",
                "data": self.policy().encode_base64url(),
                "immutable": immutable,
            },
        });
        let request = ImportKeyRequest::decode(body.to_string().as_bytes()).unwrap();
        let bundle = self
            .broker
            .import(Some(&format!("Bearer {ADMIN}")), name, &request, now())?;
        Ok(serde_json::to_value(bundle).unwrap())
    }

    fn release(
        &self,
        name: &str,
        token: &str,
        enc: Option<WrapAlgorithm>,
    ) -> Result<String, Error> {
        let request = ReleaseRequest {
            target: token.to_owned(),
            enc: enc.map(|e| e.name().to_owned()),
            nonce: None,
        };
        self.broker
            .release_token(name, &request, &self.authorities, now())
            .map(|r| r.value)
    }

    fn verifier(&self) -> ReleaseVerifier {
        ReleaseVerifier::new(&[&self.ca.cert_der], ENDPOINT).unwrap()
    }
}

fn oct_jwk(key: &[u8]) -> Value {
    json!({"kty": "oct-HSM", "k": URL_SAFE_NO_PAD.encode(key), "key_size": key.len() * 8})
}

#[test]
fn release_unwraps_to_the_imported_key() {
    let f = Fixture::new();
    let key = [0x42u8; 32];
    let bundle = f.import("docs", oct_jwk(&key), false).unwrap();
    assert_eq!(bundle["key"]["kty"], "oct-HSM");
    assert!(
        bundle["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with("https://localhost:8443/keys/docs/")
    );
    // GET never shows key material.
    let got = serde_json::to_string(&f.broker.key("docs").unwrap()).unwrap();
    assert!(!got.contains(&URL_SAFE_NO_PAD.encode(key)) && !got.contains("\"k\""));

    let token = f.token(HOST_DATA, false, 3600);
    for enc in [
        None,
        Some(WrapAlgorithm::RsaAesKeyWrap256),
        Some(WrapAlgorithm::RsaAesKeyWrap384),
    ] {
        let jws = f.release("docs", &token, enc).unwrap();
        let released = f.verifier().verify(&jws, now()).unwrap();
        assert_eq!(released.enc, enc.unwrap_or(WrapAlgorithm::RsaAesKeyWrap));
        assert_eq!(released.kty(), "oct-HSM");
        assert_eq!(released.payload.request.api_version, "7.4");
        assert_eq!(*released.unwrap(&f.workload).unwrap(), key);
        // Another workload's key cannot open it.
        let other = WrappingPrivateKey::generate(2048).unwrap();
        assert!(matches!(released.unwrap(&other), Err(Error::Unwrap)));
    }
    let report = f.broker.verify_audit().unwrap();
    assert_eq!(report.records, 4); // import + 3 releases
    assert!(report.macs_checked && report.head_checked);
}

#[test]
fn release_is_checked_as_the_sidecar_checks_it() {
    let f = Fixture::new();
    f.import("docs", oct_jwk(&[1; 32]), false).unwrap();
    let jws = f
        .release("docs", &f.token(HOST_DATA, false, 3600), None)
        .unwrap();

    // Header as Managed HSM writes it.
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["x5c"].as_array().unwrap().len(), 2);
    assert_eq!(header["kid"], header["x5t#S256"]);

    // The endpoint as configured: host, host:port, IP; not another name.
    for endpoint in ["localhost", ENDPOINT, "127.0.0.1"] {
        let v = ReleaseVerifier::new(&[&f.ca.cert_der], endpoint).unwrap();
        v.verify(&jws, now()).unwrap();
    }
    for endpoint in ["other.example", "localhost:9999"] {
        let v = ReleaseVerifier::new(&[&f.ca.cert_der], endpoint).unwrap();
        assert!(matches!(
            v.verify(&jws, now()),
            Err(Error::Jws(confsum_skr::JwsProblem::WrongName(_)))
        ));
    }
    // Another CA is not trusted.
    let (_, other_ca) = SigningIdentity::generate_with_local_ca(&["localhost"], now()).unwrap();
    let v = ReleaseVerifier::new(&[other_ca.cert_der], ENDPOINT).unwrap();
    assert!(matches!(
        v.verify(&jws, now()),
        Err(Error::Jws(confsum_skr::JwsProblem::Untrusted(_)))
    ));
    // Expired certificates are refused.
    let late = now() + Duration::from_secs(20 * 365 * 24 * 3600);
    assert!(f.verifier().verify(&jws, late).is_err());
    // A changed payload or signature fails.
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["request"]["enc"] = json!("RSA_AES_KEY_WRAP_256");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert!(matches!(
        f.verifier().verify(&forged, now()),
        Err(Error::Jws(confsum_skr::JwsProblem::Signature))
    ));
    for bad in ["", "a.b", "a.b.c", &jws[..jws.len() - 3]] {
        assert!(f.verifier().verify(bad, now()).is_err());
    }

    // Independent check: PyJWT verifies the JWS with x5c[0]'s key, and
    // cryptography finds the leaf issued by the CA.
    if !python_ok() {
        return;
    }
    let script = r#"
import sys, json, base64, jwt
from cryptography import x509
req = json.load(sys.stdin)
header = jwt.get_unverified_header(req["jws"])
leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
ca = x509.load_der_x509_certificate(bytes.fromhex(req["ca"]))
leaf.verify_directly_issued_by(ca)
payload = jwt.decode(req["jws"], leaf.public_key(), algorithms=["RS256"])
print(json.dumps(payload))
"#;
    let payload = run_python(
        script,
        &json!({"jws": jws, "ca": hex::encode(&f.ca.cert_der)}),
    );
    assert_eq!(payload["request"]["enc"], "CKM_RSA_AES_KEY_WRAP");
    let key_hsm: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(
                payload["response"]["key"]["key"]["key_hsm"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert!(key_hsm["ciphertext"].is_string());
}

#[test]
fn refusals_name_their_cause_and_are_audited() {
    let f = Fixture::new();
    f.import("docs", oct_jwk(&[1; 32]), false).unwrap();

    // Another host_data: 403 naming the claim, expected and actual.
    let err = f
        .release("docs", &f.token([0xcd; 32], false, 3600), None)
        .unwrap_err();
    assert_eq!(err.status(), 403);
    let body = serde_json::to_value(err.to_response()).unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("x-ms-sevsnpvm-hostdata"), "{message}");
    assert!(message.contains(&hex::encode(HOST_DATA)), "{message}");
    assert!(message.contains(&hex::encode([0xcd; 32])), "{message}");

    // Debuggable.
    let err = f
        .release("docs", &f.token(HOST_DATA, true, 3600), None)
        .unwrap_err();
    assert!(
        err.to_string().contains("x-ms-sevsnpvm-is-debuggable"),
        "{err}"
    );

    // Expired token, untrusted issuer, garbage: 403 token rejected.
    let expired = {
        let t = f.token(HOST_DATA, false, 60);
        let request = ReleaseRequest {
            target: t,
            enc: None,
            nonce: None,
        };
        f.broker
            .release_token(
                "docs",
                &request,
                &f.authorities,
                now() + Duration::from_secs(3600),
            )
            .unwrap_err()
    };
    assert!(matches!(expired, Error::TokenRejected(_)), "{expired}");
    let stranger = TokenIssuer::generate("https://evil.example").unwrap();
    let runtime = RuntimeClaims::from_json(f.workload.runtime_jwks().as_bytes()).unwrap();
    let claims = TokenClaims::builder()
        .host_data(HOST_DATA)
        .runtime(runtime)
        .azure_compliant_uvm(true)
        .build()
        .unwrap();
    let evil = stranger
        .issue(&claims, now(), Duration::from_secs(3600))
        .unwrap();
    let err = f.release("docs", &evil, None).unwrap_err();
    assert!(err.to_string().contains("untrusted issuer"), "{err}");
    assert_eq!(err.status(), 403);
    // The stranger's key with our issuer's name: bad signature.
    let impostor = TokenIssuer::generate(ISSUER).unwrap();
    let forged = impostor
        .issue(&claims, now(), Duration::from_secs(3600))
        .unwrap();
    assert!(matches!(
        f.release("docs", &forged, None),
        Err(Error::TokenRejected(_))
    ));
    assert!(matches!(
        f.release("docs", "garbage", None),
        Err(Error::TokenRejected(_))
    ));

    // Unknown key: 404 before any token work; bad enc: 400.
    assert_eq!(
        f.release("nope", "garbage", None).unwrap_err().status(),
        404
    );
    let request = ReleaseRequest {
        target: f.token(HOST_DATA, false, 3600),
        enc: Some("MY_OWN_WRAP".into()),
        nonce: None,
    };
    let err = f
        .broker
        .release_token("docs", &request, &f.authorities, now())
        .unwrap_err();
    assert_eq!(err.status(), 400);

    // A verified token whose runtime keys hold no encrypt key: 400.
    let no_keys = VerifiedClaims::from_value(json!({
        "iss": ISSUER,
        "x-ms-sevsnpvm-hostdata": hex::encode(HOST_DATA),
        "x-ms-compliance-status": "azure-compliant-uvm",
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-vmpl": 0,
        "x-ms-runtime": {"keys": [{"kty": "RSA", "key_ops": ["verify"], "n": "AQAB", "e": "AQAB"}]},
    }))
    .unwrap();
    let request = ReleaseRequest {
        target: String::new(),
        enc: None,
        nonce: None,
    };
    let err = f
        .broker
        .release("docs", &request, &no_keys, now())
        .unwrap_err();
    assert_eq!(err.status(), 400, "{err}");

    // Each refusal is in the audit log, with its reason and the token.
    let log = String::from_utf8(f.broker.export_audit().unwrap()).unwrap();
    let denials: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["record"]["event"] == "deny")
        .map(|e| e["record"].clone())
        .collect();
    assert_eq!(denials.len(), 8, "{log}");
    assert_eq!(denials[0]["token"]["iss"], ISSUER);
    assert_eq!(denials[0]["token"]["host_data"], hex::encode([0xcd; 32]));
    assert!(denials[0]["token"]["jti"].is_string());
    assert!(
        denials[0]["reason"]
            .as_str()
            .unwrap()
            .contains("x-ms-sevsnpvm-hostdata")
    );
    f.broker.verify_audit().unwrap();
}

#[test]
fn admin_requests_need_the_bearer_token() {
    let f = Fixture::new();
    let body = ImportKeyRequest::decode(
        json!({"key": oct_jwk(&[1; 32]), "attributes": {"exportable": true},
            "release_policy": {"data": f.policy().encode_base64url()}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic admin"),
        Some(ADMIN),
        Some(""),
    ] {
        let err = f.broker.import(auth, "docs", &body, now()).unwrap_err();
        assert_eq!(err.status(), 401, "{auth:?}");
        assert_eq!(err.code(), "Unauthorized");
    }
    assert!(
        f.broker
            .import(Some(&format!("bearer  {ADMIN} ")), "docs", &body, now())
            .is_ok()
    );
    assert_eq!(
        f.broker
            .update(None, "docs", &UpdateKeyRequest::default(), now())
            .unwrap_err()
            .status(),
        401
    );
    // Import refuses what it cannot release.
    let auth = format!("Bearer {ADMIN}");
    let cases = [
        json!({"key": oct_jwk(&[1; 32]), "attributes": {"exportable": true}}),
        json!({"key": oct_jwk(&[1; 32]), "release_policy": {"data": f.policy().encode_base64url()}}),
        json!({"key": oct_jwk(&[1; 31]), "attributes": {"exportable": true},
            "release_policy": {"data": f.policy().encode_base64url()}}),
        json!({"key": oct_jwk(&[1; 32]), "attributes": {"exportable": true},
            "release_policy": {"data": URL_SAFE_NO_PAD.encode("{\"version\":\"9\"}")}}),
    ];
    for case in cases {
        let body = ImportKeyRequest::decode(case.to_string().as_bytes()).unwrap();
        let err = f
            .broker
            .import(Some(&auth), "docs2", &body, now())
            .unwrap_err();
        assert_eq!(err.status(), 400, "{case}: {err}");
    }
    let err = f
        .broker
        .import(Some(&auth), "bad/name", &body, now())
        .unwrap_err();
    assert_eq!(err.status(), 400);
    let log = String::from_utf8(f.broker.export_audit().unwrap()).unwrap();
    assert_eq!(log.matches("\"admin_denied\"").count(), 6);
}

#[test]
fn policy_updates_and_immutability() {
    let f = Fixture::new();
    let auth = format!("Bearer {ADMIN}");
    f.import("mutable", oct_jwk(&[1; 32]), false).unwrap();
    f.import("frozen", oct_jwk(&[2; 32]), true).unwrap();
    let token = f.token([0xcd; 32], false, 3600);
    assert!(f.release("mutable", &token, None).is_err());

    // Re-point the mutable key's policy at the new host_data.
    let mut policy = f.policy();
    if let confsum_skr::Condition::Claim(c) = &mut policy.any_of[0].conditions[0] {
        c.value = confsum_skr::ClaimValue::String(hex::encode([0xcd; 32]));
    }
    let update = UpdateKeyRequest::decode(
        json!({"release_policy": {"contentType": "application/json; charset=utf-8",
            "data": policy.encode_base64url()}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    f.broker
        .update(Some(&auth), "mutable", &update, now())
        .unwrap();
    f.release("mutable", &token, None).unwrap();

    let err = f
        .broker
        .update(Some(&auth), "frozen", &update, now())
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (409, "Conflict"));
    assert!(f.release("frozen", &token, None).is_err());
    assert_eq!(
        f.broker
            .update(Some(&auth), "missing", &update, now())
            .unwrap_err()
            .status(),
        404
    );

    // Disabling a key stops releases (403).
    let disable = UpdateKeyRequest::decode(br#"{"attributes": {"enabled": false}}"#).unwrap();
    f.broker
        .update(Some(&auth), "mutable", &disable, now())
        .unwrap();
    let err = f.release("mutable", &token, None).unwrap_err();
    assert!(matches!(err, Error::KeyDisabled { .. }));
    assert_eq!(err.status(), 403);
    f.broker.verify_audit().unwrap();
}

#[test]
fn rsa_keys_release_as_pkcs8() {
    let f = Fixture::new();
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let b = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
    let jwk = json!({"kty": "RSA-HSM", "n": b(key.n()), "e": b(key.e()), "d": b(key.d()),
        "p": b(&key.primes()[0]), "q": b(&key.primes()[1]), "key_ops": ["encrypt", "decrypt"]});
    let bundle = f.import("rsa", jwk, false).unwrap();
    assert_eq!(bundle["key"]["n"], b(key.n()));
    assert_eq!(bundle["key"]["key_ops"], json!(["encrypt", "decrypt"]));
    assert!(bundle["key"].get("d").is_none());
    let jws = f
        .release("rsa", &f.token(HOST_DATA, false, 3600), None)
        .unwrap();
    let released = f.verifier().verify(&jws, now()).unwrap();
    assert_eq!(released.kty(), "RSA-HSM");
    let der = released.unwrap(&f.workload).unwrap();
    let material = KeyMaterial::from_bytes(KeyType::Rsa, der.clone()).unwrap();
    assert_eq!(material.public_jwk()["n"], b(key.n()));
    derive_rsa_hsm_key(&der, "00ff", "").unwrap();
}

#[test]
fn keys_and_log_survive_a_restart_and_are_encrypted_at_rest() {
    let mut f = Fixture::new();
    let key = [0x5cu8; 32];
    f.import("docs", oct_jwk(&key), false).unwrap();
    f.release("docs", &f.token(HOST_DATA, false, 3600), None)
        .unwrap();
    f.reopen();
    let jws = f
        .release("docs", &f.token(HOST_DATA, false, 3600), None)
        .unwrap();
    assert_eq!(
        *f.verifier()
            .verify(&jws, now())
            .unwrap()
            .unwrap(&f.workload)
            .unwrap(),
        key
    );
    assert_eq!(f.broker.verify_audit().unwrap().records, 3);

    let db = std::fs::read(f.dir.path().join("broker.redb")).unwrap();
    for needle in [key.to_vec(), URL_SAFE_NO_PAD.encode(key).into_bytes()] {
        assert!(!db.windows(needle.len()).any(|w| w == needle.as_slice()));
    }
    // The master key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let path = f.dir.path().join("master.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        MasterKey::load_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load_file(&path),
            Err(Error::MasterKey(_))
        ));
        assert!(MasterKey::create_file(&path).is_err(), "never overwrites");
    }
    // Another master key does not open the database.
    drop(f.broker);
    let (signer, _) = SigningIdentity::generate_with_local_ca(&["localhost"], now()).unwrap();
    let err = Broker::open(
        &f.dir.path().join("broker.redb"),
        &MasterKey::generate().unwrap(),
        signer,
        BrokerConfig::new("https://localhost"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
}

/// A policy edited in the database without the master key makes the key
/// unreleasable (500), never released under the new policy.
#[test]
fn a_policy_changed_behind_the_brokers_back_fails_closed() {
    let mut f = Fixture::new();
    f.import("docs", oct_jwk(&[7; 32]), false).unwrap();
    let path = f.dir.path().join("broker.redb");
    f.reopen_closed(|| {
        use redb::ReadableTable as _;
        let db = redb::Database::create(&path).unwrap();
        let table_def: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("keys");
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(table_def).unwrap();
            let record = table.get("docs").unwrap().unwrap().value().to_vec();
            let text = String::from_utf8(record).unwrap();
            let policy = ReleasePolicy::decode(
                json!({"version": "1.0.0", "anyOf": [{"authority": ISSUER,
                    "allOf": [{"claim": "x-ms-sevsnpvm-vmpl", "equals": 0}]}]})
                .to_string()
                .as_bytes(),
            )
            .unwrap();
            let old = f_policy_data(&text);
            let edited = text.replace(&old, &policy.encode_base64url());
            assert_ne!(edited, text);
            table.insert("docs", edited.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    });
    let err = f
        .release("docs", &f.token([0xcd; 32], false, 3600), None)
        .unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    assert_eq!(err.status(), 500);
    assert_eq!(
        serde_json::to_value(err.to_response()).unwrap()["error"]["message"],
        "internal error"
    );
}

fn f_policy_data(record: &str) -> String {
    let v: Value = serde_json::from_str(record).unwrap();
    v["meta"]["release_policy"]["data"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl Fixture {
    /// Closes the database, runs `edit` on it, and opens it again.
    fn reopen_closed(&mut self, edit: impl FnOnce()) {
        self.close();
        edit();
        self.reopen();
    }
}

#[test]
fn audit_log_tampering_is_caught() {
    let f = Fixture::new();
    f.import("docs", oct_jwk(&[1; 32]), false).unwrap();
    let token = f.token(HOST_DATA, false, 3600);
    for _ in 0..3 {
        f.release("docs", &token, None).unwrap();
    }
    f.release("docs", &f.token([0; 32], false, 3600), None)
        .unwrap_err();
    let key = f.master.audit_key();
    let log = f.broker.export_audit().unwrap();
    let report = verify_audit_jsonl(&log, Some(&key)).unwrap();
    assert_eq!(report.records, 5);
    assert!(report.head_checked && report.macs_checked);
    let without_key = verify_audit_jsonl(&log, None).unwrap();
    assert!(!without_key.macs_checked);

    let lines: Vec<String> = String::from_utf8(log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (entries, head) = lines.split_at(lines.len() - 1);
    let join = |e: &[String]| format!("{}\n", e.join("\n"));
    let broken = |text: String, key: Option<&confsum_skr::AuditKey>| match verify_audit_jsonl(
        text.as_bytes(),
        key,
    ) {
        Err(Error::AuditBroken { seq, problem }) => (seq, problem),
        other => panic!("not caught: {other:?}"),
    };

    // One record changed (the reason of the denial, or a release's time).
    let mut changed = entries.to_vec();
    changed[4] = changed[4].replace("x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-hostdatb");
    let with_head = |e: Vec<String>| {
        let mut all = e;
        all.push(head[0].clone());
        join(&all)
    };
    assert_eq!(
        broken(with_head(changed.clone()), Some(&key)),
        (4, AuditProblem::Mac)
    );
    // Without the key, a change to the last record shows at the head.
    assert_eq!(broken(with_head(changed), None).1, AuditProblem::Chain);
    let mut changed = entries.to_vec();
    changed[1] = changed[1].replacen("\"time\":1760000000", "\"time\":1760000001", 1);
    assert_eq!(broken(with_head(changed), None), (2, AuditProblem::Chain));

    // One record removed: from the middle, or the end.
    let mut removed = entries.to_vec();
    removed.remove(2);
    assert_eq!(
        broken(with_head(removed), None),
        (
            2,
            AuditProblem::Sequence {
                expected: 2,
                found: 3
            }
        )
    );
    let mut cut = entries.to_vec();
    cut.pop();
    assert_eq!(
        broken(with_head(cut), Some(&key)).1,
        AuditProblem::Truncated {
            expected: 5,
            found: 4
        }
    );

    // Two records swapped.
    let mut swapped = entries.to_vec();
    swapped.swap(1, 2);
    assert_eq!(
        broken(with_head(swapped), None),
        (
            1,
            AuditProblem::Sequence {
                expected: 1,
                found: 2
            }
        )
    );

    // A rewritten chain (seq and prev fixed up) still fails the MACs.
    let mut fixed = entries.to_vec();
    fixed.remove(1);
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        record: &'a serde_json::value::RawValue,
    }
    let first: Raw<'_> = serde_json::from_str(&fixed[0]).unwrap();
    let mut prev = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(first.record.get()));
    let mut rebuilt = vec![fixed[0].clone()];
    for (i, line) in fixed.iter().enumerate().skip(1) {
        let entry: Value = serde_json::from_str(line).unwrap();
        let mut record = entry["record"].clone();
        record["seq"] = json!(i);
        record["prev"] = json!(prev);
        let bytes = serde_json::to_vec(&record).unwrap();
        prev = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        rebuilt.push(json!({"record": record, "mac": entry["mac"]}).to_string());
    }
    verify_audit_jsonl(join(&rebuilt).as_bytes(), None).unwrap();
    assert_eq!(broken(join(&rebuilt), Some(&key)), (1, AuditProblem::Mac));
}

#[test]
fn concurrent_releases_all_succeed_and_the_log_verifies() {
    let f = Fixture::new();
    f.import("docs", oct_jwk(&[3; 32]), false).unwrap();
    let token = f.token(HOST_DATA, false, 3600);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| f.release("docs", &token, None)))
            .collect();
        for h in handles {
            let jws = h.join().unwrap().unwrap();
            assert_eq!(
                *f.verifier()
                    .verify(&jws, now())
                    .unwrap()
                    .unwrap(&f.workload)
                    .unwrap(),
                [3; 32]
            );
        }
    });
    assert_eq!(f.broker.verify_audit().unwrap().records, 51);
}

/// Releases and denials from many threads at once, with group commit on
/// and off: every answer has exactly one audit record (found by its
/// token's `jti`), the chain verifies with every MAC, and it still does
/// after a restart.
#[test]
fn concurrent_requests_get_one_audit_record_each_in_a_verifiable_chain() {
    for group_commit in [true, false] {
        let mut f = Fixture::new();
        f.reopen_with(group_commit);
        f.import("docs", oct_jwk(&[5; 32]), false).unwrap();
        let good: Vec<String> = (0..32).map(|_| f.token(HOST_DATA, false, 3600)).collect();
        let bad: Vec<String> = (0..8).map(|_| f.token([1; 32], false, 3600)).collect();
        std::thread::scope(|s| {
            let releases: Vec<_> = good
                .iter()
                .map(|t| s.spawn(|| f.release("docs", t, None)))
                .collect();
            let denials: Vec<_> = bad
                .iter()
                .map(|t| s.spawn(|| f.release("docs", t, None)))
                .collect();
            for h in releases {
                let jws = h.join().unwrap().unwrap();
                let key = f.verifier().verify(&jws, now()).unwrap();
                assert_eq!(*key.unwrap(&f.workload).unwrap(), [5; 32]);
            }
            for h in denials {
                assert_eq!(h.join().unwrap().unwrap_err().status(), 403);
            }
        });
        let jti = |token: &str| {
            let payload = URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap();
            serde_json::from_slice::<Value>(&payload).unwrap()["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let log = String::from_utf8(f.broker.export_audit().unwrap()).unwrap();
        let records: Vec<Value> = log
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap()
                    .get("record")
                    .cloned()
            })
            .collect();
        assert_eq!(records.len(), 1 + good.len() + bad.len());
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record["seq"], i, "group_commit {group_commit}");
        }
        let count = |event: &str, token: &str| {
            let jti = jti(token);
            records
                .iter()
                .filter(|r| r["event"] == event && r["token"]["jti"] == jti.as_str())
                .count()
        };
        assert!(good.iter().all(|t| count("release", t) == 1));
        assert!(bad.iter().all(|t| count("deny", t) == 1));
        let key = f.master.audit_key();
        let report = verify_audit_jsonl(log.as_bytes(), Some(&key)).unwrap();
        assert!(report.macs_checked && report.head_checked);
        assert_eq!(report.records, 41);
        f.reopen();
        assert_eq!(f.broker.verify_audit().unwrap().records, 41);
        assert_eq!(f.broker.export_audit().unwrap(), log.as_bytes());
    }
}

#[test]
fn token_check_is_a_closure_seam() {
    let f = Fixture::new();
    f.import("docs", oct_jwk(&[4; 32]), false).unwrap();
    let runtime: Value = serde_json::from_str(&f.workload.runtime_jwks()).unwrap();
    let check = |token: &str, _now: SystemTime| {
        if token != "let-me-in" {
            return Err(Error::TokenRejected("unknown token".into()));
        }
        VerifiedClaims::from_value(json!({
            "iss": format!("{ISSUER}/"),
            "x-ms-sevsnpvm-hostdata": hex::encode(HOST_DATA),
            "x-ms-compliance-status": "azure-compliant-uvm",
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-vmpl": 0,
            "x-ms-runtime": runtime,
        }))
    };
    let request = |t: &str| ReleaseRequest {
        target: t.into(),
        enc: None,
        nonce: Some("n-1".into()),
    };
    let jws = f
        .broker
        .release_token("docs", &request("let-me-in"), &check, now())
        .unwrap()
        .value;
    let released = f.verifier().verify(&jws, now()).unwrap();
    assert_eq!(released.payload.request.nonce.as_deref(), Some("n-1"));
    assert_eq!(
        f.broker
            .release_token("docs", &request("nope"), &check, now())
            .unwrap_err()
            .status(),
        403
    );
}

#[test]
fn every_error_has_a_status() {
    let cases: Vec<(Error, u16, &str)> = vec![
        (Error::BadRequest("x".into()), 400, "BadParameter"),
        (Error::UnsupportedAlgorithm("x".into()), 400, "BadParameter"),
        (Error::Unauthorized, 401, "Unauthorized"),
        (Error::TokenRejected("x".into()), 403, "Forbidden"),
        (Error::KeyNotFound { name: "k".into() }, 404, "KeyNotFound"),
        (Error::PolicyImmutable { name: "k".into() }, 409, "Conflict"),
        (Error::Storage("disk".into()), 500, "InternalError"),
    ];
    for (err, status, code) in cases {
        assert_eq!((err.status(), err.code()), (status, code), "{err}");
    }
}

/// `python3` with PyJWT and cryptography; false when it is missing and
/// `CONFSUM_SKIP_REAL_TOOLS=1`.
fn python_ok() -> bool {
    python_with(&["jwt", "cryptography"], "pyjwt cryptography").is_some()
}

fn run_python(script: &str, input: &Value) -> Value {
    let out = Cmd::new("python3")
        .args(["-c", script])
        .stdin(input.to_string())
        .run()
        .success();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A key file (raw oct bytes, PKCS#8 or PKCS#1 PEM, DER) becomes the
/// private JWK a client imports, and the broker reads back exactly the
/// same key material from that JWK.
#[test]
fn key_files_become_import_jwks_that_read_back_identically() {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let ec_key = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    let cases: Vec<(KeyType, Vec<u8>, &str)> = vec![
        (KeyType::Oct, vec![9u8; 32], "oct-HSM"),
        (
            KeyType::Rsa,
            rsa_key
                .to_pkcs8_pem(LineEnding::LF)
                .unwrap()
                .as_bytes()
                .to_vec(),
            "RSA-HSM",
        ),
        (
            KeyType::Rsa,
            rsa_key
                .to_pkcs1_pem(LineEnding::LF)
                .unwrap()
                .as_bytes()
                .to_vec(),
            "RSA-HSM",
        ),
        (
            KeyType::Rsa,
            rsa_key.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            "RSA-HSM",
        ),
        (
            KeyType::Ec,
            ec_key
                .to_pkcs8_pem(LineEnding::LF)
                .unwrap()
                .as_bytes()
                .to_vec(),
            "EC-HSM",
        ),
    ];
    for (kty, file, name) in cases {
        let material = KeyMaterial::from_key_file(kty, &file).unwrap();
        let jwk = material.to_import_jwk().unwrap();
        assert_eq!(jwk["kty"], name);
        let back = KeyMaterial::from_jwk(&jwk).unwrap();
        assert_eq!(back.bytes(), material.bytes(), "{name}");
        assert_eq!(back.public_jwk(), material.public_jwk(), "{name}");
    }
    // The wrong kind of file is a typed error, not a panic.
    assert!(KeyMaterial::from_key_file(KeyType::Oct, &[1u8; 31]).is_err());
    assert!(KeyMaterial::from_key_file(KeyType::Rsa, b"-----BEGIN NOTHING-----").is_err());
    assert!(KeyMaterial::from_key_file(KeyType::Ec, &[0u8; 40]).is_err());
}
