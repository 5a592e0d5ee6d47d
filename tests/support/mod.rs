//! Shared test harness: the simulated API and gateways on 127.0.0.1:0, HTTP, SSE and
//! WebSocket clients, and an independent reading of the simulated cluster's truth.
#![allow(dead_code)]

pub mod kubectl;
pub mod process;
pub mod scrape;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use loco_discovery::GatewayConfig;
use loco_discovery_sim::{ResourceKind, Sim, SimOptions, Store, TRIGGER_TIME_ANNOTATION};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NS: &str = "loco";
pub const SVC: &str = "loco-loco-emulator";

/// The simulated API server, running until dropped or [stopped](SimCluster::stop).
pub struct SimCluster {
    pub sim: Sim,
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SimCluster {
    pub async fn start() -> Self {
        Self::start_with(SimOptions::default()).await
    }

    pub async fn start_with(options: SimOptions) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), options).await
    }

    /// A simulator on `addr`: on the address of one that was stopped, it stands for an
    /// API server restarted (or replaced) behind the same address.
    pub async fn start_at(addr: SocketAddr, options: SimOptions) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = Sim::new(options);
        let stop = CancellationToken::new();
        let (s, token) = (sim.clone(), stop.clone());
        let task = tokio::spawn(async move { s.serve(listener, token.cancelled_owned()).await });
        Self {
            sim,
            addr,
            stop,
            task: Some(task),
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Kills the server like `kill -9`: every connection is dropped at once, open watch
    /// responses end mid-stream, and the address is free again.
    pub async fn kill(mut self) {
        let task = self.task.take().expect("stopped once");
        task.abort();
        let _ = task.await;
    }

    /// Shuts the server down and requires `serve` to return cleanly within 10 s (open
    /// watches must end).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }

    pub fn store(&self) -> &Store {
        &self.sim.store
    }

    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        loco_discovery::kube_client(kube::Config::new(url)).unwrap()
    }

    /// Creates or replaces a slice as the EndpointSlice controller writes it: with the
    /// trigger-time annotation set to now, unless the slice carries one.
    pub fn put(&self, slice: &EndpointSlice) {
        let mut value = serde_json::to_value(slice).unwrap();
        let annotations = &mut value["metadata"]["annotations"];
        if annotations.get(TRIGGER_TIME_ANNOTATION).is_none() {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            annotations[TRIGGER_TIME_ANNOTATION] = Value::String(now);
        }
        let name = slice.metadata.name.clone().unwrap();
        let namespace = slice.metadata.namespace.clone().unwrap();
        let store = self.store();
        if store
            .get(ResourceKind::EndpointSlice, &namespace, &name)
            .is_some()
        {
            store
                .replace(ResourceKind::EndpointSlice, &namespace, &name, value)
                .unwrap();
        } else {
            store
                .create(ResourceKind::EndpointSlice, &namespace, value)
                .unwrap();
        }
    }

    pub fn remove(&self, name: &str) {
        self.store()
            .delete(ResourceKind::EndpointSlice, NS, name)
            .unwrap();
    }

    /// The instances the cluster holds now, read straight from the stored JSON (not
    /// through the gateway's index): id → (state, podIP).
    pub fn truth(&self, service: &str) -> BTreeMap<String, (String, String)> {
        let (slices, _) = self.store().list(ResourceKind::EndpointSlice, Some(NS));
        let mut truth = BTreeMap::new();
        for slice in slices {
            if slice["metadata"]["labels"]["kubernetes.io/service-name"] != service {
                continue;
            }
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                let pod = endpoint["targetRef"]["name"].as_str().unwrap();
                let ordinal = pod.rsplit('-').next().unwrap();
                let c = &endpoint["conditions"];
                let status = if c["terminating"] == true {
                    "offline"
                } else if c["serving"] == false {
                    "booting"
                } else {
                    "ready"
                };
                let ip = endpoint["addresses"][0].as_str().unwrap().to_owned();
                truth.insert(format!("instance-{ordinal}"), (status.to_owned(), ip));
            }
        }
        truth
    }
}

