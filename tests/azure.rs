//! The Azure Blob backend against Azurite on loopback, through real mounts: sealing trees
//! (single Put Blob and parallel blocks) as v1 and v2 and reading them back byte-exact,
//! pydicom's files, listing past 5000 blobs, ETag pinning of a blob replaced mid-read, a
//! server killed mid-read, refused credentials, a missing container, an unreachable
//! endpoint, what bucket layout v2 needs of the backend, and share/rotate/disk cache.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::azurite::{azure_env, Azurite};
use common::{
    get, pattern, put, pydicom_test_files, pydicom_tree_check, read_at, run_ok, smpfs, Workspace,
};
use smpfs::backend::{Backend, BackendError};

/// `smpfs seal SOURCE --to RECIPIENT --out OUT -o endpoint=…` with the development key
/// (layout v2 for a new bucket unless `--layout` is added).
fn seal_to(ws: &Workspace, azurite: &Azurite, source: &Path, out: &str) -> Command {
    let mut cmd = smpfs();
    azure_env(&mut cmd)
        .env("SMPFS_STATE_DIR", ws.state())
        .arg("seal")
        .arg(source)
        .args(["--to", &ws.recipient, "--out", out, "-o"])
        .arg(azurite.endpoint_option());
    cmd
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The workspace's smpfs command with the development key.
fn ws_smpfs(ws: &Workspace) -> Command {
    let mut cmd = ws.smpfs();
    azure_env(&mut cmd);
    cmd
}

/// Mounts `source` with the development key (the workspace's mount sets AWS variables
/// only; the key is in this process's environment for its child).
fn mount(ws: &Workspace, azurite: &Azurite, source: &str, options: &[&str]) -> common::Mount {
    let endpoint = azurite.endpoint_option();
    let mut all = vec![endpoint.as_str(), "audit=off"];
    all.extend_from_slice(options);
    let log = ws.dir.path().join("mount.log");
    let mut cmd = ws_smpfs(ws);
    cmd.arg("mount")
        .arg(source)
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .arg("-f")
        .stderr(std::fs::File::create(&log).unwrap());
    for o in all {
        cmd.args(["-o", o]);
    }
    common::spawn_mount(cmd, ws.mnt(), log)
}

/// Files of many sizes (empty, chunk boundaries, several 8 MiB blocks) sealed as v1 under a
/// nested prefix and as v2 read back byte-exact through mounts (the v2 one with the disk
/// cache, read twice).
#[test]
fn sealed_trees_read_back_exactly_through_a_mount() {
    let azurite = Azurite::start();
    azurite.create_container("scans");
    let ws = Workspace::new();
    let sizes = [
        0usize,
        1,
        65_535,
        65_536,
        65_537,
        3 << 20,
        (17 << 20) + 12_345,
    ];
    for (i, size) in sizes.iter().enumerate() {
        ws.write_plain(&format!("series/{i}/slice.bin"), &pattern(*size, i as u8));
    }
    let v1 = azurite.source("scans/site-a/2026");
    let out = run_ok(seal_to(&ws, &azurite, &ws.plain(), &v1).args(["--layout", "v1"]));
    assert!(
        stderr(&out).contains("sealed 7 of 7 files"),
        "{}",
        stderr(&out)
    );
    let listed: Vec<String> = azurite
        .backend("scans/site-a")
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        listed.contains(&"2026/series/6/slice.bin".to_owned()),
        "{listed:?}"
    );

    let v2 = azurite.source("scans/v2");
    run_ok(&mut seal_to(&ws, &azurite, &ws.plain(), &v2));
    let cache = ws.dir.path().join("disk-cache");
    let cache_option = format!("disk_cache={}", cache.display());
    for (source, options) in [(&v1, vec![]), (&v2, vec![cache_option.as_str()])] {
        let mount = mount(&ws, &azurite, source, &options);
        for _pass in 0..if options.is_empty() { 1 } else { 2 } {
            for (i, size) in sizes.iter().enumerate() {
                let path = ws.mnt().join(format!("series/{i}/slice.bin"));
                let data = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; log:\n{}", path.display(), mount.log_text())
                });
                assert_eq!(data.len(), *size);
                assert!(
                    data == pattern(*size, i as u8),
                    "{} differs",
                    path.display()
                );
            }
        }
        assert!(mount.unmount().success());
    }
    let cached: u64 = walkdir::WalkDir::new(&cache)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(cached > 3 << 20, "the disk cache holds {cached} bytes");
}

