//! Reading DICOM Part 10 files (preamble, meta group, data set) from any byte source with
//! dicom-object, into memory. Shared by de-identification, `inspect` and later readers.
//!
//! Invariant: a source is accepted only if it parses as a whole Part 10 file (or, for
//! [`read_header`], up to the pixel data); the parser's message says why not.

use std::io::Read;

use dicom_core::Tag;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions, StandardDataDictionary};

/// A parsed DICOM file held in memory.
pub type DicomFile = FileDicomObject<InMemDicomObject<StandardDataDictionary>>;

/// The first tag of the pixel data group; [`read_header`] stops before it.
pub const PIXEL_DATA_GROUP: Tag = Tag(0x7FE0, 0x0000);

/// Errors in reading a DICOM file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not a DICOM Part 10 file dicom-object can read (its message).
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
}

/// The largest single allocation parsing a `file_len`-byte file may need: 64 times the file
/// (deflated data sets expand) plus 64 MiB. Pass it to [`crate::heap::with_allocation_limit`]
/// so a corrupt length field fails the parse instead of allocating gigabytes.
pub fn parse_limit(file_len: usize) -> usize {
    file_len.saturating_mul(64).saturating_add(64 << 20)
}

/// Reads a whole DICOM file (with or without the 128-byte preamble) from `input`.
pub fn read_file(input: impl Read) -> Result<DicomFile, ParseError> {
    OpenFileOptions::new()
        .from_reader(input)
        .map_err(|e| ParseError::NotDicom(e.to_string()))
}

/// Reads a DICOM file's meta group and data set up to, not including, the pixel data
/// group (7FE0,xxxx); what follows is never read from `input`.
pub fn read_header(input: impl Read) -> Result<DicomFile, ParseError> {
    OpenFileOptions::new()
        .read_until(PIXEL_DATA_GROUP)
        .from_reader(input)
        .map_err(|e| ParseError::NotDicom(e.to_string()))
}
