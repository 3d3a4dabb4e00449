//! One connection to the Drive API: the `google-drive3` hub, its credentials, the runtime
//! the synchronous backend blocks on, the retry loop and how failures are classified.
//!
//! Invariants:
//! - every blocking call is bounded by the timeout, retries and backoff included;
//! - rate limits (403 `rateLimitExceeded`/`userRateLimitExceeded`, 429), 5xx and dropped
//!   connections are retried with exponential backoff; a 401 gets one fresh token
//!   (`force_refreshed_token`) and one more try; anything else fails at once.

use std::future::Future;
use std::sync::Arc;

use google_drive3::api::File;
use google_drive3::hyper::header::{AUTHORIZATION, CONTENT_TYPE, RANGE, USER_AGENT};
use google_drive3::DriveHub;
use http_body_util::BodyExt;
use parking_lot::Mutex;

use super::auth::{default_token_path, Auth};
use super::{Connector, GDriveOptions};
pub use crate::backend::remote::connector;
use crate::backend::remote::{
    backoff, http_client, BlockingRuntime, BufFiller, ClientsHere, Remote, RemoteFailure,
};
use crate::backend::{Arrival, BackendError};

/// Drive's public API, where requests go unless `gdrive_endpoint=` says otherwise.
const GOOGLE_APIS: &str = "https://www.googleapis.com";
/// Retries of one request after transient failures (the timeout usually ends them first).
const MAX_RETRIES: u32 = 8;
/// Fields asked for every listed file.
pub const FILE_FIELDS: &str = "id,name,mimeType,size,md5Checksum,headRevisionId,createdTime";

/// How a failed request should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rate limit, 5xx, connection trouble: retry after a pause.
    Transient,
    /// 401: get a fresh token and retry once.
    Unauthorized,
    /// 404.
    NotFound,
    /// 403 other than a rate limit.
    Forbidden,
    /// Anything else: give up.
    Fatal,
}

/// A failed request: how to handle it and what to report.
#[derive(Debug)]
pub struct Failure {
    /// How to handle it.
    pub kind: Kind,
    /// What to report if it is not retried.
    pub error: BackendError,
}

impl Failure {
    /// A failure that is not retried.
    pub fn fatal(error: BackendError) -> Self {
        Failure {
            kind: Kind::Fatal,
            error,
        }
    }

    fn transient(context: String, message: String) -> Self {
        Failure {
            kind: Kind::Transient,
            error: BackendError::Unavailable { context, message },
        }
    }
}

impl RemoteFailure for Failure {
    fn into_error(self) -> BackendError {
        self.error
    }

    fn from_error(error: BackendError) -> Self {
        Failure::fatal(error)
    }
}

/// Classifies an HTTP error status with Google's JSON error body (or `Null`).
pub fn classify_status(context: String, status: u16, body: &serde_json::Value) -> Failure {
    let error = &body["error"];
    let reason = error["errors"][0]["reason"]
        .as_str()
        .or_else(|| error["status"].as_str())
        .unwrap_or_default();
    let message = error["message"].as_str().unwrap_or("no message");
    let kind = match (status, reason) {
        (401, _) => Kind::Unauthorized,
        (403, "rateLimitExceeded" | "userRateLimitExceeded") | (429, _) | (500..=599, _) => {
            Kind::Transient
        }
        (404, _) => Kind::NotFound,
        (403, _) => Kind::Forbidden,
        _ => Kind::Fatal,
    };
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    };
    Failure {
        kind,
        error: BackendError::Remote {
            context,
            message: format!("HTTP {status}{reason}: {message}"),
        },
    }
}

