//! Pieces shared by the remote backends (S3, Google Drive, Dropbox, Azure): the private tokio
//! runtime the synchronous [`Backend`](super::Backend) trait blocks on, always under a
//! deadline, and the [`Remote`] calls over it that bound each request and report the last
//! transient error on a timeout; the HTTP connector and the per-thread clients of the
//! hyper-based backends; the filler that copies a streamed body into the caller's buffers;
//! and the backoff between retries.

use std::any::Any;
use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use google_drive3::hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use tokio::runtime::Runtime;

use super::{Arrival, BackendError};

/// A multi-threaded tokio runtime with a deadline for every blocking call. It must be
/// created after the daemon forks (tokio's threads do not survive `fork`).
pub struct BlockingRuntime {
    runtime: Runtime,
    timeout: Duration,
}

impl BlockingRuntime {
    /// Starts `workers` threads named `name`; every [`BlockingRuntime::run`] is bounded by
    /// `timeout`.
    pub fn new(name: &str, workers: usize, timeout: Duration) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|source| BackendError::Io {
                context: format!("starting the {name} runtime"),
                source,
            })?;
        Ok(BlockingRuntime { runtime, timeout })
    }

    /// The longest time one [`BlockingRuntime::run`] may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The runtime, for tasks that outlive one call (uploads).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Runs `future` to completion, failing with [`BackendError::Timeout`] (described by
    /// `what`) once the timeout has passed.
    pub fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        future: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.block_within(&self.runtime, what, future)
    }

    /// Like [`BlockingRuntime::run`], but on a single-threaded runtime of the calling
    /// thread, so that the connections `future` opens are driven on this thread: a
    /// response body is received and consumed here, with no hand-off between threads for
    /// each piece of it. `future` must use only connections opened on this thread (a
    /// client of its own): a connection shared with other threads would depend on this
    /// thread to make progress. Work on shared clients goes to [`BlockingRuntime::runtime`].
    pub fn run_here<T>(
        &self,
        what: impl FnOnce() -> String,
        future: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        thread_local! {
            static HERE: OnceCell<Runtime> = const { OnceCell::new() };
        }
        HERE.with(|cell| {
            let runtime = match cell.get() {
                Some(runtime) => runtime,
                None => {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| BackendError::Io {
                            context: "starting a reading thread's runtime".into(),
                            source,
                        })?;
                    cell.get_or_init(|| runtime)
                }
            };
            self.block_within(runtime, what, future)
        })
    }

    /// `future`'s output, or [`BackendError::Timeout`] (described by `what`) once the
    /// timeout has passed: the bound of one request awaited inside a longer task.
    pub async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        future: impl Future<Output = T>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.timeout, future)
            .await
            .map_err(|_| BackendError::Timeout {
                context: what(),
                timeout: self.timeout,
            })
    }

    fn block_within<T>(
        &self,
        runtime: &Runtime,
        what: impl FnOnce() -> String,
        future: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        runtime
            .block_on(self.within(what, future))
            .and_then(|result| result)
    }
}

/// The last transient error a retry loop saw, if any: a loop notes each error it retries
/// here, and a timeout's message ends with it ([`with_last_error`]).
pub type LastError = Mutex<Option<String>>;

/// `what`, followed by the last transient error seen, if any (taken from `last`):
/// `"{what} (last error: {error})"`.
pub fn with_last_error(what: impl Fn() -> String, last: &LastError) -> String {
    match last.lock().take() {
        Some(error) => format!("{} (last error: {error})", what()),
        None => what(),
    }
}

/// A failed request of a remote backend, as its retry loop classifies it (how to handle it
/// is the backend's own business).
pub trait RemoteFailure: Sized {
    /// What to report when the failure is not handled.
    fn into_error(self) -> BackendError;

    /// A failure that is never retried, reporting `error` (a timeout, a short read).
    fn from_error(error: BackendError) -> Self;
}

/// A client of a remote API whose blocking calls run on a [`BlockingRuntime`]. Invariant:
/// every call is bounded by the runtime's timeout, retries and backoff included: as a whole
/// ([`Remote::block`], [`Remote::block_here`]), or each of its requests
/// ([`Remote::block_each`] with [`Remote::bounded`]); and a timeout's message carries the
/// last transient error the retry loop noted in the [`LastError`] it was given.
pub trait Remote {
    /// How a request of this client fails.
    type Failure: RemoteFailure;

    /// Where the blocking calls run.
    fn blocking_runtime(&self) -> &BlockingRuntime;

