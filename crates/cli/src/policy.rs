//! `confsum policy`: CCE policies, byte-identical to az confcom.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine;
use confsum_policy::{
    ArmEval, Change, GenerateOptions, Generated, ImageSources, LayerCache, Policy, Progress,
    ProgressEvent, Template, Warning, diff, generate, host_data, read_policy_input,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::fsio::Output;

/// Exit status when a template's policy or two policies differ.
const DIFFERENT: u8 = 2;

/// CCE policies for Azure Confidential Container Instances.
///
/// Policies are the Rego text `az confcom acipolicygen` 1.4.3 writes, byte for
/// byte, so host_data (the SHA-256 of the policy) agrees with it. No Docker,
/// Azure CLI or network is needed for local images.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    Generate(GenerateArgs),
    Show(ShowArgs),
    Hash(HashArgs),
    Diff(DiffArgs),
    Verify(VerifyArgs),
    Check(crate::policy_check::CheckArgs),
}

/// Options shared by `generate` and `verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Input {
    /// The ARM template.
    #[arg(long, short = 'a', value_name = "FILE")]
    template: PathBuf,

    /// An ARM parameters file, as az confcom's `-p`.
    #[arg(long, short = 'p', value_name = "FILE")]
    parameters: Option<PathBuf>,

    #[command(flatten)]
    images: ImageArgs,

    /// Allow stack dumps, runtime logging and `/bin/sh`/`/bin/bash` exec.
    #[arg(long)]
    debug_mode: bool,

    /// Deny stdio access to every container.
    #[arg(long)]
    disable_stdio: bool,

    /// minimum_svn of the infrastructure fragment (default 4).
    #[arg(long, value_name = "N")]
    infrastructure_svn: Option<u64>,

    /// Let an environment variable whose parameter has no value match
    /// anything (`NAME=.*`), as az confcom does after asking.
    #[arg(long)]
    approve_wildcards: bool,

    /// Leave image references (`id`) out of the policy.
    #[arg(long)]
    omit_id: bool,

    /// Write secureValue variables as `NAME=.+` (re2) instead of in clear
    /// text. The policy then differs from az confcom's.
    #[arg(long)]
    secure_env_as_pattern: bool,

    /// ARM expressions: `confcom` substitutes bare parameters()/variables()
    /// only, as az confcom does (same host_data); `full` also evaluates
    /// concat() and format() and rejects other functions.
    #[arg(long, value_name = "MODE", default_value = "confcom")]
    arm_eval: ArmEvalArg,
}

/// Where the images come from, and how their layers are hashed: shared by
/// `policy generate`, `policy verify` and `deploy azure`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImageArgs {
    /// Read image REF from PATH: a `docker save` archive (legacy or Docker 25
    /// layout) or an OCI image layout (directory or tar). A bare PATH serves
    /// every image the other --image options do not name. Repeatable.
    #[arg(long = "image", value_name = "REF=PATH")]
    images: Vec<String>,

    /// Never pull from registries: every image needs an --image.
    #[arg(long)]
    offline: bool,

    /// Reach this registry host (`host` or `host:port`) over plain HTTP.
    /// Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,

    /// Docker config file with registry credentials (`auths`); default
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,

    /// Cache layer root hashes here (default
    /// `$XDG_CACHE_HOME/confsum/layers` or `~/.cache/confsum/layers`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Hash every layer, reading and writing no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,

    /// Never show a progress bar (it only appears on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ArmEvalArg {
    Confcom,
    Full,
}

/// Generate the policy of every container group of a template.
///
/// Writes the template with each group's ccePolicy set (--out), or prints the
/// policy (--print-policy: base64 as az confcom prints it; with --raw, the
/// Rego text). `host_data: <hex>` goes to stderr, one line per group, or,
/// with --json, a JSON object goes to stdout.
///
/// Exit status: 0 on success, 1 on any error, 2 for usage errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    input: Input,

    /// Write the template with the policy here (may be the input itself;
    /// written to a temporary file and renamed into place).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["print_policy", "json"])]
    out: Option<PathBuf>,

    /// Print the policy instead of writing a template.
    #[arg(long, conflicts_with = "out")]
    print_policy: bool,

    /// With --print-policy: print Rego text, not base64.
    #[arg(long, requires = "print_policy")]
    raw: bool,

    /// Print {"groups":[{"name","host_data","policy"}], "warnings"} on stdout.
    #[arg(long)]
    json: bool,

    /// Replace an existing --out file (the input template itself is
    /// always rewritten in place).
    #[arg(long, requires = "out")]
    force: bool,
}

