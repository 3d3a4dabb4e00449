//! `smpfs verify` and `smpfs info` through the CLI: local v2 and v1 buckets seeded with one
//! tampered, one truncated, one other-recipient and one orphaned object; a clean bucket
//! passing; an S3 bucket (moto) clean then tampered; and header facts from `info`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::moto::Moto;
use common::{pattern, run_ok, Workspace};
use smpfs::keys::Identity;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `smpfs verify BUCKET -i ID` plus `extra`.
fn verify(ws: &Workspace, bucket: &str, extra: &[&str]) -> Output {
    ws.smpfs()
        .args(["verify", bucket, "-i"])
        .arg(&ws.identity)
        .args(extra)
        .output()
        .unwrap()
}

/// `smpfs verify … --json`, parsed; with its exit status.
fn verify_json(ws: &Workspace, bucket: &str, extra: &[&str]) -> (bool, serde_json::Value) {
    let out = verify(ws, bucket, &[extra, &["--json"]].concat());
    let document = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.success(), document)
}

/// A second identity (someone else's) in the workspace; returns its file and recipient.
fn stranger(ws: &Workspace) -> (PathBuf, String) {
    let path = ws.dir.path().join("stranger");
    let identity = Identity::generate();
    identity.save_new(&path, None).unwrap();
    (path, identity.recipient().to_string())
}

/// Path → object key of a v2 bucket, from `smpfs ls --objects`.
fn objects(ws: &Workspace, bucket: &str) -> Vec<(String, String)> {
    let out = run_ok(
        ws.smpfs()
            .args(["ls", bucket, "--objects", "-i"])
            .arg(&ws.identity),
    );
    text(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[3].to_owned(), fields[1].to_owned())
        })
        .collect()
}

fn key_of(objects: &[(String, String)], path: &str) -> String {
    objects.iter().find(|(p, _)| p == path).unwrap().1.clone()
}

/// Flips one bit `from_end` bytes before the end of `file`.
fn flip_bit(file: &Path, from_end: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// Cuts `by` bytes off the end of `file`.
fn truncate(file: &Path, by: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - by).unwrap();
}

fn problems(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = document["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or("-").to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// A v2 bucket passes while clean; then each seeded problem is named once, with its
/// status, in the lines and in the JSON, the untouched file stays ok, and the exit status
/// is non-zero. Plaintext never appears in the output.
#[test]
fn verify_names_every_kind_of_damage_in_a_zero_knowledge_bucket() {
    let ws = Workspace::new();
    let secret = b"PLAINTEXT-MARKER-Jane-Doe".repeat(4000);
    ws.write_plain("study/CT/1.dcm", &secret);
    ws.write_plain("study/CT/2.dcm", &pattern(200_000, 2));
    ws.write_plain("study/CT/3.dcm", &pattern(70_000, 3));
    ws.write_plain("study/notes.txt", b"fine");
    let bucket = ws.bucket();
    let bucket_arg = bucket.to_str().unwrap();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain().join("study"))
            .args(["--out", bucket_arg, "-i"])
            .arg(&ws.identity),
    );
    // A file sealed to someone else alone, in the same manifest.
    let (_, other) = stranger(&ws);
    ws.write_plain("theirs.txt", b"not for us");
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain().join("theirs.txt"))
            .args(["--out", bucket_arg, "--to", &other, "-i"])
            .arg(&ws.identity),
    );

    let (clean, document) = verify_json(&ws, bucket_arg, &["--jobs", "2"]);
    let counts = &document["counts"];
    assert!(!clean, "{document}");
    assert_eq!(
        problems(&document),
        vec![("theirs.txt".into(), "unreadable".into())]
    );
    assert_eq!(counts["ok"], 4, "{document}");

    let objects = objects(&ws, bucket_arg);
    flip_bit(&bucket.join(key_of(&objects, "CT/1.dcm")), 30_000);
    truncate(&bucket.join(key_of(&objects, "CT/2.dcm")), 1000);
    let orphan = bucket.join("obj/00/00000000000000000000000000000000");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::copy(bucket.join(key_of(&objects, "CT/3.dcm")), &orphan).unwrap();

    let out = verify(&ws, bucket_arg, &[]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (status, what) in [
        ("tampered: ", "(CT/1.dcm): chunk "),
        ("truncated: ", "(CT/2.dcm): object is "),
        ("unreadable with this identity: ", "(theirs.txt)"),
        (
            "orphaned: obj/00/00000000000000000000000000000000",
            "no manifest entry",
        ),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(status) && l.contains(what)),
            "no {status}…{what} in\n{stdout}"
        );
    }
    let summary = lines.last().unwrap();
    assert!(
        summary.contains("6 objects; 2 ok, 1 tampered, 1 truncated, 1 unreadable"),
        "{summary}"
    );
    assert!(
        summary.contains("1 orphaned") && summary.contains("MB/s"),
        "{summary}"
    );
    assert!(
        text(&out.stderr).contains("4 of 6 objects"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !stdout.contains("PLAINTEXT-MARKER") && !text(&out.stderr).contains("PLAINTEXT-MARKER")
    );

    let (clean, document) = verify_json(&ws, bucket_arg, &[]);
    assert!(!clean);
    assert_eq!(document["layout"], "v2");
    assert_eq!(document["clean"], false);
    assert_eq!(
        problems(&document),
        vec![
            ("-".into(), "orphaned".into()),
            ("CT/1.dcm".into(), "tampered".into()),
            ("CT/2.dcm".into(), "truncated".into()),
            ("theirs.txt".into(), "unreadable".into()),
        ]
    );
}

