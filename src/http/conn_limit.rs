//! A ceiling on open client connections, below the process's open-file limit, so the
//! server keeps accepting when clients try to take every descriptor: at the ceiling the
//! oldest idle keep-alive connection (no request in flight, or not even a complete
//! request head yet) is closed to make room, and when every connection is busy (stream
//! subscribers, requests in flight) the newcomer gets a short `503` with `Retry-After`
//! instead of a lockout. Without this, `accept` fails with EMFILE until some client
//! leaves on its own.

use crate::metrics as m;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The share of the descriptors still free at start that client connections may take by
/// default; the rest is kept for the Kubernetes watch, probes, files and the admin port.
const DEFAULT_SHARE: f64 = 0.9;

/// The default ceiling: 90% of the descriptors the soft open-file limit (`RLIMIT_NOFILE`)
/// leaves free at start, or none when the limit cannot be read.
pub fn default_max_connections() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    let soft: usize = soft.parse().ok()?;
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let free = soft.saturating_sub(in_use);
    Some(((free as f64 * DEFAULT_SHARE) as usize).max(1))
}

#[derive(Debug)]
struct Entry {
    /// Cancelled to close the connection gracefully (it is idle, so at once).
    close: CancellationToken,
    in_flight: usize,
    /// Upgraded to a WebSocket: a subscriber, never idle.
    upgraded: bool,
    /// Since when no request has been in flight.
    idle_since: Instant,
    shed: bool,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Open connections not being shed: what counts against the ceiling.
    counted: usize,
}

/// The open connections of one listener, up to `max`.
#[derive(Clone, Debug)]
pub struct Connections {
    max: usize,
    registry: Arc<Mutex<Registry>>,
}

impl Connections {
    /// `max` open connections; `None` for the default ([`default_max_connections`]).
    pub fn new(max: Option<usize>) -> Self {
        let max = max.or_else(default_max_connections).unwrap_or(usize::MAX);
        Self {
            max: max.max(1),
            registry: Arc::default(),
        }
    }

    /// A place for a new connection, closed along with `shutdown`. At the ceiling the
    /// oldest idle connection is closed to make room; `None` when none is idle.
    pub fn admit(&self, shutdown: &CancellationToken) -> Option<Slot> {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.counted >= self.max && !shed_oldest_idle(&mut registry) {
            return None;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let close = shutdown.child_token();
        registry.counted += 1;
        registry.open.insert(
            id,
            Entry {
                close: close.clone(),
                in_flight: 0,
                upgraded: false,
                idle_since: Instant::now(),
                shed: false,
            },
        );
        Some(Slot {
            id,
            close,
            registry: self.registry.clone(),
        })
    }

    /// Closes the oldest idle connection, when there is one: the process is out of
    /// descriptors before the ceiling (other descriptors took more than their share).
    pub fn shed_idle(&self) -> bool {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        shed_oldest_idle(&mut registry)
    }
}

/// Closes the connection idle the longest (no request in flight, not upgraded), counted;
/// false when every connection is busy.
fn shed_oldest_idle(registry: &mut Registry) -> bool {
    let oldest = registry
        .open
        .values_mut()
        .filter(|e| !e.shed && !e.upgraded && e.in_flight == 0)
        .min_by_key(|e| e.idle_since);
    let Some(oldest) = oldest else {
        return false;
    };
    oldest.shed = true;
    registry.counted -= 1;
    oldest.close.cancel();
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "shed_idle").increment(1);
    true
}

/// One admitted connection; dropping it (with the socket) gives its place back.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    close: CancellationToken,
    registry: Arc<Mutex<Registry>>,
}

impl Slot {
    /// Cancelled when the connection should close: at shutdown, or shed while idle.
    pub fn closing(&self) -> CancellationToken {
        self.close.clone()
    }

    /// What tracks the requests of this connection.
    pub fn activity(&self) -> Activity {
        Activity {
            id: self.id,
            registry: self.registry.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.open.remove(&self.id).is_some_and(|e| !e.shed) {
            registry.counted -= 1;
        }
    }
}

/// Marks a connection busy while a request is in flight.
#[derive(Clone, Debug)]
pub struct Activity {
    id: u64,
    registry: Arc<Mutex<Registry>>,
}

impl Activity {
    fn update(&self, f: impl FnOnce(&mut Entry)) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = registry.open.get_mut(&self.id) {
            f(entry);
        }
    }

