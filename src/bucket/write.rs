//! Changing a v2 bucket: sealing files in (each under a fresh random object id, then one
//! manifest commit per batch) and removing paths. Objects no entry refers to any more are
//! deleted only after the commit that stops referring to them.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use super::{BucketError, Committed, ManifestStore, Recipients};
use crate::backend::Backend;
use crate::keys::Identity;
use crate::manifest::{self, Entry, Manifest, Op};
use crate::seal::{self, NewObject, SealError, SealJob, SealOptions};

/// Files sealed between two manifest commits: an interrupted seal keeps what the
/// commits before it recorded, and a re-run skips those files.
pub const COMMIT_EVERY: usize = 1000;

/// What [`seal_files`] did.
#[derive(Debug, Default)]
pub struct SealReport {
    /// Paths that were new to the bucket.
    pub added: u64,
    /// Paths whose entry was replaced (the file changed, or `overwrite`).
    pub updated: u64,
    /// Paths already sealed with the same size and mtime, left alone.
    pub unchanged: u64,
    /// Plaintext bytes sealed.
    pub bytes: u64,
    /// Files not sealed, each with why.
    pub failed: Vec<String>,
    /// The manifest generation after the last commit (0 if nothing was committed).
    pub generation: u64,
}

/// Why a path cannot be sealed next to what the bucket holds, if it cannot.
fn clash(manifest: &Manifest, path: &str) -> Option<String> {
    let mut ancestor = path;
    while let Some((parent, _)) = ancestor.rsplit_once('/') {
        if manifest.entries.contains_key(parent) {
            return Some(format!(
                "{parent:?} is a file in the bucket, not a directory"
            ));
        }
        ancestor = parent;
    }
    manifest
        .below(path)
        .any(|(p, _)| p != path)
        .then(|| format!("{path:?} is a directory in the bucket"))
}

/// Seals `jobs` into the bucket of `store`: a file already there with the same size and
/// mtime is left alone (unless `options.overwrite`), others get a new object and entry.
/// With `pad`, plaintext is padded to [`manifest::padded_len`]. `current` is the manifest
/// the caller loaded (the default one for a new bucket); commits apply on top of whatever
/// is newest. Runs on the current rayon pool; `progress(bytes)` is called as plaintext is
/// consumed. Without `identity` only a new bucket can be sealed into, and in one commit at
/// the end (a later commit would need to read the manifest): an interrupted run commits
/// nothing, and its objects are orphans (`smpfs verify` names them) until it is run again.
pub fn seal_files(
    store: &ManifestStore,
    identity: Option<&Identity>,
    mut current: Manifest,
    jobs: &[SealJob],
    options: &SealOptions,
    pad: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SealReport, BucketError> {
    let mut report = SealReport::default();
    let backend = store.backend();
    let batch_len = match identity {
        Some(_) => COMMIT_EVERY,
        None => jobs.len().max(1),
    };
    for batch in jobs.chunks(batch_len) {
        let failed = Mutex::new(Vec::new());
        let bytes = AtomicU64::new(0);
        let to_seal: Vec<&SealJob> = batch
            .iter()
            .filter(|job| {
                if let Some(reason) = clash(&current, &job.logical_path) {
                    failed
                        .lock()
                        .push(format!("{}: {reason}", job.source.display()));
                    return false;
                }
                let unchanged = current.entries.get(&job.logical_path).is_some_and(|e| {
                    e.size == job.size && e.mtime == job.modified && !options.overwrite
                });
                if unchanged {
                    report.unchanged += 1;
                    progress(job.size);
                }
                !unchanged
            })
            .collect();
        let puts: Vec<Op> = to_seal
            .par_iter()
            .filter_map(|job| match seal_one(backend, job, options, pad, progress) {
                Ok(entry) => {
                    bytes.fetch_add(job.size, Ordering::Relaxed);
                    Some(Op::Put(job.logical_path.clone(), entry))
                }
                Err(e) => {
                    failed.lock().push(format!("{}: {e}", job.source.display()));
                    None
                }
            })
            .collect();
        report.failed.extend(failed.into_inner());
        if puts.is_empty() {
            continue;
        }
        for op in &puts {
            if current.entries.contains_key(op.path()) {
                report.updated += 1;
            } else {
                report.added += 1;
            }
        }
        report.bytes += bytes.into_inner();
        let committed = store.commit(
            identity,
            Recipients::ForNew(&options.recipients),
            &mut |_| puts.clone(),
        )?;
        delete_unreferenced(backend.as_ref(), &committed);
        report.generation = committed.manifest.generation;
        current = committed.manifest;
    }
    Ok(report)
}

/// Seals one file under a new random object id and returns its entry.
fn seal_one(
    backend: &Arc<dyn Backend>,
    job: &SealJob,
    options: &SealOptions,
    pad: bool,
    progress: &dyn Fn(u64),
) -> Result<Entry, SealError> {
    let mut input = File::open(&job.source).map_err(|e| SealError::Io {
        path: job.source.clone(),
        source: e,
    })?;
    let source = NewSource {
        name: &job.source,
        size: job.size,
        mtime: job.modified,
    };
    seal_new_object(backend, &source, &mut input, options, pad, progress)
}

/// What [`seal_new_object`] reads: `size` bytes named `name` in errors, modified at
/// `mtime`.
pub struct NewSource<'a> {
    /// Names the input in errors (never stored).
    pub name: &'a std::path::Path,
    /// Bytes the input holds.
    pub size: u64,
    /// Modification time for the entry: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
}

