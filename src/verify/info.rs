//! One sealed object's header, as `smpfs info` shows it.
//!
//! **Recipients.** A header does not say who its recipients are: each stanza is an
//! ephemeral public key and a wrapped file key, and nothing in it names the recipient's
//! public key (FORMAT.md §3, §4.2: "Stanzas do not say which recipient they are for; a
//! reader tries each one"). So the `smpfs1…` recipients cannot be recovered from a header
//! by anyone, this identity included; what is shown is the number of stanzas and whether
//! one of them opens with this identity.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::VerifyError;
use crate::backend::{Backend, BackendError};
use crate::bucket::ManifestStore;
use crate::format::{self, FormatError, Header, Layout, MAX_HEADER_LEN};
use crate::keys::Identity;
use crate::manifest::Entry;

/// Whether this identity opens a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Opens {
    /// A stanza opened, and the header MAC and encrypted path authenticated.
    Yes,
    /// No stanza opens with this identity: it is sealed to other recipients.
    NotForThisIdentity,
    /// A stanza opened but the header failed authentication.
    Tampered,
}

/// What a manifest entry says of the object, and whether the header matches it (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestCheck {
    /// The file's path in the manifest.
    pub path: String,
    /// The size the manifest shows (less than the plaintext size when padded).
    pub size: u64,
    /// Whether the file's plaintext is padded.
    pub padded: bool,
    /// Whether BLAKE3 of the header equals the entry's header hash.
    pub header_hash_matches: bool,
    /// Whether the header's file id equals the entry's.
    pub file_id_matches: bool,
    /// Whether the object's size equals the entry's object length.
    pub object_len_matches: bool,
}

/// The header of one sealed object (FORMAT.md §3). Fields from the header's clear bytes
/// (`chunk_size`, `plaintext_len`, `file_id`) are authenticated only when
/// [`HeaderInfo::opens`] is [`Opens::Yes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderInfo {
    /// Where the object is: a local file's path or the object's key.
    pub object: String,
    /// Where the header was read, when not from the object itself (a detached `hdr/`
    /// header after `smpfs share`).
    pub header_object: Option<String>,
    /// The format version byte.
    pub version: u8,
    /// Plaintext bytes per chunk.
    pub chunk_size: usize,
    /// Plaintext bytes of the sealed file (including any padding).
    pub plaintext_len: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// The file id, in hex.
    pub file_id: String,
    /// Bytes of the header.
    pub header_len: u64,
    /// Recipient stanzas: how many recipients the file key is wrapped to. Stanzas do not
    /// name their recipient, so who they are cannot be shown (see the module docs).
    pub stanzas: usize,
    /// Whether this identity opens the header.
    pub opens: Opens,
    /// The location the object is bound to (decrypted; only when it opens).
    pub bound_path: Option<String>,
    /// Where the object was found, as a reader computes it; `None` for a local file
    /// outside a bucket.
    pub location: Option<String>,
    /// Whether the bound path equals the location (for a local file: whether the file's
    /// absolute path ends with `/` and the bound path); `None` when it does not open.
    pub location_matches: Option<bool>,
    /// Bytes of the object.
    pub object_len: u64,
    /// Bytes the header says the object has.
    pub expected_object_len: u64,
    /// The manifest entry of the file (v2 buckets).
    pub manifest: Option<ManifestCheck>,
    /// With `--path`, the recipients the bucket seals to: its manifest's (v2) or its
    /// recipient list's (v1, when it has one), as `smpfs1…` text. Headers do not name
    /// theirs; this is the list the file was sealed to unless sealed with another `--to`.
    pub bucket_recipients: Option<Vec<String>>,
}

impl HeaderInfo {
    /// Reads the header of `bytes` (the start of a header object, at most
    /// [`MAX_HEADER_LEN`] bytes needed) and tries to open it with `identity`. The object
    /// is `object_len` bytes with its chunks from `chunks_at` (the header's length unless
    /// the header is detached).
    fn read(
        object: &str,
        bytes: &[u8],
        object_len: u64,
        chunks_at: Option<u64>,
        identity: &Identity,
    ) -> Result<HeaderInfo, VerifyError> {
        let format_err = |source| VerifyError::Format {
            key: object.to_owned(),
            source,
        };
        let header = Header::parse(bytes).map_err(format_err)?;
        let header_len = format::header_len(bytes).map_err(format_err)? as u64;
        // FORMAT.md §3: offset 6 version, 7 chunk_log2, 24..32 plaintext length; parse
        // has checked them. They are authenticated once the header opens.
        let mut layout = Layout {
            header_len: chunks_at.unwrap_or(header_len),
            chunk_log2: bytes[7],
            plaintext_len: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
        };
        let (opens, bound_path) = match header.open(identity) {
            Ok(opened) => {
                layout.plaintext_len = opened.layout.plaintext_len;
                (Opens::Yes, Some(opened.logical_path))
            }
            Err(FormatError::NoMatchingRecipient) => (Opens::NotForThisIdentity, None),
            Err(FormatError::HeaderTampered) => (Opens::Tampered, None),
            Err(other) => return Err(format_err(other)),
        };
        let expected_object_len = layout
            .chunk_count()
            .checked_mul(format::TAG_LEN as u64)
            .and_then(|tags| tags.checked_add(layout.plaintext_len))
            .and_then(|len| len.checked_add(layout.header_len))
            .ok_or_else(|| format_err(FormatError::Malformed("plaintext length overflows")))?;
        Ok(HeaderInfo {
            object: object.to_owned(),
            header_object: None,
            version: bytes[6],
            chunk_size: layout.chunk_size(),
            plaintext_len: layout.plaintext_len,
            chunks: layout.chunk_count(),
            file_id: hex::encode(header.file_id()),
            header_len,
            stanzas: header.recipient_count(),
            opens,
            bound_path,
            location: None,
            location_matches: None,
            object_len,
            expected_object_len,
            manifest: None,
            bucket_recipients: None,
        })
    }

