//! Resolving a directory: reading and checking the header of each of its objects, on a
//! few threads, once; hiding the ones that fail (counted in one warning) and stopping
//! early when the reader who asked is signalled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{interrupt, tree, volumes, Caller, Ino, SealedObject, Vault, VaultError, VOLUMES_DIR};
use crate::format::FormatError;
use crate::keys::Identity;
use crate::manifest::Entry;

/// Threads that read and check headers when a directory is first resolved.
const RESOLVE_THREADS: usize = 8;
/// Headers checked between two looks at whether the caller was signalled.
pub(super) const INTERRUPT_CHECK_EVERY: usize = 64;
/// Headers read at mount to tell a wrong identity from a bucket sealed to it.
const PROBED_FILES: usize = 16;

impl VaultError {
    /// Why an object is hidden, in a few words, for counting hidden objects by reason.
    fn kind(&self) -> &'static str {
        match self {
            VaultError::Format {
                source: FormatError::NoMatchingRecipient,
                ..
            } => "not sealed to this identity",
            VaultError::Format { .. } => "not valid sealed objects",
            VaultError::PathMismatch { .. } => "moved or swapped",
            VaultError::SizeMismatch { .. } => "truncated or extended",
            VaultError::Backend(_) => "unreadable",
            _ => "failing to open",
        }
    }
}

