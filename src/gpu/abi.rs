//! The GPU ioctl ABI: two restricted ioctls on a file opened through the mount, with
//! fixed-width, native-endian argument structs. `docs/GPU.md` is the specification and
//! `integration/gpu/smpfs_gpu.h` the C header; tests check all three agree.
//!
//! Invariants:
//! - size and direction are encoded in the command number (`_IOR`/`_IOWR`), so a client
//!   built against another struct size gets `ENOTTY`, never a misread struct;
//! - every field is a fixed-width integer at a naturally aligned offset and the structs
//!   have no padding, so the layout is the same for 32- and 64-bit callers;
//! - a load request is accepted only if its version is [`ABI_VERSION`], its flags and
//!   reserved fields are zero, and neither `file_offset + length` nor
//!   `dest_offset + length` overflows;
//! - a load reply is the request as it came in with only the two out fields set.

use super::{GpuError, Load, Target, HANDLE_LEN};

/// The ABI version this smpfs speaks; requests must carry it.
pub const ABI_VERSION: u32 = 1;
/// The ioctl type byte of smpfs's commands.
pub const IOC_TYPE: u8 = 0xB5;
/// Bytes of `struct smpfs_gpu_info`.
pub const INFO_LEN: usize = 112;
/// Bytes of `struct smpfs_gpu_load`.
pub const LOAD_LEN: usize = 120;
/// `_IOR(0xB5, 1, struct smpfs_gpu_info)`.
pub const IOC_INFO: u32 = ioc(IOC_READ, 1, INFO_LEN);
/// `_IOWR(0xB5, 2, struct smpfs_gpu_load)`.
pub const IOC_LOAD: u32 = ioc(IOC_READ | IOC_WRITE, 2, LOAD_LEN);

/// Direction bits of the asm-generic ioctl encoding (x86, Arm, RISC-V).
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, IOC_TYPE, nr, size)` in the asm-generic encoding.
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((IOC_TYPE as u32) << 8) | nr as u32
}

/// Byte offsets of the fields of `struct smpfs_gpu_load`.
mod load {
    pub const ABI_VERSION: usize = 0;
    pub const FLAGS: usize = 4;
    pub const DEVICE: usize = 8;
    pub const RESERVED0: usize = 12;
    pub const HANDLE: usize = 16;
    pub const DEST_OFFSET: usize = 80;
    pub const FILE_OFFSET: usize = 88;
    pub const LENGTH: usize = 96;
    pub const BYTES_LOADED: usize = 104;
    pub const ERROR: usize = 112;
    pub const RESERVED1: usize = 116;
}

/// Byte offsets of the fields of `struct smpfs_gpu_info`; the reserved ones stay zero.
mod info {
    pub const ABI_VERSION: usize = 0;
    pub const FLAGS: usize = 4;
    pub const PLAINTEXT_SIZE: usize = 8;
    pub const CHUNK_SIZE: usize = 16;
    pub const DTYPE: usize = 20;
    pub const FILE_ID: usize = 24;
    pub const NDIM: usize = 40;
    pub const SHAPE: usize = 48;
}

/// `smpfs_gpu_info.flags` bit: the file is a virtual volume.
pub const INFO_VOLUME: u32 = 1;

/// Element types of a volume (`smpfs_gpu_info.dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ElementType {
    U8 = 1,
    I8 = 2,
    U16 = 3,
    I16 = 4,
    U32 = 5,
    I32 = 6,
    F32 = 7,
}

impl ElementType {
    /// The integer type of `bytes` bytes and signedness, if the ABI has one.
    pub fn integer(bytes: u8, signed: bool) -> Option<ElementType> {
        Some(match (bytes, signed) {
            (1, false) => ElementType::U8,
            (1, true) => ElementType::I8,
            (2, false) => ElementType::U16,
            (2, true) => ElementType::I16,
            (4, false) => ElementType::U32,
            (4, true) => ElementType::I32,
            _ => return None,
        })
    }
}

