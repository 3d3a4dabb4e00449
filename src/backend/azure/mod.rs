//! A container (or a prefix of one) on Azure Blob Storage, through a small client of the
//! REST API ([`client`]) on the hyper stack already in the tree, with the usual Azure
//! credential chain ([`auth`]).
//!
//! Invariants:
//! - the listing is flat from the prefix (List Blobs, 5000 a page, `NextMarker` until
//!   none, each page bounded by the timeout); a name that is not a safe key
//!   ([`validate_key`]) is skipped with a warning, as on S3;
//! - every read of a blob is pinned (`If-Match`) to the ETag its listing, its `stat` or
//!   its first read found, and the answer's ETag must be that one: a blob replaced
//!   mid-read fails with [`BackendError::Changed`] (EIO), never yields bytes of two
//!   versions; a body cut off midway is asked for again under the same pin;
//! - every request is bounded by the timeout, retries included: an unreachable endpoint
//!   gives an error in bounded time, never a hang;
//! - a new blob becomes visible only complete: one Put Blob, or Put Block List after all
//!   its blocks arrived; every request that carries data carries its `Content-MD5`, which
//!   the service checks; `create` without `overwrite` is create-if-absent
//!   (`If-None-Match: *`), also against racing writers. Blocks of an abandoned upload
//!   are never committed and are discarded by the service (after a week);
//! - `delete` of a blob that is not there succeeds.

mod auth;
mod client;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use google_drive3::hyper::{body::Bytes, Method};
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use auth::{DEV_ACCOUNT, DEV_KEY};

use super::remote::{BlockingRuntime, CopyIn, Remote};
use super::{validate_key, Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, ReadProfile};
use client::{md5_base64, Client, Failure, Request};

/// Blobs at least this large are uploaded in blocks of this size.
const BLOCK_SIZE: usize = 8 << 20;
/// Blocks of one blob in flight at once.
const BLOCKS_IN_FLIGHT: usize = 4;

/// `az://ACCOUNT/CONTAINER[/PREFIX]`: where the blobs are. The prefix is empty or ends
/// with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureLocation {
    /// Storage account name (3-24 lowercase letters and digits).
    pub account: String,
    /// Container name (3-63 lowercase letters, digits and `-`).
    pub container: String,
    /// Name prefix of the blobs, empty or ending with `/`.
    pub prefix: String,
}

impl FromStr for AzureLocation {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadSource {
            source_text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("az://")
            .ok_or_else(|| bad("not az://ACCOUNT/CONTAINER[/PREFIX]"))?;
        let mut parts = rest.splitn(3, '/');
        let account = parts.next().unwrap_or_default();
        let container = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_end_matches('/');
        let valid_account = (3..=24).contains(&account.len())
            && account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_account {
            return Err(bad(
                "an Azure source is az://ACCOUNT/CONTAINER[/PREFIX]; account names are 3-24 \
                 lowercase letters and digits",
            ));
        }
        let valid_container = (3..=63).contains(&container.len())
            && container
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !container.starts_with('-')
            && !container.ends_with('-')
            && !container.contains("--");
        if !valid_container {
            return Err(bad(
                "container names are 3-63 lowercase letters, digits and single `-` (not first \
                 or last)",
            ));
        }
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|_| bad("the prefix is not a safe relative path"))?;
        }
        Ok(AzureLocation {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl fmt::Display for AzureLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "az://{}/{}/{}",
            self.account, self.container, self.prefix
        )
    }
}

/// Azure connection settings (`endpoint=`, `timeout=`); credentials come from the
/// environment (see [`auth`]'s chain), never from options, which show in process lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureOptions {
    /// The account's blob endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1` for
    /// Azurite or `https://ACCOUNT.blob.core.usgovcloudapi.net` for a sovereign cloud;
    /// default the connection string's, else `https://ACCOUNT.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Longest time one request may take, retries included.
    pub timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            endpoint: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A container prefix on Azure Blob Storage; see the module docs.
pub struct AzureBackend {
    client: Arc<Client>,
    location: AzureLocation,
    /// The ETag each blob's reads are pinned to, by key relative to the prefix.
    etags: RwLock<HashMap<String, String>>,
}

