//! New Dropbox objects: staged while being sealed, sent at commit by one `files/upload`
//! (up to [`SINGLE`] bytes) or an upload session (`files/upload_session/start`,
//! `append_v2`, `finish`) in [`CHUNK`]s.
//!
//! Invariants:
//! - nothing is visible on Dropbox before the commit's last request (a session never
//!   finished leaves no file), and a replaced file switches to its new revision only then;
//! - the object's bytes (ciphertext only) are staged in an unlinked temporary file;
//! - each request is bounded by the timeout and retried as [`Client::retrying`] says; an
//!   `append_v2` the server already took (a retry after a dropped answer) resumes at the
//!   offset Dropbox reports;
//! - without `overwrite` the commit is `mode: add` without autorename, which Dropbox makes
//!   atomic: a file already there fails it with [`BackendError::AlreadyExists`]. A commit
//!   retried after its first try was stored (the answer lost) finds a file with the same
//!   content hash, and counts as done;
//! - the content hash Dropbox reports for the stored file must match the bytes written.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use google_drive3::hyper::body::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::client::{Client, ContentHasher, Failure};
use crate::backend::remote::Remote;
use crate::backend::{BackendError, ObjectWriter};

/// Largest object sent by one `files/upload`.
pub const SINGLE: u64 = 8 << 20;
/// Bytes per upload-session request (Dropbox takes up to 150 MiB; a multiple of 4 MiB).
pub const CHUNK: u64 = 8 << 20;

/// A new Dropbox object being written; see the module docs.
pub struct DropboxWriter {
    client: Arc<Client>,
    key: String,
    /// The API path of the object.
    path: String,
    overwrite: bool,
    staged: File,
    len: u64,
    hasher: ContentHasher,
}

impl DropboxWriter {
    /// Stages into a new unlinked temporary file.
    pub fn new(
        client: Arc<Client>,
        key: &str,
        path: String,
        overwrite: bool,
    ) -> Result<Self, BackendError> {
        let staged = tempfile::tempfile().map_err(|source| BackendError::Io {
            context: format!("staging the upload of {key:?}"),
            source,
        })?;
        Ok(DropboxWriter {
            client,
            key: key.to_owned(),
            path,
            overwrite,
            staged,
            len: 0,
            hasher: ContentHasher::default(),
        })
    }

    fn chunk(&self, offset: u64) -> Result<Bytes, BackendError> {
        let len = CHUNK.min(self.len - offset) as usize;
        let mut buf = vec![0u8; len];
        self.staged
            .read_exact_at(&mut buf, offset)
            .map_err(|source| BackendError::Io {
                context: format!("reading back the staged {:?}", self.key),
                source,
            })?;
        Ok(Bytes::from(buf))
    }

    fn commit_arg(&self) -> Value {
        json!({
            "path": self.path,
            "mode": if self.overwrite { "overwrite" } else { "add" },
            "autorename": false,
            "mute": true,
        })
    }

    /// Sends the staged bytes; returns the stored file's metadata.
    async fn send(&self, last: &Mutex<Option<String>>) -> Result<Value, Failure> {
        let client = &*self.client;
        let key = &self.key;
        if self.len <= SINGLE {
            let context = || format!("uploading {key:?}");
            let data = self.chunk(0).map_err(Failure::from_error)?;
            let arg = self.commit_arg();
            let stored = client.retrying(last, async |token| {
                client
                    .upload(&context, token, "files/upload", &arg, data.clone())
                    .await
            });
            return client.bounded(context, last, stored).await;
        }
        let context = || format!("starting the upload session of {key:?}");
        let first = self.chunk(0).map_err(Failure::from_error)?;
        let started = client.retrying(last, async |token| {
            client
                .upload(
                    &context,
                    token,
                    "files/upload_session/start",
                    &json!({"close": false}),
                    first.clone(),
                )
                .await
        });
        let started = client.bounded(context, last, started).await?;
        let session = started["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut offset = first.len() as u64;
        while offset < self.len {
            let context = || format!("uploading {key:?} at {offset}");
            let data = self.chunk(offset).map_err(Failure::from_error)?;
            let arg = json!({"cursor": {"session_id": session, "offset": offset}, "close": false});
            let sent = client.retrying(last, async |token| {
                client
                    .upload(
                        &context,
                        token,
                        "files/upload_session/append_v2",
                        &arg,
                        data.clone(),
                    )
                    .await
            });
            offset = match client.bounded(context, last, sent).await {
                Ok(_) => offset + data.len() as u64,
                // Taken already (the answer to an earlier try was lost): go on from there.
                Err(f) if f.is("incorrect_offset") => {
                    let correct = f.detail["correct_offset"].as_u64().unwrap_or(u64::MAX);
                    if correct > self.len {
                        return Err(f);
                    }
                    correct
                }
                Err(f) => return Err(f),
            };
        }
        let context = || format!("finishing the upload of {key:?}");
        let arg = json!({
            "cursor": {"session_id": session, "offset": self.len},
            "commit": self.commit_arg(),
        });
        let finished = client.retrying(last, async |token| {
            client
                .upload(
                    &context,
                    token,
                    "files/upload_session/finish",
                    &arg,
                    Bytes::new(),
                )
                .await
        });
        client.bounded(context, last, finished).await
    }
}

impl Write for DropboxWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.staged.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for DropboxWriter {
    fn commit(self: Box<Self>) -> Result<(), BackendError> {
        let mut this = *self;
        let expected = std::mem::take(&mut this.hasher).finish();
        let this = this;
        let (client, key, path) = (&this.client, &this.key, &this.path);
        let stored = client.block_each(async |last| match this.send(last).await {
            Ok(stored) => Ok(stored),
            Err(f) if f.is("path/conflict") || f.is("lookup_failed") => {
                // Ours stored by an earlier try whose answer was lost, or another file.
                let context = || format!("looking up {key:?} after a conflict");
                let arg = json!({ "path": path });
                let found = client.retrying(last, async |token| {
                    client
                        .rpc(&context, token, "files/get_metadata", &arg)
                        .await
                });
                match client.bounded(context, last, found).await {
                    Ok(meta) if meta["content_hash"].as_str() == Some(&expected) => Ok(meta),
                    _ if f.is("path/conflict") => {
                        Err(Failure::from_error(BackendError::AlreadyExists {
                            key: key.clone(),
                        }))
                    }
                    _ => Err(f),
                }
            }
            Err(f) => Err(f),
        })?;
        if let Some(hash) = stored["content_hash"].as_str() {
            if hash != expected {
                return Err(BackendError::Remote {
                    context: format!("uploading {key:?}"),
                    message: format!(
                        "Dropbox stored content hash {hash}, but the bytes written hash to \
                         {expected}"
                    ),
                });
            }
        }
        let size = stored["size"].as_u64();
        if size != Some(this.len) {
            return Err(BackendError::Remote {
                context: format!("uploading {key:?}"),
                message: format!("Dropbox stored {size:?} bytes of {}", this.len),
            });
        }
        tracing::debug!(key, rev = stored["rev"].as_str(), "stored on Dropbox");
        Ok(())
    }
}
