//! `confsum demo`: the whole confidential flow on one machine, narrated.
//!
//! Every party runs in this one process, on threads: the attestation
//! service and the key broker are `confsum-server`'s routers on loopback
//! ports, and each workload replica is `confsum-workload`'s router on its
//! own port, so every message between the parties really crosses HTTP, as
//! it would between machines. Threads rather than subprocesses because
//! then nothing can outlive the demo: Ctrl-C ends the process and every
//! server with it, and the one temporary directory is removed by the CLI's
//! interrupt handler (`fsio::Created`), so there is no child to reap and
//! no orphan to leave behind.
//!
//! What the demo ships lives in the binary, so that an installed `confsum`
//! needs nothing beside it: the documents of `examples/documents/`, the
//! workload image's files of `examples/workload/` and the tiny BART test
//! checkpoint of `crates/summarize/testdata/bart` (about 440 KB), all with
//! `include_bytes!`.
//!
//! The evidence comes from the emulated TEE: it proves nothing, and the
//! demo says so before it starts and wherever the consumer accepts it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args as ClapArgs;
use confsum_attest::{INSECURE_WARNING, InsecureEmulatedTee, TokenIssuer, TrustedRoots};
use confsum_policy::{GenerateOptions, ImageSources, LayerCache, Template};
use confsum_server::skr::TrustedAuthorities;
use confsum_server::{Client, HsmClient, Server, hsm_endpoint};
use confsum_skr::{
    AuditEvent, AuditRecord, Broker, BrokerConfig, ClaimCondition, ImportAttributes,
    ImportKeyRequest, MasterKey, ReleasePolicy, ReleasePolicyBody, SigningIdentity,
};
use confsum_workload::{
    Expectations, HsmKeyRelease, HttpAttestation, InsecureEmulatedEvidence, KeyDerivation,
    ServiceConfig, StartOptions, SummariesRequest, Workload, WorkloadClient, verify_attestation,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The label on every summary of the tiny test checkpoint.
pub(crate) const NOT_REAL: &str = "not a real summary (tiny random test model)";
/// The key's name at the broker.
const KEY_NAME: &str = "demo-documents";
/// The workload image's reference in the template.
const IMAGE_REF: &str = "confsum/demo-workload:1";
/// The variable the negative case changes, and its new value.
const CHANGED_ENV: (&str, &str) = ("LOG_DOCUMENTS", "true");

/// The demo documents (`examples/documents/`).
const DOCUMENTS: &[(&str, &[u8])] = &[
    (
        "aesop-the-ant-and-the-grasshopper.txt",
        include_bytes!("../../../examples/documents/aesop-the-ant-and-the-grasshopper.txt"),
    ),
    (
        "aesop-the-fox-and-the-grapes.txt",
        include_bytes!("../../../examples/documents/aesop-the-fox-and-the-grapes.txt"),
    ),
    (
        "aesop-the-hare-and-the-tortoise.txt",
        include_bytes!("../../../examples/documents/aesop-the-hare-and-the-tortoise.txt"),
    ),
    (
        "aesop-the-north-wind-and-the-sun.txt",
        include_bytes!("../../../examples/documents/aesop-the-north-wind-and-the-sun.txt"),
    ),
    (
        "declaration-of-independence-preamble.txt",
        include_bytes!("../../../examples/documents/declaration-of-independence-preamble.txt"),
    ),
    (
        "lincoln-gettysburg-address.txt",
        include_bytes!("../../../examples/documents/lincoln-gettysburg-address.txt"),
    ),
];

/// The workload image's one layer (`examples/workload/rootfs/`).
const ROOTFS: &[(&str, &[u8])] = &[
    (
        "app/README.txt",
        include_bytes!("../../../examples/workload/rootfs/app/README.txt"),
    ),
    (
        "app/workload.json",
        include_bytes!("../../../examples/workload/rootfs/app/workload.json"),
    ),
];
const IMAGE_CONFIG: &str = include_str!("../../../examples/workload/image-config.json");
const TEMPLATE: &str = include_str!("../../../examples/workload/template.json");

/// The tiny random BART checkpoint of `crates/summarize/testdata/bart`.
const TINY_MODEL: &[(&str, &[u8])] = &[
    (
        "config.json",
        include_bytes!("../../summarize/testdata/bart/config.json"),
    ),
    (
        "generation_config.json",
        include_bytes!("../../summarize/testdata/bart/generation_config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../summarize/testdata/bart/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../summarize/testdata/bart/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../summarize/testdata/bart/tokenizer_config.json"),
    ),
];

/// Run the whole confidential flow on this machine, and say what happens.
///
/// No root, no Docker, no network: every party runs in this process and
/// talks to the others over HTTP on loopback ports.
///
///   owner               seals the documents into an encrypted image (LUKS2)
///   operator            builds the workload image (a docker archive) and
///                       generates its CCE policy; SHA-256 of it = host_data
///   owner               imports the disk key into the key broker, with a
///                       release policy pinned to that host_data
///   workload            (x --replicas) in the emulated TEE: makes ephemeral
///                       keys, is attested, gets the key released, opens
///                       the image in memory, serves signed summaries
///   consumer            verifies each workload's attestation and the
///                       signature of every answer before showing it
///   negative case       the same workload with one changed environment
///                       variable: another policy, another host_data; the
///                       broker refuses the key (HTTP 403) and says why
///   audit               the broker's audit log verifies, and holds exactly
///                       one release per workload and the one refusal
///
/// INSECURE: the workload's evidence comes from an emulated TEE. It proves
/// nothing about hardware; the consumer accepts it only because this is
/// the demo. See `confsum deploy azure` for the real thing.
///
/// The documents (examples/documents in the source tree), the workload
/// image's files (examples/workload) and a tiny random test checkpoint are
/// built into the binary. Without --model the summaries come from that
/// checkpoint and are labelled "not a real summary": no real model can be
/// had offline.
///
/// Everything lives in one temporary directory (under $TMPDIR) that is
/// removed on exit, on error and on Ctrl-C.
///
/// Exit status: 0 when every step went as it should (the negative case
/// refused, as expected), 1 when one did not, 130 on Ctrl-C.
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// How many workload replicas to start; each attests and gets the key
    /// released on its own (1 to 8).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=8))]
    replicas: u8,
    /// A checkpoint folder (T5 or BART; a hub id with the `hub` feature).
    /// Default: the tiny random test checkpoint built into the binary.
    #[arg(long, value_name = "DIR|HUB_ID")]
    model: Option<String>,
    /// Seal the .txt files of this folder instead of the built-in documents.
    #[arg(long, value_name = "DIR")]
    documents: Option<PathBuf>,
    /// Print one JSON object per line (steps, summaries, the result)
    /// instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints steps as they happen: text, or JSON lines.
struct Narrator {
    json: bool,
}

impl Narrator {
    /// `actor` does `what`.
    fn step(&self, actor: &str, what: &str) -> Result<()> {
        let mut out = crate::fsio::stdout();
        if self.json {
            writeln!(
                out,
                "{}",
                json!({"event": "step", "actor": actor, "message": what})
            )?;
        } else {
            writeln!(out, "[{actor}] {what}")?;
        }
        out.flush()?;
        Ok(())
    }

    /// A detail of the last step: what was sent or checked.
    fn detail(&self, what: &str) -> Result<()> {
        let mut out = crate::fsio::stdout();
        if self.json {
            writeln!(out, "{}", json!({"event": "detail", "message": what}))?;
        } else {
            writeln!(out, "    {what}")?;
        }
        Ok(())
    }

    fn section(&self, title: &str) -> Result<()> {
        if !self.json {
            writeln!(crate::fsio::stdout(), "\n== {title}")?;
        }
        Ok(())
    }

    fn event(&self, value: &Value) -> Result<()> {
        if self.json {
            writeln!(crate::fsio::stdout(), "{value}")?;
        }
        Ok(())
    }
}

fn loopback() -> Result<Server> {
    Ok(Server::bind(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        0,
    )))?)
}

