//! The Google Drive backend against the fake Drive server (`tests/fake_gdrive.py`) on
//! loopback, through the real `google-drive3` client and real mounts: sealing trees with
//! resumable uploads, the three source forms, pagination, duplicate and hostile names,
//! native documents, revision pinning, rate limits, token refresh, dead and hung servers,
//! revoked credentials and the login flow; and, on the backend itself, what bucket layout
//! v2 needs: reads of keys no listing saw, deletes, and create-if-absent against racing
//! writers.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::gdrive::FakeDrive;
use common::{pattern, pydicom_test_files, pydicom_tree_check, read_at, run_ok, smpfs, Workspace};
use serde_json::json;
use smpfs::backend::remote::CopyIn;
use smpfs::backend::{Backend, BackendError, GDriveBackend, GDriveOptions};

/// `smpfs seal SOURCE --to RECIPIENT --out OUT -o <fake's options>`, into a bucket of the
/// default layout (v2) when OUT is new.
fn seal_to(ws: &Workspace, fake: &FakeDrive, source: &Path, out: &str) -> Command {
    let mut cmd = smpfs();
    cmd.arg("seal")
        .arg(source)
        .args(["--to", &ws.recipient, "--out", out, "-o"])
        .arg(fake.options());
    cmd
}

/// [`seal_to`] into a v1 bucket (objects under their paths), for the tests of how Drive
/// holds and names them.
fn seal_v1_to(ws: &Workspace, fake: &FakeDrive, source: &Path, out: &str) -> Command {
    let mut cmd = seal_to(ws, fake, source, out);
    cmd.args(["--layout", "v1"]);
    cmd
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A writable Drive backend on the fake at `source`, as a sealer or a mount opens one (each
/// call is another client: another writer or reader).
fn backend(fake: &FakeDrive, source: &str) -> GDriveBackend {
    let options = GDriveOptions {
        credentials: Some(fake.key.clone()),
        endpoint: Some(fake.endpoint()),
        ..GDriveOptions::default()
    };
    GDriveBackend::open(source.parse().unwrap(), &options, true).unwrap()
}

/// Stores `data` under `key` (`create`, or `create_sized` with `sized`) and commits it.
fn put(
    backend: &dyn Backend,
    key: &str,
    data: &[u8],
    overwrite: bool,
    sized: bool,
) -> Result<(), BackendError> {
    let mut writer = if sized {
        backend.create_sized(key, overwrite, data.len() as u64)?
    } else {
        backend.create(key, overwrite)?
    };
    writer.write_all(data).unwrap();
    writer.commit()
}

/// The first `len` bytes of `key`, read with `read_range`, then again with
/// `read_range_arriving` (which must agree).
fn get(backend: &dyn Backend, key: &str, len: usize) -> Result<Vec<u8>, BackendError> {
    let mut plain = vec![0u8; len];
    backend.read_range(key, 0, &mut [&mut plain])?;
    let mut arriving = vec![0u8; len];
    backend.read_range_arriving(key, 0, &mut [&mut arriving], &CopyIn)?;
    assert!(plain == arriving, "{key}: the two reads differ");
    Ok(plain)
}

/// Files of many sizes (one chunk, chunk boundaries, several upload chunks) sealed to a
/// path in My Drive read back byte-exact through the path, a folder id with a path below
/// it, and a shared drive; a re-run keeps everything and creates no duplicates.
#[test]
fn sealed_trees_read_back_exactly_through_every_source_form() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let sizes = [1usize, 65_535, 65_536, 65_537, 3 << 20, (17 << 20) + 12_345];
    for (i, size) in sizes.iter().enumerate() {
        ws.write_plain(&format!("series/{i}/slice.bin"), &pattern(*size, i as u8));
    }
    let out = run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/site-a/2026",
    ));
    assert!(
        stderr(&out).contains("sealed 6 of 6 files"),
        "{}",
        stderr(&out)
    );
    let shared = fake.admin("drive", json!({"name": "Radiology Lab"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///Shared drives/Radiology Lab/CT",
    ));
    let site = fake.id_of("site-a");
    let check = |source: &str, base: &Path| {
        let mount = ws.mount_source(source, &[&fake.options(), "audit=off"]);
        for (i, size) in sizes.iter().enumerate() {
            let path = base.join(format!("series/{i}/slice.bin"));
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", path.display(), mount.log_text()));
            assert!(
                data == pattern(*size, i as u8),
                "{} differs",
                path.display()
            );
        }
        assert!(mount.unmount().success());
    };
    check("gdrive:///My Drive/site-a/2026", &ws.mnt());
    check(&format!("gdrive://{site}"), &ws.mnt().join("2026"));
    check(&format!("gdrive://{site}/2026"), &ws.mnt());
    check(&format!("gdrive://{shared}/CT"), &ws.mnt());
    check(
        "gdrive:///Shared drives/Radiology Lab",
        &ws.mnt().join("CT"),
    );

    let again = run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/site-a/2026",
    ));
    assert!(
        stderr(&again).contains("6 files were already sealed there")
            && stderr(&again).contains("sealed 0 of 6 files"),
        "{}",
        stderr(&again)
    );
    assert_eq!(fake.named("slice.bin").len(), 12, "one per file and drive");
    assert_eq!(fake.named("series").len(), 2);
}

