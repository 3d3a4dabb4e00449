//! `mount -t smpfs` and fstab through util-linux mount(8) and the `mount.smpfs` helper.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_mounted, pattern, Workspace};

const HELPER: &str = "/sbin/mount.smpfs";

/// Held by each test that points /sbin/mount.smpfs somewhere, one at a time.
static HELPER_SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Points /sbin/mount.smpfs at the binary under test; puts back whatever was there.
struct InstalledHelper {
    backup: Option<PathBuf>,
}

impl InstalledHelper {
    fn install() -> Self {
        Self::install_at(Path::new(env!("CARGO_BIN_EXE_smpfs")))
    }

    fn install_at(binary: &Path) -> Self {
        let backup = PathBuf::from(format!("{HELPER}.test-backup"));
        let had_one = std::fs::symlink_metadata(HELPER).is_ok();
        if had_one {
            std::fs::rename(HELPER, &backup).unwrap();
        }
        std::os::unix::fs::symlink(binary, HELPER).unwrap();
        InstalledHelper {
            backup: had_one.then_some(backup),
        }
    }
}

impl Drop for InstalledHelper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
        if let Some(backup) = &self.backup {
            let _ = std::fs::rename(backup, HELPER);
        }
    }
}

fn wait_for_unmount_record(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"event\":\"unmount\""))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no unmount record in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mount_cmd(args: &[&str]) -> std::process::Output {
    Command::new("mount").args(args).output().unwrap()
}