/// Writes `files` under `root/prefix`, making folders below `root` only:
/// if Ctrl-C's handler has removed `root` meanwhile, this fails instead of
/// making it again.
fn write_files(root: &Path, prefix: &str, files: &[(&str, &[u8])]) -> Result<()> {
    for (name, bytes) in files {
        let relative = Path::new(prefix).join(name);
        let mut dir = root.to_path_buf();
        if let Some(parent) = relative.parent() {
            for part in parent.components() {
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(e).with_context(|| format!("cannot create {}", dir.display()));
                    }
                    _ => {}
                }
            }
        }
        let path = root.join(&relative);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The .txt files of `dir`, sorted by name.
fn read_documents(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".txt") && entry.file_type()?.is_file() {
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            out.push((name, bytes));
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "{} holds no .txt files", dir.display());
    Ok(out)
}

/// A deterministic tar of `files` (the layer, or the archive).
fn tar_of(files: &[(&str, &[u8])], dirs: &[&str]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder.append_data(&mut h, dir, std::io::empty())?;
    }
    for (name, bytes) in files {
        let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        builder.append_data(&mut h, name, *bytes)?;
    }
    Ok(builder.into_inner()?)
}

/// The workload image as `docker save` (before Docker 25) writes it: one
/// layer from examples/workload/rootfs, the config from image-config.json.
fn docker_archive() -> Result<(Vec<u8>, String)> {
    let layer = tar_of(ROOTFS, &["app/"])?;
    let layer_digest = hex::encode(Sha256::digest(&layer));
    let runtime: Value =
        serde_json::from_str(IMAGE_CONFIG).context("examples/workload/image-config.json")?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": runtime,
        "created": "2023-11-14T22:13:20Z",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    let layer_name = format!("{layer_digest}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [IMAGE_REF],
        "Layers": [layer_name],
    }]))?;
    let archive = tar_of(
        &[
            (layer_name.as_str(), &layer),
            (config_name.as_str(), &config_bytes),
            ("manifest.json", &manifest),
        ],
        &[&format!("{layer_digest}/")],
    )?;
    Ok((archive, layer_digest))
}

