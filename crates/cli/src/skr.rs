//! `confsum skr`: release policies, the key broker (`serve`) and its
//! client (`import`, `release`), and the broker's audit log.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use confsum_skr::{
    BranchFailure, ClaimCondition, Decision, ImportKeyConfig, MasterKey, ReleasePolicy,
    verify_audit_db, verify_audit_jsonl,
};
use serde_json::Value;

use crate::fsio::Output;

/// Exit status of `skr check` when the policy refuses the token.
pub(crate) const EXIT_DENIED: u8 = 3;

/// Secure key release: release policies and the key broker's audit log.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Policy(PolicyArgs),
    Check(CheckArgs),
    Serve(crate::skr_http::ServeArgs),
    Import(crate::skr_http::ImportArgs),
    Release(crate::skr_http::ReleaseArgs),
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Write a release policy for a confidential container.
///
/// The policy has the recipe's claims: x-ms-sevsnpvm-hostdata = HOST_DATA,
/// x-ms-compliance-status = azure-compliant-uvm,
/// x-ms-sevsnpvm-is-debuggable = "false" and x-ms-sevsnpvm-vmpl = "0"
/// (written as strings, as Azure's import tool writes them), plus any
/// --claim. It is one allOf branch under the given authority, in Managed
/// HSM's grammar (version 1.0.0).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct PolicyArgs {
    /// The workload's host_data: SHA-256 of its CCE policy, 64 hex digits.
    #[arg(long, value_name = "HEX")]
    host_data: String,
    /// The attestation service whose tokens are accepted
    /// (https://sharedeus.eus.attest.azure.net; a bare host means https).
    #[arg(long, value_name = "URL")]
    authority: String,
    /// Another claim that must equal a value (string comparison), such as
    /// x-ms-sevsnpvm-guestsvn=2. Repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Write the policy here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Print the base64url form (Key Vault's release_policy.data) instead
    /// of JSON.
    #[arg(long)]
    base64url: bool,
}

/// Explain whether a token would get a key, without calling any service.
///
/// Reads the release policy (policy JSON, its base64url form, or an
/// importkeyconfig.json) and the attestation token (a JWT), and evaluates
/// the policy on the token's claims: allowed, or which claim of which
/// branch failed, with the expected and the actual value.
///
/// Without --jwks the token's signature, issuer and expiry are NOT
/// verified: the answer only says what the policy would decide if the
/// token is genuine. With --jwks the token is verified first, and the
/// policy then sees the claims confsum-attest reads from it (MAA's
/// SevSnpVM claims; others are dropped).
///
/// Exit status: 0 if the policy releases the key, 3 if it refuses, 1 on
/// errors (unreadable files, a token that fails verification).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CheckArgs {
    /// The release policy file ('-' for standard input).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The attestation token file ('-' for standard input).
    #[arg(long, value_name = "FILE")]
    token: PathBuf,
    /// Verify the token against this JWKS (the attestation service's
    /// /certs document) before evaluating.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// With --jwks: the issuer the token must have (default: the token's
    /// own iss, so the JWKS is the only trust anchor).
    #[arg(long, value_name = "URL", requires = "jwks")]
    issuer: Option<String>,
}

/// The key broker's audit log.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    Verify(AuditVerifyArgs),
}

/// Verify a key broker's audit log: a broker database, or an exported log
/// (JSON lines).
///
/// Checks that records are numbered 0, 1, 2, … and that each names the
/// hash of the one before, so that a record changed, removed or moved is
/// found. With --master-key it also checks every record's MAC and the
/// signed head, which catches a rewritten chain and records cut off the
/// end; without it, it says so.
///
/// Exit status: 0 if the log verifies, 1 if not.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct AuditVerifyArgs {
    /// The broker database (stop the broker first) or the exported log.
    #[arg(value_name = "LOG|DB")]
    log: PathBuf,
    /// The broker's master key file.
    #[arg(long, value_name = "FILE")]
    master_key: Option<PathBuf>,
}

