//! `GET /api/instances/stream`: Server-Sent Events for `EventSource`, `curl -N` and
//! any HTTP client.

use super::query::parse_stream_query;
use super::reply::{error_reply, too_many_subscribers};
use super::state::HttpState;
use super::stream::{jittered, record_delivery, subscriber_stream, Outgoing};
use futures::StreamExt;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::sse::Event;
use warp::Reply;

fn to_event(out: Outgoing) -> Event {
    match out {
        Outgoing::Event {
            id,
            event,
            data,
            frame,
        } => {
            record_delivery(&frame, "sse");
            Event::default().id(id).event(event).data(&*data)
        }
        Outgoing::Heartbeat => Event::default().comment("heartbeat"),
        Outgoing::Reconnect { retry, data } => Event::default()
            .retry(retry)
            .event("reconnect")
            .data(&*data),
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
    let hello = Event::default()
        .retry(jittered(state.stream.retry))
        .comment("loco-discovery stream");
    let events = subscriber_stream(
        state.hub.clone(),
        filter,
        query_id,
        state.stream.clone(),
        slot,
    )
    .map(to_event);
    let body = futures::stream::once(async move { hello })
        .chain(events)
        .map(Ok::<_, Infallible>);
    let reply = warp::sse::reply(sync_wrapper::SyncStream::new(body));
    let mut response = reply.into_response();
    let headers = response.headers_mut();
    headers.insert("x-accel-buffering", "no".parse().expect("static header"));
    headers.insert("cache-control", "no-cache".parse().expect("static header"));
    response
}