/// The template with `CHANGED_ENV` set (the negative case).
fn changed_template() -> Result<String> {
    let mut value: Value = serde_json::from_str(TEMPLATE)?;
    let vars = value
        .pointer_mut("/resources/0/properties/containers/0/properties/environmentVariables")
        .and_then(Value::as_array_mut)
        .context("the template has no environmentVariables")?;
    let var = vars
        .iter_mut()
        .find(|v| v["name"] == CHANGED_ENV.0)
        .with_context(|| format!("the template does not set {}", CHANGED_ENV.0))?;
    var["value"] = Value::from(CHANGED_ENV.1);
    Ok(serde_json::to_string_pretty(&value)?)
}

/// The CCE policy of `template` with the archive at `archive`: its text
/// and host_data.
fn generate_policy(template: &str, archive: &Path) -> Result<(String, String, Vec<String>)> {
    let template = Template::parse(template).context("the workload template")?;
    let mut sources = ImageSources::new();
    sources.insert(IMAGE_REF, archive);
    let generated = confsum_policy::generate(
        &template,
        &sources,
        &GenerateOptions::default(),
        &LayerCache::disabled(),
        None,
    )
    .context("cannot generate the CCE policy")?;
    let [group] = generated.groups.as_slice() else {
        bail!(
            "the template holds {} container groups, not 1",
            generated.groups.len()
        );
    };
    let layers = group
        .policy
        .containers
        .first()
        .map(|c| c.layers.clone())
        .unwrap_or_default();
    Ok((group.text.clone(), group.host_data.clone(), layers))
}

/// What the demo needs to start a workload.
struct World<'a> {
    narrator: &'a Narrator,
    tee_pem: zeroize::Zeroizing<String>,
    attest_url: String,
    broker_url: String,
    broker_ca: String,
    image: PathBuf,
    model: PathBuf,
    model_name: String,
    note: Option<String>,
}

