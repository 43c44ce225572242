//! `confsum serve` as a real process, between `confsum attest serve
//! --insecure-emulated-tee` and `confsum skr serve` (HTTPS, loopback,
//! ephemeral ports): readiness, a signed answer through `confsum client
//! summarize`, the web page in real headless Chromium (Debian's chromium
//! driven by playwright-core from crates/cli/tests/web), and graceful
//! shutdown on SIGTERM and SIGINT with exit status 0.
//!
//! The page must also refuse answers altered or replayed in transit and
//! an altered token (Playwright rewrites them between page and workload).
//! The screenshots go to target/web/verified.png, refused.png and
//! tampered.png.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::common::{BIN, summarize_fixture};

const ADMIN: &str = "admin-token-0123456789abcdef";
const HOST_DATA: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const WRONG: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5f";
const DOCS: &[(&str, &str)] = &[
    (
        "harbour.txt",
        "The harbour authority approved the new pier after a long debate about fishing boats.",
    ),
    (
        "reports/frost.txt",
        "Farmers said the late frost damaged apple blossoms in several valleys this year.",
    ),
];

/// A child process, killed when the test ends however it ends; its
/// standard error goes to a file shown when something fails.
struct Daemon {
    child: Child,
    lines: Vec<String>,
    stderr: PathBuf,
}

