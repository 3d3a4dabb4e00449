use super::*;
use crate::backend::LocalBackend;
use crate::format::DEFAULT_CHUNK_LOG2;
use crate::seal::{seal_file, SealJob, SealOptions};

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

struct Fixture {
    bucket: tempfile::TempDir,
    plain: tempfile::TempDir,
    identity_bytes: [u8; 32],
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 13 + seed as usize * 101 + i / 251) as u8)
        .collect()
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            bucket: tempfile::tempdir().unwrap(),
            plain: tempfile::tempdir().unwrap(),
            identity_bytes: [7; 32],
        }
    }

    fn identity(&self) -> Identity {
        Identity::from(self.identity_bytes)
    }

    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::open(self.bucket.path()).unwrap())
    }

    /// Seals `data` as `key` to `identity` with chunk size 2^`log2`.
    fn seal_as(&self, key: &str, data: &[u8], identity: &Identity, log2: u8) {
        let source = self.plain.path().join(key.replace('/', "_"));
        std::fs::write(&source, data).unwrap();
        let job = SealJob {
            source,
            logical_path: key.to_owned(),
            size: data.len() as u64,
            modified: (0, 0),
        };
        let options = SealOptions {
            recipients: vec![identity.recipient()],
            chunk_log2: log2,
            overwrite: true,
        };
        seal_file(&self.backend(), &job, &options, &|_| {}).unwrap();
    }

    fn seal(&self, key: &str, data: &[u8]) {
        self.seal_as(key, data, &self.identity(), DEFAULT_CHUNK_LOG2);
    }

    fn vault(&self) -> Arc<Vault> {
        let config = VaultConfig {
            cache_size: 16 << 20,
            ..VaultConfig::default()
        };
        Arc::new(Vault::new(self.backend(), self.identity(), config, None, None).unwrap())
    }

    /// A vault that audits to a fresh log; returns the log's path (in the plain dir).
    fn audited_vault(&self) -> (Arc<Vault>, std::path::PathBuf) {
        let path = self.plain.path().join("audit.log");
        let vault = audited(self.backend(), self.identity(), &path, None);
        (vault, path)
    }

    fn object_path(&self, key: &str) -> std::path::PathBuf {
        self.bucket.path().join(key)
    }
}

/// A vault on `backend` (16 MiB cache) that audits to a fresh log at `log`.
fn audited(
    backend: Arc<dyn Backend>,
    identity: Identity,
    log: &std::path::Path,
    manifest: Option<(ManifestStore, Manifest)>,
) -> Arc<Vault> {
    let audit = crate::audit::AuditLog::open_segment(
        log,
        &identity.recipient(),
        crate::audit::SyncPolicy::default(),
        None,
        serde_json::Value::Null,
    )
    .unwrap();
    let config = VaultConfig {
        cache_size: 16 << 20,
        ..VaultConfig::default()
    };
    let vault = Vault::new(backend, identity, config, Some(Arc::new(audit)), manifest);
    Arc::new(vault.unwrap())
}

fn resolve(vault: &Vault, path: &str) -> Result<Attr, VaultError> {
    let mut attr = vault.getattr(ROOT_INO, ME)?;
    for name in path.split('/') {
        attr = vault.lookup(attr.ino, name, ME)?;
    }
    Ok(attr)
}

fn read_all(vault: &Arc<Vault>, path: &str) -> Result<Vec<u8>, VaultError> {
    let attr = resolve(vault, path)?;
    let fh = vault.open(attr.ino, ME)?;
    let mut out = vec![0u8; attr.size as usize + 10];
    let mut done = 0;
    loop {
        let end = (done + 100_000).min(out.len());
        let n = vault.read(fh, done as u64, &mut out[done..end], ME)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    vault.release(fh, ME);
    out.truncate(done);
    Ok(out)
}

#[test]
fn tree_and_reads_match_the_plaintext() {
    let f = Fixture::new();
    let big = pattern(1_000_003, 1);
    f.seal("study/CT/1.dcm", &big);
    f.seal("study/CT/2.dcm", b"small");
    f.seal("empty", b"");
    f.seal_as("study/MR/4k.bin", &pattern(50_000, 2), &f.identity(), 12);
    let v = f.vault();
    let names = |ino| {
        v.readdir(ino, None, usize::MAX, ME)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(ROOT_INO), ["empty", "study"]);
    let ct = resolve(&v, "study/CT").unwrap();
    assert!(ct.is_dir);
    assert_eq!(names(ct.ino), ["1.dcm", "2.dcm"]);
    assert_eq!(
        resolve(&v, "study/CT/1.dcm").unwrap().size,
        big.len() as u64
    );
    assert_eq!(read_all(&v, "study/CT/1.dcm").unwrap(), big);
    assert_eq!(read_all(&v, "study/CT/2.dcm").unwrap(), b"small");
    assert_eq!(read_all(&v, "empty").unwrap(), b"");
    assert_eq!(read_all(&v, "study/MR/4k.bin").unwrap(), pattern(50_000, 2));

    let fh = v
        .open(resolve(&v, "study/CT/1.dcm").unwrap().ino, ME)
        .unwrap();
    for (offset, len) in [
        (0, 1),
        (65_535, 2),
        (65_536, 65_536),
        (999_990, 100),
        (5, 300_000),
    ] {
        let mut out = vec![0u8; len];
        let n = v.read(fh, offset, &mut out, ME).unwrap();
        let end = (offset as usize + len).min(big.len());
        assert_eq!(
            &out[..n],
            &big[offset as usize..end],
            "read at {offset}+{len}"
        );
    }
    assert_eq!(
        v.read(fh, big.len() as u64 + 5, &mut [0u8; 10], ME)
            .unwrap(),
        0
    );
    assert!(matches!(
        v.lookup(ROOT_INO, "missing", ME),
        Err(VaultError::NotFound)
    ));
    assert!(matches!(v.open(ct.ino, ME), Err(VaultError::IsADirectory)));
}

#[test]
fn objects_we_cannot_open_are_hidden() {
    let f = Fixture::new();
    f.seal("mine", b"ok");
    f.seal_as(
        "theirs",
        b"not for us",
        &Identity::from([9; 32]),
        DEFAULT_CHUNK_LOG2,
    );
    std::fs::write(f.object_path("plain.txt"), b"never sealed").unwrap();
    std::fs::write(f.object_path("tiny"), b"SM").unwrap();
    let v = f.vault();
    let names: Vec<String> = v
        .readdir(ROOT_INO, None, usize::MAX, ME)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["mine"]);
    assert!(matches!(
        v.lookup(ROOT_INO, "theirs", ME),
        Err(VaultError::NotFound)
    ));
}

