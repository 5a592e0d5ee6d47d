//! The push streams (SSE and WebSocket) against real gateways and the simulated API.

mod support;

use futures::{SinkExt, StreamExt};
use loco_discovery::GatewayConfig;
use loco_discovery_core::slices::mk_endpoint;
use loco_discovery_sim::scenario::{sync_into_store, EmulatorCluster, ScenarioConfig};
use serde_json::Value;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(10);

/// Drives one pod through every kind of change; returns the expected event types.
fn lifecycle(cluster: &SimCluster) -> Vec<&'static str> {
    cluster.put(&slice("emu-a", vec![pod(0, false)]));
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    cluster.put(&slice("emu-a", vec![pod(0, false)]));
    cluster.put(&slice(
        "emu-a",
        vec![mk_endpoint(&format!("{SVC}-0"), "10.0.0.99", false, false)],
    ));
    cluster.put(&slice(
        "emu-a",
        vec![mk_endpoint(&format!("{SVC}-0"), "10.0.0.99", false, true)],
    ));
    cluster.remove("emu-a");
    vec![
        "InstanceAdded",
        "InstanceReady",
        "InstanceNotReady",
        "InstanceUpdated",
        "InstanceNotReady",
        "InstanceRemoved",
    ]
}

#[tokio::test]
async fn sse_sends_the_snapshot_first_then_every_delta_type_in_order() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut sse = gateway.sse("", None).await;
    let first = sse.next().await;
    assert_eq!(first.event, "snapshot");
    let snapshot: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(snapshot["instances"], Value::Array(vec![]));
    assert_eq!(snapshot["mode"], "kubernetes-endpointslices");
    assert!(!first.id.is_empty());

    let expected = lifecycle(&cluster);
    let mut got = Vec::new();
    let mut reasons = Vec::new();
    for _ in 0..expected.len() {
        let event = sse.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["type"], event.event.as_str());
        assert_eq!(data["id"], event.id.as_str());
        assert_eq!(data["instanceId"], "instance-0");
        assert_eq!(data["service"], SVC);
        assert_eq!(data["namespace"], NS);
        assert!(data["ts"].is_string() && data["lastUpdate"].is_string());
        assert!(data["stats"]["total"].is_number());
        assert_eq!(data["instance"]["podName"], format!("{SVC}-0"));
        reasons.push(data["reason"].as_str().map(str::to_owned));
        got.push(event.event);
    }
    assert_eq!(got, expected);
    assert_eq!(reasons[2].as_deref(), Some("not-serving"));
    assert_eq!(reasons[4].as_deref(), Some("terminating"));
}

