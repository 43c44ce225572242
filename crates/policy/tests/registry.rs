//! Registry input against a real registry: Debian's `docker-registry`
//! (distribution 2.8), started here on loopback. The test image is pushed
//! with oci-client, and the policy generated from `127.0.0.1:PORT/...` must
//! equal the one generated from the docker-save archive of the same image.
//! `.ci/run` installs docker-registry and apache2-utils (htpasswd).
#![cfg(feature = "registry")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use confsum_policy::{
    Error, GenerateOptions, ImageSources, LayerCache, RegistryOptions, Template, generate,
};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

const REGISTRY: &str = "/usr/bin/docker-registry";

struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(htpasswd: Option<(&str, &str)>) -> Registry {
    assert!(
        Path::new(REGISTRY).exists(),
        "{REGISTRY} is missing: apt-get install docker-registry (as .ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("storage").display()
    );
    if let Some((user, pass)) = htpasswd {
        let out = Command::new("htpasswd")
            .args(["-nbB", user, pass])
            .output()
            .expect("htpasswd (apache2-utils) runs");
        assert!(out.status.success());
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, &out.stdout).unwrap();
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            file.display()
        ));
    }
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut r = Registry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&r.host).is_err() {
        if let Ok(Some(status)) = r.child.try_wait() {
            panic!("docker-registry exited: {status}");
        }
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// Pushes the oracle image with gzip layers.
fn push(host: &str, auth: &RegistryAuth) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_, runtime_config, layers) = common::oracle_image();
    let reference = format!("{host}/confsum/oracle:v1");
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![host.to_owned()]),
        ..ClientConfig::default()
    });
    let image_layers: Vec<ImageLayer> = layers
        .iter()
        .map(|l| {
            ImageLayer::new(
                common::gzip(l),
                "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                None,
            )
        })
        .collect();
    let config = Config::new(
        common::image_config(&runtime_config, &layers),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let parsed: Reference = reference.parse().unwrap();
    rt.block_on(client.push(&parsed, &image_layers, config, auth, None))
        .unwrap();
    reference
}

/// The `basic` case's template, with its image at `reference`.
fn template(case: &str, reference: &str) -> Template {
    let text = std::fs::read_to_string(common::vectors().join(case).join("template.json"))
        .unwrap()
        .replace("confsum/oracle:v1", reference);
    Template::parse(&text).unwrap()
}

fn options(case: &str) -> GenerateOptions {
    common::options_from_flags(
        &std::fs::read_to_string(common::vectors().join(case).join("flags")).unwrap_or_default(),
    )
}

fn from_registry(
    case: &str,
    reference: &str,
    registry: RegistryOptions,
    cache: &LayerCache,
) -> Result<String, Error> {
    let mut sources = ImageSources::new();
    sources.allow_registry(registry);
    generate(
        &template(case, reference),
        &sources,
        &options(case),
        cache,
        None,
    )
    .map(|g| g.groups[0].text.clone())
}

fn from_archive(case: &str, reference: &str) -> String {
    let mut sources = ImageSources::new();
    sources.insert(reference, &common::formats().formats[0].1);
    generate(
        &template(case, reference),
        &sources,
        &options(case),
        &LayerCache::disabled(),
        None,
    )
    .unwrap()
    .groups[0]
        .text
        .clone()
}

fn insecure(host: &str) -> RegistryOptions {
    let mut o = RegistryOptions::default();
    o.insecure_hosts = vec![host.to_owned()];
    // No ambient credentials: an empty config file.
    o.docker_config = Some(empty_docker_config());
    o
}

fn empty_docker_config() -> std::path::PathBuf {
    // Shipped, not written to the temp dir: a per-run file there would be
    // left behind by every test run.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/empty-docker-config.json")
}

#[test]
fn registry_equals_archive() {
    let registry = start(None);
    let reference = push(&registry.host, &RegistryAuth::Anonymous);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::new(cache_dir.path());
    for case in ["basic", "extras", "basic-debug-mode"] {
        let want = from_archive(case, &reference);
        // No cache, cold cache, warm cache (layers not downloaded again).
        for c in [&LayerCache::disabled(), &cache, &cache] {
            let got = from_registry(case, &reference, insecure(&registry.host), c).unwrap();
            assert_eq!(got, want, "{case}");
        }
    }
    // Without the image id the policy is exactly confcom's expected bytes.
    let got = from_registry(
        "basic-omit-id",
        &reference,
        insecure(&registry.host),
        &cache,
    )
    .unwrap();
    let expected =
        std::fs::read_to_string(common::vectors().join("basic-omit-id/expected.rego")).unwrap();
    assert_eq!(got, expected);

    // HTTPS is the default: without --insecure-registry the plain-HTTP
    // registry cannot be reached.
    let mut https_only = insecure(&registry.host);
    https_only.insecure_hosts.clear();
    assert!(matches!(
        from_registry("basic", &reference, https_only, &LayerCache::disabled()),
        Err(Error::Registry { .. })
    ));
    // A tag that is not there.
    let missing = reference.replace(":v1", ":nope");
    assert!(matches!(
        from_registry(
            "basic",
            &missing,
            insecure(&registry.host),
            &LayerCache::disabled()
        ),
        Err(Error::Registry { .. })
    ));
}

#[test]
fn registry_basic_auth_from_docker_config() {
    let registry = start(Some(("alice", "s3cret")));
    let reference = push(
        &registry.host,
        &RegistryAuth::Basic("alice".into(), "s3cret".into()),
    );
    let want = from_archive("basic", &reference);

    // Anonymous pull is refused.
    assert!(matches!(
        from_registry(
            "basic",
            &reference,
            insecure(&registry.host),
            &LayerCache::disabled()
        ),
        Err(Error::Registry { .. })
    ));

    // Credentials from a Docker config.json `auths` entry, as docker reads them.
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let mut options = insecure(&registry.host);
    options.docker_config = Some(config);
    let got = from_registry("basic", &reference, options, &LayerCache::disabled()).unwrap();
    assert_eq!(got, want);
}
