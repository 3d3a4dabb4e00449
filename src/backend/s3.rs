//! A bucket (or a prefix of one) on S3 or an S3-compatible server, through `aws-sdk-s3`.
//!
//! The trait is synchronous; this backend owns a small tokio runtime and blocks on it.
//! It must be created after the daemon forks (tokio's threads do not survive `fork`).
//!
//! Invariants:
//! - every read of a listed object carries `If-Match` with the ETag seen when it was
//!   listed, so an object replaced after the listing fails with [`BackendError::Changed`]
//!   and never yields bytes of two versions;
//! - every request is bounded by the configured timeout (the SDK's retries with backoff
//!   included), so an unreachable server gives an error in bounded time, never a hang;
//! - a new object becomes visible only complete: a single `PutObject`, or a multipart
//!   upload completed after all its parts arrived; every part carries the SHA-256 of its
//!   bytes, which the server checks, and an abandoned upload is aborted.

use std::collections::HashMap;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled, ObjectLockMode,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::remote::{backoff, BlockingRuntime, BufFiller, CopyIn};
use super::{validate_key, Arrival, Backend, BackendError, ObjectInfo, ObjectWriter, ReadProfile};
use crate::audit::{CheckpointStore, StoreError};

/// Objects at least this large are uploaded in parts of this size.
const PART_SIZE: usize = 8 << 20;
/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Attempts per request (the first and the retries), within the timeout.
const MAX_ATTEMPTS: u32 = 4;
/// Listing requests in flight at once, one per shard of the prefix.
const LISTINGS_IN_FLIGHT: usize = 8;
/// Levels of single "directories" a listing descends through to find its shards.
const MAX_DESCENT: usize = 4;

/// `s3://bucket/prefix`: where the objects are. The prefix is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of the objects, empty or ending with `/`.
    pub prefix: String,
}

impl FromStr for S3Location {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadSource {
            source_text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
        if !valid_bucket {
            return Err(bad(
                "bucket names are 3-63 lowercase letters, digits, `-` and `.`",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|_| bad("the prefix is not a safe relative path"))?;
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

/// Connection settings; unset ones come from the standard AWS chain (environment,
/// profiles, SSO, instance metadata), and `AWS_ENDPOINT_URL` is honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` if the chain has none.
    pub region: Option<String>,
    /// Named profile from `~/.aws/config`.
    pub profile: Option<String>,
    /// Path-style addressing; by default on when an endpoint is set, off for AWS.
    pub path_style: Option<bool>,
    /// Longest time one request may take, retries included.
    pub timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            profile: None,
            path_style: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The shared parts, also held by writers.
struct Inner {
    runtime: BlockingRuntime,
    client: Client,
    location: S3Location,
}

/// A bucket prefix on S3; see the module docs.
pub struct S3Backend {
    inner: Arc<Inner>,
    /// ETag of each object as last listed, by key relative to the prefix.
    etags: RwLock<HashMap<String, String>>,
}

impl S3Backend {
    /// Builds a client for `location`. Makes no request: the first `list` is the first
    /// contact with the server (and where wrong credentials show).
    pub fn open(location: S3Location, options: &S3Options) -> Result<Self, BackendError> {
        let runtime = BlockingRuntime::new("smpfs-s3", 2, options.timeout)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.timeout.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(options.timeout)
                    .operation_timeout(options.timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100)),
            );
        if let Some(profile) = &options.profile {
            require_profile(&runtime, profile)?;
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &options.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let region = options.region.clone();
        loader = loader.region(
            aws_config::meta::region::RegionProviderChain::first_try(
                region.map(aws_sdk_s3::config::Region::new),
            )
            .or_default_provider()
            .or_else("us-east-1"),
        );
        let shared = runtime.runtime().block_on(loader.load());
        let custom_endpoint = shared.endpoint_url().is_some();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style.unwrap_or(custom_endpoint))
            .build();
        Ok(S3Backend {
            inner: Arc::new(Inner {
                runtime,
                client: Client::from_conf(config),
                location,
            }),
            etags: RwLock::new(HashMap::new()),
        })
    }
}

/// Fails unless the AWS config or credentials files (`AWS_CONFIG_FILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/`) define `profile`: the SDK would quietly
/// go on without it.
fn require_profile(runtime: &BlockingRuntime, profile: &str) -> Result<(), BackendError> {
    use aws_types::os_shim_internal::{Env, Fs};
    let profiles = runtime.runtime().block_on(aws_config::profile::load(
        &Fs::real(),
        &Env::real(),
        &aws_runtime::env_config::file::EnvConfigFiles::default(),
        None,
    ));
    let reason = match profiles {
        Ok(set) if set.get_profile(profile).is_some() => return Ok(()),
        Ok(_) => "no such profile in the AWS config or credentials files".to_owned(),
        Err(e) => format!("the AWS config files cannot be read: {e}"),
    };
    Err(BackendError::BadSource {
        source_text: format!("profile={profile}"),
        reason,
    })
}

/// An object as listed: key relative to the location's prefix, size, ETag.
type Listed = (String, u64, String);

impl Inner {
    /// All pages of one ListObjectsV2 listing of `prefix`, each bounded by the timeout:
    /// the objects under it (all of them, or with `delimited` only those directly in it)
    /// and, with `delimited`, its "directories" (full key prefixes ending in `/`).
    async fn list_pages(
        &self,
        prefix: &str,
        delimited: bool,
    ) -> Result<(Vec<Listed>, Vec<String>), BackendError> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(prefix);
        if delimited {
            request = request.delimiter("/");
        }
        let mut pages = request.into_paginator().send();
        let (mut listed, mut dirs) = (Vec::new(), Vec::new());
        loop {
            let page = self
                .runtime
                .within(|| self.describe_listing(), pages.next())
                .await?;
            let Some(page) = page else {
                return Ok((listed, dirs));
            };
            let page = page.map_err(|e| remote_error(self.describe_listing(), e))?;
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|dir| dir.prefix())
                    .filter(|dir| dir.len() > prefix.len() && dir.starts_with(prefix))
                    .map(str::to_owned),
            );
            for object in page.contents() {
                let (Some(key), Some(size)) = (object.key(), object.size()) else {
                    continue;
                };
                let Some(key) = key.strip_prefix(&self.location.prefix) else {
                    continue;
                };
                // Zero-length "folder" markers made by consoles are not objects.
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                let etag = object.e_tag().unwrap_or_default().to_owned();
                listed.push((key.to_owned(), size.max(0) as u64, etag));
            }
        }
    }

    fn describe_listing(&self) -> String {
        format!(
            "listing s3://{}/{}",
            self.location.bucket, self.location.prefix
        )
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.location.prefix)
    }

    fn describe_key(&self, key: &str) -> String {
        format!("s3://{}/{}", self.location.bucket, self.full_key(key))
    }
}

