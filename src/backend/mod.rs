//! Where sealed objects live. A [`Backend`] lists objects, reads byte ranges of them and
//! stores new ones; it never sees a key or a plaintext byte. `local` is a directory on
//! disk; S3, Azure Blob, Google Drive and Dropbox implement the same trait, sharing `remote`'s runtime, body
//! filler and backoff, and the vault's read-ahead (driven by [`ReadProfile`]).

pub mod azure;
pub mod cached;
pub mod dropbox;
pub mod gdrive;
pub mod local;
pub mod mapped;
pub mod remote;
pub mod s3;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub use azure::{AzureBackend, AzureLocation, AzureOptions};
pub use dropbox::{DropboxBackend, DropboxLocation, DropboxOptions};
pub use gdrive::{GDriveBackend, GDriveLocation, GDriveOptions};
pub use local::LocalBackend;
pub use s3::{S3Backend, S3Checkpoints, S3Location, S3Options};

/// Errors from a backend, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {key:?} not found")]
    NotFound { key: String },
    #[error("object {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("object key {key:?} is not allowed: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("object {key:?} ends before byte {end}")]
    ShortRead { key: String, end: u64 },
    #[error("object {key:?} changed since it was listed; remount to see the new version")]
    Changed { key: String },
    #[error("{context}: no answer within {timeout:?}")]
    Timeout { context: String, timeout: Duration },
    #[error("{context}: server unreachable: {message}")]
    Unavailable { context: String, message: String },
    #[error("{context}: {message}")]
    Remote { context: String, message: String },
    #[error("source {source_text:?}: {reason}")]
    BadSource { source_text: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// Whether asking again later may succeed: the store did not answer, or failed on its
    /// side, as opposed to saying something about the object itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Timeout { .. }
                | BackendError::Unavailable { .. }
                | BackendError::Remote { .. }
                | BackendError::Io { .. }
        )
    }
}

/// One object as listed: its key relative to the backend's root and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `/`-separated key relative to the root; may be hostile, see [`validate_key`].
    pub key: String,
    /// Size of the sealed object in bytes.
    pub size: u64,
}

/// A store of sealed objects. Implementations must be safe to call from many threads.
pub trait Backend: Send + Sync {
    /// Every object below the root, in no particular order. Entries that cannot be
    /// represented (for example non-UTF-8 names) are skipped with a warning.
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError>;

    /// Fills `bufs`, in order, with the object's bytes starting at `offset`. Fails with
    /// [`BackendError::ShortRead`] if the object ends first.
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError>;

    /// Like [`Backend::read_range`], telling `arrival` as each buffer completes so the
    /// caller can process bytes while they are still in the backend's receive buffer. A
    /// backend that reads straight into `bufs` (a local file) need not call it: the caller
    /// must treat a buffer it was not told about as filled in place.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        _arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        self.read_range(key, offset, bufs)
    }

    /// The size of object `key`, or `None` if there is none.
    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError>;

    /// Starts writing a new object. Nothing is visible under `key` until
    /// [`ObjectWriter::commit`]; dropping the writer without committing leaves no trace.
    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError>;

    /// Like [`Backend::create`] for an object that will be exactly `len` bytes, so a
    /// backend that must announce the size up front can start sending at once.
    fn create_sized(
        &self,
        key: &str,
        overwrite: bool,
        len: u64,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        let _ = len;
        self.create(key, overwrite)
    }

    /// Where object `key` lies, as a sealed header binds it: it names the tree as well as
    /// the path in it. An S3 root `s3://b/site/p1/` gives `site/p1/` ‖ key, a Drive folder
    /// its path from the top of its drive, a local directory its own name ‖ `/` ‖ key.
    fn location(&self, key: &str) -> Result<String, BackendError>;

    /// Removes object `key`. Removing an object that is not there succeeds: a re-run
    /// after an interruption must not fail on what the first run already removed.
    fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// What identifies the bytes of `key` its reads are pinned to (an S3 ETag, a Drive
    /// revision), if the backend pins them; `None` if it does not (or has not seen `key`).
    /// A disk cache keys its entries by it.
    fn version(&self, key: &str) -> Option<String> {
        let _ = key;
        None
    }

    /// How reads should be scheduled for this backend's latency.
    fn read_profile(&self) -> ReadProfile {
        ReadProfile::default()
    }

    /// A short description for logs, such as the root directory.
    fn describe(&self) -> String;
}

