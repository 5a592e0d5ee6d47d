//! `GET /api/instances/ws`: the same events as the SSE route, one JSON text frame each,
//! for services and for the lego-loco frontend's WebSocket hook (which sends
//! `{"type":"__ping"}` and expects `{"type":"__pong"}`).

use super::query::parse_stream_query;
use super::reply::{error_reply, too_many_subscribers};
use super::state::HttpState;
use super::stream::{record_delivery, subscriber_stream, Outgoing, SubscriberSlot};
use futures::{SinkExt, StreamExt};
use loco_discovery_core::hub::Filter;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

/// The largest WebSocket message (and frame) a client may send: only small
/// `{"type":"__ping"}` messages are expected. Past it the connection is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

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

pub fn upgrade(state: HttpState, ws: Ws, query: String) -> warp::reply::Response {
    let (filter, last_event_id) = match parse_stream_query(&query, None) {
        Ok(parsed) => parsed,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    let Some(slot) = state.admit("ws") else {
        return too_many_subscribers();
    };
    ws.max_frame_size(MAX_CLIENT_MESSAGE)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, filter, last_event_id, slot))
        .into_response()
}

async fn serve(
    socket: WebSocket,
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
                Some(Ok(message)) if message.is_text() => {
                    if let Some(pong) = message.to_str().ok().and_then(pong_for) {
                        if !matches!(timeout(&state, sink.send(Message::text(pong))).await, Some(Ok(()))) {
                            return;
                        }
                    }
                }
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if too_big(&error) {
                        let close = Message::close_with(1009u16, "message too big");
                        let _ = timeout(&state, sink.send(close)).await;
                    }
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
    let _ = timeout(&state, sink.send(Message::close())).await;
}

/// Sends one outgoing item; after a `Reconnect`, the close frame too.
async fn deliver<S>(sink: &mut S, out: Outgoing) -> Result<(), warp::Error>
where
    S: futures::Sink<Message, Error = warp::Error> + Unpin,
{
    match out {
        Outgoing::Event { data, frame, .. } => {
            let sent = sink.send(Message::text(&*data)).await;
            record_delivery(&frame, "ws");
            sent
        }
        Outgoing::Heartbeat => sink.send(Message::ping("heartbeat")).await,
        Outgoing::Reconnect { data, .. } => {
            let _ = sink.send(Message::text(&*data)).await;
            sink.send(Message::close_with(1012u16, "service restart"))
                .await
        }
    }
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

/// Whether a read failed because the client's frame or message passed the cap.
fn too_big(error: &warp::Error) -> bool {
    use std::error::Error as _;
    matches!(
        error
            .source()
            .and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_ping_gets_a_pong_with_the_same_ts() {
        let pong: Value =
            serde_json::from_str(&pong_for(r#"{"type":"__ping","ts":42}"#).unwrap()).unwrap();
        assert_eq!(pong, json!({"type": "__pong", "ts": 42}));
        assert!(pong_for(r#"{"type":"hello"}"#).is_none());
        assert!(pong_for("not json").is_none());
    }
}
