//! `smpfs audit {init, verify, show, export}`: set up a log for an auditor, verify it
//! offline, and read it as a table, JSON lines or CSV.
//!
//! `show` and `export` only read; they do not verify (say so, and point to `verify`).
//! Text from the log is printed with control characters escaped, so a crafted path or
//! process name cannot drive the auditor's terminal.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use smpfs::audit::{verify, AuditError, AuditLog, CommandLog, COMMAND_LOG_NAME};
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
        let log =
            CommandLog::open(&path, workstation, command, source, &waiting).with_context(|| {
                format!(
                    "opening audit log {} (nothing was decrypted; give another log with \
                     --audit PATH)",
                    path.display()
                )
            })?;
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

/// Columns of `export --csv`: every record field, in line order.
const CSV_FIELDS: [&str; 17] = [
    "seq", "time", "log_id", "segment", "event", "uid", "gid", "pid", "process", "path", "file_id",
    "offset", "length", "result", "detail", "prev", "tag",
];

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
        /// Print the matching lines as they are in the log (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Write every record as CSV with a header to standard output; does not verify.
    Export {
        /// The audit log.
        log: PathBuf,
        /// CSV (the only format).
        #[arg(long, required = true)]
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
            json,
        } => {
            let filter = Filter {
                path,
                uid,
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
            };
            show(&log, &filter, json)
        }
        AuditCommand::Export { log, csv: _ } => export_csv(&log),
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
    let live = smpfs::audit::is_being_written(log)?;
    let report = match verify(log, &identity, anchor.as_ref()) {
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
    let report = report.with_context(|| format!("audit log {} does NOT verify", log.display()))?;
    out!("{report}")?;
    Ok(())
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
}

impl Filter {
    fn matches(&self, record: &Value) -> bool {
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

/// Calls `each` with every complete line of the log that is a JSON object, and its parse.
/// Lines that do not parse and an incomplete last line are skipped with a note.
fn for_each_record(log: &Path, mut each: impl FnMut(&[u8], &Value) -> Result<()>) -> Result<()> {
    let file = File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", log.display()))?
            == 0
        {
            break;
        }
        if line.pop() != Some(b'\n') {
            say!("smpfs: line {number} is incomplete (torn tail); skipped");
            break;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(record) if record.is_object() => each(&line, &record)?,
            _ => say!("smpfs: line {number} is not a record; skipped"),
        }
    }
    Ok(())
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

fn show(log: &Path, filter: &Filter, json: bool) -> Result<()> {
    say!("note: `show` does not verify the log; use `smpfs audit verify` for that");
    let mut out = BufWriter::new(std::io::stdout().lock());
    if json {
        for_each_record(log, |line, record| {
            if filter.matches(record) {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })?;
        out.flush()?;
        return Ok(());
    }
    let row = |record: &Value| {
        COLUMNS.map(|(_, field, _)| {
            let text = printable(&cell(record, field));
            if text.is_empty() {
                "-".to_owned()
            } else {
                text
            }
        })
    };
    // Two passes: the widths first, so a large log needs no memory for rows.
    let mut widths = COLUMNS.map(|(heading, _, _)| heading.chars().count());
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
    let mut print = |cells: [String; 10]| -> std::io::Result<()> {
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
    };
    print(COLUMNS.map(|(heading, _, _)| heading.to_owned()))?;
    for_each_record(log, |_, record| {
        if filter.matches(record) {
            print(row(record))?;
        }
        Ok(())
    })?;
    out.flush()?;
    say!("{count} records");
    Ok(())
}

fn export_csv(log: &Path) -> Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
    writer.write_record(CSV_FIELDS)?;
    for_each_record(log, |_, record| {
        writer.write_record(CSV_FIELDS.map(|field| cell(record, field)))?;
        Ok(())
    })?;
    writer.flush()?;
    Ok(())
}
