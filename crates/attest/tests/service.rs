#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The local attestation service over real HTTP on loopback.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::OnceLock,
    time::SystemTime,
};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use confsum_attest::{
    AttestRequest, AttestResponse, Jwks, RuntimeClaims, TokenIssuer, TokenVerifier,
    insecure::InsecureEmulatedTee,
    service::{self, Service},
};
use serde_json::Value;

const RUNTIME: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"wrap","n":"AQAB","e":"AQAB"}]}"#;
const HOST_DATA: [u8; 32] = [0x42; 32];

fn tee() -> &'static InsecureEmulatedTee {
    static TEE: OnceLock<InsecureEmulatedTee> = OnceLock::new();
    TEE.get_or_init(|| InsecureEmulatedTee::generate().unwrap())
}

/// Starts a service on 127.0.0.1:0 in a background thread; returns its
/// address and issuer URL.
fn start(insecure: bool) -> (SocketAddr, String) {
    let (listener, addr) = service::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let issuer_url = format!("http://{addr}");
    let issuer = TokenIssuer::generate(&issuer_url).unwrap();
    let root = insecure.then(|| tee().insecure_ark_der().unwrap());
    let svc = Service::new(issuer, root).unwrap();
    std::thread::spawn(move || service::serve_blocking(listener, svc));
    (addr, issuer_url)
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = std::str::from_utf8(&response[..split]).unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

const ATTEST: &str = "/attest/SevSnpVM?api-version=2020-10-01";

fn emulated_request(runtime: &[u8], committed: &[u8]) -> Vec<u8> {
    let report_data = RuntimeClaims::from_json(committed).unwrap().report_data();
    let evidence = tee().evidence(&report_data, &HOST_DATA).unwrap();
    serde_json::to_vec(&AttestRequest::new(
        &evidence,
        runtime,
        Some("7".to_owned()),
    ))
    .unwrap()
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[test]
fn emulated_evidence_is_refused_without_the_insecure_flag() {
    let (addr, _) = start(false);
    let (status, body) = http(addr, "POST", ATTEST, &emulated_request(RUNTIME, RUNTIME));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "EvidenceNotVerified");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a trusted root")
    );
}

#[test]
fn emulated_evidence_is_accepted_with_the_insecure_flag() {
    let (addr, issuer_url) = start(true);
    let (status, body) = http(addr, "POST", ATTEST, &emulated_request(RUNTIME, RUNTIME));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let AttestResponse { token } = serde_json::from_slice(&body).unwrap();

    let (status, certs) = http(addr, "GET", "/certs", b"");
    assert_eq!(status, 200);
    let jwks = Jwks::from_json(&certs).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let claims = TokenVerifier::new(jwks, &issuer_url)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert!(claims.insecure_emulated);
    assert_eq!(claims.compliance_status, None);
    assert_eq!(claims.host_data, HOST_DATA);
    assert!(!claims.is_debuggable);
    assert_eq!(claims.vmpl, 0);
    assert_eq!(claims.nonce.as_deref(), Some("7"));
    assert_eq!(claims.runtime.as_ref().unwrap().json().as_bytes(), RUNTIME);
    confsum_attest::runtime_keys_match(&claims, &claims.report_data).unwrap();
    // The raw payload says so too.
    let payload = token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["x-confsum-insecure-emulated"], true);
    assert!(payload.get("x-ms-compliance-status").is_none());
}

#[test]
fn malformed_requests_get_clear_4xx() {
    let (addr, _) = start(true);
    let good = emulated_request(RUNTIME, RUNTIME);

    // Not JSON.
    let (status, body) = http(addr, "POST", ATTEST, b"{not json");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "InvalidRequest")
    );

    // `report` is not base64url.
    let mut request: Value = serde_json::from_slice(&good).unwrap();
    request["report"] = Value::from("***not base64***");
    let (status, body) = http(addr, "POST", ATTEST, &serde_json::to_vec(&request).unwrap());
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "InvalidRequest")
    );

    // `runtimeData.data` is not base64url.
    let mut request: Value = serde_json::from_slice(&good).unwrap();
    request["runtimeData"]["data"] = Value::from("!!");
    let (status, body) = http(addr, "POST", ATTEST, &serde_json::to_vec(&request).unwrap());
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "InvalidRequest")
    );

    // A report of the wrong length.
    let mut request: Value = serde_json::from_slice(&good).unwrap();
    let evidence = serde_json::json!({
        "SnpReport": URL_SAFE.encode([0u8; 100]),
        "VcekCertChain": URL_SAFE.encode(tee().cert_chain_pem().unwrap()),
    });
    request["report"] = Value::from(URL_SAFE.encode(serde_json::to_vec(&evidence).unwrap()));
    let (status, body) = http(addr, "POST", ATTEST, &serde_json::to_vec(&request).unwrap());
    assert_eq!((status, error_code(&body).as_str()), (400, "InvalidReport"));

    // Wrong and missing api-version.
    let (status, body) = http(
        addr,
        "POST",
        "/attest/SevSnpVM?api-version=2022-08-01",
        &good,
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "InvalidApiVersion")
    );
    let (status, body) = http(addr, "POST", "/attest/SevSnpVM", &good);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "MissingApiVersion")
    );

    // Runtime data that report_data does not commit to.
    let other = br#"{"keys":[{"kty":"RSA","kid":"other","n":"AQAB","e":"AQAB"}]}"#;
    let (status, body) = http(addr, "POST", ATTEST, &emulated_request(other, RUNTIME));
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "RuntimeDataMismatch")
    );

    // A flipped byte in the report fails verification.
    let report_data = RuntimeClaims::from_json(RUNTIME).unwrap().report_data();
    let mut report = tee().report(&report_data, &HOST_DATA);
    report[0xC0] ^= 1;
    let evidence =
        confsum_attest::SnpEvidence::new(&report, tee().cert_chain_pem().unwrap().as_bytes(), &[]);
    let request = AttestRequest::new(&evidence, RUNTIME, None);
    let (status, body) = http(addr, "POST", ATTEST, &serde_json::to_vec(&request).unwrap());
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "EvidenceNotVerified")
    );

    // Wrong method.
    let (status, body) = http(addr, "GET", ATTEST, b"");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (405, "MethodNotAllowed")
    );

    // Unknown path.
    let (status, body) = http(addr, "GET", "/nope", b"");
    assert_eq!((status, error_code(&body).as_str()), (404, "NotFound"));
}
