//! Anchor checkpoints: `{log_id, segment, seq, tag, time}` JSON lines appended (and
//! fsynced) to a file that should live outside the writer's reach, so that deleting the
//! newest records of the log is caught.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::io_error;
use super::AuditError;

/// A checkpoint is due after this many records...
pub(crate) const EVERY_RECORDS: u64 = 1000;
/// ...or this much time, whichever comes first (checked when a record is written).
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One checkpoint: the log's state after record `seq`. Fields in line order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    pub log_id: String,
    pub segment: u32,
    pub seq: u64,
    pub tag: String,
    pub time: String,
}

/// The writer's side of an anchor file.
pub(crate) struct Anchor {
    file: File,
    path: PathBuf,
    records: u64,
    last: Instant,
}

impl Anchor {
    /// Opens (creating, mode 0600) the anchor file for appending.
    pub fn open(path: &Path) -> Result<Anchor, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io_error(path))?;
        Ok(Anchor {
            file,
            path: path.to_owned(),
            records: 0,
            last: Instant::now(),
        })
    }

    /// Counts one record; true when a checkpoint is due.
    pub fn count(&mut self) -> bool {
        self.records += 1;
        self.records >= EVERY_RECORDS || self.last.elapsed() >= EVERY
    }

    /// Appends `checkpoint` and fsyncs. The caller must have synced the log first, so an
    /// anchor never gets ahead of the durable log.
    pub fn write(&mut self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(checkpoint).expect("a checkpoint serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(&self.path))?;
        self.records = 0;
        self.last = Instant::now();
        Ok(())
    }
}

/// Reads every complete checkpoint line of an anchor file with its 1-based line number.
/// An incomplete last line (a crash while appending) is ignored; any other line that does
/// not parse is an error.
pub(crate) fn read(path: &Path) -> Result<Vec<(usize, Checkpoint)>, AuditError> {
    let mut reader = BufReader::new(File::open(path).map_err(io_error(path))?);
    let mut checkpoints = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?
            == 0
        {
            break;
        }
        if line.pop() != Some(b'\n') {
            break;
        }
        let checkpoint = serde_json::from_slice(&line).map_err(|_| AuditError::BadAnchor {
            path: path.to_owned(),
            line: number,
        })?;
        checkpoints.push((number, checkpoint));
    }
    Ok(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            log_id: "ab".repeat(16),
            segment: 2,
            seq,
            tag: "cd".repeat(32),
            time: "2025-01-01T00:00:00.000000000Z".to_owned(),
        }
    }

    #[test]
    fn checkpoints_round_trip_and_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor");
        let mut anchor = Anchor::open(&path).unwrap();
        anchor.write(&checkpoint(1)).unwrap();
        anchor.write(&checkpoint(9)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"log_id\":\"abab"), "{text}");
        std::fs::write(&path, format!("{text}{{\"log_id\":\"ab")).unwrap();
        let read_back = read(&path).unwrap();
        assert_eq!(
            read_back,
            vec![(1, checkpoint(1)), (2, checkpoint(9))],
            "torn tail ignored"
        );
        std::fs::write(&path, format!("{text}garbage\n")).unwrap();
        assert!(matches!(
            read(&path),
            Err(AuditError::BadAnchor { line: 3, .. })
        ));
    }

    #[test]
    fn checkpoint_is_due_after_many_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut anchor = Anchor::open(&dir.path().join("anchor")).unwrap();
        let due = (0..EVERY_RECORDS).filter(|_| anchor.count()).count();
        assert_eq!(due, 1);
        anchor.write(&checkpoint(0)).unwrap();
        assert!(!anchor.count());
    }
}
