//! `confsum attest`: check SEV-SNP evidence and attestation tokens offline.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use confsum_attest::{
    AttestationReport, CertChain, INSECURE_WARNING, InsecureEmulatedTee, Jwks, Service,
    TokenIssuer, TokenVerifier, TrustedRoots, ValidationOptions, Verifier, validate,
};
use confsum_server::{Client, Server, TlsConfig};

use crate::fsio::Output;

/// SEV-SNP attestation reports and attestation tokens.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Show(ShowArgs),
    Verify(VerifyArgs),
    #[command(subcommand)]
    Token(TokenCommand),
    Serve(ServeArgs),
    Emulate(EmulateArgs),
}

/// Run a local attestation service (MAA-compatible, SEV-SNP).
///
/// POST /attest/SevSnpVM?api-version=2020-10-01 verifies the evidence and
/// answers {"token": JWT}; GET /certs serves the signing keys (JWKS).
/// Requests are accepted in the shape the confidential sidecar sends them.
/// The signing key is fresh at every start. Tokens never claim
/// azure-compliant-uvm: UVM endorsements are not checked.
///
/// The first line on standard output is `listening on URL`. Ctrl-C or
/// SIGTERM stops the service after the requests in flight.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// The tokens' issuer (`iss`), which relying parties compare with the
    /// authority they trust. Default: the URL listened on.
    #[arg(long, value_name = "URL", value_parser = http_url)]
    issuer: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// INSECURE: also accept evidence from the emulated TEE whose state is
    /// --insecure-state. Such tokens prove nothing and say so
    /// (x-confsum-insecure-emulated).
    #[arg(long, requires = "insecure_state")]
    insecure_emulated_tee: bool,
    /// The emulated TEE's state file (see `attest emulate --state`);
    /// created when missing.
    #[arg(long, value_name = "FILE", requires = "insecure_emulated_tee")]
    insecure_state: Option<PathBuf>,
}

/// INSECURE: produce emulated SEV-SNP evidence that proves nothing.
///
/// Writes a report signed by an emulated VCEK and the chain VCEK, ASK, ARK
/// (PEM). It verifies only where the emulated ARK is trusted, such as
/// `attest serve --insecure-emulated-tee --insecure-state` with the same
/// state file.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct EmulateArgs {
    /// The emulated TEE's state (private keys and certificates, PEM);
    /// created when missing.
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// REPORT_DATA, 128 hex digits.
    #[arg(long, value_name = "HEX", value_parser = hex_array::<64>)]
    report_data: [u8; 64],
    /// HOST_DATA, 64 hex digits.
    #[arg(long, value_name = "HEX", value_parser = hex_array::<32>)]
    host_data: [u8; 32],
    /// Where to write the 1184-byte report.
    #[arg(long, value_name = "R")]
    out_report: PathBuf,
    /// Where to write the PEM chain (VCEK, ASK, ARK).
    #[arg(long, value_name = "C")]
    out_certs: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
}

/// Print the fields of an attestation report.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The 1184-byte report (`-` for standard input).
    report: PathBuf,
}

/// Verify an attestation report against AMD's roots, then check its fields.
///
/// The signature is checked with the VCEK (or VLEK), the chain VCEK → ASK →
/// ARK up to a built-in AMD root (Milan, Genoa, Turin), and every
/// certificate's validity at the current time. Then the options below are
/// checked; a debuggable guest is refused unless --allow-debug. Exit status
/// 0 only when everything holds; each failure names the field and both
/// values.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct VerifyArgs {
    /// The 1184-byte report.
    #[arg(long, value_name = "R")]
    report: PathBuf,
    /// Certificates: THIM JSON (vcekCert, certificateChain) or a PEM bundle.
    #[arg(long, value_name = "C")]
    certs: PathBuf,
    /// Expected HOST_DATA, 64 hex digits (on ACI: SHA-256 of the CCE policy).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<32>)]
    host_data: Option<[u8; 32]>,
    /// Expected REPORT_DATA, 128 hex digits.
    #[arg(long, value_name = "HEX", value_parser = hex_array::<64>)]
    report_data: Option<[u8; 64]>,
    /// Accept a guest whose policy allows debugging.
    #[arg(long)]
    allow_debug: bool,
    /// Expected VMPL.
    #[arg(long)]
    vmpl: Option<u32>,
    /// An acceptable launch measurement (96 hex digits); repeat for several.
    #[arg(long = "measurement", value_name = "HEX", value_parser = hex_array::<48>)]
    measurements: Vec<[u8; 48]>,
}

