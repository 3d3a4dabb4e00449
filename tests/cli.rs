//! Rough edges of the command line a new user hits first: each message says what to do.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{pattern, run_ok, smpfs, Workspace};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The README's first command works on a fresh account: the key's folder is created, 0700.
#[test]
fn keygen_creates_the_folder_of_the_key() {
    let ws = Workspace::new();
    let key = ws.dir.path().join("home/.smpfs/workstation.key");
    let out = run_ok(smpfs().args(["keygen", "--out"]).arg(&key));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("smpfs1"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert_eq!(mode(&key), 0o600);
}

/// A mountpoint that does not exist is named as such, with the fix.
#[test]
fn a_missing_mountpoint_is_said_to_be_missing() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", b"a");
    ws.seal_all();
    let missing = ws.dir.path().join("nowhere");
    let out = smpfs()
        .arg("mount")
        .arg(ws.bucket())
        .arg(&missing)
        .arg("-i")
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not exist") && stderr(&out).contains("mkdir -p"),
        "{}",
        stderr(&out)
    );
}

/// A second mount on the same audit log says how to give it its own.
#[test]
fn a_second_mount_on_one_audit_log_is_told_about_the_audit_option() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", b"a");
    ws.seal_all();
    let mount = ws.mount(&[]);
    let other = ws.dir.path().join("mnt2");
    std::fs::create_dir(&other).unwrap();
    let out = smpfs()
        .arg("mount")
        .arg(ws.bucket())
        .arg(&other)
        .arg("-i")
        .arg(&ws.identity)
        .arg("-f")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("-o audit=PATH"), "{}", stderr(&out));
    drop(mount);
}

/// `cat`, `inspect` and `audit verify` take a passphrase file, like `mount`.
#[test]
fn commands_that_load_an_identity_take_a_passphrase_file() {
    let ws = Workspace::new();
    let secret = ws.dir.path().join("passphrase");
    std::fs::write(&secret, "correct horse battery\n").unwrap();
    let key = ws.dir.path().join("protected.key");
    let out = run_ok(
        smpfs()
            .args(["keygen", "--out"])
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&secret),
    );
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let data = pattern(70_000, 3);
    ws.write_plain("x.bin", &data);
    run_ok(
        smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", &recipient])
            .arg("--out")
            .arg(ws.bucket()),
    );
    let out = run_ok(
        smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg("x.bin")
            .arg("-i")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&secret),
    );
    assert_eq!(out.stdout, data);
    let log = ws.dir.path().join("audit.log");
    run_ok(
        smpfs()
            .args(["audit", "init", "--auditor", &recipient, "--log"])
            .arg(&log),
    );
    run_ok(
        smpfs()
            .args(["audit", "verify"])
            .arg(&log)
            .arg("-i")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&secret),
    );
    // Without the file there is no terminal to ask on: a clear refusal.
    let out = smpfs()
        .arg("cat")
        .arg(ws.bucket())
        .arg("x.bin")
        .arg("-i")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
}

/// `audit verify` on the log of a live mount says the last segment is still being written
/// (and succeeds), instead of reporting a crashed writer.
#[test]
fn verifying_the_log_of_a_live_mount_says_it_is_still_being_written() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", b"a");
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    let mount = ws.mount(&[]);
    assert_eq!(std::fs::read(ws.mnt().join("a.bin")).unwrap(), b"a");
    let verify = || {
        smpfs()
            .args(["audit", "verify"])
            .arg(&log)
            .arg("-i")
            .arg(&ws.identity)
            .output()
            .unwrap()
    };
    let live = verify();
    assert!(live.status.success(), "{}", stderr(&live));
    assert!(
        String::from_utf8_lossy(&live.stdout).contains("still being written"),
        "{}",
        String::from_utf8_lossy(&live.stdout)
    );
    let pid = mount.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(mount);
    // The same log after its writer was killed: a crash, reported as such.
    let crashed = verify();
    assert!(!crashed.status.success());
    assert!(stderr(&crashed).contains("crashed"), "{}", stderr(&crashed));
}

/// `inspect … | head` ends quietly when the reader has gone: stdout is a pipe whose read
/// end is already closed, so the first write fails with EPIPE.
#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    let ws = Workspace::new();
    std::fs::copy(
        common::pydicom_test_files().join("CT_small.dcm"),
        ws.plain().join("CT_small.dcm"),
    )
    .unwrap();
    ws.seal_all();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = smpfs()
        .arg("inspect")
        .arg(ws.bucket())
        .arg("CT_small.dcm")
        .arg("-i")
        .arg(&ws.identity)
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
}

