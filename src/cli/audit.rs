//! `smpfs audit {init, verify, show, export}`: set up a log for an auditor, verify it
//! offline, and read it as a table (filtered, followed, or summed up per user, path and
//! day), JSON lines, CSV or RFC 5424 syslog messages.
//!
//! `show` and `export` only read; they do not verify (say so, and point to `verify`).
//! Text from the log is printed with control characters escaped, so a crafted path or
//! process name cannot drive the auditor's terminal.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use smpfs::audit::report::{self, Summary};
use smpfs::audit::{verify_files, AuditError, AuditLog, CommandLog, COMMAND_LOG_NAME};
use smpfs::keys::Recipient;

use super::output::{out, say};

/// `--audit PATH` of the commands that decrypt outside a mount (`cat`, `inspect`, `ls`,
/// `verify`, `info`, `share`, `rotate`, `migrate`).
#[derive(clap::Args)]
pub struct AuditArgs {
    /// The audit log this command records what it decrypts in (default:
    /// `audit-commands.log` beside the identity file; created if missing; waited for while
    /// another command writes it). Decryption is always audited: there is no `off`.
    #[arg(long = "audit", value_name = "PATH", value_parser = audit_path)]
    audit: Option<PathBuf>,
    /// Why the data is accessed; every record of this command carries it.
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
}

/// An `--audit` path; `off` is refused.
fn audit_path(text: &str) -> Result<PathBuf, String> {
    match text {
        "" => Err("give the audit log's path".to_owned()),
        "off" => Err(
            "decryption outside a mount is always audited: give a log file \
                      (`./off` for a file named off)"
                .to_owned(),
        ),
        path => Ok(PathBuf::from(path)),
    }
}

impl AuditArgs {
    /// Runs `work` with this command's audit segment open ([`CommandLog`]), then seals
    /// the segment with the outcome, failed or not. The log is opened before `work` runs,
    /// so a log that cannot be opened or written fails the command before anything is
    /// decrypted; a failure to seal fails the command too. `identity` is the identity
    /// file's path (the default log is beside it) and `workstation` its recipient.
    pub fn run<T>(
        &self,
        identity: &Path,
        workstation: &Recipient,
        command: &str,
        source: &str,
        work: impl FnOnce(&CommandLog) -> Result<T>,
    ) -> Result<T> {
        let path = self
            .audit
            .clone()
            .unwrap_or_else(|| identity.with_file_name(COMMAND_LOG_NAME));
        let waiting = || {
            say!(
                "smpfs: waiting for the audit log {}: another process is writing it",
                path.display()
            )
        };
        let log = CommandLog::open(&path, workstation, command, source, &waiting)
            .with_context(|| {
                format!(
                    "opening audit log {} (nothing was decrypted; give another log with \
                     --audit PATH)",
                    path.display()
                )
            })?
            .with_purpose(self.purpose.clone());
        let result = work(&log);
        let failed = result.as_ref().err().map(super::report);
        let sealed = log
            .seal(failed.as_deref().map_or(Ok(()), Err))
            .with_context(|| format!("sealing the audit segment in {}", path.display()));
        let value = result?;
        sealed?;
        Ok(value)
    }
}

/// Columns of `show`'s table: (heading, record field, right-aligned).
const COLUMNS: [(&str, &str, bool); 10] = [
    ("TIME", "time", false),
    ("SEQ", "seq", true),
    ("EVENT", "event", false),
    ("UID", "uid", true),
    ("PID", "pid", true),
    ("PROCESS", "process", false),
    ("PATH", "path", false),
    ("OFFSET", "offset", true),
    ("LENGTH", "length", true),
    ("RESULT", "result", false),
];

/// Columns of `export --format csv`: every record field, in line order.
const CSV_FIELDS: [&str; 19] = [
    "seq", "time", "log_id", "segment", "event", "uid", "gid", "pid", "process", "user", "host",
    "path", "file_id", "offset", "length", "result", "detail", "prev", "tag",
];

/// Event names a filter may ask for (the `event` field's values).
const EVENTS: [&str; 10] = [
    "mount",
    "open",
    "read",
    "release",
    "denied",
    "integrity_failure",
    "gpu_load",
    "purge",
    "refresh",
    "unmount",
];

