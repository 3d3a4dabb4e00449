//! `smpfs mount`: load the identity, lock the cache, mount, and unmount cleanly (with the
//! purge) on umount, SIGINT, SIGTERM or SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::daemon::{daemonize, Readiness};
use nix::mount::{umount2, MntFlags};
use smpfs::audit::{AuditLog, Forwarder};
use smpfs::backend::cached::CachedBackend;
use smpfs::backend::Source;
use smpfs::bucket::{ManifestStore, SeenGenerations};
use smpfs::control::{Command, Request};
use smpfs::diskcache::DiskCache;
use smpfs::fs::{FsOptions, SmpFs};
use smpfs::gpu::SinkKind;
use smpfs::keys::Identity;
use smpfs::options::{AuditTarget, MountOptions};
use smpfs::vault::{Vault, VaultConfig};

/// Largest read request: 1 MiB (the kernel's max_pages limit of 256 pages).
const MAX_READ: usize = 1 << 20;

#[derive(clap::Args)]
pub struct MountArgs {
    /// The bucket: a local directory (or file://PATH), s3://BUCKET[/PREFIX],
    /// az://ACCOUNT/CONTAINER[/PREFIX], gdrive://FOLDER_ID[/PATH], gdrive:///My Drive/PATH, gdrive:///Shared drives/NAME/PATH
    /// or dropbox:///PATH.
    source: String,
    /// Where to mount it (an existing directory).
    mountpoint: PathBuf,
    /// Identity file that opens the sealed files (or `-o identity=PATH`).
    #[arg(long, short)]
    identity: Option<PathBuf>,
    /// Stay in the foreground and log to stderr.
    #[arg(short, long)]
    foreground: bool,
    /// Mount options, comma-separated: identity=PATH, cache_size=SIZE, kernel_cache,
    /// allow_other, uid=N, gid=N, umask=OCTAL, idle_timeout=SECS, audit=PATH|off, audit_sync=always|MS,
    /// audit_anchor=PATH|s3://B/P, audit_anchor_retention=DURATION,
    /// audit_forward=syslog://HOST:PORT|syslog+tcp://HOST:PORT|journald,
    /// audit_reads=folded|each, purpose=TEXT, require_purpose, refresh=DURATION,
    /// disk_cache=DIR, disk_cache_size=SIZE, endpoint=URL (S3, Azure), region=, profile=,
    /// path_style[=on|off], gdrive_credentials=PATH, gdrive_token=PATH, dropbox_token=PATH,
    /// dropbox_endpoint=URL, dropbox_content_endpoint=URL, timeout=DURATION,
    /// volumes, gpu_sink=cuda|host (host: tests only), ro; mount(8)'s _netdev, nofail,
    /// auto, noauto, user, users, x-*.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Log file for a background mount [default: ~/.local/state/smpfs/smpfs.log].
    #[arg(long)]
    log_file: Option<PathBuf>,
}

/// Parses the source; a local bucket must be an existing directory (made absolute, since
/// the daemon changes directory).
pub(super) fn parse_source(text: &str) -> Result<Source> {
    Ok(match text.parse::<Source>()? {
        Source::Local(path) => {
            if !path.exists() {
                bail!("bucket {} does not exist", path.display());
            }
            if !path.is_dir() {
                bail!("bucket {} is not a directory", path.display());
            }
            Source::Local(path.canonicalize()?)
        }
        remote => remote,
    })
}

/// `smpfs/smpfs.log` in the user's state directory ([`smpfs::paths::user_state_dir`]);
/// without one (a systemd unit has no `HOME`), `/var/log/smpfs/smpfs.log` for root. Never a
/// world-writable directory.
fn default_log_file() -> Result<PathBuf> {
    let state = smpfs::paths::user_state_dir()
        .or_else(|| {
            nix::unistd::getuid()
                .is_root()
                .then(|| PathBuf::from("/var/log"))
        })
        .context("no place for the daemon's log: set HOME or XDG_STATE_HOME")?;
    Ok(state.join("smpfs").join("smpfs.log"))
}

