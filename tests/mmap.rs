//! Shared read-only mappings of files on a mount (numpy's memmap and `mmap_mode`), and the
//! page cache they fill being dropped at `lock`: real numpy in a real process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::{pattern, run_ok, smpfs, Workspace};

/// Maps `argv[1]` with numpy and checks it against `argv[2]`; then, for each line on
/// stdin, prints how many of its pages are resident (mincore), or on `touch` reads the
/// mapping again.
const MAPPER: &str = r#"
import ctypes, mmap, sys
import numpy as np
mapped = np.memmap(sys.argv[1], mode="r", dtype=np.uint8)
expected = np.fromfile(sys.argv[2], dtype=np.uint8)
assert (mapped == expected).all(), "mapped bytes differ"
libc = ctypes.CDLL(None, use_errno=True)
pages = (len(mapped) + mmap.PAGESIZE - 1) // mmap.PAGESIZE
def resident():
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(mapped.ctypes.data), ctypes.c_size_t(len(mapped)), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)
for line in sys.stdin:
    if line.strip() == "touch":
        print(int(mapped[len(mapped) // 2]), flush=True)
    else:
        print(resident(), flush=True)
"#;

#[test]
fn numpy_maps_files_shared_and_lock_drops_the_mapped_pages() {
    let ws = Workspace::new();
    let data = pattern(3 << 20, 6);
    ws.write_plain("scan.raw", &data);
    let header =
        b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1000,), }";
    let mut npy = header.to_vec();
    npy.resize(127, b' ');
    npy.push(b'\n');
    npy.extend((0..1000).map(|i| (i % 251) as u8));
    ws.write_plain("small.npy", &npy);
    ws.seal_all();
    let mount = ws.mount(&[]);

    let loaded = Command::new("python3")
        .args([
            "-c",
            "import numpy as np, sys; a = np.load(sys.argv[1], mmap_mode='r'); print(int(a.sum()))",
        ])
        .arg(ws.mnt().join("small.npy"))
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let sum: u64 = (0..1000u64).map(|i| i % 251).sum();
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout).trim(),
        sum.to_string()
    );

    let mut mapper = Command::new("python3")
        .arg("-c")
        .arg(MAPPER)
        .arg(ws.mnt().join("scan.raw"))
        .arg(ws.plain().join("scan.raw"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_mapper = mapper.stdin.take().unwrap();
    let mut from_mapper = BufReader::new(mapper.stdout.take().unwrap());
    let mut ask = |line: &str| {
        writeln!(to_mapper, "{line}").unwrap();
        let mut answer = String::new();
        from_mapper.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    };
    let resident: usize = ask("count").parse().unwrap_or_else(|_| {
        panic!("mapper failed; log:\n{}", mount.log_text());
    });
    assert!(resident > 600, "only {resident} of 768 pages mapped in");

    run_ok(smpfs().arg("lock").arg(ws.mnt()));
    let after = ask("count");
    assert_eq!(
        after,
        "0",
        "mapped plaintext outlived the lock; log:\n{}",
        mount.log_text()
    );
    // A live mapping's next access faults, and the read is refused: SIGBUS.
    assert_eq!(ask("touch"), "");
    let status = mapper.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    assert!(mount
        .log_text()
        .contains("page cache of the served files dropped"));

    run_ok(smpfs().arg("unlock").arg(ws.mnt()));
    let remapped = Command::new("python3")
        .arg("-c")
        .arg(MAPPER)
        .arg(ws.mnt().join("scan.raw"))
        .arg(ws.plain().join("scan.raw"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        remapped.status.success(),
        "{}",
        String::from_utf8_lossy(&remapped.stderr)
    );
    assert!(mount.unmount().success());
}

/// The everyday memory-mapping readers of a machine-learning workstation read files on a
/// mount: an Arrow IPC file through `pyarrow.memory_map`, safetensors through its mapped
/// `safe_open`, and a NIfTI volume through nibabel's default (mapped) loading.
#[test]
fn arrow_safetensors_and_nibabel_read_mapped_files() {
    let ws = Workspace::new();
    let make = r#"
import sys, numpy as np, pyarrow as pa, nibabel as nib
from safetensors.numpy import save_file
out = sys.argv[1]
table = pa.table({"slice": np.arange(100_000, dtype=np.int64), "hu": np.linspace(-1000, 3000, 100_000)})
with pa.OSFile(out + "/table.arrow", "wb") as sink:
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
save_file({"weights": np.arange(300_000, dtype=np.float32).reshape(600, 500)}, out + "/model.safetensors")
volume = np.arange(64 * 64 * 16, dtype=np.int16).reshape(64, 64, 16)
nib.save(nib.Nifti1Image(volume, np.eye(4)), out + "/ct.nii")
"#;
    run_ok(Command::new("python3").arg("-c").arg(make).arg(ws.plain()));
    ws.seal_all();
    let mount = ws.mount(&[]);
    let read = r#"
import sys, numpy as np, pyarrow as pa, nibabel as nib
from safetensors import safe_open
root = sys.argv[1]
with pa.memory_map(root + "/table.arrow", "r") as source:
    table = pa.ipc.open_file(source).read_all()
assert table.num_rows == 100_000 and table["slice"][99_999].as_py() == 99_999
with safe_open(root + "/model.safetensors", framework="np") as f:
    w = f.get_tensor("weights")
assert w.shape == (600, 500) and w[599, 499] == 299_999
img = nib.load(root + "/ct.nii")
assert (np.asanyarray(img.dataobj) == np.arange(64 * 64 * 16, dtype=np.int16).reshape(64, 64, 16)).all()
print("ok")
"#;
    let out = run_ok(Command::new("python3").arg("-c").arg(read).arg(ws.mnt()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    drop(mount);
}

/// `read(2)` stays on the direct path: reading a whole file leaves none of it in the
/// kernel's page cache (fincore counts the file's cached pages).
#[test]
fn plain_reads_leave_nothing_in_the_page_cache() {
    let ws = Workspace::new();
    ws.write_plain("scan.raw", &pattern(2 << 20, 7));
    ws.seal_all();
    let mount = ws.mount(&[]);
    let path = ws.mnt().join("scan.raw");
    assert_eq!(std::fs::read(&path).unwrap(), pattern(2 << 20, 7));
    let out = run_ok(
        Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(&path),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    drop(mount);
}
