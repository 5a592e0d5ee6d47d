//! The gateway, through kube-rs, against the simulated API server on loopback.

mod support;

use loco_discovery_sim::scenario::{sync_into_store, EmulatorCluster, ScenarioConfig};
use loco_discovery_sim::ResourceKind;
use serde_json::json;
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn instances_appear_turn_not_ready_and_disappear() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    assert!(gateway.view().await.is_empty());

    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let took = eventually(LIMIT, || async { gateway.view().await.len() == 2 })
        .await
        .unwrap();
    println!("create seen after {took:?}");

    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    let took = eventually(LIMIT, || async {
        gateway.view().await.get("instance-1").map(|v| v.0.as_str()) == Some("booting")
    })
    .await
    .unwrap();
    println!("not-ready seen after {took:?}");

    cluster.remove("emu-a");
    let took = eventually(LIMIT, || async { gateway.view().await.is_empty() })
        .await
        .unwrap();
    println!("delete seen after {took:?}");
}

#[tokio::test]
async fn live_envelope_matches_the_frontend_contract() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice(
        "emu-a",
        vec![pod(2, true), pod(0, true), pod(1, false)],
    ));
    let gateway = Gateway::start(&cluster).await;
    let live = gateway.live("").await;
    assert!(live["mode"].as_str().unwrap().contains("kubernetes"));
    assert_eq!(live["discoveryMode"], live["mode"]);
    assert_eq!(live["serviceName"], SVC);
    assert_eq!(live["namespace"], NS);
    let stats = &live["stats"];
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["ready"], 2);
    assert_eq!(stats["notReady"], 1);
    assert_eq!(live["summary"]["total"], 3);
    let ids: Vec<&str> = live["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["instance-0", "instance-1", "instance-2"]);
    let last_update =
        chrono::DateTime::parse_from_rfc3339(live["lastUpdate"].as_str().unwrap()).unwrap();
    let age = chrono::Utc::now().signed_duration_since(last_update);
    assert!(age.num_seconds() < 40, "lastUpdate is {age} old");
    // Without the /api prefix too (the ingress strips it).
    let bare: serde_json::Value = reqwest::get(gateway.url("/instances/live"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bare["stats"]["total"], 3);
}

#[tokio::test]
async fn bad_filters_get_a_json_400_and_unknown_routes_a_json_404() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let response = reqwest::get(gateway.url("/api/instances/live?status=sleepy"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("sleepy"));
    let response = reqwest::get(gateway.url("/api/nothing")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        404
    );
}

#[tokio::test]
async fn readyz_waits_for_the_first_complete_list() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    cluster
        .sim
        .faults
        .fail_requests(503, Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let config = loco_discovery::GatewayConfig::new(NS, vec![SVC.into()]);
    tokio::spawn(loco_discovery::run(
        config,
        cluster.client(),
        listener,
        stop.clone(),
    ));
    let url = format!("http://{addr}");
    eventually(LIMIT, || async {
        reqwest::get(format!("{url}/healthz")).await.is_ok()
    })
    .await
    .unwrap();
    let readyz = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503, "not ready while the API fails");
    assert_eq!(
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    eventually(LIMIT, || async {
        reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();
    let live: serde_json::Value = reqwest::get(format!("{url}/api/instances/live"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["stats"]["total"], 1);
    stop.cancel();
}

#[tokio::test]
async fn view_equals_the_cluster_after_churn_with_a_cut_watch_and_a_410() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut events = gateway.sse("", None).await;
    let mut emulators = EmulatorCluster::new(ScenarioConfig {
        namespace: NS.into(),
        service: SVC.into(),
        replicas: 9,
        seed: 11,
        pace: Duration::from_millis(1),
        publish_not_ready_addresses: true,
    });
    let start = chrono::Utc::now();
    for step in 0..240i64 {
        let now = start + chrono::Duration::seconds(step);
        if emulators.step(now) {
            sync_into_store(cluster.store(), &emulators).unwrap();
        }
        match step {
            80 => cluster.sim.faults.cut_watches(),
            160 => {
                // The watch goes down and cannot come back for a while...
                cluster
                    .sim
                    .faults
                    .fail_requests(503, Duration::from_millis(300));
                cluster.sim.faults.cut_watches();
            }
            // ...changes happen, and the history is gone: the watch's resourceVersion is
            // now too old, so the gateway must re-list.
            170 => cluster.sim.faults.forget_history(),
            _ => {}
        }
        if step % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(!cluster.truth(SVC).is_empty());
    let result = eventually(LIMIT, || async {
        gateway.view().await == cluster.truth(SVC)
    })
    .await;
    assert!(
        result.is_ok(),
        "gateway {:?}\n   truth {:?}",
        gateway.view().await,
        cluster.truth(SVC)
    );
    // The re-list's net changes carry the ids of a list, not of a watch event.
    let mut relisted = false;
    while let Some(event) = events.next_within(Duration::from_millis(300)).await {
        relisted |= event.id.starts_with("list-");
    }
    assert!(relisted, "no re-list after the 410");
}

#[tokio::test]
async fn a_malformed_object_is_skipped_and_the_rest_still_flows() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let broken = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "broken", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": SVC}},
        "addressType": "IPv4",
        "endpoints": "not a list",
    });
    cluster
        .store()
        .create(ResourceKind::EndpointSlice, NS, broken)
        .unwrap();
    let mut fqdn = slice("fqdn", vec![pod(7, true)]);
    fqdn.address_type = "FQDN".into();
    cluster.put(&fqdn);
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    eventually(LIMIT, || async { gateway.view().await.len() == 1 })
        .await
        .unwrap();
    assert!(gateway.view().await.contains_key("instance-0"));
    // The watch survived: later changes still arrive.
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    eventually(LIMIT, || async { gateway.view().await.len() == 2 })
        .await
        .unwrap();
}

#[tokio::test]
async fn several_services_in_one_gateway_and_filters_on_live() {
    let cluster = SimCluster::start().await;
    let config = loco_discovery::GatewayConfig::new(NS, vec![SVC.into(), "web".into()]);
    let gateway = Gateway::start_with(&cluster, config).await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    cluster.put(&loco_discovery_core::slices::mk_slice(
        NS,
        "web-a",
        "web",
        vec![loco_discovery_core::slices::mk_endpoint(
            "web-0", "10.9.0.1", true, false,
        )],
    ));
    cluster.put(&loco_discovery_core::slices::mk_slice(
        NS,
        "other-a",
        "other",
        vec![loco_discovery_core::slices::mk_endpoint(
            "other-0", "10.9.0.2", true, false,
        )],
    ));
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["total"] == 3
    })
    .await
    .unwrap();
    assert_eq!(
        gateway.live("").await["serviceName"],
        "loco-loco-emulator,web"
    );
    assert_eq!(gateway.live("?service=web").await["stats"]["total"], 1);
    assert_eq!(gateway.live("?status=booting").await["stats"]["total"], 1);
    assert_eq!(
        gateway.live(&format!("?service={SVC}&status=ready")).await["instances"][0]["podName"],
        "loco-loco-emulator-0"
    );
}