    /// Sets where the object was found and whether its bound path matches it.
    fn located(mut self, location: Option<String>, matches: impl Fn(&str) -> bool) -> Self {
        self.location_matches = self.bound_path.as_deref().map(matches);
        self.location = location;
        self
    }
}

/// The header of a sealed file on local disk, outside any bucket command: its bound path
/// is compared with the end of the file's absolute path (a local bucket binds its own
/// directory name and the path below it, FORMAT.md §5).
pub fn file(path: &Path, identity: &Identity) -> Result<HeaderInfo, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let object_len = file.metadata().map_err(io)?.len();
    let mut bytes = Vec::with_capacity(MAX_HEADER_LEN);
    file.take(MAX_HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let absolute = std::path::absolute(path).map_err(io)?;
    let info = HeaderInfo::read(
        &path.display().to_string(),
        &bytes,
        object_len,
        None,
        identity,
    )?;
    let absolute = absolute.to_string_lossy().into_owned();
    Ok(info.located(None, |bound| absolute.ends_with(&format!("/{bound}"))))
}

/// The header of object `key` of `backend` (a v1 object, or any object named by key).
pub fn object(
    backend: &dyn Backend,
    key: &str,
    identity: &Identity,
) -> Result<HeaderInfo, VerifyError> {
    let (bytes, object_len) = read_start(backend, key)?;
    let location = backend.location(key)?;
    let info = HeaderInfo::read(key, &bytes, object_len, None, identity)?;
    Ok(info.located(Some(location.clone()), |bound| bound == location))
}

/// The header of file `path` of a bucket: from its manifest entry in a v2 bucket
/// (following a detached header, and checked against the entry), else object `path` of a
/// v1 bucket.
pub fn in_bucket(
    store: &ManifestStore,
    path: &str,
    identity: &Identity,
) -> Result<HeaderInfo, VerifyError> {
    let backend = store.backend().as_ref();
    let text = |list: Vec<crate::keys::Recipient>| list.iter().map(ToString::to_string).collect();
    let Some(manifest) = store.load(identity)? else {
        let mut info = object(backend, path, identity)?;
        info.bucket_recipients = crate::bucket::policy::read(store, identity)?.map(text);
        return Ok(info);
    };
    let entry = manifest
        .entries
        .get(path)
        .ok_or_else(|| VerifyError::NoSuchFile(path.to_owned()))?;
    let mut info = entry_info(backend, path, entry, identity)?;
    info.bucket_recipients = Some(text(manifest.recipients.clone()));
    Ok(info)
}

/// The header of the file `path` whose manifest entry is `entry`.
fn entry_info(
    backend: &dyn Backend,
    path: &str,
    entry: &Entry,
    identity: &Identity,
) -> Result<HeaderInfo, VerifyError> {
    let key = entry.object_key();
    let header_key = entry.header_key();
    let object_len = backend
        .stat(&key)?
        .ok_or_else(|| BackendError::NotFound { key: key.clone() })?;
    let (bytes, _) = read_start(backend, &header_key)?;
    let chunks_at = entry.detached.map(|detached| detached.chunks_at);
    let mut info = HeaderInfo::read(&key, &bytes, object_len, chunks_at, identity)?;
    let header_len = info.header_len as usize;
    info.manifest = Some(ManifestCheck {
        path: path.to_owned(),
        size: entry.size,
        padded: entry.padded,
        header_hash_matches: *blake3::hash(&bytes[..header_len]).as_bytes() == entry.header_hash,
        file_id_matches: info.file_id == hex::encode(entry.file_id),
        object_len_matches: object_len == entry.object_len,
    });
    if entry.detached.is_some() {
        info.header_object = Some(header_key);
    }
    let location = backend.location(&key)?;
    Ok(info.located(Some(location.clone()), |bound| bound == location))
}

/// The first bytes of object `key` (enough for any header) and its size.
fn read_start(backend: &dyn Backend, key: &str) -> Result<(Vec<u8>, u64), VerifyError> {
    let size = backend.stat(key)?.ok_or_else(|| BackendError::NotFound {
        key: key.to_owned(),
    })?;
    let mut bytes = vec![0u8; size.min(MAX_HEADER_LEN as u64) as usize];
    backend.read_range(key, 0, &mut [&mut bytes])?;
    Ok((bytes, size))
}
