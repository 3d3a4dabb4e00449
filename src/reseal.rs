//! Sealing existing objects again under fresh ids and keys (`migrate` from v1, `rotate`),
//! streaming each through locked memory, with a journal in the bucket so that an
//! interrupted run resumes: batches of new entries are stored as sealed segments under a
//! prefix of their own, and nothing changes for readers until the caller commits them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::audit::{Event, EventKind, Recorder};
use crate::bucket::write::{self, NewSource, COMMIT_EVERY};
use crate::bucket::{BucketError, ManifestStore};
use crate::keys::Identity;
use crate::manifest::{Entry, Kind, Op, Segment};
use crate::seal::SealOptions;
use crate::vault::{Plaintext, SealedObject};

/// One object to seal again.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its path in the bucket (the manifest's, or a v1 key).
    pub path: String,
    /// Its object key and length now.
    pub key: String,
    /// Bytes of the object.
    pub object_len: u64,
    /// Its manifest entry, which its header must match (none for a v1 object).
    pub bound: Option<Entry>,
    /// The mtime to keep in the new entry.
    pub mtime: (i64, u32),
    /// Pad the new object's plaintext to its Padmé length.
    pub pad: bool,
}

/// The journal of one kind of run (`migrate/`, `rotate/`) in a bucket.
pub struct Journal<'a> {
    store: &'a ManifestStore,
    prefix: String,
}

impl<'a> Journal<'a> {
    /// The journal under `prefix` (ending in `/`).
    pub fn new(store: &'a ManifestStore, prefix: impl Into<String>) -> Self {
        Journal {
            store,
            prefix: prefix.into(),
        }
    }

    /// The store the journal is in.
    pub fn store(&self) -> &ManifestStore {
        self.store
    }

    /// Journals `puts` (sorted here) as batch number `batch`, sealed to `identity` alone.
    pub fn append(
        &self,
        identity: &Identity,
        batch: u64,
        mut puts: Vec<Op>,
    ) -> Result<BTreeMap<String, Entry>, BucketError> {
        puts.sort_by(|a, b| a.path().cmp(b.path()));
        let segment = Segment {
            kind: Kind::Snapshot,
            generation: batch,
            snapshot: batch,
            recipients: vec![identity.recipient()],
            ops: puts,
        };
        self.store
            .write_sealed_segment(&self.key(batch), &segment)?;
        Ok(segment
            .ops
            .into_iter()
            .filter_map(|op| match op {
                Op::Put(path, entry) => Some((path, entry)),
                Op::Remove(_) => None,
            })
            .collect())
    }

    fn key(&self, batch: u64) -> String {
        format!("{}{batch:016x}", self.prefix)
    }

    /// The batches of earlier runs: every entry they made, and how many batches there are.
    pub fn load(&self, identity: &Identity) -> Result<(BTreeMap<String, Entry>, u64), BucketError> {
        let mut entries = BTreeMap::new();
        let mut batches = 0;
        while self.store.backend().stat(&self.key(batches + 1))?.is_some() {
            batches += 1;
            let segment = self
                .store
                .read_sealed_segment(identity, &self.key(batches))?;
            for op in segment.ops {
                if let Op::Put(path, entry) = op {
                    entries.insert(path, entry);
                }
            }
        }
        Ok((entries, batches))
    }

    /// Deletes batches `1..=batches`.
    pub fn clear(&self, batches: u64) -> Result<(), BucketError> {
        for batch in 1..=batches {
            self.store.backend().delete(&self.key(batch))?;
        }
        Ok(())
    }
}

/// What [`reseal`] did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// The new entries, by path.
    pub entries: BTreeMap<String, Entry>,
    /// Batches in the journal now.
    pub batches: u64,
    /// Plaintext bytes sealed again.
    pub bytes: u64,
}

/// Seals every object of `todo` again as a new object to `options.recipients`, in parallel on the current rayon pool, journaling each batch of
/// [`COMMIT_EVERY`] as batch `batches + 1`, `+ 2`, …. Each object's whole plaintext is
/// recorded with `audit` (a `read` record of its path, file id and bytes `0..size`) after
/// its header opens and before it is decrypted. A batch with a failed object (one whose
/// record failed included) is not journaled and the run stops with
/// [`BucketError::Reseal`] (the objects sealed for it stay unreferenced).
pub fn reseal(
    journal: &Journal,
    identity: &Identity,
    todo: &[Source],
    mut batches: u64,
    options: &SealOptions,
    progress: &(dyn Fn(u64) + Sync),
    audit: &Recorder<'_>,
) -> Result<Resealed, BucketError> {
    let backend = journal.store.backend();
    let first_read = backend.read_profile().first_read;
    let mut done = BTreeMap::new();
    let bytes = AtomicU64::new(0);
    for chunk in todo.chunks(COMMIT_EVERY) {
        let failures = Mutex::new(Vec::new());
        let puts: Vec<Op> = chunk
            .par_iter()
            .filter_map(|source| {
                let result = (|| -> Result<Entry, BucketError> {
                    let (object, _) = SealedObject::open(
                        Arc::clone(backend),
                        &source.key,
                        source.object_len,
                        identity,
                        0,
                        first_read,
                        source.bound.as_ref(),
                    )
                    .map_err(|e| BucketError::Object(e.to_string()))?;
                    audit(
                        Event::new(EventKind::Read)
                            .path(&source.path)
                            .file_id(object.file_id())
                            .range(0, object.size()),
                    )
                    .map_err(|e| BucketError::Object(e.to_string()))?;
                    let mut plaintext =
                        Plaintext::new(&object).map_err(|e| BucketError::Object(e.to_string()))?;
                    let new = NewSource {
                        name: std::path::Path::new(&source.path),
                        size: object.size(),
                        mtime: source.mtime,
                    };
                    let entry = write::seal_new_object(
                        backend,
                        &new,
                        &mut plaintext,
                        options,
                        source.pad,
                        progress,
                    )?;
                    bytes.fetch_add(new.size, Ordering::Relaxed);
                    Ok(entry)
                })();
                crate::harden::scrub_stack();
                match result {
                    Ok(entry) => Some(Op::Put(source.path.clone(), entry)),
                    Err(e) => {
                        failures.lock().push(format!("{}: {e}", source.path));
                        None
                    }
                }
            })
            .collect();
        let failures = failures.into_inner();
        if !failures.is_empty() {
            return Err(BucketError::Reseal(failures));
        }
        batches += 1;
        done.extend(journal.append(identity, batches, puts)?);
    }
    Ok(Resealed {
        entries: done,
        batches,
        bytes: bytes.into_inner(),
    })
}
