//! `confsum`, the command line over confsum's libraries: each subcommand
//! is a thin layer of argument parsing, file I/O and messages over one
//! crate.
//!
//! - `layer-hash`: dm-verity root hashes of container layers (`confsum-verity`);
//! - `encfs`: the owner's encrypted images (`confsum-encfs`);
//! - `attest`: SEV-SNP reports and tokens, the local attestation service
//!   and the emulated TEE (`confsum-attest`, `confsum-server`);
//! - `summarize`: T5 and BART summaries (`confsum-summarize`);
//! - `policy`: CCE policies, generated and checked (`confsum-policy`);
//! - `skr`: release policies and the key broker's audit log (`confsum-skr`);
//! - `deploy azure`: the files of an Azure deployment, and their check
//!   (`confsum-policy` and `confsum-skr`);
//! - `demo`: the whole flow on one machine, every party narrated;
//! - `serve` and `client`: the attested workload's HTTP API and the
//!   consumer's checks of it (`confsum-workload`).
//!
//! Files are written through `fsio::Output` and standard output through
//! `fsio::stdout`; errors are `anyhow` chains printed once by `failure`.
#![forbid(unsafe_code)]
// Doc comments here are clap's --help text, written for a terminal: bare
// URLs, <placeholders> and [brackets] are meant literally, not as Markdown,
// HTML or links.
#![allow(
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links
)]

mod attest;
mod demo;
mod deploy;
mod encfs;
mod fsio;
mod layer_hash;
mod policy;
mod policy_check;
mod progress;
mod skr;
mod skr_http;
mod summarize;
mod workload;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Confidential summarization on Azure Confidential Containers, without root,
/// Docker or device-mapper.
#[derive(Debug, Parser)]
#[command(
    name = "confsum",
    version = env!("CONFSUM_VERSION"),
    propagate_version = true,
    after_help = "Logging: RUST_LOG sets what is logged to stderr, in tracing's filter syntax \
(default: warn). RUST_LOG=info names each service's address; \
RUST_LOG=confsum_server::request=debug logs every request's method, path, status and \
time (never its query, headers or body)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    LayerHash(layer_hash::Args),
    /// Encrypted file system images (LUKS2 + ext4) for the data owner.
    #[command(subcommand)]
    Encfs(encfs::Command),
    /// SEV-SNP attestation reports and tokens, and a local attestation service.
    #[command(subcommand)]
    Attest(attest::Command),
    Summarize(summarize::Args),
    /// CCE policies for Confidential ACI, byte-identical to az confcom.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Secure key release: release policies, a key broker and its client.
    #[command(subcommand)]
    Skr(skr::Command),
    /// Deployment files for Azure Confidential Container Instances.
    #[command(subcommand)]
    Deploy(deploy::Command),
    Demo(demo::Args),
    Serve(workload::ServeArgs),
    /// The consumer: verify a workload before trusting its answers.
    #[command(subcommand)]
    Client(workload::ClientCommand),
}

/// Reports a usage error the way clap does (exit status 2), with the usage
/// of the subcommand at `path` (such as `["encfs", "create"]`), and exits.
fn usage_error(path: &[&str], message: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    cmd.error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::LayerHash(args) => layer_hash::run(&args),
        Command::Encfs(command) => encfs::run(&command),
        Command::Attest(command) => attest::run(&command).map(|()| ExitCode::SUCCESS),
        Command::Summarize(args) => summarize::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Policy(command) => policy::run(&command),
        Command::Skr(command) => skr::run(&command),
        Command::Deploy(command) => deploy::run(&command),
        Command::Demo(args) => demo::run(&args),
        Command::Serve(args) => workload::serve(&args),
        Command::Client(command) => workload::client(&command),
    };
    result.unwrap_or_else(|e| failure(&e))
}

/// Logs to stderr as `RUST_LOG` says (default `warn`). A filter that does
/// not parse is an error of the user's environment, so it is reported and
/// the default used, rather than refusing to run.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("confsum: warning: RUST_LOG ignored: {e}");
            EnvFilter::new("warn")
        }),
        _ => EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Whether `e` is a failed write to standard output (see [`failure`]).
fn stdout_failed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<fsio::StdoutError>())
    })
}

/// The exit status for an error, after reporting it (or not: a reader
/// that closed the pipe early wants no message).
fn failure(e: &anyhow::Error) -> ExitCode {
    let io_kinds = || {
        e.chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .collect::<Vec<_>>()
    };
    let stdout = io_kinds().into_iter().find_map(|io| {
        io.get_ref()
            .and_then(|inner| inner.downcast_ref::<fsio::StdoutError>())
    });
    if let Some(stdout) = stdout {
        if stdout.kind() == std::io::ErrorKind::BrokenPipe {
            // 128 + SIGPIPE: what a shell reports for a writer whose reader
            // went away, as `yes | head -1` does.
            return ExitCode::from(141);
        }
        eprintln!("confsum: {stdout}");
        return ExitCode::FAILURE;
    }
    eprintln!("confsum: {e:#}");
    let interrupted = io_kinds()
        .iter()
        .any(|io| io.kind() == std::io::ErrorKind::Interrupted);
    // 128 + SIGINT, as shells report an interrupted command.
    if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::FAILURE
    }
}
