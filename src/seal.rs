//! Sealing files and trees into a bucket: plan which files go where, then stream each one
//! through the format into a backend object, chunk by chunk, in locked memory.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{validate_key, Backend, BackendError};
use crate::cache::{CacheError, LockedRegion};
use crate::format::{self, SealRandomness, TAG_LEN};
use crate::keys::Recipient;

/// Errors in sealing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot be sealed under this name: {source}")]
    BadName {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    #[error("{first} and {second} would both be sealed as {logical_path:?}")]
    Duplicate {
        first: PathBuf,
        second: PathBuf,
        logical_path: String,
    },
    #[error("{path}: changed size while being sealed; nothing was written")]
    ChangedWhileSealing { path: PathBuf },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: format::FormatError,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Memory(#[from] CacheError),
}

/// One file to seal: where it is and its logical path (its key below the destination; the
/// header binds the object's whole location in the bucket, see [`Backend::location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealJob {
    /// The plaintext file.
    pub source: PathBuf,
    /// Path relative to the seal root; the object's key below the destination.
    pub logical_path: String,
    /// Plaintext size when planned.
    pub size: u64,
    /// Modification time when planned: seconds since the epoch and nanoseconds.
    pub modified: (i64, u32),
}

/// What the sealer does with each file.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Who can open the sealed files.
    pub recipients: Vec<Recipient>,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Replace objects that already exist instead of failing on them.
    pub overwrite: bool,
}

/// Lists the files under `sources`. A file is sealed as its name; a directory's files as
/// their paths relative to that directory. Symlinks and special files are skipped with a
/// warning; names that are not valid object keys and duplicate logical paths are errors.
pub fn plan(sources: &[PathBuf]) -> Result<Vec<SealJob>, SealError> {
    let mut jobs: Vec<SealJob> = Vec::new();
    for source in sources {
        let io = |e: std::io::Error| SealError::Io {
            path: source.clone(),
            source: e,
        };
        let meta = std::fs::symlink_metadata(source).map_err(io)?;
        let base = if meta.is_dir() {
            source.clone()
        } else {
            source.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        for entry in walkdir::WalkDir::new(source)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| io(e.into()))?;
            let path = entry.path();
            if entry.file_type().is_dir() {
                continue;
            }
            if !entry.file_type().is_file() {
                tracing::warn!(path = %path.display(), "skipping: not a regular file (symlink or special)");
                continue;
            }
            let relative = path.strip_prefix(&base).expect("below base");
            let bad_name = |e| SealError::BadName {
                path: path.to_owned(),
                source: e,
            };
            let logical_path = relative
                .to_str()
                .ok_or_else(|| {
                    bad_name(BackendError::BadKey {
                        key: relative.to_string_lossy().into_owned(),
                        reason: "not UTF-8",
                    })
                })?
                .to_owned();
            validate_key(&logical_path).map_err(bad_name)?;
            let metadata = entry.metadata().map_err(|e| io(e.into()))?;
            jobs.push(SealJob {
                source: path.to_owned(),
                logical_path,
                size: metadata.len(),
                modified: (
                    std::os::unix::fs::MetadataExt::mtime(&metadata),
                    std::os::unix::fs::MetadataExt::mtime_nsec(&metadata) as u32,
                ),
            });
        }
    }
    jobs.sort_by(|a, b| a.logical_path.cmp(&b.logical_path));
    for pair in jobs.windows(2) {
        if pair[0].logical_path == pair[1].logical_path {
            return Err(SealError::Duplicate {
                first: pair[0].source.clone(),
                second: pair[1].source.clone(),
                logical_path: pair[0].logical_path.clone(),
            });
        }
    }
    Ok(jobs)
}

/// What [`seal_file`] did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A new object was written.
    Written,
    /// An object of exactly the size this file seals to was already there (a re-run
    /// after an interruption); it was kept. Objects only appear complete, so it is whole.
    AlreadyThere,
}

/// Seals one file into `backend` under its logical path, calling `progress(bytes)` as
/// plaintext is consumed. The plaintext passes only through a locked buffer. The object
/// appears only once complete; on any error nothing is left behind. Without `overwrite`,
/// an existing object of the expected size is kept ([`Sealed::AlreadyThere`]) and one of
/// another size is an error.
pub fn seal_file(
    backend: &Arc<dyn Backend>,
    job: &SealJob,
    options: &SealOptions,
    progress: &dyn Fn(u64),
) -> Result<Sealed, SealError> {
    let io = |e| SealError::Io {
        path: job.source.clone(),
        source: e,
    };
    let mut input = File::open(&job.source).map_err(io)?;
    let size = input.metadata().map_err(io)?.len();
    seal_stream(
        backend,
        &job.source,
        &job.logical_path,
        size,
        &mut input,
        options,
        progress,
    )
}

/// Seals `data` (plaintext already in memory) into `backend` as `logical_path`, copying it
/// chunk by chunk into a locked buffer to encrypt. The object appears only once complete;
/// an existing one is kept as [`seal_file`] describes.
pub fn seal_bytes(
    backend: &Arc<dyn Backend>,
    logical_path: &str,
    data: &[u8],
    options: &SealOptions,
) -> Result<Sealed, SealError> {
    let mut input = data;
    seal_stream(
        backend,
        Path::new(logical_path),
        logical_path,
        data.len() as u64,
        &mut input,
        options,
        &|_| {},
    )
}

