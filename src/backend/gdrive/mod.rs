//! A folder on Google Drive as a bucket, through `google-drive3` (listing, metadata and
//! uploads on the generated calls; ranged downloads sent by hand with the hub's token, chunk
//! loads over the loading thread's own client, see [`Remote::block_here`]).
//!
//! Invariants:
//! - the listing is recursive from the source folder; each folder's entries get unique,
//!   safe local names ([`names`]); Google-native documents have no bytes and are skipped;
//! - a key need not be listed to be read: one the listing did not see (or no listing ran)
//!   is looked up when first read, as the oldest file of that name in its folder, and
//!   from then on read as if listed; one that does not exist is
//!   [`BackendError::NotFound`], and asked again on the next read; `stat` looks a key up
//!   afresh and pins the reads that follow to what it found;
//! - every read of a listed file is pinned to the revision the listing saw: it downloads
//!   `files/ID/revisions/REV?alt=media`, so a file replaced mid-read keeps serving the
//!   listed bytes while Drive keeps that revision, and fails with
//!   [`BackendError::Changed`] once it is gone. Where this account may not read revisions
//!   (403, e.g. a viewer), the read downloads `files/ID?alt=media` and then checks that
//!   the head revision and MD5 are still the listed ones, else `Changed`; never bytes of
//!   two versions (and the sealed format would reject them anyway);
//! - requests are bounded by the timeout and retried as [`client`] says;
//! - uploads are write-once (see [`upload`]); folders are created as needed, one at a
//!   time, so parallel seals do not create duplicates;
//! - `create` without `overwrite` is create-if-absent, also against racing writers
//!   ([`upload::Mode::CreateIfAbsent`]); `delete` removes every file of the key's name.

mod auth;
mod client;
mod location;
pub mod names;
mod upload;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use google_drive3::api::File;
use parking_lot::{Mutex, RwLock};

pub use auth::{default_client_secret_path, default_token_path};
pub use location::{DriveRoot, GDriveLocation};

use super::remote::{BlockingRuntime, CopyIn, Remote};
use super::{validate_key, Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, ReadProfile};
use client::{quote, Drive, Failure, Kind};
use upload::{DriveWriter, Mode, Target};

// The HTTP(S) connector of the hub and the authenticators.
use super::remote::Connector;

/// Drive's MIME type of folders.
const FOLDER: &str = "application/vnd.google-apps.folder";
/// Folders of one level of the tree listed at once.
const FOLDERS_IN_FLIGHT: usize = 8;
/// Prefix of the MIME types of Google-native documents (no binary content).
const NATIVE: &str = "application/vnd.google-apps.";
/// Deepest folder nesting walked up from a `gdrive://FOLDER_ID` root.
const MAX_FOLDER_DEPTH: usize = 64;

/// Drive connection settings (`gdrive_credentials=`, `gdrive_token=`, `gdrive_endpoint=`,
/// `timeout=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GDriveOptions {
    /// Service-account key file; if unset, the login cached in `token` is used.
    pub credentials: Option<PathBuf>,
    /// Token file written by `smpfs gdrive login`; default [`default_token_path`].
    pub token: Option<PathBuf>,
    /// Base of the API URLs instead of `https://www.googleapis.com` (tests, proxies).
    pub endpoint: Option<String>,
    /// Longest time one operation may take, retries included.
    pub timeout: Duration,
}

