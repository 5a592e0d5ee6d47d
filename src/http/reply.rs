//! The JSON error shape every route shares.

use serde_json::json;
use warp::http::StatusCode;
use warp::Reply;

/// A JSON error body: `{"error": "...", "code": N}`.
pub fn error_reply(code: StatusCode, message: impl Into<String>) -> warp::reply::Response {
    let body = json!({ "error": message.into(), "code": code.as_u16() });
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

pub(super) fn too_many_subscribers() -> warp::reply::Response {
    let reply = error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many stream subscribers; retry later",
    );
    warp::reply::with_header(reply, "retry-after", "5").into_response()
}
