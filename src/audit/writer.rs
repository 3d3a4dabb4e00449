//! [`AuditLog`]: appends records to the log of one mount (one segment), fails closed, and
//! syncs by policy (every record, or group commit by a background thread).
//!
//! Invariants:
//! - one writer per log file (an exclusive `flock`), so the chain has a single head;
//! - a record is acknowledged only after `write(2)` of its whole line succeeded (and
//!   `fdatasync`, with [`SyncPolicy::Always`]);
//! - after any write or sync failure the log is failed for good: every later call errors;
//! - the only key in memory is the current `K_i`; each record overwrites it with `K_{i+1}`;
//! - an anchor checkpoint is written only after the log was synced up to it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde_json::{Map, Value};

use super::anchor::{Anchor, Checkpoint};
use super::record::{io_error, parse_line, random, wrap_key, Chain, Record, ZERO_TAG};
use super::{Actor, AuditError, Event, EventKind, SyncPolicy};
use crate::keys::Recipient;

/// Longest line the writer reads back when it reopens a log.
const MAX_LINE: u64 = 16 << 20;

/// The audit log of one mount: a segment being appended. `Send + Sync`; share it by
/// reference or `Arc`. Dropping it without [`AuditLog::seal`] leaves the segment unsealed,
/// as a crash would.
pub struct AuditLog {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    path: PathBuf,
    policy: SyncPolicy,
    /// A second descriptor of the log, so `fdatasync` can run without the state lock.
    sync_file: File,
    state: Mutex<State>,
    /// Wakes the group-commit thread (records became unsynced, or stop).
    wake: Condvar,
}

struct State {
    phase: Phase,
    /// Records were written since the last `fdatasync` (interval policy only).
    dirty: bool,
    /// The group-commit thread must exit.
    stop: bool,
}

enum Phase {
    Open(Box<Segment>),
    Sealed,
    Failed,
}

impl State {
    /// Runs `append` on the open segment; any error fails the log (logged once).
    fn append<T>(
        &mut self,
        path: &Path,
        append: impl FnOnce(&mut Segment) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let segment = match &mut self.phase {
            Phase::Open(segment) => segment,
            Phase::Sealed => {
                return Err(AuditError::Sealed {
                    path: path.to_owned(),
                })
            }
            Phase::Failed => {
                return Err(AuditError::Failed {
                    path: path.to_owned(),
                })
            }
        };
        let result = append(segment);
        if let Err(error) = &result {
            self.fail(path, error);
        }
        result
    }

    /// Fails the log for good: drops the key and the lock; logs the first failure only.
    fn fail(&mut self, path: &Path, error: &AuditError) {
        if !matches!(self.phase, Phase::Failed) {
            tracing::error!(
                path = %path.display(),
                %error,
                "audit log write failed; failing closed: every later audited request fails"
            );
            self.phase = Phase::Failed;
        }
    }
}

/// The head of the chain and the open file of the current segment.
struct Segment {
    file: File,
    _lock: Flock<File>,
    chain: Chain,
    log_id: String,
    segment: u32,
    next_seq: u64,
    prev: String,
    anchor: Option<Anchor>,
}

impl Segment {
    /// Tags and appends one record; advances the chain.
    fn append(&mut self, event: Event, path: &Path) -> Result<(), AuditError> {
        let actor = event.actor.as_ref();
        let record = Record {
            seq: self.next_seq,
            time: now(),
            log_id: self.log_id.clone(),
            segment: self.segment,
            event: event.kind,
            uid: actor.map(|a| a.uid),
            gid: actor.map(|a| a.gid),
            pid: actor.map(|a| a.pid),
            process: actor.map(|a| a.process.clone()),
            path: event.path,
            file_id: event.file_id.map(hex::encode),
            offset: event.offset,
            length: event.length,
            result: event.result,
            detail: event.detail,
            prev: self.prev.clone(),
            tag: String::new(),
        };
        let (line, tag) = record.to_line(&mut self.chain);
        self.file.write_all(&line).map_err(io_error(path))?;
        self.next_seq += 1;
        self.prev = tag;
        Ok(())
    }

