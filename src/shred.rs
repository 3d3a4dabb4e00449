//! Shredding plaintext sources after sealing them: overwrite each file in place, truncate
//! it, rename it to a random name and unlink it, with an fsync after every step.
//!
//! This only helps where the filesystem writes a file's data back to the same blocks.
//! SSDs and other flash (wear levelling), copy-on-write filesystems (btrfs, ZFS),
//! journaling of file data (ext4 `data=journal`), snapshots and backups may all keep the
//! old blocks. smpfs's real guarantee is that it never writes plaintext at all; `shred`
//! is for the plaintext sources a user sealed, and for any on-disk ciphertext cache.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// What `shred` cannot promise, in words for the command's output.
pub const LIMITS: &str = "shred overwrites data in place, which SSDs (wear levelling), \
copy-on-write filesystems (btrfs, ZFS), journaling of file data (ext4 data=journal), \
snapshots and backups may defeat by keeping the old blocks. smpfs's real guarantee is that \
it never writes plaintext at all; shred is for the plaintext sources you sealed and for any \
on-disk ciphertext cache.";

/// Bytes written per write call; random passes draw this much from the OS at a time.
const BLOCK: usize = 1 << 20;

/// Errors in shredding. Each names the path it happened at.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    #[error("passes must be at least 1 (the last pass writes zeros)")]
    NoPasses,
    #[error("{path}: refusing to shred: {reason}")]
    Refused { path: PathBuf, reason: &'static str },
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What `shred` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShredReport {
    /// Regular files overwritten and removed.
    pub files: u64,
    /// Their total length before shredding (each overwritten `passes` times).
    pub bytes: u64,
    /// Directories removed (after everything in them).
    pub dirs: u64,
    /// Symbolic links removed (never followed; their targets are untouched).
    pub symlinks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    kind: Kind,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ShredError + 'a {
    move |source| ShredError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

fn errno<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(Errno) -> ShredError + 'a {
    move |e| io(path, action)(e.into())
}

fn refused(path: &Path, reason: &'static str) -> ShredError {
    ShredError::Refused {
        path: path.to_owned(),
        reason,
    }
}

/// Shreds `paths`: every regular file is overwritten over its whole length `passes` times
/// (random bytes, the last pass zeros), each pass followed by an fsync, then truncated to
/// zero, fsynced, renamed to a random name in its directory, unlinked, and the directory
/// fsynced after the rename and after the unlink. Directories are shredded depth first,
/// each removed after its contents; symlinks are removed themselves, never followed.
/// `progress` is called with each path once it is gone.
///
/// Invariants:
/// - Everything is checked before anything is touched: a path that does not exist, is not
///   a regular file, directory or symlink (a device, fifo, socket), names no entry (`/`,
///   `..`), is named twice (also through an enclosing directory), or lies on another
///   filesystem than the directory argument it is in (a mount point) fails the whole call
///   with nothing shredded; so does `passes == 0`.
/// - The first error while shredding stops the call and names its path; nothing is
///   skipped silently. Entries done before it are gone; the rest are untouched.
/// - Files are opened with `O_NOFOLLOW` relative to their directory, and checked to still
///   be regular files, so a path swapped for a symlink or special file after the check
///   fails instead of shredding something else.
///
/// Limits: this only destroys data where the filesystem rewrites the same blocks (ext4
/// `data=ordered` or `writeback`, xfs, on a spinning disk or a thin-provisioned volume that
/// passes writes through). SSDs (wear levelling), copy-on-write filesystems (btrfs, ZFS),
/// journaled file data (ext4 `data=journal`), snapshots and backups may keep the old
/// blocks; names and sizes may persist in filesystem journals. smpfs's real guarantee is
/// never writing plaintext at all; this is for the plaintext sources a user sealed and for
/// any on-disk ciphertext cache.
pub fn shred(
    paths: &[PathBuf],
    passes: u32,
    progress: &mut dyn FnMut(&Path),
) -> Result<ShredReport, ShredError> {
    if passes == 0 {
        return Err(ShredError::NoPasses);
    }
    let entries = plan(paths)?;
    let mut report = ShredReport::default();
    let mut block = vec![0u8; BLOCK];
    for entry in &entries {
        let (dir_path, name) = split(&entry.path);
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir_path)
            .map_err(io(&entry.path, "opening its directory"))?;
        match entry.kind {
            Kind::File => {
                report.bytes += shred_file(&dir, name, &entry.path, passes, &mut block)?;
                report.files += 1;
            }
            Kind::Symlink => {
                let stat = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(errno(&entry.path, "checking the symlink"))?;
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
                    return Err(refused(&entry.path, "no longer a symlink"));
                }
                unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(errno(&entry.path, "removing the symlink"))?;
                report.symlinks += 1;
            }
            Kind::Dir => {
                unlinkat(&dir, name, UnlinkatFlags::RemoveDir)
                    .map_err(errno(&entry.path, "removing the directory"))?;
                report.dirs += 1;
            }
        }
        dir.sync_all()
            .map_err(io(&entry.path, "fsyncing its directory"))?;
        tracing::debug!(path = %entry.path.display(), kind = ?entry.kind, "shredded");
        progress(&entry.path);
    }
    tracing::debug!(
        files = report.files,
        bytes = report.bytes,
        dirs = report.dirs,
        symlinks = report.symlinks,
        passes,
        "shred done"
    );
    Ok(report)
}