/// `cat` of a file whose middle chunk was tampered with: with `--out` no file appears; on
/// stdout the error says how much came before. A good file lands whole, 0600, and an
/// existing file is never replaced.
#[test]
fn cat_out_appears_only_whole_and_stdout_says_what_came_before_a_failure() {
    let ws = Workspace::new();
    let data = pattern(300_000, 8);
    ws.write_plain("x.bin", &data);
    ws.write_plain("y.bin", &data);
    ws.seal_all();
    let cat = |path: &str, out: Option<&std::path::Path>| {
        let mut cmd = smpfs();
        cmd.arg("cat")
            .arg(ws.bucket())
            .arg(path)
            .arg("-i")
            .arg(&ws.identity);
        if let Some(out) = out {
            cmd.arg("--out").arg(out);
        }
        cmd.output().unwrap()
    };
    let good = ws.dir.path().join("good.bin");
    assert!(cat("y.bin", Some(&good)).status.success());
    assert_eq!(std::fs::read(&good).unwrap(), data);
    assert_eq!(
        std::fs::metadata(&good).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = cat("x.bin", Some(&good));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("not replaced"),
        "{}",
        stderr(&again)
    );

    // Flip a byte in chunk 1 (of 5): chunks 0 and 4 still authenticate.
    let object = ws.bucket().join("x.bin");
    let mut sealed = std::fs::read(&object).unwrap();
    let len = sealed.len();
    sealed[len - 3 * (65_536 + 16)] ^= 1;
    std::fs::write(&object, &sealed).unwrap();
    let target = ws.dir.path().join("out/x.bin");
    std::fs::create_dir(target.parent().unwrap()).unwrap();
    let failed = cat("x.bin", Some(&target));
    assert!(!failed.status.success());
    let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let streamed = cat("x.bin", None);
    assert!(!streamed.status.success());
    assert_eq!(streamed.stdout, data[..65_536]);
    assert!(
        stderr(&streamed).contains("65536 bytes were written to stdout"),
        "{}",
        stderr(&streamed)
    );
}

/// A mount with an identity that opens none of the files says so on the terminal (it still
/// mounts: the bucket may hold files for others); with the right identity it says nothing.
#[test]
fn a_mount_with_an_identity_that_opens_nothing_says_so() {
    let ws = Workspace::new();
    for i in 0..20 {
        ws.write_plain(&format!("study/{i}.dcm"), b"scan");
    }
    ws.seal_all();
    let other = ws.dir.path().join("other.key");
    run_ok(smpfs().args(["keygen", "--out"]).arg(&other));
    for (identity, warned) in [(&other, true), (&ws.identity, false)] {
        let out = smpfs()
            .arg("mount")
            .arg(ws.bucket())
            .arg(ws.mnt())
            .arg("-i")
            .arg(identity)
            .arg("--log-file")
            .arg(ws.dir.path().join("daemon.log"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let said = stderr(&out).contains("none of the 16 files checked is sealed to this identity");
        let status = std::process::Command::new("umount")
            .arg(ws.mnt())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(said, warned, "{}", stderr(&out));
    }
}

/// `smpfs --version` names the commit it was built from.
#[test]
fn the_version_names_the_commit() {
    let out = run_ok(smpfs().arg("--version"));
    let text = String::from_utf8(out.stdout).unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(
        text.starts_with(concat!("smpfs ", env!("CARGO_PKG_VERSION"), " ("))
            && text.contains(head.trim()),
        "{text}"
    );
}

/// Completions and man pages come from the binary (mount-helper/install.sh installs them).
#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(smpfs().args(["completions", shell]));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("smpfs") && script.contains("mount"),
            "{shell}"
        );
    }
    let ws = Workspace::new();
    let dir = ws.dir.path().join("man1");
    run_ok(smpfs().arg("manpages").arg(&dir));
    for page in [
        "smpfs.1",
        "smpfs-mount.1",
        "smpfs-seal.1",
        "smpfs-audit-verify.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text:.80}"
        );
    }
}

/// The shipped systemd units (system and user) pass `systemd-analyze verify`, pointed at
/// the binary under test.
#[test]
fn the_shipped_systemd_units_verify() {
    let ws = Workspace::new();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-helper/systemd");
    let runtime = ws.dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    for (unit, mode) in [
        ("smpfs@.service", "--system"),
        ("user/smpfs@.service", "--user"),
    ] {
        let text = std::fs::read_to_string(units.join(unit))
            .unwrap()
            .replace("/usr/local/bin/smpfs", env!("CARGO_BIN_EXE_smpfs"));
        let dir = ws.dir.path().join(mode.trim_start_matches('-'));
        std::fs::create_dir(&dir).unwrap();
        let instance = dir.join("smpfs@research.service");
        std::fs::write(&instance, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no", mode])
            .arg(&instance)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}",
            stderr(&out)
        );
    }
}

