//! Sealed-file format v1: header, recipient stanzas and AES-256-GCM-SIV chunks.
//!
//! Pure code, no I/O. `docs/FORMAT.md` specifies every byte; the test vectors in
//! `tests/vectors/` pin it. Layout of a sealed object:
//!
//! ```text
//! header | chunk 0 (ciphertext ‖ tag) | chunk 1 | … | last chunk
//! ```
//!
//! Every chunk but the last holds exactly `chunk_size` plaintext bytes; the last holds 0 to
//! `chunk_size` bytes (an empty file has one empty last chunk). Each chunk's nonce carries its
//! index and a last-chunk flag and its AAD carries the file id and the logical path, so
//! reordering, truncation, extension and swapping chunks, files or names fail authentication.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{Identity, Recipient};

mod siv;
use siv::Siv;

/// First six bytes of every sealed object.
pub const MAGIC: &[u8; 6] = b"SMPFS\0";
/// The only format version this code reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header prefix, before the stanzas.
pub const PREFIX_LEN: usize = 36;
/// Bytes of one recipient stanza: ephemeral public key ‖ wrapped file key ‖ tag.
pub const STANZA_LEN: usize = 32 + 32 + TAG_LEN;
/// Bytes of the AES-GCM-SIV tag after each chunk and wrapped key.
pub const TAG_LEN: usize = 16;
/// Bytes of the header MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Most recipients one file can be sealed to.
pub const MAX_RECIPIENTS: usize = 64;
/// Longest logical path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Smallest and largest chunk size, as log2 (4 KiB to 64 KiB).
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=16;
/// The chunk size used unless the sealer picks another.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;
/// Largest possible header, so readers can bound what they fetch.
pub const MAX_HEADER_LEN: usize =
    PREFIX_LEN + MAX_RECIPIENTS * STANZA_LEN + MAX_PATH_LEN + TAG_LEN + MAC_LEN;

const STANZA_LABEL: &[u8] = b"smpfs/v1/x25519";
const PAYLOAD_LABEL: &[u8] = b"smpfs/v1/payload";
const HEADER_MAC_LABEL: &[u8] = b"smpfs/v1/header-mac";
const PATH_LABEL: &[u8] = b"smpfs/v1/path";
const ZERO_NONCE: [u8; 12] = [0; 12];

/// Errors in parsing, opening or authenticating sealed data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a sealed smpfs object (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed header: {0}")]
    Malformed(&'static str),
    #[error("header is truncated: need {needed} bytes")]
    Truncated { needed: usize },
    #[error("not sealed to this identity")]
    NoMatchingRecipient,
    #[error("header authentication failed (tampered header)")]
    HeaderTampered,
    #[error("chunk {index} failed authentication (tampered, reordered, truncated or swapped)")]
    ChunkTampered { index: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// Where each chunk of a sealed object lies; derived only from authenticated header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the header.
    pub header_len: u64,
    /// log2 of the plaintext bytes per chunk.
    pub chunk_log2: u8,
    /// Plaintext bytes of the whole file.
    pub plaintext_len: u64,
}

impl Layout {
    /// Plaintext bytes per full chunk.
    pub fn chunk_size(&self) -> usize {
        1 << self.chunk_log2
    }

    /// Number of chunks (at least one: an empty file has one empty last chunk).
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len.div_ceil(self.chunk_size() as u64).max(1)
    }

    /// Plaintext bytes in chunk `index`.
    pub fn chunk_plain_len(&self, index: u64) -> usize {
        let start = index << self.chunk_log2;
        (self.plaintext_len - start).min(self.chunk_size() as u64) as usize
    }

    /// Offset of chunk `index`'s ciphertext in the object.
    pub fn chunk_offset(&self, index: u64) -> u64 {
        self.header_len + index * (self.chunk_size() + TAG_LEN) as u64
    }

    /// Whether chunk `index` is the last one.
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunk_count()
    }

    /// Exact size the object must have; anything else is truncation or extension.
    pub fn object_len(&self) -> u64 {
        self.checked_object_len()
            .expect("validated when the layout was made")
    }

    fn checked_object_len(&self) -> Option<u64> {
        self.chunk_count()
            .checked_mul(TAG_LEN as u64)?
            .checked_add(self.plaintext_len)?
            .checked_add(self.header_len)
    }

    /// The chunk holding plaintext byte `offset`.
    pub fn chunk_of(&self, offset: u64) -> u64 {
        offset >> self.chunk_log2
    }
}

/// The structure of a header, parsed but not yet authenticated.
#[derive(Debug, Clone)]
pub struct Header {
    file_id: [u8; 16],
    layout: Layout,
    stanzas: Vec<[u8; STANZA_LEN]>,
    encrypted_path: Vec<u8>,
    mac: [u8; MAC_LEN],
    /// The bytes the MAC covers (everything before it).
    authenticated: Vec<u8>,
}

