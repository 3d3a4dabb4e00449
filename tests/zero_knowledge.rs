//! Zero-knowledge (v2) buckets through the CLI and real mounts: nothing identifying in
//! the store (local and S3 on moto), byte-exact reads, a live mount following seals and
//! removals, rollback and swap detection, concurrent sealers, migration from v1, and
//! damaged or foreign manifests.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{files_below, pattern, run_ok, Workspace};

/// Names a hospital tree really has: a patient name, an MRN, a DICOM UID and a date.
const PHI: [&str; 4] = [
    "Jane Doe",
    "MRN-84421907",
    "1.2.840.113619.2.55.3.604688119",
    "2024-03-01",
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes a small study whose folder and file names carry [`PHI`]; returns its paths
/// relative to `plain/` with their contents.
fn write_study(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    let files = [
        (
            format!(
                "Patient {} {}/CT {}/{}.1.dcm",
                PHI[0], PHI[1], PHI[3], PHI[2]
            ),
            pattern(300_000, 1),
        ),
        (
            format!(
                "Patient {} {}/CT {}/{}.2.dcm",
                PHI[0], PHI[1], PHI[3], PHI[2]
            ),
            pattern(70_000, 2),
        ),
        (
            format!("Patient {} {}/notes.txt", PHI[0], PHI[1]),
            PHI.join(" ").into_bytes(),
        ),
        ("empty".to_owned(), Vec::new()),
    ];
    for (path, data) in &files {
        ws.write_plain(path, data);
    }
    files.into_iter().collect()
}

/// `smpfs seal plain/… --out OUT -i ID` plus `extra`.
fn seal(ws: &Workspace, source: &Path, out: &str, extra: &[&str]) -> Command {
    let mut cmd = ws.smpfs();
    cmd.arg("seal")
        .arg(source)
        .args(["--out", out, "-i"])
        .arg(&ws.identity)
        .args(extra);
    cmd
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no name and no byte in `objects` carries any of [`PHI`].
fn assert_no_phi(objects: &[(String, Vec<u8>)]) {
    assert!(!objects.is_empty());
    for (name, bytes) in objects {
        for secret in PHI {
            assert!(
                !name.contains(secret),
                "object name {name:?} leaks {secret:?}"
            );
            assert!(
                !contains(bytes, secret.as_bytes()),
                "object {name:?} holds {secret:?}"
            );
        }
    }
}

fn assert_mount_reads(mnt: &Path, files: &[(String, Vec<u8>)]) {
    for (path, data) in files {
        let read = std::fs::read(mnt.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(read == *data, "{path} differs through the mount");
    }
}

/// Waits until `check` holds, for up to `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

#[test]
fn a_local_bucket_holds_nothing_identifying_and_mounts_byte_exact() {
    let ws = Workspace::new();
    let files = write_study(&ws);
    let out = run_ok(&mut seal(
        &ws,
        &ws.plain(),
        ws.bucket().to_str().unwrap(),
        &["--pad"],
    ));
    assert!(stderr(&out).contains("sealed 4 new"), "{}", stderr(&out));
    let objects = files_below(&ws.bucket());
    assert_no_phi(&objects);
    // Four objects, the manifest's first generation and its head: no directory per folder.
    let names: Vec<&str> = objects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("obj/")).count(),
        4,
        "{names:?}"
    );
    assert!(names.contains(&"manifest/0000000000000001") && names.contains(&"manifest/head"));
    // Padded: the 300 000-byte file is sealed as Padmé(300 000) = 303 104 bytes of plaintext.
    let sizes: Vec<usize> = objects
        .iter()
        .filter(|(n, _)| n.starts_with("obj/"))
        .map(|(_, b)| b.len())
        .collect();
    assert!(
        sizes.iter().any(|&s| s > 303_104 && s < 303_104 + 1000),
        "{sizes:?}"
    );

    let listed = run_ok(
        ws.smpfs()
            .arg("ls")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity),
    );
    let listing = String::from_utf8_lossy(&listed.stdout);
    for (path, data) in &files {
        assert!(
            listing.lines().any(|l| l.ends_with(path.as_str())
                && l.trim_start().starts_with(&data.len().to_string())),
            "{path} missing from ls:\n{listing}"
        );
    }

    let mount = ws.mount(&[]);
    assert_mount_reads(&ws.mnt(), &files);
    let meta = std::fs::metadata(ws.mnt().join(&files[0].0)).unwrap();
    assert_eq!(meta.len(), 300_000, "padding is not shown");
    drop(mount);

    let cat = run_ok(
        ws.smpfs()
            .arg("cat")
            .arg(ws.bucket())
            .arg(&files[1].0)
            .arg("-i")
            .arg(&ws.identity),
    );
    assert!(cat.stdout == files[1].1);
}

