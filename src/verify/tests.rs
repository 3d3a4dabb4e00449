use super::*;
use crate::backend::LocalBackend;
use crate::bucket::write;
use crate::seal::{plan, SealOptions};

/// A v2 bucket in a temporary directory, sealed from a few files by `identity`.
struct Fixture {
    dir: tempfile::TempDir,
    identity: Identity,
    store: ManifestStore,
}

impl Fixture {
    /// Seals `files` (path, bytes) with 4 KiB chunks, to `identity` alone.
    fn new(files: &[(&str, Vec<u8>)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        for (path, data) in files {
            let path = plain.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        let root = dir.path().join("bucket");
        std::fs::create_dir(&root).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(&root).unwrap());
        let store = ManifestStore::new(backend, None);
        let identity = Identity::generate();
        let options = SealOptions {
            recipients: vec![identity.recipient()],
            chunk_log2: 12,
            overwrite: false,
        };
        let jobs = plan(&[plain]).unwrap();
        let report = write::seal_files(
            &store,
            Some(&identity),
            Default::default(),
            &jobs,
            &options,
            false,
            &|_| {},
        )
        .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        Fixture {
            dir,
            identity,
            store,
        }
    }

    /// The file of the object of `path`, on disk.
    fn object_file(&self, path: &str) -> std::path::PathBuf {
        let manifest = self.store.load(&self.identity).unwrap().unwrap();
        let key = manifest.entries[path].object_key();
        self.dir.path().join("bucket").join(key)
    }

    fn verify(&self, jobs: usize) -> Report {
        let plan = Plan::new(&self.store, &self.identity).unwrap();
        let total = plan.bytes();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let report = plan
            .run(
                &self.identity,
                jobs,
                &|n| {
                    seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                },
                &|_| Ok(()),
            )
            .unwrap();
        assert_eq!(
            seen.into_inner(),
            total,
            "progress adds up to the plan's bytes"
        );
        report
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + seed as usize) as u8).collect()
}

fn statuses(report: &Report) -> Vec<(Option<&str>, Status)> {
    report
        .problems
        .iter()
        .map(|p| (p.path.as_deref(), p.status))
        .collect()
}

#[test]
fn a_clean_bucket_verifies_every_chunk() {
    let f = Fixture::new(&[
        ("a/1.bin", data(40_000, 1)),
        ("a/2.bin", data(4096, 2)),
        ("empty", Vec::new()),
    ]);
    let report = f.verify(2);
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.layout, BucketLayout::V2);
    assert_eq!(
        (report.counts.ok, report.objects, report.entries),
        (3, 3, 3)
    );
    let on_disk: u64 = ["a/1.bin", "a/2.bin", "empty"]
        .iter()
        .map(|p| std::fs::metadata(f.object_file(p)).unwrap().len())
        .sum();
    assert_eq!(report.bytes, on_disk);
}

#[test]
fn each_kind_of_damage_is_named() {
    let f = Fixture::new(&[
        ("tampered", data(50_000, 1)),
        ("truncated", data(50_000, 2)),
        ("missing", data(100, 3)),
        ("fine", data(9000, 4)),
    ]);
    // A bit flipped in chunk 5 (of 13: 4 KiB each, 16-byte tags, after the header).
    let path = f.object_file("tampered");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = bytes.len() - (50_000 + 13 * 16);
    let at = header_len + 5 * (4096 + 16) + 100;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let path = f.object_file("truncated");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4096]).unwrap();
    let orphan = f
        .dir
        .path()
        .join("bucket/obj/ff/ff00ff00ff00ff00ff00ff00ff00ff00");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::copy(f.object_file("fine"), &orphan).unwrap();
    std::fs::remove_file(f.object_file("missing")).unwrap();

    let report = f.verify(3);
    let mut found = statuses(&report);
    found.sort_by_key(|(path, _)| *path);
    assert_eq!(
        found,
        vec![
            (None, Status::Orphaned),
            (Some("missing"), Status::Missing),
            (Some("tampered"), Status::Tampered),
            (Some("truncated"), Status::Truncated),
        ]
    );
    assert_eq!(report.counts.ok, 1);
    let tampered = report
        .problems
        .iter()
        .find(|p| p.status == Status::Tampered);
    assert!(
        tampered.unwrap().detail.contains("chunk 5"),
        "{:?}",
        report.problems
    );
    assert!(!report.is_clean());
}

#[test]
fn an_object_sealed_to_someone_else_is_unreadable_not_tampered() {
    let f = Fixture::new(&[("mine", data(5000, 1))]);
    let stranger = Identity::generate();
    // A second file sealed to the stranger only, committed to the same manifest.
    let plain = f.dir.path().join("theirs");
    std::fs::write(&plain, data(6000, 2)).unwrap();
    let options = SealOptions {
        recipients: vec![stranger.recipient()],
        chunk_log2: 12,
        overwrite: false,
    };
    let current = f.store.load(&f.identity).unwrap().unwrap();
    write::seal_files(
        &f.store,
        Some(&f.identity),
        current,
        &plan(&[plain]).unwrap(),
        &options,
        false,
        &|_| {},
    )
    .unwrap();
    let report = f.verify(1);
    assert_eq!(
        statuses(&report),
        vec![(Some("theirs"), Status::Unreadable)]
    );
    assert_eq!(report.counts.ok, 1);

    let info = info::in_bucket(&f.store, "theirs", &f.identity).unwrap();
    assert_eq!(info.opens, info::Opens::NotForThisIdentity);
    assert_eq!((info.stanzas, info.bound_path.as_deref()), (1, None));
    let manifest = info.manifest.unwrap();
    assert!(manifest.header_hash_matches && manifest.file_id_matches);
}

