//! Checking sealed data without mounting it: [`Plan`] authenticates every chunk of every
//! object of a bucket (`smpfs verify`), and [`info`] reads one sealed object's header
//! (`smpfs info`).
//!
//! A bucket is checked the way a reader would open it (FORMAT.md §7, and §13.2 for a
//! zero-knowledge bucket): each object's header is opened with the identity and checked
//! against its location and size (and, in a v2 bucket, against its manifest entry: header
//! hash, file id and object length; a detached header is read from its `hdr/` object), then
//! every chunk is authenticated. Plaintext is decrypted only into a few reused buffers of
//! locked memory (see [`crate::cache::LockedRegion`]: mlocked, left out of core dumps),
//! zeroized when the check ends; none of it is kept or returned. Objects, and batches of
//! chunks of each object, are checked in parallel on a pool of `jobs` threads.

pub mod info;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::audit::{AuditError, Event, EventKind, Recorder};
use crate::backend::{Backend, BackendError};
use crate::bucket::{BucketError, ManifestStore};
use crate::cache::{CacheError, ChunkSource, LockedBuf, LockedRegion};
use crate::format::{FormatError, TAG_LEN};
use crate::keys::Identity;
use crate::manifest::Entry;
use crate::vault::{SealedObject, VaultError};

/// Plaintext bytes of the largest chunk (64 KiB) plus its tag: one sealed chunk.
const MAX_SEALED_CHUNK: usize = (1 << 16) + TAG_LEN;
/// Sealed chunks of the largest size read and authenticated per request, per thread.
const BATCH_CHUNKS: usize = 16;
/// Key prefixes of a v2 bucket that hold no file: its manifest and the journals of
/// unfinished `migrate`, `rotate` and `share` runs (FORMAT.md §13).
const V2_OTHER_PREFIXES: [&str; 4] = ["manifest/", "migrate/", "rotate/", "share/"];
/// Journal prefixes: objects an unfinished run wrote may be referenced only by them.
const JOURNAL_PREFIXES: [&str; 3] = ["migrate/", "rotate/", "share/"];

/// Errors that stop a check before it has a result (a bad object is a [`Finding`], not
/// an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{key}: {source}")]
    Format {
        key: String,
        #[source]
        source: FormatError,
    },
    #[error("cannot start {jobs} threads: {source}")]
    Threads {
        jobs: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    #[error("the bucket has no file {0:?}")]
    NoSuchFile(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the check stopped: {0}")]
    Audit(#[from] AuditError),
}

/// What one object turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every chunk (and, in a v2 bucket, the manifest entry) authenticated.
    Ok,
    /// A header or chunk failed authentication, or the object is not where it was sealed
    /// for, does not match its manifest entry, or is longer than its header says.
    Tampered,
    /// The object is shorter than its header (or manifest entry) says.
    Truncated,
    /// Sealed to other recipients: its header opens for none of this identity's stanzas.
    Unreadable,
    /// v2: an object of the bucket that no manifest entry refers to.
    Orphaned,
    /// v2: a manifest entry whose object (or detached header) is not in the bucket.
    Missing,
    /// The store failed to answer (the object could not be checked).
    Failed,
}

impl Status {
    /// How the status reads in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Tampered => "tampered",
            Status::Truncated => "truncated",
            Status::Unreadable => "unreadable with this identity",
            Status::Orphaned => "orphaned",
            Status::Missing => "missing",
            Status::Failed => "not checked",
        }
    }
}

/// One object that did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The object's key in the bucket.
    pub key: String,
    /// Its file's path in the manifest (v2 only).
    pub path: Option<String>,
    /// What is wrong.
    pub status: Status,
    /// Why, in words (never plaintext).
    pub detail: String,
}

/// How many objects had each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Verified objects.
    pub ok: u64,
    /// See [`Status::Tampered`].
    pub tampered: u64,
    /// See [`Status::Truncated`].
    pub truncated: u64,
    /// See [`Status::Unreadable`].
    pub unreadable: u64,
    /// See [`Status::Orphaned`].
    pub orphaned: u64,
    /// See [`Status::Missing`].
    pub missing: u64,
    /// See [`Status::Failed`].
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, status: Status) {
        let count = match status {
            Status::Ok => &mut self.ok,
            Status::Tampered => &mut self.tampered,
            Status::Truncated => &mut self.truncated,
            Status::Unreadable => &mut self.unreadable,
            Status::Orphaned => &mut self.orphaned,
            Status::Missing => &mut self.missing,
            Status::Failed => &mut self.failed,
        };
        *count += 1;
    }
}

/// The bucket layout a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketLayout {
    /// Objects under their paths, no manifest.
    V1,
    /// Zero-knowledge: objects under random ids, with a sealed manifest.
    V2,
}