impl Default for GDriveOptions {
    fn default() -> Self {
        GDriveOptions {
            credentials: None,
            token: None,
            endpoint: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Runs the installed-app login (`smpfs gdrive login`, see the `auth` module): shows a
/// consent URL, waits up to ten minutes for the browser to come back, and caches the
/// token in `token` (mode 0600).
pub fn login(client_secret: &Path, token: &Path) -> Result<(), BackendError> {
    let runtime = BlockingRuntime::new("smpfs-gdrive", 2, Duration::from_secs(600))?;
    let connector = client::connector(Duration::from_secs(30))?;
    runtime.run(
        || "waiting for the Google login".into(),
        auth::login(client_secret, token, connector),
    )
}

/// A file as listed: what pins its reads.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    revision: Option<String>,
    md5: Option<String>,
}

impl Listed {
    /// What pins the reads of `file` as listed now: its head revision and MD5; `None` for
    /// a Google-native document (no bytes), which a listing skips.
    fn of(file: &File) -> Option<Self> {
        let mime = file.mime_type.as_deref().unwrap_or_default();
        (!mime.starts_with(NATIVE)).then(|| Listed {
            id: file.id.clone().unwrap_or_default(),
            revision: file.head_revision_id.clone(),
            md5: file.md5_checksum.clone(),
        })
    }
}

/// The source folder, once found.
#[derive(Debug, Clone)]
struct Root {
    id: String,
    /// The shared drive it is in, if any.
    drive_id: Option<String>,
}

/// A Drive folder; see the module docs.
pub struct GDriveBackend {
    drive: Arc<Drive>,
    location: GDriveLocation,
    root: tokio::sync::Mutex<Option<Root>>,
    /// See [`GDriveBackend::folders_above_root`].
    above_root: std::sync::OnceLock<Vec<String>>,
    /// Folder ids by directory key below the root, for `stat` and uploads.
    folders: tokio::sync::Mutex<HashMap<String, String>>,
    /// Listed files by key.
    files: RwLock<HashMap<String, Listed>>,
    /// Ids of files whose revisions this account may not download.
    unpinned: Mutex<HashSet<String>>,
}

impl GDriveBackend {
    /// Loads the credentials and builds the client; the first request is the first
    /// `list` (or `stat`), where refused credentials show. `writable` asks for the file
    /// scope (sealing) instead of the read-only scope (mounting).
    pub fn open(
        location: GDriveLocation,
        options: &GDriveOptions,
        writable: bool,
    ) -> Result<Self, BackendError> {
        Ok(GDriveBackend {
            drive: Drive::open(options, writable)?,
            location,
            root: tokio::sync::Mutex::new(None),
            above_root: std::sync::OnceLock::new(),
            folders: tokio::sync::Mutex::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            unpinned: Mutex::new(HashSet::new()),
        })
    }

    /// The names of the folders from the top of the drive (My Drive or a shared drive's
    /// root, not included) down to the root folder of a `gdrive://FOLDER_ID` source; empty
    /// for the other forms, which start at the top. Looked up once, then kept. A parent
    /// this account cannot see ends the walk as the top would.
    fn folders_above_root(&self) -> Result<&[String], BackendError> {
        let DriveRoot::Folder(id) = &self.location.root else {
            return Ok(&[]);
        };
        if let Some(names) = self.above_root.get() {
            return Ok(names);
        }
        let names = self.drive.block(
            || format!("finding the path of Drive folder {id}"),
            async |last| {
                let drive = &self.drive;
                let mut names = Vec::new();
                let mut current = id.clone();
                for _ in 0..MAX_FOLDER_DEPTH {
                    let meta = match drive
                        .retrying(last, async || drive.get(&current, "id,name,parents").await)
                        .await
                    {
                        Ok(meta) => meta,
                        Err(f) if f.kind == Kind::NotFound && !names.is_empty() => break,
                        Err(f) => return Err(f),
                    };
                    match meta.parents.as_deref() {
                        Some([parent, ..]) => {
                            names.push(meta.name.unwrap_or_default());
                            current = parent.clone();
                        }
                        _ => break,
                    }
                }
                names.reverse();
                Ok(names)
            },
        )?;
        Ok(self.above_root.get_or_init(|| names))
    }

    /// Finds (or with `create`, makes) the source folder; `None` if it does not exist.
    async fn root(
        &self,
        last: &Mutex<Option<String>>,
        create: bool,
    ) -> Result<Option<Root>, Failure> {
        let mut cached = self.root.lock().await;
        if let Some(root) = cached.as_ref() {
            return Ok(Some(root.clone()));
        }
        let drive = &self.drive;
        let bad = |reason: String| {
            Failure::fatal(BackendError::BadSource {
                source_text: self.location.to_string(),
                reason,
            })
        };
        let (mut id, drive_id) = match &self.location.root {
            DriveRoot::Folder(id) => {
                let meta = drive
                    .retrying(last, async || drive.get(id, "id,mimeType,driveId").await)
                    .await
                    .map_err(|f| match f.kind {
                        Kind::NotFound => bad(format!("no folder with id {id} is visible")),
                        _ => f,
                    })?;
                if meta.mime_type.as_deref() != Some(FOLDER) {
                    return Err(bad(format!("{id} is not a folder")));
                }
                (meta.id.unwrap_or_else(|| id.clone()), meta.drive_id)
            }
            DriveRoot::MyDrive => {
                let meta = drive
                    .retrying(last, async || drive.get("root", "id").await)
                    .await?;
                (meta.id.unwrap_or_else(|| "root".into()), None)
            }
            DriveRoot::SharedDrive(name) => {
                let query = format!("name = '{}'", quote(name));
                let (_, list) = drive
                    .retrying(last, async || {
                        drive
                            .hub
                            .drives()
                            .list()
                            .q(&query)
                            .page_size(10)
                            .doit()
                            .await
                            .map_err(|e| client::classify_call("listing shared drives".into(), e))
                    })
                    .await?;
                let drives = list.drives.unwrap_or_default();
                match drives.as_slice() {
                    [one] => {
                        let id = one.id.clone().unwrap_or_default();
                        (id.clone(), Some(id))
                    }
                    [] => return Err(bad(format!("no shared drive named {name:?} is visible"))),
                    _ => {
                        return Err(bad(format!(
                            "several shared drives are named {name:?}; use gdrive://FOLDER_ID"
                        )))
                    }
                }
            }
        };
        for name in &self.location.path {
            id = match self
                .child_folder(last, &id, drive_id.as_deref(), name, create)
                .await?
            {
                Some(child) => child,
                None if create => unreachable!("created"),
                None => return Ok(None),
            };
        }
        let root = Root { id, drive_id };
        *cached = Some(root.clone());
        Ok(Some(root))
    }

    /// The folder `name` in `parent`; created if missing and `create`. Of several folders
    /// of that name the oldest is meant, as of files (and as the listing names them), by
    /// the protocol of [`upload::Mode::CreateIfAbsent`]: writers racing to create it agree
    /// on the oldest, and one whose own folder turns out younger deletes it (still empty:
    /// nothing is put in a folder before this check) and uses the oldest.
    async fn child_folder(
        &self,
        last: &Mutex<Option<String>>,
        parent: &str,
        drive_id: Option<&str>,
        name: &str,
        create: bool,
    ) -> Result<Option<String>, Failure> {
        let drive = &self.drive;
        let named = async || drive.named(last, parent, name, drive_id, true).await;
        if let Some(oldest) = named().await?.into_iter().next() {
            return Ok(oldest.id);
        }
        if !create {
            return Ok(None);
        }
        let created = drive
            .retrying(last, async || drive.create_folder(parent, name).await)
            .await?;
        tracing::info!(name, "created Drive folder");
        let found = named().await?;
        let Some(older) = client::older(&found, &created) else {
            return Ok(created.id);
        };
        tracing::info!(
            name,
            "another writer created this folder first; using theirs"
        );
        drive
            .delete(last, created.id.as_deref().unwrap_or_default())
            .await?;
        Ok(older.id.clone())
    }

    /// The folder id of directory `dir` (`""` for the root); with `create`, missing
    /// folders are made. One caller at a time, so no folder is created twice.
    async fn folder(
        &self,
        last: &Mutex<Option<String>>,
        dir: &str,
        create: bool,
    ) -> Result<Option<(String, Option<String>)>, Failure> {
        let mut folders = self.folders.lock().await;
        let Some(root) = self.root(last, create).await? else {
            return Ok(None);
        };
        let mut id = root.id.clone();
        let mut path = String::new();
        for name in dir.split('/').filter(|c| !c.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(name);
            id = match folders.get(&path) {
                Some(known) => known.clone(),
                None => match self
                    .child_folder(last, &id, root.drive_id.as_deref(), name, create)
                    .await?
                {
                    Some(child) => {
                        folders.insert(path.clone(), child.clone());
                        child
                    }
                    None => return Ok(None),
                },
            };
        }
        Ok(Some((id, root.drive_id)))
    }

    /// The files named exactly as `key` in its folder, oldest first ([`client::age`]): the
    /// first is the one `key` means.
    async fn existing(
        &self,
        last: &Mutex<Option<String>>,
        key: &str,
    ) -> Result<Vec<File>, Failure> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let Some((folder, drive_id)) = self.folder(last, dir, false).await? else {
            return Ok(Vec::new());
        };
        self.drive
            .named(last, &folder, name, drive_id.as_deref(), false)
            .await
    }

    /// A writer of `key`: with `overwrite` a new revision of the file `key` means (a new
    /// file if there is none), else a new file created if absent
    /// ([`upload::Mode::CreateIfAbsent`]).
    fn writer(
        &self,
        key: &str,
        overwrite: bool,
        len: Option<u64>,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        validate_key(key)?;
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let target = self.drive.block(
            || format!("preparing the upload of {key:?}"),
            async |last| {
                let (parent, drive_id) = self
                    .folder(last, dir, true)
                    .await?
                    .expect("created when missing");
                let existing = self
                    .drive
                    .named(last, &parent, name, drive_id.as_deref(), false)
                    .await?;
                let mode = match existing.into_iter().next() {
                    Some(file) if overwrite => Mode::Replace(file.id.unwrap_or_default()),
                    None if overwrite => Mode::Create,
                    Some(_) => {
                        return Err(Failure::fatal(BackendError::AlreadyExists {
                            key: key.to_owned(),
                        }))
                    }
                    None => Mode::CreateIfAbsent,
                };
                Ok(Target {
                    parent,
                    drive_id,
                    name: name.to_owned(),
                    mode,
                })
            },
        )?;
        Ok(Box::new(DriveWriter::new(
            Arc::clone(&self.drive),
            key,
            target,
            len,
        )?))
    }

    /// What pins the reads of `key`: as listed, else looked up now (the oldest file of
    /// that name and its head revision, as a listing would record it) and kept as if
    /// listed. [`BackendError::NotFound`] if there is no such file (or only a
    /// Google-native document, which a listing skips); that answer is not kept, so a key
    /// created later is found then.
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

    /// The file `key` means now (the oldest of its name), if any.
    fn look_up(&self, key: &str) -> Result<Option<File>, BackendError> {
        validate_key(key)?;
        self.drive.block(
            || format!("looking up {key:?} in {}", self.location),
            async |last| Ok(self.existing(last, key).await?.into_iter().next()),
        )
    }

    /// Reads a file's bytes ([`GDriveBackend::listed`]): its listed revision, or, where
    /// revisions may not be read, the current content checked against the listing
    /// afterwards. With `here`, the pinned download runs on this thread's own runtime and
    /// client ([`Remote::block_here`]).
    fn read_listed(
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
        let drive = &self.drive;
        let changed = || {
            Failure::fatal(BackendError::Changed {
                key: key.to_owned(),
            })
        };
        let context = || format!("reading {key:?} at {offset}");
        if let Some(revision) = &listed.revision {
            if !self.unpinned.lock().contains(&listed.id) {
                let url = drive.url(&format!(
                    "files/{}/revisions/{revision}?alt=media",
                    listed.id
                ));
                let client = if here {
                    drive.client_here()
                } else {
                    drive.hub.client.clone()
                };
                let read_pinned = async |last: &Mutex<Option<String>>| match drive
                    .retrying(last, async || {
                        drive
                            .download(&client, &url, key, offset, bufs, arrival)
                            .await
                    })
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(f) if f.kind == Kind::Forbidden => {
                        tracing::warn!(
                            key,
                            "this account may not read revisions ({}); reading the current \
                                 content and checking it is still the listed revision",
                            f.error
                        );
                        self.unpinned.lock().insert(listed.id.clone());
                        Ok(false)
                    }
                    Err(f) if f.kind == Kind::NotFound => Err(changed()),
                    Err(f) => Err(f),
                };
                let pinned = if here {
                    drive.block_here(context, read_pinned)?
                } else {
                    drive.block(context, read_pinned)?
                };
                if pinned {
                    return Ok(());
                }
            }
        }
        // Unpinned: the current content, then a check that it is still the listed revision.
        // This uses the hub, so it runs on the shared runtime.
        drive.block(context, async |last| {
            let url = drive.url(&format!(
                "files/{}?alt=media&supportsAllDrives=true",
                listed.id
            ));
            drive
                .retrying(last, async || {
                    let client = &drive.hub.client;
                    drive
                        .download(client, &url, key, offset, bufs, arrival)
                        .await
                })
                .await
                .map_err(|f| {
                    if f.kind == Kind::NotFound {
                        changed()
                    } else {
                        f
                    }
                })?;
            let now = drive
                .retrying(last, async || {
                    drive.get(&listed.id, "headRevisionId,md5Checksum").await
                })
                .await?;
            if now.head_revision_id != listed.revision || now.md5_checksum != listed.md5 {
                return Err(changed());
            }
            Ok(())
        })
    }
}

