//! Commands on a bucket without mounting it: `ls`, `rm`, `recipients`, `migrate` (v1 to
//! v2), `share` and `rotate`, and finding one file of a bucket of either layout for `cat`
//! and `inspect`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use smpfs::audit::{CommandLog, Event, EventKind};
use smpfs::backend::{Backend, Source};
use smpfs::bucket::{policy, write, BucketError, ManifestStore, Recipients, SeenGenerations};
use smpfs::keys::Identity;
use smpfs::manifest::Op;
use smpfs::reseal::{self, Journal};
use smpfs::seal::SealOptions;
use smpfs::vault::SealedObject;

use super::audit::AuditArgs;
use super::output::{escape_controls, out, say};
use super::{backend_options, init_stderr_logging, load_identity, mount};

/// A bucket and the identity to read it with.
#[derive(clap::Args)]
pub struct BucketArgs {
    /// The bucket: a directory, s3://BUCKET[/PREFIX], az://ACCOUNT/CONTAINER[/PREFIX], a
    /// Drive or Dropbox folder, as for `mount`.
    pub bucket: String,
    /// Identity file to open it with.
    #[arg(long, short)]
    pub identity: std::path::PathBuf,
    /// The identity's passphrase, as the first line of this file (instead of a prompt).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<std::path::PathBuf>,
    /// Backend options, comma-separated, as for `seal` (endpoint=URL, region=, …).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

/// A bucket opened for a command.
pub struct Opened {
    /// Where it is, as given.
    pub source: Source,
    /// Its store.
    pub backend: Arc<dyn Backend>,
    /// Its manifest (for a v2 bucket), with this workstation's rollback state.
    pub store: ManifestStore,
}

/// Opens the bucket of `args` (with write rights if `writable`).
pub fn open(bucket: &str, options: &[String], command: &str, writable: bool) -> Result<Opened> {
    let source = mount::parse_source(bucket)?;
    let backend = source.open(&backend_options(options, command)?, writable)?;
    let store = ManifestStore::new(Arc::clone(&backend), SeenGenerations::default_location());
    Ok(Opened {
        source,
        backend,
        store,
    })
}

/// Opens the bucket of `args` (with write rights if `writable`) and loads its identity,
/// then runs `work` with `command`'s audit segment open ([`AuditArgs::run`]), before
/// anything is decrypted.
pub fn audited(
    args: &BucketArgs,
    audit: &AuditArgs,
    command: &str,
    writable: bool,
    work: impl FnOnce(&Opened, Identity, &CommandLog) -> Result<()>,
) -> Result<()> {
    let opened = open(&args.bucket, &args.options, command, writable)?;
    let identity = load_identity(&args.identity, args.passphrase_file.as_deref())?;
    let source = opened.source.to_string();
    audit.run(
        &args.identity,
        &identity.recipient(),
        command,
        &source,
        |log| work(&opened, identity, log),
    )
}

/// Opens file `path` of a bucket of either layout, checked as a mount checks it.
pub fn open_file(opened: &Opened, path: &str, identity: &Identity) -> Result<SealedObject> {
    smpfs::backend::validate_key(path).context("give the file's path relative to the bucket")?;
    let first_read = opened.backend.read_profile().first_read;
    let backend = Arc::clone(&opened.backend);
    let object = match opened.store.load(identity)? {
        Some(manifest) => {
            let entry = manifest
                .entries
                .get(path)
                .with_context(|| format!("{} has no file {path:?}", opened.source))?;
            let (object, _) = SealedObject::open(
                backend,
                &entry.object_key(),
                entry.object_len,
                identity,
                0,
                first_read,
                Some(entry),
            )?;
            object
        }
        None => {
            let size = opened
                .backend
                .stat(path)?
                .with_context(|| format!("{} has no file {path:?}", opened.source))?;
            SealedObject::open(backend, path, size, identity, 0, first_read, None)?.0
        }
    };
    smpfs::harden::scrub_stack();
    Ok(object)
}

/// `smpfs ls`: the files of a v2 bucket below `path`, from its manifest; with
/// `objects`, each file's object key too. The manifest read is audited before anything
/// is printed.
pub fn ls(args: &BucketArgs, audit: &AuditArgs, path: Option<&str>, objects: bool) -> Result<()> {
    init_stderr_logging();
    audited(args, audit, "ls", false, |opened, identity, log| {
        list(opened, &identity, log, path, objects)
    })
}

/// [`ls`] with the bucket opened and the audit segment open.
fn list(
    opened: &Opened,
    identity: &Identity,
    log: &CommandLog,
    path: Option<&str>,
    objects: bool,
) -> Result<()> {
    let Some(manifest) = opened.store.load(identity)? else {
        bail!(
            "{} has no manifest (a v1 bucket: its object keys are its paths; \
             `smpfs migrate` converts it)",
            opened.source
        );
    };
    log.manifest(manifest.generation)?;
    let path = path.unwrap_or("").trim_end_matches('/');
    let mut shown = 0;
    for (name, entry) in manifest.below(path) {
        let modified = std::time::UNIX_EPOCH
            + std::time::Duration::new(entry.mtime.0.max(0) as u64, entry.mtime.1);
        let object = if objects {
            format!("  {}", entry.object_key())
        } else {
            String::new()
        };
        out!(
            "{:>14}{object}  {}  {}",
            entry.size,
            humantime::format_rfc3339_seconds(modified),
            escape_controls(name)
        )?;
        shown += 1;
    }
    if shown == 0 && !path.is_empty() {
        bail!("{} has no file or directory {path:?}", opened.source);
    }
    say!("{shown} files; manifest generation {}", manifest.generation);
    Ok(())
}

/// `smpfs recipients`: who new files of a v2 bucket are sealed to, one per line.
pub fn recipients(args: &BucketArgs, audit: &AuditArgs) -> Result<()> {
    init_stderr_logging();
    audited(args, audit, "recipients", false, |opened, identity, log| {
        let recipients = match opened.store.load(&identity)? {
            Some(manifest) => {
                log.manifest(manifest.generation)?;
                manifest.recipients
            }
            None => {
                let list = policy::read(&opened.store, &identity)?.with_context(|| {
                    format!(
                        "{} is a v1 bucket without a recipient list (sealed before lists \
                         existed): each file names its readers only in its own header; \
                         `smpfs seal --to …` into it writes one, `smpfs migrate` converts it",
                        opened.source
                    )
                })?;
                log.record(Event::new(EventKind::Open).path(policy::POLICY_KEY))?;
                list
            }
        };
        for recipient in &recipients {
            out!("{recipient}")?;
        }
        Ok(())
    })
}

/// `smpfs rm`: removes files (or directories) from a v2 bucket.
pub fn rm(args: &BucketArgs, audit: &AuditArgs, paths: &[String]) -> Result<()> {
    init_stderr_logging();
    audited(args, audit, "rm", true, |opened, identity, log| {
        let (committed, removed) = write::remove(&opened.store, &identity, paths)?;
        // The manifest it decrypted and changed; no file content was decrypted.
        log.manifest(committed.manifest.generation)?;
        say!(
            "removed {removed} files from {}; manifest generation {}",
            opened.source,
            committed.manifest.generation
        );
        Ok(())
    })
}

/// `smpfs migrate`: rewrites a v1 bucket as v2. Each file is decrypted into locked
/// memory and sealed again under a random id; batches are journaled (sealed) in the
/// bucket, so an interrupted run resumes. The manifest appears in one commit at the end,
/// then the v1 objects and the journal are deleted.
pub fn migrate(args: &BucketArgs, audit: &AuditArgs, to: &[String], pad: bool) -> Result<()> {
    init_stderr_logging();
    audited(args, audit, "migrate", true, |opened, identity, log| {
        migrate_bucket(opened, &identity, log, to, pad)
    })
}

/// [`migrate`] with the bucket opened and the audit segment open.
fn migrate_bucket(
    opened: &Opened,
    identity: &Identity,
    log: &CommandLog,
    to: &[String],
    pad: bool,
) -> Result<()> {
    let backend = &opened.backend;
    let listing = backend.list()?;
    // Not files: v2's own objects, and the v1 recipient list (removed with the v1 objects).
    let is_v2_key = |key: &str| smpfs::bucket::is_v2_object(key) || policy::is_policy_key(key);
    if let Some(manifest) = opened.store.load(identity)? {
        log.manifest(manifest.generation)?;
        // An earlier run committed: only its clean-up may be left.
        let leftovers: Vec<&str> = listing
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| {
                k.starts_with("migrate/")
                    || policy::is_policy_key(k)
                    || (!is_v2_key(k) && manifest.entries.contains_key(*k))
            })
            .collect();
        for key in &leftovers {
            backend.delete(key)?;
        }
        say!(
            "{} is already a v2 bucket (generation {}); {} leftover objects removed",
            opened.source,
            manifest.generation,
            leftovers.len()
        );
        return Ok(());
    }
    let journal = Journal::new(&opened.store, "migrate/");
    let (mut journaled, batches) = journal.load(identity)?;
    let todo: Vec<reseal::Source> = listing
        .iter()
        .filter(|o| !is_v2_key(&o.key) && !journaled.contains_key(&o.key))
        .map(|o| reseal::Source {
            path: o.key.clone(),
            key: o.key.clone(),
            object_len: o.size,
            bound: None,
            mtime: (0, 0),
            pad,
        })
        .collect();
    let total: u64 = listing
        .iter()
        .filter(|o| !is_v2_key(&o.key))
        .map(|o| o.size)
        .sum();
    say!(
        "migrating {} files of {}; {} already done",
        todo.len(),
        opened.source,
        journaled.len()
    );
    let recipients = match (to, policy::read(&opened.store, identity)?) {
        ([], Some(list)) => {
            say!(
                "sealing to the bucket's {} recipients (--to names others)",
                list.len()
            );
            list
        }
        ([], None) => {
            say!("sealing to your identity only (--to adds other recipients)");
            vec![identity.recipient()]
        }
        (to, _) => super::parse_recipients(to)?,
    };
    let options = SealOptions {
        recipients: recipients.clone(),
        chunk_log2: smpfs::format::DEFAULT_CHUNK_LOG2,
        overwrite: false,
    };
    let bar = super::progress_bar(total);
    let started = std::time::Instant::now();
    let pool = super::sealing_pool(backend.as_ref())?;
    let resealed = pool.install(|| {
        reseal::reseal(
            &journal,
            identity,
            &todo,
            batches,
            &options,
            &|n| bar.inc(n),
            &|event| log.record(event),
        )
    });
    bar.finish_and_clear();
    let resealed = resealed.map_err(|e| anyhow::anyhow!("{e}; nothing was committed"))?;
    let batches = resealed.batches;
    journaled.extend(resealed.entries);
    let entries = journaled;
    let committed =
        opened
            .store
            .commit(Some(identity), Recipients::ForNew(&recipients), &mut |_| {
                entries
                    .iter()
                    .map(|(path, entry)| Op::Put(path.clone(), *entry))
                    .collect()
            })?;
    let mut removed = 0;
    for listed in &listing {
        let v1_object = !is_v2_key(&listed.key) && entries.contains_key(&listed.key);
        if v1_object || policy::is_policy_key(&listed.key) {
            backend.delete(&listed.key)?;
            removed += 1;
        }
    }
    journal.clear(batches)?;
    let secs = started.elapsed().as_secs_f64();
    let migrated = resealed.bytes as f64 / (1 << 20) as f64;
    say!(
        "migrated {} files of {} to v2 (manifest generation {}, {removed} v1 objects removed) \
         in {secs:.2}s ({:.0} MiB/s)",
        entries.len(),
        opened.source,
        committed.manifest.generation,
        migrated / secs.max(1e-9)
    );
    Ok(())
}