pub(crate) fn run(command: &Command) -> Result<ExitCode> {
    match command {
        Command::Policy(a) => policy(a).map(|()| ExitCode::SUCCESS),
        Command::Check(a) => check(a),
        Command::Serve(a) => crate::skr_http::serve(a).map(|()| ExitCode::SUCCESS),
        Command::Import(a) => crate::skr_http::import(a).map(|()| ExitCode::SUCCESS),
        Command::Release(a) => crate::skr_http::release(a),
        Command::Audit(AuditCommand::Verify(a)) => audit_verify(a).map(|()| ExitCode::SUCCESS),
    }
}

fn policy(a: &PolicyArgs) -> Result<()> {
    let host_data = a.host_data.trim().to_ascii_lowercase();
    if host_data.len() != 64 || !host_data.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--host-data must be 64 hex digits (SHA-256 of the CCE policy)");
    }
    let authority = if a.authority.contains("://") {
        a.authority.clone()
    } else {
        format!("https://{}", a.authority)
    };
    if !authority.starts_with("https://") && !authority.starts_with("http://") {
        bail!("--authority must be an http(s) URL or a host name");
    }
    let mut claims = vec![
        ClaimCondition::equals("x-ms-sevsnpvm-hostdata", host_data),
        ClaimCondition::equals("x-ms-compliance-status", "azure-compliant-uvm"),
        ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
        ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
    ];
    for claim in &a.claims {
        let Some((name, value)) = claim.split_once('=') else {
            bail!("--claim {claim:?}: expected NAME=VALUE");
        };
        if name.is_empty() {
            bail!("--claim {claim:?}: empty claim name");
        }
        claims.retain(|c| c.claim != name);
        claims.push(ClaimCondition::equals(name, value));
    }
    let policy = ReleasePolicy::all_of(&authority, vec![claims]);
    let mut text = if a.base64url {
        policy.encode_base64url().into_bytes()
    } else {
        serde_json::to_vec_pretty(&policy.to_json()).context("cannot encode the policy")?
    };
    text.push(b'\n');
    match &a.out {
        Some(path) => {
            let output = Output::create(path, "--out", a.force)?;
            output
                .file()
                .write_all(&text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            output.commit([])
        }
        None => Ok(crate::fsio::stdout().write_all(&text)?),
    }
}

/// Reads a policy from policy JSON, its base64url form, or an
/// importkeyconfig.json.
fn read_policy(bytes: &[u8]) -> Result<ReleasePolicy> {
    let text = std::str::from_utf8(bytes).context("the policy is not UTF-8")?;
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return ReleasePolicy::decode_base64url(trimmed)
            .context("not a release policy (JSON or base64url)");
    }
    let value: Value = serde_json::from_str(trimmed).context("the policy is not JSON")?;
    if value.get("claims").is_some() && value.get("key").is_some() {
        let config =
            ImportKeyConfig::decode(trimmed.as_bytes()).context("bad importkeyconfig.json")?;
        return config
            .release_policy()
            .context("importkeyconfig.json gives no policy");
    }
    ReleasePolicy::from_json(&value).context("not a release policy")
}

