//! The CUDA sink: device allocations of client processes, opened by CUDA IPC handle and
//! filled with asynchronous host-to-device copies from pinned staging memory.
//!
//! The driver is loaded at run time (`cudarc` with `dynamic-loading`): smpfs builds and runs
//! without it, and the first load on a machine without it fails with [`GpuError::NoDriver`].
//!
//! Invariants:
//! - nothing in the driver is called before [`sys::is_culib_present`] said it is there
//!   (a missing library or symbol would panic), and nothing at all before the first load,
//!   which runs in the daemon after it forked;
//! - the staging region is registered as pinned (`PORTABLE`, valid in every context) once,
//!   and unregistered before it is unmapped;
//! - a handle is opened once per device however many loads use it at the same time, and
//!   closed when the last of them ends;
//! - a destination is used and dropped on the thread that opened it, with its device's
//!   primary context current there; dropping it synchronizes its stream before anything
//!   else, so no copy can still read staging memory afterwards.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, OnceLock};

use cudarc::driver::result::DriverError;
use cudarc::driver::sys;
use parking_lot::Mutex;

use super::{Destination, DeviceSink, GpuError, Target, HANDLE_LEN};
use crate::cache::LockedRegion;

/// Loads into CUDA device memory of other processes.
pub struct CudaSink {
    driver: OnceLock<Result<u32, String>>,
    contexts: Mutex<HashMap<u32, Context>>,
    /// Staging regions registered as pinned memory, by address.
    pinned: Mutex<HashMap<usize, Context>>,
    mappings: Arc<Mutex<HashMap<MappingKey, Mapping>>>,
}

/// A retained primary context of a device.
#[derive(Clone, Copy)]
struct Context {
    device: sys::CUdevice,
    context: sys::CUcontext,
}

// SAFETY: a CUcontext is a process-wide driver handle, usable from any thread.
unsafe impl Send for Context {}

/// An opened IPC handle: (device ordinal, handle).
type MappingKey = (u32, [u8; HANDLE_LEN]);

struct Mapping {
    /// Base of the mapped allocation in this process.
    ptr: sys::CUdeviceptr,
    /// Bytes from `ptr` to the end of the allocation.
    size: u64,
    /// Destinations using it.
    users: usize,
}

/// `name: description` of a driver error.
fn describe(error: DriverError) -> String {
    let text = |s: Result<&std::ffi::CStr, DriverError>| {
        s.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", error.0))
    };
    format!(
        "{}: {}",
        text(error.error_name()),
        text(error.error_string())
    )
}

fn device_error(call: &'static str) -> impl Fn(DriverError) -> GpuError {
    move |error| GpuError::Device {
        call,
        reason: describe(error),
    }
}

impl Default for CudaSink {
    fn default() -> Self {
        Self::new()
    }
}