/// `smpfs rotate`: seals every file of a v2 bucket again under fresh keys, to its
/// recipients less `remove` ([`smpfs::access::rotate`]).
pub fn rotate(args: &BucketArgs, audit: &AuditArgs, remove: &[String], pad: bool) -> Result<()> {
    init_stderr_logging();
    audited(args, audit, "rotate", true, |opened, identity, log| {
        rotate_bucket(opened, &identity, log, remove, pad)
    })
}

/// [`rotate`] with the bucket opened and the audit segment open.
fn rotate_bucket(
    opened: &Opened,
    identity: &Identity,
    log: &CommandLog,
    remove: &[String],
    pad: bool,
) -> Result<()> {
    let removed = super::parse_recipients(remove)?;
    let manifest = opened
        .store
        .load(identity)?
        .ok_or(BucketError::NoManifest)?;
    log.manifest(manifest.generation)?;
    let bar = super::progress_bar(manifest.entries.values().map(|e| e.size).sum());
    let started = std::time::Instant::now();
    let pool = super::sealing_pool(opened.backend.as_ref())?;
    let rotated = pool.install(|| {
        smpfs::access::rotate(
            &opened.store,
            identity,
            &manifest,
            &removed,
            pad,
            &|n| bar.inc(n),
            &|event| log.record(event),
        )
    });
    bar.finish_and_clear();
    let rotated = rotated?;
    let secs = started.elapsed().as_secs_f64();
    let mib = rotated.bytes as f64 / (1 << 20) as f64;
    say!(
        "rotated {} files of {} ({} resumed from an earlier run; {mib:.1} MiB in {secs:.2}s, \
         {:.0} MiB/s) to {} recipients; manifest generation {}; {} old objects deleted",
        rotated.files,
        opened.source,
        rotated.resumed,
        mib / secs.max(1e-9),
        rotated.recipients.len(),
        rotated.generation,
        rotated.deleted
    );
    if !removed.is_empty() {
        say!(
            "the removed recipients cannot open any object or manifest generation from now \
             on; what they already copied or decrypted stays theirs"
        );
    }
    Ok(())
}

