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

/// Reads a whole DICOM file (with or without the 128-byte preamble) of `len` bytes from
/// `input`, once [`checked_bytes`] found every declared length within the file.
pub fn read_file(input: impl Read, len: u64) -> Result<DicomFile, ParseError> {
    let bytes = checked_bytes(input, len, None)?;
    OpenFileOptions::new()
        .from_reader(&bytes[..])
        .map_err(|e| ParseError::NotDicom(e.to_string()))
}

/// Reads a DICOM file's meta group and data set up to, not including, the pixel data
/// group (7FE0,xxxx); what follows is never read from `input` (`len` bytes in all).
pub fn read_header(input: impl Read, len: u64) -> Result<DicomFile, ParseError> {
    let bytes = checked_bytes(input, len, Some(PIXEL_DATA_GROUP))?;
    OpenFileOptions::new()
        .read_until(PIXEL_DATA_GROUP)
        .from_reader(&bytes[..])
        .map_err(|e| ParseError::NotDicom(e.to_string()))
}

/// A value length that means "up to a delimiter".
const UNDEFINED: u32 = u32::MAX;
/// Transfer syntaxes whose data set is not explicit VR little endian.
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Reads the `len` bytes of a Part 10 file from `input` (up to, not including, the first
/// top-level element at or past `stop`), walking its element headers: every declared
/// length must fit in what is left of the file. dicom-rs allocates a value's declared
/// length before reading it, so one hostile length field (a 192-byte file declaring a
/// 1 GiB text) would otherwise exhaust memory or, under the allocation limit, abort the
/// process. A deflated data set is read unchecked (the allocation limit still applies).
pub fn checked_bytes(input: impl Read, len: u64, stop: Option<Tag>) -> Result<Vec<u8>, ParseError> {
    let mut walk = Walk {
        input,
        bytes: Vec::new(),
        pos: 0,
        len,
    };
    let mut magic = walk.take(4)?.to_vec();
    if magic != b"DICM" {
        walk.take(124)?;
        magic = walk.take(4)?.to_vec();
        if magic != b"DICM" {
            return Err(ParseError::NotDicom("no DICM prefix".into()));
        }
    }
    let mut syntax = String::new();
    // The meta group: explicit VR little endian.
    loop {
        if walk.peek_group()? != Some(0x0002) {
            break;
        }
        let (tag, _, length) = walk.header(true, false)?;
        walk.fits(tag, length)?;
        let value = walk.take(length as usize)?;
        if tag == Tag(0x0002, 0x0010) {
            syntax = String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned();
        }
    }
    if syntax == DEFLATED {
        walk.rest()?;
        walk.bytes.truncate(walk.pos);
        return Ok(walk.bytes);
    }
    let (explicit, big_endian) = (syntax != IMPLICIT_LE, syntax == EXPLICIT_BE);
    // In encapsulated pixel data, items are fragments of raw bytes, not elements.
    let mut in_fragments = false;
    let mut depth = 0usize;
    while walk.left() > 0 {
        let start = walk.pos;
        let (tag, vr, length) = walk.header(explicit, big_endian)?;
        if tag.0 == 0xFFFE {
            match tag.1 {
                0xE000 if in_fragments => {
                    walk.fits(tag, length)?;
                    walk.take(length as usize)?;
                }
                0xE000 if length != UNDEFINED => walk.fits(tag, length)?,
                0xE0DD => {
                    in_fragments = false;
                    depth = depth.saturating_sub(1);
                }
                _ => {}
            }
            continue;
        }
        if depth == 0 && stop.is_some_and(|stop| tag >= stop) {
            walk.pos = start;
            break;
        }
        if length == UNDEFINED {
            depth += 1;
            in_fragments =
                matches!(vr, Some(ref v) if v == b"OB" || v == b"OW") || tag == Tag(0x7FE0, 0x0010);
            continue;
        }
        walk.fits(tag, length)?;
        let nested = match &vr {
            Some(vr) => vr == b"SQ",
            // Implicit VR: a value made of items is a sequence.
            None => length >= 8 && walk.peek_item(big_endian)?,
        };
        if !nested {
            walk.take(length as usize)?;
        }
    }
    walk.bytes.truncate(walk.pos);
    Ok(walk.bytes)
}

/// The input of [`checked_bytes`], what was read of it, and how far the walk is.
struct Walk<R> {
    input: R,
    bytes: Vec<u8>,
    pos: usize,
    len: u64,
}

impl<R: Read> Walk<R> {
    /// Bytes of the file after the walk's position.
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos as u64)
    }

    /// The next `n` bytes (which must be within the file), read if need be; not consumed.
    fn peek(&mut self, n: usize) -> Result<&[u8], ParseError> {
        if n as u64 > self.left() {
            return Err(ParseError::NotDicom(
                "the file ends inside an element".into(),
            ));
        }
        let have = self.bytes.len();
        if self.pos + n > have {
            self.bytes.resize(self.pos + n, 0);
            self.input
                .read_exact(&mut self.bytes[have..])
                .map_err(|e| ParseError::NotDicom(format!("reading: {e}")))?;
        }
        Ok(&self.bytes[self.pos..self.pos + n])
    }

    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize) -> Result<&[u8], ParseError> {
        self.peek(n)?;
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }

    /// Reads the rest of the file unchecked.
    fn rest(&mut self) -> Result<(), ParseError> {
        self.take(usize::try_from(self.left()).unwrap_or(usize::MAX))
            .map(|_| ())
    }

    /// Fails unless `length` bytes fit in what is left of the file.
    fn fits(&self, tag: Tag, length: u32) -> Result<(), ParseError> {
        if u64::from(length) > self.left() {
            return Err(ParseError::NotDicom(format!(
                "element {tag} declares {length} bytes but only {} are left in the file",
                self.left()
            )));
        }
        Ok(())
    }

    /// Reads one element header: tag, VR (explicit syntaxes, not for items), length.
    fn header(
        &mut self,
        explicit: bool,
        big_endian: bool,
    ) -> Result<(Tag, Option<[u8; 2]>, u32), ParseError> {
        let u16_of = |b: [u8; 2]| {
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_of = |b: &[u8]| {
            let quad = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(quad)
            } else {
                u32::from_le_bytes(quad)
            }
        };
        let head = self.take(4)?;
        let tag = Tag(u16_of([head[0], head[1]]), u16_of([head[2], head[3]]));
        if tag.0 == 0xFFFE || !explicit {
            let length = u32_of(self.take(4)?);
            return Ok((tag, None, length));
        }
        let vr_and_short = self.take(4)?;
        let vr = [vr_and_short[0], vr_and_short[1]];
        let short = u16_of([vr_and_short[2], vr_and_short[3]]);
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let length = if long {
            u32_of(self.take(4)?)
        } else {
            u32::from(short)
        };
        Ok((tag, Some(vr), length))
    }

    /// The group of the next tag (little endian), without consuming it; `None` at the end.
    fn peek_group(&mut self) -> Result<Option<u16>, ParseError> {
        if self.left() < 2 {
            return Ok(None);
        }
        let pair = self.peek(2)?;
        Ok(Some(u16::from_le_bytes([pair[0], pair[1]])))
    }

    /// Whether the next tag is an item (FFFE,E000), without consuming it.
    fn peek_item(&mut self, big_endian: bool) -> Result<bool, ParseError> {
        let item: [u8; 4] = if big_endian {
            [0xFF, 0xFE, 0xE0, 0x00]
        } else {
            [0xFE, 0xFF, 0x00, 0xE0]
        };
        Ok(self.peek(4)? == item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: 192 bytes declaring a 1 GiB text value; dicom-rs would allocate
    /// the gigabyte (or abort under the allocation limit) before finding the file short.
    const HUGE_LENGTH: &[u8] = include_bytes!("../../fuzz/known/dicom-text-value-1gib-length.dcm");

    #[test]
    fn a_declared_length_past_the_end_of_the_file_is_refused_before_parsing() {
        let len = HUGE_LENGTH.len() as u64;
        for result in [
            read_file(HUGE_LENGTH, len).map(|_| ()),
            read_header(HUGE_LENGTH, len).map(|_| ()),
        ] {
            let ParseError::NotDicom(why) = result.unwrap_err();
            assert!(why.contains("declares 1073741824 bytes"), "{why}");
        }
    }
}
