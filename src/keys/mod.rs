//! Workstation identities (X25519 secret keys) and recipients (their public keys).
//!
//! Text forms, both Bech32 with a checksum so a mistyped key is caught:
//! - recipient: `smpfs1…` (lower case), safe to share, put on the command line of `seal`;
//! - identity file: comment lines starting with `#`, then one line holding the secret: plain
//!   (`SMPFS-SECRET-KEY-1…`), sealed with a passphrase (`SMPFS-ENCRYPTED-KEY-1…`), or
//!   wrapped by a key held in a KMS or an HSM (`SMPFS-WRAPPED-KEY-1…`, see [`WrappedSecret`]).
//!
//! An identity file must not be readable by group or others; loading refuses it otherwise.
//! A loaded secret lives in its own locked page ([`locked::LockedSecret`]).

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32, Hrp};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

mod locked;
mod passphrase;
mod wrapped;

pub use wrapped::{Custody, WrappedSecret};

const RECIPIENT_HRP: &str = "smpfs";
const IDENTITY_HRP: &str = "smpfs-secret-key-";
const ENCRYPTED_HRP: &str = "smpfs-encrypted-key-";
const WRAPPED_HRP: &str = "smpfs-wrapped-key-";

/// Largest payload of an identity line: a wrapped secret with its key reference.
const MAX_PAYLOAD: usize = 600;

/// Supplies a passphrase when an identity file needs one (prompt, file, credential).
pub type PassphraseSource<'a> = &'a mut dyn FnMut() -> Result<Zeroizing<String>, KeyError>;

/// Unwraps a secret held by a KMS or an HSM (the `custody` module), when an identity file
/// holds a wrapped one.
pub type Unwrapper<'a> = &'a mut dyn FnMut(&WrappedSecret) -> Result<Zeroizing<[u8; 32]>, KeyError>;

/// Errors from creating, parsing or loading keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid smpfs recipient (expected `smpfs1…`): {0}")]
    BadRecipient(String),
    #[error(
        "a secret key was given where a recipient belongs (not printed here); give the \
         public recipient instead: `smpfs keygen` printed it, and it starts with `smpfs1`"
    )]
    SecretKeyAsRecipient,
    #[error("{path}: is a directory, not an identity file")]
    NotAFile { path: PathBuf },
    #[error("{path}: not a valid smpfs identity file (expected one SMPFS-SECRET-KEY-1… line)")]
    BadIdentity { path: PathBuf },
    #[error(
        "{path}: identity file is accessible by group or others (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: wrong passphrase (or the identity file was altered)")]
    WrongPassphrase { path: PathBuf },
    #[error("{path}: identity is protected by a passphrase; give one (passphrase_file=, a systemd credential, or a terminal)")]
    NeedsPassphrase { path: PathBuf },
    #[error("cannot read a passphrase: {0}")]
    NoPassphrase(String),
    #[error("{path}: identity is wrapped by {custody}, which this command cannot reach")]
    NeedsCustodian { path: PathBuf, custody: Custody },
    #[error(
        "{path}: the key unwrapped by {custody} is not this identity's (the file names \
         recipient {expected}); the file was altered or its wrapped key swapped"
    )]
    WrongUnwrappedKey {
        path: PathBuf,
        custody: Custody,
        expected: Recipient,
    },
    /// The KMS or HSM refused or failed; the message names it and what to do.
    #[error("{0}")]
    Custodian(String),
    #[error("{path}: already exists; refusing to overwrite an identity")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A public key that files can be sealed to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Recipient(PublicKey);

impl Recipient {
    /// The raw X25519 public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// The 32 raw bytes of the public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl From<[u8; 32]> for Recipient {
    fn from(bytes: [u8; 32]) -> Self {
        Recipient(PublicKey::from(bytes))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse(RECIPIENT_HRP).expect("valid HRP");
        let text = bech32::encode::<Bech32>(hrp, self.0.as_bytes()).expect("32 bytes encode");
        f.write_str(&text)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

impl FromStr for Recipient {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let upper = text.to_uppercase();
        if upper.starts_with("SMPFS-SECRET-KEY-") || upper.starts_with("SMPFS-ENCRYPTED-KEY-") {
            return Err(KeyError::SecretKeyAsRecipient);
        }
        let bad = || KeyError::BadRecipient(excerpt(text));
        let (hrp, data) = bech32::decode(text).map_err(|_| bad())?;
        if hrp.to_lowercase() != RECIPIENT_HRP {
            return Err(bad());
        }
        let bytes: [u8; 32] = data.try_into().map_err(|_| bad())?;
        Ok(Recipient::from(bytes))
    }
}

/// The start of a rejected recipient text, for its error: enough to recognise a typo,
/// never a whole pasted secret.
fn excerpt(text: &str) -> String {
    const SHOWN: usize = 12;
    let start: String = text.chars().take(SHOWN).collect();
    if text.chars().count() > SHOWN {
        format!("{start:?}… ({} characters)", text.chars().count())
    } else {
        format!("{start:?}")
    }
}

/// A workstation's secret key. Zeroized when dropped; never printed by `Debug`. The key
/// lives in one locked page for its whole life, so moving an `Identity` around never
/// leaves stale copies of the secret behind, and it is never swapped or dumped.
pub struct Identity {
    secret: locked::LockedSecret,
    /// Derived from the secret once: every stanza opened needs it.
    recipient: Recipient,
    custody: Option<Custody>,
}

impl Identity {
    /// A new random identity from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(bytes.as_mut()).expect("OS random number generator");
        Identity::from(*bytes)
    }

