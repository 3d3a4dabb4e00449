//! A bucket that is a directory on a local (or network) filesystem.
//!
//! Reads open objects with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to the
//! root, so no key and no symlink planted in the bucket can reach outside it. New objects are
//! written to a hidden partial file beside their final name and renamed into place on
//! commit, so an interrupted seal never leaves a half-written object under a real name.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, renameat2, OFlag, OpenHow, RenameFlags, ResolveFlag, AT_FDCWD};
use nix::sys::stat::Mode;

use super::mapped::MappedRange;
use super::{validate_key, Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, MAX_KEY_LEN};

/// Prefix of the hidden files that hold objects still being written.
pub const PARTIAL_PREFIX: &str = ".smpfs-partial.";

/// A directory used as a bucket.
pub struct LocalBackend {
    root: PathBuf,
    /// The directory's own name, the first component of every object's location.
    name: String,
    root_fd: OwnedFd,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

impl LocalBackend {
    /// Opens `root`, which must be an existing directory.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(format!("bucket directory {}", root.display()))(e.into()))?;
        let real = root
            .canonicalize()
            .map_err(io_err(format!("bucket directory {}", root.display())))?;
        let name = match real.file_name() {
            None => String::new(),
            Some(name) => name
                .to_str()
                .ok_or_else(|| BackendError::BadSource {
                    source_text: root.display().to_string(),
                    reason: "the directory's name is not UTF-8".to_owned(),
                })?
                .to_owned(),
        };
        Ok(LocalBackend {
            root: root.to_owned(),
            name,
            root_fd,
        })
    }

