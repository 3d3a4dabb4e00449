//! The offline verifier: recomputes every tag from the raw line bytes with keys unsealed
//! by the auditor's identity, follows the chain across segments and checks the anchor.
//!
//! It stops at the first record that breaks the chain and names it, with its best reading
//! of why (looking at most two lines ahead). A segment without a seal does not break the
//! chain (a crash leaves one), so verification goes on and reports the first unsealed
//! segment at the end, unless something worse was found.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use super::anchor::{self, AnchorTarget, Checkpoint};
use super::record::{
    io_error, key_path, parse_line, unwrap_key, Chain, Position, Record, ZERO_TAG,
};
use super::{AuditError, EventKind};
use crate::keys::{Identity, Recipient};

/// Farthest the verifier derives keys ahead to tell a deletion from a modification.
const MAX_SKIP: u64 = 1 << 24;

/// What a successful verification covered. `Display` prints it for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments (mounts, plus `audit init`'s segment 0), all sealed.
    pub segments: usize,
    /// Records verified (seq 0 to `records - 1`).
    pub records: u64,
    /// The log's id (hex).
    pub log_id: String,
    /// The auditor every segment is sealed to (this identity's recipient).
    pub auditor: String,
    /// Time of the first record.
    pub first_time: String,
    /// Time of the last record.
    pub last_time: String,
    /// Anchor checkpoints matched, or `None` if no anchor was given.
    pub checkpoints: Option<usize>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit log {}: verified", self.log_id)?;
        writeln!(f, "  auditor:  {}", self.auditor)?;
        writeln!(f, "  segments: {} (all sealed)", self.segments)?;
        writeln!(
            f,
            "  records:  {} (seq 0 to {})",
            self.records,
            self.records.saturating_sub(1)
        )?;
        writeln!(f, "  time:     {} to {}", self.first_time, self.last_time)?;
        match self.checkpoints {
            Some(n) => write!(f, "  anchor:   {n} checkpoints match"),
            None => write!(
                f,
                "  anchor:   not checked (deleting the newest records is only detectable \
                 with --anchor)"
            ),
        }
    }
}

/// Verifies the log at `log` with the auditor's identity and, if given, its anchor file.
/// `Ok` only if every record authenticates, the chain is unbroken from seq 0, every
/// segment is sealed and the log reaches every anchor checkpoint with the same tags.
pub fn verify(
    log: &Path,
    auditor: &Identity,
    anchor: Option<&AnchorTarget>,
) -> Result<VerifyReport, AuditError> {
    verify_files(log, &[log.to_owned()], auditor, anchor)
}

/// Verifies a log rotated into `files` (in chain order: each continues the previous one's
/// last record) as one log named `name`; line numbers count across the files.
pub fn verify_files(
    name: &Path,
    files: &[std::path::PathBuf],
    auditor: &Identity,
    anchor: Option<&AnchorTarget>,
) -> Result<VerifyReport, AuditError> {
    let log = name;
    let checkpoints = anchor.map(anchor::read).transpose()?;
    let mut reader: Box<dyn Read> = Box::new(std::io::empty());
    for file in files {
        reader = Box::new(reader.chain(File::open(file).map_err(io_error(file))?));
    }
    let mut lines = Lines {
        reader: BufReader::new(reader),
        path: log,
        ahead: VecDeque::new(),
        read: 0,
    };
    let mut verifier = Verifier::new(auditor, checkpoints);
    while let Some(line) = lines.next()? {
        if !line.complete {
            return verifier.finish(log, Some(line.number));
        }
        verifier.step(&line, &mut lines)?;
    }
    verifier.finish(log, None)
}

/// One line of the log, without its `\n`.
struct Line {
    number: usize,
    bytes: Vec<u8>,
    complete: bool,
}

/// The log's lines, with lookahead.
struct Lines<'a> {
    reader: BufReader<Box<dyn Read>>,
    path: &'a Path,
    ahead: VecDeque<Line>,
    read: usize,
}