fn init_file_logging(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMPFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(super::output::escaped_fields())
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .log_internal_errors(false)
        .try_init();
    Ok(())
}

/// Refuses, with the one fix that works here, a mount whose cache (`cache` bytes) and reply
/// buffers (`replies` bytes) this process may not lock. Suggests a smaller `cache_size=`
/// only when one that the options accept fits.
fn check_memlock(cache: usize, replies: usize) -> Result<()> {
    const MIB: u64 = 1 << 20;
    let Some(limit) = smpfs::heap::lockable_bytes() else {
        return Ok(());
    };
    let needed = (cache + replies) as u64;
    if needed <= limit {
        return Ok(());
    }
    let needed_mib = needed.div_ceil(MIB);
    let fix = if std::env::var_os("INVOCATION_ID").is_some() {
        format!(
            "add `LimitMEMLOCK={}M` to the [Service] section of this systemd unit (a user \
             unit cannot raise it: use the system unit, or the capability below)",
            needed_mib + 8
        )
    } else {
        let exe = std::env::current_exe().map_or_else(
            |_| "/usr/local/bin/smpfs".to_owned(),
            |p| p.display().to_string(),
        );
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| "USER".to_owned(), |u| u.name);
        format!(
            "run `sudo setcap cap_ipc_lock=ep {exe}` once (it lets this binary lock memory), \
             or add the line `{user} - memlock {}` to /etc/security/limits.d/smpfs.conf and \
             log in again",
            (needed_mib + 8) * 1024
        )
    };
    let smallest = smpfs::options::MIN_CACHE_SIZE + replies as u64;
    let smaller = if smallest <= limit {
        format!(
            "; or mount with `-o cache_size={}M`",
            (limit - replies as u64) / MIB
        )
    } else {
        String::new()
    };
    bail!(
        "this mount needs {needed_mib} MiB of locked memory ({} MiB of cache, {} MiB of reply \
         buffers), but this process may lock only {} KiB (RLIMIT_MEMLOCK, no CAP_IPC_LOCK). \
         Fix: {fix}{smaller}",
        cache as u64 / MIB,
        replies as u64 / MIB,
        limit / 1024
    )
}

/// mount(8)'s exit status for a failed mount.
pub const MOUNT_FAILURE: u8 = 32;

/// `mount.smpfs SOURCE DIR [-sfnv] [-o OPTIONS]`, as mount(8) runs a helper for
/// `mount -t smpfs` and fstab lines: `-f` (fake) checks everything but does not mount,
/// `-s` (sloppy), `-n` (no mtab) and `-v` are accepted. Returns once the mount is live.
pub fn mount_helper(args: Vec<std::ffi::OsString>) -> Result<()> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_str().context("arguments must be UTF-8")?.to_owned();
        match text.as_str() {
            "-o" => options.push(
                args.next()
                    .context("-o needs a value")?
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("options must be UTF-8"))?,
            ),
            "-f" => fake = true,
            "-s" | "-n" | "-v" => {}
            t if t.starts_with("-o") => options.push(t[2..].to_owned()),
            t if t.starts_with('-') => bail!("unknown flag {t}"),
            _ => positional.push(text),
        }
    }
    let [source, mountpoint] = <[String; 2]>::try_from(positional)
        .map_err(|_| anyhow::anyhow!("usage: mount.smpfs SOURCE DIR [-sfnv] [-o OPTIONS]"))?;
    let args = MountArgs {
        source,
        mountpoint: mountpoint.into(),
        identity: None,
        foreground: false,
        options,
        log_file: None,
    };
    if fake {
        MountOptions::parse(&args.options)?;
        return Ok(());
    }
    mount(args, MOUNT_FAILURE)
}

/// Environment variable that allows the test-only `gpu_sink=host`.
const TEST_SINKS_VAR: &str = "SMPFS_ALLOW_TEST_SINK";

