//! `smpfs seal --deidentify` and `smpfs inspect` on pydicom's real test files: every output
//! is decrypted with `smpfs cat` and checked against its original with pydicom
//! (tests/dicom/check_deid.py): Annex E attributes gone or replaced, private attributes
//! gone, geometry and pixels kept, UIDs and Patient IDs consistently mapped. Needs python3
//! with pydicom (integration/install-deps.sh); without it these tests fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{pydicom_test_files, run_ok, smpfs, Workspace};
use serde_json::Value;
use smpfs::dicom::profile::{rows, Code, KEEP_TECHNICAL};

fn copy_tree(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-r").arg(from).arg(to));
}

/// Writes CT_small.dcm with Burned In Annotation = YES to `path`, using pydicom.
fn write_burned_in(source: &Path, path: &Path) {
    run_ok(Command::new("python3").args([
        "-c",
        "import sys, pydicom; ds = pydicom.dcmread(sys.argv[1]); \
         ds.BurnedInAnnotation = 'YES'; ds.save_as(sys.argv[2])",
        source.to_str().unwrap(),
        path.to_str().unwrap(),
    ]));
}

struct Sealed {
    report_key: String,
    stderr: String,
}

fn seal_deid(ws: &Workspace, bucket: &Path, key: &Path, profile: Option<&str>) -> Sealed {
    let mut cmd = ws.smpfs();
    cmd.args(["seal", "-i"])
        .arg(&ws.identity)
        .arg(ws.plain())
        .args(["--to", &ws.recipient])
        .arg("--out")
        .arg(bucket)
        .arg("--deid-key")
        .arg(key);
    match profile {
        Some(p) => cmd.arg(format!("--deidentify={p}")),
        None => cmd.arg("--deidentify"),
    };
    let out = run_ok(&mut cmd);
    Sealed {
        report_key: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `smpfs cat` of the sealed file `path` of `bucket`.
fn cat(ws: &Workspace, bucket: &Path, path: &str) -> Vec<u8> {
    run_ok(
        ws.smpfs()
            .arg("cat")
            .arg(bucket)
            .arg(path)
            .arg("-i")
            .arg(&ws.identity),
    )
    .stdout
}

/// Decrypts every file of the zero-knowledge `bucket` (but the reports), as `smpfs ls`
/// lists them, into `out`, keeping paths.
fn decrypt_bucket(ws: &Workspace, bucket: &Path, out: &Path) -> Vec<String> {
    let listed = run_ok(ws.smpfs().arg("ls").arg(bucket).arg("-i").arg(&ws.identity));
    let mut paths = Vec::new();
    for line in String::from_utf8(listed.stdout).unwrap().lines() {
        // SIZE  MTIME  PATH: the path is everything after the second gap.
        let rel = line.trim_start().splitn(3, "  ").nth(2).unwrap();
        if rel.starts_with(".smpfs/") {
            continue;
        }
        let target = out.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, cat(ws, bucket, rel)).unwrap();
        paths.push(rel.to_owned());
    }
    paths
}

/// Runs the pydicom check on `deid` against `ws.plain()`; returns its JSON summary.
fn pydicom_check(ws: &Workspace, deid: &Path, keep_technical: bool) -> Value {
    pydicom_test_files();
    let table: Vec<Value> = rows()
        .iter()
        .map(|row| {
            let (g, e, gm, em) = row.pattern();
            serde_json::json!([
                g,
                e,
                gm,
                em,
                if row.code == Code::U { "U" } else { "other" }
            ])
        })
        .collect();
    let keep: Vec<Value> = if keep_technical {
        KEEP_TECHNICAL
            .iter()
            .map(|(g, e)| serde_json::json!([g, e]))
            .collect()
    } else {
        Vec::new()
    };
    let summary_out = deid.with_extension("summary.json");
    let config = deid.with_extension("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "plain": ws.plain(), "deid": deid, "table": table, "keep": keep,
            "summary_out": summary_out,
        })
        .to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom/check_deid.py");
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .arg(script)
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pydicom check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(summary_out).unwrap()).unwrap()
}

fn report(ws: &Workspace, bucket: &Path, key: &str) -> Value {
    serde_json::from_slice(&cat(ws, bucket, key)).expect("report is JSON")
}