/// `smpfs share`: changes who may read a v2 bucket by giving every file a new header.
pub fn share(
    args: &BucketArgs,
    audit: &AuditArgs,
    add: &[String],
    remove: &[String],
) -> Result<()> {
    init_stderr_logging();
    if add.is_empty() && remove.is_empty() {
        bail!("say who to --add or --remove");
    }
    audited(args, audit, "share", true, |opened, identity, log| {
        share_bucket(opened, &identity, log, add, remove)
    })
}

/// [`share`] with the bucket opened and the audit segment open.
fn share_bucket(
    opened: &Opened,
    identity: &Identity,
    log: &CommandLog,
    add: &[String],
    remove: &[String],
) -> Result<()> {
    let (add, remove) = (
        super::parse_recipients(add)?,
        super::parse_recipients(remove)?,
    );
    let Some(manifest) = opened.store.load(identity)? else {
        bail!(
            "{} is a v1 bucket: its files carry their headers inside, so `share` could not \
             re-wrap them without sending every byte again. `smpfs migrate {}` converts it \
             to the zero-knowledge layout once; `share` then writes headers only",
            opened.source,
            opened.source
        );
    };
    log.manifest(manifest.generation)?;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(manifest.entries.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} headers {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let pool = super::sealing_pool(opened.backend.as_ref())?;
    let shared = pool.install(|| {
        smpfs::access::share(
            &opened.store,
            identity,
            &manifest,
            &add,
            &remove,
            &|n| bar.inc(n),
            &|event| log.record(event),
        )
    });
    bar.finish_and_clear();
    let shared = shared?;
    if shared.files == 0 {
        say!(
            "{} already has exactly these {} recipients; nothing was changed",
            opened.source,
            shared.recipients.len()
        );
        return Ok(());
    }
    say!(
        "{} files of {} now open for {} recipients: {} bytes of new headers written, no chunk \
         sent again, in {:.2}s; manifest generation {}",
        shared.files,
        opened.source,
        shared.recipients.len(),
        shared.bytes_written,
        started.elapsed().as_secs_f64(),
        shared.generation
    );
    if !remove.is_empty() {
        say!(
            "note: a removed reader who kept file keys, headers or copies can still read what \
             they had; `smpfs rotate --remove` re-encrypts everything so they cannot"
        );
    }
    Ok(())
}
