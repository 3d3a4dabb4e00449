//! Reading an existing log back before a new segment is appended to it: checking that the
//! file is a log at all (nothing else is ever modified), removing a torn last line, and
//! finding the last record (to continue the chain) and the auditor (from the first).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::Value;

use super::record::{io_error, parse_line, Record};
use super::{AuditError, EventKind};
use crate::keys::Recipient;

/// Longest line the writer reads back when it reopens a log.
pub(super) const MAX_LINE: u64 = 16 << 20;
/// How every log's first line begins: the first record's `seq` and the opening of its `time`.
const FIRST_RECORD_HEAD: &[u8] = b"{\"seq\":0,\"time\":\"";
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
pub(super) fn recover_torn_tail(file: &File, path: &Path) -> Result<u64, AuditError> {
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
pub(super) fn last_record(file: &File, path: &Path) -> Result<Option<Record>, AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len == 0 {
        return Ok(None);
    }
    let start = last_newline_before(file, len - 1)
        .map_err(io_error(path))?
        .map_or(0, |newline| newline + 1);
    read_record(file, path, start, len - 1).map(Some)
}

/// Where the first line ends (its `\n`), reading at most [`MAX_LINE`] bytes; `None` if
/// no `\n` comes first.
fn first_line_end(file: &File, path: &Path) -> Result<Option<u64>, AuditError> {
    let mut head = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    while offset < MAX_LINE {
        let n = file.read_at(&mut head, offset).map_err(io_error(path))?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = head[..n].iter().position(|&b| b == b'\n') {
            return Ok(Some(offset + i as u64));
        }
        offset += n as u64;
    }
    Ok(None)
}

/// Refuses, before anything is written, a non-empty file that does not start as an smpfs
/// audit log: a complete first line that is a valid `mount` record at seq 0 (or one
/// continuing a rotated file, whose detail says `rotated_from`), or, in a file
/// of one unfinished line, the start of one (a writer killed during its first record).
pub(super) fn check_is_log(file: &File, path: &Path) -> Result<(), AuditError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len == 0 {
        return Ok(());
    }
    let is_log = match first_line_end(file, path)? {
        Some(end) => read_record(file, path, 0, end).is_ok_and(|first| {
            first.event == EventKind::Mount
                && (first.seq == 0
                    || first
                        .detail
                        .as_ref()
                        .is_some_and(|d| d.get("rotated_from").is_some()))
        }),
        None => {
            let mut head = [0u8; FIRST_RECORD_HEAD.len()];
            len < MAX_LINE && file.read_exact_at(&mut head, 0).is_ok() && head == FIRST_RECORD_HEAD
        }
    };
    if is_log {
        Ok(())
    } else {
        Err(AuditError::NotALog {
            path: path.to_owned(),
        })
    }
}

/// The auditor named by the log's first record (its `mount` detail).
pub(super) fn log_auditor(file: &File, path: &Path) -> Result<Recipient, AuditError> {
    let end = first_line_end(file, path)?.ok_or_else(|| AuditError::Corrupt {
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