/// Total header length announced by a header's fixed prefix (first [`PREFIX_LEN`] bytes).
pub fn header_len(prefix: &[u8]) -> Result<usize, FormatError> {
    if prefix.len() < PREFIX_LEN {
        if prefix.len() < MAGIC.len() || &prefix[..MAGIC.len()] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::Truncated { needed: PREFIX_LEN });
    }
    if &prefix[..6] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if prefix[6] != VERSION {
        return Err(FormatError::UnsupportedVersion(prefix[6]));
    }
    if !CHUNK_LOG2_RANGE.contains(&prefix[7]) {
        return Err(FormatError::Malformed("chunk size out of range"));
    }
    let recipients = u16::from_le_bytes([prefix[32], prefix[33]]) as usize;
    let path_ct_len = u16::from_le_bytes([prefix[34], prefix[35]]) as usize;
    if recipients == 0 || recipients > MAX_RECIPIENTS {
        return Err(FormatError::Malformed("recipient count out of range"));
    }
    if !(TAG_LEN + 1..=TAG_LEN + MAX_PATH_LEN).contains(&path_ct_len) {
        return Err(FormatError::Malformed("path length out of range"));
    }
    Ok(PREFIX_LEN + recipients * STANZA_LEN + path_ct_len + MAC_LEN)
}

impl Header {
    /// Parses a complete header from the start of `bytes` (extra bytes are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Header, FormatError> {
        let len = header_len(bytes)?;
        if bytes.len() < len {
            return Err(FormatError::Truncated { needed: len });
        }
        let recipients = u16::from_le_bytes([bytes[32], bytes[33]]) as usize;
        let plaintext_len = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
        let layout = Layout {
            header_len: len as u64,
            chunk_log2: bytes[7],
            plaintext_len,
        };
        if layout.checked_object_len().is_none() {
            return Err(FormatError::Malformed("plaintext length overflows"));
        }
        let stanzas_end = PREFIX_LEN + recipients * STANZA_LEN;
        let stanzas = bytes[PREFIX_LEN..stanzas_end]
            .chunks_exact(STANZA_LEN)
            .map(|s| s.try_into().expect("stanza length"))
            .collect();
        let mac_start = len - MAC_LEN;
        Ok(Header {
            file_id: bytes[8..24].try_into().expect("16 bytes"),
            layout,
            stanzas,
            encrypted_path: bytes[stanzas_end..mac_start].to_vec(),
            mac: bytes[mac_start..len].try_into().expect("32 bytes"),
            authenticated: bytes[..mac_start].to_vec(),
        })
    }

    /// The random id of this file (not secret).
    pub fn file_id(&self) -> [u8; 16] {
        self.file_id
    }

    /// How many recipients the file key is wrapped to (stanzas do not say which).
    pub fn recipient_count(&self) -> usize {
        self.stanzas.len()
    }

    /// Opens the header with `identity`: unwraps the file key, checks the header MAC and
    /// decrypts the logical path. Only then are the layout and path trustworthy.
    pub fn open(&self, identity: &Identity) -> Result<OpenedFile, FormatError> {
        let file_key = self
            .stanzas
            .iter()
            .find_map(|stanza| unwrap_stanza(stanza, identity, &self.file_id))
            .ok_or(FormatError::NoMatchingRecipient)?;
        let keys = FileKeys::derive(&file_key, &self.file_id);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keys.header_mac.as_ref())
            .expect("HMAC takes any key length");
        mac.update(&self.authenticated);
        mac.verify_slice(&self.mac)
            .map_err(|_| FormatError::HeaderTampered)?;
        let mut path = self.encrypted_path.clone();
        Siv::new(&keys.path)
            .open(ZERO_NONCE, &self.file_id, &mut path)
            .map_err(|()| FormatError::HeaderTampered)?;
        path.truncate(path.len() - TAG_LEN);
        let logical_path =
            String::from_utf8(path).map_err(|_| FormatError::Malformed("path is not UTF-8"))?;
        Ok(OpenedFile {
            layout: self.layout,
            chunks: ChunkCipher::new(&keys.payload, self.file_id, &logical_path),
            logical_path,
        })
    }
}

