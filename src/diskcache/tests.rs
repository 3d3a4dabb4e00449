use super::*;
use parking_lot::Mutex;

fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Reads `len` bytes at `offset` into two buffers (split unevenly), if all are cached.
fn read_two(cache: &DiskCache, version: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
    let split = len / 3;
    let (mut a, mut b) = (vec![0u8; split], vec![0u8; len - split]);
    if !cache.read("obj/ab/1", version, offset, &mut [&mut a, &mut b]) {
        return None;
    }
    a.extend_from_slice(&b);
    Some(a)
}

fn store(cache: &DiskCache, version: &str, data: &[u8], offset: usize, len: usize) {
    let mut bytes = data[offset..offset + len].to_vec();
    cache.write("obj/ab/1", version, offset as u64, &[&mut bytes]);
    cache.flush();
}

#[test]
fn stored_ranges_are_served_across_windows_and_other_ranges_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
    let data = object(3 * PIECE as usize);
    assert_eq!(read_two(&cache, "v1", 0, 1000), None);
    let (offset, len) = (PIECE as usize - 5000, PIECE as usize + 9000);
    store(&cache, "v1", &data, offset, len);
    assert_eq!(
        read_two(&cache, "v1", offset as u64, len).as_deref(),
        Some(&data[offset..offset + len])
    );
    let inner = offset + 100;
    assert_eq!(
        read_two(&cache, "v1", inner as u64, 70_000).as_deref(),
        Some(&data[inner..inner + 70_000])
    );
    assert_eq!(
        read_two(&cache, "v1", offset as u64 - 1, 10),
        None,
        "before the run"
    );
    assert_eq!(
        read_two(&cache, "v2", offset as u64, 10),
        None,
        "another version"
    );
    // An adjacent run merges with the stored one.
    store(&cache, "v1", &data, offset - 20_000, 20_000);
    assert_eq!(
        read_two(&cache, "v1", (offset - 20_000) as u64, 30_000).as_deref(),
        Some(&data[offset - 20_000..offset + 10_000])
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (3, 3));
}

#[test]
fn pieces_survive_a_reopen_and_the_directory_is_private_and_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let data = object(PIECE as usize);
    {
        let cache = DiskCache::open(&path, 64 << 20).unwrap();
        store(&cache, "e1", &data, 0, data.len());
        let again = DiskCache::open(&path, 64 << 20);
        assert!(
            matches!(again, Err(DiskCacheError::InUse { ref holder, .. }) if *holder == std::process::id().to_string()),
            "{:?}",
            again.err()
        );
    }
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let cache = DiskCache::open(&path, 64 << 20).unwrap();
    assert_eq!(cache.stats().pieces, 1);
    assert_eq!(read_two(&cache, "e1", 0, data.len()).unwrap(), data);
    drop(cache);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        DiskCache::open(&path, 64 << 20),
        Err(DiskCacheError::Insecure { mode: 0o755, .. })
    ));
}

/// The piece file of window 0 of the test object at `version`.
fn piece_of(cache: &DiskCache, version: &str) -> PathBuf {
    cache
        .store
        .piece_path(&spans("obj/ab/1", version, 0, 1)[0].name)
}

/// Reads `len` bytes at `offset` through [`DiskCache::read_each`], in buffers of `split`
/// bytes (the last shorter), if all are cached.
fn read_each(cache: &DiskCache, offset: u64, len: usize, split: usize) -> Option<Vec<u8>> {
    let mut whole = vec![0u8; len];
    let mut bufs: Vec<&mut [u8]> = whole.chunks_mut(split).collect();
    let visited = Mutex::new(Vec::new());
    let hit = cache.read_each("obj/ab/1", "e", offset, &mut bufs, |index, bytes, buf| {
        buf.copy_from_slice(bytes);
        visited.lock().push(index);
    });
    if !hit {
        return None;
    }
    let mut visited = visited.into_inner();
    visited.sort();
    assert_eq!(visited, (0..bufs.len()).collect::<Vec<_>>());
    Some(whole)
}

#[test]
fn a_damaged_piece_is_never_served_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
    let data = object(100_000);
    let data_offset = HEADER_LEN + 8 * data.len().div_ceil(BLOCK);
    let mut damaged = 0;
    // The whole run, and 1000 bytes from its middle: each read checks the blocks it
    // serves, and must catch any damage to them, to the header or to the file's length.
    for (read_at, read_len) in [(0, data.len()), (50_000, 1000)] {
        for damage in ["data", "table", "start", "truncate", "grow", "magic"] {
            store(&cache, "e", &data, 0, data.len());
            let wanted = &data[read_at..read_at + read_len];
            assert_eq!(
                read_two(&cache, "e", read_at as u64, read_len).unwrap(),
                wanted
            );
            let piece = piece_of(&cache, "e");
            let mut bytes = fs::read(&piece).unwrap();
            match damage {
                "data" => bytes[data_offset + read_at + read_len - 1] ^= 1,
                "table" => bytes[HEADER_LEN + 8 * (read_at / BLOCK)] ^= 1,
                "start" => bytes[8] ^= 1,
                "truncate" => bytes.truncate(bytes.len() - 1),
                "grow" => bytes.push(0),
                _ => bytes[0] ^= 1,
            }
            fs::write(&piece, &bytes).unwrap();
            assert_eq!(
                read_two(&cache, "e", read_at as u64, read_len),
                None,
                "{damage}, {read_len} bytes"
            );
            damaged += 1;
            assert!(!piece.exists(), "{damage}: the damaged piece stayed");
        }
    }
    assert_eq!(cache.stats().damaged, damaged);
    assert_eq!(cache.stats().bytes, 0);
}

