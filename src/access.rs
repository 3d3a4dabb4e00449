//! Who may read a zero-knowledge bucket: `share` changes its recipient list by giving every
//! file a new header, with the same file key wrapped to the new list, stored as a small
//! object of its own; the chunks are never sent again. `rotate` is the real revocation:
//! new keys, new chunks, through [`crate::reseal`].

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::audit::{Event, EventKind, Recorder};
use crate::backend::BackendError;
use crate::bucket::write::COMMIT_EVERY;
use crate::bucket::{BucketError, ManifestStore, Recipients};
use crate::format::Header;
use crate::keys::{Identity, Recipient};
use crate::manifest::{self, Detached, Entry, Manifest, Op};
use crate::reseal::{self, Journal};
use crate::seal::SealOptions;

/// Errors in changing who may read a bucket.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error("{0} is not a recipient of this bucket; nothing was changed")]
    NotARecipient(Recipient),
    #[error("no recipient would be left; nothing was changed")]
    NobodyLeft,
    #[error("your identity ({0}) could not read the bucket any more; nothing was changed")]
    WouldLockOut(Recipient),
    #[error("{path}: {message}")]
    Header { path: String, message: String },
}

/// What [`share`] did.
#[derive(Debug, Default)]
pub struct Shared {
    /// The recipient list from now on.
    pub recipients: Vec<Recipient>,
    /// Files given a new header in this run (0 when the list did not change).
    pub files: usize,
    /// Bytes of header objects written.
    pub bytes_written: u64,
    /// The manifest generation after the commit (the old one when nothing changed).
    pub generation: u64,
}

/// The recipient list `current` less `remove` plus `add`, in order, without duplicates.
pub fn changed_list(
    current: &[Recipient],
    add: &[Recipient],
    remove: &[Recipient],
    me: Recipient,
) -> Result<Vec<Recipient>, AccessError> {
    if let Some(stranger) = remove.iter().find(|r| !current.contains(r)) {
        return Err(AccessError::NotARecipient(*stranger));
    }
    let mut list: Vec<Recipient> = current
        .iter()
        .filter(|r| !remove.contains(r))
        .copied()
        .collect();
    for recipient in add {
        if !list.contains(recipient) {
            list.push(*recipient);
        }
    }
    if list.is_empty() {
        return Err(AccessError::NobodyLeft);
    }
    if !list.contains(&me) {
        return Err(AccessError::WouldLockOut(me));
    }
    Ok(list)
}

/// Gives every file of `manifest` (the bucket's, as the caller loaded it) a header wrapped to the bucket's recipients plus `add`
/// less `remove`, in parallel on the current rayon pool, journaling batches so that an
/// interrupted run resumes, then switches readers in one commit (a snapshot sealed to the
/// new list). A file replaced meanwhile keeps its newer version. Calls `progress(files)`.
/// Each file whose key is unwrapped is recorded with `audit` first (an `open` record of
/// its path and file id).
pub fn share(
    store: &ManifestStore,
    identity: &Identity,
    manifest: &Manifest,
    add: &[Recipient],
    remove: &[Recipient],
    progress: &(dyn Fn(u64) + Sync),
    audit: &Recorder<'_>,
) -> Result<Shared, AccessError> {
    let recipients = changed_list(&manifest.recipients, add, remove, identity.recipient())?;
    if recipients == manifest.recipients {
        return Ok(Shared {
            recipients,
            generation: manifest.generation,
            ..Shared::default()
        });
    }
    // One journal per target list: a run for another list never reuses these headers.
    let mut hasher = blake3::Hasher::new();
    for recipient in &recipients {
        hasher.update(&recipient.to_bytes());
    }
    let journal = Journal::new(
        store,
        format!("share/{}/", &hasher.finalize().to_hex()[..16]),
    );
    let (mut rewrapped, mut batches) = journal.load(identity)?;
    let bytes = AtomicU64::new(0);
    let todo: Vec<(&String, &Entry)> = manifest
        .entries
        .iter()
        .filter(|(path, _)| !rewrapped.contains_key(*path))
        .collect();
    for chunk in todo.chunks(COMMIT_EVERY) {
        let failures = Mutex::new(Vec::new());
        let puts: Vec<Op> = chunk
            .par_iter()
            .filter_map(|(path, entry)| {
                let result = rewrap(
                    store,
                    identity,
                    (path.as_str(), *entry),
                    &recipients,
                    &bytes,
                    audit,
                );
                crate::harden::scrub_stack();
                progress(1);
                match result {
                    Ok(new) => Some(Op::Put((*path).clone(), new)),
                    Err(message) => {
                        failures.lock().push(AccessError::Header {
                            path: (*path).clone(),
                            message,
                        });
                        None
                    }
                }
            })
            .collect();
        if let Some(failure) = failures.into_inner().into_iter().next() {
            return Err(failure);
        }
        batches += 1;
        rewrapped.extend(journal.append(identity, batches, puts)?);
    }
    let committed = store.commit(
        Some(identity),
        Recipients::Replace(&recipients),
        &mut |current| {
            rewrapped
                .iter()
                .filter(|(path, new)| {
                    current.entries.get(*path).is_some_and(|old| {
                        old.object_id == new.object_id && old.file_id == new.file_id
                    })
                })
                .map(|(path, new)| Op::Put(path.clone(), *new))
                .collect()
        },
    )?;
    delete_unused_headers(store, manifest, &committed.manifest, &rewrapped);
    journal.clear(batches)?;
    Ok(Shared {
        recipients,
        files: rewrapped.len(),
        bytes_written: bytes.into_inner(),
        generation: committed.manifest.generation,
    })
}

