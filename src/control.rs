//! The control socket of a mount: `smpfs purge|lock|unlock DIR` talk to the mount's daemon
//! through a Unix socket named after the mountpoint, one command per connection. Only root
//! and the user who mounted may send commands (checked with SO_PEERCRED).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// Errors of the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no smpfs mount is controlled at {0} (not mounted by smpfs, or by another user)")]
    NoDaemon(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error(
        "{0} is a stale mount: its smpfs daemon is gone (and its keys and cache with it); \
         clear it with `umount {0}` (as root) or `fusermount3 -u {0}`"
    )]
    Stale(PathBuf),
    #[error("the daemon of {0} closed the connection without a reply (did it crash?)")]
    NoReply(PathBuf),
}

/// Whether `path` is a FUSE mount whose daemon is gone (the kernel answers ENOTCONN).
pub fn is_stale_mount(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_err_and(|e| e.raw_os_error() == Some(nix::errno::Errno::ENOTCONN as i32))
}

/// What a client can ask of a mount's daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Purge keys and cache, seal the audit segment, then detach the mount.
    Purge,
    /// Purge keys and cache but keep the mount; reads fail with EACCES until unlocked.
    Lock,
    /// Load the identity again after a lock.
    Unlock,
    /// Read a v2 bucket's manifest again now.
    Refresh,
    /// Report the mount's state as one line of JSON.
    Status,
    /// Set the purpose of reads from the sender's session (its argument).
    Purpose,
}

/// One command as the daemon receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub command: Command,
    /// The text after the command's word (`purpose TEXT`); empty for the others.
    pub argument: String,
    /// The sending process, as the kernel reports it (SO_PEERCRED).
    pub peer_pid: i32,
}

impl Command {
    fn word(self) -> &'static str {
        match self {
            Command::Purge => "purge",
            Command::Lock => "lock",
            Command::Unlock => "unlock",
            Command::Refresh => "refresh",
            Command::Status => "status",
            Command::Purpose => "purpose",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        [
            Command::Purge,
            Command::Lock,
            Command::Unlock,
            Command::Refresh,
            Command::Status,
            Command::Purpose,
        ]
        .into_iter()
        .find(|c| c.word() == word)
    }
}

/// The socket path for a (canonical) mountpoint: under /run/smpfs for root, else under
/// `$XDG_RUNTIME_DIR/smpfs`.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/smpfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join("smpfs")
    };
    let digest = blake3::hash(mountpoint.as_os_str().as_encoded_bytes());
    dir.join(format!("{}.sock", &digest.to_hex()[..32]))
}

/// Binds the control socket for `mountpoint` (replacing a stale one), mode 0600.
pub fn bind(mountpoint: &Path) -> Result<(UnixListener, PathBuf), ControlError> {
    let path = socket_path(mountpoint);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("socket has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    remove_stale_sockets(dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok((listener, path))
}

/// Removes the sockets in `dir` that no daemon listens on any more (left by daemons that
/// were killed); ones that cannot be checked are kept.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock")
            && UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(socket = %path.display(), "removed a stale control socket")
                }
                Err(e) => {
                    tracing::debug!(socket = %path.display(), "stale control socket kept: {e}")
                }
            }
        }
    }
}

/// Serves commands forever: `handle` runs each one and returns the reply or an error text.
/// `busy` is held from a command's start until its reply is written, so a daemon that a
/// command ends (`purge` detaches the mount) can wait for the reply before it exits.
pub fn serve(
    listener: UnixListener,
    busy: &std::sync::Mutex<()>,
    mut handle: impl FnMut(Request) -> Result<String, String>,
) {
    let owner = nix::unistd::geteuid().as_raw();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _busy = busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let peer = getsockopt(&stream, PeerCredentials).ok();
        let allowed = peer.is_some_and(|c| c.uid() == 0 || c.uid() == owner);
        let mut line = String::new();
        let reply = if !allowed {
            Err("permission denied".to_owned())
        } else if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        } else {
            let line = line.trim_end_matches('\n');
            let (word, argument) = line.split_once(' ').unwrap_or((line, ""));
            match Command::from_word(word) {
                Some(command) => handle(Request {
                    command,
                    argument: argument.to_owned(),
                    peer_pid: peer.map_or(0, |c| c.pid()),
                }),
                None => Err(format!("unknown command {:?}", line.trim())),
            }
        };
        let text = match reply {
            Ok(ok) => format!("ok {ok}\n"),
            Err(e) => format!("error {e}\n"),
        };
        let _ = stream.write_all(text.as_bytes());
    }
}

