//! The simulated API server on the wire (plain HTTP through reqwest): exact framing of watch streams, status codes
//! and Status bodies, content negotiation, pagination tokens, robustness against bad input, and the fault routes.

mod support;

use futures::StreamExt;
use loco_discovery_sim::{ResourceKind, Sim, SimOptions};
use serde_json::{json, Value};
use std::time::Duration;
use support::SimCluster;
use tokio::time::timeout;

const NS: &str = "loco";
const WAIT: Duration = Duration::from_secs(10);
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/loco/endpointslices";

/// The shared simulator harness with a plain HTTP client.
struct Running {
    sim: Sim,
    http: reqwest::Client,
    cluster: SimCluster,
}

impl Running {
    async fn start(opts: SimOptions) -> Running {
        let cluster = SimCluster::start_with(opts).await;
        Running {
            sim: cluster.sim.clone(),
            http: reqwest::Client::new(),
            cluster,
        }
    }

    fn url(&self, path: &str) -> String {
        self.cluster.url(path)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let code = r.status().as_u16();
        assert_eq!(
            r.headers()[reqwest::header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
        (code, r.json().await.unwrap())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap())
    }

    fn put(&self, name: &str, obj: Value) -> Value {
        let mut obj = obj;
        obj["metadata"]["name"] = json!(name);
        self.sim
            .store
            .create(ResourceKind::EndpointSlice, NS, obj)
            .unwrap()
    }

    async fn stop(self) {
        self.cluster.stop().await
    }
}

fn slice(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "addressType": "IPv4",
           "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 8080}]})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A watch response read line by line.
struct WatchLines {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl WatchLines {
    async fn open(srv: &Running, path: &str, accept: Option<&str>) -> WatchLines {
        let mut req = srv.http.get(srv.url(path));
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[reqwest::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(r.headers()[reqwest::header::TRANSFER_ENCODING], "chunked");
        WatchLines {
            stream: r.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ended normally.
    async fn next(&mut self) -> Option<Value> {
        timeout(WAIT, async {
            loop {
                if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=pos).collect();
                    return Some(
                        serde_json::from_slice(&line[..line.len() - 1])
                            .expect("one JSON event per line"),
                    );
                }
                match self.stream.next().await {
                    Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                    Some(Err(e)) => panic!("watch stream broke: {e}"),
                    None => {
                        assert!(self.buf.is_empty(), "partial line at the end");
                        return None;
                    }
                }
            }
        })
        .await
        .expect("watch event in time")
    }
}

#[tokio::test]
async fn discovery_documents_are_legacy_json() {
    let srv = Running::start(SimOptions {
        server_minor: "33".into(),
        ..SimOptions::default()
    })
    .await;
    let (code, v) = srv.get("/version?timeout=5s").await;
    assert_eq!(
        (code, v["major"].as_str(), v["minor"].as_str()),
        (200, Some("1"), Some("33"))
    );
    assert_eq!(srv.get("/api").await.1["kind"], "APIVersions");
    assert_eq!(
        srv.get("/apis").await.1["groups"][0]["name"],
        "discovery.k8s.io"
    );
    let (_, core) = srv.get("/api/v1").await;
    let names: Vec<_> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("endpoints"), json!("namespaces")]);
    assert_eq!(
        srv.get("/apis/discovery.k8s.io/v1").await.1["resources"][0]["name"],
        "endpointslices"
    );
    // An aggregated-discovery Accept header still gets legacy JSON.
    let r = srv
        .http
        .get(srv.url("/apis"))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "APIGroupList");
    let (code, ns) = srv.get("/api/v1/namespaces/loco").await;
    assert_eq!(
        (code, ns["kind"].as_str(), ns["metadata"]["name"].as_str()),
        (200, Some("Namespace"), Some("loco"))
    );
    // OpenAPI v3: the two served group versions, each with its document.
    let (code, root) = srv.get("/openapi/v3").await;
    assert_eq!(code, 200);
    for gv in ["api/v1", "apis/discovery.k8s.io/v1"] {
        let url = root["paths"][gv]["serverRelativeURL"].as_str().unwrap();
        let (code, doc) = srv.get(url).await;
        assert_eq!(
            (code, doc["openapi"].as_str()),
            (200, Some("3.0.0")),
            "{gv}"
        );
    }
    let (code, st) = srv.get("/openapi/v3/apis/apps/v1").await;
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));
    // Endpoints responses carry the deprecation warning of a 1.33 server.
    let r = srv
        .http
        .get(srv.url("/api/v1/namespaces/loco/endpoints"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["warning"]
        .to_str()
        .unwrap()
        .contains("v1 Endpoints is deprecated"));
    srv.stop().await;
}

