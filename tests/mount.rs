//! Real FUSE mounts of sealed buckets, read with std::fs and with ordinary tools.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{is_mounted, pattern, run_ok, smpfs, Workspace};

fn tree(root: &std::path::Path) -> BTreeSet<String> {
    walk(root, root)
}

fn walk(root: &std::path::Path, dir: &std::path::Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if path.is_dir() {
            names.insert(format!("{rel}/"));
            names.extend(walk(root, &path));
        } else {
            names.insert(rel);
        }
    }
    names
}

#[test]
fn sealed_tree_reads_back_exactly_with_std_cmp_and_sha256sum() {
    let ws = Workspace::new();
    let files = [
        ("empty", 0),
        ("one", 1),
        ("study 1/CT/exact-chunk.dcm", 65_536),
        ("study 1/CT/big.dcm", 3_000_001),
        ("study 1/MR/small.dcm", 1000),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        ws.write_plain(name, &pattern(*len, i as u8));
    }
    ws.seal_all();
    let mount = ws.mount(&[]);
    assert_eq!(tree(&ws.mnt()), tree(&ws.plain()));
    for (name, len) in files {
        let through = ws.mnt().join(name);
        assert_eq!(
            std::fs::metadata(&through).unwrap().len(),
            len as u64,
            "{name}"
        );
        assert_eq!(
            std::fs::read(&through).unwrap(),
            std::fs::read(ws.plain().join(name)).unwrap()
        );
        run_ok(Command::new("cmp").arg(&through).arg(ws.plain().join(name)));
    }
    let sums = |dir: std::path::PathBuf| {
        let out = run_ok(
            Command::new("sha256sum")
                .arg("study 1/CT/big.dcm")
                .current_dir(dir),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sums(ws.mnt()), sums(ws.plain()));
    assert!(mount.unmount().success());
    assert!(!is_mounted(&ws.mnt()));
}

#[test]
fn parallel_readers_see_the_right_bytes() {
    let ws = Workspace::new();
    let data = pattern(6 << 20, 9);
    ws.write_plain("a.bin", &data);
    ws.write_plain("b.bin", &pattern(2 << 20, 3));
    ws.seal_all();
    let _mount = ws.mount(&["cache_size=32M"]);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (ws, data) = (&ws, &data);
            s.spawn(move || {
                let file = std::fs::File::open(ws.mnt().join("a.bin")).unwrap();
                for round in 0..30u64 {
                    let offset = ((t * 7919 + round * 104_729) * 997) % (data.len() as u64 - 1);
                    let len = (((t + 1) * (round + 3) * 4099) % (1 << 20)) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let n = file.read_at(&mut buf, offset).unwrap();
                    let end = (offset as usize + len).min(data.len());
                    assert_eq!(&buf[..n], &data[offset as usize..end]);
                }
                let b = std::fs::read(ws.mnt().join("b.bin")).unwrap();
                assert_eq!(b, pattern(2 << 20, 3));
            });
        }
    });
}

