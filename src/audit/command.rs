//! [`CommandLog`]: the audit segment of one command that decrypts outside a mount (`cat`,
//! `inspect`, `ls`, `verify`, `info`, `share`, `rotate`, `migrate`).
//!
//! A command opens a segment of its own in an ordinary log (its `mount` record names the
//! command and what it works on), records each file through [`AuditLog::record`] before
//! any of its plaintext leaves the process or its key is used, and seals the segment when
//! it ends, failed or not. The log is the same format as a mount's, so `smpfs audit
//! verify` reads it. Commands default to a file of their own beside the identity
//! ([`COMMAND_LOG_NAME`]), because a live mount holds its log locked for its whole life;
//! a command finding its log held by another command waits for it.

use std::path::Path;

use serde_json::json;

use super::writer::Busy;
use super::{Actor, AuditError, AuditLog, Event, EventKind, SyncPolicy};
use crate::keys::Recipient;

/// The name of commands' default log, in the identity file's directory (a mount's is
/// `audit.log` there).
pub const COMMAND_LOG_NAME: &str = "audit-commands.log";

/// Where a routine that decrypts files reports each one before it decrypts it: a
/// command passes its [`CommandLog::record`]. An `Err` stops the routine for that file
/// (fail closed).
pub type Recorder<'a> = dyn Fn(Event) -> Result<(), AuditError> + Sync + 'a;

/// The open audit segment of one command; this process is the actor of every record.
/// Seal it with [`CommandLog::seal`] when the command ends; dropped unsealed, the segment
/// reads as a crashed writer.
pub struct CommandLog {
    log: AuditLog,
    actor: Actor,
    command: String,
}

impl CommandLog {
    /// Opens (creating if missing) the log at `path` and writes the segment's `mount`
    /// record, with detail `{"mount": {"command": command, "source": source,
    /// "workstation": workstation}}`. A log without an auditor gets `workstation` as its
    /// auditor, as a mount's does. While another process holds the log, calls `waiting`
    /// once and waits for it.
    pub fn open(
        path: &Path,
        workstation: &Recipient,
        command: &str,
        source: &str,
        waiting: &dyn Fn(),
    ) -> Result<CommandLog, AuditError> {
        let detail = json!({
            "command": command,
            "source": source,
            "workstation": workstation.to_string(),
        });
        let log = AuditLog::open_segment_when(
            path,
            workstation,
            SyncPolicy::default(),
            None,
            detail,
            Busy::Wait(waiting),
        )?;
        Ok(CommandLog {
            log,
            actor: Actor::current(),
            command: command.to_owned(),
        })
    }

    /// States why this command accesses the data: every record carries `purpose`.
    pub fn with_purpose(mut self, purpose: Option<String>) -> Self {
        self.actor.purpose = purpose;
        self
    }

    /// Records `event` with this process as its actor; returns once its line is written.
    pub fn record(&self, event: Event) -> Result<(), AuditError> {
        self.log.record(event.actor(&self.actor))
    }

    /// Records that the whole plaintext of file `path` (id `file_id`, `size` bytes) is
    /// about to be output: an `open` record, then one `read` record of bytes `0..size`.
    pub fn whole_file(&self, path: &str, file_id: [u8; 16], size: u64) -> Result<(), AuditError> {
        self.record(Event::new(EventKind::Open).path(path).file_id(file_id))?;
        self.record(
            Event::new(EventKind::Read)
                .path(path)
                .file_id(file_id)
                .range(0, size),
        )
    }

    /// Records that a v2 bucket's manifest was decrypted: a `refresh` record with detail
    /// `{"generation": generation}`, the generation the command works on.
    pub fn manifest(&self, generation: u64) -> Result<(), AuditError> {
        self.record(Event::new(EventKind::Refresh).detail(json!({ "generation": generation })))
    }