/// Classifies an error of a generated `google-drive3` call.
pub fn classify_call(context: String, error: google_drive3::Error) -> Failure {
    use google_drive3::Error;
    match error {
        Error::HttpError(e) => Failure::transient(context, e.to_string()),
        Error::BadRequest(body) => {
            let status = body["error"]["code"].as_u64().unwrap_or(400) as u16;
            classify_status(context, status, &body)
        }
        Error::Failure(response) => classify_status(
            context,
            response.status().as_u16(),
            &serde_json::Value::Null,
        ),
        Error::MissingToken(e) => match e.downcast::<google_drive3::yup_oauth2::Error>() {
            Ok(e) => token_failure(context, *e),
            Err(e) => Failure::fatal(BackendError::Remote {
                context,
                message: format!("no access token: {e}"),
            }),
        },
        other => Failure::fatal(BackendError::Remote {
            context,
            message: other.to_string().trim_end().to_owned(),
        }),
    }
}

/// Classifies a failure to get a token: a token server that cannot be reached is
/// transient; a refusal (revoked or unknown credentials) is fatal and says so.
pub fn token_failure(context: String, error: google_drive3::yup_oauth2::Error) -> Failure {
    match error {
        google_drive3::yup_oauth2::Error::HttpError(e) => {
            Failure::transient(context, format!("token server: {e}"))
        }
        google_drive3::yup_oauth2::Error::UserError(message) => {
            Failure::fatal(BackendError::Remote { context, message })
        }
        other => Failure::fatal(BackendError::Remote {
            context,
            message: format!(
                "Google refused the credentials ({}); check gdrive_credentials= or run \
                 `smpfs gdrive login`",
                other.to_string().trim_end()
            ),
        }),
    }
}

/// The Drive API with credentials, shared by the backend and its uploads.
pub struct Drive {
    /// The generated API (listing, metadata, uploads).
    pub hub: DriveHub<Connector>,
    /// The credentials the hub uses.
    pub auth: Auth,
    /// Where blocking calls run.
    pub runtime: BlockingRuntime,
    /// `…/drive/v3/`, for the downloads sent by hand.
    base_url: String,
    /// Each thread's own client, for downloads run by [`Remote::block_here`].
    here: ClientsHere,
}

/// The hyper client the hub uses; cloning one shares its connection pool.
pub type HttpClient = crate::backend::remote::HttpClient<google_drive3::common::Body>;

impl Remote for Drive {
    type Failure = Failure;

    fn blocking_runtime(&self) -> &BlockingRuntime {
        &self.runtime
    }
}

impl Drive {
    /// Builds the client and loads the credentials (no request is made). `writable` asks
    /// for the file scope instead of the read-only one.
    pub fn open(options: &GDriveOptions, writable: bool) -> Result<Arc<Self>, BackendError> {
        let runtime = BlockingRuntime::new("smpfs-gdrive", 4, options.timeout)?;
        let connector = connector(options.timeout)?;
        let auth = runtime.runtime().block_on(async {
            match &options.credentials {
                Some(key) => Auth::service_account(key, connector.clone(), writable).await,
                None => {
                    let path = options.token.clone().unwrap_or_else(default_token_path);
                    Auth::token_file(&path, connector.clone(), writable).await
                }
            }
        })?;
        let mut hub = DriveHub::new(http_client(connector.clone(), 32), auth.clone());
        let root = options
            .endpoint
            .as_deref()
            .unwrap_or(GOOGLE_APIS)
            .trim_end_matches('/');
        let base_url = format!("{root}/drive/v3/");
        hub.base_url(base_url.clone());
        hub.root_url(format!("{root}/"));
        hub.user_agent(concat!("smpfs/", env!("CARGO_PKG_VERSION")).to_owned());
        Ok(Arc::new(Drive {
            hub,
            auth,
            runtime,
            base_url,
            here: ClientsHere::new(connector),
        }))
    }

