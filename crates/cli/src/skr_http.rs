//! `confsum skr serve|import|release`: the key broker on HTTP(S), and the
//! client that imports to it (or to a real Managed HSM) and releases from
//! it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use confsum_attest::Jwks;
use confsum_server::skr::TrustedAuthorities;
use confsum_server::{
    Client, HsmClient, Limits, RateLimit, Server, TlsConfig, bearer_token, hsm_endpoint,
};
use confsum_skr::{
    Broker, BrokerConfig, ImportAttributes, ImportKeyConfig, ImportKeyRequest, KeyMaterial,
    KeyType, MasterKey, ReleasePolicyBody, ReleaseRequest, SigningIdentity, WrapAlgorithm,
    WrappingPrivateKey,
};

use crate::fsio::Output;

/// The database file inside --state.
const DB_FILE: &str = "broker.redb";
/// The release-signing CA certificate inside --state.
const CA_FILE: &str = "release-ca.pem";

/// Run a key broker: the Managed HSM REST subset, over HTTP or HTTPS.
///
///   PUT   /keys/NAME          import a key with its release policy (admin)
///   GET   /keys/NAME          public attributes and policy, never the key
///   PATCH /keys/NAME          change the release policy (admin; immutable
///                             policies cannot change: 409)
///   POST  /keys/NAME/release  {"target": attestation token}: the key,
///                             wrapped to the token's x-ms-runtime.keys,
///                             in a signed JWS, if the policy allows
///
/// Keys live in STATE/broker.redb, encrypted under the master key, with an
/// append-only, hash-chained audit log (`confsum skr audit verify`).
/// Releases are signed by a key made at each start and certified by a
/// local CA whose certificate is written to STATE/release-ca.pem: give
/// that file to clients (`skr release --ca`). The certificate names
/// 127.0.0.1:PORT, localhost:PORT and every --name, as the sidecar
/// compares the endpoint it was configured with.
///
/// The first line on standard output is `listening on URL`. Ctrl-C or
/// SIGTERM stops the broker after the requests in flight.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first). The
    /// confidential sidecar speaks only HTTPS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The broker's directory (created if missing): its database and the
    /// release CA certificate.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The master key (64 hex digits, mode 0600) that encrypts keys at
    /// rest and keys the audit log's MACs. Created when missing: keep it,
    /// the keys cannot be read without it.
    #[arg(long, value_name = "FILE")]
    master_key: PathBuf,
    /// A file holding the admin bearer token (at least 16 characters) that
    /// import and policy changes need. Without it they are all refused.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Trust attestation tokens from this issuer (its URL, as in the
    /// tokens' iss). Its keys are fetched from ISSUER/certs and refreshed,
    /// or read once from JWKS_FILE. Repeatable; at least one.
    #[arg(long = "trust", value_name = "ISSUER[=JWKS_FILE]", required = true)]
    trust: Vec<String>,
    /// Also trust this CA (PEM) when fetching JWKS over HTTPS, for a local
    /// attestation service with its own certificate.
    #[arg(long, value_name = "PEM")]
    trust_ca: Option<PathBuf>,
    /// Another name for the release-signing certificate (the endpoint
    /// string clients are configured with, such as broker.example:8443).
    /// Repeatable.
    #[arg(long = "name", value_name = "HOST[:PORT]")]
    names: Vec<String>,
    /// The base URL in key ids (kid). Default: the URL listened on.
    #[arg(long, value_name = "URL", value_parser = crate::attest::http_url)]
    vault_url: Option<String>,
    /// Requests per second the broker serves (then 429 with Retry-After).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    rate: u32,
    /// Requests accepted at once before the rate applies.
    #[arg(long, default_value_t = 200, value_name = "N")]
    burst: u32,
    /// Largest request body, in bytes (then 413).
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    max_body: usize,
}

