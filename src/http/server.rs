//! The accept loop, owned rather than left to `warp::serve`: one place for the listen
//! backlog, socket options, the time a client gets to send a request head (and to stay
//! idle between requests), behaviour at the open-file limit, graceful shutdown and the
//! classification of connection errors.

use super::conn_limit::{self, Connections, Slot};
use super::lean_stream::{self, Answered, FirstRequest};
use super::shared_body::{PiecesBody, SharedBody};
use crate::metrics as m;
use http_body_util::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

/// What one client connection may hold.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Time to send a complete request head, from the connection's start or from the end
    /// of the previous response: a connection that sends nothing, a partial head, or stays
    /// idle between keep-alive requests this long is closed.
    pub header_read_timeout: Duration,
    /// The listen backlog: connections the kernel queues before the server accepts them.
    pub backlog: u32,
    /// A connection whose socket has accepted no bytes for this long while the server
    /// has bytes to write (a stream or a response to a client that never reads) is closed,
    /// which frees its subscriber slot.
    pub write_timeout: Duration,
    /// The most open client connections (see [`conn_limit`](super::conn_limit)); `None`
    /// for 90% of the open-file limit.
    pub max_connections: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            backlog: 4096,
            write_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

/// How long to wait before accepting again when the process is out of file
/// descriptors (or the kernel out of memory for sockets).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `filter` on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets every open connection finish its response, and returns once they are closed.
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    // On Linux, listen() on a listening socket only changes its backlog.
    let backlog = i32::try_from(limits.backlog).unwrap_or(i32::MAX);
    if let Err(error) = socket2::SockRef::from(&listener).listen(backlog) {
        tracing::warn!(%error, backlog, "cannot set the listen backlog");
    }
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Every connection task holds a sender; all dropped = all connections closed.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let connections = Connections::new(limits.max_connections);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error, &connections).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit(&shutdown) else {
            conn_limit::refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inner = TowerToHyperService::new(warp::service(filter.clone()));
        let (open, limits, http1) = (open.clone(), limits.clone(), http1.clone());
        tokio::spawn(async move {
            let closing = slot.closing();
            let first = tokio::select! {
                first = lean_stream::first_request(&stream, limits.header_read_timeout) => first,
                // Shed while idle (counted there), or shutdown.
                _ = closing.cancelled() => FirstRequest::Gone("closing"),
            };
            match first {
                FirstRequest::Subscriber => {
                    // A subscriber is never idle: it is not shed to make room.
                    let busy = slot.activity().begin();
                    match lean_stream::serve(stream, inner, &limits).await {
                        Answered::Stream(streaming) => {
                            // Its own task: only what the stream needs stays allocated.
                            tokio::spawn(async move {
                                streaming.run().await;
                                drop((busy, slot, open));
                            });
                            return;
                        }
                        Answered::Upgraded(mut upgraded, to) => {
                            // The WebSocket task holds the connection's place from now on.
                            upgraded.guards = Some(Box::new((busy, slot, open)));
                            let _ = to.send(upgraded);
                            return;
                        }
                        Answered::Done => {}
                    }
                }
                FirstRequest::Gone(reason) => {
                    if reason == "header_timeout" {
                        metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
                    }
                }
                FirstRequest::Other => serve_with_hyper(stream, slot, inner, http1, &limits).await,
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    let _ = all_closed.recv().await;
}

/// Serves a connection with hyper: every request but a subscriber's first (see
/// [`lean_stream`]). It closes when its slot says so: at shutdown (once the response in
/// flight is sent), or when shed while idle.
async fn serve_with_hyper<S>(
    stream: tokio::net::TcpStream,
    slot: Slot,
    inner: S,
    http1: hyper::server::conn::http1::Builder,
    limits: &ServerLimits,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (closing, idle) = (slot.closing(), slot.activity());
    let (stream, writes) = Watched::new(stream);
    let stream = stream.holding(slot);
    // HEAD is answered as GET without the body (hyper leaves the body out).
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        if request.method() == http::Method::HEAD {
            *request.method_mut() = http::Method::GET;
        }
        if request.headers().contains_key(http::header::UPGRADE) {
            PendingUpgrade::hand_over(&mut request);
        }
        let response = hyper::service::Service::call(&inner, request);
        async move { response.await.map(with_shared_body) }
    });
    let service = conn_limit::Tracked::new(service, idle.clone());
    let conn = http1
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stalled = std::pin::pin!(writes.stalled(limits.write_timeout));
    let mut draining = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = closing.cancelled(), if !draining => {
                // Idle (not even a request head yet): hyper would wait for one.
                if idle.is_idle() {
                    break Ok(());
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = stalled.as_mut() => {
                metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "write_stalled")
                    .increment(1);
                tracing::debug!("closing a connection whose socket accepts nothing");
                break Ok(());
            }
        }
    };
    if let Err(error) = result {
        connection_failed(&error);
    }
}

/// Swaps warp's body for the [`SharedBody`] a route left in the extensions, if any.
fn with_shared_body<B>(response: http::Response<B>) -> http::Response<Either<B, PiecesBody>> {
    let (mut parts, body) = response.into_parts();
    let body = match SharedBody::take(&mut parts.extensions) {
        Some(shared) => Either::Right(shared),
        None => Either::Left(body),
    };
    http::Response::from_parts(parts, body)
}

