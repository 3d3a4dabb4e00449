use super::*;

fn entry(n: u8) -> Entry {
    Entry {
        object_id: [n; 16],
        file_id: [n.wrapping_add(1); 16],
        header_hash: [n.wrapping_add(2); 32],
        size: u64::from(n) * 1000,
        object_len: u64::from(n) * 1100,
        mtime: (1_700_000_000 + i64::from(n), u32::from(n)),
        padded: n % 2 == 1,
        detached: None,
    }
}

fn recipient(n: u8) -> Recipient {
    Recipient::from([n; 32])
}

fn snapshot(generation: u64, paths: &[&str]) -> Segment {
    Segment {
        kind: Kind::Snapshot,
        generation,
        snapshot: generation,
        recipients: vec![recipient(9)],
        ops: paths
            .iter()
            .enumerate()
            .map(|(i, p)| Op::Put((*p).to_owned(), entry(i as u8)))
            .collect(),
    }
}

#[test]
fn segments_round_trip() {
    let delta = Segment {
        kind: Kind::Delta,
        generation: 8,
        snapshot: 5,
        recipients: vec![recipient(1), recipient(2)],
        ops: vec![
            Op::Put("Patient Jane Doe/CT/1.dcm".into(), entry(3)),
            Op::Remove("old/2.dcm".into()),
            Op::Put("old/2.dcm".into(), entry(4)),
        ],
    };
    for segment in [delta, snapshot(3, &["a", "a b", "a/b", "z"])] {
        assert_eq!(Segment::decode(&segment.encode()).unwrap(), segment);
    }
}

#[test]
fn a_detached_header_round_trips_and_names_its_own_object() {
    let mut moved = entry(4);
    moved.detached = Some(Detached {
        header_id: [0xab; 16],
        chunks_at: 189,
    });
    let segment = Segment {
        kind: Kind::Snapshot,
        generation: 1,
        snapshot: 1,
        recipients: vec![recipient(1)],
        ops: vec![Op::Put("a".into(), moved)],
    };
    assert_eq!(Segment::decode(&segment.encode()).unwrap(), segment);
    assert_eq!(moved.header_key(), format!("hdr/ab/{}", "ab".repeat(16)));
    assert_eq!(entry(4).header_key(), entry(4).object_key());
}