/// More entries than a page (the fake pages by 3), a newer duplicate of a sealed file,
/// names with `/`, `..` and NUL, and a Google Doc: the sealed files are all there under
/// their names, the copies and hostile names are hidden with warnings, the document is
/// skipped.
#[test]
fn listing_pages_and_maps_duplicate_and_hostile_names() {
    let fake = FakeDrive::start();
    fake.admin("config", json!({"page_size": 3}));
    let ws = Workspace::new();
    for i in 0..10 {
        ws.write_plain(
            &format!("many/f{i:02}.txt"),
            format!("object {i}").as_bytes(),
        );
    }
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/scans",
    ));
    let folder = fake.id_of("many");
    let original = fake.id_of("f03.txt");
    let copy = fake.admin(
        "copy",
        json!({"id": original, "parent": folder, "createdTime": "2030-01-01T00:00:00.000Z"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["a/b.txt", "..", "nul\u{0}name", ""] {
        fake.admin(
            "file",
            json!({"parent": folder, "name": name, "data": b64(b"junk")}),
        );
    }
    fake.admin(
        "file",
        json!({"parent": folder, "name": "Notes", "mimeType": "application/vnd.google-apps.document"}),
    );

    let mount = ws.mount_source("gdrive:///My Drive/scans", &[&fake.options(), "audit=off"]);
    let mut names: Vec<String> = std::fs::read_dir(ws.mnt().join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("f{i:02}.txt")).collect();
    assert_eq!(names, expected, "log:\n{}", mount.log_text());
    for i in 0..10 {
        let text = std::fs::read_to_string(ws.mnt().join(format!("many/f{i:02}.txt"))).unwrap();
        assert_eq!(text, format!("object {i}"));
    }
    let log = mount.log_text();
    // The four junk files (their names mapped, `a/b.txt` to `a∕b~ID.txt`, …) are counted in
    // the hiding warning, which quotes the first of each reason.
    for needle in [
        format!("f03~{copy}.txt"),
        "4 not valid sealed objects".to_owned(),
        "skipping a Google-native document".to_owned(),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in log:\n{log}");
    }
}

/// pydicom's bundled DICOM files, sealed to Drive and read back through the mount, are
/// byte-exact and parse with pydicom.
#[test]
fn pydicom_files_read_back_through_a_drive_mount() {
    let files = pydicom_test_files();
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    run_ok(&mut seal_to(&ws, &fake, &files, "gdrive:///My Drive/dicom"));
    let _mount = ws.mount_source("gdrive:///My Drive/dicom", &[&fake.options(), "audit=off"]);
    let out = pydicom_tree_check(&files, &ws.mnt());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("compared {}", String::from_utf8_lossy(&out.stdout));
}

/// `-o disk_cache=` on Drive: a remount reads from the cache (hits, no misses) byte-exact,
/// and a file sealed again (a new revision of the same Drive file) is fetched again, never
/// served from the old revision's pieces.
#[test]
fn the_disk_cache_serves_a_remount_and_refetches_a_new_revision() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let (old, new) = (pattern(3 << 20, 3), pattern(3 << 20, 4));
    ws.write_plain("scan.bin", &old);
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/c",
    ));
    let cache = ws.dir.path().join("cache");
    let option = format!("disk_cache={}", cache.display());
    let options = [fake.options(), option, "audit=off".to_owned()];
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let status = || -> serde_json::Value {
        let out = run_ok(ws.smpfs().arg("status").arg(ws.mnt()).arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let mount = ws.mount_source("gdrive:///My Drive/c", &options);
    assert!(std::fs::read(ws.mnt().join("scan.bin")).unwrap() == old);
    let first = status();
    assert!(
        first["disk_cache"]["misses"].as_u64().unwrap() > 0,
        "{first}"
    );
    assert!(mount.unmount().success());

    let mount = ws.mount_source("gdrive:///My Drive/c", &options);
    assert!(std::fs::read(ws.mnt().join("scan.bin")).unwrap() == old);
    let again = status();
    assert!(again["disk_cache"]["hits"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(again["disk_cache"]["misses"], 0, "{again}");
    assert!(mount.unmount().success());

    ws.write_plain("scan.bin", &new);
    let reseal = seal_v1_to(&ws, &fake, &ws.plain(), "gdrive:///My Drive/c")
        .arg("--overwrite")
        .output()
        .unwrap();
    assert!(reseal.status.success(), "{}", stderr(&reseal));
    let mount = ws.mount_source("gdrive:///My Drive/c", &options);
    assert!(
        std::fs::read(ws.mnt().join("scan.bin")).unwrap() == new,
        "served the old revision"
    );
    let replaced = status();
    assert!(
        replaced["disk_cache"]["misses"].as_u64().unwrap() > 0,
        "{replaced}"
    );
    assert!(mount.unmount().success());
}

/// A file sealed again (`--overwrite`: a new revision of the same Drive file) while it is
/// being read keeps serving the listed revision byte-exact; once Drive has dropped that
/// revision, reads fail with EIO and say the file changed: never bytes of two versions.
#[test]
fn a_file_replaced_mid_read_serves_its_listed_revision_then_fails() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let data = pattern(20 << 20, 1);
    ws.write_plain("big.bin", &data);
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/b",
    ));
    let mount = ws.mount_source("gdrive:///My Drive/b", &[&fake.options(), "audit=off"]);
    let mut file = std::fs::File::open(ws.mnt().join("big.bin")).unwrap();
    assert!(read_at(&mut file, 0, 65_536).unwrap() == data[..65_536]);

    let other = pattern(20 << 20, 9);
    ws.write_plain("big.bin", &other);
    let reseal = seal_v1_to(&ws, &fake, &ws.plain(), "gdrive:///My Drive/b")
        .arg("--overwrite")
        .output()
        .unwrap();
    assert!(reseal.status.success(), "{}", stderr(&reseal));
    let entry = &fake.named("big.bin")[0];
    assert_eq!(entry["revisions"].as_array().unwrap().len(), 2, "{entry}");

    let middle = read_at(&mut file, 10 << 20, 65_536).unwrap();
    assert!(
        middle == data[10 << 20..(10 << 20) + 65_536],
        "not the listed revision"
    );

    fake.admin("prune", json!({"id": entry["id"]}));
    let error = read_at(&mut file, 19 << 20, 65_536).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        mount.log_text().contains("changed since it was listed"),
        "log:\n{}",
        mount.log_text()
    );
}