/// What [`rotate`] did.
#[derive(Debug, Default)]
pub struct Rotated {
    /// The recipient list from now on.
    pub recipients: Vec<Recipient>,
    /// Files sealed again (in this run or an interrupted earlier one).
    pub files: usize,
    /// Of those, files an earlier, interrupted run had journaled.
    pub resumed: usize,
    /// Plaintext bytes sealed again in this run.
    pub bytes: u64,
    /// Objects deleted after the commit (the old ones, and new ones left unused).
    pub deleted: usize,
    /// The manifest generation after the commit.
    pub generation: u64,
}

/// Seals every file of `manifest` (the bucket's, as the caller loaded it) again as a new object under a fresh file key, to the
/// bucket's recipients less `remove` (padded files stay padded, and all are with `pad`),
/// decrypting only into locked memory, in parallel on the current rayon pool; batches are
/// journaled, so a killed run resumes. One commit (a snapshot sealed to the new list)
/// switches readers from every old object to every new one, a file changed meanwhile
/// keeping its newer version; then the old objects are deleted. `progress(bytes)` as
/// plaintext is sealed. Each file is recorded with `audit` before it is decrypted (see
/// [`reseal::reseal`]).
pub fn rotate(
    store: &ManifestStore,
    identity: &Identity,
    manifest: &Manifest,
    remove: &[Recipient],
    pad: bool,
    progress: &(dyn Fn(u64) + Sync),
    audit: &Recorder<'_>,
) -> Result<Rotated, AccessError> {
    let recipients = changed_list(&manifest.recipients, &[], remove, identity.recipient())?;
    let journal = Journal::new(store, "rotate/");
    let (mut journaled, batches) = journal.load(identity)?;
    let resumed = journaled.len();
    let todo: Vec<reseal::Source> = manifest
        .entries
        .iter()
        .filter(|(path, _)| !journaled.contains_key(*path))
        .map(|(path, entry)| reseal::Source {
            path: path.clone(),
            key: entry.object_key(),
            object_len: entry.object_len,
            bound: Some(*entry),
            mtime: entry.mtime,
            pad: pad || entry.padded,
        })
        .collect();
    let options = SealOptions {
        recipients: recipients.clone(),
        chunk_log2: crate::format::DEFAULT_CHUNK_LOG2,
        overwrite: false,
    };
    let resealed = reseal::reseal(
        &journal, identity, &todo, batches, &options, progress, audit,
    )?;
    let batches = resealed.batches;
    journaled.extend(resealed.entries);
    let committed = store.commit(
        Some(identity),
        Recipients::Replace(&recipients),
        &mut |current| {
            journaled
                .iter()
                .filter(|(path, new)| {
                    current
                        .entries
                        .get(*path)
                        .is_some_and(|old| old.size == new.size && old.mtime == new.mtime)
                })
                .map(|(path, new)| Op::Put(path.clone(), *new))
                .collect()
        },
    )?;
    let unused = journaled.iter().filter(|(path, new)| {
        committed.manifest.entries.get(*path).map(|e| e.object_id) != Some(new.object_id)
    });
    let mut deleted = 0;
    for key in committed
        .unreferenced
        .iter()
        .cloned()
        .chain(unused.map(|(_, new)| new.object_key()))
    {
        match store.backend().delete(&key) {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!("object {key} is no longer used but was not deleted: {e}"),
        }
    }
    journal.clear(batches)?;
    Ok(Rotated {
        recipients,
        files: journaled.len(),
        resumed,
        bytes: resealed.bytes,
        deleted,
        generation: committed.manifest.generation,
    })
}

