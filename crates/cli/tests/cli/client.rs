//! `confsum client verify` and `confsum client summarize` against workloads
//! served in this process, each showing one crafted attestation: the
//! consumer refuses, with exit status 3 and the failing check named, a
//! token from another issuer, an expired token, another host_data, a
//! debuggable report, emulated evidence without the flag, and answers the
//! attested key did not sign.

use std::time::{Duration, SystemTime};

use confsum_attest::{InsecureEmulatedTee, RuntimeClaims, TokenClaims, TokenIssuer};
use confsum_server::{Server, Spawned};
use confsum_summarize::{LoadOptions, Summarizer};
use confsum_workload::{AttestationDocument, Service, ServiceConfig, WorkloadKeys, router};
use zeroize::Zeroizing;

use crate::common::{confsum, summarize_fixture};

const ISSUER: &str = "https://attest.test";
const HOST_DATA: [u8; 32] = [0x11; 32];

#[derive(Clone, Copy)]
struct Token {
    other_service: bool,
    issuer_url: &'static str,
    host_data: [u8; 32],
    debuggable: bool,
    emulated: bool,
    age: Duration,
}

const GOOD: Token = Token {
    other_service: false,
    issuer_url: ISSUER,
    host_data: HOST_DATA,
    debuggable: false,
    emulated: true,
    age: Duration::ZERO,
};

struct World {
    issuer: TokenIssuer,
    other: TokenIssuer,
    tee: InsecureEmulatedTee,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let world = World {
            issuer: TokenIssuer::generate(ISSUER).unwrap(),
            other: TokenIssuer::generate("https://evil.test").unwrap(),
            tee: InsecureEmulatedTee::generate().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            world.jwks(),
            serde_json::to_vec(&world.issuer.jwks()).unwrap(),
        )
        .unwrap();
        std::fs::write(
            world.dir.path().join("doc.txt"),
            "The river rose overnight.",
        )
        .unwrap();
        world
    }

    fn jwks(&self) -> std::path::PathBuf {
        self.dir.path().join("certs.json")
    }

    fn document(&self, keys: &WorkloadKeys, t: Token) -> AttestationDocument {
        let runtime_json = keys.runtime_json().unwrap();
        let runtime = RuntimeClaims::from_json(runtime_json.as_bytes()).unwrap();
        let report_data = runtime.report_data();
        let evidence = self.tee.evidence(&report_data, &t.host_data).unwrap();
        let claims = TokenClaims::builder()
            .host_data(t.host_data)
            .report_data(report_data)
            .runtime(runtime)
            .debuggable(t.debuggable)
            .insecure_emulated(t.emulated)
            .build()
            .unwrap();
        let renamed;
        let signer = if t.other_service {
            &self.other
        } else if t.issuer_url != ISSUER {
            renamed =
                TokenIssuer::from_pkcs8_pem(t.issuer_url, &self.issuer.to_pkcs8_pem().unwrap())
                    .unwrap();
            &renamed
        } else {
            &self.issuer
        };
        let token = signer
            .issue(
                &claims,
                SystemTime::now() - t.age,
                Duration::from_secs(3600),
            )
            .unwrap();
        AttestationDocument {
            token,
            evidence: evidence.encode(),
            runtime_data: runtime_json,
        }
    }

    /// Serves a workload showing `t`'s attestation, signing with the
    /// attested key, or with another when `impostor`.
    fn serve(&self, t: Token, impostor: bool) -> Spawned {
        let keys = WorkloadKeys::generate().unwrap();
        let doc = self.document(&keys, t);
        let signer = if impostor {
            WorkloadKeys::generate().unwrap().into_signer()
        } else {
            keys.into_signer()
        };
        let summarizer =
            Summarizer::load(&summarize_fixture("t5_v1_0"), &LoadOptions::default()).unwrap();
        let service = Service::new(
            doc,
            signer,
            vec![(
                "a.txt".to_owned(),
                Zeroizing::new("The council approved the budget.".to_owned()),
            )],
            summarizer,
            ServiceConfig::new("t5-tiny").note("not a real summary"),
        );
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        server.spawn(router(service)).unwrap()
    }

    fn client(&self, verb: &str, url: &str, allow: bool) -> confsum_testkit::Cmd {
        let mut cmd = confsum()
            .args(["client", verb, url, "--policy", &hex::encode(HOST_DATA)])
            .args(["--issuer", ISSUER, "--jwks"])
            .arg(self.jwks());
        if allow {
            cmd = cmd.arg("--allow-insecure-emulated");
        }
        cmd
    }
}

