//! A mounted view of a bucket: the object tree as inodes, opened sealed files, and reads
//! through the locked chunk cache with sequential read-ahead. All the filesystem's logic
//! lives here, testable without FUSE; `fs` only translates requests and errors.
//!
//! Visibility rule: a directory's files are *resolved* the first time the directory is
//! listed or looked up in. Resolving reads and authenticates each header with our identity
//! and checks the object's size and path. Objects that are not sealed, not sealed to this
//! identity, malformed, truncated, extended or moved are hidden, counted in one warning
//! per directory.

mod ahead;
mod fold;
mod interrupt;
mod object;
mod resolve;
mod tree;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Weak;

use parking_lot::{Mutex, RwLock};

pub use object::{Plaintext, SealedObject};
pub use tree::{Ino, ROOT_INO};
pub use volumes::VOLUMES_DIR;

use crate::audit::{Actor, AuditError, AuditLog, Event, EventKind};
use crate::backend::{Backend, BackendError, ReadProfile};
use crate::bucket::{BucketError, ManifestStore};
use crate::cache::{CacheError, ChunkCache, LockedBuf, MAX_RUN};
use crate::dicom::volume;
use crate::format::{FormatError, TAG_LEN};
use crate::gpu::abi::VolumeShape;
use crate::gpu::{GpuError, Load, Loader, SinkKind, Transfer};
use crate::keys::Identity;
use crate::manifest::Manifest;
use crate::workers::Workers;
use tree::Tree;
use volumes::Virtual;

/// Errors of the mounted view; `fs` maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("unknown file handle")]
    BadHandle,
    #[error("keys were purged; the mount is locked")]
    Purged,
    #[error(
        "this mount requires a purpose: none is set for the reading process's session \
         (run `smpfs purpose MOUNTPOINT TEXT` in it)"
    )]
    NoPurpose,
    #[error("{key}: {source}")]
    Format {
        key: String,
        #[source]
        source: FormatError,
    },
    #[error(
        "{key}: sealed for location {sealed_as:?} in its bucket but found at {location:?} \
         (moved or swapped object)"
    )]
    PathMismatch {
        key: String,
        location: String,
        sealed_as: String,
    },
    #[error(
        "{key}: object is {actual} bytes but its header says {expected} (truncated or extended)"
    )]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{key}: object does not match its manifest entry (swapped, replaced or replayed object)"
    )]
    ManifestMismatch { key: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("audit log cannot be written, so no data is served: {0}")]
    Audit(#[from] AuditError),
    #[error("bytes {offset}..+{length} end past the end of the file ({size} bytes)")]
    PastEof { offset: u64, length: u64, size: u64 },
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("volume cannot be assembled: {0}")]
    Volume(String),
    #[error("GPU loads and info are for sealed files, not volumes")]
    NotSealed,
    #[error("interrupted: the caller was signalled while the directory was being checked")]
    Interrupted,
}

/// Plaintext a GPU load decrypts per step; the next step's chunks are prefetched in the
/// background meanwhile.
const GPU_WINDOW: u64 = 4 << 20;

/// Settings of one mount's view.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Bytes of locked memory for decrypted chunks.
    pub cache_size: usize,
    /// Locked reply buffers (one per concurrent read request).
    pub reply_buffers: usize,
    /// Largest read request, in bytes.
    pub max_read: usize,
    /// Where GPU loads go (`-o gpu_sink=`).
    pub gpu_sink: SinkKind,
    /// Whether DICOM series appear as NIfTI-1 volumes under [`VOLUMES_DIR`] (`-o volumes`).
    pub volumes: bool,
    /// Whether a reader's reads are folded into growing range and per-chunk records
    /// ([`fold`]; `-o audit_reads=folded`, the default) or recorded one per request.
    pub fold_reads: bool,
    /// The purpose records carry when the reader's session stated none (`-o purpose=`).
    pub purpose: Option<String>,
    /// Refuse opens and reads by a process whose session stated no purpose and the mount
    /// none either (`-o require_purpose`).
    pub require_purpose: bool,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            cache_size: 256 << 20,
            reply_buffers: 8,
            max_read: 1 << 20,
            gpu_sink: SinkKind::default(),
            volumes: false,
            fold_reads: true,
            purpose: None,
            require_purpose: false,
        }
    }
}

/// What `stat` shows for an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The inode number.
    pub ino: Ino,
    /// Directory or regular file.
    pub is_dir: bool,
    /// Plaintext size (authenticated) for files; 0 for directories.
    pub size: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// What `stat` shows for it (its inode among them).
    pub attr: Attr,
}

/// What the GPU info ioctl reports about an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Authenticated plaintext size.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The sealed file's id (public, from its header); zero for a volume.
    pub file_id: [u8; 16],
    /// For a virtual volume, its voxels' type and shape; `size` then counts voxel bytes.
    pub volume: Option<VolumeShape>,
}

/// What a GPU load copies from.
enum GpuSource<'a> {
    /// A sealed file's plaintext, through the chunk cache.
    Sealed(&'a Arc<SealedObject>),
    /// An assembled volume's voxels (its `.nii` after the header), already in locked memory.
    Voxels(&'a [u8]),
}

/// Who makes a request, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// User id of the calling process.
    pub uid: u32,
    /// Group id of the calling process.
    pub gid: u32,
    /// Thread id of the caller.
    pub pid: u32,
}

/// What a handle reads from.
enum Source {
    /// A sealed object, through the chunk cache.
    Sealed(Arc<SealedObject>),
    /// An assembled volume, shared by the handles open on it.
    Volume(Arc<Virtual>, Arc<LockedBuf>),
    /// A `.nii.error` text.
    Text(Arc<Virtual>),
}

impl Source {
    /// An audit event of `kind` naming this file.
    fn event(&self, kind: EventKind, actor: &Actor) -> Event {
        let event = Event::new(kind).actor(actor).path(self.path());
        match self {
            Source::Sealed(object) => event.file_id(object.file_id()),
            Source::Volume(..) | Source::Text(_) => event,
        }
    }

