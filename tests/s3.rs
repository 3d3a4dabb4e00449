//! The S3 backend against a real S3 server on loopback (moto), through real mounts:
//! sealing trees (single and multipart uploads), pagination, nested prefixes, re-runs,
//! an object replaced mid-read, a server killed and brought back, and wrong credentials.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::{aws_env, Moto};
use common::{pattern, pydicom_test_files, pydicom_tree_check, run_ok, smpfs, Workspace};

const BUCKET: &str = "scans";

/// `smpfs seal plain/… --out s3://… -o endpoint=…`, with the test credentials.
fn seal_to(ws: &Workspace, moto: &Moto, source: &std::path::Path, out: &str) -> Command {
    let mut cmd = smpfs();
    aws_env(&mut cmd)
        .args(["seal", "--layout", "v1"])
        .arg(source)
        .args(["--to", &ws.recipient, "--out", out, "-o"])
        .arg(moto.endpoint_option());
    cmd
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files of many sizes (empty, one chunk, chunk boundaries, multipart) sealed to a nested
/// prefix read back byte-exact, mounted at the prefix and at its parent; a re-run keeps
/// everything and a deleted object is sealed again.
#[test]
fn sealed_tree_reads_back_exactly_and_reseal_skips_what_arrived() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
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
    let out = run_ok(&mut seal_to(
        &ws,
        &moto,
        &ws.plain(),
        "s3://scans/site-a/2026",
    ));
    assert!(
        stderr(&out).contains("sealed 7 of 7 files"),
        "{}",
        stderr(&out)
    );

    let listed = moto.python(
        "r = s3.list_objects_v2(Bucket='scans', Prefix='site-a/2026/')\n\
         print(sorted(o['Key'] for o in r['Contents']))",
    );
    assert!(
        listed.contains("site-a/2026/series/6/slice.bin"),
        "{listed}"
    );
    let uploads =
        moto.python("print(len(s3.list_multipart_uploads(Bucket='scans').get('Uploads', [])))");
    assert_eq!(
        uploads.trim(),
        "0",
        "no unfinished multipart uploads are left"
    );

    for source in ["s3://scans/site-a/2026", "s3://scans/site-a"] {
        let mount = ws.mount_source(source, &[&moto.endpoint_option(), "audit=off"]);
        let base = if source.ends_with("2026") {
            ws.mnt()
        } else {
            ws.mnt().join("2026")
        };
        for (i, size) in sizes.iter().enumerate() {
            let path = base.join(format!("series/{i}/slice.bin"));
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", path.display(), mount.log_text()));
            assert_eq!(data.len(), *size);
            assert!(
                data == pattern(*size, i as u8),
                "{} differs",
                path.display()
            );
        }
        let status = mount.unmount();
        assert!(status.success());
    }

    let again = run_ok(&mut seal_to(
        &ws,
        &moto,
        &ws.plain(),
        "s3://scans/site-a/2026",
    ));
    assert!(
        stderr(&again).contains("7 files were already sealed there")
            && stderr(&again).contains("sealed 0 of 7 files"),
        "{}",
        stderr(&again)
    );
    moto.python("s3.delete_object(Bucket='scans', Key='site-a/2026/series/5/slice.bin')");
    let resumed = run_ok(&mut seal_to(
        &ws,
        &moto,
        &ws.plain(),
        "s3://scans/site-a/2026",
    ));
    assert!(
        stderr(&resumed).contains("6 files were already sealed there")
            && stderr(&resumed).contains("sealed 1 of 7 files"),
        "{}",
        stderr(&resumed)
    );
}

/// More than 1000 objects: the listing follows continuation tokens, also within a shard
/// (a "directory" listed on its own, in parallel with its siblings), and finds the objects
/// above the shards, at every level it descended through, and nested inside them.
#[test]
fn listing_paginates_past_1000_objects_and_covers_every_shard() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    for i in 0..1020 {
        ws.write_plain(
            &format!("many/big/{i:04}.txt"),
            format!("object {i}").as_bytes(),
        );
    }
    ws.write_plain("top.txt", b"at the root");
    ws.write_plain("many/beside.txt", b"beside the shards");
    ws.write_plain("many/small/x.txt", b"x");
    ws.write_plain("many/small/deeper/y.txt", b"y");
    run_ok(&mut seal_to(&ws, &moto, &ws.plain(), "s3://scans"));
    let mount = ws.mount_source("s3://scans", &[&moto.endpoint_option(), "audit=off"]);
    let names = std::fs::read_dir(ws.mnt().join("many/big"))
        .unwrap()
        .count();
    assert_eq!(names, 1020, "log:\n{}", mount.log_text());
    let read = |path: &str| std::fs::read_to_string(ws.mnt().join(path)).unwrap();
    assert_eq!(read("many/big/1019.txt"), "object 1019");
    assert_eq!(read("top.txt"), "at the root");
    assert_eq!(read("many/beside.txt"), "beside the shards");
    assert_eq!(read("many/small/x.txt"), "x");
    assert_eq!(read("many/small/deeper/y.txt"), "y");
}

