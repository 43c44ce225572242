//! `confsum encfs`: the data owner's encrypted file system images.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use confsum_encfs::{
    Escaped, FileKind, FormatOptions, Kdf, KeyFile, LockedImage, Luks2, SealOptions, SealSource,
    Volume, seal_into,
};

use crate::fsio::{
    Created, ExtractDir, Output, cannot_write_in, commit_guard, open_tar, refuse_inside,
};
use crate::progress;

use zeroize::Zeroizing;

/// Encrypted file system images (LUKS2 + ext4) that Azure's encfs sidecar
/// opens with the kernel and that confsum reads without privileges.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Create(CreateArgs),
    Ls(LsArgs),
    Cat(CatArgs),
    Extract(ExtractArgs),
    Dump(DumpArgs),
    AddKey(AddKeyArgs),
    RemoveKey(RemoveKeyArgs),
}

/// How to unlock an image.
#[derive(Debug, Args)]
pub(crate) struct Unlock {
    /// Key file whose bytes unlock a keyslot (the recipe's 32-byte key).
    #[arg(
        long,
        short = 'k',
        value_name = "K",
        required_unless_present = "passphrase_stdin"
    )]
    key_file: Option<PathBuf>,
    /// Read the passphrase from standard input instead (up to a newline).
    #[arg(long, conflicts_with = "key_file")]
    passphrase_stdin: bool,
}

impl Unlock {
    fn secret(&self) -> Result<Zeroizing<Vec<u8>>> {
        match &self.key_file {
            Some(path) => read_key_file(path),
            None => read_passphrase(),
        }
    }
}

/// Key derivation cost, as cryptsetup's --pbkdf-* options.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct KdfCost {
    /// PBKDF2 iterations, or Argon2id passes [default: 1000 for PBKDF2, 4 for Argon2id].
    #[arg(long, value_name = "N")]
    pbkdf_iterations: Option<u32>,
    /// Argon2id memory in KiB [default: 1048576, as cryptsetup].
    #[arg(long, value_name = "KIB", default_value_t = 1 << 20)]
    pbkdf_memory: u32,
    /// Argon2id lanes [default: 4, as cryptsetup].
    #[arg(long, value_name = "N", default_value_t = 4)]
    pbkdf_parallel: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KdfName {
    /// PBKDF2-SHA256: fast, fine for a full-entropy key file (the recipe).
    Pbkdf2,
    /// Argon2id: memory-hard, for passphrases a person chose.
    Argon2id,
}

/// Seal a directory (or a tar) into a new LUKS2 image.
///
/// Defaults follow the Azure recipe: aes-xts-plain64 with a 512-bit volume
/// key, 4096-byte sectors, keyslot 0 opened by a 32-byte random key file
/// through PBKDF2 (1000 iterations). If the key file does not exist it is
/// created (mode 0600); an existing one is used as it is, never replaced.
/// The image holds the content plus --free-space, or exactly --size; it is
/// written under a temporary name and renamed only once complete.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CreateArgs {
    /// Directory to seal.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "from_tar",
        conflicts_with = "from_tar"
    )]
    from: Option<PathBuf>,
    /// Tar file to seal instead, plain, gzip or zstd (`-` for standard
    /// input).
    #[arg(long, value_name = "TAR")]
    from_tar: Option<PathBuf>,
    /// Image to write.
    #[arg(long, value_name = "IMG")]
    out: PathBuf,
    /// Key file for keyslot 0: used if it exists, else created with 32
    /// random bytes (mode 0600).
    #[arg(
        long,
        short = 'k',
        value_name = "K",
        required_unless_present = "passphrase_stdin"
    )]
    key_file: Option<PathBuf>,
    /// Use a passphrase from standard input for keyslot 0 instead.
    #[arg(long, conflicts_with = "key_file")]
    passphrase_stdin: bool,
    /// Exact image size, header included (K, M, G suffixes; e.g. 64M).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Free space to leave in the file system when --size is not given.
    #[arg(long, value_parser = parse_size, default_value = "16M")]
    free_space: u64,
    /// Key derivation for keyslot 0 [default: pbkdf2 for a key file,
    /// argon2id for a passphrase].
    #[arg(long, value_enum)]
    kdf: Option<KdfName>,
    #[command(flatten)]
    cost: KdfCost,
    /// Encryption sector size: 512, 1024, 2048 or 4096.
    #[arg(long, default_value_t = 4096)]
    sector_size: u32,
    /// Replace an existing image.
    #[arg(long)]
    force: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// List a directory of a sealed image.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// The image.
    image: PathBuf,
    /// Directory inside the image.
    #[arg(default_value = "/")]
    path: String,
    #[command(flatten)]
    unlock: Unlock,
}

