use super::*;
use std::sync::atomic::AtomicBool;

const CHUNK: usize = 4096;
const SLOT: usize = CHUNK + 16;

/// A source whose chunk `i` of object `id` is filled with bytes derived from (id, i).
struct Pattern {
    id: u64,
    chunks: u64,
    loads: AtomicU64,
    fail_chunk: Option<u64>,
    broken: AtomicBool,
}

impl Pattern {
    fn new(id: u64, chunks: u64) -> Self {
        Pattern {
            id,
            chunks,
            loads: AtomicU64::new(0),
            fail_chunk: None,
            broken: AtomicBool::new(false),
        }
    }

    fn byte(id: u64, chunk: u64, i: usize) -> u8 {
        (id as usize * 31 + chunk as usize * 7 + i) as u8
    }
}

impl ChunkSource for Pattern {
    type Error = u64;
    fn object_id(&self) -> u64 {
        self.id
    }
    fn sealed_len(&self, _index: u64) -> usize {
        SLOT
    }
    fn plain_len(&self, _index: u64) -> usize {
        CHUNK
    }
    fn load(&self, first: u64, bufs: &mut [&mut [u8]]) -> Result<(), u64> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        for (n, buf) in bufs.iter_mut().enumerate() {
            let chunk = first + n as u64;
            assert!(chunk < self.chunks);
            if self.fail_chunk == Some(chunk) && self.broken.load(Ordering::Relaxed) {
                return Err(chunk);
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = Self::byte(self.id, chunk, i);
            }
        }
        Ok(())
    }
}

fn collect(
    cache: &ChunkCache,
    src: &Pattern,
    chunks: Range<u64>,
) -> Result<Vec<(u64, Vec<u8>)>, u64> {
    let mut out = Vec::new();
    cache.with_chunks(src, chunks, |i, data| out.push((i, data.to_vec())))?;
    Ok(out)
}

fn check(src: &Pattern, got: &[(u64, Vec<u8>)], chunks: Range<u64>) {
    assert_eq!(got.len() as u64, chunks.end - chunks.start);
    for ((i, data), want) in got.iter().zip(chunks) {
        assert_eq!(*i, want);
        assert_eq!(data.len(), CHUNK);
        assert!(data
            .iter()
            .enumerate()
            .all(|(k, b)| *b == Pattern::byte(src.id, want, k)));
    }
}

fn cache(slots: usize) -> ChunkCache {
    ChunkCache::new(slots * SLOT, SLOT, 2, 1 << 16).unwrap()
}

#[test]
fn adjacent_misses_coalesce_and_hits_skip_the_source() {
    let c = cache(256);
    let src = Pattern::new(1, 100);
    check(&src, &collect(&c, &src, 0..10).unwrap(), 0..10);
    assert_eq!(
        src.loads.load(Ordering::Relaxed),
        1,
        "ten adjacent chunks, one request"
    );
    check(&src, &collect(&c, &src, 5..15).unwrap(), 5..15);
    assert_eq!(
        src.loads.load(Ordering::Relaxed),
        2,
        "only 10..15 was missing"
    );
    assert_eq!(c.stats().hits.load(Ordering::Relaxed), 5);
}

#[test]
fn full_cache_evicts_least_recently_used_and_stays_correct() {
    let c = cache(2 * MAX_RUN);
    let a = Pattern::new(1, 1000);
    let b = Pattern::new(2, 1000);
    for round in 0..3 {
        check(&a, &collect(&c, &a, 0..100).unwrap(), 0..100);
        check(&b, &collect(&c, &b, 0..100).unwrap(), 0..100);
        check(&a, &collect(&c, &a, 500..700).unwrap(), 500..700);
        let _ = round;
    }
}

