//! The manifest of a zero-knowledge (v2) bucket: which path is which opaque object.
//!
//! Pure code, no I/O (`bucket` stores and loads it). A v2 bucket keeps every file under a
//! random object id and this manifest maps each path to its object, plaintext size, file
//! id, mtime and a hash of its header. The manifest is a chain of *segments*, one per
//! generation: a segment is either a snapshot (every entry) or a delta (puts and removes
//! on top of the generation before it). Each segment is stored as an ordinary sealed
//! object, so it is encrypted and authenticated to the bucket's recipients like any file.
//! `docs/FORMAT.md` §13 specifies the bytes; `tests/vectors/manifest-*` pin them.

use std::collections::BTreeMap;

use crate::backend::validate_key;
use crate::format::{MAX_PATH_LEN, MAX_RECIPIENTS};
use crate::keys::Recipient;

#[cfg(test)]
mod tests;

/// First eight bytes of every segment's plaintext.
pub const MAGIC: &[u8; 8] = b"SMPFSMF\0";
/// The only segment version this code reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of a segment before its recipients: magic, version, kind, generation, snapshot.
const PREFIX_LEN: usize = 8 + 1 + 1 + 8 + 8;
/// Bytes of a put after its path: object id, file id, header hash, size, object length,
/// mtime, flags.
const PUT_LEN: usize = 16 + 16 + 32 + 8 + 8 + 8 + 4 + 1;
/// Smallest possible operation: a tag and an empty path length (rejected later).
const MIN_OP_LEN: usize = 1 + 2;
/// Flag bit of a put: the object's plaintext was padded (`seal --pad`).
const FLAG_PADDED: u8 = 1;
/// Flag bit of a put: the header is a separate object (after `share`); its id and where
/// the chunks start in the object follow the flags.
const FLAG_DETACHED: u8 = 2;

/// Errors in decoding a segment or applying it; each means the manifest cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a manifest segment (bad magic)")]
    BadMagic,
    #[error("unsupported manifest version {0} (this smpfs reads version {VERSION}; upgrade it)")]
    UnsupportedVersion(u8),
    #[error("malformed manifest segment: {0}")]
    Malformed(&'static str),
    #[error("manifest segment is truncated")]
    Truncated,
    #[error("manifest segment has a bad path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("manifest generation {found} does not follow generation {expected}")]
    Discontinuous { expected: u64, found: u64 },
}

/// Where one file's object is and what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The random id naming the object ([`object_key`]).
    pub object_id: [u8; 16],
    /// The file id the object's header must carry.
    pub file_id: [u8; 16],
    /// BLAKE3 of the object's whole header: binds recipients, size, chunk size and path.
    pub header_hash: [u8; 32],
    /// Plaintext bytes shown (less than the sealed plaintext when padded).
    pub size: u64,
    /// Bytes of the sealed object (header, chunks and tags).
    pub object_len: u64,
    /// The source file's modification time: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Whether the sealed plaintext carries padding after `size` bytes.
    pub padded: bool,
    /// Set once `share` gave the file a new header: the object's own header is then
    /// ignored and its chunks are read after it.
    pub detached: Option<Detached>,
}

/// A file's header stored apart from its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Detached {
    /// The random id naming the header object ([`header_key`]).
    pub header_id: [u8; 16],
    /// Where chunk 0 starts in the file's object (the length of its original header).
    pub chunks_at: u64,
}

impl Entry {
    /// The object's key in the bucket.
    pub fn object_key(&self) -> String {
        object_key(&self.object_id)
    }

    /// The key of the object holding the header: a detached header's, else the file's.
    pub fn header_key(&self) -> String {
        match &self.detached {
            Some(detached) => header_key(&detached.header_id),
            None => self.object_key(),
        }
    }
}

/// The key of detached header `id`: `hdr/` ‖ the first two hex digits ‖ `/` ‖ all 32.
pub fn header_key(id: &[u8; 16]) -> String {
    let hex = hex::encode(id);
    format!("hdr/{}/{hex}", &hex[..2])
}

/// The key of object `id`: `obj/` ‖ the first two hex digits ‖ `/` ‖ all 32, so S3 can
/// partition by the fan-out prefix. Nothing in it depends on the file.
pub fn object_key(id: &[u8; 16]) -> String {
    let hex = hex::encode(id);
    format!("obj/{}/{hex}", &hex[..2])
}

/// One change in a delta segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds `path`, or replaces its entry.
    Put(String, Entry),
    /// Removes `path` (a path that is not there is ignored).
    Remove(String),
}

impl Op {
    /// The path it changes.
    pub fn path(&self) -> &str {
        match self {
            Op::Put(path, _) | Op::Remove(path) => path,
        }
    }
}

/// Whether a segment holds every entry or changes to the generation before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every entry, in path order.
    Snapshot,
    /// Changes on top of generation `generation - 1`.
    Delta,
}

