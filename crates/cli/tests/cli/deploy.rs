//! `confsum deploy azure`: the three deployment files, and `--check`.
//!
//! The images are the policy vectors' image (`confsum/oracle:v1`) and a
//! stand-in for the sidecar (`mcr.microsoft.com/aci/encfs:2.12`) made of
//! vector layers, assembled with `../shared/tools/mkimage.py`. The recipe's
//! own files (`../shared/vectors/aci/`) give the shape our files must have.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use confsum_testkit::Run;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{confsum, vectors};

const APP: &str = "confsum/oracle:v1";
const SIDECAR: &str = "mcr.microsoft.com/aci/encfs:2.12";
const BLOB: &str = "https://owneraccount.blob.core.windows.net/private/encfs.img";
const HSM: &str = "ownerhsm.managedhsm.azure.net";
const MAA: &str = "sharedeus.eus.attest.azure.net";
const IDENTITY: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/summarizer";

struct Images {
    _dir: tempfile::TempDir,
    args: Vec<String>,
}

fn images() -> Images {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::common::docker_archive(
        dir.path(),
        "app.tar",
        APP,
        &["single-file", "links", "whiteouts"],
    );
    let sidecar =
        crate::common::docker_archive(dir.path(), "sidecar.tar", SIDECAR, &["single-file"]);
    let args = vec![
        "--image".into(),
        format!("{APP}={}", app.display()),
        "--image".into(),
        format!("{SIDECAR}={}", sidecar.display()),
        "--offline".into(),
        "--no-cache".into(),
    ];
    Images { _dir: dir, args }
}