/// pydicom's bundled DICOM files, sealed to Azure and read back through the mount, are
/// byte-exact and parse with pydicom.
#[test]
fn pydicom_files_read_back_through_an_azure_mount() {
    let files = pydicom_test_files();
    let azurite = Azurite::start();
    azurite.create_container("dicom");
    let ws = Workspace::new();
    let source = azurite.source("dicom/test_files");
    run_ok(&mut seal_to(&ws, &azurite, &files, &source));
    let _mount = mount(&ws, &azurite, &source, &[]);
    let out = pydicom_tree_check(&files, &ws.mnt());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("compared {}", String::from_utf8_lossy(&out.stdout));
}

/// More than 5000 blobs (Azure's largest page): every one is listed once, through
/// `NextMarker`, with its ETag; a blob outside the prefix is not.
#[test]
fn listing_pages_through_more_than_5000_blobs() {
    let azurite = Azurite::start();
    azurite.create_container("many");
    let backend = azurite.backend("many/deep");
    const COUNT: usize = 5_300;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let backend = &backend;
            scope.spawn(move || {
                for i in (t..COUNT).step_by(8) {
                    put(backend, &format!("f/{i:06}.bin"), b"x", false).unwrap();
                }
            });
        }
    });
    put(&azurite.backend("many"), "outside.bin", b"y", false).unwrap();
    let mut keys: Vec<String> = backend.list().unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), COUNT);
    assert_eq!(keys[0], "f/000000.bin");
    assert_eq!(keys[COUNT - 1], format!("f/{:06}.bin", COUNT - 1));
    assert!(backend.version("f/000001.bin").is_some());
}

/// A blob sealed again (same size, new ETag) while it is read: the next read fails with
/// EIO and says the file changed, never serves bytes of the new version.
#[test]
fn a_blob_replaced_mid_read_is_an_error_not_mixed_data() {
    let azurite = Azurite::start();
    azurite.create_container("swap");
    let ws = Workspace::new();
    let data = pattern(20 << 20, 1);
    ws.write_plain("big.bin", &data);
    let source = azurite.source("swap");
    run_ok(seal_to(&ws, &azurite, &ws.plain(), &source).args(["--layout", "v1"]));
    let mount = mount(&ws, &azurite, &source, &[]);
    let mut file = std::fs::File::open(ws.mnt().join("big.bin")).unwrap();
    assert!(read_at(&mut file, 0, 1 << 20).unwrap() == data[..1 << 20]);

    ws.write_plain("big.bin", &pattern(20 << 20, 9));
    let reseal = seal_to(&ws, &azurite, &ws.plain(), &source)
        .args(["--layout", "v1", "--overwrite"])
        .output()
        .unwrap();
    assert!(reseal.status.success(), "{}", stderr(&reseal));

    let error = read_at(&mut file, 16 << 20, 1 << 20).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        mount.log_text().contains("changed since it was listed"),
        "log:\n{}",
        mount.log_text()
    );
}

/// With the server gone mid-read, a read fails with EIO within the timeout instead of
/// hanging; once the server is back (same blobs, same ETags), reads work again without
/// remounting.
#[test]
fn a_killed_server_gives_eio_within_the_timeout_and_reads_resume() {
    let mut azurite = Azurite::start();
    azurite.create_container("dead");
    let ws = Workspace::new();
    let data = pattern(7 << 20, 2);
    ws.write_plain("scan.bin", &data);
    let source = azurite.source("dead");
    run_ok(seal_to(&ws, &azurite, &ws.plain(), &source).args(["--layout", "v1"]));
    let mount = mount(&ws, &azurite, &source, &["timeout=3s"]);
    let mut file = std::fs::File::open(ws.mnt().join("scan.bin")).unwrap();
    assert!(read_at(&mut file, 0, 65_536).unwrap() == data[..65_536]);

    azurite.kill();
    let started = Instant::now();
    let error = read_at(&mut file, 6 << 20, 65_536).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    assert!(
        mount.log_text().contains("unreachable") || mount.log_text().contains("no answer"),
        "log:\n{}",
        mount.log_text()
    );

    azurite.restart();
    let back = read_at(&mut file, 6 << 20, 65_536)
        .unwrap_or_else(|e| panic!("read after restart: {e}; log:\n{}", mount.log_text()));
    assert!(back == data[6 << 20..(6 << 20) + 65_536]);
}