/// A new detached header for file `path` of manifest entry `entry`, wrapped to
/// `recipients`, written to its own object; the file is recorded with `audit` before its
/// key is unwrapped.
fn rewrap(
    store: &ManifestStore,
    identity: &Identity,
    (path, entry): (&str, &Entry),
    recipients: &[Recipient],
    bytes: &AtomicU64,
    audit: &Recorder<'_>,
) -> Result<Entry, String> {
    let backend = store.backend();
    let key = entry.header_key();
    // One request for most headers: the first 4 KiB of the file's object, or the fixed
    // prefix of a detached header (whose object's length the entry does not record).
    let first = match entry.detached {
        Some(_) => crate::format::PREFIX_LEN as u64,
        None => entry.object_len.min(4096),
    };
    let mut old = vec![0u8; first as usize];
    backend
        .read_range(&key, 0, &mut [&mut old])
        .map_err(|e| e.to_string())?;
    let header_len = crate::format::header_len(&old).map_err(|e| e.to_string())?;
    if header_len > old.len() {
        let mut rest = vec![0u8; header_len - old.len()];
        backend
            .read_range(&key, old.len() as u64, &mut [&mut rest])
            .map_err(|e| e.to_string())?;
        old.extend_from_slice(&rest);
    }
    old.truncate(header_len);
    if *blake3::hash(&old).as_bytes() != entry.header_hash {
        return Err("header does not match its manifest entry (swapped or replaced)".into());
    }
    // The header is the entry's, so the entry's file id is the header's.
    audit(
        Event::new(EventKind::Open)
            .path(path)
            .file_id(entry.file_id),
    )
    .map_err(|e| e.to_string())?;
    let new = Header::parse(&old)
        .and_then(|header| header.rewrap(identity, recipients))
        .map_err(|e| e.to_string())?;
    let mut header_id = [0u8; 16];
    getrandom::getrandom(&mut header_id).expect("OS random number generator");
    let new_key = manifest::header_key(&header_id);
    let mut out = backend
        .create_sized(&new_key, false, new.len() as u64)
        .map_err(|e| e.to_string())?;
    out.write_all(&new)
        .map_err(|e| BackendError::Io {
            context: format!("write {new_key:?}"),
            source: e,
        })
        .and_then(|()| out.commit())
        .map_err(|e| e.to_string())?;
    bytes.fetch_add(new.len() as u64, Ordering::Relaxed);
    let chunks_at = entry
        .detached
        .map_or(header_len as u64, |detached| detached.chunks_at);
    Ok(Entry {
        header_hash: *blake3::hash(&new).as_bytes(),
        detached: Some(Detached {
            header_id,
            chunks_at,
        }),
        ..*entry
    })
}

/// Deletes detached headers that `before` used and `after` does not, and journaled ones
/// the commit did not take; a failure only leaves garbage.
fn delete_unused_headers(
    store: &ManifestStore,
    before: &Manifest,
    after: &Manifest,
    rewrapped: &BTreeMap<String, Entry>,
) {
    let in_use: std::collections::HashSet<[u8; 16]> = after
        .entries
        .values()
        .filter_map(|e| e.detached.map(|d| d.header_id))
        .collect();
    let candidates = before
        .entries
        .values()
        .chain(rewrapped.values())
        .filter_map(|e| e.detached.map(|d| d.header_id))
        .filter(|id| !in_use.contains(id));
    for id in candidates {
        let key = manifest::header_key(&id);
        if let Err(e) = store.backend().delete(&key) {
            tracing::warn!("header {key} is no longer used but was not deleted: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(n: u8) -> Recipient {
        Identity::from([n; 32]).recipient()
    }

    #[test]
    fn the_new_list_keeps_order_refuses_strangers_and_never_locks_us_out() {
        let (a, b, c) = (recipient(1), recipient(2), recipient(3));
        assert_eq!(changed_list(&[a, b], &[c, a], &[], a).unwrap(), [a, b, c]);
        assert_eq!(changed_list(&[a, b], &[], &[b], a).unwrap(), [a]);
        assert!(matches!(
            changed_list(&[a], &[], &[c], a),
            Err(AccessError::NotARecipient(r)) if r == c
        ));
        assert!(matches!(
            changed_list(&[a], &[], &[a], a),
            Err(AccessError::NobodyLeft)
        ));
        assert!(matches!(
            changed_list(&[a, b], &[], &[a], a),
            Err(AccessError::WouldLockOut(r)) if r == a
        ));
    }
}
