//! The lean path of the stream routes: a connection whose first request is `GET` of the
//! SSE or the WebSocket route is served without hyper.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every connection for
//! its whole life (until an upgrade), more than the rest of what an idle subscriber costs;
//! a subscriber only ever receives. Here its head is parsed with `httparse`, the routes
//! (auth, CORS, filters, admission, the WebSocket handshake) run as for any request, and
//! then the SSE events are written straight to the socket in chunked encoding, everything
//! that is ready in one vectored write, or the socket is handed to the WebSocket route.
//! Any other request (or one whose request line did not come in the first packet) is
//! hyper's.

use super::server::{PendingUpgrade, ServerLimits, Upgrade};
use super::shared_body::SharedBody;
use crate::metrics as m;
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::io::IoSlice;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Paths of the stream routes (with and without the `/api` prefix).
const STREAM_PATHS: [&[u8]; 4] = [
    b"/api/instances/stream",
    b"/instances/stream",
    b"/api/instances/ws",
    b"/instances/ws",
];

/// The longest request head accepted on this path (hyper's limit is larger, but a
/// subscriber's head is a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// Request headers accepted on this path.
const MAX_HEADERS: usize = 64;

/// Pieces written in one vectored write at most.
const MAX_BATCH: usize = 64;

/// How a connection starts.
pub enum FirstRequest {
    /// `GET` of the SSE or WebSocket route: serve it here.
    Subscriber,
    /// Anything else: hyper's.
    Other,
    /// The client sent nothing within the header timeout, or closed.
    Gone(&'static str),
}

/// Looks at the first bytes the client sent, without taking them.
pub async fn first_request(stream: &TcpStream, timeout: Duration) -> FirstRequest {
    let mut peeked = [0u8; 32];
    match tokio::time::timeout(timeout, stream.peek(&mut peeked)).await {
        Err(_) => FirstRequest::Gone("header_timeout"),
        Ok(Ok(0)) | Ok(Err(_)) => FirstRequest::Gone("client_closed"),
        Ok(Ok(n)) if is_stream_request(&peeked[..n]) => FirstRequest::Subscriber,
        Ok(Ok(_)) => FirstRequest::Other,
    }
}

/// Whether a request line starts `GET <a stream path>` followed by `?` or a space.
fn is_stream_request(start: &[u8]) -> bool {
    let Some(rest) = start.strip_prefix(b"GET ") else {
        return false;
    };
    STREAM_PATHS.iter().any(|path| {
        rest.starts_with(path) && matches!(rest.get(path.len()), Some(b'?') | Some(b' '))
    })
}

/// Serves the connection: reads the head, answers it through `routes`, and streams the
/// body. Every way it ends is counted in `loco_discovery_connections_closed_total`.
/// Returns the stream to send, if the routes accepted the subscriber: the caller runs it
/// in a task of its own, so that what it took to answer the head (the routes, the
/// server's settings) is not kept for the life of the stream.
pub async fn serve<S>(mut stream: TcpStream, routes: S, limits: &ServerLimits) -> Answered
where
    S: hyper::service::Service<
        http::Request<http_body_util::Empty<Bytes>>,
        Response = warp::reply::Response,
        Error = Infallible,
    >,
{
    let (mut request, early) = match read_request(&mut stream, limits.header_read_timeout).await {
        Ok(read) => read,
        Err(Refused { reason, answer }) => {
            closed(reason);
            if let Some(answer) = answer {
                send_and_close(&mut stream, answer, limits.write_timeout).await;
            }
            return Answered::Done;
        }
    };
    let (to_route, from_lean) = tokio::sync::oneshot::channel();
    request
        .extensions_mut()
        .insert(PendingUpgrade::new(Upgrade::Lean(from_lean)));
    let http10 = request.version() == http::Version::HTTP_10;
    let Ok(mut response) = routes.call(request).await;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, _) = response.into_parts();
        let head = response_head(&parts, Framing::None);
        return match tokio::time::timeout(limits.write_timeout, stream.write_all(&head)).await {
            Ok(Ok(())) => Answered::Upgraded(
                Upgraded {
                    stream,
                    early,
                    guards: None,
                },
                to_route,
            ),
            _ => {
                closed("client_closed");
                Answered::Done
            }
        };
    }
    let Some(body) = SharedBody::take(response.extensions_mut()) else {
        // Refused (400, 401, 503, ...): the answer, then close.
        send_and_close(&mut stream, response, limits.write_timeout).await;
        return Answered::Done;
    };
    let (parts, ()) = response.map(|_| ()).into_parts();
    Answered::Stream(Streaming {
        stream,
        head: Bytes::from(response_head(&parts, Framing::Chunked)),
        body,
        chunked: !http10,
        write_timeout: limits.write_timeout,
    })
}