impl Lines<'_> {
    fn read(&mut self) -> Result<Option<Line>, AuditError> {
        let mut bytes = Vec::new();
        if self
            .reader
            .read_until(b'\n', &mut bytes)
            .map_err(io_error(self.path))?
            == 0
        {
            return Ok(None);
        }
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        self.read += 1;
        Ok(Some(Line {
            number: self.read,
            bytes,
            complete,
        }))
    }

    fn next(&mut self) -> Result<Option<Line>, AuditError> {
        match self.ahead.pop_front() {
            Some(line) => Ok(Some(line)),
            None => self.read(),
        }
    }

    /// Where the `k`-th line after the current one claims to be (`None`: no such line or
    /// no position in it).
    fn peek(&mut self, k: usize) -> Result<Option<Position>, AuditError> {
        while self.ahead.len() <= k {
            match self.read()? {
                Some(line) => self.ahead.push_back(line),
                None => return Ok(None),
            }
        }
        Ok(Position::of(&self.ahead[k].bytes))
    }

    fn peek_seq(&mut self, k: usize) -> Result<Option<u64>, AuditError> {
        Ok(self.peek(k)?.map(|p| p.seq))
    }
}

/// The lines of one segment seen so far.
#[derive(Clone, Copy)]
struct Span {
    segment: u32,
    first_seq: u64,
    first_line: usize,
    last_seq: u64,
    last_line: usize,
}

struct Verifier<'a> {
    identity: &'a Identity,
    ours: String,
    /// Anchor checkpoints by seq, and how many were matched.
    checkpoints: Vec<(usize, Checkpoint)>,
    matched: usize,
    anchored: bool,
    log_id: Option<String>,
    /// The key of the next record of the current segment.
    chain: Option<Chain>,
    expected: u64,
    prev: String,
    span: Option<Span>,
    sealed: bool,
    unsealed: Vec<Span>,
    segments: usize,
    first_time: String,
    last_time: String,
}

impl<'a> Verifier<'a> {
    fn new(identity: &'a Identity, checkpoints: Option<Vec<(usize, Checkpoint)>>) -> Self {
        let anchored = checkpoints.is_some();
        let mut checkpoints = checkpoints.unwrap_or_default();
        checkpoints.sort_by_key(|(_, c)| c.seq);
        Verifier {
            identity,
            ours: identity.recipient().to_string(),
            checkpoints,
            matched: 0,
            anchored,
            log_id: None,
            chain: None,
            expected: 0,
            prev: ZERO_TAG.to_owned(),
            span: None,
            sealed: false,
            unsealed: Vec::new(),
            segments: 0,
            first_time: String::new(),
            last_time: String::new(),
        }
    }

    fn step(&mut self, line: &Line, lines: &mut Lines) -> Result<(), AuditError> {
        let Some((record, covered)) = parse_line(&line.bytes) else {
            return Err(AuditError::Modified {
                line: line.number,
                seq: self.expected,
            });
        };
        if record.event == EventKind::Mount {
            self.mount(&record, &covered, line.number, lines)
        } else {
            self.record(&record, &covered, line.number, lines)
        }
    }

    /// A record inside a segment: must authenticate under the current key and continue
    /// the chain.
    fn record(
        &mut self,
        record: &Record,
        covered: &[u8],
        number: usize,
        lines: &mut Lines,
    ) -> Result<(), AuditError> {
        let (Some(chain), Some(span)) = (&self.chain, self.span) else {
            return Err(
                if record.seq > 0 && lines.peek_seq(0)? == Some(self.expected) {
                    AuditError::Reordered {
                        line: number,
                        seq: record.seq,
                        expected: self.expected,
                    }
                } else if record.seq > 0 {
                    AuditError::Deleted {
                        line: number,
                        first: 0,
                        last: record.seq - 1,
                    }
                } else {
                    AuditError::Modified {
                        line: number,
                        seq: 0,
                    }
                },
            );
        };
        if !chain.verifies(covered, &record.tag) {
            return Err(self
                .diagnose(record, covered, number, lines)
                .unwrap_or_else(|e| e));
        }
        let inserted = |why: String| AuditError::Inserted {
            line: number,
            seq: record.seq,
            why,
        };
        if self.sealed {
            return Err(inserted(format!(
                "it follows the unmount record that sealed segment {}",
                span.segment
            )));
        }
        if record.seq != self.expected
            || record.prev != self.prev
            || record.segment != span.segment
            || self.log_id.as_ref() != Some(&record.log_id)
        {
            return Err(inserted(
                "it authenticates but does not continue the chain (seq, prev, segment or \
                 log_id)"
                    .to_owned(),
            ));
        }
        self.accept(record, number)?;
        if record.event == EventKind::Unmount {
            self.sealed = true;
        }
        Ok(())
    }