/// Out of file descriptors: close the oldest idle connection, and wait a moment (the
/// header timeout closes hostile connections and gives descriptors back too) instead of
/// spinning on `accept`.
async fn accept_failed(error: std::io::Error, connections: &Connections) {
    let reason = match error.raw_os_error() {
        Some(libc_emfile) if libc_emfile == 24 || libc_emfile == 23 => "file_limit",
        Some(105) | Some(12) => "no_memory",
        _ => "other",
    };
    metrics::counter!(m::ACCEPT_ERRORS, "reason" => reason).increment(1);
    if reason == "other" {
        // ECONNABORTED and the like: the client is gone already; accept the next one.
        tracing::debug!(%error, "accept error");
        return;
    }
    if reason == "file_limit" {
        connections.shed_idle();
    }
    if warn_now(&LAST_ACCEPT_WARNING) {
        tracing::warn!(%error, "cannot accept connections (open-file limit?); retrying");
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Why a connection ended with an error, as a label of [`m::CONNECTIONS_CLOSED`].
pub fn close_reason(error: &hyper::Error) -> &'static str {
    use std::error::Error as _;
    if error.is_timeout() {
        return "header_timeout";
    }
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return "client_closed";
    }
    let io = error
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        use std::io::ErrorKind::*;
        if matches!(
            io.kind(),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
        ) {
            return "client_closed";
        }
        return "io_error";
    }
    if error.is_parse() || error.is_parse_too_large() {
        return "protocol_error";
    }
    "other"
}

/// A client closing its connection is normal (debug); anything else is worth a warning,
/// at most one per [`WARN_EVERY`].
fn connection_failed(error: &hyper::Error) {
    let reason = close_reason(error);
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
    match reason {
        "client_closed" | "header_timeout" => tracing::debug!(reason, %error, "connection closed"),
        _ if warn_now(&LAST_CONNECTION_WARNING) => {
            tracing::warn!(reason, %error, "connection error (further ones within 10 s not logged)")
        }
        _ => tracing::debug!(reason, %error, "connection error"),
    }
}

/// hyper's upgrade handle of a request, where a warp filter can take it
/// (`warp::ext::optional`: extensions taken by filters must be `Clone`); the WebSocket
/// route takes it to size the WebSocket's buffers itself.
#[derive(Clone, Debug)]
pub struct PendingUpgrade(Arc<std::sync::Mutex<Option<Upgrade>>>);

/// Where an upgraded connection comes from.
#[derive(Debug)]
pub enum Upgrade {
    /// hyper's connection, once it has sent the `101`.
    Hyper(hyper::upgrade::OnUpgrade),
    /// The lean path's socket, once it has sent the `101` (see [`lean_stream`]).
    Lean(tokio::sync::oneshot::Receiver<lean_stream::Upgraded>),
}

impl PendingUpgrade {
    fn hand_over<B>(request: &mut http::Request<B>) {
        if let Some(upgrade) = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
        {
            request
                .extensions_mut()
                .insert(Self::new(Upgrade::Hyper(upgrade)));
        }
    }

    pub fn new(upgrade: Upgrade) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(upgrade))))
    }

    /// The upgrade handle; `None` once taken.
    pub fn take(&self) -> Option<Upgrade> {
        self.0.lock().ok()?.take()
    }
}

/// When writes to one socket started to block, shared by the socket and its watchdog.
#[derive(Debug)]
pub struct WriteProgress {
    start: Instant,
    /// Milliseconds since `start` + 1 when a write last returned `Pending` and none has
    /// completed since; 0 while writes go through.
    blocked_since: AtomicU64,
}

impl WriteProgress {
    fn blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            let ms = self.start.elapsed().as_millis() as u64 + 1;
            self.blocked_since.store(ms, Ordering::Relaxed);
        }
    }

    fn progressed(&self) {
        self.blocked_since.store(0, Ordering::Relaxed);
    }

    fn blocked_for(&self) -> Duration {
        match self.blocked_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(since - 1)),
        }
    }

    /// Resolves once writes have been blocked for `limit` without a byte accepted.
    pub async fn stalled(self: Arc<Self>, limit: Duration) {
        let mut tick = tokio::time::interval((limit / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.blocked_for() >= limit {
                return;
            }
        }
    }
}

/// A socket that records whether its writes are blocked (the peer's window is full).
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    progress: Arc<WriteProgress>,
    /// The connection's place under the connection ceiling, given back when the socket
    /// closes (also after an upgrade hands the socket to a WebSocket).
    _slot: Option<Slot>,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Arc<WriteProgress>) {
        let progress = Arc::new(WriteProgress {
            start: Instant::now(),
            blocked_since: AtomicU64::new(0),
        });
        let watched = Self {
            inner,
            progress: progress.clone(),
            _slot: None,
        };
        (watched, progress)
    }

    /// This socket, holding `slot` until it is dropped.
    pub fn holding(self, slot: Slot) -> Self {
        Self {
            _slot: Some(slot),
            ..self
        }
    }

    fn track<T>(&self, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &poll {
            Poll::Pending => self.progress.blocked(),
            Poll::Ready(_) => self.progress.progressed(),
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const WARN_EVERY: Duration = Duration::from_secs(10);
static LAST_ACCEPT_WARNING: AtomicU64 = AtomicU64::new(0);
static LAST_CONNECTION_WARNING: AtomicU64 = AtomicU64::new(0);

/// True at most once per [`WARN_EVERY`] for one `last` (seconds since the Unix epoch).
fn warn_now(last: &AtomicU64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let previous = last.load(Ordering::Relaxed);
    now >= previous + WARN_EVERY.as_secs()
        && last
            .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