impl CudaSink {
    /// A sink that has not touched the driver yet.
    pub fn new() -> Self {
        CudaSink {
            driver: OnceLock::new(),
            contexts: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
            mappings: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Loads and initialises the driver once; returns the number of devices.
    fn devices(&self) -> Result<u32, GpuError> {
        let init = self.driver.get_or_init(|| {
            // SAFETY: only tries to load the library; calls nothing in it.
            if !unsafe { sys::is_culib_present() } {
                return Err("libcuda.so could not be loaded".to_owned());
            }
            // SAFETY: the library is present, and cuInit may be called at any time.
            unsafe { sys::cuInit(0) }
                .result()
                .map_err(|e| format!("cuInit: {}", describe(e)))?;
            let mut count = 0;
            // SAFETY: the driver is initialised; `count` is a valid out pointer.
            unsafe { sys::cuDeviceGetCount(&mut count) }
                .result()
                .map_err(|e| format!("cuDeviceGetCount: {}", describe(e)))?;
            Ok(count.max(0) as u32)
        });
        init.clone().map_err(GpuError::NoDriver)
    }

    /// The primary context of `device`, retained on first use.
    fn context(&self, device: u32) -> Result<Context, GpuError> {
        let count = self.devices()?;
        if device >= count {
            return Err(GpuError::BadDevice { device, count });
        }
        let mut contexts = self.contexts.lock();
        if let Some(context) = contexts.get(&device) {
            return Ok(*context);
        }
        let mut dev = 0;
        // SAFETY: the driver is initialised and `device` is a valid ordinal.
        unsafe { sys::cuDeviceGet(&mut dev, device as i32) }
            .result()
            .map_err(device_error("cuDeviceGet"))?;
        let mut context = std::ptr::null_mut();
        // SAFETY: `dev` is a device handle from cuDeviceGet.
        unsafe { sys::cuDevicePrimaryCtxRetain(&mut context, dev) }
            .result()
            .map_err(device_error("cuDevicePrimaryCtxRetain"))?;
        let context = Context {
            device: dev,
            context,
        };
        contexts.insert(device, context);
        Ok(context)
    }

    /// Registers `staging` as pinned memory once (with `context` current).
    fn pin(&self, staging: &LockedRegion, context: Context) -> Result<(), GpuError> {
        let mut pinned = self.pinned.lock();
        if pinned.contains_key(&staging.addr()) {
            return Ok(());
        }
        // SAFETY: the region is a live, page-aligned mapping of `len` bytes that stays
        // mapped until `release` unregisters it.
        unsafe {
            sys::cuMemHostRegister_v2(
                staging.addr() as *mut c_void,
                staging.len(),
                sys::CU_MEMHOSTREGISTER_PORTABLE,
            )
        }
        .result()
        .map_err(device_error("cuMemHostRegister"))?;
        tracing::info!(bytes = staging.len(), "GPU staging memory pinned");
        pinned.insert(staging.addr(), context);
        Ok(())
    }

    /// Opens (or shares) the mapping of `handle` on `device`, with its context current;
    /// returns its base and size.
    fn map(&self, key: MappingKey) -> Result<(sys::CUdeviceptr, u64), GpuError> {
        let mut mappings = self.mappings.lock();
        if let Some(mapping) = mappings.get_mut(&key) {
            mapping.users += 1;
            return Ok((mapping.ptr, mapping.size));
        }
        let handle = sys::CUipcMemHandle {
            reserved: key.1.map(|b| b as c_char),
        };
        let bad = |call: &str, e| GpuError::BadHandle(format!("{call}: {}", describe(e)));
        let mut ptr = 0;
        // SAFETY: a context is current; the driver validates the handle.
        unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut ptr,
                handle,
                sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        }
        .result()
        .map_err(|e| bad("cuIpcOpenMemHandle", e))?;
        let (mut base, mut size) = (0, 0);
        // SAFETY: `ptr` was just mapped in the current context.
        let range = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr) }.result();
        if let Err(e) = range {
            // SAFETY: closing the mapping opened above, used by nobody.
            let _ = unsafe { sys::cuIpcCloseMemHandle(ptr) };
            return Err(bad("cuMemGetAddressRange", e));
        }
        let size = (base + size as u64).saturating_sub(ptr);
        mappings.insert(
            key,
            Mapping {
                ptr,
                size,
                users: 1,
            },
        );
        Ok((ptr, size))
    }
}

/// Forgets one user of the mapping `key`; closes it when it was the last (with its
/// context current).
fn unmap(mappings: &Mutex<HashMap<MappingKey, Mapping>>, key: &MappingKey) {
    let mut mappings = mappings.lock();
    let Some(mapping) = mappings.get_mut(key) else {
        return;
    };
    mapping.users -= 1;
    if mapping.users == 0 {
        let ptr = mapping.ptr;
        mappings.remove(key);
        // SAFETY: the mapping was opened in this context and nothing uses it any more.
        if let Err(e) = unsafe { sys::cuIpcCloseMemHandle(ptr) }.result() {
            tracing::warn!("cuIpcCloseMemHandle: {}", describe(e));
        }
    }
}

/// Makes a context current on this thread until dropped.
struct Current;

impl Current {
    fn push(context: Context) -> Result<Current, GpuError> {
        // SAFETY: the context is a retained primary context.
        unsafe { sys::cuCtxPushCurrent_v2(context.context) }
            .result()
            .map_err(device_error("cuCtxPushCurrent"))?;
        Ok(Current)
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let mut popped = std::ptr::null_mut();
        // SAFETY: pops the context this guard pushed on this thread.
        let _ = unsafe { sys::cuCtxPopCurrent_v2(&mut popped) };
    }
}