/// Attestation tokens (MAA-compatible JWTs).
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    Verify(TokenVerifyArgs),
}

/// Verify an attestation token and print its claims as JSON.
///
/// Checks the RS256 signature with the key the token names, the issuer, and
/// exp/nbf against the current time with some clock skew allowed.
#[derive(Debug, Args)]
pub(crate) struct TokenVerifyArgs {
    /// The token, a file holding it, or `-` for standard input.
    token: String,
    /// The issuer's JWKS (its `/certs` document): a file or an http(s) URL.
    /// Keys published only as x5c certificates (as MAA does) are used too.
    #[arg(long, value_name = "URL|FILE")]
    jwks: String,
    /// Also trust this CA (PEM) when fetching --jwks over HTTPS, for a local
    /// service with its own certificate.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// The expected issuer (`iss`), e.g. https://sharedeus.eus.attest.azure.net.
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// Clock skew to allow, in seconds.
    #[arg(long, default_value_t = 60)]
    leeway: u64,
}

pub(crate) fn http_url(s: &str) -> Result<String, String> {
    if (s.starts_with("https://") || s.starts_with("http://")) && !s.contains(char::is_whitespace) {
        Ok(s.to_owned())
    } else {
        Err("expected an http:// or https:// URL".to_owned())
    }
}

fn hex_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected {N}", b.len()))
}

pub(crate) fn run(command: &Command) -> Result<()> {
    match command {
        Command::Show(a) => show(a),
        Command::Verify(a) => verify(a),
        Command::Token(TokenCommand::Verify(a)) => token_verify(a),
        Command::Serve(a) => serve(a),
        Command::Emulate(a) => emulate(a),
    }
}

/// Loads the emulated TEE from `path`, or makes one and saves it there
/// (readable by the owner only).
fn load_or_create_tee(path: &Path) -> Result<InsecureEmulatedTee> {
    if path.exists() {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return InsecureEmulatedTee::from_insecure_state_pem(&pem)
            .with_context(|| format!("{} is not an emulated TEE state", path.display()));
    }
    let tee = InsecureEmulatedTee::generate()?;
    let pem = tee.to_insecure_state_pem()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    io::Write::write_all(&mut file, pem.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(tee)
}

fn serve(a: &ServeArgs) -> Result<()> {
    let mut roots = TrustedRoots::amd();
    if let (Some(path), true) = (&a.insecure_state, a.insecure_emulated_tee) {
        roots.add_insecure_root(&load_or_create_tee(path)?.insecure_ark_der()?)?;
    }
    let mut server = Server::bind(a.listen)?;
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        let tls = TlsConfig::from_pem_files(cert, key)
            .with_context(|| format!("cannot use {} for HTTPS", cert.display()))?;
        server = server.tls(tls);
    }
    let url = server.url();
    let issuer = a.issuer.clone().unwrap_or_else(|| url.clone());
    let service = Service::new(TokenIssuer::generate(&issuer)?, roots);
    if service.accepts_insecure() {
        eprintln!(
            "{INSECURE_WARNING}\n\
             WARNING: this attestation service also accepts evidence from the emulated TEE; \
             tokens for it prove nothing about hardware (they carry x-confsum-insecure-emulated)"
        );
    }
    let mut stdout = crate::fsio::stdout();
    writeln!(stdout, "listening on {url}")?;
    writeln!(stdout, "issuer {issuer}")?;
    stdout.flush()?;
    drop(stdout);
    server
        .serve_blocking(
            confsum_server::attest::router(service),
            confsum_server::shutdown_signal(),
        )
        .context("the attestation service stopped")
}