    /// Seals the segment: an `unmount` record with detail `{"command": …, "result":
    /// "ok"}`, or `{"command": …, "clean": false, "error": why}` for a command that
    /// failed with `why`.
    pub fn seal(self, outcome: Result<(), &str>) -> Result<(), AuditError> {
        let detail = match outcome {
            Ok(()) => json!({ "command": self.command, "result": "ok" }),
            Err(why) => json!({ "command": self.command, "clean": false, "error": why }),
        };
        self.log.seal(detail)
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Identity;
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::audit::record::read_records as records;

    #[test]
    fn a_command_segment_names_the_command_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(COMMAND_LOG_NAME);
        let identity = Identity::generate();
        let log = CommandLog::open(&path, &identity.recipient(), "cat", "/srv/b", &|| {}).unwrap();
        log.manifest(7).unwrap();
        log.whole_file("CT/1.dcm", [3; 16], 1234).unwrap();
        log.seal(Ok(())).unwrap();
        let log = CommandLog::open(&path, &identity.recipient(), "ls", "/srv/b", &|| {}).unwrap();
        log.seal(Err("no such file")).unwrap();

        let records = records(&path);
        let events: Vec<EventKind> = records.iter().map(|r| r.event).collect();
        use EventKind::{Mount, Open, Read, Refresh, Unmount};
        assert_eq!(
            events,
            [Mount, Refresh, Open, Read, Unmount, Mount, Unmount]
        );
        let mount = records[0].detail.as_ref().unwrap();
        assert_eq!(mount["mount"]["command"], "cat");
        assert_eq!(mount["mount"]["source"], "/srv/b");
        assert_eq!(
            mount["mount"]["workstation"],
            identity.recipient().to_string()
        );
        assert_eq!(records[1].detail.as_ref().unwrap()["generation"], 7);
        let read = &records[3];
        assert_eq!(read.path.as_deref(), Some("CT/1.dcm"));
        assert_eq!(read.file_id.as_deref(), Some(hex::encode([3; 16]).as_str()));
        assert_eq!((read.offset, read.length), (Some(0), Some(1234)));
        assert_eq!(read.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(read.pid, Some(std::process::id()));
        assert!(read.user.is_some() && read.host.is_some());
        assert_eq!(
            records[4].detail.as_ref().unwrap(),
            &json!({"command": "cat", "result": "ok"})
        );
        assert_eq!(
            records[6].detail.as_ref().unwrap(),
            &json!({"command": "ls", "clean": false, "error": "no such file"})
        );
        let report = crate::audit::verify(&path, &identity, None).unwrap();
        assert_eq!(report.records, 7);
    }

    #[test]
    fn a_second_command_waits_for_the_first_and_says_so_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(COMMAND_LOG_NAME);
        let me = Identity::generate().recipient();
        let first = CommandLog::open(&path, &me, "cat", "a", &|| {}).unwrap();
        let (said, waits) = mpsc::channel();
        let (opened, second) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let log =
                    CommandLog::open(&path, &me, "ls", "b", &|| said.send(()).unwrap()).unwrap();
                opened.send(()).unwrap();
                log.seal(Ok(())).unwrap();
            });
            waits
                .recv_timeout(Duration::from_secs(10))
                .expect("the second command says it waits");
            assert!(
                second.recv_timeout(Duration::from_millis(300)).is_err(),
                "the second command opened the log while the first held it"
            );
            first.seal(Ok(())).unwrap();
            // Sealing ends the first command: its log is dropped, and the lock with it.
            second
                .recv_timeout(Duration::from_secs(10))
                .expect("the second command goes on once the first is done");
        });
        assert!(waits.try_recv().is_err(), "said once");
        let commands: Vec<String> = records(&path)
            .iter()
            .filter(|r| r.event == EventKind::Mount)
            .map(|r| r.detail.as_ref().unwrap()["mount"]["command"].to_string())
            .collect();
        assert_eq!(commands, ["\"cat\"", "\"ls\""]);
    }

    #[test]
    fn a_log_that_cannot_be_created_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let me = Identity::generate().recipient();
        // A path below a regular file fails even for root.
        let result = CommandLog::open(&file.join("audit.log"), &me, "cat", "a", &|| {});
        assert!(matches!(result, Err(AuditError::Io { .. })));
    }
}