    /// Blocks on `future` on the shared runtime for at most the timeout; on timeout the
    /// message carries the last transient error seen, if any.
    fn block<T>(
        &self,
        what: impl Fn() -> String,
        future: impl AsyncFnOnce(&LastError) -> Result<T, Self::Failure>,
    ) -> Result<T, BackendError> {
        let last = Mutex::new(None);
        let what = || with_last_error(&what, &last);
        self.blocking_runtime().run(what, async {
            future(&last).await.map_err(RemoteFailure::into_error)
        })
    }

    /// Like [`Remote::block`], on the calling thread's own runtime
    /// ([`BlockingRuntime::run_here`]): for downloads through this thread's own client
    /// ([`ClientsHere`]), whose responses are then received on the thread that consumes
    /// them.
    fn block_here<T>(
        &self,
        what: impl Fn() -> String,
        future: impl AsyncFnOnce(&LastError) -> Result<T, Self::Failure>,
    ) -> Result<T, BackendError> {
        let last = Mutex::new(None);
        let what = || with_last_error(&what, &last);
        self.blocking_runtime().run_here(what, async {
            future(&last).await.map_err(RemoteFailure::into_error)
        })
    }

    /// Like [`Remote::block`] for work of many requests (a listing, an upload), which is
    /// not bounded as a whole: each of its requests must be, with [`Remote::bounded`].
    fn block_each<T>(
        &self,
        future: impl AsyncFnOnce(&LastError) -> Result<T, Self::Failure>,
    ) -> Result<T, BackendError> {
        let last = Mutex::new(None);
        self.blocking_runtime()
            .runtime()
            .block_on(async { future(&last).await.map_err(RemoteFailure::into_error) })
    }

    /// `future` (one request and its retries), failing with a [`BackendError::Timeout`]
    /// made a never-retried failure ([`RemoteFailure::from_error`]) once the timeout has
    /// passed; its message carries the last transient error seen, if any.
    fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        last: &LastError,
        future: impl Future<Output = Result<T, Self::Failure>>,
    ) -> impl Future<Output = Result<T, Self::Failure>> {
        let within = self
            .blocking_runtime()
            .within(move || with_last_error(what, last), future);
        async { within.await.map_err(RemoteFailure::from_error)? }
    }
}

/// HTTPS with the system's roots, or plain HTTP for a test server or an emulator: the
/// connector of the hyper-based backends.
pub type Connector = google_drive3::hyper_rustls::HttpsConnector<HttpConnector>;

/// A hyper client sending bodies of type `B`; cloning one shares its connection pool.
pub type HttpClient<B> = google_drive3::hyper_util::client::legacy::Client<Connector, B>;

/// A [`Connector`] that connects within `timeout` (at most 5 s), with `TCP_NODELAY`.
pub fn connector(timeout: Duration) -> Result<Connector, BackendError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
    let builder = google_drive3::hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|source| BackendError::Io {
            context: "loading the system's CA certificates".into(),
            source,
        })?;
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

/// A client keeping up to `idle_per_host` idle connections.
pub fn http_client<B>(connector: Connector, idle_per_host: usize) -> HttpClient<B>
where
    B: google_drive3::hyper::body::Body + Send,
    B::Data: Send,
{
    google_drive3::hyper_util::client::legacy::Client::builder(
        google_drive3::hyper_util::rt::TokioExecutor::new(),
    )
    .pool_max_idle_per_host(idle_per_host)
    .build(connector)
}