#[test]
fn an_s3_bucket_holds_nothing_identifying_and_mounts_byte_exact() {
    let moto = Moto::start();
    moto.create_bucket("zk-scans");
    let ws = Workspace::new();
    let files = write_study(&ws);
    let endpoint = moto.endpoint_option();
    run_ok(&mut seal(
        &ws,
        &ws.plain(),
        "s3://zk-scans/site-a",
        &["-o", &endpoint],
    ));
    let dump = moto.python(
        "import binascii\n\
         r = s3.list_objects_v2(Bucket='zk-scans')\n\
         for o in r.get('Contents', []):\n\
         \x20   body = s3.get_object(Bucket='zk-scans', Key=o['Key'])['Body'].read()\n\
         \x20   print(o['Key'], binascii.hexlify(body).decode())\n",
    );
    let objects: Vec<(String, Vec<u8>)> = dump
        .lines()
        .map(|line| {
            let (key, hex) = line.split_once(' ').unwrap();
            (key.to_owned(), hex::decode(hex).unwrap())
        })
        .collect();
    assert_eq!(
        objects.len(),
        6,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    assert_no_phi(&objects);

    let mount = ws.mount_source("s3://zk-scans/site-a", &[&endpoint]);
    assert_mount_reads(&ws.mnt(), &files);
    drop(mount);
}

#[test]
fn a_live_mount_shows_new_files_and_drops_removed_ones() {
    let ws = Workspace::new();
    ws.write_plain("study/1.dcm", &pattern(5000, 1));
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    let mount = ws.mount(&["refresh=1s"]);
    let mnt = ws.mnt();
    assert!(mnt.join("study/1.dcm").exists());
    // Keep a handle open on the version that will be replaced.
    let mut old = std::fs::File::open(mnt.join("study/1.dcm")).unwrap();
    let mut first = vec![0u8; 100];
    old.read_exact(&mut first).unwrap();

    let later = ws.dir.path().join("later");
    std::fs::create_dir_all(later.join("study")).unwrap();
    std::fs::write(later.join("study/2.dcm"), pattern(7000, 2)).unwrap();
    std::fs::write(later.join("study/1.dcm"), pattern(9000, 3)).unwrap();
    run_ok(&mut seal(&ws, &later, &bucket, &[]));
    assert!(
        eventually(Duration::from_secs(10), || mnt.join("study/2.dcm").exists()),
        "a sealed file did not appear: {}",
        mount.log_text()
    );
    assert!(std::fs::read(mnt.join("study/2.dcm")).unwrap() == pattern(7000, 2));
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read(
            mnt.join("study/1.dcm")
        )
        .is_ok_and(|d| d == pattern(9000, 3))),
        "the replaced file is not shown"
    );
    // The handle opened before keeps its version, or fails: never the new bytes.
    let mut rest = Vec::new();
    match old.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest == pattern(5000, 1)[100..],
            "an open file mixed versions"
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    drop(old);

    run_ok(
        ws.smpfs()
            .arg("rm")
            .arg(&bucket)
            .arg("study/2.dcm")
            .arg("-i")
            .arg(&ws.identity),
    );
    let forced = run_ok(ws.smpfs().arg("refresh").arg(&mnt));
    assert!(
        String::from_utf8_lossy(&forced.stdout).contains("1 removed"),
        "{}",
        String::from_utf8_lossy(&forced.stdout)
    );
    assert!(
        !mnt.join("study/2.dcm").exists(),
        "a removed file is still shown"
    );
    let listing: Vec<_> = std::fs::read_dir(mnt.join("study"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listing, ["1.dcm"]);
    // An unchanged manifest: nothing to do.
    let again = run_ok(ws.smpfs().arg("refresh").arg(&mnt));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 added, 0 removed, 0 replaced"));
    assert!(mount.unmount().success());
    let log = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap_or_default();
    let refreshes = log
        .lines()
        .filter(|l| l.contains("\"event\":\"refresh\""))
        .count();
    assert!(refreshes >= 3, "refreshes are audited:\n{log}");
    common::assert_audit_verifies(&ws.dir.path().join("audit.log"), &ws.identity);
}