/// Checks everything that can be checked before forking, then mounts. A background
/// mount that fails after the fork exits with `failure_status`.
pub fn mount(args: MountArgs, failure_status: u8) -> Result<()> {
    let options = MountOptions::parse(&args.options)?;
    let source = parse_source(&args.source)?;
    if smpfs::control::is_stale_mount(&args.mountpoint) {
        let shown = std::path::absolute(&args.mountpoint)?;
        bail!(
            "mountpoint {0} is a stale mount (its smpfs daemon is gone); clear it with \
             `umount {0}` (as root) or `fusermount3 -u {0}`, then mount again",
            shown.display()
        );
    }
    match std::fs::metadata(&args.mountpoint) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mountpoint {} does not exist: create it first (`mkdir -p {0}`)",
            args.mountpoint.display()
        ),
        Ok(meta) if !meta.is_dir() => {
            bail!(
                "mountpoint {} is not a directory",
                args.mountpoint.display()
            )
        }
        _ => {}
    }
    if options.gpu_sink == SinkKind::Host && std::env::var_os(TEST_SINKS_VAR).is_none() {
        bail!(
            "gpu_sink=host puts plaintext into /dev/shm and is for tests only; \
             set {TEST_SINKS_VAR}=1 in the environment to allow it"
        );
    }
    let mountpoint = args.mountpoint.canonicalize()?;
    let identity_path = args
        .identity
        .clone()
        .or_else(|| options.identity.clone())
        .context("no identity: pass --identity PATH or -o identity=PATH")?;
    let identity = super::load_identity(&identity_path, options.passphrase_file.as_deref())?;
    let audit_path = match &options.audit {
        AuditTarget::Off => None,
        AuditTarget::Path(path) => Some(path.clone()),
        AuditTarget::BesideIdentity => Some(identity_path.with_file_name("audit.log")),
    };
    if audit_path.is_none() && options.audit_forward.is_some() {
        bail!("audit_forward= forwards the audit log's records; it cannot be used with audit=off");
    }
    let mut readiness = if args.foreground {
        super::init_stderr_logging();
        Readiness::foreground()
    } else {
        let log_file = match args.log_file.clone().or_else(|| options.log_file.clone()) {
            Some(path) => path,
            None => default_log_file()?,
        };
        init_file_logging(&log_file)?;
        daemonize(failure_status)?
    };
    let result = serve(
        &mountpoint,
        &options,
        &source,
        audit_path.as_deref(),
        (identity, &identity_path),
        &mut readiness,
    );
    if let Err(e) = &result {
        let message = super::report(e);
        tracing::error!("mount failed: {message}");
        readiness.failed(&message);
    }
    result
}

fn serve(
    mountpoint: &Path,
    options: &MountOptions,
    source: &Source,
    audit_path: Option<&Path>,
    (identity, identity_path): (Identity, &Path),
    readiness: &mut Readiness,
) -> Result<()> {
    // A daemon is a forked child, and locks do not survive `fork`.
    identity
        .relock()
        .context("locking the identity's memory page")?;
    let backend = source.open(&options.backend, false)?;
    let disk_cache = match &options.disk_cache {
        Some(_) if matches!(source, Source::Local(_)) => bail!(
            "disk_cache= is for remote buckets (S3, Azure, Google Drive, Dropbox); {source} is a local directory"
        ),
        Some(dir) => Some(Arc::new(
            DiskCache::open(dir, options.disk_cache_size).context("opening the disk cache")?,
        )),
        None => None,
    };
    let backend: Arc<dyn smpfs::backend::Backend> = match &disk_cache {
        Some(cache) => {
            let stats = cache.stats();
            tracing::info!(
                dir = %cache.dir().display(),
                pieces = stats.pieces,
                bytes = stats.bytes,
                limit = options.disk_cache_size,
                "disk cache of ciphertext opened"
            );
            Arc::new(CachedBackend::new(backend, Arc::clone(cache)))
        }
        None => backend,
    };
    let audit = match audit_path {
        Some(path) => {
            let mut detail = serde_json::json!({
                "source": source.to_string(),
                "mountpoint": mountpoint.display().to_string(),
                "workstation": identity.recipient().to_string(),
            });
            if let Some(custody) = identity.custody() {
                detail["key_custody"] = serde_json::json!({
                    "kind": custody.kind(),
                    "key": custody.key(),
                });
            }
            let anchor = options
                .audit_anchor
                .as_ref()
                .map(|target| {
                    super::anchor_target(
                        target,
                        &options.backend.s3,
                        options.audit_anchor_retention,
                    )
                })
                .transpose()?;
            let log = AuditLog::open_segment(
                path,
                &identity.recipient(),
                options.audit_sync,
                anchor.as_ref(),
                detail,
            )
            .with_context(|| format!("opening audit log {}", path.display()))?;
            if let Some(target) = &options.audit_forward {
                log.forward(Forwarder::start(target)?)
                    .with_context(|| format!("forwarding audit log {}", path.display()))?;
            }
            tracing::info!(log = %path.display(), "auditing every open and read");
            Some(Arc::new(log))
        }
        None => {
            tracing::warn!("audit=off: reads through this mount are NOT audited (benchmarks only)");
            None
        }
    };
    let result = serve_audited(
        mountpoint,
        options,
        source,
        (backend, disk_cache),
        audit.clone(),
        (identity, identity_path),
        readiness,
    );
    if let (Err(e), Some(log)) = (&result, &audit) {
        // A mount refused after its segment started closes the segment, so the log does
        // not read as a crashed writer. A segment already sealed (by the vault) stays so.
        let detail = serde_json::json!({ "clean": false, "mount_failed": super::report(e) });
        if let Err(seal) = log.seal(detail) {
            tracing::debug!("audit segment of the failed mount: {seal}");
        }
    }
    result
}