impl World<'_> {
    fn start(&self, actor: &str, host_data: [u8; 32]) -> Result<Workload, confsum_workload::Error> {
        let tee = InsecureEmulatedTee::from_insecure_state_pem(&self.tee_pem)
            .map_err(confsum_workload::Error::Attest)?;
        let evidence = InsecureEmulatedEvidence::new(tee, host_data);
        let attestation = HttpAttestation::new(Client::new(), &self.attest_url);
        let hsm = HsmClient::with_ca_pem(&self.broker_url, self.broker_ca.as_bytes())
            .map_err(confsum_workload::Error::Http)?;
        let release = HsmKeyRelease::new(hsm, KEY_NAME);
        let _ = self.narrator.step(
            actor,
            &format!(
                "starts in the emulated TEE (INSECURE); its platform reports host_data {}",
                hex::encode(host_data)
            ),
        );
        Workload::start(
            StartOptions {
                evidence: &evidence,
                attestation: &attestation,
                release: &release,
                derivation: KeyDerivation::default(),
                image: self.image.clone(),
                model: self.model.clone(),
                load: confsum_summarize::LoadOptions::default().chunking(true),
            },
            &mut |step| {
                let (who, what) = match &step {
                    confsum_workload::Step::Attested => (
                        "attestation service",
                        format!(
                            "checked the evidence (report signature, chain to the emulated \
                             root, report_data = SHA-256 of the runtime keys) and issued a \
                             token to {actor}"
                        ),
                    ),
                    confsum_workload::Step::KeyReleased { .. } => (
                        "key broker",
                        format!(
                            "verified {actor}'s token, found the release policy satisfied, and \
                             released the key wrapped to its RSA key"
                        ),
                    ),
                    _ => (actor, String::new()),
                };
                if who != actor {
                    let _ = self.narrator.step(who, &what);
                }
                let _ = self.narrator.step(actor, &crate::workload::describe(&step));
                // What it sends next (the steps report what is done).
                let sends = match &step {
                    confsum_workload::Step::Evidence { .. } => format!(
                        "sends POST {}/attest/SevSnpVM?api-version=2020-10-01: {{report (the \
                         evidence), runtimeData (both public keys, as JWKS)}}",
                        self.attest_url
                    ),
                    confsum_workload::Step::Attested => format!(
                        "sends POST {}/keys/{KEY_NAME}/release?api-version=7.4: {{\"target\": \
                         the token}}, as the confidential sidecar does",
                        self.broker_url
                    ),
                    _ => String::new(),
                };
                if !sends.is_empty() {
                    let _ = self.narrator.detail(&sends);
                }
            },
        )
    }
}