#[test]
fn truncated_extended_moved_and_swapped_objects_are_hidden() {
    let f = Fixture::new();
    let data = pattern(200_000, 3);
    for name in ["a", "b", "trunc", "ext", "orig"] {
        f.seal(name, &data);
    }
    let path = |k: &str| f.object_path(k);
    let bytes = std::fs::read(path("trunc")).unwrap();
    std::fs::write(path("trunc"), &bytes[..bytes.len() - 100]).unwrap();
    let mut ext = std::fs::read(path("ext")).unwrap();
    ext.extend_from_slice(&[0u8; 80]);
    std::fs::write(path("ext"), ext).unwrap();
    std::fs::copy(path("orig"), path("copy-elsewhere")).unwrap();
    let (a, b) = (
        std::fs::read(path("a")).unwrap(),
        std::fs::read(path("b")).unwrap(),
    );
    std::fs::write(path("a"), b).unwrap();
    std::fs::write(path("b"), a).unwrap();
    let v = f.vault();
    let names: Vec<String> = v
        .readdir(ROOT_INO, None, usize::MAX, ME)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["orig"]);
}

#[test]
fn a_tampered_chunk_fails_its_reads_only() {
    let f = Fixture::new();
    let data = pattern(400_000, 4);
    f.seal("scan", &data);
    let mut bytes = std::fs::read(f.object_path("scan")).unwrap();
    let header_len = bytes.len() - 400_000 - 7 * TAG_LEN;
    bytes[header_len + 2 * (65_536 + TAG_LEN) + 10] ^= 0x80; // inside chunk 2
    std::fs::write(f.object_path("scan"), bytes).unwrap();
    let v = f.vault();
    let fh = v.open(resolve(&v, "scan").unwrap().ino, ME).unwrap();
    let mut out = vec![0u8; 65_536];
    assert_eq!(v.read(fh, 0, &mut out, ME).unwrap(), 65_536);
    assert_eq!(out, data[..65_536]);
    let mut out = vec![0u8; 4096];
    let err = v.read(fh, 2 * 65_536 + 100, &mut out, ME).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Format {
                source: FormatError::ChunkTampered { index: 2 },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        out.iter().all(|b| *b == 0),
        "no byte of a failed read is released"
    );
    assert!(
        v.read(fh, 65_536, &mut vec![0u8; 200_000], ME).is_err(),
        "a read spanning it fails too"
    );
    let mut out = vec![0u8; 1000];
    v.read(fh, 3 * 65_536, &mut out, ME).unwrap();
    assert_eq!(out, data[3 * 65_536..3 * 65_536 + 1000]);
}

#[test]
fn sequential_reads_prefetch_ahead() {
    let f = Fixture::new();
    let data = pattern(8 << 20, 5);
    f.seal("big", &data);
    let v = f.vault();
    let fh = v.open(resolve(&v, "big").unwrap().ino, ME).unwrap();
    let mut out = vec![0u8; 128 << 10];
    for i in 0..4u64 {
        v.read(fh, i * (128 << 10), &mut out, ME).unwrap();
    }
    // Reads covered 8 chunks; read-ahead asked for more in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while v.cache().stats().loads.load(Ordering::Relaxed) < 24 {
        assert!(
            std::time::Instant::now() < deadline,
            "no read-ahead happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(read_all(&v, "big").unwrap(), data);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn reads_at_any_offset_and_size_return_the_plaintext(
        reads in proptest::collection::vec((0u64..1_400_000, 0usize..1_200_000), 1..12),
    ) {
        let f = Fixture::new();
        let data = pattern(1_300_000, 3);
        f.seal("f", &data);
        let v = f.vault();
        let fh = v.open(resolve(&v, "f").unwrap().ino, ME).unwrap();
        // Twice: the second time from what the first left in the cache.
        for (offset, size) in reads.iter().chain(&reads) {
            let mut out = vec![0u8; *size];
            let n = v.read(fh, *offset, &mut out, ME).unwrap();
            let start = (*offset as usize).min(data.len());
            let end = (start + size).min(data.len());
            proptest::prop_assert_eq!(&out[..n], &data[start..end]);
        }
    }
}

/// A local bucket that reports a remote backend's read profile and records the size of
/// every ranged read.
struct RemoteLike {
    inner: LocalBackend,
    profile: crate::backend::ReadProfile,
    requests: Mutex<Vec<u64>>,
}