#[tokio::test]
async fn lists_strip_type_meta_and_page_consistently() {
    let srv = Running::start(SimOptions::default()).await;
    for n in ["a", "b", "c", "d", "e"] {
        srv.put(n, slice(json!({"app": "web"})));
    }
    let (code, list) = srv.get(&format!("{SLICES}?&limit=500")).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "EndpointSliceList");
    assert_eq!(list["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(list["metadata"]["resourceVersion"], "6");
    assert!(list["metadata"].get("continue").is_none());
    let item = &list["items"][0];
    assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
    assert_eq!(item["metadata"]["name"], "a");

    let (_, p1) = srv.get(&format!("{SLICES}?limit=2")).await;
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    srv.sim
        .store
        .delete(ResourceKind::EndpointSlice, NS, "c")
        .unwrap();
    let (_, p2) = srv.get(&format!("{SLICES}?limit=2&continue={token}")).await;
    assert_eq!(
        p2["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
    assert_eq!(
        p2["items"][0]["metadata"]["name"], "c",
        "the snapshot still has c"
    );
    let (code, _) = srv
        .get(&format!(
            "{SLICES}?limit=2&continue={token}&resourceVersion=3"
        ))
        .await;
    assert_eq!(code, 400);

    // A continue token older than the history is a 410 with the exact Status.
    srv.sim.faults.forget_history();
    let (code, st) = srv.get(&format!("{SLICES}?limit=2&continue={token}")).await;
    assert_eq!(code, 410);
    assert_eq!(
        st,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.","reason":"Expired","code":410})
    );

    // Selectors, form-decoded.
    srv.put("x", slice(json!({"app": "db"})));
    let (_, l) = srv
        .get(&format!("{SLICES}?labelSelector=app+in+%28db%2C+cache%29"))
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = srv
        .get(&format!("{SLICES}?fieldSelector=metadata.name%3Da"))
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = srv
        .get("/apis/discovery.k8s.io/v1/endpointslices?fieldSelector=metadata.namespace%3Dloco")
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 5);
    srv.stop().await;
}

#[tokio::test]
async fn tables_for_list_get_and_cluster_wide_list() {
    let srv = Running::start(SimOptions::default()).await;
    srv.put("a", slice(json!({})));
    let r = srv
        .http
        .get(srv.url(SLICES))
        .header("Accept", TABLE)
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<_> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(
        cols,
        [
            json!("Name"),
            json!("AddressType"),
            json!("Ports"),
            json!("Endpoints"),
            json!("Age")
        ]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!(["a", "IPv4", "8080", "10.0.0.1", "0s"])
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let r = srv
        .http
        .get(srv.url("/apis/discovery.k8s.io/v1/endpointslices"))
        .header("Accept", TABLE)
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "loco");
    let r = srv
        .http
        .get(srv.url(&format!("{SLICES}/a")))
        .header("Accept", TABLE)
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn watch_stream_framing_and_event_semantics() {
    let srv = Running::start(SimOptions::default()).await;
    srv.put("a", slice(json!({"app": "web"})));
    // rv unset: synthetic ADDED for what exists, with type meta.
    let mut all = WatchLines::open(&srv, &format!("{SLICES}?watch=true"), None).await;
    let ev = all.next().await.unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "EndpointSlice");
    assert_eq!(ev["object"]["apiVersion"], "discovery.k8s.io/v1");
    // rv=N: only changes after N, seen through a label selector.
    let start = srv.sim.store.current_resource_version();
    let mut web = WatchLines::open(
        &srv,
        &format!("{SLICES}?&watch=true&timeoutSeconds=290&labelSelector=app%3Dweb&allowWatchBookmarks=true&resourceVersion={start}"),
        None,
    )
    .await;
    let store = &srv.sim.store;
    let relabel = |app: &str| json!({"metadata": {"labels": {"app": app}}});
    let m = store
        .merge_patch(ResourceKind::EndpointSlice, NS, "a", &relabel("db"))
        .unwrap();
    let ev = web.next().await.unwrap();
    assert_eq!(
        (ev["type"].as_str(), rv(&ev["object"])),
        (Some("DELETED"), rv(&m)),
        "leaving the selection"
    );
    assert_eq!(
        ev["object"]["metadata"]["labels"]["app"], "web",
        "the previous state"
    );
    assert_eq!(all.next().await.unwrap()["type"], "MODIFIED");
    store
        .merge_patch(ResourceKind::EndpointSlice, NS, "a", &relabel("web"))
        .unwrap();
    assert_eq!(
        web.next().await.unwrap()["type"],
        "ADDED",
        "entering the selection"
    );
    let d = store.delete(ResourceKind::EndpointSlice, NS, "a").unwrap();
    let ev = web.next().await.unwrap();
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(rv(&ev["object"]), rv(&d));
    assert_eq!(
        rv(&d),
        store.current_resource_version(),
        "DELETED carries the deletion's RV"
    );
    drop(web);
    drop(all);

    // A too-old RV: 200, one ERROR event with the 410 Status, then the end of the stream.
    srv.sim.faults.forget_history();
    let mut old = WatchLines::open(
        &srv,
        &format!("{SLICES}?watch=true&resourceVersion={start}"),
        None,
    )
    .await;
    let ev = old.next().await.unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    let floor = store.current_resource_version();
    assert_eq!(
        ev["object"]["message"],
        format!("too old resource version: {start} ({floor})")
    );
    assert!(old.next().await.is_none());

    // timeoutSeconds ends the stream normally.
    let mut short = WatchLines::open(
        &srv,
        &format!("{SLICES}?watch=1&timeoutSeconds=1&resourceVersion={floor}"),
        None,
    )
    .await;
    assert!(short.next().await.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn bookmarks_and_table_watch() {
    let srv = Running::start(SimOptions {
        bookmark_interval: Duration::from_millis(100),
        ..SimOptions::default()
    })
    .await;
    let rv0 = srv.sim.store.current_resource_version();
    let mut w = WatchLines::open(
        &srv,
        &format!("{SLICES}?watch=true&allowWatchBookmarks=true&resourceVersion={rv0}"),
        None,
    )
    .await;
    let b = w.next().await.unwrap();
    assert_eq!(
        b,
        json!({"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": rv0.to_string()}}})
    );
    // Writes to the other kind advance the bookmark's RV too.
    srv.sim
        .store
        .create(
            ResourceKind::Endpoints,
            NS,
            json!({"metadata": {"name": "web"}}),
        )
        .unwrap();
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(rv(&b["object"]), rv0 + 1);

    let mut t = WatchLines::open(
        &srv,
        &format!("{SLICES}?watch=true&resourceVersion={}", rv0 + 1),
        Some(TABLE),
    )
    .await;
    srv.put("a", slice(json!({})));
    srv.put("b", slice(json!({})));
    let first = t.next().await.unwrap();
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(
        first["object"]["columnDefinitions"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(first["object"]["rows"][0]["cells"][0], "a");
    let second = t.next().await.unwrap();
    assert_eq!(second["object"]["columnDefinitions"], json!([]));
    srv.stop().await;
}

#[tokio::test]
async fn writes_answer_with_the_real_codes_and_bodies() {
    let srv = Running::start(SimOptions::default()).await;
    use reqwest::Method;
    let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"generateName": "web-", "namespace": "loco"}, "addressType": "IPv4"})
    .to_string();
    let (code, created) = srv
        .send(Method::POST, SLICES, "application/json", &body)
        .await;
    assert_eq!(code, 201);
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-"));
    let item = format!("{SLICES}/{name}");

    let (code, st) = srv
        .send(
            Method::POST,
            SLICES,
            "application/json",
            &json!({"metadata": {"name": name}, "addressType": "IPv4"}).to_string(),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(
        st,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":format!("endpointslices.discovery.k8s.io \"{name}\" already exists"),"reason":"AlreadyExists","details":{"name":name,"group":"discovery.k8s.io","kind":"endpointslices"},"code":409})
    );
    let (code, st) = srv
        .send(
            Method::POST,
            SLICES,
            "application/json",
            &json!({"metadata": {"name": "x", "namespace": "other"}, "addressType": "IPv4"})
                .to_string(),
        )
        .await;
    assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")));
    let (code, st) = srv
        .send(
            Method::POST,
            SLICES,
            "application/json",
            &json!({"metadata": {"name": "x"}}).to_string(),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        st["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "addressType"})
    );
    let (code, _) = srv
        .send(
            Method::POST,
            &format!("{SLICES}?dryRun=All"),
            "application/json",
            &json!({"metadata": {"name": "dry"}, "addressType": "IPv4"}).to_string(),
        )
        .await;
    assert_eq!(code, 201);
    assert!(srv
        .sim
        .store
        .get(ResourceKind::EndpointSlice, NS, "dry")
        .is_none());

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, st) = srv
        .send(Method::PUT, &item, "application/json", &stale.to_string())
        .await;
    assert_eq!(code, 409);
    assert_eq!(st["reason"], "Conflict");
    assert!(st["message"].as_str().unwrap().ends_with("the object has been modified; please apply your changes to the latest version and try again"));

    let (code, p) = srv
        .send(
            Method::PATCH,
            &item,
            "application/json-patch+json",
            r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#,
        )
        .await;
    assert_eq!(
        (code, p["metadata"]["labels"]["a"].as_str()),
        (200, Some("b"))
    );
    let (code, p) = srv
        .send(
            Method::PATCH,
            &item,
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"a":null}}}"#,
        )
        .await;
    assert_eq!((code, p["metadata"]["labels"].clone()), (200, json!({})));
    let (code, st) = srv
        .send(
            Method::PATCH,
            &item,
            "application/vnd.unknown-patch+json",
            "{}",
        )
        .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    let (code, st) = srv
        .send(
            Method::DELETE,
            &item,
            "application/json",
            r#"{"propagationPolicy":"Background"}"#,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(st["status"], "Success");
    assert_eq!(st["details"]["kind"], "endpointslices");
    assert_eq!(st["details"]["uid"], created["metadata"]["uid"]);
    let (code, st) = srv
        .send(Method::DELETE, &item, "application/json", "{}")
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        st["message"],
        format!("endpointslices.discovery.k8s.io \"{name}\" not found")
    );
    let (code, st) = srv.get("/api/v1/namespaces/loco/endpoints/web").await;
    assert_eq!(code, 404);
    assert_eq!(st["details"], json!({"name": "web", "kind": "endpoints"}));
    srv.stop().await;
}