impl Daemon {
    fn start(args: &[&str], header_lines: usize, stderr: PathBuf) -> Daemon {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("AZURE_ACCESS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep reading, so that the child never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            lines: Vec::new(),
            stderr,
        };
        // Start-up in a debug build (attest, release, open, load) takes a
        // few seconds; a hang must fail, not block the test run.
        let deadline = Instant::now() + Duration::from_secs(180);
        while daemon.lines.len() < header_lines {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => daemon.lines.push(line),
                Err(_) => panic!(
                    "{args:?} did not start: {:?}\n{}",
                    daemon.lines,
                    daemon.stderr_text()
                ),
            }
        }
        daemon
    }

    fn url(&self) -> String {
        self.lines[0]
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", self.lines[0]))
            .to_owned()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` and waits (at most 30 s) for the exit status.
    fn stop(&mut self, signal: &str) -> Option<i32> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "no exit 30 s after {signal}: {}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback: status line and headers, lowercased
/// names, and the body.
fn http_get(base: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let host = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Node with playwright-core installed (`npm ci` in crates/cli/tests/web)
/// and Debian's chromium, or `None` when one is missing and
/// CONFSUM_SKIP_REAL_TOOLS=1.
fn browser() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let chromium = confsum_testkit::real_tool("chromium", "chromium")?;
    let node = confsum_testkit::real_tool("node", "nodejs")?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        if std::env::var(confsum_testkit::SKIP_ENV).as_deref() == Ok("1") {
            eprintln!("skipped: playwright-core not installed");
            return None;
        }
        panic!(
            "playwright-core not found: run `npm ci` in {}, or set {}=1 to skip what needs it",
            dir.display(),
            confsum_testkit::SKIP_ENV
        );
    }
    Some((node, dir.join("web.mjs"), chromium))
}

/// Where screenshots go: target/web.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = target.join("web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serve_as_a_process_with_the_web_page_in_chromium() {
    let browser = browser();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let arg = |name: &str| path(name).to_str().unwrap().to_owned();

    // One self-signed certificate for both services' HTTPS; the browser
    // accepts exactly its key (--ignore-certificate-errors-spki-list).
    let tls_key = rcgen::KeyPair::generate().unwrap();
    let tls_cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .self_signed(&tls_key)
            .unwrap();
    std::fs::write(path("tls.pem"), tls_cert.pem()).unwrap();
    std::fs::write(path("tls.key"), tls_key.serialize_pem()).unwrap();
    let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&tls_key),
    ));

    let attest = Daemon::start(
        &[
            "attest",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &arg("tls.pem"),
            "--tls-key",
            &arg("tls.key"),
            "--insecure-emulated-tee",
            "--insecure-state",
            &arg("tee.pem"),
        ],
        2,
        path("attest.err"),
    );
    let issuer = attest.url();
    std::fs::write(path("admin.token"), format!("{ADMIN}\n")).unwrap();
    let broker = Daemon::start(
        &[
            "skr",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &arg("tls.pem"),
            "--tls-key",
            &arg("tls.key"),
            "--state",
            &arg("state"),
            "--master-key",
            &arg("master.key"),
            "--admin-token-file",
            &arg("admin.token"),
            "--trust",
            &issuer,
            "--trust-ca",
            &arg("tls.pem"),
        ],
        3,
        path("broker.err"),
    );
    let broker_url = broker.url();
    let mut cas = std::fs::read(path("tls.pem")).unwrap();
    cas.extend(std::fs::read(path("state/release-ca.pem")).unwrap());
    std::fs::write(path("cas.pem"), cas).unwrap();

    // The owner seals the documents and imports the key, pinned to HOST_DATA.
    for (name, body) in DOCS {
        let file = path("docs").join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }
    let out = Command::new(BIN)
        .args(["encfs", "create", "--from", &arg("docs"), "--out"])
        .args([&arg("docs.img"), "--key-file", &arg("disk.key")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = serde_json::json!({
        "key": {
            "kid": "disk",
            "kty": "oct-HSM",
            "authority": {"endpoint": issuer.strip_prefix("https://").unwrap()},
            "akv": {"endpoint": "unused.example", "api_version": "api-version=7.4"}
        },
        "claims": [[
            {"claim": "x-ms-sevsnpvm-hostdata", "equals": HOST_DATA},
            {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"},
            {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"}
        ]]
    });
    std::fs::write(path("import.json"), config.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["skr", "import", "--config", &arg("import.json")])
        .args(["--key-file", &arg("disk.key"), "--hsm", &broker_url])
        .args(["--ca", &arg("cas.pem")])
        .env("AZURE_ACCESS_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Two replicas of the workload: each attests and has the key released.
    let model = summarize_fixture("t5_v1_0");
    let serve = |name: &str| {
        Daemon::start(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--image",
                &arg("docs.img"),
                "--model",
                model.to_str().unwrap(),
                "--attest",
                &issuer,
                "--attest-ca",
                &arg("tls.pem"),
                "--broker",
                &broker_url,
                "--key",
                "disk",
                "--broker-ca",
                &arg("cas.pem"),
                "--insecure-emulated-tee",
                "--insecure-state",
                &arg("tee.pem"),
                "--insecure-host-data",
                HOST_DATA,
                "--note",
                "not a real summary",
            ],
            1,
            path(&format!("{name}.err")),
        )
    };
    let mut first = serve("first");
    let mut second = serve("second");
    let url = first.url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let err = first.stderr_text();
    assert!(err.contains("WARNING"), "{err}");
    assert!(err.contains("the broker released key"), "{err}");

    // Health, readiness, and the page with its headers.
    assert_eq!(http_get(&url, "/healthz").0, 200);
    assert_eq!(http_get(&url, "/readyz").0, 200);
    let (status, headers, body) = http_get(&url, "/");
    assert_eq!(status, 200);
    assert!(body.contains("<script src=\"/app.js\""), "{body}");
    assert!(!body.contains("<script>"), "inline script: {body}");
    let csp = header(&headers, "content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let (status, headers, _) = http_get(&url, "/app.js");
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    // The documents list names, never text.
    let (_, _, listing) = http_get(&url, "/v1/documents");
    for (_, body) in DOCS {
        assert!(!listing.contains(body));
    }

    // The consumer's CLI gets a signed, verified answer from each replica.
    for url in [first.url(), second.url()] {
        let out = Command::new(BIN)
            .args(["client", "summarize", &url, "--policy", HOST_DATA])
            .args(["--issuer", &issuer, "--ca", &arg("tls.pem")])
            .args(["--allow-insecure-emulated", "--all"])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains("verified: every summary below was signed"),
            "{stdout}"
        );
        assert!(stdout.contains("== harbour.txt"), "{stdout}");
        assert!(stdout.contains("== reports/frost.txt"), "{stdout}");
        assert!(stdout.contains("NOTE: not a real summary"), "{stdout}");
    }
    // And refuses another host_data, with exit status 3.
    let out = Command::new(BIN)
        .args(["client", "verify", &url, "--policy", WRONG])
        .args(["--issuer", &issuer, "--ca", &arg("tls.pem")])
        .arg("--allow-insecure-emulated")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("FAIL host_data"));

    // The page, in Chromium.
    if let Some((node, script, chromium)) = &browser {
        let shots = screenshots();
        for shot in ["verified.png", "refused.png", "tampered.png"] {
            let _ = std::fs::remove_file(shots.join(shot));
        }
        let out = Command::new(node)
            .arg(script)
            .current_dir(script.parent().unwrap())
            .env("CONFSUM_URL", &url)
            .env("CONFSUM_ISSUER", &issuer)
            .env("CONFSUM_HOST_DATA", HOST_DATA)
            .env("CONFSUM_WRONG_HOST_DATA", WRONG)
            .env("CONFSUM_DOCUMENTS", DOCS.len().to_string())
            .env("CONFSUM_SECRET", DOCS[0].1)
            .env("CONFSUM_SPKI", &spki)
            .env("CONFSUM_SCREENSHOTS", &shots)
            .env("CHROMIUM", chromium)
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}\n{}",
            text(&out.stderr),
            first.stderr_text()
        );
        let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(r["problems"], serde_json::json!([]), "{r:#}");
        assert!(
            r["csp"].as_str().unwrap().contains("script-src 'self'"),
            "{r:#}"
        );
        assert_eq!(r["verified"]["label"], "verified", "{r:#}");
        let checks = r["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 9, "{r:#}");
        assert!(checks.iter().all(|c| c["passed"] == true), "{r:#}");
        assert_eq!(
            r["documents"],
            serde_json::json!(["harbour.txt", "reports/frost.txt"]),
            "{r:#}"
        );
        let summaries = r["summaries"].as_array().unwrap();
        assert_eq!(summaries.len(), 2, "{r:#}");
        for s in summaries {
            assert_eq!(s["verified"], true, "{r:#}");
            assert!(!s["text"].as_str().unwrap().is_empty(), "{r:#}");
            assert!(
                s["proof"].as_str().unwrap().contains("signature verified"),
                "{r:#}"
            );
        }
        assert_eq!(r["progress_shown"], true, "{r:#}");
        assert!(
            r["progress"].as_str().unwrap().starts_with("2 of 2"),
            "{r:#}"
        );
        for refused in ["refused", "refused_fresh"] {
            assert_eq!(r[refused]["label"], "REFUSED", "{r:#}");
            assert!(
                r[refused]["text"].as_str().unwrap().contains("host_data"),
                "{r:#}"
            );
        }
        assert_eq!(
            r["refused_failed"],
            serde_json::json!(["host_data"]),
            "{r:#}"
        );
        assert_eq!(r["refused_summaries"], 0, "{r:#}");
        assert_eq!(r["refused_summarize_enabled"], false, "{r:#}");
        assert_eq!(r["refused_fresh_documents"], 0, "{r:#}");
        // Altered or replayed answers and an altered token: refused.
        assert_eq!(r["tampered_verdict"]["label"], "verified", "{r:#}");
        let tampered = r["tampered"].as_array().unwrap();
        assert_eq!(tampered.len(), 2, "{r:#}");
        assert!(tampered.iter().all(|s| s["verified"] == false), "{r:#}");
        let text = |i: usize| tampered[i]["text"].as_str().unwrap();
        assert!(
            text(0).contains("REFUSED: the signature does not verify"),
            "{r:#}"
        );
        assert!(!text(0).contains("FORGED SUMMARY"), "{r:#}");
        assert!(
            text(1).contains("REFUSED: the answer is for another request"),
            "{r:#}"
        );
        assert_eq!(r["forged_token"]["label"], "REFUSED", "{r:#}");
        assert_eq!(
            r["forged_token_failed"],
            serde_json::json!(["token signature"]),
            "{r:#}"
        );
        assert_eq!(r["forged_token_documents"], 0, "{r:#}");
        // Red: rgb(180, 35, 24).
        assert_eq!(r["refused_color"], "rgb(180, 35, 24)", "{r:#}");
        for shot in ["verified.png", "refused.png", "tampered.png"] {
            let bytes = std::fs::read(shots.join(shot)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{shot}");
        }
    }

    // Graceful shutdown: exit status 0 on SIGTERM and on SIGINT, and the
    // port is closed afterwards.
    assert_eq!(first.stop("-TERM"), Some(0), "{}", first.stderr_text());
    assert_eq!(second.stop("-INT"), Some(0), "{}", second.stderr_text());
    let host = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    assert!(TcpStream::connect(host).is_err());
    drop(broker);
    drop(attest);
}
