//! Loading decrypted files straight into a client's GPU memory.
//!
//! A client opens a file through the mount and issues the load ioctl ([`abi`]) with the
//! CUDA IPC handle of a device allocation it owns. The vault checks and audits the request
//! like a read; the [`Loader`] then streams the file's authenticated plaintext from the
//! chunk cache through a small locked *staging* area into the destination, copying one
//! staging buffer asynchronously while the next is filled.
//!
//! - [`abi`]: the ioctl commands and their fixed-width argument structs;
//! - [`DeviceSink`]: where loads go — [`cuda`] (the CUDA driver, loaded at run time) or
//!   [`host`] (POSIX shared memory, for tests without a GPU); the pipeline is the same;
//! - [`Loader`]: the staging area, the transfer pipeline and the worker threads.
//!
//! Invariants:
//! - staging memory is locked, non-dumpable and excluded from forks like the chunk cache;
//!   it is zeroized after every load and at purge, and never holds unauthenticated bytes;
//! - a staging buffer is refilled only after the copy out of it completed, and a load's
//!   staging set is zeroized only after every copy out of it completed;
//! - nothing is written to a destination before it was opened and checked to hold the
//!   whole requested range;
//! - the CUDA driver is touched only on the first load (never before the daemon forks), and
//!   only after checking that the driver library is present.

pub mod abi;
pub mod cuda;
pub mod host;
mod pipeline;

use std::str::FromStr;

pub use pipeline::{Loader, Transfer};

use crate::cache::{CacheError, LockedRegion};

/// Bytes of a CUDA IPC memory handle (`cudaIpcMemHandle_t`), and of the handle field.
pub const HANDLE_LEN: usize = 64;

/// Errors of GPU loads; `fs` maps each to one errno and one ABI detail code.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("ABI version {got} is not supported; this smpfs speaks version {supported}")]
    AbiVersion { got: u32, supported: u32 },
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
    #[error("{what} {offset} + length {length} overflows")]
    Overflow {
        what: &'static str,
        offset: u64,
        length: u64,
    },
    #[error(
        "destination too small: {length} bytes at offset {offset} do not fit in its {size} bytes"
    )]
    DestinationTooSmall { offset: u64, length: u64, size: u64 },
    #[error("bad destination handle: {0}")]
    BadHandle(String),
    #[error(
        "no CUDA driver: {0}; GPU loads need the NVIDIA driver (libcuda.so.1) on the library path"
    )]
    NoDriver(String),
    #[error("no GPU device {device}: this machine has {count}")]
    BadDevice { device: u32, count: u32 },
    #[error("{call} failed: {reason}")]
    Device { call: &'static str, reason: String },
    #[error("cannot lock GPU staging memory: {0}")]
    Staging(#[from] CacheError),
}

/// Which [`DeviceSink`] a mount loads into (`-o gpu_sink=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkKind {
    /// CUDA device memory through the driver API (the default).
    #[default]
    Cuda,
    /// POSIX shared memory named by the handle: for tests on machines without a GPU.
    Host,
}

impl FromStr for SinkKind {
    type Err = String;

    /// `cuda` or `host`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cuda" => Ok(SinkKind::Cuda),
            "host" => Ok(SinkKind::Host),
            _ => Err(format!("expected `cuda` or `host`, not {s:?}")),
        }
    }
}

/// A destination allocation named by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// CUDA device ordinal (the host sink has one device, 0).
    pub device: u32,
    /// The allocation's handle: a CUDA IPC handle, or for the host sink a NUL-terminated
    /// POSIX shared memory name.
    pub handle: [u8; HANDLE_LEN],
    /// Where the load starts, in bytes from the start of the allocation.
    pub offset: u64,
}

/// One load request, checked for well-formedness (not yet against the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Where the bytes go.
    pub target: Target,
    /// First plaintext byte of the file to load.
    pub file_offset: u64,
    /// Bytes to load; `file_offset + length` and `target.offset + length` do not overflow.
    pub length: u64,
}

/// Where loads go: a memory space whose allocations clients name by handle.
pub trait DeviceSink: Send + Sync {
    /// Short name for logs and audit records (`cuda`, `host`).
    fn name(&self) -> &'static str;

    /// Opens `target` for a load of `length` bytes by user `uid`, checking that the device
    /// exists and that `length` bytes at `target.offset` fit in the allocation. `staging`
    /// is the memory copies will come from; it outlives every destination and is made ready
    /// for copies once (CUDA registers it as pinned memory) until [`DeviceSink::release`].
    fn open(
        &self,
        target: &Target,
        length: u64,
        uid: u32,
        staging: &LockedRegion,
    ) -> Result<Box<dyn Destination>, GpuError>;

    /// Forgets `staging` before it is unmapped (CUDA unregisters it).
    fn release(&self, staging: &LockedRegion);
}

/// An opened destination allocation with a range of `length` bytes checked to fit.
/// Dropping it waits for every copy in flight, then closes it.
pub trait Destination {
    /// Starts copying `src` to `offset` bytes into the checked range, tracked as `slot`
    /// (0 or 1); fails if it would leave the range.
    ///
    /// # Safety
    /// `src` must stay valid and unchanged until [`Destination::wait`] for `slot` or
    /// [`Destination::finish`] returns (the copy may still be reading it).
    unsafe fn copy_async(&mut self, slot: usize, src: &[u8], offset: u64) -> Result<(), GpuError>;

    /// Waits until the last copy started on `slot` completed.
    fn wait(&mut self, slot: usize) -> Result<(), GpuError>;

    /// Waits for every copy started and closes the destination; later calls do nothing.
    fn finish(&mut self) -> Result<(), GpuError>;
}

/// The sink of `kind`; creating it touches no driver.
pub fn sink(kind: SinkKind) -> Box<dyn DeviceSink> {
    match kind {
        SinkKind::Cuda => Box::new(cuda::CudaSink::new()),
        SinkKind::Host => Box::new(host::HostSink),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_kinds_parse() {
        assert_eq!("cuda".parse(), Ok(SinkKind::Cuda));
        assert_eq!("host".parse(), Ok(SinkKind::Host));
        assert!("gpu".parse::<SinkKind>().is_err());
        assert_eq!(SinkKind::default(), SinkKind::Cuda);
        assert_eq!(sink(SinkKind::Host).name(), "host");
        assert_eq!(sink(SinkKind::Cuda).name(), "cuda");
    }
}
