//! A de-identifying seal run: every planned file is read, de-identified in memory and
//! handed to a [`Sealer`] under its logical path; files that are not DICOM or carry burned-in annotations
//! are skipped. The outcome of every file goes into a JSON report, sealed to the same
//! recipients under [`REPORT_DIR`].
//!
//! Invariants: one file's failure never stops the others; the report names attributes and
//! actions, never a value; logs name files only.

use std::fs::File;

use rayon::prelude::*;
use serde::Serialize;

use super::deid::{Change, DeidError, Deidentifier};
use super::profile::{Profile, TABLE_EDITION};
use crate::seal::{SealError, SealJob};

/// Seals de-identified bytes (already in memory) as a logical path of the bucket: into an
/// object under that path (v1), or a new object and manifest entry (v2).
pub type Sealer<'a> = dyn Fn(&str, &[u8]) -> Result<(), SealError> + Sync + 'a;

/// Folder of the bucket that holds the sealed run reports.
pub const REPORT_DIR: &str = ".smpfs";
/// The report format's name and version, first field of every report.
pub const REPORT_FORMAT: &str = "smpfs-deid-report/1";

/// Errors in sealing a run's report.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot seal the de-identification report: {0}")]
    SealReport(#[source] SealError),
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// De-identified and sealed.
    Deidentified,
    /// Not a DICOM file: skipped, nothing sealed.
    SkippedNotDicom,
    /// Burned In Annotation = YES: skipped, nothing sealed.
    SkippedBurnedIn,
    /// Reading or sealing failed: nothing sealed.
    Failed,
}

/// One file's entry in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The logical path (object key) the file was, or would have been, sealed as.
    pub path: String,
    /// What happened.
    pub status: Status,
    /// Why it was skipped or failed (a parser or I/O message, no attribute values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every attribute changed, removed or added.
    pub changes: Vec<Change>,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files considered.
    pub files: usize,
    /// De-identified and sealed.
    pub deidentified: usize,
    /// Skipped: not DICOM.
    pub skipped_not_dicom: usize,
    /// Skipped: burned-in annotation.
    pub skipped_burned_in: usize,
    /// Failed.
    pub failed: usize,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`REPORT_FORMAT`].
    pub format: &'static str,
    /// The profile's name.
    pub profile: &'static str,
    /// The edition of Table E.1-1 applied.
    pub table: &'static str,
    /// Fingerprint of the de-identification key (equal ids: equal pseudonyms).
    pub key_id: String,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// Counts per status.
    pub summary: Summary,
    /// One entry per file, by path.
    pub files: Vec<FileReport>,
}

/// De-identifies and seals every job (in parallel), calling `on_file` as each finishes.
pub fn run(
    seal: &Sealer,
    jobs: &[SealJob],
    deidentifier: &Deidentifier<'_>,
    key_id: String,
    profile: Profile,
    on_file: &(dyn Fn(&FileReport) + Sync),
) -> Report {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut files: Vec<FileReport> = jobs
        .par_iter()
        .map(|job| {
            let report = one_file(seal, job, deidentifier);
            on_file(&report);
            report
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    for file in &files {
        match file.status {
            Status::Deidentified => summary.deidentified += 1,
            Status::SkippedNotDicom => summary.skipped_not_dicom += 1,
            Status::SkippedBurnedIn => summary.skipped_burned_in += 1,
            Status::Failed => summary.failed += 1,
        }
    }
    Report {
        format: REPORT_FORMAT,
        profile: profile.name(),
        table: TABLE_EDITION,
        key_id,
        started,
        summary,
        files,
    }
}

fn one_file(seal: &Sealer, job: &SealJob, deidentifier: &Deidentifier<'_>) -> FileReport {
    let entry = |status, reason: Option<String>, changes| FileReport {
        path: job.logical_path.clone(),
        status,
        reason,
        changes,
    };
    let input = match File::open(&job.source) {
        Ok(file) => file,
        Err(e) => return entry(Status::Failed, Some(e.to_string()), Vec::new()),
    };
    match deidentifier.deidentify(input, job.size as usize) {
        Ok(done) => match seal(&job.logical_path, &done.data) {
            Ok(_) => entry(Status::Deidentified, None, done.changes),
            Err(e) => entry(Status::Failed, Some(e.to_string()), Vec::new()),
        },
        Err(e @ DeidError::NotDicom(_)) => {
            entry(Status::SkippedNotDicom, Some(e.to_string()), Vec::new())
        }
        Err(e @ DeidError::BurnedIn) => {
            entry(Status::SkippedBurnedIn, Some(e.to_string()), Vec::new())
        }
        Err(e @ DeidError::Encode(_)) => entry(Status::Failed, Some(e.to_string()), Vec::new()),
    }
}

/// Seals `report` as JSON with `seal` (which must not replace an existing object) as
/// `.smpfs/deid-report-YYYYMMDDTHHMMSSZ-XXXXXXXX.json` (random suffix) and returns that path.
pub fn seal_report(seal: &Sealer, report: &Report) -> Result<String, BatchError> {
    let stamp: String = report
        .started
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut suffix = [0u8; 4];
    getrandom::getrandom(&mut suffix).expect("OS random number generator");
    let key = format!(
        "{REPORT_DIR}/deid-report-{stamp}-{}.json",
        hex::encode(suffix)
    );
    let json =
        zeroize::Zeroizing::new(serde_json::to_vec_pretty(report).expect("the report serializes"));
    seal(&key, &json).map_err(BatchError::SealReport)?;
    Ok(key)
}