/// A wrong account key, a missing container and an endpoint nobody listens on each fail
/// the mount (or the seal) at once, saying which; nothing is mounted.
#[test]
fn bad_credentials_missing_containers_and_dead_endpoints_fail_clearly() {
    let azurite = Azurite::start();
    azurite.create_container("scans");
    let ws = Workspace::new();
    let try_mount = |source: &str, endpoint: &str, key: &str| {
        let started = Instant::now();
        let out = ws_smpfs(&ws)
            .env("AZURE_STORAGE_KEY", key)
            .arg("mount")
            .arg(source)
            .arg(ws.mnt())
            .arg("-i")
            .arg(&ws.identity)
            .args(["-o", &format!("endpoint={endpoint},timeout=3s")])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!common::is_mounted(&ws.mnt()));
        stderr(&out)
    };
    let wrong_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 64]);
    let message = try_mount(&azurite.source("scans"), &azurite.endpoint(), &wrong_key);
    assert!(
        message.contains("Azure Blob authentication failed")
            && message.contains("devstoreaccount1")
            && message.contains("the account key"),
        "{message}"
    );
    assert!(!message.contains(&wrong_key), "the key leaked: {message}");

    let message = try_mount(
        &azurite.source("nothere"),
        &azurite.endpoint(),
        smpfs::backend::azure::DEV_KEY,
    );
    assert!(
        message.contains("container \"nothere\" does not exist"),
        "{message}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let message = try_mount(
        &azurite.source("scans"),
        &format!("http://127.0.0.1:{port}/devstoreaccount1"),
        smpfs::backend::azure::DEV_KEY,
    );
    assert!(message.contains("unreachable"), "{message}");

    // A connection string for another account is refused before any request.
    let out = smpfs()
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=someoneelse;AccountKey=AAAA",
        )
        .args(["ls", &azurite.source("scans"), "-i"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is for account"), "{}", stderr(&out));
}

/// What bucket layout v2 needs of the backend: reads of keys no listing saw (pinned from
/// the first read on), stat, create-if-absent (also at commit, against a racing writer),
/// overwrite, large blobs in blocks, short reads, and idempotent deletes.
#[test]
fn blobs_are_read_created_once_and_deleted_on_the_backend() {
    let azurite = Azurite::start();
    azurite.create_container("kvs");
    let writer = azurite.backend("kvs/p");
    let reader = azurite.backend("kvs/p");
    assert!(matches!(
        get(&reader, "a/b", 1),
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(reader.stat("a/b").unwrap(), None);
    put(&writer, "a/b", b"first", false).unwrap();
    assert_eq!(get(&reader, "a/b", 5).unwrap(), b"first");
    let pinned = reader.version("a/b").expect("pinned by the first read");
    assert!(matches!(
        put(&writer, "a/b", b"again", false),
        Err(BackendError::AlreadyExists { .. })
    ));
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
    // The reader is pinned to the first version: the replaced blob is an error.
    assert!(matches!(
        get(&reader, "a/b", 5),
        Err(BackendError::Changed { .. })
    ));
    assert_eq!(reader.stat("a/b").unwrap(), Some(7));
    assert_ne!(reader.version("a/b").unwrap(), pinned);
    assert_eq!(get(&reader, "a/b", 7).unwrap(), b"second!");
    common::assert_ranged_reads(&writer, &reader);
    assert_eq!(writer.location("a/b").unwrap(), "p/a/b");
    put(&writer, "série/ß 1+%.bin", b"unicode", false).unwrap();
    assert_eq!(get(&reader, "série/ß 1+%.bin", 7).unwrap(), b"unicode");
    let listed: Vec<String> = reader.list().unwrap().into_iter().map(|o| o.key).collect();
    assert!(listed.contains(&"série/ß 1+%.bin".to_owned()), "{listed:?}");
    writer.delete("a/b").unwrap();
    writer.delete("a/b").unwrap();
    assert_eq!(reader.stat("a/b").unwrap(), None);
}

/// The commands that take a bucket work on an Azure container (through `Source::open`):
/// `ls`, `verify`, `info --path`; `share` adds a reader who then opens a file and removes one who then
/// does not; `rotate` keeps every file readable.
#[test]
fn bucket_commands_share_and_rotate_work_on_an_azure_container() {
    let azurite = Azurite::start();
    azurite.create_container("access");
    let ws = Workspace::new();
    let scan = pattern(200_000, 3);
    ws.write_plain("s/scan.bin", &scan);
    let out = azurite.source("access/site");
    run_ok(
        seal_to(&ws, &azurite, &ws.plain(), &out)
            .arg("-i")
            .arg(&ws.identity),
    );
    let other_path = ws.dir.path().join("other.key");
    let other = smpfs::keys::Identity::generate();
    other.save_new(&other_path, None).unwrap();
    let other_recipient = other.recipient().to_string();
    let endpoint = azurite.endpoint_option();
    let command = |args: &[&str], identity: &Path| {
        ws_smpfs(&ws)
            .args(args)
            .args([out.as_str(), "-o", &endpoint, "-i"])
            .arg(identity)
            .output()
            .unwrap()
    };
    let cat_as = |identity: &Path| {
        ws_smpfs(&ws)
            .args(["cat", &out, "s/scan.bin", "-o", &endpoint, "-i"])
            .arg(identity)
            .output()
            .unwrap()
    };
    for args in [&["ls"][..], &["verify"][..]] {
        let done = command(args, &ws.identity);
        assert!(done.status.success(), "{args:?}: {}", stderr(&done));
    }
    let info = ws_smpfs(&ws)
        .args(["info", &out, "--path", "s/scan.bin", "-o", &endpoint, "-i"])
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
    let names: Vec<String> = azurite
        .backend("access")
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("scan.bin")),
        "a v2 bucket names no file: {names:?}"
    );
    let rotated = command(&["rotate"], &ws.identity);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(cat_as(&ws.identity).stdout == scan);
}

/// An account SAS (`AZURE_STORAGE_SAS_TOKEN`) and a connection string (which also gives the
/// endpoint, so no `-o endpoint=`) authorize reads and writes as the account key does; a SAS
/// without write permission may read but not write.
#[test]
fn sas_tokens_and_connection_strings_authorize_like_the_key() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let azurite = Azurite::start();
    azurite.create_container("sas");
    // An account SAS (version 2019-12-12), signed as Azure documents it.
    let sas = |permissions: &str| {
        let key = base64::engine::general_purpose::STANDARD
            .decode(smpfs::backend::azure::DEV_KEY)
            .unwrap();
        let text = format!(
            "devstoreaccount1\n{permissions}\nb\nsco\n\n2099-01-01T00:00:00Z\n\n\n2019-12-12\n"
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(text.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String =
            percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        format!("sv=2019-12-12&ss=b&srt=sco&sp={permissions}&se=2099-01-01T00:00:00Z&sig={sig}")
    };
    let open = |vars: Vec<(&'static str, String)>, endpoint: Option<String>| {
        let options = smpfs::backend::AzureOptions {
            endpoint,
            timeout: Duration::from_secs(10),
        };
        smpfs::backend::AzureBackend::open_with(
            azurite.source("sas/p").parse().unwrap(),
            &options,
            move |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            },
        )
        .unwrap()
    };
    let writer = open(
        vec![("AZURE_STORAGE_SAS_TOKEN", sas("rwdlac"))],
        Some(azurite.endpoint()),
    );
    put(&writer, "a/one", b"by SAS", false).unwrap();
    assert_eq!(get(&writer, "a/one", 6).unwrap(), b"by SAS");
    assert_eq!(writer.list().unwrap().len(), 1);
    let reader = open(
        vec![("AZURE_STORAGE_SAS_TOKEN", format!("?{}", sas("rl")))],
        Some(azurite.endpoint()),
    );
    assert_eq!(get(&reader, "a/one", 6).unwrap(), b"by SAS");
    let refused = put(&reader, "a/two", b"no", false).unwrap_err().to_string();
    assert!(refused.contains("HTTP 403"), "{refused}");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        smpfs::backend::azure::DEV_KEY,
        azurite.endpoint()
    );
    let by_string = open(vec![("AZURE_STORAGE_CONNECTION_STRING", connection)], None);
    put(&by_string, "a/two", b"by string", false).unwrap();
    assert_eq!(by_string.stat("a/two").unwrap(), Some(9));
    assert_eq!(get(&writer, "a/two", 9).unwrap(), b"by string");
}