    /// Syncs the log, then checkpoints the last record to the anchor (if any).
    fn checkpoint(&mut self, path: &Path) -> Result<(), AuditError> {
        let Some(anchor) = &mut self.anchor else {
            return Ok(());
        };
        self.file.sync_data().map_err(io_error(path))?;
        anchor.write(&Checkpoint {
            log_id: self.log_id.clone(),
            segment: self.segment,
            seq: self.next_seq - 1,
            tag: self.prev.clone(),
            time: now(),
        })
    }
}

/// Where a new segment continues the log.
struct Start {
    log_id: String,
    segment: u32,
    seq: u64,
    prev: String,
}

impl Start {
    fn new_log() -> Start {
        Start {
            log_id: hex::encode(*random::<16>()),
            segment: 0,
            seq: 0,
            prev: ZERO_TAG.to_owned(),
        }
    }
}

impl AuditLog {
    /// `smpfs audit init`: creates a new log at `path` (which must not exist; mode 0600)
    /// whose auditor is `auditor`, and writes its segment 0: a `mount` record that names
    /// the auditor and an `unmount` record that seals it (both with detail
    /// `{"command":"audit init"}`).
    pub fn init(path: &Path, auditor: &Recipient) -> Result<(), AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => AuditError::AlreadyExists {
                    path: path.to_owned(),
                },
                _ => AuditError::Io {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let locked = lock(file, path)?;
        let command = serde_json::json!({ "command": "audit init" });
        let mut detail = Map::new();
        detail.insert("mount".to_owned(), command.clone());
        let log = AuditLog::start(
            path,
            locked,
            auditor,
            Start::new_log(),
            SyncPolicy::Always,
            None,
            detail,
        )?;
        log.seal(command)
    }

