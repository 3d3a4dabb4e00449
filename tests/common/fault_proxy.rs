//! The fault-injecting proxy (`tests/fault_proxy.py`) on loopback, in front of a moto or
//! fake Drive server, started and stopped by the tests; faults are switched at run time
//! through its `/_proxy/` control paths.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// Which error bodies the proxy's `status` faults answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// S3 XML errors (`<Error><Code>SlowDown</Code>…`).
    S3,
    /// Drive JSON errors (`{"error": {"errors": [{"reason": …}]}}`).
    Drive,
    /// Dropbox JSON errors (`{"error_summary": …, "error": {".tag": …}}`).
    Dropbox,
}

/// A running proxy; killed on drop.
pub struct FaultProxy {
    child: Option<Child>,
    pub port: u16,
}

impl FaultProxy {
    /// Starts a proxy in front of `127.0.0.1:upstream_port` on a free port.
    pub fn start(upstream_port: u16, flavor: Flavor) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fault_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--upstream")
            .arg(format!("127.0.0.1:{upstream_port}"))
            .args([
                "--flavor",
                match flavor {
                    Flavor::S3 => "s3",
                    Flavor::Drive => "drive",
                    Flavor::Dropbox => "dropbox",
                },
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fault proxy did not start: {line:?}"));
        FaultProxy {
            child: Some(child),
            port,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn control(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} /_proxy/{path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, json) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        serde_json::from_str(json).unwrap()
    }

    /// Replaces the fault list (see the script's docs for the fields of a fault).
    pub fn set(&self, faults: Value) {
        self.control("POST", "faults", &json!({ "faults": faults }));
    }

    /// Clears every fault (and releases stalled connections).
    pub fn clear(&self) {
        self.set(json!([]));
    }

    /// The counters since the last [`FaultProxy::take_stats`].
    pub fn stats(&self) -> Value {
        self.control("GET", "stats", &json!({}))
    }

    /// The counters, zeroed afterwards.
    pub fn take_stats(&self) -> Value {
        self.control("POST", "stats", &json!({}))
    }

    /// How many faults of any kind were served, from a stats answer.
    pub fn faults_served(stats: &Value) -> u64 {
        stats["faults"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