/// How `export` writes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON record per line, exactly as in the log.
    Jsonl,
    /// CSV with a header line, one column per record field.
    Csv,
    /// RFC 5424 syslog messages (facility authpriv), one per line, the record as message.
    Syslog,
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Create a new audit log whose segment keys are sealed to an auditor's recipient.
    Init {
        /// The auditor's recipient (`smpfs1…`, from `smpfs keygen` on the auditor's machine).
        #[arg(long)]
        auditor: String,
        /// Where to create the log (must not exist).
        #[arg(long)]
        log: PathBuf,
    },
    /// Verify a log offline with the auditor's identity; exit status 1 if it does not.
    Verify {
        /// The audit log.
        log: PathBuf,
        /// The auditor's identity file.
        #[arg(long, short)]
        identity: PathBuf,
        /// The identity's passphrase, as the first line of this file (instead of a prompt).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The log's anchor: a checkpoint file or s3://BUCKET/PREFIX (catches deletion of
        /// the newest records).
        #[arg(long)]
        anchor: Option<String>,
        /// S3 options for an s3:// anchor: endpoint=URL, region=, profile=, path_style, timeout=.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
    },
    /// Print records as a table (or raw JSON lines); does not verify.
    Show {
        /// The audit log.
        log: PathBuf,
        /// Only records whose path contains this text.
        #[arg(long)]
        path: Option<String>,
        /// Only records of this user id.
        #[arg(long)]
        uid: Option<u32>,
        /// Only records at or after this time (RFC 3339, e.g. 2025-01-31T08:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only records before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only records of this event (repeat for several): open, read, denied, …
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(EVENTS))]
        event: Vec<String>,
        /// Only records of this login user (the `user` field).
        #[arg(long)]
        user: Option<String>,
        /// Print the matching lines as they are in the log (JSON lines).
        #[arg(long)]
        json: bool,
        /// Keep printing records as they are written (until interrupted).
        #[arg(long, conflicts_with = "summary")]
        follow: bool,
        /// Who read what and how much: opens, reads, bytes and refusals per day, user and
        /// path, instead of the records.
        #[arg(long, conflicts_with = "json")]
        summary: bool,
    },
    /// Write every record to standard output as JSON lines, CSV or RFC 5424 syslog
    /// messages; does not verify.
    Export {
        /// The audit log.
        log: PathBuf,
        /// The output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Same as `--format csv`.
        #[arg(long, conflicts_with = "format", hide = true)]
        csv: bool,
    },
}

/// Runs an audit command. `verify` prints the report and fails unless the log verifies.
pub fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Init { auditor, log } => init(&auditor, &log),
        AuditCommand::Verify {
            log,
            identity,
            passphrase_file,
            anchor,
            options,
        } => verify_log(
            &log,
            (&identity, passphrase_file.as_deref()),
            anchor.as_deref(),
            &options,
        ),
        AuditCommand::Show {
            log,
            path,
            uid,
            since,
            until,
            event,
            user,
            json,
            follow,
            summary,
        } => {
            let filter = Filter {
                path,
                uid,
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
                events: event,
                user,
            };
            if summary {
                return show_summary(&log, &filter);
            }
            let shown = show(&log, &filter, json)?;
            if follow {
                follow_log(&log, shown, &filter, json)?;
            }
            Ok(())
        }
        AuditCommand::Export { log, format, csv } => {
            export(&log, if csv { ExportFormat::Csv } else { format })
        }
    }
}

fn init(auditor: &str, log: &Path) -> Result<()> {
    let auditor: Recipient = auditor.parse()?;
    AuditLog::init(log, &auditor)?;
    say!(
        "created audit log {} for auditor {auditor}; only that auditor's identity can verify it",
        log.display()
    );
    Ok(())
}

fn verify_log(
    log: &Path,
    (identity, passphrase_file): (&Path, Option<&Path>),
    anchor: Option<&str>,
    options: &[String],
) -> Result<()> {
    let backend = super::backend_options(options, "verify")?;
    let anchor = anchor
        .map(|text| {
            super::anchor_target(
                &text.parse()?,
                &backend.s3,
                smpfs::options::DEFAULT_ANCHOR_RETENTION,
            )
        })
        .transpose()?;
    let identity = super::load_identity(identity, passphrase_file)?;
    let files = log_files(log)?;
    let newest = files.last().cloned().unwrap_or_else(|| log.to_owned());
    let live = smpfs::audit::is_being_written(&newest)?;
    let report = match verify_files(log, &files, &identity, anchor.as_ref()) {
        // A mount is writing the last segment: what is written so far verifies.
        Err(AuditError::Unsealed {
            segment,
            last_seq,
            last_line,
            more: 0,
            ..
        }) if live => {
            out!(
                "verified up to seq {last_seq} (line {last_line}); segment {segment} is still \
                 being written by a live mount (it is sealed at unmount)"
            )?;
            return Ok(());
        }
        other => other,
    };
    let report = report
        .map_err(|e| anyhow!("{e}{}", where_in(&files, &e)))
        .with_context(|| format!("audit log {} does NOT verify", log.display()))?;
    if files.len() > 1 {
        out!("{} files, in chain order:", files.len())?;
        for file in &files {
            out!("  {}", file.display())?;
        }
    }
    out!("{report}")?;
    Ok(())
}