#[test]
fn a_replayed_older_manifest_is_refused() {
    let ws = Workspace::new();
    ws.write_plain("a", b"first");
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    let saved = ws.dir.path().join("saved");
    copy_dir(&ws.bucket(), &saved);
    ws.write_plain("b", b"second");
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    drop(ws.mount(&[]));
    // The store serves the bucket as it was at generation 1.
    std::fs::remove_dir_all(ws.bucket()).unwrap();
    copy_dir(&saved, &ws.bucket());
    let out = ws.mount_command().arg("-f").output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing manifest generation 1")
            && stderr(&out).contains("already seen generation 2"),
        "{}",
        stderr(&out)
    );
    assert!(!common::is_mounted(&ws.mnt()));
    // Deleting the manifest altogether does not make it a v1 bucket either.
    std::fs::remove_dir_all(ws.bucket().join("manifest")).unwrap();
    let out = ws.mount_command().arg("-f").output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("its manifest was deleted"),
        "{}",
        stderr(&out)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, data) in files_below(from) {
        let path = to.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// The object key of `path` in the bucket of `ws`, from `smpfs ls`-independent means:
/// the xattr-free way is to find the object whose header hash the manifest binds, so this
/// reads the manifest through the library.
fn object_of(ws: &Workspace, path: &str) -> PathBuf {
    let backend: std::sync::Arc<dyn smpfs::backend::Backend> =
        std::sync::Arc::new(smpfs::backend::LocalBackend::open(&ws.bucket()).unwrap());
    let store = smpfs::bucket::ManifestStore::new(backend, None);
    let identity = smpfs::keys::Identity::load(&ws.identity).unwrap();
    let manifest = store.load(&identity).unwrap().unwrap();
    ws.bucket().join(manifest.entries[path].object_key())
}

#[test]
fn a_swapped_or_deleted_object_fails_that_file_only() {
    let ws = Workspace::new();
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        ws.write_plain(name, &pattern(20_000, seed));
    }
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    let (a, b, c) = (
        object_of(&ws, "a"),
        object_of(&ws, "b"),
        object_of(&ws, "c"),
    );
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bytes_b).unwrap();
    std::fs::write(&b, &bytes_a).unwrap();
    std::fs::remove_file(&c).unwrap();
    let mount = ws.mount(&[]);
    for name in ["a", "b", "c"] {
        let err = std::fs::read(ws.mnt().join(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
    }
    assert!(std::fs::read(ws.mnt().join("d")).unwrap() == pattern(20_000, 4));
    let names: Vec<_> = std::fs::read_dir(ws.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "the manifest still lists every file: {names:?}"
    );
    drop(mount);
    let log = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("integrity_failure") && l.contains("\"path\":\"a\"")),
        "{log}"
    );
}