    /// Who holds the key that unwrapped this identity's secret, if a KMS or HSM did.
    pub fn custody(&self) -> Option<&Custody> {
        self.custody.as_ref()
    }

    /// Locks the secret's page again; a forked child (the mount daemon) must call this,
    /// because locks are not inherited across `fork`.
    pub fn relock(&self) -> std::io::Result<()> {
        self.secret.relock()
    }

    /// The identity of `bytes` (moved into a locked page), unwrapped by `custody` if a KMS
    /// or HSM held it.
    fn with_custody(bytes: &[u8; 32], custody: Option<Custody>) -> Self {
        let secret = locked::LockedSecret::new(bytes);
        let recipient = Recipient(PublicKey::from(secret.secret()));
        Identity {
            secret,
            recipient,
            custody,
        }
    }

    /// The recipient that files must be sealed to for this identity to open them.
    pub fn recipient(&self) -> Recipient {
        self.recipient
    }

    /// X25519 of this identity's secret with `public` (an ephemeral key from a stanza);
    /// `None` if `public` is of low order (the shared secret would be all zeros). Computed
    /// by AWS-LC's X25519 straight from the locked page: no copy of the secret is made, and
    /// no public key is derived (AWS-LC's key objects derive one: 32 µs against 24 µs).
    pub(crate) fn agree(&self, public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let mut shared = Zeroizing::new([0u8; 32]);
        // SAFETY: X25519 reads 32 bytes from each input and writes 32 to the output; all
        // three are 32-byte arrays that outlive the call. It returns 0 for a low-order point.
        let accepted = unsafe {
            aws_lc_sys::X25519(
                shared.as_mut_ptr(),
                self.secret().as_bytes().as_ptr(),
                public.as_ptr(),
            )
        };
        (accepted == 1).then_some(shared)
    }

    /// The X25519 secret, for the format's key agreement only.
    pub(crate) fn secret(&self) -> &StaticSecret {
        self.secret.secret()
    }

    /// The identity file's text: comments with the recipient, then the secret line, sealed
    /// under `passphrase` if one is given.
    fn to_file_text(&self, passphrase: Option<&str>) -> Zeroizing<String> {
        let secret_bytes = Zeroizing::new(self.secret().to_bytes());
        let (hrp, payload, what) = match passphrase {
            Some(p) => (
                ENCRYPTED_HRP,
                passphrase::seal(
                    &secret_bytes,
                    p,
                    passphrase::DEFAULT_M_KIB,
                    passphrase::DEFAULT_T,
                ),
                "X25519 secret key sealed with a passphrase: argon2id + AES-256-GCM-SIV",
            ),
            None => (
                IDENTITY_HRP,
                Zeroizing::new(secret_bytes.to_vec()),
                "X25519 secret key",
            ),
        };
        let encoded = Zeroizing::new(
            bech32::encode_upper::<Bech32>(Hrp::parse(hrp).expect("valid HRP"), &payload)
                .expect("short payload encodes"),
        );
        Zeroizing::new(format!(
            "# smpfs identity ({what}). Keep it private: mode 0600.\n\
             # recipient: {}\n{}\n",
            self.recipient(),
            encoded.as_str()
        ))
    }

