//! The lego-loco backend's two other discovery routes, in the shapes its frontend reads:
//! `POST /api/instances/refresh` (its discovery panel's refresh button) and
//! `GET /api/instances/discovery-info`.
//!
//! A refresh never lists the API again: the watch already keeps the view current, and a
//! re-list per button press would only add load. It answers the view as `/live` has it,
//! and says whether that view is live or the last one confirmed. Being as cheap as
//! `GET /api/instances/live`, it needs no rate limit of its own (a limit would answer
//! some presses with an error, which the frontend logs as a failed refresh).

use super::query::parse_filter;
use super::reply::error_reply;
use chrono::{DateTime, SecondsFormat, Utc};
use loco_discovery_core::hub::{Filter, Hub, SyncState};
use loco_discovery_core::model::{Instance, Snapshot, Stats};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Reply;

const STATIC_MODE: &str = "static";

/// `POST /api/instances/refresh`: the current instances with a sentence about them.
pub fn refresh(hub: Arc<Hub>, query: String) -> warp::reply::Response {
    let filter = match parse_filter(&query) {
        Ok(filter) => filter,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    let now = Utc::now();
    let snapshot = hub.snapshot(&filter, now);
    let sync = hub.sync_state();
    let message = refresh_message(&hub.info().mode, sync, snapshot.instances.len());
    let body = RefreshReply {
        message,
        instance_count: snapshot.instances.len(),
        mode: &snapshot.mode,
        last_update: snapshot.last_update,
        stats: snapshot.stats,
        instances: &snapshot.instances,
    };
    no_store(warp::reply::json(&body))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefreshReply<'a> {
    message: String,
    instance_count: usize,
    mode: &'a str,
    #[serde(serialize_with = "loco_discovery_core::model::iso_time")]
    last_update: DateTime<Utc>,
    stats: Stats,
    instances: &'a [Instance],
}

fn refresh_message(mode: &str, sync: SyncState, count: usize) -> String {
    let instances = match count {
        1 => "1 instance".to_owned(),
        n => format!("{n} instances"),
    };
    if mode == STATIC_MODE {
        return format!("Discovery refreshed successfully: {instances} from the static file");
    }
    match (sync.ready, sync.synced) {
        (true, true) => format!(
            "Discovery refreshed successfully: {instances}, kept current by a watch on the Kubernetes API"
        ),
        (false, _) => format!("Discovery is starting: {instances} so far, the first list of the Kubernetes API is not in yet"),
        (true, false) => format!(
            "The watch on the Kubernetes API is reconnecting: {instances} as last confirmed at {}",
            sync.confirmed_at.to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
    }
}

/// `GET /api/instances/discovery-info`: namespace, services, watch state and counts.
pub fn discovery_info(hub: Arc<Hub>) -> warp::reply::Response {
    let now = Utc::now();
    no_store(warp::reply::json(&info_body(&hub, now)))
}

fn info_body(hub: &Hub, now: DateTime<Utc>) -> Value {
    let info = hub.info();
    let snapshot = hub.snapshot(&Filter::default(), now);
    let sync = hub.sync_state();
    let kubernetes_mode = info.mode != STATIC_MODE;
    let services = services_of(&info.services, &snapshot);
    let services_found = services
        .values()
        .filter(|s| s["instanceCount"].as_u64().unwrap_or(0) > 0)
        .count();
    let available = kubernetes_mode && sync.ready && sync.synced;
    // While the view is live it is confirmed now; otherwise, when it last was.
    let last_discovery = match (sync.ready, sync.synced) {
        (false, _) => None,
        (true, true) => Some(now),
        (true, false) => Some(sync.confirmed_at),
    };
    let mut discovery = json!({
        "namespace": info.namespace,
        "services": services,
        "discoveryEnabled": available,
        "lastDiscovery": last_discovery.map(|t| t.timestamp_millis()),
        "cachedInstancesCount": snapshot.instances.len(),
        "kubernetes": {
            "available": available,
            "namespace": info.namespace,
            "servicesFound": services_found,
        },
        "mode": info.mode,
        "watch": {
            "ready": sync.ready,
            "synced": sync.synced,
            "lastConfirmed": sync.ready.then(|| sync.confirmed_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        },
    });
    let error = match (kubernetes_mode, sync.ready, sync.synced) {
        (false, _, _) => Some("Kubernetes discovery is off: the instances come from a static file"),
        (true, false, _) => Some("the first list of the Kubernetes API is not in yet"),
        (true, true, false) => {
            Some("the watch on the Kubernetes API is reconnecting; serving the last confirmed view")
        }
        (true, true, true) => None,
    };
    if let Some(error) = error {
        discovery["error"] = json!(error);
    }
    json!({
        "kubernetesDiscovery": discovery,
        "usingAutoDiscovery": kubernetes_mode,
        "fallbackToStatic": !kubernetes_mode,
    })
}

/// Every watched service by name, with its instance counts (`ready + degraded + notReady
/// == total`).
fn services_of(names: &[String], snapshot: &Snapshot) -> Map<String, Value> {
    names
        .iter()
        .map(|name| {
            let stats = Stats::count(snapshot.instances.iter().filter(|i| &i.service == name));
            let entry = json!({
                "name": name,
                "namespace": snapshot.namespace,
                "instanceCount": stats.total,
                "stats": stats,
            });
            (name.clone(), entry)
        })
        .collect()
}

fn no_store(reply: impl Reply) -> warp::reply::Response {
    warp::reply::with_header(reply, "cache-control", "no-store").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use loco_discovery_core::hub::HubInfo;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn hub(mode: &str) -> Hub {
        Hub::new(
            HubInfo {
                mode: mode.into(),
                namespace: "loco".into(),
                services: vec!["emu".into(), "web".into()],
                prefer_zone: None,
            },
            t(0),
        )
    }

    #[test]
    fn a_kubernetes_gateway_before_its_first_list_is_not_available_yet() {
        let body = info_body(&hub("kubernetes-endpointslices"), t(5));
        let d = &body["kubernetesDiscovery"];
        assert_eq!(d["discoveryEnabled"], false);
        assert_eq!(d["lastDiscovery"], Value::Null);
        assert!(d["error"].as_str().unwrap().contains("first list"));
        assert_eq!(body["usingAutoDiscovery"], true);
        assert_eq!(body["fallbackToStatic"], false);
        assert_eq!(d["services"]["web"]["instanceCount"], 0);
    }

    #[test]
    fn a_synced_watch_is_confirmed_now_and_a_broken_one_at_its_last_confirmation() {
        let hub = hub("kubernetes-endpointslices");
        hub.mark_ready(t(10));
        let d = info_body(&hub, t(20))["kubernetesDiscovery"].clone();
        assert_eq!(d["discoveryEnabled"], true);
        assert_eq!(d["kubernetes"]["available"], true);
        assert_eq!(d["lastDiscovery"], t(20).timestamp_millis());
        assert!(d.get("error").is_none());
        hub.mark_unsynced();
        let d = info_body(&hub, t(30))["kubernetesDiscovery"].clone();
        assert_eq!(d["discoveryEnabled"], false);
        assert_eq!(d["lastDiscovery"], t(10).timestamp_millis());
        assert!(d["error"].as_str().unwrap().contains("reconnecting"));
        assert!(
            refresh_message("kubernetes-endpointslices", hub.sync_state(), 1)
                .contains("1 instance as last confirmed")
        );
    }

    #[test]
    fn the_static_mode_is_no_auto_discovery() {
        let hub = hub("static");
        hub.mark_ready(t(1));
        let body = info_body(&hub, t(2));
        assert_eq!(body["usingAutoDiscovery"], false);
        assert_eq!(body["fallbackToStatic"], true);
        assert_eq!(body["kubernetesDiscovery"]["discoveryEnabled"], false);
        assert_eq!(
            body["kubernetesDiscovery"]["kubernetes"]["available"],
            false
        );
    }
}