/// pydicom's bundled DICOM files, sealed to S3 and read back through the mount, are
/// byte-exact and parse with pydicom.
#[test]
fn pydicom_files_read_back_through_an_s3_mount() {
    let files = pydicom_test_files();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    run_ok(&mut seal_to(&ws, &moto, &files, "s3://scans/dicom"));
    let _mount = ws.mount_source("s3://scans/dicom", &[&moto.endpoint_option(), "audit=off"]);
    let out = pydicom_tree_check(&files, &ws.mnt());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("compared {}", String::from_utf8_lossy(&out.stdout));
}

/// Two trees sealed side by side under one bucket with the same relative paths cannot swap
/// objects: each header binds its prefix, so the mount hides the swapped objects and `cat`
/// refuses them, while the untouched ones read back.
#[test]
fn objects_swapped_between_two_prefixes_are_refused() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    let (one, two) = (pattern(90_000, 1), pattern(90_000, 2));
    ws.write_plain("p1/CT/1.dcm", &one);
    ws.write_plain("p1/CT/2.dcm", &one);
    ws.write_plain("p2/CT/1.dcm", &two);
    for p in ["p1", "p2"] {
        run_ok(&mut seal_to(
            &ws,
            &moto,
            &ws.plain().join(p),
            &format!("s3://{BUCKET}/site/{p}"),
        ));
    }
    moto.python(&format!(
        "b = '{BUCKET}'\n\
         one = s3.get_object(Bucket=b, Key='site/p1/CT/1.dcm')['Body'].read()\n\
         two = s3.get_object(Bucket=b, Key='site/p2/CT/1.dcm')['Body'].read()\n\
         s3.put_object(Bucket=b, Key='site/p1/CT/1.dcm', Body=two)\n\
         s3.put_object(Bucket=b, Key='site/p2/CT/1.dcm', Body=one)\n"
    ));
    // Mounted at the parent prefix, as a site would.
    let mount = ws.mount_source(
        &format!("s3://{BUCKET}/site"),
        &[&moto.endpoint_option(), "audit=off"],
    );
    assert_eq!(std::fs::read(ws.mnt().join("p1/CT/2.dcm")).unwrap(), one);
    for swapped in ["p1/CT/1.dcm", "p2/CT/1.dcm"] {
        let error = std::fs::read(ws.mnt().join(swapped)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{swapped}");
    }
    drop(mount);
    let mut cat = smpfs();
    let out = aws_env(&mut cat)
        .args(["cat", &format!("s3://{BUCKET}/site/p1"), "CT/1.dcm", "-i"])
        .arg(&ws.identity)
        .arg("-o")
        .arg(moto.endpoint_option())
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        stderr(&out).contains("moved or swapped"),
        "{}",
        stderr(&out)
    );
    let mut cat = smpfs();
    let out = run_ok(
        aws_env(&mut cat)
            .args(["cat", &format!("s3://{BUCKET}/site"), "p1/CT/2.dcm", "-i"])
            .arg(&ws.identity)
            .arg("-o")
            .arg(moto.endpoint_option()),
    );
    assert_eq!(out.stdout, one);
}

