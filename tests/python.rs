//! The Python package (`python/`, `import smpfs`) through real mounts: each test seals
//! files, mounts them (with the shared-memory GPU sink where the load ioctl is used) and
//! runs a script of `python/tests/` with the source tree's package on PYTHONPATH; the script
//! asserts and ends with `NAME ok: N checks`. Needs python3 with numpy, pydicom and nibabel
//! (integration/install-deps.sh); torch is optional: with it the scripts also run torch
//! DataLoaders with two workers (else multiprocessing pools) and torch outputs. Set
//! SMPFS_TEST_PYTHON to run them with another interpreter (e.g. a venv with torch).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pattern, run_ok, Workspace};
use serde_json::Value;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The test interpreter (python3, or SMPFS_TEST_PYTHON) with the source tree's package
/// on PYTHONPATH.
fn interpreter() -> Command {
    let program = std::env::var("SMPFS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(program);
    cmd.env("PYTHONPATH", source())
        .env("SMPFS_PY_SOURCE", source().join("smpfs"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs `python/tests/SCRIPT ARGS`; panics with its output unless it succeeds and reports
/// `NAME ok: N checks`. Returns its stdout.
fn python(script: &str, name: &str, args: &[&OsStr]) -> String {
    let out = interpreter()
        .arg(source().join("tests").join(script))
        .args(args)
        .output()
        .expect("python3 must be installed: run integration/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{name} ok: ")),
        "{script} did not finish:\n{stdout}"
    );
    eprint!("{stdout}");
    stdout
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A .npy file (format 1.0, 128-byte header) of `len` bytes of `pattern` as uint8.
fn npy(len: usize, seed: u8) -> Vec<u8> {
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({len},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&pattern(len, seed));
    out
}

#[test]
fn info_verify_and_load_into_on_sealed_files_and_errors_off_smpfs() {
    let ws = Workspace::new();
    let data = pattern(333_333, 11);
    ws.write_plain("vol.raw", &data);
    ws.write_plain("dir/small.bin", &pattern(5000, 3));
    ws.seal_all();
    let mount = ws.mount(&["gpu_sink=host"]);
    python(
        "check_client.py",
        "client",
        &[mount.mnt.as_os_str(), ws.plain().as_os_str()],
    );
    assert!(mount.unmount().success());
    // verify read every byte through the mount, and the loads were audited as such.
    let records = records(&ws.dir.path().join("audit.log"));
    let of = |event: &str| {
        records
            .iter()
            .filter(|r| r["event"] == event && r["path"] == "vol.raw")
            .count()
    };
    assert!(of("read") > 0, "verify's reads are audited");
    assert!(of("gpu_load") >= 2, "load_into's loads are audited");
}

#[test]
fn a_tampered_file_raises_integrity_error_everywhere() {
    let ws = Workspace::new();
    let len = 400_000;
    ws.write_plain("tampered.npy", &npy(len, 4));
    ws.write_plain("ok.npy", &npy(len, 5));
    ws.seal_all();
    // Flip one byte of the second chunk of the sealed object (v1: named by its path).
    let object = ws.bucket().join("tampered.npy");
    let mut bytes = std::fs::read(&object).unwrap();
    let plaintext = len + 128;
    let chunks = plaintext.div_ceil(65_536);
    let chunk1 = bytes.len() - plaintext - chunks * 16 + 65_536 + 16;
    bytes[chunk1 + 1000] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    let mount = ws.mount(&["gpu_sink=host"]);
    python(
        "check_tamper.py",
        "tamper",
        &[mount.mnt.as_os_str(), ws.plain().as_os_str()],
    );
    let log = mount.log_text();
    assert!(mount.unmount().success());
    assert!(
        log.contains("tampered.npy"),
        "the failures are logged:\n{log}"
    );
    let failures = records(&ws.dir.path().join("audit.log"))
        .into_iter()
        .filter(|r| r["event"] == "integrity_failure")
        .count();
    assert!(failures > 0, "integrity failures are audited");
}

#[test]
fn a_locked_mount_raises_locked_error_until_unlocked() {
    let ws = Workspace::new();
    ws.write_plain("a.npy", &npy(150_000, 7));
    ws.seal_all();
    let mount = ws.mount(&["gpu_sink=host"]);
    let binary = Path::new(env!("CARGO_BIN_EXE_smpfs"));
    python(
        std::env::var("PROBE")
            .unwrap_or("check_locked.py".into())
            .as_str(),
        "locked",
        &[
            mount.mnt.as_os_str(),
            ws.plain().as_os_str(),
            binary.as_os_str(),
        ],
    );
    assert!(mount.unmount().success());
    let denied = records(&ws.dir.path().join("audit.log"))
        .into_iter()
        .filter(|r| r["event"] == "denied")
        .count();
    assert!(denied > 0, "the refusals are audited");
}

#[test]
fn secure_dataset_decodes_pydicom_test_files_numpy_and_nifti_in_workers() {
    let ws = Workspace::new();
    run_ok(
        interpreter()
            .arg(source().join("tests/check_dataset.py"))
            .arg("prepare")
            .arg(ws.plain()),
    );
    ws.seal_all();
    let mount = ws.mount(&["gpu_sink=host"]);
    let out = python(
        "check_dataset.py",
        "dataset",
        &[
            OsStr::new("check"),
            mount.mnt.as_os_str(),
            ws.plain().as_os_str(),
        ],
    );
    assert!(out.contains("workers: "), "{out}");
    assert!(mount.unmount().success());
}

#[test]
fn secure_dataset_over_volumes_matches_nibabel_and_the_dicom_slices() {
    let ws = Workspace::new();
    let series = run_ok(
        interpreter()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom/make_series.py"))
            .arg(ws.plain())
            .arg("5"),
    );
    let uids: Value = serde_json::from_slice(&series.stdout).unwrap();
    assert!(uids["ct"].is_string(), "{uids}");
    ws.seal_all();
    let mount = ws.mount(&["volumes", "gpu_sink=host"]);
    python(
        "check_volumes.py",
        "volumes",
        &[mount.mnt.as_os_str(), ws.plain().as_os_str()],
    );
    assert!(mount.unmount().success());
    let volume = format!(".volumes/{}.nii", uids["ct"].as_str().unwrap());
    let loads = records(&ws.dir.path().join("audit.log"))
        .into_iter()
        .filter(|r| r["event"] == "gpu_load" && r["path"] == volume.as_str())
        .count();
    assert!(loads > 0, "the volume load is audited");
}

#[test]
fn importing_smpfs_and_smpfs_torch_does_not_import_torch() {
    let dir = tempfile::tempdir().unwrap();
    python(
        "check_lazy_torch.py",
        "lazy torch",
        &[dir.path().as_os_str()],
    );
}

#[test]
fn the_compatibility_shim_is_the_package() {
    // integration/gpu/smpfs_gpu.py re-exports the package: one implementation.
    let script = r#"
import smpfs_gpu, smpfs
assert smpfs_gpu.load_into is smpfs.load_into and smpfs_gpu.info is smpfs.info
assert smpfs_gpu.SmpfsGpuError is smpfs.SmpfsError
assert smpfs_gpu.NoDriverError is smpfs.NoGpuError
assert smpfs_gpu.NotSmpfsError is smpfs.NotOnSmpfsError
print("shim ok:", smpfs.__file__)
"#;
    let out = run_ok(interpreter().args(["-c", script]).env(
        "PYTHONPATH",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/gpu"),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "shim ok: {}",
            source().join("smpfs/__init__.py").display()
        )),
        "{stdout}"
    );
}
