//! A folder on Dropbox as a bucket, through a small typed client of the HTTP API
//! ([`client`]) on the hyper stack already in the tree, with OAuth 2 PKCE logins
//! ([`auth`]).
//!
//! Invariants:
//! - the listing is recursive from the source folder (`files/list_folder` and
//!   `list_folder/continue` until `has_more` is false, each request bounded by the
//!   timeout); folders are implied by their files; a name that is not a safe key is
//!   skipped with a warning; a source folder that does not exist (yet) lists as empty;
//! - every read of a file is pinned to the revision (`rev`) its listing (or its lookup,
//!   for a key no listing saw, or its latest `stat`) found: it downloads `rev:REV` with a
//!   `Range` header, and the answer's `Dropbox-API-Result` must name that revision. A
//!   file replaced mid-read keeps serving the bytes it was listed with while Dropbox keeps
//!   that revision, and fails with [`BackendError::Changed`] (EIO) once it is gone: never
//!   bytes of two versions;
//! - a key that is not there is [`BackendError::NotFound`], asked again on the next read;
//! - Dropbox matches paths without regard to case: [`Backend::location`] is lower-cased,
//!   so a bucket sealed as `dropbox:///Scans` opens as `dropbox:///scans` too;
//! - uploads are write-once and atomic ([`upload`]); `create` without `overwrite` is
//!   create-if-absent, also against racing writers (Dropbox's `mode: add`);
//! - `delete` of a key that is not there succeeds.

mod auth;
mod client;
mod location;
mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};

pub use auth::{default_token_path, Stored as DropboxLogin};
pub use location::DropboxLocation;

use super::remote::{BlockingRuntime, CopyIn, Remote};
use super::{validate_key, Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, ReadProfile};
use client::{Client, Failure};
use upload::DropboxWriter;

/// Dropbox's RPC host, where requests go unless `dropbox_endpoint=` says otherwise.
pub const DROPBOX_API: &str = "https://api.dropboxapi.com";
/// Dropbox's content host.
pub const DROPBOX_CONTENT: &str = "https://content.dropboxapi.com";
/// Where users allow an app.
pub const DROPBOX_AUTHORIZE: &str = "https://www.dropbox.com/oauth2/authorize";
/// Entries asked per listing page (Dropbox's largest).
const LIST_LIMIT: u64 = 2000;
/// Listings started in all when Dropbox invalidates the cursor (`reset`) mid-listing.
const MAX_LIST_RESETS: u32 = 3;

/// Dropbox connection settings (`dropbox_token=`, `dropbox_endpoint=`,
/// `dropbox_content_endpoint=`, `timeout=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropboxOptions {
    /// Token file written by `smpfs dropbox login`; default [`default_token_path`].
    pub token: Option<PathBuf>,
    /// Base of the RPC and OAuth URLs (and of the content URLs unless
    /// `content_endpoint` is set) instead of Dropbox's hosts (tests, proxies).
    pub endpoint: Option<String>,
    /// Base of the content URLs (downloads, uploads) instead of Dropbox's content host.
    pub content_endpoint: Option<String>,
    /// Longest time one request may take, retries included.
    pub timeout: Duration,
}

impl Default for DropboxOptions {
    fn default() -> Self {
        DropboxOptions {
            token: None,
            endpoint: None,
            content_endpoint: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl DropboxOptions {
    /// The RPC base URL.
    pub fn api(&self) -> &str {
        self.endpoint
            .as_deref()
            .unwrap_or(DROPBOX_API)
            .trim_end_matches('/')
    }

    /// The content base URL.
    pub fn content(&self) -> &str {
        self.content_endpoint
            .as_deref()
            .or(self.endpoint.as_deref())
            .unwrap_or(DROPBOX_CONTENT)
            .trim_end_matches('/')
    }

    /// The OAuth token endpoint (on the RPC host).
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.api())
    }
}

/// Runs the PKCE login for app `app_key` (`smpfs dropbox login`): `read_code` is shown the
/// URL that asks the user to allow the app (at `authorize`, Dropbox's page unless a test
/// says otherwise) and returns the code the user was given; the code is exchanged at the
/// token endpoint of `options`, and the tokens cached in `token_path` (mode 0600).
pub fn login(
    app_key: &str,
    token_path: &Path,
    options: &DropboxOptions,
    authorize: &str,
    read_code: impl FnOnce(&str) -> Result<String, BackendError>,
) -> Result<DropboxLogin, BackendError> {
    let (verifier, challenge) = auth::pkce_pair()?;
    let code = read_code(&auth::authorize_url(authorize, app_key, &challenge))?;
    let code = code.trim();
    if code.is_empty() {
        return Err(BackendError::Remote {
            context: "the authorization code".into(),
            message: "none was given (paste the code Dropbox shows after Allow)".into(),
        });
    }
    let runtime = BlockingRuntime::new("smpfs-dropbox", 1, options.timeout)?;
    let connector = client::connector(options.timeout)?;
    runtime.run(
        || "exchanging the Dropbox authorization code".into(),
        auth::exchange(
            &connector,
            &options.token_url(),
            app_key,
            code,
            &verifier,
            token_path,
        ),
    )
}

/// What pins the reads of a file.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    rev: String,
}

