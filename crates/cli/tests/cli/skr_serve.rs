//! `confsum skr serve`, `skr import` and `skr release` over loopback
//! HTTPS, with `confsum attest serve --insecure-emulated-tee` as the
//! attestation service: the recipe end to end, refusals and exit codes,
//! the audit log, and `kill -9` during imports and during releases.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsum_attest::{AttestRequest, RuntimeClaims, SnpEvidence};
use confsum_server::{Client, HsmClient};
use confsum_skr::{
    ImportAttributes, ImportKeyRequest, KeyMaterial, KeyType, POLICY_CONTENT_TYPE,
    ReleasePolicyBody, WrappingPrivateKey,
};

const ADMIN: &str = "admin-token-0123456789abcdef";
const HOST_DATA: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fn confsum() -> Command {
    Command::new(crate::common::BIN)
}

/// A child process killed when the test ends, however it ends.
struct Daemon {
    child: Child,
    /// The lines it printed first.
    lines: Vec<String>,
}

impl Daemon {
    fn start(args: &[&str], header_lines: usize) -> Daemon {
        let mut child = confsum()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout).lines();
        let lines = (0..header_lines)
            .map(|_| reader.next().unwrap().unwrap())
            .collect();
        // Keep reading so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader {});
        Daemon { child, lines }
    }

    fn url(&self) -> String {
        self.lines[0]
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", self.lines[0]))
            .to_owned()
    }

    fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one test's services share, in a temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    attest: Daemon,
    wrapping: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tls_key = rcgen::KeyPair::generate().unwrap();
        let tls_cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap()
                .self_signed(&tls_key)
                .unwrap();
        let cert = dir.path().join("tls.pem");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, tls_cert.pem()).unwrap();
        std::fs::write(&key, tls_key.serialize_pem()).unwrap();
        let tee = dir.path().join("tee.pem");
        let attest = Daemon::start(
            &[
                "attest",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--insecure-emulated-tee",
                "--insecure-state",
                tee.to_str().unwrap(),
            ],
            2,
        );
        let wrapping = dir.path().join("wrapping.pem");
        let private = WrappingPrivateKey::generate(2048).unwrap();
        std::fs::write(&wrapping, private.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        Setup {
            dir,
            cert,
            key,
            attest,
            wrapping,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn broker(&self) -> Daemon {
        std::fs::write(self.path("admin.token"), format!("{ADMIN}\n")).unwrap();
        let issuer = self.attest.url();
        Daemon::start(
            &[
                "skr",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                self.cert.to_str().unwrap(),
                "--tls-key",
                self.key.to_str().unwrap(),
                "--state",
                self.path("state").to_str().unwrap(),
                "--master-key",
                self.path("master.key").to_str().unwrap(),
                "--admin-token-file",
                self.path("admin.token").to_str().unwrap(),
                "--trust",
                &issuer,
                "--trust-ca",
                self.cert.to_str().unwrap(),
            ],
            3,
        )
    }

    /// An attestation token for the emulated TEE with `host_data`, binding
    /// the wrapping key.
    fn token(&self, host_data: &str) -> PathBuf {
        let pem = std::fs::read_to_string(&self.wrapping).unwrap();
        let runtime = WrappingPrivateKey::from_pem(&pem).unwrap().runtime_jwks();
        let report_data = RuntimeClaims::from_json(runtime.as_bytes())
            .unwrap()
            .report_data();
        let report = self.path("report.bin");
        let certs = self.path("certs.pem");
        let out = confsum()
            .args(["attest", "emulate", "--force", "--state"])
            .arg(self.path("tee.pem"))
            .args(["--report-data", &hex::encode(report_data)])
            .args(["--host-data", host_data])
            .arg("--out-report")
            .arg(&report)
            .arg("--out-certs")
            .arg(&certs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let evidence = SnpEvidence::new(
            &std::fs::read(&report).unwrap(),
            &std::fs::read(&certs).unwrap(),
            &[],
        );
        let client = Client::builder()
            .add_root_pem(&std::fs::read(&self.cert).unwrap())
            .unwrap()
            .build();
        let token = client
            .attest(
                &self.attest.url(),
                &AttestRequest::new(&evidence, runtime.as_bytes(), None),
            )
            .unwrap()
            .token;
        let path = self.path(&format!("token-{host_data}.jwt"));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// The recipe's importkeyconfig.json for key `name`.
    fn import_config(&self, name: &str) -> PathBuf {
        let authority = self.attest.url();
        let endpoint = authority.strip_prefix("https://").unwrap();
        let config = serde_json::json!({
            "key": {
                "kid": name,
                "kty": "oct-HSM",
                "authority": {"endpoint": endpoint},
                "akv": {"endpoint": "unused.example", "api_version": "api-version=7.4"}
            },
            "claims": [[
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": HOST_DATA},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"},
                {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"}
            ]]
        });
        let path = self.path(&format!("importkeyconfig-{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        path
    }

    fn cas(&self) -> [String; 4] {
        [
            "--ca".to_owned(),
            self.cert.to_str().unwrap().to_owned(),
            "--ca".to_owned(),
            self.path("state/release-ca.pem")
                .to_str()
                .unwrap()
                .to_owned(),
        ]
    }

    fn import(
        &self,
        broker: &str,
        name: &str,
        key_file: &Path,
        token: Option<&str>,
    ) -> std::process::Output {
        let mut command = confsum();
        command
            .args(["skr", "import", "--config"])
            .arg(self.import_config(name))
            .arg("--key-file")
            .arg(key_file)
            .args(["--hsm", broker])
            .args(self.cas())
            .env_remove("AZURE_ACCESS_TOKEN");
        if let Some(token) = token {
            command.env("AZURE_ACCESS_TOKEN", token);
        }
        command.output().unwrap()
    }

    fn release(
        &self,
        broker: &str,
        name: &str,
        token: &Path,
        out: Option<&Path>,
    ) -> std::process::Output {
        let mut command = confsum();
        command
            .args(["skr", "release", "--key", name, "--token"])
            .arg(token)
            .arg("--private-key")
            .arg(&self.wrapping)
            .args(["--hsm", broker])
            .args(self.cas());
        if let Some(out) = out {
            command.arg("--out").arg(out);
        }
        command.output().unwrap()
    }

    fn audit_verify(&self) -> std::process::Output {
        confsum()
            .args(["skr", "audit", "verify"])
            .arg(self.path("state/broker.redb"))
            .arg("--master-key")
            .arg(self.path("master.key"))
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn import_release_and_refusals_through_the_cli() {
    let setup = Setup::new();
    let mut broker = setup.broker();
    let url = broker.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert!(
        broker.lines[1].starts_with("release CA "),
        "{:?}",
        broker.lines
    );
    let key = setup.path("disk.key");
    let key_bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
    std::fs::write(&key, &key_bytes).unwrap();

    // No bearer token: 401.
    let out = setup.import(&url, "disk", &key, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    let out = setup.import(&url, "disk", &key, Some(ADMIN));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("imported disk (oct-HSM)"),
        "{}",
        text(&out.stdout)
    );

    // The right workload gets exactly the imported bytes.
    let good = setup.token(HOST_DATA);
    let released = setup.path("released.key");
    let out = setup.release(&url, "disk", &good, Some(&released));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&released).unwrap(), key_bytes);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&released).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    // Without --out the key is not printed.
    let out = setup.release(&url, "disk", &good, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("not saved"), "{stdout}");
    assert!(!stdout.contains(&hex::encode(&key_bytes)), "{stdout}");

    // Another host_data: exit 3, naming the claim.
    let other = setup.token(&"43".repeat(32));
    let out = setup.release(&url, "disk", &other, Some(&setup.path("no.key")));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).contains("x-ms-sevsnpvm-hostdata"),
        "{}",
        text(&out.stderr)
    );
    assert!(!setup.path("no.key").exists());

    // The log verifies once the broker has stopped.
    broker.signal("-TERM");
    let out = setup.audit_verify();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("audit log OK: 5 records"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn keys_and_audit_log_survive_kill_9_during_imports() {
    let setup = Setup::new();
    let mut broker = setup.broker();
    let url = broker.url();
    let mut ca = std::fs::read(&setup.cert).unwrap();
    ca.extend(std::fs::read(setup.path("state/release-ca.pem")).unwrap());
    let client = HsmClient::with_ca_pem(&url, &ca)
        .unwrap()
        .bearer(Some(zeroize::Zeroizing::new(ADMIN.to_owned())));
    let policy =
        confsum_skr::ImportKeyConfig::decode(&std::fs::read(setup.import_config("x")).unwrap())
            .unwrap()
            .release_policy()
            .unwrap();
    let request = move |seed: u8| {
        let bytes: Vec<u8> = (0u8..32).map(|i| i ^ seed).collect();
        ImportKeyRequest {
            key: KeyMaterial::from_key_file(KeyType::Oct, &bytes)
                .unwrap()
                .to_import_jwk()
                .unwrap(),
            hsm: Some(true),
            attributes: Some(ImportAttributes {
                enabled: Some(true),
                exportable: Some(true),
            }),
            release_policy: Some(ReleasePolicyBody {
                content_type: Some(POLICY_CONTENT_TYPE.to_owned()),
                data: policy.encode_base64url(),
                immutable: Some(false),
            }),
            tags: None,
        }
    };
    // Import as fast as possible from a thread; kill -9 the broker
    // meanwhile.
    let imported = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let importer = {
        let imported = Arc::clone(&imported);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for seed in 0u8..=255 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match client.import(&format!("k{seed}"), &request(seed)) {
                    Ok(_) => imported.lock().unwrap().push(seed),
                    Err(_) => break,
                }
            }
        })
    };
    while imported.lock().unwrap().len() < 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.signal("-KILL");
    stop.store(true, Ordering::SeqCst);
    importer.join().unwrap();
    let imported = imported.lock().unwrap().clone();

    let out = setup.audit_verify();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Restarted, every acknowledged import is there and releases.
    let broker = setup.broker();
    let url = broker.url();
    let good = setup.token(HOST_DATA);
    // Every 7th and the last, once each (the last may be a 7th).
    let sample: std::collections::BTreeSet<u8> = imported
        .iter()
        .copied()
        .step_by(7)
        .chain(imported.last().copied())
        .collect();
    for seed in sample {
        let released = setup.path(&format!("k{seed}.key"));
        let out = setup.release(&url, &format!("k{seed}"), &good, Some(&released));
        assert!(out.status.success(), "k{seed}: {}", text(&out.stderr));
        let expected: Vec<u8> = (0u8..32).map(|i| i ^ seed).collect();
        assert_eq!(std::fs::read(&released).unwrap(), expected);
    }
    drop(broker);
    let out = setup.audit_verify();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Releases from 8 clients at once (their audit records group-committed),
/// then `kill -9`: the log verifies after the crash and holds a release
/// record for every release that was answered.
#[test]
fn answered_releases_keep_their_audit_records_through_kill_9() {
    let setup = Setup::new();
    let mut broker = setup.broker();
    let url = broker.url();
    let key = setup.path("disk.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let out = setup.import(&url, "disk", &key, Some(ADMIN));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = std::fs::read_to_string(setup.token(HOST_DATA)).unwrap();
    let mut ca = std::fs::read(&setup.cert).unwrap();
    ca.extend(std::fs::read(setup.path("state/release-ca.pem")).unwrap());
    let client = HsmClient::with_ca_pem(&url, &ca).unwrap();

    let answered = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, token) = (client.clone(), token.clone());
            let (answered, stop) = (Arc::clone(&answered), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match client.release("disk", &token) {
                        Ok(_) => *answered.lock().unwrap() += 1,
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    while *answered.lock().unwrap() < 40 && !clients.iter().all(|c| c.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.signal("-KILL");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let answered = *answered.lock().unwrap();
    assert!(answered >= 40, "only {answered} releases answered");

    let out = setup.audit_verify();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let records: u64 = stdout
        .split("audit log OK: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    // The import, then one record per release: answered ones at least.
    assert!(records > answered, "{records} records, {answered} answered");
}
