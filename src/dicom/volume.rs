//! DICOM series as NIfTI-1 volumes: per-file geometry from a parsed header ([`describe`]),
//! the checks and order that make a series one volume ([`plan`]), the NIfTI-1 header
//! ([`VolumePlan::header`]) and the decoding of one frame into its place in the voxels
//! ([`VolumePlan::decode_into`]). Pure: no I/O, no vault.
//!
//! Invariants: a plan exists only for a series whose slices share orientation, size,
//! sample format and pixel spacing, lie on one line along the slice normal, evenly spaced,
//! without duplicates; otherwise the error says which check failed, with counts and
//! spacings only (never patient attributes). Voxels are x (column) fastest, then y (row),
//! then slices in ascending order along the normal.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::deid::strings;
use super::parse::DicomFile;

/// Bytes before the voxels: the 348-byte NIfTI-1 header and 4 bytes of (empty) extension.
pub const HEADER_LEN: usize = 352;
/// Orientation cosines of two slices may differ by this much per component.
const ORIENTATION_TOLERANCE: f64 = 1e-4;
/// Slice gaps may differ from their median, and positions may leave the line along the
/// normal, by this fraction of the median gap.
const SPACING_TOLERANCE: f64 = 0.01;
/// Pixel spacings of two slices may differ by this fraction.
const PIXEL_SPACING_TOLERANCE: f64 = 1e-4;

/// Why a file or a series cannot be (part of) a volume. Messages hold tag names, counts
/// and spacings only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VolumeError {
    #[error("a slice lacks {0}")]
    Missing(&'static str),
    #[error("a slice has an unreadable {0}")]
    Malformed(&'static str),
    #[error("SamplesPerPixel is {0}: only single-sample (grayscale) images form volumes")]
    Samples(u32),
    #[error("BitsAllocated is {0}: only 8, 16 and 32 are supported")]
    Bits(u32),
    #[error(
        "transfer syntax {0} cannot be decoded for volumes (native, RLE Lossless, JPEG and \
         JPEG 2000 can; JPEG-LS cannot)"
    )]
    TransferSyntax(String),
    #[error("32-bit pixel data in big-endian transfer syntax is not supported")]
    BigEndian32,
    #[error("a multi-frame slice has {0} frames but no per-frame positions (PlanePositionSequence or GridFrameOffsetVector)")]
    NoFramePositions(u32),
    #[error("slices differ in {0}")]
    Differ(&'static str),
    #[error("mixed orientations: ImageOrientationPatient differs between slices")]
    MixedOrientation,
    #[error("{0} slices share a position along the slice normal")]
    Duplicate(usize),
    #[error("slices do not lie on one line along the slice normal (off by {0:.3} mm)")]
    NotCollinear(f64),
    #[error("missing slice: a gap of {gap:.3} mm after slice {index} of {count}, where the spacing is {spacing:.3} mm")]
    MissingSlice {
        gap: f64,
        index: usize,
        count: usize,
        spacing: f64,
    },
    #[error("uneven slice spacing: gaps from {min:.3} to {max:.3} mm")]
    Uneven { min: f64, max: f64 },
    #[error("volume of {0} x {1} x {2} voxels is too large for NIfTI-1")]
    TooLarge(usize, usize, usize),
    #[error("pixel data: {0}")]
    PixelData(String),
}

/// How a file's pixel data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Native little endian (implicit, explicit or deflated; deflate is undone when parsing).
    Native,
    /// Native big endian (parsed into host order for 16-bit words).
    NativeBigEndian,
    /// RLE Lossless, one fragment per frame.
    Rle,
    /// Another encapsulated syntax that dicom-pixeldata decodes (JPEG, JPEG 2000).
    Compressed,
}

/// The stored sample format of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Rows (y size).
    pub rows: u16,
    /// Columns (x size).
    pub columns: u16,
    /// Bits per stored sample: 8, 16 or 32.
    pub bits_allocated: u16,
    /// Meaningful low bits of each sample.
    pub bits_stored: u16,
    /// Two's complement samples (PixelRepresentation 1).
    pub signed: bool,
}

