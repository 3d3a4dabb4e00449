//! Forward-secure, hash-chained audit log: one JSON line per access, written before the
//! data is returned (fail closed), verifiable offline by the auditor only.
//!
//! `docs/AUDIT.md` specifies the format. In short: every mount starts a *segment* with a
//! fresh random key `K_0`, sealed to the auditor's recipient inside the segment's `mount`
//! record. Record `i` of a segment carries `tag_i = BLAKE3-keyed(mk_i, line_i)` with
//! `mk_i` derived from `K_i`, and `prev` = the tag before it, across segments. After each
//! record the writer replaces `K_i` by `K_{i+1} = derive(K_i)`, so whoever takes the
//! machine later cannot rewrite what was already written. A clean unmount seals the
//! segment with an `unmount` record; checkpoints to an outside *anchor* file catch
//! deletion of the newest records.
//!
//! - [`record`]: the line format, the key chain and the sealing of `K_0`;
//! - [`writer`]: [`AuditLog`], the appender with group commit and anchors;
//! - [`verify`]: the offline verifier;
//! - [`anchor`]: checkpoint lines;
//! - [`forward`]: [`Forwarder`], the live forward of a mount's records to syslog or journald;
//! - [`command`]: [`CommandLog`], the segment of a command that decrypts outside a mount.

mod anchor;
pub use anchor::{AnchorTarget, CheckpointStore, StoreError};
mod command;
pub use command::{CommandLog, Recorder, COMMAND_LOG_NAME};
mod forward;
pub use forward::{
    ForwardError, ForwardStats, ForwardTarget, Forwarder, JOURNAL_SOCKET, JOURNAL_SOCKET_VAR,
    QUEUE_LINES,
};
mod record;
mod reopen;
pub mod report;
mod verify;
mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::format::FormatError;

pub use verify::{verify, verify_files, VerifyReport};
pub use writer::{is_being_written, AuditLog};

/// Errors of writing, reading and verifying audit logs. The verification variants name
/// the first line (1-based) where the log stops verifying.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: already exists; refusing to overwrite an audit log")]
    AlreadyExists { path: PathBuf },
    #[error(
        "{path}: not an smpfs audit log (it does not start with a mount record); it was left \
         untouched: give another path, or move the file aside"
    )]
    NotALog { path: PathBuf },
    #[error(
        "{path}: the audit log is in use by another process (another mount?); give this \
         mount a log of its own with `-o audit=PATH`"
    )]
    InUse { path: PathBuf },
    #[error(
        "{path}: cannot append to this audit log: {reason}; move it aside and start a new \
         one with `smpfs audit init`"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: the audit log failed earlier; refusing to serve unaudited requests")]
    Failed { path: PathBuf },
    #[error("{path}: the audit segment is sealed; nothing more can be recorded")]
    Sealed { path: PathBuf },
    #[error("{0:?} records are written by the audit log itself")]
    ReservedEvent(EventKind),
    #[error("cannot seal the segment key to the auditor: {0}")]
    Wrap(#[from] FormatError),
    #[error(
        "invalid audit sync policy `{0}`: expected `always` or a positive number of milliseconds"
    )]
    BadSyncPolicy(String),
    #[error("{path}: the audit log is empty")]
    Empty { path: PathBuf },
    #[error("anchor {anchor} checkpoint {line}: not a valid anchor checkpoint")]
    BadAnchor { anchor: String, line: usize },
    #[error("anchor {anchor}: {source}")]
    AnchorStore {
        anchor: String,
        #[source]
        source: anchor::StoreError,
    },
    #[error("line {line} (seq {seq}) was modified: its tag does not match")]
    Modified { line: usize, seq: u64 },
    #[error("records were deleted: seq {first} to {last} are missing before line {line}")]
    Deleted { line: usize, first: u64, last: u64 },
    #[error("records were reordered: line {line} holds seq {seq} where seq {expected} belongs")]
    Reordered {
        line: usize,
        seq: u64,
        expected: u64,
    },
    #[error("a record was inserted at line {line} (seq {seq}): {why}")]
    Inserted { line: usize, seq: u64, why: String },
    #[error(
        "torn tail: line {line} is incomplete: the writer stopped in the middle of a record, \
         after {records} complete records"
    )]
    TornTail { line: usize, records: u64 },
    #[error(
        "segment {segment} is not sealed: it starts at seq {first_seq} (line {first_line}) and \
         stops after seq {last_seq} (line {last_line}) with no unmount record, so the writer \
         crashed or the log was truncated there{}",
        also_unsealed(*.more)
    )]
    Unsealed {
        segment: u32,
        first_seq: u64,
        first_line: usize,
        last_seq: u64,
        last_line: usize,
        more: usize,
    },
    #[error("a segment is missing before line {line} (seq {seq}): {why}")]
    SegmentMissing { line: usize, seq: u64, why: String },
    #[error("spliced: line {line} (seq {seq}) comes from another log: {why}")]
    Spliced { line: usize, seq: u64, why: String },
    #[error(
        "not for this auditor: segment {segment} (line {line}) is sealed to {auditor}, not to \
         {ours}"
    )]
    NotForAuditor {
        segment: u32,
        line: usize,
        auditor: String,
        ours: String,
    },
    #[error("behind anchor (anchor line {anchor_line}, seq {seq}): {why}")]
    BehindAnchor {
        anchor_line: usize,
        seq: u64,
        why: String,
    },
}

