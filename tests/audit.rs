//! The audit log through real mounts: who read what, verification by the auditor, fail
//! closed when the log cannot be written, and crashes.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{pattern, run_ok, smpfs, Workspace};
use serde_json::Value;

fn records(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn verify(log: &std::path::Path, identity: &std::path::Path) -> std::process::Output {
    smpfs()
        .args(["audit", "verify"])
        .arg(log)
        .arg("--identity")
        .arg(identity)
        .output()
        .unwrap()
}

#[test]
fn reads_by_cat_python_and_dd_are_recorded_and_the_auditor_verifies() {
    let ws = Workspace::new();
    ws.write_plain("study/CT/1.dcm", &pattern(300_000, 1));
    ws.seal_all();
    let auditor = ws.dir.path().join("auditor.id");
    let auditor_recipient =
        String::from_utf8(run_ok(smpfs().arg("keygen").arg("--out").arg(&auditor)).stdout).unwrap();
    let log = ws.dir.path().join("audit.log");
    run_ok(
        smpfs()
            .args([
                "audit",
                "init",
                "--auditor",
                auditor_recipient.trim(),
                "--log",
            ])
            .arg(&log),
    );

    // Others may read (allow_other), so that one reader can run as another user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mount = ws.mount(&["allow_other"]);
    let file = ws.mnt().join("study/CT/1.dcm");
    // Runs a reader to completion; returns its pid.
    let run = |cmd: &mut Command| {
        let mut child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success(), "{cmd:?}");
        pid
    };
    let mut pids = std::collections::HashMap::new();
    pids.insert("cat", run(Command::new("cat").arg(&file)));
    pids.insert(
        "python3",
        run(Command::new("python3")
            .arg("-c")
            .arg(format!("open({:?}, 'rb').read()", file))),
    );
    pids.insert(
        "dd",
        run(Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["of=/dev/null", "bs=64k", "count=3"])),
    );
    // head, as uid 1234 / gid 5678.
    let other = run(Command::new("setpriv")
        .args([
            "--reuid=1234",
            "--regid=5678",
            "--clear-groups",
            "head",
            "-c",
            "1000",
        ])
        .arg(&file));
    assert!(mount.unmount().success());

    let all = records(&log);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let events = |event: &str, process: &str| {
        all.iter()
            .filter(|r| r["event"] == event && r["process"] == process)
            .cloned()
            .collect::<Vec<_>>()
    };
    for process in ["cat", "python3", "dd"] {
        let reads = events("read", process);
        assert!(!reads.is_empty(), "no read records for {process}");
        for r in &reads {
            assert_eq!(r["path"], "study/CT/1.dcm");
            assert_eq!((&r["uid"], &r["gid"]), (&0.into(), &0.into()));
            assert_eq!(r["user"], "root", "{r}");
            assert_eq!(r["host"], host, "{r}");
            assert_eq!(r["result"], "ok");
            assert_eq!(r["pid"], pids[process], "{process}'s own pid");
        }
        assert_eq!(events("open", process).len(), 1, "{process} opened once");
        assert_eq!(
            events("release", process).len(),
            1,
            "{process} released once"
        );
    }
    let head = events("read", "head");
    assert!(!head.is_empty(), "no read records for head");
    for r in head.iter().chain(&events("open", "head")) {
        assert_eq!((&r["uid"], &r["gid"]), (&1234.into(), &5678.into()), "{r}");
        // uid 1234 has no account here: the record says so rather than guessing.
        assert_eq!(r["user"], "?", "{r}");
        assert_eq!(r["pid"], other);
    }
    // dd read exactly three 64 KiB blocks (one chunk each): a record for the first, then
    // one folded record reaching past the second read and covering the third (written
    // before both).
    let dd: Vec<(u64, u64)> = events("read", "dd")
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(dd, [(0, 65536), (65536, 131072)]);
    assert_eq!(events("read", "dd")[1]["detail"]["folded"], true);
    let kinds: Vec<&str> = all.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"mount") && kinds.contains(&"purge"));
    assert_eq!(kinds.last(), Some(&"unmount"), "the segment is sealed");

    let out = verify(&log, &auditor);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(&log, &ws.identity);
    assert!(
        !out.status.success(),
        "the workstation key is not the auditor"
    );

    let out = run_ok(
        smpfs()
            .args(["audit", "show", "--path", "CT/1.dcm"])
            .arg(&log),
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("python3") && table.contains("dd"), "{table}");
    let out = run_ok(smpfs().args(["audit", "export", "--csv"]).arg(&log));
    assert!(String::from_utf8(out.stdout).unwrap().lines().count() > all.len() / 2);
}

