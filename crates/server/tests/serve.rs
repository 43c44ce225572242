#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shared plumbing over real HTTP and HTTPS on loopback: the
//! attestation service's routes and status codes, the error envelope,
//! body and rate limits, TLS with a CA trusted by the shared client,
//! graceful shutdown, and the KDS certificate fetcher.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{Router, routing::get};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use confsum_attest::{
    AttestRequest, CertificateFetcher as _, InsecureEmulatedTee, Jwks, Product, RuntimeClaims,
    Service, SnpEvidence, TokenIssuer, TokenVerifier, TrustedRoots, Verifier,
};
use confsum_server::{
    Client, Error, KdsFetcher, Limits, Method, RateLimit, Request, Server, TlsConfig,
};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use serde_json::Value;

const RUNTIME: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"wrap","n":"AQAB","e":"AQAB"}]}"#;
const HOST_DATA: [u8; 32] = [0x42; 32];
const ATTEST: &str = "/attest/SevSnpVM?api-version=2020-10-01";

fn tee() -> &'static InsecureEmulatedTee {
    static TEE: OnceLock<InsecureEmulatedTee> = OnceLock::new();
    TEE.get_or_init(|| InsecureEmulatedTee::generate().unwrap())
}

fn loopback() -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn attest_service(url: &str, insecure: bool) -> Service {
    let mut roots = TrustedRoots::amd();
    if insecure {
        roots
            .add_insecure_root(&tee().insecure_ark_der().unwrap())
            .unwrap();
    }
    Service::new(TokenIssuer::generate(url).unwrap(), roots)
}

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

/// Sends and returns the status with the body, or with the envelope's
/// code for an error.
fn call(client: &Client, method: Method, url: &str, body: &[u8]) -> (u16, String) {
    let mut request = Request::new(method, url);
    if !body.is_empty() {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        request = Request::json(method, url, &json).unwrap();
    }
    match client.send(request) {
        Ok(body) => (200, String::from_utf8(body).unwrap()),
        Err(Error::Status {
            status,
            error: Some(error),
            ..
        }) => {
            assert!(!error.message.is_empty());
            (status, error.code)
        }
        Err(other) => panic!("{method:?} {url}: {other:?}"),
    }
}

/// Raw bytes to a path, over a plain TCP connection: for bodies that are
/// not JSON.
fn raw_post(url: &str, target: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_slice(&response[split + 4..]).unwrap(),
    )
}

#[test]
fn emulated_evidence_is_refused_without_an_insecure_root() {
    let server = loopback();
    let service = attest_service(&server.url(), false);
    let running = server
        .spawn(confsum_server::attest::router(service))
        .unwrap();
    let (status, body) = raw_post(running.url(), ATTEST, &emulated_request(RUNTIME, RUNTIME));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "EvidenceNotVerified");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a trusted root"),
        "{body}"
    );
    running.stop().unwrap();
}

#[test]
fn emulated_evidence_gets_a_token_with_an_insecure_root() {
    let server = loopback();
    let url = server.url();
    let running = server
        .spawn(confsum_server::attest::router(attest_service(&url, true)))
        .unwrap();
    let client = Client::new();
    let request: AttestRequest =
        serde_json::from_slice(&emulated_request(RUNTIME, RUNTIME)).unwrap();
    let token = client.attest(&url, &request).unwrap().token;
    let jwks = client.fetch_jwks(&format!("{url}/certs")).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let claims = TokenVerifier::new(jwks, &url)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert!(claims.insecure_emulated);
    assert_eq!(claims.compliance_status, None);
    assert_eq!(claims.host_data, HOST_DATA);
    assert_eq!(claims.nonce.as_deref(), Some("7"));
    assert_eq!(claims.runtime.as_ref().unwrap().json().as_bytes(), RUNTIME);
    confsum_attest::runtime_keys_match(&claims, &claims.report_data).unwrap();
    running.stop().unwrap();
}

