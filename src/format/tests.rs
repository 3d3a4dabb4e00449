use super::*;
use proptest::prelude::*;

/// Seals `plaintext` whole, for tests.
fn seal_all(
    recipients: &[Recipient],
    path: &str,
    plaintext: &[u8],
    chunk_log2: u8,
    randomness: &SealRandomness,
) -> Vec<u8> {
    let (mut out, opened) = seal_header(
        recipients,
        path,
        plaintext.len() as u64,
        chunk_log2,
        randomness,
    )
    .unwrap();
    let layout = opened.layout;
    for index in 0..layout.chunk_count() {
        let start = (index as usize) << chunk_log2;
        let len = layout.chunk_plain_len(index);
        let mut buf = plaintext[start..start + len].to_vec();
        buf.resize(len + TAG_LEN, 0);
        opened
            .chunks
            .seal_chunk(index, layout.is_last(index), &mut buf);
        out.extend_from_slice(&buf);
    }
    assert_eq!(out.len() as u64, layout.object_len());
    out
}

/// Opens a whole sealed object, for tests; checks the size like a reader does.
fn open_all(identity: &Identity, object: &[u8]) -> Result<(String, Vec<u8>), FormatError> {
    let opened = Header::parse(object)?.open(identity)?;
    let layout = opened.layout;
    if layout.object_len() != object.len() as u64 {
        return Err(FormatError::Malformed("object size does not match header"));
    }
    let mut plaintext = Vec::new();
    for index in 0..layout.chunk_count() {
        let start = layout.chunk_offset(index) as usize;
        let mut buf = object[start..start + layout.chunk_plain_len(index) + TAG_LEN].to_vec();
        opened
            .chunks
            .open_chunk(index, layout.is_last(index), &mut buf)?;
        plaintext.extend_from_slice(&buf[..buf.len() - TAG_LEN]);
    }
    Ok((opened.logical_path, plaintext))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn round_trip_at_every_chunk_size_and_boundary() {
    let id = Identity::generate();
    for log2 in CHUNK_LOG2_RANGE {
        let cs = 1usize << log2;
        for len in [0, 1, cs - 1, cs, cs + 1, 3 * cs] {
            let data = pattern(len);
            let sealed = seal_all(
                &[id.recipient()],
                "a/b.dcm",
                &data,
                log2,
                &SealRandomness::generate(1),
            );
            let (path, plain) = open_all(&id, &sealed).unwrap();
            assert_eq!(path, "a/b.dcm");
            assert_eq!(plain, data, "log2 {log2} len {len}");
        }
    }
}

#[test]
fn several_recipients_each_open_and_others_cannot() {
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let recipients: Vec<Recipient> = ids.iter().map(Identity::recipient).collect();
    let sealed = seal_all(&recipients, "x", b"hello", 12, &SealRandomness::generate(3));
    for id in &ids {
        assert_eq!(open_all(id, &sealed).unwrap().1, b"hello");
    }
    let stranger = Identity::generate();
    assert_eq!(
        open_all(&stranger, &sealed).unwrap_err(),
        FormatError::NoMatchingRecipient
    );
}

#[test]
fn every_single_byte_change_is_detected() {
    let id = Identity::generate();
    let data = pattern(4096 + 100);
    let sealed = seal_all(
        &[id.recipient()],
        "p/q",
        &data,
        12,
        &SealRandomness::generate(1),
    );
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            open_all(&id, &bad).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
}

#[test]
fn opening_into_another_buffer_matches_opening_in_place_and_fails_the_same() {
    let id = Identity::generate();
    let data = pattern(2 * 4096 + 100);
    let sealed = seal_all(
        &[id.recipient()],
        "p/q",
        &data,
        12,
        &SealRandomness::generate(1),
    );
    let opened = Header::parse(&sealed).unwrap().open(&id).unwrap();
    let layout = opened.layout;
    for index in 0..layout.chunk_count() {
        let start = layout.chunk_offset(index) as usize;
        let chunk = &sealed[start..start + layout.chunk_plain_len(index) + TAG_LEN];
        let last = layout.is_last(index);
        let mut in_place = chunk.to_vec();
        opened
            .chunks
            .open_chunk(index, last, &mut in_place)
            .unwrap();
        let mut out = vec![0xEE; chunk.len()];
        opened
            .chunks
            .open_chunk_into(index, last, chunk, &mut out)
            .unwrap();
        assert_eq!(out, in_place, "chunk {index}");

        // A flipped bit, the wrong index or a wrong-sized output fails and leaves zeros.
        let mut bad = chunk.to_vec();
        bad[7] ^= 0x10;
        let mut out = vec![0xEE; chunk.len()];
        assert!(opened
            .chunks
            .open_chunk_into(index, last, &bad, &mut out)
            .is_err());
        assert!(out.iter().all(|&b| b == 0));
        let mut out = vec![0xEE; chunk.len()];
        assert!(opened
            .chunks
            .open_chunk_into(index + 1, last, chunk, &mut out)
            .is_err());
        assert!(out.iter().all(|&b| b == 0));
        let mut short = vec![0xEE; chunk.len() - 1];
        assert!(opened
            .chunks
            .open_chunk_into(index, last, chunk, &mut short)
            .is_err());
        assert!(short.iter().all(|&b| b == 0));
    }
}

#[test]
fn truncation_extension_reordering_and_swaps_fail() {
    let id = Identity::generate();
    let data = pattern(3 * 4096);
    let seal = |path: &str, data: &[u8]| {
        seal_all(
            &[id.recipient()],
            path,
            data,
            12,
            &SealRandomness::generate(1),
        )
    };
    let sealed = seal("f", &data);
    let opened = Header::parse(&sealed).unwrap().open(&id).unwrap();
    let layout = opened.layout;
    let chunk = |i: u64| {
        let s = layout.chunk_offset(i) as usize;
        s..s + 4096 + TAG_LEN
    };

    // Drop the last chunk and rewrite the length so sizes agree: the new last chunk
    // was not sealed as last, and the header MAC covers the length.
    let mut truncated = sealed[..chunk(2).start].to_vec();
    truncated[24..32].copy_from_slice(&(2u64 * 4096).to_le_bytes());
    assert!(open_all(&id, &truncated).is_err());
    // Cut at a chunk boundary without touching the header.
    assert!(open_all(&id, &sealed[..chunk(2).start]).is_err());
    // Extension by an extra copy of the last chunk.
    let mut extended = sealed.clone();
    extended.extend_from_slice(&sealed[chunk(2)]);
    assert!(open_all(&id, &extended).is_err());
    // Swap chunks 0 and 1.
    let mut swapped = sealed.clone();
    swapped[chunk(0)].copy_from_slice(&sealed[chunk(1)]);
    swapped[chunk(1)].copy_from_slice(&sealed[chunk(0)]);
    assert_eq!(
        open_all(&id, &swapped).unwrap_err(),
        FormatError::ChunkTampered { index: 0 }
    );
    // A chunk from another file sealed to the same identity.
    let other = seal("f", &data);
    let mut spliced = sealed.clone();
    spliced[chunk(1)].copy_from_slice(&other[chunk(1)]);
    assert_eq!(
        open_all(&id, &spliced).unwrap_err(),
        FormatError::ChunkTampered { index: 1 }
    );
}

#[test]
fn malformed_headers_give_clear_errors() {
    let id = Identity::generate();
    let sealed = seal_all(
        &[id.recipient()],
        "f",
        b"x",
        12,
        &SealRandomness::generate(1),
    );
    assert_eq!(
        Header::parse(b"PK\x03\x04 zip").unwrap_err(),
        FormatError::BadMagic
    );
    assert_eq!(Header::parse(b"").unwrap_err(), FormatError::BadMagic);
    assert!(matches!(
        Header::parse(&sealed[..20]).unwrap_err(),
        FormatError::Truncated { needed: PREFIX_LEN }
    ));
    assert!(matches!(
        Header::parse(&sealed[..PREFIX_LEN + 5]).unwrap_err(),
        FormatError::Truncated { .. }
    ));
    let mut v2 = sealed.clone();
    v2[6] = 2;
    assert_eq!(
        Header::parse(&v2).unwrap_err(),
        FormatError::UnsupportedVersion(2)
    );
    let mut big_chunk = sealed.clone();
    big_chunk[7] = 40;
    assert!(matches!(
        Header::parse(&big_chunk).unwrap_err(),
        FormatError::Malformed(_)
    ));
    let mut no_recipients = sealed.clone();
    no_recipients[32..34].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        Header::parse(&no_recipients).unwrap_err(),
        FormatError::Malformed(_)
    ));
    let mut huge_len = sealed.clone();
    huge_len[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Header::parse(&huge_len).is_err());
}