#[test]
fn integrity_failures_are_recorded() {
    let ws = Workspace::new();
    ws.write_plain("f", &pattern(200_000, 2));
    ws.seal_all();
    let object = ws.bucket().join("f");
    let mut bytes = std::fs::read(&object).unwrap();
    let n = bytes.len();
    bytes[n - 100_000] ^= 4;
    std::fs::write(&object, bytes).unwrap();
    let mount = ws.mount(&[]);
    assert!(std::fs::read(ws.mnt().join("f")).is_err());
    mount.unmount();
    let all = records(&ws.dir.path().join("audit.log"));
    let failure = all
        .iter()
        .find(|r| r["event"] == "integrity_failure")
        .expect("recorded");
    assert!(failure["result"]
        .as_str()
        .unwrap()
        .contains("failed authentication"));
    assert!(verify(&ws.dir.path().join("audit.log"), &ws.identity)
        .status
        .success());
}

#[test]
fn reads_fail_closed_when_the_log_is_deleted() {
    let ws = Workspace::new();
    let data = pattern(1 << 20, 4);
    ws.write_plain("f", &data);
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    let mount = ws.mount(&[]);
    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(file.read_at(&mut buf, 0).unwrap(), 4096);
    std::fs::remove_file(&log).unwrap();
    let err = file.read_at(&mut buf, 4096).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = file.read_at(&mut buf, 8192).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    drop(mount);
    assert!(!log.exists(), "nothing recreated the deleted log");
}

#[test]
fn reads_fail_closed_when_the_log_cannot_be_written() {
    let ws = Workspace::new();
    let data = pattern(8 << 20, 3);
    ws.write_plain("f", &data);
    ws.seal_all();
    // The log lives on a tiny tmpfs that we then fill up.
    let logdir = ws.dir.path().join("logfs");
    std::fs::create_dir(&logdir).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "smpfs-test-log"])
            .arg(&logdir),
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(logdir.clone());
    let log = logdir.join("audit.log");
    let mount = ws.mount(&[&format!("audit={}", log.display())]);

    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    let mut served = Vec::new();
    let mut buf = vec![0u8; 4096];
    for i in 0..20u64 {
        assert_eq!(file.read_at(&mut buf, i * 4096).unwrap(), 4096);
        served.push(i * 4096);
    }
    let filler = logdir.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=4k")
        .status();
    // Random reads, each in a chunk of its own (64 KiB), so each needs a new record; the
    // first few may still fit in the log's last, partly filled page.
    let mut failed = 0;
    for chunk in (8..128u64).rev().step_by(2) {
        let offset = chunk * 65536 + 4096;
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                assert_eq!(n, 4096);
                assert_eq!(buf, data[offset as usize..offset as usize + 4096]);
                served.push(offset);
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "reads went on after the log filled up");
    drop(file);
    drop(mount);
    // Only this test reads through this mount, so every successful read record is ours;
    // each block served lies in the range of one of them (folded records cover several).
    let ranges: Vec<(u64, u64)> = records(&log)
        .iter()
        .filter(|r| r["event"] == "read" && r["result"] == "ok" && r["path"] == "f")
        .map(|r| {
            let offset = r["offset"].as_u64().unwrap();
            (offset, offset + r["length"].as_u64().unwrap())
        })
        .collect();
    for &start in &served {
        let end = start + 4096;
        assert!(
            ranges.iter().any(|&(s, e)| s <= start && end <= e),
            "bytes at {start} were returned but no record covers them ({} served, {ranges:?})",
            served.len()
        );
    }
}

