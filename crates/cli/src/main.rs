//! `confsum`: confidential summarization, from layer hashes to key release.
#![forbid(unsafe_code)]

mod attest;
mod encfs;
mod layer_hash;
mod skr;
mod summarize;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Confidential summarization on Azure Confidential Containers, without root,
/// Docker or device-mapper.
#[derive(Debug, Parser)]
#[command(name = "confsum", version, propagate_version = true)]
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
    /// SEV-SNP attestation reports and tokens, checked offline.
    #[command(subcommand)]
    Attest(attest::Command),
    Summarize(summarize::Args),
    /// Secure key release: release policies and the key broker's audit log.
    #[command(subcommand)]
    Skr(skr::Command),
}

/// The bytes of `path`, or of standard input for `-`.
fn read_input(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;

    if path.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        Ok(data)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Reports a usage error the way clap does (with exit status 2) and exits.
fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::LayerHash(args) => layer_hash::run(&args),
        Command::Encfs(command) => encfs::run(&command),
        Command::Attest(command) => attest::run(&command).map(|()| ExitCode::SUCCESS),
        Command::Summarize(args) => summarize::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Skr(command) => skr::run(&command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confsum: {e:#}");
            let interrupted = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
            });
            // 128 + SIGINT, as shells report an interrupted command.
            if interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