/// Where revisions may not be read (a viewer), reads fall back to the current content and
/// check afterwards that it is still the listed revision: a replaced file gives EIO.
#[test]
fn without_revision_access_a_replaced_file_gives_eio() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let data = pattern(4 << 20, 2);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/v",
    ));
    let id = fake.id_of("scan.bin");
    fake.admin("config", json!({"forbid_revisions": [id]}));
    let mount = ws.mount_source("gdrive:///My Drive/v", &[&fake.options(), "audit=off"]);
    let mut file = std::fs::File::open(ws.mnt().join("scan.bin")).unwrap();
    assert!(read_at(&mut file, 1 << 20, 65_536).unwrap() == data[1 << 20..(1 << 20) + 65_536]);
    fake.admin(
        "replace",
        json!({"id": id, "data": b64(&pattern(4 << 20, 3))}),
    );
    let error = read_at(&mut file, 3 << 20, 65_536).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    let log = mount.log_text();
    assert!(
        log.contains("may not read revisions") && log.contains("changed since it was listed"),
        "log:\n{log}"
    );
}

/// Rate limits (403 rateLimitExceeded / userRateLimitExceeded) and 503s on listing,
/// downloads, folder creation and upload chunks are retried: sealing and reading succeed.
#[test]
fn rate_limits_and_server_errors_are_retried() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let data = pattern((9 << 20) + 7, 4);
    ws.write_plain("dir/scan.bin", &data);
    fake.faults(&[
        (403, "userRateLimitExceeded", 2, "POST /drive/v3/files"),
        (503, "backendError", 1, "/upload-session/"),
        (403, "rateLimitExceeded", 2, "POST /resumable/"),
    ]);
    let out = run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/r",
    ));
    assert!(
        stderr(&out).contains("sealed 1 of 1 files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake.stats()["faults_served"], 5);
    assert_eq!(
        fake.named("scan.bin").len(),
        1,
        "a failed upload leaves no file"
    );

    fake.faults(&[
        (503, "backendError", 2, "GET /drive/v3/files?"),
        (403, "rateLimitExceeded", 3, "alt=media"),
        (500, "backendError", 1, "alt=media"),
    ]);
    let mount = ws.mount_source("gdrive:///My Drive/r", &[&fake.options(), "audit=off"]);
    let read = std::fs::read(ws.mnt().join("dir/scan.bin"))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
    assert!(read == data);
    assert_eq!(fake.stats()["faults_served"], 11);
}

/// A token the server refuses (401) is replaced once with a fresh one and the request
/// retried; tokens that expire within a minute are renewed as they go.
#[test]
fn refused_and_expiring_tokens_are_refreshed() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let data = pattern(2 << 20, 5);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/t",
    ));
    let mount = ws.mount_source("gdrive:///My Drive/t", &[&fake.options(), "audit=off"]);
    let grants = || {
        fake.stats()["token_grants"]["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            .as_u64()
            .unwrap()
    };
    let before = grants();
    fake.faults(&[(401, "authError", 1, "alt=media")]);
    let read = std::fs::read(ws.mnt().join("scan.bin"))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
    assert!(read == data);
    assert_eq!(grants(), before + 1, "exactly one fresh token for the 401");
    assert!(mount.log_text().contains("access token refused"));
    drop(mount);

    fake.admin("config", json!({"token_ttl": 30}));
    let mount = ws.mount_source("gdrive:///My Drive/t", &[&fake.options(), "audit=off"]);
    let before = grants();
    let read = std::fs::read(ws.mnt().join("scan.bin"))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
    assert!(read == data);
    assert!(grants() > before + 1, "short-lived tokens are renewed");
}