    /// `…/drive/v3/` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Runs `future` on the shared runtime, wherever this is awaited: inside
    /// [`Remote::block_here`], work on a client all threads share (the token server's)
    /// must go there.
    async fn on_shared_runtime<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        self.runtime.runtime().spawn(future).await
    }

    /// An access token, fetched on the shared runtime.
    pub async fn token(&self) -> Result<String, google_drive3::yup_oauth2::Error> {
        let auth = self.auth.clone();
        self.on_shared_runtime(async move { auth.token().await })
            .await
            .unwrap_or_else(|e| Err(token_task_failed(e)))
    }

    /// A fresh access token (after a 401), fetched on the shared runtime.
    pub async fn refresh(&self) -> Result<String, google_drive3::yup_oauth2::Error> {
        let auth = self.auth.clone();
        self.on_shared_runtime(async move { auth.refresh().await })
            .await
            .unwrap_or_else(|e| Err(token_task_failed(e)))
    }

    /// This thread's own HTTP client, for [`Remote::block_here`] only: its connections are
    /// driven by this thread's runtime, so no other runtime may use them.
    pub fn client_here(&self) -> HttpClient {
        self.here.get()
    }

    /// Runs `attempt` until it succeeds, retrying transient failures with backoff and a
    /// 401 once with a fresh token; notes each transient error in `last`.
    pub async fn retrying<T>(
        &self,
        last: &Mutex<Option<String>>,
        mut attempt: impl AsyncFnMut() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let (mut retries, mut refreshed) = (0, false);
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            match failure.kind {
                Kind::Transient if retries < MAX_RETRIES => {
                    tracing::debug!("retrying: {}", failure.error);
                    *last.lock() = Some(failure.error.to_string());
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Kind::Unauthorized if !refreshed => {
                    tracing::info!("access token refused; getting a new one");
                    refreshed = true;
                    self.refresh().await.map_err(|e| {
                        token_failure(format!("refreshing {}", self.auth.describe()), e)
                    })?;
                }
                _ => return Err(failure),
            }
        }
    }

    /// Deletes file `id` for good (not to the trash), retrying as [`Drive::retrying`]
    /// does; one already gone counts as deleted.
    pub async fn delete(&self, last: &Mutex<Option<String>>, id: &str) -> Result<(), Failure> {
        let deleted = self
            .retrying(last, async || {
                self.hub
                    .files()
                    .delete(id)
                    .supports_all_drives(true)
                    .doit()
                    .await
                    .map_err(|e| classify_call(format!("deleting Drive file {id}"), e))
            })
            .await;
        match deleted {
            Err(failure) if failure.kind != Kind::NotFound => Err(failure),
            _ => Ok(()),
        }
    }

    /// Metadata of file `id` (`fields` as in the API).
    pub async fn get(&self, id: &str, fields: &str) -> Result<File, Failure> {
        self.hub
            .files()
            .get(id)
            .supports_all_drives(true)
            .param("fields", fields)
            .doit()
            .await
            .map(|(_, file)| file)
            .map_err(|e| classify_call(format!("reading metadata of Drive file {id}"), e))
    }

    /// One page of the non-trashed entries of folder `folder` matching the extra query
    /// `extra` (`""` or ` and …`); returns the entries and the next page token.
    pub async fn children_page(
        &self,
        folder: &str,
        extra: &str,
        drive_id: Option<&str>,
        page_token: Option<&str>,
    ) -> Result<(Vec<File>, Option<String>), Failure> {
        let query = format!("'{}' in parents and trashed = false{extra}", quote(folder));
        let mut call = self
            .hub
            .files()
            .list()
            .q(&query)
            .page_size(1000)
            .supports_all_drives(true)
            .include_items_from_all_drives(true)
            .param("fields", &format!("nextPageToken,files({FILE_FIELDS})"));
        if let Some(drive) = drive_id {
            call = call.corpora("drive").drive_id(drive);
        }
        if let Some(token) = page_token {
            call = call.page_token(token);
        }
        let (_, list) = call
            .doit()
            .await
            .map_err(|e| classify_call(format!("listing Drive folder {folder}"), e))?;
        Ok((list.files.unwrap_or_default(), list.next_page_token))
    }

    /// Every page of the entries of `folder` matching `extra` (as [`Drive::children_page`]),
    /// each page bounded by the timeout.
    pub async fn children(
        &self,
        last: &Mutex<Option<String>>,
        folder: &str,
        extra: &str,
        drive_id: Option<&str>,
    ) -> Result<Vec<File>, Failure> {
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.retrying(last, async || {
                self.children_page(folder, extra, drive_id, token.as_deref())
                    .await
            });
            let (page, next) = self
                .bounded(|| format!("listing Drive folder {folder}"), last, page)
                .await?;
            entries.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(entries),
            }
        }
    }

    /// The files (with `folders`, the folders) named exactly `name` in `folder`, oldest
    /// first ([`age`]).
    pub async fn named(
        &self,
        last: &Mutex<Option<String>>,
        folder: &str,
        name: &str,
        drive_id: Option<&str>,
        folders: bool,
    ) -> Result<Vec<File>, Failure> {
        let op = if folders { "=" } else { "!=" };
        let extra = format!(
            " and name = '{}' and mimeType {op} '{}'",
            quote(name),
            super::FOLDER
        );
        let mut found = self.children(last, folder, &extra, drive_id).await?;
        found.sort_by(|a, b| age(a).cmp(&age(b)));
        Ok(found)
    }

    /// Creates folder `name` in `parent` (a metadata-only `files.create`, which the
    /// generated call cannot send: it always uploads media); returns its id and
    /// `createdTime`.
    pub async fn create_folder(&self, parent: &str, name: &str) -> Result<File, Failure> {
        let context = || format!("creating Drive folder {name:?} in {parent}");
        let body = serde_json::json!({
            "name": name,
            "mimeType": super::FOLDER,
            "parents": [parent],
        });
        let token = self
            .token()
            .await
            .map_err(|e| token_failure(context(), e))?;
        let request = google_drive3::hyper::Request::post(
            self.url("files?supportsAllDrives=true&fields=id,createdTime"),
        )
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("smpfs/", env!("CARGO_PKG_VERSION")))
        .body(google_drive3::common::to_body(Some(body.to_string())))
        .map_err(|e| {
            Failure::fatal(BackendError::Remote {
                context: context(),
                message: e.to_string(),
            })
        })?;
        let response = self
            .hub
            .client
            .request(request)
            .await
            .map_err(|e| Failure::transient(context(), e.to_string()))?;
        let status = response.status().as_u16();
        let body = google_drive3::common::to_bytes(response.into_body())
            .await
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(classify_status(context(), status, &json));
        }
        match serde_json::from_value::<File>(json) {
            Ok(folder) if folder.id.is_some() => Ok(folder),
            _ => Err(Failure::fatal(BackendError::Remote {
                context: context(),
                message: "the answer has no folder id".into(),
            })),
        }
    }

    /// Downloads `url` (a media URL) bytes `offset..` into `bufs` with a `Range` header,
    /// telling `arrival` as each buffer completes, through `client`: this thread's own
    /// ([`Drive::client_here`]) inside [`Remote::block_here`], the hub's anywhere else.
    pub async fn download(
        &self,
        client: &HttpClient,
        url: &str,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), Failure> {
        let context = || format!("reading {key:?} at {offset}");
        let mut filler = BufFiller::new(bufs, arrival, key, offset);
        let end = offset + filler.total() as u64 - 1;
        let token = self
            .token()
            .await
            .map_err(|e| token_failure(context(), e))?;
        let request = google_drive3::hyper::Request::get(url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(RANGE, format!("bytes={offset}-{end}"))
            .header(USER_AGENT, concat!("smpfs/", env!("CARGO_PKG_VERSION")))
            .body(google_drive3::common::to_body::<String>(None))
            .map_err(|e| {
                Failure::fatal(BackendError::Remote {
                    context: context(),
                    message: e.to_string(),
                })
            })?;
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::transient(context(), e.to_string()))?;
        let status = response.status().as_u16();
        // 200 is the whole object: right only for a range from 0 (longer is caught below).
        if !(status == 206 || status == 200 && offset == 0) {
            if status == 416 {
                return Err(Failure::fatal(BackendError::ShortRead {
                    key: key.to_owned(),
                    end: end + 1,
                }));
            }
            let body = google_drive3::common::to_bytes(response.into_body())
                .await
                .unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or_default();
            return Err(classify_status(context(), status, &json));
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::transient(context(), e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                filler.push(&data).map_err(Failure::fatal)?;
            }
        }
        filler.finish().map_err(Failure::fatal)
    }
}