/// Source of [`ClientsHere`] ids.
static NEXT_CLIENTS_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's own HTTP client of each [`ClientsHere`] (by id); they go with the
    /// thread, as its runtime ([`BlockingRuntime::run_here`]) does.
    static CLIENTS_HERE: RefCell<Vec<(u64, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// The per-thread HTTP clients of one remote client. Invariant: a client from
/// [`ClientsHere::get`] is used only inside [`Remote::block_here`] on the thread that got
/// it, since its connections are driven by that thread's runtime alone.
pub struct ClientsHere {
    connector: Connector,
    id: u64,
}

impl ClientsHere {
    /// Per-thread clients connecting with `connector`.
    pub fn new(connector: Connector) -> Self {
        ClientsHere {
            connector,
            id: NEXT_CLIENTS_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// This thread's own client (up to 8 idle connections), made on first use.
    pub fn get<B>(&self) -> HttpClient<B>
    where
        B: google_drive3::hyper::body::Body + Send + 'static,
        B::Data: Send,
    {
        CLIENTS_HERE.with(|clients| {
            let mut clients = clients.borrow_mut();
            let found = clients
                .iter()
                .filter(|(id, _)| *id == self.id)
                .find_map(|(_, client)| client.downcast_ref::<HttpClient<B>>());
            if let Some(client) = found {
                return client.clone();
            }
            let client = http_client::<B>(self.connector.clone(), 8);
            clients.push((self.id, Box::new(client.clone())));
            client
        })
    }
}

/// Spreads the pieces of a streamed body, in order, over a list of buffers that together
/// hold exactly the range asked for (more bytes is an error, fewer is a short read), and
/// tells an [`Arrival`] as each buffer completes. A buffer whose bytes come in one piece
/// is handed over straight from the piece, without a copy into the buffer.
pub struct BufFiller<'a, 'b> {
    bufs: &'a mut [&'b mut [u8]],
    arrival: &'a dyn Arrival,
    key: &'a str,
    offset: u64,
    buf_index: usize,
    within: usize,
    copied: usize,
    total: usize,
}

impl<'a, 'b> BufFiller<'a, 'b> {
    /// A filler for the range of object `key` that starts at `offset`.
    pub fn new(
        bufs: &'a mut [&'b mut [u8]],
        arrival: &'a dyn Arrival,
        key: &'a str,
        offset: u64,
    ) -> Self {
        let total = bufs.iter().map(|b| b.len()).sum();
        BufFiller {
            bufs,
            arrival,
            key,
            offset,
            buf_index: 0,
            within: 0,
            copied: 0,
            total,
        }
    }

    /// Bytes the buffers hold in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Appends the next piece of the body.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), BackendError> {
        if self.copied + bytes.len() > self.total {
            return Err(BackendError::Remote {
                context: format!("reading {:?} at {}", self.key, self.offset),
                message: "the server sent more bytes than the range asked for".into(),
            });
        }
        self.copied += bytes.len();
        while !bytes.is_empty() {
            let index = self.buf_index;
            let buf = &mut *self.bufs[index];
            let len = buf.len();
            if self.within == 0 && bytes.len() >= len {
                let (whole, rest) = bytes.split_at(len);
                self.arrival.complete(index, Some(whole), buf);
                bytes = rest;
                self.buf_index += 1;
                continue;
            }
            let n = (len - self.within).min(bytes.len());
            buf[self.within..self.within + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.within += n;
            if self.within == len {
                self.arrival.complete(index, None, buf);
                self.buf_index += 1;
                self.within = 0;
            }
        }
        Ok(())
    }

    /// Ends the body: fails with [`BackendError::ShortRead`] unless every buffer is full.
    pub fn finish(self) -> Result<(), BackendError> {
        if self.copied < self.total {
            return Err(BackendError::ShortRead {
                key: self.key.to_owned(),
                end: self.offset + self.total as u64,
            });
        }
        Ok(())
    }
}

/// The [`Arrival`] of a plain read: bytes that came in one piece are copied in.
pub struct CopyIn;

impl Arrival for CopyIn {
    fn complete(&self, _index: usize, bytes: Option<&[u8]>, buf: &mut [u8]) {
        if let Some(bytes) = bytes {
            buf.copy_from_slice(bytes);
        }
    }
}

/// The pause before retry number `attempt` (0 for the first retry): 100 ms doubling up to
/// 3.2 s, with up to 50% random jitter so parallel requests do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * (1 << attempt.min(5));
    let mut byte = [0u8; 1];
    let jitter = match getrandom::getrandom(&mut byte) {
        Ok(()) => base / 2 * u32::from(byte[0]) / 255,
        Err(_) => Duration::ZERO,
    };
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a filler reported, copying like [`CopyIn`].
    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<(usize, bool)>>);

    impl Arrival for Recorder {
        fn complete(&self, index: usize, bytes: Option<&[u8]>, buf: &mut [u8]) {
            self.0.lock().push((index, bytes.is_some()));
            CopyIn.complete(index, bytes, buf);
        }
    }

    #[test]
    fn filler_spreads_pieces_over_buffers_and_checks_the_length() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
        let mut bufs: [&mut [u8]; 2] = [&mut a, &mut b];
        let recorder = Recorder::default();
        let mut filler = BufFiller::new(&mut bufs, &recorder, "k", 10);
        assert_eq!(filler.total(), 7);
        filler.push(b"ab").unwrap();
        filler.push(b"cdef").unwrap();
        assert!(matches!(
            filler.push(b"gh"),
            Err(BackendError::Remote { .. })
        ));
        filler.push(b"g").unwrap();
        filler.finish().unwrap();
        assert_eq!((&a, &b), (b"abc", b"defg"));
        assert_eq!(*recorder.0.lock(), [(0, false), (1, false)]);

        let mut c = [0u8; 4];
        let mut bufs: [&mut [u8]; 1] = [&mut c];
        let mut short = BufFiller::new(&mut bufs, &CopyIn, "k", 10);
        short.push(b"xy").unwrap();
        assert!(matches!(
            short.finish(),
            Err(BackendError::ShortRead { end: 14, .. })
        ));
    }

    #[test]
    fn buffers_that_arrive_in_one_piece_are_handed_over_from_it() {
        let (mut a, mut b, mut c) = ([0u8; 2], [0u8; 3], [0u8; 2]);
        let mut bufs: [&mut [u8]; 3] = [&mut a, &mut b, &mut c];
        let recorder = Recorder::default();
        let mut filler = BufFiller::new(&mut bufs, &recorder, "k", 0);
        filler.push(b"abcd").unwrap();
        filler.push(b"efg").unwrap();
        filler.finish().unwrap();
        assert_eq!((&a, &b, &c), (b"ab", b"cde", b"fg"));
        // a whole in the first piece; b split over both; c whole in the second.
        assert_eq!(*recorder.0.lock(), [(0, true), (1, false), (2, true)]);
    }

    #[test]
    fn run_here_runs_on_the_calling_thread_under_the_timeout() {
        let runtime = BlockingRuntime::new("test", 1, Duration::from_millis(200)).unwrap();
        let caller = std::thread::current().id();
        let ran_on = runtime
            .run_here(String::new, async {
                tokio::task::yield_now().await;
                Ok(std::thread::current().id())
            })
            .unwrap();
        assert_eq!(ran_on, caller);
        let slow = runtime.run_here(|| "sleeping".into(), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        assert!(
            matches!(slow, Err(BackendError::Timeout { .. })),
            "{slow:?}"
        );
        // A task spawned by the future runs on this thread's runtime, as a connection does.
        let spawned_on = runtime
            .run_here(String::new, async {
                Ok(tokio::spawn(async { std::thread::current().id() })
                    .await
                    .unwrap())
            })
            .unwrap();
        assert_eq!(spawned_on, caller);
    }

    /// A failure that remembers whether it came from [`RemoteFailure::from_error`].
    #[derive(Debug)]
    struct TestFailure(BackendError, bool);

    impl RemoteFailure for TestFailure {
        fn into_error(self) -> BackendError {
            self.0
        }

        fn from_error(error: BackendError) -> Self {
            TestFailure(error, true)
        }
    }

    struct TestClient(BlockingRuntime);

    impl Remote for TestClient {
        type Failure = TestFailure;

        fn blocking_runtime(&self) -> &BlockingRuntime {
            &self.0
        }
    }

    #[test]
    fn remote_calls_are_bounded_and_name_the_last_error() {
        let client =
            TestClient(BlockingRuntime::new("test", 1, Duration::from_millis(100)).unwrap());
        let slow = client.block(
            || "reading k".into(),
            async |last: &LastError| -> Result<(), TestFailure> {
                *last.lock() = Some("HTTP 503".into());
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
        );
        let message = slow.unwrap_err().to_string();
        assert!(
            message.contains("reading k (last error: HTTP 503)"),
            "{message}"
        );
        let failed = client.block_here(
            || "reading k".into(),
            async |_: &LastError| -> Result<(), TestFailure> {
                Err(TestFailure(
                    BackendError::Changed { key: "k".into() },
                    false,
                ))
            },
        );
        assert!(
            matches!(failed, Err(BackendError::Changed { .. })),
            "{failed:?}"
        );
        // Each request of a longer task is bounded; its timeout is a never-retried failure.
        let each = client.block_each(async |last: &LastError| -> Result<(), TestFailure> {
            let request = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            };
            match client.bounded(|| "listing".into(), last, request).await {
                Err(TestFailure(BackendError::Timeout { .. }, true)) => Ok(()),
                other => panic!("{other:?}"),
            }
        });
        each.unwrap();
        assert_eq!(with_last_error(|| "w".into(), &Mutex::new(None)), "w");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(0) <= Duration::from_millis(150));
        assert!(backoff(3) >= Duration::from_millis(800));
        assert!(backoff(30) <= Duration::from_millis(4800));
    }
}