#[test]
fn every_truncation_and_trailing_byte_is_refused() {
    let bytes = snapshot(1, &["x/1", "x/2"]).encode();
    for len in 0..bytes.len() {
        assert!(
            Segment::decode(&bytes[..len]).is_err(),
            "accepted {len} bytes"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Segment::decode(&longer),
        Err(ManifestError::Malformed("bytes after the last operation"))
    );
}

#[test]
fn bad_segments_say_what_is_wrong() {
    let good = snapshot(2, &["a", "b"]).encode();
    let with = |at: usize, byte: u8| {
        let mut bytes = good.clone();
        bytes[at] = byte;
        Segment::decode(&bytes)
    };
    assert_eq!(with(0, b'X'), Err(ManifestError::BadMagic));
    assert_eq!(with(8, 2), Err(ManifestError::UnsupportedVersion(2)));
    assert_eq!(
        with(9, 7),
        Err(ManifestError::Malformed("unknown segment kind"))
    );
    // A snapshot whose snapshot field is not its own generation.
    assert_eq!(
        with(18, 1),
        Err(ManifestError::Malformed("inconsistent generation numbers"))
    );
    // Unsorted or duplicate snapshot entries.
    let unsorted = snapshot(2, &["b", "a"]).encode();
    assert!(matches!(
        Segment::decode(&unsorted),
        Err(ManifestError::Malformed(_))
    ));
    // Hostile paths.
    for path in ["../etc/passwd", "/abs", "a//b", "a/./b", "nul\0byte"] {
        let bytes = snapshot(2, &[path]).encode();
        assert!(
            matches!(Segment::decode(&bytes), Err(ManifestError::BadPath { .. })),
            "{path:?} accepted"
        );
    }
}

#[test]
fn an_op_count_beyond_the_bytes_present_allocates_nothing() {
    let mut bytes = snapshot(1, &[]).encode();
    let count_at = bytes.len() - 8;
    bytes[count_at..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Segment::decode(&bytes), Err(ManifestError::Truncated));
}

#[test]
fn a_chain_applies_puts_and_removes_in_order() {
    let base = snapshot(4, &["a/1", "a/2", "b"]);
    let delta = Segment {
        kind: Kind::Delta,
        generation: 5,
        snapshot: 4,
        recipients: vec![recipient(7)],
        ops: vec![
            Op::Remove("a/1".into()),
            Op::Put("c".into(), entry(9)),
            Op::Put("b".into(), entry(8)),
        ],
    };
    let manifest = Manifest::from_chain(&[base.clone(), delta.clone()]).unwrap();
    assert_eq!(manifest.generation, 5);
    assert_eq!(manifest.snapshot, 4);
    assert_eq!(manifest.recipients, vec![recipient(7)]);
    let paths: Vec<&str> = manifest.entries.keys().map(String::as_str).collect();
    assert_eq!(paths, ["a/2", "b", "c"]);
    assert_eq!(manifest.entries["b"], entry(8));

    // A gap, a delta of another snapshot, or a chain without a snapshot is refused.
    let mut skipped = delta.clone();
    skipped.generation = 6;
    assert_eq!(
        Manifest::from_chain(&[base.clone(), skipped]),
        Err(ManifestError::Discontinuous {
            expected: 5,
            found: 6
        })
    );
    let mut foreign = delta.clone();
    foreign.snapshot = 3;
    assert!(Manifest::from_chain(&[base, foreign]).is_err());
    assert!(Manifest::from_chain(&[delta]).is_err());
}

#[test]
fn next_segment_snapshots_every_so_often() {
    let mut manifest = Manifest::from_chain(&[snapshot(1, &["a"])]).unwrap();
    for generation in 2..=4 {
        let next = manifest.next_segment(vec![Op::Put(format!("f{generation}"), entry(1))], 4);
        assert_eq!(next.kind, Kind::Delta);
        assert_eq!(next.snapshot, 1);
        manifest.apply(&next).unwrap();
    }
    let next = manifest.next_segment(vec![Op::Remove("a".into())], 4);
    assert_eq!(next.kind, Kind::Snapshot);
    assert_eq!(next.generation, 5);
    let after = Manifest::from_chain(&[next]).unwrap();
    let paths: Vec<&str> = after.entries.keys().map(String::as_str).collect();
    assert_eq!(paths, ["f2", "f3", "f4"]);
    // The first generation of a bucket is always a snapshot.
    assert_eq!(
        Manifest::default().next_segment(Vec::new(), 16).kind,
        Kind::Snapshot
    );
}

#[test]
fn below_selects_a_file_or_a_directory_and_nothing_beside_it() {
    let manifest =
        Manifest::from_chain(&[snapshot(1, &["a", "a b", "a.txt", "a/x", "a/y/z", "ab"])]).unwrap();
    let below = |path| {
        manifest
            .below(path)
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(below("a"), ["a", "a/x", "a/y/z"]);
    assert_eq!(below("a/y"), ["a/y/z"]);
    assert_eq!(below("").len(), 6);
    assert!(below("q").is_empty());
}

#[test]
fn padme_rounds_up_by_at_most_twelve_percent() {
    let cases = [
        (0, 0),
        (1, 1),
        (2, 2),
        (7, 7),
        (9, 10),
        (100, 104),
        (1000, 1024),
        (513_000, 516_096),
        (1 << 20, 1 << 20),
        ((1 << 20) + 1, (1 << 20) + (1 << 15)),
    ];
    for (len, padded) in cases {
        assert_eq!(padded_len(len), padded, "padme({len})");
    }
    let mut len = 1u64;
    while len < 1 << 40 {
        let padded = padded_len(len);
        assert!(
            padded >= len && (padded - len) as f64 <= len as f64 * 0.125,
            "{len}"
        );
        assert_eq!(padded_len(padded), padded, "padding is idempotent at {len}");
        len = len * 3 + 1;
    }
    // Many lengths collapse to few padded ones.
    let distinct: std::collections::BTreeSet<u64> =
        (1_000_000..1_100_000).map(padded_len).collect();
    assert_eq!(distinct.len(), 5, "{distinct:?}");
}

/// The segments committed as `tests/vectors/manifest-*.bin` (docs/FORMAT.md §13).
fn vector_segments() -> Vec<(&'static str, Segment)> {
    let recipient = Recipient::from(
        <[u8; 32]>::try_from(
            hex::decode("a4e09292b651c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209")
                .unwrap(),
        )
        .unwrap(),
    );
    let vector_entry = |n: u8, size: u64, padded: bool| Entry {
        object_id: [0x20 + n; 16],
        file_id: [0x30 + n; 16],
        header_hash: [0x50 + n; 32],
        size,
        object_len: size + 400,
        mtime: (1_709_251_200, 500_000_000),
        padded,
        detached: None,
    };
    vec![
        (
            "manifest-snapshot.bin",
            Segment {
                kind: Kind::Snapshot,
                generation: 1,
                snapshot: 1,
                recipients: vec![recipient],
                ops: vec![
                    Op::Put("study/CT/1.dcm".into(), vector_entry(1, 100, false)),
                    Op::Put("study/CT/2.dcm".into(), vector_entry(2, 104, true)),
                ],
            },
        ),
        (
            "manifest-delta.bin",
            Segment {
                kind: Kind::Delta,
                generation: 2,
                snapshot: 1,
                recipients: vec![recipient],
                ops: vec![
                    Op::Remove("study/CT/1.dcm".into()),
                    Op::Put("study/MR/1.dcm".into(), vector_entry(3, 0, false)),
                ],
            },
        ),
    ]
}

#[test]
fn committed_manifest_vectors_decode_and_reencode_bit_for_bit() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut chain = Vec::new();
    for (name, segment) in vector_segments() {
        let file = dir.join(name);
        if std::env::var_os("SMPFS_WRITE_VECTORS").is_some() {
            std::fs::write(&file, segment.encode()).unwrap();
        }
        let stored = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(stored, segment.encode(), "{name}: encoder drifted");
        assert_eq!(Segment::decode(&stored).unwrap(), segment, "{name}");
        chain.push(segment);
    }
    let manifest = Manifest::from_chain(&chain).unwrap();
    let paths: Vec<&str> = manifest.entries.keys().map(String::as_str).collect();
    assert_eq!(paths, ["study/CT/2.dcm", "study/MR/1.dcm"]);
}