#[test]
fn pydicom_test_files_are_deidentified_and_pass_the_pydicom_check() {
    let ws = Workspace::new();
    let src = pydicom_test_files();
    copy_tree(&src, &ws.plain().join("pydicom"));
    ws.write_plain("notes.txt", b"Patient Jane Doe, not a DICOM file\n");
    write_burned_in(&src.join("CT_small.dcm"), &ws.plain().join("burned.dcm"));
    let key = ws.dir.path().join("deid.key");
    let sealed = seal_deid(&ws, &ws.bucket(), &key, None);
    assert!(sealed.stderr.contains("created de-identification key"));
    assert!(sealed.report_key.starts_with(".smpfs/deid-report-"));

    let report = report(&ws, &ws.bucket(), &sealed.report_key);
    assert_eq!(report["format"], "smpfs-deid-report/1");
    assert_eq!(report["profile"], "basic");
    let summary = &report["summary"];
    let count = |name: &str| summary[name].as_u64().unwrap();
    assert_eq!(
        count("files"),
        count("deidentified") + count("skipped_not_dicom") + count("skipped_burned_in")
    );
    assert_eq!(count("failed"), 0);
    assert_eq!(count("skipped_burned_in"), 1);
    assert!(count("deidentified") >= 140, "{summary}");
    assert!(sealed.stderr.contains(&format!(
        "skipped {} not DICOM, 1 with burned-in annotation; 0 failed",
        count("skipped_not_dicom")
    )));
    let files: BTreeMap<String, &Value> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_owned(), f))
        .collect();
    assert_eq!(files["notes.txt"]["status"], "skipped-not-dicom");
    assert!(sealed.stderr.contains("skipped: not a DICOM file"));
    assert_eq!(files["burned.dcm"]["status"], "skipped-burned-in");
    let ct = files["pydicom/CT_small.dcm"];
    assert_eq!(ct["status"], "deidentified");
    let changed = |tag: &str| {
        ct["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tag"] == tag)
            .map(|c| c["action"].as_str().unwrap().to_owned())
    };
    assert_eq!(changed("(0010,0010)").as_deref(), Some("pseudonymized"));
    assert_eq!(changed("(0020,000D)").as_deref(), Some("uid-mapped"));
    assert_eq!(changed("(0008,0020)").as_deref(), Some("emptied"));
    assert_eq!(changed("(0009,0010)").as_deref(), Some("removed"));
    let report_text = serde_json::to_string(&report).unwrap();
    assert!(
        !report_text.contains("CompressedSamples"),
        "no values in the report"
    );

    let out = ws.dir.path().join("deid");
    let sealed_paths = decrypt_bucket(&ws, &ws.bucket(), &out);
    assert_eq!(sealed_paths.len() as u64, count("deidentified"));
    assert!(!sealed_paths
        .iter()
        .any(|p| p == "notes.txt" || p == "burned.dcm"));
    let check = pydicom_check(&ws, &out, false);
    assert_eq!(check["files"].as_u64().unwrap(), count("deidentified"));
    assert!(check["original_values_checked"].as_u64().unwrap() > 1000);
    // The independent Annex E list (written out in check_deid.py, not taken from smpfs's
    // table) found most of its attributes in pydicom's files, and none survived.
    let independent = check["independent_attributes_checked"].as_array().unwrap();
    assert!(independent.len() >= 25, "{independent:?}");
}

