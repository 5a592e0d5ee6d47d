//! The gateway's view stays the API's truth through faults: an API server replaced by
//! one with another history, objects that stop decoding, watch failures in a quiet
//! cluster, and replica-local inputs that make two replicas' views differ.

mod support;

use loco_discovery::watch::WatchBackoff;
use loco_discovery::GatewayConfig;
use loco_discovery_sim::{ResourceKind, SimOptions};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(15);

/// A gateway configuration that retries quickly, as the tests' faults are short.
fn quick_config() -> GatewayConfig {
    let mut config = GatewayConfig::new(NS, vec![SVC.into()]);
    config.watch_backoff = WatchBackoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    config.file_poll = Duration::from_millis(50);
    config
}

fn sim_options() -> SimOptions {
    SimOptions {
        too_new_wait: Duration::from_millis(300),
        ..SimOptions::default()
    }
}

async fn readyz(gateway: &Gateway) -> (u16, Value) {
    let r = reqwest::get(gateway.url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn an_api_server_replaced_by_one_with_another_history_is_listed_again() {
    let old = SimCluster::start_with(sim_options()).await;
    let addr = old.addr;
    let gateway = Gateway::start_with(&old, quick_config()).await;
    old.put(&slice(
        "emu-a",
        vec![pod(0, true), pod(1, true), pod(2, true)],
    ));
    // Enough writes that the old resourceVersion is far ahead of a new server's.
    for round in 0..20 {
        old.put(&slice(
            "emu-a",
            vec![pod(0, true), pod(1, round % 2 == 0), pod(2, true)],
        ));
    }
    eventually(LIMIT, || async { gateway.view().await.len() == 3 })
        .await
        .unwrap();
    let mut events = gateway.sse("", None).await;
    assert_eq!(events.next().await.event, "snapshot");

    // kill -9 and a new, empty API server on the same address.
    old.stop().await;
    let new = SimCluster::start_at(addr, sim_options()).await;
    new.put(&slice("emu-new", vec![pod(5, true)]));
    new.put(&slice("emu-new", vec![pod(5, false)]));
    let took = eventually(LIMIT, || async {
        gateway.view().await.keys().cloned().collect::<Vec<_>>() == vec!["instance-5"]
    })
    .await
    .expect("the old cluster's instances are gone and the new one's are shown");
    println!("converged {took:?} after the new API server came up");
    assert_eq!(gateway.view().await, new.truth(SVC));

    // The subscriber never sees ids of the new history follow those of the old one
    // without a reset in between.
    new.put(&slice("emu-new", vec![pod(5, true)]));
    let mut seen = Vec::new();
    loop {
        let e = events.next().await;
        seen.push((e.event.clone(), e.id.clone()));
        if e.event == "reset" {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(data["reason"], "api_history_changed", "{seen:?}");
        }
        let rv = e.id.split('.').next().unwrap().parse::<u64>().ok();
        if rv.is_some_and(|rv| rv < 10) {
            break;
        }
    }
    let reset_at = seen.iter().position(|(kind, _)| kind == "reset");
    assert!(
        reset_at.is_some(),
        "a reset before the new history's events: {seen:?}"
    );
    let (code, body) = readyz(&gateway).await;
    assert_eq!((code, &body["synced"]), (200, &json!(true)));
}

#[tokio::test]
async fn a_slice_modified_into_an_undecodable_form_counts_as_absent_on_every_replica() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    cluster.put(&slice("emu-b", vec![pod(2, true)]));
    let watching = Gateway::start_with(&cluster, quick_config()).await;
    eventually(LIMIT, || async { watching.view().await.len() == 3 })
        .await
        .unwrap();

    let mut broken = cluster
        .store()
        .get(ResourceKind::EndpointSlice, NS, "emu-a")
        .unwrap();
    broken["endpoints"][0]["addresses"] = json!("10.0.0.1");
    broken["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    cluster
        .store()
        .replace(ResourceKind::EndpointSlice, NS, "emu-a", broken)
        .unwrap();
    let started_after = Gateway::start_with(&cluster, quick_config()).await;

    let only_b = |view: &std::collections::BTreeMap<String, (String, String)>| {
        view.keys().cloned().collect::<Vec<_>>() == vec!["instance-2"]
    };
    eventually(LIMIT, || async { only_b(&started_after.view().await) })
        .await
        .expect("a replica started afterwards does not show the slice");
    eventually(LIMIT, || async { only_b(&watching.view().await) })
        .await
        .expect("the replica that watched it change does not show it either");
}

#[tokio::test]
async fn a_watch_failure_is_reported_until_the_view_is_confirmed_again_in_a_quiet_cluster() {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true)]));
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yaml");
    std::fs::write(&metadata, "\"0\": {name: Host}\n").unwrap();
    let mut config = quick_config();
    config.metadata_file = Some(metadata.clone());
    let gateway = Gateway::start_with(&cluster, config).await;
    let live = gateway.live("").await;
    assert_eq!(live["synced"], true);

    // The API fails every request for a while and the open watch is cut.
    cluster
        .sim
        .faults
        .fail_requests(500, Duration::from_secs(3));
    cluster.sim.faults.cut_watches();
    eventually(LIMIT, || async {
        gateway.live("").await["synced"] == false
    })
    .await
    .expect("the failure is reported");
    let frozen = gateway.live("").await["lastUpdate"].clone();
    let (code, body) = readyz(&gateway).await;
    assert_eq!(code, 200, "the last known state is still served");
    assert_eq!(body["synced"], false);
    assert_eq!(
        body["lastConfirmed"].as_str().map(|s| s.len() > 10),
        Some(true)
    );

    // A replica-local change while the API is down does not make the view fresh.
    std::fs::write(&metadata, "\"0\": {name: Renamed}\n").unwrap();
    eventually(LIMIT, || async {
        gateway.live("").await["instances"][0]["name"] == "Renamed"
    })
    .await
    .unwrap();
    let live = gateway.live("").await;
    if cluster.sim.faults.state().failing().is_some() {
        assert_eq!(live["synced"], false);
        assert_eq!(live["lastUpdate"], frozen);
    }

    // No write happens in the cluster: the recovery alone confirms the view again.
    eventually(LIMIT, || async { gateway.live("").await["synced"] == true })
        .await
        .expect("synced again once the API answers, without any change in the cluster");
    let live = gateway.live("").await;
    assert_ne!(live["lastUpdate"], frozen);
    assert_eq!(readyz(&gateway).await.1["synced"], true);
}