    /// Why a record does not authenticate under the current key.
    fn diagnose(
        &self,
        record: &Record,
        covered: &[u8],
        number: usize,
        lines: &mut Lines,
    ) -> Result<AuditError, AuditError> {
        let (seq, expected) = (record.seq, self.expected);
        let modified = AuditError::Modified { line: number, seq };
        let deleted = AuditError::Deleted {
            line: number,
            first: expected,
            last: seq.saturating_sub(1),
        };
        let reordered = AuditError::Reordered {
            line: number,
            seq,
            expected,
        };
        let inserted = |whence: &str| AuditError::Inserted {
            line: number,
            seq,
            why: format!("it repeats seq {seq} from {whence} in the log"),
        };
        if self.sealed {
            return Ok(if seq > expected && lines.peek_seq(0)? == Some(expected) {
                reordered
            } else if seq > expected {
                deleted
            } else {
                AuditError::Inserted {
                    line: number,
                    seq,
                    why: "it follows the unmount record that sealed its segment".to_owned(),
                }
            });
        }
        if self.log_id.as_ref() != Some(&record.log_id)
            && lines.peek(0)?.is_some_and(|p| p.log_id == record.log_id)
        {
            return Ok(AuditError::Spliced {
                line: number,
                seq,
                why: format!("it and the next line carry log id {}", record.log_id),
            });
        }
        Ok(match seq.cmp(&expected) {
            std::cmp::Ordering::Equal => modified,
            std::cmp::Ordering::Greater => {
                let skip = seq - expected;
                if skip > MAX_SKIP || !self.authentic_ahead(skip, covered, &record.tag) {
                    return Ok(modified);
                }
                let next = lines.peek_seq(0)?;
                if next == Some(expected) {
                    if lines.peek_seq(1)? == Some(expected + 1) {
                        inserted("later")
                    } else {
                        reordered
                    }
                } else if next.is_some_and(|n| n < seq) {
                    reordered
                } else {
                    deleted
                }
            }
            std::cmp::Ordering::Less => match lines.peek_seq(0)? {
                Some(n) if n == expected => inserted("earlier"),
                None => modified,
                Some(n) if n == expected + 1 => modified,
                Some(_) => reordered,
            },
        })
    }

    /// Whether the record authenticates `skip` keys ahead of the current one.
    fn authentic_ahead(&self, skip: u64, covered: &[u8], tag: &str) -> bool {
        let Some(chain) = &self.chain else {
            return false;
        };
        let mut ahead = chain.clone();
        for _ in 0..skip {
            ahead.advance();
        }
        ahead.verifies(covered, tag)
    }

