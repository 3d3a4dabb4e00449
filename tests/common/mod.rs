//! Shared fixture for the real-mount tests: a plaintext tree, an identity, a sealed bucket
//! and an `smpfs mount -f` process on a temporary mountpoint, unmounted on drop.
#![allow(dead_code)]

pub mod azurite;
pub mod dropbox;
pub mod fault_proxy;
pub mod gdrive;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use smpfs::keys::Identity;

/// The smpfs binary under test.
pub fn smpfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_smpfs"))
}

/// pydicom's bundled test files (real DICOM); panics with the fix if pydicom is missing.
pub fn pydicom_test_files() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ])
        .output()
        .expect("python3 must be installed: run integration/install-deps.sh");
    assert!(
        out.status.success(),
        "pydicom is not installed: run integration/install-deps.sh ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Compares every file under `src` (links skipped) with the same path under `mnt` and
/// parses the `.dcm` ones there with pydicom; the script fails unless more than 50 files
/// compared equal and more than 20 parsed. Its stdout is "COMPARED PARSED".
pub fn pydicom_tree_check(src: &Path, mnt: &Path) -> Output {
    const CHECK: &str = r#"
import os, sys, pydicom
src, mnt = sys.argv[1], sys.argv[2]
count = parsed = 0
for root, _, names in os.walk(src):
    for name in names:
        path = os.path.join(root, name)
        if os.path.islink(path):
            continue
        rel = os.path.relpath(path, src)
        a = open(path, 'rb').read()
        b = open(os.path.join(mnt, rel), 'rb').read()
        assert a == b, rel
        count += 1
        if name.endswith('.dcm'):
            pydicom.dcmread(os.path.join(mnt, rel), force=True)
            parsed += 1
assert count > 50 and parsed > 20, (count, parsed)
print(count, parsed)
"#;
    Command::new("python3")
        .arg("-c")
        .arg(CHECK)
        .arg(src)
        .arg(mnt)
        .output()
        .expect("python3")
}

/// A TCP port on loopback that was free a moment ago, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs `body` to `/_admin/ACTION` of a fake server on loopback `port` (the fake Drive
/// and Dropbox servers' control endpoint) and returns its JSON answer; panics unless 200.
pub fn post_admin(port: u16, action: &str, body: serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /_admin/{action} HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{action}: {answer}");
    serde_json::from_str(json).unwrap()
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic, position-dependent bytes so misplaced data is caught.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9) ^ (seed as usize * 97)) as u8)
        .collect()
}

/// A workspace: `plain/` (sources), `bucket/`, `mnt/`, and an identity file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("smpfs-test-")
            .tempdir()
            .unwrap();
        for sub in ["plain", "bucket", "mnt"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let identity = dir.path().join("identity");
        let id = Identity::generate();
        id.save_new(&identity, None).unwrap();
        Workspace {
            recipient: id.recipient().to_string(),
            identity,
            dir,
        }
    }

    pub fn plain(&self) -> PathBuf {
        self.dir.path().join("plain")
    }
    pub fn bucket(&self) -> PathBuf {
        self.dir.path().join("bucket")
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    /// Where this workspace's commands keep manifest generations seen (rollback state).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The smpfs binary with this workspace's state directory and the test credentials
    /// (moto's AWS keys, Azurite's development account key).
    pub fn smpfs(&self) -> Command {
        let mut cmd = smpfs();
        moto::aws_env(&mut cmd);
        azurite::azure_env(&mut cmd);
        cmd.env("SMPFS_STATE_DIR", self.state());
        cmd
    }

    /// Writes a plaintext file under `plain/`.
    pub fn write_plain(&self, rel: &str, data: &[u8]) {
        let path = self.plain().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// Seals everything under `plain/` into `bucket/` with the CLI.
    pub fn seal_all(&self) {
        run_ok(
            smpfs()
                .args(["seal", "--layout", "v1"])
                .arg(self.plain())
                .args(["--to", &self.recipient])
                .arg("--out")
                .arg(self.bucket()),
        );
    }

    /// `smpfs mount BUCKET MNT -i IDENTITY`, to run with more arguments (for mounts that
    /// are expected to fail, and so never wait for the mount to show).
    pub fn mount_command(&self) -> Command {
        let mut cmd = self.smpfs();
        cmd.arg("mount")
            .arg(self.bucket())
            .arg(self.mnt())
            .arg("-i")
            .arg(&self.identity);
        cmd
    }

    /// Mounts `bucket/` on `mnt/` in the foreground with extra `-o` options.
    pub fn mount(&self, options: &[&str]) -> Mount {
        self.mount_source(self.bucket().to_str().unwrap(), options)
    }

    /// Mounts `source` (a directory or `s3://…`) on `mnt/` in the foreground.
    pub fn mount_source(&self, source: &str, options: &[&str]) -> Mount {
        let log = self.dir.path().join("mount.log");
        let mut cmd = self.smpfs();
        cmd.env("SMPFS_ALLOW_TEST_SINK", "1")
            .arg("mount")
            .arg(source)
            .arg(self.mnt())
            .arg("-i")
            .arg(&self.identity)
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for o in options {
            cmd.args(["-o", o]);
        }
        spawn_mount(cmd, self.mnt(), log)
    }
}

/// Starts a foreground `smpfs mount` command whose stderr goes to `log`, and waits until
/// `mnt` shows the mount.
pub fn spawn_mount(mut cmd: Command, mnt: PathBuf, log: PathBuf) -> Mount {
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let mount = Mount {
        child: Some(child),
        mnt,
        log,
    };
    mount.wait_until_mounted();
    mount
}

/// Every file below `dir` (recursively): relative paths and contents, sorted.
pub fn files_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// How many times `needle` occurs in the readable memory of process `pid`.
pub fn occurrences_in_memory(pid: u32, needle: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut hits = 0;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields[1].starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = fields[0].split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut buf, start).is_err() {
            continue;
        }
        hits += buf.windows(needle.len()).filter(|w| *w == needle).count();
    }
    hits
}