    /// Parses the text of an identity file (`path` is only used in errors); asks
    /// `passphrase` only if the file is sealed with one, and `unwrap` only if it holds a
    /// wrapped secret, whose unwrapped key must match the recipient the file names.
    pub fn from_file_text(
        text: &str,
        path: &Path,
        passphrase: Option<PassphraseSource>,
        unwrap: Option<Unwrapper>,
    ) -> Result<Self, KeyError> {
        let bad = || KeyError::BadIdentity {
            path: path.to_owned(),
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(bad)?;
        if lines.next().is_some() {
            return Err(bad());
        }
        // Decode straight into one fixed buffer: no growing Vec leaves copies on the heap.
        let checked = CheckedHrpstring::new::<Bech32>(line).map_err(|_| bad())?;
        let mut payload = Zeroizing::new([0u8; MAX_PAYLOAD]);
        let mut len = 0;
        for byte in checked.byte_iter() {
            *payload.get_mut(len).ok_or_else(bad)? = byte;
            len += 1;
        }
        let hrp = checked.hrp().to_lowercase();
        let secret = match hrp.as_str() {
            IDENTITY_HRP if len == 32 => {
                let mut secret = Zeroizing::new([0u8; 32]);
                secret.copy_from_slice(&payload[..32]);
                secret
            }
            ENCRYPTED_HRP if len == passphrase::PAYLOAD_LEN => {
                let get = passphrase.ok_or_else(|| KeyError::NeedsPassphrase {
                    path: path.to_owned(),
                })?;
                let phrase = get()?;
                passphrase::open(&payload[..len], &phrase).map_err(|e| match e {
                    passphrase::OpenError::WrongPassphrase => KeyError::WrongPassphrase {
                        path: path.to_owned(),
                    },
                    passphrase::OpenError::Malformed => bad(),
                })?
            }
            WRAPPED_HRP => {
                let wrapped = WrappedSecret::decode(&payload[..len]).ok_or_else(bad)?;
                let unwrap = unwrap.ok_or_else(|| KeyError::NeedsCustodian {
                    path: path.to_owned(),
                    custody: wrapped.custody.clone(),
                })?;
                let secret = unwrap(&wrapped)?;
                let identity = Identity::with_custody(&secret, Some(wrapped.custody.clone()));
                crate::harden::scrub_stack();
                if identity.recipient() != wrapped.recipient {
                    return Err(KeyError::WrongUnwrappedKey {
                        path: path.to_owned(),
                        custody: wrapped.custody,
                        expected: wrapped.recipient,
                    });
                }
                return Ok(identity);
            }
            _ => return Err(bad()),
        };
        let identity = Identity::from(*secret);
        crate::harden::scrub_stack();
        Ok(identity)
    }

    /// Loads an identity file, refusing one that group or others can access. A
    /// passphrase-protected file fails with [`KeyError::NeedsPassphrase`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_file_text(&read_private(path)?, path, None, None)
    }

    /// Loads an identity file like [`Identity::load`], asking `passphrase` if it is sealed
    /// and `unwrap` if its secret is held by a KMS or an HSM.
    pub fn load_with(
        path: &Path,
        passphrase: PassphraseSource,
        unwrap: Unwrapper,
    ) -> Result<Self, KeyError> {
        Self::from_file_text(&read_private(path)?, path, Some(passphrase), Some(unwrap))
    }

    /// Whether the identity file at `path` is sealed with a passphrase.
    pub fn is_passphrase_protected(path: &Path) -> Result<bool, KeyError> {
        Ok(read_private(path)?
            .to_uppercase()
            .contains("SMPFS-ENCRYPTED-KEY-1"))
    }

    /// Writes this identity to a new file with mode 0600; never overwrites. With a
    /// passphrase the secret is sealed under it (argon2id, 64 MiB, 3 passes).
    pub fn save_new(&self, path: &Path, passphrase: Option<&str>) -> Result<(), KeyError> {
        let text = self.to_file_text(passphrase);
        write_new(path, &text)
    }

    /// Writes a new 0600 identity file (never overwriting) holding only `wrapped`, which
    /// must wrap this identity's secret: the secret itself is never written.
    pub fn save_new_wrapped(&self, path: &Path, wrapped: &WrappedSecret) -> Result<(), KeyError> {
        let encoded = bech32::encode_upper::<Bech32>(
            Hrp::parse(WRAPPED_HRP).expect("valid HRP"),
            &wrapped.encode(),
        )
        .map_err(|_| {
            KeyError::Custodian("the wrapped key is too long for an identity file".into())
        })?;
        let text = Zeroizing::new(format!(
            "# smpfs identity (X25519 secret key wrapped by {}). Keep it private: mode 0600.\n\
             # recipient: {}\n{encoded}\n",
            wrapped.custody,
            self.recipient(),
        ));
        write_new(path, &text)
    }
}

/// Creates `path` with mode 0600 (never overwriting) and writes `text` durably.
fn write_new(path: &Path, text: &str) -> Result<(), KeyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => KeyError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

