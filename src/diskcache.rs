//! A disk cache of **ciphertext** for remote buckets: bytes exactly as the store holds them
//! (sealed chunks and headers), so nothing in it is plaintext or key material, and every
//! chunk served from it is still authenticated by the reader.
//!
//! Layout of the cache directory (mode 0700, one mount at a time, held by an exclusive
//! `flock` on `DIR/lock`):
//! - `DIR/pieces/ab/<64 hex>`: one *piece*, a contiguous run of bytes inside one aligned
//!   [`PIECE`]-sized window of one version of one object. Its name is the BLAKE3 hash of
//!   (object key, version, window index), so the directory shows no object names. Its
//!   content: magic `SMPFSDC3` ‖ start within the window (u32 LE) ‖ length (u32 LE) ‖
//!   CRC-64/NVME of the start, length and table (u64 LE) ‖ a table of one CRC-64/NVME per
//!   [`BLOCK`] of the bytes (u64 LE each) ‖ the bytes. A read checks only the blocks it
//!   serves, so the first requests of a file do not read whole pieces. Written to a
//!   temporary file and renamed, so a crash leaves a whole piece or none; a piece whose
//!   length or checksums do not match (truncated, flipped, partly written by a failing
//!   disk) is deleted and reported as a miss. The checksums only have to catch accidental
//!   damage: a forged piece cannot pass the reader's AES-GCM-SIV authentication, so a
//!   cryptographic hash here would only cost time (it took a sixth of the CPU of a cached
//!   epoch). Pieces of the earlier format (`SMPFSDC2`, one checksum per piece) are
//!   deleted when met and fetched again.
//!
//! Entries are evicted least recently used first, so the pieces stay within the size bound
//! (headers included). The index lives in memory and is rebuilt from the directory at open,
//! oldest modification time first.
//!
//! Pieces are written by a thread of the cache's own, so a read from the store does not
//! wait for the disk unless the writer is [`QUEUE`] pieces (16 MiB of memory) behind; then
//! it waits, so everything fetched is cached. [`DiskCache::flush`] waits for the queue to
//! drain.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use lru::LruCache;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;
use rayon::prelude::*;