    /// The path audit records name it by.
    fn path(&self) -> &str {
        match self {
            Source::Sealed(object) => object.path(),
            Source::Volume(entry, _) | Source::Text(entry) => entry.path(),
        }
    }

    /// Bytes a read of it can return.
    fn size(&self) -> u64 {
        match self {
            Source::Sealed(object) => object.size(),
            Source::Volume(_, data) => data.len() as u64,
            Source::Text(entry) => match entry.as_ref() {
                Virtual::Error { text, .. } => text.len() as u64,
                _ => 0,
            },
        }
    }

    /// Bytes a random read's folded record covers at least: a sealed file's chunk, the
    /// unit smpfs decrypts; a file assembled in memory's default chunk size.
    fn audit_unit(&self) -> u64 {
        match self {
            Source::Sealed(object) => object.layout().chunk_size() as u64,
            Source::Volume(..) | Source::Text(_) => 1 << crate::format::DEFAULT_CHUNK_LOG2,
        }
    }

    /// What GPU loads and the info command see: a sealed file, or a volume's voxels.
    fn gpu(&self) -> Result<GpuSource<'_>, VaultError> {
        match self {
            Source::Sealed(object) => Ok(GpuSource::Sealed(object)),
            Source::Volume(_, data) => Ok(GpuSource::Voxels(&data[volume::HEADER_LEN..])),
            Source::Text(_) => Err(VaultError::NotSealed),
        }
    }
}

struct Handle {
    /// The file it reads, to open it again after a lock.
    ino: Ino,
    source: Source,
    readahead: Mutex<Readahead>,
    /// The last caller's audit identity, reused while the same thread keeps reading.
    actor: Mutex<Actor>,
    bytes_read: AtomicU64,
    /// What the read records written so far cover.
    announced: Mutex<fold::Announced>,
}

impl Handle {
    fn actor(&self, caller: Caller) -> Actor {
        let mut actor = self.actor.lock();
        if (actor.uid, actor.gid, actor.pid) != (caller.uid, caller.gid, caller.pid) {
            *actor = Actor::from_request(caller.uid, caller.gid, caller.pid);
        }
        actor.clone()
    }
}

/// Sequential-read detection for one open handle.
#[derive(Default)]
struct Readahead {
    /// Where the next read starts if the reader is sequential.
    next_offset: u64,
    /// Current window in bytes; 0 when the reader is not sequential.
    window: u64,
    /// End of what has already been asked for, in chunks.
    prefetched_until: u64,
    /// Held while the reader is sequential, so the windows share the cache.
    stream: Option<Stream>,
}

/// Counts one sequential reader in [`Vault::streams`] for as long as it lives, however
/// the reader ends (a seek, a release, a purge dropping the handle).
struct Stream(Arc<AtomicUsize>);

impl Stream {
    fn join(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Stream(Arc::clone(streams))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The mounted view.
pub struct Vault {
    backend: Arc<dyn Backend>,
    identity: RwLock<Option<Identity>>,
    /// Held shared by every request that uses keys or plaintext (resolving, open, read,
    /// release, GPU loads, read-ahead jobs) and exclusively by [`Vault::purge`]: a purge
    /// waits for the requests in flight, and nothing started before it can put a key or
    /// plaintext back after it. Lock order: this gate, then `identity`.
    purge_gate: RwLock<()>,
    /// Requests holding the purge gate now (`smpfs status`).
    in_flight: AtomicU64,
    /// Purposes stated with `smpfs purpose`, by session id.
    purposes: RwLock<HashMap<u32, String>>,
    /// Purges so far; a read-ahead job queued before the latest one is dropped.
    purges: AtomicU64,
    cache: ChunkCache,
    tree: RwLock<Tree>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Handles open when the mount was locked, by the file they read: their keys and
    /// plaintext were dropped, and they are opened again on their first use after unlock.
    locked_handles: Mutex<HashMap<u64, Ino>>,
    /// Files opened since [`Vault::take_served`] last ran: the kernel may hold their
    /// plaintext in its page cache (shared and private mappings, `kernel_cache`).
    served: Mutex<HashSet<Ino>>,
    next_handle: AtomicU64,
    readahead_workers: Workers,
    /// Files opened ahead of readers that open a directory's files in order.
    ahead: ahead::FilesAhead,
    /// Handles reading sequentially now: their read-ahead windows share the cache.
    streams: Arc<AtomicUsize>,
    /// How the backend wants read-ahead scheduled.
    profile: ReadProfile,
    gpu: Loader,
    /// Where records go; replaced when the log is rotated ([`Vault::rotate_audit`]).
    audit: RwLock<Option<Arc<AuditLog>>>,
    /// When the last request arrived, as milliseconds since `started`.
    last_request_ms: AtomicU64,
    started: std::time::Instant,
    /// Set once the mount ended: the audit segment is sealed and no unlock is possible.
    sealed: std::sync::atomic::AtomicBool,
    config: VaultConfig,
    /// The `.volumes` directory's inode, with `-o volumes`.
    volumes_dir: Option<Ino>,
    /// Set once `.volumes` was populated; held while populating.
    volumes_ready: Mutex<bool>,
    /// Assembled volumes by inode, while a handle (or `last_volume`) holds them.
    assembled: Mutex<HashMap<Ino, Weak<LockedBuf>>>,
    /// The volume whose last handle was released most recently, kept assembled: readers
    /// such as nibabel open a file once for its header and again for its data.
    last_volume: Mutex<Option<Arc<LockedBuf>>>,
    /// A v2 bucket's manifest store and the manifest the tree shows; `None` for v1.
    manifest: Option<(ManifestStore, Mutex<Manifest>)>,
}

/// What a [`Vault::refresh`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The manifest generation shown now.
    pub generation: u64,
    /// Files added (0 when nothing changed, as the two counts below).
    pub added: usize,
    /// Files removed.
    pub removed: usize,
    /// Files whose entry was replaced.
    pub replaced: usize,
    /// Each name that changed, with its directory, for the kernel to forget.
    pub names: Vec<(Ino, String)>,
}

impl Vault {
    /// Builds the tree (from `manifest`, a v2 bucket's store and loaded manifest, or else
    /// from a listing of the bucket) and locks the cache arena. With `audit`, every open,
    /// read and release is recorded before it is answered; `None` (benchmarks only)
    /// records nothing.
    pub fn new(
        backend: Arc<dyn Backend>,
        identity: Identity,
        config: VaultConfig,
        audit: Option<Arc<AuditLog>>,
        manifest: Option<(ManifestStore, Manifest)>,
    ) -> Result<Self, VaultError> {
        let slot_len = (1 << crate::format::CHUNK_LOG2_RANGE.end()) + TAG_LEN;
        let cache = ChunkCache::new(
            config.cache_size,
            slot_len,
            config.reply_buffers,
            config.max_read,
        )?;
        let mut tree = match &manifest {
            Some((_, manifest)) => Tree::from_manifest(manifest),
            None => Tree::build(backend.list()?),
        };
        let volumes_dir = if config.volumes {
            let dir = tree.add_dir(ROOT_INO, VOLUMES_DIR);
            if dir.is_none() {
                tracing::warn!("the bucket has {VOLUMES_DIR} at its root: no volumes are shown");
            }
            dir
        } else {
            None
        };
        let profile = backend.read_profile();
        let vault = Vault {
            backend,
            identity: RwLock::new(Some(identity)),
            purge_gate: RwLock::new(()),
            in_flight: AtomicU64::new(0),
            purposes: RwLock::new(HashMap::new()),
            purges: AtomicU64::new(0),
            cache,
            tree: RwLock::new(tree),
            handles: Mutex::new(HashMap::new()),
            locked_handles: Mutex::new(HashMap::new()),
            served: Mutex::new(HashSet::new()),
            next_handle: AtomicU64::new(1),
            // Read-ahead yields to request threads: a reader waiting on its reply is on the
            // critical path, work for its later requests is not (a single reader gained 12%).
            readahead_workers: Workers::new(profile.parallel_requests, "smpfs-readahead", 5),
            ahead: ahead::FilesAhead::new(profile.files_ahead),
            streams: Arc::new(AtomicUsize::new(0)),
            profile,
            gpu: Loader::new(config.gpu_sink),
            audit: RwLock::new(audit),
            last_request_ms: AtomicU64::new(0),
            sealed: std::sync::atomic::AtomicBool::new(false),
            started: std::time::Instant::now(),
            config,
            volumes_dir,
            volumes_ready: Mutex::new(false),
            assembled: Mutex::new(HashMap::new()),
            last_volume: Mutex::new(None),
            manifest: manifest.map(|(store, manifest)| (store, Mutex::new(manifest))),
        };
        if let Some(generation) = vault.generation() {
            // The generation mounted is audited, so audit anchors pin it too.
            vault.record(
                Event::new(EventKind::Refresh)
                    .detail(serde_json::json!({ "generation": generation, "at_mount": true })),
            )?;
        }
        Ok(vault)
    }

