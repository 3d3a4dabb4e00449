//! Commands: keygen, seal, cat, mount. Errors are reported with `anyhow` context here and
//! nowhere else.

mod audit;
mod bucket;
mod daemon;
mod dicom;
mod dropbox;
mod gdrive;
mod identity;
mod mount;
mod output;
mod verify;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rayon::prelude::*;

use smpfs::backend::Source;
use smpfs::bucket::{policy, write, BucketError, ManifestStore, SeenGenerations};
use smpfs::cache::LockedRegion;
use smpfs::format::CHUNK_LOG2_RANGE;
use smpfs::keys::{Identity, KeyError, Recipient};
use smpfs::seal::{plan, seal_file, SealOptions, Sealed};
use smpfs::vault::{Plaintext, SealedObject};
use zeroize::Zeroizing;

use output::{escape_controls, escaped_fields, is_broken_pipe, out, say};

#[derive(Parser)]
#[command(
    name = "smpfs",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SMPFS_COMMIT"), ")"),
    about = "Mount buckets of sealed (client-side encrypted) files read-only"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a workstation identity (X25519 secret key, mode 0600) and print its recipient.
    Keygen {
        /// Where to write the identity; an existing file is never overwritten.
        #[arg(long, short)]
        out: PathBuf,
        /// Seal the identity with a passphrase, asked twice on the terminal.
        #[arg(long)]
        passphrase: bool,
        /// Seal the identity with the passphrase in this file (its first line).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Keep the secret only wrapped by this AWS KMS key (`aws:` then a key id, key ARN,
        /// `alias/NAME` or alias ARN); every load asks KMS to unwrap it, so disabling the
        /// key revokes this identity everywhere.
        #[arg(long, value_name = "aws:KEY", conflicts_with_all = ["passphrase", "passphrase_file", "pkcs11"])]
        kms: Option<String>,
        /// Keep the secret only wrapped by a non-extractable AES key in a PKCS#11 token
        /// (created if the label is new): `pkcs11:token=LABEL;object=LABEL?module-path=LIB`
        /// with `&pin-source=file:PATH` or `&pin-value=PIN` (never stored), else the PIN is
        /// asked for.
        #[arg(long, value_name = "URI", conflicts_with_all = ["passphrase", "passphrase_file"])]
        pkcs11: Option<String>,
    },
    /// Print an identity's public recipient (`smpfs1…`), derived from its secret key.
    Recipient {
        /// The identity file.
        identity: PathBuf,
        /// Its passphrase, as the first line of this file (instead of a prompt).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Set, change or remove an identity's passphrase (argon2id), replacing the file
    /// atomically: a failure leaves the old file whole.
    Passwd {
        /// The identity file.
        identity: PathBuf,
        /// The current passphrase, as the first line of this file (instead of a prompt).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The new passphrase, as the first line of this file (instead of asking twice).
        #[arg(long, value_name = "FILE", conflicts_with = "remove")]
        new_passphrase_file: Option<PathBuf>,
        /// Store the secret key without a passphrase.
        #[arg(long)]
        remove: bool,
    },
    /// Print who new files of a bucket are sealed to (a v2 manifest, or a v1 bucket's list).
    Recipients {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
    },
    /// Seal files and directory trees into a bucket, keeping relative paths.
    Seal(SealArgs),
    /// Print a sealed DICOM file's header attributes (up to the pixel data), decrypted in
    /// locked memory, to standard output.
    Inspect(ObjectArgs),
    /// Decrypt one sealed file of a bucket to standard output, or to a new file.
    Cat {
        #[command(flatten)]
        object: ObjectArgs,
        /// Write to this new file (mode 0600), which appears only once the whole file was
        /// decrypted and authenticated; an existing file is never replaced.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List a zero-knowledge bucket's files (size, mtime, path) from its sealed manifest,
    /// without mounting.
    Ls {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Only this file, or the files below this directory.
        path: Option<String>,
        /// Also print each file's object key in the bucket (after its size).
        #[arg(long)]
        objects: bool,
    },
    /// Remove files or directories from a zero-knowledge bucket (its manifest first, then
    /// their objects).
    Rm {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Paths to remove, as a mount shows them; a directory removes everything below.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Rewrite a v1 bucket (objects under their paths) as a zero-knowledge v2 bucket,
    /// decrypting into locked memory only; resumable.
    Migrate {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Recipients to seal the v2 objects to (default: the identity's own).
        #[arg(long = "to")]
        recipients: Vec<String>,
        /// Pad each file's plaintext to a Padmé size (at most +12%).
        #[arg(long)]
        pad: bool,
    },
    /// Add or remove readers of a zero-knowledge bucket: every file gets a new header
    /// (its file key wrapped to the new list); chunks are never sent again. A removed
    /// reader who kept keys or copies can still read old data: `rotate` revokes.
    Share {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Recipient (`smpfs1…`) to add; repeat for several.
        #[arg(long = "add", value_name = "RECIPIENT")]
        add: Vec<String>,
        /// Recipient to remove; repeat for several.
        #[arg(long = "remove", value_name = "RECIPIENT")]
        remove: Vec<String>,
    },
    /// Seal every file of a zero-knowledge bucket again under fresh keys, to its
    /// recipients less `--remove` (true revocation); resumable.
    Rotate {
        #[command(flatten)]
        bucket: bucket::BucketArgs,
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Recipients that may no longer read the bucket.
        #[arg(long = "remove", value_name = "RECIPIENT")]
        remove: Vec<String>,
        /// Pad every file's plaintext to a Padmé size (padded files stay padded anyway).
        #[arg(long)]
        pad: bool,
    },
    /// Authenticate every chunk of every object of a bucket (and, in a zero-knowledge
    /// bucket, every manifest entry); report tampered, truncated, unreadable, orphaned and
    /// missing objects. Exits 0 only when everything verifies.
    Verify(verify::VerifyArgs),
    /// Print a sealed object's header: format version, recipient stanzas, chunk size,
    /// plaintext size, file id and (if this identity opens it) its bound path.
    Info(verify::InfoArgs),
    /// Mount a bucket read-only; returns once the mount is live (unless -f).
    Mount(mount::MountArgs),
    /// Purge a mount now: zeroize its cache, drop its keys, seal its audit segment, and
    /// detach it (works with files still open; they then fail).
    Purge {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Purge a mount's keys and cache but keep it mounted; reads fail with EACCES (and are
    /// audited) until `smpfs unlock`.
    Lock {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Load a locked mount's identity again.
    Unlock {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Read a zero-knowledge bucket's manifest again now: new files appear, removed ones
    /// vanish (mounts also do this every `-o refresh=`, default 60s).
    Refresh {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Show a mount's state: its source, whether it is locked, requests in flight, the
    /// memory and disk caches (size, hits, misses) and the audit log.
    Status {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Print the daemon's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// State why this terminal session reads from a mount: every later audit record of a
    /// process in the session carries it; needed with `-o require_purpose`.
    Purpose {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The purpose, e.g. `tumour board 2026-12-04` or an ethics approval number.
        #[arg(required = true, num_args = 1..)]
        purpose: Vec<String>,
    },
    /// Manage a disk cache directory (`-o disk_cache=DIR`).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Overwrite files (e.g. the plaintext you just sealed), then rename and remove them;
    /// directories recursively. SSDs and copy-on-write filesystems may keep old blocks.
    Shred {
        /// Files or directories to shred; symbolic links are removed, never followed.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Overwrite passes (random data, the last one zeros).
        #[arg(long, default_value_t = 3)]
        passes: u32,
    },
    /// Audit logs: set one up for an auditor, verify it offline, show or export it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Google Drive: log in once for mounts and seals.
    Gdrive {
        #[command(subcommand)]
        command: gdrive::GdriveCommand,
    },
    /// Dropbox: log in once for mounts and seals.
    Dropbox {
        #[command(subcommand)]
        command: dropbox::DropboxCommand,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (smpfs.1 and one per command) into DIR.
    Manpages {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// One sealed file of a bucket, for `cat` and `inspect`.
#[derive(clap::Args)]
struct ObjectArgs {
    /// The bucket: a directory, s3://BUCKET[/PREFIX], az://ACCOUNT/CONTAINER[/PREFIX], a
    /// Drive or Dropbox folder, as for `mount`.
    bucket: String,
    /// The file's path in the bucket, as a mount of it shows it (e.g. `CT/1.dcm`).
    path: String,
    /// Identity file to open it with.
    #[arg(long, short)]
    identity: PathBuf,
    /// The identity's passphrase, as the first line of this file (instead of a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Backend options, comma-separated, as for `seal` (endpoint=URL, region=, …).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    #[command(flatten)]
    audit: audit::AuditArgs,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove every cached piece (the directory stays); refused while a mount uses it.
    Clear {
        /// The cache directory.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct SealArgs {
    /// Files or directories to seal. A directory's files keep their paths below it.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// Recipient (`smpfs1…`) that may open the files; repeat for several. Default: the
    /// bucket's recipients (from its manifest), or the identity's own for a new bucket.
    #[arg(long = "to")]
    recipients: Vec<String>,
    /// Identity file: needed to update a zero-knowledge bucket's manifest.
    #[arg(long, short)]
    identity: Option<PathBuf>,
    /// The identity's passphrase, as the first line of this file (instead of a prompt).
    #[arg(long, value_name = "FILE", requires = "identity")]
    passphrase_file: Option<PathBuf>,
    /// Bucket layout for a new bucket: `v2` (zero-knowledge: opaque object names and a
    /// sealed manifest; the default) or `v1` (objects under their paths). An existing
    /// bucket keeps its layout.
    #[arg(long, value_name = "LAYOUT")]
    layout: Option<Layout>,
    /// Pad each file's plaintext to a Padmé size (at most +12%), so exact sizes do not
    /// identify a file (v2 only).
    #[arg(long)]
    pad: bool,
    /// The bucket: a directory (created if missing), s3://BUCKET[/PREFIX],
    /// az://ACCOUNT/CONTAINER[/PREFIX] or a Drive folder (gdrive://FOLDER_ID[/PATH], gdrive:///My Drive/PATH,
    /// gdrive:///Shared drives/NAME/PATH; missing folders are created) or a Dropbox
    /// folder (dropbox:///PATH).
    #[arg(long)]
    out: String,
    /// Plaintext bytes per chunk: a power of two from 4K to 64K.
    #[arg(long, default_value = "64K")]
    chunk_size: String,
    /// Replace objects that already exist. Otherwise an object of the size this file
    /// seals to is kept (a re-run after an interruption) and any other is reported.
    #[arg(long)]
    overwrite: bool,
    /// Backend options, comma-separated: endpoint=URL, region=, profile=,
    /// path_style[=on|off] (S3; endpoint=URL is also Azure's blob endpoint);
    /// gdrive_credentials=PATH, gdrive_token=PATH (Drive); dropbox_token=PATH,
    /// dropbox_endpoint=URL (Dropbox); timeout=DURATION.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// De-identify DICOM files while sealing (PS3.15 Annex E); PROFILE is `basic` (the
    /// default) or `basic+keep-technical`. Other files are reported and skipped.
    #[arg(
        long,
        value_name = "PROFILE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "basic"
    )]
    deidentify: Option<String>,
    /// Secret for the keyed UID and Patient ID mappings (32 bytes, created 0600 if
    /// missing); the same key gives the same pseudonyms in every run.
    #[arg(long, value_name = "FILE", requires = "deidentify")]
    deid_key: Option<PathBuf>,
}

/// How a bucket stores its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    /// Objects under their paths.
    V1,
    /// Objects under random ids, with a sealed manifest.
    V2,
}

/// Runs the command line and turns errors into a message and exit status 1.
pub fn main() -> ExitCode {
    if let Err(e) = smpfs::harden::harden_process() {
        say!("smpfs: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if invoked_as == "mount.smpfs" {
        return match mount::mount_helper(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("mount.smpfs: {}", report(&e));
                ExitCode::from(mount::MOUNT_FAILURE)
            }
        };
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Keygen {
            out,
            passphrase,
            passphrase_file,
            kms,
            pkcs11,
        } => identity::Protection::from_args(passphrase, passphrase_file, kms, pkcs11)
            .and_then(|protection| identity::keygen(&out, &protection)),
        Command::Seal(args) => seal(args),
        Command::Recipient {
            identity,
            passphrase_file,
        } => identity::recipient(&identity, passphrase_file.as_deref()),
        Command::Passwd {
            identity,
            passphrase_file,
            new_passphrase_file,
            remove,
        } => identity::passwd(
            &identity,
            passphrase_file.as_deref(),
            &identity::NewPassphrase {
                file: new_passphrase_file,
                remove,
            },
        ),
        Command::Recipients { bucket, audit } => bucket::recipients(&bucket, &audit),
        Command::Inspect(args) => dicom::inspect(&args),
        Command::Cat { object, out } => cat(&object, out.as_deref()),
        Command::Verify(args) => verify::verify(&args),
        Command::Info(args) => verify::info(&args),
        Command::Mount(args) => mount::mount(args, 1),
        Command::Ls {
            bucket,
            audit,
            path,
            objects,
        } => bucket::ls(&bucket, &audit, path.as_deref(), objects),
        Command::Rm {
            bucket,
            audit,
            paths,
        } => bucket::rm(&bucket, &audit, &paths),
        Command::Share {
            bucket,
            audit,
            add,
            remove,
        } => bucket::share(&bucket, &audit, &add, &remove),
        Command::Rotate {
            bucket,
            audit,
            remove,
            pad,
        } => bucket::rotate(&bucket, &audit, &remove, pad),
        Command::Migrate {
            bucket,
            audit,
            recipients,
            pad,
        } => bucket::migrate(&bucket, &audit, &recipients, pad),
        Command::Audit { command } => audit::run(command),
        Command::Gdrive { command } => gdrive::run(command),
        Command::Dropbox { command } => dropbox::run(command),
        Command::Purge { mountpoint } => control(&mountpoint, smpfs::control::Command::Purge),
        Command::Lock { mountpoint } => control(&mountpoint, smpfs::control::Command::Lock),
        Command::Unlock { mountpoint } => control(&mountpoint, smpfs::control::Command::Unlock),
        Command::Refresh { mountpoint } => control(&mountpoint, smpfs::control::Command::Refresh),
        Command::Status { mountpoint, json } => status(&mountpoint, json),
        Command::Purpose {
            mountpoint,
            purpose,
        } => smpfs::control::send_with(
            &mountpoint,
            smpfs::control::Command::Purpose,
            &purpose.join(" "),
        )
        .map_err(anyhow::Error::from)
        .and_then(|reply| Ok(out!("{}: {reply}", mountpoint.display())?)),
        Command::Cache {
            command: CacheCommand::Clear { dir },
        } => smpfs::diskcache::clear(&dir)
            .map_err(anyhow::Error::from)
            .map(|removed| say!("{}: {removed} cached pieces removed", dir.display())),
        Command::Shred { paths, passes } => shred(&paths, passes),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "smpfs", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => manpages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing more is wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say!("smpfs: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Backend options from `-o` arguments of a command that takes no others.
pub fn backend_options(
    options: &[String],
    command: &str,
) -> Result<smpfs::backend::BackendOptions> {
    let mut parsed = smpfs::backend::BackendOptions::default();
    for item in options.iter().flat_map(|o| o.split(',')) {
        if !smpfs::options::parse_backend_option(&mut parsed, item)? {
            bail!("unknown {command} option {item:?} ({command} takes S3, Azure, Drive and Dropbox options only)");
        }
    }
    Ok(parsed)
}

/// The audit anchor at `target`: a file, or checkpoint objects under an S3 prefix.
pub fn anchor_target(
    target: &Source,
    s3: &smpfs::backend::S3Options,
    retention: std::time::Duration,
) -> Result<smpfs::audit::AnchorTarget> {
    Ok(match target {
        Source::Local(path) => smpfs::audit::AnchorTarget::File(path.clone()),
        Source::S3(location) => smpfs::audit::AnchorTarget::Store(Arc::new(
            smpfs::backend::S3Checkpoints::open(location.clone(), s3, retention)?,
        )),
        Source::GDrive(_) => {
            bail!("audit anchors on Google Drive are not supported; use a file or s3://")
        }
        Source::Dropbox(_) => {
            bail!("audit anchors on Dropbox are not supported; use a file or s3://")
        }
        Source::Azure(_) => {
            bail!("audit anchors on Azure Blob Storage are not supported; use a file or s3://")
        }
    })
}

/// An error and its causes on one line, leaving out causes a message already quotes.
pub fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    escape_controls(&text).into_owned()
}

fn shred(paths: &[PathBuf], passes: u32) -> Result<()> {
    init_stderr_logging();
    say!("note: {}", smpfs::shred::LIMITS);
    let report = smpfs::shred::shred(paths, passes, &mut |path| {
        say!("shredded {}", path.display())
    })?;
    out!(
        "shredded {} files ({} bytes, {passes} passes), {} directories, {} symlinks",
        report.files,
        report.bytes,
        report.dirs,
        report.symlinks
    )?;
    Ok(())
}

fn control(mountpoint: &std::path::Path, command: smpfs::control::Command) -> Result<()> {
    let reply = smpfs::control::send(mountpoint, command)?;
    out!("{}: {reply}", mountpoint.display())?;
    Ok(())
}

/// `smpfs status MOUNTPOINT`: the daemon's JSON, or one `name: value` line per field.
fn status(mountpoint: &std::path::Path, json: bool) -> Result<()> {
    let reply = smpfs::control::send(mountpoint, smpfs::control::Command::Status)?;
    if json {
        out!("{reply}")?;
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(&reply).context("the daemon's status is not JSON")?;
    fn print(prefix: &str, value: &serde_json::Value) -> Result<()> {
        match value {
            serde_json::Value::Object(fields) => {
                for (name, field) in fields {
                    let name = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    print(&name, field)?;
                }
            }
            serde_json::Value::Null => out!("{prefix}: none")?,
            serde_json::Value::String(text) => out!("{prefix}: {}", escape_controls(text))?,
            other => out!("{prefix}: {other}")?,
        }
        Ok(())
    }
    print("", &value)
}

/// The first line of a passphrase file.
pub fn read_passphrase_file(path: &std::path::Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading passphrase file {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or_default().to_owned(),
    ))
}

/// Where a passphrase comes from, in order: `passphrase_file`, the systemd credential
/// `smpfs-passphrase` (`$CREDENTIALS_DIRECTORY`), then a prompt on the terminal.
pub fn passphrase_source(
    identity: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> impl FnMut() -> Result<Zeroizing<String>, KeyError> {
    let identity = identity.to_owned();
    let file = passphrase_file
        .map(std::path::Path::to_path_buf)
        .or_else(|| {
            let credential = std::path::Path::new(&std::env::var_os("CREDENTIALS_DIRECTORY")?)
                .join("smpfs-passphrase");
            credential.exists().then_some(credential)
        });
    move || match &file {
        Some(file) => {
            read_passphrase_file(file).map_err(|e| KeyError::NoPassphrase(format!("{e:#}")))
        }
        None => rpassword::prompt_password(format!("Passphrase for {}: ", identity.display()))
            .map(Zeroizing::new)
            .map_err(|e| {
                KeyError::NoPassphrase(format!("no terminal to ask on ({e}); use passphrase_file="))
            }),
    }
}

/// Loads an identity, asking for its passphrase only if it has one.
pub fn load_identity(
    path: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> Result<Identity> {
    Ok(Identity::load_with(
        path,
        &mut passphrase_source(path, passphrase_file),
        &mut smpfs::custody::unwrapper(passphrase_source(path, passphrase_file)),
    )?)
}

/// Crates whose log lines could quote DICOM values: always silenced.
const SILENCED: &[&str] = &[
    "dicom_object=off",
    "dicom_parser=off",
    "dicom_encoding=off",
    "dicom_core=off",
    "dicom_transfer_syntax_registry=off",
];

fn init_stderr_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("SMPFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
    for directive in SILENCED {
        filter = filter.add_directive(directive.parse().expect("valid directive"));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(escaped_fields())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}

fn parse_chunk_size(text: &str) -> Result<u8> {
    let bytes = smpfs::options::parse_size(text)?;
    let log2 = bytes.trailing_zeros() as u8;
    if !bytes.is_power_of_two() || !CHUNK_LOG2_RANGE.contains(&log2) {
        bail!("chunk size {text} must be a power of two from 4K to 64K");
    }
    Ok(log2)
}

fn seal(args: SealArgs) -> Result<()> {
    init_stderr_logging();
    let deid = match (&args.deidentify, &args.deid_key) {
        (Some(profile), Some(key)) => {
            Some((profile.parse::<smpfs::dicom::profile::Profile>()?, key))
        }
        (Some(_), None) => {
            bail!("--deidentify needs --deid-key FILE (created with mode 0600 if missing)")
        }
        (None, _) => None,
    };
    let chunk_log2 = parse_chunk_size(&args.chunk_size)?;
    let backend_options = backend_options(&args.options, "seal")?;
    let out: Source = args.out.parse()?;
    if let Source::Local(dir) = &out {
        let out_real = resolve_to_be(dir).with_context(|| format!("{}", dir.display()))?;
        for source in &args.sources {
            let real = source
                .canonicalize()
                .with_context(|| format!("{}", source.display()))?;
            if out_real.starts_with(&real) {
                bail!(
                    "output {} is inside source {}; nothing was created",
                    dir.display(),
                    source.display()
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let jobs = plan(&args.sources)?;
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    let backend = out.open(&backend_options, true)?;
    let identity = args
        .identity
        .as_deref()
        .map(|path| load_identity(path, args.passphrase_file.as_deref()))
        .transpose()?;
    let store = ManifestStore::new(Arc::clone(&backend), SeenGenerations::default_location());
    let manifest = match &identity {
        Some(identity) => store.load(identity)?,
        None if store.has_manifest()? => return Err(BucketError::NeedsIdentity.into()),
        None => None,
    };
    let layout = if manifest.is_some() {
        Layout::V2
    } else if backend
        .list()?
        .iter()
        .any(|o| !smpfs::bucket::is_v2_object(&o.key))
    {
        // v1 files (or a v1 recipient list). Objects of the v2 layout alone are another
        // sealer's first generation, still being written.
        Layout::V1
    } else {
        args.layout.unwrap_or(Layout::V2)
    };
    match args.layout {
        Some(asked) if asked != layout => bail!(
            "{out} is a {layout:?} bucket, not {asked:?}: it keeps its layout \
             (`smpfs migrate` turns v1 into v2)"
        ),
        _ => {}
    }
    if args.pad && layout == Layout::V1 {
        bail!("--pad needs a zero-knowledge (v2) bucket; {out} is v1");
    }
    // A v1 bucket's list is read only when it is needed (no --to) or may be written.
    let v1_list = match (&identity, layout) {
        (Some(identity), Layout::V1) if args.recipients.is_empty() => {
            policy::read(&store, identity)?
        }
        // With --to the list is only compared: one this identity cannot open is kept.
        (Some(identity), Layout::V1) => policy::read(&store, identity).unwrap_or(None),
        _ => None,
    };
    let recipients = if !args.recipients.is_empty() {
        parse_recipients(&args.recipients)?
    } else if let Some(manifest) = &manifest {
        manifest.recipients.clone()
    } else if let Some(list) = &v1_list {
        list.clone()
    } else if layout == Layout::V1 && backend.stat(policy::POLICY_KEY)?.is_some() {
        bail!("{out} has a sealed recipient list: give -i IDENTITY to read it, or --to RECIPIENT");
    } else if let Some(identity) = &identity {
        vec![identity.recipient()]
    } else {
        bail!("give --to RECIPIENT (or -i IDENTITY to seal to yourself)");
    };
    if layout == Layout::V1 {
        if let Some(job) = jobs.iter().find(|j| policy::is_policy_key(&j.logical_path)) {
            bail!(
                "{}: `{}` is the name under which a v1 bucket keeps its recipient list; \
                 rename the file",
                job.source.display(),
                policy::POLICY_KEY
            );
        }
        match &v1_list {
            Some(list) if *list != recipients => say!(
                "note: these files are sealed to other recipients than {out}'s list \
                 (`smpfs recipients`); the list is unchanged"
            ),
            Some(_) => {}
            None if backend.stat(policy::POLICY_KEY)?.is_none() => {
                policy::write(&backend, &recipients)?;
            }
            // A list sealed to others, kept as it is.
            None => {}
        }
    }
    let options = SealOptions {
        recipients,
        chunk_log2,
        overwrite: args.overwrite,
    };
    if let Some((profile, key)) = deid {
        let destination = match layout {
            Layout::V1 => dicom::Destination::V1(&backend),
            Layout::V2 => dicom::Destination::V2(&store, identity.as_ref()),
        };
        return dicom::seal_deidentified(destination, &jobs, &options, profile, key, &out);
    }
    let pool = sealing_pool(backend.as_ref())?;
    let bar = progress_bar(total);
    let started = std::time::Instant::now();
    if layout == Layout::V2 {
        let report = pool.install(|| {
            write::seal_files(
                &store,
                identity.as_ref(),
                manifest.unwrap_or_default(),
                &jobs,
                &options,
                args.pad,
                &|n| bar.inc(n),
            )
        })?;
        bar.finish_and_clear();
        for failure in &report.failed {
            say!("smpfs: not sealed: {}", escape_controls(failure));
        }
        let secs = started.elapsed().as_secs_f64();
        let mib = report.bytes as f64 / (1 << 20) as f64;
        say!(
            "sealed {} new and {} changed files ({mib:.1} MiB; {} unchanged) into {out} in \
             {secs:.2}s ({:.0} MiB/s); manifest generation {}",
            report.added,
            report.updated,
            report.unchanged,
            mib / secs.max(1e-9),
            report.generation
        );
        if !report.failed.is_empty() {
            bail!("{} files were not sealed", report.failed.len());
        }
        return Ok(());
    }
    let sealed_bytes = AtomicU64::new(0);
    let already_there = AtomicU64::new(0);
    let failures: Vec<String> = pool.install(|| {
        jobs.par_iter()
            .filter_map(
                |job| match seal_file(&backend, job, &options, &|n| bar.inc(n)) {
                    Ok(Sealed::Written) => {
                        sealed_bytes.fetch_add(job.size, Ordering::Relaxed);
                        None
                    }
                    Ok(Sealed::AlreadyThere) => {
                        already_there.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Err(e) => Some(format!("{}: {e}", job.source.display())),
                },
            )
            .collect()
    });
    bar.finish_and_clear();
    for failure in &failures {
        say!("smpfs: not sealed: {failure}");
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = sealed_bytes.load(Ordering::Relaxed);
    let kept = already_there.load(Ordering::Relaxed);
    if kept > 0 {
        say!("{kept} files were already sealed there (kept; --overwrite replaces them)");
    }
    say!(
        "sealed {} of {} files ({:.1} MiB) into {} (v1 layout) in {:.2}s ({:.0} MiB/s)",
        jobs.len() - failures.len() - kept as usize,
        jobs.len(),
        bytes as f64 / (1 << 20) as f64,
        out,
        secs,
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    if !failures.is_empty() {
        bail!("{} files were not sealed", failures.len());
    }
    Ok(())
}

/// Parses `smpfs1…` recipients.
fn parse_recipients(texts: &[String]) -> Result<Vec<Recipient>> {
    Ok(texts
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<Vec<_>, _>>()?)
}

/// Threads for sealing into `backend`: the cores, or more for a remote store, which is
/// latency-bound and wants several objects in flight.
fn sealing_pool(backend: &dyn smpfs::backend::Backend) -> Result<rayon::ThreadPool> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(backend.read_profile().parallel_requests);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting sealing threads")
}

/// A progress bar of `total` plaintext bytes on stderr (hidden when it is not a terminal).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// Writes `smpfs.1` and a page per command (`smpfs-mount.1`, …) into `dir`.
fn manpages(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}

/// Where `path` will be once created: its deepest existing ancestor resolved (symlinks
/// and `..` as the kernel will follow them), joined with the components still missing.
fn resolve_to_be(path: &std::path::Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    for name in missing.into_iter().rev() {
        match name.to_str() {
            Some("..") => {
                resolved.pop();
            }
            Some(".") => {}
            _ => resolved.push(name),
        }
    }
    Ok(resolved)
}

/// Opens one sealed file of a bucket (of either layout) with the identity of `args`
/// (asking for its passphrase if it has one), checking it as a mount does, and runs
/// `work` on it with `command`'s audit segment open, once its whole plaintext is recorded
/// as read (`open` and `read` records). The identity is dropped before `work` runs.
fn with_sealed(
    args: &ObjectArgs,
    command: &str,
    work: impl FnOnce(SealedObject) -> Result<()>,
) -> Result<()> {
    let opened = bucket::open(&args.bucket, &args.options, command, false)?;
    let identity = load_identity(&args.identity, args.passphrase_file.as_deref())?;
    let source = opened.source.to_string();
    args.audit.run(
        &args.identity,
        &identity.recipient(),
        command,
        &source,
        |log| {
            let object = bucket::open_file(&opened, &args.path, &identity)?;
            drop(identity);
            log.whole_file(&args.path, object.file_id(), object.size())?;
            work(object)
        },
    )
}

/// Decrypts one sealed file through a locked buffer, to stdout or to a new file `out`. The
/// last chunk is authenticated first, so a truncated file fails before any output. A chunk
/// failing later fails the command: a file `out` then never appears, and on stdout the
/// error says how many (authenticated) bytes came before it.
fn cat(args: &ObjectArgs, out: Option<&std::path::Path>) -> Result<()> {
    init_stderr_logging();
    with_sealed(args, "cat", |object| cat_object(&object, out))
}

/// [`cat`] of the opened and recorded `object`.
fn cat_object(object: &SealedObject, out: Option<&std::path::Path>) -> Result<()> {
    let Some(out) = out else {
        let mut written = 0;
        let result = write_plaintext(object, &mut std::io::stdout().lock(), &mut written);
        return result.with_context(|| {
            format!(
                "{written} bytes were written to stdout before this error: they were \
                 authenticated, but the file is incomplete; discard them"
            )
        });
    };
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut partial = tempfile::Builder::new()
        .prefix(".smpfs-cat.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    write_plaintext(object, partial.as_file_mut(), &mut 0)
        .with_context(|| format!("{} was not written", out.display()))?;
    partial
        .as_file()
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    partial
        .persist_noclobber(out)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: not replaced", out.display()))?;
    Ok(())
}

/// Writes the plaintext of `object` to `out` chunk by chunk, counting the bytes written.
fn write_plaintext(object: &SealedObject, out: &mut dyn Write, written: &mut u64) -> Result<()> {
    let mut plaintext = Plaintext::new(object)?;
    // Plaintext passes only through locked memory on its way out.
    let region = Arc::new(LockedRegion::new(64 << 10)?);
    let mut buf = LockedRegion::carve(&region, 64 << 10, 1, 0, 0)
        .pop()
        .expect("one buffer");
    loop {
        let len = plaintext.read(&mut buf)?;
        if len == 0 {
            break;
        }
        out.write_all(&buf[..len])?;
        *written += len as u64;
    }
    out.flush()?;
    Ok(())
}
