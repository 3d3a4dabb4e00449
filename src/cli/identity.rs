//! Commands on an identity file: `recipient` prints who it is, `passwd` changes how it is
//! protected.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use zeroize::Zeroizing;

use smpfs::keys::Identity;

use super::output::{out, say};
use super::{load_identity, read_passphrase_file};

/// `smpfs recipient ID_FILE`: the public recipient, derived from the secret key (not from
/// the file's comment, which anyone could edit).
pub fn recipient(identity: &Path, passphrase_file: Option<&Path>) -> Result<()> {
    let identity = load_identity(identity, passphrase_file)?;
    out!("{}", identity.recipient())?;
    Ok(())
}

/// Where `passwd` gets the new passphrase: a file, no passphrase at all, or the terminal.
pub struct NewPassphrase {
    /// Its first line is the new passphrase.
    pub file: Option<PathBuf>,
    /// Store the secret without a passphrase.
    pub remove: bool,
}

/// `smpfs passwd ID_FILE`: opens the identity with its current passphrase (if it has
/// one), then replaces the file atomically with the same secret under the new one.
pub fn passwd(path: &Path, old_file: Option<&Path>, new: &NewPassphrase) -> Result<()> {
    let identity: Identity = load_identity(path, old_file)?;
    let passphrase = if new.remove {
        None
    } else if let Some(file) = &new.file {
        Some(read_passphrase_file(file)?)
    } else {
        let first = Zeroizing::new(rpassword::prompt_password("New passphrase: ")?);
        let again = Zeroizing::new(rpassword::prompt_password("Repeat new passphrase: ")?);
        if *first != *again {
            bail!("the passphrases differ; {} was not changed", path.display());
        }
        Some(first)
    };
    if passphrase.as_ref().is_some_and(|p| p.chars().count() < 8) {
        bail!(
            "passphrase too short: use at least 8 characters; {} was not changed",
            path.display()
        );
    }
    identity.replace(path, passphrase.as_deref().map(String::as_str))?;
    match passphrase {
        Some(_) => say!("{}: passphrase changed", path.display()),
        None => say!(
            "{}: passphrase removed; the secret key is now protected by the file's mode only",
            path.display()
        ),
    }
    Ok(())
}
