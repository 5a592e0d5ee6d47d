//! `GET /api/instances/live`: the whole view as JSON, for first paint and for clients
//! that poll.

use super::query::parse_filter;
use super::reply::error_reply;
use chrono::Utc;
use loco_discovery_core::hub::Hub;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Reply;

pub fn live(hub: Arc<Hub>, query: String) -> warp::reply::Response {
    match parse_filter(&query) {
        Ok(filter) => {
            let snapshot = hub.snapshot(&filter, Utc::now());
            warp::reply::with_header(warp::reply::json(&snapshot), "cache-control", "no-store")
                .into_response()
        }
        Err(message) => error_reply(StatusCode::BAD_REQUEST, message),
    }
}