/// Mounts and serves with the audit log already open (see [`serve`]).
fn serve_audited(
    mountpoint: &Path,
    options: &MountOptions,
    source: &Source,
    (backend, disk_cache): (Arc<dyn smpfs::backend::Backend>, Option<Arc<DiskCache>>),
    audit: Option<Arc<AuditLog>>,
    (identity, identity_path): (Identity, &Path),
    readiness: &mut Readiness,
) -> Result<()> {
    let request_threads = backend.read_profile().request_threads;
    // FUSE request threads, each with a locked reply buffer.
    let config = VaultConfig {
        cache_size: options.cache_size as usize,
        reply_buffers: request_threads,
        max_read: MAX_READ,
        gpu_sink: options.gpu_sink,
        volumes: options.volumes,
        fold_reads: options.fold_reads,
        purpose: options.purpose.clone(),
        require_purpose: options.require_purpose,
    };
    if options.volumes {
        // Volumes parse decrypted DICOM files on the heap: wipe it on free, lock it in RAM.
        smpfs::heap::protect().context("protecting memory for volumes")?;
    }
    check_memlock(config.cache_size, request_threads * MAX_READ)?;
    let recipient = identity.recipient();
    let seen = SeenGenerations::default_location();
    if seen.is_none() {
        tracing::warn!(
            "no state directory (no HOME, and the user's home does not exist): a rollback of a \
             zero-knowledge bucket's manifest cannot be detected; set SMPFS_STATE_DIR"
        );
    }
    let store = ManifestStore::new(Arc::clone(&backend), seen);
    let manifest = store
        .load(&identity)
        .context("reading the bucket's manifest")?;
    if let Some(manifest) = &manifest {
        tracing::info!(
            generation = manifest.generation,
            files = manifest.entries.len(),
            "zero-knowledge bucket: manifest read"
        );
    }
    let vault = Arc::new(Vault::new(
        backend,
        identity,
        config,
        audit.clone(),
        manifest.map(|m| (store, m)),
    )?);
    let mut warnings = Vec::new();
    if let Some(probed) = vault.probe_identity()? {
        let warning = format!(
            "none of the {probed} files checked is sealed to this identity ({recipient}), so \
             they are hidden: is it the right identity (-i)?"
        );
        tracing::warn!("{warning}");
        warnings.push(warning);
    }
    if options.gpu_sink == SinkKind::Host {
        tracing::warn!("gpu_sink=host: GPU loads go to shared memory objects (tests only)");
    }
    tracing::info!(
        locked_bytes = vault.cache().locked_bytes(),
        "cache locked for {}",
        vault.describe()
    );
    let fs = SmpFs::new(
        Arc::clone(&vault),
        FsOptions {
            kernel_cache: options.kernel_cache,
            uid: options
                .uid
                .unwrap_or_else(|| nix::unistd::getuid().as_raw()),
            gid: options
                .gid
                .unwrap_or_else(|| nix::unistd::getgid().as_raw()),
            umask: options.umask,
            max_read: MAX_READ as u32,
        },
    );
    let mut fuse_config = Config::default();
    fuse_config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName(source.to_string()),
        MountOption::CUSTOM("subtype=smpfs".into()),
        MountOption::CUSTOM(format!("max_read={MAX_READ}")),
        MountOption::DefaultPermissions,
    ];
    if options.noexec {
        fuse_config.mount_options.push(MountOption::NoExec);
    }
    fuse_config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(request_threads);
    fuse_config.clone_fd = true;
    let mut session = Session::new(fs, mountpoint, &fuse_config)
        .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("smpfs-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "signal received: unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::error!("unmount failed: {e}");
                }
            }
        })?;
    if let Some(timeout) = options.idle_timeout {
        let mut unmounter = session.unmount_callable();
        let vault = Arc::clone(&vault);
        std::thread::Builder::new()
            .name("smpfs-idle".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if vault.idle_for() >= timeout {
                    tracing::info!(?timeout, "idle: unmounting");
                    if let Err(e) = unmounter.unmount() {
                        tracing::error!("unmount failed: {e}");
                    }
                    return;
                }
            })?;
    }
    if let (Some(every), Some(_)) = (options.refresh, vault.generation()) {
        let vault = Arc::clone(&vault);
        let notifier = session.notifier();
        std::thread::Builder::new()
            .name("smpfs-refresh".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                if !vault.is_locked() {
                    if let Err(e) = refresh(&vault, &notifier) {
                        tracing::warn!("manifest not refreshed (still showing the last one): {e}");
                    }
                }
            })?;
    }
    let (control, control_path) = smpfs::control::bind(mountpoint)?;
    let control_busy = Arc::new(std::sync::Mutex::new(()));
    {
        let busy = Arc::clone(&control_busy);
        let vault = Arc::clone(&vault);
        let notifier = session.notifier();
        let mountpoint = mountpoint.to_owned();
        let identity_path = identity_path.to_owned();
        let passphrase_file = options.passphrase_file.clone();
        let watched = Watched {
            disk_cache: disk_cache.clone(),
            disk_cache_limit: options.disk_cache_size,
        };
        std::thread::Builder::new()
            .name("smpfs-control".into())
            .spawn(move || {
                smpfs::control::serve(control, &busy, |request| {
                    control_command(
                        request,
                        &vault,
                        &notifier,
                        &mountpoint,
                        (&identity_path, &passphrase_file),
                        &watched,
                    )
                })
            })?;
    }
    if options.audit_rotate_size.is_some() || options.audit_rotate_every.is_some() {
        rotate_audit_log(&vault, mountpoint, source, options)?;
    }
    tracing::info!(mountpoint = %mountpoint.display(), "mount is live");
    readiness.ready(&warnings);
    let served = match session.run() {
        Err(e) if smpfs::fs::ended_with_unmount(&e, mountpoint) => {
            tracing::debug!("a request thread saw the connection close at the unmount");
            Ok(())
        }
        other => other,
    }
    .context("serving FUSE requests");
    // destroy() purged and sealed already after an orderly unmount; this is for a kernel
    // connection lost without it (a second call only zeroizes the cache again).
    vault.unmount();
    // A `purge` ends the session from the control thread: let it send its reply first.
    drop(control_busy.lock());
    let _ = std::fs::remove_file(&control_path);
    if let Some(cache) = &disk_cache {
        // The control thread keeps its handle: write what is queued now.
        cache.flush();
        let stats = cache.stats();
        tracing::info!(
            hits = stats.hits,
            misses = stats.misses,
            damaged = stats.damaged,
            pieces = stats.pieces,
            bytes = stats.bytes,
            "disk cache at exit"
        );
    }
    served?;
    tracing::info!("exited cleanly");
    Ok(())
}

