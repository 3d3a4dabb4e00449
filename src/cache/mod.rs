//! Locked memory for plaintext: one arena per mount, cut into fixed-size chunk slots (an LRU
//! cache of decrypted chunks) and reply buffers.
//!
//! Invariants:
//! - every byte of plaintext smpfs produces lives in the arena: mmap'd anonymous memory that
//!   is mlocked (never swapped), MADV_DONTDUMP (never in a core file) and MADV_DONTFORK;
//! - ciphertext is read straight into a slot and decrypted in place, or decrypted into the
//!   slot from a network receive buffer, so plaintext never exists outside locked memory;
//! - a slot's old plaintext is overwritten before reuse; reply buffers (which only ever
//!   hold copies of plaintext the slots hold or held) are zeroized at every purge, and
//!   the whole arena is zeroized before it is unmapped.

mod region;

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::{Condvar, Mutex, RwLock, RwLockWriteGuard};
use zeroize::Zeroize;

pub use region::{LockedBuf, LockedRegion};

/// Errors in setting up locked memory.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "cannot lock {bytes} bytes of memory: {source}. Raise RLIMIT_MEMLOCK (systemd \
         `LimitMEMLOCK=`, /etc/security/limits.d) or run with CAP_IPC_LOCK"
    )]
    MlockFailed {
        bytes: usize,
        #[source]
        source: nix::Error,
    },
    #[error("cannot map {bytes} bytes of memory: {source}")]
    MapFailed {
        bytes: usize,
        #[source]
        source: nix::Error,
    },
    #[error("cache of {bytes} bytes is too small: it must hold at least {min} chunks")]
    TooSmall { bytes: usize, min: usize },
}

/// Identifies one chunk of one opened object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    /// The mount-unique id of the object (its inode number).
    pub object: u64,
    /// The chunk's index in the object.
    pub chunk: u64,
}

/// Where chunks come from: fetches sealed chunks and decrypts them into their slots.
pub trait ChunkSource {
    /// Error of a failed load; the cache passes it through.
    type Error;
    /// The mount-unique id of the object.
    fn object_id(&self) -> u64;
    /// Bytes of chunk `index` as stored (ciphertext and tag).
    fn sealed_len(&self, index: u64) -> usize;
    /// Plaintext bytes of chunk `index`.
    fn plain_len(&self, index: u64) -> usize;
    /// Reads chunks `first..first + bufs.len()` (each buffer exactly `sealed_len` long)
    /// and authenticates and decrypts each into its buffer (the plaintext first). On error
    /// no buffer may hold plaintext.
    fn load(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), Self::Error>;
}

struct Slot {
    /// This slot's position in `ChunkCache::slots`.
    id: usize,
    key: Option<ChunkKey>,
    len: usize,
    buf: LockedBuf,
}

struct Index {
    lru: LruCache<ChunkKey, usize>,
    free: Vec<usize>,
}

/// Counters for logs, tests and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Chunk lookups answered from the cache.
    pub hits: AtomicU64,
    /// Chunks loaded from the backend.
    pub loads: AtomicU64,
    /// Backend requests made (one per run of adjacent missing chunks).
    pub requests: AtomicU64,
}

/// Most chunks fetched in one backend request (8 MiB of 64 KiB chunks).
pub const MAX_RUN: usize = 128;

/// The mount's locked arena: chunk slots with an LRU index, and reply buffers.
pub struct ChunkCache {
    slots: Vec<RwLock<Slot>>,
    index: Mutex<Index>,
    /// Free reply buffers, each with how many of its first bytes may hold plaintext.
    replies: Mutex<Vec<(LockedBuf, usize)>>,
    reply_returned: Condvar,
    /// Purges so far: a reply buffer taken before a purge is zeroized when returned.
    purges: AtomicU64,
    reply_len: usize,
    stats: CacheStats,
    region: Arc<LockedRegion>,
}

impl ChunkCache {
    /// Locks `cache_bytes` for slots of `slot_len` bytes plus `reply_count` reply buffers
    /// of `reply_len` bytes. Fails, saying how to fix it, if the memory cannot be locked.
    pub fn new(
        cache_bytes: usize,
        slot_len: usize,
        reply_count: usize,
        reply_len: usize,
    ) -> Result<Self, CacheError> {
        let slot_count = cache_bytes / slot_len;
        // A whole run in flight and half as many slots again for other readers.
        let min = MAX_RUN + MAX_RUN / 2;
        if slot_count < min {
            return Err(CacheError::TooSmall {
                bytes: cache_bytes,
                min,
            });
        }
        let region = Arc::new(LockedRegion::new(
            slot_count * slot_len + reply_count * reply_len,
        )?);
        let mut pieces = LockedRegion::carve(&region, slot_len, slot_count, reply_len, reply_count);
        let replies = pieces.split_off(slot_count);
        let slots = pieces
            .into_iter()
            .enumerate()
            .map(|(id, buf)| {
                RwLock::new(Slot {
                    id,
                    key: None,
                    len: 0,
                    buf,
                })
            })
            .collect();
        Ok(ChunkCache {
            slots,
            index: Mutex::new(Index {
                lru: LruCache::new(NonZeroUsize::new(slot_count).expect("checked above")),
                free: (0..slot_count).rev().collect(),
            }),
            replies: Mutex::new(replies.into_iter().map(|buf| (buf, 0)).collect()),
            reply_returned: Condvar::new(),
            purges: AtomicU64::new(0),
            reply_len,
            stats: CacheStats::default(),
            region,
        })
    }