/// The result of [`Plan::run`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The bucket's layout.
    pub layout: BucketLayout,
    /// The manifest generation checked (v2 only).
    pub generation: Option<u64>,
    /// Objects looked at: files' objects, and orphans.
    pub objects: u64,
    /// Manifest entries checked (v2 only; a missing object counts here, not in `objects`).
    pub entries: u64,
    /// Bytes of objects read and authenticated.
    pub bytes: u64,
    /// Wall-clock seconds the check took.
    pub seconds: f64,
    /// `bytes` per second, in MB (10⁶ bytes) per second.
    pub mb_per_s: f64,
    /// Objects (and entries) by status.
    pub counts: Counts,
    /// Every object or entry that did not verify, by key.
    pub problems: Vec<Finding>,
}

impl Report {
    /// Whether everything verified.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One object to authenticate.
#[derive(Debug, Clone)]
struct Item {
    key: String,
    path: Option<String>,
    /// Bytes of the object as listed.
    size: u64,
    /// Its manifest entry (v2).
    bound: Option<Entry>,
}

/// What a check of a bucket will do: the objects to authenticate, and what the listing
/// alone already showed (orphans, missing objects). Made by [`Plan::new`], carried out by
/// [`Plan::run`], so a caller can size a progress bar in between.
pub struct Plan {
    backend: Arc<dyn Backend>,
    layout: BucketLayout,
    generation: Option<u64>,
    entries: u64,
    items: Vec<Item>,
    found: Vec<Finding>,
}

impl Plan {
    /// Lists the bucket of `store` and loads its manifest if it has one (refusing a
    /// rolled-back or deleted one, as every reader does). In a v2 bucket every manifest
    /// entry is to be checked, and objects under `obj/` and `hdr/` (or outside the v2
    /// layout) that no entry refers to are orphans; in a v1 bucket every object is a file.
    /// A writer committing meanwhile can make its new objects look orphaned, and the
    /// objects it replaces or removes look missing: the manifest and the listing are read
    /// one after the other.
    pub fn new(store: &ManifestStore, identity: &Identity) -> Result<Plan, VerifyError> {
        let backend = Arc::clone(store.backend());
        let manifest = store.load(identity)?;
        let mut listing = backend.list()?;
        listing.sort_by(|a, b| a.key.cmp(&b.key));
        let Some(manifest) = manifest else {
            let items = listing
                .into_iter()
                .map(|object| Item {
                    key: object.key,
                    path: None,
                    size: object.size,
                    bound: None,
                })
                .collect();
            return Ok(Plan {
                backend,
                layout: BucketLayout::V1,
                generation: None,
                entries: 0,
                items,
                found: Vec::new(),
            });
        };
        let sizes: std::collections::HashMap<&str, u64> = listing
            .iter()
            .map(|object| (object.key.as_str(), object.size))
            .collect();
        let mut referenced = HashSet::new();
        let mut items = Vec::new();
        let mut found = Vec::new();
        for (path, entry) in &manifest.entries {
            let key = entry.object_key();
            referenced.insert(key.clone());
            let header_key = entry.detached.map(|_| entry.header_key());
            if let Some(header_key) = &header_key {
                referenced.insert(header_key.clone());
            }
            let absent = [Some(&key), header_key.as_ref()]
                .into_iter()
                .flatten()
                .find(|k| !sizes.contains_key(k.as_str()));
            if let Some(absent) = absent {
                found.push(Finding {
                    key: key.clone(),
                    path: Some(path.clone()),
                    status: Status::Missing,
                    detail: format!(
                        "its manifest entry names {absent}, which is not in the bucket"
                    ),
                });
                continue;
            }
            items.push(Item {
                size: sizes[key.as_str()],
                key,
                path: Some(path.clone()),
                bound: Some(*entry),
            });
        }
        let journals = listing
            .iter()
            .any(|o| JOURNAL_PREFIXES.iter().any(|p| o.key.starts_with(p)));
        for object in &listing {
            let key = object.key.as_str();
            if referenced.contains(key) || V2_OTHER_PREFIXES.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            let mut detail = if key.starts_with("obj/") || key.starts_with("hdr/") {
                "no manifest entry refers to it".to_owned()
            } else {
                "outside the v2 layout, and no manifest entry refers to it".to_owned()
            };
            if journals {
                detail.push_str(" (an unfinished migrate, rotate or share run may still use it)");
            }
            found.push(Finding {
                key: key.to_owned(),
                path: None,
                status: Status::Orphaned,
                detail,
            });
        }
        Ok(Plan {
            backend,
            layout: BucketLayout::V2,
            generation: Some(manifest.generation),
            entries: manifest.entries.len() as u64,
            items,
            found,
        })
    }