impl AzureBackend {
    /// Finds the credentials and builds the client; makes no request: the first `list`
    /// (or `stat`) is the first contact, where refused credentials show.
    pub fn open(location: AzureLocation, options: &AzureOptions) -> Result<Self, BackendError> {
        Self::open_with(location, options, |name| std::env::var(name).ok())
    }

    /// Like [`AzureBackend::open`], with the variables of the credential chain looked up
    /// by `env` instead of in the process environment (tests, embedding programs).
    pub fn open_with(
        location: AzureLocation,
        options: &AzureOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, BackendError> {
        let found = auth::find(&location.account, env, auth::az_on_path())?;
        let endpoint = options
            .endpoint
            .clone()
            .or(found.endpoint)
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", location.account));
        let runtime = BlockingRuntime::new("smpfs-azure", 4, options.timeout)?;
        let connector = client::connector(options.timeout)?;
        let client = Client::new(
            runtime,
            connector,
            &location.account,
            &endpoint,
            &location.container,
            found.credential,
        )?;
        tracing::debug!(endpoint, "Azure Blob client ready");
        Ok(AzureBackend {
            client: Arc::new(client),
            location,
            etags: RwLock::new(HashMap::new()),
        })
    }

    /// Creates the container if it does not exist yet (for tests and first setups: a
    /// seal does not create containers). Needs rights on the account, not only the
    /// container.
    pub fn create_container(&self) -> Result<(), BackendError> {
        let client = &self.client;
        let context = || format!("creating container {}", client.describe());
        client.block(context, async |last| {
            let created = client
                .retrying(last, async |token| {
                    let mut request = Request::new(Method::PUT, None);
                    request.query = vec![("restype", "container".into())];
                    client.call(&context, token, &request).await
                })
                .await;
            match created {
                Err(f) if f.status == 409 && f.code == "ContainerAlreadyExists" => Ok(()),
                other => other,
            }
        })
    }

    fn full_name(&self, key: &str) -> String {
        format!("{}{key}", self.location.prefix)
    }
}

impl Backend for AzureBackend {
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let client = &self.client;
        let prefix = &self.location.prefix;
        let context = || format!("listing {}", self.location);
        let blobs = client.block_each(async |last| {
            let mut blobs = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let page = client.bounded(
                    context,
                    last,
                    client.retrying(last, async |token| {
                        client.list_page(token, prefix, marker.as_deref()).await
                    }),
                );
                let (mut found, next) = page.await?;
                blobs.append(&mut found);
                match next {
                    Some(next) => marker = Some(next),
                    None => return Ok(blobs),
                }
            }
        })?;
        let mut etags = self.etags.write();
        etags.clear();
        let mut listed = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let Some(key) = blob.name.strip_prefix(prefix.as_str()) else {
                continue;
            };
            // Zero-length "folder" markers made by tools are not objects.
            if key.is_empty() || key.ends_with('/') {
                continue;
            }
            if let Err(e) = validate_key(key) {
                tracing::warn!("skipping a blob of {}: {e}", self.location);
                continue;
            }
            etags.insert(key.to_owned(), blob.etag);
            listed.push(ObjectInfo {
                key: key.to_owned(),
                size: blob.size,
            });
        }
        Ok(listed)
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> Result<(), BackendError> {
        self.read_range_arriving(key, offset, bufs, &CopyIn)
    }

    fn read_range_arriving(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), BackendError> {
        validate_key(key)?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        let client = &self.client;
        let name = self.full_name(key);
        let pinned = self.etags.read().get(key).cloned();
        let context = || format!("reading {} at {offset}", client.describe_blob(&name));
        // A body cut off midway is transient: `retrying` reads the whole range again, under
        // the same pin, and tells `arrival` about every buffer again.
        let got = client.block_here(context, async |last| {
            let here = client.client_here();
            client
                .retrying(last, async |token| {
                    client
                        .download(
                            &here,
                            token,
                            key,
                            &name,
                            pinned.as_deref(),
                            offset,
                            &mut *bufs,
                            arrival,
                        )
                        .await
                })
                .await
        })?;
        if pinned.is_none() && !got.is_empty() {
            self.etags.write().entry(key.to_owned()).or_insert(got);
        }
        Ok(())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        validate_key(key)?;
        let client = &self.client;
        let name = self.full_name(key);
        let context = || format!("stat {}", client.describe_blob(&name));
        let found = client.block(context, async |last| {
            client
                .retrying(last, async |token| client.head(token, &name).await)
                .await
        })?;
        let mut etags = self.etags.write();
        Ok(match found {
            Some((size, etag)) => {
                if !etag.is_empty() {
                    etags.insert(key.to_owned(), etag);
                }
                Some(size)
            }
            None => {
                etags.remove(key);
                None
            }
        })
    }

    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        validate_key(key)?;
        Ok(Box::new(AzureWriter {
            client: Arc::clone(&self.client),
            name: self.full_name(key),
            key: key.to_owned(),
            overwrite,
            buffer: Vec::new(),
            blocks: Vec::new(),
            in_flight: Arc::new(Semaphore::new(BLOCKS_IN_FLIGHT)),
            failed: false,
        }))
    }

    fn location(&self, key: &str) -> Result<String, BackendError> {
        Ok(self.full_name(key))
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let client = &self.client;
        let name = self.full_name(key);
        let context = || format!("delete {}", client.describe_blob(&name));
        client.block(context, async |last| {
            let deleted = client
                .retrying(last, async |token| {
                    let request = Request::new(Method::DELETE, Some(&name));
                    client.call(&context, token, &request).await
                })
                .await;
            match deleted {
                Err(f) if f.status == 404 && f.code == "BlobNotFound" => Ok(()),
                other => other,
            }
        })?;
        self.etags.write().remove(key);
        Ok(())
    }

    fn version(&self, key: &str) -> Option<String> {
        self.etags
            .read()
            .get(key)
            .filter(|e| !e.is_empty())
            .cloned()
    }

    fn read_profile(&self) -> ReadProfile {
        ReadProfile::remote()
    }

    fn describe(&self) -> String {
        format!("Azure Blob container {}", self.location)
    }
}