#[test]
fn failed_load_returns_the_error_and_leaves_no_stale_entry() {
    let c = cache(256);
    let mut src = Pattern::new(3, 10);
    src.fail_chunk = Some(4);
    src.broken.store(true, Ordering::Relaxed);
    assert_eq!(collect(&c, &src, 0..10).unwrap_err(), 4);
    src.broken.store(false, Ordering::Relaxed);
    check(&src, &collect(&c, &src, 0..10).unwrap(), 0..10);
}

#[test]
fn concurrent_readers_on_a_small_cache_see_the_right_bytes() {
    let c = cache(2 * MAX_RUN);
    let sources: Vec<Pattern> = (0..4).map(|id| Pattern::new(id, 400)).collect();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (c, sources) = (&c, &sources);
            s.spawn(move || {
                for round in 0..40u64 {
                    let src = &sources[((t + round) % 4) as usize];
                    let start = (t * 37 + round * 11) % 350;
                    let range = start..start + 1 + (round % 50);
                    check(src, &collect(c, src, range.clone()).unwrap(), range);
                }
            });
        }
    });
}

#[test]
fn purge_zeroizes_every_slot() {
    let c = cache(256);
    let src = Pattern::new(9, 100);
    collect(&c, &src, 0..100).unwrap();
    assert_eq!(c.purge(), 256 * SLOT);
    for slot in &c.slots {
        assert!(slot.read().buf.iter().all(|b| *b == 0));
    }
    let loads = src.loads.load(Ordering::Relaxed);
    check(&src, &collect(&c, &src, 0..3).unwrap(), 0..3);
    assert_eq!(
        src.loads.load(Ordering::Relaxed),
        loads + 1,
        "purged chunks are reloaded"
    );
}

fn replies_all_zero(c: &ChunkCache) -> bool {
    c.replies
        .lock()
        .iter()
        .all(|(b, dirty)| *dirty == 0 && b.iter().all(|x| *x == 0))
}

#[test]
fn reply_buffers_are_zeroized_at_purge_even_when_out_during_it() {
    let c = cache(256);
    {
        let mut buf = c.reply_buffer();
        buf.prefix_mut(100).fill(0xAB);
    }
    assert!(!replies_all_zero(&c), "kept until the purge");
    c.purge();
    assert!(replies_all_zero(&c));

    // A buffer that is out while the purge runs is zeroized when it comes back.
    let mut out = c.reply_buffer();
    out.prefix_mut(4096).fill(0xCD);
    assert!(c.purge() > 0);
    out.prefix_mut(8192).fill(0xEF);
    drop(out);
    assert!(replies_all_zero(&c));
}

/// The `Locked:` and `VmFlags:` lines of the smaps entry that starts at `addr`.
fn smaps_entry(addr: usize) -> (u64, String) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{addr:x}-");
    let entry: Vec<&str> = smaps
        .lines()
        .skip_while(|l| !l.starts_with(&start))
        .take_while(|l| !l.starts_with("VmFlags:"))
        .collect();
    let locked = entry.iter().find(|l| l.starts_with("Locked:")).unwrap();
    let kib = locked.split_whitespace().nth(1).unwrap().parse().unwrap();
    let flags = smaps
        .lines()
        .skip_while(|l| !l.starts_with(&start))
        .find(|l| l.starts_with("VmFlags:"))
        .unwrap()
        .to_owned();
    (kib, flags)
}

#[test]
fn the_arena_is_locked_undumpable_not_inherited_and_on_huge_pages() {
    let c = ChunkCache::new(8 << 20, SLOT, 2, 1 << 20).unwrap();
    let (locked_kib, flags) = smaps_entry(c.region.addr());
    assert!(
        locked_kib * 1024 >= c.locked_bytes() as u64,
        "only {locked_kib} KiB locked"
    );
    for flag in [" lo", " dd", " dc", " hg"] {
        assert!(flags.contains(flag), "VmFlags lacks{flag}: {flags}");
    }
}

#[test]
fn too_small_cache_is_refused() {
    assert!(matches!(
        ChunkCache::new(SLOT * 10, SLOT, 1, 4096),
        Err(CacheError::TooSmall { .. })
    ));
}