    /// The manifest generation shown, for a v2 bucket.
    pub fn generation(&self) -> Option<u64> {
        self.manifest.as_ref().map(|(_, m)| m.lock().generation)
    }

    /// Reads a v2 bucket's manifest again if it has a newer generation (one small request
    /// when it has not) and moves the tree to it; files open keep reading the objects
    /// they opened. Every refresh is audited, a refused one (a rollback, a damaged
    /// manifest) with its error. `None` for a v1 bucket.
    pub fn refresh(&self) -> Result<Option<Refreshed>, VaultError> {
        let Some((store, shown)) = &self.manifest else {
            return Ok(None);
        };
        let _gate = self.enter();
        if self.is_locked() {
            return Err(VaultError::Purged);
        }
        let mut shown = shown.lock();
        let previous = shown.generation;
        let loaded = store.newer_than(previous).and_then(|newer| match newer {
            None => Ok(None),
            Some(newer) => match self.identity.read().as_ref() {
                Some(identity) => store.load_generation(identity, newer).map(Some),
                None => Ok(None),
            },
        });
        let next = match loaded {
            Ok(Some(next)) => next,
            Ok(None) => {
                self.record(Event::new(EventKind::Refresh).detail(serde_json::json!({
                    "generation": previous,
                    "changed": false,
                })))?;
                return Ok(Some(Refreshed {
                    generation: previous,
                    ..Refreshed::default()
                }));
            }
            Err(e) => {
                self.record(
                    Event::new(EventKind::Refresh)
                        .detail(serde_json::json!({ "generation": previous }))
                        .result(format!("refused: {e}")),
                )?;
                return Err(e.into());
            }
        };
        let mut refreshed = Refreshed {
            generation: next.generation,
            ..Refreshed::default()
        };
        for (path, entry) in &next.entries {
            match shown.entries.get(path) {
                None => refreshed.added += 1,
                Some(old) if old != entry => refreshed.replaced += 1,
                Some(_) => {}
            }
        }
        refreshed.removed = shown
            .entries
            .keys()
            .filter(|path| !next.entries.contains_key(*path))
            .count();
        self.record(Event::new(EventKind::Refresh).detail(serde_json::json!({
            "generation": next.generation,
            "previous": previous,
            "changed": true,
            "added": refreshed.added,
            "removed": refreshed.removed,
            "replaced": refreshed.replaced,
        })))?;
        refreshed.names = self.tree.write().apply(&shown, &next);
        *shown = next;
        Ok(Some(refreshed))
    }

    /// The opened object of sealed file `ino`: a v2 file is opened (its header checked
    /// against its manifest entry) on first use.
    fn object_of(&self, ino: Ino) -> Result<Arc<SealedObject>, VaultError> {
        let bound = {
            let tree = self.tree.read();
            match tree.object(ino) {
                Ok(object) => return Ok(object),
                Err(e) => tree.bound(ino).ok_or(e)?,
            }
        };
        let (key, size, entry) = bound;
        let identity = self.identity.read();
        let identity = identity.as_ref().ok_or(VaultError::Purged)?;
        let path = self.tree.read().path_of(ino);
        let object = self
            .open_object(&key, size, identity, ino, Some(&entry))?
            .with_path(path);
        let object = Arc::new(object);
        crate::harden::scrub_stack();
        self.tree.write().set_object(ino, Arc::clone(&object));
        Ok(object)
    }