/// A new blob: buffered up to [`BLOCK_SIZE`], then uploaded in blocks in parallel and
/// committed by Put Block List.
struct AzureWriter {
    client: Arc<Client>,
    name: String,
    key: String,
    overwrite: bool,
    buffer: Vec<u8>,
    /// Block ids sent so far, in order, with their upload tasks.
    blocks: Vec<(String, JoinHandle<Result<(), BackendError>>)>,
    in_flight: Arc<Semaphore>,
    /// Set after a failed block; later writes and the commit fail.
    failed: bool,
}

impl AzureWriter {
    fn context(&self, action: &str) -> String {
        format!("{action} {}", self.client.describe_blob(&self.name))
    }

    /// Sends the buffer as the next block; blocks while [`BLOCKS_IN_FLIGHT`] are in flight.
    fn send_block(&mut self) -> Result<(), BackendError> {
        let number = self.blocks.len();
        let id = base64::engine::general_purpose::STANDARD.encode(format!("{number:08}"));
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let md5 = md5_base64(&body);
        let permit = self
            .client
            .runtime
            .runtime()
            .block_on(Arc::clone(&self.in_flight).acquire_owned())
            .expect("semaphore never closed");
        let context = format!("{} (block {number})", self.context("uploading"));
        let (client, name, block_id) = (Arc::clone(&self.client), self.name.clone(), id.clone());
        let task = async move {
            let _permit = permit;
            let last = parking_lot::Mutex::new(None);
            let what = || context.clone();
            let sent = client.retrying_owned(&last, |token| {
                let mut request = Request::new(Method::PUT, Some(&name));
                request.query = vec![("comp", "block".into()), ("blockid", block_id.clone())];
                request.md5 = Some(md5.clone());
                request.body = body.clone();
                let (client, context) = (Arc::clone(&client), context.clone());
                async move {
                    let what = move || context.clone();
                    client.call(&what, token.as_deref(), &request).await
                }
            });
            client.bounded(what, &last, sent).await.map_err(|f| f.error)
        };
        let handle = self.client.runtime.runtime().spawn(task);
        self.blocks.push((id, handle));
        Ok(())
    }

