//! Liveness and readiness for Kubernetes probes, and the Prometheus exposition.

use loco_discovery_core::hub::Hub;
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Reply;

/// Alive as long as the process serves HTTP.
pub fn healthz() -> warp::reply::Response {
    warp::reply::json(&json!({ "status": "ok" })).into_response()
}

/// Ready once the first complete list of EndpointSlices is in, so a new replica gets no
/// traffic while its view is still empty. A replica whose watch has failed since stays
/// ready: it serves the last known state, and says so with `"synced": false` and the
/// time of its last confirmation (the `loco_discovery_synced` gauge says the same).
pub fn readyz(hub: Arc<Hub>) -> warp::reply::Response {
    let synced = hub.is_synced();
    // Like the snapshot's lastUpdate: a healthy watch confirms the view continuously.
    let last_confirmed = iso(if synced {
        chrono::Utc::now()
    } else {
        hub.confirmed_at()
    });
    if hub.is_ready() {
        warp::reply::json(&json!({
            "status": "ready",
            "synced": synced,
            "lastConfirmed": last_confirmed,
        }))
        .into_response()
    } else {
        let body = warp::reply::json(&json!({
            "status": "waiting for the first list",
            "synced": synced,
        }));
        warp::reply::with_status(body, StatusCode::SERVICE_UNAVAILABLE).into_response()
    }
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The Prometheus text exposition of every metric of this process.
pub fn metrics(
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> warp::reply::Response {
    let body = handle.map(|h| h.render()).unwrap_or_default();
    warp::reply::with_header(
        body,
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response()
}
