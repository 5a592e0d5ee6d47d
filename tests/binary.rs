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
fn demo_starts_with_nine_ready_instances_within_five_seconds() {
    let started = Instant::now();
    let (_demo, dashboard) = start_marked(&["demo", "--listen", "127.0.0.1:0"], "demo: open");
    let url = format!("{dashboard}api/instances/live");
    loop {
        let view = live(&url);
        let ready: Vec<&str> = view["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "ready" && i["ready"] == true)
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        if ready.len() == 9 {
            let ids: Vec<String> = (0..9).map(|n| format!("instance-{n}")).collect();
            assert_eq!(ready, ids, "the nine slots of the grid, in order");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no nine ready instances 5 s after the start: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_shows_nine_changing_instances_and_exits_cleanly_on_sigterm() {
    let (mut demo, dashboard) = start_marked(
        &["demo", "--listen", "127.0.0.1:0", "--pace", "50ms"],
        "demo: open",
    );
    let page = reqwest::blocking::get(&dashboard).unwrap().text().unwrap();
    assert!(page.contains("<html"), "the dashboard at {dashboard}");
    let url = format!("{}api/instances/live", dashboard);
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
    loco_discovery_sim::write_kubeconfig(&kubeconfig, port, "loco").unwrap();
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

/// Two gateway processes watching one simulated API: a client that loses the first
/// resumes on the second with the first one's last event id, without a reset.
#[test]
fn a_client_resumes_across_two_gateway_processes() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, PostParams};
    use support::process::start;
    use support::{pod, slice, Rebuilt, NS};

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (_sim, sim_url) = start(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        &[],
    );
    let env = [("KUBECONFIG", kubeconfig.as_path())];
    let (mut a, a_url) = start(&["serve", "--listen", "127.0.0.1:0"], &env);
    let (_b, b_url) = start(&["serve", "--listen", "127.0.0.1:0"], &env);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = {
        let _guard = runtime.enter();
        kube::Client::try_from(kube::Config::new(sim_url.parse().unwrap())).unwrap()
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client, NS);
    let write = |endpoints| {
        let object = slice("emu-a", endpoints);
        runtime.block_on(async {
            match slices.get_opt("emu-a").await.unwrap() {
                None => slices
                    .create(&PostParams::default(), &object)
                    .await
                    .unwrap(),
                Some(_) => slices
                    .replace("emu-a", &PostParams::default(), &object)
                    .await
                    .unwrap(),
            }
        });
    };

    let mut rebuilt = Rebuilt::default();
    let mut on_a = runtime.block_on(support::SseClient::connect(
        &format!("{a_url}/api/instances/stream"),
        None,
    ));
    let e = runtime.block_on(on_a.next());
    rebuilt.apply(&e.event, &e.data);
    write(vec![pod(0, false)]);
    write(vec![pod(0, true), pod(1, false)]);
    for _ in 0..3 {
        let e = runtime.block_on(on_a.next());
        rebuilt.apply(&e.event, &e.data);
    }
    let last = on_a.last_id.clone().unwrap();
    drop(on_a);
    drop(a.0.kill());

    write(vec![pod(0, true), pod(1, true), pod(2, false)]);
    let live = |url: &str| -> serde_json::Value {
        reqwest::blocking::get(format!("{url}/api/instances/live"))
            .unwrap()
            .json()
            .unwrap()
    };
    let start_wait = Instant::now();
    while live(&b_url)["stats"]["total"] != 3 {
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut on_b = runtime.block_on(support::SseClient::connect(
        &format!("{b_url}/api/instances/stream"),
        Some(&last),
    ));
    let mut kinds = Vec::new();
    for e in runtime.block_on(on_b.exactly(2)) {
        kinds.push(e.event.clone());
        rebuilt.apply(&e.event, &e.data);
    }
    assert!(!kinds.iter().any(|k| k == "reset"), "{kinds:?}");
    assert_eq!(kinds, vec!["InstanceReady", "InstanceAdded"]);
    assert_eq!(rebuilt.view(), support::view_of(&live(&b_url)["instances"]));
}
