//! Live forward of a mount's audit records to syslog or journald (`-o audit_forward=`).
//!
//! The local log stays the source of truth; the forward is a copy for a SIEM. A line is
//! forwarded only after the `write(2)` of the batch holding it succeeded, exactly as it is
//! in the log, in log order: the writer hands each written batch to [`Forwarder::send`]
//! under its output lock, which is held by one batch at a time. `send` only queues the
//! batch; a thread of the forwarder's own formats and sends it, so a slow or dead receiver
//! never slows an audited read. The queue is bounded ([`QUEUE_LINES`]): a batch that does
//! not fit is dropped and each of its lines counted (with a warning at most every 10 s).
//!
//! Targets:
//! - `syslog://HOST[:PORT]`: one RFC 5424 message ([`syslog_line`]) per UDP datagram
//!   (RFC 5426); a datagram that cannot be sent is lost and counted as an error;
//! - `syslog+tcp://HOST[:PORT]`: the same messages over TCP, each ending in `\n` (RFC 6587
//!   non-transparent framing); the connection is made again with backoff (100 ms doubling
//!   to 30 s) and the line in hand is sent again, so a receiver that comes back gets it;
//! - `journald`: journald's native protocol, one datagram per record to
//!   [`JOURNAL_SOCKET`] (for tests, [`JOURNAL_SOCKET_VAR`] names another socket).
//!
//! PORT defaults to 514. A receiver that is down at mount time is not an error: the
//! forward warns and goes on trying.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::report::{severity, syslog_line};

/// Lines the forward queue holds at most.
pub const QUEUE_LINES: u64 = 10_000;
/// journald's native-protocol socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// For tests only: the socket `audit_forward=journald` sends to instead of
/// [`JOURNAL_SOCKET`].
pub const JOURNAL_SOCKET_VAR: &str = "SMPFS_JOURNAL_SOCKET";
/// The syslog port when a target names none.
const DEFAULT_PORT: u16 = 514;
/// Longest a TCP connect or write may take before the connection is given up.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait before connecting again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long the end of the forward (the seal) waits for queued lines to be sent.
const DRAIN: Duration = Duration::from_secs(2);
/// At most one warning about dropped lines per this interval.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);
/// journald's `SYSLOG_FACILITY` for the records: authpriv, as in [`syslog_line`].
const AUTHPRIV: u8 = 10;
/// Record fields sent to journald as `SMPFS_<FIELD>`, in this order.
const JOURNAL_FIELDS: [&str; 16] = [
    "event", "seq", "log_id", "segment", "uid", "gid", "pid", "user", "process", "host", "path",
    "file_id", "offset", "length", "result", "tag",
];

/// Errors of setting up a forward.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0}; expected syslog://HOST:PORT, syslog+tcp://HOST:PORT or journald")]
    BadTarget(String),
    #[error("cannot start the audit forward thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Where audit records are forwarded (`-o audit_forward=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardTarget {
    /// `syslog://HOST:PORT`: RFC 5424 messages, one per UDP datagram (RFC 5426).
    Udp { host: String, port: u16 },
    /// `syslog+tcp://HOST:PORT`: RFC 5424 messages over TCP, newline-framed.
    Tcp { host: String, port: u16 },
    /// `journald`: the journal's native protocol on its Unix datagram socket.
    Journald,
}

impl FromStr for ForwardTarget {
    type Err = ForwardError;

    /// `syslog://HOST[:PORT]`, `syslog+tcp://HOST[:PORT]` or `journald`; an IPv6 address
    /// goes in brackets (`syslog://[::1]:514`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "journald" {
            return Ok(ForwardTarget::Journald);
        }
        let bad = |reason: &str| ForwardError::BadTarget(reason.to_owned());
        let (tcp, address) = if let Some(rest) = text.strip_prefix("syslog://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("syslog+tcp://") {
            (true, rest)
        } else {
            return Err(bad("unknown target"));
        };
        if address.contains(['/', '?', '#', '@']) {
            return Err(bad("give HOST:PORT only (no path, query or user)"));
        }
        let (host, port) = match address.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
                match after {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                    ),
                }
            }
            None => match address.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(bad("put an IPv6 address in brackets: [ADDRESS]:PORT"))
                }
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(digits) => digits
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        let host = host.to_owned();
        Ok(if tcp {
            ForwardTarget::Tcp { host, port }
        } else {
            ForwardTarget::Udp { host, port }
        })
    }
}

