//! The simulated API server driven through kube-rs: typed `Api<EndpointSlice>` calls and `kube::runtime::watcher`,
//! including its recovery from cut watches, forgotten history (410) and failing requests.

mod support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use loco_discovery_sim::{ResourceKind, Sim, SimOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::SimCluster;
use tokio::sync::mpsc;
use tokio::time::timeout;

const NS: &str = "loco";
const WAIT: Duration = Duration::from_secs(10);

/// The shared simulator harness.
struct Running {
    sim: Sim,
    addr: SocketAddr,
    cluster: SimCluster,
}

impl Running {
    async fn start(opts: SimOptions) -> Running {
        let cluster = SimCluster::start_with(opts).await;
        Running {
            sim: cluster.sim.clone(),
            addr: cluster.addr,
            cluster,
        }
    }

    fn client(&self) -> Client {
        let mut cfg = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        cfg.default_namespace = NS.into();
        Client::try_from(cfg).unwrap()
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client(), NS)
    }

    async fn stop(self) {
        self.cluster.stop().await
    }
}

fn slice(name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            port: Some(8080),
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_selectors_and_pagination_through_kube_rs() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    let pp = PostParams::default();
    for (i, svc) in ["web", "web", "web", "db", "db"].iter().enumerate() {
        let created = api
            .create(&pp, &slice(&format!("{svc}-{i}"), svc, &["10.0.0.1"]))
            .await
            .unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some());
        assert!(
            !created
                .annotations()
                .contains_key("endpoints.kubernetes.io/last-change-trigger-time"),
            "only the controllers write the trigger time"
        );
    }
    let err = api
        .create(&pp, &slice("web-0", "web", &[]))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 409);

    let got = api.get("web-0").await.unwrap();
    assert_eq!(got.endpoints[0].addresses, ["10.0.0.1"]);

    let web = api
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 3);
    let both = api
        .list(&ListParams::default().labels("kubernetes.io/service-name in (web, db)"))
        .await
        .unwrap();
    assert_eq!(both.items.len(), 5);
    let not_web = api
        .list(&ListParams::default().labels("kubernetes.io/service-name!=web"))
        .await
        .unwrap();
    assert_eq!(not_web.items.len(), 2);

    // Pages of 2 over 5 objects, one snapshot: a write between pages does not show.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    let mut list_rv = None;
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|s| s.name_any()));
        let rv = page.metadata.resource_version.clone().unwrap();
        assert_eq!(
            *list_rv.get_or_insert(rv.clone()),
            rv,
            "every page carries the list RV"
        );
        if names.len() == 2 {
            api.create(&pp, &slice("aaa-late", "web", &[]))
                .await
                .unwrap();
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(2).continue_token(&c),
            None => break,
        }
    }
    assert_eq!(names, ["db-3", "db-4", "web-0", "web-1", "web-2"]);

    // Replace with a stale resourceVersion is a conflict; with the current one it succeeds.
    let mut stale = got.clone();
    api.patch(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    stale.endpoints = Vec::new();
    assert_eq!(
        api_code(api.replace("web-0", &pp, &stale).await.unwrap_err()),
        409
    );
    let mut fresh = api.get("web-0").await.unwrap();
    assert_eq!(fresh.labels().get("x").map(String::as_str), Some("1"));
    assert_eq!(
        fresh.metadata.generation,
        Some(2),
        "a label change bumps the generation"
    );
    fresh.endpoints = vec![];
    let replaced = api.replace("web-0", &pp, &fresh).await.unwrap();
    assert!(replaced.endpoints.is_empty());
    assert_eq!(replaced.metadata.generation, Some(3));

    // Merge patch flips a condition; a strategic merge patch merges too.
    let patched = api
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"endpoints": [{"addresses": ["10.0.0.9"], "conditions": {"serving": false}}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.endpoints[0].conditions.as_ref().unwrap().serving,
        Some(false)
    );
    let patched = api
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"metadata": {"labels": {"tier": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["tier"], "a");
    assert_eq!(patched.endpoints[0].addresses, ["10.0.0.9"]);

    // Validation: addressType is immutable.
    let err = api
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"addressType": "IPv6"})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 422);

    // Delete answers a Success Status; the second delete is a 404.
    let deleted = api.delete("web-2", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert_eq!(status.details.unwrap().kind, "endpointslices");
    assert_eq!(
        api_code(
            api.delete("web-2", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(api_code(api.get("web-2").await.unwrap_err()), 404);
    assert!(srv
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, "web-2")
        .is_none());

    // Cluster-wide list sees every namespace.
    srv.sim.store.create_namespace("other", false).unwrap();
    srv.sim
        .store
        .create(
            ResourceKind::EndpointSlice,
            "other",
            serde_json::to_value(slice("x", "web", &[])).unwrap(),
        )
        .unwrap();
    let all: Api<EndpointSlice> = Api::all(srv.client());
    let every = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(every.items.len(), 6);
    srv.stop().await;
}

#[tokio::test]
async fn endpoints_through_kube_rs() {
    let srv = Running::start(SimOptions::default()).await;
    let api: Api<Endpoints> = Api::namespaced(srv.client(), NS);
    let ep: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]
    }))
    .unwrap();
    // PUT to a missing Endpoints creates it.
    let created = api
        .replace("web", &PostParams::default(), &ep)
        .await
        .unwrap();
    assert!(created.metadata.resource_version.is_some());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let slices = srv.slices();
    assert_eq!(
        api_code(
            slices
                .replace("web", &PostParams::default(), &slice("web", "web", &[]))
                .await
                .unwrap_err()
        ),
        404,
        "PUT to a missing EndpointSlice is NotFound"
    );
    srv.stop().await;
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String),
    Delete(String),
    Error(String),
}

