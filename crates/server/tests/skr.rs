#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The key broker over real HTTP and HTTPS on loopback, with the
//! in-process attestation service and the emulated TEE: the Managed HSM
//! REST subset, its refusals, concurrency, restarts, JWKS refresh, and a
//! released key unwrapped by Python's `cryptography`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_attest::{
    AttestRequest, InsecureEmulatedTee, Service, TokenClaims, TokenIssuer, TrustedRoots,
};
use confsum_server::skr::TrustedAuthorities;
use confsum_server::{Client, Error, HsmClient, Server, Spawned, TlsConfig};
use confsum_skr::{
    Broker, BrokerConfig, ClaimCondition, ImportAttributes, ImportKeyRequest, KeyMaterial, KeyType,
    MasterKey, POLICY_CONTENT_TYPE, ReleasePolicy, ReleasePolicyBody, SigningIdentity,
    UpdateKeyRequest, WrappingPrivateKey,
};

const HOST_DATA: [u8; 32] = [0x42; 32];
const ADMIN: &str = "admin-token-0123456789abcdef";

fn tee() -> &'static InsecureEmulatedTee {
    static TEE: OnceLock<InsecureEmulatedTee> = OnceLock::new();
    TEE.get_or_init(|| InsecureEmulatedTee::generate().unwrap())
}

fn wrapping() -> &'static WrappingPrivateKey {
    static KEY: OnceLock<WrappingPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| WrappingPrivateKey::generate(2048).unwrap())
}

fn loopback() -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// The attestation service, accepting the emulated TEE.
fn attestation() -> Spawned {
    let server = loopback();
    let mut roots = TrustedRoots::amd();
    roots
        .add_insecure_root(&tee().insecure_ark_der().unwrap())
        .unwrap();
    let service = Service::new(TokenIssuer::generate(&server.url()).unwrap(), roots);
    server
        .spawn(confsum_server::attest::router(service))
        .unwrap()
}

/// A token for the emulated TEE with `host_data`, binding the test's
/// wrapping key.
fn token(attest_url: &str, host_data: [u8; 32]) -> String {
    let runtime = wrapping().runtime_jwks();
    let report_data = confsum_attest::RuntimeClaims::from_json(runtime.as_bytes())
        .unwrap()
        .report_data();
    let evidence = tee().evidence(&report_data, &host_data).unwrap();
    let request = AttestRequest::new(&evidence, runtime.as_bytes(), None);
    Client::new().attest(attest_url, &request).unwrap().token
}

fn policy(authority: &str) -> ReleasePolicy {
    ReleasePolicy::all_of(
        authority,
        vec![vec![
            ClaimCondition::equals("x-ms-sevsnpvm-hostdata", hex::encode(HOST_DATA)),
            ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
            ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
        ]],
    )
}

fn import_request(key: &[u8], policy: &ReleasePolicy, immutable: bool) -> ImportKeyRequest {
    let material = KeyMaterial::from_key_file(KeyType::Oct, key).unwrap();
    ImportKeyRequest {
        key: material.to_import_jwk().unwrap(),
        hsm: Some(true),
        attributes: Some(ImportAttributes {
            enabled: Some(true),
            exportable: Some(true),
        }),
        release_policy: Some(ReleasePolicyBody {
            content_type: Some(POLICY_CONTENT_TYPE.to_owned()),
            data: policy.encode_base64url(),
            immutable: Some(immutable),
        }),
        tags: None,
    }
}

/// A broker on loopback, its state in `dir`, trusting `trusted`.
struct BrokerUnderTest {
    running: Spawned,
    broker: Arc<Broker>,
    /// The release CA (and, over HTTPS, the TLS certificate), PEM.
    ca_pem: String,
}

impl BrokerUnderTest {
    fn client(&self) -> HsmClient {
        HsmClient::with_ca_pem(self.running.url(), self.ca_pem.as_bytes()).unwrap()
    }

    fn admin(&self) -> HsmClient {
        self.client()
            .bearer(Some(zeroize::Zeroizing::new(ADMIN.to_owned())))
    }
}