#[tokio::test]
async fn bad_input_gets_400_statuses_never_a_panic() {
    let srv = Running::start(SimOptions::default()).await;
    use reqwest::Method;
    for q in [
        "labelSelector=app+in+%28",
        "labelSelector=%21%21",
        "fieldSelector=spec.x%3D1",
        "resourceVersion=abc",
        "resourceVersion=-5",
        "limit=abc",
        "watch=maybe",
        "resourceVersionMatch=Exact",
        "resourceVersion=0&resourceVersionMatch=Exact",
        "continue=not-a-token",
        "watch=true&timeoutSeconds=x",
        "watch=true&sendInitialEvents=true",
    ] {
        let (code, st) = srv.get(&format!("{SLICES}?{q}")).await;
        assert_eq!((code, st["kind"].as_str()), (400, Some("Status")), "{q}");
    }
    let (code, l) = srv
        .get(&format!("{SLICES}?limit=99999999999999999999999"))
        .await;
    assert_eq!((code, l["kind"].as_str()), (200, Some("EndpointSliceList")));
    let (code, _) = srv.get(&format!("{SLICES}?limit=-3")).await;
    assert_eq!(code, 200);
    for body in ["{", "[1,2]", "\"x\"", "null", ""] {
        let (code, st) = srv
            .send(Method::POST, SLICES, "application/json", body)
            .await;
        assert_eq!(
            (code, st["kind"].as_str()),
            (400, Some("Status")),
            "{body:?}"
        );
    }
    let (code, st) = srv
        .send(Method::PUT, SLICES, "application/json", "{}")
        .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, st) = srv
        .get("/apis/discovery.k8s.io/v1/namespaces/loco/widgets")
        .await;
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));
    let big = "x".repeat(9 * 1024 * 1024);
    let (code, _) = srv
        .send(Method::POST, SLICES, "application/json", &big)
        .await;
    assert_eq!(code, 413);
    srv.stop().await;
}