impl fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host, port) = match self {
            ForwardTarget::Journald => return f.write_str("journald"),
            ForwardTarget::Udp { host, port } => ("syslog", host, port),
            ForwardTarget::Tcp { host, port } => ("syslog+tcp", host, port),
        };
        if host.contains(':') {
            write!(f, "{scheme}://[{host}]:{port}")
        } else {
            write!(f, "{scheme}://{host}:{port}")
        }
    }
}

/// What a forward has done so far, in lines of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Lines sent (handed to the socket).
    pub sent: u64,
    /// Lines never sent: the queue was full, or they were still queued when the forward
    /// ended with the receiver unreachable.
    pub dropped: u64,
    /// Failed sends and connects. A failed UDP or journald datagram is lost; over TCP the
    /// line is sent again once connected.
    pub errors: u64,
    /// Lines queued and not yet sent or dropped.
    pub queued: u64,
}

/// Counters shared by the queue's producer and the forward thread.
#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// The forward is ending: at its first failure the thread drops what is left.
    closing: AtomicBool,
}

/// A live forward: a bounded queue of written log lines and the thread that sends them.
/// Dropping it ends the forward: lines still queued get up to 2 s to be sent, then the
/// totals are logged.
pub struct Forwarder {
    target: ForwardTarget,
    capacity: u64,
    queue: Option<Sender<Vec<u8>>>,
    counters: Arc<Counters>,
    /// Disconnected when the forward thread has exited.
    finished: Receiver<()>,
    last_drop_warning: Option<Instant>,
}

impl Forwarder {
    /// Starts forwarding to `target` (no connection is needed yet: a receiver that is down
    /// is warned about and tried again by the thread).
    pub fn start(target: &ForwardTarget) -> Result<Forwarder, ForwardError> {
        let journal = std::env::var_os(JOURNAL_SOCKET_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
        let forwarder = Forwarder::spawn(target, QUEUE_LINES, journal)?;
        tracing::info!(to = %target, "forwarding audit records");
        Ok(forwarder)
    }

    fn spawn(
        target: &ForwardTarget,
        capacity: u64,
        journal: PathBuf,
    ) -> Result<Forwarder, ForwardError> {
        let (queue, lines) = mpsc::channel();
        let (exited, finished) = mpsc::channel::<()>();
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            target: target.clone(),
            journal,
            counters: Arc::clone(&counters),
            sink: None,
            retry: FIRST_RETRY,
            failing: false,
            abandoned: false,
        };
        std::thread::Builder::new()
            .name("smpfs-audit-fwd".to_owned())
            .spawn(move || {
                let _exited = exited;
                worker.run(&lines);
            })
            .map_err(ForwardError::Spawn)?;
        Ok(Forwarder {
            target: target.clone(),
            capacity,
            queue: Some(queue),
            counters,
            finished,
            last_drop_warning: None,
        })
    }