#[test]
fn a_killed_daemon_leaves_an_unsealed_segment_and_a_torn_line_is_named() {
    let ws = Workspace::new();
    ws.write_plain("f", &pattern(100_000, 4));
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    let mut mount = ws.mount(&[]);
    std::fs::read(ws.mnt().join("f")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mount.pid() as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    mount.wait();
    let _ = Command::new("umount").arg("-l").arg(ws.mnt()).status();
    let out = verify(&log, &ws.identity);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not sealed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A write cut short by the kill: the last line loses its end.
    let text = std::fs::read(&log).unwrap();
    std::fs::write(&log, &text[..text.len() - 30]).unwrap();
    let out = verify(&log, &ws.identity);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("torn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The next mount cuts the torn line and says so in its first record.
    let mount = ws.mount(&[]);
    mount.unmount();
    let all = records(&log);
    let recovered = all.iter().rev().find(|r| r["event"] == "mount").unwrap();
    assert!(
        recovered["detail"]["recovered_torn_bytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{recovered}"
    );
}

/// For the compliance office: `show` filters by event and user, follows the log as it
/// grows and sums reads up per day, user and path; `export` writes the records as JSON
/// lines, CSV or RFC 5424 syslog messages.
#[test]
fn show_filters_follows_and_sums_up_and_export_writes_three_formats() {
    use std::io::BufRead;
    let ws = Workspace::new();
    ws.write_plain("CT/1.dcm", &pattern(200_000, 3));
    ws.write_plain("MR/2.dcm", &pattern(5_000, 4));
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    let mount = ws.mount(&[]);
    std::fs::read(ws.mnt().join("CT/1.dcm")).unwrap();

    // A follower started now sees the read that comes after it.
    let mut follower = smpfs()
        .args(["audit", "show", "--follow", "--json", "--event", "read"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::read(ws.mnt().join("MR/2.dcm")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut followed = Vec::new();
    while !followed.iter().any(|l: &String| l.contains("MR/2.dcm")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => followed.push(line),
            Err(_) => panic!("the follower printed no read of MR/2.dcm: {followed:?}"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    for line in &followed {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["event"], "read", "{line}");
    }
    assert!(mount.unmount().success());

    let opens = run_ok(
        smpfs()
            .args([
                "audit", "show", "--json", "--event", "open", "--user", "root",
            ])
            .arg(&log),
    );
    let opens: Vec<Value> = String::from_utf8(opens.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert!(opens
        .iter()
        .all(|r| r["event"] == "open" && r["user"] == "root"));
    let nobody = run_ok(
        smpfs()
            .args(["audit", "show", "--json", "--user", "nobody-here"])
            .arg(&log),
    );
    assert!(nobody.stdout.is_empty());

    let summary = run_ok(smpfs().args(["audit", "show", "--summary"]).arg(&log));
    let summary = String::from_utf8(summary.stdout).unwrap();
    let ct = summary
        .lines()
        .find(|l| l.ends_with("CT/1.dcm"))
        .unwrap_or_else(|| panic!("{summary}"));
    let cells: Vec<&str> = ct.split_whitespace().collect();
    // DAY USER(uid) OPENS READS BYTES REFUSED PATH
    assert_eq!(&cells[1..3], ["root", "(0)"], "{ct}");
    assert_eq!(cells[3], "1", "{ct}");
    let bytes: u64 = cells[5].parse().unwrap();
    assert!((200_000..200_000 + (128 << 10)).contains(&bytes), "{ct}");

    let log_lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let export = |format: &str| {
        let out = run_ok(
            smpfs()
                .args(["audit", "export", "--format", format])
                .arg(&log),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(export("jsonl").lines().collect::<Vec<_>>(), log_lines);
    let csv = export("csv");
    assert!(csv.lines().next().unwrap().contains(",user,host,"), "{csv}");
    assert_eq!(csv.lines().count(), log_lines.len() + 1);
    let syslog = export("syslog");
    assert_eq!(syslog.lines().count(), log_lines.len());
    for (message, line) in syslog.lines().zip(&log_lines) {
        assert!(
            message.starts_with("<86>1 ") || message.starts_with("<84>1 "),
            "{message}"
        );
        assert!(message.contains(" smpfs ") && message.contains(" [smpfs@32473 seq=\""));
        assert!(message.ends_with(line.as_str()), "{message}");
    }
}

/// With `-o audit_reads=each` every read request is its own record, as before folding.
#[test]
fn with_audit_reads_each_every_request_is_recorded() {
    let ws = Workspace::new();
    ws.write_plain("f", &pattern(100_000, 5));
    ws.seal_all();
    let mount = ws.mount(&["audit_reads=each"]);
    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..5u64 {
        assert_eq!(file.read_at(&mut buf, i * 4096).unwrap(), 4096);
    }
    drop(file);
    assert!(mount.unmount().success());
    let reads: Vec<(u64, u64)> = records(&ws.dir.path().join("audit.log"))
        .iter()
        .filter(|r| r["event"] == "read")
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(reads, (0..5).map(|i| (i * 4096, 4096)).collect::<Vec<_>>());
}

/// Random reads: a record covers the chunk (64 KiB) a read falls in, once per reader; a
/// read in a chunk already recorded writes nothing more, and every byte served is covered.
#[test]
fn random_reads_record_each_chunk_once() {
    let ws = Workspace::new();
    let data = pattern(1 << 20, 6);
    ws.write_plain("f", &data);
    ws.seal_all();
    let mount = ws.mount(&[]);
    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    for (chunk, at) in [
        (5u64, 100u64),
        (2, 0),
        (5, 30_000),
        (9, 8192),
        (2, 61_440),
        (5, 0),
    ] {
        let offset = chunk * 65536 + at;
        assert_eq!(file.read_at(&mut buf, offset).unwrap(), 4096);
        assert_eq!(buf, data[offset as usize..offset as usize + 4096]);
    }
    drop(file);
    assert!(mount.unmount().success());
    let reads: Vec<(u64, u64, bool)> = records(&ws.dir.path().join("audit.log"))
        .iter()
        .filter(|r| r["event"] == "read")
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
                r["detail"]["folded"] == true,
            )
        })
        .collect();
    assert_eq!(
        reads,
        [5u64, 2, 9].map(|chunk| (chunk * 65536, 65536, true)),
        "one record per chunk touched"
    );
}

/// `-o require_purpose`: a process whose session stated no purpose is refused (EACCES,
/// recorded as `denied`); after `smpfs purpose` in its session it reads, and its records
/// carry the purpose. A command's `--purpose` is carried the same way.
#[test]
fn require_purpose_refuses_reads_until_the_session_states_one() {
    let ws = Workspace::new();
    ws.write_plain("f", &pattern(20_000, 6));
    ws.seal_all();
    let mount = ws.mount(&["require_purpose"]);
    let file = ws.mnt().join("f");
    let smpfs_bin = env!("CARGO_BIN_EXE_smpfs");
    // Each `setsid` starts a session of its own, as a new terminal login would.
    let in_new_session = |script: &str| {
        Command::new("setsid")
            .args(["--wait", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let refused = in_new_session(&format!("cat {}", file.display()));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let stated = in_new_session(&format!(
        "{smpfs_bin} purpose {mnt} 'QA review, ticket 17' && cat {file} | wc -c",
        mnt = ws.mnt().display(),
        file = file.display()
    ));
    assert!(
        stated.status.success(),
        "{}",
        String::from_utf8_lossy(&stated.stderr)
    );
    let stdout = String::from_utf8_lossy(&stated.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("recorded with purpose"), "{stdout}");
    assert_eq!(lines.last().copied(), Some("20000"), "{stdout}");
    // Another new session still has none.
    assert!(!in_new_session(&format!("cat {}", file.display()))
        .status
        .success());
    assert!(mount.unmount().success());

    let all = records(&ws.dir.path().join("audit.log"));
    let denied: Vec<&Value> = all.iter().filter(|r| r["event"] == "denied").collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied
        .iter()
        .all(|r| r["result"].as_str().unwrap().contains("no purpose stated")));
    let reads: Vec<&Value> = all.iter().filter(|r| r["event"] == "read").collect();
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|r| r["purpose"] == "QA review, ticket 17"),
        "{reads:?}"
    );

    // Outside a mount: `cat --purpose`.
    let log = ws.dir.path().join("commands.log");
    run_ok(
        smpfs()
            .args(["cat", "--purpose", "export for the registry", "--audit"])
            .arg(&log)
            .arg(ws.bucket())
            .arg("f")
            .arg("-i")
            .arg(&ws.identity),
    );
    let command_reads: Vec<Value> = records(&log)
        .into_iter()
        .filter(|r| r["event"] == "read")
        .collect();
    assert_eq!(command_reads.len(), 1);
    assert_eq!(command_reads[0]["purpose"], "export for the registry");
}

/// `audit_rotate_every=`: the log is rotated into files whose chain `audit verify DIR`
/// follows; a rotated file removed from the directory is named.
#[test]
fn a_rotated_log_verifies_as_a_directory_and_a_removed_file_is_named() {
    let ws = Workspace::new();
    let data = pattern(500_000, 7);
    ws.write_plain("f", &data);
    ws.seal_all();
    let dir = ws.dir.path().join("logs");
    let log = dir.join("audit.log");
    let mount = ws.mount(&[
        &format!("audit={}", log.display()),
        "audit_rotate_every=1s",
        "audit_reads=each",
    ]);
    let file = std::fs::File::open(ws.mnt().join("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    for round in 0..4u64 {
        for block in 0..10u64 {
            let offset = (round * 10 + block) * 4096;
            assert_eq!(file.read_at(&mut buf, offset).unwrap(), 4096);
            assert_eq!(buf, data[offset as usize..offset as usize + 4096]);
        }
        std::thread::sleep(std::time::Duration::from_millis(1600));
    }
    drop(file);
    assert!(mount.unmount().success());
    let mut rotated: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "audit.log")
        .collect();
    rotated.sort();
    assert!(rotated.len() >= 2, "rotated files: {rotated:?}");

    let verified = run_ok(
        smpfs()
            .args(["audit", "verify"])
            .arg(&dir)
            .arg("-i")
            .arg(&ws.identity),
    );
    let report = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(report.contains("in chain order"), "{report}");
    assert!(report.contains("verified"), "{report}");
    // Every read is in some file, in one chain.
    let reads: usize = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| records(&e.unwrap().path()))
        .map(|rs| rs.iter().filter(|r| r["event"] == "read").count())
        .sum();
    assert_eq!(reads, 40);

    std::fs::remove_file(&rotated[0]).unwrap();
    let cut = smpfs()
        .args(["audit", "verify"])
        .arg(&dir)
        .arg("-i")
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!cut.status.success());
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(
        stderr.contains("a rotated file was removed or cut")
            && stderr.contains(&format!("line 1 of {}", rotated[1].display())),
        "{stderr}"
    );
}