/// Reading a file whose object is replaced after the mount listed it fails with EIO: the
/// read is pinned to the listed ETag, so no bytes of the new version are ever served.
#[test]
fn an_object_replaced_during_a_read_is_an_error_not_mixed_data() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    let data = pattern(20 << 20, 1);
    ws.write_plain("big.bin", &data);
    run_ok(&mut seal_to(&ws, &moto, &ws.plain(), "s3://scans"));
    let mount = ws.mount_source("s3://scans", &[&moto.endpoint_option(), "audit=off"]);
    let mut file = std::fs::File::open(ws.mnt().join("big.bin")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    file.read_exact(&mut first).unwrap();
    assert!(first == data[..1 << 20]);

    // The same file sealed again: same size, new file id and keys, new ETag.
    let reseal = seal_to(&ws, &moto, &ws.plain(), "s3://scans")
        .arg("--overwrite")
        .output()
        .unwrap();
    assert!(reseal.status.success(), "{}", stderr(&reseal));

    file.seek(SeekFrom::Start(16 << 20)).unwrap();
    let mut later = vec![0u8; 1 << 20];
    let error = file.read_exact(&mut later).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        mount.log_text().contains("changed since it was listed"),
        "log:\n{}",
        mount.log_text()
    );
}

/// With the server gone, a read fails with EIO within the timeout instead of hanging;
/// once the same object is back, reads work again without remounting.
#[test]
fn a_killed_server_gives_eio_within_the_timeout_and_reads_resume() {
    let mut moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    let data = pattern(7 << 20, 2);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(&ws, &moto, &ws.plain(), "s3://scans"));
    // Keep the sealed bytes so the restarted (empty) server can be given the same object.
    let saved = ws.dir.path().join("object.saved");
    moto.python(&format!(
        "s3.download_file('scans', 'scan.bin', '{}')",
        saved.display()
    ));
    let mount = ws.mount_source(
        "s3://scans",
        &[&moto.endpoint_option(), "audit=off", "timeout=3s"],
    );
    let path = ws.mnt().join("scan.bin");
    let mut file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 65_536];
    file.read_exact(&mut buf).unwrap();

    moto.kill();
    let started = Instant::now();
    file.seek(SeekFrom::Start(6 << 20)).unwrap();
    let error = file.read_exact(&mut buf).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}");

    moto.restart();
    moto.create_bucket(BUCKET);
    moto.python(&format!(
        "s3.upload_file('{}', 'scans', 'scan.bin')",
        saved.display()
    ));
    file.seek(SeekFrom::Start(6 << 20)).unwrap();
    file.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read after restart: {e}; log:\n{}", mount.log_text()));
    assert!(buf == data[6 << 20..(6 << 20) + 65_536]);
}

/// A server that stops answering (SIGSTOP: connections hang rather than fail) also gives
/// EIO within the timeout, and reads resume when it continues.
#[test]
fn a_hung_server_gives_eio_within_the_timeout() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    let data = pattern(3 << 20, 3);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(&ws, &moto, &ws.plain(), "s3://scans"));
    let mount = ws.mount_source(
        "s3://scans",
        &[&moto.endpoint_option(), "audit=off", "timeout=2s"],
    );
    let mut file = std::fs::File::open(ws.mnt().join("scan.bin")).unwrap();
    common::assert_hung_server_fails_in_time(&mount, &mut file, &data, moto.pid());
}

/// Credentials the server rejects make the mount fail at once, saying why; nothing is
/// mounted.
#[test]
fn wrong_credentials_fail_the_mount_clearly() {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let ws = Workspace::new();
    let out = aws_env(&mut smpfs())
        .arg("mount")
        .arg("s3://scans")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", &moto.endpoint_option()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("access denied (wrong credentials") && message.contains("s3://scans/"),
        "{message}"
    );
    assert!(!common::is_mounted(&ws.mnt()));
}

/// With no credentials anywhere, the mount says what to set, not the SDK's dump of every
/// provider it tried.
#[test]
fn missing_credentials_are_named_with_the_fix() {
    let moto = Moto::start();
    let ws = Workspace::new();
    let home = ws.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = aws_env(&mut smpfs())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", &home)
        .arg("mount")
        .arg("s3://scans")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", &moto.endpoint_option()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("no AWS credentials found") && message.contains("AWS_ACCESS_KEY_ID"),
        "{message}"
    );
    assert!(!message.contains("CredentialsNotLoaded"), "{message}");
}

