//! One sealed object opened for reading: its authenticated layout and chunk keys.

use std::sync::Arc;

use rayon::prelude::*;

use super::VaultError;
use crate::backend::Backend;
use crate::cache::ChunkSource;
use crate::format::{self, Header, Layout, OpenedFile, TAG_LEN};
use crate::keys::Identity;

/// A sealed object whose header has been authenticated with our identity and whose size
/// matches the header. Only then is it shown as a file.
pub struct SealedObject {
    id: u64,
    key: String,
    file_id: [u8; 16],
    opened: OpenedFile,
    backend: Arc<dyn Backend>,
}

impl SealedObject {
    /// Reads and opens the header of object `key` (listed with `size` bytes), checks that
    /// the key ends with the sealed logical path and that the size matches the header.
    /// `id` names the object in the chunk cache.
    pub fn open(
        backend: Arc<dyn Backend>,
        key: &str,
        size: u64,
        identity: &Identity,
        id: u64,
    ) -> Result<Self, VaultError> {
        let header = read_header(backend.as_ref(), key, size)?;
        let opened = header.open(identity).map_err(|source| VaultError::Format {
            key: key.to_owned(),
            source,
        })?;
        let path = &opened.logical_path;
        if !(key == path || key.ends_with(&format!("/{path}"))) {
            return Err(VaultError::PathMismatch {
                key: key.to_owned(),
                sealed_as: path.clone(),
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
        Ok(SealedObject {
            id,
            key: key.to_owned(),
            file_id: header.file_id(),
            opened,
            backend,
        })
    }

    /// The authenticated layout (plaintext size, chunk size).
    pub fn layout(&self) -> &Layout {
        &self.opened.layout
    }

    /// The object's key in the backend.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The random file id from the header.
    pub fn file_id(&self) -> [u8; 16] {
        self.file_id
    }
}

/// Fetches the header: a first read of up to 4 KiB, then the rest if it is longer.
fn read_header(backend: &dyn Backend, key: &str, size: u64) -> Result<Header, VaultError> {
    let format_err = |source| VaultError::Format {
        key: key.to_owned(),
        source,
    };
    let first = size.min(4096) as usize;
    let mut buf = vec![0u8; first];
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
    Header::parse(&buf).map_err(format_err)
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

    fn load(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), VaultError> {
        let layout = &self.opened.layout;
        self.backend
            .read_range(&self.key, layout.chunk_offset(first), bufs)?;
        let open = |(i, buf): (usize, &mut &mut [u8])| {
            let index = first + i as u64;
            self.opened
                .chunks
                .open_chunk(index, layout.is_last(index), buf)
                .map_err(|source| VaultError::Format {
                    key: self.key.clone(),
                    source,
                })
        };
        if bufs.len() > 1 {
            bufs.par_iter_mut().enumerate().try_for_each(open)
        } else {
            bufs.iter_mut().enumerate().try_for_each(open)
        }
    }
}