#[test]
fn verify_refuses_and_names_the_failing_check() {
    let world = World::new();
    let cases: &[(&str, Token, bool, &str)] = &[
        (
            "another attestation service",
            Token {
                other_service: true,
                issuer_url: "https://evil.test",
                ..GOOD
            },
            true,
            "FAIL token signature",
        ),
        (
            "another issuer",
            Token {
                issuer_url: "https://attest.test.evil",
                ..GOOD
            },
            true,
            "FAIL issuer: expected https://attest.test, actual https://attest.test.evil",
        ),
        (
            "expired",
            Token {
                age: Duration::from_secs(3 * 3600),
                ..GOOD
            },
            true,
            "FAIL validity",
        ),
        (
            "other host_data",
            Token {
                host_data: [0x22; 32],
                ..GOOD
            },
            true,
            "FAIL host_data: expected 1111",
        ),
        (
            "debuggable",
            Token {
                debuggable: true,
                ..GOOD
            },
            true,
            "FAIL debug: expected false, actual true",
        ),
        (
            "emulated without the flag",
            GOOD,
            false,
            "FAIL emulated: expected hardware evidence, actual INSECURE emulated evidence",
        ),
    ];
    for (name, token, allow, expected) in cases {
        let serving = world.serve(*token, false);
        let url = serving.url();
        let run = world.client("verify", url, *allow).run().code(3);
        let out = run.stdout_str();
        assert!(out.contains(expected), "{name}: {out}");
        assert!(out.contains("REFUSED"), "{name}: {out}");
        assert_eq!(out.matches("FAIL").count(), 1, "{name}: {out}");
    }

    // The control, and --json.
    let serving = world.serve(GOOD, false);
    let url = serving.url();
    let run = world.client("verify", url, true).run().success();
    assert!(
        run.stdout_str().contains("trusted:"),
        "{}",
        run.stdout_str()
    );
    assert!(run.stderr_str().contains("INSECURE emulated TEE"));
    let run = world
        .client("verify", url, true)
        .arg("--json")
        .run()
        .success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout_str()).unwrap();
    assert_eq!(json["trusted"], true);
    assert_eq!(json["checks"][3]["check"], "host_data");
    let run = world
        .client("verify", url, false)
        .arg("--json")
        .run()
        .code(3);
    let json: serde_json::Value = serde_json::from_str(&run.stdout_str()).unwrap();
    assert_eq!(json["trusted"], false);
}

#[test]
fn summarize_shows_only_verified_answers() {
    let world = World::new();
    let serving = world.serve(GOOD, false);
    let url = serving.url();
    let run = world
        .client("summarize", url, true)
        .args(["--document", "a.txt", "--file"])
        .arg(world.dir.path().join("doc.txt"))
        .run()
        .success();
    let out = run.stdout_str();
    assert!(
        out.contains("verified: every summary below was signed"),
        "{out}"
    );
    assert!(out.contains("NOTE: not a real summary"), "{out}");
    assert!(out.contains("== a.txt"), "{out}");
    assert!(out.contains("doc.txt"), "{out}");

    // A workload whose answers another key signed: refused, nothing shown.
    let serving = world.serve(GOOD, true);
    let url = serving.url();
    for (args, refused) in [
        (&["--all"][..], "REFUSED the document list"),
        (&["--document", "a.txt"][..], "REFUSED the answer"),
    ] {
        let run = world
            .client("summarize", url, true)
            .args(args)
            .run()
            .code(3);
        let err = run.stderr_str();
        assert!(err.contains(refused), "{err}");
        assert!(err.contains("not the attested key"), "{err}");
        assert!(!run.stdout_str().contains("=="), "{}", run.stdout_str());
    }

    // An untrusted workload is never asked.
    let serving = world.serve(GOOD, false);
    let url = serving.url();
    let run = world
        .client("summarize", url, false)
        .args(["--document", "a.txt"])
        .run()
        .code(3);
    assert!(run.stdout_str().contains("REFUSED"), "{}", run.stdout_str());
    assert!(!run.stdout_str().contains("== a.txt"));
}