/// A killed server and a hung one (SIGSTOP) give EIO within the timeout, not a hang; the
/// hung one's reads work again once it continues.
#[test]
fn dead_or_hung_servers_give_eio_within_the_timeout() {
    let mut fake = FakeDrive::start();
    let ws = Workspace::new();
    let data = pattern(6 << 20, 6);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/d",
    ));
    let mount = ws.mount_source(
        "gdrive:///My Drive/d",
        &[&fake.options(), "audit=off", "timeout=2s"],
    );
    let mut file = std::fs::File::open(ws.mnt().join("scan.bin")).unwrap();
    read_at(&mut file, 0, 65_536).unwrap();

    let pid = fake.pid();
    common::assert_hung_then_dead_server_fails_in_time(&mount, &mut file, &data, pid, || {
        fake.kill()
    });
}

/// A listing of many requests may take longer than `timeout=` as a whole: each request is
/// bounded, not the whole walk of the tree. The folders of one level are listed at once.
#[test]
fn a_listing_longer_than_the_timeout_mounts_and_lists_a_level_at_once() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    for folder in ["a", "b", "c"] {
        for i in 0..3 {
            ws.write_plain(
                &format!("{folder}/f{i}.txt"),
                format!("{folder} {i}").as_bytes(),
            );
        }
    }
    run_ok(&mut seal_v1_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/d",
    ));
    // Counted from here: the seal lists at once too, to check what it creates.
    fake.admin("stats", json!({"reset": true}));
    // Pages of 2 entries, each answered after 0.5 s: 8 pages for the 4 folders, 2 s after
    // the first level if the three folders of the second are listed at once (4 s if not).
    fake.admin("config", json!({"page_size": 2, "list_delay": 0.5}));
    let started = Instant::now();
    let mount = ws.mount_source(
        "gdrive:///My Drive/d",
        &[&fake.options(), "audit=off", "timeout=2s"],
    );
    let listing = started.elapsed();
    assert!(listing > Duration::from_secs(2), "listed in {listing:?}");
    // a, b and c (the second level) were listed together.
    assert_eq!(fake.stats()["lists_at_once"], 3, "{}", fake.stats());
    fake.admin("config", json!({"list_delay": 0}));
    for folder in ["a", "b", "c"] {
        let text = std::fs::read_to_string(ws.mnt().join(format!("{folder}/f2.txt")))
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
        assert_eq!(text, format!("{folder} 2"));
    }
}