/// The files of a log: `log` itself, or, for a directory of a rotated log, every file in
/// it whose first line is an audit record, in chain order (by that record's seq).
fn log_files(log: &Path) -> Result<Vec<PathBuf>> {
    if !log.is_dir() {
        return Ok(vec![log.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(log).with_context(|| format!("reading {}", log.display()))? {
        let path = entry?.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let mut first = String::new();
        if !path.is_file() || BufReader::new(file).read_line(&mut first).is_err() {
            continue;
        }
        if let Ok(record) = serde_json::from_str::<Value>(&first) {
            if let (Some(seq), Some("mount")) = (record["seq"].as_u64(), record["event"].as_str()) {
                files.push((seq, path));
            }
        }
    }
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{} holds no audit log file", log.display());
    }
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// For a log of several files: which file and line `error`'s line number is, and, when
/// records are missing right at the start of a file, that a rotated file before it was
/// removed or cut.
fn where_in(files: &[PathBuf], error: &AuditError) -> String {
    let (line, missing) = match error {
        AuditError::Deleted { line, .. } | AuditError::SegmentMissing { line, .. } => (*line, true),
        AuditError::Modified { line, .. } | AuditError::Reordered { line, .. } => (*line, false),
        _ => return String::new(),
    };
    if files.len() < 2 {
        return String::new();
    }
    let mut first_line = 1;
    for file in files {
        let lines = std::fs::read(file).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if line < first_line + lines {
            let within = line - first_line + 1;
            let cut = if within == 1 && missing {
                "; the records missing come just before this file: a rotated file was removed \
                 or cut"
            } else {
                ""
            };
            return format!(" (line {within} of {}{cut})", file.display());
        }
        first_line += lines;
    }
    String::new()
}

fn parse_time(text: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339_weak(text).map_err(|e| {
        anyhow!("invalid time {text:?} (expected RFC 3339, e.g. 2025-01-31T08:00:00Z): {e}")
    })
}

/// Which records `show` prints.
struct Filter {
    path: Option<String>,
    uid: Option<u32>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    /// Event names; empty for all.
    events: Vec<String>,
    user: Option<String>,
}

impl Filter {
    fn matches(&self, record: &Value) -> bool {
        if !self.events.is_empty()
            && !record["event"]
                .as_str()
                .is_some_and(|event| self.events.iter().any(|e| e == event))
        {
            return false;
        }
        if let Some(user) = &self.user {
            if record["user"].as_str() != Some(user.as_str()) {
                return false;
            }
        }
        if let Some(part) = &self.path {
            if !record["path"]
                .as_str()
                .is_some_and(|p| p.contains(part.as_str()))
            {
                return false;
            }
        }
        if let Some(uid) = self.uid {
            if record["uid"].as_u64() != Some(u64::from(uid)) {
                return false;
            }
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(time) = record["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        else {
            return false;
        };
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }
}

/// Calls `each` with every complete line of the log that is a JSON object, and its parse;
/// returns the offset just past the last complete line. Lines that do not parse and an
/// incomplete last line are skipped with a note.
fn for_each_record(log: &Path, mut each: impl FnMut(&[u8], &Value) -> Result<()>) -> Result<u64> {
    let file = File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut end = 0u64;
    for number in 1.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", log.display()))?;
        if read == 0 {
            break;
        }
        if line.pop() != Some(b'\n') {
            say!("smpfs: line {number} is incomplete (torn tail); skipped");
            break;
        }
        end += read as u64;
        match serde_json::from_slice::<Value>(&line) {
            Ok(record) if record.is_object() => each(&line, &record)?,
            _ => say!("smpfs: line {number} is not a record; skipped"),
        }
    }
    Ok(end)
}

/// A field as table or CSV text: strings as they are, numbers and JSON as JSON, absent
/// as empty.
fn cell(record: &Value, field: &str) -> String {
    match &record[field] {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Escapes control characters so log text cannot drive a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Where `show` stopped, for `--follow`: the offset past the last complete line, and the
/// table's column widths.
struct Shown {
    end: u64,
    widths: [usize; 10],
}

/// A record as table cells (`-` for absent fields), control characters escaped.
fn row(record: &Value) -> [String; 10] {
    COLUMNS.map(|(_, field, _)| {
        let text = printable(&cell(record, field));
        if text.is_empty() {
            "-".to_owned()
        } else {
            text
        }
    })
}

/// Writes one table line: cells padded to `widths`, numbers right-aligned.
fn print_row(
    out: &mut dyn Write,
    widths: &[usize; 10],
    cells: [String; 10],
) -> std::io::Result<()> {
    let mut text = String::new();
    for (i, (cell, (_, _, right))) in cells.iter().zip(COLUMNS).enumerate() {
        let width = widths[i];
        let padded = if right {
            format!("{cell:>width$}")
        } else {
            format!("{cell:<width$}")
        };
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(&padded);
    }
    writeln!(out, "{}", text.trim_end())
}

fn show(log: &Path, filter: &Filter, json: bool) -> Result<Shown> {
    say!("note: `show` does not verify the log; use `smpfs audit verify` for that");
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut widths = COLUMNS.map(|(heading, _, _)| heading.chars().count());
    if json {
        let end = for_each_record(log, |line, record| {
            if filter.matches(record) {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })?;
        out.flush()?;
        return Ok(Shown { end, widths });
    }
    // Two passes: the widths first, so a large log needs no memory for rows.
    let mut count = 0u64;
    for_each_record(log, |_, record| {
        if filter.matches(record) {
            count += 1;
            for (width, text) in widths.iter_mut().zip(row(record)) {
                *width = (*width).max(text.chars().count());
            }
        }
        Ok(())
    })?;
    print_row(
        &mut out,
        &widths,
        COLUMNS.map(|(heading, _, _)| heading.to_owned()),
    )?;
    let end = for_each_record(log, |_, record| {
        if filter.matches(record) {
            print_row(&mut out, &widths, row(record))?;
        }
        Ok(())
    })?;
    out.flush()?;
    say!("{count} records");
    Ok(Shown { end, widths })
}

/// `show --follow`: prints the records written after `shown.end` as they come, polling the
/// log every 250 ms, until interrupted. A log that shrinks (replaced) ends it with an error.
fn follow_log(log: &Path, shown: Shown, filter: &Filter, json: bool) -> Result<()> {
    let mut file = File::open(log).with_context(|| format!("opening {}", log.display()))?;
    file.seek(SeekFrom::Start(shown.end))?;
    let mut reader = BufReader::new(file);
    let mut offset = shown.end;
    let mut pending = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        let read = reader.read_until(b'\n', &mut pending)?;
        if read == 0 || pending.last() != Some(&b'\n') {
            if std::fs::metadata(log)?.len() < offset + pending.len() as u64 {
                anyhow::bail!("{} shrank: it was replaced or truncated", log.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            continue;
        }
        offset += pending.len() as u64;
        pending.pop();
        if let Ok(record) = serde_json::from_slice::<Value>(&pending) {
            if record.is_object() && filter.matches(&record) {
                if json {
                    out.write_all(&pending)?;
                    out.write_all(b"\n")?;
                } else {
                    print_row(&mut out, &shown.widths, row(&record))?;
                }
                out.flush()?;
            }
        }
        pending.clear();
    }
}

/// `show --summary`: per day, user and path, the opens, reads, bytes read and refusals.
fn show_summary(log: &Path, filter: &Filter) -> Result<()> {
    say!("note: `show` does not verify the log; use `smpfs audit verify` for that");
    let mut summary = Summary::default();
    for_each_record(log, |_, record| {
        if filter.matches(record) {
            summary.add(record);
        }
        Ok(())
    })?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let rows: Vec<_> = summary.rows().collect();
    let user_width = rows
        .iter()
        .map(|r| printable(r.1).chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "{:<10}  {:<user_width$}  {:>6}  {:>7}  {:>14}  {:>7}  PATH",
        "DAY", "USER", "OPENS", "READS", "BYTES", "REFUSED"
    )?;
    for (day, user, path, counts) in &rows {
        writeln!(
            out,
            "{day:<10}  {:<user_width$}  {:>6}  {:>7}  {:>14}  {:>7}  {}",
            printable(user),
            counts.opens,
            counts.reads,
            counts.bytes,
            counts.refused,
            printable(path)
        )?;
    }
    out.flush()?;
    say!("{} rows", rows.len());
    Ok(())
}

/// `export`: every record, in `format`, to standard output.
fn export(log: &Path, format: ExportFormat) -> Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    match format {
        ExportFormat::Jsonl => {
            for_each_record(log, |line, _| {
                out.write_all(line)?;
                out.write_all(b"\n")?;
                Ok(())
            })?;
        }
        ExportFormat::Syslog => {
            for_each_record(log, |line, record| {
                let line = String::from_utf8_lossy(line);
                writeln!(out, "{}", report::syslog_line(record, &line))?;
                Ok(())
            })?;
        }
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record(CSV_FIELDS)?;
            for_each_record(log, |_, record| {
                writer.write_record(CSV_FIELDS.map(|field| cell(record, field)))?;
                Ok(())
            })?;
            writer.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}