#[tokio::test]
async fn fault_routes_fail_stall_and_cut() {
    let srv = Running::start(SimOptions::default()).await;
    use reqwest::Method;
    let admin = |path: &str| srv.http.post(srv.url(path)).send();
    let r = admin("/sim/faults/errors?status=500&seconds=30")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, st) = srv.get(SLICES).await;
    assert_eq!((code, st["code"].as_u64()), (500, Some(500)));
    let state: Value = srv
        .http
        .get(srv.url("/sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["failing"]["status"], 500);
    admin("/sim/faults/clear").await.unwrap();
    assert_eq!(srv.get(SLICES).await.0, 200);
    assert_eq!(
        admin("/sim/faults/errors?status=200&seconds=1")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        admin("/sim/faults/stall?seconds=-1")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(admin("/sim/faults/nonsense").await.unwrap().status(), 404);

    // A stalled request is answered once the stall is cleared.
    admin("/sim/faults/stall?seconds=60").await.unwrap();
    let pending = tokio::spawn({
        let http = srv.http.clone();
        let url = srv.url(SLICES);
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    admin("/sim/faults/clear").await.unwrap();
    assert_eq!(timeout(WAIT, pending).await.unwrap().unwrap(), 200);

    // A stalled watch sends nothing until the stall ends; a cut ends it normally.
    let rv0 = srv.sim.store.current_resource_version();
    let mut w = WatchLines::open(
        &srv,
        &format!("{SLICES}?watch=true&resourceVersion={rv0}"),
        None,
    )
    .await;
    srv.sim.faults.stall(Duration::from_millis(400));
    let t0 = std::time::Instant::now();
    srv.put("a", slice(json!({})));
    assert_eq!(w.next().await.unwrap()["type"], "ADDED");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(srv.sim.faults.watches_open(), 1);
    admin("/sim/faults/cut-watches").await.unwrap();
    assert!(w.next().await.is_none());
    let (code, _) = srv
        .send(
            Method::POST,
            "/sim/faults/forget-history",
            "application/json",
            "",
        )
        .await;
    assert_eq!(code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn many_watches_share_one_broadcast_and_fall_back_to_history_when_behind() {
    let srv = Running::start(SimOptions::default()).await;
    let rv0 = srv.sim.store.current_resource_version();
    let mut watches = Vec::new();
    for _ in 0..50 {
        watches.push(
            WatchLines::open(
                &srv,
                &format!("{SLICES}?watch=true&resourceVersion={rv0}"),
                None,
            )
            .await,
        );
    }
    // More writes than the broadcast holds, while nobody reads: every watch catches up from the history.
    let n = 3000;
    for i in 0..n {
        srv.sim
            .store
            .create(
                ResourceKind::EndpointSlice,
                NS,
                json!({"metadata": {"name": format!("s{i}")}, "addressType": "IPv4"}),
            )
            .unwrap();
    }
    for w in watches.iter_mut().take(3) {
        let mut last = rv0;
        for _ in 0..n {
            let ev = w.next().await.unwrap();
            let r = rv(&ev["object"]);
            assert_eq!(r, last + 1, "no gap, no duplicate");
            last = r;
        }
    }
    assert_eq!(srv.sim.faults.watches_open(), 50);
    drop(watches);
    timeout(WAIT, async {
        while srv.sim.faults.watches_open() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("closed connections end their watches");
    srv.stop().await;
}

#[tokio::test]
async fn a_watch_from_a_resource_version_the_server_never_reached_is_refused_as_too_large() {
    let srv = Running::start(SimOptions {
        too_new_wait: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await;
    srv.put("a", slice(json!({"app": "web"})));
    let current = srv.sim.store.current_resource_version();
    let far = current + 1000;
    let started = std::time::Instant::now();
    let (code, status) = srv
        .get(&format!("{SLICES}?watch=true&resourceVersion={far}"))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waits first"
    );
    assert_eq!(code, 504);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Timeout");
    assert_eq!(
        status["message"],
        format!("Too large resource version: {far}, current: {current}")
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1);

    // A version that arrives while the watch waits is served normally.
    let next = current + 1;
    let url = srv.url(&format!("{SLICES}?watch=true&resourceVersion={current}"));
    let pending = tokio::spawn({
        let http = srv.http.clone();
        let url = srv.url(&format!("{SLICES}?watch=true&resourceVersion={next}"));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.put("b", slice(json!({"app": "web"})));
    assert_eq!(timeout(WAIT, pending).await.unwrap().unwrap(), 200);
    let ok = srv.http.get(url).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
}

/// `dryRun=All` on every write: the answer is what the write would store, and nothing is
/// stored, no watch sees an event and the resourceVersion does not move.
#[tokio::test]
async fn dry_run_writes_answer_as_if_written_and_change_nothing() {
    use reqwest::Method;
    let srv = Running::start(SimOptions::default()).await;
    let store = srv.sim.store.clone();
    let mut events = store.subscribe();
    let slice = |ip: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web", "namespace": NS, "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]})
        .to_string()
    };
    let item = format!("{SLICES}/web");
    let dry = |path: &str| format!("{path}?dryRun=All&fieldManager=tester");
    let rv = store.current_resource_version();

    let (code, created) = srv
        .send(
            Method::POST,
            &dry(SLICES),
            "application/json",
            &slice("10.0.0.1"),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["name"], "web");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "tester");
    let (code, applied) = srv
        .send(
            Method::PATCH,
            &dry(&item),
            "application/apply-patch+yaml",
            &slice("10.0.0.1"),
        )
        .await;
    assert_eq!(code, 201, "an apply that would create: {applied}");
    assert!(store.get(ResourceKind::EndpointSlice, NS, "web").is_none());

    srv.put("web", serde_json::from_str(&slice("10.0.0.1")).unwrap());
    let stored = store.get(ResourceKind::EndpointSlice, NS, "web").unwrap();
    let rv_after_put = store.current_resource_version();
    assert_eq!(rv_after_put, rv + 1);
    while events.try_recv().is_ok() {}

    let writes = [
        (Method::PUT, "application/json", slice("10.0.0.2")),
        (
            Method::PATCH,
            "application/merge-patch+json",
            json!({"endpoints": [{"addresses": ["10.0.0.3"]}]}).to_string(),
        ),
        (
            Method::PATCH,
            "application/strategic-merge-patch+json",
            json!({"endpoints": [{"addresses": ["10.0.0.4"]}]}).to_string(),
        ),
        (
            Method::PATCH,
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/addressType", "value": "IPv4"}]).to_string(),
        ),
        (
            Method::PATCH,
            "application/apply-patch+yaml",
            slice("10.0.0.5"),
        ),
    ];
    for (method, content_type, body) in writes {
        let (code, answer) = srv
            .send(method.clone(), &dry(&item), content_type, &body)
            .await;
        assert_eq!(code, 200, "{method} {content_type}: {answer}");
        assert_eq!(answer["metadata"]["uid"], stored["metadata"]["uid"]);
    }
    let (_, answer) = srv
        .send(
            Method::PATCH,
            &dry(&item),
            "application/strategic-merge-patch+json",
            r#"{"endpoints":[{"addresses":["10.0.0.4"]}]}"#,
        )
        .await;
    assert_eq!(
        answer["endpoints"][0]["addresses"][0], "10.0.0.4",
        "the answer shows the change"
    );
    let (code, deleted) = srv
        .send(
            Method::DELETE,
            &dry(&item),
            "application/json",
            r#"{"propagationPolicy":"Background"}"#,
        )
        .await;
    assert_eq!((code, deleted["status"].as_str()), (200, Some("Success")));

    assert_eq!(
        store.current_resource_version(),
        rv_after_put,
        "no resourceVersion moved"
    );
    assert_eq!(
        store.get(ResourceKind::EndpointSlice, NS, "web").unwrap(),
        stored
    );
    assert!(events.try_recv().is_err(), "no watch event");
    srv.stop().await;
}
