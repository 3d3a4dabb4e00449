//! DICOM commands: `seal --deidentify` (after the common seal setup) and `inspect`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use smpfs::backend::Backend;
use smpfs::dicom::batch::{self, FileReport, Status};
use smpfs::dicom::deid::Deidentifier;
use smpfs::dicom::profile::Profile;
use smpfs::dicom::pseudonym::PseudonymKeys;
use smpfs::seal::{SealJob, SealOptions};

use super::output::{out, say};

/// De-identifies and seals `jobs`, then seals the run's report. Prints one line per skipped
/// or failed file and a summary to stderr, and the report's object key to stdout. Fails
/// (after sealing the rest and the report) if any file failed; skipped files do not fail.
pub fn seal_deidentified(
    backend: &Arc<dyn Backend>,
    jobs: &[SealJob],
    options: &SealOptions,
    profile: Profile,
    key_path: &Path,
    out: &smpfs::backend::Source,
) -> Result<()> {
    smpfs::heap::protect().context("protecting memory for de-identification")?;
    let (keys, created) = PseudonymKeys::load_or_create(key_path)?;
    if created {
        say!(
            "created de-identification key {} (mode 0600): keep it secret and backed up; \
             the same key gives the same pseudonyms",
            key_path.display()
        );
    }
    let deidentifier = Deidentifier::new(profile, &keys);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(jobs.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let on_file = |file: &FileReport| {
        bar.inc(1);
        let why = file.reason.as_deref().unwrap_or_default();
        match file.status {
            Status::Deidentified => {}
            Status::SkippedNotDicom => {
                tracing::warn!(path = %file.path, "skipped: not a DICOM file");
            }
            Status::SkippedBurnedIn => {
                tracing::warn!(path = %file.path, "skipped: Burned In Annotation is YES");
            }
            Status::Failed => bar.suspend(|| say!("smpfs: not sealed: {}: {why}", file.path)),
        }
    };
    let report = batch::run(
        backend,
        jobs,
        options,
        &deidentifier,
        keys.key_id(),
        profile,
        &on_file,
    );
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let report_key = batch::seal_report(backend, &report, options)?;
    let s = report.summary;
    say!(
        "de-identified ({}) and sealed {} of {} files into {} in {:.2}s ({:.0} files/s); \
         skipped {} not DICOM, {} with burned-in annotation; {} failed",
        profile.name(),
        s.deidentified,
        s.files,
        out,
        secs,
        s.deidentified as f64 / secs.max(1e-9),
        s.skipped_not_dicom,
        s.skipped_burned_in,
        s.failed,
    );
    say!("report sealed as {report_key} (read it with `smpfs cat {out} {report_key} -i ID`)");
    out!("{report_key}")?;
    if s.failed > 0 {
        bail!("{} files were not sealed", s.failed);
    }
    Ok(())
}

/// Prints a sealed DICOM file's header to stdout.
pub fn inspect(args: &super::ObjectArgs) -> Result<()> {
    super::init_stderr_logging();
    smpfs::heap::protect().context("protecting memory for inspection")?;
    let object = super::open_sealed(args)?;
    smpfs::dicom::inspect::inspect(&object).with_context(|| format!("inspecting {}", args.path))?;
    Ok(())
}
