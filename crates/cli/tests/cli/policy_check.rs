//! `confsum policy check` end to end: the golden basic policy (as Rego and
//! inside an ARM template), start-ups from the shared case inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::{Value, json};

fn basic_policy() -> PathBuf {
    crate::common::vectors("policy/basic/expected.rego")
}

/// The named inputs of `crates/policy/testdata/check/common.json`.
fn steps(names: &[&str]) -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy/testdata/check/common.json");
    let common: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Value::Array(names.iter().map(|n| common["inputs"][n].clone()).collect())
}

const POD: [&str; 8] = [
    "mount_pause_layer",
    "overlay_pause",
    "create_pause",
    "mount_app_l0",
    "mount_app_l1",
    "mount_app_l2",
    "overlay_app",
    "create_app",
];

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn confsum(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(crate::common::BIN)
        .args(args)
        .output()
        .unwrap()
}

fn check(policy: &Path, steps: &Path, json: bool) -> Output {
    let mut args = vec![
        "policy".as_ref(),
        "check".as_ref(),
        policy.as_os_str(),
        "--input".as_ref(),
        steps.as_os_str(),
    ];
    if json {
        args.push("--json".as_ref());
    }
    confsum(&args)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_exact_pod_is_allowed_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(dir.path(), "steps.json", steps(&POD).to_string().as_bytes());
    let out = check(&basic_policy(), &s, false);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("8 of 8 steps allowed"), "{stdout}");
    assert!(
        stdout.contains("allow create_container  app: /bin/sh -c echo summarizing; sleep 3600"),
        "{stdout}"
    );
}

#[test]
fn a_denied_step_exits_1_with_its_reason_and_drops_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = steps(&POD);
    let create = &mut list[7]["input"];
    create["envList"]
        .as_array_mut()
        .unwrap()
        .push(json!("EXTRA=1"));
    list.as_array_mut()
        .unwrap()
        .push(steps(&["exec_sh"])[0].clone());
    let s = write(dir.path(), "steps.json", list.to_string().as_bytes());
    let out = check(&basic_policy(), &s, false);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("dropped env: EXTRA"), "{stdout}");
    assert!(
        stdout.contains("DENY  exec_in_container  app: /bin/sh"),
        "{stdout}"
    );
    assert!(stdout.contains("- invalid command"), "{stdout}");
    assert!(stdout.contains("8 of 9 steps allowed; denied"), "{stdout}");
}

#[test]
fn an_arm_template_gives_the_same_decisions_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let policy = std::fs::read(basic_policy()).unwrap();
    let template = json!({
        "resources": [{
            "type": "Microsoft.ContainerInstance/containerGroups",
            "properties": {"confidentialComputeProperties": {
                "ccePolicy": base64::engine::general_purpose::STANDARD.encode(&policy)
            }}
        }]
    });
    let t = write(dir.path(), "template.json", template.to_string().as_bytes());
    let mut list = steps(&POD);
    list[7]["input"]["workingDir"] = json!("/");
    let s = write(dir.path(), "steps.json", list.to_string().as_bytes());
    let from_template = check(&t, &s, true);
    let from_rego = check(&basic_policy(), &s, true);
    assert_eq!(from_template.status.code(), Some(1));
    assert_eq!(from_template.stdout, from_rego.stdout);
    let report: Value = serde_json::from_slice(&from_template.stdout).unwrap();
    assert_eq!(report["allowed"], false);
    let last = &report["steps"][7];
    assert_eq!(last["rule"], "create_container");
    assert_eq!(last["allowed"], false);
    assert_eq!(last["reasons"], json!(["invalid working directory"]));
    assert_eq!(report["steps"][0]["metadata"][0]["name"], "devices");
}

#[test]
fn malformed_policies_and_steps_exit_2_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "steps.json",
        steps(&POD[..1]).to_string().as_bytes(),
    );
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("not rego", b"package policy\nallow := {".to_vec(), good_bytes(&good), "regorus cannot load policy.rego"),
        ("other package", b"package other\nx := 1\n".to_vec(), good_bytes(&good), "`package policy`"),
        ("template without policy", br#"{"resources": []}"#.to_vec(), good_bytes(&good), "ccePolicy"),
        ("policy not base64", br#"{"properties": {"confidentialComputeProperties": {"ccePolicy": "[parameters('p')]"}}}"#.to_vec(), good_bytes(&good), "not base64"),
        ("binary", vec![0xff, 0xfe, 0x00], good_bytes(&good), "UTF-8"),
        ("steps not a list", std::fs::read(basic_policy()).unwrap(), br#"{"rule": "dump_stacks"}"#.to_vec(), "JSON list"),
        ("unknown rule", std::fs::read(basic_policy()).unwrap(), br#"[{"rule": "format_disk"}]"#.to_vec(), "unknown rule \"format_disk\""),
        ("unknown field", std::fs::read(basic_policy()).unwrap(), br#"[{"rule": "mount_device", "input": {"target": "/x", "deviceHash": "00", "devicehash": "11"}}]"#.to_vec(), "unknown field `devicehash`"),
        ("missing field", std::fs::read(basic_policy()).unwrap(), br#"[{"rule": "get_properties"}, {"rule": "create_container", "input": {"containerID": "a"}}]"#.to_vec(), "step 2"),
    ];
    for (what, policy, steps, message) in cases {
        let p = write(dir.path(), "policy", &policy);
        let s = write(dir.path(), "steps", &steps);
        let out = check(&p, &s, false);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

fn good_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn missing_input_is_a_usage_error() {
    let out = confsum(&[
        "policy".as_ref(),
        "check".as_ref(),
        basic_policy().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
