//! DICOM series as volumes (`-o volumes`): each slice file's header is parsed and
//! described, the series is planned, and every slice is decoded into the volume, as the
//! vault does, under the same allocation limit. The input holds up to four files separated
//! by `\n--SLICE--\n` (the seeds are real series, so the plan's checks are reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smpfs::dicom::parse::{parse_limit, read_file, read_header, DicomFile};
use smpfs::dicom::volume;
use smpfs::heap::with_allocation_limit;
use smpfs_fuzz::split;

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

/// Largest volume the harness assembles; the vault's limit is the locked memory it has.
const MAX_VOLUME: u64 = 64 << 20;

fn parse(bytes: &[u8], header_only: bool) -> Option<DicomFile> {
    with_allocation_limit(parse_limit(bytes.len()), || {
        if header_only {
            read_header(bytes, bytes.len() as u64)
        } else {
            read_file(bytes, bytes.len() as u64)
        }
    })
    .ok()
}

fuzz_target!(|data: &[u8]| {
    let files = split(data, b"\n--SLICE--\n", 4);
    let mut members = Vec::new();
    for (m, bytes) in files.iter().enumerate() {
        let Some(header) = parse(bytes, true) else {
            continue;
        };
        match volume::describe(&header) {
            Ok(Some(slices)) => members.push((m, slices)),
            Ok(None) | Err(_) => {}
        }
    }
    // The vault groups by series; keep those of the first member's series.
    let Some(series) = members.first().map(|(_, s)| s.series.clone()) else {
        return;
    };
    members.retain(|(_, s)| s.series == series);
    let Ok(plan) = volume::plan(members) else {
        return;
    };
    let header = plan.header();
    assert_eq!(&header[344..348], b"n+1\0");
    if plan.len() > MAX_VOLUME {
        return;
    }
    let full: Vec<Option<DicomFile>> = plan
        .members
        .iter()
        .map(|(m, _)| parse(files[*m], false))
        .collect();
    let mut slice = vec![0u8; plan.slice_len()];
    for (k, (member, ..)) in plan.slices.iter().enumerate() {
        if let Some(file) = &full[*member] {
            let _ = plan.decode_into(k, file, &mut slice);
        }
    }
});