/// A user without CAP_IPC_LOCK under the default 8 MiB memlock limit is told the fix that
/// works (the capability, or limits.d), never a cache size that would then be refused.
#[test]
fn an_ordinary_user_under_the_default_memlock_limit_is_told_the_exact_fix() {
    let ws = Workspace::new();
    ws.write_plain("a.bin", b"a");
    ws.seal_all();
    run_ok(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(ws.dir.path()),
    );
    for options in ["audit=off", "audit=off,cache_size=16M"] {
        let out = std::process::Command::new("prlimit")
            .arg("--memlock=8388608:8388608")
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg("--inh-caps=-all")
            .arg("env")
            .arg(format!("HOME={}", ws.dir.path().display()))
            .arg(env!("CARGO_BIN_EXE_smpfs"))
            .arg("mount")
            .arg(ws.bucket())
            .arg(ws.mnt())
            .arg("-i")
            .arg(&ws.identity)
            .args(["-f", "-o", options])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let message = stderr(&out);
        assert!(
            message.contains("may lock only 8192 KiB")
                && message.contains("setcap cap_ipc_lock=ep")
                && message.contains("/etc/security/limits.d/smpfs.conf"),
            "{message}"
        );
        assert!(!message.contains("-o cache_size="), "{message}");
    }
}

/// `passwd` changes an identity's passphrase in place: the old one is refused, the new one
/// opens the same key, and a refused change leaves the file byte for byte as it was.
#[test]
fn passwd_changes_the_passphrase_and_a_refused_change_changes_nothing() {
    let ws = Workspace::new();
    let dir = ws.dir.path();
    let phrase = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path
    };
    let (old, new, short) = (
        phrase("old", "correct horse battery"),
        phrase("new", "staple grape monsoon"),
        phrase("short", "abc"),
    );
    let key = dir.join("ws.key");
    let made = run_ok(
        smpfs()
            .args(["keygen", "--out"])
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&old),
    );
    let recipient = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    let recipient_with = |passphrase: &std::path::Path| {
        smpfs()
            .arg("recipient")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(passphrase)
            .output()
            .unwrap()
    };
    assert_eq!(
        String::from_utf8_lossy(&recipient_with(&old).stdout).trim(),
        recipient
    );

    let before = std::fs::read(&key).unwrap();
    for (current, next) in [(&new, &new), (&old, &short)] {
        let refused = smpfs()
            .arg("passwd")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(current)
            .arg("--new-passphrase-file")
            .arg(next)
            .output()
            .unwrap();
        assert!(!refused.status.success());
        assert!(
            stderr(&refused).contains("wrong passphrase") || stderr(&refused).contains("too short"),
            "{}",
            stderr(&refused)
        );
        assert_eq!(
            std::fs::read(&key).unwrap(),
            before,
            "a refused change wrote"
        );
    }

    run_ok(
        smpfs()
            .arg("passwd")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&old)
            .arg("--new-passphrase-file")
            .arg(&new),
    );
    let with_old = recipient_with(&old);
    assert!(
        !with_old.status.success(),
        "the old passphrase still opens it"
    );
    assert_eq!(
        String::from_utf8_lossy(&recipient_with(&new).stdout).trim(),
        recipient
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(".smpfs-identity."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    run_ok(
        smpfs()
            .arg("passwd")
            .arg(&key)
            .arg("--passphrase-file")
            .arg(&new)
            .arg("--remove"),
    );
    let plain = run_ok(smpfs().arg("recipient").arg(&key));
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), recipient);
}

/// A zero-knowledge bucket knows who its files are sealed to.
#[test]
fn recipients_lists_a_bucket_s_recipients() {
    let ws = Workspace::new();
    ws.write_plain("a", b"a");
    let other = smpfs::keys::Identity::generate().recipient().to_string();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--to", &ws.recipient, "--to", &other, "--out"])
            .arg(ws.bucket()),
    );
    let listed = run_ok(
        ws.smpfs()
            .arg("recipients")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    let lines: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, [ws.recipient.clone(), other]);
}

/// Writes a second identity into the workspace; returns its path and recipient.
fn second_identity(ws: &Workspace, name: &str) -> (std::path::PathBuf, String) {
    let path = ws.dir.path().join(name);
    let identity = smpfs::keys::Identity::generate();
    identity.save_new(&path, None).unwrap();
    (path, identity.recipient().to_string())
}

