//! The fake Dropbox server (`tests/fake_dropbox.py`) on loopback, started and stopped by
//! the tests, and token files pointing at it.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running fake; killed on drop.
pub struct FakeDropbox {
    child: Option<Child>,
    pub port: u16,
    /// A 0600 token file (app `test-app`, a refresh token and a valid access token).
    pub token: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeDropbox {
    /// Starts the server on a free port, waits until it answers, and writes [`Self::token`].
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_dropbox.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let token = dir.path().join("dropbox-token.json");
        let mut fake = FakeDropbox {
            child: Some(child),
            port,
            token,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fake Dropbox did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let path = fake.token.clone();
        fake.write_token(&path);
        fake
    }

    /// Writes a 0600 token file at `path` with tokens the fake issues now.
    pub fn write_token(&mut self, path: &Path) {
        let issued = self.admin("token", serde_json::json!({}));
        let stored = serde_json::json!({
            "app_key": "test-app",
            "refresh_token": issued["refresh_token"],
            "access_token": issued["access_token"],
            "expires_at": 4_000_000_000u64,
        });
        std::fs::write(path, stored.to_string()).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `-o` options for smpfs: this endpoint and the token file.
    pub fn options(&self) -> String {
        format!(
            "dropbox_endpoint={},dropbox_token={}",
            self.endpoint(),
            self.token.display()
        )
    }

    /// POSTs `body` to `/_admin/ACTION` and returns the JSON answer.
    pub fn admin(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        super::post_admin(self.port, action, body)
    }

    /// The server's counters.
    pub fn stats(&self) -> serde_json::Value {
        self.admin("stats", serde_json::json!({}))
    }

    /// Every file: metadata and the revisions kept.
    pub fn files(&self) -> Vec<serde_json::Value> {
        self.admin("state", serde_json::json!({}))
            .as_array()
            .unwrap()
            .clone()
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

impl Drop for FakeDropbox {
    fn drop(&mut self) {
        self.kill();
    }
}
