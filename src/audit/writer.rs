//! [`AuditLog`]: appends records to the log of one mount (one segment), fails closed, and
//! syncs by policy (every record, or group commit by a background thread).
//!
//! Concurrent callers share their `write(2)`s (group append). A caller serializes its
//! event ([`Body`]) before taking the state lock; under it, it only puts the record in the
//! chain (seq, time, `prev`, tag, key evolution) and appends the line to the pending
//! batch. If no batch is being written, it becomes the *leader*: it takes the whole
//! pending batch, writes it with one `write(2)` without holding the state lock, marks it
//! acknowledged and wakes the callers whose records it held. Otherwise it waits for the
//! batch in flight (watching briefly, then asleep); when that batch ends it either finds
//! its record acknowledged or, its record still pending, leads the next batch itself.
//!
//! Invariants:
//! - one writer per log file (an exclusive `flock`, held until the [`AuditLog`] is
//!   dropped), so the chain has a single head;
//! - lines reach the file in seq order: they join the pending batch in seq order under the
//!   state lock, and at most one batch is in flight (`State::writing`), taken whole;
//! - a record is acknowledged only after the `write(2)` of the batch holding its line
//!   succeeded (and `fdatasync`, with [`SyncPolicy::Always`]), and only if the log had not
//!   failed meanwhile;
//! - after any write or sync failure (a full disk, an I/O error, the file deleted) the log
//!   is failed for good: the caller that hit it, every caller whose record was not
//!   acknowledged yet and every later call error, and nothing more is written;
//! - the only key in memory is the current `K_i`; each record overwrites it with `K_{i+1}`;
//! - an anchor checkpoint is written only after the log was synced up to it, and names a
//!   record whose line was written (the last of a batch).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde_json::{Map, Value};

use super::anchor::{Anchor, AnchorTarget, Checkpoint};
use super::forward::Forwarder;
use super::record::{io_error, random, wrap_key, Body, Chain, Place, ZERO_TAG};
use super::reopen::{
    check_is_log, last_record, log_auditor, recover_torn_tail, rotated_predecessor,
};
use super::{Actor, AuditError, Event, EventKind, SyncPolicy};
use crate::keys::Recipient;

/// How long a caller waiting for a batch watches for its end before it sleeps: a few
/// `write(2)`s to a page-cache file.
const WATCH: Duration = Duration::from_micros(20);
/// How long the one caller that watches alone spins before it yields between looks.
const SPIN: Duration = Duration::from_micros(8);

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
    /// Wakes the callers waiting on a batch, by the parity of its number: those whose
    /// records it held when it completes (or fails), one of the next batch's to lead it.
    written: [Condvar; 2],
    /// Every record with a lower seq was written and acknowledged; every other record of
    /// the chain is in the batch in flight or in `State::pending`, unless the log failed.
    /// Only a leader advances it, under the state lock; a waiting caller may watch it
    /// without the lock.
    acknowledged: AtomicU64,
    /// Batches completed (written or failed), counted under the state lock, so that a
    /// waiting caller can watch for the end of the batch in flight without the lock.
    batches: AtomicU64,
    /// A caller watches alone, spinning (see [`Shared::watch`]); a hint, so `Relaxed`.
    watching: AtomicBool,
    /// Where batches go. Locked only by the leader, of which there is at most one
    /// (`State::writing`), and never while holding `state`: it is never contended.
    output: Mutex<Output>,
}

struct State {
    phase: Phase,
    /// Lines chained and tagged but not yet taken by a leader, in seq order, directly
    /// following the batch in flight (if any) or else the written records.
    pending: Batch,
    /// A leader is writing a batch.
    writing: bool,
    /// Batches taken by leaders so far: the number of the next batch, the one that will
    /// hold the pending lines.
    taken: u64,
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
    /// Puts `body` in the chain as the next record and queues its line; returns its seq.
    fn push(&mut self, path: &Path, body: &Body) -> Result<u64, AuditError> {
        match &mut self.phase {
            Phase::Open(segment) => Ok(segment.push(body, &mut self.pending)),
            Phase::Sealed => Err(AuditError::Sealed {
                path: path.to_owned(),
            }),
            Phase::Failed => Err(AuditError::Failed {
                path: path.to_owned(),
            }),
        }
    }
}

/// The head of the chain of the current segment.
struct Segment {
    chain: Chain,
    log_id: String,
    segment: u32,
    next_seq: u64,
    prev: String,
}