/// Import a key into a Managed HSM or a confsum key broker.
///
/// The key's name, its vault and the release policy come from
/// importkeyconfig.json (the recipe's file: each inner list of claims is
/// one allOf branch under anyOf, with authority https://ENDPOINT). The key
/// is --key-file: for oct-HSM the raw key bytes (32 for encfs), for
/// RSA-HSM and EC-HSM a PKCS#8 PEM or DER private key.
///
/// The bearer token comes from --token-file, else $AZURE_ACCESS_TOKEN (for
/// `skr serve`: its admin token). A bearer_token inside the config file is
/// ignored: tokens do not belong in files that get shared.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ImportArgs {
    /// The recipe's importkeyconfig.json.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The key to import.
    #[arg(long, value_name = "K")]
    key_file: PathBuf,
    /// The HSM's URL. Default: https://KEY.AKV.ENDPOINT from --config.
    #[arg(long, value_name = "URL", value_parser = crate::attest::http_url)]
    hsm: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust this CA (PEM) for HTTPS and release signatures, such as
    /// `skr serve`'s STATE/release-ca.pem and the CA of its --tls-cert.
    /// Repeatable. Default: the public roots.
    #[arg(long = "ca", value_name = "PEM")]
    ca: Vec<PathBuf>,
    /// Make the release policy immutable: it can then never change.
    #[arg(long)]
    immutable: bool,
}

/// Release a key to an attestation token and unwrap it.
///
/// Sends {"target": TOKEN} to HSM/keys/NAME/release, as the confidential
/// sidecar does, checks the signed answer (signature, certificate chain to
/// a trusted CA, certificate named for the HSM's endpoint), and unwraps
/// the key with --private-key, whose public half the token's
/// x-ms-runtime.keys must hold.
///
/// The key is written only to --out (mode 0600; raw bytes for oct-HSM,
/// PKCS#8 DER for RSA and EC); without --out only what was released is
/// described.
///
/// Exit status: 0 released, 3 refused by the release policy or the token
/// check (HTTP 403), 1 for other errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ReleaseArgs {
    /// The key's name.
    #[arg(long, value_name = "NAME")]
    key: String,
    /// The attestation token: a file, `-` for standard input, or the token.
    #[arg(long, value_name = "T")]
    token: String,
    /// The wrapping private key (PEM, PKCS#8 or PKCS#1, RSA 2048-4096).
    #[arg(long, value_name = "P")]
    private_key: PathBuf,
    /// The HSM's URL.
    #[arg(long, value_name = "URL", value_parser = crate::attest::http_url,
          default_value = "https://localhost:8443")]
    hsm: String,
    /// Trust this CA (PEM) for HTTPS and release signatures, such as
    /// `skr serve`'s STATE/release-ca.pem and the CA of its --tls-cert.
    /// Repeatable. Default: the public roots.
    #[arg(long = "ca", value_name = "PEM")]
    ca: Vec<PathBuf>,
    /// A file holding the bearer token (else $AZURE_ACCESS_TOKEN), which a
    /// Managed HSM needs on releases too.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Ask for this wrapping algorithm (CKM_RSA_AES_KEY_WRAP,
    /// RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384). Default: none sent,
    /// as the sidecar does.
    #[arg(long, value_name = "ALG")]
    enc: Option<String>,
    /// Write the released key here.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

fn load_or_create_master(path: &Path) -> Result<MasterKey> {
    if path.exists() {
        return MasterKey::load_file(path)
            .with_context(|| format!("cannot use {} as the master key", path.display()));
    }
    let key = MasterKey::create_file(path)
        .with_context(|| format!("cannot create the master key {}", path.display()))?;
    eprintln!(
        "confsum: created master key {} (keep it: the broker's keys cannot be read without it)",
        path.display()
    );
    Ok(key)
}

fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{} is not text", path.display()))?;
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

fn authorities(a: &ServeArgs) -> Result<TrustedAuthorities> {
    let mut client = Client::builder();
    if let Some(ca) = &a.trust_ca {
        client = client
            .add_root_pem(&crate::fsio::read_input(ca)?)
            .with_context(|| format!("{} is not a PEM CA certificate", ca.display()))?;
    }
    let mut trusted = TrustedAuthorities::new(client.build());
    for trust in &a.trust {
        let (issuer, jwks_file) = match trust.split_once('=') {
            Some((issuer, file)) => (issuer, Some(file)),
            None => (trust.as_str(), None),
        };
        if crate::attest::http_url(issuer).is_err() {
            bail!("--trust {trust:?}: the issuer must be an http(s) URL");
        }
        trusted = match jwks_file {
            None => trusted.trust(issuer),
            Some(file) => {
                let jwks = Jwks::from_json(&crate::fsio::read_input(Path::new(file))?)
                    .with_context(|| format!("{file} is not a JWKS"))?;
                trusted.trust_jwks(issuer, jwks)
            }
        };
    }
    Ok(trusted)
}