/// Revoked service-account credentials fail the mount at once with the server's reason;
/// nothing is mounted.
#[test]
fn revoked_credentials_fail_the_mount_clearly() {
    let fake = FakeDrive::start();
    fake.admin("config", json!({"revoked": true}));
    let ws = Workspace::new();
    let out = smpfs()
        .arg("mount")
        .arg("gdrive:///My Drive")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", &fake.options()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("Google refused the credentials") && message.contains("invalid_grant"),
        "{message}"
    );
    assert!(!common::is_mounted(&ws.mnt()));
}

/// `smpfs gdrive login` runs the installed-app flow (the fake's consent page redirects
/// straight back), caches the token in a 0600 file that mounts then use without asking;
/// once the login is revoked, a mount fails saying to log in again.
#[test]
fn login_caches_a_0600_token_that_mounts_use_until_revoked() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    ws.write_plain("note.txt", b"hello drive");
    run_ok(&mut seal_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/l",
    ));
    let token = ws.dir.path().join("cfg/token.json");
    let mut login = smpfs()
        .args(["gdrive", "login", "--client-secret"])
        .arg(&fake.client)
        .arg("--token")
        .arg(&token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = login.stderr.take().unwrap();
    let mut shown = String::new();
    let url = loop {
        let mut byte = [0u8; 1];
        assert_eq!(
            err.read(&mut byte).unwrap(),
            1,
            "login ended early: {shown}"
        );
        shown.push(byte[0] as char);
        if let Some(line) = shown.lines().find(|l| l.starts_with("http://")) {
            if shown.ends_with('\n') {
                break line.to_owned();
            }
        }
    };
    // The "browser": follow the consent URL, which redirects to the local callback.
    run_ok(Command::new("python3").args([
        "-c",
        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20).read()",
        &url,
    ]));
    assert!(login.wait().unwrap().success());
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cached = std::fs::read_to_string(&token).unwrap();
    assert!(cached.contains("drive.readonly") && cached.contains("drive.file"));

    let login_options = format!(
        "gdrive_endpoint={},gdrive_token={}",
        fake.endpoint(),
        token.display()
    );
    let mount = ws.mount_source("gdrive:///My Drive/l", &[&login_options, "audit=off"]);
    assert_eq!(
        std::fs::read(ws.mnt().join("note.txt")).unwrap(),
        b"hello drive"
    );
    assert!(mount.unmount().success());

    fake.admin("config", json!({"revoked": true}));
    let out = smpfs()
        .arg("mount")
        .arg("gdrive:///My Drive/l")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", &login_options])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("smpfs gdrive login"),
        "{}",
        stderr(&out)
    );
    assert!(!common::is_mounted(&ws.mnt()));
}

