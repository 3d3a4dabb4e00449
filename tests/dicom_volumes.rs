//! `-o volumes` through a real mount: series built from pydicom's bundled files
//! (tests/dicom/make_series.py) are sealed, mounted, and every `.volumes` entry is checked
//! with nibabel against pydicom (tests/dicom/check_volumes.py): voxels with rescale,
//! affine, dtype, documented errors for broken series; opens and reads are audited and
//! refused while locked. Needs python3 with pydicom, numpy and nibabel
//! (integration/install-deps.sh); without them these tests fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::{occurrences_in_memory, run_ok, smpfs, Workspace};
use serde_json::Value;

/// Runs a Python script of tests/dicom, panicking with the fix if a module is missing.
fn python(script: &str, args: &[&Path]) -> String {
    let check = Command::new("python3")
        .args(["-c", "import pydicom, numpy, nibabel"])
        .output()
        .expect("python3 must be installed: run integration/install-deps.sh");
    assert!(
        check.status.success(),
        "pydicom, numpy and nibabel are needed: run integration/install-deps.sh ({})",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new("python3")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/dicom")
                .join(script),
        )
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn volumes_match_pydicom_and_nibabel() {
    let ws = Workspace::new();
    let uids = python("make_series.py", &[&ws.plain()]);
    let series_json = ws.dir.path().join("series.json");
    std::fs::write(&series_json, &uids).unwrap();
    let uids: Value = serde_json::from_str(&uids).unwrap();
    ws.seal_all();

    let mount = ws.mount(&["volumes"]);
    let summary = python("check_volumes.py", &[&ws.plain(), &mount.mnt, &series_json]);
    assert!(summary.contains("\"designed\": 8"), "{summary}");
    assert!(mount.unmount().success());

    let records = records(&ws.dir.path().join("audit.log"));
    let ct = format!(".volumes/{}.nii", uids["ct"].as_str().unwrap());
    let of = |event: &str| {
        records
            .iter()
            .filter(|r| r["event"] == event && r["path"] == ct.as_str())
            .cloned()
            .collect::<Vec<_>>()
    };
    let opens = of("open");
    assert!(!opens.is_empty(), "no open record for {ct}");
    assert_eq!(opens[0]["detail"]["volume"]["slices"], 12, "{}", opens[0]);
    assert!(!of("read").is_empty(), "no read record for {ct}");
    assert!(!of("release").is_empty(), "no release record for {ct}");
}

#[test]
fn volumes_need_the_option_and_are_refused_while_locked() {
    let ws = Workspace::new();
    let uids = python("make_series.py", &[&ws.plain(), Path::new("4")]);
    let uids: Value = serde_json::from_str(&uids).unwrap();
    ws.seal_all();

    let mount = ws.mount(&[]);
    assert!(!mount.mnt.join(".volumes").exists());
    assert!(mount.unmount().success());

    let mount = ws.mount(&["volumes"]);
    let nii = mount
        .mnt
        .join(".volumes")
        .join(format!("{}.nii", uids["ct"].as_str().unwrap()));
    let bytes = std::fs::read(&nii).unwrap();
    assert_eq!(bytes.len(), 352 + 4 * 128 * 128 * 2);
    assert_eq!(&bytes[344..348], b"n+1\0");
    // Closed and opened again (as nibabel does: header, then data), it is not assembled
    // again: the most recently closed volume stays assembled.
    assert_eq!(std::fs::read(&nii).unwrap(), bytes);
    let assemblies = || mount.log_text().matches("volume assembled").count();
    assert_eq!(assemblies(), 1, "{}", mount.log_text());
    // ...until lock: then no copy of its voxels is left in the daemon.
    let voxels = &bytes[352 + 2 * 128 * 128 * 2 + 64 * 128 * 2..][..256];
    let distinct: std::collections::HashSet<u8> = voxels.iter().copied().collect();
    assert!(distinct.len() > 16, "a distinctive run of voxels");
    run_ok(smpfs().arg("lock").arg(&mount.mnt));
    assert_eq!(occurrences_in_memory(mount.pid(), voxels), 0);
    let err = std::fs::read(&nii).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    run_ok(smpfs().arg("unlock").arg(&mount.mnt));
    assert_eq!(std::fs::read(&nii).unwrap(), bytes);
    assert_eq!(assemblies(), 2, "assembled again after unlock");
    assert!(mount.unmount().success());
}