fn also_unsealed(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!("; {n} later segments are unsealed too"),
    }
}

/// When appended records reach the disk. Records are always written (`write(2)`) before
/// [`AuditLog::record`] returns; this decides when they are `fdatasync`ed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before every `record` returns: nothing acknowledged is lost.
    Always,
    /// Group commit: a background thread syncs at most once per interval while records are
    /// unsynced, so a power loss loses at most about one interval of records.
    Interval(Duration),
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Interval(Duration::from_millis(100))
    }
}

impl FromStr for SyncPolicy {
    type Err = AuditError;

    /// `always`, or a positive whole number of milliseconds such as `100`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("always") {
            return Ok(SyncPolicy::Always);
        }
        match text.parse::<u64>() {
            Ok(ms) if ms > 0 && text.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
            }
            _ => Err(AuditError::BadSyncPolicy(s.to_owned())),
        }
    }
}

/// Who made a request: the FUSE request's credentials and the process name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// User id of the requesting process.
    pub uid: u32,
    /// Group id of the requesting process.
    pub gid: u32,
    /// Process id (the thread group id the kernel reports).
    pub pid: u32,
    /// `/proc/PID/comm` at the time of the request, or `?` if it could not be read.
    pub process: String,
    /// The login name of `uid` (the password database's), or `?` if it has none.
    pub user: String,
    /// Why the data is accessed, as stated for the process's session (`smpfs purpose`),
    /// the mount (`-o purpose=`) or the command (`--purpose`), if stated.
    pub purpose: Option<String>,
}

impl Actor {
    /// The actor of a FUSE request; reads `/proc/PID/comm` (one small read, no caching).
    pub fn from_request(uid: u32, gid: u32, pid: u32) -> Actor {
        let process = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|comm| comm.trim().to_owned())
            .filter(|comm| !comm.is_empty())
            .unwrap_or_else(|| "?".to_owned());
        Actor {
            uid,
            gid,
            pid,
            process,
            user: user_name(uid),
            purpose: None,
        }
    }

    /// This process, for the records the log writes itself (mount, unmount).
    fn current() -> Actor {
        Actor::from_request(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
            std::process::id(),
        )
    }
}

/// The login name of `uid`, looked up once per uid for the process's life (a mount serves a
/// handful of users, and the password database may be slow: NSS, LDAP).
fn user_name(uid: u32) -> String {
    static NAMES: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashMap<u32, String>>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(name) = names.lock().get(&uid) {
        return name.clone();
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
        .unwrap_or_else(|| "?".to_owned());
    names.lock().insert(uid, name.clone());
    name
}

/// This machine's host name, read once (`?` if it cannot be read).
pub(crate) fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "?".to_owned())
    })
}

/// What a record is about; written as the snake_case `event` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// First record of a segment (written by [`AuditLog::open_segment`]).
    Mount,
    /// A file was opened.
    Open,
    /// One read request, before its data is returned.
    Read,
    /// A file handle was released.
    Release,
    /// A request was refused (permissions, policy).
    Denied,
    /// Sealed data failed authentication; no data was returned.
    IntegrityFailure,
    /// A GPU load, before its first byte is copied (or its refusal or failure).
    GpuLoad,
    /// Caches were zeroized and keys dropped.
    Purge,
    /// A v2 bucket's manifest was read again: its generation and what changed.
    Refresh,
    /// The sealing record of a segment (written by [`AuditLog::seal`]).
    Unmount,
}