/// Turns an SDK error into a backend error whose message says what went wrong.
fn remote_error<E>(context: String, error: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if no_credentials(&error) {
        return BackendError::Remote {
            context,
            message: NO_CREDENTIALS.to_owned(),
        };
    }
    let status = error.raw_response().map(|r| r.status().as_u16());
    match (&error, status) {
        (SdkError::TimeoutError(_), _) | (SdkError::DispatchFailure(_), _) => {
            BackendError::Unavailable {
                context,
                message: DisplayErrorContext(&error).to_string(),
            }
        }
        (_, Some(404)) => BackendError::Remote {
            context,
            message: "not found (no such bucket or key)".into(),
        },
        // A HEAD answer has no body to name the reason.
        (_, Some(403)) if error.code().is_none() => BackendError::Remote {
            context,
            message: "HTTP 403: access denied (wrong credentials, or they may not read this \
                      bucket)"
                .into(),
        },
        _ => {
            let code = error.code().unwrap_or("error");
            let message = error.message().unwrap_or("no message");
            let status = status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
            BackendError::Remote {
                context,
                message: format!("{status}{code}: {message}"),
            }
        }
    }
}

/// What to do when no credentials were found (said instead of the SDK's dump of every
/// provider it tried).
pub(crate) const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials (`-o profile=NAME` or \
     AWS_PROFILE), or run where an instance or container role is available";

/// Whether `error` comes from finding no credentials at all.
pub(crate) fn no_credentials(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        matches!(
            e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>(),
            Some(aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_))
        )
    })
}

/// Spreads a streamed body over `bufs` in order, telling `arrival`; fails if it is longer
/// or shorter.
async fn fill_from(
    mut body: ByteStream,
    bufs: &mut [&mut [u8]],
    arrival: &dyn Arrival,
    key: &str,
    offset: u64,
) -> Result<(), BackendError> {
    let mut filler = BufFiller::new(bufs, arrival, key, offset);
    while let Some(bytes) = body
        .try_next()
        .await
        .map_err(|e| BackendError::Unavailable {
            context: format!("reading {key:?} at {offset}"),
            message: e.to_string(),
        })?
    {
        filler.push(&bytes)?;
    }
    filler.finish()
}

