//! Process hardening, done first in every command, before any key or plaintext is loaded.

use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};

/// Errors from hardening the process.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("cannot make the process non-dumpable: {0}")]
    Dumpable(#[source] nix::Error),
    #[error("cannot disable core dumps: {0}")]
    CoreLimit(#[source] nix::Error),
}

/// Makes the process non-dumpable (no core files, no ptrace attach by other users, no
/// reading of /proc/PID/mem) and sets RLIMIT_CORE to 0.
pub fn harden_process() -> Result<(), HardenError> {
    prctl::set_dumpable(false).map_err(HardenError::Dumpable)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardenError::CoreLimit)?;
    Ok(())
}

/// Overwrites the 64 KiB of stack below the caller with zeros, wiping what returned
/// callees left there (key bytes passed by value, for example). Call it right after a
/// function that handled secrets returns.
#[inline(never)]
pub fn scrub_stack() {
    let mut scratch = [0u8; 64 << 10];
    zeroize::Zeroize::zeroize(&mut scratch[..]);
    std::hint::black_box(&scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_takes_effect() {
        harden_process().unwrap();
        assert!(!prctl::get_dumpable().unwrap());
        assert_eq!(
            nix::sys::resource::getrlimit(Resource::RLIMIT_CORE).unwrap(),
            (0, 0)
        );
    }
}