/// The model folder and its name, and the note its summaries carry.
fn model(
    args: &Args,
    tmp: &Path,
    narrator: &Narrator,
) -> Result<(PathBuf, String, Option<String>)> {
    if let Some(model) = &args.model {
        let dir = crate::summarize::resolve_model(model)?;
        narrator.step("operator", &format!("uses the model {model}"))?;
        return Ok((dir, model.clone(), None));
    }
    let dir = tmp.join("model");
    write_files(tmp, "model", TINY_MODEL)?;
    narrator.step(
        "operator",
        "no --model given, and no real summarization model can be had offline: using the \
         tiny random BART test checkpoint built into this binary. Its output is NOT a real \
         summary, and every summary is labelled so",
    )?;
    Ok((
        dir,
        "tiny random BART (test checkpoint)".to_owned(),
        Some(NOT_REAL.to_owned()),
    ))
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let narrator = Narrator { json: args.json };
    eprintln!(
        "{INSECURE_WARNING}\nWARNING: confsum demo runs the workload in an EMULATED TEE: its \
         attestation proves nothing about hardware. The consumer accepts emulated evidence \
         only because this is the demo."
    );
    let tmp = tempfile::Builder::new()
        .prefix("confsum-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    // Removed on Ctrl-C too (the TempDir's own drop covers errors).
    let _registered = crate::fsio::Created::tree(tmp.path());
    narrator.step(
        "demo",
        &format!(
            "temporary state in {} (removed on exit, error and Ctrl-C)",
            tmp.path().display()
        ),
    )?;
    let outcome = flow(args, tmp.path(), &narrator);
    drop(_registered);
    drop(tmp);
    let result = outcome?;
    narrator.section("result")?;
    narrator.step(
        "demo",
        "every step went as expected; temporary state removed",
    )?;
    narrator.event(
        &json!({"event": "result", "ok": true, "releases": result.releases,
        "refused": result.refused, "audit_records": result.audit_records}),
    )?;
    Ok(ExitCode::SUCCESS)
}

struct Outcome {
    releases: usize,
    refused: usize,
    audit_records: u64,
}

fn flow(args: &Args, tmp: &Path, narrator: &Narrator) -> Result<Outcome> {
    let replicas = usize::from(args.replicas);
    let documents = match &args.documents {
        Some(dir) => read_documents(dir)?,
        None => DOCUMENTS
            .iter()
            .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
            .collect(),
    };
    let (model_dir, model_name, note) = model(args, tmp, narrator)?;

    // --- The local services.
    narrator.section("local services (loopback, this process)")?;
    let tee = InsecureEmulatedTee::generate().context("cannot make the emulated TEE")?;
    let mut roots = TrustedRoots::empty();
    roots.add_insecure_root(&tee.insecure_ark_der()?)?;
    let attest_server = loopback()?;
    let issuer = attest_server.url();
    let attest_service = confsum_attest::Service::new(TokenIssuer::generate(&issuer)?, roots);
    let attest = attest_server.spawn(confsum_server::attest::router(attest_service))?;
    narrator.step(
        "attestation service",
        &format!(
            "listening on {issuer}; issues RS256 tokens as {issuer}; trusts only the emulated \
             TEE's INSECURE root"
        ),
    )?;

    let broker_server = loopback()?;
    let broker_url = broker_server.url();
    let (signer, ca) =
        SigningIdentity::generate_with_local_ca(&[hsm_endpoint(&broker_url)], SystemTime::now())
            .context("cannot make the broker's release-signing key")?;
    let master = MasterKey::generate()?;
    let db = tmp.join("broker.redb");
    let broker = Arc::new(
        Broker::open(&db, &master, signer, BrokerConfig::new(&broker_url))
            .context("cannot open the key broker's database")?,
    );
    let admin = zeroize::Zeroizing::new(hex::encode(
        confsum_encfs::KeyFile::generate()
            .context("no random numbers")?
            .expose(),
    ));
    broker.set_admin_token(&admin)?;
    let authorities = TrustedAuthorities::new(Client::new()).trust(&issuer);
    let broker_running = broker_server.spawn(confsum_server::skr::router(
        Arc::clone(&broker),
        Arc::new(authorities),
    ))?;
    narrator.step(
        "key broker",
        &format!(
            "listening on {broker_url} (Managed HSM's REST API); trusts tokens from {issuer} \
             (keys from {issuer}/certs); signs releases with a key its fresh local CA certified \
             for {}",
            hsm_endpoint(&broker_url)
        ),
    )?;

    // --- Owner: seal.
    narrator.section("owner: seal the documents")?;
    let plain = tmp.join("owner/documents");
    let refs: Vec<(&str, &[u8])> = documents
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_files(tmp, "owner/documents", &refs)?;
    let total: usize = documents.iter().map(|(_, b)| b.len()).sum();
    narrator.step(
        "owner",
        &format!(
            "seals {} documents ({total} bytes) into an encrypted image: ext4 inside LUKS2 \
             (aes-xts-plain64, 4096-byte sectors, PBKDF2), unlocked by a fresh random 32-byte key",
            documents.len()
        ),
    )?;
    for (name, bytes) in &documents {
        narrator.detail(&format!("{name} ({} bytes)", bytes.len()))?;
    }
    let key = confsum_encfs::KeyFile::generate()?;
    let image = tmp.join("documents.img");
    let mut options = confsum_encfs::SealOptions::default();
    options.free_space = 1 << 20;
    let report = confsum_encfs::seal(
        confsum_encfs::SealSource::Dir(&plain),
        &image,
        key.expose(),
        &options,
        &mut |_| {},
    )
    .context("cannot seal the documents")?;
    std::fs::remove_dir_all(&plain).context("cannot remove the plaintext copy")?;
    narrator.detail(&format!(
        "wrote documents.img ({} bytes); the plaintext copy is deleted; only the image goes to \
         the blob store",
        std::fs::metadata(&image).map_or(0, |m| m.len())
    ))?;
    let _ = report;

    // --- Operator: image and policy.
    narrator.section("operator: build the workload image and its policy")?;
    let (archive, layer_digest) = docker_archive()?;
    let archive_path = tmp.join("operator/workload.tar");
    write_files(tmp, "operator", &[("workload.tar", &archive)])?;
    narrator.step(
        "operator",
        &format!(
            "builds the workload image {IMAGE_REF} as a docker archive ({} bytes) from \
             examples/workload (one layer, sha256:{}…)",
            archive.len(),
            &layer_digest[..12]
        ),
    )?;
    let (policy_text, host_data, layers) = generate_policy(TEMPLATE, &archive_path)?;
    narrator.step(
        "operator",
        &format!(
            "generates the CCE policy of examples/workload/template.json ({} bytes of Rego, as \
             az confcom writes it)",
            policy_text.len()
        ),
    )?;
    for layer in &layers {
        narrator.detail(&format!("layer dm-verity root hash {layer}"))?;
    }
    narrator.detail(&format!("host_data = SHA-256(policy) = {host_data}"))?;
    narrator.step(
        "operator",
        "publishes the policy; the owner and the consumer pin its host_data",
    )?;
    let mut host_data_bytes = [0u8; 32];
    hex::decode_to_slice(&host_data, &mut host_data_bytes)?;

    // --- Owner: import the key.
    narrator.section("owner: import the disk key into the key broker")?;
    let policy = ReleasePolicy::all_of(
        &issuer,
        vec![vec![
            ClaimCondition::equals("x-ms-sevsnpvm-hostdata", host_data.clone()),
            ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
            ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
        ]],
    );
    let request = ImportKeyRequest {
        key: json!({"kty": "oct-HSM", "k": URL_SAFE_NO_PAD.encode(key.expose())}),
        hsm: Some(true),
        attributes: Some(ImportAttributes {
            enabled: Some(true),
            exportable: Some(true),
        }),
        release_policy: Some(ReleasePolicyBody {
            content_type: Some(confsum_skr::POLICY_CONTENT_TYPE.to_owned()),
            data: policy.encode_base64url(),
            immutable: Some(true),
        }),
        tags: None,
    };
    let admin_hsm =
        HsmClient::with_ca_pem(&broker_url, ca.cert_pem().as_bytes())?.bearer(Some(admin.clone()));
    narrator.step(
        "owner",
        &format!(
            "PUT {broker_url}/keys/{KEY_NAME}: the 32-byte disk key (oct-HSM), exportable, with \
             an immutable release policy:"
        ),
    )?;
    narrator.detail(&format!("authority {issuer}"))?;
    narrator.detail(&format!("x-ms-sevsnpvm-hostdata = {host_data}"))?;
    narrator.detail("x-ms-sevsnpvm-is-debuggable = false")?;
    narrator.detail("x-ms-sevsnpvm-vmpl = 0")?;
    narrator.detail(
        "(x-ms-compliance-status = azure-compliant-uvm, which `confsum skr policy` adds for \
         Azure, is left out: only Azure-signed UVMs carry it, never emulated evidence)",
    )?;
    let bundle = admin_hsm
        .import(KEY_NAME, &request)
        .context("the owner cannot import the key")?;
    narrator.step(
        "key broker",
        &format!("stored the key as {}", bundle.key.kid),
    )?;
    drop(key);

    let world = World {
        narrator,
        tee_pem: zeroize::Zeroizing::new(tee.to_insecure_state_pem()?.to_string()),
        attest_url: issuer.clone(),
        broker_url: broker_url.clone(),
        broker_ca: ca.cert_pem(),
        image: image.clone(),
        model: model_dir,
        model_name,
        note,
    };

    // --- Workloads.
    let mut running = Vec::new();
    for i in 1..=replicas {
        let actor = format!("workload {i}");
        narrator.section(&format!("{actor}: attest, get the key, open the image"))?;
        let workload = world
            .start(&actor, host_data_bytes)
            .with_context(|| format!("{actor} did not start"))?;
        let mut config = ServiceConfig::new(&world.model_name);
        if let Some(note) = &world.note {
            config = config.note(note);
        }
        let server = loopback()?;
        let service = workload.into_service(config);
        let r = server.spawn(confsum_workload::router(service))?;
        narrator.step(
            &actor,
            &format!(
                "serves signed summaries on {} (GET /v1/attestation, /v1/documents; POST \
                 /v1/summaries)",
                r.url()
            ),
        )?;
        running.push((actor, r));
    }

    // --- Consumer.
    narrator.section("consumer: verify, then read")?;
    let http = Client::new();
    let jwks = http
        .fetch_jwks(&format!("{issuer}/certs"))
        .context("the consumer cannot fetch the attestation service's keys")?;
    narrator.step(
        "consumer",
        &format!(
            "fetched the attestation service's signing keys from {issuer}/certs; pins host_data \
             {host_data} from the published policy"
        ),
    )?;
    let mut jtis = Vec::new();
    let mut clients = Vec::new();
    for (actor, r) in &running {
        let client = WorkloadClient::new(http.clone(), r.url());
        let doc = client
            .attestation()
            .with_context(|| format!("cannot get {actor}'s attestation"))?;
        let mut expect = Expectations::new(&issuer, jwks.clone(), host_data_bytes);
        expect.allow_insecure_emulated = true;
        let verification = verify_attestation(&doc, &expect, SystemTime::now());
        narrator.step(
            "consumer",
            &format!("GET {}/v1/attestation and checks {actor}'s token:", r.url()),
        )?;
        for c in &verification.checks {
            if c.passed {
                narrator.detail(&format!("ok   {}: {}", c.check.as_str(), c.actual))?;
            } else {
                narrator.detail(&format!(
                    "FAIL {}: expected {}, actual {}",
                    c.check.as_str(),
                    c.expected,
                    c.actual
                ))?;
            }
        }
        if !verification.trusted {
            bail!("the consumer refused {actor}: {}", verification.refusal());
        }
        narrator.detail(
            "emulated evidence accepted ONLY because this is the demo: it proves nothing about \
             hardware",
        )?;
        let claims = verification
            .claims
            .as_ref()
            .context("a trusted verification without claims")?;
        jtis.push((actor.clone(), claims.jti.clone()));
        let verifier = verification.trusted_verifier()?.clone();
        clients.push((actor.clone(), client, verifier));
    }
    let (first_actor, first, first_verifier) =
        clients.first().context("no workload was started")?;
    let list = first
        .documents(first_verifier)
        .with_context(|| format!("cannot list {first_actor}'s documents"))?;
    narrator.step(
        "consumer",
        &format!(
            "GET /v1/documents from {first_actor}: {} documents (ids and sizes only; the \
             answer's signature checked)",
            list.documents.len()
        ),
    )?;
    // Spread over the replicas, as a load balancer would.
    let mut shown = 0;
    for (i, doc) in list.documents.iter().enumerate() {
        let (actor, client, verifier) = &clients[i % clients.len()];
        let request = SummariesRequest {
            documents: vec![doc.id.clone()],
            texts: Vec::new(),
        };
        let payload = client
            .summarize(verifier, &request)
            .with_context(|| format!("{actor} gave no verified summary of {}", doc.id))?;
        narrator.step(
            "consumer",
            &format!(
                "POST /v1/summaries {{\"documents\":[\"{}\"]}} to {actor}; the answer's ES256 \
                 signature checks with {actor}'s attested key {}, and it answers this request",
                doc.id,
                verifier.kid()
            ),
        )?;
        for s in &payload.summaries {
            let label = payload
                .note
                .as_deref()
                .map_or(String::new(), |n| format!(" [{n}]"));
            if narrator.json {
                narrator.event(&json!({"event": "summary", "workload": actor,
                    "document": s.document, "summary": s.summary, "note": payload.note,
                    "model": payload.model}))?;
            } else {
                let mut out = crate::fsio::stdout();
                writeln!(
                    out,
                    "    summary of {}{label}:",
                    s.document.as_deref().unwrap_or("?")
                )?;
                writeln!(out, "      {}", s.summary.trim())?;
            }
            shown += 1;
        }
    }
    ensure!(
        shown == list.documents.len(),
        "{} summaries for {} documents",
        shown,
        list.documents.len()
    );

    // --- Negative case.
    narrator.section("negative case: one changed environment variable")?;
    let changed = changed_template()?;
    let (_, other_host_data, _) = generate_policy(&changed, &archive_path)?;
    narrator.step(
        "operator",
        &format!(
            "changes {}={} in the template (say, to log documents in clear): the policy \
             changes, and so does host_data",
            CHANGED_ENV.0, CHANGED_ENV.1
        ),
    )?;
    narrator.detail(&format!("published host_data {host_data}"))?;
    narrator.detail(&format!("new host_data       {other_host_data}"))?;
    ensure!(
        other_host_data != host_data,
        "the changed template gave the same host_data"
    );
    let mut other = [0u8; 32];
    hex::decode_to_slice(&other_host_data, &mut other)?;
    let refused = match world.start("workload (changed)", other) {
        Ok(_) => bail!("the broker released the key to a workload with another policy"),
        Err(confsum_workload::Error::Http(confsum_server::Error::Status {
            status: 403,
            error: Some(remote),
            ..
        })) => remote,
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("the changed workload failed, but not with the broker's 403"));
        }
    };
    narrator.step(
        "key broker",
        &format!(
            "refused: HTTP 403 {}: {}",
            remote_code(&refused),
            refused.message
        ),
    )?;
    ensure!(
        refused.message.contains("x-ms-sevsnpvm-hostdata")
            && refused.message.contains(&host_data)
            && refused.message.contains(&other_host_data),
        "the broker's 403 does not name the claim with its expected and actual values: {}",
        refused.message
    );
    narrator.detail("failing claim: x-ms-sevsnpvm-hostdata")?;
    narrator.detail(&format!("expected:      {host_data}"))?;
    narrator.detail(&format!("actual:        {other_host_data}"))?;
    narrator.step(
        "workload (changed)",
        "has no key, so it cannot open the image: refused, as it should be",
    )?;
    narrator.event(&json!({"event": "refused", "status": 403,
        "claim": "x-ms-sevsnpvm-hostdata", "expected": host_data,
        "actual": other_host_data, "message": refused.message}))?;

    // --- Audit.
    narrator.section("audit: the key broker's log")?;
    for (actor, r) in running.drain(..) {
        r.stop()
            .with_context(|| format!("{actor}'s server failed"))?;
    }
    broker_running
        .stop()
        .context("the key broker's server failed")?;
    attest
        .stop()
        .context("the attestation service's server failed")?;
    let report = broker
        .verify_audit()
        .context("the broker's audit log does not verify")?;
    ensure!(
        report.macs_checked && report.head_checked,
        "the audit log was not fully checked"
    );
    let records: Vec<AuditRecord> = broker
        .export_audit()?
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter_map(|v| v.get("record").cloned())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    ensure!(
        records.len() as u64 == report.records,
        "read {} of the audit log's {} records",
        records.len(),
        report.records
    );
    narrator.step(
        "owner",
        &format!(
            "verifies the broker's audit log: {} records, hash chain, every MAC and the signed \
             head intact",
            report.records
        ),
    )?;
    let releases: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == AuditEvent::Release && r.key == KEY_NAME)
        .collect();
    let denied: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == AuditEvent::Deny && r.key == KEY_NAME)
        .collect();
    let denials = denied.len();
    let denied_host_data = denied
        .first()
        .and_then(|r| r.token.as_ref())
        .and_then(|t| t.host_data.as_deref())
        .unwrap_or("(none)");
    for (actor, jti) in &jtis {
        let mine: Vec<&&AuditRecord> = releases
            .iter()
            .filter(|r| r.token.as_ref().and_then(|t| t.jti.as_deref()) == Some(jti.as_str()))
            .collect();
        let [release] = mine.as_slice() else {
            bail!(
                "the audit log shows {} releases to {actor} (token {jti}), not 1",
                mine.len()
            );
        };
        let logged = release
            .token
            .as_ref()
            .and_then(|t| t.host_data.as_deref())
            .unwrap_or("(none)");
        ensure!(
            logged == host_data,
            "the release to {actor} is logged with host_data {logged}"
        );
        narrator.detail(&format!(
            "record {}: released to {actor} (token jti {jti}, host_data {logged}): exactly once",
            release.seq
        ))?;
    }
    ensure!(
        releases.len() == replicas,
        "the audit log shows {} releases for {replicas} workloads",
        releases.len()
    );
    ensure!(
        denials == 1,
        "the audit log shows {denials} refusals, not 1"
    );
    ensure!(
        denied_host_data == other_host_data,
        "the refusal is logged with host_data {denied_host_data}, not {other_host_data}"
    );
    narrator.detail(&format!(
        "releases: {} for {replicas} workloads; refusals: 1, logged with host_data \
         {denied_host_data}",
        releases.len()
    ))?;
    narrator.event(&json!({"event": "audit", "records": report.records,
        "releases": releases.len(), "refusals": denials}))?;
    Ok(Outcome {
        releases: releases.len(),
        refused: denials,
        audit_records: report.records,
    })
}

fn remote_code(e: &confsum_server::RemoteError) -> &str {
    &e.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_template_differs_only_in_the_variable() {
        let changed = changed_template().unwrap();
        assert!(changed.contains(r#""value": "true""#));
        assert_ne!(
            serde_json::from_str::<Value>(&changed).unwrap(),
            serde_json::from_str::<Value>(TEMPLATE).unwrap()
        );
    }

    #[test]
    fn embedded_documents_are_the_examples() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/documents");
        let on_disk = read_documents(&dir).unwrap();
        let names: Vec<&str> = on_disk.iter().map(|(n, _)| n.as_str()).collect();
        let embedded: Vec<&str> = DOCUMENTS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, embedded);
        for ((_, disk), (_, built_in)) in on_disk.iter().zip(DOCUMENTS) {
            assert_eq!(disk.as_slice(), *built_in);
        }
    }

    #[test]
    fn embedded_rootfs_is_the_whole_example() {
        fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workload/rootfs");
        let mut on_disk = Vec::new();
        files(&root, &root, &mut on_disk);
        on_disk.sort();
        let embedded: Vec<String> = ROOTFS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn docker_archive_is_deterministic() {
        assert_eq!(docker_archive().unwrap(), docker_archive().unwrap());
    }
}