#[test]
fn two_sealers_at_once_lose_no_entry() {
    let moto = Moto::start();
    moto.create_bucket("zk-scans");
    let endpoint = moto.endpoint_option();
    let ws = Workspace::new();
    for writer in ["x", "y"] {
        for n in 0..25 {
            ws.write_plain(
                &format!("{writer}/{writer}-{n}.dcm"),
                &pattern(3000 + n, n as u8),
            );
        }
    }
    let local = ws.bucket().to_str().unwrap().to_owned();
    for out in [local.as_str(), "s3://zk-scans/both"] {
        let sealers: Vec<_> = ["x", "y"]
            .iter()
            .map(|writer| {
                seal(&ws, &ws.plain().join(writer), out, &["-o", &endpoint])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for sealer in sealers {
            let out = sealer.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let listed = run_ok(
            ws.smpfs()
                .args(["ls", out, "-o", &endpoint, "-i"])
                .arg(&ws.identity),
        );
        let listing = String::from_utf8_lossy(&listed.stdout);
        assert_eq!(listing.lines().count(), 50, "{out}:\n{listing}");
    }
}

#[test]
fn migrate_turns_a_v1_bucket_into_v2_with_identical_reads() {
    let ws = Workspace::new();
    let files = write_study(&ws);
    ws.seal_all();
    let v1_key = ws.bucket().join(&files[0].0);
    assert!(v1_key.exists(), "sealed as v1");
    // A damaged v1 object stops the migration before anything is committed.
    let good = std::fs::read(&v1_key).unwrap();
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&v1_key, &bad).unwrap();
    let migrate = |ws: &Workspace| {
        ws.smpfs()
            .arg("migrate")
            .arg(ws.bucket())
            .arg("-i")
            .arg(&ws.identity)
            .output()
            .unwrap()
    };
    let failed = migrate(&ws);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("nothing was committed"),
        "{}",
        stderr(&failed)
    );
    assert!(!ws.bucket().join("manifest").exists());
    std::fs::write(&v1_key, &good).unwrap();
    let done = migrate(&ws);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("migrated 4 files"),
        "{}",
        stderr(&done)
    );
    let objects = files_below(&ws.bucket());
    assert_no_phi(&objects);
    assert!(objects.iter().all(|(n, _)| !n.starts_with("migrate/")));
    let mount = ws.mount(&[]);
    assert_mount_reads(&ws.mnt(), &files);
    drop(mount);
    // Running it again is harmless.
    let again = migrate(&ws);
    assert!(again.status.success() && stderr(&again).contains("already a v2 bucket"));
}

/// Seals `bytes` as the manifest segment of generation 2 and points the head at it.
fn plant_generation_2(ws: &Workspace, bytes: &[u8], to: smpfs::keys::Recipient) {
    let backend: std::sync::Arc<dyn smpfs::backend::Backend> =
        std::sync::Arc::new(smpfs::backend::LocalBackend::open(&ws.bucket()).unwrap());
    let key = smpfs::bucket::segment_key(2);
    let object = smpfs::seal::NewObject {
        key: &key,
        source: Path::new("planted"),
        size: bytes.len() as u64,
        sealed_len: bytes.len() as u64,
        overwrite: true,
    };
    let options = smpfs::seal::SealOptions {
        recipients: vec![to],
        chunk_log2: 16,
        overwrite: true,
    };
    smpfs::seal::write_object(&backend, &object, &mut &bytes[..], &options, &|_| {}).unwrap();
    std::fs::write(
        ws.bucket().join("manifest/head"),
        "smpfs manifest v2 generation 2\n",
    )
    .unwrap();
}

#[test]
fn damaged_foreign_or_unknown_manifests_mount_nothing() {
    let ws = Workspace::new();
    ws.write_plain("a", b"data");
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    let me = smpfs::keys::Identity::load(&ws.identity)
        .unwrap()
        .recipient();
    let segment = smpfs::manifest::Segment {
        kind: smpfs::manifest::Kind::Delta,
        generation: 2,
        snapshot: 1,
        recipients: vec![me],
        ops: Vec::new(),
    };
    let mut future = segment.encode();
    future[8] = 9;
    let stranger = smpfs::keys::Identity::generate().recipient();
    let segment_path = ws.bucket().join("manifest/0000000000000002");
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "unsupported manifest version 9",
            Box::new(|| plant_generation_2(&ws, &future, me)),
        ),
        (
            "not sealed to this identity",
            Box::new(|| plant_generation_2(&ws, &segment.encode(), stranger)),
        ),
        (
            "manifest segment is truncated",
            Box::new(|| plant_generation_2(&ws, &segment.encode()[..30], me)),
        ),
        (
            "failed authentication",
            Box::new(|| {
                plant_generation_2(&ws, &segment.encode(), me);
                let mut bytes = std::fs::read(&segment_path).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x40;
                std::fs::write(&segment_path, bytes).unwrap();
            }),
        ),
        (
            "but its header says",
            Box::new(|| {
                plant_generation_2(&ws, &segment.encode(), me);
                let bytes = std::fs::read(&segment_path).unwrap();
                std::fs::write(&segment_path, &bytes[..bytes.len() - 5]).unwrap();
            }),
        ),
    ];
    for (expected, damage) in cases {
        damage();
        // A state file that saw generation 2 would refuse generation 1 anyway: start afresh.
        let _ = std::fs::remove_dir_all(ws.state());
        let out = ws.mount_command().arg("-f").output().unwrap();
        assert!(!out.status.success(), "{expected}: mounted");
        assert!(
            stderr(&out).contains(expected) && stderr(&out).contains("manifest"),
            "{expected}: {}",
            stderr(&out)
        );
        assert!(!common::is_mounted(&ws.mnt()));
    }
}

