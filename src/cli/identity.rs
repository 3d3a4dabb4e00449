//! Commands on an identity file: `keygen` makes one, `recipient` prints who it is, `passwd`
//! changes how it is protected.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use smpfs::custody::KeySpec;
use smpfs::keys::Identity;

use super::output::{out, say};
use super::{load_identity, passphrase_source, read_passphrase_file};

/// How `keygen` protects the new secret.
pub enum Protection {
    /// Only by the file's mode.
    None,
    /// Sealed with a passphrase: from this file, or asked twice on the terminal.
    Passphrase(Option<PathBuf>),
    /// Wrapped by a key a KMS or an HSM holds; the secret is never written.
    Custodian(KeySpec),
}

impl Protection {
    /// From `keygen`'s flags (clap lets at most one kind through).
    pub fn from_args(
        prompt: bool,
        passphrase_file: Option<PathBuf>,
        kms: Option<String>,
        pkcs11: Option<String>,
    ) -> Result<Self> {
        Ok(match (kms, pkcs11) {
            (Some(key), _) if key.starts_with("aws:") => Protection::Custodian(key.parse()?),
            (Some(key), _) => bail!("--kms takes `aws:ARN_OR_ALIAS`, not `{key}`"),
            (None, Some(uri)) if uri.starts_with("pkcs11:") => Protection::Custodian(uri.parse()?),
            (None, Some(uri)) => bail!("--pkcs11 takes a `pkcs11:` URI, not `{uri}`"),
            (None, None) if prompt || passphrase_file.is_some() => {
                Protection::Passphrase(passphrase_file)
            }
            (None, None) => Protection::None,
        })
    }
}

/// `smpfs keygen --out ID_FILE`: a new identity, written 0600 and never over another file;
/// prints its recipient.
pub fn keygen(out: &Path, protection: &Protection) -> Result<()> {
    let passphrase = match protection {
        Protection::Passphrase(Some(file)) => Some(read_passphrase_file(file)?),
        Protection::Passphrase(None) => {
            let first = Zeroizing::new(rpassword::prompt_password("New passphrase: ")?);
            let again = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
            if *first != *again {
                bail!("the passphrases differ; nothing was written");
            }
            Some(first)
        }
        Protection::None | Protection::Custodian(_) => None,
    };
    if passphrase.as_ref().is_some_and(|p| p.chars().count() < 8) {
        bail!("passphrase too short: use at least 8 characters");
    }
    if out.exists() {
        bail!(
            "{}: already exists; refusing to overwrite an identity",
            out.display()
        );
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let identity = Identity::generate();
    match protection {
        Protection::Custodian(spec) => {
            let wrapped = smpfs::custody::wrap(&identity, spec, &mut passphrase_source(out, None))
                .with_context(|| {
                    format!("wrapping the new identity with {spec}; nothing was written")
                })?;
            identity.save_new_wrapped(out, &wrapped)?;
            say!(
                "wrote identity to {} (its secret is wrapped by {}; every load asks for it)",
                out.display(),
                wrapped.custody
            );
        }
        _ => {
            identity.save_new(out, passphrase.as_deref().map(String::as_str))?;
            say!("wrote identity to {} (keep it private)", out.display());
        }
    }
    out!("{}", identity.recipient())?;
    Ok(())
}

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
    if let Some(custody) = identity.custody() {
        bail!(
            "{}: the secret is wrapped by {custody} and has no passphrase; access to it is \
             managed there. {} was not changed",
            path.display(),
            path.display()
        );
    }
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
