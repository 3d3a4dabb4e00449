//! Shared pieces of the fuzz targets: fixed identities, an in-memory bucket, a byte cursor
//! that turns fuzz input into choices, a memory file for parsers that take a path, and the
//! audit-log fix-ups that let the fuzzer get past the record MACs.
//!
//! Every target installs smpfs's own global allocator, as the `smpfs` binary does, so
//! `heap::with_allocation_limit` (which bounds DICOM parsing) behaves as in production.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use smpfs::backend::{Backend, BackendError, ObjectInfo, ObjectWriter};
use smpfs::format::{self, SealRandomness, TAG_LEN};
use smpfs::keys::{Identity, Recipient};
use zeroize::Zeroizing;

/// The identity of test vector recipient `n` (`tests/vectors/*.smpfs` are sealed to
/// `n = 1` and `n = 2`), as `src/format/tests.rs` makes them.
pub fn vector_identity(n: u8) -> Identity {
    Identity::from([n; 32])
}

/// The auditor of every fuzzed audit log (the seeds are sealed to it).
pub fn auditor() -> &'static Identity {
    static AUDITOR: OnceLock<Identity> = OnceLock::new();
    AUDITOR.get_or_init(|| Identity::from([7; 32]))
}

/// Hands out the fuzz input front to back; past its end every read gives zeros.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Bytes up to the next `0` (not included) or the end, at most `max`.
    pub fn field(&mut self, max: usize) -> &'a [u8] {
        let end = self
            .data
            .iter()
            .take(max)
            .position(|b| *b == 0)
            .unwrap_or(self.data.len().min(max));
        let (field, rest) = self.data.split_at(end);
        self.data = rest.strip_prefix(&[0]).unwrap_or(rest);
        field
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Splits `data` at every `separator`, into at most `max` parts (the last keeps the rest).
pub fn split<'a>(data: &'a [u8], separator: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + separator.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A bucket held in memory: what the fuzzer built is what the vault reads. Its `name`
/// is the tree name a sealed header binds, like a local bucket's directory name.
#[derive(Default)]
pub struct MemoryBucket {
    pub name: String,
    objects: HashMap<String, Vec<u8>>,
}

impl MemoryBucket {
    pub fn named(name: &str) -> Self {
        MemoryBucket {
            name: name.to_owned(),
            objects: HashMap::new(),
        }
    }

    pub fn insert(&mut self, key: &str, bytes: Vec<u8>) {
        self.objects.insert(key.to_owned(), bytes);
    }
}

impl Backend for MemoryBucket {
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        Ok(self
            .objects
            .iter()
            .map(|(key, bytes)| ObjectInfo {
                key: key.clone(),
                size: bytes.len() as u64,
            })
            .collect())
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        let bytes = self
            .objects
            .get(key)
            .ok_or_else(|| BackendError::NotFound {
                key: key.to_owned(),
            })?;
        let mut at = usize::try_from(offset).unwrap_or(usize::MAX);
        for buf in bufs.iter_mut() {
            let end = at.saturating_add(buf.len());
            let part = bytes.get(at..end).ok_or_else(|| BackendError::ShortRead {
                key: key.to_owned(),
                end: end as u64,
            })?;
            buf.copy_from_slice(part);
            at = end;
        }
        Ok(())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        Ok(self.objects.get(key).map(|b| b.len() as u64))
    }

    fn create(&self, key: &str, _overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        Err(BackendError::BadKey {
            key: key.to_owned(),
            reason: "the fuzz bucket is read-only",
        })
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        Err(BackendError::BadKey {
            key: key.to_owned(),
            reason: "the fuzz bucket is read-only",
        })
    }

    fn location(&self, key: &str) -> Result<String, BackendError> {
        Ok(if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.name)
        })
    }

    fn describe(&self) -> String {
        "fuzz memory bucket".to_owned()
    }
}

/// An anonymous in-memory file (memfd) with a path, for parsers that open a path. One per
/// thread, rewritten for each input.
pub struct MemoryFile {
    file: std::fs::File,
    path: PathBuf,
}

impl MemoryFile {
    pub fn new(name: &str) -> Self {
        let name = std::ffi::CString::new(name).expect("no NUL in the name");
        // SAFETY: a valid C string and no flags; the returned descriptor is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        MemoryFile { file, path }
    }

    /// Replaces the content with `bytes` and returns the path that opens it.
    pub fn holding(&mut self, bytes: &[u8]) -> &std::path::Path {
        use std::io::{Seek, SeekFrom};
        self.file.set_len(0).expect("truncate memfd");
        self.file.seek(SeekFrom::Start(0)).expect("seek memfd");
        self.file.write_all(bytes).expect("write memfd");
        &self.path
    }
}

// ---------------------------------------------------------------------------------------
// Audit logs. The verifier recomputes BLAKE3 tags from a key chain the fuzzer cannot know,
// so without help every mutated record stops at "modified". `fix_log` re-seals the
// segments' first keys to the auditor and re-tags every record (docs/AUDIT.md's chain), so
// the fuzzer reaches the checks of sequence numbers, prev links, segments and anchors.
// ---------------------------------------------------------------------------------------

