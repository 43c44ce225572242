//! `confsum serve` (the workload as a service) and `confsum client` (the
//! consumer, who verifies before trusting). The logic is in
//! `confsum-workload`; this module reads arguments and prints.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use confsum_attest::{INSECURE_WARNING, InsecureEmulatedTee, Jwks};
use confsum_server::{Client, HsmClient, Limits, RateLimit, Server, bearer_token};
use confsum_workload::{
    Expectations, HsmKeyRelease, HttpAttestation, InsecureEmulatedEvidence, KeyDerivation,
    ServiceConfig, StartOptions, Step, SummariesRequest, Verification, Workload, WorkloadClient,
    verify_attestation,
};

/// The exit status of a refused verification (distinct from errors, 1,
/// and usage errors, 2).
const REFUSED: u8 = 3;

/// Run the confidential summarization workload as an HTTP service.
///
/// At start-up it makes two ephemeral keys (RSA key-release key,
/// key_ops ["encrypt"]; ES256 response-signing key, key_ops ["verify"]),
/// publishes both in its attestation runtime data, gets a token from
/// --attest, has key --key released by --broker (checking the broker's
/// signature with --broker-ca), unwraps it, opens --image in userspace,
/// and loads --model. Then it serves:
///
///   GET  /v1/attestation  token, evidence and runtime data
///   GET  /v1/documents    document ids and sizes (signed)
///   POST /v1/summaries    {"documents":[ids],"texts":[text]} (signed);
///                         requests are batched together
///   GET  /healthz, /readyz
///   GET  /                the consumer's web page: it verifies the
///                         token (against ISSUER/certs) and every signed
///                         answer in the browser, against the host_data
///                         the user pins (?host_data=HEX&issuer=URL)
///
/// Signed answers are flattened JWS (ES256) with the attested signing key;
/// `confsum client` verifies them. It keeps no state beyond the image.
///
/// Evidence: only --insecure-emulated-tee is available here; reading
/// SEV-SNP reports from hardware is not implemented.
///
/// The first line on standard output is `listening on URL`, printed once
/// the workload is ready. Ctrl-C or SIGTERM stops it after the requests
/// in flight.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: SocketAddr,
    /// The sealed image (LUKS2, from `confsum encfs seal`).
    #[arg(long, value_name = "IMG")]
    image: PathBuf,
    /// The model checkpoint folder (T5 or BART).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The attestation service's base URL.
    #[arg(long, value_name = "URL")]
    attest: String,
    /// The key broker's base URL (Managed HSM or `confsum skr serve`).
    #[arg(long, value_name = "URL")]
    broker: String,
    /// The key's name at the broker.
    #[arg(long, value_name = "NAME")]
    key: String,
    /// CA certificate (PEM) the broker's release signatures (and HTTPS)
    /// chain to; the signing certificate must name --broker's host[:port],
    /// as the sidecar checks.
    #[arg(long, value_name = "PEM")]
    broker_ca: PathBuf,
    /// A file holding the bearer token for the broker (Managed HSM's AAD
    /// token). Default: $AZURE_ACCESS_TOKEN, if set.
    #[arg(long, value_name = "FILE")]
    broker_token_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) for the attestation service's HTTPS.
    #[arg(long, value_name = "PEM")]
    attest_ca: Option<PathBuf>,
    /// Salt (hex) for deriving the disk key from a released RSA key.
    #[arg(long, default_value = "", value_name = "HEX")]
    key_salt: String,
    /// Label for deriving the disk key from a released RSA key.
    #[arg(long, default_value = "", value_name = "TEXT")]
    key_label: String,
    /// INSECURE: take evidence from the emulated TEE whose state is
    /// --insecure-state. Its evidence proves nothing.
    #[arg(long, requires_all = ["insecure_state", "insecure_host_data"])]
    insecure_emulated_tee: bool,
    /// The emulated TEE's state file (see `attest emulate --state`).
    #[arg(long, value_name = "FILE", requires = "insecure_emulated_tee")]
    insecure_state: Option<PathBuf>,
    /// The host_data the emulated platform reports: 64 hex digits, or a
    /// CCE policy / ARM template to hash, as ACI does.
    #[arg(long, value_name = "HEX|POLICY", requires = "insecure_emulated_tee")]
    insecure_host_data: Option<String>,
    /// A note every answer carries (such as "not a real summary").
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// The most texts summarized in one batch.
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_batch: usize,
    /// Requests per second for the whole process (default: no limit).
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    max_body: usize,
}

