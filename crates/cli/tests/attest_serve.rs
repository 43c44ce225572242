//! `confsum attest emulate` and `confsum attest serve` over loopback HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use confsum_attest::{
    AttestRequest, AttestResponse, Jwks, RuntimeClaims, SnpEvidence, TokenVerifier,
};

const RUNTIME: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"wrap","n":"AQAB","e":"AQAB"}]}"#;

fn confsum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_confsum"))
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: &str, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Starts `confsum attest serve --listen 127.0.0.1:0 …` and returns it with
/// the address it printed.
fn serve(extra: &[&str]) -> (Server, String) {
    let mut child = confsum()
        .args(["attest", "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (server, url)
}

#[test]
fn emulated_evidence_from_the_cli_is_accepted_only_by_an_insecure_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tee.pem");
    let report_path = dir.path().join("report.bin");
    let certs_path = dir.path().join("certs.pem");
    let report_data = hex::encode(RuntimeClaims::from_json(RUNTIME).unwrap().report_data());
    let out = confsum()
        .args(["attest", "emulate", "--state"])
        .arg(&state)
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: insecure emulated TEE"));

    // `attest verify` trusts only AMD's roots.
    let out = confsum()
        .args(["attest", "verify", "--report"])
        .arg(&report_path)
        .arg("--certs")
        .arg(&certs_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trusted root"));

    let report = std::fs::read(&report_path).unwrap();
    let certs = std::fs::read(&certs_path).unwrap();
    let evidence = SnpEvidence::new(&report, &certs, &[]);
    let request = serde_json::to_vec(&AttestRequest::new(&evidence, RUNTIME, None)).unwrap();
    let target = "/attest/SevSnpVM?api-version=2020-10-01";

    let (_plain, url) = serve(&[]);
    let addr = url.strip_prefix("http://").unwrap();
    let (status, body) = http(addr, "POST", target, &request);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));

    let state = state.to_str().unwrap();
    let (_insecure, url) = serve(&["--insecure-emulated-tee", "--insecure-state", state]);
    let addr = url.strip_prefix("http://").unwrap();
    let (status, body) = http(addr, "POST", target, &request);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let AttestResponse { token } = serde_json::from_slice(&body).unwrap();
    let (status, jwks) = http(addr, "GET", "/certs", b"");
    assert_eq!(status, 200);
    let claims = TokenVerifier::new(Jwks::from_json(&jwks).unwrap(), &url)
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
}

#[test]
fn the_insecure_flag_needs_a_state_file() {
    let out = confsum()
        .args(["attest", "serve", "--insecure-emulated-tee"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
