//! The start-up sequences of `crates/policy/testdata/check/*.json`, shared
//! by the tests and the `policy_check` bench.
//!
//! A file names a policy and holds cases; a case is a list of steps.
//! `common.json` holds inputs and groups every file may use. A step is:
//! - `"NAME"`: the input NAME, expected to be allowed;
//! - `"@GROUP"`: the steps of GROUP;
//! - an object: `use` (an input), or `rule` and `input`; `with` (keys of
//!   the input to replace); `want` (`"allow"`, the default, or `"deny"`);
//!   and, checked against confsum's decision, `reasons` (all of them),
//!   `env_list` (variables kept) and `caps_list` (capabilities granted).
//!
//! Policies: `vector:NAME` is `../shared/vectors/policy/NAME/expected.rego`,
//! `vector:aci` the allow-all `../shared/vectors/aci/uvm_security_policy.base64`,
//! anything else a path under `testdata/check/`.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use std::process::Command;

use confsum_policy::check::{Capabilities, Framework, Request, Rule};
use serde_json::{Map, Value};

/// One sequence.
pub struct Case {
    /// `file/note`.
    pub name: String,
    /// The policy's Rego.
    pub policy: String,
    pub steps: Vec<Step>,
}

/// One request and what confsum must decide.
pub struct Step {
    /// Where it comes from, for messages.
    pub label: String,
    pub request: Request,
    pub allowed: bool,
    pub reasons: Option<Vec<String>>,
    pub env_list: Option<Vec<String>>,
    pub caps_list: Option<Capabilities>,
}

/// Every case under `repo/crates/policy/testdata/check`.
pub fn load_all(repo: &Path) -> Vec<Case> {
    let dir = repo.join("crates/policy/testdata/check");
    let common = read_json(&dir.join("common.json"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "common.json")
        })
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let doc = read_json(&file);
        let inputs = merged(&common, &doc, "inputs");
        let groups = merged(&common, &doc, "groups");
        let default_policy = doc.get("policy").and_then(Value::as_str).map(str::to_owned);
        let list = doc["cases"]
            .as_array()
            .unwrap_or_else(|| panic!("{stem}: no cases"));
        for case in list {
            let note = case["note"]
                .as_str()
                .unwrap_or_else(|| panic!("{stem}: case without note"));
            let name = format!("{stem}/{note}");
            let policy_ref = case
                .get("policy")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| default_policy.clone())
                .unwrap_or_else(|| panic!("{name}: no policy"));
            let policy = load_policy(repo, &dir, &policy_ref);
            let mut steps = Vec::new();
            for raw in case["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no steps"))
            {
                expand(&name, raw, &inputs, &groups, &mut steps);
            }
            cases.push(Case {
                name,
                policy,
                steps,
            });
        }
    }
    cases
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn merged(common: &Value, doc: &Value, key: &str) -> Map<String, Value> {
    let mut map = common
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(own) = doc.get(key).and_then(Value::as_object) {
        map.extend(own.clone());
    }
    map
}

fn load_policy(repo: &Path, dir: &Path, reference: &str) -> String {
    let shared = repo.join("../shared/vectors");
    let path = match reference.strip_prefix("vector:") {
        Some("aci") => {
            let path = shared.join("aci/uvm_security_policy.base64");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .expect("the aci vector is base64");
            return String::from_utf8(bytes).expect("the aci vector is UTF-8");
        }
        Some(name) => shared.join("policy").join(name).join("expected.rego"),
        None => dir.join(reference),
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expand(
    case: &str,
    raw: &Value,
    inputs: &Map<String, Value>,
    groups: &Map<String, Value>,
    out: &mut Vec<Step>,
) {
    if let Some(name) = raw.as_str() {
        if let Some(group) = name.strip_prefix('@') {
            let steps = groups
                .get(group)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{case}: no group {group}"));
            for step in steps {
                expand(case, step, inputs, groups, out);
            }
            return;
        }
        return expand(
            case,
            &serde_json::json!({ "use": name }),
            inputs,
            groups,
            out,
        );
    }
    let step = raw
        .as_object()
        .unwrap_or_else(|| panic!("{case}: bad step {raw}"));
    let (rule, mut input, label) = match step.get("use").and_then(Value::as_str) {
        Some(name) => {
            let base = inputs
                .get(name)
                .unwrap_or_else(|| panic!("{case}: no input {name}"));
            (
                base["rule"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{case}: {name} has no rule"))
                    .to_owned(),
                base.get("input").cloned().unwrap_or(Value::Null),
                name.to_owned(),
            )
        }
        None => {
            let rule = step["rule"]
                .as_str()
                .unwrap_or_else(|| panic!("{case}: step without rule"))
                .to_owned();
            (
                rule.clone(),
                step.get("input").cloned().unwrap_or(Value::Null),
                rule,
            )
        }
    };
    if let Some(with) = step.get("with").and_then(Value::as_object) {
        let target = input
            .as_object_mut()
            .unwrap_or_else(|| panic!("{case}: {label} has no input to change"));
        for (k, v) in with {
            target.insert(k.clone(), v.clone());
        }
    }
    let rule = Rule::from_name(&rule).unwrap_or_else(|| panic!("{case}: unknown rule {rule}"));
    let request =
        Request::from_input(rule, input).unwrap_or_else(|e| panic!("{case}: {label}: {e}: {e:?}"));
    let allowed = match step.get("want").and_then(Value::as_str).unwrap_or("allow") {
        "allow" => true,
        "deny" => false,
        other => panic!("{case}: want {other}"),
    };
    let strings = |key: &str| {
        step.get(key).map(|v| {
            serde_json::from_value::<Vec<String>>(v.clone())
                .unwrap_or_else(|e| panic!("{case}: {key}: {e}"))
        })
    };
    out.push(Step {
        label: format!("step {} ({label})", out.len() + 1),
        request,
        allowed,
        reasons: strings("reasons"),
        env_list: strings("env_list"),
        caps_list: step.get("caps_list").map(|v| {
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{case}: caps_list: {e}"))
        }),
    });
}

/// The repository root, from a crate's manifest directory.
pub fn repo_root(manifest_dir: &str) -> PathBuf {
    let mut dir = PathBuf::from(manifest_dir);
    while !dir.join("crates/policy/testdata/check").is_dir() {
        assert!(
            dir.pop(),
            "no crates/policy/testdata/check above {manifest_dir}"
        );
    }
    dir
}

/// Counts of cases per file, for messages.
pub fn summary(cases: &[Case]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for case in cases {
        let file = case.name.split('/').next().unwrap_or_default().to_owned();
        *counts.entry(file).or_default() += 1;
    }
    counts
}

/// `tests/aci` of the regorus package this workspace depends on.
pub fn hcsshim_framework_dir(repo: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = repo.join("Cargo.toml");
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

/// hcsshim's framework and api modules, from the regorus package.
pub fn hcsshim_framework(repo: &Path) -> Framework {
    let dir = hcsshim_framework_dir(repo);
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    Framework::from_modules([
        ("framework.rego", read("framework.rego")),
        ("api.rego", read("api.rego")),
    ])
}
