//! `confsum deploy azure`: the files a Confidential ACI deployment needs,
//! made from the images and the owner's settings, and checked before
//! deploying.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use confsum_policy::{GenerateOptions, Template, host_data};
use confsum_skr::{
    AzureDeployment, DeployProblem, DeploySettings, ImportKeyConfig, SidecarArgs, check_deployment,
    find_placeholders,
};

use crate::fsio::{Created, Output};
use crate::policy::ImageArgs;

/// Exit status of `deploy azure --check` when the files disagree.
const MISMATCH: u8 = 2;

const TEMPLATE: &str = "template.json";
const IMPORT_CONFIG: &str = "importkeyconfig.json";
const SIDECAR_ARGS: &str = "encfs-sidecar-args.json";

/// Deployment files for real platforms.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    Azure(Box<AzureArgs>),
}

/// Write (or --check) the files of an Azure Confidential Container
/// Instances deployment.
///
/// Writes into --out-dir:
///   template.json            the ARM template: the workload, the encfs
///                            sidecar with its arguments (base64), a shared
///                            emptyDir volume, the Confidential SKU, and the
///                            ccePolicy generated from the images exactly as
///                            `confsum policy generate` would
///   importkeyconfig.json     the key import with its release policy pinned
///                            to that policy's host_data (no bearer token)
///   encfs-sidecar-args.json  the sidecar's arguments: the encrypted image's
///                            blob URL and the key to release
/// and prints the two commands to run next. Existing files are kept unless
/// --force.
///
/// Settings come from flags and/or --settings FILE, a JSON object whose keys
/// are the flag names with underscores (app_image, blob_url, key_name, hsm,
/// maa, identity, ...; lists for the repeatable ones, app_ports for
/// --app-port, and "blob_private": false for --blob-public); flags win.
/// Every required setting must be given, and none may be a <placeholder>:
/// the command lists what is missing and writes nothing.
///
/// The policy covers both containers, so the images of the workload and of
/// the sidecar are both needed: give each with --image REF=PATH (a docker
/// archive or an OCI layout), or let them be pulled from their registries.
///
/// --check DIR re-reads the three files and checks that the template's
/// policy hashes to the host_data the key is released to, that the sidecar
/// arguments in the template are those of encfs-sidecar-args.json and name
/// the imported key, HSM and attestation service, and (for the settings
/// given) that key, HSM, attestation service and blob URL are the owner's.
/// This catches the HSM's 403 before deploying.
///
/// Exit status: 0 on success; with --check, 2 when the files disagree; 1 on
/// errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct AzureArgs {
    /// Write the three files into this directory (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "check")]
    out_dir: Option<PathBuf>,

    /// Check the files in DIR instead of writing them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out_dir", "force"])]
    check: Option<PathBuf>,

    /// Replace existing files in --out-dir.
    #[arg(long)]
    force: bool,

    /// Settings file (JSON); flags override it.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,

    #[command(flatten)]
    flags: SettingFlags,

    /// For the printed key import command: the owner's key file.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// For the printed deployment command: the resource group.
    #[arg(long, value_name = "NAME")]
    resource_group: Option<String>,

    #[command(flatten)]
    images: ImageArgs,
}