/// What a listing found, by local key: the files (with what pins their reads) and the
/// folders.
#[derive(Default)]
struct Walk {
    objects: Vec<ObjectInfo>,
    listed: HashMap<String, Listed>,
    folders: HashMap<String, String>,
}

impl Walk {
    /// Adds the entries of the folder at `prefix` under their local names (Google-native
    /// documents skipped with a log line); returns its subfolders to list, as (id, prefix).
    fn add(&mut self, prefix: &str, entries: &[File]) -> Vec<(String, String)> {
        let naming: Vec<names::Entry<'_, _>> = entries
            .iter()
            .map(|f| names::Entry {
                id: f.id.as_deref().unwrap_or_default(),
                name: f.name.as_deref().unwrap_or_default(),
                created: f.created_time,
            })
            .collect();
        let mut subfolders = Vec::new();
        for (file, name) in entries.iter().zip(names::local_names(&naming)) {
            let Some(name) = name else { continue };
            let key = format!("{prefix}{name}");
            let id = file.id.clone().unwrap_or_default();
            let mime = file.mime_type.as_deref().unwrap_or_default();
            if mime == FOLDER {
                subfolders.push((id.clone(), format!("{key}/")));
                self.folders.insert(key, id);
            } else if mime.starts_with(NATIVE) {
                tracing::info!(
                    key,
                    mime,
                    "skipping a Google-native document (no binary content)"
                );
            } else {
                self.objects.push(ObjectInfo {
                    key: key.clone(),
                    size: file.size.unwrap_or(0).max(0) as u64,
                });
                self.listed
                    .extend(Listed::of(file).map(|listed| (key, listed)));
            }
        }
        subfolders
    }
}

