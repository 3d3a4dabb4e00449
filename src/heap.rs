//! Heap hygiene for commands that must hold plaintext in ordinary heap memory (DICOM parsing
//! in `seal --deidentify` and `inspect`): a global allocator that wipes every block it frees
//! once [`protect`] has run, and `mlockall` so no heap page is ever swapped out.
//!
//! The same allocator can refuse single allocations above a per-thread limit
//! ([`with_allocation_limit`]), so a parser fed a malformed length fails cleanly (fallible
//! reservations see an error) instead of allocating and locking gigabytes.
//!
//! The `smpfs` binary installs [`ZeroOnFree`] as its global allocator; until [`protect`] is
//! called it behaves exactly like the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bit of `CapEff` in /proc/self/status for CAP_IPC_LOCK.
const CAP_IPC_LOCK: u64 = 1 << 14;

static WIPE: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Largest single allocation this thread may make now.
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Whether an allocation of `size` bytes exceeds this thread's limit.
#[inline]
fn over_limit(size: usize) -> bool {
    LIMIT.try_with(|limit| size > limit.get()).unwrap_or(false)
}

/// Runs `f` with every single heap allocation on this thread limited to `max_bytes`
/// (when [`ZeroOnFree`] is the global allocator): a larger one fails, which fallible
/// reservations (`try_reserve`) report as an error and infallible ones abort on.
pub fn with_allocation_limit<R>(max_bytes: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.with(|limit| limit.set(self.0));
        }
    }
    let _restore = Restore(LIMIT.with(|limit| limit.replace(max_bytes)));
    f()
}

/// Errors in protecting the heap.
#[derive(Debug, thiserror::Error)]
pub enum HeapError {
    #[error("the zero-on-free allocator is not this program's global allocator")]
    NotInstalled,
    #[error(
        "cannot lock this process's memory (RLIMIT_MEMLOCK is {limit} bytes and \
         CAP_IPC_LOCK is missing): run as root, or raise the limit (`ulimit -l unlimited`, \
         or LimitMEMLOCK=infinity in a systemd unit)"
    )]
    MemlockLimit { limit: u64 },
    #[error("mlockall failed: {0} (run as root, or raise RLIMIT_MEMLOCK: `ulimit -l unlimited`)")]
    Mlockall(#[source] std::io::Error),
}

/// The system allocator, plus: once [`protect`] has run, every freed or moved block is
/// overwritten with zeros (`explicit_bzero`) before it goes back to the system.
pub struct ZeroOnFree;

impl ZeroOnFree {
    #[inline]
    fn mark_installed() {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
    }
}

/// Overwrites `len` bytes at `ptr` with zeros in a way the compiler cannot elide.
///
/// # Safety
/// `ptr..ptr + len` must be writable memory owned by the caller.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller owns the range; explicit_bzero is never optimised away.
    unsafe { libc::explicit_bzero(ptr.cast(), len) };
}

// SAFETY: every method forwards to `System` with the same layout; wiping only writes inside
// the block being freed, and `realloc` returns a block of the requested layout.
unsafe impl GlobalAlloc for ZeroOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::mark_installed();
        if over_limit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::mark_installed();
        if over_limit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WIPE.load(Ordering::Relaxed) {
            // SAFETY: the block is ours until it is handed back below.
            unsafe { wipe(ptr, layout.size()) };
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if over_limit(new_size) {
            return std::ptr::null_mut();
        }
        if !WIPE.load(Ordering::Relaxed) {
            // SAFETY: forwarded unchanged.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // The system realloc may move the block and free the old one unwiped: move it
        // ourselves instead.
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero-sized layout, as the caller guarantees.
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Whether freed heap blocks are being wiped now.
pub fn is_protected() -> bool {
    WIPE.load(Ordering::Relaxed)
}

/// From now on, wipes every heap block when it is freed and locks all of the process's
/// memory, present and future, into RAM (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`).
/// Fails, changing nothing, if [`ZeroOnFree`] is not the global allocator or the memory
/// cannot all be locked (no CAP_IPC_LOCK and a finite RLIMIT_MEMLOCK).
pub fn protect() -> Result<(), HeapError> {
    drop(std::hint::black_box(Box::new(0u8)));
    if !INSTALLED.load(Ordering::Relaxed) {
        return Err(HeapError::NotInstalled);
    }
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_err(|e| HeapError::Mlockall(e.into()))?;
    if limit != libc::RLIM_INFINITY && !has_ipc_lock() {
        return Err(HeapError::MemlockLimit { limit });
    }
    // SAFETY: mlockall takes only flags and affects only this process's mappings.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc != 0 {
        return Err(HeapError::Mlockall(std::io::Error::last_os_error()));
    }
    WIPE.store(true, Ordering::SeqCst);
    Ok(())
}

/// How many bytes this process may lock: `None` when it is not limited (CAP_IPC_LOCK, or
/// an infinite RLIMIT_MEMLOCK).
pub fn lockable_bytes() -> Option<u64> {
    let (limit, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).ok()?;
    (limit != libc::RLIM_INFINITY && !has_ipc_lock()).then_some(limit)
}

/// Whether this process holds CAP_IPC_LOCK (which lifts RLIMIT_MEMLOCK).
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & CAP_IPC_LOCK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protect_refuses_without_the_allocator() {
        // The test harness uses the system allocator, so protection must refuse.
        assert!(matches!(protect(), Err(HeapError::NotInstalled)));
    }

    // These tests never call `ZeroOnFree::alloc`, which would mark the allocator installed
    // in the test process.
    #[test]
    fn allocation_limit_applies_to_this_thread_only() {
        with_allocation_limit(1 << 16, || {
            assert!(over_limit((1 << 16) + 1));
            assert!(!over_limit(1 << 16));
            std::thread::spawn(|| assert!(!over_limit(1 << 30)))
                .join()
                .unwrap();
            let small = Layout::from_size_align(16, 8).unwrap();
            // SAFETY: a valid block from `System`, grown through the limit (refused, so
            // still ours) and then freed.
            unsafe {
                let p = System.alloc(small);
                assert!(ZeroOnFree.realloc(p, small, 1 << 20).is_null());
                System.dealloc(p, small);
            }
        });
        assert!(!over_limit(1 << 30));
    }

    #[test]
    fn realloc_keeps_contents_and_alignment() {
        WIPE.store(true, Ordering::SeqCst);
        let alloc = ZeroOnFree;
        let layout = Layout::from_size_align(24, 16).unwrap();
        // SAFETY: a valid layout; the block is written only within its size and freed once.
        // The first block comes from `System` so the test never marks the allocator installed.
        unsafe {
            let p = System.alloc(layout);
            assert!(!p.is_null());
            for i in 0..24 {
                *p.add(i) = i as u8 + 1;
            }
            let q = alloc.realloc(p, layout, 4096);
            assert_eq!(q as usize % 16, 0);
            assert_eq!(
                std::slice::from_raw_parts(q, 24),
                &(1..=24).collect::<Vec<u8>>()[..]
            );
            let r = alloc.realloc(q, Layout::from_size_align(4096, 16).unwrap(), 8);
            assert_eq!(std::slice::from_raw_parts(r, 8), &[1, 2, 3, 4, 5, 6, 7, 8]);
            alloc.dealloc(r, Layout::from_size_align(8, 16).unwrap());
        }
        WIPE.store(false, Ordering::SeqCst);
    }
}
