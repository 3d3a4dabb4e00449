//! `shred` on a real ext4 filesystem (a loop-mounted image file; needs root): a canary
//! written to a file is in the file's blocks of the image before, and nowhere in the image
//! after. ext4's default `data=ordered` mode writes file data back to the blocks it already
//! has (only metadata goes through the journal), so the overwrite lands on the very blocks
//! that held the canary; that is what makes this test meaningful. It would not hold on
//! `data=journal`, btrfs or ZFS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use smpfs::shred::{shred, ShredError, ShredReport};

/// Runs a system tool, panicking with its stderr if it fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `debugfs -R request` on an unmounted image, read-only.
fn debugfs(image: &Path, request: &str) -> String {
    let out = run_ok(Command::new("debugfs").arg("-R").arg(request).arg(image));
    String::from_utf8(out.stdout).unwrap()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// An image loop-mounted on a directory; unmounted on drop, also when a test fails.
struct LoopMount {
    mnt: PathBuf,
    mounted: bool,
}

impl LoopMount {
    fn new(image: &Path, mnt: &Path) -> Self {
        let out = Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(mnt)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount -o loop failed; this test needs root, losetup and loop devices \
             (/dev/loop-control): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopMount {
            mnt: mnt.to_owned(),
            mounted: true,
        }
    }

    fn unmount(mut self) {
        self.mounted = false;
        run_ok(Command::new("umount").arg(&self.mnt));
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
    }
}

#[test]
fn shredded_canary_is_gone_from_its_ext4_blocks_and_the_whole_image() {
    let dir = tempfile::Builder::new()
        .prefix("smpfs-shred-")
        .tempdir()
        .unwrap();
    let image = dir.path().join("ext4.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(Command::new("truncate").args(["-s", "64M"]).arg(&image));
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));

    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).unwrap();
    let canary = format!("CANARY-{}", hex::encode(random));
    let name = format!("patient-{}.txt", hex::encode(&random[..8]));
    let mut data = Vec::new();
    while data.len() < 1 << 20 {
        data.extend_from_slice(format!("{canary} {}\n", data.len()).as_bytes());
    }
    data.truncate(1 << 20);

    let mount = LoopMount::new(&image, &mnt);
    std::fs::write(mnt.join(&name), &data).unwrap();
    run_ok(&mut Command::new("sync"));
    mount.unmount();

    // Where the file's data lives in the image.
    let block_size: usize = debugfs(&image, "stats")
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .expect("debugfs stats names the block size")
        .trim()
        .parse()
        .unwrap();
    let blocks: Vec<usize> = debugfs(&image, &format!("blocks /{name}"))
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(blocks.len() * block_size, data.len(), "{blocks:?}");
    let read_blocks = |image_bytes: &[u8]| -> Vec<u8> {
        blocks
            .iter()
            .flat_map(|&b| &image_bytes[b * block_size..(b + 1) * block_size])
            .copied()
            .collect()
    };
    // Control: the canary really is in those blocks, and the image, before shredding.
    let before = std::fs::read(&image).unwrap();
    assert_eq!(
        read_blocks(&before),
        data,
        "the file's blocks hold its data"
    );
    assert!(count(&before, canary.as_bytes()) > 0);

    let mount = LoopMount::new(&image, &mnt);
    // A tree with a mount point in it is refused as a whole, before anything is touched.
    match shred(&[dir.path().to_owned()], 3, &mut |_| {}) {
        Err(ShredError::Refused { path, .. }) => assert_eq!(path, mnt),
        other => panic!("a tree holding a mount point must be refused, got {other:?}"),
    }
    assert!(image.exists() && mnt.join(&name).exists());

    let mut done = Vec::new();
    let report = shred(&[mnt.join(&name)], 3, &mut |p| done.push(p.to_owned())).unwrap();
    assert_eq!(
        report,
        ShredReport {
            files: 1,
            bytes: 1 << 20,
            dirs: 0,
            symlinks: 0
        }
    );
    assert_eq!(done, vec![mnt.join(&name)]);
    assert!(!mnt.join(&name).exists());
    mount.unmount();

    let after = std::fs::read(&image).unwrap();
    let old_blocks = read_blocks(&after);
    assert_eq!(
        count(&old_blocks, canary.as_bytes()),
        0,
        "the canary is still in the file's former blocks"
    );
    assert_eq!(
        count(&after, canary.as_bytes()),
        0,
        "the canary is still somewhere in the image"
    );
    assert!(
        old_blocks.iter().all(|&b| b == 0),
        "the last (zero) pass landed on the file's own blocks"
    );
    // The name is gone from the directory block, but ext4's journal keeps old copies of
    // metadata blocks (the directory, the inode) until it wraps: informational only.
    eprintln!(
        "old file name still found {} times in the image (journal)",
        count(&after, name.as_bytes())
    );
}

/// The command removes a tree, reports what it did, and states its limits plainly.
#[test]
fn the_command_shreds_a_tree_and_states_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("study");
    std::fs::create_dir_all(tree.join("CT")).unwrap();
    std::fs::write(tree.join("CT/1.dcm"), b"patient data").unwrap();
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_smpfs"))
            .args(["shred", "--passes", "2"])
            .arg(&tree),
    );
    assert!(!tree.exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 files (12 bytes, 2 passes), 2 directories"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SSDs") && stderr.contains("copy-on-write"),
        "{stderr}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_smpfs"))
        .arg("shred")
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent"));
}