/// Write a file of a sealed image to standard output.
#[derive(Debug, Args)]
pub(crate) struct CatArgs {
    /// The image.
    image: PathBuf,
    /// File inside the image.
    path: String,
    #[command(flatten)]
    unlock: Unlock,
}

/// Copy everything in a sealed image into a new directory.
#[derive(Debug, Args)]
pub(crate) struct ExtractArgs {
    /// The image.
    image: PathBuf,
    /// Directory to create (or an empty one).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    #[command(flatten)]
    unlock: Unlock,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Show an image's header, the way `cryptsetup luksDump` does (never a key).
#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// The image.
    image: PathBuf,
}

/// Add a keyslot, like `cryptsetup luksAddKey`, to rotate keys without
/// re-encrypting the data.
#[derive(Debug, Args)]
pub(crate) struct AddKeyArgs {
    /// The image, changed in place.
    image: PathBuf,
    #[command(flatten)]
    unlock: Unlock,
    /// Key file for the new slot; created with 32 random bytes if missing.
    #[arg(long, value_name = "NK")]
    new_key_file: PathBuf,
    /// Replace an existing new key file.
    #[arg(long)]
    force: bool,
    /// Key derivation for the new slot.
    #[arg(long, value_enum, default_value = "pbkdf2")]
    kdf: KdfName,
    #[command(flatten)]
    cost: KdfCost,
}

/// Remove a keyslot, like `cryptsetup luksKillSlot`. The key given must open
/// another slot, so that a remaining key is proven to work.
#[derive(Debug, Args)]
pub(crate) struct RemoveKeyArgs {
    /// The image, changed in place.
    image: PathBuf,
    /// Keyslot to remove.
    #[arg(long)]
    slot: usize,
    #[command(flatten)]
    unlock: Unlock,
}

pub(crate) fn run(command: &Command) -> Result<ExitCode> {
    match command {
        Command::Create(a) => create(a),
        Command::Ls(a) => ls(a),
        Command::Cat(a) => cat(a),
        Command::Extract(a) => extract(a),
        Command::Dump(a) => dump(a),
        Command::AddKey(a) => add_key(a),
        Command::RemoveKey(a) => remove_key(a),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// `64M`, `1G`, `4096`: binary units.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err(format!("unknown unit in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("too large: {s:?}"))
}

fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    // KeyFile applies cryptsetup's size limit, naming the file.
    let key = KeyFile::load(path)?;
    Ok(Zeroizing::new(key.expose().to_vec()))
}

fn read_passphrase() -> Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(String::new());
    io::stdin()
        .read_line(&mut line)
        .context("cannot read the passphrase from standard input")?;
    let pass = line.trim_end_matches(['\n', '\r']);
    if pass.is_empty() {
        bail!("empty passphrase on standard input");
    }
    Ok(Zeroizing::new(pass.as_bytes().to_vec()))
}

/// Reads an existing key file for a new image, warning when others can read it.
fn existing_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        eprintln!(
            "confsum: warning: key file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    eprintln!("using the existing key file {}", path.display());
    read_key_file(path)
}

/// Creates a 32-byte random key file with mode 0600, returned with the
/// guard that removes it again unless the run succeeds. An existing file is
/// only replaced with `force`, and then through a rename, never truncated
/// in place.
fn new_key_file(path: &Path, flag: &str, force: bool) -> Result<(Zeroizing<Vec<u8>>, Created)> {
    if path.exists() && !force {
        bail!(
            "{flag} {} already exists; pass --force to replace it (data sealed with it becomes unreadable)",
            path.display()
        );
    }
    let key = KeyFile::generate()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".confsum-key-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| cannot_write_in(flag, path, dir, e))?;
    tmp.write_all(key.expose())?;
    tmp.as_file().sync_all()?;
    // Renamed and registered in one step, so an interrupt cannot leave an
    // unregistered key behind.
    let _commit = commit_guard();
    let persisted = if force {
        tmp.persist(path).map(drop)
    } else {
        tmp.persist_noclobber(path).map(drop)
    };
    persisted.map_err(|e| {
        anyhow::Error::new(e.error).context(format!("cannot write key file {}", path.display()))
    })?;
    Ok((Zeroizing::new(key.expose().to_vec()), Created::file(path)))
}

