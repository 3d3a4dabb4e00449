//! One page of memory for a workstation's secret key: mlocked (never swapped), excluded from
//! core dumps, zeroized and unmapped on drop.
//!
//! Unlike the read cache's mappings, the page is inherited by `fork` (the mount loads its
//! identity, then daemonizes). The kernel does not carry a lock over a fork, so the child
//! calls [`LockedSecret::relock`].

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};
use x25519_dalek::StaticSecret;

/// A `StaticSecret` that lives only in its own locked page.
pub struct LockedSecret {
    page: NonNull<c_void>,
}

// SAFETY: the page is owned by this value alone and holds plain bytes.
unsafe impl Send for LockedSecret {}
unsafe impl Sync for LockedSecret {}

/// Bytes mapped per secret: one page on every platform smpfs runs on.
const PAGE: usize = 4096;

impl LockedSecret {
    /// Maps and locks a page, then builds the secret from `bytes` inside it. The caller
    /// zeroizes its own copy of `bytes`. If the page cannot be locked (RLIMIT_MEMLOCK spent)
    /// it says so in the log and goes on: the mount's cache, which needs far more locked
    /// memory, fails closed in that case anyway. Panics only if one page cannot be mapped.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let len = NonZeroUsize::new(PAGE).expect("non-zero");
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let page = unsafe {
            mman::mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .expect("out of memory mapping one page for a secret key");
        let locked = LockedSecret { page };
        // SAFETY: the range is exactly our mapping.
        if let Err(error) = unsafe { mman::madvise(page, PAGE, MmapAdvise::MADV_DONTDUMP) } {
            tracing::warn!(%error, "cannot exclude the secret key's page from core dumps");
        }
        if let Err(error) = locked.relock() {
            tracing::warn!(
                %error,
                "cannot lock the secret key's page in memory (RLIMIT_MEMLOCK): it could be swapped"
            );
        }
        // SAFETY: the page is writable, page-aligned (enough for a byte array) and large
        // enough; nothing else points into it.
        unsafe {
            page.cast::<StaticSecret>()
                .as_ptr()
                .write(StaticSecret::from(*bytes))
        };
        locked
    }

    /// Locks the page (again): needed after `fork`, which does not inherit locks.
    pub fn relock(&self) -> std::io::Result<()> {
        // SAFETY: the range is exactly our mapping; mlock changes no contents.
        unsafe { mman::mlock(self.page, PAGE) }.map_err(std::io::Error::from)
    }

    /// The secret, for key agreement.
    pub fn secret(&self) -> &StaticSecret {
        // SAFETY: `new` wrote a valid secret there, and it stays until drop.
        unsafe { self.page.cast::<StaticSecret>().as_ref() }
    }
}

impl Drop for LockedSecret {
    fn drop(&mut self) {
        // SAFETY: the secret was written by `new` and is dropped once; StaticSecret zeroizes
        // itself on drop. Then the page is ours to unmap.
        unsafe {
            std::ptr::drop_in_place(self.page.cast::<StaticSecret>().as_ptr());
            let _ = mman::munmap(self.page, PAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping in /proc/self/smaps that holds `address`.
    fn vm_flags(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(range, _)| {
                let (start, end) = range.split_once('-')?;
                Some((
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                ))
            });
            if let Some((start, end)) = range {
                inside = (start..end).contains(&address);
            } else if inside && line.starts_with("VmFlags:") {
                return line.to_owned();
            }
        }
        panic!("no mapping holds {address:x}")
    }

    #[test]
    fn the_secret_page_is_locked_and_not_dumped() {
        let locked = LockedSecret::new(&[7u8; 32]);
        assert_eq!(locked.secret().to_bytes(), [7u8; 32]);
        let flags = vm_flags(locked.page.as_ptr() as usize);
        assert!(flags.contains(" lo"), "not locked: {flags}");
        assert!(flags.contains(" dd"), "not excluded from dumps: {flags}");
    }
}
