//! The live forward of audit records (`-o audit_forward=`) through real mounts: the
//! receivers are sockets bound by the tests on loopback (and, for journald, a Unix
//! datagram socket named by `SMPFS_JOURNAL_SOCKET`).

mod common;

use std::io::BufRead;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::{pattern, spawn_mount, Mount, Workspace};
use serde_json::Value;

const FILE: &str = "study/CT/1.dcm";

/// A workspace with one sealed file, 300 000 bytes.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write_plain(FILE, &pattern(300_000, 1));
    ws.seal_all();
    ws
}

/// The mount's audit log (the default, beside the identity file): its lines.
fn log_lines(ws: &Workspace) -> Vec<String> {
    std::fs::read_to_string(ws.dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Reads the file through the mount, checks its bytes, and unmounts.
fn read_and_unmount(ws: &Workspace, mount: Mount) {
    let data = std::fs::read(ws.mnt().join(FILE)).unwrap();
    assert_eq!(data, pattern(300_000, 1));
    assert!(mount.unmount().success());
}

/// Checks that `messages` are RFC 5424 messages carrying exactly the log's lines, in
/// order, among them the reads of the file.
fn assert_carry_the_log(ws: &Workspace, messages: &[String]) {
    let lines = log_lines(ws);
    let mut carried = Vec::new();
    for message in messages {
        let record_start = message.find("] {").expect("structured data, then the line") + 2;
        let line = &message[record_start..];
        let record: Value = serde_json::from_str(line).unwrap();
        // <PRI>1 TIMESTAMP HOSTNAME smpfs PROCID MSGID [SD]
        let header: Vec<&str> = message[..record_start].splitn(7, ' ').collect();
        assert_eq!(
            header[0], "<86>1",
            "facility authpriv, severity info: {message}"
        );
        assert_eq!(header[1], record["time"]);
        assert_eq!(header[3], "smpfs");
        let pid = record.get("pid").map_or("-".to_owned(), Value::to_string);
        assert_eq!(header[4], pid, "PROCID: the pid, if the record has one");
        assert_eq!(header[5], record["event"]);
        let seq = format!("seq=\"{}\"", record["seq"]);
        let tag = format!("tag=\"{}\"", record["tag"].as_str().unwrap());
        assert!(
            header[6].starts_with(&format!("[smpfs@32473 {seq} ")),
            "{message}"
        );
        assert!(header[6].contains(&tag), "{message}");
        carried.push(line.to_owned());
    }
    assert_eq!(
        carried, lines,
        "the forward carries the log's lines, in order"
    );
    let reads: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"read\"") && l.contains(FILE))
        .collect();
    assert!(!reads.is_empty(), "the read was logged");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
        .collect();
    assert_eq!(events.first().unwrap(), "mount");
    assert_eq!(events.last().unwrap(), "unmount");
}

#[test]
fn a_udp_receiver_gets_each_record_as_an_rfc_5424_datagram() {
    let ws = workspace();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let mount = ws.mount(&[&format!("audit_forward=syslog://127.0.0.1:{port}")]);
    assert_eq!(
        std::fs::read(ws.mnt().join(FILE)).unwrap(),
        pattern(300_000, 1)
    );
    // `smpfs status` shows the forward's counts while mounted.
    let status = common::run_ok(ws.smpfs().arg("status").arg(ws.mnt()).arg("--json"));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let forward = &status["audit"]["forward"];
    assert_eq!(
        forward["to"],
        format!("syslog://127.0.0.1:{port}"),
        "{status}"
    );
    assert!(
        forward["sent"].as_u64().unwrap() >= 1,
        "the mount record: {status}"
    );
    assert_eq!(forward["dropped"], 0, "{status}");
    read_and_unmount(&ws, mount);
    let mut messages = Vec::new();
    let mut buf = vec![0; 65536];
    // The daemon has exited: every datagram it sent is waiting.
    while let Ok(n) = receiver.recv(&mut buf) {
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert_carry_the_log(&ws, &messages);
    let last: Value = serde_json::from_str(log_lines(&ws).last().unwrap()).unwrap();
    let forward = &last["detail"]["forward"];
    assert_eq!(forward["to"], format!("syslog://127.0.0.1:{port}"));
    assert_eq!(forward["dropped"], 0);
    assert_eq!(forward["errors"], 0);
}

#[test]
fn a_tcp_receiver_gets_newline_framed_messages() {
    let ws = workspace();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Reads every message until the daemon closes the connection (it exits).
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        std::io::BufReader::new(stream)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<String>>()
    });
    let mount = ws.mount(&[&format!("audit_forward=syslog+tcp://127.0.0.1:{port}")]);
    read_and_unmount(&ws, mount);
    let messages = receiver.join().unwrap();
    assert_carry_the_log(&ws, &messages);
}