    /// The manifest generation to check (v2 only).
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Bytes of the objects to authenticate (what [`Plan::run`] reports progress of).
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|item| item.size).sum()
    }

    /// Authenticates every object on `jobs` threads, calling `progress(bytes)` as object
    /// bytes are checked (their total is [`Plan::bytes`]). Each object whose header opens
    /// is recorded with `audit` before any chunk of it is decrypted (a `read` record of its
    /// path, or key in a v1 bucket, its file id and bytes `0..size`); if a record fails,
    /// that object is not checked and the run fails with [`VerifyError::Audit`].
    pub fn run(
        self,
        identity: &Identity,
        jobs: usize,
        progress: &(dyn Fn(u64) + Sync),
        audit: &Recorder<'_>,
    ) -> Result<Report, VerifyError> {
        let started = Instant::now();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build()
            .map_err(|source| VerifyError::Threads { jobs, source })?;
        // One buffer now, so that a memory-lock limit stops the check before it starts.
        let buffers = Buffers::default();
        buffers.give(buffers.take()?);
        let context = Context {
            backend: &self.backend,
            identity,
            first_read: self.backend.read_profile().first_read,
            buffers: &buffers,
            progress,
            audit,
            audit_failed: parking_lot::Mutex::new(None),
        };
        let checked: Vec<Checked> = pool.install(|| {
            self.items
                .par_iter()
                .map(|item| {
                    let checked = check(&context, item);
                    crate::harden::scrub_stack();
                    checked
                })
                .collect()
        });
        if let Some(error) = context.audit_failed.into_inner() {
            return Err(error.into());
        }
        drop(buffers);
        let mut counts = Counts::default();
        let mut problems = self.found;
        let mut bytes = 0;
        for checked in checked {
            bytes += checked.bytes;
            match checked.finding {
                Some(finding) => problems.push(finding),
                None => counts.add(Status::Ok),
            }
        }
        for problem in &problems {
            counts.add(problem.status);
        }
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        let seconds = started.elapsed().as_secs_f64();
        let orphans = problems
            .iter()
            .filter(|p| p.status == Status::Orphaned)
            .count();
        Ok(Report {
            layout: self.layout,
            generation: self.generation,
            objects: (self.items.len() + orphans) as u64,
            entries: self.entries,
            bytes,
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
            counts,
            problems,
        })
    }
}

/// Locked buffers of [`BATCH_CHUNKS`] sealed chunks of the largest size, shared by the
/// threads of one check: a batch of chunks takes one and gives it back, so there are never
/// more than batches in flight at once. Plaintext stays in them between batches (locked,
/// excluded from core dumps) and is zeroized when they are dropped at the end of the check.
#[derive(Default)]
struct Buffers {
    free: parking_lot::Mutex<Vec<LockedBuf>>,
}

impl Buffers {
    /// A free buffer, or a new one.
    fn take(&self) -> Result<LockedBuf, CacheError> {
        if let Some(buf) = self.free.lock().pop() {
            return Ok(buf);
        }
        let len = MAX_SEALED_CHUNK * BATCH_CHUNKS;
        let region = Arc::new(LockedRegion::new(len)?);
        Ok(LockedRegion::carve(&region, len, 1, 0, 0)
            .pop()
            .expect("one buffer"))
    }

    /// Returns a buffer taken with [`Buffers::take`].
    fn give(&self, buf: LockedBuf) {
        self.free.lock().push(buf);
    }
}

/// What every object's check uses.
struct Context<'a> {
    backend: &'a Arc<dyn Backend>,
    identity: &'a Identity,
    /// Bytes the first read of an object fetches.
    first_read: u64,
    buffers: &'a Buffers,
    progress: &'a (dyn Fn(u64) + Sync),
    audit: &'a Recorder<'a>,
    /// The first record that failed: the run fails with it.
    audit_failed: parking_lot::Mutex<Option<AuditError>>,
}

/// What checking one object found, and how many of its bytes were read.
struct Checked {
    finding: Option<Finding>,
    bytes: u64,
}

/// Opens `item` as a reader would and authenticates each of its chunks. Reports the
/// object's bytes as progress, all of them by the time it returns.
fn check(context: &Context, item: &Item) -> Checked {
    let done = AtomicU64::new(0);
    let report = |bytes: u64| {
        done.fetch_add(bytes, Ordering::Relaxed);
        (context.progress)(bytes);
    };
    let result = authenticate(context, item, &report);
    let done = done.into_inner();
    (context.progress)(item.size.saturating_sub(done));
    Checked {
        finding: result.err().map(|(status, detail)| Finding {
            key: item.key.clone(),
            path: item.path.clone(),
            status,
            detail,
        }),
        bytes: done,
    }
}