pub(crate) fn serve(a: &ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&a.state)
        .with_context(|| format!("cannot create {}", a.state.display()))?;
    let master = load_or_create_master(&a.master_key)?;
    let trusted = authorities(a)?;

    let mut server = Server::bind(a.listen)?.limits(Limits::new().body_bytes(a.max_body).rate(
        RateLimit::new(a.burst, Duration::from_secs(1) / a.rate.max(1)),
    ));
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        let tls = TlsConfig::from_pem_files(cert, key)
            .with_context(|| format!("cannot use {} for HTTPS", cert.display()))?;
        server = server.tls(tls);
    }
    let url = server.url();
    let port = server.local_addr().port();

    let mut names = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let ip = server.local_addr().ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(format!("{ip}:{port}"));
        names.push(ip.to_string());
    }
    names.extend(a.names.iter().cloned());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (signer, ca) = SigningIdentity::generate_with_local_ca(&names, SystemTime::now())
        .context("cannot make the release-signing key")?;
    let ca_path = a.state.join(CA_FILE);
    let ca_out = Output::create(&ca_path, "--state", true)?;
    ca_out
        .file()
        .write_all(ca.cert_pem().as_bytes())
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    ca_out.commit([])?;

    let vault_url = a.vault_url.clone().unwrap_or_else(|| url.clone());
    let db = a.state.join(DB_FILE);
    let broker = Broker::open(&db, &master, signer, BrokerConfig::new(&vault_url))
        .with_context(|| format!("cannot open the broker database {}", db.display()))?;
    match &a.admin_token_file {
        Some(path) => broker
            .set_admin_token(&read_secret_file(path)?)
            .with_context(|| format!("cannot use the admin token in {}", path.display()))?,
        None => eprintln!(
            "confsum: WARNING: no --admin-token-file: every import and policy change is refused"
        ),
    }
    let issuers: Vec<String> = trusted.issuers().map(str::to_owned).collect();

    let mut stdout = crate::fsio::stdout();
    writeln!(stdout, "listening on {url}")?;
    writeln!(stdout, "release CA {}", ca_path.display())?;
    for issuer in &issuers {
        writeln!(stdout, "trusting attestation tokens from {issuer}")?;
    }
    stdout.flush()?;
    drop(stdout);
    server
        .serve_blocking(
            confsum_server::skr::router(Arc::new(broker), Arc::new(trusted)),
            confsum_server::shutdown_signal(),
        )
        .context("the key broker stopped")
}

fn hsm_client(url: &str, ca: &[PathBuf], token_file: Option<&Path>) -> Result<HsmClient> {
    let client = if ca.is_empty() {
        HsmClient::public_roots(url)?
    } else {
        let mut pem = Vec::new();
        for path in ca {
            pem.extend(crate::fsio::read_input(path)?);
            pem.push(b'\n');
        }
        HsmClient::with_ca_pem(url, &pem).context("cannot use --ca")?
    };
    let bearer = bearer_token(token_file)?;
    Ok(client.bearer(bearer))
}

