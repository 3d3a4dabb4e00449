//! Parsing of `-o` mount options and human-readable sizes. smpfs's own options are taken
//! out here; the kernel would reject them.

use std::fmt;
use std::path::PathBuf;

use crate::audit::{ForwardTarget, SyncPolicy};
use crate::backend::{BackendOptions, Source};

/// Default Object Lock retention of S3 audit checkpoints: six years, HIPAA's retention
/// period for required documentation (45 CFR 164.316(b)(2)).
pub const DEFAULT_ANCHOR_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(6 * 365 * 24 * 3600);
use crate::gpu::SinkKind;

/// The smallest `cache_size=` accepted (room for a whole read-ahead run and more).
pub const MIN_CACHE_SIZE: u64 = 16 << 20;

/// Errors in mount options or sizes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown mount option {0:?}")]
    Unknown(String),
    #[error("mount option {option:?}: {reason}")]
    BadValue { option: String, reason: String },
    #[error("invalid size {0:?} (examples: 65536, 64K, 256M, 1G)")]
    BadSize(String),
}

/// Parses `65536`, `64K`, `64KiB`, `256M`, `1G` (binary multiples) into bytes.
pub fn parse_size(text: &str) -> Result<u64, OptionError> {
    let bad = || OptionError::BadSize(text.to_owned());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// smpfs's mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Bytes of locked memory for decrypted chunks (`cache_size=`, default 256M).
    pub cache_size: u64,
    /// Let the kernel page cache keep plaintext (`kernel_cache`); faster re-reads, but
    /// plaintext then sits in unlocked kernel pages until evicted.
    pub kernel_cache: bool,
    /// Let other users access the mount (`allow_other`), with `default_permissions`.
    pub allow_other: bool,
    /// Where to write the audit log (`audit=PATH`, `audit=off`); default beside the identity.
    pub audit: AuditTarget,
    /// When the audit log is flushed to stable storage (`audit_sync=always|MS`).
    pub audit_sync: SyncPolicy,
    /// Where audit checkpoints go (`audit_anchor=PATH` or `audit_anchor=s3://BUCKET/PREFIX`).
    pub audit_anchor: Option<Source>,
    /// Object Lock retention of S3 checkpoints (`audit_anchor_retention=`, default 6 years).
    pub audit_anchor_retention: std::time::Duration,
    /// Rotate the audit log once it reaches this many bytes (`audit_rotate=SIZE`).
    pub audit_rotate_size: Option<u64>,
    /// Rotate the audit log once it is this old (`audit_rotate_every=DURATION`).
    pub audit_rotate_every: Option<std::time::Duration>,
    /// A live copy of the audit records to syslog or journald (`audit_forward=`).
    pub audit_forward: Option<ForwardTarget>,
    /// Identity file (`identity=PATH`), for mount(8) and fstab, which pass no flags.
    pub identity: Option<PathBuf>,
    /// File whose first line is the identity's passphrase (`passphrase_file=PATH`).
    pub passphrase_file: Option<PathBuf>,
    /// Where the background daemon logs (`log_file=PATH`), for fstab lines, which cannot
    /// pass `--log-file`; default the user's state directory.
    pub log_file: Option<PathBuf>,
    /// Owner shown for every file (`uid=`); default the mounting user.
    pub uid: Option<u32>,
    /// Group shown for every file (`gid=`); default the mounting user's group.
    pub gid: Option<u32>,
    /// Permission bits cleared from 0444 files and 0555 directories (`umask=`, octal).
    pub umask: u16,
    /// Unmount (with the purge) after this long without requests and with no file open
    /// (`idle_timeout=`, seconds or e.g. `15m`).
    pub idle_timeout: Option<std::time::Duration>,
    /// How often a v2 bucket's manifest is checked for a newer generation
    /// (`refresh=DURATION`, default 60s; `refresh=0` never, but `smpfs refresh` still does).
    pub refresh: Option<std::time::Duration>,
    /// Remote backend settings (S3: `endpoint=`, `region=`, `profile=`, `path_style=`;
    /// Drive: `gdrive_credentials=`, `gdrive_token=`, `gdrive_endpoint=`; Dropbox:
    /// `dropbox_token=`, `dropbox_endpoint=`, `dropbox_content_endpoint=`; all:
    /// `timeout=`); see [`parse_backend_option`].
    pub backend: BackendOptions,
    /// Where GPU loads go (`gpu_sink=cuda|host`); `host` (shared memory) is for tests only.
    pub gpu_sink: SinkKind,
    /// Show each DICOM series as a NIfTI-1 file under `.volumes` (`volumes`); the daemon
    /// then parses DICOM in its wiped, locked heap.
    pub volumes: bool,
    /// Refuse to execute files from the mount (`noexec`; `exec` clears it).
    pub noexec: bool,
    /// A directory for a disk cache of the remote bucket's ciphertext (`disk_cache=DIR`).
    pub disk_cache: Option<PathBuf>,
    /// Bound of the disk cache in bytes (`disk_cache_size=`, default 10G).
    pub disk_cache_size: u64,
    /// Fold a reader's reads into growing range records and per-chunk records
    /// (`audit_reads=folded`, the default), or write one record per read request
    /// (`audit_reads=each`).
    pub fold_reads: bool,
    /// The purpose records carry when a reader's session stated none (`purpose=TEXT`).
    pub purpose: Option<String>,
    /// Refuse reads by a process whose session stated no purpose, when the mount has none
    /// either (`require_purpose`).
    pub require_purpose: bool,
}