const MAC_CONTEXT: &str = "smpfs audit v1 record mac";
const EVOLVE_CONTEXT: &str = "smpfs audit v1 key evolution";
const TAG_OPEN: &[u8] = b",\"tag\":\"";
const TAG_SUFFIX_LEN: usize = TAG_OPEN.len() + 64 + 2;
const ZERO_TAG: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What [`fix_log`] repairs.
#[derive(Clone, Copy, Debug)]
pub struct Fixes {
    /// Re-seal each mount record's `wrapped_key` and recompute every tag.
    pub keys_and_tags: bool,
    /// Point each record's `prev` at the tag of the line before it.
    pub prev: bool,
}

/// The `K_0` the fix-ups use for segment `segment` of log `log_id`, and its sealed form
/// (hex), sealed as `record::wrap_key` does but with randomness derived from `K_0`.
fn segment_key(log_id: &str, segment: u64) -> ([u8; 32], String) {
    static SEALED: OnceLock<Mutex<HashMap<(String, u64), ([u8; 32], String)>>> = OnceLock::new();
    let cache = SEALED.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap().get(&(log_id.to_owned(), segment)) {
        return hit.clone();
    }
    let mut hasher = blake3::Hasher::new_derive_key("smpfs fuzz segment key");
    hasher.update(log_id.as_bytes());
    hasher.update(&segment.to_le_bytes());
    let k0: [u8; 32] = *hasher.finalize().as_bytes();
    let randomness = SealRandomness {
        file_key: Zeroizing::new(blake3::derive_key("smpfs fuzz file key", &k0)),
        file_id: blake3::derive_key("smpfs fuzz file id", &k0)[..16]
            .try_into()
            .expect("16 bytes"),
        ephemeral: vec![Zeroizing::new(blake3::derive_key(
            "smpfs fuzz ephemeral",
            &k0,
        ))],
    };
    let recipient: Recipient = auditor().recipient();
    let (mut object, opened) = format::seal_header(
        &[recipient],
        &format!("audit/{log_id}/{segment}"),
        32,
        12,
        &randomness,
    )
    .expect("a valid one-chunk header");
    let mut chunk = vec![0u8; 32 + TAG_LEN];
    chunk[..32].copy_from_slice(&k0);
    opened.chunks.seal_chunk(0, true, &mut chunk);
    object.extend_from_slice(&chunk);
    let entry = (k0, hex::encode(object));
    let mut cache = cache.lock().unwrap();
    if cache.len() > 4096 {
        cache.clear();
    }
    cache.insert((log_id.to_owned(), segment), entry.clone());
    entry
}

/// Replaces the string value of the last `"name":"…"` in `line[..end]` with `value`.
fn replace_last_string(line: &mut Vec<u8>, end: usize, name: &str, value: &str) {
    let open = format!("\"{name}\":\"");
    let Some(start) = line[..end]
        .windows(open.len())
        .rposition(|w| w == open.as_bytes())
        .map(|at| at + open.len())
    else {
        return;
    };
    let Some(len) = line[start..end].iter().position(|b| *b == b'"') else {
        return;
    };
    line.splice(start..start + len, value.bytes());
}

/// Applies `fixes` to a log, line by line, as its writer would have written it.
pub fn fix_log(log: &[u8], fixes: Fixes) -> Vec<u8> {
    let mut out = Vec::with_capacity(log.len() + 1024);
    let mut key: Option<[u8; 32]> = None;
    let mut prev = ZERO_TAG.to_owned();
    let lines: Vec<&[u8]> = log.split(|b| *b == b'\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let mut line = raw.to_vec();
        let has_suffix = line.len() >= TAG_SUFFIX_LEN
            && line[line.len() - TAG_SUFFIX_LEN..].starts_with(TAG_OPEN)
            && line.ends_with(b"\"}");
        let body_end = if has_suffix {
            line.len() - TAG_SUFFIX_LEN
        } else {
            line.len()
        };
        if fixes.keys_and_tags {
            let value: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
            let field = |name: &str| value.as_ref().and_then(|v| v.get(name)).cloned();
            if field("event").and_then(|e| e.as_str().map(|s| s == "mount")) == Some(true) {
                let log_id = field("log_id")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let segment = field("segment").and_then(|v| v.as_u64()).unwrap_or(0);
                let (k0, sealed) = segment_key(&log_id, segment);
                replace_last_string(&mut line, body_end, "wrapped_key", &sealed);
                key = Some(k0);
            }
        }
        if fixes.prev {
            let end = if has_suffix {
                line.len() - TAG_SUFFIX_LEN
            } else {
                line.len()
            };
            replace_last_string(&mut line, end, "prev", &prev);
        }
        if has_suffix {
            let cut = line.len() - TAG_SUFFIX_LEN;
            if let (true, Some(k)) = (fixes.keys_and_tags, key.as_mut()) {
                let mut covered = line[..cut].to_vec();
                covered.push(b'}');
                let mac_key = blake3::derive_key(MAC_CONTEXT, k);
                let tag = hex::encode(blake3::keyed_hash(&mac_key, &covered).as_bytes());
                let digits = cut + TAG_OPEN.len();
                line[digits..digits + 64].copy_from_slice(tag.as_bytes());
                *k = blake3::derive_key(EVOLVE_CONTEXT, k);
            }
            let digits = cut + TAG_OPEN.len();
            prev = String::from_utf8_lossy(&line[digits..digits + 64]).into_owned();
        }
        out.extend_from_slice(&line);
        if i + 1 < lines.len() {
            out.push(b'\n');
        }
    }
    out
}
