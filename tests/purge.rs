//! Purge is proven, not assumed: after `smpfs lock` or `smpfs purge`, the daemon's memory
//! holds neither the plaintext that was read nor the identity's secret key.

mod common;

use std::io::Read;
use std::process::Command;

use common::{
    assert_audit_verifies, is_mounted, occurrences_in_memory, run_ok, smpfs, vm_locked_bytes,
    Workspace,
};
use serde_json::Value;

fn canary_file(ws: &Workspace) -> (Vec<u8>, Vec<u8>) {
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).unwrap();
    let canary: Vec<u8> = format!(
        "CANARY-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
    .into_bytes();
    let mut data = Vec::new();
    while data.len() < 1 << 20 {
        data.extend_from_slice(&canary);
        data.push(b'\n');
    }
    ws.write_plain("patient.txt", &data);
    (canary, data)
}

/// The identity's 32 secret bytes, decoded from its file.
fn secret_bytes(ws: &Workspace) -> Vec<u8> {
    let text = std::fs::read_to_string(&ws.identity).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("SMPFS-SECRET-KEY-1"))
        .unwrap();
    bech32::decode(line).unwrap().1
}

#[test]
fn lock_leaves_no_plaintext_or_secret_key_in_the_daemon_and_unlock_restores_reads() {
    let ws = Workspace::new();
    let (canary, data) = canary_file(&ws);
    ws.seal_all();
    let secret = secret_bytes(&ws);
    let mount = ws.mount(&["cache_size=32M"]);
    let pid = mount.pid();
    assert_eq!(std::fs::read(ws.mnt().join("patient.txt")).unwrap(), data);
    assert!(
        occurrences_in_memory(pid, &canary) > 0,
        "control: the cache holds the plaintext"
    );
    assert!(
        occurrences_in_memory(pid, &secret) > 0,
        "control: the key is in memory while unlocked"
    );

    let out = run_ok(smpfs().arg("lock").arg(ws.mnt()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("locked"));
    assert_eq!(
        occurrences_in_memory(pid, &canary),
        0,
        "plaintext left in the daemon after lock"
    );
    assert_eq!(
        occurrences_in_memory(pid, &secret),
        0,
        "secret key left in the daemon after lock"
    );
    let err = std::fs::read(ws.mnt().join("patient.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    assert!(is_mounted(&ws.mnt()), "lock keeps the mount");

    run_ok(smpfs().arg("unlock").arg(ws.mnt()));
    assert_eq!(std::fs::read(ws.mnt().join("patient.txt")).unwrap(), data);
    assert!(mount.unmount().success());
    let log = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    assert!(
        log.contains("\"event\":\"denied\""),
        "the refused read is audited"
    );
}

#[test]
fn purge_with_a_file_open_wipes_first_then_detaches_and_the_daemon_exits_0() {
    let ws = Workspace::new();
    let (canary, data) = canary_file(&ws);
    ws.seal_all();
    let secret = secret_bytes(&ws);
    let mut mount = ws.mount(&["cache_size=32M"]);
    let pid = mount.pid();
    let mut file = std::fs::File::open(ws.mnt().join("patient.txt")).unwrap();
    let mut first = vec![0u8; 4096];
    file.read_exact(&mut first).unwrap();
    assert_eq!(first, data[..4096]);

    assert!(vm_locked_bytes(pid) >= 32 << 20, "the cache is locked");
    run_ok(smpfs().arg("purge").arg(ws.mnt()));
    assert!(
        !is_mounted(&ws.mnt()),
        "detached at once, even with a file open"
    );
    assert!(
        vm_locked_bytes(pid) < 32 << 20,
        "the zeroized cache is unlocked after the purge"
    );
    assert_eq!(
        occurrences_in_memory(pid, &canary),
        0,
        "plaintext left after purge"
    );
    assert_eq!(
        occurrences_in_memory(pid, &secret),
        0,
        "secret key left after purge"
    );
    assert!(
        file.read(&mut first).is_err(),
        "the open file no longer reads"
    );
    drop(file);
    let status = mount.wait();
    assert!(
        status.success(),
        "daemon exits 0 once the last file closes, not {status}; log:\n{}",
        mount.log_text()
    );
    let log = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("\"event\":\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(events[events.len() - 2..], ["purge", "unmount"]);
    assert_audit_verifies(&ws.dir.path().join("audit.log"), &ws.identity);
}

/// The `purge` records of the newest segment of the log at `path`, and its last two events.
fn last_segment_purges(path: &std::path::Path) -> (Vec<Value>, Vec<String>) {
    let records: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let segment = records.last().unwrap()["segment"].clone();
    let segment: Vec<&Value> = records.iter().filter(|r| r["segment"] == segment).collect();
    let events: Vec<String> = segment
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    let purges = segment
        .iter()
        .filter(|r| r["event"] == "purge")
        .map(|r| (*r).clone())
        .collect();
    (purges, events[events.len() - 2..].to_vec())
}

#[test]
fn umount_and_fusermount3_end_with_exactly_one_purge_record_and_exit_0() {
    let ws = Workspace::new();
    let (_, data) = canary_file(&ws);
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    for unmount in [&["umount"][..], &["fusermount3", "-u"]] {
        let mut mount = ws.mount(&["cache_size=32M"]);
        assert_eq!(std::fs::read(ws.mnt().join("patient.txt")).unwrap(), data);
        run_ok(Command::new(unmount[0]).args(&unmount[1..]).arg(ws.mnt()));
        assert!(mount.wait().success(), "{unmount:?}: the daemon exits 0");
        let (purges, last) = last_segment_purges(&log);
        assert_eq!(last, ["purge", "unmount"], "{unmount:?}");
        assert_eq!(purges.len(), 1, "{unmount:?}: one purge per unmount");
        let detail = &purges[0]["detail"];
        assert!(
            detail["bytes_zeroized"].as_u64().unwrap() >= 31 << 20,
            "{unmount:?}: {detail}"
        );
        assert!(
            detail["file_keys_dropped"].as_u64().unwrap() >= 1,
            "{unmount:?}: the file read had its key dropped: {detail}"
        );
    }
    assert_audit_verifies(&log, &ws.identity);
}