#[test]
fn mount_t_smpfs_and_fstab_lines_work_and_bad_input_mounts_nothing() {
    let _slot = HELPER_SLOT.lock().unwrap_or_else(|e| e.into_inner());
    let _helper = InstalledHelper::install();
    let ws = Workspace::new();
    let data = pattern(500_000, 7);
    ws.write_plain("scan.dcm", &data);
    ws.seal_all();
    let (bucket, mnt, id) = (
        ws.bucket().display().to_string(),
        ws.mnt().display().to_string(),
        ws.identity.display().to_string(),
    );
    let audit_log = ws.dir.path().join("audit.log");

    // mount -t smpfs, read, umount: the daemon purges and seals its audit segment.
    let out = mount_cmd(&[
        "-t",
        "smpfs",
        &bucket,
        &mnt,
        "-o",
        &format!("identity={id},umask=027"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&ws.mnt()), "live as soon as mount returned");
    let findmnt = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&findmnt.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["fuse.smpfs", bucket.as_str()]
    );
    assert_eq!(std::fs::read(ws.mnt().join("scan.dcm")).unwrap(), data);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.mnt().join("scan.dcm"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o440, "umask=027 applied");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_for_unmount_record(&audit_log);

    // A real fstab line with mount(8)'s own options, through mount -a -T.
    let fstab = ws.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!("# test fstab\n{bucket} {mnt} smpfs ro,nosuid,nodev,noexec,noatime,identity={id},cache_size=64M,_netdev,nofail,x-smpfs.test=1 0 0\n"),
    )
    .unwrap();
    let out = mount_cmd(&["-a", "-T", fstab.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(ws.mnt().join("scan.dcm")).unwrap(), data);
    let options = Command::new("findmnt")
        .args(["-n", "-o", "VFS-OPTIONS"])
        .arg(&mnt)
        .output()
        .unwrap();
    let options = String::from_utf8_lossy(&options.stdout);
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            options.trim().split(',').any(|o| o == flag),
            "{flag} in {options}"
        );
    }

    // A failure after the helper forked (the audit log is held by the live mount): exit 32
    // with the reason, nothing mounted.
    let second = ws.dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let out = mount_cmd(&[
        "-t",
        "smpfs",
        &bucket,
        second.to_str().unwrap(),
        "-o",
        &format!("identity={id}"),
    ]);
    assert_eq!(out.status.code(), Some(32));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&second), "no half mount");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_for_unmount_record(&audit_log);

    // A passphrase-protected identity: the right passphrase file mounts, a wrong one is a
    // clear error and mounts nothing.
    let locked_id = ws.dir.path().join("locked.key");
    let pass = ws.dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let keygen = common::smpfs()
        .arg("keygen")
        .arg("--out")
        .arg(&locked_id)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let recipient = String::from_utf8(keygen.stdout).unwrap();
    common::run_ok(
        common::smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", recipient.trim()])
            .arg("--out")
            .arg(ws.dir.path().join("bucket2")),
    );
    let wrong = ws.dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let bucket2 = ws.dir.path().join("bucket2").display().to_string();
    let with_passphrase = |file: &Path| {
        mount_cmd(&[
            "-t",
            "smpfs",
            &bucket2,
            &mnt,
            "-o",
            &format!(
                "identity={},passphrase_file={}",
                locked_id.display(),
                file.display()
            ),
        ])
    };
    let out = with_passphrase(&wrong);
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert!(!is_mounted(&ws.mnt()));
    let out = with_passphrase(&pass);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(ws.mnt().join("scan.dcm")).unwrap(), data);
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_for_unmount_record(&locked_id.with_file_name("audit.log"));

    // Unknown option: non-zero exit naming it, nothing mounted.
    let out = mount_cmd(&[
        "-t",
        "smpfs",
        &bucket,
        &mnt,
        "-o",
        &format!("identity={id},turbo=1"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mount option \"turbo=1\""));
    assert!(!is_mounted(&ws.mnt()));

    // No identity, and an identity others can read: clear errors, nothing mounted.
    let out = mount_cmd(&["-t", "smpfs", &bucket, &mnt]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("identity=PATH"));
    std::fs::set_permissions(&ws.identity, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = mount_cmd(&[
        "-t",
        "smpfs",
        &bucket,
        &mnt,
        "-o",
        &format!("identity={id}"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert!(!is_mounted(&ws.mnt()));
}

/// The unprivileged user the ordinary-user test runs as (`nobody`).
const USER: &str = "65534";

/// `setpriv` to [`USER`] with the default 8 MiB memlock limit, then `program`.
fn as_user(program: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--memlock=8388608:8388608", "setpriv", "--reuid", USER])
        .args(["--regid", USER, "--clear-groups", program]);
    cmd
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An ordinary user, with the default memlock limit of 8 MiB, is told the one exact fix;
/// once it is applied (`setcap cap_ipc_lock=ep` on the binary) they mount, read, purge,
/// and mount through an fstab `user` line with mount(8) and umount(8), all unprivileged.
#[test]
fn an_ordinary_user_mounts_reads_and_uses_an_fstab_user_line() {
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata("/dev/fuse").unwrap().permissions(),
    );
    assert_eq!(
        mode & 0o006,
        0o006,
        "/dev/fuse must be open to all, as udev makes it: run integration/install-deps.sh"
    );
    let _slot = HELPER_SLOT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new()
        .prefix("smpfs-user-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path();
    for sub in ["bin", "plain/CT", "mnt", "home"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let data = pattern(300_000, 5);
    std::fs::write(root.join("plain/CT/1.dcm"), &data).unwrap();
    let binary = root.join("bin/smpfs");
    std::fs::copy(env!("CARGO_BIN_EXE_smpfs"), &binary).unwrap();
    run(Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(root));
    run(Command::new("chmod").arg("0755").arg(root));
    let smpfs = |args: &[&str]| {
        let mut cmd = as_user(binary.to_str().unwrap());
        cmd.args(args)
            .env("HOME", root.join("home"))
            .env_remove("SMPFS_STATE_DIR")
            .current_dir(root);
        cmd
    };
    run(&mut smpfs(&["keygen", "-o", "id"]));
    run(&mut smpfs(&[
        "seal", "plain", "--out", "bucket", "-i", "id",
    ]));

    // Before the fix: refused with the exact command, nothing mounted.
    let refused = smpfs(&["mount", "bucket", "mnt", "-i", "id"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    let fix = format!("setcap cap_ipc_lock=ep {}", binary.display());
    assert!(message.contains(&fix), "{message}");
    assert!(!is_mounted(&root.join("mnt")));

    // The fix, after the chown (a chown clears file capabilities).
    run(Command::new("setcap").arg("cap_ipc_lock=ep").arg(&binary));
    run(&mut smpfs(&["mount", "bucket", "mnt", "-i", "id"]));
    let read = run(as_user("cat").arg(root.join("mnt/CT/1.dcm")));
    assert!(read.stdout == data, "the user read other bytes");
    run(&mut smpfs(&["purge", "mnt"]));
    assert!(!is_mounted(&root.join("mnt")), "purge did not detach");

    // fstab `user`: mount(8) runs the helper as the user, with a sanitized environment.
    let fstab = root.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{0}/bucket {0}/mnt smpfs user,noauto,identity={0}/id,log_file={0}/daemon.log 0 0\n",
            root.display()
        ),
    )
    .unwrap();
    let _helper = InstalledHelper::install_at(&binary);
    let mnt = root.join("mnt");
    let copy = root.join("copy");
    let script = format!(
        "set -e; mount --bind {fstab} /etc/fstab; \
         setpriv --reuid {USER} --regid {USER} --clear-groups mount {mnt}; \
         setpriv --reuid {USER} --regid {USER} --clear-groups cp {mnt}/CT/1.dcm {copy}; \
         setpriv --reuid {USER} --regid {USER} --clear-groups umount {mnt}",
        fstab = fstab.display(),
        mnt = mnt.display(),
        copy = copy.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default()
    );
    assert!(std::fs::read(&copy).unwrap() == data);
    let copy_owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&copy).unwrap());
    assert_eq!(copy_owner.to_string(), USER);
    assert!(!is_mounted(&mnt));
}