/// What the info command says of a virtual volume: its voxels' type and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeShape {
    /// Voxel type.
    pub dtype: ElementType,
    /// Shape, slowest-varying dimension first: slices, rows, columns.
    pub shape: [u64; 3],
}

/// A command smpfs understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// [`IOC_INFO`]: describe the open file.
    Info,
    /// [`IOC_LOAD`]: load a range of it into a device allocation.
    Load,
}

impl Command {
    /// The command of ioctl number `cmd`, or `None` for any other number (including ours
    /// with another size or direction).
    pub fn from_raw(cmd: u32) -> Option<Command> {
        match cmd {
            IOC_INFO => Some(Command::Info),
            IOC_LOAD => Some(Command::Load),
            _ => None,
        }
    }
}

/// Why a request failed, in the `error` field of a load reply (`SMPFS_GPU_E_*`). The errno
/// says the class of failure; this says which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Detail {
    /// Success.
    None = 0,
    /// `abi_version` is not [`ABI_VERSION`].
    AbiVersion = 1,
    /// Unknown flags, non-zero reserved fields, or a device ordinal over `INT_MAX`.
    BadArgument = 2,
    /// An offset plus the length overflows 64 bits.
    Overflow = 3,
    /// The file range ends past the end of the file.
    PastEof = 4,
    /// The destination allocation is too small for the range.
    DestinationTooSmall = 5,
    /// The handle does not name an allocation that can be opened.
    BadHandle = 6,
    /// No CUDA driver on this machine.
    NoDriver = 7,
    /// No device with that ordinal.
    BadDevice = 8,
    /// A device call failed while copying.
    Device = 9,
    /// Staging memory could not be locked.
    NoMemory = 10,
    /// The mount is locked (keys purged).
    Locked = 11,
    /// A chunk failed authentication.
    Integrity = 12,
    /// The audit log cannot be written.
    Audit = 13,
    /// Any other I/O failure (the bucket could not be read).
    Io = 14,
    /// The file handle is not open.
    BadFileHandle = 15,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and checks a `struct smpfs_gpu_load` (exactly [`LOAD_LEN`] bytes).
pub fn parse_load(bytes: &[u8]) -> Result<Load, GpuError> {
    if bytes.len() != LOAD_LEN {
        return Err(GpuError::BadArgument("load request of the wrong size"));
    }
    let version = u32_at(bytes, load::ABI_VERSION);
    if version != ABI_VERSION {
        return Err(GpuError::AbiVersion {
            got: version,
            supported: ABI_VERSION,
        });
    }
    if u32_at(bytes, load::FLAGS) != 0 {
        return Err(GpuError::BadArgument("unknown flags"));
    }
    if u32_at(bytes, load::RESERVED0) != 0 || u32_at(bytes, load::RESERVED1) != 0 {
        return Err(GpuError::BadArgument("reserved fields must be zero"));
    }
    let device = u32_at(bytes, load::DEVICE);
    if device > i32::MAX as u32 {
        return Err(GpuError::BadArgument("device ordinal over INT_MAX"));
    }
    let dest_offset = u64_at(bytes, load::DEST_OFFSET);
    let file_offset = u64_at(bytes, load::FILE_OFFSET);
    let length = u64_at(bytes, load::LENGTH);
    for (what, offset) in [
        ("file offset", file_offset),
        ("destination offset", dest_offset),
    ] {
        if offset.checked_add(length).is_none() {
            return Err(GpuError::Overflow {
                what,
                offset,
                length,
            });
        }
    }
    let mut handle = [0u8; HANDLE_LEN];
    handle.copy_from_slice(&bytes[load::HANDLE..load::HANDLE + HANDLE_LEN]);
    Ok(Load {
        target: Target {
            device,
            handle,
            offset: dest_offset,
        },
        file_offset,
        length,
    })
}

