//! Anonymous memory that is mlocked, excluded from core dumps and from forked children, and
//! on transparent huge pages where the kernel offers them.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};
use zeroize::Zeroize;

use super::CacheError;

/// A locked mapping. Zeroized, unlocked and unmapped when the last piece is dropped.
pub struct LockedRegion {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the region is plain memory; access to its bytes goes through `LockedBuf`s, which
// are disjoint, so sharing the region handle itself across threads is sound.
unsafe impl Send for LockedRegion {}
unsafe impl Sync for LockedRegion {}

impl LockedRegion {
    /// Maps and locks `len` bytes (rounded up to whole pages by the kernel).
    pub fn new(len: usize) -> Result<Self, CacheError> {
        let size = NonZeroUsize::new(len).ok_or(CacheError::TooSmall { bytes: 0, min: 1 })?;
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|source| CacheError::MapFailed { bytes: len, source })?;
        let region = LockedRegion { ptr, len };
        for advice in [MmapAdvise::MADV_DONTDUMP, MmapAdvise::MADV_DONTFORK] {
            // SAFETY: the range is exactly our mapping.
            unsafe { mman::madvise(ptr, len, advice) }
                .map_err(|source| CacheError::MapFailed { bytes: len, source })?;
        }
        // Huge pages where the kernel offers them, asked for before `mlock` faults the pages
        // in: a 64 MiB read-ahead window then spans 32 TLB entries instead of 16 384
        // (+4–8 % on a local first read, PERFORMANCE.md).
        // SAFETY: the range is exactly our mapping.
        if let Err(error) = unsafe { mman::madvise(ptr, len, MmapAdvise::MADV_HUGEPAGE) } {
            tracing::debug!(%error, "no transparent huge pages for the cache");
        }
        // SAFETY: the range is exactly our mapping.
        unsafe { mman::mlock(ptr, len) }
            .map_err(|source| CacheError::MlockFailed { bytes: len, source })?;
        Ok(region)
    }

    /// Unlocks the whole mapping (pages may be swapped from now on): only for a region
    /// already zeroized that will hold no plaintext again.
    pub fn unlock(&self) {
        // SAFETY: the range is exactly our mapping; munlock changes no contents.
        if let Err(error) = unsafe { mman::munlock(self.ptr, self.len) } {
            tracing::warn!(%error, "munlock of the zeroized cache failed");
        }
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Start address of the mapping (for inspecting it in /proc).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether the region is empty (never, once created).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cuts the region into `first_count` buffers of `first_len` bytes followed by
    /// `second_count` buffers of `second_len` bytes. Panics if they do not fit.
    pub fn carve(
        region: &Arc<LockedRegion>,
        first_len: usize,
        first_count: usize,
        second_len: usize,
        second_count: usize,
    ) -> Vec<LockedBuf> {
        assert!(first_len * first_count + second_len * second_count <= region.len);
        let lens = std::iter::repeat_n(first_len, first_count)
            .chain(std::iter::repeat_n(second_len, second_count));
        let mut offset = 0;
        lens.map(|len| {
            // SAFETY: offset + len stays within the mapping (asserted above).
            let ptr = unsafe { region.ptr.cast::<u8>().add(offset) };
            offset += len;
            LockedBuf {
                ptr,
                len,
                _region: Arc::clone(region),
            }
        })
        .collect()
    }
}

impl Drop for LockedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping is live and no `LockedBuf` remains (each holds an Arc).
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>().as_ptr(), self.len) };
        bytes.zeroize();
        // SAFETY: unlocking and unmapping our own mapping, which nothing references now.
        unsafe {
            let _ = mman::munlock(self.ptr, self.len);
            let _ = mman::munmap(self.ptr, self.len);
        }
    }
}

/// An exclusive piece of a [`LockedRegion`].
pub struct LockedBuf {
    ptr: NonNull<u8>,
    len: usize,
    _region: Arc<LockedRegion>,
}

// SAFETY: a LockedBuf is the only handle to its bytes, like a Box<[u8]>.
unsafe impl Send for LockedBuf {}
unsafe impl Sync for LockedBuf {}

impl Deref for LockedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is inside the live region and owned by this buffer alone.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for LockedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}