#[test]
fn a_mount_whose_receiver_is_down_still_reads_and_logs_locally() {
    let ws = workspace();
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("syslog+tcp://127.0.0.1:{port}");
    let mount = ws.mount(&[&format!("audit_forward={target}")]);
    let log = mount.log.clone();
    let started = std::time::Instant::now();
    read_and_unmount(&ws, mount);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a dead receiver does not hold up reads or the unmount"
    );
    let lines = log_lines(&ws);
    assert!(lines
        .iter()
        .any(|l| l.contains("\"event\":\"read\"") && l.contains(FILE)));
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["event"], "unmount");
    let forward = &last["detail"]["forward"];
    assert_eq!(forward["to"], target);
    assert_eq!(forward["sent"], 0);
    assert!(forward["errors"].as_u64().unwrap() >= 1, "{forward}");
    common::assert_audit_verifies(&ws.dir.path().join("audit.log"), &ws.identity);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("audit forward cannot send"), "{text}");
    assert!(text.contains("audit forward ended"), "{text}");
}

#[test]
fn a_malformed_forward_is_refused_before_mounting() {
    let ws = workspace();
    for (option, expected) in [
        (
            "audit_forward=syslog://127.0.0.1:0",
            "the port must be a number from 1 to 65535",
        ),
        ("audit_forward=udp://127.0.0.1:514", "unknown target"),
        (
            "audit=off,audit_forward=journald",
            "cannot be used with audit=off",
        ),
    ] {
        let out = ws
            .mount_command()
            .args(["-f", "-o", option])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{option} mounted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{option}: {stderr}");
        assert!(!common::is_mounted(&ws.mnt()));
        assert!(!ws.dir.path().join("audit.log").exists(), "{option}");
    }
}

#[test]
fn journald_gets_native_protocol_entries() {
    let ws = workspace();
    let socket_path = ws.dir.path().join("journal.socket");
    let journal = UnixDatagram::bind(&socket_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mount = mount_with_journal(&ws, &socket_path);
    read_and_unmount(&ws, mount);
    let mut entries = Vec::new();
    let mut buf = vec![0; 65536];
    while let Ok(n) = journal.recv(&mut buf) {
        entries.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    let lines = log_lines(&ws);
    assert_eq!(entries.len(), lines.len());
    for (entry, line) in entries.iter().zip(&lines) {
        let record: Value = serde_json::from_str(line).unwrap();
        assert!(
            entry.starts_with(&format!("MESSAGE={line}\nPRIORITY=6\n")),
            "{entry}"
        );
        assert!(entry.contains("\nSYSLOG_IDENTIFIER=smpfs\n"), "{entry}");
        assert!(entry.contains(&format!(
            "\nSMPFS_EVENT={}\n",
            record["event"].as_str().unwrap()
        )));
        assert!(entry.contains(&format!("\nSMPFS_SEQ={}\n", record["seq"])));
        if record["event"] == "read" {
            assert!(entry.contains(&format!("\nSMPFS_PATH={FILE}\n")), "{entry}");
        }
    }
}

/// `-o audit_forward=journald` with the journal socket at `socket`.
fn mount_with_journal(ws: &Workspace, socket: &Path) -> Mount {
    let log = ws.dir.path().join("mount.log");
    let mut cmd = ws.mount_command();
    cmd.env("SMPFS_JOURNAL_SOCKET", socket)
        .args(["-f", "-o", "audit_forward=journald"])
        .stderr(std::fs::File::create(&log).unwrap());
    spawn_mount(cmd, ws.mnt(), log)
}