#[test]
fn detached_headers_after_share_are_followed() {
    let f = Fixture::new(&[("a", data(20_000, 1)), ("b", data(300, 2))]);
    let manifest = f.store.load(&f.identity).unwrap().unwrap();
    let reader = Identity::generate();
    crate::access::share(
        &f.store,
        &f.identity,
        &manifest,
        &[reader.recipient()],
        &[],
        &|_| {},
        &|_| Ok(()),
    )
    .unwrap();
    let report = f.verify(2);
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.counts.ok, 2);

    let info = info::in_bucket(&f.store, "a", &f.identity).unwrap();
    assert_eq!(info.stanzas, 2);
    assert_eq!(info.opens, info::Opens::Yes);
    assert!(info.header_object.as_deref().unwrap().starts_with("hdr/"));
    assert_eq!(info.location_matches, Some(true));
    assert_eq!(info.object_len, info.expected_object_len);

    // Without its header object the file cannot be read: missing, and the header orphan-free.
    let entry = f.store.load(&f.identity).unwrap().unwrap().entries["a"];
    std::fs::remove_file(f.dir.path().join("bucket").join(entry.header_key())).unwrap();
    let report = f.verify(2);
    assert_eq!(statuses(&report), vec![(Some("a"), Status::Missing)]);
}

#[test]
fn failures_are_classified_by_what_they_mean() {
    let size = |expected, actual| VaultError::SizeMismatch {
        key: "k".into(),
        expected,
        actual,
    };
    assert_eq!(classify(&size(100, 50)).0, Status::Truncated);
    assert_eq!(classify(&size(100, 150)).0, Status::Tampered);
    let format = |source| VaultError::Format {
        key: "k".into(),
        source,
    };
    assert_eq!(
        classify(&format(FormatError::NoMatchingRecipient)).0,
        Status::Unreadable
    );
    assert_eq!(
        classify(&format(FormatError::HeaderTampered)).0,
        Status::Tampered
    );
    assert_eq!(
        classify(&format(FormatError::Truncated { needed: 36 })).0,
        Status::Truncated
    );
    let timeout = VaultError::Backend(BackendError::Timeout {
        context: "k".into(),
        timeout: std::time::Duration::from_secs(1),
    });
    assert_eq!(classify(&timeout).0, Status::Failed);
}

#[test]
fn a_large_object_is_checked_in_parallel_batches_and_names_its_first_bad_chunk() {
    // 733 chunks of 4 KiB: three buffers' worth (255 chunks each), checked in parallel;
    // chunks 300 and 600 are in different ones.
    let f = Fixture::new(&[("big", data(3_000_000, 9))]);
    assert!(f.verify(3).is_clean());
    let path = f.object_file("big");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = bytes.len() - (3_000_000 + 733 * 16);
    for chunk in [600, 300] {
        bytes[header_len + chunk * (4096 + 16) + 7] ^= 1;
    }
    std::fs::write(&path, &bytes).unwrap();
    for jobs in [1, 4] {
        let report = f.verify(jobs);
        assert_eq!(statuses(&report), vec![(Some("big"), Status::Tampered)]);
        assert!(
            report.problems[0].detail.starts_with("chunk 300 "),
            "{:?}",
            report.problems
        );
    }
}

#[test]
fn each_object_is_recorded_before_it_is_decrypted_and_a_failed_record_stops_the_run() {
    let f = Fixture::new(&[("a/1.bin", data(40_000, 1)), ("b", data(300, 2))]);
    let manifest = f.store.load(&f.identity).unwrap().unwrap();
    let recorded = parking_lot::Mutex::new(Vec::new());
    let plan = Plan::new(&f.store, &f.identity).unwrap();
    assert_eq!(plan.generation(), Some(manifest.generation));
    let report = plan
        .run(&f.identity, 2, &|_| {}, &|event| {
            recorded.lock().push(event);
            Ok(())
        })
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let mut recorded = recorded.into_inner();
    recorded.sort_by(|a, b| a.path.cmp(&b.path));
    let expected: Vec<Event> = manifest
        .entries
        .iter()
        .map(|(path, entry)| {
            Event::new(EventKind::Read)
                .path(path)
                .file_id(entry.file_id)
                .range(0, entry.size)
        })
        .collect();
    assert_eq!(recorded, expected);

    // A log that fails: nothing is decrypted, and the run fails with the log's error.
    let plan = Plan::new(&f.store, &f.identity).unwrap();
    let checked = std::sync::atomic::AtomicU64::new(0);
    let result = plan.run(
        &f.identity,
        2,
        &|n| {
            checked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        },
        &|_| {
            Err(AuditError::Failed {
                path: "audit.log".into(),
            })
        },
    );
    assert!(
        matches!(result, Err(VerifyError::Audit(AuditError::Failed { .. }))),
        "{:?}",
        result.map(|r| r.problems)
    );
}