#[test]
fn refusals_have_their_status_and_code() {
    let server = loopback();
    let url = server.url();
    let running = server
        .spawn(confsum_server::attest::router(attest_service(&url, true)))
        .unwrap();
    let good = emulated_request(RUNTIME, RUNTIME);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&good).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let report_data = RuntimeClaims::from_json(RUNTIME).unwrap().report_data();
    let mut flipped = tee().report(&report_data, &HOST_DATA);
    flipped[0xC0] ^= 1;
    let flipped = serde_json::to_vec(&AttestRequest::new(
        &SnpEvidence::new(&flipped, tee().cert_chain_pem().unwrap().as_bytes(), &[]),
        RUNTIME,
        None,
    ))
    .unwrap();
    let short = serde_json::json!({
        "SnpReport": URL_SAFE.encode([0u8; 100]),
        "VcekCertChain": URL_SAFE.encode(tee().cert_chain_pem().unwrap()),
    });
    let other = br#"{"keys":[{"kty":"RSA","kid":"other","n":"AQAB","e":"AQAB"}]}"#;

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "not JSON",
            ATTEST,
            b"{not json".to_vec(),
            400,
            "InvalidRequest",
        ),
        (
            "report not base64url",
            ATTEST,
            edit(&|v| v["report"] = "***".into()),
            400,
            "InvalidRequest",
        ),
        (
            "runtime data not base64url",
            ATTEST,
            edit(&|v| v["runtimeData"]["data"] = "!!".into()),
            400,
            "InvalidRequest",
        ),
        (
            "short report",
            ATTEST,
            edit(&|v| {
                v["report"] = URL_SAFE.encode(serde_json::to_vec(&short).unwrap()).into();
            }),
            400,
            "InvalidReport",
        ),
        (
            "wrong api-version",
            "/attest/SevSnpVM?api-version=2022-08-01",
            good.clone(),
            400,
            "InvalidApiVersion",
        ),
        (
            "no api-version",
            "/attest/SevSnpVM",
            good.clone(),
            400,
            "MissingApiVersion",
        ),
        (
            "runtime data not committed to",
            ATTEST,
            emulated_request(other, RUNTIME),
            400,
            "RuntimeDataMismatch",
        ),
        (
            "a flipped report byte",
            ATTEST,
            flipped,
            403,
            "EvidenceNotVerified",
        ),
        ("unknown path", "/nope", b"{}".to_vec(), 404, "NotFound"),
    ];
    for (case, target, body, status, code) in cases {
        let (got, answer) = raw_post(&url, target, &body);
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (status, code),
            "{case}: {answer}"
        );
    }
    let client = Client::new();
    assert_eq!(
        call(&client, Method::Get, &format!("{url}{ATTEST}"), b""),
        (405, "MethodNotAllowed".to_owned())
    );
    assert_eq!(
        call(&client, Method::Post, &format!("{url}/certs"), b"{}"),
        (405, "MethodNotAllowed".to_owned())
    );
    running.stop().unwrap();
}

#[test]
fn body_and_rate_limits_answer_in_the_envelope() {
    let server = loopback().limits(
        Limits::new()
            .body_bytes(1000)
            // Two at once, then one an hour: the third is refused.
            .rate(RateLimit::new(2, Duration::from_secs(3600))),
    );
    let url = server.url();
    let running = server
        .spawn(confsum_server::attest::router(attest_service(&url, true)))
        .unwrap();
    let (status, body) = raw_post(&url, ATTEST, &[b'x'; 1001]);
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (413, "PayloadTooLarge"),
        "{body}"
    );
    let (status, body) = raw_post(&url, ATTEST, &[b'x'; 10]);
    assert_eq!(status, 400, "{body}");
    let err = Client::new()
        .get(&format!("{url}/certs"))
        .expect_err("the bucket is empty");
    match err {
        Error::Status {
            status: 429,
            error: Some(error),
            ..
        } => assert_eq!(error.code, "Throttled"),
        other => panic!("{other:?}"),
    }
    running.stop().unwrap();
}

/// A self-signed certificate for 127.0.0.1 and its key, PEM.
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn https_with_a_trusted_local_ca() {
    let (cert, key) = self_signed();
    let server = loopback().tls(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let running = server
        .spawn(confsum_server::attest::router(attest_service(&url, true)))
        .unwrap();

    let client = Client::builder()
        .add_root_pem(cert.as_bytes())
        .unwrap()
        .build();
    let request: AttestRequest =
        serde_json::from_slice(&emulated_request(RUNTIME, RUNTIME)).unwrap();
    let token = client.attest(&url, &request).unwrap().token;
    let jwks: Jwks = client.fetch_jwks(&format!("{url}/certs")).unwrap();
    let claims = TokenVerifier::new(jwks, &url)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert_eq!(claims.iss, url);
    assert!(claims.insecure_emulated);
    // Errors come back in the envelope over TLS too.
    assert_eq!(
        call(&client, Method::Get, &format!("{url}/nope"), b""),
        (404, "NotFound".to_owned())
    );

    // Without the CA, the certificate is refused.
    let err = Client::new()
        .get(&format!("{url}/certs"))
        .expect_err("an untrusted certificate");
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    // A plain-HTTP request to the TLS port gets nothing useful.
    let plain = url.replace("https://", "http://");
    assert!(Client::new().get(&format!("{plain}/certs")).is_err());
    running.stop().unwrap();
}

#[test]
fn tls_config_errors_are_typed() {
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    assert!(matches!(
        TlsConfig::from_pem(b"", key.as_bytes()),
        Err(Error::NoCertificate)
    ));
    assert!(matches!(
        TlsConfig::from_pem(cert.as_bytes(), b""),
        Err(Error::NoPrivateKey)
    ));
    assert!(matches!(
        TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes()),
        Err(Error::Tls(_))
    ));
    let missing = std::path::Path::new("/nonexistent/cert.pem");
    assert!(matches!(
        TlsConfig::from_pem_files(missing, missing),
        Err(Error::Io { path, .. }) if path == missing
    ));
    assert!(matches!(
        Client::builder().add_root_pem(b"no pem here"),
        Err(Error::NoCertificate)
    ));
}