    /// Bytes of locked memory this cache holds.
    pub fn locked_bytes(&self) -> usize {
        self.region.len()
    }

    /// Hit and load counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Calls `visit(index, plaintext)` for each chunk in `chunks`, in order, loading missing
    /// runs of adjacent chunks with one `source.load` each. Stops at the first error.
    pub fn with_chunks<S: ChunkSource>(
        &self,
        source: &S,
        chunks: Range<u64>,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> Result<(), S::Error> {
        let object = source.object_id();
        let mut next = chunks.start;
        while next < chunks.end {
            let key = ChunkKey {
                object,
                chunk: next,
            };
            if let Some(slot) = self.lookup(key) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                visit(next, &slot.buf[..slot.len]);
                next += 1;
                continue;
            }
            let run = self.allocate_run(object, next..chunks.end);
            if run.is_empty() {
                // Another thread is loading `next`, or every slot is busy: wait and retry.
                std::thread::yield_now();
                continue;
            }
            let run = self.load_run(source, next, run)?;
            for (i, slot) in run.iter().enumerate() {
                visit(next + i as u64, &slot.buf[..slot.len]);
            }
            next += run.len() as u64;
        }
        Ok(())
    }

    /// A locked reply buffer of `reply_len` bytes, waiting if all are in use. Its used part
    /// is zeroized at the next purge (at once if one ran while it was out).
    pub fn reply_buffer(&self) -> ReplyBuffer<'_> {
        let mut free = self.replies.lock();
        loop {
            if let Some((buf, dirty)) = free.pop() {
                return ReplyBuffer {
                    buf: Some(buf),
                    used: 0,
                    dirty,
                    epoch: self.purges.load(Ordering::Acquire),
                    cache: self,
                };
            }
            self.reply_returned.wait(&mut free);
        }
    }

    /// Bytes in each reply buffer.
    pub fn reply_len(&self) -> usize {
        self.reply_len
    }

    /// Zeroizes every slot and forgets every chunk (the purge at unmount); returns the
    /// bytes zeroized. Waits for loads in flight to finish first.
    pub fn purge(&self) -> usize {
        {
            let mut index = self.index.lock();
            index.lru.clear();
            index.free.clear();
        }
        let mut zeroized = 0;
        self.purges.fetch_add(1, Ordering::AcqRel);
        for (buf, dirty) in self.replies.lock().iter_mut() {
            buf[..*dirty].zeroize();
            zeroized += *dirty;
            *dirty = 0;
        }
        for slot in &self.slots {
            let mut slot = slot.write();
            slot.key = None;
            slot.len = 0;
            slot.buf.zeroize();
            zeroized += slot.buf.len();
        }
        let mut index = self.index.lock();
        index.lru.clear();
        index.free = (0..self.slots.len()).rev().collect();
        zeroized
    }

    /// Zeroizes every slot ([`ChunkCache::purge`]), then unlocks the arena: the end of a
    /// mount, after which nothing is decrypted into it again. Returns the bytes zeroized.
    pub fn release(&self) -> usize {
        let bytes = self.purge();
        self.region.unlock();
        bytes
    }

    fn lookup(&self, key: ChunkKey) -> Option<parking_lot::RwLockReadGuard<'_, Slot>> {
        let i = *self.index.lock().lru.get(&key)?;
        // Blocks while another thread is still loading this chunk into the slot.
        let slot = self.slots[i].read();
        (slot.key == Some(key)).then_some(slot)
    }

    /// Claims slots for the longest run of missing chunks from `chunks.start` (at most
    /// [`MAX_RUN`]). The slots are write-locked and indexed under their new keys, so
    /// concurrent readers of these chunks wait for the load instead of repeating it.
    fn allocate_run(&self, object: u64, chunks: Range<u64>) -> Vec<RwLockWriteGuard<'_, Slot>> {
        let mut index = self.index.lock();
        let mut run = Vec::new();
        for chunk in chunks.take(MAX_RUN) {
            let key = ChunkKey { object, chunk };
            if index.lru.contains(&key) {
                break;
            }
            let Some(mut slot) = self.claim_slot(&mut index) else {
                break;
            };
            slot.key = None;
            index.lru.put(key, slot.id);
            run.push(slot);
        }
        run
    }

    /// A slot nobody is using: a free one, else the least recently used one that is not
    /// locked by a reader or loader right now.
    fn claim_slot(&self, index: &mut Index) -> Option<RwLockWriteGuard<'_, Slot>> {
        let mut busy = Vec::new();
        let mut claimed = None;
        while let Some(i) = index.free.pop() {
            if let Some(slot) = self.slots[i].try_write() {
                claimed = Some(slot);
                break;
            }
            busy.push(i);
        }
        index.free.extend(busy);
        if claimed.is_some() {
            return claimed;
        }
        let (key, slot) = index
            .lru
            .iter()
            .rev()
            .take(4 * MAX_RUN)
            .find_map(|(key, &i)| self.slots[i].try_write().map(|slot| (*key, slot)))?;
        index.lru.pop(&key);
        Some(slot)
    }

    fn load_run<'a, S: ChunkSource>(
        &'a self,
        source: &S,
        first: u64,
        mut run: Vec<RwLockWriteGuard<'a, Slot>>,
    ) -> Result<Vec<RwLockWriteGuard<'a, Slot>>, S::Error> {
        let object = source.object_id();
        let result = {
            let mut bufs: Vec<&mut [u8]> = run
                .iter_mut()
                .enumerate()
                .map(|(i, slot)| {
                    let sealed = source.sealed_len(first + i as u64);
                    // Old plaintext past what the load overwrites is wiped now.
                    let old = slot.len;
                    if old > sealed {
                        slot.buf[sealed..old].zeroize();
                    }
                    &mut slot.buf[..sealed]
                })
                .collect();
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            source.load(first, &mut bufs)
        };
        let chunks = first..first + run.len() as u64;
        match result {
            Ok(()) => {
                self.stats
                    .loads
                    .fetch_add(run.len() as u64, Ordering::Relaxed);
                for (slot, chunk) in run.iter_mut().zip(chunks) {
                    slot.key = Some(ChunkKey { object, chunk });
                    slot.len = source.plain_len(chunk);
                }
                Ok(run)
            }
            Err(e) => {
                let ids: Vec<usize> = run
                    .iter_mut()
                    .zip(chunks.clone())
                    .map(|(slot, chunk)| {
                        slot.buf[..source.sealed_len(chunk)].zeroize();
                        slot.len = 0;
                        slot.id
                    })
                    .collect();
                drop(run);
                let mut index = self.index.lock();
                for (id, chunk) in ids.into_iter().zip(chunks) {
                    let key = ChunkKey { object, chunk };
                    if index.lru.peek(&key) == Some(&id) {
                        index.lru.pop(&key);
                        index.free.push(id);
                    }
                }
                Err(e)
            }
        }
    }
}