    /// Opens (creating if missing, mode 0600) the log for a new mount and writes the
    /// segment's first record (event `mount`, detail `{"mount": mount_detail, ...}`).
    /// Continues the chain of the last complete record; truncates a torn last line (never
    /// acknowledged) and notes `recovered_torn_bytes`. `fallback_auditor` is used only for
    /// a log without one (no `audit init`), with a warning. Fails if another process has
    /// the log open.
    pub fn open_segment(
        path: &Path,
        fallback_auditor: &Recipient,
        sync: SyncPolicy,
        anchor: Option<&Path>,
        mount_detail: Value,
    ) -> Result<AuditLog, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io_error(path))?;
        let locked = lock(file, path)?;
        let file = &locked.file;
        let mut detail = Map::new();
        detail.insert("mount".to_owned(), mount_detail);
        let torn = recover_torn_tail(file, path)?;
        if torn > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = torn,
                "audit log ended in a torn record (the writer was killed mid-write); \
                 removed its unacknowledged bytes"
            );
            detail.insert("recovered_torn_bytes".to_owned(), torn.into());
        }
        let (start, auditor) = match last_record(file, path)? {
            Some(last) => {
                if last.event != EventKind::Unmount {
                    tracing::warn!(
                        path = %path.display(),
                        segment = last.segment,
                        "the previous audit segment was not sealed (crash?); \
                         `smpfs audit verify` will report it"
                    );
                    detail.insert("unsealed_previous_segment".to_owned(), last.segment.into());
                }
                let start = Start {
                    segment: last
                        .segment
                        .checked_add(1)
                        .ok_or_else(|| AuditError::Corrupt {
                            path: path.to_owned(),
                            reason: "segment numbers are exhausted".to_owned(),
                        })?,
                    seq: last.seq + 1,
                    prev: last.tag,
                    log_id: last.log_id,
                };
                (start, log_auditor(file, path)?)
            }
            None => {
                tracing::warn!(
                    path = %path.display(),
                    auditor = %fallback_auditor,
                    "audit log has no auditor: sealing its keys to this workstation's own \
                     recipient, so the workstation key itself can verify (and rewrite) this \
                     log; set up an auditor with `smpfs audit init --auditor RECIPIENT --log \
                     PATH`"
                );
                (Start::new_log(), *fallback_auditor)
            }
        };
        AuditLog::start(path, locked, &auditor, start, sync, anchor, detail)
    }

    /// Starts a segment on `file`: fresh `K_0` sealed to `auditor`, the `mount` record
    /// (synced), the first anchor checkpoint, and the group-commit thread.
    fn start(
        path: &Path,
        locked: Locked,
        auditor: &Recipient,
        start: Start,
        policy: SyncPolicy,
        anchor: Option<&Path>,
        mut detail: Map<String, Value>,
    ) -> Result<AuditLog, AuditError> {
        let k0 = random::<32>();
        let sealed_k0 = wrap_key(&k0, auditor, &start.log_id, start.segment)?;
        detail.insert("auditor".to_owned(), auditor.to_string().into());
        detail.insert("wrapped_key".to_owned(), hex::encode(sealed_k0).into());
        let new_file = start.seq == 0;
        let mut segment = Segment {
            file: locked.file,
            _lock: locked.lock,
            chain: Chain::new(&k0),
            log_id: start.log_id,
            segment: start.segment,
            next_seq: start.seq,
            prev: start.prev,
            anchor: anchor.map(Anchor::open).transpose()?,
        };
        drop(k0);
        let mount = Event::new(EventKind::Mount)
            .actor(&Actor::current())
            .detail(Value::Object(detail));
        segment.append(mount, path)?;
        segment.file.sync_data().map_err(io_error(path))?;
        if new_file {
            sync_parent(path)?;
        }
        segment.checkpoint(path)?;
        tracing::info!(
            path = %path.display(),
            log_id = %segment.log_id,
            segment = segment.segment,
            "audit segment started"
        );
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            policy,
            sync_file: segment.file.try_clone().map_err(io_error(path))?,
            state: Mutex::new(State {
                phase: Phase::Open(Box::new(segment)),
                dirty: false,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let syncer = match policy {
            SyncPolicy::Always => None,
            SyncPolicy::Interval(interval) => {
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("smpfs-audit-sync".to_owned())
                    .spawn(move || group_commit(&shared, interval))
                    .map_err(io_error(path))?;
                Some(handle)
            }
        };
        Ok(AuditLog {
            shared,
            syncer: Mutex::new(syncer),
        })
    }

    /// Appends one record; returns only after `write(2)` of the whole line succeeded (and
    /// `fdatasync`, with [`SyncPolicy::Always`]). Thread-safe. After any write failure the
    /// log is failed: this and every later call return `Err` (fail closed). `mount` and
    /// `unmount` are refused: the log writes those itself.
    pub fn record(&self, event: Event) -> Result<(), AuditError> {
        if matches!(event.kind, EventKind::Mount | EventKind::Unmount) {
            return Err(AuditError::ReservedEvent(event.kind));
        }
        let path = &self.shared.path;
        let mut state = self.shared.state.lock();
        state.append(path, |segment| {
            segment.append(event, path)?;
            if segment.anchor.as_mut().is_some_and(Anchor::count) {
                segment.checkpoint(path)
            } else {
                Ok(())
            }
        })?;
        match self.shared.policy {
            SyncPolicy::Always => {
                drop(state);
                self.shared.sync()
            }
            SyncPolicy::Interval(_) => {
                if !state.dirty {
                    state.dirty = true;
                    self.shared.wake.notify_one();
                }
                Ok(())
            }
        }
    }

    /// Writes the sealing record (event `unmount`, with `detail`), syncs, writes the final
    /// anchor checkpoint and drops the key; later `record` calls fail with `Sealed`.
    pub fn seal(&self, detail: Value) -> Result<(), AuditError> {
        let path = &self.shared.path;
        let mut state = self.shared.state.lock();
        state.append(path, |segment| {
            let unmount = Event::new(EventKind::Unmount)
                .actor(&Actor::current())
                .detail(detail);
            segment.append(unmount, path)?;
            segment.file.sync_data().map_err(io_error(path))?;
            segment.checkpoint(path)
        })?;
        state.phase = Phase::Sealed;
        state.dirty = false;
        drop(state);
        self.stop_syncer();
        tracing::info!(path = %path.display(), "audit segment sealed");
        Ok(())
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn stop_syncer(&self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.syncer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("audit group-commit thread panicked");
            }
        }
    }

    /// Points the open segment at another file (to inject write failures).
    #[cfg(test)]
    pub(crate) fn replace_file(&self, file: File) {
        if let Phase::Open(segment) = &mut self.shared.state.lock().phase {
            segment.file = file;
        }
    }

    /// The chain's current key, if the segment is open.
    #[cfg(test)]
    pub(crate) fn current_key(&self) -> Option<[u8; 32]> {
        match &self.shared.state.lock().phase {
            Phase::Open(segment) => Some(segment.chain.key()),
            _ => None,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.stop_syncer();
        let state = self.shared.state.lock();
        if let Phase::Open(segment) = &state.phase {
            tracing::warn!(
                path = %self.shared.path.display(),
                segment = segment.segment,
                "audit segment closed without a seal"
            );
            if let Err(error) = self.shared.sync_file.sync_data() {
                tracing::error!(path = %self.shared.path.display(), %error, "audit log sync failed");
            }
        }
    }
}

impl Shared {
    /// `fdatasync`s the log outside the state lock; a failure fails the log.
    fn sync(&self) -> Result<(), AuditError> {
        self.sync_file.sync_data().map_err(|source| {
            let error = AuditError::Io {
                path: self.path.clone(),
                source,
            };
            self.state.lock().fail(&self.path, &error);
            error
        })
    }
}

/// The group-commit thread: while records are unsynced, `fdatasync` at most once per
/// `interval`; exits on stop.
fn group_commit(shared: &Shared, interval: Duration) {
    let mut last_sync = Instant::now();
    let mut state = shared.state.lock();
    loop {
        if state.stop {
            return;
        }
        if !state.dirty {
            shared.wake.wait(&mut state);
            continue;
        }
        let due = last_sync + interval;
        if Instant::now() < due {
            shared.wake.wait_until(&mut state, due);
            continue;
        }
        state.dirty = false;
        let result = MutexGuard::unlocked(&mut state, || shared.sync_file.sync_data());
        last_sync = Instant::now();
        if let Err(source) = result {
            let error = AuditError::Io {
                path: shared.path.clone(),
                source,
            };
            state.fail(&shared.path, &error);
        }
    }
}

/// A log file and the exclusive lock that makes this process its only writer.
struct Locked {
    file: File,
    lock: Flock<File>,
}

/// Takes the lock on `file` (without waiting: a second mount on the same log fails).
fn lock(file: File, path: &Path) -> Result<Locked, AuditError> {
    let dup = file.try_clone().map_err(io_error(path))?;
    let lock =
        Flock::lock(dup, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
            Errno::EWOULDBLOCK => AuditError::InUse {
                path: path.to_owned(),
            },
            errno => AuditError::Io {
                path: path.to_owned(),
                source: errno.into(),
            },
        })?;
    Ok(Locked { file, lock })
}

