//! A small client of the Blob Storage REST API (version [`API_VERSION`]) over the hyper
//! stack already in the tree: requests authorized by [`Credential`] (Shared Key signature,
//! SAS query or bearer token), the retry loop, how failures are classified, and the
//! parsing of container listings.
//!
//! Invariants:
//! - every request is bounded by the timeout ([`Remote::block`], [`Remote::bounded`]),
//!   retries and backoff included;
//! - 408, 429, 5xx and dropped connections are retried with backoff; a 401 with a bearer
//!   token gets one fresh token and one more try; anything else fails at once;
//! - a refused credential (403 `AuthenticationFailed`, 401) reads "Azure Blob
//!   authentication failed …", naming the account and the kind of credential, never the
//!   secret; a missing container reads "container … does not exist";
//! - blob names are percent-encoded in URLs (all but unreserved characters and `/`), and
//!   the Shared Key signature covers that encoded path.

use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use google_drive3::hyper::{self, body::Bytes, header, Method};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::auth::{self, Credential};
use crate::backend::remote::{
    backoff, http_client, BlockingRuntime, BufFiller, ClientsHere, Remote, RemoteFailure,
};
pub use crate::backend::remote::{connector, Connector};
use crate::backend::{Arrival, BackendError};

/// A hyper client; cloning one shares its connection pool.
pub type HttpClient = crate::backend::remote::HttpClient<Full<Bytes>>;

/// What to do when no credential was configured and there is no managed identity.
pub const NO_CREDENTIALS: &str = "no Azure credentials found: set AZURE_STORAGE_KEY (an \
     account key), AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING, or \
     AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, or log in with `az login`, or \
     run where a managed identity is available";

/// The REST API version every request names (`x-ms-version`).
pub const API_VERSION: &str = "2021-08-06";
/// Retries of one request after transient failures (the timeout usually ends them first).
const MAX_RETRIES: u32 = 8;
const USER_AGENT: &str = concat!("smpfs/", env!("CARGO_PKG_VERSION"));

/// Everything but the unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// [`ENCODE`] keeping `/` (blob names in paths).
const ENCODE_PATH: &AsciiSet = &ENCODE.remove(b'/');

/// `text` percent-encoded for a query value or form field.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, ENCODE).to_string()
}

/// How a failed request should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 408, 429, 5xx, connection trouble: retry after a pause.
    Transient,
    /// 401 with a bearer token: fetch a new one and retry once.
    Unauthorized,
    /// Anything else: give up.
    Fatal,
}

/// A failed request: how to handle it, what to report, and the HTTP status and Azure
/// error code (`x-ms-error-code`) if the server answered.
#[derive(Debug)]
pub struct Failure {
    /// How to handle it.
    pub kind: Kind,
    /// What to report if it is not handled.
    pub error: BackendError,
    /// The HTTP status, 0 if none came.
    pub status: u16,
    /// Azure's error code (`BlobNotFound`, `ConditionNotMet`, …), empty if none.
    pub code: String,
}

impl Failure {
    /// A failure that is not retried, reporting `error`.
    pub fn from_error(error: BackendError) -> Self {
        Failure {
            kind: Kind::Fatal,
            error,
            status: 0,
            code: String::new(),
        }
    }

    /// A failure retried after a pause.
    pub fn transient(context: String, message: String) -> Self {
        Failure {
            kind: Kind::Transient,
            error: BackendError::Unavailable { context, message },
            status: 0,
            code: String::new(),
        }
    }
}

/// `error` and its causes, as one line (hyper's own message alone says only "Connect").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl RemoteFailure for Failure {
    fn into_error(self) -> BackendError {
        self.error
    }

    fn from_error(error: BackendError) -> Self {
        Failure::from_error(error)
    }
}

impl Remote for Client {
    type Failure = Failure;

    fn blocking_runtime(&self) -> &BlockingRuntime {
        &self.runtime
    }
}

