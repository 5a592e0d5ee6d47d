//! Discovery modes (Endpoints, static file), instance metadata and active health checks,
//! against the simulated API, real files and local HTTP health servers.

mod support;

use loco_discovery::config::DiscoveryMode;
use loco_discovery::probe::ProbeConfig;
use loco_discovery::GatewayConfig;
use loco_discovery_sim::ResourceKind;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(10);

fn address(n: u32) -> Value {
    json!({"ip": format!("10.0.0.{}", n + 10), "hostname": format!("{SVC}-{n}"),
           "targetRef": {"kind": "Pod", "name": format!("{SVC}-{n}"), "namespace": NS}})
}

fn endpoints_object(ready: &[u32], not_ready: &[u32]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": SVC, "namespace": NS},
        "subsets": [{
            "addresses": ready.iter().map(|n| address(*n)).collect::<Vec<_>>(),
            "notReadyAddresses": not_ready.iter().map(|n| address(*n)).collect::<Vec<_>>(),
            "ports": [{"name": "vnc", "port": 5901}, {"name": "health", "port": 8080}],
        }],
    })
}

fn statuses(live: &Value) -> Vec<(String, String)> {
    live["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn endpoints_mode_follows_the_core_endpoints_object_even_when_it_is_missing_at_first() {
    let cluster = SimCluster::start().await;
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.mode = DiscoveryMode::KubernetesEndpoints;
    let gateway = Gateway::start_with(&cluster, config).await;
    let live = gateway.live("").await;
    assert_eq!(live["mode"], "kubernetes-endpoints");
    assert_eq!(
        live["stats"]["total"], 0,
        "no Endpoints object yet: ready, and empty"
    );

    let store = cluster.store();
    store
        .create(ResourceKind::Endpoints, NS, endpoints_object(&[0, 1], &[2]))
        .unwrap();
    eventually(LIMIT, || async {
        statuses(&gateway.live("").await)
            == pairs(&[
                ("instance-0", "ready"),
                ("instance-1", "ready"),
                ("instance-2", "booting"),
            ])
    })
    .await
    .unwrap();
    let mut events = gateway.sse("", None).await;
    assert_eq!(events.next().await.event, "snapshot");
    store
        .replace(
            ResourceKind::Endpoints,
            NS,
            SVC,
            endpoints_object(&[0], &[1, 2]),
        )
        .unwrap();
    let e = events.next().await;
    assert_eq!(
        (e.event.as_str(), e.data.contains("instance-1")),
        ("InstanceNotReady", true)
    );
    // Another service's Endpoints are ignored.
    let mut other = endpoints_object(&[5], &[]);
    other["metadata"]["name"] = json!("other");
    store.create(ResourceKind::Endpoints, NS, other).unwrap();
    store.delete(ResourceKind::Endpoints, NS, SVC).unwrap();
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["total"] == 0
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn endpoints_mode_sees_the_emulator_scenario() {
    let cluster = SimCluster::start().await;
    let mut emulators = loco_discovery_sim::scenario::EmulatorCluster::new(
        loco_discovery_sim::scenario::ScenarioConfig {
            namespace: NS.into(),
            service: SVC.into(),
            replicas: 5,
            seed: 4,
            pace: Duration::from_millis(1),
            publish_not_ready_addresses: true,
        },
    );
    for step in 0..60 {
        if emulators.step(chrono::Utc::now() + chrono::Duration::seconds(step)) {
            loco_discovery_sim::scenario::sync_into_store(cluster.store(), &emulators).unwrap();
        }
    }
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.mode = DiscoveryMode::KubernetesEndpoints;
    let gateway = Gateway::start_with(&cluster, config).await;
    let truth: Vec<String> = cluster.truth(SVC).into_keys().collect();
    let ids: Vec<String> = gateway.view().await.into_keys().collect();
    assert_eq!(ids, truth);
}

async fn get(url: &str) -> Value {
    reqwest::get(format!("{url}/api/instances/live"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn static_mode_follows_its_file_and_keeps_the_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    // Like a mounted ConfigMap: the file is a symlink into a directory that is swapped.
    let v1 = dir.path().join("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("instances.json"),
        r#"[{"id": "instance-0", "name": "Host", "address": "10.1.0.1"},
            {"id": "instance-1", "address": "10.1.0.2", "status": "booting"}]"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/instances.json", dir.path().join("instances.json")).unwrap();

    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.mode = DiscoveryMode::Static;
    config.static_file = Some(dir.path().join("instances.json"));
    config.file_poll = Duration::from_millis(50);
    let (url, stop) = support::start_without_cluster(config).await;
    eventually(LIMIT, || async {
        reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();
    let live = get(&url).await;
    assert_eq!(live["mode"], "static");
    assert_eq!(
        statuses(&live),
        pairs(&[("instance-0", "ready"), ("instance-1", "booting")])
    );
    assert_eq!(live["instances"][0]["name"], "Host");

    // The ConfigMap update: a new directory, and the ..data link swapped atomically.
    let v2 = dir.path().join("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("instances.json"),
        r#"{"instances": [{"id": "instance-0", "name": "Host", "address": "10.1.0.1"},
                          {"id": "instance-1", "address": "10.1.0.2", "status": "ready"}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", dir.path().join("..data.tmp")).unwrap();
    std::fs::rename(dir.path().join("..data.tmp"), dir.path().join("..data")).unwrap();
    eventually(LIMIT, || async {
        statuses(&get(&url).await) == pairs(&[("instance-0", "ready"), ("instance-1", "ready")])
    })
    .await
    .unwrap();

    // A broken file, then no file: the last good state stays.
    std::fs::write(v2.join("instances.json"), "[{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&url).await["stats"]["total"], 2);
    std::fs::remove_file(v2.join("instances.json")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&url).await["stats"]["total"], 2);
    std::fs::write(
        v2.join("instances.json"),
        r#"[{"ordinal": 4, "address": "10.1.0.5"}]"#,
    )
    .unwrap();
    eventually(LIMIT, || async {
        statuses(&get(&url).await) == pairs(&[("instance-4", "ready")])
    })
    .await
    .unwrap();
    stop.cancel();
}

#[tokio::test]
async fn static_mode_publishes_an_edit_of_the_name_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("instances.json");
    let write = |name: &str, tags: &str| {
        std::fs::write(
            &file,
            format!(
                r#"[{{"id": "instance-0", "name": "{name}", "tags": [{tags}], "address": "10.1.0.1"}}]"#
            ),
        )
        .unwrap()
    };
    write("Host", r#""lan""#);
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.mode = DiscoveryMode::Static;
    config.static_file = Some(file.clone());
    config.file_poll = Duration::from_millis(50);
    let (url, stop) = support::start_without_cluster(config).await;
    eventually(LIMIT, || async {
        get(&url).await["instances"][0]["name"] == "Host"
    })
    .await
    .unwrap();
    let mut events = SseClient::connect(&format!("{url}/api/instances/stream"), None).await;
    assert_eq!(events.next().await.event, "snapshot");

    write("Renamed", r#""lan", "new""#);
    let update = events.next().await;
    assert_eq!(update.event, "InstanceUpdated");
    let data: Value = serde_json::from_str(&update.data).unwrap();
    assert_eq!(data["instance"]["name"], "Renamed");
    assert_eq!(data["instance"]["tags"], json!(["lan", "new"]));
    let live = get(&url).await;
    assert_eq!(live["instances"][0]["name"], "Renamed");
    assert_eq!(live["synced"], true);
    stop.cancel();
}

#[tokio::test]
async fn metadata_file_decorates_instances_and_edits_flow_out_as_updates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.yaml");
    std::fs::write(
        &file,
        "\"0\": {name: Host, description: Runs the match, tags: [lan]}\n",
    )
    .unwrap();
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.metadata_file = Some(file.clone());
    config.file_poll = Duration::from_millis(50);
    let gateway = Gateway::start_with(&cluster, config).await;
    eventually(LIMIT, || async {
        gateway.live("").await["instances"][0]["name"] == "Host"
    })
    .await
    .unwrap();
    let live = gateway.live("").await;
    assert_eq!(live["instances"][0]["description"], "Runs the match");
    assert_eq!(live["instances"][0]["tags"], json!(["lan"]));
    assert_eq!(live["instances"][1]["name"], "Windows 98 - Client 1");

    let mut events = gateway.sse("", None).await;
    events.next().await;
    std::fs::write(&file, "loco-loco-emulator-1: {name: Spare}\n").unwrap();
    let mut names = Vec::new();
    for _ in 0..2 {
        let e = events.next().await;
        assert_eq!(e.event, "InstanceUpdated");
        let data: Value = serde_json::from_str(&e.data).unwrap();
        names.push(data["instance"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names, vec!["Windows 98 - Game Server", "Spare"]);
    // Metadata never adds instances, and a broken file keeps the last good metadata.
    std::fs::write(&file, "\"7\": {name: Ghost}\n[broken").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = gateway.live("").await;
    assert_eq!(live["stats"]["total"], 2);
    assert_eq!(live["instances"][1]["name"], "Spare");
}

/// A health server whose answer can be changed, counting requests.
async fn health_server() -> (u16, Arc<AtomicU16>, Arc<AtomicUsize>) {
    use warp::Filter;
    let status = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let (s, h) = (status.clone(), hits.clone());
    let route = warp::path("health").map(move || {
        h.fetch_add(1, Ordering::SeqCst);
        warp::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (port, status, hits)
}

/// A health server that accepts connections and never answers.
async fn hanging_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

fn local_slice(
    name: &str,
    n: u32,
    health_port: u16,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let mut s = slice(
        name,
        vec![loco_discovery_core::slices::mk_endpoint(
            &format!("{SVC}-{n}"),
            "127.0.0.1",
            true,
            false,
        )],
    );
    s.ports = Some(vec![
        loco_discovery_core::slices::mk_port("vnc", 5901),
        loco_discovery_core::slices::mk_port("health", health_port as i32),
    ]);
    s
}

#[tokio::test]
async fn health_checks_degrade_failing_instances_and_restore_them() {
    let (good_port, status, _) = health_server().await;
    let (hang_port, accepted) = hanging_server().await;
    let cluster = SimCluster::start().await;
    cluster.put(&local_slice("emu-a", 0, good_port));
    cluster.put(&local_slice("emu-b", 1, hang_port));
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.health_check = Some(ProbeConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
        concurrency: 4,
        path: "/health".into(),
    });
    let gateway = Gateway::start_with(&cluster, config).await;
    eventually(LIMIT, || async {
        statuses(&gateway.live("").await)
            == pairs(&[("instance-0", "ready"), ("instance-1", "degraded")])
    })
    .await
    .unwrap();
    let live = gateway.live("").await;
    let probe0 = &live["instances"][0]["probe"];
    assert_eq!(
        (probe0["reachable"].clone(), probe0["statusCode"].clone()),
        (json!(true), json!(200))
    );
    let probe1 = &live["instances"][1]["probe"];
    assert_eq!(probe1["reachable"], false);
    assert!(probe1["error"].as_str().unwrap().contains("no answer"));
    assert_eq!(live["stats"]["degraded"], 1);
    assert_eq!(live["instances"][1]["ready"], false);

    status.store(500, Ordering::SeqCst);
    eventually(LIMIT, || async {
        gateway.live("").await["instances"][0]["status"] == "degraded"
    })
    .await
    .unwrap();
    assert_eq!(
        gateway.live("").await["instances"][0]["probe"]["statusCode"],
        500
    );
    status.store(200, Ordering::SeqCst);
    eventually(LIMIT, || async {
        gateway.live("").await["instances"][0]["status"] == "ready"
    })
    .await
    .unwrap();

    // A removed instance is no longer probed.
    cluster.remove("emu-b");
    eventually(LIMIT, || async {
        gateway.live("").await["stats"]["total"] == 1
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_removal = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), after_removal);
}

#[tokio::test]
async fn prefer_zone_orders_the_snapshot() {
    let cluster = SimCluster::start().await;
    let mut a = pod(0, true);
    a.zone = Some("zone-a".into());
    let mut b = pod(1, true);
    b.zone = Some("zone-b".into());
    cluster.put(&slice("emu-a", vec![a, b]));
    let gateway = Gateway::start(&cluster).await;
    let ids =
        |live: Value| -> Vec<String> { statuses(&live).into_iter().map(|(id, _)| id).collect() };
    assert_eq!(
        ids(gateway.live("").await),
        vec!["instance-0", "instance-1"]
    );
    assert_eq!(
        ids(gateway.live("?preferZone=zone-b").await),
        vec!["instance-1", "instance-0"]
    );
    assert_eq!(gateway.live("?zone=zone-b").await["stats"]["total"], 1);
}
