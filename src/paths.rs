//! Where a user's own state goes when no option says: the XDG state directory.

use std::path::PathBuf;

/// `$XDG_STATE_HOME`, else `$HOME/.local/state`, else the home directory of the real user
/// in the password database (mount(8) runs a user mount's helper with neither variable).
pub fn user_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
            Some(user.dir).filter(|d| d.is_dir())
        })?;
    Some(home.join(".local/state"))
}
