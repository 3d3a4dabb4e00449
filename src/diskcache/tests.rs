use super::*;

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

#[test]
fn a_damaged_piece_is_never_served_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(&dir.path().join("c"), 64 << 20).unwrap();
    let data = object(100_000);
    // A read of exactly the stored run is served in place (hashed in the caller's
    // buffers); a read of part of it through a copy. Both must catch every damage.
    for read_len in [data.len(), 1000] {
        for damage in ["flip", "truncate", "grow", "magic"] {
            store(&cache, "e", &data, 0, data.len());
            assert_eq!(
                read_two(&cache, "e", 0, read_len).unwrap(),
                data[..read_len]
            );
            let piece = cache
                .store
                .piece_path(&spans("obj/ab/1", "e", 0, 1)[0].name);
            let mut bytes = fs::read(&piece).unwrap();
            match damage {
                "flip" => bytes[HEADER_LEN + 99_000] ^= 1,
                "truncate" => bytes.truncate(bytes.len() - 1),
                "grow" => bytes.push(0),
                _ => bytes[0] ^= 1,
            }
            fs::write(&piece, &bytes).unwrap();
            assert_eq!(
                read_two(&cache, "e", 0, read_len),
                None,
                "{damage}, {read_len} bytes"
            );
            assert!(!piece.exists(), "{damage}: the damaged piece stayed");
        }
    }
    assert_eq!(cache.stats().damaged, 8);
    assert_eq!(cache.stats().bytes, 0);
}

#[test]
fn the_size_bound_holds_and_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let piece_bytes = PIECE + HEADER_LEN as u64;
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
            if let Some(bytes) = read_two(&cache, "e", offset as u64, len) {
                proptest::prop_assert_eq!(&bytes[..], &data[offset..offset + len]);
            }
        }
    }
}
