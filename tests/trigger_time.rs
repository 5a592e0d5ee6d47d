//! Change → gateway latency comes only from a trigger-time annotation that moved with the
//! event: writes by anyone but the controller keep the old annotation and are skipped, never
//! measured. One test, one gateway: the metrics recorder is global to the process.

mod support;

use loco_discovery_sim::TRIGGER_TIME_ANNOTATION;
use serde_json::{json, Value};
use support::scrape::*;
use support::*;

const STALE: &str = "2023-06-30T19:41:27Z";
const SAMPLES: &str = "loco_discovery_change_to_gateway_seconds_count";
const SKIPPED: &str = "loco_discovery_trigger_time_skipped_total";

fn slice_url(cluster: &SimCluster, name: &str) -> String {
    cluster.url(&format!(
        "/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices{name}"
    ))
}

/// A merge patch over HTTP, as `kubectl label` and `kubectl patch --type=merge` send it.
async fn merge_patch(cluster: &SimCluster, name: &str, patch: Value) {
    let response = reqwest::Client::new()
        .patch(slice_url(cluster, &format!("/{name}")))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn endpoints(serving: bool) -> Value {
    json!([{
        "addresses": ["10.244.0.30"],
        "conditions": {"ready": true, "serving": serving, "terminating": false},
        "hostname": "loco-loco-emulator-4",
        "targetRef": {"kind": "Pod", "name": "loco-loco-emulator-4", "namespace": NS},
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trigger_time_that_moved_with_the_event_is_measured() {
    let cluster = SimCluster::start().await;
    let svc = [("service", SVC)];
    let created = reqwest::Client::new()
        .post(slice_url(&cluster, ""))
        .json(&json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "emu-a",
                "labels": {"kubernetes.io/service-name": SVC},
                "annotations": {TRIGGER_TIME_ANNOTATION: STALE},
            },
            "addressType": "IPv4",
            "endpoints": endpoints(true),
            "ports": [{"name": "vnc", "port": 5901, "protocol": "TCP"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let gateway = Gateway::start(&cluster).await;
    let listed = Scrape::from(&gateway).await;
    assert_eq!(listed.get(SKIPPED, &[("reason", "relist")]), 1.0);
    assert_eq!(listed.get(SAMPLES, &svc), 0.0);
    let mut stream = gateway.sse("", None).await;
    assert_eq!(stream.next().await.event, "snapshot");

    // A label change (kubectl label) keeps the stale annotation: skipped, not measured.
    let before = Scrape::from(&gateway).await;
    merge_patch(
        &cluster,
        "emu-a",
        json!({"metadata": {"labels": {"team": "x"}}}),
    )
    .await;
    expect_moved(&gateway, &before, SKIPPED, &[("reason", "unchanged")], 1.0).await;
    assert_eq!(moved(&gateway, &before, SAMPLES, &svc).await, 0.0);

    // Endpoints changed by a writer that is not the controller: a delta, without latency.
    let before = Scrape::from(&gateway).await;
    merge_patch(&cluster, "emu-a", json!({"endpoints": endpoints(false)})).await;
    let delta = stream.next().await;
    assert_eq!(delta.event, "InstanceNotReady");
    let delta: Value = serde_json::from_str(&delta.data).unwrap();
    assert_eq!(delta["changeTime"], Value::Null, "{delta}");
    assert_eq!(delta["latencyMs"], Value::Null, "{delta}");
    expect_moved(&gateway, &before, SKIPPED, &[("reason", "unchanged")], 1.0).await;
    assert_eq!(moved(&gateway, &before, SAMPLES, &svc).await, 0.0);

    // The controller writes the endpoints with a new trigger time: measured, on the delta.
    let before = Scrape::from(&gateway).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    merge_patch(
        &cluster,
        "emu-a",
        json!({"metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: now}},
               "endpoints": endpoints(true)}),
    )
    .await;
    let delta = stream.next().await;
    assert_eq!(delta.event, "InstanceReady");
    let delta: Value = serde_json::from_str(&delta.data).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(delta["changeTime"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&now).unwrap()
    );
    let latency = delta["latencyMs"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&latency), "{latency}");
    expect_moved(&gateway, &before, SAMPLES, &svc, 1.0).await;

    // An older trigger time than the one seen is not measured either.
    let before = Scrape::from(&gateway).await;
    merge_patch(
        &cluster,
        "emu-a",
        json!({"metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: STALE}},
               "endpoints": endpoints(false)}),
    )
    .await;
    let delta: Value = serde_json::from_str(&stream.next().await.data).unwrap();
    assert_eq!(delta["latencyMs"], Value::Null, "{delta}");
    expect_moved(&gateway, &before, SKIPPED, &[("reason", "older")], 1.0).await;
    assert_eq!(moved(&gateway, &before, SAMPLES, &svc).await, 0.0);
    let sum = Scrape::from(&gateway)
        .await
        .get("loco_discovery_change_to_gateway_seconds_sum", &svc);
    assert!(sum < 10.0, "a stale annotation was measured: {sum} s");
}