/// One gateway, running until dropped or stopped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Gateway {
    pub async fn start(cluster: &SimCluster) -> Self {
        Self::start_with(cluster, GatewayConfig::new(NS, vec![SVC.into()])).await
    }

    pub async fn start_with(cluster: &SimCluster, config: GatewayConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(loco_discovery::run(
            config,
            cluster.client(),
            listener,
            stop.clone(),
        ));
        let gateway = Self { addr, stop, task };
        gateway.wait_ready().await;
        gateway
    }

    /// Waits for the gateway's `run` to return; false if it did not within `limit`.
    pub async fn finished_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, &mut self.task).await.is_ok()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(10), || async {
            reqwest::get(self.url("/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
        .expect("gateway ready");
    }

    pub async fn live(&self, query: &str) -> Value {
        reqwest::get(self.url(&format!("/api/instances/live{query}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The gateway's view as id → (state, podIP).
    pub async fn view(&self) -> BTreeMap<String, (String, String)> {
        view_of(&self.live("").await["instances"])
    }

    pub async fn sse(&self, query: &str, last_event_id: Option<&str>) -> SseClient {
        SseClient::connect(
            &self.url(&format!("/api/instances/stream{query}")),
            last_event_id,
        )
        .await
    }
}

/// A gateway with no cluster (the static mode): its URL and the token that stops it.
pub async fn start_without_cluster(config: GatewayConfig) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(loco_discovery::run_gateway(
        config,
        None,
        listener,
        None,
        stop.clone(),
    ));
    (url, stop)
}

pub fn view_of(instances: &Value) -> BTreeMap<String, (String, String)> {
    instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                (
                    i["state"].as_str().unwrap().to_owned(),
                    i["addresses"]["podIP"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// Polls `check` every 20 ms until it holds or `limit` passes. Returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("condition not met within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the gateway at `url` answers `/readyz` with 200.
pub async fn ready_at(url: &str, limit: Duration) {
    let probe = format!("{url}/readyz");
    let ready = || async {
        let answer = reqwest::get(probe.as_str()).await;
        answer.is_ok_and(|r| r.status() == 200)
    };
    eventually(limit, ready).await.unwrap();
}

/// A spec-following SSE client (eventsource-stream) over reqwest.
pub struct SseClient {
    events: Pin<Box<dyn Stream<Item = Event> + Send>>,
    pub last_id: Option<String>,
}

impl SseClient {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "stream refused");
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(|e| async move { e.ok() });
        Self {
            events: Box::pin(events),
            last_id: last_event_id.map(str::to_owned),
        }
    }

    /// The next event, or `None` when the stream ends or nothing comes within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        let event = tokio::time::timeout(limit, self.events.next())
            .await
            .ok()??;
        if !event.id.is_empty() {
            self.last_id = Some(event.id.clone());
        }
        Some(event)
    }

    /// The next `n` events (each within 10 s), then nothing more for 300 ms: exactly `n`.
    pub async fn exactly(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        if let Some(extra) = self.next_within(Duration::from_millis(300)).await {
            panic!("more than {n} events: also {} {}", extra.event, extra.id);
        }
        events
    }

    pub async fn next(&mut self) -> Event {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }
}

/// What a client rebuilds from a stream: instances by key, from snapshot/reset and deltas.
#[derive(Debug, Default, Clone)]
pub struct Rebuilt {
    pub instances: BTreeMap<String, Value>,
}

impl Rebuilt {
    /// Applies one event by the documented rule: snapshot/reset replace everything,
    /// InstanceRemoved removes, any other delta upserts.
    pub fn apply(&mut self, event: &str, data: &str) {
        let value: Value = serde_json::from_str(data).unwrap();
        match event {
            "snapshot" | "reset" => {
                self.instances = value["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| (i["key"].as_str().unwrap().to_owned(), i.clone()))
                    .collect();
            }
            "InstanceRemoved" => {
                self.instances.remove(value["key"].as_str().unwrap());
            }
            "InstanceAdded" | "InstanceReady" | "InstanceNotReady" | "InstanceUpdated" => {
                self.instances.insert(
                    value["key"].as_str().unwrap().to_owned(),
                    value["instance"].clone(),
                );
            }
            other => panic!("unexpected event {other}"),
        }
    }

    /// id → (state, podIP), comparable with [`Gateway::view`].
    pub fn view(&self) -> BTreeMap<String, (String, String)> {
        view_of(&Value::Array(self.instances.values().cloned().collect()))
    }
}

/// A ready endpoint of emulator pod `n`.
pub fn pod(n: u32, serving: bool) -> Endpoint {
    loco_discovery_core::slices::mk_endpoint(
        &format!("{SVC}-{n}"),
        &format!("10.0.0.{}", n + 10),
        serving,
        false,
    )
}

pub fn slice(name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    loco_discovery_core::slices::mk_slice(NS, name, SVC, endpoints)
}

/// A stream subscriber that stops reading: a raw connection with a small receive buffer.
/// Small, but well above one loopback segment (64 KiB): a window that cannot open by a
/// full segment makes TCP fall back to slow zero-window probing.
pub async fn slow_subscriber(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut slow = small_window(addr).await;
    slow.write_all(b"GET /api/instances/stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    slow
}

/// A connection with a small receive buffer (see [`slow_subscriber`]).
async fn small_window(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(256 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket subscriber opened by hand on a small receive buffer: after the handshake
/// any bytes can be sent, and nothing is read unless the caller reads.
pub async fn raw_ws(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = small_window(addr).await;
    let request = "GET /api/instances/ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n\
                   upgrade: websocket\r\nsec-websocket-version: 13\r\n\
                   sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Writes `rounds` versions of a 100-endpoint slice: 100 deltas each, enough to fill
/// every socket buffer between the gateway and a subscriber that does not read.
pub fn churn_100(cluster: &SimCluster, rounds: u32) {
    for round in 0..rounds {
        let endpoints = (0..100).map(|n| pod(n, (n + round) % 2 == 0)).collect();
        cluster.put(&slice("emu-a", endpoints));
    }
}