impl Backend for GDriveBackend {
    /// The whole tree below the root. A source path whose folders do not exist (yet)
    /// lists as empty, as an S3 prefix does: sealing creates them. A `gdrive://FOLDER_ID`
    /// or shared drive that is not visible is [`BackendError::BadSource`].
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let context = || format!("listing {}", self.location);
        // Not bounded as a whole (a large tree takes many requests): each request is.
        let walk = self.drive.block_each(async |last| {
            let root = self.drive.bounded(context, last, self.root(last, false));
            let Some(root) = root.await? else {
                tracing::info!(source = %self.location, "no such folder (yet): nothing to list");
                return Ok(Walk::default());
            };
            // Level by level, several folders of a level at once; `buffered` keeps the
            // answers in order, so the result does not depend on which answers first.
            let mut walk = Walk::default();
            let mut level = vec![(root.id.clone(), String::new())];
            let drive_id = root.drive_id.as_deref();
            while !level.is_empty() {
                let answers: Vec<(String, Vec<File>)> = stream::iter(level.drain(..))
                    .map(|(folder, prefix)| async move {
                        let entries = self.drive.children(last, &folder, "", drive_id).await?;
                        Ok::<_, Failure>((prefix, entries))
                    })
                    .buffered(FOLDERS_IN_FLIGHT)
                    .try_collect()
                    .await?;
                for (prefix, entries) in answers {
                    level.extend(walk.add(&prefix, &entries));
                }
            }
            Ok(walk)
        })?;
        *self.files.write() = walk.listed;
        self.drive
            .runtime
            .runtime()
            .block_on(self.folders.lock())
            .extend(walk.folders);
        Ok(walk.objects)
    }

    /// The listed file id and head revision (or MD5): what its reads are pinned to.
    fn version(&self, key: &str) -> Option<String> {
        let files = self.files.read();
        let listed = files.get(key)?;
        let pin = listed.revision.as_ref().or(listed.md5.as_ref())?;
        Some(format!("{}@{pin}", listed.id))
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        self.read_listed(key, offset, bufs, &CopyIn, false)
    }

    /// Chunk loads (read-ahead and misses, from long-lived threads) are received on the
    /// calling thread; plain reads (headers, often from short-lived threads checking a
    /// directory) use the shared client's pooled connections.
    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        self.read_listed(key, offset, bufs, arrival, true)
    }

    /// Looks the key up afresh, and pins the reads that follow to what it found (or
    /// forgets the pin if nothing is there): a stat and then a read of a key that is
    /// rewritten (the v2 head hint, a new revision each time) read the revision whose size
    /// the stat gave, not one pinned earlier. A mount's reads of listed files never stat.
    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        let found = self.look_up(key)?;
        let mut files = self.files.write();
        match found.as_ref().and_then(Listed::of) {
            Some(listed) => files.insert(key.to_owned(), listed),
            None => files.remove(key),
        };
        Ok(found.map(|f| f.size.unwrap_or(0).max(0) as u64))
    }

    /// With `overwrite`, a new revision of the file `key` means (a new file if none).
    /// Without, create-if-absent: [`BackendError::AlreadyExists`] here if a file of that
    /// name exists, or at commit if another writer's file of that name turns out older
    /// (ours is then deleted); see [`upload::Mode::CreateIfAbsent`] for the protocol.
    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        self.writer(key, overwrite, None)
    }

    fn create_sized(
        &self,
        key: &str,
        overwrite: bool,
        len: u64,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        self.writer(key, overwrite, Some(len))
    }

    /// Deletes every file of the key's name for good (a loser's leftover copy too) and
    /// forgets what pinned its reads; nothing there is success.
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        self.drive.block(
            || format!("deleting {key:?} in {}", self.location),
            async |last| {
                for file in self.existing(last, key).await? {
                    if let Some(id) = &file.id {
                        self.drive.delete(last, id).await?;
                    }
                }
                Ok(())
            },
        )?;
        self.files.write().remove(key);
        Ok(())
    }

    fn read_profile(&self) -> ReadProfile {
        ReadProfile::remote()
    }

    /// The folders above the root (for a `gdrive://FOLDER_ID` root), the source's path and
    /// the key: the same location whichever form of source names the folder.
    fn location(&self, key: &str) -> Result<String, BackendError> {
        let above = self.folders_above_root()?;
        Ok(above
            .iter()
            .chain(&self.location.path)
            .map(String::as_str)
            .chain([key])
            .collect::<Vec<_>>()
            .join("/"))
    }

    fn describe(&self) -> String {
        format!("Google Drive folder {}", self.location)
    }
}