/// A clean bucket exits 0 and says so; so does one after `share` (detached headers).
#[test]
fn a_clean_bucket_passes_also_after_share() {
    let ws = Workspace::new();
    for i in 0..20 {
        ws.write_plain(&format!("s/{i}.bin"), &pattern(i * 9_000, i as u8));
    }
    let bucket = ws.bucket();
    let bucket_arg = bucket.to_str().unwrap();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--out", bucket_arg, "--chunk-size", "4K", "-i"])
            .arg(&ws.identity),
    );
    let out = run_ok(&mut {
        let mut cmd = ws.smpfs();
        cmd.args(["verify", bucket_arg, "-i"]).arg(&ws.identity);
        cmd
    });
    let stdout = text(&out.stdout);
    assert!(stdout.contains("20 objects; 20 ok, 0 tampered"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let (_, other) = stranger(&ws);
    run_ok(
        ws.smpfs()
            .args(["share", bucket_arg, "--add", &other, "-i"])
            .arg(&ws.identity),
    );
    let (clean, document) = verify_json(&ws, bucket_arg, &["--jobs", "3"]);
    assert!(clean, "{document}");
    assert_eq!(document["counts"]["ok"], 20);
    assert_eq!(document["problems"].as_array().unwrap().len(), 0);
}

/// In a v1 bucket, a file sealed to someone else is unreadable and a flipped chunk byte is
/// tampering; the other files verify.
#[test]
fn verify_checks_a_v1_bucket() {
    let ws = Workspace::new();
    ws.write_plain("a/1.bin", &pattern(150_000, 1));
    ws.write_plain("a/2.bin", &pattern(10, 2));
    ws.seal_all();
    let (_, other) = stranger(&ws);
    let theirs = ws.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("t.bin"), pattern(5000, 3)).unwrap();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(&theirs)
            .args(["--to", &other, "--out"])
            .arg(ws.bucket()),
    );
    let bucket_arg = ws.bucket().to_str().unwrap().to_owned();
    let (clean, document) = verify_json(&ws, &bucket_arg, &[]);
    assert!(!clean);
    assert_eq!(document["layout"], "v1");
    assert_eq!(document["problems"][0]["key"], "t.bin");
    assert_eq!(document["problems"][0]["status"], "unreadable");

    flip_bit(&ws.bucket().join("a/1.bin"), 5);
    let out = verify(&ws, &bucket_arg, &[]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tampered: a/1.bin: chunk 2 failed authentication"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unreadable with this identity: t.bin"),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap();
    let ok = document_ok_count(&ws, &bucket_arg);
    assert_eq!(ok, count_files(&ws.bucket()) - 2, "{summary}");
}

fn document_ok_count(ws: &Workspace, bucket: &str) -> u64 {
    verify_json(ws, bucket, &[]).1["counts"]["ok"]
        .as_u64()
        .unwrap()
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        n += if path.is_dir() { count_files(&path) } else { 1 };
    }
    n
}

