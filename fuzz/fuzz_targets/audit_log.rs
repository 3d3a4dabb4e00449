//! Whole audit logs and their anchors through `audit::verify`. The first byte picks
//! fix-ups (see `smpfs_fuzz::fix_log`: re-sealed segment keys and recomputed tags, linked
//! `prev` fields) so the fuzzer reaches the chain, segment and anchor checks instead of
//! stopping at the first MAC; the rest is the log, then optionally `\n#ANCHOR\n` and the
//! anchor's checkpoints, one per line, read from a file or from an object store.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use smpfs::audit::{AnchorTarget, CheckpointStore, StoreError};
use smpfs_fuzz::{auditor, fix_log, split, Fixes, MemoryFile};

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

thread_local! {
    static FILES: RefCell<(MemoryFile, MemoryFile)> =
        RefCell::new((MemoryFile::new("audit.log"), MemoryFile::new("anchor")));
}

/// Checkpoints as objects, each named as the writer names it when its JSON gives a
/// segment and seq (else by position), so that the store's name check can pass.
struct Store(Vec<(String, Vec<u8>)>);

impl Store {
    fn new(lines: &[u8]) -> Store {
        let objects = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, line)| {
                let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
                let number = |name: &str| value.as_ref().and_then(|v| v.get(name)?.as_u64());
                let name = match (number("segment"), number("seq")) {
                    (Some(segment), Some(seq)) => format!("{segment:010}-{seq:020}.json"),
                    _ => format!("{i:010}.json"),
                };
                let mut bytes = line.to_vec();
                bytes.push(b'\n');
                (name, bytes)
            })
            .collect();
        Store(objects)
    }
}

impl CheckpointStore for Store {
    fn put_new(&self, name: &str, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(format!("{name}: the fuzz anchor store is read-only").into())
    }

    fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.0.iter().map(|(name, _)| name.clone()).collect())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, bytes)| bytes.clone())
            .ok_or_else(|| format!("{name}: no such checkpoint").into())
    }

    fn describe(&self) -> String {
        "fuzz anchor store/".to_owned()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, b"\n#ANCHOR\n", 2);
    let fixes = Fixes {
        keys_and_tags: flags & 1 != 0,
        prev: flags & 2 != 0,
    };
    let log = fix_log(parts[0], fixes);
    FILES.with(|files| {
        let (log_file, anchor_file) = &mut *files.borrow_mut();
        let log_path = log_file.holding(&log).to_owned();
        let anchor = match parts.get(1) {
            None => None,
            Some(lines) if flags & 4 != 0 => Some(AnchorTarget::Store(Arc::new(Store::new(lines)))),
            Some(lines) => Some(AnchorTarget::File(anchor_file.holding(lines).to_owned())),
        };
        let _ = smpfs::audit::verify(&log_path, auditor(), anchor.as_ref())
            .map(|report| report.to_string());
    });
});
