//! A moto S3 server on loopback, started and stopped by the tests themselves (installed by
//! `integration/install-deps.sh`), and the environment smpfs needs to talk to it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials moto accepts (it checks none unless started with auth on).
const KEY_ID: &str = "testing";
const SECRET: &str = "testing";

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    extra_env: Vec<(String, String)>,
}

/// Sets the AWS environment for a command talking to a loopback server: test keys, a
/// region, and none of the workplace's CA settings (they break plain-http endpoints).
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN")
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts a server with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`,
    /// which makes it check credentials).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut moto = Moto {
            child: None,
            port: super::free_port(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        moto.restart();
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `-o endpoint=…` option for smpfs.
    pub fn endpoint_option(&self) -> String {
        format!("endpoint={}", self.endpoint())
    }

    /// Starts the server (again) on the same port; a fresh moto holds no buckets.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}); run integration/install-deps.sh")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Runs a Python snippet with `s3` bound to a boto3 client for this server; returns
    /// its stdout. Panics with stderr if it fails.
    pub fn python(&self, script: &str) -> String {
        self.python_for("s3", script)
    }

    /// Like [`Moto::python`] with the variable `service` bound to a boto3 client for that
    /// AWS service (`kms`, …).
    pub fn python_for(&self, service: &str, script: &str) -> String {
        let program = format!(
            "import boto3, sys\n{service} = boto3.client('{service}', endpoint_url='{}', region_name='us-east-1')\n{script}",
            self.endpoint()
        );
        let out = aws_env(Command::new("python3").arg("-c").arg(&program))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}\n{program}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!("s3.create_bucket(Bucket='{bucket}')"));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
