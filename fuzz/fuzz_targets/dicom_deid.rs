//! DICOM at seal time: `seal --deidentify` parses each file (under the same allocation
//! limit as in production: `parse_limit`), applies the Annex E profile and writes the
//! result. The first byte picks the profile. A file that de-identifies must come out as a
//! DICOM file that parses again and carry no top-level Patient ID but a pseudonym.
#![no_main]

use std::sync::OnceLock;

use dicom_dictionary_std::tags;
use libfuzzer_sys::fuzz_target;
use smpfs::dicom::deid::Deidentifier;
use smpfs::dicom::parse::{parse_limit, read_file};
use smpfs::dicom::profile::Profile;
use smpfs::dicom::pseudonym::{PseudonymKeys, PSEUDONYM_PREFIX};

#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

fn keys() -> &'static PseudonymKeys {
    static KEYS: OnceLock<PseudonymKeys> = OnceLock::new();
    KEYS.get_or_init(|| PseudonymKeys::from_secret(&[5; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let profile = if pick & 1 == 0 {
        Profile::Basic
    } else {
        Profile::BasicKeepTechnical
    };
    let Ok(done) = Deidentifier::new(profile, keys()).deidentify(file, file.len()) else {
        return;
    };
    let output: &[u8] = &done.data;
    let again = smpfs::heap::with_allocation_limit(parse_limit(output.len()), || {
        read_file(output, output.len() as u64)
    })
    .unwrap_or_else(|e| panic!("de-identified output does not parse: {e}"));
    if let Some(id) = again.get(tags::PATIENT_ID).and_then(|e| e.to_str().ok()) {
        let id = id.trim_matches(['\0', ' ']);
        assert!(
            id.is_empty() || id.starts_with(PSEUDONYM_PREFIX),
            "a Patient ID that is not a pseudonym survived de-identification"
        );
    }
});