#[test]
fn a_read_checks_only_the_blocks_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
    let data = object(PIECE as usize);
    store(&cache, "e", &data, 0, data.len());
    let piece = piece_of(&cache, "e");
    let mut bytes = fs::read(&piece).unwrap();
    let data_offset = HEADER_LEN + 8 * data.len().div_ceil(BLOCK);
    // Damage in the last block: a read of the first blocks is still served, whole and
    // checked, and a read that reaches the damage is not.
    bytes[data_offset + data.len() - 1] ^= 1;
    fs::write(&piece, &bytes).unwrap();
    let front = 3 * BLOCK + 17;
    assert_eq!(read_two(&cache, "e", 5, front).unwrap(), data[5..5 + front]);
    assert_eq!(
        read_each(&cache, 5, front, 1000).unwrap(),
        data[5..5 + front]
    );
    assert_eq!(read_two(&cache, "e", PIECE - 10, 3), None);
    assert!(!piece.exists());
    assert_eq!(cache.stats().damaged, 1);
}

#[test]
fn a_piece_of_the_earlier_format_is_dropped_as_outdated_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let piece = {
        let cache = DiskCache::open(&path, 64 << 20).unwrap();
        store(&cache, "e", &object(1000), 0, 1000);
        piece_of(&cache, "e")
    };
    let mut old = OLD_MAGIC.to_vec();
    old.extend_from_slice(&[0; 16]);
    old.extend_from_slice(&object(1000));
    fs::write(&piece, &old).unwrap();
    let cache = DiskCache::open(&path, 64 << 20).unwrap();
    assert_eq!(cache.stats().pieces, 1);
    assert_eq!(read_two(&cache, "e", 0, 10), None);
    assert!(!piece.exists());
    let stats = cache.stats();
    assert_eq!((stats.damaged, stats.pieces, stats.bytes), (0, 0, 0));
}

#[test]
fn read_each_serves_every_buffer_across_windows_or_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
    let data = object(3 * PIECE as usize);
    let (offset, len) = (1000, 2 * PIECE as usize + 5000);
    assert_eq!(read_each(&cache, offset as u64, len, 65_552), None);
    store(&cache, "e", &data, offset, len);
    for split in [65_552, 4096, 1, len] {
        assert_eq!(
            read_each(&cache, offset as u64, len, split).unwrap(),
            data[offset..offset + len],
            "{split}"
        );
    }
    assert_eq!(read_each(&cache, offset as u64 - 1, 10, 4), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (4, 2));
}

#[test]
fn the_size_bound_holds_and_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let piece_bytes = piece_file_len(PIECE as u32);
    let cache = DiskCache::open(&dir.path().join("c"), 3 * piece_bytes).unwrap();
    let data = object(8 * PIECE as usize);
    for window in 0..8 {
        let offset = window * PIECE as usize;
        store(&cache, "e", &data, offset, PIECE as usize);
        if window == 2 {
            // Window 0 used again: window 1 is now the least recently used.
            assert!(read_two(&cache, "e", 0, 10).is_some());
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 3 * piece_bytes, "{stats:?}");
    }
    let on_disk: u64 = walk(&dir.path().join("c/pieces"));
    assert_eq!(on_disk, cache.stats().bytes);
    assert_eq!(cache.stats().pieces, 3);
    for window in 5..8 {
        assert!(
            read_two(&cache, "e", window * PIECE, 10).is_some(),
            "{window}"
        );
    }
    assert!(read_two(&cache, "e", PIECE, 10).is_none());
}

fn walk(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

#[test]
fn clear_empties_a_cache_and_refuses_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    {
        let cache = DiskCache::open(&path, 64 << 20).unwrap();
        store(
            &cache,
            "e",
            &object(PIECE as usize * 2),
            0,
            PIECE as usize * 2,
        );
        assert!(matches!(clear(&path), Err(DiskCacheError::InUse { .. })));
    }
    assert_eq!(clear(&path).unwrap(), 2);
    assert_eq!(walk(&path.join("pieces")), 0);
    let not_a_cache = dir.path().join("home");
    fs::create_dir(&not_a_cache).unwrap();
    fs::write(not_a_cache.join("thesis.tex"), b"keep me").unwrap();
    assert!(matches!(
        clear(&not_a_cache),
        Err(DiskCacheError::NotACache { .. })
    ));
    assert!(not_a_cache.join("thesis.tex").exists());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever runs were stored, a read the cache serves equals the object's bytes.
    #[test]
    fn served_bytes_always_equal_the_object(
        runs in proptest::collection::vec((0usize..600_000, 1usize..300_000), 1..6),
        reads in proptest::collection::vec((0usize..600_000, 1usize..200_000), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
        let data = object(900_000);
        for (offset, len) in runs {
            store(&cache, "e", &data, offset, len.min(data.len() - offset));
        }
        for (offset, len) in reads {
            let len = len.min(data.len() - offset);
            let served = read_two(&cache, "e", offset as u64, len);
            if let Some(bytes) = &served {
                proptest::prop_assert_eq!(&bytes[..], &data[offset..offset + len]);
            }
            // Served the same way, or missed the same way, in chunk-sized buffers.
            proptest::prop_assert_eq!(read_each(&cache, offset as u64, len, 65_552), served);
        }
    }
}
