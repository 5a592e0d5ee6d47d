//! `GET /api/instances/ws`: the same events as the SSE route, one JSON text frame each,
//! for services and for the lego-loco frontend's WebSocket hook (which sends
//! `{"type":"__ping"}` and expects `{"type":"__pong"}`).

use super::lean_stream::write_all_vectored;
use super::query::parse_stream_query;
use super::reply::{error_reply, too_many_subscribers};
use super::server::{PendingUpgrade, Upgrade};
use super::state::HttpState;
use super::stream::{record_delivery, subscriber_stream, Outgoing, Pieces, SubscriberSlot};
use super::ws_frames::{self, ClientMessage, Reader, Violation};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hyper_util::rt::TokioIo;
use loco_discovery_core::hub::{Filter, Frame};
use serde_json::{json, Value};
use std::io::IoSlice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use warp::http::StatusCode;
use warp::ws::Ws;

/// Items sent in one vectored write at most.
const MAX_BATCH: usize = 64;

/// The answer to an application-level ping, or `None` for any other message.
pub fn pong_for(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    if value.get("type")?.as_str()? != "__ping" {
        return None;
    }
    let mut pong = json!({"type": "__pong"});
    if let Some(ts) = value.get("ts") {
        pong["ts"] = ts.clone();
    }
    Some(pong.to_string())
}

/// Answers a WebSocket handshake (checked by `warp::ws()`, whose own upgrade is not used:
/// the subscriber's frames are written here, see [`ws_frames`]) and serves the
/// subscriber on the upgraded socket.
pub fn upgrade(
    state: HttpState,
    _checked: Ws,
    key: String,
    pending: Option<PendingUpgrade>,
    query: String,
) -> warp::reply::Response {
    let (filter, last_event_id) = match parse_stream_query(&query, None) {
        Ok(parsed) => parsed,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    let Some(upgrade) = pending.and_then(|p| p.take()) else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded to a WebSocket",
        );
    };
    let Some(slot) = state.admit("ws") else {
        return too_many_subscribers();
    };
    tokio::spawn(async move {
        match upgrade {
            Upgrade::Hyper(on_upgrade) => match on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    serve(io, Bytes::new(), state, filter, last_event_id, slot).await;
                }
                Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
            },
            Upgrade::Lean(socket) => {
                if let Ok(upgraded) = socket.await {
                    let _guards = upgraded.guards;
                    let (io, early) = (upgraded.stream, upgraded.early);
                    serve(io, early, state, filter, last_event_id, slot).await;
                }
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Default::default())
        .expect("a valid 101 response")
}

/// A published frame as a WebSocket text frame, encoded by the first WebSocket
/// subscriber to send it and shared by the others.
fn frame_message(frame: &Frame) -> Bytes {
    frame
        .ws
        .get_or_init(|| text_frame(&[&frame.json]).concat().into())
        .clone()
}

/// A text frame of `parts` (one message): its header, then the parts as they are.
fn text_frame(parts: &[&Bytes]) -> Vec<Bytes> {
    let len = parts.iter().map(|p| p.len()).sum();
    let (head, used) = ws_frames::header(ws_frames::TEXT, len);
    let mut out = vec![Bytes::copy_from_slice(&head[..used])];
    out.extend(parts.iter().map(|p| (*p).clone()));
    out
}

/// The bytes of one outgoing item.
fn encode(out: &Outgoing) -> Pieces {
    match out {
        Outgoing::Frame(frame) => frame_message(frame).into(),
        Outgoing::Left { data, .. } => text_frame(&[data]).into(),
        Outgoing::Snapshot { snapshot, .. } => {
            let head = Bytes::from(out.snapshot_head());
            text_frame(&[&head, &snapshot.view.instances, &Bytes::from_static(b"}")]).into()
        }
        Outgoing::Heartbeat => ws_frames::small_frame(ws_frames::PING, b"heartbeat").into(),
        Outgoing::Reconnect { data, .. } => {
            let mut out = text_frame(&[data]);
            out.push(ws_frames::close_frame(1012, "service restart"));
            out.into()
        }
    }
}

/// What to do after reading from the client.
enum Read {
    /// Bytes to send back (pongs), possibly none.
    Answer(Vec<Bytes>),
    /// The connection is over; send this last (a close frame), if anything.
    End(Option<Bytes>),
}

