//! confcom's rules beyond the shared vectors, each checked on a container
//! built for it. The expected values come from reading az confcom's source
//! (function named per check), not from running it; the shared vectors are
//! the compatibility proof, these pin the rules they do not reach.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use confsum_policy::{
    EnvStrategy, GenerateOptions, IdName, ImageSources, LayerCache, Template, generate,
};
use serde_json::json;

fn image(dir: &std::path::Path, name: &str, runtime: serde_json::Value) -> std::path::PathBuf {
    let (_, _, layers) = common::oracle_image();
    let p = dir.join(format!("{name}.tar"));
    common::mkimage(
        &p,
        "oci",
        &format!("{name}:v1"),
        &serde_json::to_vec(&runtime).unwrap(),
        &layers[..1],
    );
    p
}

#[test]
fn multi_container_group() {
    let dir = tempfile::tempdir().unwrap();
    let app = image(
        dir.path(),
        "app",
        json!({"Entrypoint": ["/app"], "User": "1000:1000", "StopSignal": "SIGTERM",
               "Env": ["TERM=vt100", "A=1"]}),
    );
    let side = image(
        dir.path(),
        "side",
        json!({"Cmd": ["run"], "User": "nobody", "StopSignal": "SIGRTMIN+3", "WorkingDir": "/w"}),
    );
    let template = json!({
        "parameters": {"port": {"type": "int", "defaultValue": 8080}},
        "variables": {"vol": "/data"},
        "resources": [{
            "type": "Microsoft.ContainerInstance/containerGroups",
            "name": "grp",
            "properties": {
                "confidentialComputeProperties": {"ccePolicy": ""},
                "containers": [
                    {"name": "app", "properties": {
                        "image": "app:v1",
                        "environmentVariables": [{"name": "PORT", "value": "[parameters('port')]"}],
                        "volumeMounts": [
                            {"name": "files", "mountPath": "[variables('vol')]", "readOnly": true},
                            {"name": "sec", "mountPath": "/s"},
                            {"name": "repo", "mountPath": "/r"}
                        ],
                        "readinessProbe": {"httpGet": {"path": "/"}},
                        "livenessProbe": {"exec": {"command": ["cat", "/ok"]}}
                    }},
                    {"name": "side", "properties": {
                        "image": "side:v1",
                        "command": ["/side", "--x"],
                        "securityContext": {
                            "privileged": "true",
                            "runAsUser": 0,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["CAP_SYS_ADMIN"], "drop": ["CAP_BPF"]}
                        },
                        "configMap": {"keyValuePairs": {"k": "v"}}
                    }}
                ],
                "volumes": [
                    {"name": "files", "azureFile": {"shareName": "s"}},
                    {"name": "sec", "secret": {"k": "dg=="}},
                    {"name": "repo", "gitRepo": {"repository": "r"}}
                ]
            }
        }]
    });
    let t = Template::parse(&template.to_string()).unwrap();
    let mut sources = ImageSources::new();
    sources.insert("app:v1", &app);
    sources.insert("side:v1", &side);
    let out = generate(
        &t,
        &sources,
        &GenerateOptions::default(),
        &LayerCache::disabled(),
        None,
    )
    .unwrap();
    let p = &out.groups[0].policy;
    assert_eq!(p.containers.len(), 3);
    let (a, s, pause) = (&p.containers[0], &p.containers[1], &p.containers[2]);
    assert_eq!(pause.name.as_deref(), Some("pause-container"));

    // populate_policy_content_for_all_images: command from Entrypoint alone,
    // working dir "/" when the image has none, StopSignal translated.
    assert_eq!(a.command, Some(vec!["/app".to_owned()]));
    assert_eq!(a.working_dir, "/");
    assert_eq!(a.signals, vec![json!(15)]);
    // ... image User "1000:1000" → id/id; "nobody" → name, group stays any.
    assert_eq!(
        a.user.user_idname,
        IdName {
            pattern: "1000".into(),
            strategy: "id".into()
        }
    );
    assert_eq!(
        a.user.group_idnames,
        vec![IdName {
            pattern: "1000".into(),
            strategy: "id".into()
        }]
    );
    // extract_user: the template's runAsUser wins over the image's User.
    assert_eq!(
        s.user.user_idname,
        IdName {
            pattern: "0".into(),
            strategy: "id".into()
        }
    );
    assert_eq!(s.user.group_idnames, vec![IdName::any()]);
    // An untranslatable signal name stays a string (translate_signals).
    assert_eq!(s.signals, vec![json!("SIGRTMIN+3")]);
    assert_eq!(s.working_dir, "/w");
    assert_eq!(s.command, Some(vec!["/side".to_owned(), "--x".to_owned()]));

    // Env order: template, image (not overridden), then the injected rules,
    // except TERM=xterm when the image already sets TERM (_get_environment_rules).
    let patterns: Vec<&str> = a.env_rules.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(&patterns[..3], &["PORT=8080", "TERM=vt100", "A=1"]);
    assert!(!patterns.contains(&"TERM=xterm"));
    assert_eq!(a.env_rules[3].strategy, EnvStrategy::Re2);
    assert!(s.env_rules.iter().any(|r| r.pattern == "TERM=xterm"));

    // process_mounts / _get_mounts_json: sources by volume type, ro from readOnly,
    // resolv.conf last; configMap adds /mnt/configmap (process_configmap).
    let m: Vec<(&str, &str, &str)> = a
        .mounts
        .iter()
        .map(|m| {
            (
                m.destination.as_str(),
                m.source.as_str(),
                m.options[2].as_str(),
            )
        })
        .collect();
    assert_eq!(
        m,
        vec![
            ("/data", "sandbox:///tmp/atlas/azureFileVolume/.+", "ro"),
            ("/s", "sandbox:///tmp/atlas/secretsVolume/.+", "rw"),
            ("/r", "sandbox:///tmp/atlas/gitRepoVolume/.+", "rw"),
            (
                "/etc/resolv.conf",
                "sandbox:///tmp/atlas/resolvconf/.+",
                "rw"
            ),
        ]
    );
    assert_eq!(s.mounts[0].destination, "/mnt/configmap");
    assert_eq!(s.mounts[0].source, "sandbox:///tmp/atlas/emptydir/.+");

    // extract_probe: only exec probes become exec_processes.
    assert_eq!(a.exec_processes.len(), 1);
    assert_eq!(a.exec_processes[0].command, vec!["cat", "/ok"]);

    // extract_allow_elevated / extract_capabilities: "true" string, privileged
    // set in bounding/effective/permitted/inheritable, add/drop, sorted.
    assert!(s.allow_elevated);
    assert!(s.no_new_privileges);
    assert!(!a.allow_elevated && !a.no_new_privileges);
    let caps = &s.capabilities;
    assert!(caps.inheritable.contains(&"CAP_SYS_ADMIN".to_owned()));
    assert!(!caps.bounding.contains(&"CAP_BPF".to_owned()));
    assert!(caps.ambient.is_empty());
    let mut sorted = caps.effective.clone();
    sorted.sort();
    assert_eq!(caps.effective, sorted);
    assert_eq!(caps.permitted.len(), 40);
}

#[test]
fn omit_id_drops_name_equal_to_id() {
    // _populate_policy_json_elements: with --omit-id, a name equal to the
    // image reference goes too.
    let dir = tempfile::tempdir().unwrap();
    let app = image(dir.path(), "app", json!({"Cmd": ["x"]}));
    let template = json!({"resources": [{
        "type": "Microsoft.ContainerInstance/containerGroups",
        "properties": {"containers": [{"name": "app:v1", "properties": {"image": "app:v1"}}]}
    }]});
    let t = Template::parse(&template.to_string()).unwrap();
    let mut sources = ImageSources::new();
    sources.insert("app:v1", &app);
    let mut o = GenerateOptions::default();
    o.omit_id = true;
    let out = generate(&t, &sources, &o, &LayerCache::disabled(), None).unwrap();
    let c = &out.groups[0].policy.containers[0];
    assert_eq!((c.id.as_deref(), c.name.as_deref()), (None, None));
}