impl Header {
    /// The header of the same file (id, file key, size, chunk size, location) with its file
    /// key wrapped to `recipients` instead, under fresh ephemeral keys: the chunks sealed
    /// under the old header open under the new one. Fails unless `identity` opens this
    /// header.
    pub fn rewrap(
        &self,
        identity: &Identity,
        recipients: &[Recipient],
    ) -> Result<Vec<u8>, FormatError> {
        let opened = self.open(identity)?;
        let file_key = self
            .stanzas
            .iter()
            .find_map(|stanza| unwrap_stanza(stanza, identity, &self.file_id))
            .ok_or(FormatError::NoMatchingRecipient)?;
        let randomness = SealRandomness {
            file_key,
            file_id: self.file_id,
            ephemeral: SealRandomness::generate(recipients.len()).ephemeral,
        };
        let (header, _) = seal_header(
            recipients,
            &opened.logical_path,
            self.layout.plaintext_len,
            self.layout.chunk_log2,
            &randomness,
        )?;
        Ok(header)
    }
}

/// A header opened with a matching identity: authenticated layout, path and chunk keys.
pub struct OpenedFile {
    /// Where the chunks lie (authenticated by the header MAC).
    pub layout: Layout,
    /// The object's location in its bucket, as sealed (authenticated; FORMAT.md §5).
    pub logical_path: String,
    /// Opens and seals this file's chunks.
    pub chunks: ChunkCipher,
}

/// Keys derived from one file key; zeroized on drop.
struct FileKeys {
    payload: Zeroizing<[u8; 32]>,
    header_mac: Zeroizing<[u8; 32]>,
    path: Zeroizing<[u8; 32]>,
}

impl FileKeys {
    fn derive(file_key: &[u8; 32], file_id: &[u8; 16]) -> FileKeys {
        let hk = Hkdf::<Sha256>::new(Some(file_id), file_key);
        let expand = |label: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            hk.expand(label, out.as_mut())
                .expect("32 bytes is a valid length");
            out
        };
        FileKeys {
            payload: expand(PAYLOAD_LABEL),
            header_mac: expand(HEADER_MAC_LABEL),
            path: expand(PATH_LABEL),
        }
    }
}

fn stanza_wrap_key(
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(STANZA_LABEL, key.as_mut())
        .expect("32 bytes is a valid length");
    key
}

fn unwrap_stanza(
    stanza: &[u8; STANZA_LEN],
    identity: &Identity,
    file_id: &[u8; 16],
) -> Option<Zeroizing<[u8; 32]>> {
    let ephemeral = <[u8; 32]>::try_from(&stanza[..32]).expect("32 bytes");
    let shared = identity.agree(&ephemeral)?;
    let wrap_key = stanza_wrap_key(
        &shared,
        &PublicKey::from(ephemeral),
        identity.recipient().public_key(),
    );
    let mut wrapped = Zeroizing::new([0u8; 32 + TAG_LEN]);
    wrapped.copy_from_slice(&stanza[32..]);
    Siv::new(&wrap_key)
        .open(ZERO_NONCE, file_id, wrapped.as_mut())
        .ok()?;
    let mut file_key = Zeroizing::new([0u8; 32]);
    file_key.copy_from_slice(&wrapped[..32]);
    Some(file_key)
}

/// The randomness one sealing consumes; explicit so test vectors are reproducible.
pub struct SealRandomness {
    /// The file's key (secret).
    pub file_key: Zeroizing<[u8; 32]>,
    /// The file's public id.
    pub file_id: [u8; 16],
    /// One ephemeral X25519 secret per recipient.
    pub ephemeral: Vec<Zeroizing<[u8; 32]>>,
}

impl SealRandomness {
    /// Fresh randomness from the operating system for `recipients` recipients.
    pub fn generate(recipients: usize) -> Self {
        let fill = |buf: &mut [u8]| getrandom::getrandom(buf).expect("OS random number generator");
        let mut file_key = Zeroizing::new([0u8; 32]);
        fill(file_key.as_mut());
        let mut file_id = [0u8; 16];
        fill(&mut file_id);
        let ephemeral = (0..recipients)
            .map(|_| {
                let mut e = Zeroizing::new([0u8; 32]);
                fill(e.as_mut());
                e
            })
            .collect();
        SealRandomness {
            file_key,
            file_id,
            ephemeral,
        }
    }
}