impl Backend for S3Backend {
    /// Lists the prefix in shards: a listing's pages are sequential (each needs the
    /// previous one's token), so the first level that holds more than one "directory" is
    /// listed with delimiter `/`, then each of its directories flat, several at once.
    fn list(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let inner = &self.inner;
        let listed = inner.runtime.runtime().block_on(async {
            let mut listed = Vec::new();
            let mut level = inner.location.prefix.clone();
            let mut depth = 0;
            let shards = loop {
                let (objects, dirs) = inner.list_pages(&level, true).await?;
                listed.extend(objects);
                match dirs.as_slice() {
                    [only] if depth < MAX_DESCENT => {
                        level = only.clone();
                        depth += 1;
                    }
                    _ => break dirs,
                }
            };
            let mut shards = stream::iter(&shards)
                .map(|shard| inner.list_pages(shard, false))
                .buffer_unordered(LISTINGS_IN_FLIGHT);
            while let Some((objects, _)) = shards.try_next().await? {
                listed.extend(objects);
            }
            Ok::<_, BackendError>(listed)
        })?;
        let mut etags = self.etags.write();
        etags.clear();
        Ok(listed
            .into_iter()
            .map(|(key, size, etag)| {
                etags.insert(key.clone(), etag);
                ObjectInfo { key, size }
            })
            .collect())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, BackendError> {
        validate_key(key)?;
        let inner = &self.inner;
        let full_key = inner.full_key(key);
        inner
            .runtime
            .run(|| format!("stat {}", inner.describe_key(key)), async {
                let answer = inner
                    .client
                    .head_object()
                    .bucket(&inner.location.bucket)
                    .key(&full_key)
                    .send()
                    .await;
                match answer {
                    Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                        Ok(None)
                    }
                    Err(e) => Err(remote_error(format!("stat {}", inner.describe_key(key)), e)),
                }
            })
    }