impl Identity {
    /// Replaces the identity file at `path` with this identity, sealed under `passphrase`
    /// if one is given: the new text is written to a 0600 file beside it, fsynced, and
    /// renamed over it, so a failure at any point leaves the old file whole.
    pub fn replace(&self, path: &Path, passphrase: Option<&str>) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut partial = tempfile::Builder::new()
            .prefix(".smpfs-identity.")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(io)?;
        let text = self.to_file_text(passphrase);
        partial.write_all(text.as_bytes()).map_err(io)?;
        partial.as_file().sync_all().map_err(io)?;
        partial.persist(path).map_err(|e| io(e.error))?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

/// Reads an identity file, refusing one that group or others can access.
fn read_private(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(io)?;
    if metadata.is_dir() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(Zeroizing::new(fs::read_to_string(path).map_err(io)?))
}

impl From<[u8; 32]> for Identity {
    fn from(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        Identity::with_custody(&bytes, None)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(recipient {})", self.recipient())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS-LC's X25519 gives dalek's shared secret for ordinary keys, the cached recipient
    /// is the secret's public key, and a low-order point is refused.
    #[test]
    fn agreement_matches_dalek_and_refuses_low_order_points() {
        for _ in 0..16 {
            let id = Identity::generate();
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).unwrap();
            let ephemeral = StaticSecret::from(bytes);
            let public = PublicKey::from(&ephemeral);
            let ours = id.agree(public.as_bytes()).unwrap();
            let theirs = ephemeral.diffie_hellman(id.recipient().public_key());
            assert_eq!(*ours, *theirs.as_bytes());
            assert_eq!(id.recipient().public_key(), &PublicKey::from(id.secret()));
        }
        let id = Identity::generate();
        assert!(id.agree(&[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(id.agree(&one).is_none(), "the point of order 1");
    }

    #[test]
    fn recipient_text_round_trips_and_rejects_typos() {
        let id = Identity::generate();
        let text = id.recipient().to_string();
        assert!(text.starts_with("smpfs1"));
        assert_eq!(text.parse::<Recipient>().unwrap(), id.recipient());
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        assert!(String::from_utf8(typo)
            .unwrap()
            .parse::<Recipient>()
            .is_err());
        assert!("age1xyz".parse::<Recipient>().is_err());
    }

    #[test]
    fn a_secret_key_given_as_recipient_is_named_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        Identity::generate().save_new(&path, None).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let secret = text.lines().find(|l| !l.starts_with('#')).unwrap();
        for given in [
            secret.to_owned(),
            secret.to_lowercase(),
            format!("  {secret}\n"),
        ] {
            let err = given.parse::<Recipient>().unwrap_err();
            assert!(matches!(err, KeyError::SecretKeyAsRecipient));
            let message = err.to_string();
            assert!(message.contains("secret key"), "{message}");
            assert!(!message.contains(&secret[20..30]), "{message}");
        }
        let long_garbage = "x".repeat(200);
        let message = long_garbage.parse::<Recipient>().unwrap_err().to_string();
        assert!(
            message.contains("200 characters") && message.len() < 120,
            "{message}"
        );
    }

    #[test]
    fn a_directory_given_as_identity_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::NotAFile { .. }), "{err}");
        assert!(!err.to_string().contains("chmod"));
    }

    #[test]
    fn identity_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let id = Identity::generate();
        id.save_new(&path, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.recipient(), id.recipient());
        assert!(matches!(
            id.save_new(&path, None),
            Err(KeyError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn identity_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        Identity::generate().save_new(&path, None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn malformed_identity_files_are_rejected() {
        let p = Path::new("x");
        for text in [
            "",
            "# only a comment\n",
            "SMPFS-SECRET-KEY-1QQQQ\n",
            "smpfs1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\n",
        ] {
            assert!(
                Identity::from_file_text(text, p, None, None).is_err(),
                "{text:?}"
            );
        }
        let id = Identity::generate();
        let twice = format!("{}{}", *id.to_file_text(None), *id.to_file_text(None));
        assert!(Identity::from_file_text(&twice, p, None, None).is_err());
    }

    #[test]
    fn passphrase_protected_identity_needs_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let id = Identity::generate();
        id.save_new(&path, Some("s3cret phrase")).unwrap();
        assert!(Identity::is_passphrase_protected(&path).unwrap());
        assert!(!fs::read_to_string(&path)
            .unwrap()
            .contains("SMPFS-SECRET-KEY"));
        assert!(matches!(
            Identity::load(&path),
            Err(KeyError::NeedsPassphrase { .. })
        ));
        let phrase = |p: &'static str| move || Ok(Zeroizing::new(p.to_owned()));
        let mut no_custodian = |_: &WrappedSecret| -> Result<Zeroizing<[u8; 32]>, KeyError> {
            unreachable!("not a wrapped identity")
        };
        let loaded =
            Identity::load_with(&path, &mut phrase("s3cret phrase"), &mut no_custodian).unwrap();
        assert_eq!(loaded.recipient(), id.recipient());
        assert!(matches!(
            Identity::load_with(&path, &mut phrase("wrong"), &mut no_custodian),
            Err(KeyError::WrongPassphrase { .. })
        ));
    }
}