pub(crate) fn import(a: &ImportArgs) -> Result<()> {
    let config = ImportKeyConfig::decode(&crate::fsio::read_input(&a.config)?)
        .with_context(|| format!("cannot read {}", a.config.display()))?;
    let placeholders = config.placeholders();
    if !placeholders.is_empty() {
        bail!(
            "{} still has placeholders: {}",
            a.config.display(),
            placeholders.join(", ")
        );
    }
    if config.key.akv.bearer_token.is_some() {
        eprintln!(
            "confsum: WARNING: ignoring key.akv.bearer_token in {}; use --token-file or \
             AZURE_ACCESS_TOKEN, and remove the token from the file",
            a.config.display()
        );
    }
    let policy = config.release_policy()?;
    let kty = KeyType::from_kty(config.key.kty.as_deref().unwrap_or("oct-HSM"))?;
    let key_bytes = zeroize::Zeroizing::new(crate::fsio::read_input(&a.key_file)?);
    let material = KeyMaterial::from_key_file(kty, &key_bytes)
        .with_context(|| format!("{} is not a {} key", a.key_file.display(), kty.hsm_name()))?;
    let mut jwk = material.to_import_jwk()?;
    if !config.key.key_ops.is_empty() {
        if let Some(map) = jwk.as_object_mut() {
            map.insert("key_ops".into(), serde_json::json!(config.key.key_ops));
        }
    }
    let request = ImportKeyRequest {
        key: jwk,
        hsm: Some(true),
        attributes: Some(ImportAttributes {
            enabled: Some(true),
            exportable: Some(true),
        }),
        release_policy: Some(ReleasePolicyBody {
            content_type: Some(confsum_skr::POLICY_CONTENT_TYPE.to_owned()),
            data: policy.encode_base64url(),
            immutable: Some(a.immutable),
        }),
        tags: None,
    };
    let url = match &a.hsm {
        Some(url) => url.clone(),
        None => format!("https://{}", config.key.akv.endpoint.trim_end_matches('/')),
    };
    let hsm = hsm_client(&url, &a.ca, a.token_file.as_deref())?;
    let bundle = hsm
        .import(&config.key.kid, &request)
        .with_context(|| format!("cannot import {} to {url}", config.key.kid))?;
    writeln!(
        crate::fsio::stdout(),
        "imported {} ({}) as {}",
        config.key.kid,
        bundle.key.kty,
        bundle.key.kid
    )?;
    Ok(())
}

pub(crate) fn release(a: &ReleaseArgs) -> Result<ExitCode> {
    let output = a
        .out
        .as_ref()
        .map(|path| Output::create(path, "--out", a.force))
        .transpose()?;
    let token = crate::attest::token_text(&a.token)?;
    let pem = zeroize::Zeroizing::new(
        String::from_utf8(crate::fsio::read_input(&a.private_key)?)
            .context("the private key is not PEM text")?,
    );
    let private = WrappingPrivateKey::from_pem(&pem)
        .with_context(|| format!("{} is not an RSA private key", a.private_key.display()))?;
    if let Some(enc) = &a.enc {
        WrapAlgorithm::from_name(enc)?;
    }
    let hsm = hsm_client(&a.hsm, &a.ca, a.token_file.as_deref())?;
    let request = ReleaseRequest {
        target: token.trim().to_owned(),
        enc: a.enc.clone(),
        nonce: None,
    };
    let released = match hsm.release_request(&a.key, &request) {
        Ok(released) => released,
        Err(confsum_server::Error::Status {
            status: 403, error, ..
        }) => {
            eprintln!(
                "confsum: the key broker refused to release {}: {}",
                a.key,
                error.map_or_else(|| "forbidden".to_owned(), |e| e.message)
            );
            return Ok(ExitCode::from(crate::skr::EXIT_DENIED));
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot release {} from {}", a.key, a.hsm));
        }
    };
    let key = released
        .unwrap(&private)
        .context("the released key does not unwrap with --private-key")?;
    let mut out = crate::fsio::stdout();
    match (output, &a.out) {
        (Some(output), Some(path)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                output
                    .file()
                    .set_permissions(std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            output
                .file()
                .write_all(&key)
                .with_context(|| format!("cannot write {}", path.display()))?;
            output.commit([])?;
            writeln!(
                out,
                "released {} ({}, {} bytes, {}) from {} to {}",
                a.key,
                released.kty(),
                key.len(),
                released.enc,
                hsm_endpoint(&a.hsm),
                path.display()
            )?;
        }
        _ => writeln!(
            out,
            "released {} ({}, {} bytes, {}) from {}; not saved (give --out)",
            a.key,
            released.kty(),
            key.len(),
            released.enc,
            hsm_endpoint(&a.hsm)
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