impl Backend for RemoteLike {
    fn list(&self) -> Result<Vec<crate::backend::ObjectInfo>, BackendError> {
        self.inner.list()
    }
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        self.read_range_arriving(key, offset, bufs, &crate::backend::remote::CopyIn)
    }
    /// Delivers the range like a streamed body, in pieces of [`RemoteLike::PIECE`] bytes,
    /// so that some chunks arrive in one piece and others split over two.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn crate::backend::Arrival,
    ) -> Result<(), BackendError> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        self.requests.lock().push(total as u64);
        let mut body = vec![0u8; total];
        self.inner.read_range(key, offset, &mut [&mut body])?;
        let mut filler = crate::backend::remote::BufFiller::new(bufs, arrival, key, offset);
        for piece in body.chunks(Self::PIECE) {
            filler.push(piece)?;
        }
        filler.finish()
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(key)
    }
    fn create(
        &self,
        key: &str,
        overwrite: bool,
    ) -> Result<Box<dyn crate::backend::ObjectWriter>, BackendError> {
        self.inner.create(key, overwrite)
    }
    fn read_profile(&self) -> crate::backend::ReadProfile {
        self.profile
    }
    fn location(&self, key: &str) -> Result<String, BackendError> {
        self.inner.location(key)
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "remote-like".into()
    }
}

impl RemoteLike {
    /// Bytes per piece of a streamed body: more than a 64 KiB chunk, less than two.
    const PIECE: usize = 100_000;

    /// A vault over `f`'s bucket with the remote backends' read profile; returns the
    /// backend too, to look at its requests.
    fn vault(f: &Fixture) -> (Arc<Vault>, Arc<RemoteLike>) {
        let backend = Arc::new(RemoteLike {
            inner: LocalBackend::open(f.bucket.path()).unwrap(),
            profile: crate::backend::ReadProfile::remote(),
            requests: Mutex::new(Vec::new()),
        });
        let config = VaultConfig {
            cache_size: 16 << 20,
            ..VaultConfig::default()
        };
        let vault = Vault::new(backend.clone(), f.identity(), config, None, None).unwrap();
        (Arc::new(vault), backend)
    }
}

#[test]
fn a_remote_first_request_brings_the_header_with_the_first_chunks() {
    let f = Fixture::new();
    let slice = pattern(200_000, 5);
    let big = pattern(1_000_000, 6);
    f.seal("a/slice", &slice);
    f.seal("b/big", &big);
    let (v, backend) = RemoteLike::vault(&f);
    assert_eq!(read_all(&v, "a/slice").unwrap(), slice);
    let slice_len = std::fs::metadata(f.object_path("a/slice")).unwrap().len();
    assert_eq!(
        *backend.requests.lock(),
        [slice_len],
        "header, data and last chunk of a small file in one request"
    );
    backend.requests.lock().clear();
    resolve(&v, "b/big").unwrap();
    let last_chunk = (1_000_000 % 65_536 + TAG_LEN) as u64;
    assert_eq!(*backend.requests.lock(), [256 << 10, last_chunk]);
    assert_eq!(read_all(&v, "b/big").unwrap(), big);
}

#[test]
fn a_tampered_chunk_that_came_with_the_header_fails_its_reads_only() {
    let f = Fixture::new();
    let data = pattern(200_000, 7);
    f.seal("slice", &data);
    let mut bytes = std::fs::read(f.object_path("slice")).unwrap();
    let header_len = bytes.len() - 200_000 - 4 * TAG_LEN;
    bytes[header_len + 65_536 + TAG_LEN + 10] ^= 0x80; // inside chunk 1
    std::fs::write(f.object_path("slice"), bytes).unwrap();
    let (v, _) = RemoteLike::vault(&f);
    let fh = v.open(resolve(&v, "slice").unwrap().ino, ME).unwrap();
    let mut out = vec![0u8; 65_536];
    assert_eq!(v.read(fh, 0, &mut out, ME).unwrap(), 65_536);
    assert_eq!(out, data[..65_536]);
    let err = v.read(fh, 65_536, &mut out, ME).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Format {
                source: FormatError::ChunkTampered { index: 1 },
                ..
            }
        ),
        "{err}"
    );
    v.read(fh, 2 * 65_536, &mut out, ME).unwrap();
    assert_eq!(out, data[2 * 65_536..3 * 65_536]);
}

#[test]
fn chunks_streamed_by_a_remote_backend_are_opened_as_they_arrive_and_checked() {
    let f = Fixture::new();
    let data = pattern((3 << 20) + 1000, 8);
    f.seal("big", &data);
    let (v, _) = RemoteLike::vault(&f);
    assert_eq!(read_all(&v, "big").unwrap(), data);

    // Tamper with a chunk far past the first read: it arrives in a streamed read-ahead part.
    let mut bytes = std::fs::read(f.object_path("big")).unwrap();
    let header_len = bytes.len() - data.len() - 49 * TAG_LEN;
    let sealed_chunk = 65_536 + TAG_LEN;
    bytes[header_len + 40 * sealed_chunk + 1000] ^= 0x01;
    std::fs::write(f.object_path("big"), bytes).unwrap();
    let (v, _) = RemoteLike::vault(&f);
    let fh = v.open(resolve(&v, "big").unwrap().ino, ME).unwrap();
    let mut out = vec![0u8; 1 << 20];
    assert_eq!(v.read(fh, 0, &mut out, ME).unwrap(), 1 << 20);
    assert_eq!(out, data[..1 << 20]);
    let err = v.read(fh, 40 * 65_536, &mut out[..65_536], ME).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Format {
                source: FormatError::ChunkTampered { index: 40 },
                ..
            }
        ),
        "{err}"
    );
    let mut tail = vec![0u8; 65_536];
    assert_eq!(v.read(fh, 41 * 65_536, &mut tail, ME).unwrap(), 65_536);
    assert_eq!(tail, data[41 * 65_536..42 * 65_536]);
}