/// Runs a watcher (with the default backoff) in a task and forwards what it yields.
fn spawn_watcher(api: Api<EndpointSlice>, cfg: watcher::Config) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let seen = match item {
                Ok(Event::Init) => Seen::Init,
                Ok(Event::InitApply(o)) => Seen::InitApply(o.name_any()),
                Ok(Event::InitDone) => Seen::InitDone,
                Ok(Event::Apply(o)) => Seen::Apply(o.name_any()),
                Ok(Event::Delete(o)) => Seen::Delete(o.name_any()),
                Err(e) => Seen::Error(e.to_string()),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(WAIT, rx.recv())
        .await
        .expect("watcher event in time")
        .expect("watcher alive")
}

/// Reads events until `want` is seen; returns everything read before it.
async fn until(rx: &mut mpsc::UnboundedReceiver<Seen>, want: Seen) -> Vec<Seen> {
    let mut before = Vec::new();
    loop {
        let s = next(rx).await;
        if s == want {
            return before;
        }
        before.push(s);
    }
}

async fn wait_for_watches(sim: &Sim, n: usize) {
    timeout(WAIT, async {
        while sim.faults.watches_open() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "expected {n} open watches, have {}",
            sim.faults.watches_open()
        )
    });
}

#[tokio::test]
async fn watcher_follows_writes_and_survives_cuts_without_relisting() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    let pp = PostParams::default();
    api.create(&pp, &slice("a", "web", &["10.0.0.1"]))
        .await
        .unwrap();
    api.create(&pp, &slice("b", "web", &["10.0.0.2"]))
        .await
        .unwrap();
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default());
    assert_eq!(next(&mut rx).await, Seen::Init);
    let mut init = vec![next(&mut rx).await, next(&mut rx).await];
    init.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        init,
        [Seen::InitApply("a".into()), Seen::InitApply("b".into())]
    );
    assert_eq!(next(&mut rx).await, Seen::InitDone);
    wait_for_watches(&srv.sim, 1).await;

    api.create(&pp, &slice("c", "web", &["10.0.0.3"]))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("c".into()));
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("a".into()));
    api.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(next(&mut rx).await, Seen::Delete("b".into()));

    // Cut the watch and write at once, racing the re-watch: the watcher resumes from its last RV, sees every
    // write exactly once and never re-lists.
    for round in 0..3 {
        srv.sim.faults.cut_watches();
        let name = format!("cut-{round}");
        api.create(&pp, &slice(&name, "web", &[])).await.unwrap();
        api.delete("c", &DeleteParams::default()).await.ok();
        let before = until(&mut rx, Seen::Apply(name)).await;
        assert!(
            before
                .iter()
                .all(|s| matches!(s, Seen::Delete(n) if n == "c")),
            "round {round}: unexpected {before:?}"
        );
    }
    wait_for_watches(&srv.sim, 1).await;
    api.create(&pp, &slice("after", "web", &[])).await.unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("after".into()));
    drop(rx);
    srv.stop().await;
}

#[tokio::test]
async fn watcher_relists_after_forgotten_history_and_ends_with_the_true_state() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    let pp = PostParams::default();
    api.create(&pp, &slice("a", "web", &[])).await.unwrap();
    api.create(&pp, &slice("gone", "web", &[])).await.unwrap();
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default());
    until(&mut rx, Seen::InitDone).await;
    wait_for_watches(&srv.sim, 1).await;

    // Hold the re-watch (stall), write and forget the history meanwhile, then let it through.
    srv.sim.faults.stall(Duration::from_secs(60));
    srv.sim.faults.cut_watches();
    wait_for_watches(&srv.sim, 0).await;
    // Writes go in-process: HTTP requests are stalled too.
    srv.sim
        .store
        .delete(ResourceKind::EndpointSlice, NS, "gone")
        .unwrap();
    srv.sim
        .store
        .create(
            ResourceKind::EndpointSlice,
            NS,
            serde_json::to_value(slice("b", "web", &[])).unwrap(),
        )
        .ok();
    srv.sim.faults.forget_history();
    srv.sim.faults.clear();

    let before = until(&mut rx, Seen::Init).await;
    assert!(
        before
            .iter()
            .any(|s| matches!(s, Seen::Error(e) if e.contains("410") || e.contains("too old"))),
        "the watcher saw the 410 before re-listing: {before:?}"
    );
    let mut relisted = until(&mut rx, Seen::InitDone).await;
    relisted.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        relisted,
        [Seen::InitApply("a".into()), Seen::InitApply("b".into())]
    );
    api.create(&pp, &slice("c", "web", &[])).await.unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("c".into()));
    srv.stop().await;
}