/// Show a policy: versions, switches, fragments, and each container as
/// indented JSON.
///
/// INPUT is an ARM template (its ccePolicy values), a Rego policy, or its
/// base64; `-` reads standard input.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// Template, policy or base64 policy.
    #[arg(value_name = "INPUT")]
    input: PathBuf,
}

/// Print the host_data (SHA-256 of the exact policy bytes) of a policy.
///
/// One line per policy: `<64 hex digits>  <label>`. INPUT is an ARM template,
/// a Rego policy, or its base64; `-` reads standard input.
#[derive(Debug, clap::Args)]
pub(crate) struct HashArgs {
    /// Template, policy or base64 policy.
    #[arg(value_name = "INPUT")]
    input: PathBuf,
}

/// Show which container or field differs between two policies, and so why
/// their host_data differ.
///
/// Exit status: 0 when the policies are byte-identical, 2 when they differ,
/// 1 on errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct DiffArgs {
    /// First template, policy or base64 policy.
    a: PathBuf,
    /// Second template, policy or base64 policy.
    b: PathBuf,
    /// Print the changes as JSON.
    #[arg(long)]
    json: bool,
}

/// Check that a template's ccePolicy is exactly what `generate` gives for
/// these images, as `az confcom acipolicygen --diff` does.
///
/// Exit status: 0 when every group's policy matches, 2 on a mismatch (the
/// differences are printed), 1 on errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    input: Input,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: &Command) -> Result<ExitCode> {
    match command {
        Command::Generate(a) => run_generate(a),
        Command::Show(a) => run_show(a),
        Command::Hash(a) => run_hash(a),
        Command::Diff(a) => run_diff(a),
        Command::Verify(a) => run_verify(a),
        Command::Check(a) => crate::policy_check::run(a),
    }
}

fn options(input: &Input) -> GenerateOptions {
    let mut o = GenerateOptions::default();
    o.debug_mode = input.debug_mode;
    o.disable_stdio = input.disable_stdio;
    o.infrastructure_svn = input.infrastructure_svn.map(|n| n.to_string());
    o.approve_wildcards = input.approve_wildcards;
    o.omit_id = input.omit_id;
    o.secure_env_as_pattern = input.secure_env_as_pattern;
    o.arm_eval = match input.arm_eval {
        ArmEvalArg::Confcom => ArmEval::Confcom,
        ArmEvalArg::Full => ArmEval::Full,
    };
    o
}

fn load_template(input: &Input) -> Result<Template> {
    let text = std::fs::read_to_string(&input.template)
        .with_context(|| format!("cannot read {}", input.template.display()))?;
    let mut template =
        Template::parse(&text).with_context(|| format!("{}", input.template.display()))?;
    if let Some(p) = &input.parameters {
        let ptext =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        template = template.with_parameters(&ptext)?;
    }
    Ok(template)
}

fn sources(input: &ImageArgs) -> Result<ImageSources> {
    let mut s = ImageSources::new();
    for spec in &input.images {
        match spec.split_once('=') {
            Some((reference, path)) if !reference.is_empty() => s.insert(reference, path),
            _ => s.set_default_archive(spec),
        }
    }
    if !input.offline {
        let mut r = confsum_policy::RegistryOptions::default();
        r.insecure_hosts = input.insecure_registries.clone();
        r.docker_config = input.docker_config.clone();
        s.allow_registry(r);
    }
    Ok(s)
}

fn cache(input: &ImageArgs) -> LayerCache {
    if input.no_cache {
        return LayerCache::disabled();
    }
    match input.cache_dir.clone().or_else(LayerCache::default_dir) {
        Some(d) => LayerCache::new(d),
        None => LayerCache::disabled(),
    }
}

