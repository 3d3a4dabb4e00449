//! A PKCS#11 token (an HSM, a smart card, SoftHSM2) as custodian: the secret is sealed with
//! AES-256-GCM by a key generated inside the token as sensitive and non-extractable, with
//! the recipient as associated data. Wrapped bytes: IV (12) ‖ ciphertext ‖ tag (16).
//!
//! The key is named by an RFC 7512 URI: `pkcs11:token=LABEL;object=LABEL` plus the query
//! attributes `module-path` (required), `pin-source=file:PATH` and `pin-value` (the latter
//! is used at `keygen` only and never written to the identity file).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use zeroize::Zeroizing;

use super::CustodyError;
use crate::keys::{PassphraseSource, Recipient};

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Characters escaped in a URI path attribute value.
const PATH_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b';')
    .add(b'?')
    .add(b'/')
    .add(b'#')
    .add(b'&')
    .add(b'=');
/// Characters escaped in a URI query attribute value (a path keeps its slashes).
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b';')
    .add(b'?')
    .add(b'#')
    .add(b'&')
    .add(b'=');

/// The parts of a PKCS#11 URI smpfs uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Label of the token.
    pub token: String,
    /// Label of the AES key in it.
    pub object: String,
    /// The PKCS#11 module (shared library) to load.
    pub module: String,
    /// A file whose first line is the user PIN.
    pub pin_source: Option<String>,
    /// The PIN itself; never written out (not part of `Display`).
    pin_value: Option<Zeroizing<String>>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({self})")
    }
}

impl FromStr for Pkcs11Uri {
    type Err = CustodyError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let bad = |why| CustodyError::BadPkcs11Uri {
            uri: uri
                .split("pin-value=")
                .next()
                .unwrap_or_default()
                .to_owned(),
            why,
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("no `pkcs11:`"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let decode = |value: &str| {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| bad("a value is not UTF-8"))
        };
        let (mut token, mut object, mut module, mut pin_source, mut pin_value) =
            (None, None, None, None, None);
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| bad("an attribute has no `=`"))?;
            match name {
                "token" => token = Some(decode(value)?),
                "object" => object = Some(decode(value)?),
                // Other identifying attributes (manufacturer, serial, id, type …) are allowed
                // but not used: the labels identify the token and the key.
                _ => {}
            }
        }
        for attribute in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| bad("a query attribute has no `=`"))?;
            match name {
                "module-path" => module = Some(decode(value)?),
                "pin-source" => pin_source = Some(decode(value)?),
                "pin-value" => pin_value = Some(Zeroizing::new(decode(value)?)),
                _ => {}
            }
        }
        let pin_source = match pin_source {
            Some(source) => Some(
                source
                    .strip_prefix("file:")
                    .map(str::to_owned)
                    .ok_or_else(|| bad("pin-source must be `file:PATH`"))?,
            ),
            None => None,
        };
        Ok(Pkcs11Uri {
            token: token.ok_or_else(|| bad("no `token=` label"))?,
            object: object.ok_or_else(|| bad("no `object=` label"))?,
            module: module.ok_or_else(|| bad("no `module-path=`"))?,
            pin_source,
            pin_value,
        })
    }
}

impl fmt::Display for Pkcs11Uri {
    /// The URI without any PIN value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pkcs11:token={};object={}?module-path={}",
            utf8_percent_encode(&self.token, PATH_VALUE),
            utf8_percent_encode(&self.object, PATH_VALUE),
            utf8_percent_encode(&self.module, QUERY_VALUE),
        )?;
        if let Some(source) = &self.pin_source {
            write!(
                f,
                "&pin-source=file:{}",
                utf8_percent_encode(source, QUERY_VALUE)
            )?;
        }
        Ok(())
    }
}