/// A path's directory (`.` for a bare name) and its last component.
fn split(path: &Path) -> (&Path, &OsStr) {
    let name = path.file_name().expect("planned entries have names");
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    (dir, name)
}

/// Every entry to shred, in order (a directory after its contents), all checked first.
fn plan(paths: &[PathBuf]) -> Result<Vec<Entry>, ShredError> {
    let mut entries = Vec::new();
    // Where each entry really is (canonical directory of the argument + relative path),
    // to catch one file named twice.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for path in paths {
        // Without a trailing `/`, which would make a symlink to a directory resolve.
        let path: &Path = &path.components().collect::<PathBuf>();
        let meta = std::fs::symlink_metadata(path).map_err(io(path, "looking it up"))?;
        let Some(name) = path.file_name() else {
            return Err(refused(path, "it names no directory entry"));
        };
        let anchor = split(path)
            .0
            .canonicalize()
            .map_err(io(path, "resolving its directory"))?
            .join(name);
        let kind = kind_of(path, &meta.file_type())?;
        if kind != Kind::Dir {
            note(&mut seen, anchor, path)?;
            entries.push(Entry {
                path: path.to_owned(),
                kind,
            });
            continue;
        }
        for item in walkdir::WalkDir::new(path)
            .follow_links(false)
            .follow_root_links(false)
            // Mount points are still listed (and refused below), but not entered.
            .same_file_system(true)
            .contents_first(true)
            .sort_by_file_name()
        {
            let item = item.map_err(|e| {
                let at = e.path().unwrap_or(path).to_owned();
                ShredError::Io {
                    path: at,
                    action: "listing",
                    source: e.into(),
                }
            })?;
            let item_path = item.path();
            let item_meta = item.metadata().map_err(|e| ShredError::Io {
                path: item_path.to_owned(),
                action: "looking it up",
                source: e.into(),
            })?;
            if item_meta.dev() != meta.dev() {
                return Err(refused(
                    item_path,
                    "it is on another filesystem (a mount point?)",
                ));
            }
            let relative = item_path.strip_prefix(path).expect("walk stays below root");
            note(&mut seen, anchor.join(relative), item_path)?;
            entries.push(Entry {
                path: item_path.to_owned(),
                kind: kind_of(item_path, &item.file_type())?,
            });
        }
    }
    Ok(entries)
}

fn kind_of(path: &Path, file_type: &std::fs::FileType) -> Result<Kind, ShredError> {
    if file_type.is_file() {
        Ok(Kind::File)
    } else if file_type.is_dir() {
        Ok(Kind::Dir)
    } else if file_type.is_symlink() {
        Ok(Kind::Symlink)
    } else {
        Err(refused(
            path,
            "not a regular file, directory or symlink (a device, fifo or socket)",
        ))
    }
}

fn note(seen: &mut HashSet<PathBuf>, real: PathBuf, path: &Path) -> Result<(), ShredError> {
    if seen.insert(real) {
        Ok(())
    } else {
        Err(refused(path, "it is named more than once"))
    }
}

/// Overwrites, truncates, renames and unlinks `name` in `dir`; returns its former length.
fn shred_file(
    dir: &File,
    name: &OsStr,
    path: &Path,
    passes: u32,
    block: &mut [u8],
) -> Result<u64, ShredError> {
    // O_NONBLOCK: a fifo swapped in after planning must not hang the open.
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(path, "opening"))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(io(path, "looking it up"))?;
    if !meta.file_type().is_file() {
        return Err(refused(path, "no longer a regular file"));
    }
    let len = meta.len();
    overwrite(&file, len, passes, block).map_err(io(path, "overwriting"))?;
    file.set_len(0).map_err(io(path, "truncating"))?;
    file.sync_all().map_err(io(path, "fsyncing"))?;
    drop(file);
    // The old name leaves the directory entry; the random one is what gets unlinked.
    let hidden = random_name();
    renameat2(
        dir,
        name,
        dir,
        hidden.as_str(),
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(errno(path, "renaming to a random name"))?;
    dir.sync_all().map_err(io(path, "fsyncing its directory"))?;
    unlinkat(dir, hidden.as_str(), UnlinkatFlags::NoRemoveDir).map_err(errno(path, "unlinking"))?;
    Ok(len)
}

/// Writes `len` bytes over `file` `passes` times (random, the last zeros), fsyncing after
/// each pass.
fn overwrite(file: &File, len: u64, passes: u32, block: &mut [u8]) -> std::io::Result<()> {
    for pass in 1..=passes {
        let random = pass < passes;
        if !random {
            block.fill(0);
        }
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(block.len() as u64) as usize;
            if random {
                getrandom::getrandom(&mut block[..n]).expect("OS random number generator");
            }
            file.write_all_at(&block[..n], offset)?;
            offset += n as u64;
        }
        file.sync_all()?;
    }
    Ok(())
}