/// Another reader's identity, saved beside the workspace's.
fn second_identity(ws: &Workspace) -> (PathBuf, smpfs::keys::Identity) {
    let path = ws.dir.path().join("other.key");
    let identity = smpfs::keys::Identity::generate();
    identity.save_new(&path, None).unwrap();
    (path, identity)
}

fn object_keys(ws: &Workspace) -> std::collections::BTreeSet<String> {
    files_below(&ws.bucket())
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("obj/"))
        .collect()
}

#[test]
fn rotate_reseals_every_object_and_shuts_out_a_removed_reader() {
    let ws = Workspace::new();
    let files = write_study(&ws);
    let (other_path, other) = second_identity(&ws);
    let other_recipient = other.recipient().to_string();
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(
        &ws,
        &ws.plain(),
        &bucket,
        &["--to", &ws.recipient, "--to", &other_recipient],
    ));
    let cat_as = |identity: &Path, path: &str| {
        ws.smpfs()
            .args(["cat", &bucket, path, "-i"])
            .arg(identity)
            .output()
            .unwrap()
    };
    assert!(cat_as(&other_path, &files[0].0).stdout == files[0].1);
    let before = object_keys(&ws);

    let rotate = |extra: &[&str]| {
        ws.smpfs()
            .args(["rotate", &bucket, "-i"])
            .arg(&ws.identity)
            .args(extra)
            .output()
            .unwrap()
    };
    let stranger = smpfs::keys::Identity::generate().recipient().to_string();
    for (refused, why) in [
        (rotate(&["--remove", &stranger]), "is not a recipient"),
        (rotate(&["--remove", &ws.recipient]), "could not read"),
    ] {
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains(why), "{}", stderr(&refused));
        assert_eq!(
            object_keys(&ws),
            before,
            "a refused rotation changed the bucket"
        );
    }

    let rotated = rotate(&["--remove", &other_recipient]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(
        stderr(&rotated).contains("rotated 4 files"),
        "{}",
        stderr(&rotated)
    );
    let after = object_keys(&ws);
    assert_eq!(after.len(), before.len());
    assert!(after.is_disjoint(&before), "an object was kept as it was");
    let left: Vec<String> = files_below(&ws.bucket())
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with("obj/") && !name.starts_with("manifest/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for (path, data) in &files {
        assert!(cat_as(&ws.identity, path).stdout == *data, "{path} changed");
    }
    let shut_out = cat_as(&other_path, &files[0].0);
    assert!(!shut_out.status.success());
    assert!(
        stderr(&shut_out).contains("not sealed to this identity"),
        "{}",
        stderr(&shut_out)
    );
    // Its old keys open none of the new objects.
    let backend: std::sync::Arc<dyn smpfs::backend::Backend> =
        std::sync::Arc::new(smpfs::backend::LocalBackend::open(&ws.bucket()).unwrap());
    for key in &after {
        let len = std::fs::metadata(ws.bucket().join(key)).unwrap().len();
        let opened = smpfs::vault::SealedObject::open(
            std::sync::Arc::clone(&backend),
            key,
            len,
            &other,
            0,
            4096,
            None,
        );
        assert!(opened.is_err(), "{key} opens for the removed reader");
    }
    let listed = run_ok(
        ws.smpfs()
            .args(["recipients", &bucket, "-i"])
            .arg(&ws.identity),
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), ws.recipient);
    let mount = ws.mount(&[]);
    assert_mount_reads(&ws.mnt(), &files);
    drop(mount);
}

