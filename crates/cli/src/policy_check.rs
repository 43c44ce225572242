//! `confsum policy check`: runs a start-up sequence through a CCE policy, as
//! the utility VM's guest agent would, and says what it allows and why not.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use confsum_policy::check::{Decision, Enforcer, Request, Sequence, decode_policy};

/// Check a start-up sequence against a CCE policy, as the utility VM would.
///
/// POLICY is the policy's Rego, or an ARM template that carries it in
/// `properties.confidentialComputeProperties.ccePolicy` (base64). Its
/// decisions are made by confsum's enforcement framework, which follows
/// hcsshim's (framework 0.3.0, api 0.10.0), with the state the guest keeps
/// between requests: mounted layers, overlays, started containers, scratch,
/// loaded fragments.
///
/// STEPS.json is a list of requests, in the guest's order:
///
///   [{"rule": "mount_device",
///     "input": {"target": "/run/mounts/scsi/m0", "deviceHash": "16b5..."}},
///    {"rule": "mount_overlay",
///     "input": {"containerID": "pod", "layerPaths": ["/run/mounts/scsi/m0"],
///               "target": "/run/gcs/c/pod/rootfs"}},
///    {"rule": "create_container", "input": {"containerID": "pod", ...}}]
///
/// Inputs use the field names hcsshim gives the policy (an `input` copied
/// from a guest's denial message fits), and unknown fields are refused.
/// Rules: mount_device, unmount_device, mount_overlay, unmount_overlay,
/// create_container, exec_in_container, exec_external, shutdown_container,
/// signal_container_process, plan9_mount, plan9_unmount, scratch_mount,
/// scratch_unmount, load_fragment ({issuer, feed, rego}), get_properties,
/// dump_stacks, runtime_logging.
///
/// For each step it prints whether it is allowed and, if not, why; also the
/// environment variables and capabilities the guest would drop.
///
/// Exit status: 0 when every step is allowed, 1 when any is denied, 2 for
/// usage errors and for a policy or steps that cannot be read.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CheckArgs {
    /// The policy (Rego) or an ARM template with a ccePolicy; `-` reads
    /// standard input.
    #[arg(value_name = "POLICY")]
    policy: PathBuf,

    /// The steps (JSON); `-` reads standard input.
    #[arg(long, value_name = "STEPS.json")]
    input: PathBuf,

    /// Print the decisions as JSON: {"allowed": bool, "steps": [...]}.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &CheckArgs) -> Result<ExitCode> {
    match check(args) {
        Ok(all_allowed) => Ok(if all_allowed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        // A closed or full standard output is main's to report.
        Err(e) if crate::stdout_failed(&e) => Err(e),
        Err(e) => {
            // Not 1: scripts read 1 as "denied".
            eprintln!("confsum: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn check(args: &CheckArgs) -> Result<bool> {
    if args.policy.as_os_str() == "-" && args.input.as_os_str() == "-" {
        crate::usage_error(
            &["policy", "check"],
            "POLICY and --input cannot both be standard input",
        );
    }
    let document = crate::fsio::read_input(&args.policy)?;
    let policy = decode_policy(&document)
        .with_context(|| format!("no policy in {}", args.policy.display()))?;
    let mut enforcer = Enforcer::new(&policy)
        .with_context(|| format!("cannot load the policy {}", args.policy.display()))?;
    let steps = crate::fsio::read_input(&args.input)?;
    let sequence = Sequence::from_json(&steps)
        .with_context(|| format!("cannot read the steps in {}", args.input.display()))?;
    if sequence.steps.is_empty() {
        eprintln!("confsum: warning: {} has no steps", args.input.display());
    }
    let decisions = enforcer.run(&sequence.steps);
    let mut out = crate::fsio::stdout();
    let all_allowed = decisions.iter().all(|d| d.allowed);
    if args.json {
        let report = serde_json::json!({ "allowed": all_allowed, "steps": decisions });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for (i, (request, decision)) in sequence.steps.iter().zip(&decisions).enumerate() {
            print_decision(&mut out, i + 1, request, decision)?;
        }
        let allowed = decisions.iter().filter(|d| d.allowed).count();
        writeln!(
            out,
            "{allowed} of {} steps allowed{}",
            decisions.len(),
            if all_allowed { "" } else { "; denied" }
        )?;
    }
    Ok(all_allowed)
}

/// What the request is about, in a few words.
fn subject(request: &Request) -> String {
    match request {
        Request::MountDevice(i) => format!("{} at {}", i.device_hash, i.target),
        Request::UnmountDevice(i)
        | Request::UnmountOverlay(i)
        | Request::Plan9Unmount(i)
        | Request::ScratchUnmount(i) => i.unmount_target.clone(),
        Request::MountOverlay(i) => format!("{} at {}", i.container_id, i.target),
        Request::CreateContainer(i) => format!("{}: {}", i.container_id, i.arg_list.join(" ")),
        Request::ExecInContainer(i) => format!("{}: {}", i.container_id, i.arg_list.join(" ")),
        Request::ExecExternal(i) => i.arg_list.join(" "),
        Request::ShutdownContainer(i) => i.container_id.clone(),
        Request::SignalContainerProcess(i) => {
            format!(
                "{}: signal {} to {}",
                i.container_id,
                i.signal,
                i.arg_list.join(" ")
            )
        }
        Request::Plan9Mount(i) => i.target.clone(),
        Request::ScratchMount(i) => format!(
            "{} ({})",
            i.target,
            if i.encrypted {
                "encrypted"
            } else {
                "unencrypted"
            }
        ),
        Request::LoadFragment(i) => format!("{} from {}", i.feed, i.issuer),
        _ => String::new(),
    }
}

fn print_decision(
    out: &mut impl Write,
    index: usize,
    request: &Request,
    decision: &Decision,
) -> std::io::Result<()> {
    let verdict = if decision.allowed { "allow" } else { "DENY " };
    let subject = subject(request);
    let sep = if subject.is_empty() { "" } else { "  " };
    writeln!(out, "{index:>3} {verdict} {}{sep}{subject}", decision.rule)?;
    for reason in &decision.reasons {
        writeln!(out, "            - {reason}")?;
    }
    if let (
        Some(kept),
        Request::CreateContainer(_) | Request::ExecInContainer(_) | Request::ExecExternal(_),
    ) = (&decision.env_list, request)
    {
        let requested = match request {
            Request::CreateContainer(i) => &i.env_list,
            Request::ExecInContainer(i) => &i.env_list,
            Request::ExecExternal(i) => &i.env_list,
            _ => return Ok(()),
        };
        let dropped: Vec<&str> = requested
            .iter()
            .filter(|e| !kept.contains(e))
            .map(|e| e.split('=').next().unwrap_or_default())
            .collect();
        if !dropped.is_empty() {
            writeln!(out, "            dropped env: {}", dropped.join(", "))?;
        }
    }
    if let Some(kept) = &decision.caps_list {
        let requested = match request {
            Request::CreateContainer(i) => &i.capabilities,
            Request::ExecInContainer(i) => &i.capabilities,
            _ => return Ok(()),
        };
        let mut dropped: Vec<&str> = [
            (&requested.bounding, &kept.bounding),
            (&requested.effective, &kept.effective),
            (&requested.inheritable, &kept.inheritable),
            (&requested.permitted, &kept.permitted),
            (&requested.ambient, &kept.ambient),
        ]
        .into_iter()
        .flat_map(|(asked, kept)| {
            asked
                .iter()
                .filter(|c| !kept.contains(c))
                .map(String::as_str)
        })
        .collect();
        dropped.sort_unstable();
        dropped.dedup();
        if !dropped.is_empty() {
            writeln!(
                out,
                "            dropped capabilities: {}",
                dropped.join(", ")
            )?;
        }
    }
    Ok(())
}