#[test]
fn tampered_chunk_is_eio_and_logged_and_broken_objects_are_hidden() {
    let ws = Workspace::new();
    let data = pattern(300_000, 5);
    for name in ["tampered", "truncated", "ok"] {
        ws.write_plain(name, &data);
    }
    ws.write_plain("other-identity", b"for someone else");
    ws.seal_all();
    // Re-seal one file to a stranger, and drop an unsealed file into the bucket.
    let stranger = smpfs::keys::Identity::generate().recipient().to_string();
    run_ok(
        smpfs()
            .args([
                "seal",
                "--layout",
                "v1",
                "--overwrite",
                "--to",
                &stranger,
                "--out",
            ])
            .arg(ws.bucket())
            .arg(ws.plain().join("other-identity")),
    );
    std::fs::write(
        ws.bucket().join("notes.txt"),
        b"plaintext that was never sealed",
    )
    .unwrap();
    let object = ws.bucket().join("tampered");
    let mut bytes = std::fs::read(&object).unwrap();
    let chunk1 = bytes.len() - 300_000 - 5 * 16 + 65_536 + 16;
    bytes[chunk1 + 500] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    let truncated = ws.bucket().join("truncated");
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len - 1)
        .unwrap();

    let mount = ws.mount(&[]);
    assert_eq!(
        tree(&ws.mnt()),
        BTreeSet::from(["ok".to_owned(), "tampered".to_owned()])
    );
    assert_eq!(std::fs::read(ws.mnt().join("ok")).unwrap(), data);
    let file = std::fs::File::open(ws.mnt().join("tampered")).unwrap();
    let mut first = vec![0u8; 65_536];
    assert_eq!(file.read_at(&mut first, 0).unwrap(), 65_536);
    assert_eq!(first, data[..65_536]);
    let err = std::fs::read(ws.mnt().join("tampered")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = std::fs::metadata(ws.mnt().join("truncated")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let output = Command::new("cat")
        .arg(ws.mnt().join("tampered"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.len() <= 65_536,
        "nothing past the good chunk was released"
    );
    drop(file);
    mount.unmount();
    let log = std::fs::read_to_string(ws.dir.path().join("mount.log")).unwrap();
    assert!(log.contains("chunk 1 failed authentication"), "log:\n{log}");
    assert!(log.contains("not sealed to this identity"), "log:\n{log}");
    assert!(log.contains("truncated or extended"), "log:\n{log}");
    assert!(log.contains("bad magic"), "log:\n{log}");
}

#[test]
fn mount_is_read_only() {
    let ws = Workspace::new();
    ws.write_plain("f", b"data");
    ws.seal_all();
    let _mount = ws.mount(&[]);
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(ws.mnt().join("f"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::write(ws.mnt().join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

/// The last two audit records of a mount that ended cleanly: the purge, then the seal.
fn assert_purged_and_sealed(ws: &Workspace) {
    let log = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events[events.len() - 2..],
        ["purge", "unmount"],
        "{events:?}"
    );
}

#[test]
fn every_signal_unmounts_cleanly_with_the_purge() {
    use nix::sys::signal::Signal;
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let ws = Workspace::new();
        ws.write_plain("f", &pattern(100_000, 1));
        ws.seal_all();
        let mut mount = ws.mount(&[]);
        assert_eq!(
            std::fs::read(ws.mnt().join("f")).unwrap(),
            pattern(100_000, 1)
        );
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(mount.pid() as i32), signal).unwrap();
        assert!(mount.wait().success(), "{signal}");
        assert!(!is_mounted(&ws.mnt()));
        let log = mount.log_text();
        assert!(
            log.contains("cache zeroized and keys dropped"),
            "{signal}: log:\n{log}"
        );
        assert_purged_and_sealed(&ws);
    }
}

#[test]
fn a_connection_closed_by_the_unmount_is_told_from_one_aborted_under_a_live_mount() {
    let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
    let ws = Workspace::new();
    ws.write_plain("f", b"data");
    ws.seal_all();
    let mut mount = ws.mount(&[]);
    // A daemon gone while the kernel still holds its mount: the mountpoint answers ENOTCONN,
    // as after `/sys/fs/fuse/connections/N/abort`, so ECONNABORTED there is a failure.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mount.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(!mount.wait().success());
    assert_eq!(
        std::fs::metadata(ws.mnt()).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    assert!(!smpfs::fs::ended_with_unmount(&aborted, &ws.mnt()));
    // Once the mount is gone, the same error is the end of an orderly unmount.
    assert!(Command::new("umount")
        .arg("-l")
        .arg(ws.mnt())
        .status()
        .unwrap()
        .success());
    assert!(smpfs::fs::ended_with_unmount(&aborted, &ws.mnt()));
    let other = std::io::Error::from_raw_os_error(libc::EIO);
    assert!(!smpfs::fs::ended_with_unmount(&other, &ws.mnt()));
}

#[test]
fn idle_timeout_unmounts_with_the_purge_but_not_while_a_file_is_open() {
    let ws = Workspace::new();
    ws.write_plain("f", b"data");
    ws.seal_all();
    let mut mount = ws.mount(&["idle_timeout=1"]);
    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(is_mounted(&ws.mnt()), "an open file keeps the mount");
    drop(file);
    assert!(mount.wait().success());
    assert!(!is_mounted(&ws.mnt()));
    assert_purged_and_sealed(&ws);
}

#[test]
fn background_mount_returns_once_live_and_reports_failures() {
    let ws = Workspace::new();
    ws.write_plain("f", b"hello");
    ws.seal_all();
    let log = ws.dir.path().join("daemon.log");
    let mount = |extra: &[&str]| {
        smpfs()
            .arg("mount")
            .arg(ws.bucket())
            .arg(ws.mnt())
            .arg("-i")
            .arg(&ws.identity)
            .arg("--log-file")
            .arg(&log)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = mount(&["-o", "bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mount option \"bogus\""));
    // Without CAP_IPC_LOCK and with a 1 MiB RLIMIT_MEMLOCK, locking the cache must fail.
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-ipc_lock",
            "prlimit",
            "--memlock=1048576:1048576",
        ])
        .arg(env!("CARGO_BIN_EXE_smpfs"))
        .arg("mount")
        .arg(ws.bucket())
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(!out.status.success(), "locking the cache must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may lock only 1024 KiB"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&ws.mnt()), "nothing half-mounted");

    let out = mount(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live as soon as the command returned: no polling.
    assert!(is_mounted(&ws.mnt()));
    assert_eq!(std::fs::read(ws.mnt().join("f")).unwrap(), b"hello");
    run_ok(Command::new("umount").arg(ws.mnt()));
}

#[test]
fn bad_identity_is_a_clear_error_and_nothing_is_mounted() {
    let ws = Workspace::new();
    ws.write_plain("f", b"x");
    ws.seal_all();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ws.identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ws.mount_command().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert!(!is_mounted(&ws.mnt()));
}

/// `smpfs cat BUCKET PATH`, unchecked.
fn cat(ws: &Workspace, bucket: &Path, path: &str) -> std::process::Output {
    smpfs()
        .arg("cat")
        .arg(bucket)
        .arg(path)
        .arg("-i")
        .arg(&ws.identity)
        .output()
        .unwrap()
}

#[test]
fn cat_decrypts_one_file_and_refuses_tampering() {
    let ws = Workspace::new();
    let data = pattern(200_000, 2);
    ws.write_plain("dir/x.bin", &data);
    ws.seal_all();
    let object = ws.bucket().join("dir/x.bin");
    let out = run_ok(
        smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg("dir/x.bin")
            .arg("-i")
            .arg(&ws.identity),
    );
    assert_eq!(out.stdout, data);
    // A copy under another name is a moved object: refused.
    std::fs::copy(&object, ws.bucket().join("moved.bin")).unwrap();
    let out = cat(&ws, &ws.bucket(), "moved.bin");
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("moved or swapped"));
    // A path that is not in the bucket, or not a path in it, is said so.
    let out = cat(&ws, &ws.bucket(), "dir/none.bin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no file \"dir/none.bin\""));
    let out = cat(&ws, &ws.bucket(), "/etc/passwd");
    assert!(String::from_utf8_lossy(&out.stderr).contains("relative to the bucket"));
    // Truncation is caught before any byte is written.
    let len = std::fs::metadata(&object).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap()
        .set_len(len - 16)
        .unwrap();
    let out = cat(&ws, &ws.bucket(), "dir/x.bin");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn kernel_cache_option_reads_the_same_bytes() {
    let ws = Workspace::new();
    let data = pattern(1_500_000, 4);
    ws.write_plain("f", &data);
    ws.seal_all();
    let _mount = ws.mount(&["kernel_cache,cache_size=32M"]);
    for _ in 0..2 {
        assert_eq!(std::fs::read(ws.mnt().join("f")).unwrap(), data);
    }
}

#[test]
fn passphrase_protected_identity_mounts_only_with_the_right_passphrase() {
    let ws = Workspace::new();
    ws.write_plain("f", b"protected");
    let secret_id = ws.dir.path().join("protected.id");
    let pass = ws.dir.path().join("pass");
    std::fs::write(&pass, "a long passphrase\n").unwrap();
    let out = run_ok(
        smpfs()
            .arg("keygen")
            .arg("--out")
            .arg(&secret_id)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    let recipient = String::from_utf8(out.stdout).unwrap();
    run_ok(
        smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", recipient.trim(), "--out"])
            .arg(ws.bucket()),
    );
    let mount = |pass_file: &std::path::Path| {
        smpfs()
            .arg("mount")
            .arg(ws.bucket())
            .arg(ws.mnt())
            .arg("-i")
            .arg(&secret_id)
            .arg("-o")
            .arg(format!("passphrase_file={}", pass_file.display()))
            .arg("--log-file")
            .arg(ws.dir.path().join("log"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let wrong = ws.dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = mount(&wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert!(!is_mounted(&ws.mnt()), "nothing mounted");

    let out = mount(&pass);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(ws.mnt().join("f")).unwrap(), b"protected");
    run_ok(Command::new("umount").arg(ws.mnt()));
}

/// `getfattr`-style attributes describe a sealed file, and `df` counts the files and their
/// plaintext bytes.
#[test]
fn xattrs_describe_sealed_files_and_statfs_counts_them() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", &pattern(100, 1));
    ws.write_plain("d/b.bin", &pattern(70_000, 2));
    ws.write_plain("d/empty", b"");
    ws.seal_all();
    let mount = ws.mount(&[]);
    let script = r#"
import os, sys
root = sys.argv[1]
f = os.path.join(root, "d/b.bin")
print(sorted(os.listxattr(f)))
print(os.getxattr(f, "user.smpfs.chunk_size").decode())
print(os.getxattr(f, "user.smpfs.recipients").decode())
print(len(os.getxattr(f, "user.smpfs.file_id").decode()))
print(os.getxattr(f, "user.smpfs.sealed").decode())
print(os.listxattr(os.path.join(root, "d")))
os.listdir(root); os.listdir(os.path.join(root, "d"))
st = os.statvfs(root)
print(st.f_files, st.f_blocks * st.f_frsize)
"#;
    let out = run_ok(Command::new("python3").arg("-c").arg(script).arg(ws.mnt()));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "['user.smpfs.chunk_size', 'user.smpfs.file_id', 'user.smpfs.recipients', 'user.smpfs.sealed']"
    );
    assert_eq!(&lines[1..6], ["65536", "1", "32", "smpfs v1", "[]"]);
    let blocks = |n: u64| n.div_ceil(4096) * 4096;
    assert_eq!(lines[6], format!("3 {}", blocks(100 + 70_000)));
    drop(mount);
}

/// Local buckets are decrypted straight from a mapping of the object file; a file that
/// shrinks under the mapping must fail the read (SIGBUS caught), not kill the mount.
#[test]
fn an_object_truncated_while_it_is_read_fails_the_read_and_the_mount_survives() {
    let ws = Workspace::new();
    let data = pattern(32 << 20, 8);
    ws.write_plain("big", &data);
    ws.write_plain("ok", b"still readable");
    ws.seal_all();
    let object = ws.bucket().join("big");
    let sealed = std::fs::read(&object).unwrap();
    // A cache half the file's size: every pass reads the object again.
    let mount = ws.mount(&["cache_size=16M"]);
    let caught = || mount.log_text().contains("while it was being read");
    // Opened before any truncation: a file found short when it is looked up is hidden.
    let reading = std::fs::File::open(ws.mnt().join("big")).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (wrong, failed) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut wrong, mut failed) = (0, 0);
            let mut buf = vec![0u8; 1 << 20];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for mib in 0..32u64 {
                    match reading.read_at(&mut buf, mib << 20) {
                        Ok(n) => {
                            let at = (mib << 20) as usize;
                            wrong += usize::from(buf[..n] != data[at..at + n]);
                        }
                        Err(e) => {
                            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                            failed += 1;
                        }
                    }
                }
            }
            (wrong, failed)
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&object)
            .unwrap();
        while !caught() && std::time::Instant::now() < deadline {
            file.set_len(sealed.len() as u64 / 3).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(3));
            file.write_all_at(&sealed, 0).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(caught(), "no read ran into the truncation");
    assert_eq!(wrong, 0, "a read returned bytes that are not the file's");
    assert!(failed > 0, "no read failed while the object was truncated");
    assert_eq!(
        std::fs::read(ws.mnt().join("ok")).unwrap(),
        b"still readable"
    );
    assert!(is_mounted(&ws.mnt()));
    drop(reading);
    mount.unmount();
}

/// With `-o volumes` the daemon locks all its memory (mlockall, for the DICOM parser's
/// heap); the mappings it decrypts a local bucket's objects from hold ciphertext and must
/// not be locked (nor count against RLIMIT_MEMLOCK).
#[test]
fn mapped_ciphertext_is_not_locked() {
    let ws = Workspace::new();
    let data = pattern(8 << 20, 4);
    ws.write_plain("big", &data);
    ws.seal_all();
    let mount = ws.mount(&["volumes"]);
    assert_eq!(std::fs::read(ws.mnt().join("big")).unwrap(), data);
    let object = ws.bucket().join("big").canonicalize().unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", mount.pid())).unwrap();
    let lines: Vec<&str> = smaps.lines().collect();
    let mapped: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.ends_with(object.to_str().unwrap()))
        .map(|(i, _)| {
            *lines[i..]
                .iter()
                .find(|line| line.starts_with("VmFlags:"))
                .unwrap()
        })
        .collect();
    assert!(!mapped.is_empty(), "the read went through no mapping");
    for flags in mapped {
        assert!(
            !flags.contains(" lo"),
            "a mapping of the object is locked: {flags}"
        );
    }
    mount.unmount();
}

