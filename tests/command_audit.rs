//! Commands that decrypt outside a mount (`cat`, `inspect`, `ls`, `verify`, `info`,
//! `share`, `rotate`, `migrate`) write their records to an audit log of their own before
//! any plaintext leaves them, and fail closed when it cannot be written.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{assert_audit_verifies, audit_records, files_below, pattern, run_ok, Workspace};
use serde_json::Value;

/// The default log of commands, beside the workspace's identity.
fn command_log(ws: &Workspace) -> PathBuf {
    ws.dir.path().join("audit-commands.log")
}

/// The segments of `log`, each from its `mount` record to its `unmount`.
fn segments(log: &Path) -> Vec<Vec<Value>> {
    let mut segments: Vec<Vec<Value>> = Vec::new();
    for record in audit_records(log) {
        if record["event"] == "mount" {
            segments.push(Vec::new());
        }
        segments.last_mut().unwrap().push(record);
    }
    segments
}

/// The event names of `segment`.
fn events(segment: &[Value]) -> Vec<&str> {
    segment
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect()
}

/// Checks the `mount` and `unmount` records of a command's segment.
fn assert_command(segment: &[Value], command: &str, source: &str) {
    let mount = &segment[0]["detail"]["mount"];
    assert_eq!(mount["command"], command, "{segment:?}");
    assert_eq!(mount["source"], source, "{segment:?}");
    let seal = &segment.last().unwrap()["detail"];
    assert_eq!(seal["command"], command, "{segment:?}");
    assert_eq!(seal["result"], "ok", "{segment:?}");
    for record in segment {
        assert_eq!(record["process"], "smpfs", "{record}");
        assert_eq!(record["user"], "root", "{record}");
    }
}

/// The `read` records of `segment` by path: (path, offset, length).
fn reads(segment: &[Value]) -> Vec<(String, u64, u64)> {
    let mut reads: Vec<(String, u64, u64)> = segment
        .iter()
        .filter(|r| r["event"] == "read")
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["offset"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
            )
        })
        .collect();
    reads.sort();
    reads
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Seals `plain/` into a zero-knowledge bucket `bucket/` with the workspace's identity.
fn seal_v2(ws: &Workspace) {
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .arg("--out")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
}

/// `smpfs COMMAND BUCKET -i ID` plus `extra`.
fn on_bucket(ws: &Workspace, command: &str, extra: &[&str]) -> Command {
    let mut cmd = ws.smpfs();
    cmd.arg(command)
        .arg(ws.bucket())
        .arg("-i")
        .arg(&ws.identity)
        .args(extra);
    cmd
}