#[test]
fn read_ahead_keeps_the_window_full_with_requests_of_the_part_size() {
    let f = Fixture::new();
    let data = pattern(48 << 20, 9);
    f.seal("big", &data);
    let backend = Arc::new(RemoteLike {
        inner: LocalBackend::open(f.bucket.path()).unwrap(),
        profile: crate::backend::ReadProfile {
            parallel_requests: 4,
            max_readahead: 16 << 20,
            part_size: 2 << 20,
            request_threads: 8,
            first_read: 4 << 10,
            files_ahead: 0,
        },
        requests: Mutex::new(Vec::new()),
    });
    let config = VaultConfig {
        cache_size: 128 << 20,
        ..VaultConfig::default()
    };
    let v = Arc::new(Vault::new(backend.clone(), f.identity(), config, None, None).unwrap());
    let fh = v.open(resolve(&v, "big").unwrap().ino, ME).unwrap();
    let chunk = 1u64 << DEFAULT_CHUNK_LOG2;
    let mut out = vec![0u8; 1 << 20];
    let settle = |until_chunk: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while v.cache().stats().loads.load(Ordering::Relaxed) < until_chunk {
            assert!(std::time::Instant::now() < deadline, "read-ahead stalled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    for i in 0..24u64 {
        let n = v.read(fh, i << 20, &mut out, ME).unwrap();
        assert_eq!(&out[..n], &data[(i << 20) as usize..][..n]);
        if i >= 8 {
            // The window (16 MiB, reached after 5 reads) is refilled whenever one part
            // (2 MiB) of it is missing: what was loaded never lags the window's end by a
            // whole part. (The last chunk was loaded at open.)
            let end = (i + 1) << 20;
            settle((end + (16 << 20) - (2 << 20)) / chunk);
        }
    }
    let requests = backend.requests.lock();
    // Once the window is large, read-ahead asks for whole parts (the reads themselves
    // found their chunks cached and asked for nothing).
    let large: Vec<u64> = requests.iter().copied().filter(|&r| r > 1 << 20).collect();
    assert!(large.len() >= 8, "{requests:?}");
    let part_sealed = (2 << 20) / chunk * (chunk + crate::format::TAG_LEN as u64);
    assert!(
        requests.iter().all(|&r| r <= part_sealed),
        "no request beyond a part: {requests:?}"
    );
}

#[test]
fn sequential_readers_share_half_the_cache_for_their_read_ahead_windows() {
    let f = Fixture::new();
    let data = pattern(48 << 20, 11);
    for name in ["alone", "b", "c", "d", "e", "again"] {
        f.seal(name, &data);
    }
    let config = VaultConfig {
        cache_size: 128 << 20,
        ..VaultConfig::default()
    };
    let v = Arc::new(Vault::new(f.backend(), f.identity(), config, None, None).unwrap());
    let chunks_per_mib = (1u64 << 20) >> DEFAULT_CHUNK_LOG2;
    // Chunks loaded once read-ahead has stopped.
    let settled_loads = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut last = u64::MAX;
        loop {
            let loads = v.cache().stats().loads.load(Ordering::Relaxed);
            if loads == last {
                return loads;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "read-ahead never settled"
            );
            last = loads;
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let mut out = vec![0u8; 1 << 20];
    // Reads the first 8 MiB of each file, 1 MiB from each in turn; the windows grow to
    // their limit (1, 2, 4, 8, 16, 32 MiB) on the way. Returns the chunks loaded meanwhile.
    let mut read_8_mib_of = |names: &[&str]| {
        let handles: Vec<u64> = names
            .iter()
            .map(|name| v.open(resolve(&v, name).unwrap().ino, ME).unwrap())
            .collect();
        let before = settled_loads();
        for i in 0..8u64 {
            for &fh in &handles {
                assert_eq!(v.read(fh, i << 20, &mut out, ME).unwrap(), 1 << 20);
                assert_eq!(out, data[(i << 20) as usize..][..1 << 20]);
            }
        }
        let loaded = settled_loads() - before;
        for fh in handles {
            v.release(fh, ME);
        }
        loaded
    };
    // Per reader: the 8 MiB read and the window after it, less at most one part (1 MiB)
    // still to be asked for.
    let expect = |readers: u64, window_mib: u64| {
        readers * (8 + window_mib - 1) * chunks_per_mib
            ..=readers * (8 + window_mib) * chunks_per_mib
    };
    // Alone, a reader gets a quarter of the cache.
    let alone = read_8_mib_of(&["alone"]);
    assert!(expect(1, 32).contains(&alone), "{alone} chunks loaded");
    // Four at once share half of it: 16 MiB each, not 32 (which would overrun the cache).
    let four = read_8_mib_of(&["b", "c", "d", "e"]);
    assert!(expect(4, 16).contains(&four), "{four} chunks loaded");
    // Released, they no longer count: a reader alone again gets a quarter.
    let again = read_8_mib_of(&["again"]);
    assert!(expect(1, 32).contains(&again), "{again} chunks loaded");
}

#[test]
fn read_ahead_starts_at_the_chunk_after_a_chunk_aligned_read() {
    let f = Fixture::new();
    let data = pattern((8 << 20) + 1000, 10);
    f.seal("big", &data);
    let (v, backend) = RemoteLike::vault(&f);
    let fh = v.open(resolve(&v, "big").unwrap().ino, ME).unwrap();
    let mut out = vec![0u8; 1 << 20];
    for i in 0..4u64 {
        let n = v.read(fh, i << 20, &mut out, ME).unwrap();
        assert_eq!(&out[..n], &data[(i << 20) as usize..][..n]);
    }
    // Each 1 MiB read ends on a chunk boundary; the chunk right after it must be part of
    // the read-ahead, or the next read fetches it alone, a round trip of its own.
    let one_chunk = (65_536 + TAG_LEN) as u64;
    let requests = backend.requests.lock();
    assert!(
        !requests.contains(&one_chunk),
        "a lone chunk was fetched: {requests:?}"
    );
}

#[test]
fn purge_drops_keys_and_fails_later_reads() {
    let f = Fixture::new();
    f.seal("x", &pattern(100_000, 6));
    let v = f.vault();
    let fh = v.open(resolve(&v, "x").unwrap().ino, ME).unwrap();
    v.read(fh, 0, &mut [0u8; 10], ME).unwrap();
    assert!(v.purge() >= (16 << 20) - (1 << 20));
    assert!(matches!(
        v.read(fh, 0, &mut [0u8; 10], ME),
        Err(VaultError::Purged)
    ));
    assert!(matches!(v.open(2, ME), Err(VaultError::Purged)));
}

#[test]
fn a_handle_open_across_lock_and_unlock_reads_again_and_is_audited_as_reopened() {
    let f = Fixture::new();
    let data = pattern(100_000, 7);
    f.seal("x", &data);
    let (v, log) = f.audited_vault();
    let fh = v.open(resolve(&v, "x").unwrap().ino, ME).unwrap();
    let mut first = [0u8; 10];
    v.read(fh, 0, &mut first, ME).unwrap();
    v.purge();
    assert!(
        v.handles.lock().is_empty(),
        "a handle kept its keys over the lock"
    );
    assert!(matches!(
        v.read(fh, 0, &mut [0u8; 10], ME),
        Err(VaultError::Purged)
    ));
    v.unlock(f.identity()).unwrap();
    let mut again = vec![0u8; 1000];
    assert_eq!(v.read(fh, 50_000, &mut again, ME).unwrap(), 1000);
    assert_eq!(again, data[50_000..51_000]);
    assert!(matches!(
        v.read(fh + 1, 0, &mut [0u8; 1], ME),
        Err(VaultError::BadHandle)
    ));
    v.release(fh, ME);
    assert!(matches!(
        v.read(fh, 0, &mut [0u8; 1], ME),
        Err(VaultError::BadHandle)
    ));
    let text = std::fs::read_to_string(&log).unwrap();
    let reopened = text
        .lines()
        .filter(|l| l.contains("\"event\":\"open\"") && l.contains("reopened_after_unlock"))
        .count();
    assert_eq!(reopened, 1, "{text}");
}

#[test]
fn listing_pages_continue_after_their_last_entry_even_past_hidden_ones() {
    let f = Fixture::new();
    for name in ["a", "b", "d", "e"] {
        f.seal(name, name.as_bytes());
    }
    std::fs::write(f.object_path("c"), b"junk").unwrap();
    let v = f.vault();
    let c = v.tree.read().child(ROOT_INO, "c");
    assert!(c.is_some(), "listed before its header is checked");
    let names = |after, limit| -> Vec<String> {
        v.readdir(ROOT_INO, after, limit, ME)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    assert_eq!(names(None, 2), ["a", "b"]);
    let b = v.lookup(ROOT_INO, "b", ME).unwrap().ino;
    assert_eq!(names(Some(b), 2), ["d", "e"]);
    assert_eq!(names(c, 10), ["d", "e"], "after a hidden entry");
    let e = v.lookup(ROOT_INO, "e", ME).unwrap().ino;
    assert!(names(Some(e), 10).is_empty());
}

#[test]
fn resolving_a_directory_stops_when_the_caller_is_signalled_and_resumes_later() {
    use nix::sys::signal::{kill, Signal};
    let f = Fixture::new();
    f.seal("dir/good", b"good");
    for i in 0..1000 {
        std::fs::write(f.object_path(&format!("dir/junk{i:04}")), b"junk").unwrap();
    }
    let v = f.vault();
    let dir = v.lookup(ROOT_INO, "dir", ME).unwrap().ino;
    // A stopped process with SIGINT pending stands for a reader hit by Ctrl-C.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    kill(pid, Signal::SIGINT).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let signalled = Caller {
        pid: child.id(),
        ..ME
    };
    let interrupted = v.readdir(dir, None, usize::MAX, signalled);
    kill(pid, Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        matches!(interrupted, Err(VaultError::Interrupted)),
        "{interrupted:?}"
    );
    let unchecked = v.tree.read().unresolved_files(dir).unwrap().len();
    // It stopped at the first look at the caller, after 64 headers (give or take the
    // ones other threads had taken).
    assert!(
        unchecked >= 1001 - 2 * resolve::INTERRUPT_CHECK_EVERY,
        "only {unchecked} files left unchecked"
    );
    let names: Vec<String> = v
        .readdir(dir, None, usize::MAX, ME)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["good"]);
}

#[test]
fn hostile_and_clashing_keys_are_skipped_when_building_the_tree() {
    let listing = [
        "ok/file",
        "../escape",
        "/abs",
        "a//b",
        "ok",
        "ok/file/deeper",
        "n\0ul",
    ]
    .iter()
    .map(|k| crate::backend::ObjectInfo {
        key: k.to_string(),
        size: 0,
    })
    .collect();
    let tree = tree::Tree::build(listing);
    let root = tree.child(ROOT_INO, "ok").expect("directory kept");
    let file = tree
        .child(root, "file")
        .expect("directory `ok/file` wins over the object");
    assert!(tree.child(file, "deeper").is_some());
    assert!(tree.child(ROOT_INO, "..").is_none());
    assert!(tree.child(ROOT_INO, "a").is_none());
    assert_eq!(tree.unresolved_files(ROOT_INO).unwrap().len(), 0);
}

/// A shared memory object of `len` bytes for host-sink loads, unlinked on drop.
struct Shm(String);

impl Shm {
    fn new(tag: &str, len: u64) -> Shm {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let name = format!("/smpfs-vault-{}-{tag}", std::process::id());
        let fd = nix::sys::mman::shm_open(
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::File::from(fd).set_len(len).unwrap();
        Shm(name)
    }

    fn target(&self, offset: u64) -> crate::gpu::Target {
        let mut handle = [0u8; crate::gpu::HANDLE_LEN];
        handle[..self.0.len()].copy_from_slice(self.0.as_bytes());
        crate::gpu::Target {
            device: 0,
            handle,
            offset,
        }
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(format!("/dev/shm{}", self.0)).unwrap()
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = nix::sys::mman::shm_unlink(self.0.as_str());
    }
}

fn host_sink_vault(f: &Fixture) -> Arc<Vault> {
    let config = VaultConfig {
        cache_size: 16 << 20,
        gpu_sink: SinkKind::Host,
        ..VaultConfig::default()
    };
    Arc::new(Vault::new(f.backend(), f.identity(), config, None, None).unwrap())
}

fn load(target: crate::gpu::Target, file_offset: u64, length: u64) -> Load {
    Load {
        target,
        file_offset,
        length,
    }
}

#[test]
fn gpu_loads_copy_exactly_the_range_through_the_staging_pipeline() {
    let f = Fixture::new();
    // Larger than the cache: the load cycles it, a window at a time.
    let big = pattern(20_000_017, 7);
    let small = pattern(50_000, 8);
    f.seal("big", &big);
    f.seal_as("small", &small, &f.identity(), 12);
    let v = host_sink_vault(&f);
    let fh = v.open(resolve(&v, "big").unwrap().ino, ME).unwrap();
    let shm = Shm::new("copy", 20_000_100);
    assert_eq!(
        v.gpu_load(fh, &load(shm.target(3), 0, big.len() as u64), ME)
            .unwrap(),
        big.len() as u64
    );
    let out = shm.read();
    assert_eq!(&out[..3], &[0; 3]);
    assert!(out[3..3 + big.len()] == big[..], "whole file");
    assert!(out[3 + big.len()..].iter().all(|&b| b == 0));

    let fh4k = v.open(resolve(&v, "small").unwrap().ino, ME).unwrap();
    for (file, dest, len) in [
        (1, 0, 1),
        (4095, 77, 2),
        (4097, 4096, 45_000),
        (0, 1, 50_000),
    ] {
        let shm = Shm::new(&format!("{file}-{dest}"), dest + len);
        v.gpu_load(fh4k, &load(shm.target(dest), file, len), ME)
            .unwrap();
        let out = shm.read();
        assert_eq!(
            &out[dest as usize..],
            &small[file as usize..(file + len) as usize],
            "{file} {dest} {len}"
        );
    }
    assert_eq!(
        v.gpu_load(fh4k, &load(shm.target(0), 50_000, 0), ME)
            .unwrap(),
        0
    );
    let info = v.file_info(fh4k, ME).unwrap();
    assert_eq!((info.size, info.chunk_size), (50_000, 4096));
}

#[test]
fn gpu_loads_are_refused_past_eof_into_small_targets_and_when_locked() {
    let f = Fixture::new();
    let data = pattern(300_000, 9);
    f.seal("x", &data);
    let v = host_sink_vault(&f);
    let fh = v.open(resolve(&v, "x").unwrap().ino, ME).unwrap();
    let shm = Shm::new("refuse", 1000);
    let past = v.gpu_load(fh, &load(shm.target(0), 299_500, 501), ME);
    assert!(
        matches!(past, Err(VaultError::PastEof { size: 300_000, .. })),
        "{past:?}"
    );
    let small = v.gpu_load(fh, &load(shm.target(1), 0, 1000), ME);
    assert!(
        matches!(
            small,
            Err(VaultError::Gpu(GpuError::DestinationTooSmall { .. }))
        ),
        "{small:?}"
    );
    assert!(shm.read().iter().all(|&b| b == 0), "nothing written");
    assert!(matches!(
        v.gpu_load(fh + 100, &load(shm.target(0), 0, 1), ME),
        Err(VaultError::BadHandle)
    ));
    v.purge();
    assert!(matches!(
        v.gpu_load(fh, &load(shm.target(0), 0, 1), ME),
        Err(VaultError::Purged)
    ));
    assert!(matches!(v.file_info(fh, ME), Err(VaultError::Purged)));
}

#[test]
fn a_gpu_load_over_a_tampered_chunk_fails_with_the_integrity_error() {
    let f = Fixture::new();
    let data = pattern(400_000, 10);
    f.seal("scan", &data);
    let mut bytes = std::fs::read(f.object_path("scan")).unwrap();
    let header_len = bytes.len() - 400_000 - 7 * TAG_LEN;
    bytes[header_len + 2 * (65_536 + TAG_LEN) + 10] ^= 0x80; // inside chunk 2
    std::fs::write(f.object_path("scan"), bytes).unwrap();
    let v = host_sink_vault(&f);
    let fh = v.open(resolve(&v, "scan").unwrap().ino, ME).unwrap();
    let shm = Shm::new("tamper", 400_000);
    let err = v
        .gpu_load(fh, &load(shm.target(0), 0, 400_000), ME)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Format {
                source: FormatError::ChunkTampered { index: 2 },
                ..
            }
        ),
        "{err}"
    );
    let out = shm.read();
    assert!(
        out[2 * 65_536..].iter().all(|&b| b == 0),
        "nothing from the tampered chunk on"
    );
    assert_eq!(
        v.gpu_load(fh, &load(shm.target(0), 0, 131_072), ME)
            .unwrap(),
        131_072
    );
}