fn kdf(name: KdfName, cost: &KdfCost) -> Kdf {
    match name {
        KdfName::Pbkdf2 => Kdf::Pbkdf2 {
            iterations: cost.pbkdf_iterations.unwrap_or(1000),
        },
        KdfName::Argon2id => Kdf::Argon2id {
            time: cost.pbkdf_iterations.unwrap_or(4),
            memory_kib: cost.pbkdf_memory,
            parallel: cost.pbkdf_parallel,
        },
    }
}

/// A tar file, or standard input for `-`: plain, gzip or zstd, as
/// `layer-hash` reads layers.
fn create(a: &CreateArgs) -> Result<()> {
    if ![512, 1024, 2048, 4096].contains(&a.sector_size) {
        crate::usage_error(
            &["encfs", "create"],
            "--sector-size must be 512, 1024, 2048 or 4096",
        );
    }
    if let Some(dir) = &a.from {
        if !dir.is_dir() {
            bail!("--from {} is not a directory", dir.display());
        }
        refuse_inside(&a.out, "--out", dir, "--from")?;
        if let Some(key) = &a.key_file {
            refuse_inside(key, "--key-file", dir, "--from")?;
        }
    }
    // Before the key file, so a bad --out leaves no key behind.
    let output = Output::create(&a.out, "--out", a.force)?;
    let (secret, default_kdf, created_key) = match &a.key_file {
        Some(path) if path.exists() => (existing_key_file(path)?, KdfName::Pbkdf2, None),
        Some(path) => {
            let (key, created) = new_key_file(path, "--key-file", false)?;
            (key, KdfName::Pbkdf2, Some(created))
        }
        None => (read_passphrase()?, KdfName::Argon2id, None),
    };
    let mut options = SealOptions::default();
    options.format = FormatOptions::recipe();
    options.format.sector_size = a.sector_size;
    options.format.kdf = kdf(a.kdf.unwrap_or(default_kdf), &a.cost);
    options.size = a.size;
    options.free_space = a.free_space;

    // The image's size is known up front only with --size.
    let progress = progress::bytes(a.size, "sealing", a.no_progress);
    let mut report = |n: u64| progress.set_position(n);
    let file = output.file();
    // An error drops `output` and `created_key`, which removes both.
    let result = match (&a.from, &a.from_tar) {
        (Some(dir), _) => seal_into(SealSource::Dir(dir), file, &secret, &options, &mut report)
            .map_err(anyhow::Error::from),
        (None, Some(tar)) => open_tar(tar, |r, _| r).and_then(|mut input| {
            let source = SealSource::Tar(&mut input);
            Ok(seal_into(source, file, &secret, &options, &mut report)?)
        }),
        (None, None) => bail!("--from or --from-tar is required"),
    };
    progress.finish_and_clear();
    let report = result.with_context(|| format!("cannot seal into {}", a.out.display()))?;
    output.commit(created_key)?;
    eprintln!(
        "sealed {} ({} bytes, file system {} bytes, LUKS2 UUID {})",
        a.out.display(),
        report.image_size,
        report.filesystem_size,
        report.uuid
    );
    Ok(())
}

fn open(image: &Path, unlock: &Unlock) -> Result<Volume> {
    let secret = unlock.secret()?;
    // An Argon2id slot can take many seconds to derive; say what is going on.
    let waiting = progress::spinner("unlocking (key derivation)", false);
    let volume = Volume::open(image, &secret);
    waiting.finish_and_clear();
    volume.with_context(|| format!("cannot open {}", image.display()))
}

fn kind_char(k: FileKind) -> char {
    match k {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        _ => '?',
    }
}

fn ls(a: &LsArgs) -> Result<()> {
    let fs = open(&a.image, &a.unlock)?.filesystem()?;
    let entries = fs.list(&a.path)?;
    let mut out = crate::fsio::stdout();
    for e in entries {
        // Names are bytes; those that are not UTF-8 show escaped.
        let name = e.display_name();
        let link = if e.kind == FileKind::Symlink {
            format!(" -> {}", Escaped::new(&fs.read_link(&e.path)?))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{}{:04o} {:>6} {:>6} {:>12} {}{}",
            kind_char(e.kind),
            e.mode,
            e.uid,
            e.gid,
            e.size,
            name,
            link
        )?;
    }
    Ok(())
}

