//! The GPU ioctls through real mounts, as a client sees them: real ioctl(2) calls on files
//! opened through the mount. Loads go to the host sink (`-o gpu_sink=host`, POSIX shared
//! memory) so the whole path runs without a GPU; the default CUDA sink is tested for its
//! answer on a machine without a driver. `cuda_load_into_a_device_buffer_of_this_process`
//! needs a GPU and is ignored by default (see docs/GPU.md).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pattern, run_ok, smpfs, Workspace};
use serde_json::Value;
use smpfs::gpu::abi;

/// `struct smpfs_gpu_load`, written from the C header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GpuLoad {
    abi_version: u32,
    flags: u32,
    device: u32,
    reserved0: u32,
    handle: [u8; 64],
    dest_offset: u64,
    file_offset: u64,
    length: u64,
    bytes_loaded: u64,
    error: u32,
    reserved1: u32,
}

/// `struct smpfs_gpu_info`, written from the C header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GpuInfo {
    abi_version: u32,
    flags: u32,
    plaintext_size: u64,
    chunk_size: u32,
    dtype: u32,
    file_id: [u8; 16],
    ndim: u32,
    reserved0: u32,
    shape: [u64; 4],
    reserved: [u64; 4],
}

nix::ioctl_read!(gpu_info_ioctl, 0xB5, 1, GpuInfo);
nix::ioctl_readwrite!(gpu_load_ioctl, 0xB5, 2, GpuLoad);

// smpfs_gpu_load.error codes.
const E_NONE: u32 = 0;
const E_ABI_VERSION: u32 = 1;
const E_BAD_ARGUMENT: u32 = 2;
const E_OVERFLOW: u32 = 3;
const E_PAST_EOF: u32 = 4;
const E_DEST_TOO_SMALL: u32 = 5;
const E_BAD_HANDLE: u32 = 6;
const E_NO_DRIVER: u32 = 7;
const E_BAD_DEVICE: u32 = 8;
const E_LOCKED: u32 = 11;
const E_AUDIT: u32 = 13;

impl GpuLoad {
    fn new(handle: &[u8], dest_offset: u64, file_offset: u64, length: u64) -> GpuLoad {
        let mut h = [0u8; 64];
        h[..handle.len()].copy_from_slice(handle);
        GpuLoad {
            abi_version: 1,
            flags: 0,
            device: 0,
            reserved0: 0,
            handle: h,
            dest_offset,
            file_offset,
            length,
            bytes_loaded: u64::MAX,
            error: u32::MAX,
            reserved1: 0,
        }
    }
}

/// Issues the load ioctl on `file`; the struct as the kernel copied it back, and the errno.
fn load(file: &File, mut request: GpuLoad) -> (GpuLoad, Option<i32>) {
    // SAFETY: `request` is a live, correctly laid out struct for the whole call.
    let result = unsafe { gpu_load_ioctl(file.as_raw_fd(), &mut request) };
    (request, result.err().map(|e| e as i32))
}

fn info(file: &File) -> Result<GpuInfo, nix::Error> {
    let mut out = GpuInfo::default();
    // SAFETY: `out` is a live, correctly laid out struct for the whole call.
    unsafe { gpu_info_ioctl(file.as_raw_fd(), &mut out) }?;
    Ok(out)
}

/// A POSIX shared memory object the host sink loads into, filled with `fill`; unlinked
/// on drop.
struct Shm {
    name: String,
}

impl Shm {
    fn new(tag: &str, len: usize, fill: u8) -> Shm {
        let name = format!("/smpfs-it-{}-{tag}", std::process::id());
        let path = Self::path_of(&name);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, vec![fill; len]).unwrap();
        Shm { name }
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from(format!("/dev/shm{name}"))
    }

    fn handle(&self) -> Vec<u8> {
        let mut h = self.name.clone().into_bytes();
        h.push(0);
        h
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(Self::path_of(&self.name)).unwrap()
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Self::path_of(&self.name));
    }
}