    /// Queues `lines` (`records` whole log lines, as written) to be forwarded; never
    /// blocks. If they do not all fit in the queue, they are dropped and counted.
    pub(super) fn send(&mut self, lines: &[u8], records: u64) {
        let Some(queue) = &self.queue else {
            return;
        };
        // The only producer is the writer's leader, one at a time; the thread only lowers
        // `queued`, so the room seen here does not shrink before the lines are queued.
        let queued = self.counters.queued.load(Ordering::Acquire);
        if queued + records <= self.capacity {
            self.counters.queued.fetch_add(records, Ordering::AcqRel);
            if queue.send(lines.to_vec()).is_ok() {
                return;
            }
            // The thread is gone (it panicked): nothing more can be sent.
            self.counters.queued.fetch_sub(records, Ordering::AcqRel);
        }
        let dropped = self.counters.dropped.fetch_add(records, Ordering::Relaxed) + records;
        if self
            .last_drop_warning
            .is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY)
        {
            self.last_drop_warning = Some(Instant::now());
            tracing::warn!(
                to = %self.target,
                dropped,
                "audit forward queue full (the receiver is slow or down): records dropped \
                 from the forward; the local audit log has them"
            );
        }
    }

    /// Queues the lines of `file` from byte `from` to its end: the records a segment wrote
    /// before the forward was attached (read back, so exactly as written).
    pub(super) fn send_written(&mut self, file: &File, from: u64) -> std::io::Result<()> {
        let end = file.metadata()?.len();
        let mut lines = vec![0; end.saturating_sub(from) as usize];
        file.read_exact_at(&mut lines, from)?;
        let records = lines.iter().filter(|&&b| b == b'\n').count() as u64;
        self.send(&lines, records);
        Ok(())
    }

    /// What the forward has done so far.
    pub fn stats(&self) -> ForwardStats {
        ForwardStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Acquire),
        }
    }

    /// Notes the forward's counts so far in `detail` (the sealing record's), as
    /// `"forward": {"to", "sent", "dropped", "errors", "queued"}`; `null` becomes an object.
    pub(super) fn note(&self, detail: &mut Value) {
        if detail.is_null() {
            *detail = Value::Object(Default::default());
        }
        if let Value::Object(map) = detail {
            let stats = self.stats();
            map.insert(
                "forward".to_owned(),
                serde_json::json!({
                    "to": self.target.to_string(),
                    "sent": stats.sent,
                    "dropped": stats.dropped,
                    "errors": stats.errors,
                    "queued": stats.queued,
                }),
            );
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        drop(queue);
        self.counters.closing.store(true, Ordering::Release);
        let exited = matches!(
            self.finished.recv_timeout(DRAIN),
            Err(RecvTimeoutError::Disconnected)
        );
        let mut stats = self.stats();
        if !exited {
            // Still trying (a connect to a silent host): what is queued will not be sent.
            stats.dropped += stats.queued;
        }
        if stats.dropped > 0 || stats.errors > 0 {
            tracing::warn!(
                to = %self.target,
                sent = stats.sent,
                dropped = stats.dropped,
                errors = stats.errors,
                "audit forward ended; some records were not forwarded (the local audit log \
                 has them all)"
            );
        } else {
            tracing::info!(to = %self.target, sent = stats.sent, "audit forward ended");
        }
    }
}

/// The forward thread: takes batches off the queue in order and sends each line.
struct Worker {
    target: ForwardTarget,
    journal: PathBuf,
    counters: Arc<Counters>,
    sink: Option<Sink>,
    /// Wait before the next TCP connect.
    retry: Duration,
    /// The last send failed (warned once until one succeeds).
    failing: bool,
    /// The forward ended with the receiver unreachable: the rest is dropped.
    abandoned: bool,
}

/// An open socket of the target.
enum Sink {
    Udp(UdpSocket, Vec<SocketAddr>),
    Tcp(TcpStream),
    Journal(UnixDatagram),
}

impl Worker {
    fn run(&mut self, lines: &Receiver<Vec<u8>>) {
        for batch in lines {
            for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if self.abandoned {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.forward(line);
                }
                self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Sends one log line: once for a datagram target, until it is sent (or the forward
    /// ends) over TCP.
    fn forward(&mut self, line: &[u8]) {
        let Some(message) = message(&self.target, line) else {
            // The writer only writes JSON lines; this would be a bug, not the receiver.
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(to = %self.target, "audit line not forwarded: it does not parse");
            return;
        };
        loop {
            match self.deliver(&message) {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    if self.failing {
                        self.failing = false;
                        tracing::info!(to = %self.target, "audit forward is sending again");
                    }
                    self.retry = FIRST_RETRY;
                    return;
                }
                Err(error) => {
                    let errors = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    self.sink = None;
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            to = %self.target,
                            %error,
                            errors,
                            "audit forward cannot send (the mount goes on; records stay in \
                             the local log); trying again"
                        );
                    }
                    if self.counters.closing.load(Ordering::Acquire) {
                        self.abandoned = true;
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    match self.target {
                        // A datagram is sent once; the next line tries a new socket.
                        ForwardTarget::Udp { .. } | ForwardTarget::Journald => return,
                        ForwardTarget::Tcp { .. } => self.back_off(),
                    }
                }
            }
        }
    }

    /// Waits before connecting again (doubling up to [`MAX_RETRY`]); cut short when the
    /// forward ends.
    fn back_off(&mut self) {
        let until = Instant::now() + self.retry;
        while Instant::now() < until && !self.counters.closing.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    /// Sends one message, opening the socket first if needed.
    fn deliver(&mut self, message: &[u8]) -> std::io::Result<()> {
        let sink = match &mut self.sink {
            Some(sink) => sink,
            None => self.sink.insert(open(&self.target, &self.journal)?),
        };
        match sink {
            Sink::Udp(socket, addresses) => {
                let mut last = None;
                for address in addresses.iter() {
                    match socket.send_to(message, address) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into()))
            }
            Sink::Tcp(stream) => stream.write_all(message),
            Sink::Journal(socket) => socket.send_to(message, &self.journal).map(drop),
        }
    }
}

/// Opens a socket for `target`: resolves the host, and for TCP connects.
fn open(target: &ForwardTarget, journal: &std::path::Path) -> std::io::Result<Sink> {
    match target {
        ForwardTarget::Udp { host, port } => {
            let addresses: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            let any: SocketAddr = match addresses.first() {
                Some(SocketAddr::V6(_)) => "[::]:0".parse(),
                _ => "0.0.0.0:0".parse(),
            }
            .expect("a literal address");
            Ok(Sink::Udp(UdpSocket::bind(any)?, addresses))
        }
        ForwardTarget::Tcp { host, port } => {
            let mut last = None;
            for address in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&address, IO_TIMEOUT) {
                    Ok(stream) => {
                        stream.set_write_timeout(Some(IO_TIMEOUT))?;
                        stream.set_nodelay(true)?;
                        return Ok(Sink::Tcp(stream));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into()))
        }
        ForwardTarget::Journald => {
            // Fails here, not at each send, when there is no journal.
            std::fs::metadata(journal)?;
            Ok(Sink::Journal(UnixDatagram::unbound()?))
        }
    }
}