fn start_broker(
    dir: &Path,
    master: &MasterKey,
    trusted: TrustedAuthorities,
    tls: Option<(&str, &str)>,
) -> BrokerUnderTest {
    let mut server = loopback();
    let mut ca_pem = String::new();
    if let Some((cert, key)) = tls {
        server = server.tls(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        ca_pem.push_str(cert);
    }
    let endpoint = server.local_addr().to_string();
    let (signer, ca) =
        SigningIdentity::generate_with_local_ca(&[&endpoint], SystemTime::now()).unwrap();
    ca_pem.push_str(&ca.cert_pem());
    let broker = Arc::new(
        Broker::open(
            &dir.join("broker.redb"),
            master,
            signer,
            BrokerConfig::new(&server.url()),
        )
        .unwrap(),
    );
    broker.set_admin_token(ADMIN).unwrap();
    let router = confsum_server::skr::router(Arc::clone(&broker), Arc::new(trusted));
    BrokerUnderTest {
        running: server.spawn(router).unwrap(),
        broker,
        ca_pem,
    }
}

fn status(result: Result<impl std::fmt::Debug, Error>) -> (u16, String, String) {
    match result {
        Err(Error::Status {
            status,
            error: Some(error),
            ..
        }) => (status, error.code, error.message),
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn key_bytes(seed: u8) -> Vec<u8> {
    (0..32)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect()
}

#[test]
fn the_right_workload_gets_exactly_the_imported_key_over_https() {
    let attest = attestation();
    let dir = tempfile::tempdir().unwrap();
    let tls_key = rcgen::KeyPair::generate().unwrap();
    let tls_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&tls_key)
        .unwrap();
    let broker = start_broker(
        dir.path(),
        &MasterKey::generate().unwrap(),
        TrustedAuthorities::new(Client::new()).trust(attest.url()),
        Some((&tls_cert.pem(), &tls_key.serialize_pem())),
    );
    assert!(broker.running.url().starts_with("https://"));
    let key = key_bytes(1);
    let bundle = broker
        .admin()
        .import(
            "disk-key",
            &import_request(&key, &policy(attest.url()), false),
        )
        .unwrap();
    assert_eq!(bundle.key.kty, "oct-HSM");
    assert!(
        bundle
            .key
            .kid
            .starts_with(&format!("{}/keys/disk-key/", broker.running.url()))
    );

    // GET: public attributes and the policy, never key material.
    let read = broker.client().key("disk-key").unwrap();
    assert_eq!(read.release_policy, bundle.release_policy);
    let raw = Client::builder()
        .add_root_pem(broker.ca_pem.as_bytes())
        .unwrap()
        .build()
        .get(&format!(
            "{}/keys/disk-key?api-version=7.4",
            broker.running.url()
        ))
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(!text.contains(&URL_SAFE_NO_PAD.encode(&key)), "{text}");
    assert!(!text.contains("\"k\""), "{text}");

    let released = broker
        .client()
        .release("disk-key", &token(attest.url(), HOST_DATA))
        .unwrap();
    assert_eq!(released.kty(), "oct-HSM");
    assert_eq!(released.unwrap(wrapping()).unwrap().as_slice(), key);
    // Not for another private key.
    let other = WrappingPrivateKey::generate(2048).unwrap();
    assert!(released.unwrap(&other).is_err());
}

#[test]
fn refusals_have_key_vault_statuses() {
    let attest = attestation();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &MasterKey::generate().unwrap(),
        TrustedAuthorities::new(Client::new()).trust(attest.url()),
        None,
    );
    let request = import_request(&key_bytes(2), &policy(attest.url()), true);

    // No or wrong admin token: 401, with WWW-Authenticate.
    let (code, name, _) = status(broker.client().import("k", &request));
    assert_eq!((code, name.as_str()), (401, "Unauthorized"));
    let wrong = broker.client().bearer(Some(zeroize::Zeroizing::new(
        "wrong-token-0123456789".to_owned(),
    )));
    assert_eq!(status(wrong.import("k", &request)).0, 401);
    let answer = ureq_raw(
        "PUT",
        &format!("{}/keys/k", broker.running.url()),
        b"not json",
    );
    assert_eq!(answer.0, 401);
    assert_eq!(answer.1.as_deref(), Some("bearer"));

    // Unknown key: 404 KeyNotFound, before any token work.
    let (code, name, _) = status(broker.client().key("nope"));
    assert_eq!((code, name.as_str()), (404, "KeyNotFound"));
    assert_eq!(status(broker.client().release("nope", "x.y.z")).0, 404);

    broker.admin().import("k", &request).unwrap();

    // Another host_data: 403 naming the failing claim.
    let (code, name, message) = status(
        broker
            .client()
            .release("k", &token(attest.url(), [0x43; 32])),
    );
    assert_eq!((code, name.as_str()), (403, "Forbidden"));
    assert!(message.contains("x-ms-sevsnpvm-hostdata"), "{message}");
    assert!(message.contains(&hex::encode(HOST_DATA)), "{message}");

    // A token from an issuer nobody trusts: 403.
    let stranger = TokenIssuer::generate("https://stranger.example").unwrap();
    let forged = stranger
        .issue(&claims(), SystemTime::now(), Duration::from_secs(600))
        .unwrap();
    let (code, _, message) = status(broker.client().release("k", &forged));
    assert_eq!(code, 403);
    assert!(message.contains("not a trusted"), "{message}");

    // Garbage instead of a token: 403; a body that is not a release: 400.
    assert_eq!(status(broker.client().release("k", "garbage")).0, 403);
    let answer = ureq_raw(
        "POST",
        &format!("{}/keys/k/release?api-version=7.4", broker.running.url()),
        b"{\"targetx\":1}",
    );
    assert_eq!(answer.0, 400);
    // An api-version of another service: 400.
    let answer = ureq_raw(
        "GET",
        &format!("{}/keys/k?api-version=2020-10-01", broker.running.url()),
        b"",
    );
    assert_eq!(answer.0, 400);

    // The policy is immutable: changing it is 409.
    let update = UpdateKeyRequest {
        release_policy: Some(ReleasePolicyBody {
            content_type: None,
            data: policy("https://elsewhere.example").encode_base64url(),
            immutable: Some(false),
        }),
        attributes: None,
    };
    let (code, name, _) = status(broker.admin().update("k", &update));
    assert_eq!((code, name.as_str()), (409, "Conflict"));
    assert_eq!(status(broker.client().update("k", &update)).0, 401);

    // A mutable policy can change, and then the old workload is refused.
    broker
        .admin()
        .import(
            "m",
            &import_request(&key_bytes(3), &policy(attest.url()), false),
        )
        .unwrap();
    broker.admin().update("m", &update).unwrap();
    let (code, _, message) = status(
        broker
            .client()
            .release("m", &token(attest.url(), HOST_DATA)),
    );
    assert_eq!(code, 403);
    assert!(message.contains("elsewhere"), "{message}");

    // Every refusal above is in the audit log, which verifies.
    let report = broker.broker.verify_audit().unwrap();
    assert!(report.records >= 8, "{report:?}");
}

/// Emulated-TEE claims for tokens made directly with a `TokenIssuer`.
fn claims() -> TokenClaims {
    let runtime =
        confsum_attest::RuntimeClaims::from_json(wrapping().runtime_jwks().as_bytes()).unwrap();
    TokenClaims::builder()
        .host_data(HOST_DATA)
        .report_data(runtime.report_data())
        .runtime(runtime)
        .insecure_emulated(true)
        .build()
        .unwrap()
}

/// A raw request: the status and the WWW-Authenticate header.
fn ureq_raw(method: &str, url: &str, body: &[u8]) -> (u16, Option<String>) {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let www = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("www-authenticate: ")
            .map(str::to_owned)
    });
    assert!(text.contains("\"error\""), "{text}");
    (status, www)
}