/// Bucket layout v2 reads the keys its manifest names without listing: an object created
/// after the reader listed, or read by a reader that never listed, is looked up by name
/// (the oldest file of that name, pinned to its revision then as a listed one is); a key
/// that is not there is NotFound, and found once it is created.
#[test]
fn objects_no_listing_saw_are_read_by_key() {
    let fake = FakeDrive::start();
    let writer = backend(&fake, "gdrive:///My Drive/v2");
    let object = "obj/ab/00112233445566778899aabbccddeeff";
    let first = pattern(70_000, 1);
    put(&writer, object, &first, false, true).unwrap();

    let reader = backend(&fake, "gdrive:///My Drive/v2");
    assert_eq!(reader.list().unwrap().len(), 1);
    let manifest = "manifest/0000000000000001";
    assert!(matches!(
        get(&reader, manifest, 10),
        Err(BackendError::NotFound { .. })
    ));
    let segment = pattern(5_000, 2);
    put(&writer, manifest, &segment, false, false).unwrap();
    assert!(get(&reader, manifest, segment.len()).unwrap() == segment);
    assert!(matches!(
        get(&reader, "manifest/0000000000000002", 10),
        Err(BackendError::NotFound { .. })
    ));
    assert!(matches!(
        get(&reader, "no/such/folder", 10),
        Err(BackendError::NotFound { .. })
    ));

    // Found by name, its reads stay pinned to the revision seen then.
    fake.admin(
        "replace",
        json!({"id": fake.id_of("0000000000000001"), "data": b64(&pattern(5_000, 3))}),
    );
    assert!(get(&reader, manifest, segment.len()).unwrap() == segment);

    // Without any listing; of two files of one name, the oldest by createdTime (here not
    // the first created on the server).
    let fresh = backend(&fake, "gdrive:///My Drive/v2");
    assert!(get(&fresh, object, first.len()).unwrap() == first);
    let root = fake.id_of("v2");
    for (created, data) in [
        ("2030-01-01T00:00:00.000Z", b"newer"),
        ("2020-01-01T00:00:00.000Z", b"older"),
    ] {
        fake.admin(
            "file",
            json!({"parent": root, "name": "head", "data": b64(data), "createdTime": created}),
        );
    }
    assert_eq!(get(&fresh, "head", 5).unwrap(), b"older");
}