    fn open_beneath(&self, key: &str, flags: OFlag, mode: Mode) -> Result<File, BackendError> {
        validate_key(key)?;
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(&self.root_fd, key, how) {
            Ok(fd) => Ok(File::from(fd)),
            Err(nix::errno::Errno::ENOENT) => Err(BackendError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(io_err(format!("open {key:?}"))(e.into())),
        }
    }
}

impl Backend for LocalBackend {
    /// Walks the directory. An entry that cannot be read (a directory nested deeper than
    /// PATH_MAX, one without permission) is skipped, as are directories whose path below
    /// the root is already too long for a key; both are counted in one warning.
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let root_len = self.root.as_os_str().len();
        let too_deep = std::cell::Cell::new(0u64);
        let mut unreadable: Vec<walkdir::Error> = Vec::new();
        let mut objects = Vec::new();
        let walk = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .min_depth(1)
            .into_iter()
            .filter_entry(|entry| {
                let within = entry.path().as_os_str().len() <= root_len + 1 + MAX_KEY_LEN;
                too_deep.set(too_deep.get() + u64::from(!within));
                within
            });
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.depth() == 0 => {
                    let context = format!("listing {}", self.root.display());
                    return Err(io_err(context)(e.into()));
                }
                Err(e) => {
                    unreadable.push(e);
                    continue;
                }
            };
            let file_type = entry.file_type();
            if file_type.is_dir() {
                continue;
            }
            let relative = entry.path().strip_prefix(&self.root).expect("below root");
            let Some(key) = relative.to_str() else {
                tracing::warn!(path = ?relative, "skipping object whose name is not UTF-8");
                continue;
            };
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                continue;
            }
            if !file_type.is_file() {
                tracing::warn!(
                    key,
                    "skipping bucket entry that is not a regular file (symlink or special)"
                );
                continue;
            }
            let size = entry
                .metadata()
                .map_err(|e| io_err(format!("stat {key:?}"))(e.into()))?
                .len();
            objects.push(ObjectInfo {
                key: key.to_owned(),
                size,
            });
        }
        if too_deep.get() > 0 {
            tracing::warn!(
                entries = too_deep.get(),
                "skipping entries of {} nested deeper than a key may be ({MAX_KEY_LEN} bytes)",
                self.root.display()
            );
        }
        if let Some(first) = unreadable.first() {
            let path = first
                .path()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default();
            let shown: String = path.chars().take(120).collect();
            tracing::warn!(
                entries = unreadable.len(),
                "skipping unreadable entries of {}; the first: {shown:?}{}: {}",
                self.root.display(),
                if shown.len() < path.len() { "…" } else { "" },
                first
                    .io_error()
                    .map_or_else(|| first.to_string(), ToString::to_string)
            );
        }
        Ok(objects)
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        let file = self.open_beneath(key, OFlag::O_RDONLY, Mode::empty())?;
        read_into(&file, key, offset, bufs)
    }

    /// Decrypts straight from a mapping of the file, sparing the copy into `bufs` that a
    /// `pread` makes; reads too short to pay for a mapping, and files that cannot be
    /// mapped, are read with `pread`.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        let file = self.open_beneath(key, OFlag::O_RDONLY, Mode::empty())?;
        let len: usize = bufs.iter().map(|buf| buf.len()).sum();
        if len < MAP_AT_LEAST {
            return read_into(&file, key, offset, bufs);
        }
        let meta = file.metadata().map_err(io_err(format!("stat {key:?}")))?;
        if offset + len as u64 > meta.len() {
            // Past the end, which `pread` reports precisely.
            return read_into(&file, key, offset, bufs);
        }
        WINDOW.with_borrow_mut(|window| {
            let reusable = window.as_ref().is_some_and(|window| {
                (window.dev, window.ino) == (meta.dev(), meta.ino())
                    && window.map.get(offset, len).is_some()
            });
            if !reusable {
                // Unmapped first: a thread holds one window at a time.
                *window = None;
                let window_len = (meta.len() - offset).min(WINDOW_LEN.max(len as u64)) as usize;
                let Ok(Some(map)) = MappedRange::new(&file, offset, window_len) else {
                    return read_into(&file, key, offset, bufs);
                };
                *window = Some(Window {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    map,
                });
            }
            let map = &window.as_ref().expect("mapped above").map;
            let mut at = offset;
            for (index, buf) in bufs.iter_mut().enumerate() {
                let sealed = map.get(at, buf.len()).expect("within the window");
                at += buf.len() as u64;
                arrival.complete(index, Some(sealed), buf);
            }
            map.check().map_err(|truncated| {
                tracing::warn!("{key:?}: {truncated}; its read fails");
                *window = None;
                BackendError::Changed {
                    key: key.to_owned(),
                }
            })
        })
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        match self.open_beneath(key, OFlag::O_RDONLY, Mode::empty()) {
            Ok(file) => Ok(Some(
                file.metadata()
                    .map_err(io_err(format!("stat {key:?}")))?
                    .len(),
            )),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        validate_key(key)?;
        let final_path = self.root.join(key);
        let parent = final_path.parent().expect("key has a parent below root");
        fs::create_dir_all(parent)
            .map_err(io_err(format!("create directory {}", parent.display())))?;
        if !overwrite && final_path.exists() {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).expect("OS random number generator");
        let partial_name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let partial_path = parent.join(format!("{PARTIAL_PREFIX}{partial_name}"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial_path)
            .map_err(io_err(format!("create {}", partial_path.display())))?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            partial_path,
            final_path,
            key: key.to_owned(),
            overwrite,
        }))
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        // The key's parent is opened beneath the root (no symlinks), then the name removed
        // from it, so a hostile key cannot remove anything outside the bucket.
        let (dir, name) = key
            .rsplit_once('/')
            .map_or((None, key), |(d, n)| (Some(d), n));
        let parent = match dir {
            Some(dir) => {
                match self.open_beneath(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
                    Ok(parent) => parent,
                    Err(BackendError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            None => {
                File::open(&self.root).map_err(io_err(format!("open {}", self.root.display())))?
            }
        };
        match nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(format!("remove {key:?}"))(e.into())),
        }
    }

    /// The directory's name, then the key: a local bucket is known by its name, so a tree
    /// sealed into `site/p1` cannot pass for one sealed into `site/p2`, while the bucket
    /// can still be moved or copied elsewhere under the same name.
    fn location(&self, key: &str) -> Result<String, BackendError> {
        Ok(if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.name)
        })
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

/// Reads shorter than this are copied with `pread`: mapping and unmapping a range costs
/// more than copying a few chunks (measured: `smpfs cat`, which loads one 64 KiB chunk at a
/// time, fell from 2.5 to 1.8 GB/s when every chunk was mapped).
const MAP_AT_LEAST: usize = 256 << 10;

/// Bytes of a file a thread maps at once for its sequential reads.
const WINDOW_LEN: u64 = 16 << 20;

/// The part of an object file a thread last read through its mapping.
struct Window {
    dev: u64,
    ino: u64,
    map: MappedRange,
}

thread_local! {
    /// Kept between reads, so that a sequential reader maps, and unmaps, once per window
    /// instead of once per read: every unmapping interrupts the other cores to flush their
    /// TLBs, which cost a single reader 7% of its speed. The pages it keeps mapped are
    /// ciphertext in the page cache, not locked memory.
    static WINDOW: std::cell::RefCell<Option<Window>> = const { std::cell::RefCell::new(None) };
}

