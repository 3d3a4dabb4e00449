//! `smpfs verify` (authenticate a whole bucket, [`smpfs::verify::Plan`]) and `smpfs info`
//! (one sealed object's header, [`smpfs::verify::info`]): argument parsing and printing.

use anyhow::{bail, Context, Result};
use serde::Serialize;

use smpfs::audit::{Event, EventKind};
use smpfs::keys::Identity;
use smpfs::verify::info::{self, HeaderInfo, Opens};
use smpfs::verify::{Plan, Report};

use super::audit::AuditArgs;
use super::bucket::{self, BucketArgs};
use super::output::{escape_controls, out};
use super::{init_stderr_logging, load_identity};

/// Arguments of `smpfs verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    #[command(flatten)]
    audit: AuditArgs,
    /// Threads checking objects, and batches of chunks of large ones (default: the number
    /// of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    json: bool,
}

/// Arguments of `smpfs info`.
#[derive(clap::Args)]
#[command(after_help = "\
Forms of TARGET:
  smpfs info ./bucket/obj/ab/ab3f… -i ID          a sealed file on local disk
  smpfs info s3://scans/site/CT/1.dcm -i ID      an object on S3 (bucket, then key)
  smpfs info gdrive://FOLDER_ID/CT/1.dcm -i ID   an object on Google Drive
  smpfs info dropbox:///scans/CT/1.dcm -i ID     an object on Dropbox
  smpfs info BUCKET --path CT/1.dcm -i ID        a file of a bucket (a directory, s3://… or
                                                 gdrive://…), by its path in the manifest
                                                 (v2) or its key (v1)

Headers do not name their recipients (docs/FORMAT.md §3): info prints how many recipient
stanzas a header has and whether this identity opens one of them; with --path it also
prints the recipients the bucket seals to (its manifest's, or a v1 bucket's list).")]
pub struct InfoArgs {
    /// The sealed object: a local file, or s3://BUCKET/KEY, az://ACCOUNT/CONTAINER/KEY, a
    /// gdrive:// or dropbox:// object URL; with --path, the bucket it is in.
    target: String,
    /// The file's path in the bucket TARGET (as a mount shows it; the object key in a v1
    /// bucket).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Identity file to open the header with.
    #[arg(long, short)]
    identity: std::path::PathBuf,
    /// The identity's passphrase, as the first line of this file (instead of a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<std::path::PathBuf>,
    /// Backend options, comma-separated, as for `seal` (endpoint=URL, region=, …).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    audit: AuditArgs,
}

/// `smpfs verify`: authenticates every object of a bucket; fails unless all verify. The
/// manifest read, and each object before it is decrypted, are audited.
pub fn verify(args: &VerifyArgs) -> Result<()> {
    init_stderr_logging();
    bucket::audited(
        &args.bucket,
        &args.audit,
        "verify",
        false,
        |opened, identity, log| {
            let plan = Plan::new(&opened.store, &identity)?;
            if let Some(generation) = plan.generation() {
                log.manifest(generation)?;
            }
            let jobs = args.jobs.map_or_else(
                || std::thread::available_parallelism().map_or(2, usize::from),
                usize::from,
            );
            let bar = super::progress_bar(plan.bytes());
            let report = plan.run(&identity, jobs, &|n| bar.inc(n), &|event| log.record(event));
            bar.finish_and_clear();
            drop(identity);
            print_verified(&opened.source.to_string(), args.json, &report?)
        },
    )
}

/// Prints what [`verify`] found; fails unless everything verified.
fn print_verified(bucket: &str, json: bool, report: &Report) -> Result<()> {
    if json {
        #[derive(Serialize)]
        struct Document<'a> {
            bucket: &'a str,
            clean: bool,
            #[serde(flatten)]
            report: &'a Report,
        }
        let document = Document {
            bucket,
            clean: report.is_clean(),
            report,
        };
        out!("{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        print_report(bucket, report)?;
    }
    if !report.is_clean() {
        bail!(
            "{} of {} objects and entries of {bucket} did not verify",
            report.problems.len(),
            report.problems.len() as u64 + report.counts.ok
        );
    }
    Ok(())
}

fn print_report(bucket: &str, report: &Report) -> Result<()> {
    for problem in &report.problems {
        let path = problem
            .path
            .as_deref()
            .map(|p| format!(" ({})", escape_controls(p)))
            .unwrap_or_default();
        out!(
            "{}: {}{path}: {}",
            problem.status.describe(),
            escape_controls(&problem.key),
            escape_controls(&problem.detail)
        )?;
    }
    let layout = match report.generation {
        Some(generation) => format!(
            "v2, manifest generation {generation}, {} entries",
            report.entries
        ),
        None => "v1".to_owned(),
    };
    let c = &report.counts;
    out!(
        "{bucket} ({layout}): {} objects; {} ok, {} tampered, {} truncated, {} unreadable with \
         this identity, {} orphaned, {} missing, {} not checked; {:.1} MB in {:.2}s ({:.1} MB/s)",
        report.objects,
        c.ok,
        c.tampered,
        c.truncated,
        c.unreadable,
        c.orphaned,
        c.missing,
        c.failed,
        report.bytes as f64 / 1e6,
        report.seconds,
        report.mb_per_s
    )?;
    Ok(())
}

/// `smpfs info`: one sealed object's header. A header this identity opens (its file key
/// unwrapped) is recorded as an `open` before anything is printed.
pub fn info(args: &InfoArgs) -> Result<()> {
    init_stderr_logging();
    let identity = load_identity(&args.identity, args.passphrase_file.as_deref())?;
    args.audit.run(
        &args.identity,
        &identity.recipient(),
        "info",
        &args.target,
        |log| {
            let header = read_header(args, &identity)?;
            drop(identity);
            // A header sealed to others unwraps no key: nothing to record.
            let result = match header.opens {
                Opens::Yes => Some("ok"),
                Opens::Tampered => Some("the header failed authentication"),
                Opens::NotForThisIdentity => None,
            };
            if let Some(result) = result {
                let file_id = <[u8; 16] as hex::FromHex>::from_hex(&header.file_id)
                    .context("the header's file id")?;
                let path = args.path.as_deref().unwrap_or(&args.target);
                log.record(
                    Event::new(EventKind::Open)
                        .path(path)
                        .file_id(file_id)
                        .result(result),
                )?;
            }
            if args.json {
                out!("{}", serde_json::to_string_pretty(&header)?)?;
            } else {
                print_header(&header)?;
            }
            Ok(())
        },
    )
}

/// The header `args` names, opened with `identity`.
fn read_header(args: &InfoArgs, identity: &Identity) -> Result<HeaderInfo> {
    Ok(match (&args.path, args.target.split_once("://")) {
        (Some(path), _) => {
            let opened = bucket::open(&args.target, &args.options, "info", false)?;
            info::in_bucket(&opened.store, path, identity)?
        }
        (None, Some(("file", path))) => info::file(std::path::Path::new(path), identity)?,
        (None, Some(_)) => {
            let (parent, key) = args
                .target
                .rsplit_once('/')
                .filter(|(parent, key)| !key.is_empty() && parent.contains("://"))
                .with_context(|| format!("{}: give the object's URL", args.target))?;
            if parent.ends_with("://") {
                bail!(
                    "{}: give an object in the bucket (s3://BUCKET/KEY), or the bucket and --path",
                    args.target
                );
            }
            let opened = bucket::open(parent, &args.options, "info", false)?;
            info::object(opened.backend.as_ref(), key, identity)?
        }
        (None, None) => info::file(std::path::Path::new(&args.target), identity)?,
    })
}

fn print_header(h: &HeaderInfo) -> Result<()> {
    out!("object          {}", escape_controls(&h.object))?;
    if let Some(header_object) = &h.header_object {
        out!("header object   {header_object} (detached, after `smpfs share`)")?;
    }
    out!("format version  {}", h.version)?;
    out!("file id         {}", h.file_id)?;
    out!("chunk size      {} bytes", h.chunk_size)?;
    out!(
        "plaintext size  {} bytes ({} chunks)",
        h.plaintext_len,
        h.chunks
    )?;
    out!("header          {} bytes", h.header_len)?;
    let opens = match h.opens {
        Opens::Yes => "this identity opens one of them",
        Opens::NotForThisIdentity => "none opens with this identity (sealed to others)",
        Opens::Tampered => "one opens with this identity, but the header fails authentication",
    };
    out!(
        "recipients      {} stanzas (a stanza does not name its recipient); {opens}",
        h.stanzas
    )?;
    if let Some(list) = &h.bucket_recipients {
        out!(
            "bucket seals to {} recipients: {}",
            list.len(),
            list.join(", ")
        )?;
    }
    if let Some(bound) = &h.bound_path {
        let check = match (h.location_matches, &h.location) {
            (Some(true), _) => "matches where it is".to_owned(),
            (_, Some(location)) => format!(
                "DIFFERS from where it is, {} (moved or swapped)",
                escape_controls(location)
            ),
            (_, None) => "does not match the file's path (moved or swapped)".to_owned(),
        };
        out!("bound path      {} ({check})", escape_controls(bound))?;
    }
    let size_check = if h.object_len == h.expected_object_len {
        "as the header says".to_owned()
    } else if h.object_len < h.expected_object_len {
        format!("the header says {}: truncated", h.expected_object_len)
    } else {
        format!("the header says {}: extended", h.expected_object_len)
    };
    out!("object size     {} bytes ({size_check})", h.object_len)?;
    if let Some(m) = &h.manifest {
        let yes = |ok: bool| if ok { "matches" } else { "DIFFERS" };
        out!(
            "manifest entry  {} ({} bytes shown{}): header hash {}, file id {}, object length {}",
            escape_controls(&m.path),
            m.size,
            if m.padded { ", padded" } else { "" },
            yes(m.header_hash_matches),
            yes(m.file_id_matches),
            yes(m.object_len_matches)
        )?;
    }
    Ok(())
}