/// Handles every complete message the client sent.
fn answer(reader: &mut Reader) -> Read {
    let mut replies = Vec::new();
    loop {
        match reader.next() {
            Ok(None) => return Read::Answer(replies),
            Ok(Some(ClientMessage::Text(text))) => {
                if let Some(pong) = pong_for(&text) {
                    replies.extend(text_frame(&[&Bytes::from(pong)]));
                }
            }
            Ok(Some(ClientMessage::Ping(payload))) => {
                replies.push(ws_frames::small_frame(ws_frames::PONG, &payload));
            }
            Ok(Some(ClientMessage::Ignored)) => {}
            Ok(Some(ClientMessage::Close { code, reason })) => {
                let reason = loco_discovery_core::text::printable(&reason);
                tracing::debug!(code, %reason, "the client closed its WebSocket");
                return Read::End(Some(ws_frames::close_frame(code, "")));
            }
            Err(Violation {
                code,
                reason,
                message,
            }) => {
                metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => reason)
                    .increment(1);
                tracing::debug!(reason, code, "closing a WebSocket that broke the protocol");
                return Read::End(Some(ws_frames::close_frame(code, message)));
            }
        }
    }
}

/// Serves one subscriber: its events out, its pings answered, until either side ends.
async fn serve<IO>(
    mut io: IO,
    early: Bytes,
    state: HttpState,
    filter: Filter,
    last_event_id: Option<String>,
    slot: SubscriberSlot,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let write_timeout = state.stream.write_timeout;
    let events = subscriber_stream(
        state.hub.clone(),
        filter,
        last_event_id,
        state.stream.clone(),
        slot,
    );
    let mut events = std::pin::pin!(events);
    let mut reader = Reader::default();
    reader.buf.extend_from_slice(&early);
    drop(early);
    let mut batch: Vec<Bytes> = Vec::new();
    // Frames a client sent before it saw the `101`.
    if !reader.buf.is_empty() {
        match answer(&mut reader) {
            Read::Answer(replies) => batch = replies,
            Read::End(last) => {
                if let Some(last) = last {
                    let _ = write_all_vectored(&mut io, &mut [IoSlice::new(&last)], write_timeout)
                        .await;
                }
                return;
            }
        }
    }
    loop {
        let mut received = [0u8; 512];
        let mut ending = false;
        tokio::select! {
            read = io.read(&mut received) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                reader.buf.extend_from_slice(&received[..n]);
                match answer(&mut reader) {
                    Read::Answer(replies) => batch.extend(replies),
                    Read::End(last) => {
                        batch.extend(last);
                        ending = true;
                    }
                }
                if reader.buf.is_empty() {
                    // Give the buffer back between the client's rare messages.
                    reader.buf = Default::default();
                }
            }
            out = events.next() => {
                let Some(out) = out else { return };
                let mut next = Some(out);
                let mut items = 0;
                while let Some(out) = next.take() {
                    ending |= matches!(out, Outgoing::Reconnect { .. });
                    batch.extend(encode(&out));
                    record_delivery(&out, "ws");
                    items += 1;
                    if !ending && items < MAX_BATCH {
                        next = events.next().now_or_never().flatten();
                    }
                }
            }
        }
        if !batch.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            let written = write_all_vectored(&mut io, &mut slices, write_timeout).await;
            batch.clear();
            if written.is_err() {
                return;
            }
        }
        if ending {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_one_text_frame_of_the_shared_bytes() {
        use chrono::Utc;
        use loco_discovery_core::index::{EndpointIndex, IndexConfig};
        use loco_discovery_core::rendered::EventHead;
        use loco_discovery_core::slices::{mk_endpoint, mk_slice};
        let hub = crate::http::stream::tests::hub();
        let endpoints = (0..100)
            .map(|n| mk_endpoint(&format!("emu-{n}"), &format!("10.0.0.{n}"), true, false))
            .collect();
        let mut index = EndpointIndex::new(IndexConfig::default());
        let out = index.apply(&mk_slice("loco", "s", "emu", endpoints), Utc::now());
        hub.publish(&out.deltas, "5", Utc::now());
        let snapshot = hub.rendered(&Filter::default(), Utc::now());
        let out = Outgoing::Snapshot {
            kind: "snapshot",
            reason: None,
            id: "5.100".into(),
            snapshot: snapshot.clone(),
        };
        let pieces: Vec<Bytes> = encode(&out).collect();
        assert!(
            pieces
                .iter()
                .any(|p| p.as_ptr() == snapshot.view.instances.as_ptr()),
            "the instances go out as the shared bytes"
        );
        let wire = pieces.concat();
        let expected = snapshot.to_json(Some(EventHead {
            kind: "snapshot",
            id: "5.100",
            reason: None,
        }));
        assert_eq!(wire[..4], [0x81, 127, 0, 0][..]);
        let len = u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize;
        assert_eq!(len, expected.len());
        assert_eq!(&wire[10..], &expected[..]);
    }

    #[test]
    fn application_ping_gets_a_pong_with_the_same_ts() {
        let pong: Value =
            serde_json::from_str(&pong_for(r#"{"type":"__ping","ts":42}"#).unwrap()).unwrap();
        assert_eq!(pong, json!({"type": "__pong", "ts": 42}));
        assert!(pong_for(r#"{"type":"hello"}"#).is_none());
        assert!(pong_for("not json").is_none());
    }
}
