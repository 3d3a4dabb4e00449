//! DICOM commands: `seal --deidentify` (after the common seal setup) and `inspect`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use parking_lot::Mutex;
use smpfs::backend::Backend;
use smpfs::bucket::{write, ManifestStore, Recipients};
use smpfs::dicom::batch::{self, FileReport, Status};
use smpfs::dicom::deid::Deidentifier;
use smpfs::dicom::profile::Profile;
use smpfs::dicom::pseudonym::PseudonymKeys;
use smpfs::keys::Identity;
use smpfs::manifest::Op;
use smpfs::seal::{seal_bytes, SealError, SealJob, SealOptions};

use super::output::{out, say};

/// Where a de-identifying run seals: a v1 bucket (objects under their paths) or a v2 one
/// (new objects, then one manifest commit for the files and the report).
pub enum Destination<'a> {
    /// Objects under their paths.
    V1(&'a Arc<dyn Backend>),
    /// A zero-knowledge bucket, with the identity that may update its manifest.
    V2(&'a ManifestStore, Option<&'a Identity>),
}

/// De-identifies and seals `jobs`, then seals the run's report. Prints one line per skipped
/// or failed file and a summary to stderr, and the report's path to stdout. Fails (after
/// sealing the rest and the report) if any file failed; skipped files do not fail.
pub fn seal_deidentified(
    destination: Destination,
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
    // v1 seals each object under its path (the report never replaces one); v2 seals new
    // objects and gathers their entries for one commit at the end.
    let puts = Mutex::new(Vec::new());
    let report_options = SealOptions {
        overwrite: false,
        ..options.clone()
    };
    let seal_v1 = |options: &SealOptions, path: &str, data: &[u8]| -> Result<(), SealError> {
        let Destination::V1(backend) = destination else {
            unreachable!("v1 sealer on a v2 bucket")
        };
        seal_bytes(backend, path, data, options).map(|_| ())
    };
    let seal_v2 = |path: &str, data: &[u8]| -> Result<(), SealError> {
        let Destination::V2(store, _) = destination else {
            unreachable!("v2 sealer on a v1 bucket")
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let source = write::NewSource {
            name: Path::new(path),
            size: data.len() as u64,
            mtime: (now.as_secs() as i64, now.subsec_nanos()),
        };
        let entry = write::seal_new_object(
            store.backend(),
            &source,
            &mut &data[..],
            options,
            false,
            &|_| {},
        )?;
        puts.lock().push(Op::Put(path.to_owned(), entry));
        Ok(())
    };
    let (seal_file, seal_report): (&batch::Sealer, &batch::Sealer) = match destination {
        Destination::V1(_) => (&|path, data| seal_v1(options, path, data), &|path, data| {
            seal_v1(&report_options, path, data)
        }),
        Destination::V2(..) => (&seal_v2, &seal_v2),
    };
    let report = batch::run(
        seal_file,
        jobs,
        &deidentifier,
        keys.key_id(),
        profile,
        &on_file,
    );
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let report_key = batch::seal_report(seal_report, &report)?;
    if let Destination::V2(store, identity) = destination {
        let puts = puts.into_inner();
        let committed = store.commit(
            identity,
            Recipients::ForNew(&options.recipients),
            &mut |_| puts.clone(),
        )?;
        for key in &committed.unreferenced {
            if let Err(e) = store.backend().delete(key) {
                tracing::warn!("object {key} is no longer used but was not deleted: {e}");
            }
        }
    }
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
    super::with_sealed(args, "inspect", |object| {
        smpfs::dicom::inspect::inspect(&object).with_context(|| format!("inspecting {}", args.path))
    })
}