    /// The backend's description, for logs.
    /// Requests (FUSE requests, read-ahead parts, GPU loads) being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Enters the purge gate shared, counted in [`Vault::in_flight`] until dropped.
    fn enter(&self) -> InFlight<'_> {
        let gate = self.purge_gate.read();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            _gate: gate,
            count: &self.in_flight,
        }
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The locked cache (for stats and its size).
    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    /// The loader GPU loads of this mount run on.
    pub fn gpu(&self) -> &Loader {
        &self.gpu
    }

    /// Notes that a request arrived (for the idle timeout).
    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_request_ms.store(now, Ordering::Relaxed);
    }

    /// How long no request arrived while no file was open; zero while a file is open.
    pub fn idle_for(&self) -> std::time::Duration {
        if !self.handles.lock().is_empty() || !self.locked_handles.lock().is_empty() {
            return std::time::Duration::ZERO;
        }
        let last = std::time::Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Attributes of `ino`; a file not checked since an unlock has its directory resolved
    /// again first (on behalf of `caller`). While locked, a file answers with what its last
    /// check found.
    pub fn getattr(&self, ino: Ino, caller: Caller) -> Result<Attr, VaultError> {
        let _gate = self.enter();
        if self.is_locked() {
            // Lock drops the kernel's cached attributes with the page cache: answer from
            // the last check, so that an open reaches `open` and is refused (and audited).
            let tree = self.tree.read();
            return match tree.attr(ino) {
                Some(attr) => Ok(attr),
                None => tree.last_checked_attr(ino).ok_or(VaultError::Purged),
            };
        }
        self.resolve_parent_of(ino, caller)?;
        self.tree.read().attr(ino).ok_or(VaultError::NotFound)
    }

    /// Looks `name` up in directory `parent`, resolving the directory first.
    pub fn lookup(&self, parent: Ino, name: &str, caller: Caller) -> Result<Attr, VaultError> {
        let _gate = self.enter();
        self.resolve_dir(parent, caller)?;
        let tree = self.tree.read();
        let ino = tree.child(parent, name).ok_or(VaultError::NotFound)?;
        tree.attr(ino).ok_or(VaultError::NotFound)
    }

    /// Up to `limit` entries of directory `ino` (without `.` and `..`) in name order,
    /// after entry `after` (from the start without it), resolving the directory first.
    pub fn readdir(
        &self,
        ino: Ino,
        after: Option<Ino>,
        limit: usize,
        caller: Caller,
    ) -> Result<Vec<DirEntry>, VaultError> {
        let _gate = self.enter();
        self.resolve_dir(ino, caller)?;
        self.tree.read().entries(ino, after, limit)
    }

    /// The read-only extended attributes of `ino`, by name: for a sealed file its file id
    /// (hex), recipient count, chunk size and format; none for directories and volumes.
    pub fn xattrs(
        &self,
        ino: Ino,
        caller: Caller,
    ) -> Result<Vec<(&'static str, String)>, VaultError> {
        let _gate = self.enter();
        self.resolve_parent_of(ino, caller)?;
        let tree = self.tree.read();
        if tree.attr(ino).is_none() {
            return Err(VaultError::NotFound);
        }
        Ok(match tree.object(ino) {
            Ok(object) => vec![
                ("user.smpfs.file_id", hex::encode(object.file_id())),
                ("user.smpfs.recipients", object.recipients().to_string()),
                (
                    "user.smpfs.chunk_size",
                    object.layout().chunk_size().to_string(),
                ),
                ("user.smpfs.sealed", "smpfs v1".to_owned()),
            ],
            Err(_) => Vec::new(),
        })
    }

    /// What `df` shows: bytes and count of the visible files. A file whose header was
    /// checked counts its plaintext size; one not checked yet, its object's size (a bound
    /// from above).
    pub fn usage(&self) -> (u64, u64) {
        self.tree.read().usage()
    }

    /// The parent of directory `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Result<Ino, VaultError> {
        self.tree.read().parent(ino).ok_or(VaultError::NotFound)
    }

    /// Opens file `ino` for reading; returns a handle for [`Vault::read`]. The open is
    /// audited (or the refusal, as `denied`) before it is answered.
    pub fn open(self: &Arc<Self>, ino: Ino, caller: Caller) -> Result<u64, VaultError> {
        let _gate = self.enter();
        let actor = Actor::from_request(caller.uid, caller.gid, caller.pid);
        if self.identity.read().is_none() {
            let path = self.tree.read().audit_path(ino).unwrap_or_default();
            self.record(
                Event::new(EventKind::Denied)
                    .actor(&actor)
                    .path(&path)
                    .result("EACCES: keys were purged"),
            )?;
            return Err(VaultError::Purged);
        }
        let path = self.tree.read().audit_path(ino).unwrap_or_default();
        self.require_purpose(caller, &path)?;
        let handle = self.open_handle(ino, caller, actor, serde_json::Value::Null)?;
        if matches!(handle.source, Source::Sealed(_)) {
            self.open_files_ahead(ino);
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, handle);
        Ok(fh)
    }

    /// Queues the files to open ahead of a reader that just opened `ino` (see `ahead`).
    /// A job queued before a purge is dropped, as read-ahead is.
    fn open_files_ahead(self: &Arc<Self>, ino: Ino) {
        let files = self.ahead.opened(&self.tree.read(), ino);
        let purges = self.purges.load(Ordering::Acquire);
        for file in files {
            let vault = Arc::clone(self);
            self.readahead_workers.spawn(move || {
                {
                    let _gate = vault.enter();
                    if vault.purges.load(Ordering::Acquire) == purges {
                        // A failure is the file's own open's to report.
                        let _ = vault.object_of(file);
                    }
                }
                vault.ahead.finished(file);
            });
        }
    }

    /// Opens file `ino` for `actor` (resolving its directory first if needed) and audits
    /// the open, with `detail` when it is not null.
    fn open_handle(
        &self,
        ino: Ino,
        caller: Caller,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Result<Arc<Handle>, VaultError> {
        self.resolve_parent_of(ino, caller)?;
        self.served.lock().insert(ino);
        let entry = self.tree.read().virtual_file(ino);
        let source = match entry {
            Some(entry) => self.open_virtual(ino, entry, &actor, caller)?,
            None => {
                let object = match self.object_of(ino) {
                    Ok(object) => object,
                    Err(e) => {
                        let path = self.tree.read().audit_path(ino).unwrap_or_default();
                        self.record(
                            Event::new(EventKind::IntegrityFailure)
                                .actor(&actor)
                                .path(&path)
                                .result(format!("EIO: {e}")),
                        )?;
                        return Err(e);
                    }
                };
                let source = Source::Sealed(object);
                let mut event = source.event(EventKind::Open, &actor).result("ok");
                if !detail.is_null() {
                    event = event.detail(detail);
                }
                self.record(event)?;
                source
            }
        };
        let unit = source.audit_unit();
        Ok(Arc::new(Handle {
            ino,
            source,
            readahead: Mutex::new(Readahead::default()),
            actor: Mutex::new(actor),
            bytes_read: AtomicU64::new(0),
            announced: Mutex::new(fold::Announced::new(unit)),
        }))
    }

    /// Opens a `.volumes` file: a volume is assembled (or shared with the handles already
    /// open on it); the open, or its failure, is audited with the series and slice count.
    fn open_virtual(
        &self,
        ino: Ino,
        entry: Arc<Virtual>,
        actor: &Actor,
        caller: Caller,
    ) -> Result<Source, VaultError> {
        let event = |source: &Source| {
            source
                .event(EventKind::Open, actor)
                .detail(entry.audit_detail())
        };
        let Virtual::Volume { plan, .. } = entry.as_ref() else {
            let source = Source::Text(Arc::clone(&entry));
            self.record(event(&source).result("ok"))?;
            return Ok(source);
        };
        let data = {
            let mut assembled = self.assembled.lock();
            match assembled.get(&ino).and_then(Weak::upgrade) {
                Some(data) => Ok(data),
                None => self.assemble(plan, caller).map(|data| {
                    let data = Arc::new(data);
                    assembled.insert(ino, Arc::downgrade(&data));
                    data
                }),
            }
        };
        match data {
            Ok(data) => {
                let source = Source::Volume(Arc::clone(&entry), data);
                self.record(event(&source).result("ok"))?;
                Ok(source)
            }
            Err(e) => {
                let source = Source::Text(Arc::clone(&entry));
                if let Err(audit) = self.record(event(&source).result(format!("EIO: {e}"))) {
                    tracing::error!("failed volume open not audited: {audit}");
                }
                Err(e)
            }
        }
    }

    /// Decrypts and decodes the slices of `plan` into a new locked buffer.
    fn assemble(
        &self,
        plan: &volume::VolumePlan<Ino>,
        caller: Caller,
    ) -> Result<LockedBuf, VaultError> {
        let started = std::time::Instant::now();
        let mut objects = Vec::with_capacity(plan.members.len());
        for (ino, _) in &plan.members {
            self.resolve_parent_of(*ino, caller)?;
            objects.push(self.tree.read().object(*ino)?);
        }
        let volume = volumes::assemble(&self.cache, plan, &objects)?;
        tracing::info!(
            slices = plan.slices.len(),
            bytes = volume.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volume assembled"
        );
        Ok(volume)
    }

    /// Forgets a handle, recording how many bytes were read through it.
    pub fn release(&self, fh: u64, caller: Caller) {
        let _gate = self.enter();
        let Some(handle) = self.handles.lock().remove(&fh) else {
            self.locked_handles.lock().remove(&fh);
            return;
        };
        // The kernel sends release without a process (pid 0) once the last descriptor is
        // closed; the record then names the last process that read through the handle.
        let actor = if caller.pid == 0 {
            handle.actor.lock().clone()
        } else {
            handle.actor(caller)
        };
        let event = handle
            .source
            .event(EventKind::Release, &actor)
            .result("ok")
            .detail(serde_json::json!({ "bytes_read": handle.bytes_read.load(Ordering::Relaxed) }));
        if let Err(e) = self.record(event) {
            tracing::error!("release not audited: {e}");
        }
        if let Source::Volume(_, data) = &handle.source {
            // Replacing the previous one drops (and so zeroizes) it unless it is open.
            *self.last_volume.lock() = Some(Arc::clone(data));
        }
    }

    /// Writes `event`, its actor carrying the purpose of its session (or the mount's).
    fn record(&self, mut event: Event) -> Result<(), VaultError> {
        let audit = self.audit.read();
        let Some(log) = audit.as_ref() else {
            return Ok(());
        };
        if let Some(actor) = &mut event.actor {
            if actor.purpose.is_none() {
                actor.purpose = self.purpose_of(actor.pid);
            }
        }
        Ok(log.record(event)?)
    }

    /// The audit log records go to now.
    pub fn audit_log(&self) -> Option<Arc<AuditLog>> {
        self.audit.read().clone()
    }

    /// Rotates the audit log with `rotate` (which seals the current one and returns the
    /// next) while no request is in flight, so no record can find the old log sealed.
    pub fn rotate_audit(
        &self,
        rotate: impl FnOnce(&AuditLog) -> Result<AuditLog, AuditError>,
    ) -> Result<(), VaultError> {
        let _quiet = self.purge_gate.write();
        let mut audit = self.audit.write();
        if let Some(current) = audit.as_ref() {
            let next = rotate(current)?;
            *audit = Some(Arc::new(next));
        }
        Ok(())
    }

    /// States `purpose` for the session of process `pid` (`smpfs purpose`); returns the
    /// session id. Later records of every process in that session carry it.
    pub fn set_purpose(&self, pid: i32, purpose: String) -> Result<u32, VaultError> {
        let session = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
            .map_err(|_| VaultError::NotFound)?
            .as_raw() as u32;
        tracing::info!(session, "purpose stated for a session");
        self.purposes.write().insert(session, purpose);
        Ok(session)
    }

    /// The purpose stated for the session of `pid`, else the mount's.
    fn purpose_of(&self, pid: u32) -> Option<String> {
        let stated = {
            let purposes = self.purposes.read();
            (!purposes.is_empty())
                .then(|| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).ok())
                .flatten()
                .and_then(|session| purposes.get(&(session.as_raw() as u32)).cloned())
        };
        stated.or_else(|| self.config.purpose.clone())
    }

    /// With `require_purpose`, refuses `caller` (and records the refusal, as `denied`)
    /// unless a purpose applies to it.
    fn require_purpose(&self, caller: Caller, path: &str) -> Result<(), VaultError> {
        if !self.config.require_purpose || self.purpose_of(caller.pid).is_some() {
            return Ok(());
        }
        self.record(
            Event::new(EventKind::Denied)
                .actor(&Actor::from_request(caller.uid, caller.gid, caller.pid))
                .path(path)
                .result("EACCES: no purpose stated for this session (smpfs purpose)"),
        )?;
        Err(VaultError::NoPurpose)
    }

    /// Reads up to `len` plaintext bytes at `offset` through handle `fh` into `out`
    /// (which must hold `len` bytes); returns how many were read (fewer only at EOF).
    /// Every byte returned was authenticated.
    ///
    /// The read is audited (with its outcome) before any byte is handed back; if the
    /// record cannot be written the read fails.
    pub fn read(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        out: &mut [u8],
        caller: Caller,
    ) -> Result<usize, VaultError> {
        let _gate = self.enter();
        if self.identity.read().is_none() {
            let actor = Actor::from_request(caller.uid, caller.gid, caller.pid);
            self.record(
                Event::new(EventKind::Denied)
                    .actor(&actor)
                    .range(offset, out.len() as u64)
                    .result("EACCES: keys were purged"),
            )?;
            return Err(VaultError::Purged);
        }
        let handle = self.handle(fh, caller)?;
        self.require_purpose(caller, handle.source.path())?;
        let requested = out.len() as u64;
        let result = self.read_handle(&handle, offset, out);
        let actor = handle.actor(caller);
        let event = |kind| handle.source.event(kind, &actor).range(offset, requested);
        match &result {
            Ok(n) if self.config.fold_reads => {
                let n = *n as u64;
                let size = handle.source.size();
                // Held across the write: a concurrent read of the same bytes must not find
                // them covered before the record that covers them is in the log.
                let mut announced = handle.announced.lock();
                if let Some((start, length)) = announced.record_for(caller.pid, offset, n, size) {
                    let mut record = handle
                        .source
                        .event(EventKind::Read, &actor)
                        .range(start, length)
                        .result("ok");
                    if length > n {
                        record = record.detail(serde_json::json!({ "folded": true, "bytes": n }));
                    }
                    if let Err(error) = self.record(record) {
                        announced.forget();
                        return Err(error);
                    }
                } else if let Some(log) = self.audit.read().as_ref() {
                    // Covered by a record already written; still refused once the log fails.
                    log.check()?;
                }
                handle.bytes_read.fetch_add(n, Ordering::Relaxed);
            }
            Ok(n) => {
                // `length` is what was asked for; a short read (at EOF) also says what came back.
                let mut record = event(EventKind::Read).result("ok");
                if *n as u64 != requested {
                    record = record.detail(serde_json::json!({ "bytes": n }));
                }
                self.record(record)?;
                handle.bytes_read.fetch_add(*n as u64, Ordering::Relaxed);
            }
            Err(e @ VaultError::Format { .. }) => {
                if let Err(audit) =
                    self.record(event(EventKind::IntegrityFailure).result(format!("EIO: {e}")))
                {
                    tracing::error!("integrity failure not audited: {audit}");
                }
            }
            Err(e) => {
                if let Err(audit) = self.record(event(EventKind::Read).result(e.to_string())) {
                    tracing::error!("failed read not audited: {audit}");
                }
            }
        }
        result
    }

    /// The open handle `fh`. A handle that was open when the mount was locked is opened
    /// again here, for `caller` and audited as an `open`, once the keys are back.
    fn handle(&self, fh: u64, caller: Caller) -> Result<Arc<Handle>, VaultError> {
        if let Some(handle) = self.handles.lock().get(&fh) {
            return Ok(Arc::clone(handle));
        }
        let ino = *self
            .locked_handles
            .lock()
            .get(&fh)
            .ok_or(VaultError::BadHandle)?;
        let actor = Actor::from_request(caller.uid, caller.gid, caller.pid);
        let detail = serde_json::json!({ "reopened_after_unlock": fh });
        let handle = self.open_handle(ino, caller, actor, detail)?;
        self.locked_handles.lock().remove(&fh);
        Ok(Arc::clone(self.handles.lock().entry(fh).or_insert(handle)))
    }

    /// Describes open file `fh` for the GPU info ioctl; refused like a read while locked.
    pub fn file_info(&self, fh: u64, caller: Caller) -> Result<FileInfo, VaultError> {
        let _gate = self.enter();
        if self.is_locked() {
            return Err(VaultError::Purged);
        }
        let handle = self.handle(fh, caller)?;
        Ok(match handle.source.gpu()? {
            GpuSource::Sealed(object) => FileInfo {
                size: object.size(),
                chunk_size: object.layout().chunk_size() as u32,
                file_id: object.file_id(),
                volume: None,
            },
            GpuSource::Voxels(voxels) => {
                let Source::Volume(entry, _) = &handle.source else {
                    unreachable!("voxels come from a volume")
                };
                FileInfo {
                    size: voxels.len() as u64,
                    chunk_size: 0,
                    file_id: [0; 16],
                    volume: entry.gpu_shape(),
                }
            }
        })
    }

    /// Loads `load.length` plaintext bytes from `load.file_offset` of open file `fh` into
    /// the device allocation `load.target`; returns the bytes loaded (always all of them).
    /// Every byte copied was authenticated.
    ///
    /// Allowed exactly when a read is. Once the range and the destination are checked, a
    /// `gpu_load` record is written before any byte is copied; if it cannot be written
    /// nothing is copied. Refusals and failures are recorded too (a refusal while locked
    /// as `denied`, a chunk failing authentication as `integrity_failure`). A failure
    /// after copying started may leave part of the range loaded.
    pub fn gpu_load(
        self: &Arc<Self>,
        fh: u64,
        load: &Load,
        caller: Caller,
    ) -> Result<u64, VaultError> {
        let _gate = self.enter();
        let detail = serde_json::json!({
            "sink": self.gpu.sink_name(),
            "device": load.target.device,
            "dest_offset": load.target.offset,
            "bytes": load.length,
        });
        if self.is_locked() {
            let actor = Actor::from_request(caller.uid, caller.gid, caller.pid);
            self.record(
                Event::new(EventKind::Denied)
                    .actor(&actor)
                    .range(load.file_offset, load.length)
                    .result("EACCES: keys were purged")
                    .detail(detail),
            )?;
            return Err(VaultError::Purged);
        }
        let handle = self.handle(fh, caller)?;
        let actor = handle.actor(caller);
        let event = |kind| {
            handle
                .source
                .event(kind, &actor)
                .range(load.file_offset, load.length)
                .detail(detail.clone())
        };
        let failed = |error: VaultError| {
            let kind = match error {
                VaultError::Format { .. } => EventKind::IntegrityFailure,
                _ => EventKind::GpuLoad,
            };
            if let Err(audit) = self.record(event(kind).result(error.to_string())) {
                tracing::error!("failed GPU load not audited: {audit}");
            }
            Err(error)
        };
        let source = match handle.source.gpu() {
            Ok(source) => source,
            Err(e) => return failed(e),
        };
        let size = match &source {
            GpuSource::Sealed(object) => object.size(),
            GpuSource::Voxels(voxels) => voxels.len() as u64,
        };
        if load
            .file_offset
            .checked_add(load.length)
            .is_none_or(|end| end > size)
        {
            return failed(VaultError::PastEof {
                offset: load.file_offset,
                length: load.length,
                size,
            });
        }
        let mut transfer = match self.gpu.begin(&load.target, load.length, caller.uid) {
            Ok(transfer) => transfer,
            Err(e) => return failed(e.into()),
        };
        self.record(event(EventKind::GpuLoad).result("ok"))?;
        let copied = match source {
            GpuSource::Sealed(object) => {
                self.copy_range(object, load.file_offset, load.length, &mut transfer)
            }
            GpuSource::Voxels(voxels) => {
                let start = load.file_offset as usize;
                transfer
                    .push(&voxels[start..start + load.length as usize])
                    .map_err(VaultError::from)
            }
        };
        let loaded = copied.and_then(|()| Ok(transfer.finish()?));
        match loaded {
            Ok(n) => {
                handle.bytes_read.fetch_add(n, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => failed(e),
        }
    }

    /// Pushes plaintext bytes `offset..offset + length` of `object` (in range) into
    /// `transfer`, a window of chunks at a time, prefetching the next window meanwhile.
    fn copy_range(
        self: &Arc<Self>,
        object: &Arc<SealedObject>,
        offset: u64,
        length: u64,
        transfer: &mut Transfer<'_>,
    ) -> Result<(), VaultError> {
        if length == 0 {
            return Ok(());
        }
        let layout = *object.layout();
        let end = offset + length;
        let chunk_size = layout.chunk_size() as u64;
        let per_window = (GPU_WINDOW / chunk_size).max(1);
        let last = layout.chunk_of(end - 1);
        let mut start = layout.chunk_of(offset);
        while start <= last {
            let stop = (start + per_window).min(last + 1);
            if stop <= last {
                self.prefetch(object, stop..(stop + per_window).min(last + 1));
            }
            let mut pushed = Ok(());
            self.cache
                .with_chunks(object.as_ref(), start..stop, |index, plain| {
                    let chunk_start = index * chunk_size;
                    let from = offset.max(chunk_start) - chunk_start;
                    let to = end.min(chunk_start + plain.len() as u64) - chunk_start;
                    if pushed.is_ok() {
                        pushed = transfer.push(&plain[from as usize..to as usize]);
                    }
                })?;
            pushed?;
            start = stop;
        }
        Ok(())
    }

    /// Chunks of `object` per read-ahead request: the backend's part size, at most
    /// [`MAX_RUN`].
    fn part_chunks(&self, object: &SealedObject) -> u64 {
        (self.profile.part_size / object.layout().chunk_size() as u64).clamp(1, MAX_RUN as u64)
    }

    /// Loads `chunks` of `object` into the cache in the background, one job per part
    /// ([`Vault::part_chunks`]), so a remote backend has several requests in flight.
    fn prefetch(self: &Arc<Self>, object: &Arc<SealedObject>, chunks: std::ops::Range<u64>) {
        let part_chunks = self.part_chunks(object);
        let purges = self.purges.load(Ordering::Acquire);
        let mut start = chunks.start;
        while start < chunks.end {
            let part = start..(start + part_chunks).min(chunks.end);
            start = part.end;
            let vault = Arc::clone(self);
            let object = Arc::clone(object);
            self.readahead_workers.spawn(move || {
                let _gate = vault.enter();
                if vault.purges.load(Ordering::Acquire) != purges {
                    return;
                }
                // Errors surface on the real read of these chunks; nothing to report here.
                let _ = vault.cache.with_chunks(object.as_ref(), part, |_, _| {});
            });
        }
    }

    fn read_handle(
        self: &Arc<Self>,
        handle: &Arc<Handle>,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, VaultError> {
        let object = match &handle.source {
            Source::Sealed(object) => object,
            Source::Volume(_, data) => return Ok(copy_from(data, offset, out)),
            Source::Text(entry) => {
                let Virtual::Error { text, .. } = entry.as_ref() else {
                    return Err(VaultError::BadHandle);
                };
                return Ok(copy_from(text.as_bytes(), offset, out));
            }
        };
        let layout = *object.layout();
        if offset >= object.size() || out.is_empty() {
            return Ok(0);
        }
        let end = (offset + out.len() as u64).min(object.size());
        let first = layout.chunk_of(offset);
        let last = layout.chunk_of(end - 1);
        let chunk_size = layout.chunk_size() as u64;
        self.cache
            .with_chunks(object.as_ref(), first..last + 1, |index, plain| {
                let chunk_start = index * chunk_size;
                let from = offset.max(chunk_start);
                let to = end.min(chunk_start + plain.len() as u64);
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &plain[(from - chunk_start) as usize..(to - chunk_start) as usize],
                );
            })?;
        self.read_ahead(handle, offset, end);
        Ok((end - offset) as usize)
    }

    /// The largest read-ahead window: the backend's `max_readahead`, at most a quarter of
    /// the cache, and at most an equal share of half the cache among the sequential
    /// readers, so that no reader's prefetched chunks are evicted by another's before they
    /// are read. At least 1 MiB.
    fn window_limit(&self) -> u64 {
        let cache = self.config.cache_size as u64;
        let streams = self.streams.load(Ordering::Relaxed).max(1) as u64;
        self.profile
            .max_readahead
            .min(cache / 4)
            .min(cache / 2 / streams)
            .max(1 << 20)
    }

    /// Grows the window while reads stay sequential and prefetches it in the background,
    /// in parts that the workers fetch in parallel. `offset..end` is the non-empty range
    /// just read.
    fn read_ahead(self: &Arc<Self>, handle: &Arc<Handle>, offset: u64, end: u64) {
        let Source::Sealed(object) = &handle.source else {
            return;
        };
        let layout = *object.layout();
        let prefetch = {
            let mut ra = handle.readahead.lock();
            if offset == ra.next_offset {
                ra.stream.get_or_insert_with(|| Stream::join(&self.streams));
                ra.window = (ra.window * 2).clamp(1 << 20, self.window_limit());
            } else {
                ra.window = 0;
                ra.prefetched_until = 0;
                ra.stream = None;
            }
            ra.next_offset = end;
            let want_until =
                layout.chunk_of((end + ra.window).min(object.size()).saturating_sub(1)) + 1;
            // From the chunk after the last one this read touched (`end` is exclusive).
            let from = ra.prefetched_until.max(layout.chunk_of(end - 1) + 1);
            // Refill whenever a whole part is missing (half the window while the window is
            // smaller than two parts), or up to the end of the file: a remote backend gets
            // requests of its part size, never one per read, and the window stays full.
            let batch = (ra.window / layout.chunk_size() as u64 / 2)
                .min(self.part_chunks(object))
                .max(1);
            let short_batch = want_until < from + batch && want_until < layout.chunk_count();
            if ra.window == 0 || end >= object.size() || from >= want_until || short_batch {
                None
            } else {
                ra.prefetched_until = want_until;
                Some(from..want_until)
            }
        };
        if let Some(chunks) = prefetch {
            self.prefetch(object, chunks);
        }
    }

    /// Zeroizes the cache and GPU staging memory and drops the identity and every file key;
    /// later opens, reads and GPU loads fail with [`VaultError::Purged`]. Audited as
    /// `purge`. Returns the bytes zeroized.
    ///
    /// Waits for the requests in flight first (a remote read at most its timeout, a GPU
    /// load until it is copied), so when it returns no key or plaintext is left behind.
    pub fn purge(&self) -> usize {
        let started = std::time::Instant::now();
        let gate = self.purge_gate.write();
        self.purges.fetch_add(1, Ordering::AcqRel);
        self.identity.write().take();
        let open_files = {
            let mut handles = self.handles.lock();
            let n = handles.len();
            let mut locked = self.locked_handles.lock();
            locked.extend(handles.drain().map(|(fh, handle)| (fh, handle.ino)));
            n
        };
        let files = self.tree.write().drop_objects();
        self.assembled.lock().clear();
        self.last_volume.lock().take();
        let bytes = self.cache.purge() + self.gpu.purge();
        drop(gate);
        let detail = serde_json::json!({
            "bytes_zeroized": bytes,
            "file_keys_dropped": files,
            "open_handles": open_files,
            "duration_us": started.elapsed().as_micros() as u64,
        });
        if let Err(e) = self.record(Event::new(EventKind::Purge).result("ok").detail(detail)) {
            tracing::error!("purge not audited: {e}");
        }
        bytes
    }

    /// Purges, unlocks the zeroized cache and seals the audit segment: the orderly end of
    /// a mount. A second call only zeroizes the cache again.
    pub fn unmount(&self) -> usize {
        if self.sealed.swap(true, Ordering::SeqCst) {
            return self.cache.purge();
        }
        let bytes = self.purge();
        self.cache.release();
        if let Some(log) = self.audit_log() {
            if let Err(e) = log.seal(serde_json::json!({ "clean": true })) {
                tracing::error!("audit segment not sealed: {e}");
            }
        }
        bytes
    }

    /// The files opened (or mapped) since the last call, and forgets them: after a purge,
    /// the caller drops their pages from the kernel's page cache. Opens fail while the vault
    /// is locked, so taken after a purge, the list is complete until the next unlock.
    pub fn take_served(&self) -> Vec<Ino> {
        self.served.lock().drain().collect()
    }

    /// Gives a locked (purged) vault its identity back; files are checked again on access.
    pub fn unlock(&self, identity: Identity) -> Result<(), VaultError> {
        if self.sealed.load(Ordering::SeqCst) {
            return Err(VaultError::Purged);
        }
        *self.identity.write() = Some(identity);
        Ok(())
    }

    /// Whether the keys are currently purged (locked or unmounting).
    pub fn is_locked(&self) -> bool {
        self.identity.read().is_none()
    }
}

/// A request inside the purge gate.
struct InFlight<'a> {
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
    count: &'a AtomicU64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies what `data` holds from `offset` into `out`; returns the bytes copied.
fn copy_from(data: &[u8], offset: u64, out: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let n = out.len().min(data.len() - start);
    out[..n].copy_from_slice(&data[start..start + n]);
    n
}

#[cfg(test)]
mod tests;
