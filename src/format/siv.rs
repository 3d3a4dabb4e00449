//! AES-256-GCM-SIV (RFC 8452): sealing through AWS-LC's AES-NI/CLMUL assembly (about 2.5x
//! the portable RustCrypto code here); opening through the `siv-vaes` crate
//! (crates/siv-vaes) where the CPU has 512-bit AES and carry-less multiply, about 1.9x
//! AWS-LC, and through AWS-LC elsewhere (PERFORMANCE.md).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use zeroize::Zeroize;

use super::TAG_LEN;

#[cfg(target_arch = "x86_64")]
use siv_vaes::OpeningKey as WideKey;

/// Off x86-64 there is no wide path: a key that cannot exist, so `Siv` always uses AWS-LC.
#[cfg(not(target_arch = "x86_64"))]
enum WideKey {}

#[cfg(not(target_arch = "x86_64"))]
impl WideKey {
    fn new(_key: &[u8; 32]) -> Option<Self> {
        None
    }

    fn open_into(&self, _: &[u8; 12], _: &[u8], _: &[u8], _: &[u8; 16], _: &mut [u8]) -> bool {
        match *self {}
    }

    fn open_in_place(&self, _: &[u8; 12], _: &[u8], _: &mut [u8], _: &[u8; 16]) -> bool {
        match *self {}
    }
}

/// One AES-256-GCM-SIV key. Both opening paths give the same bytes and accept the same
/// tags; on any failure the output is zeroed, so no unauthenticated plaintext escapes.
pub(super) struct Siv {
    aws_lc: LessSafeKey,
    /// The 512-bit opening path, where this CPU has it.
    wide: Option<WideKey>,
}

impl Siv {
    pub(super) fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM_SIV, key).expect("32-byte key");
        Siv {
            aws_lc: LessSafeKey::new(unbound),
            wide: WideKey::new(key),
        }
    }

    /// Encrypts `data` in place and returns the tag.
    pub(super) fn seal(&self, nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .aws_lc
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .expect("AES-GCM-SIV seals any message this format allows");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    /// Authenticates and decrypts `sealed` (ciphertext ‖ tag) in place; the plaintext is
    /// then its first `sealed.len() - TAG_LEN` bytes. On failure every byte is zeroed.
    pub(super) fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &mut [u8]) -> Result<(), ()> {
        let opened = match (sealed.len().checked_sub(TAG_LEN), self.wide.as_ref()) {
            (None, _) => false,
            (Some(plain_len), Some(key)) => {
                let (data, tag) = sealed.split_at_mut(plain_len);
                let tag: [u8; TAG_LEN] = (*tag).try_into().expect("TAG_LEN bytes");
                key.open_in_place(&nonce, aad, data, &tag)
            }
            (Some(_), None) => self
                .aws_lc
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed)
                .is_ok(),
        };
        if !opened {
            sealed.zeroize();
        }
        opened.then_some(()).ok_or(())
    }

    /// Authenticates and decrypts `sealed` (ciphertext ‖ tag) into `out`, which must be as
    /// long: the plaintext first, then a copy of the tag, as [`Siv::open`] leaves it. On
    /// failure every byte of `out` is zeroed.
    pub(super) fn open_into(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), ()> {
        let opened = match sealed.len().checked_sub(TAG_LEN) {
            Some(plain_len) if out.len() == sealed.len() => {
                let (ciphertext, tag) = sealed.split_at(plain_len);
                let (plain, tag_out) = out.split_at_mut(plain_len);
                tag_out.copy_from_slice(tag);
                match self.wide.as_ref() {
                    Some(key) => {
                        let tag: [u8; TAG_LEN] = tag.try_into().expect("TAG_LEN bytes");
                        key.open_into(&nonce, aad, ciphertext, &tag, plain)
                    }
                    None => self
                        .aws_lc
                        .open_separate_gather(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(aad),
                            ciphertext,
                            tag,
                            plain,
                        )
                        .is_ok(),
                }
            }
            _ => false,
        };
        if !opened {
            out.zeroize();
        }
        opened.then_some(()).ok_or(())
    }
}