/// The reply to load request `request`: the request's bytes (zero-padded or cut to
/// [`LOAD_LEN`]) with `bytes_loaded` and `error` set.
pub fn load_reply(request: &[u8], bytes_loaded: u64, detail: Detail) -> [u8; LOAD_LEN] {
    let mut reply = [0u8; LOAD_LEN];
    let n = request.len().min(LOAD_LEN);
    reply[..n].copy_from_slice(&request[..n]);
    reply[load::BYTES_LOADED..load::BYTES_LOADED + 8].copy_from_slice(&bytes_loaded.to_ne_bytes());
    reply[load::ERROR..load::ERROR + 4].copy_from_slice(&(detail as u32).to_ne_bytes());
    reply
}

/// What the info ioctl reports about an ordinary (non-volume) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Authenticated plaintext size in bytes.
    pub plaintext_size: u64,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    /// The sealed file's random id (public, from its header); zero for a volume.
    pub file_id: [u8; 16],
    /// For a virtual volume, its voxels (then `plaintext_size` is their byte count).
    pub volume: Option<VolumeShape>,
}

impl Info {
    /// The `struct smpfs_gpu_info` of this file; the volume fields are zero unless it is one.
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut out = [0u8; INFO_LEN];
        if let Some(volume) = &self.volume {
            out[info::FLAGS..info::FLAGS + 4].copy_from_slice(&INFO_VOLUME.to_ne_bytes());
            out[info::DTYPE..info::DTYPE + 4].copy_from_slice(&(volume.dtype as u32).to_ne_bytes());
            out[info::NDIM..info::NDIM + 4].copy_from_slice(&3u32.to_ne_bytes());
            for (i, extent) in volume.shape.iter().enumerate() {
                let at = info::SHAPE + 8 * i;
                out[at..at + 8].copy_from_slice(&extent.to_ne_bytes());
            }
        }
        out[info::ABI_VERSION..info::ABI_VERSION + 4].copy_from_slice(&ABI_VERSION.to_ne_bytes());
        out[info::PLAINTEXT_SIZE..info::PLAINTEXT_SIZE + 8]
            .copy_from_slice(&self.plaintext_size.to_ne_bytes());
        out[info::CHUNK_SIZE..info::CHUNK_SIZE + 4].copy_from_slice(&self.chunk_size.to_ne_bytes());
        out[info::FILE_ID..info::FILE_ID + 16].copy_from_slice(&self.file_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: u32, device: u32, dest: u64, file: u64, length: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; LOAD_LEN];
        bytes[0..4].copy_from_slice(&version.to_ne_bytes());
        bytes[8..12].copy_from_slice(&device.to_ne_bytes());
        bytes[16..20].copy_from_slice(b"/shm");
        bytes[80..88].copy_from_slice(&dest.to_ne_bytes());
        bytes[88..96].copy_from_slice(&file.to_ne_bytes());
        bytes[96..104].copy_from_slice(&length.to_ne_bytes());
        bytes
    }

    #[test]
    fn command_numbers_encode_size_and_direction() {
        assert_eq!(IOC_INFO, 0x8070_B501);
        assert_eq!(IOC_LOAD, 0xC078_B502);
        assert_eq!(Command::from_raw(IOC_INFO), Some(Command::Info));
        assert_eq!(Command::from_raw(IOC_LOAD), Some(Command::Load));
        // Our load with another size, or as a write-only command, is not ours.
        assert_eq!(Command::from_raw(ioc(IOC_READ | IOC_WRITE, 2, 128)), None);
        assert_eq!(Command::from_raw(ioc(IOC_WRITE, 2, LOAD_LEN)), None);
        assert_eq!(Command::from_raw(0x5401), None);
    }

    #[test]
    fn a_well_formed_request_parses() {
        let load = parse_load(&request(1, 3, 4096, 17, 1 << 20)).unwrap();
        assert_eq!(load.target.device, 3);
        assert_eq!(&load.target.handle[..5], b"/shm\0");
        assert_eq!(
            (load.target.offset, load.file_offset, load.length),
            (4096, 17, 1 << 20)
        );
        let edge = parse_load(&request(1, 0, 0, u64::MAX - 5, 5)).unwrap();
        assert_eq!(edge.file_offset, u64::MAX - 5);
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(matches!(
            parse_load(&request(0, 0, 0, 0, 1)),
            Err(GpuError::AbiVersion { got: 0, .. })
        ));
        assert!(matches!(
            parse_load(&request(2, 0, 0, 0, 1)),
            Err(GpuError::AbiVersion { got: 2, .. })
        ));
        for (at, what) in [(4, "flags"), (12, "reserved0"), (116, "reserved1")] {
            let mut bytes = request(1, 0, 0, 0, 1);
            bytes[at] = 1;
            assert!(
                matches!(parse_load(&bytes), Err(GpuError::BadArgument(_))),
                "{what}"
            );
        }
        assert!(matches!(
            parse_load(&request(1, 1 << 31, 0, 0, 1)),
            Err(GpuError::BadArgument(_))
        ));
        assert!(matches!(
            parse_load(&request(1, 0, 0, u64::MAX, 1)),
            Err(GpuError::Overflow {
                what: "file offset",
                ..
            })
        ));
        assert!(matches!(
            parse_load(&request(1, 0, u64::MAX - 1, 0, 2)),
            Err(GpuError::Overflow {
                what: "destination offset",
                ..
            })
        ));
        assert!(parse_load(&request(1, 0, 0, 0, 1)[..LOAD_LEN - 1]).is_err());
    }

    #[test]
    fn replies_echo_the_request_and_set_the_out_fields() {
        let req = request(1, 0, 8, 9, 10);
        let reply = load_reply(&req, 10, Detail::None);
        assert_eq!(&reply[..104], &req[..104]);
        assert_eq!(u64_at(&reply, 104), 10);
        assert_eq!(u32_at(&reply, 112), 0);
        let reply = load_reply(&req[..7], 0, Detail::PastEof);
        assert_eq!(&reply[..7], &req[..7]);
        assert_eq!(u32_at(&reply, 112), 4);
    }

    #[test]
    fn info_fills_the_file_fields_and_zeroes_the_volume_fields() {
        let info = Info {
            plaintext_size: 1 << 33,
            chunk_size: 65536,
            file_id: [7; 16],
            volume: None,
        };
        let out = info.encode();
        assert_eq!(u32_at(&out, 0), ABI_VERSION);
        assert_eq!(u32_at(&out, 4), 0, "flags: not a volume");
        assert_eq!(u64_at(&out, 8), 1 << 33);
        assert_eq!(u32_at(&out, 16), 65536);
        assert_eq!(u32_at(&out, 20), 0, "dtype: none");
        assert_eq!(&out[24..40], &[7; 16]);
        assert!(out[40..].iter().all(|&b| b == 0), "ndim, shape, reserved");
    }

    #[test]
    fn info_of_a_volume_gives_its_type_and_shape_slowest_first() {
        let info = Info {
            plaintext_size: 12 * 64 * 128 * 2,
            chunk_size: 0,
            file_id: [0; 16],
            volume: Some(VolumeShape {
                dtype: ElementType::I16,
                shape: [12, 64, 128],
            }),
        };
        let out = info.encode();
        assert_eq!(u32_at(&out, 4), INFO_VOLUME);
        assert_eq!(u32_at(&out, 20), 4, "i16");
        assert_eq!(u32_at(&out, 40), 3, "ndim");
        assert_eq!(
            [
                u64_at(&out, 48),
                u64_at(&out, 56),
                u64_at(&out, 64),
                u64_at(&out, 72)
            ],
            [12, 64, 128, 0]
        );
        assert!(out[80..].iter().all(|&b| b == 0), "reserved");
        assert_eq!(ElementType::integer(2, false), Some(ElementType::U16));
        assert_eq!(ElementType::integer(8, true), None);
    }
}