#[test]
fn all_zero_ephemeral_key_is_rejected() {
    let id = Identity::generate();
    let mut sealed = seal_all(
        &[id.recipient()],
        "f",
        b"x",
        12,
        &SealRandomness::generate(1),
    );
    sealed[PREFIX_LEN..PREFIX_LEN + 32].fill(0);
    assert_eq!(
        open_all(&id, &sealed).unwrap_err(),
        FormatError::NoMatchingRecipient
    );
    let low_order = Recipient::from([0u8; 32]);
    assert!(seal_header(&[low_order], "f", 1, 12, &SealRandomness::generate(1)).is_err());
}

#[test]
fn invalid_seal_arguments_are_refused() {
    let r = Identity::generate().recipient();
    let rnd = SealRandomness::generate(1);
    assert!(seal_header(&[], "f", 1, 12, &SealRandomness::generate(0)).is_err());
    assert!(seal_header(&[r], "", 1, 12, &rnd).is_err());
    assert!(seal_header(&[r], &"a".repeat(MAX_PATH_LEN + 1), 1, 12, &rnd).is_err());
    assert!(seal_header(&[r], "f", 1, 17, &rnd).is_err());
    assert!(seal_header(&[r], "f", u64::MAX, 12, &rnd).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any (offset, len) slice assembled from decrypted chunks equals the plaintext slice.
    #[test]
    fn random_ranges_match_plaintext(
        len in 0usize..40_000,
        log2 in CHUNK_LOG2_RANGE,
        ranges in proptest::collection::vec((0usize..40_000, 0usize..20_000), 1..8),
    ) {
        let id = Identity::generate();
        let data = pattern(len);
        let sealed = seal_all(&[id.recipient()], "r", &data, log2, &SealRandomness::generate(1));
        let opened = Header::parse(&sealed).unwrap().open(&id).unwrap();
        let layout = opened.layout;
        for (offset, want) in ranges {
            let offset = offset.min(len);
            let end = (offset + want).min(len);
            let mut got = Vec::new();
            if offset < end {
                for index in layout.chunk_of(offset as u64)..=layout.chunk_of(end as u64 - 1) {
                    let s = layout.chunk_offset(index) as usize;
                    let mut buf = sealed[s..s + layout.chunk_plain_len(index) + TAG_LEN].to_vec();
                    opened.chunks.open_chunk(index, layout.is_last(index), &mut buf).unwrap();
                    let chunk_start = (index as usize) << log2;
                    let from = offset.max(chunk_start) - chunk_start;
                    let to = end.min(chunk_start + layout.chunk_plain_len(index)) - chunk_start;
                    got.extend_from_slice(&buf[from..to]);
                }
            }
            prop_assert_eq!(&got[..], &data[offset..end]);
        }
    }
}

/// Deterministic inputs for the committed test vectors in `tests/vectors/`.
fn vector_cases() -> Vec<(&'static str, u8, usize, &'static str, usize)> {
    // (file name, chunk log2, plaintext length, logical path, recipients)
    vec![
        ("v1-empty.smpfs", 12, 0, "empty.txt", 1),
        ("v1-one-chunk.smpfs", 12, 100, "study/CT/1.dcm", 1),
        ("v1-three-chunks.smpfs", 12, 2 * 4096 + 5, "a/b/c.bin", 1),
        (
            "v1-two-recipients.smpfs",
            16,
            70_000,
            "MR/series 2/img.dcm",
            2,
        ),
    ]
}

fn vector_identity(n: u8) -> Identity {
    Identity::from([n; 32])
}

fn vector_randomness(case: usize, recipients: usize) -> SealRandomness {
    SealRandomness {
        file_key: Zeroizing::new([0x40 + case as u8; 32]),
        file_id: [0x10 + case as u8; 16],
        ephemeral: (0..recipients)
            .map(|r| Zeroizing::new([0x80 + (case * 8 + r) as u8; 32]))
            .collect(),
    }
}

#[test]
fn committed_test_vectors_decode_and_reencode_bit_for_bit() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    for (case, (name, log2, len, path, n_recipients)) in vector_cases().into_iter().enumerate() {
        let recipients: Vec<Recipient> = (1..=n_recipients as u8)
            .map(|n| vector_identity(n).recipient())
            .collect();
        let sealed = seal_all(
            &recipients,
            path,
            &pattern(len),
            log2,
            &vector_randomness(case, n_recipients),
        );
        let file = dir.join(name);
        if std::env::var_os("SMPFS_WRITE_VECTORS").is_some() {
            std::fs::write(&file, &sealed).unwrap();
        }
        let stored = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            stored, sealed,
            "{name}: encoder drifted from the committed vector"
        );
        for n in 1..=n_recipients as u8 {
            let (got_path, plain) = open_all(&vector_identity(n), &stored).unwrap();
            assert_eq!(got_path, path);
            assert_eq!(plain, pattern(len), "{name}");
        }
    }
}

