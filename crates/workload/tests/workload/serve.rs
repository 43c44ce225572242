//! Start-up through a real (in-process) attestation service and broker,
//! then the HTTP API through the consumer's client.

use std::time::SystemTime;

use confsum_attest::{TokenVerifier, runtime_keys_match};
use confsum_server::{Client, Server, Spawned};
use confsum_summarize::{LoadOptions, Summarizer};
use confsum_workload::{
    Error, Expectations, ServiceConfig, Step, SummariesRequest, WorkloadClient, router,
    verify_attestation,
};

use crate::common::{DOCS, Flow, ISSUER, model_dir};

const HOST_DATA: [u8; 32] = [0x5a; 32];

/// Serves `service` on a free port until the handle is dropped.
fn serve(service: confsum_workload::Service) -> Spawned {
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    server.spawn(router(service)).unwrap()
}

#[test]
fn starts_serves_and_every_answer_verifies() {
    let flow = Flow::new(HOST_DATA);
    let mut steps = Vec::new();
    let workload = flow.start(HOST_DATA, &mut steps).unwrap();
    assert!(matches!(steps.first(), Some(Step::KeysGenerated { .. })));
    assert!(steps.contains(&Step::Evidence {
        insecure: true,
        host_data: hex::encode(HOST_DATA)
    }));
    assert!(steps.contains(&Step::ImageOpened { documents: 2 }));
    assert_eq!(steps.last(), Some(&Step::ModelLoaded));
    assert_eq!(workload.document_ids(), vec!["a.txt", "notes/b.txt"]);

    // The token binds both keys: report_data = SHA-256(runtime data), and
    // the runtime data has the wrapping key (encrypt) and the signing key
    // (verify).
    let doc = workload.attestation().clone();
    let claims = TokenVerifier::new(flow.attest.jwks(), ISSUER)
        .verify(&doc.token, SystemTime::now())
        .unwrap();
    runtime_keys_match(&claims, &claims.report_data).unwrap();
    let runtime: serde_json::Value = serde_json::from_str(&doc.runtime_data).unwrap();
    let ops: Vec<_> = runtime["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kty"].clone(), k["key_ops"].clone()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (serde_json::json!("RSA"), serde_json::json!(["encrypt"])),
            (serde_json::json!("EC"), serde_json::json!(["verify"])),
        ]
    );
    // Released exactly once, and the audit log holds.
    let audit = String::from_utf8(flow.broker.export_audit().unwrap()).unwrap();
    assert_eq!(audit.matches("\"release\"").count(), 1, "{audit}");
    flow.broker.verify_audit().unwrap();

    let service = workload.into_service(ServiceConfig::new("t5-tiny").note("not a real summary"));
    let serving = serve(service);
    let url = serving.url();
    let client = WorkloadClient::new(Client::new(), url);
    let fetched = client.attestation().unwrap();
    assert_eq!(fetched, doc);
    let mut expect = Expectations::new(ISSUER, flow.attest.jwks(), HOST_DATA);
    expect.allow_insecure_emulated = true;
    let verification = verify_attestation(&fetched, &expect, SystemTime::now());
    assert!(verification.trusted, "{}", verification.refusal());
    let verifier = verification.trusted_verifier().unwrap();

    let list = client.documents(verifier).unwrap();
    let ids: Vec<_> = list.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a.txt", "notes/b.txt"]);

    // Served summaries are the library's, for documents and uploads, also
    // when requests are batched together.
    let mut library = Summarizer::load(&model_dir(), &LoadOptions::default()).unwrap();
    let expected: Vec<String> = DOCS
        .iter()
        .map(|(_, text)| library.summarize(text).unwrap().text)
        .collect();
    let answer = client
        .summarize(
            verifier,
            &SummariesRequest {
                documents: vec!["a.txt".into(), "notes/b.txt".into()],
                texts: vec![DOCS[1].1.to_owned()],
            },
        )
        .unwrap();
    assert_eq!(answer.note.as_deref(), Some("not a real summary"));
    let got: Vec<_> = answer.summaries.iter().map(|s| s.summary.clone()).collect();
    assert_eq!(
        got,
        [
            expected[0].clone(),
            expected[1].clone(),
            expected[1].clone()
        ]
    );
    assert_eq!(answer.summaries[2].text, Some(0));

    let threads: Vec<_> = (0..6)
        .map(|i| {
            let client = client.clone();
            let verifier = verifier.clone();
            std::thread::spawn(move || {
                let request = SummariesRequest {
                    documents: vec![],
                    texts: vec![DOCS[i % 2].1.to_owned()],
                };
                client.summarize(&verifier, &request).unwrap().summaries[0]
                    .summary
                    .clone()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), expected[i % 2]);
    }

    // Errors are refused in the envelope, never half-answered.
    let err = client
        .summarize(
            verifier,
            &SummariesRequest {
                documents: vec!["nope.txt".into()],
                texts: vec![],
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Http(confsum_server::Error::Status { status: 404, .. })
        ),
        "{err:?}"
    );
    let err = client
        .summarize(verifier, &SummariesRequest::default())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Http(confsum_server::Error::Status { status: 400, .. })
        ),
        "{err:?}"
    );
    let http = Client::new();
    assert!(http.get(&format!("{url}/healthz")).is_ok());
    assert!(http.get(&format!("{url}/readyz")).is_ok());
}

