//! New Drive objects: resumable uploads (`upload_resumable`) fed while the object is
//! being sealed.
//!
//! Invariants:
//! - nothing is visible on Drive until the last chunk arrives (a resumable session that
//!   is never finished leaves no file), and a replaced object switches to its new revision
//!   only then;
//! - the object's bytes (ciphertext only) are staged in an unlinked temporary file, so an
//!   upload that fails for a transient reason starts again from the first byte, up to a
//!   few times; the sealer is held back while it runs more than [`WINDOW`] bytes ahead
//!   of what the server has acknowledged, so progress shows what has been uploaded;
//! - each upload request must make progress within the timeout;
//! - an attempt that fails after the server may have received every byte (a dropped
//!   connection or a stall around the last request) is followed by asking its session
//!   what became of it: if the file was stored, that is the result; it is never uploaded
//!   a second time (Drive would keep both copies);
//! - the MD5 Drive reports for the stored object must match the bytes written;
//! - a name may hold several files on Drive, and a key means the oldest
//!   ([`age`](super::client::age)); a new object that must not replace one
//!   ([`Mode::CreateIfAbsent`]) is created if absent, even with writers racing, by the
//!   protocol described there.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use google_drive3::api::File as DriveFile;
use google_drive3::common::{ContentRange, Delegate, Retry};
use google_drive3::hyper::header::{AUTHORIZATION, USER_AGENT};
use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex};
use tokio::task::JoinHandle;

use super::client::{classify_call, classify_status, older, token_failure, Drive, Failure, Kind};
use crate::backend::remote::{backoff, Remote};
use crate::backend::{BackendError, ObjectWriter};

/// Bytes sent per upload request (a multiple of 256 KiB, as Drive requires).
const CHUNK: u64 = 8 << 20;
/// How far the sealer may run ahead of the acknowledged bytes (at least one chunk more
/// than a chunk, so the uploader can always read a whole chunk).
const WINDOW: u64 = 2 * CHUNK;
/// Whole-upload attempts after transient failures.
const MAX_ATTEMPTS: u32 = 5;
/// Fields asked of the stored object, to check it and to place it among its namesakes.
const STORED_FIELDS: &str = "id,size,md5Checksum,createdTime";

/// Where an upload goes.
pub struct Target {
    /// Folder id.
    pub parent: String,
    /// The shared drive the folder is in, if any (to list it).
    pub drive_id: Option<String>,
    /// File name in the folder.
    pub name: String,
    /// What the upload does to the files of that name.
    pub mode: Mode,
}

/// What an upload does to the files of its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Creates a file, whatever else is named so (an overwrite where nothing was there).
    Create,
    /// Creates a file only if none is named so, atomically as far as readers and other
    /// writers can tell, though Drive has no conditional create:
    /// 1. before the upload, a file of that name fails it at once
    ///    ([`BackendError::AlreadyExists`]);
    /// 2. once the upload has stored ours, [`ObjectWriter::commit`] lists the files of
    ///    that name again; if one is older than ours ([`age`](super::client::age):
    ///    `createdTime`, then id), ours lost a race: it is deleted and the commit fails
    ///    with [`BackendError::AlreadyExists`]; else the commit succeeds.
    ///
    /// Every racer orders the files the same way and lists only after its own file
    /// exists, so exactly one commit succeeds, the oldest file's; a reader, who takes the
    /// oldest file of a name, reads the winner's bytes even while a loser's copy is still
    /// there, and a loser that dies before deleting its copy leaves a younger namesake that
    /// no reader takes. This relies on Drive listing a file once its creation has been
    /// answered. A commit that fails otherwise in step 2 (the listing timed out) may have
    /// won: a retry then finds the name taken, possibly by this very upload.
    CreateIfAbsent,
    /// Gives existing file ID a new revision.
    Replace(String),
}

/// The staged bytes and the progress of the upload reading them.
struct Spool {
    file: File,
    state: Mutex<State>,
    changed: Condvar,
    started: Instant,
    /// Milliseconds since `started` of the last sign of progress.
    progress_ms: AtomicU64,
    /// The upload session of the current attempt, once the server has given one.
    session: Mutex<Option<String>>,
}

#[derive(Default)]
struct State {
    written: u64,
    finished: bool,
    abandoned: bool,
    /// Bytes the server has acknowledged in the current attempt.
    acked: u64,
}