    /// A `mount` record: unseals the segment's `K_0`, authenticates the record with it and
    /// checks that the segment continues the log.
    fn mount(
        &mut self,
        record: &Record,
        covered: &[u8],
        number: usize,
        lines: &mut Lines,
    ) -> Result<(), AuditError> {
        let modified = || AuditError::Modified {
            line: number,
            seq: record.seq,
        };
        let field = |name: &str| {
            record
                .detail
                .as_ref()
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
        };
        let (Some(auditor), Some(sealed_k0)) = (field("auditor"), field("wrapped_key")) else {
            return Err(modified());
        };
        if auditor != self.ours {
            return Err(if auditor.parse::<Recipient>().is_ok() {
                AuditError::NotForAuditor {
                    segment: record.segment,
                    line: number,
                    auditor: auditor.to_owned(),
                    ours: self.ours.clone(),
                }
            } else {
                modified()
            });
        }
        let sealed_k0 = hex::decode(sealed_k0).map_err(|_| modified())?;
        // It names us as its auditor, so a key that does not open was altered.
        let (k0, key_for) = unwrap_key(&sealed_k0, self.identity).ok_or_else(modified)?;
        let chain = Chain::new(&k0);
        if !chain.verifies(covered, &record.tag) {
            return Err(modified());
        }
        let spliced = |why: String| AuditError::Spliced {
            line: number,
            seq: record.seq,
            why,
        };
        if key_for != key_path(&record.log_id, record.segment) {
            return Err(spliced(format!("its key was sealed for {key_for}")));
        }
        if let Some(log_id) = &self.log_id {
            if *log_id != record.log_id {
                return Err(spliced(format!(
                    "segment {} of log {} inside log {log_id}",
                    record.segment, record.log_id
                )));
            }
        }
        let missing = |why: String| AuditError::SegmentMissing {
            line: number,
            seq: record.seq,
            why,
        };
        match self.span {
            None => {
                if record.segment != 0 || record.seq != 0 || record.prev != ZERO_TAG {
                    return Err(missing(format!(
                        "the log starts with segment {} at seq {}; what came before is gone",
                        record.segment, record.seq
                    )));
                }
                self.check_anchor_log(&record.log_id)?;
            }
            Some(span) => {
                if record.segment <= span.segment || record.seq < self.expected {
                    return Err(match lines.peek_seq(0)? {
                        Some(n) if n != self.expected => AuditError::Reordered {
                            line: number,
                            seq: record.seq,
                            expected: self.expected,
                        },
                        _ => AuditError::Inserted {
                            line: number,
                            seq: record.seq,
                            why: format!(
                                "a copy of the mount record of segment {}",
                                record.segment
                            ),
                        },
                    });
                }
                if record.segment > span.segment + 1 {
                    return Err(missing(format!(
                        "segment {} follows segment {}",
                        record.segment, span.segment
                    )));
                }
                if record.seq > self.expected {
                    return Err(if lines.peek_seq(0)? == Some(self.expected) {
                        AuditError::Reordered {
                            line: number,
                            seq: record.seq,
                            expected: self.expected,
                        }
                    } else {
                        AuditError::Deleted {
                            line: number,
                            first: self.expected,
                            last: record.seq - 1,
                        }
                    });
                }
                if record.prev != self.prev {
                    return Err(missing(format!(
                        "its prev does not link to the last record of segment {}",
                        span.segment
                    )));
                }
                if !self.sealed {
                    self.unsealed.push(span);
                }
            }
        }
        self.chain = Some(chain);
        self.log_id = Some(record.log_id.clone());
        self.sealed = false;
        self.segments += 1;
        self.span = Some(Span {
            segment: record.segment,
            first_seq: record.seq,
            first_line: number,
            last_seq: record.seq,
            last_line: number,
        });
        if self.first_time.is_empty() {
            self.first_time = record.time.clone();
        }
        self.accept(record, number)
    }

    /// Every anchor checkpoint must belong to this log.
    fn check_anchor_log(&self, log_id: &str) -> Result<(), AuditError> {
        match self.checkpoints.iter().find(|(_, c)| c.log_id != log_id) {
            Some((anchor_line, checkpoint)) => Err(AuditError::BehindAnchor {
                anchor_line: *anchor_line,
                seq: checkpoint.seq,
                why: format!(
                    "the anchor checkpoints log {}, but this log is {log_id}: the log was \
                     replaced, or the anchor belongs to another log",
                    checkpoint.log_id
                ),
            }),
            None => Ok(()),
        }
    }

    /// Takes an authenticated record that continues the chain; checks anchor checkpoints
    /// for its seq.
    fn accept(&mut self, record: &Record, number: usize) -> Result<(), AuditError> {
        if let Some(chain) = &mut self.chain {
            chain.advance();
        }
        if let Some(span) = &mut self.span {
            span.last_seq = record.seq;
            span.last_line = number;
        }
        self.expected = record.seq + 1;
        self.prev = record.tag.clone();
        self.last_time = record.time.clone();
        while let Some((anchor_line, checkpoint)) = self.checkpoints.get(self.matched) {
            if checkpoint.seq > record.seq {
                break;
            }
            if checkpoint.seq != record.seq
                || checkpoint.tag != record.tag
                || checkpoint.segment != record.segment
            {
                return Err(AuditError::BehindAnchor {
                    anchor_line: *anchor_line,
                    seq: checkpoint.seq,
                    why: format!(
                        "the anchor checkpointed tag {} of segment {} for seq {}, but the log \
                         holds tag {} of segment {} (line {number}): the log was rewritten \
                         after the checkpoint",
                        checkpoint.tag,
                        checkpoint.segment,
                        checkpoint.seq,
                        record.tag,
                        record.segment
                    ),
                });
            }
            self.matched += 1;
        }
        Ok(())
    }

