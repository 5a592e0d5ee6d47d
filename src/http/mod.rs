//! The gateway's HTTP surface (warp): routes, and the JSON error shape they share.
//!
//! Every route is served both under `/api` and without it, because the lego-loco
//! ingress strips the `/api` prefix while its nginx proxy keeps it.

mod admin;
mod assets;
mod auth;
pub mod conn_limit;
mod cors;
mod discovery;
mod lean_stream;
mod query;
mod reply;
mod security_headers;
pub mod server;
mod shared_body;
mod snapshot;
mod sse;
mod state;
pub mod stream;
mod ws;
mod ws_frames;

pub use query::{parse_filter, parse_stream_query};
pub use reply::error_reply;
pub use state::HttpState;
pub use ws::pong_for;

use std::convert::Infallible;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

/// Matches `/api/<path>` and `/<path>`.
fn api_path(
    segments: &'static [&'static str],
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let full = segments.iter().fold(warp::path("api").boxed(), |f, s| {
        f.and(warp::path(*s)).boxed()
    });
    let bare = segments
        .iter()
        .skip(1)
        .fold(warp::path(segments[0]).boxed(), |f, s| {
            f.and(warp::path(*s)).boxed()
        });
    full.or(bare).unify().and(warp::path::end())
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Probes, and `/metrics` when `with_metrics`: what the admin port serves, and what
/// the main port serves too (metrics only when there is no admin port).
fn probe_routes(
    state: &HttpState,
    with_metrics: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let hub = state.hub.clone();
    let handle = state.metrics.clone();
    let healthz = warp::get().and(api_path(&["healthz"])).map(admin::healthz);
    let readyz = warp::get()
        .and(api_path(&["readyz"]))
        .map(move || admin::readyz(hub.clone()));
    let metrics = warp::get().and(api_path(&["metrics"])).and_then(move || {
        let handle = handle.clone();
        async move {
            if with_metrics {
                Ok(admin::metrics(handle))
            } else {
                Err(warp::reject::not_found())
            }
        }
    });
    healthz.or(readyz).unify().or(metrics).unify()
}

/// The admin port: probes and metrics only.
pub fn admin_routes(
    state: HttpState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    probe_routes(&state, true).recover(handle_rejection).unify()
}

/// Every route of the gateway; `/metrics` only when `with_metrics` (no admin port).
pub fn routes(
    state: HttpState,
    with_metrics: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let probes = probe_routes(&state, with_metrics);
    // Access hook: `auth` right after each protected route's path (a no-op when off).
    let auth = auth::require(&state);
    let cors_origins = state.cors_origins.clone();
    let with_state = warp::any().map(move || state.clone());
    let with_hub = with_state.clone().map(|s: HttpState| s.hub);
    let live = warp::get()
        .and(api_path(&["instances", "live"]))
        .and(auth.clone())
        .and(with_hub.clone())
        .and(raw_query())
        .map(snapshot::live);
    // Path first: a POST-only route must not turn every unknown GET into a 405.
    let refresh = api_path(&["instances", "refresh"])
        .and(warp::post())
        .and(auth.clone())
        .and(with_hub.clone())
        .and(raw_query())
        .map(discovery::refresh);
    let discovery_info = warp::get()
        .and(api_path(&["instances", "discovery-info"]))
        .and(auth.clone())
        .and(with_hub.clone())
        .map(discovery::discovery_info);
    let sse = warp::get()
        .and(api_path(&["instances", "stream"]))
        .and(auth.clone())
        .and(with_state.clone())
        .and(raw_query())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(sse::stream);
    let ws = warp::get()
        .and(api_path(&["instances", "ws"]))
        .and(auth)
        .and(with_state.clone())
        .and(warp::ws())
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<server::PendingUpgrade>())
        .and(raw_query())
        .map(ws::upgrade);
    let assets = warp::get()
        .and(warp::path::full())
        .and_then(|path| async move { assets::serve(path) });
    let routes = live
        .or(refresh)
        .unify()
        .or(discovery_info)
        .unify()
        .or(sse)
        .unify()
        .or(ws)
        .unify()
        .or(probes)
        .unify()
        .or(assets)
        .unify()
        .recover(handle_rejection)
        .unify();
    // CORS hook: preflights first, every reply decorated (nothing when off).
    cors::wrap(cors_origins, routes)
}

async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(reply) = auth::refusal_reply(&rejection) {
        return Ok(reply);
    }
    let reply = if rejection.is_not_found() {
        error_reply(StatusCode::NOT_FOUND, "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error_reply(StatusCode::BAD_REQUEST, bad_request_sentence(&rejection))
    };
    Ok(reply)
}

/// A sentence for a client error that warp rejected before a handler ran (never Rust
/// debug text).
fn bad_request_sentence(rejection: &Rejection) -> String {
    if rejection
        .find::<warp::ws::MissingConnectionUpgrade>()
        .is_some()
    {
        return "this is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket"
            .into();
    }
    if let Some(header) = rejection.find::<warp::reject::MissingHeader>() {
        return format!("the request needs a {} header", header.name());
    }
    if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        return format!("the {} header has an invalid value", header.name());
    }
    if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        return "malformed query string".into();
    }
    "bad request".into()
}