#[test]
fn expired_tokens_are_refused_and_jwks_are_refetched_on_rotation() {
    // A JWKS endpoint whose keys the test rotates.
    let first = TokenIssuer::generate("https://attest.example").unwrap();
    let second = TokenIssuer::generate("https://attest.example").unwrap();
    let current = Arc::new(std::sync::Mutex::new(first.jwks()));
    let served = Arc::clone(&current);
    let jwks_server = loopback();
    let jwks_url = format!("{}/certs", jwks_server.url());
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    let jwks = jwks_server
        .spawn(Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let served = Arc::clone(&served);
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(serde_json::to_value(&*served.lock().unwrap()).unwrap())
                }
            }),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &MasterKey::generate().unwrap(),
        TrustedAuthorities::new(Client::new())
            .min_refetch(Duration::ZERO)
            .trust_jwks_url("https://attest.example", &jwks_url),
        None,
    );
    broker
        .admin()
        .import(
            "k",
            &import_request(&key_bytes(4), &policy("https://attest.example"), false),
        )
        .unwrap();
    let now = SystemTime::now();

    let good = first
        .issue(&claims(), now, Duration::from_secs(600))
        .unwrap();
    let key = broker.client().release("k", &good).unwrap();
    assert_eq!(key.unwrap(wrapping()).unwrap().as_slice(), key_bytes(4));
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Cached: no second fetch.
    broker.client().release("k", &good).unwrap();
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Expired an hour ago (beyond any leeway): 403 saying so.
    let expired = first
        .issue(
            &claims(),
            now - Duration::from_secs(7200),
            Duration::from_secs(3600),
        )
        .unwrap();
    let (code, _, message) = status(broker.client().release("k", &expired));
    assert_eq!(code, 403);
    assert!(message.contains("expired"), "{message}");

    // The service rotates its key: a token with the new kid makes the
    // broker fetch the JWKS again, and the release succeeds.
    *current.lock().unwrap() = second.jwks();
    let rotated = second
        .issue(&claims(), now, Duration::from_secs(600))
        .unwrap();
    broker.client().release("k", &rotated).unwrap();
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(jwks);
}