#[test]
fn series_stay_linked_and_pseudonyms_follow_the_key() {
    let ws = Workspace::new();
    copy_tree(
        &pydicom_test_files().join("dicomdirtests"),
        &ws.plain().join("dicomdirtests"),
    );
    let key_a = ws.dir.path().join("a.key");
    let key_b = ws.dir.path().join("b.key");
    let mut summaries = Vec::new();
    for (name, key) in [("a1", &key_a), ("a2", &key_a), ("b", &key_b)] {
        let bucket = ws.dir.path().join(format!("bucket-{name}"));
        seal_deid(&ws, &bucket, key, None);
        let out = ws.dir.path().join(format!("deid-{name}"));
        decrypt_bucket(&ws, &bucket, &out);
        summaries.push(pydicom_check(&ws, &out, false));
    }
    let (a1, a2, b) = (&summaries[0], &summaries[1], &summaries[2]);
    // The MR and CT series: as many distinct studies and series after as before (the check
    // also proved each original maps to exactly one new UID and none collide).
    let distinct = &a1["distinct"];
    assert!(
        distinct["SeriesInstanceUID"].as_u64().unwrap() >= 4,
        "{distinct}"
    );
    assert!(
        distinct["StudyInstanceUID"].as_u64().unwrap() >= 2,
        "{distinct}"
    );
    let per_file = |s: &Value| s["per_file"].as_object().unwrap().clone();
    let (a1, a2, b) = (per_file(a1), per_file(a2), per_file(b));
    assert!(a1.len() > 20);
    let mut series_files: BTreeMap<String, usize> = BTreeMap::new();
    for (path, ids) in &a1 {
        // The same key gives the same pseudonym and UIDs in another run...
        assert_eq!(ids, &a2[path], "{path}");
        // ...and another key gives others.
        for field in ["PatientID", "StudyInstanceUID", "SeriesInstanceUID"] {
            if !ids[field].as_str().unwrap().is_empty() {
                assert_ne!(ids[field], b[path][field], "{path} {field}");
            }
        }
        if ids["PatientID"] != "" {
            assert!(ids["PatientID"].as_str().unwrap().starts_with("SMPFS-"));
        }
        *series_files
            .entry(ids["SeriesInstanceUID"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        series_files.values().any(|&n| n >= 4),
        "multi-file series share one new Series Instance UID: {series_files:?}"
    );
}

#[test]
fn keep_technical_keeps_body_characteristics() {
    let ws = Workspace::new();
    let src = pydicom_test_files();
    for name in ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"] {
        std::fs::copy(src.join(name), ws.plain().join(name)).unwrap();
    }
    let key = ws.dir.path().join("deid.key");
    let sealed = seal_deid(&ws, &ws.bucket(), &key, Some("basic+keep-technical"));
    assert_eq!(
        report(&ws, &ws.bucket(), &sealed.report_key)["profile"],
        "basic+keep-technical"
    );
    let out = ws.dir.path().join("deid");
    decrypt_bucket(&ws, &ws.bucket(), &out);
    pydicom_check(&ws, &out, true);
    let dump = String::from_utf8(
        run_ok(
            smpfs()
                .arg("inspect")
                .arg(ws.bucket())
                .arg("CT_small.dcm")
                .arg("-i")
                .arg(&ws.identity),
        )
        .stdout,
    )
    .unwrap();
    let line = dump
        .lines()
        .find(|l| l.starts_with("(0010,0040)"))
        .expect("Patient's Sex kept");
    assert!(line.contains("\"F\"") || line.contains("\"M\"") || line.contains("\"O\""));
}

#[test]
fn inspect_prints_the_header_but_no_pixel_data() {
    let ws = Workspace::new();
    let src = pydicom_test_files();
    std::fs::copy(src.join("CT_small.dcm"), ws.plain().join("CT_small.dcm")).unwrap();
    let key = ws.dir.path().join("deid.key");
    seal_deid(&ws, &ws.bucket(), &key, None);
    let out = run_ok(
        smpfs()
            .arg("inspect")
            .arg(ws.bucket())
            .arg("CT_small.dcm")
            .arg("--identity")
            .arg(&ws.identity),
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(dump.contains("Transfer Syntax"), "{dump}");
    assert!(dump.contains("PatientName"));
    assert!(dump.contains("SMPFS-"));
    assert!(dump.contains("(0028,0010) Rows"));
    assert!(!dump.contains("CompressedSamples"), "original name gone");
    assert!(!dump.contains("(7FE0,0010)"), "no pixel data");

    // Plain sealing keeps everything; inspect shows the original header.
    let bucket = ws.dir.path().join("plain-bucket");
    run_ok(
        smpfs()
            .args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", &ws.recipient])
            .arg("--out")
            .arg(&bucket),
    );
    let dump = run_ok(
        smpfs()
            .arg("inspect")
            .arg(&bucket)
            .arg("CT_small.dcm")
            .arg("-i")
            .arg(&ws.identity),
    )
    .stdout;
    assert!(String::from_utf8(dump)
        .unwrap()
        .contains("CompressedSamples^CT1"));

    // Wrong identity: nothing printed, an error.
    let other = ws.dir.path().join("other.id");
    smpfs::keys::Identity::generate()
        .save_new(&other, None)
        .unwrap();
    let out = smpfs()
        .arg("inspect")
        .arg(&bucket)
        .arg("CT_small.dcm")
        .arg("-i")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn deidentify_needs_a_key_and_a_known_profile() {
    let ws = Workspace::new();
    ws.write_plain("a.dcm", b"x");
    let base = || {
        let mut cmd = smpfs();
        cmd.args(["seal", "--layout", "v1"])
            .arg(ws.plain())
            .args(["--to", &ws.recipient])
            .arg("--out")
            .arg(ws.bucket());
        cmd
    };
    let out = base().arg("--deidentify").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--deid-key"));
    let key = ws.dir.path().join("k");
    let out = base()
        .arg("--deidentify=strict")
        .arg("--deid-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown de-identification profile"));
    assert!(!key.exists(), "no key created for a refused run");
    std::fs::write(&key, [1u8; 32]).unwrap();
    let out = base()
        .arg("--deidentify")
        .arg("--deid-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a world-readable key is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

/// `--layout v1` still de-identifies into objects under their paths, report included.
#[test]
fn a_v1_bucket_gets_its_files_and_report_under_their_paths() {
    let ws = Workspace::new();
    copy_tree(
        &pydicom_test_files().join("CT_small.dcm"),
        &ws.plain().join("CT_small.dcm"),
    );
    let key = ws.dir.path().join("deid.key");
    let out = run_ok(
        smpfs()
            .args(["seal", "--layout", "v1", "--deidentify", "--deid-key"])
            .arg(&key)
            .arg(ws.plain())
            .args(["--to", &ws.recipient, "--out"])
            .arg(ws.bucket()),
    );
    let report_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(ws.bucket().join("CT_small.dcm").is_file());
    assert!(ws.bucket().join(&report_key).is_file(), "{report_key}");
    assert!(!ws.bucket().join("manifest").exists());
    assert_eq!(
        report(&ws, &ws.bucket(), &report_key)["summary"]["deidentified"],
        1
    );
}
