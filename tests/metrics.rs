//! `/metrics` moves by exactly what the gateway did. One test, one gateway, steps in
//! order: the metrics recorder is global to the process.

mod support;

use futures::StreamExt;
use loco_discovery::GatewayConfig;
use loco_discovery_sim::ResourceKind;
use serde_json::json;
use std::time::Duration;
use support::scrape::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_scripted_activity() {
    let cluster = SimCluster::start().await;
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.hub.subscriber_lag = 16;
    config.stream.max_subscribers = 3;
    config.stream.heartbeat = Duration::from_millis(200);
    let gateway = Gateway::start_with(&cluster, config).await;
    let svc = [("service", SVC)];

    // Churn: three pods appear, one turns ready, one leaves.
    let before = Scrape::from(&gateway).await;
    assert_eq!(before.get("loco_discovery_watch_ready", &[]), 1.0);
    let mut sse = gateway.sse("", None).await;
    sse.next().await;
    cluster.put(&slice(
        "emu-a",
        vec![pod(0, false), pod(1, false), pod(2, false)],
    ));
    cluster.put(&slice(
        "emu-a",
        vec![pod(0, true), pod(1, false), pod(2, false)],
    ));
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_deltas_total",
        &[("type", "InstanceAdded")],
        3.0,
    )
    .await;
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_deltas_total",
        &[("type", "InstanceReady")],
        1.0,
    )
    .await;
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_deltas_total",
        &[("type", "InstanceRemoved")],
        1.0,
    )
    .await;
    for hop in [
        "loco_discovery_change_to_gateway_seconds_count",
        "loco_discovery_receipt_to_published_seconds_count",
    ] {
        expect_moved(&gateway, &before, hop, &svc, 3.0).await;
    }
    for _ in 0..5 {
        sse.next().await;
    }
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_published_to_socket_seconds_count",
        &[("service", SVC), ("transport", "sse")],
        5.0,
    )
    .await;
    let now = Scrape::from(&gateway).await;
    assert_eq!(
        now.get(
            "loco_discovery_instances",
            &[("service", SVC), ("status", "ready")]
        ),
        1.0
    );
    assert_eq!(
        now.get(
            "loco_discovery_instances",
            &[("service", SVC), ("status", "not_ready")]
        ),
        1.0
    );
    assert_eq!(
        now.get("loco_discovery_subscribers", &[("transport", "sse")]),
        1.0
    );
    assert!(now.get("loco_discovery_history_depth", &[]) >= 5.0);
    assert!(now.get("loco_discovery_heartbeats_total", &[]) >= 0.0);

    // A slice without a trigger time, or with an unparsable one, is not measured, and is
    // counted.
    let before = Scrape::from(&gateway).await;
    let mut bare = serde_json::to_value(slice("emu-b", vec![pod(5, true)])).unwrap();
    bare["metadata"]["annotations"] = json!({});
    cluster
        .store()
        .create(ResourceKind::EndpointSlice, NS, bare.clone())
        .unwrap();
    cluster
        .store()
        .merge_patch(
            ResourceKind::EndpointSlice,
            NS,
            "emu-b",
            &json!({"metadata": {"annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "yesterday"}}}),
        )
        .unwrap();
    for reason in ["missing", "unparsable"] {
        expect_moved(
            &gateway,
            &before,
            "loco_discovery_trigger_time_skipped_total",
            &[("reason", reason)],
            1.0,
        )
        .await;
    }
    assert_eq!(
        moved(
            &gateway,
            &before,
            "loco_discovery_change_to_gateway_seconds_count",
            &svc
        )
        .await,
        0.0
    );

    // A malformed object is skipped and counted.
    let before = Scrape::from(&gateway).await;
    let mut broken = bare.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["endpoints"] = json!("not a list");
    cluster
        .store()
        .create(ResourceKind::EndpointSlice, NS, broken)
        .unwrap();
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_malformed_objects_total",
        &[("reason", "undecodable")],
        1.0,
    )
    .await;

    // A cut watch is resumed without an error or a re-list; a 410 forces one of each.
    let before = Scrape::from(&gateway).await;
    cluster.sim.faults.cut_watches();
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_deltas_total",
        &[("type", "InstanceReady")],
        1.0,
    )
    .await;
    assert_eq!(
        moved(&gateway, &before, "loco_discovery_watch_relists_total", &[]).await,
        0.0
    );
    assert_eq!(
        moved(&gateway, &before, "loco_discovery_watch_errors_total", &[]).await,
        0.0
    );
    cluster.sim.faults.stall(Duration::from_millis(300));
    cluster.sim.faults.cut_watches();
    cluster.put(&slice(
        "emu-a",
        vec![pod(0, true), pod(1, true), pod(3, true)],
    ));
    cluster.sim.faults.forget_history();
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_watch_errors_total",
        &[("reason", "gone_410")],
        1.0,
    )
    .await;
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_watch_relists_total",
        &[],
        1.0,
    )
    .await;
    eventually(LIMIT, || async {
        gateway.view().await == cluster.truth(SVC)
    })
    .await
    .unwrap();

    // An unknown resume id gets a reset.
    let before = Scrape::from(&gateway).await;
    let mut stale = gateway.sse("", Some("1.1")).await;
    assert_eq!(stale.next().await.event, "reset");
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_resets_total",
        &[("reason", "unknown_id")],
        1.0,
    )
    .await;

    // A third subscriber fits, a fourth is refused.
    let before = Scrape::from(&gateway).await;
    let third = gateway.sse("", None).await;
    let refused = reqwest::get(gateway.url("/api/instances/stream"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_subscribers_rejected_total",
        &[("reason", "capacity")],
        1.0,
    )
    .await;
    drop((stale, sse, third));
    eventually(LIMIT, || async {
        Scrape::from(&gateway)
            .await
            .get("loco_discovery_subscribers", &[("transport", "sse")])
            == 0.0
    })
    .await
    .unwrap();

    // Idle streams get heartbeats.
    let before = Scrape::from(&gateway).await;
    let response = reqwest::get(gateway.url("/api/instances/stream"))
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while text.matches(":heartbeat").count() < 2 {
        let chunk = tokio::time::timeout(LIMIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(moved(&gateway, &before, "loco_discovery_heartbeats_total", &[]).await >= 2.0);
    drop(body);
    eventually(LIMIT, || async {
        Scrape::from(&gateway)
            .await
            .get("loco_discovery_subscribers", &[("transport", "sse")])
            == 0.0
    })
    .await
    .unwrap();

    // A subscriber that stops reading is reset when it reads again.
    let before = Scrape::from(&gateway).await;
    let mut slow = slow_subscriber(gateway.addr).await;
    use tokio::io::AsyncReadExt;
    tokio::time::sleep(Duration::from_millis(100)).await;
    churn_100(&cluster, 60);
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = Vec::new();
    let found = eventually(Duration::from_secs(20), || {
        if let Some(Ok(n)) = futures::FutureExt::now_or_never(slow.read(&mut buf)) {
            seen.extend_from_slice(&buf[..n]);
        }
        let done = String::from_utf8_lossy(&seen).contains("slow_subscriber");
        async move { done }
    })
    .await;
    assert!(found.is_ok(), "no reset for the slow subscriber");
    // It may fall behind more than once while the churn lasts: every reset it got counts.
    // Read until the stream has only heartbeats left (bounded).
    let mut quiet_reads = 0;
    for _ in 0..400 {
        match tokio::time::timeout(Duration::from_secs(2), slow.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.extend_from_slice(chunk.as_bytes());
                // Raw bytes: chunked framing around SSE frames; no `event:` means heartbeats only.
                let only_heartbeats = !chunk.contains("event:");
                quiet_reads = if only_heartbeats { quiet_reads + 1 } else { 0 };
                if quiet_reads >= 3 {
                    break;
                }
            }
            _ => break,
        }
    }
    let resets = String::from_utf8_lossy(&seen)
        .matches("\"reason\":\"slow_subscriber\"")
        .count();
    assert!(resets >= 1);
    expect_moved(
        &gateway,
        &before,
        "loco_discovery_resets_total",
        &[("reason", "slow_subscriber")],
        resets as f64,
    )
    .await;
}
