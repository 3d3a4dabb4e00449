//! A zero-knowledge (v2) bucket in its store: the sealed manifest's segments, how the
//! newest generation is found, and how a writer commits the next one without losing a
//! concurrent writer's changes.
//!
//! Objects of a v2 bucket:
//!
//! ```text
//! obj/ab/ab…(32 hex)        one per file, sealed like any v1 object, under a random id
//! manifest/0000000000000001 one per generation: a sealed manifest segment (immutable)
//! manifest/head             "smpfs manifest v2 generation N": a hint, never trusted
//! ```
//!
//! A writer creates `manifest/<N+1>` with the store's create-if-absent (S3
//! `If-None-Match: *`, `renameat2(RENAME_NOREPLACE)` locally, oldest-wins on Drive): if
//! another writer got there first, it loads the newer manifest, applies its own changes on
//! top and tries the next generation. No change is lost and no generation is written twice.
//! Readers find the newest generation from the head hint by probing forward, and refuse a
//! generation older than the newest this workstation has seen ([`seen`]).

pub mod policy;
pub mod seen;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::backend::{Backend, BackendError};
use crate::format::{self, FormatError, Header, TAG_LEN};
use crate::keys::{Identity, Recipient};
use crate::manifest::{Kind, Manifest, ManifestError, Op, Segment};
use crate::seal::{self, NewObject, SealError, SealOptions};
pub use seen::{SeenError, SeenGenerations};

/// The head hint's key.
pub const HEAD_KEY: &str = "manifest/head";

/// Key prefixes of a zero-knowledge bucket's own objects: file objects, detached headers,
/// manifest segments, and the journals of `migrate`, `rotate` and `share`.
pub const V2_PREFIXES: [&str; 6] = ["obj/", "hdr/", "manifest/", "migrate/", "rotate/", "share/"];

/// Whether `key` belongs to the v2 layout (see [`V2_PREFIXES`]) rather than being a v1 file.
pub fn is_v2_object(key: &str) -> bool {
    V2_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}
/// What the head hint says before the generation number.
const HEAD_TEXT: &str = "smpfs manifest v2 generation ";
/// A snapshot is written once the chain since the last one would be this long.
pub const SNAPSHOT_EVERY: u64 = 16;
/// Commits tried before giving up on a store where other writers always win.
const COMMIT_ATTEMPTS: u32 = 64;
/// Largest manifest segment read into memory (a snapshot of about 4 million files).
const MAX_SEGMENT_LEN: u64 = 1 << 30;

/// The key of generation `generation`'s segment.
pub fn segment_key(generation: u64) -> String {
    format!("manifest/{generation:016x}")
}

