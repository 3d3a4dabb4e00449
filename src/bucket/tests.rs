use super::*;
use crate::backend::LocalBackend;
use crate::manifest::Entry;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    state: std::path::PathBuf,
    identity: Identity,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        std::fs::create_dir(&root).unwrap();
        Fixture {
            root,
            state: dir.path().join("state/seen"),
            _dir: dir,
            identity: Identity::generate(),
        }
    }

    fn store(&self) -> ManifestStore {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(&self.root).unwrap());
        ManifestStore::new(backend, Some(SeenGenerations::at(self.state.clone())))
    }

    fn put(&self, store: &ManifestStore, path: &str) -> Committed {
        let path = path.to_owned();
        store
            .commit(
                Some(&self.identity),
                Recipients::ForNew(&[self.identity.recipient()]),
                &mut |_| vec![Op::Put(path.clone(), entry())],
            )
            .unwrap()
    }
}

fn entry() -> Entry {
    let mut object_id = [0u8; 16];
    getrandom::getrandom(&mut object_id).unwrap();
    Entry {
        object_id,
        file_id: [1; 16],
        header_hash: [2; 32],
        size: 3,
        object_len: 200,
        mtime: (4, 5),
        padded: false,
        detached: None,
    }
}

#[test]
fn a_bucket_without_a_manifest_is_v1_and_the_first_commit_makes_one() {
    let f = Fixture::new();
    let store = f.store();
    assert!(store.load(&f.identity).unwrap().is_none());
    let committed = f.put(&store, "a/1");
    assert_eq!(committed.manifest.generation, 1);
    let loaded = store.load(&f.identity).unwrap().unwrap();
    assert_eq!(loaded, committed.manifest);
    assert_eq!(loaded.recipients, vec![f.identity.recipient()]);
    let head = std::fs::read_to_string(f.root.join(HEAD_KEY)).unwrap();
    assert_eq!(head, "smpfs manifest v2 generation 1\n");
}

#[test]
fn replaced_and_removed_objects_are_reported_unreferenced() {
    let f = Fixture::new();
    let store = f.store();
    let first = f.put(&store, "x").manifest.entries["x"];
    let second = f.put(&store, "x");
    assert_eq!(second.unreferenced, vec![first.object_key()]);
    let removed = store
        .commit(Some(&f.identity), Recipients::ForNew(&[]), &mut |_| {
            vec![Op::Remove("x".into())]
        })
        .unwrap();
    assert_eq!(
        removed.unreferenced,
        vec![second.manifest.entries["x"].object_key()]
    );
    assert!(removed.manifest.entries.is_empty());
}

#[test]
fn concurrent_writers_lose_no_entry() {
    let f = Fixture::new();
    std::thread::scope(|scope| {
        for writer in 0..3 {
            let f = &f;
            scope.spawn(move || {
                let store = f.store();
                for n in 0..12 {
                    f.put(&store, &format!("w{writer}/{n}"));
                }
            });
        }
    });
    let manifest = f.store().load(&f.identity).unwrap().unwrap();
    assert_eq!(manifest.entries.len(), 36);
    assert_eq!(manifest.generation, 36);
}

#[test]
fn long_chains_are_snapshotted_and_old_segments_removed() {
    let f = Fixture::new();
    let store = f.store();
    for n in 0..40 {
        f.put(&store, &format!("f{n}"));
    }
    let manifest = store.load(&f.identity).unwrap().unwrap();
    assert_eq!(manifest.entries.len(), 40);
    assert_eq!(manifest.snapshot, 33);
    let segments = std::fs::read_dir(f.root.join("manifest")).unwrap().count() - 1;
    assert!(segments < 40, "{segments} segments kept");
    assert!(!f.root.join(segment_key(2)).exists());
}

#[test]
fn an_older_manifest_is_refused_once_a_newer_was_seen() {
    let f = Fixture::new();
    let store = f.store();
    f.put(&store, "a");
    let saved_head = std::fs::read(f.root.join(HEAD_KEY)).unwrap();
    f.put(&store, "b");
    // The store serves generation 1 again: segment 2 gone, head back.
    std::fs::remove_file(f.root.join(segment_key(2))).unwrap();
    std::fs::write(f.root.join(HEAD_KEY), &saved_head).unwrap();
    match store.load(&f.identity) {
        Err(BucketError::Rollback { seen: 2, found: 1 }) => {}
        other => panic!("rollback accepted: {other:?}"),
    }
    // A workstation that never saw generation 2 cannot tell (docs/SECURITY.md).
    let fresh = ManifestStore::new(Arc::clone(store.backend()), None);
    assert_eq!(fresh.load(&f.identity).unwrap().unwrap().generation, 1);
    // Deleting the whole manifest does not turn the bucket into a v1 one either.
    std::fs::remove_dir_all(f.root.join("manifest")).unwrap();
    assert!(matches!(
        store.load(&f.identity),
        Err(BucketError::ManifestGone { seen: 2 })
    ));
}

#[test]
fn damaged_foreign_or_misplaced_manifests_are_errors() {
    let f = Fixture::new();
    let store = f.store();
    f.put(&store, "a");
    let segment = f.root.join(segment_key(1));
    let good = std::fs::read(&segment).unwrap();

    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    std::fs::write(&segment, &flipped).unwrap();
    assert!(matches!(
        store.load(&f.identity),
        Err(BucketError::Format { .. })
    ));
    std::fs::write(&segment, &good[..good.len() - 1]).unwrap();
    assert!(store.load(&f.identity).is_err());
    std::fs::write(&segment, &good).unwrap();

    let stranger = Identity::generate();
    match f.store().load(&stranger) {
        Err(BucketError::Format {
            source: FormatError::NoMatchingRecipient,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // Generation 1 copied over as generation 2: sealed for another location.
    std::fs::write(f.root.join(segment_key(2)), &good).unwrap();
    assert!(matches!(
        store.load(&f.identity),
        Err(BucketError::Moved { .. })
    ));
    std::fs::remove_file(f.root.join(segment_key(2))).unwrap();

    std::fs::write(f.root.join(HEAD_KEY), "smpfs manifest v2 generation 9\n").unwrap();
    assert!(matches!(
        store.load(&f.identity),
        Err(BucketError::MissingSegment(9))
    ));
    std::fs::write(f.root.join(HEAD_KEY), "garbage").unwrap();
    assert!(matches!(
        store.load(&f.identity),
        Err(BucketError::BadHead(_))
    ));
}

#[test]
fn a_stale_head_is_probed_past_and_newer_than_costs_one_probe() {
    let f = Fixture::new();
    let store = f.store();
    f.put(&store, "a");
    let stale = std::fs::read(f.root.join(HEAD_KEY)).unwrap();
    f.put(&store, "b");
    f.put(&store, "c");
    std::fs::write(f.root.join(HEAD_KEY), stale).unwrap();
    assert_eq!(store.load(&f.identity).unwrap().unwrap().generation, 3);
    assert_eq!(store.newer_than(3).unwrap(), None);
    assert_eq!(store.newer_than(1).unwrap(), Some(3));
}

#[test]
fn without_an_identity_only_a_new_bucket_can_be_written() {
    let f = Fixture::new();
    let store = f.store();
    let recipients = [f.identity.recipient()];
    store
        .commit(None, Recipients::ForNew(&recipients), &mut |_| {
            vec![Op::Put("a".into(), entry())]
        })
        .unwrap();
    assert!(matches!(
        store.commit(None, Recipients::ForNew(&recipients), &mut |_| Vec::new()),
        Err(BucketError::NeedsIdentity)
    ));
}
