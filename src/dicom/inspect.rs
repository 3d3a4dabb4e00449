//! `smpfs inspect`: a sealed DICOM file's header attributes, decrypted chunk by chunk into
//! one locked buffer, parsed up to the pixel data and printed to standard output in a
//! dcmdump-like text form (dicom-dump).
//!
//! Invariants: the file's length is authenticated (last chunk first) before anything is
//! parsed; no chunk past the pixel data is decrypted once the parser stops; plaintext goes
//! nowhere but standard output.

use std::io::Read;
use std::sync::Arc;

use dicom_dump::{ColorMode, DumpOptions};

use super::parse::{parse_limit, read_header, ParseError};
use crate::cache::{CacheError, ChunkSource, LockedBuf, LockedRegion};
use crate::format::TAG_LEN;
use crate::vault::{SealedObject, VaultError};

/// Columns of the dump; longer values are cut.
const DUMP_WIDTH: u32 = 120;

/// Errors in inspecting a sealed file.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Sealed(#[from] VaultError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Memory(#[from] CacheError),
    #[error("writing the dump: {0}")]
    Output(#[from] std::io::Error),
}

/// Reads a sealed object's plaintext in order through one locked chunk buffer, decrypting
/// each chunk only when the reader reaches it.
pub struct SealedReader<'a> {
    object: &'a SealedObject,
    buf: LockedBuf,
    next: u64,
    pos: usize,
    filled: usize,
}

impl<'a> SealedReader<'a> {
    /// Authenticates the object's last chunk (so its length is trusted) and returns a
    /// reader positioned at byte 0.
    pub fn new(object: &'a SealedObject) -> Result<Self, InspectError> {
        let layout = *object.layout();
        let slot = layout.chunk_size() + TAG_LEN;
        let region = Arc::new(LockedRegion::new(slot)?);
        let mut buf = LockedRegion::carve(&region, slot, 1, 0, 0)
            .pop()
            .expect("one buffer");
        let last = layout.chunk_count() - 1;
        object.load(last, &mut [&mut buf[..object.sealed_len(last)]])?;
        Ok(SealedReader {
            object,
            buf,
            next: 0,
            pos: 0,
            filled: 0,
        })
    }
}

impl Read for SealedReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.filled {
            if self.next == self.object.layout().chunk_count() {
                return Ok(0);
            }
            let index = self.next;
            let sealed = self.object.sealed_len(index);
            self.object
                .load(index, &mut [&mut self.buf[..sealed]])
                .map_err(std::io::Error::other)?;
            self.next += 1;
            self.pos = 0;
            self.filled = self.object.plain_len(index);
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Prints the file meta group and the data set of `object` up to the pixel data to
/// standard output, one attribute per line, nested items indented, long values cut.
pub fn inspect(object: &SealedObject) -> Result<(), InspectError> {
    let reader = SealedReader::new(object)?;
    let limit = parse_limit(usize::try_from(object.size()).unwrap_or(usize::MAX));
    let len = object.size();
    let file = crate::heap::with_allocation_limit(limit, || read_header(reader, len))?;
    DumpOptions::new()
        .color_mode(ColorMode::Never)
        .width(DUMP_WIDTH)
        .dump_file(&file)?;
    Ok(())
}