impl Spool {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.progress_ms.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.progress_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn set_acked(&self, acked: u64) {
        self.state.lock().acked = acked;
        self.changed.notify_all();
    }

    /// Waits until more than `pos` bytes are written or no more will come; returns how
    /// many are written.
    fn available_after(&self, pos: u64) -> u64 {
        let mut state = self.state.lock();
        while state.written <= pos && !state.finished && !state.abandoned {
            self.changed
                .wait_for(&mut state, Duration::from_millis(200));
            // Waiting for the sealer is not the server stalling.
            self.touch();
        }
        state.written
    }

    /// Fails once the last progress is older than `timeout`.
    async fn stalled(&self, timeout: Duration, context: String) -> Failure {
        loop {
            let idle = self.idle();
            if idle >= timeout {
                return Failure {
                    kind: Kind::Transient,
                    error: BackendError::Timeout { context, timeout },
                };
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// Reads the spool from the start, as the upload helper asks; blocks (outside the
/// runtime's scheduling) until the bytes it wants are written.
struct SpoolReader {
    spool: Arc<Spool>,
    pos: u64,
    len: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let available = tokio::task::block_in_place(|| self.spool.available_after(self.pos));
        let n = (buf.len() as u64)
            .min(available.saturating_sub(self.pos))
            .min(self.len - self.pos) as usize;
        let got = self.spool.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for SpoolReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

/// Follows the upload for the backpressure and the stall watchdog; retries a dropped
/// connection (the helper resends the same chunk) a few times.
struct Progress {
    spool: Arc<Spool>,
    connection_retries: u32,
}

impl Delegate for Progress {
    fn pre_request(&mut self) {
        self.spool.touch();
    }

    fn chunk_size(&mut self) -> u64 {
        CHUNK
    }

    fn cancel_chunk_upload(&mut self, range: &ContentRange) -> bool {
        self.spool.touch();
        if let Some(chunk) = &range.range {
            self.spool.set_acked(chunk.first);
        }
        self.spool.state.lock().abandoned
    }

    /// Notes the attempt's session (the helper also calls this with `None` when the last
    /// request fails, which must not make the session forgotten before it is asked).
    fn store_upload_url(&mut self, url: Option<&str>) {
        if let Some(url) = url {
            *self.spool.session.lock() = Some(url.to_owned());
        }
    }

    fn http_error(&mut self, _: &google_drive3::hyper_util::client::legacy::Error) -> Retry {
        if self.connection_retries < 3 {
            self.connection_retries += 1;
            Retry::After(backoff(self.connection_retries))
        } else {
            Retry::Abort
        }
    }
}

/// A new Drive object being written; see the module docs.
pub struct DriveWriter {
    drive: Arc<Drive>,
    key: String,
    target: Arc<Target>,
    spool: Arc<Spool>,
    staged: File,
    md5: Md5,
    len: Option<u64>,
    upload: Option<JoinHandle<Result<DriveFile, BackendError>>>,
}

impl DriveWriter {
    /// Stages into a new unlinked temporary file; with `len` known, the upload starts
    /// at once, else at commit.
    pub fn new(
        drive: Arc<Drive>,
        key: &str,
        target: Target,
        len: Option<u64>,
    ) -> Result<Self, BackendError> {
        let io = |source| BackendError::Io {
            context: format!("staging {key:?} for upload"),
            source,
        };
        let staged = tempfile::tempfile().map_err(io)?;
        let file = staged.try_clone().map_err(io)?;
        let mut writer = DriveWriter {
            drive,
            key: key.to_owned(),
            target: Arc::new(target),
            spool: Arc::new(Spool {
                file,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                started: Instant::now(),
                progress_ms: AtomicU64::new(0),
                session: Mutex::new(None),
            }),
            staged,
            md5: Md5::new(),
            len,
            upload: None,
        };
        if let Some(len) = len {
            writer.start(len);
        }
        Ok(writer)
    }

    fn start(&mut self, len: u64) {
        let (drive, target, spool) = (
            Arc::clone(&self.drive),
            Arc::clone(&self.target),
            Arc::clone(&self.spool),
        );
        let context = format!("uploading {:?}", self.key);
        self.upload = Some(
            self.drive
                .runtime
                .runtime()
                .spawn(upload(drive, target, spool, len, context)),
        );
    }

    fn failed(&self) -> bool {
        self.upload.as_ref().is_some_and(|h| h.is_finished())
    }
}

/// Uploads the spool, starting again from the first byte after a transient failure.
async fn upload(
    drive: Arc<Drive>,
    target: Arc<Target>,
    spool: Arc<Spool>,
    len: u64,
    context: String,
) -> Result<DriveFile, BackendError> {
    let timeout = drive.runtime.timeout();
    let (mut attempts, mut refreshed) = (0, false);
    loop {
        spool.set_acked(0);
        spool.touch();
        let result = tokio::select! {
            result = attempt(&drive, &target, &spool, len, &context) => result,
            stalled = spool.stalled(timeout, context.clone()) => Err(stalled),
        };
        let failure = match result {
            Ok(file) => return Ok(file),
            Err(failure) => failure,
        };
        if spool.state.lock().abandoned {
            return Err(failure.error);
        }
        // The server may have stored the file and its answer been lost: ask the session
        // before starting another, which would store it again. If it cannot be asked,
        // give up rather than risk a second copy (a re-run finds the file if it is there).
        let session = spool.session.lock().take();
        if let Some(url) = session {
            if let Some(file) = ask_session(&drive, &url, len, &context).await? {
                tracing::info!("{context}: the upload had completed, its answer was lost");
                return Ok(file);
            }
        }
        match failure.kind {
            Kind::Transient if attempts + 1 < MAX_ATTEMPTS => {
                tracing::warn!("{}; starting the upload again", failure.error);
                tokio::time::sleep(backoff(attempts)).await;
                attempts += 1;
            }
            Kind::Unauthorized if !refreshed => {
                refreshed = true;
                drive.refresh().await.map_err(|e| {
                    token_failure(format!("refreshing {}", drive.auth.describe()), e).error
                })?;
            }
            _ => return Err(failure.error),
        }
    }
}

async fn attempt(
    drive: &Drive,
    target: &Target,
    spool: &Arc<Spool>,
    len: u64,
    context: &str,
) -> Result<DriveFile, Failure> {
    let reader = SpoolReader {
        spool: Arc::clone(spool),
        pos: 0,
        len,
    };
    let mut progress = Progress {
        spool: Arc::clone(spool),
        connection_retries: 0,
    };
    let mime: mime::Mime = mime::APPLICATION_OCTET_STREAM;
    let files = drive.hub.files();
    let result = match &target.mode {
        Mode::Replace(id) => {
            let call = files
                .update(DriveFile::default(), id)
                .supports_all_drives(true)
                .param("fields", STORED_FIELDS)
                .delegate(&mut progress);
            if len == 0 {
                call.upload(reader, mime).await
            } else {
                call.upload_resumable(reader, mime).await
            }
        }
        Mode::Create | Mode::CreateIfAbsent => {
            let metadata = DriveFile {
                name: Some(target.name.clone()),
                parents: Some(vec![target.parent.clone()]),
                mime_type: Some(mime.to_string()),
                ..Default::default()
            };
            let call = files
                .create(metadata)
                .supports_all_drives(true)
                .param("fields", STORED_FIELDS)
                .delegate(&mut progress);
            if len == 0 {
                call.upload(reader, mime).await
            } else {
                call.upload_resumable(reader, mime).await
            }
        }
    };
    result
        .map(|(_, file)| file)
        .map_err(|e| classify_call(context.to_owned(), e))
}

/// [`session_outcome`], retrying transient failures, within the timeout.
async fn ask_session(
    drive: &Drive,
    url: &str,
    len: u64,
    context: &str,
) -> Result<Option<DriveFile>, BackendError> {
    let asking = async {
        let mut retries = 0;
        loop {
            match session_outcome(drive, url, len, context).await {
                Err(failure) if failure.kind == Kind::Transient && retries < MAX_ATTEMPTS => {
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                outcome => return outcome.map_err(|f| f.error),
            }
        }
    };
    drive
        .runtime
        .within(
            || format!("{context}: asking its upload session what it stored"),
            asking,
        )
        .await?
}

/// What became of upload session `url` of a `len`-byte object: `Some(file)` if the server
/// has every byte (the file exists), `None` if it has not (then it never creates the file)
/// or no longer knows the session.
async fn session_outcome(
    drive: &Drive,
    url: &str,
    len: u64,
    context: &str,
) -> Result<Option<DriveFile>, Failure> {
    let token = drive
        .token()
        .await
        .map_err(|e| token_failure(context.to_owned(), e))?;
    let request = google_drive3::hyper::Request::put(url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header("Content-Range", format!("bytes */{len}"))
        .header(USER_AGENT, concat!("smpfs/", env!("CARGO_PKG_VERSION")))
        .body(google_drive3::common::to_body::<String>(None))
        .map_err(|e| {
            Failure::fatal(BackendError::Remote {
                context: context.to_owned(),
                message: e.to_string(),
            })
        })?;
    let response = drive
        .hub
        .client
        .request(request)
        .await
        .map_err(|e| Failure {
            kind: Kind::Transient,
            error: BackendError::Unavailable {
                context: context.to_owned(),
                message: e.to_string(),
            },
        })?;
    let status = response.status().as_u16();
    let body = google_drive3::common::to_bytes(response.into_body())
        .await
        .unwrap_or_default();
    match status {
        200 | 201 => serde_json::from_slice(&body).map(Some).map_err(|e| {
            Failure::fatal(BackendError::Remote {
                context: context.to_owned(),
                message: format!("the upload session's answer is not a file: {e}"),
            })
        }),
        308 | 404 | 410 => Ok(None),
        _ => Err(classify_status(
            context.to_owned(),
            status,
            &serde_json::from_slice(&body).unwrap_or_default(),
        )),
    }
}

impl Write for DriveWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.failed() {
            return Err(io::Error::other("the upload failed"));
        }
        self.staged.write_all(bytes)?;
        self.md5.update(bytes);
        let mut state = self.spool.state.lock();
        state.written += bytes.len() as u64;
        self.spool.changed.notify_all();
        while self.upload.is_some() && state.written - state.acked > WINDOW {
            self.spool
                .changed
                .wait_for(&mut state, Duration::from_millis(200));
            if self.failed() {
                return Err(io::Error::other("the upload failed"));
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for DriveWriter {
    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let context = format!("uploading {:?}", self.key);
        let written = {
            let mut state = self.spool.state.lock();
            state.finished = true;
            self.spool.changed.notify_all();
            state.written
        };
        if self.len.is_some_and(|len| len != written) {
            return Err(BackendError::Remote {
                context,
                message: format!(
                    "{written} bytes were written to an object announced as {} bytes",
                    self.len.unwrap_or_default()
                ),
            });
        }
        if self.upload.is_none() {
            self.start(written);
        }
        let handle = self.upload.take().expect("started");
        let stored = self
            .drive
            .runtime
            .runtime()
            .block_on(handle)
            .map_err(|e| BackendError::Remote {
                context: context.clone(),
                message: format!("upload task failed: {e}"),
            })??;
        let md5 = hex::encode(std::mem::take(&mut self.md5).finalize());
        let size_ok = stored.size.is_none_or(|size| size as u64 == written);
        let md5_ok = stored.md5_checksum.as_deref().is_none_or(|m| m == md5);
        if !(size_ok && md5_ok) {
            return Err(BackendError::Remote {
                context,
                message: format!(
                    "Drive stored {:?} bytes with MD5 {:?}, not the {written} bytes with MD5 {md5} sent; \
                     delete file {:?} and seal again",
                    stored.size, stored.md5_checksum, stored.id
                ),
            });
        }
        if self.target.mode == Mode::CreateIfAbsent {
            self.keep_if_oldest(stored)?;
        }
        Ok(())
    }
}

impl DriveWriter {
    /// The second half of [`Mode::CreateIfAbsent`]: keeps `stored` if no other file of its
    /// name is older, else deletes it and fails with [`BackendError::AlreadyExists`].
    fn keep_if_oldest(&self, stored: DriveFile) -> Result<(), BackendError> {
        let target = &self.target;
        let drive = &self.drive;
        let lost = drive.block(
            || format!("checking that {:?} was created first", self.key),
            async |last| {
                let parent = &target.parent;
                let drive_id = target.drive_id.as_deref();
                let named = drive
                    .named(last, parent, &target.name, drive_id, false)
                    .await?;
                let lost = older(&named, &stored).is_some();
                if lost {
                    let ours = stored.id.as_deref().unwrap_or_default();
                    drive.delete(last, ours).await?;
                }
                Ok(lost)
            },
        )?;
        if lost {
            tracing::info!(key = self.key, "another writer created it first");
            return Err(BackendError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        Ok(())
    }
}

impl Drop for DriveWriter {
    fn drop(&mut self) {
        if let Some(handle) = self.upload.take() {
            self.spool.state.lock().abandoned = true;
            self.spool.changed.notify_all();
            handle.abort();
        }
    }
}