/// The consumer: verify a workload before trusting it.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    Verify(VerifyArgs),
    Summarize(SummarizeArgs),
}

/// What the consumer trusts and expects.
#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// The workload's base URL.
    url: String,
    /// The agreed CCE policy: its host_data (64 hex digits), or a policy
    /// file or ARM template whose policy is hashed.
    #[arg(long, value_name = "TEMPLATE_OR_HASH")]
    policy: String,
    /// The attestation service whose tokens are trusted (`iss`, exactly).
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// The attestation service's signing keys: a URL or a JWKS file.
    /// Default: ISSUER/certs.
    #[arg(long, value_name = "URL|FILE")]
    jwks: Option<String>,
    /// An extra CA certificate (PEM) for HTTPS.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// INSECURE: accept evidence from the emulated TEE, which proves
    /// nothing about hardware.
    #[arg(long)]
    allow_insecure_emulated: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Check a workload's attestation, and say why it is trusted or refused.
///
/// Checks the token's signature against the attestation service's keys,
/// its issuer and validity, host_data = the policy's hash, debug off,
/// VMPL 0, hardware evidence (unless --allow-insecure-emulated), that
/// report_data commits to the runtime keys and the evidence shown is the
/// token's, and that a response-signing key is attested.
///
/// Exit status: 0 trusted, 3 refused, 1 error (such as no connection).
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    trust: TrustArgs,
}

/// Verify a workload, then ask it for summaries, and show only answers
/// its attested key signed.
///
/// Exit status: 0 summaries shown, 3 refused (the workload or an answer
/// is not verified), 1 error.
#[derive(Debug, Args)]
pub(crate) struct SummarizeArgs {
    #[command(flatten)]
    trust: TrustArgs,
    /// A document id (repeatable).
    #[arg(long = "document", value_name = "ID")]
    documents: Vec<String>,
    /// Every document the workload holds.
    #[arg(long, conflicts_with = "documents")]
    all: bool,
    /// A text file to upload and summarize (repeatable; `-` = stdin).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
}

