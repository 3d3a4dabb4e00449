//! One sealed object opened for reading: its authenticated layout and chunk keys.

use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use super::VaultError;
use crate::backend::{Arrival, Backend};
use crate::cache::ChunkSource;
use crate::format::{self, Header, Layout, OpenedFile, TAG_LEN};
use crate::keys::Identity;
use crate::manifest::Entry;

/// A sealed object whose header has been authenticated with our identity and whose size
/// matches the header. Only then is it shown as a file.
pub struct SealedObject {
    id: u64,
    key: String,
    /// What audit records call it: the key, or a v2 file's path in the manifest.
    path: String,
    file_id: [u8; 16],
    opened: OpenedFile,
    recipients: usize,
    /// Plaintext bytes shown: the header's, or a manifest entry's (less when padded).
    size: u64,
    backend: Arc<dyn Backend>,
}

impl SealedObject {
    /// Reads the first `first_read` bytes of object `key` (listed with `size` bytes; all of
    /// it if smaller, and more if the header is longer) and opens the header; checks that
    /// the object lies exactly where it was sealed to ([`Backend::location`] of `key` is
    /// the sealed path) and that the size matches the header.
    /// `id` names the object in the chunk cache. With `bound` (a v2 manifest entry), the
    /// header must be the one the entry names, by hash and file id, and the entry's size
    /// is shown; a detached header (after `share`) is read from its own object, and the
    /// chunks from `key` after its original header. Returns the bytes read with the object,
    /// for [`SealedObject::prefetched`].
    pub fn open(
        backend: Arc<dyn Backend>,
        key: &str,
        size: u64,
        identity: &Identity,
        id: u64,
        first_read: u64,
        bound: Option<&Entry>,
    ) -> Result<(Self, Vec<u8>), VaultError> {
        let detached = bound.and_then(|entry| entry.detached);
        let (header, mut first_bytes) = match detached {
            Some(_) => {
                let header_key = bound.map(Entry::header_key).unwrap_or_default();
                let header_len = backend.stat(&header_key)?.ok_or_else(|| {
                    VaultError::Backend(crate::backend::BackendError::NotFound {
                        key: header_key.clone(),
                    })
                })?;
                read_first(backend.as_ref(), &header_key, header_len, header_len)?
            }
            None => read_first(backend.as_ref(), key, size, first_read)?,
        };
        if let Some(entry) = bound {
            let header_len =
                format::header_len(&first_bytes).map_err(|source| VaultError::Format {
                    key: key.to_owned(),
                    source,
                })?;
            let hash = blake3::hash(&first_bytes[..header_len]);
            if *hash.as_bytes() != entry.header_hash || header.file_id() != entry.file_id {
                return Err(VaultError::ManifestMismatch {
                    key: key.to_owned(),
                });
            }
        }
        let mut opened = header.open(identity).map_err(|source| VaultError::Format {
            key: key.to_owned(),
            source,
        })?;
        if let Some(detached) = detached {
            // The chunks follow the object's original header; nothing of them was read yet.
            opened.layout.header_len = detached.chunks_at;
            first_bytes.clear();
        }
        let location = backend.location(key)?;
        if opened.logical_path != location {
            return Err(VaultError::PathMismatch {
                key: key.to_owned(),
                location,
                sealed_as: opened.logical_path.clone(),
            });
        }
        let expected = opened.layout.object_len();
        if size != expected {
            return Err(VaultError::SizeMismatch {
                key: key.to_owned(),
                expected,
                actual: size,
            });
        }
        let plaintext_len = opened.layout.plaintext_len;
        let shown = bound.map_or(plaintext_len, |entry| entry.size);
        if shown > plaintext_len {
            return Err(VaultError::ManifestMismatch {
                key: key.to_owned(),
            });
        }
        let object = SealedObject {
            id,
            key: key.to_owned(),
            path: key.to_owned(),
            file_id: header.file_id(),
            recipients: header.recipient_count(),
            size: shown,
            opened,
            backend,
        };
        Ok((object, first_bytes))
    }