#[test]
fn an_s3_mount_follows_seals_and_removals() {
    let moto = Moto::start();
    moto.create_bucket("zk-scans");
    let endpoint = moto.endpoint_option();
    let ws = Workspace::new();
    ws.write_plain("first/1.dcm", &pattern(4000, 1));
    let bucket = "s3://zk-scans/live";
    run_ok(&mut seal(&ws, &ws.plain(), bucket, &["-o", &endpoint]));
    let mount = ws.mount_source(bucket, &[&endpoint, "refresh=1s"]);
    let mnt = ws.mnt();
    assert!(std::fs::read(mnt.join("first/1.dcm")).unwrap() == pattern(4000, 1));
    let later = ws.dir.path().join("later");
    std::fs::create_dir_all(later.join("second")).unwrap();
    std::fs::write(later.join("second/2.dcm"), pattern(6000, 2)).unwrap();
    run_ok(&mut seal(&ws, &later, bucket, &["-o", &endpoint]));
    assert!(
        eventually(Duration::from_secs(10), || mnt
            .join("second/2.dcm")
            .exists()),
        "{}",
        mount.log_text()
    );
    assert!(std::fs::read(mnt.join("second/2.dcm")).unwrap() == pattern(6000, 2));
    run_ok(
        ws.smpfs()
            .args(["rm", bucket, "first", "-o", &endpoint, "-i"])
            .arg(&ws.identity),
    );
    assert!(
        eventually(Duration::from_secs(10), || !mnt.join("first").exists()),
        "a removed directory is still shown"
    );
    drop(mount);
}

/// Every object's key and bytes in the bucket (local) or key and ETag (S3).
fn fingerprints(
    ws: &Workspace,
    moto: &Moto,
    out: &str,
) -> std::collections::BTreeMap<String, String> {
    match out.strip_prefix("s3://zk-scans/") {
        Some(prefix) => moto
            .python(&format!(
                "r = s3.list_objects_v2(Bucket='zk-scans', Prefix='{prefix}/')\n\
                 for o in r.get('Contents', []):\n\
                 \x20   print(o['Key'], o['ETag'], o['Size'])\n"
            ))
            .lines()
            .map(|l| {
                let (key, rest) = l.split_once(' ').unwrap();
                (key.to_owned(), rest.to_owned())
            })
            .collect(),
        None => files_below(&ws.bucket())
            .into_iter()
            .map(|(name, bytes)| (name, blake3::hash(&bytes).to_hex().to_string()))
            .collect(),
    }
}

#[test]
fn share_adds_and_removes_readers_without_sending_a_chunk_again() {
    let moto = Moto::start();
    moto.create_bucket("zk-scans");
    let endpoint = moto.endpoint_option();
    let ws = Workspace::new();
    let files = write_study(&ws);
    let (other_path, other) = second_identity(&ws);
    let other_recipient = other.recipient().to_string();
    let local = ws.bucket().to_str().unwrap().to_owned();
    for out in [local.as_str(), "s3://zk-scans/shared"] {
        run_ok(&mut seal(&ws, &ws.plain(), out, &["-o", &endpoint]));
        let cat_as = |identity: &Path, path: &str| {
            ws.smpfs()
                .args(["cat", out, path, "-o", &endpoint, "-i"])
                .arg(identity)
                .output()
                .unwrap()
        };
        let share = |flag: &str| {
            ws.smpfs()
                .args(["share", out, flag, &other_recipient, "-o", &endpoint, "-i"])
                .arg(&ws.identity)
                .output()
                .unwrap()
        };
        assert!(!cat_as(&other_path, &files[0].0).status.success());
        let before = fingerprints(&ws, &moto, out);
        let added = share("--add");
        assert!(added.status.success(), "{}", stderr(&added));
        assert!(
            stderr(&added).contains("no chunk sent again"),
            "{}",
            stderr(&added)
        );
        let after = fingerprints(&ws, &moto, out);
        // Every file object is byte for byte (ETag for ETag) what it was; what is new is
        // one small header per file and the manifest.
        for (key, print) in before.iter().filter(|(k, _)| k.contains("obj/")) {
            assert_eq!(after.get(key), Some(print), "{out}: {key} was rewritten");
        }
        let headers: Vec<_> = after.keys().filter(|k| k.contains("hdr/")).collect();
        assert_eq!(headers.len(), files.len(), "{out}: {headers:?}");
        for (path, data) in &files {
            assert!(cat_as(&other_path, path).stdout == *data, "{out}: {path}");
            assert!(cat_as(&ws.identity, path).stdout == *data, "{out}: {path}");
        }
        // Sharing again with a recipient already there changes nothing.
        let again = share("--add");
        assert!(
            stderr(&again).contains("nothing was changed"),
            "{}",
            stderr(&again)
        );
        assert_eq!(fingerprints(&ws, &moto, out), after);

        let removed = share("--remove");
        assert!(removed.status.success(), "{}", stderr(&removed));
        assert!(
            stderr(&removed).contains("smpfs rotate --remove"),
            "{}",
            stderr(&removed)
        );
        let shut_out = cat_as(&other_path, &files[0].0);
        assert!(!shut_out.status.success());
        assert!(stderr(&shut_out).contains("not sealed to this identity"));
        let last = fingerprints(&ws, &moto, out);
        assert_eq!(
            last.keys().filter(|k| k.contains("hdr/")).count(),
            files.len(),
            "the replaced headers were not deleted"
        );
        for (key, print) in before.iter().filter(|(k, _)| k.contains("obj/")) {
            assert_eq!(last.get(key), Some(print), "{out}: {key} was rewritten");
        }
        for (path, data) in &files {
            assert!(cat_as(&ws.identity, path).stdout == *data, "{out}: {path}");
        }
        if out == local {
            // A shared bucket mounts.
            let mount = ws.mount(&[]);
            assert_mount_reads(&ws.mnt(), &files);
            drop(mount);
        }
        // Rotating gives every file a new object with its header attached again.
        run_ok(
            ws.smpfs()
                .args(["rotate", out, "-o", &endpoint, "-i"])
                .arg(&ws.identity),
        );
        let rotated = fingerprints(&ws, &moto, out);
        assert!(
            rotated.keys().all(|k| !k.contains("hdr/")),
            "{out}: {rotated:?}"
        );
        assert!(
            before
                .keys()
                .filter(|k| k.contains("obj/"))
                .all(|k| !rotated.contains_key(k)),
            "{out}: an object survived the rotation"
        );
        for (path, data) in &files {
            assert!(cat_as(&ws.identity, path).stdout == *data, "{out}: {path}");
        }
    }
}