/// A key that is rewritten (the v2 head hint: a new revision each time) and read again by
/// the same client, after a `stat` as the manifest store does, reads the revision whose
/// size the stat gave: neither the bytes pinned by the first read (one byte short here)
/// nor an error once Drive drops that revision.
#[test]
fn a_stat_then_read_of_a_rewritten_key_reads_what_the_stat_found() {
    let fake = FakeDrive::start();
    let writer = backend(&fake, "gdrive:///My Drive/v2");
    let reader = backend(&fake, "gdrive:///My Drive/v2");
    let head = "manifest/head";
    let old = b"smpfs manifest v2 generation 9\n";
    put(&writer, head, old, true, false).unwrap();
    assert_eq!(reader.stat(head).unwrap(), Some(old.len() as u64));
    assert_eq!(get(&reader, head, old.len()).unwrap(), old);

    let new = b"smpfs manifest v2 generation 10\n";
    put(&writer, head, new, true, false).unwrap();
    assert_eq!(
        fake.named("head").len(),
        1,
        "a new revision of the same file"
    );
    // Without a stat, reads stay pinned to the revision first read.
    assert_eq!(get(&reader, head, old.len()).unwrap(), old);
    fake.admin("prune", json!({"id": fake.id_of("head")}));
    assert_eq!(reader.stat(head).unwrap(), Some(new.len() as u64));
    assert_eq!(get(&reader, head, new.len()).unwrap(), new);

    writer.delete(head).unwrap();
    assert_eq!(reader.stat(head).unwrap(), None);
    assert!(matches!(
        get(&reader, head, 1),
        Err(BackendError::NotFound { .. })
    ));
}