/// One event to record. Built with [`Event::new`] and the builder-style setters; fields
/// left `None` are omitted from the line.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Who asked.
    pub actor: Option<Actor>,
    /// The path inside the mount (metadata; never file contents).
    pub path: Option<String>,
    /// The sealed file's id (public, from its header).
    pub file_id: Option<[u8; 16]>,
    /// Byte offset of a read.
    pub offset: Option<u64>,
    /// Byte length of a read.
    pub length: Option<u64>,
    /// `ok`, or a short error such as `EIO: chunk 2 failed authentication`.
    pub result: String,
    /// Any other structured facts (never plaintext or key material).
    pub detail: Option<serde_json::Value>,
}

impl Event {
    /// An event of `kind` with result `ok` and nothing else set.
    pub fn new(kind: EventKind) -> Self {
        Event {
            kind,
            actor: None,
            path: None,
            file_id: None,
            offset: None,
            length: None,
            result: "ok".to_owned(),
            detail: None,
        }
    }

    /// Sets who made the request.
    pub fn actor(mut self, actor: &Actor) -> Self {
        self.actor = Some(actor.clone());
        self
    }

    /// Sets the path inside the mount.
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// Sets the sealed file's id.
    pub fn file_id(mut self, id: [u8; 16]) -> Self {
        self.file_id = Some(id);
        self
    }

    /// Sets the byte range of a read.
    pub fn range(mut self, offset: u64, length: u64) -> Self {
        self.offset = Some(offset);
        self.length = Some(length);
        self
    }

    /// Sets the result (`ok` unless set).
    pub fn result(mut self, result: impl Into<String>) -> Self {
        self.result = result.into();
        self
    }

    /// Sets the free-form detail.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policy_parses_always_and_milliseconds() {
        assert_eq!("always".parse::<SyncPolicy>().unwrap(), SyncPolicy::Always);
        assert_eq!("ALWAYS".parse::<SyncPolicy>().unwrap(), SyncPolicy::Always);
        assert_eq!(
            "100".parse::<SyncPolicy>().unwrap(),
            SyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(
            " 2500 ".parse::<SyncPolicy>().unwrap(),
            SyncPolicy::Interval(Duration::from_millis(2500))
        );
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "1.5",
            "100ms",
            "never",
            "18446744073709551616",
        ] {
            assert!(
                matches!(bad.parse::<SyncPolicy>(), Err(AuditError::BadSyncPolicy(_))),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            SyncPolicy::default(),
            SyncPolicy::Interval(Duration::from_millis(100))
        );
    }

    #[test]
    fn actor_reads_process_name_or_question_mark() {
        let me = Actor::from_request(0, 2, std::process::id());
        assert_eq!((me.uid, me.gid), (0, 2));
        assert_eq!(me.user, "root");
        assert_eq!(Actor::from_request(4_000_000_000, 0, 1).user, "?");
        assert_ne!(me.process, "?");
        assert!(!me.process.ends_with('\n'));
        // pid_max is at most 2^22 on Linux, so this pid never exists.
        let nobody = Actor::from_request(0, 0, u32::MAX);
        assert_eq!(nobody.process, "?");
    }

    #[test]
    fn event_builder_sets_fields() {
        let actor = Actor::from_request(5, 6, 7);
        let event = Event::new(EventKind::Read)
            .actor(&actor)
            .path("CT/1.dcm")
            .file_id([9; 16])
            .range(4096, 512)
            .result("EIO: chunk 2 failed authentication")
            .detail(serde_json::json!({"inode": 3}));
        assert_eq!(event.kind, EventKind::Read);
        assert_eq!(event.actor, Some(actor));
        assert_eq!(event.path.as_deref(), Some("CT/1.dcm"));
        assert_eq!(event.file_id, Some([9; 16]));
        assert_eq!((event.offset, event.length), (Some(4096), Some(512)));
        assert_eq!(event.result, "EIO: chunk 2 failed authentication");
        assert_eq!(Event::new(EventKind::Open).result, "ok");
        assert_eq!(
            serde_json::to_string(&EventKind::IntegrityFailure).unwrap(),
            "\"integrity_failure\""
        );
    }
}