pub(crate) fn serve(a: &ServeArgs) -> Result<ExitCode> {
    let (Some(state), Some(host_data), true) = (
        &a.insecure_state,
        &a.insecure_host_data,
        a.insecure_emulated_tee,
    ) else {
        bail!(
            "no evidence source: reading SEV-SNP reports from hardware is not implemented; \
             use --insecure-emulated-tee for local runs"
        );
    };
    eprintln!(
        "{INSECURE_WARNING}\nWARNING: this workload's evidence comes from the emulated TEE; \
         its attestation proves nothing about hardware"
    );
    let tee_pem = std::fs::read_to_string(state)
        .with_context(|| format!("cannot read {}", state.display()))?;
    let tee = InsecureEmulatedTee::from_insecure_state_pem(&tee_pem)
        .with_context(|| format!("{} is not an emulated TEE state", state.display()))?;
    let evidence = InsecureEmulatedEvidence::new(tee, host_data_arg(host_data)?);

    let attest_client = http_client(a.attest_ca.as_deref())?;
    let attestation = HttpAttestation::new(attest_client, &a.attest);
    let ca_pem = crate::fsio::read_input(&a.broker_ca)?;
    let hsm = HsmClient::with_ca_pem(&a.broker, &ca_pem)
        .with_context(|| format!("cannot use {} as the broker's CA", a.broker_ca.display()))?
        .bearer(bearer_token(a.broker_token_file.as_deref())?);
    let release = HsmKeyRelease::new(hsm, &a.key);

    let server = Server::bind(a.listen)?;
    let mut limits = Limits::new().body_bytes(a.max_body);
    if let Some(rate) = a.rate {
        limits = limits.rate(RateLimit::per_second(rate));
    }
    let server = server.limits(limits);

    let workload = Workload::start(
        StartOptions {
            evidence: &evidence,
            attestation: &attestation,
            release: &release,
            derivation: KeyDerivation {
                salt_hex: a.key_salt.clone(),
                label: a.key_label.clone(),
            },
            image: a.image.clone(),
            model: a.model.clone(),
            load: confsum_summarize::LoadOptions::default(),
        },
        &mut |step| eprintln!("workload: {}", describe(&step)),
    )
    .context("the workload did not start")?;
    let model = a.model.file_name().map_or_else(
        || a.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut config = ServiceConfig::new(&model).max_batch(a.max_batch);
    if let Some(note) = &a.note {
        config = config.note(note);
    }
    let service = workload.into_service(config);
    let mut out = crate::fsio::stdout();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()?;
    drop(out);
    server
        .serve_blocking(
            confsum_workload::router(service),
            confsum_server::shutdown_signal(),
        )
        .context("the workload stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// One start-up step for people.
pub(crate) fn describe(step: &Step) -> String {
    match step {
        Step::KeysGenerated {
            wrapping_kid,
            signing_kid,
        } => format!(
            "made an ephemeral RSA-2048 key-release key (kid {wrapping_kid}) and an ES256 \
             response-signing key (kid {signing_kid})"
        ),
        Step::Evidence {
            insecure,
            host_data,
        } => format!(
            "got {} evidence with host_data {host_data}, report_data = SHA-256 of both public keys",
            if *insecure {
                "INSECURE emulated"
            } else {
                "SEV-SNP"
            }
        ),
        Step::Attested => "the attestation service issued a token".to_owned(),
        Step::KeyReleased { kid } => {
            format!("the broker released key {kid}; its signature checked, the key unwrapped")
        }
        Step::ImageOpened { documents } => {
            format!("opened the sealed image in userspace: {documents} documents")
        }
        Step::ModelLoaded => "loaded the model".to_owned(),
        _ => format!("{step:?}"),
    }
}

fn http_client(ca: Option<&Path>) -> Result<Client> {
    let mut client = Client::builder();
    if let Some(ca) = ca {
        client = client
            .add_root_pem(&crate::fsio::read_input(ca)?)
            .with_context(|| format!("{} is not a PEM CA certificate", ca.display()))?;
    }
    Ok(client.build())
}

/// host_data from 64 hex digits, or the hash of the one policy in a file
/// (Rego, base64 Rego, or an ARM template).
pub(crate) fn host_data_arg(arg: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if arg.len() == 64 && hex::decode_to_slice(arg, &mut out).is_ok() {
        return Ok(out);
    }
    let path = Path::new(arg);
    let data = crate::fsio::read_input(path)?;
    let policies = confsum_policy::read_policy_input(&data)
        .with_context(|| format!("{arg} is neither 64 hex digits nor a CCE policy or template"))?;
    let [(_, text)] = policies.as_slice() else {
        bail!(
            "{arg} holds {} policies; give the host_data of the one you mean",
            policies.len()
        );
    };
    hex::decode_to_slice(confsum_policy::host_data(text.as_bytes()), &mut out)?;
    Ok(out)
}

fn fetch_and_verify(t: &TrustArgs) -> Result<(WorkloadClient, Verification)> {
    let host_data = host_data_arg(&t.policy)?;
    let http = http_client(t.ca.as_deref())?;
    let jwks_source = t
        .jwks
        .clone()
        .unwrap_or_else(|| format!("{}/certs", t.issuer.trim_end_matches('/')));
    let jwks = if jwks_source.starts_with("http://") || jwks_source.starts_with("https://") {
        http.fetch_jwks(&jwks_source).with_context(|| {
            format!("cannot fetch the attestation service's keys from {jwks_source}")
        })?
    } else {
        Jwks::from_json(&crate::fsio::read_input(Path::new(&jwks_source))?)
            .with_context(|| format!("{jwks_source} is not a JWKS"))?
    };
    let client = WorkloadClient::new(http, &t.url);
    let doc = client
        .attestation()
        .with_context(|| format!("cannot get the attestation of {}", t.url))?;
    let mut expect = Expectations::new(&t.issuer, jwks, host_data);
    expect.allow_insecure_emulated = t.allow_insecure_emulated;
    expect.leeway = Duration::from_secs(60);
    let verification = verify_attestation(&doc, &expect, SystemTime::now());
    let emulated = verification
        .claims
        .as_ref()
        .is_some_and(|c| c.insecure_emulated);
    if emulated && t.allow_insecure_emulated {
        eprintln!(
            "WARNING: {} runs on the INSECURE emulated TEE: its attestation proves nothing \
             about hardware (allowed by --allow-insecure-emulated)",
            t.url
        );
    }
    Ok((client, verification))
}

fn print_verification(t: &TrustArgs, v: &Verification) -> Result<()> {
    let mut out = crate::fsio::stdout();
    if t.json {
        writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
        return Ok(());
    }
    writeln!(out, "workload {}", t.url)?;
    for c in &v.checks {
        let mark = if c.passed { "ok  " } else { "FAIL" };
        if c.passed {
            writeln!(out, "  {mark} {}: {}", c.check.as_str(), c.actual)?;
        } else {
            writeln!(
                out,
                "  {mark} {}: expected {}, actual {}",
                c.check.as_str(),
                c.expected,
                c.actual
            )?;
        }
    }
    if v.trusted {
        writeln!(
            out,
            "trusted: the token is the attestation service's, the workload runs the agreed \
             policy (host_data) without debug at VMPL 0, and its answers are signed by an \
             attested key"
        )?;
    } else {
        writeln!(out, "REFUSED: {}", v.refusal())?;
    }
    Ok(())
}

pub(crate) fn client(command: &ClientCommand) -> Result<ExitCode> {
    match command {
        ClientCommand::Verify(a) => {
            let (_, v) = fetch_and_verify(&a.trust)?;
            print_verification(&a.trust, &v)?;
            Ok(if v.trusted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(REFUSED)
            })
        }
        ClientCommand::Summarize(a) => summarize(a),
    }
}

fn summarize(a: &SummarizeArgs) -> Result<ExitCode> {
    let (client, v) = fetch_and_verify(&a.trust)?;
    if !v.trusted {
        print_verification(&a.trust, &v)?;
        return Ok(ExitCode::from(REFUSED));
    }
    let verifier = v.trusted_verifier()?;
    let mut request = SummariesRequest::default();
    if a.all {
        match client.documents(verifier) {
            Ok(list) => request.documents = list.documents.into_iter().map(|d| d.id).collect(),
            Err(e @ confsum_workload::Error::Signature(_)) => {
                eprintln!("confsum: REFUSED the document list: {e}");
                return Ok(ExitCode::from(REFUSED));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        request.documents = a.documents.clone();
    }
    for path in &a.files {
        let bytes = crate::fsio::read_input(path)?;
        request.texts.push(
            String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?,
        );
    }
    if request.documents.is_empty() && request.texts.is_empty() {
        crate::usage_error(
            &["client", "summarize"],
            "nothing to summarize: give --document, --all or --file",
        );
    }
    let payload = match client.summarize(verifier, &request) {
        Ok(p) => p,
        Err(
            e @ (confsum_workload::Error::Signature(_) | confsum_workload::Error::RequestMismatch),
        ) => {
            eprintln!("confsum: REFUSED the answer: {e}");
            return Ok(ExitCode::from(REFUSED));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = crate::fsio::stdout();
    if a.trust.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&payload)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "verified: every summary below was signed by the attested key {} (model {})",
        verifier.kid(),
        payload.model
    )?;
    if let Some(note) = &payload.note {
        writeln!(out, "NOTE: {note}")?;
    }
    for s in &payload.summaries {
        let name = match (&s.document, s.text) {
            (Some(id), _) => id.clone(),
            (None, Some(i)) => a
                .files
                .get(i)
                .map_or_else(|| format!("text {i}"), |p| p.display().to_string()),
            (None, None) => "?".to_owned(),
        };
        writeln!(out, "== {name}")?;
        writeln!(out, "{}", s.summary)?;
    }
    Ok(ExitCode::SUCCESS)
}