/// After a purge, drops from the kernel's page cache the pages of every file the mount
/// served (mapped, or read with `kernel_cache`): a live mapping's next access faults, and
/// the read it makes is refused while the mount is locked (the process gets SIGBUS).
fn drop_page_cache(vault: &Vault, notifier: &fuser::Notifier) {
    let files = vault.take_served();
    let mut failed = 0;
    for ino in &files {
        // ENOENT: the kernel had already forgotten the inode, and its pages with it.
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(*ino), 0, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                failed += 1;
                tracing::error!(ino, "page cache of a served file not dropped: {e}");
            }
        }
    }
    tracing::info!(
        files = files.len(),
        failed,
        "page cache of the served files dropped"
    );
}

/// Reads a v2 bucket's manifest again and makes the kernel forget the names that changed;
/// says what changed.
fn refresh(vault: &Vault, notifier: &fuser::Notifier) -> Result<String> {
    let Some(refreshed) = vault.refresh()? else {
        return Ok("not a zero-knowledge (v2) bucket: nothing to refresh".into());
    };
    for (parent, name) in &refreshed.names {
        // ENOENT: the kernel did not know the name; nothing to forget.
        if let Err(e) = notifier.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name)) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(parent, "kernel entry not invalidated: {e}");
            }
        }
    }
    let summary = format!(
        "manifest generation {}: {} added, {} removed, {} replaced",
        refreshed.generation, refreshed.added, refreshed.removed, refreshed.replaced
    );
    if !refreshed.names.is_empty() {
        tracing::info!("{summary}");
    }
    Ok(summary)
}