/// The checks of [`check`]; on failure, the object's status and why. Chunks are
/// authenticated in batches of a buffer's worth, in parallel; a failing chunk of the first
/// batch that fails is the one named.
fn authenticate(
    context: &Context,
    item: &Item,
    report: &(dyn Fn(u64) + Sync),
) -> Result<(), (Status, String)> {
    if let Some(entry) = &item.bound {
        if item.size != entry.object_len {
            let status = if item.size < entry.object_len {
                Status::Truncated
            } else {
                Status::Tampered
            };
            return Err((
                status,
                format!(
                    "object is {} bytes but its manifest entry says {}",
                    item.size, entry.object_len
                ),
            ));
        }
    }
    let (object, first) = SealedObject::open(
        Arc::clone(context.backend),
        &item.key,
        item.size,
        context.identity,
        0,
        context.first_read,
        item.bound.as_ref(),
    )
    .map_err(|e| classify(&e))?;
    let record = Event::new(EventKind::Read)
        .path(item.path.as_deref().unwrap_or(&item.key))
        .file_id(object.file_id())
        .range(0, object.size());
    if let Err(error) = (context.audit)(record) {
        let detail = format!("not checked: {error}");
        context.audit_failed.lock().get_or_insert(error);
        return Err((Status::Failed, detail));
    }
    let layout = *object.layout();
    report(layout.chunk_offset(0));
    let (prefetched, within) = object.prefetched(&first);
    let per_batch = ((MAX_SEALED_CHUNK * BATCH_CHUNKS) / object.sealed_len(0)) as u64;
    for batch in batches(within.clone(), per_batch) {
        open_batch(context, &prefetched, batch, report).map_err(|e| classify(&e))?;
    }
    let results: Vec<Result<(), VaultError>> = batches(within.end..layout.chunk_count(), per_batch)
        .into_par_iter()
        .map(|batch| open_batch(context, &object, batch, report))
        .collect();
    results
        .into_iter()
        .collect::<Result<(), VaultError>>()
        .map_err(|e| classify(&e))
}

/// `range` cut into runs of at most `per_batch`.
fn batches(range: Range<u64>, per_batch: u64) -> Vec<Range<u64>> {
    range
        .clone()
        .step_by(per_batch as usize)
        .map(|first| first..range.end.min(first + per_batch))
        .collect()
}

/// Loads and authenticates chunks `range` of `source` (at most a buffer's worth) into a
/// buffer of `context`.
fn open_batch<S: ChunkSource<Error = VaultError>>(
    context: &Context,
    source: &S,
    range: Range<u64>,
    report: &(dyn Fn(u64) + Sync),
) -> Result<(), VaultError> {
    let mut buf = context.buffers.take()?;
    let full = source.sealed_len(range.start);
    let len = range.clone().map(|i| source.sealed_len(i)).sum::<usize>();
    // Only an object's last chunk is shorter than the others, and it ends its batch.
    let mut bufs: Vec<&mut [u8]> = buf[..len].chunks_mut(full).collect();
    let result = source.load(range.start, &mut bufs);
    drop(bufs);
    context.buffers.give(buf);
    result?;
    report(len as u64);
    Ok(())
}

/// The status of an object that failed to open or authenticate, and why.
fn classify(error: &VaultError) -> (Status, String) {
    match error {
        VaultError::Format { source, .. } => {
            let status = match source {
                FormatError::NoMatchingRecipient => Status::Unreadable,
                FormatError::Truncated { .. } => Status::Truncated,
                _ => Status::Tampered,
            };
            let detail = match source {
                FormatError::NoMatchingRecipient => {
                    "sealed to other recipients: no stanza of its header opens with this identity"
                        .to_owned()
                }
                other => other.to_string(),
            };
            (status, detail)
        }
        VaultError::SizeMismatch {
            expected, actual, ..
        } => {
            let (status, what) = if actual < expected {
                (Status::Truncated, "truncated")
            } else {
                (Status::Tampered, "extended")
            };
            (
                status,
                format!("object is {actual} bytes but its header says {expected} ({what})"),
            )
        }
        VaultError::PathMismatch {
            location,
            sealed_as,
            ..
        } => (
            Status::Tampered,
            format!(
                "sealed for location {sealed_as:?} but found at {location:?} (moved or swapped)"
            ),
        ),
        VaultError::ManifestMismatch { .. } => (
            Status::Tampered,
            "does not match its manifest entry: header hash or file id differ (swapped, \
             replaced or replayed object)"
                .to_owned(),
        ),
        VaultError::Backend(BackendError::NotFound { key }) => {
            (Status::Missing, format!("{key} is not in the bucket"))
        }
        VaultError::Backend(BackendError::ShortRead { end, .. }) => {
            (Status::Truncated, format!("object ends before byte {end}"))
        }
        other => (Status::Failed, other.to_string()),
    }
}
