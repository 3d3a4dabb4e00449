//! A small typed client of the Dropbox HTTP API (v2) over the hyper stack already in the
//! tree: RPC endpoints (JSON in, JSON out) on the api host, content endpoints (arguments
//! in the `Dropbox-API-Arg` header, metadata back in `Dropbox-API-Result`) on the content
//! host, the runtime the synchronous backend blocks on, the retry loop and how failures
//! are classified.
//!
//! Invariants:
//! - every request is bounded by the timeout ([`Remote::block`], [`Remote::bounded`]),
//!   retries and backoff included;
//! - 429, 5xx and dropped connections are retried with backoff (a `Retry-After` is
//!   honoured, up to 5 s); a 401 gets one refreshed access token and one more try;
//!   anything else fails at once;
//! - endpoint errors (409) keep Dropbox's `error_summary`, which callers match
//!   (`path/not_found`, `path/conflict`, …);
//! - `Dropbox-API-Arg` is HTTP-header-safe JSON: every character past U+007E is escaped.

use std::time::Duration;

use google_drive3::hyper::{self, body::Bytes, header};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde_json::Value;

use super::auth::Auth;
use crate::backend::remote::{
    backoff, BlockingRuntime, BufFiller, ClientsHere, Remote, RemoteFailure,
};
pub use crate::backend::remote::{connector, http_client, Connector};
use crate::backend::{Arrival, BackendError};

/// A hyper client; cloning one shares its connection pool.
pub type HttpClient = crate::backend::remote::HttpClient<Full<Bytes>>;

/// Retries of one request after transient failures (the timeout usually ends them first).
const MAX_RETRIES: u32 = 8;
const USER_AGENT: &str = concat!("smpfs/", env!("CARGO_PKG_VERSION"));

/// How a failed request should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 429, 5xx, connection trouble: retry after a pause.
    Transient,
    /// 401: refresh the access token and retry once.
    Unauthorized,
    /// 409: an endpoint-specific error; see [`Failure::summary`].
    Endpoint,
    /// Anything else: give up.
    Fatal,
}

/// A failed request: how to handle it and what to report.
#[derive(Debug)]
pub struct Failure {
    /// How to handle it.
    pub kind: Kind,
    /// What to report if it is not handled.
    pub error: BackendError,
    /// Dropbox's `error_summary` (`path/not_found/..`), empty if none.
    pub summary: String,
    /// Dropbox's `error` object (`Null` if none).
    pub detail: Value,
}

impl Failure {
    /// A failure that is not retried.
    pub fn fatal(context: String, message: String) -> Self {
        Self::from_error(BackendError::Remote { context, message })
    }

    /// A failure that is not retried, reporting `error`.
    pub fn from_error(error: BackendError) -> Self {
        Failure {
            kind: Kind::Fatal,
            error,
            summary: String::new(),
            detail: Value::Null,
        }
    }

    /// A failure retried after a pause.
    pub fn transient(context: String, message: String) -> Self {
        Failure {
            kind: Kind::Transient,
            error: BackendError::Unavailable { context, message },
            summary: String::new(),
            detail: Value::Null,
        }
    }

    /// Whether this is an endpoint error whose summary starts with `prefix`.
    pub fn is(&self, prefix: &str) -> bool {
        self.kind == Kind::Endpoint && self.summary.starts_with(prefix)
    }
}

impl RemoteFailure for Failure {
    fn into_error(self) -> BackendError {
        self.error
    }

    fn from_error(error: BackendError) -> Self {
        Failure::from_error(error)
    }
}