#[derive(Debug, clap::Args)]
struct SettingFlags {
    /// The workload's image reference (required).
    #[arg(long, value_name = "REF")]
    app_image: Option<String>,
    /// Blob URL of the owner's encrypted image (required).
    #[arg(long, value_name = "URL")]
    blob_url: Option<String>,
    /// The key's name in the Managed HSM (required).
    #[arg(long, value_name = "NAME")]
    key_name: Option<String>,
    /// The Managed HSM's host name (required).
    #[arg(long, value_name = "HOST")]
    hsm: Option<String>,
    /// The attestation service's host name, e.g.
    /// sharedeus.eus.attest.azure.net (required).
    #[arg(long, value_name = "HOST")]
    maa: Option<String>,
    /// Resource id of the user-assigned managed identity that reads the blob
    /// and releases the key (required).
    #[arg(long, value_name = "ID")]
    identity: Option<String>,
    /// The container group's name (default confsum).
    #[arg(long, value_name = "NAME")]
    group_name: Option<String>,
    /// The workload container's name (default app).
    #[arg(long, value_name = "NAME")]
    app_name: Option<String>,
    /// One argument of the workload's command; repeat for each (default:
    /// the image's entry point and cmd).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    app_command: Vec<String>,
    /// An environment variable of the workload. Repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    app_env: Vec<String>,
    /// A TCP port of the workload to expose on a public IP. Repeatable.
    #[arg(long, value_name = "PORT")]
    app_port: Vec<u16>,
    /// CPUs for the workload (default 1).
    #[arg(long, value_name = "N")]
    app_cpu: Option<f64>,
    /// Memory for the workload in GB (default 2).
    #[arg(long, value_name = "GB")]
    app_memory_gb: Option<f64>,
    /// The encfs sidecar's image (default mcr.microsoft.com/aci/encfs:2.12).
    #[arg(long, value_name = "REF")]
    sidecar_image: Option<String>,
    /// The blob is readable without the managed identity.
    #[arg(long)]
    blob_public: bool,
    /// Mount the image read-write (needs a page blob).
    #[arg(long)]
    read_write: bool,
    /// Where the plaintext files appear (default /mnt/remote/share).
    #[arg(long, value_name = "PATH")]
    mount_point: Option<String>,
    /// oct-HSM (default) or RSA-HSM.
    #[arg(long, value_name = "KTY")]
    key_type: Option<String>,
    /// HKDF salt in hex (RSA-HSM keys).
    #[arg(long, value_name = "HEX")]
    key_derivation_salt: Option<String>,
    /// HKDF label (RSA-HSM keys).
    #[arg(long, value_name = "LABEL")]
    key_derivation_label: Option<String>,
    /// Pull the images from this registry server with the managed identity.
    #[arg(long, value_name = "SERVER")]
    registry: Option<String>,
}

impl SettingFlags {
    fn settings(&self) -> DeploySettings {
        let mut s = DeploySettings::default();
        s.group_name.clone_from(&self.group_name);
        s.app_image.clone_from(&self.app_image);
        s.app_name.clone_from(&self.app_name);
        s.app_command.clone_from(&self.app_command);
        s.app_env.clone_from(&self.app_env);
        s.app_ports.clone_from(&self.app_port);
        s.app_cpu = self.app_cpu;
        s.app_memory_gb = self.app_memory_gb;
        s.sidecar_image.clone_from(&self.sidecar_image);
        s.blob_url.clone_from(&self.blob_url);
        s.blob_private = self.blob_public.then_some(false);
        s.read_write = self.read_write.then_some(true);
        s.mount_point.clone_from(&self.mount_point);
        s.key_name.clone_from(&self.key_name);
        s.key_type.clone_from(&self.key_type);
        s.key_derivation_salt.clone_from(&self.key_derivation_salt);
        s.key_derivation_label
            .clone_from(&self.key_derivation_label);
        s.hsm.clone_from(&self.hsm);
        s.maa.clone_from(&self.maa);
        s.identity.clone_from(&self.identity);
        s.registry.clone_from(&self.registry);
        s
    }
}

pub(crate) fn run(command: &Command) -> Result<ExitCode> {
    match command {
        Command::Azure(a) => match &a.check {
            Some(dir) => check(a, dir),
            None => write(a),
        },
    }
}

/// `field_name` as the flag that sets it.
fn flag(field: &str) -> String {
    match field {
        "app_ports" => "--app-port".to_owned(),
        "blob_private" => "--blob-public".to_owned(),
        f => format!("--{}", f.replace('_', "-")),
    }
}