/// How the lean path answered a connection's first request.
pub enum Answered {
    /// An SSE subscriber, to run.
    Stream(Streaming),
    /// A WebSocket handshake, answered with its `101`: the socket goes to the WebSocket
    /// route through the sender (after the caller adds what must live as long as it).
    Upgraded(Upgraded, tokio::sync::oneshot::Sender<Upgraded>),
    /// Answered and closed (a refusal, an error), or the client went away.
    Done,
}

/// A socket switched to the WebSocket protocol by the lean path.
pub struct Upgraded {
    pub stream: TcpStream,
    /// Bytes the client sent after its request head (frames sent before the `101`).
    pub early: Bytes,
    /// What keeps the connection counted while the WebSocket lives.
    pub guards: Option<Box<dyn Send>>,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("stream", &self.stream)
            .field("early", &self.early.len())
            .finish_non_exhaustive()
    }
}

/// An accepted subscriber: its socket, the response head and the events to send.
pub struct Streaming {
    stream: TcpStream,
    head: Bytes,
    body: super::shared_body::PiecesBody,
    chunked: bool,
    write_timeout: Duration,
}

impl Streaming {
    /// Sends the head and the events until the stream or the client ends.
    pub async fn run(mut self) {
        let reason = stream_body(
            &mut self.stream,
            self.head,
            self.body,
            self.chunked,
            self.write_timeout,
        )
        .await;
        closed(reason);
    }
}

/// Sends a whole response (with `content-length`) and closes the connection.
async fn send_and_close(
    stream: &mut TcpStream,
    response: warp::reply::Response,
    write_timeout: Duration,
) {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut answer = response_head(&parts, Framing::Length(body.len()));
    answer.extend_from_slice(&body);
    let _ = tokio::time::timeout(write_timeout, stream.write_all(&answer)).await;
}

/// Why the head was not answered by the routes, and the answer to send, if any.
struct Refused {
    reason: &'static str,
    answer: Option<warp::reply::Response>,
}

impl Refused {
    fn silently(reason: &'static str) -> Self {
        Self {
            reason,
            answer: None,
        }
    }

    /// A protocol error, answered with `status` and a JSON sentence like every error.
    fn bad(status: http::StatusCode, message: &str) -> Self {
        Self {
            reason: "protocol_error",
            answer: Some(super::reply::error_reply(status, message)),
        }
    }
}

/// Reads and parses the request head within `timeout`.
async fn read_request(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(http::Request<http_body_util::Empty<Bytes>>, Bytes), Refused> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(too_large());
        }
        buf.reserve(1024.min(MAX_HEAD - buf.len()));
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(Refused::silently("header_timeout")),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Refused::silently("client_closed")),
            Ok(Ok(_)) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(used)) => {
                let request = to_request(&parsed).ok_or_else(malformed)?;
                return Ok((request, Bytes::copy_from_slice(&buf[used..])));
            }
            Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
            Err(_) => return Err(malformed()),
        }
    }
}

fn malformed() -> Refused {
    Refused::bad(http::StatusCode::BAD_REQUEST, "malformed request head")
}

fn too_large() -> Refused {
    Refused::bad(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request head too large",
    )
}

fn to_request(
    parsed: &httparse::Request<'_, '_>,
) -> Option<http::Request<http_body_util::Empty<Bytes>>> {
    let version = match parsed.version? {
        0 => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let mut request = http::Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(version);
    for header in parsed.headers.iter() {
        request = request.header(header.name, header.value);
    }
    request.body(http_body_util::Empty::new()).ok()
}

/// How a response's body is delimited.
enum Framing {
    /// `content-length`, then the connection is closed.
    Length(usize),
    Chunked,
    /// No body: a `101`.
    None,
}

/// The status line and headers of `parts`, with the body's framing.
fn response_head(parts: &http::response::Parts, framing: Framing) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let status = parts.status;
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            name,
            &http::header::CONTENT_LENGTH | &http::header::TRANSFER_ENCODING
        ) {
            continue;
        }
        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    head.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    match framing {
        Framing::Length(len) => head.extend_from_slice(
            format!("content-length: {len}\r\nconnection: close\r\n\r\n").as_bytes(),
        ),
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        Framing::None => head.extend_from_slice(b"\r\n"),
    }
    head
}