/// The kernel's requests that reached the daemon, by opcode, from its `fuser::request`
/// debug log.
fn requests_by_opcode(log: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("fuser::request")) {
        let Some((_, rest)) = line.split_once(" ino 0x") else {
            continue;
        };
        if let Some(opcode) = rest.split_whitespace().nth(1) {
            *counts.entry(opcode.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn files_listed_then_read_cost_no_lookup_or_flush_round_trips() {
    let ws = Workspace::new();
    for i in 0..20 {
        ws.write_plain(&format!("series/{i:02}.dcm"), &pattern(3000, i as u8));
    }
    ws.seal_all();
    let log = ws.dir.path().join("requests.log");
    let mut cmd = ws.mount_command();
    cmd.env("SMPFS_LOG", "fuser::request=debug")
        .arg("-f")
        .stderr(std::fs::File::create(&log).unwrap());
    let mount = common::spawn_mount(cmd, ws.mnt(), log.clone());
    let series = ws.mnt().join("series");
    let mut names: Vec<_> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 20);
    for name in &names {
        assert_eq!(
            std::fs::read(series.join(name)).unwrap(),
            std::fs::read(ws.plain().join("series").join(name)).unwrap()
        );
    }
    assert!(mount.unmount().success());
    let requests = requests_by_opcode(&std::fs::read_to_string(&log).unwrap());
    let count = |opcode: &str| requests.get(opcode).copied().unwrap_or(0);
    assert_eq!(count("OPEN"), 20, "{requests:?}");
    assert!(count("READDIRPLUS") >= 1, "{requests:?}");
    assert_eq!(count("LOOKUP"), 1, "only `series` itself: {requests:?}");
    assert!(count("FLUSH") <= 1, "{requests:?}");
}