fn check(a: &CheckArgs) -> Result<ExitCode> {
    let mut out = crate::fsio::stdout();
    let policy = read_policy(&crate::fsio::read_input(&a.policy)?)?;
    let token_bytes = crate::fsio::read_input(&a.token)?;
    let token = std::str::from_utf8(&token_bytes)
        .context("the token is not text")?
        .trim();
    let claims = match &a.jwks {
        None => {
            eprintln!(
                "confsum: WARNING: the token's signature, issuer and expiry are NOT verified \
                 (give --jwks to verify them); this only says what the policy would decide"
            );
            unverified_claims(token)?
        }
        Some(jwks_path) => {
            let jwks_json = crate::fsio::read_input(jwks_path)?;
            let jwks = confsum_attest::Jwks::from_json(&jwks_json)
                .with_context(|| format!("{} is not a JWKS", jwks_path.display()))?;
            let issuer = match &a.issuer {
                Some(i) => i.clone(),
                None => {
                    confsum_skr::unverified_issuer(token).context("the token has no iss claim")?
                }
            };
            let verified = confsum_attest::TokenVerifier::new(jwks, &issuer)
                .verify(token, SystemTime::now())
                .context("the token does not verify")?;
            writeln!(
                out,
                "token verified: signed by the JWKS, issuer {issuer}, within its validity"
            )?;
            match serde_json::to_value(&verified).context("cannot read the claims")? {
                Value::Object(map) => map,
                _ => bail!("the token's claims are not an object"),
            }
        }
    };
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .context("the token has no iss claim")?
        .to_owned();
    match policy.evaluate(&issuer, &claims) {
        Decision::Allowed { branch } => {
            writeln!(
                out,
                "ALLOWED: branch {branch} (authority {}) is satisfied",
                policy
                    .any_of
                    .get(branch)
                    .map_or("?", |b| b.authority.as_str())
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Decision::Denied(denial) => {
            writeln!(out, "DENIED: no branch of the policy is satisfied")?;
            for branch in &denial.branches {
                writeln!(
                    out,
                    "  branch {} (authority {}):",
                    branch.index, branch.authority
                )?;
                match &branch.reason {
                    BranchFailure::WrongAuthority { issuer } => {
                        writeln!(out, "    the token's issuer {issuer} is not this authority")?;
                    }
                    BranchFailure::Claims(failures) => {
                        for f in failures {
                            let actual = f
                                .actual
                                .as_ref()
                                .map_or_else(|| "(absent)".to_owned(), Value::to_string);
                            writeln!(
                                out,
                                "    {} {} {}: actual {actual} ({})",
                                f.claim,
                                f.operator,
                                f.expected,
                                match f.kind {
                                    confsum_skr::FailureKind::Missing => "claim absent",
                                    confsum_skr::FailureKind::Present => "claim present",
                                    confsum_skr::FailureKind::Mismatch => "differs",
                                    confsum_skr::FailureKind::TypeMismatch => "cannot compare",
                                    _ => "failed",
                                }
                            )?;
                        }
                    }
                }
            }
            Ok(ExitCode::from(EXIT_DENIED))
        }
    }
}

/// The payload of a JWT, without any verification.
fn unverified_claims(token: &str) -> Result<serde_json::Map<String, Value>> {
    let payload = token
        .split('.')
        .nth(1)
        .context("the token is not a JWT (header.payload.signature)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the token's payload is not base64url")?;
    match serde_json::from_slice(&bytes).context("the token's payload is not JSON")? {
        Value::Object(map) => Ok(map),
        _ => bail!("the token's payload is not a JSON object"),
    }
}

fn audit_verify(a: &AuditVerifyArgs) -> Result<()> {
    let master = a
        .master_key
        .as_deref()
        .map(|p| MasterKey::load_file(p).with_context(|| format!("cannot load {}", p.display())))
        .transpose()?;
    let mut head = [0u8; 1];
    {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&a.log)
            .with_context(|| format!("cannot open {}", a.log.display()))?;
        let n = file
            .read(&mut head)
            .with_context(|| format!("cannot read {}", a.log.display()))?;
        if n == 0 {
            bail!("{} is empty", a.log.display());
        }
    }
    let report = if head[0] == b'{' {
        let text =
            std::fs::read(&a.log).with_context(|| format!("cannot read {}", a.log.display()))?;
        let key = master.as_ref().map(MasterKey::audit_key);
        verify_audit_jsonl(&text, key.as_ref())
    } else {
        verify_audit_db(&a.log, master.as_ref())
    }
    .with_context(|| format!("{} does not verify", a.log.display()))?;
    let mut out = crate::fsio::stdout();
    writeln!(
        out,
        "audit log OK: {} records, hash chain intact; MACs {}; head {}",
        report.records,
        if report.macs_checked {
            "verified"
        } else {
            "NOT checked (no --master-key)"
        },
        match (report.head_checked, report.macs_checked) {
            (true, true) => "verified (nothing cut off the end)",
            (true, false) => "matches (its MAC not checked)",
            (false, _) => "absent (records cut off the end would not show)",
        }
    )?;
    Ok(())
}