/// Seals `source.size` bytes of `input` (padded to [`manifest::padded_len`] with `pad`)
/// as a new object under a fresh random id, and returns the entry that binds it.
pub fn seal_new_object(
    backend: &Arc<dyn Backend>,
    source: &NewSource,
    input: &mut dyn std::io::Read,
    options: &SealOptions,
    pad: bool,
    progress: &dyn Fn(u64),
) -> Result<Entry, SealError> {
    let mut object_id = [0u8; 16];
    getrandom::getrandom(&mut object_id).expect("OS random number generator");
    let key = manifest::object_key(&object_id);
    let sealed_len = if pad {
        manifest::padded_len(source.size)
    } else {
        source.size
    };
    let object = NewObject {
        key: &key,
        source: source.name,
        size: source.size,
        sealed_len,
        overwrite: false,
    };
    let written = seal::write_object(backend, &object, input, options, progress)?;
    Ok(Entry {
        object_id,
        file_id: written.file_id,
        header_hash: written.header_hash,
        size: source.size,
        object_len: written.object_len,
        mtime: source.mtime,
        padded: sealed_len != source.size,
        detached: None,
    })
}

/// Removes `paths` (files, or directories with everything below them) from the
/// manifest, then deletes their objects. Every path must exist; otherwise nothing is
/// removed. Returns the commit and how many files were removed.
pub fn remove(
    store: &ManifestStore,
    identity: &Identity,
    paths: &[String],
) -> Result<(Committed, usize), BucketError> {
    let current = store.load(identity)?.ok_or(BucketError::NoManifest)?;
    for path in paths {
        if current.below(path.trim_end_matches('/')).next().is_none() {
            return Err(BucketError::NoSuchPath(path.clone()));
        }
    }
    let mut removed = 0;
    let committed = store.commit(Some(identity), Recipients::ForNew(&[]), &mut |manifest| {
        let ops: Vec<Op> = paths
            .iter()
            .flat_map(|path| manifest.below(path.trim_end_matches('/')))
            .map(|(path, _)| Op::Remove(path.clone()))
            .collect();
        removed = ops.len();
        ops
    })?;
    delete_unreferenced(store.backend().as_ref(), &committed);
    Ok((committed, removed))
}

/// Deletes the objects a commit stopped referring to; a failure only leaves garbage.
fn delete_unreferenced(backend: &dyn Backend, committed: &Committed) {
    for key in &committed.unreferenced {
        if let Err(e) = backend.delete(key) {
            tracing::warn!("object {key} is no longer used but was not deleted: {e}");
        }
    }
}
