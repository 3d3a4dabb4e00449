//! Identities encrypted at rest with a passphrase: argon2id derives a key that seals the
//! 32-byte secret with AES-256-GCM-SIV. The parameters travel with the file, so stronger
//! ones can be chosen later without breaking old files.
//!
//! Payload (Bech32, HRP `smpfs-encrypted-key-`, 73 bytes): version 1 ‖ m_cost KiB (u32 LE)
//! ‖ t_cost (u32 LE) ‖ salt (16) ‖ sealed secret (32) ‖ tag (16). Parallelism is 1. The AAD
//! is the first 25 bytes, so the parameters cannot be altered unnoticed.

use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use zeroize::Zeroizing;

/// Bytes of the encrypted payload.
pub const PAYLOAD_LEN: usize = 1 + 4 + 4 + 16 + 32 + 16;
const HEADER_LEN: usize = 1 + 4 + 4 + 16;
/// argon2id memory cost for new files, in KiB (64 MiB).
pub const DEFAULT_M_KIB: u32 = 64 << 10;
/// argon2id passes for new files.
pub const DEFAULT_T: u32 = 3;

/// Why a payload could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Wrong passphrase, or the payload was altered.
    WrongPassphrase,
    /// Not a payload this version understands.
    Malformed,
}

fn derive(passphrase: &str, salt: &[u8], m_kib: u32, t: u32) -> Result<LessSafeKey, OpenError> {
    let params = Params::new(m_kib, t, 1, Some(32)).map_err(|_| OpenError::Malformed)?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|_| OpenError::Malformed)?;
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM_SIV, key.as_ref()).expect("32-byte key"),
    ))
}

/// Seals `secret` under `passphrase` with a fresh salt.
pub fn seal(secret: &[u8; 32], passphrase: &str, m_kib: u32, t: u32) -> Zeroizing<Vec<u8>> {
    let mut payload = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
    payload.push(1);
    payload.extend_from_slice(&m_kib.to_le_bytes());
    payload.extend_from_slice(&t.to_le_bytes());
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("OS random number generator");
    payload.extend_from_slice(&salt);
    payload.extend_from_slice(secret);
    let key = derive(passphrase, &salt, m_kib, t).expect("valid default parameters");
    let (header, body) = payload.split_at_mut(HEADER_LEN);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(&*header),
            body,
        )
        .expect("32-byte message seals");
    payload.extend_from_slice(tag.as_ref());
    payload
}

/// Opens a payload made by [`seal`] with `passphrase`.
pub fn open(payload: &[u8], passphrase: &str) -> Result<Zeroizing<[u8; 32]>, OpenError> {
    if payload.len() != PAYLOAD_LEN || payload[0] != 1 {
        return Err(OpenError::Malformed);
    }
    let m_kib = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes"));
    let t = u32::from_le_bytes(payload[5..9].try_into().expect("4 bytes"));
    // Refuse parameters that would make opening a file a denial of service (over 4 GiB).
    if m_kib > 4 << 20 || t > 64 {
        return Err(OpenError::Malformed);
    }
    let key = derive(passphrase, &payload[9..HEADER_LEN], m_kib, t)?;
    let mut sealed = Zeroizing::new([0u8; 48]);
    sealed.copy_from_slice(&payload[HEADER_LEN..]);
    key.open_in_place(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(&payload[..HEADER_LEN]),
        sealed.as_mut(),
    )
    .map_err(|_| OpenError::WrongPassphrase)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&sealed[..32]);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_wrong_passphrase_and_tampering() {
        let secret = [9u8; 32];
        let payload = seal(&secret, "correct horse", 1024, 1);
        assert_eq!(payload.len(), PAYLOAD_LEN);
        assert_eq!(*open(&payload, "correct horse").unwrap(), secret);
        assert_eq!(
            open(&payload, "wrong").unwrap_err(),
            OpenError::WrongPassphrase
        );
        let mut weaker = payload.to_vec();
        weaker[5] = 2; // t_cost changed: authenticated as AAD
        assert_eq!(
            open(&weaker, "correct horse").unwrap_err(),
            OpenError::WrongPassphrase
        );
        let mut huge = payload.to_vec();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            open(&huge, "correct horse").unwrap_err(),
            OpenError::Malformed
        );
        assert_eq!(
            open(&payload[..40], "correct horse").unwrap_err(),
            OpenError::Malformed
        );
    }
}