#[test]
fn cat_records_the_whole_file_before_its_plaintext_and_the_auditor_verifies() {
    let ws = Workspace::new();
    let data = pattern(200_000, 1);
    ws.write_plain("CT/1.dcm", &data);
    ws.seal_all();
    let bucket = ws.bucket().display().to_string();
    let out = run_ok(&mut on_bucket(&ws, "cat", &["CT/1.dcm"]));
    assert_eq!(out.stdout, data);
    let copy = ws.dir.path().join("copy");
    run_ok(on_bucket(&ws, "cat", &["CT/1.dcm", "--out"]).arg(&copy));
    assert_eq!(std::fs::read(&copy).unwrap(), data);

    let log = command_log(&ws);
    let segments = segments(&log);
    assert_eq!(segments.len(), 2);
    for segment in &segments {
        assert_eq!(events(segment), ["mount", "open", "read", "unmount"]);
        assert_command(segment, "cat", &bucket);
        assert_eq!(
            reads(segment),
            [("CT/1.dcm".to_owned(), 0, data.len() as u64)]
        );
        let (open, read) = (&segment[1], &segment[2]);
        assert_eq!(open["path"], "CT/1.dcm");
        assert_eq!(open["file_id"], read["file_id"]);
        assert_eq!(read["file_id"].as_str().unwrap().len(), 32);
    }
    // The command log is an ordinary audit log: the auditor (here, the workstation's own
    // identity: no `audit init`) verifies it.
    assert_audit_verifies(&log, &ws.identity);
    // A failed command seals its segment too, with the error.
    let out = on_bucket(&ws, "cat", &["CT/none"]).output().unwrap();
    assert!(!out.status.success());
    let last = segments_last(&log);
    assert_eq!(events(&last), ["mount", "unmount"]);
    assert_eq!(last[1]["detail"]["clean"], false);
    assert!(last[1]["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("no file"));
    assert_audit_verifies(&log, &ws.identity);
}

fn segments_last(log: &Path) -> Vec<Value> {
    segments(log).pop().unwrap()
}

#[test]
fn each_bucket_command_records_the_manifest_and_every_file_it_decrypts() {
    let ws = Workspace::new();
    let files = [("a/1.bin", pattern(100_000, 1)), ("b.txt", pattern(300, 2))];
    for (path, data) in &files {
        ws.write_plain(path, data);
    }
    seal_v2(&ws);
    let bucket = ws.bucket().display().to_string();
    let log = ws.dir.path().join("logs/commands.log");
    let audit = ["--audit", log.to_str().unwrap()];
    let whole: Vec<(String, u64, u64)> = files
        .iter()
        .map(|(path, data)| (path.to_string(), 0, data.len() as u64))
        .collect();

    let listed = run_ok(&mut on_bucket(&ws, "ls", &audit));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("a/1.bin"));
    run_ok(&mut on_bucket(&ws, "verify", &audit));
    run_ok(on_bucket(&ws, "info", &audit).args(["--path", "b.txt"]));
    let other = other_recipient();
    run_ok(on_bucket(&ws, "share", &audit).args(["--add", &other]));
    run_ok(on_bucket(&ws, "rotate", &audit).args(["--remove", &other]));

    let segments = segments(&log);
    let [ls, verify, info, share, rotate] = &segments[..] else {
        panic!("five segments: {segments:?}");
    };
    assert_command(ls, "ls", &bucket);
    assert_eq!(events(ls), ["mount", "refresh", "unmount"]);
    assert_eq!(ls[1]["detail"]["generation"], 1);

    assert_command(verify, "verify", &bucket);
    assert_eq!(
        events(verify),
        ["mount", "refresh", "read", "read", "unmount"]
    );
    assert_eq!(reads(verify), whole);

    assert_command(info, "info", &bucket);
    assert_eq!(events(info), ["mount", "open", "unmount"]);
    assert_eq!(info[1]["path"], "b.txt");
    assert_eq!(info[1]["file_id"].as_str().unwrap().len(), 32);

    assert_command(share, "share", &bucket);
    assert_eq!(
        events(share),
        ["mount", "refresh", "open", "open", "unmount"]
    );
    let mut opened: Vec<&str> = share[2..4]
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    opened.sort();
    assert_eq!(opened, ["a/1.bin", "b.txt"]);

    assert_command(rotate, "rotate", &bucket);
    assert_eq!(
        events(rotate),
        ["mount", "refresh", "read", "read", "unmount"]
    );
    assert_eq!(reads(rotate), whole);
    // Each command read the generation the one before it left.
    assert_eq!(share[1]["detail"]["generation"], 1);
    assert!(rotate[1]["detail"]["generation"].as_u64().unwrap() > 1);
    assert_audit_verifies(&log, &ws.identity);
}

/// The recipient of a new identity of someone else.
fn other_recipient() -> String {
    smpfs::keys::Identity::generate().recipient().to_string()
}

#[test]
fn migrate_records_every_file_it_decrypts() {
    let ws = Workspace::new();
    ws.write_plain("x/1", &pattern(70_000, 3));
    ws.write_plain("y", &pattern(10, 4));
    ws.seal_all();
    run_ok(&mut on_bucket(&ws, "migrate", &[]));
    let segment = segments_last(&command_log(&ws));
    assert_command(&segment, "migrate", &ws.bucket().display().to_string());
    assert_eq!(events(&segment), ["mount", "read", "read", "unmount"]);
    assert_eq!(
        reads(&segment),
        [("x/1".to_owned(), 0, 70_000), ("y".to_owned(), 0, 10)]
    );
    assert_audit_verifies(&command_log(&ws), &ws.identity);
}

#[test]
fn inspect_records_the_file_before_printing_its_header() {
    let ws = Workspace::new();
    std::fs::copy(
        common::pydicom_test_files().join("CT_small.dcm"),
        ws.plain().join("CT_small.dcm"),
    )
    .unwrap();
    ws.seal_all();
    let out = run_ok(&mut on_bucket(&ws, "inspect", &["CT_small.dcm"]));
    assert!(!out.stdout.is_empty());
    let segment = segments_last(&command_log(&ws));
    assert_command(&segment, "inspect", &ws.bucket().display().to_string());
    assert_eq!(events(&segment), ["mount", "open", "read", "unmount"]);
    let size = std::fs::metadata(ws.plain().join("CT_small.dcm"))
        .unwrap()
        .len();
    assert_eq!(reads(&segment), [("CT_small.dcm".to_owned(), 0, size)]);
}

/// Runs every decrypting command on `ws` (a v2 bucket, which also has a v1 twin in
/// `v1/`) with `--audit log`; each must fail before any plaintext is out: nothing on
/// stdout, no `--out` file, the buckets unchanged. `why` must be in each error.
fn assert_every_command_fails_closed(ws: &Workspace, log: &Path, why: &str) {
    let v1 = ws.dir.path().join("v1");
    let buckets_before = (files_below(&ws.bucket()), files_below(&v1));
    let copy = ws.dir.path().join("copy");
    let audit = ["--audit", log.to_str().unwrap()];
    let other = other_recipient();
    let commands: Vec<(&str, Command)> = vec![
        ("cat", on_bucket(ws, "cat", &["b.txt"])),
        ("cat --out", {
            let mut cmd = on_bucket(ws, "cat", &["b.txt", "--out"]);
            cmd.arg(&copy);
            cmd
        }),
        ("inspect", on_bucket(ws, "inspect", &["b.txt"])),
        ("ls", on_bucket(ws, "ls", &[])),
        ("verify", on_bucket(ws, "verify", &[])),
        ("info", on_bucket(ws, "info", &["--path", "b.txt"])),
        ("share", on_bucket(ws, "share", &["--add", &other])),
        ("rotate", on_bucket(ws, "rotate", &[])),
        ("migrate", {
            let mut cmd = ws.smpfs();
            cmd.arg("migrate").arg(&v1).arg("-i").arg(&ws.identity);
            cmd
        }),
    ];
    for (name, mut cmd) in commands {
        let out = cmd.args(audit).output().unwrap();
        assert!(!out.status.success(), "{name} succeeded without its log");
        assert!(out.stdout.is_empty(), "{name} printed {:?}", out.stdout);
        let message = stderr(&out);
        assert!(
            message.contains("opening audit log") && message.contains(why),
            "{name}: {message}"
        );
    }
    assert!(!copy.exists(), "cat --out wrote its file");
    assert_eq!(
        (files_below(&ws.bucket()), files_below(&v1)),
        buckets_before,
        "a bucket changed"
    );
}

/// A v2 bucket with `b.txt`, and a v1 one in `v1/` with the same file.
fn two_buckets() -> Workspace {
    let ws = Workspace::new();
    ws.write_plain("b.txt", &pattern(5000, 5));
    seal_v2(&ws);
    run_ok(
        ws.smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", &ws.recipient, "--out"])
            .arg(ws.dir.path().join("v1")),
    );
    ws
}

#[test]
fn every_command_fails_before_any_plaintext_when_its_log_cannot_be_created() {
    let ws = two_buckets();
    // Below a regular file: no process, root included, can create it.
    let log = ws.identity.join("logs/audit.log");
    assert_every_command_fails_closed(&ws, &log, "Not a directory");
}

#[test]
fn every_command_fails_before_any_plaintext_when_its_log_is_on_a_full_disk() {
    let ws = two_buckets();
    let logdir = ws.dir.path().join("logfs");
    std::fs::create_dir(&logdir).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "smpfs-test-log"])
            .arg(&logdir),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(logdir.clone());
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", logdir.join("filler").display()))
        .arg("bs=4k")
        .stderr(Stdio::null())
        .status();
    assert_every_command_fails_closed(&ws, &logdir.join("audit.log"), "No space left");
}

