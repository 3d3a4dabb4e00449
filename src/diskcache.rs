//! A disk cache of **ciphertext** for remote buckets: bytes exactly as the store holds them
//! (sealed chunks and headers), so nothing in it is plaintext or key material, and every
//! chunk served from it is still authenticated by the reader.
//!
//! Layout of the cache directory (mode 0700, one mount at a time, held by an exclusive
//! `flock` on `DIR/lock`):
//! - `DIR/pieces/ab/<64 hex>`: one *piece*, a contiguous run of bytes inside one aligned
//!   [`PIECE`]-sized window of one version of one object. Its name is the BLAKE3 hash of
//!   (object key, version, window index), so the directory shows no object names. Its
//!   content: magic `SMPFSDC2` ‖ start within the window (u32 LE) ‖ length (u32 LE) ‖
//!   CRC-64/NVME of the bytes (u64 LE) ‖ the bytes. Written to a temporary file and
//!   renamed, so a crash leaves a whole piece or none; a piece whose checksum does not
//!   match (truncated, flipped, partly written by a failing disk) is deleted and reported
//!   as a miss. The checksum only has to catch accidental damage: a forged piece cannot
//!   pass the reader's AES-GCM-SIV authentication, so a cryptographic hash here would only
//!   cost time (it took a sixth of the CPU of a cached epoch).
//!
//! Entries are evicted least recently used first, so the pieces stay within the size bound
//! (headers included). The index lives in memory and is rebuilt from the directory at open,
//! oldest modification time first.
//!
//! Pieces are written by a thread of the cache's own, so a read from the store does not
//! wait for the disk unless the writer is [`QUEUE`] pieces (16 MiB of memory) behind; then
//! it waits, so everything fetched is cached. [`DiskCache::flush`] waits for the queue to
//! drain.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use lru::LruCache;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;

/// Bytes of one cache window: pieces never cross a multiple of it.
pub const PIECE: u64 = 256 << 10;
/// Pieces waiting for the writer thread at most.
pub const QUEUE: usize = 64;
const MAGIC: &[u8; 8] = b"SMPFSDC2";
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// The piece checksum.
const CHECKSUM: crc_fast::CrcAlgorithm = crc_fast::CrcAlgorithm::Crc64Nvme;

/// Errors in opening or clearing a cache directory. Reads and writes of pieces never fail
/// a request: a piece that cannot be read is a miss, one that cannot be written is skipped.
#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    #[error(
        "disk cache {dir} is in use by another mount (process {holder}); give each mount \
         its own disk_cache= directory"
    )]
    InUse { dir: PathBuf, holder: String },
    #[error("disk cache {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk cache {dir} is accessible by group or others (mode {mode:o}); it must be 0700")]
    Insecure { dir: PathBuf, mode: u32 },
    #[error("{dir} is not an smpfs disk cache (no pieces/ and lock); refusing to clear it")]
    NotACache { dir: PathBuf },
}

/// Counters for `smpfs status` and the logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served entirely from the cache.
    pub hits: u64,
    /// Requests that went to the store.
    pub misses: u64,
    /// Pieces found damaged and deleted.
    pub damaged: u64,
    /// Bytes of pieces on disk now.
    pub bytes: u64,
    /// Pieces on disk now.
    pub pieces: u64,
}

/// An open cache directory, held for one mount.
pub struct DiskCache {
    store: Arc<Store>,
    queue: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    // Held for the cache's life: the flock is released when it is dropped.
    _lock: Flock<File>,
}

/// The pieces on disk and their index, shared with the writer thread.
struct Store {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    damaged: AtomicU64,
    temp_counter: AtomicU64,
}

/// Work for the writer thread.
enum Job {
    Write(Span, Vec<u8>),
    /// Answered once every job before it is done.
    Flush(mpsc::Sender<()>),
}

struct Index {
    /// Piece name → bytes on disk, least recently used first.
    pieces: LruCache<String, u64>,
    bytes: u64,
}

/// Where one read lands inside a piece window.
struct Span {
    name: String,
    /// Start of the wanted bytes within the window.
    start: u32,
    len: u32,
}