/// An endpoint nobody listens on fails the mount within the timeout.
#[test]
fn an_unreachable_endpoint_fails_the_mount_in_bounded_time() {
    let ws = Workspace::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = aws_env(&mut smpfs())
        .arg("mount")
        .arg("s3://scans")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args([
            "-o",
            &format!("endpoint=http://127.0.0.1:{port},timeout=3s"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(!common::is_mounted(&ws.mnt()));
}

/// `audit_anchor=s3://…` writes each checkpoint as a new object under Object Lock
/// retention; `audit verify --anchor s3://…` reads them back, and catches the newest
/// records cut from the log.
#[test]
fn audit_checkpoints_go_to_s3_under_object_lock_and_verify_reads_them() {
    let moto = Moto::start();
    moto.python("s3.create_bucket(Bucket='anchors', ObjectLockEnabledForBucket=True)");
    let ws = Workspace::new();
    ws.write_plain("note.txt", b"hello");
    ws.seal_all();
    let log = ws.dir.path().join("audit.log");
    let mount = ws.mount(&[
        &format!("audit={}", log.display()),
        "audit_anchor=s3://anchors/ws1",
        &moto.endpoint_option(),
    ]);
    assert_eq!(std::fs::read(ws.mnt().join("note.txt")).unwrap(), b"hello");
    assert!(mount.unmount().success());

    let objects = moto.python(
        "r = s3.list_objects_v2(Bucket='anchors', Prefix='ws1/')\n\
         keys = [o['Key'] for o in r['Contents']]\n\
         h = s3.head_object(Bucket='anchors', Key=keys[-1])\n\
         print(len(keys), h.get('ObjectLockMode'), h.get('ObjectLockRetainUntilDate').year)",
    );
    let fields: Vec<&str> = objects.split_whitespace().collect();
    assert!(fields[0].parse::<u32>().unwrap() >= 2, "{objects}");
    assert_eq!(fields[1], "GOVERNANCE", "{objects}");
    assert!(fields[2].parse::<i32>().unwrap() >= 2031, "{objects}");

    let verify = |log: &std::path::Path| {
        aws_env(&mut smpfs())
            .args(["audit", "verify"])
            .arg(log)
            .arg("-i")
            .arg(&ws.identity)
            .args([
                "--anchor",
                "s3://anchors/ws1",
                "-o",
                &moto.endpoint_option(),
            ])
            .output()
            .unwrap()
    };
    let good = verify(&log);
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(
        String::from_utf8_lossy(&good.stdout).contains("checkpoints match"),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );

    // Cut the last two records (the purge and the seal) off the log.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = ws.dir.path().join("cut.log");
    std::fs::write(&cut, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let bad = verify(&cut);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("anchor"), "{}", stderr(&bad));
}

/// The endpoint can come from the standard AWS configuration instead of `-o endpoint=`:
/// `AWS_ENDPOINT_URL`, or a named profile (`-o profile=`) of `AWS_CONFIG_FILE` that sets
/// `endpoint_url` and a region.
#[test]
fn the_endpoint_comes_from_aws_endpoint_url_or_a_named_profile() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let ws = Workspace::new();
    let data = pattern(200_000, 9);
    ws.write_plain("scan.bin", &data);
    run_ok(&mut seal_to(&ws, &moto, &ws.plain(), "s3://scans/env"));
    let config = ws.dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile lab]\nregion = eu-west-1\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let mount = |configure: &dyn Fn(&mut Command), options: &str| {
        let mut cmd = smpfs();
        aws_env(&mut cmd);
        configure(&mut cmd);
        cmd.arg("mount")
            .arg("s3://scans/env")
            .arg(ws.mnt())
            .arg("-i")
            .arg(&ws.identity)
            .args(["-o", options]);
        run_ok(&mut cmd);
        assert_eq!(std::fs::read(ws.mnt().join("scan.bin")).unwrap(), data);
        run_ok(Command::new("umount").arg(ws.mnt()));
        // The daemon releases the audit log when it exits.
        std::thread::sleep(Duration::from_millis(300));
    };
    mount(
        &|cmd| {
            cmd.env("AWS_ENDPOINT_URL", moto.endpoint());
        },
        "path_style",
    );
    mount(
        &|cmd| {
            cmd.env("AWS_CONFIG_FILE", &config);
        },
        "profile=lab,path_style",
    );
    // An unknown profile is a clear error, not a silent fall back to the defaults.
    let out = aws_env(&mut smpfs())
        .env("AWS_CONFIG_FILE", &config)
        .arg("mount")
        .arg("s3://scans/env")
        .arg(ws.mnt())
        .arg("-i")
        .arg(&ws.identity)
        .args(["-o", "profile=nosuch,path_style,timeout=3s"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown profile mounted");
    assert!(
        stderr(&out).contains("profile=nosuch") && stderr(&out).contains("no such profile"),
        "{}",
        stderr(&out)
    );
    assert!(!common::is_mounted(&ws.mnt()));
}
