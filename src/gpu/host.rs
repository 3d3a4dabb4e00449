//! The host sink: loads into POSIX shared memory instead of a GPU, so the whole ioctl path
//! runs in tests on machines without one (`-o gpu_sink=host`, test-only).
//!
//! The 64-byte handle carries the NUL-terminated name of a shared memory object (as for
//! `shm_open(3)`, e.g. `/smpfs-test-1`) that the client created, sized and owns; device 0
//! is the only device. Bytes are written with `pwrite(2)`, not through a mapping, so a
//! client that truncates its object meanwhile cannot crash the daemon with SIGBUS.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{Destination, DeviceSink, GpuError, Target};
use crate::cache::LockedRegion;

/// Loads into the caller's POSIX shared memory objects.
pub struct HostSink;

/// The shared memory name in `handle`: `/` then 1 to 62 of `[A-Za-z0-9._-]`, NUL-terminated.
fn shm_name(handle: &[u8]) -> Result<&str, GpuError> {
    let bad = |why: &str| GpuError::BadHandle(format!("host sink: {why}"));
    let end = handle
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("the shared memory name is not NUL-terminated"))?;
    let name = &handle[..end];
    let rest = name
        .strip_prefix(b"/")
        .ok_or_else(|| bad("the shared memory name must start with '/'"))?;
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if rest.is_empty() || rest == b"." || rest == b".." || !rest.iter().all(allowed) {
        return Err(bad("the shared memory name must be '/' and [A-Za-z0-9._-]"));
    }
    Ok(std::str::from_utf8(name).expect("checked ASCII"))
}

impl DeviceSink for HostSink {
    fn name(&self) -> &'static str {
        "host"
    }

    fn open(
        &self,
        target: &Target,
        length: u64,
        uid: u32,
        _staging: &LockedRegion,
    ) -> Result<Box<dyn Destination>, GpuError> {
        if target.device != 0 {
            return Err(GpuError::BadDevice {
                device: target.device,
                count: 1,
            });
        }
        let name = shm_name(&target.handle)?;
        let fd = nix::sys::mman::shm_open(name, OFlag::O_RDWR, Mode::empty())
            .map_err(|e| GpuError::BadHandle(format!("host sink: shm_open {name}: {e}")))?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| GpuError::BadHandle(format!("host sink: fstat {name}: {e}")))?;
        if !meta.file_type().is_file() || meta.uid() != uid {
            return Err(GpuError::BadHandle(format!(
                "host sink: {name} is not a shared memory object of uid {uid}"
            )));
        }
        if target
            .offset
            .checked_add(length)
            .is_none_or(|end| end > meta.len())
        {
            return Err(GpuError::DestinationTooSmall {
                offset: target.offset,
                length,
                size: meta.len(),
            });
        }
        Ok(Box::new(HostDestination {
            file: Some(file),
            start: target.offset,
            length,
        }))
    }

    fn release(&self, _staging: &LockedRegion) {}
}

/// An open shared memory object; copies complete before `copy_async` returns.
struct HostDestination {
    file: Option<File>,
    start: u64,
    length: u64,
}

impl Destination for HostDestination {
    unsafe fn copy_async(&mut self, _slot: usize, src: &[u8], offset: u64) -> Result<(), GpuError> {
        let file = self
            .file
            .as_ref()
            .ok_or(GpuError::BadArgument("copy after finish"))?;
        if offset
            .checked_add(src.len() as u64)
            .is_none_or(|end| end > self.length)
        {
            return Err(GpuError::BadArgument("copy outside the checked range"));
        }
        file.write_all_at(src, self.start + offset)
            .map_err(|e| GpuError::Device {
                call: "pwrite",
                reason: e.to_string(),
            })
    }

    fn wait(&mut self, _slot: usize) -> Result<(), GpuError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), GpuError> {
        self.file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(name: &[u8]) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[..name.len()].copy_from_slice(name);
        h
    }

    /// A shared memory object of `len` bytes, unlinked on drop.
    struct Shm(String);

    impl Shm {
        fn new(len: u64) -> Shm {
            let name = format!("/smpfs-unit-{}-{len}", std::process::id());
            let fd = nix::sys::mman::shm_open(
                name.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            File::from(fd).set_len(len).unwrap();
            Shm(name)
        }

        fn read(&self) -> Vec<u8> {
            std::fs::read(format!("/dev/shm{}", self.0)).unwrap()
        }
    }

    impl Drop for Shm {
        fn drop(&mut self) {
            let _ = nix::sys::mman::shm_unlink(self.0.as_str());
        }
    }

    fn staging() -> LockedRegion {
        LockedRegion::new(4096).unwrap()
    }

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(shm_name(&handle(b"/a-b_c.1")).unwrap(), "/a-b_c.1");
        for bad in [
            &b"a"[..],
            b"/",
            b"/.",
            b"/..",
            b"/a/b",
            b"//a",
            b"/a b",
            b"",
        ] {
            assert!(
                matches!(shm_name(&handle(bad)), Err(GpuError::BadHandle(_))),
                "{bad:?}"
            );
        }
        assert!(shm_name(&[b'/'; 64]).is_err(), "no NUL");
    }

    #[test]
    fn copies_land_at_the_offset_and_nowhere_else() {
        let shm = Shm::new(100);
        let target = Target {
            device: 0,
            handle: handle(shm.0.as_bytes()),
            offset: 10,
        };
        let mut dest = HostSink.open(&target, 20, uid(), &staging()).unwrap();
        // SAFETY: the source slices are locals that outlive the synchronous copies.
        unsafe {
            dest.copy_async(0, &[1; 5], 0).unwrap();
            dest.copy_async(1, &[2; 15], 5).unwrap();
            assert!(dest.copy_async(0, &[3; 1], 20).is_err(), "past the range");
        }
        dest.wait(0).unwrap();
        dest.finish().unwrap();
        dest.finish().unwrap();
        let bytes = shm.read();
        assert_eq!(&bytes[..10], &[0; 10]);
        assert_eq!(&bytes[10..15], &[1; 5]);
        assert_eq!(&bytes[15..30], &[2; 15]);
        assert_eq!(&bytes[30..], &[0; 70]);
    }

    #[test]
    fn bad_targets_are_refused() {
        let shm = Shm::new(64);
        let at = |device, offset| Target {
            device,
            handle: handle(shm.0.as_bytes()),
            offset,
        };
        let open = |target: Target, length, uid| {
            HostSink
                .open(&target, length, uid, &staging())
                .map(|_| ())
                .unwrap_err()
        };
        assert!(matches!(
            open(at(0, 60), 5, uid()),
            GpuError::DestinationTooSmall { size: 64, .. }
        ));
        assert!(matches!(
            open(at(1, 0), 1, uid()),
            GpuError::BadDevice {
                device: 1,
                count: 1
            }
        ));
        assert!(matches!(
            open(at(0, 0), 1, uid() + 1),
            GpuError::BadHandle(_)
        ));
        let missing = Target {
            device: 0,
            handle: handle(b"/smpfs-unit-does-not-exist"),
            offset: 0,
        };
        assert!(matches!(open(missing, 1, uid()), GpuError::BadHandle(_)));
        assert!(HostSink.open(&at(0, 64), 0, uid(), &staging()).is_ok());
    }
}