fn emulate(a: &EmulateArgs) -> Result<()> {
    eprintln!("{INSECURE_WARNING}");
    if crate::fsio::same_file(&a.out_report, &a.out_certs) {
        crate::usage_error(
            &["attest", "emulate"],
            "--out-report and --out-certs name the same file",
        );
    }
    let report_out = Output::create(&a.out_report, "--out-report", a.force)?;
    let certs_out = Output::create(&a.out_certs, "--out-certs", a.force)?;
    let tee = load_or_create_tee(&a.state)?;
    let report = tee.report(&a.report_data, &a.host_data);
    let write = |out: &Output, data: &[u8], path: &Path| {
        out.file()
            .write_all(data)
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(&report_out, &report, &a.out_report)?;
    write(&certs_out, tee.cert_chain_pem()?.as_bytes(), &a.out_certs)?;
    // Both or neither: the certificates are committed together with the report.
    report_out.commit([])?;
    certs_out.commit([])
}

fn show(a: &ShowArgs) -> Result<()> {
    let report = AttestationReport::parse(&crate::fsio::read_input(&a.report)?)
        .with_context(|| format!("{} is not an attestation report", a.report.display()))?;
    write!(crate::fsio::stdout(), "{}", report.describe())?;
    Ok(())
}

fn load_chain(path: &Path) -> Result<CertChain> {
    CertChain::from_bytes(&crate::fsio::read_input(path)?)
        .with_context(|| format!("cannot read certificates from {}", path.display()))
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let report = crate::fsio::read_input(&a.report)?;
    let chain = load_chain(&a.certs)?;
    let verified = Verifier::new(TrustedRoots::amd())
        .verify(&report, &chain, SystemTime::now())
        .context("the report does not verify")?;
    let mut options = ValidationOptions::new();
    options.host_data = a.host_data;
    options.report_data = a.report_data;
    options.allow_debug = a.allow_debug;
    options.vmpl = a.vmpl;
    options.measurements = (!a.measurements.is_empty()).then(|| a.measurements.clone());
    validate(verified.report(), &options).context("the report verifies but does not validate")?;
    let product = verified.product().map_or("unknown", |p| p.name());
    writeln!(
        crate::fsio::stdout(),
        "ok: signed by the {} of an AMD {product}, host_data {}",
        verified.signing_key().name(),
        hex::encode(verified.report().host_data)
    )?;
    Ok(())
}

fn token_verify(a: &TokenVerifyArgs) -> Result<()> {
    let jwks = if a.jwks.starts_with("http://") || a.jwks.starts_with("https://") {
        let mut client = Client::builder();
        if let Some(ca) = &a.ca {
            client = client
                .add_root_pem(&crate::fsio::read_input(ca)?)
                .with_context(|| format!("{} is not a PEM CA certificate", ca.display()))?;
        }
        client.build().fetch_jwks(&a.jwks)?
    } else {
        Jwks::from_json(&crate::fsio::read_input(Path::new(&a.jwks))?)
            .with_context(|| format!("{} is not a JWKS", a.jwks))?
    };
    let token = token_text(&a.token)?;
    let claims = TokenVerifier::new(jwks, &a.issuer)
        .leeway(Duration::from_secs(a.leeway))
        .verify(token.trim(), SystemTime::now())
        .context("the token does not verify")?;
    writeln!(
        crate::fsio::stdout(),
        "{}",
        serde_json::to_string_pretty(&claims)?
    )?;
    Ok(())
}

/// A token given on the command line: `-` (standard input), a file, or the
/// token itself. A compact JWS is base64url and dots, never a `/`, so an
/// argument with a `/` is always a path.
pub(crate) fn token_text(arg: &str) -> Result<String> {
    let path = Path::new(arg);
    let looks_like_token = arg.split('.').count() == 3
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='));
    if arg == "-" || path.exists() || !looks_like_token {
        let bytes = crate::fsio::read_input(path)?;
        return String::from_utf8(bytes).with_context(|| format!("{arg} is not text"));
    }
    Ok(arg.to_owned())
}
