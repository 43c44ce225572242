#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The attestation service's logic without HTTP: the real ACI capture in
//! the request shape the confidential sidecar sends, emulated evidence,
//! and every refusal with its typed cause. `confsum-server`'s tests run
//! the same service over HTTP.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use confsum_attest::{
    ATTEST_API_VERSION, AttestRequest, Error, InsecureEmulatedTee, RequestError, RequestField,
    RuntimeClaims, Service, SnpEvidence, TokenIssuer, TokenVerifier, TrustedRoots,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const ISS: &str = "https://attest.confsum.local";
const ACI_REPORT: &[u8] = include_bytes!("../testdata/snp_report.bin");
const ACI_THIM: &[u8] = include_bytes!("../testdata/uvm_host_amd_certificate.json");
const ACI_POLICY_B64: &str = include_str!("../testdata/uvm_security_policy.base64");
/// The runtime data that the sidecar's own test bound into the ACI capture
/// (microsoft/confidential-sidecar-containers; DESIGN.md): report_data is
/// SHA-256 of exactly these bytes, the final newline included.
const ACI_RUNTIME: &[u8] = b"{\n   \"akey\" : \"avalue\"\n}\n";
const TEE_RUNTIME: &[u8] =
    br#"{"keys":[{"e":"AQAB","key_ops":["encrypt"],"kid":"wrap","kty":"RSA","n":"AQAB"}]}"#;
const HOST_DATA: [u8; 32] = [0x42; 32];
const MAX_NONCE: &str = "18446744073709551615";

/// 2025-06-01: inside every certificate's validity.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_748_736_000)
}

fn issuer() -> TokenIssuer {
    static KEY: OnceLock<String> = OnceLock::new();
    let pem = KEY.get_or_init(|| {
        TokenIssuer::generate(ISS)
            .unwrap()
            .to_pkcs8_pem()
            .unwrap()
            .to_string()
    });
    TokenIssuer::from_pkcs8_pem(ISS, pem).unwrap()
}

fn tee() -> &'static InsecureEmulatedTee {
    static TEE: OnceLock<InsecureEmulatedTee> = OnceLock::new();
    TEE.get_or_init(|| InsecureEmulatedTee::generate().unwrap())
}

fn amd_service() -> Service {
    Service::new(issuer(), TrustedRoots::amd())
}

fn insecure_service() -> Service {
    let mut roots = TrustedRoots::amd();
    roots
        .add_insecure_root(&tee().insecure_ark_der().unwrap())
        .unwrap();
    Service::new(issuer(), roots)
}

/// The PEM chain the sidecar puts in `VcekCertChain`: THIM's `vcekCert`
/// followed by its `certificateChain`.
fn aci_chain_pem() -> Vec<u8> {
    let thim: Value = serde_json::from_slice(ACI_THIM).unwrap();
    let mut pem = thim["vcekCert"].as_str().unwrap().to_owned();
    pem.push_str(thim["certificateChain"].as_str().unwrap());
    pem.into_bytes()
}

/// A request body exactly as the sidecar's `pkg/common/maa.go` writes it:
/// Go's padded base64url, no `Endorsements`, an empty `initTimeData` and
/// a numeric nonce.
fn sidecar_body(report: &[u8], chain_pem: &[u8], runtime: &[u8], nonce: &str) -> Vec<u8> {
    let evidence = json!({
        "SnpReport": URL_SAFE.encode(report),
        "VcekCertChain": URL_SAFE.encode(chain_pem),
    });
    format!(
        r#"{{"report":"{}","runtimeData":{{"data":"{}","dataType":"JSON"}},"initTimeData":{{"data":"","dataType":""}},"nonce":{nonce}}}"#,
        URL_SAFE.encode(serde_json::to_vec(&evidence).unwrap()),
        URL_SAFE.encode(runtime),
    )
    .into_bytes()
}

/// Attests now: the emulated TEE's certificates start a day before it was
/// made.
fn attest(service: &Service, body: &[u8]) -> Result<confsum_attest::Attested, Error> {
    service.attest(body, Some(ATTEST_API_VERSION), SystemTime::now())
}

/// Attests at the fixed time the ACI capture's certificates are valid.
fn attest_aci(service: &Service, body: &[u8]) -> Result<confsum_attest::Attested, Error> {
    service.attest(body, Some(ATTEST_API_VERSION), now())
}

