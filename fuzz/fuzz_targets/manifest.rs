//! Manifest segments of v2 buckets: `Segment::decode` on any bytes. Whatever decodes
//! must encode back to exactly the same bytes (one encoding per segment), and replaying
//! it, as a snapshot or as a delta on an empty manifest, must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smpfs::manifest::{Kind, Manifest, Segment};

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

fuzz_target!(|data: &[u8]| {
    let Ok(segment) = Segment::decode(data) else {
        return;
    };
    assert_eq!(segment.encode(), data, "decode and encode disagree");
    match segment.kind {
        Kind::Snapshot => {
            let manifest = Manifest::from_chain(std::slice::from_ref(&segment))
                .expect("a decoded snapshot replays");
            assert!(manifest.entries.len() <= segment.ops.len());
        }
        Kind::Delta => {
            let mut base = Manifest {
                generation: segment.generation - 1,
                snapshot: segment.snapshot,
                ..Manifest::default()
            };
            base.apply(&segment)
                .expect("a delta on its own base applies");
        }
    }
});