    /// Put Blob of the whole buffer.
    fn put_whole(&mut self) -> Result<(), BackendError> {
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let md5 = md5_base64(&body);
        let context = || self.context("uploading");
        let (client, name, overwrite) = (&self.client, &self.name, self.overwrite);
        let put = client.block(context, async |last| {
            client
                .retrying(last, async |token| {
                    let mut request = Request::new(Method::PUT, Some(name));
                    request.ms.push(("x-ms-blob-type", "BlockBlob".into()));
                    request.md5 = Some(md5.clone());
                    request.body = body.clone();
                    if !overwrite {
                        request.if_none_match = Some("*");
                    }
                    client.call(&context, token, &request).await
                })
                .await
                .map_err(|f| self.exists(f))
        });
        put
    }

    /// A failed write without overwrite because the blob is there reads as AlreadyExists.
    fn exists(&self, failure: Failure) -> Failure {
        if !self.overwrite && (failure.status == 409 || failure.status == 412) {
            return Failure::from_error(BackendError::AlreadyExists {
                key: self.key.clone(),
            });
        }
        failure
    }

    /// Waits for every block, then commits them in order with Put Block List.
    fn commit_blocks(&mut self) -> Result<(), BackendError> {
        if !self.buffer.is_empty() {
            self.send_block()?;
        }
        let blocks = std::mem::take(&mut self.blocks);
        let context = || self.context("committing");
        let mut ids = Vec::with_capacity(blocks.len());
        let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        let client = &self.client;
        let mut handles = Vec::new();
        for (id, handle) in blocks {
            list.push_str(&format!("<Latest>{id}</Latest>"));
            ids.push(id);
            handles.push(handle);
        }
        list.push_str("</BlockList>");
        // Each block bounded its own requests; waiting for them all is not bounded again.
        client.runtime.runtime().block_on(async {
            for handle in handles {
                handle.await.map_err(|e| BackendError::Remote {
                    context: context(),
                    message: format!("upload task failed: {e}"),
                })??;
            }
            Ok::<_, BackendError>(())
        })?;
        let body = Bytes::from(list);
        let md5 = md5_base64(&body);
        let (name, overwrite) = (&self.name, self.overwrite);
        client.block(context, async |last| {
            client
                .retrying(last, async |token| {
                    let mut request = Request::new(Method::PUT, Some(name));
                    request.query = vec![("comp", "blocklist".into())];
                    request.md5 = Some(md5.clone());
                    request.body = body.clone();
                    if !overwrite {
                        request.if_none_match = Some("*");
                    }
                    client.call(&context, token, &request).await
                })
                .await
                .map_err(|f| self.exists(f))
        })
    }
}

impl Write for AzureWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier block failed"));
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= BLOCK_SIZE {
            if let Err(e) = self.send_block() {
                self.failed = true;
                return Err(io::Error::other(e));
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for AzureWriter {
    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        if self.failed {
            return Err(BackendError::Remote {
                context: self.context("uploading"),
                message: "an earlier block failed".into(),
            });
        }
        if self.blocks.is_empty() {
            self.put_whole()
        } else {
            self.commit_blocks()
        }
    }
}

impl Drop for AzureWriter {
    fn drop(&mut self) {
        for (_, handle) in &self.blocks {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hostile_ones_are_refused() {
        let location: AzureLocation = "az://lab1/scans/study1/CT/".parse().unwrap();
        assert_eq!(
            (location.account.as_str(), location.container.as_str()),
            ("lab1", "scans")
        );
        assert_eq!(location.prefix, "study1/CT/");
        assert_eq!(location.to_string(), "az://lab1/scans/study1/CT/");
        let bare: AzureLocation = "az://lab1/scans".parse().unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.to_string().parse::<AzureLocation>().unwrap(), bare);
        for bad in [
            "lab1/scans",
            "az://",
            "az://lab1",
            "az://Lab1/scans",
            "az://lab1/Scans",
            "az://lab1/-scans",
            "az://lab1/sc--ans",
            "az://lab1/scans/../x",
            "az://lab1/scans/a//b",
            "az://lab1/scans/a\0b",
        ] {
            assert!(bad.parse::<AzureLocation>().is_err(), "{bad:?} accepted");
        }
    }
}