/// Told, during [`Backend::read_range_arriving`], that a buffer of the read is complete.
/// A backend may tell it about different buffers from several threads at once.
pub trait Arrival: Sync {
    /// Buffer number `index` is complete. `bytes` holds its content when that arrived in
    /// one piece and `buf` has not been written; with `None` the content is already in
    /// `buf`. Either way `buf` must afterwards hold what the caller wants there. A backend
    /// that retries a read calls this again for every buffer of the new attempt.
    fn complete(&self, index: usize, bytes: Option<&[u8]>, buf: &mut [u8]);
}

/// How the shared read-ahead drives a backend: a window that starts at 1 MiB and doubles
/// while a reader stays sequential, up to `max_readahead`, kept full by requests of
/// `part_size` (at most the cache's largest run), with up to `parallel_requests` in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProfile {
    /// Requests in flight at once for read-ahead (per mount).
    pub parallel_requests: usize,
    /// Largest read-ahead window in bytes (also bounded by a quarter of the cache).
    pub max_readahead: u64,
    /// Bytes per read-ahead request once the window is large enough: the window is
    /// refilled whenever a whole part of it is missing.
    pub part_size: u64,
    /// Requests the mount serves at once (FUSE threads). A thread waits for the backend
    /// on a cache miss, so a slow backend needs more of them; a local one needs no more
    /// than the cores that decrypt, and more only costs wake-ups across idle cores.
    pub request_threads: usize,
    /// Bytes of an object the first request fetches: the header and the chunks that fit
    /// after it, so a remote backend serves a small file in one round trip. At least 4 KiB.
    pub first_read: u64,
    /// Files opened ahead of a reader that opens a directory's files in name order: their
    /// headers are checked on the read-ahead workers while it reads the current one.
    pub files_ahead: usize,
}

impl Default for ReadProfile {
    /// A local disk: two read-ahead requests (one per core decrypting) of 1 MiB, a 64 MiB
    /// window (slack that keeps read-ahead busy while request threads hold the cores), one
    /// request thread per core (at least two), a first read of the header only (a local
    /// read costs no round trip), and two files opened ahead (one keeps ahead of a reader
    /// of small files; the second absorbs a delay of the worker).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        ReadProfile {
            parallel_requests: 2,
            max_readahead: 64 << 20,
            part_size: 1 << 20,
            request_threads: cores.clamp(2, 16),
            first_read: 4 << 10,
            files_ahead: 2,
        }
    }
}

impl ReadProfile {
    /// A remote store where every request costs a round trip: eight requests of 8 MiB in
    /// flight, a 64 MiB window, eight request threads waiting on misses, a first read of
    /// 256 KiB, which holds most DICOM slices whole (header, data and last chunk), and
    /// eight files opened ahead (one per worker: a round trip each).
    pub fn remote() -> Self {
        ReadProfile {
            parallel_requests: 8,
            max_readahead: 64 << 20,
            part_size: 8 << 20,
            request_threads: 8,
            first_read: 256 << 10,
            files_ahead: 8,
        }
    }
}

/// Where a bucket is, as given on the command line: `s3://BUCKET[/PREFIX]`,
/// `gdrive://FOLDER_ID[/PATH]`, `gdrive:///My Drive/PATH`, `gdrive:///Shared drives/NAME/PATH`,
/// `dropbox:///PATH`, `az://ACCOUNT/CONTAINER[/PREFIX]`, or a local directory (`file://PATH`
/// or a plain path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory on a local or network filesystem.
    Local(std::path::PathBuf),
    /// A bucket prefix on S3 or an S3-compatible server.
    S3(S3Location),
    /// A folder on Google Drive.
    GDrive(GDriveLocation),
    /// A folder on Dropbox (`dropbox:///PATH`).
    Dropbox(DropboxLocation),
    /// A container prefix on Azure Blob Storage (`az://ACCOUNT/CONTAINER[/PREFIX]`).
    Azure(AzureLocation),
}

/// Connection settings of the remote backends, from `-o` options (see
/// [`crate::options::parse_backend_option`]); each backend reads its own part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// S3 settings.
    pub s3: S3Options,
    /// Google Drive settings.
    pub gdrive: GDriveOptions,
    /// Dropbox settings.
    pub dropbox: DropboxOptions,
    /// Azure Blob Storage settings.
    pub azure: AzureOptions,
}