/// 32 random hex digits.
fn random_name() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("OS random number generator");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::symlink;

    fn names(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    fn run(paths: &[PathBuf], passes: u32) -> (Result<ShredReport, ShredError>, Vec<PathBuf>) {
        let mut done = Vec::new();
        let result = shred(paths, passes, &mut |p| done.push(p.to_owned()));
        (result, done)
    }

    #[test]
    fn overwrite_leaves_zeros_of_the_same_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = BLOCK + 12345;
        std::fs::write(&path, vec![0xA5u8; len]).unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        let mut block = vec![0u8; BLOCK];
        overwrite(&file, len as u64, 3, &mut block).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), len);
        assert!(after.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_is_truncated_and_its_name_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scan.dcm");
        std::fs::write(&path, b"PATIENT DOE, JOHN ".repeat(100_000)).unwrap();
        // A second name for the inode shows what shred left of the data.
        let other = tempfile::tempdir().unwrap();
        let witness = other.path().join("witness");
        std::fs::hard_link(&path, &witness).unwrap();

        let (result, done) = run(std::slice::from_ref(&path), 3);
        let report = result.unwrap();
        assert_eq!(
            report,
            ShredReport {
                files: 1,
                bytes: 1_800_000,
                dirs: 0,
                symlinks: 0
            }
        );
        assert_eq!(done, vec![path.clone()]);
        assert!(!path.exists());
        assert!(names(dir.path()).is_empty(), "no random name is left");
        assert_eq!(std::fs::read(&witness).unwrap(), b"");
    }

    #[test]
    fn a_directory_tree_is_removed_depth_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("study");
        std::fs::create_dir_all(root.join("CT/series1")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::write(root.join("CT/series1/1.dcm"), b"one").unwrap();
        std::fs::write(root.join("CT/series1/2.dcm"), b"two!").unwrap();
        std::fs::write(root.join("notes.txt"), b"").unwrap();
        symlink("notes.txt", root.join("link")).unwrap();

        let (result, done) = run(std::slice::from_ref(&root), 2);
        assert_eq!(
            result.unwrap(),
            ShredReport {
                files: 3,
                bytes: 7,
                dirs: 4,
                symlinks: 1
            }
        );
        assert!(!root.exists());
        assert!(names(dir.path()).is_empty());
        assert_eq!(done.len(), 8);
        assert_eq!(done.last(), Some(&root));
        let at = |p: &str| done.iter().position(|d| d == &root.join(p)).unwrap();
        assert!(at("CT/series1/1.dcm") < at("CT/series1"));
        assert!(at("CT/series1") < at("CT"));
    }

    #[test]
    fn a_symlink_is_removed_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep me").unwrap();
        let target_dir = dir.path().join("target_dir");
        std::fs::create_dir(&target_dir).unwrap();
        std::fs::write(target_dir.join("inside"), b"keep me too").unwrap();
        let to_file = dir.path().join("to_file");
        let to_dir = dir.path().join("to_dir");
        symlink(&target, &to_file).unwrap();
        symlink(&target_dir, &to_dir).unwrap();

        let to_dir_slash = PathBuf::from(format!("{}/", to_dir.display()));
        let (result, _) = run(&[to_file.clone(), to_dir_slash], 3);
        assert_eq!(result.unwrap().symlinks, 2);
        assert!(std::fs::symlink_metadata(&to_file).is_err());
        assert!(std::fs::symlink_metadata(&to_dir).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert_eq!(
            std::fs::read(target_dir.join("inside")).unwrap(),
            b"keep me too"
        );
    }

    #[test]
    fn a_missing_path_fails_before_anything_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present");
        std::fs::write(&present, b"data").unwrap();
        let (result, done) = run(&[present.clone(), dir.path().join("missing")], 3);
        match result {
            Err(ShredError::Io { path, source, .. }) => {
                assert_eq!(path, dir.path().join("missing"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected not found, got {other:?}"),
        }
        assert!(done.is_empty());
        assert_eq!(std::fs::read(&present).unwrap(), b"data");
    }

    #[test]
    fn zero_passes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        let (result, _) = run(std::slice::from_ref(&path), 0);
        assert!(matches!(result, Err(ShredError::NoPasses)));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn special_files_and_repeated_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("a"), b"data").unwrap();
        nix::unistd::mkfifo(&tree.join("fifo"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let (result, _) = run(std::slice::from_ref(&tree), 1);
        assert!(
            matches!(&result, Err(ShredError::Refused { path, .. }) if path == &tree.join("fifo")),
            "{result:?}"
        );
        std::fs::remove_file(tree.join("fifo")).unwrap();

        let (result, _) = run(&[tree.clone(), tree.join("a")], 1);
        assert!(
            matches!(result, Err(ShredError::Refused { .. })),
            "{result:?}"
        );
        let (result, _) = run(&[PathBuf::from("/")], 1);
        assert!(
            matches!(result, Err(ShredError::Refused { .. })),
            "{result:?}"
        );
        assert_eq!(std::fs::read(tree.join("a")).unwrap(), b"data");
    }
}