/// `delete` removes the object (every file of its name) for readers that had read it too,
/// and deleting what is not there succeeds.
#[test]
fn delete_removes_an_object_and_is_idempotent() {
    let fake = FakeDrive::start();
    let writer = backend(&fake, "gdrive:///My Drive/v2");
    let key = "obj/cd/ffeeddccbbaa99887766554433221100";
    let data = pattern(3_000, 4);
    put(&writer, key, &data, false, false).unwrap();
    assert!(get(&writer, key, data.len()).unwrap() == data);

    writer.delete(key).unwrap();
    assert!(fake.named("ffeeddccbbaa99887766554433221100").is_empty());
    assert_eq!(writer.stat(key).unwrap(), None);
    assert!(matches!(
        get(&writer, key, data.len()),
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(fake.stats()["deletes"], 1);
    writer.delete(key).unwrap();
    writer.delete("obj/zz/none").unwrap();
    assert_eq!(
        fake.stats()["deletes"],
        1,
        "nothing else was there to delete"
    );

    // The key can be created again, and is read as the new object.
    let again = pattern(3_000, 5);
    put(&writer, key, &again, false, false).unwrap();
    assert!(get(&writer, key, again.len()).unwrap() == again);
}

/// Writers committing manifest generations race `create(key, overwrite = false)` (both
/// past the check that nothing is there): exactly one commit succeeds, the other fails
/// with AlreadyExists and leaves no copy, and readers get the winner's bytes.
#[test]
fn racing_exclusive_creates_have_exactly_one_winner() {
    let fake = FakeDrive::start();
    let writers = [
        backend(&fake, "gdrive:///My Drive/v2"),
        backend(&fake, "gdrive:///My Drive/v2"),
    ];
    for round in 0..4u8 {
        let key = format!("manifest/{:016x}", round + 1);
        let contents = [pattern(40_000, 10 + round), pattern(40_000, 20 + round)];
        let both_created = Barrier::new(2);
        let results: Vec<Result<(), BackendError>> = std::thread::scope(|scope| {
            let threads: Vec<_> = writers
                .iter()
                .zip(&contents)
                .map(|(writer, data)| {
                    let (key, both_created) = (&key, &both_created);
                    scope.spawn(move || {
                        let sized = round % 2 == 1;
                        let created = if sized {
                            writer.create_sized(key, false, data.len() as u64)
                        } else {
                            writer.create(key, false)
                        };
                        both_created.wait();
                        let mut object = created?;
                        object.write_all(data).unwrap();
                        object.commit()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = 1 - winners[0];
        assert!(
            matches!(results[loser], Err(BackendError::AlreadyExists { .. })),
            "round {round}: {results:?}"
        );
        assert_eq!(fake.named(&format!("{:016x}", round + 1)).len(), 1);
        let reader = backend(&fake, "gdrive:///My Drive/v2");
        assert!(
            get(&reader, &key, 40_000).unwrap() == contents[winners[0]],
            "round {round}: not the winner's bytes"
        );
        // Once it exists, a create is refused at once.
        assert!(matches!(
            writers[loser].create(&key, false).map(drop),
            Err(BackendError::AlreadyExists { .. })
        ));
    }
}

/// A v2 (zero-knowledge) bucket on Drive: opaque object names and a sealed manifest whose
/// generations are committed create-if-absent; a second seal adds a generation, and a
/// mount, which reads the keys the manifest names instead of listing, reads every file.
#[test]
fn v2_buckets_on_drive_take_new_generations_and_mount() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let scan = pattern(300_000, 7);
    ws.write_plain("a/scan.bin", &scan);
    run_ok(&mut seal_to(
        &ws,
        &fake,
        &ws.plain(),
        "gdrive:///My Drive/zk",
    ));
    let note = pattern(5_000, 8);
    ws.write_plain("b/note.bin", &note);
    let out = run_ok(
        seal_to(&ws, &fake, &ws.plain(), "gdrive:///My Drive/zk")
            .arg("-i")
            .arg(&ws.identity),
    );
    assert!(
        stderr(&out).contains("manifest generation 2"),
        "{}",
        stderr(&out)
    );
    assert!(fake.named("scan.bin").is_empty() && fake.named("a").is_empty());
    for name in ["0000000000000001", "0000000000000002", "head"] {
        assert_eq!(fake.named(name).len(), 1, "{name}");
    }
    let _mount = ws.mount_source("gdrive:///My Drive/zk", &[&fake.options(), "audit=off"]);
    assert!(std::fs::read(ws.mnt().join("a/scan.bin")).unwrap() == scan);
    assert!(std::fs::read(ws.mnt().join("b/note.bin")).unwrap() == note);
}

/// `share` and `rotate` on a Drive folder: a reader added by `share` opens every file, one
/// removed does not, and `rotate` keeps every file readable under new objects.
#[test]
fn share_and_rotate_change_readers_of_a_drive_bucket() {
    let fake = FakeDrive::start();
    let ws = Workspace::new();
    let scan = pattern(200_000, 3);
    ws.write_plain("s/scan.bin", &scan);
    let out = "gdrive:///My Drive/access";
    run_ok(
        seal_to(&ws, &fake, &ws.plain(), out)
            .arg("-i")
            .arg(&ws.identity)
            .env("SMPFS_STATE_DIR", ws.state()),
    );
    let other_path = ws.dir.path().join("other.key");
    let other = smpfs::keys::Identity::generate();
    other.save_new(&other_path, None).unwrap();
    let other_recipient = other.recipient().to_string();
    let command = |args: &[&str], identity: &Path| {
        let mut cmd = ws.smpfs();
        cmd.args(args)
            .args([out, "-o", &fake.options(), "-i"])
            .arg(identity);
        cmd.output().unwrap()
    };
    let cat_as = |identity: &Path| {
        let mut cmd = ws.smpfs();
        cmd.args(["cat", out, "s/scan.bin", "-o", &fake.options(), "-i"])
            .arg(identity);
        cmd.output().unwrap()
    };
    assert!(!cat_as(&other_path).status.success());
    let added = command(&["share", "--add", &other_recipient], &ws.identity);
    assert!(added.status.success(), "{}", stderr(&added));
    let read = cat_as(&other_path);
    assert!(read.stdout == scan, "{}", stderr(&read));
    let removed = command(&["share", "--remove", &other_recipient], &ws.identity);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(!cat_as(&other_path).status.success());
    assert_eq!(fake.named("s").len(), 0, "a folder names the file");
    let rotated = command(&["rotate"], &ws.identity);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(cat_as(&ws.identity).stdout == scan);
    let _mount = ws.mount_source(out, &[&fake.options(), "audit=off"]);
    assert!(std::fs::read(ws.mnt().join("s/scan.bin")).unwrap() == scan);
}