    fn version(&self, key: &str) -> Option<String> {
        self.etags
            .read()
            .get(key)
            .filter(|e| !e.is_empty())
            .cloned()
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
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if total == 0 {
            return Ok(());
        }
        let inner = &self.inner;
        let etag = self.etags.read().get(key).cloned();
        let context = || format!("reading {} at {offset}", inner.describe_key(key));
        inner.runtime.run(context, async {
            let mut request = inner
                .client
                .get_object()
                .bucket(&inner.location.bucket)
                .key(inner.full_key(key))
                .range(format!("bytes={offset}-{}", offset + total - 1));
            if let Some(etag) = &etag {
                request = request.if_match(etag);
            }
            // The SDK retries a request that fails before its body arrives; a body cut off
            // midway (a dropped connection) is asked for again here, as many times.
            let mut attempt = 0;
            loop {
                let output = match request.clone().send().await {
                    Ok(output) => output,
                    Err(e) => {
                        return Err(match e.raw_response().map(|r| r.status().as_u16()) {
                            Some(412) => BackendError::Changed {
                                key: key.to_owned(),
                            },
                            Some(416) => BackendError::ShortRead {
                                key: key.to_owned(),
                                end: offset + total,
                            },
                            Some(404) => BackendError::NotFound {
                                key: key.to_owned(),
                            },
                            _ => remote_error(context(), e),
                        })
                    }
                };
                match fill_from(output.body, &mut *bufs, arrival, key, offset).await {
                    Err(BackendError::Unavailable { message, .. })
                        if attempt + 1 < MAX_ATTEMPTS =>
                    {
                        tracing::debug!(key, offset, "body cut off ({message}); reading it again");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
    }

    fn create(&self, key: &str, overwrite: bool) -> Result<Box<dyn ObjectWriter>, BackendError> {
        validate_key(key)?;
        Ok(Box::new(S3Writer {
            inner: Arc::clone(&self.inner),
            key: key.to_owned(),
            overwrite,
            buffer: Vec::new(),
            upload: None,
            failed: false,
        }))
    }

    fn read_profile(&self) -> ReadProfile {
        ReadProfile::remote()
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let inner = &self.inner;
        let context = || format!("delete {}", inner.describe_key(key));
        inner.runtime.run(context, async {
            inner
                .client
                .delete_object()
                .bucket(&inner.location.bucket)
                .key(inner.full_key(key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| remote_error(context(), e))
        })?;
        self.etags.write().remove(key);
        Ok(())
    }

    fn location(&self, key: &str) -> Result<String, BackendError> {
        Ok(self.inner.full_key(key))
    }

    fn describe(&self) -> String {
        let location = &self.inner.location;
        format!("S3 bucket s3://{}/{}", location.bucket, location.prefix)
    }
}

/// A multipart upload under way: its id and the parts sent so far.
struct Multipart {
    upload_id: String,
    parts: Vec<JoinHandle<Result<CompletedPart, BackendError>>>,
    in_flight: Arc<Semaphore>,
}

/// A new S3 object: buffered up to [`PART_SIZE`], then uploaded in parts in parallel.
struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    overwrite: bool,
    buffer: Vec<u8>,
    upload: Option<Multipart>,
    /// Set after a failed part; later writes and the commit fail.
    failed: bool,
}

fn sha256_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

impl S3Writer {
    fn context(&self, action: &str) -> String {
        format!("{action} {}", self.inner.describe_key(&self.key))
    }

    /// Sends the buffer as the next part, starting the multipart upload if needed.
    /// Blocks while [`PARTS_IN_FLIGHT`] parts are still being sent.
    fn send_part(&mut self) -> Result<(), BackendError> {
        let inner = Arc::clone(&self.inner);
        let full_key = inner.full_key(&self.key);
        if self.upload.is_none() {
            let context = self.context("starting multipart upload of");
            let created = inner.runtime.run(|| context.clone(), async {
                inner
                    .client
                    .create_multipart_upload()
                    .bucket(&inner.location.bucket)
                    .key(&full_key)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .send()
                    .await
                    .map_err(|e| remote_error(context.clone(), e))
            })?;
            self.upload = Some(Multipart {
                upload_id: created.upload_id().unwrap_or_default().to_owned(),
                parts: Vec::new(),
                in_flight: Arc::new(Semaphore::new(PARTS_IN_FLIGHT)),
            });
        }
        let uploading = self.context("uploading");
        let upload = self.upload.as_mut().expect("started above");
        let part_number = upload.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buffer);
        let checksum = sha256_base64(&body);
        let permit = inner
            .runtime
            .runtime()
            .block_on(Arc::clone(&upload.in_flight).acquire_owned())
            .expect("semaphore never closed");
        let context = format!("{uploading} (part {part_number})");
        let upload_id = upload.upload_id.clone();
        let task_inner = Arc::clone(&inner);
        let task = async move {
            let _permit = permit;
            let inner = task_inner;
            let sent = inner
                .client
                .upload_part()
                .bucket(&inner.location.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .checksum_sha256(&checksum)
                .body(ByteStream::from(body))
                .send();
            let answer = inner
                .runtime
                .within(|| context.clone(), sent)
                .await?
                .map_err(|e| remote_error(context.clone(), e))?;
            if answer
                .checksum_sha256()
                .is_some_and(|echo| echo != checksum)
            {
                return Err(BackendError::Remote {
                    context,
                    message: "the server stored a part whose SHA-256 differs from ours".into(),
                });
            }
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(answer.e_tag().map(str::to_owned))
                .checksum_sha256(checksum)
                .build())
        };
        upload.parts.push(inner.runtime.runtime().spawn(task));
        Ok(())
    }

    fn put_whole(&mut self) -> Result<(), BackendError> {
        let inner = Arc::clone(&self.inner);
        let body = std::mem::take(&mut self.buffer);
        let checksum = sha256_base64(&body);
        let context = self.context("uploading");
        let mut request = inner
            .client
            .put_object()
            .bucket(&inner.location.bucket)
            .key(inner.full_key(&self.key))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&checksum)
            .body(ByteStream::from(body));
        if !self.overwrite {
            request = request.if_none_match("*");
        }
        inner.runtime.run(|| context.clone(), async {
            match request.send().await {
                Ok(_) => Ok(()),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                    Err(BackendError::AlreadyExists {
                        key: self.key.clone(),
                    })
                }
                Err(e) => Err(remote_error(context.clone(), e)),
            }
        })
    }

    fn complete(&mut self) -> Result<(), BackendError> {
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let inner = Arc::clone(&self.inner);
        let Multipart {
            upload_id, parts, ..
        } = self.upload.take().expect("multipart upload started");
        let context = self.context("completing upload of");
        let key = self.key.clone();
        let result = inner.runtime.run(|| context.clone(), async {
            let mut completed = Vec::with_capacity(parts.len());
            for part in parts {
                completed.push(part.await.map_err(|e| BackendError::Remote {
                    context: context.clone(),
                    message: format!("upload task failed: {e}"),
                })??);
            }
            let mut request = inner
                .client
                .complete_multipart_upload()
                .bucket(&inner.location.bucket)
                .key(inner.full_key(&key))
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                );
            if !self.overwrite {
                request = request.if_none_match("*");
            }
            request
                .send()
                .await
                .map(|_| ())
                .map_err(|e| remote_error(context.clone(), e))
        });
        if result.is_err() {
            abort(&inner, &key, &upload_id);
        }
        result
    }
}

/// Aborts a multipart upload so its parts do not linger (and cost) on the server.
fn abort(inner: &Inner, key: &str, upload_id: &str) {
    let outcome = inner.runtime.run(
        || format!("aborting upload of {}", inner.describe_key(key)),
        async {
            inner
                .client
                .abort_multipart_upload()
                .bucket(&inner.location.bucket)
                .key(inner.full_key(key))
                .upload_id(upload_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| remote_error(String::new(), e))
        },
    );
    if let Err(e) = outcome {
        tracing::warn!(key, "could not abort an unfinished multipart upload: {e}");
    }
}

impl Write for S3Writer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier part failed"));
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_SIZE {
            if let Err(e) = self.send_part() {
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

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        if self.failed {
            return Err(BackendError::Remote {
                context: self.context("uploading"),
                message: "an earlier part failed".into(),
            });
        }
        if self.upload.is_none() {
            self.put_whole()
        } else {
            self.complete()
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            for part in &upload.parts {
                part.abort();
            }
            abort(&self.inner, &self.key, &upload.upload_id);
        }
    }
}

/// Audit checkpoints on S3 (`audit_anchor=s3://…`): one object each, written only if
/// absent (`If-None-Match`), and, when the bucket has Object Lock enabled, under
/// GOVERNANCE retention for the configured time, so not even the workstation's
/// credentials can delete them early.
pub struct S3Checkpoints {
    backend: S3Backend,
    retention: Option<Duration>,
}

impl S3Checkpoints {
    /// Opens the anchor and asks the bucket whether it has Object Lock; a bucket without
    /// it still gets write-once checkpoints, with a warning.
    pub fn open(
        location: S3Location,
        options: &S3Options,
        retention: Duration,
    ) -> Result<Self, BackendError> {
        let backend = S3Backend::open(location, options)?;
        let inner = &backend.inner;
        let bucket = &inner.location.bucket;
        let context = || format!("reading the Object Lock configuration of s3://{bucket}");
        let locked = inner.runtime.run(context, async {
            match inner
                .client
                .get_object_lock_configuration()
                .bucket(bucket)
                .send()
                .await
            {
                Ok(answer) => Ok(answer
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| *e == ObjectLockEnabled::Enabled)),
                Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
                Err(e) => Err(remote_error(context(), e)),
            }
        })?;
        if !locked {
            tracing::warn!(
                "s3://{bucket} has no Object Lock: audit checkpoints are written once but \
                 credentials allowed to delete objects could delete them"
            );
        }
        Ok(S3Checkpoints {
            retention: locked.then_some(retention),
            backend,
        })
    }
}

