//! Objects shaped like real clusters' `kubectl get -o yaml` dumps
//! (`tests/fixtures/real-clusters/*.yaml`) go through the simulated API as `kubectl create`
//! sends them, and a gateway reads them back: every instance is compared field by field with
//! `<fixture>.expected.json`. None of these objects loses information, so nothing is counted
//! as malformed and nothing is logged as a warning. One test: the metrics recorder and the
//! log subscriber are global to the process.

mod support;

use loco_discovery::config::DiscoveryMode;
use loco_discovery::GatewayConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Gateway, SimCluster};

const FIXTURES: &str = "tests/fixtures/real-clusters";

/// Log lines, as the gateway writes them to stderr.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn collection(item: &Value) -> String {
    let namespace = item["metadata"]["namespace"].as_str().unwrap();
    match item["kind"].as_str().unwrap() {
        "EndpointSlice" => {
            format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
        }
        "Endpoints" => format!("/api/v1/namespaces/{namespace}/endpoints"),
        other => panic!("no fixture objects of kind {other}"),
    }
}

async fn post(cluster: &SimCluster, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(cluster.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Creates the dump's objects as `kubectl create` would after `kubectl create namespace`: a
/// dump's `resourceVersion` must go first (the API server refuses a create that states one).
async fn restore(cluster: &SimCluster, items: &[Value]) {
    for item in items {
        let namespace = item["metadata"]["namespace"].as_str().unwrap();
        if cluster.store().namespace(namespace).is_none() {
            let (code, body) = post(
                cluster,
                "/api/v1/namespaces",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .await;
            assert_eq!(code, 201, "{body}");
        }
        let path = format!("{}?fieldValidation=Strict", collection(item));
        let (code, body) = post(cluster, &path, item).await;
        assert_eq!(
            (code, body["message"].as_str()),
            (
                500,
                Some("resourceVersion should not be set on objects to be created")
            )
        );
        let mut item = item.clone();
        item["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let (code, body) = post(cluster, &path, &item).await;
        assert_eq!(code, 201, "{body}");
    }
}

/// The fields of an instance the fixtures speak about, flattened.
fn project(instance: &Value) -> Value {
    let addresses = &instance["addresses"];
    let kubernetes = &instance["kubernetes"];
    json!({
        "id": instance["id"], "key": instance["key"], "name": instance["name"],
        "status": instance["status"], "state": instance["state"], "ready": instance["ready"],
        "podName": instance["podName"], "ordinal": instance["ordinal"],
        "podIP": addresses["podIP"], "podIPs": addresses["podIPs"],
        "hostname": addresses["hostname"], "dnsName": addresses["dnsName"],
        "ports": instance["ports"], "vncUrl": instance["vncUrl"], "healthUrl": instance["healthUrl"],
        "nodeName": kubernetes["nodeName"], "zone": kubernetes["zone"],
        "hintZones": kubernetes["hintZones"], "targetRef": kubernetes["targetRef"]["name"],
    })
}

fn gateway_config(expected: &Value) -> GatewayConfig {
    let services = expected["services"].as_array().unwrap();
    let services = services.iter().map(|s| s.as_str().unwrap().to_owned());
    let mut config =
        GatewayConfig::new(expected["namespace"].as_str().unwrap(), services.collect());
    config.mode = match expected["mode"].as_str().unwrap() {
        "kubernetes-endpoints" => DiscoveryMode::KubernetesEndpoints,
        _ => DiscoveryMode::KubernetesEndpointSlices,
    };
    config.index.dns.endpoint_pod_names = expected["dnsPodNames"] == true;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_objects_give_the_instances_they_describe() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let files = fixtures();
    assert_eq!(files.len(), 9, "{files:?}");
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let dump: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let expectations: Value = serde_json::from_str(
            &std::fs::read_to_string(file.with_extension("expected.json")).unwrap(),
        )
        .unwrap();
        let cluster = SimCluster::start().await;
        restore(&cluster, dump["items"].as_array().unwrap()).await;
        for expected in expectations.as_array().unwrap() {
            let mut gateway = Gateway::start_with(&cluster, gateway_config(expected)).await;
            let live = gateway.live("").await;
            let got: Vec<Value> = live["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(project)
                .collect();
            let want = expected["instances"].as_array().unwrap();
            let ids: Vec<&Value> = got.iter().map(|i| &i["key"]).collect();
            assert_eq!(got.len(), want.len(), "{name}: instances {ids:?}");
            for (got, want) in got.iter().zip(want) {
                for (field, value) in want.as_object().unwrap() {
                    assert_eq!(
                        &got[field], value,
                        "{name} ({} {}): {} field {field}",
                        expected["mode"], expected["dnsPodNames"], want["key"]
                    );
                }
                assert_eq!(got, want, "{name}");
            }
            // Stopped before its cluster goes away, so that it logs no lost connection.
            gateway.stop.cancel();
            assert!(gateway.finished_within(Duration::from_secs(10)).await);
        }
    }
    let exposition = loco_discovery::metrics::install().unwrap().render();
    let malformed =
        support::scrape::value(&exposition, "loco_discovery_malformed_objects_total", &[]);
    assert_eq!(malformed, 0.0, "{exposition}");
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.is_empty(), "warnings for normal objects:\n{logged}");
}