#[test]
fn answers_over_the_limit_are_refused() {
    let server = loopback();
    let url = server.url();
    let router = Router::new().route("/big", get(|| async { vec![b'a'; 100_000] }));
    let running = server.spawn(router).unwrap();
    let client = Client::builder().max_response_bytes(1000).build();
    let err = client.get(&format!("{url}/big")).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert_eq!(
        Client::new().get(&format!("{url}/big")).unwrap().len(),
        100_000
    );
    running.stop().unwrap();
}

#[test]
fn shutdown_lets_a_request_in_flight_finish() {
    let server = loopback();
    let url = server.url();
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "done"
        }),
    );
    let running = server.spawn(router).unwrap();
    let request = std::thread::spawn({
        let url = url.clone();
        move || Client::new().get(&format!("{url}/slow"))
    });
    std::thread::sleep(Duration::from_millis(100));
    running.stop().unwrap();
    assert_eq!(request.join().unwrap().unwrap(), b"done");
    // And nothing listens any more.
    assert!(Client::new().get(&format!("{url}/slow")).is_err());
}

/// AMD's KDS, played by a local server that answers only the exact paths
/// and queries virtee's `snpguest fetch` would ask for the ACI capture.
#[test]
fn kds_fetcher_gets_the_chain_that_verifies_the_aci_capture() {
    let report = include_bytes!("../../attest/testdata/snp_report.bin");
    let pem = include_str!("../../attest/testdata/uvm_host_amd_certificate.pem");
    let ders: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect();
    let vcek = ders[0].clone();
    // ASK then ARK, as KDS serves cert_chain.
    let chain_pem = pem[pem.find("-----END CERTIFICATE-----").unwrap() + 25..]
        .trim_start()
        .to_owned();
    let parsed = confsum_attest::AttestationReport::parse(report).unwrap();
    let hwid = hex::encode(parsed.chip_id);
    // REPORTED_TCB of the capture is 0x7308000000000003 (THIM's tcbm):
    // bootloader 3, tee 0, snp 8, microcode 0x73.
    let vcek_path = format!("/vcek/v1/Milan/{hwid}");
    let expected_query = "blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115";
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let server = loopback();
    let url = server.url();
    let counter = hits.clone();
    let router = Router::new()
        .route(
            &vcek_path,
            get(
                move |axum::extract::RawQuery(query): axum::extract::RawQuery| {
                    let vcek = vcek.clone();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if query.as_deref() == Some(expected_query) {
                            Ok(vcek)
                        } else {
                            Err(axum::http::StatusCode::BAD_REQUEST)
                        }
                    }
                },
            ),
        )
        .route(
            "/vcek/v1/Milan/cert_chain",
            get(move || async move { chain_pem }),
        );
    let running = server.spawn(router).unwrap();

    let fetcher = KdsFetcher::with_base_url(Client::new(), &url);
    assert_eq!(
        fetcher
            .vcek_url(Product::Milan, &parsed.chip_id, &parsed.reported_tcb)
            .unwrap(),
        format!("{url}{vcek_path}?{expected_query}")
    );
    let chain = fetcher
        .fetch(Product::Milan, &parsed.chip_id, &parsed.reported_tcb)
        .unwrap();
    assert!(chain.has_ask() && chain.has_ark());
    let now = UNIX_EPOCH + Duration::from_secs(1_748_736_000); // 2025-06-01
    let verified = Verifier::new(TrustedRoots::amd())
        .verify(report, &chain, now)
        .unwrap();
    assert_eq!(verified.product(), Some(Product::Milan));
    // The second fetch is answered from memory.
    fetcher
        .fetch(Product::Milan, &parsed.chip_id, &parsed.reported_tcb)
        .unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Another chip: KDS says 404, and the fetcher says why.
    let mut other = parsed.chip_id;
    other[0] ^= 1;
    let err = fetcher
        .fetch(Product::Milan, &other, &parsed.reported_tcb)
        .unwrap_err();
    match &err {
        confsum_attest::Error::Fetch(source) => {
            let source = source.downcast_ref::<Error>().unwrap();
            assert!(
                matches!(source, Error::Status { status: 404, .. }),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    running.stop().unwrap();
}
