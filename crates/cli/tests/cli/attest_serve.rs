//! `confsum attest emulate` and `confsum attest serve` over loopback HTTP
//! and HTTPS.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::SystemTime;

use confsum_attest::{
    AttestRequest, InsecureEmulatedTee, Jwks, RuntimeClaims, SnpEvidence, TokenVerifier,
};
use confsum_server::{Client, Error};

const RUNTIME: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"wrap","n":"AQAB","e":"AQAB"}]}"#;
const WARNING: &str = "WARNING: insecure emulated TEE";

fn confsum() -> Command {
    Command::new(crate::common::BIN)
}

/// Kills the server when the test ends, however it ends.
struct Server {
    child: Child,
    url: String,
    issuer: String,
    stderr: Option<ChildStderr>,
}

impl Server {
    /// Stops the server with SIGTERM and returns whether it exited 0, and
    /// everything it wrote to standard error.
    fn terminate(mut self) -> (bool, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (exited.success(), stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `confsum attest serve --listen 127.0.0.1:0 …` and reads the URL
/// and issuer it prints.
fn serve(extra: &[&str]) -> Server {
    serve_logging(extra, None)
}

/// [`serve`] with `RUST_LOG` set to `rust_log`, or unset.
fn serve_logging(extra: &[&str], rust_log: Option<&str>) -> Server {
    let mut command = confsum();
    command.env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let mut child = command
        .args(["attest", "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let line = lines.next().unwrap().unwrap();
    let issuer = line
        .strip_prefix("issuer ")
        .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
        .to_owned();
    Server {
        child,
        url,
        issuer,
        stderr,
    }
}

/// `attest emulate` with a state file; returns the attestation request
/// for RUNTIME and the process's standard error.
fn emulated_request(state: &Path) -> (AttestRequest, String) {
    let dir = state.parent().unwrap();
    let report_path = dir.join("report.bin");
    let certs_path = dir.join("certs.pem");
    let report_data = hex::encode(RuntimeClaims::from_json(RUNTIME).unwrap().report_data());
    let out = confsum()
        .args(["attest", "emulate", "--state"])
        .arg(state)
        .args([
            "--report-data",
            &report_data,
            "--host-data",
            &"ab".repeat(32),
        ])
        .arg("--out-report")
        .arg(&report_path)
        .arg("--out-certs")
        .arg(&certs_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = std::fs::read(&report_path).unwrap();
    let certs = std::fs::read(&certs_path).unwrap();
    let evidence = SnpEvidence::new(&report, &certs, &[]);
    (
        AttestRequest::new(&evidence, RUNTIME, None),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn emulated_evidence_from_the_cli_is_accepted_only_by_an_insecure_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tee.pem");
    let (request, stderr) = emulated_request(&state);
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    // The state holds private keys: the owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // `attest verify` trusts only AMD's roots.
    let out = confsum()
        .args(["attest", "verify", "--report"])
        .arg(dir.path().join("report.bin"))
        .arg("--certs")
        .arg(dir.path().join("certs.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trusted root"));

    let client = Client::new();
    let plain = serve(&[]);
    assert_eq!(plain.issuer, plain.url);
    let err = client.attest(&plain.url, &request).unwrap_err();
    match err {
        Error::Status {
            status: 403,
            error: Some(e),
            ..
        } => assert_eq!(e.code, "EvidenceNotVerified"),
        other => panic!("{other:?}"),
    }
    let (exited, stderr) = plain.terminate();
    assert!(exited);
    assert!(!stderr.contains("WARNING"), "{stderr}");

    let state = state.to_str().unwrap();
    let insecure = serve(&["--insecure-emulated-tee", "--insecure-state", state]);
    let url = insecure.url.clone();
    let token = client.attest(&url, &request).unwrap().token;
    let jwks = client.fetch_jwks(&format!("{url}/certs")).unwrap();
    let claims = TokenVerifier::new(jwks, &url)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert!(claims.insecure_emulated);
    assert_eq!(claims.compliance_status, None);
    assert_eq!(claims.host_data, [0xab; 32]);

    // The CLI fetches the service's /certs itself.
    let out = confsum()
        .args([
            "attest",
            "token",
            "verify",
            &token,
            "--jwks",
            &format!("{url}/certs"),
            "--issuer",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("x-confsum-insecure-emulated"));

    // One loud warning at start, none per token; SIGTERM stops it cleanly.
    let (exited, stderr) = insecure.terminate();
    assert!(exited, "{stderr}");
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    assert!(stderr.contains("prove nothing"), "{stderr}");
}

#[test]
fn the_issuer_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tee.pem");
    let (request, _) = emulated_request(&state);
    let issuer = "https://attest.confsum.example";
    let server = serve(&[
        "--issuer",
        issuer,
        "--insecure-emulated-tee",
        "--insecure-state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(server.issuer, issuer);
    let client = Client::new();
    let token = client.attest(&server.url, &request).unwrap().token;
    let jwks = client.fetch_jwks(&format!("{}/certs", server.url)).unwrap();
    let claims = TokenVerifier::new(jwks.clone(), issuer)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert_eq!(claims.iss, issuer);
    // The listen URL is not the issuer any more.
    assert!(
        TokenVerifier::new(jwks, &server.url)
            .verify(&token, SystemTime::now())
            .is_err()
    );
    // The header's jku follows the issuer, as MAA's does.
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["jku"], format!("{issuer}/certs"));
}

#[test]
fn https_with_a_certificate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    // The emulated evidence comes from the library here (no second CLI
    // run needed): the server trusts the same state.
    let state = dir.path().join("tee.pem");
    let tee = InsecureEmulatedTee::generate().unwrap();
    std::fs::write(&state, tee.to_insecure_state_pem().unwrap().as_bytes()).unwrap();
    let report_data = RuntimeClaims::from_json(RUNTIME).unwrap().report_data();
    let request = AttestRequest::new(
        &tee.evidence(&report_data, &[0xcd; 32]).unwrap(),
        RUNTIME,
        Some("18446744073709551615".into()),
    );

    let server = serve(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--insecure-emulated-tee",
        "--insecure-state",
        state.to_str().unwrap(),
    ]);
    let url = server.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(server.issuer, url);

    let client = Client::builder()
        .add_root_pem(cert.pem().as_bytes())
        .unwrap()
        .build();
    let token = client.attest(&url, &request).unwrap().token;
    let jwks: Jwks = client.fetch_jwks(&format!("{url}/certs")).unwrap();
    let claims = TokenVerifier::new(jwks, &url)
        .verify(&token, SystemTime::now())
        .unwrap();
    assert_eq!(claims.host_data, [0xcd; 32]);
    assert_eq!(claims.nonce.as_deref(), Some("18446744073709551615"));

    // `token verify` over HTTPS needs the CA...
    let verify = |extra: &[&str]| {
        confsum()
            .args([
                "attest",
                "token",
                "verify",
                &token,
                "--jwks",
                &format!("{url}/certs"),
                "--issuer",
                &url,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = verify(&["--ca", cert_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and refuses the server's certificate without it.
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("request to"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["attest", "serve", "--insecure-emulated-tee"][..],
        &["attest", "serve", "--tls-cert", "c.pem"],
        &["attest", "serve", "--issuer", "attest.example"],
    ] {
        let out = confsum().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A TLS key that is not there is a clear error, not a panic.
    let out = confsum()
        .args([
            "attest",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RUST_LOG logs to stderr: the address at info, each request at debug
/// (never its query), and nothing of the kind by default.
#[test]
fn rust_log_logs_each_request_without_its_query() {
    for (rust_log, logged) in [
        (Some("info,confsum_server::request=debug"), true),
        (None, false),
    ] {
        let server = serve_logging(&[], rust_log);
        let url = server.url.clone();
        Client::new()
            .fetch_jwks(&format!("{url}/certs?not-for-the-log=1"))
            .unwrap();
        let (exited, stderr) = server.terminate();
        assert!(exited, "{stderr}");
        assert_eq!(
            stderr.contains(&format!("listening on {url}")),
            logged,
            "{stderr}"
        );
        assert_eq!(stderr.contains("GET /certs -> 200 in "), logged, "{stderr}");
        assert!(!stderr.contains("not-for-the-log"), "{stderr}");
    }
}