/// Seals exactly `size` bytes read from `input`; `source` names the input in errors.
/// Keeps an existing object as [`seal_file`] describes.
fn seal_stream(
    backend: &Arc<dyn Backend>,
    source: &Path,
    logical_path: &str,
    size: u64,
    input: &mut dyn Read,
    options: &SealOptions,
    progress: &dyn Fn(u64),
) -> Result<Sealed, SealError> {
    if !options.overwrite {
        let expected = format::seal_header(
            &options.recipients,
            &backend.location(logical_path)?,
            size,
            options.chunk_log2,
            &SealRandomness::generate(options.recipients.len()),
        )
        .map_err(|e| SealError::Format {
            path: source.to_owned(),
            source: e,
        })?
        .1
        .layout
        .object_len();
        match backend.stat(logical_path)? {
            Some(len) if len == expected => {
                progress(size);
                return Ok(Sealed::AlreadyThere);
            }
            Some(_) => {
                return Err(BackendError::AlreadyExists {
                    key: logical_path.to_owned(),
                }
                .into())
            }
            None => {}
        }
    }
    let object = NewObject {
        key: logical_path,
        source,
        size,
        sealed_len: size,
        overwrite: options.overwrite,
    };
    write_object(backend, &object, input, options, progress)?;
    Ok(Sealed::Written)
}

/// One object for [`write_object`] to write.
pub struct NewObject<'a> {
    /// Its key in the backend; the header binds the key's location.
    pub key: &'a str,
    /// Names the input in errors.
    pub source: &'a Path,
    /// Bytes the input holds.
    pub size: u64,
    /// Plaintext bytes sealed: `size`, or more when padded (zeros follow the input).
    pub sealed_len: u64,
    /// Replace an object already under `key`; otherwise one there fails the write with
    /// [`BackendError::AlreadyExists`], atomically (the backend's create-if-absent).
    pub overwrite: bool,
}

/// What a sealed object's manifest entry binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The random file id in its header.
    pub file_id: [u8; 16],
    /// BLAKE3 of its whole header.
    pub header_hash: [u8; 32],
    /// Bytes of the object.
    pub object_len: u64,
}

/// Seals `object.size` bytes of `input`, then zeros up to `object.sealed_len`, into a new
/// object, calling `progress(bytes)` as input is consumed. The plaintext passes only
/// through a locked buffer; the object appears only once complete, and on any error
/// nothing is left behind.
pub fn write_object(
    backend: &Arc<dyn Backend>,
    object: &NewObject,
    input: &mut dyn Read,
    options: &SealOptions,
    progress: &dyn Fn(u64),
) -> Result<Written, SealError> {
    let source = object.source;
    let io = |e| SealError::Io {
        path: source.to_owned(),
        source: e,
    };
    let randomness = SealRandomness::generate(options.recipients.len());
    let (header, opened) = format::seal_header(
        &options.recipients,
        &backend.location(object.key)?,
        object.sealed_len,
        options.chunk_log2,
        &randomness,
    )
    .map_err(|e| SealError::Format {
        path: source.to_owned(),
        source: e,
    })?;
    let mut written = Written {
        object_len: 0,
        file_id: format::Header::parse(&header)
            .map_err(|e| SealError::Format {
                path: source.to_owned(),
                source: e,
            })?
            .file_id(),
        header_hash: *blake3::hash(&header).as_bytes(),
    };
    let layout = opened.layout;
    written.object_len = layout.object_len();
    let mut output = backend.create_sized(object.key, object.overwrite, layout.object_len())?;
    let key = object.key;
    let write_err = |e| {
        SealError::Backend(BackendError::Io {
            context: format!("write {key:?}"),
            source: e,
        })
    };
    output.write_all(&header).map_err(write_err)?;

    let region = Arc::new(LockedRegion::new(layout.chunk_size() + TAG_LEN)?);
    let mut buf = LockedRegion::carve(&region, layout.chunk_size() + TAG_LEN, 1, 0, 0)
        .pop()
        .expect("one buffer");
    let mut consumed = 0u64;
    for index in 0..layout.chunk_count() {
        let len = layout.chunk_plain_len(index);
        let from_input = (object.size - consumed).min(len as u64) as usize;
        input
            .read_exact(&mut buf[..from_input])
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => SealError::ChangedWhileSealing {
                    path: source.to_owned(),
                },
                _ => io(e),
            })?;
        buf[from_input..len].fill(0);
        consumed += from_input as u64;
        opened
            .chunks
            .seal_chunk(index, layout.is_last(index), &mut buf[..len + TAG_LEN]);
        output.write_all(&buf[..len + TAG_LEN]).map_err(write_err)?;
        progress(from_input as u64);
    }
    if input.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(SealError::ChangedWhileSealing {
            path: source.to_owned(),
        });
    }
    output.commit()?;
    Ok(written)
}
