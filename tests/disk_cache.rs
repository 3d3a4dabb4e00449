//! `-o disk_cache=DIR`: a disk cache of ciphertext for remote buckets, on a real mount of a
//! moto S3 server (started by the tests). It survives remounts, never serves a damaged or
//! stale entry, stays within its bound, holds no plaintext, and serves one mount at a time.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::moto::Moto;
use common::{pattern, run_ok, Workspace};

/// Seals `files` into `s3://BUCKET/PREFIX` (`extra` seal arguments, e.g. `--layout v1`).
fn seal(ws: &Workspace, moto: &Moto, out: &str, extra: &[&str]) {
    run_ok(
        ws.smpfs()
            .arg("seal")
            .arg(ws.plain())
            .args(["--out", out, "-o", &moto.endpoint_option(), "-i"])
            .arg(&ws.identity)
            .args(extra),
    );
}

fn status(ws: &Workspace) -> serde_json::Value {
    let out = run_ok(ws.smpfs().arg("status").arg(ws.mnt()).arg("--json"));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn pieces_bytes(cache: &Path) -> u64 {
    files_under(&cache.join("pieces"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn assert_reads(ws: &Workspace, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        assert_eq!(
            &std::fs::read(ws.mnt().join(name)).unwrap(),
            data,
            "{name} differs"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cache_serves_a_second_mount_without_the_store_and_holds_no_plaintext() {
    let mut moto = Moto::start();
    moto.create_bucket("epochs");
    let ws = Workspace::new();
    let canary = b"CANARY-7f3e-disk-cache-plaintext-must-never-land-here".repeat(2000);
    let files = vec![
        ("canary.txt", canary.clone()),
        ("series/big.bin", pattern(3_000_000, 5)),
        ("series/small.bin", pattern(40_000, 6)),
    ];
    for (name, data) in &files {
        ws.write_plain(name, data);
    }
    seal(&ws, &moto, "s3://epochs/zk", &[]);
    let cache = ws.dir.path().join("cache");
    let option = format!("disk_cache={}", cache.display());

    let mount = ws.mount_source("s3://epochs/zk", &[&moto.endpoint_option(), &option]);
    assert_reads(&ws, &files);
    let first = status(&ws);
    assert_eq!(first["disk_cache"]["hits"], 0, "{first}");
    assert!(
        first["disk_cache"]["misses"].as_u64().unwrap() > 0,
        "{first}"
    );
    assert!(
        first["audit"]["state"]
            .as_str()
            .unwrap()
            .starts_with("open"),
        "{first}"
    );
    assert_eq!(first["locked"], false);

    // A second mount on the same directory is refused, clearly.
    let second = ws.dir.path().join("mnt2");
    std::fs::create_dir(&second).unwrap();
    let refused = ws
        .smpfs()
        .arg("mount")
        .arg("s3://epochs/zk")
        .arg(&second)
        .arg("-i")
        .arg(&ws.identity)
        .args(["-f", "-o", &moto.endpoint_option(), "-o", &option])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is in use by another mount"),
        "{}",
        stderr(&refused)
    );
    // So is clearing it while mounted.
    let clear = ws
        .smpfs()
        .args(["cache", "clear"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(!clear.status.success(), "{}", stderr(&clear));
    assert!(mount.unmount().success());

    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for piece in files_under(&cache) {
        let bytes = std::fs::read(&piece).unwrap();
        assert!(
            !bytes.windows(40).any(|w| w == &canary[..40]),
            "plaintext found in {}",
            piece.display()
        );
    }

    // Remounted: every byte comes from the cache, even with the store gone.
    let mount = ws.mount_source("s3://epochs/zk", &[&moto.endpoint_option(), &option]);
    moto.kill();
    assert_reads(&ws, &files);
    let again = status(&ws);
    assert!(again["disk_cache"]["hits"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(again["disk_cache"]["misses"], 0, "{again}");
    assert!(mount.unmount().success());

    let out = run_ok(ws.smpfs().args(["cache", "clear"]).arg(&cache));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cached pieces removed"));
    assert_eq!(pieces_bytes(&cache), 0);
}

#[test]
fn damaged_entries_are_fetched_again_and_the_bound_holds() {
    let moto = Moto::start();
    moto.create_bucket("epochs");
    let ws = Workspace::new();
    let files = vec![
        ("a.bin", pattern(2_500_000, 1)),
        ("b.bin", pattern(900_000, 2)),
    ];
    for (name, data) in &files {
        ws.write_plain(name, data);
    }
    seal(&ws, &moto, "s3://epochs/zk", &[]);
    let cache = ws.dir.path().join("cache");
    let option = format!("disk_cache={}", cache.display());
    let mount = ws.mount_source("s3://epochs/zk", &[&moto.endpoint_option(), &option]);
    assert_reads(&ws, &files);
    assert!(mount.unmount().success());

    // Flip a byte in one piece, cut another short: neither is served, both are replaced.
    // (When both lie in one read, the first found sends the whole read to the store and
    // its refetch overwrites the second, so at least one is counted as damaged.)
    let pieces = files_under(&cache.join("pieces"));
    assert!(pieces.len() >= 2, "{pieces:?}");
    let mut flipped = std::fs::read(&pieces[0]).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x20;
    std::fs::write(&pieces[0], &flipped).unwrap();
    let cut = std::fs::read(&pieces[1]).unwrap();
    let cut = cut[..cut.len() / 2].to_vec();
    std::fs::write(&pieces[1], &cut).unwrap();
    let mount = ws.mount_source("s3://epochs/zk", &[&moto.endpoint_option(), &option]);
    assert_reads(&ws, &files);
    let after = status(&ws);
    assert!(
        after["disk_cache"]["damaged"].as_u64().unwrap() >= 1,
        "{after}"
    );
    assert!(mount.unmount().success());
    for (piece, damaged) in [(&pieces[0], &flipped), (&pieces[1], &cut)] {
        assert_ne!(
            std::fs::read(piece).ok().as_ref(),
            Some(damaged),
            "{} is still damaged",
            piece.display()
        );
    }
    assert!(
        mount_log_mentions(&ws, "damaged piece deleted"),
        "damage not logged"
    );

    // A bound below the data: the pieces never exceed it.
    std::fs::remove_dir_all(&cache).unwrap();
    let bounded = [option.as_str(), "disk_cache_size=1M"];
    let mut options = vec![moto.endpoint_option()];
    options.extend(bounded.iter().map(|s| s.to_string()));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let mount = ws.mount_source("s3://epochs/zk", &options);
    assert_reads(&ws, &files);
    let bounded_status = status(&ws);
    assert!(mount.unmount().success());
    assert!(pieces_bytes(&cache) <= 1 << 20, "{}", pieces_bytes(&cache));
    assert!(
        bounded_status["disk_cache"]["bytes"].as_u64().unwrap() <= 1 << 20,
        "{bounded_status}"
    );
}

fn mount_log_mentions(ws: &Workspace, text: &str) -> bool {
    std::fs::read_to_string(ws.dir.path().join("mount.log"))
        .unwrap_or_default()
        .contains(text)
}

#[test]
fn an_object_replaced_in_a_v1_bucket_is_fetched_again() {
    let moto = Moto::start();
    moto.create_bucket("epochs");
    let ws = Workspace::new();
    ws.write_plain("scan.bin", &pattern(600_000, 1));
    seal(&ws, &moto, "s3://epochs/v1", &["--layout", "v1"]);
    let cache = ws.dir.path().join("cache");
    let option = format!("disk_cache={}", cache.display());
    let mount = ws.mount_source("s3://epochs/v1", &[&moto.endpoint_option(), &option]);
    assert_eq!(
        std::fs::read(ws.mnt().join("scan.bin")).unwrap(),
        pattern(600_000, 1)
    );
    assert!(mount.unmount().success());

    ws.write_plain("scan.bin", &pattern(600_000, 9));
    seal(&ws, &moto, "s3://epochs/v1", &["--overwrite"]);
    let mount = ws.mount_source("s3://epochs/v1", &[&moto.endpoint_option(), &option]);
    assert_eq!(
        std::fs::read(ws.mnt().join("scan.bin")).unwrap(),
        pattern(600_000, 9)
    );
    let replaced = status(&ws);
    assert!(
        replaced["disk_cache"]["misses"].as_u64().unwrap() > 0,
        "{replaced}"
    );
    assert!(mount.unmount().success());

    // A local bucket has nothing to cache: the option is refused.
    let refused = ws
        .mount_command()
        .args(["-f", "-o", &option])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("disk_cache= is for remote buckets"));
}
