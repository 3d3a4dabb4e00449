//! Identities held centrally: the secret is wrapped by a key that never leaves an AWS KMS
//! ([`kms`]) or a PKCS#11 token ([`pkcs11`]), and unwrapped into locked memory each time an
//! identity is loaded (mount, `unlock`, `cat`, `share` …). Disabling the KMS key, denying the
//! caller, or removing the token revokes the workstation at its next load.
//!
//! The identity file holds a [`WrappedSecret`] (see `keys`); both custodians bind the
//! recipient to the wrapped bytes, so a swapped file fails to unwrap.

mod kms;
mod pkcs11;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::keys::{Custody, Identity, KeyError, PassphraseSource, WrappedSecret};

pub use pkcs11::Pkcs11Uri;

/// Why a key held by a KMS or an HSM could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("unknown key custodian `{0}`: give `aws:ARN_OR_ALIAS` or `pkcs11:URI`")]
    UnknownScheme(String),
    #[error("AWS KMS key {key} not found in region {region}: check the alias or key id, and the region (AWS_REGION, or give the key's ARN, which names it)")]
    KmsNotFound { key: String, region: String },
    #[error("AWS KMS key {key} is {state}: this workstation's access was revoked centrally; ask the key's administrator")]
    KmsKeyNotEnabled { key: String, state: String },
    #[error("AWS KMS refused {operation} with key {key}: access denied for this caller ({message}); access may have been revoked centrally")]
    KmsAccessDenied {
        operation: &'static str,
        key: String,
        message: String,
    },
    #[error("AWS KMS key {key} did not open the wrapped secret: the identity file was altered or belongs to another key")]
    KmsWrongCiphertext { key: String },
    #[error("no AWS region: set AWS_REGION, or give the key's full ARN (it names the region)")]
    KmsNoRegion,
    #[error("AWS KMS {operation} with key {key} failed: {message}")]
    Kms {
        operation: &'static str,
        key: String,
        message: String,
    },
    #[error("not a PKCS#11 URI `{uri}`: {why} (e.g. `pkcs11:token=NAME;object=smpfs?module-path=/usr/lib/softhsm/libsofthsm2.so`)")]
    BadPkcs11Uri { uri: String, why: &'static str },
    #[error("cannot load PKCS#11 module {module}: {message}")]
    Pkcs11Module { module: String, message: String },
    #[error("no PKCS#11 token labelled `{token}` in {module} (tokens present: {present})")]
    Pkcs11NoToken {
        token: String,
        module: String,
        present: String,
    },
    #[error("wrong PIN for PKCS#11 token `{token}`")]
    Pkcs11WrongPin { token: String },
    #[error("the PIN of PKCS#11 token `{token}` is locked after too many wrong tries; its security officer must reset it")]
    Pkcs11PinLocked { token: String },
    #[error("no key labelled `{object}` in PKCS#11 token `{token}`")]
    Pkcs11NoKey { token: String, object: String },
    #[error("{count} keys labelled `{object}` in PKCS#11 token `{token}`: give a unique label")]
    Pkcs11AmbiguousKey {
        token: String,
        object: String,
        count: usize,
    },
    #[error("the key `{object}` in PKCS#11 token `{token}` did not open the wrapped secret: the identity file was altered or the key was replaced")]
    Pkcs11WrongCiphertext { token: String, object: String },
    #[error("PKCS#11 {operation} on token `{token}` failed: {message}")]
    Pkcs11 {
        operation: &'static str,
        token: String,
        message: String,
    },
    #[error("cannot read the PKCS#11 PIN: {0}")]
    Pin(String),
}

/// A key that can hold an identity, as `keygen --kms`/`--pkcs11` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// An AWS KMS key: key id, key ARN, `alias/NAME` or alias ARN.
    AwsKms(String),
    /// A key in a PKCS#11 token (created on first use by `keygen`).
    Pkcs11(Pkcs11Uri),
}

impl FromStr for KeySpec {
    type Err = CustodyError;

    /// `aws:ARN_OR_ALIAS` or a `pkcs11:` URI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(key) = s.strip_prefix("aws:") {
            if key.is_empty() {
                return Err(CustodyError::UnknownScheme(s.to_owned()));
            }
            Ok(KeySpec::AwsKms(key.to_owned()))
        } else if s.starts_with("pkcs11:") {
            Ok(KeySpec::Pkcs11(s.parse()?))
        } else {
            Err(CustodyError::UnknownScheme(s.to_owned()))
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::AwsKms(key) => write!(f, "aws:{key}"),
            KeySpec::Pkcs11(uri) => write!(f, "{uri}"),
        }
    }
}

/// Wraps `identity`'s secret with the key `spec` names, bound to its recipient. A PKCS#11
/// key is created in the token if none has the label yet; `pin` is asked only when the URI
/// gives no PIN.
pub fn wrap(
    identity: &Identity,
    spec: &KeySpec,
    pin: PassphraseSource,
) -> Result<WrappedSecret, CustodyError> {
    let secret = Zeroizing::new(identity.secret().to_bytes());
    let recipient = identity.recipient();
    let (custody, blob) = match spec {
        KeySpec::AwsKms(key) => {
            let (arn, blob) = kms::wrap(key, &secret, &recipient)?;
            (Custody::AwsKms(arn), blob)
        }
        KeySpec::Pkcs11(uri) => {
            let blob = pkcs11::wrap(uri, &secret, &recipient, pin)?;
            (Custody::Pkcs11(uri.to_string()), blob)
        }
    };
    crate::harden::scrub_stack();
    Ok(WrappedSecret {
        custody,
        recipient,
        blob,
    })
}

/// Unwraps a secret with the key its custodian holds; `pin` as for [`wrap`].
pub fn unwrap(
    wrapped: &WrappedSecret,
    pin: PassphraseSource,
) -> Result<Zeroizing<[u8; 32]>, CustodyError> {
    let secret = match &wrapped.custody {
        Custody::AwsKms(arn) => kms::unwrap(arn, &wrapped.blob, &wrapped.recipient)?,
        Custody::Pkcs11(uri) => {
            pkcs11::unwrap(&uri.parse()?, &wrapped.blob, &wrapped.recipient, pin)?
        }
    };
    crate::harden::scrub_stack();
    Ok(secret)
}

/// [`unwrap`] as `keys` wants it: errors become [`KeyError::Custodian`] with the message.
pub fn unwrapper<'a>(
    mut pin: impl FnMut() -> Result<Zeroizing<String>, KeyError> + 'a,
) -> impl FnMut(&WrappedSecret) -> Result<Zeroizing<[u8; 32]>, KeyError> + 'a {
    move |wrapped| unwrap(wrapped, &mut pin).map_err(|e| KeyError::Custodian(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_parse_and_name_their_mistakes() {
        assert_eq!(
            "aws:alias/smpfs".parse::<KeySpec>().unwrap(),
            KeySpec::AwsKms("alias/smpfs".into())
        );
        assert!(matches!(
            "pkcs11:token=t;object=o?module-path=/m.so".parse::<KeySpec>(),
            Ok(KeySpec::Pkcs11(_))
        ));
        for bad in ["aws:", "kms:alias/x", "alias/x", ""] {
            let err = bad.parse::<KeySpec>().unwrap_err();
            assert!(err.to_string().contains("aws:ARN_OR_ALIAS"), "{bad}: {err}");
        }
    }
}
