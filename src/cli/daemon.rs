//! Backgrounding a mount: the parent waits until the child reports the mount live (or why
//! it failed), so `smpfs mount` and mount(8) return only once the filesystem is usable.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::unistd::{fork, pipe, setsid, ForkResult};

use super::output::say;

/// The last line of a report that the mount is live (warnings may come before it).
const READY: &str = "ready\n";

/// The child's end of the readiness pipe; `None` in the foreground.
pub struct Readiness(Option<File>);

impl Readiness {
    /// For a foreground mount: nobody is waiting.
    pub fn foreground() -> Self {
        Readiness(None)
    }

    /// Tells the waiting parent the mount is live, with `warnings` for it to print.
    pub fn ready(&mut self, warnings: &[String]) {
        if let Some(mut pipe) = self.0.take() {
            let mut report: String = warnings.iter().map(|w| format!("warning: {w}\n")).collect();
            report.push_str(READY);
            let _ = pipe.write_all(report.as_bytes());
        }
    }

    /// Tells the waiting parent why the mount failed.
    pub fn failed(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// Forks. The parent waits for the child's report and exits with its outcome (0, or
/// `failure_status` with the reason on stderr); the child
/// returns its [`Readiness`] with stdio on /dev/null, in a new session. Must be called
/// while the process has a single thread.
pub fn daemonize(failure_status: u8) -> Result<Readiness> {
    let (read_end, write_end): (OwnedFd, OwnedFd) = pipe().context("creating readiness pipe")?;
    // SAFETY: the process is single-threaded here (no runtime, pool or worker started yet).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            if let Some(warnings) = report.strip_suffix(READY) {
                for warning in warnings.lines() {
                    say!("smpfs: {warning}");
                }
                std::process::exit(0);
            }
            if report.is_empty() {
                report = "mount daemon exited before the mount was live (see its log)".into();
            }
            say!("smpfs: {report}");
            std::process::exit(failure_status.into());
        }
        ForkResult::Child => {
            drop(read_end);
            setsid().context("setsid")?;
            let null = File::options().read(true).write(true).open("/dev/null")?;
            nix::unistd::dup2_stdin(&null)?;
            nix::unistd::dup2_stdout(&null)?;
            nix::unistd::dup2_stderr(&null)?;
            Ok(Readiness(Some(File::from(write_end))))
        }
    }
}