#[test]
fn a_rewrapped_header_opens_the_same_chunks_for_the_new_recipients_only() {
    let (a, b, c) = (vector_identity(1), vector_identity(2), vector_identity(3));
    let data = pattern(10_000);
    let sealed = seal_all(
        &[a.recipient(), b.recipient()],
        "bucket/obj/ab/x",
        &data,
        12,
        &SealRandomness::generate(2),
    );
    let header = Header::parse(&sealed).unwrap();
    let old_len = header_len(&sealed).unwrap();
    let rewrapped = header.rewrap(&a, &[a.recipient(), c.recipient()]).unwrap();
    let new_header = Header::parse(&rewrapped).unwrap();
    assert_eq!(new_header.file_id(), header.file_id());
    assert_eq!(
        rewrapped.len(),
        old_len,
        "same recipient count, same length"
    );
    // The old chunks after the new header open for a and c, not for b.
    let mut moved = rewrapped.clone();
    moved.extend_from_slice(&sealed[old_len..]);
    for identity in [&a, &c] {
        let (path, plain) = open_all(identity, &moved).unwrap();
        assert_eq!(path, "bucket/obj/ab/x");
        assert_eq!(plain, data);
    }
    assert_eq!(
        open_all(&b, &moved).unwrap_err(),
        FormatError::NoMatchingRecipient
    );
    // Only a reader of the old header can rewrap it.
    assert_eq!(
        header.rewrap(&c, &[c.recipient()]).unwrap_err(),
        FormatError::NoMatchingRecipient
    );
}
