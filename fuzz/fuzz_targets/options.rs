//! Mount options and the other option text smpfs parses: `-o` lists (NUL separates
//! arguments), sizes, backend options, bucket sources (`s3://`, `gdrive://`, `file://`,
//! paths) and object keys as a bucket lists them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smpfs::backend::{validate_key, BackendOptions, Source};
use smpfs::options::{parse_backend_option, parse_size, MountOptions};

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text.split('\0').collect();
    if let Ok(options) = MountOptions::parse(&args) {
        assert!(options.umask <= 0o777);
        assert!(options.cache_size >= 16 << 20);
    }
    let mut backend = BackendOptions::default();
    for arg in &args {
        if let Ok(size) = parse_size(arg) {
            let _ = size;
        }
        for item in arg.split(',') {
            let _ = parse_backend_option(&mut backend, item);
        }
        let _ = arg.parse::<Source>();
        if validate_key(arg).is_ok() {
            assert!(!arg.is_empty() && arg.len() <= 4096 && !arg.contains('\0'));
            assert!(arg
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
        }
    }
});