fn owner_flags() -> Vec<String> {
    [
        "--app-image",
        APP,
        "--blob-url",
        BLOB,
        "--key-name",
        "doc-key",
        "--hsm",
        HSM,
        "--maa",
        MAA,
        "--identity",
        IDENTITY,
        "--app-port",
        "8000",
        "--app-env",
        "CONFSUM_MODEL=/models/t5-small",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn deploy(images: &Images, out: &Path, extra: &[String]) -> Run {
    confsum()
        .args(["deploy", "azure", "--out-dir"])
        .arg(out)
        .args(&images.args)
        .args(extra)
        .run()
}

fn check(dir: &Path, extra: &[&str]) -> Run {
    confsum()
        .args(["deploy", "azure", "--check"])
        .arg(dir)
        .args(extra)
        .run()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn group(template: &Value) -> &Value {
    &template["resources"][0]
}

/// Every JSON path of `v`, with array indexes as `[]`.
fn paths(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, item) in m {
                let p = format!("{at}.{k}");
                out.push(p.clone());
                paths(item, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn all_paths(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    paths(v, "$", &mut out);
    out
}

#[test]
fn writes_a_complete_consistent_deployment() {
    let images = images();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("azure");
    let run = deploy(&images, &out, &owner_flags()).success();
    let stdout = run.stdout_str();

    // No file has a placeholder left; the recipe's have a dozen.
    for name in [
        "template.json",
        "importkeyconfig.json",
        "encfs-sidecar-args.json",
    ] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(!text.contains('<'), "{name} has a <placeholder>:\n{text}");
        assert!(
            std::fs::read_to_string(vectors("aci").join(match name {
                "template.json" => "aci-arm-template.json",
                n => n,
            }))
            .unwrap()
            .contains('<'),
            "the recipe's {name} is expected to have placeholders"
        );
    }

    // An ARM template: one Confidential container group, the workload and
    // the privileged sidecar sharing an emptyDir volume.
    let template = json_file(&out.join("template.json"));
    assert!(
        template["$schema"]
            .as_str()
            .unwrap()
            .ends_with("/deploymentTemplate.json#")
    );
    assert_eq!(template["contentVersion"], "1.0.0.0");
    let g = group(&template);
    assert_eq!(g["type"], "Microsoft.ContainerInstance/containerGroups");
    assert_eq!(g["properties"]["sku"], "Confidential");
    assert_eq!(g["properties"]["osType"], "Linux");
    assert_eq!(
        g["identity"]["userAssignedIdentities"],
        json!({ IDENTITY: {} })
    );
    assert_eq!(
        g["properties"]["volumes"],
        json!([{"name": "remotemounts", "emptyDir": {}}])
    );
    let containers = g["properties"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let (app, sidecar) = (&containers[0]["properties"], &containers[1]["properties"]);
    assert_eq!(app["image"], APP);
    assert_eq!(sidecar["image"], SIDECAR);
    assert_eq!(sidecar["command"], json!(["/encfs.sh"]));
    assert_eq!(sidecar["securityContext"]["privileged"], true);
    for c in [app, sidecar] {
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "remotemounts", "mountPath": "/mnt/remote"}])
        );
    }
    assert_eq!(
        g["properties"]["ipAddress"]["ports"],
        json!([{"protocol": "TCP", "port": 8000}])
    );

    // The sidecar's arguments decode to the expected JSON, which is also
    // encfs-sidecar-args.json.
    let env = sidecar["environmentVariables"].as_array().unwrap();
    assert_eq!(env[0]["name"], "EncfsSideCarArgs");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(env[0]["value"].as_str().unwrap())
        .unwrap();
    let args: Value = serde_json::from_slice(&decoded).unwrap();
    let expected_args = json!({
        "azure_filesystems": [{
            "mount_point": "/mnt/remote/share",
            "azure_url": BLOB,
            "azure_url_private": true,
            "read_write": false,
            "key": {
                "kid": "doc-key",
                "kty": "oct-HSM",
                "authority": {"endpoint": MAA},
                "akv": {"endpoint": HSM},
            },
        }],
    });
    assert_eq!(args, expected_args);
    assert_eq!(
        json_file(&out.join("encfs-sidecar-args.json")),
        expected_args
    );

    // The policy hash is the host_data the key is released to.
    let policy_b64 = g["properties"]["confidentialComputeProperties"]["ccePolicy"]
        .as_str()
        .unwrap();
    let policy = base64::engine::general_purpose::STANDARD
        .decode(policy_b64)
        .unwrap();
    let host_data = hex::encode(Sha256::digest(&policy));
    let import = json_file(&out.join("importkeyconfig.json"));
    assert_eq!(
        import,
        json!({
            "key": {
                "kid": "doc-key",
                "kty": "oct-HSM",
                "authority": {"endpoint": MAA},
                "akv": {"endpoint": HSM, "api_version": "api-version=7.4"},
            },
            "claims": [[
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": host_data},
                {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": "false"},
                {"claim": "x-ms-sevsnpvm-vmpl", "equals": "0"},
            ]],
        })
    );
    assert!(
        stdout.contains(&format!("host_data: {host_data}")),
        "{stdout}"
    );

    // Every field we write is one the recipe's files have.
    for (ours, recipe) in [
        ("importkeyconfig.json", "importkeyconfig.json"),
        ("encfs-sidecar-args.json", "encfs-sidecar-args.json"),
        ("template.json", "aci-arm-template.json"),
    ] {
        let known = all_paths(&json_file(&vectors("aci").join(recipe)));
        let unknown: Vec<String> = all_paths(&json_file(&out.join(ours)))
            .into_iter()
            .filter(|p| !known.contains(p))
            // The identity's key is ours only (the recipe's is a
            // placeholder).
            .filter(|p| !p.contains("userAssignedIdentities."))
            .collect();
        assert!(unknown.is_empty(), "{ours}: not in the recipe: {unknown:?}");
    }

    // The policy is what `confsum policy generate` gives for the same
    // template and images, and it covers the sidecar's arguments.
    let generated = confsum()
        .args(["policy", "generate", "--template"])
        .arg(out.join("template.json"))
        .args(&images.args)
        .args(["--print-policy", "--raw"])
        .run()
        .success()
        .stdout;
    assert_eq!(
        String::from_utf8(generated).unwrap().trim_end_matches('\n'),
        String::from_utf8(policy.clone()).unwrap()
    );
    let parsed = confsum_policy::Policy::parse(std::str::from_utf8(&policy).unwrap()).unwrap();
    let sidecar_rules: Vec<&str> = parsed.containers[1]
        .env_rules
        .iter()
        .map(|r| r.pattern.as_str())
        .collect();
    assert!(
        sidecar_rules
            .iter()
            .any(|p| *p == format!("EncfsSideCarArgs={}", env[0]["value"].as_str().unwrap())),
        "{sidecar_rules:?}"
    );

    // The two commands to run next.
    assert!(stdout.contains("importkey -c "), "{stdout}");
    assert!(stdout.contains("importkeyconfig.json"), "{stdout}");
    assert!(
        stdout.contains("az deployment group create --resource-group"),
        "{stdout}"
    );

    // It agrees with itself, and with the owner's settings.
    let ok = check(
        &out,
        &["--key-name", "doc-key", "--blob-url", BLOB, "--hsm", HSM],
    )
    .success();
    assert!(
        ok.stdout_str()
            .contains("OK: the template's policy hashes to")
    );

    // Existing files are kept without --force.
    let again = deploy(&images, &out, &owner_flags()).code(1);
    assert!(
        again.stderr_str().contains("already exists"),
        "{}",
        again.stderr_str()
    );
    let mut forced = owner_flags();
    forced.push("--force".into());
    deploy(&images, &out, &forced).success();
}

/// The files written for the owner's default settings, then `edit` applied
/// to importkeyconfig.json.
fn written_then_edited(edit: impl FnOnce(&mut Value)) -> (tempfile::TempDir, PathBuf) {
    let images = images();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("azure");
    deploy(&images, &out, &owner_flags()).success();
    let path = out.join("importkeyconfig.json");
    let mut import = json_file(&path);
    edit(&mut import);
    std::fs::write(&path, serde_json::to_vec_pretty(&import).unwrap()).unwrap();
    (tmp, out)
}

#[test]
fn check_catches_a_key_imported_for_another_policy() {
    let other = "ab".repeat(32);
    let (_tmp, out) = written_then_edited(|v| {
        v["claims"][0][0]["equals"] = json!(other.clone());
    });
    let run = check(&out, &[]).code(2);
    let stdout = run.stdout_str();
    assert!(stdout.contains("MISMATCH: host_data differs"), "{stdout}");
    assert!(stdout.contains(&other), "{stdout}");
    assert!(stdout.contains("403"), "{stdout}");
    assert!(
        run.stderr_str().contains("do not deploy"),
        "{}",
        run.stderr_str()
    );
}

#[test]
fn check_catches_a_wrong_key_name() {
    // The sidecar would ask for a key that the owner did not import.
    let (_tmp, out) = written_then_edited(|v| v["key"]["kid"] = json!("other-key"));
    let stdout = check(&out, &[]).code(2).stdout_str();
    assert!(
        stdout.contains("key name (kid) differs")
            && stdout.contains("\"doc-key\"")
            && stdout.contains("\"other-key\""),
        "{stdout}"
    );

    // Or the files agree, but not with the key the owner imported.
    let (_tmp, out) = written_then_edited(|_| {});
    check(&out, &["--key-name", "doc-key"]).success();
    let stdout = check(&out, &["--key-name", "owners-key"])
        .code(2)
        .stdout_str();
    assert!(
        stdout.contains("importkeyconfig.json has key_name \"doc-key\", expected \"owners-key\""),
        "{stdout}"
    );
    let stdout = check(
        &out,
        &["--blob-url", "https://x.blob.core.windows.net/c/other.img"],
    )
    .code(2)
    .stdout_str();
    assert!(stdout.contains("blob_url"), "{stdout}");
}

#[test]
fn missing_and_placeholder_settings_are_listed_and_nothing_is_written() {
    let images = images();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("azure");
    let run = deploy(
        &images,
        &out,
        &["--app-image".into(), APP.into(), "--hsm".into(), HSM.into()],
    )
    .code(1);
    let stderr = run.stderr_str();
    for flag in ["--blob-url", "--key-name", "--maa", "--identity"] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }
    assert!(!stderr.contains("--hsm"), "{stderr}");
    assert!(!out.exists());

    let mut flags = owner_flags();
    let i = flags.iter().position(|f| f == "--key-name").unwrap();
    flags[i + 1] = "<key-vault-key-identifier>".into();
    let stderr = deploy(&images, &out, &flags).code(1).stderr_str();
    assert!(
        stderr.contains("<placeholder>") && stderr.contains("--key-name"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn settings_file_with_flags_over_it() {
    let images = images();
    let tmp = tempfile::tempdir().unwrap();
    let settings = tmp.path().join("settings.json");
    std::fs::write(
        &settings,
        serde_json::to_vec(&json!({
            "app_image": APP,
            "blob_url": BLOB,
            "key_name": "from-file",
            "hsm": format!("https://{HSM}/"),
            "maa": MAA,
            "identity": IDENTITY,
            "mount_point": "/data/docs",
        }))
        .unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("azure");
    let flags = vec![
        "--settings".to_owned(),
        settings.display().to_string(),
        "--key-name".into(),
        "from-flag".into(),
    ];
    deploy(&images, &out, &flags).success();
    let args = json_file(&out.join("encfs-sidecar-args.json"));
    let fs = &args["azure_filesystems"][0];
    assert_eq!(fs["key"]["kid"], "from-flag");
    assert_eq!(fs["key"]["akv"]["endpoint"], HSM);
    assert_eq!(fs["mount_point"], "/data/docs");
    let template = json_file(&out.join("template.json"));
    assert_eq!(
        group(&template)["properties"]["containers"][0]["properties"]["volumeMounts"][0]["mountPath"],
        "/data"
    );

    // An unknown key is an error, not a silent default.
    std::fs::write(&settings, br#"{"key_nmae": "typo"}"#).unwrap();
    let stderr = deploy(&images, &tmp.path().join("other"), &flags[..2])
        .code(1)
        .stderr_str();
    assert!(stderr.contains("key_nmae"), "{stderr}");
}