#[test]
fn fifty_concurrent_releases_then_a_restart_keep_keys_and_audit_log() {
    let attest = attestation();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    let trusted = || TrustedAuthorities::new(Client::new()).trust(attest.url());
    let broker = start_broker(dir.path(), &master, trusted(), None);
    let key = key_bytes(5);
    broker
        .admin()
        .import("k", &import_request(&key, &policy(attest.url()), false))
        .unwrap();
    let good = token(attest.url(), HOST_DATA);
    let client = broker.client();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let good = good.clone();
            std::thread::spawn(move || client.release("k", &good))
        })
        .collect();
    for thread in threads {
        let released = thread.join().unwrap().unwrap();
        assert_eq!(released.unwrap(wrapping()).unwrap().as_slice(), key);
    }
    let report = broker.broker.verify_audit().unwrap();
    // The import and 50 releases.
    assert_eq!(report.records, 51, "{report:?}");
    let kid = client.key("k").unwrap().key.kid;

    // Restart on the same state.
    drop(client);
    let BrokerUnderTest {
        running, broker, ..
    } = broker;
    drop(running);
    drop(broker);
    let restarted = start_broker(dir.path(), &master, trusted(), None);
    let bundle = restarted.client().key("k").unwrap();
    assert_eq!(
        bundle.key.kid.rsplit('/').next(),
        kid.rsplit('/').next(),
        "same version after the restart"
    );
    let released = restarted.client().release("k", &good).unwrap();
    assert_eq!(released.unwrap(wrapping()).unwrap().as_slice(), key);
    assert_eq!(restarted.broker.verify_audit().unwrap().records, 52);
}

#[test]
fn python_cryptography_unwraps_a_released_key() {
    let Some(python) = confsum_testkit::python_with(&["cryptography"], "cryptography") else {
        return;
    };
    let attest = attestation();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &MasterKey::generate().unwrap(),
        TrustedAuthorities::new(Client::new()).trust(attest.url()),
        None,
    );
    let key = key_bytes(6);
    broker
        .admin()
        .import("k", &import_request(&key, &policy(attest.url()), false))
        .unwrap();
    let good = token(attest.url(), HOST_DATA);
    for enc in [
        "CKM_RSA_AES_KEY_WRAP",
        "RSA_AES_KEY_WRAP_256",
        "RSA_AES_KEY_WRAP_384",
    ] {
        let released = broker
            .client()
            .release_request(
                "k",
                &confsum_skr::ReleaseRequest {
                    target: good.clone(),
                    enc: Some(enc.to_owned()),
                    nonce: None,
                },
            )
            .unwrap();
        let pem = wrapping().to_pkcs8_pem().unwrap();
        let pem_file = dir.path().join("wrap.pem");
        std::fs::write(&pem_file, pem.as_bytes()).unwrap();
        let script = r#"
import sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)
ct = bytes.fromhex(sys.argv[2])
h = {'CKM_RSA_AES_KEY_WRAP': hashes.SHA1(), 'RSA_AES_KEY_WRAP_256': hashes.SHA256(),
     'RSA_AES_KEY_WRAP_384': hashes.SHA384()}[sys.argv[3]]
n = key.key_size // 8
kek = key.decrypt(ct[:n], padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None))
print(aes_key_unwrap_with_padding(kek, ct[n:]).hex())
"#;
        let out = std::process::Command::new(&python)
            .args(["-c", script])
            .arg(&pem_file)
            .arg(hex::encode(&released.ciphertext))
            .arg(enc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            hex::encode(&key),
            "{enc}"
        );
    }
}
