//! Chunk framing: a sealed object read the way a mount reads it (`SealedObject::open`
//! from a bucket, then chunk loads from the backend and from the bytes of the first read),
//! after the fuzzer has tampered with it. The harness seals a real object from the input
//! (chunk size, recipients, path, length, plaintext), applies the input's tampering
//! (flipped bytes, truncation, extension, swapped or foreign chunks, a wrong listed size)
//! and checks the security property: every chunk that opens yields exactly the plaintext
//! that was sealed at that index, and an untouched object opens and reads back in full.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use smpfs::backend::Backend;
use smpfs::cache::ChunkSource;
use smpfs::format::{self, SealRandomness, TAG_LEN};
use smpfs::keys::{Identity, Recipient};
use smpfs::vault::SealedObject;
use smpfs_fuzz::{Cursor, MemoryBucket};
use zeroize::Zeroizing;

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

/// Three recipients and one stranger (index 3), made once.
fn people() -> &'static [(Identity, Recipient); 4] {
    static PEOPLE: OnceLock<[(Identity, Recipient); 4]> = OnceLock::new();
    PEOPLE.get_or_init(|| {
        [1u8, 2, 3, 9].map(|n| {
            let identity = Identity::from([n; 32]);
            let recipient = identity.recipient();
            (identity, recipient)
        })
    })
}

fn seal(recipients: &[Recipient], path: &str, plain: &[u8], log2: u8, tweak: u8) -> Vec<u8> {
    let randomness = SealRandomness {
        file_key: Zeroizing::new([0x40 ^ tweak; 32]),
        file_id: [0x10 ^ tweak; 16],
        ephemeral: (0..recipients.len())
            .map(|r| Zeroizing::new([0x80 + r as u8; 32]))
            .collect(),
    };
    let (mut object, opened) =
        format::seal_header(recipients, path, plain.len() as u64, log2, &randomness)
            .expect("valid sealing arguments");
    let layout = opened.layout;
    for index in 0..layout.chunk_count() {
        let start = (index as usize) << log2;
        let len = layout.chunk_plain_len(index);
        let mut chunk = vec![0u8; len + TAG_LEN];
        chunk[..len].copy_from_slice(&plain[start..start + len]);
        opened
            .chunks
            .seal_chunk(index, layout.is_last(index), &mut chunk);
        object.extend_from_slice(&chunk);
    }
    object
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let shape = input.byte();
    let log2 = if shape & 0x80 != 0 {
        12 + shape % 5
    } else {
        12
    };
    let chunk = 1usize << log2;
    let who = input.byte();
    let recipients: Vec<Recipient> = (0..1 + who as usize % 3).map(|i| people()[i].1).collect();
    let reader = &people()[(who as usize / 3) % 4].0;
    let plain_len = input.u32() as usize % (3 * chunk + 64);
    let path_bytes = input.field(64);
    let path = String::from_utf8_lossy(path_bytes).replace('\0', "");
    let path = if path.is_empty() {
        "f".to_owned()
    } else {
        path
    };
    // The bucket's name is part of where an object lies; bit 0x10 seals it elsewhere.
    let bucket_name = if shape & 0x40 != 0 { "site" } else { "" };
    let key = path.clone();
    let location = if bucket_name.is_empty() {
        key.clone()
    } else {
        format!("{bucket_name}/{key}")
    };
    let in_place = shape & 0x10 == 0;
    let path = if in_place {
        location
    } else {
        format!("moved/{key}")
    };
    let fill = input.byte();
    let plain: Vec<u8> = (0..plain_len)
        .map(|i| (i as u8).wrapping_mul(31) ^ fill)
        .collect();
    let original = seal(&recipients, &path, &plain, log2, 0);
    let header_len = format::header_len(&original).expect("our own header");
    let chunk_at = |i: usize| header_len + i * (chunk + TAG_LEN);

    // Tampering: up to 8 operations of 4 bytes each.
    let mut object = original.clone();
    let mut listed_delta: i64 = 0;
    for _ in 0..8 {
        let op = input.byte();
        let a = input.u16() as usize;
        let b = input.byte();
        if op == 0 {
            break;
        }
        let len = object.len();
        match op % 7 {
            1 if len > 0 => object[a % len] ^= b.max(1),
            2 => object.truncate(a % (len + 1)),
            3 => object.extend(std::iter::repeat_n(b, a % 300)),
            4 => {
                // Swap two whole chunk positions (the last may be short: swap prefixes).
                let (i, j) = (a % 4, b as usize % 4);
                let (x, y) = (chunk_at(i.min(j)), chunk_at(i.max(j)));
                let n = (chunk + TAG_LEN).min(len.saturating_sub(y));
                if i != j && y + n <= len {
                    let (left, right) = object.split_at_mut(y);
                    left[x..x + n].swap_with_slice(&mut right[..n]);
                }
            }
            5 => {
                // A chunk from another file sealed to the same recipients.
                let other = seal(&recipients, &path, &plain, log2, b | 1);
                let i = a % 4;
                let (from, to) = (chunk_at(i), chunk_at(i + 1).min(other.len()));
                if to <= object.len() && from < to {
                    object[from..to].copy_from_slice(&other[from..to]);
                }
            }
            6 => listed_delta = i64::from(b as i8),
            _ => {}
        }
    }
    let listed = (object.len() as i64 + listed_delta).max(0) as u64;
    let untouched = object == original && listed_delta == 0 && in_place;

    let mut bucket = MemoryBucket::named(bucket_name);
    bucket.insert(&key, object);
    let backend: Arc<dyn Backend> = Arc::new(bucket);
    let first_read = if shape & 0x20 != 0 { 256 << 10 } else { 4096 };
    let opened = SealedObject::open(backend, &key, listed, reader, 1, first_read, None);
    let is_recipient = (who as usize / 3) % 4 < recipients.len();
    let (object, first_bytes) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            assert!(
                !(untouched && is_recipient),
                "an untouched object sealed to us did not open: {e}"
            );
            return;
        }
    };
    assert!(is_recipient, "a stranger opened an object");
    assert!(in_place, "an object sealed for another place opened");
    let layout = *object.layout();
    assert_eq!(
        layout.plaintext_len, plain_len as u64,
        "an opened header lies about the length"
    );
    let count = layout.chunk_count();
    let check = |index: u64, buf: &[u8]| {
        let start = (index as usize) << log2;
        let len = layout.chunk_plain_len(index);
        assert_eq!(
            &buf[..len],
            &plain[start..start + len],
            "chunk {index} opened to other bytes"
        );
    };
    // Chunks from the first read, then every chunk from the bucket in runs of `run`.
    let (prefetched, within) = object.prefetched(&first_bytes);
    for index in within {
        let mut buf = vec![0u8; prefetched.sealed_len(index)];
        match prefetched.load(index, &mut [&mut buf]) {
            Ok(()) => check(index, &buf),
            Err(e) => assert!(!untouched, "chunk {index} of an untouched object: {e}"),
        }
    }
    let run = 1 + (input.byte() % 3) as u64;
    let mut index = 0;
    while index < count {
        let n = run.min(count - index);
        let mut bufs: Vec<Vec<u8>> = (index..index + n)
            .map(|i| vec![0u8; object.sealed_len(i)])
            .collect();
        let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        match object.load(index, &mut slices) {
            Ok(()) => {
                for (k, buf) in bufs.iter().enumerate() {
                    check(index + k as u64, buf);
                }
            }
            Err(e) => assert!(
                !untouched,
                "chunks from {index} of an untouched object: {e}"
            ),
        }
        index += n;
    }
});