/// The regression: Azure accepts the real capture with its whitespace
/// runtime data, and so must we. report_data commits to the exact bytes.
#[test]
fn the_aci_capture_in_the_sidecars_shape_gets_a_token() {
    let body = sidecar_body(ACI_REPORT, &aci_chain_pem(), ACI_RUNTIME, MAX_NONCE);
    let text = String::from_utf8(body.clone()).unwrap();
    // The shape: padded base64url, no Endorsements, empty initTimeData,
    // a nonce above 2^63.
    assert!(text.contains(r#""initTimeData":{"data":"","dataType":""}"#));
    assert!(MAX_NONCE.parse::<u64>().unwrap() > 1 << 63);
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert!(request["report"].as_str().unwrap().ends_with('='));
    let evidence: Value = serde_json::from_slice(
        &URL_SAFE
            .decode(request["report"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(evidence.get("Endorsements").is_none());
    assert!(evidence["SnpReport"].as_str().unwrap().ends_with('='));

    let service = amd_service();
    assert!(!service.accepts_insecure());
    let attested = attest_aci(&service, &body).unwrap();
    assert!(!attested.insecure_emulated);
    let claims = TokenVerifier::new(service.jwks(), ISS)
        .verify(&attested.response.token, now())
        .unwrap();
    let policy = STANDARD.decode(ACI_POLICY_B64.trim()).unwrap();
    assert_eq!(claims.host_data, <[u8; 32]>::from(Sha256::digest(&policy)));
    assert_eq!(claims.nonce.as_deref(), Some(MAX_NONCE));
    assert!(!claims.insecure_emulated);
    assert_eq!(claims.compliance_status, None);
    assert!(!claims.is_debuggable);
    assert_eq!(claims.vmpl, 0);
    assert_eq!(
        &claims.report_data[..32],
        Sha256::digest(ACI_RUNTIME).as_slice()
    );
    assert_eq!(
        claims.runtime.unwrap().json(),
        "{\n   \"akey\" : \"avalue\"\n}"
    );

    // The same capture without the final newline is other bytes: refused.
    let body = sidecar_body(
        ACI_REPORT,
        &aci_chain_pem(),
        &ACI_RUNTIME[..ACI_RUNTIME.len() - 1],
        "1",
    );
    let err = attest_aci(&service, &body).unwrap_err();
    assert!(
        matches!(err, Error::BadRequest(RequestError::RuntimeDataMismatch)),
        "{err:?}"
    );
}

#[test]
fn emulated_evidence_only_with_an_insecure_root() {
    let report_data = RuntimeClaims::from_json(TEE_RUNTIME).unwrap().report_data();
    let report = tee().report(&report_data, &HOST_DATA);
    let chain = tee().cert_chain_pem().unwrap();
    let body = sidecar_body(&report, chain.as_bytes(), TEE_RUNTIME, MAX_NONCE);

    let err = attest(&amd_service(), &body).unwrap_err();
    assert!(matches!(err, Error::UnknownRoot), "{err:?}");

    let service = insecure_service();
    assert!(service.accepts_insecure());
    let attested = attest(&service, &body).unwrap();
    assert!(attested.insecure_emulated);
    let claims = TokenVerifier::new(service.jwks(), ISS)
        .verify(&attested.response.token, SystemTime::now())
        .unwrap();
    assert!(claims.insecure_emulated);
    assert_eq!(claims.compliance_status, None);
    assert_eq!(claims.host_data, HOST_DATA);
    assert_eq!(claims.nonce.as_deref(), Some(MAX_NONCE));
    assert_eq!(
        claims.runtime.as_ref().unwrap().json().as_bytes(),
        TEE_RUNTIME
    );
    confsum_attest::runtime_keys_match(&claims, &report_data).unwrap();

    // Unpadded base64url, a string nonce, no initTimeData and no nonce are
    // read too.
    let request = AttestRequest::new(
        &SnpEvidence::new(&report, chain.as_bytes(), &[]),
        TEE_RUNTIME,
        Some("n-1".into()),
    );
    let unpadded = serde_json::to_string(&request).unwrap().replace('=', "");
    let claims = TokenVerifier::new(service.jwks(), ISS)
        .verify(
            &attest(&service, unpadded.as_bytes())
                .unwrap()
                .response
                .token,
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(claims.nonce.as_deref(), Some("n-1"));
    let request = AttestRequest::new(
        &SnpEvidence::new(&report, chain.as_bytes(), &[]),
        TEE_RUNTIME,
        None,
    );
    attest(&service, &serde_json::to_vec(&request).unwrap()).unwrap();
}

#[test]
fn refusals_name_their_cause() {
    let service = insecure_service();
    let report_data = RuntimeClaims::from_json(TEE_RUNTIME).unwrap().report_data();
    let report = tee().report(&report_data, &HOST_DATA);
    let chain = tee().cert_chain_pem().unwrap();
    let good = sidecar_body(&report, chain.as_bytes(), TEE_RUNTIME, "7");
    attest(&service, &good).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&good).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let evidence_with = |report: &[u8], chain: &[u8]| {
        let evidence = json!({
            "SnpReport": URL_SAFE.encode(report),
            "VcekCertChain": URL_SAFE.encode(chain),
        });
        URL_SAFE.encode(serde_json::to_vec(&evidence).unwrap())
    };
    let mut flipped = report.clone();
    flipped[0xC0] ^= 1;

    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("not JSON", b"{not json".to_vec(), |e| {
            matches!(e, Error::BadRequest(RequestError::Body(_)))
        }),
        (
            "report not base64url",
            edit(&|v| v["report"] = "***".into()),
            |e| {
                matches!(
                    e,
                    Error::BadRequest(RequestError::Base64(RequestField::Report))
                )
            },
        ),
        (
            "report not evidence JSON",
            edit(&|v| v["report"] = URL_SAFE.encode(b"[1]").into()),
            |e| matches!(e, Error::BadRequest(RequestError::Evidence(_))),
        ),
        (
            "runtime data not base64url",
            edit(&|v| v["runtimeData"]["data"] = "!!".into()),
            |e| {
                matches!(
                    e,
                    Error::BadRequest(RequestError::Base64(RequestField::RuntimeData))
                )
            },
        ),
        (
            "dataType Binary",
            edit(&|v| v["runtimeData"]["dataType"] = "Binary".into()),
            |e| matches!(e, Error::BadRequest(RequestError::UnsupportedDataType(t)) if t == "Binary"),
        ),
        (
            "report of 100 bytes",
            edit(&|v| v["report"] = evidence_with(&[0; 100], chain.as_bytes()).into()),
            |e| matches!(e, Error::ReportLength(100)),
        ),
        (
            "chain not PEM",
            edit(&|v| v["report"] = evidence_with(&report, b"no pem").into()),
            |e| matches!(e, Error::BadRequest(RequestError::CertChain(_))),
        ),
        (
            "a flipped report byte",
            edit(&|v| v["report"] = evidence_with(&flipped, chain.as_bytes()).into()),
            |e| matches!(e, Error::BadReportSignature),
        ),
        (
            "runtime data that report_data does not commit to",
            edit(&|v| v["runtimeData"]["data"] = URL_SAFE.encode(br#"{"keys":[]}"#).into()),
            |e| matches!(e, Error::BadRequest(RequestError::RuntimeDataMismatch)),
        ),
        ("nonce negative", edit(&|v| v["nonce"] = (-1).into()), |e| {
            matches!(e, Error::BadRequest(RequestError::Body(_)))
        }),
    ];
    for (case, body, check) in cases {
        match attest(&service, &body) {
            Err(err) => assert!(check(&err), "{case}: wrong error {err:?}"),
            Ok(_) => panic!("{case}: accepted"),
        }
    }

    // Runtime data that is committed to but is not a JSON object.
    let array = b"[1, 2]";
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(&Sha256::digest(array));
    let body = sidecar_body(
        &tee().report(&report_data, &HOST_DATA),
        chain.as_bytes(),
        array,
        "1",
    );
    let err = attest(&service, &body).unwrap_err();
    assert!(matches!(err, Error::BadRuntimeData(_)), "{err:?}");

    // api-version.
    let err = service.attest(&good, None, SystemTime::now()).unwrap_err();
    assert!(
        matches!(err, Error::BadRequest(RequestError::MissingApiVersion)),
        "{err:?}"
    );
    let err = service
        .attest(&good, Some("2022-08-01"), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadRequest(RequestError::UnsupportedApiVersion(v)) if v == "2022-08-01"),
        "{err:?}"
    );
}