impl Listed {
    /// The pin of a file's metadata; `None` for a folder or a deleted entry.
    fn of(meta: &Value) -> Option<Self> {
        (meta[".tag"] == "file").then(|| Listed {
            id: meta["id"].as_str().unwrap_or_default().to_owned(),
            rev: meta["rev"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// A Dropbox folder; see the module docs.
pub struct DropboxBackend {
    client: Arc<Client>,
    location: DropboxLocation,
    /// Pins of the files read so far (or listed), by key.
    files: RwLock<HashMap<String, Listed>>,
}

impl DropboxBackend {
    /// Loads the login and builds the client; the first request is the first `list` (or
    /// `stat`), where refused credentials show.
    pub fn open(location: DropboxLocation, options: &DropboxOptions) -> Result<Self, BackendError> {
        let runtime = BlockingRuntime::new("smpfs-dropbox", 4, options.timeout)?;
        let connector = client::connector(options.timeout)?;
        let token = options.token.clone().unwrap_or_else(default_token_path);
        let auth = auth::Auth::load(&token, options.token_url(), connector.clone())?;
        Ok(DropboxBackend {
            client: Arc::new(Client::new(
                runtime,
                auth,
                connector,
                options.api(),
                options.content(),
            )),
            location,
            files: RwLock::new(HashMap::new()),
        })
    }

    /// The key of an entry at API path `path` (as Dropbox shows it), if it lies below the
    /// source folder and is a safe key.
    fn key_of(&self, shown: &str, lower: &str) -> Option<String> {
        let root = self.location.api_path().to_lowercase();
        if !lower.starts_with(&format!("{root}/")) {
            return None;
        }
        let depth = self.location.path.len();
        let key = shown
            .split('/')
            .skip(1 + depth)
            .collect::<Vec<_>>()
            .join("/");
        match validate_key(&key) {
            Ok(()) => Some(key),
            Err(e) => {
                tracing::warn!(path = shown, "skipping a Dropbox file: {e}");
                None
            }
        }
    }

    /// The metadata of `key` now, if a file is there.
    fn look_up(&self, key: &str) -> Result<Option<Value>, BackendError> {
        validate_key(key)?;
        let client = &self.client;
        let context = || format!("looking up {key:?} in {}", self.location);
        let arg = json!({ "path": self.location.key_path(key) });
        client.block(context, async |last| {
            match client
                .retrying(last, async |token| {
                    client
                        .rpc(&context, token, "files/get_metadata", &arg)
                        .await
                })
                .await
            {
                Ok(meta) if meta[".tag"] == "file" => Ok(Some(meta)),
                Ok(_) => Ok(None),
                Err(f) if f.is("path/not_found") => Ok(None),
                Err(f) => Err(f),
            }
        })
    }

    /// What pins the reads of `key`: as listed (or found before), else looked up now and
    /// kept; [`BackendError::NotFound`] (not kept) if there is no such file.
    fn listed(&self, key: &str) -> Result<Listed, BackendError> {
        if let Some(listed) = self.files.read().get(key) {
            return Ok(listed.clone());
        }
        let listed = self
            .look_up(key)?
            .as_ref()
            .and_then(Listed::of)
            .ok_or_else(|| BackendError::NotFound {
                key: key.to_owned(),
            })?;
        // A lookup that raced this one may have kept its answer first: reads agree on it.
        let mut files = self.files.write();
        Ok(files.entry(key.to_owned()).or_insert(listed).clone())
    }

    /// One recursive listing of the folder: its files by key (what pins their reads), page
    /// by page, each request bounded by the timeout.
    async fn walk(
        &self,
        last: &Mutex<Option<String>>,
    ) -> Result<(Vec<ObjectInfo>, HashMap<String, Listed>), Failure> {
        let client = &self.client;
        let context = || format!("listing {}", self.location);
        let mut objects = Vec::new();
        let mut listed = HashMap::new();
        let first = json!({
            "path": self.location.api_path(),
            "recursive": true,
            "include_deleted": false,
            "limit": LIST_LIMIT,
        });
        let mut page = match client
            .bounded(
                context,
                last,
                client.retrying(last, async |token| {
                    client
                        .rpc(&context, token, "files/list_folder", &first)
                        .await
                }),
            )
            .await
        {
            Err(f) if f.is("path/not_found") => {
                tracing::info!(source = %self.location, "no such folder (yet): nothing to list");
                return Ok((objects, listed));
            }
            other => other?,
        };
        loop {
            for entry in page["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(pin) = Listed::of(entry) else {
                    continue;
                };
                let display = entry["path_display"].as_str().unwrap_or_default();
                let lower = entry["path_lower"].as_str().unwrap_or_default();
                if let Some(key) = self.key_of(display, lower) {
                    objects.push(ObjectInfo {
                        key: key.clone(),
                        size: entry["size"].as_u64().unwrap_or(0),
                    });
                    listed.insert(key, pin);
                }
            }
            if page["has_more"] != true {
                return Ok((objects, listed));
            }
            let next = json!({ "cursor": page["cursor"] });
            page = client
                .bounded(
                    context,
                    last,
                    client.retrying(last, async |token| {
                        client
                            .rpc(&context, token, "files/list_folder/continue", &next)
                            .await
                    }),
                )
                .await?;
        }
    }

    /// Reads bytes of the pinned revision of `key`; with `here` on this thread's own
    /// runtime and client.
    fn read_pinned(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
        here: bool,
    ) -> Result<(), BackendError> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        let listed = self.listed(key)?;
        let client = &self.client;
        let http = if here {
            client.client_here()
        } else {
            client.shared().clone()
        };
        let path = format!("rev:{}", listed.rev);
        let context = || format!("reading {key:?} at {offset}");
        let read = async |last: &Mutex<Option<String>>| {
            client
                .retrying(last, async |token| {
                    client
                        .download(&http, token, &path, &listed.rev, key, offset, bufs, arrival)
                        .await
                })
                .await
                .map_err(|f| {
                    if f.is("path/not_found") || f.is("path/restricted_content") {
                        Failure::from_error(BackendError::Changed {
                            key: key.to_owned(),
                        })
                    } else {
                        f
                    }
                })
        };
        if here {
            client.block_here(context, read)
        } else {
            client.block(context, read)
        }
    }
}

impl Backend for DropboxBackend {
    /// The whole tree below the folder, page by page; each page bounded by the timeout,
    /// not the whole listing.
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let client = &self.client;
        let (objects, listed) = client.block_each(async |last| {
            for attempt in 1.. {
                match self.walk(last).await {
                    // The cursor was invalidated (Dropbox's `reset`): list again.
                    Err(f) if f.is("reset") && attempt < MAX_LIST_RESETS => {
                        tracing::warn!(source = %self.location, "Dropbox reset the listing; listing again");
                    }
                    other => return other,
                }
            }
            unreachable!("the loop returns")
        })?;
        *self.files.write() = listed;
        Ok(objects)
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        self.read_pinned(key, offset, bufs, &CopyIn, false)
    }

    /// Chunk loads (read-ahead and misses, from long-lived threads) are received on the
    /// calling thread with its own client; plain reads use the shared pooled client.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        self.read_pinned(key, offset, bufs, arrival, true)
    }

    /// Looks the key up afresh and pins the reads that follow to the revision found (or
    /// forgets the pin if nothing is there).
    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        let found = self.look_up(key)?;
        let mut files = self.files.write();
        match found.as_ref().and_then(Listed::of) {
            Some(listed) => files.insert(key.to_owned(), listed),
            None => files.remove(key),
        };
        Ok(found.map(|meta| meta["size"].as_u64().unwrap_or(0)))
    }

