//! Plaintext must never reach a disk: a canary read through the mount appears in no file
//! written during the run (other than the plaintext source itself), and the daemon's locked
//! memory covers its cache.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_ok, smpfs, vm_locked_bytes, Workspace};

fn random_canary() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).unwrap();
    format!(
        "CANARY-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Files on any local disk or tmpfs modified after `marker`, outside `exclude`, that
/// contain `needle`.
fn files_containing(
    needle: &str,
    marker: &std::path::Path,
    exclude: &std::path::Path,
) -> Vec<String> {
    let script = r#"
        find / /dev/shm /run /tmp -xdev -path "$2" -prune -o -type f -newer "$1" -size -4G -print0 2>/dev/null \
          | xargs -0 -r grep -l -s -F -e "$3" 2>/dev/null | sort -u
    "#;
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(marker)
        .arg(exclude)
        .arg(needle)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn canary_read_through_the_mount_is_on_no_disk_and_the_cache_is_locked() {
    let ws = Workspace::new();
    let canary = random_canary();
    let marker = ws.dir.path().join("marker");
    std::fs::write(&marker, b"").unwrap();
    // Filesystem timestamps are coarse: make sure later writes are strictly newer.
    std::thread::sleep(Duration::from_millis(20));

    let mut data = Vec::new();
    while data.len() < 3 << 20 {
        data.extend_from_slice(format!("record {} {canary}\n", data.len()).as_bytes());
    }
    ws.write_plain("patient/report.txt", &data);
    ws.seal_all();
    let sealed = std::fs::read(ws.bucket().join("patient/report.txt")).unwrap();
    assert!(
        !sealed.windows(canary.len()).any(|w| w == canary.as_bytes()),
        "the bucket holds ciphertext only"
    );

    let mount = ws.mount(&["cache_size=64M"]);
    let through = ws.mnt().join("patient/report.txt");
    assert_eq!(std::fs::read(&through).unwrap(), data);
    let out = run_ok(Command::new("grep").arg("-c").arg(&canary).arg(&through));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
            > 1000
    );
    run_ok(Command::new("sha256sum").arg(&through));
    let cat = run_ok(
        smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg("patient/report.txt")
            .arg("-i")
            .arg(&ws.identity),
    );
    assert_eq!(cat.stdout, data);

    let locked = vm_locked_bytes(mount.pid());
    assert!(locked >= 64 << 20, "daemon locks only {locked} bytes");
    let log = mount.log.clone();
    assert!(mount.unmount().success());

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains(&canary), "plaintext in the mount log");
    let leaks = files_containing(&canary, &marker, &ws.plain());
    assert!(
        leaks.is_empty(),
        "plaintext canary found on disk in: {leaks:?}"
    );
    // The scan itself works: the plaintext source does contain it.
    let control = files_containing(&canary, &marker, std::path::Path::new("/nonexistent"));
    assert!(
        control
            .iter()
            .any(|f| f.ends_with("plain/patient/report.txt")),
        "scan found {control:?}"
    );
}