fn settings(a: &AzureArgs) -> Result<DeploySettings> {
    let from_flags = a.flags.settings();
    Ok(match &a.settings {
        None => from_flags,
        Some(path) => {
            let bytes = crate::fsio::read_input(path)?;
            let file = DeploySettings::decode(&bytes)
                .with_context(|| format!("--settings {}", crate::fsio::shown(path)))?;
            from_flags.or(file)
        }
    })
}

fn deployment(settings: &DeploySettings) -> Result<AzureDeployment> {
    let listed = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{} ({n})", flag(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    AzureDeployment::new(settings).map_err(|e| match e {
        confsum_skr::Error::Deploy(DeployProblem::Missing(names)) => anyhow::anyhow!(
            "missing settings: {} (give them as flags or in --settings; nothing was written)",
            listed(&names)
        ),
        confsum_skr::Error::Deploy(DeployProblem::Placeholder(names)) => anyhow::anyhow!(
            "settings still holding a <placeholder>: {} (nothing was written)",
            listed(&names)
        ),
        e => anyhow::Error::new(e),
    })
}

/// A word as a POSIX shell reads it back.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn shell_path(p: &Path) -> String {
    shell_word(&p.display().to_string())
}

fn write(a: &AzureArgs) -> Result<ExitCode> {
    let Some(dir) = &a.out_dir else {
        bail!("--out-dir or --check is needed");
    };
    let settings = settings(a)?;
    let deployment = deployment(&settings)?;

    let skeleton = deployment.template();
    let template = Template::parse(&skeleton).context("the generated template does not parse")?;
    let generated =
        crate::policy::generate_policies(&template, &a.images, &GenerateOptions::default())?;
    let [group] = generated.groups.as_slice() else {
        bail!("expected one container group's policy");
    };
    let template_text = template.with_policies(&generated.texts())?;
    let import = deployment.import_key_config(&group.host_data)?;
    let sidecar = deployment.sidecar_args();
    let import_text = import.encode();
    let sidecar_text = sidecar.encode();

    // Nothing is written that still holds a placeholder, or that the check
    // below would refuse.
    for (name, text) in [
        (TEMPLATE, &template_text),
        (IMPORT_CONFIG, &import_text),
        (SIDECAR_ARGS, &sidecar_text),
    ] {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let paths = find_placeholders(&value);
        if !paths.is_empty() {
            bail!("{name} would hold placeholders at {}", paths.join(", "));
        }
    }
    let findings = check_deployment(
        &template_text,
        Some(&group.host_data),
        &import,
        &sidecar,
        &settings,
    )?;
    if let Some(f) = findings.first() {
        bail!("the files made do not agree: {f}");
    }

    let created_dir = if dir.exists() {
        None
    } else {
        std::fs::create_dir(dir)
            .with_context(|| format!("cannot create --out-dir {}", dir.display()))?;
        Some(Created::tree(dir))
    };
    let outputs = [
        (TEMPLATE, template_text.as_bytes()),
        (IMPORT_CONFIG, import_text.as_bytes()),
        (SIDECAR_ARGS, sidecar_text.as_bytes()),
    ]
    .into_iter()
    .map(|(name, bytes)| {
        let path = dir.join(name);
        let output = Output::create(&path, "--out-dir", a.force)?;
        output
            .file()
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(output)
    })
    .collect::<Result<Vec<_>>>()?;
    // The new directory is kept with the last file: a failure before
    // removes it with whatever was renamed into it.
    let mut created_dir = created_dir;
    let last = outputs.len().saturating_sub(1);
    for (i, output) in outputs.into_iter().enumerate() {
        if i == last {
            output.commit(created_dir.take())?;
        } else {
            output.commit([])?;
        }
    }

    let mut out = crate::fsio::stdout();
    writeln!(
        out,
        "wrote {}, {} and {} in {}",
        TEMPLATE,
        IMPORT_CONFIG,
        SIDECAR_ARGS,
        dir.display()
    )?;
    writeln!(out, "host_data: {}", group.host_data)?;
    writeln!(
        out,
        "key {} in {}, released on tokens of {} to this host_data only",
        deployment.key_name(),
        deployment.hsm(),
        import.key.authority.endpoint
    )?;
    let key_arg = match (import.key.kty.as_deref(), &a.key_file) {
        (Some("RSA-HSM"), Some(k)) => format!("-kp {}", shell_path(k)),
        (Some("RSA-HSM"), None) => "-kp \"$KEY_PEM\"".to_owned(),
        (_, Some(k)) => format!("-kh \"$(xxd -p -c 32 {})\"", shell_path(k)),
        (_, None) => "-kh \"$(xxd -p -c 32 \"$KEY_FILE\")\"".to_owned(),
    };
    let group_arg = a
        .resource_group
        .as_deref()
        .map_or_else(|| "\"$RESOURCE_GROUP\"".to_owned(), shell_word);
    writeln!(out)?;
    writeln!(
        out,
        "Next: 1. import the key with its release policy (Azure's importkey tool, \
         microsoft/confidential-sidecar-containers tools/importkey; it needs an HSM bearer \
         token in key.akv.bearer_token, or -a on an Azure VM with a managed identity):"
    )?;
    writeln!(
        out,
        "  go run ./tools/importkey -c {} {key_arg}",
        shell_path(&dir.join(IMPORT_CONFIG))
    )?;
    writeln!(out, "2. deploy the container group:")?;
    writeln!(
        out,
        "  az deployment group create --resource-group {group_arg} --template-file {}",
        shell_path(&dir.join(TEMPLATE))
    )?;
    writeln!(
        out,
        "Re-run `confsum deploy azure --check {}` after any change: a policy that changed \
         after the import makes the HSM answer 403.",
        shell_path(dir)
    )?;
    Ok(ExitCode::SUCCESS)
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn check(a: &AzureArgs, dir: &Path) -> Result<ExitCode> {
    let expected = settings(a)?;
    let template_bytes = read_file(dir, TEMPLATE)?;
    let template_text = String::from_utf8(template_bytes)
        .with_context(|| format!("{} is not UTF-8", dir.join(TEMPLATE).display()))?;
    let import = ImportKeyConfig::decode(&read_file(dir, IMPORT_CONFIG)?)
        .with_context(|| format!("{}", dir.join(IMPORT_CONFIG).display()))?;
    let sidecar = SidecarArgs::decode(&read_file(dir, SIDECAR_ARGS)?)
        .with_context(|| format!("{}", dir.join(SIDECAR_ARGS).display()))?;
    let template = Template::parse(&template_text)
        .with_context(|| format!("{}", dir.join(TEMPLATE).display()))?;
    let policies = template
        .existing_policies()
        .with_context(|| format!("{}", dir.join(TEMPLATE).display()))?;
    let policy_hash = match policies.as_slice() {
        [p] => p.as_ref().map(|t| host_data(t.as_bytes())),
        _ => bail!(
            "{} has {} container groups; deploy azure writes one",
            dir.join(TEMPLATE).display(),
            policies.len()
        ),
    };
    let findings = check_deployment(
        &template_text,
        policy_hash.as_deref(),
        &import,
        &sidecar,
        &expected,
    )?;
    let mut out = crate::fsio::stdout();
    if findings.is_empty() {
        writeln!(
            out,
            "OK: the template's policy hashes to {}, the host_data importkeyconfig.json releases \
             the key to",
            policy_hash.unwrap_or_default()
        )?;
        for fs in &sidecar.azure_filesystems {
            writeln!(
                out,
                "OK: the sidecar mounts {} at {}, with key {} from {} released on tokens of {}",
                fs.azure_url,
                fs.mount_point,
                fs.key.kid,
                fs.key.akv.endpoint,
                fs.key.authority.endpoint
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for f in &findings {
        writeln!(out, "MISMATCH: {f}")?;
    }
    eprintln!(
        "confsum: {} problem(s) in {}: do not deploy until they are fixed",
        findings.len(),
        dir.display()
    );
    Ok(ExitCode::from(MISMATCH))
}