impl Segment {
    /// Places `body` as the next record, tags it, advances the chain and appends the line
    /// to `batch`; returns its seq.
    fn push(&mut self, body: &Body, batch: &mut Batch) -> u64 {
        let seq = self.next_seq;
        let place = Place {
            seq,
            time: &now(),
            log_id: &self.log_id,
            segment: self.segment,
            prev: &self.prev,
        };
        let (line, tag) = body.to_line(&place, &mut self.chain);
        batch.lines.extend_from_slice(&line);
        batch.records += 1;
        batch.last_seq = seq;
        batch.last_tag.clone_from(&tag);
        self.next_seq += 1;
        self.prev = tag;
        seq
    }
}

/// Consecutive lines of the log, written with one `write(2)`.
#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    /// Records in `lines`.
    records: u64,
    /// Seq and tag of the last record in `lines` (meaningless while `records` is 0).
    last_seq: u64,
    last_tag: String,
    /// `fdatasync` after writing, whatever the policy (the seal).
    sync: bool,
    /// Checkpoint the last record to the anchor after writing, whether due or not (the seal).
    checkpoint: bool,
}

/// The log file as the leader writes it, the anchor, and the live forward.
struct Output {
    file: File,
    _lock: Flock<File>,
    anchor: Option<Anchor>,
    log_id: String,
    segment: u32,
    /// Where the segment's first line starts in the file.
    segment_start: u64,
    /// Gets each batch once written (see [`AuditLog::forward`]).
    forward: Option<Forwarder>,
}