/// Asserts that `smpfs audit verify LOG --identity IDENTITY` succeeds.
pub fn assert_audit_verifies(log: &Path, identity: &Path) {
    let out = smpfs()
        .args(["audit", "verify"])
        .arg(log)
        .arg("--identity")
        .arg(identity)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The records of the audit log at `log` that parse as JSON, in order.
pub fn audit_records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Bytes of locked memory of process `pid` (`VmLck` in /proc).
pub fn vm_locked_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Whether `path` is a mountpoint of type fuse.smpfs right now.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4) == Some(&path) && l.contains(" - fuse.smpfs ")
    })
}

/// A running foreground mount; unmounted (and the daemon reaped) on drop.
pub struct Mount {
    child: Option<Child>,
    pub mnt: PathBuf,
    pub log: PathBuf,
}

impl Mount {
    fn wait_until_mounted(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.mnt) {
            assert!(
                Instant::now() < deadline,
                "not mounted; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with umount(8) and returns the daemon's exit status.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        let status = Command::new("umount").arg(&self.mnt).status().unwrap();
        assert!(status.success(), "umount failed");
        self.wait()
    }

    /// Waits (up to 20 s) for the daemon to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `len` bytes at `offset` of an open file.
pub fn read_at(file: &mut std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// For a mount with `timeout=2s` on a server whose process is `pid`, with `file` (holding
/// `data`, at least 6 MiB) open on it: a hung server gives EIO in time
/// ([`assert_hung_server_fails_in_time`]); a server that `kill` stops gives EIO within
/// the timeout, and the log gives the last error.
pub fn assert_hung_then_dead_server_fails_in_time(
    mount: &Mount,
    file: &mut std::fs::File,
    data: &[u8],
    pid: nix::unistd::Pid,
    kill: impl FnOnce(),
) {
    assert_hung_server_fails_in_time(mount, file, data, pid);
    kill();
    let started = Instant::now();
    let error = read_at(file, 5 << 20, 65_536).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        mount.log_text().contains("last error"),
        "log:\n{}",
        mount.log_text()
    );
}

/// For a mount with `timeout=2s` on a server whose process is `pid`, with `file` (holding
/// `data`, at least 3 MiB) open on it: a hung server (SIGSTOP) gives EIO after the
/// timeout, not a hang, and reads work again once it continues.
pub fn assert_hung_server_fails_in_time(
    mount: &Mount,
    file: &mut std::fs::File,
    data: &[u8],
    pid: nix::unistd::Pid,
) {
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let error = read_at(file, 2 << 20, 65_536).unwrap_err();
    let waited = started.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "took {waited:?}"
    );
    let again = read_at(file, 2 << 20, 65_536)
        .unwrap_or_else(|e| panic!("after SIGCONT: {e}; log:\n{}", mount.log_text()));
    assert!(again == data[2 << 20..(2 << 20) + 65_536]);
}

/// Stores `data` as object `key` through `backend`'s writer.
pub fn put(
    backend: &dyn smpfs::backend::Backend,
    key: &str,
    data: &[u8],
    overwrite: bool,
) -> Result<(), smpfs::backend::BackendError> {
    use std::io::Write;
    let mut writer = backend.create(key, overwrite)?;
    writer.write_all(data).unwrap();
    writer.commit()
}

/// The first `len` bytes of object `key`.
pub fn get(
    backend: &dyn smpfs::backend::Backend,
    key: &str,
    len: usize,
) -> Result<Vec<u8>, smpfs::backend::BackendError> {
    let mut buf = vec![0u8; len];
    backend.read_range(key, 0, &mut [&mut buf])?;
    Ok(buf)
}

/// Ranged reads of a backend, with object `a/b` holding `second!`: a MiB deep inside a
/// 19 MiB object that `writer` stores, a read past its end (a short read), and one read
/// into two buffers.
pub fn assert_ranged_reads(
    writer: &dyn smpfs::backend::Backend,
    reader: &dyn smpfs::backend::Backend,
) {
    use smpfs::backend::BackendError;
    let big = pattern((19 << 20) + 7, 4);
    put(writer, "big", &big, false).unwrap();
    let mut back = vec![0u8; 1 << 20];
    reader
        .read_range("big", 18 << 20, &mut [&mut back])
        .unwrap();
    assert!(back == big[18 << 20..19 << 20]);
    let mut past = vec![0u8; 16];
    assert!(matches!(
        reader.read_range("big", big.len() as u64 - 8, &mut [&mut past]),
        Err(BackendError::ShortRead { .. })
    ));
    let mut split = [vec![0u8; 3], vec![0u8; 4]];
    let [x, y] = &mut split;
    reader
        .read_range_arriving("a/b", 0, &mut [x, y], &smpfs::backend::remote::CopyIn)
        .unwrap();
    assert_eq!((&split[0][..], &split[1][..]), (&b"sec"[..], &b"ond!"[..]));
}