    /// The chunks lying wholly within `first_bytes` (the object's bytes from offset 0, as
    /// [`SealedObject::open`] returned them), with a source that loads them from there
    /// instead of the backend.
    pub fn prefetched<'a>(&'a self, first_bytes: &'a [u8]) -> (Prefetched<'a>, Range<u64>) {
        let layout = &self.opened.layout;
        let within = (0..layout.chunk_count())
            .take_while(|&i| {
                layout.chunk_offset(i) + self.sealed_len(i) as u64 <= first_bytes.len() as u64
            })
            .count() as u64;
        let source = Prefetched {
            object: self,
            first_bytes,
        };
        (source, 0..within)
    }

    /// Authenticates and decrypts chunks `first..first + bufs.len()` in place.
    fn open_chunks(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), VaultError> {
        let chunks = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| (first + i as u64, &mut **buf))
            .collect();
        self.open_in_place(chunks)
    }

    /// Authenticates and decrypts each `(chunk index, sealed chunk)` in place, in parallel
    /// when there are several.
    fn open_in_place(&self, mut chunks: Vec<(u64, &mut [u8])>) -> Result<(), VaultError> {
        let open = |(index, buf): &mut (u64, &mut [u8])| self.open_chunk(*index, None, buf);
        if chunks.len() > 1 {
            chunks.par_iter_mut().try_for_each(open)
        } else {
            chunks.iter_mut().try_for_each(open)
        }
    }

    /// Opens chunk `index` from `sealed` into `buf`, or in place in `buf` without `sealed`.
    fn open_chunk(
        &self,
        index: u64,
        sealed: Option<&[u8]>,
        buf: &mut [u8],
    ) -> Result<(), VaultError> {
        let last = self.opened.layout.is_last(index);
        let chunks = &self.opened.chunks;
        match sealed {
            Some(sealed) => chunks.open_chunk_into(index, last, sealed, buf),
            None => chunks.open_chunk(index, last, buf),
        }
        .map_err(|source| VaultError::Format {
            key: self.key.clone(),
            source,
        })
    }

    /// The authenticated layout (plaintext size, chunk size).
    pub fn layout(&self) -> &Layout {
        &self.opened.layout
    }

    /// Plaintext bytes of the file as shown: reads end here, even where padding follows.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The same object, named `path` in audit records (a v2 file's path).
    pub fn with_path(mut self, path: String) -> Self {
        self.path = path;
        self
    }

    /// What audit records call the file.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The object's key in the backend.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The random file id from the header.
    pub fn file_id(&self) -> [u8; 16] {
        self.file_id
    }

    /// How many recipients the file is sealed to.
    pub fn recipients(&self) -> usize {
        self.recipients
    }
}

/// Fetches the first `first_read` bytes (at least 4 KiB, at most `size`), then the rest of
/// the header if it is longer, and parses the header.
fn read_first(
    backend: &dyn Backend,
    key: &str,
    size: u64,
    first_read: u64,
) -> Result<(Header, Vec<u8>), VaultError> {
    let format_err = |source| VaultError::Format {
        key: key.to_owned(),
        source,
    };
    let mut buf = vec![0u8; size.min(first_read.max(4096)) as usize];
    backend.read_range(key, 0, &mut [&mut buf])?;
    let len = format::header_len(&buf).map_err(format_err)?;
    if len as u64 > size {
        return Err(format_err(format::FormatError::Truncated { needed: len }));
    }
    if len > buf.len() {
        let mut rest = vec![0u8; len - buf.len()];
        backend.read_range(key, buf.len() as u64, &mut [&mut rest])?;
        buf.extend_from_slice(&rest);
    }
    let header = Header::parse(&buf).map_err(format_err)?;
    Ok((header, buf))
}

impl ChunkSource for SealedObject {
    type Error = VaultError;

    fn object_id(&self) -> u64 {
        self.id
    }

    fn sealed_len(&self, index: u64) -> usize {
        self.opened.layout.chunk_plain_len(index) + TAG_LEN
    }

    fn plain_len(&self, index: u64) -> usize {
        self.opened.layout.chunk_plain_len(index)
    }

    /// Chunks that a remote backend receives are opened as they arrive, straight from its
    /// receive buffer; those a backend read into their slots directly are opened after the
    /// read, in parallel.
    fn load(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), VaultError> {
        let offset = self.opened.layout.chunk_offset(first);
        let arrival = OpenOnArrival {
            object: self,
            first,
            outcomes: (0..bufs.len()).map(|_| Mutex::new(None)).collect(),
        };
        self.backend
            .read_range_arriving(&self.key, offset, bufs, &arrival)?;
        let mut pending = Vec::new();
        for ((i, buf), outcome) in bufs.iter_mut().enumerate().zip(arrival.outcomes) {
            match outcome.into_inner() {
                Some(result) => result?,
                None => pending.push((first + i as u64, &mut **buf)),
            }
        }
        self.open_in_place(pending)
    }
}