/// Errors in loading or committing a manifest.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("manifest {key}: {source}")]
    Format {
        key: String,
        #[source]
        source: FormatError,
    },
    #[error("manifest {key}: {source}")]
    Manifest {
        key: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "manifest {key}: sealed for location {sealed_as:?} but found at {location:?} \
         (moved or swapped object)"
    )]
    Moved {
        key: String,
        location: String,
        sealed_as: String,
    },
    #[error("manifest {key}: object is {actual} bytes but its header says {expected}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("manifest {key} is larger than {MAX_SEGMENT_LEN} bytes")]
    TooLarge { key: String },
    #[error("manifest head {0:?} does not name a generation")]
    BadHead(String),
    #[error(
        "manifest generation {0} is missing from the bucket, though its head names it \
         (damaged or tampered bucket)"
    )]
    MissingSegment(u64),
    #[error(
        "refusing manifest generation {found}: this workstation has already seen generation \
         {seen} of this bucket, so the store is serving an older manifest (rollback or a stale \
         replica); see docs/SECURITY.md"
    )]
    Rollback { seen: u64, found: u64 },
    #[error(
        "the bucket has no manifest, but this workstation has seen generation {seen} of it: \
         its manifest was deleted (refusing to read it as a v1 bucket)"
    )]
    ManifestGone { seen: u64 },
    #[error("the bucket has no manifest (a v1 bucket, or none there): `smpfs migrate` converts a v1 bucket")]
    NoManifest,
    #[error("the bucket has no file or directory {0:?}; nothing was changed")]
    NoSuchPath(String),
    #[error("{}", reseal_failures(.0))]
    Reseal(Vec<String>),
    #[error("{0}")]
    Object(String),
    #[error("this bucket has a manifest: give your identity (-i) to read and update it")]
    NeedsIdentity,
    #[error("other writers committed first {COMMIT_ATTEMPTS} times in a row; try again")]
    Contended,
    #[error(transparent)]
    Seen(#[from] SeenError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Who a commit seals the manifest to.
#[derive(Debug, Clone, Copy)]
pub enum Recipients<'a> {
    /// These, if the bucket is new; else the bucket's own list.
    ForNew(&'a [Recipient]),
    /// These, from this generation on (`rotate`).
    Replace(&'a [Recipient]),
}

/// A committed generation and what it replaced.
#[derive(Debug)]
pub struct Committed {
    /// The manifest as of the new generation.
    pub manifest: Manifest,
    /// Objects no entry refers to any more (replaced or removed paths): safe to delete.
    pub unreferenced: Vec<String>,
}

/// The manifest of one bucket, for one identity.
pub struct ManifestStore {
    backend: Arc<dyn Backend>,
    seen: Option<SeenGenerations>,
}

impl ManifestStore {
    /// The manifest of `backend`'s bucket; with `seen`, rollbacks are refused and every
    /// generation read or written is recorded there.
    pub fn new(backend: Arc<dyn Backend>, seen: Option<SeenGenerations>) -> ManifestStore {
        ManifestStore { backend, seen }
    }

    /// The store.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The bucket's id in the seen-generations file: a hash of where its manifest lies
    /// and who reads it.
    fn seen_id(&self, identity: &Recipient) -> Result<String, BucketError> {
        let mut hasher = blake3::Hasher::new_derive_key("smpfs 2026 seen manifest generation");
        hasher.update(self.backend.location(HEAD_KEY)?.as_bytes());
        hasher.update(&identity.to_bytes());
        Ok(hasher.finalize().to_hex()[..32].to_owned())
    }

    /// Whether the bucket has a manifest (is v2), from its head hint alone: one request.
    pub fn has_manifest(&self) -> Result<bool, BucketError> {
        Ok(self.backend.stat(HEAD_KEY)?.is_some())
    }

    /// The generation the head hint names, `None` without one.
    fn head_hint(&self) -> Result<Option<u64>, BucketError> {
        let Some(len) = self.backend.stat(HEAD_KEY)? else {
            return Ok(None);
        };
        let mut text = vec![0u8; len.min(128) as usize];
        self.backend.read_range(HEAD_KEY, 0, &mut [&mut text])?;
        let text = String::from_utf8_lossy(&text).into_owned();
        text.trim_end()
            .strip_prefix(HEAD_TEXT)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or(BucketError::BadHead(text))
    }

    /// The newest generation after `from` that exists, probing one by one (each probe is
    /// one small request); `from` if there is none.
    fn newest_from(&self, from: u64) -> Result<u64, BucketError> {
        let mut newest = from;
        while self.backend.stat(&segment_key(newest + 1))?.is_some() {
            newest += 1;
        }
        Ok(newest)
    }

    /// Loads the newest manifest: `None` for a bucket without one (a v1 bucket, unless
    /// this workstation saw a manifest there before, which is an error).
    pub fn load(&self, identity: &Identity) -> Result<Option<Manifest>, BucketError> {
        let seen = self.seen_generation(identity)?;
        let Some(hint) = self.head_hint()? else {
            return match seen {
                Some(seen) => Err(BucketError::ManifestGone { seen }),
                None => Ok(None),
            };
        };
        if self.backend.stat(&segment_key(hint))?.is_none() {
            return Err(BucketError::MissingSegment(hint));
        }
        let newest = self.newest_from(hint)?;
        self.load_generation(identity, newest).map(Some)
    }

    /// The generation after `current` if the bucket has one: a single small request when
    /// nothing changed (the refresh of an unchanged manifest).
    pub fn newer_than(&self, current: u64) -> Result<Option<u64>, BucketError> {
        if self.backend.stat(&segment_key(current + 1))?.is_none() {
            return Ok(None);
        }
        self.newest_from(current + 1).map(Some)
    }

    /// Loads generation `generation` (its segment, and the snapshot and deltas it builds
    /// on, fetched in parallel), refusing it if older than the newest seen, and records it.
    pub fn load_generation(
        &self,
        identity: &Identity,
        generation: u64,
    ) -> Result<Manifest, BucketError> {
        if let Some(seen) = self.seen_generation(identity)? {
            if generation < seen {
                return Err(BucketError::Rollback {
                    seen,
                    found: generation,
                });
            }
        }
        let last = self.read_segment(identity, generation)?;
        let chain = if last.kind == Kind::Snapshot {
            vec![last]
        } else {
            let earlier = std::thread::scope(|scope| {
                let reads: Vec<_> = (last.snapshot..generation)
                    .map(|g| scope.spawn(move || self.read_segment(identity, g)))
                    .collect();
                reads
                    .into_iter()
                    .map(|r| r.join().expect("segment reader panicked"))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            crate::harden::scrub_stack();
            earlier.into_iter().chain([last]).collect()
        };
        let manifest = Manifest::from_chain(&chain).map_err(|source| BucketError::Manifest {
            key: segment_key(generation),
            source,
        })?;
        self.record_seen(identity, manifest.generation)?;
        Ok(manifest)
    }

    fn seen_generation(&self, identity: &Identity) -> Result<Option<u64>, BucketError> {
        match &self.seen {
            Some(seen) => Ok(seen.get(&self.seen_id(&identity.recipient())?)?),
            None => Ok(None),
        }
    }

    fn record_seen(&self, identity: &Identity, generation: u64) -> Result<(), BucketError> {
        if let Some(seen) = &self.seen {
            seen.record(&self.seen_id(&identity.recipient())?, generation)?;
        }
        Ok(())
    }

    /// Reads, authenticates and decodes the segment of `generation`; it must have been
    /// sealed at its own location and carry its own generation.
    fn read_segment(&self, identity: &Identity, generation: u64) -> Result<Segment, BucketError> {
        let key = segment_key(generation);
        let segment = self.read_sealed_segment(identity, &key)?;
        if segment.generation != generation {
            return Err(BucketError::Manifest {
                key,
                source: ManifestError::Discontinuous {
                    expected: generation,
                    found: segment.generation,
                },
            });
        }
        Ok(segment)
    }

    /// Reads, authenticates (as sealed for its own location) and decodes the segment
    /// stored as `key`.
    pub fn read_sealed_segment(
        &self,
        identity: &Identity,
        key: &str,
    ) -> Result<Segment, BucketError> {
        let plaintext = self.open_object(identity, key)?;
        Segment::decode(&plaintext).map_err(|source| BucketError::Manifest {
            key: key.to_owned(),
            source,
        })
    }

    /// The whole plaintext of small sealed object `key` (a segment, a journal batch, a v1
    /// recipient list), authenticated chunk by chunk and checked against its location.
    pub(crate) fn open_object(
        &self,
        identity: &Identity,
        key: &str,
    ) -> Result<Zeroizing<Vec<u8>>, BucketError> {
        let format_err = |source| BucketError::Format {
            key: key.to_owned(),
            source,
        };
        let size = self
            .backend
            .stat(key)?
            .ok_or(BucketError::Backend(BackendError::NotFound {
                key: key.to_owned(),
            }))?;
        if size > MAX_SEGMENT_LEN {
            return Err(BucketError::TooLarge {
                key: key.to_owned(),
            });
        }
        let mut sealed = vec![0u8; size as usize];
        self.backend.read_range(key, 0, &mut [&mut sealed])?;
        let header_len = format::header_len(&sealed).map_err(format_err)?;
        if header_len > sealed.len() {
            return Err(format_err(FormatError::Truncated { needed: header_len }));
        }
        let opened = Header::parse(&sealed[..header_len])
            .and_then(|h| h.open(identity))
            .map_err(format_err)?;
        let location = self.backend.location(key)?;
        if opened.logical_path != location {
            return Err(BucketError::Moved {
                key: key.to_owned(),
                location,
                sealed_as: opened.logical_path,
            });
        }
        let layout = opened.layout;
        if layout.object_len() != size {
            return Err(BucketError::SizeMismatch {
                key: key.to_owned(),
                expected: layout.object_len(),
                actual: size,
            });
        }
        let mut plaintext = Zeroizing::new(vec![0u8; layout.plaintext_len as usize]);
        for index in 0..layout.chunk_count() {
            let len = layout.chunk_plain_len(index);
            let at = layout.chunk_offset(index) as usize;
            let sealed_chunk = &mut sealed[at..at + len + TAG_LEN];
            opened
                .chunks
                .open_chunk(index, layout.is_last(index), sealed_chunk)
                .map_err(format_err)?;
            let start = (index << layout.chunk_log2) as usize;
            plaintext[start..start + len].copy_from_slice(&sealed_chunk[..len]);
            sealed_chunk.fill(0);
        }
        Ok(plaintext)
    }

    /// Commits the next generation: `changes(manifest)` gives the operations to apply to
    /// the newest manifest (`Manifest::default()` for a new bucket), and is asked again
    /// on top of a newer one whenever another writer committed first. Without `identity`
    /// only a new bucket can be written (its first generation). `recipients` seal a new
    /// bucket's manifest; an existing one keeps its own unless `recipients` is
    /// [`Recipients::Replace`], which also writes a snapshot, so that no segment the new
    /// generation needs is sealed only to the old list.
    pub fn commit(
        &self,
        identity: Option<&Identity>,
        recipients: Recipients,
        changes: &mut dyn FnMut(&Manifest) -> Vec<Op>,
    ) -> Result<Committed, BucketError> {
        let mut current = match identity {
            Some(identity) => self.load(identity)?.unwrap_or_default(),
            None if self.has_manifest()? => return Err(BucketError::NeedsIdentity),
            None => Manifest::default(),
        };
        let snapshot_every = match recipients {
            Recipients::Replace(_) => 1,
            Recipients::ForNew(_) => SNAPSHOT_EVERY,
        };
        for attempt in 0..COMMIT_ATTEMPTS {
            match recipients {
                Recipients::Replace(list) => current.recipients = list.to_vec(),
                Recipients::ForNew(list) if current.recipients.is_empty() => {
                    current.recipients = list.to_vec()
                }
                Recipients::ForNew(_) => {}
            }
            let ops = changes(&current);
            let segment = current.next_segment(ops.clone(), snapshot_every);
            match self.write_segment(&segment) {
                Ok(()) => {
                    let mut after = current.clone();
                    for op in ops {
                        match op {
                            Op::Put(path, entry) => after.entries.insert(path, entry),
                            Op::Remove(path) => after.entries.remove(&path),
                        };
                    }
                    after.generation = segment.generation;
                    after.snapshot = segment.snapshot;
                    let referenced: std::collections::HashSet<[u8; 16]> =
                        after.entries.values().map(|e| e.object_id).collect();
                    let unreferenced = current
                        .entries
                        .values()
                        .filter(|e| !referenced.contains(&e.object_id))
                        .flat_map(|e| {
                            let header = e.detached.map(|_| e.header_key());
                            std::iter::once(e.object_key()).chain(header)
                        })
                        .collect();
                    self.after_commit(identity, &segment, current.snapshot);
                    return Ok(Committed {
                        manifest: after,
                        unreferenced,
                    });
                }
                Err(BucketError::Seal(SealError::Backend(BackendError::AlreadyExists {
                    ..
                }))) => {
                    tracing::debug!(
                        generation = segment.generation,
                        "another writer committed first; applying the changes on top"
                    );
                    let identity = identity.ok_or(BucketError::NeedsIdentity)?;
                    let newest = self.newest_from(current.generation + 1)?;
                    current = self.load_generation(identity, newest)?;
                    std::thread::sleep(jitter(attempt));
                }
                Err(e) => return Err(e),
            }
        }
        Err(BucketError::Contended)
    }

    /// Seals `segment` under its generation's key, failing if that key exists.
    fn write_segment(&self, segment: &Segment) -> Result<(), BucketError> {
        self.write_sealed_segment(&segment_key(segment.generation), segment)
    }

    /// Seals `segment` to its recipients as object `key`, failing if `key` exists.
    pub fn write_sealed_segment(&self, key: &str, segment: &Segment) -> Result<(), BucketError> {
        let bytes = Zeroizing::new(segment.encode());
        let options = SealOptions {
            recipients: segment.recipients.clone(),
            chunk_log2: format::DEFAULT_CHUNK_LOG2,
            overwrite: false,
        };
        let object = NewObject {
            key,
            source: std::path::Path::new(key),
            size: bytes.len() as u64,
            sealed_len: bytes.len() as u64,
            overwrite: false,
        };
        seal::write_object(
            &self.backend,
            &object,
            &mut bytes.as_slice(),
            &options,
            &|_| {},
        )?;
        Ok(())
    }

    /// Best-effort work after a commit: the head hint, the seen generation, and removing
    /// segments no reader needs (those before the previous snapshot, once a new snapshot
    /// is written). A failure here loses nothing: readers probe past a stale head.
    fn after_commit(&self, identity: Option<&Identity>, segment: &Segment, previous: u64) {
        let head = format!("{HEAD_TEXT}{}\n", segment.generation);
        let written = self.backend.create(HEAD_KEY, true).and_then(|mut out| {
            std::io::Write::write_all(&mut out, head.as_bytes()).map_err(|e| BackendError::Io {
                context: format!("write {HEAD_KEY}"),
                source: e,
            })?;
            out.commit()
        });
        if let Err(e) = written {
            tracing::warn!("manifest committed, but its head hint was not updated: {e}");
        }
        if let Some(identity) = identity {
            if let Err(e) = self.record_seen(identity, segment.generation) {
                tracing::warn!("{e}");
            }
        }
        if segment.kind == Kind::Snapshot && previous > 0 {
            let oldest = previous.saturating_sub(SNAPSHOT_EVERY).max(1);
            for generation in oldest..previous {
                if let Err(e) = self.backend.delete(&segment_key(generation)) {
                    tracing::debug!("old manifest segment {generation} not removed: {e}");
                }
            }
        }
    }
}

/// The message of [`BucketError::Reseal`]: how many failed, and each.
fn reseal_failures(failures: &[String]) -> String {
    format!(
        "{} objects could not be sealed again, so that batch was not journaled (run again to \
         resume): {}",
        failures.len(),
        failures.join("; ")
    )
}

/// How long to wait before the next commit attempt: a few random milliseconds, more
/// after each lost race, so racing writers spread out.
fn jitter(attempt: u32) -> Duration {
    let mut random = [0u8; 2];
    getrandom::getrandom(&mut random).expect("OS random number generator");
    let spread = 5u64 << attempt.min(6);
    Duration::from_millis(u64::from(u16::from_le_bytes(random)) % spread)
}

#[cfg(test)]
mod tests;