#[test]
fn audit_off_is_refused() {
    let ws = two_buckets();
    let out = on_bucket(&ws, "cat", &["b.txt", "--audit", "off"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("always audited"), "{}", stderr(&out));
}

#[test]
fn a_command_waits_for_another_holding_its_log_and_says_so() {
    let ws = two_buckets();
    let log = command_log(&ws);
    // Stand in for another command: hold the log's lock.
    let held = std::fs::File::create(&log).unwrap();
    let lock = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut child = on_bucket(&ws, "cat", &["b.txt"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let said = said
        .recv_timeout(Duration::from_secs(20))
        .expect("cat says it waits");
    assert!(
        said.contains("waiting for the audit log") && said.contains("audit-commands.log"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "cat did not wait");
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, pattern(5000, 5));
    let segment = segments_last(&log);
    assert_eq!(events(&segment), ["mount", "open", "read", "unmount"]);
}

/// `recipients` and `rm` decrypt only a manifest (or a v1 bucket's list): each records it.
#[test]
fn recipients_and_rm_record_the_manifest_they_decrypt() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", &pattern(1000, 1));
    ws.write_plain("b.bin", &pattern(1000, 2));
    seal_v2(&ws);
    let bucket = ws.bucket().display().to_string();
    let log = ws.dir.path().join("commands.log");
    let audit = ["--audit", log.to_str().unwrap()];
    run_ok(&mut on_bucket(&ws, "recipients", &audit));
    let mut rm = on_bucket(&ws, "rm", &audit);
    rm.arg("a.bin");
    run_ok(&mut rm);
    let segments = segments(&log);
    let [recipients, removed] = &segments[..] else {
        panic!("two segments: {segments:?}");
    };
    assert_command(recipients, "recipients", &bucket);
    assert_eq!(events(recipients), ["mount", "refresh", "unmount"]);
    assert_eq!(recipients[1]["detail"]["generation"], 1);
    assert_command(removed, "rm", &bucket);
    assert_eq!(events(removed), ["mount", "refresh", "unmount"]);
    assert_eq!(removed[1]["detail"]["generation"], 2);

    // A v1 bucket's list: an `open` of it.
    let v1 = ws.dir.path().join("v1");
    run_ok(
        ws.smpfs()
            .args(["seal", "--layout", "v1", "--to", &ws.recipient])
            .arg(ws.plain())
            .arg("--out")
            .arg(&v1),
    );
    run_ok(
        ws.smpfs()
            .arg("recipients")
            .arg(&v1)
            .arg("-i")
            .arg(&ws.identity)
            .args(audit),
    );
    let last = segments_last(&log);
    assert_eq!(events(&last), ["mount", "open", "unmount"]);
    assert_eq!(last[1]["path"], ".smpfs-recipients");
}