    /// At the end of the log (or at a torn last line): anchor, torn tail, seals.
    fn finish(mut self, log: &Path, torn: Option<usize>) -> Result<VerifyReport, AuditError> {
        let Some(span) = self.span else {
            return Err(match torn {
                Some(line) => AuditError::TornTail { line, records: 0 },
                None => AuditError::Empty {
                    path: log.to_owned(),
                },
            });
        };
        if let Some((anchor_line, checkpoint)) = self.checkpoints.get(self.matched) {
            return Err(AuditError::BehindAnchor {
                anchor_line: *anchor_line,
                seq: checkpoint.seq,
                why: format!(
                    "the anchor checkpointed seq {} (segment {}), but the log ends at seq {}: \
                     its newest records were deleted",
                    checkpoint.seq, checkpoint.segment, span.last_seq
                ),
            });
        }
        if let Some(line) = torn {
            return Err(AuditError::TornTail {
                line,
                records: self.expected,
            });
        }
        if !self.sealed {
            self.unsealed.push(span);
        }
        if let Some(first) = self.unsealed.first() {
            return Err(AuditError::Unsealed {
                segment: first.segment,
                first_seq: first.first_seq,
                first_line: first.first_line,
                last_seq: first.last_seq,
                last_line: first.last_line,
                more: self.unsealed.len() - 1,
            });
        }
        Ok(VerifyReport {
            segments: self.segments,
            records: self.expected,
            log_id: self.log_id.unwrap_or_default(),
            auditor: self.ours,
            first_time: self.first_time,
            last_time: self.last_time,
            checkpoints: self.anchored.then_some(self.matched),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::audit::{Actor, AuditLog, Event, SyncPolicy};

    const SEGMENTS: usize = 3;
    const READS: u64 = 4;
    /// Records per mount segment: mount, reads, unmount.
    const PER_SEGMENT: usize = READS as usize + 2;
    /// Every record, init's segment 0 included.
    const RECORDS: usize = 2 + SEGMENTS * PER_SEGMENT;

    struct Fixture {
        _dir: tempfile::TempDir,
        log: PathBuf,
        anchor: PathBuf,
        auditor: Identity,
    }

    impl Fixture {
        /// `audit init`, then `SEGMENTS` sealed mounts of `READS` reads each.
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let fixture = Fixture {
                log: dir.path().join("audit.log"),
                anchor: dir.path().join("anchor"),
                auditor: Identity::generate(),
                _dir: dir,
            };
            AuditLog::init(&fixture.log, &fixture.auditor.recipient()).unwrap();
            for _ in 0..SEGMENTS {
                fixture.mount(true);
            }
            fixture
        }

        fn mount(&self, seal: bool) {
            let log = AuditLog::open_segment(
                &self.log,
                &Identity::generate().recipient(),
                SyncPolicy::default(),
                Some(&AnchorTarget::File(self.anchor.clone())),
                serde_json::json!({"source": "/srv/bucket"}),
            )
            .unwrap();
            let actor = Actor::from_request(1000, 100, std::process::id());
            for i in 0..READS {
                let event = Event::new(EventKind::Read)
                    .actor(&actor)
                    .path("study1/CT/1.dcm")
                    .file_id([0xa5; 16])
                    .range(i * 65536, 65536);
                log.record(event).unwrap();
            }
            if seal {
                log.seal(serde_json::json!({"reason": "umount"})).unwrap();
            }
        }

        fn lines(&self) -> Vec<Vec<u8>> {
            std::fs::read(&self.log)
                .unwrap()
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect()
        }

        fn write(&self, lines: &[Vec<u8>]) {
            std::fs::write(&self.log, lines.concat()).unwrap();
        }

        fn verify(&self) -> Result<VerifyReport, AuditError> {
            verify(&self.log, &self.auditor, None)
        }

        fn verify_anchored(&self) -> Result<VerifyReport, AuditError> {
            verify(
                &self.log,
                &self.auditor,
                Some(&AnchorTarget::File(self.anchor.clone())),
            )
        }
    }

    #[test]
    fn untouched_multi_segment_log_verifies() {
        let fixture = Fixture::new();
        assert_eq!(fixture.lines().len(), RECORDS);
        let report = fixture.verify().unwrap();
        assert_eq!(report.segments, SEGMENTS + 1);
        assert_eq!(report.records, RECORDS as u64);
        assert_eq!(report.auditor, fixture.auditor.recipient().to_string());
        assert_eq!(report.checkpoints, None);
        let report = fixture.verify_anchored().unwrap();
        assert_eq!(report.checkpoints, Some(2 * SEGMENTS));
        let text = report.to_string();
        assert!(
            text.contains("verified") && text.contains(&report.log_id),
            "{text}"
        );
    }

    /// Changes the byte `skip` bytes after `"field":` on `line` (0-based) to another byte of
    /// the same class, so the line stays plausible.
    fn change_byte(lines: &mut [Vec<u8>], line: usize, field: &str, skip: usize) {
        let key = format!("\"{field}\":");
        let at = lines[line]
            .windows(key.len())
            .position(|w| w == key.as_bytes())
            .unwrap_or_else(|| panic!("no {field} on line {line}"))
            + key.len()
            + skip;
        let byte = &mut lines[line][at];
        *byte = match *byte {
            b'0'..=b'8' | b'a'..=b'e' | b'A'..=b'Y' => *byte + 1,
            b'9' => b'0',
            b'f' => b'a',
            b'g'..=b'y' => *byte + 1,
            b'z' => b'a',
            b'Z' => b'A',
            _ => b'x',
        };
    }

    #[test]
    fn any_changed_byte_is_reported_as_modified() {
        let fixture = Fixture::new();
        let original = fixture.lines();
        let read = 4; // line 5, seq 4: the third read of segment 1
        let mount = 2 + PER_SEGMENT; // the mount record of segment 2
        let last = RECORDS - 1;
        let cases: &[(usize, &str, usize)] = &[
            (read, "seq", 0),
            (read, "time", 4),
            (read, "time", 28),
            (read, "log_id", 10),
            (read, "segment", 0),
            (read, "event", 2),
            (read, "uid", 1),
            (read, "gid", 0),
            (read, "pid", 0),
            (read, "process", 1),
            (read, "path", 7),
            (read, "file_id", 31),
            (read, "offset", 0),
            (read, "length", 2),
            (read, "result", 1),
            (read, "prev", 1),
            (read, "tag", 64),
            (read, "tag", 0),
            (mount, "auditor", 20),
            (mount, "wrapped_key", 1),
            (mount, "wrapped_key", 200),
            (mount, "source", 3),
            (mount, "prev", 5),
            (0, "log_id", 1),
            (last, "reason", 2),
            (last, "seq", 0),
        ];
        for &(line, field, skip) in cases {
            let mut lines = original.clone();
            change_byte(&mut lines, line, field, skip);
            assert_ne!(lines, original);
            fixture.write(&lines);
            match fixture.verify() {
                Err(AuditError::Modified { line: l, .. }) => {
                    assert_eq!(l, line + 1, "{field}+{skip}")
                }
                other => panic!("{field}+{skip} on line {}: {other:?}", line + 1),
            }
        }
        // A byte of JSON structure, and the newline itself.
        let mut lines = original.clone();
        lines[read][0] = b'[';
        fixture.write(&lines);
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::Modified { line: 5, seq: 4 })
        ));
        let mut lines = original.clone();
        let joined = [lines[read].clone(), lines[read + 1].clone()].concat();
        lines[read] = joined
            .iter()
            .map(|&b| if b == b'\n' { b' ' } else { b })
            .collect();
        lines[read].push(b'\n');
        lines.remove(read + 1);
        fixture.write(&lines);
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::Modified { line: 5, seq: 4 })
        ));
    }

    #[test]
    fn deleted_record_is_reported() {
        let fixture = Fixture::new();
        let mut lines = fixture.lines();
        lines.remove(5);
        fixture.write(&lines);
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::Deleted {
                line: 6,
                first: 5,
                last: 5
            })
        ));
        // Deleting a mount record or an unmount record is a deletion too.
        for index in [2 + PER_SEGMENT, 1 + PER_SEGMENT] {
            let fixture = Fixture::new();
            let mut lines = fixture.lines();
            lines.remove(index);
            fixture.write(&lines);
            match fixture.verify() {
                Err(AuditError::Deleted { line, first, last }) => {
                    assert_eq!((line, first, last), (index + 1, index as u64, index as u64))
                }
                other => panic!("deleting line {}: {other:?}", index + 1),
            }
        }
    }

    #[test]
    fn swapped_records_are_reported_as_reordered() {
        let fixture = Fixture::new();
        let original = fixture.lines();
        for (a, b) in [(4, 5), (3, 6), (10, 11)] {
            let mut lines = original.clone();
            lines.swap(a, b);
            fixture.write(&lines);
            match fixture.verify() {
                Err(AuditError::Reordered {
                    line,
                    seq,
                    expected,
                }) => assert_eq!((line, seq, expected), (a + 1, b as u64, a as u64)),
                other => panic!("swapping lines {} and {}: {other:?}", a + 1, b + 1),
            }
        }
    }

    #[test]
    fn every_pair_of_adjacent_records_swapped_is_reported_as_reordered() {
        let fixture = Fixture::new();
        let original = fixture.lines();
        let mut wrong = Vec::new();
        for a in 0..RECORDS - 1 {
            let mut lines = original.clone();
            lines.swap(a, a + 1);
            fixture.write(&lines);
            match fixture.verify() {
                Err(AuditError::Reordered {
                    line,
                    seq,
                    expected,
                }) if (line, seq, expected) == (a + 1, a as u64 + 1, a as u64) => {}
                other => wrong.push(format!("lines {} and {}: {other:?}", a + 1, a + 2)),
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn inserted_copy_is_reported() {
        let fixture = Fixture::new();
        let original = fixture.lines();
        // A copy of an earlier record, of a later one, and of a whole mount record.
        for (copied, at) in [(3, 6), (6, 4), (2, 10)] {
            let mut lines = original.clone();
            lines.insert(at, original[copied].clone());
            fixture.write(&lines);
            match fixture.verify() {
                Err(AuditError::Inserted { line, seq, .. }) => {
                    assert_eq!((line, seq), (at + 1, copied as u64))
                }
                other => panic!("copy of line {} at line {}: {other:?}", copied + 1, at + 1),
            }
        }
        // Anything after the last seal.
        let mut lines = original.clone();
        lines.push(original[4].clone());
        fixture.write(&lines);
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::Inserted { line, .. }) if line == RECORDS + 1
        ));
    }

    #[test]
    fn truncation_at_a_line_boundary_is_an_unsealed_segment() {
        let fixture = Fixture::new();
        let mut lines = fixture.lines();
        lines.truncate(RECORDS - 2);
        fixture.write(&lines);
        let last_segment_start = RECORDS - PER_SEGMENT;
        match fixture.verify() {
            Err(AuditError::Unsealed {
                segment,
                first_seq,
                first_line,
                last_seq,
                last_line,
                more,
            }) => {
                assert_eq!(segment, SEGMENTS as u32);
                assert_eq!(first_seq, last_segment_start as u64);
                assert_eq!(first_line, last_segment_start + 1);
                assert_eq!((last_seq, last_line), (RECORDS as u64 - 3, RECORDS - 2));
                assert_eq!(more, 0);
            }
            other => panic!("{other:?}"),
        }
        // The anchor shows it was a deletion, not a crash.
        assert!(matches!(
            fixture.verify_anchored(),
            Err(AuditError::BehindAnchor { seq, .. }) if seq == RECORDS as u64 - 1
        ));
    }

    #[test]
    fn truncation_mid_line_is_a_torn_tail() {
        let fixture = Fixture::new();
        let mut lines = fixture.lines();
        let last = lines.last_mut().unwrap();
        last.truncate(last.len() / 2);
        fixture.write(&lines);
        match fixture.verify() {
            Err(AuditError::TornTail { line, records }) => {
                assert_eq!((line, records), (RECORDS, RECORDS as u64 - 1))
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&fixture.log, b"{\"seq\":0,").unwrap();
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::TornTail {
                line: 1,
                records: 0
            })
        ));
        std::fs::write(&fixture.log, b"").unwrap();
        assert!(matches!(fixture.verify(), Err(AuditError::Empty { .. })));
    }

    #[test]
    fn removed_segment_is_reported() {
        let fixture = Fixture::new();
        let mut lines = fixture.lines();
        let second = 2 + PER_SEGMENT;
        lines.drain(second..second + PER_SEGMENT);
        fixture.write(&lines);
        match fixture.verify() {
            Err(AuditError::SegmentMissing { line, seq, why }) => {
                assert_eq!((line, seq), (second + 1, (second + PER_SEGMENT) as u64));
                assert!(why.contains("segment 3 follows segment 1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // The first segment too.
        let mut lines = fixture.lines();
        lines.drain(..2);
        fixture.write(&lines);
        assert!(matches!(
            fixture.verify(),
            Err(AuditError::SegmentMissing {
                line: 1,
                seq: 2,
                ..
            })
        ));
    }

    #[test]
    fn newest_segment_removed_needs_the_anchor() {
        let fixture = Fixture::new();
        let mut lines = fixture.lines();
        lines.truncate(RECORDS - PER_SEGMENT);
        fixture.write(&lines);
        // Without an outside checkpoint the shorter log is indistinguishable from one
        // that was never mounted again.
        assert_eq!(
            fixture.verify().unwrap().segments,
            SEGMENTS,
            "verifies without the anchor"
        );
        match fixture.verify_anchored() {
            Err(AuditError::BehindAnchor { seq, why, .. }) => {
                assert_eq!(seq, (RECORDS - PER_SEGMENT) as u64);
                assert!(why.contains("newest records were deleted"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spliced_log_is_reported() {
        let ours = Fixture::new();
        let theirs = Fixture::new();
        // The other log, sealed to our auditor too.
        std::fs::remove_file(&theirs.log).unwrap();
        AuditLog::init(&theirs.log, &ours.auditor.recipient()).unwrap();
        theirs.mount(true);
        let other = theirs.lines();
        let original = ours.lines();
        let mut lines = original.clone();
        lines.extend(other.iter().cloned());
        ours.write(&lines);
        assert!(matches!(
            ours.verify(),
            Err(AuditError::Spliced { line, seq: 0, .. }) if line == RECORDS + 1
        ));
        // Their segment 1 in place of our segment 1.
        let mut lines = original.clone();
        lines.splice(2..2 + PER_SEGMENT, other[2..].iter().cloned());
        ours.write(&lines);
        assert!(matches!(
            ours.verify(),
            Err(AuditError::Spliced {
                line: 3,
                seq: 2,
                ..
            })
        ));
        // A single record of theirs followed by theirs again.
        let mut lines = original[..4].to_vec();
        lines.extend(other[3..5].iter().cloned());
        ours.write(&lines);
        assert!(matches!(
            ours.verify(),
            Err(AuditError::Spliced {
                line: 5,
                seq: 3,
                ..
            })
        ));
    }

    #[test]
    fn wrong_auditor_is_reported() {
        let fixture = Fixture::new();
        let stranger = Identity::generate();
        match verify(&fixture.log, &stranger, None) {
            Err(AuditError::NotForAuditor {
                segment,
                line,
                auditor,
                ours,
            }) => {
                assert_eq!((segment, line), (0, 1));
                assert_eq!(auditor, fixture.auditor.recipient().to_string());
                assert_eq!(ours, stranger.recipient().to_string());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anchor_disagreement_is_reported() {
        let fixture = Fixture::new();
        let anchor = std::fs::read_to_string(&fixture.anchor).unwrap();
        let checkpoints = anchor::read(&AnchorTarget::File(fixture.anchor.clone())).unwrap();
        let (_, third) = &checkpoints[2];
        let forged = anchor.replacen(&third.tag, &"0".repeat(64), 1);
        std::fs::write(&fixture.anchor, forged).unwrap();
        assert!(matches!(
            fixture.verify_anchored(),
            Err(AuditError::BehindAnchor { anchor_line: 3, seq, .. }) if seq == third.seq
        ));
        let other = Fixture::new();
        std::fs::copy(&other.anchor, &fixture.anchor).unwrap();
        assert!(matches!(
            fixture.verify_anchored(),
            Err(AuditError::BehindAnchor { anchor_line: 1, .. })
        ));
    }

    #[test]
    fn crash_leaves_an_unsealed_segment_but_the_chain_goes_on() {
        let fixture = Fixture::new();
        fixture.mount(false);
        fixture.mount(true);
        match fixture.verify_anchored() {
            Err(AuditError::Unsealed {
                segment,
                last_seq,
                more,
                ..
            }) => {
                assert_eq!(segment, SEGMENTS as u32 + 1);
                assert_eq!(last_seq, (RECORDS + PER_SEGMENT - 2) as u64);
                assert_eq!(more, 0);
            }
            other => panic!("{other:?}"),
        }
        // A torn record after the crash: recovered by the next mount, still unsealed.
        let mut bytes = std::fs::read(&fixture.log).unwrap();
        bytes.extend_from_slice(b"{\"seq\":");
        std::fs::write(&fixture.log, bytes).unwrap();
        assert!(matches!(fixture.verify(), Err(AuditError::TornTail { .. })));
        fixture.mount(true);
        assert!(matches!(
            fixture.verify_anchored(),
            Err(AuditError::Unsealed { more: 0, .. })
        ));
    }
}