/// The message that carries log `line` to `target`, or `None` if it is not a record.
fn message(target: &ForwardTarget, line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let record: Value = serde_json::from_str(text).ok()?;
    Some(match target {
        ForwardTarget::Udp { .. } => syslog_line(&record, text).into_bytes(),
        ForwardTarget::Tcp { .. } => tcp_frame(&syslog_line(&record, text)),
        ForwardTarget::Journald => journal_entry(&record, text),
    })
}

/// A syslog message framed for TCP: followed by `\n`. [`syslog_line`] never puts one
/// inside (the log line is JSON, structured-data values escape control characters).
fn tcp_frame(message: &str) -> Vec<u8> {
    let mut framed = message.as_bytes().to_vec();
    framed.push(b'\n');
    framed
}

/// One journal entry in the native protocol: `MESSAGE` (the log line), `PRIORITY`,
/// `SYSLOG_FACILITY`, `SYSLOG_IDENTIFIER=smpfs` and `SMPFS_<FIELD>` for the record's fields.
fn journal_entry(record: &Value, line: &str) -> Vec<u8> {
    let mut entry = Vec::with_capacity(2 * line.len() + 256);
    journal_field(&mut entry, "MESSAGE", line.as_bytes());
    journal_field(
        &mut entry,
        "PRIORITY",
        severity(record).to_string().as_bytes(),
    );
    journal_field(
        &mut entry,
        "SYSLOG_FACILITY",
        AUTHPRIV.to_string().as_bytes(),
    );
    journal_field(&mut entry, "SYSLOG_IDENTIFIER", b"smpfs");
    for field in JOURNAL_FIELDS {
        let value = match &record[field] {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = format!("SMPFS_{}", field.to_ascii_uppercase());
        journal_field(&mut entry, &name, value.as_bytes());
    }
    entry
}

/// Appends one field: `NAME=value\n`, or for a value holding a newline `NAME\n`, its
/// length as 64-bit little-endian, the value and `\n` (systemd's JOURNAL_NATIVE_PROTOCOL).
fn journal_field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use serde_json::json;

    use super::*;

    const LINE: &str = r#"{"seq":4,"time":"2026-12-04T15:00:00.000000001Z","log_id":"ab","segment":1,"event":"read","uid":1000,"gid":1000,"pid":42,"process":"cat","user":"ann","host":"ws1","path":"CT/1.dcm","offset":0,"length":4096,"result":"ok","prev":"00","tag":"ff"}"#;

    fn target(text: &str) -> ForwardTarget {
        text.parse().unwrap()
    }

    #[test]
    fn targets_parse_and_print() {
        let udp = ForwardTarget::Udp {
            host: "siem.example".into(),
            port: 5514,
        };
        assert_eq!(target("syslog://siem.example:5514"), udp);
        assert_eq!(
            target("syslog+tcp://10.0.0.1"),
            ForwardTarget::Tcp {
                host: "10.0.0.1".into(),
                port: 514
            }
        );
        assert_eq!(
            target("syslog://[::1]:6514"),
            ForwardTarget::Udp {
                host: "::1".into(),
                port: 6514
            }
        );
        assert_eq!(target("journald"), ForwardTarget::Journald);
        for text in [
            "syslog://siem.example:5514",
            "syslog+tcp://10.0.0.1:514",
            "syslog://[::1]:6514",
            "journald",
        ] {
            assert_eq!(target(text).to_string(), text);
        }
        for (bad, why) in [
            ("", "unknown target"),
            ("udp://h:514", "unknown target"),
            ("syslog:/h:514", "unknown target"),
            ("journald://x", "unknown target"),
            ("syslog://", "no host"),
            ("syslog://:514", "no host"),
            ("syslog://h:", "port"),
            ("syslog://h:0", "port"),
            ("syslog://h:65536", "port"),
            ("syslog://h:+5", "port"),
            ("syslog://h:514/x", "no path"),
            ("syslog://u@h:514", "no path"),
            ("syslog://::1:514", "brackets"),
            ("syslog://[::1:514", "closing"),
            ("syslog://[::1]x", "port"),
        ] {
            match bad.parse::<ForwardTarget>() {
                Err(ForwardError::BadTarget(reason)) => {
                    assert!(reason.contains(why), "{bad:?}: {reason}")
                }
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn syslog_messages_carry_the_line_unchanged() {
        let record: Value = serde_json::from_str(LINE).unwrap();
        let udp = message(&target("syslog://h:1"), LINE.as_bytes()).unwrap();
        let udp = String::from_utf8(udp).unwrap();
        assert_eq!(udp, syslog_line(&record, LINE));
        assert!(udp.starts_with("<86>1 2026-12-04T15:00:00.000000001Z ws1 smpfs 42 read "));
        assert!(udp.ends_with(&format!("] {LINE}")), "{udp}");
        let tcp = message(&target("syslog+tcp://h:1"), LINE.as_bytes()).unwrap();
        assert_eq!(tcp, format!("{udp}\n").into_bytes());
        // A newline in a structured-data value is escaped: the TCP frame stays one line.
        let framed = tcp_frame(&syslog_line(
            &json!({"event": "read", "path": "a\nb"}),
            "{}",
        ));
        assert_eq!(framed.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(framed.ends_with(b"path=\"a\\nb\"] {}\n"));
        assert_eq!(message(&target("syslog://h:1"), b"not json"), None);
    }

    /// Splits a native-protocol entry into its fields.
    fn journal_fields(mut entry: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !entry.is_empty() {
            let end = entry.iter().position(|&b| b == b'\n' || b == b'=').unwrap();
            let name = String::from_utf8(entry[..end].to_vec()).unwrap();
            if entry[end] == b'=' {
                let rest = &entry[end + 1..];
                let stop = rest.iter().position(|&b| b == b'\n').unwrap();
                fields.push((name, rest[..stop].to_vec()));
                entry = &rest[stop + 1..];
            } else {
                let len = u64::from_le_bytes(entry[end + 1..end + 9].try_into().unwrap());
                let value = &entry[end + 9..end + 9 + len as usize];
                assert_eq!(entry[end + 9 + len as usize], b'\n');
                fields.push((name, value.to_vec()));
                entry = &entry[end + 10 + len as usize..];
            }
        }
        fields
    }

    #[test]
    fn journal_entries_follow_the_native_protocol() {
        let entry = message(&target("journald"), LINE.as_bytes()).unwrap();
        let text = String::from_utf8(entry.clone()).unwrap();
        assert!(
            text.starts_with(&format!(
                "MESSAGE={LINE}\nPRIORITY=6\nSYSLOG_FACILITY=10\nSYSLOG_IDENTIFIER=smpfs\n\
                 SMPFS_EVENT=read\nSMPFS_SEQ=4\nSMPFS_LOG_ID=ab\nSMPFS_SEGMENT=1\n"
            )),
            "{text}"
        );
        assert!(text.contains("\nSMPFS_PATH=CT/1.dcm\n"));
        assert!(text.ends_with("SMPFS_RESULT=ok\nSMPFS_TAG=ff\n"), "{text}");
        assert!(!text.contains("SMPFS_PREV"));

        // A value with a newline goes length-prefixed; the rest stay `NAME=value`.
        let record = json!({"event": "denied", "seq": 9, "path": "a\nb", "result": "EACCES"});
        let entry = journal_entry(&record, "{}");
        let mut expected = b"MESSAGE={}\nPRIORITY=4\nSYSLOG_FACILITY=10\n\
            SYSLOG_IDENTIFIER=smpfs\nSMPFS_EVENT=denied\nSMPFS_SEQ=9\nSMPFS_PATH\n"
            .to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\nSMPFS_RESULT=EACCES\n");
        assert_eq!(entry, expected);
        let fields = journal_fields(&entry);
        assert_eq!(fields[6], ("SMPFS_PATH".to_owned(), b"a\nb".to_vec()));
        assert_eq!(fields.len(), 8);
    }

    #[test]
    fn journal_priority_agrees_with_the_syslog_severity() {
        for event in [
            "mount",
            "open",
            "read",
            "gpu_load",
            "release",
            "denied",
            "integrity_failure",
            "purge",
            "refresh",
            "unmount",
        ] {
            let record = json!({ "event": event });
            let pri: u8 = syslog_line(&record, "{}")[1..3].parse().unwrap();
            assert_eq!(severity(&record), pri % 8, "{event}");
        }
    }

    /// Two batches of log lines (three records), as the writer hands them over.
    fn batches() -> [(Vec<u8>, u64); 2] {
        let line = |seq: u64| LINE.replace("\"seq\":4", &format!("\"seq\":{seq}"));
        [
            (format!("{}\n{}\n", line(1), line(2)).into_bytes(), 2),
            (format!("{}\n", line(3)).into_bytes(), 1),
        ]
    }

    #[test]
    fn udp_sends_one_message_per_datagram_in_order() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = receiver.local_addr().unwrap().port();
        let mut forwarder =
            Forwarder::start(&target(&format!("syslog://127.0.0.1:{port}"))).unwrap();
        for (lines, records) in batches() {
            forwarder.send(&lines, records);
        }
        let mut buf = [0; 4096];
        for seq in 1..=3 {
            let n = receiver.recv(&mut buf).unwrap();
            let got = std::str::from_utf8(&buf[..n]).unwrap();
            let line = LINE.replace("\"seq\":4", &format!("\"seq\":{seq}"));
            let record: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(got, syslog_line(&record, &line));
        }
        drop_and_check(forwarder, 3);
    }

    /// Ends the forward and checks its totals: all `sent`, nothing dropped.
    fn drop_and_check(forwarder: Forwarder, sent: u64) {
        let counters = Arc::clone(&forwarder.counters);
        drop(forwarder);
        assert_eq!(counters.sent.load(Ordering::Relaxed), sent);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        // Nothing listens on this port: the thread holds its first line, retrying.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead = target(&format!("syslog+tcp://127.0.0.1:{port}"));
        let mut forwarder = Forwarder::spawn(&dead, 5, PathBuf::new()).unwrap();
        let started = Instant::now();
        let [(two, _), (one, _)] = batches();
        forwarder.send(&two, 2);
        forwarder.send(&two, 2);
        forwarder.send(&two, 2); // 6 > 5: dropped
        forwarder.send(&one, 1); // 5: fits
        forwarder.send(&one, 1); // dropped
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "send never waits"
        );
        let stats = forwarder.stats();
        assert_eq!((stats.sent, stats.dropped, stats.queued), (0, 3, 5));
        while forwarder.stats().errors == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut detail = json!({"clean": true});
        forwarder.note(&mut detail);
        assert_eq!(detail["clean"], true);
        assert_eq!(detail["forward"]["to"], dead.to_string());
        assert_eq!(detail["forward"]["dropped"], 3);
        assert_eq!(detail["forward"]["queued"], 5);
        // Ending it drops what is queued (the receiver stays down) without waiting 2 s.
        let counters = Arc::clone(&forwarder.counters);
        let ending = Instant::now();
        drop(forwarder);
        assert!(ending.elapsed() < DRAIN, "{:?}", ending.elapsed());
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 8);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
        assert_eq!(counters.sent.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn tcp_reconnects_and_sends_the_line_in_hand_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let mut forwarder = Forwarder::start(&target(&format!("syslog+tcp://{address}"))).unwrap();
        let [(two, _), (one, _)] = batches();
        forwarder.send(&two, 2);
        while forwarder.stats().errors == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The receiver comes up after the first connect failed.
        let listener = TcpListener::bind(address).unwrap();
        forwarder.send(&one, 1);
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = std::io::BufReader::new(stream);
        for seq in 1..=3 {
            let mut got = String::new();
            std::io::BufRead::read_line(&mut received, &mut got).unwrap();
            assert!(
                got.ends_with(&format!("\"seq\":{seq},{}\n", &LINE[9..])),
                "{got}"
            );
        }
        drop_and_check(forwarder, 3);
    }

    /// The log line a syslog message carries (after its structured data).
    fn carried(message: &str) -> &str {
        &message[message.find("] {").expect("a message part") + 2..]
    }

    #[test]
    fn a_log_forwards_each_line_once_written_and_nothing_it_failed_to_write() {
        use crate::audit::{Actor, AuditLog, Event, EventKind, SyncPolicy};
        use crate::keys::Identity;

        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = receiver.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let me = Identity::generate().recipient();
        let read = |i: u64| {
            Event::new(EventKind::Read)
                .actor(&Actor::from_request(1000, 1000, std::process::id()))
                .path("CT/1.dcm")
                .range(i * 4096, 4096)
        };
        // A first segment, not forwarded: only the forwarded segment's lines go out.
        let first =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        first.record(read(0)).unwrap();
        first.seal(Value::Null).unwrap();
        drop(first);
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.forward(Forwarder::start(&target(&format!("syslog://127.0.0.1:{port}"))).unwrap())
            .unwrap();
        for i in 0..3 {
            log.record(read(i)).unwrap();
        }
        log.seal(serde_json::json!({"clean": true})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines.len(), 5, "mount, three reads, unmount");
        let mut buf = [0; 8192];
        for line in &lines {
            let n = receiver.recv(&mut buf).unwrap();
            let message = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(carried(message), *line);
        }
        let unmount: Value = serde_json::from_str(lines[4]).unwrap();
        assert_eq!(unmount["detail"]["clean"], true);
        let forward = &unmount["detail"]["forward"];
        assert_eq!(forward["to"], format!("syslog://127.0.0.1:{port}"));
        assert_eq!(
            (&forward["dropped"], &forward["errors"]),
            (&0.into(), &0.into())
        );
        // Counted as the seal was written: the four lines before it, sent or still queued.
        let counted = forward["sent"].as_u64().unwrap() + forward["queued"].as_u64().unwrap();
        assert_eq!(counted, 4, "{forward}");

        // A batch whose write fails is not forwarded.
        drop(log);
        let log =
            AuditLog::open_segment(&path, &me, SyncPolicy::default(), None, Value::Null).unwrap();
        log.forward(Forwarder::start(&target(&format!("syslog://127.0.0.1:{port}"))).unwrap())
            .unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        let mount = carried(std::str::from_utf8(&buf[..n]).unwrap()).to_owned();
        assert_eq!(
            Some(mount.as_str()),
            std::fs::read_to_string(&path).unwrap().lines().last()
        );
        log.replace_file(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        assert!(log.record(read(9)).is_err());
        drop(log);
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(receiver.recv(&mut buf).is_err(), "nothing after the mount");
    }

    #[test]
    fn journald_datagrams_reach_the_socket_and_a_missing_one_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        journal
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut forwarder = Forwarder::spawn(&ForwardTarget::Journald, 10, path).unwrap();
        let [(two, _), _] = batches();
        forwarder.send(&two, 2);
        let mut buf = [0; 4096];
        for seq in 1..=2 {
            let n = journal.recv(&mut buf).unwrap();
            let fields = journal_fields(&buf[..n]);
            let line = LINE.replace("\"seq\":4", &format!("\"seq\":{seq}"));
            assert_eq!(fields[0], ("MESSAGE".to_owned(), line.into_bytes()));
            assert!(fields.contains(&("SMPFS_SEQ".to_owned(), seq.to_string().into_bytes())));
        }
        drop_and_check(forwarder, 2);

        let mut nowhere =
            Forwarder::spawn(&ForwardTarget::Journald, 10, dir.path().join("none")).unwrap();
        nowhere.send(&two, 2);
        while nowhere.stats().queued > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            nowhere.stats(),
            ForwardStats {
                sent: 0,
                dropped: 0,
                errors: 2,
                queued: 0
            }
        );
    }
}
