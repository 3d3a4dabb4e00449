//! Read-only mappings of byte ranges of files that survive the file shrinking under them.
//!
//! Reading sealed chunks through a mapping spares the copy `pread` makes from the page cache
//! into a buffer: the cipher reads the page cache directly. The hazard is the file being
//! truncated while it is mapped: touching a page past the new end raises SIGBUS, which
//! would kill the mount. So every live [`MappedRange`] is registered in a fixed table, and a
//! SIGBUS handler that finds the faulting address in the table maps a page of zeros over it,
//! marks the range and returns: the read goes on, over zeros that will not authenticate,
//! and [`MappedRange::finish`] reports the truncation. A SIGBUS anywhere else is passed to
//! the handler that was installed before (Rust's, which reports stack overflows) or, if
//! there was none, takes its default action.

use std::ffi::c_void;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::libc;
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Ranges that may be mapped at once; a mapping asked for beyond that is refused, and the
/// caller reads the ordinary way.
const GUARDED: usize = 64;

/// One entry of the table the SIGBUS handler consults: the mapping's address range (`start`
/// is 0 while the entry is free) and whether a fault was repaired in it.
struct Guard {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

static GUARDS: [Guard; GUARDED] = [const {
    Guard {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    }
}; GUARDED];
static PAGE: AtomicUsize = AtomicUsize::new(0);
/// The SIGBUS disposition before ours, for faults that are not in a guarded range.
static PREVIOUS: OnceLock<SigAction> = OnceLock::new();

/// Part of the range could not be read while mapped (the file shrank, or the filesystem
/// failed to read a page): it read as zeros instead of its bytes.
#[derive(Debug, thiserror::Error)]
#[error("the file was truncated (or a page of it failed) while it was being read")]
pub struct Truncated;

/// `len` bytes of a file from `offset`, mapped read-only and guarded against truncation.
pub struct MappedRange {
    base: NonNull<c_void>,
    map_len: usize,
    /// Where the asked-for bytes start in the mapping (the offset's distance from a page).
    skip: usize,
    offset: u64,
    len: usize,
    guard: &'static Guard,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for MappedRange {}
unsafe impl Sync for MappedRange {}

impl MappedRange {
    /// Maps `file[offset..offset + len]` (`len` > 0). `Ok(None)` when every guard is in use
    /// or the filesystem cannot map files: read the ordinary way then.
    pub fn new(file: &File, offset: u64, len: usize) -> std::io::Result<Option<Self>> {
        let page = install_handler()?;
        let Some(guard) = GUARDS.iter().find(|guard| {
            guard
                .start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Ok(None);
        };
        let skip = (offset % page as u64) as usize;
        let map_len = skip + len;
        let mapped = NonZeroUsize::new(map_len).and_then(|size| {
            // SAFETY: a fresh shared read-only mapping of a file we hold open; nothing aliases it.
            unsafe {
                mman::mmap(
                    None,
                    size,
                    ProtFlags::PROT_READ,
                    MapFlags::MAP_SHARED,
                    file.as_fd(),
                    (offset - skip as u64) as libc::off_t,
                )
            }
            .ok()
        });
        let Some(base) = mapped else {
            guard.start.store(0, Ordering::Release);
            return Ok(None);
        };
        // A process may lock all its memory, present and future (`heap::protect`: a mount
        // with `-o volumes`, `smpfs inspect`); ciphertext needs no locking and must not use
        // up RLIMIT_MEMLOCK, so its pages are exempted before any is faulted in.
        // SAFETY: the range is exactly our mapping; unlocking changes no contents.
        let _ = unsafe { mman::munlock(base, map_len) };
        guard.faulted.store(false, Ordering::Relaxed);
        guard
            .end
            .store(base.as_ptr() as usize + map_len, Ordering::Release);
        guard.start.store(base.as_ptr() as usize, Ordering::Release);
        Ok(Some(MappedRange {
            base,
            map_len,
            skip,
            offset,
            len,
            guard,
        }))
    }

    /// The file's bytes `offset..offset + len`, if the mapping covers them. They may change,
    /// or turn to zeros, while they are read if another process writes or truncates the
    /// file, so they must only be read once, by code that authenticates what it read (the
    /// chunk cipher), and [`MappedRange::check`] asked afterwards.
    pub fn get(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset.checked_sub(self.offset)?).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the mapping is live for as long as `self`, and skip + start + len is
        // within it.
        Some(unsafe {
            std::slice::from_raw_parts(self.base.cast::<u8>().as_ptr().add(self.skip + start), len)
        })
    }

