//! The `.volumes` directory (`-o volumes`): one virtual NIfTI-1 file per DICOM series of
//! the bucket, or a text file saying why the series is no volume, and the assembly of a
//! volume's bytes in locked memory from its decrypted slices.
//!
//! Invariants: a volume's plaintext exists only in one [`LockedBuf`] (zeroized when the
//! vault drops it: see `Vault::release`) and in the wiped, locked heap while a slice is
//! parsed; error texts name tags, counts and spacings, never patient attributes.

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::{Ino, SealedObject, VaultError};
use crate::cache::{ChunkCache, LockedBuf, LockedRegion, MAX_RUN};
use crate::dicom::parse::{parse_limit, read_file, read_header, DicomFile};
use crate::dicom::volume::{self, Dtype, Slices, VolumeError, VolumePlan, HEADER_LEN};
use crate::gpu::abi::{ElementType, VolumeShape};

/// The name of the virtual directory at the root.
pub const VOLUMES_DIR: &str = ".volumes";

/// A file of `.volumes`.
pub enum Virtual {
    /// A series that forms a volume: `<SeriesInstanceUID>.nii`.
    Volume {
        /// `.volumes/<uid>.nii`, for audit records.
        path: String,
        /// The series' SeriesInstanceUID.
        series: String,
        /// Members are inodes of the slice files.
        plan: VolumePlan<Ino>,
    },
    /// A series that does not: `<SeriesInstanceUID>.nii.error`, its content the reason.
    Error {
        /// `.volumes/<uid>.nii.error`.
        path: String,
        /// The reason and a newline.
        text: String,
    },
}

impl Virtual {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Virtual::Volume { plan, .. } => plan.len(),
            Virtual::Error { text, .. } => text.len() as u64,
        }
    }

    /// Its path in the mount, relative to the root.
    pub fn path(&self) -> &str {
        match self {
            Virtual::Volume { path, .. } | Virtual::Error { path, .. } => path,
        }
    }

    /// The voxels' type and shape (slices, rows, columns) for GPU clients; `None` for an
    /// error file or a voxel type the GPU ABI has no code for.
    pub fn gpu_shape(&self) -> Option<VolumeShape> {
        let Virtual::Volume { plan, .. } = self else {
            return None;
        };
        let dtype = match plan.dtype {
            Dtype::Stored { bytes, signed } => ElementType::integer(bytes, signed)?,
            Dtype::Float32 => ElementType::F32,
        };
        Some(VolumeShape {
            dtype,
            shape: [
                plan.slices.len() as u64,
                u64::from(plan.format.rows),
                u64::from(plan.format.columns),
            ],
        })
    }

    /// What audit records of this file add: the series and the slice count.
    pub fn audit_detail(&self) -> serde_json::Value {
        match self {
            Virtual::Volume { series, plan, .. } => serde_json::json!({
                "volume": { "series": series, "slices": plan.slices.len(), "files": plan.members.len() }
            }),
            Virtual::Error { .. } => serde_json::json!({ "volume": "error" }),
        }
    }
}

