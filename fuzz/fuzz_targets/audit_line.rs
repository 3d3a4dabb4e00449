//! The audit record parser as `smpfs audit verify` meets it: the input is a log file,
//! verified as it is with the auditor's identity (every line goes through the record
//! parser; the first one that does not authenticate is diagnosed with the lines after it).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use smpfs_fuzz::{auditor, MemoryFile};

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

thread_local! {
    static LOG: RefCell<MemoryFile> = RefCell::new(MemoryFile::new("audit.log"));
}

fuzz_target!(|data: &[u8]| {
    LOG.with(|log| {
        let mut log = log.borrow_mut();
        let path = log.holding(data).to_owned();
        let _ = smpfs::audit::verify(&path, auditor(), None).map(|report| report.to_string());
    });
});