#[test]
fn another_host_data_is_refused_by_the_broker_naming_the_claim() {
    let flow = Flow::new(HOST_DATA);
    let mut steps = Vec::new();
    let err = flow.start([0x77; 32], &mut steps).unwrap_err();
    let Error::Release(confsum_skr::Error::Denied(denial)) = &err else {
        panic!("expected a denial, got {err:?}");
    };
    let text = denial.to_string();
    assert!(text.contains("x-ms-sevsnpvm-hostdata"), "{text}");
    assert!(text.contains(&hex::encode(HOST_DATA)), "{text}");
    assert!(text.contains(&hex::encode([0x77; 32])), "{text}");
    assert!(steps.contains(&Step::Attested));
    assert!(!steps.iter().any(|s| matches!(s, Step::KeyReleased { .. })));
}

#[test]
fn starts_over_http_with_the_attestation_service_and_the_broker() {
    use std::sync::Arc;

    use confsum_server::{HsmClient, hsm_endpoint};
    use confsum_workload::{
        HsmKeyRelease, HttpAttestation, InsecureEmulatedEvidence, KeyDerivation, StartOptions,
        Workload,
    };

    let broker_server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let broker_url = broker_server.url();
    let flow = Flow::with_broker_name(HOST_DATA, hsm_endpoint(&broker_url));
    let mut authorities = confsum_skr::AttestAuthorities::new();
    authorities.trust(ISSUER, flow.attest.jwks());
    let _broker = broker_server
        .spawn(confsum_server::skr::router(
            Arc::clone(&flow.broker),
            Arc::new(authorities),
        ))
        .unwrap();
    let attest_server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let attest_url = attest_server.url();
    let _attest = attest_server
        .spawn(confsum_server::attest::router(flow.attest.clone()))
        .unwrap();

    let attestation = HttpAttestation::new(Client::new(), &attest_url);
    let hsm = HsmClient::with_ca_pem(&broker_url, flow.ca_pem.as_bytes()).unwrap();
    let release = HsmKeyRelease::new(hsm, crate::common::KEY);
    let start = |host_data: [u8; 32]| {
        let evidence = InsecureEmulatedEvidence::new(flow.tee(), host_data);
        Workload::start(
            StartOptions {
                evidence: &evidence,
                attestation: &attestation,
                release: &release,
                derivation: KeyDerivation::default(),
                image: flow.image.clone(),
                model: model_dir(),
                load: LoadOptions::default(),
            },
            &mut |_| {},
        )
    };
    let workload = start(HOST_DATA).unwrap();
    assert_eq!(workload.document_ids(), vec!["a.txt", "notes/b.txt"]);

    // The broker's 403 reaches the workload with the failing claim.
    let err = start([0x77; 32]).unwrap_err();
    let Error::Http(confsum_server::Error::Status {
        status: 403,
        error: Some(remote),
        ..
    }) = &err
    else {
        panic!("expected a 403, got {err:?}");
    };
    assert!(
        remote.message.contains("x-ms-sevsnpvm-hostdata"),
        "{remote:?}"
    );
}
