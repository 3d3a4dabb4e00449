//! An identity's secret wrapped by a key that never leaves a KMS or an HSM. The identity
//! file holds only the wrapped secret; the `custody` module wraps and unwraps it.
//!
//! Payload (Bech32, HRP `smpfs-wrapped-key-`): version 1 ‖ custody kind (1 AWS KMS, 2
//! PKCS#11) ‖ recipient (32) ‖ key reference length (u16 LE) ‖ key reference (UTF-8: the
//! KMS key ARN, or the PKCS#11 URI without any PIN value) ‖ wrapped length (u16 LE) ‖
//! wrapped secret. The custodian binds the recipient to the wrapped secret (KMS encryption
//! context, AES-GCM associated data), so neither can be swapped unnoticed.

use std::fmt;

use super::Recipient;

/// Who holds the key that wraps an identity's secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Custody {
    /// An AWS KMS key, by its ARN (which names the region).
    AwsKms(String),
    /// A non-extractable AES key in a PKCS#11 token, by its RFC 7512 URI (never a PIN value).
    Pkcs11(String),
}

impl Custody {
    /// Short name of the kind of custodian, for the audit log (`aws-kms`, `pkcs11`).
    pub fn kind(&self) -> &'static str {
        match self {
            Custody::AwsKms(_) => "aws-kms",
            Custody::Pkcs11(_) => "pkcs11",
        }
    }

    /// The key's reference: the KMS key ARN or the PKCS#11 URI.
    pub fn key(&self) -> &str {
        match self {
            Custody::AwsKms(key) | Custody::Pkcs11(key) => key,
        }
    }
}

impl fmt::Display for Custody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Custody::AwsKms(arn) => write!(f, "AWS KMS key {arn}"),
            Custody::Pkcs11(uri) => write!(f, "PKCS#11 key {uri}"),
        }
    }
}

/// A secret as a custodian wrapped it, with the recipient it must unwrap to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedSecret {
    /// Where the wrapping key is.
    pub custody: Custody,
    /// The public recipient of the wrapped secret.
    pub recipient: Recipient,
    /// The custodian's ciphertext (opaque here).
    pub blob: Vec<u8>,
}

const VERSION: u8 = 1;
const AWS_KMS: u8 = 1;
const PKCS11: u8 = 2;

impl WrappedSecret {
    /// The payload bytes described in the module documentation.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, key) = match &self.custody {
            Custody::AwsKms(key) => (AWS_KMS, key),
            Custody::Pkcs11(key) => (PKCS11, key),
        };
        let mut out = vec![VERSION, kind];
        out.extend_from_slice(&self.recipient.to_bytes());
        for field in [key.as_bytes(), &self.blob] {
            let len = u16::try_from(field.len()).expect("key reference and blob under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    /// Parses a payload; `None` if it is not one this version writes.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let (&[version, kind], rest) = payload.split_first_chunk::<2>()?;
        if version != VERSION {
            return None;
        }
        let (recipient, rest) = rest.split_first_chunk::<32>()?;
        let (key, rest) = length_prefixed(rest)?;
        let (blob, rest) = length_prefixed(rest)?;
        if !rest.is_empty() || blob.is_empty() {
            return None;
        }
        let key = std::str::from_utf8(key).ok()?.to_owned();
        let custody = match kind {
            AWS_KMS => Custody::AwsKms(key),
            PKCS11 => Custody::Pkcs11(key),
            _ => return None,
        };
        Some(WrappedSecret {
            custody,
            recipient: Recipient::from(*recipient),
            blob: blob.to_vec(),
        })
    }
}

fn length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use zeroize::Zeroizing;

    use super::super::{Identity, KeyError};
    use super::*;

    /// A stand-in custodian: XOR with a fixed pad, bound to the recipient like the real ones.
    fn toy_wrap(identity: &Identity) -> WrappedSecret {
        let recipient = identity.recipient();
        let blob = identity
            .secret()
            .to_bytes()
            .iter()
            .zip(recipient.to_bytes())
            .map(|(s, r)| s ^ r ^ 0x5a)
            .collect();
        WrappedSecret {
            custody: Custody::AwsKms("arn:aws:kms:eu-west-1:111122223333:key/k".into()),
            recipient,
            blob,
        }
    }

    fn toy_unwrap(wrapped: &WrappedSecret) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        for (i, (b, r)) in wrapped
            .blob
            .iter()
            .zip(wrapped.recipient.to_bytes())
            .enumerate()
        {
            secret[i] = b ^ r ^ 0x5a;
        }
        Ok(secret)
    }

    #[test]
    fn payload_round_trips_and_rejects_damage() {
        let wrapped = toy_wrap(&Identity::generate());
        let payload = wrapped.encode();
        assert_eq!(WrappedSecret::decode(&payload), Some(wrapped.clone()));
        for cut in 0..payload.len() {
            assert_eq!(WrappedSecret::decode(&payload[..cut]), None, "cut at {cut}");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(WrappedSecret::decode(&longer), None);
        let mut unknown_kind = payload;
        unknown_kind[1] = 9;
        assert_eq!(WrappedSecret::decode(&unknown_kind), None);
    }

    #[test]
    fn a_wrapped_identity_file_holds_no_secret_and_loads_through_its_custodian() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let identity = Identity::generate();
        let wrapped = toy_wrap(&identity);
        identity.save_new_wrapped(&path, &wrapped).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("SMPFS-WRAPPED-KEY-1"), "{text}");
        assert!(text.contains(&identity.recipient().to_string()));
        let secret_line = identity.to_file_text(None);
        let secret_line = secret_line.lines().last().unwrap();
        assert!(!text.contains(secret_line));

        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::NeedsCustodian { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("AWS KMS key arn:aws:kms:eu-west-1"));

        let mut no_passphrase = || -> Result<Zeroizing<String>, KeyError> {
            unreachable!("no passphrase is asked for a wrapped identity")
        };
        let loaded = Identity::load_with(&path, &mut no_passphrase, &mut toy_unwrap).unwrap();
        assert_eq!(loaded.recipient(), identity.recipient());
        assert_eq!(loaded.custody(), Some(&wrapped.custody));
    }

    #[test]
    fn a_custodian_returning_another_key_is_refused() {
        let identity = Identity::generate();
        let wrapped = toy_wrap(&identity);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        identity.save_new_wrapped(&path, &wrapped).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut other = |_: &WrappedSecret| Ok(Zeroizing::new([3u8; 32]));
        let err =
            Identity::from_file_text(&text, Path::new("id"), None, Some(&mut other)).unwrap_err();
        assert!(matches!(err, KeyError::WrongUnwrappedKey { .. }), "{err}");
    }
}