/// Sends `command` to the daemon of `mountpoint` and returns its reply.
pub fn send(mountpoint: &Path, command: Command) -> Result<String, ControlError> {
    send_with(mountpoint, command, "")
}

/// Sends `command` with its `argument` (one line of text) and returns the reply.
pub fn send_with(
    mountpoint: &Path,
    command: Command,
    argument: &str,
) -> Result<String, ControlError> {
    if argument.contains(['\n', '\r']) {
        return Err(ControlError::Refused("the text must be one line".into()));
    }
    if is_stale_mount(mountpoint) {
        return Err(ControlError::Stale(
            std::path::absolute(mountpoint).map_err(|source| ControlError::Io {
                path: mountpoint.to_owned(),
                source,
            })?,
        ));
    }
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|source| ControlError::Io {
            path: mountpoint.to_owned(),
            source,
        })?;
    let path = socket_path(&mountpoint);
    let mut stream =
        UnixStream::connect(&path).map_err(|_| ControlError::NoDaemon(mountpoint.clone()))?;
    let mut reply = String::new();
    let exchanged = stream
        .write_all(
            if argument.is_empty() {
                format!("{}\n", command.word())
            } else {
                format!("{} {argument}\n", command.word())
            }
            .as_bytes(),
        )
        .and_then(|()| BufReader::new(&stream).read_line(&mut reply));
    if exchanged.is_err() || reply.is_empty() {
        // The daemon went away mid-command: the mount is stale now, or it crashed.
        return Err(if is_stale_mount(&mountpoint) {
            ControlError::Stale(mountpoint)
        } else {
            ControlError::NoReply(mountpoint)
        });
    }
    match reply.trim_end().split_once(' ') {
        Some(("ok", text)) => Ok(text.to_owned()),
        Some(("error", text)) => Err(ControlError::Refused(text.to_owned())),
        _ => Err(ControlError::Refused(format!("unexpected reply {reply:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().canonicalize().unwrap();
        let (listener, path) = bind(&mountpoint).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::thread::spawn(move || {
            serve(listener, &std::sync::Mutex::new(()), |r| match r.command {
                Command::Lock => Ok("locked".into()),
                Command::Purpose => Ok(format!("{} from {}", r.argument, r.peer_pid)),
                _ => Err("not now".into()),
            })
        });
        assert_eq!(send(&mountpoint, Command::Lock).unwrap(), "locked");
        assert_eq!(
            send_with(&mountpoint, Command::Purpose, "tumour board 12").unwrap(),
            format!("tumour board 12 from {}", std::process::id())
        );
        assert!(send_with(&mountpoint, Command::Purpose, "two\nlines").is_err());
        assert!(
            matches!(send(&mountpoint, Command::Purge), Err(ControlError::Refused(t)) if t == "not now")
        );
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            send(other.path(), Command::Lock),
            Err(ControlError::NoDaemon(_))
        ));
    }

    #[test]
    fn sockets_without_a_listener_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live_path = dir.path().join("live.sock");
        let _live = UnixListener::bind(&live_path).unwrap();
        let stale_path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale_path).unwrap());
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"x").unwrap();
        remove_stale_sockets(dir.path());
        assert!(live_path.exists());
        assert!(!stale_path.exists());
        assert!(other.exists());
    }
}