impl std::str::FromStr for Source {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, BackendError> {
        match text.split_once("://") {
            Some(("s3", _)) => Ok(Source::S3(text.parse()?)),
            Some(("gdrive", _)) => Ok(Source::GDrive(text.parse()?)),
            Some(("dropbox", _)) => Ok(Source::Dropbox(text.parse()?)),
            Some(("az", _)) => Ok(Source::Azure(text.parse()?)),
            Some(("file", path)) => Ok(Source::Local(path.into())),
            Some((scheme, _)) => Err(BackendError::BadSource {
                source_text: text.to_owned(),
                reason: format!("unknown scheme {scheme}:// (use s3://, az://, gdrive://, dropbox:// or a directory)"),
            }),
            None => Ok(Source::Local(text.into())),
        }
    }
}

impl Source {
    /// Opens the backend. For S3 no request is made yet (see [`S3Backend::open`]); Google
    /// Drive and Dropbox load their credentials (see [`GDriveBackend::open`],
    /// [`DropboxBackend::open`]). `writable` asks for the
    /// rights to store objects (Drive's file scope) rather than read-only ones.
    pub fn open(
        &self,
        options: &BackendOptions,
        writable: bool,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(match self {
            Source::Local(path) => Arc::new(LocalBackend::open(path)?),
            Source::S3(location) => Arc::new(S3Backend::open(location.clone(), &options.s3)?),
            Source::GDrive(location) => Arc::new(GDriveBackend::open(
                location.clone(),
                &options.gdrive,
                writable,
            )?),
            Source::Dropbox(location) => {
                Arc::new(DropboxBackend::open(location.clone(), &options.dropbox)?)
            }
            Source::Azure(location) => {
                Arc::new(AzureBackend::open(location.clone(), &options.azure)?)
            }
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Local(path) => write!(f, "{}", path.display()),
            Source::S3(location) => write!(f, "s3://{}/{}", location.bucket, location.prefix),
            Source::GDrive(location) => write!(f, "{location}"),
            Source::Dropbox(location) => write!(f, "{location}"),
            Source::Azure(location) => write!(f, "{location}"),
        }
    }
}

/// A new object being written; see [`Backend::create`].
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its key.
    fn commit(self: Box<Self>) -> Result<(), BackendError>;
}

/// Longest object key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// Longest single path component accepted, in bytes (the Linux NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Checks that an object key is a safe relative path: non-empty `/`-separated components,
/// none empty, `.` or `..`, none longer than 255 bytes, no NUL, at most 4096 bytes.
pub fn validate_key(key: &str) -> Result<(), BackendError> {
    let bad = |reason| {
        Err(BackendError::BadKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 4096 bytes");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    if key.starts_with('/') {
        return bad("absolute");
    }
    for component in key.split('/') {
        match component {
            "" => return bad("empty path component"),
            "." | ".." => return bad("`.` or `..` component"),
            c if c.len() > MAX_COMPONENT_LEN => return bad("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_by_scheme() {
        assert!(matches!("gdrive://1AbC/x".parse(), Ok(Source::GDrive(_))));
        assert!(matches!(
            "gdrive:///My Drive/scans".parse(),
            Ok(Source::GDrive(_))
        ));
        assert!(matches!("s3://scans/a".parse(), Ok(Source::S3(_))));
        assert!(matches!(
            "dropbox:///Scans/a".parse(),
            Ok(Source::Dropbox(_))
        ));
        assert!(matches!("az://lab1/scans/a".parse(), Ok(Source::Azure(_))));
        assert_eq!(
            "az://lab1/scans/a".parse::<Source>().unwrap().to_string(),
            "az://lab1/scans/a/"
        );
        assert_eq!(
            "dropbox:///Scans/a".parse::<Source>().unwrap().to_string(),
            "dropbox:///Scans/a"
        );
        assert!(matches!("/buckets/b".parse(), Ok(Source::Local(_))));
        assert!("ftp://x".parse::<Source>().is_err());
        let text = "gdrive:///Shared drives/Lab/CT";
        assert_eq!(text.parse::<Source>().unwrap().to_string(), text);
    }

    #[test]
    fn hostile_keys_are_rejected() {
        let long_component = "a".repeat(256);
        let long_key = vec!["a"; 2100].join("/");
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            long_component.as_str(),
            long_key.as_str(),
        ] {
            assert!(validate_key(key).is_err(), "{key:?} accepted");
        }
        for key in ["a", "study 1/CT/1.dcm", "..a/b..", &"a".repeat(255)] {
            validate_key(key).unwrap();
        }
    }
}