fn cat(a: &CatArgs) -> Result<()> {
    let fs = open(&a.image, &a.unlock)?.filesystem()?;
    let mut out = crate::fsio::stdout();
    fs.copy_to(&a.path, &mut out)?;
    out.flush()?;
    Ok(())
}

fn extract(a: &ExtractArgs) -> Result<()> {
    let fs = open(&a.image, &a.unlock)?.filesystem()?;
    let target = ExtractDir::create(&a.to)?;
    let progress = progress::bytes(None, "extracting", a.no_progress);
    let count = fs.extract(target.path(), &mut |n| progress.set_position(n));
    progress.finish_and_clear();
    // An error drops `target`, which removes the partial tree.
    let count = count.with_context(|| format!("cannot extract into {}", a.to.display()))?;
    target.commit()?;
    eprintln!("extracted {count} entries into {}", a.to.display());
    Ok(())
}

fn dump(a: &DumpArgs) -> Result<()> {
    let file =
        File::open(&a.image).with_context(|| format!("cannot open {}", a.image.display()))?;
    let luks = Luks2::read(&file).with_context(|| format!("cannot read {}", a.image.display()))?;
    let mut out = crate::fsio::stdout();
    writeln!(out, "LUKS header information")?;
    writeln!(out, "Version:       \t2")?;
    writeln!(out, "UUID:          \t{}", luks.uuid())?;
    writeln!(
        out,
        "Label:         \t{}",
        luks.label().unwrap_or("(no label)")
    )?;
    writeln!(out)?;
    writeln!(out, "Data segments:")?;
    writeln!(out, "  0: crypt")?;
    writeln!(out, "\toffset: {} [bytes]", luks.data_offset())?;
    match luks.segment_size() {
        Some(size) => writeln!(out, "\tlength: {size} [bytes]")?,
        None => writeln!(out, "\tlength: (whole device)")?,
    }
    writeln!(out, "\tcipher: {}", luks.cipher())?;
    writeln!(out, "\tsector: {} [bytes]", luks.sector_size())?;
    writeln!(out)?;
    writeln!(out, "Keyslots:")?;
    for k in luks.keyslots() {
        writeln!(out, "  {}: luks2", k.id)?;
        writeln!(out, "\tKey:        {} bits", k.key_size * 8)?;
        writeln!(out, "\tPBKDF:      {}", k.kdf)?;
        writeln!(out, "\t{}", k.kdf_params)?;
        writeln!(out, "\tArea offset:{} [bytes]", k.area_offset)?;
        writeln!(out, "\tArea length:{} [bytes]", k.area_size)?;
    }
    Ok(())
}

fn add_key(a: &AddKeyArgs) -> Result<()> {
    let existing = a.unlock.secret()?;
    // Locked (as cryptsetup locks) from here to the end: the header read is
    // the one changed, and no other key change interleaves.
    let mut image = LockedImage::open(&a.image)
        .with_context(|| format!("cannot open {} for writing", a.image.display()))?;
    // Check the existing key before creating a new key file.
    image
        .unlock(&existing)
        .with_context(|| format!("cannot open {}", a.image.display()))?;
    // Removed again on failure or interrupt: a key that opens nothing
    // would only mislead.
    let (new, created) = new_key_file(&a.new_key_file, "--new-key-file", a.force)?;
    let slot = image
        .add_key(&existing, &new, &kdf(a.kdf, &a.cost))
        .with_context(|| format!("cannot add a key to {}", a.image.display()))?;
    {
        let _commit = commit_guard();
        created.keep();
    }
    eprintln!(
        "added keyslot {slot}, opened by {}",
        a.new_key_file.display()
    );
    Ok(())
}

fn remove_key(a: &RemoveKeyArgs) -> Result<()> {
    let secret = a.unlock.secret()?;
    let mut image = LockedImage::open(&a.image)
        .with_context(|| format!("cannot open {} for writing", a.image.display()))?;
    image
        .remove_key(a.slot, &secret)
        .with_context(|| format!("cannot remove keyslot {} of {}", a.slot, a.image.display()))?;
    eprintln!("removed keyslot {}", a.slot);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
