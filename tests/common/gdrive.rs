//! The fake Drive server (`tests/fake_gdrive.py`) on loopback, started and stopped by the
//! tests, with the service-account key and OAuth client it writes pointing at itself.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running fake; killed on drop.
pub struct FakeDrive {
    child: Option<Child>,
    pub port: u16,
    /// Service-account key whose `token_uri` is this server.
    pub key: PathBuf,
    /// OAuth "Desktop app" client whose URIs are this server.
    pub client: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeDrive {
    /// Starts the server on a free port and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let key = dir.path().join("service-account.json");
        let client = dir.path().join("client.json");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_gdrive.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--key-out"])
            .arg(&key)
            .arg("--client-out")
            .arg(&client)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let fake = FakeDrive {
            child: Some(child),
            port,
            key,
            client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() || !fake.key.exists() {
            assert!(
                Instant::now() < deadline,
                "fake Drive did not start (python3 with `cryptography`: run integration/install-deps.sh)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `-o` options for smpfs: this endpoint and the service-account key.
    pub fn options(&self) -> String {
        format!(
            "gdrive_endpoint={},gdrive_credentials={}",
            self.endpoint(),
            self.key.display()
        )
    }

    /// POSTs `body` to `/_admin/ACTION` and returns the JSON answer.
    pub fn admin(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        super::post_admin(self.port, action, body)
    }

    /// Every entry (metadata and revision ids).
    pub fn entries(&self) -> Vec<serde_json::Value> {
        self.admin("state", serde_json::json!({}))
            .as_array()
            .unwrap()
            .clone()
    }

    /// The entries named `name`.
    pub fn named(&self, name: &str) -> Vec<serde_json::Value> {
        self.entries()
            .into_iter()
            .filter(|e| e["name"] == name)
            .collect()
    }

    /// The id of the only entry named `name`.
    pub fn id_of(&self, name: &str) -> String {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "entries named {name}: {found:?}");
        found[0]["id"].as_str().unwrap().to_owned()
    }

    /// Injects faults: each `(status, reason, count, match)` answers the next `count`
    /// requests whose `METHOD PATH?QUERY` contains `match`.
    pub fn faults(&self, faults: &[(u16, &str, u32, &str)]) {
        let list: Vec<_> = faults
            .iter()
            .map(|(status, reason, count, m)| {
                serde_json::json!({"status": status, "reason": reason, "count": count, "match": m})
            })
            .collect();
        self.admin("config", serde_json::json!({ "faults": list }));
    }

    /// The server's counters.
    pub fn stats(&self) -> serde_json::Value {
        self.admin("stats", serde_json::json!({}))
    }

    /// The server's process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FakeDrive {
    fn drop(&mut self) {
        self.kill();
    }
}