    /// No request in flight and no upgrade: closing the connection loses nothing.
    pub fn is_idle(&self) -> bool {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry
            .open
            .get(&self.id)
            .is_none_or(|e| e.in_flight == 0 && !e.upgraded)
    }

    /// A request started; busy until the returned guard (kept with the response body)
    /// drops.
    pub fn begin(&self) -> Busy {
        self.update(|e| e.in_flight += 1);
        Busy(self.clone())
    }

    /// The connection was switched to another protocol (a WebSocket subscriber): busy
    /// for good. Only on a `101`, so that an `Upgrade` header alone cannot make a
    /// keep-alive connection exempt.
    fn upgraded(&self) {
        self.update(|e| e.upgraded = true);
    }
}

/// A request in flight; dropped once its response is sent (or abandoned).
#[derive(Debug)]
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 {
                e.idle_since = Instant::now();
            }
        });
    }
}

/// A service whose requests mark their connection busy until the response is sent.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S, B, R> hyper::service::Service<http::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: hyper::body::Body + Unpin,
{
    type Response = http::Response<TrackedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, request: http::Request<B>) -> Self::Future {
        let (activity, busy) = (self.activity.clone(), self.activity.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                activity.upgraded();
            }
            Ok(response.map(|inner| TrackedBody { inner, _busy: busy }))
        })
    }
}

/// A response body that keeps its connection busy until it is sent or dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a connection refused at the ceiling.
const REFUSED: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 61\r\n\r\n\
{\"error\":\"too many open connections; retry later\",\"code\":503}";

/// How long a refused connection gets to take its answer.
const REFUSE_WITHIN: Duration = Duration::from_secs(1);

/// Answers a connection refused at the ceiling with a `503` and closes it, counted. The
/// request is read and discarded for a moment first, so closing with unread bytes does
/// not reset the connection before the client reads the answer.
pub fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    metrics::counter!(m::CONNECTIONS_REJECTED, "reason" => "capacity").increment(1);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSE_WITHIN, async {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
            stream.write_all(REFUSED.as_bytes()).await?;
            stream.shutdown().await?;
            while stream.read(&mut buf).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_json_answer() {
        let (head, body) = REFUSED.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], 503);
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let shutdown = CancellationToken::new();
        let connections = Connections::new(Some(2));
        let first = connections.admit(&shutdown).unwrap();
        let second = connections.admit(&shutdown).unwrap();
        let busy = second.activity().begin();
        let third = connections.admit(&shutdown).expect("the idle one is shed");
        assert!(first.closing().is_cancelled());
        assert!(!second.closing().is_cancelled());
        drop(first);
        third.activity().upgraded();
        assert!(connections.admit(&shutdown).is_none(), "all busy");
        drop(busy);
        assert!(connections.admit(&shutdown).is_some(), "idle again");
        assert!(!third.closing().is_cancelled(), "an upgraded one stays");
    }

    /// A service answering every request with `status`.
    fn answering(
        status: http::StatusCode,
    ) -> impl hyper::service::Service<
        http::Request<http_body_util::Empty<bytes::Bytes>>,
        Response = http::Response<http_body_util::Empty<bytes::Bytes>>,
        Error = std::convert::Infallible,
        Future = impl Future + Send + 'static,
    > {
        hyper::service::service_fn(move |_| async move {
            let mut response = http::Response::new(http_body_util::Empty::new());
            *response.status_mut() = status;
            Ok(response)
        })
    }

    #[tokio::test]
    async fn a_connection_is_busy_while_a_response_is_out_and_for_good_after_a_101() {
        use hyper::service::Service;
        let shutdown = CancellationToken::new();
        let connections = Connections::new(Some(8));
        let upgrade = || {
            http::Request::builder()
                .header(http::header::UPGRADE, "websocket")
                .body(http_body_util::Empty::new())
                .unwrap()
        };
        let slot = connections.admit(&shutdown).unwrap();
        let refused = Tracked::new(answering(http::StatusCode::BAD_REQUEST), slot.activity());
        let response = refused.call(upgrade()).await.unwrap();
        assert!(!slot.activity().is_idle(), "busy while the response is out");
        drop(response);
        assert!(
            slot.activity().is_idle(),
            "an Upgrade header alone exempts nothing"
        );
        let switched = Tracked::new(
            answering(http::StatusCode::SWITCHING_PROTOCOLS),
            slot.activity(),
        );
        drop(switched.call(upgrade()).await.unwrap());
        assert!(!slot.activity().is_idle(), "a WebSocket is never idle");
    }
}