#[test]
fn a_rotation_killed_halfway_resumes_to_completion() {
    let ws = Workspace::new();
    // Three journal batches of up to 1000 files.
    let count = 2100;
    for n in 0..count {
        ws.write_plain(&format!("s/{n:05}"), &pattern(64 + n % 512, n as u8));
    }
    let bucket = ws.bucket().to_str().unwrap().to_owned();
    run_ok(&mut seal(&ws, &ws.plain(), &bucket, &[]));
    let before = object_keys(&ws);
    let mut first = ws
        .smpfs()
        .args(["rotate", &bucket, "-i"])
        .arg(&ws.identity)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = ws.bucket().join("rotate/0000000000000001");
    assert!(
        eventually(Duration::from_secs(120), || journal.exists()),
        "no batch was journaled"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Killed before its commit: readers still see every old object.
    let manifest_keys = |ws: &Workspace| {
        let listed = run_ok(
            ws.smpfs()
                .args(["ls", &bucket, "--objects", "-i"])
                .arg(&ws.identity),
        );
        String::from_utf8(listed.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(manifest_keys(&ws), before);
    let resumed = run_ok(ws.smpfs().args(["rotate", &bucket, "-i"]).arg(&ws.identity));
    let message = String::from_utf8_lossy(&resumed.stderr);
    assert!(message.contains("resumed from an earlier run"), "{message}");
    assert!(!message.contains("(0 resumed"), "{message}");
    let after = manifest_keys(&ws);
    assert_eq!(after.len(), count);
    assert!(
        after.is_disjoint(&before),
        "an entry still names an old object"
    );
    // Every old object is gone and every entry's object is there. Objects the killed run
    // sealed for its unfinished batch stay, unreferenced (never shown).
    let stored = object_keys(&ws);
    assert!(stored.is_superset(&after));
    assert!(stored.is_disjoint(&before), "an old object was left");
    let mount = ws.mount(&[]);
    for n in (0..count).step_by(97) {
        let read = std::fs::read(ws.mnt().join(format!("s/{n:05}"))).unwrap();
        assert!(read == pattern(64 + n % 512, n as u8), "s/{n:05}");
    }
    drop(mount);
}
