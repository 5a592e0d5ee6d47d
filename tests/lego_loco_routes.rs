//! The lego-loco backend's other discovery routes, `POST /api/instances/refresh` and
//! `GET /api/instances/discovery-info`, and how a terminating pod reads in its cards,
//! against a real gateway over HTTP.

mod support;

use loco_discovery::config::DiscoveryMode;
use loco_discovery::GatewayConfig;
use serde_json::Value;
use std::time::Duration;
use support::{eventually, pod, slice, Gateway, SimCluster, NS, SVC};

const LIMIT: Duration = Duration::from_secs(10);

async fn post(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn refresh_answers_the_instances_of_live_with_a_message_and_a_count() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    let gateway = Gateway::start(&cluster).await;
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["total"] == 2
    })
    .await
    .unwrap();
    for path in ["/api/instances/refresh", "/instances/refresh"] {
        let (code, body) = post(&gateway.url(path)).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Discovery refreshed successfully"),
            "{body}"
        );
        assert_eq!(body["instanceCount"], 2);
        let live = gateway.live("").await;
        assert_eq!(
            body["instances"], live["instances"],
            "the same instances as /live"
        );
        assert_eq!(body["mode"], "kubernetes-endpointslices");
    }
    // The frontend's button sends POST; a GET is no refresh.
    let response = reqwest::get(gateway.url("/api/instances/refresh"))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    // Filters work as on /live.
    let (_, body) = post(&gateway.url("/api/instances/refresh?status=ready")).await;
    assert_eq!(body["instanceCount"], 1);
}

#[tokio::test]
async fn discovery_info_names_the_namespace_services_watch_state_and_counts() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice(
        "emu-a",
        vec![pod(0, true), pod(1, true), pod(2, false)],
    ));
    let config = GatewayConfig::new(NS, vec![SVC.into(), "spare".into()]);
    let gateway = Gateway::start_with(&cluster, config).await;
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["total"] == 3
    })
    .await
    .unwrap();
    for path in ["/api/instances/discovery-info", "/instances/discovery-info"] {
        let before = chrono::Utc::now().timestamp_millis();
        let (code, body) = get(&gateway.url(path)).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(body["usingAutoDiscovery"], true);
        assert_eq!(body["fallbackToStatic"], false);
        let d = &body["kubernetesDiscovery"];
        assert_eq!(d["namespace"], NS);
        assert_eq!(d["discoveryEnabled"], true);
        assert_eq!(d["cachedInstancesCount"], 3);
        assert!(d["lastDiscovery"].as_i64().unwrap() >= before, "{d}");
        assert_eq!(d["kubernetes"]["available"], true);
        assert_eq!(d["kubernetes"]["namespace"], NS);
        assert_eq!(
            d["kubernetes"]["servicesFound"], 1,
            "spare has no endpoints"
        );
        let emu = &d["services"][SVC];
        assert_eq!(emu["name"], SVC);
        assert_eq!(emu["instanceCount"], 3);
        assert_eq!(emu["stats"]["ready"], 2);
        assert_eq!(emu["stats"]["notReady"], 1);
        assert_eq!(d["services"]["spare"]["instanceCount"], 0);
        assert_eq!(d["watch"]["synced"], true);
        assert!(d.get("error").is_none(), "{d}");
    }

    // The API goes away: the view stays, but it is no longer confirmed.
    cluster.stop().await;
    eventually(LIMIT, || async {
        get(&gateway.url("/api/instances/discovery-info")).await.1["kubernetesDiscovery"]
            ["discoveryEnabled"]
            == false
    })
    .await
    .unwrap();
    let (_, body) = get(&gateway.url("/api/instances/discovery-info")).await;
    let d = &body["kubernetesDiscovery"];
    assert!(d["error"].as_str().unwrap().contains("reconnecting"), "{d}");
    assert_eq!(d["cachedInstancesCount"], 3);
    let (code, refreshed) = post(&gateway.url("/api/instances/refresh")).await;
    assert_eq!(code, 200, "a refresh still answers the last confirmed view");
    assert!(
        refreshed["message"]
            .as_str()
            .unwrap()
            .contains("reconnecting"),
        "{refreshed}"
    );
    assert_eq!(refreshed["instanceCount"], 3);
}

#[tokio::test]
async fn in_static_mode_there_is_no_auto_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("instances.json");
    std::fs::write(&file, r#"[{"id": "instance-0", "address": "10.1.0.1"}]"#).unwrap();
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.mode = DiscoveryMode::Static;
    config.static_file = Some(file);
    let (url, stop) = support::start_without_cluster(config).await;
    eventually(LIMIT, || async {
        get(&format!("{url}/api/instances/discovery-info")).await.1["kubernetesDiscovery"]
            ["cachedInstancesCount"]
            == 1
    })
    .await
    .unwrap();
    let (_, body) = get(&format!("{url}/api/instances/discovery-info")).await;
    assert_eq!(body["usingAutoDiscovery"], false);
    assert_eq!(body["fallbackToStatic"], true);
    let d = &body["kubernetesDiscovery"];
    assert_eq!(d["discoveryEnabled"], false);
    assert_eq!(d["kubernetes"]["available"], false);
    assert!(d["error"].as_str().unwrap().contains("static"), "{d}");
    let (code, refreshed) = post(&format!("{url}/api/instances/refresh")).await;
    assert_eq!(code, 200);
    assert_eq!(refreshed["instanceCount"], 1);
    stop.cancel();
}

#[tokio::test]
async fn a_terminating_pod_is_degraded_for_the_cards_and_offline_for_new_clients() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let gateway = Gateway::start(&cluster).await;
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["ready"] == 2
    })
    .await
    .unwrap();
    let mut sse = gateway.sse("", None).await;
    assert_eq!(sse.next().await.event, "snapshot");
    let mut terminating = pod(1, false);
    terminating.conditions.as_mut().unwrap().terminating = Some(true);
    cluster.put(&slice("emu-a", vec![pod(0, true), terminating]));

    let event = sse.next().await;
    assert_eq!(event.event, "InstanceNotReady");
    let delta: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(delta["reason"], "terminating");
    let words = |i: &Value| {
        (
            i["status"].as_str().unwrap().to_owned(),
            i["state"].as_str().unwrap().to_owned(),
            i["ready"].as_bool().unwrap(),
            i["health"]["details"].as_str().unwrap().to_owned(),
        )
    };
    let expected = (
        "degraded".to_owned(),
        "offline".to_owned(),
        false,
        "terminating".to_owned(),
    );
    assert_eq!(words(&delta["instance"]), expected, "on the stream");
    let live = gateway.live("").await;
    assert_eq!(words(&live["instances"][1]), expected, "on /live");
    assert_eq!(live["stats"]["notReady"], 1);
    assert_eq!(live["stats"]["degraded"], 0, "stats count states");
    // The filters speak the gateway's states.
    let offline = gateway.live("?status=offline").await;
    assert_eq!(offline["instances"].as_array().unwrap().len(), 1);
    let degraded = gateway.live("?status=degraded").await;
    assert_eq!(degraded["instances"].as_array().unwrap().len(), 0);
}