fn token_task_failed(error: tokio::task::JoinError) -> google_drive3::yup_oauth2::Error {
    google_drive3::yup_oauth2::Error::UserError(format!("getting an access token failed: {error}"))
}

/// Where `file` stands among the files of its name, oldest first: by `createdTime`, then
/// by id (a tie-break every client agrees on). The first is the one a key means.
pub fn age(file: &File) -> impl Ord + '_ {
    (file.created_time, file.id.as_deref())
}

/// The oldest of `named` (the entries of one name) if it is older than `ours`, an entry of
/// that name just created (placed as `named` lists it, if it does): then `ours` lost the
/// race to create the entry of that name, see [`super::upload::Mode::CreateIfAbsent`].
pub fn older<'a>(named: &'a [File], ours: &'a File) -> Option<&'a File> {
    let ours = named.iter().find(|f| f.id == ours.id).unwrap_or(ours);
    named
        .iter()
        .filter(|f| f.id != ours.id)
        .min_by(|a, b| age(a).cmp(&age(b)))
        .filter(|oldest| age(oldest) < age(ours))
}

/// A Drive query string literal's content: `\` and `'` escaped.
pub fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_what_can_be_done() {
        let body = |reason: &str| serde_json::json!({"error": {"code": 403, "message": "m", "errors": [{"reason": reason}]}});
        let kind =
            |status, body: &serde_json::Value| classify_status(String::new(), status, body).kind;
        assert_eq!(kind(403, &body("rateLimitExceeded")), Kind::Transient);
        assert_eq!(kind(403, &body("userRateLimitExceeded")), Kind::Transient);
        assert_eq!(
            kind(403, &body("insufficientFilePermissions")),
            Kind::Forbidden
        );
        assert_eq!(kind(429, &serde_json::Value::Null), Kind::Transient);
        assert_eq!(kind(503, &serde_json::Value::Null), Kind::Transient);
        assert_eq!(kind(401, &serde_json::Value::Null), Kind::Unauthorized);
        assert_eq!(kind(404, &serde_json::Value::Null), Kind::NotFound);
        assert_eq!(kind(400, &serde_json::Value::Null), Kind::Fatal);
        let failure = classify_status("ctx".into(), 403, &body("rateLimitExceeded"));
        assert_eq!(
            failure.error.to_string(),
            "ctx: HTTP 403 rateLimitExceeded: m"
        );
    }

    #[test]
    fn the_oldest_of_a_name_wins_by_created_time_then_id() {
        let file = |id: &str, created: &str| -> File {
            serde_json::from_value(serde_json::json!({"id": id, "createdTime": created})).unwrap()
        };
        let b1 = file("b1", "2026-01-01T00:00:00.000Z");
        let a9 = file("a9", "2026-01-01T00:00:00.000Z");
        let a0 = file("a0", "2026-01-02T00:00:00.000Z");
        let id = |f: Option<&File>| f.and_then(|f| f.id.clone());
        // Created in the same millisecond: the smaller id is older.
        let both = [a9.clone(), b1.clone()];
        assert_eq!(id(older(&both, &b1)), Some("a9".into()));
        assert_eq!(id(older(&both, &a9)), None);
        // One not listed (yet) is placed by its own createdTime.
        assert_eq!(id(older(std::slice::from_ref(&a0), &a9)), None);
        assert_eq!(id(older(&[a9, b1], &a0)), Some("a9".into()));
    }

    #[test]
    fn query_literals_are_escaped() {
        assert_eq!(quote(r"it's a\b"), r"it\'s a\\b");
    }
}