/// Classifies an HTTP error status with Dropbox's error body (JSON, or text for 400).
pub fn classify_status(context: String, status: u16, body: &[u8]) -> Failure {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    let summary = json["error_summary"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let detail = json["error"].clone();
    let text = if summary.is_empty() {
        String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_owned()
    } else {
        summary.clone()
    };
    let kind = match status {
        401 => Kind::Unauthorized,
        409 => Kind::Endpoint,
        429 | 500..=599 => Kind::Transient,
        _ => Kind::Fatal,
    };
    let message = format!("HTTP {status}: {text}");
    let error = match kind {
        Kind::Transient => BackendError::Unavailable { context, message },
        _ => BackendError::Remote { context, message },
    };
    Failure {
        kind,
        error,
        summary,
        detail,
    }
}

/// `error` and its causes, as one line (hyper's own message alone says only "Connect").
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `value` as HTTP-header-safe JSON (every character past U+007E as `\uXXXX`).
pub fn header_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if (c as u32) < 0x7f {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// What a content request sends and where.
pub enum Host {
    /// The RPC host (`api.dropboxapi.com`).
    Api,
    /// The content host (`content.dropboxapi.com`).
    Content,
}

/// The Dropbox API with credentials, shared by the backend and its uploads.
pub struct Client {
    /// Where blocking calls run.
    pub runtime: BlockingRuntime,
    /// The credentials.
    pub auth: Auth,
    api: String,
    content: String,
    shared: HttpClient,
    /// Each thread's own client, for downloads run by [`Remote::block_here`].
    here: ClientsHere,
}

impl Remote for Client {
    type Failure = Failure;

    fn blocking_runtime(&self) -> &BlockingRuntime {
        &self.runtime
    }
}

impl Client {
    /// A client of the API at `api` and `content` (bases without `/2/`), with `auth`.
    pub fn new(
        runtime: BlockingRuntime,
        auth: Auth,
        connector: Connector,
        api: &str,
        content: &str,
    ) -> Self {
        Client {
            runtime,
            auth,
            api: api.trim_end_matches('/').to_owned(),
            content: content.trim_end_matches('/').to_owned(),
            shared: http_client(connector.clone(), 32),
            here: ClientsHere::new(connector),
        }
    }

    fn url(&self, host: &Host, endpoint: &str) -> String {
        let base = match host {
            Host::Api => &self.api,
            Host::Content => &self.content,
        };
        format!("{base}/2/{endpoint}")
    }

    /// The shared client (pooled connections, driven by the shared runtime).
    pub fn shared(&self) -> &HttpClient {
        &self.shared
    }

    /// This thread's own HTTP client, for [`Remote::block_here`] only.
    pub fn client_here(&self) -> HttpClient {
        self.here.get()
    }

    /// Runs `attempt` (given an access token) until it succeeds, retrying transient
    /// failures with backoff and a 401 once with a refreshed token; notes each transient
    /// error in `last`.
    pub async fn retrying<T>(
        &self,
        last: &Mutex<Option<String>>,
        mut attempt: impl AsyncFnMut(&str) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let (mut retries, mut refreshed) = (0, false);
        // A token server that does not answer is retried like any other request.
        let mut token = loop {
            match self.auth.token().await {
                Ok(token) => break token,
                Err(failure) if failure.kind == Kind::Transient && retries < MAX_RETRIES => {
                    *last.lock() = Some(failure.error.to_string());
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err(failure) => return Err(failure),
            }
        };
        loop {
            let failure = match attempt(&token).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            match failure.kind {
                Kind::Transient if retries < MAX_RETRIES => {
                    tracing::debug!("retrying: {}", failure.error);
                    *last.lock() = Some(failure.error.to_string());
                    let pause = match &failure.detail["retry_after"] {
                        Value::Number(n) => Duration::from_secs(n.as_u64().unwrap_or(1).min(5)),
                        _ => backoff(retries),
                    };
                    tokio::time::sleep(pause).await;
                    retries += 1;
                }
                Kind::Unauthorized if !refreshed => {
                    tracing::info!(
                        "Dropbox refused the access token ({}); refreshing it",
                        failure.summary
                    );
                    refreshed = true;
                    token = self.auth.refresh(&token).await?;
                }
                Kind::Unauthorized => {
                    return Err(Failure::fatal(
                        failure.error.to_string(),
                        format!(
                            "Dropbox refused the credentials of {} even after a refresh; \
                             run `smpfs dropbox login` again",
                            self.auth.describe()
                        ),
                    ))
                }
                _ => return Err(failure),
            }
        }
    }

    /// One request: `body` to `endpoint` on `host` with `arg` in `Dropbox-API-Arg` (content
    /// endpoints) or as the JSON body (RPC, `arg` then `None` and `body` JSON). Returns the
    /// response if its status is 2xx, else the classified failure.
    async fn send(
        &self,
        client: &HttpClient,
        context: &dyn Fn() -> String,
        token: &str,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let request = request
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(body))
            .map_err(|e| Failure::fatal(context(), e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::transient(context(), chain(&e)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut failure = classify_status(context(), status, &bytes);
        if let (Some(after), Value::Object(map)) = (retry_after, &mut failure.detail) {
            map.entry("retry_after").or_insert(after.into());
        }
        if status == 416 {
            failure.kind = Kind::Fatal;
        }
        Err(failure)
    }

    /// An RPC call: `arg` as the JSON body of `endpoint` on the api host; the JSON answer.
    pub async fn rpc(
        &self,
        context: &dyn Fn() -> String,
        token: &str,
        endpoint: &str,
        arg: &Value,
    ) -> Result<Value, Failure> {
        let request = hyper::Request::post(self.url(&Host::Api, endpoint))
            .header(header::CONTENT_TYPE, "application/json");
        let response = self
            .send(
                &self.shared,
                context,
                token,
                request,
                Bytes::from(arg.to_string()),
            )
            .await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::transient(context(), e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::fatal(context(), format!("the answer is not JSON: {e}")))
    }

    /// An upload call: `arg` in `Dropbox-API-Arg`, `data` as the body of `endpoint` on the
    /// content host; the JSON answer (`null` for an empty one).
    pub async fn upload(
        &self,
        context: &dyn Fn() -> String,
        token: &str,
        endpoint: &str,
        arg: &Value,
        data: Bytes,
    ) -> Result<Value, Failure> {
        let request = hyper::Request::post(self.url(&Host::Content, endpoint))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header("Dropbox-API-Arg", header_json(arg));
        let response = self
            .send(&self.shared, context, token, request, data)
            .await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::transient(context(), e.to_string()))?
            .to_bytes();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::fatal(context(), format!("the answer is not JSON: {e}")))
    }

    /// `files/download` of `path` (a `rev:…` path pins the bytes) bytes `offset..` into
    /// `bufs` with a `Range` header, through `client`, telling `arrival` as each buffer
    /// completes. The `Dropbox-API-Result` must name revision `rev`, else the read fails
    /// with [`BackendError::Changed`] before any byte is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn download(
        &self,
        client: &HttpClient,
        token: &str,
        path: &str,
        rev: &str,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        arrival: &dyn Arrival,
    ) -> Result<(), Failure> {
        let context = || format!("reading {key:?} at {offset}");
        let mut filler = BufFiller::new(bufs, arrival, key, offset);
        let end = offset + filler.total() as u64 - 1;
        let request = hyper::Request::post(self.url(&Host::Content, "files/download"))
            .header(
                "Dropbox-API-Arg",
                header_json(&serde_json::json!({ "path": path })),
            )
            .header(header::RANGE, format!("bytes={offset}-{end}"));
        let response = match self
            .send(client, &context, token, request, Bytes::new())
            .await
        {
            Err(f) if f.error.to_string().contains("HTTP 416") => {
                return Err(Failure::from_error(BackendError::ShortRead {
                    key: key.to_owned(),
                    end: end + 1,
                }))
            }
            other => other?,
        };
        let status = response.status().as_u16();
        let result: Value = response
            .headers()
            .get("Dropbox-API-Result")
            .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
            .unwrap_or_default();
        if result["rev"].as_str() != Some(rev) {
            return Err(Failure::from_error(BackendError::Changed {
                key: key.to_owned(),
            }));
        }
        // 200 is the whole file: right only for a range from 0 (longer is caught below).
        if !(status == 206 || status == 200 && offset == 0) {
            return Err(Failure::fatal(
                context(),
                format!("HTTP {status} to a ranged download"),
            ));
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::transient(context(), e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                filler.push(&data).map_err(Failure::from_error)?;
            }
        }
        filler.finish().map_err(Failure::from_error)
    }
}

/// Dropbox's content hash of `data` as far as fed: SHA-256 of the concatenated SHA-256s
/// of each 4 MiB block, in hex.
#[derive(Default)]
pub struct ContentHasher {
    blocks: sha2::Sha256,
    block: sha2::Sha256,
    in_block: usize,
}

/// Bytes per block of the content hash.
const HASH_BLOCK: usize = 4 << 20;

impl ContentHasher {
    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        use sha2::Digest;
        while !data.is_empty() {
            let n = (HASH_BLOCK - self.in_block).min(data.len());
            self.block.update(&data[..n]);
            self.in_block += n;
            data = &data[n..];
            if self.in_block == HASH_BLOCK {
                let block = std::mem::take(&mut self.block).finalize();
                self.blocks.update(block);
                self.in_block = 0;
            }
        }
    }

    /// The hash, in lower-case hex.
    pub fn finish(mut self) -> String {
        use sha2::Digest;
        if self.in_block > 0 {
            let block = self.block.finalize();
            self.blocks.update(block);
        }
        hex::encode(self.blocks.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_what_can_be_done() {
        let body = |summary: &str| {
            serde_json::json!({"error_summary": summary, "error": {".tag": "x"}}).to_string()
        };
        let kind = |status, body: &str| classify_status(String::new(), status, body.as_bytes());
        assert_eq!(
            kind(401, &body("expired_access_token/")).kind,
            Kind::Unauthorized
        );
        assert_eq!(kind(429, &body("too_many_requests/")).kind, Kind::Transient);
        assert_eq!(kind(503, "").kind, Kind::Transient);
        assert_eq!(kind(400, "Error in call").kind, Kind::Fatal);
        let conflict = kind(409, &body("path/conflict/file/.."));
        assert!(conflict.is("path/conflict") && !conflict.is("path/not_found"));
        assert_eq!(
            kind(400, "bad arg").error.to_string(),
            ": HTTP 400: bad arg"
        );
    }

    #[test]
    fn header_json_escapes_everything_past_ascii() {
        let arg = serde_json::json!({"path": "/é/😀\u{7f}"});
        let text = header_json(&arg);
        assert!(text.is_ascii(), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), arg);
    }

    #[test]
    fn content_hash_matches_dropbox_definition() {
        use sha2::{Digest, Sha256};
        let data: Vec<u8> = (0..(9 << 20) + 5).map(|i| (i * 7) as u8).collect();
        let mut whole = Sha256::new();
        for block in data.chunks(4 << 20) {
            whole.update(Sha256::digest(block));
        }
        let expected = hex::encode(whole.finalize());
        let mut hasher = ContentHasher::default();
        for piece in data.chunks(1_000_003) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finish(), expected);
        assert_eq!(
            ContentHasher::default().finish(),
            hex::encode(Sha256::digest(b""))
        );
    }
}
