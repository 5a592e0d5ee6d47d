//! The shipped binary end to end: `loco-discovery sim` and `loco-discovery serve` as
//! separate processes, the real kubectl writing to the simulated API, and the gateway's
//! `/api/instances/live` following each change.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::process::start;

fn kubectl(bin: &Path, kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let output = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", cache)
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls the gateway until `check` holds on /api/instances/live; returns how long it took.
fn wait_for(url: &str, check: impl Fn(&serde_json::Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let live: Option<serde_json::Value> =
            reqwest::blocking::get(format!("{url}/api/instances/live"))
                .ok()
                .and_then(|r| r.json().ok());
        if live.as_ref().is_some_and(&check) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gateway never showed the change"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: loco-loco-emulator-kctl1
  namespace: loco
  labels:
    kubernetes.io/service-name: loco-loco-emulator
addressType: IPv4
ports:
  - name: vnc
    port: 5901
  - name: health
    port: 8080
endpoints:
  - addresses: ["10.244.0.30"]
    conditions: {ready: true, serving: true, terminating: false}
    hostname: loco-loco-emulator-4
    targetRef: {kind: Pod, name: loco-loco-emulator-4, namespace: loco}
"#;

#[test]
fn kubectl_changes_reach_the_gateway() {
    let Some(kubectl_bin) = support::kubectl::any() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let cache = dir.path().join("kube-cache");
    let (_sim, _) = start(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        &[],
    );
    let (_gateway, url) = start(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    let file = dir.path().join("slice.yaml");
    std::fs::write(&file, SLICE).unwrap();

    let out = kubectl(
        &kubectl_bin,
        &kubeconfig,
        &cache,
        &["create", "-f", file.to_str().unwrap()],
    );
    assert!(out.contains("created"), "{out}");
    let appeared = wait_for(&url, |live| {
        live["instances"][0]["id"] == "instance-4" && live["instances"][0]["status"] == "ready"
    });

    let patch = r#"{"endpoints":[{"addresses":["10.244.0.30"],"conditions":{"ready":true,"serving":false,"terminating":false},"hostname":"loco-loco-emulator-4","targetRef":{"kind":"Pod","name":"loco-loco-emulator-4","namespace":"loco"}}]}"#;
    let out = kubectl(
        &kubectl_bin,
        &kubeconfig,
        &cache,
        &[
            "patch",
            "endpointslice",
            "loco-loco-emulator-kctl1",
            "-n",
            "loco",
            "--type=merge",
            "-p",
            patch,
        ],
    );
    assert!(out.contains("patched"), "{out}");
    let not_ready = wait_for(&url, |live| {
        live["instances"][0]["status"] == "booting" && live["instances"][0]["ready"] == false
    });

    let out = kubectl(
        &kubectl_bin,
        &kubeconfig,
        &cache,
        &[
            "delete",
            "endpointslice",
            "loco-loco-emulator-kctl1",
            "-n",
            "loco",
        ],
    );
    assert!(out.contains("deleted"), "{out}");
    let gone = wait_for(&url, |live| live["stats"]["total"] == 0);
    println!(
        "kubectl → gateway, measured after each kubectl command returned: \
         appeared {appeared:?}, not ready {not_ready:?}, gone {gone:?}"
    );
}