/// Seals `secret` with the token's key labelled `uri.object`, generating that key first if
/// the token has none.
pub(super) fn wrap(
    uri: &Pkcs11Uri,
    secret: &[u8; 32],
    recipient: &Recipient,
    pin: PassphraseSource,
) -> Result<Vec<u8>, CustodyError> {
    let token = Token::open(uri, pin, true)?;
    let key = match token.find_key() {
        Err(CustodyError::Pkcs11NoKey { .. }) => token.generate_key()?,
        found => found?,
    };
    let mut iv = [0u8; IV_LEN];
    getrandom::getrandom(&mut iv).expect("OS random number generator");
    let aad = recipient.to_bytes();
    let mut params_iv = iv;
    let params = GcmParams::new(&mut params_iv, &aad, Ulong::from(128))
        .map_err(|e| token.failed("C_EncryptInit", e))?;
    let sealed = token
        .session
        .encrypt(&Mechanism::AesGcm(params), key, secret)
        .map_err(|e| token.failed("C_Encrypt", e))?;
    let mut blob = iv.to_vec();
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

/// Opens a blob made by [`wrap`] with the token's key.
pub(super) fn unwrap(
    uri: &Pkcs11Uri,
    blob: &[u8],
    recipient: &Recipient,
    pin: PassphraseSource,
) -> Result<Zeroizing<[u8; 32]>, CustodyError> {
    let token = Token::open(uri, pin, false)?;
    let key = token.find_key()?;
    let wrong = || CustodyError::Pkcs11WrongCiphertext {
        token: uri.token.clone(),
        object: uri.object.clone(),
    };
    if blob.len() != IV_LEN + 32 + TAG_LEN {
        return Err(wrong());
    }
    let mut iv: [u8; IV_LEN] = blob[..IV_LEN].try_into().expect("IV_LEN bytes");
    let aad = recipient.to_bytes();
    let params = GcmParams::new(&mut iv, &aad, Ulong::from(128))
        .map_err(|e| token.failed("C_DecryptInit", e))?;
    let plaintext = Zeroizing::new(
        token
            .session
            .decrypt(&Mechanism::AesGcm(params), key, &blob[IV_LEN..])
            .map_err(|e| match e {
                P11Error::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::FunctionFailed,
                    _,
                ) => wrong(),
                e => token.failed("C_Decrypt", e),
            })?,
    );
    let mut secret = Zeroizing::new([0u8; 32]);
    if plaintext.len() != secret.len() {
        return Err(wrong());
    }
    secret.copy_from_slice(&plaintext);
    Ok(secret)
}

/// A logged-in session on the token a URI names.
struct Token<'a> {
    uri: &'a Pkcs11Uri,
    session: Session,
    // Declared after the session, so the session closes before the library finalizes.
    _context: Pkcs11,
}

impl<'a> Token<'a> {
    fn open(uri: &'a Pkcs11Uri, pin: PassphraseSource, write: bool) -> Result<Self, CustodyError> {
        let module_error = |e: P11Error| CustodyError::Pkcs11Module {
            module: uri.module.clone(),
            message: e.to_string(),
        };
        if !Path::new(&uri.module).is_file() {
            return Err(CustodyError::Pkcs11Module {
                module: uri.module.clone(),
                message: "no such file".into(),
            });
        }
        let context = Pkcs11::new(&uri.module).map_err(module_error)?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(module_error)?;
        let mut present = Vec::new();
        let mut slot = None;
        for candidate in context.get_slots_with_token().map_err(module_error)? {
            let info = context.get_token_info(candidate).map_err(module_error)?;
            let label = info.label().trim_end().to_owned();
            if label == uri.token && slot.is_none() {
                slot = Some(candidate);
            }
            present.push(format!("`{label}`"));
        }
        let slot = slot.ok_or_else(|| CustodyError::Pkcs11NoToken {
            token: uri.token.clone(),
            module: uri.module.clone(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })?;
        let session = if write {
            context.open_rw_session(slot)
        } else {
            context.open_ro_session(slot)
        }
        .map_err(module_error)?;
        let pin = match (&uri.pin_value, &uri.pin_source) {
            (Some(value), _) => value.clone(),
            (None, Some(file)) => read_pin(Path::new(file))?,
            (None, None) => pin().map_err(|e| CustodyError::Pin(e.to_string()))?,
        };
        session
            .login(UserType::User, Some(&AuthPin::from(pin.as_str())))
            .map_err(|e| match e {
                P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _) => {
                    CustodyError::Pkcs11WrongPin {
                        token: uri.token.clone(),
                    }
                }
                P11Error::Pkcs11(RvError::PinLocked, _) => CustodyError::Pkcs11PinLocked {
                    token: uri.token.clone(),
                },
                e => CustodyError::Pkcs11 {
                    operation: "C_Login",
                    token: uri.token.clone(),
                    message: e.to_string(),
                },
            })?;
        Ok(Token {
            uri,
            session,
            _context: context,
        })
    }

