//! `GET /api/instances/ws`: the same events as the SSE route, one JSON text frame each,
//! for services and for the lego-loco frontend's WebSocket hook (which sends
//! `{"type":"__ping"}` and expects `{"type":"__pong"}`).

use super::query::parse_stream_query;
use super::reply::{error_reply, too_many_subscribers};
use super::server::PendingUpgrade;
use super::state::HttpState;
use super::stream::{record_delivery, subscriber_stream, Outgoing, SubscriberSlot};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use loco_discovery_core::hub::Filter;
use loco_discovery_core::rendered::EventHead;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame as WsFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use warp::http::StatusCode;
use warp::ws::Ws;

/// The largest WebSocket message (and frame) a client may send: only small
/// `{"type":"__ping"}` messages are expected. Past it the connection is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// The WebSocket settings of a subscriber, who only sends small pings: a 4 KiB read
/// buffer instead of tungstenite's 128 KiB (allocated up front for every connection),
/// and the size caps above.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(MAX_CLIENT_MESSAGE)
        .write_buffer_size(0)
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
}

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
/// it cannot size tungstenite's buffers) and serves the subscriber on the upgraded socket.
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
    let Some(on_upgrade) = pending.and_then(|p| p.take()) else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded to a WebSocket",
        );
    };
    let Some(slot) = state.admit("ws") else {
        return too_many_subscribers();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let socket =
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
                serve(socket, state, filter, last_event_id, slot).await;
            }
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
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

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn serve(
    socket: Socket,
    state: HttpState,
    filter: Filter,
    last_event_id: Option<String>,
    slot: SubscriberSlot,
) {
    let (mut sink, mut incoming) = socket.split();
    let events = subscriber_stream(
        state.hub.clone(),
        filter,
        last_event_id,
        state.stream.clone(),
        slot,
    );
    let mut events = std::pin::pin!(events);
    loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(pong) = pong_for(text.as_str()) {
                        if !matches!(timeout(&state, sink.send(Message::text(pong))).await, Some(Ok(()))) {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the reply to the peer's close; this sends it.
                    let _ = timeout(&state, sink.close()).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => {
                    closed("message_too_big");
                    let close = close_frame(1009, "message too big");
                    let _ = timeout(&state, sink.send(close)).await;
                    return;
                }
                Some(Err(error)) => {
                    closed(close_reason(&error));
                    // A protocol error: tungstenite queued a close frame (1002, 1007).
                    let _ = timeout(&state, sink.close()).await;
                    return;
                }
                None => return,
            },
            out = events.next() => {
                let Some(out) = out else { break };
                let reconnect = matches!(out, Outgoing::Reconnect { .. });
                match timeout(&state, deliver(&mut sink, out)).await {
                    Some(Ok(())) if !reconnect => {}
                    _ => return,
                }
            }
        }
    }
    let _ = timeout(&state, sink.send(Message::Close(None))).await;
}

/// The largest frame of a fragmented snapshot. tungstenite keeps its write buffer at the
/// largest frame it has written, so a snapshot sent as one frame would keep a buffer of
/// the whole view's size in every connection.
const SNAPSHOT_FRAME: usize = 8 * 1024;

/// A snapshot as one text message in frames of at most [`SNAPSHOT_FRAME`] bytes: the
/// head, the shared instances in slices (no copy), and the closing brace.
fn snapshot_frames(out: &Outgoing) -> Vec<Message> {
    let Outgoing::Snapshot {
        kind,
        reason,
        id,
        snapshot,
    } = out
    else {
        return Vec::new();
    };
    let head = EventHead {
        kind,
        id,
        reason: *reason,
    };
    let instances = &snapshot.view.instances;
    let mut payloads = vec![Bytes::from(snapshot.head(Some(head)))];
    payloads.extend(
        (0..instances.len())
            .step_by(SNAPSHOT_FRAME)
            .map(|at| instances.slice(at..(at + SNAPSHOT_FRAME).min(instances.len()))),
    );
    payloads.push(Bytes::from_static(b"}"));
    let last = payloads.len() - 1;
    payloads
        .into_iter()
        .enumerate()
        .map(|(n, payload)| {
            let opcode = if n == 0 { Data::Text } else { Data::Continue };
            Message::Frame(WsFrame::message(payload, OpCode::Data(opcode), n == last))
        })
        .collect()
}

