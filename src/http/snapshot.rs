//! `GET /api/instances/live`: the whole view as JSON, for first paint and for clients
//! that poll. The instances are serialized once per view and filter and shared by every
//! answer (see [`loco_discovery_core::rendered`]).

use super::query::parse_filter;
use super::reply::error_reply;
use super::shared_body::SharedBody;
use chrono::Utc;
use loco_discovery_core::hub::Hub;
use std::sync::Arc;
use warp::http::StatusCode;

pub fn live(hub: Arc<Hub>, query: String) -> warp::reply::Response {
    match parse_filter(&query) {
        Ok(filter) => {
            let snapshot = hub.rendered(&filter, Utc::now());
            let mut response = SharedBody::whole(snapshot.pieces(None).into());
            let headers = response.headers_mut();
            headers.insert("content-type", "application/json".parse().expect("static"));
            headers.insert("cache-control", "no-store".parse().expect("static"));
            response
        }
        Err(message) => error_reply(StatusCode::BAD_REQUEST, message),
    }
}