/// A locked buffer for one reply; returned to the pool on drop. Zeroizing it per reply
/// would cost a pass over every byte served and protect nothing the cache slots do not
/// hold anyway; it is zeroized at purge instead.
pub struct ReplyBuffer<'a> {
    buf: Option<LockedBuf>,
    used: usize,
    /// Bytes that may hold plaintext from earlier replies.
    dirty: usize,
    /// The cache's purge count when the buffer was taken.
    epoch: u64,
    cache: &'a ChunkCache,
}

impl ReplyBuffer<'_> {
    /// The first `len` bytes (at most the buffer's length), marked for zeroizing.
    pub fn prefix_mut(&mut self, len: usize) -> &mut [u8] {
        self.used = self.used.max(len);
        &mut self.buf.as_mut().expect("present until drop")[..len]
    }
}

impl Deref for ReplyBuffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf.as_ref().expect("present until drop")[..self.used]
    }
}

impl DerefMut for ReplyBuffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let used = self.used;
        &mut self.buf.as_mut().expect("present until drop")[..used]
    }
}

impl Drop for ReplyBuffer<'_> {
    fn drop(&mut self) {
        let mut buf = self.buf.take().expect("present until drop");
        let mut dirty = self.dirty.max(self.used);
        let mut free = self.cache.replies.lock();
        // Under the pool lock: a purge either ran before this (and missed this buffer,
        // so it is zeroized here) or runs after it is back in the pool.
        if self.cache.purges.load(Ordering::Acquire) != self.epoch {
            buf[..dirty].zeroize();
            dirty = 0;
        }
        free.push((buf, dirty));
        drop(free);
        self.cache.reply_returned.notify_one();
    }
}

#[cfg(test)]
mod tests;