/// Fills `bufs`, in order, from `file` (object `key`) at `offset` with `pread`.
fn read_into(
    file: &File,
    key: &str,
    offset: u64,
    bufs: &mut [&mut [u8]],
) -> Result<(), BackendError> {
    let mut position = offset;
    for buf in bufs.iter_mut() {
        file.read_exact_at(buf, position)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => BackendError::ShortRead {
                    key: key.to_owned(),
                    end: position + buf.len() as u64,
                },
                _ => io_err(format!("read {key:?} at {position}"))(e),
            })?;
        position += buf.len() as u64;
    }
    Ok(())
}

struct LocalWriter {
    file: Option<File>,
    partial_path: PathBuf,
    final_path: PathBuf,
    key: String,
    overwrite: bool,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .map_err(io_err(format!("fsync {}", self.partial_path.display())))?;
        drop(file);
        let flags = if self.overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        match renameat2(
            AT_FDCWD,
            &self.partial_path,
            AT_FDCWD,
            &self.final_path,
            flags,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => {
                return Err(BackendError::AlreadyExists {
                    key: self.key.clone(),
                })
            }
            Err(e) => {
                return Err(io_err(format!("rename into {}", self.final_path.display()))(e.into()))
            }
        }
        let parent = self.final_path.parent().expect("has parent");
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(format!("fsync {}", parent.display())))
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.partial_path.exists() {
            let _ = fs::remove_file(&self.partial_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bucket() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(dir.path()).unwrap();
        (dir, backend)
    }

    fn put(backend: &LocalBackend, key: &str, data: &[u8]) {
        let mut w = backend.create(key, false).unwrap();
        w.write_all(data).unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn a_directory_nested_deeper_than_path_max_is_skipped_not_fatal() {
        let (dir, b) = bucket();
        put(&b, "ok/file", b"x");
        // 30 levels of 200-byte names: 6 kB, past PATH_MAX, made one level at a time.
        let name = "d".repeat(200);
        let mut fd = nix::fcntl::open(dir.path(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..30 {
            nix::sys::stat::mkdirat(&fd, name.as_str(), Mode::from_bits_truncate(0o700)).unwrap();
            fd = nix::fcntl::openat(&fd, name.as_str(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        }
        let file = nix::fcntl::openat(
            &fd,
            "deep.bin",
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        drop(file);
        let keys: Vec<String> = b.list().unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["ok/file"]);
    }

    #[test]
    fn write_list_and_read_ranges() {
        let (_dir, b) = bucket();
        put(&b, "a/b/c.bin", b"0123456789");
        put(&b, "top", b"x");
        let mut listed = b.list().unwrap();
        listed.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(
            listed,
            vec![
                ObjectInfo {
                    key: "a/b/c.bin".into(),
                    size: 10
                },
                ObjectInfo {
                    key: "top".into(),
                    size: 1
                },
            ]
        );
        let (mut x, mut y) = ([0u8; 3], [0u8; 4]);
        b.read_range("a/b/c.bin", 2, &mut [&mut x, &mut y]).unwrap();
        assert_eq!((&x, &y), (b"234", b"5678"));
        assert!(matches!(
            b.read_range("a/b/c.bin", 8, &mut [&mut x]),
            Err(BackendError::ShortRead { .. })
        ));
        assert!(matches!(
            b.read_range("nope", 0, &mut [&mut x]),
            Err(BackendError::NotFound { .. })
        ));
    }

    #[test]
    fn uncommitted_writes_leave_nothing_and_existing_objects_are_kept() {
        let (dir, b) = bucket();
        {
            let mut w = b.create("half", false).unwrap();
            w.write_all(b"partial").unwrap();
        }
        assert!(b.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        put(&b, "keep", b"original");
        assert!(matches!(
            b.create("keep", false),
            Err(BackendError::AlreadyExists { .. })
        ));
        let mut w = b.create("keep", true).unwrap();
        w.write_all(b"new").unwrap();
        w.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("keep")).unwrap(), b"new");
    }

    #[test]
    fn symlinks_cannot_escape_the_bucket() {
        let (dir, b) = bucket();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"outside").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        assert!(b.list().unwrap().is_empty(), "symlinks are not listed");
        let mut buf = [0u8; 3];
        assert!(b.read_range("link", 0, &mut [&mut buf]).is_err());
        assert!(b.read_range("dirlink/secret", 0, &mut [&mut buf]).is_err());
        assert!(matches!(
            b.read_range("../x", 0, &mut [&mut buf]),
            Err(BackendError::BadKey { .. })
        ));
    }
}