/// Bytes of one cache window: pieces never cross a multiple of it.
pub const PIECE: u64 = 256 << 10;
/// Pieces waiting for the writer thread at most.
pub const QUEUE: usize = 64;
/// Bytes covered by one checksum of a piece's table.
pub const BLOCK: usize = 4 << 10;
const MAGIC: &[u8; 8] = b"SMPFSDC3";
/// The magic of the format before per-block checksums: such pieces are dropped quietly.
const OLD_MAGIC: &[u8; 8] = b"SMPFSDC2";
/// Magic, start, length and the table's checksum; the table follows.
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// Checksums in the table of a piece of a whole window.
const MAX_BLOCKS: usize = (PIECE as usize).div_ceil(BLOCK);
/// The longest header and table: a piece of a whole window.
const MAX_HEADER_LEN: usize = HEADER_LEN + 8 * MAX_BLOCKS;
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
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let hit = with_scratch(|scratch| {
            let mut filled = 0usize;
            for span in spans(key, version, offset, total as u64) {
                let Some(range) = self.store.read_span(&span, scratch, 0) else {
                    return false;
                };
                scatter(bufs, filled, &scratch[range]);
                filled += span.len as usize;
            }
            true
        });
        self.store.count(hit);
        hit
    }

    /// Serves the range `bufs` cover (in order, from `offset` of object `key` at
    /// `version`) by calling `visit(index, bytes, buf)` for each buffer with its bytes as
    /// stored and checked; `visit` must leave in `buf` what the caller wants there. Groups
    /// of buffers of about a piece are read on rayon's threads, each into a buffer of its
    /// thread that is still in that core's cache when `visit` runs, so the bytes are not
    /// copied into `bufs` first. `false` (a miss) if any byte is missing or damaged: then
    /// `visit` may have run for some buffers and not for others.
    pub fn read_each(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        visit: impl Fn(usize, &[u8], &mut [u8]) + Sync,
    ) -> bool {
        let per_group = bufs
            .first()
            .map_or(1, |buf| (PIECE as usize).div_ceil(buf.len().max(1)));
        let mut starts = Vec::with_capacity(bufs.len().div_ceil(per_group));
        let mut at = offset;
        for group in bufs.chunks(per_group) {
            starts.push(at);
            at += group.iter().map(|b| b.len() as u64).sum::<u64>();
        }
        let serve = |(number, (group, start)): (usize, (&mut [&mut [u8]], u64))| {
            let len: usize = group.iter().map(|b| b.len()).sum();
            with_scratch(|scratch| {
                let Some(bytes) = self.store.read_run(key, version, start, len, scratch) else {
                    return false;
                };
                let mut at = 0;
                for (i, buf) in group.iter_mut().enumerate() {
                    visit(number * per_group + i, &bytes[at..at + buf.len()], buf);
                    at += buf.len();
                }
                true
            })
        };
        let hit = if starts.len() > 1 {
            bufs.par_chunks_mut(per_group)
                .zip(starts)
                .enumerate()
                .all(serve)
        } else {
            bufs.chunks_mut(per_group)
                .zip(starts)
                .enumerate()
                .all(serve)
        };
        self.store.count(hit);
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
    /// Counts a read served (`hit`) or sent to the store.
    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the checked bytes `offset..offset + len` of object `key` at `version`,
    /// contiguous in `scratch`.
    fn read_run<'a>(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> Option<&'a [u8]> {
        let (mut first, mut at) = (None, 0);
        for span in spans(key, version, offset, len as u64) {
            let range = self.read_span(&span, scratch, at)?;
            // Only the first span starts inside a block, and only the last ends inside one.
            if first.is_some() && range.start != at {
                return None;
            }
            first.get_or_insert(range.start);
            at = range.end;
        }
        Some(&scratch[first?..at])
    }

    /// Reads the blocks of `span`'s piece that hold its bytes into `scratch` from byte
    /// `at` on (growing it), checking each; the part of `scratch` holding the span's bytes.
    /// `None` if the piece is absent, holds another part of the window, or is damaged
    /// (then deleted).
    fn read_span(&self, span: &Span, scratch: &mut Vec<u8>, at: usize) -> Option<Range<usize>> {
        // Known to the index (and marked used), or not stored at all.
        self.index.lock().pieces.get(&span.name)?;
        let path = self.piece_path(&span.name);
        let file = File::open(&path).ok()?;
        let mut head = [0u8; MAX_HEADER_LEN];
        let header = match read_up_to(&file, &mut head).map(|got| parse_header(&head[..got])) {
            Ok(Ok(header)) => header,
            Ok(Err(Unusable::Stale)) => {
                self.drop_piece(span, &path, false);
                return None;
            }
            Ok(Err(Unusable::Damaged)) | Err(_) => {
                self.drop_piece(span, &path, true);
                return None;
            }
        };
        let (start, len) = (header.start as usize, header.len as usize);
        let (want_start, want_end) = (span.start as usize, (span.start + span.len) as usize);
        if want_start < start || want_end > start + len {
            return None;
        }
        let first_block = (want_start - start) / BLOCK;
        let (from, to) = (
            first_block * BLOCK,
            ((want_end - start).div_ceil(BLOCK) * BLOCK).min(len),
        );
        if scratch.len() < at + (to - from) {
            scratch.resize(at + (to - from), 0);
        }
        let blocks = &mut scratch[at..at + (to - from)];
        let intact = file
            .metadata()
            .is_ok_and(|m| m.len() == piece_file_len(header.len))
            && file
                .read_exact_at(blocks, (data_offset(header.len) + from) as u64)
                .is_ok()
            && blocks
                .chunks(BLOCK)
                .zip(&header.table[first_block..])
                .all(|(block, sum)| crc_fast::checksum(CHECKSUM, block) == *sum);
        if !intact {
            self.drop_piece(span, &path, true);
            return None;
        }
        let served = at + want_start - start - from;
        Some(served..served + span.len as usize)
    }

    /// Forgets and deletes a piece, so that it is fetched again; a damaged one is also
    /// logged and counted (one of the earlier format is not damaged, only outdated).
    fn drop_piece(&self, span: &Span, path: &Path, damaged: bool) {
        if damaged {
            tracing::warn!(piece = %span.name, "disk cache: damaged piece deleted; fetching again");
            self.damaged.fetch_add(1, Ordering::Relaxed);
        }
        self.forget(&span.name);
        let _ = fs::remove_file(path);
    }

    /// Stores `bytes` at `span`, merged with an intact stored run they touch or overlap.
    fn write_piece(&self, span: &Span, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.piece_path(&span.name);
        let (mut start, mut data) = (span.start, bytes.to_vec());
        if let Some((old_start, old)) = read_whole(&path) {
            let (old_end, new_end) = (old_start + old.len() as u32, span.start + span.len);
            if old_start <= new_end && span.start <= old_end {
                let merged_start = old_start.min(span.start);
                let merged_end = old_end.max(new_end);
                let mut merged = vec![0u8; (merged_end - merged_start) as usize];
                merged[(old_start - merged_start) as usize..][..old.len()].copy_from_slice(&old);
                merged[(span.start - merged_start) as usize..][..bytes.len()]
                    .copy_from_slice(bytes);
                (start, data) = (merged_start, merged);
            }
        }
        let content = encode(start, &data);
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

/// Runs `f` with this thread's scratch buffer (taken out while `f` runs, so a nested call
/// gets a fresh one instead of a borrow conflict). It keeps its largest size, so a hit
/// allocates nothing.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }
    let mut scratch = SCRATCH.take();
    let result = f(&mut scratch);
    SCRATCH.set(scratch);
    result
}

/// A piece's header as read: where its bytes lie in the window and their checksums.
struct PieceHeader {
    start: u32,
    len: u32,
    table: [u64; MAX_BLOCKS],
}

/// Why a piece file cannot be used.
enum Unusable {
    /// A piece of the earlier format.
    Stale,
    Damaged,
}

/// Parses the header and table at the start of a piece file (`bytes` may go on past them).
fn parse_header(bytes: &[u8]) -> Result<PieceHeader, Unusable> {
    if bytes.starts_with(OLD_MAGIC) {
        return Err(Unusable::Stale);
    }
    if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
        return Err(Unusable::Damaged);
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (start, len) = (word(8), word(12));
    let table_end = data_offset(len);
    if start as u64 + len as u64 > PIECE || bytes.len() < table_end {
        return Err(Unusable::Damaged);
    }
    let mut digest = crc_fast::Digest::new(CHECKSUM);
    digest.update(&bytes[8..16]);
    digest.update(&bytes[HEADER_LEN..table_end]);
    if digest.finalize().to_le_bytes() != bytes[16..24] {
        return Err(Unusable::Damaged);
    }
    let mut table = [0u64; MAX_BLOCKS];
    for (sum, stored) in table.iter_mut().zip(bytes[HEADER_LEN..table_end].chunks(8)) {
        *sum = u64::from_le_bytes(stored.try_into().expect("8 bytes"));
    }
    Ok(PieceHeader { start, len, table })
}

/// The bytes of a piece file holding `data` from `start` in its window.
fn encode(start: u32, data: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(piece_file_len(data.len() as u32) as usize);
    content.extend_from_slice(MAGIC);
    content.extend_from_slice(&start.to_le_bytes());
    content.extend_from_slice(&(data.len() as u32).to_le_bytes());
    content.extend_from_slice(&[0; 8]);
    for block in data.chunks(BLOCK) {
        content.extend_from_slice(&crc_fast::checksum(CHECKSUM, block).to_le_bytes());
    }
    let mut digest = crc_fast::Digest::new(CHECKSUM);
    digest.update(&content[8..16]);
    digest.update(&content[HEADER_LEN..]);
    content[16..24].copy_from_slice(&digest.finalize().to_le_bytes());
    content.extend_from_slice(data);
    content
}

/// Bytes of a piece file holding `len` bytes.
fn piece_file_len(len: u32) -> u64 {
    data_offset(len) as u64 + len as u64
}

/// Where the bytes start in a piece file holding `len` bytes: after the header and table.
fn data_offset(len: u32) -> usize {
    HEADER_LEN + 8 * (len as usize).div_ceil(BLOCK)
}

/// Fills `buf` from the start of `file` as far as the file goes; the bytes read.
fn read_up_to(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A whole piece file's start within the window and bytes, if every check holds.
fn read_whole(path: &Path) -> Option<(u32, Vec<u8>)> {
    let mut content = Vec::new();
    File::open(path).ok()?.read_to_end(&mut content).ok()?;
    let header = parse_header(&content).ok()?;
    let data = content.split_off(data_offset(header.len));
    let intact = content.len() + data.len() == piece_file_len(header.len) as usize
        && data
            .chunks(BLOCK)
            .zip(&header.table)
            .all(|(block, sum)| crc_fast::checksum(CHECKSUM, block) == *sum);
    intact.then_some((header.start, data))
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