/// Writes the head, then the body's pieces as they come (what is ready together in one
/// chunk, one write), until the body ends, the client goes away, or the socket accepts
/// nothing for `write_timeout`. Returns why it ended.
async fn stream_body(
    stream: &mut TcpStream,
    head: Bytes,
    mut body: super::shared_body::PiecesBody,
    chunked: bool,
    write_timeout: Duration,
) -> &'static str {
    let mut head = Some(head);
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let piece = tokio::select! {
            biased;
            piece = body.next_piece() => piece,
            gone = client_gone(stream) => {
                if gone {
                    return "client_closed";
                }
                continue;
            }
        };
        let Some(piece) = piece else {
            let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
            let _ = tokio::time::timeout(write_timeout, stream.write_all(end)).await;
            return "stream_ended";
        };
        batch.push(piece);
        while batch.len() < MAX_BATCH {
            match body.next_piece().now_or_never() {
                Some(Some(piece)) => batch.push(piece),
                _ => break,
            }
        }
        let written = write_batch(stream, head.take(), &batch, chunked, write_timeout).await;
        batch.clear();
        if let Err(reason) = written {
            return reason;
        }
    }
}

/// Waits for the client to send something; true when it closed the connection (what
/// it sends is read and dropped: a subscriber has nothing to say).
async fn client_gone(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 64];
    matches!(stream.read(&mut sink).await, Ok(0) | Err(_))
}

/// Writes `head` (the first time) and `pieces` as one chunk; a write the socket does
/// not accept within `write_timeout` ends the stream.
async fn write_batch(
    stream: &mut TcpStream,
    head: Option<Bytes>,
    pieces: &[Bytes],
    chunked: bool,
    write_timeout: Duration,
) -> Result<(), &'static str> {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut size_line = [0u8; 20];
    let size_len = {
        use std::io::Write as _;
        let mut rest = &mut size_line[..];
        write!(rest, "{len:x}\r\n").expect("20 bytes hold a hex usize");
        20 - rest.len()
    };
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len() + 3);
    if let Some(head) = &head {
        slices.push(IoSlice::new(head));
    }
    if chunked {
        slices.push(IoSlice::new(&size_line[..size_len]));
    }
    slices.extend(pieces.iter().map(|p| IoSlice::new(p)));
    if chunked {
        slices.push(IoSlice::new(b"\r\n"));
    }
    write_all_vectored(stream, &mut slices, write_timeout).await
}

/// Writes every slice, in as few writes as the socket allows; a write the socket does
/// not accept within `write_timeout` fails (counted as `write_stalled`).
pub async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    slices: &mut [IoSlice<'_>],
    write_timeout: Duration,
) -> Result<(), &'static str> {
    let mut slices = slices;
    while !slices.is_empty() {
        // A socket with room takes the write at once: no timer for it. Only a write
        // that has to wait is timed.
        let written = match stream.write_vectored(slices).now_or_never() {
            Some(written) => Ok(written),
            None => tokio::time::timeout(write_timeout, stream.write_vectored(slices)).await,
        };
        match written {
            Err(_) => {
                metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "write_stalled").increment(1);
                return Err("write_stalled_counted");
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Err("client_closed"),
            Ok(Ok(n)) => IoSlice::advance_slices(&mut slices, n),
        }
    }
    Ok(())
}

/// Counts how a lean connection ended (a stall is counted where it is seen).
fn closed(reason: &'static str) {
    match reason {
        "stream_ended" | "write_stalled_counted" => {}
        reason => {
            metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
            tracing::debug!(reason, "stream connection closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_the_stream_route_takes_the_lean_path() {
        for yes in [
            &b"GET /api/instances/stream HTTP/1.1\r\n"[..],
            b"GET /instances/stream?status=ready HTTP/1.1",
            b"GET /api/instances/stream?",
        ] {
            assert!(is_stream_request(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"GET /api/instances/streamer HTTP/1.1\r\n"[..],
            b"POST /api/instances/stream HTTP/1.1",
            b"HEAD /api/instances/stream HTTP/1.1",
            b"GET /api/instances/live HTTP/1.1",
            b"GET /api/instances/stre",
            b"",
        ] {
            assert!(!is_stream_request(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