/// Starts a gateway whose metadata file says `name` for instance 0.
async fn replica_named(
    cluster: &SimCluster,
    dir: &std::path::Path,
    file: &str,
    name: &str,
) -> Gateway {
    let path = dir.join(file);
    std::fs::write(&path, format!("\"0\": {{name: {name}}}\n")).unwrap();
    let mut config = quick_config();
    config.metadata_file = Some(path);
    let gateway = Gateway::start_with(cluster, config).await;
    eventually(LIMIT, || async {
        gateway.live("").await["instances"][0]["name"] == name
    })
    .await
    .unwrap();
    gateway
}

/// Two replicas whose metadata files name instance-0 `name_a` and `name_b`; a client of
/// A sees one change (instance-1 turns booting), and B has seen it too. Returns the
/// cluster, replica B (A stays up until the end), and the id of that change on A.
async fn a_change_seen_on_a_then_resumed_on_b(
    name_a: &str,
    name_b: &str,
) -> (SimCluster, Gateway, Gateway, String, tempfile::TempDir) {
    let cluster = SimCluster::start().await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let dir = tempfile::tempdir().unwrap();
    let a = replica_named(&cluster, dir.path(), "a.yaml", name_a).await;
    let b = replica_named(&cluster, dir.path(), "b.yaml", name_b).await;
    let mut events = a.sse("", None).await;
    assert_eq!(events.next().await.event, "snapshot");
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, false)]));
    let event = events.next().await;
    assert!(event.event.starts_with("Instance"), "{}", event.event);
    eventually(LIMIT, || async {
        b.view().await.get("instance-1").map(|v| v.0.as_str()) == Some("booting")
    })
    .await
    .unwrap();
    (cluster, a, b, event.id, dir)
}

#[tokio::test]
async fn a_resume_on_a_replica_whose_local_inputs_differ_is_a_reset() {
    // B has seen the same change (same resourceVersion) but names instance-0 otherwise.
    let (_cluster, _a, b, id, _dir) = a_change_seen_on_a_then_resumed_on_b("Host", "Renamed").await;
    let mut resumed = b.sse("", Some(&id)).await;
    let first = resumed.next().await;
    assert_eq!(
        first.event, "reset",
        "B's view at {id} is not the one the client had"
    );
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["instances"][0]["name"], "Renamed");
}

#[tokio::test]
async fn a_resume_on_a_replica_with_the_same_local_inputs_continues() {
    let (cluster, _a, b, id, _dir) = a_change_seen_on_a_then_resumed_on_b("Host", "Host").await;
    let mut resumed = b.sse("", Some(&id)).await;
    cluster.put(&slice("emu-a", vec![pod(0, true), pod(1, true)]));
    let next = resumed.next().await;
    assert_eq!(next.event, "InstanceReady", "resumed without a reset");
}