/// The [`Arrival`] of a chunk load: opens each chunk as the backend completes it.
struct OpenOnArrival<'a> {
    object: &'a SealedObject,
    first: u64,
    /// Per buffer, the outcome of opening it; `None` while the backend has not said.
    outcomes: Vec<Mutex<Option<Result<(), VaultError>>>>,
}

impl Arrival for OpenOnArrival<'_> {
    fn complete(&self, index: usize, bytes: Option<&[u8]>, buf: &mut [u8]) {
        let chunk = self.first + index as u64;
        let outcome = self.object.open_chunk(chunk, bytes, buf);
        *self.outcomes[index].lock() = Some(outcome);
    }
}

/// A [`ChunkSource`] for the chunks of an object that its first read already fetched; see
/// [`SealedObject::prefetched`]. Loading a chunk beyond those bytes is a short read.
pub struct Prefetched<'a> {
    object: &'a SealedObject,
    first_bytes: &'a [u8],
}

impl ChunkSource for Prefetched<'_> {
    type Error = VaultError;

    fn object_id(&self) -> u64 {
        self.object.object_id()
    }

    fn sealed_len(&self, index: u64) -> usize {
        self.object.sealed_len(index)
    }

    fn plain_len(&self, index: u64) -> usize {
        self.object.plain_len(index)
    }

    fn load(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), VaultError> {
        let mut at = self.object.opened.layout.chunk_offset(first) as usize;
        for buf in bufs.iter_mut() {
            let bytes = self.first_bytes.get(at..at + buf.len()).ok_or_else(|| {
                VaultError::Backend(crate::backend::BackendError::ShortRead {
                    key: self.object.key.clone(),
                    end: (at + buf.len()) as u64,
                })
            })?;
            buf.copy_from_slice(bytes);
            at += buf.len();
        }
        self.object.open_chunks(first, bufs)
    }
}

/// The plaintext of a sealed object as a [`std::io::Read`], decrypted chunk by chunk into
/// one locked buffer; it ends at [`SealedObject::size`]. The last chunk is authenticated
/// when the reader is made, so a truncated or extended object fails before any byte.
pub struct Plaintext<'a> {
    object: &'a SealedObject,
    buf: crate::cache::LockedBuf,
    /// The chunk in `buf` and how much of it was handed out.
    chunk: Option<u64>,
    used: usize,
    /// Plaintext bytes handed out so far.
    position: u64,
}

impl<'a> Plaintext<'a> {
    /// A reader of `object` from its first byte.
    pub fn new(object: &'a SealedObject) -> Result<Self, VaultError> {
        let layout = object.layout();
        let slot = layout.chunk_size() + TAG_LEN;
        let region = Arc::new(crate::cache::LockedRegion::new(slot)?);
        let mut buf = crate::cache::LockedRegion::carve(&region, slot, 1, 0, 0)
            .pop()
            .expect("one buffer");
        let last = layout.chunk_count() - 1;
        object.load(last, &mut [&mut buf[..object.sealed_len(last)]])?;
        Ok(Plaintext {
            object,
            buf,
            chunk: None,
            used: 0,
            position: 0,
        })
    }
}

impl std::io::Read for Plaintext<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let object = self.object;
        let left = object.size() - self.position;
        if left == 0 || out.is_empty() {
            return Ok(0);
        }
        let index = object.layout().chunk_of(self.position);
        if self.chunk != Some(index) {
            let sealed = &mut self.buf[..object.sealed_len(index)];
            object
                .load(index, &mut [sealed])
                .map_err(std::io::Error::other)?;
            self.chunk = Some(index);
            self.used = 0;
        }
        let available = (object.plain_len(index) - self.used).min(left as usize);
        let len = available.min(out.len());
        out[..len].copy_from_slice(&self.buf[self.used..self.used + len]);
        self.used += len;
        self.position += len as u64;
        Ok(len)
    }
}
