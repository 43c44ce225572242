//! The start-up sequences of `testdata/check/`, run under confsum's
//! framework and under hcsshim's real one.
//!
//! hcsshim's `framework.rego` and `api.rego` (MIT) ship in the regorus crate
//! package, under `tests/aci/`; `cargo metadata` finds the package in the
//! local registry. Both frameworks run in the same enforcer loop (the Go
//! side, emulated), so any difference is a difference of the frameworks.

mod support;

use std::path::PathBuf;
use std::process::Command;

use confsum_policy::check::{Decision, Enforcer, Framework};
use support::cases::{Case, load_all, repo_root};

fn cases() -> Vec<Case> {
    let cases = load_all(&repo_root(env!("CARGO_MANIFEST_DIR")));
    assert!(cases.len() >= 40, "only {} sequences", cases.len());
    cases
}

/// `tests/aci` of the regorus package this workspace depends on.
fn hcsshim_framework_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = repo_root(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // Only the host's packages: the others may not be downloaded.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "regorus")
        .expect("regorus is a dependency");
    let manifest_path = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
    let dir = manifest_path
        .parent()
        .expect("package dir")
        .join("tests/aci");
    assert!(
        dir.join("framework.rego").is_file(),
        "regorus {} does not ship tests/aci/framework.rego at {}",
        package["version"],
        dir.display()
    );
    dir
}

fn hcsshim_framework() -> Framework {
    let dir = hcsshim_framework_dir();
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    Framework::from_modules([
        ("framework.rego", read("framework.rego")),
        ("api.rego", read("api.rego")),
    ])
}

fn messages(d: &Decision) -> Vec<String> {
    d.reasons.iter().map(ToString::to_string).collect()
}

#[test]
fn confsum_framework_decides_as_the_cases_say() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut enforcer =
            Enforcer::new(&case.policy).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        for step in &case.steps {
            let d = enforcer.decide(&step.request);
            let at = format!("{}: {}", case.name, step.label);
            if d.allowed != step.allowed {
                failures.push(format!(
                    "{at}: allowed={} reasons={:?}",
                    d.allowed,
                    messages(&d)
                ));
                break;
            }
            if !d.allowed && d.reasons.is_empty() {
                failures.push(format!("{at}: denied without a reason"));
            }
            if let Some(want) = &step.reasons {
                let mut want = want.clone();
                want.sort();
                let mut got = messages(&d);
                got.sort();
                if got != want {
                    failures.push(format!("{at}: reasons {got:?}, want {want:?}"));
                }
            }
            if let Some(want) = &step.env_list {
                if d.env_list.as_ref() != Some(want) {
                    failures.push(format!("{at}: env_list {:?}, want {want:?}", d.env_list));
                }
            }
            if let Some(want) = &step.caps_list {
                if d.caps_list.as_ref() != Some(want) {
                    failures.push(format!("{at}: caps_list {:?}, want {want:?}", d.caps_list));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn confsum_framework_agrees_with_hcsshim_framework() {
    let theirs = hcsshim_framework();
    let mut failures = Vec::new();
    let mut steps = 0;
    let cases = cases();
    for case in &cases {
        let mut ours =
            Enforcer::new(&case.policy).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        let mut oracle = Enforcer::with_framework(&case.policy, &theirs)
            .unwrap_or_else(|e| panic!("{}: hcsshim framework: {e:?}", case.name));
        for step in &case.steps {
            steps += 1;
            let a = ours.decide(&step.request);
            let b = oracle.decide(&step.request);
            let at = format!("{}: {}", case.name, step.label);
            if a.allowed != b.allowed {
                failures.push(format!(
                    "{at}: confsum allowed={} {:?}, hcsshim allowed={} {:?}",
                    a.allowed,
                    messages(&a),
                    b.allowed,
                    messages(&b)
                ));
                break;
            }
            if a.result != b.result {
                failures.push(format!(
                    "{at}: results differ\n  confsum {}\n  hcsshim {}",
                    serde_json::Value::Object(a.result.clone()),
                    serde_json::Value::Object(b.result.clone())
                ));
            }
            if a.metadata != b.metadata {
                failures.push(format!(
                    "{at}: metadata operations differ\n  confsum {:?}\n  hcsshim {:?}",
                    a.metadata, b.metadata
                ));
            }
            if ours.metadata() != oracle.metadata() {
                failures.push(format!("{at}: metadata state differs"));
                break;
            }
            // hcsshim gives no reason for some denials (switches, some
            // signals); where it gives reasons, ours must be among them.
            let (ra, rb) = (messages(&a), messages(&b));
            let invalid = a
                .reasons
                .iter()
                .any(|r| matches!(r, confsum_policy::check::Reason::InvalidPolicy(_)));
            if !a.allowed && !rb.is_empty() && !invalid && !ra.iter().all(|r| rb.contains(r)) {
                failures.push(format!(
                    "{at}: confsum reasons {ra:?} not among hcsshim's {rb:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences over {} sequences ({steps} steps):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
