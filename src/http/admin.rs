//! Liveness and readiness for Kubernetes probes.

use crate::hub::Hub;
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Reply;

/// Alive as long as the process serves HTTP.
pub fn healthz() -> warp::reply::Response {
    warp::reply::json(&json!({ "status": "ok" })).into_response()
}

/// Ready once the first complete list of EndpointSlices is in, so a new replica gets no
/// traffic while its view is still empty.
pub fn readyz(hub: Arc<Hub>) -> warp::reply::Response {
    if hub.is_ready() {
        warp::reply::json(&json!({ "status": "ready" })).into_response()
    } else {
        let body = warp::reply::json(&json!({ "status": "waiting for the first list" }));
        warp::reply::with_status(body, StatusCode::SERVICE_UNAVAILABLE).into_response()
    }
}