#[tokio::test]
async fn sse_headers_suit_proxies_and_event_source() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let response = reqwest::Client::new()
        .get(gateway.url("/instances/stream"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut body = response.bytes_stream();
    let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    let retry: u64 = first
        .lines()
        .find_map(|l| l.strip_prefix("retry:"))
        .expect("a retry field first")
        .trim()
        .parse()
        .unwrap();
    assert!((2000..=6000).contains(&retry), "retry {retry}");
}

#[tokio::test]
async fn websocket_carries_the_same_events_and_answers_application_pings() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let url = format!("ws://{}/api/instances/ws", gateway.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut next_json = async || loop {
        let message = tokio::time::timeout(LIMIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(next_json().await["type"], "snapshot");
    let expected = lifecycle(&cluster);
    for kind in expected {
        assert_eq!(next_json().await["type"], kind);
    }
    ws.send(Message::text(r#"{"type":"__ping","ts":1234}"#))
        .await
        .unwrap();
    let pong = loop {
        let message = tokio::time::timeout(LIMIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(pong, serde_json::json!({"type": "__pong", "ts": 1234}));
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_deltas_and_unknown_ids_reset() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut first = gateway.sse("", None).await;
    assert_eq!(first.next().await.event, "snapshot");
    cluster.put(&slice("emu-a", vec![pod(0, false)]));
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    let seen: Vec<String> = vec![first.next().await.id, first.next().await.id];
    let last = first.last_id.clone().unwrap();
    drop(first);

    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    cluster.put(&slice("emu-a", vec![pod(0, false), pod(1, true)]));
    eventually(LIMIT, || async { gateway.view().await.len() == 2 })
        .await
        .unwrap();

    let mut resumed = gateway.sse("", Some(&last)).await;
    let mut replayed = Vec::new();
    for event in resumed.exactly(3).await {
        assert_ne!(event.event, "reset");
        replayed.push(event.id);
    }
    assert!(replayed.iter().all(|id| !seen.contains(id)), "no duplicate");

    // The query parameter works too, for clients that cannot set headers.
    let mut by_query = gateway
        .sse(&format!("?lastEventId={}", seen[0]), None)
        .await;
    assert_eq!(by_query.next().await.id, seen[1]);

    let mut unknown = gateway.sse("", Some("999999.1")).await;
    let event = unknown.next().await;
    assert_eq!(event.event, "reset");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["reason"], "unknown_id");
    assert_eq!(data["stats"]["total"], 2);
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_without_a_reset() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    let a = Gateway::start(&cluster).await;
    let b = Gateway::start(&cluster).await;
    let mut rebuilt = Rebuilt::default();
    let mut on_a = a.sse("", None).await;
    let e = on_a.next().await;
    rebuilt.apply(&e.event, &e.data);
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    for _ in 0..2 {
        let e = on_a.next().await;
        rebuilt.apply(&e.event, &e.data);
    }
    let last = on_a.last_id.clone().unwrap();
    drop(on_a);
    drop(a);

    cluster.put(&slice(
        "emu-a",
        vec![pod(0, false), pod(1, true), pod(2, false)],
    ));
    eventually(LIMIT, || async { b.view().await.len() == 3 })
        .await
        .unwrap();
    let mut on_b = b.sse("", Some(&last)).await;
    let mut kinds = Vec::new();
    for e in on_b.exactly(2).await {
        kinds.push(e.event.clone());
        rebuilt.apply(&e.event, &e.data);
    }
    assert!(!kinds.contains(&"reset".to_owned()), "{kinds:?}");
    assert_eq!(rebuilt.view(), b.view().await);
}

#[tokio::test]
async fn filters_apply_to_streams_and_bad_requests_get_json_400() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut ready_only = gateway.sse("?status=ready", None).await;
    assert_eq!(ready_only.next().await.event, "snapshot");
    cluster.put(&slice("emu-a", vec![pod(0, false)]));
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    cluster.put(&slice("emu-a", vec![pod(0, false)]));
    let entered = ready_only.next().await;
    assert_eq!(entered.event, "InstanceReady");
    let left = ready_only.next().await;
    assert_eq!(left.event, "InstanceRemoved");
    assert!(left.data.contains("filtered-out"));

    for (query, header) in [("?status=sleepy", None), ("", Some("bad id!"))] {
        let mut request =
            reqwest::Client::new().get(gateway.url(&format!("/api/instances/stream{query}")));
        if let Some(h) = header {
            request = request.header("last-event-id", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn subscribers_past_the_cap_get_503_with_retry_after() {
    let cluster = SimCluster::start().await;
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.stream.max_subscribers = 2;
    let gateway = Gateway::start_with(&cluster, config).await;
    let _one = gateway.sse("", None).await;
    let _two = gateway.sse("", None).await;
    let third = reqwest::get(gateway.url("/api/instances/stream"))
        .await
        .unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "5");
    drop(_one);
    eventually(LIMIT, || async {
        reqwest::get(gateway.url("/api/instances/live?x=1")).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_millis(300), reqwest::get(gateway.url("/api/instances/stream"))).await,
                Ok(Ok(r)) if r.status() == 200
            )
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let cluster = SimCluster::start().await;
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.stream.heartbeat = Duration::from_millis(100);
    let gateway = Gateway::start_with(&cluster, config).await;
    let response = reqwest::get(gateway.url("/api/instances/stream"))
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let result = eventually(LIMIT, || {
        let chunk = futures::FutureExt::now_or_never(body.next());
        if let Some(Some(Ok(bytes))) = chunk {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        let done = text.matches(":heartbeat").count() >= 2;
        async move { done }
    })
    .await;
    assert!(result.is_ok(), "{text}");
}

#[tokio::test]
async fn a_slow_subscriber_delays_nobody_and_is_reset_when_it_reads_again() {
    let cluster = SimCluster::start().await;
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.hub.subscriber_lag = 16;
    let gateway = Gateway::start_with(&cluster, config).await;

    let mut slow = slow_subscriber(gateway.addr).await;
    use tokio::io::AsyncReadExt;

    let mut fast = gateway.sse("", None).await;
    let mut rebuilt = Rebuilt::default();
    let e = fast.next().await;
    rebuilt.apply(&e.event, &e.data);

    // Enough churn to fill every socket buffer between the gateway and the slow reader.
    let rounds = 60;
    churn_100(&cluster, rounds);
    let expected = cluster.truth(SVC);
    let took = eventually(Duration::from_secs(30), || {
        let mut drained = Vec::new();
        while let Some(Some(e)) = futures::FutureExt::now_or_never(fast.next_within(LIMIT)) {
            drained.push(e);
        }
        for e in &drained {
            rebuilt.apply(&e.event, &e.data);
        }
        let done = rebuilt.view() == expected;
        async move { done }
    })
    .await;
    assert!(took.is_ok(), "the fast subscriber did not keep up");

    // Now the slow one reads: after what the socket buffers held, it gets a reset.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let found = eventually(Duration::from_secs(20), || {
        let n = futures::FutureExt::now_or_never(slow.read(&mut buf));
        if let Some(Ok(n)) = n {
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        let done = text.contains("event:reset") && text.contains("slow_subscriber");
        async move { done }
    })
    .await;
    assert!(found.is_ok(), "no reset for the slow subscriber");
}

#[tokio::test]
async fn shutdown_sends_reconnect_to_every_stream_and_the_server_stops() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let mut sse = gateway.sse("", None).await;
    sse.next().await;
    let url = format!("ws://{}/api/instances/ws", gateway.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.next().await.unwrap().unwrap();

    gateway.stop.cancel();
    let event = sse.next().await;
    assert_eq!(event.event, "reconnect");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert!(data["retryMs"].as_u64().unwrap() >= 2000);
    assert!(
        sse.next_within(Duration::from_secs(2)).await.is_none(),
        "stream ended"
    );

    let text = ws.next().await.unwrap().unwrap();
    assert!(text.to_text().unwrap().contains("reconnect"));
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1012),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let mut gateway = gateway;
    assert!(
        gateway.finished_within(Duration::from_secs(5)).await,
        "server stopped after its streams ended"
    );
}

/// Fifty subscribers with assorted filters, some joining during churn: each rebuilds
/// exactly what /api/instances/live shows with the same filter once churn stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_subscribers_rebuild_the_live_view_under_churn() {
    let cluster = SimCluster::start().await;
    let gateway = Gateway::start(&cluster).await;
    let filters = [
        "",
        "?status=ready",
        "?zone=zone-a",
        "?status=booting,offline",
        &format!("?service={SVC}"),
    ];
    let mut emulators = EmulatorCluster::new(ScenarioConfig {
        namespace: NS.into(),
        service: SVC.into(),
        replicas: 9,
        seed: 21,
        pace: Duration::from_millis(1),
        publish_not_ready_addresses: false,
    });
    let start = chrono::Utc::now();
    let mut step = 0i64;
    let mut churn = |n: i64, emulators: &mut EmulatorCluster| {
        for _ in 0..n {
            step += 1;
            if emulators.step(start + chrono::Duration::seconds(step)) {
                sync_into_store(cluster.store(), emulators).unwrap();
            }
        }
    };
    churn(40, &mut emulators);
    let mut tasks = Vec::new();
    for n in 0..50 {
        if n == 25 {
            churn(40, &mut emulators);
        }
        let filter = filters[n % filters.len()].to_owned();
        let mut client = gateway.sse(&filter, None).await;
        tasks.push(tokio::spawn(async move {
            let mut rebuilt = Rebuilt::default();
            while let Some(e) = client.next_within(Duration::from_secs(2)).await {
                rebuilt.apply(&e.event, &e.data);
            }
            (filter, rebuilt)
        }));
        if n % 5 == 0 {
            churn(3, &mut emulators);
        }
    }
    churn(100, &mut emulators);
    for task in tasks {
        let (filter, rebuilt) = task.await.unwrap();
        let live = gateway.live(&filter).await;
        assert_eq!(
            rebuilt.view(),
            view_of(&live["instances"]),
            "filter {filter:?}"
        );
    }
}
