//! The de-identification key and the keyed mappings derived from it: UIDs to new UIDs and
//! Patient IDs to pseudonyms. The same key always gives the same outputs, so studies and
//! series stay linked across files and runs; without the key the mapping cannot be
//! reversed or recomputed.
//!
//! Key file: exactly 32 random bytes, created with mode 0600 on first use and never
//! overwritten; refused if group or others can access it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Bytes of a de-identification key.
pub const KEY_LEN: usize = 32;
const UID_CONTEXT: &str = "smpfs deid v1 uid mapping";
const PATIENT_CONTEXT: &str = "smpfs deid v1 patient pseudonym";
const KEY_ID_CONTEXT: &str = "smpfs deid v1 key id";
/// Prefix of every patient pseudonym.
pub const PSEUDONYM_PREFIX: &str = "SMPFS-";

/// Errors in loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymError {
    #[error("de-identification key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("de-identification key {path} must hold exactly 32 bytes, it holds {len}")]
    BadLength { path: PathBuf, len: u64 },
    #[error(
        "de-identification key {path} is accessible to group or others (mode {mode:o}): \
         run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The keyed mappings, derived from one 32-byte secret. Subkeys are zeroized on drop.
pub struct PseudonymKeys {
    uid: Zeroizing<[u8; 32]>,
    patient: Zeroizing<[u8; 32]>,
    id: [u8; 8],
}

impl PseudonymKeys {
    /// Derives the mapping keys from a secret.
    pub fn from_secret(secret: &[u8; KEY_LEN]) -> Self {
        let full_id = blake3::derive_key(KEY_ID_CONTEXT, secret);
        PseudonymKeys {
            uid: Zeroizing::new(blake3::derive_key(UID_CONTEXT, secret)),
            patient: Zeroizing::new(blake3::derive_key(PATIENT_CONTEXT, secret)),
            id: full_id[..8].try_into().expect("8 bytes"),
        }
    }

    /// Loads the key at `path`, or creates it (32 random bytes, mode 0600, fsynced) if there
    /// is none. Returns the keys and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), PseudonymError> {
        let io = |source| PseudonymError::Io {
            path: path.to_owned(),
            source,
        };
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                getrandom::getrandom(secret.as_mut()).expect("OS random number generator");
                file.write_all(secret.as_ref()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((Self::from_secret(&secret), true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::metadata(path).map_err(io)?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(PseudonymError::TooOpen {
                        path: path.to_owned(),
                        mode,
                    });
                }
                if meta.len() != KEY_LEN as u64 {
                    return Err(PseudonymError::BadLength {
                        path: path.to_owned(),
                        len: meta.len(),
                    });
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
                let len = bytes.len() as u64;
                let read: &[u8; KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| PseudonymError::BadLength {
                            path: path.to_owned(),
                            len,
                        })?;
                secret.copy_from_slice(read);
                Ok((Self::from_secret(&secret), false))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A public fingerprint of the key (16 hex digits), for reports: equal fingerprints
    /// mean the same mappings. It reveals nothing about the key.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }

    /// The new UID for `uid` (trailing NUL and space padding ignored): `2.25.` followed by
    /// the decimal value of a version-8 UUID made from a keyed hash, at most 44 characters.
    /// An empty UID stays empty.
    pub fn map_uid(&self, uid: &str) -> String {
        let uid = uid.trim_end_matches(['\0', ' ']);
        if uid.is_empty() {
            return String::new();
        }
        let hash = blake3::keyed_hash(&self.uid, uid.as_bytes());
        let mut bytes: [u8; 16] = hash.as_bytes()[..16].try_into().expect("16 bytes");
        bytes[6] = (bytes[6] & 0x0F) | 0x80; // UUID version 8 (RFC 9562)
        bytes[8] = (bytes[8] & 0x3F) | 0x80; // RFC 9562 variant
        format!("2.25.{}", u128::from_be_bytes(bytes))
    }

    /// The pseudonym for a Patient ID (surrounding spaces ignored): `SMPFS-` and 20
    /// upper-case hex digits of a keyed hash. An empty ID stays empty.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        let id = patient_id.trim_matches(['\0', ' ']);
        if id.is_empty() {
            return String::new();
        }
        let hash = blake3::keyed_hash(&self.patient, id.as_bytes());
        format!(
            "{PSEUDONYM_PREFIX}{}",
            hex::encode_upper(&hash.as_bytes()[..10])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> PseudonymKeys {
        PseudonymKeys::from_secret(&[byte; KEY_LEN])
    }

    #[test]
    fn uid_mapping_is_keyed_consistent_and_valid() {
        let a = keys(1);
        let uid = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
        let mapped = a.map_uid(uid);
        assert_eq!(mapped, a.map_uid(uid));
        assert_eq!(mapped, a.map_uid(&format!("{uid}\0")), "padding ignored");
        assert_ne!(
            mapped,
            a.map_uid("1.3.6.1.4.1.5962.1.2.1.20040119072730.12323")
        );
        assert_ne!(mapped, keys(2).map_uid(uid));
        assert!(mapped.starts_with("2.25."));
        assert!(mapped.len() <= 44);
        let digits = &mapped[5..];
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert!(!digits.starts_with('0'));
        let n: u128 = digits.parse().unwrap();
        assert_eq!((n >> 76) & 0xF, 8, "UUID version 8");
        assert_eq!((n >> 62) & 0b11, 0b10, "UUID variant");
        assert_eq!(a.map_uid(""), "");
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = keys(1);
        let p = a.pseudonym("PAT-0001");
        assert_eq!(p, a.pseudonym(" PAT-0001 "));
        assert_ne!(p, a.pseudonym("PAT-0002"));
        assert_ne!(p, keys(2).pseudonym("PAT-0001"));
        assert!(p.starts_with(PSEUDONYM_PREFIX));
        assert_eq!(p.len(), PSEUDONYM_PREFIX.len() + 20);
        assert!(!p.contains("PAT"));
        assert_eq!(a.pseudonym("  "), "");
        assert_ne!(a.pseudonym("x"), a.map_uid("x"), "domains are separated");
    }

    #[test]
    fn key_file_is_created_0600_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deid.key");
        let (first, created) = PseudonymKeys::load_or_create(&path).unwrap();
        assert!(created);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let (again, created) = PseudonymKeys::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.key_id(), again.key_id());
        assert_eq!(first.pseudonym("p"), again.pseudonym("p"));
        let other = dir.path().join("other.key");
        let (different, _) = PseudonymKeys::load_or_create(&other).unwrap();
        assert_ne!(first.key_id(), different.key_id());
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open.key");
        std::fs::write(&open, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PseudonymKeys::load_or_create(&open),
            Err(PseudonymError::TooOpen { mode: 0o644, .. })
        ));
        let short = dir.path().join("short.key");
        std::fs::write(&short, [7u8; 16]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            PseudonymKeys::load_or_create(&short),
            Err(PseudonymError::BadLength { len: 16, .. })
        ));
    }
}