impl CheckpointStore for S3Checkpoints {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let inner = &self.backend.inner;
        let context = || format!("writing checkpoint {}", inner.describe_key(name));
        let mut request = inner
            .client
            .put_object()
            .bucket(&inner.location.bucket)
            .key(inner.full_key(name))
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256_base64(bytes))
            .body(ByteStream::from(bytes.to_vec()));
        if let Some(retention) = self.retention {
            let until = std::time::SystemTime::now() + retention;
            request = request
                .object_lock_mode(ObjectLockMode::Governance)
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until));
        }
        inner.runtime.run(context, async {
            request
                .send()
                .await
                .map(|_| ())
                .map_err(|e| remote_error(context(), e))
        })?;
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.backend.list()?.into_iter().map(|o| o.key).collect())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let inner = &self.backend.inner;
        let context = || format!("reading checkpoint {}", inner.describe_key(name));
        let bytes = inner.runtime.run(context, async {
            let output = inner
                .client
                .get_object()
                .bucket(&inner.location.bucket)
                .key(inner.full_key(name))
                .send()
                .await
                .map_err(|e| remote_error(context(), e))?;
            let bytes = output
                .body
                .collect()
                .await
                .map_err(|e| BackendError::Unavailable {
                    context: context(),
                    message: e.to_string(),
                })?;
            Ok(bytes.to_vec())
        })?;
        Ok(bytes)
    }

    fn describe(&self) -> String {
        let location = &self.backend.inner.location;
        format!("s3://{}/{}", location.bucket, location.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hostile_ones_are_refused() {
        let location: S3Location = "s3://scans-2026/study1/CT/".parse().unwrap();
        assert_eq!(location.bucket, "scans-2026");
        assert_eq!(location.prefix, "study1/CT/");
        let bare: S3Location = "s3://scans".parse().unwrap();
        assert_eq!(bare.prefix, "");
        for bad in [
            "scans",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://b_ucket",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/a\0b",
        ] {
            assert!(bad.parse::<S3Location>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn part_checksums_are_base64_sha256() {
        assert_eq!(
            sha256_base64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