/// Where one frame lies and how its values are rescaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// ImagePositionPatient (LPS, mm) of the first voxel.
    pub position: [f64; 3],
    /// ImageOrientationPatient: row direction cosines, then column direction cosines.
    pub orientation: [f64; 6],
    /// PixelSpacing: between rows, then between columns (mm).
    pub spacing: [f64; 2],
    /// RescaleSlope (1 if absent).
    pub slope: f64,
    /// RescaleIntercept (0 if absent).
    pub intercept: f64,
}

/// What a file contributes to its series: its sample format and its frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Slices {
    /// SeriesInstanceUID.
    pub series: String,
    /// Sample format.
    pub format: Format,
    /// Pixel data encoding.
    pub encoding: Encoding,
    /// Frames in stored order.
    pub frames: Vec<Frame>,
}

/// Whether `uid` is an encapsulated transfer syntax whose every frame this build can decode.
fn decodable(uid: &str) -> bool {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .is_some_and(|ts| ts.is_encapsulated_pixel_data() && ts.can_decode_all())
}

/// The geometry of a file, from its header (read up to the pixel data). `Ok(None)` for
/// files that are no image of a series (no SeriesInstanceUID or no Rows); `Err` carries
/// the series it belongs to, so the series can report it.
pub fn describe(file: &DicomFile) -> Result<Option<Slices>, (String, VolumeError)> {
    let Some(series) = text(file, tags::SERIES_INSTANCE_UID) else {
        return Ok(None);
    };
    if element(file, tags::ROWS).is_none() {
        return Ok(None);
    }
    let encoding = match file.meta().transfer_syntax() {
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.1.99" => Encoding::Native,
        "1.2.840.10008.1.2.2" => Encoding::NativeBigEndian,
        "1.2.840.10008.1.2.5" => Encoding::Rle,
        other if decodable(other) => Encoding::Compressed,
        other => return Err((series, VolumeError::TransferSyntax(other.to_owned()))),
    };
    describe_image(file, encoding)
        .map(|(format, frames)| {
            Some(Slices {
                series: series.clone(),
                format,
                encoding,
                frames,
            })
        })
        .map_err(|e| (series, e))
}