/// UTC now, RFC 3339 with nanoseconds.
fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// `fsync`s the directory holding `path`, so a new log's name survives a crash.
fn sync_parent(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The position of the last `\n` before byte `end`, reading backwards in blocks.
fn last_newline_before(file: &File, end: u64) -> std::io::Result<Option<u64>> {
    let mut block = vec![0u8; 64 << 10];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(block.len() as u64);
        let buf = &mut block[..(hi - lo) as usize];
        file.read_exact_at(buf, lo)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Truncates a last line that lacks its `\n` (a write cut short); returns the bytes removed.
fn recover_torn_tail(file: &File, path: &Path) -> Result<u64, AuditError> {
    let io = io_error(path);
    let len = file.metadata().map_err(&io)?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1).map_err(&io)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let keep = last_newline_before(file, len)
        .map_err(&io)?
        .map_or(0, |newline| newline + 1);
    file.set_len(keep)
        .and_then(|()| file.sync_data())
        .map_err(&io)?;
    Ok(len - keep)
}

/// Reads the line `[start, end)` (without its `\n`) and parses it as a record.
fn read_record(file: &File, path: &Path, start: u64, end: u64) -> Result<Record, AuditError> {
    let corrupt = |reason: &str| AuditError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if end - start > MAX_LINE {
        return Err(corrupt("a record line is too long"));
    }
    let mut line = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut line, start)
        .map_err(io_error(path))?;
    parse_line(&line)
        .map(|(record, _)| record)
        .ok_or_else(|| corrupt("a record line does not parse"))
}