fn progress(disabled: bool) -> (Option<Progress>, Option<ProgressBar>) {
    if disabled || !io::stderr().is_terminal() {
        return (None, None);
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("layers");
    let b = bar.clone();
    let cb: Progress = Arc::new(move |e: &ProgressEvent| match e {
        ProgressEvent::LayerStarted { size, .. } => b.inc_length(size.unwrap_or(0)),
        ProgressEvent::Bytes(n) => b.inc(*n),
        _ => {}
    });
    (Some(cb), Some(bar))
}

fn run_generator(input: &Input) -> Result<(Template, Generated)> {
    let template = load_template(input)?;
    let generated = generate_policies(&template, &input.images, &options(input))?;
    Ok((template, generated))
}

/// The policies of `template`'s groups from these images, with a progress
/// bar on a terminal; warnings a user must see go to stderr.
pub(crate) fn generate_policies(
    template: &Template,
    images: &ImageArgs,
    options: &GenerateOptions,
) -> Result<Generated> {
    let sources = sources(images)?;
    let cache = cache(images);
    let (cb, bar) = progress(images.no_progress);
    let result = generate(template, &sources, options, &cache, cb.as_ref());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let generated = result?;
    for w in &generated.warnings {
        if matches!(
            w,
            Warning::SecureValueInClear { .. } | Warning::UnevaluatedExpression { .. }
        ) {
            eprintln!("confsum: warning: {w}");
        }
    }
    Ok(generated)
}

fn run_generate(args: &GenerateArgs) -> Result<ExitCode> {
    let (template, generated) = run_generator(&args.input)?;
    if let Some(out) = &args.out {
        let text = template.with_policies(&generated.texts())?;
        // Rewriting the template given as input is what --out is for.
        let in_place = crate::fsio::same_file(out, &args.input.template);
        let output = Output::create(out, "--out", args.force || in_place)?;
        output
            .file()
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
        output.commit([])?;
    }
    let mut stdout = crate::fsio::stdout();
    if args.json {
        let groups: Vec<serde_json::Value> = generated
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name,
                    "host_data": g.host_data,
                    "policy": g.text,
                })
            })
            .collect();
        let warnings: Vec<String> = generated.warnings.iter().map(ToString::to_string).collect();
        let v = serde_json::json!({"groups": groups, "warnings": warnings});
        writeln!(stdout, "{}", serde_json::to_string_pretty(&v)?)?;
    } else if args.print_policy {
        for g in &generated.groups {
            if args.raw {
                writeln!(stdout, "{}", g.text)?;
            } else {
                let b64 = base64::engine::general_purpose::STANDARD.encode(g.text.as_bytes());
                writeln!(stdout, "{b64}")?;
            }
        }
    }
    if !args.json {
        for g in &generated.groups {
            eprintln!("host_data: {}", g.host_data);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policies(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let data = crate::fsio::read_input(path)?;
    read_policy_input(&data).with_context(|| format!("{}", path.display()))
}

fn run_show(args: &ShowArgs) -> Result<ExitCode> {
    let mut out = crate::fsio::stdout();
    for (label, text) in policies(&args.input)? {
        let p = Policy::parse(&text).with_context(|| label.clone())?;
        writeln!(out, "# {label}")?;
        writeln!(out, "host_data: {}", host_data(text.as_bytes()))?;
        writeln!(
            out,
            "api_version: {}  framework_version: {}",
            p.api_version, p.framework_version
        )?;
        let s = p.switches;
        writeln!(
            out,
            "allow: properties_access={} dump_stacks={} runtime_logging={} environment_variable_dropping={} unencrypted_scratch={} capability_dropping={}",
            s.properties_access,
            s.dump_stacks,
            s.runtime_logging,
            s.environment_variable_dropping,
            s.unencrypted_scratch,
            s.capability_dropping
        )?;
        for f in &p.fragments {
            writeln!(
                out,
                "fragment: {} (issuer {}, minimum_svn {}, includes {})",
                f.feed,
                f.issuer,
                f.minimum_svn,
                f.includes.join(",")
            )?;
        }
        for (i, c) in p.containers.iter().enumerate() {
            let label = c.name.clone().or(c.id.clone()).unwrap_or_default();
            writeln!(out, "\ncontainer {i}: {label}")?;
            writeln!(out, "{}", serde_json::to_string_pretty(c)?)?;
        }
        if p.render() != text {
            writeln!(out, "\nnote: this text is not in az confcom's exact layout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_hash(args: &HashArgs) -> Result<ExitCode> {
    let mut out = crate::fsio::stdout();
    for (label, text) in policies(&args.input)? {
        writeln!(out, "{}  {label}", host_data(text.as_bytes()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_changes(out: &mut impl Write, changes: &[Change]) -> io::Result<()> {
    for c in changes {
        writeln!(out, "  {c}")?;
    }
    Ok(())
}

fn run_diff(args: &DiffArgs) -> Result<ExitCode> {
    let mut out = crate::fsio::stdout();
    let a = policies(&args.a)?;
    let b = policies(&args.b)?;
    if a.len() != b.len() {
        bail!(
            "{} holds {} policies and {} holds {}",
            args.a.display(),
            a.len(),
            args.b.display(),
            b.len()
        );
    }
    let mut differ = false;
    let mut report = Vec::new();
    for ((la, ta), (_, tb)) in a.iter().zip(&b) {
        let (ha, hb) = (host_data(ta.as_bytes()), host_data(tb.as_bytes()));
        if ta == tb {
            if !args.json {
                writeln!(out, "{la}: identical (host_data {ha})")?;
            }
            report.push(serde_json::json!({"policy": la, "identical": true, "host_data": ha}));
            continue;
        }
        differ = true;
        let pa = Policy::parse(ta).with_context(|| format!("{}", args.a.display()))?;
        let pb = Policy::parse(tb).with_context(|| format!("{}", args.b.display()))?;
        let changes = diff(&pa, &pb);
        if args.json {
            let list: Vec<serde_json::Value> = changes
                .iter()
                .map(|c| serde_json::json!({"path": c.path, "old": c.old, "new": c.new}))
                .collect();
            report.push(serde_json::json!({"policy": la, "identical": false, "host_data": [ha, hb], "changes": list}));
        } else {
            writeln!(out, "{la}: host_data {ha} -> {hb}")?;
            if changes.is_empty() {
                writeln!(
                    out,
                    "  same content, different layout (formatting or rule text)"
                )?;
            }
            print_changes(&mut out, &changes)?;
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(if differ {
        ExitCode::from(DIFFERENT)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let mut out = crate::fsio::stdout();
    let (template, generated) = run_generator(&args.input)?;
    let existing = template.existing_policies()?;
    let mut mismatch = false;
    let mut report = Vec::new();
    for (i, g) in generated.groups.iter().enumerate() {
        let current = existing.get(i).cloned().flatten();
        let ok = current.as_deref() == Some(g.text.as_str());
        mismatch |= !ok;
        let changes = match (&current, ok) {
            (Some(text), false) => match Policy::parse(text) {
                Ok(p) => diff(&p, &g.policy),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        if args.json {
            let list: Vec<serde_json::Value> = changes
                .iter()
                .map(|c| serde_json::json!({"path": c.path, "template": c.old, "generated": c.new}))
                .collect();
            report.push(serde_json::json!({
                "group": g.name,
                "match": ok,
                "host_data": g.host_data,
                "template_host_data": current.as_ref().map(|t| host_data(t.as_bytes())),
                "changes": list,
            }));
        } else if ok {
            writeln!(
                out,
                "{}: policy matches (host_data {})",
                g.name, g.host_data
            )?;
        } else if current.is_none() {
            writeln!(out, "{}: the template has no ccePolicy", g.name)?;
        } else {
            writeln!(
                out,
                "{}: policy differs (template host_data {}, generated {})",
                g.name,
                current
                    .as_ref()
                    .map(|t| host_data(t.as_bytes()))
                    .unwrap_or_default(),
                g.host_data
            )?;
            if changes.is_empty() {
                writeln!(
                    out,
                    "  same content, different layout or unparseable policy"
                )?;
            }
            print_changes(&mut out, &changes)?;
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(if mismatch {
        ExitCode::from(DIFFERENT)
    } else {
        ExitCode::SUCCESS
    })
}
