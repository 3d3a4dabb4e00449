//! The sealed header and its recipient stanzas: `header_len` on the fixed prefix,
//! `Header::parse`, then `Header::open` with a test-vector identity (the second one when
//! the input ends in an odd byte), and the chunks after a header that opens. Whatever
//! parses must agree with `header_len`; a header that opens must give a layout whose
//! arithmetic cannot overflow; a chunk that fails must leave no bytes behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smpfs::format::{self, Header};
use smpfs_fuzz::vector_identity;

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

fuzz_target!(|data: &[u8]| {
    let announced = format::header_len(data);
    let Ok(header) = Header::parse(data) else {
        return;
    };
    let len = announced.expect("a header that parses has a valid prefix");
    assert!(len <= format::MAX_HEADER_LEN && len <= data.len());
    let _ = header.file_id();
    // Opening costs two X25519 operations per stanza tried, which at 64 stanzas would slow
    // the whole campaign down a hundredfold: open headers of up to four stanzas, with one
    // identity per input (every stanza goes through the same code).
    let n = 1 + data.last().map_or(0, |b| b & 1);
    if u16::from_le_bytes([data[32], data[33]]) <= 4 {
        if let Ok(opened) = header.open(&vector_identity(n)) {
            let layout = opened.layout;
            assert_eq!(layout.header_len, len as u64);
            let last = layout.chunk_count() - 1;
            assert!(layout.is_last(last));
            assert!(
                layout.chunk_offset(last) + layout.chunk_plain_len(last) as u64
                    <= layout.object_len()
            );
            assert!(!opened.logical_path.is_empty() || layout.header_len > 0);
            // Open the chunks that follow the header, as far as the input holds them.
            let mut at = len;
            for index in 0..=last {
                let sealed_len = layout.chunk_plain_len(index) + format::TAG_LEN;
                let Some(sealed) = data.get(at..at + sealed_len) else {
                    break;
                };
                let mut plain = vec![0u8; sealed_len];
                let ok = opened
                    .chunks
                    .open_chunk_into(index, layout.is_last(index), sealed, &mut plain)
                    .is_ok();
                if !ok {
                    assert!(
                        plain.iter().all(|b| *b == 0),
                        "a failed chunk left bytes behind"
                    );
                }
                at += sealed_len;
            }
        }
    }
});