#[tokio::test]
async fn watcher_errors_while_requests_fail_then_recovers() {
    let srv = Running::start(SimOptions::default()).await;
    // Without kube's own retry layer, so that the 503s reach the watcher.
    let mut cfg = kube::Config::new(format!("http://{}", srv.addr).parse().unwrap());
    cfg.default_retry = false;
    let api: Api<EndpointSlice> = Api::namespaced(Client::try_from(cfg).unwrap(), NS);
    let pp = PostParams::default();
    api.create(&pp, &slice("a", "web", &[])).await.unwrap();
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default());
    until(&mut rx, Seen::InitDone).await;
    wait_for_watches(&srv.sim, 1).await;

    srv.sim
        .faults
        .fail_requests(503, Duration::from_millis(1500));
    assert_eq!(api_code(api.get("a").await.unwrap_err()), 503);
    srv.sim.faults.cut_watches();
    // Written in-process: the store keeps working while HTTP requests fail.
    srv.sim
        .store
        .create(
            ResourceKind::EndpointSlice,
            NS,
            serde_json::to_value(slice("b", "web", &[])).unwrap(),
        )
        .unwrap();
    let before = until(&mut rx, Seen::Apply("b".into())).await;
    assert!(
        before.iter().any(
            |s| matches!(s, Seen::Error(e) if e.contains("503") || e.contains("unable to handle"))
        ),
        "the watcher reported the failing requests: {before:?}"
    );
    assert!(
        !before.contains(&Seen::Init),
        "a failed watch start does not re-list"
    );
    api.get("a").await.unwrap();

    // A client with kube's default retry rides out a short 503 window (Retry-After: 1) by itself.
    srv.sim
        .faults
        .fail_requests(503, Duration::from_millis(800));
    srv.slices().get("a").await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn watcher_with_label_selector_sees_objects_enter_and_leave() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    let pp = PostParams::default();
    api.create(&pp, &slice("w", "web", &[])).await.unwrap();
    api.create(&pp, &slice("d", "db", &[])).await.unwrap();
    let cfg = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let mut rx = spawn_watcher(api.clone(), cfg);
    assert_eq!(
        until(&mut rx, Seen::InitDone).await,
        [Seen::Init, Seen::InitApply("w".into())]
    );
    wait_for_watches(&srv.sim, 1).await;
    let relabel = |svc: &str| {
        Patch::Merge(
            serde_json::json!({"metadata": {"labels": {"kubernetes.io/service-name": svc}}}),
        )
    };
    api.patch("w", &PatchParams::default(), &relabel("other"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Delete("w".into()));
    api.patch("d", &PatchParams::default(), &relabel("web"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("d".into()));
    srv.stop().await;
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    api.create(&PostParams::default(), &slice("a", "web", &[]))
        .await
        .unwrap();
    let mut rx = spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    assert_eq!(
        until(&mut rx, Seen::InitDone).await,
        [Seen::Init, Seen::InitApply("a".into())]
    );
    api.create(&PostParams::default(), &slice("b", "web", &[]))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Apply("b".into()));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watches_and_serve_returns() {
    let srv = Running::start(SimOptions::default()).await;
    let api = srv.slices();
    let stream = watcher::watcher(api.clone(), watcher::Config::default());
    let consumer = tokio::spawn(async move { stream.try_collect::<Vec<_>>().await });
    wait_for_watches(&srv.sim, 1).await;
    let sim = srv.sim.clone();
    srv.stop().await;
    assert_eq!(sim.faults.watches_open(), 0);
    consumer.abort();
}

#[tokio::test]
async fn kubeconfig_is_usable_by_kube_rs_infer() {
    let srv = Running::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    loco_discovery_sim::write_kubeconfig(&path, srv.addr, NS).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, NS);
    let client = Client::try_from(cfg).unwrap();
    let api: Api<EndpointSlice> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &slice("k", "web", &[]))
        .await
        .unwrap();
    assert!(srv
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, "k")
        .is_some());
    srv.stop().await;
}
