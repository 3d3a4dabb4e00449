//! The Dropbox backend against the fake Dropbox server (`tests/fake_dropbox.py`) on
//! loopback, speaking the real HTTP API: sealing trees (single uploads and upload
//! sessions) and reading them back through real mounts, pydicom's files, pagination past
//! 5000 files, revision pinning, dead and hung servers, refused credentials, access-token
//! refresh, the PKCE login, and what bucket layout v2 needs of the backend.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::dropbox::FakeDropbox;
use common::{
    get, pattern, put, pydicom_test_files, pydicom_tree_check, read_at, run_ok, smpfs, Workspace,
};
use serde_json::json;
use smpfs::backend::{Backend, BackendError, DropboxBackend, DropboxOptions};

/// `smpfs seal SOURCE --to RECIPIENT --out OUT -o <fake's options>` (layout v2 for a new
/// bucket).
fn seal_to(ws: &Workspace, fake: &FakeDropbox, source: &Path, out: &str) -> Command {
    let mut cmd = smpfs();
    cmd.arg("seal")
        .arg(source)
        .args(["--to", &ws.recipient, "--out", out, "-o"])
        .arg(fake.options());
    cmd
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backend on the fake at `source`, as a sealer or a mount opens one.
fn backend(fake: &FakeDropbox, source: &str) -> DropboxBackend {
    let options = DropboxOptions {
        token: Some(fake.token.clone()),
        endpoint: Some(fake.endpoint()),
        ..DropboxOptions::default()
    };
    DropboxBackend::open(source.parse().unwrap(), &options).unwrap()
}

/// A tree of files around the upload-session threshold (8 MiB) and the chunk size, sealed
/// as v1 (objects under their paths) and as v2, reads back byte-exact through mounts; the
/// large ones went through upload sessions.
#[test]
fn sealed_trees_read_back_exactly_through_a_mount() {
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    let sizes = [1usize, 65_535, 65_537, 3 << 20, (17 << 20) + 12_345];
    for (i, size) in sizes.iter().enumerate() {
        ws.write_plain(&format!("series/{i}/slice.bin"), &pattern(*size, i as u8));
    }
    let out =
        run_ok(seal_to(&ws, &fake, &ws.plain(), "dropbox:///Site A/v1").args(["--layout", "v1"]));
    assert!(
        stderr(&out).contains("sealed 5 of 5 files"),
        "{}",
        stderr(&out)
    );
    let names: Vec<String> = fake
        .files()
        .iter()
        .map(|f| f["path_display"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"/Site A/v1/series/4/slice.bin".to_owned()),
        "{names:?}"
    );
    assert!(fake.stats()["session_appends"].as_u64().unwrap() >= 1);
    run_ok(&mut seal_to(
        &ws,
        &fake,
        &ws.plain(),
        "dropbox:///Site A/v2",
    ));
    // Dropbox paths are case-insensitive: the v1 bucket opens under another case too.
    for source in [
        "dropbox:///Site A/v1",
        "dropbox:///site a/V1",
        "dropbox:///Site A/v2",
    ] {
        let mount = ws.mount_source(source, &[&fake.options(), "audit=off"]);
        for (i, size) in sizes.iter().enumerate() {
            let path = ws.mnt().join(format!("series/{i}/slice.bin"));
            let data = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{source} {}: {e}; log:\n{}",
                    path.display(),
                    mount.log_text()
                )
            });
            assert!(
                data == pattern(*size, i as u8),
                "{source} {} differs",
                path.display()
            );
        }
        assert!(mount.unmount().success());
    }
    let again =
        run_ok(seal_to(&ws, &fake, &ws.plain(), "dropbox:///Site A/v1").args(["--layout", "v1"]));
    assert!(
        stderr(&again).contains("sealed 0 of 5 files"),
        "{}",
        stderr(&again)
    );
}