/// The last complete record of a log whose torn tail was removed; `None` if it is empty.
fn last_record(file: &File, path: &Path) -> Result<Option<Record>, AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len == 0 {
        return Ok(None);
    }
    let start = last_newline_before(file, len - 1)
        .map_err(io_error(path))?
        .map_or(0, |newline| newline + 1);
    read_record(file, path, start, len - 1).map(Some)
}

/// The auditor named by the log's first record (its `mount` detail).
fn log_auditor(file: &File, path: &Path) -> Result<Recipient, AuditError> {
    let mut head = vec![0u8; 64 << 10];
    let mut end = None;
    let mut offset = 0u64;
    while end.is_none() && offset < MAX_LINE {
        let n = file.read_at(&mut head, offset).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        end = head[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| offset + i as u64);
        offset += n as u64;
    }
    let end = end.ok_or_else(|| AuditError::Corrupt {
        path: path.to_owned(),
        reason: "its first line is too long".to_owned(),
    })?;
    read_record(file, path, 0, end)?
        .detail
        .as_ref()
        .and_then(|detail| detail.get("auditor"))
        .and_then(Value::as_str)
        .and_then(|auditor| auditor.parse().ok())
        .ok_or_else(|| AuditError::Corrupt {
            path: path.to_owned(),
            reason: "its first record names no auditor".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::unwrap_key;
    use crate::keys::Identity;

    fn lines(path: &Path) -> Vec<Record> {
        std::fs::read(path)
            .unwrap()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).expect("every line parses").0)
            .collect()
    }

    fn read_event(i: u64) -> Event {
        Event::new(EventKind::Read)
            .actor(&Actor::from_request(1000, 1000, std::process::id()))
            .path("CT/1.dcm")
            .file_id([3; 16])
            .range(i * 4096, 4096)
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AuditLog>();
    }

    #[test]
    fn init_then_segments_continue_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let auditor = Identity::generate();
        AuditLog::init(&path, &auditor.recipient()).unwrap();
        assert!(matches!(
            AuditLog::init(&path, &auditor.recipient()),
            Err(AuditError::AlreadyExists { .. })
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let workstation = Identity::generate().recipient();
        for _ in 0..2 {
            let log = AuditLog::open_segment(
                &path,
                &workstation,
                SyncPolicy::default(),
                None,
                serde_json::json!({"source": "test"}),
            )
            .unwrap();
            log.record(read_event(0)).unwrap();
            log.seal(serde_json::json!({"reason": "umount"})).unwrap();
            assert!(matches!(
                log.record(read_event(1)),
                Err(AuditError::Sealed { .. })
            ));
        }
        let records = lines(&path);
        assert_eq!(records.len(), 2 + 2 * 3);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.seq, i as u64);
            assert_eq!(record.log_id, records[0].log_id);
            let prev = if i == 0 {
                ZERO_TAG
            } else {
                &records[i - 1].tag
            };
            assert_eq!(record.prev, prev);
        }
        let segments: Vec<u32> = records.iter().map(|r| r.segment).collect();
        assert_eq!(segments, [0, 0, 1, 1, 1, 2, 2, 2]);
        let mount = records[2].detail.as_ref().unwrap();
        assert_eq!(mount["auditor"], auditor.recipient().to_string());
        assert_eq!(mount["mount"]["source"], "test");
        assert_eq!(
            records[2].process.as_deref().map(str::is_empty),
            Some(false)
        );
    }

    #[test]
    fn open_segment_without_init_falls_back_to_the_workstation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/smpfs/audit.log");
        let workstation = Identity::generate();
        let log = AuditLog::open_segment(
            &path,
            &workstation.recipient(),
            SyncPolicy::Always,
            None,
            Value::Null,
        )
        .unwrap();
        assert_eq!(log.path(), path);
        log.record(read_event(0)).unwrap();
        log.seal(Value::Null).unwrap();
        let records = lines(&path);
        let detail = records[0].detail.as_ref().unwrap();
        assert_eq!(detail["auditor"], workstation.recipient().to_string());
        let sealed = hex::decode(detail["wrapped_key"].as_str().unwrap()).unwrap();
        assert!(unwrap_key(&sealed, &workstation).is_some());
    }

    #[test]
    fn second_writer_is_refused_and_reserved_events_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let me = Identity::generate().recipient();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        assert!(matches!(
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null),
            Err(AuditError::InUse { .. })
        ));
        for kind in [EventKind::Mount, EventKind::Unmount] {
            assert!(matches!(
                log.record(Event::new(kind)),
                Err(AuditError::ReservedEvent(k)) if k == kind
            ));
        }
        log.record(read_event(0)).unwrap();
    }

    #[test]
    fn write_failure_fails_closed_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let me = Identity::generate().recipient();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.record(read_event(0)).unwrap();
        // write(2) on /dev/full fails with ENOSPC, as on a full disk.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        log.replace_file(full);
        match log.record(read_event(1)) {
            Err(AuditError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC))
            }
            other => panic!("expected the write to fail, got {other:?}"),
        }
        for i in 2..5 {
            assert!(matches!(
                log.record(read_event(i)),
                Err(AuditError::Failed { .. })
            ));
        }
        assert!(matches!(
            log.seal(Value::Null),
            Err(AuditError::Failed { .. })
        ));
        assert_eq!(log.current_key(), None, "the key is dropped on failure");
        assert_eq!(
            lines(&path).len(),
            2,
            "nothing after the failure reached the log"
        );
    }

    #[test]
    fn in_memory_key_is_k_n_and_no_earlier_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let auditor = Identity::generate();
        let log = AuditLog::open_segment(
            &path,
            &auditor.recipient(),
            SyncPolicy::default(),
            None,
            Value::Null,
        )
        .unwrap();
        const N: u64 = 20;
        for i in 0..N {
            log.record(read_event(i)).unwrap();
        }
        let records = lines(&path);
        let sealed = hex::decode(
            records[0].detail.as_ref().unwrap()["wrapped_key"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let (k0, _) = unwrap_key(&sealed, &auditor).unwrap();
        let mut chain = Chain::new(&k0);
        let mut earlier = Vec::new();
        // The mount record and N reads used K_0 .. K_N; the log now holds K_{N+1}.
        for _ in 0..=N {
            earlier.push(chain.key());
            chain.advance();
        }
        let current = log.current_key().unwrap();
        assert_eq!(current, chain.key());
        assert!(earlier.iter().all(|k| *k != current));
        log.seal(Value::Null).unwrap();
        assert_eq!(log.current_key(), None, "the key is dropped at seal");
    }

    #[test]
    fn torn_tail_is_truncated_and_noted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let me = Identity::generate().recipient();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.record(read_event(0)).unwrap();
        drop(log);
        let intact = std::fs::read(&path).unwrap();
        let partial = b"{\"seq\":2,\"time\":\"2025";
        let mut torn = intact.clone();
        torn.extend_from_slice(partial);
        std::fs::write(&path, &torn).unwrap();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.seal(Value::Null).unwrap();
        let records = lines(&path);
        assert!(std::fs::read(&path).unwrap().starts_with(&intact));
        let detail = records[2].detail.as_ref().unwrap();
        assert_eq!(detail["recovered_torn_bytes"], partial.len());
        assert_eq!(detail["unsealed_previous_segment"], 0);
        assert_eq!(records[2].seq, 2);
        assert_eq!(records[2].prev, records[1].tag);
    }

    #[test]
    fn anchor_gets_checkpoints_at_start_every_1000_records_and_seal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let anchor = dir.path().join("anchor");
        let me = Identity::generate().recipient();
        let log = AuditLog::open_segment(
            &path,
            &me,
            SyncPolicy::default(),
            Some(&anchor),
            Value::Null,
        )
        .unwrap();
        for i in 0..1001 {
            log.record(read_event(i)).unwrap();
        }
        log.seal(Value::Null).unwrap();
        let checkpoints = crate::audit::anchor::read(&anchor).unwrap();
        let seqs: Vec<u64> = checkpoints.iter().map(|(_, c)| c.seq).collect();
        assert_eq!(seqs, [0, 1000, 1002]);
        let records = lines(&path);
        for (_, checkpoint) in checkpoints {
            assert_eq!(checkpoint.tag, records[checkpoint.seq as usize].tag);
        }
    }
}