/// A JSON text message from bytes that are UTF-8 (serde_json's output).
fn text(json: &Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(json.clone()).expect("JSON is UTF-8"))
}

/// Sends one outgoing item; after a `Reconnect`, the close frame too.
async fn deliver<S>(sink: &mut S, out: Outgoing) -> Result<(), WsError>
where
    S: futures::Sink<Message, Error = WsError> + Unpin,
{
    let sent = match &out {
        Outgoing::Frame(frame) => sink.send(text(&frame.json)).await,
        Outgoing::Left { data, .. } => sink.send(text(data)).await,
        Outgoing::Snapshot { .. } => {
            for frame in snapshot_frames(&out) {
                sink.feed(frame).await?;
            }
            sink.flush().await
        }
        Outgoing::Heartbeat => sink.send(Message::Ping("heartbeat".into())).await,
        Outgoing::Reconnect { data, .. } => {
            let _ = sink.send(text(data)).await;
            sink.send(close_frame(1012, "service restart")).await
        }
    };
    record_delivery(&out, "ws");
    sent
}

/// Why a WebSocket read failed, as a label of `connections_closed_total`.
fn close_reason(error: &WsError) -> &'static str {
    match error {
        WsError::Protocol(_) | WsError::Utf8(_) => "protocol_error",
        WsError::Capacity(_) => "message_too_big",
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => "client_closed",
        _ => "other",
    }
}

/// Counts a WebSocket connection the gateway ended because of what the client sent.
fn closed(reason: &'static str) {
    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
    tracing::debug!(reason, "WebSocket closed");
}

/// `send`, or `None` (counted) when the socket accepted nothing for the write timeout.
async fn timeout<T>(state: &HttpState, send: impl std::future::Future<Output = T>) -> Option<T> {
    let sent = tokio::time::timeout(state.stream.write_timeout, send)
        .await
        .ok();
    if sent.is_none() {
        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "write_stalled")
            .increment(1);
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_one_text_message_in_small_frames_of_the_shared_bytes() {
        use chrono::Utc;
        use loco_discovery_core::hub::{Hub, HubInfo};
        use loco_discovery_core::index::{EndpointIndex, IndexConfig};
        use loco_discovery_core::slices::{mk_endpoint, mk_slice};
        let hub = Hub::new(
            HubInfo {
                mode: "kubernetes-endpointslices".into(),
                namespace: "loco".into(),
                services: vec!["emu".into()],
                prefer_zone: None,
            },
            Utc::now(),
        );
        let endpoints = (0..100)
            .map(|n| mk_endpoint(&format!("emu-{n}"), &format!("10.0.0.{n}"), true, false))
            .collect();
        let mut index = EndpointIndex::new(IndexConfig::default());
        let out = index.apply(&mk_slice("loco", "s", "emu", endpoints), Utc::now());
        hub.publish(&out.deltas, "5", Utc::now());
        let snapshot = hub.rendered(&Filter::default(), Utc::now());
        assert!(snapshot.view.instances.len() > 4 * SNAPSHOT_FRAME);
        let out = Outgoing::Snapshot {
            kind: "snapshot",
            reason: None,
            id: "5.100".into(),
            snapshot: snapshot.clone(),
        };
        let frames: Vec<WsFrame> = snapshot_frames(&out)
            .into_iter()
            .map(|m| match m {
                Message::Frame(frame) => frame,
                other => panic!("{other:?}"),
            })
            .collect();
        let whole: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
        let head = EventHead {
            kind: "snapshot",
            id: "5.100",
            reason: None,
        };
        let expected = snapshot.to_json(Some(head));
        assert_eq!(whole, expected);
        let parsed: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(parsed["instances"].as_array().unwrap().len(), 100);
        assert!(frames.iter().all(|f| f.payload().len() <= SNAPSHOT_FRAME));
        let last = frames.len() - 1;
        for (n, frame) in frames.iter().enumerate() {
            let opcode = if n == 0 { Data::Text } else { Data::Continue };
            assert_eq!(frame.header().opcode, OpCode::Data(opcode));
            assert_eq!(frame.header().is_final, n == last);
        }
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
