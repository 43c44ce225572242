//! `importkeyconfig.json` and `encfs-sidecar-args.json` against the recipe's
//! own files (../shared/vectors/aci/, from confidential-sidecar-containers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use confsum_skr::{ClaimCondition, Error, ImportKeyConfig, Secret, SidecarArgs};

fn vector(name: &str) -> Vec<u8> {
    let path = confsum_testkit::shared_vectors().join("aci").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn import_config_round_trips_byte_for_byte() {
    let bytes = vector("importkeyconfig.json");
    let config = ImportKeyConfig::decode(&bytes).unwrap();
    assert_eq!(config.encode().as_bytes(), bytes.as_slice());
    assert_eq!(config.claims.len(), 1);
    assert_eq!(config.claims[0].len(), 4);
    assert_eq!(
        config.placeholders(),
        [
            "key.kid",
            "key.kty",
            "key.authority.endpoint",
            "key.akv.endpoint",
            "key.akv.bearer_token",
            "key_derivation.salt",
            "key_derivation.label",
            "claims[0][0].equals",
        ]
    );
    // The bearer token never shows in Debug output.
    assert!(!format!("{config:?}").contains("aad-token"));
}

/// The policy Azure's import tool (tools/importkey/main.go) writes for the
/// README's example: version 1.0.0, `https://` + endpoint, one allOf per
/// list, members in Go struct order.
#[test]
fn import_config_gives_the_import_tools_policy() {
    let bytes = vector("importkeyconfig.json");
    let mut config = ImportKeyConfig::decode(&bytes).unwrap();
    config.key.authority.endpoint = "sharedneu.neu.attest.azure.net".into();
    config.claims[0][0] = ClaimCondition::equals(
        "x-ms-sevsnpvm-hostdata",
        "99e1abd344fc0989288c44fde8de3b2a248b1b95814df8955d0c305a7db46680",
    );
    let policy = config.release_policy().unwrap();
    assert_eq!(
        String::from_utf8(policy.encode()).unwrap(),
        r#"{"version":"1.0.0","anyOf":[{"authority":"https://sharedneu.neu.attest.azure.net","allOf":[{"claim":"x-ms-sevsnpvm-hostdata","equals":"99e1abd344fc0989288c44fde8de3b2a248b1b95814df8955d0c305a7db46680"},{"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},{"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"},{"claim":"x-ms-sevsnpvm-vmpl","equals":"0"}]}]}"#
    );

    config.key.authority.endpoint = "https://sharedneu.neu.attest.azure.net".into();
    assert!(matches!(config.release_policy(), Err(Error::Config { .. })));
    config.key.authority.endpoint = "x".into();
    config.claims.clear();
    assert!(config.release_policy().is_err());
}

#[test]
fn import_config_refuses_typos_and_bad_claims() {
    let text = String::from_utf8(vector("importkeyconfig.json")).unwrap();
    for (from, to) in [
        ("\"key_derivation\"", "\"key_derivaton\""),
        ("\"equals\": \"0\"", "\"equal\": \"0\""),
        ("\"equals\": \"0\"", "\"equals\": {}"),
    ] {
        let bad = text.replacen(from, to, 1);
        assert!(
            matches!(
                ImportKeyConfig::decode(bad.as_bytes()),
                Err(Error::Json { .. })
            ),
            "{to}"
        );
    }
}

#[test]
fn sidecar_args_round_trip_and_base64() {
    let bytes = vector("encfs-sidecar-args.json");
    let args = SidecarArgs::decode(&bytes).unwrap();
    assert_eq!(args.encode().as_bytes(), bytes.as_slice());
    let fs = &args.azure_filesystems[0];
    assert_eq!(fs.mount_point, "/mnt/remote/share");
    assert!(fs.read_write && fs.azure_url_private);

    let b64 = args.to_base64();
    // What the sidecar does: StdEncoding, then JSON.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(
        value["azure_filesystems"][0]["key"]["akv"]["endpoint"],
        "<key-vault-akv-endpoint>"
    );
    assert_eq!(
        SidecarArgs::from_base64(&format!(" {b64}\n")).unwrap(),
        args
    );
    assert!(matches!(
        SidecarArgs::from_base64("not base64!"),
        Err(Error::Encoding { .. })
    ));
    assert_eq!(args.placeholders().len(), 7);

    let mut with_secret = args.clone();
    with_secret.azure_filesystems[0].raw_key = Some(Secret::new("00112233"));
    assert!(!format!("{with_secret:?}").contains("00112233"));
}