fn describe_image(
    file: &InMemDicomObject,
    encoding: Encoding,
) -> Result<(Format, Vec<Frame>), VolumeError> {
    let samples = uint(file, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
    if samples != 1 {
        return Err(VolumeError::Samples(samples));
    }
    let bits_allocated = required(
        uint(file, tags::BITS_ALLOCATED, "BitsAllocated")?,
        "BitsAllocated",
    )?;
    if ![8, 16, 32].contains(&bits_allocated) {
        return Err(VolumeError::Bits(bits_allocated));
    }
    if bits_allocated == 32 && encoding == Encoding::NativeBigEndian {
        return Err(VolumeError::BigEndian32);
    }
    let bits_stored = uint(file, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
    let format = Format {
        rows: required(uint(file, tags::ROWS, "Rows")?, "Rows")? as u16,
        columns: required(uint(file, tags::COLUMNS, "Columns")?, "Columns")? as u16,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored.clamp(1, bits_allocated) as u16,
        signed: uint(file, tags::PIXEL_REPRESENTATION, "PixelRepresentation")? == Some(1),
    };
    let count = uint(file, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?
        .unwrap_or(1)
        .max(1);
    let per_frame = element(file, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    let shared = element(file, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first());
    let grid = floats(
        file,
        tags::GRID_FRAME_OFFSET_VECTOR,
        "GridFrameOffsetVector",
    )?;
    let mut frames = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        // A functional group macro: the frame's own item, else the shared one, else the
        // top-level data set.
        let group = |sequence: Tag| {
            [per_frame.get(index), shared]
                .into_iter()
                .flatten()
                .find_map(|g| element(g, sequence)?.items()?.first())
                .unwrap_or(file)
        };
        let orientation: [f64; 6] = fixed(
            floats(
                group(tags::PLANE_ORIENTATION_SEQUENCE),
                tags::IMAGE_ORIENTATION_PATIENT,
                "ImageOrientationPatient",
            )?,
            "ImageOrientationPatient",
        )?;
        let spacing: [f64; 2] = fixed(
            floats(
                group(tags::PIXEL_MEASURES_SEQUENCE),
                tags::PIXEL_SPACING,
                "PixelSpacing",
            )?,
            "PixelSpacing",
        )?;
        let rescale = group(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE);
        let slope = float(rescale, tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(1.0);
        let intercept = float(rescale, tags::RESCALE_INTERCEPT, "RescaleIntercept")?.unwrap_or(0.0);
        let position_source = per_frame
            .get(index)
            .and_then(|g| element(g, tags::PLANE_POSITION_SEQUENCE)?.items()?.first());
        let position: [f64; 3] = match (position_source, &grid) {
            (Some(item), _) => fixed(
                floats(item, tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?,
                "ImagePositionPatient",
            )?,
            (None, Some(offsets)) if offsets.len() == count as usize => {
                let origin: [f64; 3] = fixed(
                    floats(file, tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?,
                    "ImagePositionPatient",
                )?;
                let normal = normal(&orientation);
                let along = offsets[index] - offsets[0];
                [0, 1, 2].map(|a| origin[a] + along * normal[a])
            }
            (None, _) if count == 1 => fixed(
                floats(file, tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?,
                "ImagePositionPatient",
            )?,
            (None, _) => return Err(VolumeError::NoFramePositions(count)),
        };
        frames.push(Frame {
            position,
            orientation,
            spacing,
            slope,
            intercept,
        });
    }
    Ok((format, frames))
}

/// The element `tag` of `object`, if present. (`element_opt` would build, and capture a
/// backtrace for, an error for every absent attribute.)
fn element(object: &InMemDicomObject, tag: Tag) -> Option<&dicom_object::mem::InMemElement> {
    object.get(tag)
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = element(object, tag)?.to_str().ok()?;
    let value = value.trim_end_matches(['\0', ' ']);
    (!value.is_empty()).then(|| value.to_owned())
}

fn uint(
    object: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<u32>, VolumeError> {
    element(object, tag)
        .map(|e| e.to_int::<u32>().map_err(|_| VolumeError::Malformed(name)))
        .transpose()
}

fn float(
    object: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<f64>, VolumeError> {
    element(object, tag)
        .map(|e| e.to_float64().map_err(|_| VolumeError::Malformed(name)))
        .transpose()
}

fn floats(
    object: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<Vec<f64>>, VolumeError> {
    element(object, tag)
        .map(|e| {
            // An element stored as UN (unknown VR) arrives as bytes: read it as DS text.
            let parsed = if e.vr() == dicom_core::VR::UN {
                strings(e.value())
                    .and_then(|texts| texts.iter().map(|v| v.trim().parse().ok()).collect())
            } else {
                e.to_multi_float64().ok()
            };
            parsed.ok_or(VolumeError::Malformed(name))
        })
        .transpose()
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, VolumeError> {
    value.ok_or(VolumeError::Missing(name))
}

fn fixed<const N: usize>(
    values: Option<Vec<f64>>,
    name: &'static str,
) -> Result<[f64; N], VolumeError> {
    let values = required(values, name)?;
    let array: [f64; N] = values
        .try_into()
        .map_err(|_| VolumeError::Malformed(name))?;
    if array.iter().all(|v| v.is_finite()) {
        Ok(array)
    } else {
        Err(VolumeError::Malformed(name))
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The slice normal: row cosine × column cosine.
fn normal(orientation: &[f64; 6]) -> [f64; 3] {
    let (r, c) = (&orientation[..3], &orientation[3..]);
    [
        r[1] * c[2] - r[2] * c[1],
        r[2] * c[0] - r[0] * c[2],
        r[0] * c[1] - r[1] * c[0],
    ]
}

/// The voxel type of a volume, with its NIfTI-1 datatype code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// The stored integer type; rescale in the header's scl_slope/scl_inter.
    Stored { bytes: u8, signed: bool },
    /// float32 holding stored × slope + intercept, per slice.
    Float32,
}

impl Dtype {
    /// Bytes per voxel.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::Stored { bytes, .. } => bytes as usize,
            Dtype::Float32 => 4,
        }
    }

    /// The NIfTI-1 datatype code.
    pub fn nifti_code(self) -> i16 {
        match self {
            Dtype::Stored {
                bytes: 1,
                signed: false,
            } => 2,
            Dtype::Stored {
                bytes: 1,
                signed: true,
            } => 256,
            Dtype::Stored {
                bytes: 2,
                signed: true,
            } => 4,
            Dtype::Stored {
                bytes: 2,
                signed: false,
            } => 512,
            Dtype::Stored { signed: true, .. } => 8,
            Dtype::Stored { signed: false, .. } => 768,
            Dtype::Float32 => 16,
        }
    }
}

/// One series made into a volume: which frame of which member goes to which slice, the
/// voxel type, rescale and affine. `K` names a member file (an inode in the vault).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan<K> {
    /// Member files, in the order they were given.
    pub members: Vec<(K, Encoding)>,
    /// Slice `k` is frame `.1` of member `.0`, with its rescale.
    pub slices: Vec<(usize, usize, f64, f64)>,
    /// Sample format shared by all slices.
    pub format: Format,
    /// Voxel type.
    pub dtype: Dtype,
    /// NIfTI scl_slope and scl_inter (1 and 0 for float32 volumes).
    pub scale: (f64, f64),
    /// Voxel (i, j, k, 1) to RAS millimetres: three rows.
    pub affine: [[f64; 4]; 3],
    /// Spacing along x, y and z (mm).
    pub spacing: [f64; 3],
}

/// Checks one series' members and orders their frames into a volume (see the module docs
/// for the checks and `docs/DICOM.md` for the conventions).
pub fn plan<K>(members: Vec<(K, Slices)>) -> Result<VolumePlan<K>, VolumeError> {
    let first = &members.first().ok_or(VolumeError::Missing("slices"))?.1;
    let format = first.format;
    let reference = first.frames[0];
    let mut frames = Vec::new();
    for (m, (_, slices)) in members.iter().enumerate() {
        let f = &slices.format;
        if (f.rows, f.columns) != (format.rows, format.columns) {
            return Err(VolumeError::Differ("Rows/Columns"));
        }
        if (f.bits_allocated, f.bits_stored, f.signed)
            != (format.bits_allocated, format.bits_stored, format.signed)
        {
            return Err(VolumeError::Differ(
                "BitsAllocated/BitsStored/PixelRepresentation",
            ));
        }
        for (index, frame) in slices.frames.iter().enumerate() {
            let differs = frame
                .orientation
                .iter()
                .zip(&reference.orientation)
                .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE);
            if differs {
                return Err(VolumeError::MixedOrientation);
            }
            let spacing_differs = frame
                .spacing
                .iter()
                .zip(&reference.spacing)
                .any(|(a, b)| (a - b).abs() > PIXEL_SPACING_TOLERANCE * b.abs().max(1e-6));
            if spacing_differs {
                return Err(VolumeError::Differ("PixelSpacing"));
            }
            frames.push((m, index, *frame));
        }
    }
    let n = normal(&reference.orientation);
    let distance = |frame: &Frame| dot(frame.position, n);
    frames.sort_by(|a, b| distance(&a.2).total_cmp(&distance(&b.2)));
    let count = frames.len();
    let (columns, rows) = (format.columns as usize, format.rows as usize);
    if count > i16::MAX as usize || columns > i16::MAX as usize || rows > i16::MAX as usize {
        return Err(VolumeError::TooLarge(columns, rows, count));
    }
    let gaps: Vec<f64> = frames
        .windows(2)
        .map(|w| distance(&w[1].2) - distance(&w[0].2))
        .collect();
    let duplicates = gaps.iter().filter(|g| **g < 1e-3).count();
    if duplicates > 0 {
        return Err(VolumeError::Duplicate(duplicates + 1));
    }
    let step = if gaps.is_empty() {
        1.0
    } else {
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let origin = frames[0].2.position;
    for (_, _, frame) in &frames {
        let d = [0, 1, 2].map(|a| frame.position[a] - origin[a]);
        let along = dot(d, n);
        let off = dot(d, d) - along * along;
        let off = off.max(0.0).sqrt();
        if off > SPACING_TOLERANCE * step + 1e-4 {
            return Err(VolumeError::NotCollinear(off));
        }
    }
    for (index, gap) in gaps.iter().enumerate() {
        if (gap - step).abs() > SPACING_TOLERANCE * step {
            let ratio = gap / step;
            if (ratio - ratio.round()).abs() < SPACING_TOLERANCE && ratio.round() >= 2.0 {
                return Err(VolumeError::MissingSlice {
                    gap: *gap,
                    index: index + 1,
                    count,
                    spacing: step,
                });
            }
            let min = gaps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = gaps.iter().copied().fold(0.0, f64::max);
            return Err(VolumeError::Uneven { min, max });
        }
    }
    // The slice step vector: from the first to the last position, or the normal times
    // one millimetre for a single slice.
    let s = if count > 1 {
        let last = frames[count - 1].2.position;
        [0, 1, 2].map(|a| (last[a] - origin[a]) / (count - 1) as f64)
    } else {
        n
    };
    let [dr, dc] = reference.spacing;
    let (r, c) = (&reference.orientation[..3], &reference.orientation[3..]);
    let lps = [0, 1, 2].map(|a| [r[a] * dc, c[a] * dr, s[a], origin[a]]);
    let affine = [lps[0].map(|v| -v), lps[1].map(|v| -v), lps[2]];
    let same_rescale = frames
        .iter()
        .all(|(_, _, f)| (f.slope, f.intercept) == (reference.slope, reference.intercept));
    let (dtype, scale) = if same_rescale {
        (
            Dtype::Stored {
                bytes: (format.bits_allocated / 8) as u8,
                signed: format.signed,
            },
            (reference.slope, reference.intercept),
        )
    } else {
        (Dtype::Float32, (1.0, 0.0))
    };
    Ok(VolumePlan {
        slices: frames
            .iter()
            .map(|(m, index, f)| (*m, *index, f.slope, f.intercept))
            .collect(),
        members: members.into_iter().map(|(k, s)| (k, s.encoding)).collect(),
        format,
        dtype,
        scale,
        affine,
        spacing: [dc, dr, dot(s, s).sqrt()],
    })
}

impl<K> VolumePlan<K> {
    /// Bytes of one slice in the volume.
    pub fn slice_len(&self) -> usize {
        self.format.rows as usize * self.format.columns as usize * self.dtype.bytes()
    }

    /// Bytes of the whole `.nii` file: header, extension flag and voxels.
    pub fn len(&self) -> u64 {
        HEADER_LEN as u64 + self.slice_len() as u64 * self.slices.len() as u64
    }

    /// Never empty: the header is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The NIfTI-1 single-file header (`n+1`), extension flag zero, voxels at byte 352.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let put = |h: &mut [u8; HEADER_LEN], at: usize, bytes: &[u8]| {
            h[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut h, 0, &348i32.to_le_bytes());
        h[38] = b'r';
        let dims = [
            3,
            self.format.columns as i16,
            self.format.rows as i16,
            self.slices.len() as i16,
            1,
            1,
            1,
            1,
        ];
        for (i, d) in dims.iter().enumerate() {
            put(&mut h, 40 + 2 * i, &d.to_le_bytes());
        }
        put(&mut h, 70, &self.dtype.nifti_code().to_le_bytes());
        put(&mut h, 72, &((self.dtype.bytes() * 8) as i16).to_le_bytes());
        let pixdim = [
            1.0,
            self.spacing[0],
            self.spacing[1],
            self.spacing[2],
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        for (i, p) in pixdim.iter().enumerate() {
            put(&mut h, 76 + 4 * i, &(*p as f32).to_le_bytes());
        }
        put(&mut h, 108, &(HEADER_LEN as f32).to_le_bytes());
        put(&mut h, 112, &(self.scale.0 as f32).to_le_bytes());
        put(&mut h, 116, &(self.scale.1 as f32).to_le_bytes());
        h[123] = 2; // xyzt_units: millimetres
        put(&mut h, 148, b"smpfs DICOM series volume");
        put(&mut h, 254, &1i16.to_le_bytes()); // sform_code: scanner anatomical
        for (row, values) in self.affine.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                put(&mut h, 280 + 16 * row + 4 * i, &(*v as f32).to_le_bytes());
            }
        }
        put(&mut h, 344, b"n+1\0");
        h
    }

    /// Decodes slice `k` (a frame of `file`, which must be member `self.slices[k].0` read
    /// in full) into `out` (exactly [`Self::slice_len`] bytes), converting to the voxel
    /// type.
    pub fn decode_into(
        &self,
        k: usize,
        file: &DicomFile,
        out: &mut [u8],
    ) -> Result<(), VolumeError> {
        let (member, frame, slope, intercept) = self.slices[k];
        let encoding = self.members[member].1;
        let format = self.format;
        let sample = format.bits_allocated as usize / 8;
        let pixels = format.rows as usize * format.columns as usize;
        let frame_len = pixels * sample;
        let pixel_data =
            element(file, tags::PIXEL_DATA).ok_or(VolumeError::Missing("PixelData"))?;
        let rle;
        let native;
        let decoded;
        let stored: &[u8] = match encoding {
            Encoding::Native | Encoding::NativeBigEndian => {
                native = pixel_data
                    .value()
                    .to_bytes()
                    .map_err(|_| VolumeError::Malformed("PixelData"))?;
                native
                    .get(frame * frame_len..(frame + 1) * frame_len)
                    .ok_or_else(|| {
                        VolumeError::PixelData("shorter than Rows × Columns × frames".into())
                    })?
            }
            Encoding::Rle => {
                let fragments = pixel_data
                    .fragments()
                    .ok_or_else(|| VolumeError::PixelData("RLE data is not encapsulated".into()))?;
                let fragment = fragments.get(frame).ok_or_else(|| {
                    VolumeError::PixelData("fewer RLE fragments than frames".into())
                })?;
                rle = decode_rle(fragment, pixels, sample)?;
                &rle
            }
            Encoding::Compressed => {
                decoded = decode_compressed(file, frame, format)?;
                decoded.data()
            }
        };
        if stored.len() != frame_len {
            return Err(VolumeError::PixelData(format!(
                "a decoded frame holds {} bytes, not Rows × Columns × {sample}",
                stored.len()
            )));
        }
        convert(stored, format, self.dtype, (slope, intercept), out);
        Ok(())
    }
}

/// Copies little-endian stored samples into `out` as `dtype`, keeping the low
/// `bits_stored` bits (sign-extended for signed data).
fn convert(
    stored: &[u8],
    format: Format,
    dtype: Dtype,
    (slope, intercept): (f64, f64),
    out: &mut [u8],
) {
    let sample = format.bits_allocated as usize / 8;
    let unused = 64 - u32::from(format.bits_stored);
    let value = |s: &[u8]| -> i64 {
        let mut raw = [0u8; 8];
        raw[..sample].copy_from_slice(s);
        let raw = u64::from_le_bytes(raw) << unused;
        if format.signed {
            (raw as i64) >> unused
        } else {
            (raw >> unused) as i64
        }
    };
    match dtype {
        Dtype::Stored { .. } if format.bits_stored == format.bits_allocated => {
            out.copy_from_slice(stored)
        }
        Dtype::Stored { bytes, .. } => {
            for (s, o) in stored
                .chunks_exact(sample)
                .zip(out.chunks_exact_mut(bytes as usize))
            {
                o.copy_from_slice(&value(s).to_le_bytes()[..bytes as usize]);
            }
        }
        Dtype::Float32 => {
            for (s, o) in stored.chunks_exact(sample).zip(out.chunks_exact_mut(4)) {
                let v = value(s) as f64 * slope + intercept;
                o.copy_from_slice(&(v as f32).to_le_bytes());
            }
        }
    }
}

/// Decodes frame `frame` of a JPEG or JPEG 2000 file with dicom-pixeldata, checking that
/// it came out as the header's single-sample format.
fn decode_compressed(
    file: &DicomFile,
    frame: usize,
    format: Format,
) -> Result<dicom_pixeldata::DecodedPixelData<'_>, VolumeError> {
    use dicom_pixeldata::PixelDecoder;
    let frame =
        u32::try_from(frame).map_err(|_| VolumeError::PixelData("too many frames".into()))?;
    let decoded = file
        .decode_pixel_data_frame(frame)
        .map_err(|e| VolumeError::PixelData(format!("cannot decode frame {frame}: {e}")))?;
    if decoded.samples_per_pixel() != 1
        || decoded.bits_allocated() != format.bits_allocated
        || decoded.rows() != u32::from(format.rows)
        || decoded.columns() != u32::from(format.columns)
    {
        return Err(VolumeError::PixelData(format!(
            "frame {frame} decodes to {}x{} with {} samples of {} bits, not the header's format",
            decoded.columns(),
            decoded.rows(),
            decoded.samples_per_pixel(),
            decoded.bits_allocated()
        )));
    }
    Ok(decoded)
}

/// Decodes one RLE Lossless frame (PS3.5 Annex G) of `pixels` samples of `sample` bytes
/// into little-endian samples. Segment 0 holds the most significant bytes.
fn decode_rle(fragment: &[u8], pixels: usize, sample: usize) -> Result<Vec<u8>, VolumeError> {
    let bad = |why: &str| VolumeError::PixelData(format!("RLE: {why}"));
    let word = |i: usize| {
        fragment
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("truncated header"))
    };
    let segments = word(0)?;
    if segments != sample {
        return Err(bad("segment count does not match BitsAllocated"));
    }
    let mut out = vec![0u8; pixels * sample];
    for segment in 0..segments {
        let start = word(1 + segment)?;
        let end = if segment + 1 < segments {
            word(2 + segment)?
        } else {
            fragment.len()
        };
        let data = fragment
            .get(start..end)
            .ok_or_else(|| bad("segment out of range"))?;
        let byte = sample - 1 - segment;
        let mut written = 0;
        let mut i = 0;
        while i < data.len() && written < pixels {
            let n = data[i] as i8;
            i += 1;
            if n >= 0 {
                let len = n as usize + 1;
                let run = data
                    .get(i..i + len)
                    .ok_or_else(|| bad("literal run past the end"))?;
                for &b in run.iter().take(pixels - written) {
                    out[written * sample + byte] = b;
                    written += 1;
                }
                i += len;
            } else if n != -128 {
                let len = (1 - n as isize) as usize;
                let b = *data
                    .get(i)
                    .ok_or_else(|| bad("replicate run past the end"))?;
                i += 1;
                for _ in 0..len.min(pixels - written) {
                    out[written * sample + byte] = b;
                    written += 1;
                }
            }
        }
        if written != pixels {
            return Err(bad("segment shorter than Rows × Columns"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