/// One generation of the manifest, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Snapshot or delta.
    pub kind: Kind,
    /// This segment's generation (from 1); its object is `manifest/` ‖ 16 hex digits.
    pub generation: u64,
    /// The newest snapshot at or before this generation; a reader loads that snapshot
    /// and the deltas after it. Equals `generation` for a snapshot.
    pub snapshot: u64,
    /// Who new files are sealed to (the bucket's recipients), as of this generation.
    pub recipients: Vec<Recipient>,
    /// Puts only, in strictly increasing path order, for a snapshot; any, for a delta.
    pub ops: Vec<Op>,
}

impl Segment {
    /// The segment's bytes (the plaintext that is then sealed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + self.ops.len() * (PUT_LEN + 64));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(match self.kind {
            Kind::Snapshot => 0,
            Kind::Delta => 1,
        });
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.snapshot.to_le_bytes());
        out.extend_from_slice(&(self.recipients.len() as u16).to_le_bytes());
        for recipient in &self.recipients {
            out.extend_from_slice(&recipient.to_bytes());
        }
        out.extend_from_slice(&(self.ops.len() as u64).to_le_bytes());
        for op in &self.ops {
            let path = op.path().as_bytes();
            out.push(match op {
                Op::Put(..) => 1,
                Op::Remove(_) => 2,
            });
            out.extend_from_slice(&(path.len() as u16).to_le_bytes());
            out.extend_from_slice(path);
            if let Op::Put(_, entry) = op {
                out.extend_from_slice(&entry.object_id);
                out.extend_from_slice(&entry.file_id);
                out.extend_from_slice(&entry.header_hash);
                out.extend_from_slice(&entry.size.to_le_bytes());
                out.extend_from_slice(&entry.object_len.to_le_bytes());
                out.extend_from_slice(&entry.mtime.0.to_le_bytes());
                out.extend_from_slice(&entry.mtime.1.to_le_bytes());
                let mut flags = 0;
                if entry.padded {
                    flags |= FLAG_PADDED;
                }
                if entry.detached.is_some() {
                    flags |= FLAG_DETACHED;
                }
                out.push(flags);
                if let Some(detached) = &entry.detached {
                    out.extend_from_slice(&detached.header_id);
                    out.extend_from_slice(&detached.chunks_at.to_le_bytes());
                }
            }
        }
        out
    }

    /// Parses and checks a segment: every path a safe key, a snapshot's paths sorted and
    /// unique, counts bounded by the bytes present, nothing after the last operation.
    pub fn decode(bytes: &[u8]) -> Result<Segment, ManifestError> {
        let mut input = Input(bytes);
        if input.take(8)? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = input.u8()?;
        if version != VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let kind = match input.u8()? {
            0 => Kind::Snapshot,
            1 => Kind::Delta,
            _ => return Err(ManifestError::Malformed("unknown segment kind")),
        };
        let generation = input.u64()?;
        let snapshot = input.u64()?;
        let consistent = match kind {
            Kind::Snapshot => snapshot == generation,
            Kind::Delta => snapshot < generation,
        };
        if generation == 0 || snapshot == 0 || !consistent {
            return Err(ManifestError::Malformed("inconsistent generation numbers"));
        }
        let recipient_count = usize::from(input.u16()?);
        if recipient_count > MAX_RECIPIENTS {
            return Err(ManifestError::Malformed("too many recipients"));
        }
        let recipients = (0..recipient_count)
            .map(|_| Ok(Recipient::from(input.array::<32>()?)))
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let op_count = input.u64()?;
        if op_count > (input.0.len() / MIN_OP_LEN) as u64 {
            return Err(ManifestError::Truncated);
        }
        let mut ops = Vec::with_capacity(op_count as usize);
        for _ in 0..op_count {
            let tag = input.u8()?;
            let path_len = usize::from(input.u16()?);
            if path_len > MAX_PATH_LEN {
                return Err(ManifestError::Malformed("path too long"));
            }
            let path = std::str::from_utf8(input.take(path_len)?)
                .map_err(|_| ManifestError::Malformed("path is not UTF-8"))?
                .to_owned();
            validate_key(&path).map_err(|e| ManifestError::BadPath {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            ops.push(match tag {
                1 => Op::Put(path, input.entry()?),
                2 => Op::Remove(path),
                _ => return Err(ManifestError::Malformed("unknown operation")),
            });
        }
        if !input.0.is_empty() {
            return Err(ManifestError::Malformed("bytes after the last operation"));
        }
        if kind == Kind::Snapshot {
            let sorted = ops.windows(2).all(|w| w[0].path() < w[1].path());
            if !sorted || ops.iter().any(|op| matches!(op, Op::Remove(_))) {
                return Err(ManifestError::Malformed(
                    "snapshot entries must be puts in strictly increasing path order",
                ));
            }
        }
        Ok(Segment {
            kind,
            generation,
            snapshot,
            recipients,
            ops,
        })
    }
}

/// The bytes still to decode.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ManifestError> {
        if self.0.len() < len {
            return Err(ManifestError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, ManifestError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn entry(&mut self) -> Result<Entry, ManifestError> {
        let object_id = self.array()?;
        let file_id = self.array()?;
        let header_hash = self.array()?;
        let size = self.u64()?;
        let object_len = self.u64()?;
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        if nanos >= 1_000_000_000 {
            return Err(ManifestError::Malformed("mtime nanoseconds out of range"));
        }
        let flags = self.u8()?;
        if flags & !(FLAG_PADDED | FLAG_DETACHED) != 0 {
            return Err(ManifestError::Malformed("unknown entry flags"));
        }
        let detached = if flags & FLAG_DETACHED != 0 {
            Some(Detached {
                header_id: self.array()?,
                chunks_at: self.u64()?,
            })
        } else {
            None
        };
        Ok(Entry {
            object_id,
            file_id,
            header_hash,
            size,
            object_len,
            mtime: (secs, nanos),
            padded: flags & FLAG_PADDED != 0,
            detached,
        })
    }
}

/// The manifest as of one generation: every path's entry and the bucket's recipients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The generation this state is (0 for a bucket with no manifest yet).
    pub generation: u64,
    /// The snapshot the chain up to `generation` starts from.
    pub snapshot: u64,
    /// Who new files are sealed to.
    pub recipients: Vec<Recipient>,
    /// Every file, by path.
    pub entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// The state a chain of segments describes: `segments` must be a snapshot followed by
    /// the deltas of the generations right after it, each naming that snapshot.
    pub fn from_chain(segments: &[Segment]) -> Result<Manifest, ManifestError> {
        let (first, rest) = segments
            .split_first()
            .ok_or(ManifestError::Malformed("no segments"))?;
        if first.kind != Kind::Snapshot {
            return Err(ManifestError::Malformed(
                "the chain does not start with a snapshot",
            ));
        }
        let mut manifest = Manifest {
            generation: first.generation,
            snapshot: first.generation,
            recipients: first.recipients.clone(),
            entries: BTreeMap::new(),
        };
        for op in &first.ops {
            if let Op::Put(path, entry) = op {
                manifest.entries.insert(path.clone(), *entry);
            }
        }
        for delta in rest {
            manifest.apply(delta)?;
        }
        Ok(manifest)
    }

    /// Applies `delta`, which must be the next generation's and name this chain's
    /// snapshot.
    pub fn apply(&mut self, delta: &Segment) -> Result<(), ManifestError> {
        if delta.generation != self.generation + 1 {
            return Err(ManifestError::Discontinuous {
                expected: self.generation + 1,
                found: delta.generation,
            });
        }
        if delta.kind != Kind::Delta || delta.snapshot != self.snapshot {
            return Err(ManifestError::Malformed(
                "delta does not build on this snapshot",
            ));
        }
        for op in &delta.ops {
            match op {
                Op::Put(path, entry) => {
                    self.entries.insert(path.clone(), *entry);
                }
                Op::Remove(path) => {
                    self.entries.remove(path);
                }
            }
        }
        self.recipients.clone_from(&delta.recipients);
        self.generation = delta.generation;
        Ok(())
    }

    /// The next generation's segment carrying `ops`: a snapshot of the result when the
    /// chain since the last snapshot is `snapshot_every` long (or there is no manifest
    /// yet), else a delta.
    pub fn next_segment(&self, ops: Vec<Op>, snapshot_every: u64) -> Segment {
        let generation = self.generation + 1;
        if self.generation == 0 || generation - self.snapshot >= snapshot_every {
            let mut after = self.clone();
            for op in ops {
                match op {
                    Op::Put(path, entry) => {
                        after.entries.insert(path, entry);
                    }
                    Op::Remove(path) => {
                        after.entries.remove(&path);
                    }
                }
            }
            Segment {
                kind: Kind::Snapshot,
                generation,
                snapshot: generation,
                recipients: self.recipients.clone(),
                ops: after
                    .entries
                    .into_iter()
                    .map(|(path, entry)| Op::Put(path, entry))
                    .collect(),
            }
        } else {
            Segment {
                kind: Kind::Delta,
                generation,
                snapshot: self.snapshot,
                recipients: self.recipients.clone(),
                ops,
            }
        }
    }

    /// The entry of `path` and every entry below directory `path` (all for `""`).
    pub fn below<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        let prefix = format!("{path}/");
        self.entries
            .range::<str, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(path))
            .filter(move |(p, _)| path.is_empty() || p.as_str() == path || p.starts_with(&prefix))
    }
}

/// The plaintext length a file of `len` bytes is padded to with `seal --pad`: Padmé
/// (Nikitin et al., PETS 2019) keeps the top ⌊log2 ⌊log2 len⌋⌋ + 1 bits of the length and
/// rounds the rest up, so at most 12.5% is added and a length leaks only O(log log len)
/// bits.
pub fn padded_len(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let exponent = 63 - u64::from(len.leading_zeros());
    let significant = 64 - u64::from(exponent.leading_zeros());
    let mask = (1u64 << (exponent - significant)) - 1;
    len.checked_add(mask).map_or(!mask, |l| l & !mask)
}