impl DiskCache {
    /// Opens (creating, mode 0700) the cache at `dir` bounded to `limit` bytes, locks it for
    /// this process, and indexes the pieces already there (evicting down to `limit`).
    pub fn open(dir: &Path, limit: u64) -> Result<DiskCache, DiskCacheError> {
        let io = |source| DiskCacheError::Io {
            dir: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("pieces"))
            .map_err(io)?;
        let mode = fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(DiskCacheError::Insecure {
                dir: dir.to_owned(),
                mode,
            });
        }
        let lock = lock(dir)?;
        let store = Arc::new(Store {
            dir: dir.to_owned(),
            limit,
            index: Mutex::new(Index {
                pieces: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
        });
        store.scan().map_err(io)?;
        let (queue, jobs) = mpsc::sync_channel::<Job>(QUEUE);
        let writer = {
            let store = Arc::clone(&store);
            std::thread::Builder::new()
                .name("smpfs-diskcache".into())
                .spawn(move || {
                    for job in jobs {
                        match job {
                            Job::Write(span, bytes) => {
                                if let Err(error) = store.write_piece(&span, &bytes) {
                                    tracing::warn!(%error, "disk cache: a piece was not stored");
                                }
                            }
                            Job::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                })
                .map_err(io)?
        };
        Ok(DiskCache {
            store,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        let store = &self.store;
        let index = store.index.lock();
        CacheStats {
            hits: store.hits.load(Ordering::Relaxed),
            misses: store.misses.load(Ordering::Relaxed),
            damaged: store.damaged.load(Ordering::Relaxed),
            bytes: index.bytes,
            pieces: index.pieces.len() as u64,
        }
    }

    /// Waits until every piece handed to [`DiskCache::write`] so far is on disk (or failed).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        let sent = match &*self.queue.lock() {
            Some(queue) => queue.send(Job::Flush(done)).is_ok(),
            None => false,
        };
        if sent {
            let _ = wait.recv();
        }
    }

    /// Fills `bufs` (in order, from `offset` of object `key` at `version`) from the cache,
    /// if every byte is there and intact; `false` (a miss) otherwise, with `bufs` in an
    /// unspecified state.
    pub fn read(&self, key: &str, version: &str, offset: u64, bufs: &mut [&mut [u8]]) -> bool {
        thread_local! {
            /// A piece file as read, reused: no allocation per hit.
            static CONTENT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let store = &self.store;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut filled = 0usize;
        let hit = CONTENT.with_borrow_mut(|content| {
            for span in spans(key, version, offset, total as u64) {
                match store.read_piece_in_place(&span, bufs, filled) {
                    Some(true) => {}
                    Some(false) => return false,
                    None => {
                        let Some(bytes) = store.read_piece(&span, content) else {
                            return false;
                        };
                        scatter(bufs, filled, bytes);
                    }
                }
                filled += span.len as usize;
            }
            true
        });
        let counter = if hit { &store.hits } else { &store.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Hands the bytes `bufs` hold (from `offset` of object `key` at `version`, as the
    /// store returned them) to the writer thread, waiting while its queue is full.
    /// Failures to write (a full disk) are logged and skipped.
    pub fn write(&self, key: &str, version: &str, offset: u64, bufs: &[&mut [u8]]) {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0usize;
        let queue = self.queue.lock().clone();
        let Some(queue) = queue else {
            return;
        };
        for span in spans(key, version, offset, total as u64) {
            let mut bytes = vec![0u8; span.len as usize];
            gather(bufs, taken, &mut bytes);
            taken += bytes.len();
            if queue.send(Job::Write(span, bytes)).is_err() {
                return;
            }
        }
    }
}

impl Drop for DiskCache {
    /// Writes what is queued, then stops the writer thread.
    fn drop(&mut self) {
        self.queue.lock().take();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Reads a piece that holds exactly `span` straight into the concatenation of `bufs`
    /// from byte `at`, hashing it there: one pass over the bytes instead of a read, a hash
    /// and a copy. `Some(true)`: served and intact. `Some(false)`: not stored, or damaged
    /// (deleted). `None`: the piece holds more than `span`; use [`Store::read_piece`].
    fn read_piece_in_place(&self, span: &Span, bufs: &mut [&mut [u8]], at: usize) -> Option<bool> {
        if self.index.lock().pieces.get(&span.name).is_none() {
            return Some(false);
        }
        let path = self.piece_path(&span.name);
        let Ok(file) = File::open(&path) else {
            return Some(false);
        };
        let mut header = [0u8; HEADER_LEN];
        let stored = file.read_exact_at(&mut header, 0).ok().and_then(|()| {
            let start = u32::from_le_bytes(header[8..12].try_into().ok()?);
            let len = u32::from_le_bytes(header[12..16].try_into().ok()?);
            Some((start, len))
        });
        if let Some((start, len)) = stored {
            if &header[..8] == MAGIC && (start, len) != (span.start, span.len) {
                return None;
            }
        }
        let intact = stored.is_some()
            && &header[..8] == MAGIC
            && file
                .metadata()
                .is_ok_and(|m| m.len() == HEADER_LEN as u64 + span.len as u64)
            && {
                let mut digest = crc_fast::Digest::new(CHECKSUM);
                let mut offset = HEADER_LEN as u64;
                sub_slices(bufs, at, span.len as usize).all(|part| {
                    let read = file.read_exact_at(part, offset).is_ok();
                    offset += part.len() as u64;
                    digest.update(part);
                    read
                }) && digest.finalize().to_le_bytes() == header[16..24]
            };
        if !intact {
            self.discard_damaged(span, &path);
        }
        Some(intact)
    }

    /// Logs, counts and deletes a damaged piece, so that it is fetched again.
    fn discard_damaged(&self, span: &Span, path: &Path) {
        tracing::warn!(piece = %span.name, "disk cache: damaged piece deleted; fetching again");
        self.damaged.fetch_add(1, Ordering::Relaxed);
        self.forget(&span.name);
        let _ = fs::remove_file(path);
    }

    /// The wanted bytes of a piece, if stored and intact, read through `content`.
    fn read_piece<'a>(&self, span: &Span, content: &'a mut Vec<u8>) -> Option<&'a [u8]> {
        // Known to the index (and marked used), or not stored at all.
        self.index.lock().pieces.get(&span.name)?;
        let path = self.piece_path(&span.name);
        match read_verified(&path, content) {
            Some(start) => {
                let data = &content[HEADER_LEN..];
                let end = start as u64 + data.len() as u64;
                let (want_start, want_end) =
                    (span.start as u64, span.start as u64 + span.len as u64);
                if start as u64 <= want_start && want_end <= end {
                    let from = (want_start - start as u64) as usize;
                    Some(&data[from..from + span.len as usize])
                } else {
                    None
                }
            }
            None => {
                self.discard_damaged(span, &path);
                None
            }
        }
    }

    /// Stores `bytes` at `span`, merged with an intact stored run they touch or overlap.
    fn write_piece(&self, span: &Span, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.piece_path(&span.name);
        let (mut start, mut data) = (span.start, bytes.to_vec());
        let mut content = Vec::new();
        if let Some(old_start) = read_verified(&path, &mut content) {
            let old = &content[HEADER_LEN..];
            let (old_end, new_end) = (old_start + old.len() as u32, span.start + span.len);
            if old_start <= new_end && span.start <= old_end {
                let merged_start = old_start.min(span.start);
                let merged_end = old_end.max(new_end);
                let mut merged = vec![0u8; (merged_end - merged_start) as usize];
                merged[(old_start - merged_start) as usize..][..old.len()].copy_from_slice(old);
                merged[(span.start - merged_start) as usize..][..bytes.len()]
                    .copy_from_slice(bytes);
                (start, data) = (merged_start, merged);
            }
        }
        let mut content = Vec::with_capacity(HEADER_LEN + data.len());
        content.extend_from_slice(MAGIC);
        content.extend_from_slice(&start.to_le_bytes());
        content.extend_from_slice(&(data.len() as u32).to_le_bytes());
        content.extend_from_slice(&crc_fast::checksum(CHECKSUM, &data).to_le_bytes());
        content.extend_from_slice(&data);
        let parent = path.parent().expect("pieces have a parent");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let temp = parent.join(format!(
            ".tmp.{}.{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&content)?;
            fs::rename(&temp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written?;
        self.account(&span.name, content.len() as u64);
        Ok(())
    }

    /// Records a stored piece of `size` bytes as most recently used, then evicts.
    fn account(&self, name: &str, size: u64) {
        let mut evicted = Vec::new();
        {
            let mut index = self.index.lock();
            if let Some(old) = index.pieces.put(name.to_owned(), size) {
                index.bytes -= old;
            }
            index.bytes += size;
            while index.bytes > self.limit {
                let Some((victim, bytes)) = index.pieces.pop_lru() else {
                    break;
                };
                index.bytes -= bytes;
                evicted.push(victim);
            }
        }
        for victim in evicted {
            let _ = fs::remove_file(self.piece_path(&victim));
        }
    }

    fn forget(&self, name: &str) {
        let mut index = self.index.lock();
        if let Some(bytes) = index.pieces.pop(name) {
            index.bytes -= bytes;
        }
    }

    fn piece_path(&self, name: &str) -> PathBuf {
        self.dir.join("pieces").join(&name[..2]).join(name)
    }

    /// Indexes the pieces on disk, oldest first; removes leftover temporary files.
    fn scan(&self) -> std::io::Result<()> {
        let mut found = Vec::new();
        for shard in fs::read_dir(self.dir.join("pieces"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let metadata = entry.metadata()?;
                if name.starts_with(".tmp.") || name.len() != 64 {
                    let _ = fs::remove_file(entry.path());
                    continue;
                }
                found.push((metadata.modified()?, name, metadata.len()));
            }
        }
        found.sort();
        for (_, name, size) in found {
            self.account(&name, size);
        }
        Ok(())
    }
}

/// Removes every piece of the cache at `dir` (not the directory itself). Refuses a
/// directory that is not a cache, and one a mount holds.
pub fn clear(dir: &Path) -> Result<u64, DiskCacheError> {
    let io = |source| DiskCacheError::Io {
        dir: dir.to_owned(),
        source,
    };
    if !dir.join("pieces").is_dir() || !dir.join("lock").is_file() {
        return Err(DiskCacheError::NotACache {
            dir: dir.to_owned(),
        });
    }
    let _lock = lock(dir)?;
    let mut removed = 0;
    for shard in fs::read_dir(dir.join("pieces")).map_err(io)? {
        let shard = shard.map_err(io)?;
        if shard.file_type().map_err(io)?.is_dir() {
            for entry in fs::read_dir(shard.path()).map_err(io)? {
                fs::remove_file(entry.map_err(io)?.path()).map_err(io)?;
                removed += 1;
            }
            fs::remove_dir(shard.path()).map_err(io)?;
        }
    }
    Ok(removed)
}

/// Takes the cache's exclusive lock, naming the holder if another process has it.
fn lock(dir: &Path) -> Result<Flock<File>, DiskCacheError> {
    let path = dir.join("lock");
    let io = |source| DiskCacheError::Io {
        dir: dir.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DiskCacheError::InUse {
                dir: dir.to_owned(),
                holder: holder.trim().to_owned(),
            });
        }
        Err((_, errno)) => return Err(io(errno.into())),
    };
    locked.set_len(0).map_err(io)?;
    write!(locked, "{}", std::process::id()).map_err(io)?;
    Ok(locked)
}

/// The piece windows a read of `len` bytes at `offset` touches.
fn spans(key: &str, version: &str, offset: u64, len: u64) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let window = at / PIECE;
        let window_end = ((window + 1) * PIECE).min(end);
        let mut hasher = blake3::Hasher::new();
        hasher.update(key.as_bytes());
        hasher.update(&[0]);
        hasher.update(version.as_bytes());
        hasher.update(&[0]);
        hasher.update(&window.to_le_bytes());
        spans.push(Span {
            name: hasher.finalize().to_hex().to_string(),
            start: (at - window * PIECE) as u32,
            len: (window_end - at) as u32,
        });
        at = window_end;
    }
    spans
}

/// Reads a piece file into `content` (header, then bytes); its start within the window, if
/// the magic, length and hash hold.
fn read_verified(path: &Path, content: &mut Vec<u8>) -> Option<u32> {
    content.clear();
    File::open(path).ok()?.read_to_end(content).ok()?;
    let (header, data) = content.split_at_checked(HEADER_LEN)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let start = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    if data.len() != len
        || start as u64 + len as u64 > PIECE
        || crc_fast::checksum(CHECKSUM, data).to_le_bytes() != header[16..24]
    {
        return None;
    }
    Some(start)
}

/// The parts of the concatenation of `bufs` that make up its bytes `at..at + len`.
fn sub_slices<'a, 'b: 'a>(
    bufs: &'a mut [&'b mut [u8]],
    mut at: usize,
    mut len: usize,
) -> impl Iterator<Item = &'a mut [u8]> + use<'a, 'b> {
    bufs.iter_mut().filter_map(move |buf| {
        if len == 0 || at >= buf.len() {
            at = at.saturating_sub(buf.len());
            return None;
        }
        let n = (buf.len() - at).min(len);
        let part = &mut buf[at..at + n];
        at = 0;
        len -= n;
        Some(part)
    })
}

/// Copies `bytes` into the concatenation of `bufs` starting at byte `at`.
fn scatter(bufs: &mut [&mut [u8]], mut at: usize, mut bytes: &[u8]) {
    for buf in bufs.iter_mut() {
        if bytes.is_empty() {
            break;
        }
        if at >= buf.len() {
            at -= buf.len();
            continue;
        }
        let n = (buf.len() - at).min(bytes.len());
        buf[at..at + n].copy_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        at = 0;
    }
}

/// Copies from the concatenation of `bufs`, starting at byte `at`, into `out`.
fn gather(bufs: &[&mut [u8]], mut at: usize, out: &mut [u8]) {
    let mut done = 0;
    for buf in bufs {
        if done == out.len() {
            break;
        }
        if at >= buf.len() {
            at -= buf.len();
            continue;
        }
        let n = (buf.len() - at).min(out.len() - done);
        out[done..done + n].copy_from_slice(&buf[at..at + n]);
        done += n;
        at = 0;
    }
}

#[cfg(test)]
mod tests;