/// A v1 bucket keeps its recipient list sealed in `.smpfs-recipients`: `recipients` prints
/// it, `seal` without `--to` uses it, mounts do not show it, the name is reserved, `share`
/// sends the user to `migrate`, and `migrate` seals to it and removes it.
#[test]
fn a_v1_bucket_keeps_a_sealed_recipient_list() {
    let ws = Workspace::new();
    let (other_key, other) = second_identity(&ws, "other");
    ws.write_plain("first.bin", &pattern(5000, 1));
    run_ok(
        ws.smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain().join("first.bin"))
            .args(["--to", &ws.recipient, "--to", &other, "--out"])
            .arg(ws.bucket()),
    );
    let list = ws.bucket().join(".smpfs-recipients");
    let stored = std::fs::read(&list).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains("smpfs1"),
        "the list is stored in the clear"
    );
    let recipients = |identity: &std::path::Path| {
        let out = run_ok(
            ws.smpfs()
                .arg("recipients")
                .arg(ws.bucket())
                .arg("-i")
                .arg(identity),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        recipients(&ws.identity),
        format!("{}\n{other}\n", ws.recipient)
    );
    assert_eq!(
        recipients(&other_key),
        format!("{}\n{other}\n", ws.recipient)
    );

    // Without --to, a seal takes the list (so the other reader opens the new file), and
    // needs an identity to read it.
    ws.write_plain("second.bin", &pattern(7000, 2));
    let second = ws.plain().join("second.bin");
    let refused = ws
        .smpfs()
        .arg("seal")
        .arg(&second)
        .arg("--out")
        .arg(ws.bucket())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("sealed recipient list: give -i"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(&second)
            .arg("--out")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    let cat = run_ok(
        ws.smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg("second.bin")
            .arg("-i")
            .arg(&other_key),
    );
    assert_eq!(cat.stdout, pattern(7000, 2));

    // A file of that name cannot be sealed into the bucket.
    ws.write_plain("sub/.smpfs-recipients", b"not a list");
    let reserved = ws
        .smpfs()
        .arg("seal")
        .arg(ws.plain().join("sub"))
        .arg("--out")
        .arg(ws.bucket())
        .arg("-i")
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!reserved.status.success());
    assert!(String::from_utf8_lossy(&reserved.stderr).contains("rename the file"));

    // Mounted, the bucket shows its files only.
    let mount = ws.mount(&[]);
    let mut names: Vec<String> = std::fs::read_dir(ws.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first.bin", "second.bin"]);
    assert!(mount.unmount().success());

    let share = ws
        .smpfs()
        .arg("share")
        .arg(ws.bucket())
        .args(["--remove", &other, "-i"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!share.status.success());
    assert!(String::from_utf8_lossy(&share.stderr).contains("smpfs migrate"));

    run_ok(
        ws.smpfs()
            .arg("migrate")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    assert!(!list.exists(), "migrate left the v1 list behind");
    assert_eq!(
        recipients(&other_key),
        format!("{}\n{other}\n", ws.recipient)
    );
    let cat = run_ok(
        ws.smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg("first.bin")
            .arg("-i")
            .arg(&other_key),
    );
    assert_eq!(cat.stdout, pattern(5000, 1));
}

/// `share` refuses malformed recipients, removing the last recipient or yourself, and
/// changes nothing when it refuses.
#[test]
fn share_refuses_bad_recipient_lists_and_changes_nothing() {
    let ws = Workspace::new();
    let (_, other) = second_identity(&ws, "other");
    ws.write_plain("a.bin", &pattern(3000, 4));
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .arg("--out")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    let snapshot = || common::files_below(&ws.bucket());
    let before = snapshot();
    let secret_line = std::fs::read_to_string(&ws.identity)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    for (args, says) in [
        (
            vec!["--add", "smpfs1notarecipient"],
            "not a valid smpfs recipient",
        ),
        (
            vec!["--add", secret_line.as_str()],
            "secret key was given where a recipient belongs",
        ),
        (
            vec!["--remove", &other],
            "is not a recipient of this bucket",
        ),
        (
            vec!["--remove", &ws.recipient],
            "no recipient would be left",
        ),
        (
            vec!["--add", &other, "--remove", &ws.recipient],
            "could not read the bucket any more",
        ),
    ] {
        let out = ws
            .smpfs()
            .arg("share")
            .arg(ws.bucket())
            .args(&args)
            .arg("-i")
            .arg(&ws.identity)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(&secret_line[20..40]),
            "the secret was echoed: {stderr}"
        );
        assert_eq!(snapshot(), before, "{args:?} changed the bucket");
    }
}

/// Sealing a new zero-knowledge bucket needs no identity, whatever the number of files:
/// without one the manifest is committed once, at the end (with one, every 1 000 files).
#[test]
fn a_new_bucket_takes_more_than_a_commit_s_worth_of_files_without_an_identity() {
    let ws = Workspace::new();
    for i in 0..1005 {
        ws.write_plain(
            &format!("d{}/f{i}", i / 100),
            format!("file {i}").as_bytes(),
        );
    }
    let out = run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--to", &ws.recipient, "--out"])
            .arg(ws.bucket()),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest generation 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = run_ok(
        ws.smpfs()
            .arg("ls")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        1005
    );
}
