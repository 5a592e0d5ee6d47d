//! The `loco-discovery` command as users run it: the demo, signals, and clear one-line
//! errors for bad input.

mod support;

use std::time::{Duration, Instant};
use support::process::{run_to_end, start_marked, terminate};
use support::SseClient;

fn live(url: &str) -> serde_json::Value {
    reqwest::blocking::get(url).unwrap().json().unwrap()
}

#[test]
fn demo_shows_nine_changing_instances_and_exits_cleanly_on_sigterm() {
    let (mut demo, url) = start_marked(
        &["demo", "--listen", "127.0.0.1:0", "--pace", "50ms"],
        "demo: open",
    );
    let start = Instant::now();
    let mut statuses = std::collections::BTreeSet::new();
    loop {
        let view = live(&url);
        for i in view["instances"].as_array().unwrap() {
            statuses.insert(i["status"].as_str().unwrap().to_owned());
        }
        if view["stats"]["total"] == 9 && statuses.len() >= 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "demo never reached 9 instances: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let stream_url = url.replace("/api/instances/live", "/api/instances/stream");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut sse = runtime.block_on(SseClient::connect(&stream_url, None));
    assert_eq!(runtime.block_on(sse.next()).event, "snapshot");

    let status = terminate(&mut demo, Duration::from_secs(15)).expect("demo exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut last = None;
    while let Some(event) = runtime.block_on(sse.next_within(Duration::from_secs(5))) {
        last = Some(event.event);
    }
    assert_eq!(last.as_deref(), Some("reconnect"));
}

#[test]
fn serve_without_a_cluster_is_a_one_line_error() {
    let (status, stderr) = run_to_end(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("HOME", "/nonexistent"),
        ],
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_against_an_unreachable_cluster_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    loco_discovery::sim::write_kubeconfig(&kubeconfig, port, "loco").unwrap();
    let (status, stderr) = run_to_end(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--connect-timeout",
            "3s",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
}

#[test]
fn a_taken_port_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_end(&["demo", "--listen", &addr], &[]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_explained_without_a_panic() {
    let (status, stderr) = run_to_end(&["serve", "--service", "Not_Valid"], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("not a valid Kubernetes name"), "{stderr}");
    let (status, stderr) = run_to_end(&["serve", "--mode", "kubernetes-pods"], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("kubernetes-endpointslices"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}