impl Vault {
    /// Reads the headers of up to 16 files (the first ones of the first directories that
    /// hold files, breadth first) and returns how many were read if *none* of them is
    /// sealed to this identity: then the mount would likely show only empty folders, and the
    /// user should hear of it. `None` when one opens, or some fail for another reason, or
    /// there are no files. Nothing is kept: the files are checked again when listed.
    pub fn probe_identity(&self) -> Result<Option<usize>, VaultError> {
        let sample: Vec<(Ino, String, u64)> = {
            let tree = self.tree.read();
            tree.dirs(0)
                .into_iter()
                .flat_map(|dir| tree.unresolved_files(dir).unwrap_or_default())
                .take(PROBED_FILES)
                .collect()
        };
        if sample.is_empty() {
            return Ok(None);
        }
        let identity = self.identity.read();
        let identity = identity.as_ref().ok_or(VaultError::Purged)?;
        let foreign = std::thread::scope(|scope| {
            let probes: Vec<_> = sample
                .iter()
                .map(|(ino, key, size)| {
                    scope.spawn(move || {
                        let opened = SealedObject::open(
                            Arc::clone(&self.backend),
                            key,
                            *size,
                            identity,
                            *ino,
                            self.profile.first_read,
                            None,
                        );
                        crate::harden::scrub_stack();
                        matches!(
                            opened,
                            Err(VaultError::Format {
                                source: FormatError::NoMatchingRecipient,
                                ..
                            })
                        )
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|probe| probe.join().unwrap_or(false))
                .filter(|&foreign| foreign)
                .count()
        });
        Ok((foreign == sample.len()).then_some(foreign))
    }

    /// Resolves the directory of `ino` if `ino` is a file not checked since an unlock (the
    /// kernel may still know its name from before).
    pub(super) fn resolve_parent_of(&self, ino: Ino, caller: Caller) -> Result<(), VaultError> {
        let unresolved_parent = {
            let tree = self.tree.read();
            tree.is_unresolved_file(ino)
                .then(|| tree.parent(ino))
                .flatten()
        };
        match unresolved_parent {
            Some(parent) => self.resolve_dir(parent, caller),
            None => Ok(()),
        }
    }

    /// Resolves directory `ino`'s files if not done yet (see the module docs). Stops
    /// early with [`VaultError::Interrupted`] once `caller` has a signal pending (the
    /// files checked so far stay checked); hidden files are counted in one warning. A file
    /// the store did not answer for is neither shown nor hidden: the call fails with that
    /// error (EIO) and the next access checks it again.
    pub(super) fn resolve_dir(&self, ino: Ino, caller: Caller) -> Result<(), VaultError> {
        if Some(ino) == self.volumes_dir {
            return self.resolve_volumes(ino, caller);
        }
        let pending = self.tree.read().unresolved_files(ino)?;
        if pending.is_empty() {
            return Ok(());
        }
        let identity = self.identity.read();
        let identity = identity.as_ref().ok_or(VaultError::Purged)?;
        // Header reads are I/O-bound: a few threads, each taking the next pending file.
        let threads = RESOLVE_THREADS.min(pending.len());
        let next = Mutex::new(pending.into_iter().enumerate());
        let interrupted = AtomicBool::new(false);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let Some((n, (file_ino, key, size))) = next.lock().next() else {
                        return;
                    };
                    if n % INTERRUPT_CHECK_EVERY == INTERRUPT_CHECK_EVERY - 1
                        && interrupt::signal_pending(caller.pid)
                    {
                        interrupted.store(true, Ordering::Relaxed);
                    }
                    if interrupted.load(Ordering::Relaxed) {
                        return;
                    }
                    let opened = self.open_object(&key, size, identity, file_ino, None);
                    // Key agreement copies key material onto this thread's stack.
                    crate::harden::scrub_stack();
                    results.lock().push((file_ino, opened));
                });
            }
        });
        let mut tree = self.tree.write();
        let mut hidden = tree::Skipped::default();
        let mut unreachable = None;
        for (file_ino, result) in results.into_inner() {
            match result {
                Ok(object) => tree.set_object(file_ino, Arc::new(object)),
                // The store did not answer: the file stays unchecked, for the next access.
                Err(VaultError::Backend(e)) if e.is_transient() => {
                    unreachable.get_or_insert(e);
                }
                Err(e) => {
                    hidden.note(e.kind(), &e);
                    tree.hide(file_ino);
                }
            }
        }
        let place = match tree.path_of(ino) {
            dir if dir.is_empty() => "the bucket's root".to_owned(),
            dir => format!("{dir:?}"),
        };
        hidden.warn(&place);
        if let Some(e) = unreachable {
            return Err(VaultError::Backend(e));
        }
        if interrupted.into_inner() {
            return Err(VaultError::Interrupted);
        }
        tree.mark_resolved(ino);
        Ok(())
    }

    /// Populates `.volumes` (inode `dir`) once: resolves every directory, reads every
    /// file's DICOM header and adds one entry per series.
    fn resolve_volumes(&self, dir: Ino, caller: Caller) -> Result<(), VaultError> {
        let mut ready = self.volumes_ready.lock();
        if *ready {
            return Ok(());
        }
        let dirs = self.tree.read().dirs(dir);
        for other in dirs {
            self.resolve_dir(other, caller)?;
        }
        let files = self.tree.read().opened_files();
        let started = std::time::Instant::now();
        let entries = volumes::entries(&self.cache, files);
        let mut tree = self.tree.write();
        for (name, entry) in entries {
            tree.add_virtual(dir, &name, Arc::new(entry));
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{VOLUMES_DIR} populated"
        );
        *ready = true;
        Ok(())
    }

    /// Opens a header and authenticates the last chunk, so `st_size` is authenticated. The
    /// chunks that came with the header (see [`ReadProfile::first_read`]) go into the cache;
    /// one that fails to open there is left for its read to report. `bound` is the
    /// file's manifest entry in a v2 bucket.
    pub(super) fn open_object(
        &self,
        key: &str,
        size: u64,
        identity: &Identity,
        ino: Ino,
        bound: Option<&Entry>,
    ) -> Result<SealedObject, VaultError> {
        let (object, first_bytes) = SealedObject::open(
            Arc::clone(&self.backend),
            key,
            size,
            identity,
            ino,
            self.profile.first_read,
            bound,
        )?;
        let (prefetched, chunks) = object.prefetched(&first_bytes);
        let _ = self.cache.with_chunks(&prefetched, chunks, |_, _| {});
        let last = object.layout().chunk_count() - 1;
        self.cache.with_chunks(&object, last..last + 1, |_, _| {})?;
        Ok(object)
    }
}
