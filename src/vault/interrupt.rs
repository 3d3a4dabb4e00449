//! Whether the process behind a request has been signalled, so that long work on its behalf
//! (resolving a huge directory) can stop. fuser answers the kernel's FUSE_INTERRUPT with
//! ENOSYS, after which a caller waiting on a request already being served cannot be
//! interrupted, not even by SIGKILL, until the reply comes: the filesystem has to notice.

/// Signals whose default action is to do nothing: pending, they interrupt no one.
const IGNORED_BY_DEFAULT: [i32; 4] = [libc::SIGCHLD, libc::SIGURG, libc::SIGWINCH, libc::SIGCONT];

/// Whether thread `tid` has a signal pending that it neither blocks nor ignores (so the
/// kernel would interrupt its system call). False if it cannot be told (no such thread).
pub fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0)
    };
    let ignored = IGNORED_BY_DEFAULT
        .iter()
        .fold(mask("SigIgn:"), |m, &signal| m | 1 << (signal - 1));
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") & !ignored != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    #[test]
    fn a_stopped_process_with_sigint_pending_is_seen_as_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(!signal_pending(child.id()));
        // A stopped process keeps ordinary signals pending until it is continued.
        kill(pid, Signal::SIGSTOP).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        kill(pid, Signal::SIGWINCH).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!signal_pending(child.id()), "SIGWINCH interrupts no one");
        kill(pid, Signal::SIGINT).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(signal_pending(child.id()));
        kill(pid, Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!signal_pending(u32::MAX), "no such thread");
    }
}