/// Detaches the mount at `mountpoint` lazily: `umount2(MNT_DETACH)` as root, else through
/// the setuid `fusermount3 -u -z`, which lets a user detach the FUSE mounts they made.
fn detach(mountpoint: &Path) -> std::result::Result<(), String> {
    match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(mountpoint)
                .output()
                .map_err(|e| format!("EPERM, and fusermount3 could not run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "fusermount3 -u -z: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Starts the thread that rotates the mount's audit log (`audit_rotate=`,
/// `audit_rotate_every=`): checked every 5 s; a rotated file is renamed
/// `NAME.YYYYMMDDTHHMMSSZ` beside it, and the chain goes on in a new `NAME`.
fn rotate_audit_log(
    vault: &Arc<Vault>,
    mountpoint: &Path,
    source: &Source,
    options: &MountOptions,
) -> Result<()> {
    let Some(path) = vault.audit_log().map(|log| log.path().to_owned()) else {
        return Ok(());
    };
    let vault = Arc::clone(vault);
    let options = options.clone();
    let detail = serde_json::json!({
        "source": source.to_string(),
        "mountpoint": mountpoint.display().to_string(),
    });
    let check = options
        .audit_rotate_every
        .unwrap_or(std::time::Duration::from_secs(5))
        .min(std::time::Duration::from_secs(5));
    std::thread::Builder::new()
        .name("smpfs-audit-rotate".into())
        .spawn(move || {
            let mut since = std::time::Instant::now();
            loop {
                std::thread::sleep(check);
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                let due = options.audit_rotate_size.is_some_and(|max| size >= max)
                    || options
                        .audit_rotate_every
                        .is_some_and(|every| since.elapsed() >= every);
                if !due || vault.audit_log().is_none_or(|log| log.state() == "sealed") {
                    continue;
                }
                let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string()
                    .replace(['-', ':'], "");
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let mut rotated = path.with_file_name(format!("{name}.{stamp}"));
                for n in 1.. {
                    if !rotated.exists() {
                        break;
                    }
                    rotated = path.with_file_name(format!("{name}.{stamp}-{n}"));
                }
                let anchor = options.audit_anchor.as_ref().and_then(|target| {
                    super::anchor_target(
                        target,
                        &options.backend.s3,
                        options.audit_anchor_retention,
                    )
                    .map_err(|e| tracing::error!("audit anchor not reopened after rotation: {e:#}"))
                    .ok()
                });
                let rotated_ok = vault.rotate_audit(|log| {
                    let next = log.rotate(&rotated, anchor.as_ref(), detail.clone())?;
                    if let Some(target) = &options.audit_forward {
                        match Forwarder::start(target) {
                            Ok(forwarder) => next.forward(forwarder)?,
                            Err(e) => tracing::error!("audit forward not restarted: {e}"),
                        }
                    }
                    Ok(next)
                });
                match rotated_ok {
                    Ok(()) => tracing::info!(rotated = %rotated.display(), "audit log rotated"),
                    Err(e) => tracing::error!("audit log not rotated: {e}"),
                }
                since = std::time::Instant::now();
            }
        })?;
    Ok(())
}

/// What `smpfs status` reports besides the vault.
struct Watched {
    disk_cache: Option<Arc<DiskCache>>,
    disk_cache_limit: u64,
}

/// The mount's state for `smpfs status`, as one line of JSON.
fn status(vault: &Vault, mountpoint: &Path, watched: &Watched) -> String {
    let disk_cache = watched.disk_cache.as_ref().map(|cache| {
        let stats = cache.stats();
        serde_json::json!({
            "dir": cache.dir().display().to_string(),
            "bytes": stats.bytes,
            "limit": watched.disk_cache_limit,
            "pieces": stats.pieces,
            "hits": stats.hits,
            "misses": stats.misses,
            "damaged": stats.damaged,
        })
    });
    serde_json::json!({
        "mountpoint": mountpoint.display().to_string(),
        "source": vault.describe(),
        "pid": std::process::id(),
        "locked": vault.is_locked(),
        "manifest_generation": vault.generation(),
        "requests_in_flight": vault.in_flight(),
        "memory_cache_locked_bytes": vault.cache().locked_bytes(),
        "disk_cache": disk_cache,
        "audit": vault.audit_log().map(|log| {
            let mut audit = serde_json::json!({
                "path": log.path().display().to_string(),
                "state": log.state(),
            });
            log.note_forward(&mut audit);
            audit
        }),
    })
    .to_string()
}

/// Runs one `smpfs purge|lock|unlock|refresh|status|purpose` command for the daemon.
fn control_command(
    request: Request,
    vault: &Vault,
    notifier: &fuser::Notifier,
    mountpoint: &Path,
    (identity_path, passphrase_file): (&Path, &Option<PathBuf>),
    watched: &Watched,
) -> std::result::Result<String, String> {
    match request.command {
        Command::Status => Ok(status(vault, mountpoint, watched)),
        Command::Purpose => {
            let purpose = request.argument.trim();
            if purpose.is_empty() {
                return Err("give the purpose as text".into());
            }
            let session = vault
                .set_purpose(request.peer_pid, purpose.to_owned())
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "reads from session {session} are recorded with purpose {purpose:?}"
            ))
        }
        Command::Purge => {
            let bytes = vault.unmount();
            // Files mapped and still open keep a detached mount alive: drop their pages.
            drop_page_cache(vault, notifier);
            tracing::info!(
                bytes_zeroized = bytes,
                "purge requested: keys dropped; detaching the mount"
            );
            detach(mountpoint).map_err(|e| format!("purged, but detaching failed: {e}"))?;
            Ok(format!("purged ({bytes} bytes zeroized); mount detached"))
        }
        Command::Lock => {
            let bytes = vault.purge();
            drop_page_cache(vault, notifier);
            tracing::info!(
                bytes_zeroized = bytes,
                "locked: keys dropped, reads refused until unlock"
            );
            Ok(format!("locked ({bytes} bytes zeroized)"))
        }
        Command::Refresh => refresh(vault, notifier).map_err(|e| super::report(&e)),
        Command::Unlock => {
            let identity = super::load_identity(identity_path, passphrase_file.as_deref())
                .map_err(|e| format!("{e:#}"))?;
            vault.unlock(identity).map_err(|e| e.to_string())?;
            tracing::info!("unlocked");
            Ok("unlocked".into())
        }
    }
}