/// Builds the header of a new sealed file; returns its bytes and the opened file (for
/// sealing the chunks).
pub fn seal_header(
    recipients: &[Recipient],
    logical_path: &str,
    plaintext_len: u64,
    chunk_log2: u8,
    randomness: &SealRandomness,
) -> Result<(Vec<u8>, OpenedFile), FormatError> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(FormatError::InvalidArgument("need 1 to 64 recipients"));
    }
    if randomness.ephemeral.len() != recipients.len() {
        return Err(FormatError::InvalidArgument(
            "one ephemeral key per recipient",
        ));
    }
    if logical_path.is_empty() || logical_path.len() > MAX_PATH_LEN {
        return Err(FormatError::InvalidArgument(
            "logical path must be 1 to 4096 bytes",
        ));
    }
    if !CHUNK_LOG2_RANGE.contains(&chunk_log2) {
        return Err(FormatError::InvalidArgument(
            "chunk size must be 4 KiB to 64 KiB",
        ));
    }
    let file_id = randomness.file_id;
    let keys = FileKeys::derive(&randomness.file_key, &file_id);
    let path_ct_len = logical_path.len() + TAG_LEN;
    let header_len = PREFIX_LEN + recipients.len() * STANZA_LEN + path_ct_len + MAC_LEN;
    let layout = Layout {
        header_len: header_len as u64,
        chunk_log2,
        plaintext_len,
    };
    if layout.checked_object_len().is_none() {
        return Err(FormatError::InvalidArgument("plaintext length overflows"));
    }

    let mut out = Vec::with_capacity(header_len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(chunk_log2);
    out.extend_from_slice(&file_id);
    out.extend_from_slice(&plaintext_len.to_le_bytes());
    out.extend_from_slice(&(recipients.len() as u16).to_le_bytes());
    out.extend_from_slice(&(path_ct_len as u16).to_le_bytes());
    for (recipient, eph_bytes) in recipients.iter().zip(&randomness.ephemeral) {
        let eph_secret = StaticSecret::from(**eph_bytes);
        let eph_public = PublicKey::from(&eph_secret);
        let shared = eph_secret.diffie_hellman(recipient.public_key());
        if !shared.was_contributory() {
            return Err(FormatError::InvalidArgument(
                "recipient is a low-order point",
            ));
        }
        let wrap_key = stanza_wrap_key(shared.as_bytes(), &eph_public, recipient.public_key());
        let mut wrapped = Zeroizing::new(*randomness.file_key);
        let tag = Siv::new(&wrap_key).seal(ZERO_NONCE, &file_id, wrapped.as_mut());
        out.extend_from_slice(eph_public.as_bytes());
        out.extend_from_slice(wrapped.as_ref());
        out.extend_from_slice(&tag);
    }
    let mut path = logical_path.as_bytes().to_vec();
    let tag = Siv::new(&keys.path).seal(ZERO_NONCE, &file_id, &mut path);
    out.extend_from_slice(&path);
    out.extend_from_slice(&tag);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keys.header_mac.as_ref())
        .expect("HMAC takes any key length");
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    debug_assert_eq!(out.len(), header_len);

    Ok((
        out,
        OpenedFile {
            layout,
            chunks: ChunkCipher::new(&keys.payload, file_id, logical_path),
            logical_path: logical_path.to_owned(),
        },
    ))
}

/// Seals and opens the chunks of one file with the file's payload key.
pub struct ChunkCipher {
    cipher: Siv,
    /// file id ‖ logical path: the AAD of every chunk.
    aad: Vec<u8>,
}

impl ChunkCipher {
    fn new(payload_key: &[u8; 32], file_id: [u8; 16], logical_path: &str) -> Self {
        let mut aad = Vec::with_capacity(16 + logical_path.len());
        aad.extend_from_slice(&file_id);
        aad.extend_from_slice(logical_path.as_bytes());
        ChunkCipher {
            cipher: Siv::new(payload_key),
            aad,
        }
    }

    fn nonce(index: u64, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&index.to_le_bytes());
        nonce[11] = u8::from(last);
        nonce
    }

    /// Encrypts `buf[..len - TAG_LEN]` in place and writes the tag into the last
    /// [`TAG_LEN`] bytes.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut [u8]) {
        let (data, tag_out) = buf.split_at_mut(buf.len() - TAG_LEN);
        let tag = self.cipher.seal(Self::nonce(index, last), &self.aad, data);
        tag_out.copy_from_slice(&tag);
    }

    /// Authenticates and decrypts `buf` (ciphertext ‖ tag) in place; on success the
    /// plaintext is `buf[..buf.len() - TAG_LEN]`. On failure `buf` is zeroed.
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<(), FormatError> {
        if buf.len() < TAG_LEN {
            return Err(FormatError::ChunkTampered { index });
        }
        self.cipher
            .open(Self::nonce(index, last), &self.aad, buf)
            .map_err(|()| FormatError::ChunkTampered { index })
    }

    /// Like [`ChunkCipher::open_chunk`], reading the sealed chunk from `sealed` and writing
    /// into `out` (as long as `sealed`), so a chunk is decrypted straight from where it was
    /// received. On failure `out` is zeroed.
    pub fn open_chunk_into(
        &self,
        index: u64,
        last: bool,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), FormatError> {
        if sealed.len() < TAG_LEN || out.len() != sealed.len() {
            out.zeroize();
            return Err(FormatError::ChunkTampered { index });
        }
        self.cipher
            .open_into(Self::nonce(index, last), &self.aad, sealed, out)
            .map_err(|()| FormatError::ChunkTampered { index })
    }
}

#[cfg(test)]
mod tests;