    /// Fails if any page of the mapping read as zeros because the file shrank (or failed)
    /// under it since it was mapped.
    pub fn check(&self) -> Result<(), Truncated> {
        if self.guard.faulted.load(Ordering::Acquire) {
            Err(Truncated)
        } else {
            Ok(())
        }
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        self.guard.start.store(usize::MAX, Ordering::Release);
        self.guard.end.store(0, Ordering::Release);
        // SAFETY: our own mapping, referenced by nothing once `self` goes.
        let _ = unsafe { mman::munmap(self.base, self.map_len) };
        self.guard.start.store(0, Ordering::Release);
    }
}

/// Installs the SIGBUS handler once; returns the page size.
fn install_handler() -> std::io::Result<usize> {
    static INSTALLED: OnceLock<Result<usize, nix::Error>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?
            .map_or(4096, |page| page as usize);
        PAGE.store(page, Ordering::Release);
        let action = SigAction::new(
            SigHandler::SigAction(on_sigbus),
            SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
            SigSet::empty(),
        );
        // SAFETY: the handler only reads atomics and calls mmap(2) and sigaction(2).
        let previous = unsafe { signal::sigaction(Signal::SIGBUS, &action) }?;
        let _ = PREVIOUS.set(previous);
        Ok(page)
    });
    installed.map_err(std::io::Error::from)
}

extern "C" fn on_sigbus(signum: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Acquire);
    for guard in &GUARDS {
        let start = guard.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX || address < start {
            continue;
        }
        if address >= guard.end.load(Ordering::Acquire) {
            continue;
        }
        let at = address & !(page - 1);
        // SAFETY: replaces one page of a live mapping of ours with zeros, which the faulting
        // read then sees; mmap(2) is safe to call in a signal handler.
        let zeros = unsafe {
            libc::mmap(
                at as *mut c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            guard.faulted.store(true, Ordering::Release);
            return;
        }
    }
    pass_on(signum, info, context);
}

/// Hands a SIGBUS that is not ours to the disposition installed before.
fn pass_on(signum: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    match PREVIOUS.get().map(SigAction::handler) {
        Some(SigHandler::SigAction(previous)) => previous(signum, info, context),
        Some(SigHandler::Handler(previous)) => previous(signum),
        // Default (or ignored, which for a fault means default): restore it and return, so
        // the faulting instruction runs again and the process dies as it would have.
        _ => {
            // SAFETY: sigaction(2) is safe to call in a signal handler.
            let _ = unsafe { signal::signal(Signal::SIGBUS, SigHandler::SigDfl) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    /// These tests need guards to be free, and one of them takes them all.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn file_of(len: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        file.write_all(&bytes).unwrap();
        (dir, File::open(&path).unwrap())
    }

    #[test]
    fn maps_the_asked_range_at_any_offset() {
        let _one = ONE_AT_A_TIME.lock().unwrap();
        let (_dir, file) = file_of(3 * 4096 + 100);
        let map = MappedRange::new(&file, 4097, 8000).unwrap().unwrap();
        let expected: Vec<u8> = (4097..4097 + 8000).map(|i| (i % 251) as u8 + 1).collect();
        assert_eq!(map.get(4097, 8000).unwrap(), &expected[..]);
        assert_eq!(map.get(5000, 100).unwrap(), &expected[903..1003]);
        assert!(map.get(4096, 10).is_none(), "starts before the mapping");
        assert!(map.get(4097 + 7990, 11).is_none(), "ends after it");
        map.check().unwrap();
    }

    #[test]
    fn truncation_under_the_mapping_reads_zeros_and_is_reported() {
        let _one = ONE_AT_A_TIME.lock().unwrap();
        let (dir, file) = file_of(4 * 4096);
        let map = MappedRange::new(&file, 10, 4 * 4096 - 10).unwrap().unwrap();
        File::options()
            .write(true)
            .open(dir.path().join("f"))
            .unwrap()
            .set_len(4096)
            .unwrap();
        // Without the handler this read would kill the test process with SIGBUS.
        let tail: Vec<u8> = map
            .get(3 * 4096, 4096)
            .unwrap()
            .iter()
            .map(|byte| std::hint::black_box(*byte))
            .collect();
        assert!(tail.iter().all(|&byte| byte == 0));
        assert!(map.check().is_err());
        drop(map);
        // The guard is released and clean for the next mapping.
        let again = MappedRange::new(&file, 0, 4096).unwrap().unwrap();
        assert_eq!(again.get(0, 1).unwrap(), [1]);
        again.check().unwrap();
    }

    #[test]
    fn a_mapping_past_the_table_is_refused_not_unguarded() {
        let _one = ONE_AT_A_TIME.lock().unwrap();
        let (_dir, file) = file_of(4096);
        let maps: Vec<MappedRange> =
            std::iter::from_fn(|| MappedRange::new(&file, 0, 4096).unwrap())
                .take(GUARDED + 1)
                .collect();
        // Other modules' tests may hold guards too, so fewer than GUARDED may fit, but never
        // more: the iterator ended on a refusal.
        assert!(!maps.is_empty() && maps.len() <= GUARDED);
        drop(maps);
        assert!(MappedRange::new(&file, 0, 4096).unwrap().is_some());
    }
}