/// Where a mount's audit records go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditTarget {
    /// `audit.log` in the identity file's directory.
    #[default]
    BesideIdentity,
    /// An explicit path.
    Path(PathBuf),
    /// No audit log: for benchmarks only; the mount logs a warning.
    Off,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_size: 256 << 20,
            kernel_cache: false,
            allow_other: false,
            audit: AuditTarget::default(),
            audit_sync: SyncPolicy::default(),
            audit_anchor: None,
            audit_anchor_retention: DEFAULT_ANCHOR_RETENTION,
            audit_forward: None,
            audit_rotate_size: None,
            audit_rotate_every: None,
            identity: None,
            passphrase_file: None,
            log_file: None,
            uid: None,
            gid: None,
            umask: 0o022,
            idle_timeout: None,
            refresh: Some(std::time::Duration::from_secs(60)),
            backend: BackendOptions::default(),
            gpu_sink: SinkKind::default(),
            volumes: false,
            noexec: false,
            disk_cache: None,
            disk_cache_size: 10 << 30,
            fold_reads: true,
            purpose: None,
            require_purpose: false,
        }
    }
}

impl MountOptions {
    /// Parses a list of `-o` arguments, each comma-separated `name` or `name=value`.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, OptionError> {
        let mut options = MountOptions::default();
        for item in args.iter().flat_map(|a| a.as_ref().split(',')) {
            let item = item.trim();
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let bad = |reason: &dyn fmt::Display| OptionError::BadValue {
                option: item.to_owned(),
                reason: reason.to_string(),
            };
            match (name, value) {
                // smpfs is always read-only; mount(8) adds `rw` when a line does not say `ro`.
                ("", None) | ("ro" | "rw" | "defaults", None) => {}
                // Passed on by mount(8) for its own use; they mean nothing to smpfs.
                ("_netdev" | "nofail" | "auto" | "noauto" | "user" | "users" | "nouser", None) => {}
                (n, _) if n.starts_with("x-") => {}
                // Generic VFS flags of fstab lines: every smpfs mount is nosuid and nodev
                // already, and a read-only mount never updates access times.
                (
                    "nosuid" | "nodev" | "atime" | "noatime" | "relatime" | "norelatime"
                    | "strictatime" | "nostrictatime" | "lazytime" | "nolazytime" | "diratime"
                    | "nodiratime" | "sync" | "async",
                    None,
                ) => {}
                ("suid" | "dev", None) => {
                    return Err(bad(&"smpfs mounts are always nosuid and nodev"))
                }
                ("noexec", None) => options.noexec = true,
                ("exec", None) => options.noexec = false,
                ("identity", Some(path)) if !path.is_empty() => {
                    options.identity = Some(path.into())
                }
                ("log_file", Some(path)) if !path.is_empty() => {
                    options.log_file = Some(PathBuf::from(path));
                }
                ("passphrase_file", Some(path)) if !path.is_empty() => {
                    options.passphrase_file = Some(path.into())
                }
                ("uid", Some(v)) => options.uid = Some(v.parse().map_err(|e| bad(&e))?),
                ("gid", Some(v)) => options.gid = Some(v.parse().map_err(|e| bad(&e))?),
                ("idle_timeout", Some(v)) => options.idle_timeout = Some(parse_duration(item, v)?),
                ("refresh", Some("0")) => options.refresh = None,
                ("refresh", Some(v)) => options.refresh = Some(parse_duration(item, v)?),
                ("umask", Some(v)) => {
                    options.umask = u16::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| bad(&"must be octal, 000 to 777"))?;
                }
                ("cache_size", Some(v)) => {
                    options.cache_size = parse_size(v).map_err(|e| bad(&e))?;
                    if options.cache_size < MIN_CACHE_SIZE {
                        return Err(bad(&"must be at least 16M"));
                    }
                }
                ("disk_cache", Some(path)) if !path.is_empty() => {
                    options.disk_cache = Some(path.into())
                }
                ("disk_cache_size", Some(v)) => {
                    options.disk_cache_size = parse_size(v).map_err(|e| bad(&e))?;
                    if options.disk_cache_size < crate::diskcache::PIECE {
                        return Err(bad(&"must be at least 256K"));
                    }
                }
                ("purpose", Some(text)) if !text.trim().is_empty() => {
                    options.purpose = Some(text.trim().to_owned())
                }
                ("require_purpose", None) => options.require_purpose = true,
                ("audit_reads", Some("folded")) => options.fold_reads = true,
                ("audit_reads", Some("each")) => options.fold_reads = false,
                ("audit_reads", Some(_)) => return Err(bad(&"must be folded or each")),
                ("kernel_cache", None) => options.kernel_cache = true,
                ("volumes", None) => options.volumes = true,
                ("allow_other", None) => options.allow_other = true,
                ("audit", Some("off")) => options.audit = AuditTarget::Off,
                ("audit", Some(path)) if !path.is_empty() => {
                    options.audit = AuditTarget::Path(path.into())
                }
                ("audit_sync", Some(v)) => {
                    options.audit_sync = v.parse().map_err(|e| bad(&e))?;
                }
                ("audit_anchor", Some(target)) if !target.is_empty() => {
                    options.audit_anchor = Some(target.parse().map_err(|e| bad(&e))?)
                }
                ("audit_anchor_retention", Some(v)) => {
                    options.audit_anchor_retention = parse_duration(item, v)?
                }
                ("audit_rotate", Some(v)) => {
                    options.audit_rotate_size = Some(parse_size(v).map_err(|e| bad(&e))?)
                }
                ("audit_rotate_every", Some(v)) => {
                    options.audit_rotate_every = Some(parse_duration(item, v)?)
                }
                ("audit_forward", Some(target)) => {
                    options.audit_forward = Some(target.parse().map_err(|e| bad(&e))?)
                }
                ("gpu_sink", Some(v)) => options.gpu_sink = v.parse().map_err(|e| bad(&e))?,
                _ if parse_backend_option(&mut options.backend, item)? => {}
                _ => return Err(OptionError::Unknown(item.to_owned())),
            }
        }
        Ok(options)
    }
}