/// pydicom's bundled DICOM files, sealed to Dropbox and read back through the mount, are
/// byte-exact and parse with pydicom; a second mount with a disk cache reads them too.
#[test]
fn pydicom_files_read_back_through_a_dropbox_mount() {
    let files = pydicom_test_files();
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    run_ok(&mut seal_to(&ws, &fake, &files, "dropbox:///dicom"));
    let cache = ws.dir.path().join("disk-cache");
    let cache_option = format!("disk_cache={}", cache.display());
    for options in [vec!["audit=off"], vec!["audit=off", cache_option.as_str()]] {
        let mut all = vec![fake.options()];
        all.extend(options.iter().map(|o| o.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mount = ws.mount_source("dropbox:///dicom", &all);
        let out = pydicom_tree_check(&files, &ws.mnt());
        assert!(
            out.status.success(),
            "{}; log:\n{}",
            stderr(&out),
            mount.log_text()
        );
        eprintln!("compared {}", String::from_utf8_lossy(&out.stdout));
        assert!(mount.unmount().success());
    }
    assert!(
        std::fs::read_dir(&cache).unwrap().count() > 0,
        "the disk cache kept nothing"
    );
}

/// More than 5000 files, in pages of 400: every one is listed (through `has_more` and
/// `list_folder/continue`), none twice.
#[test]
fn listing_pages_through_more_than_5000_files() {
    let fake = FakeDropbox::start();
    fake.admin("bulk", json!({"folder": "/Many/deep", "count": 5300}));
    fake.admin("config", json!({"page_size": 400}));
    fake.admin("stats", json!({"reset": true}));
    let backend = backend(&fake, "dropbox:///many");
    let mut keys: Vec<String> = backend.list().unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5300);
    assert_eq!(keys[0], "deep/f000000.bin");
    assert_eq!(keys[5299], "deep/f005299.bin");
    // 5300 files and the folder itself, 400 a page.
    assert_eq!(fake.stats()["list_pages"], 14);
    assert!(backend.version("deep/f000001.bin").is_some());
    // Dropbox invalidates the cursor mid-listing (409 reset): the listing starts again.
    fake.admin("config", json!({"reset_continue": 1}));
    fake.admin("stats", json!({"reset": true}));
    assert_eq!(backend.list().unwrap().len(), 5300);
    assert_eq!(fake.stats()["list_pages"], 1 + 14);
    assert!(backend_empty(&fake));
}

fn backend_empty(fake: &FakeDropbox) -> bool {
    backend(fake, "dropbox:///not/there")
        .list()
        .unwrap()
        .is_empty()
}

/// A file sealed again (a new revision) while it is read keeps serving the listed
/// revision byte-exact; an answer that names another revision (a misbehaving server)
/// fails the read; once Dropbox no longer has that revision, reads fail with EIO and say
/// the file changed: never bytes of two versions.
#[test]
fn a_file_replaced_mid_read_serves_its_listed_revision_then_fails() {
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    let data = pattern(20 << 20, 1);
    ws.write_plain("big.bin", &data);
    run_ok(seal_to(&ws, &fake, &ws.plain(), "dropbox:///b").args(["--layout", "v1"]));
    let mount = ws.mount_source("dropbox:///b", &[&fake.options(), "audit=off"]);
    let mut file = std::fs::File::open(ws.mnt().join("big.bin")).unwrap();
    assert!(read_at(&mut file, 0, 65_536).unwrap() == data[..65_536]);

    ws.write_plain("big.bin", &pattern(20 << 20, 9));
    let reseal = seal_to(&ws, &fake, &ws.plain(), "dropbox:///b")
        .args(["--layout", "v1", "--overwrite"])
        .output()
        .unwrap();
    assert!(reseal.status.success(), "{}", stderr(&reseal));
    let entry = fake
        .files()
        .into_iter()
        .find(|f| f["name"] == "big.bin")
        .unwrap();
    assert_eq!(entry["revisions"].as_array().unwrap().len(), 2, "{entry}");

    // A server that serves the current content whatever revision was asked: the answer
    // names another revision, and the read fails rather than take its bytes.
    fake.admin("config", json!({"ignore_rev": true}));
    let error = read_at(&mut file, 5 << 20, 65_536).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    // Refused by the backend's revision check, before the format's own checks see a byte.
    assert!(
        mount.log_text().contains("changed since it was listed"),
        "log:\n{}",
        mount.log_text()
    );
    fake.admin("config", json!({"ignore_rev": false}));

    let middle = read_at(&mut file, 10 << 20, 65_536).unwrap();
    assert!(
        middle == data[10 << 20..(10 << 20) + 65_536],
        "not the listed revision"
    );

    fake.admin("prune", json!({"path": "/b/big.bin"}));
    let error = read_at(&mut file, 19 << 20, 65_536).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        mount.log_text().contains("changed since it was listed"),
        "log:\n{}",
        mount.log_text()
    );
}