impl Output {
    /// Writes `batch` (one `write(2)` unless it comes up short), then `fdatasync`s if
    /// `sync`, then checkpoints its last record if the batch asks for it or the anchor is
    /// due (counting each of its records), then queues it to the forward, if any.
    fn commit(&mut self, batch: &Batch, sync: bool, path: &Path) -> Result<(), AuditError> {
        self.file.write_all(&batch.lines).map_err(io_error(path))?;
        if sync {
            self.file.sync_data().map_err(io_error(path))?;
        }
        // Lines written to a log file deleted while mounted would be lost with it.
        if self.file.metadata().map_err(io_error(path))?.nlink() == 0 {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the audit log file was deleted while mounted",
                ),
            });
        }
        let mut due = batch.checkpoint;
        if let Some(anchor) = &mut self.anchor {
            for _ in 0..batch.records {
                due |= anchor.count();
            }
        }
        if due {
            self.checkpoint(batch, path)?;
        }
        if let Some(forward) = &mut self.forward {
            forward.send(&batch.lines, batch.records);
        }
        Ok(())
    }

    /// Syncs the log, then checkpoints the last record of `batch` (already written) to the
    /// anchor, if any.
    fn checkpoint(&mut self, batch: &Batch, path: &Path) -> Result<(), AuditError> {
        let Some(anchor) = &mut self.anchor else {
            return Ok(());
        };
        self.file.sync_data().map_err(io_error(path))?;
        anchor.write(&Checkpoint {
            log_id: self.log_id.clone(),
            segment: self.segment,
            seq: batch.last_seq,
            tag: batch.last_tag.clone(),
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
        let locked = lock(file, path, Busy::Grace)?;
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
        anchor: Option<&AnchorTarget>,
        mount_detail: Value,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::open_segment_when(
            path,
            fallback_auditor,
            sync,
            anchor,
            mount_detail,
            Busy::Grace,
        )
    }

    /// [`AuditLog::open_segment`], doing what `busy` says while another process holds
    /// the log.
    pub(super) fn open_segment_when(
        path: &Path,
        fallback_auditor: &Recipient,
        sync: SyncPolicy,
        anchor: Option<&AnchorTarget>,
        mount_detail: Value,
        busy: Busy,
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
        let locked = lock(file, path, busy)?;
        let file = &locked.file;
        check_is_log(file, path)?;
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
            None if let Some((rotated, last, auditor)) = rotated_predecessor(path)? => {
                tracing::warn!(
                    path = %path.display(),
                    rotated = %rotated,
                    "the audit log holds no record but was rotated into {rotated}: a crash \
                     interrupted the rotation; the chain continues from there"
                );
                detail.insert("rotated_from".to_owned(), rotated.into());
                detail.insert("resumed_rotation".to_owned(), true.into());
                let start = Start {
                    segment: last.segment + 1,
                    seq: last.seq + 1,
                    prev: last.tag,
                    log_id: last.log_id,
                };
                (start, auditor)
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
        anchor: Option<&AnchorTarget>,
        mut detail: Map<String, Value>,
    ) -> Result<AuditLog, AuditError> {
        let k0 = random::<32>();
        let sealed_k0 = wrap_key(&k0, auditor, &start.log_id, start.segment)?;
        detail.insert("auditor".to_owned(), auditor.to_string().into());
        detail.insert("wrapped_key".to_owned(), hex::encode(sealed_k0).into());
        let new_file = start.seq == 0;
        let mut segment = Segment {
            chain: Chain::new(&k0),
            log_id: start.log_id.clone(),
            segment: start.segment,
            next_seq: start.seq,
            prev: start.prev,
        };
        drop(k0);
        let mut output = Output {
            segment_start: locked.file.metadata().map_err(io_error(path))?.len(),
            file: locked.file,
            _lock: locked.lock,
            anchor: anchor.map(Anchor::open).transpose()?,
            log_id: start.log_id,
            segment: start.segment,
            forward: None,
        };
        let mount = Event::new(EventKind::Mount)
            .actor(&Actor::current())
            .detail(Value::Object(detail));
        let mut batch = Batch::default();
        segment.push(&Body::new(mount), &mut batch);
        output.commit(&batch, true, path)?;
        if new_file {
            sync_parent(path)?;
        }
        output.checkpoint(&batch, path)?;
        tracing::info!(
            path = %path.display(),
            log_id = %segment.log_id,
            segment = segment.segment,
            "audit segment started"
        );
        let next_seq = segment.next_seq;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            policy,
            sync_file: output.file.try_clone().map_err(io_error(path))?,
            state: Mutex::new(State {
                phase: Phase::Open(Box::new(segment)),
                pending: Batch::default(),
                writing: false,
                taken: 0,
                dirty: false,
                stop: false,
            }),
            wake: Condvar::new(),
            written: [Condvar::new(), Condvar::new()],
            acknowledged: AtomicU64::new(next_seq),
            batches: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            output: Mutex::new(output),
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

    /// Appends one record; returns only after the `write(2)` holding its whole line
    /// succeeded (and `fdatasync`, with [`SyncPolicy::Always`]). Thread-safe; concurrent
    /// calls share `write(2)`s. After any write failure the log is failed: this and every
    /// later call return `Err` (fail closed). `mount` and `unmount` are refused: the log
    /// writes those itself.
    pub fn record(&self, event: Event) -> Result<(), AuditError> {
        if matches!(event.kind, EventKind::Mount | EventKind::Unmount) {
            return Err(AuditError::ReservedEvent(event.kind));
        }
        let body = Body::new(event);
        let mut state = self.shared.state.lock();
        let seq = state.push(&self.shared.path, &body)?;
        self.shared.wait_written(state, seq)
    }

    /// Forwards the segment's lines to `forwarder`: those written so far (read back from
    /// the log), then each batch once its `write(2)` succeeded, in order. Call it once,
    /// right after opening the segment.
    pub fn forward(&self, mut forwarder: Forwarder) -> Result<(), AuditError> {
        let mut output = self.shared.output.lock();
        forwarder
            .send_written(&output.file, output.segment_start)
            .map_err(io_error(&self.shared.path))?;
        output.forward = Some(forwarder);
        Ok(())
    }

    /// Writes the sealing record (event `unmount`, with `detail` and, with a forward, its
    /// counts so far in `forward`), syncs, writes the final anchor checkpoint and drops
    /// the key; later `record` calls fail with `Sealed`. Ends the forward after it got the
    /// sealing record.
    pub fn seal(&self, mut detail: Value) -> Result<(), AuditError> {
        let path = &self.shared.path;
        if let Some(forward) = &self.shared.output.lock().forward {
            forward.note(&mut detail);
        }
        let unmount = Body::new(
            Event::new(EventKind::Unmount)
                .actor(&Actor::current())
                .detail(detail),
        );
        let mut state = self.shared.state.lock();
        let seq = state.push(path, &unmount)?;
        state.pending.sync = true;
        state.pending.checkpoint = true;
        // Nothing may follow the seal; the records before it are still written first.
        state.phase = Phase::Sealed;
        self.shared.wait_written(state, seq)?;
        self.stop_syncer();
        tracing::info!(path = %path.display(), "audit segment sealed");
        // Ending the forward sends what is queued (for a bounded time) and logs the totals;
        // not under the output lock.
        let forward = self.shared.output.lock().forward.take();
        drop(forward);
        Ok(())
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// With a live forward, adds its counts so far to `detail` as `"forward": {"to",
    /// "sent", "dropped", "errors", "queued"}` (for `smpfs status`); without one, leaves it.
    pub fn note_forward(&self, detail: &mut Value) {
        if let Some(forward) = &self.shared.output.lock().forward {
            forward.note(detail);
        }
    }

    /// Rotation: seals this segment (detail `{"rotated_to": NAME}`), renames its file to
    /// `rotated`, and starts the next segment in a new file at the old path, continuing the
    /// chain from the seal (its `mount` detail says `{"rotated_from": NAME}` besides
    /// `mount_detail`), with the same sync policy and the given anchor. `smpfs audit verify`
    /// of the directory follows the chain across the files.
    pub fn rotate(
        &self,
        rotated: &Path,
        anchor: Option<&AnchorTarget>,
        mount_detail: Value,
    ) -> Result<AuditLog, AuditError> {
        let path = self.shared.path.clone();
        let name = rotated
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.seal(serde_json::json!({ "rotated_to": name }))?;
        let file = &self.shared.sync_file;
        let last = last_record(file, &path)?.ok_or_else(|| AuditError::Corrupt {
            path: path.clone(),
            reason: "nothing to rotate".to_owned(),
        })?;
        let auditor = log_auditor(file, &path)?;
        std::fs::rename(&path, rotated).map_err(io_error(&path))?;
        let next = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        let locked = lock(next, &path, Busy::Grace)?;
        let mut detail = Map::new();
        detail.insert("mount".to_owned(), mount_detail);
        detail.insert("rotated_from".to_owned(), name.into());
        let start = Start {
            segment: last.segment + 1,
            seq: last.seq + 1,
            prev: last.tag,
            log_id: last.log_id,
        };
        let log = AuditLog::start(
            &path,
            locked,
            &auditor,
            start,
            self.shared.policy,
            anchor,
            detail,
        )?;
        sync_parent(&path)?;
        Ok(log)
    }

    /// Whether records could still be written, without writing one: fails, as
    /// [`AuditLog::record`] would, once the log has failed, is sealed, or its file was
    /// deleted (which fails the log for good). A read that earlier records already cover
    /// calls this instead of writing.
    pub fn check(&self) -> Result<(), AuditError> {
        let path = &self.shared.path;
        let mut state = self.shared.state.lock();
        match state.phase {
            Phase::Open(_) => {}
            Phase::Sealed => return Err(AuditError::Sealed { path: path.clone() }),
            Phase::Failed => return Err(AuditError::Failed { path: path.clone() }),
        }
        let deleted = self
            .shared
            .sync_file
            .metadata()
            .map_err(io_error(path))
            .and_then(|m| {
                if m.nlink() == 0 {
                    Err(AuditError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the audit log file was deleted while mounted",
                        ),
                    })
                } else {
                    Ok(())
                }
            });
        if let Err(error) = deleted {
            self.shared.fail(&mut state, &error);
            return Err(error);
        }
        Ok(())
    }

    /// For `smpfs status`: `open` with the segment and the records written so far,
    /// `sealed`, or `failed` (every audited request is refused).
    pub fn state(&self) -> String {
        match &self.shared.state.lock().phase {
            Phase::Open(segment) => format!(
                "open (segment {}, {} records)",
                segment.segment, segment.next_seq
            ),
            Phase::Sealed => "sealed".to_owned(),
            Phase::Failed => "failed: audited requests are refused".to_owned(),
        }
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

    /// Points the segment at another file (to inject write failures).
    #[cfg(test)]
    pub(crate) fn replace_file(&self, file: File) {
        self.shared.output.lock().file = file;
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
    /// Fails the log for good: drops the key and the pending lines, and wakes every waiting
    /// caller to return `Err`; logs the first failure only.
    fn fail(&self, state: &mut State, error: &AuditError) {
        if !matches!(state.phase, Phase::Failed) {
            tracing::error!(
                path = %self.path.display(),
                %error,
                "audit log write failed; failing closed: every later audited request fails"
            );
            state.phase = Phase::Failed;
            state.pending = Batch::default();
        }
        for written in &self.written {
            written.notify_all();
        }
    }

    /// Returns once record `seq`, which this caller just queued, is acknowledged, leading
    /// batches whenever none is in flight; `Err` if the log fails first (with the I/O error
    /// for the leader that hit it).
    fn wait_written<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        seq: u64,
    ) -> Result<(), AuditError> {
        // The record is in the next batch taken.
        let parity = (state.taken % 2) as usize;
        let mut patient = true;
        loop {
            if self.acknowledged.load(Ordering::Acquire) > seq {
                return Ok(());
            }
            if matches!(state.phase, Phase::Failed) {
                return Err(AuditError::Failed {
                    path: self.path.clone(),
                });
            }
            if !state.writing {
                self.lead(&mut state)?;
            } else if patient {
                let batches = self.batches.load(Ordering::Relaxed);
                drop(state);
                match self.watch(seq, batches) {
                    Watched::Acknowledged => return Ok(()),
                    Watched::BatchEnded => {}
                    Watched::TimedOut => patient = false,
                }
                state = self.state.lock();
            } else {
                self.written[parity].wait(&mut state);
            }
        }
    }

    /// Watches, without the state lock, for record `seq` to be acknowledged or for the
    /// batch in flight to end (`batches` changing), for at most [`WATCH`]. A batch takes
    /// about one `write(2)`: unless its leader was preempted, watching costs less than
    /// sleeping and being woken. One caller at a time spins, for at most [`SPIN`]; more
    /// callers waiting hints at more threads than CPUs, so the others yield the CPU
    /// between looks (maybe to that leader), as the spinner does after `SPIN`.
    fn watch(&self, seq: u64, batches: u64) -> Watched {
        let alone = !self.watching.swap(true, Ordering::Relaxed);
        let start = Instant::now();
        let watched = 'watch: loop {
            for _ in 0..64 {
                if self.acknowledged.load(Ordering::Acquire) > seq {
                    break 'watch Watched::Acknowledged;
                }
                if self.batches.load(Ordering::Relaxed) != batches {
                    break 'watch Watched::BatchEnded;
                }
                std::hint::spin_loop();
            }
            let waited = start.elapsed();
            if waited >= WATCH {
                break Watched::TimedOut;
            }
            if !alone || waited >= SPIN {
                std::thread::yield_now();
            }
        };
        if alone {
            self.watching.store(false, Ordering::Relaxed);
        }
        watched
    }

    /// Takes the whole pending batch and commits it without holding the state lock; then
    /// acknowledges it (or fails the log), wakes its callers and one caller of the next
    /// batch, if any, to lead it. Called with no batch in flight, the log not failed, and
    /// at least the caller's record pending.
    fn lead(&self, state: &mut MutexGuard<'_, State>) -> Result<(), AuditError> {
        debug_assert!(!state.writing && state.pending.records > 0);
        let batch = std::mem::take(&mut state.pending);
        let parity = (state.taken % 2) as usize;
        let sync = batch.sync || self.policy == SyncPolicy::Always;
        state.taken += 1;
        state.writing = true;
        let result = MutexGuard::unlocked(state, || {
            self.output.lock().commit(&batch, sync, &self.path)
        });
        state.writing = false;
        let result = result.and_then(|()| match state.phase {
            // A sync failed while the batch was written: it is not acknowledged.
            Phase::Failed => Err(AuditError::Failed {
                path: self.path.clone(),
            }),
            Phase::Open(_) | Phase::Sealed => Ok(()),
        });
        match &result {
            Ok(()) => {
                self.acknowledged
                    .store(batch.last_seq + 1, Ordering::Release);
                if !sync && !state.dirty {
                    state.dirty = true;
                    self.wake.notify_one();
                }
                self.written[parity].notify_all();
                if state.pending.records > 0 {
                    self.written[1 - parity].notify_one();
                }
            }
            Err(error) => self.fail(state, error),
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// What [`Shared::watch`] saw.
enum Watched {
    Acknowledged,
    BatchEnded,
    TimedOut,
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
            shared.fail(&mut state, &error);
        }
    }
}

/// A log file and the exclusive lock that makes this process its only writer.
struct Locked {
    file: File,
    lock: Flock<File>,
}

/// How long to wait for the lock: a mount that was just unmounted may still be writing its
/// seal record (`umount` returns before the daemon exits).
const LOCK_GRACE: Duration = Duration::from_secs(3);

/// What opening a log does while another process holds its lock.
#[derive(Clone, Copy)]
pub(super) enum Busy<'a> {
    /// Wait up to [`LOCK_GRACE`], then fail with [`AuditError::InUse`] (a mount: the other
    /// writer is a live mount, which holds its log for its whole life).
    Grace,
    /// Wait for as long as it holds it, calling the function once before waiting (a
    /// command: the other writer is another command, which finishes).
    Wait(&'a dyn Fn()),
}

/// Takes the lock on `file`, doing what `busy` says while another process holds it.
fn lock(file: File, path: &Path, busy: Busy) -> Result<Locked, AuditError> {
    let deadline = Instant::now() + LOCK_GRACE;
    loop {
        let dup = file.try_clone().map_err(io_error(path))?;
        match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Locked { file, lock }),
            Err((_, Errno::EWOULDBLOCK)) => match busy {
                Busy::Wait(waiting) => {
                    waiting();
                    return lock_blocking(file, path);
                }
                Busy::Grace if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Busy::Grace => {
                    return Err(AuditError::InUse {
                        path: path.to_owned(),
                    })
                }
            },
            Err((_, errno)) => {
                return Err(AuditError::Io {
                    path: path.to_owned(),
                    source: errno.into(),
                })
            }
        }
    }
}

/// Takes the lock on `file`, waiting for as long as another process holds it.
fn lock_blocking(file: File, path: &Path) -> Result<Locked, AuditError> {
    loop {
        let dup = file.try_clone().map_err(io_error(path))?;
        match Flock::lock(dup, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(Locked { file, lock }),
            Err((_, Errno::EINTR)) => {}
            Err((_, errno)) => {
                return Err(AuditError::Io {
                    path: path.to_owned(),
                    source: errno.into(),
                })
            }
        }
    }
}

/// Whether a live writer (a mount) holds the log at `path` open: its last segment is then
/// still being written, not cut short by a crash.
pub fn is_being_written(path: &Path) -> Result<bool, AuditError> {
    let file = File::open(path).map_err(io_error(path))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, errno)) => Err(AuditError::Io {
            path: path.to_owned(),
            source: errno.into(),
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::unwrap_key;
    use crate::audit::VerifyReport;
    use crate::keys::Identity;

    use crate::audit::record::read_records as lines;

    /// A new log, `audit.log` in a fresh directory, to a fresh recipient, default syncing.
    fn fresh_log() -> (tempfile::TempDir, PathBuf, Recipient, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let me = Identity::generate().recipient();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        (dir, path, me, log)
    }

    fn read_event(i: u64) -> Event {
        Event::new(EventKind::Read)
            .actor(&Actor::from_request(1000, 1000, std::process::id()))
            .path("CT/1.dcm")
            .file_id([3; 16])
            .range(i * 4096, 4096)
    }

    /// A crash right after a rotation's rename leaves the new file empty or with a torn
    /// first record; the next mount continues the chain from the rotated file, under its
    /// auditor, and the two files verify as one log.
    #[test]
    fn a_rotation_cut_short_by_a_crash_resumes_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let auditor = Identity::generate();
        AuditLog::init(&path, &auditor.recipient()).unwrap();
        let workstation = Identity::generate().recipient();
        let open = || {
            AuditLog::open_segment(
                &path,
                &workstation,
                SyncPolicy::default(),
                None,
                Value::Null,
            )
            .unwrap()
        };
        let log = open();
        log.record(read_event(0)).unwrap();
        let rotated = dir.path().join("audit.log.1");
        let next = log.rotate(&rotated, None, Value::Null).unwrap();
        let first_of_next = lines(&path)[0].seq;
        drop(next);
        // The crash: the new file's first record torn (truncated mid-line).
        std::fs::write(&path, format!("{{\"seq\":{first_of_next},\"time\":\"2026-")).unwrap();
        let resumed = open();
        resumed.record(read_event(1)).unwrap();
        resumed
            .seal(serde_json::json!({"reason": "umount"}))
            .unwrap();
        let records = lines(&path);
        assert_eq!(records[0].seq, lines(&rotated).last().unwrap().seq + 1);
        let detail = records[0].detail.as_ref().unwrap();
        assert_eq!(detail["rotated_from"], "audit.log.1");
        assert_eq!(detail["resumed_rotation"], true);
        assert_eq!(detail["auditor"], auditor.recipient().to_string());
        let report =
            crate::audit::verify_files(&path, &[rotated, path.clone()], &auditor, None).unwrap();
        assert_eq!(report.records, records.last().unwrap().seq + 1);
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
        let (_dir, path, me, log) = fresh_log();
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
        let (_dir, path, _, log) = fresh_log();
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
    fn a_deleted_log_fails_closed() {
        let (_dir, path, _, log) = fresh_log();
        log.record(read_event(0)).unwrap();
        std::fs::remove_file(&path).unwrap();
        match log.record(read_event(1)) {
            Err(AuditError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("expected the deleted log to fail the record, got {other:?}"),
        }
        assert!(matches!(
            log.record(read_event(2)),
            Err(AuditError::Failed { .. })
        ));
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
        let (_dir, path, me, log) = fresh_log();
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
    fn a_file_that_is_not_a_log_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate().recipient();
        let mut binary: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        binary[50_000] = b'\n';
        let not_logs: [(&str, Vec<u8>); 4] = [
            ("binary", binary),
            (
                "text-without-newline",
                b"patient notes, no newline".to_vec(),
            ),
            ("text", b"line one\nline two\n".to_vec()),
            ("json-lines", b"{\"seq\":0,\"time\":\"x\"}\n".to_vec()),
        ];
        for (name, content) in not_logs {
            let path = dir.path().join(name);
            std::fs::write(&path, &content).unwrap();
            let result =
                AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null);
            assert!(
                matches!(result, Err(AuditError::NotALog { .. })),
                "{name}: {:?}",
                result.err()
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                content,
                "{name} was modified"
            );
        }
    }

    #[test]
    fn a_log_torn_in_its_first_record_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"{\"seq\":0,\"time\":\"2026-12-04T05:").unwrap();
        let me = Identity::generate().recipient();
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.seal(Value::Null).unwrap();
        let records = lines(&path);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].seq, 0);
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
            Some(&AnchorTarget::File(anchor.clone())),
            Value::Null,
        )
        .unwrap();
        for i in 0..1001 {
            log.record(read_event(i)).unwrap();
        }
        log.seal(Value::Null).unwrap();
        let checkpoints = crate::audit::anchor::read(&AnchorTarget::File(anchor.clone())).unwrap();
        let seqs: Vec<u64> = checkpoints.iter().map(|(_, c)| c.seq).collect();
        assert_eq!(seqs, [0, 1000, 1002]);
        let records = lines(&path);
        for (_, checkpoint) in checkpoints {
            assert_eq!(checkpoint.tag, records[checkpoint.seq as usize].tag);
        }
    }

    /// Records `each` reads from each of `threads` threads at once, then seals; checks that
    /// the log verifies (with its anchor) and holds every read exactly once, in seq order.
    fn record_concurrently(policy: SyncPolicy, threads: u64, each: u64) -> VerifyReport {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let anchor = dir.path().join("anchor");
        let auditor = Identity::generate();
        let log = AuditLog::open_segment(
            &path,
            &auditor.recipient(),
            policy,
            Some(&AnchorTarget::File(anchor.clone())),
            Value::Null,
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..each {
                        log.record(read_event(t * each + i)).unwrap();
                    }
                });
            }
        });
        log.seal(Value::Null).unwrap();
        let report =
            crate::audit::verify(&path, &auditor, Some(&AnchorTarget::File(anchor))).unwrap();
        assert_eq!(report.records, threads * each + 2);
        let records = lines(&path);
        assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        let reads: Vec<u64> = records
            .iter()
            .filter(|r| r.event == EventKind::Read)
            .map(|r| r.offset.unwrap() / 4096)
            .collect();
        let mut sorted = reads.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..threads * each).collect::<Vec<_>>(), "each once");
        for t in 0..threads {
            let own = reads.iter().filter(|&&i| i / each == t);
            assert!(own.is_sorted(), "a thread's records keep its order");
        }
        report
    }

    #[test]
    fn concurrent_records_are_each_written_once_in_seq_order() {
        let report = record_concurrently(SyncPolicy::default(), 8, 400);
        // Start, seal, and one per 1000 records counted (checked at the end of a batch, so
        // each covers at most 1000 + 7 records here).
        assert!(report.checkpoints >= Some(5), "{report}");
        record_concurrently(SyncPolicy::Always, 4, 50);
    }

    /// Bursts of concurrent records, each ending with every caller waiting: a caller
    /// left waiting for a batch nobody leads would hang here (the watchdog fails it).
    #[test]
    fn every_burst_of_concurrent_records_completes() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate().recipient();
        let log = Arc::new(
            AuditLog::open_segment(
                &dir.path().join("audit.log"),
                &me,
                SyncPolicy::default(),
                None,
                Value::Null,
            )
            .unwrap(),
        );
        let (done, finished) = std::sync::mpsc::channel();
        let bursts = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for burst in 0..300 {
                    std::thread::scope(|s| {
                        for t in 0..6 {
                            let log = &log;
                            s.spawn(move || {
                                for i in 0..3 {
                                    log.record(read_event(burst * 100 + t * 10 + i)).unwrap();
                                }
                            });
                        }
                    });
                }
                done.send(()).unwrap();
            })
        };
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("every burst completes");
        bursts.join().unwrap();
        assert_eq!(lines(log.path()).len(), 1 + 300 * 6 * 3);
    }

    // A test stands in for a leader whose batch is in flight by setting `writing`, so that
    // the records queued meanwhile form the next batch, then ends it with `end_batch`.

    fn wait_until_pending(log: &AuditLog, records: u64) {
        while log.shared.state.lock().pending.records < records {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn end_batch(log: &AuditLog) {
        log.shared.state.lock().writing = false;
        for written in &log.shared.written {
            written.notify_all();
        }
    }

    /// A caller that queued its record behind a batch in flight and fell asleep is woken
    /// to lead the next batch when that one ends.
    #[test]
    fn a_caller_asleep_behind_a_batch_is_woken_to_lead_the_next() {
        let (_dir, path, _, log) = fresh_log();
        // Holding the output keeps the first caller's batch in flight.
        let output = log.shared.output.lock();
        std::thread::scope(|s| {
            let log = &log;
            let leader = s.spawn(move || log.record(read_event(0)));
            while !log.shared.state.lock().writing {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (done, next) = std::sync::mpsc::channel();
            s.spawn(move || done.send(log.record(read_event(1))));
            wait_until_pending(log, 1);
            // Long past `WATCH`: the second caller sleeps.
            std::thread::sleep(Duration::from_millis(50));
            drop(output);
            leader.join().unwrap().unwrap();
            let next = next.recv_timeout(Duration::from_secs(10));
            end_batch(log);
            next.expect("the second caller was woken to lead its batch")
                .unwrap();
        });
        assert_eq!(lines(&path).len(), 3);
    }

    #[test]
    fn a_sync_failure_wakes_every_waiting_caller() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::generate().recipient();
        let log = AuditLog::open_segment(
            &dir.path().join("audit.log"),
            &me,
            SyncPolicy::default(),
            None,
            Value::Null,
        )
        .unwrap();
        log.shared.state.lock().writing = true;
        std::thread::scope(|s| {
            let log = &log;
            let (done, results) = std::sync::mpsc::channel();
            for i in 0..3 {
                let done = done.clone();
                s.spawn(move || done.send(log.record(read_event(i))));
            }
            wait_until_pending(log, 3);
            let error = AuditError::Io {
                path: log.path().to_owned(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            };
            log.shared.fail(&mut log.shared.state.lock(), &error);
            for _ in 0..3 {
                let result = results.recv_timeout(Duration::from_secs(10));
                if result.is_err() {
                    end_batch(log);
                }
                let result = result.expect("a waiting caller was woken");
                assert!(matches!(result, Err(AuditError::Failed { .. })));
            }
        });
    }

    #[test]
    fn queued_records_and_the_seal_are_written_together_in_seq_order() {
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
        log.shared.state.lock().writing = true;
        std::thread::scope(|s| {
            let log = &log;
            let reads: Vec<_> = (0..3)
                .map(|i| s.spawn(move || log.record(read_event(i))))
                .collect();
            wait_until_pending(log, 3);
            let seal = s.spawn(|| log.seal(Value::Null));
            wait_until_pending(log, 4);
            assert_eq!(lines(&path).len(), 1, "all four wait behind the stand-in");
            end_batch(log);
            for read in reads {
                read.join().unwrap().unwrap();
            }
            seal.join().unwrap().unwrap();
        });
        assert!(matches!(
            log.record(read_event(9)),
            Err(AuditError::Sealed { .. })
        ));
        let records = lines(&path);
        let events: Vec<EventKind> = records.iter().map(|r| r.event).collect();
        use EventKind::{Mount, Read, Unmount};
        assert_eq!(events, [Mount, Read, Read, Read, Unmount]);
        assert_eq!(
            crate::audit::verify(&path, &auditor, None).unwrap().records,
            5
        );
    }

    #[test]
    fn a_failed_batch_fails_each_of_its_callers_and_every_later_call() {
        let (_dir, path, _, log) = fresh_log();
        log.record(read_event(0)).unwrap();
        log.replace_file(OpenOptions::new().write(true).open("/dev/full").unwrap());
        log.shared.state.lock().writing = true;
        let results: Vec<_> = std::thread::scope(|s| {
            let log = &log;
            let callers: Vec<_> = (1..=4)
                .map(|i| s.spawn(move || log.record(read_event(i))))
                .collect();
            wait_until_pending(log, 4);
            end_batch(log);
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        // The caller that led the batch sees the write error; the others, the failed log.
        let leaders = results.iter().filter(|r| {
            matches!(r, Err(AuditError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC))
        });
        let followers = results
            .iter()
            .filter(|r| matches!(r, Err(AuditError::Failed { .. })));
        assert_eq!((leaders.count(), followers.count()), (1, 3), "{results:?}");
        assert!(matches!(
            log.record(read_event(5)),
            Err(AuditError::Failed { .. })
        ));
        assert!(matches!(
            log.seal(Value::Null),
            Err(AuditError::Failed { .. })
        ));
        assert_eq!(log.current_key(), None, "the key is dropped on failure");
        assert_eq!(
            lines(&path).len(),
            2,
            "nothing of the batch reached the log"
        );
    }
}