/// An S3 bucket on moto: clean, it passes; with one byte of one object changed through
/// the S3 API, that object is tampered and the command fails. `info` reads the object by
/// URL.
#[test]
fn verify_and_info_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("vscans");
    let ws = Workspace::new();
    ws.write_plain("CT/1.dcm", &pattern(300_000, 1));
    ws.write_plain("CT/2.dcm", &pattern(1_000, 2));
    let endpoint = moto.endpoint_option();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--out", "s3://vscans/site", "-o", &endpoint, "-i"])
            .arg(&ws.identity),
    );
    let (clean, document) = verify_json(&ws, "s3://vscans/site", &["-o", &endpoint]);
    assert!(clean, "{document}");
    assert_eq!(document["counts"]["ok"], 2);
    assert_eq!(document["bucket"], "s3://vscans/site/");

    let listing = moto.python(
        "for o in s3.list_objects_v2(Bucket='vscans', Prefix='site/obj/')['Contents']:\n\
         \x20   print(o['Key'], o['Size'])",
    );
    let (key, _) = listing
        .lines()
        .map(|l| l.split_once(' ').unwrap())
        .max_by_key(|(_, size)| size.parse::<u64>().unwrap())
        .unwrap();
    let out = run_ok(
        ws.smpfs()
            .args(["info", &format!("s3://vscans/{key}"), "-o", &endpoint, "-i"])
            .arg(&ws.identity),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("plaintext size  300000 bytes"), "{stdout}");
    assert!(stdout.contains("1 stanzas"), "{stdout}");
    assert!(
        stdout.contains("this identity opens one of them"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("bound path      {key} (matches where it is)")),
        "{stdout}"
    );

    moto.python(&format!(
        "b = bytearray(s3.get_object(Bucket='vscans', Key='{key}')['Body'].read())\n\
         b[len(b) // 2] ^= 0x80\n\
         s3.put_object(Bucket='vscans', Key='{key}', Body=bytes(b))\n"
    ));
    let (clean, document) = verify_json(&ws, "s3://vscans/site", &["-o", &endpoint]);
    assert!(!clean);
    let relative = key.strip_prefix("site/").unwrap();
    assert_eq!(document["problems"][0]["key"], relative, "{document}");
    assert_eq!(document["problems"][0]["status"], "tampered");
    assert_eq!(document["counts"]["ok"], 1);
}

/// `info` on a local sealed file: the stanza count, whether this identity opens it, the
/// bound path and sizes; with an identity that is not a recipient, no path; `--path` in a
/// v2 bucket checks the manifest entry; `--json` has the same facts.
#[test]
fn info_prints_the_header_and_recipient_stanzas() {
    let ws = Workspace::new();
    ws.write_plain("CT/1.dcm", &pattern(100_000, 1));
    let (stranger_id, other) = stranger(&ws);
    let third = Identity::generate().recipient().to_string();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--layout", "v1", "--chunk-size", "16K", "--out"])
            .arg(ws.bucket())
            .args(["--to", &ws.recipient, "--to", &third]),
    );
    let file = ws.bucket().join("CT/1.dcm");
    let info = |identity: &Path, extra: &[&str]| {
        let out = run_ok(
            ws.smpfs()
                .arg("info")
                .arg(&file)
                .arg("-i")
                .arg(identity)
                .args(extra),
        );
        text(&out.stdout)
    };
    let mine = info(&ws.identity, &[]);
    for expected in [
        "format version  1",
        "chunk size      16384 bytes",
        "plaintext size  100000 bytes (7 chunks)",
        "2 stanzas",
        "this identity opens one of them",
        "bound path      bucket/CT/1.dcm (matches where it is)",
        "(as the header says)",
    ] {
        assert!(mine.contains(expected), "no {expected:?} in\n{mine}");
    }
    let theirs = info(&stranger_id, &[]);
    assert!(theirs.contains("none opens with this identity"), "{theirs}");
    assert!(!theirs.contains("bound path"), "{theirs}");

    let json: serde_json::Value = serde_json::from_str(&info(&ws.identity, &["--json"])).unwrap();
    assert_eq!(json["stanzas"], 2);
    assert_eq!(json["opens"], "yes");
    assert_eq!(json["bound_path"], "bucket/CT/1.dcm");
    assert_eq!(json["location_matches"], true);
    assert_eq!(json["object_len"], json["expected_object_len"]);

    // A v2 bucket, by path, after `share`: the header is detached and checked.
    let v2 = ws.dir.path().join("v2");
    let v2_arg = v2.to_str().unwrap();
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--out", v2_arg, "-i"])
            .arg(&ws.identity),
    );
    run_ok(
        ws.smpfs()
            .args(["share", v2_arg, "--add", &other, "-i"])
            .arg(&ws.identity),
    );
    let out = run_ok(
        ws.smpfs()
            .args(["info", v2_arg, "--path", "CT/1.dcm", "-i"])
            .arg(&ws.identity),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("header object   hdr/"), "{stdout}");
    assert!(stdout.contains("2 stanzas"), "{stdout}");
    // The bucket's recipients, from its manifest: the header alone cannot name them.
    assert!(
        stdout.contains(&format!(
            "bucket seals to 2 recipients: {}, {other}",
            ws.recipient
        )),
        "{stdout}"
    );
    // A v1 bucket by path: its sealed recipient list.
    let v1_out = run_ok(
        ws.smpfs()
            .arg("info")
            .arg(ws.bucket())
            .args(["--path", "CT/1.dcm", "-i"])
            .arg(&ws.identity),
    );
    let v1 = text(&v1_out.stdout);
    assert!(
        v1.contains(&format!(
            "bucket seals to 2 recipients: {}, {third}",
            ws.recipient
        )),
        "{v1}"
    );
    assert!(
        stdout.contains("header hash matches, file id matches, object length matches"),
        "{stdout}"
    );
    let missing = ws
        .smpfs()
        .args(["info", v2_arg, "--path", "CT/9.dcm", "-i"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no file \"CT/9.dcm\""));
}