/// A hung server (SIGSTOP) and a killed one give EIO within the timeout, not a hang; the
/// hung one's reads work again once it continues.
#[test]
fn dead_or_hung_servers_give_eio_within_the_timeout() {
    let mut fake = FakeDropbox::start();
    let ws = Workspace::new();
    let data = pattern(6 << 20, 6);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(&ws, &fake, &ws.plain(), "dropbox:///d"));
    let mount = ws.mount_source(
        "dropbox:///d",
        &[&fake.options(), "audit=off", "timeout=2s"],
    );
    let mut file = std::fs::File::open(ws.mnt().join("scan.bin")).unwrap();
    read_at(&mut file, 0, 65_536).unwrap();

    let pid = fake.pid();
    common::assert_hung_then_dead_server_fails_in_time(&mount, &mut file, &data, pid, || {
        fake.kill()
    });
}

/// Revoked credentials fail the mount at once, saying so and what to do; so does a token
/// file others may read, and a server that is not there (within the timeout).
#[test]
fn bad_credentials_and_unreachable_servers_fail_clearly() {
    let mut fake = FakeDropbox::start();
    let ws = Workspace::new();
    let mount_with = |options: &str| {
        smpfs()
            .arg("mount")
            .arg("dropbox:///x")
            .arg(ws.mnt())
            .arg("-i")
            .arg(&ws.identity)
            .args(["-o", options])
            .output()
            .unwrap()
    };
    fake.admin("config", json!({"revoked": true}));
    let out = mount_with(&fake.options());
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("Dropbox refused the credentials")
            && message.contains("invalid_grant")
            && message.contains("smpfs dropbox login"),
        "{message}"
    );
    assert!(!common::is_mounted(&ws.mnt()));

    std::fs::set_permissions(&fake.token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = stderr(&mount_with(&fake.options()));
    assert!(message.contains("chmod 600"), "{message}");
    std::fs::set_permissions(&fake.token, std::fs::Permissions::from_mode(0o600)).unwrap();

    let options = fake.options();
    fake.kill();
    let started = Instant::now();
    let out = mount_with(&format!("{options},timeout=2s"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("in dropbox:///x")
            && message.contains("no answer within 2s")
            && message.contains("Connection refused"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// An access token the server says has expired (401 `expired_access_token`) is replaced
/// with the refresh token, without the reader noticing; the new one is cached (0600).
#[test]
fn an_expired_access_token_is_refreshed_with_the_refresh_token() {
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    ws.write_plain("a.bin", &pattern(100_000, 1));
    ws.write_plain("b.bin", &pattern(300_000, 2));
    run_ok(&mut seal_to(&ws, &fake, &ws.plain(), "dropbox:///t"));
    let before = std::fs::read_to_string(&fake.token).unwrap();
    let mount = ws.mount_source("dropbox:///t", &[&fake.options(), "audit=off"]);
    assert!(std::fs::read(ws.mnt().join("a.bin")).unwrap() == pattern(100_000, 1));
    assert_eq!(fake.stats()["refreshes"], 0);
    fake.admin("expire", json!({}));
    let read = std::fs::read(ws.mnt().join("b.bin"))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log_text()));
    assert!(read == pattern(300_000, 2));
    let stats = fake.stats();
    assert!(stats["refreshes"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["unauthorized"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        mount.log_text().contains("expired_access_token"),
        "{}",
        mount.log_text()
    );
    let after = std::fs::read_to_string(&fake.token).unwrap();
    assert_ne!(before, after, "the new access token is cached");
    let mode = std::fs::metadata(&fake.token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `smpfs dropbox login`: shows the authorize URL with a PKCE S256 challenge, reads the
/// code, exchanges it with the verifier (checked by the fake), and caches a 0600 token
/// file that a seal and a mount then use. A code exchanged with another verifier fails.
#[test]
fn login_runs_the_pkce_flow_and_caches_a_0600_token() {
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    let token = ws.dir.path().join("cfg/dropbox.json");
    let mut login = smpfs()
        .args(["dropbox", "login", "--app-key", "test-app", "--token"])
        .arg(&token)
        .args(["--endpoint", &fake.endpoint(), "--authorize-url"])
        .arg(format!("{}/oauth2/authorize", fake.endpoint()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(login.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "login ended early");
        if line.starts_with("http://") {
            break line.trim().to_owned();
        }
    };
    assert!(url.contains("code_challenge_method=S256") && url.contains("client_id=test-app"));
    // The "browser": the fake's authorize page answers with the code a user would copy.
    let page = run_ok(Command::new("python3").args([
        "-c",
        "import sys, urllib.request, json; print(json.load(urllib.request.urlopen(sys.argv[1], timeout=20))['code'])",
        &url,
    ]));
    let code = String::from_utf8(page.stdout).unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(login.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("logged in as dbid:fake-account"), "{rest}");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&token).unwrap()).unwrap();
    assert_eq!(cached["app_key"], "test-app");
    assert!(cached["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("fake-refresh-"));
    assert_eq!(fake.stats()["code_exchanges"], 1);

    let options = format!(
        "dropbox_endpoint={},dropbox_token={}",
        fake.endpoint(),
        token.display()
    );
    ws.write_plain("note.txt", b"hello dropbox");
    let mut seal = smpfs();
    seal.arg("seal").arg(ws.plain()).args([
        "--to",
        &ws.recipient,
        "--out",
        "dropbox:///l",
        "-o",
        &options,
    ]);
    run_ok(&mut seal);
    let mount = ws.mount_source("dropbox:///l", &[&options, "audit=off"]);
    assert_eq!(
        std::fs::read(ws.mnt().join("note.txt")).unwrap(),
        b"hello dropbox"
    );
    assert!(mount.unmount().success());

    // The fake checks the verifier: a code with a challenge of another verifier fails.
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let challenge = engine.encode(sha2_digest(b"not-the-verifier-not-the-verifier-xxxxxxxxx"));
    let script = r#"
import sys, json, urllib.request, urllib.parse, urllib.error
base, challenge = sys.argv[1], sys.argv[2]
q = urllib.parse.urlencode({"client_id": "test-app", "response_type": "code", "code_challenge": challenge,
    "code_challenge_method": "S256", "token_access_type": "offline"})
code = json.load(urllib.request.urlopen(base + "/oauth2/authorize?" + q))["code"]
form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "client_id": "test-app",
    "code_verifier": "another-verifier-another-verifier-xxxxxxxxxx"}).encode()
try:
    urllib.request.urlopen(base + "/oauth2/token", form)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"])
"#;
    let out = run_ok(Command::new("python3").args(["-c", script, &fake.endpoint(), &challenge]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "400 invalid_grant"
    );
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// What bucket layout v2 needs of the backend: reads of keys no listing saw, stat,
/// create-if-absent (also at commit, against a racing writer), overwrite, large objects
/// through upload sessions, and idempotent deletes.
#[test]
fn keys_are_read_created_once_and_deleted_on_the_backend() {
    let fake = FakeDropbox::start();
    let writer = backend(&fake, "dropbox:///kv");
    let reader = backend(&fake, "dropbox:///KV");
    assert!(matches!(
        get(&reader, "a/b", 1),
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(reader.stat("a/b").unwrap(), None);
    put(&writer, "a/b", b"first", false).unwrap();
    assert_eq!(get(&reader, "a/b", 5).unwrap(), b"first");
    assert!(matches!(
        put(&writer, "a/b", b"again", false),
        Err(BackendError::AlreadyExists { .. })
    ));
    // Two writers that both saw nothing: the second commit finds the first's file.
    let mut one = writer.create("race", false).unwrap();
    let mut two = reader.create("race", false).unwrap();
    one.write_all(b"one").unwrap();
    two.write_all(b"two").unwrap();
    one.commit().unwrap();
    assert!(matches!(
        two.commit(),
        Err(BackendError::AlreadyExists { .. })
    ));
    put(&writer, "a/b", b"second!", true).unwrap();
    assert_eq!(reader.stat("a/b").unwrap(), Some(7));
    assert_eq!(get(&reader, "a/b", 7).unwrap(), b"second!");
    common::assert_ranged_reads(&writer, &reader);
    assert_eq!(writer.location("A/b").unwrap(), "kv/a/b");
    assert_eq!(reader.location("a/b").unwrap(), "kv/a/b");
    // Names past ASCII travel as escaped JSON in Dropbox-API-Arg (the fake refuses raw bytes).
    put(&writer, "série/ß 1.bin", b"unicode", false).unwrap();
    assert_eq!(get(&reader, "série/ß 1.bin", 7).unwrap(), b"unicode");
    let listed: Vec<String> = reader.list().unwrap().into_iter().map(|o| o.key).collect();
    assert!(listed.contains(&"série/ß 1.bin".to_owned()), "{listed:?}");
    writer.delete("a/b").unwrap();
    writer.delete("a/b").unwrap();
    assert_eq!(reader.stat("a/b").unwrap(), None);
}

/// The commands that take a bucket work on a Dropbox folder as on the others (through
/// `Source::open`): `ls`, `cat`, `verify`, `info --path`; `share` adds a reader who then
/// opens every file and removes one who then does not; `rotate` keeps every file readable
/// under new objects; `rm` removes a file.
#[test]
fn bucket_commands_share_and_rotate_work_on_a_dropbox_folder() {
    let fake = FakeDropbox::start();
    let ws = Workspace::new();
    let scan = pattern(200_000, 3);
    ws.write_plain("s/scan.bin", &scan);
    ws.write_plain("s/other.bin", b"other");
    let out = "dropbox:///Access";
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
    let options = fake.options();
    let command = |args: &[&str], identity: &Path| {
        let mut cmd = ws.smpfs();
        cmd.args(args)
            .args([out, "-o", &options, "-i"])
            .arg(identity);
        cmd.output().unwrap()
    };
    let cat_as = |identity: &Path| {
        let mut cmd = ws.smpfs();
        cmd.args(["cat", out, "s/scan.bin", "-o", &options, "-i"])
            .arg(identity);
        cmd.output().unwrap()
    };
    let listed = command(&["ls"], &ws.identity);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("s/") || listed.contains("scan.bin"),
        "{listed}"
    );
    let verified = command(&["verify"], &ws.identity);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let info = ws
        .smpfs()
        .args(["info", out, "--path", "s/scan.bin", "-o", &options, "-i"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", stderr(&info));

    assert!(!cat_as(&other_path).status.success());
    let added = command(&["share", "--add", &other_recipient], &ws.identity);
    assert!(added.status.success(), "{}", stderr(&added));
    let read = cat_as(&other_path);
    assert!(read.stdout == scan, "{}", stderr(&read));
    let removed = command(&["share", "--remove", &other_recipient], &ws.identity);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(!cat_as(&other_path).status.success());
    let names: Vec<String> = fake
        .files()
        .iter()
        .map(|f| f["path_display"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("scan.bin")),
        "a v2 bucket names no file: {names:?}"
    );
    let rotated = command(&["rotate"], &ws.identity);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(cat_as(&ws.identity).stdout == scan);
    let removed = ws
        .smpfs()
        .args(["rm", out, "s/other.bin", "-o", &options, "-i"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", stderr(&removed));
    let mount = ws.mount_source(out, &[&options, "audit=off"]);
    assert!(std::fs::read(ws.mnt().join("s/scan.bin")).unwrap() == scan);
    assert!(!ws.mnt().join("s/other.bin").exists());
    assert!(mount.unmount().success());
    // Audit anchors are not stored on Dropbox: a clear refusal, nothing mounted.
    let audit = ws.dir.path().join("audit.log");
    let refused = ws
        .smpfs()
        .arg("mount")
        .arg(out)
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", &options, "-o"])
        .arg(format!(
            "audit={},audit_anchor=dropbox:///anchors",
            audit.display()
        ))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("audit anchors on Dropbox are not supported"),
        "{}",
        stderr(&refused)
    );
    assert!(!common::is_mounted(&ws.mnt()));
}
