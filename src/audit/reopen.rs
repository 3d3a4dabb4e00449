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
/// Whether `head` begins as every record line does: `{"seq":DIGITS,"time":"` (a new log's
/// first record has seq 0; a rotated-in file's continues its predecessor's).
fn starts_like_a_record(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"{\"seq\":") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=20).contains(&digits) && rest[digits..].starts_with(b",\"time\":\"")
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
/// of one unfinished line, the start of a record (a writer killed during its first one).
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
            let mut head = [0u8; 64];
            let n = file.read_at(&mut head, 0).map_err(io_error(path))?;
            len < MAX_LINE && starts_like_a_record(&head[..n])
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

/// The file the chain at `path` continues from when `path` holds no record yet: among its
/// siblings named `NAME.…`, the one sealed by a rotation (its last record an `unmount`
/// whose `rotated_to` is its own name) with the highest `seq`. A crash between a
/// rotation's rename and the new file's first record leaves such a sibling beside an
/// empty (or torn, then emptied) `path`. Returns the sibling's name, last record and
/// auditor; siblings that are not such logs are passed over.
pub(super) fn rotated_predecessor(
    path: &Path,
) -> Result<Option<(String, Record, Recipient)>, AuditError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut best: Option<(String, Record, File)> = None;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let sibling = entry.file_name().to_string_lossy().into_owned();
        if !sibling.starts_with(&prefix) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let sibling_path = entry.path();
        let Ok(file) = File::open(&sibling_path) else {
            continue;
        };
        let Ok(Some(last)) = last_record(&file, &sibling_path) else {
            continue;
        };
        let sealed_by_rotation = last.event == EventKind::Unmount
            && last
                .detail
                .as_ref()
                .and_then(|d| d.get("rotated_to"))
                .and_then(Value::as_str)
                == Some(sibling.as_str());
        if sealed_by_rotation && best.as_ref().is_none_or(|(_, b, _)| last.seq > b.seq) {
            best = Some((sibling, last, file));
        }
    }
    let Some((sibling, last, file)) = best else {
        return Ok(None);
    };
    let auditor = log_auditor(&file, &path.with_file_name(&sibling))?;
    Ok(Some((sibling, last, auditor)))
}

#[cfg(test)]
mod tests {
    use super::starts_like_a_record;

    #[test]
    fn a_record_head_is_recognised_at_any_seq() {
        assert!(starts_like_a_record(b"{\"seq\":0,\"time\":\"2026"));
        assert!(starts_like_a_record(
            b"{\"seq\":18446744073709551615,\"time\":\""
        ));
        assert!(!starts_like_a_record(b"{\"seq\":,\"time\":\""));
        assert!(!starts_like_a_record(b"{\"seq\":12,\"tim"));
        assert!(!starts_like_a_record(b"#!/bin/sh\n"));
    }
}