impl DeviceSink for CudaSink {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn open(
        &self,
        target: &Target,
        length: u64,
        _uid: u32,
        staging: &LockedRegion,
    ) -> Result<Box<dyn Destination>, GpuError> {
        let context = self.context(target.device)?;
        let current = Current::push(context)?;
        self.pin(staging, context)?;
        let key = (target.device, target.handle);
        let (base, size) = self.map(key)?;
        // From here on, dropping `destination` closes the mapping and pops the context.
        let mut destination = CudaDestination {
            mappings: Arc::clone(&self.mappings),
            key,
            start: base,
            length,
            stream: std::ptr::null_mut(),
            events: [std::ptr::null_mut(); 2],
            recorded: [false; 2],
            open: true,
            _current: current,
        };
        if target
            .offset
            .checked_add(length)
            .is_none_or(|end| end > size)
        {
            return Err(GpuError::DestinationTooSmall {
                offset: target.offset,
                length,
                size,
            });
        }
        destination.start = base + target.offset;
        // SAFETY: a context is current; the out pointers are fields of `destination`.
        unsafe {
            sys::cuStreamCreate(
                &mut destination.stream,
                sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
            )
            .result()
            .map_err(device_error("cuStreamCreate"))?;
            for event in &mut destination.events {
                sys::cuEventCreate(event, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
                    .result()
                    .map_err(device_error("cuEventCreate"))?;
            }
        }
        Ok(Box::new(destination))
    }

    fn release(&self, staging: &LockedRegion) {
        let Some(context) = self.pinned.lock().remove(&staging.addr()) else {
            return;
        };
        let Ok(_current) = Current::push(context) else {
            return;
        };
        // SAFETY: the region was registered by `pin` and no copy uses it any more.
        if let Err(e) = unsafe { sys::cuMemHostUnregister(staging.addr() as *mut c_void) }.result()
        {
            tracing::warn!("cuMemHostUnregister: {}", describe(e));
        }
    }
}

impl Drop for CudaSink {
    fn drop(&mut self) {
        for context in self.contexts.lock().values() {
            // SAFETY: releases the retain of `context` (its destinations are gone).
            let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(context.device) };
        }
    }
}

/// An opened device allocation, with a stream and one event per staging slot.
struct CudaDestination {
    mappings: Arc<Mutex<HashMap<MappingKey, Mapping>>>,
    key: MappingKey,
    /// Device address of the first byte of the checked range.
    start: sys::CUdeviceptr,
    length: u64,
    stream: sys::CUstream,
    events: [sys::CUevent; 2],
    recorded: [bool; 2],
    open: bool,
    /// Declared last: dropped after `Drop::drop` released everything above.
    _current: Current,
}

impl Destination for CudaDestination {
    unsafe fn copy_async(&mut self, slot: usize, src: &[u8], offset: u64) -> Result<(), GpuError> {
        if !self.open {
            return Err(GpuError::BadArgument("copy after finish"));
        }
        if offset
            .checked_add(src.len() as u64)
            .is_none_or(|end| end > self.length)
        {
            return Err(GpuError::BadArgument("copy outside the checked range"));
        }
        // SAFETY: the range lies in the opened allocation (checked above and at open); the
        // caller keeps `src`, which lies in pinned staging memory, unchanged until `wait`.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                self.start + offset,
                src.as_ptr().cast(),
                src.len(),
                self.stream,
            )
            .result()
            .map_err(device_error("cuMemcpyHtoDAsync"))?;
            sys::cuEventRecord(self.events[slot], self.stream)
                .result()
                .map_err(device_error("cuEventRecord"))?;
        }
        self.recorded[slot] = true;
        Ok(())
    }

    fn wait(&mut self, slot: usize) -> Result<(), GpuError> {
        if self.recorded[slot] {
            // SAFETY: the event was created and recorded on this destination's stream.
            unsafe { sys::cuEventSynchronize(self.events[slot]) }
                .result()
                .map_err(device_error("cuEventSynchronize"))?;
            self.recorded[slot] = false;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), GpuError> {
        if !std::mem::replace(&mut self.open, false) {
            return Ok(());
        }
        let mut synced = Ok(());
        // SAFETY: every handle below was created in `open` (null ones are skipped) in the
        // context current on this thread, and is destroyed exactly once.
        unsafe {
            if !self.stream.is_null() {
                synced = sys::cuStreamSynchronize(self.stream)
                    .result()
                    .map_err(device_error("cuStreamSynchronize"));
            }
            for event in self.events {
                if !event.is_null() {
                    let _ = sys::cuEventDestroy_v2(event);
                }
            }
            if !self.stream.is_null() {
                let _ = sys::cuStreamDestroy_v2(self.stream);
            }
        }
        unmap(&self.mappings, &self.key);
        synced
    }
}

impl Drop for CudaDestination {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("closing a GPU destination: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver (CI), the first load says so and nothing panics.
    #[test]
    fn without_a_driver_opening_fails_with_no_driver() {
        // SAFETY: only probes for the library.
        if unsafe { sys::is_culib_present() } {
            return;
        }
        let sink = CudaSink::new();
        let target = Target {
            device: 0,
            handle: [0; HANDLE_LEN],
            offset: 0,
        };
        let staging = LockedRegion::new(4096).unwrap();
        for _ in 0..2 {
            let error = sink.open(&target, 1, 0, &staging).map(|_| ()).unwrap_err();
            assert!(
                matches!(&error, GpuError::NoDriver(why) if why.contains("libcuda")),
                "{error}"
            );
        }
        sink.release(&staging);
    }
}
