//! An Azurite Blob server on loopback, started and stopped by the tests themselves
//! (installed by `integration/install-deps.sh`), and the environment smpfs needs to talk
//! to it: the published development account and key.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smpfs::backend::azure::{DEV_ACCOUNT, DEV_KEY};
use smpfs::backend::{AzureBackend, AzureOptions};

/// A running `azurite-blob`, keeping its blobs in a directory of its own (so a restart
/// finds them again, with their ETags); killed on drop.
pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Every variable of the Azure credential chain, cleared before a test sets its own.
const CHAIN: &[&str] = &[
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// Sets the environment for a command talking to Azurite: the development account's key,
/// and nothing else of the credential chain.
pub fn azure_env(cmd: &mut Command) -> &mut Command {
    for name in CHAIN {
        cmd.env_remove(name);
    }
    cmd.env("AZURE_STORAGE_KEY", DEV_KEY)
}

impl Azurite {
    /// Starts a server on a free port and waits until it answers; fails the test, saying
    /// how to install it, if `azurite-blob` is missing.
    pub fn start() -> Self {
        let mut azurite = Azurite {
            child: None,
            port: super::free_port(),
            dir: tempfile::Builder::new()
                .prefix("smpfs-azurite-")
                .tempdir()
                .unwrap(),
        };
        azurite.restart();
        azurite
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`: the account's blob endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// The `-o endpoint=…` option for smpfs.
    pub fn endpoint_option(&self) -> String {
        format!("endpoint={}", self.endpoint())
    }

    /// `az://devstoreaccount1/CONTAINER[/PREFIX]`.
    pub fn source(&self, rest: &str) -> String {
        format!("az://{DEV_ACCOUNT}/{rest}")
    }

    /// Where the server keeps its blobs.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A backend on `az://devstoreaccount1/REST` with the development key.
    pub fn backend(&self, rest: &str) -> AzureBackend {
        let options = AzureOptions {
            endpoint: Some(self.endpoint()),
            timeout: Duration::from_secs(10),
        };
        AzureBackend::open_with(self.source(rest).parse().unwrap(), &options, |name| {
            (name == "AZURE_STORAGE_KEY").then(|| DEV_KEY.to_owned())
        })
        .unwrap()
    }

    /// Creates `container`.
    pub fn create_container(&self, container: &str) {
        self.backend(container).create_container().unwrap();
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let spawned = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.dir.path())
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start azurite-blob ({e}): install it with integration/install-deps.sh \
                 (npm install -g azurite)"
            ),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("azurite-blob exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "azurite-blob did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server with SIGTERM, as a service manager would (it saves its metadata on
    /// the way out), and SIGKILL if it takes more than 5 s; connections are refused until
    /// [`Azurite::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}