/// A positive duration: seconds (`30`) or with a unit (`500ms`, `15m`).
fn parse_duration(item: &str, text: &str) -> Result<std::time::Duration, OptionError> {
    let duration = match text.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|e| OptionError::BadValue {
            option: item.to_owned(),
            reason: e.to_string(),
        })?,
    };
    if duration.is_zero() {
        return Err(OptionError::BadValue {
            option: item.to_owned(),
            reason: "must be more than zero".into(),
        });
    }
    Ok(duration)
}

/// Applies one backend option to `options`; `Ok(false)` if `item` is not one. S3:
/// `endpoint=URL` (also Azure's: the account's blob endpoint), `region=`, `profile=`, `path_style[=on|off]`; Google Drive:
/// `gdrive_credentials=PATH` (service-account key), `gdrive_token=PATH` (login cache),
/// `gdrive_endpoint=URL` (tests and self-hosted proxies); Dropbox: `dropbox_token=PATH`
/// (login cache), `dropbox_endpoint=URL` (RPC, OAuth and content hosts),
/// `dropbox_content_endpoint=URL` (content host only); all: `timeout=DURATION`.
/// Shared by `mount -o`, `seal -o` and `audit verify -o`.
pub fn parse_backend_option(options: &mut BackendOptions, item: &str) -> Result<bool, OptionError> {
    let (s3, gdrive) = (&mut options.s3, &mut options.gdrive);
    let (name, value) = match item.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (item, None),
    };
    let bad = |reason: &str| OptionError::BadValue {
        option: item.to_owned(),
        reason: reason.to_owned(),
    };
    match (name, value) {
        ("endpoint", Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("must be an http:// or https:// URL"));
            }
            s3.endpoint = Some(url.to_owned());
            options.azure.endpoint = Some(url.to_owned());
        }
        ("gdrive_endpoint", Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("must be an http:// or https:// URL"));
            }
            gdrive.endpoint = Some(url.to_owned());
        }
        ("gdrive_credentials", Some(path)) if !path.is_empty() => {
            gdrive.credentials = Some(path.into())
        }
        ("gdrive_token", Some(path)) if !path.is_empty() => gdrive.token = Some(path.into()),
        ("dropbox_endpoint" | "dropbox_content_endpoint", Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("must be an http:// or https:// URL"));
            }
            if name == "dropbox_endpoint" {
                options.dropbox.endpoint = Some(url.to_owned());
            } else {
                options.dropbox.content_endpoint = Some(url.to_owned());
            }
        }
        ("dropbox_token", Some(path)) if !path.is_empty() => {
            options.dropbox.token = Some(path.into())
        }
        ("region", Some(region)) if !region.is_empty() => s3.region = Some(region.to_owned()),
        ("profile", Some(profile)) if !profile.is_empty() => s3.profile = Some(profile.to_owned()),
        ("path_style", None | Some("on")) => s3.path_style = Some(true),
        ("path_style", Some("off")) => s3.path_style = Some(false),
        ("path_style", Some(_)) => return Err(bad("must be on or off")),
        ("timeout", Some(v)) => {
            s3.timeout = parse_duration(item, v)?;
            gdrive.timeout = s3.timeout;
            options.dropbox.timeout = s3.timeout;
            options.azure.timeout = s3.timeout;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "K", "12Q", "-1", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backend_options() {
        let o = MountOptions::parse(&[
            "endpoint=http://127.0.0.1:9000,region=eu-west-1,profile=lab,path_style,timeout=5s",
        ])
        .unwrap();
        let s3 = &o.backend.s3;
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.profile.as_deref(), Some("lab"));
        assert_eq!(s3.path_style, Some(true));
        assert_eq!(s3.timeout, std::time::Duration::from_secs(5));
        assert_eq!(o.backend.gdrive.timeout, std::time::Duration::from_secs(5));
        let azure = &o.backend.azure;
        assert_eq!(azure.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(azure.timeout, std::time::Duration::from_secs(5));
        let o = MountOptions::parse(&[
            "gdrive_credentials=/etc/smpfs/sa.json,gdrive_token=/t.json,gdrive_endpoint=http://127.0.0.1:8080",
        ])
        .unwrap();
        let gdrive = &o.backend.gdrive;
        assert_eq!(gdrive.credentials, Some("/etc/smpfs/sa.json".into()));
        assert_eq!(gdrive.token, Some("/t.json".into()));
        assert_eq!(gdrive.endpoint.as_deref(), Some("http://127.0.0.1:8080"));
        let o = MountOptions::parse(&[
            "dropbox_token=/d.json,dropbox_endpoint=http://127.0.0.1:9,dropbox_content_endpoint=http://127.0.0.1:10,timeout=3s",
        ])
        .unwrap();
        let dropbox = &o.backend.dropbox;
        assert_eq!(dropbox.token, Some("/d.json".into()));
        assert_eq!(dropbox.api(), "http://127.0.0.1:9");
        assert_eq!(dropbox.content(), "http://127.0.0.1:10");
        assert_eq!(dropbox.token_url(), "http://127.0.0.1:9/oauth2/token");
        assert_eq!(dropbox.timeout, std::time::Duration::from_secs(3));
        for bad in [
            "endpoint=ftp://x",
            "gdrive_endpoint=localhost:80",
            "dropbox_endpoint=api.dropboxapi.com",
            "path_style=maybe",
            "timeout=0",
            "timeout=soon",
        ] {
            assert!(
                matches!(
                    MountOptions::parse(&[bad]),
                    Err(OptionError::BadValue { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn audit_forward_option() {
        assert_eq!(MountOptions::default().audit_forward, None);
        let o = MountOptions::parse(&["audit_forward=syslog+tcp://siem:6514"]).unwrap();
        assert_eq!(
            o.audit_forward,
            Some(ForwardTarget::Tcp {
                host: "siem".into(),
                port: 6514
            })
        );
        let o = MountOptions::parse(&["audit_forward=journald"]).unwrap();
        assert_eq!(o.audit_forward, Some(ForwardTarget::Journald));
        match MountOptions::parse(&["audit_forward=syslog://siem:99999"]) {
            Err(OptionError::BadValue { option, reason }) => {
                assert_eq!(option, "audit_forward=syslog://siem:99999");
                assert!(reason.contains("port"), "{reason}");
                assert!(reason.contains("syslog+tcp://HOST:PORT"), "{reason}");
            }
            other => panic!("a bad port was accepted: {other:?}"),
        }
        for bad in [
            "audit_forward",
            "audit_forward=",
            "audit_forward=udp://siem:514",
        ] {
            assert!(MountOptions::parse(&[bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mount_options() {
        let o = MountOptions::parse(&["ro,cache_size=64M", "kernel_cache"]).unwrap();
        assert_eq!(o.cache_size, 64 << 20);
        assert_eq!((&o.disk_cache, o.disk_cache_size), (&None, 10 << 30));
        assert!(o.kernel_cache && !o.allow_other);
        let cached =
            MountOptions::parse(&["disk_cache=/var/cache/smpfs/a,disk_cache_size=2G"]).unwrap();
        assert_eq!(cached.disk_cache, Some(PathBuf::from("/var/cache/smpfs/a")));
        assert_eq!(cached.disk_cache_size, 2 << 30);
        assert!(MountOptions::parse(&["disk_cache_size=1K"]).is_err());
        assert!(o.fold_reads);
        assert!(
            !MountOptions::parse(&["audit_reads=each"])
                .unwrap()
                .fold_reads
        );
        assert!(MountOptions::parse(&["audit_reads=some"]).is_err());
        let purposeful = MountOptions::parse(&["purpose=tumour board,require_purpose"]).unwrap();
        assert_eq!(purposeful.purpose.as_deref(), Some("tumour board"));
        assert!(purposeful.require_purpose && !o.require_purpose);
        let rotating = MountOptions::parse(&["audit_rotate=100M,audit_rotate_every=1d"]).unwrap();
        assert_eq!(rotating.audit_rotate_size, Some(100 << 20));
        assert_eq!(
            rotating.audit_rotate_every,
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            MountOptions::parse::<&str>(&[]).unwrap(),
            MountOptions::default()
        );
        assert_eq!(
            MountOptions::parse(&["cache_size=1M,bogus"]).unwrap_err(),
            OptionError::BadValue {
                option: "cache_size=1M".into(),
                reason: "must be at least 16M".into()
            }
        );
        assert_eq!(
            MountOptions::parse(&["bogus=1"]).unwrap_err(),
            OptionError::Unknown("bogus=1".into())
        );
        let o = MountOptions::parse(&[
            "audit=/var/log/a.log,audit_sync=always,audit_anchor=/mnt/anchor",
        ])
        .unwrap();
        assert_eq!(o.audit, AuditTarget::Path("/var/log/a.log".into()));
        assert_eq!(o.audit_sync, SyncPolicy::Always);
        assert_eq!(o.audit_anchor, Some(Source::Local("/mnt/anchor".into())));
        let o =
            MountOptions::parse(&["audit_anchor=s3://anchors/ws1,audit_anchor_retention=30days"])
                .unwrap();
        assert_eq!(o.audit_anchor, Some("s3://anchors/ws1".parse().unwrap()));
        assert_eq!(
            o.audit_anchor_retention,
            std::time::Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(
            MountOptions::parse(&["audit=off"]).unwrap().audit,
            AuditTarget::Off
        );
        assert!(MountOptions::parse(&["audit_sync=soon"]).is_err());
        let o = MountOptions::parse(&["identity=/etc/smpfs/ws.key,uid=1000,gid=100,umask=027"])
            .unwrap();
        assert_eq!(o.identity, Some("/etc/smpfs/ws.key".into()));
        assert_eq!((o.uid, o.gid, o.umask), (Some(1000), Some(100), 0o027));
        let o = MountOptions::parse(&["log_file=/var/log/smpfs/lab.log"]).unwrap();
        assert_eq!(o.log_file, Some("/var/log/smpfs/lab.log".into()));
        let o = MountOptions::parse(&["passphrase_file=/run/credentials/p"]).unwrap();
        assert_eq!(o.passphrase_file, Some("/run/credentials/p".into()));
        assert!(MountOptions::parse(&["umask=999"]).is_err());
        let idle =
            |v: &str| MountOptions::parse(&[format!("idle_timeout={v}")]).map(|o| o.idle_timeout);
        assert_eq!(idle("90"), Ok(Some(std::time::Duration::from_secs(90))));
        assert_eq!(idle("15m"), Ok(Some(std::time::Duration::from_secs(900))));
        assert!(idle("0").is_err() && idle("soon").is_err());
        let refresh = |v: &str| MountOptions::parse(&[format!("refresh={v}")]).map(|o| o.refresh);
        assert_eq!(refresh("1s"), Ok(Some(std::time::Duration::from_secs(1))));
        assert_eq!(refresh("0"), Ok(None));
        assert!(refresh("often").is_err());
        assert_eq!(
            MountOptions::parse(&[] as &[String]).unwrap().refresh,
            Some(std::time::Duration::from_secs(60))
        );
        assert!(MountOptions::parse(&["uid=me"]).is_err());
        assert_eq!(
            MountOptions::parse(&["gpu_sink=host"]).unwrap().gpu_sink,
            SinkKind::Host
        );
        assert!(MountOptions::parse(&["volumes"]).unwrap().volumes);
        assert!(!MountOptions::parse(&["ro"]).unwrap().volumes);
        assert!(MountOptions::parse(&["gpu_sink=tpu"]).is_err());
        // What mount(8) passes through from fstab is accepted and ignored.
        let o =
            MountOptions::parse(&["defaults,_netdev,nofail,auto,user,users,x-systemd.automount"])
                .unwrap();
        assert_eq!(o, MountOptions::default());
        // So are the generic VFS flags an fstab line may carry (`user` implies the first three).
        let o = MountOptions::parse(&["noexec,nosuid,nodev,noatime,relatime,async"]).unwrap();
        assert!(o.noexec);
        assert!(!MountOptions::parse(&["noexec,exec"]).unwrap().noexec);
        for refused in ["suid", "dev"] {
            assert!(matches!(
                MountOptions::parse(&[refused]),
                Err(OptionError::BadValue { .. })
            ));
        }
    }
}