/// One request to the container or a blob in it.
pub struct Request {
    /// The HTTP method.
    pub method: Method,
    /// The full blob name, or `None` for the container itself.
    pub blob: Option<String>,
    /// Query parameters (unencoded).
    pub query: Vec<(&'static str, String)>,
    /// `x-ms-*` headers besides date and version (lower-case names).
    pub ms: Vec<(&'static str, String)>,
    /// `If-Match`, if any.
    pub if_match: Option<String>,
    /// `If-None-Match`, if any.
    pub if_none_match: Option<&'static str>,
    /// `Content-MD5` (base64), if any.
    pub md5: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Request {
    /// A request with no parameters, headers or body.
    pub fn new(method: Method, blob: Option<&str>) -> Self {
        Request {
            method,
            blob: blob.map(str::to_owned),
            query: Vec::new(),
            ms: Vec::new(),
            if_match: None,
            if_none_match: None,
            md5: None,
            body: Bytes::new(),
        }
    }
}

/// The base64 MD5 of `bytes` (`Content-MD5`).
pub fn md5_base64(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// A blob in a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// The full blob name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, quoted as in headers.
    pub etag: String,
}

/// An ETag as headers carry it (quoted): listings give it bare.
pub fn quoted(etag: &str) -> String {
    if etag.starts_with('"') || etag.is_empty() {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

/// The text of the first `<tag>…</tag>` (or `<tag attr…>…</tag>`) in `xml`, and whether it
/// carried `Encoded="true"`.
fn element<'x>(xml: &'x str, tag: &str) -> Option<(&'x str, bool)> {
    let open = format!("<{tag}");
    let mut from = 0;
    loop {
        let start = from + xml[from..].find(&open)?;
        let after = &xml[start + open.len()..];
        match after.chars().next()? {
            '>' | ' ' => {
                let close = after.find('>')?;
                let attrs = &after[..close];
                if attrs.ends_with('/') {
                    return Some(("", false));
                }
                let body = &after[close + 1..];
                let end = body.find(&format!("</{tag}>"))?;
                return Some((&body[..end], attrs.contains("Encoded=\"true\"")));
            }
            _ => from = start + open.len(),
        }
    }
}

/// XML character data with its entities replaced.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The blobs of one List Blobs page and the marker of the next page (`None` at the end).
/// A blob whose name or size cannot be read is left out with a warning.
pub fn parse_list_page(xml: &str) -> (Vec<ListedBlob>, Option<String>) {
    let mut blobs = Vec::new();
    let body = element(xml, "Blobs").map_or("", |(b, _)| b);
    for part in body.split("<Blob>").skip(1) {
        let Some((raw, encoded)) = element(part, "Name") else {
            continue;
        };
        let name = if encoded {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|n| n.into_owned())
        } else {
            Ok(unescape(raw))
        };
        let size = element(part, "Content-Length").and_then(|(s, _)| s.trim().parse().ok());
        let etag = element(part, "Etag").map_or(String::new(), |(e, _)| quoted(&unescape(e)));
        match (name, size) {
            (Ok(name), Some(size)) => blobs.push(ListedBlob { name, size, etag }),
            _ => tracing::warn!(
                name = raw,
                "skipping a blob whose name or size is unreadable"
            ),
        }
    }
    let next = element(xml, "NextMarker")
        .map(|(m, _)| unescape(m))
        .filter(|m| !m.is_empty());
    (blobs, next)
}

/// The container of an account, with credentials, shared by the backend and its uploads.
pub struct Client {
    /// Where blocking calls run.
    pub runtime: BlockingRuntime,
    account: String,
    /// The account's blob endpoint, without a trailing `/`.
    endpoint: String,
    /// The endpoint's own path (`/devstoreaccount1` for an emulator, usually empty).
    endpoint_path: String,
    container: String,
    credential: Credential,
    shared: HttpClient,
    here: ClientsHere,
}

impl Client {
    /// A client of `container` in `account` at `endpoint` (the account's blob endpoint).
    pub fn new(
        runtime: BlockingRuntime,
        connector: Connector,
        account: &str,
        endpoint: &str,
        container: &str,
        credential: Credential,
    ) -> Result<Self, BackendError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = endpoint.parse().map_err(|e| BackendError::BadSource {
            source_text: format!("endpoint={endpoint}"),
            reason: format!("not a URL: {e}"),
        })?;
        let endpoint_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Client {
            runtime,
            account: account.to_owned(),
            endpoint,
            endpoint_path,
            container: container.to_owned(),
            credential,
            shared: http_client(connector.clone(), 32),
            here: ClientsHere::new(connector),
        })
    }

    /// `az://ACCOUNT/CONTAINER/NAME`, for messages.
    pub fn describe_blob(&self, name: &str) -> String {
        format!("az://{}/{}/{name}", self.account, self.container)
    }

    /// `az://ACCOUNT/CONTAINER`, for messages.
    pub fn describe(&self) -> String {
        format!("az://{}/{}", self.account, self.container)
    }

    /// This thread's own HTTP client, for [`Remote::block_here`] only.
    pub fn client_here(&self) -> HttpClient {
        self.here.get()
    }

    /// A bearer token: the cached one unless `stale` is it (refused) or it expires soon.
    async fn token(&self, stale: Option<&str>) -> Result<Option<String>, Failure> {
        let Credential::Token { source, cached } = &self.credential else {
            return Ok(None);
        };
        let mut cached = cached.lock().await;
        if let Some((token, until)) = &*cached {
            if Some(token.as_str()) != stale && Instant::now() + Duration::from_secs(300) < *until {
                return Ok(Some(token.clone()));
            }
        }
        let context = || {
            format!(
                "getting a storage token from {}",
                self.credential.describe()
            )
        };
        let (token, lasts) = match source.request().map_err(Failure::from_error)? {
            None => auth::TokenSource::from_cli()
                .await
                .map_err(Failure::from_error)?,
            Some(request) => {
                let method = if request.method == "POST" {
                    Method::POST
                } else {
                    Method::GET
                };
                let mut builder = hyper::Request::builder()
                    .method(method)
                    .uri(&request.url)
                    .header(header::USER_AGENT, USER_AGENT);
                if !request.form.is_empty() {
                    builder =
                        builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                }
                for (name, value) in &request.headers {
                    builder = builder.header(*name, value);
                }
                let built = builder
                    .body(Full::new(Bytes::from(request.form)))
                    .map_err(|e| Failure::from_error(remote(context(), e.to_string())))?;
                let response = self.shared.request(built).await.map_err(|e| {
                    if matches!(source, auth::TokenSource::ManagedIdentity { .. }) {
                        // The last link of the chain: nothing else was configured.
                        return Failure::from_error(remote(
                            context(),
                            format!(
                                "{NO_CREDENTIALS} (no managed identity: the instance metadata \
                             service did not answer: {})",
                                chain(&e)
                            ),
                        ));
                    }
                    Failure::transient(context(), chain(&e))
                })?;
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| Failure::transient(context(), e.to_string()))?
                    .to_bytes();
                if status != 200 {
                    let said = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    if matches!(source, auth::TokenSource::ManagedIdentity { .. }) {
                        return Err(Failure::from_error(remote(
                            context(),
                            format!(
                                "{NO_CREDENTIALS} (no managed identity: the instance metadata \
                                 service answered HTTP {status}: {})",
                                said.trim()
                            ),
                        )));
                    }
                    return Err(Failure::from_error(remote(
                        context(),
                        format!(
                            "Azure Blob authentication failed: the token endpoint answered \
                             HTTP {status}: {}",
                            said.trim()
                        ),
                    )));
                }
                auth::TokenSource::parse(&body, context).map_err(Failure::from_error)?
            }
        };
        *cached = Some((token.clone(), Instant::now() + lasts));
        Ok(Some(token))
    }