/// A file name for a series: its UID with anything but `[0-9A-Za-z.-]` replaced by `_`.
fn file_stem(series: &str) -> String {
    series
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads the header of every file in `files` (in parallel) and groups the DICOM images by
/// series into `.volumes` entries: (file name, entry). Files that are not DICOM images are
/// skipped (logged at debug level).
pub fn entries(cache: &ChunkCache, files: Vec<(Ino, Arc<SealedObject>)>) -> Vec<(String, Virtual)> {
    let described: Vec<_> = files
        .par_iter()
        .filter_map(|(ino, object)| {
            let header = read_sealed(cache, object, true);
            crate::harden::scrub_stack();
            match header {
                Ok(file) => Some((*ino, volume::describe(&file))),
                Err(e) => {
                    tracing::debug!(key = object.key(), "not a volume slice: {e}");
                    None
                }
            }
        })
        .collect();
    let mut series: BTreeMap<String, Result<Vec<(Ino, Slices)>, VolumeError>> = BTreeMap::new();
    for (ino, result) in described {
        match result {
            Ok(None) => {}
            Ok(Some(slices)) => {
                let members = series
                    .entry(slices.series.clone())
                    .or_insert(Ok(Vec::new()));
                if let Ok(members) = members {
                    members.push((ino, slices));
                }
            }
            Err((uid, error)) => {
                series.insert(uid, Err(error));
            }
        }
    }
    series
        .into_iter()
        .map(|(uid, members)| {
            let stem = file_stem(&uid);
            match members.and_then(volume::plan) {
                Ok(plan) => {
                    let name = format!("{stem}.nii");
                    let entry = Virtual::Volume {
                        path: format!("{VOLUMES_DIR}/{name}"),
                        series: uid,
                        plan,
                    };
                    (name, entry)
                }
                Err(error) => {
                    tracing::debug!(series = uid.as_str(), "series is no volume: {error}");
                    let name = format!("{stem}.nii.error");
                    let entry = Virtual::Error {
                        path: format!("{VOLUMES_DIR}/{name}"),
                        text: format!("{error}\n"),
                    };
                    (name, entry)
                }
            }
        })
        .collect()
}

/// Parses a sealed DICOM file, read through the cache: the header only, or the whole file.
fn read_sealed(
    cache: &ChunkCache,
    object: &SealedObject,
    header_only: bool,
) -> Result<DicomFile, VaultError> {
    let reader = CachedReader {
        cache,
        object,
        offset: 0,
        run: if header_only { 1 } else { MAX_RUN as u64 },
        loaded_until: 0,
    };
    let limit = parse_limit(usize::try_from(object.size()).unwrap_or(usize::MAX));
    crate::heap::with_allocation_limit(limit, || {
        let len = object.size();
        if header_only {
            read_header(reader, len)
        } else {
            read_file(reader, len)
        }
    })
    .map_err(|e| assembly(object.key(), e))
}

fn assembly(key: &str, error: impl std::fmt::Display) -> VaultError {
    VaultError::Volume(format!("{key}: {error}"))
}

/// Reads an opened object's plaintext from the start through the mount's cache: chunks
/// already decrypted (the last one, authenticated at open; those read at listing) are not
/// fetched or decrypted again, and plaintext leaves locked memory only for `read`'s buffer.
struct CachedReader<'a> {
    cache: &'a ChunkCache,
    object: &'a SealedObject,
    offset: u64,
    /// Chunks loaded with one backend request when the next one is not known to be
    /// cached: 1 for a header, [`MAX_RUN`] for a whole file.
    run: u64,
    /// Chunks before this one were loaded (or found) by an earlier run.
    loaded_until: u64,
}

impl std::io::Read for CachedReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let layout = *self.object.layout();
        if self.offset >= self.object.size() || out.is_empty() {
            return Ok(0);
        }
        let index = layout.chunk_of(self.offset);
        let from = (self.offset - index * layout.chunk_size() as u64) as usize;
        if index >= self.loaded_until && self.run > 1 {
            self.loaded_until = (index + self.run).min(layout.chunk_count());
            self.cache
                .with_chunks(self.object, index..self.loaded_until, |_, _| {})
                .map_err(std::io::Error::other)?;
        }
        let mut copied = 0;
        self.cache
            .with_chunks(self.object, index..index + 1, |_, plain| {
                copied = out.len().min(plain.len() - from);
                out[..copied].copy_from_slice(&plain[from..from + copied]);
            })
            .map_err(std::io::Error::other)?;
        self.offset += copied as u64;
        Ok(copied)
    }
}

/// Builds a volume's bytes (header and voxels) in a new locked buffer; `objects[m]` is the
/// opened object of `plan.members[m]`. Slice files are decrypted and decoded in parallel.
pub fn assemble(
    cache: &ChunkCache,
    plan: &VolumePlan<Ino>,
    objects: &[Arc<SealedObject>],
) -> Result<LockedBuf, VaultError> {
    let len = usize::try_from(plan.len()).map_err(|_| VaultError::Volume("too large".into()))?;
    let region = Arc::new(LockedRegion::new(len)?);
    let mut buf = LockedRegion::carve(&region, len, 1, 0, 0)
        .pop()
        .expect("one buffer");
    let (header, voxels) = buf.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&plan.header());
    let mut per_member: Vec<Vec<(usize, &mut [u8])>> = objects.iter().map(|_| Vec::new()).collect();
    for (k, out) in voxels.chunks_mut(plan.slice_len()).enumerate() {
        per_member[plan.slices[k].0].push((k, out));
    }
    per_member
        .into_par_iter()
        .zip(objects)
        .try_for_each(|(slices, object)| {
            let file = read_sealed(cache, object, false);
            crate::harden::scrub_stack();
            let file = file?;
            for (k, out) in slices {
                plan.decode_into(k, &file, out)
                    .map_err(|e| assembly(object.key(), e))?;
            }
            Ok::<_, VaultError>(())
        })?;
    Ok(buf)
}