/// A local backend whose ranged reads from `hold_from` on wait while it is held, to put a
/// purge in the middle of requests.
struct Held {
    inner: LocalBackend,
    hold_from: u64,
    held: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    /// Reads waiting now.
    waiting: AtomicU64,
}

impl Held {
    fn vault(f: &Fixture, hold_from: u64) -> (Arc<Vault>, Arc<Held>) {
        let backend = Arc::new(Held {
            inner: LocalBackend::open(f.bucket.path()).unwrap(),
            hold_from,
            held: std::sync::Mutex::new(false),
            released: std::sync::Condvar::new(),
            waiting: AtomicU64::new(0),
        });
        let config = VaultConfig {
            cache_size: 16 << 20,
            ..VaultConfig::default()
        };
        let vault = Vault::new(backend.clone(), f.identity(), config, None, None).unwrap();
        (Arc::new(vault), backend)
    }

    fn hold(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }

    /// Waits until `n` reads are held.
    fn wait_for_held(&self, n: u64) {
        while self.waiting.load(Ordering::SeqCst) < n {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Backend for Held {
    fn list(&self) -> Result<Vec<crate::backend::ObjectInfo>, BackendError> {
        self.inner.list()
    }
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        if offset >= self.hold_from {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let mut held = self.held.lock().unwrap();
            while *held {
                held = self.released.wait(held).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.read_range(key, offset, bufs)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(key)
    }
    fn create(
        &self,
        key: &str,
        overwrite: bool,
    ) -> Result<Box<dyn crate::backend::ObjectWriter>, BackendError> {
        self.inner.create(key, overwrite)
    }
    fn read_profile(&self) -> crate::backend::ReadProfile {
        self.inner.read_profile()
    }
    fn location(&self, key: &str) -> Result<String, BackendError> {
        self.inner.location(key)
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "held".into()
    }
}

/// Runs `purge` on another thread; asserts it is still waiting after a while.
fn purge_in_background(v: &Arc<Vault>) -> std::thread::JoinHandle<usize> {
    let (done, finished) = std::sync::mpsc::channel();
    let vault = Arc::clone(v);
    let purge = std::thread::spawn(move || {
        let bytes = vault.purge();
        let _ = done.send(());
        bytes
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the purge returned while a request was in flight"
    );
    purge
}

#[test]
fn a_purge_waits_for_an_open_in_flight_and_leaves_no_handle_or_key_behind() {
    let f = Fixture::new();
    f.seal("x", &pattern(100_000, 8));
    let (v, backend) = Held::vault(&f, 0);
    let ino = resolve(&v, "x").unwrap().ino;
    v.purge();
    v.unlock(f.identity()).unwrap();
    // The open resolves the file's header again, and waits in the backend.
    backend.hold(true);
    let opening = {
        let v = Arc::clone(&v);
        std::thread::spawn(move || v.open(ino, ME))
    };
    backend.wait_for_held(1);
    let purge = purge_in_background(&v);
    backend.hold(false);
    let fh = opening
        .join()
        .unwrap()
        .expect("the open finished before the purge");
    purge.join().unwrap();
    assert!(v.handles.lock().is_empty(), "a handle outlived the purge");
    assert!(
        v.tree.read().opened_files().is_empty(),
        "a file key outlived the purge"
    );
    assert!(matches!(
        v.read(fh, 0, &mut [0u8; 10], ME),
        Err(VaultError::Purged)
    ));
}

#[test]
fn a_purge_waits_for_read_ahead_in_flight_and_drops_the_queued_jobs() {
    let f = Fixture::new();
    f.seal("x", &pattern(4 << 20, 9));
    // Chunk 0 sits below 64 KiB of ciphertext; every later chunk above.
    let (v, backend) = Held::vault(&f, 1 << 16);
    let ino = resolve(&v, "x").unwrap().ino;
    let object = v.tree.read().object(ino).unwrap();
    backend.hold(true);
    // Four parts of 16 chunks: two in flight (the local profile's workers), two queued.
    v.prefetch(&object, 1..65);
    backend.wait_for_held(2);
    let loads = || v.cache.stats().loads.load(Ordering::SeqCst);
    let before = loads();
    let purge = purge_in_background(&v);
    backend.hold(false);
    purge.join().unwrap();
    let after_purge = loads();
    assert_eq!(
        after_purge - before,
        32,
        "the two parts in flight finished first"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        loads(),
        after_purge,
        "a queued part was loaded after the purge"
    );
}

/// A v2 bucket holding `series/00.dcm`, `series/01.dcm`, … (10 000 bytes each, 4 KiB
/// chunks) and an audited vault on it (local profile: two read-ahead workers).
struct Series {
    dir: tempfile::TempDir,
    vault: Arc<Vault>,
    log: std::path::PathBuf,
    files: Vec<Ino>,
    data: Vec<Vec<u8>>,
}

impl Series {
    fn new(count: usize) -> Series {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(plain.join("series")).unwrap();
        let data: Vec<Vec<u8>> = (0..count).map(|i| pattern(10_000, i as u8)).collect();
        for (i, bytes) in data.iter().enumerate() {
            std::fs::write(plain.join(format!("series/{i:02}.dcm")), bytes).unwrap();
        }
        let root = dir.path().join("bucket");
        std::fs::create_dir(&root).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(&root).unwrap());
        let store = ManifestStore::new(Arc::clone(&backend), None);
        let identity = || Identity::from([7; 32]);
        let options = SealOptions {
            recipients: vec![identity().recipient()],
            chunk_log2: 12,
            overwrite: false,
        };
        let jobs = crate::seal::plan(&[plain]).unwrap();
        let report = crate::bucket::write::seal_files(
            &store,
            Some(&identity()),
            Default::default(),
            &jobs,
            &options,
            false,
            &|_| {},
        )
        .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let manifest = store.load(&identity()).unwrap().unwrap();
        let log = dir.path().join("audit.log");
        let vault = audited(backend, identity(), &log, Some((store, manifest)));
        assert_eq!(
            vault.profile.parallel_requests, 2,
            "`settle` assumes two workers"
        );
        let series = resolve(&vault, "series").unwrap().ino;
        let files = (0..count)
            .map(|i| {
                vault
                    .lookup(series, &format!("{i:02}.dcm"), ME)
                    .unwrap()
                    .ino
            })
            .collect();
        Series {
            dir,
            vault,
            log,
            files,
            data,
        }
    }

    /// Opens, reads whole and releases file `i`, checking its bytes.
    fn read(&self, i: usize) {
        assert_eq!(
            read_all(&self.vault, &format!("series/{i:02}.dcm")).unwrap(),
            self.data[i],
            "file {i}"
        );
    }

    fn opened(&self, i: usize) -> bool {
        self.vault.tree.read().object(self.files[i]).is_ok()
    }

    /// Returns once every job queued on the read-ahead workers before it has finished.
    fn settle(&self) {
        let barrier = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..2 {
            let barrier = Arc::clone(&barrier);
            self.vault.readahead_workers.spawn(move || {
                barrier.wait();
            });
        }
        barrier.wait();
    }

    /// The audit records of `event` (such as `"open"`), as text.
    fn records(&self, event: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn a_reader_opening_files_in_order_has_the_next_ones_opened_ahead_unaudited() {
    let s = Series::new(6);
    s.read(0);
    s.settle();
    assert!(!s.opened(1), "one open is not yet an order");
    s.read(1);
    s.settle();
    assert!(s.opened(2) && s.opened(3), "the next two are opened ahead");
    assert!(!s.opened(4), "and no more");
    assert_eq!(s.records("open").len(), 2, "opening ahead is not audited");
    s.read(2);
    s.settle();
    assert!(s.opened(4));
    s.read(3);
    s.read(4);
    let opens = s.records("open");
    assert_eq!(opens.len(), 5);
    assert!(opens[2].contains("series/02.dcm"), "{}", opens[2]);
    assert!(s.vault.ahead.pending.lock().is_empty());
}

#[test]
fn files_opened_out_of_order_open_nothing_ahead() {
    let s = Series::new(6);
    for i in [3, 0, 5, 2] {
        s.read(i);
    }
    s.settle();
    for i in [1, 4] {
        assert!(!s.opened(i), "file {i}");
    }
}

#[test]
fn files_queued_to_open_ahead_before_a_purge_are_not_opened_after_it() {
    let s = Series::new(4);
    s.read(0);
    // Both workers wait here, so the files the next open queues wait behind them.
    let (inside, release) = (
        Arc::new(std::sync::Barrier::new(3)),
        Arc::new(std::sync::Barrier::new(3)),
    );
    for _ in 0..2 {
        let (inside, release) = (Arc::clone(&inside), Arc::clone(&release));
        s.vault.readahead_workers.spawn(move || {
            inside.wait();
            release.wait();
        });
    }
    inside.wait();
    s.read(1);
    s.vault.purge();
    s.vault.unlock(Identity::from([7; 32])).unwrap();
    release.wait();
    s.settle();
    assert!(
        s.vault.tree.read().opened_files().is_empty(),
        "a file queued before the purge was opened after it"
    );
    assert!(s.vault.ahead.pending.lock().is_empty());
    s.read(2);
}

#[test]
fn a_file_that_fails_to_open_ahead_fails_its_own_open_and_is_audited() {
    let s = Series::new(4);
    let key = s.vault.manifest.as_ref().unwrap().1.lock().entries["series/02.dcm"].object_key();
    let object = s.dir.path().join("bucket").join(key);
    let mut sealed = std::fs::read(&object).unwrap();
    sealed[40] ^= 1;
    std::fs::write(&object, sealed).unwrap();
    s.read(0);
    s.read(1);
    s.settle();
    assert!(!s.opened(2) && s.opened(3));
    assert!(
        s.records("integrity_failure").is_empty(),
        "not before its open"
    );
    assert!(matches!(
        s.vault.open(s.files[2], ME),
        Err(VaultError::ManifestMismatch { .. })
    ));
    let failures = s.records("integrity_failure");
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("series/02.dcm"), "{}", failures[0]);
    s.read(3);
}