    /// Runs `attempt` (given a bearer token, if the credential is one) until it succeeds,
    /// retrying transient failures with backoff and a 401 once with a fresh token; notes
    /// each transient error in `last`.
    pub async fn retrying<T>(
        &self,
        last: &Mutex<Option<String>>,
        mut attempt: impl AsyncFnMut(Option<&str>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let (mut retries, mut refreshed) = (0, false);
        let mut token = self.token(None).await?;
        loop {
            let failure = match attempt(token.as_deref()).await {
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
                Kind::Unauthorized if !refreshed && token.is_some() => {
                    refreshed = true;
                    token = self.token(token.as_deref()).await?;
                }
                _ => return Err(failure),
            }
        }
    }

    /// Like [`Client::retrying`] for a task of its own (a spawned block upload): each
    /// attempt is a future that owns what it needs.
    pub async fn retrying_owned<T, F>(
        &self,
        last: &Mutex<Option<String>>,
        mut attempt: impl FnMut(Option<String>) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let (mut retries, mut refreshed) = (0, false);
        let mut token = self.token(None).await?;
        loop {
            let failure = match attempt(token.clone()).await {
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
                Kind::Unauthorized if !refreshed && token.is_some() => {
                    refreshed = true;
                    token = self.token(token.as_deref()).await?;
                }
                _ => return Err(failure),
            }
        }
    }

    /// Sends `request` through `client` with `token` (for a bearer credential). Returns the
    /// response if its status is 2xx, else the classified failure.
    pub async fn send(
        &self,
        client: &HttpClient,
        context: &(dyn Fn() -> String + Sync),
        token: Option<&str>,
        request: &Request,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let mut path = format!("{}/{}", self.endpoint_path, self.container);
        if let Some(blob) = &request.blob {
            path.push('/');
            path.push_str(&utf8_percent_encode(blob, ENCODE_PATH).to_string());
        }
        let mut query: Vec<String> = request
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if let Credential::Sas(sas) = &self.credential {
            query.push(sas.clone());
        }
        let base = &self.endpoint[..self.endpoint.len() - self.endpoint_path.len()];
        let mut url = format!("{base}{path}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut ms = request.ms.clone();
        ms.push(("x-ms-date", date));
        ms.push(("x-ms-version", API_VERSION.to_owned()));
        let content_type = if request.body.is_empty() {
            ""
        } else {
            "application/octet-stream"
        };
        let mut builder = hyper::Request::builder()
            .method(request.method.clone())
            .uri(&url)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_LENGTH, request.body.len());
        if !content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        for (name, value) in &ms {
            builder = builder.header(*name, value);
        }
        if let Some(md5) = &request.md5 {
            builder = builder.header("content-md5", md5);
        }
        if let Some(etag) = &request.if_match {
            builder = builder.header(header::IF_MATCH, etag);
        }
        if let Some(value) = request.if_none_match {
            builder = builder.header(header::IF_NONE_MATCH, value);
        }
        match (&self.credential, token) {
            (Credential::SharedKey(key), _) => {
                let signature = auth::shared_key(
                    &self.account,
                    key,
                    request.method.as_str(),
                    request.body.len() as u64,
                    request.md5.as_deref().unwrap_or(""),
                    content_type,
                    request.if_match.as_deref().unwrap_or(""),
                    request.if_none_match.unwrap_or(""),
                    &ms,
                    &path,
                    &request.query,
                );
                builder = builder.header(header::AUTHORIZATION, signature);
            }
            (Credential::Token { .. }, Some(token)) => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            _ => {}
        }
        let built = builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| Failure::from_error(remote(context(), e.to_string())))?;
        let response = client
            .request(built)
            .await
            .map_err(|e| Failure::transient(context(), chain(&e)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match tokio::time::timeout(
            Duration::from_secs(5),
            response.into_body().collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => Bytes::new(),
        };
        Err(self.classify(context(), status, code, &body))
    }

    /// What an error status with Azure's error code and body means.
    fn classify(&self, context: String, status: u16, code: String, body: &[u8]) -> Failure {
        let text = String::from_utf8_lossy(body);
        let code = if code.is_empty() {
            element(&text, "Code").map_or(String::new(), |(c, _)| unescape(c))
        } else {
            code
        };
        let said = element(&text, "Message")
            .map(|(m, _)| unescape(m).lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let detail = match (code.is_empty(), said.is_empty()) {
            (true, _) => format!("HTTP {status}"),
            (false, true) => format!("HTTP {status} {code}"),
            (false, false) => format!("HTTP {status} {code}: {said}"),
        };
        let kind = match status {
            401 => Kind::Unauthorized,
            408 | 429 | 500..=599 => Kind::Transient,
            _ => Kind::Fatal,
        };
        let message = match (status, code.as_str()) {
            // Azurite says AuthorizationFailure for a wrong signature.
            (401, _)
            | (
                403,
                "AuthenticationFailed" | "InvalidAuthenticationInfo" | "AuthorizationFailure" | "",
            ) => {
                format!(
                    "Azure Blob authentication failed for account {:?} with {} (check \
                     AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_CONNECTION_STRING \
                     or `az login`): {detail}",
                    self.account,
                    self.credential.describe()
                )
            }
            (403, _) => format!(
                "Azure Blob access denied: {} may not do this in account {:?} ({detail})",
                self.credential.describe(),
                self.account
            ),
            (404, "ContainerNotFound") => format!(
                "container {:?} does not exist in account {:?} ({detail})",
                self.container, self.account
            ),
            _ => detail,
        };
        let error = match kind {
            Kind::Transient => BackendError::Unavailable { context, message },
            _ => BackendError::Remote { context, message },
        };
        Failure {
            kind,
            error,
            status,
            code,
        }
    }

    /// One page of the blobs whose names start with `prefix`, from `marker` on.
    pub async fn list_page(
        &self,
        token: Option<&str>,
        prefix: &str,
        marker: Option<&str>,
    ) -> Result<(Vec<ListedBlob>, Option<String>), Failure> {
        let context = || format!("listing {}/{prefix}", self.describe());
        let mut request = Request::new(Method::GET, None);
        request.query = vec![
            ("restype", "container".into()),
            ("comp", "list".into()),
            ("maxresults", "5000".into()),
        ];
        if !prefix.is_empty() {
            request.query.push(("prefix", prefix.to_owned()));
        }
        if let Some(marker) = marker {
            request.query.push(("marker", marker.to_owned()));
        }
        let response = self.send(&self.shared, &context, token, &request).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::transient(context(), e.to_string()))?
            .to_bytes();
        Ok(parse_list_page(&String::from_utf8_lossy(&body)))
    }

    /// Bytes `offset..` of blob `name` into `bufs`, through `client`, pinned to `etag`
    /// (`If-Match`) if given, telling `arrival` as each buffer completes. Returns the ETag
    /// of the bytes read. A blob no longer at `etag` fails with [`BackendError::Changed`]
    /// before any byte is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn download(
        &self,
        client: &HttpClient,
        token: Option<&str>,
        key: &str,
        name: &str,
        etag: Option<&str>,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<String, Failure> {
        let context = || format!("reading {} at {offset}", self.describe_blob(name));
        let mut filler = BufFiller::new(bufs, arrival, key, offset);
        let end = offset + filler.total() as u64 - 1;
        let mut request = Request::new(Method::GET, Some(name));
        request
            .ms
            .push(("x-ms-range", format!("bytes={offset}-{end}")));
        request.if_match = etag.map(str::to_owned);
        let response = match self.send(client, &context, token, &request).await {
            Ok(response) => response,
            Err(f) => {
                return Err(match f.status {
                    412 => Failure::from_error(BackendError::Changed {
                        key: key.to_owned(),
                    }),
                    416 => Failure::from_error(BackendError::ShortRead {
                        key: key.to_owned(),
                        end: end + 1,
                    }),
                    404 if f.code != "ContainerNotFound" => {
                        Failure::from_error(BackendError::NotFound {
                            key: key.to_owned(),
                        })
                    }
                    _ => f,
                })
            }
        };
        let status = response.status().as_u16();
        let got = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(quoted)
            .unwrap_or_default();
        if etag.is_some_and(|want| want != got) {
            return Err(Failure::from_error(BackendError::Changed {
                key: key.to_owned(),
            }));
        }
        // 200 is the whole blob: right only for a range from 0 (longer is caught below).
        if !(status == 206 || status == 200 && offset == 0) {
            return Err(Failure::from_error(remote(
                context(),
                format!("HTTP {status} to a ranged read"),
            )));
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::transient(context(), e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                filler.push(&data).map_err(Failure::from_error)?;
            }
        }
        filler.finish().map_err(Failure::from_error)?;
        Ok(got)
    }

    /// The size and ETag of blob `name`, or `None` if there is none.
    pub async fn head(
        &self,
        token: Option<&str>,
        name: &str,
    ) -> Result<Option<(u64, String)>, Failure> {
        let context = || format!("stat {}", self.describe_blob(name));
        let request = Request::new(Method::HEAD, Some(name));
        match self.send(&self.shared, &context, token, &request).await {
            Ok(response) => {
                let headers = response.headers();
                let size = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                let etag = headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(quoted)
                    .unwrap_or_default();
                Ok(Some((size, etag)))
            }
            // A HEAD answer has no body: a missing container also reads as 404 here.
            Err(f) if f.status == 404 && f.code != "ContainerNotFound" => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// `request` (an upload or a delete) through the shared client; `Ok` on 2xx.
    pub async fn call(
        &self,
        context: &(dyn Fn() -> String + Sync),
        token: Option<&str>,
        request: &Request,
    ) -> Result<(), Failure> {
        self.send(&self.shared, context, token, request).await?;
        Ok(())
    }
}

fn remote(context: String, message: String) -> BackendError {
    BackendError::Remote { context, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_parse_names_sizes_etags_and_the_next_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" ContainerName="c"><Prefix>p/</Prefix><MaxResults>5000</MaxResults><Blobs><Blob><Name>p/a &amp; b.dcm</Name><Properties><Etag>0x8D1</Etag><Content-Length>12</Content-Length></Properties></Blob><Blob><Name Encoded="true">p/%EF%BF%BE</Name><Properties><Etag>"0x8D2"</Etag><Content-Length>3</Content-Length></Properties></Blob><Blob><Name>bad</Name><Properties><Content-Length>x</Content-Length></Properties></Blob></Blobs><NextMarker>2!76!abc</NextMarker></EnumerationResults>"#;
        let (blobs, next) = parse_list_page(xml);
        assert_eq!(
            blobs,
            [
                ListedBlob {
                    name: "p/a & b.dcm".into(),
                    size: 12,
                    etag: "\"0x8D1\"".into()
                },
                ListedBlob {
                    name: "p/\u{fffe}".into(),
                    size: 3,
                    etag: "\"0x8D2\"".into()
                }
            ]
        );
        assert_eq!(next.as_deref(), Some("2!76!abc"));
        let (none, end) =
            parse_list_page("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>");
        assert!(none.is_empty() && end.is_none());
    }

    #[test]
    fn entities_are_replaced_and_stray_ampersands_kept() {
        assert_eq!(unescape("a&lt;b&#x41;&#66;&amp;c & d"), "a<bAB&c & d");
    }
}