/// Seals `files` (path, bytes) with 64 KiB chunks and `small4k.bin` with 4 KiB chunks.
fn workspace(files: &[(&str, &[u8])], small4k: &[u8]) -> Workspace {
    let ws = Workspace::new();
    for (path, data) in files {
        ws.write_plain(path, data);
    }
    ws.seal_all();
    let dir4k = ws.dir.path().join("plain4k");
    std::fs::create_dir(&dir4k).unwrap();
    std::fs::write(dir4k.join("small4k.bin"), small4k).unwrap();
    run_ok(
        smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(&dir4k)
            .args(["--to", &ws.recipient, "--chunk-size", "4K", "--out"])
            .arg(ws.bucket()),
    );
    ws
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_test_client_structs_match_the_abi() {
    assert_eq!(std::mem::size_of::<GpuLoad>(), abi::LOAD_LEN);
    assert_eq!(std::mem::size_of::<GpuInfo>(), abi::INFO_LEN);
    assert_eq!(
        nix::request_code_readwrite!(0xB5, 2, std::mem::size_of::<GpuLoad>()) as u32,
        abi::IOC_LOAD
    );
    assert_eq!(
        nix::request_code_read!(0xB5, 1, std::mem::size_of::<GpuInfo>()) as u32,
        abi::IOC_INFO
    );
}

#[test]
fn host_sink_loads_are_byte_exact_for_any_range() {
    // 24 MiB: more than the 16 MiB cache and the 8 MiB read-ahead window.
    let big = pattern(24 * 1024 * 1024 + 4321, 1);
    let multi = pattern(1_000_003, 2);
    let small = pattern(50_001, 3);
    let ws = workspace(&[("big.bin", &big), ("dir/multi.bin", &multi)], &small);
    let _mount = ws.mount(&["gpu_sink=host", "cache_size=16M"]);

    let file = File::open(ws.mnt().join("big.bin")).unwrap();
    let shm = Shm::new("big", big.len() + 100, 0xAA);
    let (reply, errno) = load(&file, GpuLoad::new(&shm.handle(), 50, 0, big.len() as u64));
    assert_eq!(errno, None, "{reply:?}");
    assert_eq!(
        (reply.bytes_loaded, reply.error),
        (big.len() as u64, E_NONE)
    );
    let out = shm.read();
    assert!(out[..50].iter().all(|&b| b == 0xAA));
    assert!(
        out[50..50 + big.len()] == big[..],
        "the whole file, in place"
    );
    assert!(out[50 + big.len()..].iter().all(|&b| b == 0xAA));

    for (name, data) in [("dir/multi.bin", &multi), ("small4k.bin", &small)] {
        let file = File::open(ws.mnt().join(name)).unwrap();
        let len = data.len() as u64;
        for (file_offset, dest_offset, length) in [
            (0, 0, len),
            (1, 3, 1),
            (4095, 7, 2),
            (4097, 1, 40_000),
            (len / 2 - 1, 1, len / 2 + 1),
            (len - 1, 0, 1),
            (12_345, 999, len - 12_345),
            (len, 5, 0),
        ] {
            let shm = Shm::new("range", (dest_offset + length) as usize + 16, 0x55);
            let (reply, errno) = load(
                &file,
                GpuLoad::new(&shm.handle(), dest_offset, file_offset, length),
            );
            assert_eq!(errno, None, "{name} {file_offset}+{length}: {reply:?}");
            assert_eq!(reply.bytes_loaded, length);
            let out = shm.read();
            let (d, l, f) = (dest_offset as usize, length as usize, file_offset as usize);
            assert!(out[..d].iter().all(|&b| b == 0x55));
            assert_eq!(
                &out[d..d + l],
                &data[f..f + l],
                "{name} {file_offset}+{length}"
            );
            assert!(out[d + l..].iter().all(|&b| b == 0x55));
        }
    }
}

#[test]
fn info_reports_size_chunk_size_and_file_id_and_no_volume() {
    let data = pattern(100_000, 4);
    let ws = workspace(&[("a.bin", &data)], &pattern(10, 5));
    let mount = ws.mount(&["gpu_sink=host"]);
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    let got = info(&file).unwrap();
    assert_eq!(got.abi_version, abi::ABI_VERSION);
    assert_eq!((got.plaintext_size, got.chunk_size), (100_000, 65_536));
    assert_eq!((got.flags, got.dtype, got.ndim), (0, 0, 0), "not a volume");
    assert_eq!(got.shape, [0; 4]);
    let small = File::open(ws.mnt().join("small4k.bin")).unwrap();
    assert_eq!(info(&small).unwrap().chunk_size, 4096);
    drop((file, small));
    assert!(mount.unmount().success());
    let open = records(&ws.dir.path().join("audit.log"))
        .into_iter()
        .find(|r| r["event"] == "open" && r["path"] == "a.bin")
        .unwrap();
    assert_eq!(open["file_id"], hex::encode(got.file_id));
}

#[test]
fn without_a_cuda_driver_a_load_fails_with_enodev_and_one_log_line() {
    // SAFETY: only probes for the driver library.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("skipped: this machine has a CUDA driver");
        return;
    }
    let ws = workspace(&[("a.bin", &pattern(1000, 6))], &[1]);
    let mount = ws.mount(&[]);
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    let (reply, errno) = load(&file, GpuLoad::new(&[7; 64], 0, 0, 1000));
    assert_eq!(errno, Some(libc::ENODEV), "{reply:?}");
    assert_eq!((reply.error, reply.bytes_loaded), (E_NO_DRIVER, 0));
    // The daemon keeps serving: reads still work, and a second load says the same.
    assert_eq!(std::fs::read(ws.mnt().join("a.bin")).unwrap().len(), 1000);
    assert_eq!(
        load(&file, GpuLoad::new(&[7; 64], 0, 0, 1)).1,
        Some(libc::ENODEV)
    );
    drop(file);
    // The Python client raises its NoDriverError, with the reason.
    let script = r#"
import sys
import smpfs_gpu as g
try:
    g.load(sys.argv[1], 0, bytes(64), 0, 1000)
    raise SystemExit("a load without a driver did not raise")
except g.NoDriverError as e:
    assert e.errno == 19 and e.detail == "no_driver", e
    assert "no CUDA driver" in str(e), e
print("no driver raised")
"#;
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(ws.mnt().join("a.bin"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(
                "PYTHONPATH",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/gpu"),
            ),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no driver raised"));
    let log = mount.log_text();
    assert!(mount.unmount().success());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no CUDA driver"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per failed load:\n{log}");
    assert!(
        lines[0].contains("libcuda") && lines[0].contains("No such device"),
        "{}",
        lines[0]
    );
}

#[test]
fn the_host_sink_is_refused_outside_tests() {
    let ws = workspace(&[("a.bin", &pattern(10, 1))], &[1]);
    let out = ws
        .mount_command()
        .args(["-f", "-o", "gpu_sink=host"])
        .env_remove("SMPFS_ALLOW_TEST_SINK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("for tests only") && stderr.contains("SMPFS_ALLOW_TEST_SINK=1"),
        "{stderr}"
    );
}

#[test]
fn malformed_loads_fail_with_einval_and_write_nothing() {
    let data = pattern(300_000, 7);
    let ws = workspace(&[("a.bin", &data)], &[1]);
    let _mount = ws.mount(&["gpu_sink=host"]);
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    let shm = Shm::new("malformed", 1000, 0xEE);
    let h = shm.handle();
    let ok = GpuLoad::new(&h, 0, 0, 1000);
    let other_users = Shm::new("other-user", 1000, 0xEE);
    std::os::unix::fs::chown(Shm::path_of(&other_users.name), Some(12345), None).unwrap();
    let cases: Vec<(&str, GpuLoad, i32, u32)> = vec![
        (
            "stale ABI version",
            GpuLoad {
                abi_version: 0,
                ..ok
            },
            libc::EINVAL,
            E_ABI_VERSION,
        ),
        (
            "future ABI version",
            GpuLoad {
                abi_version: 2,
                ..ok
            },
            libc::EINVAL,
            E_ABI_VERSION,
        ),
        (
            "unknown flags",
            GpuLoad { flags: 1, ..ok },
            libc::EINVAL,
            E_BAD_ARGUMENT,
        ),
        (
            "reserved field",
            GpuLoad { reserved1: 9, ..ok },
            libc::EINVAL,
            E_BAD_ARGUMENT,
        ),
        (
            "file offset overflow",
            GpuLoad {
                file_offset: u64::MAX - 10,
                length: 11,
                ..ok
            },
            libc::EINVAL,
            E_OVERFLOW,
        ),
        (
            "destination offset overflow",
            GpuLoad {
                dest_offset: u64::MAX,
                length: 1,
                ..ok
            },
            libc::EINVAL,
            E_OVERFLOW,
        ),
        (
            "range past EOF",
            GpuLoad {
                file_offset: 299_500,
                length: 501,
                ..ok
            },
            libc::EINVAL,
            E_PAST_EOF,
        ),
        (
            "offset past EOF",
            GpuLoad {
                file_offset: 300_001,
                length: 0,
                ..ok
            },
            libc::EINVAL,
            E_PAST_EOF,
        ),
        (
            "destination too small",
            GpuLoad {
                dest_offset: 1,
                ..ok
            },
            libc::EINVAL,
            E_DEST_TOO_SMALL,
        ),
        (
            "destination far too small",
            GpuLoad { length: 1001, ..ok },
            libc::EINVAL,
            E_DEST_TOO_SMALL,
        ),
        (
            "missing object",
            GpuLoad::new(b"/smpfs-it-no-such-object\0", 0, 0, 10),
            libc::EINVAL,
            E_BAD_HANDLE,
        ),
        (
            "unterminated name",
            GpuLoad::new(&[b'/'; 64], 0, 0, 10),
            libc::EINVAL,
            E_BAD_HANDLE,
        ),
        (
            "empty handle",
            GpuLoad::new(&[0; 64], 0, 0, 10),
            libc::EINVAL,
            E_BAD_HANDLE,
        ),
        (
            "another user's object",
            GpuLoad::new(&other_users.handle(), 0, 0, 10),
            libc::EINVAL,
            E_BAD_HANDLE,
        ),
        (
            "no such device",
            GpuLoad { device: 1, ..ok },
            libc::ENODEV,
            E_BAD_DEVICE,
        ),
        (
            "device over INT_MAX",
            GpuLoad {
                device: u32::MAX,
                ..ok
            },
            libc::EINVAL,
            E_BAD_ARGUMENT,
        ),
    ];
    for (what, request, errno, detail) in cases {
        let (reply, got) = load(&file, request);
        assert_eq!(got, Some(errno), "{what}: {reply:?}");
        assert_eq!((reply.error, reply.bytes_loaded), (detail, 0), "{what}");
        assert_eq!(
            reply.file_offset, request.file_offset,
            "{what}: the request is echoed"
        );
        assert!(
            shm.read().iter().all(|&b| b == 0xEE),
            "{what}: nothing written"
        );
        assert!(other_users.read().iter().all(|&b| b == 0xEE), "{what}");
    }
    // Still serving, and the same request done right works.
    let (reply, errno) = load(&file, ok);
    assert_eq!((errno, reply.error), (None, E_NONE));
    assert_eq!(shm.read(), data[..1000]);
}

#[test]
fn unknown_commands_and_directories_answer_enotty() {
    let ws = workspace(&[("d/a.bin", &pattern(5000, 8))], &[1]);
    let _mount = ws.mount(&["gpu_sink=host"]);
    let file = File::open(ws.mnt().join("d/a.bin")).unwrap();
    let mut buf = [0u8; 256];
    let other_size = nix::request_code_readwrite!(0xB5, 2, 128);
    let write_only = nix::request_code_write!(0xB5, 2, abi::LOAD_LEN);
    let unknown_nr = nix::request_code_readwrite!(0xB5, 9, abi::LOAD_LEN);
    let other_type = nix::request_code_readwrite!(b'x', 2, abi::LOAD_LEN);
    for cmd in [other_size, write_only, unknown_nr, other_type] {
        // SAFETY: `buf` is larger than any of these commands' sizes.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), cmd as _, buf.as_mut_ptr()) };
        let err = std::io::Error::last_os_error();
        assert_eq!(
            (rc, err.raw_os_error()),
            (-1, Some(libc::ENOTTY)),
            "{cmd:#x}"
        );
    }
    let dir = File::open(ws.mnt().join("d")).unwrap();
    let shm = Shm::new("dir", 10, 0);
    let (_, errno) = load(&dir, GpuLoad::new(&shm.handle(), 0, 0, 1));
    assert_eq!(errno, Some(libc::ENOTTY));
    assert_eq!(info(&dir).unwrap_err(), nix::Error::ENOTTY);
}

#[test]
fn loads_are_audited_before_copying_and_the_log_verifies() {
    let data = pattern(200_000, 9);
    let ws = workspace(&[("scan/vol.raw", &data)], &[1]);
    let mount = ws.mount(&["gpu_sink=host"]);
    let file = File::open(ws.mnt().join("scan/vol.raw")).unwrap();
    let shm = Shm::new("audit", 200_000, 0);
    let (_, errno) = load(&file, GpuLoad::new(&shm.handle(), 100, 17, 150_000));
    assert_eq!(errno, None);
    let (_, errno) = load(&file, GpuLoad::new(&shm.handle(), 0, 150_000, 60_000));
    assert_eq!(errno, Some(libc::EINVAL));
    drop(file);
    assert!(mount.unmount().success());

    let log = ws.dir.path().join("audit.log");
    let loads: Vec<Value> = records(&log)
        .into_iter()
        .filter(|r| r["event"] == "gpu_load")
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    let ok = &loads[0];
    assert_eq!(ok["path"], "scan/vol.raw");
    assert_eq!(
        (ok["offset"].as_u64(), ok["length"].as_u64()),
        (Some(17), Some(150_000))
    );
    assert_eq!(ok["result"], "ok");
    assert_eq!(ok["detail"]["device"], 0);
    assert_eq!(ok["detail"]["dest_offset"], 100);
    assert_eq!(ok["detail"]["bytes"], 150_000);
    assert_eq!(ok["detail"]["sink"], "host");
    assert!(ok["pid"].as_u64().unwrap() > 0 && ok["process"].is_string());
    let failed = &loads[1];
    assert!(
        failed["result"].as_str().unwrap().contains("past the end"),
        "{failed}"
    );
    let release = records(&log)
        .into_iter()
        .find(|r| r["event"] == "release" && r["path"] == "scan/vol.raw")
        .unwrap();
    assert_eq!(release["detail"]["bytes_read"], 150_000);

    common::assert_audit_verifies(&log, &ws.identity);
    let out = run_ok(
        smpfs()
            .args(["audit", "show", "--path", "vol.raw"])
            .arg(&log),
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.contains("gpu_load"))
        .expect("shown");
    assert!(row.contains("150000") && row.contains("ok"), "{table}");
}

#[test]
fn loads_fail_closed_when_the_log_cannot_be_written() {
    let data = pattern(100_000, 13);
    let ws = workspace(&[("a.bin", &data)], &[1]);
    // The log lives on a tiny tmpfs that we then fill up.
    let logdir = ws.dir.path().join("logfs");
    std::fs::create_dir(&logdir).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "smpfs-test-gpu-log"])
            .arg(&logdir),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(logdir.clone());
    let log = logdir.join("audit.log");
    let mount = ws.mount(&["gpu_sink=host", &format!("audit={}", log.display())]);
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", logdir.join("filler").display()))
        .arg("bs=4k")
        .status();
    let mut refused = None;
    for i in 0..40 {
        let shm = Shm::new(&format!("closed-{i}"), 100_000, 0x11);
        let (reply, errno) = load(&file, GpuLoad::new(&shm.handle(), 0, 0, 100_000));
        match errno {
            None => assert_eq!(shm.read(), data),
            Some(errno) => {
                assert!(shm.read().iter().all(|&b| b == 0x11), "copied unaudited");
                refused = Some((errno, reply.error));
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some((libc::EIO, E_AUDIT)),
        "loads went on after the log filled up"
    );
    drop(file);
    drop(mount);
}

#[test]
fn a_locked_mount_refuses_loads_like_reads() {
    let data = pattern(100_000, 10);
    let ws = workspace(&[("a.bin", &data)], &[1]);
    let mount = ws.mount(&["gpu_sink=host"]);
    let shm = Shm::new("locked", 100_000, 0);
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    run_ok(smpfs().arg("lock").arg(ws.mnt()));
    let (reply, errno) = load(&file, GpuLoad::new(&shm.handle(), 0, 0, 100_000));
    assert_eq!((errno, reply.error), (Some(libc::EACCES), E_LOCKED));
    assert_eq!(info(&file).unwrap_err(), nix::Error::EACCES);
    assert!(shm.read().iter().all(|&b| b == 0));
    drop(file);
    run_ok(smpfs().arg("unlock").arg(ws.mnt()));
    let file = File::open(ws.mnt().join("a.bin")).unwrap();
    let (_, errno) = load(&file, GpuLoad::new(&shm.handle(), 0, 0, 100_000));
    assert_eq!(errno, None);
    assert_eq!(shm.read(), data);
    drop(file);
    assert!(mount.unmount().success());
    let denied = records(&ws.dir.path().join("audit.log"))
        .into_iter()
        .find(|r| r["event"] == "denied" && r["detail"]["bytes"] == 100_000)
        .expect("the refusal is recorded");
    assert!(denied["result"].as_str().unwrap().starts_with("EACCES"));
}

#[test]
fn the_c_header_matches_the_abi() {
    let cc = which("cc").expect("a C compiler (cc) is needed to check the header");
    let dir = tempfile::tempdir().unwrap();
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/gpu");
    let program = r#"
#include <stddef.h>
#include <stdio.h>
#include "smpfs_gpu.h"
#define OFF(s, f) printf(#s "." #f "=%zu\n", offsetof(struct s, f))
int main(void) {
    printf("version=%u\ninfo=%zu\nload=%zu\n", SMPFS_GPU_ABI_VERSION,
           sizeof(struct smpfs_gpu_info), sizeof(struct smpfs_gpu_load));
    printf("ioc_info=%lu\nioc_load=%lu\n", (unsigned long)SMPFS_GPU_IOC_INFO,
           (unsigned long)SMPFS_GPU_IOC_LOAD);
    OFF(smpfs_gpu_info, plaintext_size); OFF(smpfs_gpu_info, chunk_size);
    OFF(smpfs_gpu_info, file_id); OFF(smpfs_gpu_info, ndim); OFF(smpfs_gpu_info, shape);
    OFF(smpfs_gpu_load, device); OFF(smpfs_gpu_load, handle);
    OFF(smpfs_gpu_load, dest_offset); OFF(smpfs_gpu_load, file_offset);
    OFF(smpfs_gpu_load, length); OFF(smpfs_gpu_load, bytes_loaded);
    OFF(smpfs_gpu_load, error);
    printf("e_past_eof=%u\ne_no_driver=%u\ne_bad_file_handle=%u\n", SMPFS_GPU_E_PAST_EOF,
           SMPFS_GPU_E_NO_DRIVER, SMPFS_GPU_E_BAD_FILE_HANDLE);
    return 0;
}
"#;
    std::fs::write(dir.path().join("t.c"), program).unwrap();
    let exe = dir.path().join("t");
    run_ok(
        Command::new(cc)
            .args(["-std=c11", "-Wall", "-Werror", "-I"])
            .arg(&header)
            .arg(dir.path().join("t.c"))
            .arg("-o")
            .arg(&exe),
    );
    let out = String::from_utf8(run_ok(&mut Command::new(&exe)).stdout).unwrap();
    let expected = format!(
        "version={}\ninfo={}\nload={}\nioc_info={}\nioc_load={}\n\
         smpfs_gpu_info.plaintext_size=8\nsmpfs_gpu_info.chunk_size=16\n\
         smpfs_gpu_info.file_id=24\nsmpfs_gpu_info.ndim=40\nsmpfs_gpu_info.shape=48\n\
         smpfs_gpu_load.device=8\nsmpfs_gpu_load.handle=16\nsmpfs_gpu_load.dest_offset=80\n\
         smpfs_gpu_load.file_offset=88\nsmpfs_gpu_load.length=96\n\
         smpfs_gpu_load.bytes_loaded=104\nsmpfs_gpu_load.error=112\n\
         e_past_eof={}\ne_no_driver={}\ne_bad_file_handle={}\n",
        abi::ABI_VERSION,
        abi::INFO_LEN,
        abi::LOAD_LEN,
        abi::IOC_INFO,
        abi::IOC_LOAD,
        abi::Detail::PastEof as u32,
        abi::Detail::NoDriver as u32,
        abi::Detail::BadFileHandle as u32,
    );
    assert_eq!(out, expected);
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn the_python_client_loads_through_the_host_sink_and_raises_clear_errors() {
    let data = pattern(333_333, 11);
    let ws = workspace(&[("vol.raw", &data)], &[1]);
    std::fs::write(ws.dir.path().join("plain.bin"), &data).unwrap();
    let _mount = ws.mount(&["gpu_sink=host"]);
    let script = r#"
import os, sys
import smpfs_gpu as g
path, expected = sys.argv[1], open(sys.argv[2], "rb").read()
info = g.info(path)
assert info.plaintext_size == len(expected) and info.chunk_size == 65536, info
assert info.abi_version == g.ABI_VERSION and not info.volume and info.shape == (), info
with g.ShmBuffer(len(expected)) as buf:
    assert g.load_into(path, buf) == len(expected)
    assert buf.read() == expected
with g.ShmBuffer(1000) as buf:
    assert g.load_into(path, buf, file_offset=4097, length=999) == 999
    assert buf.read()[:999] == expected[4097:5096]
    try:
        g.load_into(path, buf, file_offset=len(expected) - 10, length=11)
        raise SystemExit("past EOF did not raise")
    except g.SmpfsGpuError as e:
        assert e.errno == 22 and e.detail == "past_eof", e
        assert "past the end of the file" in str(e), e
    try:
        g.load(path, 3, b"/nothing\0", 0, 1)
        raise SystemExit("bad device did not raise")
    except g.NoDriverError as e:
        assert e.detail == "bad_device", e
try:
    g.info(sys.argv[2])
    raise SystemExit("a plain file answered")
except g.NotSmpfsError:
    pass
print("python client ok")
"#;
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(ws.mnt().join("vol.raw"))
            .arg(ws.dir.path().join("plain.bin"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(
                "PYTHONPATH",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/gpu"),
            ),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client ok"));
}

/// On a CUDA machine: allocates device memory in this process (a client separate from the
/// daemon), loads a file into it through the ioctl with its IPC handle, copies it back and
/// compares. Run with `cargo test --test gpu -- --ignored` (needs the NVIDIA driver).
#[test]
#[ignore = "needs a CUDA GPU and driver"]
fn cuda_load_into_a_device_buffer_of_this_process() {
    use cudarc::driver::sys;
    let data = pattern(9 * 1024 * 1024 + 123, 12);
    let ws = workspace(&[("vol.raw", &data)], &[1]);
    let mount = ws.mount(&[]);
    // SAFETY: plain driver API calls on this thread with out pointers to locals; the
    // allocation lives until cuMemFree below.
    unsafe {
        assert!(sys::is_culib_present(), "no CUDA driver");
        sys::cuInit(0).result().unwrap();
        let mut dev = 0;
        sys::cuDeviceGet(&mut dev, 0).result().unwrap();
        let mut ctx = std::ptr::null_mut();
        sys::cuDevicePrimaryCtxRetain(&mut ctx, dev)
            .result()
            .unwrap();
        sys::cuCtxSetCurrent(ctx).result().unwrap();
        let size = data.len() + 4096;
        let mut dptr = 0;
        sys::cuMemAlloc_v2(&mut dptr, size).result().unwrap();
        sys::cuMemsetD8_v2(dptr, 0xAB, size).result().unwrap();
        let mut handle = std::mem::MaybeUninit::<sys::CUipcMemHandle>::zeroed();
        sys::cuIpcGetMemHandle(handle.as_mut_ptr(), dptr)
            .result()
            .unwrap();
        let handle: Vec<u8> = handle
            .assume_init()
            .reserved
            .iter()
            .map(|&b| b as u8)
            .collect();

        let file = File::open(ws.mnt().join("vol.raw")).unwrap();
        let (reply, errno) = load(&file, GpuLoad::new(&handle, 1000, 5, data.len() as u64 - 5));
        assert_eq!(errno, None, "{reply:?}\n{}", mount.log_text());
        let mut back = vec![0u8; size];
        sys::cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), dptr, size)
            .result()
            .unwrap();
        assert!(back[..1000].iter().all(|&b| b == 0xAB));
        assert!(back[1000..1000 + data.len() - 5] == data[5..]);
        assert!(back[1000 + data.len() - 5..].iter().all(|&b| b == 0xAB));
        let (reply, errno) = load(&file, GpuLoad::new(&handle, 4097, 0, data.len() as u64));
        assert_eq!((errno, reply.error), (Some(libc::EINVAL), E_DEST_TOO_SMALL));
        let (reply, errno) = load(&file, GpuLoad::new(&[0x5A; 64], 0, 0, 10));
        assert_eq!((errno, reply.error), (Some(libc::EINVAL), E_BAD_HANDLE));
        sys::cuMemFree_v2(dptr).result().unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/gpu/cuda_check.py");
    let torch = Command::new("python3")
        .args(["-c", "import torch"])
        .status();
    if torch.is_ok_and(|s| s.success()) {
        run_ok(
            Command::new("python3")
                .arg(script)
                .arg(ws.mnt().join("vol.raw"))
                .arg(ws.plain().join("vol.raw"))
                .env("PYTHONDONTWRITEBYTECODE", "1"),
        );
    } else {
        eprintln!("PyTorch not installed: the Python client's CUDA path was not run");
    }
    assert!(mount.unmount().success());
}

/// A virtual DICOM volume (`-o volumes`): the info command gives its voxel type and shape,
/// and a load copies exactly the voxels the `.nii` file holds after its header.
#[test]
fn volume_info_and_loads_give_the_voxels() {
    let ws = Workspace::new();
    let made = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom/make_series.py"))
        .arg(ws.plain())
        .arg("6")
        .output()
        .expect("python3 must be installed: run integration/install-deps.sh");
    assert!(
        made.status.success(),
        "make_series.py needs pydicom and numpy: run integration/install-deps.sh ({})",
        String::from_utf8_lossy(&made.stderr)
    );
    let uids: Value = serde_json::from_slice(&made.stdout).unwrap();
    let uid = uids["ct"].as_str().unwrap();
    ws.seal_all();
    let mount = ws.mount(&["volumes", "gpu_sink=host"]);
    let path = ws.mnt().join(".volumes").join(format!("{uid}.nii"));
    let nii = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
    let voxels = &nii[352..];

    let file = File::open(&path).unwrap();
    let got = info(&file).unwrap();
    assert_eq!(got.flags, 1, "a volume");
    assert_eq!(got.dtype, 4, "CT_small is int16");
    assert_eq!(got.ndim, 3);
    assert_eq!(got.shape, [6, 128, 128, 0], "slices, rows, columns");
    assert_eq!(got.plaintext_size, voxels.len() as u64);

    let shm = Shm::new("volume", voxels.len() + 8, 0x11);
    let (reply, errno) = load(
        &file,
        GpuLoad::new(&shm.handle(), 8, 0, voxels.len() as u64),
    );
    assert_eq!(errno, None, "{reply:?}");
    assert_eq!(reply.bytes_loaded, voxels.len() as u64);
    let out = shm.read();
    assert!(out[..8].iter().all(|&b| b == 0x11));
    assert!(out[8..] == *voxels, "the voxels, byte for byte");

    let (reply, errno) = load(
        &file,
        GpuLoad::new(&shm.handle(), 0, 1, voxels.len() as u64),
    );
    assert_eq!((errno, reply.error), (Some(libc::EINVAL), E_PAST_EOF));
}