    /// Without `overwrite`: [`BackendError::AlreadyExists`] here if a file is there, or at
    /// commit if one appeared meanwhile.
    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        validate_key(key)?;
        if !overwrite && self.look_up(key)?.is_some() {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(Box::new(DropboxWriter::new(
            Arc::clone(&self.client),
            key,
            self.location.key_path(key),
            overwrite,
        )?))
    }

    /// Deletes the file and forgets its pin; nothing there is success.
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let client = &self.client;
        let context = || format!("deleting {key:?} in {}", self.location);
        let arg = json!({ "path": self.location.key_path(key) });
        client.block(context, async |last| {
            match client
                .retrying(last, async |token| {
                    client.rpc(&context, token, "files/delete_v2", &arg).await
                })
                .await
            {
                Err(f) if f.is("path_lookup/not_found") || f.is("path/not_found") => Ok(()),
                other => other.map(drop),
            }
        })?;
        self.files.write().remove(key);
        Ok(())
    }

    /// The file id and the revision its reads are pinned to.
    fn version(&self, key: &str) -> Option<String> {
        let files = self.files.read();
        let listed = files.get(key)?;
        Some(format!("{}@{}", listed.id, listed.rev))
    }

    fn read_profile(&self) -> ReadProfile {
        ReadProfile::remote()
    }

    /// The folder's path from the top and the key, lower-cased (Dropbox's paths are
    /// case-insensitive).
    fn location(&self, key: &str) -> Result<String, BackendError> {
        Ok(self
            .location
            .path
            .iter()
            .map(String::as_str)
            .chain([key])
            .collect::<Vec<_>>()
            .join("/")
            .to_lowercase())
    }

    fn describe(&self) -> String {
        format!("Dropbox folder {}", self.location)
    }
}
