//! `GET /api/instances/stream`: Server-Sent Events for `EventSource`, `curl -N` and
//! any HTTP client.
//!
//! Frames are encoded here rather than by warp's `sse` module so that what is shared
//! stays shared: a published delta is encoded once for every subscriber (kept in the
//! frame), and a snapshot's instances go out as the view's shared bytes.

use super::query::parse_stream_query;
use super::reply::{error_reply, too_many_subscribers};
use super::shared_body::SharedBody;
use super::state::HttpState;
use super::stream::{jittered, record_delivery, subscriber_stream, Outgoing, Pieces};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use loco_discovery_core::hub::Frame;
use std::time::Duration;
use warp::http::StatusCode;

/// One event: `event:` and `data:` lines (the data is one line of JSON), then `id:`.
fn event(kind: &str, data: &[u8], id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(kind.len() + data.len() + id.len() + 20);
    for part in [
        b"event:",
        kind.as_bytes(),
        b"\ndata:",
        data,
        b"\nid:",
        id.as_bytes(),
    ] {
        out.put_slice(part);
    }
    out.put_slice(b"\n\n");
    out.freeze()
}

/// A published frame's event, encoded by the first SSE subscriber to send it.
fn frame_event(frame: &Frame) -> Bytes {
    frame
        .sse
        .get_or_init(|| event(frame.kind.as_str(), &frame.json, &frame.id))
        .clone()
}

fn retry_line(retry: Duration) -> String {
    format!("retry:{}\n", retry.as_millis())
}

/// The bytes of one outgoing item, in pieces that are sent as they are.
fn encode(out: &Outgoing) -> Pieces {
    match out {
        Outgoing::Frame(frame) => frame_event(frame).into(),
        Outgoing::Left { frame, data } => event("InstanceRemoved", data, &frame.id).into(),
        Outgoing::Snapshot {
            kind, id, snapshot, ..
        } => {
            let mut start = format!("event:{kind}\ndata:").into_bytes();
            start.extend(out.snapshot_head());
            vec![
                Bytes::from(start),
                snapshot.view.instances.clone(),
                Bytes::from(format!("}}\nid:{id}\n\n")),
            ]
            .into()
        }
        Outgoing::Heartbeat => Bytes::from_static(b":heartbeat\n\n").into(),
        Outgoing::Reconnect { retry, data } => {
            let mut end = b"\n".to_vec();
            end.extend(retry_line(*retry).into_bytes());
            end.push(b'\n');
            vec![
                Bytes::from_static(b"event:reconnect\ndata:"),
                data.clone(),
                Bytes::from(end),
            ]
            .into()
        }
    }
}

pub fn stream(
    state: HttpState,
    query: String,
    last_event_id: Option<String>,
) -> warp::reply::Response {
    let (filter, query_id) = match parse_stream_query(&query, last_event_id.as_deref()) {
        Ok(parsed) => parsed,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    let Some(slot) = state.admit("sse") else {
        return too_many_subscribers();
    };
    // The first frame tells EventSource how long to wait before reconnecting; each client
    // gets its own delay.
    let hello = Bytes::from(format!(
        ":loco-discovery stream\n{}\n",
        retry_line(jittered(state.stream.retry))
    ));
    let events = subscriber_stream(
        state.hub.clone(),
        filter,
        query_id,
        state.stream.clone(),
        slot,
    )
    .flat_map(|out| {
        let pieces = encode(&out);
        record_delivery(&out, "sse");
        futures::stream::iter(pieces)
    });
    let body = futures::stream::once(async move { hello }).chain(events);
    let mut response = SharedBody::response(body, None);
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ] {
        headers.insert(name, value.parse().expect("static header"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_data_line_with_its_name_and_id() {
        assert_eq!(
            &event("InstanceAdded", br#"{"a":1}"#, "7.1")[..],
            b"event:InstanceAdded\ndata:{\"a\":1}\nid:7.1\n\n"
        );
        let reconnect = encode(&Outgoing::Reconnect {
            retry: Duration::from_millis(2500),
            data: Bytes::from_static(b"{}"),
        })
        .collect::<Vec<_>>()
        .concat();
        assert_eq!(reconnect, b"event:reconnect\ndata:{}\nretry:2500\n\n");
    }
}