    fn failed(&self, operation: &'static str, error: P11Error) -> CustodyError {
        CustodyError::Pkcs11 {
            operation,
            token: self.uri.token.clone(),
            message: error.to_string(),
        }
    }

    /// The one secret key labelled `uri.object`.
    fn find_key(&self) -> Result<ObjectHandle, CustodyError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.uri.object.as_bytes().to_vec()),
            ])
            .map_err(|e| self.failed("C_FindObjects", e))?;
        match found.as_slice() {
            [key] => Ok(*key),
            [] => Err(CustodyError::Pkcs11NoKey {
                token: self.uri.token.clone(),
                object: self.uri.object.clone(),
            }),
            keys => Err(CustodyError::Pkcs11AmbiguousKey {
                token: self.uri.token.clone(),
                object: self.uri.object.clone(),
                count: keys.len(),
            }),
        }
    }

    /// A new AES-256 key in the token that can never leave it.
    fn generate_key(&self) -> Result<ObjectHandle, CustodyError> {
        tracing::info!(token = %self.uri.token, object = %self.uri.object, "generating a non-extractable AES-256 key in the token");
        self.session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(Ulong::from(32)),
                    Attribute::Label(self.uri.object.as_bytes().to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .map_err(|e| self.failed("C_GenerateKey", e))
    }
}

/// The first line of a PIN file.
fn read_pin(path: &Path) -> Result<Zeroizing<String>, CustodyError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| CustodyError::Pin(format!("{}: {e}", path.display())))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or_default().to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_print_without_the_pin_and_name_what_is_missing() {
        let uri: Pkcs11Uri = "pkcs11:token=Lab%20HSM;object=smpfs;serial=42?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
            .parse()
            .unwrap();
        assert_eq!(uri.token, "Lab HSM");
        assert_eq!(uri.object, "smpfs");
        assert_eq!(uri.module, "/usr/lib/softhsm/libsofthsm2.so");
        assert_eq!(uri.pin_value.as_deref().map(String::as_str), Some("1234"));
        let printed = uri.to_string();
        assert!(!printed.contains("1234"), "{printed}");
        let again: Pkcs11Uri = printed.parse().unwrap();
        assert_eq!(
            (again.token, again.object, again.module),
            (uri.token, uri.object, uri.module)
        );

        let with_file: Pkcs11Uri =
            "pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/run/pin"
                .parse()
                .unwrap();
        assert_eq!(with_file.pin_source.as_deref(), Some("/run/pin"));
        assert!(with_file.to_string().contains("pin-source=file:/run/pin"));

        for (bad, why) in [
            ("pkcs11:object=o?module-path=/m.so", "token="),
            ("pkcs11:token=t?module-path=/m.so", "object="),
            ("pkcs11:token=t;object=o", "module-path="),
            (
                "pkcs11:token=t;object=o?module-path=/m.so&pin-source=/p",
                "file:PATH",
            ),
            (
                "pkcs11:token;object=o?module-path=/m.so&pin-value=secret",
                "no `=`",
            ),
        ] {
            let err = bad.parse::<Pkcs11Uri>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
